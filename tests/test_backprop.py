"""Chapter 02 · backpropagation: NumPy twin == PyTorch, numerical gradients, the scalar engine, checks, widget."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.backprop import numpy_impl as ref
from dlcourse.backprop.torch_impl import get_params, load_params, loss_and_grads, make_mlp
from dlcourse.gradcheck import numerical_grad, rel_error

RTOL = 1e-10


def _t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


# --------------------------------------------------------------------------- layers vs torch

def test_linear_matches_torch():
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    layer = torch.nn.Linear(5, 3).double()
    w, b = (p.detach().numpy().copy() for p in (layer.weight, layer.bias))
    out, cache = ref.linear_forward(x, w, b)
    dx, dw, db = ref.linear_backward(dout, cache)
    xt = _t(x, grad=True)
    yt = layer(xt)
    yt.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL)
    np.testing.assert_allclose(dw, layer.weight.grad.numpy(), rtol=RTOL)
    np.testing.assert_allclose(db, layer.bias.grad.numpy(), rtol=RTOL)


@pytest.mark.parametrize("name, torch_fn", [("relu", torch.relu), ("sigmoid", torch.sigmoid),
                                            ("tanh", torch.tanh)])
def test_activation_matches_torch(name, torch_fn):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7)) * 3
    x[0, :3] = [-800.0, 800.0, 0.0]  # extremes: stability (and relu'(0) = 0 like torch)
    dout = rng.standard_normal(x.shape)
    forward, backward = getattr(ref, f"{name}_forward"), getattr(ref, f"{name}_backward")
    out, cache = forward(x)
    dx = backward(dout, cache)
    xt = _t(x, grad=True)
    yt = torch_fn(xt)
    yt.backward(torch.from_numpy(dout))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=RTOL, atol=1e-300)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=1e-15)  # 1 - t*t cancels near |t| = 1


def test_softmax_and_log_softmax_match_torch():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 4)) * 5
    logits[0] = [1000.0, -1000.0, 999.0, 0.0]  # would overflow without the max shift
    np.testing.assert_allclose(ref.softmax(logits), torch.softmax(_t(logits), 1).numpy(), rtol=RTOL)
    np.testing.assert_allclose(ref.log_softmax(logits), torch.log_softmax(_t(logits), 1).numpy(), rtol=RTOL)


def test_softmax_cross_entropy_matches_torch():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((8, 5)) * 4
    logits[0] = [1e4, -1e4, 0.0, 3.0, 1e4 - 2]
    y = rng.integers(0, 5, 8)
    loss, dlogits = ref.softmax_cross_entropy(logits, y)
    lt = _t(logits, grad=True)
    loss_t = F.cross_entropy(lt, torch.from_numpy(y))
    loss_t.backward()
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, loss_t.item(), rtol=RTOL)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=RTOL, atol=1e-300)


def test_dtypes_are_kept():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = np.array([0, 1, 2])
    params = ref.init_mlp([4, 5, 3], rng)
    assert all(p.dtype == np.float32 for p in params)
    for name in ("relu", "sigmoid", "tanh"):
        out, cache = getattr(ref, f"{name}_forward")(x)
        assert out.dtype == np.float32
        assert getattr(ref, f"{name}_backward")(x, cache).dtype == np.float32
    loss, grads = ref.mlp_loss_and_grads(params, x, y)
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    loss64, grads64 = ref.mlp_loss_and_grads([p.astype(np.float64) for p in params], x.astype(np.float64), y)
    assert loss64.dtype == np.float64 and all(g.dtype == np.float64 for g in grads64)


# --------------------------------------------------------------------------- the whole MLP vs torch

@pytest.mark.parametrize("sizes", [[5, 7, 3], [6, 8, 5, 4], [4, 3]])
def test_mlp_matches_torch(sizes):
    rng = np.random.default_rng(5)
    params = ref.init_mlp(sizes, rng, dtype=np.float64)
    x = rng.standard_normal((9, sizes[0]))
    y = rng.integers(0, sizes[-1], 9)
    logits, caches = ref.mlp_forward(params, x)
    loss, dlogits = ref.softmax_cross_entropy(logits, y)
    grads = ref.mlp_backward(dlogits, caches)
    loss2, grads2 = ref.mlp_loss_and_grads(params, x, y)

    model = load_params(make_mlp(sizes).double(), params)
    logits_t = model(torch.from_numpy(x))
    loss_t = F.cross_entropy(logits_t, torch.from_numpy(y))
    loss_t.backward()
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=RTOL)
    np.testing.assert_allclose(loss, loss_t.item(), rtol=RTOL)
    assert loss2 == loss
    assert len(grads) == len(params) == len(list(model.parameters()))
    for g, g2, p in zip(grads, grads2, model.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-9, atol=1e-14)
        np.testing.assert_array_equal(g, g2)
    lt, gt = loss_and_grads(model, torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(lt.item(), loss, rtol=RTOL)
    for g, t in zip(grads, gt):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-9, atol=1e-14)


def test_make_mlp_layout_and_parameter_order():
    model = make_mlp([64, 128, 10])
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "ReLU", "Linear"]
    shapes = [tuple(p.shape) for p in model.parameters()]
    params = ref.init_mlp([64, 128, 10], np.random.default_rng(0))
    assert shapes == [p.shape for p in params] == [(128, 64), (128,), (10, 128), (10,)]


def test_load_params_roundtrip_and_errors():
    params = ref.init_mlp([3, 4, 2], np.random.default_rng(0))
    model = load_params(make_mlp([3, 4, 2]), params)
    for a, b in zip(get_params(model), params):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="parameter tensors"):
        load_params(model, params[:2])
    with pytest.raises(ValueError, match="shape"):
        load_params(model, [p.T for p in params])


def test_init_mlp_matches_torch_default_distribution():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for w and b, like nn.Linear's default init."""
    fan_in, fan_out = 50, 400
    torch.manual_seed(0)
    layer = torch.nn.Linear(fan_in, fan_out)
    w_t, b_t = layer.weight.detach().numpy().ravel(), layer.bias.detach().numpy()
    w, b = ref.init_mlp([fan_in, fan_out], np.random.default_rng(0))
    bound = 1 / np.sqrt(fan_in)
    for ours, theirs in ((w.ravel(), w_t), (b, b_t)):
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        assert np.abs(ours).max() > 0.97 * bound  # fills the whole interval
        # same mean (0) and standard deviation (bound / sqrt(3)) within sampling error
        assert abs(ours.mean()) < 4 * bound / np.sqrt(3 * ours.size)
        np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.12)
        np.testing.assert_allclose(ours.std(), bound / np.sqrt(3), rtol=0.1)
    assert w.shape == (fan_out, fan_in) and b.shape == (fan_out,)
    # reproducible from the generator
    w2, _ = ref.init_mlp([fan_in, fan_out], np.random.default_rng(0))
    np.testing.assert_array_equal(w, w2)


