"""Backpropagation by hand, one layer at a time, in NumPy.

Every layer is a pair of pure functions::

    out, cache = layer_forward(inputs...)
    dinputs... = layer_backward(dout, cache)

``dout`` is the gradient of the (scalar) loss with respect to the layer's
output; the backward function returns the gradient of the loss with respect to
each input.  This is the *vector-Jacobian product*: we never build a Jacobian
matrix, we only multiply the incoming gradient by the local derivative.

Weights use PyTorch's layouts (``torch.nn.Linear.weight`` is ``(out, in)``), so
parameters copy between this file and ``torch_impl.py`` with no transposes.
Every function keeps the dtype of its inputs (float32 when training, float64
when checking gradients).

Dimension letters (the course glossary)
---------------------------------------
N  batch size (number of examples)
D  features of a dense layer's input
H  hidden units: a dense layer's outputs
K  classes (the width of the logits)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from dlcourse.neurons.numpy_impl import sigmoid  # the stable form, built in chapter 01

__all__ = [
    "LinearCache", "linear_forward", "linear_backward",
    "ReluCache", "relu_forward", "relu_backward",
    "SigmoidCache", "sigmoid", "sigmoid_forward", "sigmoid_backward",
    "TanhCache", "tanh_forward", "tanh_backward", "activation_backward",
    "softmax", "log_softmax", "softmax_cross_entropy",
    "init_mlp", "LayerCache", "mlp_forward", "mlp_backward", "mlp_loss_and_grads",
]


# --------------------------------------------------------------------------- linear

class LinearCache(NamedTuple):
    x: np.ndarray  # (N, D) the layer's input
    w: np.ndarray  # (H, D) its weight


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, LinearCache]:
    """Affine layer ``out = x @ w.T + b``, the layout of ``torch.nn.Linear``.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    w : ndarray of shape (H, D)
    b : ndarray of shape (H,)

    Returns
    -------
    out : ndarray of shape (N, H)
    cache : LinearCache holding what the backward pass needs (x and w)
    """
    out = x @ w.T
    out += b  # in place: the matmul already made a fresh array, no need for another
    return out, LinearCache(x, w)


def linear_backward(dout: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of the affine layer.

    Parameters
    ----------
    dout : ndarray of shape (N, H), gradient of the loss w.r.t. ``out``
    cache : LinearCache from :func:`linear_forward`

    Returns
    -------
    dx : ndarray of shape (N, D)
    dw : ndarray of shape (H, D)
    db : ndarray of shape (H,)
    """
    x, w = cache
    dx = dout @ w          # d out[n, h] / d x[n, d] = w[h, d]
    dw = dout.T @ x        # d out[n, h] / d w[h, d] = x[n, d], summed over the batch by the matmul
    db = dout.sum(axis=0)  # the bias is added to every row, so its gradient sums over the batch
    return dx, dw, db


# --------------------------------------------------------------------------- activations

class ReluCache(NamedTuple):
    mask: np.ndarray  # (same shape as x) bool, True where x > 0


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, ReluCache]:
    """Elementwise ``max(x, 0)``; remembers where the input was positive.

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``
    cache : ReluCache with the boolean mask ``x > 0``
    """
    mask = x > 0
    return x * mask, ReluCache(mask)  # one pass: multiplying by the mask zeroes the negatives


def relu_backward(dout: np.ndarray, cache: ReluCache) -> np.ndarray:
    """Gradient of ReLU: the slope is 1 where the input was positive and 0 elsewhere.

    (At exactly 0 we use slope 0, as PyTorch does.)

    Parameters
    ----------
    dout : ndarray shaped like the layer's output
    cache : ReluCache from :func:`relu_forward`

    Returns
    -------
    dx : ndarray shaped like ``dout``
    """
    return dout * cache.mask  # d relu(x) / dx = 1[x > 0]


class SigmoidCache(NamedTuple):
    out: np.ndarray  # the sigmoid's output: its derivative is written in terms of it


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, SigmoidCache]:
    """Elementwise logistic function.

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``, values in (0, 1)
    cache : SigmoidCache with ``out``
    """
    out = sigmoid(x)
    return out, SigmoidCache(out)


