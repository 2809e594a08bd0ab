"""Graded checks for the exercises of chapter 02 (``exercises/02_backprop.ipynb``).

Each check runs the learner's code on several cases against the reference in
``engine.py`` / ``numpy_impl.py`` and, when the answer is wrong, tries the
classic mistakes (swapped local derivatives, gradients overwritten instead of
accumulated, wrong graph order, ``db`` not summed over the batch, ``dw``
transposed, a forgotten ``1/N``, an overflowing softmax, a one-sided finite
difference, ...) to say precisely which one it is.
"""
from __future__ import annotations

import math

import numpy as np

from dlcourse.backprop import numpy_impl as ref
from dlcourse.backprop.engine import Value as RefValue, topological_order
from dlcourse.grading import CheckFailed, Checker, call, diagnose, expect, expect_close, expect_tuple
from dlcourse.grading import matches as _close

check = Checker("02_backprop")


def _attempt(what: str, thunk):
    """Run a piece of the learner's code; turn an exception into a precise message."""
    try:
        return thunk()
    except NotImplementedError:
        raise
    except CheckFailed:
        raise
    except Exception as err:
        advice = ""
        if isinstance(err, AttributeError) and "attribute 'data'" in str(err):
            advice = " (wrap plain numbers first: other = other if isinstance(other, Value) else Value(other))"
        raise CheckFailed(f"{what} raised {type(err).__name__}: {err}{advice}") from None


# =========================================================================== the scalar engine

def _grads_by_chain_rule(root) -> dict[int, float]:
    """d root / d node for every node of the learner's graph, by the correct algorithm.

    Reads only ``children`` and ``local_grads``, so the learner's operations
    can be checked even before their ``backward`` works.
    """
    order = topological_order(root)  # reads only ``children``, so it works on the learner's Value too
    grads = {id(n): 0.0 for n in order}
    grads[id(root)] = 1.0
    for node in reversed(order):
        children, local = tuple(node.children), tuple(node.local_grads)
        if len(children) != len(local):
            raise CheckFailed(f"a node made by {node.op or 'an operation'!r} has {len(children)} children but "
                              f"{len(local)} local derivatives: give one local derivative per child, same order")
        for child, g in zip(children, local):
            grads[id(child)] += float(g) * grads[id(node)]
    return grads


_A, _B = 0.7, -1.3
_OPS = [  # (expression, build(a, b), the rule to remind of)
    ("a + b", lambda a, b: a + b, "d(a+b)/da = d(a+b)/db = 1"),
    ("a * b", lambda a, b: a * b, "d(ab)/da = b and d(ab)/db = a"),
    ("a ** 3", lambda a, b: a ** 3, "d(a^n)/da = n a^(n-1)"),
    ("b ** -2", lambda a, b: b ** -2, "d(b^n)/db = n b^(n-1)"),
    ("a.exp()", lambda a, b: a.exp(), "d(e^a)/da = e^a"),
    ("a.log()", lambda a, b: a.log(), "d(ln a)/da = 1/a"),
    ("b.tanh()", lambda a, b: b.tanh(), "d tanh(b)/db = 1 - tanh(b)^2"),
    ("a.relu()", lambda a, b: a.relu(), "the slope of relu is 1 where the input is positive"),
    ("b.relu()", lambda a, b: b.relu(), "the slope of relu is 0 where the input is negative"),
    ("a * 2 + 1", lambda a, b: a * 2 + 1, "plain numbers must be wrapped in a Value"),
    ("3 * a - b", lambda a, b: 3 * a - b, "3 * a calls __rmul__, which uses __mul__"),
    ("a / b", lambda a, b: a / b, "a / b is a * b**-1"),
    ("(a * b + a).tanh()", lambda a, b: (a * b + a).tanh(), "a is used twice: both paths add up"),
]


