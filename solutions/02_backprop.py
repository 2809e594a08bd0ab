# %% [markdown]
# # 02 · Backpropagation: exercises
#
# You will build the machinery of the lesson yourself, from the smallest piece up:
#
# | # | exercise | points |
# |---|---|---|
# | 1 | the operations of a scalar `Value` and their local derivatives | 2 |
# | 2 | `Value.backward`: topological order and the chain rule | 3 |
# | 3 | `linear_backward`: gradients of a linear layer | 2 |
# | 4 | `activation_backward`: relu, sigmoid and tanh, from their outputs | 2 |
# | 5 | `softmax_cross_entropy`: a stable loss and its gradient | 3 |
# | 6 | `two_layer_net`: the loss and all gradients of a small network | 3 |
# | 7 | `numerical_gradient`: your own gradient checker | 2 |
#
# **How it works.** Each exercise gives a function (or a method) to complete: replace
# `raise NotImplementedError()` with your code and run the cell. Then run the **check cell**
# under it: it tests your code on several inputs and shows ✓ or ✗ with the points and one
# message that says what is wrong. Stuck? `check.hint("name")` shows a hint; run it again
# for the next one. The last cell shows your score.
#
# Work in NumPy only (no PyTorch here), and never change an input array in place.

# %%
import math

import numpy as np

from dlcourse.backprop.checks import check

# %% [markdown]
# ## Exercise 1 · The operations of a `Value` (2 points)
#
# A `Value` wraps one number. Every operation returns a **new** `Value` that records
#
# * `data`: the result,
# * `children`: the Values it was computed from (a tuple),
# * `local_grads`: the derivative of the result with respect to each child, **in the same
#   order** (a tuple of numbers), computed now from the numbers at hand,
# * `op`: a short name such as `"*"` (only for printing).
#
# `__add__` is written for you as the worked example: `a + b` is
# `Value(a.data + b.data, (a, b), (1.0, 1.0), "+")`. Complete the other six in the same way:
# `__mul__`, `__pow__` (the exponent `n` is a plain number), `exp`, `log`, `tanh` and `relu`
# (slope 0 where the input is $\le 0$, so also at exactly 0). The table of local derivatives
# is in the lesson.
# Subtraction, division, negation and the mirrored forms (`2 * a`) are given: they are built
# from your operations. Use `math.exp`, `math.log`, `math.tanh`.
#
# The check runs 13 expressions such as `a * b`, `b ** -2`, `3 * a - b` and
# `(a * b + a).tanh()`, plus `Value(0.0).relu()`, and follows your `children` and
# `local_grads` with a correct backward pass of its own, so this exercise does not need
# exercise 2.

# %%
class Value:
    """A scalar in a computational graph."""

    def __init__(self, data, children=(), local_grads=(), op=""):
        self.data = float(data)
        self.grad = 0.0                       # d output / d self, set by backward()
        self.children = tuple(children)       # the Values this one was computed from
        self.local_grads = tuple(local_grads)  # d self / d child, one per child
        self.op = op

    def __repr__(self):
        return f"Value({self.data:.4g}, grad={self.grad:.4g})"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")  # given: the worked example

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        ### BEGIN SOLUTION
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")
        ### END SOLUTION

    def __pow__(self, n):
        """self ** n for a plain number n."""
        ### BEGIN SOLUTION
        return Value(self.data ** n, (self,), (n * self.data ** (n - 1),), f"**{n}")
        ### END SOLUTION

    def exp(self):
        ### BEGIN SOLUTION
        e = math.exp(self.data)
        return Value(e, (self,), (e,), "exp")
        ### END SOLUTION

    def log(self):
        ### BEGIN SOLUTION
        return Value(math.log(self.data), (self,), (1 / self.data,), "log")
        ### END SOLUTION

    def tanh(self):
        ### BEGIN SOLUTION
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,), "tanh")
        ### END SOLUTION

    def relu(self):
        ### BEGIN SOLUTION
        positive = self.data > 0
        return Value(self.data if positive else 0.0, (self,), (1.0 if positive else 0.0,), "relu")
        ### END SOLUTION

    # given: built from the operations above
    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return (-self) + other

    def __rtruediv__(self, other):
        return self ** -1 * other


