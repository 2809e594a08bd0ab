"""Graded checks of ``exercises/01_neurons.ipynb``: neurons, activations, dense layers, XOR.

Each check runs the learner's function on several inputs (edge cases included),
compares with ``numpy_impl``, and when the answer is wrong tries to recognise
the classic mistake behind it (overflow, transposed weights, a forgotten or
misplaced bias, the derivative of the sigmoid written as s, an activation on the
output layer, ...) so the message says what to fix, not only that it is wrong.
"""
from __future__ import annotations

import math

import numpy as np

from dlcourse.grading import CheckFailed, Checker, call, diagnose, expect, expect_close, expect_tuple
from dlcourse.grading import CheckTimeout, matches as _close, time_limit
from dlcourse.neurons import numpy_impl as ref

__all__ = ["check"]

check = Checker("01_neurons")

XOR_INPUTS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_TARGETS = np.array([0.0, 1.0, 1.0, 0.0])


# --------------------------------------------------------------------------- helpers

_PER_ELEMENT = ("too slow for a large input: exp was called once per element ({count} calls for "
                "{size} numbers), so this is a Python loop over the elements. Use whole-array NumPy "
                "operations: np.exp(array) computes every element in one call")


def _call_without_overflow(fn, *args, max_exp_calls=None):
    """Call ``fn`` with NumPy set to raise on overflow, so that inf/NaN-making code is caught.

    A learner's own ``np.errstate(over="ignore")`` would silence that, so ``np.exp``
    is also watched during the call: an inf from a finite input counts as overflow.
    The calls of ``np.exp`` and ``math.exp`` are counted too: more than
    ``max_exp_calls`` means a Python loop over the elements, stopped at once.
    """
    real_exp, real_math_exp, overflowed, calls = np.exp, math.exp, [], [0]
    size = np.size(args[0])

    def count():
        calls[0] += 1
        if max_exp_calls is not None and calls[0] > max_exp_calls:
            raise CheckFailed(_PER_ELEMENT.format(count=f"more than {max_exp_calls}", size=size))

    def watched_exp(*a, **k):
        count()
        result = real_exp(*a, **k)
        if np.any(np.isinf(result) & np.isfinite(a[0])):
            overflowed.append(True)
        return result

    def watched_math_exp(v):
        count()
        return real_math_exp(v)
    try:
        np.exp, math.exp = watched_exp, watched_math_exp
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            out = call(fn, *args)
        if overflowed:
            raise CheckFailed("FloatingPointError: np.exp overflowed to inf")
        if max_exp_calls is not None and calls[0] > max_exp_calls:  # the learner swallowed our error
            raise CheckFailed(_PER_ELEMENT.format(count=calls[0], size=size))
        return out
    except CheckFailed as fail:
        text = str(fail)
        if "FloatingPointError" in text or "OverflowError" in text:
            raise CheckFailed(f"numerical overflow for x = {_show(args[0])} ({text.split(': ', 1)[-1]}): "
                              "exp of a large positive number is inf. Only ever exponentiate "
                              "-|x|, which is <= 0 (and np.where evaluates both of its branches "
                              "for every element, so compute e = np.exp(-np.abs(x)) first)") from None
        raise
    finally:
        np.exp, math.exp = real_exp, real_math_exp


def _show(x: np.ndarray) -> str:
    """A short, stable text form of a small array: [-1000, 0, 1000]."""
    return np.array2string(np.asarray(x), separator=", ", threshold=8,
                           formatter={"float_kind": lambda v: f"{v:.6g}"})


def _matmul_hint(fail: CheckFailed, w_shape: tuple) -> CheckFailed:
    """Add the (out, in) layout reminder to a shape error raised inside the learner's code."""
    text = str(fail)
    if any(word in text for word in ("matmul", "aligned", "mismatch", "broadcast", "shapes")):
        return CheckFailed(f"{text}. Remember: w has shape (out, in) = {w_shape}, the layout of "
                           "torch.nn.Linear.weight, so a batch x of shape (N, in) needs x @ w.T")
    return fail


# --------------------------------------------------------------------------- 1. sigmoid

def _sigmoid_cases():
    rng = np.random.default_rng(101)
    return [np.linspace(-6.0, 6.0, 13),
            3.0 * rng.standard_normal((3, 4)),
            np.array([-1000.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1000.0]),
            np.array([[0.25]])]


