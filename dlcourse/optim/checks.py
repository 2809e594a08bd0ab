"""Graded checks for the exercises of chapter 03 (``solutions/03_gradient_descent.py``).

Each check runs the learner's function on several cases against the reference
in :mod:`dlcourse.optim.numpy_impl`.  Optimizer steps are checked step by step
along a 20-step run in which the learner's own returned state is fed back in
(carrying the state is part of the job); at the first step that differs, the
check recomputes the classic wrong versions from the same inputs and, when one
of them matches, says which mistake it was.
"""
from __future__ import annotations

import random
from typing import Callable, NamedTuple

import numpy as np

from dlcourse.grading import CheckFailed, Checker, call, diagnose, expect, expect_close, expect_tuple
from dlcourse.grading import matches as _close
from dlcourse.optim import numpy_impl as ref

check = Checker("03_gradient_descent")

__all__ = ["check"]


# --------------------------------------------------------------------------- helpers

def _quadratic(dim: int, seed: int):
    """A gradient ``g(w, k) = A w + noise_k`` of a noisy convex quadratic (like a mini-batch gradient)."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 5.0, dim)
    noise = rng.standard_normal((40, dim))

    def grad(w, k):
        return scales * w + 0.3 * noise[k]
    return grad


class _StepCase(NamedTuple):
    what: str              # how the case is described in messages
    w: np.ndarray          # the starting parameter
    state: tuple           # the starting state
    grad: Callable         # (w, k) -> dw
    hyper: list            # keyword arguments for each step (lr may change)
    fields: tuple = None   # the state fields to compare (None: the check's default)


def _as_state(got, cls, fn_name: str):
    """The learner's returned state as ``cls`` (a NamedTuple), or a precise complaint."""
    if isinstance(got, cls):
        return got
    fields = cls._fields
    if isinstance(got, tuple) and len(got) == len(fields):
        return cls(*got)
    if all(hasattr(got, f) for f in fields):
        return cls(*(getattr(got, f) for f in fields))
    example = f"{cls.__name__}({', '.join(fields)})"
    raise CheckFailed(f"the state {fn_name} returned is a {type(got).__name__}; "
                      f"return a new {example}")


def _run_steps(fn, fn_name: str, cls, cases, reference, compare_fields, wrongs, steps=20):
    """Run ``fn`` along each case, feeding back its own state; diagnose the first wrong step.

    ``reference(w, dw, state, **hyper) -> (w, state)``; ``wrongs`` is a list of
    ``(wrong_step, message)`` with ``wrong_step`` of the same signature; the
    message is shown with the step where the mistake was first seen.
    """
    for case in cases:
        w, state = case.w, case.state
        for k in range(steps):
            dw = case.grad(w, k)
            hyper = case.hyper[k]
            got_w, got_state = expect_tuple(call(fn, w, dw, state, **hyper), 2, "(w, state)", fn_name,
                                            types=(tuple,))
            got_state = _as_state(got_state, cls, fn_name)
            exp_w, exp_state = reference(w, dw, state, **hyper)
            fields = compare_fields if case.fields is None else case.fields
            if not _same_step(got_w, got_state, exp_w, exp_state, fields):
                where = f"step {k + 1} of {case.what}"
                diagnose((got_w, got_state), (exp_w, exp_state),
                         [(lambda wrong=wrong: wrong(w, dw, state, **hyper), f"{message} (first seen at {where})")
                          for wrong, message in wrongs],
                         same=lambda a, b: _same_step(*a, *b, fields))
                expect_close(got_w, exp_w, f"w after {where}")
                for field in fields:
                    expect_close(getattr(got_state, field), getattr(exp_state, field),
                                 f"state.{field} after {where}")
            w, state = np.asarray(got_w, dtype=np.float64), got_state
    return len(cases)


def _same_step(got_w, got_state, exp_w, exp_state, fields) -> bool:
    return _close(got_w, exp_w) and all(
        _close(getattr(got_state, f), getattr(exp_state, f)) for f in fields)


def _schedule_lrs(base: float, steps: int = 20) -> list[float]:
    """A learning rate that changes every step (a cosine decay), to tell forms apart."""
    return [ref.cosine_lr(k, base, steps) + 0.1 * base for k in range(steps)]


# --------------------------------------------------------------------------- 1. gradient descent

