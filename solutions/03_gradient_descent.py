# %% [markdown]
# # 03 · Gradient descent and optimizers — exercises
#
# In this notebook you write the optimizers of chapter 03 yourself, each the way `torch.optim`
# computes it, so that your functions could replace PyTorch's step for step. The lesson derived
# them and showed their siblings (plain momentum, Adam, cosine annealing); here you write the
# relatives it did not show:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `gd_minimize` | plain gradient descent, returning the path | 2 |
# | 2 | `nesterov_step` | one step of Nesterov momentum (the lesson showed plain momentum) | 3 |
# | 3 | `rmsprop_step` | one RMSprop step | 2 |
# | 4 | `adamw_step` | one AdamW step: Adam with decoupled weight decay (the lesson showed Adam) | 3 |
# | 5 | `warmup_cosine_lr` | linear warm-up, then cosine decay (the lesson showed the cosine) | 2 |
# | 6 | `minibatches` | shuffled mini-batch indices that cover every example once per epoch | 2 |
# | 7 | `train_epoch` | **the larger task**: one whole epoch of mini-batch Adam on an MLP | 3 |
# | | four concept questions | a number or a choice each | 4 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several cases, compares with the
# course's reference, and shows ✓ or ✗ with the points and one message that says what is wrong
# (and, for the classic mistakes, *which* mistake it is). It never crashes the notebook. Stuck?
# `check.hint("adamw_step")` gives a hint; run it again for the next one. Each of the seven
# exercises has three hints: first a nudge in the right direction, then a concrete intermediate
# step, and last something close to code, so try the first ones before you read the last. The
# concept questions at the end have no hints (work them out from the lesson). The last cell adds
# up your score.
#
# **The style of the optimizers: state in, state out.** An optimizer step is a pure function
# `w_new, state_new = step(w, dw, state, ...)`. It never changes `w`, `dw` or `state` in place;
# it returns new arrays and a new state, a small `NamedTuple` with PyTorch's names for what the
# optimizer remembers between steps. The checks run 20 steps in a row and feed your returned
# state back in, so carrying the state correctly is part of each exercise.

# %%
import math

import numpy as np

from dlcourse.backprop.numpy_impl import mlp_loss_and_grads
from dlcourse.optim import numpy_impl as optim_np  # our NumPy optimizers (torch.optim is PyTorch's)
from dlcourse.optim.checks import check
from dlcourse.optim.numpy_impl import AdamState, RMSpropState, SGDState

# %% [markdown]
# ## Exercise 1 · Gradient descent (2 points)
#
# Write `gd_minimize(grad, start, lr, steps)`: starting at `start`, repeat `steps` times the
# update $\mathbf w \leftarrow \mathbf w - \eta\,\nabla L(\mathbf w)$ and return the **whole path**.
#
# * `grad`: a function; `grad(w)` returns the gradient at the point `w` (an array of shape `(D,)`)
# * `start`: array of shape `(D,)`; do not modify it
# * `lr`: the learning rate $\eta$; `steps`: the number of updates (may be 0)
# * return: an array of shape `(steps + 1, D)` whose row `k` is the point after `k` updates
#   (row 0 is `start` itself)

# %%
def gd_minimize(grad, start, lr, steps):
    """Plain gradient descent; returns the path, shape (steps + 1, D)."""
    ### BEGIN SOLUTION
    w = np.array(start, dtype=float)
    path = [w]
    for _ in range(steps):
        w = w - lr * grad(w)
        path.append(w)
    return np.stack(path)
    ### END SOLUTION


# %%
check.gd_minimize(gd_minimize)

# %% [markdown]
# ## Exercise 2 · Nesterov momentum (3 points)
#
# The lesson showed plain (heavy-ball) momentum in PyTorch's form. Write
# `nesterov_step(w, dw, state, lr, momentum=0.9)`, the step of `torch.optim.SGD(...,
# nesterov=True)`. With $\mathbf g$ = `dw`, $\mu$ = `momentum`, $\eta$ = `lr`, and $\mathbf v$ =
# `state.momentum_buffer` (zeros before the first step):
#
# $$\mathbf v \leftarrow \mu\,\mathbf v + \mathbf g, \qquad
# \mathbf w \leftarrow \mathbf w - \eta\,(\mathbf g + \mu\,\mathbf v)$$
#
# The buffer is the same as plain momentum's; the step looks one momentum move ahead, using the
# **updated** buffer. Return the pair `(new_w, SGDState(new_buffer))`, and change nothing in
# place. The learning rate stays *out* of the buffer (PyTorch's form), so that a schedule changing
# `lr` does not rescale the memory of past gradients. The check starts from buffers that earlier
# steps have already filled, as in the middle of training.

# %%
def nesterov_step(w, dw, state, lr, momentum=0.9):
    """One Nesterov momentum step; returns (w, SGDState)."""
    ### BEGIN SOLUTION
    buf = momentum * state.momentum_buffer + dw
    return w - lr * (dw + momentum * buf), SGDState(buf)
    ### END SOLUTION


