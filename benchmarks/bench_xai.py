"""Chapter 09: what an explanation costs, and the sanity checks' tables.

    python benchmarks/bench_xai.py             # cost per method (model calls, seconds) + NumPy vs autograd gradient
    python benchmarks/bench_xai.py --sanity    # cascading randomization (Spearman) and deletion / insertion AUCs

Cost: for each method of ``dlcourse.xai.torch_impl.METHODS`` on the course's digits CNN and MLP
(trained once, cached), one explanation (batch 1) and 100 explanations (one call on a batch of
100 test digits): the model calls, counted with hooks as rows through the model forward and
rows whose logits got a gradient (backward), and the seconds of ONE run (after one warm-up
call), with the course's thread setting (1 thread, ``dlcourse.runtime``).  Then
``numpy_impl.input_gradient`` (the MLP's backward by hand) against ``torch.autograd`` on the
same MLP (float32 and float64, batch 1 and 256): the fastest of interleaved repeats
(``timing.fastest_interleaved``) and their ratio.  On a shared machine the seconds are
pessimistic.

``--sanity``: ``cascading_randomization`` on 50 test digits (targets = true labels; median over
the digits of Spearman's rho with the trained model's map, of |map| and of the signed map,
after each cumulative re-initialization from the last layer) and ``deletion_insertion`` on 100
test digits (every pixel a step, baseline 0; mean AUC per method and for a random ranking).
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dlcourse.data import load_digits
from dlcourse.runtime import default_threads
from dlcourse.xai import numpy_impl as xn
from dlcourse.xai import torch_impl as xt
from timing import fastest_interleaved


class CallCounter:
    """Counts rows through ``model``: forward (a forward hook) and backward (a hook on the logits' gradient)."""

    def __init__(self, model):
        self.forward = self.backward = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.forward += output.shape[0]
        if output.requires_grad:
            output.register_hook(self._grad)

    def _grad(self, grad):
        self.backward += grad.shape[0]

    def close(self):
        self.handle.remove()


def bench_cost(args) -> None:
    d = load_digits(0)
    print(f"threads: {torch.get_num_threads()}; one run each (after one warm-up call); model calls = rows "
          f"forward / rows backward\n")
    print("| model | method | calls, 1 explanation (fwd / bwd) | s, 1 | calls, 100 (fwd / bwd) | s, 100 |")
    print("|---|---|---|---|---|---|")
    for label, model in (("CNN", xt.digits_cnn()), ("MLP", xt.digits_mlp())):
        for name, method in xt.methods_for(model).items():
            cells = []
            for n in (1, 100):
                x, y = d.x_test[:n], d.y_test[:n]
                method(model, x, y)                                   # warm-up
                counter = CallCounter(model)
                start = time.perf_counter()
                method(model, x, y)
                seconds = time.perf_counter() - start
                counter.close()
                cells += [f"{counter.forward} / {counter.backward}", f"{seconds * 1e3:.1f} ms"]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |", flush=True)

    print("\nmodel-agnostic methods in NumPy on the MLP (numpy_impl, one digit, the model as a black box "
          "(M, 64) -> (M, 10); calls = rows evaluated; one run after a warm-up)\n")
    print("| method | model calls | ms | Spearman with IG (50 steps) |")
    print("|---|---|---|---|")
    params = {k: v.detach().double().numpy() for k, v in xt.digits_mlp().state_dict().items()}
    f = lambda z: xn.mlp_logits(params, z)
    x1, t1 = d.x_test[0].astype(np.float64), int(d.y_test[0])
    ig1 = xn.integrated_gradients(params, x1[None], t1, steps=50)[0][0]
    for name, run in [("occlusion 2 x 2, stride 1", lambda: xn.occlusion(f, x1, t1, patch=2, stride=1)),
                      ("LIME, 1,000 masks", lambda: xn.lime(f, x1, t1, n_samples=1000, rng=np.random.default_rng(0))),
                      ("LIME, 5,000 masks", lambda: xn.lime(f, x1, t1, n_samples=5000, rng=np.random.default_rng(0))),
                      ("Shapley sampling, 25 orders", lambda: xn.shapley_sampling(f, x1, t1, n_permutations=25,
                                                                                 rng=np.random.default_rng(0))),
                      ("Shapley sampling, 200 orders", lambda: xn.shapley_sampling(f, x1, t1, n_permutations=200,
                                                                                  rng=np.random.default_rng(0)))]:
        run()                                                          # warm-up
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
        attr = np.asarray(out[0]).reshape(-1)
        print(f"| {name} | {out[-1]} | {seconds * 1e3:.1f} | {xn.spearman(attr, ig1):.2f} |", flush=True)

    print("\nthe MLP's input gradient d f_t / dx: NumPy by hand (numpy_impl.input_gradient) vs torch.autograd "
          f"(fastest of {args.repeats} interleaved repeats x {args.passes} passes)\n")
    print("| dtype | batch | NumPy (ms) | autograd (ms) | NumPy / autograd |")
    print("|---|---|---|---|---|")
    mlp = xt.digits_mlp()
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        model = mlp if tdtype == torch.float32 else copy.deepcopy(mlp).double()
        params = {k: v.detach().numpy().astype(dtype) for k, v in model.state_dict().items()}
        for n in (1, 256):
            x = np.resize(d.x_test, (n, 64)).astype(dtype)
            y = np.resize(d.y_test, n)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            t_np, t_torch = fastest_interleaved([lambda: xn.input_gradient(params, x, y),
                                                 lambda: xt.logit_gradient(model, tx, ty)],
                                                args.passes, args.repeats)
            print(f"| {np.dtype(dtype).name} | {n} | {t_np * 1e3:.3f} | {t_torch * 1e3:.3f} | {t_np / t_torch:.2f} |")


def bench_sanity(args) -> None:
    d = load_digits(0)
    for label, model in (("MLP", xt.digits_mlp()), ("CNN", xt.digits_cnn())):
        x, y = d.x_test[:50], d.y_test[:50]
        start = time.perf_counter()
        res = xt.cascading_randomization(model, x, y, seed=0)
        print(f"\n{label}: cascading randomization, 50 test digits, median Spearman with the trained map "
              f"({time.perf_counter() - start:.1f} s); columns: layers re-initialized so far (cumulative)\n")
        print("|map|:\n" + res.table() + "\n\nsigned map:\n" + res.table(signed=True), flush=True)
    print("\ndeletion / insertion, 100 test digits, every pixel a step, baseline 0: mean AUC of the target's "
          "softmax probability (deletion: lower is better; insertion: higher is better)\n")
    print("| model | ranking | deletion AUC | insertion AUC |")
    print("|---|---|---|---|")
    x, y = d.x_test[:100], d.y_test[:100]
    for label, model in (("MLP", xt.digits_mlp()), ("CNN", xt.digits_cnn())):
        maps = {k: f(model, x, y) for k, f in xt.methods_for(model).items()}
        maps["random"] = torch.from_numpy(np.random.default_rng(0).random(x.shape))
        for name, m in maps.items():
            dele = xt.deletion_insertion(model, x, y, m, "deletion").auc.mean()
            ins = xt.deletion_insertion(model, x, y, m, "insertion").auc.mean()
            print(f"| {label} | {name} | {dele:.3f} | {ins:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sanity", action="store_true", help="the sanity-check tables instead of the costs")
    parser.add_argument("--passes", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    threads = default_threads()
    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        bench_sanity(args) if args.sanity else bench_cost(args)


if __name__ == "__main__":
    main()
