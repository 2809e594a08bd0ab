"""Chapter 07's GPT: KV-cache vs no-cache generation, and training throughput, on the CPU (and CUDA if present).

    python benchmarks/bench_transformer.py            # prints markdown tables
    python benchmarks/bench_transformer.py --quick    # fewer lengths and repeats

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
"""
from __future__ import annotations

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
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
