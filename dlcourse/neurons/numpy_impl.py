"""The artificial neuron and the dense layer, from scratch in NumPy (forward only).

A neuron computes a weighted sum of its inputs plus a bias, then bends the
result with a non-linear *activation function*::

    z = x @ w + b          # pre-activation
    a = f(z)               # activation

A dense (fully connected) layer is many neurons side by side, and a multi-layer
perceptron (MLP) is dense layers one after another.  This module holds the
forward pass; the backward pass by hand is chapter 02 (``dlcourse.backprop``).

Every activation comes with its elementwise derivative ``*_grad(x) = f'(x)``,
which chapter 02 multiplies into the incoming gradient.

Weights use PyTorch's layouts: a dense layer's ``w`` is ``(out, in)`` exactly
like ``torch.nn.Linear.weight``, and an MLP's parameters are the flat list
``[w1, b1, w2, b2, ...]``, the order of ``list(model.parameters())``.  Float
inputs keep their dtype (float32 stays float32).

Dimension letters (the course glossary, DESIGN.md)
-----------------
N  batch size (number of examples)
D  features of a dense layer's input (of the network, or of one layer)
H  hidden units: the output features of a dense layer (H_k for layer k)
K  outputs of the network (classes, or regression targets)
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = [
    "relu", "relu_grad", "sigmoid", "sigmoid_grad", "tanh", "tanh_grad", "softplus", "softplus_grad",
    "silu", "silu_grad", "erf", "gelu", "gelu_grad", "gelu_tanh", "gelu_tanh_grad", "ACTIVATIONS",
    "neuron_forward", "dense_forward", "mlp_forward", "collapse_linear", "collapse_stack", "xor_params",
    "parity3_params",
]


def _as_float(x) -> np.ndarray:
    """``x`` as a float array (integers and lists become float64; float32 stays float32)."""
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


# --------------------------------------------------------------------------- ReLU

def relu(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit ``max(x, 0)``, elementwise.

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``
    """
    x = _as_float(x)
    return np.maximum(x, 0)


def relu_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of ReLU: 1 where ``x > 0``, else 0 (at exactly 0 we take 0, as PyTorch does)."""
    x = _as_float(x)
    return (x > 0).astype(x.dtype)


# --------------------------------------------------------------------------- sigmoid

def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))``, stable for any ``x``.

    Written naively, ``exp(-x)`` overflows for ``x = -1000``.  Both forms
    below only ever exponentiate a number <= 0, so nothing overflows:
    ``1 / (1 + e^{-|x|})`` for ``x >= 0`` and ``e^{-|x|} / (1 + e^{-|x|})``
    for ``x < 0`` (multiply the top and bottom of the definition by ``e^x``).

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``, values in (0, 1) (in floating point the ends are reached:
        ``sigmoid(40.0)`` rounds to exactly 1.0, ``sigmoid(-1000.0)`` to 0.0)
    """
    x = _as_float(x)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of the sigmoid, ``s (1 - s)`` with ``s = sigmoid(x)``; at most 1/4, at x = 0."""
    s = sigmoid(x)
    return s * (1 - s)


# --------------------------------------------------------------------------- tanh

def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent, elementwise (``np.tanh`` is already stable); values in [-1, 1].

    It is a sigmoid stretched to (-1, 1): ``tanh(x) = 2 sigmoid(2x) - 1``.
    """
    return np.tanh(_as_float(x))


def tanh_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of tanh, ``1 - tanh(x)^2``; at most 1, at x = 0."""
    t = np.tanh(_as_float(x))
    return 1 - t * t


# --------------------------------------------------------------------------- softplus and SiLU

def softplus(x: np.ndarray) -> np.ndarray:
    """Softplus ``log(1 + exp(x))``, a smooth ReLU, stable for any ``x``.

    ``log(1 + e^x) = max(x, 0) + log(1 + e^{-|x|})``: pull the larger of
    ``e^0`` and ``e^x`` out of the sum, so that the only exponential left is of
    ``-|x| <= 0``.  ``log1p(u)`` is ``log(1 + u)`` without rounding ``1 + u``
    (for ``x = -40``, ``1 + e^{-40}`` is exactly 1.0 in float64).

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``, values > 0
    """
    x = _as_float(x)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softplus_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of softplus: the sigmoid, ``e^x / (1 + e^x)``."""
    return sigmoid(x)


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (also "swish"), ``x * sigmoid(x)``: the input, gated by the sigmoid of itself.

    Equals ``torch.nn.functional.silu``; GELU's close cousin (GELU gates with
    the normal CDF ``Phi`` instead of the sigmoid).

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``
    """
    x = _as_float(x)
    return x * sigmoid(x)


def silu_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of SiLU, by the product rule: ``s + x s (1 - s)`` with ``s = sigmoid(x)``."""
    x = _as_float(x)
    s = sigmoid(x)
    return s * (1 + x * (1 - s))


