"""Chapter 10: the results table (what each cheaper variant of the digits MLP costs and keeps), and the studies.

    python benchmarks/bench_efficiency.py              # the results table, one row per variant
    python benchmarks/bench_efficiency.py --studies    # + pruning and bits curves, distillation, QAT,
                                                       #   autocast, fp16 overflow, compile (MLP and CNN), profile

The table: for each variant of ``dlcourse.efficiency.torch_impl.digits_mlp`` (64-256-256-10, trained
once, cached): parameters (nonzero ones for pruned models), the serialized ``state_dict`` in
bytes, FLOPs per example (``FlopCounterMode``: 2 per multiply-add of the dense layers; the int8
model does the same multiply-adds in integers, the pruned one runs the dense kernel over its zeros),
the median latency of a forward pass at batch 1 and 256 (``torch_impl.latency``), test accuracy
(270 digits), and an energy estimate for 1,000 examples at batch 256 under a stated power draw
(``torch_impl.CPU_WATTS`` = 15 W: an assumption, not a measurement).  Pruned models are retrained
(``--retrain`` steps, masks kept); the distilled student (32 hidden units) learned from the
teacher's soft targets on all training images with 100 labels.  One thread (``dlcourse.runtime``),
one run each; on a shared machine the timings are pessimistic.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dlcourse.data import load_digits
from dlcourse.efficiency import torch_impl as et


def _row(name, model, d, x1, x256, size_model=None, flops_model=None, params=None, note=""):
    t1, t256 = et.latency(model, x1, repeats=200, warmup=10), et.latency(model, x256, repeats=50, warmup=5)
    per_1000 = t256 / len(x256) * 1000
    return dict(name=name,
                params=params if params is not None else et.count_params(size_model or model, nonzero=True),
                bytes=et.model_bytes(size_model or model),
                flops=et.flops(flops_model or model, x1), t1=t1, t256=t256,
                acc=et.accuracy(model, d.x_test, d.y_test),
                joules=et.energy_estimate(per_1000)["joules"], note=note)


def results_table(args) -> None:
    d = load_digits(0)
    x1 = torch.as_tensor(d.x_test[:1])
    x256 = torch.as_tensor(np.resize(d.x_test, (256, 64)))
    t0 = time.perf_counter()
    dense = et.digits_mlp(0)
    print(f"threads: {torch.get_num_threads()}; digits_mlp trained in {time.perf_counter() - t0:.1f} s; "
          f"energy at {et.CPU_WATTS:g} W (assumed)\n")
    rows = [_row("dense fp32", dense, d, x1, x256)]

    pruned, masks = et.prune_global(dense, 0.9)
    et.train(pruned, d.x_train, d.y_train, steps=args.retrain, lr=1e-3, seed=0, masks=masks)
    rows.append(_row("90 % global unstructured, retrained", pruned.eval(), d, x1, x256,
                     note="zeros stored densely: same bytes, same kernel"))

    small = et.prune_structured(dense, 0.5)
    et.train(small, d.x_train, d.y_train, steps=args.retrain, lr=1e-3, seed=0)
    rows.append(_row("structured: half the hidden units, retrained", small.eval(), d, x1, x256))

    q = et.dynamic_int8(dense)
    rows.append(_row("dynamic int8 (torch.ao, CPU)", q, d, x1, x256, flops_model=dense,
                     note="int8 multiply-adds; FLOPs column = the same MACs x 2"))

    rows.append(_row("bf16 autocast", et.Autocast(dense), d, x1, x256, size_model=dense,
                     note="weights stay fp32; bf16 math"))

    t0 = time.perf_counter()
    compiled = torch.compile(dense)
    with torch.no_grad():
        compiled(et.model_input(dense, x1))
        compiled(et.model_input(dense, x256))
    first = time.perf_counter() - t0
    rows.append(_row("torch.compile (inductor)", compiled, d, x1, x256, size_model=dense, flops_model=dense,
                     note=f"first calls (2 shapes) {first:.1f} s"))

    student = et.distillation_study(n_labels=(100,), steps=args.distill_steps, return_models=True)[0]
    rows.append(_row("distilled student 64-32-10 (100 labels)", student["model"], d, x1, x256,
                     note=f"alone on 100 labels: {student['alone']:.3f}"))

    print("| variant | params (nonzero) | bytes | FLOPs / example | latency b=1 (µs) | latency b=256 (µs) "
          "| speed-up b=256 | test acc | energy / 1,000 ex. (mJ) | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = rows[0]["t256"]
    for r in rows:
        print(f"| {r['name']} | {r['params']:,} | {r['bytes']:,} | {r['flops']:,} | {r['t1'] * 1e6:,.0f} | "
              f"{r['t256'] * 1e6:,.0f} | {base / r['t256']:.2f}x | {r['acc']:.3f} | {r['joules'] * 1e3:.2f} | "
              f"{r['note']} |")
    print(f"\nsize dense / int8: {rows[0]['bytes'] / rows[3]['bytes']:.2f}x; int8 vs fp32 latency: "
          f"batch 1 {rows[0]['t1'] / rows[3]['t1']:.2f}x, batch 256 {rows[0]['t256'] / rows[3]['t256']:.2f}x "
          f"(> 1: int8 faster)")


def studies(args) -> None:
    d = load_digits(0)
    dense = et.digits_mlp(0)
    x256 = np.resize(d.x_test, (256, 64))

    t0 = time.perf_counter()
    r = et.pruning_curve(retrain_steps=args.retrain)
    print(f"\n## Pruning curve (global magnitude, {args.retrain} retraining steps; {time.perf_counter() - t0:.1f} s)")
    print(f"dense test accuracy {r['dense']:.3f}\n\n| sparsity | nonzero weights | pruned | retrained |\n|---:|---:|---:|---:|")
    for s, n, p, q in zip(r["sparsity"], r["nonzero"], r["pruned"], r["retrained"]):
        print(f"| {s:.0%} | {n:,} | {p:.3f} | {q:.3f} |")

    print("\n## Pruning and latency (batch 256)\n\n| model | median latency (µs) | nonzero params | acc (no retraining) |"
          "\n|---|---:|---:|---:|")
    for row in et.pruning_latency(batch=256, repeats=100):
        print(f"| {row['name']} | {row['seconds'] * 1e6:,.0f} | {row['params']:,} | {row['accuracy']:.3f} |")

    r = et.bits_curve()
    print(f"\n## Weight-only fake quantization (float {r['float']:.3f})\n\n| bits | per tensor | per channel |"
          "\n|---:|---:|---:|")
    for b, pt, pc in zip(r["bits"], r["per_tensor"], r["per_channel"]):
        print(f"| {b} | {pt:.3f} | {pc:.3f} |")

    r = et.qat_study(bits=2)
    print(f"\n## QAT vs PTQ at {r['bits']} bits per channel ({r['steps']} steps): float {r['float']:.3f}, "
          f"PTQ {r['ptq']:.3f}, QAT {r['qat']:.3f}, fine-tuned without fake quant then PTQ "
          f"{r['finetuned_then_ptq']:.3f}")

    t0 = time.perf_counter()
    rows = et.distillation_study(steps=args.distill_steps)
    print(f"\n## Distillation (student 64-32-10, T 4, alpha 0.9; {time.perf_counter() - t0:.1f} s)\n\n"
          "| labels | alone | distilled | teacher |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['n_labels']} | {row['alone']:.3f} | {row['distilled']:.3f} | {row['teacher']:.3f} |")

    print("\n## bf16 autocast, inference, batch 256\n\n| model | fp32 (µs) | bf16 autocast (µs) | speed-up | "
          "argmax agreement | max abs logit diff |\n|---|---:|---:|---:|---:|---:|")
    wide = et._mlp((64, 2048, 2048, 10)).eval()
    for name, m in (("digits MLP 64-256-256-10", dense), ("wide MLP 64-2048-2048-10 (untrained)", wide),
                    ("digits CNN", et.digits_cnn(0))):
        r = et.autocast_speedup(m, x256, repeats=30)
        print(f"| {name} | {r['fp32_s'] * 1e6:,.0f} | {r['autocast_s'] * 1e6:,.0f} | {r['speedup']:.2f}x | "
              f"{r['agreement']:.3f} | {r['max_abs_diff']:.3g} |")

    r = et.overflow_demo()
    print(f"\n## float16 failures: 70000 -> {r['logit']}; sum of 1000 squares of 10 -> {r['sum_of_squares']}; "
          f"weight-gradient norm fp32 {r['fp32_grad_norm']:.3g}, fp16 {r['fp16_grad_norm']:.3g} "
          f"({r['fp16_zero_fraction']:.0%} of activation gradients flushed to 0), with {r['how']}: "
          f"{r['scaled_grad_norm']:.3g} (relative error {r['scaled_rel_error']:.1e})")

    print("\n## torch.compile (inductor), batch 256\n\n| model | mode | first call (s) | eager (µs) | compiled (µs) "
          "| speed-up |\n|---|---|---:|---:|---:|---:|")
    for name, m in (("digits MLP", dense), ("digits CNN", et.digits_cnn(0))):
        for mode in ("inference", "training"):
            r = et.compile_study(m, x256, mode=mode, y=np.resize(d.y_test, 256), repeats=30)
            if r["ok"]:
                print(f"| {name} | {mode} | {r['first_call_s']:.1f} | {r['eager_s'] * 1e6:,.0f} | "
                      f"{r['compiled_s'] * 1e6:,.0f} | {r['speedup']:.2f}x |")
            else:
                print(f"| {name} | {mode} | - | {r['eager_s'] * 1e6:,.0f} | - | {r['message']} |")

    print("\n## torch.profiler: the digits MLP, batch 256, 10 calls (self CPU time)\n")
    for name, us, calls in et.profile(dense, x256, repeats=10).top:
        print(f"  {name:28s} {us:10.0f} µs  {calls:4d} calls")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", action="store_true", help="also the curves and studies")
    parser.add_argument("--retrain", type=int, default=300, help="retraining steps after pruning")
    parser.add_argument("--distill-steps", type=int, default=1000, help="training steps of each student")
    args = parser.parse_args()
    results_table(args)
    if args.studies:
        studies(args)


if __name__ == "__main__":
    main()
