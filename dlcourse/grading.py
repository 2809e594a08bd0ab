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
import functools
import html
import inspect
import os
import signal
import sys
import sysconfig
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dlcourse.runtime import ipython_shell

__all__ = ["Checker", "Result", "CheckFailed", "CheckTimeout", "Mistake", "call", "diagnose", "raises_like",
           "same_items", "expect", "expect_close", "expect_defaults", "expect_tuple", "fail_with",
           "first_wrong_stage", "matches", "reproduce", "time_limit", "trying", "is_shape_error",
           "expect_float64", "name_first_wrong"]


class CheckFailed(Exception):
    """Raised inside a check body: the message is what the learner reads.

    ``mistake`` names the classic mistake it diagnosed (a row of the exercise's
    mistake table), for the grader's CSV and class summary; ``details`` is the
    smallest failing case, shown under the message.
    """

    def __init__(self, message: str = "", mistake: str = "", details: str = ""):
        super().__init__(message)
        self.mistake = mistake
        self.details = details


@dataclass(frozen=True)
class Mistake:
    """One row of an exercise's mistake table: a classic wrong answer, as data.

    ``wrong`` is a wrong implementation of the same form as the learner's answer
    (a function with the exercise's signature, a class, a value).  The check
    recomputes it on the failing case and, when the learner's output matches,
    shows ``message``; the tests hand every row's ``wrong`` to the check and
    assert that exactly this ``message`` comes back.  ``name`` is a short label
    for the instructor's CSV and class summary.
    """

    name: str
    wrong: Any
    message: str


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
    hint: str = ""     # how to ask for a hint, e.g. "check.hint('relu')"
    mistake: str = ""  # the named mistake diagnosed, if any (a row of the mistake table)
    details: str = ""  # the smallest failing case and how to reproduce it
    kind: str = ""     # "not implemented", "not defined", "course code", "too slow", "raised", or ""

    @property
    def status(self) -> str:
        """passed, not implemented, not defined, course code, too slow, raised, or failed."""
        if self.passed:
            return "passed"
        return self.kind or "failed"

    @property
    def outcome(self) -> str:
        """The status, or for a wrong answer the named mistake: one word for a CSV column."""
        if self.status == "failed" and self.mistake:
            return f"mistake: {self.mistake}"
        return self.status

    def __repr__(self) -> str:
        mark = "✓" if self.passed else "✗"
        text = f"{mark} {self.name}  [{_fmt(self.points)}/{_fmt(self.max_points)} points]  {self.message}"
        if self.details:
            text += "\n" + "\n".join("  " + line for line in self.details.splitlines())
        if not self.passed and self.hint:
            text += f"\n  need a hint? run {self.hint}"
        return text

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        mark = "✓" if self.passed else "✗"
        hint = ""
        if not self.passed and self.hint:
            hint = f"<br><small>need a hint? run <code>{html.escape(self.hint)}</code></small>"
        details = (f'<pre style="margin:4px 0;white-space:pre-wrap">{html.escape(self.details)}</pre>'
                   if self.details else "")
        return (f'<div style="border-left:4px solid {colour};padding:4px 8px">'
                f'<b style="color:{colour}">{mark} {html.escape(self.name)}</b> '
                f"[{_fmt(self.points)}/{_fmt(self.max_points)} points] "
                f"{html.escape(self.message)}{details}{hint}</div>")


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