def _op_diagnosis(expr: str, out, a, b) -> str:
    """A precise reason for the most common wrong local derivatives, or ''."""
    local = tuple(float(g) for g in getattr(out, "local_grads", ()))
    if expr == "a * b" and _close(local, (a.data, b.data)) and not _close(local, (b.data, a.data)):
        return "the local derivatives of a * b are swapped: d(ab)/da is b, d(ab)/db is a"
    if expr == "a ** 3" and _close(local, (3 * _A ** 3,)):
        return "a ** 3 used n a^n as its local derivative; it is n a^(n-1)"
    if expr == "b.tanh()" and _close(local, (1 - _B ** 2,)):
        return "b.tanh() used 1 - b^2; the derivative is 1 - t^2 with t = tanh(b), the output"
    if expr == "a.exp()" and _close(local, (1.0,)):
        return "a.exp() has local derivative e^a (the output itself), not 1"
    if expr == "a.log()" and _close(local, (math.log(_A),)):
        return "a.log() has local derivative 1/a, not ln(a)"
    return ""


@check.exercise(points=2, target="Value", hints=[
    "Every operation returns Value(result, (inputs...), (local derivative per input...), op). "
    "Write the local derivative with the numbers you have right now (self.data, other.data).",
    "For a * b: Value(self.data * other.data, (self, other), (other.data, self.data), '*'). "
    "For tanh: t = math.tanh(self.data); Value(t, (self,), (1 - t**2,), 'tanh').",
])
def value_ops(cls):
    """The operations of your Value class: each result's value and its local derivatives."""
    expect(isinstance(cls, type), "pass the class itself: check.value_ops(Value)")
    for expr, build, rule in _OPS:
        a, b = cls(_A), cls(_B)
        out = _attempt(expr, lambda: build(a, b))
        expect(out is not None, f"{expr} returned None: did you forget a `return`?")
        expect(all(hasattr(out, k) for k in ("data", "children", "local_grads")),
               f"{expr} returned a {type(out).__name__}, expected a Value")
        want = build(RefValue(_A), RefValue(_B))
        expect(_close(out.data, want.data, rtol=1e-9),
               f"{expr} has data {float(out.data):.6g}, expected {want.data:.6g}")
        reason = _op_diagnosis(expr, out, a, b)
        if reason:
            raise CheckFailed(reason)
        got = _grads_by_chain_rule(out)
        ra, rb = RefValue(_A), RefValue(_B)
        ref_out = build(ra, rb)
        ref_out.backward()
        for name, node, expected in (("a", a, ra.grad), ("b", b, rb.grad)):
            value = got.get(id(node), 0.0)
            expect(_close(value, expected, rtol=1e-7, atol=1e-12),
                   f"d({expr})/d{name} comes out as {value:.6g}, expected {expected:.6g} ({rule})")
    zero = _attempt("Value(0.0).relu()", lambda: cls(0.0).relu())
    expect(zero is not None and hasattr(zero, "data") and hasattr(zero, "local_grads"),
           "Value(0.0).relu() must return a Value")
    expect(_close(zero.data, 0.0), f"Value(0.0).relu() has data {float(zero.data):.6g}, expected 0")
    slope = tuple(float(g) for g in zero.local_grads)
    expect(_close(slope, (0.0,)),
           f"Value(0.0).relu() has local derivative {slope[0] if len(slope) == 1 else slope}: at x == 0 "
           "the slope must be 0 (slope 0 where the input is <= 0): test self.data > 0, not >= 0")
    return f"all {len(_OPS)} expressions and relu at exactly 0 have the right values and local derivatives"


# graphs for value_backward, built with the learner's constructor: node i has (data, [(child, local), ...]);
# children have smaller indices, so the numbering is already a topological order
_GRAPHS = {
    "a chain a -> b -> c -> d": [(1.0, []), (2.0, [(0, 2.0)]), (3.0, [(1, -3.0)]), (4.0, [(2, 0.5)])],
    "a node whose two inputs are the same Value (like a * a)": [(1.5, []), (2.25, [(0, 3.0), (0, 4.0)])],
    "a diamond: u = f(a), v = g(u, a), w = h(u, v)": [
        (1.0, []), (2.0, [(0, 2.0)]), (3.0, [(1, 3.0), (0, 5.0)]), (4.0, [(1, 7.0), (2, 11.0)])],
}


