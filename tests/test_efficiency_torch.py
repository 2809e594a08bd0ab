"""Chapter 10's PyTorch side: cost measures, pruning, quantization, distillation, mixed precision.

The trained models are cached per process (``digits_mlp`` trains in a few seconds once);
nothing here times anything against a threshold (speed goals live in benchmarks/).
"""
import copy
import importlib

import numpy as np
import pytest
import torch
from torch import nn

from dlcourse.data import load_digits
from dlcourse.efficiency import torch_impl as et


def _numpy_twin(*names):
    """E1's NumPy twin, or a skip naming what is missing."""
    try:
        mod = importlib.import_module("dlcourse.efficiency.numpy_impl")
    except ImportError as err:
        pytest.skip(f"dlcourse.efficiency.numpy_impl not importable yet ({err})")
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        pytest.skip(f"numpy_impl has no {', '.join(missing)} yet")
    return mod


@pytest.fixture(scope="module")
def digits():
    return load_digits(0)


@pytest.fixture(scope="module")
def mlp():
    return et.digits_mlp(0)


# --------------------------------------------------------------------------- models and training

def test_digits_mlp_is_cached_trained_and_in_eval_mode(mlp, digits):
    assert et.digits_mlp(0) is mlp
    assert not mlp.training
    assert [tuple(p.shape) for p in mlp.parameters()] == [(256, 64), (256,), (256, 256), (256,), (10, 256), (10,)]
    assert et.accuracy(mlp, digits.x_test, digits.y_test) > 0.95


def test_student_mlp_is_new_and_seeded():
    a, b = et.student_mlp(32, seed=3), et.student_mlp(32, seed=3)
    assert a is not b
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert et.count_params(a) == 64 * 32 + 32 + 32 * 10 + 10


def test_train_is_seeded_and_keeps_masked_weights_at_zero(digits):
    x, y = digits.x_train[:200], digits.y_train[:200]
    a, b = et.student_mlp(16, seed=1), et.student_mlp(16, seed=1)
    mask = (torch.rand(16, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    la = et.train(a, x, y, steps=7, batch=32, seed=2, masks={"0.weight": mask})
    lb = et.train(b, x, y, steps=7, batch=32, seed=2, masks={"0.weight": mask})
    assert la.shape == (7,) and np.array_equal(la, lb)
    assert torch.all(a[0].weight[mask == 0] == 0) and torch.count_nonzero(a[0].weight) == int(mask.sum())
    with pytest.raises(ValueError):
        et.train(a, x, y, lr=1e-3)


# --------------------------------------------------------------------------- cost

def test_flops_is_twice_the_macs_of_the_mlp(mlp, digits):
    macs = 64 * 256 + 256 * 256 + 256 * 10
    assert et.flops(mlp, digits.x_test[:5]) == 5 * 2 * macs
    assert et.count_params(mlp) == macs + 256 + 256 + 10


def test_flops_equal_numpy_twin_costs(mlp, digits):
    en = _numpy_twin("dense_cost", "conv2d_cost")
    dense = sum(en.dense_cost(a, b).flops for a, b in ((64, 256), (256, 256), (256, 10)))
    assert et.flops(mlp, digits.x_test[:1]) == dense
    cnn = et.digits_cnn(0)
    conv = (en.conv2d_cost(1, 16, 3, 3, 8, 8, pad=1).flops + en.conv2d_cost(16, 32, 3, 3, 4, 4, pad=1).flops
            + en.dense_cost(32 * 2 * 2, 10).flops)
    assert et.flops(cnn, digits.x_test[:3]) == 3 * conv


def test_model_bytes_is_four_bytes_per_param_plus_overhead(mlp):
    n, size = et.count_params(mlp), et.model_bytes(mlp)
    assert 4 * n < size < 4 * n + 4096


def test_latency_throughput_profile_energy(mlp, digits):
    x = digits.x_test[:16]
    t = et.latency(mlp, x, repeats=3, warmup=1)
    assert t > 0 and et.throughput(mlp, x, repeats=3, warmup=1) > 0
    prof = et.profile(mlp, x, repeats=2)
    assert "addmm" in prof.table and any("addmm" in name for name, _, _ in prof.top)
    e = et.energy_estimate(7.2, watts=10.0)
    assert e["joules"] == pytest.approx(72.0) and e["wh"] == pytest.approx(0.02)
    assert et.energy_estimate(1.0, et.H100_WATTS)["joules"] == 700.0
