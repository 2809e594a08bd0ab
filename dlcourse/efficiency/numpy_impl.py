"""Making a network cheaper, by hand in NumPy: cost, pruning, quantization, distillation, and training on P workers.

**Cost** (per example, batch 1). One multiply-add (MAC) counts as 2 FLOPs, the convention of
``torch.utils.flop_counter.FlopCounterMode`` (which counts ``2 * MACs`` for matmuls and
convolutions). Only the multiply-adds of dense and convolution layers are counted: the bias
adds, activations and softmax are left out (they are O(outputs), not O(outputs * inputs)),
so our totals equal the counter's.

**Pruning** (Han et al. 2015, "Learning both weights and connections"): set the weights of
smallest magnitude to zero with a {0, 1} mask, then retrain with the mask held fixed.
Unstructured masks zero single weights (one threshold over all layers: ``"global"``, or the
same fraction in each: ``"layer"``); structured masks zero whole output rows (neurons or
channels), which can then be deleted to give a genuinely smaller dense network.

**Quantization** (Jacob et al. 2018, "Quantization and training of neural networks for
efficient integer-arithmetic-only inference"): the affine map ::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)      x_hat = (q - zero_point) * scale

with an INTEGER zero point, so that the real value 0 (padding, ReLU zeros) is represented
exactly. Fake quantization applies quantize-then-dequantize in float during training; its
backward is the straight-through estimator (gradient 1 where the value was not clamped).

**Distillation** (Hinton et al. 2015, "Distilling the knowledge in a neural network"): the
student matches the teacher's softened distribution ``softmax(t / T)`` as well as the labels.

**Data parallelism** simulated in one process: P workers each compute the gradient on their
shard of the global batch, a ring all-reduce (Patarasuk & Yuan 2009) averages the gradients,
and every worker applies the same update (Goyal et al. 2017; Li et al. 2020, PyTorch DDP).
Federated averaging (McMahan et al. 2017) averages weights instead, after several local steps.

Weights are dicts keyed like a torch ``state_dict`` (``"0.weight"`` of shape (H, D),
``"0.bias"`` (H,), ``"2.weight"`` (K, H), ...) in torch's layouts, so they copy between the
twins with no transposes. Every function is pure: it returns new arrays and never modifies
its inputs.

Dimension letters (the course glossary)
---------------------------------------
N    batch size
D    input features (64 for the 8x8 digits)
H    hidden width
K    classes
C    channels (C_in, C_out); a per-channel quantity has one entry per output channel
kH, kW          kernel height and width
H_img, W_img    image height and width
P    workers (simulated processes)
S    steps
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

__all__ = [
    # cost
    "Cost", "dense_cost", "conv2d_cost", "model_cost", "model_bytes",
    # pruning
    "magnitude_masks", "apply_masks", "sparsity", "channel_scores", "structured_masks",
    "kept_rows", "shrink_mlp", "masked_sgd_step",
    # quantization
    "qrange", "qparams", "quantize", "dequantize", "FakeQuantCache", "fake_quant_forward",
    "fake_quant_backward", "QuantError", "quantization_error", "quantized_linear",
    # distillation
    "softmax_t", "log_softmax_t", "DistillCache", "distill_loss_forward", "distill_loss_backward",
    # distributed
    "RingStep", "AllReduceTrace", "ring_allreduce", "naive_allreduce",
    "mlp_init", "mlp_forward", "mlp_loss_and_grads", "batch_indices", "SgdResult", "sgd",
    "DataParallelResult", "data_parallel_sgd", "grad_accumulation", "fedavg",
]

Params = dict  # name -> ndarray, keyed like a torch state_dict


# =========================================================================== cost

class Cost(NamedTuple):
    """What one layer (or a whole model) costs for ONE example."""
    params: int           # number of parameters (weights + biases)
    flops: int            # 2 * macs (bias adds not counted)
    macs: int             # multiply-accumulates
    out_shape: tuple = ()  # the output shape of one example: (d_out,) or (C_out, H_out, W_out)


def dense_cost(d_in: int, d_out: int, bias: bool = True) -> Cost:
    """Parameters and FLOPs of ``nn.Linear(d_in, d_out)`` on one example.

    Each of the ``d_out`` outputs is a dot product of length ``d_in``: ``d_in * d_out`` MACs.

    Returns
    -------
    Cost(params=d_in * d_out (+ d_out), flops=2 * macs, macs=d_in * d_out, out_shape=(d_out,))
    """
    macs = d_in * d_out
    return Cost(macs + (d_out if bias else 0), 2 * macs, macs, (d_out,))


def conv_out_size(size: int, k: int, stride: int = 1, pad: int = 0) -> int:
    """Output length of a convolution along one axis: floor((size + 2 pad - k) / stride) + 1."""
    return (size + 2 * pad - k) // stride + 1


def conv2d_cost(c_in: int, c_out: int, kh: int, kw: int, h_img: int, w_img: int,
                stride: int = 1, pad: int = 0, bias: bool = True) -> Cost:
    """Parameters and FLOPs of ``nn.Conv2d(c_in, c_out, (kh, kw), stride, pad)`` on one (C_in, H_img, W_img) image.

    Every output value (there are C_out * H_out * W_out of them) is a dot product over a
    (C_in, kH, kW) window: ``C_out * H_out * W_out * C_in * kH * kW`` MACs. The weights are
    shared across positions, so the parameter count does not depend on the image size.

    Returns
    -------
    Cost(params, flops, macs, out_shape=(C_out, H_out, W_out))
    """
    h_out = conv_out_size(h_img, kh, stride, pad)
    w_out = conv_out_size(w_img, kw, stride, pad)
    weights = c_out * c_in * kh * kw
    macs = c_out * h_out * w_out * c_in * kh * kw
    return Cost(weights + (c_out if bias else 0), 2 * macs, macs, (c_out, h_out, w_out))


def model_cost(layers: Sequence[tuple]) -> Cost:
    """The summed cost of a list of layer specs.

    Parameters
    ----------
    layers : sequence of tuples ``("dense", d_in, d_out[, bias])`` or
        ``("conv", c_in, c_out, kh, kw, h_img, w_img[, stride, pad, bias])`` (the arguments of
        :func:`dense_cost` / :func:`conv2d_cost`, in order)

    Returns
    -------
    Cost with params, flops and macs summed and the last layer's out_shape
    """
    kinds = {"dense": dense_cost, "linear": dense_cost, "conv": conv2d_cost, "conv2d": conv2d_cost}
    total = Cost(0, 0, 0, ())
    for kind, *args in layers:
        c = kinds[kind](*args)
        total = Cost(total.params + c.params, total.flops + c.flops, total.macs + c.macs, c.out_shape)
    return total


def model_bytes(params: Params, bits: Union[int, dict] = 32) -> int:
    """Storage of a parameter dict in bytes at ``bits`` per number (rounded up to whole bytes).

    Parameters
    ----------
    params : dict name -> ndarray
    bits : bits per number for every tensor, or a dict name -> bits (names missing from it
        take 32), e.g. ``{"0.weight": 8}`` for int8 weights with float32 biases. The
        per-tensor (or per-channel) scales and zero points of a quantized model are not counted.
    """
    total_bits = 0
    for name, value in params.items():
        b = bits.get(name, 32) if isinstance(bits, dict) else bits
        total_bits += np.size(value) * int(b)
    return int(-(-total_bits // 8))


# =========================================================================== pruning

def _layer_order(params: Params) -> list[str]:
    """The weight names in layer order, by the last number in each name ("0", "2" or "fc1", "fc2")."""
    names = [k for k in params if k.endswith("weight")]

    def number(name: str) -> int:
        digits = re.findall(r"\d+", name)
        return int(digits[-1]) if digits else -1

    return sorted(names, key=number)


def _pruned_names(weights: Params, prune: Optional[Sequence[str]]) -> list[str]:
    if prune is None:
        return [k for k in weights if k.endswith("weight")]
    missing = [k for k in prune if k not in weights]
    if missing:
        raise KeyError(f"not in the weights: {missing}")
    return list(prune)


def _n_pruned(fraction: float, n: int) -> int:
    """How many of ``n`` weights to remove: Python's round(fraction * n), as torch.nn.utils.prune does."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sparsity must lie in [0, 1], got {fraction}")
    return int(round(fraction * n))


