"""Chapter 06 · RNN, LSTM and GRU in NumPy == nn.RNN / nn.LSTM / nn.GRU, forward and every gradient.

Property-style: many random small configurations (seeded), float64, torch autograd as the
referee for outputs, final states, dx, the initial-state gradients and all four parameter
gradients; the cells against nn.RNNCell / LSTMCell / GRUCell; truncated BPTT against torch
with the state detached between windows; the numerical gradient check; and the helpers
(clipping, sampling, embeddings, padding, hidden-gradient norms).
"""

import numpy as np
import pytest
import torch

from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.rnn import numpy_impl as rnn

RTOL, ATOL = 1e-10, 1e-12
DRAWS, BLOCKS = 50, 5          # DRAWS random configurations per kind, split in BLOCKS tests
KINDS = ("rnn", "lstm", "gru")
KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
FORWARD = {"rnn": rnn.rnn_forward, "lstm": rnn.lstm_forward, "gru": rnn.gru_forward}
BACKWARD = {"rnn": rnn.rnn_backward, "lstm": rnn.lstm_backward, "gru": rnn.gru_backward}


def _t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


def torch_module(kind, D, H, batch_first=False, seed=0):
    torch.manual_seed(seed)
    cls = {"rnn": lambda: torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=batch_first),
           "lstm": lambda: torch.nn.LSTM(D, H, batch_first=batch_first),
           "gru": lambda: torch.nn.GRU(D, H, batch_first=batch_first)}[kind]
    return cls().double()


def torch_cell(kind, D, H, seed=0):
    torch.manual_seed(seed)
    return {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](D, H).double()


def draw_config(rng):
    T, N, D, H = (int(rng.integers(1, hi + 1)) for hi in (6, 3, 4, 5))
    return dict(T=T, N=N, D=D, H=H, batch_first=bool(rng.random() < 0.5),
                give_h0=bool(rng.random() < 0.5), give_c0=bool(rng.random() < 0.5),
                dstate=bool(rng.random() < 0.7))


def close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def run_numpy(kind, params, x, h0, c0, dout, dh_T, dc_T, batch_first, truncate=None):
    """Forward + backward of our sequence function; states as (h, c) pairs for every kind (c None)."""
    if kind == "lstm":
        state = None if h0 is None and c0 is None else (h0, c0)
        out, (h_T, c_T), cache = rnn.lstm_forward(x, params, state, batch_first=batch_first)
        dstate = None if dh_T is None and dc_T is None else (dh_T, dc_T)
        dx, (dh0, dc0), grads = rnn.lstm_backward(dout, cache, dstate, truncate=truncate)
        return out, h_T, c_T, dx, dh0, dc0, grads
    out, h_T, cache = FORWARD[kind](x, params, h0, batch_first=batch_first)
    dx, dh0, grads = BACKWARD[kind](dout, cache, dh_T, truncate=truncate)
    return out, h_T, None, dx, dh0, None, grads


def run_torch(kind, module, x, h0, c0, dout, dh_T, dc_T, truncate=None):
    """torch's forward + autograd; zero initial states are explicit tensors so they get a gradient.

    ``truncate=k`` runs the module window by window (time-major only) and detaches the state
    between windows: truncated BPTT as PyTorch users write it.
    """
    H = module.hidden_size
    N = x.shape[0] if module.batch_first else x.shape[1]
    xt = _t(x, True)
    h0t = _t(np.zeros((1, N, H)) if h0 is None else h0[None], True)
    c0t = _t(np.zeros((1, N, H)) if c0 is None else c0[None], True)
    state = (h0t, c0t) if kind == "lstm" else h0t
    if truncate is None:
        out, state_T = module(xt, state)
    else:
        assert not module.batch_first
        outs, T = [], x.shape[0]
        for start in range(0, T, truncate):
            out_w, state = module(xt[start:start + truncate], state)
            outs.append(out_w)
            if start + truncate < T:  # detach between windows (not after the last: dh_T enters it)
                state = tuple(s.detach() for s in state) if kind == "lstm" else state.detach()
        out, state_T = torch.cat(outs), state
    h_T, c_T = state_T if kind == "lstm" else (state_T, None)
    loss = (out * _t(dout)).sum()
    if dh_T is not None:
        loss = loss + (h_T[0] * _t(dh_T)).sum()
    if dc_T is not None:
        loss = loss + (c_T[0] * _t(dc_T)).sum()
    loss.backward()
    grads = {k: v.grad.numpy() for k, v in module.named_parameters()}
    return (out.detach().numpy(), h_T[0].detach().numpy(), None if c_T is None else c_T[0].detach().numpy(),
            xt.grad.numpy(), h0t.grad[0].numpy(), c0t.grad[0].numpy() if kind == "lstm" else None, grads)


