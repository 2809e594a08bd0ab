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

from dlcourse.cnn.torch_impl import SmallCNN
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
    cnn = SmallCNN(width=8)            # digits_cnn's architecture, untrained: 8x8 -> conv1 (pad 1) -> pool -> 4x4 -> conv2 -> pool
    c1, c2 = cnn.conv1, cnn.conv2
    conv = (en.conv2d_cost(1, c1.out_channels, 3, 3, 8, 8, pad=1).flops
            + en.conv2d_cost(c1.out_channels, c2.out_channels, 3, 3, 4, 4, pad=1).flops
            + en.dense_cost(cnn.fc.in_features, 10).flops)
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


# --------------------------------------------------------------------------- pruning

def _weights(model):
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


def test_prune_global_prunes_a_copy_with_exact_count(mlp):
    before = copy.deepcopy(mlp.state_dict())
    pruned, masks = et.prune_global(mlp, 0.9)
    for k, v in mlp.state_dict().items():                 # the cached model is untouched
        assert torch.equal(v, before[k])
    n = sum(m.numel() for m in masks.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(0.9 * n)
    assert set(masks) == {"0.weight", "2.weight", "4.weight"}   # biases never pruned
    for name, m in masks.items():
        w = pruned.state_dict()[name]
        assert torch.equal(w == 0, m == 0)
    assert not any(hasattr(mod, "weight_orig") for mod in pruned.modules())   # made permanent
    assert et.count_params(pruned, nonzero=True) == et.count_params(mlp) - round(0.9 * n)


def test_prune_global_masks_equal_numpy_twin(mlp):
    en = _numpy_twin("magnitude_masks")
    weights = {k: v for k, v in _weights(mlp).items() if k.endswith("weight")}
    for s in (0.3, 0.9):
        _, masks = et.prune_global(mlp, s)
        expected = en.magnitude_masks(weights, s, scope="global")
        for k in masks:
            np.testing.assert_array_equal(masks[k].numpy(), expected[k])


def test_prune_structured_is_smaller_and_equals_the_masked_model(mlp, digits):
    small = et.prune_structured(mlp, 0.5)
    assert [m.weight.shape for m in small if isinstance(m, nn.Linear)] == [(128, 64), (128, 128), (10, 128)]
    masked = copy.deepcopy(mlp)                            # zero the same rows' weights, keep their biases
    with torch.no_grad():
        for layer in (masked[0], masked[2]):
            scores = layer.weight.abs().sum(1)
            drop = torch.sort(scores, stable=True).indices[:len(scores) // 2]
            layer.weight[drop] = 0
    x = torch.as_tensor(digits.x_test)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):
        et.prune_structured(SmallCNN(width=4), 0.5)


def test_prune_structured_equals_numpy_shrink_mlp(mlp):
    en = _numpy_twin("structured_masks", "shrink_mlp")
    weights = _weights(mlp)
    expected = en.shrink_mlp(weights, en.structured_masks(weights, 0.25))
    got = _weights(et.prune_structured(mlp, 0.25))
    assert set(got) == set(expected)
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-6)


def test_sparse_csr_mlp_equals_the_pruned_dense_one(mlp, digits):
    pruned, _ = et.prune_global(mlp, 0.9)
    sparse = et.SparseMLP(pruned)
    x = torch.as_tensor(digits.x_test[:32])
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), pruned(x), rtol=1e-5, atol=1e-5)


def test_pruning_curve_retraining_recovers_accuracy():
    r = et.pruning_curve(sparsities=(0.9,), retrain_steps=100)
    assert r["nonzero"][0] == round(0.1 * (64 * 256 + 256 * 256 + 256 * 10))
    assert r["retrained"][0] > r["pruned"][0]
    assert r["retrained"][0] >= r["dense"] - 0.02


# --------------------------------------------------------------------------- quantization

