"""The PyTorch side of chapter 07: a small GPT, trained on algorithmic tasks and on text, with a KV cache.

:mod:`dlcourse.transformer.numpy_impl` builds attention, layer norm and the block by hand; here
the same block, in PyTorch, becomes a decoder-only Transformer in the spirit of nanoGPT (course
code, written here):

* :func:`split_heads` / :func:`merge_heads`, :class:`CausalSelfAttention` (fused
  ``F.scaled_dot_product_attention``, or a manual path that also returns the attention weights),
  :class:`MLP`, :class:`Block` (pre-norm; its ``state_dict`` keys are the NumPy block's parameter
  names), :class:`GPT` (token embedding, learned / sinusoidal / rotary positions, blocks, final
  layer norm, linear head);
* the **KV cache**: :func:`new_cache`, ``GPT.forward(ids, cache=...)`` and :func:`generate`
  (greedy or sampled, with or without the cache; the same tokens either way), and
  :func:`kv_cache_speedup`;
* :func:`attention_maps`: every layer's and head's attention weights for one sequence;
* :func:`train_gpt`: AdamW, warm-up then cosine, clipping, a time (or step) budget, tqdm and a
  live-plot callback; :func:`train_char_gpt` and a fair :func:`evaluate_nats_per_char` on
  chapter 06's corpus; :func:`rnn_vs_transformer`;
* :func:`sdpa_backend` (which fused kernel attention runs on) and :func:`scale_up` (a larger
  GPT on a GPU).

Dimension letters: N batch, T time steps (Tq queries, Tk keys), E model width, nh heads,
hs head size (E = nh * hs), V vocabulary, L layers.  Sequences are batch-first, (N, T).
Losses are in nats (natural log) per token.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.torch_impl import TrainHistory, TrainingBudget, _fork_rng, _model_device, _sync

configure_torch()

__all__ = ["split_heads", "merge_heads", "sinusoidal_positions", "apply_rope", "causal_mask",
           "CausalSelfAttention", "MLP", "Block", "GPT", "POSITIONS", "new_cache", "cache_length", "generate",
           "kv_cache_speedup", "attention_maps", "GPTHistory", "train_gpt", "CHAR_GPT", "char_gpt",
           "train_char_gpt", "evaluate_nats_per_char", "rnn_vs_transformer", "RnnVsTransformer",
           "sdpa_backend", "ScaleUpResult", "scale_up"]

POSITIONS = ("learned", "sinusoidal", "rope")


# --------------------------------------------------------------------------- heads, positions, masks

def split_heads(x: torch.Tensor, nh: int) -> torch.Tensor:
    """(N, T, E) -> (N, nh, T, hs): head h gets features h*hs .. (h+1)*hs - 1 of every token.

    ``nn.MultiheadAttention``'s layout.  A view then a transpose: the feature axis is cut into
    heads; the time axis is never mixed with the features.
    """
    N, T, E = x.shape
    if E % nh:
        raise ValueError(f"the width E={E} does not split into {nh} heads")
    x = x.view(N, T, nh, E // nh)       # (N, T, nh, hs)
    return x.transpose(1, 2)            # (N, nh, T, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, nh, T, hs) -> (N, T, E): the inverse of :func:`split_heads`."""
    N, nh, T, hs = x.shape
    x = x.transpose(1, 2)               # (N, T, nh, hs)
    return x.reshape(N, T, nh * hs)     # (N, T, E); reshape copies (the transpose is not contiguous)


