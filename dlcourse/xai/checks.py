"""Graded checks for the exercises of chapter 09 (``solutions/09_xai.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the classic
wrong answers, each a plain wrong implementation with the exercise's own signature.  A check
runs the learner's code on cases from small to large against the course's answers
(:mod:`dlcourse.xai.numpy_impl`, :mod:`dlcourse.xai.torch_impl`, :mod:`dlcourse.xai.trust`,
and the exercise forms of this file where an exercise asks for another form) and, when an
answer is wrong, recomputes the table's rows on the same inputs to name the mistake.  What
recomputation cannot see (an error raised inside the learner's code, a Grad-CAM map left at
the layer's size, an attack whose result still carries its graph) the check recognises itself
and reports with its row's message.  A failure shows the smallest failing case and a call that
reproduces it.  ``tests/test_course.py`` hands every row to its check and proves that exactly
its message comes back; ``tests/test_xai_checks.py`` tests the rest.

The PyTorch exercises run on float64 copies of the course's cached digits models
(:func:`~dlcourse.xai.torch_impl.digits_mlp`, :func:`~dlcourse.xai.torch_impl.digits_cnn`), a
fresh copy for every call, so that a learner's code can neither change the course's models nor
be judged by float32 round-off.

Dimension letters: N batch, D input features (64 for the digits), H hidden width (or an image's
height), K classes, C channels, S steps (of a path integral) or samples (noisy copies), M rows
given to a model at once; h, w the size of a convolution's output.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close,
                              expect_float64, fail_with, is_shape_error, raises_like, trying)
from dlcourse.grading import matches as _close
from dlcourse.xai import numpy_impl as xn
from dlcourse.xai import torch_impl as xt
from dlcourse.xai import trust

check = Checker("09_xai")

__all__ = ["check", "lg_case", "sg_case", "ig_case", "oc_case", "gc_case", "fgsm_case", "pgd_case",
           "logit_gradient_mlp", "smoothgrad_abs_after", "integrated_gradients_rule", "occlusion_map",
           "grad_cam_hooks", "fgsm_attack", "pgd_from_start"]


# --------------------------------------------------------------------------- shared helpers

def _np(value):
    """A learner's output as a float64 ndarray when it is a tensor (detached); anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return value


@functools.lru_cache(maxsize=None)
def _test_digits():
    from dlcourse.data import load_digits
    d = load_digits(0)
    return d.x_test.astype(np.float64), d.y_test


@functools.lru_cache(maxsize=None)
def _model64(name: str) -> nn.Module:
    """A float64 copy of a course model: "mlp", "cnn" (the cached digits models) or "small" (a seeded random CNN)."""
    if name == "mlp":
        model = copy.deepcopy(xt.digits_mlp(0))
    elif name == "cnn":
        model = copy.deepcopy(xt.digits_cnn(0))
    else:
        from dlcourse.cnn.torch_impl import SmallCNN
        model = SmallCNN(in_channels=1, num_classes=4, width=3, image_size=12)
        gen = torch.Generator().manual_seed(909)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=gen))
    model = model.double().eval()
    model.zero_grad(set_to_none=True)
    return model


def _fresh(name: str) -> nn.Module:
    """A fresh copy of :func:`_model64` for one call (a learner's code may change it)."""
    return copy.deepcopy(_model64(name))


def _mlp_params() -> dict:
    return {k: v.detach().numpy().copy() for k, v in _model64("mlp").state_dict().items()}


def _batch(n: int, model: str | None = None, offset: int = 0):
    """``n`` test digits (float64 (N, 64)) and their labels; with ``model``, its first misclassified
    test digit comes first (so that "the predicted class" differs from the label somewhere)."""
    x, y = _test_digits()
    idx = list(range(offset, offset + n))
    if model is not None:
        m = _model64(model)
        with torch.no_grad():
            pred = m(xt.model_input(m, torch.from_numpy(x))).argmax(1).numpy()
        wrong = int(np.flatnonzero(pred != y)[0])
        idx = [wrong] + [i for i in idx if i != wrong][:n - 1]
    return x[idx].copy(), y[idx].copy()


