"""Graded checks for the exercises of chapter 05 (``solutions/05_cnn.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the
classic wrong answers, each a plain wrong implementation with the exercise's own
signature.  A check runs the learner's code on cases from small to large against the
exercise forms at the bottom of :mod:`dlcourse.cnn.numpy_impl` (which equal PyTorch:
``tests/test_cnn_checks.py``) and, when an answer is wrong, recomputes the table's rows
on the same inputs to name the mistake.  What recomputation cannot see (an error
raised inside the learner's code, a Python loop that is too slow, what a training loop
did to its optimizer) the check recognises itself and reports with its row's message.
A failure shows the smallest failing case and a call that reproduces it.
``tests/test_course.py`` hands every row to its check and proves that exactly its
message comes back.

Dimension letters: N batch, C_in / C_out channels, H_img / W_img image height and width,
H_out / W_out output height and width, kH / kW kernel height and width.
"""
from __future__ import annotations

import math
import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dlcourse.cnn import model_np, torch_impl
from dlcourse.cnn import numpy_impl as ref
from dlcourse.grading import (CheckFailed, Checker, CheckTimeout, Mistake, call, diagnose, expect,
                              expect_close, expect_defaults, expect_tuple, fail_with, time_limit, trying)
from dlcourse.grading import _is_learner_file
from dlcourse.grading import matches as _close
from dlcourse.grading import raises_like, same_items

check = Checker("05_cnn")

__all__ = ["check", "conv2d_case", "digits_data"]


# --------------------------------------------------------------------------- helpers

def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pad_hw(x: np.ndarray, padding: int) -> np.ndarray:
    """Zeros around the two spatial axes of (N, C, H_img, W_img), on both sides."""
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def _windows(x_pad: np.ndarray, kH: int, kW: int, stride: int) -> np.ndarray:
    """Every receptive field, as a view: (N, C_in, H_out, W_out, kH, kW)."""
    return sliding_window_view(x_pad, (kH, kW), axis=(2, 3))[:, :, ::stride, ::stride]


