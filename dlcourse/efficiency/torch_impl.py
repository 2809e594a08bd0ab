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

import contextlib
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
           "CPU_WATTS", "H100_WATTS", "energy_estimate",
           "prune_global", "prune_structured", "pruning_curve", "SparseMLP", "pruning_latency",
           "dynamic_int8", "weight_qparams", "fake_quant_weight", "fake_quant_model", "bits_curve",
           "FakeQuantWrapper", "qat_study", "distill_loss", "distillation_study",
           "Autocast", "autocast_speedup", "overflow_demo", "compile_study", "FastCNN", "scale_up"]


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


# --------------------------------------------------------------------------- pruning (Han et al. 2015)

def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear and Conv2d: their weights are pruned, never their biases."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def prune_global(model: nn.Module, sparsity: float) -> tuple[nn.Module, dict]:
    """Global magnitude pruning of a COPY of ``model``: one threshold over all its weights.

    ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` ranks |w| over every
    Linear / Conv2d weight together and zeroes the ``round(sparsity * n)`` smallest; then
    ``prune.remove`` makes it permanent (the weight holds the zeros, no mask buffer and hook
    remain).  Biases are not pruned.  Han et al. (2015), "Learning both Weights and Connections
    for Efficient Neural Networks": prune the small weights, then retrain the rest
    (:func:`train` with ``masks=``).

    Returns
    -------
    pruned : a deep copy of ``model`` with the zeros in place (the input is untouched)
    masks : dict "layer.weight" -> {0, 1} float tensor of that weight's shape (the masks of
        ``numpy_impl.magnitude_masks(weights, sparsity, scope="global")`` for distinct |w|)
    """
    from torch.nn.utils import prune
    pruned = copy.deepcopy(model)
    layers = _prunable(pruned)
    if sparsity > 0:
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                  amount=float(sparsity))
    masks = {}
    for name, m in layers:
        if sparsity > 0:
            masks[f"{name}.weight"] = m.weight_mask.detach().clone()
            prune.remove(m, "weight")                      # weight = weight_orig * mask, for good
        else:
            masks[f"{name}.weight"] = torch.ones_like(m.weight)
    return pruned, masks


def _linear_chain(model: nn.Module) -> list[nn.Linear]:
    linears = [m for m in model if isinstance(m, nn.Linear)] if isinstance(model, nn.Sequential) else []
    if len(linears) < 2 or any(not isinstance(m, (nn.Linear, nn.ReLU)) for m in model):
        raise TypeError("prune_structured needs an nn.Sequential of Linear and ReLU layers (an MLP)")
    return linears


def prune_structured(model: nn.Module, fraction: float) -> nn.Sequential:
    """A physically SMALLER MLP: the ``fraction`` of hidden units of smallest L1 norm removed per layer.

    For every hidden layer l (all Linear layers but the last), the units are ranked by the L1
    norm of their incoming weight row ``w_l[j, :]`` (ties: the lower index goes first, a stable
    sort, as ``numpy_impl.structured_masks``) and ``round(fraction * H_l)`` of them are deleted:
    row j of ``w_l`` and ``b_l`` and COLUMN j of ``w_{l+1}``.  A unit whose weight row is masked
    to zero still outputs the constant ``ReLU(b_j)``; that constant times ``w_{l+1}[:, j]`` is
    folded into ``b_{l+1}``, so the small MLP computes exactly what the structurally masked one
    does (``numpy_impl.shrink_mlp``).  It is an ordinary dense MLP with fewer hidden units: it
    is faster on any dense kernel, unlike unstructured zeros.  ``model`` is untouched.

    Shape: (N, D) -> (N, K), hidden widths H_l -> H_l - round(fraction * H_l).
    """
    linears = _linear_chain(model)
    device, dtype = _device_dtype(model)
    sizes, new_w, new_b = [linears[0].in_features], [], []
    keep_in = torch.arange(linears[0].in_features, device=device)
    dropped_in, constant_in = keep_in[:0], None            # units removed below and their constant output
    with torch.no_grad():
        for l, m in enumerate(linears):
            w, b = m.weight, m.bias                         # (H_l, H_{l-1}), (H_l,)
            if l < len(linears) - 1:
                scores = w.abs().sum(1)                     # (H_l,) L1 norm of each unit's row
                order = torch.sort(scores, stable=True).indices          # smallest first
                n_drop = int(round(fraction * len(scores)))
                keep_out = torch.sort(order[n_drop:]).values             # survivors, original order
                dropped_out = torch.sort(order[:n_drop]).values
            else:
                keep_out, dropped_out = torch.arange(w.shape[0], device=device), None
            bias = b[keep_out].clone()
            if constant_in is not None and len(dropped_in):
                bias += w[keep_out][:, dropped_in] @ constant_in         # fold ReLU(b_j) of the removed units
            new_w.append(w[keep_out][:, keep_in])
            new_b.append(bias)
            sizes.append(len(keep_out))
            if dropped_out is not None:
                dropped_in, constant_in = dropped_out, torch.relu(b[dropped_out])
            keep_in = keep_out
    small = _mlp(sizes).to(device=device, dtype=dtype)
    with torch.no_grad():
        for m, w, b in zip(_linear_chain(small), new_w, new_b):
            m.weight.copy_(w)
            m.bias.copy_(b)
    return small.train(model.training)