@check.exercise(points=2, hints=[
    "Keep a list of the points visited. It starts with the start point itself, and every update "
    "appends the new point, so `steps` updates give steps + 1 rows.",
    "First make your own copy, w = np.array(start, dtype=float), so that start is never changed. "
    "One update is w = w - lr * grad(w) (a new array, not w -= ..., which would also change the "
    "rows already stored in the list).",
    "w = np.array(start, dtype=float); path = [w]; then `steps` times: w = w - lr * grad(w); "
    "path.append(w); finally return np.stack(path).",
])
def gd_minimize(fn):
    """Plain gradient descent on a function given by its gradient, returning the path (steps + 1, D)."""
    scales2 = np.array([1.0, 10.0])
    scales3 = np.array([0.5, 2.0, 4.0])
    cases = [
        ("an ill-conditioned 2-D bowl", lambda w: scales2 * w, np.array([-4.0, 1.5]), 0.05, 30),
        ("a 3-D quadratic", lambda w: scales3 * (w - 1.0), np.array([2.0, -1.0, 0.5]), 0.2, 12),
        ("the same quadratic with steps = 0", lambda w: scales3 * (w - 1.0), np.array([2.0, -1.0, 0.5]), 0.2, 0),
    ]
    for what, grad, start, lr, steps in cases:
        start_arg = start.copy()
        got = call(fn, grad, start_arg, lr, steps, allow_mutation=True)
        if not np.array_equal(start_arg, start):
            raise CheckFailed(f"gd_minimize changed its argument `start` in place (on {what}): after "
                              "`w = start`, w is not a copy but a second name for the same array, so "
                              "`w -= ...` overwrites start too; begin with a copy, "
                              "w = np.array(start, dtype=float)")
        expected = ref.gd_minimize(grad, start, lr, steps)
        if _close(got, expected):
            continue
        _diagnose_gd(got, expected, grad, start, lr, steps, what)
        expect_close(got, expected, f"the path on {what} (lr = {lr}, steps = {steps})")
    return "follows the reference path on 3 problems, including steps = 0"


def _diagnose_gd(got, expected, grad, start, lr, steps, what):
    if got is None:
        return  # expect_close says "did you forget a return?"
    try:
        arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return
    D = start.shape[0]
    if arr.shape == (D,) and _close(arr, expected[-1]):
        raise CheckFailed(f"returned only the final point on {what}; return the whole path, "
                          f"an array of shape (steps + 1, D) = {expected.shape}")
    if arr.shape == (steps, D) and steps > 0:
        if _close(arr, expected[1:]):
            raise CheckFailed(f"the path on {what} has {steps} rows and lacks the start point: "
                              f"path[0] must be `start`, so there are steps + 1 rows")
        if _close(arr, expected[:-1]):
            raise CheckFailed(f"the path on {what} stops one step early: do `steps` updates and "
                              "keep the start as well (steps + 1 rows)")
    if arr.shape == expected.shape and steps > 0:
        if np.allclose(arr, arr[-1]) and not np.allclose(expected, expected[-1]):
            raise CheckFailed(f"every row of the path on {what} is the same point: the path holds one "
                              "array that was updated in place (w -= ...); write w = w - lr * grad(w), "
                              "which makes a new array each step")
        if _close(arr, ref.gd_minimize(grad, start, -lr, steps)):
            raise CheckFailed(f"the path on {what} goes uphill: step against the gradient, w - lr * grad(w)")
        if _close(arr, ref.gd_minimize(grad, start, lr * lr, steps)):
            raise CheckFailed(f"the steps on {what} are lr² · grad: the learning rate is applied twice")


# --------------------------------------------------------------------------- 2. SGD with momentum

def _sgd_ref(w, dw, state, lr, momentum, nesterov=False):
    return ref.sgd_step(w, dw, ref.SGDState(np.asarray(state.momentum_buffer, dtype=np.float64)),
                        lr, momentum=momentum, nesterov=nesterov)


