"""Graded checks for the exercises of chapter 09 (``solutions/09_xai.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the classic
wrong answers, each a plain wrong implementation with the exercise's own signature.  A check
runs the learner's code on cases from small to large against the course's answers
(:mod:`dlcourse.xai.numpy_impl`, :mod:`dlcourse.xai.torch_impl`, :mod:`dlcourse.xai.trust`,
and the exercise forms of this file where an exercise asks for another form) and, when an
answer is wrong, recomputes the table's rows on the same inputs to name the mistake.  What
recomputation cannot see (an error raised inside the learner's code, a Grad-CAM map left at
the layer's size, an attack whose result still carries its graph, a tensor where a NumPy array
is asked or the other way round, float32 work handed back as float64, a hook left on the
model, the caller's x changed in place or made to require grad) the check recognises itself
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
import inspect

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


def _one_array(got, name: str, what: str):
    """Fail when a learner's function returned None, a tuple or a list instead of one array / tensor."""
    if got is None:
        raise CheckFailed(f"{name} returned None: did you forget a `return`? ({what})")
    if isinstance(got, (tuple, list)):
        raise CheckFailed(f"{name} returned a {type(got).__name__} of {len(got)} items: return the map alone, one "
                          f"array of the shape asked for ({what})")
    return _np(got)


def _kind_of_result(raw, name: str, what: str, table, wrong_kind: type, row: str, noun: str) -> None:
    """Fail when a learner's function returned ``wrong_kind`` (a torch tensor from a NumPy exercise, a NumPy
    array from a PyTorch one): with ``table``'s row ``row`` where it has one, else a message of its own."""
    if not isinstance(raw, wrong_kind):
        return
    if any(r.name == row for r in table):
        fail_with(table, row, f"({what})")
    if wrong_kind is torch.Tensor:
        raise CheckFailed(f"{name} returned a torch tensor: this is a NumPy exercise, return {noun} as a float64 "
                          f"NumPy array ({what})", mistake=row)
    raise CheckFailed(f"{name} returned a NumPy array: return {noun} as a torch tensor (no .numpy() at the end) "
                      f"({what})", mistake=row)


_FLOAT32 = (torch.float32, torch.float16, torch.bfloat16)


def _float64_work(out, got, expected, in_float32, table, what, rtol, atol) -> None:
    """Name float32 work in a PyTorch exercise: a float32 result, or a float64 one that equals the answer computed
    in float32 (``in_float32()``, as float64) but not the answer, before the values are compared (a round-off of
    about 1e-8 would read "got 0.525, expected 0.525", or, in PGD, as a step outside the eps-ball)."""
    if isinstance(out, torch.Tensor) and out.dtype in _FLOAT32:
        fail_with(table, "float32", f"({what}; the result is {out.dtype})")
    if np.shape(got) != np.shape(expected) or _close(got, expected, rtol=rtol, atol=atol):
        return
    try:
        ref32 = in_float32()
    except Exception:  # noqa: BLE001 - the reference does not run in float32 here: nothing to compare
        return
    if _close(got, ref32, rtol=1e-5, atol=1e-6):
        fail_with(table, "float32", f"({what}; the result is float64, but its values are the answer computed in "
                                    "float32)")


def _float32_copy(args):
    """The arguments of a PyTorch exercise with the model and the float64 tensors in float32 (for ``in_float32``)."""
    return tuple(a.float() if isinstance(a, nn.Module) or (isinstance(a, torch.Tensor) and a.is_floating_point())
                 else a for a in args)