def compare(kind, ours, theirs, label):
    names = ("out", "h_T", "c_T", "dx", "dh0", "dc0")
    for name, a, b in zip(names, ours[:6], theirs[:6]):
        if b is None:
            assert a is None, f"{label}: {name}"
            continue
        assert a.shape == b.shape, f"{label}: {name} shape {a.shape} vs {b.shape}"
        close(a, b, f"{label}: {name}")
    assert set(ours[6]) == set(KEYS)
    for key in KEYS:
        close(ours[6][key], theirs[6][key], f"{label}: d{key}")


# --------------------------------------------------------------------------- sequences == torch

@pytest.mark.parametrize("block", range(BLOCKS))
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_matches_torch(kind, block):
    per_block = DRAWS // BLOCKS
    for draw in range(block * per_block, (block + 1) * per_block):
        rng = np.random.default_rng([KINDS.index(kind), draw])
        cfg = draw_config(rng)
        T, N, D, H, bf = cfg["T"], cfg["N"], cfg["D"], cfg["H"], cfg["batch_first"]
        module = torch_module(kind, D, H, bf, seed=draw)
        params = rnn.params_from_torch(module)
        x = rng.standard_normal((N, T, D) if bf else (T, N, D))
        h0 = rng.standard_normal((N, H)) if cfg["give_h0"] else None
        c0 = rng.standard_normal((N, H)) if kind == "lstm" and cfg["give_c0"] else None
        dout = rng.standard_normal((N, T, H) if bf else (T, N, H))
        dh_T = rng.standard_normal((N, H)) if cfg["dstate"] else None
        dc_T = rng.standard_normal((N, H)) if kind == "lstm" and cfg["dstate"] else None
        ours = run_numpy(kind, params, x, h0, c0, dout, dh_T, dc_T, bf)
        theirs = run_torch(kind, module, x, h0, c0, dout, dh_T, dc_T)
        compare(kind, ours, theirs, f"{kind} draw {draw} {cfg}")