def _sgd_wrongs():
    def not_carried(w, dw, state, lr, momentum, nesterov=False):
        new_w, _ = _sgd_ref(w, dw, state, lr, momentum, nesterov)
        return new_w, state

    def textbook(w, dw, state, lr, momentum, nesterov=False):  # v = mu v - lr g; w += v
        v = momentum * state.momentum_buffer - lr * dw
        step = momentum * v - lr * dw if nesterov else v
        return w + step, ref.SGDState(v)

    def lr_in_buffer(w, dw, state, lr, momentum, nesterov=False):  # v = mu v + lr g; w -= v
        v = momentum * state.momentum_buffer + lr * dw
        step = lr * dw + momentum * v if nesterov else v
        return w - step, ref.SGDState(v)

    def lr_twice(w, dw, state, lr, momentum, nesterov=False):  # v = mu v + lr g; w -= lr v
        v = momentum * state.momentum_buffer + lr * dw
        step = lr * dw + momentum * v if nesterov else v
        return w - lr * step, ref.SGDState(v)

    def average(w, dw, state, lr, momentum, nesterov=False):  # v = mu v + (1 - mu) g
        v = momentum * state.momentum_buffer + (1 - momentum) * dw
        step = dw + momentum * v if nesterov else v
        return w - lr * step, ref.SGDState(v)

    def buffer_ignored(w, dw, state, lr, momentum, nesterov=False):  # buf = mu * zeros + g
        return _sgd_ref(w, dw, ref.SGDState(np.zeros_like(w)), lr, momentum, nesterov)

    def nesterov_ignored(w, dw, state, lr, momentum, nesterov=False):
        return _sgd_ref(w, dw, state, lr, momentum, False)

    def nesterov_without_mu(w, dw, state, lr, momentum, nesterov=False):
        v = momentum * state.momentum_buffer + dw
        step = dw + v if nesterov else v
        return w - lr * step, ref.SGDState(v)

    def uphill(w, dw, state, lr, momentum, nesterov=False):
        return _sgd_ref(w, dw, state, -lr, momentum, nesterov)

    return [
        (not_carried, "the returned state still holds the old momentum buffer: return SGDState(new_buffer) "
                      "so that the next step can use it"),
        (buffer_ignored, "state.momentum_buffer is ignored: each step restarts from zeros, so the buffer "
                         "is just the current gradient and there is no momentum; start from the buffer "
                         "passed in, v = μ·state.momentum_buffer + g"),
        (nesterov_ignored, "with nesterov=True your step equals plain momentum: Nesterov steps along "
                           "g + μ·v (the gradient plus one more momentum move), not along v"),
        (nesterov_without_mu, "the Nesterov step is g + v: the look-ahead moves one more momentum step, "
                              "so the buffer is multiplied by μ once more, g + μ·v"),
        (textbook, "your buffer is the textbook velocity v = μv − lr·g (w += v); this course stores the "
                   "buffer as PyTorch does, v = μv + g and w ← w − lr·v (the two differ once lr changes "
                   "between steps)"),
        (lr_twice, "the learning rate is applied twice: it goes into the buffer and multiplies the step; "
                   "keep it out of the buffer (v = μv + g, w ← w − lr·v)"),
        (lr_in_buffer, "your buffer includes the learning rate (v = μv + lr·g); PyTorch keeps it out "
                       "(v = μv + g, w ← w − lr·v), which matters as soon as lr changes between steps"),
        (average, "your buffer is an average, v = μv + (1 − μ)g; PyTorch's buffer is a decayed sum, "
                  "v = μv + g (no (1 − μ) factor)"),
        (uphill, "w moves uphill: subtract the step, w ← w − lr·v"),
    ]


@check.exercise(points=3, hints=[
    "The buffer is a decayed running sum of the gradients: multiply the old buffer (passed in as "
    "state.momentum_buffer) by the momentum and add the new gradient. The learning rate stays out "
    "of the buffer and is applied only when w moves.",
    "buf = momentum * state.momentum_buffer + dw. Plain momentum steps along buf; Nesterov steps "
    "along dw + momentum * buf (one more momentum move ahead).",
    "buf = momentum * state.momentum_buffer + dw; step = dw + momentum * buf if nesterov else "
    "buf; return w - lr * step, SGDState(buf): a new state, nothing changed in place.",
])
def sgd_momentum_step(fn):
    """One SGD step with momentum (and Nesterov), PyTorch's form; returns (w, SGDState)."""
    def case(what, dim, seed, lr, momentum, nesterov=False, lrs=None):
        lrs = lrs or [lr] * 20
        hyper = [dict(lr=lr_k, momentum=momentum, nesterov=nesterov) for lr_k in lrs]
        w0 = np.random.default_rng(seed).standard_normal(dim)
        fields = None if momentum else ()  # without momentum the buffer is unused: any value will do
        return _StepCase(what, w0, ref.SGDState(np.zeros(dim)), _quadratic(dim, seed), hyper, fields)
    cases = [
        case("a run with momentum 0.9", 5, 1, 0.05, 0.9),
        case("a run with Nesterov momentum 0.9", 4, 2, 0.05, 0.9, nesterov=True),
        case("a run with momentum 0.5 and a learning rate that changes every step", 3, 3, 0.1, 0.5,
             lrs=_schedule_lrs(0.1)),
        case("a run with Nesterov momentum and a changing learning rate", 3, 4, 0.1, 0.7,
             nesterov=True, lrs=_schedule_lrs(0.1)),
        case("a run with momentum 0 (plain SGD)", 3, 5, 0.1, 0.0),
    ]
    _run_steps(fn, "sgd_momentum_step", ref.SGDState, cases, _sgd_ref, ["momentum_buffer"], _sgd_wrongs())
    return "matches torch.optim.SGD's update for 20 steps in 5 runs (momentum, Nesterov, changing lr)"


# --------------------------------------------------------------------------- 3. RMSprop

def _rms_ref(w, dw, state, lr, alpha, eps):
    state = ref.RMSpropState(np.asarray(state.square_avg, dtype=np.float64), np.zeros_like(w))
    return ref.rmsprop_step(w, dw, state, lr, alpha=alpha, eps=eps)


