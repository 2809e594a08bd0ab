"""Tests for dlcourse.rnn.torch_impl: the character model, its training, scoring and sampling,
the memory task, gradient norms over time, scale-up.

Fast: tiny models on a tiny text, step-counted (not timed) training.  No timing asserts
(speed and the 60-second result live in the chapter's measurements).
"""
import collections
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.data import TextCorpus
from dlcourse.rnn import torch_impl as R

TEXT = "".join(f"def f{i % 7}(x):\n    return x + {i % 5}\n\n" for i in range(400))


@pytest.fixture(scope="module")
def tiny():
    return TextCorpus.from_text(TEXT, chunk_size=200)


def small_model(kind="lstm", hidden=8, seed=0, vocab=97, **kw):
    torch.manual_seed(seed)
    return R.CharLM(vocab, kind, hidden=hidden, embed=5, **kw)


# --------------------------------------------------------------------------- the model

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_charlm_shapes_and_state_carry(kind, layers):
    model = small_model(kind, layers=layers).double()
    ids = torch.randint(0, 97, (3, 11))
    logits, state = model(ids)
    assert logits.shape == (3, 11, 97)
    states = state if kind == "lstm" else (state,)
    assert all(s.shape == (layers, 3, 8) for s in states)
    # reading the text in two windows, the state carried, equals reading it at once
    first, mid = model(ids[:, :4])
    second, end = model(ids[:, 4:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), logits)
    for a, b in zip(end if kind == "lstm" else (end,), states):
        torch.testing.assert_close(a, b)


def test_charlm_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be"):
        R.CharLM(10, "transformer")


# --------------------------------------------------------------------------- scoring

def test_evaluate_nats_equals_hand_computation():
    model = small_model("gru").double()
    ids = np.random.default_rng(0).integers(0, 97, 50)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids[:-1])[None])           # (1, 49, V): one pass, zero state
        log_p = torch.log_softmax(logits[0], -1)
        hand = -float(log_p[torch.arange(49), torch.as_tensor(ids[1:])].mean())
    assert R.evaluate_nats_per_char(model, ids, batch_size=1, seq_len=7) == pytest.approx(hand, rel=1e-12)
    # three streams of 16 (each from a zero state) and the remainder as a fourth stream
    total = 0.0
    with torch.no_grad():
        for begin, end in [(0, 16), (16, 32), (32, 48), (48, 49)]:
            lg, _ = model(torch.as_tensor(ids[begin:end])[None])
            total += float(F.cross_entropy(lg[0], torch.as_tensor(ids[begin + 1:end + 1]), reduction="sum"))
    assert R.evaluate_nats_per_char(model, ids, batch_size=3, seq_len=5) == pytest.approx(total / 49, rel=1e-12)
    assert model.training  # mode restored


def test_unigram_equals_a_hand_count(tiny):
    counts = collections.Counter(tiny.text("train"))
    n, v = len(tiny.train), tiny.vocab_size
    hand = -np.mean([math.log((counts[ch] + 1) / (n + v)) for ch in tiny.text("val")])
    assert R.unigram_nats_per_char(tiny) == pytest.approx(hand, rel=1e-12)


# --------------------------------------------------------------------------- training

@pytest.mark.parametrize("streams", [False, True])
def test_train_char_lm_lowers_the_loss_and_is_deterministic(tiny, streams):
    kw = dict(hidden=16, embed=8, steps=40, batch_size=4, seq_len=16, lr=1e-2, streams=streams, progress=False,
              device="cpu", eval_every=20)
    calls = []
    model, history = R.train_char_lm(tiny, seed=0, callback=lambda h: calls.append(len(h.val_loss)), **kw)
    assert history.updates == [0, 20, 40] and calls == [2, 3]
    assert history.val_loss[-1] < history.val_loss[0] - 1.0 and history.train_loss[-1] < history.train_loss[0]
    assert history.chars == [0, 20 * 4 * 16, 40 * 4 * 16] and history.chars_per_second > 0
    assert history.final_val_loss == pytest.approx(R.evaluate_nats_per_char(model, tiny.val))
    assert not model.training
    _, again = R.train_char_lm(tiny, seed=0, **kw)
    assert again.val_loss == history.val_loss and again.train_loss == history.train_loss
    _, other = R.train_char_lm(tiny, seed=1, **kw)
    assert other.val_loss != history.val_loss


def test_train_char_lm_time_budget_and_errors(tiny):
    model, history = R.train_char_lm(tiny, hidden=8, embed=4, seconds=0.3, batch_size=4, seq_len=8,
                                     progress=False, device="cpu")
    assert history.seconds >= 0.3 and history.updates[-1] > 0 and history.times[-1] == history.seconds
    with pytest.raises(ValueError, match="too few"):
        R.train_char_lm(tiny, steps=1, batch_size=1000, seq_len=100, progress=False)
    with pytest.raises(ValueError, match="seconds"):
        R.train_char_lm(tiny, seconds=None, progress=False)


# --------------------------------------------------------------------------- sampling