@pytest.mark.parametrize("kind", KINDS)
def test_no_upstream_on_outputs_only_final_state(kind):
    """dout=None: the loss sees only the final state."""
    rng = np.random.default_rng(7)
    T, N, D, H = 4, 2, 3, 3
    module = torch_module(kind, D, H)
    params = rnn.params_from_torch(module)
    x, dh_T = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    ours = run_numpy(kind, params, x, None, None, None, dh_T, None, False)
    theirs = run_torch(kind, module, x, None, None, np.zeros((T, N, H)), dh_T, None)
    compare(kind, ours, theirs, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_equals_loop_of_cells(kind):
    """The fast sequence functions compute exactly the readable cells, step by step, gradients included."""
    rng = np.random.default_rng(3)
    T, N, D, H = 5, 3, 4, 5
    params = rnn.init_params(kind, D, H, seed=1)
    x, dout = rng.standard_normal((T, N, D)), rng.standard_normal((T, N, H))
    h = rng.standard_normal((N, H))
    c = rng.standard_normal((N, H))
    ours = run_numpy(kind, params, x, h, c if kind == "lstm" else None, dout, None, None, False)
    caches, outs = [], []
    for t in range(T):
        if kind == "lstm":
            h, c, cache = rnn.lstm_cell_forward(x[t], h, c, params)
        else:
            h, cache = {"rnn": rnn.rnn_cell_forward, "gru": rnn.gru_cell_forward}[kind](x[t], h, params)
        caches.append(cache)
        outs.append(h)
    close(ours[0], np.stack(outs), "out")
    dh_next, dc_next = np.zeros((N, H)), np.zeros((N, H))
    total = {k: np.zeros_like(v) for k, v in params.items()}
    dxs = [None] * T
    for t in reversed(range(T)):
        dh = dout[t] + dh_next                   # the loss's own gradient + the next step's
        if kind == "lstm":
            dxs[t], dh_next, dc_next, grads = rnn.lstm_cell_backward(dh, dc_next, caches[t])
        else:
            dxs[t], dh_next, grads = {"rnn": rnn.rnn_cell_backward, "gru": rnn.gru_cell_backward}[kind](dh, caches[t])
        for k in total:
            total[k] += grads[k]                 # shared weights: gradients add up over steps
    close(ours[3], np.stack(dxs), "dx")
    close(ours[4], dh_next, "dh0")
    for k in KEYS:
        close(ours[6][k], total[k], k)


# --------------------------------------------------------------------------- cells == torch cells

@pytest.mark.parametrize("kind", KINDS)
def test_cell_matches_torch_cell(kind):
    for draw in range(10):
        rng = np.random.default_rng([10 + KINDS.index(kind), draw])
        N, D, H = (int(rng.integers(1, hi + 1)) for hi in (3, 4, 5))
        cell = torch_cell(kind, D, H, seed=draw)
        params = rnn.params_from_torch(cell)
        x, h_prev, c_prev = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
        dh, dc = rng.standard_normal((N, H)), rng.standard_normal((N, H))
        xt, ht, ct = _t(x, True), _t(h_prev, True), _t(c_prev, True)
        if kind == "lstm":
            h, c, cache = rnn.lstm_cell_forward(x, h_prev, c_prev, params)
            dx, dh_prev, dc_prev, grads = rnn.lstm_cell_backward(dh, dc, cache)
            h_t, c_t = cell(xt, (ht, ct))
            ((h_t * _t(dh)).sum() + (c_t * _t(dc)).sum()).backward()
            close(c, c_t.detach().numpy(), "c")
            close(dc_prev, ct.grad.numpy(), "dc_prev")
        else:
            forward, backward = {"rnn": (rnn.rnn_cell_forward, rnn.rnn_cell_backward),
                                 "gru": (rnn.gru_cell_forward, rnn.gru_cell_backward)}[kind]
            h, cache = forward(x, h_prev, params)
            dx, dh_prev, grads = backward(dh, cache)
            h_t = cell(xt, ht)
            (h_t * _t(dh)).sum().backward()
        close(h, h_t.detach().numpy(), "h")
        close(dx, xt.grad.numpy(), "dx")
        close(dh_prev, ht.grad.numpy(), "dh_prev")
        for key in KEYS:
            close(grads[key], getattr(cell, key[:-3]).grad.numpy(), key)


# --------------------------------------------------------------------------- numerical gradient check

@pytest.mark.parametrize("kind", KINDS)
def test_numerical_gradients(kind):
    rng = np.random.default_rng(5)
    T, N, D, H = 4, 2, 3, 3
    params = rnn.init_params(kind, D, H, seed=2)
    x, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    dout, dh_T = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    state = (h0, c0) if kind == "lstm" else h0

    def loss_of(x=x, state=state, params=params):
        out, final, _ = FORWARD[kind](x, params, state)
        h_T = final[0] if kind == "lstm" else final
        return np.sum(out * dout) + np.sum(h_T * dh_T)

    _, _, cache = FORWARD[kind](x, params, state)
    dstate = (dh_T, None) if kind == "lstm" else dh_T
    dx, dstate0, grads = BACKWARD[kind](dout, cache, dstate)
    dh0 = dstate0[0] if kind == "lstm" else dstate0
    assert rel_error(dx, numerical_grad(lambda v: loss_of(x=v), x)) < 1e-7
    h0_state = (lambda v: (v, c0)) if kind == "lstm" else (lambda v: v)
    assert rel_error(dh0, numerical_grad(lambda v: loss_of(state=h0_state(v)), h0)) < 1e-7
    if kind == "lstm":
        assert rel_error(dstate0[1], numerical_grad(lambda v: loss_of(state=(h0, v)), c0)) < 1e-7
    for key in KEYS:
        num = numerical_grad(lambda v: loss_of(params={**params, key: v}), params[key])
        assert rel_error(grads[key], num) < 1e-7, key


# --------------------------------------------------------------------------- truncated BPTT

@pytest.mark.parametrize("kind", KINDS)
def test_truncated_bptt_equals_torch_with_detach(kind):
    for draw in range(12):
        rng = np.random.default_rng([20 + KINDS.index(kind), draw])
        T, N, D, H = int(rng.integers(1, 8)), int(rng.integers(1, 3)), 3, 4
        k = int(rng.integers(1, 5))
        module = torch_module(kind, D, H, seed=draw)
        params = rnn.params_from_torch(module)
        x, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
        dout, dh_T, dc_T = (rng.standard_normal(s) for s in ((T, N, H), (N, H), (N, H)))
        c0, dc_T = (c0, dc_T) if kind == "lstm" else (None, None)
        ours = run_numpy(kind, params, x, h0, c0, dout, dh_T, dc_T, False, truncate=k)
        theirs = run_torch(kind, module, x, h0, c0, dout, dh_T, dc_T, truncate=k)
        compare(kind, ours, theirs, f"{kind} draw {draw}: T={T} truncate={k}")


def test_truncation_changes_the_gradient_and_full_window_does_not():
    rng = np.random.default_rng(0)
    T, N, D, H = 6, 2, 3, 4
    params = rnn.init_params("rnn", D, H)
    x, dout = rng.standard_normal((T, N, D)), rng.standard_normal((T, N, H))
    _, _, cache = rnn.rnn_forward(x, params)
    full = rnn.rnn_backward(dout, cache)
    same = rnn.rnn_backward(dout, cache, truncate=T)
    cut = rnn.rnn_backward(dout, cache, truncate=2)
    close(same[0], full[0], "truncate=T is full BPTT")
    assert not np.allclose(cut[2]["weight_hh_l0"], full[2]["weight_hh_l0"])
    close(cut[0][4:], full[0][4:], "the last window is exact")
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            rnn.rnn_backward(dout, cache, truncate=bad)


# --------------------------------------------------------------------------- dtypes, parameters, errors

@pytest.mark.parametrize("kind", KINDS)
def test_float32_stays_float32(kind):
    rng = np.random.default_rng(1)
    T, N, D, H = 5, 3, 4, 6
    p64 = rnn.init_params(kind, D, H)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x, dout = rng.standard_normal((T, N, D)), rng.standard_normal((T, N, H))
    r32 = run_numpy(kind, p32, x.astype(np.float32), None, None, dout.astype(np.float32), None, None, False)
    r64 = run_numpy(kind, p64, x, None, None, dout, None, None, False)
    for a, b in zip(r32[:6], r64[:6]):
        if a is not None:
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for key in KEYS:
        assert r32[6][key].dtype == np.float32
        np.testing.assert_allclose(r32[6][key], r64[6][key], rtol=1e-4, atol=1e-5)


def test_init_params_shapes_bounds_and_seed():
    for kind, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        p = rnn.init_params(kind, 3, 5, seed=4)
        assert p["weight_ih_l0"].shape == (5 * G, 3) and p["weight_hh_l0"].shape == (5 * G, 5)
        assert p["bias_ih_l0"].shape == p["bias_hh_l0"].shape == (5 * G,)
        assert all(np.abs(v).max() <= 1 / np.sqrt(5) for v in p.values())
        assert all(np.array_equal(p[k], rnn.init_params(kind, 3, 5, seed=4)[k]) for k in KEYS)
        assert set(p) == set(rnn.params_from_torch(torch_module(kind, 3, 5)))
    with pytest.raises(ValueError, match="kind"):
        rnn.init_params("transformer", 3, 5)


def test_params_from_torch_cells_and_no_bias():
    cell = torch.nn.LSTMCell(3, 2)
    p = rnn.params_from_torch(cell)
    assert p["weight_ih_l0"].dtype == np.float64
    np.testing.assert_array_equal(p["weight_hh_l0"], cell.weight_hh.detach().double().numpy())
    p = rnn.params_from_torch(torch.nn.GRU(3, 2, bias=False))
    assert np.all(p["bias_ih_l0"] == 0) and p["bias_hh_l0"].shape == (6,)
    with pytest.raises(ValueError):
        rnn.params_from_torch(torch.nn.Linear(3, 2))


def test_shape_errors():
    params = rnn.init_params("rnn", 3, 4)
    with pytest.raises(ValueError, match="x must be"):
        rnn.rnn_forward(np.zeros((2, 3)), params)
    with pytest.raises(ValueError, match="h0"):
        rnn.rnn_forward(np.zeros((2, 1, 3)), params, h0=np.zeros((2, 4)))
    _, _, cache = rnn.rnn_forward(np.zeros((2, 1, 3)), params)
    with pytest.raises(ValueError, match="dout"):
        rnn.rnn_backward(np.zeros((2, 2, 4)), cache)


# --------------------------------------------------------------------------- gradient clipping

@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(int(max_norm * 1000) % 97)
    grads = {k: rng.standard_normal(s) for k, s in
             (("weight_ih_l0", (8, 3)), ("weight_hh_l0", (8, 2)), ("bias_ih_l0", (8,)), ("bias_hh_l0", (8,)))}
    before = {k: v.copy() for k, v in grads.items()}
    tensors = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True) for v in grads.values()]
    for t, v in zip(tensors, grads.values()):
        t.grad = _t(v)
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    clipped, total = rnn.clip_grad_norm(grads, max_norm, norm_type)
    assert isinstance(clipped, dict) and list(clipped) == list(grads)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, expected_norm.item(), rtol=1e-12)
    for t, key in zip(tensors, grads):
        close(clipped[key], t.grad.numpy(), key)
        np.testing.assert_array_equal(grads[key], before[key])   # pure: the input is untouched
    as_list, total_list = rnn.clip_grad_norm(list(grads.values()), max_norm, norm_type)
    assert isinstance(as_list, list) and total_list == total
    for a, key in zip(as_list, grads):
        close(a, clipped[key], key)


