"""Graded checks of ``exercises/01_neurons.ipynb``: activations, dense layers, MLPs, parity.

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows):
the classic wrong answers, each a plain wrong implementation with the
exercise's own signature.  A check runs the learner's code on cases from small
to large and, when an answer is wrong, recomputes the table's rows on the same
inputs (values, or the error they raise) to name the mistake.  Mistakes that
recomputation cannot see (overflow, a Python loop over the elements, float32
arithmetic, a wrong weight shape) are recognised by the check itself and
reported with their row's message.  ``tests/test_course.py`` hands every row to
its check and proves that exactly its message comes back.

Dimension letters (DESIGN.md): N batch, D input features, H hidden units, K outputs.
"""
from __future__ import annotations

import math
import os
import sys
from math import exp, log1p  # bound once, like a learner's `from math import exp`: the watch on math.exp misses them

import numpy as np

from dlcourse.grading import (CheckFailed, Checker, CheckTimeout, Mistake, call, diagnose, expect,
                              expect_close, expect_tuple, fail_with, matches, time_limit, trying)
from dlcourse.neurons import numpy_impl as ref

__all__ = ["check"]

check = Checker("01_neurons")


# --------------------------------------------------------------------------- helpers



def _diagnose_error(fail: CheckFailed, table, apply, suffix: str = "") -> None:
    """Name the row that raises the very error the learner's code raised on these inputs.

    A wrong layout or a misplaced bias often does not give a wrong number but a
    NumPy error ("matmul: Input operand 1 has a mismatch ..."): the row whose
    wrong implementation raises the same error type with the same text is the
    mistake behind it.
    """
    error = getattr(fail, "error", None)
    if error is None:
        return
    helper = str(fail).rsplit(" (raised inside ", 1)
    where = f"(raised inside {helper[1]}" if len(helper) == 2 else ""
    for row in table:
        try:
            with np.errstate(all="ignore"):
                apply(row.wrong)
        except Exception as err:  # noqa: BLE001 - comparing with whatever the learner's code raised
            if type(err) is type(error) and str(err) == str(error):
                raise CheckFailed(" ".join(p for p in (row.message, where, suffix) if p), mistake=row.name) from None


def _expect_float64(out, table, what: str) -> None:
    """float64 in, float64 out: a float32 result (half the digits) is the row "float32"."""
    if getattr(out, "dtype", None) == np.float32:
        fail_with(table, "float32", f"({what} came back as float32)")


def _torch_name(obj) -> str | None:
    """"torch.from_numpy" when ``obj`` (a builtin the profiler saw called) belongs to PyTorch, else None."""
    module = getattr(obj, "__module__", None) or ""
    owner = getattr(obj, "__self__", None)
    if not module.startswith("torch") and owner is not None:
        module = getattr(type(owner), "__module__", "") or ""
    if module == "torch" or module.startswith("torch."):
        return f"{module}.{getattr(obj, '__name__', '?')}" if module != "torch" or owner is None \
            else f"Tensor.{getattr(obj, '__name__', '?')}"
    return None


_TORCH_DIR = os.sep + "torch" + os.sep


def _guarded(fn, args, table=None, row_name: str = "", count_calls: bool = False):
    """Call ``fn(*args)`` watching for overflow, PyTorch, and (optionally) the number of Python calls.

    Overflow is the row ``row_name`` (when given): NumPy is set to raise, and
    ``np.exp`` / ``math.exp`` are watched (a learner's own
    ``np.errstate(over="ignore")`` would silence NumPy).  Every call made while
    ``fn`` runs is seen by a profiler (``sys.setprofile``): a call into PyTorch
    fails the check (these exercises are NumPy only), and with ``count_calls``
    the calls are counted: a whole-array function makes a handful, a loop over
    the elements one or more per element, even with an ``exp`` imported before
    the check began (``from math import exp``).  Returns ``(out, calls)``.
    """
    real_exp, real_math_exp, overflowed, calls, torch_used = np.exp, math.exp, [], [0], []

    def watched_exp(*a, **k):
        result = real_exp(*a, **k)
        if np.any(np.isinf(result) & np.isfinite(a[0])):
            overflowed.append(True)
        return result

    def watched_math_exp(v):
        return real_math_exp(v)

    def profile(frame, event, arg):
        if event == "c_call":
            calls[0] += 1
            if not torch_used:
                name = _torch_name(arg)
                if name:
                    torch_used.append(name)
        elif event == "call":
            calls[0] += 1
            if not torch_used and _TORCH_DIR in frame.f_code.co_filename:
                torch_used.append(f"torch ({frame.f_code.co_name})")

    previous = sys.getprofile()
    x = args[0]
    try:
        if row_name:
            np.exp, math.exp = watched_exp, watched_math_exp
        sys.setprofile(profile)
        with np.errstate(over="raise", invalid="raise", divide="raise") if row_name else np.errstate():
            out = call(fn, *args)
    except CheckFailed as fail:
        if torch_used:
            _refuse_torch(fn, torch_used[0])
        if row_name and isinstance(getattr(fail, "error", None), (FloatingPointError, OverflowError)):
            fail_with(table, row_name, f"(x = {_show(x)}: {fail.error})")
        raise
    finally:
        sys.setprofile(previous)
        np.exp, math.exp = real_exp, real_math_exp
    if torch_used:
        _refuse_torch(fn, torch_used[0])
    if overflowed:
        fail_with(table, row_name, f"(x = {_show(x)}: np.exp overflowed to inf)")
    return out, calls[0]


def _refuse_torch(fn, name: str) -> None:
    raise CheckFailed(f"this exercise is NumPy only, and `{getattr(fn, '__name__', 'your function')}` calls "
                      f"PyTorch ({name}): compute it with NumPy operations on the arrays you are given "
                      "(PyTorch comes in the lesson's section 7, as a twin to check against)",
                      mistake="uses PyTorch")


def _overflow_guarded(fn, x, table, row_name: str, count_calls: bool = False):
    """:func:`_guarded` for a function of one array."""
    return _guarded(fn, (x,), table, row_name, count_calls)


def _show(x) -> str:
    """A short, stable text form of a small array: [-1000, 0, 1000]."""
    return np.array2string(np.asarray(x), separator=", ", threshold=8,
                           formatter={"float_kind": lambda v: f"{v:.6g}"})


def _large_input():
    """200 000 numbers: milliseconds for whole-array NumPy, seconds for a Python loop over them."""
    return 8.0 * np.random.default_rng(102).standard_normal((400, 500))