def sinusoidal_positions(T: int, E: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(T, E) sinusoidal position codes (Vaswani et al. 2017, sec. 3.5), interleaved.

    ``PE[t, 2i] = sin(t / 10000^(2i/E))``, ``PE[t, 2i+1] = cos(t / 10000^(2i/E))``: even columns
    sine, odd columns cosine.  E must be even.
    """
    if E % 2:
        raise ValueError(f"sinusoidal positions need an even width, got E={E}")
    t = torch.arange(T, dtype=torch.float64, device=device)[:, None]                       # (T, 1)
    freq = 10000.0 ** (-torch.arange(0, E, 2, dtype=torch.float64, device=device) / E)     # (E/2,)
    pe = torch.empty(T, E, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(t * freq)                                                       # (T, E/2)
    pe[:, 1::2] = torch.cos(t * freq)
    return pe.to(dtype)


def apply_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoPE, Su et al. 2021) of queries or keys, interleaved pairs.

    Each pair ``(x[..., 2i], x[..., 2i+1])`` of a token at position t is rotated by the angle
    ``t * 10000^(-2i/hs)``.  The dot product of a rotated query (position t) with a rotated key
    (position s) then depends on t - s only: attention sees relative positions.

    Parameters
    ----------
    x : (N, nh, T, hs), hs even
    positions : (T,) integer positions of the T tokens

    Returns
    -------
    (N, nh, T, hs), same dtype
    """
    hs = x.shape[-1]
    freq = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64, device=x.device) / hs)   # (hs/2,)
    angle = positions.to(torch.float64)[:, None] * freq                                       # (T, hs/2)
    # A pair (a, b) is the complex number a + ib; rotating it by angle is multiplying by
    # e^(i angle) = cos + i sin:  (a cos - b sin) + i (a sin + b cos).  (Twice as fast as
    # writing the even and odd columns separately, forward and backward.)
    complex_dtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    rotation = torch.polar(torch.ones_like(angle), angle).to(complex_dtype)                  # (T, hs/2)
    pairs = x.float() if x.dtype not in (torch.float32, torch.float64) else x
    pairs = pairs.reshape(*x.shape[:-1], hs // 2, 2).contiguous()                             # (N, nh, T, hs/2, 2)
    rotated = torch.view_as_complex(pairs) * rotation                                         # (N, nh, T, hs/2)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)                                # (N, nh, T, hs)


def causal_mask(Tq: int, Tk: int, device=None) -> torch.Tensor:
    """(Tq, Tk) bool, True = may attend: query i (the last Tq of Tk positions) sees keys 0 .. Tk - Tq + i.

    With Tq = Tk the lower triangle.  With a cache (Tk - Tq earlier keys) every query also sees
    all the cached keys.  (``is_causal=True`` in ``F.scaled_dot_product_attention`` aligns the
    triangle to the top-left corner instead, which is wrong when Tq < Tk.)
    """
    q = torch.arange(Tq, device=device)[:, None] + (Tk - Tq)   # (Tq, 1) absolute query positions
    k = torch.arange(Tk, device=device)[None, :]               # (1, Tk)
    return k <= q                                              # (Tq, Tk)


# --------------------------------------------------------------------------- the model

class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: qkv projection, heads, scaled dot products, output projection.

    Parameters
    ----------
    n_embd : E;  n_head : nh (hs = E / nh);  dropout : on the attention weights and the output
    rope : rotate queries and keys (:func:`apply_rope`) by their positions

    Shape:
        forward(x (N, T, E), cache=None, need_weights=False) -> (y (N, T, E), weights (N, nh, T, Tk) or None).
        ``cache``: this layer's dict; its ``"k"`` / ``"v"`` (N, nh, T_cached, hs) are the earlier
        tokens' keys and values; the new ones are appended (along the time axis, dim 2) in place.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, rope: bool = False):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not a multiple of n_head={n_head}")
        self.n_head, self.dropout, self.rope = n_head, dropout, rope
        self.qkv = nn.Linear(n_embd, 3 * n_embd)    # rows [W_q; W_k; W_v], like in_proj_weight
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor, cache: Optional[dict] = None, need_weights: bool = False):
        N, T, E = x.shape
        q, k, v = self.qkv(x).split(E, dim=2)                      # 3 x (N, T, E)
        q, k, v = (split_heads(a, self.n_head) for a in (q, k, v))  # 3 x (N, nh, T, hs)
        past = cache_length([cache]) if cache is not None else 0    # tokens already in the cache
        if self.rope:
            positions = torch.arange(past, past + T, device=x.device)
            q, k = apply_rope(q, positions), apply_rope(k, positions)
        if cache is not None:
            if past:
                k = torch.cat([cache["k"], k], dim=2)               # (N, nh, Tk, hs), Tk = past + T
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:          # the manual path: the same numbers, and the weights to look at
            hs = q.shape[-1]
            scores = q @ k.transpose(-2, -1) / math.sqrt(hs)                          # (N, nh, T, Tk)
            scores = scores.masked_fill(~causal_mask(T, k.shape[2], x.device), -math.inf)
            weights = torch.softmax(scores, dim=-1)                                    # rows sum to 1
            y = F.dropout(weights, p, self.training) @ v                               # (N, nh, T, hs)
        elif past == 0:           # no cache before: the plain causal triangle, the fused kernel
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)   # (N, nh, T, hs)
        elif T == 1:              # one new token sees every cached key: no mask at all
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:                     # a chunk after a cache: all cached keys + causal within the chunk
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, k.shape[2], x.device),
                                               dropout_p=p)
        y = merge_heads(y)                                        # (N, T, E)
        return F.dropout(self.proj(y), p, self.training), weights


class MLP(nn.Module):
    """The position-wise feed-forward network: fc (E -> 4E), GELU (tanh approximation), proj (4E -> E)."""

    def __init__(self, n_embd: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))   # (N, T, E)


class Block(nn.Module):
    """A pre-norm Transformer block: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``.

    Its ``state_dict`` keys are the NumPy block's parameter names (ln1.weight, attn.qkv.weight,
    ..., mlp.proj.bias), so :func:`dlcourse.transformer.numpy_impl.block_forward` runs on them.

    Shape:
        forward(x (N, T, E), cache=None, need_weights=False) -> (x (N, T, E), weights or None)
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, rope: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, rope)
        self.ln2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: torch.Tensor, cache: Optional[dict] = None, need_weights: bool = False):
        a, weights = self.attn(self.ln1(x), cache, need_weights)
        x = x + a                       # the residual stream carries x; attention adds to it
        x = x + self.mlp(self.ln2(x))
        return x, weights


class GPT(nn.Module):
    """A decoder-only Transformer language model (GPT-2's layout, small).

    token embedding (+ positions) -> L pre-norm blocks -> final layer norm -> linear head.

    Parameters
    ----------
    vocab_size : V;  block_size : the longest sequence (positions 0 .. block_size - 1)
    n_layer, n_head, n_embd : L, nh, E
    pos : ``"learned"`` (a trained (block_size, E) table added to the token vectors),
        ``"sinusoidal"`` (the fixed table of :func:`sinusoidal_positions`, added) or ``"rope"``
        (nothing added; queries and keys rotated in every layer, :func:`apply_rope`)
    dropout : on the embeddings, attention weights and residual branches (0: none)
    tie_weights : the head reuses the token embedding matrix (V, E) (GPT-2 does)

    Weights start as GPT-2's: normal(0, 0.02), the residual projections (attn.proj, mlp.proj)
    scaled by 1/sqrt(2L), biases 0.

    Shape:
        forward(ids (N, T) int64, targets (N, T) or None, cache=None) -> (logits (N, T, V), loss or None).
        ``targets`` equal to -100 are not scored (``ignore_index``); the loss is the mean over the
        others.  ``cache`` (see :func:`new_cache`): the earlier tokens' keys and values; ids are
        then the next T tokens, at positions ``cache_length(cache)`` onwards.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 64,
                 pos: str = "learned", dropout: float = 0.0, tie_weights: bool = False):
        super().__init__()
        if pos not in POSITIONS:
            raise ValueError(f"pos must be one of {', '.join(POSITIONS)}, got {pos!r}")
        self.vocab_size, self.block_size, self.pos = vocab_size, block_size, pos
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        if pos == "learned":
            self.pos_emb = nn.Embedding(block_size, n_embd)
        elif pos == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_positions(block_size, n_embd), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(n_embd, n_head, dropout, rope=pos == "rope") for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
        if tie_weights:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def embed(self, ids: torch.Tensor, past: int = 0) -> torch.Tensor:
        """Token vectors plus (learned or sinusoidal) positions ``past .. past + T - 1``: (N, T, E)."""
        N, T = ids.shape
        if past + T > self.block_size:
            raise ValueError(f"positions up to {past + T - 1} do not fit block_size={self.block_size}")
        x = self.tok_emb(ids)                                                   # (N, T, E)
        if self.pos == "learned":
            x = x + self.pos_emb(torch.arange(past, past + T, device=ids.device))   # (T, E) broadcast
        elif self.pos == "sinusoidal":
            x = x + self.pos_table[past:past + T].to(x.dtype)
        return self.drop(x)

    def forward(self, ids: torch.Tensor, targets: Optional[torch.Tensor] = None,
                cache: Optional[list] = None):
        x = self.embed(ids, cache_length(cache))                    # (N, T, E)
        for layer, block in enumerate(self.blocks):
            x, _ = block(x, None if cache is None else cache[layer])
        logits = self.head(self.ln_f(x))                            # (N, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),  # (N*T, V)
                                   targets.reshape(-1), ignore_index=-100)
        return logits, loss