def magnitude_masks(weights: Params, sparsity: float, scope: str = "global",
                    prune: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Unstructured magnitude pruning masks (Han et al. 2015).

    Parameters
    ----------
    weights : dict name -> ndarray (any shape)
    sparsity : fraction of the pruned weights to set to zero, in [0, 1]
    scope : ``"global"``: one magnitude threshold over all pruned weights together (layers
        with many small weights lose more); ``"layer"``: the same fraction in every layer
    prune : the names to prune; default every name ending in ``"weight"`` (biases are never
        pruned by default: they are few, and removing one shifts a whole neuron)

    Returns
    -------
    masks : dict name -> {0, 1} ndarray shaped (and typed) like the weight, for the pruned
        names only. Exactly ``round(sparsity * n)`` zeros (n = the weights in scope); ties are
        broken by position (stable sort), first name and first index pruned first.
    """
    names = _pruned_names(weights, prune)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    groups = [names] if scope == "global" else [[name] for name in names]
    masks = {}
    for group in groups:
        flat = np.concatenate([np.abs(np.asarray(weights[k])).ravel() for k in group])
        k = _n_pruned(sparsity, flat.size)
        keep = np.ones(flat.size, dtype=bool)
        keep[np.argsort(flat, kind="stable")[:k]] = False     # the k smallest magnitudes
        start = 0
        for name in group:
            w = np.asarray(weights[name])
            masks[name] = keep[start:start + w.size].reshape(w.shape).astype(_mask_dtype(w))
            start += w.size
    return masks


def _mask_dtype(w: np.ndarray):
    return w.dtype if np.issubdtype(w.dtype, np.floating) else np.float64


def apply_masks(weights: Params, masks: dict[str, np.ndarray]) -> Params:
    """A new dict with every masked weight multiplied by its mask (the others copied)."""
    return {k: (np.asarray(v) * masks[k] if k in masks else np.array(v)) for k, v in weights.items()}


def sparsity(weights: Params, masks: Optional[dict[str, np.ndarray]] = None) -> tuple[float, dict[str, float]]:
    """Fraction of zeros among the pruned weights: overall, and per layer.

    Parameters
    ----------
    weights : dict name -> ndarray
    masks : the masks; the zeros counted are those of ``weights * masks`` over the masked
        names. Without masks, the zeros of every weight whose name ends in ``"weight"``.

    Returns
    -------
    overall : float, zeros / count over all those weights together
    per_layer : dict name -> float
    """
    names = list(masks) if masks is not None else [k for k in weights if k.endswith("weight")]
    zeros, total, per_layer = 0, 0, {}
    for name in names:
        w = np.asarray(weights[name])
        if masks is not None:
            w = w * masks[name]
        z = int(np.count_nonzero(w == 0))
        per_layer[name] = z / w.size
        zeros, total = zeros + z, total + w.size
    return (zeros / total if total else 0.0), per_layer


def channel_scores(w: np.ndarray, norm: int = 1) -> np.ndarray:
    """The L1 (``norm=1``) or L2 (``norm=2``) norm of each output row or output channel.

    Parameters
    ----------
    w : ndarray of shape (C_out, ...) — (out, in) for dense, (C_out, C_in, kH, kW) for conv

    Returns
    -------
    scores : ndarray of shape (C_out,)
    """
    rows = np.asarray(w).reshape(len(w), -1)                # (C_out, everything else)
    if norm == 1:
        return np.abs(rows).sum(axis=1)
    if norm == 2:
        return np.sqrt((rows * rows).sum(axis=1))
    raise ValueError(f"norm must be 1 or 2, got {norm}")


def structured_masks(weights: Params, fraction: float, norm: int = 1,
                     prune: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Masks that remove whole output rows (neurons / channels): ``round(fraction * C_out)`` per layer.

    The rows of smallest :func:`channel_scores` go (ties: the first row first), as
    ``torch.nn.utils.prune.ln_structured(..., dim=0)`` does for one layer.

    Parameters
    ----------
    weights : dict name -> ndarray of shape (C_out, ...)
    fraction : fraction of the rows of each layer to remove
    norm : 1 or 2, the norm that scores a row
    prune : the names to prune; default every weight but the LAST layer's (its rows are the
        classes, which cannot be removed)

    Returns
    -------
    masks : dict name -> {0, 1} ndarray shaped like the weight, whole rows 0 or 1
    """
    names = list(prune) if prune is not None else _layer_order(weights)[:-1]
    masks = {}
    for name in names:
        w = np.asarray(weights[name])
        k = _n_pruned(fraction, len(w))
        keep = np.ones(len(w), dtype=bool)
        keep[np.argsort(channel_scores(w, norm), kind="stable")[:k]] = False
        shape = (len(w),) + (1,) * (w.ndim - 1)             # broadcast each row's verdict
        masks[name] = np.broadcast_to(keep.reshape(shape), w.shape).astype(_mask_dtype(w))
    return masks


def kept_rows(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The indices of the rows a structured mask keeps: dict name -> int ndarray (C_kept,)."""
    return {k: np.flatnonzero(np.asarray(m).reshape(len(m), -1).any(axis=1)) for k, m in masks.items()}


def shrink_mlp(weights: Params, keep: dict[str, np.ndarray]) -> Params:
    """Physically delete pruned neurons of a ReLU MLP: a smaller dense MLP, same outputs.

    For a hidden layer l whose rows ``keep[l]`` survive, the new layer keeps those rows of
    ``W_l`` and ``b_l`` and the matching COLUMNS of ``W_{l+1}`` (the next layer's inputs are
    this layer's outputs). A pruned neuron is not silent: with its weight row masked to zero
    it still outputs ``ReLU(b_j)``, a constant, so ``W_{l+1}[:, j] * ReLU(b_j)`` is folded into
    ``b_{l+1}``. The small MLP's logits therefore equal those of ``apply_masks(weights, masks)``
    up to float round-off (the sums run in a different order).

    Parameters
    ----------
    weights : dict keyed like an ``nn.Sequential`` MLP state_dict ("0.weight" (H, D), "0.bias" (H,), ...)
    keep : dict weight name -> int index array of kept rows, or the structured masks themselves
        (from :func:`structured_masks`; converted with :func:`kept_rows`)

    Returns
    -------
    small : dict with the same keys and smaller shapes
    """
    keep = {k: (kept_rows({k: v})[k] if np.ndim(v) > 1 else np.asarray(v, dtype=np.int64))
            for k, v in keep.items()}
    order = _layer_order(weights)
    small = {k: np.array(v) for k, v in weights.items()}
    for name, rows in keep.items():            # first the masked model: pruned rows zero, biases kept
        dropped = np.setdiff1d(np.arange(len(small[name])), rows)
        small[name][dropped] = 0
    for i, name in enumerate(order):
        if name not in keep:
            continue
        if i == len(order) - 1:
            raise ValueError(f"{name} is the output layer: its rows are the classes")
        bias = name[: -len("weight")] + "bias"
        nxt = order[i + 1]
        nxt_bias = nxt[: -len("weight")] + "bias"
        rows = keep[name]
        dropped = np.setdiff1d(np.arange(len(small[name])), rows)
        if bias in small:
            # a dropped neuron outputs ReLU(b_j) whatever the input: fold it into the next bias
            const = np.maximum(small[bias][dropped], 0)                    # (n_dropped,)
            small[nxt_bias] = small[nxt_bias] + small[nxt][:, dropped] @ const
            small[bias] = small[bias][rows]
        small[name] = small[name][rows]                                    # (H_kept, D)
        small[nxt] = small[nxt][:, rows]                                   # (H_next, H_kept)
    return small


def masked_sgd_step(weights: Params, grads: Params, masks: dict[str, np.ndarray], lr: float) -> Params:
    """One SGD step that keeps pruned weights at zero (retraining after pruning).

    ``w <- (w - lr * g) * mask`` for masked names, ``w - lr * g`` for the others: multiplying the
    updated weight (not only the gradient) also re-zeroes a weight that started non-zero.
    """
    new = {}
    for k, w in weights.items():
        w = w - lr * grads[k]
        new[k] = w * masks[k] if k in masks else w
    return new


# =========================================================================== quantization

def qrange(bits: int = 8, signed: bool = False) -> tuple[int, int]:
    """(qmin, qmax): 0..2^bits - 1 unsigned, -2^(bits-1)..2^(bits-1) - 1 signed."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _reduce_except(x: np.ndarray, axis: Optional[int], op) -> np.ndarray:
    """``op`` over every axis but ``axis`` (all axes when ``axis`` is None)."""
    if axis is None:
        return op(x)
    axis = axis % x.ndim
    return op(x, axis=tuple(a for a in range(x.ndim) if a != axis))


def _along(v, x_ndim: int, axis: Optional[int]):
    """Reshape a per-channel vector (C,) so it broadcasts along ``axis`` of an x_ndim-d array."""
    v = np.asarray(v)
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * x_ndim
    shape[axis % x_ndim] = v.size
    return v.reshape(shape)


FLOAT32_EPS = float(np.finfo(np.float32).eps)   # the smallest scale torch's observers allow


def qparams(x: np.ndarray, bits: int = 8, signed: bool = False, symmetric: bool = False,
            axis: Optional[int] = None):
    """Scale and zero point from the min and max of ``x`` (as ``MinMaxObserver`` computes them).

    Asymmetric (affine): the range [min, max] is first widened to contain 0, then ::

        scale = (max - min) / (qmax - qmin)      zero_point = clamp(qmin - round(min / scale), qmin, qmax)

    so that ``min`` maps to ``qmin``, ``max`` to ``qmax`` and 0 to the integer ``zero_point``
    exactly. (Using ``max / qmax`` instead, or a fractional zero point, are classic mistakes:
    the first wastes the negative half of the range, the second makes 0 inexact.)
    Symmetric: ``scale = max(|min|, |max|) / ((qmax - qmin) / 2)``, zero point 0 (signed) or
    the middle of the range, 128 for uint8. The scale is floored at float32's eps as torch does.

    Parameters
    ----------
    x : ndarray of any shape
    bits, signed : the integer range, see :func:`qrange`
    symmetric : symmetric instead of affine
    axis : None for one (scale, zero point) per tensor; an axis (0, the output channel, for
        weights) for one pair per slice along it

    Returns
    -------
    scale : float, or float64 ndarray of shape (C,) per channel
    zero_point : int, or int64 ndarray of shape (C,) per channel
    """
    x = np.asarray(x, dtype=np.float64)
    qmin, qmax = qrange(bits, signed)
    lo = np.minimum(_reduce_except(x, axis, np.min), 0.0)     # widen the range to contain 0
    hi = np.maximum(_reduce_except(x, axis, np.max), 0.0)
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / ((qmax - qmin) / 2), FLOAT32_EPS)
        zero_point = np.full(np.shape(scale), 0 if signed else (qmin + qmax + 1) // 2, dtype=np.int64)
    else:
        scale = np.maximum((hi - lo) / (qmax - qmin), FLOAT32_EPS)
        zero_point = np.clip(qmin - np.round(lo / scale), qmin, qmax).astype(np.int64)
    if axis is None:
        return float(scale), int(zero_point)
    return scale, zero_point


def _int_dtype(bits: int, signed: bool):
    if bits <= 8:
        return np.int8 if signed else np.uint8
    return np.int64


def quantize(x: np.ndarray, scale, zero_point, bits: int = 8, signed: bool = False,
             axis: Optional[int] = None) -> np.ndarray:
    """``q = clamp(round(x / scale) + zero_point, qmin, qmax)``: floats to integers.

    Clamp LAST: clamping x before scaling and rounding, or a fractional zero point, gives other
    integers at the edges. ``np.round`` rounds half to even, as ``torch.quantize_per_tensor``
    does (2.5 -> 2, 3.5 -> 4); like it, we add the (integer) zero point before rounding, which
    only matters on exact ties (see the comment in the code). Equal to
    ``torch.quantize_per_tensor(...).int_repr()`` bit for bit, ties included (a test), and to
    ``torch.quantize_per_channel`` on random data.

    Parameters
    ----------
    x : ndarray of any shape (float32 or float64; the arithmetic runs in x's precision)
    scale, zero_point : scalars, or (C,) arrays for per-channel quantization along ``axis``
    bits, signed : the integer range, see :func:`qrange`
    axis : the channel axis of per-channel parameters (None: per tensor)

    Returns
    -------
    q : integer ndarray shaped like x: uint8 / int8 for bits <= 8, else int64
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    qmin, qmax = qrange(bits, signed)
    inv_s = _along(1 / np.asarray(scale, dtype=x.dtype), x.ndim, axis)      # 1 / scale in x's precision
    z = _along(np.asarray(zero_point, dtype=np.int64), x.ndim, axis)
    # torch computes x * (1 / scale) + zero_point as ONE fused multiply-add in x's precision, then
    # rounds. The product of two float32 is exact in float64, so computing in float64 and rounding
    # once to float32 reproduces it bit for bit. Mathematically round(x / scale) + zp is the same;
    # the two differ only on an exact tie (x / scale = k + 0.5) with an odd zero point, where
    # half-to-even picks the other neighbour: one step, on a set of measure zero.
    t = (x.astype(np.float64) * inv_s.astype(np.float64) + z).astype(x.dtype)
    q = np.clip(np.round(t).astype(np.int64), qmin, qmax)
    return q.astype(_int_dtype(bits, signed))


def dequantize(q: np.ndarray, scale, zero_point, axis: Optional[int] = None,
               dtype=np.float64) -> np.ndarray:
    """``x_hat = (q - zero_point) * scale``: integers back to floats (in ``dtype``).

    Parameters
    ----------
    q : integer ndarray of any shape
    scale, zero_point : scalars, or (C,) arrays along ``axis``

    Returns
    -------
    x_hat : ndarray of ``dtype`` shaped like q
    """
    q = np.asarray(q).astype(np.int64)          # uint8 - 128 would wrap around: widen first
    z = _along(np.asarray(zero_point, dtype=np.int64), q.ndim, axis)
    s = _along(np.asarray(scale, dtype=np.float64), q.ndim, axis)
    return ((q - z) * s).astype(dtype)          # in float64, then rounded once to dtype (as torch does)


class FakeQuantCache(NamedTuple):
    inside: np.ndarray   # shaped like x: 1 where round(x / scale) + zp lay in [qmin, qmax], else 0


def fake_quant_forward(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int
                       ) -> tuple[np.ndarray, FakeQuantCache]:
    """Quantize then dequantize, in float: what quantization-aware training inserts in the graph.

    Parameters
    ----------
    x : ndarray of any shape
    scale, zero_point : per-tensor parameters
    qmin, qmax : the integer range

    Returns
    -------
    out : ndarray shaped like x, same dtype, every value one of the 2^bits grid points
    cache : FakeQuantCache for :func:`fake_quant_backward`
    """
    x = np.asarray(x)
    inv_s = 1 / np.asarray(scale, dtype=x.dtype)           # multiply by 1 / scale, as torch does
    # round, THEN add the zero point: torch's fake-quant kernel does it in this order (its
    # quantize_per_tensor adds first), which differs only on exact ties with an odd zero point
    t = np.round(x * inv_s) + zero_point                   # the integer before clamping
    inside = (t >= qmin) & (t <= qmax)
    out = (np.clip(t, qmin, qmax) - zero_point) * scale
    return out.astype(x.dtype), FakeQuantCache(inside.astype(x.dtype))


def fake_quant_backward(dout: np.ndarray, cache: FakeQuantCache) -> np.ndarray:
    """Straight-through estimator: round() has derivative 0 almost everywhere, so pretend it is 1.

    d out / d x = 1 where the value was inside the range (round treated as the identity),
    0 where it was clamped (there the output really is constant). This is the gradient of
    ``torch.fake_quantize_per_tensor_affine``, and the exact gradient of the surrogate
    ``clip(x, (qmin - zp) * scale, (qmax - zp) * scale)`` except within half a step of its two
    edges (there the rounded value may still land inside the range).

    Parameters
    ----------
    dout : ndarray shaped like x

    Returns
    -------
    dx : ndarray shaped like x
    """
    return dout * cache.inside          # d clamp(round(x/s)+z)/dx ~ 1/s inside, times s on the way out


class QuantError(NamedTuple):
    max_abs: float   # max |x - x_hat|
    rms: float       # sqrt(mean (x - x_hat)^2)
    scale: object    # the scale(s) used
    zero_point: object


def quantization_error(x: np.ndarray, bits: int = 8, signed: bool = False, symmetric: bool = False,
                       axis: Optional[int] = None, scale=None, zero_point=None) -> QuantError:
    """How far ``dequantize(quantize(x))`` lands from ``x``: max and RMS error.

    Inside the range the error is at most ``scale / 2`` (rounding to the nearest grid point);
    values outside [qmin, qmax] after rounding are clamped and can be off by much more.
    Without ``scale`` / ``zero_point`` they come from :func:`qparams` (then nothing is clamped).
    """
    x = np.asarray(x, dtype=np.float64)
    if scale is None:
        scale, zero_point = qparams(x, bits, signed, symmetric, axis)
    q = quantize(x, scale, zero_point, bits, signed, axis)
    err = x - dequantize(q, scale, zero_point, axis)
    return QuantError(float(np.max(np.abs(err))), float(np.sqrt(np.mean(err ** 2))), scale, zero_point)


def quantized_linear(x: np.ndarray, w_q: np.ndarray, w_scale, w_zp, b: Optional[np.ndarray] = None,
                     quantize_input: bool = False, bits: int = 8) -> np.ndarray:
    """``y = x @ w_hat.T + b`` with integer weights, computed as an integer-weight matmul then one rescale.

    With ``w_hat[o, i] = s_o (q_oi - z_o)`` (per output channel o, or one s, z) ::

        y[n, o] = s_o * (sum_i x_ni q_oi  -  z_o sum_i x_ni) + b_o

    so the matmul runs on the raw integers and the scale is applied once per output.
    By default the activations stay float (the weight side of dynamic quantization). With
    ``quantize_input=True`` the activations are also quantized, per tensor, asymmetric,
    unsigned ``bits``, with (scale, zero point) from THIS batch's min and max, as PyTorch's
    dynamic quantization does at run time, and the product is an exact integer accumulation:
    ``y = s_x s_o sum_i (qx_ni - z_x)(q_oi - z_o) + b_o``. PyTorch's x86 / fbgemm engines
    narrow the activations to 7 bits (``reduce_range``, against overflow in their 16-bit
    intermediate sums): with ``bits=7`` this equals ``torch.ao.quantization.quantize_dynamic``'s
    Linear up to float32 round-off (a test).

    Parameters
    ----------
    x : ndarray of shape (N, D_in), float
    w_q : integer ndarray of shape (D_out, D_in)
    w_scale, w_zp : scalars, or (D_out,) arrays (per output channel)
    b : ndarray of shape (D_out,) or None

    Returns
    -------
    y : ndarray of shape (N, D_out), float64
    """
    x = np.asarray(x, dtype=np.float64)
    w_int = np.asarray(w_q).astype(np.int64)                      # (D_out, D_in), widened
    s_w = np.asarray(w_scale, dtype=np.float64)
    z_w = np.asarray(w_zp, dtype=np.int64)
    if quantize_input:
        s_x, z_x = qparams(x, bits=bits)
        x_int = quantize(x, s_x, z_x, bits=bits).astype(np.int64) - z_x     # (N, D_in) integers
        acc = x_int @ w_int.T - np.outer(x_int.sum(axis=1), z_w * np.ones(len(w_int), np.int64))
        y = (s_x * s_w) * acc.astype(np.float64)                  # one rescale per output
    else:
        acc = x @ w_int.T.astype(np.float64) - np.outer(x.sum(axis=1), z_w * np.ones(len(w_int)))
        y = s_w * acc
    return y + b if b is not None else y


# =========================================================================== distillation

def log_softmax_t(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    """log softmax(logits / T) along the last axis, stable (the max is subtracted first).

    Parameters
    ----------
    logits : ndarray of shape (N, K)

    Returns
    -------
    ndarray of shape (N, K)
    """
    z = np.asarray(logits) / T
    z = z - z.max(axis=-1, keepdims=True)       # exp of a large logit would overflow
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax_t(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    """softmax(logits / T) along the last axis: T > 1 softens the distribution, T -> inf makes it uniform.

    Parameters
    ----------
    logits : ndarray of shape (N, K)

    Returns
    -------
    probs : ndarray of shape (N, K), rows sum to 1
    """
    return np.exp(log_softmax_t(logits, T))


class DistillCache(NamedTuple):
    p_s_T: np.ndarray     # (N, K) softmax(s / T)
    p_t_T: np.ndarray     # (N, K) softmax(t / T)
    p_s: np.ndarray       # (N, K) softmax(s)
    y: np.ndarray         # (N,) labels
    T: float
    alpha: float
    soft_scale: float     # T^2, or 1 without the correction


def distill_loss_forward(s: np.ndarray, t: np.ndarray, y: np.ndarray, T: float = 4.0,
                         alpha: float = 0.9, t_squared: bool = True) -> tuple[float, DistillCache]:
    """Hinton et al.'s distillation loss, mean over the batch.

    ::

        L = alpha * T^2 * KL(softmax(t/T) || softmax(s/T))  +  (1 - alpha) * CE(softmax(s), y)

    **Why T^2.** With p = softmax(s/T), q = softmax(t/T), the soft term's gradient is
    ``dKL/ds = (p - q) / T`` (the chain rule brings 1/T out of s/T). For a large T,
    ``p - q ~ ((s - mean s) - (t - mean t)) / (K T)`` (softmax linearised around uniform), so
    ``dKL/ds ~ 1/T^2``: without a correction the soft targets' gradient shrinks as 1/T^2 and
    the hard-label term takes over. Multiplying by T^2 keeps the soft gradient's size
    independent of T, so alpha means the same at every temperature.

    Parameters
    ----------
    s : ndarray of shape (N, K), student LOGITS
    t : ndarray of shape (N, K), teacher LOGITS (softened here: passing probabilities is a mistake)
    y : int ndarray of shape (N,), labels
    T : temperature (> 0)
    alpha : weight of the soft term, in [0, 1]
    t_squared : multiply the soft term by T^2 (False shows what goes wrong without it)

    Returns
    -------
    loss : float
    cache : DistillCache for :func:`distill_loss_backward`
    """
    s, t, y = np.asarray(s), np.asarray(t), np.asarray(y)
    n = len(s)
    log_p_s_T, log_p_t_T = log_softmax_t(s, T), log_softmax_t(t, T)
    p_t_T = np.exp(log_p_t_T)
    kl = np.sum(p_t_T * (log_p_t_T - log_p_s_T)) / n               # KL(q || p), batch mean
    log_p_s = log_softmax_t(s, 1.0)
    ce = -np.mean(log_p_s[np.arange(n), y])
    soft_scale = T * T if t_squared else 1.0
    loss = alpha * soft_scale * kl + (1 - alpha) * ce
    return float(loss), DistillCache(np.exp(log_p_s_T), p_t_T, np.exp(log_p_s), y, T, alpha, soft_scale)


def distill_loss_backward(cache: DistillCache, dloss: float = 1.0) -> np.ndarray:
    """Gradient of :func:`distill_loss_forward` with respect to the student logits.

    Returns
    -------
    ds : ndarray of shape (N, K) =
        ``alpha * T^2 * (softmax(s/T) - softmax(t/T)) / (T N) + (1 - alpha) * (softmax(s) - onehot(y)) / N``
    """
    p_s_T, p_t_T, p_s, y, T, alpha, soft_scale = cache
    n = len(p_s)
    d_soft = (p_s_T - p_t_T) / (T * n)           # dKL/ds: softmax-minus-target, times d(s/T)/ds = 1/T
    onehot = np.zeros_like(p_s)
    onehot[np.arange(n), y] = 1.0
    d_hard = (p_s - onehot) / n                  # dCE/ds: the usual softmax-minus-onehot
    return dloss * (alpha * soft_scale * d_soft + (1 - alpha) * d_hard)


# =========================================================================== all-reduce on a simulated ring

class RingStep(NamedTuple):
    phase: str          # "reduce-scatter" or "all-gather" (or "gather" / "broadcast" for the naive one)
    step: int
    sends: list         # (src worker, dst worker, chunk index, bytes) for every message of this step


class AllReduceTrace(NamedTuple):
    steps: list               # RingStep, 2 (P - 1) of them for the ring
    bytes_sent: np.ndarray    # (P,) bytes each worker sent in total


def ring_allreduce(arrays: Sequence[np.ndarray], average: bool = True, trace: bool = False):
    """All-reduce on a ring of P workers: reduce-scatter, then all-gather (Patarasuk & Yuan 2009).

    Each worker's array is cut into P chunks (``np.array_split`` of the flattened array, so any
    size works). Worker i only ever sends to worker (i + 1) mod P.

    * Reduce-scatter, steps k = 0..P-2: worker i sends its running sum of chunk (i - k) mod P
      to its right neighbour, which adds it to its own. After P - 1 steps, worker i holds the
      complete sum of chunk (i + 1) mod P.
    * All-gather, steps k = 0..P-2: worker i sends the complete chunk (i + 1 - k) mod P to its
      right neighbour, which overwrites its copy. After P - 1 steps everyone has every chunk.

    Every step all P workers send at once (the sends of a step are computed from the state
    before it). Each worker sends 2 (P - 1) chunks of about size / P numbers: about
    ``2 (P - 1) / P * size * itemsize`` bytes, nearly independent of P — whereas in the naive
    scheme (:func:`naive_allreduce`) the root sends ``(P - 1) * size * itemsize``.

    Parameters
    ----------
    arrays : P ndarrays of the same shape, one per worker (the gradients)
    average : divide the sum by P (what data parallelism needs: the mean of the shard means)
    trace : also return the list of steps and the bytes each worker sent

    Returns
    -------
    results : list of P new ndarrays, each equal to the sum (or mean) of ``arrays``
    trace : AllReduceTrace (only when ``trace=True``)
    """
    P = len(arrays)
    shape = np.shape(arrays[0])
    # chunks[i][c]: worker i's copy of chunk c (private copies, the inputs are never touched)
    chunks = [[c.copy() for c in np.array_split(np.asarray(a).ravel(), P)] for a in arrays]
    steps, sent = [], np.zeros(P, dtype=np.int64)
    for phase in ("reduce-scatter", "all-gather"):
        for k in range(P - 1):
            offset = -k if phase == "reduce-scatter" else 1 - k
            # every worker sends at once: read all the messages before anyone receives
            msgs = [(i, (i + 1) % P, (i + offset) % P) for i in range(P)]
            payload = [chunks[src][c].copy() for src, _, c in msgs]
            for (src, dst, c), data in zip(msgs, payload):
                if phase == "reduce-scatter":
                    chunks[dst][c] = chunks[dst][c] + data      # accumulate the partial sum
                else:
                    chunks[dst][c] = data                       # overwrite with the finished chunk
                sent[src] += data.nbytes
            steps.append(RingStep(phase, k, [(s, d, c, p.nbytes) for (s, d, c), p in zip(msgs, payload)]))
    results = [np.concatenate(w).reshape(shape) for w in chunks]
    if average:
        results = [r / P for r in results]
    return (results, AllReduceTrace(steps, sent)) if trace else results


def naive_allreduce(arrays: Sequence[np.ndarray], average: bool = True, trace: bool = False):
    """All-reduce through one root: everyone sends its whole array to worker 0, which sums and sends the result back.

    Worker 0 sends ``(P - 1) * size * itemsize`` bytes, every other worker ``size * itemsize``:
    the root's link is the bottleneck and its load grows with P (the ring's does not).
    Same parameters and returns as :func:`ring_allreduce` (the trace has 2 steps: gather, broadcast).
    """
    P = len(arrays)
    arrays = [np.asarray(a) for a in arrays]
    nbytes = arrays[0].nbytes
    total = arrays[0].copy()
    for a in arrays[1:]:
        total = total + a
    if average:
        total = total / P
    sent = np.full(P, nbytes, dtype=np.int64)
    sent[0] = (P - 1) * total.nbytes
    steps = [RingStep("gather", 0, [(i, 0, None, nbytes) for i in range(1, P)]),
             RingStep("broadcast", 0, [(0, i, None, total.nbytes) for i in range(1, P)])]
    results = [total.copy() for _ in range(P)]
    return (results, AllReduceTrace(steps, sent)) if trace else results


# =========================================================================== a small MLP to train on P workers

def mlp_init(sizes: Sequence[int], seed: int = 0, dtype=np.float64) -> Params:
    """Weights of a ReLU MLP, ``nn.Linear``'s default initialisation (uniform in +-1/sqrt(fan_in)).

    Parameters
    ----------
    sizes : (D, H, ..., K)

    Returns
    -------
    params : {"0.weight": (H, D), "0.bias": (H,), "2.weight": ..., ...} as ``nn.Sequential`` numbers them
    """
    rng = np.random.default_rng(seed)
    params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(d_in)
        params[f"{2 * i}.weight"] = rng.uniform(-bound, bound, (d_out, d_in)).astype(dtype)
        params[f"{2 * i}.bias"] = rng.uniform(-bound, bound, d_out).astype(dtype)
    return params


def mlp_forward(params: Params, x: np.ndarray) -> np.ndarray:
    """Logits of the ReLU MLP: Linear -> ReLU -> ... -> Linear.

    Parameters
    ----------
    params : dict keyed like an ``nn.Sequential`` state_dict
    x : ndarray of shape (N, D)

    Returns
    -------
    logits : ndarray of shape (N, K)
    """
    order = _layer_order(params)
    a = np.asarray(x)
    for i, name in enumerate(order):
        a = a @ params[name].T + params[name[: -len("weight")] + "bias"]
        if i < len(order) - 1:
            a = np.maximum(a, 0)
    return a


def mlp_loss_and_grads(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Mean cross-entropy of the ReLU MLP on (x, y) and its gradient for every parameter.

    Parameters
    ----------
    params : dict keyed like an ``nn.Sequential`` state_dict ("0.weight" (H, D), ..., last (K, H))
    x : ndarray of shape (N, D)
    y : int ndarray of shape (N,)

    Returns
    -------
    loss : float, mean over the N examples
    grads : dict shaped like params
    """
    order = _layer_order(params)
    x, y = np.asarray(x), np.asarray(y)
    n = len(x)
    acts, a = [], x
    for i, name in enumerate(order):                       # forward, keeping each layer's input
        acts.append(a)
        h = a @ params[name].T + params[name[: -len("weight")] + "bias"]     # (N, out_l)
        a = np.maximum(h, 0) if i < len(order) - 1 else h
    log_p = log_softmax_t(a)                               # (N, K)
    loss = -np.mean(log_p[np.arange(n), y])
    dh = np.exp(log_p)
    dh[np.arange(n), y] -= 1.0
    dh /= n                                                # dL/dlogits = (softmax - onehot) / N
    grads = {}
    for i in range(len(order) - 1, -1, -1):                # backward
        name = order[i]
        grads[name] = dh.T @ acts[i]                       # dh/dW = layer input, summed over the batch
        grads[name[: -len("weight")] + "bias"] = dh.sum(axis=0)    # bias is broadcast over the batch
        if i > 0:
            da = dh @ params[name]                         # dh/da = W
            dh = da * (acts[i] > 0)                        # ReLU'(h) = 1 where its output > 0
    return float(loss), grads


def batch_indices(n: int, batch: Optional[int], steps: int, seed: int) -> list[np.ndarray]:
    """The example indices of each step: a fresh permutation every epoch, cut into batches of ``batch``.

    The last batch of an epoch is smaller when ``batch`` does not divide ``n``;
    ``batch=None`` means full batch (every step sees all n examples, in order).
    """
    if batch is None or batch >= n:
        return [np.arange(n) for _ in range(steps)]
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < steps:
        perm = rng.permutation(n)
        out.extend(perm[i:i + batch] for i in range(0, n, batch))
    return out[:steps]


class SgdResult(NamedTuple):
    params: Params
    losses: np.ndarray    # (S,) the loss of each step's batch, before its update


def _step(params: Params, grads: Params, lr: float) -> Params:
    return {k: params[k] - lr * grads[k] for k in params}


def sgd(params: Params, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
        batch: Optional[int] = None, seed: int = 0) -> SgdResult:
    """Plain mini-batch SGD on one process: the reference the other trainers must equal.

    Parameters
    ----------
    params : initial weights (not modified)
    x : ndarray of shape (N, D); y : int ndarray of shape (N,)
    steps, lr : number of steps S and learning rate
    batch, seed : the batches, see :func:`batch_indices`
    """
    losses = []
    for idx in batch_indices(len(x), batch, steps, seed):
        loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
        params = _step(params, grads, lr)
        losses.append(loss)
    return SgdResult(params, np.array(losses))


def _flatten(grads: Params, names: list[str]) -> np.ndarray:
    """All gradients in one vector (DDP all-reduces gradient 'buckets', not one tensor at a time)."""
    return np.concatenate([grads[k].ravel() for k in names])


def _unflatten(vec: np.ndarray, like: Params, names: list[str]) -> Params:
    out, start = {}, 0
    for k in names:
        out[k] = vec[start:start + like[k].size].reshape(like[k].shape)
        start += like[k].size
    return out


class DataParallelResult(NamedTuple):
    params: Params            # worker 0's weights (every replica holds the same)
    losses: np.ndarray        # (S,) the global batch's loss at each step
    replicas: list            # P dicts, every worker's final weights
    bytes_sent: np.ndarray    # (P,) bytes each worker sent over all steps


def data_parallel_sgd(params: Params, x: np.ndarray, y: np.ndarray, workers: int, steps: int,
                      lr: float, batch: Optional[int] = None, seed: int = 0,
                      allreduce=ring_allreduce) -> DataParallelResult:
    """Synchronous data-parallel SGD on P simulated workers; equals :func:`sgd` step for step.

    Each step draws the same global batch as :func:`sgd`, cuts it into P contiguous shards
    (``np.array_split``), and each worker computes the MEAN gradient over its shard from its
    own replica of the weights. The all-reduce averages (sum / P). When P divides the batch,
    the mean of the shard means is the global mean. When it does not (or for an epoch's
    smaller last batch), shards differ in size and a plain average would over-weight the
    small shards, so each worker first scales its gradient by ``n_p * P / N`` (its shard's
    share of the batch): the average is then ``sum_p n_p g_p / N``, the global batch mean,
    exactly. The losses are weighted the same way. Every replica applies the same averaged
    gradient, so the replicas never drift apart.

    Parameters
    ----------
    params : initial weights, copied to every worker
    x : ndarray of shape (N, D); y : int ndarray of shape (N,)
    workers : P
    steps, lr, batch, seed : as for :func:`sgd` (``batch`` is the GLOBAL batch)
    allreduce : :func:`ring_allreduce` or :func:`naive_allreduce`

    Returns
    -------
    DataParallelResult
    """
    names = list(params)
    replicas = [{k: np.array(v) for k, v in params.items()} for _ in range(workers)]
    losses, sent = [], np.zeros(workers, dtype=np.int64)
    for idx in batch_indices(len(x), batch, steps, seed):
        shards = np.array_split(idx, workers)              # contiguous, sizes differ by at most 1
        local = []
        for p, shard in enumerate(shards):
            weight = len(shard) * workers / len(idx)       # 1 when all shards are equal
            if len(shard):
                loss, grads = mlp_loss_and_grads(replicas[p], x[shard], y[shard])
                vec = _flatten(grads, names)
            else:                                          # more workers than examples
                loss, vec = 0.0, np.zeros(sum(v.size for v in params.values()))
            local.append(np.concatenate([weight * vec, [weight * loss]]))   # the loss rides along
        reduced, tr = allreduce(local, average=True, trace=True)
        sent += tr.bytes_sent
        for p in range(workers):
            grads = _unflatten(reduced[p][:-1], params, names)
            replicas[p] = _step(replicas[p], grads, lr)
        losses.append(float(reduced[0][-1]))
    return DataParallelResult(replicas[0], np.array(losses), replicas, sent)


def grad_accumulation(params: Params, x: np.ndarray, y: np.ndarray, steps: int, lr: float,
                      batch: Optional[int] = None, seed: int = 0, micro_batches: int = 4) -> SgdResult:
    """SGD whose every batch is processed in ``micro_batches`` pieces, gradients summed before one step.

    The one-GPU stand-in for data parallelism: the memory of a small batch, the update of a
    big one. Each micro-batch's mean gradient is weighted by its share of the batch (n_m / N),
    so the accumulated gradient is the batch mean exactly and the run equals :func:`sgd`.
    """
    losses = []
    for idx in batch_indices(len(x), batch, steps, seed):
        total, loss_sum = None, 0.0
        for micro in np.array_split(idx, micro_batches):
            if not len(micro):
                continue
            loss, grads = mlp_loss_and_grads(params, x[micro], y[micro])
            share = len(micro) / len(idx)
            total = {k: share * g for k, g in grads.items()} if total is None else \
                {k: total[k] + share * grads[k] for k in total}
            loss_sum += share * loss
        params = _step(params, total, lr)
        losses.append(loss_sum)
    return SgdResult(params, np.array(losses))


def _mean_loss(params: Params, x: np.ndarray, y: np.ndarray) -> float:
    log_p = log_softmax_t(mlp_forward(params, x))
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def fedavg(params: Params, client_data: Sequence[tuple[np.ndarray, np.ndarray]], rounds: int,
           local_steps: int, lr: float, batch: Optional[int] = None, seed: int = 0) -> SgdResult:
    """Federated averaging (McMahan et al. 2017): the data stays on the clients, the weights travel.

    Each round every client starts from the global weights, runs ``local_steps`` of SGD on its
    own data (mini-batches of ``batch``, or full batch when None; client c's batches are drawn
    with seed ``(seed, round, c)``), and the server sets the global weights to the clients'
    weights averaged with weights n_c / sum n. With one full-batch local step this is exactly
    one full-batch SGD step on all the data (the gradient of the global mean is the n_c-weighted
    mean of the clients' gradients); with several local steps on non-IID clients (each sees only
    some classes) every client drifts toward its own optimum and the average is not the
    centralised step.

    Parameters
    ----------
    params : initial global weights
    client_data : list of (x_c (N_c, D), y_c (N_c,))
    rounds, local_steps, lr, batch, seed : see above

    Returns
    -------
    SgdResult(params = the final global weights, losses = (rounds,) the loss on all the
        clients' data (size-weighted mean of the client losses) before each round)
    """
    sizes = np.array([len(xc) for xc, _ in client_data], dtype=np.float64)
    shares = sizes / sizes.sum()
    losses = []
    for r in range(rounds):
        new, round_loss = None, 0.0
        for c, ((xc, yc), share) in enumerate(zip(client_data, shares)):
            round_loss += share * _mean_loss(params, xc, yc)       # the global loss before the round
            local = params
            client_seed = int(np.random.SeedSequence([seed, r, c]).generate_state(1)[0])
            for idx in batch_indices(len(xc), batch, local_steps, client_seed):
                _, grads = mlp_loss_and_grads(local, xc[idx], yc[idx])
                local = _step(local, grads, lr)
            new = {k: share * v for k, v in local.items()} if new is None else \
                {k: new[k] + share * local[k] for k in new}
        params = new
        losses.append(round_loss)
    return SgdResult(params, np.array(losses))