def pruning_curve(sparsities: Sequence[float] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98), retrain_steps: int = 300,
                  seed: int = 0, lr: float = 1e-3, model: Optional[nn.Module] = None) -> dict:
    """Test accuracy of the pruned :func:`digits_mlp` against sparsity, without and with retraining.

    Each sparsity: :func:`prune_global` of the trained MLP (one-shot), its accuracy, then
    ``retrain_steps`` Adam steps (lr ``lr``, batch 64) on the training images with the masks
    re-applied after every step, and the accuracy again.

    Returns
    -------
    dict: ``sparsity`` (S,), ``pruned`` (S,) accuracy right after pruning, ``retrained`` (S,),
    ``dense`` the unpruned accuracy, ``nonzero`` (S,) weights left
    """
    from dlcourse.data import load_digits
    d = load_digits(seed)
    model = model if model is not None else digits_mlp(seed)
    out = dict(sparsity=np.asarray(sparsities, float), pruned=[], retrained=[], nonzero=[],
               dense=accuracy(model, d.x_test, d.y_test))
    for s in sparsities:
        pruned, masks = prune_global(model, s)
        out["pruned"].append(accuracy(pruned, d.x_test, d.y_test))
        if retrain_steps > 0:
            train(pruned, d.x_train, d.y_train, steps=retrain_steps, lr=lr, batch=64, seed=seed, masks=masks)
        out["retrained"].append(accuracy(pruned.eval(), d.x_test, d.y_test))
        out["nonzero"].append(int(sum(int(m.sum()) for m in masks.values())))
    for k in ("pruned", "retrained", "nonzero"):
        out[k] = np.asarray(out[k])
    return out


class SparseMLP(nn.Module):
    """An MLP whose weights are stored as ``torch.sparse_csr`` matrices (only the nonzeros).

    ``y = (W_csr @ x^T)^T + b`` per layer, with ReLU between layers: the sparse kernel does work
    proportional to the nonzeros, but with irregular memory access (CPU only here).
    Shape: (N, D) -> (N, K).
    """

    def __init__(self, model: nn.Sequential):
        super().__init__()
        linears = _linear_chain(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)                      # "sparse CSR support is in beta"
            self.weights = [m.weight.detach().to_sparse_csr() for m in linears]   # (H_out, H_in) CSR
        self.biases = [m.bias.detach().clone() for m in linears]
        self.dummy = nn.Parameter(torch.zeros(()), requires_grad=False)       # gives the module a device/dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.T                                                               # (D, N)
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = w @ h + b[:, None]                                            # (H_out, N)
            if l < len(self.weights) - 1:
                h = torch.relu(h)
        return h.T                                                            # (N, K)