def _random_graph(num_nodes=24, seed=0):
    rng = np.random.default_rng(seed)
    spec = [(float(rng.normal()), []) for _ in range(4)]
    for i in range(4, num_nodes):
        k = int(rng.integers(1, 4))
        children = rng.choice(i, size=k, replace=False)
        spec.append((float(rng.normal()), [(int(c), float(np.round(rng.normal(), 2))) for c in children]))
    # make the last node depend on many others, so every node reaches the output
    spec.append((0.0, [(j, 1.0) for j in range(num_nodes) if j % 3 == 0] + [(num_nodes - 1, 1.0)]))
    return spec


_GRAPHS["a random graph of 25 nodes"] = _random_graph()


def _simulate(spec, mode: str) -> list[float]:
    """The gradients the right algorithm, or a classic wrong one, gives on ``spec``."""
    grads = [0.0] * len(spec)
    last = len(spec) - 1
    grads[last] = 1.0
    if mode == "recursive":  # push the gradient down as soon as it arrives, no topological order
        def push(i):
            for c, local in spec[i][1]:
                grads[c] += local * grads[i]
                push(c)
        push(last)
        return grads
    order = range(last, -1, -1) if mode != "forward_order" else range(last + 1)
    for i in order:
        for c, local in spec[i][1]:
            if mode == "overwrite":
                grads[c] = local * grads[i]
            elif mode == "no_chain":
                grads[c] += local
            else:
                grads[c] += local * grads[i]
    return grads


_MISTAKES = {
    "overwrite": "gradients were overwritten: a Value used more than once must add up what each use "
                 "sends it, child.grad += local * node.grad (not =)",
    "recursive": "a node passed its gradient on before it had received all of it (a recursive push "
                 "visits a shared node twice): build a topological order first, then go through it in reverse",
    "forward_order": "the nodes were visited in topological order (inputs first); backward must go through "
                     "them in REVERSED topological order, output first",
    "no_chain": "each child got only the local derivative: multiply it by the gradient of the node above, "
                "child.grad += local * node.grad (the chain rule)",
}


@check.exercise(points=3, target="Value", hints=[
    "Two steps. 1) List the nodes so that every node comes after all its children (a depth-first "
    "search that appends a node after visiting its children). 2) Set self.grad = 1.0 and go through "
    "that list reversed, adding local * node.grad to each child's grad.",
    "order, seen = [], set(); def visit(n): if n not in seen: seen.add(n); [visit(c) for c in n.children]; "
    "order.append(n). Then visit(self); self.grad = 1.0; for node in reversed(order): for child, local in "
    "zip(node.children, node.local_grads): child.grad += local * node.grad",
])
def value_backward(cls):
    """Value.backward(): gradients of every node by the chain rule, in reverse topological order."""
    expect(isinstance(cls, type), "pass the class itself: check.value_backward(Value)")
    for what, spec in _GRAPHS.items():
        nodes = []
        for data, edges in spec:
            nodes.append(_attempt(f"Value({data}, children, local_grads)",
                                  lambda: cls(data, tuple(nodes[c] for c, _ in edges),
                                              tuple(g for _, g in edges), "f" if edges else "")))
        root = nodes[-1]
        _attempt("backward()", lambda: root.backward())
        got = [float(n.grad) for n in nodes]
        expect(all(_close(n.data, d) for n, (d, _) in zip(nodes, spec)),
               f"backward() changed the data of the nodes ({what}); it must only fill in .grad")
        want = _simulate(spec, "right")
        if _close(got, want, rtol=1e-9):
            continue
        expect(_close(got[-1], 1.0), f"the output's grad is {got[-1]:.6g} after backward ({what}): "
                                     "start with self.grad = 1.0 (d out / d out = 1)")
        for mode, message in _MISTAKES.items():
            if _close(got, _simulate(spec, mode), rtol=1e-9):
                raise CheckFailed(f"{message} (seen on {what})")
        i = next(i for i, (g, w) in enumerate(zip(got, want)) if not _close(g, w, rtol=1e-9))
        raise CheckFailed(f"on {what}, node {i} has grad {got[i]:.6g}, expected {want[i]:.6g}")
    return f"right gradients on {len(_GRAPHS)} graphs, including shared nodes and a node used twice"


# =========================================================================== layers

