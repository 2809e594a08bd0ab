"""Chapter 01 · neurons: NumPy twin == PyTorch (forward and derivatives), gradient checks,
every graded check on right, missing and wrong answers, and the explorer widget's callbacks."""
import math
import sys

import numpy as np
import pytest
import torch

from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.neurons import numpy_impl as ref
from dlcourse.neurons import torch_impl as tt
from dlcourse.neurons.checks import CORNERS3, PARITY3, check
from checktools import solution

NAMES = list(ref.ACTIVATIONS)


def _x():
    """float64 test points: a grid, random values, the kink at 0 and large magnitudes."""
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-8.0, 8.0, 41), 3.0 * rng.standard_normal(20),
                           [0.0, -30.0, 30.0, -1000.0, 1000.0]])


# --------------------------------------------------------------------------- NumPy == torch

@pytest.mark.parametrize("name", NAMES)
def test_activation_matches_torch(name):
    x = _x()
    with np.errstate(over="raise", invalid="raise"):  # stable forms: no overflow anywhere
        ours = ref.ACTIVATIONS[name][0](x)
    theirs = tt.ACTIVATIONS[name](torch.from_numpy(x)).numpy()
    # atol: for x << 0, both twins compute GELU's 1 + erf(x / sqrt 2) with cancellation (~1e-15 absolute)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_activation_grad_matches_autograd(name):
    x = _x()
    with np.errstate(over="raise", invalid="raise"):
        ours = ref.ACTIVATIONS[name][1](x)
    theirs = tt.activation_grad(name, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)


def test_activation_modules_match_functions():
    x = torch.from_numpy(_x())
    for name in NAMES:
        torch.testing.assert_close(tt.activation_module(name)(x), tt.ACTIVATIONS[name](x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown activation"):
        tt.activation_module("swish")
    with pytest.raises(ValueError, match="unknown activation"):
        ref.mlp_forward(ref.xor_params(), np.zeros((1, 2)), activation="swish")


def test_activation_grad_leaves_input_alone():
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    before = x.clone()
    tt.activation_grad("sigmoid", x)
    assert torch.equal(x, before) and not x.requires_grad


def test_neuron_matches_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3))
    for activation in ("sigmoid", "relu", "tanh"):
        neuron = tt.Neuron(3, activation).double()
        w, b = tt.get_params(neuron)                  # (1, 3), (1,)
        ours = ref.neuron_forward(x, w[0], b[0], activation)
        theirs = neuron(torch.from_numpy(x)).detach().numpy()
        assert ours.shape == theirs.shape == (6,)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_dense_forward_matches_linear():
    rng = np.random.default_rng(2)
    layer = torch.nn.Linear(5, 3).double()
    w, b = tt.get_params(layer)
    for x in (rng.standard_normal((4, 5)), rng.standard_normal((1, 5))):
        np.testing.assert_allclose(ref.dense_forward(x, w, b), layer(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-12)


@pytest.mark.parametrize("sizes, activation", [([3, 8, 2], "relu"), ([2, 6, 5, 3], "tanh"),
                                               ([4, 7, 1], "gelu"), ([4, 3], "relu")])
def test_mlp_forward_matches_torch(sizes, activation):
    rng = np.random.default_rng(3)
    torch.manual_seed(0)
    model = tt.MLP(sizes, activation).double()
    params = tt.get_params(model)
    assert [p.shape for p in params[::2]] == [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    x = rng.standard_normal((5, sizes[0]))
    np.testing.assert_allclose(ref.mlp_forward(params, x, activation),
                               model(torch.from_numpy(x)).detach().numpy(), rtol=1e-11, atol=1e-14)


def test_load_and_get_params_roundtrip():
    rng = np.random.default_rng(4)
    model = tt.MLP([2, 3, 1]).double()
    params = [rng.standard_normal(p.shape) for p in model.parameters()]
    tt.load_params(model, params)
    for a, b in zip(tt.get_params(model), params):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="parameter 0"):
        tt.load_params(model, [p.T for p in params])
    with pytest.raises(ValueError, match="4 parameter tensors"):
        tt.load_params(model, params[:2])


# --------------------------------------------------------------------------- numerics of the NumPy twin

@pytest.mark.parametrize("name", NAMES)
def test_activation_grad_numerical(name):
    rng = np.random.default_rng(5)
    x = rng.uniform(0.05, 3.0, 12) * rng.choice([-1.0, 1.0], 12)  # away from ReLU's kink at 0
    dout = rng.standard_normal(x.shape)
    f, grad = ref.ACTIVATIONS[name]
    assert rel_error(grad(x) * dout, numerical_grad(f, x, dout)) < 1e-7


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-7.0, 7.0, 2801), [0.0, 1e-12, -1e-300, np.inf, -np.inf]])
    want = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(ref.erf(x) - want)) < 1e-14
    assert ref.erf(np.float32([0.5])).dtype == np.float32
    assert ref.erf(np.array([[0.3, -0.2]])).shape == (1, 2)


