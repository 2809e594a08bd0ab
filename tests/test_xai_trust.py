"""dlcourse.xai.trust: attacks against numpy_impl, robust accuracy, the shortcut data, fairness metrics, reweighing."""
import copy

import numpy as np
import pytest
import torch

from dlcourse.data import load_digits
from dlcourse.xai import numpy_impl as xn
from dlcourse.xai import torch_impl as xt
from dlcourse.xai import trust


@pytest.fixture(scope="module")
def digits():
    d = load_digits(0)
    return d.x_test[:64], d.y_test[:64]


@pytest.fixture(scope="module")
def mlp64():
    """A float64 copy of the course MLP and its parameters for numpy_impl."""
    model = copy.deepcopy(xt.digits_mlp(0)).double()
    return model, {k: v.detach().numpy() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- attacks

def test_loss_gradient_matches_numpy(digits, mlp64):
    x, y = digits
    model, params = mlp64
    loss, grad = trust.loss_gradient(model, x.astype(np.float64), y)
    loss_np, grad_np = xn.cross_entropy_input_gradient(params, x.astype(np.float64), y)
    assert abs(loss.item() - loss_np) < 1e-12
    np.testing.assert_allclose(grad.numpy(), grad_np, rtol=0, atol=1e-14)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_fgsm_matches_numpy(digits, mlp64, eps):
    x, y = digits
    model, params = mlp64
    x = x.astype(np.float64)
    np.testing.assert_allclose(trust.fgsm(model, x, y, eps).numpy(), xn.fgsm(params, x, y, eps), rtol=0, atol=1e-10)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_matches_numpy(digits, mlp64, random_start):
    x, y = digits
    model, params = mlp64
    x = x.astype(np.float64)
    eps, steps = 0.1, 7
    alpha = 2.5 * eps / steps
    if random_start:
        ref = xn.pgd(params, x, y, eps, alpha, steps, rng=np.random.default_rng(3))
        start = np.random.default_rng(3).uniform(-eps, eps, size=x.shape)    # numpy_impl's draw
        ours = trust.pgd(model, x, y, eps, steps=steps, start=start)
    else:
        ref = xn.pgd(params, x, y, eps, alpha, steps)
        ours = trust.pgd(model, x, y, eps, steps=steps, random_start=False)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "noise"])
def test_attacks_stay_in_the_ball_and_the_range(digits, attack):
    x, y = digits
    model = xt.digits_mlp(0)
    eps = 0.15
    x_adv = trust.ATTACKS[attack](model, x, y, eps)
    assert x_adv.shape == (64, 64) and x_adv.dtype == torch.float32
    assert (x_adv - torch.as_tensor(x)).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_eps_zero_returns_x(digits):
    x, y = digits
    model = xt.digits_mlp(0)
    for attack in (trust.fgsm, trust.pgd):
        assert torch.equal(attack(model, x, y, 0.0), torch.as_tensor(x))


def test_pgd_loss_at_least_fgsm_loss(digits):
    x, y = digits
    model = xt.digits_mlp(0)
    eps = 0.1
    l_fgsm, _ = trust.loss_gradient(model, trust.fgsm(model, x, y, eps), y)
    l_pgd, _ = trust.loss_gradient(model, trust.pgd(model, x, y, eps, generator=torch.Generator().manual_seed(0)), y)
    l_clean, _ = trust.loss_gradient(model, x, y)
    assert l_pgd >= l_fgsm > l_clean


def test_attacks_on_the_cnn_images(digits):
    x, y = digits
    model = xt.digits_cnn(0)
    images = x.reshape(-1, 1, 8, 8)
    for x_adv in (trust.fgsm(model, images, y, 0.1), trust.pgd(model, x, y, 0.1, steps=3)):
        assert x_adv.shape == (64, 1, 8, 8)
        assert (x_adv - torch.as_tensor(images)).abs().max() <= 0.1 + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())


def test_robust_accuracy(digits):
    x, y = digits
    model = xt.digits_mlp(0)
    acc = trust.robust_accuracy(model, x, y, [0.0, 0.3], attack="pgd")
    assert acc.shape == (2,)
    assert acc[0] == xt.accuracy(model, x, y)
    assert acc[0] > 0.9 and acc[1] < 0.2              # measured: 0.98 clean, 0 at eps 0.3
    again = trust.robust_accuracy(model, x, y, [0.3], attack="pgd")
    assert again[0] == acc[1]                          # seeded random start
    with pytest.raises(ValueError):
        trust.robust_accuracy(model, x, y, [0.1], attack="cw")