@check.exercise(points=2, hints=[
    "out = x @ w.T + b. Differentiate entry by entry: out[n, h] = sum_d x[n, d] w[h, d] + b[h]. "
    "Every gradient must have the shape of the thing it is the gradient of.",
    "dx = dout @ w  (N, D);  dw = dout.T @ x  (H, D);  db = dout.sum(axis=0)  (H,)",
])
def linear_backward(fn):
    """linear_backward(dout, cache) -> dx, dw, db for out = x @ w.T + b."""
    rng = np.random.default_rng(20)
    for n, d, h in ((4, 3, 5), (1, 2, 3), (3, 4, 4)):  # (4, 4): square w, where a transpose keeps the shape
        x, w, _ = rng.standard_normal((n, d)), rng.standard_normal((h, d)), rng.standard_normal(h)
        dout = rng.standard_normal((n, h))
        cache = ref.LinearCache(x, w)
        want_dx, want_dw, want_db = ref.linear_backward(dout, cache)
        dx, dw, db = expect_tuple(call(fn, dout, cache), 3, "(dx, dw, db)", "linear_backward", "arrays")
        case = f"for (N, D, H) = {(n, d, h)}"
        expect(db is not None, "db is None: the bias gets a gradient too, dout summed over the batch")
        if dw is not None and np.shape(dw) == (d, h) and (d != h or _close(dw, want_dw.T)) and not _close(dw, want_dw):
            raise CheckFailed(f"dw is transposed {case}: it must have w's shape (H, D); use dout.T @ x")
        if np.shape(db) == (n, h):
            raise CheckFailed(f"db has shape (N, H) {case}: the bias is shared by the whole batch, "
                              "so sum dout over the batch, axis 0")
        if n > 1 and _close(db, dout.sum(axis=1)):
            raise CheckFailed(f"db was summed over axis 1 {case}; sum over the batch, axis 0")
        if n > 1 and any(_close(db, row) for row in dout):
            raise CheckFailed(f"db looks like one example's dout {case}; sum over the batch axis: "
                              "db = dout.sum(axis=0)")
        if n > 1 and _close(db, want_db / n):
            raise CheckFailed(f"db is the mean of dout over the batch {case}; it must be the sum "
                              "(the loss already divides by N)")
        if n > 1 and _close(dw, want_dw / n):
            raise CheckFailed(f"dw was divided by N {case}; it must be the sum over the batch, dout.T @ x")
        if dx is not None and np.shape(dx) != (n, d):
            raise CheckFailed(f"dx has shape {np.shape(dx)} {case}, expected x's shape {(n, d)}: dx = dout @ w")
        expect_close(dx, want_dx, f"dx {case}")
        expect_close(dw, want_dw, f"dw {case}")
        expect_close(db, want_db, f"db {case}")
    return "dx, dw and db match on 3 cases, including a batch of 1 and a square weight"


def _activation_mistakes(kind, dout, out):
    """(wrong answer, message) pairs for activation_backward."""
    local_only = {"relu": (out > 0) * 1.0, "sigmoid": out * (1 - out), "tanh": 1 - out ** 2}[kind]
    mistakes = [(local_only, f"{kind}: you returned only the local derivative; multiply it by dout "
                             "(the chain rule)")]
    if kind == "sigmoid":
        s = ref.sigmoid(out)
        mistakes.append((dout * s * (1 - s), "sigmoid: `out` is already sigmoid(x); use s = out directly, "
                                             "do not apply the sigmoid again"))
        mistakes.append((dout * out * (1 + out), "sigmoid: the derivative is s (1 - s), not s (1 + s)"))
    if kind == "tanh":
        t = np.tanh(out)
        mistakes.append((dout * (1 - t ** 2), "tanh: `out` is already tanh(x); use 1 - out**2 directly, "
                                              "do not apply tanh again"))
        mistakes.append((dout * (1 - out), "tanh: the derivative is 1 - out**2 (squared), not 1 - out"))
    if kind == "relu":
        mistakes.append((dout * (out >= 0), "relu: where the output is 0 (the input was <= 0) the slope "
                                            "is 0; use out > 0, not out >= 0"))
        mistakes.append((dout * out, "relu: multiply dout by the mask (out > 0), not by out itself"))
    return mistakes