def pruning_latency(batch: int = 256, sparsity: float = 0.9, fraction: float = 0.5, seed: int = 0,
                    repeats: int = 30) -> list[dict]:
    """Latency of the dense, unstructured-pruned, sparse-CSR and structured-pruned MLPs.

    Unstructured zeros change nothing for a dense matrix product (it multiplies the zeros
    too), so the pruned model runs at the dense speed; the same weights as CSR matrices skip
    the zeros but pay for irregular access; structured pruning (``fraction`` of the hidden units
    removed) gives a smaller DENSE model that is simply faster.  Timed with :func:`latency`
    (median of ``repeats``) on ``batch`` test-like rows; one thread; shared machines add noise.

    Returns
    -------
    list of dict: ``name``, ``seconds``, ``params`` (nonzero), ``accuracy`` (test, no retraining)
    """
    from dlcourse.data import load_digits
    d = load_digits(seed)
    x = torch.as_tensor(np.resize(d.x_test, (batch, d.x_test.shape[1])))   # (N, D): the test set, repeated
    dense = digits_mlp(seed)
    pruned, _ = prune_global(dense, sparsity)
    sparse = SparseMLP(pruned)
    small = prune_structured(dense, fraction)
    rows = []
    for name, m in (("dense fp32", dense), (f"{sparsity:.0%} unstructured (dense kernel)", pruned),
                    (f"{sparsity:.0%} unstructured (CSR kernel)", sparse),
                    (f"structured {fraction:.0%} of hidden units removed", small)):
        src = pruned if m is sparse else m
        rows.append(dict(name=name, seconds=latency(m, x, repeats=repeats), params=count_params(src, nonzero=True),
                         accuracy=accuracy(m, d.x_test, d.y_test)))
    return rows


# --------------------------------------------------------------------------- quantization (Jacob et al. 2018)

def dynamic_int8(model: nn.Module) -> nn.Module:
    """Post-training DYNAMIC int8 quantization of a copy of ``model``'s Linear layers (CPU only).

    ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``: every
    Linear weight is stored as int8 with a float scale (the affine scheme of Jacob et al. 2018,
    "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
    Inference"); at run time each batch of activations is quantized on the fly ("dynamic": its
    range measured per batch), the product runs in integer arithmetic (FBGEMM / oneDNN
    kernels) and the result comes back as float.  About 4x smaller; faster for large batches,
    and SLOWER for tiny ones, where quantizing the input costs more than it saves.  The
    quantized kernels exist for the CPU only: the copy is moved to the CPU in float32.

    ``torch.ao.quantization`` is being deprecated: the PyTorch docs point to torchao
    (https://github.com/pytorch/ao, ``torchao.quantization.quantize_``) as its replacement, and
    torch 2.10+ warns on use.  The course keeps the eager API for its simplicity and
    silences those warnings here (``warnings.catch_warnings``).
    """
    cpu = copy.deepcopy(model).to("cpu", torch.float32).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)        # "quantized tensor creation ... deprecated"
        warnings.simplefilter("ignore", FutureWarning)
        return torch.ao.quantization.quantize_dynamic(cpu, {nn.Linear}, dtype=torch.qint8)