def test_random_sign_noise_barely_hurts(digits):
    x, y = digits
    model = xt.digits_mlp(0)
    noise, fgsm = (trust.robust_accuracy(model, x, y, [0.0, 0.1], attack=a) for a in ("noise", "fgsm"))
    assert noise[1] >= noise[0] - 0.1 and fgsm[1] < noise[1] - 0.2


# --------------------------------------------------------------------------- the shortcut data

@pytest.fixture(scope="module")
def data():
    return trust.shortcut_digits(0)


def test_shortcut_digits_shapes(data):
    assert data.x_train.shape == (1257, 64) and data.x_test.shape == (540, 64)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64 and data.g_train.dtype == np.int64
    assert data.mark_mask.shape == (64,) and data.mark_mask.dtype == bool and data.mark_mask.sum() == 4
    np.testing.assert_array_equal(data.y_train, data.digit_train >= 5)
    np.testing.assert_array_equal(data.y_test, data.digit_test >= 5)
    for x in (data.x_train, data.x_test):
        assert x.min() >= 0 and x.max() <= 1


def test_mark_only_on_group_b(data):
    for x, g in ((data.x_train, data.g_train), (data.x_test, data.g_test)):
        marked = (x[:, data.mark_mask] == 1.0).all(axis=1)
        np.testing.assert_array_equal(marked, g == 1)
        assert abs(g.mean() - data.minority) < 0.01


def test_correlation_in_train_independence_in_test(data):
    b = data.g_train == 1
    assert abs(data.y_train[b].mean() - data.correlation) < 0.01
    # test: group B drawn at random -> P(y=1 | B) near P(y=1) (162 images: a few points of noise)
    assert abs(data.y_test[data.g_test == 1].mean() - data.y_test.mean()) < 0.1
    unmarked = trust.shortcut_digits(0, correlation=0.5)
    assert abs(unmarked.y_train[unmarked.g_train == 1].mean() - 0.5) < 0.01


def test_shortcut_digits_rejects_impossible_settings():
    with pytest.raises(ValueError):
        trust.shortcut_digits(0, correlation=1.0, minority=0.9)
    with pytest.raises(ValueError):
        trust.shortcut_digits(0, mark="star")


# --------------------------------------------------------------------------- fairness metrics

def test_group_metrics_perfect_predictor():
    y = np.array([0, 1, 0, 1, 1, 0])
    g = np.array([0, 0, 0, 1, 1, 1])
    m = trust.group_metrics(y, y, g)
    assert m["accuracy"] == 1 and m["worst_group_accuracy"] == 1 and m["eo_gap"] == 0
    assert m["dp_gap"] == pytest.approx(2 / 3 - 1 / 3)         # base rates differ, so DP does too


def test_group_metrics_constant_predictor():
    y = np.array([0, 1, 0, 1, 1, 0])
    g = np.array([0, 0, 0, 1, 1, 1])
    m = trust.group_metrics(y, np.ones(6, dtype=int), g)
    assert m["dp_gap"] == 0 and m["eo_gap"] == 0               # a constant treats everybody alike
    assert m["groups"][0]["tpr"] == 1 and m["groups"][0]["fpr"] == 1
    assert m["groups"][0]["accuracy"] == pytest.approx(1 / 3) and m["groups"][1]["accuracy"] == pytest.approx(2 / 3)
    assert m["worst_group_accuracy"] == pytest.approx(1 / 3)


def test_group_metrics_known_confusion():
    #            group A (0): 4 rows             group B (1): 4 rows
    y    = np.array([1, 1, 0, 0,                 1, 1, 0, 0])
    pred = np.array([1, 0, 0, 0,                 1, 1, 1, 0])
    g    = np.array([0, 0, 0, 0,                 1, 1, 1, 1])
    m = trust.group_metrics(y, pred, g)
    a, b = m["groups"][0], m["groups"][1]
    assert (a["tpr"], a["fpr"], a["positive_rate"], a["accuracy"], a["n"]) == (0.5, 0.0, 0.25, 0.75, 4)
    assert (b["tpr"], b["fpr"], b["positive_rate"], b["accuracy"], b["n"]) == (1.0, 0.5, 0.75, 0.75, 4)
    assert m["dp_gap"] == 0.5 and m["eo_gap"] == 0.5 and m["accuracy"] == 0.75
    # torch tensors work too; an empty cell gives nan
    m = trust.group_metrics(torch.tensor([1, 1]), torch.tensor([1, 0]), torch.tensor([0, 1]))
    assert np.isnan(m["groups"][0]["fpr"]) and np.isnan(m["eo_gap"])