def _rms_wrongs():
    def make(square, denom, carried=True, lr_power=1):
        def wrong(w, dw, state, lr, alpha, eps):
            s = square(state.square_avg, dw, alpha)
            new_state = ref.RMSpropState(s if carried else state.square_avg, np.zeros_like(w))
            return w - lr ** lr_power * dw / denom(s, eps), new_state
        return wrong

    good_square = lambda s, g, a: a * s + (1 - a) * g * g
    good_denom = lambda s, eps: np.sqrt(s) + eps
    return [
        (make(good_square, good_denom, carried=False),
         "the returned state still holds the old square_avg: return RMSpropState(new_square_avg, "
         "state.momentum_buffer)"),
        (make(good_square, lambda s, eps: np.sqrt(s + eps)),
         "eps is inside the square root: PyTorch divides by sqrt(square_avg) + eps"),
        (make(lambda s, g, a: (1 - a) * s + a * g * g, good_denom),
         "alpha and 1 − alpha are swapped: alpha is the weight of the *old* average, "
         "square_avg = alpha·square_avg + (1 − alpha)·g²"),
        (make(good_square, lambda s, eps: s + eps),
         "the square root is missing: divide by sqrt(square_avg) + eps, the root-mean-square of the gradients"),
        (make(lambda s, g, a: a * s + (1 - a) * g, good_denom),
         "square_avg should average the *squared* gradient g², not g"),
        (make(good_square, good_denom, lr_power=2),
         "the step is lr² · g / (sqrt(s) + eps): the learning rate is applied twice"),
    ]


@check.exercise(points=2, hints=[
    "RMSprop keeps a running average of the *squared* gradient and divides each step by its "
    "square root: coordinates with large gradients get small steps. alpha is the weight of the "
    "old average.",
    "square_avg = alpha * state.square_avg + (1 - alpha) * dw**2. Divide by np.sqrt(square_avg) + "
    "eps: eps goes outside the square root.",
    "square_avg = alpha * state.square_avg + (1 - alpha) * dw**2; return w - lr * dw / "
    "(np.sqrt(square_avg) + eps), RMSpropState(square_avg, state.momentum_buffer).",
])
def rmsprop_step(fn):
    """One RMSprop step as torch.optim.RMSprop computes it; returns (w, RMSpropState)."""
    def case(what, dim, seed, lr, alpha, eps, scale=1.0):
        hyper = [dict(lr=lr, alpha=alpha, eps=eps)] * 20
        quad = _quadratic(dim, seed)
        w0 = np.random.default_rng(seed).standard_normal(dim)
        state = ref.RMSpropState(np.zeros(dim), np.zeros(dim))
        return _StepCase(what, w0, state, lambda w, k: scale * quad(w, k), hyper)
    cases = [
        case("a run with alpha 0.99", 5, 11, 0.01, 0.99, 1e-8),
        case("a run with alpha 0.9 and tiny gradients (size 1e-3, eps 1e-6)", 4, 12, 0.01, 0.9, 1e-6,
             scale=1e-3),
        case("a run with alpha 0.5 and eps 0.1", 3, 13, 0.05, 0.5, 0.1),
    ]
    _run_steps(fn, "rmsprop_step", ref.RMSpropState, cases, _rms_ref, ["square_avg"], _rms_wrongs())
    return "matches torch.optim.RMSprop's update for 20 steps in 3 runs, including tiny gradients"


# --------------------------------------------------------------------------- 4. Adam

def _adam_ref(w, dw, state, lr, betas, eps):
    if not isinstance(state.step, (int, np.integer)):
        raise CheckFailed(f"state.step is a {type(state.step).__name__}: it counts the steps taken, an int")
    state = ref.AdamState(int(state.step), np.asarray(state.exp_avg, dtype=np.float64),
                          np.asarray(state.exp_avg_sq, dtype=np.float64))
    return ref.adam_step(w, dw, state, lr, betas=betas, eps=eps)


