# %% [markdown]
# # 01 · Neurons and activation functions
#
# A neural network is built from one small part, repeated many times: the **artificial
# neuron**. In this chapter you will
#
# 1. see what a single neuron computes, and what it looks like as a line in the plane;
# 2. meet the four activation functions you will see everywhere (ReLU, sigmoid, tanh, GELU),
#    their derivatives, and how to compute them without overflow;
# 3. put neurons side by side into a **dense layer** and stack layers into a
#    **multi-layer perceptron** (MLP);
# 4. prove that without activations, stacking layers gains nothing;
# 5. see why XOR, a four-point problem, needs a hidden layer, and solve it by hand;
# 6. run the same code in PyTorch (on a GPU if you have one) and check that it agrees with
#    our NumPy code;
# 7. train small MLPs that fit a sine curve and separate three interleaved spirals.
#
# Only the *forward* pass is written by hand here. Computing gradients by hand is
# chapter 02, and the optimisers that use them are chapter 03; for the training demos
# at the end we borrow both from PyTorch.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import dlcourse
from dlcourse import show_source
from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.neurons import explore
from dlcourse.neurons import numpy_impl as ref

rng = dlcourse.seed(0)

# %% [markdown]
# ## 1 · One neuron
#
# A neuron receives $D$ numbers $x_1, \dots, x_D$ (the *inputs* or *features*). It holds one
# **weight** $w_i$ per input and a **bias** $b$. It first computes a weighted sum, the
# *pre-activation*
#
# $$z = w_1 x_1 + \dots + w_D x_D + b = \mathbf{w} \cdot \mathbf{x} + b,$$
#
# and then passes $z$ through a fixed non-linear function $f$, the **activation**:
#
# $$a = f(z).$$
#
# A weight says how much an input matters and in which direction (a negative weight
# means "this input argues against"). The bias sets how easily the neuron fires: it
# moves the threshold. Learning, later, means adjusting $\mathbf{w}$ and $b$.
#
# With a batch of $N$ examples stacked as the rows of a matrix $X$ of shape $(N, D)$,
# all $N$ weighted sums are one matrix-vector product $X\mathbf{w} + b$:

# %%
show_source(ref.neuron_forward)

# %% [markdown]
# **A neuron as a logic gate.** With two binary inputs, weights $w = (10, 10)$, bias
# $b = -15$ and the sigmoid activation (below), the weighted sum is $-15$, $-5$, $-5$ or
# $+5$: only when *both* inputs are on does $z$ become positive. That is AND. Lowering the
# bias to $-5$ gives OR.

# %%
corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
w = np.array([10.0, 10.0])
print("inputs    :", corners.tolist())
print("AND neuron:", ref.neuron_forward(corners, w, -15.0).round(3))
print("OR  neuron:", ref.neuron_forward(corners, w, -5.0).round(3))

# %% [markdown]
# **Geometry.** The set of inputs where $z = \mathbf{w}\cdot\mathbf{x} + b = 0$ is a straight
# line in the plane (a *hyperplane* in $D$ dimensions). The weight vector $\mathbf{w}$ is
# perpendicular to it and points to the side where $z > 0$; the bias shifts the line away
# from the origin by $-b / \lVert \mathbf{w} \rVert$. Whatever activation follows, a single
# neuron can only answer "which side of one straight line?" — keep that in mind for XOR.
# The explorer in section 6 lets you move this line with sliders.