# %%
check.value_ops(Value)

# %% [markdown]
# ## Exercise 2 · `Value.backward` (3 points)
#
# Write `backward(self)`, which fills in `.grad` of every Value that `self` depends on with
# $\partial\,\text{self} / \partial\,\text{node}$:
#
# 1. Build a **topological order**: a list of all nodes in which every node comes *after*
#    all of its children. A depth-first search does it: visit a node's children first, then
#    append the node (skip nodes already visited).
# 2. Set `self.grad = 1.0`, then go through the list **in reverse** and, for each node, add
#    `local * node.grad` to each child's `.grad`.
#
# Use `+=`: a Value used twice (as in `a * a`) must collect the gradient from both uses. And
# only touch `.grad`, never `.data`. The cell attaches your function to the class as a method.
# The check builds graphs with the constructor directly (chains, a node used twice, shared
# nodes, a random graph), so it does not depend on exercise 1.

# %%
def backward(self):
    """Fill in .grad of every node this Value depends on, by the chain rule."""
    ### BEGIN SOLUTION
    order, seen = [], set()

    def visit(node):
        if id(node) not in seen:
            seen.add(id(node))
            for child in node.children:
                visit(child)
            order.append(node)  # after all its children
    visit(self)
    self.grad = 1.0
    for node in reversed(order):
        for child, local in zip(node.children, node.local_grads):
            child.grad += local * node.grad
    ### END SOLUTION


Value.backward = backward

# %%
check.value_backward(Value)

# %% [markdown]
# ## Exercise 3 · The backward pass of a linear layer (2 points)
#
# The forward pass is `out = x @ w.T + b` with `x` of shape `(N, D)`, `w` of shape `(H, D)`
# (PyTorch's layout) and `b` of shape `(H,)`; it saved `cache = (x, w)`.
#
# Write `linear_backward(dout, cache)` that receives `dout` $= \partial L / \partial
# \text{out}$, shape `(N, H)`, and returns `(dx, dw, db)` shaped like `x`, `w` and `b`.
# Remember: a gradient has the shape of its variable, and a parameter used by every example
# of the batch sums their contributions. No loops needed.

# %%
def linear_backward(dout, cache):
    """dout: (N, H); cache: (x (N, D), w (H, D)) -> dx (N, D), dw (H, D), db (H,)."""
    x, w = cache
    ### BEGIN SOLUTION
    dx = dout @ w
    dw = dout.T @ x
    db = dout.sum(axis=0)
    return dx, dw, db
    ### END SOLUTION


# %%
check.linear_backward(linear_backward)

# %% [markdown]
# ## Exercise 4 · Activations, backwards (2 points)
#
# Many activations have a derivative that is easiest to write with their **output**, which
# the forward pass already computed. Write `activation_backward(dout, out, kind)`:
#
# * `out` is the activation's output (same shape as `dout`), `kind` is `"relu"`,
#   `"sigmoid"` or `"tanh"`;
# * return `dx`, the gradient with respect to the activation's input: `dout` times the local
#   derivative, written in terms of `out` only.
#
# For relu, the slope is 0 wherever the output is 0.

# %%
def activation_backward(dout, out, kind):
    """dout, out: arrays of the same shape; kind: 'relu' | 'sigmoid' | 'tanh' -> dx."""
    ### BEGIN SOLUTION
    if kind == "relu":
        return dout * (out > 0)
    if kind == "sigmoid":
        return dout * out * (1 - out)
    if kind == "tanh":
        return dout * (1 - out * out)
    raise ValueError(f"unknown activation {kind!r}")
    ### END SOLUTION


# %%
check.activation_backward(activation_backward)