# --------------------------------------------------------------------------- numerical gradient checks

def test_gradcheck_linear():
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    dout = rng.standard_normal((3, 2))
    dx, dw, db = ref.linear_backward(dout, ref.linear_forward(x, w, b)[1])
    assert rel_error(dx, numerical_grad(lambda v: ref.linear_forward(v, w, b)[0], x, dout)) < 1e-8
    assert rel_error(dw, numerical_grad(lambda v: ref.linear_forward(x, v, b)[0], w, dout)) < 1e-8
    assert rel_error(db, numerical_grad(lambda v: ref.linear_forward(x, w, v)[0], b, dout)) < 1e-8


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_gradcheck_activations(name):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep relu away from its kink
    dout = rng.standard_normal(x.shape)
    forward, backward = getattr(ref, f"{name}_forward"), getattr(ref, f"{name}_backward")
    dx = backward(dout, forward(x)[1])
    assert rel_error(dx, numerical_grad(lambda v: forward(v)[0], x, dout)) < 1e-7


def test_gradcheck_softmax_cross_entropy():
    rng = np.random.default_rng(8)
    logits, y = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    _, dlogits = ref.softmax_cross_entropy(logits, y)
    num = numerical_grad(lambda v: ref.softmax_cross_entropy(v, y)[0], logits)
    assert rel_error(dlogits, num) < 1e-7