def weight_qparams(w: torch.Tensor, bits: int = 8, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine (asymmetric, unsigned ``0 .. 2^bits - 1``) scale and INTEGER zero point of a weight.

    The range [min, max] is extended to include 0 (so 0 is exactly representable, which
    pruned weights and zero padding need); ``scale = (max - min) / (qmax - qmin)``;
    ``zero_point = clamp(qmin - round(min / scale), qmin, qmax)``.  Per channel: one pair per
    output row / channel (axis 0), computed in float64.  The scale is floored at float32's eps
    (as torch's observers and ``numpy_impl.qparams`` do), which an all-zero row needs.

    Returns
    -------
    scale : float32 tensor (C_out,) per channel, or () per tensor;  zero_point : int32, same shape
    """
    qmin, qmax = 0, 2 ** bits - 1
    w64 = w.detach().double()
    flat = w64.reshape(w64.shape[0], -1) if per_channel else w64.reshape(1, -1)
    lo = flat.min(1).values.clamp(max=0.0)
    hi = flat.max(1).values.clamp(min=0.0)
    scale = (hi - lo) / (qmax - qmin)
    scale = scale.clamp(min=torch.finfo(torch.float32).eps)
    zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    if not per_channel:
        scale, zp = scale[0], zp[0]
    return scale.float(), zp.to(torch.int32)


def fake_quant_weight(w: torch.Tensor, bits: int = 8, per_channel: bool = True) -> torch.Tensor:
    """``w`` quantized to ``bits`` bits and back (float), by ``torch.fake_quantize_per_*_affine``.

    Differentiable with the straight-through estimator: the gradient passes unchanged where the
    rounded value lies inside [qmin, qmax] and is 0 where it was clamped.
    Shape: same as ``w`` ((C_out, C_in) or (C_out, C_in, kH, kW)).
    """
    scale, zp = weight_qparams(w, bits, per_channel)
    scale, zp = scale.to(w.device), zp.to(w.device)
    if per_channel:
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, 0, 2 ** bits - 1)
    return torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), 0, 2 ** bits - 1)


def fake_quant_model(model: nn.Module, bits: int = 8, per_channel: bool = True) -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d weights are fake-quantized (weight-only, ``bits`` bits).

    Simulates storing the weights in ``bits``-bit integers: the copy holds the dequantized
    values ``(q - zero_point) * scale`` in float, so it runs anywhere and its accuracy is the
    accuracy the quantized weights would give.  Biases and activations stay float.
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for _, m in _prunable(out):
            m.weight.copy_(fake_quant_weight(m.weight, bits, per_channel))
    return out


def bits_curve(bits: Sequence[int] = (8, 6, 4, 3, 2), seed: int = 0, model: Optional[nn.Module] = None) -> dict:
    """Test accuracy of :func:`digits_mlp` with weight-only fake quantization, per tensor vs per channel.

    One scale for a whole matrix must cover its largest weight, so rows with small weights get
    few levels; one scale per output row (per channel) adapts to each: at low bit widths the
    difference is large.

    Returns
    -------
    dict: ``bits`` (B,), ``per_tensor`` (B,), ``per_channel`` (B,), ``float`` (the unquantized accuracy)
    """
    from dlcourse.data import load_digits
    d = load_digits(seed)
    model = model if model is not None else digits_mlp(seed)
    acc = lambda pc: np.array([accuracy(fake_quant_model(model, b, pc), d.x_test, d.y_test) for b in bits])
    return dict(bits=np.asarray(bits), per_tensor=acc(False), per_channel=acc(True),
                float=accuracy(model, d.x_test, d.y_test))


class FakeQuantWrapper(nn.Module):
    """Runs ``model`` with its Linear / Conv2d weights fake-quantized on every forward pass.

    Quantization-aware training: the loss sees the quantized weights, and the gradient reaches
    the float weights through the straight-through estimator of
    ``torch.fake_quantize_per_channel_affine`` (Jacob et al. 2018, section 3).  The scales are
    recomputed from the current weights at every call (not learned).  Shape: that of ``model``.
    """

    def __init__(self, model: nn.Module, bits: int = 4, per_channel: bool = True):
        super().__init__()
        self.model, self.bits, self.per_channel = model, bits, per_channel
        self.names = [f"{name}.weight" for name, _ in _prunable(model)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self.model.named_parameters())
        quantized = {k: fake_quant_weight(params[k], self.bits, self.per_channel) for k in self.names}
        return torch.func.functional_call(self.model, quantized, (x,))


def qat_study(bits: int = 2, steps: int = 300, lr: float = 1e-4, seed: int = 0) -> dict:
    """Post-training quantization (PTQ) vs quantization-aware training (QAT) of :func:`digits_mlp`.

    PTQ: fake-quantize the trained weights to ``bits`` bits (per channel), nothing else.
    QAT: fine-tune a copy for ``steps`` Adam steps THROUGH the fake quantization
    (:class:`FakeQuantWrapper`), then quantize it the same way.  A control fine-tunes a copy for
    the same steps WITHOUT fake quantization (so a gain is not just more training).

    Returns
    -------
    dict of test accuracies: ``float``, ``ptq``, ``qat``, ``finetuned_then_ptq``; ``bits``, ``steps``
    """
    from dlcourse.data import load_digits
    d = load_digits(seed)
    base = digits_mlp(seed)
    acc = lambda m: accuracy(m, d.x_test, d.y_test)
    qat_model = copy.deepcopy(base)
    train(FakeQuantWrapper(qat_model, bits), d.x_train, d.y_train, steps=steps, lr=lr, seed=seed)
    plain = copy.deepcopy(base)
    train(plain, d.x_train, d.y_train, steps=steps, lr=lr, seed=seed)
    return dict(bits=bits, steps=steps, float=acc(base), ptq=acc(fake_quant_model(base, bits)),
                qat=acc(fake_quant_model(qat_model.eval(), bits)),
                finetuned_then_ptq=acc(fake_quant_model(plain.eval(), bits)))


# --------------------------------------------------------------------------- distillation (Hinton et al. 2015)

def distill_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Knowledge-distillation loss: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".  Both terms
    are means over the batch.  The gradient of the soft term w.r.t. ``s`` is
    ``T^2 * (softmax(s/T) - softmax(t/T)) / (T N) = T (softmax(s/T) - softmax(t/T)) / N``: the
    1/T of the chain rule through s/T times the T^2; and for large T the softmax difference
    itself is about (s - t) / (K T) (first order in 1/T), so without the T^2 the soft gradient
    would shrink like 1/T^2 and the balance with the hard term would depend on T.

    Parameters
    ----------
    s : (N, K) student logits;  t : (N, K) teacher logits (LOGITS, not probabilities);  y : (N,) labels

    Returns
    -------
    loss : scalar tensor
    """
    soft = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True,
                    reduction="batchmean")
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(s, y)


def _partial_distill_loss(T: float, alpha: float) -> Callable:
    """Distillation loss where only some rows have labels (label -1 = unlabelled: soft term only)."""
    def loss_fn(s, y, t):
        soft = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), log_target=True,
                        reduction="batchmean")
        labelled = y >= 0
        hard = F.cross_entropy(s[labelled], y[labelled], reduction="sum") / labelled.sum().clamp(min=1)
        return alpha * T * T * soft + (1 - alpha) * hard
    return loss_fn