def _correlate(x_pad: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Cross-correlation of an already padded input: (N, C_out, H_out, W_out), no bias."""
    return np.einsum("nchwij,ocij->nohw", _windows(x_pad, *w.shape[2:], stride), w, optimize=True)


def _scalar_vector_check(fn, name: str, cases, reference, table, call_case, describe) -> list:
    """Run a function that returns one number on every case; diagnose the whole vector of answers.

    A number says little on its own (two mistakes can give the same wrong number on one
    case), so the rows are compared with the learner on ALL cases at once; the failure
    shows the smallest case that differs.
    """
    got = []
    for case in cases:
        with trying(name, *case[0], label=describe(case), **case[1]) as tried:
            value = call_case(fn, case)
            tried.got = value
            if value is None:
                raise CheckFailed(f"{name} returned None: did you forget a `return`?")
            if isinstance(value, (np.ndarray, list, tuple)):
                raise CheckFailed(f"{name} returned a {type(value).__name__}; return one number (an int)")
            got.append(value)
    expected = [reference(case) for case in cases]
    wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if not _close(g, e, rtol=0, atol=1e-9)]
    floats = [g for g in got if not _is_count(g)]
    if floats and not wrong:
        fail_with(table, "float instead of int", f"(it returned {floats[0]!r})")
    wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if not _close(g, e, rtol=0, atol=1e-9)]
    if wrong:
        first = cases[wrong[0]]
        with trying(name, *first[0], label=describe(first), **first[1]) as tried:
            tried.got, tried.expected = got[wrong[0]], expected[wrong[0]]
            more = f" (and {len(wrong) - 1} more of the {len(cases)} cases)" if len(wrong) > 1 else ""
            diagnose(got, expected, table, rtol=0, atol=1e-9,
                     apply=lambda row: [call_case(row, case) for case in cases])
            raise CheckFailed(f"{name} returned {got[wrong[0]]!r}, expected {expected[wrong[0]]}{more}")
    return got


# --------------------------------------------------------------------------- 1. the output size

def size_dilation_ignored(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - (kernel - 1) - 1) // stride + 1


def size_plus_one_forgotten(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride


def size_ceil(size, kernel, stride=1, padding=0, dilation=1):
    return math.ceil((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def size_padding_once(size, kernel, stride=1, padding=0, dilation=1):
    return (size + padding - dilation * (kernel - 1) - 1) // stride + 1


def size_minus_one_forgotten(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1)) // stride + 1


def size_dilation_times_kernel(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * kernel) // stride + 1


def size_true_division(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1


# The same words for every exercise that returns a count (conv_output_size, receptive_field).
INT_MESSAGE = ("the values are right but they are floats: a size is a count (it becomes an array shape or a "
               "range()); return an int (e.g. int(...) or //)")


def size_float(size, kernel, stride=1, padding=0, dilation=1):
    return np.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1   # np.float64


def size_stride_ignored(size, kernel, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) + 1      # the stride-1 size


OUTPUT_SIZE_MISTAKES = (
    Mistake("float instead of int", size_float, INT_MESSAGE),
    Mistake("stride ignored", size_stride_ignored,
            "the stride is ignored: that is the stride-1 size; the kernel moves s pixels at a time, so "
            "floor-divide the room it has to move by s before counting its first position"),
    Mistake("dilation ignored", size_dilation_ignored,
            "the dilation is ignored: a kernel of k taps with dilation d spans d·(k - 1) + 1 pixels, so "
            "subtract d·(k - 1) + 1, not k"),
    Mistake("+1 forgotten", size_plus_one_forgotten,
            "one position short: floor(...) counts the steps the kernel can take after its first position; "
            "add 1 for that first position"),
    Mistake("ceil instead of floor", size_ceil,
            "rounded up: a last step that does not fit whole is dropped, so round down (floor division //), "
            "as PyTorch does without ceil_mode"),
    Mistake("padding counted once", size_padding_once,
            "the padding is counted once: it adds p zeros on BOTH sides, 2·p in all"),
    Mistake("-1 of the span forgotten", size_minus_one_forgotten,
            "one position too many where the stride divides evenly: the kernel spans d·(k - 1) + 1 pixels; "
            "you subtracted d·(k - 1) without the + 1"),
    Mistake("dilation times kernel", size_dilation_times_kernel,
            "a dilated kernel spans d·(k - 1) + 1 pixels, not d·k: the gaps are only BETWEEN the k taps"),
    Mistake("true division", size_true_division,
            "returns a float such as 3.5: use floor division // so the size is a whole number of positions"),
)

OUTPUT_SIZE_CASES = [  # (size, kernel, stride, padding, dilation), small to large
    (5, 3, 1, 0, 1), (7, 3, 2, 0, 1), (8, 3, 2, 1, 1), (10, 3, 1, 0, 2), (9, 3, 2, 1, 2), (12, 3, 3, 0, 1),
    (28, 5, 3, 1, 1), (32, 5, 2, 2, 1), (31, 4, 3, 2, 3), (224, 7, 2, 3, 1), (100, 3, 4, 0, 5),
]


def _size_call(fn, case):
    size, kernel, stride, padding, dilation = case
    return call(fn, size, kernel, stride=stride, padding=padding, dilation=dilation)


@check.exercise(points=2, mistakes=OUTPUT_SIZE_MISTAKES, reference=ref.conv_output_size, hints=[
    "Count the positions the kernel can take along one axis: the padded input is n + 2p pixels long, "
    "the kernel covers some of them, and it moves s pixels at a time; a last step that does not fit "
    "whole is dropped.",
    "A dilated kernel with k taps spans d·(k - 1) + 1 pixels. It fits (n + 2p - span) / s whole steps "
    "after its first position: round down, then count the first position too.",
    "span = dilation * (kernel - 1) + 1; the answer is the floor division of (size + 2 * padding - span) "
    "by stride, plus one.",
])
def conv_output_size(fn):
    """Output length of a convolution along one axis: an int."""
    expect_defaults(fn, "conv_output_size", stride=1, padding=0, dilation=1)
    cases = [(c[:2], dict(zip(("stride", "padding", "dilation"), c[2:]))) for c in OUTPUT_SIZE_CASES]
    _scalar_vector_check(
        fn, "conv_output_size", cases, lambda case: ref.conv_output_size(*case[0], **case[1]),
        OUTPUT_SIZE_MISTAKES, lambda f, case: _size_call(f, case[0] + tuple(case[1].values())),
        lambda case: "")
    return f"equals F.conv2d's output size on {len(cases)} cases (padding, stride and dilation included)"


# --------------------------------------------------------------------------- 2. conv2d, vectorised

def conv2d_flipped_kernel(x, w, b, stride=1, padding=0):
    return _correlate(_pad_hw(x, padding), w[:, :, ::-1, ::-1], stride) + b[:, None, None]


def conv2d_all_axes_padded(x, w, b, stride=1, padding=0):
    x_pad = np.pad(x, padding)                      # pads N and C_in too
    return _correlate(x_pad, w, stride) + b[:, None, None]


def conv2d_one_side_padded(x, w, b, stride=1, padding=0):
    x_pad = np.pad(x, ((0, 0), (0, 0), (0, padding), (0, padding)))  # bottom and right only
    return _correlate(x_pad, w, stride) + b[:, None, None]


def conv2d_windows_offset_by_stride(x, w, b, stride=1, padding=0):
    windows = _windows(_pad_hw(x, padding), *w.shape[2:], 1)[:, :, stride - 1::stride, stride - 1::stride]
    return np.einsum("nchwij,ocij->nohw", windows, w) + b[:, None, None]


def conv2d_stride_ignored(x, w, b, stride=1, padding=0):
    return _correlate(_pad_hw(x, padding), w, 1) + b[:, None, None]


def conv2d_input_subsampled(x, w, b, stride=1, padding=0):
    x_pad = _pad_hw(x, padding)[:, :, ::stride, ::stride]   # every stride-th pixel, then a stride-1 conv
    return _correlate(x_pad, w, 1) + b[:, None, None]


def conv2d_one_short(x, w, b, stride=1, padding=0):
    out = _correlate(_pad_hw(x, padding), w, stride)
    return out[:, :, :-1, :-1] + b[:, None, None]   # H_out = (H_img + 2p - kH) // s, without the + 1


def conv2d_channels_last_output(x, w, b, stride=1, padding=0):
    windows = _windows(_pad_hw(x, padding), *w.shape[2:], stride)
    return np.einsum("nchwij,ocij->nhwo", windows, w) + b   # (N, H_out, W_out, C_out)


def conv2d_x_read_as_nhwc(x, w, b, stride=1, padding=0):
    N, H_img, W_img, C_in = x.shape                 # the layout of TensorFlow, not PyTorch's
    x_nchw = x.transpose(0, 3, 1, 2)
    return _correlate(_pad_hw(x_nchw, padding), w, stride) + b[:, None, None]


def conv2d_bias_last_axis(x, w, b, stride=1, padding=0):
    return _correlate(_pad_hw(x, padding), w, stride) + b   # broadcasts along W_out


def conv2d_bias_forgotten(x, w, b, stride=1, padding=0):
    return _correlate(_pad_hw(x, padding), w, stride)


def conv2d_python_loops(x, w, b, stride=1, padding=0):
    x_pad = _pad_hw(x, padding)
    N, C_out, (kH, kW) = x.shape[0], w.shape[0], w.shape[2:]
    H_out = (x_pad.shape[2] - kH) // stride + 1
    W_out = (x_pad.shape[3] - kW) // stride + 1
    out = np.zeros((N, C_out, H_out, W_out))
    for n in range(N):
        for co in range(C_out):
            for p in range(H_out):
                for q in range(W_out):
                    window = x_pad[n, :, p * stride:p * stride + kH, q * stride:q * stride + kW]
                    out[n, co, p, q] = np.sum(window * w[co]) + b[co]
    return out


_VECTORISE = ("vectorise it with sliding_window_view/einsum (every window at once as a view, then one einsum or "
              "tensordot over C_in, kH and kW)")
# what the clock (not the line count) caught: no loop over pixels was seen, but the whole call is slow
CONV_SLOW_MESSAGE = "conv2d is too slow: " + _VECTORISE

CONV_MISTAKES = (
    Mistake("flipped kernel", conv2d_flipped_kernel,
            "the kernel is flipped (w[:, :, ::-1, ::-1]): that is the convolution of a maths textbook, but "
            "F.conv2d and nn.Conv2d compute cross-correlation, the kernel as it is, so that weights copy "
            "between them unchanged"),
    Mistake("every axis padded", conv2d_all_axes_padded,
            "your conv2d fails only when padding > 0: np.pad(x, p) pads EVERY axis, the batch N and the "
            "channels C_in too; pad only the two image axes: np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))"),
    Mistake("padded on one side", conv2d_one_side_padded,
            "the padding is added on one side only (bottom and right): padding p adds p zeros on BOTH sides "
            "of each image axis, ((p, p), (p, p)) in np.pad"),
    Mistake("windows offset by the stride", conv2d_windows_offset_by_stride,
            "the window positions start at s - 1 instead of 0 (a [s - 1::s] slice): the first window sits at "
            "the top-left corner of the padded input; step the positions with [::s], starting at 0"),
    Mistake("stride ignored", conv2d_stride_ignored,
            "the stride is ignored: the output is the stride-1 map; keep only every stride-th window "
            "position, in both image axes"),
    Mistake("input subsampled by the stride", conv2d_input_subsampled,
            "the INPUT is subsampled by the stride (x[:, :, ::s, ::s]) before a stride-1 convolution: the "
            "kernel must still see neighbouring pixels; it is the window POSITIONS that step by s"),
    Mistake("output one short", conv2d_one_short,
            "the output is one row and one column short: H_out = (H_img + 2p - kH) // s + 1; the + 1 "
            "counts the kernel's first position"),
    Mistake("output channels-last", conv2d_channels_last_output,
            "the output is channels-last, (N, H_out, W_out, C_out): PyTorch's layout is NCHW, "
            "(N, C_out, H_out, W_out); put the output channel axis second"),
    Mistake("x read as NHWC", conv2d_x_read_as_nhwc,
            "x is read as channels-last (N, H_img, W_img, C_in), TensorFlow's layout: in PyTorch's NCHW the "
            "channels are axis 1, x.shape = (N, C_in, H_img, W_img)"),
    Mistake("bias on the last axis", conv2d_bias_last_axis,
            "the bias is broadcast along the last axis (W_out): out + b adds b[q] to column q; add one bias "
            "per output channel, b[:, None, None] (shape (C_out, 1, 1))"),
    Mistake("bias forgotten", conv2d_bias_forgotten,
            "the bias is not added: every output channel co gets + b[co] at every position"),
    Mistake("Python loops", conv2d_python_loops,
            "conv2d loops over the output pixels in Python: " + _VECTORISE),
)
_CONV_RECOMPUTED = tuple(row for row in CONV_MISTAKES if row.name != "Python loops")  # the loops would take ages

# The large, timed case: loops over N * C_out * H_out * W_out = 2 million outputs take about 10 s;
# a vectorised conv2d (even np.einsum without optimize=True) well under 1 s.
CONV_LARGE = dict(N=64, C_in=4, C_out=32, size=32, kernel=3, stride=1, padding=1)
CONV_SECONDS = 4.0


# The counted case: how many lines of the learner's own Python run for 32 x 32 = 1,024 output positions.
# A loop over output pixels runs at least one line per position; a loop over the 3 x 3 kernel taps,
# over a few rows, or none at all, a few dozen lines.
CONV_COUNTED = dict(N=1, C_in=2, C_out=2, size=34, kernel=3)


class _LineCounter:
    """Counts the lines of the learner's own code that run (a sys.settrace chained to the one set)."""

    def __init__(self):
        self.lines = 0

    def __enter__(self):
        self.previous = sys.gettrace()
        sys.settrace(self._on_call)
        return self

    def __exit__(self, *exc):
        sys.settrace(self.previous)
        return False

    def _on_call(self, frame, event, arg):
        local = self.previous(frame, event, arg) if self.previous is not None else None
        # the "Python loops" row stands for a learner's own loop: its lines count as theirs
        if event == "call" and (_is_learner_file(frame.f_code.co_filename)
                                or frame.f_code is conv2d_python_loops.__code__):
            return self._on_line
        return local

    def _on_line(self, frame, event, arg):
        if event == "line":
            self.lines += 1
        return self._on_line


def conv2d_case(case: int):
    """The inputs of case ``case`` (1 to 5, small to large; 6 the timed one; 7 the counted one) of the conv2d check:
    ``x, w, b, stride, padding`` (import it to reproduce a failing case)."""
    rng = np.random.default_rng(500 + case)
    if case == 7:
        c = CONV_COUNTED
        x = rng.standard_normal((c["N"], c["C_in"], c["size"], c["size"]))
        w = rng.standard_normal((c["C_out"], c["C_in"], c["kernel"], c["kernel"]))
        return x, w, rng.standard_normal(c["C_out"]), 1, 0
    if case == 6:
        c = CONV_LARGE
        x = rng.standard_normal((c["N"], c["C_in"], c["size"], c["size"]))
        w = rng.standard_normal((c["C_out"], c["C_in"], c["kernel"], c["kernel"]))
        return x, w, rng.standard_normal(c["C_out"]), c["stride"], c["padding"]
    x_shape, w_shape, stride, padding = {
        1: ((1, 3, 4, 3), (2, 3, 2, 2), 1, 0),
        2: ((2, 3, 5, 7), (5, 3, 3, 3), 1, 1),       # W_out 7 > H_out 5
        3: ((2, 2, 7, 6), (3, 2, 3, 2), 2, 2),       # padding != stride - 1: offset windows != one-sided pad
        4: ((2, 4, 6, 4), (3, 4, 3, 3), 1, 0),
        5: ((3, 3, 9, 8), (4, 3, 3, 3), 3, 2),
    }[case]
    return (rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0]),
            stride, padding)


def _conv_label(x, w, stride, padding) -> str:
    return (f"x {x.shape}, w {w.shape}, stride {stride}, padding {padding}")


def _translate_conv_error(fn, fail: CheckFailed, x, w, b, stride, padding, suffix: str) -> None:
    """Name the mistake behind an error raised inside the learner's conv2d."""
    err = getattr(fail, "error", None)
    if err is None:
        return
    raises_like(_CONV_RECOMPUTED, getattr(fail, "error", None),
                lambda row: row(x, w, b, stride=stride, padding=padding), suffix)
    if padding > 0:
        try:  # does the same call work without padding? Then the padding is what breaks it
            call(fn, x, w, b, stride=stride, padding=0)
        except CheckFailed:
            return
        fail_with(CONV_MISTAKES, "every axis padded", suffix)


