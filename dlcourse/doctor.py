"""Is this Python ready for the course?  ``python -m dlcourse.doctor``

One line per item, each ``[OK]``, ``[WARN]`` (advisory: the course still runs)
or ``[FAIL]`` (something a chapter needs is missing or broken, with the fix),
and exit status 1 when any line is ``[FAIL]``.  When you ask for help, paste
the whole output: it names your Python, every package version, the device and
where the data lives.

What it checks:

* Python against the package's ``requires-python``;
* every dependency: installed, inside the range ``pyproject.toml`` declares
  (read from the installed package's metadata), and importable;
* JupyterLab, which the course needs only locally (advisory);
* the PyTorch device (CUDA with the GPU's name, MPS or CPU), with one tiny
  computation on it; the CPU thread policy; whether this is Colab;
* that the data cache directory is writable, and that the offline data sets
  (scikit-learn's digits and sample images) load.

The doctor never raises: a check that breaks unexpectedly becomes a ``[FAIL]``
line that names the error.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

__all__ = ["Line", "checks", "main"]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
ROOT = Path(__file__).resolve().parent.parent

# Distributions whose import name is not their distribution name.
IMPORT_NAMES = {"scikit-learn": "sklearn"}
# Needed to open the notebooks on your own machine, but not a dependency of the
# package (Colab brings its own front end).  ipywidgets 7.6+ and 8 draw their
# widgets in JupyterLab 3 and later with no extra install.
LOCAL_ONLY = {"jupyterlab": ">=3"}


class Line(NamedTuple):
    """One result: ``[OK] numpy: 2.4.6 (supported: >=1.23)``."""
    status: str   # OK, WARN or FAIL
    item: str
    detail: str

    def __str__(self) -> str:
        return f"{'[' + self.status + ']':<6} {self.item}: {self.detail}"


def _in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def _install_hint() -> str:
    if _in_colab():
        return "run the notebook's first cell (the set-up) again"
    return "python -m pip install -r requirements.txt (in the course's virtual environment)"


# --------------------------------------------------------------------------- versions

def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _numbers(version: str) -> tuple[int, ...]:
    """Leading release numbers: "2.13.0+cpu" -> (2, 13, 0); "1.26rc1" -> (1, 26)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def _simple_satisfies(version: str, specifier: str) -> bool:
    """A small stand-in for ``packaging`` that understands >=, >, <=, <, ==, != clauses."""
    have = _numbers(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        op, wanted = re.match(r"(>=|<=|==|!=|>|<|~=)?\s*(.+)", clause).groups()
        want = _numbers(wanted)
        width = max(len(have), len(want))
        a, b = have + (0,) * (width - len(have)), want + (0,) * (width - len(want))
        ok = {"": a == b, "==": a == b, "!=": a != b, ">=": a >= b, ">": a > b,
              "<=": a <= b, "<": a < b, "~=": a >= b}[op or ""]
        if not ok:
            return False
    return True


def satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` lies in ``specifier`` (">=1.23"); uses ``packaging`` when installed."""
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion
    except ImportError:  # pragma: no cover - packaging comes with matplotlib and Jupyter
        return _simple_satisfies(version, specifier)
    try:
        return SpecifierSet(specifier).contains(version, prereleases=True)
    except InvalidVersion:
        return _simple_satisfies(version, specifier)


def _parse_requirement(text: str) -> tuple[str, str, str]:
    """``'jupytext>=1.16; extra == "dev"'`` -> ("jupytext", ">=1.16", 'extra == "dev"')."""
    requirement, _, marker = text.partition(";")
    name, specifier = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[[^]]*\])?\s*(.*)", requirement).groups()
    return name, specifier.strip().strip("()"), marker.strip()


def declared() -> tuple[str, list[tuple[str, str]]]:
    """``(requires_python, [(distribution, specifier), ...])`` that dlcourse declares.

    Read from the installed package's metadata (what pip enforced), else from the
    ``pyproject.toml`` of a source checkout.  Optional (``extra``) dependencies
    are left out; other environment markers are evaluated.
    """
    try:
        python = metadata.metadata("dlcourse")["Requires-Python"] or ""
        requirements = metadata.requires("dlcourse") or []
    except metadata.PackageNotFoundError:
        import tomllib  # Python 3.11+; a checkout that was never installed is rare on 3.10
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        python, requirements = project.get("requires-python", ""), project.get("dependencies", [])
    found = []
    for text in requirements:
        name, specifier, marker = _parse_requirement(text)
        if "extra" in marker:
            continue
        if marker:
            try:
                from packaging.markers import Marker
                if not Marker(marker).evaluate():
                    continue
            except ImportError:  # pragma: no cover
                pass
        found.append((name, specifier))
    return python, found


# --------------------------------------------------------------------------- the checks

def check_python(requires: str) -> Line:
    version = platform.python_version()
    where = f"{version} at {sys.executable}"
    if not satisfies(version, requires):
        return Line(FAIL, "python", f"{where}, but the course needs Python {requires}: install a newer "
                                    "Python and create the virtual environment with it")
    return Line(OK, "python", f"{where} (supported: {requires or 'any'})")


def check_dlcourse() -> Line:
    import dlcourse
    where = Path(dlcourse.__file__).resolve().parent
    recorded = installed_version("dlcourse")
    if recorded is None:
        return Line(WARN, "dlcourse", f"{dlcourse.__version__} imported from {where}, but not installed "
                                      f"as a package: {_install_hint()}")
    if recorded != dlcourse.__version__:
        return Line(WARN, "dlcourse", f"the code in {where} is {dlcourse.__version__}, the installed package "
                                      f"says {recorded}: {_install_hint()}")
    return Line(OK, "dlcourse", f"{dlcourse.__version__} from {where}")


def _import_error(distribution: str) -> str | None:
    module = IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))
    try:
        importlib.import_module(module)
    except Exception as err:  # a broken install raises all sorts of things
        first = (str(err).strip().splitlines() or [""])[0][:200]
        return f"{type(err).__name__}: {first}"
    return None


def check_package(distribution: str, specifier: str, needed: bool = True) -> Line:
    """Installed, inside the supported range, and importable (a FAIL names what is wrong and the fix)."""
    bad = FAIL if needed else WARN
    version = installed_version(distribution)
    wanted = f"supported: {specifier}" if specifier else "any version"
    if version is None:
        why = "" if needed else ", which the course needs to open its notebooks on your own machine"
        return Line(bad, distribution, f"not installed ({wanted}){why}: {_install_hint()}")
    if not satisfies(version, specifier):
        return Line(bad, distribution, f"{version} is installed, outside the supported range {specifier}: "
                                       f"{_install_hint()}")
    error = _import_error(distribution)
    if error:
        return Line(bad, distribution, f"{version} is installed but does not import ({error}): "
                                       f"reinstall it, {_install_hint()}")
    return Line(OK, distribution, f"{version} ({wanted})")


def check_jupyterlab() -> Line | None:
    if _in_colab():
        return None  # Colab is the front end there
    (name, specifier), = LOCAL_ONLY.items()
    return check_package(name, specifier, needed=False)


def check_device() -> Line:
    try:
        import torch
    except Exception as err:
        return Line(FAIL, "device", f"cannot tell: torch does not import ({type(err).__name__}: {err})")
    from dlcourse.runtime import device
    name = device()
    if name == "cuda":
        detail = f"cuda: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    elif name == "mps":
        detail = "mps: the Apple GPU"
    else:
        detail = f"cpu: no CUDA or MPS GPU found (torch {torch.__version__}); every chapter runs on the CPU"
    try:  # a device can be listed and still fail (driver too old, out of memory)
        torch.ones(2, device=name).sum().item()
    except Exception as err:
        return Line(FAIL, "device", f"{detail}, but a computation on it failed: {type(err).__name__}: {err}")
    if name == "cpu" and _in_colab():
        return Line(WARN, "device", f"{detail}; for a GPU choose Runtime > Change runtime type > GPU")
    return Line(OK, "device", detail)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_threads() -> Line:
    from dlcourse import runtime
    try:
        wanted = runtime.default_threads()
    except ValueError as err:
        return Line(FAIL, "threads", f"{err} (unset it for the default, one thread per library)")
    source = (f"DLCOURSE_THREADS={os.environ['DLCOURSE_THREADS']}" if "DLCOURSE_THREADS" in os.environ
              else "the default; DLCOURSE_THREADS changes it")
    have, blas = [], []
    try:
        from threadpoolctl import threadpool_info
        pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
        # NumPy's own BLAS (a wheel keeps it in numpy.libs); SciPy's, loaded by
        # scikit-learn, does none of the course's arithmetic.
        blas = [pool["num_threads"] for pool in pools if "numpy" in pool.get("filepath", "")] or \
               [pool["num_threads"] for pool in pools[:1]]
        have.append(f"NumPy BLAS {'/'.join(map(str, blas)) or '?'}")
    except ImportError:  # pragma: no cover - a dependency
        pass
    if installed_version("torch") and _import_error("torch") is None:
        import torch
        runtime.configure_torch()  # what every PyTorch twin does when it loads
        have.append(f"PyTorch {torch.get_num_threads()}")
    detail = f"{wanted} compute thread(s) per library ({source}): {', '.join(have)}; {_cores()} CPU core(s)"
    if any(n != wanted for n in blas):
        return Line(WARN, "threads", detail + f"; NumPy's BLAS does not follow the policy of {wanted}")
    if wanted > _cores():
        return Line(WARN, "threads", detail + "; more threads than cores slows the course down")
    return Line(OK, "threads", detail)


def check_colab() -> Line:
    return Line(OK, "Colab", "yes" if _in_colab() else "no (running on this machine)")


def unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (or created there, if it does not exist yet), or None."""
    probe = folder
    while not probe.exists() and probe.parent != probe:  # the nearest folder that exists
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        with tempfile.TemporaryDirectory(dir=probe, prefix=".dlcourse-doctor-"):
            pass
    except OSError as err:
        return f"cannot write in {probe}: {err.strerror or err}"
    return None


def check_cache() -> Line:
    from dlcourse.data import default_cache_dir
    folder = default_cache_dir()
    problem = unwritable(folder)
    if problem:
        return Line(FAIL, "data cache", f"{folder} is not writable ({problem}); set DLCOURSE_DATA "
                                        "to a folder you can write to")
    later = "" if folder.exists() else " (created at the first download)"
    return Line(OK, "data cache", f"{folder} is writable{later}")


def check_digits() -> Line:
    from dlcourse import data
    try:
        split = data.load_digits()
    except Exception as err:
        return Line(FAIL, "offline data (digits)", f"scikit-learn's digits do not load ({type(err).__name__}: {err}): "
                                          f"{_install_hint()}")
    n = len(split.y_train) + len(split.y_val) + len(split.y_test)
    return Line(OK, "offline data (digits)", f"scikit-learn's {n} images of 8 x 8 load")


def check_sample_images() -> Line:
    from dlcourse import data
    try:
        images = data.load_sample_images()
    except Exception as err:  # Pillow missing is the usual reason
        return Line(FAIL, "offline data (sample images)", f"scikit-learn's sample images do not load ({type(err).__name__}: "
                                          f"{err}): {_install_hint()}")
    shapes = ", ".join("x".join(map(str, im.shape)) for im in images)
    return Line(OK, "offline data (sample images)", f"scikit-learn's {len(images)} photos ({shapes}) load")


def checks() -> Iterator[Line]:
    """Every check in order, one :class:`Line` each; an unexpected error becomes a FAIL line."""
    def safely(item: str, check: Callable[[], Line | None]) -> Iterator[Line]:
        try:
            line = check()
        except Exception as err:
            line = Line(FAIL, item, f"the check itself failed: {type(err).__name__}: {err}")
        if line is not None:
            yield line

    try:
        requires, dependencies = declared()
    except Exception as err:
        yield Line(FAIL, "dlcourse", f"cannot read what dlcourse requires ({type(err).__name__}: {err}): "
                                     f"{_install_hint()}")
        requires, dependencies = "", []
    yield from safely("python", lambda: check_python(requires))
    yield from safely("dlcourse", check_dlcourse)
    for name, specifier in dependencies:
        yield from safely(name, lambda n=name, s=specifier: check_package(n, s))
    yield from safely("jupyterlab", check_jupyterlab)
    yield from safely("device", check_device)
    yield from safely("threads", check_threads)
    yield from safely("Colab", check_colab)
    yield from safely("data cache", check_cache)
    yield from safely("offline data (digits)", check_digits)
    yield from safely("offline data (sample images)", check_sample_images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.doctor", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    print(f"dlcourse doctor on {platform.system()} {platform.machine()}", flush=True)
    failures = warnings = 0
    for line in checks():
        print(line, flush=True)
        failures += line.status == FAIL
        warnings += line.status == WARN
    if failures:
        print(f"doctor: {failures} problem(s): fix the [FAIL] lines above, then run python -m dlcourse.doctor "
              "again (README, Troubleshooting)")
    else:
        print("doctor: ready for the course" + (f" ({warnings} advisory warning(s))" if warnings else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
