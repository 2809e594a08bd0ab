"""Chapter 05 · convolution and pooling in NumPy == F.conv2d / F.max_pool2d / F.avg_pool2d, forward and gradients.

Property-style: many random small configurations (seeded), float64, every gradient
through torch autograd.  Configurations whose output would be empty are skipped at
draw time (and tested separately: they must raise).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.cnn import numpy_impl as cnn
from dlcourse.gradcheck import numerical_grad, rel_error

RTOL, ATOL = 1e-10, 1e-12
DRAWS, BLOCKS = 200, 8          # DRAWS random configurations per function, split in BLOCKS tests


def _t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


def _pair_or_int(rng, low, high):
    """An int, or (half the time) a non-square (height, width) pair, from [low, high]."""
    if rng.random() < 0.5:
        return int(rng.integers(low, high + 1))
    return tuple(int(v) for v in rng.integers(low, high + 1, size=2))


def _as_pair(v):
    return (v, v) if isinstance(v, int) else v


def draw_conv_config(rng):
    """A random small convolution whose output is not empty: N 1-3, C_in 1-4, groups, kernel 1-4, ..."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3, 4]))
        c_in = groups * int(rng.integers(1, 4 // groups + 1))        # C_in <= 4, a multiple of groups
        c_out = groups * int(rng.integers(1, 3))
        if rng.random() < 0.2:  # depthwise: one input channel per group
            groups = c_in
            c_out = c_in * int(rng.integers(1, 3))
        cfg = dict(
            n=int(rng.integers(1, 4)), c_in=c_in, c_out=c_out, groups=groups,
            size=(int(rng.integers(1, 10)), int(rng.integers(1, 10))),
            kernel=(int(rng.integers(1, 5)), int(rng.integers(1, 5))),
            stride=_pair_or_int(rng, 1, 3), padding=_pair_or_int(rng, 0, 2), dilation=_pair_or_int(rng, 1, 3),
            bias=bool(rng.random() < 0.8),
        )
        out = [cnn.conv_output_size(s, k, st, p, d) for s, k, st, p, d in
               zip(cfg["size"], cfg["kernel"], _as_pair(cfg["stride"]), _as_pair(cfg["padding"]),
                   _as_pair(cfg["dilation"]))]
        if min(out) >= 1:
            return cfg


def conv_case(cfg, rng):
    x = rng.standard_normal((cfg["n"], cfg["c_in"], *cfg["size"]))
    w = rng.standard_normal((cfg["c_out"], cfg["c_in"] // cfg["groups"], *cfg["kernel"]))
    b = rng.standard_normal(cfg["c_out"]) if cfg["bias"] else None
    kw = {k: cfg[k] for k in ("stride", "padding", "dilation", "groups")}
    return x, w, b, kw


def torch_conv(x, w, b, kw, dout):
    xt, wt = _t(x, True), _t(w, True)
    bt = None if b is None else _t(b, True)
    out = F.conv2d(xt, wt, bt, **kw)
    out.backward(_t(dout))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def assert_numerically_equal(analytic, numeric):
    """Centred differences over sums of dozens of products carry ~1e-9 of rounding, so an entry
    near zero can show a large *relative* error; a wrong backward pass is off by O(1)."""
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert rel_error(analytic, numeric) < 1e-4


# --------------------------------------------------------------------------- convolution vs torch

def test_draws_cover_the_grid():
    """The random configurations really visit groups, depthwise, non-square shapes, strides, dilations."""
    rng = np.random.default_rng(0)
    cfgs = [draw_conv_config(rng) for _ in range(DRAWS)]
    assert {c["groups"] for c in cfgs} >= {1, 2, 3, 4}
    assert any(c["groups"] == c["c_in"] > 1 and c["c_out"] > c["c_in"] for c in cfgs)  # depthwise, multiplier 2
    assert any(c["size"][0] != c["size"][1] for c in cfgs) and any(c["kernel"][0] != c["kernel"][1] for c in cfgs)
    for key, values in (("stride", {1, 2, 3}), ("padding", {0, 1, 2}), ("dilation", {1, 2, 3})):
        seen = {v for c in cfgs for v in _as_pair(c[key])}
        assert seen == values, key
    assert any(not c["bias"] for c in cfgs)


@pytest.mark.parametrize("block", range(BLOCKS))
def test_conv2d_matches_torch_forward_and_gradients(block):
    rng = np.random.default_rng(100 + block)
    for _ in range(DRAWS // BLOCKS):
        cfg = draw_conv_config(rng)
        x, w, b, kw = conv_case(cfg, rng)
        out, cache = cnn.conv2d_forward(x, w, b, **kw)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = cnn.conv2d_backward(dout, cache)
        out_t, dx_t, dw_t, db_t = torch_conv(x, w, b, kw, dout)
        assert out.shape == out_t.shape, cfg
        for name, mine, ref in (("out", out, out_t), ("dx", dx, dx_t), ("dw", dw, dw_t)):
            np.testing.assert_allclose(mine, ref, rtol=RTOL, atol=ATOL, err_msg=f"{name} {cfg}")
        if b is None:
            assert db is None
        else:
            np.testing.assert_allclose(db, db_t, rtol=RTOL, atol=ATOL, err_msg=f"db {cfg}")


@pytest.mark.parametrize("block", range(2))
def test_conv2d_loops_equals_vectorised(block):
    rng = np.random.default_rng(200 + block)
    for _ in range(40):
        cfg = draw_conv_config(rng)
        x, w, b, kw = conv_case(cfg, rng)
        np.testing.assert_allclose(cnn.conv2d_loops(x, w, b, **kw), cnn.conv2d_forward(x, w, b, **kw)[0],
                                   rtol=RTOL, atol=ATOL, err_msg=str(cfg))


@pytest.mark.parametrize("kw", [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2),
    dict(stride=2, padding=1, dilation=2, groups=4),    # depthwise
    dict(stride=(1, 3), padding=(2, 0), dilation=(3, 1), groups=1),
])
def test_conv2d_backward_numerical(kw):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 4 // kw["groups"], 3, 2))
    b = rng.standard_normal(4)
    out, cache = cnn.conv2d_forward(x, w, b, **kw)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cnn.conv2d_backward(dout, cache)
    assert_numerically_equal(dx, numerical_grad(lambda v: cnn.conv2d_forward(v, w, b, **kw)[0], x, dout))
    assert_numerically_equal(dw, numerical_grad(lambda v: cnn.conv2d_forward(x, v, b, **kw)[0], w, dout))
    assert_numerically_equal(db, numerical_grad(lambda v: cnn.conv2d_forward(x, w, v, **kw)[0], b, dout))


def test_conv2d_float32_stays_float32_and_inputs_untouched():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    copies = [a.copy() for a in (x, w, b)]
    out, cache = cnn.conv2d_forward(x, w, b, padding=1)
    dx, dw, db = cnn.conv2d_backward(np.ones_like(out), cache)
    assert {a.dtype for a in (out, dx, dw, db)} == {np.dtype(np.float32)}
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_conv2d_refuses_bad_arguments():
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(ValueError, match="groups"):
        cnn.conv2d_forward(x, np.zeros((3, 2, 3, 3)), groups=2)      # 3 output channels, 2 groups
    with pytest.raises(ValueError, match="input channels per group"):
        cnn.conv2d_forward(x, np.zeros((4, 4, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="does not fit"):
        cnn.conv2d_forward(x, np.zeros((2, 4, 3, 3)), dilation=3)    # span 7 > 5
    with pytest.raises(ValueError, match=r"\(C_out,\)"):
        cnn.conv2d_forward(x, np.zeros((2, 4, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="pair"):
        cnn.conv2d_forward(x, np.zeros((2, 4, 3, 3)), stride=(1, 1, 1))


# --------------------------------------------------------------------------- output size

def test_conv_output_size_matches_torch_shapes():
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(300):
        size, kernel = int(rng.integers(1, 12)), int(rng.integers(1, 5))
        stride, padding, dilation = int(rng.integers(1, 4)), int(rng.integers(0, 3)), int(rng.integers(1, 4))
        expected = cnn.conv_output_size(size, kernel, stride, padding, dilation)
        x, w = torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1)
        if expected < 1:
            with pytest.raises(RuntimeError):
                F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
            continue
        assert F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation).shape[2] == expected
        checked += 1
    assert checked > 150
    assert cnn.conv_output_size(28, 5) == 24 and cnn.conv_output_size(28, 3, padding=1) == 28
    assert cnn.conv_output_size(7, 3, stride=2) == 3 and cnn.conv_output_size(8, 3, stride=2) == 3
    assert cnn.conv_output_size(10, 3, dilation=2) == 6


# --------------------------------------------------------------------------- pooling vs torch

def draw_pool_config(rng):
    while True:
        kernel = _pair_or_int(rng, 1, 4)
        k = _as_pair(kernel)
        stride = None if rng.random() < 0.3 else _pair_or_int(rng, 1, 3)
        padding = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)   # PyTorch: at most half the kernel
        cfg = dict(n=int(rng.integers(1, 4)), c=int(rng.integers(1, 5)),
                   size=(int(rng.integers(1, 10)), int(rng.integers(1, 10))),
                   kernel_size=kernel, stride=stride, padding=padding)
        st = k if stride is None else _as_pair(stride)
        if min(cnn.conv_output_size(s, kk, ss, p) for s, kk, ss, p in zip(cfg["size"], k, st, padding)) >= 1:
            return cfg


POOLS = {"max": (cnn.maxpool2d_forward, cnn.maxpool2d_backward, F.max_pool2d),
         "avg": (cnn.avgpool2d_forward, cnn.avgpool2d_backward, F.avg_pool2d)}


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("kind", POOLS)
def test_pool_matches_torch(kind, ties):
    """Forward and dx over random configurations; with ties, integer inputs in {0, 1, 2} tie in most windows."""
    forward, backward, torch_fn = POOLS[kind]
    rng = np.random.default_rng(300 + 2 * list(POOLS).index(kind) + ties)
    tied_windows = 0
    for _ in range(DRAWS):
        cfg = draw_pool_config(rng)
        shape = (cfg["n"], cfg["c"], *cfg["size"])
        x = rng.integers(0, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)
        kw = {k: cfg[k] for k in ("kernel_size", "stride", "padding")}
        out, cache = forward(x, **kw)
        dout = rng.standard_normal(out.shape)
        dx = backward(dout, cache)
        xt = _t(x, True)
        out_t = torch_fn(xt, **kw)
        out_t.backward(_t(dout))
        assert out.shape == tuple(out_t.shape), cfg
        np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=f"out {cfg}")
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"dx {cfg}")
        if kind == "max" and ties:
            tied_windows += int(np.sum(F.max_pool2d(xt.detach(), **kw).numpy() == 2) > 0)
    if kind == "max" and ties:
        assert tied_windows > DRAWS // 2


def test_maxpool_tie_goes_to_first_maximum_only():
    x = np.array([[[[1., 3., 3.],
                    [3., 0., 3.]]]])
    out, cache = cnn.maxpool2d_forward(x, kernel_size=(2, 3))
    assert out.item() == 3
    dx = cnn.maxpool2d_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, [[[[0, 1, 0], [0, 0, 0]]]])  # first 3 in row-major order, once


def test_maxpool_padding_is_minus_infinity_and_avgpool_counts_padding():
    x = -np.ones((1, 1, 2, 2))
    out, _ = cnn.maxpool2d_forward(x, kernel_size=2, stride=1, padding=1)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 3, 3)))      # zero padding would give 0 at the corners
    out, _ = cnn.avgpool2d_forward(np.ones((1, 1, 2, 2)), kernel_size=2, stride=1, padding=1)
    np.testing.assert_allclose(out[0, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])


