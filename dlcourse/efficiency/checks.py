"""Graded checks for the exercises of chapter 10 (``solutions/10_efficiency.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the classic
wrong answers, each a plain wrong implementation with the exercise's own signature.  A check
runs the learner's code on small seeded cases, from small to large, against the course's
answers (:mod:`dlcourse.efficiency.numpy_impl`, and the exercise forms at the bottom of this
file where an exercise asks for another form) and, when an answer is wrong, recomputes the
table's rows on the same inputs to name the mistake.  What recomputation cannot see (an input
changed in place, a ring that sends too many bytes, every worker given the same shard, a float
zero point) the check recognises itself and reports with its row's message.  A failure shows
the smallest failing case and a call that reproduces it.  ``tests/test_course.py`` hands every
row to its check and proves that exactly its message comes back; ``tests/test_efficiency_checks.py``
tests the rest.

Dimension letters: N batch, D input features, H hidden width, K classes, C channels (C_in,
C_out), kH kW kernel size, H_img W_img image size, P workers, S buffer length (numbers).
"""
from __future__ import annotations

import numpy as np

from dlcourse.efficiency import numpy_impl as en
from dlcourse.efficiency import torch_impl as et
from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect_close, expect_defaults, expect_float64,
                              fail_with, is_shape_error, name_first_wrong, raises_like, trying)
from dlcourse.grading import matches as _close

check = Checker("10_efficiency")

__all__ = ["check", "Network", "cost_case", "prune_case", "quant_case", "dequant_case", "distill_case",
           "ring_case", "dp_case",
           "conv2d_cost_triple", "global_magnitude_prune_masks", "quantize_per_channel_affine",
           "dequantize_per_channel", "distill_loss_and_grad", "ring_allreduce_send", "data_parallel_step_ref"]


# --------------------------------------------------------------------------- shared helpers

def _what_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _copy_dict(d: dict) -> dict:
    return {k: np.array(v) for k, v in d.items()}


def _dict_changed(before: dict, after: dict) -> str | None:
    """The first key of a dict of arrays whose array was changed in place (or removed), else None."""
    for k, old in before.items():
        new = after.get(k)
        if not isinstance(new, np.ndarray) or new.shape != old.shape or not np.array_equal(new, old):
            return k
    return None


# =========================================================================== 1. the cost of a conv layer

