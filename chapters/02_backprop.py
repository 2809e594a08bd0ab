# %% [markdown]
# # 02 · Backpropagation
#
# Training a network means nudging every weight in the direction that lowers the loss.
# For that we need the **gradient**: the derivative of one number (the loss) with respect
# to every weight, often millions of them. *Backpropagation* computes all of them in one
# sweep backwards through the computation, at about the cost of one forward pass.
#
# In this lesson you will
#
# 1. see a computation as a **graph** of small operations, and the **chain rule** as a
#    rule for passing gradients along its edges;
# 2. use a **scalar autograd engine** (`Value`) whose pieces you will write in the exercises,
#    and check it against PyTorch's `torch.autograd`;
# 3. move from scalars to **arrays**: the backward pass of a linear layer, of activations
#    and of the softmax cross-entropy loss, as *vector-Jacobian products*;
# 4. **check gradients numerically**, the habit that catches every backward-pass bug;
# 5. backpropagate through a whole **MLP** in NumPy, and prove it equals PyTorch's autograd.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import dlcourse
from dlcourse import show_source
from dlcourse.backprop import numpy_impl as bp
from dlcourse.backprop.engine import Value, topological_order
from dlcourse.backprop.explore import draw_graph, graph_explorer, plot_local_derivatives
from dlcourse.gradcheck import numerical_grad, rel_error  # the course's gradient checker

rng = dlcourse.seed(0)

# %% [markdown]
# ## 1 · A derivative is a sensitivity
#
# The derivative $\frac{df}{dx}$ answers: *if I move $x$ a tiny bit, by how much does
# $f$ move, per unit of movement?* We can measure that directly, by nudging $x$:
#
# $$\frac{df}{dx} \approx \frac{f(x+h) - f(x-h)}{2h}.$$
#
# Take $f(x) = \tanh(3x + 1)$. It is a chain of two steps, $u = 3x + 1$ and $f = \tanh(u)$.
# The **chain rule** says that sensitivities multiply along the chain:
#
# $$\frac{df}{dx} = \frac{df}{du}\cdot\frac{du}{dx} = \bigl(1 - \tanh^2(u)\bigr)\cdot 3 .$$
#
# Each factor is a *local* derivative: it only needs to know its own step and the numbers
# flowing through it. Let us compare the nudge with the chain rule. We take $h = 10^{-6}$:
# in float64 any $h$ from about $10^{-4}$ to $10^{-7}$ works, small enough for the centred
# difference's error (which shrinks like $h^2$) and large enough for rounding error (which
# grows like $10^{-16}/h$); the exercises use $10^{-5}$, equally good.

# %%
def f(x):
    return math.tanh(3 * x + 1)


x, h = 0.2, 1e-6
nudged = (f(x + h) - f(x - h)) / (2 * h)
u = 3 * x + 1
chain_rule = (1 - math.tanh(u) ** 2) * 3
print(f"by nudging x:       {nudged:.6f}")
print(f"by the chain rule:  {chain_rule:.6f}")

# %% [markdown]
# ## 2 · Computations are graphs
#
# Any formula can be broken into elementary operations ($+$, $\times$, $\exp$, $\tanh$, ...),
# each of which we know how to differentiate. Drawn as a graph, the inputs are on the left,
# every operation is a node, and the final output sits on the right.
#
# The class `Value` of `dlcourse.backprop.engine` builds such a graph as a side effect of
# ordinary arithmetic. Each `Value` stores
#
# * `data`: the number computed in the forward pass,
# * `children`: the Values it was computed from,
# * `local_grads`: the derivative of this node with respect to each child, computed right
#   away, while the numbers are at hand,
# * `grad`: the derivative of the final output with respect to this node (filled in later).
#
# Here is $L = (a\,b + a)\cdot c$ with $a = 2$, $b = -3$, $c = 0.5$:

# %%
a, b, c = Value(2.0, label="a"), Value(-3.0, label="b"), Value(0.5, label="c")
ab = a * b
ab.label = "ab"
d = ab + a
d.label = "d"
L = d * c
L.label = "L"
print(L)

