"""Tests for dlcourse.cnn.torch_impl: the twins, the models, training, augmentation, transfer, scale-up.

Fast: tiny shapes, fixed seeds; the one real training run (digits) takes a few seconds.
No timing asserts (speed lives in benchmarks/).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.cnn import glyphs as G
from dlcourse.cnn import torch_impl as T
from dlcourse.data import load_digits
from dlcourse.training.torch_impl import TrainHistory


@pytest.fixture(scope="module")
def digits():
    return load_digits(0)


# --------------------------------------------------------------------------- the twins

def test_thin_twins_are_torch_functional():
    assert T.conv2d is F.conv2d and T.max_pool2d is F.max_pool2d and T.avg_pool2d is F.avg_pool2d
    x = torch.randn(2, 3, 9, 7)
    assert T.conv2d(x, torch.randn(4, 3, 3, 3), padding=1).shape == (2, 4, 9, 7)      # (N, C_out, H, W)
    assert T.max_pool2d(x, 2).shape == (2, 3, 4, 3)
    assert T.avg_pool2d(x, 3, stride=2, padding=1).shape == (2, 3, 5, 4)


@pytest.mark.parametrize("stride, padding, dilation, groups, bias", [
    (1, 0, 1, 1, True), (2, 1, 1, 1, True), (1, 2, 2, 1, False), ((2, 1), (0, 1), (1, 2), 1, True),
    (1, 1, 1, 2, True), (2, 1, 1, 4, False),  # groups = C_in: depthwise
])
def test_conv_layer_from_numpy_equals_f_conv2d(stride, padding, dilation, groups, bias):
    rng = np.random.default_rng(0)
    c_in, c_out = 4, 8
    x = rng.standard_normal((2, c_in, 9, 8))
    w = rng.standard_normal((c_out, c_in // groups, 3, 3))
    b = rng.standard_normal(c_out) if bias else None
    layer = T.conv_layer_from_numpy(w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert layer.weight.dtype == torch.float64 and (layer.bias is None) == (b is None)
    xt = torch.from_numpy(x).requires_grad_()
    out = layer(xt)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                        stride=stride, padding=padding, dilation=dilation, groups=groups)
    np.testing.assert_allclose(out.detach().numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    # the weights were copied, not shared: changing the array leaves the layer alone
    w[...] = 0
    assert layer.weight.abs().sum() > 0
    out.sum().backward()
    assert layer.weight.grad.shape == (c_out, c_in // groups, 3, 3)


def test_conv_layer_from_numpy_float32():
    w = np.ones((2, 1, 3, 3), dtype=np.float32)
    layer = T.conv_layer_from_numpy(w, np.zeros(2, np.float32), padding=1)
    assert layer.weight.dtype == torch.float32
    out = layer(torch.ones(1, 1, 4, 4))
    assert out[0, 0, 1, 1] == 9 and out[0, 0, 0, 0] == 4  # zero padding at the corner


# --------------------------------------------------------------------------- models

def test_small_cnn_shapes_and_names():
    model = T.SmallCNN(in_channels=1, num_classes=10, width=16)
    x = torch.randn(5, 1, 8, 8)
    assert model(x).shape == (5, 10) and model.features(x).shape == (5, model.num_features)
    assert model.num_features == 32 * 2 * 2
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,), "conv2.weight": (32, 16, 3, 3),
                      "conv2.bias": (32,), "fc.weight": (10, 128), "fc.bias": (10,)}
    assert T.SmallCNN(3, 4, width=8, image_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        T.SmallCNN(image_size=10)


def test_small_cnn_loads_the_numpy_networks_parameters():
    model_np = pytest.importorskip("dlcourse.cnn.model_np")
    if not hasattr(model_np, "init_cnn") or not hasattr(model_np, "cnn_forward"):
        pytest.skip("the NumPy CNN is not there yet")
    params = model_np.init_cnn(seed=0)
    model = T.SmallCNN(width=params["conv1.weight"].shape[0]).double()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in params.items()})
    x = np.random.default_rng(0).random((3, 1, 8, 8))
    logits_np = model_np.cnn_forward({k: np.asarray(v, np.float64) for k, v in params.items()}, x)[0]
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), logits_np, rtol=1e-9, atol=1e-12)


def test_residual_cnn_shapes_and_gradients():
    model = T.ResidualCNN(in_channels=3, num_classes=7, widths=(8, 16, 32), blocks_per_stage=2)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 7) and model.features(x).shape == (4, 32)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) >= 6
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert T.ResidualCNN(1, 10, widths=(4, 8))(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    block = T.ResidualBlock(4, 4)
    assert isinstance(block.shortcut, torch.nn.Identity)  # same shape: the identity path
    assert T.ResidualBlock(4, 8, stride=2)(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)


def test_digits_images(digits):
    images = T.digits_images(digits.x_train)
    assert images.shape == (len(digits.x_train), 1, 8, 8)
    np.testing.assert_array_equal(images[3, 0, 2], digits.x_train[3, 16:24])  # row 2 of image 3
    assert T.digits_images(torch.from_numpy(digits.x_val)).shape == (len(digits.x_val), 1, 8, 8)


# --------------------------------------------------------------------------- training

def test_small_cnn_learns_the_digits():
    model, history, test_acc = T.train_digits_cnn(seed=0, device="cpu", epochs=10)
    assert isinstance(history, TrainHistory) and isinstance(model, T.SmallCNN)
    assert test_acc > 0.95, test_acc
    assert history.epochs == 10 and len(history.val_acc) == 11 and len(history.epoch_seconds) == 10
    assert history.train_loss[-1] < history.train_loss[0] / 5
    assert history.updates[-1] == 10 * int(np.ceil(1257 / 32))
    assert not model.training


def test_train_cnn_is_reproducible_and_leaves_the_global_rng(digits):
    x, y = T.digits_images(digits.x_train[:200]), digits.y_train[:200]
    xv, yv = T.digits_images(digits.x_val[:50]), digits.y_val[:50]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    kw = dict(epochs=2, batch_size=50, augment=T.augmenter(1.0, 10.0), seed=4, device="cpu")
    m1, h1 = T.train_cnn(x, y, xv, yv, **kw)
    m2, h2 = T.train_cnn(x, y, xv, yv, **kw)
    assert torch.rand(1) == before  # the global generator was not touched
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0)
    _, h3 = T.train_cnn(x, y, xv, yv, **{**kw, "seed": 5})
    assert h3.train_loss != h1.train_loss


def test_train_cnn_trains_only_unfrozen_parameters(digits):
    model = T.SmallCNN()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    frozen = model.conv1.weight.detach().clone()
    head = model.fc.weight.detach().clone()
    T.train_cnn(T.digits_images(digits.x_train[:64]), digits.y_train[:64], T.digits_images(digits.x_val[:32]),
                digits.y_val[:32], model=model, epochs=1, batch_size=32, schedule="cosine", device="cpu")
    assert torch.equal(model.conv1.weight, frozen) and not torch.equal(model.fc.weight, head)


def test_train_cnn_rejects_flat_digits_and_unknown_schedule(digits):
    with pytest.raises(ValueError, match="digits_images"):
        T.train_cnn(digits.x_train, digits.y_train, digits.x_val, digits.y_val, epochs=1, device="cpu")
    x = T.digits_images(digits.x_train[:8])
    with pytest.raises(ValueError, match="cosine"):
        T.train_cnn(x, digits.y_train[:8], x, digits.y_train[:8], epochs=1, schedule="step", device="cpu")


@torch.no_grad()
def test_evaluate_cnn_batches_agree(digits):
    model = T.SmallCNN().eval()
    x, y = T.digits_images(digits.x_val), digits.y_val
    whole = T.evaluate_cnn(model, x, y, batch_size=10_000)
    batched = T.evaluate_cnn(model, x, y, batch_size=7)
    assert whole[1] == batched[1] and whole[0] == pytest.approx(batched[0], rel=1e-5)
    logits = model(torch.from_numpy(x))
    assert whole[0] == pytest.approx(float(F.cross_entropy(logits, torch.from_numpy(y))), rel=1e-5)


# --------------------------------------------------------------------------- augmentation

def test_image_affine_equals_chapter_04_affine_digits(digits):
    from dlcourse.training.practice import affine_digits
    rng = np.random.default_rng(0)
    x = digits.x_train[:40].astype(np.float64)
    deg, rows, cols = rng.uniform(-30, 30, 40), rng.uniform(-2, 2, 40), rng.uniform(-2, 2, 40)
    ours = T.image_affine(T.digits_images(x), deg, rows, cols)
    np.testing.assert_allclose(ours.reshape(40, 64), affine_digits(x, deg, rows, cols), atol=1e-12)


def test_image_affine_moves_pixels_as_said():
    x = np.random.default_rng(1).random((3, 2, 5, 7))          # (N, C, H_img, W_img), not square
    zeros = np.zeros(3)
    np.testing.assert_allclose(T.image_affine(x, zeros, zeros, zeros), x, atol=1e-12)
    down_right = T.image_affine(x, zeros, [1, 0, 0], [0, 2, 0])
    np.testing.assert_allclose(down_right[0, :, 1:], x[0, :, :-1], atol=1e-12)   # one row down
    assert np.all(down_right[0, :, 0] == 0)                                       # zeros come in
    np.testing.assert_allclose(down_right[1, :, :, 2:], x[1, :, :, :-2], atol=1e-12)
    turned = T.image_affine(x, [90, 0, 0], zeros, zeros)
    # counter-clockwise: the right part of a row goes up (the central 5 x 5 square, exactly)
    np.testing.assert_allclose(turned[0, :, 0, 1:6], x[0, :, :, 5], atol=1e-12)
    mirrored = T.image_affine(x, zeros, zeros, zeros, flip=[True, False, True])
    np.testing.assert_allclose(mirrored[0], x[0, :, :, ::-1], atol=1e-12)
    np.testing.assert_allclose(mirrored[1], x[1], atol=1e-12)


def test_image_augment_shapes_ranges_types():
    rng = np.random.default_rng(0)
    x = rng.random((16, 3, 12, 12)).astype(np.float32)
    out = T.image_augment(x, rng, max_shift=2, max_degrees=15, flip=True)
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6 and not np.allclose(out, x)
    xt = torch.from_numpy(x)
    out_t = T.augmenter(1.0, 5.0)(xt, np.random.default_rng(1))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == xt.shape and out_t.dtype == torch.float32
    np.testing.assert_allclose(T.image_augment(x, np.random.default_rng(2), 0.0, 0.0), x, atol=1e-6)
    a = T.image_augment(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, T.image_augment(x, np.random.default_rng(3)))  # the rng decides


# --------------------------------------------------------------------------- transfer, scale-up

def test_transfer_study_structure_on_a_tiny_budget():
    result = T.transfer_study(labels_per_class=(1, 3), seeds=(0, 1), pretrain_steps=5, steps=3, width=4, variants=1)
    assert result.labels_per_class == (1, 3) and result.seeds == (0, 1)
    assert list(result.accuracy) == list(T.TRANSFER_METHODS) == ["frozen", "finetune", "scratch"]
    for acc in result.accuracy.values():
        assert acc.shape == (2, 2) and np.all((0 <= acc) & (acc <= 1))
    assert 0 <= result.pretrain_accuracy <= 1 and result.num_source == len(G.GLYPH_CHARS) * len(G.GLYPH_FONTS)
    assert result.seconds > 0
    assert set(result.mean()) == set(T.TRANSFER_METHODS) and result.mean()["frozen"].shape == (2,)
    np.testing.assert_array_equal(result.gain("frozen"), result.accuracy["frozen"] - result.accuracy["scratch"])
    table = result.table()
    assert "frozen" in table and len(table.splitlines()) == 3


def test_frozen_transfer_trains_only_the_new_layer():
    """The frozen method must leave the pretrained convolutions as they were: check through _fit_steps."""
    torch.manual_seed(0)
    model = T.SmallCNN(1, 10, width=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("fc."))
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    T._fit_steps(model, x, y, 5, 1e-2, 10, None, np.random.default_rng(0))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("fc."), n


def test_finetune_uses_two_learning_rates():
    """body_lr: the pretrained layers move less than the new head (the same gradients' scale aside)."""
    torch.manual_seed(0)
    model = T.SmallCNN(1, 10, width=4)
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    seen = {}
    original = torch.optim.AdamW.__init__

    def spy(self, params, *args, **kwargs):
        params = list(params)
        seen["lrs"] = sorted(g["lr"] for g in params)
        original(self, params, *args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "__init__", spy)
        T._fit_steps(model, x, y, 2, 1e-2, 10, None, np.random.default_rng(0), body_lr=1e-3)
    assert seen["lrs"] == [1e-3, 1e-2]


def test_glyphs_are_every_letter_in_every_font_centred_in_the_box():
    images, labels, fonts = G.render_glyphs()
    assert fonts == G.GLYPH_FONTS                       # all 20 text fonts ship with matplotlib 3.10 and 3.11
    assert images.shape == (len(G.GLYPH_CHARS) * len(fonts), 32, 32) and images.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(labels), [len(fonts)] * len(G.GLYPH_CHARS))
    assert images.min() >= 0 and images.max() <= 1
    assert np.all(images.reshape(len(images), -1).max(axis=1) > 0.5)      # every glyph has ink
    assert np.all(images[:, :2].max(axis=(1, 2)) < 0.05)                 # a 2-pixel margin, top
    assert np.all(images[:, :, :2].max(axis=(1, 2)) < 0.05)              # and left
    images2, _, _ = G.render_glyphs.__wrapped__()
    np.testing.assert_array_equal(images, images2)                        # deterministic
    # every class is its own picture: averaged over the fonts, the closest two letters are still
    # far apart compared with a typical pair (l and I, o and O... were left out for that reason)
    per_font = images.reshape(len(G.GLYPH_CHARS), len(fonts), -1)                 # (letters, fonts, pixels)
    distance = np.abs(per_font[:, None] - per_font[None]).sum(-1).mean(-1)      # (letters, letters)
    off_diagonal = distance[~np.eye(len(distance), dtype=bool)]
    assert off_diagonal.min() > 0.25 * np.median(off_diagonal)


