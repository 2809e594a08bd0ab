"""A scalar autograd engine: the chain rule, automated, in about a hundred lines.

A :class:`Value` holds one number.  Every operation on Values makes a new
Value that remembers its inputs (``children``) and the *local derivative* of
its output with respect to each input (``local_grads``), computed during the
forward pass while the numbers are at hand.  Together they form a
computational graph.  :meth:`Value.backward` then walks that graph from the
output back to the inputs, in reverse topological order, and applies the chain
rule at every edge::

    child.grad += local_grad * node.grad

``+=`` because a Value used twice receives gradient along both paths.

    >>> a, b = Value(2.0), Value(-3.0)
    >>> c = a * b + a          # c = ab + a
    >>> c.backward()
    >>> a.grad, b.grad         # dc/da = b + 1, dc/db = a
    (-2.0, 2.0)
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["Value", "topological_order"]


class Value:
    """A scalar in a computational graph, with the gradient of the output w.r.t. it.

    Parameters
    ----------
    data : the number
    children : the Values this one was computed from (empty for an input)
    local_grads : ``d self / d child`` for each child, in the same order
    op : a short name of the operation, e.g. ``"*"`` (for printing and drawing)
    label : an optional name, e.g. ``"x1"`` (for drawing)
    """

    def __init__(self, data: float, children: Sequence["Value"] = (),
                 local_grads: Sequence[float] = (), op: str = "", label: str = ""):
        self.data = float(data)
        self.grad = 0.0  # d output / d self, filled in by backward()
        self.children = tuple(children)
        self.local_grads = tuple(float(g) for g in local_grads)
        self.op = op
        self.label = label

    def __repr__(self) -> str:
        name = f"{self.label}=" if self.label else ""
        return f"Value({name}{self.data:.4g}, grad={self.grad:.4g})"

    # ------------------------------------------------------------- operations
    # Each one returns Value(forward value, inputs, local derivatives, op):
    # the local-derivative table of calculus, one line per rule.

    def __add__(self, other) -> "Value":
        other = _as_value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")   # d(a+b)/da = 1, d/db = 1

    def __mul__(self, other) -> "Value":
        other = _as_value(other)
        return Value(self.data * other.data, (self, other),
                     (other.data, self.data), "*")                            # d(ab)/da = b, d(ab)/db = a

    def __pow__(self, n: float) -> "Value":
        if isinstance(n, Value):
            raise TypeError("only a constant exponent is supported: write (x.log() * y).exp() for x ** y")
        return Value(self.data ** n, (self,), (n * self.data ** (n - 1),), f"**{n:g}")  # d x^n/dx = n x^(n-1)

    def __truediv__(self, other) -> "Value":
        other = _as_value(other)
        return Value(self.data / other.data, (self, other),
                     (1 / other.data, -self.data / other.data ** 2), "/")    # d(a/b)/da = 1/b, d/db = -a/b^2

    def __neg__(self) -> "Value":
        return Value(-self.data, (self,), (-1.0,), "neg")                     # d(-a)/da = -1

    def __sub__(self, other) -> "Value":
        other = _as_value(other)
        return Value(self.data - other.data, (self, other), (1.0, -1.0), "-")  # d(a-b)/da = 1, d/db = -1

    def exp(self) -> "Value":
        e = math.exp(self.data)
        return Value(e, (self,), (e,), "exp")                                 # d e^x/dx = e^x

    def log(self) -> "Value":
        return Value(math.log(self.data), (self,), (1 / self.data,), "log")   # d ln x/dx = 1/x

    def tanh(self) -> "Value":
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,), "tanh")                        # d tanh/dx = 1 - tanh^2

    def relu(self) -> "Value":
        positive = self.data > 0
        return Value(self.data if positive else 0.0, (self,),
                     (1.0 if positive else 0.0,), "relu")                     # slope 1 if x > 0, else 0

    def sigmoid(self) -> "Value":
        x = self.data
        if x >= 0:  # the two equal forms, each safe from overflow on its side
            s = 1 / (1 + math.exp(-x))
        else:
            s = math.exp(x) / (1 + math.exp(x))
        return Value(s, (self,), (s * (1 - s),), "sigmoid")                   # d s/dx = s (1 - s)

    # the mirrored forms, so that 2 * x and 1 - x work too
    def __radd__(self, other) -> "Value":
        return self + other

    def __rmul__(self, other) -> "Value":
        return self * other

    def __rsub__(self, other) -> "Value":
        return _as_value(other) - self

    def __rtruediv__(self, other) -> "Value":
        return _as_value(other) / self

    # ------------------------------------------------------------- the backward pass
    def backward(self) -> None:
        """Fill in ``.grad`` of every Value this one depends on: ``d self / d node``.

        Gradients accumulate (``+=``), like PyTorch's ``.grad``: call
        :meth:`zero_grad` before a second backward pass over the same graph.
        """
        self.grad = 1.0  # d self / d self
        for node in reversed(topological_order(self)):
            # by now every node that uses `node` has passed its gradient to it
            for child, local in zip(node.children, node.local_grads):
                child.grad += local * node.grad  # the chain rule, summed over paths

    def zero_grad(self) -> None:
        """Set ``.grad = 0`` on this Value and everything it depends on."""
        for node in topological_order(self):
            node.grad = 0.0


def _as_value(x) -> Value:
    return x if isinstance(x, Value) else Value(x)


def topological_order(root: Value) -> list[Value]:
    """Every Value ``root`` depends on, each listed after all of its children.

    A depth-first search that appends a node once all its children are done
    (an explicit stack instead of recursion, so deep graphs do not hit
    Python's recursion limit).
    """
    order: list[Value] = []
    visited: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))  # come back to it after its children
        for child in reversed(node.children):
            if id(child) not in visited:
                stack.append((child, False))
    return order

