"""The digits GAN's training time to FID <= 4 (seeds 0-2), on the CPU and on CUDA when there is one;
autoencoder / VAE / denoiser training times.

    python benchmarks/bench_gan_digits.py               # everything (~1-2 min on one CPU thread)
    python benchmarks/bench_gan_digits.py --steps 2000 --seeds 0 1 2 --no-ae

One run per seed and device: :func:`dlcourse.gan.torch_impl.train_digits_gan` with its defaults
(MLP G and D of width 256, Adam 2e-3, R1 gamma 1, generator average 0.995) for ``--steps`` steps,
FID every 125 steps (1,257 samples of the averaged generator at fixed z vs the 270 test digits,
on the course classifier's features).  "seconds to FID <= 4" is the training time (evaluations
excluded) at the first evaluation at or below 4; FID at step 1,500 and at the end; IS (10 splits)
at the end.  Times are wall-clock on a shared machine: take them when ``uptime`` shows low load.
"""
from __future__ import annotations

import argparse
import time

import torch

from dlcourse.gan import torch_impl as G
from dlcourse.runtime import default_threads


def gan_rows(device: str, seeds, steps: int) -> list[str]:
    rows = []
    for seed in seeds:
        h = G.train_digits_gan(steps=steps, eval_every=125, seed=seed, device=device, progress=False)
        at_1500 = h.fid[h.steps.index(1500)] if 1500 in h.steps else float("nan")
        rows.append(f"| {device} | {seed} | {h.seconds_to(4.0):.1f} | {h.steps[h.fid.index(next(f for f in h.fid if f <= 4))] if min(h.fid) <= 4 else '-'} "
                    f"| {at_1500:.2f} | {h.final_fid:.2f} | {h.inception[0]:.2f} ± {h.inception[1]:.2f} "
                    f"| {h.seconds:.1f} | {1000 * h.seconds / h.steps[-1]:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-ae", action="store_true", help="skip the autoencoder timings")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {default_threads()} CPU thread(s)")
    t0 = time.perf_counter()
    G.course_classifier()
    print(f"course classifier: trained in {time.perf_counter() - t0:.2f} s (incl. loading the digits), "
          f"test accuracy {G.classifier_accuracy():.4f}")
    s = G.fid_sanity()
    print(f"sanity: FID real train vs test {s['real_train_vs_test']:.2f}, train halves {s['real_half_vs_half']:.2f}, "
          f"noise vs test {s['noise_vs_test']:.0f}; IS real train {s['is_real_train'][0]:.2f}, "
          f"real test {s['is_real_test'][0]:.2f}\n")
    print("| device | seed | s to FID <= 4 | steps | FID @1500 | FID end | IS end | train s | ms/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    gan_rows("cpu", args.seeds, args.steps)
    if torch.cuda.is_available():
        gan_rows("cuda", args.seeds, args.steps)
    else:
        print("no CUDA: the GPU rows are skipped")
    if args.no_ae:
        return
    print("\n| model | steps | train s | test MSE | other |")
    print("|---|---|---|---|---|")
    for z in (2, 8, 32):
        _, h = G.train_autoencoder(z, steps=2000, progress=False, device="cpu")
        print(f"| autoencoder Z={z} | 2000 | {h.seconds:.1f} | {h.test_mse[-1]:.4f} | |", flush=True)
    for z in (2, 8):
        _, h = G.train_vae(z, steps=3000, progress=False, device="cpu")
        print(f"| VAE Z={z} | 3000 | {h.seconds:.1f} | {h.test_mse[-1]:.4f} | -ELBO {h.train_loss[-1]:.2f} nats |",
              flush=True)
    d = G.denoise_study(0.3)
    print(f"| denoiser Z=16, noise 0.3 | 2000 | {d['seconds']['denoiser']:.1f} | {d['denoiser']:.4f} | plain AE on "
          f"the same noisy inputs {d['plain']:.4f}, noisy input itself {d['noisy_input']:.4f} |")


if __name__ == "__main__":
    main()
