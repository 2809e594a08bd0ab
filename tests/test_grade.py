"""The instructor's grader: fresh kernels, its own checks, clear lines for broken files."""
import csv
import json
from pathlib import Path

import nbformat
import pytest

from dlcourse import grade
from dlcourse.neurons.checks import check as neurons_check

ROOT = Path(__file__).resolve().parent.parent
SOLVED = ROOT / "solutions" / "01_neurons.ipynb"
EXERCISES = ROOT / "exercises" / "01_neurons.ipynb"


def with_cells(source: Path, target: Path, *cells: str, at_end: bool = True) -> Path:
    nb = nbformat.read(source, as_version=4)
    new = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells = nb.cells + new if at_end else new + nb.cells
    for i, cell in enumerate(nb.cells):
        cell.id = f"t-{i:03d}"
    nbformat.write(nb, target)
    return target


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade a batch of submissions once (each needs a kernel); tests read the results."""
    tmp = tmp_path_factory.mktemp("submissions")
    files = {
        "solved": SOLVED,
        # a learner who only pretends: prints fake results and tampers with the checker
        "cheat": with_cells(EXERCISES, tmp / "cheat_01_neurons.ipynb",
                            "print('DLCOURSE-GRADE-0000:[[\"softplus\", 2, 2, \"ok\"]]')\nprint('✓ all passed')",
                            "import dlcourse.grading as g\n"
                            "g.Checker._outcome = staticmethod(lambda ex, obj: ('correct', True))",
                            "import dlcourse.neurons.numpy_impl as ref\n"
                            "ref.softplus = lambda x: 0 * x\n"
                            "def softplus(x):\n    return 0 * x"),
        # correct functions, but a cell that raises and a cell that never ends
        "messy": with_cells(SOLVED, tmp / "messy_01_neurons.ipynb",
                            "1 / 0", "while True:\n    pass"),
        "not_json": tmp / "garbage_01_neurons.ipynb",
        "missing": tmp / "nobody.ipynb",
        "unknown": tmp / "homework.ipynb",
    }
    files["not_json"].write_text("this is not a notebook")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), files["unknown"])
    csv_path = tmp / "grades.csv"
    argv = [str(p) for p in files.values()] + ["--csv", str(csv_path), "--timeout", "10", "-j", "2"]
    code = grade.main(argv)
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = {Path(r["notebook"]).name: r for r in csv.DictReader(handle)}
    return code, files, rows


def test_solved_notebook_gets_full_marks(graded):
    _, files, rows = graded
    row = rows[files["solved"].name]
    assert row["status"] == "graded"
    assert float(row["points"]) == float(row["max_points"]) == neurons_check.max_points
    assert all(float(row[n]) > 0 for n in neurons_check.names)


def test_printed_output_and_tampering_never_count(graded):
    _, files, rows = graded
    row = rows[files["cheat"].name]
    assert row["status"] == "graded" and float(row["points"]) == 0


def test_errors_and_endless_cells_do_not_stop_grading(graded):
    _, files, rows = graded
    row = rows[files["messy"].name]
    assert float(row["points"]) == float(row["max_points"]) > 0
    assert row["status"] == "graded (2 cell(s) raised)"


def test_broken_files_get_one_clear_line_and_exit_status_2(graded):
    code, files, rows = graded
    assert code == 2
    assert rows[files["not_json"].name]["status"].startswith("not graded: not a readable Jupyter notebook")
    assert rows[files["missing"].name]["status"] == "not graded: file not found"
    assert "cannot tell which chapter" in rows[files["unknown"].name]["status"]


def test_exercises_notebook_scores_zero_with_not_implemented_messages(tmp_path):
    report = grade.grade_notebook(EXERCISES, cell_timeout=60)
    assert report.error == "" and report.points == 0 and report.max_points > 0
    assert all(m.startswith("not implemented") for m in report.messages.values())


def test_chapter_option_and_its_errors(tmp_path):
    nb = nbformat.v4.new_notebook()
    assert grade._chapter_of(nb, Path("x.ipynb"), "01") == "01_neurons"
    assert grade._chapter_of(nb, Path("x.ipynb"), "neurons") == "01_neurons"
    with pytest.raises(ValueError, match="matches no graded chapter"):
        grade._chapter_of(nb, Path("x.ipynb"), "99")
    assert grade._chapter_of(nb, Path("01_neurons (1).ipynb"), None) == "01_neurons"


def test_table_lists_each_check(capsys):
    report = grade.GradeReport("a.ipynb", "01_neurons", 2, 4, {"x": 2, "y": 0}, {"x": "ok", "y": "wrong"})
    text = grade._table([report])
    assert "2/4" in text and "✓ x: ok" in text and "✗ y: wrong" in text
    assert json.dumps(report.exercises)


# --------------------------------------------------------------------------- the course's own code handed in

def _reference_only_cells(stem: str) -> list[str]:
    """A notebook that hands in the course's answers: one cell that imports them by the exercises' names,
    and one that wraps each in a function of the learner's (the cheapest two ways to cheat)."""
    import inspect

    from checktools import checker
    check = checker(stem)
    imports, wrappers = [], []
    for name in check.names:
        if check.is_question(name):
            continue
        target = check.target(name)
        refs = check.references(name)
        if not refs:
            continue
        ref = refs[0]
        imports.append(f"from {ref.__module__} import {ref.__qualname__.split('.')[0]} as {target}")
        if not inspect.isclass(ref):
            wrappers.append(f"import {ref.__module__} as _course\n"
                            f"def {target}(*args, **kwargs):\n"
                            f"    return _course.{ref.__qualname__}(*args, **kwargs)")
    return ["\n".join(imports)] + wrappers