@check.exercise(points=3, mistakes=CONV_MISTAKES, reference=ref.conv2d, seconds=40,
                forbid=(ref.conv2d_forward, ref._im2col), hints=[
    "Every output value is a dot product between the kernel of one output channel and one window of the "
    "padded input, across all input channels. Build every window at once, as a view, then do all the dot "
    "products in one NumPy call; no Python loop over pixels or channels.",
    "Pad only the image axes, np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))). "
    "np.lib.stride_tricks.sliding_window_view(x_pad, (kH, kW), axis=(2, 3)) has shape "
    "(N, C_in, H_pad - kH + 1, W_pad - kW + 1, kH, kW); step its two position axes by the stride. Do not "
    "flip the kernel (PyTorch's conv is cross-correlation).",
    "With windows of shape (N, C_in, H_out, W_out, kH, kW), "
    "np.einsum('nchwij,ocij->nohw', windows, w, optimize=True) sums over c, i and j; then add b[:, None, None].",
])
def conv2d(fn):
    """2-D convolution (cross-correlation) with stride and padding: (N, C_out, H_out, W_out)."""
    expect_defaults(fn, "conv2d", stride=1, padding=0)
    for case in range(1, 6):
        x, w, b, stride, padding = conv2d_case(case)
        what = _conv_label(x, w, stride, padding)
        line = (f"from dlcourse.cnn.checks import conv2d_case; x, w, b, stride, padding = conv2d_case({case}); "
                "conv2d(x, w, b, stride=stride, padding=padding)")
        with trying("conv2d", label=what, call_text=line) as tried:
            expected = ref.conv2d(x, w, b, stride, padding)
            try:
                got = call(fn, x, w, b, stride=stride, padding=padding)
            except CheckFailed as fail:
                _translate_conv_error(fn, fail, x, w, b, stride, padding, f"({what})")
                raise
            tried.got, tried.expected = got, expected
            diagnose(got, expected, _CONV_RECOMPUTED, suffix=f"({what})",
                     apply=lambda row: row(x, w, b, stride=stride, padding=padding))
            expect_close(got, expected, f"conv2d's output ({what})")
    x, w, b, stride, padding = conv2d_case(7)
    what = _conv_label(x, w, stride, padding)
    positions = (x.shape[2] - w.shape[2] + 1) * (x.shape[3] - w.shape[3] + 1)
    line = ("from dlcourse.cnn.checks import conv2d_case; x, w, b, stride, padding = conv2d_case(7); "
            "conv2d(x, w, b, stride=stride, padding=padding)")
    with trying("conv2d", label=what, call_text=line) as tried:
        with _LineCounter() as counter:
            got = call(fn, x, w, b, stride=stride, padding=padding)
        tried.got, tried.expected = got, ref.conv2d(x, w, b, stride, padding)
        expect_close(got, tried.expected, f"conv2d's output ({what})")
        if counter.lines > positions // 2:
            fail_with(CONV_MISTAKES, "Python loops",
                      f"({counter.lines:,} lines of your Python ran for the {positions:,} output positions of "
                      f"{what}: a loop over output pixels, found by counting, not timing; a loop over the "
                      "kH x kW kernel taps is fine)")
    x, w, b, stride, padding = conv2d_case(6)
    c = CONV_LARGE
    what = (f"N = {c['N']} images of {c['C_in']} x {c['size']} x {c['size']}, {c['C_out']} filters of "
            f"{c['kernel']} x {c['kernel']}")
    line = ("from dlcourse.cnn.checks import conv2d_case; x, w, b, stride, padding = conv2d_case(6); "
            "conv2d(x, w, b, stride=stride, padding=padding)")
    with trying("conv2d", label=what, call_text=line) as tried:
        try:
            with time_limit(CONV_SECONDS):
                got = call(fn, x, w, b, stride=stride, padding=padding)
        except CheckTimeout:
            raise CheckFailed(f"{CONV_SLOW_MESSAGE} (stopped after {CONV_SECONDS:g} s on {what}; the course's "
                              "version takes a fraction of a second)", mistake="Python loops") from None
        expected = ref.conv2d(x, w, b, stride, padding)
        diagnose(got, expected, _CONV_RECOMPUTED, suffix=f"({what})",
                 apply=lambda row: row(x, w, b, stride=stride, padding=padding))
        expect_close(got, expected, f"conv2d's output ({what})")
    return ("equals F.conv2d on 5 cases (padding, stride, non-square kernels), has no Python loop over output "
            f"pixels ({counter.lines} lines of your Python for {positions:,} outputs), and does "
            f"{c['N']} images of {c['size']} x {c['size']} in under {CONV_SECONDS:g} s")


# --------------------------------------------------------------------------- 3. conv2d backward

def _conv_grads_at(dout, x_pad, w, stride):
    """dx_pad and dw of a cross-correlation with stride ``stride`` (the same slices as the forward pass)."""
    C_out, C_in, kH, kW = w.shape
    H_out, W_out = dout.shape[2:]
    dx_pad, dw = np.zeros_like(x_pad), np.zeros_like(w)
    for i in range(kH):
        rows = slice(i, i + stride * (H_out - 1) + 1, stride)
        for j in range(kW):
            cols = slice(j, j + stride * (W_out - 1) + 1, stride)
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dout, x_pad[:, :, rows, cols])
            dx_pad[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dout, w[:, :, i, j])
    return dx_pad, dw


def _crop(dx_pad, padding):
    H_pad, W_pad = dx_pad.shape[2:]
    return dx_pad[:, :, padding:H_pad - padding, padding:W_pad - padding]


def _right_grads(dout, x, w, stride, padding):
    dx_pad, dw = _conv_grads_at(dout, _pad_hw(x, padding), w, stride)
    return _crop(dx_pad, padding), dw, dout.sum(axis=(0, 2, 3))


def convb_db_space_only(dout, x, w, stride=1, padding=0):
    dx, dw, _ = _right_grads(dout, x, w, stride, padding)
    return dx, dw, dout.sum(axis=(2, 3))          # (N, C_out): one bias gradient per example


def convb_db_batch_only(dout, x, w, stride=1, padding=0):
    dx, dw, _ = _right_grads(dout, x, w, stride, padding)
    return dx, dw, dout.sum(axis=0)               # (C_out, H_out, W_out)


def convb_db_mean(dout, x, w, stride=1, padding=0):
    dx, dw, _ = _right_grads(dout, x, w, stride, padding)
    return dx, dw, dout.mean(axis=(0, 2, 3))


def convb_dw_mean_over_batch(dout, x, w, stride=1, padding=0):
    dx, dw, db = _right_grads(dout, x, w, stride, padding)
    return dx, dw / len(x), db


def convb_dw_transposed(dout, x, w, stride=1, padding=0):
    dx, dw, db = _right_grads(dout, x, w, stride, padding)
    return dx, dw.transpose(1, 0, 2, 3), db       # (C_in, C_out, kH, kW)


def convb_padding_not_cropped(dout, x, w, stride=1, padding=0):
    dx_pad, dw = _conv_grads_at(dout, _pad_hw(x, padding), w, stride)
    return dx_pad, dw, dout.sum(axis=(0, 2, 3))


def convb_dx_kernel_flipped(dout, x, w, stride=1, padding=0):
    _, dw, db = _right_grads(dout, x, w, stride, padding)
    dx_pad, _ = _conv_grads_at(dout, _pad_hw(x, padding), w[:, :, ::-1, ::-1], stride)
    return _crop(dx_pad, padding), dw, db


def _stride_one_dx(dout, x, w, padding):
    """dx as if dout came from a stride-1 layer: dout spread back without the gaps of the stride."""
    C_out, C_in, kH, kW = w.shape
    H_out, W_out = dout.shape[2:]
    x_pad = _pad_hw(x, padding)
    dx_pad = np.zeros_like(x_pad)
    for i in range(kH):
        for j in range(kW):
            dx_pad[:, :, i:i + H_out, j:j + W_out] += np.einsum("nohw,oc->nchw", dout, w[:, :, i, j])
    return _crop(dx_pad, padding)


def convb_dout_not_dilated(dout, x, w, stride=1, padding=0):
    _, dw, db = _right_grads(dout, x, w, stride, padding)
    return _stride_one_dx(dout, x, w, padding), dw, db


def convb_stride_ignored(dout, x, w, stride=1, padding=0):
    H_out, W_out = dout.shape[2:]
    x_pad = _pad_hw(x, padding)
    dw = np.zeros_like(w)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dout, x_pad[:, :, i:i + H_out, j:j + W_out])
    return _stride_one_dx(dout, x, w, padding), dw, dout.sum(axis=(0, 2, 3))


def convb_dx_assigned_not_added(dout, x, w, stride=1, padding=0):
    _, dw, db = _right_grads(dout, x, w, stride, padding)
    H_out, W_out = dout.shape[2:]
    dx_pad = np.zeros_like(_pad_hw(x, padding))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            rows = slice(i, i + stride * (H_out - 1) + 1, stride)
            cols = slice(j, j + stride * (W_out - 1) + 1, stride)
            dx_pad[:, :, rows, cols] = np.einsum("nohw,oc->nchw", dout, w[:, :, i, j])   # = overwrites
    return _crop(dx_pad, padding), dw, db