# %%
check.nesterov_step(nesterov_step)

# %% [markdown]
# ## Exercise 3 · RMSprop (2 points)
#
# Write `rmsprop_step(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8)`. With $\mathbf s$ =
# `state.square_avg` (zeros at first), and every operation element by element:
#
# $$\mathbf s \leftarrow \alpha\,\mathbf s + (1-\alpha)\,\mathbf g^2, \qquad
# \mathbf w \leftarrow \mathbf w - \eta\,\frac{\mathbf g}{\sqrt{\mathbf s} + \epsilon}$$
#
# `eps` is added *after* the square root, as in PyTorch. Return `(new_w,
# RMSpropState(new_square_avg, state.momentum_buffer))` (we do not use RMSprop's optional momentum
# here: pass its buffer on unchanged).

# %%
def rmsprop_step(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
    """One RMSprop step; returns (w, RMSpropState)."""
    ### BEGIN SOLUTION
    square_avg = alpha * state.square_avg + (1 - alpha) * dw * dw
    new_w = w - lr * dw / (np.sqrt(square_avg) + eps)
    return new_w, RMSpropState(square_avg, state.momentum_buffer)
    ### END SOLUTION


# %%
check.rmsprop_step(rmsprop_step)

# %% [markdown]
# ## Exercise 4 · AdamW: Adam with decoupled weight decay (3 points)
#
# The lesson built Adam, whose `weight_decay` adds $\lambda\mathbf w$ to the gradient, where
# Adam's division by $\sqrt{\hat{\mathbf v}}$ then rescales it differently for every coordinate.
# **AdamW** (Loshchilov & Hutter) *decouples* the decay: the weights shrink directly, and the Adam
# step sees only the plain gradient. Write
# `adamw_step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)`,
# the step of `torch.optim.AdamW`. The state is `AdamState(step, exp_avg, exp_avg_sq)` (0 and
# zeros at first). With $t$ = `state.step + 1`:
#
# $$\mathbf w' = (1 - \eta\lambda)\,\mathbf w, \qquad
# \mathbf m \leftarrow \beta_1\mathbf m + (1-\beta_1)\mathbf g, \qquad
# \mathbf v \leftarrow \beta_2\mathbf v + (1-\beta_2)\mathbf g^2,$$
#
# $$\mathbf w \leftarrow \mathbf w' - \eta\,\frac{\mathbf m / (1-\beta_1^t)}
# {\sqrt{\mathbf v / (1-\beta_2^t)} + \epsilon}$$
#
# Return `(new_w, AdamState(t, m, v))`: the state keeps the *uncorrected* averages, and the
# counter moves on by one. Write the whole update yourself (do not call `optim_np.adam_step`).

# %%
def adamw_step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    """One AdamW step; returns (w, AdamState)."""
    ### BEGIN SOLUTION
    beta1, beta2 = betas
    t = state.step + 1
    shrunk = w * (1 - lr * weight_decay)
    m = beta1 * state.exp_avg + (1 - beta1) * dw
    v = beta2 * state.exp_avg_sq + (1 - beta2) * dw ** 2
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return shrunk - lr * m_hat / (np.sqrt(v_hat) + eps), AdamState(t, m, v)
    ### END SOLUTION


# %%
check.adamw_step(adamw_step)

# %% [markdown]
# ## Exercise 5 · Warm-up, then cosine decay (2 points)
#
# Write `warmup_cosine_lr(epoch, base_lr, warmup, total, eta_min=0.0)`, the learning rate to use
# during epoch `epoch` (counting from 0):
#
# * **warm-up**, for `epoch < warmup`: $\;\eta = \eta_{base}\cdot\dfrac{\text{epoch} + 1}{\text{warmup}}$
#   (epoch 0 already gets a small non-zero rate, epoch `warmup - 1` the full one);
# * **cosine**, afterwards: with $t$ = `epoch - warmup` and $T$ = `total - warmup`,
#   $\;\eta = \eta_{min} + \tfrac12(\eta_{base} - \eta_{min})\,(1 + \cos(\pi t / T))$,
#   which starts at `base_lr` and reaches `eta_min` at epoch `total`.
#
# `warmup = 0` means no warm-up at all. Return one float. (This equals PyTorch's
# `SequentialLR` of a `LinearLR` warm-up and a `CosineAnnealingLR`.) The lesson's
# `optim_np.cosine_lr(epoch, base_lr, t_max, eta_min)` is the second phase, if you want to use it.

# %%
def warmup_cosine_lr(epoch, base_lr, warmup, total, eta_min=0.0):
    """Linear warm-up for `warmup` epochs, then cosine annealing to eta_min at epoch `total`."""
    ### BEGIN SOLUTION
    if epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    since, period = epoch - warmup, total - warmup
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * since / period)) / 2
    ### END SOLUTION


# %%
check.warmup_cosine_lr(warmup_cosine_lr)