def test_softplus_is_stable_and_accurate():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = ref.softplus(np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0]))
    np.testing.assert_allclose(out, [0.0, math.exp(-40.0), math.log(2.0), 40.0, 1000.0], rtol=1e-15, atol=0)
    assert ref.softplus(np.float32([1.0])).dtype == np.float32
    np.testing.assert_array_equal(ref.softplus_grad(_x()), ref.sigmoid(_x()))


def test_collapse_stack_equals_the_stack():
    rng = np.random.default_rng(9)
    sizes = [3, 5, 4, 2]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((fan_out, fan_in)), rng.standard_normal(fan_out)]
    x = rng.standard_normal((6, 3))
    w, b = ref.collapse_stack(params)
    assert w.shape == (2, 3) and b.shape == (2,)
    linear = x
    for k in range(0, len(params), 2):
        linear = ref.dense_forward(linear, params[k], params[k + 1])
    np.testing.assert_allclose(ref.dense_forward(x, w, b), linear, rtol=1e-12)
    assert all(np.array_equal(a, c) for a, c in zip(ref.collapse_stack(params[:2]), params[:2]))


def test_sigmoid_is_stable_and_keeps_dtype():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_array_equal(ref.sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])
        assert ref.sigmoid_grad(np.array([-1000.0, 1000.0])).tolist() == [0.0, 0.0]
    assert ref.sigmoid(np.float32([1.0, -2.0])).dtype == np.float32
    assert ref.sigmoid([0, 1]).dtype == np.float64  # integers become float
    np.testing.assert_allclose(ref.tanh(_x()), 2 * ref.sigmoid(2 * _x()) - 1, atol=1e-15)


def test_gelu_tanh_approximation_is_close_to_exact():
    x = np.linspace(-6, 6, 2001)
    gap = np.abs(ref.gelu(x) - ref.gelu_tanh(x)).max()
    assert 1e-5 < gap < 5e-4  # close, but not the same function


def test_stacked_linear_layers_collapse():
    rng = np.random.default_rng(6)
    w1, b1, w2, b2 = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 4)), \
        rng.standard_normal(2)
    x = rng.standard_normal((7, 3))
    w, b = ref.collapse_linear(w1, b1, w2, b2)
    assert w.shape == (2, 3) and b.shape == (2,)
    two = ref.dense_forward(ref.dense_forward(x, w1, b1), w2, b2)
    np.testing.assert_allclose(ref.dense_forward(x, w, b), two, rtol=1e-12)
    # with a ReLU between them the same (w, b) no longer reproduces the network
    bent = ref.dense_forward(ref.relu(ref.dense_forward(x, w1, b1)), w2, b2)
    assert not np.allclose(ref.dense_forward(x, w, b), bent)


def test_xor_needs_a_hidden_layer():
    x, y = np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]]), np.array([0.0, 1, 1, 0])
    design = np.hstack([x, np.ones((4, 1))])        # the best affine fit ...
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(design @ coef, 0.5)  # ... predicts 0.5 everywhere
    np.testing.assert_array_equal(ref.mlp_forward(ref.xor_params(), x)[:, 0], y)


def test_functions_do_not_mutate_inputs():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2))
    params = ref.xor_params()
    snapshot = [x.copy()] + [p.copy() for p in params]
    for name in NAMES:
        for fn in ref.ACTIVATIONS[name]:
            fn(x)
    ref.mlp_forward(params, x)
    ref.collapse_linear(*params)
    for before, after in zip(snapshot, [x] + params):
        np.testing.assert_array_equal(before, after)