CONVB_MISTAKES = (
    Mistake("dx assigned, not added", convb_dx_assigned_not_added,
            "dw and db are right; dx is wrong: `dx_pad[...] = ...` in the loop over the kernel taps overwrites "
            "what the earlier taps put on the same pixels (neighbouring windows overlap); ADD each tap's "
            "contribution with +="),
    Mistake("db summed over positions only", convb_db_space_only,
            "dx and dw are right; db is wrong: it has one row per example, (N, C_out); the bias is shared by "
            "every example AND every position, so sum dout over the batch too: axes (0, 2, 3)"),
    Mistake("db summed over the batch only", convb_db_batch_only,
            "dx and dw are right; db is wrong: it still has the image axes, (C_out, H_out, W_out); b[co] is "
            "added at every position of every example, so sum dout over axes (0, 2, 3)"),
    Mistake("db averaged", convb_db_mean,
            "dx and dw are right; db is wrong: it is the MEAN of dout; b[co] is added at every position of "
            "every example, so its gradient is the SUM, dout.sum(axis=(0, 2, 3))"),
    Mistake("dw divided by N", convb_dw_mean_over_batch,
            "dx and db are right; dw is wrong: it is divided by the batch size; the mean of the loss is "
            "already in dout, so the weights' gradient is the plain sum over the examples"),
    Mistake("dw transposed", convb_dw_transposed,
            "dx and db are right; dw is wrong: it has the layout (C_in, C_out, kH, kW); dw must have w's "
            "shape (C_out, C_in, kH, kW), so contract dout's channel axis to the FIRST axis"),
    Mistake("padding not cropped", convb_padding_not_cropped,
            "dw and db are right; dx is wrong: it still has the padding, (N, C_in, H_img + 2p, W_img + 2p); "
            "the zeros were added by the forward pass, so drop their gradient: "
            "dx_pad[:, :, p:H_pad - p, p:W_pad - p]"),
    Mistake("dx with the kernel flipped", convb_dx_kernel_flipped,
            "dw and db are right; dx is wrong: the kernel is flipped the wrong way; spreading dout[p, q] "
            "back onto the window it came from multiplies it by w[i, j] at pixel (p·s + i, q·s + j), "
            "the same tap as in the forward pass (a full convolution with the flipped kernel is the same "
            "thing; flipping it a second time is the mistake)"),
    Mistake("dx: dout not dilated by the stride", convb_dout_not_dilated,
            "dw and db are right; dx is wrong: dout was spread back as if the stride were 1; output (p, q) "
            "came from the window at (p·s, q·s), so insert s - 1 zeros between dout's values (or step the "
            "slices by s) before the full correlation"),
    Mistake("stride ignored in backward", convb_stride_ignored,
            "db is right; dx and dw are wrong: the backward pass ignores the stride; output (p, q) came "
            "from the window starting at (p·s, q·s), so both dw (x's slices) and dx (where dout goes back) "
            "must step by s"),
)


def convb_case(case: int):
    """The inputs of case ``case`` (1 to 4, small to large) of the conv2d_backward check:
    ``dout, x, w, stride, padding`` (import it to reproduce a failing case)."""
    rng = np.random.default_rng(600 + case)
    x_shape, w_shape, stride, padding = {
        1: ((1, 1, 4, 4), (1, 1, 3, 3), 1, 0),
        2: ((2, 3, 5, 7), (4, 3, 3, 2), 1, 1),       # H_out 5 != W_out 8, kH != kW: early
        3: ((2, 2, 9, 6), (3, 2, 3, 2), 2, 1),       # H_out 5 != W_out 4
        4: ((3, 4, 11, 8), (5, 4, 2, 3), 3, 2),      # H_out 5 != W_out 4, kH < kW
    }[case]
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    H_out = ref.conv_output_size(x_shape[2], w_shape[2], stride, padding)
    W_out = ref.conv_output_size(x_shape[3], w_shape[3], stride, padding)
    dout = rng.standard_normal((x_shape[0], w_shape[0], H_out, W_out))
    return dout, x, w, stride, padding


def _name_wrong_grads(got, expected, what: str) -> None:
    """'dw and db are right; dx is wrong: max error ...' for the first gradient that differs."""
    names = ("dx", "dw", "db")
    right = [n for n, g, e in zip(names, got, expected) if _close(g, e)]
    for name, g, e in zip(names, got, expected):
        if name in right:
            continue
        prefix = ""
        if right:
            prefix = f"{' and '.join(right)} {'is' if len(right) == 1 else 'are'} right; "
        try:
            expect_close(g, e, f"{name} ({what})")
        except CheckFailed as fail:
            raise CheckFailed(prefix + str(fail), mistake=fail.mistake) from None


@check.exercise(points=3, mistakes=CONVB_MISTAKES, reference=ref.conv2d_backward_from_x, seconds=30,
                forbid=(ref.conv2d_backward, ref.conv2d_forward, ref._col2im_add, ref._im2col), hints=[
    "Follow each output value back: out[n, co, p, q] = b[co] + sum over c, i, j of "
    "x_pad[n, c, p·s + i, q·s + j] · w[co, c, i, j]. So db[co] collects dout over all n, p, q; "
    "dw[co, c, i, j] collects dout times the pixel that tap (i, j) met; and that pixel of x_pad gets "
    "dout times w[co, c, i, j] back.",
    "Loop over the kH·kW kernel taps only (not over pixels): for tap (i, j) the pixels it met across all "
    "output positions are the strided slice x_pad[:, :, i : i + s·(H_out - 1) + 1 : s, j : ...], of shape "
    "(N, C_in, H_out, W_out). Compute dw[:, :, i, j] from dout and that slice, and ADD dout's contribution "
    "onto the same slice of a zero dx_pad. Crop the padding off at the end.",
    "In `for i in range(kH): for j in range(kW):` let rows = slice(i, i + s * (H_out - 1) + 1, s) (cols "
    "alike with j and W_out). dw[:, :, i, j] is one np.einsum of dout (n, o, h, w) with the slice "
    "x_pad[:, :, rows, cols] (n, c, h, w) that keeps only o and c; the same slice of dx_pad collects, with "
    "+= (an = would wipe the taps before), an einsum of dout with the tap's weights w[:, :, i, j] (o, c) "
    "that keeps n, c, h, w. db sums dout over every axis but the channels.",
])
def conv2d_backward(fn):
    """Gradients of conv2d: (dx, dw, db)."""
    expect_defaults(fn, "conv2d_backward", stride=1, padding=0)
    for case in range(1, 5):
        dout, x, w, stride, padding = convb_case(case)
        what = f"x {x.shape}, w {w.shape}, stride {stride}, padding {padding}"
        line = (f"from dlcourse.cnn.checks import convb_case; dout, x, w, stride, padding = convb_case({case}); "
                "conv2d_backward(dout, x, w, stride=stride, padding=padding)")
        with trying("conv2d_backward", label=what, call_text=line) as tried:
            expected = ref.conv2d_backward_from_x(dout, x, w, stride, padding)
            out = call(fn, dout, x, w, stride=stride, padding=padding)
            got = expect_tuple(out, 3, "(dx, dw, db)", "conv2d_backward", noun="arrays")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, CONVB_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(dout, x, w, stride=stride, padding=padding))
            _name_wrong_grads(got, expected, what)
    return "dx, dw and db equal autograd through F.conv2d on 4 cases (padding and strides 1, 2, 3)"


# --------------------------------------------------------------------------- 4. max-pool backward with ties

def _pool_windows(x, k, s):
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]   # (N, C, H_out, W_out, k, k)


def _spread(share, x_shape, k, s):
    """Add ``share`` (N, C, H_out, W_out, k, k) onto the pixels each window covers."""
    H_out, W_out = share.shape[2:4]
    dx = np.zeros(x_shape)
    for i in range(k):
        for j in range(k):
            dx[:, :, i:i + s * (H_out - 1) + 1:s, j:j + s * (W_out - 1) + 1:s] += share[..., i, j]
    return dx


def _one_hot(index, k):
    return np.eye(k * k)[index].reshape(*index.shape, k, k)


def _first_max(windows):
    flat = windows.reshape(*windows.shape[:4], -1)
    return flat.argmax(axis=-1)