draw_graph(L, show_grad=False)
plt.show()

# %% [markdown]
# Boxes show the forward values; the blue number on each arrow is the **local derivative**
# of the node at the head with respect to the node at the tail: for $ab = a \times b$ the
# arrow from $a$ carries $b = -3$ and the arrow from $b$ carries $a = 2$.
#
# ## 3 · Backward: the chain rule along the edges
#
# Now walk the graph from the output back to the inputs. The gradient of $L$ with respect
# to itself is $1$. Every node then hands gradient to its children:
#
# $$\text{child.grad} \mathrel{+}= \text{local derivative} \times \text{node.grad}.$$
#
# Two details make this correct:
#
# * **Order.** A node may only pass its gradient on once it has received *all* of it, from
#   every node that uses it. Sorting the graph so that each node comes after its children
#   (a *topological order*) and walking that list **in reverse** guarantees it.
# * **Accumulation.** In our graph `a` is used twice (in $ab$ and in $d$). Its influence on
#   $L$ travels along both paths, and the multivariable chain rule *adds* the contributions:
#   that is why it is `+=` and not `=`.
#
# How do we find such an order? A **depth-first search** from the output: to place a node,
# first place all of its children, then append the node itself; remember which nodes are
# already placed, so that a node reached along two paths (like `a`) is listed once. Reading
# the list backwards then visits every node only after all the nodes that use it. A
# breadth-first walk from the output is *not* enough: it can reach a node by a short path and
# pass its gradient on before a longer path has delivered its share.
#
# Writing `backward` is exercise 2; here we call the engine's. First the order it uses:

# %%
print("topological order:", [node.label for node in topological_order(L)])

# %%
L.backward()
for node in (a, b, c):
    print(f"dL/d{node.label} = {node.grad:g}")
draw_graph(L)
plt.show()

# %% [markdown]
# Check one by hand: $L = (ab + a)c$, so $\frac{\partial L}{\partial a} = (b + 1)\,c =
# (-3 + 1) \cdot 0.5 = -1$. The engine got the two paths right: $-1.5$ through $ab$ and
# $+0.5$ through the direct edge into $d$.
#
# ## 4 · The local-derivative table
#
# The engine only needs to know, for each operation, its output and its local derivatives.
# This table is all of it:
#
# | operation | forward | local derivative(s) |
# |---|---|---|
# | add | $a + b$ | $1,\ 1$ |
# | subtract | $a - b$ | $1,\ -1$ |
# | multiply | $a\,b$ | $b,\ a$ |
# | divide | $a / b$ | $1/b,\ -a/b^2$ |
# | power (constant $n$) | $x^n$ | $n\,x^{n-1}$ |
# | exp | $e^x$ | $e^x$ (the output itself) |
# | log | $\ln x$ | $1/x$ |
# | tanh | $t = \tanh x$ | $1 - t^2$ |
# | sigmoid | $s = \sigma(x)$ | $s(1 - s)$ |
# | relu | $\max(x, 0)$ | $1$ if $x > 0$ else $0$ |
#
# Notice how exp, tanh and sigmoid express their derivative through their **output**: a
# backward pass can reuse what the forward pass already computed. In code, each rule is one
# line. Here are two of them, addition and tanh, written as plain functions; each returns
# `Value(result, children, local derivatives, op)`. The others are exercise 1.

# %%
def add(a, b):
    return Value(a.data + b.data, (a, b), (1.0, 1.0), "+")  # d(a+b)/da = 1, d(a+b)/db = 1


def tanh(a):
    t = math.tanh(a.data)
    return Value(t, (a,), (1 - t**2,), "tanh")  # d tanh(a)/da = 1 - tanh(a)^2, from the output t


u = tanh(add(Value(0.5), Value(0.3)))
u.backward()
print(f"tanh(0.5 + 0.3) = {u.data:.4f}, local derivative {u.local_grads[0]:.4f} = 1 - {u.data:.4f}**2")