# %% [markdown]
# ## 2 · Activation functions
#
# | name | $f(z)$ | $f'(z)$ | range |
# |---|---|---|---|
# | ReLU | $\max(0, z)$ | $1$ if $z > 0$, else $0$ | $[0, \infty)$ |
# | sigmoid | $\sigma(z) = \dfrac{1}{1 + e^{-z}}$ | $\sigma(z)\,(1 - \sigma(z))$ | $(0, 1)$ |
# | tanh | $\tanh z = \dfrac{e^{z} - e^{-z}}{e^{z} + e^{-z}}$ | $1 - \tanh^2 z$ | $(-1, 1)$ |
# | GELU | $z\,\Phi(z)$ | $\Phi(z) + z\,\varphi(z)$ | $[\approx -0.17, \infty)$ |
#
# Here $\Phi$ is the cumulative distribution function of a standard normal variable and
# $\varphi = \Phi'$ its density, $\varphi(z) = e^{-z^2/2}/\sqrt{2\pi}$.
#
# * The **sigmoid** squashes any number into $(0, 1)$, which reads naturally as a
#   probability. It was the classic choice, but it *saturates*: for $|z|$ larger than about
#   5 it is flat, its derivative is nearly 0, and (chapter 02) almost no learning signal
#   passes through it. Even at its steepest, $\sigma'(0) = 1/4$.
# * **tanh** is a sigmoid rescaled to $(-1, 1)$, $\tanh z = 2\sigma(2z) - 1$. Its outputs
#   are centred on 0 and its slope at 0 is 1, which usually trains better than the
#   sigmoid; it saturates just the same.
# * **ReLU** is the workhorse of modern networks: trivial to compute, and its slope is
#   exactly 1 for every positive input, so it never saturates there. Its weakness is the
#   flat half: a unit whose input is negative for every example gets no gradient at all.
# * **GELU** is a smooth ReLU: it keeps the input $z$ with "probability" $\Phi(z)$. It dips
#   slightly below 0 for negative $z$ and has a derivative everywhere. Transformers (BERT,
#   the GPT family) use it.
#
# Solid: the function; dashed: its derivative.

# %%
explore.plot_activations()
plt.show()

# %% [markdown]
# Why not leave the activation out? Section 4 answers: without it, a network of any depth
# is just one linear function. And why not the step function $1[z > 0]$ of the original
# perceptron? Its derivative is 0 everywhere (except at 0, where it does not exist), so
# gradients, and with them learning, would never get past it.

# %% [markdown]
# ### A sigmoid that never overflows
#
# Written as in the table, $\sigma(z) = 1/(1 + e^{-z})$ computes $e^{1000}$ for
# $z = -1000$. That is far beyond the largest float64 ($\approx 1.8 \times 10^{308}$), so
# NumPy returns `inf` with an overflow warning, and $1/(1 + \infty) = 0.0$: the right
# answer, but only by luck, and with a warning on every call. The other textbook form
# $e^z/(1 + e^z)$ is not so lucky: for $z = +1000$ it computes $\infty/\infty$, which is
# `nan`, and a `nan` spreads through every later computation. We record NumPy's warnings
# and print them next to the results:

# %%
import warnings

z = np.array([-1000.0, 0.0, 1000.0])
for name, naive in [("1 / (1 + exp(-z))", lambda z: 1 / (1 + np.exp(-z))),
                    ("exp(z) / (1 + exp(z))", lambda z: np.exp(z) / (1 + np.exp(z)))]:
    with warnings.catch_warnings(record=True) as caught, np.errstate(over="warn", invalid="warn"):
        warnings.simplefilter("always")
        values = naive(z)
    print(f"{name:>21} at z = [-1000, 0, 1000]: {values}")
    for message in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):  # each once
        print(f"{'':>23}{message}")

# %% [markdown]
# The first form returned `0.0` at $z = -1000$ (after an overflow), the second `nan` at
# $z = +1000$. The fix: both forms are correct, and each is safe on one side. For $z \ge 0$ use
# $1/(1 + e^{-z})$; for $z < 0$ multiply top and bottom by $e^{z}$ to get
# $e^{z}/(1 + e^{z})$. In both cases the only exponential needed is $e^{-|z|} \le 1$.

# %%
show_source(ref.sigmoid)

# %%
with np.errstate(over="raise", invalid="raise"):
    print("sigmoid([-1000, 0, 1000]) =", ref.sigmoid(z))

# %% [markdown]
# The same idea (rewrite the formula so that the only exponential ever computed is
# $e^{-|z|} \le 1$) makes **softplus** $\log(1 + e^{z})$, a smooth ReLU whose derivative is
# the sigmoid, safe too: that is exercise 1, with one more trap (`log` of a number that rounds
# to exactly 1.0).
#
# ### GELU needs the error function
#
# $\Phi(z) = \tfrac12\bigl(1 + \operatorname{erf}(z/\sqrt 2)\bigr)$, and NumPy has no
# vectorised `erf` (Python's `math.erf` takes one number at a time). We write one, summing
# the series
#
# $$\operatorname{erf}(x) = \frac{2}{\sqrt\pi}\, e^{-x^2} \sum_{n \ge 0} \frac{2^n x^{2n+1}}{1 \cdot 3 \cdot 5 \cdots (2n+1)},$$
#
# whose terms all have the same sign, so adding them loses no digits. Every term is the
# previous one times $2x^2/(2n+3)$.

