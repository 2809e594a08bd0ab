"""Training practice by hand in NumPy: losses, dropout, batch norm, metrics.

Losses and layers are pairs of pure functions, as in chapter 02::

    loss, cache = loss_forward(pred, target)
    dpred = loss_backward(dloss, cache)        # dloss = 1.0 when the loss is the objective

    out, cache, running = batchnorm_forward(x, gamma, beta, running, train=True)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

Every loss is a *mean* over its elements (PyTorch's ``reduction="mean"``), so its
gradient carries a ``1 / (number of elements)``: a loss's reduction sets the scale
of every gradient behind it.  Nothing is mutated in place; state (batch norm's
running statistics) goes in and comes out.

Dimension letters (the course glossary)
---------------------------------------
N  batch size (number of examples)
D  features (outputs of a regression, or of a dense layer)
K  classes (the width of the logits)
C  channels (batch norm over (N, C, L) normalises each channel)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from dlcourse.neurons.numpy_impl import sigmoid  # the stable form, built in chapter 01

__all__ = [
    "MSELossCache", "mse_loss_forward", "mse_loss_backward",
    "L1LossCache", "l1_loss_forward", "l1_loss_backward",
    "HuberLossCache", "huber_loss_forward", "huber_loss_backward",
    "BCEWithLogitsCache", "bce_with_logits_forward", "bce_with_logits_backward",
    "CrossEntropyCache", "cross_entropy_forward", "cross_entropy_backward",
]


# --------------------------------------------------------------------------- regression losses

class MSELossCache(NamedTuple):
    diff: np.ndarray  # (N, D) pred - target


def mse_loss_forward(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, MSELossCache]:
    """Mean squared error ``mean((pred - target)**2)``, as ``F.mse_loss``.

    Parameters
    ----------
    pred : ndarray of shape (N, D) (or any shape)
    target : ndarray shaped like ``pred``

    Returns
    -------
    loss : scalar, the mean over all N * D elements
    cache : MSELossCache with the residual
    """
    diff = pred - target
    return np.mean(diff * diff), MSELossCache(diff)


def mse_loss_backward(dloss: float, cache: MSELossCache) -> np.ndarray:
    """Gradient of the MSE w.r.t. ``pred``: ``2 (pred - target) / (N * D)``, times ``dloss``."""
    diff = cache.diff
    return dloss * 2 * diff / diff.size  # d mean(d**2) / d d = 2 d / size


class L1LossCache(NamedTuple):
    diff: np.ndarray  # (N, D) pred - target


def l1_loss_forward(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, L1LossCache]:
    """Mean absolute error ``mean(|pred - target|)``, as ``F.l1_loss``.

    Parameters
    ----------
    pred : ndarray of shape (N, D) (or any shape)
    target : ndarray shaped like ``pred``

    Returns
    -------
    loss : scalar
    cache : L1LossCache with the residual
    """
    diff = pred - target
    return np.mean(np.abs(diff)), L1LossCache(diff)


def l1_loss_backward(dloss: float, cache: L1LossCache) -> np.ndarray:
    """Gradient of the MAE: ``sign(pred - target) / (N * D)``; the subgradient 0 at a tie, as PyTorch."""
    diff = cache.diff
    return dloss * np.sign(diff) / diff.size  # d |d| / d d = sign(d): every error pulls equally hard


class HuberLossCache(NamedTuple):
    diff: np.ndarray  # (N, D) pred - target
    delta: float


def huber_loss_forward(pred: np.ndarray, target: np.ndarray,
                       delta: float = 1.0) -> tuple[np.ndarray, HuberLossCache]:
    """Huber loss, as ``F.huber_loss(pred, target, delta=delta)``.

    Quadratic near zero, linear far away: ``0.5 d**2`` where ``|d| < delta`` and
    ``delta (|d| - delta / 2)`` elsewhere (the two pieces meet with equal slope),
    with ``d = pred - target``.  Outliers pull with force ``delta`` at most.

    Parameters
    ----------
    pred : ndarray of shape (N, D) (or any shape)
    target : ndarray shaped like ``pred``
    delta : where the quadratic piece turns linear, > 0

    Returns
    -------
    loss : scalar, the mean over all elements
    cache : HuberLossCache
    """
    diff = pred - target
    a = np.abs(diff)
    elementwise = np.where(a < delta, 0.5 * diff * diff, delta * (a - 0.5 * delta))
    return np.mean(elementwise), HuberLossCache(diff, delta)


def huber_loss_backward(dloss: float, cache: HuberLossCache) -> np.ndarray:
    """Gradient of the Huber loss: ``d`` inside ``|d| < delta``, ``delta sign(d)`` outside, over the size."""
    diff, delta = cache
    # d(0.5 d**2)/dd = d inside; d(delta |d|)/dd = delta sign(d) outside: the gradient is d clipped to ±delta
    return dloss * np.clip(diff, -delta, delta) / diff.size


# --------------------------------------------------------------------------- classification losses

class BCEWithLogitsCache(NamedTuple):
    logits: np.ndarray  # (N,) or (N, D)
    target: np.ndarray  # shaped like logits, values in [0, 1]


def bce_with_logits_forward(logits: np.ndarray,
                            target: np.ndarray) -> tuple[np.ndarray, BCEWithLogitsCache]:
    """Binary cross-entropy on logits, as ``F.binary_cross_entropy_with_logits``; finite for any logit.

    ``-[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]`` simplifies to
    ``max(z, 0) - z y + log(1 + exp(-|z|))``: the only ``exp`` sees a number <= 0,
    and ``log1p`` keeps precision when that exponential is tiny.  Computing
    ``log(sigmoid(z))`` instead gives ``log(0) = -inf`` for ``z = -1000``.

    Parameters
    ----------
    logits : ndarray of shape (N,) or (N, D), unnormalised scores z
    target : ndarray shaped like ``logits``, labels (or soft labels) y in [0, 1]

    Returns
    -------
    loss : scalar, the mean over all elements
    cache : BCEWithLogitsCache
    """
    z = logits
    elementwise = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
    return np.mean(elementwise), BCEWithLogitsCache(logits, target)


def bce_with_logits_backward(dloss: float, cache: BCEWithLogitsCache) -> np.ndarray:
    """Gradient of BCE w.r.t. the logits: ``(sigmoid(z) - y) / size``, bounded by 1 / size in size."""
    z, y = cache
    return dloss * (sigmoid(z) - y) / z.size  # d/dz [softplus(z) - z y] = sigmoid(z) - y


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray   # (N, K) softmax of the logits
    target: np.ndarray  # (N, K) the (smoothed) target distribution


def cross_entropy_forward(logits: np.ndarray, y: np.ndarray,
                          label_smoothing: float = 0.0) -> tuple[np.ndarray, CrossEntropyCache]:
    """Mean softmax cross-entropy with label smoothing, as ``F.cross_entropy(logits, y, label_smoothing=)``.

    The target distribution is ``q = (1 - eps) onehot(y) + eps / K``: the correct class
    gets ``1 - eps + eps / K`` and every class at least ``eps / K``, so the model is never
    asked for infinite confidence.  ``loss = -(1/N) sum_n sum_k q_nk log softmax(z_n)_k``,
    with ``log softmax`` by log-sum-exp (finite for logits of ±1e4).

    Parameters
    ----------
    logits : ndarray of shape (N, K)
    y : int ndarray of shape (N,), classes in [0, K)
    label_smoothing : eps in [0, 1]

    Returns
    -------
    loss : scalar, the mean over the batch
    cache : CrossEntropyCache with the probabilities and the smoothed targets
    """
    n, k = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp of a number <= 0: no overflow
    log_sum_exp = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_sum_exp                      # (N, K)
    q = np.full_like(log_probs, label_smoothing / k)
    q[np.arange(n), y] += 1.0 - label_smoothing
    loss = -(q * log_probs).sum() / n
    return loss, CrossEntropyCache(np.exp(log_probs), q)


def cross_entropy_backward(dloss: float, cache: CrossEntropyCache) -> np.ndarray:
    """Gradient w.r.t. the logits: ``(softmax(z) - q) / N``; since ``q`` sums to 1 per row, so does softmax."""
    probs, q = cache
    # d(-sum_k q_k log softmax_k)/dz_j = softmax_j sum_k q_k - q_j = softmax_j - q_j
    return dloss * (probs - q) / probs.shape[0]