# %% [markdown]
# ## 5 · Why reverse mode?
#
# We could also push derivatives **forward**: start at one input with "$dx/dx = 1$" and
# carry $d(\text{node})/dx$ through the graph towards the output. That yields the derivative
# of *every output* with respect to *one input* per pass.
#
# A neural network is the opposite shape: **millions of inputs** (the weights) and **one
# output** (the loss). Forward mode would need one pass per weight. Reverse mode yields the
# derivative of *one output* with respect to *every node* in a single backward pass, for
# roughly the cost of the forward pass (each edge is visited once, with one multiply-add).
# That asymmetry is why deep learning runs on reverse-mode differentiation, which in this
# context is called backpropagation.
#
# ## 6 · Does the engine agree with PyTorch?
#
# PyTorch's `torch.autograd` is a reverse-mode engine too, working on tensors instead of
# scalars. Let us write one expression once and run it on `Value`s and on PyTorch tensors.

# %%
import torch


def expression(x, y, z):
    u = x * y + z.exp()
    return (u.tanh() * x - y / z) ** 2 + (x - y).relu()


inputs = (0.7, -1.2, 0.4)
values = [Value(v) for v in inputs]
out = expression(*values)
out.backward()

tensors = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in inputs]
out_torch = expression(*tensors)
out_torch.backward()

for name, v, t in zip("xyz", values, tensors):
    print(f"d out/d{name}: engine {v.grad:+.8f}   torch {t.grad.item():+.8f}")
assert all(abs(v.grad - t.grad.item()) < 1e-10 for v, t in zip(values, tensors))

# %% [markdown]
# ## 7 · Play with a neuron
#
# The widget below builds one neuron, $o = \operatorname{act}(x_1 w_1 + x_2 w_2 + b)$, as a
# graph of `Value`s. Move the sliders and watch the forward values (boxes), the gradients
# (red) and the local derivatives (blue arrows) change. Things to try:
#
# * It starts at $n = 0.75$, where tanh's local derivative is $0.60$. Set $b = 3$: now
#   $n = 3.25$, the local derivative of tanh drops to $0.006$ and **every** gradient upstream
#   (of $w_1$, $x_1$, ...) shrinks with it, to about 1% of what it was ($0.006 / 0.60$).
#   This is a *saturated* unit.
# * Switch to relu and set $b = -2$: $n = -1.75$ is negative, and all gradients become exactly
#   0, a "dead" unit.
# * The gradient of $w_1$ is always $x_1$ times the gradient arriving at $x_1 w_1$: an input
#   of 0 means its weight gets no gradient.

# %%
# NBVAL_IGNORE_OUTPUT
graph_explorer()

# %% [markdown]
# ## 8 · From scalars to arrays: vector-Jacobian products
#
# A scalar engine builds one node per multiplication: a 64 × 128 layer on a batch of 64 is
# half a million nodes. Real frameworks treat whole arrays as nodes. The rule stays the same;
# only the bookkeeping changes.
#
# Say a layer maps an input $x$ to an output $y$, and the loss $L$ depends on $y$. The
# backward pass receives $\frac{\partial L}{\partial y}$ (called `dout`, shaped like $y$)
# and must return $\frac{\partial L}{\partial x}$ (shaped like $x$). The chain rule says
#
# $$\frac{\partial L}{\partial x_j} = \sum_i \frac{\partial L}{\partial y_i}\,\frac{\partial y_i}{\partial x_j},$$
#
# a vector (`dout`) times the Jacobian matrix $\partial y / \partial x$: a **vector-Jacobian
# product**. We never build the Jacobian (for a layer it would be enormous and mostly zeros);
# we write the product directly. Two rules of thumb make the formulas easy to find:
#
# 1. **A gradient has the shape of the thing it is the gradient of.** `dw` is shaped like `w`.
# 2. **Something used for many examples sums their gradients.** A weight or bias that is
#    shared across the batch collects a contribution from every example.
#
# ### The linear layer
#
# $y = x W^\top + b$ with $x$ of shape $(N, D)$, $W$ of shape $(H, D)$ (PyTorch's layout),
# $b$ of shape $(H,)$. Entry by entry, $y_{nh} = \sum_d x_{nd} W_{hd} + b_h$, so
#
# * $\partial y_{nh} / \partial x_{nd} = W_{hd}$, so $\partial L / \partial x_{nd} = \sum_h
#   \text{dout}_{nh} W_{hd}$, a sum over $h$;
# * $\partial y_{nh} / \partial W_{hd} = x_{nd}$ for every $n$, so $\partial L / \partial
#   W_{hd} = \sum_n \text{dout}_{nh}\, x_{nd}$: the weight is shared by the batch, and we sum;
# * $\partial y_{nh} / \partial b_h = 1$ for every $n$, so $\partial L / \partial b_h =
#   \sum_n \text{dout}_{nh}$.
#
# Each of these sums is a matrix product or a plain sum, and the shapes tell you which: turning
# them into NumPy is exercise 3. The forward pass, for reference:

