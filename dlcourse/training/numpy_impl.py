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
    "DropoutCache", "dropout_forward", "dropout_backward",
    "BatchNormRunning", "BatchNormCache", "batchnorm_init", "batchnorm_forward", "batchnorm_backward",
    "accuracy", "confusion_matrix", "precision_recall_f1", "precision_score", "recall_score", "f1_score",
    "roc_curve", "auc", "roc_auc_score",
    # exercise forms (the graded answers)
    "bce_with_logits", "standardize_splits", "dropout_forward_with_mask", "batchnorm_forward_running",
    "batchnorm_backward_from_x", "precision_recall_macro_f1", "he_init", "fit_with_early_stopping",
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


# --------------------------------------------------------------------------- dropout

class DropoutCache(NamedTuple):
    mask: Optional[np.ndarray]  # bool, shaped like x: True where a unit was kept; None in eval mode
    p: float


def dropout_forward(x: np.ndarray, p: float = 0.5, train: bool = True,
                    rng: Optional[np.random.Generator] = None,
                    mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, DropoutCache]:
    """Inverted dropout, as ``F.dropout(x, p, training=train)``.

    In training each unit is zeroed with probability ``p`` and the survivors are
    scaled by ``1 / (1 - p)``, so the expected output equals ``x``: at eval time the
    layer is the identity and nothing needs rescaling.

    Parameters
    ----------
    x : ndarray of shape (N, D) (or any shape)
    p : probability of dropping a unit, in [0, 1]
    train : False for evaluation: the identity, no randomness
    rng : a NumPy Generator to draw the mask from (``mask`` or ``rng`` is needed in training)
    mask : bool ndarray shaped like ``x``, True = keep; given, it is used as is (to
        reproduce a mask, or to compare with PyTorch on the same mask)

    Returns
    -------
    out : ndarray shaped like ``x``
    cache : DropoutCache with the mask (None in eval mode)
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not train or p == 0.0:
        return x.copy(), DropoutCache(None, p)  # a copy: the output never aliases the input
    if mask is None:
        if rng is None:
            raise ValueError("training-mode dropout needs a mask or an rng (np.random.default_rng(seed))")
        mask = rng.random(x.shape) >= p  # kept with probability 1 - p
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {mask.shape} differs from x shape {x.shape}")
    if p == 1.0:  # everything dropped: PyTorch returns zeros (1 / (1 - p) would be inf)
        return np.zeros_like(x), DropoutCache(np.zeros_like(mask), p)
    return x * mask / x.dtype.type(1 - p), DropoutCache(mask, p)


def dropout_backward(dout: np.ndarray, cache: DropoutCache) -> np.ndarray:
    """Gradient of inverted dropout: the same mask and the same scale as the forward pass.

    Parameters
    ----------
    dout : ndarray shaped like the layer's output
    cache : DropoutCache from :func:`dropout_forward`

    Returns
    -------
    dx : ndarray shaped like ``dout``
    """
    mask, p = cache
    if mask is None:
        return dout.copy()  # eval mode: d x / d x = 1
    if p == 1.0:
        return np.zeros_like(dout)
    return dout * mask / dout.dtype.type(1 - p)  # d out / d x = mask / (1 - p)


# --------------------------------------------------------------------------- batch normalization

class BatchNormRunning(NamedTuple):
    mean: np.ndarray  # (D,) running mean, used in eval mode
    var: np.ndarray   # (D,) running (unbiased) variance


class BatchNormCache(NamedTuple):
    x_hat: np.ndarray    # (N, D) normalised input
    inv_std: np.ndarray  # (D,) 1 / sqrt(var + eps), batch variance in train mode, running in eval
    gamma: np.ndarray    # (D,)
    train: bool
    axes: tuple          # the axes the statistics are taken over: (0,) for (N, D), (0, 2) for (N, C, L)


def batchnorm_init(num_features: int, dtype=np.float64) -> BatchNormRunning:
    """Initial running statistics, as ``nn.BatchNorm1d``: mean 0 and variance 1."""
    return BatchNormRunning(np.zeros(num_features, dtype), np.ones(num_features, dtype))


def _bn_axes(x: np.ndarray) -> tuple[tuple, tuple]:
    """Axes to reduce over and the shape that broadcasts a (D,) vector against ``x``."""
    if x.ndim not in (2, 3):
        raise ValueError(f"batch norm expects (N, D) or (N, C, L), got shape {x.shape}")
    axes = (0,) if x.ndim == 2 else (0, 2)
    return axes, (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running: BatchNormRunning,
                      train: bool = True, momentum: float = 0.1,
                      eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache, BatchNormRunning]:
    """Batch normalization, as ``nn.BatchNorm1d(D, eps=eps, momentum=momentum)``.

    Train mode normalises each feature with the batch's mean and (biased) variance
    and updates the running statistics with PyTorch's convention
    ``running = (1 - momentum) * running + momentum * batch_statistic``, where the
    variance that goes into the running average is the *unbiased* one (divided by
    ``N - 1``).  Eval mode normalises with the running statistics and leaves them as
    they are.  The running statistics are returned, never updated in place.

    Parameters
    ----------
    x : ndarray of shape (N, D), or (N, C, L) normalised per channel over N and L
    gamma : ndarray of shape (D,) (or (C,)), the scale (``weight`` in PyTorch)
    beta : ndarray of shape (D,) (or (C,)), the shift (``bias`` in PyTorch)
    running : BatchNormRunning, e.g. from :func:`batchnorm_init`
    train : True to use (and learn from) the batch statistics, False for the running ones
    momentum : weight of the new batch in the running averages
    eps : added to the variance before the square root

    Returns
    -------
    out : ndarray shaped like ``x``
    cache : BatchNormCache for :func:`batchnorm_backward`
    running : the new BatchNormRunning (the one given, in eval mode)
    """
    axes, shape = _bn_axes(x)
    if train:
        m = x.size // x.shape[1]  # values per feature: N, or N * L
        if m < 2:
            raise ValueError("train-mode batch norm needs more than one value per feature (as PyTorch)")
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)  # biased (divide by m): what normalises the batch
        running = BatchNormRunning((1 - momentum) * running.mean + momentum * mean,
                                   (1 - momentum) * running.var + momentum * var * (m / (m - 1)))
    else:
        mean, var = running
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
    out = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    return out, BatchNormCache(x_hat, inv_std, gamma, train, axes), running


def batchnorm_backward(dout: np.ndarray,
                       cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of batch normalization.

    In train mode the mean and variance depend on every example of the batch, so
    each ``dx`` gets three terms; simplified (m values per feature)::

        dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))

    In eval mode the statistics are constants and batch norm is an affine map.

    Parameters
    ----------
    dout : ndarray of shape (N, D) (or (N, C, L))
    cache : BatchNormCache from :func:`batchnorm_forward`

    Returns
    -------
    dx : ndarray shaped like ``dout``
    dgamma : ndarray of shape (D,)
    dbeta : ndarray of shape (D,)
    """
    x_hat, inv_std, gamma, train, axes = cache
    shape = (1, dout.shape[1]) + (1,) * (dout.ndim - 2)
    dbeta = dout.sum(axis=axes)                 # out = ... + beta: beta is broadcast over the batch
    dgamma = (dout * x_hat).sum(axis=axes)      # d out / d gamma = x_hat
    dx_hat = dout * gamma.reshape(shape)        # d out / d x_hat = gamma
    if not train:
        return dx_hat * inv_std.reshape(shape), dgamma, dbeta  # d x_hat / d x = inv_std, a constant
    m = dout.size // dout.shape[1]
    # x_hat = (x - mean) * inv_std, with d mean / d x = 1/m and d var / d x = 2 (x - mean) / m:
    # the direct path gives dx_hat, the mean's path -mean(dx_hat), the variance's path
    # -x_hat * mean(dx_hat * x_hat); all scaled by d x_hat / d (x - mean) = inv_std
    dx = (dx_hat
          - dx_hat.sum(axis=axes, keepdims=True) / m
          - x_hat * (dx_hat * x_hat).sum(axis=axes, keepdims=True) / m) * inv_std.reshape(shape)
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- metrics
# Classes are the integers 0 .. K-1 (K = num_classes, or the largest label seen + 1), and
# every one of them counts in a macro average, present in the batch or not.  A ratio whose
# denominator is 0 (a class never predicted has no precision) is 0, as scikit-learn's
# ``zero_division=0``.

