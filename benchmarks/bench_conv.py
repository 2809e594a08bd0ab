"""NumPy conv2d (forward + backward) vs F.conv2d + autograd on the CPU, in one run.

    python benchmarks/bench_conv.py            # prints markdown tables

One pass = forward and backward (dx, dw, db) of a convolution with bias, padding
"same" (kernel_size // 2), stride 1.  NumPy: ``dlcourse.cnn.numpy_impl.conv2d_forward``
/ ``conv2d_backward`` (im2col + one matrix product per group); PyTorch: ``F.conv2d`` and
``out.backward(dout)``.  Same inputs, weights and dtypes, the course's thread setting
(1 compute thread per library, ``dlcourse.runtime``), both twins timed in the same
process.  Each timing is the fastest of several repeats of many passes, the two twins
taking turns (``fastest_interleaved``: the machine is shared).  The issue's goal:
NumPy <= 3x PyTorch.

A second table compares ``conv2d_loops`` (one Python step per output value) with
``conv2d_forward`` on a small case: the speed-up of vectorising.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from dlcourse.cnn import numpy_impl as cnn
from dlcourse.runtime import default_threads
from timing import fastest_interleaved


def numpy_pass(x, w, b, dout, padding):
    def run():
        _, cache = cnn.conv2d_forward(x, w, b, padding=padding)
        return cnn.conv2d_backward(dout, cache)
    return run


def torch_pass(x, w, b, dout, padding):
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    dt = torch.from_numpy(dout)

    def run():
        xt.grad = wt.grad = bt.grad = None
        F.conv2d(xt, wt, bt, padding=padding).backward(dt)
    return run


def case(n, c_in, c_out, size, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, size, size)).astype(dtype)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    dout = rng.standard_normal((n, c_out, size, size)).astype(dtype)  # "same" padding keeps the size
    return x, w, b, dout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", default="28,8", help="image sizes H_img = W_img, comma separated")
    parser.add_argument("--c-out", type=int, default=16)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    threads = default_threads()
    torch.set_num_threads(threads)
    print(f"threads: {threads} (course setting); fastest of {args.repeats} interleaved repeats x {args.passes} passes; "
          f"N = {args.batch}, C_out = {args.c_out}, stride 1, padding k // 2\n")
    print("| image | C_in | kernel | dtype | NumPy fwd+bwd (ms) | F.conv2d fwd+bwd, CPU (ms) | NumPy / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=threads):
        for size in (int(s) for s in args.sizes.split(",")):
            for c_in in (1, 16):
                for k in (3, 5):
                    for dtype in (np.float32, np.float64):
                        x, w, b, dout = case(args.batch, c_in, args.c_out, size, k, dtype)
                        run_np, run_torch = numpy_pass(x, w, b, dout, k // 2), torch_pass(x, w, b, dout, k // 2)
                        t_np, t_torch = fastest_interleaved([run_np, run_torch], args.passes, args.repeats)
                        print(f"| {size}x{size} | {c_in} | {k}x{k} | {np.dtype(dtype).name} | {t_np * 1e3:.2f} | "
                              f"{t_torch * 1e3:.2f} | {t_np / t_torch:.2f} |")

        print("\nLoops vs vectorised, forward only, float32: N = 8, C_in = C_out = 16, 3x3, padding 1\n")
        print("| image | conv2d_loops (ms) | conv2d_forward (ms) | speed-up |")
        print("|---|---|---|---|")
        for size in (8, 28):
            x, w, b, _ = case(8, 16, 16, size, 3, np.float32)
            t_loops, = fastest_interleaved([lambda x=x, w=w, b=b: cnn.conv2d_loops(x, w, b, padding=1)], 1, 3)
            t_vec, = fastest_interleaved([lambda x=x, w=w, b=b: cnn.conv2d_forward(x, w, b, padding=1)], 20,
                                         args.repeats)
            print(f"| {size}x{size} | {t_loops * 1e3:.0f} | {t_vec * 1e3:.3f} | {t_loops / t_vec:,.0f}x |")

if __name__ == "__main__":
    main()
