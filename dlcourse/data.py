"""Datasets for the course: offline defaults first, verified downloads second.

Everything a chapter needs to run works offline:

* :func:`load_digits` - scikit-learn's 8 x 8 handwritten digits (1,797 images),
  which ship inside scikit-learn, split into train / validation / test.
* :func:`make_xor`, :func:`make_spirals`, :func:`make_moons`, :func:`make_circles` -
  small 2-D classification sets, generated from a seed, to see decision boundaries.
* :func:`surface` - 2-D test functions with analytic gradients for the optimisers.
* :func:`load_sample_images` - the two photos that ship with scikit-learn.

Bigger real data (:func:`load_mnist`, :func:`load_fashion_mnist`) goes through
:func:`download`, which caches files, checks their sha256, writes atomically,
resumes interrupted downloads and, when there is no network, says which offline
alternative to use instead.

Legend of dimension letters: N samples, D features (64 for digits, 2 for the
toy sets), H x W image height x width.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "DigitsSplit", "load_digits",
    "make_xor", "make_spirals", "make_moons", "make_circles",
    "Surface", "surface", "SURFACES",
    "load_sample_images", "load_sample_image",
]


# --------------------------------------------------------------------------- digits

class DigitsSplit(NamedTuple):
    """The digits data set split three ways (x: (N, 64) float32 in [0, 1]; y: (N,) int64)."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int = 0) -> DigitsSplit:
    """scikit-learn's handwritten digits, split about 70 / 15 / 15, stratified by class.

    The 1,797 images are 8 x 8 pixels with grey levels 0..16, flattened to 64
    features and divided by 16.  Stratifying keeps the ten classes in the same
    proportions in every part, so a small validation set is not accidentally
    short of one digit.  The split depends only on ``seed``.

    Returns
    -------
    DigitsSplit with x_train (1257, 64), x_val (270, 64), x_test (270, 64) float32
    in [0, 1] and the matching y int64 labels 0..9.
    """
    from sklearn.datasets import load_digits as _sk_load_digits  # imported here: sklearn is slow to import
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # (N, 64) grey levels 0..16 -> [0, 1]
    y = bunch.target.astype(np.int64)
    # First cut off 30 %, then halve it into validation and test.
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.30, stratify=y, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.50, stratify=y_rest, random_state=seed)
    return DigitsSplit(x_train, y_train, x_val, y_val, x_test, y_test)


# ----------------------------------------------------------------------- toy sets

def _finish(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Shuffle the points (so any prefix is a fair mini-batch) and fix the dtypes."""
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order].astype(np.int64)


def make_xor(n: int = 200, noise: float = 0.1, seed: int = 0):
    """The XOR problem: the label is 1 where x and y have opposite signs.

    Points are drawn uniformly in the four quadrants of [-1, 1]^2 (equally many
    per quadrant), labelled, then jittered with Gaussian noise of std ``noise``,
    so a few points near the axes land on the "wrong" side.  No straight line
    separates the classes: a network needs a hidden layer.

    Returns
    -------
    x : (n, 2) float32;  y : (n,) int64 in {0, 1}
    """
    rng = np.random.default_rng(seed)
    quadrant = np.arange(n) % 4                           # balanced quadrants
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])[quadrant]
    x = signs * rng.uniform(0.0, 1.0, size=(n, 2))
    y = (signs[:, 0] != signs[:, 1]).astype(np.int64)     # opposite signs -> class 1
    x = x + noise * rng.standard_normal((n, 2))
    return _finish(x, y, rng)


def make_spirals(n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved spiral arms, one per class.

    Arm ``k`` starts at the origin and winds outwards: the radius grows from 0
    to 1 while the angle turns through 4 radians, starting at ``2 pi k / K``.
    Gaussian noise of std ``noise`` is added to the angle, which blurs the arms
    more at the rim than at the centre.

    Returns
    -------
    x : (n_per_class * n_classes, 2) float32;  y : (n_per_class * n_classes,) int64 in 0..K-1
    """
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.0, 1.0, n_per_class), n_classes)
    y = np.repeat(np.arange(n_classes), n_per_class)
    angle = (2 * np.pi * y / n_classes + 4.0 * radius
             + noise * rng.standard_normal(radius.shape))
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return _finish(x, y, rng)


