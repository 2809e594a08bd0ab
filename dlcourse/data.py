"""Datasets for the course: offline defaults first, verified downloads second.

Everything a chapter needs to run works offline:

* :func:`load_digits` - scikit-learn's 8 x 8 handwritten digits (1,797 images),
  which ship inside scikit-learn, split into train / validation / test.
* :func:`make_xor`, :func:`make_spirals`, :func:`make_moons`, :func:`make_circles` -
  small 2-D classification sets, generated from a seed, to see decision boundaries.
* :func:`surface` - 2-D test functions with analytic gradients for the optimisers.
* :func:`load_sample_images` - the two photos that ship with scikit-learn.
* :func:`load_text_corpus` - a character corpus that ships with Python (the standard
  library's own source), split by chunks, for the language models of chapters 06 and 07.

Bigger real data (:func:`load_mnist`, :func:`load_fashion_mnist`, :func:`load_cifar10`) goes through
:func:`download`, which caches files, checks their sha256, writes atomically,
resumes interrupted downloads and, when there is no network, says which offline
alternative to use instead.

Dimension letters (the course-wide glossary of DESIGN.md): N samples, D features
(64 for digits, 2 for the toy sets), H_img x W_img image height x width (never a
bare H, which means hidden units everywhere in the course), C channels.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "DigitsSplit", "load_digits",
    "make_xor", "make_spirals", "make_moons", "make_circles",
    "Surface", "surface", "SURFACES",
    "load_sample_images", "load_sample_image",
    "DownloadError", "IdxFormatError", "default_cache_dir", "download", "sha256_of",
    "read_idx", "load_mnist", "load_fashion_mnist", "ScaleUpData", "mnist_or_digits",
    "ArchiveFormatError", "CIFAR10_CLASSES", "load_cifar10",
    "TextCorpus", "TEXT_VOCAB", "UNKNOWN_CHAR", "TEXT_CORPORA", "stdlib_files", "load_text_corpus",
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
    list of two float32 arrays of shape (H_img, W_img, 3) = (427, 640, 3), RGB in [0, 1]
    """
    from sklearn.datasets import load_sample_images as _sk_load_sample_images
    bunch = _sk_load_sample_images()  # uint8 images, in the order of bunch.filenames
    by_name = {_stem(path): image for path, image in zip(bunch.filenames, bunch.images)}
    return [(by_name[name] / 255.0).astype(np.float32) for name in _SAMPLE_IMAGES]


def load_sample_image(name: str) -> np.ndarray:
    """One of scikit-learn's sample photos by name: ``"china"`` or ``"flower"`` (``.jpg`` optional).

    Returns
    -------
    float32 array of shape (H_img, W_img, 3), RGB in [0, 1]
    """
    stem = _stem(name)
    if stem not in _SAMPLE_IMAGES:
        raise ValueError(f"unknown sample image {name!r}; choose one of {', '.join(_SAMPLE_IMAGES)}")
    return load_sample_images()[_SAMPLE_IMAGES.index(stem)]


def _stem(path: str) -> str:
    from pathlib import PurePath
    return PurePath(str(path)).name.rsplit(".", 1)[0].lower()


# ------------------------------------------------------------------ text corpus
#
# Chapters 06 (RNNs) and 07 (Transformers) train character language models on the same
# text and the same split, so that their held-out losses compare.  The text must ship with
# every Python install (offline, no download): by default the source code of the standard
# library that is running this very interpreter.

# The vocabulary: newline, the 95 printable ASCII characters and one "unknown" character
# for everything else (tabs, accents, box-drawing...; about 0.01 % of the standard library).
# Fixed, not read from the text, so every corpus and every Python version shares it.
UNKNOWN_CHAR = "\u00bf"  # an inverted question mark
TEXT_VOCAB = "\n" + "".join(chr(c) for c in range(32, 127)) + UNKNOWN_CHAR  # V = 97