def _hooks(model: nn.Module) -> int:
    """How many hooks are registered on ``model``'s modules and parameters (and globally on all modules)."""
    from torch.nn.modules import module as _module
    count = sum(len(getattr(m, attr, None) or {}) for m in model.modules()
                for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
    count += sum(len(getattr(p, attr, None) or {}) for p in model.parameters()
                 for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"))
    count += sum(len(getattr(_module, attr, None) or {}) for attr in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))
    return count


_SIGNATURES = {"smoothgrad": ("model", "x", "target", "noise"), "grad_cam": ("model", "layer", "x", "target"),
               "fgsm": ("model", "x", "y", "eps"), "pgd": ("model", "x", "y", "eps", "alpha", "steps", "start")}


def _torch_call(fn, args, name: str, what: str, table=(), guarded=("x",)):
    """Call a PyTorch exercise with ``args``; fail when it changed the caller's tensors named in ``guarded``
    (their values, or switched requires_grad on: x.requires_grad_(True) on the tensor it was given)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    spec = _SIGNATURES[name]
    before = {i: (a.detach().clone(), a.requires_grad) for i, a in enumerate(args)
              if isinstance(a, torch.Tensor) and spec[i] in guarded}
    out = call(fn, *args, allow_mutation=True)
    for i, (old, requires) in before.items():
        arg, shown = args[i], params[i] if i < len(params) else spec[i]
        if arg.requires_grad != requires:
            if spec[i] == "x" and any(r.name == "x made to require grad" for r in table):
                fail_with(table, "x made to require grad", f"({what})")
            raise CheckFailed(f"{name} switched on requires_grad of the tensor it was given as `{shown}`: leave the "
                              f"caller's tensor unchanged; differentiate a copy, {shown}.detach().clone()"
                              f".requires_grad_(True) ({what})", mistake="input made to require grad")
        if arg.shape != old.shape or not torch.equal(arg.detach(), old):
            raise CheckFailed(f"{name} changed the tensor it was given as `{shown}` in place (+=, .add_, .clamp_, "
                              f".data or an index assignment): leave the caller's tensor unchanged and build a new "
                              f"one, {shown}_new = {shown} + ... ({what})", mistake="mutated input")
    return out


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


def lg_tensor(W1, b1, W2, b2, x, target):
    return torch.as_tensor(logit_gradient_mlp(W1, b1, W2, b2, x, target))   # right values, a torch tensor


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
    Mistake("torch tensor returned", lg_tensor,
            "the values are right, but logit_gradient returned a torch tensor: this is a NumPy exercise, and every "
            "NumPy function returns a float64 NumPy array (no torch.as_tensor / torch.from_numpy; compute with "
            "np.* on the arrays you were given)"),
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
            raw, got = got, _one_array(got, "logit_gradient", what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, LOGIT_GRADIENT_MISTAKES, apply=lambda row: row(*args), suffix=f"({what})")
            _kind_of_result(raw, "logit_gradient", what, LOGIT_GRADIENT_MISTAKES, torch.Tensor,
                            "torch tensor returned", "the gradient")
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


def _sg_per_copy(model, x, target, noise, score):
    """The mean over the S copies of each copy's own gradient of ``score(logits, targets)`` (a loop over the copies)."""
    x, noise = torch.as_tensor(x), torch.as_tensor(noise)
    t = _targets(target, x.shape[0])
    grads = []
    for eps in noise:
        xi = (x + eps).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(score(model(xi), t), xi)
        grads.append(g)
    return torch.stack(grads).mean(0)


def sg_loss_per_copy(model, x, target, noise):
    return _sg_per_copy(model, x, target, noise, F.cross_entropy).abs()          # mean over the N rows of a copy


def sg_loss_summed(model, x, target, noise):
    return _sg_per_copy(model, x, target, noise, lambda out, t: F.cross_entropy(out, t, reduction="sum")).abs()


def sg_target_columns(model, x, target, noise):
    return _sg_per_copy(model, x, target, noise, lambda out, t: out[:, t].sum()).abs()   # an (N, N) block


def sg_all_logits(model, x, target, noise):
    return _sg_per_copy(model, x, target, noise, lambda out, t: out.sum()).abs()


def sg_numpy(model, x, target, noise):
    return smoothgrad_abs_after(model, x, target, noise).numpy()                 # right values, a NumPy array


def sg_float32(model, x, target, noise):
    return smoothgrad_abs_after(model.float(), x.float(), target, noise.float())


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
    Mistake("gradient of the loss, per copy", sg_loss_per_copy,
            "that is the gradient of the cross-entropy LOSS, taken copy by copy (F.cross_entropy(model(x + "
            "noise[s]), t), a mean over the N rows): SmoothGrad averages the gradient of the class LOGIT f_t "
            "(pick column target with gather, sum over the batch, differentiate)"),
    Mistake("gradient of the summed loss", sg_loss_summed,
            "that is the gradient of the cross-entropy LOSS (reduction='sum'): SmoothGrad averages the gradient "
            "of the class LOGIT f_t (pick column target with gather, sum over the batch, differentiate)"),
    Mistake("out[:, target] with per-row targets", sg_target_columns,
            "out[:, target] with an (N,) target picks N columns for EVERY row (an (N, N) block), so each row's "
            "gradient adds up the logits of all the targets: pick one logit per row, out.gather(1, t[:, None]) "
            "or out[torch.arange(N), t]"),
    Mistake("all logits (no target)", sg_all_logits,
            "that is the gradient of the SUM of all K logits (out.sum()): pick each row's target logit first, "
            "out.gather(1, t[:, None]).sum()"),
    Mistake("NumPy array returned", sg_numpy,
            "the values are right, but smoothgrad returned a NumPy array: return the map as a torch tensor of x's "
            "shape (no .numpy() at the end)"),
    Mistake("float32", sg_float32,
            "the computation ran in float32: the model and x are float64, keep them so (no .float(), no "
            "model.float(), no dtype=torch.float32, no torch.zeros(...) accumulator without dtype=x.dtype); "
            "float32 round-off (about 1e-7) is far above the check's tolerance"),
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
                reference=(smoothgrad_abs_after, xt.smoothgrad),
                forbid=(xn.smoothgrad, xt.logit_gradient, xt.saliency), hints=[
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
                raw = _torch_call(fn, sg_case(case), "smoothgrad", what, SMOOTHGRAD_MISTAKES, guarded=("x", "noise"))
            except CheckFailed as fail:
                _translate_batch_error(fail, what)
                raise
            got = _one_array(raw, "smoothgrad", what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, SMOOTHGRAD_MISTAKES, apply=lambda row: _np(row(*sg_case(case))),
                     suffix=f"({what})")
            _kind_of_result(raw, "smoothgrad", what, SMOOTHGRAD_MISTAKES, np.ndarray, "NumPy array returned",
                            "the map")
            _float64_work(raw, got, expected, lambda: _np(smoothgrad_abs_after(*_float32_copy(sg_case(case)))),
                          SMOOTHGRAD_MISTAKES, what, rtol=1e-7, atol=1e-10)
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


def ig_times_x(grad_fn, x, baseline, steps):
    a, w = xn.ig_rule("gausslegendre", steps)
    _, _, avg = _ig_with(grad_fn, x, baseline, a, w)                               # the path from the baseline ...
    return x * avg                                                                 # ... but times x


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
    Mistake("multiplied by x, not x - baseline", ig_times_x,
            "the path is right, but the average gradient is multiplied by x: IG multiplies it by x - baseline (the "
            "path's length in each feature; the two agree only for a zero baseline)"),
)


def _points(points, d):
    """The points given to a check's grad_fn, which takes one (M, D) array as the exercise says (a model-backed
    grad_fn would not take (S, N, D) either)."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != d:
        raise ValueError(f"grad_fn takes the points as one (M, D) array, D = {d}, and got shape {p.shape}: stack "
                         f"the path's points with .reshape(-1, {d}) and reshape the gradients back")
    return p


def _quadratic(d, seed):
    """f(x) = x Q x / 2 + b . x per row, and its gradient x Q + b (linear along any straight path)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    q, b = (a + a.T) / 2, rng.standard_normal(d)

    def f(points):
        return 0.5 * np.einsum("nd,de,ne->n", points, q, points) + points @ b

    def grad_fn(points):
        p = _points(points, d)
        return p @ q + b
    return f, grad_fn


def _mlp_logit(target):
    params = _mlp_params()

    def f(points):
        return xn.mlp_logits(params, points)[:, target]

    def grad_fn(points):
        return xn.input_gradient(params, _points(points, 64), target)
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
            raw = call(fn, *ig_case(case))
            got = _one_array(raw, "integrated_gradients", what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, IG_MISTAKES, apply=lambda row: row(*ig_case(case)), suffix=f"({what})")
            _kind_of_result(raw, "integrated_gradients", what, IG_MISTAKES, torch.Tensor, "torch tensor returned",
                            "the attributions")
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
                report.append("below 1e-12" if rel < 1e-12 else f"{rel:.2g}" if rel < 1e-6 else f"{rel:.2%}")
            expect_close(got, expected, f"the attributions ({what})", rtol=1e-7, atol=1e-10)
    return ("completeness: the attributions add up to f(x) - f(baseline) within a relative error of "
            f"{report[0]} (quadratic f), {report[1]} (digits MLP, 16 steps) and {report[2]} (50 steps: a ReLU "
            "net's gradient jumps along the path, which no rule integrates exactly), and they equal the reference")


# --------------------------------------------------------------------------- 4. occlusion (NumPy)

def _windows(side, patch, stride, last=True):
    return range(0, side - patch + (1 if last else 0), stride)


def _occlusion_parts(model_fn, image, target, patch, corners, baseline):
    """The drops of every window (top-left corners ``corners`` x ``corners``), their sum and count per pixel."""
    side = image.shape[0]
    windows = [(r, c) for r in corners for c in corners]
    batch = np.repeat(image[None], len(windows), axis=0)
    for j, (r, c) in enumerate(windows):
        batch[j, r:r + patch, c:c + patch] = baseline
    base = model_fn(image[None])[0, target]
    drops = base - model_fn(batch)[:, target]
    total, count = np.zeros((side, side)), np.zeros((side, side))
    for drop, (r, c) in zip(drops, windows):
        total[r:r + patch, c:c + patch] += drop
        count[r:r + patch, c:c + patch] += 1
    return total, count


def _mean_where_covered(total, count):
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def oc_sum_not_mean(model_fn, image, target, patch, stride, baseline):
    total, _ = _occlusion_parts(model_fn, image, target, patch, _windows(len(image), patch, stride), baseline)
    return total


def oc_sign_flipped(model_fn, image, target, patch, stride, baseline):
    total, count = _occlusion_parts(model_fn, image, target, patch, _windows(len(image), patch, stride), baseline)
    return -_mean_where_covered(total, count)                        # f(occluded) - f(x)


def oc_last_window_missed(model_fn, image, target, patch, stride, baseline):
    corners = _windows(len(image), patch, stride, last=False)       # range(0, side - patch, stride)
    return _mean_where_covered(*_occlusion_parts(model_fn, image, target, patch, corners, baseline))


def oc_stride_ignored(model_fn, image, target, patch, stride, baseline):
    corners = _windows(len(image), patch, 1)
    return _mean_where_covered(*_occlusion_parts(model_fn, image, target, patch, corners, baseline))


def oc_transposed(model_fn, image, target, patch, stride, baseline):
    corners = _windows(len(image), patch, stride)
    return _mean_where_covered(*_occlusion_parts(model_fn, image, target, patch, corners, baseline)).T


def oc_nan_uncovered(model_fn, image, target, patch, stride, baseline):
    total, count = _occlusion_parts(model_fn, image, target, patch, _windows(len(image), patch, stride), baseline)
    with np.errstate(all="ignore"):
        return total / count                                           # 0 / 0 where no window covers


def oc_zero_baseline(model_fn, image, target, patch, stride, baseline):
    corners = _windows(len(image), patch, stride)
    return _mean_where_covered(*_occlusion_parts(model_fn, image, target, patch, corners, 0.0))


def oc_tensor(model_fn, image, target, patch, stride, baseline):
    return torch.as_tensor(occlusion_map(model_fn, image, target, patch, stride, baseline))   # a torch tensor


OCCLUSION_MISTAKES = (
    Mistake("sum instead of mean", oc_sum_not_mean,
            "the drops are summed over the windows that cover a pixel: Captum's convention (and the lesson's) is "
            "their MEAN, sum / count, so that a pixel in the middle does not get more credit just for being "
            "covered by more windows"),
    Mistake("sign flipped", oc_sign_flipped,
            "the sign is flipped: the attribution is the DROP f(x) - f(occluded), positive where hiding the pixels "
            "lowers the target's logit"),
    Mistake("last window missed", oc_last_window_missed,
            "the last window position is missing: a window fits at every top-left corner 0, stride, 2 stride, ... "
            "up to and including side - patch, i.e. range(0, side - patch + 1, stride)"),
    Mistake("stride ignored", oc_stride_ignored,
            "the windows move by 1 pixel whatever the stride: their top-left corners are 0, stride, 2 stride, ..."),
    Mistake("rows and columns swapped", oc_transposed,
            "the map is transposed (rows and columns swapped): the window at corner (r, c) covers "
            "image[r:r + patch, c:c + patch], and its drop goes to the same pixels of the map"),
    Mistake("uncovered pixels NaN", oc_nan_uncovered,
            "pixels that no window covers are NaN (0 / 0): when the stride skips pixels, give them 0 "
            "(np.divide(total, count, out=np.zeros_like(total), where=count > 0))"),
    Mistake("baseline ignored", oc_zero_baseline,
            "the occluded pixels were set to 0, not to the given `baseline` value"),
    Mistake("torch tensor returned", oc_tensor,
            "the values are right, but occlusion returned a torch tensor: this is a NumPy exercise, and every "
            "NumPy function returns a float64 NumPy array (np.zeros, np.divide, ...; no torch.as_tensor)"),
)


def _linear_model(side, k, seed):
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal((side * side, k)), rng.standard_normal(k)

    def model_fn(images):
        """Logits (M, K) of a batch of images (M, side, side) (or of one image (side, side): (1, K))."""
        return np.asarray(images, dtype=np.float64).reshape(-1, side * side) @ w + b
    return model_fn


def _mlp_images():
    params = _mlp_params()

    def model_fn(images):
        """Logits (M, 10) of a batch of digits (M, 8, 8) (or of one digit (8, 8): (1, 10))."""
        return xn.mlp_logits(params, np.asarray(images, dtype=np.float64).reshape(-1, 64))
    return model_fn


# (model, side, patch, stride, baseline, seed)
OC_CASES = [("linear", 4, 2, 1, 0.5, 931), ("linear", 8, 2, 3, 0.0, 932), ("digits", 8, 3, 2, 0.25, 933)]


def oc_case(case: int):
    """Case ``case`` (1 to 3) of the occlusion check: ``model_fn, image, target, patch, stride, baseline``."""
    kind, side, patch, stride, baseline, seed = OC_CASES[case - 1]
    if kind == "linear":
        model_fn = _linear_model(side, 3, seed)
        image = np.random.default_rng(seed).uniform(0, 1, (side, side))
        return model_fn, image, 1, patch, stride, baseline
    x, y = _batch(1, offset=90)
    return _mlp_images(), x[0].reshape(8, 8), int(y[0]), patch, stride, baseline


def _oc_what(case):
    kind, side, patch, stride, baseline, _ = OC_CASES[case - 1]
    model = "a linear model" if kind == "linear" else "the digits MLP"
    return f"{model}, {side} x {side} image, patch {patch}, stride {stride}, baseline {baseline}"


@check.exercise(points=3, mistakes=OCCLUSION_MISTAKES, reference=(occlusion_map, xn.occlusion, xt.occlusion),
                hints=[
    "Occlusion asks the model itself: hide a patch x patch square (set it to the baseline value), and see how "
    "much the target's logit drops. Every pixel of the square gets that drop; a pixel covered by several "
    "window positions gets the MEAN of their drops, one no window covers gets 0.",
    "Loop over the top-left corners r, c in range(0, side - patch + 1, stride) (both directions); for each, a "
    "copy of the image with the square set to baseline; score it (or all copies in one batch) with model_fn; "
    "add the drop into a (side, side) sum and 1 into a (side, side) count over the square; divide at the end.",
    "f0 = model_fn(image[None])[0, target]; for each corner: occluded = image.copy(); occluded[r:r + patch, "
    "c:c + patch] = baseline; drop = f0 - model_fn(occluded[None])[0, target]; total[...] += drop; "
    "count[...] += 1; then np.divide(total, count, out=np.zeros_like(total), where=count > 0).",
])
def occlusion(fn):
    """Occlusion of one image: the mean drop of the target's logit over the windows covering each pixel (NumPy)."""
    for case in range(1, len(OC_CASES) + 1):
        what = _oc_what(case)
        line = (f"from dlcourse.xai.checks import oc_case; model_fn, image, target, patch, stride, baseline = "
                f"oc_case({case}); occlusion(model_fn, image, target, patch, stride, baseline)")
        with trying("occlusion", label=what, call_text=line) as tried:
            expected = occlusion_map(*oc_case(case))
            raw = call(fn, *oc_case(case))
            got = _one_array(raw, "occlusion", what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, OCCLUSION_MISTAKES, apply=lambda row: row(*oc_case(case)), suffix=f"({what})")
            _kind_of_result(raw, "occlusion", what, OCCLUSION_MISTAKES, torch.Tensor, "torch tensor returned",
                            "the map")
            if np.shape(got) == (expected.size,):
                raise CheckFailed(f"the map is flat, {np.shape(got)}: return it as the image, (side, side) "
                                  f"({what})")
            expect_float64(["the map"], [got], what)
            expect_close(got, expected, f"the occlusion map ({what})", rtol=1e-9, atol=1e-12)
    return ("the mean drop of the logit per pixel equals the reference on 3 images (strides 1, 2, 3; a stride that "
            "skips pixels; baselines 0.5, 0, 0.25)")


# --------------------------------------------------------------------------- 5. Grad-CAM (PyTorch, hooks)

def _activations_and_grads(model, layer, x, target, kind="logit"):
    seen = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.__setitem__("A", output))
    try:
        out = model(x)
    finally:
        handle.remove()
    t = _targets(target, x.shape[0])
    if kind == "logit":
        score = out.gather(1, t[:, None]).sum()
    elif kind == "softmax":
        score = out.softmax(1).gather(1, t[:, None]).sum()
    else:
        score = F.cross_entropy(out, t)
    (grad,) = torch.autograd.grad(score, seen["A"])
    return seen["A"].detach(), grad


