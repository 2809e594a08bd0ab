"""NumPy scaled dot-product attention (forward + backward) vs F.scaled_dot_product_attention on the CPU.

    python benchmarks/bench_attention.py            # prints a markdown table

One pass = causal self-attention forward and backward (dq, dk, dv) for q, k, v of shape
(N, nh, T, hs) = (32, 4, 128, 16) (E = 64 split into 4 heads), with an upstream gradient
on the output.  NumPy: ``dlcourse.transformer.numpy_impl.attention_forward`` with
``causal_mask(T)`` and ``attention_backward`` (batched ``np.matmul`` over (N, nh), the
softmax in place on the scores, no loop over heads).  PyTorch:
``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` and ``out.backward(dout)``;
on the CPU torch 2.13 runs its fused kernel ``aten::_scaled_dot_product_flash_attention_for_cpu``
(seen in ``torch.profiler``), which never stores the (T, T) weights.  Last column: the same computation written with plain torch ops
(``q @ k^T``, ``masked_fill``, ``softmax``, ``@ v``), what a hand-written PyTorch model
without the fused kernel does.  Same inputs and dtypes, the course's thread setting
(1 compute thread per library, ``dlcourse.runtime``), all timed in the same process, the
fastest of several interleaved repeats (``timing.fastest_interleaved``).  The issue's goal:
NumPy <= 2x ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from dlcourse.runtime import default_threads
from dlcourse.transformer import numpy_impl as tr
from timing import fastest_interleaved


def numpy_pass(q, k, v, dout):
    mask = tr.causal_mask(q.shape[-2])

    def run():
        _, cache = tr.attention_forward(q, k, v, mask)
        return tr.attention_backward(dout, cache)
    return run


def sdpa_pass(q, k, v, dout):
    ts = [torch.from_numpy(a).requires_grad_() for a in (q, k, v)]
    dt = torch.from_numpy(dout)

    def run():
        for t in ts:
            t.grad = None
        F.scaled_dot_product_attention(*ts, is_causal=True).backward(dt)
    return run


def manual_torch_pass(q, k, v, dout):
    ts = [torch.from_numpy(a).requires_grad_() for a in (q, k, v)]
    dt = torch.from_numpy(dout)
    T, hs = q.shape[-2:]
    blocked = ~torch.ones(T, T, dtype=torch.bool).tril()

    def run():
        for t in ts:
            t.grad = None
        qt, kt, vt = ts
        s = (qt @ kt.transpose(-1, -2)) * hs ** -0.5
        p = torch.softmax(s.masked_fill(blocked, float("-inf")), dim=-1)
        (p @ vt).backward(dt)
    return run


def case(N, nh, T, hs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((N, nh, T, hs)).astype(dtype) for _ in range(4)]   # q, k, v, dout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="N")
    parser.add_argument("--heads", type=int, default=4, help="nh")
    parser.add_argument("--steps", type=int, default=128, help="T")
    parser.add_argument("--width", type=int, default=64, help="E (hs = E / nh)")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    threads = default_threads()
    torch.set_num_threads(threads)
    N, nh, T, hs = args.batch, args.heads, args.steps, args.width // args.heads
    print(f"threads: {threads} (course setting); fastest of {args.repeats} interleaved repeats x {args.passes} passes; "
          f"(N, nh, T, hs) = ({N}, {nh}, {T}, {hs}); causal; forward + backward\n")
    print("| dtype | NumPy (ms) | F.scaled_dot_product_attention (ms) | NumPy / SDPA | plain torch ops (ms) "
          "| NumPy / plain torch |")
    print("|---|---|---|---|---|---|")
    with threadpool_limits(limits=threads):
        for dtype in (np.float32, np.float64):
            q, k, v, dout = case(N, nh, T, hs, dtype)
            fns = [numpy_pass(q, k, v, dout), sdpa_pass(q, k, v, dout), manual_torch_pass(q, k, v, dout)]
            t_np, t_sdpa, t_manual = fastest_interleaved(fns, args.passes, args.repeats)
            print(f"| {np.dtype(dtype).name} | {t_np * 1e3:.1f} | {t_sdpa * 1e3:.1f} | {t_np / t_sdpa:.2f} | "
                  f"{t_manual * 1e3:.1f} | {t_np / t_manual:.2f} |")


if __name__ == "__main__":
    main()
