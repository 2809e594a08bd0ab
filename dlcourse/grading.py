"""The exercise-check framework: instant, precise feedback that never crashes a notebook.

A chapter's ``checks.py`` makes one :class:`Checker` and registers one check per
exercise::

    check = Checker("01_neurons")

    @check.exercise(points=2, hints=["Start from np.maximum."])
    def relu(fn):
        for x in cases():
            expect_close(call(fn, x), reference_relu(x), "relu(x)")
        return "matches the reference on 4 inputs"

In the notebook the learner writes ``relu`` and runs ``check.relu(relu)``: the
cell shows ``✓`` or ``✗`` with points and one message that says what is wrong
(not implemented / raised X / wrong shape / NaN / max error and where /
mutated its input / too slow).  A check body signals failure by raising
:class:`CheckFailed` (the helpers :func:`call`, :func:`expect_close` and
:func:`expect` do it for you) and success by returning a message.  The runner
catches everything else, and enforces a time limit, so a check never raises and
never hangs: "Run all" always reaches the score table at the end.
"""
from __future__ import annotations

import copy
import ctypes
import html
import inspect
import os
import signal
import sysconfig
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dlcourse.runtime import ipython_shell

__all__ = ["Checker", "Result", "CheckFailed", "CheckTimeout", "call", "diagnose", "expect",
           "expect_close", "expect_tuple", "matches", "time_limit"]


class CheckFailed(Exception):
    """Raised inside a check body: the message is what the learner reads."""


class CheckTimeout(BaseException):
    """Raised into code that ran past its time limit.

    A BaseException, so a learner's ``except Exception`` cannot swallow it.
    """


class _NotImplementedYet(Exception):
    """The learner's function still raises NotImplementedError (the stub)."""


# --------------------------------------------------------------------------- results

@dataclass
class Result:
    """The outcome of one check: what the cell shows and what the grader records."""

    name: str
    passed: bool
    points: float
    max_points: float
    message: str
    hint: str = ""  # how to ask for a hint, e.g. "check.hint('relu')"

    @property
    def status(self) -> str:
        for status in ("not implemented", "not defined"):
            if self.message.startswith(status):
                return status
        return "passed" if self.passed else "failed"

    def __repr__(self) -> str:
        mark = "✓" if self.passed else "✗"
        text = f"{mark} {self.name}  [{_fmt(self.points)}/{_fmt(self.max_points)} points]  {self.message}"
        if not self.passed and self.hint:
            text += f"\n  need a hint? run {self.hint}"
        return text

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        mark = "✓" if self.passed else "✗"
        hint = ""
        if not self.passed and self.hint:
            hint = f"<br><small>need a hint? run <code>{html.escape(self.hint)}</code></small>"
        return (f'<div style="border-left:4px solid {colour};padding:4px 8px">'
                f'<b style="color:{colour}">{mark} {html.escape(self.name)}</b> '
                f"[{_fmt(self.points)}/{_fmt(self.max_points)} points] "
                f"{html.escape(self.message)}{hint}</div>")


def _fmt(points: float) -> str:
    return f"{points:g}"


@dataclass
class Hint:
    name: str
    call: str
    number: int
    total: int
    text: str

    def __repr__(self) -> str:
        if not self.total:
            return self.text
        more = ("  (that was the last hint: compare with the solutions notebook if still stuck)"
                if self.number == self.total else f"  (run {self.call} again for the next)")
        return f"hint {self.number}/{self.total} for {self.name}: {self.text}{more}"

    def _repr_html_(self) -> str:
        if not self.total:
            return f"<div>{html.escape(self.text)}</div>"
        return (f'<div style="border-left:4px solid #9a6700;padding:4px 8px">'
                f"<b>hint {self.number}/{self.total} for {html.escape(self.name)}</b>: "
                f"{html.escape(self.text)}</div>")


