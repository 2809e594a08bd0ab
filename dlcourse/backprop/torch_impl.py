"""The PyTorch twin of chapter 02: the same MLP, with autograd doing the backward pass.

``numpy_impl.mlp_forward`` / ``mlp_backward`` compute by hand what
``loss.backward()`` computes here; ``load_params`` copies NumPy parameters into
the model so that both twins start from identical weights.

Dimension letters: N batch, D input features, H hidden units, K classes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.neurons.torch_impl import MLP, get_params, load_params  # chapter 01's, shared
from dlcourse.runtime import configure_torch

configure_torch()

__all__ = ["make_mlp", "load_params", "get_params", "loss_and_grads"]


def make_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` with widths ``sizes`` (e.g. ``[64, 128, 10]``).

    ``list(model.parameters())`` is ``[w1, b1, w2, b2, ...]``, the order of
    ``numpy_impl.init_mlp``.  It is chapter 01's ``MLP`` (ReLU hidden layers),
    unwrapped to its ``nn.Sequential``.
    """
    return MLP(sizes, activation="relu").net


def loss_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The twin of ``numpy_impl.mlp_loss_and_grads``: mean cross-entropy and every parameter's gradient.

    Parameters
    ----------
    model : the MLP, e.g. from :func:`make_mlp`
    x : tensor of shape (N, D) on the model's device
    y : int64 tensor of shape (N,)

    Returns
    -------
    loss : 0-d tensor
    grads : list of tensors ``[dw1, db1, ...]``, in the order of ``model.parameters()``
    """
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)  # the whole backward pass, by autograd
    return loss.detach(), list(grads)
