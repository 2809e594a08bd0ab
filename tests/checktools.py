"""Shared test tools for graded checks: the solutions as a learner would hand them in, and the audit
that every exercise of every chapter must pass (see tests/test_course.py)."""
from __future__ import annotations

import ast
import importlib
import os
from functools import lru_cache
from pathlib import Path

from dlcourse.build import CHAPTERS

ROOT = Path(__file__).resolve().parent.parent

# Every chapter with graded exercises: stem -> the Checker of its concept.
GRADED = {stem: concept for stem, (_, concept) in CHAPTERS.items()
          if concept and (ROOT / "solutions" / f"{stem}.py").exists()}


def every_chapter_or_a_sample(stems) -> list[str]:
    """The chapters an end-to-end test (a real browser, the grader's fresh kernels) runs on: every one when
    DLCOURSE_EVERY_CHAPTER=1, else the first, a middle and the last.

    These tests prove a path that is the same for every chapter (typing in JupyterLab, grading in a new
    kernel); what differs per chapter (each check's verdicts, the course's code refused, every notebook
    running) is proven for every chapter by tests/test_course.py and nbval.  The sample keeps CI inside its
    30 minutes; run the whole set before a release or after a change to the grader or the browser path.
    """
    stems = sorted(stems)
    if os.environ.get("DLCOURSE_EVERY_CHAPTER") == "1" or len(stems) <= 3:
        return stems
    return [stems[0], stems[len(stems) // 2], stems[-1]]


def checker(stem: str):
    return importlib.import_module(f"dlcourse.{GRADED[stem]}.checks").check


@lru_cache(maxsize=None)
def solution_namespace(stem: str) -> dict:
    """The names ``solutions/<stem>.py`` defines, compiled from that file as a learner's notebook would be.

    Top-level check calls (``check.x(x)``, ``check.scoreboard()``, ``check.hint(...)``) are
    left out, so this only defines.  The functions' code lives in ``solutions/``, outside the
    ``dlcourse`` package, exactly like code typed in a notebook.
    """
    path = ROOT / "solutions" / f"{stem}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if not _is_check_call(node)]
    namespace: dict = {"__name__": f"solution_{stem}"}
    exec(compile(tree, str(path), "exec"), namespace)
    return namespace


def _is_check_call(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == "check")


def solution(stem: str, name: str):
    """The solution's answer to exercise ``name`` of chapter ``stem``."""
    check = checker(stem)
    return solution_namespace(stem)[check.target(name)]


def stub(*args, **kwargs):
    raise NotImplementedError()


def exercises(stem: str, questions: bool = False) -> list[str]:
    check = checker(stem)
    return [n for n in check.names if check.is_question(n) == questions]


def all_exercises(questions: bool = False) -> list[tuple[str, str]]:
    return [(stem, name) for stem in GRADED for name in exercises(stem, questions)]


def all_mistakes(questions: bool = False) -> list[tuple[str, str, object]]:
    return [(stem, name, row) for stem, name in all_exercises(questions)
            for row in checker(stem).mistakes(name)]