# Top-level standard-library modules left out of the "stdlib" corpus: test helpers, files
# generated per machine (_sysconfigdata_*), ROT13 (this.py), and anything bigger than
# _STDLIB_MAX_FILE_CHARS (_pydecimal.py, turtle.py, ...: one file would fill much of the text).
_STDLIB_SKIP_PREFIXES = ("test", "_sysconfigdata", "__phello__")
_STDLIB_SKIP = frozenset({"this.py", "antigravity.py", "__hello__.py"})
_STDLIB_MAX_FILE_CHARS = 100_000
TEXT_CORPORA = ("stdlib", "pydoc_topics")


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A character-level corpus, split by chunks into train / validation / test.

    Attributes
    ----------
    name : ``"stdlib"`` or ``"pydoc_topics"`` (or what :meth:`from_text` was given)
    vocab : str of the V characters; id ``i`` is ``vocab[i]`` (the last is :data:`UNKNOWN_CHAR`)
    train, val, test : (N_train,), (N_val,), (N_test,) int64 ids (see :meth:`encode`)
    source : where the text came from (e.g. the interpreter's standard-library folder and files)
    python_version : the interpreter that produced the text (the corpus differs between versions)
    num_chars : characters in the whole text (= N_train + N_val + N_test)
    sha256 : hex digest of the whole text (UTF-8, after unknown characters were mapped):
        a result can name exactly what it was measured on
    chunk_size, fractions, seed : the split rule (see :func:`load_text_corpus`)
    """

    name: str
    vocab: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    python_version: str
    num_chars: int
    sha256: str
    chunk_size: int
    fractions: tuple
    seed: int

    @property
    def vocab_size(self) -> int:
        """V, the number of distinct ids."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Text -> (len(text),) int64 ids; characters outside the vocabulary become the unknown id."""
        return _encode_chars(text, self.vocab)

    def decode(self, ids) -> str:
        """Ids (any int array or sequence, flattened) -> text."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        return "".join(np.asarray(list(self.vocab))[ids]) if ids.size else ""

    def text(self, split: str = "train") -> str:
        """The decoded text of ``"train"``, ``"val"`` or ``"test"`` (its chunks joined in order)."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        return self.decode(getattr(self, split))

    def describe(self) -> str:
        """One paragraph naming the text, its size, the split rule and the sha256."""
        train, val, test = (round(100 * f) for f in self.fractions)
        return (f"corpus {self.name!r}: {self.source} (Python {self.python_version}); "
                f"{self.num_chars:,} characters, V = {self.vocab_size}; "
                f"split by chunks of {self.chunk_size:,} characters, assigned {train}/{val}/{test} "
                f"by a permutation with seed {self.seed}: train {len(self.train):,}, "
                f"val {len(self.val):,}, test {len(self.test):,} characters; sha256 {self.sha256}")

    @classmethod
    def from_text(cls, text: str, *, name: str = "text", source: str = "given text", chunk_size: int = 2000,
                  fractions: tuple = (0.9, 0.05, 0.05), seed: int = 0) -> "TextCorpus":
        """Split any text the same way (for tests and for your own corpus)."""
        return _split_corpus(text, name, source, chunk_size, fractions, seed)


def _encode_chars(text: str, vocab: str) -> np.ndarray:
    """Map each character to its id through a 65,536-entry table (one NumPy gather, no Python loop)."""
    table = np.full(0x110000 if any(ord(c) > 0xFFFF for c in vocab) else 0x10000, len(vocab) - 1, dtype=np.int64)
    for i, c in enumerate(vocab):
        table[ord(c)] = i
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (len(text),)
    return table[np.minimum(codes, len(table) - 1)]


def _split_corpus(text: str, name: str, source: str, chunk_size: int, fractions, seed: int) -> TextCorpus:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three shares (train, val, test) summing to 1, got {fractions}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    ids = _encode_chars(text, TEXT_VOCAB)                                       # (num_chars,)
    clean = "".join(np.asarray(list(TEXT_VOCAB))[ids]) if ids.size else ""      # unknowns mapped
    n_chunks = -(-len(ids) // chunk_size)                                       # the last may be short
    n_val = round(fractions[1] * n_chunks)
    n_test = round(fractions[2] * n_chunks)
    if n_chunks - n_val - n_test < 1 or (fractions[1] and not n_val) or (fractions[2] and not n_test):
        raise ValueError(f"{len(ids):,} characters make only {n_chunks} chunks of {chunk_size}: "
                         f"too few for the split {fractions}; use a smaller chunk_size")
    order = np.random.default_rng(seed).permutation(n_chunks)
    parts = {"val": np.sort(order[:n_val]), "test": np.sort(order[n_val:n_val + n_test]),
             "train": np.sort(order[n_val + n_test:])}                         # chunk numbers, in text order

    def gather(chunks):
        if not len(chunks):
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([ids[c * chunk_size:(c + 1) * chunk_size] for c in chunks])

    return TextCorpus(name=name, vocab=TEXT_VOCAB, train=gather(parts["train"]), val=gather(parts["val"]),
                      test=gather(parts["test"]), source=source, python_version=_python_version(),
                      num_chars=len(ids), sha256=hashlib.sha256(clean.encode("utf-8")).hexdigest(),
                      chunk_size=chunk_size, fractions=fractions, seed=seed)


def _python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def stdlib_files() -> list[Path]:
    """The standard-library modules the ``"stdlib"`` corpus reads, in order.

    The top-level ``*.py`` files of the running interpreter's standard library
    (``sysconfig.get_paths()["stdlib"]``), sorted by name, without test helpers
    (``test*``), machine-generated files (``_sysconfigdata_*``), ``this.py`` / ``antigravity.py``
    / ``__hello__.py`` (jokes and demos) and files over 100,000 characters.
    """
    import sysconfig
    folder = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(folder.glob("*.py")):
        if path.name in _STDLIB_SKIP or path.name.startswith(_STDLIB_SKIP_PREFIXES):
            continue
        if len(path.read_text(encoding="utf-8", errors="replace")) > _STDLIB_MAX_FILE_CHARS:
            continue
        files.append(path)
    return files


def _stdlib_text(max_chars: int | None) -> tuple[str, str]:
    files = stdlib_files()
    if not files:
        raise FileNotFoundError("no standard-library source found (an install without .py files?); "
                                "use load_text_corpus('pydoc_topics')")
    texts, total, used = [], 0, []
    for path in files:
        part = path.read_text(encoding="utf-8", errors="replace")
        if not part.endswith("\n"):
            part += "\n"
        texts.append(part)
        used.append(path.name)
        total += len(part)
        if max_chars is not None and total >= max_chars:
            break
    text = "".join(texts)[:max_chars]
    source = (f"standard-library source {files[0].parent}, {len(used)} top-level modules "
              f"{used[0]} .. {used[-1]} (sorted, whole files, concatenated"
              f"{f', cut at {max_chars:,} characters' if max_chars is not None else ''})")
    return text, source


def _pydoc_topics_text(max_chars: int | None) -> tuple[str, str]:
    from pydoc_data.topics import topics  # the help() texts of Python's language reference
    text = "".join(topics[key].rstrip("\n") + "\n\n" for key in sorted(topics))[:max_chars]
    return text, f"pydoc_data.topics, {len(topics)} help topics sorted by name, joined with blank lines"


def load_text_corpus(name: str = "stdlib", *, max_chars: int | None = 2_000_000, chunk_size: int = 2000,
                     fractions: tuple = (0.9, 0.05, 0.05), seed: int = 0) -> TextCorpus:
    """A character corpus that ships with Python, split into train / validation / test by chunks.

    * ``"stdlib"`` (default): the source code of the standard library of the interpreter
      running this (:func:`stdlib_files`: top-level modules sorted by name, whole files
      concatenated), cut at ``max_chars``.  Python code: indentation, names, docstrings,
      comments.
    * ``"pydoc_topics"``: the English help texts of ``pydoc_data.topics`` (what ``help("if")``
      shows; about 0.5 MB of prose with code examples).

    **The text depends on the Python version** (each release edits its standard library:
    the course's machine runs 3.11, CI also 3.13, Colab 3.12): a number measured on one
    version is only comparable with the same version.  :meth:`TextCorpus.describe` names
    the version, the size and the text's sha256, so a result says exactly what it was
    measured on.

    **The split**: the text is cut into chunks of ``chunk_size`` characters (the last may be
    shorter); a permutation drawn from ``seed`` sends ``fractions[1]`` of the chunks to
    validation, ``fractions[2]`` to test and the rest to training; each part keeps its
    chunks in text order.  Chunks, not whole files: a model sees every module's style in
    training, and is measured on passages it has not seen (a split by whole modules
    measured 1.06 nats/char on training text against 1.80 on held-out modules: each module
    has its own names and habits).

    Characters are mapped to ids over the fixed vocabulary :data:`TEXT_VOCAB` (V = 97:
    newline, printable ASCII, and :data:`UNKNOWN_CHAR` for anything else).

    Parameters
    ----------
    name : ``"stdlib"`` or ``"pydoc_topics"``
    max_chars : keep the first this many characters (None: all; ``"stdlib"`` has about
        3.5 million on Python 3.11)
    chunk_size, fractions, seed : the split rule above

    Returns
    -------
    TextCorpus with ``train`` / ``val`` / ``test`` (N_part,) int64 ids, ``vocab``, ``encode``,
    ``decode``, ``text(split)`` and ``describe()``
    """
    if name == "stdlib":
        text, source = _stdlib_text(max_chars)
    elif name == "pydoc_topics":
        text, source = _pydoc_topics_text(max_chars)
    else:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(TEXT_CORPORA)}")
    return _split_corpus(text, name, source, chunk_size, fractions, seed)


# --------------------------------------------------------------------- downloads
#
# A download that a course depends on must not corrupt its cache when it is
# interrupted, must notice a wrong or damaged file, and must say what to do
# when there is no network.  So: the bytes go to ``<name>.part`` next to the
# final file, are checked against a known sha256, and only then renamed into
# place with ``os.replace`` (atomic on one file system: the final name holds
# either nothing or the complete, verified file).  A ``.part`` left behind by an
# interrupted download is continued with an HTTP Range request.

OFFLINE_HINT = "use dlcourse.data.load_digits(), which ships with scikit-learn"
_CHUNK = 1 << 16               # 64 KiB per read
_PROGRESS_MIN_BYTES = 1 << 20  # no progress bar below 1 MiB
_USER_AGENT = "dlcourse/0.1 (+python urllib)"


class DownloadError(OSError):
    """A file could not be downloaded, or what arrived is not the expected file."""


def default_cache_dir() -> Path:
    """Where downloads are kept: ``$DLCOURSE_DATA`` if set, else ``~/.cache/dlcourse``."""
    env = os.environ.get("DLCOURSE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlcourse"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Incomplete(Exception):
    """The connection ended before all promised bytes arrived (the .part is kept to resume)."""


def _show_progress(total: int | None) -> bool:
    if total is not None and total < _PROGRESS_MIN_BYTES:
        return False
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _fetch(url: str, part: Path, timeout: float, progress: bool | None) -> bool:
    """Stream ``url`` into ``part``, continuing an existing ``part`` if the server allows it.

    Returns True when the file was resumed (its first bytes came from an earlier try).
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # "range not satisfiable": the .part is useless
            part.unlink()
            return _fetch(url, part, timeout, progress)
        raise
    with response:
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:  # the server resumed somewhere else: start over
                part.unlink()
                response.close()
                return _fetch(url, part, timeout, progress)
            mode, resumed = "ab", True
        else:  # 200: the server ignored the Range header and sends everything
            mode, have, resumed = "wb", 0, False
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        from tqdm.auto import tqdm
        show = _show_progress(total) if progress is None else progress
        with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                           unit_divisor=1024, desc=part.name[:-len(".part")],
                                           disable=not show, leave=False) as bar:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
            written = out.tell()
    if total is not None and written < total:
        raise _Incomplete(f"connection closed after {written} of {total} bytes")
    return resumed


def _content_range_start(header: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``, or None."""
    try:
        return int(header.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


# Failures worth another try: the network, not the request.
_TRANSIENT = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
              http.client.HTTPException, _Incomplete)


def download(url: str | Sequence[str], sha256: str, filename: str | None = None,
             cache_dir: str | os.PathLike | None = None, timeout: float = 30, retries: int = 2,
             *, progress: bool | None = None, offline_hint: str = OFFLINE_HINT) -> Path:
    """Download a file once, verify it, and return its path in the cache.

    Parameters
    ----------
    url : the address, or a list of mirrors tried in order
    sha256 : expected hex digest; a cached file is only used if it matches
    filename : name in the cache (default: the last part of the first URL)
    cache_dir : folder (default :func:`default_cache_dir`); created if missing
    timeout : seconds to wait for the server on connect and on each read
    retries : extra attempts per mirror after a network failure (short back-off)
    progress : force the progress bar on / off (default: on in a terminal or
        notebook for files of 1 MiB or more)
    offline_hint : what to suggest in the error when nothing can be downloaded

    Returns
    -------
    Path of the verified file.

    Raises
    ------
    DownloadError (an ``OSError``) when every mirror failed, naming the URLs, the
    reason and the offline alternative; or when no mirror gave bytes that match
    ``sha256`` (each bad file is deleted, and the next mirror is tried first).
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("download() needs at least one URL")
    sha256 = sha256.lower()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = filename or urllib.request.url2pathname(urls[0].rstrip("/").rsplit("/", 1)[-1])
    target = folder / name
    part = folder / (name + ".part")

    if target.exists():
        if sha256_of(target) == sha256:
            return target          # cache hit: no network at all
        target.unlink()            # stale or damaged: fetch again

    folder.mkdir(parents=True, exist_ok=True)
    failures, mismatches = [], []
    for address in urls:
        attempts_left, pause = retries + 1, 0.25
        while attempts_left > 0:
            attempts_left -= 1
            try:
                resumed = _fetch(address, part, timeout, progress)
            except urllib.error.HTTPError as err:
                failures.append(f"{address}: HTTP {err.code} {err.reason}")
                if err.code >= 500 and attempts_left:  # a server hiccup may pass
                    time.sleep(pause)
                    continue
                break              # the server answered "no": another try will not help
            except _TRANSIENT as err:
                reason = getattr(err, "reason", None) or err
                failures.append(f"{address}: {type(err).__name__}: {reason}")
                if attempts_left:  # short, growing pause before the next try
                    time.sleep(pause)
                    pause = min(2 * pause, 2.0)
                continue
            got = sha256_of(part)
            if got == sha256:
                os.replace(part, target)  # atomic: the final name never holds a partial file
                return target
            part.unlink()
            if resumed:  # the leftover .part may have been another file: one fresh try, free
                attempts_left += 1
                continue
            # A wrong file (an HTML error page served with status 200, a changed
            # file): no retry of this mirror helps, but the next mirror may be right.
            mismatches.append(f"{address}: got sha256 {got}")
            break
    if mismatches:
        raise DownloadError(
            f"checksum mismatch for {name}: expected sha256 {sha256}, but\n  "
            + "\n  ".join(mismatches + failures)
            + f"\nThe damaged file was removed; call again to retry, or, offline, {offline_hint}.")
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"could not download {name} (tried {len(failures)} time(s)):\n  {tried}\n"
        f"Check the internet connection and try again. Offline? {offline_hint}, "
        f"or copy the file {name} (sha256 {sha256}) to {target}.")


# ------------------------------------------------------------- IDX / MNIST family

class IdxFormatError(ValueError):
    """A file is not a valid (gzipped) IDX file: wrong magic number, truncated, ..."""


# The IDX format (used by MNIST): 2 zero bytes, one byte for the element type,
# one byte for the number of dimensions, then each dimension as a big-endian
# uint32, then the data in C order, big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzipped if the name ends in ``.gz``) into an array.

    The header's magic number is checked (and, with ``expect_ndim``, the number
    of dimensions: 3 for MNIST images, 1 for labels), and so is the data length,
    so a damaged file fails with :class:`IdxFormatError` naming it instead of
    producing garbage.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise IdxFormatError(f"{path} is damaged, cannot decompress it ({err}); "
                             f"delete it and load again to re-download.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        magic = int.from_bytes(raw[:4].ljust(4, b"\0"), "big")
        raise IdxFormatError(f"{path} is not an IDX file: magic number 0x{magic:08x} "
                             f"(expected 0x000008NN for unsigned bytes); delete it and load again.")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise IdxFormatError(f"{path} holds a {ndim}-D array, expected {expect_ndim}-D "
                             f"(magic number 0x{int.from_bytes(raw[:4], 'big'):08x}).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path} is truncated inside its header; delete it and load again.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxFormatError(f"{path} has {len(raw) - header} data bytes, but its header "
                             f"announces shape {shape} = {expected} bytes: the file is damaged; "
                             f"delete it and load again.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# Checksums: sha256 of the original gz files, as listed by TensorFlow Datasets in
# tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt (commit 31f1255e)
# and .../fashion_mnist.txt (commit 333639b3) - with the sizes 9912422, 28881,
# 1648877, 4542 (MNIST) and 26421880, 29515, 4422102, 5148 bytes (Fashion-MNIST).
MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_SPLIT_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _load_idx_pair(subdir: str, mirrors: Sequence[str], checksums: dict, split: str,
                   cache_dir, timeout: float):
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / subdir
    arrays = []
    for name, ndim in zip(_SPLIT_FILES[split], (3, 1)):
        path = download([m + name for m in mirrors], checksums[name], filename=name,
                        cache_dir=folder, timeout=timeout)
        arrays.append(read_idx(path, expect_ndim=ndim))
    images, labels = arrays
    if len(images) != len(labels):
        raise IdxFormatError(f"{len(images)} images but {len(labels)} labels in {folder}")
    x = (images / np.float32(255.0)).astype(np.float32)  # (N, 28, 28) in [0, 1]
    return x, labels.astype(np.int64)


def load_mnist(split: str = "train", cache_dir: str | os.PathLike | None = None,
               timeout: float = 30):
    """MNIST handwritten digits (60,000 train / 10,000 test), downloaded once and cached.

    Returns
    -------
    x : (N, 28, 28) float32 in [0, 1];  y : (N,) int64 labels 0..9

    Needs the network the first time (about 11 MB); offline, use
    :func:`load_digits`, the 8 x 8 digits that ship with scikit-learn.
    """
    return _load_idx_pair("mnist", MNIST_MIRRORS, MNIST_SHA256, split, cache_dir, timeout)


class ScaleUpData(NamedTuple):
    """Images for a chapter's GPU ``scale_up`` study (x: (N, side, side) or (N, side * side) in [0, 1])."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str            # what it is, for the study's report
    side: int            # 28 for MNIST, 8 for the digits


def mnist_or_digits(seed: int = 0) -> ScaleUpData:
    """MNIST (train and test) when it can be had, else the 8 x 8 digits, saying so in one line.

    The chapters' ``scale_up`` studies run on a GPU where MNIST is worth its download; offline (or
    when the download fails) they fall back to :func:`load_digits` (split by ``seed``) instead of failing.
    """
    try:
        (x_tr, y_tr), (x_te, y_te) = load_mnist("train"), load_mnist("test")
        return ScaleUpData(x_tr, y_tr, x_te, y_te, "MNIST (60,000 x 28 x 28)", 28)
    except Exception as err:  # offline: no download
        print(f"scale_up: MNIST not available ({type(err).__name__}), using the 8 x 8 digits")
        d = load_digits(seed)
        return ScaleUpData(d.x_train, d.y_train, d.x_test, d.y_test, "digits (1,257 x 8 x 8)", 8)


def load_fashion_mnist(split: str = "train", cache_dir: str | os.PathLike | None = None,
                       timeout: float = 30):
    """Fashion-MNIST (Zalando's clothing images, same format and size as MNIST).

    Returns
    -------
    x : (N, 28, 28) float32 in [0, 1];  y : (N,) int64 labels 0..9, named in
    ``FASHION_MNIST_CLASSES``
    """
    return _load_idx_pair("fashion_mnist", FASHION_MNIST_MIRRORS, FASHION_MNIST_SHA256,
                          split, cache_dir, timeout)



# ---------------------------------------------------------------------- CIFAR-10

class ArchiveFormatError(ValueError):
    """A verified download does not hold what it should (a missing member, an unexpected object)."""


# The "python version" of CIFAR-10 from its authors' page (Krizhevsky 2009): a tar.gz of
# 170,498,071 bytes holding cifar-10-batches-py/data_batch_1..5 and test_batch, each a pickled
# dict {b"data": uint8 (10000, 3072), b"labels": list of 10,000 ints, ...}.  The sha256 is the
# one Keras verifies the same URL against: keras-team/keras, keras/src/datasets/cifar10.py
# (commit 7e4b17c5; also tensorflow/tensorflow, tensorflow/python/keras/datasets/cifar10.py).
# (TensorFlow Datasets' url_checksums/cifar10.txt lists the *binary* version instead.)
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_OFFLINE_HINT = ("use dlcourse.data.load_digits() (8 x 8 grey digits) or "
                        "dlcourse.data.load_sample_images() (two colour photos), which ship with scikit-learn")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays, nothing else.

    A pickle can name any importable callable and have it called while loading.  Even after
    the sha256 matched, we allow only the three globals a pickled ndarray needs, so a
    damaged or substituted file cannot run code: anything else raises.
    """

    _ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                          ("numpy", "ndarray"), ("numpy", "dtype")})

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch "
                                         f"holds only dicts, lists, bytes and NumPy arrays")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own reconstructor, whatever its module
        return getattr(np, name)


def _read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (n, 3, 32, 32) uint8 and labels (n,) int64."""
    try:
        # encoding="bytes": the batches were pickled by Python 2, whose str keys become bytes
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # UnpicklingError, EOFError, ...: whatever it is, the file is wrong
        raise ArchiveFormatError(f"{where} is not a CIFAR-10 batch ({type(err).__name__}: {err}); "
                                 f"delete the archive and load again.") from None
    if not isinstance(batch, dict):
        raise ArchiveFormatError(f"{where} holds a {type(batch).__name__}, expected a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ArchiveFormatError(f"{where} has keys {sorted(batch)}, expected 'data' and 'labels'")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise ArchiveFormatError(f"{where}: data is {images.dtype} {images.shape}, "
                                 f"expected uint8 (n, 3072)")
    if labels.shape != (len(images),) or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise ArchiveFormatError(f"{where}: {labels.shape[0]} labels for {len(images)} images, "
                                 f"or labels outside 0..9")
    # each row is 1024 red, then 1024 green, then 1024 blue values, rows of the image in order
    return images.reshape(-1, 3, 32, 32), labels


def load_cifar10(split: str = "train", cache_dir: str | os.PathLike | None = None,
                 timeout: float = 30):
    """CIFAR-10: 32 x 32 colour photos in 10 classes (50,000 train / 10,000 test).

    Downloads the authors' archive once (about 170 MB), checks its sha256 (every call:
    a damaged cache is fetched again), then reads the pickled batches straight from the
    archive, with an unpickler that accepts only plain containers and NumPy arrays.

    Returns
    -------
    x : (N, 3, 32, 32) float32 in [0, 1], NCHW (channels R, G, B), N = 50,000 or 10,000
    y : (N,) int64 labels 0..9, named in ``CIFAR10_CLASSES``

    Raises
    ------
    DownloadError with the offline alternative (:func:`load_digits`, :func:`load_sample_images`)
    when there is no network; ArchiveFormatError when the verified archive is not as expected.
    """
    if split not in _CIFAR10_BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = download([m + CIFAR10_ARCHIVE for m in CIFAR10_MIRRORS], CIFAR10_SHA256,
                    filename=CIFAR10_ARCHIVE, cache_dir=folder / "cifar10", timeout=timeout,
                    offline_hint=CIFAR10_OFFLINE_HINT)
    wanted = {f"cifar-10-batches-py/{name}": name for name in _CIFAR10_BATCHES[split]}
    found = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:  # one pass through the compressed stream
                if member.name in wanted and member.isfile():
                    found[wanted[member.name]] = _read_cifar_batch(archive.extractfile(member).read(),
                                                                   f"{path.name}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArchiveFormatError(f"{path} is not a readable tar.gz ({err}); delete it and load again.") from None
    missing = [name for name in _CIFAR10_BATCHES[split] if name not in found]
    if missing:
        raise ArchiveFormatError(f"{path} lacks cifar-10-batches-py/{', '.join(missing)}; "
                                 f"delete it and load again.")
    images = np.concatenate([found[name][0] for name in _CIFAR10_BATCHES[split]])  # (N, 3, 32, 32) uint8
    labels = np.concatenate([found[name][1] for name in _CIFAR10_BATCHES[split]])  # (N,)
    x = images.astype(np.float32)
    x /= np.float32(255.0)  # in place: the train set is 600 MB as float32
    return x, labels
