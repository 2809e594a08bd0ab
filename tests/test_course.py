"""The course contract, for every chapter at once (DESIGN.md: "Exercises", "Mistake tables").

* every exercise has three hints, a mistake table of at least five rows, and a registered
  reference; every row of every table is proven: handed to the check, it fails with
  exactly its message and its name;
* the solution passes, the stub is "not implemented", and the course's own reference,
  handed in, wrapped, subclassed or partially applied, earns nothing;
* every chapter ends with three to five concept questions, each failing on every listed
  wrong value and passing on the answer;
* no lesson displays the code a graded exercise asks for; no hint is the whole answer.
"""
from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap

import pytest

from checktools import (GRADED, ROOT, all_exercises, all_mistakes, checker, exercises, solution,
                        solution_namespace, stub)

EXERCISES = all_exercises()
QUESTIONS = all_exercises(questions=True)
ids = [f"{stem[:2]}-{name}" for stem, name in EXERCISES]


@pytest.mark.parametrize("stem, name", EXERCISES, ids=ids)
def test_exercise_has_three_hints_five_mistakes_and_a_reference(stem, name):
    check = checker(stem)
    assert len(check.hints(name)) == 3, "hints go idea → approach → near-code: three of them"
    rows = check.mistakes(name)
    assert len(rows) >= 5, f"{name}: a mistake table needs at least five rows, has {len(rows)}"
    assert len({r.name for r in rows}) == len(rows), "mistake names must be unique"
    assert len({r.message for r in rows}) == len(rows), "each mistake gets its own message"
    assert check.references(name), f"{name}: register the course's own answer as reference="


@pytest.mark.parametrize("stem, name", EXERCISES, ids=ids)
def test_solution_passes_and_stub_is_not_implemented(stem, name):
    check = checker(stem)
    result = check.run(name, solution(stem, name))
    assert result.passed, f"{name}: {result.message}\n{result.details}"
    result = check.run(name, stub if not inspect.isclass(solution(stem, name)) else _stub_class(stem, name))
    assert result.status == "not implemented", result.message


def _stub_class(stem, name):
    cls = solution(stem, name)
    body = {k: (lambda *a, **kw: stub()) for k, v in vars(cls).items() if inspect.isfunction(v)
            and k != "__init__"}
    return type(cls.__name__, cls.__bases__, {**vars(cls), **body})


@pytest.mark.parametrize("stem, name, row", all_mistakes(),
                         ids=[f"{s[:2]}-{n}-{r.name}" for s, n, r in all_mistakes()])
def test_every_mistake_row_is_named_by_its_check(stem, name, row):
    result = checker(stem).run(name, row.wrong)
    assert not result.passed and result.points == 0
    assert result.message.startswith(row.message), f"expected {row.message!r}\n got {result.message!r}"
    assert result.mistake == row.name


def _wrappers(reference):
    """The ways a learner might hand in the course's own answer."""
    if inspect.isclass(reference):
        yield "the class itself", reference
        yield "a subclass", type(reference.__name__, (reference,), {})
        return
    yield "the function itself", reference
    yield "a lambda around it", lambda *args, **kwargs: reference(*args, **kwargs)
    yield "functools.partial", functools.partial(reference)

    def wrapper(*args, **kwargs):
        result = reference(*args, **kwargs)
        return result
    yield "a def that calls it", wrapper


@pytest.mark.parametrize("stem, name", EXERCISES, ids=ids)
def test_the_course_reference_earns_nothing(stem, name):
    check = checker(stem)
    for reference in check.references(name):
        for how, obj in _wrappers(reference):
            result = check.run(name, obj)
            assert not result.passed and result.status == "course code", (how, result.message)
            assert "no points for the course's own code" in result.message


@pytest.mark.parametrize("stem", GRADED)
def test_each_chapter_ends_with_three_to_five_concept_questions(stem):
    assert 3 <= len(exercises(stem, questions=True)) <= 5


@pytest.mark.parametrize("stem, name", QUESTIONS, ids=[f"{s[:2]}-{n}" for s, n in QUESTIONS])
def test_concept_question_right_and_wrong(stem, name):
    check = checker(stem)
    answer = solution(stem, name)
    result = check.run(name, answer)
    assert result.passed and result.message.startswith("right."), result.message
    assert check.run(name, stub).status == "not implemented"
    assert check.mistakes(name), f"{name}: list the wrong answers learners give"
    for row in check.mistakes(name):
        result = check.run(name, row.wrong)
        assert not result.passed and result.message == row.message and result.mistake == row.name


# --------------------------------------------------------------------------- lessons never show answers

def _reference_functions():
    for stem, name in EXERCISES:
        check = checker(stem)
        for reference in check.references(name) + check.forbidden_helpers(name):
            members = [reference]
            if inspect.isclass(reference):
                members = [v for v in vars(reference).values() if inspect.isfunction(v)]
            for member in members:
                yield f"{stem}:{name}", member


def _normalised_body(fn) -> list[str]:
    """The statements of ``fn``'s body without its docstring, one normalised line each."""
    source = textwrap.dedent(inspect.getsource(fn))
    node = ast.parse(source).body[0]
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return [re.sub(r"\s+", " ", ast.unparse(stmt)).strip() for stmt in body]


def _lesson_shown_objects(path):
    """Every object a lesson passes to show_source, resolved with the lesson's own imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    namespace: dict = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), str(path), "exec"), namespace)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show_source" and node.args:
            expr = ast.unparse(node.args[0])
            try:
                yield expr, eval(expr, namespace)  # noqa: S307 - our own lesson source
            except Exception:
                pass  # a name the lesson defines itself: not the package's reference


LESSONS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_never_displays_an_exercise_answer(lesson):
    references = list(_reference_functions())
    shown = list(_lesson_shown_objects(lesson))
    for expr, obj in shown:
        obj = getattr(obj, "__func__", obj)
        members = [obj] + ([v for v in vars(obj).values() if inspect.isfunction(v)] if inspect.isclass(obj) else [])
        for exercise, reference in references:
            assert all(m is not reference for m in members), \
                f"{lesson.name} shows {expr}, the answer to exercise {exercise}"
    text = re.sub(r"\s+", " ", lesson.read_text(encoding="utf-8"))
    for exercise, reference in references:
        lines = [line for line in _normalised_body(reference) if len(line) > 25]
        copied = [line for line in lines if line in text]
        assert len(copied) < max(2, len(lines) // 2), \
            f"{lesson.name} copies the answer to {exercise}: {copied}"


@pytest.mark.parametrize("stem, name", EXERCISES, ids=ids)
def test_no_hint_is_the_whole_answer(stem, name):
    answer = solution(stem, name)
    if inspect.isclass(answer):
        return  # a class exercise's hints name one method at a time
    statements = [s for s in _normalised_body(answer) if len(s) > 12 and not s.startswith("return")]
    hints = re.sub(r"\s+", " ", " ".join(checker(stem).hints(name)))
    if statements:
        assert not all(s in hints for s in statements), f"the hints of {name} spell out the whole solution"


def test_solutions_define_every_target():
    for stem in GRADED:
        check = checker(stem)
        namespace = solution_namespace(stem)
        assert all(check.target(n) in namespace for n in check.names), stem