# --------------------------------------------------------------------------- the KV cache and generation

def new_cache(model: GPT) -> list:
    """An empty KV cache: one dict per layer, filled by ``model(ids, cache=cache)`` with "k" and "v"."""
    return [{} for _ in model.blocks]


def cache_length(cache: Optional[list]) -> int:
    """How many tokens' keys and values the cache holds (0 for None or empty)."""
    if not cache or "k" not in cache[0]:
        return 0
    return cache[0]["k"].shape[2]     # (N, nh, T_cached, hs)


def _next_token(logits: torch.Tensor, temperature: float, top_k: Optional[int], greedy: bool,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """(N, V) last-position logits -> (N, 1) next ids."""
    if greedy or temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]                    # (N, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)                                          # (N, V)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)                       # (N, 1)


@torch.no_grad()
def generate(model: GPT, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, greedy: bool = False, use_cache: bool = True,
             generator: Optional[torch.Generator] = None, return_logits: bool = False):
    """Extend ``ids`` (N, T) by ``max_new_tokens`` tokens, each fed back in.

    Without the cache every step runs the model on the whole sequence so far (its last
    ``block_size`` tokens) and keeps only the last position's logits: step t costs O(t) token
    passes.  With the cache (``use_cache=True``) the prompt is run once, its keys and values are
    kept per layer, and each step runs the model on the ONE new token, which attends to the
    cached keys: O(1) token passes per step (attention still reads t keys).  The two give the
    same logits (up to float rounding) and, greedy, the same tokens.  When the sequence outgrows
    ``block_size`` the cached path re-reads the last ``block_size`` tokens each step, exactly as
    the uncached path does.

    Parameters
    ----------
    model : a :class:`GPT` (run in eval mode here; its mode is restored)
    ids : (N, T) int64 prompt, or (T,)
    temperature : divides the logits (below 1 sharper, above 1 flatter); top_k : keep the k largest
    greedy : always the most likely token (temperature and top_k ignored)
    generator : a ``torch.Generator`` for the draws (CPU generators work on any device)
    return_logits : also return the (N, max_new_tokens, V) logits each step sampled from

    Returns
    -------
    (N, T + max_new_tokens) int64 (or (T + max_new_tokens,) for a 1-D prompt), and the logits if asked
    """
    squeeze = ids.dim() == 1
    ids = torch.as_tensor(ids, device=_model_device(model))
    ids = ids[None] if squeeze else ids                                  # (N, T)
    was_training = model.training
    model.eval()
    B = model.block_size
    cache = new_cache(model) if use_cache else None
    steps = []
    for _ in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(ids[:, -B:])                               # (N, min(T, B), V): all of it again
        elif cache_length(cache) == 0 or cache_length(cache) + 1 > B:
            cache = new_cache(model)                                     # (re)fill: the prompt, or a full window
            logits, _ = model(ids[:, -B:], cache=cache)
        else:
            logits, _ = model(ids[:, -1:], cache=cache)                  # (N, 1, V): only the newest token
        last = logits[:, -1]                                             # (N, V)
        if return_logits:
            steps.append(last)
        ids = torch.cat([ids, _next_token(last, temperature, top_k, greedy, generator)], dim=1)  # (N, T + 1)
    model.train(was_training)
    out = ids[0] if squeeze else ids
    if return_logits:
        return out, torch.stack(steps, dim=1) if steps else last.new_zeros(len(ids), 0, model.vocab_size)
    return out


def kv_cache_speedup(model: GPT, prompt_len: int, new_tokens: int, batch_size: int = 1, repeats: int = 3,
                     seed: int = 0) -> dict:
    """Seconds to generate ``new_tokens`` greedy tokens after a random prompt, with and without the cache.

    Returns
    -------
    dict: ``cached``, ``uncached`` (the fastest of ``repeats`` runs, seconds), ``speedup``
    (uncached / cached), ``same_tokens`` (the two outputs agree)

    Measured (``benchmarks/bench_transformer.py``: the char GPT, batch 1, 64 new tokens, CPU,
    one thread): prompt 32: 38 vs 77 ms (2.0x); 128: 43 vs 174 ms (4.1x); 512: 86 vs 499 ms
    (5.8x).  The saving grows with the length: without the cache step t re-reads t tokens.
    """
    device = _model_device(model)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.vocab_size, (batch_size, prompt_len), generator=g).to(device)
    best, outs = {}, {}
    for name, use_cache in (("cached", True), ("uncached", False)):
        times = []
        for _ in range(max(1, repeats)):
            _sync(device)
            t0 = time.perf_counter()
            outs[name] = generate(model, prompt, new_tokens, greedy=True, use_cache=use_cache)
            _sync(device)
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    return dict(cached=best["cached"], uncached=best["uncached"], speedup=best["uncached"] / best["cached"],
                same_tokens=bool(torch.equal(outs["cached"], outs["uncached"])))


