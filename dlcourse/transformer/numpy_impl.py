"""Attention by hand in NumPy: scaled dot-product attention, heads, layer norm, positions.

Scaled dot-product attention (Vaswani et al. 2017) lets every query position read a
weighted average of the values, the weights coming from how well its query matches each
key::

    S = q @ k^T * scale                      # scores    (..., Tq, Tk), scale = 1/sqrt(hs)
    S[~mask] = -inf                          # a masked key gets weight exactly 0
    P = softmax(S, axis=-1)                  # weights   (..., Tq, Tk), each row sums to 1
    out = P @ v                              # output    (..., Tq, hv)

    out, cache = attention_forward(q, k, v, mask=causal_mask(T))
    dq, dk, dv = attention_backward(dout, cache)

Why the scale: with unit-variance entries, a dot product of two hs-long vectors has
variance hs, so unscaled scores grow like sqrt(hs); the softmax of large scores is almost
one-hot and its gradient almost zero.  Dividing by sqrt(hs) keeps the scores near unit
variance whatever the head size.

Masks are boolean with True = "may attend" (the convention of
``F.scaled_dot_product_attention``'s boolean ``attn_mask``; ``nn.MultiheadAttention``'s
``attn_mask`` and ``key_padding_mask`` mean the opposite, True = blocked).  A query row
whose every key is masked has no softmax: it is a ``ValueError``, never NaN.

Heads use ``nn.MultiheadAttention``'s layout: the E output features of a projection are
cut into nh contiguous blocks of hs, ``(N, T, E) -> (N, T, nh, hs) -> (N, nh, T, hs)``.

Dimension letters (the course glossary)
---------------------------------------
N    batch size
T    time steps (sequence length); Tq queries, Tk keys and values
E    model width (embedding size), E = nh * hs
nh   number of heads
hs   head size (the width of one head's queries and keys); hv the width of the values
V    vocabulary size
L    layers
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "softmax", "softmax_backward", "causal_mask", "padding_mask",
    "attention_scores", "AttentionCache", "attention_forward", "attention_backward",
    "attention_backward_stages", "attention_weights",
    "split_heads", "merge_heads",
    "LayerNormCache", "layer_norm_forward", "layer_norm_backward",
    "sinusoidal_positions", "apply_rotary", "apply_rotary_backward",
    "gelu", "gelu_backward", "linear_forward", "linear_backward",
    "params_from_torch", "MHA_KEYS", "MhaCache", "mha_forward", "mha_backward",
    "BLOCK_KEYS", "init_block_params", "BlockCache", "block_forward", "block_backward",
]


# --------------------------------------------------------------------------- softmax and masks

def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis``, stable: the max is subtracted first.

    ``-inf`` entries get probability exactly 0.  Keeps the dtype of a floating ``x``.

    Parameters
    ----------
    x : ndarray of any shape (...), e.g. scores (..., Tq, Tk)

    Returns
    -------
    p : ndarray shaped like ``x``, summing to 1 along ``axis``
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    z = x - np.max(x, axis=axis, keepdims=True)   # exp(<= 0) never overflows; softmax is shift-invariant
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_(s: np.ndarray) -> np.ndarray:
    """In-place softmax over the last axis of an array we own (the scores): no new (.., Tq, Tk) arrays."""
    s -= np.fmax.reduce(s, axis=-1, keepdims=True)           # the row max (fmax skips .max()'s NaN checks: faster)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def softmax_backward(dp: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Gradient through ``p = softmax(s)`` over the last axis: ``ds = p * (dp - sum(dp * p))``.

    The Jacobian is ``dp_i/ds_j = p_i (delta_ij - p_j)``; applied to ``dp`` it gives
    ``ds_j = p_j (dp_j - sum_i dp_i p_i)``.  Where ``p`` is 0 (a masked key), ``ds`` is 0.

    Parameters
    ----------
    dp : ndarray of shape (..., Tk), the gradient with respect to ``p``
    p : ndarray of shape (..., Tk), the softmax output

    Returns
    -------
    ds : ndarray of shape (..., Tk), the gradient with respect to the softmax input
    """
    return p * (dp - np.sum(dp * p, axis=-1, keepdims=True))


def causal_mask(T: int, Tk: Optional[int] = None) -> np.ndarray:
    """Boolean (T, Tk) mask, True where query t may attend to key j: ``j <= t + (Tk - T)``.

    With ``Tk = T`` (the default) it is the lower triangle, diagonal included: every
    position sees itself and the past, never the future.  With ``Tk > T`` the T queries are
    the *last* T positions of a Tk-long sequence (generation with a key/value cache).

    Returns
    -------
    mask : ndarray of bool, shape (T, Tk)
    """
    Tk = T if Tk is None else Tk
    if Tk < T:
        raise ValueError(f"a causal mask needs Tk >= T (the queries are the last T positions), got T={T}, Tk={Tk}")
    return np.tril(np.ones((T, Tk), dtype=bool), k=Tk - T)