def _large_input():
    """200 000 numbers: quick for whole-array NumPy, slow for a Python loop over them."""
    return 8.0 * np.random.default_rng(102).standard_normal((400, 500))


@check.exercise(points=2, seconds=10.0, hints=[
    "sigmoid(x) = 1 / (1 + exp(-x)). For x = -1000, exp(-x) = exp(1000) overflows to inf. "
    "Find a form that only ever exponentiates a number <= 0.",
    "Multiply the top and bottom of 1 / (1 + exp(-x)) by exp(x): the same function is "
    "exp(x) / (1 + exp(x)), and that form is safe exactly where the first one is not (x < 0). "
    "Both forms can be written with e = np.exp(-np.abs(x)), which is always in (0, 1].",
    "e = np.exp(-np.abs(x)); return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).",
])
def sigmoid(fn):
    """A numerically stable, vectorised sigmoid."""
    for x in _sigmoid_cases():
        out = _call_without_overflow(fn, x)
        expected = ref.sigmoid(x)
        what = f"sigmoid(x) for x of shape {x.shape}"
        diagnose(out, expected, [
            (lambda: 1 / (1 + np.exp(x)), f"{what} has the sign flipped: sigmoid(x) = 1 / (1 + exp(-x)), "
                                          "which goes to 1 as x grows"),
            (lambda: np.tanh(x), f"{what} returns tanh(x); the sigmoid is 1 / (1 + exp(-x)), "
                                 "with values in (0, 1)"),
            (lambda: ref.sigmoid_grad(x), f"{what} returns the derivative s(1 - s), not s itself"),
        ])
        expect_close(out, expected, what)
    x = _large_input()
    try:  # an inner limit; the check's own 10 s limit resumes afterwards
        with time_limit(2.0):
            out = _call_without_overflow(fn, x, max_exp_calls=100)
    except CheckTimeout:
        raise CheckFailed(f"too slow: sigmoid of {x.size} numbers took over 2 s (a whole-array version "
                          "takes milliseconds). Avoid Python loops over the elements: use whole-array "
                          "NumPy operations") from None
    expect_close(out, ref.sigmoid(x), f"sigmoid(x) for x of shape {x.shape}")
    return ("matches the reference on 5 inputs (one of 200 000 numbers) and never overflows, "
            "even for x = ±1000")


# --------------------------------------------------------------------------- 2. activation derivatives

def _grad_cases():
    rng = np.random.default_rng(202)
    return [np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]),
            3.0 * rng.standard_normal((2, 5)),
            np.array([-1000.0, -40.0, 40.0, 1000.0])]


@check.exercise(points=2, hints=[
    "A derivative is a slope. ReLU is two straight pieces, so its slope is a step. The sigmoid and tanh "
    "have derivatives that are neatest written in terms of the function's own output, which also "
    "keeps them stable for x = ±1000.",
    "With s = sigmoid(x), the sigmoid's derivative is s * (1 - s); with t = np.tanh(x), tanh's is "
    "1 - t**2. ReLU's slope is 1 where x > 0 and 0 elsewhere (0 at exactly x = 0): a boolean mask.",
    "d_relu = (x > 0).astype(float); s = sigmoid(x); d_sigmoid = s * (1 - s); t = np.tanh(x); "
    "d_tanh = 1 - t**2; return d_relu, d_sigmoid, d_tanh.",
])
def activation_grads(fn):
    """The derivatives of ReLU, sigmoid and tanh, elementwise, as a tuple."""
    for x in _grad_cases():
        got = expect_tuple(call(fn, x), 3, "(d_relu, d_sigmoid, d_tanh)", "activation_grads", "arrays")
        d_relu, d_sigmoid, d_tanh = got
        expected = ref.relu_grad(x), ref.sigmoid_grad(x), ref.tanh_grad(x)
        if (_close(d_sigmoid, expected[2]) and _close(d_tanh, expected[1])
                and not _close(expected[1], expected[2])):
            raise CheckFailed("d_sigmoid and d_tanh are swapped: return them in the order "
                              "(d_relu, d_sigmoid, d_tanh)")
        s, t = ref.sigmoid(x), np.tanh(x)
        where = f"for x of shape {x.shape}"
        diagnose(d_relu, expected[0], [
            ((x >= 0).astype(float), f"d_relu {where} is 1 at x = 0; use slope 0 there (x > 0, not x >= 0), "
                                     "the convention PyTorch uses"),
            (ref.relu(x), f"d_relu {where} is relu(x) itself; the derivative is the slope: 1 where x > 0, else 0"),
        ])
        expect_close(d_relu, expected[0], f"d_relu {where}")
        diagnose(d_sigmoid, expected[1], [
            (s, f"d_sigmoid {where} is the sigmoid s itself; its derivative is s * (1 - s)"),
            (lambda: x * (1 - x), f"d_sigmoid {where} is x * (1 - x); the formula s * (1 - s) needs "
                                  "s = sigmoid(x), not x"),
            (1 - s, f"d_sigmoid {where} is 1 - s; the derivative is s * (1 - s)"),
        ])
        expect_close(d_sigmoid, expected[1], f"d_sigmoid {where}")
        diagnose(d_tanh, expected[2], [
            (lambda: 1 - x ** 2, f"d_tanh {where} is 1 - x**2; the derivative is 1 - tanh(x)**2"),
            (t, f"d_tanh {where} is tanh(x) itself; its derivative is 1 - tanh(x)**2"),
            (1 - t, f"d_tanh {where} is 1 - tanh(x): the tanh must be squared, 1 - tanh(x)**2"),
        ])
        expect_close(d_tanh, expected[2], f"d_tanh {where}")
    return "all three derivatives match on 3 inputs, including x = 0 and x = ±1000"


