"""Training practice around the model, in NumPy: data, initialization, early stopping, search.

What a practitioner does before and after the network itself::

    mean, scale = fit_standardizer(x_train)            # statistics of the TRAINING set only
    x_val_std = apply_standardizer(x_val, mean, scale)  # ... applied to every split
    x_aug = augment_digits(x_batch, rng)                # small shifts, rotations and noise
    W = init_weights(D, H, "he_normal", rng)            # (D, H), variance 2 / D
    stats = depth_statistics(20, 64, "relu", "he_normal", rng=rng)  # scale of signals by depth
    stopper = EarlyStopping(patience=10)                # stop, and keep the best weights
    configs = random_configs({"lr": (1e-4, 1e-1, "log")}, 9, rng)

Dimension letters (the course glossary)
---------------------------------------
N  examples · D input features · H hidden units (width) · L layers
H_img, W_img  image height and width (8 x 8 for the digits)
"""
from __future__ import annotations

import copy
import itertools
import math
from typing import Any, NamedTuple, Optional

import numpy as np

__all__ = [
    "fit_standardizer", "apply_standardizer", "stratified_split", "one_vs_rest_imbalanced",
    "affine_digits", "augment_digits",
    "INIT_SCHEMES", "init_std", "init_weights", "DepthStats", "depth_statistics",
    "EarlyStopping", "grid_configs", "random_configs",
]


# --------------------------------------------------------------------------- data