# %%
show_source(bp.linear_forward)

# %% [markdown]
# Every layer of the course comes as such a pair: `forward` returns the output and a
# **cache** (what backward will need), `backward(dout, cache)` returns the gradients.
#
# ### Activations
#
# Elementwise functions have a diagonal Jacobian, so the vector-Jacobian product is an
# elementwise product: `dx = dout * f'(x)`. Below, each activation with its derivative,
# drawn by calling the package's backward functions with `dout = 1`.

# %%
plot_local_derivatives()
plt.show()

# %% [markdown]
# Here is the sigmoid's pair. Its cache is the **output** $s$, because the derivative is
# written in terms of it: $\sigma'(x) = s(1 - s)$.

# %%
show_source(bp.sigmoid_forward)
show_source(bp.sigmoid_backward)

# %% [markdown]
# Tanh works the same way, with its own slope written through its output; ReLU only needs to
# remember which units were on (a boolean mask), and lets gradient through those alone. Both
# are exercise 4. The forward pass uses
# chapter 01's stable sigmoid (this module imports it rather than keeping a second copy):
# `exp(-x)` would overflow for $x = -1000$, so the code never exponentiates a positive number.

# %%
show_source(bp.sigmoid)
print(bp.sigmoid(np.array([-1000.0, 0.0, 1000.0])))

# %% [markdown]
# ## 9 · Softmax cross-entropy, and its famous gradient
#
# A classifier outputs one score (*logit*) $z_c$ per class. Softmax turns scores into
# probabilities, $p_c = e^{z_c} / \sum_k e^{z_k}$, and the cross-entropy loss of an example
# with true class $y$ is $-\log p_y$. Written out,
#
# $$\ell = -z_y + \log \sum_k e^{z_k}.$$
#
# Differentiate with respect to $z_c$: the first term gives $-1$ if $c = y$ (else $0$); the
# second gives $e^{z_c} / \sum_k e^{z_k} = p_c$. So
#
# $$\frac{\partial \ell}{\partial z_c} = p_c - [c = y],$$
#
# *predicted probability minus the one-hot target*: push up the right class, push down the
# others in proportion to how much they were believed. Averaging the loss over a batch of
# $N$ examples divides every gradient by $N$.
#
# **Numerical stability.** $e^{1000}$ overflows. Since $\log\sum_k e^{z_k} = m + \log\sum_k
# e^{z_k - m}$ for any $m$, we take $m = \max_k z_k$: then every exponent is at most $0$
# (the *log-sum-exp trick*). The naive formula fails where the stable one does not:

# %%
logits = np.array([[1000.0, 998.0, -5.0]])
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
print("naive softmax: ", naive)
print("stable softmax:", bp.softmax(logits).round(6))

