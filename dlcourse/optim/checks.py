"""Graded checks for the exercises of chapter 03 (``solutions/03_gradient_descent.py``).

Each check runs the learner's function on several cases, small to large,
against the reference in :mod:`dlcourse.optim.numpy_impl`.  Optimizer steps are
checked step by step along a 20-step run in which the learner's own returned
state is fed back in (carrying the state is part of the job).  At the first
step that differs, the check recomputes every row of the exercise's mistake
table (below each check: the classic wrong answers, as data) from the same
inputs and, when one matches, names that mistake.  A failure shows the smallest
failing case and a call that reproduces it.

Dimension letters: N examples, D features (a point's coordinates), H hidden
units, K classes, P any parameter shape.
"""
from __future__ import annotations

import math
import random
from typing import Callable, NamedTuple

import numpy as np

from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close,
                              expect_defaults, expect_tuple, fail_with, trying)
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
    w: np.ndarray          # the starting parameter, shape (P,)
    state: tuple           # the starting state
    grad: Callable         # (w, k) -> dw
    hyper: list            # keyword arguments for each step (lr may change)
    fields: tuple = None   # the state fields to compare (None: the check's default)


def _as_state(got, cls, fn_name: str, table=()):
    """The learner's returned state as ``cls`` (a NamedTuple), or a precise complaint.

    A plain tuple is refused: the next step reads the state's fields by name.  When
    the exercise's table has a row "plain tuple state", its message is given.
    """
    if isinstance(got, cls):
        return got
    fields = cls._fields
    example = f"{cls.__name__}({', '.join(fields)})"
    if isinstance(got, tuple) and not hasattr(got, "_fields") and len(got) == len(fields):
        if any(row.name == "plain tuple state" for row in table):
            fail_with(table, "plain tuple state")
        raise CheckFailed(f"the state {fn_name} returned is a plain tuple; return {example}, whose "
                          "fields the next step reads by name")
    if not isinstance(got, tuple) and all(hasattr(got, f) for f in fields):
        return cls(*(getattr(got, f) for f in fields))
    raise CheckFailed(f"the state {fn_name} returned is a {type(got).__name__}; "
                      f"return a new {example}")


def _first_difference(got_w, got_state, exp_w, exp_state, fields):
    """(what, got, expected) of the first of w and the state's fields that differs, or None."""
    if not _close(got_w, exp_w):
        return "w", got_w, exp_w
    for field in fields:
        if not _close(getattr(got_state, field), getattr(exp_state, field)):
            return f"state.{field}", getattr(got_state, field), getattr(exp_state, field)
    return None


def _run_steps(fn, fn_name: str, cls, cases, reference, compare_fields, table, steps=20):
    """Run ``fn`` along each case, feeding back its own state; diagnose the first wrong step.

    ``reference(w, dw, state, **hyper) -> (w, state)``; ``table`` is the
    exercise's mistake table, whose rows have the same signature.
    """
    for case in cases:
        w, state = case.w, case.state
        for k in range(steps):
            dw = case.grad(w, k)
            hyper = case.hyper[k]
            with trying(fn_name, w, dw, state, label=f"step {k + 1} of {case.what}", **hyper) as tried:
                got = expect_tuple(call(fn, w, dw, state, **hyper), 2, "(w, state)", fn_name, types=(tuple,))
                got_w, got_state = got[0], _as_state(got[1], cls, fn_name, table)
                exp_w, exp_state = reference(w, dw, state, **hyper)
                fields = compare_fields if case.fields is None else case.fields
                differs = _first_difference(got_w, got_state, exp_w, exp_state, fields)
                if differs is not None:
                    what, tried.got, tried.expected = differs  # show what the failing comparison is about
                    tried.label = f"step {k + 1} of {case.what}; {what} shown"
                    where = f"(first seen at step {k + 1} of {case.what})"
                    diagnose((got_w, got_state), (exp_w, exp_state), table,
                             apply=lambda wrong, w=w, dw=dw, state=state, hyper=hyper:
                                 _as_step(wrong(w, dw, state, **hyper), cls),
                             same=lambda a, b, fields=fields: _same_step(*a, *b, fields), suffix=where)
                    expect_close(got_w, exp_w, f"w after step {k + 1} of {case.what}")
                    for field in fields:
                        expect_close(getattr(got_state, field), getattr(exp_state, field),
                                     f"state.{field} after step {k + 1} of {case.what}")
            w, state = np.asarray(got_w, dtype=np.float64), got_state
    return len(cases)


def _as_step(out, cls):
    return out[0], _as_state(out[1], cls, "the mistake")


def _same_step(got_w, got_state, exp_w, exp_state, fields) -> bool:
    return _close(got_w, exp_w) and all(
        _close(getattr(got_state, f), getattr(exp_state, f)) for f in fields)


def _schedule_lrs(base: float, steps: int = 20) -> list[float]:
    """A learning rate that changes every step (a cosine decay), to tell forms apart."""
    return [ref.cosine_lr(k, base, steps) + 0.1 * base for k in range(steps)]


