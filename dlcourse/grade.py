"""Grade submitted exercise notebooks: ``python -m dlcourse.grade NOTEBOOK... --csv grades.csv``.

For each notebook the grader

1. reads it (a file that is missing, not JSON, or not a notebook gets one clear
   line in the table, never a traceback),
2. finds its chapter from the metadata the build stamps (or from the file name,
   ``NN_topic``, or ``--chapter``),
3. throws away every stored output and executes the notebook in a fresh kernel
   with a time limit per cell, errors allowed (a learner's broken cell costs that
   exercise, not the notebook),
4. then, in that kernel, imports the chapter's checks afresh (every ``dlcourse``
   module is dropped and imported again, so patches a notebook made to the
   checks or to the reference code do not count) and runs every check itself
   against the names the notebook defined.

What the notebook printed never counts: only the results of step 4, passed back
with a per-run random marker, are scored.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import secrets
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GradeReport", "grade_notebook", "main", "summary", "write_csv"]


@dataclass
class GradeReport:
    path: str
    chapter: str = ""
    points: float = 0.0
    max_points: float = 0.0
    exercises: dict[str, float] = field(default_factory=dict)   # name -> points earned
    messages: dict[str, str] = field(default_factory=dict)      # name -> check message
    outcomes: dict[str, str] = field(default_factory=dict)      # name -> passed / not implemented /
    #   not defined / course code / too slow / raised / failed / "mistake: <name of the mistake>"
    error: str = ""          # why the notebook could not be graded at all
    cell_errors: int = 0     # cells that raised while the notebook ran

    @property
    def status(self) -> str:
        if self.error:
            return f"not graded: {self.error}"
        return "graded" + (f" ({self.cell_errors} cell(s) raised)" if self.cell_errors else "")


def _concepts() -> dict[str, str]:
    from dlcourse.build import CHAPTERS
    return {stem: concept for stem, (_, concept) in CHAPTERS.items() if concept}


def _chapter_of(nb, path: Path, forced: str | None) -> str:
    concepts = _concepts()
    if forced:
        matches = [s for s in concepts if forced in (s, s[:2], s[3:])]
        if len(matches) != 1:
            raise ValueError(f"--chapter {forced!r} matches no graded chapter; choose from {', '.join(concepts)}")
        return matches[0]
    stamped = nb.metadata.get("dlcourse", {}).get("chapter")
    if stamped in concepts:
        return stamped
    # The chapter number anywhere in the name: "01_neurons (1)", "Copy of 01_neurons" (a browser's or
    # Drive's copy), "jsmith - 01_neurons"; a name that starts with it wins.
    numbers = re.findall(r"(?<![0-9])([0-9]{2})_", path.stem)
    for number in numbers:
        for stem in concepts:
            if stem.startswith(number + "_"):
                return stem
    raise ValueError("cannot tell which chapter this is (no dlcourse metadata, no NN_ in the file name); "
                     "pass --chapter")


_GRADER_CELL = """\
import importlib as _il, json as _json, sys as _sys
for _name in [m for m in _sys.modules if m == "dlcourse" or m.startswith("dlcourse.")]:
    del _sys.modules[_name]  # fresh checks and references, whatever the notebook patched
