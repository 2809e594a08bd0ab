"""The PyTorch twin of chapter 02: the same MLP, with autograd doing the backward pass.

``numpy_impl.mlp_forward`` / ``mlp_backward`` compute by hand what
``loss.backward()`` computes here; ``load_params`` copies NumPy parameters into
the model so that both twins start from identical weights.

Dimension letters: N batch, D input features, C classes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch

configure_torch()

__all__ = ["make_mlp", "load_params", "get_params", "loss_and_grads"]


def make_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU -> ... -> Linear`` with widths ``sizes`` (e.g. ``[64, 128, 10]``).

    ``list(model.parameters())`` is ``[w1, b1, w2, b2, ...]``, the order of
    ``numpy_impl.init_mlp``.
    """
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


@torch.no_grad()
def load_params(model: nn.Module, params: Sequence[np.ndarray]) -> nn.Module:
    """Copy a NumPy parameter list ``[w1, b1, ...]`` into ``model``'s parameters, in order.

    Values are converted to each parameter's dtype and device (``model.double()``
    first to compare in float64).  Returns ``model``.
    """
    targets = list(model.parameters())
    if len(targets) != len(params):
        raise ValueError(f"the model has {len(targets)} parameter tensors, got {len(params)} arrays")
    for i, (p, a) in enumerate(zip(targets, params)):
        if tuple(p.shape) != tuple(np.shape(a)):
            raise ValueError(f"parameter {i}: the model's shape is {tuple(p.shape)}, "
                             f"the array's is {tuple(np.shape(a))}")
        # convert the dtype on the CPU first (Apple GPUs have no float64), then move
        p.copy_(torch.as_tensor(np.asarray(a)).to(p.dtype))
    return model


def get_params(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as a list of NumPy arrays (copies, on the CPU)."""
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


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
