"""The PyTorch side of chapter 10: measure what a model costs, then cut the cost.

:mod:`dlcourse.efficiency.numpy_impl` does every idea by hand (FLOPs counted from the shapes,
magnitude masks, affine quantization, the distillation loss and its gradient); here the same
ideas run on real PyTorch models with PyTorch's own tools:

* the chapter's models, trained once per process and cached: :func:`digits_mlp` (the
  ``Linear(64, 256) - ReLU - Linear(256, 256) - ReLU - Linear(256, 10)`` MLP that the chapter
  compresses), :func:`student_mlp` (an untrained small MLP for distillation) and
  :func:`digits_cnn` (chapter 05's ``SmallCNN``); one small training loop, :func:`train`,
  serves every study below (retraining a pruned net, distillation), and :func:`accuracy`;
* cost: :func:`count_params`, :func:`model_bytes`, :func:`flops` (``FlopCounterMode``),
  :func:`latency`, :func:`throughput`, :func:`profile` (``torch.profiler``) and
  :func:`energy_estimate`;
* pruning (Han et al. 2015): :func:`prune_global`, :func:`prune_structured`,
  :func:`pruning_curve`, :func:`pruning_latency`;
* quantization (Jacob et al. 2018): :func:`dynamic_int8`, :func:`fake_quant_model`,
  :func:`bits_curve`, :func:`qat_study`;
* distillation (Hinton et al. 2015): :func:`distill_loss`, :func:`distillation_study`;
* mixed precision (Micikevicius et al. 2018) and compilation: :func:`autocast_speedup`,
  :func:`overflow_demo`, :func:`compile_study`;
* :func:`scale_up`: MNIST to 99 % test accuracy as fast as a GPU allows (CUDA only).

Everything that trains or runs a model follows the model's device (the course runs the CPU
with ONE thread, :mod:`dlcourse.runtime`).  Timings on a shared machine are pessimistic.

FLOPs convention (the chapter's): one multiply-add (MAC) = 2 FLOPs, counting only the
matrix products of dense and convolution layers (no bias adds, no activations), which is what
``torch.utils.flop_counter.FlopCounterMode`` counts.

Dimension letters (the course glossary)
---------------------------------------
N    batch size
D    input features (64 for the 8x8 digits)
H    hidden units
K    classes (10)
C    channels; kH, kW kernel size; H_img, W_img image size
S    steps (of training, of a curve)
"""
from __future__ import annotations

import copy
import functools
import io
import math
import statistics
import time
import warnings
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.torch_impl import _fork_rng, _model_device, _sync

configure_torch()

__all__ = ["MLP_RECIPE", "digits_mlp", "student_mlp", "digits_cnn", "train", "accuracy", "model_input",
           "count_params", "model_bytes", "flops", "latency", "throughput", "ProfileResult", "profile",
           "CPU_WATTS", "H100_WATTS", "energy_estimate"]


# --------------------------------------------------------------------------- the chapter's models

# digits_mlp: Adam, lr 1e-3, batches of 64, 30 epochs, seeded.
MLP_RECIPE = dict(hidden=256, epochs=30, lr=1e-3, batch=64)


