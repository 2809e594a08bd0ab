"""Build the notebooks from their py:percent sources: ``python -m dlcourse.build``.

Sources of truth are text files (clean diffs, lintable):

* ``chapters/NN_topic.py``  → ``chapters/NN_topic.ipynb``   (the lesson)
* ``solutions/NN_topic.py`` → ``solutions/NN_topic.ipynb``  (the exercises, solved)
                            → ``exercises/NN_topic.ipynb``  (each ``### BEGIN SOLUTION`` …
                              ``### END SOLUTION`` region replaced by a stub that raises
                              ``NotImplementedError`` when called)

Every notebook gets, from the one place that holds the repository URL
(:data:`REPOSITORY`): an "Open in Colab" badge, a first code cell that installs
the package on Colab only (see :func:`setup_cell`), the dlcourse version it was
built with (``metadata.dlcourse.version``), Colab GPU metadata when it uses
PyTorch (see :func:`uses_gpu`), and fixed cell ids.  The README's course map is
regenerated between its markers from the same data.

``python -m dlcourse.build`` executes every notebook and stores its outputs (the
committed outputs are what nbval compares against).  ``--check`` executes
nothing: it fails when a committed notebook's cells, ids or metadata, or the
README course map, differ from what the build would write.  Running the build
twice changes no cell source, id or metadata (outputs are re-executed, and are
nbval's to validate).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

from dlcourse import __version__

REPOSITORY = "dlcourse/dlcourse"  # GitHub owner/name: the only place the URL lives
BRANCH = "main"
ROOT = Path(__file__).resolve().parent.parent

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MAP_START, MAP_END = "<!-- course-map:start -->", "<!-- course-map:end -->"

# What each chapter builds, for the README course map; chapters without a
# source yet are listed as planned so a learner sees the whole road.
CHAPTERS = {
    "00_welcome": ("How the course works: lessons, exercises, checks, grading, Colab and GPU", None),
    "01_neurons": ("The artificial neuron, activations and their derivatives, dense layers, XOR, a first MLP", "neurons"),
    "02_backprop": ("A scalar autograd engine, layer-by-layer backprop, gradient checking, an MLP's backward", "backprop"),
    "03_gradient_descent": ("Loss landscapes, SGD, momentum, RMSProp, Adam, schedules; an MLP on digits to 97%", "optim"),
    "04_training": ("Losses, metrics, data, regularization, batch norm, initialization, tuning", "training"),
    "05_cnn": ("Convolution and pooling by hand, a CNN on digits, transfer learning", "cnn"),
    "06_rnn": ("RNN, LSTM and GRU by hand, backprop through time, a character language model", "rnn"),
    "07_transformer": ("Attention by hand, multi-head attention, layer norm, a GPT trained from scratch, the KV cache, RNN vs Transformer", "transformer"),
    "08_gan": ("Autoencoders and VAEs, a GAN by hand on a ring of Gaussians, mode collapse and R1, a digits GAN measured with IS and FID", "gan"),
    "09_xai": ("Attributions (saliency, Integrated Gradients, Grad-CAM, occlusion, Shapley values) checked by their axioms and sanity checks; adversarial examples and training; a planted shortcut and fairness metrics", "xai"),
    "10_efficiency": ("Measuring cost (FLOPs, latency, energy); magnitude pruning, int8 quantization by hand and in PyTorch, distillation, mixed precision, torch.compile; data-parallel training on torch.distributed, ring all-reduce, federated averaging", "efficiency"),
}


class BuildError(Exception):
    """A source the build cannot turn into a notebook; the message names file and line."""


# --------------------------------------------------------------------------- stamping

# The kernel logs only errors: ipykernel 7 warns "running over TCP without encryption" on every
# start, which alarms instructors and says nothing about the notebook (it runs on localhost).
KERNEL_QUIET = ["--log-level=ERROR"]

def colab_url(path: str) -> str:
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{path}"


def badge(path: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(path)})")


def setup_cell(version: str = __version__) -> str:
    """The first code cell of every notebook.

    On Colab it installs the package from GitHub.  pip runs with
    ``GIT_TERMINAL_PROMPT=0``, so a missing or private repository fails at once
    instead of waiting for a password, and a failure shows the end of pip's own
    error output and what to check.  Everywhere it then compares the installed
    package with the ``version`` this notebook was built with
    (:func:`dlcourse.runtime.check_version`), silently when they agree.
    """
    return f'''\
# Set-up: on Google Colab this installs the course package (about a minute); anywhere
# else the README's install command already did.  Then it checks that the package is
# the version this notebook was made for (and says nothing when it is).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    print("Installing dlcourse from https://github.com/{REPOSITORY} ...")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                          "dlcourse @ git+https://github.com/{REPOSITORY}@{BRANCH}"],
                         capture_output=True, text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
    if pip.returncode != 0:
        print("pip says:", *pip.stderr.strip().splitlines()[-12:], sep="\\n")
        raise RuntimeError(
            "Installing dlcourse failed; pip's reason is printed above. Check that "
            "https://github.com/{REPOSITORY} opens in your browser (\\"could not read Username\\" means the "
            "repository is missing or private, not that you must log in), then run this cell again.")
import dlcourse

if "google.colab" in sys.modules:
    print("dlcourse", dlcourse.__version__, "is installed.")
dlcourse.runtime.check_version("{version}")'''


SETUP_CELL = setup_cell()

# A notebook asks Colab for a GPU runtime only when it uses PyTorch: one of its
# code cells imports torch or a ``torch_impl`` twin, or calls ``device(...)``.
# NumPy-only notebooks (the exercises of chapters 01-03) open on a CPU runtime,
# which Colab hands out at once and which spends none of the learner's GPU quota.
GPU_CODE = re.compile(r"^\s*(?:import|from)\s+torch\b|\btorch_impl\b|\bdevice\(", re.MULTILINE)


def uses_gpu(code_sources: list[str]) -> bool:
    """Whether a notebook with these code cells should ask Colab for a GPU (see :data:`GPU_CODE`)."""
    return any(GPU_CODE.search(source) for source in code_sources)


def notebook_metadata(stem: str, kind: str, gpu: bool = True, version: str = __version__) -> dict:
    colab = {"provenance": [], "toc_visible": True}
    metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": colab,
        "dlcourse": {"chapter": stem, "kind": kind, "version": version},
    }
    if gpu:  # Colab opens a GPU runtime when the notebook asks for one
        metadata["accelerator"] = "GPU"
        colab["gpuType"] = "T4"
    return metadata


# --------------------------------------------------------------------------- sources → notebooks

def strip_solutions(source: str, where: str) -> str:
    """Replace every solution region of a code cell by a stub; keep the rest verbatim."""
    out, inside, start = [], False, 0
    for number, line in enumerate(source.split("\n"), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise BuildError(f"{where}: nested {BEGIN} at cell line {number}")
            indent = line[: len(line) - len(line.lstrip())]
            if not indent:
                raise BuildError(f"{where}: {BEGIN} at cell line {number} is not inside a function body; "
                                 "a stub must raise when called, not when the cell runs")
            out.extend(indent + s for s in STUB)
            inside, start = True, number
        elif marker == END:
            if not inside:
                raise BuildError(f"{where}: {END} without {BEGIN} at cell line {number}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise BuildError(f"{where}: {BEGIN} at cell line {start} is never closed")
    return "\n".join(out)


@dataclass(frozen=True)
class Target:
    source: Path   # the py:percent file
    output: Path   # the .ipynb to write
    kind: str      # "lesson", "solutions" or "exercises"

    @property
    def stem(self) -> str:
        return self.source.stem


def targets(root: Path = ROOT, names: list[str] | None = None, kind: str | None = None) -> list[Target]:
    """What the build writes; ``kind`` "lesson" or "solutions" (with its exercises) keeps one half."""
    found = []
    for folder, what in (("chapters", "lesson"), ("solutions", "solutions")):
        if kind and kind != what:
            continue
        for src in sorted((root / folder).glob("[0-9][0-9]_*.py")):
            if names and not any(n in src.stem for n in names):
                continue
            found.append(Target(src, src.with_suffix(".ipynb"), what))
            if what == "solutions":
                found.append(Target(src, root / "exercises" / f"{src.stem}.ipynb", "exercises"))
    return found


def render(target: Target, root: Path = ROOT) -> nbformat.NotebookNode:
    """The notebook the build writes for ``target``, without outputs."""
    import jupytext  # a build-time dependency only

    text = target.source.read_text(encoding="utf-8")
    parsed = jupytext.reads(text, fmt="py:percent")
    rel = target.output.relative_to(root).as_posix()
    cells = [nbformat.v4.new_markdown_cell(badge(rel))]
    if target.kind == "solutions":
        cells.append(nbformat.v4.new_markdown_cell(
            f"> **Solved version.** Work through `exercises/{target.stem}.ipynb` first; come here to compare."))
    if target.kind == "exercises":
        cells.append(nbformat.v4.new_markdown_cell(
            "> **Your exercise notebook.** Fill in every `# YOUR CODE HERE`, run the check cell under it, "
            "and ask `check.hint(\"name\")` when stuck. Run all cells to see your score at the end."))
    cells.append(nbformat.v4.new_code_cell(setup_cell()))
    for index, cell in enumerate(parsed.cells):
        source = cell.source
        if target.kind == "exercises" and cell.cell_type == "code":
            source = strip_solutions(source, f"{target.source.relative_to(root)} cell {index + 1}")
        if not source.strip():
            continue
        meta = {k: v for k, v in cell.metadata.items() if k in ("tags",)}
        if cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(source, metadata=meta))
        else:
            cells.append(nbformat.v4.new_code_cell(source, metadata=meta))
    # Solutions and exercises decide alike, from the whole source (solution regions included).
    gpu = uses_gpu([c.source for c in parsed.cells if c.cell_type == "code"])
    nb = nbformat.v4.new_notebook(cells=cells, metadata=notebook_metadata(target.stem, target.kind, gpu))
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        cell.id = f"{target.kind[:3]}-{i:03d}"  # fixed ids: no churn between builds
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 900) -> nbformat.NotebookNode:
    """Run ``nb`` in a fresh kernel; an error fails the build with the cell that broke."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False, extra_arguments=KERNEL_QUIET,
                            coalesce_streams=True,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError as err:
        raise BuildError(str(err)[:3000]) from None
    return nb


