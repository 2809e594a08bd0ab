"""The PyTorch parts of the course on the GPU (falls back to the CPU and says so).

    python benchmarks/bench_gpu.py

Times the chapter-03 MLP training step and a full digits training run with the
PyTorch twins on ``dlcourse.device()``, next to the same on the CPU in the same
run, and prints a markdown table.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import dlcourse
from dlcourse.backprop import torch_impl as bpt


def step_time(device: str, batch: int, sizes: list[int], steps: int = 200, repeats: int = 5) -> float:
    torch.manual_seed(0)
    model = bpt.make_mlp(sizes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, sizes[0], device=device)
    y = torch.randint(0, sizes[-1], (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    times = []
    for r in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        if r:  # the first repeat warms up
            times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    device = dlcourse.device()
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}\n")
    print("| workload | CPU (µs/step) | " + f"{device} (µs/step) | speed-up |")
    print("|---|---|---|---|")
    for batch, sizes in ((64, [64, 128, 10]), (1024, [64, 512, 512, 10]), (4096, [784, 1024, 1024, 10])):
        cpu = step_time("cpu", batch, sizes, steps=50 if batch > 1000 else 200)
        acc = step_time(device, batch, sizes) if device != "cpu" else cpu
        print(f"| MLP {sizes}, batch {batch}, Adam | {cpu * 1e6:.0f} | {acc * 1e6:.0f} | {cpu / acc:.1f}x |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