def test_gradcheck_mlp():
    rng = np.random.default_rng(9)
    params = ref.init_mlp([4, 6, 5, 3], rng, dtype=np.float64)
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    _, grads = ref.mlp_loss_and_grads(params, x, y)
    for i, p in enumerate(params):
        def loss_of(v, i=i):
            return ref.mlp_loss_and_grads(params[:i] + [v] + params[i + 1:], x, y)[0]
        assert rel_error(grads[i], numerical_grad(loss_of, p)) < 1e-6, f"parameter {i}"


def test_functions_do_not_mutate_inputs():
    rng = np.random.default_rng(10)
    params = ref.init_mlp([4, 6, 3], rng, dtype=np.float64)
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    before = [p.copy() for p in params] + [x.copy()]
    logits, caches = ref.mlp_forward(params, x)
    logits_before = logits.copy()
    _, dlogits = ref.softmax_cross_entropy(logits, y)
    dlogits_before = dlogits.copy()
    ref.mlp_backward(dlogits, caches)
    for a, b in zip(before, params + [x]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(logits, logits_before)
    np.testing.assert_array_equal(dlogits, dlogits_before)


# --------------------------------------------------------------------------- the scalar engine vs torch

from dlcourse.backprop.engine import Value, topological_order  # noqa: E402

EXPRESSIONS = {  # name -> f(a, b, c) written once, run on Values and on torch tensors
    "polynomial": lambda a, b, c: a * b + b ** 3 - c * a / b,
    "neuron": lambda a, b, c: (a * b + c * 2.0 - 1.0).tanh(),
    "exp-log": lambda a, b, c: (a.exp() + (b * b).exp()).log() * c,
    "reused node": lambda a, b, c: (lambda u: u * u + u.sigmoid() * a)(a * b + c),
    "relu and division": lambda a, b, c: (a - b).relu() / (c * c + 1.0) + (b - a).relu() + 1.0 / (a + 3.0),
    "negation and powers": lambda a, b, c: -(a ** 2) * (-b) + c ** -1 + 2.0 - a,
}


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_value_matches_torch_autograd(name):
    f = EXPRESSIONS[name]
    numbers = (0.8, -1.7, 2.3)
    vals = [Value(v) for v in numbers]
    out = f(*vals)
    out.backward()
    tensors = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in numbers]
    out_t = f(*tensors)
    out_t.backward()
    assert out.data == pytest.approx(out_t.item(), rel=1e-12)
    for v, t in zip(vals, tensors):
        assert v.grad == pytest.approx(t.grad.item(), rel=1e-10, abs=1e-14)


def test_value_sigmoid_is_stable_and_tanh_relu_edges():
    for x in (-800.0, 800.0):
        v = Value(x)
        s = v.sigmoid()
        s.backward()
        assert 0.0 <= s.data <= 1.0 and v.grad == 0.0
    z = Value(0.0)
    r = z.relu()
    r.backward()
    assert r.data == 0.0 and z.grad == 0.0  # slope 0 at the kink, like torch


def test_value_backward_accumulates_and_zero_grad():
    a = Value(3.0)
    out = a * a + a  # d/da = 2a + 1 = 7
    out.backward()
    assert a.grad == 7.0
    out.zero_grad()
    assert a.grad == 0.0 and out.grad == 0.0
    out.backward()
    assert a.grad == 7.0


def test_topological_order_children_first_and_deep_graphs():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    order = topological_order(d)
    assert order.index(a) < order.index(c) < order.index(d) and order.index(b) < order.index(c)
    assert len(order) == 4
    x = Value(0.5)
    y = x
    for _ in range(3000):  # deeper than Python's recursion limit
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == 1.0
    with pytest.raises(TypeError, match="constant exponent"):
        Value(2.0) ** Value(3.0)


# --------------------------------------------------------------------------- graded checks
# Every mistake-table row, the solution, the stub and the course's own code are proven for every
# exercise by tests/test_course.py; here: the diagnoses that are not table rows.

from checktools import solution, stub  # noqa: E402

from dlcourse.backprop.checks import check  # noqa: E402

STEM = "02_backprop"