# --------------------------------------------------------------------------- 3. GELU derivative

def _gelu_cases():
    rng = np.random.default_rng(303)
    return [np.linspace(-5.0, 5.0, 21), 2.0 * rng.standard_normal((3, 3)), np.array([-40.0, 40.0])]


@check.exercise(points=2, hints=[
    "GELU(x) = x * Phi(x) is a product of two functions of x, so its derivative needs the product "
    "rule: (u v)' = u' v + u v'.",
    "Here u = x (u' = 1) and v = Phi(x), whose derivative is the standard normal density "
    "phi(x) = exp(-x**2 / 2) / sqrt(2 pi). So the derivative is Phi(x) + x phi(x). Compute "
    "Phi(x) = 0.5 * (1 + erf(x / sqrt(2))) with the erf imported at the top.",
    "Phi = 0.5 * (1 + erf(x / math.sqrt(2)));  phi = np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi);  "
    "return Phi + x * phi.",
])
def gelu_grad(fn):
    """The derivative of the exact GELU, x * Phi(x)."""
    for x in _gelu_cases():
        out = call(fn, x)
        expected = ref.gelu_grad(x)
        where = f"gelu_grad(x) for x of shape {x.shape}"
        cdf = 0.5 * (1 + ref.erf(x / math.sqrt(2)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        diagnose(out, expected, [
            (cdf, f"{where} is Phi(x) alone: by the product rule, d/dx [x Phi(x)] = Phi(x) + x phi(x)"),
            (x * pdf, f"{where} is x phi(x) alone: the product rule adds Phi(x), d/dx [x Phi(x)] = Phi(x) + x phi(x)"),
            (pdf, f"{where} is phi(x) alone: that is the density, the derivative of Phi only; GELU is the "
                  "product x Phi(x), so by the product rule its derivative is Phi(x) + x phi(x)"),
            (cdf + pdf, f"{where} is Phi(x) + phi(x): the factor x in x phi(x) is missing (the product "
                        "rule gives Phi(x) + x phi(x))"),
            (cdf + x * np.exp(-0.5 * x * x), f"{where} forgot the normal density's factor 1/sqrt(2 pi): "
                                             "phi(x) = exp(-x**2/2) / sqrt(2 pi)"),
            (lambda: 0.5 * (1 + ref.erf(x)) + x * pdf, f"{where} uses erf(x); the normal CDF is "
                                                       "Phi(x) = (1 + erf(x / sqrt(2))) / 2"),
            (lambda: ref.gelu_tanh_grad(x), f"{where} is the derivative of the tanh approximation; "
                                            "this exercise wants the exact GELU, x * Phi(x)"),
            (lambda: ref.gelu(x), f"{where} returns GELU itself, not its derivative"),
        ])
        expect_close(out, expected, where, rtol=1e-6, atol=1e-9)
    return "matches the exact derivative Phi(x) + x phi(x) on 3 inputs, including x = ±40"


# --------------------------------------------------------------------------- 4. dense layer

def _dense_cases():
    rng = np.random.default_rng(404)
    cases = []
    for n, d, h in ((4, 3, 2), (1, 5, 3), (3, 3, 3)):  # a batch of 1; a square case exposes w.T vs w
        cases.append((rng.standard_normal((n, d)), rng.standard_normal((h, d)), rng.standard_normal(h)))
    return cases


@check.exercise(points=2, hints=[
    "Each of the H neurons computes a weighted sum of the D inputs plus its own bias, for each of the N "
    "examples: N * H weighted sums, which one matrix product computes all at once.",
    "Follow the shapes: x is (N, D) and w is (H, D) (PyTorch's (out, in) layout); to get (N, H) the "
    "product must be (N, D) @ (D, H), so w needs transposing. b of shape (H,) broadcasts onto every row.",
    "return x @ w.T + b",
])
def dense_forward(fn):
    """A dense layer on a batch: x @ w.T + b, w of shape (out, in)."""
    for x, w, b in _dense_cases():
        where = f"dense_forward for x {x.shape}, w {w.shape}, b {b.shape}"
        try:
            out = call(fn, x, w, b)
        except CheckFailed as fail:
            raise _matmul_hint(fail, w.shape) from None
        expected = ref.dense_forward(x, w, b)
        n, h = expected.shape
        if np.shape(out) == (h, n) and n != h:
            raise CheckFailed(f"{where} returned shape {(h, n)}, expected {(n, h)}: the output has one "
                              "row per example, (N, H); compute x @ w.T + b")
        diagnose(out, expected, [
            (lambda: x @ w + b, f"{where}: w was used as (in, out) (x @ w); PyTorch's layout is (out, in), "
                                "so compute x @ w.T"),
            (lambda: x @ w.T, f"{where}: the bias is missing; add b"),
            (lambda: x @ w.T + b[:, None], f"{where}: the bias was added along the batch axis (b[:, None]); "
                                           "b has one entry per output unit and is added to every row"),
            (lambda: (x @ w.T + b).T, f"{where}: the output is transposed; it must be (N, H), "
                                      "one row per example"),
        ])
        expect_close(out, expected, where)
    return "matches x @ w.T + b on 3 batches, including a batch of 1"


# --------------------------------------------------------------------------- 5. MLP forward

def _mlp_params(sizes, rng):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((fan_out, fan_in)) / math.sqrt(fan_in), 0.5 * rng.standard_normal(fan_out)]
    return params


def _mlp_cases():
    rng = np.random.default_rng(505)
    cases = []
    for sizes, n in (([3, 5, 2], 4), ([2, 4, 4, 3], 5), ([4, 3], 2)):
        cases.append((sizes, _mlp_params(sizes, rng), rng.standard_normal((n, sizes[0]))))
    return cases


def _linear_stack(params, x, act=None, layers=None, last_act=False):
    """Reference variants: every layer linear (act=None) or another hidden activation.

    ``layers`` applies only the first few layers (an off-by-one over the layers),
    with ``act`` after each of them but the last, and after the last one too if
    ``last_act``.
    """
    applied = len(params) // 2 if layers is None else layers
    h = x
    for k in range(applied):
        h = h @ params[2 * k].T + params[2 * k + 1]
        if act is not None and (k < applied - 1 or last_act):
            h = act(h)
    return h


def _missing_layers(params, x, where):
    """(wrong output, message) for every loop that stops short of the last layer."""
    count = len(params) // 2
    mistakes = []
    for applied in range(count):
        if applied == count - 1:
            message = (f"{where}: the output layer seems to be missing (it applied {applied} of the "
                       f"{count} layers): loop over every (w, b) pair, "
                       "range(len(params) // 2)")
        elif applied == 0:
            message = (f"{where}: returned x unchanged, no layer was applied: loop over every (w, b) "
                       "pair, range(len(params) // 2)")
        else:
            message = (f"{where}: only {applied} of the {count} layers were applied: loop over "
                       "every (w, b) pair, range(len(params) // 2)")
        for last_act in (True, False):
            mistakes.append((lambda a=applied, la=last_act: _linear_stack(params, x, ref.relu, a, la),
                             message))
    return mistakes


@check.exercise(points=2, hints=[
    "An MLP is dense layers applied one after the other, each to the previous layer's output. params "
    "holds them two at a time: (w1, b1), (w2, b2), ... Every layer except the last is followed by ReLU.",
    "There are L = len(params) // 2 layers; layer k (from 0) uses params[2*k] and params[2*k+1]. Loop "
    "over k in range(L), keep the running output in h (starting from x), and apply np.maximum(h, 0) "
    "only when k < L - 1.",
    "h = x; L = len(params) // 2; for k in range(L): h = dense_forward(h, params[2*k], params[2*k+1]); "
    "if k < L - 1: h = np.maximum(h, 0).  Then return h.",
])
def mlp_forward(fn):
    """The forward pass of an MLP with ReLU hidden layers and a linear output layer."""
    labels = {0: "with no hidden layer (params = [w1, b1])", 1: "with 1 hidden layer", 2: "with 2 hidden layers"}
    passed = []
    for sizes, params, x in _mlp_cases():
        depth = len(sizes) - 2
        where = f"mlp_forward {labels[depth]} (sizes {sizes})"
        try:
            out = call(fn, params, x)
            expected = ref.mlp_forward(params, x)
            diagnose(out, expected, [
                (lambda: ref.relu(expected), f"{where}: ReLU was applied to the output layer too; the last "
                                             "layer stays linear, its raw scores go to the loss"),
                (lambda: _linear_stack(params, x), f"{where}: there is no activation between the layers, so "
                                                   "the network collapses to one linear layer; apply ReLU "
                                                   "after every hidden layer"),
                (lambda: _linear_stack(params, ref.relu(x), ref.relu),
                 f"{where}: ReLU was applied to the input x; apply it after each hidden layer instead"),
                (lambda: _linear_stack(params, x, ref.sigmoid), f"{where}: the hidden layers use the "
                                                                "sigmoid; this network uses ReLU"),
                (lambda: _linear_stack(params, x, np.tanh), f"{where}: the hidden layers use tanh; this "
                                                            "network uses ReLU"),
                *_missing_layers(params, x, where),
            ])
            expect_close(out, expected, where)
        except CheckFailed as fail:
            if "raised IndexError" in str(fail):
                fail = CheckFailed(f"{fail}. params = [w1, b1, ..., wL, bL] holds 2 arrays per layer, so there "
                                   "are L = len(params) // 2 layers, numbered k = 0 .. L - 1, using "
                                   "params[2*k] and params[2*k + 1]")
            fail = _matmul_hint(fail, params[0].shape)
            if passed and depth == 0:
                raise CheckFailed(f"{fail} (it works {passed[0]}; with params = [w1, b1] the network is a "
                                  "single linear layer: no activation at all)") from None
            if passed and "loop over every (w, b) pair" in str(fail):
                raise CheckFailed(f"{fail} (it works {passed[0]})") from None
            if passed:
                raise CheckFailed(f"{fail} (it works {passed[0]}: loop over every (w, b) pair in params, "
                                  "not a fixed number of layers)") from None
            raise fail from None
        passed.append(labels[depth])
    return "matches the reference with 0, 1 and 2 hidden layers"


# --------------------------------------------------------------------------- 6. collapsing linear layers

def _collapse_cases():
    rng = np.random.default_rng(606)
    cases = []
    for d, h, k in ((2, 2, 2), (3, 4, 2)):  # square first: its wrong answers run and can be recognised
        cases.append((rng.standard_normal((h, d)), rng.standard_normal(h),
                      rng.standard_normal((k, h)), rng.standard_normal(k)))
    return cases


@check.exercise(points=2, hints=[
    "Write the two layers as formulas and substitute the first into the second: "
    "y = (x W1^T + b1) W2^T + b2. Expand, and read off the weight that multiplies x and the constant.",
    "Expanded: y = x W1^T W2^T + b1 W2^T + b2, and W1^T W2^T = (W2 W1)^T. So the weight is W2 W1 "
    "(shape (K, D)) and the constant collects b1 passed through the second layer, plus b2.",
    "w = w2 @ w1 and b = w2 @ b1 + b2; return w, b.",
])
def collapse_linear(fn):
    """The single linear layer (w, b) equal to two stacked linear layers."""
    rng = np.random.default_rng(607)
    for w1, b1, w2, b2 in _collapse_cases():
        where = f"for w1 {w1.shape}, w2 {w2.shape}"
        try:
            got = expect_tuple(call(fn, w1, b1, w2, b2), 2, "(w, b)", "collapse_linear", "arrays")
        except CheckFailed as fail:
            text = str(fail)
            if any(word in text for word in ("matmul", "aligned", "mismatch", "broadcast")):
                raise CheckFailed(f"{text} ({where}). Shapes: w1 (H, D), w2 (K, H), b1 (H,), b2 (K,); "
                                  "the result is w (K, D) = (K, H) @ (H, D) and b (K,)") from None
            raise
        w, b = got
        want_w, want_b = ref.collapse_linear(w1, b1, w2, b2)
        if np.shape(w) == want_w.shape[::-1] and want_w.shape[0] != want_w.shape[1]:
            raise CheckFailed(f"w {where} has shape {np.shape(w)}, expected {want_w.shape}: "
                              "keep PyTorch's (out, in) layout, w = w2 @ w1")
        diagnose(w, want_w, [
            (lambda: w1 @ w2, f"w {where} is w1 @ w2; the second layer acts last, so w = w2 @ w1"),
            (lambda: (w2 @ w1).T, f"w {where} is transposed; keep the (out, in) layout, w = w2 @ w1"),
        ])
        expect_close(w, want_w, f"w {where}")
        diagnose(b, want_b, [
            (lambda: b1 + b2, f"b {where} is b1 + b2, but b1 also passes through the second layer: "
                              "b = w2 @ b1 + b2"),
            (b2, f"b {where} is b2 alone: the first bias also reaches the output, b = w2 @ b1 + b2"),
            (lambda: w2 @ b1, f"b {where} is missing the second bias: b = w2 @ b1 + b2"),
        ])
        expect_close(b, want_b, f"b {where}")
        x = rng.standard_normal((5, w1.shape[1]))
        two_layers = ref.dense_forward(ref.dense_forward(x, w1, b1), w2, b2)
        expect_close(ref.dense_forward(x, np.asarray(w, float), np.asarray(b, float)), two_layers,
                     "the collapsed layer's output")
    return "one layer (w, b) reproduces both stacked layers, for square and non-square shapes"


# --------------------------------------------------------------------------- 7. XOR

@check.exercise(points=2, hints=[
    "No straight line separates XOR, so the hidden layer must bend the space: each ReLU unit should be "
    "on for some corners and off for others, and the output combines the two units linearly.",
    "One unit can count how many inputs are on, relu(x1 + x2) (0, 1, 1, 2), and another can fire only "
    "when both are on, relu(x1 + x2 - 1) (0, 0, 0, 1). Which combination of the two gives 0, 1, 1, 0?",
    "w1 = [[1, 1], [1, 1]], b1 = [0, -1], w2 = [[1, -2]], b2 = [0]: the output is "
    "relu(x1 + x2) - 2 relu(x1 + x2 - 1), which is 0, 1, 1, 0 on the four corners.",
])
def xor_weights(fn):
    """Weights [w1, b1, w2, b2] of a 2-2-1 ReLU network that outputs XOR exactly."""
    params = expect_tuple(call(fn), 4, "[w1, b1, w2, b2]", "xor_weights", "arrays")
    shapes = ((2, 2), (2,), (1, 2), (1,))
    names = ("w1", "b1", "w2", "b2")
    arrays = []
    for name, p, shape in zip(names, params, shapes):
        try:
            p = np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError):
            raise CheckFailed(f"{name} is a {type(p).__name__}, expected an array of shape {shape}") from None
        expect(p.shape == shape, f"{name} has shape {p.shape}, expected {shape} "
                                 "(w is (out, in): 2 inputs -> 2 hidden units -> 1 output)")
        expect(bool(np.all(np.isfinite(p))), f"{name} contains NaN or inf")
        arrays.append(p)
    out = ref.mlp_forward(arrays, XOR_INPUTS)[:, 0]
    if not np.allclose(out, XOR_TARGETS, atol=1e-6):
        shown = ", ".join(f"{v:.3g}" for v in out + 0.0)  # + 0.0 turns -0 into 0
        message = (f"your network outputs [{shown}] for (x1, x2) = (0,0), (0,1), (1,0), (1,1); "
                   "XOR is [0, 1, 1, 0]")
        z = XOR_INPUTS @ arrays[0].T + arrays[1]          # (4, 2) hidden pre-activations
        on = z > 0
        if np.all(on.all(axis=0) | (~on).all(axis=0)):
            message += (". Each hidden unit is either on for all four inputs or off for all four, so the "
                        "network is linear on them, and no linear function fits XOR: choose biases that "
                        "switch a unit on for some corners only")
        raise CheckFailed(message)
    return "outputs exactly 0, 1, 1, 0 on the four corners: XOR solved with one hidden layer"