@dataclass
class ScoreTable:
    """The summary at the end of an exercise notebook."""

    chapter: str
    rows: list[tuple[str, str, float, float]] = field(default_factory=list)

    @property
    def points(self) -> float:
        return sum(r[2] for r in self.rows)

    @property
    def max_points(self) -> float:
        return sum(r[3] for r in self.rows)

    def __repr__(self) -> str:
        width = max([len("exercise")] + [len(r[0]) for r in self.rows])
        lines = [f"Score for {self.chapter}",
                 f"{'exercise':<{width}}  {'status':<15}  points"]
        for name, status, pts, max_pts in self.rows:
            lines.append(f"{name:<{width}}  {status:<15}  {_fmt(pts)}/{_fmt(max_pts)}")
        lines.append(f"{'total':<{width}}  {'':<15}  {_fmt(self.points)}/{_fmt(self.max_points)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{'✓' if s == 'passed' else '✗'} {s}</td>"
            f"<td>{_fmt(p)}/{_fmt(m)}</td></tr>" for n, s, p, m in self.rows)
        return (f"<b>Score for {html.escape(self.chapter)}</b><table><tr><th>exercise</th>"
                f"<th>status</th><th>points</th></tr>{body}<tr><td><b>total</b></td><td></td>"
                f"<td><b>{_fmt(self.points)}/{_fmt(self.max_points)}</b></td></tr></table>")


# --------------------------------------------------------------------------- time limit

@contextmanager
def time_limit(seconds: float):
    """Raise :class:`CheckTimeout` in the running code once ``seconds`` have passed.

    In the main thread of a Unix process (a Jupyter kernel, pytest) a timer
    signal interrupts even ``time.sleep``; elsewhere a watchdog thread injects
    the exception, which stops any running Python loop.
    """
    if seconds is None or seconds <= 0:
        yield
        return
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def on_alarm(signum, frame):
            raise CheckTimeout()
        # A limit inside a limit (a check timing one slow call): the inner one
        # may not outlast the outer, and the outer's timer resumes afterwards.
        outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
        start = time.monotonic()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_left) if outer_left else seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer_left:
                left = outer_left - (time.monotonic() - start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
        return
    target = threading.get_ident()
    done = threading.Event()

    def watchdog():
        if not done.wait(seconds):
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target),
                                                       ctypes.py_object(CheckTimeout))
    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        yield
    finally:
        done.set()
        guard.join()


# --------------------------------------------------------------------------- helpers for check bodies