def _adam_wrongs():
    def make(correct_m=True, correct_v=True, eps_inside=False, eps_hat=False, advance=True,
             swap=False, t_offset=1, store_corrected=False):
        def wrong(w, dw, state, lr, betas, eps):
            b1, b2 = betas[::-1] if swap else betas
            t = int(state.step) + t_offset
            m = b1 * state.exp_avg + (1 - b1) * dw
            v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
            c1 = 1 - b1 ** t if correct_m else 1.0
            c2 = 1 - b2 ** t if correct_v else 1.0
            if eps_hat:  # the paper's "efficient" form: eps added before v is corrected
                new_w = w - lr * (np.sqrt(c2) / c1) * m / (np.sqrt(v) + eps)
            elif eps_inside:
                new_w = w - lr * (m / c1) / np.sqrt(v / c2 + eps)
            else:
                new_w = w - lr * (m / c1) / (np.sqrt(v / c2) + eps)
            if store_corrected:
                m, v = m / c1, v / c2
            return new_w, ref.AdamState(t if advance else int(state.step), m, v)
        return wrong

    return [
        (make(advance=False),
         "the returned state's step counter did not advance: return AdamState(state.step + 1, m, v)"),
        (make(t_offset=0),
         "the bias correction uses t = state.step, which is 0 on the first step (1 − β⁰ = 0 divides by "
         "zero): the first step is t = 1, so use t = state.step + 1"),
        (make(correct_m=False, correct_v=False),
         "m̂ and v̂ are not bias-corrected: divide m by 1 − β₁ᵗ and v by 1 − β₂ᵗ (t counts from 1)"),
        (make(correct_m=False),
         "m̂ is not bias-corrected: divide m by 1 − β₁ᵗ as well"),
        (make(correct_v=False),
         "v̂ is not bias-corrected: divide v by 1 − β₂ᵗ as well"),
        (make(eps_inside=True),
         "eps is inside the square root: PyTorch divides by sqrt(v̂) + eps"),
        (make(eps_hat=True),
         "eps is added to sqrt(v) before the bias correction (the Adam paper's 'efficient' form); "
         "PyTorch adds it to sqrt(v̂), after correcting v"),
        (make(store_corrected=True),
         "the state holds the bias-corrected m̂ and v̂; store the raw averages m and v (the correction "
         "is recomputed from t at every step)"),
        (make(swap=True),
         "β₁ and β₂ are swapped: β₁ (0.9) is for the gradient average m, β₂ (0.999) for the squared one v"),
    ]


@check.exercise(points=3, hints=[
    "Adam is two running averages, m of g (weight β₁ on the old value) and v of g² (weight β₂), "
    "and a step along m / sqrt(v). Both start at zero, so divide each by 1 − βᵗ (t counts steps "
    "from 1) before using them.",
    "t = state.step + 1; m = b1 * state.exp_avg + (1 - b1) * dw; v = b2 * state.exp_avg_sq + (1 - "
    "b2) * dw**2; m_hat = m / (1 - b1**t); v_hat = v / (1 - b2**t). The state keeps the raw m and "
    "v, not the corrected ones.",
    "After the lines of hint 2: return w - lr * m_hat / (np.sqrt(v_hat) + eps), AdamState(t, m, "
    "v).",
])
def adam_step(fn):
    """One Adam step with bias correction, as torch.optim.Adam computes it; returns (w, AdamState)."""
    def case(what, dim, seed, lr, betas, eps, scale=1.0, step=0):
        hyper = [dict(lr=lr, betas=betas, eps=eps)] * 20
        quad = _quadratic(dim, seed)
        w0 = np.random.default_rng(seed).standard_normal(dim)
        state = ref.AdamState(step, np.zeros(dim), np.zeros(dim))
        return _StepCase(what, w0, state, lambda w, k: scale * quad(w, k), hyper)
    cases = [
        case("a run with the default betas (0.9, 0.999)", 5, 21, 1e-2, (0.9, 0.999), 1e-8),
        case("a run with small gradients (size 1e-3) and eps 1e-4", 4, 22, 1e-2, (0.9, 0.999), 1e-4,
             scale=1e-3),
        case("a run with betas (0.8, 0.99)", 3, 23, 5e-2, (0.8, 0.99), 1e-8),
    ]
    _run_steps(fn, "adam_step", ref.AdamState, cases, _adam_ref, ["step", "exp_avg", "exp_avg_sq"],
               _adam_wrongs())
    return "matches torch.optim.Adam's update for 20 steps in 3 runs, bias correction and eps included"


# --------------------------------------------------------------------------- 5. warm-up + cosine

def _schedule_wrongs():
    cosine = ref.cosine_lr

    def make(warm, cos):
        def wrong(epoch, base_lr, warmup, total, eta_min):
            if epoch < warmup:
                return warm(epoch, base_lr, warmup)
            return cos(epoch, base_lr, warmup, total, eta_min)
        return wrong

    good_warm = lambda e, base, warmup: base * (e + 1) / warmup
    good_cos = lambda e, base, warmup, total, eta_min: cosine(e - warmup, base, total - warmup, eta_min)
    return [
        (make(lambda e, base, warmup: base * e / warmup, good_cos),
         "the warm-up is one epoch late: epoch 0 gets lr = 0, a wasted epoch; "
         "use base_lr * (epoch + 1) / warmup"),
        (make(lambda e, base, warmup: base * (e + 1) / (warmup + 1), good_cos),
         "the warm-up never reaches base_lr: divide (epoch + 1) by warmup, not warmup + 1"),
        (make(good_warm, lambda e, base, warmup, total, eta_min: cosine(e - warmup + 1, base, total - warmup,
                                                                        eta_min)),
         "the cosine part is one epoch ahead: at epoch = warmup it must start at base_lr "
         "(t = epoch − warmup)"),
        (make(good_warm, lambda e, base, warmup, total, eta_min: cosine(e - warmup, base, total, eta_min)),
         "the cosine part lasts `total` epochs: it should last total − warmup epochs, reaching "
         "eta_min exactly at epoch = total"),
        (make(good_warm, lambda e, base, warmup, total, eta_min: cosine(e, base, total, eta_min)),
         "the cosine part starts counting at epoch 0: after the warm-up it must start again from "
         "base_lr, with t = epoch − warmup"),
        (make(good_warm, lambda e, base, warmup, total, eta_min: cosine(e - warmup, base, total - warmup, 0.0)),
         "eta_min is ignored: the cosine goes from base_lr down to eta_min, "
         "eta_min + (base_lr − eta_min)·(1 + cos(π t / T)) / 2"),
    ]