def call(fn: Callable, *args, allow_mutation: bool = False, record: list | None = None, **kwargs):
    """Call the learner's ``fn`` and turn every way it can go wrong into a message.

    Raises :class:`CheckFailed` if ``fn`` raises, and (unless ``allow_mutation``)
    if it changed one of its array arguments in place.  With ``record`` (a
    list), every array held in a local variable of the learner's own functions
    when they return is appended to it, for :func:`first_wrong_stage`.
    """
    before = [_snapshot(a) for a in args]
    before_kw = {k: _snapshot(v) for k, v in kwargs.items()}
    try:
        with _recording(record):
            out = fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotImplementedYet() from None
    except (CheckFailed, _NotImplementedYet, CheckTimeout):
        raise
    except Exception as err:
        helper = _raised_inside(err, fn)
        where = f" (raised inside {helper})" if helper else ""
        fail = CheckFailed(f"{_name_of(fn)} raised {type(err).__name__}: {err}{where}")
        fail.error = err  # for checks that translate the error into the mistake behind it
        raise fail from None
    watch = _Watch.active
    if watch is not None and inspect.isgenerator(out):
        # a wrapper that returns the course's generator: its code runs later, when the
        # check iterates, outside the learner's frames, where the trace cannot see who made it
        watch.hit = watch.hit or watch.forbidden(out.gi_code)
    if not allow_mutation:
        changed = [(_parameter_name(fn, i), new) for i, (old, new) in enumerate(zip(before, args))
                   if not _same(old, new)]
        changed += [(f"`{k}`", kwargs[k]) for k, old in before_kw.items() if not _same(old, kwargs[k])]
        if changed:
            what, value = changed[0]
            fix = ("build a new list instead of changing the one you were given"
                   if isinstance(value, list) else "compute a new array instead (x = x * 2, not x *= 2)")
            raise CheckFailed(f"{_name_of(fn)} mutated its input {what} in place; {fix}", mistake="mutated input")
    return out


def _parameter_name(fn, index: int) -> str:
    """"`dout` (argument 1)" for the parameter at position ``index`` (from 0), as far as it can be told."""
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    ordinal = f"argument {index + 1}"
    return f"`{names[index]}` ({ordinal})" if index < len(names) else ordinal


# --------------------------------------------------------------------------- watching the learner's code run
#
# While a check runs, a trace function (sys.settrace) sees every Python call.  It
# does two things: it notices when code the learner wrote calls the reference of
# the exercise being graded (a wrapper around the course's answer earns no
# points), and, inside call(record=...), it keeps the arrays in the learner's
# local variables, so that a multi-stage computation can be checked stage by
# stage.  Library code (NumPy, the standard library, dlcourse itself) is never
# the learner's.

_DLCOURSE_DIR = os.path.realpath(os.path.dirname(os.path.abspath(__file__))) + os.sep
_learner_files: dict[str, bool] = {}


def _is_learner_file(filename: str) -> bool:
    known = _learner_files.get(filename)
    if known is None:
        known = not (filename.startswith("<frozen") or
                     os.path.realpath(filename).startswith(_LIBRARY_DIRS))
        _learner_files[filename] = known
    return known


class _Watch:
    """The trace function of one check run (see the comment above)."""

    active: "_Watch | None" = None

    def __init__(self, forbidden: Callable[[Any], str | None], stop_code=None):
        self.forbidden = forbidden  # code object -> the reference's name, or None
        self.stop_code = stop_code  # the frame where the check began: look no higher
        self.hit: str | None = None
        self.record: list | None = None

    def __enter__(self):
        self.previous_trace, self.previous_watch = sys.gettrace(), _Watch.active
        _Watch.active = self
        if self.previous_trace is None:  # never disturb a debugger or coverage tool
            sys.settrace(self._on_call)
        return self

    def __exit__(self, *exc):
        if self.previous_trace is None:
            sys.settrace(None)
        _Watch.active = self.previous_watch
        return False

    def _on_call(self, frame, event, arg):
        code = frame.f_code
        if self.hit is None:
            name = self.forbidden(code)
            if name is not None and self._called_by_learner(frame):
                self.hit = name
        if self.record is not None and _is_learner_file(code.co_filename):
            frame.f_trace_lines = False
            return self._on_return
        return None

    def _called_by_learner(self, frame) -> bool:
        frame = frame.f_back
        while frame is not None and frame.f_code is not self.stop_code:
            if _is_learner_file(frame.f_code.co_filename):
                return True
            frame = frame.f_back
        return False

    def _on_return(self, frame, event, arg):
        if event == "return" and self.record is not None and len(self.record) < 2000:
            values = list(frame.f_locals.values()) + [arg]
            for value in values:
                if isinstance(value, (tuple, list)):
                    values.extend(v for v in value[:16] if isinstance(v, np.ndarray))
                elif isinstance(value, np.ndarray) and value.size <= 1_000_000 and value.dtype.kind in "fiub":
                    self.record.append(value.copy())
        return self._on_return


