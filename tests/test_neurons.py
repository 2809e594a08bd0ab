"""Chapter 01 · neurons: NumPy twin == PyTorch (forward and derivatives), gradient checks,
every graded check on right, missing and wrong answers, and the explorer widget's callbacks."""
import math

import numpy as np
import pytest
import torch

from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.neurons import numpy_impl as ref
from dlcourse.neurons import torch_impl as tt
from dlcourse.neurons.checks import check

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

def _stub(*args):
    raise NotImplementedError()


def _expect_fail(name, fn, *words):
    result = check.run(name, fn)
    assert not result.passed, result.message
    assert result.points == 0
    for word in words:
        assert word in result.message, f"{word!r} not in: {result.message}"
    return result


def _expect_pass(name, fn):
    result = check.run(name, fn)
    assert result.passed, result.message
    assert result.points == result.max_points > 0
    return result


def test_every_check_has_points_and_hints():
    assert check.names == ["sigmoid", "activation_grads", "gelu_grad", "dense_forward", "mlp_forward",
                           "collapse_linear", "xor_weights"]
    assert sum(check._exercises[n].points for n in check.names) == 14
    for name in check.names:
        assert check.hints(name)


@pytest.mark.parametrize("name", ["sigmoid", "activation_grads", "gelu_grad", "dense_forward", "mlp_forward",
                                  "collapse_linear", "xor_weights"])
def test_hints_climb_from_a_nudge_to_the_answer(name):
    hints = check.hints(name)
    assert len(hints) == 3 and len(set(hints)) == 3
    first = check._hint(name, 1)
    assert first.number == 1 and first.total == 3 and "again for the next" in repr(first)
    assert "last hint" in repr(check._hint(name, 3))
    assert "return" not in hints[0]  # the first hint is a nudge, not code


@pytest.mark.parametrize("name", check.names)
def test_stub_reports_not_implemented(name):
    result = check.run(name, _stub)
    assert not result.passed and result.status == "not implemented"


def test_check_sigmoid():
    _expect_pass("sigmoid", ref.sigmoid)
    _expect_pass("sigmoid", lambda x: 0.5 * (1 + np.tanh(x / 2)))  # another stable form
    _expect_fail("sigmoid", lambda x: 1 / (1 + np.exp(-x)), "overflow", "-|x|")
    _expect_fail("sigmoid", lambda x: np.exp(x) / (1 + np.exp(x)), "overflow")
    # "stable" with np.where, but both branches are evaluated: still overflows
    _expect_fail("sigmoid", lambda x: np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x))),
                 "overflow", "both of its branches")
    _expect_fail("sigmoid", lambda x: ref.sigmoid(-x), "sign flipped")
    _expect_fail("sigmoid", np.tanh, "tanh")
    _expect_fail("sigmoid", ref.sigmoid_grad, "derivative")
    _expect_fail("sigmoid", lambda x: ref.sigmoid(x).ravel(), "wrong shape")


def test_check_sigmoid_rejects_a_loop_over_elements():
    def loop_math(x):
        out = np.empty(np.shape(x))
        for i, v in np.ndenumerate(x):
            out[i] = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
        return out
    _expect_fail("sigmoid", loop_math, "too slow", "Python loop over the elements", "whole-array")

    def loop_numpy(x):
        return np.vectorize(lambda v: 1 / (1 + np.exp(-v)) if v >= 0 else np.exp(v) / (1 + np.exp(v)))(x)
    _expect_fail("sigmoid", loop_numpy, "too slow", "whole-array NumPy operations")

    def loop_swallowing_errors(x):  # a bare except cannot hide the count
        out = np.empty(np.shape(x))
        for i, v in np.ndenumerate(x):
            try:
                out[i] = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
            except Exception:
                out[i] = ref.sigmoid(v)
        return out
    _expect_fail("sigmoid", loop_swallowing_errors, "Python loop over the elements")
    assert math.exp.__name__ == "exp" and isinstance(np.exp, np.ufunc)  # both restored