# %% [markdown]
# The stable softmax subtracts each row's maximum (with `keepdims=True`, so that the maxima,
# shape $(N, 1)$, line up with the rows). The loss needs one more step: never compute
# `np.log(softmax(z))`, because a probability that rounds to exactly 0 gives $\log 0 = -\infty$;
# take the log-sum-exp form above instead. Writing the loss and its gradient is exercise 5.

# %%
show_source(bp.softmax)

# %% [markdown]
# ## 10 · Gradient checking
#
# A backward pass can be wrong in subtle ways (a transposed matrix, a missing sum, a
# forgotten $1/N$) and still produce numbers of the right shape. The referee is the
# **numerical gradient**: nudge each input entry by $\pm h$ and measure. It is far too slow
# for training (two forward passes per entry), but perfect for testing. The course's checker
# `numerical_grad(f, x, dout)` nudges one entry of a float64 copy of `x` at a time, evaluates
# $\sum f(x) \cdot \text{dout}$ at $x \pm h$, puts the entry back, and stores the centred
# difference. Weighting by the upstream gradient `dout` tests exactly the vector-Jacobian
# product a backward function returns. (You write your own in exercise 7.)

# %% [markdown]
# We compare with the **relative error** $\max_i |a_i - b_i| / (|a_i| + |b_i|)$: the ratio
# for each entry, then the largest of them (that is what `rel_error` computes). In float64, about
# $10^{-7}$ or less means the backward pass is right; $10^{-2}$ or more means it is wrong.
# Let us check every gradient of a linear layer and of the loss:

# %%
x = rng.standard_normal((4, 5))
w, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
dout = rng.standard_normal((4, 3))
dx, dw, db = bp.linear_backward(dout, bp.linear_forward(x, w, b)[1])
labels = np.array([0, 2, 1, 2])
_, dlogits = bp.softmax_cross_entropy(x[:, :3], labels)

errors = {
    "linear dx": rel_error(dx, numerical_grad(lambda v: bp.linear_forward(v, w, b)[0], x, dout)),
    "linear dw": rel_error(dw, numerical_grad(lambda v: bp.linear_forward(x, v, b)[0], w, dout)),
    "linear db": rel_error(db, numerical_grad(lambda v: bp.linear_forward(x, w, v)[0], b, dout)),
    "dlogits": rel_error(dlogits, numerical_grad(
        lambda v: bp.softmax_cross_entropy(v, labels)[0], x[:, :3])),
}
assert max(errors.values()) < 1e-7
print("every relative error is below 1e-7: the backward passes are right")

# %% [markdown]
# And a buggy version for contrast: a bias gradient that forgot to sum over the batch and
# took only the first example. The shapes are fine, the numbers are not, and the check says so.

# %%
db_buggy = dout[0]
print(f"relative error of the buggy db: {rel_error(db_buggy, numerical_grad(lambda v: bp.linear_forward(x, w, v)[0], b, dout)):.2f}")

# %% [markdown]
# ## 11 · A whole MLP, forward and backward
#
# A multi-layer perceptron is Linear → ReLU → Linear → ... → Linear. Its forward pass calls
# the layers in order and keeps every cache; its backward pass calls the backward functions
# **in reverse order**, each one turning the gradient of its output into the gradient of its
# input (and of its parameters). That is backpropagation, with array-sized nodes.
#
# The forward pass is below. The backward pass `bp.mlp_backward` starts from `dlogits` and
# walks the caches from the last layer to the first: a linear layer's backward gives its `dw`,
# `db` and the gradient of its input; the ReLU's mask turns that into the gradient of the
# previous pre-activation; and so on down. Writing one for a two-layer network is exercise 6;
# here we only call it.

# %%
show_source(bp.mlp_forward)

# %% [markdown]
# Parameters are created like PyTorch's `nn.Linear` does it by default: $W$ and $b$ uniform in
# $[-1/\sqrt{D}, 1/\sqrt{D}]$ for a layer with $D$ inputs. The gradient tells us which way is
# downhill: one small step against it must lower the loss.