def _name_of(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


_LIBRARY_DIRS = tuple(os.path.realpath(d) + os.sep for d in {
    os.path.dirname(os.path.abspath(__file__)), os.path.dirname(np.__file__),
    sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def _raised_inside(err: BaseException, fn) -> str | None:
    """The name of the learner's own function, other than ``fn``, in which ``err`` was raised.

    Walks the traceback to its innermost frame that is not library code (NumPy,
    the standard library, dlcourse): when that is a helper the learner wrote
    (their ``dense_forward`` called by their ``mlp_forward``), the message
    should send them there.
    """
    name, tb = None, err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not os.path.realpath(code.co_filename).startswith(_LIBRARY_DIRS):
            name = code.co_name
        tb = tb.tb_next
    own = getattr(getattr(fn, "__code__", None), "co_name", None)
    if name is None or name == own or not name.isidentifier():
        return None
    return name


def _snapshot(value):
    """A deep copy of the arrays inside ``value`` (to detect in-place changes)."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value) if not hasattr(value, "_fields") \
            else type(value)(*(_snapshot(v) for v in value))
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (np.random.Generator, np.random.RandomState)):
        return value  # drawing from a generator is what it is for, not a mutation
    try:
        return copy.deepcopy(value)
    except Exception:  # something uncopyable (a module, a generator): not checked
        return value


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return True  # cannot tell: do not accuse the learner


def call(fn: Callable, *args, allow_mutation: bool = False, **kwargs):
    """Call the learner's ``fn`` and turn every way it can go wrong into a message.

    Raises :class:`CheckFailed` if ``fn`` raises, and (unless ``allow_mutation``)
    if it changed one of its array arguments in place.
    """
    before = [_snapshot(a) for a in args]
    before_kw = {k: _snapshot(v) for k, v in kwargs.items()}
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotImplementedYet() from None
    except (CheckFailed, _NotImplementedYet, CheckTimeout):
        raise
    except Exception as err:
        helper = _raised_inside(err, fn)
        where = f" (raised inside {helper})" if helper else ""
        raise CheckFailed(f"{_name_of(fn)} raised {type(err).__name__}: {err}{where}") from None
    if not allow_mutation:
        for i, (old, new) in enumerate(zip(before, args)):
            if not _same(old, new):
                raise CheckFailed(f"{_name_of(fn)} mutated its input (argument {i + 1}) in place; "
                                  "compute a new array instead (e.g. x = x * 2, not x *= 2)")
        for k, old in before_kw.items():
            if not _same(old, kwargs[k]):
                raise CheckFailed(f"{_name_of(fn)} mutated its input {k!r} in place; compute a new array instead")
    return out


def matches(got, expected, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    """True when ``got`` has ``expected``'s shape and values; quietly False for anything else.

    The checks use it to recognise a classic mistake: they rebuild the wrong
    answer from the same inputs and ask whether the learner's output matches it.
    """
    try:
        got = np.asarray(got, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if got.shape != expected.shape:
        return False
    with np.errstate(all="ignore"):
        return bool(np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True))


def diagnose(got, expected, mistakes, rtol: float = 1e-6, atol: float = 1e-9,
             same: Callable[[Any, Any], bool] | None = None) -> None:
    """Name the classic mistake behind a wrong answer: fail with the message of the first one it matches.

    ``mistakes`` is a sequence of ``(candidate, message)`` pairs, where a
    candidate is the wrong answer rebuilt from the same inputs (an array, or a
    thunk: a function of no arguments that returns it, for a formula that may
    not even apply to these inputs).  Raises :class:`CheckFailed` with the
    ``message`` of the first candidate that ``got`` matches; returns quietly
    when none does (the caller then compares with the answer as usual).

    Nobody is accused wrongly: nothing happens when ``got`` matches
    ``expected``, and a candidate that raises, or that matches the right answer
    on these inputs (so it cannot tell the mistake apart), is skipped.

    ``got`` and a candidate match when ``same(got, candidate)`` is true; the
    default is :func:`matches` with ``rtol`` and ``atol``.  Pass ``same`` to
    compare something other than one array (a parameter and its optimizer
    state, a list of arrays).
    """
    if same is None:
        def same(a, b):
            return matches(a, b, rtol=rtol, atol=atol)
    if same(got, expected):
        return
    for candidate, message in mistakes:
        with np.errstate(all="ignore"):
            try:
                candidate = candidate() if callable(candidate) else candidate
            except Exception:  # the wrong formula does not even apply to these inputs: skip it
                continue
        if not same(candidate, expected) and same(got, candidate):
            raise CheckFailed(message)


def expect_tuple(result, count: int, names: str, what: str, noun: str = "values",
                 types: tuple[type, ...] = (tuple, list)):
    """Fail unless ``result`` is a tuple (or list) of ``count`` items; return it, ready to unpack.

    ``names`` spells the items out, brackets included, e.g. ``"(dx, dw, db)"``;
    ``what`` names the learner's function; ``noun`` says what the items are
    (``"arrays"``); ``types`` are the accepted containers (``(tuple,)`` where a
    list will not do).  The message says what came back instead: None (a
    forgotten ``return``), another type, or the wrong number of items.
    """
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget a `return` of {names}?")
    if not (isinstance(result, types) and len(result) == count):
        container = " or ".join(t.__name__ for t in types)
        group = {2: " as a pair", 3: " as a triple"}.get(count, "")
        kind = f"a {type(result).__name__}"
        if isinstance(result, (tuple, list)):
            kind += f" of length {len(result)}"
        number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
        raise CheckFailed(f"{what} must return {number} {noun} {names}{group}: a {container} of {count} "
                          f"{noun}; got {kind}")
    return result


_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def expect(condition: bool, message: str) -> None:
    """Fail the check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def expect_close(got, expected, what: str = "the output", rtol: float = 1e-6,
                 atol: float = 1e-8) -> None:
    """Compare the learner's array with the reference and say precisely how it differs.

    Checks, in order: something was returned, it is array-like of the right
    shape, it is finite where the reference is, and the largest error (and where).
    """
    expected = np.asarray(expected)
    if got is None:
        raise CheckFailed(f"{what} is None: did you forget a `return`?")
    if isinstance(got, tuple) and not all(np.isscalar(item) for item in got):
        raise CheckFailed(f"{what} is a tuple of {len(got)} items, expected one array of shape {expected.shape}")
    if hasattr(got, "detach"):  # a torch tensor: compare its values
        got = got.detach().cpu().numpy()
    try:
        got = np.asarray(got, dtype=np.float64 if expected.dtype.kind in "fiub" else None)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} is a {type(got).__name__}, expected an array of shape {expected.shape}") from None
    if got.shape != expected.shape:
        raise CheckFailed(f"{what} has the wrong shape: got {got.shape}, expected {expected.shape}")
    if got.dtype.kind in "fc":
        bad = ~np.isfinite(got) & np.isfinite(expected)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CheckFailed(f"{what} contains NaN or inf at index {index} where the answer is "
                              f"{expected[index]:.6g} (overflow? use a numerically stable form)")
    with np.errstate(all="ignore"):
        err = np.abs(got - expected)
        limit = atol + rtol * np.abs(expected)
        over = np.where(np.isfinite(expected), err - limit, 0.0)
    if over.size and np.max(over) > 0:
        index = np.unravel_index(int(np.argmax(over)), over.shape)
        where = f" at index {tuple(int(i) for i in index)}" if got.ndim else ""
        raise CheckFailed(f"{what} is wrong: max error {err[index]:.3g}{where} "
                          f"(got {got[index]:.6g}, expected {expected[index]:.6g})")


# --------------------------------------------------------------------------- the checker

def _show(obj) -> None:
    """Display ``obj`` in a notebook (HTML and text), or print it in plain Python."""
    if ipython_shell() is None:
        print(repr(obj))
    else:
        from IPython.display import display
        display(obj)


def _caller_namespace() -> dict:
    shell = ipython_shell()
    if shell is not None:
        return shell.user_ns
    return inspect.stack()[2].frame.f_globals  # the frame that called scoreboard()


@dataclass
class _Exercise:
    name: str
    body: Callable[[Any], str]
    points: float
    hints: list[str]
    target: str
    seconds: float


class Checker:
    """The graded checks of one chapter; ``check.<exercise>(obj)`` runs one."""

    def __init__(self, chapter: str, name: str = "check"):
        self.chapter = chapter
        self.var = name  # the notebook's name for this object, used in "run check.hint(...)"
        self._exercises: dict[str, _Exercise] = {}
        self._hints_shown: dict[str, int] = {}

    # registering --------------------------------------------------------
    def exercise(self, points: float = 1, hints: list[str] | tuple[str, ...] = (),
                 target: str | None = None, seconds: float = 20.0):
        """Register a check body for the exercise of the same name.

        ``target`` is the name the learner defines in the notebook (default: the
        check's own name); ``seconds`` is the time limit for the whole check.
        """
        def register(body):
            name = body.__name__
            if not hints:
                raise ValueError(f"exercise {name!r} needs at least one hint")
            if name in self._exercises or name.startswith("_") or hasattr(Checker, name):
                raise ValueError(f"exercise name {name!r} is taken")
            self._exercises[name] = _Exercise(name, body, float(points), list(hints),
                                              target or name, seconds)

            def run(obj=None):
                return self.run(name, obj)
            run.__name__ = name
            run.__doc__ = body.__doc__
            setattr(self, name, run)
            return body
        return register

    @property
    def names(self) -> list[str]:
        return list(self._exercises)

    @property
    def max_points(self) -> float:
        """The chapter's total: the sum of every exercise's points."""
        return sum(ex.points for ex in self._exercises.values())

    def target(self, name: str) -> str:
        return self._exercises[name].target

    # running ------------------------------------------------------------
    def run(self, name: str, obj: Any) -> Result:
        """Run one check on ``obj``; never raises, never hangs."""
        ex = self._exercises[name]
        message, passed = self._outcome(ex, obj)
        result = Result(name, passed, ex.points if passed else 0.0, ex.points, message,
                        hint=f"{self.var}.hint({name!r})")
        return result

    @staticmethod
    def _outcome(ex: _Exercise, obj: Any) -> tuple[str, bool]:
        if obj is None:
            return f"not defined: write `{ex.target}` above, run its cell, then this one", False
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                with time_limit(ex.seconds):
                    message = ex.body(obj)
        except (NotImplementedError, _NotImplementedYet):
            return "not implemented yet: replace the `raise NotImplementedError` with your code", False
        except CheckFailed as fail:
            return str(fail), False
        except CheckTimeout:
            return (f"too slow: stopped after {ex.seconds:g} s (an endless loop, or a Python loop "
                    "where a vectorised NumPy expression would do?)"), False
        except RecursionError:
            return "raised RecursionError: the function calls itself without end", False
        except Exception as err:  # the learner's object broke the check somewhere
            return f"raised {type(err).__name__} while being checked: {err}", False
        return message or "correct", True

    # hints and scores ---------------------------------------------------
    def hint(self, name: str, number: int | None = None) -> None:
        """Show the next hint for exercise ``name`` (or hint ``number``, from 1).

        The hint shows itself, wherever the call stands in a cell, so a hint is
        never used up without being seen.
        """
        _show(self._hint(name, number))

    def hints(self, name: str) -> list[str]:
        """All hints of exercise ``name``, in order (for tests and instructors)."""
        return list(self._exercises[name].hints)

    def _hint(self, name: str, number: int | None = None) -> Hint:
        if name not in self._exercises:  # a typo should not raise in the middle of a notebook
            return Hint(name, "", 0, 0, f"no exercise {name!r} in {self.chapter}; "
                                        f"exercises: {', '.join(self.names)}")
        hints = self._exercises[name].hints
        if number is None:
            number = min(self._hints_shown.get(name, 0) + 1, len(hints))
        if not 1 <= number <= len(hints):
            return Hint(name, "", 0, 0, f"{name} has hints 1 to {len(hints)}")
        self._hints_shown[name] = max(self._hints_shown.get(name, 0), number)
        return Hint(name, f"{self.var}.hint({name!r})", number, len(hints), hints[number - 1])

    def scoreboard(self, namespace: dict | None = None) -> ScoreTable:
        """The score table: every check run again on the names the notebook defines now.

        Re-running (rather than remembering the last check cell) makes the table
        agree with the instructor's grader, which also checks the functions by
        name.  ``namespace`` defaults to the notebook's (IPython's user namespace),
        or the caller's globals outside IPython.
        """
        if namespace is None:
            namespace = _caller_namespace()
        rows = [(r.name, r.status, r.points, r.max_points) for r in self.grade(namespace)]
        return ScoreTable(self.chapter, rows)

    def grade(self, namespace: dict) -> list[Result]:
        """Run every check against the names ``namespace`` defines (used by the grader)."""
        return [self.run(name, namespace.get(ex.target)) for name, ex in self._exercises.items()]
