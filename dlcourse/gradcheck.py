"""Numerical gradients: the referee for every hand-written backward pass.

One checker serves the tests and the notebooks alike.  It works in float64,
because with centred differences the error is O(h^2) from truncation plus
O(eps / h) from rounding; in float64 with h = 1e-6 both are around 1e-10,
while float32 would drown the comparison in rounding noise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_grad", "rel_error"]


def numerical_grad(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                   dout: np.ndarray | float | None = None, h: float = 1e-6) -> np.ndarray:
    """Centred-difference gradient of ``sum(f(x) * dout)`` with respect to ``x``.

    Weighting by an upstream gradient ``dout`` checks a backward pass exactly
    as it is used: ``backward(dout)`` must return this vector-Jacobian product.

    Parameters
    ----------
    f : callable taking an array shaped like ``x`` and returning an array (or scalar)
    x : ndarray of any shape; converted to float64 and perturbed one entry at a time
        (the caller's array is never modified)
    dout : ndarray shaped like ``f(x)``, or None for a scalar ``f`` (weight 1)
    h : step of the centred difference

    Returns
    -------
    grad : ndarray of float64 shaped like ``x``
    """
    x = np.array(x, dtype=np.float64)  # a private copy we may perturb
    weight = 1.0 if dout is None else np.asarray(dout, dtype=np.float64)
    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        old = flat_x[i]
        flat_x[i] = old + h
        plus = np.sum(np.asarray(f(x), dtype=np.float64) * weight)
        flat_x[i] = old - h
        minus = np.sum(np.asarray(f(x), dtype=np.float64) * weight)
        flat_x[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b, eps: float = 1e-12) -> float:
    """Largest elementwise relative error ``|a - b| / max(|a| + |b|, eps)``.

    Around 1e-7 or below means a backward pass is right; 1e-2 or above means it is wrong.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), eps)))