def test_exercise_names_and_not_defined():
    assert check.names == ["value_ops", "value_backward", "linear_backward", "activation_backward",
                           "softmax_cross_entropy", "two_layer_net", "numerical_gradient",
                           "q_dw_shape", "q_backward_passes", "q_grad_of_square", "q_tanh_saturated_slope"]
    for name in check.names:
        result = getattr(check, name)(None)
        assert not result.passed and "not defined" in result.message


def test_activation_backward_reference_equals_the_layer_pairs():
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for kind in ("relu", "sigmoid", "tanh"):
        out, cache = getattr(ref, f"{kind}_forward")(x)
        np.testing.assert_array_equal(ref.activation_backward(dout, out, kind),
                                      getattr(ref, f"{kind}_backward")(dout, cache))
    with pytest.raises(ValueError, match="kind"):
        ref.activation_backward(dout, x, "gelu")


def test_value_ops_names_the_operations_still_missing():
    learner = solution(STEM, "value_ops")
    partial = type("Value", (learner,), {m: (lambda self, *a: stub()) for m in ("__pow__", "exp", "log")})
    result = check.value_ops(partial)
    assert not result.passed
    assert result.message.startswith("not implemented yet: __pow__, exp, log still raise")
    assert "__mul__" in result.message and "relu" in result.message


def test_subclass_of_the_engine_value_is_course_code():
    class Mine(Value):
        pass
    for name in ("value_ops", "value_backward"):
        result = check.run(name, Mine)
        assert result.status == "course code", result.message


def test_value_backward_names_the_wrong_node_by_label_and_operation():
    def own_order(root):  # the learner's own depth-first sort (the course's is refused)
        order, seen = [], set()

        def visit(node):
            if id(node) not in seen:
                seen.add(id(node))
                for child in node.children:
                    visit(child)
                order.append(node)
        visit(root)
        return order

    class DoublesExp(solution(STEM, "value_backward")):  # not a table row: a bug in one edge only
        def backward(self):
            self.grad = 1.0
            for node in reversed(own_order(self)):
                for child, local in zip(node.children, node.local_grads):
                    child.grad += local * node.grad * (2 if node.op == "exp" else 1)
    result = check.run("value_backward", DoublesExp)
    assert not result.passed and result.status == "failed"
    assert "node `a` (an input)" in result.message and "expected" in result.message
    assert "diamond" in result.details or "chain" in result.message


def test_two_layer_net_is_checked_stage_by_stage():
    def wrong_mask(params, x, y):  # the mask inverted: not a table row
        w1, b1, w2, b2 = params
        pre = x @ w1.T + b1
        h = np.maximum(pre, 0)
        loss, dlogits = solution(STEM, "softmax_cross_entropy")(h @ w2.T + b2, y)  # the course's is refused
        dw2 = dlogits.T @ h
        dh = dlogits @ w2
        dpre = dh * (pre < 0)
        return loss, [dpre.T @ x, dpre.sum(axis=0), dw2, dlogits.sum(axis=0)]
    result = check.run("two_layer_net", wrong_mask)
    assert result.message.startswith("dlogits, dw2, dh are right; dpre is wrong: the ReLU mask")
    assert result.mistake == "stage dpre"


def test_errors_inside_the_learners_code_are_translated():
    def linear(dout, cache):
        x, w = cache
        dx = dout @ w.T  # raises: (N, H) @ (D, H)
        return dx, dout.T @ x, dout.sum(axis=0)
    assert check.run("linear_backward", linear).mistake == "dx uses w.T"

    def sce(logits, y):
        shifted = logits - np.max(logits, axis=1)  # no keepdims: a broadcast error for N != K
        p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        d = p.copy()
        d[np.arange(len(y)), y] -= 1
        return -np.log(p[np.arange(len(y)), y]).mean(), d / len(y)
    assert check.run("softmax_cross_entropy", sce).mistake == "max without keepdims"


def test_solution_runs_clean_and_messages_are_deterministic():
    from dlcourse.backprop.checks import BackwardOverwrites, sce_no_max_shift
    first = [check.softmax_cross_entropy(sce_no_max_shift).message, check.value_backward(BackwardOverwrites).message]
    second = [check.softmax_cross_entropy(sce_no_max_shift).message, check.value_backward(BackwardOverwrites).message]
    assert first == second


