"""Timing helpers shared by the benchmarks (run them as ``python benchmarks/bench_*.py``)."""
import time


def time_pass(fn, passes):
    """Mean seconds of one call of ``fn`` over ``passes`` calls."""
    start = time.perf_counter()
    for _ in range(passes):
        fn()
    return (time.perf_counter() - start) / passes


def fastest_interleaved(fns, passes, repeats):
    """Fastest of ``repeats`` timings of each function, the functions taking turns.

    Other work on a shared machine only ever adds time, and taking turns exposes every
    function to the same load, so the minimum over interleaved repeats is the fair
    comparison of the code itself.
    """
    best = [float("inf")] * len(fns)
    for fn in fns:  # warm up (first calls allocate, torch picks its kernels)
        time_pass(fn, 2)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            best[k] = min(best[k], time_pass(fn, passes))
    return best