def _upsample(cam, x, mode="bilinear", align_corners=False):
    corners = {"align_corners": align_corners} if mode == "bilinear" else {}
    return F.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode=mode, **corners)


def gc_no_relu(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return _upsample((g.mean(dim=(2, 3), keepdim=True) * a).sum(1), x)


def gc_per_pixel_weights(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return _upsample(F.relu((g * a).sum(1)), x)                                # no spatial mean of the gradient


def gc_spatial_sum(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return _upsample(F.relu((g.sum(dim=(2, 3), keepdim=True) * a).sum(1)), x)  # h * w times too large


def gc_nearest(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return _upsample(F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)), x, mode="nearest")


def gc_no_upsampling(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))[:, None]      # (N, 1, h, w)


def gc_loss_gradient(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target, "loss")
    return _upsample(F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)), x)


def gc_softmax_gradient(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target, "softmax")
    return _upsample(F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)), x)


def gc_sign_flipped(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return _upsample(F.relu(-(g.mean(dim=(2, 3), keepdim=True) * a).sum(1)), x)


def gc_align_corners(model, layer, x, target):
    a, g = _activations_and_grads(model, layer, x, target)
    return _upsample(F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1)), x, align_corners=True)


def gc_hook_kept(model, layer, x, target):
    layer.register_forward_hook(lambda module, inputs, output: None)         # registered, its handle dropped
    return grad_cam_hooks(model, layer, x, target)


