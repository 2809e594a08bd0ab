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
# | 4 | `activation_backward`: relu and tanh, from their outputs | 2 |
# | 5 | `softmax_cross_entropy`: a stable loss and its gradient | 3 |
# | 6 | `two_layer_net`: a whole network's forward and backward pass, by hand | 3 |
# | 7 | `numerical_gradient`: your own gradient checker | 2 |
# | 8 | four concept questions | 4 |
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
# `__add__` and `tanh` are written for you: they are the two worked examples of the lesson.
# Complete the other five in the same way: `__mul__`, `__pow__` (the exponent `n` is a plain
# number), `exp`, `log` and `relu` (slope 0 where the input is $\le 0$, so also at exactly 0).
# The table of local derivatives is in the lesson. Subtraction, division, negation and the
# mirrored forms (`2 * a`) are given: they are built from your operations. Use `math.exp` and
# `math.log`. An operation never changes its inputs: the result goes into the new `Value` only.
#
# The check runs 15 expressions such as `a * b`, `b ** -2`, `a ** 0.5`, `a ** 2` at a = 0, `3 * a - b` and
# `(a * b + a).tanh()`, and `relu` at exactly 0, and follows your `children` and `local_grads`
# with a correct backward pass of its own, so this exercise does not need exercise 2.

# %%
class Value:
    """A scalar in a computational graph."""

    def __init__(self, data, children=(), local_grads=(), op="", label=""):
        self.data = float(data)
        self.grad = 0.0                        # d output / d self, set by backward()
        self.children = tuple(children)        # the Values this one was computed from
        self.local_grads = tuple(local_grads)  # d self / d child, one per child
        self.op = op
        self.label = label

    def __repr__(self):
        return f"Value({self.data:.4g}, grad={self.grad:.4g})"

    def __add__(self, other):  # given: the first worked example of the lesson
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")

    def tanh(self):  # given: the second worked example (its slope reuses the output)
        t = math.tanh(self.data)
        return Value(t, (self,), (1 - t * t,), "tanh")

    def __mul__(self, other):
        ### BEGIN SOLUTION
        other = other if isinstance(other, Value) else Value(other)
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

    def relu(self):
        ### BEGIN SOLUTION
        on = self.data > 0
        return Value(self.data if on else 0.0, (self,), (1.0 if on else 0.0,), "relu")
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
# nodes, two different nodes that hold the same number, a random graph), so it does not
# depend on exercise 1.

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
# The lesson worked out the sigmoid's backward pass from its **output** $s$: the slope is
# $s(1 - s)$, so `dx = dout * s * (1 - s)`, and the forward pass already computed $s$. Do the
# same for ReLU and tanh. Write `activation_backward(dout, out, kind)`:
#
# * `out` is the activation's output (same shape as `dout`), `kind` is `"relu"` or `"tanh"`;
# * return `dx`, the gradient with respect to the activation's input: `dout` times the local
#   derivative, written in terms of `out` only.
#
# For relu, the slope is 0 wherever the unit was off, including an input of exactly 0.

# %%
def activation_backward(dout, out, kind):
    """dout, out: arrays of the same shape; kind: 'relu' | 'tanh' -> dx shaped like dout."""
    ### BEGIN SOLUTION
    if kind == "relu":
        return dout * (out > 0)
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
# * `logits` has shape `(N, K)` (K classes), `y` holds the correct class of each example,
#   integers of shape `(N,)`;
# * return `(loss, dlogits)`: the **mean** over the batch of $-\log \operatorname{softmax}
#   (\text{logits}_n)[y_n]$ (one number), and its gradient with respect to `logits`,
#   shape `(N, K)`, which is $(\text{softmax} - \text{onehot}) / N$.
#
# It must work for logits as large as $\pm 1000$, also when the true class sits at $-1000$ and
# when one row is near $+1000$ and another near $-1000$: never exponentiate a large number,
# and never take the log of a probability that rounds to 0.

# %%
def softmax_cross_entropy(logits, y):
    """logits: (N, K), y: int (N,) -> (mean loss, dlogits (N, K))."""
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
# Put the pieces together, by hand: the lesson ran a whole MLP's backward pass without showing
# it, and now you write one. `params = [w1, b1, w2, b2]` with `w1` of shape `(H, D)`,
# `b1` `(H,)`, `w2` `(K, H)`, `b2` `(K,)` (D input features, H hidden units, K classes).
# The network is
#
# $$\text{pre} = x W_1^\top + b_1,\quad h = \operatorname{relu}(\text{pre}),\quad
# \text{logits} = h W_2^\top + b_2,$$
#
# followed by the mean softmax cross-entropy. Write `two_layer_net(params, x, y)` returning
# `(loss, [dw1, db1, dw2, db2])`. Go backwards layer by layer; the ReLU passes gradient only
# where `pre > 0`. Write it out with NumPy directly instead of calling your functions from
# exercises 3 to 5, so that this exercise is graded on its own (the course's own functions
# earn no points here). Like exercise 5, it must stay finite for logits near $\pm 1000$. If a
# gradient is wrong, the check names the first intermediate (`dlogits`, `dw2`, `dh`, `dpre`,
# ...) that went wrong, so keep each in its own variable.

# %%
def two_layer_net(params, x, y):
    """params: [w1 (H, D), b1 (H,), w2 (K, H), b2 (K,)]; x: (N, D); y: int (N,) -> (loss, grads)."""
    w1, b1, w2, b2 = params
    ### BEGIN SOLUTION
    n = x.shape[0]
    rows = np.arange(n)
    pre = x @ w1.T + b1                  # (N, H)
    h = np.maximum(pre, 0)               # (N, H)
    logits = h @ w2.T + b2               # (N, K)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dlogits = np.exp(log_probs)
    dlogits[rows, y] -= 1
    dlogits /= n                         # (N, K)
    dw2 = dlogits.T @ h                  # (K, H)
    db2 = dlogits.sum(axis=0)            # (K,)
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
# dimensions: `np.ndindex(x.shape)` gives them all). Put each entry back before nudging the
# next one, do not leave the caller's `x` changed, use the `h` you are given, and remember
# that `x` may hold integers, where `x[i] = old + h` would truncate the nudge: work on a
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
# ## Concept questions (1 point each)
#
# Answer each with a value: replace the `raise NotImplementedError()` with `return <your answer>`.

# %%
def q_dw_shape():
    """A linear layer has w of shape (H, D) = (128, 64) and gets a batch x of shape (N, D) = (32, 64).
    What is the shape of dw? Answer a tuple."""
    ### BEGIN SOLUTION
    return (128, 64)
    ### END SOLUTION


# %%
check.q_dw_shape(q_dw_shape)


# %%
def q_backward_passes():
    """A loss depends on 1,000,000 weights. How many backward passes does reverse mode need to get the
    gradient of the loss with respect to all of them?"""
    ### BEGIN SOLUTION
    return 1
    ### END SOLUTION


# %%
check.q_backward_passes(q_backward_passes)


# %%
def q_grad_of_square():
    """c = a * a with a = Value(3.0). After c.backward(), what is a.grad?"""
    ### BEGIN SOLUTION
    return 6.0
    ### END SOLUTION


# %%
check.q_grad_of_square(q_grad_of_square)


# %%
def q_tanh_saturated_slope():
    """In the lesson's neuron explorer, with b = 3 the tanh receives n = 3.25. What is tanh's local
    derivative there? (a number; 2 significant digits are enough)"""
    ### BEGIN SOLUTION
    return 1 - math.tanh(3.25) ** 2
    ### END SOLUTION


# %%
check.q_tanh_saturated_slope(q_tanh_saturated_slope)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
