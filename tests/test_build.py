"""The notebook build: deterministic, stamps Colab from one URL, strips solutions, detects stale notebooks."""
import textwrap
from pathlib import Path

import nbformat
import pytest

from dlcourse import build

ROOT = Path(__file__).resolve().parent.parent

SOLVED = textwrap.dedent('''\
    # %% [markdown]
    # # 42 · Demo

    # %%
    import numpy as np

    # %%
    def square(x):
        """Return x squared."""
        ### BEGIN SOLUTION
        y = x * x
        return y
        ### END SOLUTION

    # %%
    class Box:
        def value(self):
            ### BEGIN SOLUTION
            return 3
            ### END SOLUTION
    ''')


def demo_tree(tmp_path):
    for folder in ("chapters", "solutions", "exercises"):
        (tmp_path / folder).mkdir()
    (tmp_path / "solutions" / "42_demo.py").write_text(SOLVED)
    (tmp_path / "chapters" / "42_demo.py").write_text("# %% [markdown]\n# # 42 · Demo lesson\n\n# %%\nprint(1)\n")
    return tmp_path


def test_strip_solutions_keeps_indentation_and_raises_when_called():
    stripped = build.strip_solutions(SOLVED, "demo")
    assert "### BEGIN SOLUTION" not in stripped and "x * x" not in stripped and "return 3" not in stripped
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()" in stripped
    assert "        # YOUR CODE HERE\n        raise NotImplementedError()" in stripped
    namespace = {}
    code = "\n".join(line for line in stripped.splitlines() if not line.startswith("# %%"))
    exec(compile(code, "demo", "exec"), namespace)  # defining the stubs is fine
    with pytest.raises(NotImplementedError):
        namespace["square"](2)
    with pytest.raises(NotImplementedError):
        namespace["Box"]().value()


@pytest.mark.parametrize("source, words", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "not inside a function body"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION", "without"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n", "nested"),
])
def test_malformed_solution_regions_name_the_problem(source, words):
    with pytest.raises(build.BuildError, match=words):
        build.strip_solutions(source, "solutions/42_demo.py cell 3")


def test_render_is_deterministic_and_stamped(tmp_path):
    root = demo_tree(tmp_path)
    found = build.targets(root)
    assert [(t.output.relative_to(root).as_posix(), t.kind) for t in found] == [
        ("chapters/42_demo.ipynb", "lesson"),
        ("solutions/42_demo.ipynb", "solutions"),
        ("exercises/42_demo.ipynb", "exercises")]
    for target in found:
        first, second = build.render(target, root), build.render(target, root)
        assert first == second
        ids = [c.id for c in first.cells]
        assert len(set(ids)) == len(ids)
        assert first.metadata["accelerator"] == "GPU"
        assert first.metadata["dlcourse"] == {"chapter": "42_demo", "kind": target.kind}
        rel = target.output.relative_to(root).as_posix()
        assert build.colab_url(rel) in first.cells[0].source
        setup = next(c for c in first.cells if c.cell_type == "code")
        assert f"git+https://github.com/{build.REPOSITORY}@{build.BRANCH}" in setup.source
        assert '"google.colab" in sys.modules' in setup.source
    exercises = build.render(found[2], root)
    assert all("BEGIN SOLUTION" not in c.source for c in exercises.cells)
    solutions = build.render(found[1], root)
    assert any("x * x" in c.source for c in solutions.cells)


def test_build_twice_writes_identical_notebooks_and_check_notices_edits(tmp_path):
    root = demo_tree(tmp_path)
    (root / "README.md").write_text(f"# demo\n{build.MAP_START}\n{build.MAP_END}\n")
    readme = build.readme_with_map((root / "README.md").read_text(), root)
    (root / "README.md").write_text(readme)
    for target in build.targets(root):
        build.build_one(target, execute_it=True, root=root)
    snapshot = {p: p.read_text() for p in root.rglob("*.ipynb")}
    for target in build.targets(root):
        build.build_one(target, execute_it=True, root=root)
    structure = {p: build._structure(nbformat.read(p, 4)) for p in snapshot}
    assert all(build._structure(nbformat.reads(text, 4)) == structure[p] for p, text in snapshot.items())
    assert build.check(root) == []

    lesson = root / "chapters" / "42_demo.ipynb"
    nb = nbformat.read(lesson, 4)
    nb.cells[-1].source = "print(2)"
    nbformat.write(nb, lesson)
    assert build.check(root) == ["chapters/42_demo.ipynb: cell les-003 differs from its source chapters/42_demo.py"]

    (root / "solutions" / "42_demo.py").write_text(SOLVED + "\n# %%\nprint('new cell')\n")
    problems = build.check(root)
    assert any("exercises/42_demo.ipynb" in p and "cells" in p for p in problems)

    (root / "exercises" / "43_orphan.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    assert any("43_orphan.ipynb: no source" in p for p in build.check(root))


def test_committed_notebooks_and_readme_are_up_to_date():
    """CI's `python -m dlcourse.build --check`, also run by the test command."""
    assert build.check(ROOT) == []


def test_every_graded_chapter_has_its_three_notebooks():
    for stem, (_, concept) in build.CHAPTERS.items():
        if concept and (ROOT / "chapters" / f"{stem}.py").exists():
            for folder in ("chapters", "solutions", "exercises"):
                assert (ROOT / folder / f"{stem}.ipynb").exists(), f"{folder}/{stem}.ipynb"


def test_main_check_mode_reports(capsys):
    assert build.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