def _as_input(name: str, x: np.ndarray) -> torch.Tensor:
    """Digits as the model ``name`` wants them: flat (N, 64) for the MLP, images (N, 1, 8, 8) for the CNN."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.reshape(-1, 1, 8, 8) if name == "cnn" else t


# =========================================================================== exercise forms (the graded answers)
# The answers to the exercises whose form differs from the package's functions (numpy_impl takes a
# parameter dict, returns the completeness error or the number of model calls with the map; torch_impl's
# Grad-CAM takes the layer as a keyword; trust.pgd draws its own start).  Each is the ``reference=`` of
# its check below (registered with the package's own functions, which a learner may not hand in or call
# either), so they sit above the checks; tests/test_xai_checks.py proves them equal to the package.

def logit_gradient_mlp(W1, b1, W2, b2, x, target):
    """d f_t / dx of the class logit of Linear(W1, b1) -> ReLU -> Linear(W2, b2), torch layout.

    W1 (H, D), b1 (H,), W2 (K, H), b2 (K,), x (N, D), target an int or (N,) ints; returns (N, D).
    """
    return xn.input_gradient({"0.weight": W1, "0.bias": b1, "2.weight": W2, "2.bias": b2}, x, target)


def smoothgrad_abs_after(model, x, target, noise):
    """|mean_s d f_t / dx (x + noise_s)| (the absolute value AFTER the mean), x's shape.

    noise (S, *x.shape), already scaled; target an int or (N,) ints.
    """
    return xt.smoothgrad(model, x, target, sigma=1.0, noise=noise, absolute="after")


def integrated_gradients_rule(grad_fn, x, baseline, steps):
    """IG with the Gauss-Legendre rule on [0, 1]: (x - x') * sum_k w_k grad_fn(x' + a_k (x - x')); (N, D).

    grad_fn maps points (M, D) to d f_t / dx (M, D); baseline has x's shape (N, D).
    """
    alphas, weights = xn.ig_rule("gausslegendre", steps)
    diff = x - baseline                                                 # (N, D)
    path = baseline[None] + alphas[:, None, None] * diff[None]          # (S, N, D)
    grads = grad_fn(path.reshape(-1, x.shape[1])).reshape(path.shape)
    return diff * np.tensordot(weights, grads, axes=1)


def occlusion_map(model_fn, image, target, patch, stride, baseline):
    """Occlusion of one (side, side) image: the mean drop of the logit over the windows covering each pixel."""
    return xn.occlusion(model_fn, image, target, patch, stride, baseline)[0]


def grad_cam_hooks(model, layer, x, target):
    """Grad-CAM of ``layer``'s output: ReLU(sum_k mean_hw(dF_t/dA_k) A_k), bilinearly upsampled to (N, 1, H, W)."""
    return xt.grad_cam(model, x, target, layer=layer)


def fgsm_attack(model, x, y, eps):
    """clip(x + eps * sign(d loss / dx), 0, 1) with the mean cross-entropy loss; x's shape."""
    return trust.fgsm(model, x, y, eps)


def pgd_from_start(model, x, y, eps, alpha, steps, start):
    """PGD from x + start: ``steps`` signed loss-gradient steps, each projected onto x's eps-ball, then clipped."""
    return trust.pgd(model, x, y, eps, alpha=alpha, steps=steps, start=start)


# --------------------------------------------------------------------------- 1. the logit's input gradient (NumPy)

def _mlp(W1, b1, W2, b2, x):
    z = x @ W1.T + b1                                       # (N, H)
    return z, np.maximum(z, 0) @ W2.T + b2                  # (N, K)


def _onehot(target, n, k):
    e = np.zeros((n, k))
    e[np.arange(n), np.broadcast_to(np.asarray(target), (n,))] = 1.0
    return e


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def lg_loss_gradient(W1, b1, W2, b2, x, target):
    z, logits = _mlp(W1, b1, W2, b2, x)
    dlogits = _softmax(logits) - _onehot(target, len(x), W2.shape[0])      # d cross-entropy / d logits
    return ((dlogits @ W2) * (z > 0)) @ W1


def lg_softmax_gradient(W1, b1, W2, b2, x, target):
    z, logits = _mlp(W1, b1, W2, b2, x)
    p = _softmax(logits)
    e = _onehot(target, len(x), W2.shape[0])
    dlogits = (p * e).sum(axis=1, keepdims=True) * (e - p)                 # d p_t / d logits
    return ((dlogits @ W2) * (z > 0)) @ W1


def lg_log_softmax_gradient(W1, b1, W2, b2, x, target):
    z, logits = _mlp(W1, b1, W2, b2, x)
    dlogits = _onehot(target, len(x), W2.shape[0]) - _softmax(logits)      # d log p_t / d logits
    return ((dlogits @ W2) * (z > 0)) @ W1


def lg_no_relu_mask(W1, b1, W2, b2, x, target):
    return (_onehot(target, len(x), W2.shape[0]) @ W2) @ W1                # the ReLU's derivative left out


def lg_mask_wrong_sign(W1, b1, W2, b2, x, target):
    z, _ = _mlp(W1, b1, W2, b2, x)
    return ((_onehot(target, len(x), W2.shape[0]) @ W2) * (z < 0)) @ W1    # passes where the unit is OFF


def lg_all_logits(W1, b1, W2, b2, x, target):
    z, logits = _mlp(W1, b1, W2, b2, x)
    return ((np.ones_like(logits) @ W2) * (z > 0)) @ W1                   # d (sum of all logits) / dx


def lg_absolute(W1, b1, W2, b2, x, target):
    z, _ = _mlp(W1, b1, W2, b2, x)
    return np.abs(((_onehot(target, len(x), W2.shape[0]) @ W2) * (z > 0)) @ W1)   # saliency, not the gradient


def lg_predicted_class(W1, b1, W2, b2, x, target):
    z, logits = _mlp(W1, b1, W2, b2, x)
    return ((_onehot(logits.argmax(axis=1), len(x), W2.shape[0]) @ W2) * (z > 0)) @ W1


def lg_weights_as_d_by_h(W1, b1, W2, b2, x, target):
    z = x @ W1 + b1                                          # W1 read as (D, H): torch stores (H, D)
    logits = np.maximum(z, 0) @ W2 + b2
    return ((_onehot(target, len(x), logits.shape[1]) @ W2.T) * (z > 0)) @ W1.T


LOGIT_GRADIENT_MISTAKES = (
    Mistake("gradient of the loss", lg_loss_gradient,
            "that is the gradient of the cross-entropy LOSS (softmax(z) - onehot(target) backpropagated): an "
            "attribution explains the class LOGIT f_t alone; backpropagate the one-hot row e_t instead"),
    Mistake("gradient of the softmax", lg_softmax_gradient,
            "that is the gradient of the softmax PROBABILITY p_t, which mixes in every other class's logit (and "
            "vanishes when p_t saturates): the attribution explains the class LOGIT f_t; backpropagate e_t"),
    Mistake("gradient of log-softmax", lg_log_softmax_gradient,
            "that is the gradient of log-softmax, log p_t = f_t - logsumexp(f) (e_t - softmax backpropagated): "
            "the logsumexp term drags in the other classes; the attribution explains the LOGIT f_t alone"),
    Mistake("no ReLU mask", lg_no_relu_mask,
            "the ReLU's derivative is missing: the gradient reaches the first layer only through the hidden "
            "units that were ON (z = x W1^T + b1 > 0); multiply by the mask (z > 0) before going through W1"),
    Mistake("mask of the wrong sign", lg_mask_wrong_sign,
            "the ReLU mask is inverted: the derivative of max(z, 0) is 1 where z > 0 and 0 where z < 0, not the "
            "other way round"),
    Mistake("all logits (no one-hot)", lg_all_logits,
            "that is the gradient of the SUM of all K logits (a row of ones backpropagated): pick the target's "
            "logit with a one-hot row e_t (1 in column target[n] of row n, 0 elsewhere)"),
    Mistake("absolute value taken", lg_absolute,
            "the values are right in size but all >= 0: that is saliency |df_t/dx|; the exercise asks for the "
            "signed gradient (the sign says whether a pixel raises or lowers the logit)"),
    Mistake("predicted class instead of target", lg_predicted_class,
            "that is the gradient of the PREDICTED class's logit (argmax of the logits): explain the class given "
            "in `target` (which may not be the predicted one: 'why not a 3?')"),
    Mistake("W1 read as (D, H)", lg_weights_as_d_by_h,
            "W1 is in torch's nn.Linear layout, (H, D) = (out, in): the forward pass is z = x @ W1.T + b1, and "
            "the backward pass multiplies by W1 itself, dx = dz @ W1 (likewise W2 is (K, H))"),
)

# (N, D, H, K, target: "int" or "array", seed)
LG_CASES = [(3, 4, 5, 3, "int", 901), (4, 6, 8, 4, "array", 902), (8, 64, 32, 10, "digits", 903)]


def lg_case(case: int):
    """Case ``case`` (1 to 3) of the logit_gradient check: ``W1, b1, W2, b2, x, target`` (float64)."""
    n, d, h, k, kind, seed = LG_CASES[case - 1]
    rng = np.random.default_rng(seed)
    if kind == "digits":
        p = _mlp_params()
        W1, b1, W2, b2 = p["0.weight"], p["0.bias"], p["2.weight"], p["2.bias"]
        x, _ = _batch(n, offset=20)
        return W1, b1, W2, b2, x, 3                            # "why a 3?": the predicted class for few rows
    W1, b1 = rng.standard_normal((h, d)), 0.5 * rng.standard_normal(h)
    W2, b2 = rng.standard_normal((k, h)), 0.5 * rng.standard_normal(k)
    x = rng.standard_normal((n, d))
    pred = _mlp(W1, b1, W2, b2, x)[1].argmax(axis=1)
    if kind == "int":
        target = int((pred[0] + 1) % k)                        # row 0 explains a class it did not predict
    else:
        target = (pred + np.arange(n) % 2) % k                 # every other row: another class
    return W1, b1, W2, b2, x, target


def _lg_what(case):
    n, d, h, k, kind, _ = LG_CASES[case - 1]
    return f"N = {n}, D = {d}, H = {h}, K = {k}" + (", the digits MLP" if kind == "digits" else "")


@check.exercise(points=3, mistakes=LOGIT_GRADIENT_MISTAKES,
                reference=logit_gradient_mlp,
                forbid=(xn.input_gradient, xn.mlp_input_backward, xn.saliency, xn.gradient_x_input, xt.logit_gradient,
                        xt.saliency), hints=[
    "The attribution explains ONE number per row, the target class's logit f_t (not the loss, not the "
    "softmax). Its gradient is a backward pass that starts from d f_t / d logits = e_t, the one-hot row of "
    "the target, and goes through the second layer, the ReLU, and the first layer.",
    "Forward: z = x W1^T + b1 (N, H), the logits from ReLU(z). Backward: a one-hot (N, K) with a 1 in column "
    "target[n] of row n; times W2 gives (N, H); only hidden units with z > 0 let it through; times W1 "
    "gives (N, D). torch's layout: W1 is (H, D), so z uses W1.T and the way back uses W1.",
    "z = x @ W1.T + b1; e = np.zeros((len(x), len(b2))); e[np.arange(len(x)), target] = 1; "
    "dh = e @ W2; dz = dh * (z > 0); return the last matrix product (N, H) @ (H, D).",
])
def logit_gradient(fn):
    """d f_t / dx of a Linear-ReLU-Linear MLP's class logit, by hand in NumPy."""
    for case in range(1, len(LG_CASES) + 1):
        args = lg_case(case)
        what = _lg_what(case)
        line = (f"from dlcourse.xai.checks import lg_case; W1, b1, W2, b2, x, target = lg_case({case}); "
                "logit_gradient(W1, b1, W2, b2, x, target)")
        with trying("logit_gradient", label=what, call_text=line) as tried:
            expected = logit_gradient_mlp(*args)
            try:
                got = call(fn, *args)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                raises_like(LOGIT_GRADIENT_MISTAKES, err, lambda row: row(*args), f"({what})",
                            right=lambda: logit_gradient_mlp(*args))
                if is_shape_error(err):
                    fail_with(LOGIT_GRADIENT_MISTAKES, "W1 read as (D, H)", f"({what}; numpy said: {err})")
                raise
            got = _np(got)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, LOGIT_GRADIENT_MISTAKES, apply=lambda row: row(*args), suffix=f"({what})")
            expect_float64(["the gradient"], [got], what)
            expect_close(got, expected, f"the gradient ({what})", rtol=1e-8, atol=1e-10)
    return ("d f_t / dx equals autograd's on 3 MLPs (random ones with int and per-row targets, and the digits "
            "MLP explaining class 3)")


# --------------------------------------------------------------------------- 2. SmoothGrad (PyTorch)

def _targets(target, n):
    return torch.broadcast_to(torch.as_tensor(target, dtype=torch.int64), (n,))


def _copies(x, noise):
    """x + noise_s for all S copies, as one batch (S * N, ...) that requires grad."""
    s = noise.shape[0]
    return (x.unsqueeze(0) + noise).reshape(s * x.shape[0], *x.shape[1:]).detach().requires_grad_(True)


def _picked_grads(model, batch, t, kind="logit"):
    """Per-row gradients of the picked logit (or "softmax" probability, or the "loss") of a batch."""
    out = model(batch)
    if kind == "logit":
        score = out.gather(1, t[:, None]).sum()
    elif kind == "softmax":
        score = out.softmax(1).gather(1, t[:, None]).sum()
    else:
        score = F.cross_entropy(out, t)
    (g,) = torch.autograd.grad(score, batch)
    return g


def _sg_grads(model, x, target, noise, kind="logit"):
    x, noise = torch.as_tensor(x), torch.as_tensor(noise)
    s, n = noise.shape[0], x.shape[0]
    g = _picked_grads(model, _copies(x, noise), _targets(target, n).repeat(s), kind)
    return g.reshape(s, *x.shape)


def sg_abs_before(model, x, target, noise):
    return _sg_grads(model, x, target, noise).abs().mean(0)                  # |.| of every copy, then the mean


def sg_no_abs(model, x, target, noise):
    return _sg_grads(model, x, target, noise).mean(0)


def sg_loss_gradient(model, x, target, noise):
    return _sg_grads(model, x, target, noise, "loss").mean(0).abs()


def sg_softmax_gradient(model, x, target, noise):
    return _sg_grads(model, x, target, noise, "softmax").mean(0).abs()


def sg_noise_ignored(model, x, target, noise):
    x = torch.as_tensor(x).detach().requires_grad_(True)
    return _picked_grads(model, x, _targets(target, x.shape[0])).abs()      # plain saliency at x


def sg_sum_over_samples(model, x, target, noise):
    return _sg_grads(model, x, target, noise).sum(0).abs()


def sg_first_copy_only(model, x, target, noise):
    noise = torch.as_tensor(noise).clone()
    noise[1:] = 0                                                            # copies 2..S are x itself
    return _sg_grads(model, x, target, noise).mean(0).abs()


SMOOTHGRAD_MISTAKES = (
    Mistake("absolute value too early", sg_abs_before,
            "absolute value taken too early: |gradient| of every noisy copy, then the mean (Captum's NoiseTunnel "
            "default); here the mean of the SIGNED gradients comes first and the absolute value after it, "
            "|mean_s g_s| (Smilkov et al.), so gradients that flip sign between copies cancel"),
    Mistake("no absolute value", sg_no_abs,
            "the mean gradient is right but signed: the exercise's map is its absolute value, |mean_s g_s|"),
    Mistake("gradient of the loss", sg_loss_gradient,
            "that is the gradient of the cross-entropy LOSS of the copies: SmoothGrad averages the gradient of the "
            "class LOGIT f_t (pick column target with gather, sum over the batch, differentiate)"),
    Mistake("gradient of the softmax", sg_softmax_gradient,
            "that is the gradient of the softmax PROBABILITY p_t: SmoothGrad averages the gradient of the class "
            "LOGIT f_t (the probability mixes in the other classes and saturates)"),
    Mistake("noise ignored", sg_noise_ignored,
            "that is plain saliency |df_t/dx| at x itself: the noise was never added; take the gradient at each "
            "of the S copies x + noise[s] and average those"),
    Mistake("sum over the samples", sg_sum_over_samples,
            "the gradients of the S copies are summed: SmoothGrad takes their MEAN (the map is S times too large)"),
    Mistake("noise on the first copy only", sg_first_copy_only,
            "only the first copy got its noise (the others are x itself): copy s is x + noise[s] for every s; "
            "broadcast x (N, ...) against noise (S, N, ...)"),
)

# (model, N, S, target kind, seed)
SG_CASES = [("mlp", 2, 3, "int", 911), ("mlp", 5, 8, "array", 912), ("cnn", 3, 4, "array", 913)]


def sg_case(case: int):
    """Case ``case`` (1 to 3) of the smoothgrad check: ``model, x, target, noise`` (float64, a fresh model copy)."""
    name, n, s, kind, seed = SG_CASES[case - 1]
    x, y = _batch(n, offset=40 + 10 * case)
    xin = _as_input(name, x)
    gen = torch.Generator().manual_seed(seed)
    noise = 0.15 * torch.randn((s, *xin.shape), generator=gen, dtype=torch.float64)
    target = int(y[0]) if kind == "int" else torch.as_tensor((y + np.arange(n) % 3) % 10)
    return _fresh(name), xin, target, noise


def _sg_what(case):
    name, n, s, _, _ = SG_CASES[case - 1]
    return f"the digits {name.upper()}, N = {n}, S = {s}"


def _translate_batch_error(fail, what):
    """A model given (S, N, ...) copies without flattening them into one batch."""
    err = getattr(fail, "error", None)
    if isinstance(err, RuntimeError) and ("Expected 3D" in str(err) or "4D" in str(err)
                                          or "gather" in str(err) or "Index tensor" in str(err)):
        raise CheckFailed(f"the model cannot take the copies as they are ({err}): stack the S noisy copies into "
                          f"ONE batch of S * N rows, (S * N, ...) with .reshape, and repeat the targets S times "
                          f"({what})") from None


@check.exercise(points=2, mistakes=SMOOTHGRAD_MISTAKES, seconds=60,
                reference=(smoothgrad_abs_after, xt.smoothgrad), forbid=(xn.smoothgrad,), hints=[
    "SmoothGrad averages the gradient of the class LOGIT over S noisy copies of the input, which smooths "
    "the gradient's jumps; the map is the absolute value of that mean (the absolute value comes last, so "
    "that gradients that flip sign between copies cancel).",
    "Build all copies at once, x + noise (broadcast: (S, N, ...)), flatten them to one batch (S * N, ...) "
    "that requires grad, pick each row's target logit with gather (targets repeated S times), sum, and "
    "differentiate; reshape the gradient back to (S, N, ...), mean over S, then abs.",
    "batch = (x + noise).reshape(-1, *x.shape[1:]).detach().requires_grad_(True); "
    "out = model(batch); t = the targets as (N,) ints, .repeat(S); score = out.gather(1, t[:, None]).sum(); "
    "(g,) = torch.autograd.grad(score, batch); then the mean over S of g.reshape(S, *x.shape), and its abs.",
])
def smoothgrad(fn):
    """|mean_s d f_t / dx (x + noise_s)| for any model (PyTorch)."""
    for case in range(1, len(SG_CASES) + 1):
        what = _sg_what(case)
        line = (f"from dlcourse.xai.checks import sg_case; model, x, target, noise = sg_case({case}); "
                "smoothgrad(model, x, target, noise)")
        with trying("smoothgrad", label=what, call_text=line) as tried:
            expected = _np(smoothgrad_abs_after(*sg_case(case)))
            try:
                got = call(fn, *sg_case(case), allow_mutation=True)
            except CheckFailed as fail:
                _translate_batch_error(fail, what)
                raise
            got = _np(got)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, SMOOTHGRAD_MISTAKES, apply=lambda row: _np(row(*sg_case(case))),
                     suffix=f"({what})")
            expect_close(got, expected, f"the SmoothGrad map ({what})", rtol=1e-7, atol=1e-10)
    return "|mean_s grad f_t(x + noise_s)| equals the reference on the digits MLP and CNN"


