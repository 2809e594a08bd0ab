"""NumPy LSTM (forward + BPTT) vs the fused nn.LSTM and an nn.LSTMCell loop on the CPU, in one run.

    python benchmarks/bench_lstm.py            # prints a markdown table

One pass = forward over T steps and backward through time (dx, dh0, dc0 and the four
parameter gradients) of a one-layer LSTM, with an upstream gradient on every output.
NumPy: ``dlcourse.rnn.numpy_impl.lstm_forward`` / ``lstm_backward`` (input projection of
all steps in one product, one product per step for ``h @ W_hh.T``, weight gradients
summed over the steps by one product each after the loop).  PyTorch: ``nn.LSTM`` (one
call for the whole sequence) and a Python loop over ``nn.LSTMCell`` (one call per step,
as a hand-written model would do), both with ``out.backward(dout)``.  Last column: the
readable NumPy version, a loop over ``lstm_cell_forward`` / ``lstm_cell_backward``
(everything per step), to show what the sequence functions' arrangement buys.  Same inputs,
weights and dtypes, the course's thread setting (1 compute thread per library,
``dlcourse.runtime``), all timed in the same process, the fastest of several
interleaved repeats (``timing.fastest_interleaved``, shared with ``bench_conv.py``).  The issue's
goal: NumPy <= 2.5x the fused nn.LSTM.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dlcourse.rnn import numpy_impl as rnn
from dlcourse.runtime import default_threads
from timing import fastest_interleaved


def numpy_pass(x, params, dout):
    def run():
        _, _, cache = rnn.lstm_forward(x, params)
        return rnn.lstm_backward(dout, cache)
    return run


def numpy_cells_pass(x, params, dout):
    """The readable version: a loop over ``lstm_cell_forward`` / ``lstm_cell_backward``."""
    T, N, _ = x.shape
    H = params["weight_hh_l0"].shape[1]

    def run():
        h = c = np.zeros((N, H), dtype=x.dtype)
        caches = []
        for t in range(T):
            h, c, cache = rnn.lstm_cell_forward(x[t], h, c, params)
            caches.append(cache)
        dh_next = dc_next = np.zeros((N, H), dtype=x.dtype)
        total = {k: np.zeros_like(v) for k, v in params.items()}
        for t in reversed(range(T)):
            _, dh_next, dc_next, grads = rnn.lstm_cell_backward(dout[t] + dh_next, dc_next, caches[t])
            for k in total:
                total[k] += grads[k]
        return total
    return run


def fused_pass(x, lstm, dout):
    xt, dt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)

    def run():
        xt.grad = None
        lstm.zero_grad(set_to_none=True)
        out, _ = lstm(xt)
        out.backward(dt)
    return run


def cell_loop_pass(x, cell, dout):
    xt, dt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)
    T, N, _ = x.shape

    def run():
        xt.grad = None
        cell.zero_grad(set_to_none=True)
        h = c = torch.zeros(N, cell.hidden_size, dtype=xt.dtype)
        outs = []
        for t in range(T):
            h, c = cell(xt[t], (h, c))
            outs.append(h)
        torch.stack(outs).backward(dt)
    return run


def case(T, N, D, H, dtype, seed=0):
    """Inputs, an nn.LSTM and an nn.LSTMCell with the same weights, and those weights as NumPy arrays."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    lstm = torch.nn.LSTM(D, H).to(tdtype)
    cell = torch.nn.LSTMCell(D, H).to(tdtype)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(lstm, name + "_l0"))
    params = {k: v.astype(dtype) for k, v in rnn.params_from_torch(lstm).items()}
    x = rng.standard_normal((T, N, D)).astype(dtype)
    dout = rng.standard_normal((T, N, H)).astype(dtype)
    return x, dout, params, lstm, cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="T")
    parser.add_argument("--batch", type=int, default=32, help="N")
    parser.add_argument("--sizes", default="128,256", help="D = H, comma separated")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    threads = default_threads()
    torch.set_num_threads(threads)
    print(f"threads: {threads} (course setting); fastest of {args.repeats} interleaved repeats x {args.passes} passes; "
          f"T = {args.steps}, N = {args.batch}; forward + backward through time\n")
    print("| D = H | dtype | NumPy (ms) | nn.LSTM (ms) | nn.LSTMCell loop (ms) | NumPy / nn.LSTM "
          "| NumPy / LSTMCell loop | NumPy cell loop (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=threads):
        for size in (int(s) for s in args.sizes.split(",")):
            for dtype in (np.float32, np.float64):
                x, dout, params, lstm, cell = case(args.steps, args.batch, size, size, dtype)
                fns = [numpy_pass(x, params, dout), fused_pass(x, lstm, dout), cell_loop_pass(x, cell, dout),
                       numpy_cells_pass(x, params, dout)]
                t_np, t_fused, t_cell, t_np_cells = fastest_interleaved(fns, args.passes, args.repeats)
                print(f"| {size} | {np.dtype(dtype).name} | {t_np * 1e3:.1f} | {t_fused * 1e3:.1f} | "
                      f"{t_cell * 1e3:.1f} | {t_np / t_fused:.2f} | {t_np / t_cell:.2f} | {t_np_cells * 1e3:.1f} |")


if __name__ == "__main__":
    main()