# --------------------------------------------------------------------------- pictures and the widget

def test_draw_graph_shows_values_gradients_and_local_derivatives():
    import matplotlib.pyplot as plt

    from dlcourse.backprop.explore import draw_graph
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    out = a * b + a
    out.label = "out"
    out.backward()
    ax = draw_graph(out)
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith("a\n2") for t in texts)  # a's box: name and forward value
    assert "grad -2" in texts and "grad 2" in texts   # dout/da = b + 1, dout/db = a
    assert "-3" in texts and "1" in texts             # local derivatives on the arrows
    assert any(t.startswith("out = +") for t in texts)
    plt.close(ax.figure)


def test_graph_explorer_redraws_on_slider_and_dropdown_changes():
    from dlcourse.backprop.explore import graph_explorer, neuron_graph
    explorer = graph_explorer()
    first = explorer.root.data
    texts_before = [t.get_text() for t in explorer.ax.texts]
    png_before = explorer.image.value
    assert bytes(png_before).startswith(b"\x89PNG")  # an image widget, not a displayed Figure
    explorer.sliders["x1"].value = -2.0
    assert explorer.image.value != png_before
    assert explorer.root.data != first
    assert explorer.root.data == pytest.approx(neuron_graph(x1=-2.0).data)
    assert [t.get_text() for t in explorer.ax.texts] != texts_before
    leaf = next(n for n in topological_order(explorer.root) if n.label == "w1")
    assert leaf.grad == pytest.approx(-2.0 * (1 - explorer.root.data ** 2))  # do/dw1 = x1 * tanh'
    explorer.activation.value = "relu"
    assert explorer.root.op == "relu"
    assert "relu" in explorer.ax.get_title()
    with pytest.raises(ValueError, match="activation"):
        neuron_graph(activation="softplus")


def test_graph_explorer_numbers_in_the_lesson():
    from dlcourse.backprop.explore import graph_explorer
    explorer = graph_explorer()
    assert explorer.root.local_grads[0] == pytest.approx(0.60, abs=0.005)  # n = 0.75
    start = explorer.root.local_grads[0]
    explorer.sliders["b"].value = 3.0
    assert explorer.root.children[0].data == pytest.approx(3.25)
    assert explorer.root.local_grads[0] == pytest.approx(0.006, abs=0.0005)  # saturated
    assert 0.0095 < explorer.root.local_grads[0] / start < 0.0105  # "to about 1% of what it was"
    explorer.activation.value = "relu"
    explorer.sliders["b"].value = -2.0
    assert all(n.grad == 0 for n in topological_order(explorer.root) if n is not explorer.root)  # dead unit
    assert all(s.style.description_width == "initial" for s in explorer.sliders.values())


def test_plot_local_derivatives():
    import matplotlib.pyplot as plt

    from dlcourse.backprop.explore import plot_local_derivatives
    fig = plot_local_derivatives()
    assert len(fig.axes) == 3
    slope = fig.axes[1].lines[1].get_ydata()
    assert slope.max() == pytest.approx(0.25, abs=1e-4)  # sigmoid'(0) = 1/4
    plt.close(fig)


# --------------------------------------------------------------------------- the exercise notebook's source

