"""The ring GAN: one NumPy GAN step vs its PyTorch twin on the CPU; ``--ring``: modes covered per seed.

    python benchmarks/bench_gan.py             # one training step, NumPy vs PyTorch, markdown table
    python benchmarks/bench_gan.py --ring      # the seeds table: setting x seed -> modes, quality, seconds

One step = both networks of the ring GAN (G: z (Z = 2) -> H -> H -> 2, D: 2 -> H -> H -> 1,
LeakyReLU(0.2)): G forward, D forward on the real and the (detached) fake batch, D's loss
(+ R1 on the real batch) backward, Adam on D; then D forward on the fake batch, the
non-saturating loss backward through D into G, Adam on G.  NumPy:
``dlcourse.gan.numpy_impl.gan_step`` (R1's double backward by hand); PyTorch: the same
step with autograd (``torch.autograd.grad(..., create_graph=True)`` for R1) and
``torch.optim.Adam``, the twin written below.  Same weights, inputs and dtypes, the
course's thread setting (1 compute thread per library, ``dlcourse.runtime``), the fastest
of several interleaved repeats (``timing.fastest_interleaved``).

``--ring`` trains ``numpy_impl.train_ring_gan`` (float32) for each setting and seed and
prints modes covered (of 8, ``modes_covered``: >= 1 % of 2,000 samples within 3 sigma),
the share of high-quality samples, and the seconds of each run.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from dlcourse.gan import numpy_impl as gn
from dlcourse.runtime import default_threads
from timing import fastest_interleaved


class Mlp(nn.Module):
    """The PyTorch twin of ``numpy_impl.mlp_forward`` for three layers: fc1, fc2, fc3, LeakyReLU(0.2)."""

    def __init__(self, sizes, dtype):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (nn.Linear(a, b, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


def torch_step(G, D, opt_g, opt_d, x_real, z, r1_gamma):
    x_fake = G(z)
    opt_d.zero_grad(set_to_none=True)
    x_r = x_real.requires_grad_(bool(r1_gamma))
    s_real, s_fake = D(x_r), D(x_fake.detach())
    loss_d = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
    if r1_gamma:
        (g,) = torch.autograd.grad(s_real.sum(), x_r, create_graph=True)
        loss_d = loss_d + r1_gamma / 2 * g.pow(2).sum(dim=1).mean()
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    loss_g = F.softplus(-D(x_fake)).mean()
    loss_g.backward()
    opt_g.step()


def case(hidden, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    state = gn.init_ring_gan(rng, hidden=hidden, z_dim=2, dtype=dtype)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    G, D = Mlp([2, hidden, hidden, 2], tdtype), Mlp([2, hidden, hidden, 1], tdtype)
    G.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.G.items()})
    D.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.D.items()})
    x_real = gn.sample_ring(batch, rng, 0.05, dtype=dtype)
    z = rng.standard_normal((batch, 2)).astype(dtype)
    return state, G, D, x_real, z


def bench_step(args) -> None:
    threads = default_threads()
    torch.set_num_threads(threads)
    print(f"threads: {threads} (course setting); fastest of {args.repeats} interleaved repeats x {args.passes} "
          f"passes; H = {args.hidden}, batch = {args.batch}; one step = D step (+ R1) and G step, Adam\n")
    print("| dtype | R1 | NumPy (ms) | PyTorch (ms) | NumPy / PyTorch |")
    print("|---|---|---|---|---|")
    with threadpool_limits(limits=threads):
        for dtype in (np.float32, np.float64):
            for r1 in (0.0, 1.0):
                state, G, D, x_real, z = case(args.hidden, args.batch, dtype)
                opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
                opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
                tx, tz = torch.from_numpy(x_real), torch.from_numpy(z)

                def np_run():
                    gn.gan_step(state, x_real, z, "nonsaturating", r1)

                def torch_run():
                    torch_step(G, D, opt_g, opt_d, tx, tz, r1)

                t_np, t_torch = fastest_interleaved([np_run, torch_run], args.passes, args.repeats)
                print(f"| {np.dtype(dtype).name} | {'gamma = 1' if r1 else 'off'} | {t_np * 1e3:.2f} | "
                      f"{t_torch * 1e3:.2f} | {t_np / t_torch:.2f} |")


SETTINGS = {
    "NS + R1 (gamma 1)": dict(r1_gamma=1.0),
    "NS, no R1": dict(r1_gamma=0.0),
    "minimax, no R1": dict(r1_gamma=0.0, loss="minimax"),
    "NS, sigma 0.02": dict(r1_gamma=0.0, sigma=0.02),
    "NS + R1, sigma 0.02": dict(r1_gamma=1.0, sigma=0.02),
    "NS, lr 1e-2, betas (0.9, 0.999)": dict(r1_gamma=0.0, lr=1e-2, betas=(0.9, 0.999)),
    "NS + R1, lr 1e-2, betas (0.9, 0.999)": dict(r1_gamma=1.0, lr=1e-2, betas=(0.9, 0.999)),
    "NS, betas (0.9, 0.999)": dict(r1_gamma=0.0, betas=(0.9, 0.999)),
}


def bench_ring(args) -> None:
    names = list(SETTINGS)
    if args.settings != "all":
        names = [names[int(i)] for i in args.settings.split(",")]
    seeds = range(args.seeds)
    print(f"ring of 8, sigma {args.sigma} unless named; Adam lr 1e-3 betas (0.5, 0.999) unless named; "
          f"batch {args.batch}, {args.steps} steps, H = {args.hidden}, float32, 1 thread\n")
    print("| setting | " + " | ".join(f"seed {s}: modes / HQ / s" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    with threadpool_limits(limits=default_threads()):
        for name in names:
            kw = dict(steps=args.steps, batch=args.batch, hidden=args.hidden, sigma=args.sigma)
            kw.update(SETTINGS[name])
            cells = []
            for seed in seeds:
                h = gn.train_ring_gan(seed=seed, **kw)
                cells.append(f"{h['final_modes']} / {h['final_high_quality']:.2f} / {h['seconds']:.1f}")
                if args.trajectory:
                    print(f"  {name} seed {seed}: modes every {h['snapshot_steps'][1]} steps: "
                          f"{''.join(map(str, h['modes']))}", flush=True)
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ring", action="store_true", help="the seeds table instead of the step timing")
    parser.add_argument("--hidden", type=int, default=64, help="H")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1500, help="--ring: training steps")
    parser.add_argument("--sigma", type=float, default=0.05, help="--ring: the modes' std")
    parser.add_argument("--seeds", type=int, default=5, help="--ring: seeds 0 .. n-1")
    parser.add_argument("--settings", default="all", help="--ring: 'all' or indices into SETTINGS, e.g. 0,1")
    parser.add_argument("--trajectory", action="store_true", help="--ring: print modes over time per run")
    args = parser.parse_args()
    bench_ring(args) if args.ring else bench_step(args)


if __name__ == "__main__":
    main()