# %%
show_source(ref.erf)

# %%
grid = np.linspace(-7.0, 7.0, 1401)
erf_error = np.max(np.abs(ref.erf(grid) - np.array([math.erf(v) for v in grid])))
assert erf_error < 1e-14
print("our erf agrees with math.erf to better than 1e-14 on [-7, 7]")

# %% [markdown]
# So `ref.gelu` is the **exact** GELU, $z\,\Phi(z)$, the same function as PyTorch's default
# `F.gelu(x)` (`approximate="none"`). Before fast `erf` routines were everywhere, people used
# a tanh approximation,
# $\tfrac12 z\bigl(1 + \tanh(\sqrt{2/\pi}\,(z + 0.044715 z^3))\bigr)$ (`ref.gelu_tanh`,
# PyTorch's `approximate="tanh"`); GPT-2 was trained with it. The two differ by less than
# $5 \times 10^{-4}$: small, but enough that a model trained with one should be run with the same one.

# %%
gap = np.abs(ref.gelu(grid) - ref.gelu_tanh(grid))
print(f"largest |exact GELU - tanh approximation| on [-7, 7]: {gap.max():.1e} at z = {grid[gap.argmax()]:.2f}")

# %% [markdown]
# ### Derivatives
#
# Training (chapter 02) needs $f'(z)$ for every activation. Each derivative is best written
# in terms of the function's own value, which the forward pass has already computed:
# $\sigma' = \sigma(1 - \sigma)$ and $\tanh' = 1 - \tanh^2$. GELU is a product, $z$ times
# $\Phi(z)$, so the product rule gives $\frac{d}{dz}\,z\,\Phi(z) = \Phi(z) + z\,\varphi(z)$.
# (Exercises 2 and 3 take the same steps for SiLU, $z\,\sigma(z)$, and for GELU's tanh
# approximation.)

# %%
show_source(ref.sigmoid_grad)
show_source(ref.gelu_grad)

# %% [markdown]
# How do we know these formulas are right? We compare them with the slope measured
# numerically, $\bigl(f(z + h) - f(z - h)\bigr) / 2h$, by the course's gradient checker
# (points away from ReLU's kink at 0, where the slope jumps), for every activation the course
# knows, including the exercises' softplus and SiLU:

# %%
z = rng.uniform(0.1, 3.0, 20) * rng.choice([-1.0, 1.0], 20)
for name, (f, f_grad) in ref.ACTIVATIONS.items():
    error = rel_error(f_grad(z), numerical_grad(f, z, np.ones_like(z)))
    print(f"{name:>9}: formula == numerical slope: {error < 1e-7}")

# %% [markdown]
# ## 3 · Dense layers and the multi-layer perceptron
#
# Put $H$ neurons side by side, all reading the same $D$ inputs, and you have a **dense**
# (fully connected) layer. Stack each neuron's weights as one row of a matrix $W$ of shape
# $(H, D)$ and their biases in a vector $\mathbf{b}$ of length $H$. For a batch $X$ of shape
# $(N, D)$:
#
# $$Y = X W^\top + \mathbf{b}, \qquad Y_{nh} = \sum_{d} X_{nd} W_{hd} + b_h,$$
#
# of shape $(N, H)$: row $n$ is example $n$, column $h$ is neuron $h$. The bias is
# *broadcast*: the same $\mathbf{b}$ is added to every row. $W$ is $(\text{out}, \text{in})$
# because that is how `torch.nn.Linear` stores its weight; keeping PyTorch's layout lets us
# copy weights between the two implementations without transposing anything.
#
# Turning the formula into one line of NumPy (one matrix product, one broadcast) is
# exercise 4; here we call the course's `ref.dense_forward` and check one entry of its
# output against the sum written out:

# %%
x = rng.standard_normal((5, 3))                 # (N, D): N = 5 examples, D = 3 features
w = rng.standard_normal((4, 3))                 # (H, D): H = 4 neurons, one row each
b = rng.standard_normal(4)                      # (H,)
y = ref.dense_forward(x, w, b)                  # (N, H)
print("x", x.shape, " w", w.shape, " b", b.shape, " ->  y", y.shape)
by_hand = sum(x[1, d] * w[2, d] for d in range(3)) + b[2]    # example n = 1, neuron h = 2
print(f"y[1, 2] = {y[1, 2]:.6f};  written out, sum_d x[1, d] w[2, d] + b[2] = {by_hand:.6f}")

# %% [markdown]
# A **multi-layer perceptron** chains dense layers, with an activation after each one
# except the last:
#
# $$\mathbf{h}_1 = f(\mathbf{x} W_1^\top + \mathbf{b}_1), \quad
#   \mathbf{h}_2 = f(\mathbf{h}_1 W_2^\top + \mathbf{b}_2), \quad \dots, \quad
#   \mathbf{y} = \mathbf{h}_{L-1} W_L^\top + \mathbf{b}_L.$$
#
# * The **input layer** is just the data $\mathbf{x}$ (it computes nothing).
# * The **hidden layers** $\mathbf{h}_k$ are the network's own intermediate features; nobody
#   tells them what to represent, training does.
# * The **output layer** is left linear: its raw scores (*logits*) go to a loss function,
#   which applies whatever final squashing it needs (for classes the *softmax*, which turns
#   $K$ scores into $K$ probabilities, $e^{z_k} / \sum_j e^{z_j}$; nothing for a regression). Putting a ReLU there would forbid negative scores.
#
# The parameters are stored as one flat list $[W_1, \mathbf{b}_1, W_2, \mathbf{b}_2, \dots]$,
# the order in which PyTorch's `model.parameters()` lists them. The forward pass of a whole
# MLP, for any depth and any hidden activation, is exercise 5; below we call the course's
# `ref.mlp_forward`, handing it the hidden activation as a *function* (`ref.relu`, `np.tanh`)
# just as exercise 5's check will, and count what such a network holds: a layer from $D$ to
# $H$ units has $D \cdot H$ weights and $H$ biases. The random weights are divided by
# $\sqrt{\text{fan\_in}}$ (the layer's number of inputs): a sum of fan_in random terms grows
# like $\sqrt{\text{fan\_in}}$, so the division keeps every layer's outputs about as large as
# its inputs, however wide the layer (initialisation comes back in a later chapter).

# %%
sizes = [2, 16, 16, 3]                          # 2 inputs, two hidden layers of 16, 3 outputs
params = []
for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
    params += [rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in), np.zeros(fan_out)]
print("parameter shapes:", [p.shape for p in params])
print("number of parameters:", sum(p.size for p in params), "= (2+1)*16 + (16+1)*16 + (16+1)*3")
print("output shape for a batch of 5:", ref.mlp_forward(params, rng.standard_normal((5, 2)), ref.relu).shape)

# %% [markdown]
# ## 4 · Without activations, depth buys nothing
#
# Remove the activation between two dense layers and substitute the first into the second:
#
# $$(X W_1^\top + \mathbf{b}_1) W_2^\top + \mathbf{b}_2
#   = X (W_2 W_1)^\top + (W_2 \mathbf{b}_1 + \mathbf{b}_2).$$
#
# That is *one* dense layer with weight $W = W_2 W_1$ and bias $\mathbf{b} = W_2\mathbf{b}_1 + \mathbf{b}_2$.
# By induction, a stack of any number of linear layers is a single linear layer: the
# network can only ever draw straight lines. Here is the collapse of two layers, computed
# (exercise 6 folds a whole stack of them into one):

# %%
show_source(ref.collapse_linear)

# %%
w1, b1 = rng.standard_normal((8, 3)), rng.standard_normal(8)    # 3 -> 8
w2, b2 = rng.standard_normal((2, 8)), rng.standard_normal(2)    # 8 -> 2
w_one, b_one = ref.collapse_linear(w1, b1, w2, b2)
x = rng.standard_normal((100, 3))