def pool_every_element(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    windows = _pool_windows(x, k, s)
    return _spread(np.ones(windows.shape) * dout[..., None, None], x.shape, k, s)


def pool_all_tied_maxima(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    windows = _pool_windows(x, k, s)
    winners = windows == windows.max(axis=(4, 5), keepdims=True)
    return _spread(winners * dout[..., None, None], x.shape, k, s)


def pool_spread_evenly(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    windows = _pool_windows(x, k, s)
    return _spread(np.ones(windows.shape) * dout[..., None, None] / (k * k), x.shape, k, s)


def pool_stride_ignored(dout, x, kernel_size=2, stride=2):
    k = kernel_size
    H_out, W_out = dout.shape[2:]
    windows = _pool_windows(x, k, 1)[:, :, :H_out, :W_out]   # windows start at (p, q), not (p·s, q·s)
    return _spread(_one_hot(_first_max(windows), k) * dout[..., None, None], x.shape, k, 1)


def pool_assigned_not_added(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    winner = _first_max(_pool_windows(x, k, s))
    dx = np.zeros(x.shape)
    N, C, H_out, W_out = dout.shape
    for n in range(N):
        for c in range(C):
            for p in range(H_out):
                for q in range(W_out):
                    i, j = divmod(int(winner[n, c, p, q]), k)
                    dx[n, c, p * s + i, q * s + j] = dout[n, c, p, q]   # = overwrites an earlier window's share
    return dx


def pool_tap_slice_assigned(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    winner = _first_max(_pool_windows(x, k, s))
    N, C, H_out, W_out = dout.shape
    dx = np.zeros(x.shape)
    for i in range(k):
        for j in range(k):
            dx[:, :, i:i + s * (H_out - 1) + 1:s, j:j + s * (W_out - 1) + 1:s] = \
                np.where(winner == i * k + j, dout, 0)        # = wipes the slice for every other tap
    return dx


def pool_last_maximum(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    windows = _pool_windows(x, k, s)
    flat = windows.reshape(*windows.shape[:4], -1)
    last = k * k - 1 - flat[..., ::-1].argmax(axis=-1)
    return _spread(_one_hot(last, k) * dout[..., None, None], x.shape, k, s)


def pool_upstream_forgotten(dout, x, kernel_size=2, stride=2):
    k, s = kernel_size, stride
    return _spread(_one_hot(_first_max(_pool_windows(x, k, s)), k) * np.ones(dout.shape)[..., None, None],
                   x.shape, k, s)


POOL_MISTAKES = (
    Mistake("gradient to every element", pool_every_element,
            "every element of the window gets the window's gradient: the max only passes on the value of "
            "its winner, so only that one element gets dout; the others get 0"),
    Mistake("gradient to all tied maxima", pool_all_tied_maxima,
            "on ties, every maximum of the window gets the gradient (x == max is True for each of them): "
            "PyTorch gives it to ONE element, the first maximum in row-major order within the window "
            "(np.argmax over the flattened window picks exactly that one)"),
    Mistake("spread evenly", pool_spread_evenly,
            "the gradient is shared equally by the window (dout / (k·k)): that is average pooling's "
            "gradient; max pooling sends all of dout to the window's winner"),
    Mistake("stride ignored", pool_stride_ignored,
            "the stride is ignored: window (p, q) starts at pixel (p·s, q·s), not at (p, q)"),
    Mistake("= on the tap's slice", pool_tap_slice_assigned,
            "in the loop over the taps (i, j), `dx[:, :, rows, cols] = np.where(...)` overwrites the whole "
            "strided slice: with overlapping windows (stride < kernel_size) it wipes what the earlier taps "
            "put there, zeros included; use += so every tap only adds its share"),
    Mistake("= instead of +=", pool_assigned_not_added,
            "a pixel that wins in two overlapping windows (stride < kernel_size) keeps only the last "
            "window's gradient: `=` overwrites; use += so that it collects from every window it won"),
    Mistake("last maximum", pool_last_maximum,
            "on ties the gradient goes to the LAST maximum of the window: PyTorch picks the FIRST in "
            "row-major order, which np.argmax of the flattened window returns"),
    Mistake("upstream gradient forgotten", pool_upstream_forgotten,
            "the winner gets 1, not dout: the chain rule multiplies the local derivative 1 by the "
            "upstream gradient of its window"),
)


def pool_case(case: int):
    """The inputs of case ``case`` (1 to 5, small to large) of the maxpool2d_backward check:
    ``dout, x, kernel_size, stride``; x holds small integers, so windows have tied maxima."""
    rng = np.random.default_rng(700 + case)
    if case == 1:
        x = np.array([[[[1, 2, 0, 2], [2, 0, 2, 1], [3, 3, 1, 1], [0, 3, 1, 1]]]], dtype=np.float64)
        return np.array([[[[0.5, -1.0], [2.0, 1.5]]]]), x, 2, 2
    shape, high, kernel, stride = {2: ((2, 3, 6, 6), 3, 2, 2), 3: ((2, 2, 5, 5), 2, 3, 2),
                                   4: ((2, 2, 5, 6), 3, 2, 1), 5: ((4, 8, 16, 16), 4, 2, 2)}[case]
    x = rng.integers(0, high, shape).astype(np.float64)
    H_out = ref.conv_output_size(shape[2], kernel, stride)
    W_out = ref.conv_output_size(shape[3], kernel, stride)
    return rng.standard_normal((shape[0], shape[1], H_out, W_out)), x, kernel, stride


@check.exercise(points=2, mistakes=POOL_MISTAKES, reference=ref.maxpool2d_backward_from_x, seconds=30,
                forbid=(ref.maxpool2d_backward, ref.maxpool2d_forward), hints=[
    "The max of a window is locally just one of its elements, the winner: its derivative is 1 for the "
    "winner and 0 for the others. So each window passes its dout to ONE element; on ties PyTorch picks "
    "the first maximum in row-major order. A pixel that wins in several overlapping windows collects "
    "from each.",
    "sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s] gives every window, "
    "(N, C, H_out, W_out, k, k); reshape its last two axes into one of k·k and take argmax there (the "
    "first maximum). Then, for every tap (i, j) of the window, the windows whose winner sits at (i, j) "
    "send their dout to the strided slice dx[:, :, i : i + s·(H_out - 1) + 1 : s, j : ...].",
    "The winner of each window is an argmax over its k·k values flattened into one axis (the first "
    "maximum comes first). In a double loop over the taps, tap (i, j) is number i·k + j: the windows whose "
    "winner has that number pass their dout and the others 0 (np.where does that), onto dx's strided slice "
    "for (i, j), ADDED (+=), since overlapping windows share pixels.",
])
def maxpool2d_backward(fn):
    """Gradient of max pooling with ties: dx, one element per window gets its dout."""
    expect_defaults(fn, "maxpool2d_backward", kernel_size=2, stride=2)
    for case in range(1, 6):
        dout, x, kernel_size, stride = pool_case(case)
        what = f"x {x.shape} of small integers (tied maxima), kernel_size {kernel_size}, stride {stride}"
        line = (f"from dlcourse.cnn.checks import pool_case; dout, x, k, s = pool_case({case}); "
                "maxpool2d_backward(dout, x, kernel_size=k, stride=s)")
        with trying("maxpool2d_backward", dout, x, kernel_size=kernel_size, stride=stride, label=what,
                    call_text=line if case > 1 else None) as tried:
            expected = ref.maxpool2d_backward_from_x(dout, x, kernel_size, stride)
            got = call(fn, dout, x, kernel_size=kernel_size, stride=stride)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, POOL_MISTAKES, suffix=f"({what})",
                     apply=lambda row: row(dout, x, kernel_size=kernel_size, stride=stride))
            expect_close(got, expected, f"dx ({what})")
    return ("dx equals autograd through F.max_pool2d on 5 cases with tied maxima, overlapping windows "
            "included")


# --------------------------------------------------------------------------- 5. receptive field

def rf_strides_ignored(layers):
    size = 1
    for kernel, stride, dilation in layers:
        size += dilation * (kernel - 1)
    return size


def rf_dilation_ignored(layers):
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        size += (kernel - 1) * jump
        jump *= stride
    return size


def rf_product_of_kernels(layers):
    size = 1
    for kernel, stride, dilation in layers:
        size *= kernel
    return size


def rf_jump_first(layers):
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        jump *= stride                     # updated before it is used: this layer's own stride counts
        size += dilation * (kernel - 1) * jump
    return size


def rf_off_by_one(layers):
    size, jump = 0, 1                      # starts from 0 pixels instead of 1
    for kernel, stride, dilation in layers:
        size += dilation * (kernel - 1) * jump
        jump *= stride
    return size


def rf_kernels_summed(layers):
    return sum(kernel for kernel, stride, dilation in layers)


def rf_dilated_span_dk(layers):
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        size += (dilation * kernel - 1) * jump   # span d·k instead of d·(k - 1) + 1
        jump *= stride
    return size


def rf_float(layers):
    size, jump = 1.0, 1.0                  # floats all along
    for kernel, stride, dilation in layers:
        size += dilation * (kernel - 1) * jump
        jump *= stride
    return size


def rf_k_not_k_minus_one(layers):
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        size += dilation * kernel * jump   # k units added instead of k - 1
        jump *= stride
    return size


RF_MISTAKES = (
    Mistake("float instead of int", rf_float, INT_MESSAGE),
    Mistake("k added instead of k - 1", rf_k_not_k_minus_one,
            "each layer adds d·k·jump pixels here: a k-tap kernel reaches only k - 1 units beyond the one it is "
            "centred on, so grow the size by d·(k - 1)·jump"),
    Mistake("strides ignored", rf_strides_ignored,
            "the strides are ignored (the sizes just add up): after a stride-s layer, neighbouring units "
            "are s times further apart in the input, so every later layer's extra units count "
            "jump = product of the earlier strides pixels each"),
    Mistake("dilation ignored", rf_dilation_ignored,
            "the dilation is ignored: a kernel of k taps with dilation d spans d·(k - 1) + 1 units of its "
            "input, so it adds d·(k - 1)·jump pixels"),
    Mistake("product of kernels", rf_product_of_kernels,
            "the kernel sizes are multiplied: receptive fields grow by ADDING each layer's extra span "
            "(k - 1 units, each `jump` pixels wide), not by multiplying"),
    Mistake("jump updated before the size", rf_jump_first,
            "the jump is updated before the size: a layer's own stride only spaces out the NEXT layer's "
            "units; add this layer's span with the jump of its input, then multiply the jump by its stride"),
    Mistake("off by one", rf_off_by_one,
            "one pixel short: start from a single input pixel, size 1 (a 3 x 3 conv then sees 1 + 2 = 3)"),
    Mistake("kernels summed", rf_kernels_summed,
            "the kernel sizes are summed: two stacked 3 x 3 convolutions see 5 pixels, not 6; each layer "
            "adds k - 1 (times the jump), not k"),
    Mistake("span d·k", rf_dilated_span_dk,
            "a dilated kernel spans d·(k - 1) + 1 units, not d·k: the gaps are only between the k taps"),
)

RF_CASES = [  # small to large; (kernel, stride, dilation) per layer, first layer first
    [(3, 1, 1)],
    [(3, 1, 1), (3, 1, 1)],
    [(3, 1, 1), (2, 2, 1), (3, 1, 1), (2, 2, 1)],
    [(3, 1, 2), (3, 1, 2)],
    [(7, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 2)],
    [(5, 2, 1), (3, 1, 3), (2, 2, 1), (3, 2, 2), (3, 1, 1), (1, 1, 1)],
]


@check.exercise(points=2, mistakes=RF_MISTAKES, reference=ref.receptive_field_size, forbid=(ref.receptive_field,),
                hints=[
    "Start from one input pixel (size 1) and walk from the input to the output. Each layer's kernel spans "
    "a few units of ITS input; how many input pixels that is depends on how far apart those units are "
    "(the jump), which every stride multiplies.",
    "Keep two numbers: size (the receptive field so far) and jump (pixels between neighbouring units of "
    "the current layer, 1 at the input). A layer with kernel k and dilation d adds d·(k - 1) units, each "
    "`jump` pixels; only after that does its stride s change the jump.",
    "for kernel, stride, dilation in layers: grow size by dilation * (kernel - 1) * jump, then multiply "
    "jump by stride; return size.",
])
def receptive_field(fn):
    """The receptive field of one unit of the last layer (pixels along one axis): an int."""
    cases = [((layers,), {}) for layers in RF_CASES]
    _scalar_vector_check(fn, "receptive_field", cases, lambda case: ref.receptive_field_size(*case[0]),
                         RF_MISTAKES, lambda f, case: call(f, [tuple(layer) for layer in case[0][0]]),
                         lambda case: f"{len(case[0][0])} layers")
    return f"equals the gradient-measured receptive field on {len(cases)} stacks (strides and dilations)"


# --------------------------------------------------------------------------- 6. the larger task: a CNN in PyTorch

TRAIN_SECONDS = 60.0       # the learner's training, on the CPU
TARGET_ACCURACY = 0.97
DIGITS_SEED = 0
_digits_cache: dict = {}


def digits_data():
    """``load_digits(0)``, as the train_digits_cnn check uses it (cached: sklearn is slow to import)."""
    if DIGITS_SEED not in _digits_cache:
        from dlcourse.data import load_digits
        _digits_cache[DIGITS_SEED] = load_digits(DIGITS_SEED)
    return _digits_cache[DIGITS_SEED]


def _digits_net():
    import torch.nn as nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 16, 4, 4)
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 2, 2)
                         nn.Flatten(), nn.Linear(32 * 2 * 2, 10))                       # (N, 10)


def _fit(model, x, y, optimizer, epochs: int, seed: int, batch_size: int = 32):
    """A right training loop (the rows differ in what they hand it)."""
    import torch
    import torch.nn.functional as F
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def cnn_not_reshaped(x_train, y_train, x_val, y_val, seed):
    import torch
    torch.manual_seed(seed)
    model = _digits_net()
    x = torch.as_tensor(x_train)                              # (N, 64): never reshaped to (N, 1, 8, 8)
    return _fit(model, x, torch.as_tensor(y_train), torch.optim.Adam(model.parameters(), lr=3e-3), 10, seed)


def cnn_labels_float(x_train, y_train, x_val, y_val, seed):
    import torch
    torch.manual_seed(seed)
    model = _digits_net()
    x = torch.as_tensor(x_train).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(y_train, dtype=torch.float32)         # labels as floats
    return _fit(model, x, y, torch.optim.Adam(model.parameters(), lr=3e-3), 10, seed)


def cnn_never_trained(x_train, y_train, x_val, y_val, seed):
    import torch
    torch.manual_seed(seed)
    model = _digits_net()
    torch.optim.Adam(model.parameters(), lr=3e-3)             # an optimizer, but no loop that uses it
    return model.eval()


def cnn_zero_grad_forgotten(x_train, y_train, x_val, y_val, seed):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    model = _digits_net()
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=generator).split(32):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()                                   # adds to .grad: without zero_grad it piles up
            optimizer.step()
    return model.eval()


def cnn_softmax_before_loss(x_train, y_train, x_val, y_val, seed):
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    model = nn.Sequential(_digits_net(), nn.Softmax(dim=1))   # probabilities into F.cross_entropy
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    return _fit(model, x, y, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), 4, seed)