def distillation_study(n_labels: Sequence[int] = (100, 1257), T: float = 4.0, alpha: float = 0.9,
                       hidden: int = 32, steps: int = 1000, lr: float = 3e-3, seed: int = 0,
                       return_models: bool = False) -> list[dict]:
    """When does distillation help?  A small student with few labels, alone vs taught by :func:`digits_mlp`.

    For each n in ``n_labels`` (a seeded random subset of the 1,257 training images keeps its
    labels):

    * alone: :func:`student_mlp` (``hidden`` units) trained with cross-entropy on the n
      labelled images;
    * distilled: the same initial student trained with the distillation loss on ALL 1,257
      training images: the soft term on every image (the teacher's logits need no label), the
      hard cross-entropy term only on the n labelled ones.  The teacher saw every label when
      it was trained; the point is what the STUDENT needs: the teacher's soft targets on
      unlabelled images stand in for labels it does not have.

    Both train ``steps`` Adam steps (lr ``lr``, batch 64).

    Returns
    -------
    list of dict: ``n_labels``, ``alone``, ``distilled`` (test accuracies), ``teacher``; with
    ``return_models`` also ``model`` (the distilled student) and ``alone_model``, in eval mode
    """
    from dlcourse.data import load_digits
    d = load_digits(seed)
    teacher = digits_mlp(seed)
    with torch.no_grad():
        t_logits = teacher(model_input(teacher, d.x_train))            # (N, K)
    rows = []
    for n in n_labels:
        chosen = np.random.default_rng(seed).permutation(len(d.x_train))[:n]
        alone = student_mlp(hidden, seed)
        train(alone, d.x_train[chosen], d.y_train[chosen], steps=steps, lr=lr, seed=seed)
        partial = np.full(len(d.y_train), -1, np.int64)
        partial[chosen] = d.y_train[chosen]
        taught = student_mlp(hidden, seed)
        train(taught, d.x_train, (torch.as_tensor(partial), t_logits), steps=steps, lr=lr, seed=seed,
              loss_fn=_partial_distill_loss(T, alpha))
        rows.append(dict(n_labels=int(n), alone=accuracy(alone.eval(), d.x_test, d.y_test),
                         distilled=accuracy(taught.eval(), d.x_test, d.y_test),
                         teacher=accuracy(teacher, d.x_test, d.y_test)))
        if return_models:
            rows[-1].update(model=taught, alone_model=alone)
    return rows


# --------------------------------------------------------------------------- mixed precision and compilation