def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions, as ``sklearn.metrics.accuracy_score``.

    Parameters
    ----------
    y_true, y_pred : int ndarrays of shape (N,)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"need two non-empty (N,) arrays, got shapes {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: Optional[int] = None) -> np.ndarray:
    """Counts of (true class, predicted class) pairs, as ``sklearn.metrics.confusion_matrix``.

    Parameters
    ----------
    y_true, y_pred : int ndarrays of shape (N,), classes in [0, K)
    num_classes : K; by default the largest label in either array, plus one

    Returns
    -------
    cm : int ndarray of shape (K, K); ``cm[i, j]`` counts examples of class i predicted as j
        (rows: the truth, columns: the prediction; the diagonal holds the correct ones)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    accuracy(y_true, y_pred)  # the same shape checks
    k = int(max(y_true.max(), y_pred.max())) + 1 if num_classes is None else num_classes
    if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= k:
        raise ValueError(f"labels must be integers in [0, {k})")
    # each pair (i, j) gets its own bin i * K + j: one bincount counts them all
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: Optional[int] = None,
                        average: Optional[str] = None) -> tuple:
    """Precision, recall and F1, per class or averaged, as ``sklearn.metrics.precision_recall_fscore_support``.

    For class c: precision = TP / (TP + FP) (of the examples predicted c, how many are c),
    recall = TP / (TP + FN) (of the examples that are c, how many were found), and
    F1 = 2 TP / (2 TP + FP + FN), their harmonic mean.  ``"macro"`` averages the per-class
    scores (every class weighs the same, however rare); ``"micro"`` pools the counts of
    all classes first (for single-label classification, micro P = R = F1 = accuracy).

    Parameters
    ----------
    y_true, y_pred : int ndarrays of shape (N,), classes in [0, K)
    num_classes : K; by default the largest label seen, plus one
    average : None (per class), ``"macro"`` or ``"micro"``

    Returns
    -------
    precision, recall, f1 : ndarrays of shape (K,) for ``average=None``, floats otherwise
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp  # predicted c (column c), but not c
    fn = cm.sum(axis=1) - tp  # are c (row c), but predicted otherwise
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    elif average not in (None, "macro"):
        raise ValueError(f"average must be None, 'macro' or 'micro', got {average!r}")
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)  # = 2 P R / (P + R), without dividing by 0 twice
    if average is None:
        return precision, recall, f1
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def precision_score(y_true, y_pred, num_classes=None, average="macro"):
    """Precision alone; see :func:`precision_recall_f1` (note: macro by default)."""
    return precision_recall_f1(y_true, y_pred, num_classes, average)[0]