def gc_float32(model, layer, x, target):
    return grad_cam_hooks(model.float(), layer, x.float(), target)          # model.float() converts layer too


GRAD_CAM_MISTAKES = (
    Mistake("no ReLU", gc_no_relu,
            "the map has negative values: Grad-CAM keeps only the evidence FOR the class, ReLU(sum_k alpha_k A_k); "
            "apply F.relu before upsampling"),
    Mistake("per-pixel weights", gc_per_pixel_weights,
            "the weights are per pixel (gradient * activation summed over the channels): Grad-CAM weighs each "
            "channel k by ONE number, alpha_k = the spatial MEAN of dF/dA_k over (h, w), then sums alpha_k A_k"),
    Mistake("spatial sum, not mean", gc_spatial_sum,
            "the map is exactly h * w times too large: alpha_k is the spatial MEAN of the gradient "
            "(.mean(dim=(2, 3))), not its sum"),
    Mistake("nearest upsampling", gc_nearest,
            "upsampled by 'nearest' (blocks): the exercise asks for F.interpolate(..., mode='bilinear', "
            "align_corners=False)"),
    Mistake("no upsampling", gc_no_upsampling,
            "the map is still the layer's size (h, w): make it (N, 1, h, w) (the channel sum with keepdim=True, "
            "or cam.unsqueeze(1) from (N, h, w)), then upsample it to the input's (H, W) with F.interpolate(cam, "
            "size=x.shape[-2:], mode='bilinear', align_corners=False), (N, 1, H, W)"),
    Mistake("align_corners=True", gc_align_corners,
            "upsampled with align_corners=True (which stretches the corner pixels' centres onto the image's "
            "corners): the exercise asks for F.interpolate(..., mode='bilinear', align_corners=False)"),
    Mistake("hook never removed", gc_hook_kept,
            "the values are right, but a hook is still registered after grad_cam returned: keep the handle, "
            "handle = layer.register_forward_hook(...), and call handle.remove() once the model has run (in a "
            "finally: block), or every call adds one more hook to the notebook's shared model"),
    Mistake("float32", gc_float32,
            "the computation ran in float32: the model and x are float64, keep them so (no .float(), no "
            "model.float(), no dtype=torch.float32); float32 round-off (about 1e-7) is far above the check's "
            "tolerance"),
    Mistake("gradient of the loss", gc_loss_gradient,
            "the weights come from the gradient of the cross-entropy LOSS: Grad-CAM uses the gradient of the "
            "class LOGIT F_t with respect to the layer's output"),
    Mistake("gradient of the softmax", gc_softmax_gradient,
            "the weights come from the gradient of the softmax PROBABILITY: Grad-CAM uses the gradient of the "
            "class LOGIT F_t (the probability saturates and mixes in the other classes)"),
    Mistake("sign flipped", gc_sign_flipped,
            "the sign is flipped: the map is ReLU(+sum_k alpha_k A_k), the evidence FOR the class (check the "
            "sign of the gradient and of the weights)"),
)

