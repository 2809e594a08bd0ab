# %% [markdown]
# # 06 · Recurrent networks — exercises
#
# In this notebook you write the parts of recurrent networks yourself, each the way PyTorch computes
# it, so that your function could stand in for `nn.LSTMCell`, `nn.GRUCell`, the RNN's autograd,
# `clip_grad_norm_` or `nn.Embedding`'s gradient — and then a generation loop for a language model:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `lstm_cell_forward` | one LSTM step in PyTorch's gate order | 3 |
# | 2 | `gru_cell_forward` | one GRU step, PyTorch's variant | 2 |
# | 3 | `rnn_backward` | backpropagation through time for the vanilla RNN | 4 |
# | 4 | `clip_grad_norm` | gradient clipping by the global norm, `clip_grad_norm_`'s rule | 2 |
# | 5 | `embedding_backward` | the gradient of an embedding table, repeated ids included | 2 |
# | 6 | `generate` | **the larger task**: a generation loop with temperature and top-k | 4 |
# | | four concept questions | a number or a letter each | 4 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several cases, from small to large,
# compares with the course's reference, and shows ✓ or ✗ with the points and one message that says
# what is wrong (and, for the classic mistakes, *which* mistake it is), with the smallest failing
# case and a line that reproduces it. It never crashes the notebook. Stuck? `check.hint("rnn_backward")`
# gives a hint; run it again for the next one. Each exercise has three hints: first the idea, then
# the approach, last something close to code, so try the first ones first. The concept questions
# at the end have no hints (work them out from the lesson). The last cell adds up your score.
#
# **Conventions.** Dimension letters: `N` batch, `T` time steps, `D` input features, `H` hidden
# units, `V` vocabulary, `E` embedding width. Weights exactly as PyTorch stores them: `W_ih` of
# shape `(G·H, D)`, `W_hh` `(G·H, H)`, biases `b_ih`, `b_hh` `(G·H,)`, with G = 4 blocks for the
# LSTM (gates i, f, g, o, in this order), 3 for the GRU (r, z, n), 1 for the vanilla RNN. Every
# function returns new arrays (float64, like its inputs) and changes none of its inputs. Write the code yourself: handing in
# (or calling) the course's own version of an exercise earns no points. The point is to write them
# **in NumPy**: wrapping `nn.LSTMCell` and autograd would pass the checks, which use PyTorch as the
# oracle they compare with, but it teaches nothing; only the course's own functions are refused.

# %%
import numpy as np

from dlcourse.rnn.checks import check

# %% [markdown]
# ## Exercise 1 · An LSTM cell (3 points)
#
# Write `lstm_cell_forward(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh)`, one step of `nn.LSTMCell`:
#
# $$a = x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh} \quad (N, 4H) \;\to\; \text{blocks } a_i, a_f, a_g, a_o$$
#
# $$i = \sigma(a_i),\; f = \sigma(a_f),\; g = \tanh(a_g),\; o = \sigma(a_o),\qquad
# c_t = f \odot c_{t-1} + i \odot g,\qquad h_t = o \odot \tanh(c_t)$$
#
# * `x_t` `(N, D)`, `h_prev` and `c_prev` `(N, H)`; `W_ih` `(4H, D)`, `W_hh` `(4H, H)`, `b_ih` and
#   `b_hh` `(4H,)`: the four blocks of H rows in PyTorch's order **i, f, g, o**
# * return the pair `(h, c)`, both `(N, H)`

# %%
def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def lstm_cell_forward(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    """One LSTM step: (h, c), each (N, H)."""
    ### BEGIN SOLUTION
    H = h_prev.shape[1]
    a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh       # (N, 4H), blocks i, f, g, o
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c = f * c_prev + i * g                                 # keep some of the old memory, write some new
    h = o * np.tanh(c)
    return h, c
    ### END SOLUTION


# %%
check.lstm_cell_forward(lstm_cell_forward)

# %% [markdown]
# ## Exercise 2 · A GRU cell (2 points)
#
# Write `gru_cell_forward(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)`, one step of `nn.GRUCell`. The
# blocks of H rows are in the order **r, z, n** (reset, update, new), and PyTorch keeps the input
# side and the hidden side of the candidate `n` apart, because the reset gate scales only the
# hidden side. In the row form of Exercise 1, with $W_{ir}, W_{iz}, W_{in}$ the three blocks of H rows
# of `W_ih` (and likewise for `W_hh`, `b_ih`, `b_hh`):
#
# $$r = \sigma(x_t W_{ir}^\top + b_{ir} + h_{t-1} W_{hr}^\top + b_{hr}),\quad
# z = \sigma(x_t W_{iz}^\top + b_{iz} + h_{t-1} W_{hz}^\top + b_{hz})$$
#
# $$n = \tanh\big(x_t W_{in}^\top + b_{in} + r \odot (h_{t-1} W_{hn}^\top + b_{hn})\big),\qquad
# h_t = (1 - z) \odot n + z \odot h_{t-1}$$
#
# * `x_t` `(N, D)`, `h_prev` `(N, H)`; `W_ih` `(3H, D)`, `W_hh` `(3H, H)`, `b_ih` and `b_hh` `(3H,)`
# * return `h` `(N, H)` (a GRU has no cell state)

# %%
def gru_cell_forward(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    """One GRU step: h, (N, H)."""
    ### BEGIN SOLUTION
    H = h_prev.shape[1]
    gi = x_t @ W_ih.T + b_ih                               # (N, 3H) input side, blocks r, z, n
    gh = h_prev @ W_hh.T + b_hh                            # (N, 3H) hidden side
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])         # the reset scales W_hn h + b_hn
    return (1 - z) * n + z * h_prev
    ### END SOLUTION