def cnn_softmax_in_training_loop(x_train, y_train, x_val, y_val, seed):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    model = _digits_net()                                     # returns logits, as asked
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=generator).split(32):
            loss = F.cross_entropy(torch.softmax(model(x[idx]), dim=1), y[idx])   # probabilities into the loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def cnn_mse_on_one_hot(x_train, y_train, x_val, y_val, seed):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    model = _digits_net()
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=generator).split(32):
            loss = F.mse_loss(model(x[idx]), F.one_hot(y[idx], 10).float())   # squared error on one-hot rows
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def cnn_validation_only(x_train, y_train, x_val, y_val, seed):
    import torch
    torch.manual_seed(seed)
    model = _digits_net()
    x, y = torch.as_tensor(x_val).reshape(-1, 1, 8, 8), torch.as_tensor(y_val)   # the 270 validation images
    return _fit(model, x, y, torch.optim.Adam(model.parameters(), lr=3e-3), 10, seed)


def cnn_no_convolution(x_train, y_train, x_val, y_val, seed):
    import torch
    import torch.nn as nn
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))   # an MLP, no conv
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    return _fit(model, x, y, torch.optim.Adam(model.parameters(), lr=3e-3), 3, seed)


def cnn_step_before_backward(x_train, y_train, x_val, y_val, seed):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    model = _digits_net()
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for idx in torch.randperm(len(x)).split(32):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.step()                                      # .grad is None here: the step does nothing
        loss.backward()
    return model.eval()


def cnn_images_transposed(x_train, y_train, x_val, y_val, seed):
    import torch
    torch.manual_seed(seed)
    model = _digits_net()
    x = torch.as_tensor(x_train).reshape(-1, 8, 8, 1).permute(0, 3, 2, 1)   # (N, 1, 8, 8), but transposed
    return _fit(model, x, torch.as_tensor(y_train), torch.optim.Adam(model.parameters(), lr=3e-3), 10, seed)


def cnn_learning_rate_too_large(x_train, y_train, x_val, y_val, seed):
    import torch
    torch.manual_seed(seed)
    model = _digits_net()
    x, y = torch.as_tensor(x_train).reshape(-1, 1, 8, 8), torch.as_tensor(y_train)
    return _fit(model, x, y, torch.optim.SGD(model.parameters(), lr=10.0, momentum=0.9), 2, seed)


MSE_MESSAGE = ("the loss is a squared error (F.mse_loss / nn.MSELoss) against one-hot labels: for classes the "
               "loss is cross-entropy on the logits, F.cross_entropy(logits, y) with the int64 labels; it is the "
               "negative log-probability of the right class, so its gradient (softmax - one-hot) stays large "
               "while a prediction is wrong, whereas the squared error averages over all 10 outputs, pulls "
               "every logit towards exactly 0 or 1 even when the class is already right, and learns slowly")

TRAIN_MISTAKES = (
    Mistake("input not reshaped", cnn_not_reshaped,
            "the (N, 64) rows went into the convolution unchanged: nn.Conv2d wants images (N, C, H_img, W_img); "
            "reshape the inputs to (N, 1, 8, 8) first (x.reshape(-1, 1, 8, 8))"),
    Mistake("labels as float", cnn_labels_float,
            "the labels are floats: F.cross_entropy / nn.CrossEntropyLoss wants class indices, an int64 "
            "(torch.long) tensor of shape (N,); keep y as it comes (int64) or use .long()"),
    Mistake("never trained", cnn_never_trained,
            "the model was never trained: no optimizer.step() ran and no forward pass with gradients, so the "
            "test accuracy is at chance; loop over the epochs and mini-batches: forward, loss, "
            "optimizer.zero_grad(), loss.backward(), optimizer.step()"),
    Mistake("zero_grad forgotten", cnn_zero_grad_forgotten,
            "optimizer.zero_grad() is missing: loss.backward() ADDS to .grad, so every step used the sum of "
            "all gradients so far; call optimizer.zero_grad() once per mini-batch, before loss.backward()"),
    Mistake("no convolution", cnn_no_convolution,
            "the model has no convolution: the exercise asks for a CNN (nn.Conv2d layers)"),
    Mistake("step before backward", cnn_step_before_backward,
            "optimizer.step() ran while .grad was None: it came before loss.backward(), so every step "
            "changed nothing; per mini-batch: optimizer.zero_grad(), loss.backward(), THEN optimizer.step()"),
    Mistake("test images arranged differently", cnn_images_transposed,
            "the test images go through a different reshape/permutation than the training images: the model "
            "learned the training images as your code arranged them, but the check (like any user) feeds "
            "x.reshape(-1, 1, 8, 8); arrange the training images exactly that way (no permute or transpose)"),
    Mistake("learning rate too large", cnn_learning_rate_too_large,
            "the training diverged: the model's weights or outputs are NaN or inf, or it gives every image "
            "the same class (its ReLUs died); the learning rate is far too large (Adam with lr around 1e-3 "
            "to 3e-3, or SGD with lr 0.01 to 0.1, works here)"),
    Mistake("softmax before CrossEntropyLoss", cnn_softmax_before_loss,
            "the model outputs probabilities (its rows sum to 1): F.cross_entropy / nn.CrossEntropyLoss "
            "applies log-softmax itself, so a softmax before it squashes the gradients and learning crawls; "
            "return the raw logits (drop the nn.Softmax)"),
    Mistake("softmax in the training loop", cnn_softmax_in_training_loop,
            "the training loop hands probabilities (a softmax of the logits, rows summing to 1) to "
            "F.cross_entropy / nn.CrossEntropyLoss: cross-entropy takes logits, it applies log-softmax itself; "
            "softmax first squashes the gradients (the values the loss sees are confined to [0, 1], so it stays "
            "above 1.46 however right the model is, and its gradients pass through two softmaxes) and "
            "learning crawls; pass the raw logits to the loss (keep the softmax for reading probabilities)"),
    Mistake("MSE on one-hot labels", cnn_mse_on_one_hot,
            MSE_MESSAGE),
    Mistake("trained on the validation set only", cnn_validation_only,
            "the model was trained on the 270 validation images only: train on x_train, y_train (the 1,257 "
            "training images) and keep x_val, y_val for measuring"),
)