# (model, N, target kind, seed)
GC_CASES = [("small", 2, "int", 941), ("cnn", 4, "array", 942)]


def gc_case(case: int):
    """Case ``case`` (1 or 2) of the grad_cam check: ``model, layer, x, target`` (float64, a fresh model copy;
    case 1 a seeded random SmallCNN on 12 x 12 images, case 2 the digits CNN)."""
    name, n, kind, seed = GC_CASES[case - 1]
    model = _fresh(name)
    if name == "small":
        x = torch.rand((n, 1, 12, 12), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return model, model.conv2, x, 2
    xs, y = _batch(n, offset=100)
    return model, model.conv2, _as_input("cnn", xs), torch.as_tensor((y + np.arange(n) % 2) % 10)


def _gc_what(case):
    name, n, _, _ = GC_CASES[case - 1]
    return ("a random SmallCNN on 12 x 12 images (conv2: 6 x 6)" if name == "small"
            else "the digits CNN (conv2: 4 x 4)") + f", N = {n}"


@check.exercise(points=3, mistakes=GRAD_CAM_MISTAKES, seconds=60,
                reference=(grad_cam_hooks, xt.grad_cam), forbid=(xt.layer_activations_and_grads,), hints=[
    "Grad-CAM looks inside the network: the feature maps A (N, C, h, w) that `layer` outputs, and the gradient "
    "of the class LOGIT with respect to them. Each channel gets one weight, the spatial mean of its gradient; "
    "the map is the ReLU of the weighted sum of the channels, upsampled to the input's size.",
    "Register a forward hook on `layer` that keeps its output; run the model; torch.autograd.grad of the "
    "picked logits (gather, sum) with respect to the kept output; remove the hook. Then alpha = grad.mean over "
    "(h, w) with keepdim, cam = F.relu((alpha * A).sum over the channels), and F.interpolate to x's (H, W).",
    "handle = layer.register_forward_hook(lambda m, i, out: saved.append(out)); logits = model(x); "
    "handle.remove(); (dA,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), saved[0]); "
    "alpha = dA.mean(dim=(2, 3), keepdim=True); then the ReLU of the channel sum, and "
    "F.interpolate(cam[:, None], size=x.shape[-2:], mode='bilinear', align_corners=False).",
])
def grad_cam(fn):
    """Grad-CAM with hooks on a given layer, upsampled bilinearly (PyTorch)."""
    for case in range(1, len(GC_CASES) + 1):
        what = _gc_what(case)
        line = (f"from dlcourse.xai.checks import gc_case; model, layer, x, target = gc_case({case}); "
                "grad_cam(model, layer, x, target)")
        with trying("grad_cam", label=what, call_text=line) as tried:
            expected = _np(grad_cam_hooks(*gc_case(case)))
            args = gc_case(case)
            hooks = _hooks(args[0])
            raw = _torch_call(fn, args, "grad_cam", what, GRAD_CAM_MISTAKES)
            left = _hooks(args[0]) - hooks
            if left > 0:
                fail_with(GRAD_CAM_MISTAKES, "hook never removed",
                          f"({what}; {left} more hook{'s' if left > 1 else ''} than before the call)")
            got = _one_array(raw, "grad_cam", what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, GRAD_CAM_MISTAKES, apply=lambda row: _np(row(*gc_case(case))),
                     suffix=f"({what})")
            _kind_of_result(raw, "grad_cam", what, GRAD_CAM_MISTAKES, np.ndarray, "NumPy array returned", "the map")
            _float64_work(raw, got, expected, lambda: _np(grad_cam_hooks(*_float32_copy(gc_case(case)))),
                          GRAD_CAM_MISTAKES, what, rtol=1e-7, atol=1e-10)
            small = _np(gc_no_upsampling(*gc_case(case)))
            if np.shape(got) in (small.shape, small.shape[:1] + small.shape[2:]) and _close(np.reshape(got, -1),
                                                                                           small.reshape(-1)):
                fail_with(GRAD_CAM_MISTAKES, "no upsampling", f"({what})")
            expect_close(got, expected, f"the Grad-CAM map ({what})", rtol=1e-7, atol=1e-10)
    return ("ReLU(sum_k alpha_k A_k), bilinearly upsampled, equals the reference on a random CNN (12 x 12 inputs) "
            "and on the digits CNN's conv2")


# --------------------------------------------------------------------------- 6. FGSM (PyTorch)

def _loss_grad(model, x, y):
    x = torch.as_tensor(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), torch.as_tensor(y)), x)
    return x.detach(), g


def fg_raw_gradient(model, x, y, eps):
    x, g = _loss_grad(model, x, y)
    return (x + eps * g).clamp(0, 1)                                          # no sign


def fg_descends(model, x, y, eps):
    x, g = _loss_grad(model, x, y)
    return (x - eps * g.sign()).clamp(0, 1)


def fg_no_clip(model, x, y, eps):
    x, g = _loss_grad(model, x, y)
    return x + eps * g.sign()


