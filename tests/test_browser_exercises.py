"""Every exercise notebook in JupyterLab in Chromium: the first graded exercise typed wrong (✗ with a
message) then right (✓), and the score table follows; and one lesson in Notebook 7.  See
tests/browser_suite.py."""

import pytest

from browser_suite import (EXERCISES, browser, exercise_typed_in_jupyterlab, lab,  # noqa: F401 (fixtures)
                           lesson_in_notebook7, page)

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("chapter", EXERCISES)
def test_exercise_typed_in_jupyterlab(chapter, lab, page):  # noqa: F811
    exercise_typed_in_jupyterlab(chapter, lab, page)


def test_lesson_in_notebook7(lab, page):  # noqa: F811
    lesson_in_notebook7(lab, page)