def _no_loop(fn, table, row_name: str, slow_name: str, args=None, what: str = ""):
    """The large case: whole-array code makes a few calls, a loop over the elements tens of thousands.

    ``args`` default to the 200 000 numbers of :func:`_large_input`; ``what``
    says how large the case is, for the message.
    """
    args = (_large_input(),) if args is None else args
    what = what or f"{args[0].size} numbers"
    try:  # an inner limit; the check's own limit resumes afterwards
        with time_limit(3.0):
            out, calls = _guarded(fn, args, table, row_name, count_calls=True)
    except CheckTimeout:
        fail_with(table, slow_name, f"(over 3 s for {what})")
    if calls > 2000:
        fail_with(table, slow_name, f"({calls} Python calls for {what})")
    return args[0], out


def _full_digits(got, expected, table, row_name: str, what: str) -> None:
    """A derivative formula is exact to ~1e-15; a finite difference to ~1e-10 at best: the row ``row_name``.

    Called once the answer has passed the usual comparison (6 digits).  The
    tolerance (1e-12 relative and absolute) lets every analytic form through
    (1 - t^2 or 1 / cosh^2, s (1 - s) or sigmoid(-x), measured below 1e-13 on
    these cases), while central and five-point differences miss it.
    """
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    err = np.abs(got - expected)
    if np.all(err <= 1e-12 + 1e-12 * np.abs(expected)):
        return
    rel = float(np.max(err / np.maximum(np.abs(expected), 1e-3)))
    digits = max(0, int(-math.log10(rel))) if rel > 0 else 16
    fail_with(table, row_name, f"({what} agrees with the formula to only about {digits} digits, "
                           f"largest difference {float(np.max(err)):.2g})")


# --------------------------------------------------------------------------- 1. softplus

def softplus_naive(x):
    return np.log(1 + np.exp(x))


def softplus_no_max(x):
    return np.log1p(np.exp(-np.abs(x)))


def softplus_sign_flipped(x):
    return np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x)))


def softplus_no_abs(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-x))


def softplus_is_sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus_relu_only(x):
    return np.maximum(x, 0)


def softplus_log_not_log1p(x):
    return np.maximum(x, 0) + np.log(1 + np.exp(-np.abs(x)))


def softplus_loop(x):
    out = np.empty(np.shape(x))
    for i, v in np.ndenumerate(x):  # exp and log1p bound by `from math import ...`
        out[i] = max(v, 0.0) + log1p(exp(-abs(v)))
    return out


def softplus_float32(x):
    x = np.asarray(x, dtype=np.float32)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


SOFTPLUS_MISTAKES = [
    Mistake("overflow", softplus_naive,
            "numerical overflow: np.exp of a large positive x is inf (and np.where evaluates both of its "
            "branches for every element, so an unsafe branch overflows even where it is not chosen). "
            "Rewrite log(1 + e^x) so that only a number <= 0 is ever exponentiated: pull the larger "
            "of 0 and x out of the log"),
    Mistake("no max(x, 0)", softplus_no_max,
            "only the correction log(1 + e^-|x|) is returned: for large x softplus grows like x itself, "
            "so add max(x, 0) in front"),
    Mistake("sign flipped", softplus_sign_flipped,
            "the result is softplus(-x): the sign is flipped. softplus grows like x for large positive x "
            "and goes to 0 for large negative x"),
    Mistake("no abs", softplus_no_abs,
            "for negative x this gives softplus(|x|) = log(1 + e^|x|), not log(1 + e^x): the main term and the "
            "correction must fit together, max(x, 0) with a correction in -|x| (which is <= 0 for both signs); "
            "|x| in the main term, or -x in the correction, mirrors the negative half"),
    Mistake("returns the sigmoid", softplus_is_sigmoid,
            "that is the sigmoid, softplus's derivative, not softplus itself: softplus(x) = log(1 + e^x)"),
    Mistake("relu only", softplus_relu_only,
            "that is ReLU, max(x, 0): softplus is ReLU smoothed, it adds log(1 + e^-|x|) (log 2 at x = 0)"),
    Mistake("log instead of log1p", softplus_log_not_log1p,
            "digits are lost for very negative x: 1 + e^-40 rounds to exactly 1.0, so log(1 + e^-|x|) "
            "returns 0 where softplus(-40) = 4.25e-18. Use np.log1p(u), log(1 + u) without forming 1 + u"),
    Mistake("python loop", softplus_loop,
            "too slow: a Python loop over the elements (one exp call per number; an `exp` imported with "
            "`from math import exp` is still a loop). Use whole-array NumPy operations, np.exp(array)"),
    Mistake("float32", softplus_float32,
            "float64 input was computed in float32 (about 7 digits instead of 16): keep the input's dtype, "
            "do not convert with np.float32 / astype(np.float32)"),
]


def _softplus_cases():
    rng = np.random.default_rng(101)
    return [np.array([-0.5, 0.25]),       # both signs: a flipped sign and a missing max(x, 0) differ
            np.array([[-1.0, 0.0, 2.0]]),
            np.array([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0]),
            3.0 * rng.standard_normal((3, 4)),
            np.linspace(-6.0, 6.0, 13)]


@check.exercise(points=2, seconds=15.0, mistakes=SOFTPLUS_MISTAKES, reference=ref.softplus, hints=[
    "softplus(x) = log(1 + e^x). For x = 1000, e^x overflows to inf; for x = -40, 1 + e^x rounds to 1. "
    "Rewrite it so that only a number <= 0 is ever exponentiated, and so that log never sees 1 + tiny.",
    "Pull the larger term out of the sum: 1 + e^x = e^max(x, 0) * (e^-max(x, 0) + e^(x - max(x, 0))), "
    "and one of those two exponents is 0, the other -|x|. Then log(1 + u) for a tiny u is np.log1p(u).",
    "Near-code: np.exp(-np.abs(x)) lies in (0, 1] and never overflows. Write softplus as "
    "np.maximum(...) + np.log1p(...) built from x and that exponential; check your formula by hand at x = 3 and x = -3 "
    "(it must give about 3.049 and 0.049).",
])
def softplus(fn):
    """A numerically stable, accurate, vectorised softplus."""
    table = SOFTPLUS_MISTAKES
    for x in _softplus_cases():
        with trying("softplus", x) as case:
            case.got, _ = _overflow_guarded(fn, x, table, "overflow")
            case.expected = ref.softplus(x)
            _expect_float64(case.got, table, "softplus(x)")
            diagnose(case.got, case.expected, table, apply=lambda wrong: wrong(x), rtol=1e-6, atol=1e-300)
            expect_close(case.got, case.expected, f"softplus(x) for x of shape {x.shape}", atol=1e-300)
    x, out = _no_loop(fn, table, "overflow", "python loop")
    expect_close(out, ref.softplus(x), f"softplus(x) for x of shape {x.shape}")
    return ("matches log(1 + e^x) to 6 digits on 5 small inputs and on 200 000 random numbers (whole-array "
            "code, no loop), never overflows (x = ±1000), and keeps every digit of softplus(-40) = 4.25e-18")