_checks = _il.import_module({module!r})
_results = _checks.check.grade(dict(globals()))
print({marker!r} + _json.dumps([[r.name, r.points, r.max_points, r.message, r.outcome] for r in _results]))
"""


def grade_notebook(path: str | Path, chapter: str | None = None, cell_timeout: int = 120,
                   startup_timeout: int = 60) -> GradeReport:
    """Execute one notebook in a fresh kernel and score it; never raises."""
    import nbformat
    from nbclient import NotebookClient

    from dlcourse.build import KERNEL_QUIET  # the build starts its kernels the same way

    path = Path(path)
    report = GradeReport(str(path))
    if not path.is_file():
        report.error = "file not found"
        return report
    try:
        nb = nbformat.read(path, as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no cells")
    except Exception as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        report.error = f"not a readable Jupyter notebook ({reason})"
        return report
    try:
        report.chapter = chapter_stem = _chapter_of(nb, path, chapter)
    except ValueError as err:
        report.error = str(err)
        return report

    for cell in nb.cells:  # stored outputs never count
        if cell.get("cell_type") == "code":
            cell.outputs, cell.execution_count = [], None
    marker = f"DLCOURSE-GRADE-{secrets.token_hex(8)}:"
    module = f"dlcourse.{_concepts()[chapter_stem]}.checks"
    nb.cells.append(nbformat.v4.new_code_cell(_GRADER_CELL.format(module=module, marker=marker)))
    client = NotebookClient(nb, timeout=cell_timeout, startup_timeout=startup_timeout, allow_errors=True,
                            interrupt_on_timeout=True, kernel_name="python3", record_timing=False, extra_arguments=KERNEL_QUIET,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute()
    except Exception as err:  # kernel died, could not start, ...
        report.error = f"the notebook could not be run ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
        return report

    report.cell_errors = sum(1 for c in nb.cells[:-1] if c.cell_type == "code"
                             and any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    lines = [line for o in nb.cells[-1].get("outputs", []) if o.get("name") == "stdout"
             for line in o.get("text", "").splitlines() if line.startswith(marker)]
    if not lines:
        errors = [o for o in nb.cells[-1].get("outputs", []) if o.get("output_type") == "error"]
        why = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else "no result"
        report.error = f"the checks could not run in this notebook's kernel ({why})"
        return report
    for name, points, max_points, message, outcome in json.loads(lines[-1][len(marker):]):
        report.exercises[name] = points
        report.messages[name] = message
        report.outcomes[name] = outcome
        report.points += points
        report.max_points += max_points
    return report


def _table(reports: list[GradeReport]) -> str:
    width = max([8] + [len(r.path) for r in reports])
    lines = [f"{'notebook':<{width}}  {'chapter':<20}  {'score':>9}  status"]
    for r in reports:
        score = f"{r.points:g}/{r.max_points:g}" if not r.error else "-"
        lines.append(f"{r.path:<{width}}  {r.chapter:<20}  {score:>9}  {r.status}")
        for name, message in r.messages.items():
            mark = "✓" if r.exercises[name] > 0 else "✗"
            lines.append(f"{'':<{width}}    {mark} {name}: {message}")
    return "\n".join(lines)


def _exercise_names(reports: list[GradeReport]) -> list[str]:
    """Every exercise seen in ``reports``, in the order first seen."""
    return list(dict.fromkeys(n for r in reports for n in r.exercises))


def write_csv(reports: list[GradeReport], target: str | Path) -> None:
    """One row per notebook: total, max, then for every exercise seen its points and its outcome.

    The outcome tells apart what the points cannot: ``passed``, ``not
    implemented`` (the stub is still there), ``not defined`` (the name is
    missing), ``course code`` (the course's own answer handed in), ``too slow``,
    ``raised``, ``failed``, or ``mistake: <name>`` for a classic mistake the
    check recognised.
    """
    names = _exercise_names(reports)
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["notebook", "chapter", "points", "max_points", "status",
                         *[column for n in names for column in (n, f"{n} outcome")]])
        for r in reports:
            cells = []
            for n in names:
                cells += [f"{r.exercises[n]:g}" if n in r.exercises else "", r.outcomes.get(n, "")]
            writer.writerow([r.path, r.chapter, f"{r.points:g}", f"{r.max_points:g}", r.status, *cells])


def summary(reports: list[GradeReport], top: int = 3) -> str:
    """Per exercise, across a class: how many passed, and the most common outcomes of the rest.

    What an instructor reads before the next lecture: which exercise the class
    found hard, and which classic mistakes it made most often.
    """
    graded = [r for r in reports if not r.error]
    names = _exercise_names(graded)
    if not graded:
        return "summary: no notebook could be graded"
    width = max(len("exercise"), *(len(n) for n in names)) if names else len("exercise")
    lines = [f"summary of {len(graded)} graded notebook(s)",
             f"{'exercise':<{width}}  {'passed':>9}  most common outcomes of the others"]
    for name in names:
        outcomes = [r.outcomes.get(name, "not defined") for r in graded]
        passed = sum(o == "passed" for o in outcomes)
        others = Counter(o for o in outcomes if o != "passed").most_common(top)
        common = "; ".join(f"{o} ({k})" for o, k in others) or "-"
        lines.append(f"{name:<{width}}  {f'{passed}/{len(outcomes)}':>9}  {common}")
    failed = len(reports) - len(graded)
    if failed:
        lines.append(f"({failed} notebook(s) could not be graded: see the table above)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.grade",
                                     description="Execute exercise notebooks in fresh kernels and score them.")
    parser.add_argument("notebooks", nargs="+", help="submitted .ipynb files")
    parser.add_argument("--csv", help="also write the scores to this CSV file")
    parser.add_argument("--chapter", help="grade as this chapter (e.g. 01_neurons) instead of the notebook's own")
    parser.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell (default 120)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded in parallel")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the totals, not each check's message")
    parser.add_argument("--summary", action="store_true",
                        help="also print, per exercise, how many passed and the most common mistakes")
    args = parser.parse_args(argv)

    def one(p):
        return grade_notebook(p, chapter=args.chapter, cell_timeout=args.timeout)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = list(pool.map(one, args.notebooks))
    if args.quiet:
        for r in reports:
            r.messages = {}
    print(_table(reports))
    if args.summary:
        print()
        print(summary(reports))
    if args.csv:
        write_csv(reports, args.csv)
        print(f"wrote {args.csv}")
    return 2 if any(r.error for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
