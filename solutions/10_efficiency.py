# %% [markdown]
# # 10 · Efficiency and scale — exercises
#
# In this notebook you write the tools of the lesson yourself: what a conv layer costs, global
# magnitude pruning, int8 quantization per channel and back, the distillation loss with its
# gradient, a ring all-reduce that moves data only by messages, and, as the larger task, **one
# data-parallel SGD step** that equals single-process training:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `conv2d_cost` | parameters, FLOPs and output size of a Conv2d layer | 2 |
# | 2 | `global_magnitude_prune` | {0, 1} masks with one magnitude threshold over all layers | 3 |
# | 3a | `quantize_per_channel` | affine uint8 codes, one scale and zero point per output channel | 2 |
# | 3b | `dequantize` | the codes back to floats | 1 |
# | 4 | `distill_loss` | the distillation loss and its gradient (NumPy) | 3 |
# | 5 | `ring_allreduce` | reduce-scatter and all-gather through explicit messages | 3 |
# | 6 | `data_parallel_step` | **the larger task**: one SGD step on P simulated workers | 4 |
# | | five concept questions | a number or a letter each | 5 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several small cases, from small to large,
# compares with the course's reference, and shows ✓ or ✗ with the points and one message that says
# what is wrong (and, for the classic mistakes, *which* mistake it is), with the smallest failing
# case and a line that reproduces it. It never crashes the notebook. Stuck? `check.hint("dequantize")`
# gives a hint; run it again for the next one. Each exercise has three hints: first the idea, then the
# approach, last something close to code, so try the first ones first. The concept questions at the
# end have no hints (work them out from the lesson). The last cell adds up your score.
#
# **Conventions** (the lesson's). One multiply-add (MAC) counts as **2 FLOPs**; only the multiply-adds
# are counted (not the bias adds), as `torch.utils.flop_counter.FlopCounterMode` does. Weights are
# dicts keyed like a torch `state_dict` (`"0.weight"` `(H, D)`, `"0.bias"` `(H,)`, ...), in torch's
# layouts. Every function is pure: it returns new arrays and changes none of its inputs, and works in
# float64. Dimension letters: `N` batch, `D` input features, `H` hidden width, `K` classes, `C`
# channels, `P` workers. Write the code yourself: handing in (or calling) the course's own version of
# an exercise earns no points.

# %%
import numpy as np

from dlcourse.efficiency.checks import Network, check
from dlcourse.efficiency.numpy_impl import mlp_init, mlp_loss_and_grads

# %% [markdown]
# ## Exercise 1 · What a conv layer costs (2 points)
#
# `nn.Conv2d(c_in, c_out, (kh, kw), stride, pad)` applied to one `(c_in, h_img, w_img)` image. Write
# `conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0)` that returns
# `(params, flops, (h_out, w_out))`:
#
# * `params`: the weights **and** the biases (one per output channel);
# * `flops`: 2 × the multiply-adds of the layer on this one image (bias adds not counted);
# * `(h_out, w_out)`: the output's height and width (`pad` zeros on every side, windows that do not
#   fit are not computed).
#
# All three are Python ints.

# %%
def conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    """(params, FLOPs = 2 * MACs, (h_out, w_out)) of a Conv2d on one image."""
    ### BEGIN SOLUTION
    h_out = (h_img + 2 * pad - kh) // stride + 1
    w_out = (w_img + 2 * pad - kw) // stride + 1
    window = c_in * kh * kw                               # one output value: a dot product this long
    params = c_out * window + c_out
    flops = 2 * c_out * h_out * w_out * window
    return params, flops, (h_out, w_out)
    ### END SOLUTION


# %%
check.conv2d_cost(conv2d_cost)

