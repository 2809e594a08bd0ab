"""Chapter 09's trust studies: accuracy against eps (plain vs adversarially trained), and the shortcut study.

    python benchmarks/bench_xai_trust.py                 # both tables
    python benchmarks/bench_xai_trust.py --robust        # accuracy against eps only
    python benchmarks/bench_xai_trust.py --shortcut      # the planted-shortcut study only

``--robust``: the course's digits_mlp / digits_cnn and their adversarially trained copies
(``trust.adversarial_training``, eps 0.1, PGD-5 or FGSM with a random start), each attacked with
PGD-10 (random start, seeded), FGSM and random-sign noise of the same eps on the first
``--n`` test digits; plus the training seconds.  ``--shortcut``: ``trust.shortcut_study`` over
``--seeds``.  One run each on the CPU with the course's thread setting (1 thread); timings taken
on a shared machine are pessimistic.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dlcourse.data import load_digits
from dlcourse.xai import torch_impl, trust

EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def robust_table(n: int, seed: int = 0, train_eps: float = 0.1) -> None:
    d = load_digits(seed)
    x, y = d.x_test[:n], d.y_test[:n]
    models = {}
    for arch, plain in (("mlp", torch_impl.digits_mlp), ("cnn", torch_impl.digits_cnn)):
        t0 = time.perf_counter()
        models[f"{arch} plain"] = plain(seed)
        print(f"{arch} plain trained in {time.perf_counter() - t0:.1f} s")
        for attack in ("pgd", "fgsm_rs"):
            model, hist = trust.adversarial_training(arch, eps=train_eps, seed=seed, attack=attack)
            models[f"{arch} adv-{attack}"] = model
            print(f"{arch} adv-{attack} (eps {train_eps}): {hist.seconds:.1f} s, val clean "
                  f"{hist.clean_val[0]:.3f} -> {hist.clean_val[-1]:.3f}, val PGD {hist.robust_val[0]:.3f} -> "
                  f"{hist.robust_val[-1]:.3f}")
    print(f"\naccuracy on the first {n} test digits against eps (L-inf, pixels in [0, 1])\n")
    print("| model | attack | " + " | ".join(f"{e:g}" for e in EPS) + " |")
    print("|---|---|" + "---|" * len(EPS))
    for name, model in models.items():
        for attack in ("pgd", "fgsm", "noise"):
            t0 = time.perf_counter()
            acc = trust.robust_accuracy(model, x, y, EPS, attack=attack, seed=seed)
            cells = " | ".join(f"{a:.3f}" for a in acc)
            print(f"| {name} | {attack} | {cells} |  ({time.perf_counter() - t0:.1f} s)")


def shortcut_table(seeds) -> None:
    s = trust.shortcut_study(seeds=seeds)
    print(f"\nshortcut study, seeds {tuple(seeds)}, {s.seconds:.1f} s; mean (min-max) over the seeds\n")
    print(s.table())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robust", action="store_true")
    p.add_argument("--shortcut", action="store_true")
    p.add_argument("--n", type=int, default=270)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    both = not (a.robust or a.shortcut)
    if a.robust or both:
        robust_table(a.n)
    if a.shortcut or both:
        shortcut_table(a.seeds)


if __name__ == "__main__":
    main()