def _grads(relu=None, sigmoid=None, tanh=None, order=(0, 1, 2)):
    def activation_grads(x):
        parts = [(relu or ref.relu_grad)(x), (sigmoid or ref.sigmoid_grad)(x), (tanh or ref.tanh_grad)(x)]
        return tuple(parts[i] for i in order)
    return activation_grads


def test_check_activation_grads():
    _expect_pass("activation_grads", _grads())
    _expect_pass("activation_grads", lambda x: [x > 0, ref.sigmoid_grad(x), 1 / np.cosh(x) ** 2])
    _expect_fail("activation_grads", _grads(sigmoid=ref.sigmoid), "d_sigmoid", "s * (1 - s)")
    _expect_fail("activation_grads", _grads(sigmoid=lambda x: x * (1 - x)), "d_sigmoid", "s = sigmoid(x)")
    _expect_fail("activation_grads", _grads(tanh=lambda x: 1 - x ** 2), "d_tanh", "1 - tanh(x)**2")
    _expect_fail("activation_grads", _grads(tanh=lambda x: 1 - np.tanh(x)), "squared")
    _expect_fail("activation_grads", _grads(relu=lambda x: (x >= 0).astype(float)), "x = 0", "x > 0")
    _expect_fail("activation_grads", _grads(relu=ref.relu), "relu(x) itself")
    _expect_fail("activation_grads", _grads(order=(0, 2, 1)), "swapped")
    _expect_fail("activation_grads", lambda x: (ref.relu_grad(x), ref.sigmoid_grad(x)), "3 arrays")
    # an unstable sigmoid inside the derivative gives NaN at x = 1000
    _expect_fail("activation_grads", _grads(sigmoid=lambda x: (np.exp(x) / (1 + np.exp(x)))
                                            * (1 - np.exp(x) / (1 + np.exp(x)))), "NaN")


def test_check_gelu_grad():
    _expect_pass("gelu_grad", ref.gelu_grad)
    erf = np.vectorize(math.erf)  # what a learner without ref.erf might write
    _expect_pass("gelu_grad", lambda x: 0.5 * (1 + erf(x / math.sqrt(2)))
                 + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi))
    phi = lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + ref.erf(x / math.sqrt(2)))  # noqa: E731
    _expect_fail("gelu_grad", cdf, "product rule")
    _expect_fail("gelu_grad", lambda x: x * phi(x), "adds Phi(x)")
    _expect_fail("gelu_grad", phi, "phi(x) alone", "density", "product rule")
    _expect_fail("gelu_grad", lambda x: cdf(x) + phi(x), "Phi(x) + phi(x)", "factor x", "missing")
    _expect_fail("gelu_grad", lambda x: cdf(x) + x * np.exp(-0.5 * x * x), "1/sqrt(2 pi)")
    _expect_fail("gelu_grad", lambda x: 0.5 * (1 + ref.erf(x)) + x * phi(x), "erf(x / sqrt(2))")
    _expect_fail("gelu_grad", ref.gelu_tanh_grad, "tanh approximation")
    _expect_fail("gelu_grad", ref.gelu, "GELU itself")


def test_check_dense_forward():
    _expect_pass("dense_forward", ref.dense_forward)
    _expect_pass("dense_forward", lambda x, w, b: np.einsum("nd,hd->nh", x, w) + b)
    _expect_fail("dense_forward", lambda x, w, b: x @ w + b, "(out, in)", "x @ w.T")
    _expect_fail("dense_forward", lambda x, w, b: x @ w.T, "bias is missing")
    _expect_fail("dense_forward", lambda x, w, b: w @ x.T + b[:, None], "(N, H)")
    _expect_fail("dense_forward", lambda x, w, b: x @ w.T + b.sum(), "wrong", "max error")

    def bias_on_batch_axis(x, w, b):
        out = x @ w.T
        return out + b[:, None] if out.shape[0] == out.shape[1] else out + b
    _expect_fail("dense_forward", bias_on_batch_axis, "batch axis")

    def in_place(x, w, b):
        x -= b.mean()  # changes the caller's array
        return x @ w.T + b
    _expect_fail("dense_forward", in_place, "mutated")