two_layers = ref.dense_forward(ref.dense_forward(x, w1, b1), w2, b2)
one_layer = ref.dense_forward(x, w_one, b_one)
print("collapsed W:", w_one.shape, " collapsed b:", b_one.shape)
assert np.abs(two_layers - one_layer).max() < 1e-12
print("two stacked linear layers == the one collapsed layer (to 1e-12)")

with_relu = ref.dense_forward(ref.relu(ref.dense_forward(x, w1, b1)), w2, b2)
print(f"with a ReLU in between, the collapsed layer misses by up to {np.abs(with_relu - one_layer).max():.2f}")

# %% [markdown]
# The same in a picture: a random network from one input to one output, three hidden
# layers of 8 units, with and without ReLU. Without it the output is a straight line in
# $x$, however deep the network. With it, the line breaks into pieces: every ReLU unit
# adds a possible kink, and that is the raw material for fitting any shape.

# %%
x_line = np.linspace(-3, 3, 400)[:, None]
net_rng = np.random.default_rng(1)
deep = []
for fan_in, fan_out in zip([1, 8, 8, 8], [8, 8, 8, 1]):
    deep += [net_rng.standard_normal((fan_out, fan_in)), net_rng.standard_normal(fan_out)]

linear_deep = x_line
for k in range(0, len(deep), 2):
    linear_deep = ref.dense_forward(linear_deep, deep[k], deep[k + 1])

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].plot(x_line, linear_deep)
axes[0].set_title("4 linear layers, no activation")
axes[1].plot(x_line, ref.mlp_forward(deep, x_line, ref.relu), color="C1")
axes[1].set_title("the same weights with ReLU")
for ax in axes:
    ax.set_xlabel("x")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5 · XOR needs a hidden layer
#
# XOR ("exclusive or") outputs 1 when exactly one of its two binary inputs is 1:
#
# | $x_1$ | $x_2$ | XOR |
# |---|---|---|
# | 0 | 0 | 0 |
# | 0 | 1 | 1 |
# | 1 | 0 | 1 |
# | 1 | 1 | 0 |
#
# **No linear model can fit it.** Take any affine function $g(\mathbf{x}) = w_1x_1 + w_2x_2 + b$.
# Then $g(0,0) + g(1,1) = 2b + w_1 + w_2 = g(0,1) + g(1,0)$: the two diagonals always have the
# same sum. XOR wants $0 + 0$ on one diagonal and $1 + 1$ on the other. Geometrically: no
# straight line puts $(0,1)$ and $(1,0)$ on one side and $(0,0)$, $(1,1)$ on the other, so
# no single neuron (which only sees one line) can do it either. *Least squares* finds the
# affine function with the smallest sum of squared errors on the four corners
# (`np.linalg.lstsq` solves exactly that problem for the columns $x_1, x_2, 1$); the best it
# can do is to give up and answer $\tfrac12$ everywhere:

# %%
targets = np.array([0.0, 1.0, 1.0, 0.0])
design = np.hstack([corners, np.ones((4, 1))])            # columns x1, x2, 1
coef = np.linalg.lstsq(design, targets, rcond=None)[0]
print("best linear fit: w =", coef[:2].round(6) + 0.0, " b =", coef[2].round(6) + 0.0)
print("its predictions :", (design @ coef).round(6))

# %% [markdown]
# **One hidden layer solves it exactly.** Two ReLU units are enough: $h_1 = \mathrm{relu}(x_1 - x_2)$
# fires only for $(1, 0)$, and $h_2 = \mathrm{relu}(x_2 - x_1)$ only for $(0, 1)$. The output
# $h_1 + h_2 = |x_1 - x_2|$ is XOR. Here are those weights, set by hand, run through the
# same `mlp_forward` as above. (XOR is the *parity* of two bits; exercise 7 asks for the
# parity of three.)

# %%
show_source(ref.xor_params)

# %%
xor_net = ref.xor_params()
print("network output on the four corners:", ref.mlp_forward(xor_net, corners, ref.relu)[:, 0])