def test_clip_grad_norm_is_global_not_per_tensor():
    grads = [np.array([3.0, 4.0]), np.array([0.0, 0.0, 12.0])]     # norms 5 and 12, global 13
    clipped, total = rnn.clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(13.0)
    np.testing.assert_allclose(clipped[0], grads[0] / (13 + 1e-6))
    np.testing.assert_allclose(np.sqrt(sum((c ** 2).sum() for c in clipped)), 1.0, rtol=1e-6)
    zeros, total0 = rnn.clip_grad_norm([np.zeros(3)], 1.0)
    assert total0 == 0.0 and np.all(zeros[0] == 0)


# --------------------------------------------------------------------------- softmax and sampling

def test_softmax_matches_torch_and_is_stable():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 7)) * 3
    for temperature in (0.3, 1.0, 2.5):
        expected = torch.softmax(_t(logits) / temperature, dim=-1).numpy()
        close(rnn.softmax(logits, temperature), expected, f"T={temperature}")
    close(rnn.softmax(logits.T, axis=0), torch.softmax(_t(logits.T), dim=0).numpy(), "axis 0")
    big = np.array([1000.0, 1000.0, -1000.0])
    np.testing.assert_allclose(rnn.softmax(big), [0.5, 0.5, 0.0])
    with pytest.raises(ValueError):
        rnn.softmax(logits, temperature=0)