def _mlp(hidden=ref.relu, out_act=None, layers=None, input_act=None):
    def mlp_forward(params, x):
        h = input_act(x) if input_act else x
        count = len(params) // 2
        for k in range(count if layers is None else layers):
            h = h @ params[2 * k].T + params[2 * k + 1]
            if k < count - 1 and hidden is not None:
                h = hidden(h)
        return out_act(h) if out_act else h
    return mlp_forward


def test_check_mlp_forward():
    _expect_pass("mlp_forward", ref.mlp_forward)
    _expect_pass("mlp_forward", _mlp())
    _expect_fail("mlp_forward", _mlp(out_act=ref.relu), "output layer", "linear")
    _expect_fail("mlp_forward", _mlp(hidden=None), "no activation")
    _expect_fail("mlp_forward", _mlp(hidden=ref.sigmoid), "sigmoid")
    _expect_fail("mlp_forward", _mlp(hidden=np.tanh), "tanh")
    _expect_fail("mlp_forward", _mlp(input_act=ref.relu), "input x")

    def two_layers_only(params, x):
        w1, b1, w2, b2 = params[:4]
        return ref.relu(x @ w1.T + b1) @ w2.T + b2
    _expect_fail("mlp_forward", two_layers_only, "with 2 hidden layers", "loop over every (w, b) pair")

    def transposed(params, x):
        h = x
        for k in range(len(params) // 2):
            h = h @ params[2 * k] + params[2 * k + 1]
            if k < len(params) // 2 - 1:
                h = ref.relu(h)
        return h
    _expect_fail("mlp_forward", transposed, "(out, in)")


def test_check_mlp_forward_off_by_one_over_layers():
    def skips_last(params, x):  # range(L - 1): the output layer is never applied
        h = x
        for k in range(len(params) // 2 - 1):
            h = ref.relu(h @ params[2 * k].T + params[2 * k + 1])
        return h
    _expect_fail("mlp_forward", skips_last, "output layer seems to be missing", "loop over every (w, b) pair")
    _expect_fail("mlp_forward", lambda params, x: x @ params[0].T + params[1],  # the first layer only
                 "output layer seems to be missing")

    def from_the_end(params, x):  # fine up to 1 hidden layer, drops the last of three
        h = x
        count = len(params) // 2
        for k in range(min(count, 2)):
            h = h @ params[2 * k].T + params[2 * k + 1]
            if k < count - 1:
                h = ref.relu(h)
        return h
    _expect_fail("mlp_forward", from_the_end, "with 2 hidden layers", "2 of the 3 layers")

    def one_too_many(params, x):
        h = x
        for k in range(len(params) // 2 + 1):
            h = h @ params[2 * k].T + params[2 * k + 1]
        return h
    _expect_fail("mlp_forward", one_too_many, "IndexError", "len(params) // 2")


def test_check_names_the_learners_helper_that_raised():
    def dense_forward(x, w, b):  # the learner's own helper, with w used as (in, out)
        return x @ w + b

    def mlp_forward(params, x):
        h = x
        for k in range(len(params) // 2):
            h = dense_forward(h, params[2 * k], params[2 * k + 1])
        return h
    _expect_fail("mlp_forward", mlp_forward, "raised ValueError", "(raised inside dense_forward)", "x @ w.T")
    # an error in the function itself names no helper, nor does one inside NumPy's own Python code
    result = _expect_fail("dense_forward", dense_forward, "raised ValueError")
    assert "raised inside" not in result.message
    result = _expect_fail("dense_forward", lambda x, w, b: np.einsum("nd,dh->nh", x, w) + b, "raised")
    assert "raised inside" not in result.message

    def activation_grads(x):
        def my_sigmoid(v):
            raise TypeError("oops")
        return (x > 0) * 1.0, my_sigmoid(x), 1 - np.tanh(x) ** 2
    _expect_fail("activation_grads", activation_grads, "TypeError: oops (raised inside my_sigmoid)")


def test_check_collapse_linear():
    _expect_pass("collapse_linear", ref.collapse_linear)
    _expect_pass("collapse_linear", lambda w1, b1, w2, b2: (np.einsum("kh,hd->kd", w2, w1), b1 @ w2.T + b2))
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: (w2 @ w1, b1 @ w2.T), "second bias")
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: (w2 @ w1, b2), "b2 alone")
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: ((w2 @ w1).T, w2 @ b1 + b2), "(out, in)")
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: (w1.T @ w2.T, w2 @ b1 + b2), "(out, in)")
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: (w1 @ w2, w2 @ b1 + b2), "w2 @ w1")
    # b1 + b2 only broadcasts when both layers have the same width: the square case diagnoses it
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: (w2 @ w1, b1 + b2), "b = w2 @ b1 + b2")

    def b1_plus_b2_square_only(w1, b1, w2, b2):
        b = b1 + b2 if b1.shape == b2.shape else w2 @ b1 + b2
        return w2 @ w1, b
    _expect_fail("collapse_linear", b1_plus_b2_square_only, "b1 also passes through the second layer")
    _expect_fail("collapse_linear", lambda w1, b1, w2, b2: w2 @ w1, "2 arrays")