# %%
check.gru_cell_forward(gru_cell_forward)

# %% [markdown]
# ## Exercise 3 · Backpropagation through time (4 points)
#
# The vanilla RNN computes, for t = 0 .. T-1, $h_{t+1} = \tanh(x_t W_{ih}^\top + b_{ih} + h_t W_{hh}^\top + b_{hh})$
# (here `hs[0]` is the initial state and `hs[t+1]` the state step t makes). Given the upstream
# gradient `dout[t]` = ∂loss/∂`hs[t+1]` for every step, write
# `rnn_backward(dout, x, hs, W_ih, W_hh)` that returns all the gradients:
#
# * `dout` `(T, N, H)`, `x` `(T, N, D)`, `hs` `(T+1, N, H)` (from the forward pass), `W_ih` `(H, D)`,
#   `W_hh` `(H, H)`
# * return `(dx, dh0, dW_ih, dW_hh, db)`: `dx` `(T, N, D)`, `dh0` `(N, H)` (the gradient of the
#   initial state `hs[0]`), `dW_ih` `(H, D)`, `dW_hh` `(H, H)`, and `db` `(H,)`, the gradient of
#   `b_ih` — which equals that of `b_hh`
#
# The lesson showed one step's backward pass; here you chain T of them. The check tries the first
# T = 1, 2, 3 and 5 steps of one sequence, then 6 steps of another. A mistake that shows only from
# T = 2 on lies in what joins the steps (the gradient carried back, the sums over the steps, the
# `dout` of every step), and the message says from which T, and where it can, from which step back,
# your gradients go wrong.

# %%
def rnn_backward(dout, x, hs, W_ih, W_hh):
    """BPTT for the tanh RNN: (dx, dh0, dW_ih, dW_hh, db)."""
    ### BEGIN SOLUTION
    T = x.shape[0]
    dx = np.zeros(x.shape)
    dW_ih, dW_hh, db = np.zeros(W_ih.shape), np.zeros(W_hh.shape), np.zeros(W_hh.shape[0])
    dh_next = np.zeros(hs.shape[1:])                       # nothing comes back from beyond the last step
    for t in reversed(range(T)):
        dh = dout[t] + dh_next                             # the loss's own gradient + what step t+1 sends
        da = dh * (1 - hs[t + 1] ** 2)                     # tanh' from the state step t made
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]                               # shared weights: the steps add up
        dW_hh += da.T @ hs[t]                              # W_hh multiplied the state step t read
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db
    ### END SOLUTION


# %%
check.rnn_backward(rnn_backward)

# %% [markdown]
# ## Exercise 4 · Gradient clipping by the global norm (2 points)
#
# An RNN's gradients can explode: one step of gradient descent then throws the weights far away.
# Clipping by norm treats **all** gradients as one long vector and, when its length is above
# `max_norm`, shrinks it — every array by the same factor, so the direction of the update is kept.
# Write `clip_grad_norm(grads, max_norm)` with `torch.nn.utils.clip_grad_norm_`'s rule:
#
# $$\text{total} = \sqrt{\textstyle\sum_{\text{arrays } g} \sum g^2},\qquad
# \text{scale} = \frac{\text{max\_norm}}{\text{total} + 10^{-6}},\quad\text{applied only when it is below 1}$$
#
# * `grads`: a list of arrays of any shapes; `max_norm`: a float
# * return `(clipped, total)`: a list of NEW arrays, also when nothing needs clipping (torch changes
#   `.grad` in place; this function leaves the arrays it was given alone) and the total norm
#   **before** clipping, a float

# %%
def clip_grad_norm(grads, max_norm):
    """Clip by the global L2 norm: (list of clipped arrays, total norm before clipping)."""
    ### BEGIN SOLUTION
    total = float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    scale = min(1.0, max_norm / (total + 1e-6))            # never scale up
    return [g * scale for g in grads], total
    ### END SOLUTION


# %%
check.clip_grad_norm(clip_grad_norm)

# %% [markdown]
# ## Exercise 5 · The gradient of an embedding (2 points)
#
# An embedding table `W` `(V, E)` turns token ids into vectors: `out[n, t] = W[ids[n, t]]`, which
# is `nn.Embedding`'s forward pass. Write `embedding_backward(dout, ids, V)`, the gradient of the
# loss with respect to `W`:
#
# * `dout` `(..., E)`, the upstream gradient, shaped like `out`; `ids` an int array `(...)`, e.g.
#   `(N, T)`; `V` the number of rows of the table
# * return `dW` `(V, E)`: row `v` is the sum of `dout` over every position whose id is `v` (zeros
#   for ids that do not occur)
#
# Careful: the same id occurs many times in a batch of text (every space, every "e").

