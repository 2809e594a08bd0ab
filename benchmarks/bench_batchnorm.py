"""NumPy batch norm (forward + backward) vs nn.BatchNorm1d on the CPU, in one run; CUDA too when there is one.

    python benchmarks/bench_batchnorm.py            # prints markdown tables

One pass = train-mode forward (batch statistics, running statistics updated) and
backward (dx, dgamma, dbeta) of a batch of shape (N, D).  NumPy:
``dlcourse.training.numpy_impl.batchnorm_forward`` / ``batchnorm_backward``;
PyTorch: ``nn.BatchNorm1d`` and autograd (``out.backward(dout)``).  Same shapes and
dtypes, the course's thread setting (1 compute thread per library, ``dlcourse.runtime``),
timings of the two twins taken in the same process.  Each timing is the median of
several repeats of many passes.  On CUDA (PyTorch only) every repeat ends with
``torch.cuda.synchronize()``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dlcourse.runtime import default_threads
from dlcourse.training import numpy_impl as tn


def median_time(fn, passes, repeats, sync=None):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(passes):
            fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - start) / passes)
    return statistics.median(times)


def numpy_pass(x, dout, gamma, beta):
    state = {"running": tn.batchnorm_init(x.shape[1], dtype=x.dtype)}

    def run():
        out, cache, state["running"] = tn.batchnorm_forward(x, gamma, beta, state["running"], train=True)
        return tn.batchnorm_backward(dout, cache)
    return run


def torch_pass(x, dout, device):
    layer = torch.nn.BatchNorm1d(x.shape[1]).to(device=device, dtype=torch.float64 if x.dtype == np.float64
                                                 else torch.float32)
    xt = torch.as_tensor(x, device=device).requires_grad_()
    dt = torch.as_tensor(dout, device=device)

    def run():
        xt.grad = layer.weight.grad = layer.bias.grad = None
        layer(xt).backward(dt)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="256x512,64x128", help="N x D, comma separated")
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    threads = default_threads()
    torch.set_num_threads(threads)
    print(f"threads: {threads} (course setting); median of {args.repeats} x {args.passes} passes\n")
    print("| N x D | dtype | NumPy fwd+bwd (µs) | nn.BatchNorm1d fwd+bwd, CPU (µs) | NumPy / PyTorch |")
    print("|---|---|---|---|---|")
    rows = []
    with threadpool_limits(limits=threads):
        for shape in args.shapes.split(","):
            n, d = (int(v) for v in shape.split("x"))
            for dtype in (np.float32, np.float64):
                rng = np.random.default_rng(0)
                x = rng.standard_normal((n, d)).astype(dtype)
                dout = rng.standard_normal((n, d)).astype(dtype)
                gamma, beta = np.ones(d, dtype), np.zeros(d, dtype)
                run_np, run_torch = numpy_pass(x, dout, gamma, beta), torch_pass(x, dout, "cpu")
                for fn in (run_np, run_torch):  # warm up
                    median_time(fn, 20, 1)
                t_np = median_time(run_np, args.passes, args.repeats)
                t_torch = median_time(run_torch, args.passes, args.repeats)
                rows.append((n, d, dtype, x, dout))
                print(f"| {n} x {d} | {np.dtype(dtype).name} | {t_np * 1e6:.0f} | {t_torch * 1e6:.0f} | "
                      f"{t_np / t_torch:.2f} |")
    if torch.cuda.is_available():
        print(f"\nCUDA ({torch.cuda.get_device_name()}), nn.BatchNorm1d forward + backward:\n")
        print("| N x D | dtype | CUDA (µs) |")
        print("|---|---|---|")
        for n, d, dtype, x, dout in rows:
            run = torch_pass(x, dout, "cuda")
            median_time(run, 20, 1, torch.cuda.synchronize)
            t = median_time(run, args.passes, args.repeats, torch.cuda.synchronize)
            print(f"| {n} x {d} | {np.dtype(dtype).name} | {t * 1e6:.0f} |")
    else:
        print("\nNo CUDA device here: the GPU table is not measured.")


if __name__ == "__main__":
    main()