@torch.no_grad()
def attention_maps(model: GPT, ids) -> torch.Tensor:
    """Every layer's and head's attention weights for one sequence.

    Parameters
    ----------
    ids : (T,) int64 token ids, T <= block_size

    Returns
    -------
    (L, nh, T, T) float tensor on the CPU: row i of [layer, head] is how query i spreads its
    attention over keys 0..i (each row sums to 1; zero above the diagonal)
    """
    ids = torch.as_tensor(ids, device=_model_device(model))[None]    # (1, T)
    was_training = model.training
    model.eval()
    x = model.embed(ids)
    maps = []
    for block in model.blocks:
        x, weights = block(x, need_weights=True)                       # weights (1, nh, T, T)
        maps.append(weights[0])
    model.train(was_training)
    return torch.stack(maps).float().cpu()                             # (L, nh, T, T)


# --------------------------------------------------------------------------- training

@dataclass
class GPTHistory(TrainHistory):
    """Chapter 04's :class:`~dlcourse.training.torch_impl.TrainHistory`, one record per evaluation.

    ``train_loss``: the mean training loss of the steps since the previous record (index 0: the
    untrained model's loss on the first batch); ``val_loss`` / ``val_acc``: what ``eval_fn``
    returned (NaN when it does not give one; e.g. held-out nats/char, or exact-match accuracy).
    Per record also ``times`` (seconds of training so far, evaluation excluded) and ``tokens``
    (input tokens trained on so far); ``updates`` counts optimizer steps.
    """

    times: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    final_val_loss: Optional[float] = None   # e.g. on the whole validation split, after training

    @property
    def steps(self) -> int:
        return self.updates[-1] if self.updates else 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens[-1] / self.times[-1] if self.times and self.times[-1] > 0 else float("nan")


def _lr_at(progress_made: float, lr: float, warmup: float, schedule: Optional[str], min_lr: float) -> float:
    """Linear warm-up over the first ``warmup`` share, then half a cosine down to ``min_lr * lr``."""
    if schedule is None:
        return lr
    if schedule != "cosine":
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    if progress_made < warmup:
        return lr * max(progress_made / warmup, 0.01)
    decay = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress_made - warmup) / max(1e-12, 1 - warmup))))
    return lr * (min_lr + (1 - min_lr) * decay)