@check.exercise(points=2, hints=[
    "Write each local derivative in terms of the OUTPUT out: relu -> 1 where out > 0 else 0; "
    "sigmoid -> out (1 - out); tanh -> 1 - out**2. Then multiply by dout.",
    "if kind == 'relu': return dout * (out > 0); if kind == 'sigmoid': return dout * out * (1 - out); "
    "if kind == 'tanh': return dout * (1 - out**2)",
])
def activation_backward(fn):
    """activation_backward(dout, out, kind) -> dx for kind in relu / sigmoid / tanh, from the output."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((4, 6)) * 2
    x[0, :2] = [30.0, -30.0]  # saturated units: the slope is ~0 there
    dout = rng.standard_normal(x.shape)
    for kind in ("relu", "sigmoid", "tanh"):
        out, cache = getattr(ref, f"{kind}_forward")(x)
        want = getattr(ref, f"{kind}_backward")(dout, cache)
        got = call(fn, dout, out, kind)
        diagnose(got, want, _activation_mistakes(kind, dout, out), rtol=1e-7, atol=1e-12)
        expect_close(got, want, f"activation_backward(dout, out, {kind!r})", rtol=1e-7, atol=1e-12)
    return "relu, sigmoid and tanh backward match, saturated units included"


# =========================================================================== softmax cross-entropy

def _axis0_variant(logits, y):
    p = np.exp(logits - logits.max(axis=0, keepdims=True))
    p = p / p.sum(axis=0, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1
    return loss, (p - onehot) / n


@check.exercise(points=3, hints=[
    "Shift each row by its maximum (z = logits - logits.max(axis=1, keepdims=True)); then "
    "log softmax = z - log(sum(exp(z), axis=1)). The loss is the mean of -log p at the true classes; "
    "the gradient is (softmax - onehot) / N.",
    "n = len(y); z = logits - logits.max(1, keepdims=True); p = np.exp(z); p /= p.sum(1, keepdims=True); "
    "loss = -np.log(p[np.arange(n), y]).mean(); d = p.copy(); d[np.arange(n), y] -= 1; return loss, d / n",
])
def softmax_cross_entropy(fn):
    """softmax_cross_entropy(logits, y) -> (mean loss, dlogits), stable for huge logits."""
    rng = np.random.default_rng(22)
    cases = [("a batch of 5", rng.standard_normal((5, 4)) * 2, rng.integers(0, 4, 5)),
             ("a batch of 1", rng.standard_normal((1, 3)), np.array([2]))]
    big = rng.standard_normal((3, 5)) * 3 + np.array([[1000.0], [-1000.0], [0.0]])
    big[2] = [800.0, -800.0, 0.0, 799.0, 5.0]
    cases.append(("logits as large as +-1000", big, np.array([1, 3, 3])))
    for what, logits, y in cases:
        want_loss, want_d = ref.softmax_cross_entropy(logits, y)
        loss, dlogits = expect_tuple(call(fn, logits, y), 2, "(loss, dlogits)", "softmax_cross_entropy")
        expect(loss is not None and dlogits is not None, "return both the loss and dlogits (one is None)")
        expect(np.ndim(loss) == 0, f"the loss must be one number, the mean over the batch; got shape "
                                   f"{np.shape(loss)} ({what})")
        n = len(y)
        finite = bool(np.isfinite(np.asarray(loss, dtype=np.float64))) and \
            bool(np.all(np.isfinite(np.asarray(dlogits, dtype=np.float64))))
        expect(finite, f"NaN or inf with {what}: exp overflowed. Subtract each row's maximum before "
                       "exp (log-sum-exp trick); it does not change the result")
        diagnose(loss, want_loss, [
            (want_loss * n, f"the loss is the sum over the batch; take the mean (divide by N) ({what})"),
            (-want_loss, f"the loss has the wrong sign: it is -log p of the true class ({what})"),
            (_axis0_variant(logits, y)[0], "the softmax was normalised over axis 0 (the batch); "
                                           f"each ROW must sum to 1: use axis=1 ({what})"),
        ], rtol=1e-7)
        diagnose(dlogits, want_d, [
            (want_d * n, f"dlogits is N times too large: the loss is a mean, so divide by N ({what})"),
            (-want_d, f"dlogits has the wrong sign: it is softmax minus one-hot, (p - onehot) / N ({what})"),
            (ref.softmax(logits) / n, "dlogits is missing the one-hot term: subtract 1 at the true class "
                                      f"({what})"),
            (ref.softmax(logits), "dlogits is the plain softmax: subtract 1 at the true class and divide "
                                  f"by N ({what})"),
            (_axis0_variant(logits, y)[1], "the softmax was normalised over axis 0 (the batch); "
                                           f"use axis=1 ({what})"),
        ], rtol=1e-7)
        expect_close(loss, want_loss, f"the loss ({what})", rtol=1e-7)
        expect_close(dlogits, want_d, f"dlogits ({what})", rtol=1e-7, atol=1e-12)
    return "loss and dlogits match on 3 batches, including logits of +-1000 and a batch of 1"


# =========================================================================== a two-layer network

def _gradients_without_relu_mask(params, x, y):
    """The gradients of Linear -> ReLU -> Linear -> softmax CE if the backward pass forgets the ReLU."""
    w1, b1, w2, b2 = params
    pre = x @ w1.T + b1
    h = np.maximum(pre, 0)
    logits = h @ w2.T + b2
    _, dlogits = ref.softmax_cross_entropy(logits, y)
    dh = dlogits @ w2
    return [dh.T @ x, dh.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


@check.exercise(points=3, hints=[
    "Forward: pre = x @ w1.T + b1; h = relu(pre); logits = h @ w2.T + b2; then the loss and dlogits "
    "as in softmax_cross_entropy. Backward, layer by layer from the top: dw2, db2, dh; the ReLU "
    "lets dh through only where pre > 0; then dw1, db1.",
    "dw2 = dlogits.T @ h; db2 = dlogits.sum(0); dh = dlogits @ w2; dpre = dh * (pre > 0); "
    "dw1 = dpre.T @ x; db1 = dpre.sum(0); return loss, [dw1, db1, dw2, db2]",
])
def two_layer_net(fn):
    """two_layer_net(params, x, y) -> (loss, [dw1, db1, dw2, db2]) for Linear-ReLU-Linear + softmax CE."""
    rng = np.random.default_rng(23)
    names = ["dw1", "db1", "dw2", "db2"]
    for n, d, h, c in ((6, 4, 5, 3), (1, 3, 4, 2)):
        params = ref.init_mlp([d, h, c], rng, dtype=np.float64)
        params = [p * 3 for p in params]  # larger weights: more ReLUs switched off, so the mask matters
        x, y = rng.standard_normal((n, d)), rng.integers(0, c, n)
        case = f"for (N, D, H, C) = {(n, d, h, c)}"
        want_loss, want = ref.mlp_loss_and_grads(params, x, y)
        loss, grads = expect_tuple(call(fn, params, x, y), 2, "(loss, grads)", "two_layer_net")
        expect(isinstance(grads, (tuple, list)) and len(grads) == 4,
               "grads must be a list of four arrays [dw1, db1, dw2, db2], in the order of params")
        if n > 1 and _close(loss, want_loss * n):
            raise CheckFailed(f"the loss is the sum over the batch; take the mean {case}")
        expect_close(loss, want_loss, f"the loss {case}", rtol=1e-7)
        if n > 1 and all(_close(g, w * n) for g, w in zip(grads, want) if g is not None):
            raise CheckFailed(f"every gradient is N times too large {case}: dlogits = (p - onehot) / N")
        for name, g, p in zip(names, grads, params):
            expect(g is not None, f"{name} is None {case}: every parameter needs a gradient")
            if name.startswith("dw") and np.shape(g) == p.shape[::-1] and p.shape[0] != p.shape[1]:
                raise CheckFailed(f"{name} is transposed {case}: it must have the weight's shape {p.shape} "
                                  "(dout.T @ input)")
            if name.startswith("db") and np.ndim(g) == 2:
                raise CheckFailed(f"{name} has shape {np.shape(g)} {case}: sum the gradient over the batch, axis 0")
        no_mask = _gradients_without_relu_mask(params, x, y)
        layer2_ok = _close(grads[2], want[2]) and _close(grads[3], want[3])
        if layer2_ok and _close(grads[0], no_mask[0]) and not _close(grads[0], want[0]):
            raise CheckFailed(f"layer 2 is right but dw1 is not {case}: on the way back, multiply by the "
                              "ReLU's mask (pre-activation > 0) before the first layer")
        for name, g, w in zip(names, grads, want):
            expect_close(g, w, f"{name} {case}", rtol=1e-7, atol=1e-12)
    return "loss and all four gradients match, including a batch of 1"


# =========================================================================== numerical gradient

def _grad_cases():
    rng = np.random.default_rng(24)
    weights = rng.standard_normal((2, 2, 2))
    return [
        ("f(x) = sum(x**3), x of shape (2, 3)", lambda v: np.sum(v ** 3),
         rng.uniform(-2, 2, (2, 3)), lambda v: 3 * v ** 2),
        ("f(x) = sum(sin(x) * x), x of shape (4,)", lambda v: np.sum(np.sin(v) * v),
         rng.uniform(-3, 3, 4), lambda v: np.cos(v) * v + np.sin(v)),
        ("f(x) = sum(exp(x) * c), x of shape (2, 2, 2)", lambda v: np.sum(np.exp(v) * weights),
         rng.uniform(-1, 1, (2, 2, 2)), lambda v: np.exp(v) * weights),
        ("f(x) = sum(x**3 - 2x), x an INTEGER array of shape (2, 3)", lambda v: np.sum(v ** 3 - 2 * v),
         np.array([[1, -2, 3], [0, 2, -1]]), lambda v: 3.0 * v ** 2 - 2),
    ]


@check.exercise(points=2, hints=[
    "For each entry i of x (any shape: loop over np.ndindex(x.shape)): remember x[i], set it to x[i] + h "
    "and evaluate f, set it to x[i] - h and evaluate f, put the old value back. The slope is "
    "(f_plus - f_minus) / (2h).",
    "x = x.astype(float) (a copy);  grad = np.zeros_like(x); for i in np.ndindex(x.shape): old = x[i]; "
    "x[i] = old + h; fp = f(x); x[i] = old - h; fm = f(x); x[i] = old; grad[i] = (fp - fm) / (2 * h)",
])
def numerical_gradient(fn):
    """numerical_gradient(f, x, h=1e-5) -> the centred-difference gradient of a scalar f at x."""
    for what, f, x, exact in _grad_cases():
        before = x.copy()
        got = call(fn, f, x, allow_mutation=True)
        want = exact(before)
        if x.dtype.kind in "iu" and not (np.array_equal(x, before) and _close(got, want, rtol=1e-6, atol=1e-7)):
            raise CheckFailed(f"wrong for {what}: x + h rounds back to an integer when written into an "
                              "integer array, so the nudges are lost; work on a float copy: x.astype(float)")
        expect(np.array_equal(x, before), f"x was changed ({what}): after perturbing an entry, put its "
                                          "old value back (or work on a copy of x)")
        if got is not None and np.shape(got) != x.shape:
            raise CheckFailed(f"the gradient has shape {np.shape(got)}, expected x's shape {x.shape} ({what}): "
                              "perturb one entry at a time, for every index of x")
        if not _close(got, want, rtol=1e-6, atol=1e-7):
            h = 1e-5
            forward = np.zeros_like(x, dtype=np.float64)
            for i in np.ndindex(x.shape):
                xp = x.astype(np.float64)
                xp[i] += h
                forward[i] = (f(xp) - f(x)) / h
            if _close(got, forward, rtol=1e-6, atol=1e-8):
                raise CheckFailed(f"that is the one-sided difference (f(x+h) - f(x)) / h, whose error shrinks "
                                  f"only like h; use the centred (f(x+h) - f(x-h)) / (2h) ({what})")
            if _close(got, 2 * want, rtol=1e-5):
                raise CheckFailed(f"the gradient is twice too large ({what}): divide f(x+h) - f(x-h) by 2h, not h")
        expect_close(got, want, f"the gradient of {what}", rtol=1e-6, atol=1e-7)
    return "centred differences match the exact gradient on 4 functions of 1-, 2- and 3-D arrays, one of integers"