def fg_logit_gradient(model, x, y, eps):
    x = torch.as_tensor(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, torch.as_tensor(y)[:, None]).sum(), x)   # the true logit
    return (x.detach() + eps * g.sign()).clamp(0, 1)


def fg_x_returned(model, x, y, eps):
    x_in, g = _loss_grad(model, x, y)
    x_adv = (x_in + eps * g.sign()).clamp(0, 1)                               # computed, then forgotten
    return x_in


def fg_predicted_labels(model, x, y, eps):
    with torch.no_grad():
        pred = model(torch.as_tensor(x)).argmax(1)
    x, g = _loss_grad(model, x, pred)                                         # the model's guess as the label
    return (x + eps * g.sign()).clamp(0, 1)


def fg_numpy(model, x, y, eps):
    return fgsm_attack(model, x, y, eps).numpy()                              # right values, a NumPy array


def fg_not_detached(model, x, y, eps):
    xr = torch.as_tensor(x).detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), torch.as_tensor(y)), xr)
    return (xr + eps * g.sign()).clamp(0, 1)                                  # built from the copy: in its graph


def fg_x_requires_grad(model, x, y, eps):
    x.requires_grad_(True)                                                    # the caller's tensor changed
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), torch.as_tensor(y)), x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def fg_float32(model, x, y, eps):
    return fgsm_attack(model.float(), x.float(), y, eps)


FGSM_MISTAKES = (
    Mistake("raw gradient, no sign", fg_raw_gradient,
            "the step uses the raw gradient, eps * grad: FGSM moves every pixel by exactly eps in the direction "
            "that raises the loss, eps * grad.sign() (the largest L-infinity step of size eps)"),
    Mistake("descends the loss", fg_descends,
            "the step goes DOWN the loss (x - eps * sign): the attack ascends it, x + eps * sign(dL/dx), so that "
            "the true class becomes less likely"),
    Mistake("no clip", fg_no_clip,
            "pixels leave the valid range [0, 1]: clip the result, (x + eps * sign).clamp(0, 1)"),
    Mistake("gradient of the logit", fg_logit_gradient,
            "that is the gradient of the true class's LOGIT, whose ascent makes the model MORE sure: FGSM "
            "ascends the cross-entropy LOSS F.cross_entropy(model(x), y)"),
    Mistake("x returned unchanged", fg_x_returned,
            "the result is x itself: the perturbed tensor was computed but x was returned (or x_adv was made from "
            "a fresh copy that was then dropped); return x + eps * sign(dL/dx), clipped"),
    Mistake("predicted labels instead of y", fg_predicted_labels,
            "the loss uses the model's PREDICTED labels: the attack ascends the loss of the TRUE labels y (on a "
            "digit the model already gets wrong, the prediction pushes it back towards the right class)"),
    Mistake("NumPy array returned", fg_numpy,
            "the values are right, but fgsm returned a NumPy array: return x_adv as a detached torch tensor of "
            "x's shape (no .numpy() at the end)"),
    Mistake("not detached", fg_not_detached,
            "the values are right, but x_adv still carries the autograd graph (it requires grad): return a "
            "detached tensor, built from x.detach() (or call .detach() on the result), so that the caller can "
            "feed it to the model, .numpy() it or plot it"),
    Mistake("x made to require grad", fg_x_requires_grad,
            "the values are right, but the caller's x now requires grad (x.requires_grad_(True) changed the tensor "
            "you were given): leave x unchanged and differentiate a copy, xr = x.detach().clone()"
            ".requires_grad_(True)"),
    Mistake("float32", fg_float32,
            "the computation ran in float32: the model and x are float64, keep them so (no .float(), no "
            "model.float(), no dtype=torch.float32); float32 round-off (about 1e-8 here) is far above the "
            "check's tolerance"),
)

# (model, N, eps)
FGSM_CASES = [("mlp", 4, 0.1), ("cnn", 6, 0.2), ("mlp", 32, 0.05)]


def fgsm_case(case: int):
    """Case ``case`` (1 to 3) of the fgsm check: ``model, x, y, eps`` (float64, a fresh model copy; the first
    digit is one the model gets wrong)."""
    name, n, eps = FGSM_CASES[case - 1]
    x, y = _batch(n, model=name, offset=120)
    return _fresh(name), _as_input(name, x), torch.as_tensor(y), eps


def _attack_what(cases, case):
    name, n, eps = cases[case - 1][:3]
    return f"the digits {name.upper()}, N = {n}, eps = {eps}"


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.as_tensor(x)).argmax(1) == y).double().mean())


def _attack_output(fn, args, what, name, table):
    """Call an attack (the caller's x must stay as it was); its result; the classic type errors explained."""
    out = _torch_call(fn, args, name, what, table, guarded=("x", "start"))
    if out is None:
        raise CheckFailed(f"{name} returned None: did you forget a `return x_adv`? ({what})")
    if isinstance(out, (tuple, list)):
        raise CheckFailed(f"{name} returned a {type(out).__name__}: return x_adv alone, a tensor of x's shape "
                          f"({what})")
    return out


@check.exercise(points=2, mistakes=FGSM_MISTAKES, seconds=60, reference=(fgsm_attack, trust.fgsm, xn.fgsm),
                forbid=(trust.loss_gradient,), hints=[
    "FGSM takes ONE step of size eps up the cross-entropy LOSS of the true labels, in the L-infinity sense: "
    "every pixel moves by +eps or -eps, following the sign of the loss's gradient with respect to the input; "
    "then the pixels are kept in [0, 1].",
    "Make a copy of x that requires grad, compute F.cross_entropy(model(x_copy), y), get its gradient with "
    "respect to the copy (torch.autograd.grad or .backward()), step x + eps * sign, clamp to [0, 1], and "
    "return it detached.",
    "xr = x.detach().clone().requires_grad_(True); loss = F.cross_entropy(model(xr), y); "
    "(g,) = torch.autograd.grad(loss, xr); then the signed step of size eps from x, clamped to (0, 1).",
])
def fgsm(fn):
    """The fast gradient sign method: clip(x + eps * sign(dL/dx)) (PyTorch)."""
    drops = []
    for case in range(1, len(FGSM_CASES) + 1):
        what = _attack_what(FGSM_CASES, case)
        line = f"from dlcourse.xai.checks import fgsm_case; model, x, y, eps = fgsm_case({case}); fgsm(model, x, y, eps)"
        with trying("fgsm", label=what, call_text=line) as tried:
            expected = _np(fgsm_attack(*fgsm_case(case)))
            args = fgsm_case(case)
            out = _attack_output(fn, args, what, "fgsm", FGSM_MISTAKES)
            got = _np(out)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, FGSM_MISTAKES, apply=lambda row: _np(row(*fgsm_case(case))), suffix=f"({what})")
            _kind_of_result(out, "fgsm", what, FGSM_MISTAKES, np.ndarray, "NumPy array returned", "x_adv")
            _float64_work(out, got, expected, lambda: _np(fgsm_attack(*_float32_copy(fgsm_case(case)))),
                          FGSM_MISTAKES, what, rtol=1e-9, atol=1e-12)
            expect_close(got, expected, f"x_adv ({what})", rtol=1e-9, atol=1e-12)
            if isinstance(out, torch.Tensor) and (out.requires_grad or out.grad_fn is not None):
                fail_with(FGSM_MISTAKES, "not detached", f"({what})")
            model, x, y, _ = fgsm_case(case)
            drops.append((_accuracy(model, x, y), _accuracy(model, torch.as_tensor(got), y)))
    clean, adv = drops[-1]
    return (f"x + eps * sign(dL/dx), clipped, equals the reference on the MLP and the CNN; at eps = 0.05 the MLP's "
            f"accuracy on those 32 digits falls from {clean:.2f} to {adv:.2f}")