@check.exercise(points=2, hints=[
    "Two phases: during the first `warmup` epochs the rate climbs in equal steps up to base_lr; "
    "after that a half cosine glides from base_lr down to eta_min, reaching it exactly at epoch = "
    "total.",
    "Warm-up (epoch < warmup): base_lr * (epoch + 1) / warmup, so epoch warmup − 1 gets base_lr. "
    "Cosine: count t = epoch - warmup from the end of the warm-up, over T = total - warmup "
    "epochs.",
    "if epoch < warmup: return base_lr * (epoch + 1) / warmup; otherwise t, T = epoch - warmup, "
    "total - warmup and return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T)) / "
    "2.",
])
def warmup_cosine_lr(fn):
    """The learning rate of an epoch: linear warm-up, then cosine annealing (equal to torch's schedulers)."""
    cases = [(0.1, 5, 25, 1e-3), (3e-3, 1, 10, 0.0), (1.0, 3, 8, 0.1), (0.5, 0, 6, 0.0)]
    for base_lr, warmup, total, eta_min in cases:
        args = f"base_lr={base_lr}, warmup={warmup}, total={total}, eta_min={eta_min}"
        for epoch in range(total + 1):
            try:
                got = call(fn, epoch, base_lr, warmup, total, eta_min)
            except CheckFailed as fail:
                if warmup == 0:
                    raise CheckFailed(f"{fail} ({args}; warmup = 0 means no warm-up at all: "
                                      "only the cosine part)") from None
                raise
            expected = ref.warmup_cosine_lr(epoch, base_lr, warmup, total, eta_min)
            if got is None:
                raise CheckFailed("warmup_cosine_lr returned None: return the learning rate (a float)")
            try:
                value = float(got)
            except (TypeError, ValueError):
                raise CheckFailed(f"warmup_cosine_lr returned a {type(got).__name__}; return one float") from None
            if _close(value, expected, rtol=1e-9, atol=1e-12):
                continue
            try:  # the learner's whole schedule, once, to compare with each classic mistake
                rates = [float(call(fn, e, base_lr, warmup, total, eta_min)) for e in range(total + 1)]
            except (TypeError, ValueError, CheckFailed):
                rates = None
            if rates is not None:
                epochs = range(total + 1)
                schedule = [ref.warmup_cosine_lr(e, base_lr, warmup, total, eta_min) for e in epochs]
                diagnose(rates, schedule,
                         [(lambda wrong=wrong: [wrong(e, base_lr, warmup, total, eta_min) for e in epochs],
                           f"{message} ({args})") for wrong, message in _schedule_wrongs()],
                         rtol=1e-9, atol=1e-12)
            raise CheckFailed(f"at epoch {epoch} ({args}) the learning rate is {value:.6g}, "
                              f"expected {expected:.6g}")
    return "equals the reference for every epoch of 4 schedules, including warmup = 0 and warmup = 1"


# --------------------------------------------------------------------------- 6. mini-batches

def _collect(fn, n, batch_size, rng) -> list[np.ndarray]:
    out = call(fn, n, batch_size, rng)  # call() does not count drawing from rng as a mutation
    if out is None:
        raise CheckFailed("minibatches returned None: `yield` each batch's index array "
                          "(or return a list of them)")
    try:
        batches = list(out)
    except TypeError:
        raise CheckFailed(f"minibatches returned a {type(out).__name__}, which cannot be iterated over; "
                          "yield index arrays") from None
    except NotImplementedError:
        raise
    except Exception as err:
        raise CheckFailed(f"iterating over minibatches(...) raised {type(err).__name__}: {err}") from None
    result = []
    for i, b in enumerate(batches):
        arr = np.asarray(b)
        expect(arr.ndim == 1, f"batch {i} has shape {arr.shape}: each batch is a 1-D array of example indices")
        expect(arr.size == 0 or arr.dtype.kind in "iu",
               f"batch {i} holds {arr.dtype} values: yield integer indices into the data set "
               "(e.g. order[start:start + batch_size])")
        result.append(arr.astype(np.int64))
    return result