def padding_mask(lengths: Sequence[int], T: int) -> np.ndarray:
    """Boolean key mask for a padded batch, True on each sequence's real keys (``j < lengths[n]``).

    Shaped (N, 1, 1, T) so that it broadcasts against multi-head scores (N, nh, Tq, T):
    the same keys are hidden from every head and every query.  For single-head scores
    (N, Tq, T) take ``padding_mask(lengths, T)[:, 0]``, shape (N, 1, T).  Combine with a
    causal mask by ``&``: ``padding_mask(lengths, T) & causal_mask(T)`` is (N, 1, T, T).

    Parameters
    ----------
    lengths : N ints in [1, T], the real length of each sequence
    T : padded length

    Returns
    -------
    mask : ndarray of bool, shape (N, 1, 1, T)
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be a 1-d sequence of N lengths, got shape {lengths.shape}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [1, {T}] (a length-0 sequence leaves nothing to attend to), "
                         f"got {lengths.tolist()}")
    mask = np.arange(T)[None, :] < lengths[:, None]          # (N, T)
    return mask[:, None, None, :]                            # (N, 1, 1, T)


# --------------------------------------------------------------------------- scaled dot-product attention

def _check_mask(mask: np.ndarray, scores_shape: tuple) -> np.ndarray:
    """The mask as a bool array broadcastable to the scores; a ValueError names a row with no key left."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
    try:
        np.broadcast_shapes(mask.shape, scores_shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to the scores {scores_shape}") from None
    if scores_shape[-1] > 0:
        dead = ~mask.any(axis=-1, keepdims=True)                 # rows of the mask with no key allowed
        if dead.any():
            dead = np.broadcast_to(dead, scores_shape[:-1] + (1,))
            row = tuple(int(i) for i in np.argwhere(dead)[0][:-1])
            raise ValueError(f"query row {row} of the scores {scores_shape} has every key masked: "
                             f"its softmax is undefined (0/0); give every query at least one key")
    return mask


def attention_scores(q: np.ndarray, k: np.ndarray, mask: Optional[np.ndarray] = None,
                     scale: Optional[float] = None) -> np.ndarray:
    """Scaled scores ``q @ k^T * scale``, with masked entries set to ``-inf``.

    Parameters
    ----------
    q : ndarray of shape (..., Tq, hs), e.g. (N, Tq, hs) or (N, nh, Tq, hs)
    k : ndarray of shape (..., Tk, hs)
    mask : bool ndarray broadcastable to (..., Tq, Tk), True = may attend; None attends everywhere
    scale : multiplier of the dot products; None means 1/sqrt(hs)

    Returns
    -------
    scores : ndarray of shape (..., Tq, Tk)
    """
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2))             # (..., Tq, Tk), one batched product
    scores *= scale
    if mask is not None:
        mask = _check_mask(mask, scores.shape)
        np.copyto(scores, -np.inf, where=~mask)              # -inf: exp(-inf) = 0, the key gets no weight
    return scores


class AttentionCache(NamedTuple):
    q: np.ndarray        # (..., Tq, hs)
    k: np.ndarray        # (..., Tk, hs)
    v: np.ndarray        # (..., Tk, hv)
    weights: np.ndarray  # (..., Tq, Tk) the softmax P; 0 on masked keys (for heat maps)
    scale: float


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Optional[np.ndarray] = None,
                      scale: Optional[float] = None) -> tuple[np.ndarray, AttentionCache]:
    """Scaled dot-product attention: ``softmax(q @ k^T * scale, masked) @ v``.

    Equal to ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)``.
    Any leading dimensions: (N,) for one head, (N, nh) for multi-head; q, k and v share them.

    Parameters
    ----------
    q : ndarray of shape (..., Tq, hs)
    k : ndarray of shape (..., Tk, hs)
    v : ndarray of shape (..., Tk, hv)
    mask : bool ndarray broadcastable to (..., Tq, Tk), True = may attend (``causal_mask(T)``,
        ``padding_mask(lengths, T)``, or both combined by ``&``); None attends everywhere
    scale : None means 1/sqrt(hs)

    Returns
    -------
    out : ndarray of shape (..., Tq, hv)
    cache : AttentionCache; ``cache.weights`` (..., Tq, Tk) are the attention weights
    """
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = attention_scores(q, k, mask, scale)              # (..., Tq, Tk)
    weights = _softmax_(scores)                               # (..., Tq, Tk), in place: the scores are ours
    out = np.matmul(weights, v)                               # (..., Tq, hv) weighted average of the values
    return out, AttentionCache(q, k, v, weights, scale)


