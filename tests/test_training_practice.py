"""Chapter 04's practice module: standardisation, splits, augmentation, init, depth statistics, early stopping, search."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.preprocessing import StandardScaler

from dlcourse.training import practice as pr


def digits_x():
    from dlcourse.data import load_digits
    return load_digits(0)


# --------------------------------------------------------------------------- standardisation

def test_standardizer_equals_sklearn_standard_scaler_including_constant_pixels():
    d = digits_x()
    mean, scale = pr.fit_standardizer(d.x_train.astype(np.float64))
    scaler = StandardScaler().fit(d.x_train.astype(np.float64))
    np.testing.assert_allclose(mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(scale, scaler.scale_, rtol=1e-12)
    assert (scale == 1.0).sum() >= 1, "digits have pixels that are constant on the training set"
    out = pr.apply_standardizer(d.x_test.astype(np.float64), mean, scale)
    np.testing.assert_allclose(out, scaler.transform(d.x_test.astype(np.float64)), rtol=1e-10, atol=1e-12)
    assert np.isfinite(out).all()


def test_standardizer_fitted_on_train_leaves_other_splits_not_exactly_standard():
    d = digits_x()
    mean, scale = pr.fit_standardizer(d.x_train)
    train = pr.apply_standardizer(d.x_train, mean, scale)
    test = pr.apply_standardizer(d.x_test, mean, scale)
    assert np.abs(train.mean(axis=0)).max() < 1e-5
    assert np.abs(test.mean(axis=0)).max() > 0.01  # the test set keeps its own small offsets: no leak


def test_stratified_split_is_a_partition_with_class_proportions():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    parts = pr.stratified_split(y, (0.6, 0.2, 0.2), np.random.default_rng(1))
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(y)))
    for part, frac in zip(parts, (0.6, 0.2, 0.2)):
        counts = np.bincount(y[part], minlength=4)
        np.testing.assert_allclose(counts, frac * np.array([50, 30, 15, 5]), atol=1)
    with pytest.raises(ValueError, match="sum to 1"):
        pr.stratified_split(y, (0.5, 0.2))


def test_one_vs_rest_is_imbalanced():
    d = digits_x()
    _, yb = pr.one_vs_rest_imbalanced(d.x_train, d.y_train, positive=9)
    assert 0.08 < yb.mean() < 0.12


# --------------------------------------------------------------------------- augmentation

def test_affine_identity_and_integer_shift_equal_a_zero_filled_roll():
    rng = np.random.default_rng(0)
    x = rng.random((5, 64))
    zeros = np.zeros(5)
    np.testing.assert_allclose(pr.affine_digits(x, zeros, zeros, zeros), x, atol=1e-12)
    shifted = pr.affine_digits(x, zeros, np.ones(5), -np.ones(5)).reshape(5, 8, 8)
    expect = np.zeros((5, 8, 8))
    expect[:, 1:, :-1] = x.reshape(5, 8, 8)[:, :-1, 1:]  # one row down, one column left
    np.testing.assert_allclose(shifted, expect, atol=1e-12)


def test_affine_rotation_by_90_degrees_is_rot90():
    rng = np.random.default_rng(0)
    x = rng.random((3, 64))
    out = pr.affine_digits(x, np.full(3, 90.0), np.zeros(3), np.zeros(3)).reshape(3, 8, 8)
    np.testing.assert_allclose(out, np.rot90(x.reshape(3, 8, 8), k=1, axes=(1, 2)), atol=1e-9)


def test_augment_digits_keeps_range_dtype_and_changes_images_a_little():
    d = digits_x()
    x = d.x_train[:200]
    out = pr.augment_digits(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    change = np.abs(out - x).mean()
    assert 0.02 < change < 0.3, change
    again = pr.augment_digits(x, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)  # a seeded Generator reproduces the draw


# --------------------------------------------------------------------------- initialization

TORCH_INIT = {
    "small": lambda w: torch.nn.init.normal_(w, std=0.01),
    "large": lambda w: torch.nn.init.normal_(w, std=1.0),
    "xavier_uniform": torch.nn.init.xavier_uniform_,
    "xavier_normal": torch.nn.init.xavier_normal_,
    "he_normal": lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "he_uniform": lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu"),
}


@pytest.mark.parametrize("scheme", sorted(TORCH_INIT))
def test_init_weights_has_torch_nn_init_distribution(scheme):
    fan_in, fan_out = 300, 100
    ours = pr.init_weights(fan_in, fan_out, scheme, np.random.default_rng(0))
    assert ours.shape == (fan_in, fan_out)
    torch.manual_seed(0)
    theirs = TORCH_INIT[scheme](torch.empty(fan_out, fan_in, dtype=torch.float64)).numpy()  # nn.Linear: (out, in)
    assert math.isclose(ours.std(), theirs.std(), rel_tol=0.03)
    assert math.isclose(ours.std(), pr.init_std(fan_in, fan_out, scheme), rel_tol=0.03)
    result = stats.ks_2samp(ours.ravel(), theirs.ravel())
    assert result.pvalue > 1e-3, f"{scheme}: KS statistic {result.statistic:.4f}, p = {result.pvalue:.2g}"
    if scheme.endswith("uniform"):
        assert np.abs(ours).max() <= np.abs(theirs).max() * 1.01 + 1e-12


def test_zero_init_is_zero_and_unknown_scheme_is_refused():
    assert not pr.init_weights(3, 4, "zeros", np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match="unknown init scheme"):
        pr.init_weights(3, 4, "glorot", np.random.default_rng(0))


# --------------------------------------------------------------------------- depth statistics

def torch_depth_reference(x, weights, activation, batchnorm, residual):
    """The same deep net with torch autograd: every layer's weight gradient."""
    acts = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "linear": lambda z: z}
    h = torch.tensor(x)
    ws = [torch.tensor(w, requires_grad=True) for w in weights]
    stds = []
    for w in ws:
        z = h @ w
        if batchnorm:
            z = torch.nn.functional.batch_norm(z, None, None, training=True, eps=1e-5)
        a = acts[activation](z)
        h = h + a if residual else a
        stds.append(float(h.detach().std(unbiased=False)))
    loss = 0.5 * (h ** 2).mean()
    loss.backward()
    return np.array(stds), [w.grad.numpy() for w in ws], float(loss.detach())