# %% [markdown]
# What did the hidden layer do? It *moved the points*. In the input space (left) the two
# classes sit on opposite diagonals. In the hidden space $(h_1, h_2)$ (middle), both
# "0" corners land on the origin and the "1" corners on the axes, and now one straight
# line, $h_1 + h_2 = \tfrac12$, separates them. That is the whole idea of deep learning in
# miniature: hidden layers learn a representation in which the problem becomes easy for
# the last, linear layer. On the right: the regions the network assigns to each class
# (threshold $\tfrac12$) — no longer a single straight boundary.

# %%
from matplotlib.lines import Line2D

hidden = ref.relu(ref.dense_forward(corners, xor_net[0], xor_net[1]))
classes = [("class 0 (XOR = 0)", "C0"), ("class 1 (XOR = 1)", "C1")]
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
panels = [("input space: not linearly separable", corners, "$x_1$", "$x_2$"),
          ("hidden space: one line suffices", hidden, "$h_1$", "$h_2$")]
for ax, (title, points, x_name, y_name) in zip(axes, panels):
    for k, (name, color) in enumerate(classes):
        ax.scatter(points[targets == k, 0], points[targets == k, 1], color=color, s=120, edgecolors="k",
                   label=name)
    ax.set_title(title)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(-0.3, 1.3)
    ax.set_aspect("equal")
axes[1].plot([-0.2, 0.7], [0.7, -0.2], "k--", label="$h_1 + h_2 = 1/2$")
explore.plot_decision_boundary(lambda p: (ref.mlp_forward(xor_net, p, ref.relu)[:, 0] > 0.5).astype(int),
                               corners, targets.astype(int), ax=axes[2], bounds=(-0.5, 1.5, -0.5, 1.5),
                               title="the network's two regions", point_size=120)
