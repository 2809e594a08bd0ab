"""The grader accepts what a Colab learner hands in: File > Download > Download .ipynb.

Such a file carries Colab's metadata, may have lost ``metadata.dlcourse``, is often
an nbformat 4.0 notebook without cell ids, and may be renamed by the browser or by
Drive (``01_neurons (1).ipynb``, ``Copy of 01_neurons.ipynb``).
"""
from pathlib import Path

import nbformat
import pytest

from dlcourse import grade

ROOT = Path(__file__).resolve().parent.parent
SOLVED = ROOT / "solutions" / "01_neurons.ipynb"


def colab_download(source: Path, target: Path, keep_dlcourse_metadata: bool = False) -> Path:
    """``source`` as Colab writes it when downloaded."""
    nb = nbformat.read(source, as_version=4)
    metadata = {
        "colab": {"provenance": [], "name": target.name, "toc_visible": True, "gpuType": "T4"},
        "kernelspec": {"name": "python3", "display_name": "Python 3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
    }
    if keep_dlcourse_metadata:
        metadata["dlcourse"] = nb.metadata["dlcourse"]
    cells = []
    for i, cell in enumerate(nb.cells):
        cell = dict(cell)
        cell.pop("id", None)  # Colab keeps its ids in the cell metadata
        cell["metadata"] = {"id": f"colab{i:04d}"}
        cells.append(cell)
    target.write_text(nbformat.writes(nbformat.from_dict(
        {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 0})), encoding="utf-8")
    return target


def chapter_of(tmp_path, name, keep=False):
    path = colab_download(SOLVED, tmp_path / name, keep_dlcourse_metadata=keep)
    return grade._chapter_of(nbformat.read(path, as_version=4), path, None)


@pytest.mark.parametrize("name", ["01_neurons.ipynb", "01_neurons (1).ipynb"])
def test_downloaded_names_that_start_with_the_chapter(tmp_path, name):
    assert chapter_of(tmp_path, name) == "01_neurons"


@pytest.mark.parametrize("name", ["Copy of 01_neurons.ipynb", "Copy of 01_neurons (2).ipynb",
                                  "jsmith - 01_neurons.ipynb"])
def test_renamed_copies_without_metadata(tmp_path, name):
    assert chapter_of(tmp_path, name) == "01_neurons"


def test_renamed_copy_with_metadata_kept(tmp_path):
    assert chapter_of(tmp_path, "Copy of 01_neurons.ipynb", keep=True) == "01_neurons"


def test_a_colab_download_is_graded_in_full(tmp_path):
    path = colab_download(SOLVED, tmp_path / "01_neurons (1).ipynb")
    report = grade.grade_notebook(path, cell_timeout=60)
    assert report.error == "", report.error
    assert report.chapter == "01_neurons"
    assert report.points == report.max_points > 0