@pytest.mark.parametrize("activation,batchnorm,residual", [
    ("relu", False, False), ("tanh", False, True), ("sigmoid", True, False), ("relu", True, True)])
def test_depth_statistics_equal_torch_autograd(activation, batchnorm, residual):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 6))
    weights = [pr.init_weights(6, 6, "he_normal", rng) for _ in range(4)]
    got = pr.depth_statistics(4, 6, activation, batchnorm=batchnorm, residual=residual, x=x, weights=weights)
    stds, grads, loss = torch_depth_reference(x, weights, activation, batchnorm, residual)
    np.testing.assert_allclose(got.activation_std, stds, rtol=1e-10)
    np.testing.assert_allclose(got.gradient_std, [g.std() for g in grads], rtol=1e-8)
    assert math.isclose(got.loss, loss, rel_tol=1e-12)


def test_depth_statistics_show_vanishing_and_preserved_scales():
    rng = np.random.default_rng(0)
    sigmoid = pr.depth_statistics(20, 64, "sigmoid", "xavier_normal", rng=rng)
    relu_he = pr.depth_statistics(20, 64, "relu", "he_normal", rng=np.random.default_rng(0))
    relu_small = pr.depth_statistics(20, 64, "relu", "small", rng=np.random.default_rng(0))
    assert sigmoid.gradient_std[0] < 1e-3 * sigmoid.gradient_std[-1]       # vanishing towards the input
    ratio = relu_he.activation_std[-1] / relu_he.activation_std[0]
    assert 0.2 < ratio < 5                                                  # He keeps the scale
    assert relu_small.activation_std[-1] < 1e-20                            # too small: the signal dies


# --------------------------------------------------------------------------- early stopping

def test_early_stopping_keeps_a_deep_copy_of_the_best_params_and_waits_patience():
    params = {"W": np.zeros(2)}
    stopper = pr.EarlyStopping(patience=3)
    losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.72, 0.71, 0.6]
    stopped_at = None
    for epoch, loss in enumerate(losses, start=1):
        params["W"] += 1  # in place, as an optimizer
        if stopper.step(loss, epoch, params):
            stopped_at = epoch
            break
    assert stopper.best_epoch == 5 and stopper.best_loss == 0.7
    assert stopped_at == 8
    np.testing.assert_array_equal(stopper.best_params["W"], [5, 5])  # not the last state [8, 8]
    with pytest.raises(ValueError):
        pr.EarlyStopping(patience=0)


def test_early_stopping_min_delta_and_ties_are_not_improvements():
    stopper = pr.EarlyStopping(patience=2, min_delta=0.05)
    assert not stopper.step(1.0, 1)
    assert not stopper.step(0.97, 2)  # better by less than min_delta
    assert stopper.step(1.0, 3)
    assert stopper.best_epoch == 1


# --------------------------------------------------------------------------- search

def test_grid_and_random_configs():
    grid = pr.grid_configs({"lr": [1e-3, 1e-2, 1e-1], "dropout": [0.0, 0.5]})
    assert len(grid) == 6 and grid[0] == {"lr": 1e-3, "dropout": 0.0}
    assert len({g["lr"] for g in grid}) == 3
    rnd = pr.random_configs({"lr": (1e-4, 1e-1, "log"), "dropout": (0.0, 0.5, "lin")}, 200,
                            np.random.default_rng(0))
    lrs = np.array([r["lr"] for r in rnd])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    assert len(set(lrs.tolist())) == 200
    below = np.mean(lrs < 1e-2)  # log-uniform: 2/3 of the mass below 1e-2
    assert 0.55 < below < 0.78
    with pytest.raises(ValueError, match="scale"):
        pr.random_configs({"lr": (1, 2, "exp")}, 1, np.random.default_rng(0))