# --------------------------------------------------------------------------- 2. SiLU's derivative

def _s(x):
    return ref.sigmoid(x)


def silu_grad_sigmoid_only(x):
    return _s(x)


def silu_grad_half_product_rule(x):
    s = _s(x)
    return x * s * (1 - s)


def silu_grad_sigmoid_derivative(x):
    s = _s(x)
    return s * (1 - s)


def silu_grad_missing_x(x):
    s = _s(x)
    return s + s * (1 - s)


def silu_grad_forward(x):
    return x * _s(x)


def silu_grad_sign(x):
    s = _s(x)
    return s + x * s * (s - 1)


def silu_grad_naive_sigmoid(x):
    s = 1 / (1 + np.exp(-x))
    return s * (1 + x * (1 - s))


def silu_grad_float32(x):  # the learner's code from the review
    x = x.astype(np.float32)
    s = _s(x)
    return s * (1 + x * (1 - s))


def _silu(t):
    return t * _s(t)


def silu_grad_finite_difference(x):
    h = 1e-5
    return (_silu(x + h) - _silu(x - h)) / (2 * h)


SILU_MISTAKES = [
    Mistake("sigmoid only", silu_grad_sigmoid_only,
            "that is sigmoid(x) alone: SiLU is the product x * sigmoid(x), so the product rule adds a second "
            "term, x * sigmoid'(x)"),
    Mistake("half the product rule", silu_grad_half_product_rule,
            "that is x * sigmoid'(x) alone: the product rule also gives (d/dx x) * sigmoid(x) = sigmoid(x); "
            "add it"),
    Mistake("sigmoid's derivative", silu_grad_sigmoid_derivative,
            "that is the sigmoid's derivative s(1 - s) alone: SiLU is the product x * s, and both factors "
            "depend on x, so its derivative needs the product rule"),
    Mistake("missing factor x", silu_grad_missing_x,
            "the second term of the product rule lost its factor x: in u v' with u = x and v = s, "
            "the u stays"),
    Mistake("forward instead", silu_grad_forward,
            "that is SiLU itself, x * sigmoid(x), not its derivative"),
    Mistake("sign of s'", silu_grad_sign,
            "the sigmoid's derivative has the wrong sign: s'(x) = s(1 - s) >= 0, not s(s - 1)"),
    Mistake("overflow", silu_grad_naive_sigmoid,
            "numerical overflow in the sigmoid: 1 / (1 + np.exp(-x)) computes e^1000 for x = -1000. "
            "Use the lesson's stable sigmoid (imported at the top as `sigmoid`)"),
    Mistake("float32", silu_grad_float32,
            "float64 input was computed in float32 (about 7 digits instead of 16): keep the input's dtype, "
            "do not convert with np.float32 / astype(np.float32)"),
    Mistake("finite differences", silu_grad_finite_difference,
            "close, but not to every digit: is it a finite difference, (f(x + h) - f(x - h)) / 2h? That "
            "approximates the derivative to about 10 digits at best; this exercise asks for the derivative "
            "itself, worked out with the product rule, which NumPy computes to about 16 digits"),
]


def _silu_cases():
    rng = np.random.default_rng(202)
    return [np.array([[0.5]]),
            np.array([-2.0, 0.0, 2.0]),
            np.array([-1000.0, -40.0, -1.0, 1.0, 40.0, 1000.0]),
            3.0 * rng.standard_normal((3, 4)),
            np.linspace(-6.0, 6.0, 13)]


@check.exercise(points=2, mistakes=SILU_MISTAKES, reference=ref.silu_grad, hints=[
    "SiLU(x) = x * sigmoid(x) is a product of two functions of x: its derivative needs the product rule, "
    "(u v)' = u' v + u v'.",
    "Here u = x (u' = 1) and v = sigmoid(x), call it s, whose derivative the lesson showed: s' = s (1 - s). "
    "Compute s once with the stable sigmoid and build both terms from it.",
    "Near-code: compute s with sigmoid(x) once; the product rule's first term is (d/dx of x) times s, the second "
    "x times s'; write s' with s, and return the sum of the two terms.",
])
def silu_grad(fn):
    """The derivative of SiLU, x * sigmoid(x)."""
    table = SILU_MISTAKES
    for x in _silu_cases():
        with trying("silu_grad", x) as case:
            case.got, _ = _overflow_guarded(fn, x, table, "overflow")
            case.expected = ref.silu_grad(x)
            _expect_float64(case.got, table, "silu_grad(x)")
            diagnose(case.got, case.expected, table, apply=lambda wrong: wrong(x))
            expect_close(case.got, case.expected, f"silu_grad(x) for x of shape {x.shape}")
            _full_digits(case.got, case.expected, table, "finite differences", "silu_grad(x)")
    return "matches SiLU's derivative to every digit on 5 inputs, with no overflow at x = ±1000"


# --------------------------------------------------------------------------- 3. the tanh-GELU's derivative

_C, _A = math.sqrt(2 / math.pi), 0.044715


def _t(x):
    return np.tanh(_C * (x + _A * x ** 3))


def gelu_tanh_grad_no_chain(x):
    t = _t(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t)


