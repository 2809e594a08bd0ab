"""Root conftest: applies to the notebooks that nbval collects in chapters/, solutions/, exercises/."""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("DLCOURSE_THREADS", "1")


def pytest_collectstart(collector):
    # stderr carries warnings and progress bars, which differ between machines
    # and library versions: never compare it.
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = collector.skip_compare + ("stderr",)


# --------------------------------------------------------------------------------------------
# One run of each lesson per job.  Where the real-browser test runs a lesson (Run All Cells in
# JupyterLab must end with no error output and no cell unrun; then it drives the explorers),
# nbval's own execution of the same lesson adds no new failure mode here but costs the lesson's
# whole run time again (~6 min of CPU for chapters 00-10 in CI).  So when the browser lesson tests
# are collected and can run, the lessons they cover are not executed by nbval in the same session.
# What nbval adds (stored outputs still match) is kept by CI job 2 (.ci/colab: nbval over every
# notebook on Colab's versions, no browser) and by `python -m dlcourse.build --check`.  A learner's
# run without Playwright/Chromium keeps nbval on every lesson.  DLCOURSE_NBVAL_ALL_LESSONS=1 forces
# nbval on every lesson anyway.
import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what they deselect
def pytest_collection_modifyitems(config, items):
    if os.environ.get("DLCOURSE_NBVAL_ALL_LESSONS") == "1":
        return
    in_browser = {item.callspec.params["lesson"] for item in items
                  if item.path.name.startswith("test_browser_lessons")
                  and hasattr(item, "callspec") and "lesson" in item.callspec.params}
    if not in_browser:
        return
    import sys
    sys.path.insert(0, str(config.rootpath / "tests"))
    try:
        import browser_tools
    finally:
        sys.path.pop(0)
    if browser_tools.missing_reason():
        return  # the browser test will skip: nbval keeps every lesson
    lessons_dir = config.rootpath / "chapters"
    deselected = [item for item in items if item.path.parent == lessons_dir
                  and item.path.suffix == ".ipynb" and item.path.stem in in_browser]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        dropped = set(deselected)
        items[:] = [item for item in items if item not in dropped]
        config._dlcourse_lessons_in_browser = sorted(in_browser)


def pytest_terminal_summary(terminalreporter, config):  # (without xdist: its controller never collects)
    lessons = getattr(config, "_dlcourse_lessons_in_browser", None)
    if lessons:
        terminalreporter.write_line(
            f"nbval did not execute the lessons the browser test runs ({', '.join(lessons)}): "
            "CI job 2 compares their stored outputs (DLCOURSE_NBVAL_ALL_LESSONS=1 runs them here too)")