# %% [markdown]
# ## Exercise 5 · Softmax cross-entropy (3 points)
#
# Write `softmax_cross_entropy(logits, y)`:
#
# * `logits` has shape `(N, C)`, `y` holds the correct class of each example, integers of
#   shape `(N,)`;
# * return `(loss, dlogits)`: the **mean** over the batch of $-\log \operatorname{softmax}
#   (\text{logits}_n)[y_n]$ (one number), and its gradient with respect to `logits`,
#   shape `(N, C)`, which is $(\text{softmax} - \text{onehot}) / N$.
#
# It must work for logits as large as $\pm 1000$: use the log-sum-exp trick (subtract each
# row's maximum before `np.exp`).

# %%
def softmax_cross_entropy(logits, y):
    """logits: (N, C), y: int (N,) -> (mean loss, dlogits (N, C))."""
    ### BEGIN SOLUTION
    n = logits.shape[0]
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1
    return loss, dlogits / n
    ### END SOLUTION


# %%
check.softmax_cross_entropy(softmax_cross_entropy)

# %% [markdown]
# ## Exercise 6 · A two-layer network, forward and backward (3 points)
#
# Put the pieces together, by hand. `params = [w1, b1, w2, b2]` with `w1` of shape `(H, D)`,
# `b1` `(H,)`, `w2` `(C, H)`, `b2` `(C,)`. The network is
#
# $$\text{pre} = x W_1^\top + b_1,\quad h = \operatorname{relu}(\text{pre}),\quad
# \text{logits} = h W_2^\top + b_2,$$
#
# followed by the mean softmax cross-entropy. Write `two_layer_net(params, x, y)` returning
# `(loss, [dw1, db1, dw2, db2])`. Go backwards layer by layer; the ReLU passes gradient only
# where `pre > 0`. Write it out with NumPy directly instead of calling your functions from
# exercises 3 to 5, so that this exercise is graded on its own.

# %%
def two_layer_net(params, x, y):
    """params: [w1 (H, D), b1 (H,), w2 (C, H), b2 (C,)]; x: (N, D); y: int (N,) -> (loss, grads)."""
    w1, b1, w2, b2 = params
    ### BEGIN SOLUTION
    n = x.shape[0]
    rows = np.arange(n)
    pre = x @ w1.T + b1                  # (N, H)
    h = np.maximum(pre, 0)               # (N, H)
    logits = h @ w2.T + b2               # (N, C)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1
    dlogits /= n                         # (N, C)
    dw2 = dlogits.T @ h                  # (C, H)
    db2 = dlogits.sum(axis=0)            # (C,)
    dh = dlogits @ w2                    # (N, H)
    dpre = dh * (pre > 0)                # the ReLU lets gradient through where it was on
    dw1 = dpre.T @ x                     # (H, D)
    db1 = dpre.sum(axis=0)               # (H,)
    return loss, [dw1, db1, dw2, db2]
    ### END SOLUTION


# %%
check.two_layer_net(two_layer_net)

# %% [markdown]
# ## Exercise 7 · Your own gradient checker (2 points)
#
# Write `numerical_gradient(f, x, h=1e-5)` for a function `f` that takes an array shaped like
# `x` and returns one number. Return an array shaped like `x` whose entry `i` is the
# **centred difference**
#
# $$\frac{f(x + h\,e_i) - f(x - h\,e_i)}{2h},$$
#
# where $e_i$ changes only entry `i` (so loop over every index of `x`, whatever its number of
# dimensions: `np.ndindex(x.shape)` gives them all). Do not leave `x` changed, and remember
# that `x` may hold integers, where `x[i] = old + h` would round the nudge away: work on a
# float copy (`x.astype(float)`).
#
# The default `h = 1e-5` is a little larger than the `1e-6` of the lesson's `numerical_grad`;
# both are fine in float64, where any $h$ from about $10^{-4}$ to $10^{-7}$ balances the
# centred difference's error (which shrinks like $h^2$) against rounding error (which grows
# like $10^{-16}/h$).

# %%
def numerical_gradient(f, x, h=1e-5):
    """f: array -> float; x: array of any shape -> gradient shaped like x (centred differences)."""
    ### BEGIN SOLUTION
    x = np.array(x, dtype=np.float64)   # a private copy we may perturb
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
    ### END SOLUTION


# %%
check.numerical_gradient(numerical_gradient)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