def test_sample_greedy_limits():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 9))
    best = logits.argmax(axis=1)
    np.testing.assert_array_equal(rnn.sample_next(logits, rng, temperature=0), best)
    np.testing.assert_array_equal(rnn.sample_next(logits, rng, temperature=1e-6), best)
    for _ in range(50):
        np.testing.assert_array_equal(rnn.sample_next(logits, rng, temperature=5.0, top_k=1), best)
    one = rnn.sample_next(logits[0], rng, temperature=0)
    assert isinstance(one, int) and one == best[0]
    assert rnn.sample_next(logits, rng).shape == (6,)


def _chi_square(counts, probs):
    expected = counts.sum() * probs
    keep = expected > 0
    return float(np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep]))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_frequencies_match_softmax(temperature):
    rng = np.random.default_rng(42)
    logits = np.array([1.0, 0.2, -0.5, 2.0, 0.0])
    draws = rnn.sample_next(np.tile(logits, (20000, 1)), rng, temperature)
    counts = np.bincount(draws, minlength=5)
    # chi-square with 4 degrees of freedom: above 23.5 has probability 1e-4 under the right distribution
    assert _chi_square(counts, rnn.softmax(logits, temperature)) < 23.5
    single = [rnn.sample_next(logits, rng, temperature) for _ in range(3000)]
    assert _chi_square(np.bincount(single, minlength=5), rnn.softmax(logits, temperature)) < 23.5


