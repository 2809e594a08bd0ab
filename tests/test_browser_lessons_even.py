"""Every lesson with an even chapter number (00, 02, 04, ...) Run All in JupyterLab in Chromium,
its explorers driven; see tests/browser_suite.py for what is checked and why the lessons are
split over two files."""

import pytest

from browser_suite import LESSONS, browser, lab, lesson_in_jupyterlab, page  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("lesson", [name for name in LESSONS if int(name[:2]) % 2 == 0])
def test_lesson_in_jupyterlab(lesson, lab, page):  # noqa: F811
    lesson_in_jupyterlab(lesson, lab, page)
