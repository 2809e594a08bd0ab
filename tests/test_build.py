"""The notebook build: deterministic, stamps Colab from one URL, strips solutions, detects stale notebooks."""
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import nbformat
import pytest

import dlcourse
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
        assert "accelerator" not in first.metadata  # the demo sources are NumPy-only
        assert first.metadata["dlcourse"] == {"chapter": "42_demo", "kind": target.kind,
                                              "version": dlcourse.__version__}
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
    for path in snapshot:  # executed locally, the set-up cell installs nothing and shows nothing
        setup = next(c for c in nbformat.read(path, 4).cells if c.cell_type == "code")
        assert setup.outputs == [], (path, setup.outputs)
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
    """A chapter lands in steps (concept, lesson, exercises): once it has checks, all three notebooks."""
    for stem, (_, concept) in build.CHAPTERS.items():
        if concept and (ROOT / "chapters" / f"{stem}.py").exists():
            folders = ["chapters"]
            if (ROOT / "dlcourse" / concept / "checks.py").exists():
                folders += ["solutions", "exercises"]
            for folder in folders:
                assert (ROOT / folder / f"{stem}.ipynb").exists(), f"{folder}/{stem}.ipynb"


def test_main_check_mode_reports(capsys):
    assert build.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


# --------------------------------------------------------------------------- Colab GPU metadata

@pytest.mark.parametrize("code, gpu", [
    ("import torch", True),
    ("import numpy as np\nimport torch.nn.functional as F", True),
    ("from torch import nn", True),
    ("from dlcourse.neurons import torch_impl as tt", True),
    ("from dlcourse.optim.torch_impl import train_torch", True),
    ("dev = dlcourse.device()", True),
    ("import numpy as np\nfrom dlcourse.neurons.numpy_impl import sigmoid", False),
    ("x = y.to(device)  # a name, not a call", False),
    ("print('torch is for later')", False),
    ("import torchvision_free_module", False),
])
def test_uses_gpu_rule(code, gpu):
    assert build.uses_gpu(["import numpy as np", code]) is gpu


def test_gpu_metadata_only_on_notebooks_that_use_pytorch(tmp_path):
    root = demo_tree(tmp_path)
    (root / "chapters" / "43_torch.py").write_text(
        "# %% [markdown]\n# Mentions `dlcourse.device()` in text only.\n\n# %%\nimport torch\n")
    (root / "chapters" / "44_text.py").write_text(
        "# %% [markdown]\n# `import torch` and `device()` in markdown do not count.\n\n# %%\nprint(1)\n")
    asked = {t.output.relative_to(root).as_posix(): build.render(t, root).metadata for t in build.targets(root)}
    assert asked["chapters/43_torch.ipynb"]["accelerator"] == "GPU"
    assert asked["chapters/43_torch.ipynb"]["colab"]["gpuType"] == "T4"
    for numpy_only in ("chapters/44_text.ipynb", "chapters/42_demo.ipynb",
                       "solutions/42_demo.ipynb", "exercises/42_demo.ipynb"):
        assert "accelerator" not in asked[numpy_only] and "gpuType" not in asked[numpy_only]["colab"]


def test_course_notebooks_ask_for_a_gpu_exactly_when_their_source_uses_pytorch():
    for target in build.targets(ROOT):
        text = target.source.read_text(encoding="utf-8")
        code_uses_torch = any(line.strip().startswith(("import torch", "from torch")) or "torch_impl" in line
                              for line in text.splitlines() if not line.lstrip().startswith("#"))
        metadata = build.render(target, ROOT).metadata
        assert ("accelerator" in metadata) == code_uses_torch, target.output.relative_to(ROOT)


# --------------------------------------------------------------------------- the set-up cell

def run_setup_cell(source=None):
    exec(compile(source or build.setup_cell(), "setup cell", "exec"), {})


