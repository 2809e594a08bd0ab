"""Chapter 07 · attention, multi-head attention, layer norm, positions and the block in NumPy == torch.

Property-style: many random small configurations (seeded), float64, torch as the referee:
attention against ``F.scaled_dot_product_attention`` (forward and every gradient, stage by
stage against a hand-written torch graph's retained gradients), multi-head attention against
``nn.MultiheadAttention`` (self and cross, with attention and key-padding masks), layer norm
against ``nn.LayerNorm``, GELU against ``nn.GELU("tanh")``, the pre-norm block against the
same composition of torch built-ins, the position encodings' properties, and the numerical
gradient check.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.transformer import numpy_impl as tr

RTOL, ATOL = 1e-10, 1e-12
WIDTHS = (4, 6, 8, 12)


def _t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def random_mask(rng, lead, Tq, Tk):
    """A random bool mask with at least one allowed key per query row, of a random broadcastable shape."""
    kind = rng.choice(["none", "causal", "padding", "random"])
    if kind == "none":
        return None, kind
    if kind == "causal":
        return tr.causal_mask(Tq, Tk) if Tk >= Tq else None, kind
    if kind == "padding":
        lengths = rng.integers(1, Tk + 1, size=lead[0])
        m = tr.padding_mask(lengths, Tk)                     # (N, 1, 1, Tk)
        return (m if len(lead) == 2 else m[:, 0]), kind       # (N, 1, Tk) without heads
    m = rng.random(lead + (Tq, Tk)) < 0.6
    m[..., rng.integers(Tk)] = True                          # every row keeps a key
    return m, kind


def draw_attention(seed):
    rng = np.random.default_rng(seed)
    N, Tq, Tk = (int(rng.integers(1, hi + 1)) for hi in (3, 7, 7))
    hs, hv = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    lead = (N,) if rng.random() < 0.5 else (N, int(rng.integers(1, 5)))
    q, k = rng.standard_normal(lead + (Tq, hs)), rng.standard_normal(lead + (Tk, hs))
    v, dout = rng.standard_normal(lead + (Tk, hv)), rng.standard_normal(lead + (Tq, hv))
    mask, kind = random_mask(rng, lead, Tq, Tk)
    scale = None if rng.random() < 0.6 else float(rng.uniform(0.1, 2.0))
    return q, k, v, dout, mask, scale, kind


# --------------------------------------------------------------------------- attention

@pytest.mark.parametrize("seed", range(60))
def test_attention_matches_sdpa(seed):
    q, k, v, dout, mask, scale, kind = draw_attention(seed)
    out, cache = tr.attention_forward(q, k, v, mask, scale)
    dq, dk, dv = tr.attention_backward(dout, cache)
    qt, kt, vt = _t(q, True), _t(k, True), _t(v, True)
    ref = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=None if mask is None else torch.from_numpy(mask),
                                         scale=scale)
    ref.backward(_t(dout))
    what = f"seed {seed}, mask {kind}, q {q.shape}, k {k.shape}, v {v.shape}, scale {scale}"
    close(out, ref, "out " + what)
    close(dq, qt.grad, "dq " + what)
    close(dk, kt.grad, "dk " + what)
    close(dv, vt.grad, "dv " + what)
    assert out.shape == q.shape[:-1] + v.shape[-1:]


@pytest.mark.parametrize("seed", range(20))
def test_attention_is_causal_matches_sdpa(seed):
    rng = np.random.default_rng(100 + seed)
    N, nh, T, hs = (int(rng.integers(1, hi + 1)) for hi in (3, 4, 7, 6))
    q, k, v, dout = (rng.standard_normal((N, nh, T, hs)) for _ in range(4))
    out, cache = tr.attention_forward(q, k, v, tr.causal_mask(T))
    grads = tr.attention_backward(dout, cache)
    ts = [_t(a, True) for a in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ts, is_causal=True)
    ref.backward(_t(dout))
    close(out, ref, "out")
    for name, g, t in zip("qkv", grads, ts):
        close(g, t.grad, "d" + name)


@pytest.mark.parametrize("seed", range(20))
def test_attention_backward_stage_by_stage(seed):
    """dweights (dP) and dscores (dS) equal the retained gradients of a hand-written torch graph."""
    q, k, v, dout, mask, scale, kind = draw_attention(1000 + seed)
    out, cache = tr.attention_forward(q, k, v, mask, scale)
    stages = tr.attention_backward_stages(dout, cache)
    qt, kt, vt = _t(q, True), _t(k, True), _t(v, True)
    s = qt @ kt.transpose(-1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        s = s.masked_fill(~torch.from_numpy(np.broadcast_to(mask, s.shape).copy()), float("-inf"))
    s.retain_grad()
    p = torch.softmax(s, dim=-1)
    p.retain_grad()
    (p @ vt).backward(_t(dout))
    close(cache.weights, p, "weights")
    close(stages["dweights"], p.grad, "dweights")
    close(stages["dscores"], s.grad, "dscores")
    for name, t in zip(("dq", "dk", "dv"), (qt, kt, vt)):
        close(stages[name], t.grad, name)
    for name, g in zip(("dq", "dk", "dv"), tr.attention_backward(dout, cache)):
        close(g, stages[name], name + " (fast) vs stages", rtol=1e-13, atol=1e-15)


def test_masked_positions_get_zero_weight_and_zero_gradient():
    rng = np.random.default_rng(7)
    N, nh, T, hs = 3, 2, 6, 4
    lengths = [2, 6, 4]
    q, k, v, dout = (rng.standard_normal((N, nh, T, hs)) for _ in range(4))
    mask = tr.padding_mask(lengths, T) & tr.causal_mask(T)          # (N, 1, T, T)
    assert mask.shape == (N, 1, T, T)
    out, cache = tr.attention_forward(q, k, v, mask)
    stages = tr.attention_backward_stages(dout, cache)
    blocked = ~np.broadcast_to(mask, cache.weights.shape)
    assert np.all(cache.weights[blocked] == 0.0)
    assert np.all(stages["dscores"][blocked] == 0.0)
    np.testing.assert_allclose(cache.weights.sum(-1), 1.0, rtol=1e-14)
    dq, dk, dv = tr.attention_backward(dout, cache)
    for n, L in enumerate(lengths):                                  # padded keys: exactly zero gradient
        assert np.all(dk[n, :, L:] == 0.0) and np.all(dv[n, :, L:] == 0.0)
    # a masked key's value cannot change the output
    v2 = v.copy()
    v2[0, :, 3:] += 100.0
    np.testing.assert_array_equal(tr.attention_forward(q, k, v2, mask)[0][0], out[0])


def test_fully_masked_row_is_a_value_error():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 4)) for _ in range(3))
    mask = np.ones((2, 3, 3), dtype=bool)
    mask[1, 2] = False
    with pytest.raises(ValueError, match=r"query row \(1, 2\)"):
        tr.attention_forward(q, k, v, mask)
    with pytest.raises(ValueError, match="every key masked"):
        tr.attention_scores(q, k, np.zeros((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        tr.attention_forward(q, k, v, np.ones((3, 3)))
    with pytest.raises(ValueError, match="broadcast"):
        tr.attention_forward(q, k, v, np.ones((4, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        tr.padding_mask([0, 3], 3)


def test_masks():
    np.testing.assert_array_equal(tr.causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(tr.causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])   # the last 2 of 4
    assert tr.causal_mask(4).dtype == bool
    np.testing.assert_array_equal(tr.padding_mask([1, 3], 3)[:, 0, 0], [[1, 0, 0], [1, 1, 1]])
    assert tr.padding_mask([1, 3], 3).shape == (2, 1, 1, 3)
    with pytest.raises(ValueError):
        tr.causal_mask(3, 2)


def test_softmax_stable_and_masked():
    x = np.array([[1000.0, 1001.0, -np.inf], [-1e4, 0.0, 1e4]])
    p = tr.softmax(x)
    assert np.all(np.isfinite(p)) and p[0, 2] == 0.0
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[0, :2], np.exp([0, 1]) / np.exp([0, 1]).sum())
    assert tr.softmax(np.zeros((2, 3), np.float32)).dtype == np.float32
    np.testing.assert_allclose(tr.softmax(x.T, axis=0), p.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 5, 4)).astype(dtype) for _ in range(3))
    out, cache = tr.attention_forward(q, k, v, tr.causal_mask(5))
    assert out.dtype == dtype and cache.weights.dtype == dtype
    assert all(g.dtype == dtype for g in tr.attention_backward(out, cache))
    x = rng.standard_normal((2, 5, 8)).astype(dtype)
    params = tr.init_block_params(8, dtype=dtype)
    y, bc = tr.block_forward(x, params, 2)
    dx, grads = tr.block_backward(y, bc)
    assert y.dtype == dtype and dx.dtype == dtype and all(g.dtype == dtype for g in grads.values())
    assert tr.layer_norm_forward(x, params["ln1.weight"], params["ln1.bias"])[0].dtype == dtype


def test_attention_weights_function():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 4, 3)) for _ in range(3))
    mask = tr.causal_mask(4)
    _, cache = tr.attention_forward(q, k, v, mask)
    np.testing.assert_array_equal(tr.attention_weights(q, k, mask), cache.weights)


def test_scaling_keeps_scores_at_unit_scale():
    """Unit-variance q, k: score std ~ sqrt(hs) without the scale, ~ 1 with 1/sqrt(hs) (any hs)."""
    rng = np.random.default_rng(0)
    for hs in (4, 16, 64, 256):
        q, k = rng.standard_normal((64, 32, hs)), rng.standard_normal((64, 32, hs))
        raw = tr.attention_scores(q, k, scale=1.0).std()
        scaled = tr.attention_scores(q, k).std()
        assert abs(raw / np.sqrt(hs) - 1) < 0.1, (hs, raw)
        assert abs(scaled - 1) < 0.1, (hs, scaled)
    # and why it matters: unscaled large-hs scores saturate the softmax (nearly one-hot weights)
    q, k = rng.standard_normal((8, 16, 256)), rng.standard_normal((8, 16, 256))
    assert tr.attention_weights(q, k, scale=1.0).max(-1).mean() > 0.9
    assert tr.attention_weights(q, k).max(-1).mean() < 0.5


# --------------------------------------------------------------------------- heads and multi-head attention

def test_split_merge_heads():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 12))
    h = tr.split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(h[1, 2, 3], x[1, 3, 8:12])     # head 2 = features [8, 12) of the same token
    np.testing.assert_array_equal(tr.merge_heads(h), x)
    ref = torch.from_numpy(x).view(2, 5, 3, 4).transpose(1, 2)    # nanoGPT's split
    np.testing.assert_array_equal(h, ref.numpy())
    with pytest.raises(ValueError, match="divisible"):
        tr.split_heads(x, 5)


def draw_mha(seed):
    rng = np.random.default_rng(seed)
    E = int(rng.choice(WIDTHS))
    nh = int(rng.choice([h for h in (1, 2, 3, 4) if E % h == 0]))
    N, Tq = int(rng.integers(1, 4)), int(rng.integers(1, 8))
    cross = bool(rng.random() < 0.3)
    Tk = int(rng.integers(1, 8)) if cross else Tq
    return rng, E, nh, N, Tq, Tk, cross


@pytest.mark.parametrize("seed", range(40))
def test_mha_matches_torch(seed):
    rng, E, nh, N, Tq, Tk, cross = draw_mha(seed)
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(E, nh, batch_first=True).double()
    with torch.no_grad():                                  # torch starts the biases at 0: make them count
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    params = tr.params_from_torch(mha)
    x, dout = rng.standard_normal((N, Tq, E)), rng.standard_normal((N, Tq, E))
    kv = rng.standard_normal((N, Tk, E)) if cross else None
    attn_mask = key_padding = None
    choice = rng.integers(4)
    if choice in (1, 3) and Tk >= Tq:
        attn_mask = tr.causal_mask(Tq, Tk)                                    # (Tq, Tk)
    if choice in (2, 3):
        key_padding = tr.padding_mask(rng.integers(Tk - Tq + 1 if attn_mask is not None else 1, Tk + 1, size=N),
                                      Tk)                                      # (N, 1, 1, Tk)
    mask = attn_mask if key_padding is None else (key_padding if attn_mask is None else key_padding & attn_mask)
    out, cache = tr.mha_forward(x, params, nh, mask, kv=kv)
    if cross:
        dx, dkv, grads = tr.mha_backward(dout, cache)
    else:
        dx, grads = tr.mha_backward(dout, cache)
    xt = _t(x, True)
    kvt = _t(kv, True) if cross else xt
    ref, ref_w = mha(xt, kvt, kvt,
                     attn_mask=None if attn_mask is None else ~torch.from_numpy(attn_mask),   # torch: True = blocked
                     key_padding_mask=None if key_padding is None else ~torch.from_numpy(key_padding[:, 0, 0]),
                     need_weights=True, average_attn_weights=False)
    ref.backward(_t(dout))
    what = f"seed {seed}: E {E}, nh {nh}, N {N}, Tq {Tq}, Tk {Tk}, cross {cross}, mask {choice}"
    close(out, ref, "out " + what)
    close(cache.attn.weights, ref_w, "per-head weights " + what)
    close(dx, xt.grad, "dx " + what)
    if cross:
        close(dkv, kvt.grad, "dkv " + what)
    named = dict(mha.named_parameters())
    assert set(grads) == set(params) == set(tr.MHA_KEYS)
    for key, g in grads.items():
        close(g, named[key].grad, f"d{key} " + what)


def test_params_from_torch_rejects_separate_kv_dims():
    with pytest.raises(ValueError, match="kdim"):
        tr.params_from_torch(torch.nn.MultiheadAttention(4, 2, kdim=3, vdim=3))


# --------------------------------------------------------------------------- layer norm, GELU, linear

@pytest.mark.parametrize("seed", range(15))
def test_layer_norm_matches_torch(seed):
    rng = np.random.default_rng(seed)
    E = int(rng.choice(WIDTHS))
    shape = tuple(int(n) for n in rng.integers(1, 5, size=int(rng.integers(1, 4)))) + (E,)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)
    dy = rng.standard_normal(shape)
    ln = torch.nn.LayerNorm(E).double()
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    gamma, beta = (p.detach().numpy().copy() for p in (ln.weight, ln.bias))
    y, cache = tr.layer_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = tr.layer_norm_backward(dy, cache)
    xt = _t(x, True)
    ref = ln(xt)
    ref.backward(_t(dy))
    close(y, ref, "y")
    close(dx, xt.grad, "dx", atol=1e-11)
    close(dgamma, ln.weight.grad, "dgamma")
    close(dbeta, ln.bias.grad, "dbeta")


def test_layer_norm_normalises_each_token_alone():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 8)) * 5 + 2
    y, _ = tr.layer_norm_forward(x, np.ones(8), np.zeros(8))
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-5)                  # biased variance, + eps
    y0, _ = tr.layer_norm_forward(x[:1, :2], np.ones(8), np.zeros(8))    # no mixing across batch or time
    np.testing.assert_allclose(y0, y[:1, :2], rtol=1e-14)


def test_gelu_matches_torch():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(200) * 3, [-20.0, -5.0, 0.0, 5.0, 20.0]])
    dy = rng.standard_normal(x.shape)
    xt = _t(x, True)
    ref = torch.nn.GELU(approximate="tanh")(xt)
    ref.backward(_t(dy))
    close(tr.gelu(x), ref, "gelu")
    close(tr.gelu_backward(dy, x), xt.grad, "gelu backward")


def test_linear_matches_torch():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 4))
    layer = torch.nn.Linear(5, 4).double()
    w, b = (p.detach().numpy().copy() for p in (layer.weight, layer.bias))
    xt = _t(x, True)
    ref = layer(xt)
    ref.backward(_t(dy))
    close(tr.linear_forward(x, w, b), ref, "y")
    dx, dw, db = tr.linear_backward(dy, x, w)
    close(dx, xt.grad, "dx")
    close(dw, layer.weight.grad, "dw")
    close(db, layer.bias.grad, "db")


# --------------------------------------------------------------------------- the block

def torch_block(x, p, nh, causal=True):
    """The same pre-norm block, written inline with torch built-ins (the referee)."""
    N, T, E = x.shape
    h = F.layer_norm(x, (E,), p["ln1.weight"], p["ln1.bias"], eps=1e-5)
    q, k, v = F.linear(h, p["attn.qkv.weight"], p["attn.qkv.bias"]).split(E, dim=-1)
    q, k, v = (t.view(N, T, nh, E // nh).transpose(1, 2) for t in (q, k, v))   # (N, nh, T, hs)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    a = a.transpose(1, 2).reshape(N, T, E)
    x = x + F.linear(a, p["attn.proj.weight"], p["attn.proj.bias"])
    h = F.layer_norm(x, (E,), p["ln2.weight"], p["ln2.bias"], eps=1e-5)
    h = F.gelu(F.linear(h, p["mlp.fc.weight"], p["mlp.fc.bias"]), approximate="tanh")
    return x + F.linear(h, p["mlp.proj.weight"], p["mlp.proj.bias"])


@pytest.mark.parametrize("seed", range(25))
def test_block_matches_torch(seed):
    rng = np.random.default_rng(seed)
    E = int(rng.choice(WIDTHS))
    nh = int(rng.choice([h for h in (1, 2, 3, 4) if E % h == 0]))
    N, T = int(rng.integers(1, 4)), int(rng.integers(1, 8))
    causal = bool(rng.random() < 0.75)
    params = tr.init_block_params(E, seed=seed)
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in params.items()}   # not-too-small weights
    x, dy = rng.standard_normal((N, T, E)), rng.standard_normal((N, T, E))
    y, cache = tr.block_forward(x, params, nh, causal=causal)
    dx, grads = tr.block_backward(dy, cache)
    pt = {k: _t(v, True) for k, v in params.items()}
    xt = _t(x, True)
    ref = torch_block(xt, pt, nh, causal)
    ref.backward(_t(dy))
    what = f"seed {seed}: E {E}, nh {nh}, N {N}, T {T}, causal {causal}"
    close(y, ref, "y " + what)
    close(dx, xt.grad, "dx " + what, atol=1e-11)
    assert tuple(grads) == tr.BLOCK_KEYS
    for key in tr.BLOCK_KEYS:
        close(grads[key], pt[key].grad, f"d{key} " + what, atol=1e-11)


def test_block_causal_output_ignores_the_future():
    rng = np.random.default_rng(0)
    params = tr.init_block_params(8)
    x = rng.standard_normal((2, 6, 8))
    y, _ = tr.block_forward(x, params, 2)
    x2 = x.copy()
    x2[:, 4:] = rng.standard_normal((2, 2, 8))
    y2, _ = tr.block_forward(x2, params, 2)
    np.testing.assert_allclose(y2[:, :4], y[:, :4], rtol=1e-13)
    assert not np.allclose(y2[:, 4:], y[:, 4:])


# --------------------------------------------------------------------------- positions

def test_sinusoidal_positions():
    T, E = 50, 12
    pe = tr.sinusoidal_positions(T, E)
    assert pe.shape == (T, E) and pe.dtype == np.float64
    t = np.arange(T)
    np.testing.assert_allclose(pe[:, 0], np.sin(t), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(pe[:, 1], np.cos(t), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(pe[:, 2], np.sin(t / 10000 ** (2 / E)), rtol=1e-14, atol=1e-15)
    assert np.all(np.abs(pe) <= 1.0)
    np.testing.assert_allclose(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, 1.0, rtol=1e-14)
    # relative positions: PE[t + k] is a rotation of PE[t] per frequency pair, the same for every t
    freq = 10000.0 ** (-np.arange(0, E, 2) / E)
    for k in (1, 3, 17):
        c, s = np.cos(k * freq), np.sin(k * freq)
        sin_t, cos_t = pe[:T - k, 0::2], pe[:T - k, 1::2]
        np.testing.assert_allclose(pe[k:, 0::2], sin_t * c + cos_t * s, atol=1e-12)
        np.testing.assert_allclose(pe[k:, 1::2], cos_t * c - sin_t * s, atol=1e-12)
    assert tr.sinusoidal_positions(3, 4, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="even"):
        tr.sinusoidal_positions(3, 5)


def test_rotary():
    rng = np.random.default_rng(0)
    N, nh, T, hs = 2, 3, 9, 8
    x = rng.standard_normal((N, nh, T, hs))
    y = tr.apply_rotary(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-13)
    np.testing.assert_array_equal(y[:, :, 0], x[:, :, 0])                  # position 0 is not rotated
    # q . k after rotation depends only on the position difference
    q, k = rng.standard_normal(hs), rng.standard_normal(hs)

    def score(tq, tk):
        qr = tr.apply_rotary(q[None], positions=[tq])[0]
        kr = tr.apply_rotary(k[None], positions=[tk])[0]
        return qr @ kr
    for d in (0, 1, 5):
        assert np.isclose(score(3 + d, 3), score(40 + d, 40), rtol=1e-10)
        assert np.isclose(score(2, 2 + d), score(11, 11 + d), rtol=1e-10)
    # backward == autograd of the same rotation written in torch
    dy = rng.standard_normal(x.shape)
    xt = _t(x, True)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    x0, x1 = xt[..., 0::2], xt[..., 1::2]
    ref = torch.stack([x0 * ang.cos() - x1 * ang.sin(), x0 * ang.sin() + x1 * ang.cos()], dim=-1).flatten(-2)
    ref.backward(_t(dy))
    close(y, ref, "rotary forward")
    close(tr.apply_rotary_backward(dy), xt.grad, "rotary backward")
    with pytest.raises(ValueError, match="even"):
        tr.apply_rotary(rng.standard_normal((2, 3)))


# --------------------------------------------------------------------------- numerical gradient checks

def test_gradcheck_attention():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 4, 3))
    mask = tr.causal_mask(3, 4)
    dout = rng.standard_normal((2, 3, 3))
    _, cache = tr.attention_forward(q, k, v, mask)
    dq, dk, dv = tr.attention_backward(dout, cache)
    assert rel_error(dq, numerical_grad(lambda a: tr.attention_forward(a, k, v, mask)[0], q, dout)) < 1e-7
    assert rel_error(dk, numerical_grad(lambda a: tr.attention_forward(q, a, v, mask)[0], k, dout)) < 1e-7
    assert rel_error(dv, numerical_grad(lambda a: tr.attention_forward(q, k, a, mask)[0], v, dout)) < 1e-7


def test_gradcheck_layer_norm():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    _, cache = tr.layer_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = tr.layer_norm_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda a: tr.layer_norm_forward(a, gamma, beta)[0], x, dy)) < 1e-6
    assert rel_error(dgamma, numerical_grad(lambda a: tr.layer_norm_forward(x, a, beta)[0], gamma, dy)) < 1e-7
    assert rel_error(dbeta, numerical_grad(lambda a: tr.layer_norm_forward(x, gamma, a)[0], beta, dy)) < 1e-7


def test_gradcheck_block():
    rng = np.random.default_rng(0)
    E, nh = 4, 2
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in tr.init_block_params(E).items()}
    x, dy = rng.standard_normal((2, 3, E)), rng.standard_normal((2, 3, E))
    _, cache = tr.block_forward(x, params, nh)
    dx, grads = tr.block_backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda a: tr.block_forward(a, params, nh)[0], x, dy)) < 1e-6
    for key in ("attn.qkv.weight", "ln1.weight", "mlp.fc.weight", "mlp.proj.bias"):
        def f(a, key=key):
            return tr.block_forward(x, {**params, key: a}, nh)[0]
        assert rel_error(grads[key], numerical_grad(f, params[key], dy)) < 1e-6, key
