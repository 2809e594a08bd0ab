"""Convolution and pooling by hand in NumPy: forward and backward, as PyTorch computes them.

A convolution layer slides a small kernel over the image and takes a dot product at
every position.  Deep-learning libraries compute *cross-correlation* (the kernel is not
flipped); we do the same, so weights copy to and from ``torch.nn.Conv2d`` unchanged::

    out, cache = conv2d_forward(x, w, b, stride=1, padding=1)
    dx, dw, db = conv2d_backward(dout, cache)

    out, cache = maxpool2d_forward(x, kernel_size=2)          # stride defaults to kernel_size
    dx = maxpool2d_backward(dout, cache)

Three versions of one idea live here.  ``conv2d_loops`` is the definition written as
loops, to read.  ``conv2d_forward`` is the same sum, vectorised with *im2col*: copy every
receptive field into one column of a matrix (``sliding_window_view``), then one matrix
product computes every output at once.  The backward pass undoes im2col with one fact:
kernel offset ``(i, j)`` meets, across all output positions, the strided slice
``x_pad[..., i*dH : ... : sH, j*dW : ... : sW]`` (``_offset_slices``), so each offset's
gradient is added back onto its slice; pooling uses the same slices.

Arguments ``stride``, ``padding`` and ``dilation`` are an int or a pair (height, width),
as in PyTorch.  ``groups`` splits the channels into independent convolutions:
``groups = C_in`` (with ``C_out`` a multiple of it) is the *depthwise* convolution.

Dimension letters (the course glossary)
---------------------------------------
N              batch size (number of examples)
C_in, C_out    input and output channels; ``groups`` divides both
H_img, W_img   input image height and width (before padding)
H_out, W_out   output height and width (``conv_output_size``)
kH, kW         kernel height and width
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import numpy as np

__all__ = [
    "conv_output_size", "conv2d_loops",
    "Conv2dCache", "conv2d_forward", "conv2d_backward",
    "MaxPool2dCache", "maxpool2d_forward", "maxpool2d_backward",
    "AvgPool2dCache", "avgpool2d_forward", "avgpool2d_backward",
    "receptive_field",
]

IntOrPair = Union[int, tuple[int, int]]


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``: PyTorch's convention for 2-D arguments."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
    return pair


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution (or pooling) along one axis.

    ``floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``:
    a dilated kernel spans ``dilation * (kernel - 1) + 1`` pixels, it fits
    ``size + 2 * padding - span`` steps of one pixel, and the stride keeps every
    ``stride``-th of those positions (the last partial step is dropped: floor).

    Parameters
    ----------
    size : input length (H_img or W_img)
    kernel : kernel length (kH or kW)
    stride, padding, dilation : as in ``torch.nn.Conv2d``, for this axis

    Returns
    -------
    int, the output length (H_out or W_out); below 1 means the kernel does not fit.
    """
    span = dilation * (kernel - 1) + 1
    return (size + 2 * padding - span) // stride + 1


def _offset_slices(kH: int, kW: int, H_out: int, W_out: int, stride: tuple[int, int],
                   dilation: tuple[int, int]):
    """Yield ``(i, j, rows, cols)``: kernel offset (i, j) meets ``x_pad[..., rows, cols]``.

    Output position (p, q) reads input pixel (p * sH + i * dH, q * sW + j * dW) for
    offset (i, j), so over all H_out x W_out positions one offset reads a strided slice
    of the padded image of shape (H_out, W_out).
    """
    (sH, sW), (dH, dW) = stride, dilation
    for i in range(kH):
        rows = slice(i * dH, i * dH + sH * (H_out - 1) + 1, sH)
        for j in range(kW):
            cols = slice(j * dW, j * dW + sW * (W_out - 1) + 1, sW)
            yield i, j, rows, cols