# --------------------------------------------------------------------------- training (PyTorch, seconds)

@pytest.mark.slow
def test_mlp_learns_spirals():
    from dlcourse.data import make_spirals
    x, y = make_spirals(n_per_class=100, n_classes=3, seed=0)
    torch.manual_seed(0)
    model = tt.MLP([2, 64, 64, 3])
    losses = tt.train(model, torch.from_numpy(x), torch.from_numpy(y), steps=400, lr=1e-2)
    assert len(losses) == 400 and losses[-1] < 0.3 * losses[0]
    accuracy = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert accuracy > 0.9


@pytest.mark.slow
def test_mlp_fits_sine():
    torch.manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 100).unsqueeze(1)
    model = tt.MLP([1, 32, 32, 1], "tanh")
    losses = tt.train(model, x, torch.sin(x), loss="mse", steps=400, lr=1e-2)
    assert losses[-1] < 1e-3


# --------------------------------------------------------------------------- graded checks
#
# tests/test_course.py proves every mistake-table row, the solution, the stub, the refusal of the
# course's own code and the concept questions.  Here: other right answers, and the diagnoses that
# are not table rows (loops hidden in other forms, silenced overflow, a learner's helper that raised).

def _solution(name):
    return solution("01_neurons", name)


def _expect_fail(name, fn, *words):
    result = check.run(name, fn)
    assert not result.passed, result.message
    assert result.points == 0
    for word in words:
        assert word in result.message, f"{word!r} not in: {result.message}"
    return result


def _expect_pass(name, fn):
    result = check.run(name, fn)
    assert result.passed, f"{result.message}\n{result.details}"
    assert result.points == result.max_points > 0
    return result


EXERCISES = ["softplus", "silu_grad", "gelu_tanh_grad", "dense_forward", "mlp_forward", "collapse_stack",
             "parity3_weights"]
QUESTIONS = ["q_mlp_params", "q_dense_shape", "q_sigmoid_max_slope", "q_collapsed_params"]


def test_exercises_questions_and_points():
    assert check.names == EXERCISES + QUESTIONS
    assert check.max_points == 20
    assert [check.is_question(n) for n in check.names] == [False] * 7 + [True] * 4


@pytest.mark.parametrize("name", EXERCISES)
def test_hints_climb_from_a_nudge_to_near_code(name):
    hints = check.hints(name)
    assert len(hints) == 3 and len(set(hints)) == 3
    first = check._hint(name, 1)
    assert first.number == 1 and first.total == 3 and "again for the next" in repr(first)
    assert "last hint" in repr(check._hint(name, 3))
    assert "return" not in hints[0]  # the first hint is the idea, not code


def test_softplus_other_right_answers():
    _expect_pass("softplus", _solution("softplus"))
    _expect_pass("softplus", lambda x: np.logaddexp(0.0, x))


def test_softplus_rejects_loops_in_every_form():
    _expect_fail("softplus", np.vectorize(lambda v: max(v, 0) + math.log1p(math.exp(-abs(v)))),
                 "Python loop over the elements")

    def loop_numpy_scalars(x):
        out = np.empty(np.shape(x))
        for i, v in np.ndenumerate(x):
            out[i] = max(v, 0.0) + np.log1p(np.exp(-abs(v)))
        return out
    _expect_fail("softplus", loop_numpy_scalars, "Python loop over the elements")

    def loop_swallowing_errors(x):  # a bare except hides nothing: calls are counted, not trapped
        out = np.empty(np.shape(x))
        for i, v in np.ndenumerate(x):
            try:
                out[i] = math.log1p(math.exp(v))
            except Exception:
                out[i] = v
        return out
    _expect_fail("softplus", loop_swallowing_errors, "Python loop over the elements")
    assert math.exp.__name__ == "exp" and isinstance(np.exp, np.ufunc) and sys.getprofile() is None


