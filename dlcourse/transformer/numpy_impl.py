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
    "sinusoidal_positions",
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
    s -= s.max(axis=-1, keepdims=True)
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
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
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
    row = np.sum(dweights * P, axis=-1, keepdims=True)        # (..., Tq, 1) sum_j dP_j P_j
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
