"""Chapter 05: the NumPy CNN (dlcourse.cnn.model_np) equals its PyTorch twin, forward and every gradient, and learns."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.cnn import model_np as cnn
from dlcourse.data import DigitsSplit, load_digits
from dlcourse.gradcheck import numerical_grad, rel_error
from dlcourse.optim.numpy_impl import Optimizer

# (N, C_in, (H_img, W_img), (C1, C2), K): the digits' shape, and odd ones (non-square, several channels)
CONFIGS = [
    (5, 1, (8, 8), (16, 32), 10),
    (3, 2, (4, 12), (3, 5), 4),
    (1, 3, (8, 4), (1, 2), 2),
]


def _random_params(config, seed, bias_shift=0.0):
    """float64 parameters with random (non-zero) biases, so that every gradient is exercised."""
    _, c_in, image_size, channels, k = config
    rng = np.random.default_rng(seed)
    params = cnn.init_cnn(rng, in_channels=c_in, channels=channels, num_classes=k, image_size=image_size,
                          dtype=np.float64)
    for name in ("conv1.bias", "conv2.bias", "fc.bias"):
        params[name] = rng.standard_normal(params[name].shape) * 0.5 + bias_shift
    return params


def _batch(config, seed):
    n, c_in, (height, width), _, k = config
    rng = np.random.default_rng(seed + 100)
    return rng.standard_normal((n, c_in, height, width)), rng.integers(0, k, size=n)


def _torch_loss_and_grads(params, x, y):
    model = cnn.cnn_params_to_torch(params)
    logits = model(torch.from_numpy(x))
    loss = F.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    return logits.detach().numpy(), loss.item(), grads


# --------------------------------------------------------------------------- parameters

def test_init_cnn_names_shapes_dtype_and_seed():
    params = cnn.init_cnn(0)
    assert tuple(params) == cnn.PARAM_NAMES
    shapes = {name: p.shape for name, p in params.items()}
    assert shapes == {"conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,), "conv2.weight": (32, 16, 3, 3),
                      "conv2.bias": (32,), "fc.weight": (10, 128), "fc.bias": (10,)}
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(np.array_equal(params[k], cnn.init_cnn(0)[k]) for k in params)          # seeded
    assert not np.array_equal(params["conv1.weight"], cnn.init_cnn(1)["conv1.weight"])
    assert all(not params[k].any() for k in ("conv1.bias", "conv2.bias", "fc.bias"))  # biases start at zero
    assert cnn.init_cnn(0, dtype=np.float64)["fc.weight"].dtype == np.float64


def test_init_cnn_is_he_normal():
    params = cnn.init_cnn(0, in_channels=4, channels=(64, 64), image_size=(16, 16), dtype=np.float64)
    # std sqrt(2 / fan_in), fan_in = C_in * kH * kW for a convolution (D for the dense layer)
    for name, fan_in in (("conv1.weight", 4 * 9), ("conv2.weight", 64 * 9), ("fc.weight", 64 * 4 * 4)):
        w = params[name]
        assert abs(w.std() / math.sqrt(2 / fan_in) - 1) < 0.05, name
        assert abs(w.mean()) < 0.1 * w.std(), name


def test_init_cnn_refuses_image_sizes_the_poolings_cannot_halve_twice():
    with pytest.raises(ValueError, match="divisible by 4"):
        cnn.init_cnn(0, image_size=(6, 8))


def test_torch_twin_has_the_same_names_order_and_weights():
    params = cnn.init_cnn(3, dtype=np.float64)
    model = cnn.cnn_params_to_torch(params)
    assert [name for name, _ in model.named_parameters()] == list(cnn.PARAM_NAMES)
    for name, p in model.named_parameters():
        assert p.dtype == torch.float64
        np.testing.assert_array_equal(p.detach().numpy(), params[name])
    params["fc.bias"][0] = 123.0  # a copy: the model does not share the caller's arrays
    assert model.fc.bias[0].item() != 123.0


# --------------------------------------------------------------------------- NumPy == PyTorch

def _config_id(c):
    return f"N{c[0]}-Cin{c[1]}-{c[2][0]}x{c[2][1]}-C{c[3][0]}.{c[3][1]}-K{c[4]}"


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_and_every_gradient_match_torch(config, seed):
    params = _random_params(config, seed)
    x, y = _batch(config, seed)
    logits, _ = cnn.cnn_forward(params, x)
    loss, grads = cnn.cnn_loss_and_grads(params, x, y)
    t_logits, t_loss, t_grads = _torch_loss_and_grads(params, x, y)
    assert logits.shape == (config[0], config[4]) and logits.dtype == np.float64
    np.testing.assert_allclose(logits, t_logits, rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(t_loss, rel=1e-10)
    assert tuple(grads) == cnn.PARAM_NAMES
    for name in cnn.PARAM_NAMES:
        assert grads[name].shape == params[name].shape, name
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_the_torch_side_smallcnn_loads_the_numpy_parameters_and_agrees():
    """torch_impl.SmallCNN (the lesson's PyTorch twin) takes our state_dict as it is: same logits, same gradients."""
    from dlcourse.cnn.torch_impl import SmallCNN
    config = CONFIGS[0]
    params = _random_params(config, 3)
    x, y = _batch(config, 3)
    model = SmallCNN(width=16).double()
    model.load_state_dict({name: torch.from_numpy(value) for name, value in params.items()})
    logits = model(torch.from_numpy(x))
    F.cross_entropy(logits, torch.from_numpy(y)).backward()
    np.testing.assert_allclose(cnn.cnn_forward(params, x)[0], logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    _, grads = cnn.cnn_loss_and_grads(params, x, y)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_gradients_match_torch_with_many_max_pool_ties():
    """Strongly negative biases make most ReLU outputs 0: many pooling windows are all ties."""
    config = CONFIGS[0]
    params = _random_params(config, 7, bias_shift=-1.5)
    x, y = _batch(config, 7)
    _, caches = cnn.cnn_forward(params, x)
    assert (~caches.relu1.mask).mean() > 0.5  # most of the first feature maps are zero
    loss, grads = cnn.cnn_loss_and_grads(params, x, y)
    _, t_loss, t_grads = _torch_loss_and_grads(params, x, y)
    assert loss == pytest.approx(t_loss, rel=1e-10)
    for name in cnn.PARAM_NAMES:
        np.testing.assert_allclose(grads[name], t_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_backward_with_an_upstream_gradient_matches_autograd():
    """cnn_backward(dlogits) is the vector-Jacobian product for any dlogits, not only the loss's."""
    config = CONFIGS[1]
    params = _random_params(config, 2)
    x, _ = _batch(config, 2)
    dlogits = np.random.default_rng(5).standard_normal((config[0], config[4]))
    _, caches = cnn.cnn_forward(params, x)
    grads = cnn.cnn_backward(dlogits, caches)
    model = cnn.cnn_params_to_torch(params)
    model(torch.from_numpy(x)).backward(torch.from_numpy(dlogits))
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_forward_and_backward_leave_their_inputs_alone():
    params = _random_params(CONFIGS[0], 0)
    x, y = _batch(CONFIGS[0], 0)
    before = {k: v.copy() for k, v in params.items()}
    x_before = x.copy()
    cnn.cnn_loss_and_grads(params, x, y)
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert np.array_equal(x, x_before)


def test_float32_stays_float32():
    params = cnn.init_cnn(0)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    _, grads = cnn.cnn_loss_and_grads(params, x, np.arange(4))
    assert all(g.dtype == np.float32 for g in grads.values())


def test_adam_steps_match_torch_optim_on_the_twin():
    """Three steps of our Adam on the NumPy CNN = three steps of torch.optim.Adam on the torch twin."""
    config = CONFIGS[1]
    params = _random_params(config, 4)
    model = cnn.cnn_params_to_torch(params)
    opt = Optimizer(list(params.values()), "adam", lr=1e-2)
    t_opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):
        x, y = _batch(config, 10 + step)
        _, grads = cnn.cnn_loss_and_grads(params, x, y)
        params = dict(zip(params, opt.step(list(params.values()), [grads[k] for k in params])))
        t_opt.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        t_opt.step()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(params[name], p.detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


# --------------------------------------------------------------------------- numerical gradient check

def test_numerical_gradient_check_on_a_tiny_cnn():
    config = (2, 1, (4, 4), (2, 3), 4)  # D = 3 * 1 * 1: every parameter checked, 93 of them
    params = _random_params(config, 11)
    x, y = _batch(config, 11)
    _, grads = cnn.cnn_loss_and_grads(params, x, y)
    for name in cnn.PARAM_NAMES:
        def loss_of(value, name=name):
            return cnn.cnn_loss_and_grads({**params, name: value}, x, y)[0]
        numeric = numerical_grad(loss_of, params[name])
        assert rel_error(grads[name], numeric) < 1e-6, name


# --------------------------------------------------------------------------- data and evaluation

def test_digits_to_images_is_a_reshape_of_the_rows():
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 64)
    images = cnn.digits_to_images(x)
    assert images.shape == (2, 1, 8, 8) and np.shares_memory(images, x)
    assert images[1, 0, 2, 3] == x[1, 2 * 8 + 3]  # row 2, column 3 of the second digit


def test_evaluate_cnn_batches_agree_with_one_batch():
    params = _random_params(CONFIGS[0], 0)
    x, y = _batch((50,) + CONFIGS[0][1:], 0)
    loss_all, acc_all = cnn.evaluate_cnn(params, x, y, batch_size=50)
    loss_parts, acc_parts = cnn.evaluate_cnn(params, x, y, batch_size=7)  # uneven last batch
    logits, _ = cnn.cnn_forward(params, x)
    assert loss_parts == pytest.approx(loss_all, rel=1e-12)
    assert acc_parts == acc_all == np.mean(logits.argmax(1) == y)


# --------------------------------------------------------------------------- training (slow, seconds)

@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _small(data, n_train=200):
    return DigitsSplit(data.x_train[:n_train], data.y_train[:n_train], data.x_val[:60], data.y_val[:60],
                       data.x_test[:60], data.y_test[:60])


def test_training_is_seeded_and_records_a_history(digits):
    calls = []
    small = _small(digits)
    params, history = cnn.train_cnn_numpy(small, epochs=2, batch_size=64, seed=3, progress=False,
                                          channels=(4, 8), callback=calls.append,
                                          schedule=lambda e: [1e-2, 5e-3][e])
    again, _ = cnn.train_cnn_numpy(small, epochs=2, batch_size=64, seed=3, progress=False, channels=(4, 8),
                                   schedule=lambda e: [1e-2, 5e-3][e])
    assert all(np.array_equal(params[k], again[k]) for k in params)  # same seed, same weights
    assert len(calls) == 2 and calls[-1] is history
    assert history.epochs == 2 and history.lr == [1e-2, 5e-3]
    assert len(history.step_loss) == 2 * math.ceil(200 / 64)
    assert len(history.train_loss) == len(history.val_loss) == len(history.val_acc) == 3
    assert 0 <= history.test_acc <= 1 and history.seconds > 0
    assert params["conv2.weight"].shape == (8, 4, 3, 3) and params["fc.weight"].dtype == np.float32


def test_training_schedules(digits):
    small = _small(digits, n_train=64)
    common = dict(epochs=3, batch_size=64, progress=False, channels=(2, 2), lr=1e-2)
    assert cnn.train_cnn_numpy(small, schedule="constant", **common)[1].lr == [1e-2] * 3
    cosine = cnn.train_cnn_numpy(small, **common)[1].lr  # the default: cosine from lr towards 0
    np.testing.assert_allclose(cosine, [1e-2, 0.75e-2, 0.25e-2])
    with pytest.raises(ValueError, match="schedule"):
        cnn.train_cnn_numpy(small, schedule="step", **common)


@pytest.mark.slow
def test_short_training_run_learns_the_digits(digits):
    params, history = cnn.train_cnn_numpy(digits, epochs=3, seed=0, progress=False)
    assert history.test_acc > 0.90
    assert history.val_acc[-1] > 0.90 > history.val_acc[0]
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    # the trained weights give the same predictions in the torch twin
    model = cnn.cnn_params_to_torch(params)
    x_test = cnn.digits_to_images(digits.x_test)
    with torch.no_grad():
        t_pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    assert np.mean(t_pred == digits.y_test) == pytest.approx(history.test_acc, abs=1 / len(x_test))