def recall_score(y_true, y_pred, num_classes=None, average="macro"):
    """Recall alone; see :func:`precision_recall_f1` (note: macro by default)."""
    return precision_recall_f1(y_true, y_pred, num_classes, average)[1]


def f1_score(y_true, y_pred, num_classes=None, average="macro"):
    """F1 alone; see :func:`precision_recall_f1` (note: macro by default)."""
    return precision_recall_f1(y_true, y_pred, num_classes, average)[2]


def roc_curve(y_true: np.ndarray, y_score: np.ndarray,
              drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic, as ``sklearn.metrics.roc_curve``.

    Sweep a threshold t down through every distinct score; predict positive where
    ``score >= t``; record the false-positive rate FP / negatives and the true-positive
    rate TP / positives.  Tied scores move together (one step, possibly diagonal).

    Parameters
    ----------
    y_true : ndarray of shape (N,), labels 0 (negative) and 1 (positive), both present
    y_score : float ndarray of shape (N,), higher means more likely positive (a probability or a logit)
    drop_intermediate : drop points on a straight segment between their neighbours
        (the curve, and its area, do not change), as scikit-learn does by default

    Returns
    -------
    fpr, tpr : ndarrays of shape (M,), from (0, 0) to (1, 1)
    thresholds : ndarray of shape (M,), decreasing; the first is ``inf`` (nothing predicted positive)
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 1:
        raise ValueError(f"need two (N,) arrays, got shapes {y_true.shape} and {y_score.shape}")
    if not np.isin(y_true, (0, 1)).all() or len(np.unique(y_true)) != 2:
        raise ValueError("a ROC curve needs labels 0 and 1, both present")
    order = np.argsort(-y_score, kind="mergesort")  # highest score first; stable
    score, positive = y_score[order], y_true[order] == 1
    # the last index of each run of equal scores: a threshold there counts the whole run
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tps = np.cumsum(positive)[last]
    fps = (last + 1) - tps  # everything above the threshold that is not a true positive
    thresholds = score[last]
    if drop_intermediate and tps.size > 2:
        # a point is a corner when the second difference of fps or tps is non-zero
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps, fps = np.r_[0, tps], np.r_[0, fps]  # start at (0, 0), with the threshold inf
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under a curve by the trapezoidal rule, as ``sklearn.metrics.auc`` (``x`` monotonic)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_auc_score(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve, as ``sklearn.metrics.roc_auc_score`` for binary labels.

    It is the probability that a random positive scores higher than a random negative
    (ties count one half): 0.5 is guessing, 1.0 a perfect ranking.

    Parameters
    ----------
    y_true : ndarray of shape (N,), labels 0 and 1, both present
    y_score : float ndarray of shape (N,)
    """
    fpr, tpr, _ = roc_curve(y_true, y_score, drop_intermediate=False)
    return auc(fpr, tpr)


# --------------------------------------------------------------------------- exercise forms (the graded answers)
# The answers to the graded exercises of chapter 04 (solutions/04_training.py), in the
# form the exercises ask for; each is the ``reference=`` of its check in checks.py.
# The layers above keep the course's cache style; these return plain values.

def bce_with_logits(logits: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Binary cross-entropy on logits and its gradient, in one call.

    Parameters
    ----------
    logits : ndarray of shape (N,) or (N, D)
    target : ndarray shaped like ``logits``, labels in [0, 1]

    Returns
    -------
    loss : float, the mean over all elements (finite for logits of ±1000)
    dlogits : ndarray shaped like ``logits``, ``(sigmoid(z) - y) / size``
    """
    z = np.asarray(logits, dtype=np.float64)
    softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))  # log(1 + e^z) without overflow
    loss = float(np.mean(softplus - z * target))
    return loss, (sigmoid(z) - target) / z.size


