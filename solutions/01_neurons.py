# %% [markdown]
# # 01 · Neurons and activation functions — exercises
#
# Seven exercises, 14 points, each a piece of the lesson `chapters/01_neurons.ipynb`:
#
# | # | you write | points |
# |---|---|---|
# | 1 | `sigmoid`: a sigmoid that never overflows | 2 |
# | 2 | `activation_grads`: the derivatives of ReLU, sigmoid and tanh | 2 |
# | 3 | `gelu_grad`: the derivative of GELU | 2 |
# | 4 | `dense_forward`: a dense layer on a batch | 2 |
# | 5 | `mlp_forward`: a whole multi-layer perceptron | 2 |
# | 6 | `collapse_linear`: two linear layers as one | 2 |
# | 7 | `xor_weights`: a hand-made network that computes XOR | 2 |
#
# **How it works.** Under each exercise is a function with `raise NotImplementedError()`
# where your code goes, and under it a *check cell*. Run the check cell after you have run
# your function's cell: it tests your function on several inputs (including nasty ones) and
# shows ✓ or ✗, the points, and one message that says what is wrong. It never crashes the
# notebook. Stuck? `check.hint("sigmoid")` shows a hint; run it again for the next one
# (three per exercise: a nudge, then a concrete step, and last the answer itself).
# The table at the very end checks every function again, by name, exactly as your
# instructor's grader will, and adds up your score.
#
# Use NumPy only (no PyTorch) and never modify the arrays you are given. Work with whole
# arrays rather than Python loops over the elements: whole-array code is shorter and
# hundreds of times faster. The check of exercise 1 enforces this (it feeds 200 000 numbers
# and rejects a function that calls `exp` once per element); the others only recommend it.

# %%
import math

import numpy as np

from dlcourse.neurons.checks import check
from dlcourse.neurons.numpy_impl import erf  # a vectorised error function, for exercise 3

# %% [markdown]
# ## Exercise 1 · A sigmoid that never overflows (2 points)
#
# Write `sigmoid(x)`: the logistic function $\sigma(x) = 1/(1 + e^{-x})$, elementwise, for
# an array `x` of any shape; return an array of the same shape.
#
# It must work for `x = -1000` and `x = +1000` without any overflow: the check makes NumPy
# raise an error on overflow, so `np.exp(1000)` anywhere fails, even in a branch of
# `np.where` whose result you then throw away (NumPy computes both branches for every
# element). The identity $\dfrac{1}{1 + e^{-x}} = \dfrac{e^{x}}{1 + e^{x}}$ helps.
#
# Work on the whole array at once: the check also runs your function on 200 000 numbers
# and fails a Python loop that calls `exp` once per element.

# %%
def sigmoid(x):
    """Elementwise logistic function, stable for any x.  x: ndarray of any shape -> same shape."""
    ### BEGIN SOLUTION
    e = np.exp(-np.abs(x))                    # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    ### END SOLUTION


# %%
check.sigmoid(sigmoid)

# %% [markdown]
# ## Exercise 2 · Derivatives of the activations (2 points)
#
# Write `activation_grads(x)` that returns the tuple `(d_relu, d_sigmoid, d_tanh)`: three
# arrays shaped like `x` holding the derivatives $f'(x)$ elementwise, for
#
# * ReLU, $\max(0, x)$: slope 1 where $x > 0$, else 0 (**take 0 at exactly $x = 0$**, as
#   PyTorch does);
# * the sigmoid: write the derivative using $s = \sigma(x)$ (you may call your `sigmoid`);
# * tanh (use `np.tanh`): write the derivative using $t = \tanh(x)$.
#
# It must also be right, and free of NaN, for `x = ±1000`.

# %%
def activation_grads(x):
    """Derivatives of ReLU, sigmoid and tanh at x.  Returns (d_relu, d_sigmoid, d_tanh), each shaped like x."""
    ### BEGIN SOLUTION
    d_relu = (x > 0).astype(float)            # the slope: 1 on the right, 0 on the left (and at 0)
    s = sigmoid(x)
    d_sigmoid = s * (1 - s)
    t = np.tanh(x)
    d_tanh = 1 - t * t
    return d_relu, d_sigmoid, d_tanh
    ### END SOLUTION


# %%
check.activation_grads(activation_grads)

# %% [markdown]
# ## Exercise 3 · The derivative of GELU (2 points)
#
# The exact GELU is $\mathrm{GELU}(x) = x\,\Phi(x)$, where
# $\Phi(x) = \tfrac12\bigl(1 + \operatorname{erf}(x/\sqrt2)\bigr)$ is the standard normal
# distribution function. The derivative of $\Phi$ (not of GELU) is the standard normal
# density $\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}$; GELU itself is a product, so its
# derivative needs the product rule.
#
# Write `gelu_grad(x)`: $\frac{d}{dx}\mathrm{GELU}(x)$ elementwise, for an array of any
# shape. Use the vectorised `erf` imported at the top (NumPy has none of its own). This is the
# derivative of the **exact** GELU, not of its tanh approximation.

# %%
def gelu_grad(x):
    """Derivative of the exact GELU x * Phi(x), elementwise.  x: ndarray -> same shape."""
    ### BEGIN SOLUTION
    cdf = 0.5 * (1 + erf(x / math.sqrt(2)))               # Phi(x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)   # phi(x) = Phi'(x)
    return cdf + x * pdf                                  # product rule: (x)' Phi + x Phi'
    ### END SOLUTION