class _TrainingWatch:
    """What the learner's training did, seen through PyTorch's global hooks.

    * every optimizer step (``steps``), and whether ``.grad`` held this step's gradient only: a
      hook on the first parameter adds up the gradients that flow in between two steps, and a
      ``.grad`` that points elsewhere (the sum of all past gradients) counts as ``stale``;
    * every forward pass run with gradients (``grad_forwards``) and the 64-pixel input rows it saw
      (``rows``), to tell which data set the model trained on.
    """

    def __init__(self):
        self.steps = self.compared = self.stale = self.grad_forwards = self.empty_steps = 0
        self.ce_calls = self.ce_probabilities = self.mse_calls = 0
        self._losses: dict = {}
        self.rows: set = set()
        self._fresh: dict = {}
        self._handles: list = []
        self._last_input = None

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_pre_hook
        import torch.nn.functional as F
        self._handles = [register_optimizer_step_pre_hook(self._on_step),
                         register_module_forward_pre_hook(self._on_forward)]
        # nn.CrossEntropyLoss and nn.MSELoss call these too (F.cross_entropy, F.mse_loss)
        self._losses = {"cross_entropy": F.cross_entropy, "mse_loss": F.mse_loss}
        F.cross_entropy, F.mse_loss = self._spy_cross_entropy, self._spy_mse_loss
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F
        if self._losses:
            F.cross_entropy, F.mse_loss = self._losses["cross_entropy"], self._losses["mse_loss"]
            self._losses = {}
        for handle in self._handles:
            handle.remove()
        self._handles, self._fresh, self._last_input = [], {}, None
        return False

    def _on_step(self, optimizer, args, kwargs):
        import torch
        self.steps += 1
        param = next((p for group in optimizer.param_groups for p in group["params"] if p.grad is not None), None)
        if param is None:
            self.empty_steps += 1               # no parameter has a .grad: this step changes nothing
            return None
        key = id(param)
        if key not in self._fresh:              # from now on, add up what each backward pass brings
            def collect(grad, key=key):
                total = self._fresh.get(key)
                self._fresh[key] = grad.detach().clone() if total is None else total + grad.detach()
            self._handles.append(param.register_hook(collect))
            self._fresh[key] = None
            return None
        fresh, self._fresh[key] = self._fresh[key], None
        if fresh is None:
            return None
        with torch.no_grad():
            g, f = param.grad.detach().flatten().double(), fresh.flatten().double()
            norms = float(g.norm() * f.norm())
            if not math.isfinite(norms) or norms == 0:
                return None
            self.compared += 1
            if float(g @ f) / norms < 0.99:     # .grad is not (a multiple of) this step's gradient
                self.stale += 1
        return None

    @staticmethod
    def _training(input) -> bool:
        import torch
        return torch.is_grad_enabled() and isinstance(input, torch.Tensor) and input.requires_grad

    def _spy_cross_entropy(self, input, *args, **kwargs):
        import torch
        if self._training(input) and input.ndim == 2 and input.is_floating_point():
            self.ce_calls += 1
            with torch.no_grad():
                rows = input.detach()
                if bool((rows >= 0).all()) and bool(((rows.sum(dim=1) - 1).abs() < 1e-4).all()):
                    self.ce_probabilities += 1      # a softmax (probabilities), not logits
        return self._losses["cross_entropy"](input, *args, **kwargs)

    def _spy_mse_loss(self, input, *args, **kwargs):
        if self._training(input):
            self.mse_calls += 1
        return self._losses["mse_loss"](input, *args, **kwargs)

    @property
    def softmax_into_cross_entropy(self) -> bool:
        return self.ce_calls >= 5 and self.ce_probabilities > self.ce_calls / 2

    @property
    def trained_with_mse(self) -> bool:
        return self.mse_calls >= 5 and self.mse_calls > self.ce_calls

    def _on_forward(self, module, inputs):
        import torch
        if not torch.is_grad_enabled() or not inputs or not isinstance(inputs[0], torch.Tensor):
            return None
        x = inputs[0]
        if x.ndim < 2 or not x.is_floating_point() or x[0].numel() != 64:
            return None
        last = self._last_input                 # held, so no new batch can be stored at its address
        if last is not None and x.data_ptr() == last.data_ptr() and len(x) == len(last):
            return None                         # the same batch, passed on (or flattened) by a container
        self._last_input = x.detach()
        self.grad_forwards += 1
        if len(self.rows) < 5000:
            rows = x.detach().reshape(len(x), 64).cpu().float().numpy()
            self.rows.update(row.tobytes() for row in rows)
        return None

    @property
    def zero_grad_forgotten(self) -> bool:
        return self.compared >= 5 and self.stale > self.compared / 2


def _row_keys(x) -> set:
    return {row.tobytes() for row in np.asarray(x, dtype=np.float32).reshape(len(x), 64)}


def _train_accuracy_as_seen(model, watch, d, device) -> float | None:
    """When the model trained on the training images in ANOTHER pixel order: its accuracy on them as it saw them.

    The rows the training forward passes saw are matched to training images by their sorted pixels;
    None when they are the training rows as given (or cannot be matched).
    """
    import torch
    seen = [np.frombuffer(key, dtype=np.float32) for key in watch.rows]
    if not seen or len(watch.rows & (_row_keys(d.x_train) | _row_keys(d.x_val))) > 0.5 * len(seen):
        return None
    label_of = {np.sort(row).tobytes(): label
                for row, label in zip(np.asarray(d.x_train, dtype=np.float32).reshape(-1, 64), d.y_train)}
    pairs = [(row, label_of.get(np.sort(row).tobytes())) for row in seen]
    pairs = [(row, label) for row, label in pairs if label is not None]
    if len(pairs) < 0.5 * len(seen):
        return None
    x = torch.as_tensor(np.stack([row for row, _ in pairs])).reshape(-1, 1, 8, 8).to(device)
    try:
        with torch.no_grad():
            predicted = model(x).argmax(dim=1).cpu().numpy()
    except Exception:  # noqa: BLE001 - only a diagnosis
        return None
    return float((predicted == np.array([label for _, label in pairs])).mean())


def _translate_training_error(fail: CheckFailed) -> None:
    err = getattr(fail, "error", None)
    if err is None:
        return
    text = str(err)
    if "conv2d" in text and "input" in text and "64]" in text:
        fail_with(TRAIN_MISTAKES, "input not reshaped")
    # torch 2.13: "expected target dtype to be Long or Byte, but got Float"; torch 2.11 (Colab):
    # "expected scalar type Long but found Float"
    if ("Long" in text and "Float" in text) or ("target" in text.lower() and "class probabilities" in text):
        fail_with(TRAIN_MISTAKES, "labels as float")
    if "mat1 and mat2 shapes cannot be multiplied" in text:
        raise CheckFailed(f"{fail} — the dense layer's in_features does not fit what the convolutions give it: "
                          "after two 2 x 2 poolings an 8 x 8 image is 2 x 2, so nn.Linear needs C * 2 * 2 inputs "
                          "(nn.Flatten() first)") from None