def standardize_splits(x_train: np.ndarray, x_val: np.ndarray,
                       x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise three splits with the training set's per-feature statistics.

    Parameters
    ----------
    x_train, x_val, x_test : ndarrays of shape (N_train, D), (N_val, D), (N_test, D)

    Returns
    -------
    train, val, test : new ndarrays of the same shapes; a feature constant on the
        training set gets scale 1 (as sklearn's StandardScaler)
    """
    centre = x_train.mean(axis=0)                 # (D,) from the training set only: no leak
    spread = x_train.std(axis=0)                  # (D,) ddof=0
    spread = np.where(spread == 0, 1.0, spread)   # constant pixels: 0 / 0 would be nan
    train, val, test = ((x - centre) / spread for x in (x_train, x_val, x_test))
    return train, val, test


def dropout_forward_with_mask(x: np.ndarray, p: float, train: bool,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout that returns its mask (True = kept); eval mode is the identity.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    p : probability of dropping a unit, in [0, 1]
    train : False: the identity, and an all-True mask
    rng : np.random.Generator the mask is drawn from

    Returns
    -------
    out : ndarray of shape (N, D)
    mask : bool ndarray of shape (N, D)
    """
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    keep = rng.random(x.shape) >= p           # kept with probability 1 - p, one draw per unit
    if p == 1:
        return np.zeros_like(x), keep         # all dropped; x * 0 / 0 would be nan
    return np.where(keep, x / (1 - p), 0.0), keep


def batchnorm_forward_running(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                              running_var: np.ndarray, train: bool = True, momentum: float = 0.1,
                              eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch norm over (N, D) with the running statistics passed and returned as two arrays.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    gamma, beta, running_mean, running_var : ndarrays of shape (D,)

    Returns
    -------
    out : ndarray of shape (N, D)
    new_running_mean, new_running_var : ndarrays of shape (D,) (the ones given, in eval mode)
    """
    if not train:
        scaled = (x - running_mean) / np.sqrt(running_var + eps)
        return gamma * scaled + beta, running_mean, running_var
    n = x.shape[0]
    batch_mean = x.mean(axis=0)               # (D,)
    batch_var = x.var(axis=0)                 # (D,) biased: what normalises this batch
    scaled = (x - batch_mean) / np.sqrt(batch_var + eps)
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * batch_var * n / (n - 1)  # unbiased into the average
    return gamma * scaled + beta, new_mean, new_var


def batchnorm_backward_from_x(dout: np.ndarray, x: np.ndarray, gamma: np.ndarray,
                              eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of train-mode batch norm over (N, D), recomputing the statistics from ``x``.

    Returns
    -------
    dx : ndarray of shape (N, D)
    dgamma, dbeta : ndarrays of shape (D,)
    """
    centred = x - x.mean(axis=0)
    inv_std = 1.0 / np.sqrt(np.mean(centred ** 2, axis=0) + eps)
    normed = centred * inv_std
    g = dout * gamma                          # gradient reaching the normalised input
    dx = inv_std * (g - g.mean(axis=0) - normed * np.mean(g * normed, axis=0))
    return dx, np.sum(dout * normed, axis=0), np.sum(dout, axis=0)


def precision_recall_macro_f1(y_true: np.ndarray, y_pred: np.ndarray,
                              num_classes: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-class precision and recall, and the macro F1 (zero_division=0, every class counted).

    Returns
    -------
    precision, recall : ndarrays of shape (K,)
    macro_f1 : float, the mean over all K classes of each class's F1
    """
    k = num_classes
    counts = np.zeros((k, k))
    np.add.at(counts, (y_true, y_pred), 1)    # counts[t, p]: truth t predicted as p
    hits = np.diagonal(counts)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros(k), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(k), where=both > 0)
    return precision, recall, float(f1.mean())


def he_init(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He (Kaiming) normal initialization for a ReLU layer: N(0, 2 / fan_in).

    Returns
    -------
    W : ndarray of shape (fan_in, fan_out)
    """
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def fit_with_early_stopping(params: dict, train_epoch, val_loss, max_epochs: int,
                            patience: int) -> tuple[dict, int, list]:
    """Train until the validation loss has not improved for ``patience`` epochs in a row.

    Parameters
    ----------
    params : dict name -> ndarray, updated IN PLACE by ``train_epoch(params)``
    train_epoch : callable, one epoch of training
    val_loss : callable, ``val_loss(params) -> float``
    max_epochs, patience : ints >= 1

    Returns
    -------
    best_params : dict of copies of the arrays at the best epoch
    best_epoch : int, counted from 1
    val_losses : list of floats, one per epoch run
    """
    best_loss, best_epoch, best_params = np.inf, 0, {k: v.copy() for k, v in params.items()}
    losses, since_best = [], 0
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:            # strictly lower: a tie is no improvement
            best_loss, best_epoch, since_best = losses[-1], epoch, 0
            best_params = {k: v.copy() for k, v in params.items()}  # a snapshot, not a reference
        else:
            since_best += 1
            if since_best == patience:
                break
    return best_params, best_epoch, losses
