"""Chapter 04 · training practice: losses, dropout, batch norm and metrics; NumPy twin == PyTorch / scikit-learn."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.training import numpy_impl as ref

RTOL = 1e-10


def _t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


# --------------------------------------------------------------------------- losses vs torch

def _regression_case(seed=0):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal((6, 3)) * 2, rng.standard_normal((6, 3)) * 2
    pred[0, 0] = target[0, 0]  # a tie: the subgradient of |d| at 0 is 0 in both
    return pred, target


LOSSES = {  # name: (numpy forward, numpy backward, torch function, inputs)
    "mse": (ref.mse_loss_forward, ref.mse_loss_backward, F.mse_loss, {}),
    "l1": (ref.l1_loss_forward, ref.l1_loss_backward, F.l1_loss, {}),
    "huber": (ref.huber_loss_forward, ref.huber_loss_backward, F.huber_loss, {"delta": 1.5}),
    "huber_small_delta": (ref.huber_loss_forward, ref.huber_loss_backward, F.huber_loss, {"delta": 0.3}),
}


@pytest.mark.parametrize("name", LOSSES)
def test_regression_loss_matches_torch(name):
    forward, backward, torch_fn, kw = LOSSES[name]
    pred, target = _regression_case()
    loss, cache = forward(pred, target, **kw)
    dpred = backward(0.7, cache)  # an upstream gradient other than 1 is multiplied in
    pt = _t(pred, grad=True)
    loss_t = torch_fn(pt, _t(target), **kw)
    (0.7 * loss_t).backward()
    np.testing.assert_allclose(loss, loss_t.item(), rtol=RTOL)
    np.testing.assert_allclose(dpred, pt.grad.numpy(), rtol=RTOL, atol=1e-300)


@pytest.mark.parametrize("name", LOSSES)
def test_regression_loss_numerical_grad(name):
    forward, backward, _, kw = LOSSES[name]
    pred, target = _regression_case(1)
    pred[0, 0] += 1e-3  # keep clear of the kink of |d| (h = 1e-6 would straddle it)
    _, cache = forward(pred, target, **kw)
    num = numerical_grad(lambda p: forward(p, target, **kw)[0], pred)
    assert rel_error(backward(1.0, cache), num) < 1e-7


def _bce_case():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((5, 4)) * 3
    target = rng.integers(0, 2, (5, 4)).astype(np.float64)
    target[4] = rng.random(4)  # soft labels are allowed too
    logits[0] = [1000.0, -1000.0, 1000.0, -1000.0]  # exp(1000) overflows; log(sigmoid(-1000)) = -inf
    target[0] = [1.0, 1.0, 0.0, 0.0]                # right and wrong at both extremes
    return logits, target


def test_bce_with_logits_matches_torch_and_is_stable():
    logits, target = _bce_case()
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, not even a hidden one
        loss, cache = ref.bce_with_logits_forward(logits, target)
        dlogits = ref.bce_with_logits_backward(1.0, cache)
    lt = _t(logits, grad=True)
    loss_t = F.binary_cross_entropy_with_logits(lt, _t(target))
    loss_t.backward()
    assert np.isfinite(loss) and np.isfinite(dlogits).all()
    np.testing.assert_allclose(loss, loss_t.item(), rtol=RTOL)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=RTOL, atol=1e-300)
    # the extreme row, element by element: a wrong answer at ±1000 costs 1000
    each, _ = zip(*(ref.bce_with_logits_forward(logits[0, j:j + 1], target[0, j:j + 1]) for j in range(4)))
    np.testing.assert_allclose(each, [0.0, 1000.0, 1000.0, 0.0], atol=1e-300)


def test_bce_with_logits_numerical_grad():
    logits, target = _bce_case()
    # away from ±1000, where the gradient (about 1e-400) is below what a difference can measure;
    # a gradient of 1e-5 would already be measured with only ~1e-6 relative accuracy
    logits[0] = [3.0, -3.0, 2.0, -2.0]
    _, cache = ref.bce_with_logits_forward(logits, target)
    num = numerical_grad(lambda z: ref.bce_with_logits_forward(z, target)[0], logits)
    assert rel_error(ref.bce_with_logits_backward(1.0, cache), num) < 1e-7


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
def test_cross_entropy_matches_torch(smoothing):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((8, 5)) * 4
    logits[0] = [1e4, -1e4, 0.0, 3.0, 1e4 - 2]  # would overflow without log-sum-exp
    y = rng.integers(0, 5, 8)
    loss, cache = ref.cross_entropy_forward(logits, y, label_smoothing=smoothing)
    dlogits = ref.cross_entropy_backward(1.0, cache)
    lt = _t(logits, grad=True)
    loss_t = F.cross_entropy(lt, torch.from_numpy(y), label_smoothing=smoothing)
    loss_t.backward()
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, loss_t.item(), rtol=RTOL)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=RTOL, atol=1e-300)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_numerical_grad(smoothing):
    rng = np.random.default_rng(4)
    logits, y = rng.standard_normal((4, 3)) * 2, rng.integers(0, 3, 4)
    _, cache = ref.cross_entropy_forward(logits, y, smoothing)
    num = numerical_grad(lambda z: ref.cross_entropy_forward(z, y, smoothing)[0], logits)
    assert rel_error(ref.cross_entropy_backward(1.0, cache), num) < 1e-7


def test_losses_keep_float32_and_leave_inputs_alone():
    rng = np.random.default_rng(5)
    pred, target = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    logits, y = rng.standard_normal((4, 3)).astype(np.float32), np.array([0, 2, 1, 2])
    before = [a.copy() for a in (pred, target, logits, y)]
    for forward, backward, args in [(ref.mse_loss_forward, ref.mse_loss_backward, (pred, target)),
                                    (ref.l1_loss_forward, ref.l1_loss_backward, (pred, target)),
                                    (ref.huber_loss_forward, ref.huber_loss_backward, (pred, target)),
                                    (ref.bce_with_logits_forward, ref.bce_with_logits_backward,
                                     (logits, (target > 0).astype(np.float32))),
                                    (ref.cross_entropy_forward, ref.cross_entropy_backward, (logits, y, 0.1))]:
        loss, cache = forward(*args)
        grad = backward(1.0, cache)
        assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.float32, forward.__name__
    for a, b in zip(before, (pred, target, logits, y)):
        np.testing.assert_array_equal(a, b)