@contextmanager
def _recording(record: list | None):
    if record is None:
        yield
        return
    watch = _Watch.active
    if watch is None:  # called outside a check (a test): watch just this call
        with _Watch(lambda code: None) as watch:
            watch.record = record
            yield
        return
    saved, watch.record = watch.record, record
    try:
        if sys.gettrace() is None and watch.previous_trace is None:
            sys.settrace(watch._on_call)
        yield
    finally:
        watch.record = saved


def _unwrap(obj):
    """The function or class behind a partial, a bound method or a decorator."""
    for _ in range(10):
        if isinstance(obj, functools.partial):
            obj = obj.func
        elif inspect.ismethod(obj):
            obj = obj.__func__
        elif getattr(obj, "__wrapped__", None) is not None:
            obj = obj.__wrapped__
        else:
            return obj
    return obj


def _in_course(code) -> bool:
    """Whether a code object comes from a file of the dlcourse package."""
    return os.path.realpath(code.co_filename).startswith(_DLCOURSE_DIR)


def _course_origin(obj) -> str | None:
    """Where in the course ``obj`` was defined ("dlcourse.optim.numpy_impl.adam_step"), or None."""
    obj = _unwrap(obj)
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        obj = type(obj)  # a callable instance: judge its class
    classes = obj.__mro__ if inspect.isclass(obj) else (obj,)
    for item in classes:  # the object itself, or a class it derives from
        module = getattr(item, "__module__", None) or ""
        code = getattr(item, "__code__", None)
        if module == "dlcourse" or module.startswith("dlcourse.") or (code is not None and _in_course(code)):
            return f"{module}.{getattr(item, '__qualname__', getattr(item, '__name__', '?'))}"
    for klass in classes[:-1] if inspect.isclass(obj) else ():  # a course method set on it (Value.backward = ...)
        for attr, member in vars(klass).items():
            member = _unwrap(getattr(member, "__func__", member))
            code = getattr(member, "__code__", None)
            if code is not None and _in_course(code):
                return f"{member.__module__}.{member.__qualname__} (as {obj.__name__}.{attr})"
    return None