# %% [markdown]
# ## Exercise 2 · Global magnitude pruning (3 points)
#
# Write `global_magnitude_prune(weights, sparsity)`:
#
# * `weights` a dict name → array (any shapes); only the keys ending in `"weight"` are pruned, the
#   biases never;
# * **one** magnitude threshold over all those weights together: the `round(sparsity * n)` weights of
#   smallest |w| (n = the number of weights, all layers together) are removed; `round` is Python's, which
#   rounds an exact half to the even integer (`round(76.5) == 76`), as torch's pruning does; when
#   magnitudes tie, any choice that removes exactly that many is accepted;
# * return the **masks**, a dict name → {0, 1} array of the weight's shape, for the pruned names only
#   (the training loop multiplies the weights by them); leave `weights` unchanged.

# %%
def global_magnitude_prune(weights, sparsity):
    """{0, 1} masks for the keys ending in 'weight', one magnitude threshold over all of them."""
    ### BEGIN SOLUTION
    names = [k for k in weights if k.endswith("weight")]
    flat = np.concatenate([np.abs(weights[k]).ravel() for k in names])     # every layer in one pool
    n_zero = int(round(sparsity * flat.size))
    keep = np.ones(flat.size)
    keep[np.argsort(flat, kind="stable")[:n_zero]] = 0.0                   # exactly n_zero, ties or not
    masks, start = {}, 0
    for k in names:
        size = np.size(weights[k])
        masks[k] = keep[start:start + size].reshape(np.shape(weights[k]))
        start += size
    return masks
    ### END SOLUTION


# %%
check.global_magnitude_prune(global_magnitude_prune)

# %% [markdown]
# ## Exercise 3a · Quantization per output channel (2 points)
#
# Unsigned affine quantization with `bits` bits, codes `qmin = 0` to `qmax = 2**bits - 1`, one scale
# and zero point **per output channel** (the first axis of `w`):
#
# 1. the channel's range `[min, max]`, widened to contain 0 (so that 0 is exact);
# 2. `scale = (max - min) / (qmax - qmin)`, floored at `np.finfo(np.float32).eps` (a channel of zeros,
#    pruned, would give 0), as torch does;
# 3. an **integer** `zero_point = round(qmin - min / scale)`, clamped to `[qmin, qmax]`;
# 4. `q = clamp(round(w / scale) + zero_point, qmin, qmax)`, rounding with `np.round` (half to even,
#    like torch). (torch adds the zero point before it rounds, `round(w / scale + zero_point)`: the two
#    differ only when `w / scale` lies exactly halfway between two integers; both are accepted.)
#
# Write `quantize_per_channel(w, bits=8)` for `w` of shape `(C_out, ...)` (2-d or 4-d): return `(q,
# scale, zero_point)`, `q` integer codes of w's shape (e.g. uint8), `scale` float64 `(C_out,)`,
# `zero_point` ints `(C_out,)`.

# %%
def quantize_per_channel(w, bits=8):
    """(q, scale (C_out,), zero_point (C_out,) ints): unsigned affine quantization per output channel."""
    ### BEGIN SOLUTION
    qmin, qmax = 0, 2 ** bits - 1
    rows = w.reshape(len(w), -1)
    lo = np.minimum(rows.min(axis=1), 0.0)                                 # the range contains 0
    hi = np.maximum(rows.max(axis=1), 0.0)
    scale = np.maximum((hi - lo) / (qmax - qmin), np.finfo(np.float32).eps)
    zero_point = np.clip(np.round(qmin - lo / scale), qmin, qmax).astype(np.int64)
    along = (-1,) + (1,) * (w.ndim - 1)                                    # (C_out, 1, ...) broadcasts per row
    q = np.clip(np.round(w / scale.reshape(along)) + zero_point.reshape(along), qmin, qmax)
    return q.astype(np.uint8 if bits <= 8 else np.int64), scale, zero_point
    ### END SOLUTION


# %%
check.quantize_per_channel(quantize_per_channel)

# %% [markdown]
# ## Exercise 3b · And back (1 point)
#
# Write `dequantize(q, scale, zero_point)`: the floats `x_hat = (q - zero_point) * scale` that the codes
# stand for, per output channel (the first axis), a float64 array of q's shape. `q` comes as uint8.