@pytest.fixture
def on_colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def test_setup_cell_outside_colab_installs_nothing_and_prints_nothing(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run outside Colab"))
    run_setup_cell()
    assert capsys.readouterr() == ("", "")


def test_setup_cell_on_colab_shows_pips_reason_and_what_to_check(on_colab, monkeypatch, capsys):
    calls = []
    stderr = "\n".join([f"noise {i}" for i in range(30)] + [
        "  fatal: could not read Username for 'https://github.com': terminal prompts disabled",
        "ERROR: Failed to build 'dlcourse' when git clone ... did not run successfully."])

    def failing_pip(command, **kwargs):
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="repository is missing or private"):
        run_setup_cell()
    (command, kwargs), = calls
    assert command[-1] == f"dlcourse @ git+https://github.com/{build.REPOSITORY}@{build.BRANCH}"
    assert kwargs["env"]["GIT_TERMINAL_PROMPT"] == "0"  # fail at once, never wait for a password
    out = capsys.readouterr().out
    assert "could not read Username" in out and "Failed to build 'dlcourse'" in out
    assert "noise 3" not in out  # only the tail of pip's output


def test_setup_cell_on_colab_with_a_missing_repository_fails_with_gits_reason(on_colab, tmp_path, capsys):
    """The real pip and git, pointed at a repository that does not exist."""
    source = build.setup_cell().replace(f"git+https://github.com/{build.REPOSITORY}@{build.BRANCH}",
                                        f"git+file://{tmp_path}/missing-repository@main")
    with pytest.raises(RuntimeError, match="pip's reason is printed above"):
        run_setup_cell(source)
    reason = capsys.readouterr().out.split("pip says:", 1)[1]
    assert "missing-repository" in reason  # pip's (and git's) own words, whatever their version


def test_setup_cell_on_colab_prints_the_installed_version(on_colab, monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 0, "", ""))
    run_setup_cell()
    out, err = capsys.readouterr()
    assert f"dlcourse {dlcourse.__version__} is installed." in out and err == ""


def test_setup_cell_names_a_version_mismatch(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    run_setup_cell(build.setup_cell(version="0.0.1"))
    out, err = capsys.readouterr()
    assert out == ""
    assert f"built with dlcourse 0.0.1, but this Python has dlcourse {dlcourse.__version__}" in err
    assert "pip install -r requirements.txt" in err


def test_check_version_is_silent_when_versions_agree(capsys):
    assert dlcourse.runtime.check_version(dlcourse.__version__) is None  # a cell's last line: shows nothing
    assert capsys.readouterr() == ("", "")
    assert dlcourse.runtime.check_version("99.0") is None
    assert "built with dlcourse 99.0" in capsys.readouterr().err


def test_committed_setup_cells_and_metadata_record_the_package_version():
    for target in build.targets(ROOT):
        nb = build.render(target, ROOT)
        assert nb.metadata["dlcourse"]["version"] == dlcourse.__version__
        setup = next(c for c in nb.cells if c.cell_type == "code")
        assert f'check_version("{dlcourse.__version__}")' in setup.source


def test_package_version_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == dlcourse.__version__


def test_stored_widget_outputs_say_what_they_are_before_the_cell_runs():
    from dlcourse.build import WIDGET_MIME, WIDGET_PLACEHOLDER, widget_placeholders
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("w")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={
        WIDGET_MIME: {"model_id": "x", "version_major": 2, "version_minor": 0},
        "text/plain": "VBox(children=(Dropdown(description='surface'"}),
        nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 640x480 with 1 Axes>"})]
    widget_placeholders(nb)
    assert nb.cells[0].outputs[0].data["text/plain"] == WIDGET_PLACEHOLDER
    assert nb.cells[0].outputs[1].data["text/plain"].startswith("<Figure")


def test_committed_lessons_store_no_raw_widget_repr():
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        assert "VBox(children=" not in text and "HBox(children=" not in text, path.name
