"""Graded checks for the exercises of chapter 02 (``exercises/02_backprop.ipynb``).

Each exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the
classic wrong answers, written out as wrong implementations with the exercise's
own signature (a class for the ``Value`` exercises).  A check runs the learner's
code on cases from small to large; when a case fails it recomputes every row on
the same inputs and names the row the learner's output matches.  Errors raised
inside the learner's code (a matmul shape mismatch, a broadcast error) are named
the same way: by the row that raises the same error on the same inputs.

Dimension letters: N batch, D features, H hidden units, K classes.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from dlcourse.backprop import numpy_impl as ref
from dlcourse.backprop.engine import Value as RefValue, topological_order
from dlcourse.gradcheck import numerical_grad
from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close, expect_tuple,
                              fail_with, first_wrong_stage, reproduce, trying)
from dlcourse.grading import matches as _close
from dlcourse.grading import raises_like

check = Checker("02_backprop")




def _call_translated(table, fn, *args, record=None):
    """``call(fn, *args)``; an error raised inside ``fn`` that a row also raises becomes that row's message."""
    try:
        return call(fn, *args, record=record)
    except CheckFailed as fail:
        err = getattr(fail, "error", None)
        if err is not None:
            raises_like(table, err, lambda wrong: wrong(*args))
        raise


@contextmanager
def _case(description: str, reproduce: str):
    """Like :func:`~dlcourse.grading.trying` for cases that are not one function call (a Value graph)."""
    try:
        yield
    except CheckFailed as fail:
        if not fail.details:
            fail.details = f"smallest failing case: {description}\nreproduce it in a new cell:  {reproduce}"
        raise


def _same_items(a, b) -> bool:
    """Two tuples/lists of arrays (or numbers) with the same shapes and values."""
    if not (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)):
        return False
    return all(_same_items(x, y) if isinstance(y, (tuple, list)) else
               (x is None and y is None) or (x is not None and y is not None and _close(x, y, rtol=1e-7, atol=1e-12))
               for x, y in zip(a, b))


# =========================================================================== 1 · the operations of a Value

def _wrap(other):
    return other if isinstance(other, RefValue) else RefValue(other)


class MulSwapped(RefValue):
    """d(ab)/da written as a, d(ab)/db as b."""

    def __mul__(self, other):
        other = _wrap(other)
        return RefValue(self.data * other.data, (self, other), (self.data, other.data), "*")


class MulUnwrapped(RefValue):
    """Forgets to wrap a plain number: a * 2 fails."""

    def __mul__(self, other):
        return RefValue(self.data * other.data, (self, other), (other.data, self.data), "*")


class PowNoMinusOne(RefValue):
    """n x^n instead of n x^(n-1)."""

    def __pow__(self, n):
        return RefValue(self.data ** n, (self,), (n * self.data ** n,), f"**{n}")


class PowNoFactor(RefValue):
    """x^(n-1): the factor n forgotten."""

    def __pow__(self, n):
        return RefValue(self.data ** n, (self,), (self.data ** (n - 1),), f"**{n}")


class ExpSlopeOne(RefValue):
    def exp(self):
        return RefValue(math.exp(self.data), (self,), (1.0,), "exp")


class LogSlopeLog(RefValue):
    def log(self):
        return RefValue(math.log(self.data), (self,), (math.log(self.data),), "log")


class ReluSlopeAlwaysOne(RefValue):
    def relu(self):
        return RefValue(max(self.data, 0.0), (self,), (1.0,), "relu")


class ReluSlopeFromGreaterEqual(RefValue):
    def relu(self):
        return RefValue(max(self.data, 0.0), (self,), (1.0 if self.data >= 0 else 0.0,), "relu")


class ReluSlopeIsOutput(RefValue):
    def relu(self):
        out = max(self.data, 0.0)
        return RefValue(out, (self,), (out,), "relu")


class PowIntegerExponent(RefValue):
    """n = int(n): a ** 0.5 becomes a ** 0."""

    def __pow__(self, n):
        n = int(n)
        return RefValue(self.data ** n, (self,), (n * self.data ** (n - 1),), f"**{n}")


class PowChangesInput(RefValue):
    """Writes the result into the input's data."""

    def __pow__(self, n):
        old = self.data
        self.data = old ** n
        return RefValue(self.data, (self,), (n * old ** (n - 1),), "**")


class MulGradsAsValues(RefValue):
    """local_grads=(other, self): Values where numbers belong."""

    def __mul__(self, other):
        other = _wrap(other)
        return RefValue(self.data * other.data, (self, other), (other, self), "*")


VALUE_OPS_MISTAKES = (
    Mistake("mul local derivatives swapped", MulSwapped,
            "the local derivatives of a * b are swapped: d(ab)/da is b (other.data) and d(ab)/db is a (self.data)"),
    Mistake("plain number not wrapped", MulUnwrapped,
            "a * 2 raised AttributeError: a plain number has no .data; wrap it first, "
            "other = other if isinstance(other, Value) else Value(other), as __add__ does"),
    Mistake("pow n x^n", PowNoMinusOne,
            "a ** n used n·a^n as its local derivative; the power rule is n·a^(n-1)"),
    Mistake("pow without the factor n", PowNoFactor,
            "a ** n used a^(n-1) as its local derivative: the power rule multiplies by the exponent, n·a^(n-1)"),
    Mistake("exp slope 1", ExpSlopeOne,
            "a.exp() has local derivative 1; the derivative of e^a is e^a itself (the output)"),
    Mistake("log slope ln", LogSlopeLog,
            "a.log() has local derivative ln(a); the derivative of ln(a) is 1/a"),
    Mistake("relu slope 1 at 0", ReluSlopeFromGreaterEqual,
            "relu at exactly 0 has local derivative 1: the slope must be 0 where the input is <= 0 "
            "(test self.data > 0, not >= 0; PyTorch does the same)"),
    Mistake("relu slope always 1", ReluSlopeAlwaysOne,
            "relu's local derivative is 1 even where the input is negative: it is 1 where the input is > 0, "
            "else 0"),
    Mistake("relu slope is its output", ReluSlopeIsOutput,
            "relu's local derivative is its output max(x, 0); it is the slope, 1 where the input is > 0, else 0"),
    Mistake("exponent made an integer", PowIntegerExponent,
            "a ** 0.5 came out as a ** 0: the exponent was turned into an integer (int(n)); use n as it is given, "
            "the power rule n·a^(n-1) holds for any real n"),
    Mistake("input data changed", PowChangesInput,
            "an operation changed the data of its input (self.data = ...): an operation must leave its inputs as "
            "they are and put its result only into the new Value it returns"),
    Mistake("local derivatives as Values", MulGradsAsValues,
            "local_grads must be plain numbers, such as other.data and self.data, not Value objects such as other "
            "and self: a local derivative is the number computed now, from the data at hand"),
)

_A, _B = 0.7, -1.3
# (expression, the method the learner writes that it needs, build(a, b), the rule to remind of)
_OPS = [
    ("a * b", "__mul__", lambda a, b: a * b, "d(ab)/da = b and d(ab)/db = a"),
    ("a * 2 + 1", "__mul__", lambda a, b: a * 2 + 1, "plain numbers must be wrapped in a Value"),
    ("3 * a - b", "__mul__", lambda a, b: 3 * a - b, "3 * a calls __rmul__, which uses __mul__"),
    ("a ** 3", "__pow__", lambda a, b: a ** 3, "d(a^n)/da = n a^(n-1)"),
    ("b ** -2", "__pow__", lambda a, b: b ** -2, "d(b^n)/db = n b^(n-1)"),
    ("a ** 0.5", "__pow__", lambda a, b: a ** 0.5, "d(a^n)/da = n a^(n-1), for a fractional n too"),
    ("a.exp()", "exp", lambda a, b: a.exp(), "d(e^a)/da = e^a"),
    ("a.log()", "log", lambda a, b: a.log(), "d(ln a)/da = 1/a"),
    ("a.relu()", "relu", lambda a, b: a.relu(), "the slope of relu is 1 where the input is positive"),
    ("b.relu()", "relu", lambda a, b: b.relu(), "the slope of relu is 0 where the input is negative"),
    ("a.relu() at a = 0", "relu", lambda a, b: a.relu(), "the slope of relu is 0 at exactly 0", (0.0, _B)),
    ("a ** 2 at a = 0", "__pow__", lambda a, b: a ** 2, "d(a^2)/da = 2a, which is 0 at a = 0: compute n * a^(n-1), "
     "never dividing by a", (0.0, _B)),
    ("a / b", "__pow__", lambda a, b: a / b, "a / b is a * b**-1"),
    ("(a * b + a).tanh()", "__mul__", lambda a, b: (a * b + a).tanh(), "a is used twice: both paths add up"),
    ("(a.exp() * b + 4).relu().log()", "log", lambda a, b: (a.exp() * b + 4).relu().log(),
     "every local derivative along the chain multiplies"),
]
_LEARNER_OPS = ("__mul__", "__pow__", "exp", "log", "relu")