@check.exercise(points=4, mistakes=TRAIN_MISTAKES, reference=ref.train_digits_cnn_on, seconds=150,
                forbid=(torch_impl.train_cnn, torch_impl.train_digits_cnn, torch_impl.SmallCNN,
                        model_np.train_cnn_numpy),
                hints=[
    "Three parts: a small network (two convolution + ReLU + 2 x 2 max-pool blocks, then a dense layer to "
    "the 10 classes), the data as tensors of images (N, 1, 8, 8) with int64 labels, and a loop over "
    "epochs and shuffled mini-batches with cross-entropy and Adam. Seed torch with `seed` first.",
    "nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), then the same from 32 to 64 "
    "channels, nn.Flatten(), nn.Linear(64 * 2 * 2, 10)). Per mini-batch: logits = model(xb); "
    "loss = F.cross_entropy(logits, yb) on the raw logits (no softmax); zero the gradients, backward, step.",
    "x = torch.as_tensor(x_train).reshape(-1, 1, 8, 8); y = torch.as_tensor(y_train); "
    "opt = torch.optim.Adam(model.parameters(), lr=3e-3); about 15 epochs of "
    "`for idx in torch.randperm(len(x)).split(32):` with opt.zero_grad(), loss.backward(), opt.step(); "
    "return model.eval().",
])
def train_digits_cnn(fn):
    """Train a CNN on the 8 x 8 digits to >= 97 % held-out test accuracy within a minute on the CPU."""
    import torch
    d = digits_data()
    line = ("from dlcourse.cnn.checks import digits_data; d = digits_data(); "
            f"model = train_digits_cnn(d.x_train, d.y_train, d.x_val, d.y_val, seed={DIGITS_SEED})")
    with trying("train_digits_cnn", label="load_digits(0): 1,257 training and 270 validation images",
                call_text=line):
        with torch.random.fork_rng(devices=[]), _TrainingWatch() as watch:
            torch.manual_seed(DIGITS_SEED)
            try:
                with time_limit(TRAIN_SECONDS):
                    model = call(fn, d.x_train.copy(), d.y_train.copy(), d.x_val.copy(), d.y_val.copy(),
                                 DIGITS_SEED)
            except CheckTimeout:
                raise CheckFailed(f"training took more than {TRAIN_SECONDS:g} s on the CPU: a CNN of a few "
                                  "thousand weights needs only seconds on these 1,257 images; use fewer epochs, "
                                  "a smaller network, or mini-batches rather than single examples") from None
            except CheckFailed as fail:
                _translate_training_error(fail)
                raise
        if model is None:
            raise CheckFailed("train_digits_cnn returned None: did you forget to `return model`?")
        if isinstance(model, tuple):
            raise CheckFailed(f"train_digits_cnn returned a tuple of {len(model)}: return the trained model "
                              "alone (an nn.Module)")
        expect(isinstance(model, torch.nn.Module),
               f"train_digits_cnn returned a {type(model).__name__}; return the trained nn.Module")
        params = list(model.parameters())
        expect(bool(params), "the model has no parameters: build it from nn.Conv2d and nn.Linear layers")
        if not any(isinstance(module, torch.nn.Conv2d) for module in model.modules()):
            fail_with(TRAIN_MISTAKES, "no convolution")
        was_training = model.training
        model.eval()                              # dropout and batch norm in their predicting form
        x_test = torch.as_tensor(d.x_test).reshape(-1, 1, 8, 8).to(params[0].device)
        try:
            with torch.no_grad():
                logits = call(model, x_test)
        except CheckFailed as fail:
            if "mat1 and mat2" in str(getattr(fail, "error", "")):
                raise CheckFailed(f"{fail} — the returned model must take images (N, 1, 8, 8), as the check "
                                  "feeds it, and its dense layer needs in_features = C * H * W of what reaches "
                                  "it (nn.Flatten() first)") from None
            raise
        expect(isinstance(logits, torch.Tensor) and tuple(logits.shape) == (len(x_test), 10),
               f"the model should return (N, 10) logits for (N, 1, 8, 8) images; got "
               f"{tuple(getattr(logits, 'shape', ())) or type(logits).__name__}")
        logits = logits.detach().double().cpu()
        accuracy = float((logits.argmax(dim=1).numpy() == d.y_test).mean())
        mode = " (the check put the model in eval mode)" if was_training else ""
        score = f"(test accuracy {accuracy:.1%}, needed {TARGET_ACCURACY:.0%})"
        if bool((logits >= 0).all()) and torch.allclose(logits.sum(dim=1), torch.ones(len(logits),
                                                                                        dtype=logits.dtype),
                                                          atol=1e-4):   # probabilities: wrong even above 97 %
            fail_with(TRAIN_MISTAKES, "softmax before CrossEntropyLoss", score)
        if watch.softmax_into_cross_entropy:                                  # wrong even above 97 % too
            fail_with(TRAIN_MISTAKES, "softmax in the training loop",
                      f"({watch.ce_probabilities} of {watch.ce_calls} cross-entropy calls got probabilities; "
                      f"{score[1:]}")
        if accuracy >= TARGET_ACCURACY:
            note = ""
            if watch.trained_with_mse:            # the exercise does not prescribe the loss: a note, no penalty
                note = (" — note: you trained with a squared error (F.mse_loss); for classes the usual loss is "
                        "cross-entropy on the logits (F.cross_entropy), which learns faster and gives "
                        "log-probabilities")
            return (f"held-out test accuracy {accuracy:.1%} >= {TARGET_ACCURACY:.0%} on the 270 test images "
                    f"it never saw{mode}{note}")
        finite = bool(torch.isfinite(logits).all()) and all(bool(torch.isfinite(p).all()) for p in params)
        if watch.steps == 0 and watch.grad_forwards == 0:
            fail_with(TRAIN_MISTAKES, "never trained", score)
        if watch.steps > 0 and watch.empty_steps >= 0.9 * watch.steps:
            fail_with(TRAIN_MISTAKES, "step before backward",
                      f"({watch.empty_steps} of {watch.steps} steps found no gradient; {score[1:]}")
        if watch.zero_grad_forgotten:
            fail_with(TRAIN_MISTAKES, "zero_grad forgotten",
                      f"({watch.stale} of {watch.compared} steps saw piled-up gradients; {score[1:]}")
        if finite and watch.trained_with_mse:
            fail_with(TRAIN_MISTAKES, "MSE on one-hot labels",
                      f"({watch.mse_calls} squared-error losses; {score[1:]}")
        one_class = finite and len(np.unique(logits.argmax(dim=1).numpy())) == 1
        if not finite or (watch.steps > 0 and one_class):
            fail_with(TRAIN_MISTAKES, "learning rate too large", score)
        if watch.rows:
            from_train = len(watch.rows & _row_keys(d.x_train))
            from_val = len(watch.rows & _row_keys(d.x_val))
            if from_val >= 0.9 * len(watch.rows) and from_train <= 0.05 * len(watch.rows):
                fail_with(TRAIN_MISTAKES, "trained on the validation set only", score)
            seen_accuracy = _train_accuracy_as_seen(model, watch, d, params[0].device)
            if seen_accuracy is not None and seen_accuracy >= 0.9:
                fail_with(TRAIN_MISTAKES, "test images arranged differently",
                          f"(training images as your code arranged them: {seen_accuracy:.1%} right; {score[1:]}")
        raise CheckFailed(f"held-out test accuracy {accuracy:.1%} is below {TARGET_ACCURACY:.0%}: train longer "
                          "(more epochs), with Adam at lr about 1e-3 to 3e-3, on mini-batches of 32 to 64, with "
                          f"enough filters (16 to 32 in the first convolution){mode}")


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_conv_vs_dense_parameters", answer=(4640, 2099200), rtol=0,
    explanation="the convolution has 32 filters of 16 x 3 x 3 weights plus one bias each: 32 · (16 · 9 + 1) "
                "= 4,640, whatever the image size. A dense layer between the same maps connects all "
                "16 · 64 = 1,024 inputs to all 32 · 64 = 2,048 outputs: 1,024 · 2,048 + 2,048 = 2,099,200, "
                "452 times more — weight sharing and locality are what make the convolution small.",
    mistakes=[
        Mistake("no biases", (4608, 2097152), "both counts leave out the biases: one per output channel for "
                                              "the convolution (32), one per output unit for the dense layer "
                                              "(2,048)"),
        Mistake("dense bias forgotten", (4640, 2097152), "the convolution is right; the dense layer also has "
                                                         "one bias per output unit: + 32 · 64"),
        Mistake("bias per input channel", (4624, 2099200), "the convolution's bias is one per OUTPUT channel "
                                                           "(32), not per input channel"),
        Mistake("input channels ignored", (320, 2099200), "each of the 32 filters spans all 16 input channels: "
                                                          "16 · 3 · 3 weights, not 3 · 3"),
    ])

check.question(
    "q_output_size", answer=16, rtol=0,
    explanation="floor((32 + 2·2 - 1·(5 - 1) - 1) / 2) + 1 = floor(31 / 2) + 1 = 15 + 1 = 16 — 'same' "
                "padding (p = 2 for k = 5) with stride 2 halves the size.",
    mistakes=[
        Mistake("+1 forgotten", 15, "15 = floor(31 / 2) counts the steps after the first position; add 1 for "
                                    "the first position"),
        Mistake("ceil", 17, "the last, partial step is dropped: round down (floor), not up"),
        Mistake("padding ignored", 14, "the padding adds 2 zeros on each side: the padded image is 36 pixels "
                                       "wide"),
        Mistake("stride ignored", 32, "32 is the stride-1 size ('same' padding keeps it); stride 2 keeps every "
                                      "second position"),
    ])

check.question(
    "q_receptive_field", answer=12, rtol=0,
    explanation="size 1 → 3 after the first 3 x 3 conv; the 2 x 2 pool adds 1 (size 4) and doubles the jump "
                "to 2; each later 3 x 3 conv adds 2 units of 2 pixels: 8, then 12.",
    mistakes=[
        Mistake("strides ignored", 8, "after the stride-2 pool, neighbouring units are 2 pixels apart: each "
                                      "later 3 x 3 conv adds 2 · 2 = 4 pixels, not 2"),
        Mistake("product of kernels", 54, "receptive fields grow by adding each layer's extra span, not by "
                                          "multiplying the kernel sizes"),
        Mistake("kernels summed", 11, "each layer adds k - 1 units (times the jump), not k"),
        Mistake("the lesson's stack", 10, "10 is the lesson's conv-pool-conv-pool stack; here the 2 x 2 pool "
                                          "is followed by TWO 3 x 3 convolutions and no second pool: each adds "
                                          "2 units of 2 pixels"),
        Mistake("jump updated first", 13, "the pool's own stride only spaces out the units of the layers "
                                          "AFTER it: it adds (2 - 1) · 1 = 1 pixel"),
    ])

check.question(
    "q_shift", answer="b", choices=("a", "b", "c", "d"),
    explanation="a stride-1 convolution is translation-equivariant: the same filter meets the same pattern one "
                "position later, so the map shifts by exactly 1 pixel. A 2 x 2 max-pool with stride 2 cannot "
                "shift by half a cell: where the maximum stays inside its window the pooled value does not "
                "change, elsewhere it does — a little invariance, not a clean shift (the lesson measured "
                "how many of the 16 pooled values stay).",
    mistakes=[
        Mistake("both shift by one", "a", "the pooled map has half the resolution: a 1-pixel shift is half of "
                                          "one of its cells, so it cannot move by a whole cell"),
        Mistake("conv invariant", "c", "a convolution is equivariant, not invariant: its map moves with the "
                                       "input (by exactly 1 pixel for stride 1)"),
        Mistake("conv shifts by two", "d", "a stride-1 convolution moves its map by exactly as much as the "
                                           "input moved: 1 pixel"),
    ])