def _names_in(code) -> set[str]:
    """Every global or attribute name used by ``code`` and the functions defined inside it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_in(const)
    return names


# --------------------------------------------------------------------------- 1. gradient descent
#
# The wrong implementations of every table are plain functions with the exercise's signature.

def gd_final_point_only(grad, start, lr, steps):
    w = np.array(start, dtype=float)
    for _ in range(steps):
        w = w - lr * grad(w)
    return w


def gd_without_start(grad, start, lr, steps):
    w, path = np.array(start, dtype=float), []
    for _ in range(steps):
        w = w - lr * grad(w)
        path.append(w)
    return np.stack(path)


def gd_one_step_short(grad, start, lr, steps):
    w = np.array(start, dtype=float)
    path = [w]
    for _ in range(steps - 1):
        w = w - lr * grad(w)
        path.append(w)
    return np.stack(path)


def gd_updated_in_place(grad, start, lr, steps):
    w = np.array(start, dtype=float)
    path = [w]
    for _ in range(steps):
        w -= lr * grad(w)   # the same array every time: every row of the path is the last point
        path.append(w)
    return np.stack(path)


def gd_start_aliased(grad, start, lr, steps):
    w = start               # not a copy: w -= ... overwrites the caller's start
    path = [w.copy()]
    for _ in range(steps):
        w -= lr * grad(w)
        path.append(w.copy())
    return np.stack(path)


def gd_uphill(grad, start, lr, steps):
    w = np.array(start, dtype=float)
    path = [w]
    for _ in range(steps):
        w = w + lr * grad(w)
        path.append(w)
    return np.stack(path)


def gd_lr_twice(grad, start, lr, steps):
    w = np.array(start, dtype=float)
    path = [w]
    for _ in range(steps):
        w = w - lr * lr * grad(w)
        path.append(w)
    return np.stack(path)


def gd_list_returned(grad, start, lr, steps):
    w = np.array(start, dtype=float)
    path = [w]
    for _ in range(steps):
        w = w - lr * grad(w)
        path.append(w)
    return path


GD_MISTAKES = (
    Mistake("list returned", gd_list_returned,
            "the path is a list of points; return one array of shape (steps + 1, D): np.stack the list"),
    Mistake("start changed in place", gd_start_aliased,
            "gd_minimize changed its argument `start` in place: after `w = start`, w is a second name for "
            "the same array, so `w -= ...` overwrites start too; begin with a copy, "
            "w = np.array(start, dtype=float)"),
    Mistake("final point only", gd_final_point_only,
            "returned only the final point; return the whole path, an array of shape (steps + 1, D) whose "
            "row k is the point after k updates"),
    Mistake("start missing", gd_without_start,
            "the path lacks the start point: row 0 must be `start` itself, so there are steps + 1 rows"),
    Mistake("one step short", gd_one_step_short,
            "the path stops one update early: do `steps` updates and keep the start as well "
            "(steps + 1 rows)"),
    Mistake("updated in place", gd_updated_in_place,
            "every row of the path is the same point: the list holds one array that `w -= ...` updates "
            "in place; write w = w - lr * grad(w), which makes a new array each step"),
    Mistake("uphill", gd_uphill, "the path goes uphill: step against the gradient, w - lr * grad(w)"),
    Mistake("lr twice", gd_lr_twice, "the steps are lr² · grad: the learning rate is applied twice"),
)


def bowl_grad(w):
    """The gradient of the bowl 0.5 * (w1² + 10 w2²)."""
    return np.array([1.0, 10.0]) * w


def shifted_grad(w):
    """The gradient of 0.5 * sum(c * (w - 1)²) with c = (0.5, 2, 4)."""
    return np.array([0.5, 2.0, 4.0]) * (w - 1.0)


@check.exercise(points=2, mistakes=GD_MISTAKES, reference=ref.gd_minimize, hints=[
    "Keep a list of the points visited. It starts with the start point itself, and every update "
    "appends the new point, so `steps` updates give steps + 1 rows.",
    "First make your own copy of start (np.array(start, dtype=float)), so that start is never "
    "changed. One update is a new array, w = w - lr * grad(w), not w -= ..., which would also "
    "change the rows already stored.",
    "copy start into w; path = [w]; then `steps` times: update w and append it; finally turn the "
    "list into one (steps + 1, D) array with np.stack(path).",
])
def gd_minimize(fn):
    """Plain gradient descent on a function given by its gradient, returning the path (steps + 1, D)."""
    cases = [  # small to large; steps = 0 last, an edge case
        (bowl_grad, np.array([-4.0, 1.5]), 0.05, 3),
        (shifted_grad, np.array([2.0, -1.0, 0.5]), 0.2, 12),
        (bowl_grad, np.array([-4.0, 1.5]), 0.05, 30),
        (shifted_grad, np.array([2.0, -1.0, 0.5]), 0.2, 0),
    ]
    for grad, start, lr, steps in cases:
        with trying("gd_minimize", grad, start, lr, steps) as tried:
            start_arg = start.copy()
            got = call(fn, grad, start_arg, lr, steps, allow_mutation=True)
            if not np.array_equal(start_arg, start):
                fail_with(GD_MISTAKES, "start changed in place")
            expected = ref.gd_minimize(grad, start, lr, steps)
            tried.got, tried.expected = got, expected
            if isinstance(got, (list, tuple)):
                fail_with(GD_MISTAKES, "list returned", f"(got a {type(got).__name__} of {len(got)} items)")
            diagnose(got, expected, GD_MISTAKES, apply=lambda wrong: wrong(grad, start.copy(), lr, steps))
            expect_close(got, expected, f"the path (lr = {lr}, steps = {steps})")
            expect(isinstance(got, np.ndarray), f"gd_minimize returned a {type(got).__name__}; return an "
                                                "ndarray of shape (steps + 1, D)")
    return "follows the reference path on 3 problems, and returns just the start for steps = 0"


# --------------------------------------------------------------------------- 2. Nesterov momentum

def _nesterov_ref(w, dw, state, lr, momentum):
    return ref.nesterov_step(w, dw, ref.SGDState(np.asarray(state.momentum_buffer, dtype=np.float64)),
                             lr, momentum)


def nesterov_state_not_returned(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer + dw
    return w - lr * (dw + momentum * buf), state


def nesterov_buffer_ignored(w, dw, state, lr, momentum=0.9):
    buf = dw  # momentum * zeros + dw: the buffer passed in is never read
    return w - lr * (dw + momentum * buf), ref.SGDState(buf)


def nesterov_old_buffer(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer + dw
    return w - lr * (dw + momentum * state.momentum_buffer), ref.SGDState(buf)


def nesterov_without_mu(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer + dw
    return w - lr * (dw + buf), ref.SGDState(buf)


def nesterov_uphill(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer + dw
    return w + lr * (dw + momentum * buf), ref.SGDState(buf)


def nesterov_minus_lookahead(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer + dw
    return w - lr * (dw - momentum * buf), ref.SGDState(buf)


def nesterov_negated_buffer(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer - dw   # v = mu v - g, then w += lr * (...)
    return w + lr * (-dw + momentum * buf), ref.SGDState(buf)


def nesterov_textbook(w, dw, state, lr, momentum=0.9):
    v = momentum * state.momentum_buffer - lr * dw   # Sutskever's form, lr inside the velocity
    return w + momentum * v - lr * dw, ref.SGDState(v)


def nesterov_lr_in_buffer(w, dw, state, lr, momentum=0.9):
    v = momentum * state.momentum_buffer + lr * dw
    return w - (lr * dw + momentum * v), ref.SGDState(v)


def nesterov_average(w, dw, state, lr, momentum=0.9):
    buf = momentum * state.momentum_buffer + (1 - momentum) * dw
    return w - lr * (dw + momentum * buf), ref.SGDState(buf)


def nesterov_momentum_hard_coded(w, dw, state, lr, momentum=0.9):
    v = 0.9 * state.momentum_buffer + dw   # the argument `momentum` is never read
    return w - lr * (dw + 0.9 * v), ref.SGDState(v)


NESTEROV_MISTAKES = (
    Mistake("state not returned", nesterov_state_not_returned,
            "the returned state still holds the old momentum buffer: return SGDState(new_buffer) so that "
            "the next step can use it"),
    Mistake("buffer ignored", nesterov_buffer_ignored,
            "state.momentum_buffer is never read: each step restarts from zeros, so there is no momentum; "
            "start from the buffer passed in, v = μ·state.momentum_buffer + g"),
    Mistake("old buffer in the look-ahead", nesterov_old_buffer,
            "the step is g + μ·v_old, with the buffer from *before* this step (the same step as plain "
            "momentum, μ·v_old + g); Nesterov looks ahead with the updated buffer: g + μ·v_new, "
            "v_new = μ·v_old + g"),
    Mistake("look-ahead without mu", nesterov_without_mu,
            "the look-ahead step is g + v: the buffer must be multiplied by μ once more, g + μ·v"),
    Mistake("uphill", nesterov_uphill,
            "w moves uphill: subtract the step, w ← w − lr·(g + μ·v)"),
    Mistake("look-ahead sign", nesterov_minus_lookahead,
            "the look-ahead is subtracted, g − μ·v; the momentum move adds to the gradient: g + μ·v"),
    Mistake("negated buffer", nesterov_negated_buffer,
            "your buffer has the opposite sign (v = μv − g, then w ← w + lr·…): the path is right but "
            "the stored state is not PyTorch's; keep v = μv + g and subtract the step"),
    Mistake("textbook velocity", nesterov_textbook,
            "your buffer is the textbook velocity v = μv − lr·g (lr inside); PyTorch keeps lr out of "
            "the buffer, v = μv + g, w ← w − lr·(g + μv): the two differ once lr changes between steps"),
    Mistake("lr in buffer", nesterov_lr_in_buffer,
            "your buffer includes the learning rate (v = μv + lr·g); PyTorch keeps it out "
            "(v = μv + g, w ← w − lr·(g + μv)), which matters as soon as lr changes between steps"),
    Mistake("averaged buffer", nesterov_average,
            "your buffer is an average, v = μv + (1 − μ)g; PyTorch's buffer is a decayed sum, "
            "v = μv + g (no (1 − μ) factor)"),
    Mistake("momentum hard-coded", nesterov_momentum_hard_coded,
            "the step uses μ = 0.9 whatever `momentum` is passed: use the argument momentum, in the "
            "buffer and in the look-ahead"),
)


@check.exercise(points=3, mistakes=NESTEROV_MISTAKES, reference=ref.nesterov_step, hints=[
    "Nesterov keeps the same buffer as plain momentum (a decayed running sum of gradients, the "
    "learning rate kept out of it); only the direction of the step changes: it looks one momentum "
    "move ahead.",
    "First update the buffer from the one passed in (state.momentum_buffer) exactly as plain "
    "momentum does. Then step along the gradient plus μ times the *updated* buffer, not along "
    "the buffer alone.",
    "buf = momentum times the buffer passed in, plus dw; the step direction is dw + momentum * "
    "buf; return the new w (w minus lr times that direction) and SGDState(buf).",
])
def nesterov_step(fn):
    """One Nesterov momentum step, PyTorch's form; returns (w, SGDState)."""
    expect_defaults(fn, "nesterov_step", momentum=0.9)
    def case(what, dim, seed, lr, momentum, lrs=None, warm=True):
        lrs = lrs or [lr] * 20
        hyper = [dict(lr=lr_k, momentum=momentum) for lr_k in lrs]
        rng = np.random.default_rng(seed)
        w0 = rng.standard_normal(dim)
        # a buffer already filled by earlier steps: from zeros, some mistakes agree at step 1
        buf0 = rng.standard_normal(dim) if warm else np.zeros(dim)
        return _StepCase(what, w0, ref.SGDState(buf0), _quadratic(dim, seed), hyper)
    cases = [
        case("a run with momentum 0.9 from a filled buffer", 2, 1, 0.05, 0.9),
        case("a run with momentum 0.5 and a learning rate that changes every step", 3, 3, 0.1, 0.5,
             lrs=_schedule_lrs(0.1)),
        case("a run with momentum 0.9 from zeros (the first steps of training)", 4, 2, 0.05, 0.9, warm=False),
        case("a run with momentum 0.7 and a changing learning rate", 5, 4, 0.1, 0.7, lrs=_schedule_lrs(0.1)),
    ]
    _run_steps(fn, "nesterov_step", ref.SGDState, cases, _nesterov_ref, ["momentum_buffer"],
               NESTEROV_MISTAKES)
    return "matches torch.optim.SGD(nesterov=True) for 20 steps in 4 runs (filled buffer, changing lr)"


# --------------------------------------------------------------------------- 3. RMSprop

def _rms_ref(w, dw, state, lr, alpha, eps):
    state = ref.RMSpropState(np.asarray(state.square_avg, dtype=np.float64), np.zeros_like(w))
    return ref.rmsprop_step(w, dw, state, lr, alpha=alpha, eps=eps)