def test_check_xor_weights():
    _expect_pass("xor_weights", ref.xor_params)
    _expect_pass("xor_weights", lambda: [np.ones((2, 2)), np.array([0.0, -1.0]), np.array([[1.0, -2.0]]),
                                         np.zeros(1)])
    _expect_pass("xor_weights", lambda: [[[1, 1], [1, 1]], [0, -1], [[1, -2]], [0]])  # plain lists are fine
    _expect_fail("xor_weights", lambda: [np.ones((2, 2)), np.array([0.0, -1.0]), np.array([[1.0, -1.0]]),
                                         np.zeros(1)], "[0, 1, 1, 1]", "XOR is [0, 1, 1, 0]")
    # biases so large that both units are always on: the network is linear on the corners
    _expect_fail("xor_weights", lambda: [np.eye(2), np.array([5.0, 5.0]), np.array([[1.0, 1.0]]),
                                         np.zeros(1)], "linear", "no linear function fits XOR")
    _expect_fail("xor_weights", lambda: [np.ones((2, 2)), np.zeros(2), np.array([1.0, -2.0]), np.zeros(1)],
                 "w2 has shape (2,)", "(1, 2)")
    _expect_fail("xor_weights", lambda: [np.ones((2, 2)), np.zeros(2)], "4 arrays")
    _expect_fail("xor_weights", lambda: None, "None")


def test_check_messages_are_deterministic():
    wrong = lambda x, w, b: x @ w.T + b.sum()  # noqa: E731
    assert check.run("dense_forward", wrong).message == check.run("dense_forward", wrong).message


# --------------------------------------------------------------------------- the explorer widget

def test_activation_explorer_callbacks():
    pytest.importorskip("ipywidgets")
    from dlcourse.neurons.explore import ActivationExplorer
    explorer = ActivationExplorer(activation="sigmoid", w1=1.0, w2=1.0, b=0.0)
    f_line, grad_line = explorer.axes[0].lines[-2:]
    png = explorer.image.value
    assert png[:4] == b"\x89PNG"
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


def test_sigmoid_check_sees_overflow_hidden_by_the_learners_errstate():
    def naive_but_silenced(x):
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-x))
    result = check.sigmoid(naive_but_silenced)
    assert not result.passed and "overflow" in result.message
    assert isinstance(np.exp, np.ufunc)  # the watch on np.exp is removed afterwards
