"""Chapter 10: what data parallelism costs on this CPU -- seconds per SGD step, 1 vs 2 processes.

    python benchmarks/bench_distributed.py            # the table below
    python benchmarks/bench_distributed.py --steps 100

For the digits MLP (float32, hidden H = 32 and 1024) at global batches N = 64, 256, 1024, the
seconds per step of the training loop only (spawning is reported apart):

* 1 process: ``single_process_train`` (one torch thread, the course's setting);
* 2 processes, DDP: ``ddp_train`` (gloo on loopback, one thread each);
* 2 processes, manual: one ``dist.all_reduce`` per parameter after ``backward``, timed, which
  gives the share of the step spent communicating (DDP overlaps the all-reduce with the
  backward pass, so its share cannot be read off the same way).

Each configuration runs ``--repeats`` times in the same processes (``ddp_train_many``) and the
fastest is kept (other work on a shared machine only adds time).  The processes of one spawn
run everything; its wall time (start-up included) is printed.

What to expect on a 2-core machine: little or no speed-up.  The two workers share the two cores
with everything else, each step of this small model is well under a millisecond of arithmetic,
and every step adds an all-reduce through loopback TCP (gloo) whose fixed latency is
comparable to the step itself.  Data parallelism pays when the compute per step is large
against the communication: big batches, big models, and fast links (NVLink/InfiniBand with
NCCL), and when each worker has its own device.
"""
from __future__ import annotations

import argparse
import time

import torch

from dlcourse.efficiency import distributed as D


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 1024])
    args = parser.parse_args()

    grid = [(h, n) for h in args.hidden for n in args.batches]
    common = dict(steps=args.steps, dtype=torch.float32, lr=0.05)
    configs = []
    for h, n in grid:
        for sync in ("ddp", "manual"):
            configs += [dict(common, hidden=h, global_batch=n, sync=sync)] * args.repeats
    t0 = time.perf_counter()
    runs = D.ddp_train_many(configs, world_size=2, timeout=600)
    print(f"one spawn of 2 processes ran {len(configs)} trainings in {time.perf_counter() - t0:.1f} s "
          f"(start-up included)")

    print(f"\nseconds per step (ms), fastest of {args.repeats}, {args.steps} steps, float32, 1 thread per process")
    print(f"{'H':>5} {'N':>5} | {'1 proc':>8} | {'2 DDP':>8} {'speed-up':>8} | {'2 manual':>8} {'comm share':>10}")
    k = 0
    for h, n in grid:
        one = min(D.single_process_train(hidden=h, global_batch=n, **common)["seconds"]
                  for _ in range(args.repeats))
        ddp = min(r["seconds"] for r in runs[k:k + args.repeats])
        k += args.repeats
        manual = min(runs[k:k + args.repeats], key=lambda r: r["seconds"])
        k += args.repeats
        s = args.steps
        print(f"{h:>5} {n:>5} | {1e3 * one / s:8.3f} | {1e3 * ddp / s:8.3f} {one / ddp:8.2f} | "
              f"{1e3 * manual['seconds'] / s:8.3f} {manual['comm_seconds'] / manual['seconds']:10.0%}")


if __name__ == "__main__":
    main()