# %%
def dequantize(q, scale, zero_point):
    """(q - zero_point) * scale along the first axis, float64."""
    ### BEGIN SOLUTION
    along = (-1,) + (1,) * (q.ndim - 1)
    return (q.astype(np.int64) - zero_point.reshape(along)) * scale.reshape(along)
    ### END SOLUTION


# %%
check.dequantize(dequantize)

# %% [markdown]
# ## Exercise 4 · The distillation loss and its gradient (3 points)
#
# With student logits `s` and teacher logits `t` (both `(N, K)`), labels `y` `(N,)`, temperature `T` and
# weight `alpha` (Hinton et al. 2015), the lesson's loss, a mean over the batch, is
#
# $$L = \alpha\, T^2\, \mathrm{KL}\bigl(\operatorname{softmax}(t/T)\,\|\,\operatorname{softmax}(s/T)\bigr)
#   + (1-\alpha)\, \mathrm{CE}\bigl(\operatorname{softmax}(s), y\bigr).$$
#
# Write `distill_loss(s, t, y, T, alpha)` returning `(loss, ds)`: the loss (a float) and its gradient
# with respect to the student's logits, `(N, K)`, by hand (NumPy, no autograd).

# %%
def distill_loss(s, t, y, T, alpha):
    """(loss, dloss/ds) of the distillation loss, mean over the batch."""
    ### BEGIN SOLUTION
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    n = len(s)
    log_p, log_q, log_ps = log_softmax(s / T), log_softmax(t / T), log_softmax(s)
    p, q = np.exp(log_p), np.exp(log_q)
    kl = np.sum(q * (log_q - log_p)) / n                  # KL(teacher || student), softened
    ce = -np.mean(log_ps[np.arange(n), y])
    onehot = np.zeros_like(s)
    onehot[np.arange(n), y] = 1.0
    ds = alpha * T ** 2 * (p - q) / (T * n) + (1 - alpha) * (np.exp(log_ps) - onehot) / n
    return alpha * T ** 2 * kl + (1 - alpha) * ce, ds
    ### END SOLUTION


# %%
check.distill_loss(distill_loss)

# %% [markdown]
# ## Exercise 5 · Ring all-reduce, message by message (3 points)
#
# P workers each hold a buffer (their gradient). A worker can read only its own memory: the only way
# data moves is `send(src, dst, data)`, which delivers a copy of the array `data` from worker `src` to
# worker `dst` and returns what `dst` receives. Write `ring_allreduce(buffers, send)` (`buffers` a list
# of P arrays of one shape) that returns a list of P **new** arrays, each the **mean** of the buffers,
# with the ring of the lesson:
#
# * cut each buffer into P chunks (its size need not be a multiple of P);
# * **reduce-scatter**, P − 1 steps: worker i sends a running sum of one chunk to worker (i + 1) mod P,
#   which adds its own; afterwards each worker holds one chunk fully summed;
# * **all-gather**, P − 1 steps: the finished chunks travel around the ring the same way.
#
# Workers send only to their right neighbour; leave the buffers unchanged. To try it yourself:
# `net = Network(3); out = ring_allreduce(buffers, net.send); net.bytes_sent` (the bytes each worker sent).

# %%
def ring_allreduce(buffers, send):
    """Ring all-reduce through send(src, dst, data): every worker ends with the mean of the buffers."""
    ### BEGIN SOLUTION
    P, shape = len(buffers), buffers[0].shape
    mem = [[c.copy() for c in np.array_split(b.ravel(), P)] for b in buffers]    # worker i's own chunks
    for k in range(P - 1):                               # reduce-scatter
        for i in range(P):
            c, right = (i - k) % P, (i + 1) % P
            mem[right][c] = mem[right][c] + send(i, right, mem[i][c])
    for k in range(P - 1):                               # all-gather
        for i in range(P):
            c, right = (i + 1 - k) % P, (i + 1) % P
            mem[right][c] = send(i, right, mem[i][c])
    return [np.concatenate(chunks).reshape(shape) / P for chunks in mem]
    ### END SOLUTION


# %%
check.ring_allreduce(ring_allreduce)