# --------------------------------------------------------------------------- 3. Integrated Gradients (NumPy)

def _ig_with(grad_fn, x, baseline, alphas, weights):
    diff = x - baseline
    path = baseline[None] + np.asarray(alphas)[:, None, None] * diff[None]       # (S, N, D)
    grads = grad_fn(path.reshape(-1, x.shape[1])).reshape(path.shape)
    return grads, diff, np.tensordot(np.asarray(weights), grads, axes=1)


def ig_no_difference(grad_fn, x, baseline, steps):
    a, w = xn.ig_rule("gausslegendre", steps)
    return _ig_with(grad_fn, x, baseline, a, w)[2]                                # the mean gradient alone


def ig_left_riemann(grad_fn, x, baseline, steps):
    _, diff, avg = _ig_with(grad_fn, x, baseline, np.arange(steps) / steps, np.full(steps, 1 / steps))
    return diff * avg


def ig_right_riemann(grad_fn, x, baseline, steps):
    _, diff, avg = _ig_with(grad_fn, x, baseline, np.arange(1, steps + 1) / steps, np.full(steps, 1 / steps))
    return diff * avg


def ig_nodes_not_mapped(grad_fn, x, baseline, steps):
    t, v = np.polynomial.legendre.leggauss(steps)
    _, diff, avg = _ig_with(grad_fn, x, baseline, t, v / 2)                        # nodes on [-1, 1]
    return diff * avg


