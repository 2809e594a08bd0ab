"""Chapter 07's graded exercises (dlcourse/transformer/checks.py): the exercise forms equal PyTorch, the
checks' diagnoses that are not mistake-table rows, and valid alternative answers pass
(tests/test_course.py proves every row)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checktools import solution
from dlcourse.transformer import checks
from dlcourse.transformer import numpy_impl as ref
from dlcourse.transformer import torch_impl as tt
from dlcourse.transformer.checks import check as ch07

STEM = "07_transformer"


def _t(a, grad=False):
    return torch.from_numpy(np.array(a, dtype=np.float64)).requires_grad_(grad)


# --------------------------------------------------------------------------- the exercise forms equal PyTorch

@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_attention_forms_equal_sdpa_and_its_autograd(answer):
    fwd = ref.attention if answer == "reference" else solution(STEM, "attention_forward")
    bwd = ref.attention_grads if answer == "reference" else solution(STEM, "attention_backward")
    rng = np.random.default_rng(0)
    for trial in range(12):
        N, Tq, hs, hv = (int(v) for v in rng.integers(1, 5, 4))
        Tk = Tq + int(rng.integers(0, 3))
        q, k, v = rng.standard_normal((N, Tq, hs)), rng.standard_normal((N, Tk, hs)), rng.standard_normal((N, Tk, hv))
        mask = ref.causal_mask(Tq, Tk) if trial % 2 else None
        qt, kt, vt = _t(q, True), _t(k, True), _t(v, True)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=None if mask is None else torch.from_numpy(mask))
        np.testing.assert_allclose(fwd(q, k, v, mask), out.detach().numpy(), rtol=1e-10, atol=1e-12)
        dout = rng.standard_normal(out.shape)
        out.backward(_t(dout))
        for ours, theirs in zip(bwd(dout, q, k, v, mask), (qt, kt, vt)):
            np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_layer_norm_forms_equal_torch(answer):
    fwd = ref.layer_norm if answer == "reference" else solution(STEM, "layer_norm_forward")
    bwd = ref.layer_norm_grads if answer == "reference" else solution(STEM, "layer_norm_backward")
    rng = np.random.default_rng(1)
    for shape in [(3, 4), (2, 3, 5), (1, 2, 2, 6)]:
        x, g, b = rng.standard_normal(shape), rng.standard_normal(shape[-1]), rng.standard_normal(shape[-1])
        xt, gt, bt = _t(x, True), _t(g, True), _t(b, True)
        y = F.layer_norm(xt, (shape[-1],), gt, bt, eps=1e-5)
        np.testing.assert_allclose(fwd(x, g, b), y.detach().numpy(), rtol=1e-10, atol=1e-12)
        dy = rng.standard_normal(shape)
        y.backward(_t(dy))
        for ours, theirs in zip(bwd(dy, x, g), (xt, gt, bt)):
            np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_heads_and_positions_forms_equal_the_torch_twins(answer):
    split = ref.split_heads if answer == "reference" else solution(STEM, "split_heads")
    merge = ref.merge_heads if answer == "reference" else solution(STEM, "merge_heads")
    positions = ref.sinusoidal_positions if answer == "reference" else solution(STEM, "sinusoidal_positions")
    x = np.random.default_rng(2).standard_normal((2, 5, 12))
    for nh in (1, 2, 3, 4, 6):
        heads = split(x, nh)
        np.testing.assert_array_equal(heads, tt.split_heads(torch.from_numpy(x), nh).numpy())
        np.testing.assert_array_equal(merge(heads), x)
    for T, E in [(1, 2), (7, 10), (64, 32)]:
        np.testing.assert_allclose(positions(T, E), tt.sinusoidal_positions(T, E, dtype=torch.float64).numpy(),
                                   rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- diagnoses that are not table rows

def test_attention_backward_names_the_first_wrong_stage():
    def attention_backward(dout, q, k, v, mask=None):
        scale = 1 / np.sqrt(q.shape[-1])
        s = q @ np.swapaxes(k, -1, -2) * scale
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        P = e / e.sum(-1, keepdims=True)
        dv = np.swapaxes(P, -1, -2) @ dout
        dweights = dout @ np.swapaxes(v, -1, -2)
        dscores = P * (np.sum(dweights * P, axis=-1, keepdims=True) - dweights)   # the sign flipped
        return dscores @ k * scale, np.swapaxes(dscores, -1, -2) @ q * scale, dv

    result = ch07.run("attention_backward", attention_backward)
    assert not result.passed
    assert result.message.startswith("P, dv, dweights are right; dscores is wrong: the softmax backward needs "
                                     "the row sum"), result.message
    assert result.mistake == "stage dscores"


def test_layer_norm_backward_names_the_wrong_stage():
    def layer_norm_backward(dy, x, gamma, eps=1e-5):
        mu = x.mean(-1, keepdims=True)
        rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
        xhat = (x - mu) * rstd
        lead = tuple(range(x.ndim - 1))
        dxhat = dy * gamma
        dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) + xhat * (dxhat * xhat).mean(-1, keepdims=True))
        return dx, (dy * xhat).sum(lead), dy.sum(lead)

    result = ch07.run("layer_norm_backward", layer_norm_backward)
    assert result.message.startswith("xhat, dxhat are right; dx is wrong: dx must also flow"), result.message


def test_attention_shape_error_is_translated():
    def attention_forward(q, k, v, mask=None):
        s = np.matmul(q, k) / np.sqrt(q.shape[-1])          # k not transposed, written with np.matmul
        return checks._softmax(s) @ v

    result = ch07.run("attention_forward", attention_forward)
    assert result.mistake == "k not transposed", result.message


def test_layer_norm_broadcast_error_is_translated_to_keepdims():
    def layer_norm_forward(x, gamma, beta, eps=1e-5):
        xc = x - x.mean(axis=-1, keepdims=True)
        return xc / np.sqrt(x.var(axis=-1) + eps) * gamma + beta     # keepdims forgotten on the variance only

    result = ch07.run("layer_norm_forward", layer_norm_forward)
    assert result.mistake == "missing keepdims", result.message


def test_sinusoidal_float32_and_another_formula_pass():
    def sinusoidal_positions(T, E):
        i = np.arange(E // 2, dtype=np.float32)
        angle = np.arange(T, dtype=np.float32)[:, None] * np.exp(-np.log(10000.0) * 2 * i / E).astype(np.float32)
        return np.stack([np.sin(angle), np.cos(angle)], axis=-1).reshape(T, E)   # interleaved by a stack

    assert ch07.run("sinusoidal_positions", sinusoidal_positions).passed


def test_attention_alternatives_pass():
    def attention_forward(q, k, v, mask=None):
        s = np.einsum("nqd,nkd->nqk", q, k) / np.sqrt(q.shape[-1])
        if mask is not None:
            s = s.copy()
            s[~np.broadcast_to(mask, s.shape)] = -1e30       # a large negative number, by boolean indexing
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        return np.einsum("nqk,nkd->nqd", p / p.sum(-1, keepdims=True), v)

    def attention_backward(dout, q, k, v, mask=None):
        out = []
        for n in range(q.shape[0]):                         # one sequence at a time
            m = None if mask is None else np.broadcast_to(mask, (q.shape[0], q.shape[1], k.shape[1]))[n]
            s = q[n] @ k[n].T / np.sqrt(q.shape[-1])
            s = np.where(m, s, -np.inf) if m is not None else s
            P = np.exp(s - s.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            dP = dout[n] @ v[n].T
            J = np.einsum("ij,jk->ijk", P, np.eye(P.shape[1])) - np.einsum("ij,ik->ijk", P, P)   # full Jacobians
            dS = np.einsum("ijk,ij->ik", J, dP)
            out.append((dS @ k[n] / np.sqrt(q.shape[-1]), dS.T @ q[n] / np.sqrt(q.shape[-1]), P.T @ dout[n]))
        return tuple(np.stack(parts) for parts in zip(*out))

    assert ch07.run("attention_forward", attention_forward).passed
    assert ch07.run("attention_backward", attention_backward).passed


def test_heads_loops_pass():
    def split_heads(x, nh):
        hs = x.shape[-1] // nh
        return np.stack([x[:, :, h * hs:(h + 1) * hs] for h in range(nh)], axis=1)

    def merge_heads(x):
        return np.concatenate([x[:, h] for h in range(x.shape[1])], axis=-1)

    assert ch07.run("split_heads", split_heads).passed
    assert ch07.run("merge_heads", merge_heads).passed


def test_layer_norm_backward_the_long_way_passes():
    def layer_norm_backward(dy, x, gamma, eps=1e-5):
        E = x.shape[-1]
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        xhat = (x - mu) / np.sqrt(var + eps)
        lead = tuple(range(x.ndim - 1))
        dxhat = dy * gamma
        dvar = np.sum(dxhat * (x - mu) * -0.5 * (var + eps) ** -1.5, -1, keepdims=True)
        dmu = np.sum(-dxhat / np.sqrt(var + eps), -1, keepdims=True) + dvar * np.mean(-2 * (x - mu), -1,
                                                                                      keepdims=True)
        dx = dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / E + dmu / E
        return dx, (dy * xhat).sum(lead), dy.sum(lead)

    assert ch07.run("layer_norm_backward", layer_norm_backward).passed


def test_too_slow_is_reported(monkeypatch):
    monkeypatch.setattr(ch07._exercises["split_heads"], "seconds", 0.3)

    def split_heads(x, nh):
        while True:
            pass

    assert ch07.run("split_heads", split_heads).status == "too slow"


# --------------------------------------------------------------------------- the KV-cache loop

def _heads(a, nh):
    N, T, E = a.shape
    return a.view(N, T, nh, E // nh).transpose(1, 2)


def test_generate_cached_with_buffers_manual_attention_and_a_token_by_token_prompt_passes():
    def generate_cached(model, ids, max_new_tokens):
        N, T = ids.shape
        E, nh, L = model.n_embd, model.n_head, len(model.blocks)
        total = T + max_new_tokens
        K = torch.zeros(L, N, nh, total, E // nh)           # preallocated buffers, filled in place
        Vb = torch.zeros(L, N, nh, total, E // nh)
        out = torch.zeros(N, total, dtype=torch.long)
        out[:, :T] = ids
        with torch.no_grad():
            for pos in range(total - 1):                    # the prompt too, one token at a time
                x = model.embed(out[:, pos:pos + 1], pos)
                for layer, block in enumerate(model.blocks):
                    q, k, v = block.attn.qkv(block.ln1(x)).chunk(3, dim=-1)
                    K[layer, :, :, pos:pos + 1] = _heads(k, nh)
                    Vb[layer, :, :, pos:pos + 1] = _heads(v, nh)
                    s = _heads(q, nh) @ K[layer, :, :, :pos + 1].transpose(-1, -2) / (E // nh) ** 0.5
                    y = torch.softmax(s, dim=-1) @ Vb[layer, :, :, :pos + 1]   # one query: no mask needed
                    x = x + block.attn.proj(y.transpose(1, 2).reshape(N, 1, E))
                    x = x + block.mlp(block.ln2(x))
                if pos >= T - 1:
                    out[:, pos + 1] = model.head(model.ln_f(x[:, -1])).argmax(-1)
        return out

    result = ch07.run("generate_cached", generate_cached)
    assert result.passed, result.message + "\n" + result.details


def test_generate_cached_using_a_blocks_cache_is_refused():
    def generate_cached(model, ids, max_new_tokens):
        caches = [{} for _ in model.blocks]
        new, past = ids, 0
        with torch.no_grad():
            for _ in range(max_new_tokens):
                x = model.embed(new, past)
                for block, cache in zip(model.blocks, caches):
                    x, _ = block(x, cache)                  # the course's Block with its cache
                nxt = model.head(model.ln_f(x[:, -1])).argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], 1)
                past, new = past + new.shape[1], nxt
        return ids

    result = ch07.run("generate_cached", generate_cached)
    assert result.mistake == "model's own cache used", result.message


def test_generate_cached_cache_appended_along_the_features_before_the_head_split():
    def generate_cached(model, ids, max_new_tokens):
        caches = [None] * len(model.blocks)                 # (N, T, E) caches, appended along dim 2 (features)
        new, past = ids, 0
        with torch.no_grad():
            for _ in range(max_new_tokens):
                x = model.embed(new, past)
                N, Tn, E = x.shape
                for layer, block in enumerate(model.blocks):
                    q, k, v = block.attn.qkv(block.ln1(x)).split(E, dim=2)
                    if caches[layer] is not None:
                        k = torch.cat([caches[layer][0], k], dim=2)
                        v = torch.cat([caches[layer][1], v], dim=2)
                    caches[layer] = (k, v)
                    y = F.scaled_dot_product_attention(_heads(q, block.attn.n_head), _heads(k, block.attn.n_head),
                                                       _heads(v, block.attn.n_head), is_causal=Tn > 1)
                    x = x + block.attn.proj(y.transpose(1, 2).reshape(N, Tn, E))
                    x = x + block.mlp(block.ln2(x))
                nxt = model.head(model.ln_f(x[:, -1])).argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], 1)
                past, new = past + Tn, nxt
        return ids

    result = ch07.run("generate_cached", generate_cached)       # it raises the very error of the row
    assert result.mistake == "cache on the last axis", result.message


def test_a_cat_error_no_row_raises_is_translated():
    fail = checks.CheckFailed("generate_cached raised RuntimeError: ...")
    fail.error = RuntimeError("Sizes of tensors must match except in dimension 0. Expected size 3 but got size 1 "
                              "for tensor number 1 in the list.")
    with pytest.raises(checks.CheckFailed) as raised:
        checks._translate_cat_error(fail, lambda row: None, "case 1")
    assert raised.value.mistake == "cache axis" and "dim=2" in str(raised.value)


def test_generate_cached_shapes_and_the_course_generate():
    def only_new(model, ids, max_new_tokens):
        return tt.generate(model, ids, max_new_tokens, greedy=True)[:, ids.shape[1]:]

    result = ch07.run("generate_cached", only_new)
    assert result.status == "course code", result.message

    def new_tokens_only(model, ids, max_new_tokens):
        return solution(STEM, "generate_cached")(model, ids, max_new_tokens)[:, ids.shape[1]:]

    result = ch07.run("generate_cached", new_tokens_only)
    assert "return the prompt followed by the new tokens" in result.message, result.message


# --------------------------------------------------------------------------- the learner review's cases

def test_split_heads_with_t_and_hs_swapped_is_a_wrong_shape():
    def split_heads(x, nh):
        N, T, E = x.shape
        return x.reshape(N, T, nh, E // nh).transpose(0, 2, 3, 1)          # (N, nh, hs, T)

    N, T, E, nh = checks.SPLIT_CASES[0]
    assert len({T, nh, E // nh}) == 3
    result = ch07.run("split_heads", split_heads)
    assert "has the wrong shape" in result.message and "transposed to (N, E, T)" not in result.message, \
        result.message


def _sdpa_grads(dout, q, k, v, mask=None):
    t = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    F.scaled_dot_product_attention(*t, attn_mask=None if mask is None else torch.tensor(mask)).backward(
        torch.tensor(dout))
    return tuple(a.grad.numpy() for a in t)


@pytest.mark.parametrize("order", [(2, 1, 0), (1, 0, 2), (0, 2, 1)])
def test_attention_backward_outputs_in_any_wrong_order(order):
    def attention_backward(dout, q, k, v, mask=None):
        grads = _sdpa_grads(dout, q, k, v, mask)
        return tuple(grads[i] for i in order)

    result = ch07.run("attention_backward", attention_backward)
    assert result.mistake == "outputs in the wrong order", result.message
    assert "return (dq, dk, dv) in this order" in result.message


def test_attention_backward_row_sum_without_keepdims():
    def attention_backward(dout, q, k, v, mask=None):
        scale = 1 / np.sqrt(q.shape[-1])
        s = q @ np.swapaxes(k, -1, -2) * scale
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        P = e / e.sum(-1, keepdims=True)
        dP = dout @ np.swapaxes(v, -1, -2)
        dS = P * (dP - (dP * P).sum(-1)[..., None, :])
        return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout

    result = ch07.run("attention_backward", attention_backward)
    assert result.mistake == "row sum broadcast along the wrong axis", result.message
    assert "keepdims" in result.message


def test_layer_norm_eps_ignored_is_named():
    def layer_norm_forward(x, gamma, beta, eps=1e-5):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * gamma + beta

    assert ch07.run("layer_norm_forward", layer_norm_forward).mistake == "eps argument ignored"


def test_kv_cache_question_bytes_and_integral_float():
    assert "numbers, not bytes" in ch07.run("q_kv_cache_numbers", lambda: 4 * 2 * 12 * 1024 * 768).message
    assert ch07.run("q_kv_cache_numbers", lambda: 1.8874368e7).passed


def test_is_causal_row_names_a_tril_mask_too():
    row = next(r for r in checks.GENERATE_MISTAKES if r.name == "is_causal with one query")
    assert row.message.startswith("a causal mask aligned top-left (is_causal=True or a tril mask")
    assert "prompt pass" in ch07.hints("generate_cached")[1]
