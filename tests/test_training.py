"""Chapter 04 · training practice: losses, dropout, batch norm and metrics; NumPy twin == PyTorch / scikit-learn."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checktools import solution
from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.training import numpy_impl as ref
from dlcourse.training import practice as pr
from dlcourse.training.checks import check as ch04
from dlcourse.training.checks import early_stopping_problem

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


# --------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_dropout_matches_torch_for_the_same_mask(p):
    rng = np.random.default_rng(6)
    x, dout = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    out, cache = ref.dropout_forward(x, p, train=True, rng=np.random.default_rng(7))
    mask = cache.mask if cache.mask is not None else np.ones(x.shape, bool)
    dx = ref.dropout_backward(dout, cache)
    xt = _t(x, grad=True)  # torch's inverted dropout with this mask; p = 1 gives zeros in torch
    yt = xt * _t(mask.astype(np.float64)) / (1 - p) if p < 1 else xt * 0.0
    yt.backward(_t(dout))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=RTOL, atol=0)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=0)
    if p == 1.0:  # and torch's own F.dropout agrees where no randomness is left
        np.testing.assert_array_equal(out, F.dropout(_t(x), 1.0, training=True).numpy())


def test_dropout_mask_given_rng_drawn_and_eval():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 50))
    mask = rng.random(x.shape) >= 0.25
    out, _ = ref.dropout_forward(x, 0.25, mask=mask)
    np.testing.assert_array_equal(out, x * mask / 0.75)  # a given mask is used as is
    out1, c1 = ref.dropout_forward(x, 0.25, rng=np.random.default_rng(9))
    out2, _ = ref.dropout_forward(x, 0.25, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(out1, out2)  # same generator state, same mask
    assert abs(c1.mask.mean() - 0.75) < 0.01  # kept with probability 1 - p (20,000 draws)
    np.testing.assert_allclose(ref.dropout_forward(np.ones((400, 50)), 0.25,  # the expectation is kept
                                                   rng=np.random.default_rng(10))[0].mean(), 1.0, atol=0.02)
    out_eval, c_eval = ref.dropout_forward(x, 0.25, train=False, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(out_eval, x)  # eval: the identity, and torch's eval dropout is too
    np.testing.assert_array_equal(out_eval, F.dropout(_t(x), 0.25, training=False).numpy())
    assert out_eval is not x and c_eval.mask is None
    np.testing.assert_array_equal(ref.dropout_backward(x, c_eval), x)
    with pytest.raises(ValueError, match="mask or an rng"):
        ref.dropout_forward(x, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ref.dropout_forward(x, 1.5, rng=rng)


def test_dropout_numerical_grad():
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    mask = rng.random(x.shape) >= 0.4
    _, cache = ref.dropout_forward(x, 0.4, mask=mask)
    num = numerical_grad(lambda a: ref.dropout_forward(a, 0.4, mask=mask)[0], x, dout)
    np.testing.assert_allclose(ref.dropout_backward(dout, cache), num, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- batch norm vs nn.BatchNorm1d

def _bn_layer(d, rng, momentum=0.1, eps=1e-5):
    layer = torch.nn.BatchNorm1d(d, momentum=momentum, eps=eps).double()
    with torch.no_grad():  # non-trivial affine parameters
        layer.weight.copy_(_t(rng.standard_normal(d) + 1))
        layer.bias.copy_(_t(rng.standard_normal(d)))
    return layer


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7)])
def test_batchnorm_train_matches_torch_over_several_steps(shape):
    rng = np.random.default_rng(12)
    d = shape[1]
    layer = _bn_layer(d, rng, momentum=0.2)
    gamma, beta = (p.detach().numpy().copy() for p in (layer.weight, layer.bias))
    running = ref.batchnorm_init(d)
    for step in range(4):  # running statistics after several steps
        x = rng.standard_normal(shape) * 3 + step
        dout = rng.standard_normal(shape)
        out, cache, running = ref.batchnorm_forward(x, gamma, beta, running, train=True, momentum=0.2)
        dx, dgamma, dbeta = ref.batchnorm_backward(dout, cache)
        layer.zero_grad()
        xt = _t(x, grad=True)
        yt = layer.train()(xt)
        yt.backward(_t(dout))
        np.testing.assert_allclose(out, yt.detach().numpy(), rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(running.mean, layer.running_mean.numpy(), rtol=RTOL)
        np.testing.assert_allclose(running.var, layer.running_var.numpy(), rtol=RTOL)  # unbiased
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(dgamma, layer.weight.grad.numpy(), rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(dbeta, layer.bias.grad.numpy(), rtol=RTOL, atol=1e-13)
    # eval mode: the running statistics normalise, and stay as they are
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    out, cache, after = ref.batchnorm_forward(x, gamma, beta, running, train=False, momentum=0.2)
    dx, dgamma, dbeta = ref.batchnorm_backward(dout, cache)
    layer.zero_grad()
    xt = _t(x, grad=True)
    yt = layer.eval()(xt)
    yt.backward(_t(dout))
    assert after is running
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(dgamma, layer.weight.grad.numpy(), rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(dbeta, layer.bias.grad.numpy(), rtol=RTOL, atol=1e-13)


def test_batchnorm_state_in_state_out():
    rng = np.random.default_rng(13)
    x, gamma, beta = rng.standard_normal((8, 3)), np.ones(3), np.zeros(3)
    running = ref.batchnorm_init(3)
    before = [a.copy() for a in (x, running.mean, running.var)]
    out, _, new = ref.batchnorm_forward(x, gamma, beta, running)
    for a, b in zip(before, (x, running.mean, running.var)):
        np.testing.assert_array_equal(a, b)  # nothing mutated behind the caller's back
    assert new is not running
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)  # normalised per feature
    np.testing.assert_allclose(out.var(axis=0), 1, rtol=1e-4)     # up to eps
    with pytest.raises(ValueError, match="more than one value"):
        ref.batchnorm_forward(x[:1], gamma, beta, running)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_numerical_grad(train):
    rng = np.random.default_rng(14)
    x, dout = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    running = ref.BatchNormRunning(rng.standard_normal(3), rng.random(3) + 0.5)
    _, cache, _ = ref.batchnorm_forward(x, gamma, beta, running, train=train)
    dx, dgamma, dbeta = ref.batchnorm_backward(dout, cache)
    def f(x_, g_, b_):
        return ref.batchnorm_forward(x_, g_, b_, running, train=train)[0]

    # atol: a 2e-3 entry next to entries of 1 is measured by differences with ~1e-10 absolute noise
    for analytic, num in [(dx, numerical_grad(lambda a: f(a, gamma, beta), x, dout)),
                          (dgamma, numerical_grad(lambda a: f(x, a, beta), gamma, dout)),
                          (dbeta, numerical_grad(lambda a: f(x, gamma, a), beta, dout))]:
        np.testing.assert_allclose(analytic, num, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- metrics vs scikit-learn

def _label_cases():
    rng = np.random.default_rng(15)
    y = rng.integers(0, 4, 50)
    noisy = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, 50))
    return {
        "random": (y, noisy, 4),
        "never_predicted": (y, np.where(noisy == 2, 0, noisy), 4),        # class 2 never predicted
        "never_true": (np.where(y == 3, 1, y), noisy, 4),                   # class 3 never true
        "absent_both": (np.array([0, 1, 0, 1, 1]), np.array([0, 1, 1, 1, 0]), 3),  # class 2 nowhere
        "all_wrong": (np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), 2),
        "perfect": (y, y.copy(), 4),
        "one_example": (np.array([2]), np.array([2]), 3),
        "imbalanced": (np.r_[np.zeros(95, int), np.ones(5, int)], np.zeros(100, int), 2),  # accuracy 0.95, F1 low
    }


@pytest.mark.parametrize("case", list(_label_cases()))
def test_classification_metrics_match_sklearn(case):
    sk = pytest.importorskip("sklearn.metrics")
    y_true, y_pred, k = _label_cases()[case]
    labels = np.arange(k)
    assert ref.accuracy(y_true, y_pred) == sk.accuracy_score(y_true, y_pred)
    np.testing.assert_array_equal(ref.confusion_matrix(y_true, y_pred, k),
                                  sk.confusion_matrix(y_true, y_pred, labels=labels))
    for average in (None, "macro", "micro"):
        ours = ref.precision_recall_f1(y_true, y_pred, k, average=average)
        theirs = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                    zero_division=0)[:3]
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
        np.testing.assert_allclose(ref.f1_score(y_true, y_pred, k, average),
                                   sk.f1_score(y_true, y_pred, labels=labels, average=average,
                                               zero_division=0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(ref.precision_score(y_true, y_pred, k),
                               sk.precision_score(y_true, y_pred, labels=labels, average="macro",
                                                  zero_division=0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(ref.recall_score(y_true, y_pred, k),
                               sk.recall_score(y_true, y_pred, labels=labels, average="macro",
                                               zero_division=0), rtol=1e-12, atol=0)


def test_metrics_defaults_and_errors():
    y_true, y_pred = np.array([0, 2, 1, 2]), np.array([0, 1, 1, 2])
    assert ref.confusion_matrix(y_true, y_pred).shape == (3, 3)  # K = largest label + 1
    assert ref.confusion_matrix(y_true, y_pred, 5).shape == (5, 5)
    p, r, f = ref.precision_recall_f1(y_true, y_pred, average="micro")
    assert p == r == f == ref.accuracy(y_true, y_pred) == 0.75  # single-label: micro = accuracy
    with pytest.raises(ValueError, match="shapes"):
        ref.accuracy(y_true, y_pred[:3])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ref.confusion_matrix(y_true, y_pred, 2)
    with pytest.raises(ValueError, match="average"):
        ref.precision_recall_f1(y_true, y_pred, average="weighted")


def _score_cases():
    rng = np.random.default_rng(16)
    y = rng.integers(0, 2, 40)
    return {
        "random": (y, rng.standard_normal(40) + y),
        "ties": (y, np.round(rng.random(40) + 0.5 * y, 1)),  # many equal scores
        "all_tied": (y, np.full(40, 0.3)),                   # one diagonal step
        "perfect": (y, y * 2.0 - 1),
        "reversed": (y, 1.0 - y),
        "logits": (y, (rng.standard_normal(40) + y) * 1000),  # any monotone score works
        "tiny": (np.array([0, 1]), np.array([0.2, 0.1])),
        "collinear": (np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
    }


@pytest.mark.parametrize("case", list(_score_cases()))
def test_roc_curve_and_auc_match_sklearn(case):
    sk = pytest.importorskip("sklearn.metrics")
    y, score = _score_cases()[case]
    for drop in (True, False):
        for a, b in zip(ref.roc_curve(y, score, drop_intermediate=drop),
                        sk.roc_curve(y, score, drop_intermediate=drop)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    fpr, tpr, _ = ref.roc_curve(y, score)
    np.testing.assert_allclose(ref.auc(fpr, tpr), sk.roc_auc_score(y, score), rtol=1e-12)
    np.testing.assert_allclose(ref.roc_auc_score(y, score), sk.roc_auc_score(y, score), rtol=1e-12)
    # the ranking meaning: P(score of a positive > score of a negative), ties counting one half
    pos, neg = score[y == 1][:, None], score[y == 0][None, :]
    np.testing.assert_allclose(ref.roc_auc_score(y, score), np.mean((pos > neg) + 0.5 * (pos == neg)), rtol=1e-12)


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both present"):
        ref.roc_curve(np.ones(4, int), np.arange(4.0))
    with pytest.raises(ValueError, match="both present"):
        ref.roc_auc_score(np.array([0, 2, 1]), np.arange(3.0))


# --------------------------------------------------------------------------- the PyTorch twin

def test_torch_twin_dropout_and_batchnorm():
    from dlcourse.training import torch_impl as tw
    rng = np.random.default_rng(17)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    for p in (0.3, 1.0):
        out, cache = ref.dropout_forward(x, p, rng=np.random.default_rng(18))
        xt = _t(x, grad=True)
        yt = tw.dropout_with_mask(xt, torch.from_numpy(cache.mask), p)
        yt.backward(_t(dout))
        np.testing.assert_allclose(out, yt.detach().numpy(), rtol=RTOL, atol=0)
        np.testing.assert_allclose(ref.dropout_backward(dout, cache), xt.grad.numpy(), rtol=RTOL, atol=0)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    running = ref.BatchNormRunning(rng.standard_normal(4), rng.random(4) + 0.5)
    layer = tw.make_batchnorm(gamma, beta, running, momentum=0.3)
    out, _, new = ref.batchnorm_forward(x, gamma, beta, running, momentum=0.3)
    np.testing.assert_allclose(out, layer.train()(_t(x)).detach().numpy(), rtol=RTOL, atol=1e-13)
    for a, b in zip(new, tw.running_stats(layer)):
        np.testing.assert_allclose(a, b, rtol=RTOL)
    assert set(tw.LOSSES) == {"mse_loss", "l1_loss", "huber_loss", "bce_with_logits", "cross_entropy"}


@pytest.mark.parametrize("case", list(_label_cases()))
def test_torch_twin_metrics_match_numpy(case):
    from dlcourse.training import torch_impl as tw
    y_true, y_pred, k = _label_cases()[case]
    yt, pt = torch.from_numpy(y_true), torch.from_numpy(y_pred)
    assert tw.accuracy(yt, pt) == ref.accuracy(y_true, y_pred)
    np.testing.assert_array_equal(tw.confusion_matrix(yt, pt, k).numpy(), ref.confusion_matrix(y_true, y_pred, k))
    for average in (None, "macro", "micro"):
        for a, b in zip(tw.precision_recall_f1(yt, pt, k, average), ref.precision_recall_f1(y_true, y_pred, k, average)):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", list(_score_cases()))
def test_torch_twin_auc_matches_numpy(case):
    from dlcourse.training import torch_impl as tw
    y, score = _score_cases()[case]
    np.testing.assert_allclose(tw.roc_auc_score(torch.from_numpy(y), torch.from_numpy(score)),
                               ref.roc_auc_score(y, score), rtol=1e-12)
    with pytest.raises(ValueError, match="both present"):
        tw.roc_auc_score(torch.ones(3, dtype=torch.long), torch.arange(3.0))


# --------------------------------------------------------------------------- the exercise forms (graded answers)
# The references of the chapter's graded exercises (dlcourse/training/checks.py) equal PyTorch and
# scikit-learn; the solutions notebook's answers equal the references.  The mistake tables
# themselves are proven by tests/test_course.py.


def _sol(name):
    return solution("04_training", name)


def test_exercise_bce_with_logits_equals_torch_at_any_logit():
    logits, target = _bce_case()
    for fn in (ref.bce_with_logits, _sol("bce_with_logits")):
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            loss, dlogits = fn(logits, target)
        lt = _t(logits, grad=True)
        F.binary_cross_entropy_with_logits(lt, _t(target)).backward()
        np.testing.assert_allclose(loss, F.binary_cross_entropy_with_logits(_t(logits), _t(target)).item(),
                                   rtol=RTOL)
        np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=RTOL, atol=1e-300)


def test_exercise_standardize_splits_equals_standard_scaler_on_the_digits():
    from sklearn.preprocessing import StandardScaler

    from dlcourse.data import load_digits
    d = load_digits(0)
    splits = [a.astype(np.float64) for a in (d.x_train, d.x_val, d.x_test)]
    scaler = StandardScaler().fit(splits[0])
    assert (scaler.scale_ == 1.0).any(), "the digits have pixels that are constant on the training set"
    for fn in (ref.standardize_splits, _sol("standardize_splits")):
        out = fn(*splits)
        for got, x in zip(out, splits):
            np.testing.assert_allclose(got, scaler.transform(x), rtol=1e-10, atol=1e-12)
    assert all(np.isfinite(o).all() for o in out)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8, 1.0])
def test_exercise_dropout_equals_torch_for_the_returned_mask(p):
    from dlcourse.training import torch_impl
    x = np.random.default_rng(5).standard_normal((50, 40))
    for fn in (ref.dropout_forward_with_mask, _sol("dropout_forward")):
        out, mask = fn(x, p, True, np.random.default_rng(6))
        assert mask.dtype == bool and mask.shape == x.shape
        want = torch_impl.dropout_with_mask(_t(x), torch.from_numpy(mask), p)
        np.testing.assert_allclose(out, want.numpy(), rtol=1e-12, atol=0)
        same, _ = fn(x, p, True, np.random.default_rng(6))
        np.testing.assert_array_equal(out, same)  # the rng given decides the mask
        evaluated, eval_mask = fn(x, p, False, np.random.default_rng(6))
        np.testing.assert_array_equal(evaluated, x)
        assert eval_mask.all()


@pytest.mark.parametrize("momentum, eps", [(0.1, 1e-5), (0.3, 1e-3)])
def test_exercise_batchnorm_forward_equals_batchnorm1d_over_train_and_eval_steps(momentum, eps):
    rng = np.random.default_rng(7)
    d = 5
    gamma, beta = rng.uniform(0.5, 2, d), rng.normal(0, 1, d)
    for fn in (ref.batchnorm_forward_running, _sol("batchnorm_forward")):
        layer = torch.nn.BatchNorm1d(d, momentum=momentum, eps=eps).double()
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(gamma))
            layer.bias.copy_(torch.from_numpy(beta))
        running_mean, running_var = np.zeros(d), np.ones(d)
        for step in range(4):  # three train steps (running statistics away from 0 and 1), then eval
            train = step < 3
            x = rng.normal(rng.normal(0, 2, d), rng.uniform(0.5, 3, d), (8, d))
            layer.train(train)
            want = layer(_t(x)).detach().numpy()
            out, running_mean, running_var = fn(x, gamma, beta, running_mean, running_var, train, momentum, eps)
            np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(running_mean, layer.running_mean.numpy(), rtol=1e-12)
            np.testing.assert_allclose(running_var, layer.running_var.numpy(), rtol=1e-12)


def test_exercise_batchnorm_backward_equals_autograd_and_numerical_grad():
    rng = np.random.default_rng(8)
    x = rng.normal(1.0, 2.0, (6, 4))
    gamma, beta, dout = rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.standard_normal((6, 4))
    layer = torch.nn.BatchNorm1d(4, eps=1e-3).double().train()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    xt = _t(x, grad=True)
    layer(xt).backward(_t(dout))
    for fn in (ref.batchnorm_backward_from_x, _sol("batchnorm_backward")):
        dx, dgamma, dbeta = fn(dout, x, gamma, eps=1e-3)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dgamma, layer.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(dbeta, layer.bias.grad.numpy(), rtol=1e-10)
    forward = lambda xx: ref.batchnorm_forward_running(xx, gamma, beta, np.zeros(4), np.ones(4), eps=1e-3)[0]
    assert rel_error(ref.batchnorm_backward_from_x(dout, x, gamma, 1e-3)[0],
                     numerical_grad(forward, x, dout)) < 1e-7


@pytest.mark.parametrize("case", list(_label_cases()))
def test_exercise_precision_recall_macro_f1_equals_sklearn(case):
    from sklearn.metrics import f1_score, precision_recall_fscore_support
    y_true, y_pred, k = _label_cases()[case]
    k += 1  # and one more class, absent from both arrays
    want_p, want_r, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    want_f1 = f1_score(y_true, y_pred, labels=list(range(k)), average="macro", zero_division=0)
    for fn in (ref.precision_recall_macro_f1, _sol("precision_recall_f1")):
        precision, recall, macro_f1 = fn(y_true, y_pred, k)
        np.testing.assert_allclose(precision, want_p, rtol=1e-12)
        np.testing.assert_allclose(recall, want_r, rtol=1e-12)
        assert isinstance(macro_f1, float) and macro_f1 == pytest.approx(want_f1, rel=1e-12)


def test_exercise_he_init_has_kaimings_distribution():
    from scipy import stats
    fan_in, fan_out = 256, 384
    w_torch = torch.empty(fan_out, fan_in, dtype=torch.float64)
    torch.manual_seed(0)
    torch.nn.init.kaiming_normal_(w_torch, nonlinearity="relu")
    for fn in (ref.he_init, _sol("he_init")):
        w = fn(fan_in, fan_out, np.random.default_rng(9))
        assert w.shape == (fan_in, fan_out)
        assert stats.ks_2samp(w.ravel(), w_torch.numpy().ravel()).pvalue > 1e-3
        assert w.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.02)
        np.testing.assert_array_equal(w, fn(fan_in, fan_out, np.random.default_rng(9)))


@pytest.mark.parametrize("case", [1, 2, 3, 4])
def test_exercise_fit_with_early_stopping_agrees_with_the_early_stopping_class(case):
    params, train_epoch, val_loss, max_epochs, patience = early_stopping_problem(case)
    stopper, losses = pr.EarlyStopping(patience), []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(val_loss(params))
        if stopper.step(losses[-1], epoch, params):
            break
    for fn in (ref.fit_with_early_stopping, _sol("fit_with_early_stopping")):
        best, best_epoch, got_losses = fn(*early_stopping_problem(case))
        assert best_epoch == stopper.best_epoch and got_losses == pytest.approx(losses, rel=1e-12)
        for key in best:
            np.testing.assert_allclose(best[key], stopper.best_params[key], rtol=1e-12)


# --------------------------------------------------------------------------- diagnoses that are not table rows

def _bn_running_var_from_std(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta, running_mean, running_var
    mean, std = x.mean(axis=0), np.sqrt(x.var(axis=0) + eps)
    out = gamma * (x - mean) / std + beta   # x_hat never stored: right all the same
    return out, (1 - momentum) * running_mean + momentum * mean, (1 - momentum) * running_var + momentum * std


def test_batchnorm_forward_names_the_first_wrong_stage_without_blaming_inline_ones():
    result = ch04.run("batchnorm_forward", _bn_running_var_from_std)
    assert result.mistake == "stage new_running_var"
    assert result.message.startswith("mean, var, x_hat, out, new_running_mean are right; new_running_var is wrong")


def _es_counts_the_initial_loss(params, train_epoch, val_loss, max_epochs, patience):
    losses, best, best_epoch, waited = [val_loss(params)], {k: v.copy() for k, v in params.items()}, 0, 0
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(val_loss(params))
        if losses[-1] < min(losses[:-1]):
            best, best_epoch, waited = {k: v.copy() for k, v in params.items()}, epoch, 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def test_early_stopping_names_a_loss_recorded_before_training():
    assert ch04.run("fit_with_early_stopping", _es_counts_the_initial_loss).message.startswith(
        "val_losses starts with the loss measured before any training")


def _dropout_global_rng(x, p, train, rng):
    if not train:
        return x, np.ones(x.shape, dtype=bool)
    mask = np.random.random(x.shape) >= p
    return (x * mask / (1 - p) if p < 1 else np.zeros_like(x)), mask


def _he_uniform(fan_in, fan_out, rng):
    bound = np.sqrt(6 / fan_in)   # the right std, but not a normal distribution
    return rng.uniform(-bound, bound, (fan_in, fan_out))


def test_random_exercises_see_the_rng_and_the_distribution():
    result = ch04.run("dropout_forward", _dropout_global_rng)
    assert result.message.startswith("the mask does not come from the rng given")
    result = ch04.run("he_init", _he_uniform)
    assert "beyond 2 std" in result.message and not result.passed


# --------------------------------------------------------------------------- the learner review's wrong answers

def _es_reviewer_previous_epoch(params, train_epoch, val_loss, max_epochs, patience):
    best, best_epoch, best_loss, waited, losses = {k: v.copy() for k, v in params.items()}, 0, np.inf, 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        loss = val_loss(params)
        if loss < best_loss:
            best, best_epoch, best_loss = {k: v.copy() for k, v in params.items()}, epoch, loss
        if losses and loss < losses[-1]:
            waited = 0
        elif losses:
            waited += 1
        losses.append(loss)
        if waited >= patience:
            break
    return best, best_epoch, losses


def _es_reviewer_restores_into_params(params, train_epoch, val_loss, max_epochs, patience):
    best, best_epoch, best_loss, waited, losses = None, 0, np.inf, 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(val_loss(params))
        if losses[-1] < best_loss:
            best, best_epoch, best_loss, waited = {k: v.copy() for k, v in params.items()}, epoch, losses[-1], 0
        else:
            waited += 1
            if waited == patience:
                break
    params.update(best)
    return params, best_epoch, losses


def _es_reviewer_val_loss_twice(params, train_epoch, val_loss, max_epochs, patience):
    best, best_epoch, waited, losses = None, 0, 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(val_loss(params))
        if val_loss(params) < min(losses[:-1], default=np.inf):
            best, best_epoch, waited = {k: v.copy() for k, v in params.items()}, epoch, 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def _es_reviewer_rounds(params, train_epoch, val_loss, max_epochs, patience):
    best, best_epoch, best_loss, waited, losses = None, 0, np.inf, 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(round(float(val_loss(params)), 4))
        if losses[-1] < best_loss:
            best, best_epoch, best_loss, waited = {k: v.copy() for k, v in params.items()}, epoch, losses[-1], 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def test_early_stopping_refuses_the_reviewers_wrong_loops():
    result = ch04.run("fit_with_early_stopping", _es_reviewer_previous_epoch)
    assert result.mistake == "compared with the previous epoch" and "patience 2" in result.message
    result = ch04.run("fit_with_early_stopping", _es_reviewer_restores_into_params)
    assert result.mistake == "returns the caller's dict"
    result = ch04.run("fit_with_early_stopping", _es_reviewer_val_loss_twice)
    assert result.mistake == "val_loss called twice per epoch"
    assert not ch04.run("fit_with_early_stopping", _es_reviewer_rounds).passed


def test_early_stopping_scripted_case_without_a_new_best_stops_after_4_epochs():
    _, best_epoch, losses = ref.fit_with_early_stopping(*early_stopping_problem(5))
    assert (best_epoch, losses) == (2, [1.0, 0.5, 0.9, 0.8])


def _dropout_reviewer_whole_rows(x, p, train, rng):
    if not train:
        return x, np.ones(x.shape, dtype=bool)
    mask = np.broadcast_to(rng.random((len(x), 1)) >= p, x.shape)
    return x * mask / (1 - p) if p < 1 else np.zeros_like(x), mask


def _dropout_reviewer_tiled(x, p, train, rng):
    if not train:
        return x, np.ones(x.shape, dtype=bool)
    mask = np.tile(rng.random((x.shape[0], 5)) >= p, (1, -(-x.shape[1] // 5)))[:, :x.shape[1]]
    return x * mask / (1 - p) if p < 1 else np.zeros_like(x), mask


def _dropout_reviewer_eval_none(x, p, train, rng):
    if not train:
        return x, None
    mask = rng.random(x.shape) >= p
    return x * mask / (1 - p) if p < 1 else np.zeros_like(x), mask


def _dropout_reviewer_float_mask(x, p, train, rng):
    if not train:
        return x, np.ones(x.shape)
    mask = (rng.random(x.shape) >= p).astype(float)
    return x * mask / (1 - p) if p < 1 else np.zeros_like(x), mask


def test_dropout_refuses_the_reviewers_masks():
    result = ch04.run("dropout_forward", _dropout_reviewer_whole_rows)
    assert result.mistake == "one mask per example", result.message
    result = ch04.run("dropout_forward", _dropout_reviewer_tiled)
    assert result.mistake == "mask not independent per element", result.message
    assert ch04.run("dropout_forward", _dropout_reviewer_eval_none).message.startswith(
        "in eval mode return an all-True boolean mask")
    assert "boolean mask" in ch04.run("dropout_forward", _dropout_reviewer_float_mask).message


def test_dropout_independence_test_accepts_many_seeds():
    from dlcourse.training.checks import _independence
    for seed in range(200):
        for shape, p in (((400, 250), 0.2), ((400, 250), 0.5), ((400, 250), 0.9)):
            _independence(np.random.default_rng(seed).random(shape) >= p, p, "seed")


def _he_reviewer_float32(fan_in, fan_out, rng):
    return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32)


def _he_reviewer_student_t(fan_in, fan_out, rng):
    df = 8   # the right std, heavier tails than a normal
    return rng.standard_t(df, (fan_in, fan_out)) * np.sqrt(2 / fan_in) * np.sqrt((df - 2) / df)


def test_he_init_accepts_float32_and_refuses_heavy_tails():
    assert ch04.run("he_init", _he_reviewer_float32).passed
    result = ch04.run("he_init", _he_reviewer_student_t)
    assert not result.passed and "kurtosis" in result.message
    for seed in range(50):
        w = np.random.default_rng(seed).standard_normal((800, 300))
        assert abs(np.mean(w ** 4) / w.var() ** 2 - 3) < 0.15
