"""The PyTorch twin of chapter 03: the same training loop with ``torch.optim``, on any device.

``numpy_impl.sgd_step`` / ``rmsprop_step`` / ``adam_step`` are what
``torch.optim.SGD`` / ``RMSprop`` / ``Adam`` compute (the tests prove it step by
step in float64).  :func:`train_torch` trains the same MLP as
``numpy_impl.train_numpy``, from the same initial weights and on the same
shuffled mini-batches, so the two runs' curves can be laid on top of each other.

Dimension letters: N examples, D input features, C classes.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.optim.numpy_impl import History, _progress, _record, _report, minibatches

configure_torch()

__all__ = ["TORCH_OPTIMIZERS", "make_optimizer", "evaluate_torch", "train_torch"]

TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
}


def make_optimizer(params, name: str = "adam", **hyper) -> torch.optim.Optimizer:
    """The ``torch.optim`` twin of ``numpy_impl.Optimizer(params, name, **hyper)``.

    The keyword arguments have the same names and meanings in both twins
    (``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``alpha``, ``eps``,
    ``betas``, ``decoupled_weight_decay``).
    """
    if name not in TORCH_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(TORCH_OPTIMIZERS)}")
    return TORCH_OPTIMIZERS[name](params, **hyper)


@torch.no_grad()
def evaluate_torch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``x`` (N, D), ``y`` (N,)."""
    logits = model(x)  # (N, C)
    loss = F.cross_entropy(logits, y)
    correct = int((logits.argmax(dim=1) == y).sum())
    return float(loss), correct / len(y)


def train_torch(data=None, sizes=(64, 128, 10), optimizer: str = "adam", lr: float = 3e-3,
                epochs: int = 25, batch_size: int = 64,
                schedule: Optional[Callable[[int], float]] = None, seed: int = 0,
                device: Optional[str] = None, progress: bool = True,
                callback: Optional[Callable[[History], None]] = None,
                **hyper) -> tuple[nn.Module, History]:
    """Train an MLP classifier with ``torch.optim``; the twin of ``numpy_impl.train_numpy``.

    Same arguments as ``train_numpy`` plus ``device`` (default
    ``dlcourse.device()``).  The initial weights come from
    ``backprop.numpy_impl.init_mlp`` with the same seed and the batches from the
    same shuffled :func:`~dlcourse.optim.numpy_impl.minibatches`, so with equal
    arguments both twins take the same steps, up to float32 rounding.

    Returns
    -------
    model : the trained ``nn.Sequential`` (on ``device``)
    history : :class:`~dlcourse.optim.numpy_impl.History`
    """
    from dlcourse.backprop.numpy_impl import init_mlp
    from dlcourse.backprop.torch_impl import load_params, make_mlp
    from dlcourse.runtime import device as best_device
    if data is None:
        from dlcourse.data import load_digits
        data = load_digits()
    device = device or best_device()
    rng = np.random.default_rng(seed)
    model = load_params(make_mlp(list(sizes)), init_mlp(list(sizes), rng)).to(device)
    x_train, y_train, x_val, y_val, x_test, y_test = (torch.as_tensor(a, device=device) for a in data)
    opt = make_optimizer(model.parameters(), optimizer, lr=lr, **hyper)
    history = History()
    model.eval()
    _record(history, evaluate_torch(model, x_train, y_train), evaluate_torch(model, x_val, y_val))
    epoch_bar = _progress(range(epochs), progress, f"PyTorch ({device})")
    start, paused = time.perf_counter(), 0.0
    for epoch in epoch_bar:
        for group in opt.param_groups:  # what a scheduler does: set the rate of this epoch
            group["lr"] = schedule(epoch) if schedule is not None else lr
        history.lr.append(opt.param_groups[0]["lr"])
        model.train()
        losses = []
        for idx in minibatches(len(x_train), batch_size, rng):
            idx = torch.from_numpy(idx).to(device)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        history.step_loss.extend(torch.stack(losses).tolist())  # one device sync per epoch
        model.eval()
        _record(history, evaluate_torch(model, x_train, y_train), evaluate_torch(model, x_val, y_val))
        paused += _report(epoch_bar, history, callback)
    history.seconds = time.perf_counter() - start - paused
    history.test_acc = evaluate_torch(model, x_test, y_test)[1]
    return model, history