def test_softplus_sees_overflow_hidden_by_the_learners_errstate():
    def naive_but_silenced(x):
        with np.errstate(over="ignore"):
            return np.log(1 + np.exp(x))
    result = _expect_fail("softplus", naive_but_silenced, "numerical overflow", "np.exp overflowed to inf")
    assert result.mistake == "overflow"
    assert isinstance(np.exp, np.ufunc)  # the watch on np.exp is removed afterwards


def test_softplus_wrong_shape_is_named():
    _expect_fail("softplus", lambda x: np.logaddexp(0.0, x).ravel(), "wrong shape")


def test_silu_and_gelu_tanh_grad_other_right_answers():
    _expect_pass("silu_grad", _solution("silu_grad"))
    _expect_pass("silu_grad", lambda x: ref.sigmoid(x) * (1 + x * ref.sigmoid(-x)))
    _expect_pass("gelu_tanh_grad", _solution("gelu_tanh_grad"))
    c = math.sqrt(2 / math.pi)

    def factored(x):  # (1 - t)(1 + t) for 1 - t^2: other roundings, still every digit the check wants
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t) * (1 + t) * c * (1 + 0.134145 * x ** 2)
    _expect_pass("gelu_tanh_grad", factored)

    def via_sigmoid(x):  # (1 + tanh u) / 2 = sigmoid(2u)
        u = c * (x + 0.044715 * x ** 3)
        s = ref.sigmoid(2 * u)
        return s + x * c * (1 + 0.134145 * x ** 2) * 2 * s * (1 - s)
    _expect_pass("gelu_tanh_grad", via_sigmoid)