# %%
sizes = [10, 32, 32, 4]
params = bp.init_mlp(sizes, rng, dtype=np.float64)
x = rng.standard_normal((16, 10))
y = rng.integers(0, 4, 16)

loss, grads = bp.mlp_loss_and_grads(params, x, y)
stepped = [p - 0.5 * g for p, g in zip(params, grads)]
loss_after, _ = bp.mlp_loss_and_grads(stepped, x, y)
print(f"loss {loss:.4f} -> {loss_after:.4f} after one step against the gradient")

# %% [markdown]
# ## 12 · NumPy first, then PyTorch
#
# The same network in PyTorch is chapter 01's `MLP` (Linear layers with ReLU between them),
# and `loss.backward()` replaces our `mlp_backward`. We copy our NumPy parameters into it, run both on the same batch in float64
# (on the GPU when there is one) and compare the loss and **every** gradient.

# %%
from dlcourse.backprop.torch_impl import load_params, make_mlp

show_source(make_mlp)

# %%
device = dlcourse.device()
dtype = torch.float32 if device == "mps" else torch.float64  # Apple GPUs have no float64
model = load_params(make_mlp(sizes).to(device=device, dtype=dtype), params)

loss_t = torch.nn.functional.cross_entropy(model(torch.tensor(x, device=device, dtype=dtype)),
                                           torch.tensor(y, device=device))
loss_t.backward()

diff = max([abs(loss - loss_t.item())] + [np.abs(g - p.grad.cpu().numpy()).max()
                                          for g, p in zip(grads, model.parameters())])
assert diff < (1e-5 if dtype == torch.float32 else 1e-10)
print(f"loss and all {len(grads)} gradients agree between NumPy and PyTorch")

# %% [markdown]
# How fast is the hand-written version? At the small sizes of this course (a batch of 64,
# 64 → 128 → 10) a NumPy training step does less bookkeeping than autograd, which records a
# graph on every forward pass. Timings vary from machine to machine:

# %%
# NBVAL_IGNORE_OUTPUT
import timeit

sizes_big = [64, 128, 10]
params32 = bp.init_mlp(sizes_big, rng)
xb = rng.random((64, 64), dtype=np.float32)
yb = rng.integers(0, 10, 64)
model_cpu = load_params(make_mlp(sizes_big), params32)
optimizer = torch.optim.SGD(model_cpu.parameters(), lr=0.1)
xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)


def numpy_step():
    global params32
    _, g = bp.mlp_loss_and_grads(params32, xb, yb)
    params32 = [p - np.float32(0.1) * gi for p, gi in zip(params32, g)]


def torch_step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model_cpu(xt), yt).backward()
    optimizer.step()


for name, step in (("NumPy", numpy_step), ("PyTorch (CPU)", torch_step)):
    seconds = min(timeit.repeat(step, number=200, repeat=3)) / 200
    print(f"{name:>14}: {seconds * 1e6:6.0f} µs per training step")

# %% [markdown]
# ## Summary
#
# * A computation is a **graph**; backpropagation applies the **chain rule** at every edge,
#   `child.grad += local * node.grad`, visiting nodes in **reverse topological order**.
# * **Reverse mode** gives the gradient of one loss with respect to all parameters in one
#   backward pass, which is what training needs.
# * For arrays, each backward function computes a **vector-Jacobian product**; gradients have
#   the shape of their variables, and shared parameters **sum** over the batch.
# * Softmax cross-entropy has the gradient $(p - \text{onehot})/N$; compute it with the
#   **log-sum-exp** trick.
# * **Gradient checking** with centred differences is how you know a backward pass is right.
#
# **Exercises:** open `exercises/02_backprop.ipynb` to build the `Value` engine's operations
# and its `backward`, the linear and activation backward passes, softmax cross-entropy, a
# two-layer network's gradients, and your own numerical gradient.
#
# **Next:** chapter 03 uses these gradients to *descend*: SGD, momentum, Adam, and an MLP that
# learns to read handwritten digits.