def sigmoid_backward(dout: np.ndarray, cache: SigmoidCache) -> np.ndarray:
    """Gradient of the sigmoid: ``d sigmoid(x) / dx = s (1 - s)`` with ``s = sigmoid(x)``."""
    s = cache.out
    return dout * s * (1 - s)


class TanhCache(NamedTuple):
    out: np.ndarray  # tanh(x): its derivative is written in terms of it


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, TanhCache]:
    """Elementwise hyperbolic tangent (``np.tanh`` is stable for any ``x``).

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``, values in (-1, 1)
    cache : TanhCache with ``out``
    """
    out = np.tanh(x)
    return out, TanhCache(out)


def tanh_backward(dout: np.ndarray, cache: TanhCache) -> np.ndarray:
    """Gradient of tanh: ``d tanh(x) / dx = 1 - tanh(x)**2``."""
    t = cache.out
    return dout * (1 - t * t)


def activation_backward(dout: np.ndarray, out: np.ndarray, kind: str) -> np.ndarray:
    """Gradient of an elementwise activation, written with its OUTPUT ``out`` only.

    Parameters
    ----------
    dout : ndarray of any shape, gradient of the loss w.r.t. the activation's output
    out : ndarray shaped like ``dout``, the activation's output
    kind : ``"relu"``, ``"sigmoid"`` or ``"tanh"``

    Returns
    -------
    dx : ndarray shaped like ``dout``
    """
    if kind == "relu":
        return relu_backward(dout, ReluCache(out > 0))  # out > 0 exactly where x > 0
    if kind == "sigmoid":
        return sigmoid_backward(dout, SigmoidCache(out))
    if kind == "tanh":
        return tanh_backward(dout, TanhCache(out))
    raise ValueError(f"kind must be 'relu', 'sigmoid' or 'tanh', got {kind!r}")


# --------------------------------------------------------------------------- softmax and the loss

def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax: each row of ``logits`` becomes a probability distribution.

    Subtracting each row's maximum first changes nothing mathematically
    (``exp(z - m) / sum exp(z - m) = exp(z) / sum exp(z)``) but keeps ``exp``
    from overflowing: the largest exponent is ``exp(0) = 1``.

    Parameters
    ----------
    logits : ndarray of shape (N, K)

    Returns
    -------
    probs : ndarray of shape (N, K), rows sum to 1
    """
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(logits))`` by log-sum-exp, finite even for huge logits.

    ``log softmax(z)_c = z_c - m - log sum_k exp(z_k - m)`` with ``m = max_k z_k``.

    Parameters
    ----------
    logits : ndarray of shape (N, K)

    Returns
    -------
    log_probs : ndarray of shape (N, K)
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy of softmax probabilities, and its gradient w.r.t. the logits.

    ``loss = -(1/N) sum_n log softmax(logits_n)[y_n]``, the same as
    ``torch.nn.functional.cross_entropy(logits, y)``.  Its gradient is
    beautifully simple: ``dlogits = (softmax(logits) - onehot(y)) / N``.

    Parameters
    ----------
    logits : ndarray of shape (N, K), unnormalised scores
    y : int ndarray of shape (N,), the correct class of each example, in [0, K)

    Returns
    -------
    loss : scalar of the logits' dtype, the mean loss over the batch
    dlogits : ndarray of shape (N, K)
    """
    n = logits.shape[0]
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)  # log-sum-exp trick: no overflow
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)                              # (N,), each >= 1
    # -log p_y = log sum_k exp(z_k - m) - (z_y - m)
    loss = (np.log(sum_exp) - shifted[rows, y]).sum() / n
    dlogits = exp                                          # reuse the buffer: becomes softmax, then the gradient
    dlogits /= sum_exp[:, None]                            # softmax(logits)
    dlogits[rows, y] -= 1                                  # minus the one-hot target
    dlogits /= n                                           # the loss is a mean over the batch
    return loss, dlogits