def test_sample_deterministic_and_greedy_at_low_temperature(tiny):
    model, _ = R.train_char_lm(tiny, hidden=16, embed=8, steps=30, batch_size=4, seq_len=16, lr=1e-2,
                               progress=False, device="cpu")
    a = R.sample(model, tiny, "def ", 40, temperature=1.0, seed=3)
    assert a == R.sample(model, tiny, "def ", 40, temperature=1.0, seed=3) and a.startswith("def ") and len(a) == 44
    assert a != R.sample(model, tiny, "def ", 40, temperature=1.0, seed=4)
    # greedy by hand: feed the argmax back in, one character at a time
    ids = list(tiny.encode("def "))
    with torch.no_grad():
        for _ in range(40):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    greedy = tiny.decode(ids)
    assert R.sample(model, tiny, "def ", 40, temperature=0) == greedy
    assert R.sample(model, tiny, "def ", 40, temperature=1e-4, seed=5) == greedy
    assert R.sample(model, tiny, "def ", 40, temperature=2.0, top_k=1, seed=5) == greedy
    with pytest.raises(ValueError, match="temperature"):
        R.sample(model, tiny, "d", 5, temperature=-1)


# --------------------------------------------------------------------------- memory task

def test_memory_task_batch_labels():
    x, y = R.memory_task_batch(200, lag=6, symbols=8, noise=4, rng=np.random.default_rng(0))
    assert x.shape == (200, 8) and y.shape == (200,)
    np.testing.assert_array_equal(x[:, 0], y)                         # the symbol to remember
    assert y.min() >= 0 and y.max() <= 7 and len(np.unique(y)) == 8
    assert x[:, 1:7].min() >= 8 and x[:, 1:7].max() <= 11            # noise, never a symbol
    assert (x[:, 7] == 12).all()                                      # the query
    x2, _ = R.memory_task_batch(200, lag=6, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)


def test_memory_task_study_runs_and_reports():
    study = R.memory_task_study(lags=(1, 3), kinds=("rnn", "lstm"), steps=60, hidden=16, n_test=200)
    assert study.lags == (1, 3) and set(study.accuracy) == {"rnn", "lstm"}
    assert all(a.shape == (2,) and ((0 <= a) & (a <= 1)).all() for a in study.accuracy.values())
    assert study.accuracy["lstm"][0] > 0.5 and study.chance == 1 / 8          # lag 1 is learned quickly
    assert "lag" in study.table() and study.fails_at("lstm", threshold=1.01) == 1
    again = R.memory_task_study(lags=(1, 3), kinds=("rnn", "lstm"), steps=60, hidden=16, n_test=200)
    for k in study.kinds:
        np.testing.assert_array_equal(study.accuracy[k], again.accuracy[k])


# --------------------------------------------------------------------------- gradients over time

def test_gradient_norms_rnn_equal_the_chain_rule_by_hand():
    T, H = 12, 6
    norms = R.gradient_norms_over_time("rnn", T, hidden=H, input_size=3, seed=0)
    torch.manual_seed(0)  # rebuild what the function built: the same layer, input and read-out
    rnn = R._rnn_layer("rnn", 3, H)
    x = torch.randn(1, T, 3)
    head = torch.nn.Linear(H, 10)
    with torch.no_grad():
        out, _ = rnn(x)                                               # (1, T, H)
        h = out[0]                                                    # (T, H)
        p = torch.softmax(head(h[-1]), -1)
        dh = head.weight.T @ (p - F.one_hot(torch.tensor(0), 10))     # d CE / d h_{T-1}
        hand = [float(dh.norm())]
        for t in range(T - 1, 0, -1):                                 # h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)
            dh = rnn.weight_hh_l0.T @ (dh * (1 - h[t] ** 2))
            hand.append(float(dh.norm()))
    np.testing.assert_allclose(norms, hand[::-1], rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradient_norms_shapes_and_charlm(kind, tiny):
    norms = R.gradient_norms_over_time(kind, 20, hidden=8, seed=1)
    assert norms.shape == (20,) and (norms > 0).all()
    model = small_model(kind)
    ids = tiny.encode(TEXT[:31])
    norms = R.gradient_norms_over_time(model=model, ids=ids)
    assert norms.shape == (30,) and (norms > 0).all()
    assert all(p.grad is None for p in model.parameters())            # nothing left behind


# --------------------------------------------------------------------------- scale-up

def test_scale_up_skips_without_gpu_and_runs_on_cpu_when_asked(tiny, capsys):
    assert R.scale_up(tiny, device="cpu") is None
    assert "skipped" in capsys.readouterr().out
    result = R.scale_up(tiny, hidden=16, embed=8, layers=2, seconds=0.3, batch_size=4, seq_len=16,
                        cpu_steps=1, device="cpu", run_on_cpu=True)
    assert result.device == "cpu" and result.cpu_chars_per_second > 0 and result.device_chars_per_second > 0
    assert np.isfinite(result.val_nats_per_char) and result.speedup > 0