# %% [markdown]
# ## Exercise 6 · Mini-batches (2 points)
#
# Write a **generator** `minibatches(n, batch_size, rng)` that yields, for one epoch over `n`
# examples, arrays of example indices:
#
# * shuffled: draw one random permutation of `0 .. n-1` from `rng` (a `np.random.Generator`), so
#   that the same seed gives the same batches;
# * every index exactly once per epoch; batches of `batch_size`, except the last, which holds the
#   `n % batch_size` left over (do not drop it).
#
# For example `list(minibatches(10, 4, rng))` could be `[array([3, 7, 0, 9]), array([5, 1, 8,
# 2]), array([6, 4])]`.

# %%
def minibatches(n, batch_size, rng):
    """Yield shuffled index arrays that cover range(n) once."""
    ### BEGIN SOLUTION
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
    ### END SOLUTION


# %%
check.minibatches(minibatches)

# %% [markdown]
# ## Exercise 7 · One epoch of training (3 points): the larger task
#
# Put the pieces together: write `train_epoch(params, states, x, y, batch_size, rng, lr=1e-3)`,
# one whole epoch of mini-batch Adam on an MLP, in the functional style of this chapter (the
# lesson trained with a stateful `optim_np.Optimizer` object; here you carry every state yourself,
# so do not use that class).
#
# * `params`: the MLP's parameters `[w1, b1, w2, b2, ...]` (`w1` of shape `(H, D)`, ..., the last
#   `w` of shape `(K, H)`); `states`: one `AdamState` per parameter; `x` `(N, D)`, `y` `(N,)`: the
#   training data; `rng`: the generator for the shuffle.
# * For each batch `idx` from **`optim_np.minibatches(len(x), batch_size, rng)`**: compute the loss
#   and the gradients with `mlp_loss_and_grads(params, x[idx], y[idx])` (chapter 02), then update
#   every parameter with **`optim_np.adam_step(p, g, s, lr=lr)`**, keeping the new parameters *and*
#   the new states for the next batch.
# * Return `(params, states, mean_loss)`, where `mean_loss` is the average loss per *example* over
#   the epoch: weight each batch's loss by its size (the last batch may be smaller).
#
# Use the course's `optim_np.minibatches` and `optim_np.adam_step` (not your own versions), so
# that the check can replay your epoch batch for batch. Do not modify the input lists or arrays
# (no `params[i] = ...` either: rebind `params` to a new list).

# %%
def train_epoch(params, states, x, y, batch_size, rng, lr=1e-3):
    """One epoch of mini-batch Adam; returns (params, states, mean loss over the examples)."""
    ### BEGIN SOLUTION
    total = 0.0
    for idx in optim_np.minibatches(len(x), batch_size, rng):
        loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
        updated = [optim_np.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params = [p for p, _ in updated]
        states = [s for _, s in updated]
        total += float(loss) * len(idx)
    return params, states, total / len(x)
    ### END SOLUTION


# %%
check.train_epoch(train_epoch)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer each with a value: a number, or one of the letters offered. The check says whether it is
# right and, once it is, why.
#
# **Q1.** On the bowl $L = \tfrac12(w_1^2 + 10\,w_2^2)$, plain gradient descent converges for
# every learning rate below some limit and diverges above it. What is that limit?

# %%
def q_lr_limit():
    """The largest learning rate for which gradient descent still converges on the bowl (a number)."""
    ### BEGIN SOLUTION
    return 0.2
    ### END SOLUTION


# %%
check.q_lr_limit(q_lr_limit)

# %% [markdown]
# **Q2.** With momentum $\mu = 0.9$ on a constant gradient $\mathbf g$, PyTorch's buffer
# $\mathbf v \leftarrow \mu\mathbf v + \mathbf g$ settles at $c\,\mathbf g$. What is $c$
# (how many times longer than plain SGD's are the steps there)?

# %%
def q_momentum_speedup():
    """The factor c for momentum 0.9 (a number)."""
    ### BEGIN SOLUTION
    return 10.0
    ### END SOLUTION


# %%
check.q_momentum_speedup(q_momentum_speedup)

# %% [markdown]
# **Q3.** The digits training set has 1,257 examples. How many updates does one epoch of
# mini-batches of 64 make (with `minibatches` as in exercise 6)?

# %%
def q_updates_per_epoch():
    """Updates per epoch for N = 1257, batch size 64 (a number)."""
    ### BEGIN SOLUTION
    return 20
    ### END SOLUTION


# %%
check.q_updates_per_epoch(q_updates_per_epoch)

# %% [markdown]
# **Q4.** How long is Adam's very first step in each coordinate (PyTorch's defaults, a gradient
# much larger than `eps`)? **a**: proportional to the gradient, `lr * g`; **b**: about `lr`,
# whatever the gradient's size; **c**: about `3 * lr`, because the averages start at zero.

# %%
def q_adam_first_step():
    """'a', 'b' or 'c'."""
    ### BEGIN SOLUTION
    return "b"
    ### END SOLUTION


# %%
check.q_adam_first_step(q_adam_first_step)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