def _pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of (..., H_img, W_img) by ``padding`` on both sides."""
    pH, pW = padding
    if pH == 0 and pW == 0:
        return x
    width = [(0, 0)] * (x.ndim - 2) + [(pH, pH), (pW, pW)]
    return np.pad(x, width, constant_values=value)


def _check_conv(x: np.ndarray, w: np.ndarray, b, stride, padding, dilation, groups: int):
    """Validate shapes and arguments; return them normalised and the output size."""
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x must be (N, C_in, H_img, W_img) and w (C_out, C_in // groups, kH, kW); "
                         f"got x {x.shape}, w {w.shape}")
    C_in, H_img, W_img = x.shape[1:]
    C_out, C_in_g, kH, kW = w.shape
    if groups < 1 or C_in % groups or C_out % groups:
        raise ValueError(f"groups={groups} must divide C_in={C_in} and C_out={C_out}")
    if C_in_g * groups != C_in:
        raise ValueError(f"w has {C_in_g} input channels per group; x has C_in={C_in} and "
                         f"groups={groups}, so it should be {C_in // groups}")
    if b is not None and np.shape(b) != (C_out,):
        raise ValueError(f"b must have shape (C_out,) = ({C_out},), got {np.shape(b)}")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    H_out = conv_output_size(H_img, kH, stride[0], padding[0], dilation[0])
    W_out = conv_output_size(W_img, kW, stride[1], padding[1], dilation[1])
    if H_out < 1 or W_out < 1:
        raise ValueError(f"the kernel ({kH}x{kW}, dilation {dilation}) does not fit the padded image "
                         f"({H_img}x{W_img}, padding {padding}): output would be {H_out}x{W_out}")
    return stride, padding, dilation, H_out, W_out


# --------------------------------------------------------------------------- convolution, loops

def conv2d_loops(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride: IntOrPair = 1,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1) -> np.ndarray:
    """2-D convolution (cross-correlation) written as loops over every output value, to read.

    ``out[n, co, p, q] = b[co] + sum_{c, i, j} x_pad[n, g*Cg + c, p*sH + i*dH, q*sW + j*dW] * w[co, c, i, j]``
    where ``g = co // (C_out // groups)`` is the group of output channel ``co`` and
    ``Cg = C_in // groups`` its number of input channels.  Thousands of times slower
    than ``conv2d_forward`` (a Python step per output value); it is the definition.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H_img, W_img)
    w : ndarray of shape (C_out, C_in // groups, kH, kW), ``torch.nn.Conv2d.weight``'s layout
    b : ndarray of shape (C_out,) or None
    stride, padding, dilation : int or (height, width) pair
    groups : int dividing C_in and C_out

    Returns
    -------
    out : ndarray of shape (N, C_out, H_out, W_out)
    """
    (sH, sW), (pH, pW), (dH, dW), H_out, W_out = _check_conv(x, w, b, stride, padding, dilation, groups)
    N = x.shape[0]
    C_out, C_in_g, kH, kW = w.shape
    C_out_g = C_out // groups
    x_pad = _pad(x, (pH, pW))
    out = np.zeros((N, C_out, H_out, W_out), dtype=np.result_type(x, w))
    for n in range(N):
        for co in range(C_out):
            g = co // C_out_g                        # the group this output channel belongs to
            channels = slice(g * C_in_g, (g + 1) * C_in_g)
            for p in range(H_out):
                for q in range(W_out):
                    top, left = p * sH, q * sW       # where the window starts in x_pad
                    window = x_pad[n, channels,
                                   top:top + dH * (kH - 1) + 1:dH,
                                   left:left + dW * (kW - 1) + 1:dW]   # (C_in // groups, kH, kW)
                    out[n, co, p, q] = np.sum(window * w[co])
            if b is not None:
                out[n, co] += b[co]
    return out


# --------------------------------------------------------------------------- convolution, vectorised

# Columns are built for a few images at a time, about this many numbers (1 MiB of float32):
# small enough to stay in the CPU cache between im2col and the matrix products that read
# them (on the course machine up to 1.6x faster than one im2col matrix for the whole batch,
# at 28x28 images, 16 channels and 5x5 kernels; benchmarks/RESULTS.md).
CHUNK_ELEMENTS = 1 << 18


class Conv2dCache(NamedTuple):
    x_pad: np.ndarray         # (N, C_in, H_img + 2 pH, W_img + 2 pW): backward rebuilds the columns from it
    w: np.ndarray             # (C_out, C_in // groups, kH, kW)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    has_bias: bool


def _im2col(x_pad: np.ndarray, kH: int, kW: int, H_out: int, W_out: int, stride, dilation) -> np.ndarray:
    """Every receptive field as one column: (C_in, kH, kW, N, H_out, W_out).

    Row (c, i, j) holds, for every output position of every image, the pixel that kernel
    weight (c, i, j) multiplies there; a matrix product with the weights then computes the
    whole convolution.  ``sliding_window_view`` gives every window as a view (no copy);
    stepping it by the stride and the dilation keeps the windows and pixels the convolution
    uses; one copy lays them out as rows.
    """
    (sH, sW), (dH, dW) = stride, dilation
    span = (dH * (kH - 1) + 1, dW * (kW - 1) + 1)                   # a dilated kernel's extent
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, span, axis=(2, 3))
    windows = windows[:, :, ::sH, ::sW, ::dH, ::dW]                  # (N, C_in, H_out, W_out, kH, kW), a view
    return np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3))  # (C_in, kH, kW, N, H_out, W_out)


def _col2im_add(dcols: np.ndarray, dx_pad: np.ndarray, stride, dilation) -> None:
    """Undo im2col for gradients: add each column entry onto the pixel it was copied from.

    ``dcols`` (C_in, kH, kW, N, H_out, W_out); ``dx_pad`` (N, C_in, H_pad, W_pad) is added to
    in place.  A pixel that sits in several receptive fields collects from each of them.
    """
    kH, kW, _, H_out, W_out = dcols.shape[1:]
    dx_t = dx_pad.transpose(1, 0, 2, 3)  # (C_in, N, H_pad, W_pad), a view: adding to it adds to dx_pad
    for i, j, rows, columns in _offset_slices(kH, kW, H_out, W_out, stride, dilation):
        dx_t[:, :, rows, columns] += dcols[:, i, j]


def _chunks(N: int, per_image: int):
    """Slices of the batch holding about ``CHUNK_ELEMENTS`` column entries each (at least one image)."""
    step = max(1, CHUNK_ELEMENTS // per_image)
    return [slice(start, min(start + step, N)) for start in range(0, N, step)]


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride: IntOrPair = 1,
                   padding: IntOrPair = 0, dilation: IntOrPair = 1,
                   groups: int = 1) -> tuple[np.ndarray, Conv2dCache]:
    """2-D convolution (cross-correlation), vectorised with im2col: ``F.conv2d``.

    Each group is one matrix product: its weights, flattened to
    (C_out // groups, C_in // groups * kH * kW), times its columns,
    (C_in // groups * kH * kW, N * H_out * W_out).  Same result as ``conv2d_loops``.
    The columns are built and multiplied a few images at a time (``CHUNK_ELEMENTS``),
    so that they are still in the CPU cache when the product reads them.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H_img, W_img)
    w : ndarray of shape (C_out, C_in // groups, kH, kW), ``torch.nn.Conv2d.weight``'s layout
    b : ndarray of shape (C_out,) or None
    stride, padding, dilation : int or (height, width) pair; padding adds zeros on both sides
    groups : int dividing C_in and C_out (``groups = C_in``: depthwise)

    Returns
    -------
    out : ndarray of shape (N, C_out, H_out, W_out), H_out = ``conv_output_size(H_img, kH, ...)``
    cache : Conv2dCache for ``conv2d_backward`` (the padded input, not the columns:
        kH * kW times less memory, for one more im2col in the backward pass)
    """
    stride, padding, dilation, H_out, W_out = _check_conv(x, w, b, stride, padding, dilation, groups)
    N = x.shape[0]
    C_out, C_in_g, kH, kW = w.shape
    dtype = np.result_type(x, w)
    x_pad, w = _pad(x.astype(dtype, copy=False), padding), w.astype(dtype, copy=False)
    w_mat = w.reshape(groups, C_out // groups, C_in_g * kH * kW)        # (G, C_out/G, C_in/G*kH*kW)
    out = np.empty((N, C_out, H_out, W_out), dtype=dtype)
    for batch in _chunks(N, x.shape[1] * kH * kW * H_out * W_out):
        n = batch.stop - batch.start
        cols = _im2col(x_pad[batch], kH, kW, H_out, W_out, stride, dilation)
        cols = cols.reshape(groups, C_in_g * kH * kW, n * H_out * W_out)  # (G, C_in/G*kH*kW, n*H_out*W_out)
        out_t = (w_mat @ cols).reshape(C_out, n, H_out, W_out)            # (C_out, n, H_out, W_out)
        out[batch] = out_t.transpose(1, 0, 2, 3)
    if b is not None:
        out += b.astype(dtype, copy=False)[:, None, None]                 # one bias per output channel
    return out, Conv2dCache(x_pad, w, stride, padding, dilation, groups, b is not None)


def conv2d_backward(dout: np.ndarray,
                    cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Gradients of ``conv2d_forward`` with respect to x, w and b.

    The forward pass is ``out = w_mat @ cols`` per group, so the backward pass is the
    matrix-product rule twice, then im2col undone: every column entry came from one
    pixel of x_pad, so its gradient is added back onto that pixel (a pixel that sits in
    several receptive fields collects from each of them).

    Parameters
    ----------
    dout : ndarray of shape (N, C_out, H_out, W_out), the upstream gradient
    cache : Conv2dCache from ``conv2d_forward``

    Returns
    -------
    dx : ndarray of shape (N, C_in, H_img, W_img)
    dw : ndarray of shape (C_out, C_in // groups, kH, kW)
    db : ndarray of shape (C_out,), or None when the forward pass had no bias
    """
    x_pad, w, stride, (pH, pW), dilation, groups, has_bias = cache
    N, C_in, H_pad, W_pad = x_pad.shape
    C_out, C_in_g, kH, kW = w.shape
    H_out, W_out = dout.shape[2:]
    dout = dout.astype(x_pad.dtype, copy=False)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None                  # b is added at every (n, p, q)
    w_mat = w.reshape(groups, C_out // groups, C_in_g * kH * kW)          # (G, C_out/G, C_in/G*kH*kW)
    dw_mat = np.zeros_like(w_mat)
    dx_pad = np.zeros_like(x_pad)                                         # (N, C_in, H_pad, W_pad)
    for batch in _chunks(N, C_in * kH * kW * H_out * W_out):
        n = batch.stop - batch.start
        cols = _im2col(x_pad[batch], kH, kW, H_out, W_out, stride, dilation)
        cols = cols.reshape(groups, C_in_g * kH * kW, n * H_out * W_out)  # (G, C_in/G*kH*kW, n*H_out*W_out)
        dout_mat = dout[batch].transpose(1, 0, 2, 3).reshape(groups, C_out // groups, n * H_out * W_out)
        # d(w_mat @ cols)/d w_mat = cols^T, summed over the chunks; computed as (cols @ dout_mat^T)^T,
        # the same numbers, because OpenBLAS runs that orientation about twice as fast
        dw_mat += (cols @ dout_mat.transpose(0, 2, 1)).transpose(0, 2, 1)
        dcols = w_mat.transpose(0, 2, 1) @ dout_mat                       # d(w_mat @ cols)/d cols = w_mat^T
        _col2im_add(dcols.reshape(C_in, kH, kW, n, H_out, W_out), dx_pad[batch], stride, dilation)
    dx = dx_pad[:, :, pH:H_pad - pH, pW:W_pad - pW]                      # drop the padding: (N, C_in, H_img, W_img)
    return np.ascontiguousarray(dx), dw_mat.reshape(w.shape), db


# --------------------------------------------------------------------------- pooling

def _check_pool(x: np.ndarray, kernel_size, stride, padding):
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H_img, W_img), got shape {x.shape}")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        # as PyTorch: a window made only of padding would have no input to pool
        raise ValueError(f"padding {padding} must be at most half of kernel_size {kernel}")
    H_out = conv_output_size(x.shape[2], kernel[0], stride[0], padding[0])
    W_out = conv_output_size(x.shape[3], kernel[1], stride[1], padding[1])
    if H_out < 1 or W_out < 1:
        raise ValueError(f"the pooling window {kernel} does not fit the padded image "
                         f"({x.shape[2]}x{x.shape[3]}, padding {padding})")
    return kernel, stride, padding, H_out, W_out


def _as_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


class MaxPool2dCache(NamedTuple):
    argmax: np.ndarray        # (N, C, H_out, W_out): flat index i * kW + j of the winner in its window
    x_shape: tuple            # (N, C, H_img, W_img)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


def maxpool2d_forward(x: np.ndarray, kernel_size: IntOrPair = 2, stride: Optional[IntOrPair] = None,
                      padding: IntOrPair = 0) -> tuple[np.ndarray, MaxPool2dCache]:
    """Max pooling, ``F.max_pool2d``: the largest value of each window, channel by channel.

    Padding adds ``-inf`` (as PyTorch), so a padded pixel never wins; PyTorch's limit
    ``padding <= kernel_size / 2`` is enforced.  On ties the *first* maximum in row-major
    order within the window wins, as in PyTorch, so the gradient goes to one element.

    Parameters
    ----------
    x : ndarray of shape (N, C, H_img, W_img); integers are converted to float64
    kernel_size : int or (kH, kW)
    stride : int or pair, or None for ``kernel_size`` (non-overlapping windows)
    padding : int or pair

    Returns
    -------
    out : ndarray of shape (N, C, H_out, W_out)
    cache : MaxPool2dCache for ``maxpool2d_backward``
    """
    x = _as_float(x)
    kernel, stride, padding, H_out, W_out = _check_pool(x, kernel_size, stride, padding)
    (kH, kW), (sH, sW) = kernel, stride
    windows = np.lib.stride_tricks.sliding_window_view(_pad(x, padding, -np.inf), kernel, axis=(2, 3))
    windows = windows[:, :, ::sH, ::sW][:, :, :H_out, :W_out]        # (N, C, H_out, W_out, kH, kW), a view
    flat = windows.reshape(*windows.shape[:4], kH * kW)               # (N, C, H_out, W_out, kH*kW), a copy
    argmax = flat.argmax(axis=-1)                                     # first maximum on ties, as PyTorch
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]  # (N, C, H_out, W_out)
    return out, MaxPool2dCache(argmax, x.shape, kernel, stride, padding)


def maxpool2d_backward(dout: np.ndarray, cache: MaxPool2dCache) -> np.ndarray:
    """Gradient of max pooling: each window's upstream gradient goes to its winner only.

    The max is locally ``out = x[winner]``, so d out / d x is 1 at the winner and 0
    elsewhere; a pixel that wins in several overlapping windows collects from each.

    Parameters
    ----------
    dout : ndarray of shape (N, C, H_out, W_out)
    cache : MaxPool2dCache from ``maxpool2d_forward``

    Returns
    -------
    dx : ndarray of shape (N, C, H_img, W_img)
    """
    argmax, (N, C, H_img, W_img), (kH, kW), stride, (pH, pW) = cache
    H_out, W_out = dout.shape[2:]
    dx_pad = np.zeros((N, C, H_img + 2 * pH, W_img + 2 * pW), dtype=_as_float(dout).dtype)
    for i, j, rows, cols in _offset_slices(kH, kW, H_out, W_out, stride, (1, 1)):
        dx_pad[:, :, rows, cols] += np.where(argmax == i * kW + j, dout, 0)  # windows whose winner sits at (i, j)
    return dx_pad[:, :, pH:pH + H_img, pW:pW + W_img].copy()             # (N, C, H_img, W_img)


class AvgPool2dCache(NamedTuple):
    x_shape: tuple            # (N, C, H_img, W_img)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


def avgpool2d_forward(x: np.ndarray, kernel_size: IntOrPair = 2, stride: Optional[IntOrPair] = None,
                      padding: IntOrPair = 0) -> tuple[np.ndarray, AvgPool2dCache]:
    """Average pooling, ``F.avg_pool2d`` with its defaults: the mean of each window.

    Padding adds zeros that *count* in the mean (PyTorch's default
    ``count_include_pad=True``): a corner window of a padded image is divided by
    kH * kW, not by the number of real pixels in it.  ``ceil_mode`` and
    ``divisor_override`` are not offered.

    Parameters
    ----------
    x : ndarray of shape (N, C, H_img, W_img); integers are converted to float64
    kernel_size : int or (kH, kW)
    stride : int or pair, or None for ``kernel_size``
    padding : int or pair, at most half of kernel_size (as PyTorch)

    Returns
    -------
    out : ndarray of shape (N, C, H_out, W_out)
    cache : AvgPool2dCache for ``avgpool2d_backward``
    """
    x = _as_float(x)
    kernel, stride, padding, H_out, W_out = _check_pool(x, kernel_size, stride, padding)
    x_pad = _pad(x, padding)
    out = np.zeros((*x.shape[:2], H_out, W_out), dtype=x.dtype)      # (N, C, H_out, W_out)
    for _, _, rows, cols in _offset_slices(*kernel, H_out, W_out, stride, (1, 1)):
        out += x_pad[:, :, rows, cols]                                # one kernel offset at a time
    out /= kernel[0] * kernel[1]
    return out, AvgPool2dCache(x.shape, kernel, stride, padding)


def avgpool2d_backward(dout: np.ndarray, cache: AvgPool2dCache) -> np.ndarray:
    """Gradient of average pooling: each window's gradient, shared equally by its kH * kW pixels.

    Parameters
    ----------
    dout : ndarray of shape (N, C, H_out, W_out)
    cache : AvgPool2dCache from ``avgpool2d_forward``

    Returns
    -------
    dx : ndarray of shape (N, C, H_img, W_img)
    """
    (N, C, H_img, W_img), (kH, kW), stride, (pH, pW) = cache
    H_out, W_out = dout.shape[2:]
    share = _as_float(dout) / (kH * kW)                              # d mean / d x = 1 / (kH * kW)
    dx_pad = np.zeros((N, C, H_img + 2 * pH, W_img + 2 * pW), dtype=share.dtype)
    for _, _, rows, cols in _offset_slices(kH, kW, H_out, W_out, stride, (1, 1)):
        dx_pad[:, :, rows, cols] += share
    return dx_pad[:, :, pH:pH + H_img, pW:pW + W_img].copy()         # (N, C, H_img, W_img)


# --------------------------------------------------------------------------- receptive field

def receptive_field(layers) -> list[tuple[int, int]]:
    """Receptive-field size and jump after each layer of a stack of convolutions / poolings.

    The *receptive field* of a unit is how many input pixels (along one axis) can affect
    it; the *jump* is how far apart, in input pixels, two neighbouring units of the layer
    are.  Starting from a pixel (size 1, jump 1), a layer with kernel k, stride s and
    dilation d spans ``d * (k - 1) + 1`` of its input units, so::

        size  += (d * (k - 1)) * jump     # each extra unit it spans is `jump` input pixels away
        jump  *= s

    Padding moves the field but does not change its size.

    Parameters
    ----------
    layers : sequence of ``(kernel, stride, dilation)`` tuples, first layer first
        (``(kernel, stride)`` and ``(kernel,)`` mean dilation 1 and stride 1)

    Returns
    -------
    list of ``(size, jump)``, one per layer

    Examples
    --------
    >>> receptive_field([(3, 1, 1), (3, 1, 1)])                 # two 3x3 convolutions
    [(3, 1), (5, 1)]
    >>> receptive_field([(3, 1, 1), (2, 2, 1), (3, 1, 1)])      # 3x3, 2x2 pool stride 2, 3x3
    [(3, 1), (4, 2), (8, 2)]
    """
    size, jump, result = 1, 1, []
    for layer in layers:
        layer = (layer,) if isinstance(layer, (int, np.integer)) else tuple(layer)
        kernel, stride, dilation = (layer + (1, 1))[:3]       # missing stride / dilation: 1
        size += dilation * (kernel - 1) * jump
        jump *= stride
        result.append((int(size), int(jump)))
    return result


# --------------------------------------------------------------------------- exercise forms (the graded answers)
# The answers to the graded exercises of chapter 05 (solutions/05_cnn.py), in the form the
# exercises ask for; each is the ``reference=`` of its check in dlcourse/cnn/checks.py.  The
# layers above keep the course's cache style; these take plain arguments and return plain
# values.  (``conv_output_size`` above is already in the exercise's form.)

def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """2-D convolution (cross-correlation, as ``F.conv2d``) with an int stride and padding.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H_img, W_img)
    w : ndarray of shape (C_out, C_in, kH, kW)
    b : ndarray of shape (C_out,)
    stride, padding : int, the same for both axes; padding adds zeros on both sides

    Returns
    -------
    out : ndarray of shape (N, C_out, H_out, W_out)
    """
    return conv2d_forward(x, w, b, stride=stride, padding=padding)[0]


def conv2d_backward_from_x(dout: np.ndarray, x: np.ndarray, w: np.ndarray, stride: int = 1,
                           padding: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv2d(x, w, b, stride, padding)`` from its inputs rather than a cache.

    Parameters
    ----------
    dout : ndarray of shape (N, C_out, H_out, W_out), the upstream gradient
    x : ndarray of shape (N, C_in, H_img, W_img); w : ndarray of shape (C_out, C_in, kH, kW)
    stride, padding : int, as in the forward pass

    Returns
    -------
    dx : (N, C_in, H_img, W_img); dw : (C_out, C_in, kH, kW); db : (C_out,)
    """
    _, cache = conv2d_forward(x, w, np.zeros(w.shape[0], dtype=w.dtype), stride=stride, padding=padding)
    return conv2d_backward(dout, cache)


def maxpool2d_backward_from_x(dout: np.ndarray, x: np.ndarray, kernel_size: int = 2,
                              stride: int = 2) -> np.ndarray:
    """Gradient of ``F.max_pool2d(x, kernel_size, stride)`` from its input rather than a cache.

    Each window's upstream gradient goes to ONE element, the first maximum in row-major order
    within the window (PyTorch's choice on ties); overlapping windows add up.

    Parameters
    ----------
    dout : ndarray of shape (N, C, H_out, W_out)
    x : ndarray of shape (N, C, H_img, W_img)
    kernel_size, stride : int, the same for both axes

    Returns
    -------
    dx : ndarray of shape (N, C, H_img, W_img)
    """
    _, cache = maxpool2d_forward(x, kernel_size, stride)
    return maxpool2d_backward(dout, cache)


def receptive_field_size(layers) -> int:
    """The receptive field (in input pixels, along one axis) of one unit of the last layer.

    Parameters
    ----------
    layers : sequence of ``(kernel, stride, dilation)``, first layer first

    Returns
    -------
    int, 1 for no layers
    """
    return receptive_field(layers)[-1][0] if len(layers) else 1


def train_digits_cnn_on(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        seed: int = 0):
    """A small CNN trained in PyTorch on the 8 x 8 digits as ``load_digits`` gives them.

    The exercise form of :func:`dlcourse.cnn.torch_impl.train_digits_cnn`: ``torch_impl.SmallCNN``
    (width 32) trained by ``torch_impl.train_cnn`` for 15 epochs of Adam on the training set
    (no augmentation), on the CPU.  PyTorch is imported here, so that this NumPy module never
    needs it.

    Parameters
    ----------
    x_train, x_val : float32 ndarrays of shape (N, 64), pixels in [0, 1]
    y_train, y_val : int ndarrays of shape (N,), labels 0..9
    seed : seeds the weights and the shuffling

    Returns
    -------
    model : the trained ``nn.Module``, in eval mode; it takes (N, 1, 8, 8) and returns (N, 10) logits
    """
    import torch

    from dlcourse.cnn import torch_impl
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = torch_impl.SmallCNN(1, 10, width=32)
    torch.random.set_rng_state(generator_state)
    model, _ = torch_impl.train_cnn(torch_impl.digits_images(x_train), y_train, torch_impl.digits_images(x_val),
                                    y_val, model=model, epochs=15, lr=3e-3, batch_size=32, optimizer="adam",
                                    seed=seed, device="cpu")
    return model
