# %% [markdown]
# # 07 · Transformers: attention by hand, a GPT trained from scratch, RNN vs Transformer measured
#
# A recurrent network reads a sequence one step at a time and squeezes everything it has read
# into one state vector (chapter 06). A **Transformer** (Vaswani et al., *Attention is all you
# need*, 2017) does without the recurrence: every position looks at every other position directly,
# through **attention**, and decides how much of each to take. Nothing has to be carried over many
# steps, and every position of a training sequence is computed at once — which is what made the
# large language models possible. This chapter builds it by hand, proves it equal to PyTorch's,
# and trains one:
#
# 1. **scaled dot-product attention** in NumPy, forward and backward, with causal and padding
#    masks — and why the scores are divided by √hs (hs: the head size);
# 2. **multi-head attention**, equal to `nn.MultiheadAttention` with its weights copied in;
# 3. **layer norm**, **positional encodings** (sinusoidal, learned, rotary) and the **pre-norm
#    block** — the NumPy block equal to PyTorch's in every gradient;
# 4. **a small GPT** in PyTorch, trained from scratch to reverse sequences and to add 3-digit
#    numbers, scored on problems it has never seen;
# 5. **what attention looks at**: the trained model's attention maps, layer by layer, head by head;
# 6. **the KV cache**, which makes generation fast, measured;
# 7. **RNN vs Transformer** on chapter 06's text and on a long-range task, at equal training time;
# 8. on a GPU: the same model larger, on the fused attention kernels.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dlcourse
from dlcourse import show_source
from dlcourse.transformer import explore
from dlcourse.transformer import numpy_impl as tn               # attention, layer norm, the block in NumPy
from dlcourse.transformer import tasks                          # reversal and addition as token tasks
from dlcourse.transformer import torch_impl as tt               # the GPT in PyTorch

rng = dlcourse.seed(0)
device = dlcourse.device()
lesson_start = time.perf_counter()
print(f"device: {device}")


def max_diff(a, b):
    """Largest absolute difference between two arrays, NumPy or torch."""
    a, b = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in (a, b))
    return float(np.max(np.abs(a - b)))


# %% [markdown]
# ## 1 · Attention: a soft lookup
#
# Think of a dictionary lookup where the query need not match a key exactly. Every position t of
# a sequence emits three vectors, computed from its input by three learned linear maps:
#
# * a **query** $q_t$ — what this position is looking for;
# * a **key** $k_j$ — what position j offers, to be matched against queries;
# * a **value** $v_j$ — what position j hands over when it is chosen.
#
# Position t scores every key by a dot product with its query, turns the scores into weights
# that are positive and sum to one (a softmax over the keys), and takes the weighted average of
# the values. For all queries at once, with $h_s$ the width of a query and a key:
#
# $$\text{Attention}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{Q K^\top}{\sqrt{h_s}}\Big)\, V$$
#
# (Here V is the matrix of values; from section 8 on, as everywhere in the course, V also names the
# vocabulary size — the context tells which.) The score matrix $S = QK^\top/\sqrt{h_s}$ is $T_q \times T_k$: row t holds query t's scores
# for every key; the softmax runs along the row (over the keys), so row t of the weights $P$ says
# how position t spreads its attention. Nothing here depends on how far apart two positions are:
# the last word of a paragraph reads the first as easily as its neighbour. Writing this function
# is the first exercise; the course's version, `tn.attention_forward`, against PyTorch's
# `F.scaled_dot_product_attention` in float64:

# %%
N, Tq, Tk, hs, hv = 2, 4, 6, 8, 5
q = rng.standard_normal((N, Tq, hs))                           # (N, Tq, hs)
k = rng.standard_normal((N, Tk, hs))                           # (N, Tk, hs)
v = rng.standard_normal((N, Tk, hv))                           # (N, Tk, hv): values may have their own width
out, cache = tn.attention_forward(q, k, v)                     # out (N, Tq, hv)
q_t, k_t, v_t = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
out_t = F.scaled_dot_product_attention(q_t, k_t, v_t)
print(f"out {out.shape}: largest difference to F.scaled_dot_product_attention {max_diff(out, out_t):.1e}")
print("weights of query 0 (batch 0):", np.round(cache.weights[0, 0], 3), "sum", cache.weights[0, 0].sum())

# %% [markdown]
# ## 2 · Why divide by √hs
#
# If the entries of q and k are independent with mean 0 and variance 1, their dot product is a sum
# of $h_s$ such products: its variance is $h_s$, its spread $\sqrt{h_s}$. Unscaled, the scores
# of a 64-wide head spread over ±8 and more, and the softmax of such numbers is nearly one-hot:
# one key takes almost all the weight. Worse, a saturated softmax has almost no gradient — its
# Jacobian $\operatorname{diag}(p) - pp^\top$ is near zero when p is one-hot — so the queries and
# keys stop learning. Dividing by $\sqrt{h_s}$ brings the spread back to about 1 for every head
# size. Measured on random unit-variance queries and keys (16 queries × 16 keys, 200 draws per
# size), with a random upstream gradient; a row counts as saturated when one key takes more than
# 99 % of its weight, and the gradient is the typical (median) size of a row of $dS$:

# %%
head_sizes = [4, 16, 64, 256]
score_std = {"unscaled": [], "scaled": []}
top_weight = {"unscaled": [], "scaled": []}
grad_norm = {"unscaled": [], "scaled": []}
for size in head_sizes:
    qs = rng.standard_normal((200, 16, size))                  # (draws, Tq, hs)
    ks = rng.standard_normal((200, 16, size))                  # (draws, Tk, hs)
    vs = rng.standard_normal((200, 16, 16))                    # (draws, Tk, hv)
    for key, scale in (("unscaled", 1.0), ("scaled", 1 / np.sqrt(size))):
        scores = tn.attention_scores(qs, ks, scale=scale)      # (draws, Tq, Tk)
        out_s, cache_s = tn.attention_forward(qs, ks, vs, scale=scale)
        stages = tn.attention_backward_stages(rng.standard_normal(out_s.shape), cache_s)
        score_std[key].append(scores.std())
        top_weight[key].append((cache_s.weights.max(axis=-1) > 0.99).mean())
        grad_norm[key].append(np.median(np.linalg.norm(stages["dscores"], axis=-1)))
fig = explore.plot_scale_study(head_sizes, score_std, top_weight, grad_norm)
plt.show()
for i, size in enumerate(head_sizes):
    print(f"hs = {size:>3}: score spread {score_std['unscaled'][i]:5.1f} unscaled, {score_std['scaled'][i]:.2f} "
          f"scaled; saturated rows {top_weight['unscaled'][i]:4.0%} vs {top_weight['scaled'][i]:.0%}; "
          f"gradient at the scores {grad_norm['unscaled'][i]:.2f} vs {grad_norm['scaled'][i]:.2f}")
assert score_std["unscaled"][-1] > 10 * score_std["scaled"][-1]
assert grad_norm["unscaled"][-1] < 0.1 * grad_norm["scaled"][-1]

# %% [markdown]
# The unscaled spread grows like $\sqrt{h_s}$ (2, 4, 8, 16); the scaled one stays at 1. With the
# spread, more and more rows saturate (the softmax picks one key and ignores the rest: over half
# of them at $h_s$ = 256) and the gradient that reaches the scores shrinks by two orders of
# magnitude — such a head learns almost nothing. Scaled, all four head sizes behave alike. (Vaswani et al. 2017, section 3.2.1,
# give the same argument.)
#
# ## 3 · Masks: no peeking, no padding
#
# Two kinds of key must get no weight at all:
#
# * **the future**, in a model that predicts the next token: position t may read positions 0…t
#   only, or training would be trivial (the answer is right there) and generation impossible (the
#   future is not there yet). The **causal mask** is the lower triangle of a T × T matrix.
# * **padding**, in a batch of sequences of different lengths: the filler positions are not data.
#
# A masked score is set to $-\infty$ *before* the softmax: $e^{-\infty} = 0$, so the key gets
# weight exactly 0 and the remaining weights still sum to one. (Zeroing weights *after* the
# softmax breaks the sum; setting the score to 0 instead of −∞ gives the key an ordinary weight —
# both classic mistakes, which the exercise's check recognises and names.) The course's masks are
# boolean with True = "may attend", like `F.scaled_dot_product_attention`'s. Careful:
# `nn.MultiheadAttention`'s `attn_mask` and `key_padding_mask` mean the opposite, True = blocked.

# %%
T = 6
causal = tn.causal_mask(T)                                           # (T, T) lower triangle
padding = tn.padding_mask([6, 4], T)                                 # (N, 1, 1, T): the second has 2 pad tokens
both = causal & padding[:, 0]                                        # (N, T, T)
x6 = rng.standard_normal((2, T, hs))
weights = tn.attention_weights(x6, x6, both)                         # (N, T, T)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), layout="constrained")
for ax, (title, m) in zip(axes, (("causal mask (True = may attend)", causal),
                                  ("weights, sequence 0 (length 6)", weights[0]),
                                  ("weights, sequence 1 (length 4, 2 padding)", weights[1]))):
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set(title=title, xlabel="key", ylabel="query")
plt.show()
print("row sums:", np.round(weights.sum(-1), 6).tolist())
print("weight on padding keys:", float(weights[1][:, 4:].max()))
torch_w = torch.softmax(torch.tensor(x6 @ x6.transpose(0, 2, 1) / np.sqrt(hs)).masked_fill(
    ~torch.tensor(both), float("-inf")), dim=-1)