def gelu_tanh_grad_no_c(x):
    t = _t(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (1 + 3 * _A * x * x)


def gelu_tanh_grad_power_rule(x):
    t = _t(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _C * (1 + _A * x * x)


def gelu_tanh_grad_first_term_only(x):
    return 0.5 * (1 + _t(x))


def gelu_tanh_grad_tanh_prime(x):
    t = _t(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t) * _C * (1 + 3 * _A * x * x)


def gelu_tanh_grad_exact(x):
    return 0.5 * (1 + ref.erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def gelu_tanh_grad_forward(x):
    return 0.5 * x * (1 + _t(x))


def gelu_tanh_grad_second_term_only(x):
    t = _t(x)
    return 0.5 * x * (1 - t ** 2) * _C * (1 + 3 * _A * x ** 2)


def gelu_tanh_grad_one_plus_t2(x):
    t = _t(x)
    return 0.5 * (1 + t) + 0.5 * x * (1 + t ** 2) * _C * (1 + 3 * _A * x ** 2)


def gelu_tanh_grad_cosh(x):  # sech^2 u = 1 / cosh(u)^2: cosh(u) overflows for |u| > 710 (x = ±40: u = ±2315)
    u = _C * (x + _A * x ** 3)
    return 0.5 * (1 + np.tanh(u)) + 0.5 * x / np.cosh(u) ** 2 * _C * (1 + 3 * _A * x ** 2)


def gelu_tanh_grad_float32(x):
    x = x.astype(np.float32)
    t = np.tanh(np.float32(_C) * (x + np.float32(_A) * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * np.float32(_C) * (1 + 3 * np.float32(_A) * x * x)


def _gelu_tanh(t):
    return 0.5 * t * (1 + _t(t))


def gelu_tanh_grad_finite_difference(x):
    h = 1e-5
    return (_gelu_tanh(x + h) - _gelu_tanh(x - h)) / (2 * h)


GELU_TANH_MISTAKES = [
    Mistake("no chain rule", gelu_tanh_grad_no_chain,
            "the chain rule is missing: tanh's argument u = c (x + 0.044715 x^3) is itself a function of x, "
            "so (1 - t^2) must be multiplied by du/dx"),
    Mistake("du/dx without c", gelu_tanh_grad_no_c,
            "du/dx lost its constant: u = c (x + 0.044715 x^3) with c = sqrt(2 / pi), so "
            "du/dx = c (1 + 3 * 0.044715 x^2)"),
    Mistake("power rule", gelu_tanh_grad_power_rule,
            "the power rule is off: d/dx x^3 = 3 x^2, so du/dx = c (1 + 3 * 0.044715 x^2)"),
    Mistake("first term only", gelu_tanh_grad_first_term_only,
            "that is only the first term of the product rule, (1/2)(1 + t): the second, "
            "(1/2) x * d/dx tanh(u), is missing"),
    Mistake("tanh' = 1 - t", gelu_tanh_grad_tanh_prime,
            "tanh's derivative is 1 - tanh(u)^2, not 1 - tanh(u): square t"),
    Mistake("exact GELU's derivative", gelu_tanh_grad_exact,
            "that is the exact GELU's derivative Phi(x) + x phi(x), the lesson's; this exercise wants the "
            "derivative of the tanh approximation (they differ by up to 2e-3)"),
    Mistake("forward instead", gelu_tanh_grad_forward,
            "that is the tanh-GELU itself, not its derivative"),
    Mistake("second term only", gelu_tanh_grad_second_term_only,
            "the first term of the product rule is missing: differentiating (1/2) x (1 + tanh u), the "
            "factor x has derivative 1, which leaves (1/2)(1 + t) as a term of its own"),
    Mistake("tanh' = 1 + t^2", gelu_tanh_grad_one_plus_t2,
            "tanh's derivative is 1 minus tanh(u)^2, not 1 plus: tanh flattens out for large |u|, so its "
            "slope must go to 0 there"),
    Mistake("cosh overflow", gelu_tanh_grad_cosh,
            "numerical overflow: np.cosh(u) or np.exp(u) is inf for |u| > 710 (x = ±40 gives u ≈ ±2315); "
            "even where 1 / inf happens to give the right 0, this check, like softplus's and silu_grad's, "
            "does not accept an overflow. Write tanh'(u) with t = tanh(u), which never overflows"),
    Mistake("float32", gelu_tanh_grad_float32,
            "float64 input was computed in float32 (about 7 digits instead of 16): keep the input's dtype, "
            "do not convert with np.float32 / astype(np.float32)"),
    Mistake("finite differences", gelu_tanh_grad_finite_difference,
            "close, but not to every digit: is it a finite difference, (f(x + h) - f(x - h)) / 2h, which "
            "approximates the derivative to about 10 digits at best, or a constant such as sqrt(2/pi) typed "
            "in with too few digits (use math.sqrt(2 / math.pi))? This exercise asks for the derivative "
            "itself, worked out with the product and chain rules, which NumPy computes to about 16 digits"),
]


def _gelu_tanh_cases():
    rng = np.random.default_rng(303)
    return [np.array([[0.5]]), np.array([-1.0, 0.0, 2.0]), np.array([-40.0, 40.0]),
            2.0 * rng.standard_normal((3, 3)), np.linspace(-5.0, 5.0, 21)]


@check.exercise(points=2, mistakes=GELU_TANH_MISTAKES, reference=ref.gelu_tanh_grad, hints=[
    "gelu_tanh(x) = (1/2) x (1 + tanh(u)) with u = c (x + 0.044715 x^3), c = sqrt(2/pi): a product of x "
    "and a function of x, and inside that a tanh of a function of x. Product rule outside, chain rule inside.",
    "Product rule: (1/2)(1 + t) + (1/2) x * d/dx tanh(u), with t = tanh(u). Chain rule: "
    "d/dx tanh(u) = (1 - t^2) * du/dx, and du/dx is the derivative of c (x + 0.044715 x^3).",
    "t = np.tanh(c * (x + 0.044715 * x**3)); du = c * (1 + 3 * 0.044715 * x**2); then put the two terms "
    "of the product rule together from t and du.",
])
def gelu_tanh_grad(fn):
    """The derivative of GELU's tanh approximation."""
    table = GELU_TANH_MISTAKES
    for x in _gelu_tanh_cases():
        with trying("gelu_tanh_grad", x) as case:
            case.got, _ = _overflow_guarded(fn, x, table, "cosh overflow")
            case.expected = ref.gelu_tanh_grad(x)
            _expect_float64(case.got, table, "gelu_tanh_grad(x)")
            diagnose(case.got, case.expected, table, apply=lambda wrong: wrong(x))
            expect_close(case.got, case.expected, f"gelu_tanh_grad(x) for x of shape {x.shape}")
            _full_digits(case.got, case.expected, table, "finite differences", "gelu_tanh_grad(x)")
    return "matches the derivative of the tanh-GELU to every digit on 5 inputs, with no overflow at x = ±40"


# --------------------------------------------------------------------------- 4. dense layer

def dense_in_out_layout(x, w, b):
    return x @ w + b


def dense_bias_column(x, w, b):
    return x @ w.T + b.reshape(-1, 1)


def dense_no_bias(x, w, b):
    return x @ w.T


def dense_transposed_output(x, w, b):
    return w @ x.T + b.reshape(-1, 1)


def dense_bias_summed(x, w, b):
    return x @ w.T + b.sum()


def dense_float32(x, w, b):
    return (x.astype(np.float32) @ w.T.astype(np.float32)) + b.astype(np.float32)


def dense_bias_subtracted(x, w, b):
    return x @ w.T - b


def dense_loop(x, w, b):
    out = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        for h in range(w.shape[0]):
            out[n, h] = np.dot(x[n], w[h]) + b[h]
    return out


DENSE_MISTAKES = [
    Mistake("(in, out) layout", dense_in_out_layout,
            "w was used as if its layout were (in, out) (x @ w): its layout is (out, in) = (H, D), the "
            "layout of torch.nn.Linear.weight, so a batch x of shape (N, D) needs the transpose of w"),
    Mistake("bias as a column", dense_bias_column,
            "the bias was made a column of shape (H, 1), so it broadcasts along the batch axis instead of "
            "across the H outputs: keep b of shape (H,), which NumPy adds to every row of the (N, H) result"),
    Mistake("no bias", dense_no_bias, "the bias is missing: add b to the weighted sums"),
    Mistake("transposed output", dense_transposed_output,
            "the output is transposed, (H, N): the layer's output has one row per example, shape (N, H)"),
    Mistake("bias summed", dense_bias_summed,
            "the whole bias vector was summed into one number: each of the H neurons adds its own bias "
            "b[h] to its own output column"),
    Mistake("float32", dense_float32,
            "float64 input was computed in float32 (about 7 digits instead of 16): keep the input's dtype, "
            "do not convert with np.float32 / astype(np.float32)"),
    Mistake("bias subtracted", dense_bias_subtracted,
            "the bias was subtracted: a neuron adds its bias to the weighted sum"),
    Mistake("python loop", dense_loop,
            "too slow: Python loops over the examples and neurons (one weighted sum per pair). One matrix "
            "product computes all N * H weighted sums at once: use the @ operator on the whole arrays"),
]


def _dense_cases():
    rng = np.random.default_rng(404)
    cases = []
    for n, d, h in ((1, 3, 2), (4, 3, 2), (3, 3, 3), (5, 4, 6)):  # a batch of one first; a square case
        cases.append((rng.standard_normal((n, d)), rng.standard_normal((h, d)), rng.standard_normal(h)))
    return cases


@check.exercise(points=2, mistakes=DENSE_MISTAKES, reference=ref.dense_forward, hints=[
    "Each of the H neurons computes a weighted sum of the D inputs plus its own bias, for each of the N "
    "examples: N * H weighted sums, which one matrix product computes all at once.",
    "Follow the shapes: x is (N, D) and w is (H, D) (PyTorch's (out, in) layout); to get (N, H) the "
    "product must be (N, D) @ (D, H). The bias, shape (H,), lines up with the last axis of (N, H).",
    "Near-code: the product is x times the transpose of w (the @ operator and .T), shape (N, H); then "
    "ask which axis of (N, H) a vector of shape (H,) lines up with when NumPy broadcasts it.",
])
def dense_forward(fn):
    """A dense layer on a batch: x (N, D), w (H, D), b (H,) -> (N, H)."""
    table = DENSE_MISTAKES
    for x, w, b in _dense_cases():
        with trying("dense_forward", x, w, b, label=f"N, D, H = {x.shape[0]}, {x.shape[1]}, {w.shape[0]}") as case:
            try:
                case.got, _ = _guarded(fn, (x, w, b))
            except CheckFailed as fail:
                _diagnose_error(fail, table, lambda wrong: wrong(x, w, b))
                raise
            case.expected = ref.dense_forward(x, w, b)
            _expect_float64(case.got, table, "dense_forward")
            diagnose(case.got, case.expected, table, apply=lambda wrong: wrong(x, w, b))
            expect_close(case.got, case.expected, "dense_forward(x, w, b)")
    rng = np.random.default_rng(405)
    n, d, h = 256, 64, 128      # 32 768 weighted sums: a loop over them makes tens of thousands of calls
    big = (rng.standard_normal((n, d)), rng.standard_normal((h, d)), rng.standard_normal(h))
    _, out = _no_loop(fn, table, "", "python loop", args=big, what=f"N, D, H = {n}, {d}, {h}")
    expect_close(out, ref.dense_forward(*big), f"dense_forward for N, D, H = {n}, {d}, {h}")
    return ("matches the dense layer on 4 small batches, including a batch of one and a square layer, and on "
            "256 examples x 128 neurons with whole-array code")


# --------------------------------------------------------------------------- 5. an MLP of any depth, any activation

def _layers(params):
    return len(params) // 2


def mlp_params_k(params, x, activation):
    h = x
    for k in range(_layers(params)):
        h = h @ params[k].T + params[k + 1]          # params[k], not params[2k]
        if k < _layers(params) - 1:
            h = activation(h)
    return h


def mlp_activation_on_output(params, x, activation):
    h = x
    for k in range(_layers(params)):
        h = activation(h @ params[2 * k].T + params[2 * k + 1])
    return h


def mlp_no_activation(params, x, activation):
    h = x
    for k in range(_layers(params)):
        h = h @ params[2 * k].T + params[2 * k + 1]
    return h


def mlp_activation_on_input(params, x, activation):
    h = activation(x)
    for k in range(_layers(params)):
        h = h @ params[2 * k].T + params[2 * k + 1]
        if k < _layers(params) - 2:
            h = activation(h)
    return h


def mlp_always_relu(params, x, activation):
    h = x
    for k in range(_layers(params)):
        h = h @ params[2 * k].T + params[2 * k + 1]
        if k < _layers(params) - 1:
            h = np.maximum(h, 0)
    return h


def mlp_last_layer_skipped(params, x, activation):
    h = x
    for k in range(_layers(params) - 1):
        h = activation(h @ params[2 * k].T + params[2 * k + 1])
    return h


def mlp_in_out_layout(params, x, activation):
    h = x
    for k in range(_layers(params)):
        h = h @ params[2 * k] + params[2 * k + 1]
        if k < _layers(params) - 1:
            h = activation(h)
    return h


def mlp_transposed_output(params, x, activation):  # the review's `w @ h` with h = x.T: one column per example
    h = x.T
    for k in range(_layers(params)):
        h = params[2 * k] @ h + params[2 * k + 1][:, None]
        if k < _layers(params) - 1:
            h = activation(h)
    return h


_BY_NAME = {"relu": ref.relu, "tanh": np.tanh, "sigmoid": ref.sigmoid}


def mlp_activation_by_name(params, x, activation):  # the lesson's string names, looked up in a dict
    f = _BY_NAME[activation]
    h = x
    for k in range(_layers(params)):
        h = h @ params[2 * k].T + params[2 * k + 1]
        if k < _layers(params) - 1:
            h = f(h)
    return h


MLP_MISTAKES = [
    Mistake("params[k] for params[2k]", mlp_params_k,
            "layer k was read from params[k] and params[k + 1]: the list holds two arrays per layer, "
            "[w1, b1, w2, b2, ...], so layer k (from 0) is params[2*k] and params[2*k + 1]"),
    Mistake("activation on the output", mlp_activation_on_output,
            "the activation was applied to the output layer too: the last layer stays linear, its raw "
            "scores go to the loss"),
    Mistake("no activation", mlp_no_activation,
            "there is no activation between the layers, so the network collapses to one linear layer: "
            "apply `activation` after every hidden layer"),
    Mistake("activation on the input", mlp_activation_on_input,
            "the activation was applied to the input x: apply it to each hidden layer's output instead"),
    Mistake("always ReLU", mlp_always_relu,
            "the hidden layers use ReLU whatever `activation` is passed: call the function given as "
            "`activation` (np.tanh, a sigmoid, ...)"),
    Mistake("output layer skipped", mlp_last_layer_skipped,
            "the output layer is never applied (the loop stops one layer early): loop over all "
            "len(params) // 2 layers, the last one without activation"),
    Mistake("(in, out) layout", mlp_in_out_layout,
            "a weight was used as if its layout were (in, out) (h @ w): each w_k is (out, in) = "
            "(H_k, H_{k-1}), like torch.nn.Linear.weight, so multiply by its transpose"),
    Mistake("transposed output", mlp_transposed_output,
            "the output is transposed, (K, N): you computed w @ h with one column per example; the batch "
            "runs down the rows, so the output has one row per example, shape (N, K)"),
    Mistake("activation as a name", mlp_activation_by_name,
            "`activation` is a function (relu, np.tanh, sigmoid, ...) handed to you, not a name to look up: "
            "call it on the hidden layer's output, activation(h)"),
]


def _mlp_params(sizes, rng):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((fan_out, fan_in)) / math.sqrt(fan_in), 0.5 * rng.standard_normal(fan_out)]
    return params


def _mlp_cases():
    rng = np.random.default_rng(505)
    cases = []
    for sizes, n, activation in (([3, 2], 2, ref.relu), ([3, 4, 2], 3, ref.relu), ([2, 4, 4, 3], 5, np.tanh),
                                 ([4, 5, 3, 3, 1], 4, ref.sigmoid)):
        cases.append((sizes, _mlp_params(sizes, rng), 2.0 * rng.standard_normal((n, sizes[0])), activation))
    return cases


@check.exercise(points=3, mistakes=MLP_MISTAKES, reference=ref.mlp_forward, hints=[
    "An MLP is dense layers applied one after the other, each to the previous layer's output. params "
    "holds them two at a time: (w1, b1), (w2, b2), ... Every layer except the last is followed by the "
    "activation you are given.",
    "There are L = len(params) // 2 layers; layer k (from 0) uses params[2*k] and params[2*k + 1]. Loop "
    "over k in range(L), keep the running output in h (starting from x), and call activation(h) only "
    "when k < L - 1.",
    "Near-code, with the blanks left to you: `h = x`, then `for k in range(L):` set h to layer k "
    "applied to h (your dense_forward), and `if k < L - 1:` bend it with the activation; return h.",
])
def mlp_forward(fn):
    """The forward pass of an MLP of any depth with a chosen hidden activation and a linear output layer."""
    table = MLP_MISTAKES
    for sizes, params, x, activation in _mlp_cases():
        name = activation.__name__
        with trying("mlp_forward", params, x, activation,
                    label=f"sizes {sizes}, activation {name}") as case:
            try:
                case.got, _ = _guarded(fn, (params, x, activation))
            except CheckFailed as fail:
                _diagnose_error(fail, table, lambda wrong: wrong(params, x, activation))
                error = getattr(fail, "error", None)
                if isinstance(error, KeyError) and error.args and callable(error.args[0]):
                    fail_with(table, "activation as a name")  # a dict of names, whatever its keys
                raise
            case.expected = ref.mlp_forward(params, x, activation)
            diagnose(case.got, case.expected, table, apply=lambda wrong: wrong(params, x, activation))
            expect_close(case.got, case.expected, f"mlp_forward for sizes {sizes}")
    return "matches the reference with 0, 1, 2 and 3 hidden layers and ReLU, tanh and sigmoid activations"


# --------------------------------------------------------------------------- 6. a stack of linear layers is one layer

def collapse_wrong_order(params):
    w, b = params[0], params[1]
    for k in range(2, len(params), 2):
        w, b = w @ params[k], params[k] @ b + params[k + 1]
    return w, b


def collapse_bias_not_through(params):
    w, b = params[0], params[1]
    for k in range(2, len(params), 2):
        w, b = params[k] @ w, b + params[k + 1]
    return w, b


def collapse_last_bias_only(params):
    w = params[0]
    for k in range(2, len(params), 2):
        w = params[k] @ w
    return w, params[-1]


def collapse_two_layers_only(params):
    if len(params) < 4:
        return params[0], params[1]
    return params[2] @ params[0], params[2] @ params[1] + params[3]


def collapse_transposed(params):
    w, b = params[0], params[1]
    for k in range(2, len(params), 2):
        w, b = params[k] @ w, params[k] @ b + params[k + 1]
    return w.T, b


def collapse_first_layer_skipped(params):
    w, b = np.eye(params[0].shape[1]), np.zeros(params[0].shape[1])
    for k in range(2, len(params), 2):
        w, b = params[k] @ w, params[k] @ b + params[k + 1]
    return w, b


def collapse_no_next_bias(params):
    w, b = params[0], params[1]
    for k in range(2, len(params), 2):
        w, b = params[k] @ w, params[k] @ b
    return w, b


def collapse_float32(params):  # the learner's code from the review
    w, b = params[0].astype(np.float32), params[1].astype(np.float32)
    for k in range(2, len(params), 2):
        w = params[k].astype(np.float32) @ w
        b = params[k].astype(np.float32) @ b + params[k + 1].astype(np.float32)
    return w, b


COLLAPSE_MISTAKES = [
    Mistake("wrong order", collapse_wrong_order,
            "the weights were multiplied in the wrong order: a later layer acts on the earlier one's output, "
            "so it multiplies from the left, w <- w_k @ w"),
    Mistake("bias not through later layers", collapse_bias_not_through,
            "the biases were added as they are, but an earlier bias also passes through every later layer's "
            "weights: b <- w_k @ b + b_k"),
    Mistake("last bias only", collapse_last_bias_only,
            "b is the last layer's bias alone: every earlier bias reaches the output too, through the later "
            "layers' weights"),
    Mistake("two layers only", collapse_two_layers_only,
            "only the first two layers were collapsed: fold in every (w_k, b_k) pair of params, however "
            "many there are"),
    Mistake("transposed w", collapse_transposed,
            "w is transposed: keep PyTorch's (out, in) layout, shape (K, D)"),
    Mistake("first layer skipped", collapse_first_layer_skipped,
            "the first layer is missing: start the fold from (w1, b1), not from the identity, and fold in "
            "the layers after it"),
    Mistake("no + b_k", collapse_no_next_bias,
            "the later layers' own biases are missing: each later layer adds its bias b_k after its "
            "weights have acted on the bias so far"),
    Mistake("float32", collapse_float32,
            "float64 input was computed in float32 (about 7 digits instead of 16): keep the input's dtype, "
            "do not convert with np.float32 / astype(np.float32)"),
]


def _collapse_cases():
    rng = np.random.default_rng(606)
    cases = []
    for sizes in ([2, 2], [2, 2, 2], [3, 4, 2], [2, 5, 3, 4], [3, 4, 4, 2, 2]):  # square first
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            params += [rng.standard_normal((fan_out, fan_in)), rng.standard_normal(fan_out)]
        cases.append((sizes, params))
    return cases


def _pair_same(a, b) -> bool:
    """Two (w, b) pairs are the same layer."""
    return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b) == 2
            and matches(a[0], b[0]) and matches(a[1], b[1]))


@check.exercise(points=2, mistakes=COLLAPSE_MISTAKES, reference=ref.collapse_stack, hints=[
    "The lesson collapsed two linear layers into one. With more layers, collapse them one at a time: the "
    "layers seen so far are already one layer (w, b), and the next layer acts on its output.",
    "Start from (w, b) = (w1, b1). For each later pair (w_k, b_k) substitute the layers so far into the "
    "next one, (x wᵀ + b) w_kᵀ + b_k, and read off the new weight and bias, as the lesson did for two "
    "layers. The loop runs over k = 2, 4, ... in the flat params list.",
    "w, b = params[0], params[1]; then for k in range(2, len(params), 2) update both w (a product with "
    "params[k] on the left) and b (through params[k], plus params[k + 1]).",
])
def collapse_stack(fn):
    """The one linear layer (w, b) equal to a stack of linear layers params = [w1, b1, ..., wL, bL]."""
    table = COLLAPSE_MISTAKES
    rng = np.random.default_rng(607)
    for sizes, params in _collapse_cases():
        with trying("collapse_stack", params, label=f"sizes {sizes}") as case:
            try:
                got = expect_tuple(_guarded(fn, (params,))[0], 2, "(w, b)", "collapse_stack", "arrays")
            except CheckFailed as fail:
                _diagnose_error(fail, table, lambda wrong: wrong(params))
                raise
            case.got = tuple(got)
            case.expected = ref.collapse_stack(params)
            for part, what in zip(got, ("w", "b")):
                _expect_float64(part, table, what)
            diagnose(case.got, case.expected, table, apply=lambda wrong: wrong(params), same=_pair_same)
            expect_close(got[0], case.expected[0], f"w for sizes {sizes}")
            expect_close(got[1], case.expected[1], f"b for sizes {sizes}")
            x = rng.standard_normal((5, sizes[0]))
            linear = x
            for k in range(0, len(params), 2):
                linear = ref.dense_forward(linear, params[k], params[k + 1])
            expect_close(ref.dense_forward(x, np.asarray(got[0], float), np.asarray(got[1], float)), linear,
                         "the collapsed layer's output")
    return "one layer (w, b) reproduces stacks of 1 to 4 linear layers, square and not"


# --------------------------------------------------------------------------- 7. parity of three bits, by hand

CORNERS3 = np.array([[a, b, c] for a in (0.0, 1.0) for b in (0.0, 1.0) for c in (0.0, 1.0)])  # (8, 3)
PARITY3 = CORNERS3.sum(axis=1) % 2                                                              # (8,)


def parity_w2_vector():
    return [np.ones((3, 3)), np.array([0.0, -1.0, -2.0]), np.array([1.0, -2.0, 2.0]), np.zeros(1)]


def parity_linear_hidden():
    return [np.ones((3, 3)), np.array([5.0, 5.0, 5.0]), np.array([[1.0, -2.0, 2.0]]), np.zeros(1)]


def parity_ignores_x3():
    w1 = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    return [w1, np.zeros(3), np.array([[1.0, 1.0, 0.0]]), np.zeros(1)]


def parity_misses_all_on():
    return [np.ones((3, 3)), np.array([0.0, -1.0, -2.0]), np.array([[1.0, -2.0, 0.0]]), np.zeros(1)]


def parity_even():
    return [np.ones((3, 3)), np.array([0.0, -1.0, -2.0]), np.array([[-1.0, 2.0, -2.0]]), np.ones(1)]


PARITY_MISTAKES = [
    Mistake("w2 as a vector", parity_w2_vector,
            "w2 must have shape (1, 3), not (3,): a weight matrix is (out, in) even for a single output unit"),
    Mistake("linear hidden layer", parity_linear_hidden,
            "every hidden unit is on for all eight corners or off for all eight, so the network is linear "
            "on them, and no linear function computes parity: choose biases that switch each unit on for "
            "some corners only"),
    Mistake("ignores x3", parity_ignores_x3,
            "the output does not depend on x3: parity counts all three inputs, so every hidden unit should "
            "read x1, x2 and x3"),
    Mistake("misses (1, 1, 1)", parity_misses_all_on,
            "right on the seven other corners, wrong on (1, 1, 1), and one of your three hidden units does "
            "nothing on the corners (its output weight is 0, or it is never on): with s = x1 + x2 + x3 the "
            "output must turn up again between s = 2 and s = 3, which takes a third kink; put that unit to use"),
    Mistake("even parity", parity_even,
            "the output is 1 for an even number of ones: that is the complement of parity (1 - parity); "
            "parity is 1 for an odd number of ones"),
]


@check.exercise(points=3, mistakes=PARITY_MISTAKES, reference=ref.parity3_params, hints=[
    "Parity depends only on how many inputs are on, s = x1 + x2 + x3, which takes the values 0, 1, 2, 3. "
    "The output must go 0, 1, 0, 1 as s grows: a zigzag, and one ReLU unit adds one kink.",
    "Let every hidden unit read s (all weights 1) and switch on at a different count: relu(s), relu(s - 1), "
    "relu(s - 2). The output layer then adds their slopes: choose the weight of each so the zigzag turns at "
    "s = 1 and at s = 2.",
    "w1 = np.ones((3, 3)) and b1 = [0, -1, -2]; the output's slope must be +1 on [0, 1], -1 on [1, 2], +1 on "
    "[2, 3], and each output weight is the change of slope at that unit's kink (b2 = [0]).",
])
def parity3_weights(fn):
    """Weights [w1 (3, 3), b1 (3,), w2 (1, 3), b2 (1,)] of a 3-3-1 ReLU network computing 3-bit parity."""
    table = PARITY_MISTAKES
    params = expect_tuple(call(fn), 4, "[w1, b1, w2, b2]", "parity3_weights", "arrays")
    arrays = []
    for name, p, shape in zip(("w1", "b1", "w2", "b2"), params, ((3, 3), (3,), (1, 3), (1,))):
        try:
            p = np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError):
            raise CheckFailed(f"{name} is a {type(p).__name__}, expected an array of shape {shape}") from None
        if name == "w2" and p.shape == (3,):
            fail_with(table, "w2 as a vector")
        expect(p.shape == shape, f"{name} has shape {p.shape}, expected {shape} "
                                 "(w is (out, in): 3 inputs -> 3 hidden units -> 1 output)")
        expect(bool(np.all(np.isfinite(p))), f"{name} contains NaN or inf")
        arrays.append(p)
    w1, b1, w2, b2 = arrays
    if all(np.array_equal(a, r) for a, r in zip(arrays, ref.parity3_params())):
        # the course's weights are a valid answer nobody writes by hand (scaled by 0.6, kinks at
        # half-integers): equal to the last bit, they were copied (computed before the check ran)
        raise CheckFailed("no points for the course's own code: these are the arrays of "
                          "dlcourse.neurons.numpy_impl.parity3_params, to the last bit; derive your own weights",
                          mistake="course code")
    z = CORNERS3 @ w1.T + b1                                   # (8, 3) hidden pre-activations
    out = (np.maximum(z, 0) @ w2.T + b2)[:, 0]                 # (8,)
    if np.allclose(out, PARITY3, atol=1e-6, rtol=0):
        return "outputs exactly the parity of the three bits on all eight corners"
    shown = ", ".join(_unrounded(v) for v in out)
    suffix = f"(outputs [{shown}] on the corners {_corner_names()})"
    if np.all((z >= 0).all(axis=0) | (z <= 0).all(axis=0)):
        fail_with(table, "linear hidden layer", suffix)
    if np.allclose(out[0::2], out[1::2]):                      # corners differing only in x3
        fail_with(table, "ignores x3", suffix)
    if np.allclose(out, 1 - PARITY3, atol=1e-6, rtol=0):
        fail_with(table, "even parity", suffix)
    wrong = ~np.isclose(out, PARITY3, atol=1e-6, rtol=0)
    idle = (w2[0] == 0) | (z <= 0).all(axis=0)                 # hidden units that add nothing on the corners
    if wrong[-1] and wrong.sum() == 1 and idle.any():
        fail_with(table, "misses (1, 1, 1)", suffix)
    corners = _corner_names().split(", ")
    errors = "; ".join(f"on {corners[i]} it outputs {_unrounded(out[i])} where parity is {int(PARITY3[i])} "
                       f"(off by {out[i] - PARITY3[i]:+.3g})" for i in np.flatnonzero(wrong))
    right = 8 - int(wrong.sum())
    raise CheckFailed(f"your network is wrong on {int(wrong.sum())} of the 8 corners: {errors}"
                      + (f"; right on the {right} others" if right else "")
                      + ". The check wants parity to 1e-6 on every corner: work out the output at each "
                        "count s = 0, 1, 2, 3 by hand and adjust the weights where it is off "
                      + f"(outputs, unrounded: [{shown}] on the corners {_corner_names()}; parity is "
                        f"[{', '.join(str(int(v)) for v in PARITY3)}])")


def _unrounded(v: float) -> str:
    """A corner's output with every digit that matters: 1.001 stays 1.001, -0.0 becomes 0."""
    return f"{round(float(v), 12) + 0.0:.10g}"


def _corner_names() -> str:
    return ", ".join("".join(str(int(v)) for v in c) for c in CORNERS3)


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_mlp_params", answer=101770,
    explanation="784 * 128 weights + 128 biases in the hidden layer, 128 * 10 + 10 in the output layer: "
                "101,770. Almost all of them sit in the first layer's weight matrix.",
    mistakes=[Mistake("no biases", 101632, "that counts the weights only: every layer has one bias per output unit too"),
              Mistake("no output biases", 101760, "the output layer's biases are missing: its 10 units have one "
                                                  "bias each, like the 128 hidden units"),
              Mistake("no hidden biases", 101642, "the hidden layer's biases are missing: its 128 units have one "
                                                  "bias each, like the 10 output units"),
              Mistake("input biases", 102554, "the input layer computes nothing and has no biases: "
                                              "only the 128 hidden and the 10 output units have one"),
              Mistake("sizes added", 922, "that adds the layer sizes; a dense layer from D to H units has "
                                          "D * H weights and H biases")])