@pytest.mark.parametrize("kind", POOLS)
def test_pool_backward_numerical(kind):
    forward, backward, _ = POOLS[kind]
    rng = np.random.default_rng(5)
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0   # distinct values: no tie, max is smooth
    kw = dict(kernel_size=(3, 2), stride=(2, 1), padding=1)
    out, cache = forward(x, **kw)
    dout = rng.standard_normal(out.shape)
    assert_numerically_equal(backward(dout, cache), numerical_grad(lambda v: forward(v, **kw)[0], x, dout))


def test_pool_refuses_bad_arguments():
    with pytest.raises(ValueError, match="half"):
        cnn.maxpool2d_forward(np.zeros((1, 1, 6, 6)), kernel_size=2, padding=2)
    with pytest.raises(ValueError, match="does not fit"):
        cnn.avgpool2d_forward(np.zeros((1, 1, 1, 6)), kernel_size=2)
    with pytest.raises(ValueError, match=r"\(N, C, H_img, W_img\)"):
        cnn.maxpool2d_forward(np.zeros((6, 6)))


def test_pool_accepts_integers():
    out, _ = cnn.maxpool2d_forward(np.arange(16).reshape(1, 1, 4, 4))
    assert out.dtype == np.float64 and out.ravel().tolist() == [5, 7, 13, 15]


