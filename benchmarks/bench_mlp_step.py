"""NumPy MLP training step vs its PyTorch twin on the CPU, at 1 and 2 threads, in one run.

    python benchmarks/bench_mlp_step.py            # prints a markdown table

A step = forward, softmax cross-entropy, backward, plain SGD update, on a batch
of 64 digits images through the chapter-03 network (64 -> 128 -> 10).  Both twins
start from the same weights.  Each timing is the median of several repeats of
many steps; the ratio compares the two twins measured in the same process, so
machine load affects both alike.  Goal: NumPy <= 0.8 x PyTorch at the thread
setting the course uses (1).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dlcourse.backprop import numpy_impl as bp
from dlcourse.backprop import torch_impl as bpt


def numpy_step(params, x, y, lr=0.1):
    loss, grads = bp.mlp_loss_and_grads(params, x, y)
    return [p - lr * g for p, g in zip(params, grads)], loss


def make_torch_step(model, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def median_time(fn, steps, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", default="64,128,10")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], args.batch)
    params = bp.init_mlp(sizes, rng)
    params = [p.astype(np.float32) for p in params]
    model = bpt.make_mlp(sizes)
    bpt.load_params(model, params)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch_step = make_torch_step(model)

    state = {"params": params}

    def run_numpy():
        state["params"], _ = numpy_step(state["params"], x, y)

    print(f"MLP {sizes}, batch {args.batch}, float32, median of {args.repeats} x {args.steps} steps\n")
    print("| threads | NumPy step (µs) | PyTorch step (µs) | NumPy / PyTorch |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            for fn in (run_numpy, lambda: torch_step(xt, yt)):  # warm up
                median_time(fn, 20, 1)
            t_np = median_time(run_numpy, args.steps, args.repeats)
            t_torch = median_time(lambda: torch_step(xt, yt), args.steps, args.repeats)
        print(f"| {threads} | {t_np * 1e6:.0f} | {t_torch * 1e6:.0f} | {t_np / t_torch:.2f} |")

    # A notebook alternates NumPy and PyTorch work in one process: with several
    # threads each, torch's OpenMP workers still spin while NumPy's BLAS wants the cores.
    print("\n| threads | NumPy step + PyTorch step, alternating (µs per pair) |")
    print("|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            def pair():
                run_numpy()
                torch_step(xt, yt)
            median_time(pair, 20, 1)
            print(f"| {threads} | {median_time(pair, args.steps, args.repeats) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