def _namespace_of(kind):
    """Run the code cells of the solutions source (or of its exercises version) and return the names."""
    from pathlib import Path

    from dlcourse import build
    root = Path(__file__).resolve().parent.parent
    target = next(t for t in build.targets(root, ["02_backprop"]) if t.kind == kind)
    namespace = {}
    for cell in build.render(target, root).cells:
        if cell.cell_type == "code" and "google.colab" not in cell.source:
            exec(compile(cell.source, f"<{kind} cell>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("kind, status", [("solutions", "passed"), ("exercises", "not implemented")])
def test_notebook_functions_pass_or_report_not_implemented(kind, status):
    pytest.importorskip("jupytext")
    namespace = _namespace_of(kind)
    results = check.grade(namespace)
    assert [r.status for r in results] == [status] * len(check.names), [r.message for r in results]


def test_numpy_side_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, dlcourse.backprop.numpy_impl, dlcourse.backprop.engine, dlcourse.backprop.checks; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_backward_built_on_the_course_topological_order_earns_nothing():
    from checktools import solution
    from dlcourse.backprop import engine
    Value = solution("02_backprop", "value_backward")

    def backward(self):
        self.grad = 1.0
        for node in reversed(engine.topological_order(self)):
            node._backward()

    Borrowing = type("Value", (Value,), {"backward": backward})
    result = check.run("value_backward", Borrowing)
    assert result.status == "course code" and "topological_order" in result.message


# --------------------------------------------------------------------------- the learner review of chapter 02
# Each test hands in the learner's exact code (from the review) and asserts the diagnosis.

def _learners_value(code: str):
    """A fresh copy of the solution's Value class with the learner's ``code`` run against it."""
    from checktools import solution_namespace
    namespace = dict(solution_namespace.__wrapped__(STEM))  # a new class: the cached one stays untouched
    exec(compile(code, "<learner cell>", "exec"), namespace)
    return namespace["Value"]


@pytest.mark.parametrize("code", ["import dlcourse.backprop.engine as E\nValue.backward = E.Value.backward",
                                  "import dlcourse.backprop.engine as E\nValue.log = E.Value.log"])
def test_review_course_methods_set_on_the_learners_class_earn_nothing(code):
    cls = _learners_value(code)
    for name in ("value_ops", "value_backward"):
        result = check.run(name, cls)
        assert result.status == "course code" and "no points for the course's own code" in result.message, name


def test_review_activation_wrapper_around_the_course_layers_earns_nothing():
    from dlcourse.backprop import numpy_impl as bp
    ab = lambda dout, out, kind: bp.relu_backward(dout, bp.ReluCache(out > 0)) if kind == 'relu' else bp.tanh_backward(dout, bp.TanhCache(out))  # noqa: E501, E731
    result = check.run("activation_backward", ab)
    assert result.status == "course code" and "relu_backward" in result.message


def test_review_two_layer_net_built_on_the_course_layers_earns_nothing():
    def two_layer_net(params, x, y):
        w1, b1, w2, b2 = params
        pre = x @ w1.T + b1
        h = np.maximum(pre, 0)
        loss, dlogits = ref.softmax_cross_entropy(h @ w2.T + b2, y)
        dh, dw2, db2 = ref.linear_backward(dlogits, ref.LinearCache(h, w2))
        dpre = dh * (pre > 0)
        return loss, [dpre.T @ x, dpre.sum(axis=0), dw2, db2]
    assert check.run("two_layer_net", two_layer_net).status == "course code"

    def sce(logits, y):  # the course's log_softmax does the stable half of exercise 5
        log_p = ref.log_softmax(logits)
        d = np.exp(log_p)
        d[np.arange(len(y)), y] -= 1
        return -log_p[np.arange(len(y)), y].mean(), d / len(y)
    assert check.run("softmax_cross_entropy", sce).status == "course code"


def test_review_numerical_gradient_that_never_restores_its_copy():
    def numerical_gradient(f, x, h=1e-5):
        x = x.astype(float); g = np.zeros_like(x)  # noqa: E702
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h; fp = f(x)  # noqa: E702
            x[i] = old - h; fm = f(x)  # noqa: E702
            g[i] = (fp - fm) / (2 * h)
        return g
    result = check.run("numerical_gradient", numerical_gradient)
    assert result.mistake == "entry not restored" and "tanh" in result.details


def test_review_numerical_gradient_with_h_hard_coded_and_integer_x():
    def ignores_h(f, x, h=1e-5):
        h = 1e-3
        x = x.astype(float); g = np.zeros_like(x)  # noqa: E702
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h; fp = f(x)  # noqa: E702
            x[i] = old - h; fm = f(x)  # noqa: E702
            x[i] = old
            g[i] = (fp - fm) / (2 * h)
        return g
    assert check.run("numerical_gradient", ignores_h).mistake == "ignores h"

    def no_float_copy(f, x, h=1e-5):
        g = np.zeros(x.shape)
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h; fp = f(x)  # noqa: E702
            x[i] = old - h; fm = f(x)  # noqa: E702
            x[i] = old
            g[i] = (fp - fm) / (2 * h)
        return g
    result = check.run("numerical_gradient", no_float_copy)
    assert result.mistake == "integer copy" and "truncated" in result.message
    assert "every slope is 0" not in result.message


def test_review_numerical_gradient_reproduce_line_runs():
    from dlcourse.backprop.checks import numgrad_copy_not_restored
    result = check.run("numerical_gradient", numgrad_copy_not_restored)
    line = result.details.split("reproduce it in a new cell:  ")[1]
    namespace = {"np": np, "numerical_gradient": numgrad_copy_not_restored}
    exec(f"_got = {line}", namespace)
    assert namespace["_got"].shape == (3,)


_BACKWARD_HEAD = '''
def backward(self):
    topo, seen = [], set()
    def build(v):
'''
_BACKWARD_TAIL = '''
    build(self)
    self.grad = 1.0
    for node in {order}:
        for c, l in zip(node.children, node.local_grads):
            c.grad += l * node.grad
Value.backward = backward
'''


@pytest.mark.parametrize("build, order, mistake", [
    ("""        if v.data not in seen:
            seen.add(v.data)
            for c in v.children: build(c)
            topo.append(v)""", "reversed(topo)", "visited set keyed by value"),
    ("""        if v not in seen:
            seen.add(v)
            topo.append(v)
            for c in v.children: build(c)""", "topo", "depth-first pre-order"),
])
def test_review_value_backward_value_keyed_set_and_pre_order(build, order, mistake):
    cls = _learners_value(_BACKWARD_HEAD + build + _BACKWARD_TAIL.format(order=order))
    result = check.run("value_backward", cls)
    assert result.mistake == mistake, result.message


def test_review_value_backward_breadth_first_keeps_its_own_row():
    cls = _learners_value('''
def backward(self):
    from collections import deque
    order, seen, q = [], {self}, deque([self])
    while q:
        v = q.popleft(); order.append(v)
        for c in v.children:
            if c not in seen: seen.add(c); q.append(c)
    self.grad = 1.0
    for node in order:
        for c, l in zip(node.children, node.local_grads):
            c.grad += l * node.grad
Value.backward = backward
''')
    assert check.run("value_backward", cls).mistake == "breadth-first order"


@pytest.mark.parametrize("code, mistake", [
    ('''
def __pow__(self, n):
    old = self.data
    self.data = old ** n
    return Value(self.data, (self,), (n * old ** (n - 1),), "**")
Value.__pow__ = __pow__''', "input data changed"),
    ('''
def __pow__(self, n):
    n = int(n)
    return Value(self.data ** n, (self,), (n * self.data ** (n - 1),), "**")
Value.__pow__ = __pow__''', "exponent made an integer"),
    ('''
def __mul__(self, other):
    other = other if isinstance(other, Value) else Value(other)
    return Value(self.data * other.data, (self, other), (other, self), "*")
Value.__mul__ = __mul__''', "local derivatives as Values"),
])
def test_review_value_ops_mutation_integer_exponent_and_values_as_local_grads(code, mistake):
    result = check.run("value_ops", _learners_value(code))
    assert result.mistake == mistake, result.message
    assert "while being checked" not in result.message


_SCE_TAIL = """
p = np.exp(z - lse)
d = p.copy(); d[np.arange(N), y] -= 1
return loss, d / N
"""


@pytest.mark.parametrize("body, mistake", [
    ("""
z = logits - logits.max()
with np.errstate(all='ignore'):
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -(z - lse)[np.arange(N), y].mean()
    p = np.exp(z - lse)
d = p.copy(); d[np.arange(N), y] -= 1
return loss, d / N
""", "global max"),
    ("""
z = logits
with np.errstate(all='ignore'):
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -(z - lse)[np.arange(N), y].mean()
    p = np.exp(z - lse)
d = p.copy(); d[np.arange(N), y] -= 1
return loss, d / N
""", "no max shift"),
    ("""
z = logits - logits.max(axis=1, keepdims=True)
lse = np.log(np.exp(z).sum(axis=1))
loss = -(z - lse)[np.arange(N), y].mean()
""" + _SCE_TAIL, "sum without keepdims"),
    ("""
z = logits - logits.max(axis=1)
lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
loss = -(z - lse)[np.arange(N), y].mean()
""" + _SCE_TAIL, "max without keepdims"),
    ("""
z = logits - logits.max(axis=1, keepdims=True)
p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
loss = -np.log(p[np.arange(N), y]).mean()
d = p.copy(); d[np.arange(N), y] -= 1
return loss, d / N
""", "log of softmax"),
])
def test_review_softmax_cross_entropy_stability_and_keepdims(body, mistake):
    import textwrap
    namespace = {"np": np}
    exec("def softmax_cross_entropy(logits, y):\n    N = logits.shape[0]\n" + textwrap.indent(body.strip(), "    "),
         namespace)
    result = check.run("softmax_cross_entropy", namespace["softmax_cross_entropy"])
    assert result.mistake == mistake, result.message


def _two_layer_head(params, x, y):
    w1, b1, w2, b2 = params
    N = x.shape[0]
    pre = x @ w1.T + b1
    h = np.maximum(pre, 0)
    logits = h @ w2.T + b2
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(N), y].mean()
    dlogits = np.exp(log_p); dlogits[np.arange(N), y] -= 1; dlogits /= N  # noqa: E702
    return N, pre, h, logits, loss, dlogits


def test_review_two_layer_net_without_max_shift_in_the_loss():
    def two_layer_net(params, x, y):
        w1, b1, w2, b2 = params
        N, pre, h, logits, loss, dlogits = _two_layer_head(params, x, y)
        dw2 = dlogits.T @ h; db2 = dlogits.sum(0)  # noqa: E702
        dh = dlogits @ w2
        dpre = dh * (pre > 0)
        dw1 = dpre.T @ x; db1 = dpre.sum(0)  # noqa: E702
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        loss = -np.log(p[np.arange(N), y]).mean()
        return loss, [dw1, db1, dw2, db2]
    assert check.run("two_layer_net", two_layer_net).mistake == "no max shift"


def test_review_two_layer_net_mask_from_h_greater_equal_zero():
    def two_layer_net(params, x, y):
        w1, b1, w2, b2 = params
        N, pre, h, logits, loss, dlogits = _two_layer_head(params, x, y)
        dw2 = dlogits.T @ h; db2 = dlogits.sum(0)  # noqa: E702
        dh = dlogits @ w2
        dpre = dh * (h >= 0)
        dw1 = dpre.T @ x; db1 = dpre.sum(0)  # noqa: E702
        return loss, [dw1, db1, dw2, db2]
    result = check.run("two_layer_net", two_layer_net)
    assert result.mistake == "relu mask with >=", result.message


def test_review_linear_backward_db_with_keepdims():
    def linear_backward(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x, dout.sum(0, keepdims=True)
    result = check.run("linear_backward", linear_backward)
    assert result.mistake == "db keepdims" and "(1, H)" in result.message


def test_review_linear_backward_reproduce_line_runs_in_a_fresh_exercise_cell():
    """The built exercise notebook's set-up cells, then the failing case's line, in a new namespace."""
    pytest.importorskip("jupytext")
    namespace = _namespace_of("exercises")
    fresh = {k: namespace[k] for k in ("np", "math", "check")}

    def linear_backward(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x, dout
    result = check.run("linear_backward", linear_backward)
    line = result.details.split("reproduce it in a new cell:  ")[1]
    assert line.startswith("from dlcourse.backprop.numpy_impl import LinearCache; ")
    fresh["linear_backward"] = linear_backward
    exec(compile(line, "<new cell>", "exec"), fresh)


def test_review_concept_question_answered_with_a_bool():
    result = check.q_backward_passes(lambda: True)
    assert not result.passed and result.mistake == "answer's form" and "bool" in result.message


def test_review2_pow_that_divides_by_the_base_fails_at_zero():
    base = solution(STEM, "value_ops")

    class Value(base):
        def __pow__(self, n):
            out = self.data ** n
            return Value(out, (self,), (n * out / self.data,), "**")
    result = check.value_ops(Value)
    assert not result.passed and "ZeroDivisionError" in result.message