# %%
def embedding_backward(dout, ids, V):
    """Gradient of an embedding table: dW (V, E)."""
    ### BEGIN SOLUTION
    E = dout.shape[-1]
    dW = np.zeros((V, E))
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, E))    # one addition per occurrence
    return dW
    ### END SOLUTION


# %%
check.embedding_backward(embedding_backward)

# %% [markdown]
# ## Exercise 6 · A generation loop (4 points) — the larger task
#
# A language model generates text one token at a time: it reads the prompt, then repeatedly draws
# the next token from its prediction and feeds that token back in. Write
# `generate(next_logits, state, prompt_ids, length, temperature, top_k, rng)`:
#
# * `next_logits(token, state)` is one step of a model: it takes one token (an `int`) and the
#   state, and returns `(logits, new_state)`, `logits` of shape `(V,)`. You do not need to know
#   what the state is (an array, a pair `(h, c)`, ...): pass the one it returns into the next call
# * `state` is the initial state; `prompt_ids` a list of at least one token
# * feed every prompt token in order; the logits after the last one predict the first new token
# * each new token is drawn from `softmax(logits / temperature)`, where, if `top_k` is not
#   `None`, only the `top_k` largest logits are kept (the others set to `-inf`); use the generator
#   `rng` for every draw (`rng.choice(V, p=probs)` or your own inverse-CDF draw), not `np.random`:
#   the same rng state must give the same tokens
# * return the list of the `length` generated tokens (ints, without the prompt)
#
# The check hands you a small NumPy model and watches what you feed it: the prompt, then each
# token you drew, with the state carried, and (with a model that makes one token all but certain
# at each step) which step's logits each token came from. It then draws 1,500 tokens from a model
# with fixed logits at several temperatures, with and without top-k, and compares their
# frequencies with the distribution they should follow, so any correct way of drawing passes; it
# also calls `generate` again with the same and with another seed. The course's `sample_next` and `softmax` earn no
# points here: write the sampling yourself.

# %%
def generate(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    """Feed the prompt, then sample `length` tokens, feeding each back; return them as a list of ints."""
    ### BEGIN SOLUTION
    for token in prompt_ids:                               # read the prompt, carrying the state
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = np.asarray(logits, dtype=float) / temperature
        if top_k is not None:
            smaller = np.argsort(z)[:-top_k]               # all but the k largest
            z[smaller] = -np.inf
        p = np.exp(z - z.max())
        p = p / p.sum()
        token = int(rng.choice(len(p), p=p))
        out.append(token)
        logits, state = next_logits(token, state)          # feed the sampled token back
    return out
    ### END SOLUTION


# %%
check.generate(generate)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer each with a value (no hints: the lesson has what you need). A number may be a Python
# expression (`np.log(...)`, `0.5 ** 20`) or rounded to 2 significant digits; an int must be exact.
#
# **Q1.** How many parameters (weights and biases) does `nn.LSTM(input_size=32, hidden_size=64)`
# have (one layer)?

# %%
def q_lstm_parameters():
    """The number of parameters (an int)."""
    ### BEGIN SOLUTION
    return 4 * 64 * (32 + 64) + 2 * 4 * 64
    ### END SOLUTION


# %%
check.q_lstm_parameters(q_lstm_parameters)

# %% [markdown]
# **Q2.** A character model that knows nothing guesses uniformly among V = 100 characters. What is
# its cross-entropy loss, in nats per character (the unit `F.cross_entropy` uses)? To 2 significant
# digits or better.

# %%
def q_uniform_nats():
    """Nats per character (a number)."""
    ### BEGIN SOLUTION
    return float(np.log(100))
    ### END SOLUTION


# %%
check.q_uniform_nats(q_uniform_nats)

# %% [markdown]
# **Q3.** Going back one step through a vanilla RNN multiplies the gradient by 0.5 (the norm of
# `diag(1 - h²) W_hh`, say). By what factor has it been multiplied 20 steps back? To 2 significant
# digits or better.

# %%
def q_vanishing_factor():
    """The factor (a number)."""
    ### BEGIN SOLUTION
    return 0.5 ** 20
    ### END SOLUTION


# %%
check.q_vanishing_factor(q_vanishing_factor)

# %% [markdown]
# **Q4.** Which part of an LSTM decides how much of the old cell state $c_{t-1}$ is kept:
# `'i'` the input gate, `'f'` the forget gate, `'g'` the cell candidate, or `'o'` the output gate?

# %%
def q_lstm_keep_gate():
    """'i', 'f', 'g' or 'o'."""
    ### BEGIN SOLUTION
    return "f"
    ### END SOLUTION


# %%
check.q_lstm_keep_gate(q_lstm_keep_gate)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