def make_moons(n: int = 200, noise: float = 0.1, seed: int = 0):
    """Two interleaving half circles ("moons").

    Class 0 is the upper half of the unit circle; class 1 is the lower half,
    shifted right by 1 and up by 0.5, so each moon reaches into the other's
    hollow.  ``n // 2`` points go to class 0 and the rest to class 1; Gaussian
    noise of std ``noise`` is added to both coordinates.

    Returns
    -------
    x : (n, 2) float32;  y : (n,) int64 in {0, 1}
    """
    rng = np.random.default_rng(seed)
    n0 = n // 2
    y = np.r_[np.zeros(n0), np.ones(n - n0)].astype(np.int64)
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(y[:, None] == 0, upper, lower)
    x = x + noise * rng.standard_normal((n, 2))
    return _finish(x, y, rng)


def make_circles(n: int = 200, noise: float = 0.05, factor: float = 0.5, seed: int = 0):
    """Two concentric circles: class 0 on the unit circle, class 1 on radius ``factor``.

    Angles are uniform; Gaussian noise of std ``noise`` is added to both
    coordinates.  A linear model fails; a model that can compute ``x^2 + y^2``
    (or a small MLP) succeeds.

    Returns
    -------
    x : (n, 2) float32;  y : (n,) int64 in {0, 1}
    """
    if not 0 < factor < 1:
        raise ValueError(f"factor must be between 0 and 1 (the inner radius), got {factor}")
    rng = np.random.default_rng(seed)
    n0 = n // 2
    y = np.r_[np.zeros(n0), np.ones(n - n0)].astype(np.int64)
    t = rng.uniform(0.0, 2 * np.pi, size=n)
    radius = np.where(y == 0, 1.0, factor)
    x = radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
    x = x + noise * rng.standard_normal((n, 2))
    return _finish(x, y, rng)


# ------------------------------------------------------------------ 2-D surfaces

class Surface(NamedTuple):
    """A 2-D test function for optimisers.

    ``f(p)`` maps points ``p`` of shape ``(..., 2)`` to values ``(...)``;
    ``grad(p)`` returns the analytic gradient ``(..., 2)``; ``minimum`` (2,) is
    a point where the gradient is zero; ``start`` (2,) a good demo start;
    ``bounds`` = ``(xmin, xmax, ymin, ymax)`` a window for contour plots.
    """
    name: str
    f: Callable[[np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray], np.ndarray]
    minimum: np.ndarray
    start: np.ndarray
    bounds: tuple


def _xy(p):
    p = np.asarray(p, dtype=np.float64)
    if p.shape[-1:] != (2,):
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    return p[..., 0], p[..., 1]


def _rosenbrock(p, a=1.0, b=100.0):
    x, y = _xy(p)
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


def _rosenbrock_grad(p, a=1.0, b=100.0):
    x, y = _xy(p)
    inner = y - x ** 2                                     # the curved valley floor is inner = 0
    return np.stack([-2 * (a - x) - 4 * b * x * inner,     # d/dx
                     2 * b * inner], axis=-1)              # d/dy


# The bowl: a quadratic 10x steeper along y than along x (condition number 10),
# the simplest landscape on which plain gradient descent zig-zags.
_BOWL_SCALE = np.array([1.0, 10.0])


def _bowl(p):
    x, y = _xy(p)
    return 0.5 * (_BOWL_SCALE[0] * x ** 2 + _BOWL_SCALE[1] * y ** 2)


def _bowl_grad(p):
    x, y = _xy(p)
    return np.stack([_BOWL_SCALE[0] * x, _BOWL_SCALE[1] * y], axis=-1)


def _himmelblau(p):
    x, y = _xy(p)
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