def _grads_by_chain_rule(root) -> dict[int, float]:
    """d root / d node for every node of a graph, by the correct algorithm.

    Reads only ``children`` and ``local_grads``, so the learner's operations can
    be checked before their ``backward`` works.
    """
    order = topological_order(root)  # reads only ``children``: works on the learner's Value too
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


def _op_signature(cls, build, leaves=(_A, _B)):
    """(data, local derivatives of the result, d result/da, d result/db) of one expression."""
    a, b = cls(leaves[0]), cls(leaves[1])
    out = build(a, b)
    grads = _grads_by_chain_rule(out)
    local = tuple(float(g) for g in out.local_grads)
    return (float(out.data), local, grads.get(id(a), 0.0), grads.get(id(b), 0.0))


def _same_signature(x, y) -> bool:
    return (len(x[1]) == len(y[1]) and _close(x[0], y[0], rtol=1e-9) and _close(x[1], y[1], rtol=1e-9)
            and _close(x[2:], y[2:], rtol=1e-9, atol=1e-12))


@check.exercise(points=2, target="Value", reference=RefValue, mistakes=VALUE_OPS_MISTAKES, hints=[
    "Each operation returns a new Value that remembers its inputs and, for each input, the derivative of the "
    "result with respect to that input, computed now from the numbers at hand: the table of local derivatives "
    "in the lesson, one rule per method.",
    "Follow the pattern of __add__ and tanh: compute the result from self.data (and other.data), then write "
    "one local derivative per child, in the same order as the children. exp and tanh can reuse their output; "
    "relu's slope depends on whether the input is positive.",
    "For __pow__: Value(self.data ** n, (self,), (<power rule at self.data>,), f'**{n}'); for log the rule is "
    "1/x; __mul__ must first turn a plain number into a Value, like __add__.",
])
def value_ops(cls):
    """The operations of your Value class: each result's value and its local derivatives."""
    expect(isinstance(cls, type), "pass the class itself: check.value_ops(Value)")
    missing: list[str] = []
    working: set[str] = set()
    for expr, method, build, rule, *rest in _OPS:
        leaves = rest[0] if rest else (_A, _B)
        code = expr.split(" at ")[0]
        with _case(expr, f"a, b = Value({leaves[0]}), Value({leaves[1]}); out = {code}; "
                         "print(out.data, out.local_grads)"):
            try:
                a, b = cls(leaves[0]), cls(leaves[1])
                out = build(a, b)
            except NotImplementedError:
                if method not in missing:
                    missing.append(method)
                continue
            except Exception as err:  # noqa: BLE001 - the learner's operation raised
                raises_like(VALUE_OPS_MISTAKES, err, lambda wrong: build(wrong(leaves[0]), wrong(leaves[1])),
                             right=lambda: build(RefValue(leaves[0]), RefValue(leaves[1])))
                raise CheckFailed(f"{expr} raised {type(err).__name__}: {err}") from None
            expect(out is not None, f"{expr} returned None: did you forget a `return`?")
            expect(all(hasattr(out, k) for k in ("data", "children", "local_grads")),
                   f"{expr} returned a {type(out).__name__}, expected a Value")
            if not (_close(a.data, leaves[0], rtol=0, atol=0) and _close(b.data, leaves[1], rtol=0, atol=0)):
                fail_with(VALUE_OPS_MISTAKES, "input data changed", f"(seen on {expr})")
            if any(hasattr(g, "local_grads") for node in topological_order(out) for g in tuple(node.local_grads)):
                fail_with(VALUE_OPS_MISTAKES, "local derivatives as Values", f"(seen on {expr})")
            got = _op_signature(cls, build, leaves)
            want = _op_signature(RefValue, build, leaves)
            diagnose(got, want, VALUE_OPS_MISTAKES, same=_same_signature,
                     apply=lambda wrong: _op_signature(wrong, build, leaves), suffix=f"(seen on {expr})")
            expect(_close(got[0], want[0], rtol=1e-9), f"{expr} has data {got[0]:.6g}, expected {want[0]:.6g}")
            for name, value, expected in (("a", got[2], want[2]), ("b", got[3], want[3])):
                expect(_close(value, expected, rtol=1e-7, atol=1e-12),
                       f"d({expr})/d{name} comes out as {value:.6g}, expected {expected:.6g} ({rule})")
            working.add(method)
    if missing:
        if not working & set(_LEARNER_OPS):
            raise NotImplementedError  # nothing written yet: the stub
        done = [m for m in _LEARNER_OPS if m in working and m not in missing]
        raise CheckFailed(f"not implemented yet: {', '.join(missing)} still raise{'s' if len(missing) == 1 else ''} "
                          f"NotImplementedError ({', '.join(done) or 'nothing else'} already work{'s' if len(done) == 1 else ''}); "
                          "write the missing method(s) the same way")
    return f"all {len(_OPS)} expressions, relu and a ** 2 at exactly 0 included, have the right values and local derivatives"


# =========================================================================== 2 · Value.backward

def _dfs_order(root):
    order, seen = [], set()

    def visit(node):
        if id(node) not in seen:
            seen.add(id(node))
            for child in node.children:
                visit(child)
            order.append(node)
    visit(root)
    return order