def _canonical(nb: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Put back ids and metadata the kernel may have touched (language_info, execution)."""
    nb.metadata = fresh.metadata
    for cell, clean in zip(nb.cells, fresh.cells):
        cell.id, cell.metadata = clean.id, clean.metadata
    return nb


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PLACEHOLDER = "[an interactive widget: run this cell to see it]"


def widget_placeholders(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Replace the text a stored widget output falls back to by a line that says what it is.

    Before its cell runs, a widget has no model in the browser, and JupyterLab
    shows the output's ``text/plain``: a raw repr (``VBox(children=(Dropdown(…``)
    or a progress bar frozen at 0 %.  Neither tells a learner what to do.
    """
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_MIME in data:
                data["text/plain"] = WIDGET_PLACEHOLDER
    return nb


def build_one(target: Target, execute_it: bool = True, root: Path = ROOT) -> str:
    fresh = render(target, root)
    nb = nbformat.from_dict(fresh)
    if execute_it:
        nb = widget_placeholders(_canonical(execute(nb, target.output.parent), fresh))
    target.output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    target.output.write_text(nbformat.writes(nb, version=4) + "\n", encoding="utf-8")
    return str(target.output.relative_to(root))


# --------------------------------------------------------------------------- README course map

def course_map(root: Path = ROOT) -> str:
    rows = ["| # | chapter | what you build | NumPy / PyTorch | exercises | Colab |",
            "|---|---|---|---|---|---|"]
    for stem, (what, concept) in CHAPTERS.items():
        number, title = stem[:2], stem[3:].replace("_", " ")
        lesson = root / "chapters" / f"{stem}.py"
        if not lesson.exists():
            rows.append(f"| {number} | {title} | {what} | | | |")
            continue
        exercises, twins = "—", "—"
        has_checks = concept and importlib.util.find_spec(f"dlcourse.{concept}.checks") is not None
        if concept and not has_checks:  # a chapter lands in steps: the lesson before its exercises
            twins = "✓ / ✓"
        if has_checks:
            check = importlib.import_module(f"dlcourse.{concept}.checks").check
            questions = sum(check.is_question(n) for n in check.names)
            graded = len(check.names) - questions
            exercises = (f"[{graded} graded + {questions} questions, {check.max_points:g} pts]"
                         f"(exercises/{stem}.ipynb)")
            twins = "✓ / ✓"
        link = f"[{title}](chapters/{stem}.ipynb)"
        colab = f"lesson {badge(f'chapters/{stem}.ipynb')}"
        if has_checks:
            colab += f"<br>exercises {badge(f'exercises/{stem}.ipynb')}"
        rows.append(f"| {number} | {link} | {what} | {twins} | {exercises} | {colab} |")
    return "\n".join(rows)


def readme_with_map(text: str, root: Path = ROOT) -> str:
    if MAP_START not in text or MAP_END not in text:
        raise BuildError(f"README.md needs the markers {MAP_START} and {MAP_END}")
    head, rest = text.split(MAP_START, 1)
    _, tail = rest.split(MAP_END, 1)
    return f"{head}{MAP_START}\n{course_map(root)}\n{MAP_END}{tail}"


# --------------------------------------------------------------------------- check mode

def _structure(nb: nbformat.NotebookNode) -> tuple:
    return (nb.metadata, [(c.cell_type, c.get("id"), c.source, c.metadata) for c in nb.cells])


def check(root: Path = ROOT) -> list[str]:
    """Differences between the committed notebooks/README and what the build writes."""
    problems = []
    wanted = targets(root)
    for target in wanted:
        rel = target.output.relative_to(root)
        if not target.output.exists():
            problems.append(f"{rel}: missing; run python -m dlcourse.build")
            continue
        try:
            committed = nbformat.read(target.output, as_version=4)
        except Exception as err:
            problems.append(f"{rel}: unreadable ({err})")
            continue
        fresh = render(target, root)
        got, want = _structure(committed), _structure(fresh)
        if got[0] != want[0]:
            problems.append(f"{rel}: notebook metadata differs from the build's")
        if len(got[1]) != len(want[1]):
            problems.append(f"{rel}: {len(got[1])} cells, the source gives {len(want[1])}")
            continue
        for a, b in zip(got[1], want[1]):
            if a != b:
                problems.append(f"{rel}: cell {b[1]} differs from its source {target.source.relative_to(root)}")
                break
        if any(c.get("execution_count") is None for c in committed.cells if c.cell_type == "code"):
            problems.append(f"{rel}: has cells that were never executed; run python -m dlcourse.build")
    known = {t.output for t in wanted}
    for folder in ("chapters", "solutions", "exercises"):
        for nb_path in sorted((root / folder).glob("*.ipynb")):
            if nb_path not in known:
                problems.append(f"{nb_path.relative_to(root)}: no source for this notebook")
    readme = root / "README.md"
    if readme.exists() and readme_with_map(readme.read_text(encoding="utf-8"), root) != \
            readme.read_text(encoding="utf-8"):
        problems.append("README.md: course map is out of date; run python -m dlcourse.build")
    return problems


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlcourse.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only sources whose name contains one of these (e.g. 01 neurons)")
    parser.add_argument("--check", action="store_true",
                        help="execute nothing; fail if committed notebooks or the README map are stale")
    parser.add_argument("--no-execute", action="store_true", help="write notebooks without outputs")
    parser.add_argument("--kind", choices=("lesson", "solutions"),
                        help="build only the lessons, or only the solutions and their exercise notebooks")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="notebooks executed in parallel")
    args = parser.parse_args(argv)

    if args.check:
        problems = check()
        for line in problems:
            print(line)
        print("build check: " + ("up to date" if not problems else f"{len(problems)} problem(s)"))
        return 1 if problems else 0

    chosen = targets(names=args.names, kind=args.kind)
    if not chosen:
        print("no sources match", args.names)
        return 1
    try:
        for t in chosen:  # fail fast on a malformed source, before any kernel starts
            render(t)
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(build_one, t, not args.no_execute) for t in chosen]
            for f in futures:
                print("built", f.result(), flush=True)
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    readme = ROOT / "README.md"
    if readme.exists():
        readme.write_text(readme_with_map(readme.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
