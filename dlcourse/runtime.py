"""Where the code runs: device choice, seeding, threads, Colab, and showing source.

Threads
-------
Course-sized arrays are small (a 64 x 128 MLP layer), and on a small CPU the
cost of waking and synchronising BLAS / OpenMP threads is about what a second
thread saves.  Worse, NumPy's BLAS pool and torch's OpenMP pool in one process
compete for the same cores: measured on the 2-core course machine (see
``benchmarks/RESULTS.md``), a NumPy MLP step followed by a PyTorch one takes 13
times longer with 2 threads per library than with 1.  So the course uses one
compute thread per library on the CPU by default.  Set the environment
variable ``DLCOURSE_THREADS`` to another number to override, or call
:func:`set_threads` yourself.  On a GPU the CPU threads barely matter.

``import dlcourse`` never imports torch: :func:`device` and :func:`seed` only
touch torch when it is already imported, and the PyTorch twins call
:func:`configure_torch` when they load.
"""
from __future__ import annotations

import inspect
import os
import random
import sys

import numpy as np

__all__ = ["device", "seed", "in_colab", "show_source", "set_threads",
           "configure_torch", "default_threads", "ipython_shell", "check_version"]


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def default_threads() -> int:
    """The number of compute threads the course uses on the CPU (see module doc)."""
    value = os.environ.get("DLCOURSE_THREADS", "1")
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"DLCOURSE_THREADS must be a whole number, got {value!r}") from None


def set_threads(n: int | None = None) -> int:
    """Limit NumPy's BLAS pool and (if loaded) torch to ``n`` threads; returns ``n``."""
    n = default_threads() if n is None else int(n)
    try:  # threadpoolctl reaches the BLAS that NumPy already loaded
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    if "torch" in sys.modules:
        _torch_threads(sys.modules["torch"], n)
    return n


def _torch_threads(torch, n: int) -> None:
    torch.set_num_threads(n)
    try:  # may only be set once, before any inter-op work started
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass


def configure_torch() -> None:
    """Called by every PyTorch twin on import: same thread policy as NumPy."""
    import torch
    _torch_threads(torch, default_threads())


def device(prefer: str | None = None) -> str:
    """The best device for PyTorch: ``"cuda"`` > ``"mps"`` > ``"cpu"``.

    ``prefer`` forces a choice (``device("cpu")``); an unavailable preference
    raises ``ValueError`` with the reason instead of failing later on a tensor.
    """
    import torch  # the caller is about to use torch anyway
    available = ["cpu"]
    if torch.backends.mps.is_available():
        available.insert(0, "mps")
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    if prefer is None:
        return available[0]
    if prefer not in available:
        raise ValueError(f"device {prefer!r} is not available here; available: {available}. "
                         "On Colab choose Runtime > Change runtime type > GPU.")
    return prefer


def seed(n: int = 0) -> np.random.Generator:
    """Seed Python's, NumPy's and (if loaded) torch's generators; return a NumPy Generator.

    Lessons take randomness from the returned generator (``rng = seed(0)``),
    so each notebook is reproducible cell by cell.
    """
    random.seed(n)
    np.random.seed(n)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.manual_seed(n)  # also seeds every CUDA device
    return np.random.default_rng(n)


def scale_up_device(chosen: str | None = None, run_on_cpu: bool = False, cuda_only: bool = False) -> str | None:
    """The device a chapter's ``scale_up`` study trains on, or None (printing why) to skip it.

    ``chosen`` defaults to :func:`device`.  Without a GPU (the CPU, or anything but CUDA when
    ``cuda_only``) the study is skipped with a one-line reason, unless ``run_on_cpu`` (tests).
    """
    import torch
    chosen = chosen or device()
    kind = torch.device(chosen).type
    if (kind != "cuda" if cuda_only else kind == "cpu") and not run_on_cpu:
        what = "CUDA GPU" if cuda_only else "GPU"
        print(f"scale_up: no {what} here (device {chosen!r}), skipped. "
              "On Colab: Runtime > Change runtime type > GPU.")
        return None
    return chosen


def show_source(obj) -> None:
    """Display the source of a package function or class, highlighted in a notebook.

    Lessons show the real code the package runs instead of a copy that could
    drift from it.
    """
    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as err:
        raise TypeError(f"cannot show the source of {obj!r}: {err}") from None
    where = f"{inspect.getmodule(obj).__name__}.{getattr(obj, '__qualname__', '')}"
    if ipython_shell() is None:  # plain Python: print it
        print(f"# {where}\n{source}")
    else:
        from IPython.display import Markdown, display
        display(Markdown(f"`{where}`\n```python\n{source}```"))


def ipython_shell():
    """The running IPython / Jupyter shell, or None in plain Python."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def check_version(built_with: str) -> None:
    """Say so, clearly, when the installed dlcourse is not the one a notebook was built with.

    Every notebook's set-up cell calls this with the version the build recorded
    (``metadata.dlcourse.version``).  A lesson or a check from one version run
    against the package of another can fail in confusing ways, so a mismatch is
    named with its fix.  Shows nothing when the versions agree, and returns
    None so that, as the last line of a cell, it displays nothing either (stored
    notebook outputs stay the same).
    """
    from dlcourse import __version__
    if built_with == __version__:
        return
    if in_colab():
        fix = ("Runtime > Restart session, then run the notebook again from the top; if this message "
               "stays, your copy of the notebook is from another version: open it afresh from the "
               "course map in the README.")
    else:
        fix = ("Update both to the same version: git pull, then python -m pip install -r requirements.txt, "
               "then restart the kernel.")
    print(f"dlcourse version mismatch: this notebook was built with dlcourse {built_with}, "
          f"but this Python has dlcourse {__version__}, so lessons and checks may not match. {fix}",
          file=sys.stderr)


set_threads()