def fit_standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of the training set, as ``sklearn.preprocessing.StandardScaler``.

    The scale is the standard deviation with ``ddof=0``; a feature that is constant
    on the training set (the digits' border pixels are always 0) gets scale 1, so it
    becomes 0 instead of ``0 / 0 = nan``.

    Parameters
    ----------
    x_train : ndarray of shape (N, D)

    Returns
    -------
    mean, scale : ndarrays of shape (D,)
    """
    mean = x_train.mean(axis=0)             # (D,) one number per feature, over the examples
    std = x_train.std(axis=0)               # (D,)
    scale = np.where(std > 0, std, 1.0).astype(std.dtype)
    return mean, scale


def apply_standardizer(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - mean) / scale`` with statistics fitted by :func:`fit_standardizer`; (N, D) -> (N, D)."""
    return (x - mean) / scale


def stratified_split(y: np.ndarray, fractions=(0.7, 0.15, 0.15),
                     rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
    """Index arrays that split the examples by ``fractions``, each class in the same proportions.

    Every class is shuffled and cut at the same fractions, so a rare class is not
    missing from a small validation or test set by bad luck.

    Parameters
    ----------
    y : int ndarray of shape (N,), the labels
    fractions : positive numbers summing to 1, one per part
    rng : NumPy Generator (default: seed 0)

    Returns
    -------
    list of int ndarrays, one per part, disjoint, together all of range(N), each sorted
    """
    fractions = np.asarray(fractions, dtype=float)
    if np.any(fractions <= 0) or not math.isclose(fractions.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions.tolist()}")
    rng = np.random.default_rng(0) if rng is None else rng
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cuts = np.cumsum(fractions)[:-1]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        bounds = np.round(cuts * len(idx)).astype(int)
        for k, piece in enumerate(np.split(idx, bounds)):
            parts[k].append(piece)
    return [np.sort(np.concatenate(p)) for p in parts]


def one_vs_rest_imbalanced(x: np.ndarray, y: np.ndarray, positive: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A binary task from a multi-class set: "is it digit ``positive``?" (about 10 % positives).

    Returns ``x`` unchanged and ``y_binary`` (N,) int64, 1 for the positive class.
    """
    return x, (y == positive).astype(np.int64)


def affine_digits(x: np.ndarray, degrees: np.ndarray, shift_rows: np.ndarray, shift_cols: np.ndarray,
                  size: int = 8) -> np.ndarray:
    """Rotate each image about its centre and shift it, with bilinear interpolation.

    Vectorised over the batch: for every output pixel we compute where it comes from
    in the input (the inverse transform) and blend the four neighbours; pixels from
    outside the image are 0 (the digits' background).

    Parameters
    ----------
    x : ndarray of shape (N, size * size), flattened images
    degrees : ndarray of shape (N,), counter-clockwise rotation of each image
    shift_rows, shift_cols : ndarrays of shape (N,), shift in pixels (down, right)
    size : H_img = W_img

    Returns
    -------
    ndarray shaped like ``x``, the same dtype
    """
    n = x.shape[0]
    images = x.reshape(n, size, size)                           # (N, H_img, W_img)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))           # (N, H_img+2, W_img+2) zeros around
    centre = (size - 1) / 2
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")   # (H_img, W_img) output grid
    theta = np.deg2rad(np.asarray(degrees, dtype=float))[:, None, None]   # (N, 1, 1)
    dr = r[None] - centre - np.asarray(shift_rows, dtype=float)[:, None, None]
    dc = c[None] - centre - np.asarray(shift_cols, dtype=float)[:, None, None]
    # inverse rotation (rows point down, so counter-clockwise on screen flips the sign of sin)
    src_r = np.cos(theta) * dr + np.sin(theta) * dc + centre      # (N, H_img, W_img)
    src_c = -np.sin(theta) * dr + np.cos(theta) * dc + centre
    src_r = np.clip(src_r + 1, 0, size + 1)                     # +1: the padding; outside -> the zero border
    src_c = np.clip(src_c + 1, 0, size + 1)
    r0, c0 = np.floor(src_r).astype(int), np.floor(src_c).astype(int)
    r1, c1 = np.minimum(r0 + 1, size + 1), np.minimum(c0 + 1, size + 1)
    fr, fc = src_r - r0, src_c - c0
    batch = np.arange(n)[:, None, None]
    out = ((1 - fr) * (1 - fc) * padded[batch, r0, c0] + (1 - fr) * fc * padded[batch, r0, c1]
           + fr * (1 - fc) * padded[batch, r1, c0] + fr * fc * padded[batch, r1, c1])
    return out.reshape(n, size * size).astype(x.dtype)


def augment_digits(x: np.ndarray, rng: np.random.Generator, max_shift: float = 1.0,
                   max_degrees: float = 12.0, noise: float = 0.05) -> np.ndarray:
    """Random small shifts, rotations and pixel noise for 8 x 8 digits in [0, 1].

    Each image gets its own rotation in ``[-max_degrees, max_degrees]``, its own
    shift in ``[-max_shift, max_shift]`` pixels per axis, then Gaussian noise of
    standard deviation ``noise``; the result is clipped back to [0, 1].  A "7"
    moved by a pixel is still a "7": the label does not change, so the network
    sees more of what a digit may look like without a single new label.

    Parameters
    ----------
    x : ndarray of shape (N, 64) in [0, 1]
    rng : NumPy Generator (the augmentation is random: a new draw every call)

    Returns
    -------
    ndarray of shape (N, 64), the dtype of ``x``
    """
    n = x.shape[0]
    degrees = rng.uniform(-max_degrees, max_degrees, n)
    rows = rng.uniform(-max_shift, max_shift, n)
    cols = rng.uniform(-max_shift, max_shift, n)
    out = affine_digits(x, degrees, rows, cols)
    if noise > 0:
        out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(out, 0.0, 1.0).astype(x.dtype)


# --------------------------------------------------------------------------- initialization

INIT_SCHEMES = ("zeros", "small", "large", "xavier_uniform", "xavier_normal", "he_normal", "he_uniform")


def init_std(fan_in: int, fan_out: int, scheme: str) -> float:
    """The standard deviation each scheme gives a weight (0 for zeros).

    Xavier/Glorot (Glorot & Bengio, 2010) keeps the variance of signals and of
    gradients when the activation is linear around 0 (tanh): Var = 2 / (fan_in + fan_out).
    He/Kaiming (He et al., 2015) compensates for ReLU zeroing half its inputs:
    Var = 2 / fan_in.  A uniform on [-a, a] has variance a² / 3.
    """
    if scheme == "zeros":
        return 0.0
    if scheme == "small":
        return 0.01
    if scheme == "large":
        return 1.0
    if scheme in ("xavier_uniform", "xavier_normal"):
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme in ("he_normal", "he_uniform"):
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"unknown init scheme {scheme!r}; choose from {INIT_SCHEMES}")


def init_weights(fan_in: int, fan_out: int, scheme: str, rng: np.random.Generator) -> np.ndarray:
    """A (fan_in, fan_out) weight matrix (D, H), drawn as ``torch.nn.init`` would.

    The course stores a dense layer's weights as (D, H) for ``x @ W``; PyTorch's
    ``nn.Linear.weight`` is (H, D).  The distributions are those of
    ``nn.init.zeros_``, ``normal_(std=0.01)``, ``normal_(std=1)``,
    ``xavier_uniform_``, ``xavier_normal_``, ``kaiming_normal_`` and
    ``kaiming_uniform_`` (``nonlinearity="relu"``, fan_in mode); the tests compare
    them with samples from torch.
    """
    std = init_std(fan_in, fan_out, scheme)
    shape = (fan_in, fan_out)
    if scheme == "zeros":
        return np.zeros(shape)
    if scheme.endswith("uniform"):
        bound = math.sqrt(3.0) * std  # Var(U[-a, a]) = a² / 3
        return rng.uniform(-bound, bound, shape)
    return rng.normal(0.0, std, shape)


class DepthStats(NamedTuple):
    activation_std: np.ndarray  # (L,) std of each layer's output on a batch
    gradient_std: np.ndarray    # (L,) std of the loss gradient w.r.t. each layer's weights
    loss: float


_ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0), lambda z, a: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z, a: 1 - a ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, a: a * (1 - a)),
    "linear": (lambda z: z, lambda z, a: np.ones_like(z)),
}


def depth_statistics(depth: int, width: int, activation: str = "relu", scheme: str = "he_normal",
                     batchnorm: bool = False, residual: bool = False, n: int = 256,
                     rng: Optional[np.random.Generator] = None, x: Optional[np.ndarray] = None,
                     weights: Optional[list[np.ndarray]] = None) -> DepthStats:
    """How big signals and gradients are at each layer of a deep MLP, forward and backward by hand.

    The network is ``depth`` layers of ``h = act(norm(h @ W_l))`` (no biases), each
    ``width`` wide; with ``residual`` each layer adds its input: ``h = h + act(...)``;
    ``batchnorm`` normalises each unit over the batch (train mode, no scale or shift)
    before the activation.  The objective is ``0.5 * mean(h_L ** 2)`` of the last
    layer: what we measure is how the scale of a gradient changes on the way back.

    Parameters
    ----------
    depth : L, number of layers
    width : H, units per layer (the input is H wide as well)
    activation : "relu", "tanh", "sigmoid" or "linear"
    scheme : an :data:`INIT_SCHEMES` entry for the weights
    n : N, batch size of the random standard-normal input
    rng : NumPy Generator (default: seed 0)
    x : (N, H) input instead of a random one; weights : L matrices (H, H) instead of drawn ones

    Returns
    -------
    DepthStats with activation_std (L,), gradient_std (L,) and the loss
    """
    rng = np.random.default_rng(0) if rng is None else rng
    act, dact = _ACTIVATIONS[activation]
    h = rng.standard_normal((n, width)) if x is None else x            # (N, H)
    if weights is None:
        weights = [init_weights(width, width, scheme, rng) for _ in range(depth)]
    eps = 1e-5
    caches, act_std = [], []
    for W in weights:
        z = h @ W                                                       # (N, H)
        if batchnorm:
            mu, var = z.mean(axis=0), z.var(axis=0)
            inv = 1 / np.sqrt(var + eps)
            z_hat = (z - mu) * inv
        else:
            inv, z_hat = None, z
        a = act(z_hat)
        caches.append((h, z_hat, inv, a))
        h = h + a if residual else a
        act_std.append(h.std())
    loss = 0.5 * np.mean(h ** 2)
    dh = h / h.size                                                     # d loss / d h_L
    grad_std = np.zeros(len(weights))
    for layer in range(len(weights) - 1, -1, -1):
        h_in, z_hat, inv, a = caches[layer]
        da = dh
        dz_hat = da * dact(z_hat, a)
        if batchnorm:  # batch norm's backward: the mean's and the variance's paths
            m = dz_hat.shape[0]
            dz = inv * (dz_hat - dz_hat.sum(axis=0) / m - z_hat * (dz_hat * z_hat).sum(axis=0) / m)
        else:
            dz = dz_hat
        grad_std[layer] = (h_in.T @ dz).std()                           # dW_l: (H, H)
        dh_in = dz @ weights[layer].T
        dh = dh + dh_in if residual else dh_in                         # the skip passes dh straight on
    return DepthStats(np.array(act_std), grad_std, float(loss))


# --------------------------------------------------------------------------- early stopping

class EarlyStopping:
    """Stop when the validation loss has not improved for ``patience`` epochs; keep the best weights.

    Call :meth:`step` once per epoch with the validation loss and the model's
    parameters (a dict of arrays, or a PyTorch ``state_dict``).  An improvement is a
    loss lower than the best so far by more than ``min_delta``; the parameters of
    the best epoch are deep-copied, because an optimizer updates arrays in place
    and a mere reference would follow the training to its last, worse state.
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.min_delta = patience, min_delta
        self.best_loss = math.inf
        self.best_epoch: Optional[int] = None
        self.best_params: Any = None
        self.bad_epochs = 0

    def step(self, val_loss: float, epoch: int, params: Any = None) -> bool:
        """Record one epoch; True when training should stop."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = float(val_loss), epoch, 0
            self.best_params = copy.deepcopy(params)
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience


# --------------------------------------------------------------------------- search

def grid_configs(space: dict[str, list], n: Optional[int] = None) -> list[dict]:
    """Every combination of the listed values (the first ``n`` of them, if given)."""
    names = list(space)
    combos = [dict(zip(names, values)) for values in itertools.product(*(space[k] for k in names))]
    return combos if n is None else combos[:n]


def random_configs(space: dict[str, tuple], n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` configurations drawn independently: ``(low, high, "log" | "lin")`` per hyperparameter.

    "log" draws uniformly in log space (a learning rate between 1e-4 and 1e-1 is as
    likely to be near 1e-3 as near 1e-2), "lin" uniformly.  Unlike a grid, every
    trial tries a new value of *every* hyperparameter (Bergstra & Bengio, 2012).
    """
    configs = []
    for _ in range(n):
        config = {}
        for name, (low, high, how) in space.items():
            if how == "log":
                config[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            elif how == "lin":
                config[name] = float(rng.uniform(low, high))
            else:
                raise ValueError(f"{name}: scale must be 'log' or 'lin', got {how!r}")
        configs.append(config)
    return configs