def digits_mlp(seed: int = 0, hidden: int = 256) -> nn.Sequential:
    """The MLP this chapter compresses, trained on the digits and cached.

    ``Sequential(Linear(64, H), ReLU(), Linear(H, H), ReLU(), Linear(H, 10))``, trained once
    per process, seed and width on ``load_digits(seed).x_train`` with :func:`train` (Adam,
    :data:`MLP_RECIPE`), on the CPU, in eval mode.  The SAME object comes back on every call:
    never modify it (``copy.deepcopy`` it first).  Its ``state_dict`` keys ("0.weight" (H, D),
    "0.bias" (H,), "2.weight" (H, H), "2.bias", "4.weight" (K, H), "4.bias") are the NumPy
    twin's weight dict keys.

    Shape: (N, 64) -> (N, 10) logits.
    """
    return _trained_mlp(int(seed), int(hidden))


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them (none after the last)."""
    layers = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@functools.lru_cache(maxsize=4)
def _trained_mlp(seed: int, hidden: int) -> nn.Sequential:
    from dlcourse.data import load_digits
    d = load_digits(seed)
    r = MLP_RECIPE
    with _fork_rng("cpu"):
        torch.manual_seed(seed)
        model = _mlp((64, hidden, hidden, 10))
    train(model, d.x_train, d.y_train, epochs=r["epochs"], lr=r["lr"], batch=r["batch"], seed=seed)
    return model.eval()


def student_mlp(hidden: int = 32, seed: int = 0) -> nn.Sequential:
    """An untrained small MLP, ``Sequential(Linear(64, H), ReLU(), Linear(H, 10))``, seeded.

    A NEW model on every call (PyTorch's default initialisation under ``torch.manual_seed(seed)``,
    the global generator left as it was): the student of :func:`distillation_study`.
    """
    with _fork_rng("cpu"):
        torch.manual_seed(seed)
        return _mlp((64, hidden, 10))


def digits_cnn(seed: int = 0) -> nn.Module:
    """Chapter 05's ``SmallCNN`` trained on the digits: :func:`dlcourse.xai.torch_impl.digits_cnn`.

    The same cached object (never modify it; ``copy.deepcopy`` it first), in eval mode.
    Shape: (N, 1, 8, 8) images -> (N, 10) logits (:func:`model_input` reshapes (N, 64) rows).
    """
    from dlcourse.xai.torch_impl import digits_cnn as cached_cnn
    return cached_cnn(seed)


def model_input(model: nn.Module, x) -> torch.Tensor:
    """``x`` as ``model`` expects it (images for a conv-first model, flat rows for an MLP), on its device.

    NumPy arrays are converted; the dtype is the model's first floating parameter's (float32 for
    a dynamically quantized model, which keeps float activations).
    """
    from dlcourse.xai.torch_impl import _first_layer
    device, dtype = _device_dtype(model)
    x = torch.as_tensor(x, device=device)
    x = x.to(dtype) if x.is_floating_point() else x.float()
    first = _first_layer(model)
    if isinstance(first, nn.Conv2d) and x.ndim == 2:
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(-1, 1, side, side)                   # (N, D) -> (N, 1, H_img, W_img)
    elif first is not None and not isinstance(first, nn.Conv2d) and x.ndim > 2:
        x = x.reshape(x.shape[0], -1)                      # (N, C, H_img, W_img) -> (N, D)
    return x


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and float dtype of a model's parameters (CPU, float32 when it has none: quantized)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def accuracy(model: nn.Module, x, y) -> float:
    """Fraction of ``x`` (N, 64) or (N, 1, 8, 8) that ``model`` classifies as ``y`` (N,), no gradient."""
    xm = model_input(model, x)
    with torch.no_grad():
        pred = model(xm).argmax(1)
    return float((pred == torch.as_tensor(y, device=pred.device)).double().mean())


# --------------------------------------------------------------------------- one training loop

def _batch_targets(targets, idx):
    return tuple(t[idx] for t in targets)


def train(model: nn.Module, x, y, *, epochs: Optional[int] = None, steps: Optional[int] = None,
          lr: float = 1e-3, batch: int = 64, seed: int = 0, masks: Optional[dict] = None,
          loss_fn: Optional[Callable] = None, progress: bool = False,
          callback: Optional[Callable] = None) -> np.ndarray:
    """Train ``model`` IN PLACE with Adam on shuffled mini-batches; return the loss of every step.

    Parameters
    ----------
    model : nn.Module, on any device (the data follow it)
    x : (N, D) or (N, C, H_img, W_img) inputs (ndarray or tensor; :func:`model_input` shapes them)
    y : (N,) int labels, or a tuple of tensors whose first axis is N (all indexed by the same
        batch: e.g. labels and a teacher's logits (N, K)), passed to ``loss_fn`` after the logits
    epochs, steps : how long (exactly one of them); ``steps`` may run over several epochs
    lr, batch, seed : Adam's learning rate, the batch size, the seed of the shuffling order
    masks : dict name -> {0, 1} tensor of that parameter's shape (from :func:`prune_global`):
        re-applied after every optimizer step, so pruned weights stay zero — retraining a
        pruned net (Han et al. 2015).  Adam's moments would otherwise move them off zero.
    loss_fn : ``loss_fn(logits, *batch_targets) -> scalar``; default ``F.cross_entropy``
    progress : show a tqdm bar;  callback : ``callback(step, loss, model)`` after every step

    Returns
    -------
    losses : ndarray (S,) float
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs= and steps=")
    device = _model_device(model)
    xm = model_input(model, x)
    targets = tuple(torch.as_tensor(t, device=device) for t in (y if isinstance(y, tuple) else (y,)))
    loss_fn = loss_fn or F.cross_entropy
    n = len(xm)
    per_epoch = math.ceil(n / batch)
    total = steps if steps is not None else epochs * per_epoch
    params = dict(model.named_parameters())
    masks = {k: torch.as_tensor(m, device=device, dtype=params[k].dtype) for k, m in (masks or {}).items()}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc="train")
    losses = []
    was_training = model.training
    model.train()
    with torch.enable_grad():
        _apply_masks(params, masks)
        step = 0
        while step < total:
            order = torch.randperm(n, generator=gen).to(device)
            for begin in range(0, n, batch):
                if step == total:
                    break
                idx = order[begin:begin + batch]
                loss = loss_fn(model(xm[idx]), *_batch_targets(targets, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _apply_masks(params, masks)
                losses.append(loss.item())
                step += 1
                if callback is not None:
                    callback(step, losses[-1], model)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return np.asarray(losses)


@torch.no_grad()
def _apply_masks(params: dict, masks: dict) -> None:
    for name, m in masks.items():
        params[name].mul_(m)


# --------------------------------------------------------------------------- cost

def _weights_and_biases(model: nn.Module):
    """Every weight/bias tensor of a float model, or of a dynamically quantized one (packed params)."""
    out = []
    for mod in model.modules():
        if hasattr(mod, "_packed_params") and callable(getattr(mod, "weight", None)):
            w = mod.weight()                                # a quantized tensor (int8 + scales)
            b = mod.bias() if callable(getattr(mod, "bias", None)) else None
            out += [w] + ([b] if b is not None else [])
        else:
            out += list(mod.parameters(recurse=False))
    return out


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (or of NONZERO ones: what unstructured pruning leaves).

    Works for a dynamically quantized model too (its int8 weights are packed, not
    ``parameters()``: they are read back with ``module.weight()``).
    """
    total = 0
    for t in _weights_and_biases(model):
        if nonzero:
            t = t.dequantize() if t.is_quantized else t
            total += int(torch.count_nonzero(t))
        else:
            total += t.numel()
    return total


def model_bytes(model: nn.Module) -> int:
    """Size in bytes of the serialized ``state_dict`` (``torch.save`` into memory).

    What a checkpoint on disk weighs: 4 bytes per float32 parameter plus a small pickle
    overhead (names, shapes; a few hundred bytes per tensor).  It works for a dynamically
    quantized model (int8 weights, one float scale per tensor or channel, float biases), so the
    ratio float / int8 is near but below 4.  A pruned model stored densely weighs the same as
    the dense one: zeros cost 4 bytes each unless stored in a sparse format.
    """
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def flops(model: nn.Module, x) -> int:
    """FLOPs of one forward pass on the batch ``x``, by ``torch.utils.flop_counter.FlopCounterMode``.

    FlopCounterMode counts 2 FLOPs per multiply-add of matrix products and convolutions
    (``addmm``, ``mm``, ``convolution``...) and nothing for bias adds, ReLU or pooling: the
    chapter's convention, so it equals ``numpy_impl``'s ``dense_cost`` / ``conv2d_cost`` flops
    summed over the layers, times N.  Divide by ``len(x)`` for FLOPs per example.
    """
    from torch.utils.flop_counter import FlopCounterMode
    xm = model_input(model, x)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(xm)
    return int(counter.get_total_flops())


def latency(model: nn.Module, x, repeats: int = 30, warmup: int = 3) -> float:
    """Median seconds of one forward pass on the batch ``x`` (no gradient), device-synced.

    ``warmup`` calls first (the first calls allocate memory and choose kernels), then
    ``repeats`` timed calls, each between two device syncs (CUDA kernels run asynchronously:
    a clock read without a sync measures only the launch).  The median resists the spikes of
    a shared machine.
    """
    xm = model_input(model, x)
    device = xm.device
    times = []
    with torch.no_grad():
        for k in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            model(xm)
            _sync(device)
            if k >= warmup:
                times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def throughput(model: nn.Module, x, repeats: int = 30, warmup: int = 3) -> float:
    """Examples per second at the batch size of ``x``: ``len(x) / latency``."""
    return len(x) / latency(model, x, repeats, warmup)


class ProfileResult(NamedTuple):
    table: str                              # torch.profiler's key_averages table, sorted by self time
    top: list                               # [(op name, self CPU microseconds in total, calls)], most expensive first


def profile(model: nn.Module, x, repeats: int = 10, row_limit: int = 8) -> ProfileResult:
    """Where the time of ``repeats`` forward passes goes, by ``torch.profiler`` (CPU activity).

    The ops are aggregated with ``key_averages()`` and sorted by their SELF time (the time
    inside the op itself, not in the ops it calls).  One warm-up call runs first.
    """
    from torch.profiler import ProfilerActivity, profile as torch_profile
    xm = model_input(model, x)
    with torch.no_grad():
        model(xm)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(xm)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [(e.key, float(e.self_cpu_time_total), int(e.count)) for e in events[:row_limit]]
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)
    return ProfileResult(table, top)


# Power draws for energy_estimate (assumptions, not measurements):
# a 15 W laptop processor package, e.g. Intel's U-series (Intel ARK: Core i5-8250U, "TDP 15 W");
# one thread of it draws at most about that.
CPU_WATTS = 15.0
# NVIDIA H100 SXM5: "Max thermal design power (TDP) up to 700 W" (NVIDIA H100 Tensor Core GPU
# datasheet); the PCIe card is 350 W.
H100_WATTS = 700.0


def energy_estimate(seconds: float, watts: float = CPU_WATTS) -> dict:
    """Energy of ``seconds`` of compute at a constant power draw of ``watts``: an ESTIMATE.

    E = P * t.  The draw is an assumption, not a measurement: the default is
    :data:`CPU_WATTS` (a 15 W laptop processor); :data:`H100_WATTS` is the H100 SXM's 700 W
    TDP.  A real chip draws less when idle and the rest of the machine (memory, fans, power
    supply losses) adds to it; measure with a power meter or RAPL / ``nvidia-smi`` for numbers.

    Returns
    -------
    dict: ``joules``, ``wh`` (watt-hours = J / 3600), ``watts`` (the assumption), ``seconds``
    """
    joules = float(watts) * float(seconds)
    return dict(joules=joules, wh=joules / 3600.0, watts=float(watts), seconds=float(seconds))