print(f"largest difference to a masked torch softmax: {max_diff(weights, torch_w):.1e}")

# %% [markdown]
# The padded queries 4 and 5 of sequence 1 still attend (to the real keys): their outputs are
# computed and simply never used (the loss ignores them). A query whose every key is masked would
# have a softmax of 0/0 — NaN in PyTorch; the course's function refuses it with a message instead:
#
# %%
try:
    tn.attention_forward(x6[:1], x6[:1], x6[:1], np.zeros((T, T), dtype=bool))
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 4 · The backward pass, stage by stage
#
# Backpropagation runs the three stages in reverse. With $S = QK^\top s$ (s the scale),
# $P = \operatorname{softmax}(S)$ row by row, $O = PV$, and the upstream gradient $dO$:
#
# | stage | from | gradient |
# |---|---|---|
# | values | $O = PV$ | $dV = P^\top dO$ |
# | weights | $O = PV$ | $dP = dO\, V^\top$ |
# | scores | softmax of each row | $dS_{ij} = P_{ij}\big(dP_{ij} - \textstyle\sum_{j'} dP_{ij'} P_{ij'}\big)$ |
# | queries, keys | $S = QK^\top s$ | $dQ = s\, dS\, K$, $\quad dK = s\, dS^\top Q$ |
#
# The softmax line is the Jacobian $\operatorname{diag}(p) - pp^\top$ of each row applied to that
# row of $dP$, written without building the matrix: each weight's gradient is its own $dP$ minus the
# row's $p$-weighted average of $dP$ (a sum over the keys j′ of query i's row, kept as a column so
# it broadcasts along the row), times $p$. A masked key has $p = 0$, so its $dS$ is 0 and it
# passes no gradient on. Writing this backward pass is an exercise, checked stage by stage; here the
# course's version against autograd, every stage, with a causal mask and $T_q = T_k$:

# %%
T = 5
q, k = rng.standard_normal((2, N, T, hs))
v = rng.standard_normal((N, T, hv))
out, cache = tn.attention_forward(q, k, v, tn.causal_mask(T))
dout = rng.standard_normal(out.shape)
stages = tn.attention_backward_stages(dout, cache)

q_t, k_t, v_t = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
scores_t = (q_t @ k_t.transpose(-2, -1) / np.sqrt(hs)).masked_fill(~torch.tensor(tn.causal_mask(T)), float("-inf"))
weights_t = torch.softmax(scores_t, dim=-1)
for t_ in (scores_t, weights_t):
    t_.retain_grad()
(weights_t @ v_t).backward(torch.tensor(dout))
autograd = {"dv": v_t.grad, "dweights": weights_t.grad, "dscores": scores_t.grad, "dq": q_t.grad, "dk": k_t.grad}
for name, grad in autograd.items():
    print(f"{name:<9} {tuple(stages[name].shape)!s:<13} largest difference to autograd {max_diff(stages[name], grad):.1e}")
print("gradient reaching masked (future) scores:", float(np.abs(stages["dscores"][..., np.triu_indices(T, 1)[0],
                                                                                  np.triu_indices(T, 1)[1]]).max()))
sdpa_out = F.scaled_dot_product_attention(*(torch.tensor(a, requires_grad=True) for a in (q, k, v)), is_causal=True)
print(f"and F.scaled_dot_product_attention(is_causal=True) gives the same output: {max_diff(out, sdpa_out):.1e}")

# %% [markdown]
# ## 5 · Multi-head attention
#
# One softmax per query gives one way of mixing the values: a position that needs both "the
# previous token" and "the matching bracket" would have to average them. **Multi-head attention**
# runs $n_h$ attentions side by side on narrower vectors: the E features of the projected queries,
# keys and values are cut into $n_h$ heads of $h_s = E / n_h$ features, each head attends on its
# own, and the heads' outputs are put side by side again and mixed by an output projection. Same
# cost as one wide head, $n_h$ different patterns. The shapes, in the course's letters:
#
# ```
# x                       (N, T, E)
# q = x W_q^T + b_q       (N, T, E)            (k and v alike)
# split heads             (N, T, nh, hs) -> transpose -> (N, nh, T, hs)
# attention per head      (N, nh, T, hs)       the (N, nh) leading dims are just a batch
# merge heads             (N, nh, T, hs) -> transpose -> (N, T, nh, hs) -> (N, T, E)
# out = merged W_o^T + b_o  (N, T, E)
# ```
#
# The split must keep each token's features together: a reshape straight to (N, nh, T, hs) would
# cut across tokens and mix them (an exercise). `nn.MultiheadAttention` stores $W_q, W_k, W_v$
# stacked in one `in_proj_weight` (3E × E) and the output map in `out_proj`; the course's
# `tn.mha_forward` takes exactly those parameters:

# %%
E, nh, T = 12, 3, 5
mha = nn.MultiheadAttention(E, nh, batch_first=True).double()
mha_params = tn.params_from_torch(mha)          # in_proj_weight (3E, E), in_proj_bias, out_proj.weight/bias
x = rng.standard_normal((N, T, E))              # (N, T, E)
y, mha_cache = tn.mha_forward(x, mha_params, nh, mask=tn.causal_mask(T))
dy = rng.standard_normal(y.shape)
dx, mha_grads = tn.mha_backward(dy, mha_cache)

x_t = torch.tensor(x, requires_grad=True)
y_t, _ = mha(x_t, x_t, x_t, attn_mask=~torch.tensor(tn.causal_mask(T)), need_weights=False)   # True = blocked!
y_t.backward(torch.tensor(dy))
print(f"output {max_diff(y, y_t):.1e}, dx {max_diff(dx, x_t.grad):.1e}, " +
      ", ".join(f"d{n} {max_diff(mha_grads[n], p.grad):.1e}" for n, p in mha.named_parameters()))
print(f"parameters: {sum(p.numel() for p in mha.parameters())} = 4E² + 4E with E = {E}")

# %% [markdown]
# ## 6 · Layer norm and positions
#
# **Layer norm** (Ba, Kiros and Hinton, 2016) normalises each token's vector on its own: over its E
# features, subtract their mean, divide by their standard deviation (biased, as PyTorch does; ε =
# 1e-5 inside the square root), then scale and shift by learned $\gamma, \beta$ (E each):
#
# $$\text{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta, \qquad
# \mu = \tfrac{1}{E}\textstyle\sum_i x_i, \quad \sigma^2 = \tfrac{1}{E}\sum_i (x_i - \mu)^2$$
#
# Chapter 04's batch norm averaged each feature over the *batch*; layer norm averages over the
# *features* of one token, so it behaves the same in training and inference, for a batch of one,
# and for sequences of any length — which is why Transformers use it. Its backward has the same
# shape as batch norm's, with the sums over the feature axis. Forward and backward are exercises;
# the course's versions against `nn.LayerNorm`:

# %%
ln = nn.LayerNorm(E).double()
with torch.no_grad():
    ln.weight.copy_(torch.tensor(1 + 0.1 * rng.standard_normal(E)))
    ln.bias.copy_(torch.tensor(0.1 * rng.standard_normal(E)))
y, ln_cache = tn.layer_norm_forward(x, ln.weight.detach().numpy(), ln.bias.detach().numpy())
dx, dgamma, dbeta = tn.layer_norm_backward(dy, ln_cache)
x_t = torch.tensor(x, requires_grad=True)
ln(x_t).backward(torch.tensor(dy))
print(f"layer norm: y {max_diff(y, ln(x_t)):.1e}, dx {max_diff(dx, x_t.grad):.1e}, "
      f"dgamma {max_diff(dgamma, ln.weight.grad):.1e}, dbeta {max_diff(dbeta, ln.bias.grad):.1e}")
normed = (y - ln.bias.detach().numpy()) / ln.weight.detach().numpy()
print(f"every token: mean {np.abs(normed.mean(-1)).max():.0e}, std {normed.std(-1).min():.4f}–{normed.std(-1).max():.4f}")

# %% [markdown]
# **Attention does not know where anything is.** Permute the tokens of the input and (without a
# mask) the outputs are permuted the same way — the layer treats its input as a *set*:

# %%
perm = rng.permutation(T)
y_plain, _ = tn.mha_forward(x, mha_params, nh)
y_perm, _ = tn.mha_forward(x[:, perm], mha_params, nh)
print(f"attention of the permuted tokens = permuted attention: {max_diff(y_perm, y_plain[:, perm]):.1e}")

# %% [markdown]
# But "dog bites man" is not "man bites dog": order has to enter as data. Three ways:
#
# * **sinusoidal** (Vaswani et al. 2017): add to token t the fixed vector
#   $PE_{t, 2i} = \sin(t / 10000^{2i/E})$, $PE_{t, 2i+1} = \cos(t / 10000^{2i/E})$ — pairs of
#   features turning at geometrically spaced frequencies, like the hands of a clock with E/2 hands.
#   Moving k steps turns each pair by a fixed angle, the same at every t, so "k steps back" is
#   one linear map for the model to learn. (Writing it is an exercise.)
# * **learned** (GPT-2): a trained table of block_size × E vectors, one per position — simple, but
#   it knows nothing about positions it never saw in training.
# * **rotary** (RoPE; Su et al. 2021), today's default in most large models: add nothing; instead
#   *rotate* each query and key pair of features by an angle proportional to its position. The dot
#   product of a query at position m and a key at n then depends only on m − n: relative position,
#   built into the score itself.

