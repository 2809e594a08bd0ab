"""The PyTorch twin of chapter 03: the same training loop with ``torch.optim``, on any device.

``numpy_impl.sgd_step`` / ``rmsprop_step`` / ``adam_step`` are what
``torch.optim.SGD`` / ``RMSprop`` / ``Adam`` compute (the tests prove it step by
step in float64).  :func:`train_torch` trains the same MLP as
``numpy_impl.train_numpy``, from the same initial weights and on the same
shuffled mini-batches, so the two runs' curves can be laid on top of each other.

Dimension letters: N examples, D input features, H hidden units, K classes.
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

__all__ = ["TORCH_OPTIMIZERS", "make_optimizer", "evaluate_torch", "train_torch",
           "SCALE_UP", "scale_up_data", "download_failure_reason", "train_scaled_up"]

TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def make_optimizer(params, name: str = "adam", **hyper) -> torch.optim.Optimizer:
    """The ``torch.optim`` twin of ``numpy_impl.Optimizer(params, name, **hyper)``.

    The keyword arguments have the same names and meanings in both twins
    (``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``alpha``, ``eps``,
    ``betas``).
    """
    if name not in TORCH_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(TORCH_OPTIMIZERS)}")
    return TORCH_OPTIMIZERS[name](params, **hyper)


@torch.no_grad()
def evaluate_torch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``x`` (N, D), ``y`` (N,)."""
    logits = model(x)  # (N, K)
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
        batches = list(minibatches(len(x_train), batch_size, rng))  # the same batches as train_numpy
        order = torch.from_numpy(np.concatenate(batches)).to(device)  # one transfer per epoch
        for idx in torch.split(order, [len(b) for b in batches]):
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


# --------------------------------------------------------------------------- scaling up on a GPU

# The bigger run of the chapter's last section (only on CUDA): a wider, deeper MLP, more epochs.
SCALE_UP = dict(hidden=(512, 256), epochs=15, batch_size=128, lr=1e-3)


def scale_up_data(limit: Optional[int] = None, n_val: int = 10_000, seed: int = 0):
    """MNIST as a ``DigitsSplit`` for the scaled-up run, or the 8x8 digits if it cannot be downloaded.

    MNIST's 60,000 training images are shuffled (with ``seed``) and split into
    50,000 for training and ``n_val`` for validation; its 10,000 test images are
    the test set.  Images are flattened to 784 features in [0, 1].  ``limit``
    keeps only the first ``limit`` training and test images (for quick tests);
    the validation part is then a sixth of them.

    Returns
    -------
    data : ``dlcourse.data.DigitsSplit``
    description : one sentence saying which data set it is (and why, for the fallback)
    """
    from dlcourse.data import DigitsSplit, DownloadError, load_digits, load_mnist
    try:
        x, y = load_mnist("train")
        x_test, y_test = load_mnist("test")
    except DownloadError as err:
        reason = download_failure_reason(err)
        return load_digits(seed), f"MNIST could not be downloaded ({reason}); using the 8x8 digits instead"
    order = np.random.default_rng(seed).permutation(len(x))
    if limit is not None:
        order, x_test, y_test = order[:limit], x_test[:limit], y_test[:limit]
        n_val = len(order) // 6
    x = x.reshape(len(x), -1)  # (N, 28, 28) -> (N, 784)
    val, train = order[:n_val], order[n_val:]
    data = DigitsSplit(x[train], y[train], x[val], y[val], x_test.reshape(len(x_test), -1), y_test)
    return data, (f"MNIST: {len(train):,} training, {len(val):,} validation and "
                  f"{len(y_test):,} test images of 28x28 pixels")


def download_failure_reason(err: BaseException) -> str:
    """One line that says why a download failed, taken from ``err``'s message.

    ``dlcourse.data.download`` raises a header ("could not download NAME (tried
    N time(s)):"), then one indented line per failed attempt (the mirror and its
    error), then advice.  The header names no cause, so the reason is the last
    attempt's line; a message without attempt lines gives its first line that
    is not such a header.
    """
    lines = str(err).splitlines()
    attempts = [line.strip() for line in lines[1:] if line[:1].isspace() and line.strip()]
    if attempts:
        return attempts[-1]
    for line in lines:
        line = line.strip()
        if line and not (line.startswith("could not download") and line.endswith(":")):
            return line.rstrip(":")
    return type(err).__name__


def train_scaled_up(data, device: Optional[str] = None, hidden=SCALE_UP["hidden"],
                    epochs: int = SCALE_UP["epochs"], batch_size: int = SCALE_UP["batch_size"],
                    lr: float = SCALE_UP["lr"], progress: bool = True,
                    callback: Optional[Callable[[History], None]] = None) -> tuple[nn.Module, History]:
    """:func:`train_torch` with Adam and a cosine schedule on a wider MLP: D -> *hidden (H units each) -> K = 10.

    The input width D comes from ``data``, so the same call works on MNIST (784)
    and on the digits (64).
    """
    from dlcourse.optim.numpy_impl import cosine_lr
    sizes = (data.x_train.shape[1], *hidden, 10)
    return train_torch(data, sizes=sizes, optimizer="adam", lr=lr, epochs=epochs, batch_size=batch_size,
                       schedule=lambda e: cosine_lr(e, lr, epochs), device=device, progress=progress,
                       callback=callback)
