# %% [markdown]
# # 01 · Neurons and activation functions — exercises
#
# Seven exercises and four concept questions, 20 points. The lesson `chapters/01_neurons.ipynb`
# showed the ideas on *neighbouring* functions (the stable sigmoid, the exact GELU's derivative,
# two layers collapsing, XOR by hand); here you write the ones it did not show:
#
# | # | you write | points |
# |---|---|---|
# | 1 | `softplus`: log(1 + eˣ) that never overflows and never loses digits | 2 |
# | 2 | `silu_grad`: the derivative of SiLU, x·σ(x) | 2 |
# | 3 | `gelu_tanh_grad`: the derivative of GELU's tanh approximation | 2 |
# | 4 | `dense_forward`: a dense layer on a batch | 2 |
# | 5 | `mlp_forward`: a whole MLP, any depth, any activation (larger task) | 3 |
# | 6 | `collapse_stack`: a stack of linear layers as one layer | 2 |
# | 7 | `parity3_weights`: a hand-made network for the parity of three bits (larger task) | 3 |
# | Q | four concept questions, answered with a value | 4 |
#
# **How it works.** Under each exercise is a function with `raise NotImplementedError()`
# where your code goes, and under it a *check cell*. Run the check cell after you have run
# your function's cell: it tests your function on cases from small to large (including nasty
# ones) and shows ✓ or ✗, the points, and one message that names what is wrong, with the
# smallest failing case and a line that reproduces it. It never crashes the notebook.
# Stuck? `check.hint("softplus")` shows a hint; run it again for the next one (three per
# exercise: the idea, the approach, then something close to code). The table at the very end
# checks every function again, by name, exactly as your instructor's grader will.
#
# Use NumPy only (the checks refuse PyTorch calls: the point is to write these yourself), keep
# float64 inputs in float64, and never modify the arrays you are given. Work with whole arrays
# rather than Python loops over the elements: the checks of exercises 1 and 4 feed large inputs
# and reject a loop that makes one call per element.
# The course's own answers (`dlcourse.neurons.numpy_impl`) earn no points, even wrapped.

# %%
import math

import numpy as np

from dlcourse.neurons.checks import check
from dlcourse.neurons.numpy_impl import sigmoid  # the lesson's stable sigmoid, for exercise 2

# %% [markdown]
# ## Exercise 1 · A softplus that never overflows (2 points)
#
# Softplus is a smooth ReLU, $\operatorname{softplus}(x) = \log(1 + e^{x})$; its derivative is
# the sigmoid. Write `softplus(x)`, elementwise, for an array `x` of any shape (return the
# same shape, float64 for float64 input). Two traps, the lesson's sigmoid section in a new form:
#
# * $e^{1000}$ overflows: the check makes NumPy raise on overflow, so `np.exp(1000)` anywhere
#   fails, even in a branch of `np.where` whose result you throw away;
# * for $x = -40$, $1 + e^{-40}$ rounds to exactly 1.0, and `np.log` of it returns 0 where
#   the answer is $4.25 \times 10^{-18}$: the check wants 6 correct digits there too.
#
# The check also runs your function on 200 000 numbers and fails a Python loop over them.

# %%
def softplus(x):
    """log(1 + e^x) elementwise, stable and accurate for any x.  x: ndarray of any shape -> same shape."""
    ### BEGIN SOLUTION
    e = np.exp(-np.abs(x))                    # in (0, 1]: never overflows
    return np.maximum(x, 0) + np.log1p(e)     # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|)
    ### END SOLUTION


# %%
check.softplus(softplus)

# %% [markdown]
# ## Exercise 2 · The derivative of SiLU (2 points)
#
# SiLU (also called swish) gates its input with the sigmoid of itself:
# $\operatorname{SiLU}(x) = x\,\sigma(x)$. It is GELU's cousin: the lesson differentiated
# $x\,\Phi(x)$; here the gate is $\sigma$ instead of $\Phi$.
#
# Write `silu_grad(x)`: $\frac{d}{dx}\operatorname{SiLU}(x)$ elementwise, for an array of any
# shape. Use the stable `sigmoid` imported at the top; the check includes $x = \pm 1000$.
# Work the derivative out with the rules: the check compares to every digit, so a finite
# difference $(f(x+h) - f(x-h)) / 2h$, good to about 10 digits, does not pass.

