"""Chapter 10's graded exercises (dlcourse/efficiency/checks.py): the exercise forms equal the package (and torch
where it is cheap), the checks' diagnoses that are not mistake-table rows, and valid alternative answers pass
(tests/test_course.py proves every row)."""

import numpy as np
import pytest
import torch

from checktools import solution
from dlcourse.efficiency import checks
from dlcourse.efficiency import numpy_impl as en
from dlcourse.efficiency.checks import check as ch10

STEM = "10_efficiency"


def _passes(name, fn):
    result = ch10.run(name, fn)
    assert result.passed, f"{result.message}\n{result.details}"
    return result


def _fails(name, fn, start, mistake=None, status=None):
    result = ch10.run(name, fn)
    assert not result.passed and result.message.startswith(start), result.message
    if mistake is not None:
        assert result.mistake == mistake, result.mistake
    if status is not None:
        assert result.status == status, result.status
    return result


# --------------------------------------------------------------------------- the exercise forms equal the package

@pytest.mark.parametrize("case", [1, 2, 3, 4, 5])
def test_conv2d_cost_form_equals_torch_shapes_and_parameter_count(case):
    (c_in, c_out, kh, kw, h, w), kwargs = checks.cost_case(case)
    params, flops, out = checks.conv2d_cost_triple(c_in, c_out, kh, kw, h, w, **kwargs)
    conv = torch.nn.Conv2d(c_in, c_out, (kh, kw), **{k.replace("pad", "padding"): v for k, v in kwargs.items()})
    y = conv(torch.zeros(1, c_in, h, w))
    assert out == tuple(y.shape[2:]) and params == sum(p.numel() for p in conv.parameters())
    assert flops == 2 * y.numel() * c_in * kh * kw


