"""Shared test tools for graded checks: the solutions as a learner would hand them in, and the audit
that every exercise of every chapter must pass (see tests/test_course.py)."""
from __future__ import annotations

import ast
import importlib
from functools import lru_cache
from pathlib import Path

from dlcourse.build import CHAPTERS

ROOT = Path(__file__).resolve().parent.parent

# Every chapter with graded exercises: stem -> the Checker of its concept.
GRADED = {stem: concept for stem, (_, concept) in CHAPTERS.items()
          if concept and (ROOT / "solutions" / f"{stem}.py").exists()}


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
