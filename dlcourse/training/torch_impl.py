"""The PyTorch twin of chapter 04: the losses, dropout, batch norm and metrics on any device.

The losses and layers are PyTorch's own (``F.mse_loss``, ``F.l1_loss``, ``F.huber_loss``,
``F.binary_cross_entropy_with_logits``, ``F.cross_entropy``, ``nn.Dropout``,
``nn.BatchNorm1d``); ``numpy_impl`` builds each by hand and the tests prove the two equal.
What is here connects the twins (the same dropout mask, batch-norm state copied across)
and computes the metrics on tensors, so an evaluation loop never leaves the GPU.

Dimension letters: N batch, D features, K classes, C channels.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.numpy_impl import BatchNormRunning

configure_torch()

__all__ = ["LOSSES", "dropout_with_mask", "make_batchnorm", "running_stats",
           "accuracy", "confusion_matrix", "precision_recall_f1", "roc_auc_score"]

LOSSES: dict[str, Callable[..., torch.Tensor]] = {  # the twin of each numpy_impl ``*_forward`` loss
    "mse_loss": F.mse_loss,
    "l1_loss": F.l1_loss,
    "huber_loss": F.huber_loss,                          # delta=
    "bce_with_logits": F.binary_cross_entropy_with_logits,
    "cross_entropy": F.cross_entropy,                    # label_smoothing=
}


# --------------------------------------------------------------------------- dropout and batch norm

def dropout_with_mask(x: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with a given keep-mask: what ``F.dropout`` computes with its own random mask.

    Parameters
    ----------
    x : tensor of shape (N, D) (or any shape)
    mask : bool tensor shaped like ``x`` (True = keep), on x's device
    p : the drop probability the mask was drawn with

    Returns
    -------
    out : tensor shaped like ``x``: ``x * mask / (1 - p)``, zeros for ``p = 1`` (as PyTorch)
    """
    if p == 1.0:
        return x * 0.0  # keeps the graph: the gradient is 0 too
    return x * mask.to(x.dtype) / (1 - p)


def make_batchnorm(gamma: np.ndarray, beta: np.ndarray, running: Optional[BatchNormRunning] = None,
                   momentum: float = 0.1, eps: float = 1e-5, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float64) -> nn.BatchNorm1d:
    """An ``nn.BatchNorm1d`` holding the NumPy twin's parameters and running statistics.

    Parameters
    ----------
    gamma, beta : ndarrays of shape (D,), copied into ``weight`` and ``bias``
    running : BatchNormRunning to copy into ``running_mean`` / ``running_var`` (default: 0 and 1)
    momentum, eps : as :func:`numpy_impl.batchnorm_forward`
    device, dtype : where the layer lives
    """
    layer = nn.BatchNorm1d(len(gamma), eps=eps, momentum=momentum).to(device=device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(gamma))
        layer.bias.copy_(torch.as_tensor(beta))
        if running is not None:
            layer.running_mean.copy_(torch.as_tensor(running.mean))
            layer.running_var.copy_(torch.as_tensor(running.var))
    return layer


def running_stats(layer: nn.BatchNorm1d) -> BatchNormRunning:
    """The layer's running statistics as the NumPy twin's state (copies, on the CPU)."""
    return BatchNormRunning(layer.running_mean.detach().cpu().numpy().copy(),
                            layer.running_var.detach().cpu().numpy().copy())


# --------------------------------------------------------------------------- metrics on tensors

def accuracy(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """Fraction of correct predictions; ``y_true``, ``y_pred`` of shape (N,)."""
    return (y_true == y_pred).double().mean().item()


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[i, j]`` counts examples of class i predicted as j; int64 tensor of shape (K, K) on the inputs' device."""
    k = num_classes
    return torch.bincount(y_true.long() * k + y_pred.long(), minlength=k * k).reshape(k, k)


def precision_recall_f1(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int,
                        average: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision, recall, F1 per class (K,) or ``"macro"`` / ``"micro"`` (0-d); 0 where undefined."""
    cm = confusion_matrix(y_true, y_pred, num_classes).double()
    tp = cm.diagonal()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    elif average not in (None, "macro"):
        raise ValueError(f"average must be None, 'macro' or 'micro', got {average!r}")

    def ratio(num, den):  # zero_division=0
        return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))

    scores = ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    return scores if average is None else tuple(s.mean() for s in scores)


def roc_auc_score(y_true: torch.Tensor, y_score: torch.Tensor) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U): P(positive outscores negative), ties 1/2.

    Parameters
    ----------
    y_true : tensor of shape (N,), labels 0 and 1, both present
    y_score : float tensor of shape (N,)
    """
    pos = y_true == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the AUC needs labels 0 and 1, both present")
    score = y_score.double()
    # average rank of each score (1-based; tied scores share the mean of their ranks)
    sorted_scores, order = torch.sort(score)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()                    # last rank of each group of ties
    mean_rank = ends - (counts.double() - 1) / 2                # mean of ranks end - count + 1 .. end
    ranks = torch.empty_like(score)
    ranks[order] = mean_rank[inverse]
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2              # pairs (positive, negative) won, ties 1/2
    return (u / (n_pos * n_neg)).item()