# %% [markdown]
# ## Exercise 6 · One data-parallel SGD step (4 points) — the larger task
#
# The lesson trained with `DistributedDataParallel` on two processes and got the same weights as one
# process. Here you simulate what happens inside, in one step. Write
# `data_parallel_step(params, x, y, workers, lr, grad_fn)`:
#
# * `params` a dict of arrays (an MLP's weights), `x` `(N, D)` the **global** batch, `y` `(N,)`;
# * `grad_fn(params, x_p, y_p)` returns `(loss, grads)`, the **mean** over the rows it is given (the
#   check passes the course's `mlp_loss_and_grads`, which you may call yourself to try);
# * cut the batch into `workers` contiguous shards with `np.array_split`; every worker computes the
#   gradient of its shard with the same params; average the gradients so that the result is the
#   gradient of the whole batch's mean **even when N is not a multiple of P**; one SGD step,
#   `params - lr * gradient`, shared by all the workers;
# * return the new params as a new dict (leave `params` unchanged).
#
# The check compares with single-process SGD on the global batch, for equal and unequal shards and
# over several steps in a row.

# %%
def data_parallel_step(params, x, y, workers, lr, grad_fn):
    """One synchronous data-parallel SGD step on `workers` simulated workers: a new params dict."""
    ### BEGIN SOLUTION
    n = len(x)
    avg = {k: np.zeros_like(v) for k, v in params.items()}
    for idx in np.array_split(np.arange(n), workers):      # worker p's contiguous shard
        _, grads = grad_fn(params, x[idx], y[idx])           # the mean over its n_p rows
        for k in avg:
            avg[k] = avg[k] + (len(idx) / n) * grads[k]      # weighted by its share of the batch
    return {k: params[k] - lr * avg[k] for k in params}
    ### END SOLUTION


# %%
check.data_parallel_step(data_parallel_step)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer with a value. **Q1.** How many FLOPs does the digits MLP's first layer, `nn.Linear(64, 256)`,
# take for **one** example, with the course's convention? (lesson: measuring cost)

# %%
def q_linear_flops():
    """A number."""
    ### BEGIN SOLUTION
    return 32768
    ### END SOLUTION


# %%
check.q_linear_flops(q_linear_flops)

# %% [markdown]
# **Q2.** Storing every weight of a model as an int8 code instead of a float32 number: by what factor
# does the weights' storage shrink, counting the weights alone? (lesson: quantization)

# %%
def q_int8_ratio():
    """A number."""
    ### BEGIN SOLUTION
    return 4.0
    ### END SOLUTION


# %%
check.q_int8_ratio(q_int8_ratio)

# %% [markdown]
# **Q3.** A ring all-reduce of a 100 MB gradient on P = 4 workers: how many MB does **each** worker send?
# (lesson: ring all-reduce)

# %%
def q_ring_bytes():
    """A number, in MB."""
    ### BEGIN SOLUTION
    return 150.0
    ### END SOLUTION


# %%
check.q_ring_bytes(q_ring_bytes)

# %% [markdown]
# **Q4.** Mixed-precision training in float16 needs a gradient (loss) scaler; in bfloat16 it does not.
# Why? `'a'` bfloat16 has more mantissa bits than float16, `'b'` bfloat16 has float32's 8 exponent bits,
# so the same range, `'c'` under autocast the gradients are computed in float32 anyway.
# (lesson: mixed precision)

# %%
def q_bf16_scaling():
    """'a', 'b' or 'c'."""
    ### BEGIN SOLUTION
    return "b"
    ### END SOLUTION


# %%
check.q_bf16_scaling(q_bf16_scaling)

# %% [markdown]
# **Q5.** Without the T² factor, by what factor does the soft term's gradient shrink when the temperature
# goes from T = 2 to T = 4 (for large T, where the softened distributions are near uniform)?
# (lesson: distillation)

# %%
def q_t_squared():
    """A number."""
    ### BEGIN SOLUTION
    return 4.0
    ### END SOLUTION


# %%
check.q_t_squared(q_t_squared)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