def train_gpt(model: GPT, batch_fn: Callable, *, seconds: Optional[float] = None, steps: Optional[int] = None,
              lr: float = 3e-3, warmup: float = 0.05, schedule: Optional[str] = "cosine", min_lr: float = 0.0,
              weight_decay: float = 0.0, betas: tuple = (0.9, 0.99), clip: Optional[float] = 1.0, seed: int = 0,
              device: Optional[str] = None, progress: bool = True, callback: Optional[Callable] = None,
              eval_fn: Optional[Callable] = None, eval_every: Optional[float] = None,
              desc: str = "train_gpt") -> tuple[GPT, GPTHistory]:
    """Train ``model`` on batches from ``batch_fn`` for ``seconds`` (or exactly ``steps``) with AdamW.

    Each step: a batch ``x, y = batch_fn(rng)`` (int ids (N, T) and targets (N, T), -100 where a
    position is not scored), the cross-entropy, backward, gradient clipping by norm, an AdamW
    step.  The learning rate warms up linearly over the first ``warmup`` share of the budget,
    then falls along half a cosine to ``min_lr * lr`` (over the seconds, or the steps).

    Parameters
    ----------
    model : a :class:`GPT` (moved to ``device``, trained in place)
    batch_fn : ``batch_fn(rng: np.random.Generator) -> (x, y)``, arrays or tensors
    seconds : the time budget of the training steps (evaluation and the callback not counted)
    steps : train exactly this many steps instead (then runs with equal ``seed`` are equal on one device)
    lr, warmup, schedule, min_lr : the learning-rate schedule (``schedule=None``: constant ``lr``)
    weight_decay : AdamW's decoupled decay on weight matrices and embeddings (not biases, norms)
    betas : AdamW's; clip : ``clip_grad_norm_`` on all gradients together (None: off)
    seed : the batches (``np.random.default_rng(seed)``) and dropout
    device : default the model's
    eval_fn : ``eval_fn(model) -> float`` (a held-out loss) or ``dict(loss=..., acc=...)``, called
        in eval mode every ``eval_every`` seconds (or steps; default a tenth of the budget) and at the end
    progress : a tqdm bar;  callback : called with the history after each evaluation (``LiveLossPlot``)

    Returns
    -------
    model : trained, in eval mode;  history : :class:`GPTHistory`
    """
    device = torch.device(device) if device is not None else _model_device(model)
    budget = TrainingBudget(steps, seconds, eval_every, device=device, progress=progress, desc=desc)
    rng = np.random.default_rng(seed)
    history = GPTHistory()
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)

    def as_ids(a):
        return torch.as_tensor(a, dtype=torch.long).to(device, non_blocking=True)

    sum_loss, count, tokens = 0.0, 0, 0

    def record(first_batch=None):
        nonlocal sum_loss, count
        if first_batch is not None:           # before training: the untrained model on one batch
            with torch.no_grad():
                model.eval()
                history.train_loss.append(float(model(*first_batch)[1]))
        else:
            history.train_loss.append(sum_loss / max(count, 1))
        sum_loss, count = 0.0, 0
        result = eval_fn(model.eval()) if eval_fn is not None else None
        if isinstance(result, dict):
            history.val_loss.append(float(result.get("loss", math.nan)))
            history.val_acc.append(float(result.get("acc", math.nan)))
        else:
            history.val_loss.append(math.nan if result is None else float(result))
            history.val_acc.append(math.nan)
        history.updates.append(budget.updates)
        history.times.append(budget.trained)
        history.tokens.append(tokens)
        if history.val_loss[-1] < history.val_loss[history.best_epoch]:
            history.best_epoch = len(history.val_loss) - 1
        model.train()

    with _fork_rng(device):
        torch.manual_seed(seed)
        x, y = batch_fn(rng)
        record((as_ids(x), as_ids(y)))
        while budget.running():
            with budget.step():
                for group in opt.param_groups:
                    group["lr"] = _lr_at(budget.fraction, lr, warmup, schedule, min_lr)
                if budget.updates:                        # the first batch was drawn above
                    x, y = batch_fn(rng)
                x, y = as_ids(x), as_ids(y)               # (N, T), (N, T)
                _, loss = model(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                sum_loss += float(loss.detach())          # float() waits for the device
                count += 1
                tokens += x.numel()
            if budget.eval_due():
                record()
                post = dict(train=f"{history.train_loss[-1]:.3f}")
                if not math.isnan(history.val_loss[-1]):
                    post["val"] = f"{history.val_loss[-1]:.3f}"
                if not math.isnan(history.val_acc[-1]):
                    post["acc"] = f"{history.val_acc[-1]:.4f}"
                budget.postfix(post)
                if callback is not None:
                    callback(history)
        budget.close()
    history.seconds = budget.trained
    model.eval()
    return model, history


# --------------------------------------------------------------------------- the character model

@torch.no_grad()
def evaluate_nats_per_char(model: GPT, ids, block_size: Optional[int] = None, stride: Optional[int] = None,
                           batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per character) of ``model`` predicting each next character of ``ids``.

    A GPT sees at most ``block_size`` characters, so the text is read in overlapping windows
    (a sliding window): windows of ``block_size`` inputs start every ``stride`` characters
    (default ``block_size // 2``); the first window scores all its predictions, every later one
    only the predictions not scored yet (its last ``stride``), so each of the M - 1 predictions
    is scored exactly once and, apart from the first window's, with at least
    ``block_size - stride + 1`` characters of context (at most ``block_size``).  The last
    window ends at the end of the text.  Eval mode, no gradients; the mode is restored.

    Compared with chapter 06's LSTM (:func:`dlcourse.rnn.torch_impl.evaluate_nats_per_char`),
    which carries its state through the whole text (an unbounded, but fading, context), the
    GPT here has a context of ``block_size / 2`` to ``block_size`` characters; with
    non-overlapping windows (``stride = block_size``) the first characters of every window
    would see almost no context and the score would be worse than the model is.

    Parameters
    ----------
    model : a :class:`GPT`;  ids : (M,) int ids, e.g. ``corpus.val``
    block_size : the window (default the model's);  stride : how far windows move

    Returns
    -------
    float: the sum of ``-ln p(next character)`` over the M - 1 predictions, divided by M - 1
    """
    device = _model_device(model)
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    M = len(ids)
    if M < 2:
        raise ValueError("need at least two characters to score a prediction")
    B = min(block_size or model.block_size, M - 1)
    stride = stride or max(1, B // 2)
    if not 0 < stride <= B:
        raise ValueError(f"stride must be in 1..{B}, got {stride}")
    starts = list(range(0, M - 1 - B + 1, stride))
    if starts[-1] != M - 1 - B:
        starts.append(M - 1 - B)                                        # the last window ends at the end
    first_scored = [0] + [prev + B - st for prev, st in zip(starts[:-1], starts[1:])]  # window offsets
    was_training = model.training
    model.eval()
    nats = 0.0
    for begin in range(0, len(starts), batch_size):
        st = torch.tensor(starts[begin:begin + batch_size])                       # (n,)
        rows = st[:, None] + torch.arange(B + 1)[None]                            # (n, B + 1)
        window = ids[rows].to(device)
        logits, _ = model(window[:, :-1])                                         # (n, B, V)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), window[:, 1:], reduction="none")  # (n, B)
        skip = torch.tensor(first_scored[begin:begin + batch_size], device=device)  # (n,)
        scored = torch.arange(B, device=device)[None] >= skip[:, None]            # (n, B)
        nats += float(nll[scored].sum())
    model.train(was_training)
    return nats / (M - 1)


# The course's character GPT (see train_char_gpt's docstring for the measurements: 1.23 / 1.22 nats/char
# in 60 s on seeds 0 / 1, CPU, one thread).
CHAR_GPT = dict(n_layer=2, n_head=4, n_embd=64, block_size=64, batch_size=32, lr=1e-2, warmup=0.05, min_lr=0.1,
                pos="rope", tie_weights=False, weight_decay=0.0)


def char_gpt(vocab_size: int, seed: int = 0, **overrides) -> GPT:
    """A new :class:`GPT` with the :data:`CHAR_GPT` architecture (``overrides`` replace entries)."""
    cfg = {**CHAR_GPT, **overrides}
    with _fork_rng("cpu"):
        torch.manual_seed(seed)
        return GPT(vocab_size, cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"], pos=cfg["pos"],
                   dropout=cfg.get("dropout", 0.0), tie_weights=cfg["tie_weights"])


def char_batches(data, batch_size: int, block_size: int) -> Callable:
    """``batch_fn`` for :func:`train_gpt`: ``batch_size`` random windows of ``block_size + 1`` characters
    of ``data`` (M,), as inputs (N, T) and next characters (N, T)."""
    data = torch.as_tensor(np.asarray(data), dtype=torch.long)
    if len(data) < block_size + 2:
        raise ValueError(f"{len(data):,} characters are too few for windows of {block_size}")

    def batch_fn(rng: np.random.Generator):
        starts = torch.from_numpy(rng.integers(0, len(data) - block_size - 1, batch_size))
        xy = data[starts[:, None] + torch.arange(block_size + 1)[None]]     # (N, T + 1)
        return xy[:, :-1], xy[:, 1:]
    return batch_fn


def train_char_gpt(corpus, *, seconds: Optional[float] = 60.0, steps: Optional[int] = None, seed: int = 0,
                   device: Optional[str] = None, model: Optional[GPT] = None, eval_every: Optional[float] = None,
                   eval_chars: Optional[int] = 20_000, progress: bool = True, callback: Optional[Callable] = None,
                   **overrides) -> tuple[GPT, GPTHistory]:
    """Train the character GPT (:data:`CHAR_GPT`, ``overrides`` replace entries) on ``corpus.train``.

    Random windows of ``block_size + 1`` characters (:func:`char_batches`), :func:`train_gpt`
    (AdamW, warm-up then cosine to 0 over the budget, clipping at 1).  During training the first
    ``eval_chars`` validation characters are scored (:func:`evaluate_nats_per_char`); at the end
    the whole validation split (``history.final_val_loss``).

    Parameters
    ----------
    corpus : a :class:`dlcourse.data.TextCorpus` (chapter 06's ``load_text_corpus()``)
    seconds / steps : the budget (see :func:`train_gpt`; ``steps`` wins when given);  seed : weights, windows
    device : default ``dlcourse.device()``;  model : train this one instead of a new one
    overrides : n_layer, n_head, n_embd, block_size, batch_size, lr, warmup, pos, tie_weights,
        weight_decay, dropout, min_lr

    Returns
    -------
    model (eval mode), history (:class:`GPTHistory`; ``final_val_loss`` in nats/char)

    Measured on ``load_text_corpus()`` (Python 3.11.7, sha256 4118e5d6...), CPU, one thread
    (the 2-core course machine, other jobs light), the defaults (2 layers, width 64, 4 heads,
    rotary positions, windows of 64, batch 32, AdamW 1e-2, 5 % warm-up, cosine to 1e-3), whole
    validation split, against chapter 06's LSTM (``train_char_lm`` defaults) for the same 60 s
    on the same machine state:

    =======  =================================  =================================
    60 s     GPT: val nats/char at 10/20/30/    LSTM: at 10/20/30/45/60 s
             45/60 s of its 60-s run
    =======  =================================  =================================
    seed 0   1.848, 1.540, 1.406, 1.279, 1.230  1.444, 1.295, 1.225, 1.144, 1.124
    seed 1   1.749, 1.518, 1.379, 1.274, 1.220  1.451, 1.309, 1.235, 1.166, 1.145
    =======  =================================  =================================

    With a 30-s budget (its own schedule): 1.413 / 1.333 (seeds 0 / 1; the LSTM 1.195 / 1.206,
    chapter 06): the goal of 1.30 needs 45-60 s.

    The GPT trains faster per character (55k characters/s, 1,600 steps of 2,048; the LSTM
    34-38k, 2,000-2,250 steps of 1,024) but learns less per step: at this budget the LSTM
    wins at every point of the curve.  Its recurrence is a strong prior for text read in order;
    the Transformer must learn from data how to use positions (and pays for attention over 64
    characters).  Chosen by tuning at equal steps (900, seed 0; nats/char on the whole
    validation split): learned positions 1.50, rotary 1.36 (sinusoidal not measured)
    (the largest single gain); lr 6e-3 1.39, 1.5e-2 1.37 (2e-2 with learned positions: stuck at 2.4 after 30 s); cosine to 0.1 x lr
    1.35 (to 0: 1.36); warm-up 10 % 1.36; 8 heads 1.35 (slower), 2 heads 1.42; 3 layers 1.33 but
    30 % slower per step; windows of 128 (batch 16) 1.42; width 128 (learned positions, 30 s)
    2.05-2.20: 3x slower per token, too few steps; weight tying 1.51 vs 1.48 (30 s, learned positions).
    """
    from dlcourse.runtime import device as best_device
    cfg = {**CHAR_GPT, **overrides}
    device = device or (str(_model_device(model)) if model is not None else best_device())
    model = char_gpt(corpus.vocab_size, seed, **cfg) if model is None else model
    val = np.asarray(corpus.val)[:eval_chars] if eval_chars else np.asarray(corpus.val)
    model, history = train_gpt(
        model.to(device), char_batches(corpus.train, cfg["batch_size"], model.block_size),
        seconds=None if steps is not None else seconds, steps=steps, lr=cfg["lr"], warmup=cfg["warmup"], min_lr=cfg.get("min_lr", 0.0),
        weight_decay=cfg["weight_decay"], seed=seed, device=device, progress=progress, callback=callback,
        eval_fn=lambda m: evaluate_nats_per_char(m, val), eval_every=eval_every,
        desc=f"char GPT {model.n_layer}x{model.n_embd}")
    history.final_val_loss = evaluate_nats_per_char(model, corpus.val)
    return model, history


# --------------------------------------------------------------------------- RNN vs Transformer

@dataclass
class RnnVsTransformer:
    """What :func:`rnn_vs_transformer` measured.

    ``char``: per model ("lstm", "gpt") a dict of ``val`` (nats/char on the first ``eval_chars``
    validation characters, each model's own fair evaluation), ``chars_per_second`` (training),
    ``steps``, ``seconds``; ``recall``: per model the accuracy on the recall task at each lag in
    ``lags`` and ``recall_seconds`` (training time per model and lag); ``chance`` of the recall task.
    """
    seconds: float
    char: dict
    lags: tuple
    recall: dict
    recall_seconds: dict
    chance: float
    generation: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict, repr=False)   # the two character models: "lstm", "gpt"

    def table(self) -> str:
        lines = [f"character model, {self.seconds:g} s of training each:",
                 f"{'':8}{'val nats/char':>15}{'chars/s':>11}{'steps':>7}"]
        for name, r in self.char.items():
            lines.append(f"{name:8}{r['val']:15.3f}{r['chars_per_second']:11,.0f}{r['steps']:7d}")
        lines.append(f"recall the first symbol after `lag` noise steps (chance {self.chance:.1%}):")
        lines.append("lag     " + "".join(f"{name:>10}" for name in self.recall))
        for i, lag in enumerate(self.lags):
            lines.append(f"{lag:<8}" + "".join(f"{self.recall[name][i]:10.1%}" for name in self.recall))
        if self.generation:
            lines.append("generating characters one at a time (batch 1):")
            for name in ("lstm", "gpt"):
                g = self.generation[name]
                lines.append(f"{name:8}{g['ms_per_token']:6.2f} ms/char, memory carried: {g['floats']:,} floats "
                             f"({g['memory_rule']})")
        return "\n".join(lines)


def _recall_accuracy(kind: str, lag: int, steps: int, batch_size: int, seed: int, symbols: int = 8,
                     noise: int = 4, n_test: int = 1000, device="cpu") -> tuple[float, float]:
    """Train an LSTM (chapter 06's recall model) or a 1-layer GPT on the recall task; (accuracy, seconds)."""
    from dlcourse.rnn.torch_impl import _Recall, memory_task_batch
    vocab = symbols + noise + 1
    test_x, test_y = memory_task_batch(n_test, lag, symbols, noise, np.random.default_rng(10_000 + seed))
    test_x, test_y = torch.as_tensor(test_x, device=device), torch.as_tensor(test_y, device=device)
    with _fork_rng(device):
        torch.manual_seed(seed)
        if kind == "lstm":
            model = _Recall("lstm", vocab, symbols, 32).to(device)
            lr = 1e-2
        else:
            model = GPT(vocab, lag + 2, n_layer=1, n_head=1, n_embd=32, pos="learned").to(device)
            lr = 3e-3
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        for _ in range(steps):
            x, y = memory_task_batch(batch_size, lag, symbols, noise, rng)
            x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
            if kind == "lstm":
                loss = F.cross_entropy(model(x), y)
            else:
                targets = torch.full_like(x, -100)
                targets[:, -1] = y                               # only the last position answers
                _, loss = model(x, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        _sync(device)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            model.eval()
            out = model(test_x) if kind == "lstm" else model(test_x)[0][:, -1, :symbols]   # (n, K)
            accuracy = float((out.argmax(-1) == test_y).float().mean())
    return accuracy, seconds


def rnn_vs_transformer(corpus=None, *, seconds: float = 4.0, lags: Sequence[int] = (10, 30, 60),
                       recall_steps: int = 200, recall_batch: int = 64, eval_chars: int = 20_000, seed: int = 0,
                       gen_tokens: int = 200,
                       device: Optional[str] = "cpu", progress: bool = False) -> RnnVsTransformer:
    """Chapter 06's LSTM and this chapter's GPT, measured on the same data.

    1. **Character model at equal training time**: chapter 06's ``train_char_lm`` (its defaults)
       and :func:`train_char_gpt` (:data:`CHAR_GPT`) for ``seconds`` each on ``corpus``; each is
       scored on the first ``eval_chars`` validation characters by its own evaluation (the LSTM
       carries its state, the GPT reads sliding windows), with the training characters per second.
    2. **A long-range dependency**: chapter 06's recall task (remember the first symbol through
       ``lag`` noise steps), ``recall_steps`` Adam steps on batches of ``recall_batch`` for each
       model at each lag (chapter 06's settings): the LSTM (32 units, forget bias 1) must carry the symbol in its state through every step; a
       one-layer, one-head GPT (width 32, learned positions) attends to position 0 directly.
    3. **Generating**: ``gen_tokens`` characters one at a time after a prompt (chapter 06's
       ``sample`` for the LSTM; :func:`generate` with the KV cache, within the block, for the GPT).

    Returns
    -------
    :class:`RnnVsTransformer` (``.table()`` prints it; ``.models`` holds the two character models)

    Measured (the defaults, CPU, one thread, 21-22 s in all), seeds 0 / 1:

    ====================================  ===================  ===================
                                          LSTM                 GPT
    ====================================  ===================  ===================
    val nats/char after 4 s               1.91 / 1.80          2.63 / 2.43
    training characters/s                 29k / 38k            42k / 51k
    recall at lag 10 / 30 / 60            100 / 11 / 13 %      100 / 100 / 100 %
    ms per generated character            0.49 / 0.57          0.59 / 0.60
    floats carried while generating       512 (fixed)          16,384 at T = 64 (grows)
    ====================================  ===================  ===================

    (At 60 s: LSTM 1.12 / 1.15, GPT 1.23 / 1.22 nats/char; see :func:`train_char_gpt`.)  The
    LSTM wins on small budgets and in memory per generated token; the GPT reads faster in
    training, and wins clearly on the long-range recall, which the LSTM cannot learn at lag 30
    within 200 steps (chapter 06: it fails from lag 15-20 on) while attention reaches
    position 0 from any distance in one step.
    """
    from dlcourse.data import load_text_corpus
    from dlcourse.rnn import torch_impl as rnn
    corpus = load_text_corpus() if corpus is None else corpus
    val = np.asarray(corpus.val)[:eval_chars]
    char = {}
    lstm, h = rnn.train_char_lm(corpus, seconds=seconds, seed=seed, device=device, progress=progress,
                                eval_every=seconds, eval_chars=1000)
    char["lstm"] = dict(val=rnn.evaluate_nats_per_char(lstm, val), chars_per_second=h.chars_per_second,
                        steps=h.updates[-1], seconds=h.times[-1])
    gpt, h = train_char_gpt(corpus, seconds=seconds, seed=seed, device=device, progress=progress,
                            eval_every=seconds, eval_chars=1000)
    char["gpt"] = dict(val=evaluate_nats_per_char(gpt, val), chars_per_second=h.tokens_per_second,
                       steps=h.steps, seconds=h.seconds)
    lags = tuple(int(v) for v in lags)
    recall = {"lstm": [], "gpt": []}
    recall_seconds = {"lstm": [], "gpt": []}
    for lag in lags:
        for kind in recall:
            acc, sec = _recall_accuracy(kind, lag, recall_steps, recall_batch, seed, device=device)
            recall[kind].append(acc)
            recall_seconds[kind].append(sec)
    generation = dict(tokens=gen_tokens)
    prompt = "def "
    t0 = time.perf_counter()
    rnn.sample(lstm, corpus, prompt, gen_tokens, seed=seed)
    H, L = lstm.hidden, lstm.layers
    generation["lstm"] = dict(ms_per_token=(time.perf_counter() - t0) * 1e3 / gen_tokens, floats=2 * L * H,
                              memory_rule="h and c: 2 x L x H, whatever the length", tokens=gen_tokens)
    ids = torch.as_tensor(corpus.encode(prompt), device=_model_device(gpt))
    n = min(gen_tokens, gpt.block_size - len(ids))             # within the block: the cache only grows
    t0 = time.perf_counter()
    generate(gpt, ids, n, generator=torch.Generator().manual_seed(seed))
    generation["gpt"] = dict(ms_per_token=(time.perf_counter() - t0) * 1e3 / n,
                             floats=2 * gpt.n_layer * gpt.block_size * gpt.n_embd,
                             memory_rule=f"k and v: 2 x L x T x E at T = {gpt.block_size}, growing with T",
                             tokens=n)
    return RnnVsTransformer(seconds, char, lags, recall, recall_seconds, 1 / 8, generation,
                            models={"lstm": lstm, "gpt": gpt})


# --------------------------------------------------------------------------- fused attention kernels, GPUs

def sdpa_backend(device="cpu", dtype=torch.float32, T: int = 128, hs: int = 16, nh: int = 4) -> dict:
    """Which kernels ``F.scaled_dot_product_attention`` can run here, and which one it picks.

    Each backend of ``torch.nn.attention.SDPBackend`` is tried alone (``sdpa_kernel``) on a
    causal (2, nh, T, hs) problem; the default call uses the first of them in torch's priority
    order (flash attention, then memory-efficient, then the plain "math" composition of matmul,
    softmax, matmul).  Measured with torch 2.13: on the CPU, flash attention (a fused CPU kernel,
    ``_scaled_dot_product_flash_attention_for_cpu``) and math run, for float32, float64 and
    bfloat16.  On CUDA (not measured here: no GPU was lent) torch's rules make flash attention
    need half precision (bfloat16 / float16), so a float32 model gets the memory-efficient kernel
    and :func:`scale_up`'s bfloat16 autocast gets flash attention.

    Returns
    -------
    dict: ``available`` (names of the backends that ran), ``used`` (the one the default call
    picks), ``device``, ``dtype``
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, nh, T, hs, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    available = []
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with warnings.catch_warnings():   # "... not available because ..." warnings: the reason is the result
                warnings.simplefilter("ignore")
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True)
            _sync(device)
            available.append(name)
        except RuntimeError:   # "No available kernel": this backend does not run here
            pass
    try:
        order = [SDPBackend(int(i)).name for i in torch._C._get_sdp_priority_order()]
    except (AttributeError, ValueError):  # a torch without the (private) priority list
        order = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
    used = next((name for name in order if name in available), "MATH")
    return dict(available=available, used=used, device=str(device), dtype=str(dtype).removeprefix("torch."))


@dataclass
class ScaleUpResult:
    """What :func:`scale_up` measured (training steps only, no evaluation)."""
    device: str
    model: str
    cpu_tokens_per_second: Optional[float]
    device_tokens_per_second: float
    val_nats_per_char: float
    seconds: float
    sdpa: dict
    history: GPTHistory = field(repr=False, default=None)

    @property
    def speedup(self) -> Optional[float]:
        if self.cpu_tokens_per_second is None:
            return None
        return self.device_tokens_per_second / self.cpu_tokens_per_second


def _cpu_tokens_per_second(model: GPT, batch_size: int, steps: int) -> float:
    model = copy.deepcopy(model).cpu().float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, model.vocab_size, (batch_size, model.block_size + 1))
    seconds = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        _, loss = model(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - t0)
    return batch_size * model.block_size / float(np.median(seconds[1:]))


def scale_up(corpus=None, *, n_layer: int = 6, n_head: int = 6, n_embd: int = 384, block_size: int = 256,
             batch_size: int = 64, seconds: float = 60.0, lr: float = 1e-3, dropout: float = 0.1,
             pos: str = "rope", cpu_steps: int = 2, seed: int = 0, device: Optional[str] = None,
             run_on_cpu: bool = False, progress: bool = False) -> Optional[ScaleUpResult]:
    """The character GPT, larger (nanoGPT's Shakespeare size), trained on a GPU in bfloat16 autocast.

    Without a GPU this does nothing (it prints why and returns None) unless ``run_on_cpu``.
    The CPU rate is the median of ``cpu_steps`` timed float32 steps (after a warm-up step) at the
    course's thread setting.  On CUDA the forward pass runs under ``torch.autocast(bfloat16)``
    (the weights and AdamW stay float32) and attention uses a fused kernel (:func:`sdpa_backend`
    names it).

    Returns
    -------
    ScaleUpResult, or None when skipped
    """
    from dlcourse.data import load_text_corpus
    from dlcourse.runtime import scale_up_device
    device = scale_up_device(device, run_on_cpu)
    if device is None:
        return None
    corpus = load_text_corpus() if corpus is None else corpus
    model = char_gpt(corpus.vocab_size, seed, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     block_size=block_size, pos=pos, dropout=dropout)
    name = f"GPT {n_layer} x {n_embd} ({n_head} heads, {pos}), {model.num_params():,} parameters"
    print(f"{name}; batch {batch_size} x {block_size} characters")
    cpu_rate = None
    if cpu_steps > 0:
        cpu_rate = _cpu_tokens_per_second(model, batch_size, cpu_steps)
        print(f"  cpu ({torch.get_num_threads()} thread(s)): {cpu_rate:12,.0f} tokens/s")
    cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    sdpa = sdpa_backend(device, dtype, T=block_size, hs=n_embd // n_head, nh=n_head)
    print(f"  attention on {device} ({sdpa['dtype']}): {sdpa['used']} (backends that run: "
          f"{', '.join(sdpa['available'])})")
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cuda):
        model, history = train_char_gpt(corpus, model=model.to(device), seconds=seconds, seed=seed, device=device,
                                        batch_size=batch_size, lr=lr, warmup=0.05, progress=progress,
                                        eval_chars=20_000)
    rate = history.tokens_per_second
    print(f"  {device}: {rate:12,.0f} tokens/s over {history.seconds:.0f} s of training "
          f"({history.tokens[-1]:,} tokens); validation {history.final_val_loss:.3f} nats/char")
    result = ScaleUpResult(str(device), name, cpu_rate, rate, history.final_val_loss, history.seconds, sdpa, history)
    if result.speedup is not None:
        print(f"  {device} is {result.speedup:.0f}x faster than the CPU")
    return result
