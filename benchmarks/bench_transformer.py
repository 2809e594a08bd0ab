"""Chapter 07's GPT: KV-cache vs no-cache generation, and training throughput, on the CPU (and CUDA if present).

    python benchmarks/bench_transformer.py            # prints markdown tables
    python benchmarks/bench_transformer.py --quick    # fewer lengths and repeats
    python benchmarks/bench_transformer.py --tasks    # reversal and addition, 3 seeds (~90 s)
    python benchmarks/bench_transformer.py --char-curve   # char GPT vs LSTM, 60 s each, 2 seeds (~5 min)

1. Generation: greedy tokens after a random prompt with ``generate(..., use_cache=True)`` (the
   prompt read once, then one token per step attending to the cached keys and values) and
   ``use_cache=False`` (the whole sequence re-read every step), for the char-LM GPT
   (``CHAR_GPT``: 2 layers, width 64, rotary positions) with its block size raised to fit each
   length.  Fastest of interleaved repeats (``timing.fastest_interleaved``); the two outputs
   are checked to be equal.
2. Training throughput (tokens/s, forward + backward + AdamW step) of the lesson's task GPT
   (2 layers, width 64, 4 heads, batch 64 of 11-token addition problems) and of the char-LM GPT
   (batch 32 x 64 characters), next to chapter 06's char LSTM (batch 32 x 32); fastest of
   interleaved repeats.

The course's thread setting (one compute thread, ``dlcourse.runtime``).  On CUDA the same
tables again on the GPU (float32, and the char-LM in bfloat16 autocast); without CUDA it says so.

``--tasks``: ``tasks.train_task`` (``TASK_GPT``, ``TASK_STEPS`` steps) on reversal (8 digits)
and addition (3 digits), seeds 0, 1, 2; exact match on 10,000 held-out problems and the seconds
of training (evaluation excluded).

``--char-curve``: ``train_char_gpt`` (``CHAR_GPT``) and chapter 06's ``train_char_lm`` (its
defaults, LSTM) on ``load_text_corpus()`` for 60 s each, seeds 0 and 1, evaluated every 5 s of
training (evaluation time not counted): val nats/char on the first 20,000 validation
characters at about 10/20/30/45/60 s, then on the whole validation split, and tokens/s.
Both are on the CPU (the course's budget is CPU seconds), one thread.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from dlcourse.rnn import torch_impl as rnn
from dlcourse.transformer import tasks as TK
from dlcourse.transformer import torch_impl as G
from timing import fastest_interleaved


def generation_table(device, lengths, new_tokens, repeats):
    rows = ["| prompt | new tokens | cached (ms) | uncached (ms) | speed-up | same tokens |",
            "|---:|---:|---:|---:|---:|---:|"]
    for prompt_len in lengths:
        model = G.char_gpt(97, 0, block_size=prompt_len + new_tokens).to(device).eval()
        prompt = torch.randint(0, 97, (1, prompt_len), generator=torch.Generator().manual_seed(0)).to(device)
        outs = {}

        def run(use_cache):
            def fn():
                outs[use_cache] = G.generate(model, prompt, new_tokens, greedy=True, use_cache=use_cache)
                G._sync(device)
            return fn

        cached, uncached = fastest_interleaved([run(True), run(False)], passes=1, repeats=repeats)
        rows.append(f"| {prompt_len} | {new_tokens} | {cached * 1e3:.1f} | {uncached * 1e3:.1f} | "
                    f"{uncached / cached:.1f}x | {bool(torch.equal(outs[True], outs[False]))} |")
    return "\n".join(rows)


def _train_step(model, opt, batch_fn, rng, device, autocast):
    def fn():
        x, y = batch_fn(rng)
        x, y = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            out = model(x, y) if not isinstance(model, rnn.CharLM) else model(x)
        if isinstance(model, rnn.CharLM):
            logits = out[0]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            loss = out[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        G._sync(device)
    return fn


def throughput_table(device, passes, repeats, autocast=False):
    task = TK.Addition(3)
    torch.manual_seed(0)
    data = np.random.default_rng(0).integers(0, 97, 200_000)
    cases = {
        "task GPT (addition, 2 x 64, batch 64 x 11)":
            (G.GPT(task.vocab_size, task.block_size, 2, 4, 64), lambda r: task.batch(64, r), 64 * task.block_size),
        "char GPT (CHAR_GPT, batch 32 x 64)":
            (G.char_gpt(97, 0), G.char_batches(data, 32, 64), 32 * 64),
        "char LSTM (chapter 06, H 256, batch 32 x 32)":
            (rnn.CharLM(97, "lstm", 256, 64), G.char_batches(data, 32, 32), 32 * 32),
    }
    fns, names, tokens = [], [], []
    for name, (model, batch_fn, n_tokens) in cases.items():
        model = model.to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        fns.append(_train_step(model, opt, batch_fn, np.random.default_rng(0), device, autocast))
        names.append(name)
        tokens.append(n_tokens)
    best = fastest_interleaved(fns, passes=passes, repeats=repeats)
    rows = ["| model | ms / step | tokens/s |", "|---|---:|---:|"]
    for name, seconds, n_tokens in zip(names, best, tokens):
        rows.append(f"| {name} | {seconds * 1e3:.1f} | {n_tokens / seconds:,.0f} |")
    return "\n".join(rows)


CURVE_AT = (10, 20, 30, 45, 60)


def _at(times, values, target):
    """The value recorded nearest ``target`` seconds of training, and its time."""
    k = min(range(len(times)), key=lambda i: abs(times[i] - target))
    return values[k], times[k]


def char_curve_table(seconds=60.0, seeds=(0, 1), eval_every=5.0):
    from dlcourse.data import load_text_corpus
    corpus = load_text_corpus()
    targets = [t * seconds / 60 for t in CURVE_AT]
    head = "/".join(f"{t:g}" for t in targets)
    rows = [f"| model | seed | val nats/char at {head} s (first 20,000 val chars) | final (whole val) "
            f"| steps | tokens/s |", "|---|---:|---|---:|---:|---:|"]
    for name in ("char GPT (CHAR_GPT)", "char LSTM (chapter 06)"):
        for seed in seeds:
            if name.startswith("char GPT"):
                _, h = G.train_char_gpt(corpus, seconds=seconds, seed=seed, device="cpu", progress=False,
                                        eval_every=eval_every, eval_chars=20_000)
                rate, steps = h.tokens_per_second, h.steps
            else:
                _, h = rnn.train_char_lm(corpus, seconds=seconds, seed=seed, device="cpu", progress=False,
                                         eval_every=eval_every, eval_chars=20_000)
                rate, steps = h.chars_per_second, h.updates[-1]
            points = [_at(h.times, h.val_loss, t) for t in targets]
            curve = ", ".join(f"{v:.3f}" for v, _ in points)
            when = "/".join(f"{t:.0f}" for _, t in points)
            rows.append(f"| {name} | {seed} | {curve} (at {when} s) | {h.final_val_loss:.3f} | {steps:,} | {rate:,.0f} |")
            print(rows[-1], file=sys.stderr, flush=True)     # progress
    return "\n".join(rows)


def tasks_table(seeds=(0, 1, 2), n_eval=10_000):
    rows = ["| task | steps | seed | exact match (10,000 held out) | training (s) |", "|---|---:|---:|---:|---:|"]
    for task in (TK.Reversal(8), TK.Addition(3)):
        for seed in seeds:
            _, h, acc = TK.train_task(task, seed=seed, n_eval=n_eval, device="cpu", progress=False)
            rows.append(f"| {task.name} | {h.steps:,} | {seed} | {acc:.2%} | {h.seconds:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)     # progress
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", action="store_true", help="reversal and addition, seeds 0-2, exact match")
    parser.add_argument("--char-curve", action="store_true", help="char GPT vs LSTM, 60 s each, seeds 0 and 1")
    args = parser.parse_args()
    if args.tasks or args.char_curve:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
        if args.tasks:
            print("## Tasks: train_task, TASK_GPT, TASK_STEPS (CPU)\n")
            print(tasks_table())
        if args.char_curve:
            print("\n## Char GPT vs LSTM, 60 s of CPU training each\n")
            print(char_curve_table())
        return
    lengths = (32, 128) if args.quick else (32, 128, 512)
    repeats = 2 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("## Generation on the CPU (char GPT, batch 1, greedy)\n")
    print(generation_table("cpu", lengths, 64, repeats))
    print(f"\n## Training throughput on the CPU\n")
    print(throughput_table("cpu", passes=5 if args.quick else 10, repeats=repeats))
    print(f"\n## Attention kernel: {G.sdpa_backend('cpu')}")
    if not torch.cuda.is_available():
        print("\nno CUDA: the GPU tables are skipped")
        return
    print(f"\n## Generation on CUDA ({torch.cuda.get_device_name()})\n")
    print(generation_table("cuda", lengths, 64, repeats))
    print("\n## Training throughput on CUDA, float32\n")
    print(throughput_table("cuda", passes=20, repeats=repeats))
    print("\n## Training throughput on CUDA, bfloat16 autocast\n")
    print(throughput_table("cuda", passes=20, repeats=repeats, autocast=True))
    print(f"\nattention kernel: {G.sdpa_backend('cuda', torch.float32)}, {G.sdpa_backend('cuda', torch.bfloat16)}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