def test_dynamic_int8_is_smaller_accurate_and_silent(mlp, digits):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = et.dynamic_int8(mlp)
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert et.model_bytes(mlp) / et.model_bytes(q) > 3.7
    assert et.count_params(q) == et.count_params(mlp)
    assert abs(et.accuracy(q, digits.x_test, digits.y_test) - et.accuracy(mlp, digits.x_test, digits.y_test)) <= 0.01
    assert isinstance(mlp[0], nn.Linear) and mlp[0].weight.dtype == torch.float32   # the original is untouched


def test_weight_qparams_equal_numpy_twin_and_observer(mlp):
    en = _numpy_twin("qparams")
    w = mlp[2].weight.detach()
    for per_channel, axis in ((True, 0), (False, None)):
        scale, zp = et.weight_qparams(w, 8, per_channel)
        s_np, z_np = en.qparams(w.double().numpy(), bits=8, axis=axis)
        np.testing.assert_allclose(scale.numpy(), np.float32(s_np), rtol=1e-7)
        np.testing.assert_array_equal(zp.numpy(), z_np)
    obs = torch.ao.quantization.observer.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.quint8,
                                                                  qscheme=torch.per_channel_affine)
    obs(w)
    s_obs, z_obs = obs.calculate_qparams()
    scale, zp = et.weight_qparams(w, 8, True)
    torch.testing.assert_close(scale, s_obs, rtol=1e-6, atol=0)          # float32 round-off of max - min
    assert torch.equal(zp, z_obs.to(torch.int32))


def test_fake_quant_weight_equals_numpy_twin_and_has_ste_gradient(mlp):
    en = _numpy_twin("qparams", "quantize", "dequantize")
    w = mlp[0].weight.detach().clone()
    w[0] = 0.0                                                           # an all-zero row (pruned unit)
    for bits in (8, 4):
        got = et.fake_quant_weight(w, bits).double().numpy()
        s, z = en.qparams(w.double().numpy(), bits=bits, axis=0)
        expected = en.dequantize(en.quantize(w.double().numpy(), s, z, bits=bits, axis=0), s, z, axis=0)
        scale = float(s.max())
        assert np.mean(np.abs(got - expected) < 1e-6) > 0.999          # round-half cases may differ by one level
        assert np.max(np.abs(got - expected)) <= scale + 1e-6
    assert torch.all(et.fake_quant_weight(w, 8)[0] == 0)               # 0 stays exactly 0
    wr = w.clone().requires_grad_()
    et.fake_quant_weight(wr, 4).sum().backward()                      # the range covers every weight:
    assert torch.equal(wr.grad, torch.ones_like(w))                   # straight-through everywhere


def test_fake_quant_model_and_bits_curve(mlp, digits):
    q8 = et.fake_quant_model(mlp, 8)
    assert not torch.equal(q8[0].weight, mlp[0].weight)
    assert abs(et.accuracy(q8, digits.x_test, digits.y_test) - et.accuracy(mlp, digits.x_test, digits.y_test)) <= 0.01
    r = et.bits_curve(bits=(8, 2))
    assert r["per_channel"][0] >= r["float"] - 0.01
    assert r["per_channel"][1] > r["per_tensor"][1]                  # one scale per row helps at 2 bits
    wrapped = et.FakeQuantWrapper(copy.deepcopy(mlp), bits=4)
    x = torch.as_tensor(digits.x_test[:16])
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), et.fake_quant_model(mlp, 4)(x))


@pytest.mark.slow
def test_qat_beats_post_training_quantization_at_2_bits():
    r = et.qat_study(bits=2, steps=300)
    assert r["qat"] > r["ptq"] and r["qat"] > r["finetuned_then_ptq"]


# --------------------------------------------------------------------------- distillation

def _distill_inputs():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    t = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (6,), generator=g)
    return s, t, y