def _check_cover(batches, n, batch_size):
    what = f"n={n}, batch_size={batch_size}"
    expect(len(batches) > 0, f"no batches at all for {what}")
    seen = np.concatenate(batches)
    counts = np.bincount(seen[(seen >= 0) & (seen < n)], minlength=n)
    expect(np.all((seen >= 0) & (seen < n)), f"an index is outside 0..{n - 1} for {what}")
    if np.any(counts > 1):
        twice = int(np.argmax(counts > 1))
        raise CheckFailed(f"example {twice} appears {int(counts[twice])} times in one epoch ({what}), and "
                          f"{int(np.sum(counts == 0))} never: shuffle one permutation per epoch and cut it "
                          "into slices (drawing each batch at random repeats examples)")
    missing = int(np.sum(counts == 0))
    if missing:
        full = all(len(b) == batch_size for b in batches)
        if full and missing == n % batch_size:
            raise CheckFailed(f"the last partial batch was dropped ({what}): the examples left over "
                              f"({missing} of them) never appear; yield it too, shorter than the others")
        raise CheckFailed(f"{missing} of the {n} examples never appear in the epoch ({what})")
    sizes = [len(b) for b in batches]
    expected = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    expect(sizes == expected, f"the batch sizes are {sizes} for {what}, expected {expected} "
                              "(full batches, then the remainder)")