axes[0].legend(loc="center", fontsize=8)
axes[1].legend(loc="upper right", fontsize=8)
axes[2].legend(handles=[Line2D([], [], marker="o", ls="", color=color, markeredgecolor="k", markersize=9,
                               label=f"{name}; shaded: predicted") for name, color in classes],
               loc="center", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6 · Explore: one neuron, live
#
# Pick an activation and move the sliders (run the notebook in Jupyter or Colab to see the
# widget). The three panels show:
#
# 1. the activation and its derivative: where is the derivative close to 0?
# 2. a neuron with one input, $a = f(w_1 x + b)$: $w_1$ makes the transition steeper or
#    flatter (and flips it when negative), $b$ slides it to $x = -b/w_1$ (red dotted line);
# 3. a neuron with two inputs, $a = f(w_1 x_1 + w_2 x_2 + b)$, as a heat map. The white line
#    is $z = 0$, the red arrow is $\mathbf{w}$. Turning $\mathbf{w}$ turns the line; $b$ moves it.
#
# The image is rendered at twice the screen resolution, so it stays sharp on HiDPI displays.
# Things to try: make the sigmoid neuron almost a step function (large $|w_1|$); find
# weights that make the two-input neuron compute AND on the corners $(0,0)\dots(1,1)$;
# notice that no setting bends the white line.

# %%
# NBVAL_IGNORE_OUTPUT
explore.ActivationExplorer(activation="sigmoid", w1=2.0, w2=-1.0, b=0.5)

# %% [markdown]
# ## 7 · NumPy first, then PyTorch
#
# Everything above was NumPy. The PyTorch twin (`dlcourse/neurons/torch_impl.py`) uses
# PyTorch's own activations (`torch.relu`, `torch.sigmoid`, `torch.tanh`, `F.gelu`), lets
# *autograd* compute their derivatives, and wraps dense layers in `nn.Module`s. An `nn.Module`
# is PyTorch's building block: an object that holds its parameters (an `nn.Linear` holds its
# weight and bias) and computes its output in a `forward` method; `nn.Sequential` is a module
# that chains others, feeding each one's output to the next. The code runs on
# `dlcourse.device()`: the GPU when there is one.

# %%
import torch

from dlcourse.neurons import torch_impl as tt

device = dlcourse.device()
dtype = torch.float32 if device == "mps" else torch.float64   # Apple GPUs have no float64
rng = dlcourse.seed(0)

# %%
# NBVAL_IGNORE_OUTPUT
print("PyTorch device:", device, "| dtype for the comparison:", dtype)

# %% [markdown]
# The *Jacobian* of a function from $n$ numbers to $n$ numbers is the $n \times n$ matrix of
# all its partial derivatives $\partial f_i / \partial z_j$; autograd never builds it, it
# multiplies a vector by it (a *vector-Jacobian product*, chapter 02).
# An activation acts on each element separately, so its Jacobian is diagonal, and asking
# autograd for the gradient of $\sum_i f(z_i)$ returns exactly the vector of derivatives
# $f'(z_i)$:

# %%
show_source(tt.activation_grad)

# %% [markdown]
# Now the proof of agreement: every activation and every derivative, NumPy against
# PyTorch, on the same 1,000 numbers, including huge ones.

# %%
tolerance = 1e-5 if dtype == torch.float32 else 1e-10
z = np.concatenate([np.linspace(-10, 10, 996), [-1000.0, -50.0, 50.0, 1000.0]])
z_torch = torch.tensor(z, dtype=dtype, device=device)
for name, (f, f_grad) in ref.ACTIVATIONS.items():
    forward_diff = np.abs(f(z) - tt.ACTIVATIONS[name](z_torch).cpu().double().numpy()).max()
    grad_diff = np.abs(f_grad(z) - tt.activation_grad(name, z_torch).cpu().double().numpy()).max()
    assert forward_diff < tolerance and grad_diff < tolerance, (name, forward_diff, grad_diff)
    print(f"{name:>9}: NumPy == PyTorch for f and f' (max difference below {tolerance:g})")

# %% [markdown]
# And the network: `tt.MLP` builds `Linear -> ReLU -> ... -> Linear` with `nn.Linear`'s own
# (random) initialisation. We copy its weights out as NumPy arrays — no transposes needed,
# thanks to the shared $(\text{out}, \text{in})$ layout — and run our `mlp_forward` on them.

# %%
show_source(tt.MLP)

# %%
model = tt.MLP([2, 16, 16, 3]).to(device=device, dtype=dtype)
numpy_params = [p.astype(np.float64) for p in tt.get_params(model)]
x = rng.standard_normal((64, 2))
out_numpy = ref.mlp_forward(numpy_params, x, ref.relu)
out_torch = model(torch.tensor(x, dtype=dtype, device=device)).detach().cpu().double().numpy()
assert np.abs(out_numpy - out_torch).max() < tolerance
print(f"MLP {[p.shape for p in numpy_params[::2]]}: NumPy == PyTorch on 64 examples "
      f"(max difference below {tolerance:g})")

# %% [markdown]
# ## 8 · A first MLP learns
#
# Two small experiments. The network is our `tt.MLP`. The training loop `tt.train` asks
# autograd for the gradient of the loss with respect to every weight, and lets
# `torch.optim.Adam` take a small step downhill, a thousand times or so. How autograd gets those
# gradients is the subject of chapter 02, and how Adam uses them of chapter 03: for now
# both are a black box.

# %%
show_source(tt.train)

# %% [markdown]
# ### Fitting a curve
#
# One input, one hidden layer of ReLU units, one output, trained to reproduce
# $\sin x$ on $[-\pi, \pi]$ (a regression, so the loss is the mean squared error). The
# network's output is a sum of "hinge" functions, one per hidden unit, so it is a
# piecewise-linear curve with at most one kink per unit: more units, more kinks, a closer
# fit. This is the intuition behind the *universal approximation* theorem: one hidden layer
# that is wide enough can approximate any continuous function on a bounded interval.

# %%
# NBVAL_IGNORE_OUTPUT
steps = 3000 if device == "cuda" else 1500
x_fit = torch.linspace(-math.pi, math.pi, 200, device=device).unsqueeze(1)   # (200, 1)
y_fit = torch.sin(x_fit)
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
for ax, width in zip(axes, (2, 8, 32)):
    dlcourse.seed(0)
    net = tt.MLP([1, width, 1]).to(device)
    losses = tt.train(net, x_fit, y_fit, loss="mse", steps=steps, lr=2e-2)
    with torch.no_grad():
        prediction = net(x_fit)
    ax.plot(x_fit.cpu(), y_fit.cpu(), "k--", label="sin x")
    ax.plot(x_fit.cpu(), prediction.cpu(), color="C1", lw=2, label="MLP")
    ax.set_title(f"{width} hidden ReLU units, MSE {losses[-1]:.1e}")
axes[0].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Separating spirals
#
# Three classes of points on interleaved spiral arms (`dlcourse.data.make_spirals`). A
# linear classifier (`MLP([2, 3])`, no hidden layer) can only cut the plane into three
# wedges with straight borders. An MLP with two hidden layers bends its borders around
# the arms. The loss is the cross-entropy (chapter 02 derives it); the prediction is the
# class with the largest output.

# %%
# NBVAL_IGNORE_OUTPUT
from dlcourse.data import make_spirals

big = device == "cuda"                                     # more data, a wider net on a GPU
x_np, y_np = make_spirals(n_per_class=1000 if big else 100, n_classes=3, noise=0.2, seed=0)
x_sp = torch.from_numpy(x_np).to(device)
y_sp = torch.from_numpy(y_np).to(device)
print("data:", x_np.shape, "classes:", np.bincount(y_np))


def predictor(net):
    """Wrap a torch model as a NumPy function for plot_decision_boundary."""
    def predict(points):
        with torch.no_grad():
            return net(torch.tensor(points, dtype=torch.float32, device=device)).argmax(1).cpu().numpy()
    return predict


# %%
# NBVAL_IGNORE_OUTPUT
width, steps = (256, 2000) if big else (64, 1000)
dlcourse.seed(0)
linear = tt.MLP([2, 3]).to(device)
linear_losses = tt.train(linear, x_sp, y_sp, steps=steps, lr=2e-2)
dlcourse.seed(0)
mlp = tt.MLP([2, width, width, 3]).to(device)
mlp_losses = tt.train(mlp, x_sp, y_sp, steps=steps, lr=1e-2)

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, net, name in [(axes[0], linear, "linear (no hidden layer)"),
                      (axes[1], mlp, f"MLP, 2 hidden layers of {width}")]:
    accuracy = (predictor(net)(x_np) == y_np).mean()
    explore.plot_decision_boundary(predictor(net), x_np, y_np, ax=ax,
                                   title=f"{name}: {accuracy:.0%} correct")
axes[2].plot(linear_losses, label="linear")
axes[2].plot(mlp_losses, label="MLP")
axes[2].set_yscale("log")
axes[2].set_xlabel("step")
axes[2].set_ylabel("training loss (cross-entropy)")
axes[2].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The linear model's loss stops falling early: three wedges with straight borders are the
# best it can draw, and they get only about half of the points right, however long it
# trains. The MLP gets almost every training point right. (Right on the
# *training* points: whether it generalises to new points, and how not to fool
# ourselves about that, is chapter 04.)
#
# ## Summary
#
# * A neuron computes $f(\mathbf{w}\cdot\mathbf{x} + b)$: a weighted vote, a threshold,
#   and a non-linear bend. Alone it can only split the input space with one hyperplane.
# * Activations: ReLU (the default), sigmoid and tanh (saturate: small derivatives for
#   large $|z|$), GELU (a smooth ReLU). Compute them in stable forms: only ever exponentiate
#   non-positive numbers.
# * A dense layer is $XW^\top + \mathbf{b}$ with $W$ of shape (out, in), the bias broadcast
#   over the batch. An MLP alternates dense layers and activations and ends with a linear layer.
# * Without activations, any stack of layers collapses to one linear layer
#   ($W = W_2W_1$, $\mathbf{b} = W_2\mathbf{b}_1 + \mathbf{b}_2$).
# * XOR cannot be fitted by a linear model; a hidden layer re-represents the inputs so that
#   it can.
# * Our NumPy functions and PyTorch agree on every activation, derivative and forward pass.
#
# **Next:** `exercises/01_neurons.ipynb` — the neighbours of what you saw here: a stable
# softplus, the derivatives of SiLU and of the tanh-GELU, the dense layer and a whole MLP
# (any depth, any activation) written by you, a stack of linear layers collapsed into one,
# and a network for the parity of three bits; then four concept questions. Chapter 02
# computes the gradients that `tt.train` took from autograd, by hand.