# --------------------------------------------------------------------------- GELU

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function ``erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt``, vectorised.

    NumPy has no ``erf`` (``math.erf`` takes one number at a time), so we sum
    the everywhere-convergent series

        erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*5*...*(2n+1)).

    All its terms have the sign of ``x``, so no cancellation loses digits: the
    result agrees with ``math.erf`` to about 1e-15.  Each term is the previous
    one times ``2 x^2 / (2n + 3)``; we stop once every term is negligible.  For
    ``|x| >= 6``, ``erf(x)`` is +-1 to double precision (``1 - erf(6) ~ 2e-17``),
    and clipping there keeps the number of terms below about 150.

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``, values in [-1, 1]
    """
    x = _as_float(x)
    xc = np.clip(x.astype(np.float64), -6.0, 6.0)  # float64 inside, whatever the input
    x2 = xc * xc
    term = xc.copy()            # n = 0 term: x
    total = xc.copy()
    n = 0
    while np.any(np.abs(term) > 1e-17 * np.abs(total)):
        term = term * (2 * x2 / (2 * n + 3))
        total = total + term
        n += 1
    out = _TWO_OVER_SQRT_PI * np.exp(-x2) * total
    return np.clip(out, -1.0, 1.0).astype(x.dtype)


def gelu(x: np.ndarray) -> np.ndarray:
    """Gaussian error linear unit, exact form: ``x * Phi(x)``.

    ``Phi(x) = (1 + erf(x / sqrt(2))) / 2`` is the standard normal CDF: the
    input is kept with the probability that a standard normal variable lies
    below it.  This equals ``torch.nn.functional.gelu(x)`` (``approximate="none"``,
    PyTorch's default); :func:`gelu_tanh` is the tanh approximation.

    Parameters
    ----------
    x : ndarray of any shape

    Returns
    -------
    out : ndarray shaped like ``x``
    """
    x = _as_float(x)
    return x * 0.5 * (1 + erf(x / math.sqrt(2)))


def gelu_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of the exact GELU: ``Phi(x) + x phi(x)`` (product rule; ``phi`` is the normal density)."""
    x = _as_float(x)
    cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


_GELU_C = math.sqrt(2 / math.pi)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Equals ``torch.nn.functional.gelu(x, approximate="tanh")`` (the form GPT-2
    used); it differs from the exact :func:`gelu` by less than 5e-4.
    """
    x = _as_float(x)
    return 0.5 * x * (1 + np.tanh(_GELU_C * (x + 0.044715 * x ** 3)))


def gelu_tanh_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of :func:`gelu_tanh` (product rule, then chain rule through tanh)."""
    x = _as_float(x)
    t = np.tanh(_GELU_C * (x + 0.044715 * x ** 3))
    dinner = _GELU_C * (1 + 3 * 0.044715 * x * x)           # d/dx of tanh's argument
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (relu, relu_grad),
    "sigmoid": (sigmoid, sigmoid_grad),
    "tanh": (tanh, tanh_grad),
    "softplus": (softplus, softplus_grad),
    "silu": (silu, silu_grad),
    "gelu": (gelu, gelu_grad),
    "gelu_tanh": (gelu_tanh, gelu_tanh_grad),
}
"""name -> (function, derivative) for every activation of this chapter."""


def _activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name][0]


# --------------------------------------------------------------------------- neurons and layers