def test_solution_derivatives_equal_the_numerically_checked_twin():
    # the twin's derivatives pass test_activation_grad_numerical and agree with autograd
    x = np.random.default_rng(8).uniform(-4, 4, 30)
    np.testing.assert_allclose(_solution("gelu_tanh_grad")(x), ref.gelu_tanh_grad(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_solution("silu_grad")(x), ref.silu_grad(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_solution("softplus")(x), ref.softplus(x), rtol=1e-15)


def test_dense_forward_other_answers_and_mutation():
    _expect_pass("dense_forward", _solution("dense_forward"))
    _expect_pass("dense_forward", lambda x, w, b: np.einsum("nd,hd->nh", x, w) + b)

    def in_place(x, w, b):
        x -= b.mean()  # changes the caller's array
        return x @ w.T + b
    _expect_fail("dense_forward", in_place, "mutated")


def test_check_names_the_learners_helper_that_raised():
    def dense_forward(x, w, b):  # the learner's own helper, with w used as (in, out)
        return x @ w + b

    def mlp_forward(params, x, activation):
        h = x
        for k in range(len(params) // 2):
            h = dense_forward(h, params[2 * k], params[2 * k + 1])
        return h
    result = _expect_fail("mlp_forward", mlp_forward, "(in, out)", "(raised inside dense_forward)")
    assert result.mistake == "(in, out) layout"

    def activation_grad(x):
        def my_sigmoid(v):
            raise TypeError("oops")
        return my_sigmoid(x)
    _expect_fail("silu_grad", activation_grad, "TypeError: oops (raised inside my_sigmoid)")


def test_mlp_forward_params_k_is_not_blamed_on_the_layout():
    def mlp_forward(params, x, activation):
        h = x
        for k in range(len(params) // 2):
            w, b = params[k], params[k + 1]
            h = h @ w.T + b
            if k < len(params) // 2 - 1:
                h = activation(h)
        return h
    result = _expect_fail("mlp_forward", mlp_forward, "params[2*k]")
    assert result.mistake == "params[k] for params[2k]" and "(out, in)" not in result.message


def test_dense_forward_bias_column_is_not_blamed_on_the_layout():
    result = _expect_fail("dense_forward", lambda x, w, b: x @ w.T + b[:, np.newaxis], "column")
    assert result.mistake == "bias as a column" and "(in, out)" not in result.message


def test_collapse_stack_other_answers():
    _expect_pass("collapse_stack", _solution("collapse_stack"))

    def from_the_end(params):  # fold from the output side: W_L ... W_1 built right to left
        w, b = params[-2], params[-1]
        for k in range(len(params) - 4, -1, -2):
            w, b = w @ params[k], w @ params[k + 1] + b
        return w, b
    _expect_pass("collapse_stack", from_the_end)
    _expect_fail("collapse_stack", lambda params: params[0], "two arrays")


def test_parity3_weights_other_answers_and_messages():
    _expect_pass("parity3_weights", _solution("parity3_weights"))
    _expect_pass("parity3_weights", lambda: [[[1, 1, 1]] * 3, [0, -1, -2], [[1, -2, 2]], [0]])  # lists
    result = _expect_fail("parity3_weights", lambda: [np.ones((3, 3)), np.array([0.0, -1.0, -2.0]),
                                                      np.array([[1.0, -1.0, 1.0]]), np.zeros(1)],
                          "parity is [0, 1, 1, 0, 1, 0, 0, 1]")
    assert result.mistake == ""
    _expect_fail("parity3_weights", lambda: [np.ones((3, 3)), np.zeros(3)], "4 arrays")
    _expect_fail("parity3_weights", lambda: [np.ones((2, 3)), np.zeros(3), np.ones((1, 3)), np.zeros(1)],
                 "w1 has shape (2, 3)")
    np.testing.assert_allclose(ref.mlp_forward(ref.parity3_params(), CORNERS3)[:, 0], PARITY3, rtol=0, atol=1e-12)


def test_check_messages_are_deterministic():
    wrong = lambda x, w, b: x @ w.T + 2 * b  # noqa: E731
    assert check.run("dense_forward", wrong).message == check.run("dense_forward", wrong).message


# --------------------------------------------------------------------------- the learner's review (issue 5)
#
# Each test below hands the check the learner's own code from the review of chapter 01 (the scripts
# ex*.py, exq*.py, cheat*.py); before the fix it passed, or was blamed on the wrong mistake.

def _mistake(name, fn, mistake, *words):
    result = _expect_fail(name, fn, *words)
    assert result.mistake == mistake, (result.mistake, result.message)
    return result


def test_review_q_mlp_params_wants_the_exact_count():
    ask = lambda v: check.run("q_mlp_params", lambda: v)  # noqa: E731
    for near in (101772, 101775, 101780, 101800, 101870, 101700, 101771, 101770.4):
        assert not ask(near).passed, near
    assert ask(101760).mistake == "no output biases"                 # 784*128 + 128 + 128*10
    assert ask(784 * 128 + 128 * 10 + 10).mistake == "no hidden biases"
    assert ask(101632).mistake == "no biases" and "weights only" in ask(101632).message
    assert ask(101770).passed and ask(101770.0).passed and ask(np.int64(101770)).passed


def test_review_questions_name_an_answer_of_the_wrong_form():
    assert check.run("q_mlp_params", lambda: "101770").message.startswith("return a number")
    assert check.run("q_dense_shape", lambda: "(32, 64)").message.startswith("return a shape as a tuple")
    assert check.run("q_sigmoid_max_slope", lambda: "1/4").message.startswith("return a number")
    assert check.run("q_dense_shape", lambda: np.array([32, 64])).passed
    assert check.run("q_collapsed_params", lambda: True).passed is False


def test_review_float32_is_named_in_every_derivative_and_the_collapse():
    def silu_grad(x):
        x = x.astype(np.float32); s = sigmoid(x); return s * (1 + x * (1 - s))  # noqa: E702
    sigmoid = ref.sigmoid
    _mistake("silu_grad", silu_grad, "float32", "float32")

    c = math.sqrt(2 / math.pi)

    def gelu_tanh_grad(x):
        x = x.astype(np.float32)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    _mistake("gelu_tanh_grad", gelu_tanh_grad, "float32", "float32")

    def collapse_stack(params):
        w, b = params[0].astype(np.float32), params[1].astype(np.float32)
        for k in range(2, len(params), 2):
            w = params[k].astype(np.float32) @ w
            b = params[k].astype(np.float32) @ b + params[k + 1].astype(np.float32)
        return w, b
    _mistake("collapse_stack", collapse_stack, "float32", "float32")


def test_review_a_list_is_not_an_array():
    _mistake("softplus", lambda x: (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).tolist(), "list", "is a list")

    def silu_grad(x):
        s = ref.sigmoid(x); return (s * (1 + x * (1 - s))).tolist()  # noqa: E702
    _mistake("silu_grad", silu_grad, "list", "is a list")
    _mistake("dense_forward", lambda x, w, b: (x @ w.T + b).tolist(), "list", "is a list")


def test_review_dense_forward_refuses_python_loops():
    def dense_forward(x, w, b):
        N, D = x.shape; H = w.shape[0]  # noqa: E702
        out = np.zeros((N, H))
        for n in range(N):
            for h in range(H):
                out[n, h] = sum(x[n, d]*w[h, d] for d in range(D)) + b[h]
        return out
    _mistake("dense_forward", dense_forward, "python loop", "too slow")
    _expect_pass("dense_forward", lambda x, w, b: (x[:, None, :] * w[None, :, :]).sum(axis=2) + b)


def test_review_numpy_exercises_refuse_pytorch():
    result = _mistake("softplus", lambda x: torch.nn.functional.softplus(torch.from_numpy(x)).numpy(),
                      "uses PyTorch", "NumPy only", "torch")
    assert "no points" not in result.message
    _mistake("dense_forward", lambda x, w, b: torch.nn.functional.linear(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy(), "uses PyTorch", "NumPy only")
    assert sys.getprofile() is None


def test_review_finite_differences_are_not_derivatives():
    def silu_grad(x):
        h = 1e-5; f = lambda t: t * sigmoid(t); return (f(x + h) - f(x - h)) / (2 * h)  # noqa: E702, E731
    sigmoid = ref.sigmoid
    _mistake("silu_grad", silu_grad, "finite differences", "finite difference", "digits")

    from dlcourse.neurons.numpy_impl import gelu_tanh as _gt

    def gelu_tanh_grad(x):
        h = 1e-5; return (_gt(x + h) - _gt(x - h)) / (2 * h)  # noqa: E702
    _mistake("gelu_tanh_grad", gelu_tanh_grad, "finite differences", "finite difference")

    c = math.sqrt(2 / math.pi)
    def g(x): return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x ** 3)))  # noqa: E301, E704

    def gelu_own(x):
        h = 1e-5; return (g(x + h) - g(x - h)) / (2 * h)  # noqa: E702
    _mistake("gelu_tanh_grad", gelu_own, "finite differences", "finite difference")

    def silu_nan_free(x):  # the learner's other analytic form still passes at full precision
        s = sigmoid(x); e = np.exp(-np.abs(x)); return s + x * e / (1 + e)**2  # noqa: E702
    _expect_pass("silu_grad", silu_nan_free)


def test_review_gelu_tanh_grad_cosh_overflows_like_softplus_and_silu():
    c = math.sqrt(2 / math.pi)

    def gelu_tanh_grad(x):
        u = c*(x + 0.044715*x**3); return 0.5*(1+np.tanh(u)) + 0.5*x/np.cosh(u)**2*c*(1+3*0.044715*x**2)  # noqa
    _mistake("gelu_tanh_grad", gelu_tanh_grad, "cosh overflow", "numerical overflow", "cosh")


def test_review_rows_that_were_max_error():
    def softplus(x):
        return np.maximum(x, 0) + np.log1p(np.exp(-x))
    _mistake("softplus", softplus, "no abs", "-|x|")
    cc = math.sqrt(2 / math.pi)  # the learner's `c`

    def gelu_second(x):
        t = np.tanh(cc*(x + 0.044715*x**3)); return 0.5*x*(1-t**2)*cc*(1+3*0.044715*x**2)  # noqa: E702
    _mistake("gelu_tanh_grad", gelu_second, "second term only", "first term")

    def gelu_plus(x):
        t = np.tanh(cc*(x + 0.044715*x**3)); return 0.5*(1+t) + 0.5*x*(1+t**2)*cc*(1+3*0.044715*x**2)  # noqa
    _mistake("gelu_tanh_grad", gelu_plus, "tanh' = 1 + t^2", "1 minus")

    def collapse_stack(params):
        w, b = params[0], params[1]
        for k in range(2, len(params), 2):
            w = params[k] @ w; b = params[k] @ b  # noqa: E702
        return w, b
    _mistake("collapse_stack", collapse_stack, "no + b_k", "b_k")

    def mlp_forward(params, x, activation):
        h = x.T
        n = len(params)//2
        for i in range(n):
            h = params[2*i] @ h + params[2*i+1][:, None]
            if i < n-1: h = activation(h)  # noqa: E701
        return h
    _mistake("mlp_forward", mlp_forward, "transposed output", "transposed")


def test_review_mlp_forward_activation_looked_up_by_name():
    def dense_forward(x, w, b):
        return x @ w.T + b

    def mlp_forward(params, x, activation):
        f = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[activation]
        h = x; n = len(params)//2  # noqa: E702
        for i in range(n):
            h = dense_forward(h, params[2*i], params[2*i+1])
            if i < n-1: h = f(h)  # noqa: E701
        return h
    result = _mistake("mlp_forward", mlp_forward, "activation as a name", "is a function")
    assert "KeyError" not in result.message
    # the lesson passes the activation the same way, as a function; names still work for the twin's tests
    x = np.random.default_rng(0).standard_normal((3, 2))
    np.testing.assert_array_equal(ref.mlp_forward(ref.xor_params(), x, ref.relu),
                                  ref.mlp_forward(ref.xor_params(), x, "relu"))


def test_review_reproducing_lines_run_as_printed():
    def mlp_forward(params, x, activation):  # mutates x after computing the right answer
        h = x
        n = len(params)//2
        for i in range(n):
            h = h @ params[2*i].T + params[2*i+1]
            if i < n-1: h = activation(h)  # noqa: E701
        x[:] = 0
        return h
    result = _mistake("mlp_forward", mlp_forward, "mutated input", "`x` (argument 2)")
    line = result.details.split("reproduce it in a new cell:  ", 1)[1].split("\n  need a hint")[0]
    assert line.startswith("from dlcourse.neurons.numpy_impl import relu; mlp_forward(")
    namespace = {"np": np}
    exec(line.replace("mlp_forward(", "out = (lambda *a: a)(", 1), namespace)  # no NameError: relu is imported
    params, x, activation = namespace["out"]
    assert activation is ref.relu and np.any(x != 0)  # the input as it was before the mutation


def test_review_parity3_weights_names_the_corner_that_is_off():
    def parity3_weights():
        return [np.ones((3,3)), np.array([0., -1, -2]), np.array([[1., -2, 2.001]]), np.zeros(1)]  # noqa: E231
    result = _expect_fail("parity3_weights", parity3_weights, "on 111 it outputs 1.001 where parity is 1",
                          "off by +0.001", "right on the 7 others")
    assert result.mistake == "" and "kink" not in result.message

    def two_useful_units():
        return [np.ones((3,3)), np.array([0., -1, -2]), np.array([[1., -2, 1]]), np.zeros(1)]  # noqa: E231
    result = _expect_fail("parity3_weights", two_useful_units, "on 111 it outputs 0 where parity is 1")
    assert result.mistake == ""                    # all three units are used: none is missing
    unused = lambda: [np.ones((3, 3)), np.array([0.0, -1.0, -2.0]), np.array([[1.0, -2.0, 0.0]]), np.zeros(1)]  # noqa
    assert check.run("parity3_weights", unused).mistake == "misses (1, 1, 1)"


def test_review_parity3_weights_copied_before_the_check_is_course_code():
    from dlcourse.neurons import numpy_impl as ni
    p = ni.parity3_params()
    def parity3_weights(): return [a.copy() for a in p]  # noqa: E301, E704
    _mistake("parity3_weights", parity3_weights, "course code", "no points for the course's own code")
    _mistake("parity3_weights", lambda: [np.array(a).tolist() for a in p], "course code")
    _expect_pass("parity3_weights", _solution("parity3_weights"))  # the natural hand-made answer is not a copy


def test_review_collapse_stack_may_chain_the_lessons_collapse_linear():
    from dlcourse.neurons import numpy_impl as ni

    def cs(params):  # acceptable: the lesson shows collapse_linear; folding a whole stack is the exercise
        w, b = params[0], params[1]
        for k in range(2, len(params), 2):
            w, b = ni.collapse_linear(w, b, params[k], params[k+1])
        return w, b
    _expect_pass("collapse_stack", cs)


def test_review_messages_and_hints_do_not_give_the_formula():
    softplus_rows = {r.name: r.message for r in check.mistakes("softplus")}
    assert "max(x, 0) + log(1 + e^-|x|)" not in softplus_rows["overflow"]
    silu_rows = " ".join(r.message for r in check.mistakes("silu_grad"))
    assert "s + x * s(1 - s)" not in silu_rows and "s + x * s'(x)" not in silu_rows
    assert "x @ w.T" not in check.hints("dense_forward")[2]
    assert "dense_forward(h, params[2*k]" not in check.hints("mlp_forward")[2]
    assert "(x wᵀ + b) w_kᵀ + b_k" in check.hints("collapse_stack")[1]
    assert "(0, 1)" in ref.sigmoid.__doc__


# --------------------------------------------------------------------------- the explorer widget

def test_activation_explorer_callbacks():
    pytest.importorskip("ipywidgets")
    from dlcourse.neurons.explore import ActivationExplorer
    explorer = ActivationExplorer(activation="sigmoid", w1=1.0, w2=1.0, b=0.0)
    f_line, grad_line = explorer.axes[0].lines[-2:]
    png = explorer.image.value
    assert png[:4] == b"\x89PNG"
    width_px = int.from_bytes(png[16:20], "big")      # the PNG header's width
    assert explorer.image.width == "864" and width_px == 2 * 864  # 2x pixels, shown at 12 in x 72 px
    np.testing.assert_allclose(f_line.get_ydata(), ref.sigmoid(explorer._Z))

    explorer.activation.value = "tanh"                   # the dropdown redraws panel 1
    np.testing.assert_allclose(f_line.get_ydata(), np.tanh(explorer._Z))
    np.testing.assert_allclose(grad_line.get_ydata(), ref.tanh_grad(explorer._Z))
    assert explorer.image.value != png
    assert "tanh" in explorer.axes[0].get_title()

    explorer.w1.value = 2.0                              # the weight stretches the neuron's curve
    explorer.b.value = -1.0                              # the bias slides it
    np.testing.assert_allclose(explorer._neuron_line.get_ydata(), np.tanh(2.0 * explorer._X - 1.0))
    assert explorer._kink.get_xdata()[0] == pytest.approx(0.5)
    assert explorer.state == {"activation": "tanh", "w1": 2.0, "w2": 1.0, "b": -1.0}
    assert explorer.axes[1].get_title() == "a = f(2.0 x - 1.0)"

    explorer.w2.value = -3.0                             # the decision line in the plane
    x1, x2 = explorer.decision_line()
    np.testing.assert_allclose(2.0 * x1 - 3.0 * x2 - 1.0, 0.0, atol=1e-12)
    heat = np.asarray(explorer._heat.get_array())
    gx, gy = np.meshgrid(explorer._GRID, explorer._GRID)
    np.testing.assert_allclose(heat, np.tanh(2.0 * gx - 3.0 * gy - 1.0))

    explorer.w1.value = explorer.w2.value = 0.0          # no weights: no line, a flat output
    assert explorer.decision_line()[0].size == 0
    assert explorer._heat.get_clim()[1] > explorer._heat.get_clim()[0]


def test_plots_draw():
    import matplotlib.pyplot as plt
    from dlcourse.neurons.explore import plot_activations, plot_decision_boundary

    fig = plot_activations()
    assert len(fig.axes) == 4
    plt.close(fig)
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    ax = plot_decision_boundary(lambda p: (ref.mlp_forward(ref.xor_params(), p)[:, 0] > 0.5).astype(int),
                                x, y, resolution=30, title="XOR")
    assert ax.get_title() == "XOR" and len(ax.collections) >= 2
    ax2 = plot_decision_boundary(lambda p: np.stack([-p[:, 0], p[:, 0]], 1), x, y, resolution=20)
    assert ax2.get_xlim()[0] < 0
    plt.close("all")


def test_review2_abs_in_the_main_term_is_not_blamed_on_the_correction():
    result = check.softplus(lambda x: np.abs(x) + np.log1p(np.exp(-np.abs(x))))
    assert not result.passed and "|x| in the main term" in result.message