# --------------------------------------------------------------------------- 7. PGD with projection (PyTorch)

def _pgd(model, x, y, eps, alpha, steps, start, project="x", clip=True, sign=True, direction=1.0,
         use_start=True, once=False, detach=True, clip_start=True):
    x = torch.as_tensor(x).detach()
    y = torch.as_tensor(y)
    x_adv = x + torch.as_tensor(start) if use_start else x.clone()
    x_adv = x_adv.clamp(0, 1) if clip and clip_start else x_adv
    g0 = _loss_grad(model, x, y)[1] if once else None
    if not detach:
        x_adv = x_adv.detach().requires_grad_(True)
    for _ in range(steps):
        if once:
            g = g0
        elif detach:
            g = _loss_grad(model, x_adv, y)[1]
        else:
            (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        prev = x_adv
        x_adv = x_adv + direction * alpha * (g.sign() if sign else g)
        if project == "x":
            x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
        elif project == "previous":
            x_adv = torch.minimum(torch.maximum(x_adv, prev - eps), prev + eps)
        x_adv = x_adv.clamp(0, 1) if clip else x_adv
    return x_adv


def pgd_no_projection(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, project=None)


def pgd_projection_around_previous(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, project="previous")


def pgd_no_clip(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, clip=False)


def pgd_raw_gradient(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, sign=False)


def pgd_start_ignored(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, use_start=False)


def pgd_gradient_once(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, once=True)


def pgd_descends(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, direction=-1.0)


def pgd_not_detached(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, detach=False)


def pgd_step_eps(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, eps, steps, start)                          # every step of size eps


def pgd_start_not_clipped(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps, start, clip_start=False)


def pgd_one_step_short(model, x, y, eps, alpha, steps, start):
    return _pgd(model, x, y, eps, alpha, steps - 1, start)


def pgd_float32(model, x, y, eps, alpha, steps, start):
    return pgd_from_start(model.float(), x.float(), y, eps, alpha, steps, start.float())


PGD_MISTAKES = (
    Mistake("projection around the previous iterate", pgd_projection_around_previous,
            "the projection is around the PREVIOUS iterate (which only caps each step at eps): PGD projects onto "
            "the eps-ball around the ORIGINAL x after every step, clamp(x_adv, x - eps, x + eps)"),
    Mistake("no projection", pgd_no_projection,
            "x_adv leaves the eps-ball: |x_adv - x| grows past eps after a few steps; after every step project "
            "back onto the ball around the ORIGINAL x, torch.min(torch.max(x_adv, x - eps), x + eps)"),
    Mistake("no clip", pgd_no_clip,
            "pixels leave the valid range [0, 1]: after the projection, clamp x_adv (and the start x + start) to "
            "[0, 1]"),
    Mistake("raw gradient, no sign", pgd_raw_gradient,
            "the steps use the raw gradient, alpha * grad: each PGD step is an FGSM step, alpha * grad.sign()"),
    Mistake("start ignored", pgd_start_ignored,
            "the attack starts at x itself: start at the given point, x + start (clamped to [0, 1]), and project "
            "around x as usual"),
    Mistake("gradient computed once", pgd_gradient_once,
            "the gradient was computed once, at x, and reused: PGD takes a NEW loss gradient at the current "
            "x_adv in every step (that is what makes it stronger than FGSM)"),
    Mistake("descends the loss", pgd_descends,
            "the steps go DOWN the loss (x_adv - alpha * sign): the attack ascends it, x_adv + alpha * "
            "sign(dL/dx_adv)"),
    Mistake("not detached between steps", pgd_not_detached,
            "the values are right, but x_adv still carries the autograd graph of every step (it requires grad): "
            "detach between steps, x_adv = (the new iterate).detach(), so that each step differentiates the loss "
            "at the current point only and the graph does not grow with the steps; return a detached tensor"),
    Mistake("steps of size eps", pgd_step_eps,
            "every step has size eps: PGD's steps have size alpha, x_adv + alpha * sign(grad) (eps is the radius "
            "of the ball the projection keeps x_adv in, not the step)"),
    Mistake("start not clipped", pgd_start_not_clipped,
            "the start x + start was not clipped to [0, 1]: the first gradient is taken at pixels outside the "
            "valid range; start at x_adv = (x + start).clamp(0, 1)"),
    Mistake("one step short", pgd_one_step_short,
            "that is steps - 1 iterations: take exactly `steps` steps, for _ in range(steps) (the start x + start "
            "is not a step)"),
    Mistake("float32", pgd_float32,
            "the computation ran in float32: the model and x are float64, keep them so (no .float(), no "
            "model.float(), no dtype=torch.float32); in float32, x + eps rounds to slightly more than eps away "
            "from x, so x_adv seems to leave the ball"),
)

# (model, N, eps, alpha, steps, seed)
PGD_CASES = [("mlp", 4, 0.1, 0.15, 2, 951), ("mlp", 32, 0.1, 0.025, 10, 952), ("cnn", 8, 0.2, 0.05, 5, 953)]


def pgd_case(case: int):
    """Case ``case`` (1 to 3) of the pgd check: ``model, x, y, eps, alpha, steps, start`` (float64, a fresh model
    copy; ``start`` uniform in [-eps, eps])."""
    name, n, eps, alpha, steps, seed = PGD_CASES[case - 1]
    x, y = _batch(n, model=name, offset=160)
    xin = _as_input(name, x)
    start = eps * (2 * torch.rand(xin.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1)
    return _fresh(name), xin, torch.as_tensor(y), eps, alpha, steps, start


def _pgd_what(case):
    name, n, eps, alpha, steps, _ = PGD_CASES[case - 1]
    return f"the digits {name.upper()}, N = {n}, eps = {eps}, alpha = {alpha}, {steps} steps"


@check.exercise(points=4, mistakes=PGD_MISTAKES, seconds=60,
                reference=(pgd_from_start, trust.pgd, xn.pgd), forbid=(trust.loss_gradient, trust.fgsm), hints=[
    "PGD repeats small FGSM steps, each up the loss at the CURRENT point, and after every step pulls the "
    "point back into the set it may move in: the L-infinity ball of radius eps around the ORIGINAL x (the "
    "projection), and the valid pixel range [0, 1] (the clip). It starts at x + start, not at x.",
    "x_adv = (x + start).clamp(0, 1); then `steps` times: a fresh leaf from x_adv that requires grad, the "
    "cross-entropy loss and its gradient, x_adv + alpha * sign, projection onto [x - eps, x + eps] elementwise "
    "(torch.min / torch.max, or clamp with tensor bounds), clamp to [0, 1], and detach before the next step.",
    "for _ in range(steps): xr = x_adv.detach().requires_grad_(True); (g,) = torch.autograd.grad("
    "F.cross_entropy(model(xr), y), xr); x_adv = xr.detach() + alpha * g.sign(); x_adv = torch.min(torch.max("
    "x_adv, x - eps), x + eps); then the clamp to [0, 1].",
])
def pgd(fn):
    """PGD (L-infinity) from a given start, with projection onto x's eps-ball and the clip (PyTorch)."""
    report = []
    for case in range(1, len(PGD_CASES) + 1):
        what = _pgd_what(case)
        line = (f"from dlcourse.xai.checks import pgd_case; model, x, y, eps, alpha, steps, start = "
                f"pgd_case({case}); pgd(model, x, y, eps, alpha, steps, start)")
        with trying("pgd", label=what, call_text=line) as tried:
            expected = _np(pgd_from_start(*pgd_case(case)))
            try:
                out = _attack_output(fn, pgd_case(case), what, "pgd", PGD_MISTAKES)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                if isinstance(err, RuntimeError) and "leaf" in str(err):
                    fail_with(PGD_MISTAKES, "not detached between steps", f"({what}; torch said: {err})")
                raise
            got = _np(out)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, PGD_MISTAKES, apply=lambda row: _np(row(*pgd_case(case))), suffix=f"({what})")
            _kind_of_result(out, "pgd", what, PGD_MISTAKES, np.ndarray, "NumPy array returned", "x_adv")
            _float64_work(out, got, expected, lambda: _np(pgd_from_start(*_float32_copy(pgd_case(case)))),
                          PGD_MISTAKES, what, rtol=1e-9, atol=1e-12)
            model, x, y, eps, _, _, _ = pgd_case(case)
            if np.shape(got) == tuple(x.shape) and np.all(np.isfinite(got)):
                excess = float(np.max(np.abs(got - x.numpy()))) - eps
                if excess > 1e-9:
                    raise CheckFailed(f"x_adv leaves the eps-ball: max |x_adv - x| = {eps + excess:.4g} > eps = "
                                      f"{eps} ({what})", mistake="outside the ball")
                if got.min() < -1e-12 or got.max() > 1 + 1e-12:
                    raise CheckFailed(f"x_adv leaves [0, 1]: its pixels range over [{got.min():.4g}, "
                                      f"{got.max():.4g}] ({what})", mistake="outside [0, 1]")
                clean, adv = _accuracy(model, x, y), _accuracy(model, torch.as_tensor(got), y)
                if adv >= clean and _accuracy(model, torch.as_tensor(expected), y) < clean:
                    raise CheckFailed(f"the attack does not work: the model's accuracy on these digits is {clean:.2f} "
                                      f"before and {adv:.2f} after ({what})", mistake="attack fails")
                report.append((clean, adv))
            expect_close(got, expected, f"x_adv ({what})", rtol=1e-9, atol=1e-12)
            if isinstance(out, torch.Tensor) and out.requires_grad:
                fail_with(PGD_MISTAKES, "not detached between steps", f"({what})")
    (c1, a1), (c2, a2) = report[1], report[2]
    return (f"projected, clipped, signed steps from x + start equal the reference; the attack works: the MLP's "
            f"accuracy on 32 digits {c1:.2f} -> {a1:.2f} (eps 0.1), the CNN's on 8 digits {c2:.2f} -> {a2:.2f} "
            "(eps 0.2)")


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
                      "and pools once before conv2"),
              Mistake("with the channels", (64, 4, 4),
                      "(64, 4, 4) is conv2's whole output for one image, (C, h, w): the map sums the channels away "
                      "(sum_k alpha_k A_k), so give its size (h, w) alone"),
              Mistake("with conv2's input channels", (32, 4, 4),
                      "32 is the number of channels conv2 takes in (and it outputs 64): the map sums the channels "
                      "away (sum_k alpha_k A_k), so give its size (h, w) alone")])

check.question(
    "q_parity_gap", answer=0.15, rtol=1e-3,
    explanation="demographic parity compares the rates of positive predictions: |P(pred = 1 | A) - P(pred = 1 | "
                "B)| = |0.60 - 0.45| = 0.15 (0 means parity; it ignores the true labels, which equalized odds "
                "takes into account)",
    mistakes=[Mistake("ratio", 0.75, "0.45 / 0.60 = 0.75 is the ratio (the 'four-fifths rule'): the gap is the "
                                     "DIFFERENCE of the two rates"),
              Mistake("sum", 1.05, "the gap is the difference of the two positive rates, not their sum"),
              Mistake("negative", -0.15, "the gap is an absolute difference, >= 0"),
              Mistake("in percent", 15.0, "15 is the gap in percent: give it as a fraction of 1, like the rates "
                                          "0.60 and 0.45 themselves")])