def neuron_forward(x: np.ndarray, w: np.ndarray, b: float, activation: str = "sigmoid") -> np.ndarray:
    """One neuron on a batch: ``f(x @ w + b)``.

    Parameters
    ----------
    x : ndarray of shape (N, D), one example per row
    w : ndarray of shape (D,), one weight per input feature
    b : float, the bias
    activation : a name in :data:`ACTIVATIONS`

    Returns
    -------
    a : ndarray of shape (N,), the neuron's output for each example
    """
    z = x @ w + b            # (N,) weighted sum plus bias: the pre-activation
    return _activation(activation)(z)


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A dense layer, ``x @ w.T + b``: H neurons that all read the same inputs.

    Row ``h`` of ``w`` holds the weights of neuron ``h`` (PyTorch's
    ``nn.Linear`` layout), so ``w.T`` lines the inputs up with the weights.
    The bias of shape (H,) broadcasts over the batch: it is added to every row.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    w : ndarray of shape (H, D)
    b : ndarray of shape (H,)

    Returns
    -------
    out : ndarray of shape (N, H), no activation applied
    """
    return x @ w.T + b       # (N, D) @ (D, H) -> (N, H), plus (H,) on every row


def mlp_forward(params: list[np.ndarray], x: np.ndarray, activation: str | Callable = "relu") -> np.ndarray:
    """A multi-layer perceptron: dense layers with an activation between them.

    The hidden layers apply ``activation``; the output layer does not, so the
    network returns raw scores (logits, or a regression output) that a loss
    function interprets.  (Chapter 02's ``dlcourse.backprop.numpy_impl.mlp_forward``
    also returns the caches its backward pass needs; this one returns only the output.)

    Parameters
    ----------
    params : list [w1, b1, w2, b2, ...], ``w_k`` of shape (H_k, H_{k-1}) and ``b_k`` of
        shape (H_k,), with H_0 = D; the order of ``list(torch_model.parameters())``
    x : ndarray of shape (N, D)
    activation : the function used after every hidden layer (``relu``, ``np.tanh``, ...),
        or its name in :data:`ACTIVATIONS`

    Returns
    -------
    out : ndarray of shape (N, K), K = H_L the last layer's width
    """
    if len(params) % 2:
        raise ValueError("params must be pairs [w1, b1, w2, b2, ...]")
    f = activation if callable(activation) else _activation(activation)
    h = x
    num_layers = len(params) // 2
    for k in range(num_layers):
        w, b = params[2 * k], params[2 * k + 1]
        h = dense_forward(h, w, b)        # (N, H_k)
        if k < num_layers - 1:            # hidden layer: bend; output layer: leave linear
            h = f(h)
    return h


def collapse_linear(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The single linear layer equal to two stacked linear layers with no activation between.

    ``(x W1^T + b1) W2^T + b2 = x (W2 W1)^T + (W2 b1 + b2)``: depth without
    non-linearity buys nothing.

    Parameters
    ----------
    w1 : ndarray of shape (H, D);  b1 : ndarray of shape (H,)   the first layer
    w2 : ndarray of shape (K, H);  b2 : ndarray of shape (K,)   the second layer

    Returns
    -------
    w : ndarray of shape (K, D)
    b : ndarray of shape (K,)
    """
    w = w2 @ w1              # (K, H) @ (H, D): the second layer acts on the first one's output
    b = w2 @ b1 + b2         # the first bias also passes through the second layer's weights
    return w, b


def collapse_stack(params: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The single linear layer equal to a whole stack of linear layers (no activations).

    Applies :func:`collapse_linear` from the first layer on: the layers seen so
    far are one layer ``(w, b)``, and the next layer ``(w_k, b_k)`` turns it into
    ``(w_k w, w_k b + b_k)``.

    Parameters
    ----------
    params : list [w1, b1, ..., wL, bL], ``w_k`` of shape (H_k, H_{k-1}), H_0 = D, H_L = K

    Returns
    -------
    w : ndarray of shape (K, D)
    b : ndarray of shape (K,)
    """
    w, b = params[0], params[1]
    for k in range(2, len(params), 2):
        w, b = collapse_linear(w, b, params[k], params[k + 1])
    return w, b


def xor_params() -> list[np.ndarray]:
    """Hand-set weights of a 2-2-1 ReLU network that computes XOR exactly on {0, 1}^2.

    Hidden unit 1 is ``relu(x1 - x2)`` and hidden unit 2 is ``relu(x2 - x1)``:
    at most one of them fires, and their sum is ``|x1 - x2|``, which is 1
    exactly when the inputs differ.  Use with ``mlp_forward(params, x)``.

    Returns
    -------
    params : [w1 (2, 2), b1 (2,), w2 (1, 2), b2 (1,)]
    """
    w1 = np.array([[1.0, -1.0],
                   [-1.0, 1.0]])
    b1 = np.zeros(2)
    w2 = np.array([[1.0, 1.0]])
    b2 = np.zeros(1)
    return [w1, b1, w2, b2]


def parity3_params() -> list[np.ndarray]:
    """Hand-set weights of a 3-3-1 ReLU network: the parity of three bits (1 for an odd count).

    Every hidden unit reads the count ``s = x1 + x2 + x3``, scaled by 0.6; the
    units switch on at ``s = -0.5, 0.5, 1.5`` (half-way between the counts) and
    the output adds their slopes up to a zigzag through the points (0, 0),
    (1, 1), (2, 0), (3, 1): ``(5 relu(s + 1/2) - 8 relu(s - 1/2) + 4 relu(s - 3/2)) - 5/2``.

    The scale 0.6 and the half-integer kinks are deliberate: this is a valid
    answer that nobody writes by hand, so that the exercise's check can tell a
    copy of these very arrays (equal to the last bit) from the learner's own
    weights.

    Returns
    -------
    params : [w1 (3, 3), b1 (3,), w2 (1, 3), b2 (1,)]
    """
    scale = 0.6
    w1 = scale * np.ones((3, 3))
    b1 = scale * np.array([0.5, -0.5, -1.5])
    w2 = np.array([[5.0, -8.0, 4.0]]) / scale
    b2 = np.array([-2.5])
    return [w1, b1, w2, b2]
