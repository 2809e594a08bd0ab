"""Wall time of every committed notebook, executed top to bottom in a fresh kernel.

    python benchmarks/bench_notebooks.py [chapters/01_neurons.ipynb ...]

Prints a markdown table (notebook, seconds, device).  The course's goal: each
lesson runs in about a minute on a 2-core CPU.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    paths = [Path(p) for p in argv] or sorted(
        p for folder in ("chapters", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("| notebook | seconds | device |")
    print("|---|---|---|")
    for path in paths:
        print(f"| {path.relative_to(ROOT) if path.is_absolute() else path} | {run(path):.1f} | {device} |",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