# --------------------------------------------------------------------------- receptive field

def test_receptive_field_known_values():
    assert cnn.receptive_field([(3, 1, 1), (3, 1, 1)]) == [(3, 1), (5, 1)]
    assert cnn.receptive_field([(3, 1, 1), (2, 2, 1), (3, 1, 1)]) == [(3, 1), (4, 2), (8, 2)]
    assert cnn.receptive_field([(3, 1, 1)] * 3) == [(3, 1), (5, 1), (7, 1)]    # three 3x3 = one 7x7
    assert cnn.receptive_field([(3, 1, 2)]) == [(5, 1)]                        # dilation 2 spans 5
    assert cnn.receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)])[-1] == (15, 1)   # dilations 1, 2, 4
    assert cnn.receptive_field([(5,), (2, 2)]) == [(5, 1), (6, 2)]            # stride, dilation default to 1
    assert cnn.receptive_field([]) == []


STACKS = [
    [("conv", 3, 1, 1), ("conv", 3, 1, 1)],
    [("conv", 3, 1, 1), ("pool", 2, 2, 1), ("conv", 3, 1, 1)],
    [("conv", 5, 2, 1), ("conv", 3, 1, 2), ("pool", 3, 2, 1), ("conv", 3, 1, 1)],
    [("conv", 3, 1, 1), ("conv", 3, 1, 2), ("conv", 3, 1, 4)],
    [("conv", 7, 2, 1), ("pool", 3, 2, 1), ("conv", 3, 2, 1), ("conv", 1, 1, 1)],
]


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: "-".join(f"{k}{n}s{st}d{d}" for k, n, st, d in s))
def test_receptive_field_is_what_autograd_sees(stack):
    """The input pixels that one output unit's gradient reaches span exactly the receptive field."""
    expected = cnn.receptive_field([(k, s, d) for _, k, s, d in stack])[-1][0]
    size = 2 * expected + 20
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    h = x
    for kind, k, s, d in stack:
        if kind == "conv":   # positive weights: no cancellation can hide a pixel
            h = F.conv2d(h, torch.ones(1, 1, k, k, dtype=torch.float64), stride=s, dilation=d)
        else:                # average pooling: every pixel of the window matters (max would pick one)
            h = F.avg_pool2d(h, k, stride=s)
        h = h + 1.0
    p, q = h.shape[2] // 2, h.shape[3] // 2
    h[0, 0, p, q].backward()
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    assert rows.max() - rows.min() + 1 == expected
    assert cols.max() - cols.min() + 1 == expected
