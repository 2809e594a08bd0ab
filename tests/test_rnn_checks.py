"""Chapter 06's graded exercises (dlcourse/rnn/checks.py): the exercise forms equal PyTorch, the checks'
diagnoses that are not mistake-table rows, and valid alternative answers pass (tests/test_course.py
proves every row)."""

import numpy as np
import pytest
import torch

from checktools import solution
from dlcourse.rnn import checks
from dlcourse.rnn import numpy_impl as ref
from dlcourse.rnn.checks import check as ch06

STEM = "06_rnn"


def _t(a, grad=False):
    return torch.from_numpy(np.array(a, dtype=np.float64)).requires_grad_(grad)


def _cell_weights(cell):
    return [p.detach().numpy().copy() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]


# --------------------------------------------------------------------------- the exercise forms equal PyTorch

@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_lstm_and_gru_cell_forms_equal_torch_cells(answer):
    lstm = ref.lstm_cell_step if answer == "reference" else solution(STEM, "lstm_cell_forward")
    gru = ref.gru_cell_step if answer == "reference" else solution(STEM, "gru_cell_forward")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for _ in range(20):
        N, D, H = (int(v) for v in rng.integers(1, 6, 3))
        x, h, c = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
        cell = torch.nn.LSTMCell(D, H).double()
        h_t, c_t = cell(_t(x), (_t(h), _t(c)))
        ours = lstm(x, h, c, *_cell_weights(cell))
        np.testing.assert_allclose(ours[0], h_t.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours[1], c_t.detach().numpy(), rtol=1e-12, atol=1e-14)
        cell = torch.nn.GRUCell(D, H).double()
        np.testing.assert_allclose(gru(x, h, *_cell_weights(cell)), cell(_t(x), _t(h)).detach().numpy(),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_rnn_backward_forms_equal_autograd_through_nn_rnn(answer):
    backward = ref.rnn_bptt if answer == "reference" else solution(STEM, "rnn_backward")
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    for _ in range(20):
        T, N, D, H = (int(v) for v in rng.integers(1, 6, 4))
        rnn = torch.nn.RNN(D, H).double()
        x, h0 = _t(rng.standard_normal((T, N, D)), True), _t(rng.standard_normal((1, N, H)), True)
        out, _ = rnn(x, h0)
        dout = rng.standard_normal((T, N, H))
        out.backward(_t(dout))
        hs = np.concatenate([h0.detach().numpy(), out.detach().numpy()])          # (T+1, N, H)
        dx, dh0, dW_ih, dW_hh, db = backward(dout, x.detach().numpy(), hs, rnn.weight_ih_l0.detach().numpy(),
                                             rnn.weight_hh_l0.detach().numpy())
        for ours, theirs in ((dx, x.grad), (dh0, h0.grad[0]), (dW_ih, rnn.weight_ih_l0.grad),
                             (dW_hh, rnn.weight_hh_l0.grad), (db, rnn.bias_ih_l0.grad), (db, rnn.bias_hh_l0.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- diagnoses that are not table rows

def _bptt_damped_carry(dout, x, hs, W_ih, W_hh):
    dx, dh0, dW_ih, dW_hh, db = (np.zeros(x.shape), None, np.zeros(W_ih.shape), np.zeros(W_hh.shape),
                                 np.zeros(W_hh.shape[0]))
    dh_next = np.zeros(hs.shape[1:])
    for t in reversed(range(len(x))):
        da = (dout[t] + 0.9 * dh_next) * (1 - hs[t + 1] ** 2)      # a wrong factor on the carried gradient
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def _bptt_dout_doubled(dout, x, hs, W_ih, W_hh):
    return solution(STEM, "rnn_backward")(2 * dout, x, hs, W_ih, W_hh)


def _bptt_dW_ih_halved(dout, x, hs, W_ih, W_hh):
    dx, dh0, dW_ih, dW_hh, db = solution(STEM, "rnn_backward")(dout, x, hs, W_ih, W_hh)
    return dx, dh0, dW_ih / 2, dW_hh, db


def test_rnn_backward_says_at_which_time_step_it_goes_wrong():
    result = ch06.run("rnn_backward", _bptt_damped_carry)
    assert result.message.startswith("right up to T = 1, wrong from T = 2: dx is right for the steps t = 1..1 "
                                     "and wrong from step t = 0 back")
    assert result.mistake == "stage: carried gradient" and "T = 2," in result.details
    result = ch06.run("rnn_backward", _bptt_dout_doubled)
    assert result.message.startswith("dx is already wrong at the last step t = 0")
    result = ch06.run("rnn_backward", _bptt_dW_ih_halved)
    assert result.message.startswith("dx, dh0, dW_hh and db are right; dW_ih (T = 1) is wrong") and "max error" in result.message


def _bptt_with_the_lessons_cell(dout, x, hs, W_ih, W_hh):
    """BPTT as a loop over the lesson's one-step backward (shown in the lesson, so not refused)."""
    params = dict(zip(ref.KEYS, (W_ih, W_hh, np.zeros(len(W_hh)), np.zeros(len(W_hh)))))
    dx, dh_next = np.zeros(x.shape), np.zeros(hs.shape[1:])
    total = {k: np.zeros_like(v) for k, v in params.items()}
    for t in reversed(range(len(x))):
        cache = ref.RnnCellCache(x[t], hs[t], hs[t + 1], W_ih, W_hh)
        dx[t], dh_next, grads = ref.rnn_cell_backward(dout[t] + dh_next, cache)
        total = {k: total[k] + grads[k] for k in total}
    return dx, dh_next, total["weight_ih_l0"], total["weight_hh_l0"], total["bias_ih_l0"]


def _bptt_vectorised_weights(dout, x, hs, W_ih, W_hh):
    """Only dh in the loop; the weight gradients as one einsum each afterwards."""
    da = np.zeros(dout.shape)
    dh_next = np.zeros(hs.shape[1:])
    for t in range(len(x) - 1, -1, -1):
        da[t] = (dout[t] + dh_next) * (1 - hs[t + 1] ** 2)
        dh_next = da[t] @ W_hh
    return (np.einsum("tnh,hd->tnd", da, W_ih), dh_next, np.einsum("tnh,tnd->hd", da, x),
            np.einsum("tnh,tnk->hk", da, hs[:-1]), da.sum(axis=(0, 1)))


def _bptt_as_a_list(dout, x, hs, W_ih, W_hh):
    return list(solution(STEM, "rnn_backward")(dout, x, hs, W_ih, W_hh))


@pytest.mark.parametrize("answer", [_bptt_with_the_lessons_cell, _bptt_vectorised_weights, _bptt_as_a_list])
def test_rnn_backward_accepts_other_right_answers(answer):
    result = ch06.run("rnn_backward", answer)
    assert result.passed, result.message


def _lstm_np_dot(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a = np.dot(x_t, W_ih) + b_ih + np.dot(h_prev, W_hh) + b_hh      # another error text than x @ W_ih's
    return a, a


def _gru_np_dot(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return np.dot(x_t, W_ih)


def test_shape_errors_of_untransposed_weights_are_translated():
    result = ch06.run("lstm_cell_forward", _lstm_np_dot)
    assert result.mistake == "weights not transposed" and "not aligned" in result.message
    result = ch06.run("gru_cell_forward", _gru_np_dot)
    assert result.mistake == "weights not transposed"


def _lstm_per_gate_slices(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]

    def pre(k):
        rows = slice(k * H, (k + 1) * H)
        return x_t @ W_ih[rows].T + h_prev @ W_hh[rows].T + b_ih[rows] + b_hh[rows]
    i, f, g, o = 1 / (1 + np.exp(-pre(0))), 1 / (1 + np.exp(-pre(1))), np.tanh(pre(2)), 1 / (1 + np.exp(-pre(3)))
    c = f * c_prev + i * g
    return [o * np.tanh(c), c]                                     # a list is a fine pair


def _lstm_wrong_c_scale(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    h, c = solution(STEM, "lstm_cell_forward")(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh)
    return h, 1.01 * c


def _gru_returns_pair(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    h = solution(STEM, "gru_cell_forward")(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    return h, h


def test_cells_accept_per_gate_weights_and_name_the_wrong_output():
    assert ch06.run("lstm_cell_forward", _lstm_per_gate_slices).passed
    result = ch06.run("lstm_cell_forward", _lstm_wrong_c_scale)
    assert result.message.startswith("h is right; c (N = 1") and "max error" in result.message
    assert ch06.run("gru_cell_forward", _gru_returns_pair).message.startswith(
        "gru_cell_forward returned a pair: a GRU has no cell state")


def _lstm_gates_f_i_g_o(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh
    i, f, g, o = np.split(a, 4, axis=1)                                # coupled gates: no table row
    c = checks._sigmoid(f) * c_prev + (1 - checks._sigmoid(f)) * np.tanh(g)
    return checks._sigmoid(o) * np.tanh(c), c


def _lstm_returns_c_h(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    return solution(STEM, "lstm_cell_forward")(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh)[::-1]


def _bptt_grads_first(dout, x, hs, W_ih, W_hh):
    dx, dh0, dW_ih, dW_hh, db = solution(STEM, "rnn_backward")(dout, x, hs, W_ih, W_hh)
    return dW_ih, dW_hh, db, dx, dh0


def test_no_output_right_gets_a_message_not_an_index_error():
    message = ch06.run("lstm_cell_forward", _lstm_gates_f_i_g_o).message
    assert message.startswith("none of h, c is right; h (N = 1") and "max error" in message
    message = ch06.run("lstm_cell_forward", _lstm_returns_c_h).message
    assert message.startswith("the outputs are in the wrong order (h holds what c should; c holds what h should)")
    message = ch06.run("rnn_backward", _bptt_grads_first).message
    assert message.startswith("the outputs are in the wrong order") and "(dx, dh0, dW_ih, dW_hh, db)" in message
    for result in (ch06.run("lstm_cell_forward", _lstm_gates_f_i_g_o), ch06.run("rnn_backward", _bptt_grads_first)):
        assert "IndexError" not in result.message and result.status != "error"


# --------------------------------------------------------------------------- clipping and the embedding

def test_clip_and_embedding_forms_equal_torch():
    clip, embedding_backward = solution(STEM, "clip_grad_norm"), solution(STEM, "embedding_backward")
    for case in range(1, len(checks.CLIP_CASES) + 1):
        grads, max_norm = checks.clip_case(case)
        params = [torch.nn.Parameter(_t(np.zeros_like(g))) for g in grads]
        for p, g in zip(params, grads):
            p.grad = _t(g)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        for answer in (ref.clip_grad_norm, clip):
            clipped, ours = answer(grads, max_norm)
            assert ours == pytest.approx(float(total), rel=1e-12)
            for c, p in zip(clipped, params):
                np.testing.assert_allclose(c, p.grad.numpy(), rtol=1e-12)
    for case in range(1, len(checks.EMBEDDING_CASES) + 1):
        dout, ids, V = checks.embedding_case(case)
        emb = torch.nn.Embedding(V, dout.shape[-1]).double()
        emb(torch.as_tensor(ids)).backward(_t(dout))
        for answer in (ref.embedding_backward, embedding_backward):
            np.testing.assert_allclose(answer(dout, ids, V), emb.weight.grad.numpy(), rtol=1e-12)


def _embedding_one_hot(dout, ids, V):
    one_hot = np.eye(V)[ids.reshape(-1)]                            # (N·T, V)
    return one_hot.T @ dout.reshape(-1, dout.shape[-1])


def _embedding_loop(dout, ids, V):
    dW = np.zeros((V, dout.shape[-1]))
    for index in np.ndindex(ids.shape):
        dW[ids[index]] += dout[index]                               # one id at a time: repeats add up
    return dW


def _clip_as_tuple_of_float32_free_arrays(grads, max_norm):
    clipped, total = solution(STEM, "clip_grad_norm")(grads, max_norm)
    return tuple(clipped), np.float64(total)


def _clip_without_eps(grads, max_norm):
    total = np.sqrt(sum((g ** 2).sum() for g in grads))
    return [g * (max_norm / total if total > max_norm else 1.0) for g in grads], total


@pytest.mark.parametrize("name, answer", [("embedding_backward", _embedding_one_hot),
                                          ("embedding_backward", _embedding_loop),
                                          ("clip_grad_norm", _clip_as_tuple_of_float32_free_arrays),
                                          ("clip_grad_norm", _clip_without_eps)])
def test_other_right_answers_pass(name, answer):
    result = ch06.run(name, answer)
    assert result.passed, result.message


def _clip_half(grads, max_norm):
    clipped, total = solution(STEM, "clip_grad_norm")(grads, max_norm)
    return [g / 2 for g in clipped], total


def test_clip_names_what_is_wrong_when_no_row_matches():
    result = ch06.run("clip_grad_norm", _clip_half)
    assert result.message.startswith("clipped[0] (shapes [(2,), (3,)], max_norm 1) is wrong: max error")


# --------------------------------------------------------------------------- the generation loop

def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _generate_inverse_cdf(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    """Draws by inverse CDF with rng.random, top-k by argpartition, the last token fed too, a numpy prompt."""
    for token in np.asarray(prompt_ids):
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = logits / temperature
        if top_k is not None:
            cut = np.partition(z, -top_k)[-top_k]
            z = np.where(z >= cut, z, -np.inf)
        token = int(np.searchsorted(np.cumsum(_softmax(z)), rng.random() * np.sum(_softmax(z)), side="right"))
        out.append(token)
        logits, state = next_logits(token, state)
    return out


def _generate_torch_multinomial(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    """torch's sampler (its generator seeded from rng): still the right distribution; the last token not fed."""
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for step in range(length):
        z = torch.as_tensor(logits) / temperature
        if top_k is not None:
            z = z.masked_fill(z < torch.topk(z, top_k).values[-1], -float("inf"))
        out.append(int(torch.multinomial(torch.softmax(z, 0), 1, generator=gen)))
        if step < length - 1:
            logits, state = next_logits(out[-1], state)
    return np.array(out)


@pytest.mark.parametrize("answer", [_generate_inverse_cdf, _generate_torch_multinomial])
def test_generate_accepts_any_right_way_of_drawing(answer):
    result = ch06.run("generate", answer)
    assert result.passed, result.message


def _generate_uniform(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = logits / temperature
        allowed = np.argsort(z)[-top_k:] if top_k is not None else np.arange(len(z))
        out.append(int(rng.choice(allowed)))                        # uniform among them: no softmax at all
        logits, state = next_logits(out[-1], state)
    return out


def _generate_state_reset_once(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    start = state
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for step in range(length):
        out.append(int(rng.choice(len(logits), p=_softmax(logits / temperature))))
        logits, state = next_logits(out[-1], start if step == 2 else state)   # one call gets the old state
    return out


def _generate_one_short(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    return solution(STEM, "generate")(next_logits, state, prompt_ids, length - 1, temperature, top_k, rng)


def _generate_calls_sample_next(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        out.append(ref.sample_next(logits, rng, temperature, top_k))
        logits, state = next_logits(out[-1], state)
    return out


def test_generate_diagnoses_that_are_not_rows():
    result = ch06.run("generate", _generate_uniform)
    assert result.mistake == "wrong distribution"
    assert result.message.startswith("the tokens are not drawn from softmax(logits / temperature) (fixed logits")
    result = ch06.run("generate", _generate_state_reset_once)
    assert result.message.startswith("call 6 to next_logits did not get the state that call 5 returned")
    assert ch06.run("generate", _generate_one_short).message == "generate returned 5 tokens; length = 6 asks for 6"
    result = ch06.run("generate", _generate_calls_sample_next)
    assert result.status == "course code" and "sample_next" in result.message


def test_toy_model_records_its_calls_and_is_not_copied_by_the_mutation_check():
    model, state, prompt, length, temperature, top_k, rng = checks.generate_case(1)
    import copy
    assert copy.deepcopy(model) is model
    logits, new_state = model(prompt[0], state)
    assert logits.shape == (model.V,) and new_state.shape == state.shape
    assert model.calls[0][0] == prompt[0] and np.array_equal(model.calls[0][1], state)
    with pytest.raises(TypeError):
        model(1.0, state)


def _generate_with(probs, draw=None, first_from_prompt0=False, stale=False):
    """A generation loop with the given logits -> probabilities map and its own ways of going wrong."""
    def generate(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
        seen = []
        for token in prompt_ids:
            logits, state = next_logits(token, state)
            seen.append(logits)
        use = seen[0] if first_from_prompt0 else seen[-2] if stale and len(seen) > 1 else seen[-1]
        out = []
        for _ in range(length):
            p = probs(np.asarray(use, dtype=float), temperature, top_k)
            out.append(int(draw(p) if draw else rng.choice(len(p), p=p)))
            logits, state = next_logits(out[-1], state)
            use = seen[-1] if stale else logits
            seen.append(logits)
        return out
    return generate


def _mask(z, k):
    return np.where(z >= np.sort(z)[-k], z, -np.inf)


def _right_probs(z, T, k):
    return _softmax(_mask(z / T, k) if k is not None else z / T)


def _t_ignored_with_top_k(z, T, k):
    return _softmax(_mask(z, k) if k is not None else z / T)


def _top_k_others_zero(z, T, k):
    z = z / T
    return _softmax(np.where(z >= np.sort(z)[-k], z, 0.0) if k is not None else z)


def _generate_fixed_seed(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    return _generate_with(_right_probs)(next_logits, state, prompt_ids, length, temperature, top_k,
                                        np.random.default_rng(12345))


@pytest.mark.parametrize("answer, start", [
    (_generate_with(_right_probs, first_from_prompt0=True), "the first new token was drawn from the logits after "
                                                            "the FIRST prompt token"),
    (_generate_with(_right_probs, stale=True), "each token is drawn from the logits of the step BEFORE"),
    (_generate_with(_t_ignored_with_top_k), "with top_k the temperature has no effect (without top_k it has)"),
    (_generate_with(_top_k_others_zero), "tokens outside the top k are drawn: the logits of the others are set to 0"),
    (_generate_with(_right_probs, draw=lambda p: np.random.choice(len(p), p=p)),
     "use the generator rng you are given: the same rng state must give the same tokens (two calls"),
    (_generate_fixed_seed,
     "use the generator rng you are given: the same rng state must give the same tokens (generators of"),
])
def test_generate_names_the_step_the_rng_and_the_top_k_mask(answer, start):
    result = ch06.run("generate", answer)
    assert not result.passed and result.message.startswith(start), result.message
    assert "SMALLEST" not in result.message and "one token too many" not in result.message


def _clip_returns_inputs_when_small(grads, max_norm):
    total = float(np.sqrt(sum(np.sum(g ** 2) for g in grads)))
    scale = max_norm / (total + 1e-6)
    return ([g * scale for g in grads] if scale < 1 else grads), total


def _clip_list_only(grads, max_norm):
    return solution(STEM, "clip_grad_norm")(grads, max_norm)[0]


def test_clip_wants_new_arrays_and_the_pair():
    message = ch06.run("clip_grad_norm", _clip_returns_inputs_when_small).message
    assert message.startswith("clip_grad_norm returned the arrays it was given (when there is nothing to clip)")
    message = ch06.run("clip_grad_norm", _clip_list_only).message
    assert message.startswith("clip_grad_norm returned only the clipped gradients: return (clipped, total)")


@pytest.mark.parametrize("name, value, passes", [
    ("q_uniform_nats", 4.61, True), ("q_uniform_nats", 4.6, True), ("q_uniform_nats", float(np.log2(100)), False),
    ("q_vanishing_factor", 9.5e-7, True), ("q_vanishing_factor", 9.54e-7, True),
    ("q_vanishing_factor", 0.5 ** 19, False), ("q_vanishing_factor", 0.5 ** 21, False)])
def test_numeric_questions_accept_two_significant_digits(name, value, passes):
    assert ch06.run(name, lambda: value).passed == passes


def test_rnn_backward_names_only_the_last_dout():
    result = ch06.run("rnn_backward", checks.bptt_only_last_dout)
    assert result.mistake == "only dout[-1] added" and "sends back" not in result.message
    assert "dout[t] of every step must be added, not only the last one's" in result.message


def _as_float32(name):
    def answer(*args):
        out = solution(STEM, name)(*args)
        if name == "clip_grad_norm":
            return [g.astype(np.float32) for g in out[0]], out[1]
        return tuple(o.astype(np.float32) for o in out) if isinstance(out, tuple) else out.astype(np.float32)
    return answer


@pytest.mark.parametrize("name, first", [("lstm_cell_forward", "h"), ("gru_cell_forward", "h"),
                                         ("rnn_backward", "dx"), ("clip_grad_norm", "clipped[0]"),
                                         ("embedding_backward", "dW")])
def test_float32_is_rejected_the_same_way_everywhere(name, first):
    result = ch06.run(name, _as_float32(name))
    assert result.mistake == "float32" and result.message.startswith(f"{first} (")
    assert "is float32 where the input was float64: keep float64 all the way" in result.message


def _top_k_ignored(z, T, k):
    return _softmax(z / T)


def _generate_two_steps_stale(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    seen = []
    for token in prompt_ids:
        logits, state = next_logits(token, state)
        seen.append(logits)
    out = []
    for _ in range(length):
        p = _right_probs(np.asarray(seen[-min(3, len(seen))], dtype=float), temperature, top_k)
        out.append(int(rng.choice(len(p), p=p)))
        logits, state = next_logits(out[-1], state)
        seen.append(logits)
    return out


def test_generate_names_top_k_ignored_and_other_wrong_steps():
    message = ch06.run("generate", _generate_with(_top_k_ignored)).message
    assert message.startswith("top_k has no effect: the tokens follow softmax(logits / temperature) over ALL")
    result = ch06.run("generate", _generate_two_steps_stale)
    assert result.mistake == "wrong step's logits" and result.message.startswith("new token 0 (")