# %%
check.gelu_grad(gelu_grad)

# %% [markdown]
# ## Exercise 4 · A dense layer (2 points)
#
# Write `dense_forward(x, w, b)`: $H$ neurons reading the same $D$ inputs, on a batch.
#
# * `x`: shape `(N, D)`, one example per row;
# * `w`: shape `(H, D)`, one row of weights per neuron, the layout of `torch.nn.Linear.weight`
#   (out, in);
# * `b`: shape `(H,)`, one bias per neuron;
# * return: shape `(N, H)`, the weighted sums plus biases (no activation).
#
# One matrix product, no loops. It must work for a batch of one example too.

# %%
def dense_forward(x, w, b):
    """x (N, D), w (H, D), b (H,) -> (N, H): x @ w.T + b."""
    ### BEGIN SOLUTION
    return x @ w.T + b                        # (N, D) @ (D, H) -> (N, H); b is added to every row
    ### END SOLUTION


# %%
check.dense_forward(dense_forward)

# %% [markdown]
# ## Exercise 5 · A multi-layer perceptron (2 points)
#
# Write `mlp_forward(params, x)`: the forward pass of an MLP of any depth.
#
# * `params` is the flat list `[w1, b1, w2, b2, ..., wL, bL]`, with `wk` of shape
#   `(H_k, H_{k-1})` and `bk` of shape `(H_k,)` (the order of PyTorch's `model.parameters()`);
# * `x` has shape `(N, D)`;
# * every layer is a dense layer; every layer **except the last** is followed by ReLU; the
#   last layer stays linear;
# * return the output of the last layer, shape `(N, H_L)`.
#
# The check uses networks with 0, 1 and 2 hidden layers. You may call your `dense_forward`.

# %%
def mlp_forward(params, x):
    """params [w1, b1, ..., wL, bL], x (N, D) -> (N, H_L); ReLU after every layer but the last."""
    ### BEGIN SOLUTION
    num_layers = len(params) // 2
    h = x
    for k in range(num_layers):
        h = dense_forward(h, params[2 * k], params[2 * k + 1])
        if k < num_layers - 1:                # hidden layers bend, the output layer does not
            h = np.maximum(h, 0)
    return h
    ### END SOLUTION


# %%
check.mlp_forward(mlp_forward)

# %% [markdown]
# ## Exercise 6 · Two linear layers are one (2 points)
#
# Two dense layers with no activation between them, $\mathbf{x} \mapsto \mathbf{x}W_1^\top + \mathbf{b}_1$
# (from $D$ to $H$ units) and then $\mathbf{h} \mapsto \mathbf{h}W_2^\top + \mathbf{b}_2$
# (from $H$ to $K$ units), compute the same function as one dense layer.
#
# Write `collapse_linear(w1, b1, w2, b2)` that returns that single layer's `(w, b)`: `w` of
# shape `(K, D)` (still (out, in)) and `b` of shape `(K,)`, so that
# `dense_forward(x, w, b)` equals `dense_forward(dense_forward(x, w1, b1), w2, b2)` for every `x`.
# Shapes: `w1 (H, D)`, `b1 (H,)`, `w2 (K, H)`, `b2 (K,)`.

# %%
def collapse_linear(w1, b1, w2, b2):
    """The one linear layer (w (K, D), b (K,)) equal to layer (w1, b1) followed by layer (w2, b2)."""
    ### BEGIN SOLUTION
    w = w2 @ w1                               # (K, H) @ (H, D): the second layer acts last
    b = w2 @ b1 + b2                          # b1 passes through the second layer's weights too
    return w, b
    ### END SOLUTION


# %%
check.collapse_linear(collapse_linear)

# %% [markdown]
# ## Exercise 7 · XOR by hand (2 points)
#
# A network with 2 inputs, one hidden layer of 2 **ReLU** units and 1 linear output unit,
# computed as in exercise 5. Choose its weights so that its output is **exactly** XOR on the
# four corners:
#
# | $x_1$ | $x_2$ | output |
# |---|---|---|
# | 0 | 0 | 0 |
# | 0 | 1 | 1 |
# | 1 | 0 | 1 |
# | 1 | 1 | 0 |
#
# Write `xor_weights()` that returns the list `[w1, b1, w2, b2]` with shapes `(2, 2)`, `(2,)`,
# `(1, 2)`, `(1,)`. The lesson showed one solution, $|x_1 - x_2|$; try to find a different
# one (the check accepts any network that outputs exactly 0, 1, 1, 0).

# %%
def xor_weights():
    """Weights [w1 (2, 2), b1 (2,), w2 (1, 2), b2 (1,)] of a 2-2-1 ReLU network that outputs XOR."""
    ### BEGIN SOLUTION
    # h1 = relu(x1 + x2) counts the inputs that are on; h2 = relu(x1 + x2 - 1) is on only for (1, 1).
    # out = h1 - 2 h2 is 0, 1, 1, 2 - 2 = 0.
    w1 = np.array([[1.0, 1.0],
                   [1.0, 1.0]])
    b1 = np.array([0.0, -1.0])
    w2 = np.array([[1.0, -2.0]])
    b2 = np.array([0.0])
    return [w1, b1, w2, b2]
    ### END SOLUTION


# %%
check.xor_weights(xor_weights)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
