"""The real-browser test's fixtures and test bodies; the tests themselves are in
tests/test_browser_lessons_even.py, tests/test_browser_lessons_odd.py and
tests/test_browser_exercises.py: three files, so that ``--dist loadfile`` spreads them
over the xdist workers (one file took ~570 s on one worker with seven chapters).

What a learner sees, in a real browser: JupyterLab (and Notebook 7) on loopback, driven
by Debian's Chromium through Playwright.

For every lesson in chapters/ (discovered, so a new chapter is covered the day it lands):
Run All Cells in JupyterLab, no error and no cell left unrun; every widget renders as
controls; each explorer's sliders (by keyboard and mouse drag in turn) and dropdowns change its plot;
no label, readout or control is cut off or overflows at 1280×800 and 1440×900.  For every
exercise notebook (a first, middle and last chapter unless DLCOURSE_EVERY_CHAPTER=1): the first
graded exercise typed in the browser, wrong (✗ with a message) then right (✓), and the score table
follows.  One lesson in Notebook 7 (drag only: arrow
keys on sliders do not work there upstream).

Screenshots of every explorer before and after each move, of the layouts and of the check
outputs go to .artifacts/browser/ (REPORT.txt lists the measurements).  Every notebook is a
throwaway copy in a temporary folder: autosave never writes into the repository.

Skips with a one-line reason where Playwright or Chromium is missing; .ci/run installs both.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

import browser_tools as bt
from checktools import every_chapter_or_a_sample

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS_ROOT = ROOT / ".artifacts" / "browser"
ARTIFACTS = ARTIFACTS_ROOT  # this module's subfolder once its ``lab`` fixture started
LESSONS = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
# Typing into an exercise is the same path in every chapter: a sample of them unless DLCOURSE_EVERY_CHAPTER=1
# (see checktools.every_chapter_or_a_sample).
EXERCISES = every_chapter_or_a_sample(p.stem for p in (ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))
REPORT: list[str] = []


def note(line: str) -> None:
    REPORT.append(line)
    (ARTIFACTS / "REPORT.txt").write_text("\n".join(REPORT) + "\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    global ARTIFACTS
    reason = bt.missing_reason()
    if reason:
        pytest.skip(reason)
    # One subfolder per test file: the files run at the same time on different xdist workers.
    ARTIFACTS = ARTIFACTS_ROOT / request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_browser_")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    REPORT.clear()
    root = tmp_path_factory.mktemp("browser-notebooks")
    for folder in ("chapters", "exercises"):
        (root / folder).mkdir()
        for nb in (ROOT / folder).glob("*.ipynb"):
            shutil.copy(nb, root / folder / nb.name)
    start = time.monotonic()
    server = bt.LabServer(root, ARTIFACTS / "jupyter-lab.log")
    note(f"jupyter-lab on {server.base} serving copies in {root} (started in {time.monotonic() - start:.1f} s)")
    yield server
    server.stop()
    files = sorted(p.relative_to(ROOT) for p in ARTIFACTS.rglob("*") if p.is_file())
    note(f"{len(files)} artifacts in {ARTIFACTS.relative_to(ROOT)}/")
    print(f"\nbrowser test artifacts ({len(files)} files) in {ARTIFACTS}:")
    print("\n".join(f"  {f}" for f in files))


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=bt.CHROMIUM, args=bt.CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(60_000)
    # The Colab badge is an image on colab.research.google.com: offline it is a broken
    # image, never a failure; abort the request instead of waiting for it.
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda route: route.abort())
    pg = context.new_page()
    yield pg
    context.close()
    lab.shutdown_kernels()


def shot(locator_or_page, name: str) -> None:
    path = ARTIFACTS / f"{name}.png"
    try:
        locator_or_page.screenshot(path=str(path))
    except Exception as exc:  # a screenshot is evidence, never the verdict
        note(f"  (screenshot {name} failed: {exc.__class__.__name__})")


def run_lesson(page, lab, path: str, tag: str) -> float:
    bt.open_notebook(page, lab, path, ui="lab" if "lab" in tag else "notebook")
    seconds = bt.run_all(page, lab)
    errors = bt.error_outputs(page)
    assert not errors, f"{path}: error output in the browser:\n" + "\n---\n".join(errors)
    unrun = [i for i, p in enumerate(bt.prompts(page)) if not re.fullmatch(r"\[\d+\]:", p)]
    assert not unrun, f"{path}: code cells left unrun after Run All (code cell #, prompt): " \
                      f"{[(i, bt.prompts(page)[i]) for i in unrun]}"
    saved = bt.saved_problems(bt.save_and_read(page, lab, path))
    assert not saved, f"{path}: after Run All, the notebook saved from the browser has:\n" + "\n".join(saved)
    widgets, problems = bt.widget_problems(page)
    assert not problems, f"{path}: widgets not rendered as controls:\n" + "\n".join(problems)
    note(f"{tag} {path}: Run All {seconds:.1f} s, {len(bt.prompts(page))} code cells, {len(widgets)} widget outputs")
    return seconds


def check_layout(page, explorer, tag: str) -> list[str]:
    problems = []
    for width, height in bt.VIEWPORTS:
        page.set_viewport_size({"width": width, "height": height})
        time.sleep(0.6)
        explorer.scroll_into_view_if_needed()
        time.sleep(0.4)
        found = bt.layout_problems(explorer)
        shot(explorer, f"{tag}-layout-{width}x{height}")
        note(f"  layout {width}x{height}: " + ("ok" if not found else "; ".join(found)))
        problems += [f"at {width}x{height}: {p}" for p in found]
    page.set_viewport_size({"width": 1280, "height": 800})
    time.sleep(0.4)
    explorer.scroll_into_view_if_needed()
    return problems


def slider_label(slider) -> str:
    label = slider.locator(".widget-label")
    return (label.text_content() or "").strip() if label.count() else "?"


def move(explorer, tag: str, what: str, action, page=None, lab=None) -> str:
    """Do ``action``, wait for the plot to change; the failure message, or '' on success.

    Given ``page`` and ``lab``, first wait (up to 90 s) for the kernel to finish the redraw the
    action started: on a loaded CI machine one redraw (a retraining slider) can take longer than
    the 20 s the plot is then given to change, and that read as a dead control (seen twice).
    """
    before = bt.plot_bytes(explorer)
    action()
    if page is not None and lab is not None:
        try:
            bt.wait_kernel_idle(page, lab, timeout=90, settle=0.5)
        except AssertionError as exc:
            note(f"  {what}: {exc}")
    after = bt.wait_plot_change(explorer, before)
    shot(explorer, f"{tag}-after-{re.sub(r'[^A-Za-z0-9]+', '_', what)}")
    if after is None:
        state = explorer.evaluate(bt.IMAGES_STATE_JS)
        note(f"  {what}: plot did NOT change in 20 s (images: {state})")
        return f"plot did not change after {what}"
    try:
        note(f"  {what}: plot changed, {100 * bt.changed_fraction(before, after):.1f} % of its pixels")
    except ValueError as exc:
        note(f"  {what}: {exc}")
    return ""


def keyboard_move(page, handle):
    def action():
        handle.focus()
        at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
        for _ in range(2):
            page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
            time.sleep(0.05)
    return action


def drag_move(page, slider, handle):
    def action():
        handle.scroll_into_view_if_needed()
        h, track = handle.bounding_box(), slider.locator(".noUi-base").bounding_box()
        x, y = h["x"] + h["width"] / 2, h["y"] + h["height"] / 2
        # Drag a quarter of the track towards its farther end, and at least one step of the slider
        # (a slider of 2 values, e.g. the layer of a 2-layer model, needs the whole track).
        try:
            steps = float(handle.get_attribute("aria-valuemax")) - float(handle.get_attribute("aria-valuemin"))
        except (TypeError, ValueError):
            steps = 4.0
        share = max(0.25, 1.0 / steps) if steps > 0 else 0.25
        dx = track["width"] * share * (1 if x < track["x"] + track["width"] / 2 else -1)
        page.mouse.move(x, y)
        page.mouse.down()
        for k in range(1, 9):
            page.mouse.move(x + dx * k / 8, y)
            time.sleep(0.03)
        page.mouse.up()
    return action


def drive_explorer(page, explorer, tag: str, keyboard: bool = True, lab=None) -> list[str]:
    """Move every slider and every dropdown; what did not redraw.

    Each slider is moved once, by keyboard and by mouse drag in turn (the first by keyboard, the
    second by drag, ...; a lone slider both ways), so every explorer with two sliders or more is
    driven both ways and every control is proven to redraw, at one redraw per control (each redraw
    of a retraining explorer costs seconds of CI time).
    """
    explorer.scroll_into_view_if_needed()
    time.sleep(0.3)
    shot(explorer, f"{tag}-before")
    moves = []
    sliders = explorer.locator(".widget-slider")
    for i in range(sliders.count()):
        slider = sliders.nth(i)
        label, handle = slider_label(slider), slider.locator(".noUi-handle").first
        by_keyboard = keyboard and (i % 2 == 0)
        if by_keyboard:
            moves.append((f"slider '{label}' by keyboard", keyboard_move(page, handle)))
        if not by_keyboard or sliders.count() == 1:
            moves.append((f"slider '{label}' by mouse drag", drag_move(page, slider, handle)))
    dropdowns = explorer.locator(".widget-dropdown select")
    for i in range(dropdowns.count()):
        moves.append((f"dropdown '{slider_label(dropdowns.nth(i).locator('xpath=..'))}'",
                      dropdown_move(dropdowns.nth(i))))
    failures: list[str] = []
    for k, (what, action) in enumerate(moves):
        failure = move(explorer, tag, what, action, page, lab)
        if failure:
            failures.append(failure)
        if len(failures) == 2 and k + 1 < len(moves):  # a dead explorer: do not wait 20 s per control
            failures.append(f"{len(moves) - k - 1} more controls not tried")
            break
    return failures


def dropdown_move(select):
    def action():
        options = select.locator("option")
        current = select.input_value()
        values = [options.nth(k).get_attribute("value") for k in range(options.count())]
        select.select_option(next(v for v in values if v != current))
    return action


def lesson_in_jupyterlab(lesson, lab, page):
    run_lesson(page, lab, f"chapters/{lesson}.ipynb", f"lab-{lesson}")
    explorers = bt.explorers(page)
    chapter = int(lesson[:2])
    if chapter >= 1:  # the chapter contract: every chapter 01-10 has an explorer the browser test drives
        assert explorers, f"{lesson}: no explorer (a widget with a slider or dropdown and a plot) found"
    failures, layout = [], []
    for k, explorer in enumerate(explorers):
        tag = f"lab-{lesson}-explorer{k + 1}"
        note(f" explorer {k + 1}: {explorer.locator('.widget-slider').count()} sliders, "
             f"{explorer.locator('.widget-dropdown').count()} dropdowns")
        layout += check_layout(page, explorer, tag)
        failures += drive_explorer(page, explorer, tag, lab=lab)
    assert not failures, f"{lesson}: " + "; ".join(failures)
    assert not layout, f"{lesson}: controls cut off or overflowing:\n" + "\n".join(layout)


def cell(page, index: int):
    c = page.locator(".jp-Notebook .jp-Cell").nth(index)
    c.scroll_into_view_if_needed()
    time.sleep(0.3)  # off-screen cells are painted lazily
    return c


def run_cell(page, lab, index: int) -> str:
    """Click into cell ``index``, run it in place (Ctrl+Enter); its output's text."""
    c = cell(page, index)
    c.locator(".cm-content").click()
    page.keyboard.press("Control+Enter")
    time.sleep(0.5)
    bt.wait_kernel_idle(page, lab, timeout=120, settle=0.5)
    time.sleep(0.3)
    return c.locator(".jp-OutputArea").text_content() or ""