def test_distill_loss_gradient_is_the_closed_form():
    s, t, y = _distill_inputs()
    T, alpha = 3.0, 0.7
    sr = s.clone().requires_grad_()
    et.distill_loss(sr, t, y, T, alpha).backward()
    onehot = torch.nn.functional.one_hot(y, 10).double()
    expected = (alpha * T * (torch.softmax(s / T, 1) - torch.softmax(t / T, 1))
                + (1 - alpha) * (torch.softmax(s, 1) - onehot)) / len(s)
    torch.testing.assert_close(sr.grad, expected, rtol=1e-12, atol=1e-14)
    partial = et._partial_distill_loss(T, alpha)(s, y, t)             # every row labelled: the same loss
    torch.testing.assert_close(partial, et.distill_loss(s, t, y, T, alpha), rtol=1e-12, atol=0)


def test_distill_loss_equals_numpy_twin():
    en = _numpy_twin("distill_loss_forward", "distill_loss_backward")
    s, t, y = _distill_inputs()
    for T, alpha in ((1.0, 0.5), (4.0, 0.9)):
        sr = s.clone().requires_grad_()
        loss = et.distill_loss(sr, t, y, T, alpha)
        loss.backward()
        l_np, cache = en.distill_loss_forward(s.numpy(), t.numpy(), y.numpy(), T, alpha)
        np.testing.assert_allclose(loss.item(), l_np, rtol=1e-12)
        np.testing.assert_allclose(sr.grad.numpy(), en.distill_loss_backward(cache), rtol=1e-10, atol=1e-14)


@pytest.mark.slow
def test_distillation_helps_with_few_labels():
    r = et.distillation_study(n_labels=(100,), steps=600)[0]
    assert r["distilled"] > r["alone"] + 0.02


# --------------------------------------------------------------------------- mixed precision, compile, scale-up

def test_autocast_bf16_agrees_with_float32(mlp, digits):
    r = et.autocast_speedup(mlp, digits.x_test[:64], repeats=2)
    assert r["agreement"] >= 0.95 and 0 < r["max_abs_diff"] < 1.0 and r["speedup"] > 0 and r["dtype"] == "bfloat16"


def test_overflow_demo_shows_overflow_underflow_and_the_scaler_fix():
    r = et.overflow_demo()
    assert r["logit"] == float("inf") and r["sum_of_squares"] == float("inf")
    assert r["fp16_grad_norm"] == 0.0 and r["fp16_zero_fraction"] == 1.0 and r["fp32_grad_norm"] > 0
    assert r["scaled_zero_fraction"] == 0.0 and r["scaled_rel_error"] < 1e-2


def test_compile_study_reports_failure_as_a_message(mlp, digits):
    r = et.compile_study(mlp, digits.x_test[:8], backend="no-such-backend", repeats=2)
    assert r["ok"] is False and "torch.compile failed" in r["message"] and r["eager_s"] > 0
    with pytest.raises(ValueError):
        et.compile_study(mlp, digits.x_test[:8], mode="serving")


@pytest.mark.slow
def test_compile_study_compiles_the_mlp(mlp, digits):
    r = et.compile_study(mlp, digits.x_test[:64], repeats=3, cold=False)
    assert r["ok"], r["message"]
    assert r["first_call_s"] > 0 and r["compiled_s"] > 0


def test_scale_up_refuses_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: scale_up would train")
    assert et.scale_up() is None
    assert "no CUDA GPU" in capsys.readouterr().out


def test_scale_up_runs_end_to_end_on_cpu_when_forced(monkeypatch):
    import dlcourse.data as data

    def offline(*args, **kwargs):
        raise OSError("offline in the tests")
    monkeypatch.setattr(data, "load_mnist", offline)
    r = et.scale_up(device="cpu", run_on_cpu=True, epochs=1, batch=256, width=4, compile=False, amp=False,
                    eval_batch=90)
    assert r["data"].startswith("digits") and len(r["accuracy"]) == 1 and r["steps"] == 1257 // 256