# %%
def silu_grad(x):
    """Derivative of SiLU, x * sigmoid(x), elementwise.  x: ndarray -> same shape."""
    ### BEGIN SOLUTION
    s = sigmoid(x)
    return s + x * s * (1 - s)                # product rule: (x)' s + x s', with s' = s (1 - s)
    ### END SOLUTION


# %%
check.silu_grad(silu_grad)

# %% [markdown]
# ## Exercise 3 · The derivative of the tanh-GELU (2 points)
#
# The lesson wrote the derivative of the **exact** GELU. GPT-2 used the tanh approximation
#
# $$\operatorname{GELU}_{\tanh}(x) = \tfrac12\,x\,\bigl(1 + \tanh u\bigr), \qquad
#   u = c\,(x + 0.044715\,x^3), \quad c = \sqrt{2/\pi}.$$
#
# Write `gelu_tanh_grad(x)`, its derivative, elementwise. You need the product rule, the chain
# rule, and $\tanh'(u) = 1 - \tanh^2 u$. As in exercise 2 the check wants every digit (no finite
# differences) and no overflow: it includes $x = \pm 40$, where $\cosh u$ is far beyond float64.

# %%
def gelu_tanh_grad(x):
    """Derivative of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise.  x: ndarray -> same shape."""
    ### BEGIN SOLUTION
    c = math.sqrt(2 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    du = c * (1 + 3 * 0.044715 * x * x)       # chain rule: d/dx of tanh's argument
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
    ### END SOLUTION


# %%
check.gelu_tanh_grad(gelu_tanh_grad)

# %% [markdown]
# ## Exercise 4 · A dense layer (2 points)
#
# Write `dense_forward(x, w, b)`: $H$ neurons reading the same $D$ inputs, on a batch of $N$.
#
# * `x`: shape `(N, D)`, one example per row;
# * `w`: shape `(H, D)`, one row of weights per neuron, the layout of `torch.nn.Linear.weight`
#   (out, in);
# * `b`: shape `(H,)`, one bias per neuron;
# * return: shape `(N, H)`, the weighted sums plus biases (no activation), in the input's dtype.
#
# One matrix product, no loops (the check also runs 256 examples through 128 neurons and fails
# a loop over them). It must work for a batch of one example too.

# %%
def dense_forward(x, w, b):
    """x (N, D), w (H, D), b (H,) -> (N, H): every neuron's weighted sum plus its bias, for every example."""
    ### BEGIN SOLUTION
    return x @ w.T + b                        # (N, D) @ (D, H) -> (N, H); b is added to every row
    ### END SOLUTION


# %%
check.dense_forward(dense_forward)

# %% [markdown]
# ## Exercise 5 · A whole MLP: any depth, any activation (3 points, larger task)
#
# Write `mlp_forward(params, x, activation)`: the forward pass of a multi-layer perceptron.
#
# * `params` is the flat list `[w1, b1, w2, b2, ..., wL, bL]` of $L$ dense layers, `wk` of
#   shape `(H_k, H_{k-1})` and `bk` of shape `(H_k,)`, with $H_0 = D$ and $H_L = K$ (the order
#   of PyTorch's `model.parameters()`); $L$ can be anything from 1 up;
# * `x` has shape `(N, D)`;
# * `activation` is a function (`np.tanh`, a ReLU, a sigmoid, ...), not a name: call it,
#   `activation(h)`, after every layer **except the last**, which stays linear (the lesson
#   handed `ref.relu` to the course's `mlp_forward` the same way);
# * return the output of the last layer, shape `(N, K)`.
#
# The check uses networks with 0 to 3 hidden layers and three activations. You may call your
# `dense_forward`.

# %%
def mlp_forward(params, x, activation):
    """params [w1, b1, ..., wL, bL], x (N, D), activation: a function -> (N, K); linear last layer."""
    ### BEGIN SOLUTION
    num_layers = len(params) // 2
    h = x
    for k in range(num_layers):
        h = dense_forward(h, params[2 * k], params[2 * k + 1])   # (N, H_k)
        if k < num_layers - 1:                # hidden layers bend, the output layer does not
            h = activation(h)
    return h
    ### END SOLUTION


# %%
check.mlp_forward(mlp_forward)

# %% [markdown]
# ## Exercise 6 · A stack of linear layers is one layer (2 points)
#
# The lesson showed that two dense layers with no activation between them are one dense layer.
# Now take a whole stack: `params = [w1, b1, ..., wL, bL]` as in exercise 5, with **no**
# activations anywhere. Write `collapse_stack(params)` that returns the single layer `(w, b)`,
# `w` of shape `(K, D)` (still (out, in)) and `b` of shape `(K,)`, so that
# `dense_forward(x, w, b)` equals the whole stack applied to `x`, for every `x`. One layer
# ($L = 1$) is allowed too.

# %%
def collapse_stack(params):
    """The one linear layer (w (K, D), b (K,)) equal to the stack of linear layers [w1, b1, ..., wL, bL]."""
    ### BEGIN SOLUTION
    w, b = params[0], params[1]               # the layers so far, as one layer
    for k in range(2, len(params), 2):
        w_k, b_k = params[k], params[k + 1]
        w, b = w_k @ w, w_k @ b + b_k         # (x wᵀ + b) w_kᵀ + b_k, read off
    return w, b
    ### END SOLUTION


# %%
check.collapse_stack(collapse_stack)

# %% [markdown]
# ## Exercise 7 · Parity of three bits, by hand (3 points, larger task)
#
# The lesson built XOR, the parity of *two* bits, from two ReLU units. Now three bits: the
# output must be 1 when an odd number of $x_1, x_2, x_3 \in \{0, 1\}$ are 1, and 0 otherwise,
# exactly, on all eight corners of the cube.
#
# The network: 3 inputs, one hidden layer of 3 **ReLU** units, 1 linear output, computed as in
# exercise 5. Write `parity3_weights()` that returns `[w1, b1, w2, b2]` with shapes `(3, 3)`,
# `(3,)`, `(1, 3)`, `(1,)`. No training: derive the weights (the check accepts any that work).

# %%
def parity3_weights():
    """Weights [w1 (3, 3), b1 (3,), w2 (1, 3), b2 (1,)] of a 3-3-1 ReLU network computing 3-bit parity."""
    ### BEGIN SOLUTION
    # Every unit reads the count s = x1 + x2 + x3 and switches on at s = 0, 1, 2; the output's
    # slope changes by +1, -2, +2 there: 0, 1, 0, 1 for s = 0, 1, 2, 3.
    w1 = np.ones((3, 3))
    b1 = np.array([0.0, -1.0, -2.0])
    w2 = np.array([[1.0, -2.0, 2.0]])
    b2 = np.array([0.0])
    return [w1, b1, w2, b2]
    ### END SOLUTION


# %%
check.parity3_weights(parity3_weights)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer with a value: `return` a number, a shape tuple, or a choice. Work them out on paper.

# %%
def q_mlp_params():
    """How many parameters (weights and biases) has an MLP with layer sizes [784, 128, 10]?"""
    ### BEGIN SOLUTION
    return 784 * 128 + 128 + 128 * 10 + 10
    ### END SOLUTION


# %%
check.q_mlp_params(q_mlp_params)


# %%
def q_dense_shape():
    """x has shape (32, 10), w (64, 10) and b (64,). What shape has dense_forward(x, w, b)? (a tuple)"""
    ### BEGIN SOLUTION
    return (32, 64)
    ### END SOLUTION


# %%
check.q_dense_shape(q_dense_shape)


# %%
def q_sigmoid_max_slope():
    """What is the largest value the sigmoid's derivative sigma'(z) takes, over all z?"""
    ### BEGIN SOLUTION
    return 0.25
    ### END SOLUTION


# %%
check.q_sigmoid_max_slope(q_sigmoid_max_slope)


# %%
def q_collapsed_params():
    """Linear layers 5 -> 20 -> 20 -> 3, no activations, collapse into one layer. How many parameters has it?"""
    ### BEGIN SOLUTION
    return 3 * 5 + 3
    ### END SOLUTION


# %%
check.q_collapsed_params(q_collapsed_params)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