def _himmelblau_grad(p):
    x, y = _xy(p)
    u, v = x ** 2 + y - 11, x + y ** 2 - 7                 # the two squared terms
    return np.stack([4 * x * u + 2 * v,                    # du/dx = 2x, dv/dx = 1
                     2 * u + 4 * y * v], axis=-1)          # du/dy = 1,  dv/dy = 2y


def _saddle(p):
    x, y = _xy(p)
    return x ** 2 - y ** 2


def _saddle_grad(p):
    x, y = _xy(p)
    return np.stack([2 * x, -2 * y], axis=-1)


SURFACES = ("rosenbrock", "bowl", "himmelblau", "saddle")


def surface(name: str) -> Surface:
    """A named 2-D test function with its analytic gradient.

    * ``"rosenbrock"``: ``(1 - x)^2 + 100 (y - x^2)^2``.  A long, curved, flat
      valley; the minimum (1, 1) is easy to reach and slow to walk to.
    * ``"bowl"``: ``0.5 (x^2 + 10 y^2)``, an ill-conditioned quadratic (ten
      times steeper along y): plain gradient descent zig-zags, momentum helps.
      Minimum (0, 0).
    * ``"himmelblau"``: ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``, four minima, all
      with value 0: (3, 2) (the one given as ``minimum``), and approximately
      (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126).
      Which one an optimiser finds depends on where it starts.
    * ``"saddle"``: ``x^2 - y^2``.  It has no minimum: ``minimum`` is the
      *saddle point* (0, 0), where the gradient vanishes although the function
      keeps falling along y.  The demo start lies almost on the x axis, so
      gradient descent first slows down near the saddle before it escapes.

    Returns
    -------
    Surface(name, f, grad, minimum, start, bounds)
    """
    table = {
        "rosenbrock": (_rosenbrock, _rosenbrock_grad, (1.0, 1.0), (-1.5, 2.0), (-2.0, 2.0, -1.0, 3.0)),
        "bowl": (_bowl, _bowl_grad, (0.0, 0.0), (-4.5, 1.5), (-5.0, 5.0, -2.5, 2.5)),
        "himmelblau": (_himmelblau, _himmelblau_grad, (3.0, 2.0), (-0.5, -0.5), (-5.0, 5.0, -5.0, 5.0)),
        "saddle": (_saddle, _saddle_grad, (0.0, 0.0), (1.8, 0.01), (-2.0, 2.0, -2.0, 2.0)),
    }
    if name not in table:
        raise ValueError(f"unknown surface {name!r}; choose one of {', '.join(SURFACES)}")
    f, grad, minimum, start, bounds = table[name]
    return Surface(name, f, grad, np.array(minimum), np.array(start), bounds)


# ----------------------------------------------------------------- sample images

_SAMPLE_IMAGES = ("china", "flower")


def load_sample_images() -> list:
    """The two photos that ship with scikit-learn, ``[china, flower]``.

    Returns
    -------
    list of two float32 arrays of shape (H, W, 3) = (427, 640, 3), RGB in [0, 1]
    """
    from sklearn.datasets import load_sample_images as _sk_load_sample_images
    bunch = _sk_load_sample_images()  # uint8 images, in the order of bunch.filenames
    by_name = {_stem(path): image for path, image in zip(bunch.filenames, bunch.images)}
    return [(by_name[name] / 255.0).astype(np.float32) for name in _SAMPLE_IMAGES]


def load_sample_image(name: str) -> np.ndarray:
    """One of scikit-learn's sample photos by name: ``"china"`` or ``"flower"`` (``.jpg`` optional).

    Returns
    -------
    float32 array of shape (H, W, 3), RGB in [0, 1]
    """
    stem = _stem(name)
    if stem not in _SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {', '.join(_SAMPLE_IMAGES)}")
    return load_sample_images()[_SAMPLE_IMAGES.index(stem)]


def _stem(path: str) -> str:
    from pathlib import PurePath
    return PurePath(str(path)).name.rsplit(".", 1)[0].lower()
