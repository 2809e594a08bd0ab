"""Tests for dlcourse.transformer.torch_impl (the GPT, its KV cache, training, scoring) and
dlcourse.transformer.tasks (reversal, addition, exact match).

Fast: tiny models, step-counted (not timed) training.  No timing asserts (the speed and the
accuracy goals live in benchmarks/bench_transformer.py and the chapter's measurements).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.data import TextCorpus
from dlcourse.transformer import tasks as TK
from dlcourse.transformer import torch_impl as G

np_impl = pytest.importorskip("dlcourse.transformer.numpy_impl")

TEXT = "".join(f"def f{i % 7}(x):\n    return x + {i % 5}\n\n" for i in range(300))


def tiny_gpt(pos="learned", V=13, block_size=16, seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    model = G.GPT(V, block_size, n_layer=2, n_head=2, n_embd=16, pos=pos, **kw).to(dtype)
    with torch.no_grad():   # larger weights than GPT-2's init: differences show, attention is not uniform
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


# --------------------------------------------------------------------------- heads, positions

def test_split_merge_heads_layout_and_round_trip():
    x = torch.randn(2, 5, 12)
    h = G.split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    for head in range(3):                     # head h holds features h*hs .. (h+1)*hs - 1 of every token
        assert torch.equal(h[:, head], x[..., head * 4:(head + 1) * 4])
    assert torch.equal(G.merge_heads(h), x)
    assert np.array_equal(G.split_heads(x, 3).numpy(), np_impl.split_heads(x.numpy(), 3))
    with pytest.raises(ValueError):
        G.split_heads(x, 5)


def test_sinusoidal_positions_equal_numpy():
    for dtype in (torch.float32, torch.float64):
        pe = G.sinusoidal_positions(50, 16, dtype=dtype)
        assert pe.dtype == dtype
        np.testing.assert_allclose(pe.numpy(), np_impl.sinusoidal_positions(50, 16), rtol=1e-6, atol=1e-7)


def test_rope_equals_numpy_and_is_relative():
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    positions = torch.arange(5, 12)
    np.testing.assert_allclose(G.apply_rope(x, positions).numpy(),
                               np_impl.apply_rotary(x.numpy(), positions.numpy()), atol=1e-12)
    # q.k after rotation depends only on the distance: shift both positions by 9
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)
    dot = lambda tq, tk: float((G.apply_rope(q, torch.tensor([tq])) * G.apply_rope(k, torch.tensor([tk]))).sum())
    assert dot(7, 3) == pytest.approx(dot(16, 12), abs=1e-12)
    assert G.apply_rope(x.float(), positions).dtype == torch.float32


def test_causal_mask_with_cache():
    m = G.causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(G.causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


# --------------------------------------------------------------------------- the block against NumPy

def test_block_state_dict_keys_are_the_numpy_names():
    assert tuple(G.Block(8, 2).state_dict()) == tuple(np_impl.BLOCK_KEYS)


@pytest.mark.skipif(not hasattr(np_impl, "block_backward"), reason="numpy_impl.block_forward not landed yet")
def test_block_equals_numpy_block_forward_backward():
    E, nh = 8, 2
    params = np_impl.init_block_params(E, seed=3)
    block = G.Block(E, nh).double()
    block.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    x = np.random.default_rng(0).standard_normal((2, 5, E))
    dy = np.random.default_rng(1).standard_normal((2, 5, E))
    y_np, cache = np_impl.block_forward(x, params, nh)
    dx_np, grads_np = np_impl.block_backward(dy, cache)
    xt = torch.from_numpy(x).requires_grad_()
    y, _ = block(xt)
    y.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y.detach().numpy(), y_np, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), dx_np, atol=1e-12)
    for name, p in block.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads_np[name], atol=1e-12, err_msg=name)


def test_attention_manual_path_equals_sdpa_path():
    torch.manual_seed(0)
    attn = G.CausalSelfAttention(16, 4).double()
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    y_fused, none = attn(x)
    y_manual, w = attn(x, need_weights=True)
    assert none is None and w.shape == (3, 4, 9, 9)
    torch.testing.assert_close(y_manual, y_fused, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- the model

@pytest.mark.parametrize("pos", G.POSITIONS)
def test_gpt_shapes_loss_and_ignore_index(pos):
    model = tiny_gpt(pos)
    ids = torch.randint(0, 13, (3, 10))
    targets = torch.randint(0, 13, (3, 10))
    logits, loss = model(ids)
    assert logits.shape == (3, 10, 13) and loss is None
    targets[:, :4] = -100
    _, loss = model(ids, targets)
    manual = F.cross_entropy(logits[:, 4:].reshape(-1, 13), targets[:, 4:].reshape(-1))
    assert float(loss.detach()) == pytest.approx(float(manual.detach()), rel=1e-6)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 17, dtype=torch.long))      # longer than block_size


@pytest.mark.parametrize("pos", G.POSITIONS)
def test_gpt_is_causal(pos):
    model = tiny_gpt(pos, dtype=torch.float64)
    ids = torch.randint(0, 13, (2, 12))
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 13
    a, _ = model(ids)
    b, _ = model(changed)
    assert torch.equal(a[:, :7], b[:, :7])               # earlier positions never see a later token
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_weight_tying_and_invalid_pos():
    model = G.GPT(11, 8, n_embd=16, tie_weights=True)
    assert model.head.weight is model.tok_emb.weight
    assert model.num_params() < G.GPT(11, 8, n_embd=16).num_params()
    with pytest.raises(ValueError):
        G.GPT(11, 8, pos="absolute")


# --------------------------------------------------------------------------- the KV cache and generation

@pytest.mark.parametrize("pos", G.POSITIONS)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_cache_equals_no_cache(pos, dtype, tol):
    model = tiny_gpt(pos, dtype=dtype)
    prompt = torch.randint(0, 13, (3, 5))
    # 20 new tokens: past block_size 16, where both paths slide the window
    out_c, logits_c = G.generate(model, prompt, 20, greedy=True, use_cache=True, return_logits=True)
    out_n, logits_n = G.generate(model, prompt, 20, greedy=True, use_cache=False, return_logits=True)
    assert torch.equal(out_c, out_n)
    assert out_c.shape == (3, 25) and torch.equal(out_c[:, :5], prompt)
    torch.testing.assert_close(logits_c, logits_n, atol=tol, rtol=0)


@pytest.mark.parametrize("pos", G.POSITIONS)
def test_chunked_cache_equals_one_pass(pos):
    """A prompt read in chunks through the cache (queries of a chunk see all cached keys plus the
    chunk causally) gives the logits of one pass over the whole sequence."""
    model = tiny_gpt(pos, dtype=torch.float64)
    ids = torch.randint(0, 13, (2, 11))
    full, _ = model(ids)
    cache = G.new_cache(model)
    parts = [model(ids[:, a:b], cache=cache)[0] for a, b in ((0, 4), (4, 5), (5, 11))]
    assert G.cache_length(cache) == 11
    assert cache[0]["k"].shape == (2, 2, 11, 8)           # (N, nh, T_cached, hs)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-12, rtol=0)


def test_generate_sampling_deterministic_and_top_k():
    model = tiny_gpt()
    prompt = torch.randint(0, 13, (4, 3))
    g = lambda: torch.Generator().manual_seed(5)
    a = G.generate(model, prompt, 10, generator=g())
    b = G.generate(model, prompt, 10, generator=g(), use_cache=False)
    assert torch.equal(a, b)
    # top_k=1 is greedy
    assert torch.equal(G.generate(model, prompt, 10, top_k=1, generator=g()),
                       G.generate(model, prompt, 10, greedy=True))
    one = G.generate(model, prompt[0], 4, greedy=True)     # a 1-D prompt gives a 1-D answer
    assert one.shape == (7,)
    assert model.training is False


def test_kv_cache_speedup_reports_same_tokens():
    result = G.kv_cache_speedup(tiny_gpt(), prompt_len=4, new_tokens=6, repeats=1)
    assert result["same_tokens"] and result["cached"] > 0 and result["uncached"] > 0


def test_attention_maps_rows_causal_and_consistent():
    model = tiny_gpt(dtype=torch.float64)
    ids = torch.randint(0, 13, (9,))
    maps = G.attention_maps(model, ids)
    assert maps.shape == (2, 2, 9, 9)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 9, dtype=maps.dtype))
    assert torch.all(maps.triu(1) == 0)
    # layer 0's map is softmax(q k^T / sqrt(hs)) of the embedded tokens, causally masked
    attn = model.blocks[0].attn
    x = model.blocks[0].ln1(model.embed(ids[None]))
    q, k, _ = (G.split_heads(a, 2) for a in attn.qkv(x).split(16, dim=2))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~G.causal_mask(9, 9), -math.inf)
    torch.testing.assert_close(maps[0], torch.softmax(scores, -1)[0].float().to(maps.dtype), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- tasks

@pytest.mark.parametrize("task", [TK.Reversal(6), TK.Addition(3), TK.Addition(3, reverse_answer=True)])
def test_task_problems_answers_and_targets(task):
    rng = np.random.default_rng(0)
    seq = task.problems(200, "train", rng)
    assert seq.shape == (200, task.prompt_len + task.answer_len)
    for row in seq[:50]:
        prompt, answer = task.split_problem(row)
        assert np.array_equal(task.encode(prompt + answer), row)          # encode / decode round trip
        if isinstance(task, TK.Reversal):
            assert prompt[-1] == ">" and answer == prompt[:-1][::-1]
        else:
            a, b = prompt[:-1].split("+")
            assert prompt[-1] == "=" and task.value(answer) == int(a) + int(b)
            assert len(answer) == 4
    x, y = task.batch(8, np.random.default_rng(1))
    seq = task.problems(8, "train", np.random.default_rng(1))
    assert np.array_equal(x, seq[:, :-1])
    P = task.prompt_len
    assert np.all(y[:, :P - 1] == -100) and np.array_equal(y[:, P - 1:], seq[:, P:])
    with pytest.raises(ValueError):
        task.encode("x?")


def test_addition_formats():
    seq = TK.Addition(3, reverse_answer=True)._sequences(np.array([123_456]))
    assert TK.Addition(3).decode(seq[0]) == "123+456=9750"
    seq = TK.Addition(3, reverse_answer=False)._sequences(np.array([123_456]))
    assert TK.Addition(3).decode(seq[0]) == "123+456=0579"


@pytest.mark.parametrize("task", [TK.Reversal(3, symbols=4), TK.Addition(1)])
def test_held_out_split_is_disjoint_and_fixed(task):
    train, i_train = task.problems(3000, "train", np.random.default_rng(0), return_index=True)
    held, i_held = task.problems(3000, "held_out", np.random.default_rng(1), return_index=True)
    assert not task.is_held_out(i_train).any() and task.is_held_out(i_held).all()
    assert not {tuple(r) for r in train} & {tuple(r) for r in held}
    # the split is a property of the problem: about 10 % of all problems, whatever the seed
    every = np.arange(4 ** 3 if isinstance(task, TK.Reversal) else 100)
    share = task.is_held_out(every).mean()
    assert 0 < share < 0.3
    x, _ = task.batch(500, np.random.default_rng(3))
    assert not {tuple(r) for r in x} & {tuple(r[:-1]) for r in held}


class _Oracle(nn.Module):
    """A perfect "model" for a task: puts all weight on the right next token (no cache used)."""

    def __init__(self, task, wrong=False):
        super().__init__()
        self.task, self.wrong = task, wrong
        self.blocks = nn.ModuleList([nn.Identity()])
        self.block_size, self.vocab_size = 64, task.vocab_size
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids, targets=None, cache=None):
        P = self.task.prompt_len
        N, T = ids.shape
        logits = torch.zeros(N, T, self.vocab_size)
        prompts = ids[:, :P].numpy()
        texts = [self.task.decode(p) for p in prompts]
        full = np.stack([self.task.encode(t + self._answer(t)) for t in texts])   # (N, P + A)
        nxt = full[:, T] if T < full.shape[1] else np.zeros(N, dtype=np.int64)
        if self.wrong:
            nxt = (nxt + 1) % self.vocab_size
        logits[torch.arange(N), -1, torch.from_numpy(nxt)] = 1.0
        return logits, None

    def _answer(self, prompt):
        if isinstance(self.task, TK.Reversal):
            return prompt[:-1][::-1]
        a, b = prompt[:-1].split("+")
        s = f"{int(a) + int(b):0{self.task.digits + 1}d}"
        return s[::-1] if self.task.reverse_answer else s


@pytest.mark.parametrize("task", [TK.Reversal(5), TK.Addition(3)])
def test_exact_match_of_a_perfect_and_a_wrong_model(task):
    assert TK.exact_match_accuracy(_Oracle(task), task, n=200, batch_size=64) == 1.0
    assert TK.exact_match_accuracy(_Oracle(task, wrong=True), task, n=200) == 0.0


# --------------------------------------------------------------------------- training and scoring

def test_train_gpt_learns_reversal_and_is_deterministic():
    task = TK.Reversal(4, symbols=5)

    def run():
        torch.manual_seed(0)
        model = G.GPT(task.vocab_size, task.block_size, n_layer=1, n_head=2, n_embd=32)
        return G.train_gpt(model, lambda rng: task.batch(32, rng), steps=60, lr=1e-2, seed=1, progress=False,
                           eval_fn=lambda m: dict(acc=TK.exact_match_accuracy(m, task, 200)), eval_every=30)

    model, h = run()
    _, h2 = run()
    assert h.train_loss == h2.train_loss and h.val_acc == h2.val_acc
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    assert h.updates == [0, 30, 60] and h.steps == 60 and h.tokens[-1] == 60 * 32 * task.block_size
    assert len(h.val_acc) == 3 and math.isnan(h.val_loss[0])
    assert not model.training


def test_train_gpt_time_budget_and_callback():
    task = TK.Reversal(3, symbols=4)
    model = G.GPT(task.vocab_size, task.block_size, n_layer=1, n_head=1, n_embd=8)
    seen = []
    _, h = G.train_gpt(model, lambda rng: task.batch(8, rng), seconds=0.3, progress=False,
                       eval_fn=lambda m: 1.0, callback=lambda hist: seen.append(len(hist.times)))
    assert h.seconds >= 0.3 and h.times[-1] == h.seconds and seen and seen[-1] == len(h.times)
    with pytest.raises(ValueError):
        G.train_gpt(model, lambda rng: task.batch(8, rng), progress=False)


@torch.no_grad()
def _hand_nats(model, ids, B, stride):
    """Each prediction j (of ids[j + 1]) scored by the earliest window that holds it."""
    M = len(ids)
    starts = list(range(0, M - 1 - B + 1, stride))
    if starts[-1] != M - 1 - B:
        starts.append(M - 1 - B)
    total = 0.0
    for j in range(M - 1):
        st = min(s for s in starts if s + B > j)
        if st > 0:
            assert j - st + 1 >= B - stride + 1             # every later window: a long context
        logits, _ = model(torch.as_tensor(ids[st:st + B])[None])
        total -= float(torch.log_softmax(logits[0, j - st].double(), -1)[ids[j + 1]])
    return total / (M - 1)


@pytest.mark.parametrize("M, stride", [(40, None), (37, 3), (12, None), (8, None)])
def test_evaluate_nats_per_char_equals_hand_computation(M, stride):
    model = tiny_gpt(block_size=10, dtype=torch.float64)
    ids = np.random.default_rng(M).integers(0, 13, M)
    B = min(10, M - 1)
    got = G.evaluate_nats_per_char(model, ids, stride=stride, batch_size=3)
    assert got == pytest.approx(_hand_nats(model, ids, B, stride or B // 2), rel=1e-10)


def test_train_char_gpt_on_a_tiny_corpus():
    corpus = TextCorpus.from_text(TEXT, chunk_size=200)
    model, h = G.train_char_gpt(corpus, steps=30, progress=False, n_embd=16, n_head=2, block_size=16,
                                batch_size=8, lr=1e-2, eval_chars=500)
    assert h.final_val_loss < h.val_loss[0] and len(h.val_loss) == 11
    assert h.final_val_loss == pytest.approx(G.evaluate_nats_per_char(model, corpus.val))
    assert math.isfinite(h.tokens_per_second)


def test_rnn_vs_transformer_runs_small():
    corpus = TextCorpus.from_text(TEXT, chunk_size=200)
    r = G.rnn_vs_transformer(corpus, seconds=0.2, lags=(2,), recall_steps=3, recall_batch=4, eval_chars=300)
    assert set(r.char) == {"lstm", "gpt"} and len(r.recall["gpt"]) == 1
    assert "lstm" in r.table()


def test_sdpa_backend_and_scale_up_without_gpu(capsys):
    info = G.sdpa_backend("cpu", torch.float64)
    assert "MATH" in info["available"] and info["used"] in info["available"]
    if not torch.cuda.is_available():
        assert G.scale_up(device="cpu") is None
        assert "skipped" in capsys.readouterr().out


def test_train_task_returns_model_history_accuracy():
    task = TK.Reversal(3, symbols=4)
    model, h, acc = TK.train_task(task, steps=20, n_eval=100, n_eval_during=50, progress=False, device="cpu",
                                  n_embd=16, n_head=2)
    assert isinstance(model, G.GPT) and h.steps == 20 and 0.0 <= acc <= 1.0
    assert len(h.val_acc) == 11 and not math.isnan(h.val_acc[-1])