def ig_weights_not_halved(grad_fn, x, baseline, steps):
    t, v = np.polynomial.legendre.leggauss(steps)
    _, diff, avg = _ig_with(grad_fn, x, baseline, (t + 1) / 2, v)                  # weights sum to 2
    return diff * avg


def ig_equal_weights(grad_fn, x, baseline, steps):
    t, _ = np.polynomial.legendre.leggauss(steps)
    _, diff, avg = _ig_with(grad_fn, x, baseline, (t + 1) / 2, np.full(steps, 1 / steps))
    return diff * avg


def ig_path_reversed(grad_fn, x, baseline, steps):
    a, w = xn.ig_rule("gausslegendre", steps)
    _, _, avg = _ig_with(grad_fn, baseline, x, a, w)                               # from x to the baseline
    return (baseline - x) * avg


def ig_zero_baseline(grad_fn, x, baseline, steps):
    a, w = xn.ig_rule("gausslegendre", steps)
    zero = np.zeros_like(x)
    _, diff, avg = _ig_with(grad_fn, x, zero, a, w)
    return diff * avg


IG_MISTAKES = (
    Mistake("no (x - baseline) factor", ig_no_difference,
            "the (x - baseline) factor is missing: that is the average gradient along the path; IG multiplies it, "
            "feature by feature, by x - baseline (the path's length in that feature), which is what makes the "
            "attributions add up to f(x) - f(baseline)"),
    Mistake("left Riemann sum", ig_left_riemann,
            "that is the left Riemann sum (points k / S, k = 0 .. S-1, weights 1 / S): the exercise asks for the "
            "Gauss-Legendre rule, nodes (t + 1) / 2 and weights v / 2 from np.polynomial.legendre.leggauss(steps)"),
    Mistake("right Riemann sum", ig_right_riemann,
            "that is the right Riemann sum (points k / S, k = 1 .. S, weights 1 / S): the exercise asks for the "
            "Gauss-Legendre rule, nodes (t + 1) / 2 and weights v / 2 from np.polynomial.legendre.leggauss(steps)"),
    Mistake("Gauss nodes not mapped to [0, 1]", ig_nodes_not_mapped,
            "the Gauss-Legendre nodes t lie in [-1, 1]: the path parameter runs over [0, 1], so use (t + 1) / 2 "
            "(with the weights v / 2)"),
    Mistake("Gauss weights not halved", ig_weights_not_halved,
            "the attributions are exactly twice too large: leggauss's weights v sum to 2 (the length of [-1, 1]); "
            "mapped to [0, 1] they become v / 2, which sum to 1"),
    Mistake("equal weights", ig_equal_weights,
            "the gradients at the Gauss-Legendre nodes are averaged with equal weights 1 / S: the rule's weights "
            "differ from node to node (v / 2, largest in the middle); use them, sum_k w_k g_k"),
    Mistake("path from x to the baseline", ig_path_reversed,
            "the sign is flipped: the path runs from the baseline TO x, x' + a (x - x'), and the factor is "
            "x - baseline, not baseline - x"),
    Mistake("baseline ignored", ig_zero_baseline,
            "the baseline was ignored (zeros used): start the path at the given baseline, baseline + a (x - "
            "baseline), and multiply by x - baseline"),
)