def _out(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def cc_no_bias(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_macs_as_flops(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw + c_out, c_out * h * w * c_in * kh * kw, (h, w)


def cc_bias_adds_counted(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw + c_out * h * w, (h, w)


def cc_input_size(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h_img * w_img * c_in * kh * kw, (h, w)


def cc_no_padding(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, 0), _out(w_img, kw, stride, 0)
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_one_side_padding(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = (h_img + pad - kh) // stride + 1, (w_img + pad - kw) // stride + 1
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_no_stride(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, 1, pad), _out(w_img, kw, 1, pad)
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_ceil(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = -(-(h_img + 2 * pad - kh) // stride) + 1, -(-(w_img + 2 * pad - kw) // stride) + 1
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_no_c_in(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * kh * kw, (h, w)


def cc_no_plus_one(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = (h_img + 2 * pad - kh) // stride, (w_img + 2 * pad - kw) // stride
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_square_kernel(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kh + c_out, 2 * c_out * h * w * c_in * kh * kh, (h, w)     # kH * kH, not kH * kW


def cc_bias_per_c_in(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw + c_in, 2 * c_out * h * w * c_in * kh * kw, (h, w)      # a bias per INPUT channel


def cc_kernel_swapped(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kw, stride, pad), _out(w_img, kh, stride, pad)       # kW slid along the height
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (h, w)


def cc_bias_as_weight(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    params = c_out * c_in * kh * kw + c_out
    return params, 2 * params * h * w, (h, w)                # every parameter, the biases too, as a multiply-add


def cc_shape_swapped(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    h, w = _out(h_img, kh, stride, pad), _out(w_img, kw, stride, pad)
    return c_out * c_in * kh * kw + c_out, 2 * c_out * h * w * c_in * kh * kw, (w, h)


CONV_COST_MISTAKES = (
    Mistake("bias forgotten in params", cc_no_bias,
            "the parameter count misses the biases: a Conv2d has C_out * C_in * kH * kW weights PLUS one bias per "
            "output channel, C_out"),
    Mistake("MACs returned as FLOPs", cc_macs_as_flops,
            "the FLOPs are half the answer: that is the number of multiply-adds (MACs); the course counts a "
            "multiply-add as 2 FLOPs (one multiply, one add), as torch's FlopCounterMode does"),
    Mistake("bias adds counted", cc_bias_adds_counted,
            "the FLOPs include one add per output value for the bias: the course counts only the multiply-adds "
            "(2 * MACs), as torch's FlopCounterMode does; leave the bias adds out"),
    Mistake("FLOPs as 2 x params x positions", cc_bias_as_weight,
            "the FLOPs count each BIAS as a multiply-add at every output position (2 x params x H_out x W_out): a "
            "bias is one add, and the course leaves it out; only the weights multiply, 2 * C_out * H_out * W_out * "
            "C_in * kH * kW"),
    Mistake("input size instead of output size", cc_input_size,
            "the FLOPs use the INPUT's H_img * W_img positions: the kernel is applied once per OUTPUT position, "
            "C_out * H_out * W_out dot products of length C_in * kH * kW"),
    Mistake("padding ignored", cc_no_padding,
            "the output size ignores the padding: the padded image is H_img + 2 * pad tall, so H_out = "
            "(H_img + 2 pad - kH) // stride + 1 (likewise W_out)"),
    Mistake("padding on one side only", cc_one_side_padding,
            "the padding is added once: pad rows go on BOTH sides (top and bottom, left and right), so the padded "
            "size is H_img + 2 * pad"),
    Mistake("stride ignored", cc_no_stride,
            "the output size ignores the stride: the kernel moves `stride` pixels at a time, so H_out = "
            "(H_img + 2 pad - kH) // stride + 1 (likewise W_out)"),
    Mistake("ceil instead of floor", cc_ceil,
            "the output size is rounded UP: a window that does not fit in the padded image is not computed, so "
            "H_out = (H_img + 2 pad - kH) // stride + 1 rounds down (floor division)"),
    Mistake("+ 1 forgotten in the output size", cc_no_plus_one,
            "the output size misses the + 1: the kernel's first position counts too, so H_out = (H_img + 2 pad - "
            "kH) // stride + 1 (likewise W_out); a 3 x 3 kernel fits a 5 x 5 image 3 times, not 2"),
    Mistake("square kernel assumed", cc_square_kernel,
            "the kernel was taken as square, kH * kH: a (kH, kW) kernel has kH * kW weights per input channel, in "
            "the parameter count and in the FLOPs"),
    Mistake("one bias per input channel", cc_bias_per_c_in,
            "the biases were counted per INPUT channel: a Conv2d adds one bias to each OUTPUT channel's map, C_out "
            "biases"),
    Mistake("C_in missing from the MACs", cc_no_c_in,
            "the FLOPs miss the factor C_in: each output value is a dot product over a whole (C_in, kH, kW) window, "
            "every input channel included"),
    Mistake("kernel sides swapped", cc_kernel_swapped,
            "the kernel's sides are paired with the wrong image sides: kH (the kernel's height) slides along "
            "H_img and gives H_out, kW along W_img gives W_out"),
    Mistake("output shape as (W, H)", cc_shape_swapped,
            "the output size is given as (W_out, H_out): return (H_out, W_out), height first, like torch's "
            "(N, C, H, W) layout"),
)

# (c_in, c_out, kh, kw, h_img, w_img, stride, pad); None: stride and pad left at their defaults
COST_CASES = [(1, 2, 3, 3, 5, 5, None, None), (3, 8, 3, 3, 8, 8, 1, 1), (2, 4, 3, 5, 7, 10, 2, 1),
              (16, 32, 5, 3, 28, 20, 2, 2), (64, 128, 3, 3, 32, 32, 3, 1)]


def cost_case(case: int) -> tuple[tuple, dict]:
    """Case ``case`` (1 to 5) of the conv2d_cost check: ``(args, kwargs)``."""
    *args, stride, pad = COST_CASES[case - 1]
    return tuple(args), ({} if stride is None else {"stride": stride, "pad": pad})


def _cost_form(got, what):
    """The learner's (params, flops, (h_out, w_out)) as ints, after checking its form."""
    if got is None:
        raise CheckFailed(f"conv2d_cost returned None: did you forget a `return params, flops, (h_out, w_out)`? "
                          f"({what})")
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        raise CheckFailed(f"conv2d_cost must return three things, (params, flops, (h_out, w_out)); got "
                          f"{type(got).__name__}{f' of length {len(got)}' if isinstance(got, (tuple, list)) else ''} "
                          f"({what})")
    params, flops, out = got
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"the third item must be the output size as a pair (h_out, w_out); got {out!r} ({what})")
    for name, value in (("params", params), ("flops", flops), ("h_out", out[0]), ("w_out", out[1])):
        if isinstance(value, (float, np.floating)):
            if name in ("h_out", "w_out"):
                raise CheckFailed(f"{name} is a float ({value!r}): an output size is a whole number of positions; "
                                  f"use floor division, (size + 2 * pad - k) // stride + 1 ({what})",
                                  mistake="float output size")
            raise CheckFailed(f"{name} is a float ({value!r}): a count is a whole number; use integer arithmetic "
                              f"(// for the output size) ({what})", mistake="float count")
        if not _what_int(value):
            raise CheckFailed(f"{name} should be an int, got {type(value).__name__} {value!r} ({what})")
    return int(params), int(flops), (int(out[0]), int(out[1]))


def _same_cost(a, b) -> bool:
    try:
        return (int(a[0]), int(a[1]), (int(a[2][0]), int(a[2][1]))) == \
            (int(b[0]), int(b[1]), (int(b[2][0]), int(b[2][1])))
    except (TypeError, ValueError, IndexError):
        return False


@check.exercise(points=2, mistakes=CONV_COST_MISTAKES, reference=(en.conv2d_cost,), forbid=(en.conv_out_size,),
                hints=[
    "A conv layer's weights are shared across positions: the parameters do not depend on the image. The work "
    "does: one dot product over a (C_in, kH, kW) window for every output channel and every OUTPUT position; "
    "a multiply-add counts as 2 FLOPs.",
    "First the output size along each axis, from the padded size, the kernel side and the stride (rounded "
    "down); then params = weights + one bias per output channel; then MACs = C_out * H_out * W_out * "
    "(the window's size), and FLOPs = 2 * MACs.",
    "h_out = (h_img + 2 * pad - kh) // stride + 1, and w_out likewise with kw; params = c_out * c_in * kh * kw "
    "plus the biases; flops = 2 * c_out * h_out * w_out * (the window's number of weights).",
])
def conv2d_cost(fn):
    """Parameters, FLOPs (2 * MACs) and output size of a Conv2d layer on one image."""
    for case in range(1, len(COST_CASES) + 1):
        args, kwargs = cost_case(case)
        what = f"Conv2d({args[0]}, {args[1]}, ({args[2]}, {args[3]})) on a {args[4]} x {args[5]} image" + \
            (f", stride {kwargs['stride']}, pad {kwargs['pad']}" if kwargs else "")
        with trying("conv2d_cost", *args, label=what, **kwargs) as tried:
            if case == 1:
                expect_defaults(fn, "conv2d_cost", stride=1, pad=0)
            expected = conv2d_cost_triple(*args, **kwargs)
            raw = call(fn, *args, **kwargs)
            got = _cost_form(raw, what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, CONV_COST_MISTAKES, same=_same_cost, apply=lambda row: row(*args, **kwargs),
                     suffix=f"({what})")
            for i in (2, 0, 1):                                 # the size first: a wrong size makes wrong FLOPs
                name, g, e = ("params", "flops", "(h_out, w_out)")[i], got[i], expected[i]
                if g == e:
                    continue
                for row in CONV_COST_MISTAKES:              # several mistakes at once: name the one behind this item
                    wrong = row.wrong(*args, **kwargs)[i]
                    if wrong != e and wrong == g:
                        raise CheckFailed(f"{name} is wrong (got {g}, expected {e}): {row.message} ({what})",
                                          mistake=row.name)
                raise CheckFailed(f"{name} is wrong: got {g}, expected {e} ({what})")
    return ("params, FLOPs and output size right on 5 layers (stride, padding, non-square kernels and images); the "
            "last, Conv2d(64, 128, 3, stride 3, pad 1) on 32 x 32, costs 2 * 11 x 11 x 128 x 64 x 9 = "
            f"{conv2d_cost_triple(*cost_case(5)[0], **cost_case(5)[1])[1]:,} FLOPs")


# =========================================================================== 2. global magnitude pruning

def _weight_names(weights):
    return [k for k in weights if k.endswith("weight")]


def _prune(weights, sparsity, names, score=np.abs, kept_fraction=False, largest=False, per_layer=False,
           count=round):
    """Masks that zero round(sparsity * n) of ``names`` by ``score`` (one group, or each layer alone)."""
    groups = [[k] for k in names] if per_layer else [names]
    masks = {}
    for group in groups:
        flat = np.concatenate([score(np.asarray(weights[k])).ravel() for k in group])
        k = int(count((1 - sparsity if kept_fraction else sparsity) * flat.size))
        order = np.argsort(-flat if largest else flat, kind="stable")
        keep = np.ones(flat.size)
        keep[order[:k]] = 0.0
        start = 0
        for name in group:
            w = np.asarray(weights[name])
            masks[name] = keep[start:start + w.size].reshape(w.shape)
            start += w.size
    return masks


def gp_per_layer(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), per_layer=True)


def gp_biases_too(weights, sparsity):
    return _prune(weights, sparsity, list(weights))


def gp_inverted(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), largest=True)


def gp_signed(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), score=lambda w: w)


def gp_fraction_kept(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), kept_fraction=True)


def gp_half_up(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), count=lambda v: int(v + 0.5))


def gp_ceil(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), count=lambda v: -int(-v // 1))


def gp_truncated(weights, sparsity):
    return _prune(weights, sparsity, _weight_names(weights), count=int)


def gp_weights_returned(weights, sparsity):
    masks = _prune(weights, sparsity, _weight_names(weights))
    return {k: weights[k] * m for k, m in masks.items()}


def gp_flat_masks(weights, sparsity):
    return {k: m.ravel() for k, m in _prune(weights, sparsity, _weight_names(weights)).items()}


def _threshold_masks(weights, sparsity, index_shift):
    names = _weight_names(weights)
    flat = np.sort(np.concatenate([np.abs(weights[k]).ravel() for k in names]))
    k = int(round(sparsity * flat.size))
    if k == 0:
        return {n: np.ones(np.shape(weights[n])) for n in names}
    threshold = flat[k - 1 + index_shift]
    return {n: (np.abs(weights[n]) > threshold).astype(np.float64) for n in names}


def gp_ties_pruned(weights, sparsity):
    return _threshold_masks(weights, sparsity, 0)          # |w| > the k-th smallest: ties there all go


def gp_off_by_one(weights, sparsity):
    return _threshold_masks(weights, sparsity, 1)          # |w| > the (k+1)-th smallest: one zero too many


PRUNE_MISTAKES = (
    Mistake("per-layer pruning", gp_per_layer,
            "every layer lost the same fraction: that is per-layer pruning; GLOBAL pruning ranks all the weights of "
            "all the layers together by |w| with ONE threshold (layers with many small weights lose more)"),
    Mistake("biases pruned", gp_biases_too,
            "the biases were pruned too: prune only the weights (keys ending in 'weight'), and return masks for "
            "those keys only; biases are few, and zeroing one shifts a whole neuron"),
    Mistake("largest pruned", gp_inverted,
            "the LARGEST weights were pruned and the smallest kept: magnitude pruning removes the weights of "
            "smallest |w| (sort ascending)"),
    Mistake("signed value, not magnitude", gp_signed,
            "the weights were ranked by their signed value, so large NEGATIVE weights were pruned first: rank by "
            "magnitude, |w| (np.abs)"),
    Mistake("sparsity read as the fraction kept", gp_fraction_kept,
            "sparsity is the fraction of weights set to ZERO: round(sparsity * n) zeros, not that many kept"),
    Mistake("pruned weights returned", gp_weights_returned,
            "that is the pruned WEIGHTS (w * mask): return the masks themselves, {0, 1} arrays of the weights' "
            "shapes; the training loop multiplies by them after every step"),
    Mistake("flattened masks", gp_flat_masks,
            "the masks are flat: give each mask its weight's shape (.reshape(w.shape)), so that w * mask works"),
    Mistake("count rounded half up", gp_half_up,
            "the number of weights to prune was rounded half UP (int(sparsity * n + 0.5)): use Python's "
            "round(sparsity * n), which rounds an exact half to the EVEN integer (76.5 -> 76), as torch's pruning "
            "does"),
    Mistake("count rounded up", gp_ceil,
            "the number of weights to prune was rounded UP (math.ceil): prune round(sparsity * n) weights, rounded "
            "to the nearest integer (an exact half to even), as torch's pruning does"),
    Mistake("count truncated", gp_truncated,
            "the number of weights to prune was rounded DOWN (int(sparsity * n) truncates): prune round(sparsity * "
            "n) weights, rounded to the nearest integer (an exact half to even), as torch's pruning does"),
    Mistake("ties at the threshold all pruned", gp_ties_pruned,
            "too many zeros when several weights tie at the threshold: |w| > threshold prunes EVERY weight equal "
            "to it; prune exactly round(sparsity * n) weights, picked by position in a sort (np.argsort), not by "
            "comparing with a value"),
    Mistake("one zero too many", gp_off_by_one,
            "one zero too many: the threshold is the (k+1)-th smallest |w| (an off-by-one in the index), so "
            "k + 1 weights are pruned; prune exactly k = round(sparsity * n)"),
)


def prune_case(case: int) -> tuple[dict, float]:
    """Case ``case`` (1 to 4) of the global_magnitude_prune check: ``weights, sparsity`` (float64)."""
    rng = np.random.default_rng(1000 + case)
    if case == 1:
        w = {"0.weight": rng.standard_normal((3, 4)), "0.bias": 0.01 * rng.standard_normal(3),
             "2.weight": 0.3 * rng.standard_normal((2, 3)), "2.bias": 0.01 * rng.standard_normal(2)}
        return w, 0.5
    if case == 2:       # ties: magnitudes on a grid of 0.1, with a tie across the threshold
        w = {"fc1.weight": np.round(rng.standard_normal((4, 5)), 1), "fc1.bias": np.zeros(4),
             "fc2.weight": np.round(0.5 * rng.standard_normal((3, 4)), 1), "fc2.bias": np.full(3, 0.05)}
        return w, 0.45                                   # 14 of 32 zeros: the 14th and 15th smallest |w| tie
    if case == 3:
        w = {"conv.weight": 0.2 * rng.standard_normal((3, 2, 3, 3)), "conv.bias": 0.01 * rng.standard_normal(3),
             "fc.weight": rng.standard_normal((4, 12)), "fc.bias": 0.01 * rng.standard_normal(4)}
        return w, 0.75
    w = {"0.weight": rng.standard_normal((32, 64)) / 8, "0.bias": 0.01 * rng.standard_normal(32),
         "2.weight": rng.standard_normal((32, 32)) / 6, "2.bias": 0.01 * rng.standard_normal(32),
         "4.weight": rng.standard_normal((10, 32)) / 6, "4.bias": 0.01 * rng.standard_normal(10)}
    return w, 0.9


def _as_masks(got):
    if isinstance(got, dict):
        return {k: np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v for k, v in got.items()}
    return got


def _same_masks(a, b) -> bool:
    if not (isinstance(a, dict) and isinstance(b, dict)) or a.keys() != b.keys():
        return False
    return all(np.shape(a[k]) == np.shape(b[k]) and _close(a[k], b[k], rtol=0, atol=0) for k in a)


def _valid_masks(masks, weights, sparsity) -> str | None:
    """What is wrong with ``masks`` as an answer (None: a right answer, ties broken any way)."""
    names = _weight_names(weights)
    n = sum(np.size(weights[k]) for k in names)
    k = int(round(sparsity * n))
    pruned, kept = [], []
    for name in names:
        m, w = masks[name], np.abs(weights[name])
        if not np.isin(m, (0, 1)).all():
            return f"masks['{name}'] holds values other than 0 and 1"
        pruned.append(w[m == 0])
        kept.append(w[m == 1])
    pruned, kept = np.concatenate(pruned), np.concatenate(kept)
    if pruned.size != k:
        return f"{pruned.size} of the {n} weights are pruned: round({sparsity} * {n}) = {k} should be"
    if pruned.size and kept.size and pruned.max() > kept.min():
        return (f"a weight with |w| = {pruned.max():.4g} is pruned while one with |w| = {kept.min():.4g} is kept: "
                "ALL the pruned weights must be smaller in magnitude than all the kept ones")
    return None


@check.exercise(points=3, mistakes=PRUNE_MISTAKES, reference=(en.magnitude_masks, et.prune_global),
                forbid=(en.structured_masks,), hints=[
    "Global magnitude pruning puts the weights of ALL layers (not the biases) in one pool, ranks them by |w|, "
    "and removes the round(sparsity * n) smallest; the answer is a {0, 1} mask per weight, of its shape.",
    "Concatenate |w|.ravel() of every key ending in 'weight'; the positions of the k smallest come from a sort "
    "of that vector (np.argsort picks exactly k even when values tie); set those to 0 in a vector of ones; "
    "cut the vector back into pieces of each weight's size and reshape them.",
    "names = [k for k in weights if k.endswith('weight')]; flat = np.concatenate([np.abs(weights[k]).ravel() for "
    "k in names]); keep = np.ones(flat.size); keep[np.argsort(flat)[:k]] = 0; then slice keep[start:start + "
    "w.size].reshape(w.shape) for each name in turn.",
])
def global_magnitude_prune(fn):
    """{0, 1} masks that remove the round(sparsity * n) smallest |w| of all layers together."""
    for case in range(1, 5):
        weights, sparsity = prune_case(case)
        names = _weight_names(weights)
        what = (f"{len(names)} weight tensors {', '.join(str(np.shape(weights[k])) for k in names)}, sparsity "
                f"{sparsity}" + (", magnitudes that tie" if case == 2 else ""))
        line = (f"from dlcourse.efficiency.checks import prune_case; weights, sparsity = prune_case({case}); "
                "global_magnitude_prune(weights, sparsity)")
        with trying("global_magnitude_prune", label=what, call_text=line) as tried:
            expected = global_magnitude_prune_masks(weights, sparsity)
            before = _copy_dict(weights)
            raw = call(fn, weights, sparsity, allow_mutation=True)
            changed = _dict_changed(before, weights)
            if changed is not None:
                raise CheckFailed(f"global_magnitude_prune changed weights['{changed}'] in place: leave the weights "
                                  f"alone and return new mask arrays (np.ones(...), not views of the weights) "
                                  f"({what})", mistake="mutated input")
            if raw is None:
                raise CheckFailed(f"global_magnitude_prune returned None: did you forget `return masks`? ({what})")
            if not isinstance(raw, dict):
                raise CheckFailed(f"return a dict name -> mask (one per weight), not a {type(raw).__name__} ({what})")
            got = _as_masks(raw)
            tried.got, tried.expected = got, expected
            ok = got.keys() == expected.keys() and all(np.shape(got[k]) == np.shape(weights[k]) for k in got)
            if ok and _valid_masks(got, weights, sparsity) is None:
                continue                                        # right, whatever the tie-breaking
            diagnose(got, expected, PRUNE_MISTAKES, same=_same_masks, apply=lambda row: row(weights, sparsity),
                     suffix=f"({what})")
            extra = [k for k in got if k not in expected]
            if any(k.endswith("bias") for k in extra):
                fail_with(PRUNE_MISTAKES, "biases pruned", f"({what}; the masks hold {extra})")
            if extra or any(k not in got for k in expected):
                raise CheckFailed(f"the masks' keys are {sorted(got)}: give one mask for every key ending in "
                                  f"'weight', {sorted(expected)} ({what})")
            for k in names:
                shape = np.shape(got[k])
                if shape != np.shape(weights[k]):
                    if np.prod(shape) == np.size(weights[k]):
                        fail_with(PRUNE_MISTAKES, "flattened masks", f"({what}; masks['{k}'] has shape {shape})")
                    raise CheckFailed(f"masks['{k}'] has shape {shape}, its weight {np.shape(weights[k])}: give each "
                                      f"mask its weight's shape ({what})")
            raise CheckFailed(f"{_valid_masks(got, weights, sparsity)} ({what})")
    return ("one threshold over all layers, exactly round(sparsity * n) zeros, biases untouched, on 4 cases (ties, a "
            "conv layer, 90 % of a 3-layer MLP)")


# =========================================================================== 3. per-channel int8 quantization

def _minmax(w, axis_rows=True, include_zero=True):
    flat = np.asarray(w, dtype=np.float64).reshape(len(w), -1) if axis_rows else np.asarray(w).reshape(1, -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    if include_zero:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    return lo, hi


def _q_along(v, w):
    return np.asarray(v).reshape((len(w),) + (1,) * (np.ndim(w) - 1))


def _quant(w, bits=8, scale_fn=None, zp_round=True, rounding="even", order="standard", clamp=True,
           per_tensor=False, include_zero=True, qmax_off=0, int_q=True, axis0=True, zp_sign=1, cast=None,
           zp_rnd=np.round, zp_mid=False):
    w = np.asarray(w, dtype=np.float64)
    qmin, qmax = 0, 2 ** bits - 1 + qmax_off
    if axis0:
        lo, hi = _minmax(w, not per_tensor, include_zero)
        if per_tensor:
            lo, hi = np.full(len(w), lo[0]), np.full(len(w), hi[0])
    else:                                                   # min and max over axis 0: one per column
        lo, hi = np.minimum(w.min(axis=0), 0.0), np.maximum(w.max(axis=0), 0.0)
    scale = scale_fn(lo, hi, qmin, qmax) if scale_fn else (hi - lo) / (qmax - qmin)
    scale = np.maximum(scale, en.FLOAT32_EPS)
    zp = qmin - zp_sign * lo / scale
    if zp_mid:                                              # symmetric: the middle code stands for 0
        zp = np.full(len(scale), (qmin + qmax + 1) // 2, dtype=np.int64)
    elif zp_round:
        zp = np.clip(zp_rnd(zp), qmin, qmax).astype(np.int64)
    s, z = (_q_along(scale, w), _q_along(zp, w)) if axis0 else (scale, zp)
    rnd = {"even": np.round, "up": lambda v: np.floor(v + 0.5), "floor": np.floor, "trunc": np.trunc}[rounding]
    if order == "clip first":                               # the rounded value clamped, then shifted
        return (np.clip(rnd(w / s), qmin, qmax) + z).astype(np.int64), scale, zp
    q = rnd(w / s + z) if not zp_round else rnd(w / s) + z
    if cast == "uint8 before clip":                         # wraps around below 0 and above 255, then clipped
        return np.clip(q.astype(np.int64).astype(np.uint8), qmin, qmax), scale, zp
    if cast == "int8":                                      # signed: codes above 127 wrap around to negatives
        return np.clip(q, qmin, qmax).astype(np.int64).astype(np.int8), scale, zp
    if clamp:
        q = np.clip(q, qmin, qmax)
    return (q.astype(np.int64) if int_q else q.astype(np.float64)), scale, zp


def qp_max_only(w, bits=8):
    return _quant(w, bits, scale_fn=lambda lo, hi, qmin, qmax: hi / qmax)


def qp_zp_float(w, bits=8):
    return _quant(w, bits, zp_round=False)


def qp_clamp_before_zp(w, bits=8):
    return _quant(w, bits, order="clip first")


def qp_half_up(w, bits=8):
    return _quant(w, bits, rounding="up")


def qp_no_clamp(w, bits=8):
    return _quant(w, bits, clamp=False)


def qp_per_tensor(w, bits=8):
    return _quant(w, bits, per_tensor=True)


def qp_zero_not_in_range(w, bits=8):
    return _quant(w, bits, include_zero=False)


def qp_qmax_2_to_bits(w, bits=8):
    return _quant(w, bits, qmax_off=1)


def qp_columns(w, bits=8):
    return _quant(w, bits, axis0=False)


def qp_int8(w, bits=8):
    return _quant(w, bits, cast="int8")


def qp_cast_before_clip(w, bits=8):
    return _quant(w, bits, cast="uint8 before clip")


def qp_truncated(w, bits=8):
    return _quant(w, bits, rounding="trunc")


def qp_floor(w, bits=8):
    return _quant(w, bits, rounding="floor")


def qp_zp_sign(w, bits=8):
    return _quant(w, bits, zp_sign=-1)


def qp_bits_ignored(w, bits=8):
    return _quant(w, 8)


def qp_float_q(w, bits=8):
    return _quant(w, bits, int_q=False)


def qp_zp_floor(w, bits=8):
    return _quant(w, bits, zp_rnd=np.floor)


def qp_symmetric(w, bits=8):
    return _quant(w, bits, scale_fn=lambda lo, hi, qmin, qmax: 2 * np.maximum(-lo, hi) / (qmax - qmin), zp_mid=True)


def qp_scale_eps(w, bits=8):
    return _quant(w, bits, scale_fn=lambda lo, hi, qmin, qmax: (hi - lo) / (qmax - qmin) + 1e-8)


QUANT_MISTAKES = (
    Mistake("scale from max alone", qp_max_only,
            "the scale comes from the maximum alone (max / qmax), which wastes the codes on the negative side and "
            "clamps every negative weight: the affine scale spans the whole range, (max - min) / (qmax - qmin)"),
    Mistake("zero point not rounded", qp_zp_float,
            "the zero point is not an integer: round it (and clamp it to [qmin, qmax]), zero_point = "
            "round(qmin - min / scale), so that the real 0 maps to an integer code exactly; return it as ints"),
    Mistake("clamped before adding the zero point", qp_clamp_before_zp,
            "round(w / scale) was clamped to [qmin, qmax] BEFORE the zero point was added: negative weights all "
            "land on the zero point's code, and codes above qmax survive; add the zero point first, then clamp "
            "the code, np.clip(np.round(w / scale) + zero_point, qmin, qmax)"),
    Mistake("rounded half up", qp_half_up,
            "ties are rounded up (floor(v + 0.5)): np.round rounds half to EVEN, as torch.quantize_per_channel "
            "does (2.5 -> 2, 3.5 -> 4); use np.round"),
    Mistake("no clamp", qp_no_clamp,
            "a code lies outside [qmin, qmax]: round(w / scale) + zero_point can reach qmax + 1 at an exact half "
            "(the zero point was rounded too); clamp with np.clip(..., qmin, qmax) after adding the zero point"),
    Mistake("per-tensor, not per-channel", qp_per_tensor,
            "every channel got the same scale and zero point (from the whole tensor's min and max): per-channel "
            "quantization takes the min and max of EACH output channel, w[c], one (scale, zero_point) per row"),
    Mistake("range not extended to include 0", qp_zero_not_in_range,
            "the range [min, max] was not widened to contain 0: for a channel whose weights are all positive (or "
            "all negative) 0 is then not representable; use min(w_c.min(), 0) and max(w_c.max(), 0)"),
    Mistake("qmax = 2^bits", qp_qmax_2_to_bits,
            "qmax is 2^bits - 1 (255 for 8 bits: 256 codes 0..255), not 2^bits"),
    Mistake("min and max over the wrong axis", qp_columns,
            "the min and max were taken over axis 0 (one per INPUT column): per-channel means one scale per OUTPUT "
            "channel, the rows w[c], so reduce over every axis but the first (w.reshape(len(w), -1).min(axis=1))"),
    Mistake("int8 wrap-around", qp_int8,
            "the codes were stored as SIGNED int8 (-128..127), so every code above 127 wrapped around to a negative "
            "number: the codes are unsigned, 0..qmax; store them as np.uint8 (or np.int64)"),
    Mistake("cast before clamping", qp_cast_before_clip,
            "the codes were cast to uint8 BEFORE they were clamped: a code below 0 or above 255 wraps around (-1 "
            "becomes 255, 256 becomes 0); clamp first, np.clip(..., qmin, qmax), then cast"),
    Mistake("truncated, not rounded", qp_truncated,
            "w / scale was truncated (.astype(int) cuts toward 0), not rounded: use np.round(w / scale) before adding "
            "the zero point"),
    Mistake("floor, not round", qp_floor,
            "w / scale was rounded DOWN (np.floor), not to the nearest code: use np.round(w / scale) before adding "
            "the zero point"),
    Mistake("zero point sign flipped", qp_zp_sign,
            "the zero point has the wrong sign: the channel's minimum must map to qmin, so zero_point = round(qmin - "
            "min / scale), a positive code when min < 0"),
    Mistake("bits ignored", qp_bits_ignored,
            "the codes use 8 bits whatever `bits` says: qmax = 2^bits - 1 (15 for 4 bits), in the scale and the clamp"),
    Mistake("codes left as floats", qp_float_q,
            "the codes are right but still floats: the quantized tensor holds integers, convert with "
            ".astype(np.uint8) (or another integer type)"),
    Mistake("zero point floored", qp_zp_floor,
            "the zero point was floored (or truncated): it is the code NEAREST to the real 0, round(qmin - min / "
            "scale), so that 0 is represented with the least error"),
    Mistake("symmetric, not affine", qp_symmetric,
            "that is SYMMETRIC quantization (a scale from the largest |w| and the middle code as zero point): a "
            "valid scheme, but it spends half the codes on a side a lopsided channel hardly uses; the exercise asks "
            "for AFFINE quantization, scale = (max - min) / (qmax - qmin) and zero point = round(qmin - min / scale)"),
    Mistake("epsilon added to every scale", qp_scale_eps,
            "a small constant was added to every scale: that shifts all of them, and some zero points and codes "
            "then round the other way; guard only the zero range, np.maximum(scale, np.finfo(np.float32).eps), "
            "which leaves every other scale exact"),
)


def quant_case(case: int) -> tuple[np.ndarray, int]:
    """Case ``case`` (1 to 4) of the quantize_per_channel check: ``w, bits`` (float64, (C_out, ...))."""
    rng = np.random.default_rng(1100 + case)
    if case == 1:
        s = 0.0625
        w = np.array([[-3 * s, 2.5 * s, 3.5 * s, 252 * s],       # scale 1/16, zero point 3: exact halves
                      [-3.5 * s, 1.0, 251.5 * s, 0.5],           # zero point 4: 251.5 + 4 rounds to 256
                      [0.5, 1.0, 2.0, 1.5],                      # all positive
                      [-0.3, -0.1, -0.7, -0.2]])                 # all negative
        return w, 8
    if case == 2:
        return rng.standard_normal((4, 5)), 4
    if case == 3:
        w = 0.3 * rng.standard_normal((4, 2, 3, 3))
        w[2] = 0.0                                               # a pruned output channel
        return w, 8
    return rng.standard_normal((16, 64)) * rng.uniform(0.1, 2.0, (16, 1)), 8


def _same_quant(a, b) -> bool:
    try:
        return all(np.shape(x) == np.shape(y) and _close(x, y, rtol=1e-12, atol=0) for x, y in zip(a, b))
    except (TypeError, ValueError):
        return False


@check.exercise(points=2, mistakes=QUANT_MISTAKES, reference=(et.weight_qparams,),
                forbid=(en.qparams, en.quantize, en.quantization_error, et.fake_quant_weight), hints=[
    "Affine quantization maps each output channel's range [min, max] (widened to contain 0) onto the integer "
    "codes [qmin, qmax] = [0, 2^bits - 1]: scale = (max - min) / (qmax - qmin), and an INTEGER zero point is "
    "the code of the real 0. Then q = clamp(round(w / scale) + zero_point, qmin, qmax).",
    "Per channel: flatten every row, r = w.reshape(len(w), -1), and take its min and max along axis 1; widen "
    "with np.minimum(., 0) / np.maximum(., 0); floor the scale at float32's eps (a channel of zeros); zero point "
    "= round(qmin - min / scale), clamped, as ints. To divide w by a per-channel scale, reshape the scale to "
    "(C_out, 1, ...) so that it broadcasts along the rows.",
    "lo = np.minimum(r.min(axis=1), 0); hi = np.maximum(r.max(axis=1), 0); scale = np.maximum((hi - lo) / qmax, "
    "eps); zp = np.clip(np.round(-lo / scale), 0, qmax).astype(np.int64); shape = (-1,) + (1,) * (w.ndim - 1); "
    "then q from np.round(w / scale.reshape(shape)) + zp.reshape(shape), clipped and cast to ints.",
])
def quantize_per_channel(fn):
    """Per-channel affine quantization: (q, scale (C,), zero_point (C,) ints)."""
    for case in range(1, 5):
        w, bits = quant_case(case)
        what = f"w of shape {w.shape}, bits = {bits}" + (", exact halves" if case == 1 else "") + \
            (", a channel of zeros" if case == 3 else "")
        line = (f"from dlcourse.efficiency.checks import quant_case; w, bits = quant_case({case}); "
                "quantize_per_channel(w, bits)")
        with trying("quantize_per_channel", label=what, call_text=line) as tried:
            if case == 1:
                expect_defaults(fn, "quantize_per_channel", bits=8)
            expected = quantize_per_channel_affine(w, bits)
            raw = call(fn, w, bits)
            # torch (and the course) add the zero point before rounding, round(w / scale + zp); Jacob et al.'s
            # round(w / scale) + zp is just as right: the two differ only on exact ties (case 1 has some)
            rounded_first = _quant(w, bits)[0]
            if raw is None:
                raise CheckFailed(f"quantize_per_channel returned None: did you forget `return q, scale, "
                                  f"zero_point`? ({what})")
            if not (isinstance(raw, (tuple, list)) and len(raw) == 3):
                raise CheckFailed(f"quantize_per_channel must return three arrays (q, scale, zero_point); got "
                                  f"{type(raw).__name__} ({what})")
            q, scale, zp = (np.asarray(v) for v in raw)
            tried.got, tried.expected = (q, scale, zp), expected
            c = len(w)
            if scale.ndim == 0 or zp.ndim == 0:
                fail_with(QUANT_MISTAKES, "per-tensor, not per-channel",
                          f"({what}; the scale / zero point is one number, expected one per channel, shape ({c},))")
            if q.shape != w.shape:
                raise CheckFailed(f"q has shape {q.shape}, w {w.shape}: one code per weight ({what})")
            if scale.shape != (c,) and scale.size != c:
                diagnose((q, scale, zp), expected, QUANT_MISTAKES, same=_same_quant,
                         apply=lambda row: row(w, bits), suffix=f"({what})")
                raise CheckFailed(f"scale has shape {scale.shape}, expected ({c},): one scale per OUTPUT channel; "
                                  f"reduce over every axis but the first, w.reshape(len(w), -1).min(axis=1) "
                                  f"({what})", mistake="scale's shape")
            scale, zp = scale.reshape(c), zp.reshape(c)
            if w.ndim and np.any(scale == 0):
                channel = int(np.flatnonzero(scale == 0)[0])
                raise CheckFailed(f"the scale of channel {channel} is 0 (all its weights are 0, a pruned channel), "
                                  f"so w / scale is 0 / 0: floor the scale at np.finfo(np.float32).eps, as torch "
                                  f"does ({what})", mistake="scale 0")
            if q.shape == w.shape and _close(q, rounded_first, rtol=0, atol=0):
                expected = (rounded_first, expected[1], expected[2])
            diagnose((q, scale, zp), expected, QUANT_MISTAKES, same=_same_quant, apply=lambda row: row(w, bits),
                     suffix=f"({what})")
            if q.dtype.kind == "f" and _close(q, expected[0], rtol=0, atol=0):
                fail_with(QUANT_MISTAKES, "codes left as floats", f"({what}; q is {q.dtype})")
            if zp.dtype.kind == "f":
                if _close(zp, expected[2], rtol=0, atol=0):
                    raise CheckFailed(f"the zero points are whole numbers but stored as floats ({zp.dtype}): return "
                                      f"them as ints, .astype(np.int64) ({what})", mistake="zero point float dtype")
                fail_with(QUANT_MISTAKES, "zero point not rounded", f"({what})")
            if q.dtype.kind not in "iu":
                raise CheckFailed(f"q is {q.dtype}: return integer codes ({what})")
            excess = scale - expected[1]
            if np.all(excess > 0) and np.ptp(excess) <= 1e-3 * excess.min() and excess.max() < 1e-4 * expected[1].max():
                fail_with(QUANT_MISTAKES, "epsilon added to every scale",
                          f"(every scale is {excess.min():.1e} too large; {what})")
            name_first_wrong(["scale", "zero_point", "q"], [scale, zp, q], [expected[1], expected[2], expected[0]],
                             what)                      # q last: a wrong scale or zero point makes q wrong too
    return ("codes, scales and integer zero points equal torch's quantize_per_channel rules on 4 tensors (exact "
            "halves, all-positive and all-negative channels, 4 bits, a conv weight with a channel of zeros)")


# --------------------------------------------------------------------------- 3b. dequantize, per channel

def _dq_along(v, q):
    return np.asarray(v).reshape((len(q),) + (1,) * (np.ndim(q) - 1))


def dq_no_zero_point(q, scale, zero_point):
    return np.asarray(q, dtype=np.float64) * _dq_along(scale, q)


def dq_zero_point_added(q, scale, zero_point):
    return (np.asarray(q, dtype=np.float64) + _dq_along(zero_point, q)) * _dq_along(scale, q)


def dq_divided(q, scale, zero_point):
    return (np.asarray(q, dtype=np.float64) - _dq_along(zero_point, q)) / _dq_along(scale, q)


def dq_last_axis(q, scale, zero_point):
    return (np.asarray(q, dtype=np.float64) - np.asarray(zero_point)) * np.asarray(scale)   # broadcast along the LAST axis


def dq_uint8_wrap(q, scale, zero_point):
    diff = np.asarray(q).astype(np.uint8) - _dq_along(zero_point, q).astype(np.uint8)       # wraps around below 0
    return diff.astype(np.float64) * _dq_along(scale, q)


def dq_integer_output(q, scale, zero_point):
    out = np.zeros_like(np.asarray(q), dtype=np.int64)                                      # an integer array
    out[...] = (np.asarray(q, dtype=np.float64) - _dq_along(zero_point, q)) * _dq_along(scale, q)
    return out


def dq_precedence(q, scale, zero_point):
    return np.asarray(q, dtype=np.float64) * _dq_along(scale, q) - _dq_along(zero_point, q)   # q * scale - zp


def dq_rounded(q, scale, zero_point):
    return np.round((np.asarray(q, dtype=np.float64) - _dq_along(zero_point, q)) * _dq_along(scale, q))


def dq_float32(q, scale, zero_point):
    return ((np.asarray(q, dtype=np.float64) - _dq_along(zero_point, q)) * _dq_along(scale, q)).astype(np.float32)


DEQUANT_MISTAKES = (
    Mistake("zero point not subtracted", dq_no_zero_point,
            "the zero point was not subtracted: the code zero_point stands for the real 0, so x_hat = (q - "
            "zero_point) * scale"),
    Mistake("zero point added", dq_zero_point_added,
            "the zero point was added: quantization ADDED it to round(w / scale), so dequantization subtracts it, "
            "x_hat = (q - zero_point) * scale"),
    Mistake("divided by the scale", dq_divided,
            "divided by the scale: quantization divided by it, so dequantization multiplies, x_hat = (q - "
            "zero_point) * scale"),
    Mistake("zero point subtracted after scaling", dq_precedence,
            "the zero point was subtracted AFTER multiplying by the scale (q * scale - zero_point): it is a code, "
            "in the units of q, so it comes off first, x_hat = (q - zero_point) * scale (mind the parentheses)"),
    Mistake("uint8 wrap-around", dq_uint8_wrap,
            "negative differences wrapped around: in uint8 arithmetic q - zero_point cannot go below 0 (3 - 128 "
            "gives 131); widen first, q.astype(np.int64) - zero_point, then multiply by the scale"),
    Mistake("broadcast along the last axis", dq_last_axis,
            "the per-channel scale and zero point were broadcast along the LAST axis (NumPy lines a (C,) vector up "
            "with the last axis): they belong to the FIRST axis, the output channel; reshape them to (C, 1, ...), "
            "e.g. scale.reshape((-1,) + (1,) * (q.ndim - 1))"),
    Mistake("integer output array", dq_integer_output,
            "the values are cut to integers: the result was stored in an integer array (np.zeros_like(q) and "
            "np.empty_like(q) take q's integer dtype); compute a new float64 array instead"),
    Mistake("float32", dq_float32,
            "the result is float32: return float64 (the scales are float64; no .astype(np.float32))"),
    Mistake("result rounded", dq_rounded,
            "the result was rounded to whole numbers: dequantization returns real values, (q - zero_point) * "
            "scale, unrounded; only quantization rounds"),
)


def dequant_case(case: int):
    """Case ``case`` (1 to 4) of the dequantize check: ``q, scale, zero_point`` (q uint8 codes of a seeded w)."""
    rng = np.random.default_rng(1200 + case)
    shape = [(3, 3), (4, 5), (4, 2, 3, 3), (16, 64)][case - 1]
    w = rng.standard_normal(shape) + np.linspace(-0.5, 0.8, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    return quantize_per_channel_affine(w, 8)


@check.exercise(points=1, mistakes=DEQUANT_MISTAKES, reference=(en.dequantize,),
                forbid=(en.quantization_error, en.fake_quant_forward, et.fake_quant_weight), hints=[
    "Dequantization undoes the affine map: the code zero_point means the real 0, and one step between codes "
    "is `scale` in real units; each output channel (the first axis) has its own scale and zero point.",
    "Widen the codes to a signed integer or float type first (uint8 cannot hold negative differences), subtract "
    "the zero point, multiply by the scale, both reshaped so that they run along the first axis.",
    "shape = (-1,) + (1,) * (q.ndim - 1); then (q.astype(np.int64) - zero_point.reshape(shape)) times "
    "scale.reshape(shape), a float64 array of q's shape.",
])
def dequantize(fn):
    """x_hat = (q - zero_point) * scale, per output channel."""
    for case in range(1, 5):
        q, scale, zp = dequant_case(case)
        what = f"q of shape {q.shape} (uint8), per-channel scale and zero point"
        line = (f"from dlcourse.efficiency.checks import dequant_case; q, scale, zero_point = dequant_case({case}); "
                "dequantize(q, scale, zero_point)")
        with trying("dequantize", label=what, call_text=line) as tried:
            expected = dequantize_per_channel(q, scale, zp)
            try:
                got = call(fn, q, scale, zp)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                raises_like(DEQUANT_MISTAKES, err, lambda row: row(q, scale, zp), f"({what})",
                            right=lambda: dequantize_per_channel(q, scale, zp))
                if is_shape_error(err):
                    fail_with(DEQUANT_MISTAKES, "broadcast along the last axis", f"({what}; numpy said: {err})")
                raise
            if got is None:
                raise CheckFailed(f"dequantize returned None: did you forget a `return`? ({what})")
            if isinstance(got, (tuple, list)):
                raise CheckFailed(f"dequantize returned a {type(got).__name__}: return x_hat alone, one float64 array "
                                  f"of q's shape ({what})")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, DEQUANT_MISTAKES, apply=lambda row: row(q, scale, zp), suffix=f"({what})",
                     rtol=1e-12, atol=1e-15)
            if getattr(got, "dtype", None) in (np.float32, np.float16):
                fail_with(DEQUANT_MISTAKES, "float32", f"({what}; the result is {got.dtype})")
            expect_float64(["x_hat"], [got], what)
            expect_close(got, expected, f"x_hat ({what})", rtol=1e-12, atol=1e-15)
    w = np.random.default_rng(1204).standard_normal((16, 64))
    q, scale, zp = quantize_per_channel_affine(w, 8)
    worst = float(np.max(np.abs(w - dequantize_per_channel(q, scale, zp)) / (scale[:, None] / 2)))
    return ("(q - zero_point) * scale per output channel, on 2-d and 4-d codes; a quantize-dequantize round trip "
            f"of a (16, 64) weight misses it by at most half a step, scale / 2 (the worst weight: {worst:.2f} of "
            "it)")


# =========================================================================== 4. the distillation loss and its gradient

def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _distill(s, t, y, T, alpha, t2=True, t2_grad=True, teacher="logits", kl="forward", temp="both",
             mean=True, chain=True, swap=False, hard_T=False, soft_sign=1.0, t_power=2, hard_weight=None,
             hard_grad_mean=True, hard_grad=True):
    s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
    n, k = s.shape
    Ts, Tt = (T, T) if temp == "both" else (T, 1.0) if temp == "student" else (1.0, T)
    t_in = np.exp(_log_softmax(t)) if teacher == "probs" else t
    log_q = _log_softmax(t_in / Tt)                      # teacher, softened
    log_p = _log_softmax(s / Ts)                         # student, softened
    q, p = np.exp(log_q), np.exp(log_p)
    if kl in ("forward", "cross-entropy"):
        kl_rows = (q * (log_q - log_p)).sum(axis=1) if kl == "forward" else -(q * log_p).sum(axis=1)
        dz = p - q                                       # d KL(q || p) / d (s / Ts)
    else:
        kl_rows = (p * (log_p - log_q)).sum(axis=1)
        dz = p * ((log_p - log_q) - kl_rows[:, None])    # d KL(p || q) / d (s / Ts)
    d_soft = dz / Ts if chain else dz
    log_h = _log_softmax(s / T) if hard_T else _log_softmax(s)
    ce_rows = -log_h[np.arange(n), y]
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    d_hard = (np.exp(log_h) - onehot) / (T if hard_T else 1.0)
    a_soft, a_hard = (1 - alpha, alpha) if swap else (alpha, 1 - alpha)
    a_hard = a_hard if hard_weight is None else hard_weight
    scale_loss = T ** t_power if t2 else 1.0
    scale_grad = T ** t_power if (t2 and t2_grad) else 1.0
    div = n if mean else 1.0
    loss = (a_soft * scale_loss * kl_rows.sum() + a_hard * ce_rows.sum()) / div
    ds = (soft_sign * a_soft * scale_grad * d_soft
          + (a_hard * d_hard * (1.0 if hard_grad_mean else n) if hard_grad else 0.0)) / div
    return float(loss), ds


def kd_no_t2(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, t2=False)


def kd_t2_loss_only(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, t2_grad=False)


def kd_soft_from_probs(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, teacher="probs")


def kd_kl_reversed(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, kl="reverse")


def kd_student_only(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, temp="student")


def kd_teacher_only(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, temp="teacher")


def kd_sum(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, mean=False)


def kd_no_chain(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, chain=False)


def kd_alpha_swapped(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, swap=True)


def kd_soft_cross_entropy(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, kl="cross-entropy")


def kd_soft_sign(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, soft_sign=-1.0)


def kd_t_not_t2(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, t_power=1)


def kd_no_one_minus_alpha(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, hard_weight=1.0)


def kd_hard_grad_summed(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, hard_grad_mean=False)


def kd_no_hard_grad(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, hard_grad=False)


def kd_hard_softened(s, t, y, T, alpha):
    return _distill(s, t, y, T, alpha, hard_T=True)


DISTILL_MISTAKES = (
    Mistake("missing T^2", kd_no_t2,
            "the soft term lacks the T^2 factor (in the loss and the gradient): its gradient shrinks like 1 / T^2 "
            "as T grows; multiply the KL term by T^2 so that alpha means the same at every temperature"),
    Mistake("T^2 in the loss only", kd_t2_loss_only,
            "the loss is right but the gradient lacks the T^2 factor: the gradient of alpha * T^2 * KL carries "
            "the T^2 too, alpha * T^2 * (softmax(s/T) - softmax(t/T)) / (T N)"),
    Mistake("soft targets from probabilities", kd_soft_from_probs,
            "the soft targets were made from the teacher's PROBABILITIES, softmax(softmax(t) / T), which are almost "
            "uniform: soften the teacher's LOGITS, softmax(t / T)"),
    Mistake("KL in the wrong direction", kd_kl_reversed,
            "the KL divergence runs the wrong way, KL(student || teacher): the student matches the teacher's "
            "distribution q = softmax(t/T), KL(q || p) = sum q (log q - log p), whose gradient is (p - q) / T"),
    Mistake("temperature on the student only", kd_student_only,
            "the teacher was not softened: both distributions in the KL term use the temperature, softmax(t / T) "
            "AND softmax(s / T)"),
    Mistake("temperature on the teacher only", kd_teacher_only,
            "the student was not softened in the KL term: it compares softmax(s / T) with softmax(t / T) (the hard "
            "cross-entropy alone uses softmax(s))"),
    Mistake("sum over the batch", kd_sum,
            "the loss and the gradient are N times too large: take the MEAN over the batch (divide by N)"),
    Mistake("gradient without 1/T", kd_no_chain,
            "the soft term's gradient misses the chain rule's 1/T: the student's softened logits are s / T, so "
            "d/ds brings a factor 1/T, alpha * T^2 * (softmax(s/T) - softmax(t/T)) / (T N)"),
    Mistake("alpha weights swapped", kd_alpha_swapped,
            "the weights are swapped: alpha weighs the SOFT (distillation) term, 1 - alpha the hard cross-entropy"),
    Mistake("soft cross-entropy for KL", kd_soft_cross_entropy,
            "the gradient is right but the loss is the soft CROSS-entropy, -sum q log p: the KL divergence also "
            "holds the entropy of q, KL(q || p) = sum q (log q - log p); add sum q log q"),
    Mistake("soft gradient sign flipped", kd_soft_sign,
            "the soft term's gradient has the wrong sign: KL(q || p) grows as the student moves away from the "
            "teacher, so its gradient with respect to s / T is p - q (student minus teacher), not q - p"),
    Mistake("T instead of T^2", kd_t_not_t2,
            "the soft term is multiplied by T, not T^2: the factor that keeps its gradient's size as T grows is T^2, "
            "in the loss and (through it) in the gradient"),
    Mistake("(1 - alpha) dropped", kd_no_one_minus_alpha,
            "the hard cross-entropy is not weighted by (1 - alpha): the two terms are mixed, alpha * soft + "
            "(1 - alpha) * hard, in the loss and in the gradient"),
    Mistake("hard gradient not averaged", kd_hard_grad_summed,
            "the hard term's gradient is N times too large: its loss is the MEAN over the batch, so its gradient "
            "is (softmax(s) - onehot(y)) / N, like the soft term's"),
    Mistake("hard term missing from the gradient", kd_no_hard_grad,
            "the loss is right but the gradient holds only the soft term: the hard cross-entropy is in the loss, so "
            "its gradient, (1 - alpha) * (softmax(s) - onehot(y)) / N, belongs in ds too"),
    Mistake("hard term softened", kd_hard_softened,
            "the hard cross-entropy used the softened student softmax(s / T): the labels are matched at T = 1, "
            "CE(softmax(s), y)"),
)

# (N, K, T, alpha, seed)
DISTILL_CASES = [(2, 3, 2.0, 0.3, 1301), (4, 5, 4.0, 0.9, 1302), (16, 10, 3.0, 0.7, 1303)]


def distill_case(case: int):
    """Case ``case`` (1 to 3) of the distill_loss check: ``s, t, y, T, alpha`` (float64 logits)."""
    n, k, T, alpha, seed = DISTILL_CASES[case - 1]
    rng = np.random.default_rng(seed)
    return 2 * rng.standard_normal((n, k)), 3 * rng.standard_normal((n, k)), rng.integers(0, k, n), T, alpha


def _same_kd(a, b) -> bool:
    try:
        return _close(a[0], b[0], rtol=1e-9, atol=1e-12) and _close(a[1], b[1], rtol=1e-9, atol=1e-12)
    except (TypeError, IndexError):
        return False


@check.exercise(points=3, mistakes=DISTILL_MISTAKES,
                reference=(en.distill_loss_forward, et.distill_loss), forbid=(en.distill_loss_backward,), hints=[
    "Two terms: alpha * T^2 * KL(teacher's softened distribution || student's softened distribution) and (1 - "
    "alpha) * the usual cross-entropy with the labels, each a mean over the batch. Softened means softmax(logits "
    "/ T); the gradient of each term with respect to s is a 'softmax minus target' difference.",
    "Compute log-softmaxes stably (subtract the row max): log p = log softmax(s / T), log q = log softmax(t / T), "
    "log softmax(s). KL per row = sum q (log q - log p); CE per row = -log softmax(s)[y]. Gradient: the soft "
    "term gives (p - q) / T per row (chain rule through s / T), the hard term softmax(s) - onehot(y).",
    "loss = (alpha * T**2 * kl_rows.sum() + (1 - alpha) * ce_rows.sum()) / N; ds = alpha * T**2 * (p - q) / (T * "
    "N) + (1 - alpha) * (softmax(s) - onehot) / N, with onehot[np.arange(N), y] = 1.",
])
def distill_loss(fn):
    """Hinton et al.'s distillation loss (mean over the batch) and its gradient w.r.t. the student logits."""
    for case in range(1, len(DISTILL_CASES) + 1):
        s, t, y, T, alpha = distill_case(case)
        what = f"N = {len(s)}, K = {s.shape[1]}, T = {T}, alpha = {alpha}"
        line = (f"from dlcourse.efficiency.checks import distill_case; s, t, y, T, alpha = distill_case({case}); "
                "distill_loss(s, t, y, T, alpha)")
        with trying("distill_loss", label=what, call_text=line) as tried:
            expected = distill_loss_and_grad(s, t, y, T, alpha)
            raw = call(fn, s, t, y, T, alpha)
            if raw is None:
                raise CheckFailed(f"distill_loss returned None: did you forget `return loss, ds`? ({what})")
            if not (isinstance(raw, (tuple, list)) and len(raw) == 2):
                raise CheckFailed(f"distill_loss must return two things, (loss, ds): the loss, a number, and its "
                                  f"gradient (N, K); got {type(raw).__name__} ({what})")
            loss, ds = raw
            if not isinstance(ds, np.ndarray) or not isinstance(loss, (float, int, np.floating, np.ndarray)):
                raise CheckFailed(f"distill_loss must return (loss, ds): a number and a NumPy array (N, K); got a "
                                  f"{type(loss).__name__} and a {type(ds).__name__} ({what})")
            if np.ndim(loss) != 0:
                raise CheckFailed(f"the loss must be one number (the mean over the batch), got an array of shape "
                                  f"{np.shape(loss)} ({what})")
            got = (float(np.asarray(loss)), ds)
            tried.got, tried.expected = got, expected
            if not np.isfinite(got[0]):
                raise CheckFailed(f"the loss is {got[0]}: an overflow in exp, or the log of 0? subtract the row max "
                                  f"before exp (a stable log-softmax) ({what})", mistake="non-finite loss")
            diagnose(got, expected, DISTILL_MISTAKES, same=_same_kd, apply=lambda row: row(s, t, y, T, alpha),
                     suffix=f"({what})")
            expect_float64(["ds"], [got[1]], what)
            name_first_wrong(["loss", "ds"], [got[0], got[1]], expected, what)
    s, t, y, T, alpha = distill_case(3)
    loss1, ds1 = distill_loss_and_grad(s, t, y, 1.0, 1.0)
    loss8, ds8 = distill_loss_and_grad(s, t, y, 8.0, 1.0)
    return ("loss and gradient right on 3 batches; with the T^2 factor the soft gradient keeps its size: |ds| is "
            f"{np.abs(ds1).mean():.2g} at T = 1 and {np.abs(ds8).mean():.2g} at T = 8 (without it, "
            f"{np.abs(ds8).mean() / 64:.2g})")


# =========================================================================== 5. ring all-reduce with explicit messages

class Network:
    """The only way data moves between P simulated workers: ``send(src, dst, data)`` returns what ``dst`` receives.

    Each worker can read only its own memory; ``send`` delivers a COPY of ``data`` (a NumPy array) from worker
    ``src`` to worker ``dst`` and records the message, so that the check can count the bytes each worker sent
    and see who talked to whom.  ``Network(P).send`` is what the check passes to your ``ring_allreduce``.
    """

    def __init__(self, workers: int):
        self.workers = int(workers)
        self.messages: list[tuple[int, int, int]] = []      # (src, dst, bytes)

    def send(self, src: int, dst: int, data) -> np.ndarray:
        if not (_what_int(src) and _what_int(dst) and 0 <= src < self.workers and 0 <= dst < self.workers):
            raise ValueError(f"send(src, dst, data): src and dst are worker numbers 0 .. {self.workers - 1}, got "
                             f"src={src!r}, dst={dst!r}")
        if src == dst:
            raise ValueError(f"worker {src} sent a message to itself: a worker reads its own memory directly")
        data = np.array(data, copy=True)
        self.messages.append((int(src), int(dst), int(data.nbytes)))
        return data

    @property
    def bytes_sent(self) -> np.ndarray:
        """(P,) the bytes each worker sent."""
        sent = np.zeros(self.workers, dtype=np.int64)
        for src, _, nbytes in self.messages:
            sent[src] += nbytes
        return sent

    def __repr__(self) -> str:
        return f"Network({self.workers} workers, {len(self.messages)} messages, {int(self.bytes_sent.sum())} bytes)"


def _ring(buffers, send, rs_sign=-1, all_gather=True, average=True, ag_add=False, ag_shift=1, hop_div=False):
    """The ring with a choice of chunk arithmetic (rs_sign) and phases, for the mistake rows."""
    P = len(buffers)
    shape = np.shape(buffers[0])
    mem = [[c.copy() for c in np.array_split(np.asarray(b, dtype=np.float64).ravel(), P)] for b in buffers]
    for k in range(P - 1):
        for i in range(P):
            c = (i + rs_sign * k) % P
            dst = (i + 1) % P
            got = send(i, dst, mem[i][c])
            mem[dst][c] = mem[dst][c] + (got / P if hop_div else got)
    if all_gather:
        for k in range(P - 1):
            for i in range(P):
                c = (i + ag_shift + rs_sign * k) % P
                dst = (i + 1) % P
                got = send(i, dst, mem[i][c])
                mem[dst][c] = mem[dst][c] + got if ag_add else got
    out = [np.concatenate(m).reshape(shape) for m in mem]
    return [o / P for o in out] if average and not hop_div else out


def rr_sum(buffers, send):
    return _ring(buffers, send, average=False)


def rr_reduce_scatter_only(buffers, send):
    return _ring(buffers, send, all_gather=False)


def rr_chunk_index(buffers, send):
    return _ring(buffers, send, rs_sign=+1)                  # chunk (i + k) where (i - k) is the running sum


def rr_all_gather_adds(buffers, send):
    return _ring(buffers, send, ag_add=True)


def rr_all_gather_index(buffers, send):
    return _ring(buffers, send, ag_shift=0)                  # all-gather forwards chunk (i - k), not (i + 1 - k)


def rr_divide_each_hop(buffers, send):
    return _ring(buffers, send, hop_div=True)                # received / P added at every reduce-scatter hop


def rr_mutates(buffers, send):
    P = len(buffers)
    mem = [np.array_split(b.reshape(-1), P) for b in buffers]  # views into the caller's buffers
    for k in range(P - 1):
        for i in range(P):
            c, dst = (i - k) % P, (i + 1) % P
            mem[dst][c] += send(i, dst, mem[i][c])           # adds into the input itself
    for k in range(P - 1):
        for i in range(P):
            c, dst = (i + 1 - k) % P, (i + 1) % P
            mem[dst][c][...] = send(i, dst, mem[i][c])
    return [np.concatenate(m).reshape(np.shape(buffers[0])) / P for m in mem]


def rr_whole_buffers(buffers, send):
    P = len(buffers)
    totals = [np.array(b, dtype=np.float64) for b in buffers]
    passing = [np.array(b, dtype=np.float64) for b in buffers]
    for _ in range(P - 1):                                   # pass every whole buffer once around the ring
        passing = [send((i - 1) % P, i, passing[(i - 1) % P]) for i in range(P)]
        totals = [t + p for t, p in zip(totals, passing)]
    return [t / P for t in totals]


def rr_all_to_all(buffers, send):
    P = len(buffers)
    out = []
    for i in range(P):
        total = np.array(buffers[i], dtype=np.float64)
        for j in range(P):
            if j != i:
                total = total + send(j, i, buffers[j])       # everyone sends to everyone
        out.append(total / P)
    return out


def rr_reshape(buffers, send):
    P = len(buffers)
    shape = np.shape(buffers[0])
    mem = [np.asarray(b, dtype=np.float64).reshape(P, -1).copy() for b in buffers]   # needs P to divide the size
    for k in range(P - 1):
        for i in range(P):
            c, dst = (i - k) % P, (i + 1) % P
            mem[dst][c] = mem[dst][c] + send(i, dst, mem[i][c])
    for k in range(P - 1):
        for i in range(P):
            c, dst = (i + 1 - k) % P, (i + 1) % P
            mem[dst][c] = send(i, dst, mem[i][c])
    return [m.reshape(shape) / P for m in mem]


def rr_no_messages(buffers, send):
    mean = sum(np.asarray(b, dtype=np.float64) for b in buffers) / len(buffers)
    return [mean.copy() for _ in buffers]


def rr_read_buffers(buffers, send):
    ring_allreduce_send(buffers, send)                       # the right messages, their contents thrown away
    mean = sum(np.asarray(b, dtype=np.float64) for b in buffers) / len(buffers)
    return [mean.copy() for _ in buffers]


class _AlteredNetwork(Network):
    """A network whose messages arrive altered (data + 1): a result built from them must change too."""

    def send(self, src: int, dst: int, data) -> np.ndarray:
        return super().send(src, dst, data) + 1.0


def rr_one_array(buffers, send):
    results = ring_allreduce_send(buffers, send)
    return [results[0]] * len(buffers)


RING_MISTAKES = (
    Mistake("input buffers changed", rr_mutates,
            "the callers' buffers were changed in place: np.array_split returns VIEWS into the buffer, so += on a "
            "chunk writes into the input; copy each worker's chunks first (c.copy()), or use a = a + b"),
    Mistake("data moved without send", rr_no_messages,
            "no message was sent: a worker can read only its own buffer; every piece of data that moves between "
            "workers must go through send(src, dst, data), which returns what dst receives"),
    Mistake("one array shared by all workers", rr_one_array,
            "the workers' results are one and the same array object: each worker holds its own copy (a change on "
            "one worker must not show on another); build P separate arrays"),
    Mistake("sum, not average", rr_sum,
            "every worker holds the SUM of the buffers: data parallelism needs the MEAN of the gradients, divide "
            "by P at the end"),
    Mistake("divided by P at every hop", rr_divide_each_hop,
            "the running sums were divided by P at every reduce-scatter hop: a chunk that has travelled k hops is "
            "then divided k times, so the workers' values are weighted unequally; add the received chunks as they "
            "are and divide the finished sum by P once, at the end"),
    Mistake("reduce-scatter only", rr_reduce_scatter_only,
            "only the reduce-scatter phase was done: each worker holds just ONE fully reduced chunk (the others "
            "are partial sums); the all-gather phase (P - 1 more steps) passes the finished chunks around the ring"),
    Mistake("chunk index off by one", rr_chunk_index,
            "the chunk indices go the wrong way round the ring: in reduce-scatter step k worker i must forward the "
            "chunk it has just added to, (i - k) mod P, to worker (i + 1) mod P (and in all-gather step k, "
            "the finished chunk (i + 1 - k) mod P)"),
    Mistake("all-gather adds", rr_all_gather_adds,
            "the all-gather ADDED what it received to the receiver's chunk: in that phase the chunks travelling "
            "round are already complete sums; the receiver REPLACES its chunk with them (mem[dst][c] = received)"),
    Mistake("all-gather chunk index", rr_all_gather_index,
            "the all-gather forwards the wrong chunk: after reduce-scatter worker i owns the complete chunk (i + 1) "
            "mod P, so in all-gather step k it sends chunk (i + 1 - k) mod P, the one it has just received"),
    Mistake("not a ring", rr_all_to_all,
            "messages go to workers that are not the sender's right neighbour: in a ring, worker i sends only to "
            "worker (i + 1) mod P"),
    Mistake("whole buffers sent", rr_whole_buffers,
            "the result is right, but every message carries a WHOLE buffer: that is P / 2 times the ring's "
            "traffic; cut each buffer into P chunks (np.array_split) and send one chunk per step, 2 (P - 1) "
            "chunks per worker in all"),
    Mistake("result not from the messages", rr_read_buffers,
            "the result must be assembled from the messages you receive, not read from the other workers' buffers: "
            "when send() delivers altered data, your result stays the plain mean of the buffers; keep what send() "
            "returns and build each worker's result from it"),
    Mistake("sizes not divisible by P", rr_reshape,
            "this fails when the buffer's size is not a multiple of P (reshape(P, -1) cannot split 7 numbers in 3): "
            "cut the flattened buffer with np.array_split(b.ravel(), P), whose chunks may differ in size by one"),
)

# (P, shape of each buffer, seed)
RING_CASES = [(2, (6,), 1401), (3, (7,), 1402), (4, (3, 5), 1403), (5, (23,), 1404)]


def ring_case(case: int) -> list:
    """Case ``case`` (1 to 4) of the ring_allreduce check: a list of P float64 buffers of one shape."""
    P, shape, seed = RING_CASES[case - 1]
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(P)]


def _same_lists(a, b) -> bool:
    try:
        return len(a) == len(b) and all(_close(x, y, rtol=1e-12, atol=1e-14) for x, y in zip(a, b))
    except TypeError:
        return False


@check.exercise(points=3, mistakes=RING_MISTAKES, reference=(en.ring_allreduce,), forbid=(en.naive_allreduce,),
                hints=[
    "The ring works on P chunks of every buffer. Reduce-scatter: in P - 1 steps every worker passes a running "
    "sum of one chunk to its right neighbour, who adds its own; then each worker owns one complete chunk. "
    "All-gather: in P - 1 more steps the complete chunks travel around the ring. Divide by P for the mean.",
    "Keep each worker's memory as a list of P chunk COPIES, np.array_split(buffer.ravel(), P). In reduce-scatter "
    "step k worker i sends chunk (i - k) % P to (i + 1) % P, which adds what it receives to its copy; in "
    "all-gather step k worker i sends chunk (i + 1 - k) % P, which the receiver stores in place of its own.",
    "mem = [[c.copy() for c in np.array_split(b.ravel(), P)] for b in buffers]; for k in range(P - 1): for i in "
    "range(P): c, dst = (i - k) % P, (i + 1) % P; mem[dst][c] = mem[dst][c] + send(i, dst, mem[i][c]); "
    "then the all-gather loop, and np.concatenate(mem[i]).reshape(shape) / P for each worker.",
])
def ring_allreduce(fn):
    """Ring all-reduce (reduce-scatter, then all-gather) through send(): every worker ends with the mean."""
    for case in range(1, len(RING_CASES) + 1):
        buffers = ring_case(case)
        P, shape = len(buffers), buffers[0].shape
        what = f"P = {P} workers, buffers of shape {shape}"
        line = (f"from dlcourse.efficiency.checks import ring_case, Network; buffers = ring_case({case}); "
                f"net = Network({P}); ring_allreduce(buffers, net.send); net")
        with trying("ring_allreduce", label=what, call_text=line) as tried:
            expected = [sum(buffers) / P for _ in range(P)]
            before = [b.copy() for b in buffers]
            net = Network(P)
            try:
                raw = call(fn, buffers, net.send, allow_mutation=True)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                raises_like(RING_MISTAKES, err, lambda row: row([b.copy() for b in buffers], Network(P).send),
                            f"({what})")
                raise
            if any(not np.array_equal(b, o) for b, o in zip(buffers, before)) or \
                    any(b.shape != o.shape for b, o in zip(buffers, before)):
                fail_with(RING_MISTAKES, "input buffers changed", f"({what})")
            if raw is None:
                raise CheckFailed(f"ring_allreduce returned None: did you forget to return the list of the P "
                                  f"workers' results? ({what})")
            if not (isinstance(raw, (list, tuple)) and len(raw) == P):
                raise CheckFailed(f"ring_allreduce must return a list of P = {P} arrays, one per worker; got "
                                  f"{type(raw).__name__}{f' of length {len(raw)}' if hasattr(raw, '__len__') else ''} "
                                  f"({what})")
            if not net.messages:
                fail_with(RING_MISTAKES, "data moved without send", f"({what})")
            got = [np.asarray(r) for r in raw]
            tried.got, tried.expected = got, expected
            if any(raw[i] is raw[j] for i in range(P) for j in range(i)) or any(
                    np.shares_memory(got[i], got[j]) for i in range(P) for j in range(i)):
                fail_with(RING_MISTAKES, "one array shared by all workers", f"({what})")
            for i, r in enumerate(got):
                if r.shape != shape:
                    raise CheckFailed(f"worker {i}'s result has shape {r.shape}, its buffer {shape}: reshape the "
                                      f"concatenated chunks back to the buffer's shape ({what})")
            diagnose(got, expected, RING_MISTAKES, same=_same_lists,
                     apply=lambda row: row([b.copy() for b in buffers], Network(P).send), suffix=f"({what})")
            expect_float64([f"worker {i}'s result" for i in range(P)], got, what)
            for i, r in enumerate(got):
                expect_close(r, expected[i], f"worker {i}'s result ({what})", rtol=1e-12, atol=1e-14)
            strangers = [(s, d) for s, d, _ in net.messages if d != (s + 1) % P]
            if strangers:
                fail_with(RING_MISTAKES, "not a ring", f"({what}; e.g. worker {strangers[0][0]} sent to worker "
                                                       f"{strangers[0][1]})")
            total, ring_total = int(net.bytes_sent.sum()), 2 * (P - 1) * buffers[0].nbytes
            if total > ring_total and total >= P * (P - 1) * buffers[0].nbytes and P > 2:
                fail_with(RING_MISTAKES, "whole buffers sent", f"({what}; {total} bytes sent in all, the ring "
                                                              f"sends {ring_total})")
            if total != ring_total:
                raise CheckFailed(f"the workers sent {total} bytes in all, a ring all-reduce sends 2 (P - 1) x the "
                                  f"buffer's {buffers[0].nbytes} bytes = {ring_total}: each chunk makes P - 1 hops in "
                                  f"each phase ({what})", mistake="wrong traffic")
            altered = call(fn, [b.copy() for b in buffers], _AlteredNetwork(P).send, allow_mutation=True)
            if isinstance(altered, (list, tuple)) and len(altered) == P and \
                    _same_lists([np.asarray(r) for r in altered], expected):
                fail_with(RING_MISTAKES, "result not from the messages",
                          f"({what}; a second run whose messages arrived as data + 1)")
    P, size = 8, 1_000_000
    return (f"every worker holds the mean, through 2 (P - 1) neighbour-to-neighbour messages each, on 4 rings (P = 2 "
            f"to 5, sizes not divisible by P); each worker sent 2 (P - 1) / P of a buffer: for P = {P} and a "
            f"{size * 4 // 10**6} MB gradient, {2 * (P - 1) * size * 4 / P / 1e6:.1f} MB per worker, where a root "
            f"would send {(P - 1) * size * 4 / 1e6:.0f} MB")


# =========================================================================== 6. a data-parallel SGD step (the larger task)

def _shards(n, workers):
    return np.array_split(np.arange(n), workers)


def _dp(params, x, y, workers, lr, grad_fn, weights="size", lr_scale=1.0, shard="own", reduce=True,
        overwrite=False):
    n = len(x)
    shards = _shards(n, workers)
    grads = []
    for p, idx in enumerate(shards):
        idx = shards[0] if shard == "first" else idx
        _, g = grad_fn(params, x[idx], y[idx])
        grads.append((len(idx), g))
    if not reduce:                                            # each worker steps with its own gradient
        return {k: params[k] - lr * grads[0][1][k] for k in params}
    total = {k: np.zeros_like(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    for size, g in grads:
        w = {"size": size / n, "plain": 1 / workers, "sum": 1.0, "count": float(size)}[weights]
        for k in total:
            total[k] = w * g[k] if overwrite else total[k] + w * g[k]
    return {k: params[k] - lr * lr_scale * total[k] for k in params}


def dp_sum(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, weights="sum")


def dp_plain_mean(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, weights="plain")


def dp_counts(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, weights="count")


def dp_same_shard(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, shard="first")


def dp_whole_batch(params, x, y, workers, lr, grad_fn):
    grads = [grad_fn(params, x, y)[1] for _ in range(workers)]          # every worker: the whole batch
    return {k: params[k] - lr * sum(g[k] for g in grads) / workers for k in params}


def dp_no_allreduce(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, reduce=False)


def dp_lr_over_p(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, lr_scale=1 / workers)


def dp_overwrite(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, overwrite=True)


def dp_whole_batch_after(params, x, y, workers, lr, grad_fn):
    _dp(params, x, y, workers, lr, grad_fn)                              # the shards' gradients, thrown away
    _, g = grad_fn(params, x, y)                                         # the step: the whole batch's gradient
    return {k: params[k] - lr * g[k] for k in params}


def dp_ascent(params, x, y, workers, lr, grad_fn):
    return _dp(params, x, y, workers, lr, grad_fn, lr_scale=-1.0)       # params + lr * g


def dp_last_shard(params, x, y, workers, lr, grad_fn):
    idx = _shards(len(x), workers)[-1]
    for shard in _shards(len(x), workers)[:-1]:
        grad_fn(params, x[shard], y[shard])
    _, g = grad_fn(params, x[idx], y[idx])                               # the step: the last worker's gradient
    return {k: params[k] - lr * g[k] for k in params}


def dp_sequential(params, x, y, workers, lr, grad_fn):
    new = dict(params)
    for idx in _shards(len(x), workers):                                 # each worker steps in turn
        _, g = grad_fn(new, x[idx], y[idx])
        new = {k: new[k] - lr * (len(idx) / len(x)) * g[k] for k in new}
    return new


def dp_per_shard_size(params, x, y, workers, lr, grad_fn):
    g = {k: np.zeros_like(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    for idx in _shards(len(x), workers):
        _, gp = grad_fn(params, x[idx], y[idx])
        for k in g:
            g[k] = g[k] + gp[k] / len(idx)                       # the shard's MEAN gradient divided by n_p again
    return {k: params[k] - lr * g[k] for k in params}


def dp_y_not_sharded(params, x, y, workers, lr, grad_fn):
    g = {k: np.zeros_like(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    for idx in _shards(len(x), workers):
        _, gp = grad_fn(params, x[idx], y)                        # every label with a shard of x
        for k in g:
            g[k] = g[k] + len(idx) / len(x) * gp[k]
    return {k: params[k] - lr * g[k] for k in params}


def dp_np_split(params, x, y, workers, lr, grad_fn):
    g = {k: np.zeros_like(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    for xs, ys in zip(np.split(x, workers), np.split(y, workers)):   # raises when N is not a multiple of P
        _, gp = grad_fn(params, xs, ys)
        for k in g:
            g[k] = g[k] + len(xs) / len(x) * gp[k]
    return {k: params[k] - lr * g[k] for k in params}


def dp_in_place(params, x, y, workers, lr, grad_fn):
    new = data_parallel_step_ref(params, x, y, workers, lr, grad_fn)
    for k in params:
        params[k][...] = new[k]                                          # the caller's arrays overwritten
    return params


DP_MISTAKES = (
    Mistake("params changed in place", dp_in_place,
            "the caller's params were changed in place (params[k] -= ... or params[k][...] = ...): return a NEW dict "
            "of new arrays, {k: params[k] - lr * g[k] for k in params}; the caller (and the other workers' "
            "replicas) still need the old weights"),
    Mistake("no all-reduce (worker 0's step)", dp_no_allreduce,
            "that is worker 0's step with its OWN shard's gradient: without the all-reduce each replica follows its "
            "own data and the replicas drift apart; average the gradients of all workers first, then step once"),
    Mistake("every worker the same shard", dp_same_shard,
            "every worker computed its gradient on the SAME rows (as if the workers' data loaders were seeded "
            "identically): worker p takes its own shard, the p-th piece of np.array_split(np.arange(N), workers)"),
    Mistake("whole batch on every worker", dp_whole_batch,
            "the result is right, but every worker computed the gradient of the WHOLE batch: that is P times the "
            "work of one process, nothing gained; give worker p only its shard"),
    Mistake("grad_fn on more than a shard", dp_whole_batch_after,
            "grad_fn was called on more rows than one worker's shard: no worker sees the whole batch; compute each "
            "worker's gradient on its own shard only and step with the all-reduced (weighted mean) gradient"),
    Mistake("workers step in turn", dp_sequential,
            "grad_fn was given params that had already been updated: each worker stepped in turn (sequential SGD); "
            "in a synchronous step every worker computes its gradient at the SAME params, then one averaged step"),
    Mistake("gradient ascent", dp_ascent,
            "the step goes UP the gradient (params + lr * g): SGD subtracts it, params[k] - lr * avg[k]"),
    Mistake("last worker's gradient only", dp_last_shard,
            "the step uses only the LAST worker's gradient: the all-reduce averages every worker's gradient, "
            "weighted by its shard's share n_p / N, and all replicas step with that average"),
    Mistake("sum, not average", dp_sum,
            "the worker gradients were summed, not averaged: the step is about P times too large (like lr * P); "
            "the all-reduce averages, so that the step equals one process's step on the whole batch"),
    Mistake("plain mean of unequal shards", dp_plain_mean,
            "a plain mean of the shard means is right only when every shard has the same size: here N is not a "
            "multiple of P, so weight each worker's mean gradient by its shard's size, sum_p (n_p / N) g_p"),
    Mistake("weighted by counts, not shares", dp_counts,
            "the gradients were weighted by the shard sizes n_p but not divided by N: sum_p n_p g_p is N times the "
            "batch-mean gradient; use the shares n_p / N"),
    Mistake("y not sharded", dp_y_not_sharded,
            "grad_fn got a shard of x with ALL the labels y: cut the labels with the same indices as the inputs, "
            "grad_fn(params, x[idx], y[idx])"),
    Mistake("np.split for unequal shards", dp_np_split,
            "np.split insists on equal pieces and fails when N is not a multiple of P: np.array_split(np.arange(N), "
            "workers) makes shards whose sizes differ by at most one"),
    Mistake("gradient divided by the shard size", dp_per_shard_size,
            "each worker's gradient was divided by its shard size n_p: grad_fn already returns the MEAN over the "
            "shard, so weight it by the shard's share n_p / N, not by 1 / n_p"),
    Mistake("lr divided by P", dp_lr_over_p,
            "the gradients are averaged and the learning rate is divided by P as well: the average already makes "
            "the step equal to the single-process one; keep lr as it is"),
    Mistake("= for +=", dp_overwrite,
            "only the LAST worker's gradient made it into the step: the accumulation overwrote the running sum (= "
            "where += is meant); add every worker's weighted gradient"),
)

# (layer sizes, N, P, lr, steps, seed)
DP_CASES = [((5, 4, 3), 6, 2, 0.5, 1, 1501), ((5, 4, 3), 7, 3, 0.5, 1, 1502), ((64, 16, 10), 50, 4, 0.3, 1, 1503),
            ((6, 8, 4), 10, 3, 0.5, 3, 1504)]


def dp_case(case: int):
    """Case ``case`` (1 to 4) of the data_parallel_step check: ``params, x, y, workers, lr`` (float64; case 4 is
    run for 3 steps, each from the previous step's params)."""
    sizes, n, P, lr, _, seed = DP_CASES[case - 1]
    rng = np.random.default_rng(seed)
    params = en.mlp_init(sizes, seed=seed)
    return params, rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n), P, lr


class _RecordingGrad:
    """``grad_fn`` for the check: the course's mlp_loss_and_grads, recording the rows each call was given."""

    def __init__(self):
        self.calls: list[np.ndarray] = []
        self.params: list[dict] = []                        # the params each call was given

    def __call__(self, params, x, y):
        if len(x) != len(y):
            raise ValueError(f"grad_fn(params, x, y) got {len(x)} rows of x but {len(y)} labels in y: a worker's "
                             f"inputs and labels are the same rows of the batch")
        self.calls.append(np.array(x, dtype=np.float64, copy=True))
        self.params.append(_copy_dict(params) if isinstance(params, dict) else params)
        return en.mlp_loss_and_grads(params, x, y)


def _covers_once(calls, x) -> bool:
    rows = [c for c in calls if len(c) < len(x)]
    if not rows:
        return False
    got = np.concatenate(rows)
    if len(got) != len(x):
        return False
    key = lambda a: a[np.lexsort(a.T[::-1])]                # noqa: E731 - the rows in a fixed order
    return np.array_equal(key(got), key(np.asarray(x, dtype=np.float64)))


def _dp_step(fn, params, x, y, P, lr, what, step_note=""):
    """One call of the learner's step, with the checks that recomputation cannot do; its new params."""
    before = _copy_dict(params)
    x0, y0 = x.copy(), y.copy()
    rec = _RecordingGrad()
    try:
        raw = call(fn, params, x, y, P, lr, rec, allow_mutation=True)
    except CheckFailed as fail:
        raises_like(DP_MISTAKES, getattr(fail, "error", None),
                    lambda row: row(_copy_dict(before), x0.copy(), y0.copy(), P, lr, _RecordingGrad()),
                    f"({what}{step_note})")
        raise
    if _dict_changed(before, params) is not None:
        fail_with(DP_MISTAKES, "params changed in place", f"({what}{step_note})")
    if not (np.array_equal(x, x0) and np.array_equal(y, y0)):
        raise CheckFailed(f"data_parallel_step changed x or y in place: leave the batch alone ({what})",
                          mistake="mutated input")
    if raw is None:
        raise CheckFailed(f"data_parallel_step returned None: did you forget to return the new params? ({what})")
    if not isinstance(raw, dict):
        raise CheckFailed(f"return the new params as a dict like params, not a {type(raw).__name__} ({what})")
    if not rec.calls:
        raise CheckFailed(f"grad_fn was never called: each worker computes its gradient with grad_fn(params, x_p, "
                          f"y_p) on its shard ({what})", mistake="grad_fn not called")
    if P > 1 and all(len(c) == len(x) for c in rec.calls):
        fail_with(DP_MISTAKES, "whole batch on every worker", f"({what})")
    if any(not isinstance(p, dict) or _dict_changed(before, p) is not None for p in rec.params):
        fail_with(DP_MISTAKES, "workers step in turn", f"({what}{step_note})")
    largest = -(-len(x) // P)
    if P > 1 and any(len(c) > largest for c in rec.calls) and \
            _covers_once([c for c in rec.calls if len(c) <= largest], x):      # the shards, plus a larger call
        fail_with(DP_MISTAKES, "grad_fn on more than a shard",
                  f"({what}; grad_fn got {[len(c) for c in rec.calls]} rows, a shard has at most {largest})")
    if P > 1 and len(rec.calls) > 1 and all(c.shape == rec.calls[0].shape and np.array_equal(c, rec.calls[0])
                                            for c in rec.calls):
        fail_with(DP_MISTAKES, "every worker the same shard", f"({what})")
    if raw.keys() != params.keys():
        raise CheckFailed(f"the new params have the keys {sorted(raw)}, expected {sorted(params)} ({what})")
    for k in params:
        if np.shape(raw[k]) != np.shape(params[k]):
            raise CheckFailed(f"new params['{k}'] has shape {np.shape(raw[k])}, expected {np.shape(params[k])} "
                              f"({what})")
    return {k: np.asarray(v) for k, v in raw.items()}, rec


def _same_params(a, b) -> bool:
    try:
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol=1e-10, atol=1e-12) for k in a)
    except (AttributeError, TypeError):
        return False


@check.exercise(points=4, mistakes=DP_MISTAKES, seconds=30, reference=(en.data_parallel_sgd,),
                forbid=(en.sgd, en.grad_accumulation, en.fedavg), hints=[
    "Synchronous data parallelism: cut the global batch into P contiguous shards, let each worker compute the "
    "MEAN gradient on its shard, average those gradients across the workers (the all-reduce), and take ONE SGD "
    "step with the average; the result must equal one process's step on the whole batch.",
    "Shards: np.array_split(np.arange(N), workers). For each shard, grads = grad_fn(params, x[idx], y[idx])[1]. "
    "When the shards differ in size, the global mean is sum_p (n_p / N) g_p, not a plain mean. Build a new dict; "
    "do not change params.",
    "for idx in np.array_split(np.arange(len(x)), workers): _, g = grad_fn(params, x[idx], y[idx]); "
    "share = len(idx) / len(x); avg[k] = avg[k] + share * g[k] for every k; then {k: params[k] - lr * avg[k] ...}.",
])
def data_parallel_step(fn):
    """One synchronous data-parallel SGD step on P simulated workers == the single-process step."""
    for case in range(1, len(DP_CASES) + 1):
        sizes, n, P, lr, steps, _ = DP_CASES[case - 1]
        what = (f"an MLP {'-'.join(map(str, sizes))}, N = {n}, P = {P}" + (" (unequal shards)" if n % P else "") +
                (f", {steps} steps" if steps > 1 else ""))
        line = (f"from dlcourse.efficiency.checks import dp_case; from dlcourse.efficiency.numpy_impl import "
                f"mlp_loss_and_grads; params, x, y, workers, lr = dp_case({case}); "
                "data_parallel_step(params, x, y, workers, lr, mlp_loss_and_grads)")
        with trying("data_parallel_step", label=what, call_text=line) as tried:
            params, x, y, P, lr = dp_case(case)
            for step in range(steps):
                note = f", step {step + 1}" if steps > 1 else ""
                expected = data_parallel_step_ref(params, x, y, P, lr, en.mlp_loss_and_grads)
                got, rec = _dp_step(fn, params, x, y, P, lr, what, note)
                tried.got, tried.expected = got, expected
                diagnose(got, expected, DP_MISTAKES, same=_same_params,
                         apply=lambda row: row(_copy_dict(params), x, y, P, lr, en.mlp_loss_and_grads),
                         suffix=f"({what}{note})")
                if not _covers_once(rec.calls, x):
                    raise CheckFailed(f"the workers' shards do not cover the batch exactly once (grad_fn got "
                                      f"{[len(c) for c in rec.calls]} rows of the N = {n}): give worker p the p-th "
                                      f"piece of np.array_split ({what}{note})", mistake="shards")
                for k in params:
                    expect_float64([f"params['{k}']"], [got[k]], what)
                    expect_close(got[k], expected[k], f"new params['{k}'] ({what}{note})", rtol=1e-10, atol=1e-12)
                params = got
    params, x, y, P, lr = dp_case(3)
    single = en.sgd(params, x, y, steps=1, lr=lr)
    dp = en.data_parallel_sgd(params, x, y, workers=P, steps=1, lr=lr)
    gap = max(float(np.max(np.abs(single.params[k] - dp.params[k]))) for k in params)
    return ("each step equals the single-process SGD step on the whole batch (equal and unequal shards, 3 steps in "
            f"a row); the course's ring-based data_parallel_sgd agrees with sgd to "
            f"{'below 1e-12' if gap < 1e-12 else f'{gap:.0e}'}")


# =========================================================================== concept questions

check.question(
    "q_linear_flops", answer=32768,
    explanation="nn.Linear(64, 256) does 64 x 256 = 16,384 multiply-adds per example, and the course counts a "
                "multiply-add as 2 FLOPs: 32,768 (the 256 bias adds are not counted, as in torch's FlopCounterMode)",
    mistakes=[Mistake("MACs", 16384, "16,384 is the number of multiply-adds (MACs): one multiply-add is 2 FLOPs"),
              Mistake("parameters", 16640, "16,640 = 64 x 256 + 256 is the number of PARAMETERS, not the work"),
              Mistake("bias adds counted", 33024, "the bias adds are not counted: only the multiply-adds, 2 FLOPs each"),
              Mistake("bias adds as 2 FLOPs", 33280, "the bias adds are not counted (and an add alone would be 1 "
                                                     "FLOP, not 2): only the multiply-adds, 2 FLOPs each"),
              Mistake("for the batch", 32768 * 256, "that is for a batch of 256: the question asks per example"),
              Mistake("4 FLOPs per multiply-add", 65536, "65,536 counts 4 FLOPs per multiply-add: it is 2, one "
                                                         "multiply and one add, for each of the 64 x 256 weights"),
              Mistake("forward and backward", 98304, "98,304 = 3 x 32,768 is a training step (the backward pass "
                                                     "costs about twice the forward): the question asks for one "
                                                     "forward pass"),
              Mistake("in thousands", 32.768, "the answer is asked in FLOPs, not thousands of FLOPs: 32.768 kFLOPs "
                                              "is 32,768")])

check.question(
    "q_int8_ratio", answer=4.0, rtol=1e-6,
    explanation="a float32 weight takes 4 bytes, an int8 code 1: 4x smaller. A quantized model measures a bit "
                "less than 4x, because its biases stay float32 and each channel (or tensor) keeps a float scale and "
                "an integer zero point",
    mistakes=[Mistake("bits", 8.0, "int8 has 8 bits, float32 32 bits: the ratio of their sizes is 32 / 8"),
              Mistake("inverted", 0.25, "0.25 is int8's size relative to float32: the question asks how many times "
                                        "SMALLER the int8 model is"),
              Mistake("float16", 2.0, "2x is float32 -> float16 (or bfloat16): int8 is a quarter of float32"),
              Mistake("percent saved", 75.0, "75 % is the share of the storage SAVED; the question asks for the factor: "
                                             "4 bytes per float32 weight against 1 per int8 code"),
              Mistake("bytes saved per weight", 3.0, "3 is the bytes saved per weight (4 - 1): the question asks for "
                                                     "the ratio of the sizes, 4 / 1")])

check.question(
    "q_ring_bytes", answer=150.0, rtol=1e-3,
    explanation="in a ring all-reduce each worker sends 2 (P - 1) chunks of S / P: 2 x 3 / 4 x 100 MB = 150 MB, "
                "nearly independent of P (it tends to 2 S); a root that gathers and broadcasts sends (P - 1) S = "
                "300 MB",
    mistakes=[Mistake("the root", 300.0, "300 MB is what the ROOT of a gather-then-broadcast sends, (P - 1) S: in "
                                         "the ring each worker sends 2 (P - 1) chunks of S / P"),
              Mistake("one phase", 75.0, "75 MB is one phase (reduce-scatter OR all-gather): the all-reduce does both, "
                                         "2 (P - 1) / P x S"),
              Mistake("whole buffer", 100.0, "a worker never sends the whole buffer at once: 2 (P - 1) chunks of S / P "
                                             "each"),
              Mistake("in bytes", 150e6, "the answer is asked in MB: 150,000,000 bytes is 150 MB"),
              Mistake("one chunk", 25.0, "25 MB is one chunk, S / P: each worker sends 2 (P - 1) chunks, 2 (P - 1) / "
                                         "P x S in all"),
              Mistake("divided by P twice", 37.5, "37.5 MB is the answer divided by P once more: a chunk is S / P = "
                                                  "25 MB, and each worker sends 2 (P - 1) chunks"),
              Mistake("2 S", 200.0, "2 S is the limit for many workers: for P = 4 it is 2 (P - 1) / P x S"),
              Mistake("MiB", 150e6 / 2 ** 20, "that is the right byte count converted to MiB (2^20 bytes): the "
                                               "question's 100 MB gradient is in MB (10^6 bytes), so the answer is "
                                               "in MB too"),
              Mistake("megabits", 1200.0, "1,200 is megabits (x 8): the question asks for megaBYTES")])

check.question(
    "q_bf16_scaling", answer="b", choices=("a", "b", "c"),
    explanation="bfloat16 keeps float32's 8 exponent bits (and only 7 mantissa bits), so it covers the same range, "
                "about 1e-38 to 3e38: small gradients do not underflow to 0. float16 has 5 exponent bits (range "
                "about 6e-8 to 65504), so its small gradients vanish unless the loss is scaled up first",
    mistakes=[Mistake("more mantissa", "a", "bfloat16 has FEWER mantissa bits than float16 (7 against 10): it is "
                                            "less precise; what it keeps is float32's exponent, hence its range"),
              Mistake("float32 inside", "c", "autocast does run some operations (reductions, softmax) in float32, "
                                             "but the gradients themselves are bfloat16: what saves them is the "
                                             "8-bit exponent, float32's range")])

check.question(
    "q_t_squared", answer=4.0, rtol=1e-3,
    explanation="the soft term's gradient is (p - q) / T, and for large T, p - q itself is about 1 / T times the "
                "logit differences: the gradient shrinks like 1 / T^2, so from T = 2 to T = 4 it becomes 4 times "
                "smaller; the T^2 factor undoes exactly that",
    mistakes=[Mistake("1/T only", 2.0, "the chain rule's 1/T is only half of it: p - q also shrinks like 1 / T "
                                       "(the softened distributions both approach uniform), 1 / T^2 in all"),
              Mistake("T^2 itself", 16.0, "16 = 4^2 is T^2 at T = 4: the question asks for the ratio between T = 2 "
                                          "and T = 4, (4 / 2)^2"),
              Mistake("inverted", 0.25, "0.25 is the gradient at T = 4 relative to T = 2: the question asks by "
                                        "what FACTOR it shrinks, how many times smaller it gets"),
              Mistake("unchanged", 1.0, "without the T^2 factor the gradient does change with T: it shrinks like "
                                        "1 / T^2"),
              Mistake("1/T only, inverted", 0.5, "0.5 is 1/T's ratio, and inverted: the gradient shrinks like 1 / T^2 "
                                                 "(the chain rule's 1/T and p - q's own 1/T), and the question asks "
                                                 "how many times smaller it gets"),
              Mistake("T^2 inverted", 0.0625, "1/16 is 1 / T^2 at T = 4 alone: the question asks for the ratio between "
                                              "T = 2 and T = 4, how many times smaller, (4 / 2)^2")])


# =========================================================================== exercise forms (the graded answers)
# The answers in the form each exercise asks for, where it differs from the package's functions
# (numpy_impl.conv2d_cost returns a Cost with MACs and the channels; magnitude_masks takes a scope;
# qparams / quantize / dequantize take an axis; the distillation loss comes as a forward and a
# backward with a cache; the package's ring_allreduce moves data by indexing, not through send();
# data_parallel_sgd runs whole trainings).  They are registered below as references of their
# exercises (with the package's own functions registered above), so handing one in, or calling one,
# earns no points; tests/test_efficiency_checks.py proves them equal to the package.

def conv2d_cost_triple(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
    """(params, FLOPs = 2 * MACs, (H_out, W_out)) of Conv2d(c_in, c_out, (kh, kw), stride, pad) on one image."""
    cost = en.conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride, pad)
    return cost.params, cost.flops, tuple(cost.out_shape[1:])


def global_magnitude_prune_masks(weights, sparsity):
    """{0, 1} masks (float, the weights' shapes) for the keys ending in 'weight': one magnitude threshold for all."""
    return en.magnitude_masks(weights, sparsity, scope="global")


def quantize_per_channel_affine(w, bits=8):
    """Unsigned affine quantization per output channel (axis 0): (q uint8 / int64, scale (C,), zero_point (C,))."""
    scale, zero_point = en.qparams(w, bits=bits, axis=0)
    return en.quantize(w, scale, zero_point, bits=bits, axis=0), scale, zero_point


def dequantize_per_channel(q, scale, zero_point):
    """(q - zero_point) * scale along axis 0, float64 of q's shape."""
    return en.dequantize(q, scale, zero_point, axis=0)


def distill_loss_and_grad(s, t, y, T, alpha):
    """(loss, d loss / d s) of alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, y), batch mean."""
    loss, cache = en.distill_loss_forward(s, t, y, T=T, alpha=alpha)
    return loss, en.distill_loss_backward(cache)


def ring_allreduce_send(buffers, send):
    """Ring all-reduce through ``send(src, dst, data)``: reduce-scatter then all-gather; every worker gets the mean."""
    P = len(buffers)
    shape = np.shape(buffers[0])
    mem = [[c.copy() for c in np.array_split(np.asarray(b, dtype=np.float64).ravel(), P)] for b in buffers]
    for k in range(P - 1):                                   # reduce-scatter: running sums move right
        for i in range(P):
            c, dst = (i - k) % P, (i + 1) % P
            mem[dst][c] = mem[dst][c] + send(i, dst, mem[i][c])
    for k in range(P - 1):                                   # all-gather: finished chunks move right
        for i in range(P):
            c, dst = (i + 1 - k) % P, (i + 1) % P
            mem[dst][c] = send(i, dst, mem[i][c])
    return [np.concatenate(m).reshape(shape) / P for m in mem]


def data_parallel_step_ref(params, x, y, workers, lr, grad_fn):
    """One synchronous data-parallel SGD step: shard means weighted by shard size, averaged, one shared update."""
    n = len(x)
    avg = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    for idx in np.array_split(np.arange(n), workers):
        if len(idx) == 0:
            continue
        _, grads = grad_fn(params, x[idx], y[idx])
        for k in avg:
            avg[k] = avg[k] + (len(idx) / n) * grads[k]
    return {k: params[k] - lr * avg[k] for k in params}


def _also_references(name: str, *forms) -> None:
    """Register the exercise forms as references of exercise ``name`` too (after the package's own)."""
    exercise = check._exercises[name]
    exercise.references = tuple(exercise.references) + forms


_also_references("conv2d_cost", conv2d_cost_triple)
_also_references("global_magnitude_prune", global_magnitude_prune_masks)
_also_references("quantize_per_channel", quantize_per_channel_affine)
_also_references("dequantize", dequantize_per_channel)
_also_references("distill_loss", distill_loss_and_grad)
_also_references("ring_allreduce", ring_allreduce_send)
_also_references("data_parallel_step", data_parallel_step_ref)
