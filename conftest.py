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
