"""Chapter 02 · backpropagation: NumPy twin == PyTorch, numerical gradients, the scalar engine, checks, widget."""
import math

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

from dlcourse.backprop.checks import check  # noqa: E402


def _passes(name, obj):
    result = getattr(check, name)(obj)
    assert result.passed, result.message
    assert result.points == result.max_points


def _fails(name, obj, *words):
    result = getattr(check, name)(obj)
    assert not result.passed
    assert result.points == 0
    for word in words:
        assert word in result.message, f"{word!r} not in {result.message!r}"
    return result


def _stub(*args, **kwargs):
    raise NotImplementedError


def test_every_exercise_has_hints_and_points():
    assert check.names == ["value_ops", "value_backward", "linear_backward", "activation_backward",
                           "softmax_cross_entropy", "two_layer_net", "numerical_gradient"]
    for name in check.names:
        assert check.hints(name)
        result = getattr(check, name)(None)
        assert not result.passed and "not defined" in result.message


# Value: the reference passes; a class whose methods are stubs is "not implemented"; classic mistakes

class StubValue(Value):
    def __add__(self, other):
        raise NotImplementedError

    __mul__ = __pow__ = __add__

    def backward(self):
        raise NotImplementedError

    exp = log = tanh = relu = backward


class SwappedMul(Value):
    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (self.data, other.data), "*")


class TanhOfInput(Value):
    def tanh(self):
        return Value(math.tanh(self.data), (self,), (1 - self.data ** 2,), "tanh")


class PowOffByOne(Value):
    def __pow__(self, n):
        return Value(self.data ** n, (self,), (n * self.data ** n,), "**")


class MulWithoutWrapping(Value):
    def __mul__(self, other):
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")


class ReluAlwaysOne(Value):
    def relu(self):
        return Value(max(self.data, 0.0), (self,), (1.0,), "relu")


class ReluSlopeOneAtZero(Value):
    def relu(self):  # out >= 0 instead of out > 0: slope 1 at exactly 0
        return Value(max(self.data, 0.0), (self,), (1.0 if self.data >= 0 else 0.0,), "relu")


def test_value_ops_check():
    _passes("value_ops", Value)
    _fails("value_ops", StubValue, "not implemented")
    _fails("value_ops", SwappedMul, "swapped")
    _fails("value_ops", TanhOfInput, "1 - t^2")
    _fails("value_ops", PowOffByOne, "n a^(n-1)")
    _fails("value_ops", MulWithoutWrapping, "a * 2 + 1", "AttributeError")
    _fails("value_ops", ReluAlwaysOne, "b.relu()", "slope of relu is 0")
    _fails("value_ops", ReluSlopeOneAtZero, "Value(0.0).relu()", "x == 0", "slope must be 0")
    _fails("value_ops", Value(1.0), "pass the class itself")


def _order(root):
    return topological_order(root)