@pytest.mark.parametrize("how", ["imported", "wrapped"])
def test_the_course_reference_handed_in_earns_nothing_in_the_grader(tmp_path, how):
    from checktools import GRADED, every_chapter_or_a_sample
    paths = []
    for stem in every_chapter_or_a_sample(GRADED):        # every exercise of every chapter: tests/test_course.py
        cells = _reference_only_cells(stem)
        cells = cells[:1] if how == "imported" else cells[1:] or cells[:1]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        for i, cell in enumerate(nb.cells):
            cell.id = f"r-{i:03d}"
        path = tmp_path / f"{stem}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    reports = [grade.grade_notebook(p, cell_timeout=60) for p in paths]
    for report in reports:
        assert report.error == "" and report.cell_errors == 0, (report.path, report.error)
        assert report.points == 0, (report.path, report.exercises, report.messages)
        refused = [n for n, o in report.outcomes.items() if o == "course code"]
        assert refused, report.outcomes
        assert all(report.messages[n].startswith("no points for the course's own code") for n in refused)


def test_csv_tells_outcomes_apart_and_summary_counts_mistakes(tmp_path):
    reports = [
        grade.GradeReport("a.ipynb", "03_x", 2, 4, {"x": 2, "y": 0}, {"x": "ok", "y": "m"},
                          outcomes={"x": "passed", "y": "mistake: eps inside sqrt"}),
        grade.GradeReport("b.ipynb", "03_x", 0, 4, {"x": 0, "y": 0}, {"x": "n", "y": "m"},
                          outcomes={"x": "not implemented", "y": "mistake: eps inside sqrt"}),
        grade.GradeReport("c.ipynb", "03_x", 0, 4, {"x": 0, "y": 0}, {"x": "c", "y": "d"},
                          outcomes={"x": "course code", "y": "not defined"}),
        grade.GradeReport("d.ipynb", error="file not found"),
    ]
    target = tmp_path / "g.csv"
    grade.write_csv(reports, target)
    with open(target, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["y outcome"] for r in rows] == ["mistake: eps inside sqrt"] * 2 + ["not defined", ""]
    assert [r["x outcome"] for r in rows][:3] == ["passed", "not implemented", "course code"]
    text = grade.summary(reports)
    assert "summary of 3 graded notebook(s)" in text
    assert "x" in text and "1/3" in text and "0/3" in text
    assert "mistake: eps inside sqrt (2)" in text
    assert "1 notebook(s) could not be graded" in text


def test_summary_option_prints_the_class_summary(tmp_path, capsys):
    code = grade.main([str(EXERCISES), "--summary", "--timeout", "60", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "summary of 1 graded notebook(s)" in out and "not implemented (1)" in out