@check.exercise(points=2, hints=[
    "One epoch = one random order of all n examples, cut into consecutive slices of batch_size; "
    "the last slice may be shorter. Draw the random order from the `rng` argument.",
    "order = rng.permutation(n) gives the shuffled indices 0..n-1 once; then walk over it with "
    "range(0, n, batch_size).",
    "order = rng.permutation(n); for start in range(0, n, batch_size): yield order[start:start + "
    "batch_size].",
])
def minibatches(fn):
    """A generator of shuffled index batches covering range(n) exactly once, drawn from ``rng``."""
    py_state, np_state = random.getstate(), np.random.get_state()  # a learner may draw from these
    try:
        for n, batch_size in [(10, 3), (12, 4), (5, 8), (7, 1)]:
            _check_cover(_collect(fn, n, batch_size, np.random.default_rng(1)), n, batch_size)
        n, batch_size = 40, 8
        random.seed(0)
        np.random.seed(0)
        first = np.concatenate(_collect(fn, n, batch_size, np.random.default_rng(5)))
        random.seed(1)
        np.random.seed(1)
        again = np.concatenate(_collect(fn, n, batch_size, np.random.default_rng(5)))
        other = np.concatenate(_collect(fn, n, batch_size, np.random.default_rng(6)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    expect(not np.array_equal(first, np.arange(n)),
           "the examples come in their original order 0, 1, 2, ...: shuffle them (rng.permutation(n))")
    expect(np.array_equal(first, again),
           "the order is not reproducible from rng: two calls with equally seeded generators gave "
           "different batches; draw the shuffle from the rng argument, not from np.random or random")
    expect(not np.array_equal(first, other),
           "the order does not depend on rng: generators with different seeds gave the same batches; "
           "draw the shuffle from the rng argument")
    return "covers every example exactly once (4 sizes, last partial batch kept), shuffled by rng"


# --------------------------------------------------------------------------- 7. one epoch of training

def _epoch_ref(params, states, x, y, batch_size, rng, lr=1e-3, carry_state=True, write_back=True,
               weighted=True):
    from dlcourse.backprop.numpy_impl import mlp_loss_and_grads
    start_params, start_states = params, states
    total, losses = 0.0, []
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = mlp_loss_and_grads(params if write_back else start_params, x[idx], y[idx])
        steps = [ref.adam_step(p, g, s, lr=lr)
                 for p, g, s in zip(params, grads, states if carry_state else start_states)]
        params = [p for p, _ in steps]
        states = [s for _, s in steps]
        total += float(loss) * len(idx)
        losses.append(float(loss))
    return params, states, (total / len(x) if weighted else float(np.mean(losses)))


def _epoch_problem(seed):
    from dlcourse.backprop.numpy_impl import init_mlp
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((23, 6))
    y = rng.integers(0, 3, size=23)
    params = init_mlp([6, 5, 3], rng, dtype=np.float64)
    return params, [ref.adam_init(p) for p in params], x, y


def _explain_epoch_mutation(params, params_before, states, states_before):
    """Name the parameter array or state field that train_epoch changed in place, if any.

    ``params_before`` / ``states_before`` are deep copies taken before the call.
    """
    for i, (p, before) in enumerate(zip(params, params_before)):
        if not (isinstance(p, np.ndarray) and p.shape == before.shape and np.array_equal(p, before)):
            raise CheckFailed(f"train_epoch changed params[{i}] in place; compute new arrays "
                              "(p = p - ...) as adam_step does, and return them") from None
    for i, (s, before) in enumerate(zip(states, states_before)):
        for field in before._fields:
            if not np.array_equal(getattr(s, field, None), getattr(before, field)):
                raise CheckFailed(f"train_epoch changed states[{i}].{field} in place; the states given "
                                  "must stay as they are: adam_step returns a new AdamState, collect "
                                  "those in a new list and return it") from None
    if len(params) != len(params_before) or len(states) != len(states_before):
        raise CheckFailed("train_epoch added or removed items of the params or states list it was "
                          "given; build new lists and return them") from None


@check.exercise(points=2, hints=[
    "Loop over the mini-batches of optim.minibatches(len(x), batch_size, rng). For each: the loss "
    "and gradients on that batch, then one Adam step for every parameter array, each with its own "
    "state. The new parameters and states are the ones the next batch uses.",
    "Inside the loop: loss, grads = mlp_loss_and_grads(params, x[idx], y[idx]); steps = "
    "[optim.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]. For the mean "
    "loss, add loss * len(idx) to a running total.",
    "After the steps: params = [p for p, _ in steps]; states = [s for _, s in steps]; total += "
    "float(loss) * len(idx). After the loop: return params, states, total / len(x).",
])
def train_epoch(fn):
    """One epoch of mini-batch Adam on an MLP; returns (params, states, mean loss over examples)."""
    for seed, batch_size, lr in [(31, 5, 1e-2), (32, 8, 3e-2)]:
        params, states, x, y = _epoch_problem(seed)
        # the answer (and the classic mistakes) come from the inputs as they are BEFORE the call
        expected = _epoch_ref(params, states, x, y, batch_size, np.random.default_rng(seed), lr)
        wrongs = [(_epoch_ref(params, states, x, y, batch_size, np.random.default_rng(seed), lr, **flags)[0],
                   message) for flags, message in [
            (dict(carry_state=False), "every batch starts Adam from the states given at the start of the "
                                      "epoch: carry each parameter's new state on to the next batch"),
            (dict(write_back=False), "every batch's gradient is taken at the initial parameters: use the "
                                     "updated parameters for the next batch's gradient"),
        ]]
        unweighted = _epoch_ref(params, states, x, y, batch_size, np.random.default_rng(seed), lr,
                                weighted=False)[2]
        copies = [p.copy() for p in params]
        state_copies = [ref.AdamState(s.step, s.exp_avg.copy(), s.exp_avg_sq.copy()) for s in states]
        try:
            out = call(fn, params, states, x, y, batch_size, np.random.default_rng(seed), lr=lr)
        except CheckFailed as fail:
            if "mutated" in str(fail):  # call() saw an in-place change: say which array it was
                _explain_epoch_mutation(params, copies, states, state_copies)
            raise
        got_params, got_states, got_loss = expect_tuple(out, 3, "(params, states, mean_loss)", "train_epoch",
                                                        types=(tuple,))
        expect(isinstance(got_params, (list, tuple)) and len(got_params) == len(params),
               f"params should be a list of {len(params)} arrays, in the order of the input")
        expect(isinstance(got_states, (list, tuple)) and len(got_states) == len(params),
               f"states should be a list of {len(params)} AdamStates, one per parameter")
        what = f"batch_size={batch_size}, lr={lr}"
        right_params = all(_close(g, e) for g, e in zip(got_params, expected[0]))
        if not right_params:
            diagnose(got_params, expected[0], [(wrong, f"{message} ({what})") for wrong, message in wrongs],
                     same=lambda a, b: all(_close(g, e) for g, e in zip(a, b)))
            for i, (g, e) in enumerate(zip(got_params, expected[0])):
                expect_close(g, e, f"params[{i}] after one epoch ({what}); did you use "
                                   "optim.minibatches with the rng given, and optim.adam_step with lr?")
        for i, (g, e) in enumerate(zip(got_states, expected[1])):
            g = _as_state(g, ref.AdamState, "train_epoch")
            expect(int(g.step) == e.step, f"states[{i}].step is {g.step} after the epoch, expected {e.step} "
                                          "(one Adam step per batch)")
            expect_close(g.exp_avg, e.exp_avg, f"states[{i}].exp_avg after one epoch ({what})")
        if got_loss is None:
            raise CheckFailed("mean_loss is None: return the epoch's mean loss as the third item")
        if not _close(got_loss, expected[2], rtol=1e-9):
            expect(not _close(got_loss, unweighted, rtol=1e-9),
                   f"mean_loss is the plain mean of the batch losses ({what}); weight each batch's loss by "
                   "its size (the last batch is smaller) so that it is the mean over examples")
            expect_close(got_loss, expected[2], f"mean_loss ({what})", rtol=1e-9)
    return "one epoch of mini-batch Adam equals the reference on 2 problems, mean loss included"