class Overwrites(Value):
    def backward(self):
        self.grad = 1.0
        for node in reversed(_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad = local * node.grad


class ForwardOrder(Value):
    def backward(self):
        self.grad = 1.0
        for node in _order(self):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class RecursivePush(Value):
    def backward(self):
        self.grad = 1.0

        def push(node):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad
                push(child)
        push(self)


class ForgetsSeed(Value):
    def backward(self):
        for node in reversed(_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class NoChainRule(Value):
    def backward(self):
        self.grad = 1.0
        for node in reversed(_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local


class ChangesData(Value):
    def backward(self):
        super().backward()
        for node in _order(self):
            node.data = node.grad


def test_value_backward_check():
    _passes("value_backward", Value)
    _fails("value_backward", StubValue, "not implemented")
    _fails("value_backward", Overwrites, "overwritten", "+=")
    _fails("value_backward", ForwardOrder, "REVERSED topological order")
    _fails("value_backward", RecursivePush, "before it had received all of it", "diamond")
    _fails("value_backward", ForgetsSeed, "self.grad = 1.0")
    _fails("value_backward", NoChainRule, "chain rule")
    _fails("value_backward", ChangesData, "changed the data")


# layers

def test_linear_backward_check():
    _passes("linear_backward", ref.linear_backward)
    _fails("linear_backward", _stub, "not implemented")

    def no_db(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x, None
    _fails("linear_backward", no_db, "db is None")

    def db_not_summed(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x, dout
    _fails("linear_backward", db_not_summed, "db has shape (N, H)", "axis 0")

    def db_wrong_axis(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x, dout.sum(axis=1)
    _fails("linear_backward", db_wrong_axis, "axis 1")

    def db_first_example(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x, dout[0]
    _fails("linear_backward", db_first_example, "one example's dout", "sum over the batch axis")

    def dw_transposed(dout, cache):
        x, w = cache
        return dout @ w, x.T @ dout, dout.sum(axis=0)
    _fails("linear_backward", dw_transposed, "dw is transposed")

    def dw_mean(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x / len(x), dout.sum(axis=0)
    _fails("linear_backward", dw_mean, "divided by N")

    def dx_wrong(dout, cache):
        x, w = cache
        return w.T @ dout.T, dout.T @ x, dout.sum(axis=0)
    _fails("linear_backward", dx_wrong, "dx has shape")

    def only_two(dout, cache):
        x, w = cache
        return dout @ w, dout.T @ x
    _fails("linear_backward", only_two, "three arrays")


def _activation_backward(dout, out, kind):
    if kind == "relu":
        return dout * (out > 0)
    if kind == "sigmoid":
        return dout * out * (1 - out)
    return dout * (1 - out ** 2)


def test_activation_backward_check():
    _passes("activation_backward", _activation_backward)
    _fails("activation_backward", _stub, "not implemented")
    _fails("activation_backward", lambda d, o, k: _activation_backward(np.ones_like(d), o, k), "multiply it by dout")

    def relu_ge(dout, out, kind):
        return dout * (out >= 0) if kind == "relu" else _activation_backward(dout, out, kind)
    _fails("activation_backward", relu_ge, "out > 0")

    def sigmoid_again(dout, out, kind):
        if kind == "sigmoid":
            s = 1 / (1 + np.exp(-out))
            return dout * s * (1 - s)
        return _activation_backward(dout, out, kind)
    _fails("activation_backward", sigmoid_again, "already sigmoid(x)")

    def tanh_not_squared(dout, out, kind):
        return dout * (1 - out) if kind == "tanh" else _activation_backward(dout, out, kind)
    _fails("activation_backward", tanh_not_squared, "squared")

    def in_place(dout, out, kind):
        dout *= _activation_backward(np.ones_like(dout), out, kind)
        return dout
    _fails("activation_backward", in_place, "mutated")


# softmax cross-entropy

def _unstable_sce(logits, y):
    n = len(y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return -np.log(p[np.arange(n), y]).mean(), d / n


def test_softmax_cross_entropy_check():
    _passes("softmax_cross_entropy", ref.softmax_cross_entropy)
    _fails("softmax_cross_entropy", _stub, "not implemented")
    _fails("softmax_cross_entropy", _unstable_sce, "overflow", "maximum", "1000")

    def not_divided(logits, y):
        loss, d = ref.softmax_cross_entropy(logits, y)
        return loss, d * len(y)
    _fails("softmax_cross_entropy", not_divided, "N times too large")

    def summed_loss(logits, y):
        loss, d = ref.softmax_cross_entropy(logits, y)
        return loss * len(y), d
    _fails("softmax_cross_entropy", summed_loss, "sum over the batch", "mean")

    def no_onehot(logits, y):
        return ref.softmax_cross_entropy(logits, y)[0], ref.softmax(logits) / len(y)
    _fails("softmax_cross_entropy", no_onehot, "one-hot")

    def axis0(logits, y):
        p = np.exp(logits - logits.max(axis=0, keepdims=True))
        p = p / p.sum(axis=0, keepdims=True)
        d = p.copy()
        d[np.arange(len(y)), y] -= 1
        return -np.log(p[np.arange(len(y)), y]).mean(), d / len(y)
    _fails("softmax_cross_entropy", axis0, "axis 0")

    def per_example(logits, y):
        shifted = logits - logits.max(axis=1, keepdims=True)
        losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]
        return losses, ref.softmax_cross_entropy(logits, y)[1]
    _fails("softmax_cross_entropy", per_example, "one number")


# two-layer net

def _two_layer(params, x, y, mask=True, scale=1.0, transpose=False, db_sum=True):
    w1, b1, w2, b2 = params
    pre = x @ w1.T + b1
    h = np.maximum(pre, 0)
    loss, dlogits = ref.softmax_cross_entropy(h @ w2.T + b2, y)
    dlogits = dlogits * scale
    dh = dlogits @ w2
    dpre = dh * (pre > 0) if mask else dh
    dw1, dw2 = (x.T @ dpre, h.T @ dlogits) if transpose else (dpre.T @ x, dlogits.T @ h)
    db1, db2 = (dpre.sum(0), dlogits.sum(0)) if db_sum else (dpre, dlogits)
    return loss, [dw1, db1, dw2, db2]


def test_two_layer_net_check():
    _passes("two_layer_net", ref.mlp_loss_and_grads)
    _passes("two_layer_net", _two_layer)
    _fails("two_layer_net", _stub, "not implemented")
    _fails("two_layer_net", lambda p, x, y: _two_layer(p, x, y, mask=False), "ReLU", "mask")
    _fails("two_layer_net", lambda p, x, y: _two_layer(p, x, y, scale=len(y)), "N times too large")
    _fails("two_layer_net", lambda p, x, y: _two_layer(p, x, y, transpose=True), "transposed")
    _fails("two_layer_net", lambda p, x, y: _two_layer(p, x, y, db_sum=False), "sum the gradient over the batch")
    _fails("two_layer_net", lambda p, x, y: (_two_layer(p, x, y)[0], _two_layer(p, x, y)[1][::2]), "four arrays")

    def missing_db(params, x, y):
        loss, grads = _two_layer(params, x, y)
        return loss, [grads[0], None, grads[2], grads[3]]
    _fails("two_layer_net", missing_db, "db1 is None")


# numerical gradient

def _numerical_gradient(f, x, h=1e-5, centred=True, restore=True, divide=2):
    work = x if not restore else x.astype(float)
    grad = np.zeros_like(work)
    for i in np.ndindex(work.shape):
        old = work[i]
        work[i] = old + h
        fp = f(work)
        work[i] = old - h if centred else old
        fm = f(work)
        if restore:
            work[i] = old
        grad[i] = (fp - fm) / (divide * h if centred else h)
    return grad


def test_numerical_gradient_check():
    _passes("numerical_gradient", _numerical_gradient)
    _fails("numerical_gradient", _stub, "not implemented")
    _fails("numerical_gradient", lambda f, x, h=1e-5: _numerical_gradient(f, x, centred=False), "one-sided",
           "centred")
    _fails("numerical_gradient", lambda f, x, h=1e-5: _numerical_gradient(f, x, divide=1), "twice too large")
    _fails("numerical_gradient", lambda f, x, h=1e-5: _numerical_gradient(f, x, restore=False), "x was changed")

    def rows_only(f, x, h=1e-5):
        x = x.astype(float)
        grad = np.zeros(len(x))
        for i in range(len(x)):
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            grad[i] = (f(xp) - f(xm)) / (2 * h)
        return grad
    _fails("numerical_gradient", rows_only, "shape", "one entry at a time")

    def integer_copy(f, x, h=1e-5):
        x = x.copy()  # keeps an integer x integer: every nudge is rounded away
        grad = np.zeros(x.shape)
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h
            fp = f(x)
            x[i] = old - h
            fm = f(x)
            x[i] = old
            grad[i] = (fp - fm) / (2 * h)
        return grad
    _fails("numerical_gradient", integer_copy, "INTEGER", "work on a float copy: x.astype(float)")


def test_check_messages_are_deterministic():
    first = [check.softmax_cross_entropy(_unstable_sce).message, check.value_backward(Overwrites).message]
    second = [check.softmax_cross_entropy(_unstable_sce).message, check.value_backward(Overwrites).message]
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
    explorer.sliders["x1"].value = -2.0
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