# --------------------------------------------------------------------------- a whole MLP

def init_mlp(sizes: list[int], rng: np.random.Generator, dtype=np.float32) -> list[np.ndarray]:
    """Parameters of an MLP with layer widths ``sizes``, initialised like ``torch.nn.Linear``.

    PyTorch's default for ``Linear(D, H)`` is Kaiming-uniform with ``a = sqrt(5)``,
    which works out to ``w ~ U(-1/sqrt(D), 1/sqrt(D))``, and the bias is drawn
    from the same interval.  We draw from the same distributions (not the same
    numbers: copy them with ``torch_impl.load_params`` to get identical models).

    Parameters
    ----------
    sizes : layer widths, e.g. ``[64, 128, 10]`` (input, hidden..., classes)
    rng : a NumPy Generator, e.g. ``np.random.default_rng(0)``
    dtype : float32 (PyTorch's default, for training) or float64 (for checking)

    Returns
    -------
    params : ``[w1, b1, w2, b2, ...]`` with ``w_i`` of shape (sizes[i], sizes[i-1]) and
        ``b_i`` of shape (sizes[i],); the order of ``list(torch_model.parameters())``
    """
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(dtype))
        params.append(rng.uniform(-bound, bound, size=fan_out).astype(dtype))
    return params


class LayerCache(NamedTuple):
    linear: LinearCache
    relu: Optional[ReluCache]  # None for the output layer, which has no activation


def mlp_forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[LayerCache]]:
    """Forward pass of an MLP: Linear -> ReLU -> ... -> Linear (the logits).

    Parameters
    ----------
    params : ``[w1, b1, ..., wL, bL]`` as made by :func:`init_mlp`
    x : ndarray of shape (N, D)

    Returns
    -------
    logits : ndarray of shape (N, K)
    caches : one LayerCache per layer, for :func:`mlp_backward`
    """
    caches = []
    h = x
    num_layers = len(params) // 2
    for i in range(num_layers):
        h, linear_cache = linear_forward(h, params[2 * i], params[2 * i + 1])
        relu_cache = None
        if i < num_layers - 1:  # every layer but the last one is followed by a ReLU
            h, relu_cache = relu_forward(h)
        caches.append(LayerCache(linear_cache, relu_cache))
    return h, caches


def mlp_backward(dlogits: np.ndarray, caches: list[LayerCache]) -> list[np.ndarray]:
    """Backward pass of an MLP: the layers' backward functions in reverse order.

    Parameters
    ----------
    dlogits : ndarray of shape (N, K), gradient of the loss w.r.t. the logits
    caches : from :func:`mlp_forward`

    Returns
    -------
    grads : ``[dw1, db1, ..., dwL, dbL]``, shaped like the parameters, in their order
    """
    grads: list[np.ndarray] = [None] * (2 * len(caches))  # type: ignore[list-item]
    dh = dlogits
    for i in range(len(caches) - 1, -1, -1):
        linear_cache, relu_cache = caches[i]
        if relu_cache is not None:
            dh = relu_backward(dh, relu_cache)
        if i == 0:  # nobody needs the gradient w.r.t. the input data: skip that matmul
            x = linear_cache.x
            grads[0], grads[1] = dh.T @ x, dh.sum(axis=0)
        else:
            dh, grads[2 * i], grads[2 * i + 1] = linear_backward(dh, linear_cache)
    return grads


def mlp_loss_and_grads(params: list[np.ndarray], x: np.ndarray,
                       y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean softmax cross-entropy of an MLP on a batch, and the gradient of every parameter.

    Parameters
    ----------
    params : ``[w1, b1, ..., wL, bL]``
    x : ndarray of shape (N, D)
    y : int ndarray of shape (N,)

    Returns
    -------
    loss : scalar, the mean loss
    grads : ``[dw1, db1, ..., dwL, dbL]``
    """
    logits, caches = mlp_forward(params, x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    return loss, mlp_backward(dlogits, caches)