def attention_backward_stages(dout: np.ndarray, cache: AttentionCache) -> dict[str, np.ndarray]:
    """Backward through attention, every stage named (read from the output back to q, k, v).

    ========== ============== ================================================
    stage      shape          local derivative
    ========== ============== ================================================
    dv         (..., Tk, hv)  out = P @ v, so dv = P^T @ dout
    dweights   (..., Tq, Tk)  out = P @ v, so dP = dout @ v^T
    dscores    (..., Tq, Tk)  P = softmax(S): dS = P * (dP - sum(dP * P, -1))
    dq         (..., Tq, hs)  S = q @ k^T * scale, so dq = dS @ k * scale
    dk         (..., Tk, hs)  and dk = dS^T @ q * scale
    ========== ============== ================================================

    A masked key has P = 0, so its dscores entry is exactly 0, and it passes no gradient
    to q or k (the -inf was a constant).

    Parameters
    ----------
    dout : ndarray of shape (..., Tq, hv)
    cache : from ``attention_forward``

    Returns
    -------
    stages : dict with ``dv``, ``dweights``, ``dscores``, ``dq``, ``dk``
    """
    q, k, v, P, scale = cache
    dv = np.matmul(np.swapaxes(P, -1, -2), dout)              # (..., Tk, hv)
    dweights = np.matmul(dout, np.swapaxes(v, -1, -2))        # (..., Tq, Tk)
    dscores = softmax_backward(dweights, P)                   # (..., Tq, Tk), 0 where P = 0
    dq = np.matmul(dscores, k)                                # (..., Tq, hs)
    dq *= scale                                               # the scale multiplied the scores
    dk = np.matmul(np.swapaxes(dscores, -1, -2), q)           # (..., Tk, hs)
    dk *= scale
    return {"dv": dv, "dweights": dweights, "dscores": dscores, "dq": dq, "dk": dk}