def test_glyph_images_are_jittered_8x8_digit_like_images():
    x, y = G.glyph_images(variants=2, seed=0)
    assert x.shape == (2 * len(G.GLYPH_CHARS) * len(G.GLYPH_FONTS), 1, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x.amax(dim=(1, 2, 3)), torch.ones(len(x)))
    assert y.shape == (len(x),) and int(y.max()) == len(G.GLYPH_CHARS) - 1
    n = len(x) // 2
    assert not torch.allclose(x[:n], x[n:])                               # the two copies differ
    x2, _ = G.glyph_images(variants=2, seed=0)
    assert torch.equal(x, x2)


def test_few_labels_are_balanced_and_nested():
    y = np.repeat(np.arange(5), 20)
    order = np.random.default_rng(0).permutation(len(y))
    two, five = T._few_labels(y, 2, order), T._few_labels(y, 5, order)
    np.testing.assert_array_equal(np.bincount(y[two]), [2] * 5)
    np.testing.assert_array_equal(np.bincount(y[five]), [5] * 5)
    assert set(two) <= set(five)


def test_scale_up_is_skipped_on_the_cpu(capsys):
    assert T.scale_up(device="cpu") is None
    assert "skipped" in capsys.readouterr().out


def test_scale_up_cpu_path_on_a_tiny_input(capsys):
    rng = np.random.default_rng(0)
    x = rng.random((24, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    result = T.scale_up((x, y, x[:8], y[:8]), epochs=2, batch_size=8, widths=(4, 8), cpu_steps=2,
                        device="cpu", run_on_cpu=True)
    out = capsys.readouterr().out
    assert "per epoch" in out and "epoch 2" in out
    assert result.n_train == 24 and len(result.epoch_seconds) == 2 and result.cpu_seconds_per_epoch > 0
    assert result.speedup > 0 and 0 <= result.test_acc <= 1 and result.history.epochs == 2