class Autocast(nn.Module):
    """``model`` run under ``torch.autocast(<its input's device type>, dtype)``. Shape: that of ``model``."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x)


def autocast_speedup(model: nn.Module, x, dtype: torch.dtype = torch.bfloat16, repeats: int = 30) -> dict:
    """Inference latency under ``torch.autocast(dtype)`` vs float32, and how much the outputs agree.

    Autocast runs matrix products and convolutions in the low precision (bf16: 8 bits of
    mantissa, float32's exponent range) and keeps reductions such as softmax in float32
    (Micikevicius et al. 2018, "Mixed Precision Training").  Fast only where the hardware has
    bf16 units (AMX / AVX512-BF16 CPUs, tensor-core GPUs); elsewhere the conversions make it
    slower.  Runs on the model's device.

    Returns
    -------
    dict: ``fp32_s``, ``autocast_s`` (median seconds), ``speedup`` (fp32 / autocast),
    ``agreement`` (fraction of equal argmax), ``max_abs_diff`` (of the logits), ``dtype``
    """
    xm = model_input(model, x)
    amp = Autocast(model, dtype)
    with torch.no_grad():
        ref, low = model(xm), amp(xm).float()
    fp32_s, autocast_s = latency(model, xm, repeats), latency(amp, xm, repeats)
    return dict(fp32_s=fp32_s, autocast_s=autocast_s, speedup=fp32_s / autocast_s,
                agreement=float((ref.argmax(1) == low.argmax(1)).double().mean()),
                max_abs_diff=float((ref - low).abs().max()), dtype=str(dtype).replace("torch.", ""))


def overflow_demo(scale: float = 2.0 ** 16, seed: int = 0) -> dict:
    """Where float16 fails, and how loss scaling (``torch.amp.GradScaler``) rescues the gradients.

    float16 has 5 exponent bits: its largest finite value is 65504 and its smallest positive
    (subnormal) value is 2^-24 = 6.0e-8 (bf16 keeps float32's 8 exponent bits: no overflow at
    these sizes, but only 8 bits of mantissa).  Three failures, computed on the CPU in float16:

    * overflow of a value: a logit of 70,000 becomes ``inf``;
    * overflow of a reduction: the sum of squares of 1,000 values of 10 (1e5) is ``inf``;
    * underflow of gradients: a small loss (a mean over many outputs, times 1e-3) through a
      float16 layer gives activation gradients below 6e-8, which flush to 0, and the weight
      gradient computed from them is lost.  Multiplying the loss by ``scale`` before backward
      (and dividing the gradients by it afterwards, in float32) keeps them representable:
      Micikevicius et al. (2018)'s loss scaling, automated by ``torch.amp.GradScaler`` (which
      also skips steps whose gradients overflowed and adapts the scale).

    Returns
    -------
    dict: ``logit`` (float16 value of 70000), ``sum_of_squares``; ``fp32_grad_norm`` (the
    reference), ``fp16_grad_norm`` (no scaling), ``scaled_grad_norm`` (GradScaler on the CPU, or
    manual scaling where this torch lacks CPU support), ``fp16_zero_fraction`` /
    ``scaled_zero_fraction`` (of the activation gradients), ``scaled_rel_error`` (vs float32),
    ``how`` (which scaler ran)
    """
    out = dict(logit=float(torch.tensor(70000.0).half()),
               sum_of_squares=float((torch.full((1000,), 10.0, dtype=torch.float16) ** 2).sum(dtype=torch.float16)))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 32, generator=gen)                           # (N, D)
    w1 = torch.randn(256, 32, generator=gen) * 0.1                 # (H, D) float32 master weights
    w2 = torch.randn(1024, 256, generator=gen) * 0.01              # (K, H), K many outputs

    def weight_grad(dtype, loss_scale):
        a = w1.clone().requires_grad_()
        h = torch.relu(x.to(dtype) @ a.to(dtype).T)                 # (N, H) in dtype
        h.retain_grad()
        loss = (h @ w2.to(dtype).T).float().mean() * 1e-3          # a small loss, as late in training
        (loss * loss_scale).backward()
        return a.grad / loss_scale, h.grad

    ref, _ = weight_grad(torch.float32, 1.0)
    low, h_low = weight_grad(torch.float16, 1.0)
    out.update(fp32_grad_norm=float(ref.norm()), fp16_grad_norm=float(low.norm()),
               fp16_zero_fraction=float((h_low == 0).double().mean()))
    try:                                                           # GradScaler on the CPU (torch >= 2.3)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        a = w1.clone().requires_grad_()
        opt = torch.optim.SGD([a], lr=0.0)
        h = torch.relu(x.half() @ a.half().T)
        h.retain_grad()
        loss = (h @ w2.half().T).float().mean() * 1e-3
        scaler.scale(loss).backward()
        scaler.unscale_(opt)                                       # divides a.grad by the scale, in float32
        scaled, h_scaled, how = a.grad, h.grad, f"torch.amp.GradScaler('cpu', init_scale={scale:g})"
    except Exception as err:                                       # an older torch: do by hand what it does
        scaled, h_scaled = weight_grad(torch.float16, scale)
        how = f"manual loss scaling by {scale:g} (GradScaler on the CPU failed: {type(err).__name__})"
    out.update(scaled_grad_norm=float(scaled.norm()), scaled_zero_fraction=float((h_scaled == 0).double().mean()),
               scaled_rel_error=float((scaled - ref).norm() / ref.norm()), how=how)
    return out


@contextlib.contextmanager
def _cold_compile_caches(cold: bool):
    """Inside: no compiled graph in memory, and inductor's cache folder an empty temporary one."""
    if not cold:
        yield
        return
    import os
    import tempfile
    torch._dynamo.reset()
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="inductor-cold-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def compile_study(model: nn.Module, x, mode: str = "inference", y=None, repeats: int = 20,
                  backend: str = "inductor", cold: bool = True) -> dict:
    """``torch.compile``'s first-call cost and steady-state speed-up over eager, or why it failed.

    ``inference``: forward passes without gradient on the batch ``x``.  ``training``: a whole
    step (forward, cross-entropy against ``y`` (default: class 0 everywhere), backward, Adam) on
    a copy of the model.  The first compiled call traces the Python code into a graph and
    generates and compiles C++ (CPU) or Triton (GPU) kernels: seconds; later calls reuse them.
    The model is copied, never modified.  Compilation needs a C compiler; any failure comes
    back as ``ok=False`` and a ``message``, never an exception.

    ``cold``: measure the first call as a fresh process would see it: ``torch._dynamo.reset()``
    (dynamo would otherwise reuse a graph compiled for another model of the same code and
    shapes), and inductor's on-disk caches pointed at an empty temporary folder for that call
    (a second run of a script reuses them and compiles in a fraction of the time).

    Returns
    -------
    dict: ``ok``, ``mode``, ``first_call_s``, ``eager_s`` and ``compiled_s`` (median per call or
    step), ``speedup`` (eager / compiled), ``message``
    """
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    eager = copy.deepcopy(model)
    xm = model_input(eager, x)
    device = xm.device
    y = torch.zeros(len(xm), dtype=torch.long, device=device) if y is None else torch.as_tensor(y, device=device)

    def make_step(m):
        if mode == "inference":
            m.eval()

            def step():
                with torch.no_grad():
                    return m(xm)
            return step
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step():
            with torch.enable_grad():
                loss = F.cross_entropy(m(xm), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return loss
        return step

    def median_time(step):
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return float(statistics.median(times))

    out = dict(ok=False, mode=mode, first_call_s=None, eager_s=None, compiled_s=None, speedup=None, message="")
    eager_step = make_step(eager)
    eager_step()
    out["eager_s"] = median_time(eager_step)
    try:
        compiled_step = make_step(torch.compile(copy.deepcopy(model), backend=backend))
        with _cold_compile_caches(cold):
            _sync(device)
            t0 = time.perf_counter()
            compiled_step()
            _sync(device)
            out["first_call_s"] = time.perf_counter() - t0
        compiled_step()
        out["compiled_s"] = median_time(compiled_step)
    except Exception as err:                                       # no compiler, unsupported platform...
        out["message"] = f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
        return out
    out.update(ok=True, speedup=out["eager_s"] / out["compiled_s"],
               message=f"{backend}: first call {out['first_call_s']:.1f} s, then {out['eager_s'] / out['compiled_s']:.2f}x eager")
    return out


# --------------------------------------------------------------------------- scale up: MNIST to 99 % on a GPU

class FastCNN(nn.Module):
    """A small, fast CNN for MNIST: three 3 x 3 conv-BN-ReLU blocks, two max-pools, a global max-pool.

    ``conv(1 -> c) - pool - conv(c -> 2c) - pool - conv(2c -> 4c) - global max - Linear(4c, 10)``
    (c = ``width``); batch norm lets a large learning rate train it in one or two epochs.
    Shape: (N, 1, H_img, W_img) -> (N, 10), any image size >= 4.
    """

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        self.body = nn.Sequential(block(1, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
                                  block(2 * width, 4 * width), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))                   # (N, C, H_img, W_img) -> (N, 4c) -> (N, K)


def scale_up(*, epochs: int = 3, batch: int = 512, lr: float = 0.01, width: int = 32, target: float = 0.99,
             amp: bool = True, compile: bool = True, channels_last: bool = True, eval_batch: int = 2000,
             seed: int = 0, device: Optional[str] = None, run_on_cpu: bool = False) -> Optional[dict]:
    """MNIST to ``target`` test accuracy in the least wall time: everything of the chapter on one GPU.

    * the whole data set goes to the GPU ONCE (normalized, as one tensor): no loader, no copies
      per batch; batches are index gathers with a permutation drawn on the GPU;
    * a small fast CNN (:class:`FastCNN`) in ``channels_last`` memory format (what cuDNN's
      tensor-core convolutions prefer);
    * bf16 autocast (no loss scaler needed: bf16 has float32's exponent range);
    * ``torch.compile`` (its compile time measured apart, on warm-up steps, then the weights
      reset: the timed run starts from the same initialisation);
    * a large batch with a OneCycle schedule (Adam, ``lr`` at the peak), fixed shapes (the last
      partial batch is dropped) so nothing recompiles.

    The clock (device-synced) runs from the first training step to the end of the evaluation
    that first reaches ``target`` (test accuracy after every epoch, counted in the time).
    CUDA only: elsewhere it prints why and returns None (``run_on_cpu`` for the tests, which
    use the 8 x 8 digits when MNIST cannot be downloaded).

    Returns
    -------
    dict: ``data``, ``device``, ``seconds_to_target`` (None if not reached), ``accuracy`` per
    epoch, ``epoch_seconds`` (cumulative), ``compile_s``, ``steps``, the settings; or None
    """
    from dlcourse.runtime import scale_up_device
    device = scale_up_device(device, run_on_cpu, cuda_only=True)
    if device is None:
        return None
    from dlcourse.data import mnist_or_digits
    x_tr, y_tr, x_te, y_te, name, side = mnist_or_digits(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def to_device(a):                                      # (N, ...) -> (N, 1, H_img, W_img), normalized
        t = torch.as_tensor(np.asarray(a, np.float32).reshape(len(a), 1, side, side), device=device)
        return ((t - 0.1307) / 0.3081).contiguous(memory_format=fmt)
    x, y = to_device(x_tr), torch.as_tensor(np.asarray(y_tr, np.int64), device=device)
    x_test, y_test = to_device(x_te), torch.as_tensor(np.asarray(y_te, np.int64), device=device)
    batch = min(batch, len(x))
    eval_batch = min(eval_batch, len(x_test))
    steps_per_epoch = len(x) // batch
    with _fork_rng(device):
        torch.manual_seed(seed)
        model = FastCNN(width).to(device, memory_format=fmt)
    initial = copy.deepcopy(model.state_dict())
    net = torch.compile(model) if compile else model
    autocast = functools.partial(torch.autocast, torch.device(device).type, dtype=torch.bfloat16, enabled=amp)

    def train_step(opt, sched, idx):
        with autocast():
            loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

    def test_accuracy():
        net.eval()
        correct = torch.zeros((), device=device)
        with torch.no_grad(), autocast():
            for begin in range(0, len(x_test) - eval_batch + 1, eval_batch):   # fixed shapes
                sl = slice(begin, begin + eval_batch)
                correct += (net(x_test[sl]).argmax(1) == y_test[sl]).sum()
        net.train()
        return float(correct) / (len(x_test) // eval_batch * eval_batch)

    gen = torch.Generator(device).manual_seed(seed)
    _sync(device)                                          # warm-up: compile the train and eval graphs
    t0 = time.perf_counter()
    warm = torch.optim.Adam(model.parameters(), lr=0.0)
    for _ in range(3):
        train_step(warm, None, torch.randperm(len(x), device=device, generator=gen)[:batch])
    test_accuracy()
    _sync(device)
    compile_s = time.perf_counter() - t0
    model.load_state_dict(initial)                         # the timed run starts from the initialisation
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    print(f"scale_up: {name} on {device}; FastCNN width {width}, batch {batch}, OneCycle Adam lr {lr}, "
          f"bf16 autocast {amp}, compile {compile} ({compile_s:.1f} s warm-up), channels_last {channels_last}")
    accs, times, reached = [], [], None
    _sync(device)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), device=device, generator=gen)
        for k in range(steps_per_epoch):
            train_step(opt, sched, order[k * batch:(k + 1) * batch])
        accs.append(test_accuracy())                        # float(...) syncs the device
        times.append(time.perf_counter() - t0)
        print(f"  epoch {epoch + 1}: test accuracy {accs[-1]:.2%} at {times[-1]:.2f} s")
        if accs[-1] >= target:
            reached = times[-1]
            break
    print(f"  {'reached' if reached else 'did not reach'} {target:.0%}"
          + (f" in {reached:.2f} s (wall, device-synced, compile excluded)" if reached else ""))
    return dict(data=name, device=device, seconds_to_target=reached, accuracy=accs, epoch_seconds=times,
                compile_s=compile_s, steps=len(accs) * steps_per_epoch, batch=batch, lr=lr, width=width,
                amp=amp, compile=compile, channels_last=channels_last, target=target, model=model)