def _quadratic(d, seed):
    """f(x) = x Q x / 2 + b . x per row, and its gradient x Q + b (linear along any straight path)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    q, b = (a + a.T) / 2, rng.standard_normal(d)

    def f(points):
        return 0.5 * np.einsum("nd,de,ne->n", points, q, points) + points @ b

    def grad_fn(points):
        p = np.asarray(points)
        return (p.reshape(-1, d) @ q + b).reshape(p.shape)
    return f, grad_fn


def _mlp_logit(target):
    params = _mlp_params()

    def f(points):
        return xn.mlp_logits(params, points)[:, target]

    def grad_fn(points):
        p = np.asarray(points)
        return xn.input_gradient(params, p.reshape(-1, p.shape[-1]), target).reshape(p.shape)
    return f, grad_fn


# (kind, N, D, steps, baseline, seed)
IG_CASES = [("quadratic", 2, 3, 4, "random", 921), ("digits", 4, 64, 16, "zeros", 922),
            ("digits", 8, 64, 50, "grey", 923)]


def ig_case(case: int, with_f: bool = False):
    """Case ``case`` (1 to 3) of the integrated_gradients check: ``grad_fn, x, baseline, steps``
    (and f, the function itself, when ``with_f``)."""
    kind, n, d, steps, base, seed = IG_CASES[case - 1]
    rng = np.random.default_rng(seed)
    if kind == "quadratic":
        f, grad_fn = _quadratic(d, seed)
        x = rng.standard_normal((n, d))
    else:
        f, grad_fn = _mlp_logit(case + 3)
        x, _ = _batch(n, offset=60 + 10 * case)
    baseline = {"random": lambda: rng.standard_normal((n, d)), "zeros": lambda: np.zeros((n, d)),
                "grey": lambda: np.full((n, d), 0.25)}[base]()
    out = (grad_fn, x, baseline, steps)
    return out + (f,) if with_f else out


def _ig_what(case):
    kind, n, d, steps, base, _ = IG_CASES[case - 1]
    model = "a quadratic f (its gradient is linear along the path)" if kind == "quadratic" else \
        f"the digits MLP's logit {case + 3}"
    return f"{model}, N = {n}, steps = {steps}, {base} baseline"


def _completeness(attr, f, x, baseline):
    """(sum of the attributions per row, f(x) - f(baseline) per row, the largest relative error)."""
    total, change = attr.sum(axis=1), f(x) - f(baseline)
    return total, change, float(np.max(np.abs(total - change)) / max(np.max(np.abs(change)), 1e-12))


@check.exercise(points=3, mistakes=IG_MISTAKES, seconds=30,
                reference=(integrated_gradients_rule, xn.integrated_gradients, xt.integrated_gradients),
                hints=[
    "IG integrates the gradient along the straight path from the baseline x' to x and multiplies by "
    "x - x' feature by feature; exactly, the attributions then add up to f(x) - f(x') (completeness). The "
    "integral over a in [0, 1] is approximated by a quadrature rule: Gauss-Legendre here.",
    "np.polynomial.legendre.leggauss(steps) gives nodes t and weights v for [-1, 1]; mapped to [0, 1] they "
    "are a = (t + 1) / 2 and w = v / 2. Evaluate grad_fn at all the points x' + a_k (x - x') (stack them "
    "as (S * N, D) or loop over k), take sum_k w_k * gradient_k, and multiply by x - x'.",
    "t, v = np.polynomial.legendre.leggauss(steps); a, w = (t + 1) / 2, v / 2; "
    "points = baseline[None] + a[:, None, None] * (x - baseline)[None]   # (S, N, D); "
    "g = grad_fn(points.reshape(-1, x.shape[1])).reshape(points.shape); then the weighted sum over S "
    "(np.tensordot(w, g, axes=1)) times (x - baseline).",
])
def integrated_gradients(fn):
    """Integrated Gradients by the Gauss-Legendre rule (NumPy), graded by completeness and the reference."""
    report = []
    for case in range(1, len(IG_CASES) + 1):
        _, x, baseline, steps, f = ig_case(case, with_f=True)
        what = _ig_what(case)
        line = (f"from dlcourse.xai.checks import ig_case; grad_fn, x, baseline, steps = ig_case({case}); "
                "integrated_gradients(grad_fn, x, baseline, steps)")
        with trying("integrated_gradients", label=what, call_text=line) as tried:
            expected = integrated_gradients_rule(*ig_case(case))
            got = _np(call(fn, *ig_case(case)))
            tried.got, tried.expected = got, expected
            diagnose(got, expected, IG_MISTAKES, apply=lambda row: row(*ig_case(case)), suffix=f"({what})")
            expect_float64(["the attributions"], [got], what)
            if np.shape(got) == expected.shape and np.all(np.isfinite(got)):
                total, change, rel = _completeness(got, f, x, baseline)
                _, _, rel_ref = _completeness(expected, f, x, baseline)
                if rel > max(2 * rel_ref, 1e-9) + 1e-9:
                    n = int(np.argmax(np.abs(total - change)))
                    raise CheckFailed(
                        f"completeness fails: row {n}'s attributions sum to {total[n]:.6g}, but f(x) - f(baseline) "
                        f"= {change[n]:.6g} (relative error {rel:.2%}; the Gauss-Legendre rule with {steps} steps "
                        f"misses by {rel_ref:.2%}) ({what})", mistake="completeness")
                report.append(f"{rel:.2g}" if rel < 1e-6 else f"{rel:.2%}")
            expect_close(got, expected, f"the attributions ({what})", rtol=1e-7, atol=1e-10)
    return ("completeness: the attributions add up to f(x) - f(baseline) within a relative error of "
            f"{report[0]} (quadratic f), {report[1]} (digits MLP, 16 steps) and {report[2]} (50 steps: a ReLU "
            "net's gradient jumps along the path, which no rule integrates exactly), and they equal the reference")


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_ig_sum", answer=5.0, rtol=1e-3,
    explanation="completeness: the exact path integral of a gradient is the change of the function, so the "
                "attributions add up to f_t(x) - f_t(baseline) = 7.5 - 2.5 = 5; a quadrature rule misses by its "
                "completeness error",
    mistakes=[Mistake("f(x)", 7.5, "that is f_t(x) alone: IG explains the CHANGE from the baseline's score"),
              Mistake("sum of both", 10.0, "the baseline's score is subtracted, not added: the path runs from "
                                           "the baseline to x"),
              Mistake("sign flipped", -5.0, "the sign is flipped: the path runs from the baseline TO x, so the sum "
                                            "is f_t(x) - f_t(baseline)"),
              Mistake("zero", 0.0, "attributions do not cancel out: they add up to how much the score changes "
                                   "between the baseline and x")])

check.question(
    "q_fgsm_norm", answer=0.1, rtol=1e-3,
    explanation="every pixel moves by exactly eps = 0.1 (the sign of the gradient is +-1), so the L-infinity "
                "norm, the largest |change| of a pixel, is eps; clipping to [0, 1] can only make some changes "
                "smaller",
    mistakes=[Mistake("L2 norm", 0.8, "that is the L2 norm, sqrt(64) * 0.1: the L-infinity norm is the LARGEST "
                                      "|change| of one pixel"),
              Mistake("L1 norm", 6.4, "that is the L1 norm, 64 * 0.1: the L-infinity norm is the LARGEST "
                                      "|change| of one pixel"),
              Mistake("twice eps", 0.2, "the ball's diameter: a pixel moves by +eps or -eps, never by 2 eps")])

check.question(
    "q_sanity_check", answer="b", choices=("a", "b", "c"),
    explanation="gradient x input (and IG, which multiplies by x - 0 too) keep the shape of the digit itself: "
                "multiplying by x paints the input's strokes into the map whatever the weights are, so their "
                "|map| still correlates about 0.9 with the trained model's after every layer was randomized "
                "(Adebayo et al. call that failing the sanity check); the plain gradient changes completely",
    mistakes=[Mistake("the gradient", "a", "the plain gradient fell to a rank correlation near 0 once the weights "
                                           "were random: it depends on the weights only, so it passes the check"),
              Mistake("neither", "c", "one family kept a high rank correlation: look for the methods that multiply "
                                      "the gradient by the input")])

check.question(
    "q_grad_cam_size", answer=(4, 4),
    explanation="conv1 keeps 8 x 8 (3 x 3 with padding 1), the first 2 x 2 max-pool halves it to 4 x 4, and conv2 "
                "(padding 1 again) keeps 4 x 4: Grad-CAM's map is 4 x 4 before it is upsampled to the input's "
                "8 x 8",
    mistakes=[Mistake("the input's size", (8, 8), "8 x 8 is the size AFTER the upsampling: conv2 sees the image "
                                                  "after one 2 x 2 max-pool"),
              Mistake("after the second pool", (2, 2), "2 x 2 is after the SECOND max-pool: the hook reads conv2's "
                                                       "output, before that pool"),
              Mistake("no padding", (6, 6),
                      "6 x 6 would be a 3 x 3 convolution WITHOUT padding on the 8 x 8 input: SmallCNN pads by 1 "
                      "and pools once before conv2")])

check.question(
    "q_parity_gap", answer=0.15, rtol=1e-3,
    explanation="demographic parity compares the rates of positive predictions: |P(pred = 1 | A) - P(pred = 1 | "
                "B)| = |0.60 - 0.45| = 0.15 (0 means parity; it ignores the true labels, which equalized odds "
                "takes into account)",
    mistakes=[Mistake("ratio", 0.75, "0.45 / 0.60 = 0.75 is the ratio (the 'four-fifths rule'): the gap is the "
                                     "DIFFERENCE of the two rates"),
              Mistake("sum", 1.05, "the gap is the difference of the two positive rates, not their sum"),
              Mistake("negative", -0.15, "the gap is an absolute difference, >= 0")])
