"""The PyTorch twin of chapter 01: activations, a neuron and an MLP as ``nn.Module``\\ s.

``numpy_impl`` computes every activation and its derivative by hand; here the
activations are PyTorch's own (``torch.relu``, ``torch.sigmoid``, ``torch.tanh``,
``F.gelu``) and the derivatives come from autograd (:func:`activation_grad`).
The tests prove the two twins agree in float64.

Everything follows its inputs' device: build the model, then
``model.to(dlcourse.device())``.  :func:`train` fits a model with autograd and
Adam; how the gradients are computed is chapter 02, how Adam uses them chapter 03.

Dimension letters (DESIGN.md's glossary): N batch, D input features, H hidden units, K outputs.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch

configure_torch()

__all__ = ["ACTIVATIONS", "activation_module", "activation_grad", "Neuron", "MLP",
           "load_params", "get_params", "train"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": lambda x: torch.logaddexp(x, torch.zeros_like(x)),  # log(1 + e^x), stable everywhere
    "silu": F.silu,
    "gelu": F.gelu,                                         # exact: x * Phi(x)
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # the tanh approximation
}
"""name -> PyTorch function, the same names as ``numpy_impl.ACTIVATIONS``."""


class _Softplus(nn.Module):
    """``log(1 + e^x)`` exactly (``nn.Softplus`` returns ``x`` itself past its threshold of 20)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS["softplus"](x)


def activation_module(name: str) -> nn.Module:
    """The ``nn.Module`` for an activation name (what goes inside an ``nn.Sequential``)."""
    modules = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
               "softplus": _Softplus, "silu": nn.SiLU,
               "gelu_tanh": lambda: nn.GELU(approximate="tanh")}
    if name not in modules:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(modules)}")
    return modules[name]()


def activation_grad(name: str, x: torch.Tensor) -> torch.Tensor:
    """The derivative ``f'(x)`` of activation ``name``, elementwise, by autograd.

    An activation acts on each element alone, so its Jacobian is diagonal and
    the vector-Jacobian product with a vector of ones is exactly the vector of
    derivatives ``f'(x_i)``.

    Parameters
    ----------
    name : a key of :data:`ACTIVATIONS`
    x : tensor of any shape (not modified)

    Returns
    -------
    grad : tensor shaped like ``x``
    """
    x = x.detach().clone().requires_grad_(True)
    y = ACTIVATIONS[name](x)
    (grad,) = torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y))
    return grad


class Neuron(nn.Module):
    """One neuron: ``f(x @ w + b)``; ``numpy_impl.neuron_forward`` is its twin.

    Attributes: ``linear`` (an ``nn.Linear(in_features, 1)``: weight (1, D), bias (1,)).
    Shape: input (N, D), output (N,).
    """

    def __init__(self, in_features: int, activation: str = "sigmoid"):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)
        self.activation = activation_module(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x).squeeze(-1)  # (N, 1) -> (N,)
        return self.activation(z)


class MLP(nn.Module):
    """Dense layers with an activation after every hidden layer; the output layer stays linear.

    ``MLP([2, 16, 3])`` is Linear(2, 16) -> ReLU -> Linear(16, 3).
    ``list(model.parameters())`` is ``[w1, b1, w2, b2, ...]``, the parameter
    list of ``numpy_impl.mlp_forward``.
    Shape: input (N, sizes[0]), output (N, sizes[-1]).
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least an input and an output size")
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(activation_module(activation))
            layers.append(nn.Linear(fan_in, fan_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@torch.no_grad()
def load_params(model: nn.Module, params: Sequence[np.ndarray]) -> nn.Module:
    """Copy NumPy arrays ``[w1, b1, ...]`` into ``model.parameters()``, in order; returns ``model``.

    Each array is converted to its parameter's dtype and device, so call
    ``model.double()`` first to compare the twins in float64.
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
    """The model's parameters as NumPy arrays (copies on the CPU), in ``parameters()`` order."""
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy",
          steps: int = 500, lr: float = 1e-2) -> list[float]:
    """Fit ``model`` to ``(x, y)`` by full-batch gradient steps; returns the loss after each step.

    Autograd computes the gradients (chapter 02 does it by hand) and
    ``torch.optim.Adam`` takes the steps (chapter 03 explains it).  ``x`` and
    ``y`` must be on the model's device.

    Parameters
    ----------
    model : maps (N, D) to (N, K)
    x : tensor of shape (N, D)
    y : int64 tensor of shape (N,) for ``"cross_entropy"``; tensor of shape (N, K) for ``"mse"``
    loss : ``"cross_entropy"`` (classification) or ``"mse"`` (regression)
    steps : number of gradient steps
    lr : Adam's learning rate

    Returns
    -------
    losses : list of ``steps`` floats
    """
    loss_fn = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}[loss]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        value = loss_fn(model(x), y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(value.detach())
    return [float(v) for v in torch.stack(history).cpu()]  # one device sync at the end