def test_reweighing_makes_group_and_label_independent(data):
    w = trust.reweighing_weights(data.y_train, data.g_train)
    assert w.shape == (1257,) and w.mean() == pytest.approx(1.0)
    total = w.sum()
    for a in (0, 1):
        for b in (0, 1):
            joint = w[(data.g_train == a) & (data.y_train == b)].sum() / total
            pg, py = w[data.g_train == a].sum() / total, w[data.y_train == b].sum() / total
            assert joint == pytest.approx(pg * py, abs=1e-12)
    # the weights' marginals are the data's own
    assert w[data.g_train == 1].sum() / total == pytest.approx((data.g_train == 1).mean())


# --------------------------------------------------------------------------- the shortcut study

def test_the_shortcut_is_real_on_seed_0(data):
    model = trust.train_shortcut_model(data, seed=0)
    m = trust.group_metrics(data.y_test, trust.shortcut_predict(model, data, data.x_test), data.g_test)
    acc0_a, acc0_b = 1 - m["groups"][0]["fpr"], 1 - m["groups"][1]["fpr"]
    # measured over seeds 0-4: A's 0s 0.97-1.00, B's 0s 0.72-0.89, a margin of 0.11-0.28 (seed 0: 0.12)
    assert acc0_a - acc0_b > 0.05
    share = trust.attribution_share(model, data.x_test[data.g_test == 1], data.mark_mask).mean()
    masked = trust.train_shortcut_model(data, "mask", seed=0)
    m2 = trust.group_metrics(data.y_test, trust.shortcut_predict(masked, data, data.x_test, "mask"), data.g_test)
    assert 1 - m2["groups"][1]["fpr"] > acc0_b + 0.05          # measured: 0.97-1.00
    assert share > 4 / 64                                        # measured: 0.12-0.15 over seeds 0-4


def test_attribution_share_bounds(data):
    model = trust.train_shortcut_model(data, seed=0)
    s = trust.attribution_share(model, data.x_test[:10], data.mark_mask)
    assert s.shape == (10,) and (s >= 0).all() and (s <= 1).all()
    assert np.allclose(trust.attribution_share(model, data.x_test[:10], np.ones(64, bool)), 1.0)


# --------------------------------------------------------------------------- adversarial training

def test_adversarial_training_short_run():
    plain = xt.digits_mlp(0)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    d = load_digits(0)
    model, hist = trust.adversarial_training("mlp", eps=0.1, seed=0, epochs=20)      # ~1 s
    assert model is not plain and all(torch.equal(v, plain.state_dict()[k]) for k, v in before.items())
    assert len(hist.loss) == len(hist.clean_val) == len(hist.robust_val) == 20 and hist.seconds > 0
    assert trust.adversarial_training("mlp", eps=0.1, seed=0, epochs=20)[0] is model            # cached
    pgd_plain, pgd_adv = (trust.robust_accuracy(m, d.x_val, d.y_val, [0.1])[0] for m in (plain, model))
    assert pgd_adv > pgd_plain + 0.1 and hist.clean_val[-1] > 0.9
    assert not model.training and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError):
        trust.adversarial_training("rnn")


def test_adversarial_training_progress_and_live_plot_are_not_part_of_the_cache():
    from dlcourse.xai import explore
    plot = explore.LiveRobustPlot(epochs=3)
    model, hist = trust.adversarial_training("mlp", eps=0.05, seed=0, epochs=3, progress=True, callback=plot)
    assert plot.updates == 3 and len(hist.loss) == 3 and len(hist.robust_val) == 3
    again = trust.adversarial_training("mlp", eps=0.05, seed=0, epochs=3, progress=False)
    assert again[0] is model and plot.updates == 3                 # cached: no retraining, no callback


def test_scale_up_skips_without_a_gpu_and_runs_when_asked(capsys):
    assert trust.scale_up(1, device="cpu") is None
    assert "no GPU" in capsys.readouterr().out
    r = trust.scale_up(1.5, steps=2, n_test=100, eps_list=(0.0, 0.1), cpu_steps=1, device="cpu",
                       run_on_cpu=True, progress=False)
    assert r["steps"] > 0 and r["accuracy"].shape == (2,) and np.all((0 <= r["accuracy"]) & (r["accuracy"] <= 1))
    assert r["speedup"] is not None and "steps/s" in capsys.readouterr().out