def test_sample_top_k_never_leaves_the_top_k():
    rng = np.random.default_rng(1)
    logits = np.array([0.5, 3.0, -1.0, 2.5, 2.9, 0.0, 1.0])
    top3 = {1, 3, 4}
    draws = rnn.sample_next(np.tile(logits, (20000, 1)), rng, temperature=3.0, top_k=3)
    assert set(np.unique(draws)) == top3
    probs = np.zeros(7)
    probs[[1, 3, 4]] = rnn.softmax(logits[[1, 3, 4]], 3.0)       # renormalised over the top k
    assert _chi_square(np.bincount(draws, minlength=7), probs) < 18.4   # 2 dof, p = 1e-4
    np.testing.assert_array_equal(rnn.sample_next(logits[None], rng, top_k=100).shape, (1,))


def test_sample_is_reproducible_with_the_same_seed():
    logits = np.random.default_rng(0).standard_normal((10, 5))
    a = rnn.sample_next(logits, np.random.default_rng(3), 1.0, top_k=3)
    b = rnn.sample_next(logits, np.random.default_rng(3), 1.0, top_k=3)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- embeddings and padding

def test_embedding_matches_torch_with_repeated_ids():
    rng = np.random.default_rng(0)
    V, E = 7, 3
    emb = torch.nn.Embedding(V, E).double()
    weight = emb.weight.detach().numpy().copy()
    ids = np.array([[1, 3, 1, 1], [6, 3, 0, 1]])                 # repeated ids: their gradients add up
    dout = rng.standard_normal((2, 4, E))
    out = rnn.embedding_forward(ids, weight)
    out_t = emb(torch.from_numpy(ids))
    out_t.backward(_t(dout))
    close(out, out_t.detach().numpy(), "out")
    close(rnn.embedding_backward(dout, ids, V), emb.weight.grad.numpy(), "dweight")
    assert rnn.embedding_backward(dout, ids, V)[[2, 4, 5]].sum() == 0     # ids never looked up
    with pytest.raises(IndexError):
        rnn.embedding_forward(np.array([7]), weight)
    with pytest.raises(TypeError):
        rnn.embedding_forward(np.array([1.0]), weight)