class BackwardForgetsSeed(RefValue):
    def backward(self):
        for node in reversed(_dfs_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class BackwardOverwrites(RefValue):
    def backward(self):
        self.grad = 1.0
        for node in reversed(_dfs_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad = local * node.grad


class BackwardForwardOrder(RefValue):
    def backward(self):
        self.grad = 1.0
        for node in _dfs_order(self):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class BackwardPreOrder(RefValue):
    def backward(self):
        order, seen = [], set()

        def visit(node):
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)  # before its children: depth-first PRE-order
                for child in node.children:
                    visit(child)
        visit(self)
        self.grad = 1.0
        for node in order:
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class BackwardVisitedByData(RefValue):
    def backward(self):
        order, seen = [], set()

        def visit(node):
            if node.data not in seen:  # keyed by the value: equal numbers count as one node
                seen.add(node.data)
                for child in node.children:
                    visit(child)
                order.append(node)
        visit(self)
        self.grad = 1.0
        for node in reversed(order):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class BackwardBreadthFirst(RefValue):
    def backward(self):
        self.grad = 1.0
        queue, seen = [self], {id(self)}
        while queue:
            node = queue.pop(0)
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad
                if id(child) not in seen:
                    seen.add(id(child))
                    queue.append(child)


class BackwardNoVisitedSet(RefValue):
    def backward(self):
        order = []

        def visit(node):
            for child in node.children:
                visit(child)
            order.append(node)  # no visited set: a shared node is listed once per path to it
        visit(self)
        self.grad = 1.0
        for node in reversed(order):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad


class BackwardRecursivePush(RefValue):
    def backward(self):
        self.grad = 1.0

        def push(node):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad
                push(child)
        push(self)


class BackwardNoChainRule(RefValue):
    def backward(self):
        self.grad = 1.0
        for node in reversed(_dfs_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local


class BackwardChildTimesChild(RefValue):
    def backward(self):
        self.grad = 1.0
        for node in reversed(_dfs_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * child.grad


class BackwardNoLocal(RefValue):
    def backward(self):
        self.grad = 1.0
        for node in reversed(_dfs_order(self)):
            for child, local in zip(node.children, node.local_grads):
                child.grad += node.grad


class BackwardChangesData(RefValue):
    def backward(self):
        RefValue.backward(self)
        for node in _dfs_order(self):
            node.data = node.grad


VALUE_BACKWARD_MISTAKES = (
    Mistake("no seed gradient", BackwardForgetsSeed,
            "every gradient is 0: start with self.grad = 1.0 (d out / d out = 1) before walking the graph"),
    Mistake("gradients overwritten", BackwardOverwrites,
            "gradients were overwritten: a Value used more than once must add up what each use sends it, "
            "child.grad += local * node.grad (not =)"),
    Mistake("topological order not reversed", BackwardForwardOrder,
            "the nodes were visited in topological order (inputs first); backward must go through them in "
            "REVERSED topological order, output first"),
    Mistake("depth-first pre-order", BackwardPreOrder,
            "your order lists a node BEFORE its children (appended before visiting them: depth-first pre-order), so "
            "a node reached first by one path passes its gradient on before the other paths into it have delivered "
            "theirs. Append a node AFTER visiting its children (post-order), then walk that list reversed"),
    Mistake("breadth-first order", BackwardBreadthFirst,
            "the nodes were visited breadth-first from the output: a node reached early by a short path passes its "
            "gradient on before the longer paths into it have delivered theirs. Build a topological order "
            "(depth-first, append a node after its children) and walk it reversed"),
    Mistake("depth-first search without a visited set", BackwardNoVisitedSet,
            "your depth-first search has no visited set: a node reachable by two paths is listed twice and passes "
            "its gradient on twice. Keep a set of visited nodes and skip a node already in it"),
    Mistake("visited set keyed by value", BackwardVisitedByData,
            "your visited set is keyed by the nodes' values (.data): two different nodes that hold the same number "
            "count as one, and the second is never visited. Put the nodes themselves (or id(node)) in the set"),
    Mistake("recursive push", BackwardRecursivePush,
            "a node passed its gradient on before it had received all of it (a recursive push visits a shared "
            "node once per path): build a topological order first, then go through it in reverse"),
    Mistake("chain rule missing", BackwardNoChainRule,
            "each child got only the local derivative: multiply it by the gradient of the node above, "
            "child.grad += local * node.grad (the chain rule)"),
    Mistake("child grad times local", BackwardChildTimesChild,
            "every gradient below the output stayed 0: child.grad += local * child.grad multiplies by the child's "
            "own gradient, still 0 (so does pulling into the node, node.grad += local * child.grad); the gradient "
            "flows from the node above into the child: child.grad += local * node.grad"),
    Mistake("local derivative missing", BackwardNoLocal,
            "each child got the node's gradient unchanged: multiply it by the local derivative of the edge, "
            "child.grad += local * node.grad"),
    Mistake("data changed", BackwardChangesData,
            "backward() changed the data of the nodes; it must only fill in .grad"),
)

# graphs for value_backward, built with the learner's constructor: node i is (label, op, data,
# [(child, local), ...]); children have smaller indices, so the numbering is a topological order.
_GRAPHS = {
    "a chain a -> b -> c -> d": [
        ("a", "", 1.0, []), ("b", "exp", 2.0, [(0, 2.0)]), ("c", "*", 3.0, [(1, -3.0)]),
        ("d", "tanh", 4.0, [(2, 0.5)])],
    "c = a * a, one node used twice by the same operation": [
        ("a", "", 1.5, []), ("c", "*", 2.25, [(0, 1.5), (0, 1.5)])],
    "a long and a short path into c: m = tanh(c), p = m * 3, out = p + c": [
        ("a", "", 0.5, []), ("c", "exp", 1.6, [(0, 1.6)]), ("m", "tanh", 0.9, [(1, 0.2)]),
        ("p", "*", 2.7, [(2, 3.0)]), ("out", "+", 4.3, [(3, 1.0), (1, 1.0)])],
    "a diamond: u = exp(a), v = u * a, w = u + v": [
        ("a", "", 1.0, []), ("u", "exp", 2.0, [(0, 2.0)]), ("v", "*", 3.0, [(1, 3.0), (0, 5.0)]),
        ("w", "+", 4.0, [(1, 7.0), (2, 11.0)])],
    "two nodes with equal data: r = exp(x) * exp(y), x = y = 1": [
        ("x", "", 1.0, []), ("y", "", 1.0, []), ("ex", "exp", math.e, [(0, math.e)]),
        ("ey", "exp", math.e, [(1, math.e)]), ("r", "*", math.e ** 2, [(2, math.e), (3, math.e)])],
    "a neuron o = tanh(x1*w1 + x2*w2 + b)": [
        ("x1", "", 1.5, []), ("w1", "", -0.5, []), ("x2", "", -1.0, []), ("w2", "", 2.0, []), ("b", "", 0.5, []),
        ("x1w1", "*", -0.75, [(0, -0.5), (1, 1.5)]), ("x2w2", "*", -2.0, [(2, 2.0), (3, -1.0)]),
        ("s", "+", -2.75, [(5, 1.0), (6, 1.0)]), ("n", "+", -2.25, [(7, 1.0), (4, 1.0)]),
        ("o", "tanh", -0.978, [(8, 0.0435)])],
}


def _random_graph(num_nodes=24, seed=0):
    rng = np.random.default_rng(seed)
    spec = [(f"x{i}", "", float(rng.normal()), []) for i in range(4)]
    for i in range(4, num_nodes):
        k = int(rng.integers(1, 3))
        children = rng.choice(i, size=k, replace=False)
        spec.append((f"v{i}", "+*"[k - 1] if k == 2 else "tanh", float(rng.normal()),
                     [(int(c), float(np.round(rng.normal(), 2))) for c in children]))
    # the output depends on many nodes, so every node reaches it
    spec.append(("out", "+", 0.0, [(j, 1.0) for j in range(0, num_nodes, 3)] + [(num_nodes - 1, 1.0)]))
    return spec


_GRAPHS["a random graph of 25 nodes"] = _random_graph()


def _build(cls, spec):
    nodes = []
    for label, op, data, edges in spec:
        node = cls(data, tuple(nodes[c] for c, _ in edges), tuple(g for _, g in edges), op)
        try:
            node.label = label
        except Exception:  # noqa: BLE001 - a class with __slots__: the label is only for messages
            pass
        nodes.append(node)
    return nodes


def _run_graph(cls, spec) -> list[float]:
    nodes = _build(cls, spec)
    nodes[-1].backward()
    return [float(n.grad) for n in nodes]


def _right_grads(spec) -> list[float]:
    grads = [0.0] * len(spec)
    grads[-1] = 1.0
    for i in range(len(spec) - 1, -1, -1):
        for c, local in spec[i][3]:
            grads[c] += local * grads[i]
    return grads


def _describe_node(spec, i) -> str:
    label, op, _, edges = spec[i]
    return f"`{label}` ({'an input' if not edges else f'made by {op}'})"


@check.exercise(points=3, target="Value", reference=RefValue, forbid=topological_order,
                mistakes=VALUE_BACKWARD_MISTAKES, hints=[
    "A node may pass its gradient on to its children only once it has received ALL of it, from every node "
    "that uses it. So: first put the nodes in an order where each comes after all its children, then walk "
    "that order backwards, from the output.",
    "Build the order with a depth-first search that remembers which nodes it has already visited and appends "
    "a node after visiting its children. Seed the output's gradient with 1, then, for each node of the "
    "reversed order, hand each child its share: local derivative times the node's gradient, added (+=).",
    "A helper visit(node) that returns at once for a node in `seen`, else adds it, visits its children and "
    "only then appends it to `order`. After visit(self): seed self.grad, and walk reversed(order), pairing "
    "node.children with node.local_grads (zip).",
])
def value_backward(cls):
    """Value.backward(): gradients of every node by the chain rule, in reverse topological order."""
    expect(isinstance(cls, type), "pass the class itself: check.value_backward(Value)")
    for what, spec in _GRAPHS.items():
        listing = "; ".join(f"{label} = {op or 'input'}({', '.join(spec[c][0] for c, _ in edges)})"
                            if edges else f"{label} (input)" for label, op, _, edges in spec)
        with _case(what if len(spec) > 10 else f"{what}: {listing}",
                   "build the graph with Value(data, children, local_grads, op), call .backward() on its "
                   "output and print every node's .grad"):
            nodes = _build(cls, spec)
            root = nodes[-1]
            call(root.backward)
            got = [float(n.grad) for n in nodes]
            if not all(_close(n.data, d) for n, (_, _, d, _) in zip(nodes, spec)):
                fail_with(VALUE_BACKWARD_MISTAKES, "data changed", f"(seen on {what})")
            want = _right_grads(spec)
            if _close(got, want, rtol=1e-9):
                continue
            diagnose(got, want, VALUE_BACKWARD_MISTAKES, rtol=1e-9,
                     apply=lambda wrong: _run_graph(wrong, spec), suffix=f"(seen on {what})")
            expect(_close(got[-1], 1.0), f"the output's grad is {got[-1]:.6g} after backward ({what}): "
                                         "start with self.grad = 1.0 (d out / d out = 1)")
            # the wrong node nearest to the output: everything above it is right
            i = next(i for i in range(len(spec) - 1, -1, -1) if not _close(got[i], want[i], rtol=1e-9))
            parents = [j for j, (_, _, _, edges) in enumerate(spec) if any(c == i for c, _ in edges)]
            users = sum(c == i for _, _, _, edges in spec for c, _ in edges)
            if users > 1:
                likely = (f"it is used {users} times: it must add up (+=) what every use sends, and pass its "
                          "gradient on only after all uses have delivered (reversed topological order)")
            else:
                likely = (f"the nodes above it are right, so look at the edge from {_describe_node(spec, parents[0])} "
                          "into it: child.grad += local * node.grad")
            raise CheckFailed(f"on {what}, node {_describe_node(spec, i)} has grad {got[i]:.6g}, expected "
                              f"{want[i]:.6g}: {likely}")
    return (f"right gradients on {len(_GRAPHS)} graphs, including shared nodes, a node used twice and nodes "
            "with equal data")


# =========================================================================== 3 · linear_backward

def linear_dw_transposed(dout, cache):
    x, w = cache
    return dout @ w, x.T @ dout, dout.sum(axis=0)


def linear_dx_with_w_transposed(dout, cache):
    x, w = cache
    return dout @ w.T, dout.T @ x, dout.sum(axis=0)


def linear_db_not_summed(dout, cache):
    x, w = cache
    return dout @ w, dout.T @ x, dout


def linear_db_keepdims(dout, cache):
    x, w = cache
    return dout @ w, dout.T @ x, dout.sum(axis=0, keepdims=True)


def linear_db_axis1(dout, cache):
    x, w = cache
    return dout @ w, dout.T @ x, dout.sum(axis=1)


def linear_db_first_example(dout, cache):
    x, w = cache
    return dout @ w, dout.T @ x, dout[0]


def linear_db_mean(dout, cache):
    x, w = cache
    return dout @ w, dout.T @ x, dout.mean(axis=0)


def linear_dw_mean(dout, cache):
    x, w = cache
    return dout @ w, dout.T @ x / len(x), dout.sum(axis=0)


LINEAR_MISTAKES = (
    Mistake("dw transposed", linear_dw_transposed,
            "dw is transposed: it must have w's shape (H, D); the batch axis N has to be summed away, so put "
            "dout (transposed) first: (H, N) @ (N, D)"),
    Mistake("dx uses w.T", linear_dx_with_w_transposed,
            "dx = dout @ w.T does not fit: dout is (N, H) and w is (H, D), so dout @ w already gives x's shape "
            "(N, D) (each x[n, d] reached out[n, h] through w[h, d])"),
    Mistake("db keepdims", linear_db_keepdims,
            "db has shape (1, H): the sum kept the batch axis (keepdims=True); b has shape (H,), so sum over axis 0 "
            "without keepdims"),
    Mistake("db not summed", linear_db_not_summed,
            "db has the shape of dout (N, H): the bias is shared by the whole batch, so sum dout over the batch, "
            "axis 0"),
    Mistake("db summed over axis 1", linear_db_axis1,
            "db was summed over axis 1 (the H outputs); sum over the batch, axis 0, to get shape (H,)"),
    Mistake("db from one example", linear_db_first_example,
            "db is one example's dout; every example of the batch used the bias, so sum dout over the batch "
            "axis"),
    Mistake("db mean over batch", linear_db_mean,
            "db is the mean of dout over the batch; it must be the sum (the loss already divided by N)"),
    Mistake("dw divided by N", linear_dw_mean,
            "dw was divided by N; it must be the sum over the batch that the matrix product computes "
            "(the loss already divided by N)"),
)


@check.exercise(points=2, reference=ref.linear_backward, mistakes=LINEAR_MISTAKES, hints=[
    "Every gradient has the shape of the thing it is the gradient of: dx like x (N, D), dw like w (H, D), db "
    "like b (H,). And a parameter that every example of the batch uses collects a contribution from each.",
    "Entry by entry, out[n, h] = sum_d x[n, d] w[h, d] + b[h]: the slope of out[n, h] w.r.t. x[n, d] is "
    "w[h, d], w.r.t. w[h, d] it is x[n, d], w.r.t. b[h] it is 1. Each gradient sums dout times that slope over "
    "the indices that are not its own: a matrix product, or a sum.",
    "dx sums over h: a product of dout (N, H) with w (H, D). dw sums over n: (H, N) @ (N, D), so transpose "
    "dout. db sums dout over one axis: which one leaves shape (H,)?",
])
def linear_backward(fn):
    """linear_backward(dout, cache) -> dx, dw, db for out = x @ w.T + b."""
    rng = np.random.default_rng(20)
    # a batch of 2 first: with N = 1, db summed with keepdims and db not summed at all look the same;
    # (4, 4): a square w, where a transpose keeps the shape
    for n, d, h in ((2, 2, 3), (1, 2, 3), (4, 3, 5), (3, 4, 4)):
        x, w = rng.standard_normal((n, d)), rng.standard_normal((h, d))
        dout = rng.standard_normal((n, h))
        cache = ref.LinearCache(x, w)
        with trying("linear_backward", dout, cache, label=f"(N, D, H) = {(n, d, h)}") as case:
            case.expected = want = ref.linear_backward(dout, cache)
            case.got = got = expect_tuple(_call_translated(LINEAR_MISTAKES, fn, dout, cache), 3, "(dx, dw, db)",
                                          "linear_backward", "arrays")
            diagnose(tuple(got), want, LINEAR_MISTAKES, same=_same_items,
                     apply=lambda wrong: wrong(dout, cache))
            for name, g, w_ in zip(("dx", "dw", "db"), got, want):
                expect(g is not None, f"{name} is None: every input of the layer gets a gradient")
                expect_close(g, w_, name)
    return "dx, dw and db match on 4 cases, including a batch of 1 and a square weight"


# =========================================================================== 4 · activation_backward (relu, tanh)

def activation_local_only(dout, out, kind):
    return (out > 0) * 1.0 if kind == "relu" else 1 - out ** 2


def activation_relu_mask_ge(dout, out, kind):
    return dout * (out >= 0) if kind == "relu" else dout * (1 - out ** 2)


def activation_relu_mask_from_dout(dout, out, kind):
    return dout * (dout > 0) if kind == "relu" else dout * (1 - out ** 2)


def activation_relu_times_out(dout, out, kind):
    return dout * out if kind == "relu" else dout * (1 - out ** 2)


def activation_tanh_applied_again(dout, out, kind):
    return dout * (out > 0) if kind == "relu" else dout * (1 - np.tanh(out) ** 2)


def activation_tanh_not_squared(dout, out, kind):
    return dout * (out > 0) if kind == "relu" else dout * (1 - out)


def activation_tanh_sigmoid_formula(dout, out, kind):
    return dout * (out > 0) if kind == "relu" else dout * out * (1 - out)


ACTIVATION_MISTAKES = (
    Mistake("local derivative only", activation_local_only,
            "you returned only the local derivative; multiply it by dout, the gradient arriving from above "
            "(the chain rule)"),
    Mistake("relu mask with >=", activation_relu_mask_ge,
            "relu: the mask out >= 0 is true everywhere (a relu output is never negative), so gradient also "
            "flows through the units that were off; use out > 0"),
    Mistake("relu mask from dout", activation_relu_mask_from_dout,
            "relu: the mask was taken from dout; whether a unit was on is decided by the forward pass, so take "
            "the mask from out (out > 0), whatever the sign of dout"),
    Mistake("relu times its output", activation_relu_times_out,
            "relu: dout was multiplied by out itself; multiply by the slope, the mask (out > 0)"),
    Mistake("tanh applied again", activation_tanh_applied_again,
            "tanh: `out` is already tanh(x); write the slope 1 - t² with t = out directly, do not apply tanh "
            "again"),
    Mistake("tanh not squared", activation_tanh_not_squared,
            "tanh: the slope is 1 - out² (squared), not 1 - out"),
    Mistake("tanh with sigmoid's slope", activation_tanh_sigmoid_formula,
            "tanh: out·(1 - out) is the sigmoid's slope; tanh's is 1 - out²"),
)


@check.exercise(points=2, reference=ref.activation_backward, forbid=(ref.relu_backward, ref.tanh_backward),
                mistakes=ACTIVATION_MISTAKES, hints=[
    "An elementwise function has one local derivative per entry, so the backward pass is an elementwise "
    "product: dout times the slope at each entry. Write the slope with the OUTPUT, which the forward pass "
    "kept (as the lesson did for the sigmoid).",
    "relu: the slope is 1 where the unit was on and 0 where it was off; which entries of out tell you it was "
    "on? tanh: differentiate tanh and write the result with t = tanh(x).",
    "relu: dout * (a boolean mask made from out); tanh: dout * (1 - <something of out>)",
])
def activation_backward(fn):
    """activation_backward(dout, out, kind) -> dx for kind 'relu' or 'tanh', from the output."""
    rng = np.random.default_rng(21)
    cases = []
    for shape in ((2, 3), (4, 6)):
        x = rng.standard_normal(shape) * 2
        if shape == (4, 6):
            x[0, :3] = [30.0, -30.0, 0.0]  # saturated units and a relu input of exactly 0
        cases.append((shape, x, rng.standard_normal(shape)))
    for shape, x, dout in cases:
        for kind in ("relu", "tanh"):
            out = getattr(ref, f"{kind}_forward")(x)[0]
            with trying("activation_backward", dout, out, kind, label=f"{kind}, shape {shape}") as case:
                case.expected = want = ref.activation_backward(dout, out, kind)
                case.got = got = _call_translated(ACTIVATION_MISTAKES, fn, dout, out, kind)
                diagnose(got, want, ACTIVATION_MISTAKES, rtol=1e-7, atol=1e-12,
                         apply=lambda wrong: wrong(dout, out, kind), suffix=f"({kind})")
                expect_close(got, want, f"activation_backward(dout, out, {kind!r})", rtol=1e-7, atol=1e-12)
    return "relu and tanh backward match, saturated units and a relu input of 0 included"


# =========================================================================== 5 · softmax cross-entropy

def sce_no_max_shift(logits, y):
    n = len(y)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return -np.log(p[np.arange(n), y]).mean(), d / n


def sce_log_of_softmax(logits, y):
    n = len(y)
    p = ref.softmax(logits)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return -np.log(p[np.arange(n), y]).mean(), d / n


def sce_max_without_keepdims(logits, y):
    n = len(y)
    shifted = logits - logits.max(axis=1)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return -np.log(p[np.arange(n), y]).mean(), d / n


def sce_global_max(logits, y):
    n = len(y)
    z = logits - logits.max()  # the maximum of the whole batch, not of each row
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -(z - lse)[np.arange(n), y].mean()
    d = np.exp(z - lse)
    d[np.arange(n), y] -= 1
    return loss, d / n


def sce_sum_without_keepdims(logits, y):
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))  # shape (N,): lines up with the columns, not the rows
    loss = -(z - lse)[np.arange(n), y].mean()
    d = np.exp(z - lse)
    d[np.arange(n), y] -= 1
    return loss, d / n


def sce_fancy_index_in_loss(logits, y):
    log_p = ref.log_softmax(logits)
    return -log_p[:, y].mean(), ref.softmax_cross_entropy(logits, y)[1]


def sce_log_clipped(logits, y):
    n = len(y)
    p = ref.softmax(logits)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return -np.log(p[np.arange(n), y] + 1e-12).mean(), d / n  # the epsilon caps each term at 27.6


def sce_sign_flipped(logits, y):
    loss, d = ref.softmax_cross_entropy(logits, y)
    return loss, -d


def sce_fancy_index_columns(logits, y):
    n = len(y)
    p = ref.softmax(logits)
    d = p.copy()
    d[:, y] -= 1
    return -np.log(p[:, y]).mean(), d / n


def sce_loss_summed(logits, y):
    loss, d = ref.softmax_cross_entropy(logits, y)
    return loss * len(y), d


def sce_not_divided(logits, y):
    loss, d = ref.softmax_cross_entropy(logits, y)
    return loss, d * len(y)


def sce_no_onehot(logits, y):
    return ref.softmax_cross_entropy(logits, y)[0], ref.softmax(logits) / len(y)


def sce_axis0(logits, y):
    n = len(y)
    p = np.exp(logits - logits.max(axis=0, keepdims=True))
    p = p / p.sum(axis=0, keepdims=True)
    d = p.copy()
    d[np.arange(n), y] -= 1
    return -np.log(p[np.arange(n), y]).mean(), d / n


def sce_onehot_plus(logits, y):
    loss, d = ref.softmax_cross_entropy(logits, y)
    n = len(y)
    d = d.copy()
    d[np.arange(n), y] += 2 / n  # (p + onehot) / N
    return loss, d


SCE_MISTAKES = (
    Mistake("no max shift", sce_no_max_shift,
            "exp overflowed (NaN or inf) for logits of ±1000: subtract each row's maximum before np.exp "
            "(the log-sum-exp trick); it does not change the result"),
    Mistake("log of softmax", sce_log_of_softmax,
            "np.log(softmax(logits)) underflows: a class 1000 below the best gets probability exactly 0 and "
            "log(0) = -inf. Compute log-softmax directly, shifted - log(sum(exp(shifted))), with shifted = "
            "logits minus the row maximum"),
    Mistake("global max", sce_global_max,
            "you subtracted the maximum of the whole batch (logits.max() without an axis): a row far below it, "
            "here one near -1000, underflows to exp = 0 everywhere and log(0) = -inf. Subtract each row's own "
            "maximum: logits.max(axis=1, keepdims=True)"),
    Mistake("sum without keepdims", sce_sum_without_keepdims,
            "the row sums exp(shifted).sum(axis=1) have shape (N,), which does not line up with the rows of "
            "logits (N, K) (on a square batch it silently divides by the wrong row's sum): keep the axis, "
            ".sum(axis=1, keepdims=True), shape (N, 1)"),
    Mistake("log of clipped softmax", sce_log_clipped,
            "the loss is too small for a true class far below the best: np.log(p + eps) (or a clipped p) caps each "
            "term at -log(eps), while the true loss there is about 1000. Compute log-softmax directly, shifted - "
            "log(sum(exp(shifted))), with no epsilon"),
    Mistake("max without keepdims", sce_max_without_keepdims,
            "logits.max(axis=1) has shape (N,), which does not line up with the rows of logits (N, K): "
            "keep the axis, logits.max(axis=1, keepdims=True), shape (N, 1)"),
    Mistake("p[:, y] fancy indexing", sce_fancy_index_columns,
            "p[:, y] picks the columns y for EVERY example (an N×N block); to pick one entry per row, index "
            "with the row numbers too: p[np.arange(N), y]"),
    Mistake("p[:, y] in the loss", sce_fancy_index_in_loss,
            "the loss picks log_p[:, y], the columns y for EVERY example (an N×N block), and averages all of "
            "them; pick one entry per row: log_p[np.arange(N), y]"),
    Mistake("loss summed", sce_loss_summed,
            "the loss is the sum over the batch; take the mean (divide by N)"),
    Mistake("dlogits not divided by N", sce_not_divided,
            "dlogits is N times too large: the loss is a mean, so divide the gradient by N too"),
    Mistake("one-hot missing", sce_no_onehot,
            "dlogits is missing the one-hot term: subtract 1 at the true class of each row, then divide by N"),
    Mistake("softmax over axis 0", sce_axis0,
            "the softmax was normalised over axis 0 (the batch); each ROW must sum to 1: use axis=1"),
    Mistake("gradient sign flipped", sce_sign_flipped,
            "dlogits has the wrong sign: it is (onehot - p) / N; the gradient of the loss is softmax MINUS "
            "one-hot, (p - onehot) / N"),
    Mistake("one-hot added", sce_onehot_plus,
            "dlogits adds the one-hot target; the gradient is softmax MINUS one-hot, (p - onehot) / N"),
)


def _sce_cases():
    rng = np.random.default_rng(22)
    big = np.array([[1000.0, -1000.0, 0.0, 3.0, -2.0],     # the true class sits at -1000
                    [-1000.0, 1000.0, 999.0, 0.0, 5.0],
                    [800.0, -800.0, 0.0, 799.0, 5.0]])
    far_apart = np.array([[1000.0, 0.0],       # exp(1000) overflows
                          [-1000.0, -999.0]])  # 2000 below the batch's maximum: underflows
    return [("a batch of 1", rng.standard_normal((1, 3)), np.array([2])),
            # square: a reduction without keepdims broadcasts silently, along the wrong axis
            ("a square batch, N = K = 3", rng.standard_normal((3, 3)) * 2, np.array([1, 0, 2])),
            ("a batch of 5", rng.standard_normal((5, 4)) * 2, np.array([0, 3, 1, 1, 2])),
            ("two rows far apart, one near +1000, one near -1000", far_apart, np.array([0, 1])),
            ("logits of ±1000, one true class at -1000", big, np.array([1, 2, 3]))]


def _sce_unstable(logits, y, loss, dlogits, want) -> str | None:
    """The row that explains a NaN or inf in a result for huge logits, from where it went wrong."""
    try:
        loss = float(loss)
        d = np.asarray(dlogits, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if np.isfinite(loss) and np.all(np.isfinite(d)) or d.shape != want[1].shape:
        return None
    row_max = logits.max(axis=1)
    wrong = ~np.all(np.isclose(d, want[1], rtol=1e-7, atol=1e-12), axis=1)
    if np.any(wrong & (row_max > 709)):
        return "no max shift"   # exp(> 709) overflows: a row with a huge maximum went wrong
    if np.any(wrong) and np.all(row_max[wrong] < logits.max() - 700):
        return "global max"     # only the rows far below the batch's maximum went wrong
    if not np.any(wrong):
        return "log of softmax"  # the gradient is right, only the log of a probability of 0 broke the loss
    return None


@check.exercise(points=3, reference=ref.softmax_cross_entropy, forbid=ref.log_softmax,
                mistakes=SCE_MISTAKES, hints=[
    "Two facts from the lesson: -log softmax(z)[y] = log(sum_k exp(z_k)) - z_y, and its gradient is "
    "softmax(z) - onehot(y); for a batch, average the loss and divide the gradient by N. For ±1000, never "
    "exponentiate a large positive number and never take the log of a probability that may be 0.",
    "Shift every row by its maximum (keep the axis so it broadcasts), compute log-softmax from the shifted "
    "logits with log-sum-exp, pick one entry per row for the loss, and build dlogits from exp(log-softmax) "
    "minus 1 at the true classes.",
    "shifted = logits - logits.max(axis=1, keepdims=True); log_p = shifted - np.log(<row sums of "
    "exp(shifted), axis kept>); the loss averages log_p[np.arange(N), y]; dlogits starts from np.exp(log_p).",
])
def softmax_cross_entropy(fn):
    """softmax_cross_entropy(logits, y) -> (mean loss, dlogits), stable for huge logits."""
    for what, logits, y in _sce_cases():
        with trying("softmax_cross_entropy", logits, y, label=what) as case:
            want = ref.softmax_cross_entropy(logits, y)
            case.expected = want
            got = _call_translated(SCE_MISTAKES, fn, logits, y)
            loss, dlogits = expect_tuple(got, 2, "(loss, dlogits)", "softmax_cross_entropy")
            case.got = (loss, dlogits)
            expect(loss is not None and dlogits is not None, "return both the loss and dlogits (one is None)")
            expect(np.ndim(loss) == 0, f"the loss must be one number, the mean over the batch; got shape "
                                       f"{np.shape(loss)}")
            diagnose((loss, dlogits), want, SCE_MISTAKES, same=_same_sce,
                     apply=lambda wrong: wrong(logits, y))
            unstable = _sce_unstable(logits, y, loss, dlogits, want)
            if unstable:
                fail_with(SCE_MISTAKES, unstable)
            if np.abs(logits).max() > 100 and np.isfinite(loss) and loss < want[0] - 1e-6 and \
                    _close(dlogits, want[1], rtol=1e-7, atol=1e-12):
                fail_with(SCE_MISTAKES, "log of clipped softmax")
            expect_close(loss, want[0], "the loss", rtol=1e-7)
            expect_close(dlogits, want[1], "dlogits", rtol=1e-7, atol=1e-12)
    return "loss and dlogits match on 5 batches, including logits of ±1000, rows far apart and a batch of 1"


def _same_sce(a, b) -> bool:
    try:
        return (_close(a[0], b[0], rtol=1e-7) and _close(a[1], b[1], rtol=1e-7, atol=1e-12))
    except Exception:  # noqa: BLE001
        return False


# =========================================================================== 6 · a two-layer network

def _forward(params, x, y):
    w1, b1, w2, b2 = params
    pre = x @ w1.T + b1
    h = np.maximum(pre, 0)
    loss, dlogits = ref.softmax_cross_entropy(h @ w2.T + b2, y)
    return pre, h, loss, dlogits


def net_no_relu_mask(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dh = dlogits @ w2
    return loss, [dh.T @ x, dh.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


def net_mask_from_dh(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dh = dlogits @ w2
    dpre = dh * (dh > 0)
    return loss, [dpre.T @ x, dpre.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


def net_dlogits_not_divided(params, x, y):
    loss, grads = ref.mlp_loss_and_grads(params, x, y)
    return loss, [g * len(y) for g in grads]


def net_loss_summed(params, x, y):
    loss, grads = ref.mlp_loss_and_grads(params, x, y)
    return loss * len(y), grads


def net_dw_transposed(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dpre = (dlogits @ w2) * (pre > 0)
    return loss, [x.T @ dpre, dpre.sum(axis=0), h.T @ dlogits, dlogits.sum(axis=0)]


def net_db_not_summed(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dpre = (dlogits @ w2) * (pre > 0)
    return loss, [dpre.T @ x, dpre, dlogits.T @ h, dlogits]


def net_dh_with_w2_transposed(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dpre = (dlogits @ w2.T) * (pre > 0)
    return loss, [dpre.T @ x, dpre.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


def net_dw2_from_pre(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dpre = (dlogits @ w2) * (pre > 0)
    return loss, [dpre.T @ x, dpre.sum(axis=0), dlogits.T @ pre, dlogits.sum(axis=0)]


def net_no_max_shift(params, x, y):
    w1, b1, w2, b2 = params
    pre = x @ w1.T + b1
    h = np.maximum(pre, 0)
    logits = h @ w2.T + b2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # exp(1000) overflows
    rows = np.arange(len(y))
    dlogits = p.copy()
    dlogits[rows, y] -= 1
    dlogits /= len(y)
    dpre = (dlogits @ w2) * (pre > 0)
    return -np.log(p[rows, y]).mean(), [dpre.T @ x, dpre.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


def net_log_of_softmax(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, _, dlogits = _forward(params, x, y)
    p = ref.softmax(h @ w2.T + b2)
    dpre = (dlogits @ w2) * (pre > 0)
    return -np.log(p[np.arange(len(y)), y]).mean(), [dpre.T @ x, dpre.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


def net_mask_ge(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dpre = (dlogits @ w2) * (h >= 0)
    return loss, [dpre.T @ x, dpre.sum(axis=0), dlogits.T @ h, dlogits.sum(axis=0)]


def _mask_with_ge(fn) -> bool:
    """Whether the learner's source builds the ReLU mask with >= (h >= 0 is true everywhere: no mask at all)."""
    import inspect
    import re
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return re.search(r"\b(h|pre|hidden|z1|a1)\s*>=\s*0", source) is not None


def _net_cases():
    """(label, params, x, y, what a NaN or inf means here), small to large, then huge logits."""
    rng = np.random.default_rng(23)
    cases = []
    for n, d, h, k in ((1, 3, 4, 2), (6, 4, 5, 3)):
        params = ref.init_mlp([d, h, k], rng, dtype=np.float64)
        params = [p * 3 for p in params]  # larger weights: more ReLUs switched off, so the mask matters
        x, y = rng.standard_normal((n, d)), rng.integers(0, k, n)
        cases.append((f"(N, D, H, K) = {(n, d, h, k)}", params, x, y, None))
    n, d, h, k = 4, 3, 5, 3
    params = [p * 3 for p in ref.init_mlp([d, h, k], rng, dtype=np.float64)]
    params[3] = params[3] + 1000  # every logit near +1000: the same softmax, but exp(logits) overflows
    x, y = rng.standard_normal((n, d)), rng.integers(0, k, n)
    cases.append(("logits near +1000 (b2 = 1000 + ...)", params, x, y, "no max shift"))
    params = [p * 3 for p in ref.init_mlp([d, h, k], rng, dtype=np.float64)]
    params[2], params[3] = params[2] * 150, params[3] * 150  # logits spread over ±1000
    x = rng.standard_normal((n, d))
    y = (x @ params[0].T + params[1]).clip(0) @ params[2].T + params[3]
    cases.append(("logits spread over ±1000, every true class the worst", params, x, y.argmin(axis=1),
                  "log of softmax"))
    return cases


def net_grads_in_layer_order(params, x, y):
    loss, (dw1, db1, dw2, db2) = ref.mlp_loss_and_grads(params, x, y)
    return loss, [dw2, db2, dw1, db1]


NET_MISTAKES = (
    Mistake("no relu mask", net_no_relu_mask,
            "layer 2 is right but layer 1 is not: the gradient went through every hidden unit, as if there were "
            "no ReLU (a mask h >= 0 is true everywhere, so it masks nothing either); the ReLU lets gradient "
            "through only where pre > 0: multiply dh by that mask before the first layer"),
    Mistake("relu mask with >=", net_mask_ge,
            "the ReLU mask h >= 0 is true everywhere (h = relu(pre) is never negative), so gradient also flowed "
            "through the units that were off; use pre > 0 (or h > 0)"),
    Mistake("relu mask from dh", net_mask_from_dh,
            "the ReLU mask was taken from dh; whether a unit was on is decided in the forward pass: use "
            "pre > 0 (or h > 0)"),
    Mistake("dlogits not divided by N", net_dlogits_not_divided,
            "every gradient is N times too large: the loss is a mean, so dlogits = (p - onehot) / N"),
    Mistake("loss summed", net_loss_summed,
            "the loss is the sum over the batch; take the mean"),
    Mistake("dw transposed", net_dw_transposed,
            "dw1 and dw2 are transposed: each must have its weight's shape, (H, D) and (K, H): "
            "dout.T @ input"),
    Mistake("db not summed", net_db_not_summed,
            "db1 and db2 still have a batch axis: sum each gradient over the batch, axis 0"),
    Mistake("dh uses w2.T", net_dh_with_w2_transposed,
            "dh = dlogits @ w2.T does not fit: dlogits is (N, K) and w2 is (K, H), so dlogits @ w2 already "
            "gives h's shape (N, H)"),
    Mistake("dw2 from pre", net_dw2_from_pre,
            "dw2 was computed from pre, the input of the ReLU; layer 2's input is h = relu(pre): "
            "dw2 = dlogits.T @ h"),
    Mistake("grads in backward order", net_grads_in_layer_order,
            "the gradients are in the order you computed them, [dw2, db2, dw1, db1]; return them in the order of "
            "params: [dw1, db1, dw2, db2]"),
    Mistake("no max shift", net_no_max_shift,
            "the loss or the gradients are NaN for logits near +1000: np.exp(logits) overflows. Subtract each "
            "row's maximum from the logits before np.exp, as in exercise 5 (it changes nothing else)"),
    Mistake("log of softmax", net_log_of_softmax,
            "the loss is inf when a true class sits about 1000 below the best: its probability rounds to 0 and "
            "np.log(0) = -inf. Compute the log-probabilities directly with log-sum-exp, as in exercise 5"),
)


def _net_stages(params, x, y):
    w1, b1, w2, b2 = params
    pre, h, loss, dlogits = _forward(params, x, y)
    dh = dlogits @ w2
    dpre = dh * (pre > 0)
    return [("dlogits", dlogits, "dlogits = (softmax(logits) - onehot(y)) / N"),
            ("dw2", dlogits.T @ h, "dw2 = dlogits.T @ h, shape (K, H)"),
            ("dh", dh, "dh = dlogits @ w2, shape (N, H)"),
            ("dpre", dpre, "the ReLU mask: dpre = dh where pre > 0, and 0 elsewhere"),
            ("dw1", dpre.T @ x, "dw1 = dpre.T @ x, shape (H, D)"),
            ("db1", dpre.sum(axis=0), "db1 = dpre summed over the batch")]


@check.exercise(points=3, reference=ref.mlp_loss_and_grads, mistakes=NET_MISTAKES,
                forbid=(ref.linear_backward, ref.relu_backward, ref.tanh_backward, ref.activation_backward,
                        ref.softmax_cross_entropy, ref.log_softmax, ref.mlp_backward), hints=[
    "Backpropagation is the forward pass read backwards: keep every intermediate of the forward pass, start "
    "from dlogits (the softmax cross-entropy gradient) and undo one step at a time, each step turning the "
    "gradient of its output into the gradients of its inputs.",
    "Forward: pre, h = relu(pre), logits, then loss and dlogits. Backward: layer 2 gives dw2, db2 and dh "
    "(like linear_backward); the ReLU turns dh into dpre, zero where the unit was off; layer 1 gives dw1 "
    "and db1 from dpre.",
    "Loss and dlogits as in exercise 5 (shift each row by its maximum). Then dw2 = dlogits.T @ h, db2 sums "
    "dlogits over the batch, dh = dlogits @ <which weight?>, dpre = dh times a mask made from pre; dw1 and "
    "db1 come from dpre and x the way dw2 and db2 came from dlogits and h.",
])
def two_layer_net(fn):
    """two_layer_net(params, x, y) -> (loss, [dw1, db1, dw2, db2]) for Linear-ReLU-Linear + softmax CE."""
    names = ["dw1", "db1", "dw2", "db2"]
    for what, params, x, y, unstable in _net_cases():
        with trying("two_layer_net", params, x, y, label=what) as case:
            want_loss, want = ref.mlp_loss_and_grads(params, x, y)
            recorded: list = []
            out = _call_translated(NET_MISTAKES, fn, params, x, y, record=recorded)
            loss, grads = expect_tuple(out, 2, "(loss, grads)", "two_layer_net")
            case.got = out
            expect(isinstance(grads, (tuple, list)) and len(grads) == 4,
                   "grads must be a list of four arrays [dw1, db1, dw2, db2], in the order of params")
            for name, g in zip(names, grads):
                expect(g is not None, f"{name} is None: every parameter needs a gradient")
            try:
                diagnose((loss, list(grads)), (want_loss, want), NET_MISTAKES, same=_same_items,
                         apply=lambda wrong: wrong(params, x, y))
            except CheckFailed as fail:
                if fail.mistake == "no relu mask" and _mask_with_ge(fn):
                    fail_with(NET_MISTAKES, "relu mask with >=")
                raise
            if unstable and not _all_finite(loss, grads):
                fail_with(NET_MISTAKES, unstable if _all_finite(0.0, grads) else "no max shift", f"({what})")
            expect_close(loss, want_loss, "the loss", rtol=1e-7)
            if not all(_close(g, w, rtol=1e-7, atol=1e-12) for g, w in zip(grads, want)):
                first_wrong_stage(recorded, _net_stages(params, x, y))
            for name, g, w in zip(names, grads, want):
                expect_close(g, w, name, rtol=1e-7, atol=1e-12)
    return "loss and all four gradients match, including a batch of 1 and logits near ±1000"


def _all_finite(loss, grads) -> bool:
    try:
        return bool(np.isfinite(float(loss))) and all(np.all(np.isfinite(np.asarray(g, dtype=np.float64)))
                                                      for g in grads)
    except (TypeError, ValueError):
        return True  # not numbers: the comparisons below say what is wrong


# =========================================================================== 7 · numerical gradient

def numgrad_one_sided(f, x, h=1e-5):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    base = f(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f(x) - base) / h
        x[i] = old
    return grad


def numgrad_divided_by_h(f, x, h=1e-5):
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[i] = (plus - minus) / h
    return grad


def numgrad_not_restored(f, x, h=1e-5):
    grad = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        grad[i] = (plus - minus) / (2 * h)  # x[i] is left at old - h
    return grad


def numgrad_copy_not_restored(f, x, h=1e-5):
    x = x.astype(float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        g[i] = (fp - fm) / (2 * h)  # the copy's x[i] stays at old - h for the next entries
    return g


def numgrad_fixed_h(f, x, h=1e-5):
    h = 1e-3  # the argument is ignored
    x = x.astype(float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def numgrad_integer_copy(f, x, h=1e-5):
    x = x.copy()  # an integer x stays integer: every nudge is rounded away
    grad = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def numgrad_integer_grad_array(f, x, h=1e-5):
    work = x.astype(np.float64)
    grad = np.zeros_like(x)  # an integer x makes an integer grad: the slopes are truncated
    for i in np.ndindex(x.shape):
        old = work[i]
        work[i] = old + h
        plus = f(work)
        work[i] = old - h
        minus = f(work)
        work[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def numgrad_float32(f, x, h=1e-5):
    x = x.astype(np.float32)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def numgrad_all_at_once(f, x, h=1e-5):
    x = x.astype(np.float64)
    return np.full(x.shape, (f(x + h) - f(x - h)) / (2 * h))


def numgrad_first_axis_only(f, x, h=1e-5):
    x = x.astype(np.float64)
    grad = np.zeros_like(x)
    for i in range(x.shape[0]):
        plus, minus = x.copy(), x.copy()
        plus[i] += h
        minus[i] -= h
        grad[i] = (f(plus) - f(minus)) / (2 * h)
    return grad


NUMGRAD_MISTAKES = (
    Mistake("float32 copy", numgrad_float32,
            "the gradient was computed in float32: with h = 1e-5, float32's rounding (about 1e-7 of each value) "
            "swamps f(x+h) - f(x-h). Work on a float64 copy: x.astype(np.float64)"),
    Mistake("integer grad array", numgrad_integer_grad_array,
            "the gradient array is an integer array (np.zeros_like(x) copies an integer x's dtype), so every "
            "slope was truncated to a whole number; make it float: np.zeros(x.shape)"),
    Mistake("integer copy", numgrad_integer_copy,
            "x is an integer array, so x[i] = old + h stores a whole number: old ± h is truncated toward 0 "
            "(2 + 1e-5 -> 2, 2 - 1e-5 -> 1, -2 + 1e-5 -> -1), the nudge becomes 0 or a whole 1, and the slopes come "
            "out as 0 or huge. Work on a float copy: x.astype(float)"),
    Mistake("one-sided difference", numgrad_one_sided,
            "that is the one-sided difference (f(x+h) - f(x)) / h, whose error shrinks only like h; use the "
            "centred (f(x+h) - f(x-h)) / (2h)"),
    Mistake("divided by h", numgrad_divided_by_h,
            "the gradient is twice too large: the two evaluations are 2h apart, so divide f(x+h) - f(x-h) by 2h"),
    Mistake("every entry at once", numgrad_all_at_once,
            "every entry was perturbed at once (x + h), which measures the sum of all slopes; nudge ONE entry at "
            "a time, for every index of x (np.ndindex(x.shape))"),
    Mistake("first axis only", numgrad_first_axis_only,
            "the loop went over the first axis only, so x[i] nudged a whole row at once; nudge one entry at a "
            "time, for every index of x: for i in np.ndindex(x.shape)"),
    Mistake("entry not restored", numgrad_copy_not_restored,
            "after nudging an entry you did not put its old value back (x[i] = old), so every later slope was "
            "measured at a point where the earlier entries sit at old - h; that shows on a function whose slopes "
            "depend on the other entries"),
    Mistake("ignores h", numgrad_fixed_h,
            "your function ignores its argument h and uses a step of its own; use the h it is given (h=1e-5 is "
            "only the default: the check also calls it with h = 0.1)"),
    Mistake("x not restored", numgrad_not_restored,
            "x was changed: after perturbing an entry, put its old value back before moving on (or work on a "
            "copy of x), or every later slope is measured at the wrong point"),
)


def _grad_cases():
    """(description, f, f as source text, x, the expected gradient of x, h or None for the default)."""
    rng = np.random.default_rng(24)
    weights = rng.standard_normal((2, 2, 2))
    mixing = np.round(rng.standard_normal((2, 3)), 2)
    cube_x = np.round(rng.uniform(-2, 2, (2, 3)), 3)
    return [
        ("f(x) = sum(sin(x) * x), x of shape (4,)", lambda v: np.sum(np.sin(v) * v), "lambda v: np.sum(np.sin(v) * v)",
         rng.uniform(-3, 3, 4), lambda v: np.cos(v) * v + np.sin(v), None),
        # not a sum of one function per entry: every slope depends on all entries of x
        ("f(x) = sum(tanh(W @ x)), x of shape (3,): each slope depends on every entry",
         lambda v: np.sum(np.tanh(mixing @ v)), f"lambda v: np.sum(np.tanh({reproduce('', mixing)} @ v))",
         rng.uniform(-1, 1, 3), lambda v: mixing.T @ (1 - np.tanh(mixing @ v) ** 2), None),
        ("f(x) = sum(x**3), x of shape (2, 3)", lambda v: np.sum(v ** 3), "lambda v: np.sum(v ** 3)",
         rng.uniform(-2, 2, (2, 3)), lambda v: 3 * v ** 2, None),
        ("f(x) = sum(exp(x) * c), x of shape (2, 2, 2)", lambda v: np.sum(np.exp(v) * weights),
         f"lambda v: np.sum(np.exp(v) * {reproduce('', weights)})",
         rng.uniform(-1, 1, (2, 2, 2)), lambda v: np.exp(v) * weights, None),
        ("f(x) = sum(x**3 - 2x) / 5, x an INTEGER array of shape (2, 3)", lambda v: np.sum(v ** 3 - 2 * v) / 5,
         "lambda v: np.sum(v ** 3 - 2 * v) / 5",
         np.array([[1, -2, 3], [0, 2, -1]]), lambda v: (3.0 * v ** 2 - 2) / 5, None),
        # with a large step the centred difference of x**3 is exactly 3x² + h², not 3x²
        ("f(x) = sum(x**3) with h = 0.1 passed in: the centred difference is 3x² + h²",
         lambda v: np.sum(v ** 3), "lambda v: np.sum(v ** 3)", cube_x, lambda v: 3 * v ** 2 + 0.01, 0.1),
    ]


@check.exercise(points=2, reference=numerical_grad, mistakes=NUMGRAD_MISTAKES, hints=[
    "A partial derivative is a sensitivity: nudge ONE entry of x by a tiny h, both up and down, and see how "
    "much f moves per unit of nudge. Do that for every entry; leave everything else (and the caller's x) as "
    "it was.",
    "Work on a float64 copy of x. For every index (np.ndindex covers any number of dimensions): remember "
    "the entry, set it to old + h and evaluate f, set it to old - h and evaluate f, restore it, and store the "
    "centred difference in a float gradient array shaped like x.",
    "for i in np.ndindex(x.shape) over a float64 copy of x: keep old = x[i], evaluate f with x[i] = old + h "
    "and with x[i] = old - h, put old back, and store the centred difference in grad[i] (grad = np.zeros(x.shape)).",
])
def numerical_gradient(fn):
    """numerical_gradient(f, x, h=1e-5) -> the centred-difference gradient of a scalar f at x."""
    for what, f, f_text, x, exact, h in _grad_cases():
        step = {} if h is None else {"h": h}
        call_text = reproduce("numerical_gradient", x, **step).replace("numerical_gradient(",
                                                                        f"numerical_gradient({f_text}, ", 1)
        with trying("numerical_gradient", f, x, label=what, call_text=call_text, **step) as case:
            before = x.copy()
            want = exact(before)
            case.expected = want
            got = call(fn, f, x, allow_mutation=True, **step)
            case.got = got
            if not np.array_equal(x, before):
                x[...] = before
                fail_with(NUMGRAD_MISTAKES, "x not restored")
            if got is not None and np.asarray(got).dtype == np.float32:
                fail_with(NUMGRAD_MISTAKES, "float32 copy")
            diagnose(got, want, NUMGRAD_MISTAKES, rtol=1e-6, atol=1e-7,
                     apply=lambda wrong: wrong(f, x.copy(), **step))
            if got is not None and np.asarray(got).dtype.kind in "iu":
                fail_with(NUMGRAD_MISTAKES, "integer grad array")
            if got is not None and np.shape(got) != x.shape:
                raise CheckFailed(f"the gradient has shape {np.shape(got)}, expected x's shape {x.shape}: "
                                  "one slope for every entry of x")
            if h is not None and _close(got, exact(before) - h * h, rtol=1e-3, atol=1e-4) and \
                    not _close(got, want, rtol=1e-6, atol=1e-7):
                fail_with(NUMGRAD_MISTAKES, "ignores h")  # the slope of a small step: h was not used
            expect_close(got, want, "the gradient", rtol=1e-6, atol=1e-7)
    return ("centred differences match on 5 functions of 1-, 2- and 3-D arrays (one of integers, one whose slopes "
            "depend on every entry) and with a given h = 0.1")


# =========================================================================== concept questions

check.question(
    "q_dw_shape", answer=(128, 64),
    explanation="a gradient has the shape of what it is the gradient of: dw is shaped like w, (H, D); the batch "
                "axis is summed away by dout.T @ x.",
    mistakes=[Mistake("transposed", (64, 128), "(64, 128) is w transposed: dw must have w's own shape (H, D)"),
              Mistake("per example", (32, 128, 64), "there is no batch axis in dw: the contributions of the 32 "
                                                    "examples are summed, because w is shared by all of them"),
              Mistake("shape of out", (32, 128), "(32, 128) is the shape of out and dout; dw is shaped like w")])

check.question(
    "q_backward_passes", answer=1,
    explanation="reverse mode gives the derivative of one output with respect to every node in one backward "
                "pass, about the cost of the forward pass; forward mode would need one pass per weight.",
    mistakes=[Mistake("forward mode count", 1_000_000, "one pass per weight is forward mode; reverse mode gets all "
                                                       "1,000,000 gradients of the one loss in a single pass"),
              Mistake("two per weight", 2_000_000, "two evaluations per weight is the numerical gradient, far too "
                                                   "slow for training; backpropagation needs one backward pass")])

check.question(
    "q_grad_of_square", answer=6.0,
    explanation="c = a * a uses a twice; each use sends local × upstream = 3 × 1, and the two contributions "
                "add up: dc/da = 3 + 3 = 6 = 2a.",
    mistakes=[Mistake("one path only", 3.0, "3 is what ONE use of a sends; a is used twice in a * a and "
                                            "the contributions add up (+=)"),
              Mistake("the value", 9.0, "9 is c itself, the forward value; the gradient is the sensitivity dc/da")])

check.question(
    "q_tanh_saturated_slope", answer=1 - math.tanh(3.25) ** 2, rtol=2e-2,
    explanation="1 - tanh(3.25)² ≈ 0.006: a saturated tanh passes on less than 1% of the gradient, to every "
                "node below it.",
    mistakes=[Mistake("1 - n squared", 1 - 3.25 ** 2, "1 - n² uses the input; the slope is 1 - t² with "
                                                     "t = tanh(n), the output"),
              Mistake("tanh itself", math.tanh(3.25), "that is tanh(3.25), the output; the local derivative is "
                                                      "1 - tanh(3.25)²")])