def test_prune_quantize_distill_forms_equal_numpy_impl():
    weights, sparsity = checks.prune_case(3)
    masks = checks.global_magnitude_prune_masks(weights, sparsity)
    assert masks.keys() == {"conv.weight", "fc.weight"}
    assert checks._valid_masks(masks, weights, sparsity) is None
    w, bits = checks.quant_case(3)
    q, scale, zp = checks.quantize_per_channel_affine(w, bits)
    assert q.dtype == np.uint8 and zp.dtype.kind == "i" and scale.shape == (4,)
    x_hat = checks.dequantize_per_channel(q, scale, zp)
    assert np.all(np.abs(x_hat - w) <= scale.reshape(-1, 1, 1, 1) / 2 + 1e-12)    # half a step at most
    assert np.all(x_hat[2] == 0)                                                  # the zero channel stays exact
    s, t, y, T, alpha = checks.distill_case(2)
    loss, ds = checks.distill_loss_and_grad(s, t, y, T, alpha)
    st = torch.tensor(s, requires_grad=True)
    from dlcourse.efficiency import torch_impl as et
    lt = et.distill_loss(st, torch.tensor(t), torch.tensor(y), T=T, alpha=alpha)
    lt.backward()
    np.testing.assert_allclose(loss, lt.item(), rtol=1e-12)
    np.testing.assert_allclose(ds, st.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_distill_gradient_equals_finite_differences():
    s, t, y, T, alpha = checks.distill_case(1)
    fn = solution(STEM, "distill_loss")
    _, ds = fn(s, t, y, T, alpha)
    num = np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        e = np.zeros_like(s)
        e[idx] = 1e-6
        num[idx] = (fn(s + e, t, y, T, alpha)[0] - fn(s - e, t, y, T, alpha)[0]) / 2e-6
    np.testing.assert_allclose(ds, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", [1, 2, 3, 4])
def test_ring_form_equals_numpy_impl_values_and_bytes(case):
    buffers = checks.ring_case(case)
    net = checks.Network(len(buffers))
    got = checks.ring_allreduce_send(buffers, net.send)
    want, trace = en.ring_allreduce(buffers, average=True, trace=True)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(net.bytes_sent, trace.bytes_sent)
    assert len(net.messages) == sum(len(step.sends) for step in trace.steps)


def test_data_parallel_form_equals_single_process_sgd_over_steps():
    params, x, y, P, lr = checks.dp_case(4)
    p = params
    for _ in range(3):
        p = checks.data_parallel_step_ref(p, x, y, P, lr, en.mlp_loss_and_grads)
    single = en.sgd(params, x, y, steps=3, lr=lr)
    parallel = en.data_parallel_sgd(params, x, y, workers=P, steps=3, lr=lr)
    for k in params:
        np.testing.assert_allclose(p[k], single.params[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p[k], parallel.params[k], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- diagnoses that are not table rows

def test_conv2d_cost_float_output_size_and_changed_default_are_named():
    def conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
        h, w = (h_img + 2 * pad - kh) / stride + 1, (w_img + 2 * pad - kw) / stride + 1
        return c_out * c_in * kh * kw + c_out, int(2 * c_out * h * w * c_in * kh * kw), (h, w)
    _fails("conv2d_cost", conv2d_cost, "h_out is a float (3.0)", mistake="float output size")

    def conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride=2, pad=0):     # noqa: F811
        return solution(STEM, "conv2d_cost")(c_in, c_out, kh, kw, h_img, w_img, stride, pad)
    _fails("conv2d_cost", conv2d_cost, "conv2d_cost's default stride=2", mistake="wrong default")


def test_conv2d_cost_two_mistakes_at_once_are_named_item_by_item():
    def conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):
        h, w = (h_img + 2 * pad - kh) // stride + 1, (w_img + 2 * pad - kw) // stride + 1
        return c_out * c_in * kh * kw, c_out * h * w * c_in * kh * kw, (h, w)       # no bias, MACs
    _fails("conv2d_cost", conv2d_cost, "params is wrong (got 18, expected 20): the parameter count misses the biases",
           mistake="bias forgotten in params")


def test_conv2d_cost_checks_the_output_size_before_the_flops():
    def conv2d_cost(c_in, c_out, kh, kw, h_img, w_img, stride=1, pad=0):     # + 1 forgotten, and no bias
        h, w = (h_img + 2 * pad - kh) // stride, (w_img + 2 * pad - kw) // stride
        return c_out * c_in * kh * kw, 2 * c_out * h * w * c_in * kh * kw, (h, w)
    _fails("conv2d_cost", conv2d_cost, "(h_out, w_out) is wrong (got (2, 2), expected (3, 3)): the output size misses "
           "the + 1", mistake="+ 1 forgotten in the output size")


def test_conv2d_cost_wrong_form_is_told():
    _fails("conv2d_cost", lambda *a, **k: (1, 2), "conv2d_cost must return three things")
    _fails("conv2d_cost", lambda *a, **k: (1, 2, 3), "the third item must be the output size")


def test_prune_that_mutates_the_weights_is_named():
    ref = solution(STEM, "global_magnitude_prune")

    def global_magnitude_prune(weights, sparsity):
        masks = ref(weights, sparsity)
        for k, m in masks.items():
            weights[k] *= m                                  # prunes the caller's weights too
        return masks
    _fails("global_magnitude_prune", global_magnitude_prune, "global_magnitude_prune changed weights",
           mistake="mutated input")


def test_prune_valid_alternatives_pass():
    def by_partition(weights, sparsity):                     # a threshold from np.partition, ties by position
        names = [k for k in weights if k.endswith("weight")]
        flat = np.concatenate([np.abs(weights[k]).ravel() for k in names])
        k = int(round(sparsity * flat.size))
        out = np.ones(flat.size, dtype=bool)
        if k:
            t = np.partition(flat, k - 1)[k - 1]
            below = flat < t
            ties = np.flatnonzero(flat == t)[: k - below.sum()]
            out[below] = False
            out[ties] = False
        masks, start = {}, 0
        for n in names:
            masks[n] = out[start:start + weights[n].size].reshape(weights[n].shape)    # bool masks
            start += weights[n].size
        return masks
    _passes("global_magnitude_prune", by_partition)

    def last_tie_first(weights, sparsity):                   # ties broken from the END (reversed stable sort)
        names = [k for k in weights if k.endswith("weight")]
        flat = np.concatenate([np.abs(weights[k]).ravel() for k in names])
        k = int(round(sparsity * flat.size))
        order = flat.size - 1 - np.argsort(flat[::-1], kind="stable")
        keep = np.ones(flat.size, dtype=np.int64)
        keep[order[:k]] = 0
        masks, start = {}, 0
        for n in names:
            masks[n] = keep[start:start + weights[n].size].reshape(weights[n].shape)
            start += weights[n].size
        return masks
    weights, sparsity = checks.prune_case(2)
    assert not all(np.array_equal(last_tie_first(weights, sparsity)[k],
                                  checks.global_magnitude_prune_masks(weights, sparsity)[k]) for k in weights
                   if k.endswith("weight"))                  # really another tie-breaking
    _passes("global_magnitude_prune", last_tie_first)


def test_prune_count_rounded_half_up_is_named_not_an_off_by_one():
    def global_magnitude_prune(weights, sparsity):
        names = [k for k in weights if k.endswith("weight")]
        flat = np.concatenate([np.abs(weights[k]).ravel() for k in names])
        keep = np.ones(flat.size)
        keep[np.argsort(flat)[:int(sparsity * flat.size + 0.5)]] = 0
        out, start = {}, 0
        for k in names:
            out[k] = keep[start:start + weights[k].size].reshape(weights[k].shape)
            start += weights[k].size
        return out
    _fails("global_magnitude_prune", global_magnitude_prune, "the number of weights to prune was rounded half UP",
           mistake="count rounded half up")


def test_prune_keys_and_values_problems_are_told():
    ref = solution(STEM, "global_magnitude_prune")
    _fails("global_magnitude_prune", lambda w, s: list(ref(w, s).values()), "return a dict name -> mask")
    _fails("global_magnitude_prune", lambda w, s: {k: 2 * m for k, m in ref(w, s).items()},
           "masks['0.weight'] holds values other than 0 and 1")


def test_quantize_without_the_eps_floor_is_told_the_zero_channel():
    def quantize_per_channel(w, bits=8):
        rows = w.reshape(len(w), -1)
        lo, hi = np.minimum(rows.min(1), 0), np.maximum(rows.max(1), 0)
        scale = (hi - lo) / (2 ** bits - 1)                   # 0 for a channel of zeros
        zp = np.clip(np.round(-lo / scale), 0, 2 ** bits - 1)
        zp = np.nan_to_num(zp).astype(np.int64)
        shape = (-1,) + (1,) * (w.ndim - 1)
        q = np.clip(np.round(w / scale.reshape(shape)) + zp.reshape(shape), 0, 2 ** bits - 1)
        return np.nan_to_num(q).astype(np.uint8), scale, zp
    _fails("quantize_per_channel", quantize_per_channel, "the scale of channel 2 is 0", mistake="scale 0")


def test_quantize_float_zero_point_with_whole_values_and_scalar_scale_are_told():
    ref = solution(STEM, "quantize_per_channel")

    def quantize_per_channel(w, bits=8):
        q, scale, zp = ref(w, bits)
        return q, scale, zp.astype(np.float64)
    _fails("quantize_per_channel", quantize_per_channel, "the zero points are whole numbers but stored as floats",
           mistake="zero point float dtype")

    def quantize_per_channel(w, bits=8):                      # noqa: F811
        q, scale, zp = ref(w[:1].reshape(1, -1), bits)        # one (scale, zero point) for the tensor? no: row 0's
        return ref(w, bits)[0], float(scale[0]), int(zp[0])
    _fails("quantize_per_channel", quantize_per_channel, "every channel got the same scale",
           mistake="per-tensor, not per-channel")


@pytest.mark.parametrize("eps", [1e-12, 1e-10, 1e-7])
def test_quantize_with_any_small_epsilon_on_every_scale_is_named(eps):
    """The table's row adds 1e-8; the check names the mistake for any small constant on every scale."""
    def quantize_per_channel(w, bits=8):
        qmax = 2 ** bits - 1
        rows = w.reshape(len(w), -1)
        lo, hi = np.minimum(rows.min(1), 0), np.maximum(rows.max(1), 0)
        scale = (hi - lo) / qmax + eps                        # "to avoid dividing by zero"
        zp = np.clip(np.round(-lo / scale), 0, qmax).astype(np.int64)
        shape = (-1,) + (1,) * (w.ndim - 1)
        q = np.clip(np.round(w / scale.reshape(shape)) + zp.reshape(shape), 0, qmax)
        return q.astype(np.uint8), scale, zp
    _fails("quantize_per_channel", quantize_per_channel, "a small constant was added to every scale",
           mistake="epsilon added to every scale")


def test_quantize_valid_alternatives_pass():
    def loop_torch_order(w, bits=8):                          # a loop over channels, torch's rounding order
        qmax = 2 ** bits - 1
        q = np.zeros(w.shape, dtype=np.int32)
        scale, zp = np.zeros(len(w)), np.zeros(len(w), dtype=np.int32)
        for c in range(len(w)):
            lo, hi = min(w[c].min(), 0.0), max(w[c].max(), 0.0)
            scale[c] = max((hi - lo) / qmax, np.finfo(np.float32).eps)
            zp[c] = int(np.clip(np.round(-lo / scale[c]), 0, qmax))
            q[c] = np.clip(np.round(w[c] * (1 / scale[c]) + zp[c]), 0, qmax)
        return q, scale, zp
    _passes("quantize_per_channel", loop_torch_order)
    _passes("quantize_per_channel", solution(STEM, "quantize_per_channel"))       # Jacob et al.'s order


def test_dequantize_shape_error_on_4d_codes_is_translated():
    def dequantize(q, scale, zero_point):
        return (q.astype(np.int64) - zero_point[:, None]) * scale[:, None]          # right for 2-d only
    _fails("dequantize", dequantize, "the per-channel scale and zero point were broadcast along the LAST axis",
           mistake="broadcast along the last axis")


def test_distill_non_finite_loss_and_wrong_form_are_told():
    ref = solution(STEM, "distill_loss")
    _fails("distill_loss", lambda s, t, y, T, a: (float("nan"), ref(s, t, y, T, a)[1]), "the loss is nan",
           mistake="non-finite loss")
    _fails("distill_loss", lambda s, t, y, T, a: ref(s, t, y, T, a)[0], "distill_loss must return two things")
    _fails("distill_loss", lambda s, t, y, T, a: (np.full(len(s), 1.0), ref(s, t, y, T, a)[1]),
           "the loss must be one number")


def test_distill_with_scipy_free_loop_passes():
    def distill_loss(s, t, y, T, alpha):                       # row by row, probabilities not logs
        n, k = s.shape
        loss, ds = 0.0, np.zeros_like(s)
        for i in range(n):
            p = np.exp(s[i] / T - np.max(s[i] / T))
            p /= p.sum()
            q = np.exp(t[i] / T - np.max(t[i] / T))
            q /= q.sum()
            h = np.exp(s[i] - s[i].max())
            h /= h.sum()
            loss += alpha * T * T * np.sum(q * np.log(q / p)) - (1 - alpha) * np.log(h[y[i]])
            ds[i] = alpha * T * (p - q) + (1 - alpha) * (h - np.eye(k)[y[i]])
        return loss / n, ds / n
    _passes("distill_loss", distill_loss)


def test_ring_that_raises_shows_the_error_and_a_send_to_itself_is_refused():
    def ring_allreduce(buffers, send):
        send(0, 0, buffers[0])
        return buffers
    result = _fails("ring_allreduce", ring_allreduce, "ring_allreduce raised ValueError: worker 0 sent a message to "
                                                       "itself")
    assert "reproduce it in a new cell" in result.details


def test_ring_with_simultaneous_steps_passes():
    def ring_allreduce(buffers, send):                         # every step: all messages read, then delivered
        P = len(buffers)
        mem = [[c.copy() for c in np.array_split(b.ravel(), P)] for b in buffers]
        for phase in ("rs", "ag"):
            for k in range(P - 1):
                msgs = []
                for i in range(P):
                    c = (i - k) % P if phase == "rs" else (i + 1 - k) % P
                    msgs.append(((i + 1) % P, c, send(i, (i + 1) % P, mem[i][c])))
                for dst, c, data in msgs:
                    mem[dst][c] = mem[dst][c] + data if phase == "rs" else data
        return [np.concatenate(m).reshape(buffers[0].shape) / P for m in mem]
    _passes("ring_allreduce", ring_allreduce)


def test_ring_that_hangs_is_stopped(monkeypatch):
    monkeypatch.setattr(ch10._exercises["ring_allreduce"], "seconds", 0.5)

    def ring_allreduce(buffers, send):
        while True:
            pass
    _fails("ring_allreduce", ring_allreduce, "too slow", status="too slow")


def test_ring_with_wrong_traffic_is_measured():
    ref = solution(STEM, "ring_allreduce")

    def ring_allreduce(buffers, send):                         # one extra message
        out = ref(buffers, send)
        send(0, 1, buffers[0][:1])
        return out
    _fails("ring_allreduce", ring_allreduce, "the workers sent", mistake="wrong traffic")


def test_ring_whose_result_ignores_the_messages_is_named():
    def ring_allreduce(buffers, send):                         # a buggy ring (all-gather adds), its result thrown away
        P = len(buffers)
        mem = [[c.copy() for c in np.array_split(b.ravel(), P)] for b in buffers]
        for phase in ("rs", "ag"):
            for k in range(P - 1):
                for i in range(P):
                    c = (i - k) % P if phase == "rs" else (i + 1 - k) % P
                    mem[(i + 1) % P][c] = mem[(i + 1) % P][c] + send(i, (i + 1) % P, mem[i][c])
        mean = sum(np.asarray(b, float) for b in buffers) / P
        return [mean.copy() for _ in buffers]
    _fails("ring_allreduce", ring_allreduce, "the result must be assembled from the messages you receive",
           mistake="result not from the messages")


def test_data_parallel_step_with_an_extra_whole_batch_call_is_named():
    def data_parallel_step(params, x, y, workers, lr, grad_fn):   # shards first, then the whole batch decides
        for idx in np.array_split(np.arange(len(x)), workers):
            grad_fn(params, x[idx], y[idx])
        _, g = grad_fn(params, x, y)
        return {k: params[k] - lr * g[k] for k in params}
    _fails("data_parallel_step", data_parallel_step, "grad_fn was called on more rows than one worker's shard",
           mistake="grad_fn on more than a shard")


def test_data_parallel_step_that_never_calls_grad_fn_is_told():
    def data_parallel_step(params, x, y, workers, lr, grad_fn):
        return {k: v.copy() for k, v in params.items()}
    _fails("data_parallel_step", data_parallel_step, "grad_fn was never called", mistake="grad_fn not called")


def test_data_parallel_step_with_overlapping_shards_is_told():
    def data_parallel_step(params, x, y, workers, lr, grad_fn):
        n = len(x)
        grads = [grad_fn(params, x[i:i + n // 2 + 1], y[i:i + n // 2 + 1])[1] for i in range(workers)]
        return {k: params[k] - lr * sum(g[k] for g in grads) / workers for k in params}
    _fails("data_parallel_step", data_parallel_step, "the workers' shards do not cover the batch exactly once",
           mistake="shards")


def test_data_parallel_step_valid_alternatives_pass():
    def strided(params, x, y, workers, lr, grad_fn):           # strided shards, weighted: also the global mean
        n = len(x)
        avg = {k: 0.0 for k in params}
        for p in range(workers):
            _, g = grad_fn(params, x[p::workers], y[p::workers])
            for k in avg:
                avg[k] = avg[k] + len(x[p::workers]) / n * g[k]
        return {k: params[k] - lr * avg[k] for k in params}
    _passes("data_parallel_step", strided)

    def with_the_course_ring(params, x, y, workers, lr, grad_fn):   # the course's all-reduce as a building block
        names = list(params)
        shards = np.array_split(np.arange(len(x)), workers)
        local = []
        for idx in shards:
            _, g = grad_fn(params, x[idx], y[idx])
            local.append(np.concatenate([g[k].ravel() * len(idx) * workers / len(x) for k in names]))
        mean = en.ring_allreduce(local)[0]
        out, start = {}, 0
        for k in names:
            out[k] = params[k] - lr * mean[start:start + params[k].size].reshape(params[k].shape)
            start += params[k].size
        return out
    _passes("data_parallel_step", with_the_course_ring)


def test_data_parallel_step_built_on_the_course_sgd_earns_nothing():
    def data_parallel_step(params, x, y, workers, lr, grad_fn):
        return en.sgd(params, x, y, steps=1, lr=lr).params
    _fails("data_parallel_step", data_parallel_step, "no points for the course's own code", status="course code")