def test_pad_sequences():
    seqs = [np.array([1, 2, 3]), np.array([4]), np.array([], dtype=int), np.array([5, 6])]
    padded, lengths, mask = rnn.pad_sequences(seqs, pad_value=-1)
    np.testing.assert_array_equal(padded, [[1, 2, 3], [4, -1, -1], [-1, -1, -1], [5, 6, -1]])
    np.testing.assert_array_equal(lengths, [3, 1, 0, 2])
    np.testing.assert_array_equal(mask, padded != -1)
    assert padded.dtype.kind == "i" and mask.dtype == bool
    tm, _, tm_mask = rnn.pad_sequences(seqs, pad_value=-1, batch_first=False)
    np.testing.assert_array_equal(tm, padded.T)
    np.testing.assert_array_equal(tm_mask, mask.T)
    feats = [np.ones((2, 3)), np.ones((4, 3))]
    p, lengths, mask = rnn.pad_sequences(feats)
    assert p.shape == (2, 4, 3) and mask.shape == (2, 4) and p[0, 2:].sum() == 0
    p_t = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(f) for f in feats], batch_first=True)
    np.testing.assert_array_equal(p, p_t.numpy())
    with pytest.raises(ValueError):
        rnn.pad_sequences([np.ones((2, 3)), np.ones((2, 4))])


# --------------------------------------------------------------------------- hidden-gradient norms

def torch_hidden_gradient_norms(kind, params, x, dh_last):
    """|| d loss / d h_t || from torch autograd: a cell loop with retain_grad on every h_t."""
    T, N, D = x.shape
    H = params["weight_hh_l0"].shape[1]
    cell = torch_cell(kind, D, H)
    with torch.no_grad():
        for key in KEYS:
            getattr(cell, key[:-3]).copy_(torch.from_numpy(params[key]))
    h, c, hs = torch.zeros(N, H, dtype=torch.float64), torch.zeros(N, H, dtype=torch.float64), []
    for t in range(T):
        if kind == "lstm":
            h, c = cell(_t(x[t]), (h, c))
        else:
            h = cell(_t(x[t]), h)
        h.retain_grad()
        hs.append(h)
    (hs[-1] * _t(dh_last)).sum().backward()
    return np.array([h.grad.norm().item() for h in hs])


@pytest.mark.parametrize("kind", KINDS)
def test_hidden_gradient_norms_match_torch(kind):
    rng = np.random.default_rng(9)
    T, N, D, H = 8, 2, 3, 5
    params = rnn.init_params(kind, D, H, seed=3)
    x, dh_last = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    norms = rnn.hidden_gradient_norms(kind, params, x, dh_last=dh_last)
    assert norms.shape == (T,)
    np.testing.assert_allclose(norms, torch_hidden_gradient_norms(kind, params, x, dh_last), rtol=1e-10)
    np.testing.assert_allclose(norms[-1], np.linalg.norm(dh_last))
    bf = rnn.hidden_gradient_norms(kind, params, x.swapaxes(0, 1), dh_last=dh_last, batch_first=True)
    np.testing.assert_allclose(bf, norms, rtol=1e-12)


def test_vanilla_rnn_gradients_vanish_geometrically():
    rng = np.random.default_rng(0)
    T, N, D, H = 30, 4, 3, 8
    params = {k: v * 0.3 for k, v in rnn.init_params("rnn", D, H, seed=0).items()}   # small weights
    norms = rnn.hidden_gradient_norms("rnn", params, rng.standard_normal((T, N, D)))
    ratios = norms[:-1] / norms[1:]                      # each step back multiplies by about the same factor
    assert np.all(ratios < 0.5)
    assert norms[0] < 1e-8 * norms[-1]
    lstm = rnn.init_params("lstm", D, H, seed=0)
    lstm["bias_ih_l0"][H:2 * H] = 3.0                    # forget gate open: the cell path keeps the gradient
    lstm_norms = rnn.hidden_gradient_norms("lstm", lstm, rng.standard_normal((T, N, D)))
    assert lstm_norms[0] > 1e3 * norms[0]