def _code_keys(objects) -> dict[tuple[str, str], str]:
    """(file, function name) of every function in ``objects`` (functions, classes' methods)."""
    keys: dict[tuple[str, str], str] = {}
    for obj in objects:
        obj = _unwrap(obj)
        members = [obj]
        if inspect.isclass(obj):
            members = [_unwrap(v.fget if isinstance(v, property) else getattr(v, "__func__", v))
                       for v in vars(obj).values()]
        for member in members:
            code = getattr(member, "__code__", None)
            if code is not None:
                label = f"{member.__module__}.{member.__qualname__}"
                keys[(os.path.realpath(code.co_filename), code.co_name)] = label
    return keys


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
             same: Callable[[Any, Any], bool] | None = None,
             apply: Callable[[Any], Any] | None = None, suffix: str = "") -> None:
    """Name the classic mistake behind a wrong answer: fail with the message of the first one it matches.

    ``mistakes`` is a mistake table: :class:`Mistake` rows, whose wrong answer on
    the failing inputs is ``apply(row.wrong)`` (``apply`` calls the wrong
    implementation the way the check called the learner's).  For a one-off
    diagnosis an item may also be a ``(candidate, message)`` pair, where a
    candidate is the wrong answer rebuilt from the same inputs (an array, or a
    thunk: a function of no arguments that returns it).  Raises
    :class:`CheckFailed` with the ``message`` (plus ``suffix``, e.g. "(first
    seen at step 3)") and the row's name of the first candidate that ``got``
    matches; returns quietly when none does (the caller then compares with the
    answer as usual).

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
    for item in mistakes:
        if isinstance(item, Mistake):
            if apply is None:
                raise TypeError("diagnose() needs apply= to recompute Mistake rows")
            candidate, message, name = (lambda row=item: apply(row.wrong)), item.message, item.name
        else:
            candidate, message = item[:2]
            name = item[2] if len(item) > 2 else ""
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                candidate = candidate() if callable(candidate) else candidate
            except Exception:  # the wrong formula does not even apply to these inputs: skip it
                continue
        try:
            hit = not same(candidate, expected) and same(got, candidate)
        except Exception:  # a candidate of another form than the answer: cannot match
            continue
        if hit:
            raise CheckFailed(f"{message} {suffix}".strip(), mistake=name)


def fail_with(table, name: str, suffix: str = ""):
    """Fail with the message of row ``name`` of a mistake table.

    For the rows a check recognises by its own logic (an error raised, a slow
    loop, a wrong type) rather than by recomputing the row's wrong answer.
    """
    row = next(r for r in table if r.name == name)
    raise CheckFailed(f"{row.message} {suffix}".strip(), mistake=row.name)


def same_items(a, b, rtol: float = 1e-6) -> bool:
    """Two tuples of arrays (or numbers) with the same items, as far as :func:`matches` tells."""
    try:
        return len(a) == len(b) and all(matches(x, y, rtol=rtol) for x, y in zip(a, b))
    except TypeError:
        return False


def raises_like(table, err: BaseException | None, run: Callable, suffix: str = "",
                right: Callable | None = None) -> None:
    """Name the row of a mistake table that raises the very error the learner's code raised.

    ``err`` is the learner's exception (``CheckFailed.error`` from :func:`call`; None does
    nothing); ``run(row.wrong)`` runs one row on the same inputs.  A row that raises an
    error of the same type and text fails the check with that row's message.  ``right``
    runs the reference: when it raises an error of the same type, the inputs are to
    blame, not a mistake, and nothing is named.
    """
    if err is None:
        return
    if right is not None:
        try:
            right()
        except Exception as own:  # noqa: BLE001
            if type(own) is type(err):
                return
    for row in table:
        try:
            with np.errstate(all="ignore"):
                run(row.wrong)
        except Exception as own:  # noqa: BLE001 - a row that raises is what we look for
            if type(own) is type(err) and str(own) == str(err):
                fail_with(table, row.name, suffix)


def first_wrong_stage(recorded: list, stages: list[tuple[str, Any, str]]) -> None:
    """Name the first stage of a multi-stage computation (a backward pass) that went wrong.

    ``stages`` lists the reference's intermediate results in the order they are
    computed, as ``(name, expected_array, why)``; ``recorded`` holds the arrays
    the learner's functions held in their local variables (``call(...,
    record=recorded)`` collects them).  A stage counts as right when one of the
    learner's arrays equals it.  At the first stage that none equals, while the
    learner did compute an array of that shape (so that stage exists in their
    code), fail with "dlogits, dh are right; dpre is wrong: <why>".  Returns
    quietly when every stage is found, or when the learner's code has no array
    of the stage's shape (it was computed inline: nothing to point at).
    """
    found: list[str] = []
    used: list[int] = []  # the learner's arrays that are right stages
    for name, expected, why in stages:
        expected = np.asarray(expected)
        hits = [i for i, a in enumerate(recorded) if matches(a, expected)]
        if hits:
            found.append(name)
            used += hits
            continue
        if not any(np.shape(a) == expected.shape for i, a in enumerate(recorded) if i not in used):
            return
        if found:
            verb = "is" if len(found) == 1 else "are"
            raise CheckFailed(f"{', '.join(found)} {verb} right; {name} is wrong: {why}", mistake=f"stage {name}")
        raise CheckFailed(f"{name}, the first stage, is already wrong: {why}", mistake=f"stage {name}")


# --------------------------------------------------------------------------- the smallest failing case

def _literal(value, limit: int = 60, imports: set | None = None) -> str:
    """Python source that rebuilds ``value`` (small arrays in full, large ones by shape).

    Classes and functions from a module (a NamedTuple cache, an activation) add
    their import to ``imports``, so that the line runs in a fresh cell too.
    """
    imports = set() if imports is None else imports
    if isinstance(value, np.ndarray):
        if value.size > limit:
            return f"<array of shape {value.shape}, dtype {value.dtype}>"
        body = np.array2string(value, separator=", ", precision=8, max_line_width=10_000,
                               threshold=limit + 1, floatmode="maxprec")
        dtype = "" if value.dtype in (np.float64, np.int_) else f", dtype=np.{value.dtype}"
        return f"np.array({body}{dtype})"
    if isinstance(value, (np.floating, np.integer)):
        return repr(value.item())
    if isinstance(value, np.random.Generator):
        return "np.random.default_rng(0)"  # a generator's state has no short literal
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple state or cache
        inner = ", ".join(f"{f}={_literal(v, limit, imports)}" for f, v in zip(value._fields, value))
        return f"{_importable(type(value), imports)}({inner})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_literal(v, limit, imports) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(v, limit, imports)}" for k, v in value.items()) + "}"
    if callable(value):
        return _importable(value, imports)
    return repr(value)


def _importable(obj, imports: set) -> str:
    """The name to write for ``obj`` in a reproducing line, recording the import it needs."""
    name = getattr(obj, "__name__", None) or type(obj).__name__
    module = getattr(obj, "__module__", None)
    if module and module not in ("__main__", "builtins") and not module.startswith("solution_") \
            and getattr(sys.modules.get(module), name, None) is obj:
        imports.add(f"from {module} import {name}")
    return name


def reproduce(name: str, *args, **kwargs) -> str:
    """A one-line call that reproduces a case, e.g. ``sigmoid(np.array([-1.0, 0.0]))``.

    Prefixed with the imports it needs (``from dlcourse.backprop.numpy_impl import LinearCache; ...``).
    """
    imports: set = set()
    parts = [_literal(a, imports=imports) for a in args]
    parts += [f"{k}={_literal(v, imports=imports)}" for k, v in kwargs.items()]
    line = f"{name}({', '.join(parts)})"
    return "; ".join(sorted(imports) + [line])


class _Case:
    """The case a check is trying; describes itself when it fails (see :func:`trying`)."""

    def __init__(self, name: str, args: tuple, kwargs: dict, label: str, call_text: str | None):
        # the inputs as they were before the learner's code ran (it may change them in place)
        self.name, self.label, self.call_text = name, label, call_text
        self.args, self.kwargs = _snapshot(tuple(args)), _snapshot(dict(kwargs))
        self.got = self.expected = _UNSET

    def describe(self) -> str:
        call_line = self.call_text or reproduce(self.name, *self.args, **self.kwargs)
        label = f" ({self.label})" if self.label else ""
        shown = [(word, value) for word, value in (("got", self.got), ("expected", self.expected))
                 if value is not _UNSET]
        if not shown:
            return f"failing case{label}; reproduce it in a new cell:  {call_line}"
        lines = [f"smallest failing case{label}:"]
        lines += [f"  {word:<8} {_literal(value)}" for word, value in shown]
        lines.append(f"reproduce it in a new cell:  {call_line}")
        return "\n".join(lines)


_UNSET = object()


@contextmanager
def trying(name: str, *args, label: str = "", call_text: str | None = None, **kwargs):
    """Run one case of a check; if it fails, the failure shows the case and a call that reproduces it.

    Checks try their cases from the smallest to the largest, so the first
    failure is the smallest failing case::

        for x in cases:                      # small to large
            with trying("sigmoid", x) as case:
                case.got = call(fn, x)
                case.expected = ref.sigmoid(x)
                expect_close(case.got, case.expected, "sigmoid(x)")

    Setting ``case.got`` / ``case.expected`` is optional: what is set is shown; set
    them to the values the failing comparison is about.  ``call_text`` replaces the
    generated reproducing line where the call is not a plain function call
    (``list(minibatches(5, 2, np.random.default_rng(2)))``).
    """
    case = _Case(name, args, kwargs, label, call_text)
    try:
        yield case
    except CheckFailed as fail:
        if not fail.details:
            fail.details = case.describe()
        raise


def expect_defaults(fn, name: str, **defaults) -> None:
    """Fail when the learner's ``fn`` gives a parameter another default than the exercise's signature.

    The cases of a check pass every argument, so a changed default (``momentum=0.99``
    where the exercise says 0.9, as torch does) would go unseen, and bite the first
    caller that relies on it.  A parameter without a default is left alone.
    """
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    for key, want in defaults.items():
        parameter = parameters.get(key)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            continue
        got = parameter.default
        same = got is want if isinstance(want, bool) else \
            got == want if isinstance(want, (tuple, str)) or got is None or want is None else \
            isinstance(got, (int, float)) and not isinstance(got, bool) and float(got) == float(want)
        if not same:
            raise CheckFailed(f"{name}'s default {key}={got!r} is not the exercise's {key}={want!r}: keep the "
                              "signature as given (callers that leave it out rely on that default)",
                              mistake="wrong default")


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
    if isinstance(got, list) and expected.ndim > 0:
        raise CheckFailed(f"{what} is a list; return a NumPy array of shape {expected.shape} "
                          "(np.array(...) or np.stack(...) turns a list into one)", mistake="list")
    if hasattr(got, "detach"):  # a torch tensor (a PyTorch twin's output): compare its values
        got = got.detach().cpu().numpy().astype(np.float64)
    if getattr(got, "dtype", None) in (np.float32, np.float16) and expected.dtype == np.float64:
        raise CheckFailed(f"{what} is {got.dtype} where the input was float64: keep float64 all the way "
                          "(no .astype(np.float32), no np.float32(...) constants, no float32 arrays)",
                          mistake="float32")
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
                              f"{expected[index]:.6g} (an overflow, a division by zero, or the square root or log of a "
                              "negative number?)")
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


def is_shape_error(err) -> bool:
    """An error NumPy raises for a matrix product or a broadcast of shapes that do not fit."""
    text = str(err)
    return isinstance(err, ValueError) and ("matmul" in text or "not aligned" in text or "broadcast" in text)


def expect_float64(names, got, what: str) -> None:
    """A NumPy exercise takes float64 inputs and wants float64 back: one message for float32 everywhere,
    raised before any comparison (float32 would pass some tolerances and not others)."""
    for name, g in zip(names, got):
        if getattr(g, "dtype", None) in (np.float32, np.float16):
            raise CheckFailed(f"{name} ({what}) is {g.dtype} where the input was float64: keep float64 all the way "
                              "(no .astype(np.float32), no np.float32(...) constants, no float32 arrays)",
                              mistake="float32")


def name_first_wrong(names, got, expected, what: str) -> None:
    """For an exercise with several outputs: 'dq is right; dk is wrong: max error ...' for the first
    output that differs, or 'the outputs are in the wrong order (...)' when they are all there, swapped."""
    right = [n for n, g, e in zip(names, got, expected) if matches(g, e)]
    if not right and len(names) > 1:
        swapped = [f"{a} holds what {b} should" for a, g in zip(names, got) for b, e in zip(names, expected)
                   if a != b and matches(g, e)]
        if swapped:
            raise CheckFailed(f"the outputs are in the wrong order ({'; '.join(swapped)}): return them as "
                              f"({', '.join(names)}) ({what})", mistake="output order")
    for name, g, e in zip(names, got, expected):
        if name in right:
            continue
        if right:
            listed = right[0] if len(right) == 1 else f"{', '.join(right[:-1])} and {right[-1]}"
            prefix = f"{listed} {'is' if len(right) == 1 else 'are'} right; "
        else:
            prefix = f"none of {', '.join(names)} is right; " if len(names) > 1 else ""
        try:
            expect_close(g, e, f"{name} ({what})")
        except CheckFailed as fail:
            raise CheckFailed(prefix + str(fail), mistake=fail.mistake) from None


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _course_code_used(ex: _Exercise, reference: str) -> tuple[str, bool, str, str, str]:
    return (f"no points for the course's own code: your `{ex.target}` calls {reference}, course code that "
            "does (part of) this exercise; compute it yourself", False, "course code", "", "")


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
    mistakes: tuple = ()        # the mistake table: Mistake rows
    references: tuple = ()      # the course's own answers to this exercise (never accepted)
    helpers: tuple = ()         # course functions that do a part of the exercise (not to be called)
    question: bool = False      # a concept question, answered with a value
    _forbidden: dict = field(default_factory=dict, repr=False)

    def forbidden(self) -> Callable[[Any], str | None]:
        """A test for code objects: the reference's name when ``code`` is one, else None.

        The references are the registered ones plus any course function named
        like the exercise's target (outside the checks themselves).
        """
        keys = _code_keys(self.references + self.helpers)
        cache = self._forbidden

        def test(code):
            try:
                return cache[code]
            except KeyError:
                pass
            path = os.path.realpath(code.co_filename)
            name = keys.get((path, code.co_name))
            if name is None and code.co_name == self.target and path.startswith(_DLCOURSE_DIR) \
                    and not path.endswith(("checks.py", "grading.py")):
                name = f"{path[len(_DLCOURSE_DIR):-3].replace(os.sep, '.')}.{code.co_name}"
                name = "dlcourse." + name
            cache[code] = name
            return name
        return test


class Checker:
    """The graded checks of one chapter; ``check.<exercise>(obj)`` runs one."""

    def __init__(self, chapter: str, name: str = "check"):
        self.chapter = chapter
        self.var = name  # the notebook's name for this object, used in "run check.hint(...)"
        self._exercises: dict[str, _Exercise] = {}
        self._hints_shown: dict[str, int] = {}

    # registering --------------------------------------------------------
    def exercise(self, points: float = 1, hints: list[str] | tuple[str, ...] = (),
                 target: str | None = None, seconds: float = 20.0, mistakes=(), reference=(), forbid=()):
        """Register a check body for the exercise of the same name.

        ``target`` is the name the learner defines in the notebook (default: the
        check's own name); ``seconds`` is the time limit for the whole check;
        ``mistakes`` is the exercise's mistake table (:class:`Mistake` rows);
        ``reference`` is the course's own answer (a function or class, or several):
        handed in, wrapped or subclassed, it earns no points; ``forbid`` lists course
        functions that do a part of the exercise (chapter 02's ``topological_order``
        for ``Value.backward``): a learner's code that calls one earns no points either.
        """
        def register(body):
            if not hints:
                raise ValueError(f"exercise {body.__name__!r} needs at least one hint")
            self._register(_Exercise(body.__name__, body, float(points), list(hints), target or body.__name__,
                                     seconds, tuple(mistakes), _as_tuple(reference), _as_tuple(forbid)))
            return body
        return register

    def question(self, name: str, *, answer, explanation: str, points: float = 1, mistakes=(),
                 choices: tuple | None = None, rtol: float = 1e-3, hints=(), target: str | None = None):
        """Register a concept question, answered with a value (a number, a shape, a choice).

        The learner answers with a function that returns the value, ``def
        q_name(): return ...`` (so that an unanswered question is "not
        implemented yet", like an exercise), or with the value itself.
        ``mistakes`` are :class:`Mistake` rows whose ``wrong`` is a wrong value;
        ``choices`` lists the accepted answers of a multiple-choice question
        (strings are compared without case and surrounding spaces); numbers are
        compared with ``rtol``.  Once answered right, the explanation is shown.
        """
        def same(got, want) -> bool:
            if isinstance(want, str):
                return isinstance(got, str) and got.strip().lower() == want.strip().lower()
            if isinstance(want, tuple):
                if isinstance(got, np.ndarray) and got.ndim == 1:
                    got = got.tolist()
                return isinstance(got, (tuple, list)) and len(got) == len(want) and \
                    all(same(g, w) for g, w in zip(got, want))
            if isinstance(want, bool) or isinstance(got, (bool, str)) or got is None:
                return type(got) is type(want) and got == want  # True is no answer to "how many?"
            if isinstance(want, (int, np.integer)):  # a count: exactly that number
                return isinstance(got, (int, float, np.integer, np.floating)) and float(got) == float(want)
            try:
                return bool(np.isclose(float(got), float(want), rtol=rtol, atol=0))
            except (TypeError, ValueError):
                return False

        def form(value) -> str | None:
            """What is wrong with the *form* of an answer (a number given as a string, ...)."""
            if isinstance(answer, bool):
                return None if isinstance(value, bool) else "answer True or False"
            if isinstance(answer, (int, float)) and not isinstance(value, (int, float, np.integer, np.floating)) \
                    or isinstance(value, bool):
                return f"return a number, not a {type(value).__name__} ({value!r})"
            if isinstance(answer, tuple) and not isinstance(value, (tuple, list, np.ndarray)):
                return f"return a shape as a tuple of numbers, such as (2, 3), not a {type(value).__name__}"
            if isinstance(answer, str) and not isinstance(value, str):
                return f"answer with one of the letters {', '.join(repr(c) for c in choices or (answer,))}"
            return None

        def body(obj):
            value = call(obj) if callable(obj) else obj
            if value is None or value is Ellipsis:
                raise CheckFailed("not answered yet: return your answer (a value) from the function")
            if same(value, answer):
                return f"right. {explanation}"
            for row in mistakes:
                if same(value, row.wrong):
                    raise CheckFailed(row.message, mistake=row.name)
            problem = form(value)
            if problem:
                raise CheckFailed(problem, mistake="answer's form")
            if choices is not None and not any(same(value, c) for c in choices):
                raise CheckFailed(f"{value!r} is not one of the choices: answer one of "
                                  f"{', '.join(repr(c) for c in choices)}")
            raise CheckFailed(f"{value!r} is not the answer; work it out again from the lesson")

        body.__name__ = name
        body.__doc__ = f"Concept question {name}."
        self._register(_Exercise(name, body, float(points), list(hints), target or name, 5.0,
                                 tuple(mistakes), (), question=True))

    def _register(self, ex: _Exercise) -> None:
        name = ex.name
        if name in self._exercises or name.startswith("_") or hasattr(Checker, name):
            raise ValueError(f"exercise name {name!r} is taken")
        self._exercises[name] = ex

        def run(obj=None):
            return self.run(name, obj)
        run.__name__ = name
        run.__doc__ = ex.body.__doc__
        setattr(self, name, run)

    @property
    def names(self) -> list[str]:
        return list(self._exercises)

    @property
    def max_points(self) -> float:
        """The chapter's total: the sum of every exercise's points."""
        return sum(ex.points for ex in self._exercises.values())

    def target(self, name: str) -> str:
        return self._exercises[name].target

    def mistakes(self, name: str) -> tuple:
        """The mistake table of exercise ``name`` (for tests and instructors)."""
        return self._exercises[name].mistakes

    def references(self, name: str) -> tuple:
        """The course's own answers to exercise ``name`` (which the lessons must not display)."""
        return self._exercises[name].references

    def forbidden_helpers(self, name: str) -> tuple:
        """Course functions that do a part of exercise ``name`` (the lessons must not display them either)."""
        return self._exercises[name].helpers

    def is_question(self, name: str) -> bool:
        return self._exercises[name].question

    # running ------------------------------------------------------------
    def run(self, name: str, obj: Any) -> Result:
        """Run one check on ``obj``; never raises, never hangs."""
        ex = self._exercises[name]
        message, passed, kind, mistake, details = self._outcome(ex, obj)
        return Result(name, passed, ex.points if passed else 0.0, ex.points, message,
                      hint=f"{self.var}.hint({name!r})" if ex.hints else "",
                      mistake=mistake, details=details, kind=kind)

    @staticmethod
    def _outcome(ex: _Exercise, obj: Any) -> tuple[str, bool, str, str, str]:
        """(message, passed, kind, mistake, details) of one check run."""
        if obj is None:
            return (f"not defined: write `{ex.target}` above, run its cell, then this one", False,
                    "not defined", "", "")
        if not ex.question and not any(obj is row.wrong for row in ex.mistakes):
            origin = _course_origin(obj)
            if origin is not None:
                return (f"no points for the course's own code: this `{ex.target}` is {origin}; "
                        "write your own (the reference is there to check yours)", False, "course code", "", "")
        watch = _Watch(ex.forbidden(), stop_code=getattr(ex.body, "__code__", None))
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                with time_limit(ex.seconds), watch:
                    message = ex.body(obj)
        except (NotImplementedError, _NotImplementedYet):
            return ("not implemented yet: replace the `raise NotImplementedError` with your code", False,
                    "not implemented", "", "")
        except CheckFailed as fail:
            if watch.hit:
                return _course_code_used(ex, watch.hit)
            kind = "raised" if getattr(fail, "error", None) is not None and not fail.mistake else ""
            return str(fail), False, kind, fail.mistake, fail.details
        except CheckTimeout:
            return (f"too slow: stopped after {ex.seconds:g} s (an endless loop, or a Python loop "
                    "where a vectorised NumPy expression would do?)"), False, "too slow", "", ""
        except RecursionError:
            return "raised RecursionError: the function calls itself without end", False, "raised", "", ""
        except Exception as err:  # the learner's object broke the check somewhere
            return f"raised {type(err).__name__} while being checked: {err}", False, "raised", "", ""
        if watch.hit:
            return _course_code_used(ex, watch.hit)
        return message or "correct", True, "", "", ""

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
        if not hints:
            return Hint(name, "", 0, 0, f"{name} is a concept question: it has no hints; reread the lesson "
                                        "section it names, and its explanation shows once you answer it right")
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