def rms_state_not_returned(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / (np.sqrt(s) + eps), state


def rms_old_average(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / (np.sqrt(state.square_avg) + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_adagrad_sum(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = state.square_avg + dw * dw
    return w - lr * dw / (np.sqrt(s) + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_eps_inside_sqrt(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / np.sqrt(s + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_alpha_swapped(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = (1 - alpha) * state.square_avg + alpha * dw * dw
    return w - lr * dw / (np.sqrt(s) + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_no_sqrt(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / (s + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_g_not_squared(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw
    return w - lr * dw / (np.sqrt(s) + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_lr_twice(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * lr * dw / (np.sqrt(s) + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_eps_hard_coded(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / (np.sqrt(s) + 1e-8), ref.RMSpropState(s, state.momentum_buffer)


def rms_alpha_hard_coded(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = 0.99 * state.square_avg + 0.01 * dw * dw
    return w - lr * dw / (np.sqrt(s) + eps), ref.RMSpropState(s, state.momentum_buffer)


def rms_buffer_dropped(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / (np.sqrt(s) + eps), ref.RMSpropState(s, None)


def rms_plain_tuple(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    s = alpha * state.square_avg + (1 - alpha) * dw * dw
    return w - lr * dw / (np.sqrt(s) + eps), (s, state.momentum_buffer)


RMS_MISTAKES = (
    Mistake("state not returned", rms_state_not_returned,
            "the returned state still holds the old square_avg: return RMSpropState(new_square_avg, "
            "state.momentum_buffer)"),
    Mistake("old average in the denominator", rms_old_average,
            "the step divides by the old average: update square_avg with this step's g² first, then "
            "divide by sqrt(new square_avg) + eps"),
    Mistake("Adagrad running sum", rms_adagrad_sum,
            "square_avg is a running *sum* of g² (that is Adagrad, whose steps shrink forever); RMSprop "
            "keeps a decaying average, alpha·square_avg + (1 − alpha)·g²"),
    Mistake("eps inside sqrt", rms_eps_inside_sqrt,
            "eps is inside the square root: PyTorch divides by sqrt(square_avg) + eps"),
    Mistake("alpha swapped", rms_alpha_swapped,
            "alpha and 1 − alpha are swapped: alpha is the weight of the *old* average, "
            "square_avg = alpha·square_avg + (1 − alpha)·g²"),
    Mistake("no sqrt", rms_no_sqrt,
            "the square root is missing: divide by sqrt(square_avg) + eps, the root-mean-square of the "
            "gradients"),
    Mistake("g not squared", rms_g_not_squared,
            "square_avg averages g instead of g² (so it can go negative and its root is NaN): average "
            "the squared gradient"),
    Mistake("lr twice", rms_lr_twice,
            "the step is lr² · g / (sqrt(s) + eps): the learning rate is applied twice"),
    Mistake("eps hard-coded", rms_eps_hard_coded,
            "the step adds 1e-8 whatever `eps` is passed: use the argument eps, sqrt(square_avg) + eps"),
    Mistake("alpha hard-coded", rms_alpha_hard_coded,
            "the average uses 0.99 whatever `alpha` is passed: use the argument, "
            "alpha·square_avg + (1 − alpha)·g²"),
    Mistake("momentum buffer dropped", rms_buffer_dropped,
            "the returned state's momentum_buffer is None: pass the buffer you were given on unchanged, "
            "RMSpropState(new_square_avg, state.momentum_buffer)"),
    Mistake("plain tuple state", rms_plain_tuple,
            "the state is a plain tuple; return RMSpropState(new_square_avg, state.momentum_buffer), "
            "whose fields the next step reads by name (state.square_avg)"),
)


@check.exercise(points=2, mistakes=RMS_MISTAKES, reference=ref.rmsprop_step, hints=[
    "RMSprop keeps a running average of the *squared* gradient and divides each step by its "
    "square root: coordinates with large gradients get small steps. alpha is the weight of the "
    "old average.",
    "New average first: alpha times the old one (state.square_avg) plus (1 - alpha) times dw**2. "
    "Then divide by its square root plus eps: eps goes outside the square root.",
    "square_avg = alpha * state.square_avg + (1 - alpha) * dw**2; w moves by lr * dw / "
    "(np.sqrt(square_avg) + eps); the state passes the momentum buffer on unchanged.",
])
def rmsprop_step(fn):
    """One RMSprop step as torch.optim.RMSprop computes it; returns (w, RMSpropState)."""
    expect_defaults(fn, "rmsprop_step", lr=1e-2, alpha=0.99, eps=1e-8)
    def case(what, dim, seed, lr, alpha, eps, scale=1.0, warm=False):
        hyper = [dict(lr=lr, alpha=alpha, eps=eps)] * 20
        quad = _quadratic(dim, seed)
        rng = np.random.default_rng(seed)
        w0 = rng.standard_normal(dim)
        square_avg = (scale * rng.standard_normal(dim)) ** 2 if warm else np.zeros(dim)
        return _StepCase(what, w0, ref.RMSpropState(square_avg, np.zeros(dim)),
                         lambda w, k: scale * quad(w, k), hyper)
    cases = [
        case("a run with alpha 0.9 from a filled average", 2, 13, 0.05, 0.9, 1e-8, warm=True),
        case("a run with alpha 0.99 from zeros", 3, 11, 0.01, 0.99, 1e-8),
        case("a run with alpha 0.9 and tiny gradients (size 1e-3, eps 1e-6)", 4, 12, 0.01, 0.9, 1e-6,
             scale=1e-3),
        case("a run with alpha 0.5 and eps 0.1", 5, 14, 0.05, 0.5, 0.1),
    ]
    _run_steps(fn, "rmsprop_step", ref.RMSpropState, cases, _rms_ref, ["square_avg", "momentum_buffer"],
               RMS_MISTAKES)
    return "matches torch.optim.RMSprop's update for 20 steps in 4 runs, including tiny gradients"


# --------------------------------------------------------------------------- 4. AdamW

def _adamw_ref(w, dw, state, lr, betas, eps, weight_decay):
    if not isinstance(state.step, (int, np.integer)):
        raise CheckFailed(f"state.step is a {type(state.step).__name__}: it counts the steps taken, an int")
    state = ref.AdamState(int(state.step), np.asarray(state.exp_avg, dtype=np.float64),
                          np.asarray(state.exp_avg_sq, dtype=np.float64))
    return ref.adamw_step(w, dw, state, lr, betas=betas, eps=eps, weight_decay=weight_decay)


def adamw_via_adam_step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    return ref.adam_step(w * (1 - lr * weight_decay), dw, state, lr, betas, eps)


def adamw_step_not_advanced(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(state.step, m, v)


def adamw_t_from_zero(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step   # 0 on the first step: 1 - beta**0 = 0
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t + 1, m, v)


def adamw_exponent_off_by_one(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def adamw_g_not_squared(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw
    update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def adamw_correction_multiplied(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m * (1 - b1 ** t)) / (np.sqrt(v * (1 - b2 ** t)) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def adamw_no_sqrt(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m / (1 - b1 ** t)) / (v / (1 - b2 ** t) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def adamw_m_unused(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = dw / (np.sqrt(v / (1 - b2 ** t)) + eps)   # the raw gradient where m̂ belongs
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def adamw_no_correction(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    return w * (1 - lr * weight_decay) - lr * m / (np.sqrt(v) + eps), ref.AdamState(state.step + 1, m, v)


def adamw_eps_inside_sqrt(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m / (1 - b1 ** t)) / np.sqrt(v / (1 - b2 ** t) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def _adam_update(dw, state, betas, eps):
    """Adam's bias-corrected direction m̂ / (sqrt(v̂) + eps) and the new state (a helper of the rows below)."""
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    return (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps), ref.AdamState(t, m, v)


def adamw_coupled_decay(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    update, new_state = _adam_update(dw + weight_decay * w, state, betas, eps)
    return w - lr * update, new_state


def adamw_decay_after_step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    update, new_state = _adam_update(dw, state, betas, eps)
    return (w - lr * update) * (1 - lr * weight_decay), new_state


def adamw_decay_without_lr(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    update, new_state = _adam_update(dw, state, betas, eps)
    return w * (1 - weight_decay) - lr * update, new_state


def adamw_stores_corrected(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step + 1
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return w * (1 - lr * weight_decay) - lr * m_hat / (np.sqrt(v_hat) + eps), ref.AdamState(t, m_hat, v_hat)


def adamw_betas_swapped(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    return ref.adamw_step(w, dw, state, lr, betas[::-1], eps, weight_decay)


def adamw_t_from_zero_kept(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    b1, b2 = betas
    t = state.step   # 0 on the first step, and returned as it is: the counter never moves
    m = b1 * state.exp_avg + (1 - b1) * dw
    v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
    update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w * (1 - lr * weight_decay) - lr * update, ref.AdamState(t, m, v)


def adamw_decay_twice(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    update, new_state = _adam_update(dw + weight_decay * w, state, betas, eps)
    return w * (1 - lr * weight_decay) - lr * update, new_state


def adamw_no_decay(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    update, new_state = _adam_update(dw, state, betas, eps)
    return w - lr * update, new_state


def adamw_eps_hard_coded(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    update, new_state = _adam_update(dw, state, betas, 1e-8)
    return w * (1 - lr * weight_decay) - lr * update, new_state


ADAMW_MISTAKES = (
    Mistake("built on adam_step", adamw_via_adam_step,
            "your adamw_step calls the course's adam_step: this exercise is Adam's update written out "
            "yourself (m, v, bias correction, step) plus the decoupled decay"),
    Mistake("step not advanced", adamw_step_not_advanced,
            "the returned state's step counter did not advance: return AdamState(state.step + 1, m, v)"),
    Mistake("t counted from 0, counter not advanced", adamw_t_from_zero_kept,
            "t = state.step is 0 on the first step, so the bias correction divides by 1 − β⁰ = 0 (NaN at "
            "step 1), and the state returns that same t, so the counter never moves: use t = state.step + 1, "
            "both in 1 − βᵗ and in the returned AdamState(t, m, v)"),
    Mistake("t counted from 0", adamw_t_from_zero,
            "the bias correction uses t = state.step, which is 0 on the first step (1 − β⁰ = 0: a division "
            "by zero, hence inf/NaN): this is step t = state.step + 1"),
    Mistake("exponent off by one", adamw_exponent_off_by_one,
            "the bias-correction exponent is one too large (1 − βᵗ⁺¹): at the t-th step divide by 1 − βᵗ, "
            "with t = state.step + 1 counted once"),
    Mistake("g instead of g squared", adamw_g_not_squared,
            "exp_avg_sq averages g instead of g² (it goes negative and its square root is NaN): the second "
            "moment is the running average of the squared gradient"),
    Mistake("correction multiplied", adamw_correction_multiplied,
            "the bias correction multiplies by 1 − βᵗ; it must divide: m̂ = m / (1 − β₁ᵗ), "
            "v̂ = v / (1 − β₂ᵗ)"),
    Mistake("missing square root", adamw_no_sqrt,
            "the step divides by v̂ itself: take the square root, m̂ / (sqrt(v̂) + eps)"),
    Mistake("m unused", adamw_m_unused,
            "the step uses the raw gradient g where the first moment belongs: step along m̂ = m / (1 − β₁ᵗ)"),
    Mistake("no bias correction", adamw_no_correction,
            "m̂ and v̂ are not bias-corrected: divide m by 1 − β₁ᵗ and v by 1 − β₂ᵗ (t counts from 1)"),
    Mistake("eps inside sqrt", adamw_eps_inside_sqrt,
            "eps is inside the square root: PyTorch divides by sqrt(v̂) + eps"),
    Mistake("coupled decay (Adam's L2)", adamw_coupled_decay,
            "the decay is added to the gradient (g + λw), which is Adam's L2 penalty; AdamW decouples it: "
            "shrink the weights directly, w·(1 − lr·λ), and feed the plain gradient to m and v"),
    Mistake("decay after the step", adamw_decay_after_step,
            "the decay is applied to the updated weights; PyTorch shrinks w *before* the Adam step: "
            "w·(1 − lr·λ) − lr·m̂/(sqrt(v̂) + eps)"),
    Mistake("decay without lr", adamw_decay_without_lr,
            "the weights shrink by w·(1 − λ); the decoupled decay is scaled by the learning rate too: "
            "w·(1 − lr·λ)"),
    Mistake("stores corrected moments", adamw_stores_corrected,
            "the state holds the bias-corrected m̂ and v̂; store the raw averages m and v (the correction "
            "is recomputed from t at every step)"),
    Mistake("decay both coupled and decoupled", adamw_decay_twice,
            "the decay is applied twice: the weights shrink by w·(1 − lr·λ) (right) AND λw is added to the "
            "gradient (Adam's L2, wrong here): feed the plain gradient dw to m and v"),
    Mistake("no decay", adamw_no_decay,
            "the weights are not decayed (the step starts from w itself, not from the shrunk w·(1 − lr·λ)): "
            "take the Adam step from the decayed weights"),
    Mistake("eps hard-coded", adamw_eps_hard_coded,
            "the step adds 1e-8 whatever `eps` is passed: use the argument, sqrt(v̂) + eps"),
    Mistake("betas swapped", adamw_betas_swapped,
            "β₁ and β₂ are swapped: β₁ (0.9) is for the gradient average m, β₂ (0.999) for the squared one v"),
)


@check.exercise(points=3, mistakes=ADAMW_MISTAKES, reference=ref.adamw_step, hints=[
    "AdamW is Adam with one change: the weight decay does not go into the gradient. The weights "
    "shrink by the factor (1 − lr·weight_decay) first; then the usual Adam step (two running "
    "averages, bias correction with t counted from 1) uses the plain gradient.",
    "t = state.step + 1; shrink w first; m and v are the running averages of dw and dw**2 with "
    "weights beta1 and beta2 on the old values; divide each by (1 − beta**t) before using it, but "
    "store the raw m and v in the new AdamState.",
    "decayed = w * (1 - lr * weight_decay); m_hat = m / (1 - b1**t); v_hat = v / (1 - b2**t); "
    "return decayed - lr * m_hat / (np.sqrt(v_hat) + eps) with AdamState(t, m, v).",
])
def adamw_step(fn):
    """One AdamW step (decoupled weight decay) as torch.optim.AdamW computes it; returns (w, AdamState)."""
    expect_defaults(fn, "adamw_step", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    code = getattr(fn, "__code__", None)
    if code is not None and "adam_step" in _names_in(code):
        fail_with(ADAMW_MISTAKES, "built on adam_step")

    def case(what, dim, seed, lr, betas, eps, weight_decay, scale=1.0):
        hyper = [dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)] * 20
        quad = _quadratic(dim, seed)
        w0 = np.random.default_rng(seed).standard_normal(dim)
        state = ref.AdamState(0, np.zeros(dim), np.zeros(dim))
        return _StepCase(what, w0, state, lambda w, k: scale * quad(w, k), hyper)
    cases = [
        case("a run with betas (0.8, 0.99) and weight_decay 0.1", 2, 23, 5e-2, (0.8, 0.99), 1e-8, 0.1),
        case("a run with the default betas (0.9, 0.999) and weight_decay 0.01", 3, 21, 1e-2, (0.9, 0.999),
             1e-8, 1e-2),
        case("a run with small gradients (size 1e-3), eps 1e-4 and weight_decay 0.5", 4, 22, 1e-2,
             (0.9, 0.999), 1e-4, 0.5, scale=1e-3),
    ]
    _run_steps(fn, "adamw_step", ref.AdamState, cases, _adamw_ref, ["step", "exp_avg", "exp_avg_sq"],
               ADAMW_MISTAKES)
    return "matches torch.optim.AdamW's update for 20 steps in 3 runs, bias correction and decay included"


# --------------------------------------------------------------------------- 5. warm-up + cosine

def _cos(t, base_lr, period, eta_min):
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / period)) / 2


def schedule_warmup_late(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * epoch / warmup
    return _cos(epoch - warmup, base_lr, total - warmup, eta_min)


def schedule_warmup_short(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / (warmup + 1)
    return _cos(epoch - warmup, base_lr, total - warmup, eta_min)


def schedule_warmup_too_long(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch <= warmup:
        return base_lr * (epoch + 1) / warmup
    return _cos(epoch - warmup, base_lr, total - warmup, eta_min)


def schedule_integer_division(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * ((epoch + 1) // warmup)
    return _cos(epoch - warmup, base_lr, total - warmup, eta_min)


def schedule_cosine_ahead(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    return _cos(epoch - warmup + 1, base_lr, total - warmup, eta_min)


def schedule_cosine_total(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    return _cos(epoch - warmup, base_lr, total, eta_min)


def schedule_cosine_from_zero(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    return _cos(epoch, base_lr, total, eta_min)


def schedule_no_half(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    return eta_min + (base_lr - eta_min) * math.cos(math.pi * (epoch - warmup) / (total - warmup))


def schedule_eta_min_ignored(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    return _cos(epoch - warmup, base_lr, total - warmup, 0.0)


def schedule_eta_min_not_subtracted(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    return eta_min + base_lr * (1 + math.cos(math.pi * (epoch - warmup) / (total - warmup))) / 2


def schedule_float32(epoch, base_lr, warmup, total, eta_min=0.0):
    if epoch < warmup:
        return np.float32(base_lr * (epoch + 1) / warmup)
    return np.float32(_cos(epoch - warmup, base_lr, total - warmup, eta_min))


SCHEDULE_MISTAKES = (
    Mistake("float32", schedule_float32,
            "the learning rate is a np.float32, which keeps only about 7 digits: return a Python float "
            "(math.cos, or float(...) around a NumPy result; no np.float32)"),
    Mistake("warm-up too long", schedule_warmup_too_long,
            "the warm-up lasts one epoch too long (epoch <= warmup): at epoch = warmup the rate overshoots "
            "base_lr; warm up while epoch < warmup, then the cosine starts at base_lr"),
    Mistake("integer division", schedule_integer_division,
            "the warm-up rate is 0 and then jumps: (epoch + 1) // warmup is an integer division; "
            "use /, base_lr * (epoch + 1) / warmup"),
    Mistake("warm-up one epoch late", schedule_warmup_late,
            "the warm-up is one epoch late: epoch 0 gets lr = 0, a wasted epoch; "
            "use base_lr * (epoch + 1) / warmup"),
    Mistake("warm-up never reaches base_lr", schedule_warmup_short,
            "the warm-up never reaches base_lr: divide (epoch + 1) by warmup, not warmup + 1"),
    Mistake("cosine without (1 + cos) / 2", schedule_no_half,
            "the cosine part is (base_lr − eta_min)·cos(π t / T), which falls below eta_min and goes "
            "negative; the half cosine is (1 + cos(π t / T)) / 2, from 1 down to 0"),
    Mistake("eta_min not subtracted", schedule_eta_min_not_subtracted,
            "the cosine starts at base_lr + eta_min: scale (base_lr − eta_min), "
            "eta_min + (base_lr − eta_min)·(1 + cos(π t / T)) / 2"),
    Mistake("eta_min ignored", schedule_eta_min_ignored,
            "eta_min is ignored: the cosine goes from base_lr down to eta_min, "
            "eta_min + (base_lr − eta_min)·(1 + cos(π t / T)) / 2"),
    Mistake("cosine one epoch ahead", schedule_cosine_ahead,
            "the cosine part is one epoch ahead: at epoch = warmup it must start at base_lr "
            "(t = epoch − warmup)"),
    Mistake("cosine lasts total epochs", schedule_cosine_total,
            "the cosine part lasts `total` epochs: it should last total − warmup epochs, reaching "
            "eta_min exactly at epoch = total"),
    Mistake("cosine counts from epoch 0", schedule_cosine_from_zero,
            "the cosine part starts counting at epoch 0: after the warm-up it must start again from "
            "base_lr, with t = epoch − warmup"),
)


def _float_rate(got) -> float:
    if got is None:
        raise CheckFailed("warmup_cosine_lr returned None: return the learning rate (a float)")
    try:
        return float(got)
    except (TypeError, ValueError):
        raise CheckFailed(f"warmup_cosine_lr returned a {type(got).__name__}; return one float") from None


@check.exercise(points=2, mistakes=SCHEDULE_MISTAKES, reference=ref.warmup_cosine_lr, hints=[
    "Two phases: during the first `warmup` epochs the rate climbs in equal steps up to base_lr; "
    "after that a half cosine glides from base_lr down to eta_min, reaching it exactly at epoch = "
    "total. The lesson's cosine_lr is the second phase with its clock restarted.",
    "Warm-up (epoch < warmup): base_lr * (epoch + 1) / warmup, so epoch warmup − 1 gets base_lr. "
    "Cosine: count t = epoch - warmup from the end of the warm-up, over T = total - warmup "
    "epochs.",
    "if epoch < warmup: the warm-up formula; otherwise eta_min + (base_lr - eta_min) * (1 + "
    "math.cos(math.pi * t / T)) / 2 with t, T from hint 2.",
])
def warmup_cosine_lr(fn):
    """The learning rate of an epoch: linear warm-up, then cosine annealing (equal to torch's schedulers)."""
    expect_defaults(fn, "warmup_cosine_lr", eta_min=0.0)
    cases = [(1.0, 3, 8, 0.1), (3e-3, 1, 10, 0.0), (0.1, 5, 25, 1e-3), (0.5, 0, 6, 0.0)]  # small to large
    for base_lr, warmup, total, eta_min in cases:
        args = f"base_lr={base_lr}, warmup={warmup}, total={total}, eta_min={eta_min}"
        epochs = range(total + 1)
        for epoch in epochs:
            with trying("warmup_cosine_lr", epoch, base_lr, warmup, total, eta_min) as tried:
                try:
                    got = call(fn, epoch, base_lr, warmup, total, eta_min)
                except CheckFailed as fail:
                    if warmup == 0 and isinstance(getattr(fail, "error", None), ZeroDivisionError):
                        raise CheckFailed(f"{fail} (warmup = 0 means no warm-up at all: only the cosine "
                                          "part; test epoch < warmup before dividing by warmup)") from None
                    raise
                if isinstance(got, (np.float32, np.float16)):
                    fail_with(SCHEDULE_MISTAKES, "float32", f"(got {got!r} at epoch {epoch})")
                value = _float_rate(got)
                expected = ref.warmup_cosine_lr(epoch, base_lr, warmup, total, eta_min)
                tried.got, tried.expected = value, expected
                if _close(value, expected, rtol=1e-9, atol=1e-12):
                    continue
                try:  # the learner's whole schedule, once, to compare with each classic mistake
                    rates = [_float_rate(call(fn, e, base_lr, warmup, total, eta_min)) for e in epochs]
                except CheckFailed:
                    rates = None
                if rates is not None:
                    schedule = [ref.warmup_cosine_lr(e, base_lr, warmup, total, eta_min) for e in epochs]
                    diagnose(rates, schedule, SCHEDULE_MISTAKES, rtol=1e-9, atol=1e-12,
                             apply=lambda wrong: [wrong(e, base_lr, warmup, total, eta_min) for e in epochs],
                             suffix=f"({args})")
                raise CheckFailed(f"at epoch {epoch} ({args}) the learning rate is {value:.6g}, "
                                  f"expected {expected:.6g}")
    return "equals the reference for every epoch of 4 schedules, including warmup = 0 and warmup = 1"


# --------------------------------------------------------------------------- 6. mini-batches

def batches_in_order(n, batch_size, rng):
    order = np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def batches_global_generator(n, batch_size, rng):
    order = np.random.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def batches_last_dropped(n, batch_size, rng):
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start:start + batch_size]


def batches_order_only_shuffled(n, batch_size, rng):
    chunks = [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    for i in rng.permutation(len(chunks)):
        yield chunks[i]


def batches_with_replacement(n, batch_size, rng):
    for start in range(0, n, batch_size):
        yield rng.integers(0, n, size=min(batch_size, n - start))


def batches_new_permutation_each(n, batch_size, rng):
    for start in range(0, n, batch_size):
        yield rng.permutation(n)[start:start + batch_size]


def batches_new_permutation_prefix(n, batch_size, rng):
    for start in range(0, n, batch_size):
        yield rng.permutation(n)[:min(batch_size, n - start)]


def batches_list_returned(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


MINIBATCH_MISTAKES = (
    Mistake("not shuffled", batches_in_order,
            "the examples come in their original order 0, 1, 2, ...: shuffle them, one "
            "rng.permutation(n) per epoch"),
    Mistake("global generator", batches_global_generator,
            "the shuffle does not come from the rng argument (np.random or random was used), so a seed "
            "cannot reproduce it: draw it with rng.permutation(n)"),
    Mistake("last batch dropped", batches_last_dropped,
            "the last, partial batch was dropped: the n % batch_size examples left over never appear; "
            "yield it too, shorter than the others"),
    Mistake("only the batch order shuffled", batches_order_only_shuffled,
            "the batches are cut in order (0..B−1, B..2B−1, ...) and only their order is shuffled, so "
            "the same examples always share a batch: shuffle the examples first (rng.permutation(n)), "
            "then cut the shuffled order into slices"),
    Mistake("drawn with replacement", batches_with_replacement,
            "each batch is drawn at random with replacement (rng.integers/choice), so some examples "
            "repeat and others never appear: shuffle one permutation per epoch and cut it into slices"),
    Mistake("new permutation per batch", batches_new_permutation_each,
            "every batch slices a new permutation, so some examples repeat and others never appear: draw "
            "one rng.permutation(n) before the loop and slice that one"),
    Mistake("new permutation per batch, first items", batches_new_permutation_prefix,
            "every batch takes the first items of a new permutation, so some examples repeat and others "
            "never appear: draw one rng.permutation(n) before the loop and walk through it, slice by slice"),
    Mistake("list instead of generator", batches_list_returned,
            "minibatches returns a list of all the batches; the exercise asks for a generator: `yield` "
            "each batch inside the loop, so that the batches are made one at a time, when the training "
            "loop asks for the next"),
)


def _collect(fn, n, batch_size, seed) -> tuple[list[np.ndarray], bool]:
    """The batches of ``fn(n, batch_size, default_rng(seed))``, the global generators seeded too,
    and whether ``fn`` produced them lazily (a generator, or any iterator that is not a ready-made
    list, tuple or array)."""
    random.seed(seed)
    np.random.seed(seed)
    out = call(fn, n, batch_size, np.random.default_rng(seed))  # drawing from rng is no mutation
    if out is None:
        raise CheckFailed("minibatches returned None: `yield` each batch's index array inside the loop")
    try:
        iterator = iter(out)
    except TypeError:
        raise CheckFailed(f"minibatches returned a {type(out).__name__}, which cannot be iterated over; "
                          "yield index arrays") from None
    try:
        batches = list(iterator)
    except NotImplementedError:
        raise
    except Exception as err:  # raised by the learner's code while it produced the batches
        raise CheckFailed(f"minibatches raised {type(err).__name__} while producing its batches: {err}") from None
    result = []
    for i, b in enumerate(batches):
        arr = np.asarray(b)
        expect(arr.ndim == 1, f"batch {i} has shape {arr.shape}: each batch is a 1-D array of example indices")
        expect(arr.size == 0 or arr.dtype.kind in "iu",
               f"batch {i} holds {arr.dtype} values: yield integer indices into the data set "
               "(e.g. order[start:start + batch_size])")
        result.append(arr.astype(np.int64))
    return result, not isinstance(out, (list, tuple, np.ndarray))


def _in_order(batches, n, batch_size) -> tuple[bool, bool]:
    """(every index in its original order, every batch a run of consecutive indices)."""
    in_order = bool(batches) and n > 1 and np.array_equal(np.concatenate(batches), np.arange(n))
    consecutive = n > batch_size > 1 and all(np.array_equal(b, np.arange(b[0], b[0] + len(b)))
                                             for b in batches if len(b))
    return in_order, consecutive


def _shuffles_a_larger_case(fn) -> bool:
    """Whether ``fn`` shuffles 40 examples (so that an unshuffled small case was chance: 1 in n!)."""
    try:
        batches, _ = _collect(fn, 40, 8, 6)
    except CheckFailed:
        return False
    in_order, consecutive = _in_order(batches, 40, 8)
    return _cover_problem(batches, 40, 8) is None and not in_order and not consecutive


def _same_batches(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _name_batch_mistake(got, n, batch_size, seed):
    """Fail with the mistake-table row whose batches equal ``got`` (same seeds), if one does."""
    expected = [np.asarray(b) for b in ref.minibatches(n, batch_size, np.random.default_rng(seed))]

    def batches_of(wrong):
        random.seed(seed)
        np.random.seed(seed)
        return [np.asarray(b) for b in wrong(n, batch_size, np.random.default_rng(seed))]
    diagnose(got, expected, MINIBATCH_MISTAKES, apply=batches_of, same=_same_batches,
             suffix=f"(n={n}, batch_size={batch_size})")


def _cover_problem(batches, n, batch_size) -> str | None:
    """What is wrong with how ``batches`` cover range(n), or None."""
    if not batches:
        return "no batches at all"
    seen = np.concatenate(batches)
    if not np.all((seen >= 0) & (seen < n)):
        return f"an index is outside 0..{n - 1}"
    counts = np.bincount(seen, minlength=n)
    if np.any(counts > 1):
        twice = int(np.argmax(counts > 1))
        return (f"example {twice} appears {int(counts[twice])} times in one epoch, and "
                f"{int(np.sum(counts == 0))} never: every example exactly once per epoch")
    if np.any(counts == 0):
        return f"{int(np.sum(counts == 0))} of the {n} examples never appear in the epoch"
    sizes = [len(b) for b in batches]
    expected = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if sizes != expected:
        return f"the batch sizes are {sizes}, expected {expected} (full batches, then the remainder)"
    return None


@check.exercise(points=2, mistakes=MINIBATCH_MISTAKES, reference=ref.minibatches, hints=[
    "One epoch = one random order of all n examples, cut into consecutive slices of batch_size; "
    "the last slice may be shorter. Draw the random order from the `rng` argument.",
    "rng.permutation(n) gives the shuffled indices 0..n-1 once, before the loop; then walk over it "
    "with range(0, n, batch_size).",
    "order = rng.permutation(n); for each start in range(0, n, batch_size): yield the slice of order "
    "from start to start + batch_size.",
])
def minibatches(fn):
    """A generator of shuffled index batches covering range(n) exactly once, drawn from ``rng``."""
    py_state, np_state = random.getstate(), np.random.get_state()  # a learner may draw from these
    try:
        for n, batch_size, seed in [(5, 2, 2), (10, 3, 3), (12, 4, 5), (7, 1, 4), (5, 8, 1), (40, 8, 6)]:
            line = f"list(minibatches({n}, {batch_size}, np.random.default_rng({seed})))"
            with trying("minibatches", n, batch_size, seed, call_text=line) as tried:
                got, generated = _collect(fn, n, batch_size, seed)
                tried.got = got
                if not _same_batches(got, list(ref.minibatches(n, batch_size, np.random.default_rng(seed)))):
                    problem = _cover_problem(got, n, batch_size)
                    in_order, consecutive = _in_order(got, n, batch_size)
                    if (in_order or consecutive) and not problem and _shuffles_a_larger_case(fn):
                        in_order = consecutive = False  # this shuffle happened to keep the order: chance
                    if problem or in_order or consecutive:
                        _name_batch_mistake(got, n, batch_size, seed)
                        if consecutive and not problem and not in_order:
                            fail_with(MINIBATCH_MISTAKES, "only the batch order shuffled")
                        expect(problem is None, f"{problem} (n={n}, batch_size={batch_size})")
                        fail_with(MINIBATCH_MISTAKES, "not shuffled")
                if not generated:
                    fail_with(MINIBATCH_MISTAKES, "list instead of generator",
                          f"(it returned a {type(call(fn, n, batch_size, np.random.default_rng(seed))).__name__})")
        n, batch_size = 40, 8
        with trying("minibatches", call_text="list(minibatches(40, 8, np.random.default_rng(7)))"):
            first, _ = _collect(fn, n, batch_size, 7)
            random.seed(8)
            np.random.seed(8)  # the global generators moved on; rng did not
            again = [np.asarray(b) for b in call(fn, n, batch_size, np.random.default_rng(7))]
            other, _ = _collect(fn, n, batch_size, 9)
            if not _same_batches(first, again) or _same_batches(first, other):
                _name_batch_mistake(first, n, batch_size, 7)
                fail_with(MINIBATCH_MISTAKES, "global generator")
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return "covers every example exactly once (6 sizes, last partial batch kept), shuffled by rng"


# --------------------------------------------------------------------------- 7. one epoch of training

def _loss_and_grads(params, x, y):
    from dlcourse.backprop.numpy_impl import mlp_loss_and_grads
    return mlp_loss_and_grads(params, x, y)


def epoch_state_not_carried(params, states, x, y, batch_size, rng, lr=1e-3):
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params = [p for p, _ in pairs]          # the new states are dropped: every batch restarts Adam
        total += float(loss) * len(idx)
    return params, [s for _, s in pairs], total / len(x)


def epoch_stale_params(params, states, x, y, batch_size, rng, lr=1e-3):
    start, total = params, 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(start, x[idx], y[idx])   # always the initial parameters
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_gradients_accumulated(params, states, x, y, batch_size, rng, lr=1e-3):
    total, summed = 0.0, None
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        summed = grads if summed is None else [a + g for a, g in zip(summed, grads)]
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, summed, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_full_data_gradient(params, states, x, y, batch_size, rng, lr=1e-3):
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x, y)   # every example, every step
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_rng_ignored(params, states, x, y, batch_size, rng, lr=1e-3):
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size):   # no rng: always the same order
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_own_batching(params, states, x, y, batch_size, rng, lr=1e-3):
    total, order = 0.0, rng.permutation(len(x))
    for i in range(len(x) // batch_size):               # the partial batch at the end is lost
        idx = order[i * batch_size:(i + 1) * batch_size]
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_lr_not_passed(params, states, x, y, batch_size, rng, lr=1e-3):
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        pairs = [ref.adam_step(p, g, s) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_old_states_returned(params, states, x, y, batch_size, rng, lr=1e-3):
    new_params, _, mean_loss = _epoch(params, states, x, y, batch_size, rng, lr)
    return new_params, states, mean_loss


def _epoch(params, states, x, y, batch_size, rng, lr, loss_of=None):
    """The right epoch, with the mean loss computed by ``loss_of(losses, sizes, n, batch_size)``."""
    losses, sizes = [], []
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        pairs = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        losses.append(float(loss))
        sizes.append(len(idx))
    if loss_of is None:
        mean = sum(a * b for a, b in zip(losses, sizes)) / len(x)
    else:
        mean = loss_of(losses, sizes, len(x), batch_size)
    return params, states, mean


def epoch_loss_nominal_size(params, states, x, y, batch_size, rng, lr=1e-3):
    return _epoch(params, states, x, y, batch_size, rng, lr,
                  loss_of=lambda losses, sizes, n, b: sum(loss * b for loss in losses) / n)


def epoch_last_loss(params, states, x, y, batch_size, rng, lr=1e-3):
    return _epoch(params, states, x, y, batch_size, rng, lr, loss_of=lambda losses, sizes, n, b: losses[-1])


def epoch_plain_mean_loss(params, states, x, y, batch_size, rng, lr=1e-3):
    return _epoch(params, states, x, y, batch_size, rng, lr,
                  loss_of=lambda losses, sizes, n, b: sum(losses) / len(losses))


def epoch_params_in_place(params, states, x, y, batch_size, rng, lr=1e-3):
    new_params, new_states, mean_loss = _epoch(params, states, x, y, batch_size, rng, lr)
    for p, new in zip(params, new_params):
        p[...] = new
    return params, new_states, mean_loss


def epoch_states_in_place(params, states, x, y, batch_size, rng, lr=1e-3):
    new_params, new_states, mean_loss = _epoch(params, states, x, y, batch_size, rng, lr)
    for s, new in zip(states, new_states):
        s.exp_avg[...] = new.exp_avg
        s.exp_avg_sq[...] = new.exp_avg_sq
    return new_params, new_states, mean_loss


def epoch_list_items_replaced(params, states, x, y, batch_size, rng, lr=1e-3):
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        for i in range(len(params)):
            params[i], states[i] = ref.adam_step(params[i], grads[i], states[i], lr=lr)
        total += loss * len(idx)
    return params, states, total / len(x)


def epoch_states_list_replaced(params, states, x, y, batch_size, rng, lr=1e-3):
    new_params, new_states, mean_loss = _epoch(params, states, x, y, batch_size, rng, lr)
    states[:] = new_states
    return new_params, new_states, mean_loss


def epoch_states_never_updated(params, states, x, y, batch_size, rng, lr=1e-3):
    params, states, total = list(params), list(states), 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        new = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params = [p for p, _ in new]           # states is never reassigned
        total += loss * len(idx)
    return params, states, total / len(x)


def epoch_params_never_updated(params, states, x, y, batch_size, rng, lr=1e-3):
    params, states, total = list(params), list(states), 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        new = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        states = [s for _, s in new]           # params is never reassigned
        total += loss * len(idx)
    return params, states, total / len(x)


def epoch_last_batch_skipped(params, states, x, y, batch_size, rng, lr=1e-3):
    total, count = 0.0, 0
    for idx in list(ref.minibatches(len(x), batch_size, rng))[:-1]:
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        new = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in new], [s for _, s in new]
        total += loss * len(idx)
        count += len(idx)
    return params, states, total / count


def epoch_loss_not_divided(params, states, x, y, batch_size, rng, lr=1e-3):
    return _epoch(params, states, x, y, batch_size, rng, lr,
                  loss_of=lambda losses, sizes, n, b: sum(a * s for a, s in zip(losses, sizes)))


def epoch_batch_means_over_n(params, states, x, y, batch_size, rng, lr=1e-3):
    return _epoch(params, states, x, y, batch_size, rng, lr,
                  loss_of=lambda losses, sizes, n, b: sum(losses) / n)


def epoch_loss_after_update(params, states, x, y, batch_size, rng, lr=1e-3):
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        _, grads = _loss_and_grads(params, x[idx], y[idx])
        new = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in new], [s for _, s in new]
        loss, _ = _loss_and_grads(params, x[idx], y[idx])   # the loss of the parameters after the step
        total += float(loss) * len(idx)
    return params, states, total / len(x)


def epoch_with_optimizer_class(params, states, x, y, batch_size, rng, lr=1e-3):
    opt = ref.Optimizer(params, "adam", lr=lr)
    opt.states = list(states)
    total = 0.0
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = _loss_and_grads(params, x[idx], y[idx])
        params = opt.step(params, grads)
        total += loss * len(idx)
    return params, opt.states, total / len(x)


EPOCH_MISTAKES = (
    Mistake("Optimizer class used", epoch_with_optimizer_class,
            "train_epoch uses the course's Optimizer class, which carries the states for you; this "
            "exercise is about carrying them yourself: call optim_np.adam_step(p, g, s, lr=lr) for every "
            "parameter and keep the new parameters and states it returns"),
    Mistake("params changed in place", epoch_params_in_place,
            "train_epoch changed the parameter arrays it was given in place (p -= ..., p[...] = ...): "
            "compute new arrays, as adam_step does, and return them in a new list"),
    Mistake("states changed in place", epoch_states_in_place,
            "train_epoch changed the arrays inside the AdamStates it was given in place: adam_step returns "
            "a new AdamState; keep those in a new list, leaving the input states as they were"),
    Mistake("params list items replaced", epoch_list_items_replaced,
            "train_epoch replaced the items of the list `params` it was given (params[i] = ...): the arrays "
            "are untouched, but the caller's list now holds the new ones; build and return a new list"),
    Mistake("states list items replaced", epoch_states_list_replaced,
            "train_epoch replaced the items of the list `states` it was given (states[i] = ..., "
            "states[:] = ...): collect the new AdamStates in a new list and return that"),
    Mistake("states never updated", epoch_states_never_updated,
            "the states returned are the ones given, and every batch's Adam step started from them: after "
            "each batch keep the new AdamStates too (states = [s for _, s in ...]), not only the parameters"),
    Mistake("params never updated", epoch_params_never_updated,
            "the parameters returned are the ones given, and every batch's gradient was taken at them: "
            "after each batch keep the new parameters too (params = [p for p, _ in ...]), not only the states"),
    Mistake("state not carried", epoch_state_not_carried,
            "every batch starts Adam from the states given at the start of the epoch: keep each "
            "parameter's new AdamState and pass it to the next batch's adam_step"),
    Mistake("stale parameters", epoch_stale_params,
            "every batch's gradient is taken at the initial parameters: compute the next batch's "
            "gradient at the updated parameters"),
    Mistake("gradients kept across batches", epoch_gradients_accumulated,
            "the gradients are summed across batches: each step must use only this batch's gradient "
            "(nothing carries over from the previous batch, unlike PyTorch's .grad without zero_grad)"),
    Mistake("full-data gradient", epoch_full_data_gradient,
            "every step takes the gradient on the whole data set: take it on the batch, "
            "mlp_loss_and_grads(params, x[idx], y[idx])"),
    Mistake("rng ignored", epoch_rng_ignored,
            "the batches do not come from the rng given: draw them with "
            "optim_np.minibatches(len(x), batch_size, rng), so the epoch is shuffled and reproducible"),
    Mistake("last batch skipped", epoch_last_batch_skipped,
            "the last, partial batch is skipped (no update, no loss from it): loop over every batch that "
            "optim_np.minibatches yields"),
    Mistake("own batching", epoch_own_batching,
            "your own batching loses the last, partial batch (len(x) // batch_size batches): use "
            "optim_np.minibatches(len(x), batch_size, rng), which keeps it"),
    Mistake("lr not passed", epoch_lr_not_passed,
            "adam_step ran with its default learning rate (1e-3): pass lr=lr on"),
    Mistake("old states returned", epoch_old_states_returned,
            "the states returned are the ones given: return the new AdamStates of the last step"),
    Mistake("loss after the update", epoch_loss_after_update,
            "mean_loss is computed after each update, from the new parameters: record each batch's loss "
            "as mlp_loss_and_grads returned it with the gradients, before the step"),
    Mistake("loss summed, not divided", epoch_loss_not_divided,
            "mean_loss is the sum of loss · len(idx) over the batches: divide it by the number of examples, "
            "len(x)"),
    Mistake("batch means divided by N", epoch_batch_means_over_n,
            "mean_loss adds up the batch losses (each already a mean over its batch) and divides by len(x): "
            "weight each batch's loss by its size first, loss · len(idx)"),
    Mistake("loss weighted by the nominal batch size", epoch_loss_nominal_size,
            "mean_loss weights every batch by batch_size, but the last batch is smaller: weight each "
            "batch's loss by len(idx), its real size, then divide by len(x)"),
    Mistake("last batch's loss", epoch_last_loss,
            "mean_loss is the loss of the last batch only: average over the whole epoch, each batch's "
            "loss weighted by its size"),
    Mistake("plain mean of batch losses", epoch_plain_mean_loss,
            "mean_loss is the plain mean of the batch losses; weight each batch's loss by its size "
            "(the last batch is smaller) so that it is the mean over examples"),
)


def epoch_problem(seed):
    """The data of the train_epoch check: an MLP 6 → 5 → 3 and N = 23 examples, as
    ``params, states, x, y`` (import it to reproduce a failing case)."""
    from dlcourse.backprop.numpy_impl import init_mlp
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((23, 6))            # (N, D)
    y = rng.integers(0, 3, size=23)             # (N,), K = 3 classes
    params = init_mlp([6, 5, 3], rng, dtype=np.float64)  # D = 6, H = 5, K = 3
    return params, [ref.adam_init(p) for p in params], x, y


def _copy_states(states):
    return [ref.AdamState(s.step, s.exp_avg.copy(), s.exp_avg_sq.copy()) for s in states]


def _explain_epoch_mutation(params, originals, copies, states, state_originals, state_copies):
    """Name what train_epoch changed among its inputs: the arrays themselves, or the lists' items."""
    for i, (p, before) in enumerate(zip(originals, copies)):
        if not np.array_equal(p, before):
            fail_with(EPOCH_MISTAKES, "params changed in place", f"(params[{i}])")
    for i, (s, before) in enumerate(zip(state_originals, state_copies)):
        for field in ("exp_avg", "exp_avg_sq"):
            if not np.array_equal(getattr(s, field), getattr(before, field)):
                fail_with(EPOCH_MISTAKES, "states changed in place", f"(states[{i}].{field})")
    params_changed = len(params) != len(originals) or any(a is not b for a, b in zip(params, originals))
    states_changed = len(states) != len(state_originals) or any(
        a is not b for a, b in zip(states, state_originals))
    if params_changed:
        fail_with(EPOCH_MISTAKES, "params list items replaced", "(it replaced the items of `states` too)" if states_changed else "")
    if states_changed:
        fail_with(EPOCH_MISTAKES, "states list items replaced")


def _same_epoch(a, b) -> bool:
    (pa, sa, la), (pb, sb, lb) = a, b
    return (len(pa) == len(pb) and all(_close(p, q) for p, q in zip(pa, pb))
            and len(sa) == len(sb) and all(int(s.step) == int(t.step) and _close(s.exp_avg, t.exp_avg)
                                           and _close(s.exp_avg_sq, t.exp_avg_sq) for s, t in zip(sa, sb))
            and la is not None and _close(la, lb, rtol=1e-9))


def _first_epoch_difference(got, expected):
    """(what, got, expected) of the first item of an epoch's result that differs, or None."""
    (pa, sa, la), (pb, sb, lb) = got, expected
    for i, (p, q) in enumerate(zip(pa, pb)):
        if not _close(p, q):
            return f"params[{i}]", p, q
    for i, (s, t) in enumerate(zip(sa, sb)):
        for field in t._fields:
            if not _close(getattr(s, field), getattr(t, field)):
                return f"states[{i}].{field}", getattr(s, field), getattr(t, field)
    if la is None or not _close(la, lb, rtol=1e-9):
        return "mean_loss", la, lb
    return None


@check.exercise(points=3, mistakes=EPOCH_MISTAKES, reference=ref.train_epoch, seconds=30, hints=[
    "Loop over the mini-batches of optim_np.minibatches(len(x), batch_size, rng). For each: the "
    "loss and gradients on that batch, then one Adam step for every parameter array, each with "
    "its own state. The new parameters and states are the ones the next batch uses.",
    "Inside the loop: mlp_loss_and_grads on the batch's rows gives (loss, grads); pair each "
    "parameter with its gradient and its state and give each triple to optim_np.adam_step (with "
    "lr=lr). For the mean loss, keep a running total of loss times the batch's size.",
    "From the (new_p, new_s) pairs build two NEW lists and rebind params and states to them (do "
    "not assign into the lists you were given). After the loop return the two lists and "
    "total / len(x).",
])
def train_epoch(fn):
    """One epoch of mini-batch Adam on an MLP; returns (params, states, mean loss over examples)."""
    expect_defaults(fn, "train_epoch", lr=1e-3)
    code = getattr(fn, "__code__", None)
    if code is not None and "Optimizer" in _names_in(code):
        fail_with(EPOCH_MISTAKES, "Optimizer class used")
    for seed, batch_size, lr in [(31, 5, 1e-2), (32, 8, 3e-2)]:
        params, states, x, y = epoch_problem(seed)
        line = (f"from dlcourse.optim.checks import epoch_problem; params, states, x, y = epoch_problem({seed}); "
                f"train_epoch(params, states, x, y, {batch_size}, np.random.default_rng({seed}), lr={lr})")
        label = f"an MLP 6 → 5 → 3 on N = 23 examples, batch_size={batch_size}, lr={lr}"
        with trying("train_epoch", label=label, call_text=line) as tried:
            # the answer comes from the inputs as they are BEFORE the call
            expected = _epoch(params, states, x, y, batch_size, np.random.default_rng(seed), lr)
            originals, copies = list(params), [p.copy() for p in params]
            state_originals, state_copies = list(states), _copy_states(states)
            rng = np.random.default_rng(seed)
            try:
                out = call(fn, params, states, x, y, batch_size, rng, lr=lr)
            except CheckFailed as fail:
                if fail.mistake == "mutated input":  # call() saw an in-place change: say what changed
                    _explain_epoch_mutation(params, originals, copies, states, state_originals, state_copies)
                raise
            rng_used = rng.bit_generator.state != np.random.default_rng(seed).bit_generator.state
            got_params, got_states, got_loss = expect_tuple(out, 3, "(params, states, mean_loss)",
                                                            "train_epoch", types=(tuple,))
            expect(isinstance(got_params, (list, tuple)) and len(got_params) == len(params),
                   f"params should be a list of {len(params)} arrays, in the order of the input")
            expect(isinstance(got_states, (list, tuple)) and len(got_states) == len(params),
                   f"states should be a list of {len(params)} AdamStates, one per parameter")
            got_states = [_as_state(s, ref.AdamState, "train_epoch") for s in got_states]
            if got_loss is None:
                raise CheckFailed("mean_loss is None: return the epoch's mean loss as the third item")
            got = (list(got_params), got_states, got_loss)
            differs = _first_epoch_difference(got, expected)
            if differs is None:
                continue
            what, tried.got, tried.expected = differs  # show what the failing comparison is about
            tried.label = f"{label}; {what} shown"
            where = f"(batch_size={batch_size}, lr={lr})"
            diagnose(got, expected, EPOCH_MISTAKES, same=_same_epoch, suffix=where,
                     apply=lambda wrong: wrong([p.copy() for p in copies], _copy_states(state_copies), x, y,
                                               batch_size, np.random.default_rng(seed), lr=lr))
            if not rng_used:
                fail_with(EPOCH_MISTAKES, "rng ignored", where)
            for i, (g, e) in enumerate(zip(got_params, expected[0])):
                expect_close(g, e, f"params[{i}] after one epoch {where}")
            for i, (g, e) in enumerate(zip(got_states, expected[1])):
                expect(int(g.step) == e.step, f"states[{i}].step is {g.step} after the epoch, expected "
                                              f"{e.step} (one Adam step per batch)")
                expect_close(g.exp_avg, e.exp_avg, f"states[{i}].exp_avg after one epoch {where}")
                expect_close(g.exp_avg_sq, e.exp_avg_sq, f"states[{i}].exp_avg_sq after one epoch {where}")
            expect_close(got_loss, expected[2], f"mean_loss {where}", rtol=1e-9)
    return "one epoch of mini-batch Adam equals the reference on 2 problems, mean loss included"


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_lr_limit", answer=0.2, rtol=1e-6,
    explanation="a coordinate with curvature λ is multiplied by 1 − ηλ every step; it shrinks only while "
                "|1 − ηλ| < 1, i.e. η < 2/λ, and the steepest direction (λ = 10) sets the limit 2/10 = 0.2.",
    mistakes=[
        Mistake("1 / lambda_max", 0.1, "at η = 1/λ_max = 0.1 the steep coordinate reaches 0 in one step; "
                                       "larger rates still converge (with a zig-zag) until |1 − ηλ| = 1"),
        Mistake("2 / lambda_min", 2.0, "2/λ is set by the *steepest* direction, not the flattest: above "
                                       "2/10 the steep coordinate already grows"),
        Mistake("1 / lambda_min", 1.0, "the flat direction (λ = 1) is not the limit; the steep one "
                                       "(λ = 10) is: η < 2/10"),
    ])

check.question(
    "q_momentum_speedup", answer=10.0, rtol=1e-6,
    explanation="on a constant gradient g the buffer v = μv + g settles where v = μv + g, i.e. "
                "v = g / (1 − μ) = 10 g for μ = 0.9: steps ten times longer than plain SGD's.",
    mistakes=[
        Mistake("mu / (1 - mu)", 9.0, "the buffer includes this step's gradient too: v = g + μg + μ²g + ... "
                                      "= g / (1 − μ)"),
        Mistake("1 + mu", 1.9, "that is only the second step; the geometric series goes on: "
                               "g(1 + μ + μ² + ...) = g / (1 − μ)"),
        Mistake("mu", 0.9, "μ is the fraction of the buffer kept per step; the buffer itself grows to "
                           "g / (1 − μ)"),
    ])

check.question(
    "q_updates_per_epoch", answer=20, rtol=1e-9,
    explanation="ceil(1257 / 64) = 20: 19 full batches of 64 and one of 41; the last, partial batch "
                "is kept, so every example counts in every epoch.",
    mistakes=[
        Mistake("partial batch dropped", 19, "the 1257 − 19·64 = 41 examples left over form a 20th, "
                                            "smaller batch: it is not dropped"),
        Mistake("not rounded", 1257 / 64, "a number of updates is a whole number: round up, "
                                          "ceil(1257 / 64)"),
        Mistake("one per example", 1257, "that is pure SGD (batch size 1); with batches of 64 there are "
                                         "ceil(1257 / 64) updates"),
    ])

check.question(
    "q_adam_first_step", answer="b", choices=("a", "b", "c"),
    explanation="after the bias correction, m̂₁ = g and v̂₁ = g², so the first step is lr·g/|g| = lr "
                "per coordinate (eps aside), whatever the size of the gradient.",
    mistakes=[
        Mistake("proportional to g", "a", "that is SGD; Adam divides by sqrt(v̂) ≈ |g|, so the size of g "
                                          "cancels out"),
        Mistake("uncorrected", "c", "without the bias correction m₁ = 0.1g and sqrt(v₁) ≈ 0.032|g| give "
                                    "steps of about 3·lr; Adam corrects both, so its first step is lr"),
    ])