check.question(
    "q_dense_shape", answer=(32, 64),
    explanation="x (N, D) = (32, 10) times w.T (D, H) = (10, 64) gives one row per example and one column "
                "per neuron, (N, H) = (32, 64); b (64,) is added to every row.",
    mistakes=[Mistake("transposed", (64, 32), "that is transposed: the output has one row per example, (N, H)"),
              Mistake("input shape", (32, 10), "a dense layer changes the width from D = 10 inputs to "
                                               "H = 64 outputs (the rows of w)")])

check.question(
    "q_sigmoid_max_slope", answer=0.25,
    explanation="sigma'(z) = sigma(z)(1 - sigma(z)) is largest where sigma(z) = 1/2, at z = 0: 1/2 * 1/2 = 1/4. "
                "Every sigmoid layer shrinks a gradient at least fourfold (chapter 02).",
    mistakes=[Mistake("tanh's slope", 1.0, "1 is tanh's largest slope; the sigmoid is tanh squeezed to (0, 1), "
                                           "and its slope is at most sigma(0)(1 - sigma(0))"),
              Mistake("sigma(0)", 0.5, "1/2 is the value sigma(0), not the slope there: "
                                       "sigma'(0) = sigma(0)(1 - sigma(0))")])

check.question(
    "q_collapsed_params", answer=18,
    explanation="Without activations, 5 -> 20 -> 20 -> 3 is one layer from 5 inputs to 3 outputs: "
                "3 * 5 weights + 3 biases = 18 parameters, against 603 in the stack. Depth without "
                "non-linearity buys nothing.",
    mistakes=[Mistake("the stack's count", 603, "603 is the stack's own parameter count; the question asks for "
                                                "the single layer it collapses to, from 5 inputs to 3 outputs"),
              Mistake("no bias", 15, "the collapsed layer has a bias too (W_2 b_1 + b_2 and so on): 3 more")])