def attention_backward(dout: np.ndarray, cache: AttentionCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``attention_forward`` with respect to q, k and v.

    The same stages as ``attention_backward_stages`` (see there), with fewer temporaries:
    the softmax backward writes into the ``dweights`` array.

    Parameters
    ----------
    dout : ndarray of shape (..., Tq, hv)
    cache : from ``attention_forward``

    Returns
    -------
    dq : ndarray of shape (..., Tq, hs)
    dk : ndarray of shape (..., Tk, hs)
    dv : ndarray of shape (..., Tk, hv)
    """
    q, k, v, P, scale = cache
    dv = np.matmul(np.swapaxes(P, -1, -2), dout)              # out = P @ v       -> dv = P^T @ dout
    dweights = np.matmul(dout, np.swapaxes(v, -1, -2))        # out = P @ v       -> dP = dout @ v^T
    row = np.vecdot(dweights, P)[..., None]                   # (..., Tq, 1) sum_j dP_j P_j, no temporary
    dscores = dweights                                        # P = softmax(S)    -> dS = P * (dP - row)
    dscores -= row
    dscores *= P
    dq = np.matmul(dscores, k)                                # S = q k^T * scale -> dq = dS @ k * scale
    dq *= scale
    dk = np.matmul(np.swapaxes(dscores, -1, -2), q)           #                      dk = dS^T @ q * scale
    dk *= scale
    return dq, dk, dv


def attention_weights(q: np.ndarray, k: np.ndarray, mask: Optional[np.ndarray] = None,
                      scale: Optional[float] = None) -> np.ndarray:
    """The attention weights ``softmax(scores)`` alone, (..., Tq, Tk), for heat maps; 0 on masked keys."""
    return _softmax_(attention_scores(q, k, mask, scale))


# --------------------------------------------------------------------------- heads

def split_heads(x: np.ndarray, nh: int) -> np.ndarray:
    """Cut the E features into nh heads of hs = E / nh: (N, T, E) -> (N, nh, T, hs).

    Features [h*hs, (h+1)*hs) form head h (``nn.MultiheadAttention``'s layout).  The
    reshape splits the *last* axis only, so no feature moves to another token; the
    transpose then brings the heads next to the batch, for batched products per head.
    Returns a view (no copy).

    Parameters
    ----------
    x : ndarray of shape (N, T, E), E divisible by nh

    Returns
    -------
    heads : ndarray of shape (N, nh, T, hs)
    """
    N, T, E = x.shape
    if E % nh:
        raise ValueError(f"the width E={E} is not divisible by nh={nh} heads")
    x = x.reshape(N, T, nh, E // nh)      # (N, T, nh, hs)
    return x.transpose(0, 2, 1, 3)        # (N, nh, T, hs)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """Inverse of ``split_heads``: (N, nh, T, hs) -> (N, T, E) with E = nh * hs.

    Parameters
    ----------
    x : ndarray of shape (N, nh, T, hs)

    Returns
    -------
    merged : ndarray of shape (N, T, nh * hs)
    """
    N, nh, T, hs = x.shape
    x = x.transpose(0, 2, 1, 3)           # (N, T, nh, hs)
    return x.reshape(N, T, nh * hs)       # (N, T, E), a copy: the transposed axes are not contiguous


# --------------------------------------------------------------------------- layer norm

class LayerNormCache(NamedTuple):
    xhat: np.ndarray   # (..., E) the normalised input
    rstd: np.ndarray   # (..., 1) 1 / sqrt(var + eps)
    gamma: np.ndarray  # (E,)


def layer_norm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                       eps: float = 1e-5) -> tuple[np.ndarray, LayerNormCache]:
    """Layer normalisation over the LAST axis (each token's E features), like ``nn.LayerNorm(E)``.

    Unlike batch norm it never mixes examples or positions: every token is normalised on
    its own, the same at training and at test time, with no running statistics.  The
    variance is the biased one (divide by E), as in ``nn.LayerNorm``.

    Parameters
    ----------
    x : ndarray of shape (..., E), e.g. (N, T, E)
    gamma, beta : ndarrays of shape (E,) (``weight`` and ``bias`` of ``nn.LayerNorm``)
    eps : added to the variance

    Returns
    -------
    y : ndarray shaped like ``x``
    cache : LayerNormCache
    """
    mu = x.mean(axis=-1, keepdims=True)                       # (..., 1)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)            # (..., 1) biased: / E
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd                                          # (..., E) zero mean, unit variance per token
    return xhat * gamma + beta, LayerNormCache(xhat, rstd, gamma)


def layer_norm_backward(dy: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``layer_norm_forward``: (dx, dgamma, dbeta).

    With ``g = dy * gamma`` (the gradient reaching xhat), the chain rule through the mean
    and the variance of each row collapses into one line::

        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      # means over the E features

    ``- mean(g)`` is the path through the mean, ``- xhat * mean(g * xhat)`` the path through
    the variance; both are projections that keep dx summing to 0 and orthogonal to xhat.

    Parameters
    ----------
    dy : ndarray of shape (..., E)
    cache : from ``layer_norm_forward``

    Returns
    -------
    dx : ndarray of shape (..., E)
    dgamma, dbeta : ndarrays of shape (E,), summed over every leading axis
    """
    xhat, rstd, gamma = cache
    lead = tuple(range(dy.ndim - 1))
    dbeta = dy.sum(axis=lead)                                 # y = xhat * gamma + beta
    dgamma = (dy * xhat).sum(axis=lead)
    g = dy * gamma                                            # (..., E) gradient w.r.t. xhat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- positions

def sinusoidal_positions(T: int, E: int, base: float = 10000.0, dtype=np.float64) -> np.ndarray:
    """Sinusoidal position encodings (Vaswani et al. 2017, sec. 3.5), interleaved.

    ``PE[t, 2i] = sin(t / base^(2i/E))`` and ``PE[t, 2i+1] = cos(t / base^(2i/E))``: pair i
    turns at the frequency ``w_i = base^(-2i/E)``, from 1 radian per step (i = 0) down to
    about 1/base.  Moving k steps rotates every pair by the angle ``k * w_i``, the same for
    every t, so a relative offset is a linear map of the encoding.

    Parameters
    ----------
    T : number of positions (0 .. T-1)
    E : width, even
    base : 10000 in the paper

    Returns
    -------
    pe : ndarray of shape (T, E), values in [-1, 1]
    """
    if E % 2:
        raise ValueError(f"the width E={E} must be even (sin/cos pairs)")
    t = np.arange(T, dtype=np.float64)[:, None]               # (T, 1)
    freq = base ** (-np.arange(0, E, 2, dtype=np.float64) / E)   # (E/2,) w_i = base^(-2i/E)
    angle = t * freq                                          # (T, E/2)
    pe = np.empty((T, E), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)                               # even columns: sin
    pe[:, 1::2] = np.cos(angle)                               # odd columns: cos
    return pe.astype(dtype, copy=False)


def _rotary_angles(T: int, hs: int, positions, base: float) -> np.ndarray:
    """Angles (T, hs/2): position t times the frequency base^(-2i/hs) of pair i."""
    if hs % 2:
        raise ValueError(f"rotary positions need an even head size, got hs={hs}")
    positions = np.arange(T) if positions is None else np.asarray(positions)
    if positions.shape != (T,):
        raise ValueError(f"positions must have shape ({T},), got {positions.shape}")
    freq = base ** (-np.arange(0, hs, 2, dtype=np.float64) / hs)   # (hs/2,)
    return positions.astype(np.float64)[:, None] * freq             # (T, hs/2)


def _rotate_pairs(x: np.ndarray, angle: np.ndarray) -> np.ndarray:
    cos, sin = np.cos(angle).astype(x.dtype), np.sin(angle).astype(x.dtype)   # (T, hs/2)
    x0, x1 = x[..., 0::2], x[..., 1::2]                       # (..., T, hs/2) the pairs' two coordinates
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin                      # the 2-d rotation by `angle`
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def apply_rotary(x: np.ndarray, positions: Optional[np.ndarray] = None, base: float = 10000.0) -> np.ndarray:
    """Rotary position embedding (RoPE, Su et al. 2021): rotate each pair by a position-dependent angle.

    Pair i of a token at position t, ``(x[..., 2i], x[..., 2i+1])``, turns by the angle
    ``t * base^(-2i/hs)`` (the interleaved-pair convention).  Applied to q and k after the
    head split: a rotation keeps lengths, and the dot product of a query rotated by ``t*w``
    with a key rotated by ``s*w`` depends on ``t - s`` only, so attention sees relative
    positions.

    Parameters
    ----------
    x : ndarray of shape (..., T, hs), hs even (e.g. q or k, (N, nh, T, hs))
    positions : T positions (default 0 .. T-1; with a key/value cache, the queries' true positions)
    base : 10000 in the paper

    Returns
    -------
    rotated : ndarray shaped like ``x``
    """
    return _rotate_pairs(x, _rotary_angles(x.shape[-2], x.shape[-1], positions, base))


def apply_rotary_backward(dy: np.ndarray, positions: Optional[np.ndarray] = None,
                          base: float = 10000.0) -> np.ndarray:
    """Gradient of ``apply_rotary``: the transposed rotation, i.e. the rotation by minus the angle.

    Parameters
    ----------
    dy : ndarray of shape (..., T, hs)

    Returns
    -------
    dx : ndarray of shape (..., T, hs)
    """
    return _rotate_pairs(dy, -_rotary_angles(dy.shape[-2], dy.shape[-1], positions, base))


# --------------------------------------------------------------------------- GELU and linear layers

_GELU_C = float(np.sqrt(2.0 / np.pi))   # a Python float: a NumPy float64 scalar would promote float32 arrays


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (GPT-2's; ``nn.GELU(approximate="tanh")``).

    ``gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``: about x for large x,
    about 0 for very negative x, smooth in between (and slightly negative).

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    y : ndarray shaped like ``x``
    """
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + 0.044715 * x ** 3)))


def gelu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of ``gelu`` at the input ``x``.

    With ``u = c (x + 0.044715 x^3)`` and ``t = tanh(u)``:
    ``d gelu / dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)``.

    Parameters
    ----------
    dy : ndarray shaped like ``x``
    x : the forward's input

    Returns
    -------
    dx : ndarray shaped like ``x``
    """
    t = np.tanh(_GELU_C * (x + 0.044715 * x ** 3))
    local = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * local


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``y = x @ w.T + b``, the layout of ``nn.Linear`` (the cache is just ``x`` and ``w``).

    Parameters
    ----------
    x : ndarray of shape (..., D_in)
    w : ndarray of shape (D_out, D_in)
    b : ndarray of shape (D_out,)

    Returns
    -------
    y : ndarray of shape (..., D_out)
    """
    return x @ w.T + b


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``linear_forward``: (dx, dw, db), summed over every leading axis of ``x``.

    Parameters
    ----------
    dy : ndarray of shape (..., D_out)
    x : ndarray of shape (..., D_in), the forward's input
    w : ndarray of shape (D_out, D_in)

    Returns
    -------
    dx : ndarray of shape (..., D_in)
    dw : ndarray of shape (D_out, D_in)
    db : ndarray of shape (D_out,)
    """
    dy2 = dy.reshape(-1, dy.shape[-1])                        # (rows, D_out) every token is a row
    x2 = x.reshape(-1, x.shape[-1])                           # (rows, D_in)
    dx = dy @ w                                               # dy/dx = w
    dw = dy2.T @ x2                                           # dy/dw = x, summed over the rows
    db = dy2.sum(axis=0)                                      # b is broadcast over the rows
    return dx, dw, db


# --------------------------------------------------------------------------- multi-head attention

MHA_KEYS = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")


def params_from_torch(module) -> dict[str, np.ndarray]:
    """Float64 NumPy copies of a torch module's ``state_dict`` (same keys).

    For ``nn.MultiheadAttention`` (built with the default ``kdim = vdim = E`` and biases):
    ``in_proj_weight`` (3E, E), ``in_proj_bias`` (3E,), ``out_proj.weight`` (E, E),
    ``out_proj.bias`` (E,).  For a transformer block: the ``BLOCK_KEYS``.

    Returns
    -------
    params : dict of str -> float64 ndarray
    """
    state = {k: v.detach().cpu().double().numpy().copy() for k, v in module.state_dict().items()}
    if "q_proj_weight" in state:
        raise ValueError("nn.MultiheadAttention with kdim/vdim != embed_dim (separate q/k/v weights) "
                         "is not supported: build it with the default kdim = vdim = embed_dim")
    if "in_proj_weight" in state:
        missing = [k for k in MHA_KEYS if k not in state]
        if missing:
            raise ValueError(f"nn.MultiheadAttention without biases is not supported (missing {missing})")
    return state


class MhaCache(NamedTuple):
    x: np.ndarray              # (N, Tq, E) the query input
    kv: Optional[np.ndarray]   # (N, Tk, E) the key/value input; None for self-attention
    attn: AttentionCache       # heads (N, nh, Tq, hs) ...
    merged: np.ndarray         # (N, Tq, E) the heads' outputs side by side
    w_in: np.ndarray           # (3E, E) rows [W_q; W_k; W_v]
    w_out: np.ndarray          # (E, E)
    names: tuple               # the four parameter names (in_w, in_b, out_w, out_b)


def _attention_sublayer(x, kv, w_in, b_in, w_out, b_out, nh, mask, names):
    """Multi-head attention with the projections: the body of ``mha_forward`` and of the block."""
    E = x.shape[-1]
    if kv is None:                                            # self-attention: one product for q, k, v
        qkv = linear_forward(x, w_in, b_in)                   # (N, T, 3E)
        q, k, v = qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]   # (N, T, E) each
    else:                                                     # cross-attention: queries from x, keys/values from kv
        q = linear_forward(x, w_in[:E], b_in[:E])             # (N, Tq, E)
        kvp = linear_forward(kv, w_in[E:], b_in[E:])          # (N, Tk, 2E)
        k, v = kvp[..., :E], kvp[..., E:]                     # (N, Tk, E) each
    q, k, v = (split_heads(a, nh) for a in (q, k, v))         # (N, nh, T, hs)
    heads, attn = attention_forward(q, k, v, mask)            # (N, nh, Tq, hs)
    merged = merge_heads(heads)                               # (N, Tq, E)
    out = linear_forward(merged, w_out, b_out)                # (N, Tq, E)
    return out, MhaCache(x, kv, attn, merged, w_in, w_out, names)


def _attention_sublayer_backward(dout, cache: MhaCache):
    x, kv, attn, merged, w_in, w_out, names = cache
    E = x.shape[-1]
    dmerged, dw_out, db_out = linear_backward(dout, merged, w_out)   # (N, Tq, E)
    nh = attn.q.shape[1]
    dq, dk, dv = attention_backward(split_heads(dmerged, nh), attn)  # (N, nh, T, hs)
    dq, dk, dv = merge_heads(dq), merge_heads(dk), merge_heads(dv)   # (N, T, E)
    if kv is None:
        dqkv = np.concatenate([dq, dk, dv], axis=-1)          # (N, T, 3E)
        dx, dw_in, db_in = linear_backward(dqkv, x, w_in)
        dkv = None
    else:
        dx, dw_q, db_q = linear_backward(dq, x, w_in[:E])
        dkv, dw_kv, db_kv = linear_backward(np.concatenate([dk, dv], axis=-1), kv, w_in[E:])
        dw_in, db_in = np.concatenate([dw_q, dw_kv]), np.concatenate([db_q, db_kv])
    grads = dict(zip(names, (dw_in, db_in, dw_out, db_out)))
    return dx, dkv, grads


def mha_forward(x: np.ndarray, params: dict, nh: int, mask: Optional[np.ndarray] = None,
                kv: Optional[np.ndarray] = None) -> tuple[np.ndarray, MhaCache]:
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters (``batch_first=True``).

    ``q, k, v = x W_q^T + b_q, kv W_k^T + b_k, kv W_v^T + b_v`` (kv = x for self-attention),
    each split into nh heads of hs = E / nh, attended separately, merged back and projected
    by ``out_proj``.  Equal to ``mha(x, kv, kv, attn_mask=~mask, need_weights=False)``.

    Parameters
    ----------
    x : ndarray of shape (N, Tq, E), the queries' input
    params : dict with ``in_proj_weight`` (3E, E) (rows [W_q; W_k; W_v]), ``in_proj_bias`` (3E,),
        ``out_proj.weight`` (E, E), ``out_proj.bias`` (E,) (``params_from_torch(mha)``)
    nh : number of heads, dividing E
    mask : bool ndarray broadcastable to (N, nh, Tq, Tk), True = may attend
        (e.g. ``causal_mask(T)`` (T, T) or ``padding_mask(lengths, Tk)`` (N, 1, 1, Tk))
    kv : ndarray of shape (N, Tk, E) for cross-attention; None for self-attention

    Returns
    -------
    out : ndarray of shape (N, Tq, E)
    cache : MhaCache; ``cache.attn.weights`` (N, nh, Tq, Tk) per head
    """
    return _attention_sublayer(x, kv, params["in_proj_weight"], params["in_proj_bias"],
                               params["out_proj.weight"], params["out_proj.bias"], nh, mask, MHA_KEYS)


def mha_backward(dout: np.ndarray, cache: MhaCache):
    """Gradients of ``mha_forward``.

    Parameters
    ----------
    dout : ndarray of shape (N, Tq, E)
    cache : from ``mha_forward``

    Returns
    -------
    dx : ndarray of shape (N, Tq, E)
    dkv : ndarray of shape (N, Tk, E), only for cross-attention (then the result is (dx, dkv, grads))
    grads : dict with the keys of ``params``
    """
    dx, dkv, grads = _attention_sublayer_backward(dout, cache)
    return (dx, grads) if cache.kv is None else (dx, dkv, grads)


# --------------------------------------------------------------------------- the pre-norm block

BLOCK_KEYS = ("ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
              "attn.proj.bias", "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias",
              "mlp.proj.weight", "mlp.proj.bias")


def init_block_params(E: int, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """Random block parameters (weights N(0, 0.02^2) as in GPT-2, random-ish norms and biases for tests).

    Returns
    -------
    params : dict with the ``BLOCK_KEYS``: ln1/ln2 weight and bias (E,), attn.qkv.weight (3E, E),
        attn.qkv.bias (3E,), attn.proj.weight (E, E), attn.proj.bias (E,), mlp.fc.weight (4E, E),
        mlp.fc.bias (4E,), mlp.proj.weight (E, 4E), mlp.proj.bias (E,)
    """
    rng = np.random.default_rng(seed)
    shapes = {"ln1.weight": (E,), "ln1.bias": (E,), "attn.qkv.weight": (3 * E, E), "attn.qkv.bias": (3 * E,),
              "attn.proj.weight": (E, E), "attn.proj.bias": (E,), "ln2.weight": (E,), "ln2.bias": (E,),
              "mlp.fc.weight": (4 * E, E), "mlp.fc.bias": (4 * E,), "mlp.proj.weight": (E, 4 * E),
              "mlp.proj.bias": (E,)}
    params = {k: 0.02 * rng.standard_normal(s) for k, s in shapes.items()}
    for k in ("ln1.weight", "ln2.weight"):
        params[k] += 1.0
    return {k: v.astype(dtype) for k, v in params.items()}


class BlockCache(NamedTuple):
    ln1: LayerNormCache
    attn: MhaCache
    ln2: LayerNormCache
    h2: np.ndarray     # (N, T, E) ln2's output, the MLP's input
    f: np.ndarray      # (N, T, 4E) fc's output, GELU's input
    g: np.ndarray      # (N, T, 4E) GELU's output
    params: dict


def block_forward(x: np.ndarray, params: dict, nh: int, causal: bool = True,
                  mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, BlockCache]:
    """The pre-norm transformer block (GPT-2's): two residual branches, each behind a layer norm.

    ::

        x = x + attn(ln1(x))          # tokens exchange information
        x = x + mlp(ln2(x))           # each token computes on its own: fc (E -> 4E), GELU, proj (4E -> E)

    Parameters
    ----------
    x : ndarray of shape (N, T, E)
    params : dict with the ``BLOCK_KEYS`` (see ``init_block_params``); the torch Block's state_dict keys
    nh : number of heads
    causal : attend only to the past and the present
    mask : optional extra bool mask broadcastable to (N, nh, T, T) (True = may attend), and-ed with
        the causal one

    Returns
    -------
    y : ndarray of shape (N, T, E)
    cache : BlockCache; ``cache.attn.attn.weights`` (N, nh, T, T) per head
    """
    p = params
    T = x.shape[1]
    if causal:
        mask = causal_mask(T) if mask is None else (causal_mask(T) & mask)
    h1, ln1 = layer_norm_forward(x, p["ln1.weight"], p["ln1.bias"])        # (N, T, E)
    a, attn = _attention_sublayer(h1, None, p["attn.qkv.weight"], p["attn.qkv.bias"], p["attn.proj.weight"],
                                  p["attn.proj.bias"], nh, mask,
                                  ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"))
    x1 = x + a                                                              # first residual
    h2, ln2 = layer_norm_forward(x1, p["ln2.weight"], p["ln2.bias"])       # (N, T, E)
    f = linear_forward(h2, p["mlp.fc.weight"], p["mlp.fc.bias"])           # (N, T, 4E)
    g = gelu(f)
    m = linear_forward(g, p["mlp.proj.weight"], p["mlp.proj.bias"])        # (N, T, E)
    return x1 + m, BlockCache(ln1, attn, ln2, h2, f, g, p)                 # second residual


def block_backward(dy: np.ndarray, cache: BlockCache) -> tuple[np.ndarray, dict]:
    """Gradients of ``block_forward``.

    A residual ``y = x + branch(x)`` passes ``dy`` straight through *and* into the branch:
    ``dx = dy + dbranch``.  That direct path is why deep stacks of blocks still train.

    Parameters
    ----------
    dy : ndarray of shape (N, T, E)
    cache : from ``block_forward``

    Returns
    -------
    dx : ndarray of shape (N, T, E)
    grads : dict with the ``BLOCK_KEYS``
    """
    ln1, attn, ln2, h2, f, g, p = cache
    grads = {}
    dg, grads["mlp.proj.weight"], grads["mlp.proj.bias"] = linear_backward(dy, g, p["mlp.proj.weight"])
    df = gelu_backward(dg, f)                                               # (N, T, 4E)
    dh2, grads["mlp.fc.weight"], grads["mlp.fc.bias"] = linear_backward(df, h2, p["mlp.fc.weight"])
    dx1_branch, grads["ln2.weight"], grads["ln2.bias"] = layer_norm_backward(dh2, ln2)
    dx1 = dy + dx1_branch                                                   # residual: both paths add
    dh1, _, attn_grads = _attention_sublayer_backward(dx1, attn)
    grads.update(attn_grads)
    dx_branch, grads["ln1.weight"], grads["ln1.bias"] = layer_norm_backward(dh1, ln1)
    dx = dx1 + dx_branch                                                    # residual again
    return dx, {k: grads[k] for k in BLOCK_KEYS}


# --------------------------------------------------------------------------- exercise forms (the graded answers)
# The answers to the graded exercises of chapter 07 (solutions/07_transformer.py), in the form
# the exercises ask for; each is the ``reference=`` of its check in dlcourse/transformer/checks.py.
# The functions above return caches for their backward passes; these return plain values, and
# the backward forms take the forward's inputs (they recompute what they need).
# ``split_heads``, ``merge_heads`` and ``sinusoidal_positions`` above are already in the
# exercises' form.

__all__ += ["attention", "attention_grads", "layer_norm", "layer_norm_grads"]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Scaled dot-product attention's output alone, scale 1/sqrt(hs).

    Parameters
    ----------
    q : (N, Tq, hs); k : (N, Tk, hs); v : (N, Tk, hv)
    mask : bool, broadcastable to (N, Tq, Tk), True = may attend; None attends everywhere

    Returns
    -------
    out : ndarray of shape (N, Tq, hv)
    """
    return attention_forward(q, k, v, mask)[0]


def attention_grads(dout: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                    mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`attention` with respect to q, k and v (the forward recomputed).

    Parameters
    ----------
    dout : (N, Tq, hv); q : (N, Tq, hs); k : (N, Tk, hs); v : (N, Tk, hv); mask as in :func:`attention`

    Returns
    -------
    dq : (N, Tq, hs); dk : (N, Tk, hs); dv : (N, Tk, hv)
    """
    return attention_backward(dout, attention_forward(q, k, v, mask)[1])


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """``nn.LayerNorm``'s output over the last axis.

    Parameters
    ----------
    x : (..., E); gamma, beta : (E,)

    Returns
    -------
    y : ndarray shaped like ``x``
    """
    return layer_norm_forward(x, gamma, beta, eps)[0]


def layer_norm_grads(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray,
                     eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`layer_norm`: (dx, dgamma, dbeta) (the forward recomputed; beta plays no part).

    Parameters
    ----------
    dy, x : (..., E); gamma : (E,)

    Returns
    -------
    dx : shaped like ``x``; dgamma, dbeta : (E,), summed over every leading axis
    """
    _, cache = layer_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return layer_norm_backward(dy, cache)