def type_into(page, index: int, source: str) -> None:
    c = cell(page, index)
    c.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(source)
    time.sleep(0.2)
    typed = c.locator(".cm-content").inner_text()
    assert typed.strip().splitlines()[0] == source.strip().splitlines()[0], f"typing failed: {typed!r}"


def score(text: str) -> tuple[float, float]:
    m = re.search(r"total\s*([\d.]+)/([\d.]+)", text)
    assert m, f"no total in the score table: {text!r}"
    return float(m.group(1)), float(m.group(2))


def exercise_typed_in_jupyterlab(chapter, lab, page):
    ex = bt.first_graded_exercise(ROOT / "exercises" / f"{chapter}.ipynb")
    assert ex, f"exercises/{chapter}.ipynb: no graded exercise (a stub with a check cell after it)"
    index, name, stub, params = ex
    right = bt.with_body(stub, bt.solution_body(ROOT / "solutions" / f"{chapter}.py", name))
    wrong = bt.with_body(stub, bt.wrong_body(stub, params))
    tag = f"exercise-{chapter}"
    path = f"exercises/{chapter}.ipynb"
    bt.open_notebook(page, lab, path)
    seconds = bt.run_all(page, lab)
    assert not bt.error_outputs(page), f"{path}: error output after Run All: {bt.error_outputs(page)}"
    cells = page.locator(".jp-Notebook .jp-Cell")
    last = cells.count() - 1
    board_before = cell(page, last).locator(".jp-OutputArea").text_content() or ""
    points_before = score(board_before)
    check_index = next(j for j in range(index + 1, last + 1)
                       if "jp-CodeCell" in (cells.nth(j).get_attribute("class") or ""))

    type_into(page, index, wrong)
    run_cell(page, lab, index)
    verdict = run_cell(page, lab, check_index)
    shot(cell(page, check_index), f"{tag}-wrong")
    note(f"{path}: exercise {name!r}: Run All {seconds:.1f} s; wrong answer -> {verdict.strip()[:160]!r}")
    assert "✗" in verdict and "✓" not in verdict, f"{name}: a wrong answer was not marked ✗: {verdict!r}"
    assert "not implemented" not in verdict, f"{name}: the wrong answer did not reach the check: {verdict!r}"
    message = verdict.split("points]", 1)[-1].strip()
    assert len(message) > 10, f"{name}: ✗ without a message: {verdict!r}"

    type_into(page, index, right)
    run_cell(page, lab, index)
    verdict = run_cell(page, lab, check_index)
    shot(cell(page, check_index), f"{tag}-right")
    note(f"  right answer -> {verdict.strip()[:160]!r}")
    assert "✓" in verdict and "✗" not in verdict, f"{name}: the right answer was not marked ✓: {verdict!r}"

    board = run_cell(page, lab, last)
    shot(cell(page, last), f"{tag}-score")
    points_after = score(board)
    row = re.search(rf"{name}\s*(✓|✗)", board)
    note(f"  score table: {points_before[0]:g}/{points_before[1]:g} -> {points_after[0]:g}/{points_after[1]:g}")
    assert row and row.group(1) == "✓", f"{name}: the score table does not show ✓: {board!r}"
    assert points_after[0] > points_before[0], f"the score did not go up: {board_before!r} -> {board!r}"


def lesson_in_notebook7(lab, page):
    lesson = next((name for name in LESSONS if int(name[:2]) >= 1), None)
    if lesson is None:
        pytest.skip("no lesson with an explorer yet")
    run_lesson(page, lab, f"chapters/{lesson}.ipynb", f"notebook7-{lesson}")
    explorers = bt.explorers(page)
    assert explorers, f"{lesson}: no explorer rendered in Notebook 7"
    explorer = explorers[0]
    layout = check_layout(page, explorer, f"notebook7-{lesson}-explorer1")
    # Arrow keys on sliders do not move them in Notebook 7 (upstream): drag only.
    failures = drive_explorer(page, explorer, f"notebook7-{lesson}-explorer1", keyboard=False, lab=lab)
    assert not failures, f"{lesson} in Notebook 7: " + "; ".join(failures)
    assert not layout, f"{lesson} in Notebook 7: controls cut off or overflowing:\n" + "\n".join(layout)