# %%
pe = tn.sinusoidal_positions(64, 32)                                   # (T, E)
fig, (ax_pe, ax_dot) = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained")
ax_pe.imshow(pe.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
ax_pe.set(title="sinusoidal positions: feature (rows) at each position (columns)", xlabel="position t",
          ylabel="feature")
ax_dot.plot(pe @ pe[20], label="PE[t] · PE[20]")
ax_dot.set(title="similarity to position 20: highest at 20, lower on average farther away", xlabel="position t")
ax_dot.legend()
plt.show()
show_source(tn.apply_rotary)

# %%
q1, k1 = rng.standard_normal((2, 1, 1, 16))                           # one query and one key, hs = 16
def rotated_score(m, n):
    """The score of the query placed at position m against the key placed at position n."""
    qm = tn.apply_rotary(np.repeat(q1, 40, axis=1))[0, m]               # rotate as if at every position, take m
    kn = tn.apply_rotary(np.repeat(k1, 40, axis=1))[0, n]
    return float(qm @ kn)
print("rotary: score(m, n) for m - n = 3:", [round(rotated_score(m, m - 3), 6) for m in (3, 10, 25, 39)])
print("        and for m - n = 7:", [round(rotated_score(m, m - 7), 6) for m in (7, 10, 25, 39)])

# %% [markdown]
# ## 7 · The block
#
# A Transformer is a stack of identical **blocks**. Each has two sub-layers, each behind a layer
# norm and inside a **residual** connection (the *pre-norm* arrangement of GPT-2 and most models
# since; the 2017 paper normalised after the residual add, which trains less stably when deep):
#
# * **attention**: the tokens exchange information;
# * **MLP**: each token alone goes through Linear (E → 4E), GELU, Linear (4E → E).
#
# The residual stream $x$ runs straight through the block, and each sub-layer *adds* to it. In
# the backward pass the residual passes the gradient through unchanged as well, so even a deep
# stack has a short path from the loss to every layer (the same idea as chapter 05's ResNet).
# GELU (Hendrycks and Gimpel, 2016) is a smooth ReLU, $x\,\Phi(x)$; the course uses the tanh
# approximation, as GPT-2 does. The NumPy block:

# %%
show_source(tn.block_forward)

# %% [markdown]
# Its parameters carry the names of the PyTorch `Block` (section 8) `state_dict`, so the NumPy
# block runs on a torch block's weights. Forward, the input's gradient and every parameter's:

# %%
E, nh, T = 16, 4, 7
torch_block = tt.Block(E, nh).double()
block_params = {name: p.detach().numpy().copy() for name, p in torch_block.state_dict().items()}
x = rng.standard_normal((N, T, E))
y, block_cache = tn.block_forward(x, block_params, nh)                 # causal
dy = rng.standard_normal(y.shape)
dx, block_grads = tn.block_backward(dy, block_cache)
x_t = torch.tensor(x, requires_grad=True)
y_t, _ = torch_block(x_t)
y_t.backward(torch.tensor(dy))
diffs = {"y": max_diff(y, y_t), "dx": max_diff(dx, x_t.grad)}
diffs.update({f"d{n}": max_diff(block_grads[n], p.grad) for n, p in torch_block.named_parameters()})
print(", ".join(f"{n} {d:.0e}" for n, d in diffs.items()))
assert max(diffs.values()) < 1e-10

# %% [markdown]
# ## 8 · A GPT in PyTorch
#
# A **GPT** (Radford et al. 2018, 2019) is a stack of these blocks reading tokens left to right
# (causal attention throughout), trained to predict every next token at once. The course's,
# written in the spirit of Karpathy's nanoGPT: token embedding plus positions, L blocks, a final
# layer norm, and a linear head giving V logits per position. The attention module's code stays
# hidden here, because its key/value cache is the larger exercise; its computation is the NumPy
# multi-head attention above, with `F.scaled_dot_product_attention(is_causal=True)` in the middle.
# The block and the model:

# %%
show_source(tt.Block)
show_source(tt.GPT.forward)

# %% [markdown]
# Causality, checked: change a token and only the logits at and after its position can change —
# the model can never have read the future.

# %%
torch.manual_seed(0)
tiny = tt.GPT(vocab_size=12, block_size=10, n_layer=2, n_head=2, n_embd=16).eval()
ids = torch.randint(0, 12, (1, 10))
changed = ids.clone()
changed[0, 6] = (changed[0, 6] + 1) % 12
with torch.no_grad():
    moved = (tiny(ids)[0] - tiny(changed)[0]).abs().amax(-1)[0]     # (T,) largest change per position
print("largest change of the logits at each position after changing token 6:",
      " ".join(f"{m:.0e}" for m in moved.tolist()))
assert moved[:6].max() == 0 and moved[6:].min() > 0

# %% [markdown]
# ## 9 · Two algorithmic tasks, solved
#
# Before text, two tasks where "right" is unambiguous, trained from scratch and scored on
# problems the model has never seen:
#
# * **reversal**: `31415926>` → `62951413`. To write the i-th output the model must look back at
#   exactly the right input position — a long-range, position-based lookup, the hardest kind for a
#   recurrent network (everything must pass through its state) and a natural one for attention.
# * **3-digit addition**: `123+456=` → `0579`. Each digit depends on two aligned input digits and on
#   a carry from the digits to its right.
#
# Each problem is one sequence of characters; the model reads the prompt and is trained (and
# scored) on the answer tokens only. A fixed hash of each problem puts 10 % of all problems in a
# **held-out** split that training never draws from, so the accuracy below is on unseen problems
# (for reversal, 10 % of the 10⁸ digit strings; for addition, 100,000 of the million sums).
# **Exact match** counts a problem only if every answer token is right, generated greedily, the
# model reading its own output. The model: 2 layers, 4 heads, width 64, learned positions
# (`tasks.TASK_GPT`); AdamW with warm-up and cosine decay.

# %%
# NBVAL_IGNORE_OUTPUT
from dlcourse.optim.explore import LiveLossPlot

reversal, addition = tasks.Reversal(length=8), tasks.Addition(digits=3)
print("reversal problems:", [reversal.decode(p) for p in reversal.problems(3, rng=np.random.default_rng(1))])
print("addition problems:", [addition.decode(p) for p in addition.problems(3, rng=np.random.default_rng(1))])
task_models, task_results = {}, {}
for task in (reversal, addition):
    steps = tasks.TASK_STEPS[task.name]
    live = LiveLossPlot(f"GPT on {task.name} ({device})", epochs=4)
    live.ax_acc.set_title("exact match on 500 held-out problems")
    start = time.perf_counter()
    n_eval = 2_000 if task is reversal else 10_000                  # 99.9 % needs many problems to mean something
    model, history, accuracy = tasks.train_task(task, seed=0, device=device, callback=live,
                                                eval_every=steps // 4, n_eval_during=500, n_eval=n_eval)
    task_models[task.name] = model
    task_results[task.name] = (accuracy, history, time.perf_counter() - start, n_eval)

# %%
# NBVAL_IGNORE_OUTPUT
for name, (accuracy, history, seconds, n_eval) in task_results.items():
    print(f"{name:<9}: {history.steps} steps in {history.seconds:.1f} s of training "
          f"({seconds:.1f} s with the evaluations); exact match on {n_eval:,} held-out problems: {accuracy:.2%}")
assert task_results["reversal"][0] == 1.0
assert task_results["addition"][0] >= 0.999

# %% [markdown]
# Every held-out reversal right, and at least 99.9 % of the held-out sums — after seconds of
# training on a CPU. A few answers the addition model wrote, with the carries that make it hard:

# %%
# NBVAL_IGNORE_OUTPUT
_, shown_problems, written = tasks.exact_match_accuracy(task_models["addition"], addition, n=8, seed=5,
                                                        return_examples=True)
for problem, answer in zip(shown_problems, written):
    prompt, right = addition.split_problem(problem)
    mark = "✓" if addition.decode(answer) == right else "✗"
    print(f"{prompt}{addition.decode(answer)}  {mark}")

# %% [markdown]
# ## 10 · What attention looks at
#
# Every head of every layer, for one held-out reversal problem: row i is where the token at
# position i (the query) takes its information from (the keys). The prompt is on the first nine
# rows; the answer rows are the ones that matter — the model is predicting the *next* token there.

# %%
rev_problem = reversal.problems(1, "held_out", np.random.default_rng(3))[0]
rev_tokens = rev_problem[:-1]                                  # the model never reads the last answer token
rev_maps = tt.attention_maps(task_models["reversal"], rev_tokens)   # (L, nh, T, T)
fig = explore.plot_attention_grid(rev_maps, explore.token_labels(reversal.decode(rev_tokens)),
                                  title=f"reversal {reversal.decode(rev_problem)}: attention per layer and head")
plt.show()

# %% [markdown]
# Look for the **anti-diagonal** in the answer rows of the first layer: to write the k-th answer
# digit the model attends to input position 7 − k, the digit it must copy. In this run every head
# of layer 0 learned it, sharply; layer 1 spreads its attention broadly (the copying is done by
# then). Nobody told the model where to look: the pattern was learned from the loss alone. Explore both task models and
# the character model of section 12 (which joins the explorer when it is trained) — every layer,
# every head, any input you type:

# %%
# NBVAL_IGNORE_OUTPUT
add_examples = [addition.decode(p[:addition.prompt_len])
                for p in addition.problems(20, "held_out", np.random.default_rng(7))]
rev_examples = [reversal.decode(p[:reversal.prompt_len])
                for p in reversal.problems(20, "held_out", np.random.default_rng(7))]
explore.attention_explorer({"reversal": (task_models["reversal"], reversal),
                            "addition": (task_models["addition"], addition)},
                           examples={"reversal": rev_examples, "addition": add_examples})

# %% [markdown]
# ## 11 · The KV cache
#
# Generating T tokens one at a time, a plain loop runs the model on the whole sequence so far at
# every step — and recomputes the keys and values of every earlier token, which have not changed
# (causal attention: a token's key and value depend only on the tokens before it). The **KV
# cache** keeps each layer's keys and values: the prompt is run once, and every later step runs
# the model on the one new token, whose query attends to the cached keys. Per step, the work drops
# from the whole sequence to one token (attention still reads all the cached keys). Writing a
# cached generation loop is the larger exercise; the course's `tt.generate(..., use_cache=...)`,
# both ways, on an untrained character-sized GPT:

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
gen_model = tt.char_gpt(97, block_size=512).to(device)
for prompt_len, new_tokens in ((16, 64), (192, 64)):
    timing = tt.kv_cache_speedup(gen_model, prompt_len, new_tokens)
    print(f"prompt {prompt_len:>3}, {new_tokens} new tokens: cached {timing['cached'] * 1e3:6.0f} ms, "
          f"uncached {timing['uncached'] * 1e3:6.0f} ms: {timing['speedup']:.1f}x faster, "
          f"same tokens: {timing['same_tokens']}")
    assert timing["same_tokens"]

# %% [markdown]
# Same 64 new tokens, a longer prompt: the uncached loop re-reads the whole prompt at every step,
# the cached one only once, so the longer the prompt, the more the cache saves.
# The cache costs memory instead — two vectors of E numbers per token per layer, growing with the
# text (an LSTM carries a fixed-size state however long the text). For large models that memory,
# not the arithmetic, limits how long a context and how big a batch fit on a GPU.
#
# ## 12 · RNN vs Transformer, measured
#
# Chapter 06's LSTM and this chapter's GPT on the same data, in this run:
#
# 1. **Characters, at equal training time**: chapter 06's character LSTM (256 units) and a
#    character GPT (2 layers, 4 heads, width 64, rotary positions, windows of 64 characters) each
#    train for the same few seconds on chapter 06's corpus and split, and are scored on the same
#    validation characters — each by its own fair rule (the LSTM carries its state through the
#    text; the GPT reads sliding windows so every character has at least 32 characters of context).
# 2. **A long-range dependency**: chapter 06's recall task — remember the first symbol through
#    `lag` steps of noise — for an LSTM (chapter 06's recall model) and a one-layer, one-head GPT,
#    the same number of training steps each.
# 3. **Generating**: the time per generated character, and the memory each carries.

# %%
# NBVAL_IGNORE_OUTPUT
from dlcourse.data import load_text_corpus

corpus = load_text_corpus()
race_seconds = 30 if device == "cuda" else 4
race = tt.rnn_vs_transformer(corpus, seconds=race_seconds, lags=(10, 40), device=device, progress=True)
print(race.table())

# %%
# NBVAL_IGNORE_OUTPUT
lstm_val, gpt_val = race.char["lstm"]["val"], race.char["gpt"]["val"]
print(f"after {race_seconds} s each: LSTM {lstm_val:.3f}, GPT {gpt_val:.3f} nats/char "
      f"({'the LSTM' if lstm_val < gpt_val else 'the GPT'} is ahead); training speed "
      f"{race.char['lstm']['chars_per_second']:,.0f} vs {race.char['gpt']['chars_per_second']:,.0f} characters/s")
print(f"recall at lag {race.lags[-1]}: LSTM {race.recall['lstm'][-1]:.0%}, GPT {race.recall['gpt'][-1]:.0%} "
      f"(chance {race.chance:.1%})")
assert race.recall["gpt"][-1] >= 0.95 and race.recall["lstm"][-1] < 0.5
assert max(lstm_val, gpt_val) < np.log(corpus.vocab_size)          # both far below a uniform guess

# %% [markdown]
# Who wins depends on what is measured:
#
# * **Small budgets of characters: the LSTM.** Its recurrence is a strong built-in assumption —
#   the recent past matters most — that a GPT must learn from data, so with little training the
#   LSTM is ahead (this run's numbers are above). Longer runs are measured by
#   `benchmarks/bench_transformer.py --char-curve` (60 s each, seeds 0 and 1, the same 2-core CPU,
#   one thread; `benchmarks/RESULTS.md`): the GPT reaches 1.21–1.22 nats/char on the whole
#   validation split — below the 1.30 the course set as its goal for a minute of CPU — and the
#   LSTM 1.11–1.12. At every budget measured there (10 to 60 s) the LSTM was ahead on this CPU.
# * **Throughput: the GPT.** It reads more characters per second (though it learns less from each,
#   above). It computes all positions of a window at once (big matrix products),
#   while the LSTM must run its steps one after another. On a GPU this gap becomes the whole story:
#   the parallel model uses thousands of cores, the sequential one cannot. That, and the next
#   point, is why Transformers replaced RNNs once data and compute grew.
# * **Long-range dependencies: the GPT, by far.** Attention reaches position 0 from any distance in
#   one step; the LSTM must carry the symbol through every step of noise, and its gradient must
#   come back the same way (chapter 06, section 5). At lag 10 both solve the task; at lag 40 the
#   LSTM is at chance and the GPT still right.
# * **Memory while generating: the LSTM.** Its state has a fixed size; the GPT's KV cache grows with
#   every token, and its attention reads all of it — cost that grows with the context (and the
#   score matrix in training grows with its square). Much recent work (state-space models, linear
#   attention) tries to have both.
#
# Samples from the GPT of the race — a few seconds of training make only the rhythm of code: spaces,
# short words, brackets — and its attention in the explorer, next to the task models. (This model
# is barely trained; the task models' heads show much sharper patterns. Type a line of Python and
# see which earlier characters each head reads.)

# %%
# NBVAL_IGNORE_OUTPUT
char_gpt_model = race.models["gpt"]
prompt = torch.as_tensor(corpus.encode("def "), device=device)
for temperature in (0.5, 1.0):
    text = tt.generate(char_gpt_model, prompt, 120, temperature=temperature,
                       generator=torch.Generator().manual_seed(1))
    print(f"--- T = {temperature}\n{corpus.decode(text.cpu().numpy())}\n")
explore.attention_explorer({"characters": (char_gpt_model, corpus),
                            "reversal": (task_models["reversal"], reversal),
                            "addition": (task_models["addition"], addition)},
                           examples={"characters": ["    def __init__(self, name):", "return self._data[key]"],
                                     "reversal": rev_examples, "addition": add_examples})

# %% [markdown]
# ## 13 · On a GPU
#
# On CUDA, `F.scaled_dot_product_attention` picks a fused kernel: flash attention (Dao et al., 2022)
# when the inputs are half precision (bfloat16 or float16), the memory-efficient kernel for
# float32; both compute attention in tiles without ever storing the T × T score matrix. On the CPU
# PyTorch has a fused flash kernel of its own. Which one runs here:

# %%
# NBVAL_IGNORE_OUTPUT
print(tt.sdpa_backend(device, torch.bfloat16 if device == "cuda" else torch.float32))

# %% [markdown]
# `tt.scale_up` trains a larger character GPT (6 layers, width 384, 6 heads, rotary, windows of 256
# — the size of nanoGPT's Shakespeare model) in bfloat16 autocast on the GPU, and prints its speed
# against the CPU's; without a GPU it says so and does nothing.

# %%
# NBVAL_IGNORE_OUTPUT
scaled = tt.scale_up(corpus, device=device, seconds=60)
if scaled is not None:
    print(f"{scaled.model}: {scaled.speedup:.0f}x the CPU's tokens/s; validation "
          f"{scaled.val_nats_per_char:.3f} nats/char after {scaled.seconds:.0f} s")

# %% [markdown]
# ## Summary
#
# * Attention is a soft lookup: queries score keys by dot products, a softmax over the keys turns
#   scores into weights, and the output is the weighted average of the values. Dividing the scores
#   by √hs keeps the softmax from saturating (section 2); masks set scores to −∞ before the softmax.
# * Its backward pass has three stages — values and weights, the softmax, queries and keys — and the
#   course's NumPy version equals PyTorch's in every gradient.
# * Multi-head attention splits the width into heads that attend independently; layer norm
#   normalises each token over its features; positions enter as added vectors (sinusoidal, learned)
#   or as rotations of queries and keys (rotary).
# * A pre-norm block adds an attention branch and an MLP branch to the residual stream; a GPT stacks
#   blocks and predicts every next token at once. Trained from scratch in seconds, it reversed every
#   held-out sequence and added held-out 3-digit numbers with ≥ 99.9 % exact match (section 9), and
#   its attention maps show what it learned to look at (section 10).
# * The KV cache makes generation cost one token per step instead of the whole sequence, for memory
#   that grows with the context (section 11).
# * Against the LSTM: the LSTM wins on small character budgets and in generation memory; the GPT
#   reads more characters per second in training and solves long-range dependencies the LSTM
#   cannot (section 12).
#
# **Exercises** (`exercises/07_transformer.ipynb`): attention forward with masks and its backward
# stage by stage, splitting and merging heads, layer norm forward and backward, sinusoidal
# positions, and a generation loop with a key/value cache you write yourself — then concept
# questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
