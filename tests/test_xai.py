"""Chapter 09 · the attribution methods and attacks in NumPy == torch autograd, and their axioms.

Seeded random small MLPs in float64, torch as the referee: the logits and the input gradient
of EVERY class logit against autograd on a torch twin built here with the same weights (both
state_dict layouts: ``nn.Sequential`` and ``fc1/fc2``); saliency, gradient x input, SmoothGrad
(the same noise) and Integrated Gradients against autograd-based versions; IG's rules (weights
summing to 1, Gauss-Legendre's exactness), its completeness on a trained model and its
exactness on a linear one; occlusion against a naive loop; Shapley sampling's efficiency and
exactness on an additive model; KernelSHAP's weights; LIME on a linear model; Spearman against
scipy; FGSM / PGD's constraints and the cross-entropy input gradient against autograd.
"""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from dlcourse.gradcheck import numerical_grad
from dlcourse.xai import numpy_impl as xn

RTOL, ATOL = 1e-10, 1e-12
SEEDS = range(6)


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def torch_mlp(sizes, seed, style="sequential"):
    """A float64 ReLU MLP in torch: ``nn.Sequential`` (keys 0, 2, ...) or a module with fc1, fc2, ..."""
    torch.manual_seed(seed)
    linears = [nn.Linear(a, b, dtype=torch.float64) for a, b in zip(sizes[:-1], sizes[1:])]
    if style == "sequential":
        layers = []
        for i, lin in enumerate(linears):
            layers += [lin] + ([nn.ReLU()] if i < len(linears) - 1 else [])
        return nn.Sequential(*layers)

    class FcNet(nn.Module):
        def __init__(self):
            super().__init__()
            for i, lin in enumerate(linears, start=1):
                setattr(self, f"fc{i}", lin)

        def forward(self, x):
            for i in range(1, len(linears) + 1):
                x = getattr(self, f"fc{i}")(x)
                if i < len(linears):
                    x = torch.relu(x)
            return x

    return FcNet()


def params_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def draw(seed, style=None):
    """A random MLP (1 to 3 linear layers), its params, and a batch of inputs."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 4))
    sizes = [int(rng.integers(2, 9))] + [int(rng.integers(3, 12)) for _ in range(depth - 1)] + [int(rng.integers(2, 6))]
    style = style or ("sequential" if seed % 2 else "fc")
    model = torch_mlp(sizes, seed, style)
    x = rng.standard_normal((int(rng.integers(1, 7)), sizes[0]))
    return model, params_of(model), x, rng


def autograd_input_grad(model, x, target):
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    logits = model(xt)
    t = torch.as_tensor(np.broadcast_to(target, (x.shape[0],)).copy())
    logits.gather(1, t[:, None]).sum().backward()      # rows are independent: one backward for all
    return xt.grad.numpy()


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y                                  # pixels in [0, 1]


@pytest.fixture(scope="module")
def trained(digits):
    """A 64 -> 32 -> 10 ReLU MLP trained on all the digits (about 1 s; ~99.8 % train accuracy)."""
    x, y = digits
    model = torch_mlp([64, 32, 10], 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model, params_of(model)


# --------------------------------------------------------------------------- the MLP and its input gradient

@pytest.mark.parametrize("seed", SEEDS)
def test_logits_and_input_gradient_match_autograd_for_every_target(seed):
    model, params, x, _ = draw(seed)
    close(xn.mlp_logits(params, x), model(torch.from_numpy(x)), "logits")
    k = xn.mlp_logits(params, x).shape[1]
    for target in range(k):
        close(xn.input_gradient(params, x, target), autograd_input_grad(model, x, target), f"grad of logit {target}")
    per_row = np.arange(x.shape[0]) % k                 # a different class in each row
    close(xn.input_gradient(params, x, per_row), autograd_input_grad(model, x, per_row), "per-row targets")


def test_layers_are_ordered_by_number_not_by_string():
    model = torch_mlp([5, 4, 4, 4, 4, 4, 3], 1)          # Sequential keys 0, 2, ..., 10: "10" < "2" as text
    params = params_of(model)
    x = np.random.default_rng(1).standard_normal((3, 5))
    close(xn.mlp_logits(params, x), model(torch.from_numpy(x)), "six layers")
    close(xn.input_gradient(params, x, 2), autograd_input_grad(model, x, 2), "six layers' gradient")


def test_input_gradient_numerically():
    _, params, x, _ = draw(3)
    num = numerical_grad(lambda z: xn.mlp_logits(params, z)[:, 1], x.copy())
    close(xn.input_gradient(params, x, 1), num, "numerical", rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_input_gradient_matches_autograd(seed):
    model, params, x, rng = draw(seed)
    k = xn.mlp_logits(params, x).shape[1]
    y = rng.integers(0, k, size=x.shape[0])
    loss, dx = xn.cross_entropy_input_gradient(params, x, y)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    loss_t = F.cross_entropy(model(xt), torch.from_numpy(y))
    loss_t.backward()
    close(loss, loss_t, "loss")
    close(dx, xt.grad, "d loss / dx")


# --------------------------------------------------------------------------- gradient attributions

@pytest.mark.parametrize("seed", SEEDS)
def test_saliency_and_gradient_x_input_match_autograd(seed):
    model, params, x, _ = draw(seed)
    g = autograd_input_grad(model, x, 0)
    close(xn.saliency(params, x, 0), np.abs(g), "saliency")
    close(xn.saliency(params, x, 0, absolute=False), g, "signed saliency")
    close(xn.gradient_x_input(params, x, 0), x * g, "gradient x input")


@pytest.mark.parametrize("seed", SEEDS)
def test_smoothgrad_matches_autograd_on_the_same_noise(seed):
    model, params, x, _ = draw(seed)
    n_samples, sigma = 7, 0.3
    noise = np.random.default_rng(seed).standard_normal((n_samples,) + x.shape)   # the documented draw
    grads = np.stack([autograd_input_grad(model, x + sigma * eps, 1) for eps in noise])
    got = {mode: xn.smoothgrad(params, x, 1, n_samples, sigma, np.random.default_rng(seed), absolute=mode)
           for mode in (None, "after", "before")}
    close(got[None], grads.mean(axis=0), "mean of gradients")
    close(got["after"], np.abs(grads.mean(axis=0)), "abs after the mean")
    close(got["before"], np.abs(grads).mean(axis=0), "abs before the mean (Captum's NoiseTunnel)")
    assert np.all(got["before"] >= got["after"] - 1e-12)
    with pytest.raises(ValueError):
        xn.smoothgrad(params, x, 0, 2, 0.1, np.random.default_rng(0), absolute="both")


def test_smoothgrad_with_zero_noise_is_the_gradient():
    _, params, x, _ = draw(2)
    close(xn.smoothgrad(params, x, 1, 3, 0.0, np.random.default_rng(0)), xn.input_gradient(params, x, 1), "sigma 0")


# --------------------------------------------------------------------------- Integrated Gradients

@pytest.mark.parametrize("rule", xn.IG_RULES)
@pytest.mark.parametrize("steps", [2, 5, 50])
def test_ig_rules_weights_sum_to_one_nodes_in_unit_interval(rule, steps):
    alphas, weights = xn.ig_rule(rule, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert np.all((alphas >= 0) & (alphas <= 1)) and np.all(weights > 0)
    close(weights.sum(), 1.0, f"{rule} weights")
    # each rule's exactness: constants (all), lines (middle, trapezoid), degree 2n - 1 (Gauss-Legendre)
    degree = {"left": 0, "right": 0, "middle": 1, "trapezoid": 1, "gausslegendre": 2 * steps - 1}[rule]
    close(np.sum(weights * alphas ** degree), 1.0 / (degree + 1), f"{rule} integrates a^{degree}")


def test_ig_rule_nodes_and_rejections():
    close(xn.ig_rule("left", 4)[0], [0, .25, .5, .75], "left")
    close(xn.ig_rule("right", 4)[0], [.25, .5, .75, 1], "right")
    close(xn.ig_rule("middle", 4)[0], [.125, .375, .625, .875], "middle")
    close(xn.ig_rule("trapezoid", 5)[1], [.125, .25, .25, .25, .125], "trapezoid weights")
    captum_trapezoid = np.full(5, 1 / 5)
    captum_trapezoid[[0, -1]] /= 2
    assert captum_trapezoid.sum() == pytest.approx(4 / 5)             # (n - 1) / n: not ours
    for bad in (("simpson", 5), ("left", 0), ("trapezoid", 1)):
        with pytest.raises(ValueError):
            xn.ig_rule(*bad)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rule", xn.IG_RULES)
def test_integrated_gradients_matches_autograd_path_sum(seed, rule):
    model, params, x, rng = draw(seed)
    baseline = rng.standard_normal(x.shape[1]) if seed % 3 == 0 else None
    steps = 7
    attr, delta = xn.integrated_gradients(params, x, 1, baseline=baseline, steps=steps, rule=rule)
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(baseline, x.shape)
    alphas, weights = xn.ig_rule(rule, steps)
    avg = sum(w * autograd_input_grad(model, base + a * (x - base), 1) for a, w in zip(alphas, weights))
    expected = (x - base) * avg
    close(attr, expected, "attributions")
    with torch.no_grad():
        change = (model(torch.from_numpy(x)) - model(torch.from_numpy(np.array(base))))[:, 1].numpy()
    close(delta, expected.sum(axis=1) - change, "completeness error", atol=1e-10)


@pytest.mark.parametrize("rule", xn.IG_RULES)
def test_integrated_gradients_exact_on_a_linear_model(rule):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 9)), rng.standard_normal(4)
    params = {"0.weight": w, "0.bias": b}                 # one layer: logits = x W^T + b
    x, base = rng.standard_normal((5, 9)), rng.standard_normal(9)
    for steps in (2, 3, 50):
        attr, delta = xn.integrated_gradients(params, x, 2, baseline=base, steps=steps, rule=rule)
        close(attr, w[2] * (x - base), f"{rule}, {steps} steps: w_i (x_i - x'_i)")
        close(delta, np.zeros(5), f"{rule}, {steps} steps: no completeness error", atol=1e-12)


@pytest.mark.slow
def test_integrated_gradients_completeness_on_the_trained_model(trained, digits):
    """Gauss-Legendre at 50 steps: |delta| <= 1 % of |f(x) - f(0)| on each of 100 digits, and every rule
    improves with the steps (measured: median 0.09 %, max 0.5 % for Gauss-Legendre at 50)."""
    _, params = trained
    x = digits[0][:100]
    t = xn.mlp_logits(params, x).argmax(axis=1)
    relative = {}
    for rule in xn.IG_RULES:
        for steps in (10, 50, 200):
            attr, delta = xn.integrated_gradients(params, x, t, steps=steps, rule=rule)
            change = attr.sum(axis=1) - delta
            relative[rule, steps] = np.abs(delta) / np.abs(change)
    assert relative["gausslegendre", 50].max() <= 0.01
    for rule in xn.IG_RULES:
        assert relative[rule, 200].mean() < relative[rule, 50].mean() < relative[rule, 10].mean(), rule


# --------------------------------------------------------------------------- perturbation attributions

def naive_occlusion(f, image, patch, stride, baseline):
    side = image.shape[0]
    total, count = np.zeros((side, side)), np.zeros((side, side))
    for r in range(0, side - patch + 1, stride):
        for c in range(0, side - patch + 1, stride):
            occluded = image.copy()
            occluded[r:r + patch, c:c + patch] = baseline
            drop = f(image) - f(occluded)
            for i in range(r, r + patch):
                for j in range(c, c + patch):
                    total[i, j] += drop
                    count[i, j] += 1
    out = np.zeros((side, side))
    out[count > 0] = total[count > 0] / count[count > 0]
    return out


@pytest.mark.parametrize("patch, stride, baseline", [(2, 1, 0.0), (3, 2, 0.5), (2, 3, 0.0), (1, 1, 0.0), (8, 1, 0.2)])
def test_occlusion_matches_a_naive_loop(patch, stride, baseline):
    model = torch_mlp([64, 16, 10], 3)
    params = params_of(model)
    image = np.random.default_rng(patch * 10 + stride).uniform(0, 1, (8, 8))
    got, calls = xn.occlusion(lambda z: xn.mlp_logits(params, z), image.reshape(-1), 4, patch, stride, baseline)
    expected = naive_occlusion(lambda im: xn.mlp_logits(params, im.reshape(1, -1))[0, 4], image, patch, stride, baseline)
    close(got, expected, f"patch {patch}, stride {stride}")
    n_windows = len(range(0, 8 - patch + 1, stride)) ** 2
    assert calls == n_windows + 1
    assert xn.occlusion(lambda z: xn.mlp_logits(params, z), image, 4, 2, 1)[1] == 50   # 7 x 7 windows + the image


def test_occlusion_rejects_a_non_square_input():
    with pytest.raises(ValueError):
        xn.occlusion(lambda z: z, np.zeros(10), 0)


@pytest.mark.parametrize("seed", range(3))
def test_shapley_sampling_efficiency_is_exact(seed):
    _, params, x, rng = draw(seed)
    fn = lambda z: xn.mlp_logits(params, z)
    base = rng.standard_normal(x.shape[1])
    for n_perm in (1, 5):
        phi, calls = xn.shapley_sampling(fn, x[0], 1, n_perm, np.random.default_rng(seed), baseline=base)
        change = fn(x[:1])[0, 1] - fn(base[None])[0, 1]
        close(phi.sum(), change, f"{n_perm} permutations: sum phi = f(x) - f(baseline)")
        assert calls == 1 + n_perm * x.shape[1]


def test_shapley_sampling_exact_on_an_additive_model():
    rng = np.random.default_rng(0)
    d = 7
    a, b, c = rng.standard_normal((3, d))

    def fn(z):                                            # f_0 = sum_i a_i z_i^2 + b_i sin(z_i), class 1 = c . z
        return np.stack([(a * z ** 2 + b * np.sin(z)).sum(axis=1), z @ c], axis=1)

    x, base = rng.standard_normal(d), rng.standard_normal(d)
    phi, _ = xn.shapley_sampling(fn, x, 0, 3, rng, baseline=base)
    close(phi, a * x ** 2 + b * np.sin(x) - a * base ** 2 - b * np.sin(base), "additive contributions")
    phi1, _ = xn.shapley_sampling(fn, x, 1, 2, rng, baseline=base)
    close(phi1, c * (x - base), "linear contributions")


def test_shapley_sampling_converges_to_exact_values_on_an_interaction():
    """f = z0 * z1 + z2 from baseline 0 to x = 1: exact Shapley values (1/2, 1/2, 1)."""
    fn = lambda z: np.stack([z[:, 0] * z[:, 1] + z[:, 2]], axis=1)
    phi, _ = xn.shapley_sampling(fn, np.ones(3), 0, 2000, np.random.default_rng(0))
    close(phi, [0.5, 0.5, 1.0], "interaction shared equally", atol=0.03)


def test_kernel_shap_weights():
    for m in (2, 5, 10):
        s = np.arange(1, m)
        w = xn.kernel_shap_weights(m, s)
        close(w, w[::-1], f"symmetric, M = {m}")
        assert np.all(np.isinf(xn.kernel_shap_weights(m, [0, m])))
    close(xn.kernel_shap_weights(4, 1), 3 / (4 * 1 * 3), "(M-1) / (C(M,s) s (M-s))")
    close(xn.kernel_shap_weights(5, 2), 4 / (10 * 2 * 3), "M = 5, s = 2")
    w = xn.kernel_shap_weights(10, np.arange(1, 10))
    assert w[0] > w[1] > w[2] > w[3] > w[4]                  # small (and large) coalitions weigh most
    with pytest.raises(ValueError):
        xn.kernel_shap_weights(3, 4)


def test_kernel_shap_weights_recover_exact_shapley_values():
    """Weighted least squares over ALL coalitions, with the kernel's weights (empty and full coalitions
    held by large finite weights), gives the Shapley values of an interacting model."""
    m = 4
    rng = np.random.default_rng(0)
    x, q = rng.standard_normal(m), rng.standard_normal((m, m))
    value = lambda z: (z * x) @ q @ (z * x) + np.sin(z * x).sum()  # the baseline is 0
    coalitions = np.array(list(itertools.product([0, 1], repeat=m)), dtype=float)
    v = np.array([value(z) for z in coalitions])
    w = xn.kernel_shap_weights(m, coalitions.sum(axis=1).astype(int))
    w[np.isinf(w)] = 1e8
    design = np.hstack([np.ones((len(coalitions), 1)), coalitions]) * np.sqrt(w)[:, None]
    phi = np.linalg.lstsq(design, v * np.sqrt(w), rcond=None)[0][1:]
    exact = np.zeros(m)                                       # the Shapley formula, every order
    for order in itertools.permutations(range(m)):
        z = np.zeros(m)
        for i in order:
            before = value(z)
            z[i] = 1
            exact[i] += value(z) - before
    close(phi, exact / math.factorial(m), "KernelSHAP == Shapley", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_lime_recovers_a_linear_models_coefficients(seed):
    rng = np.random.default_rng(seed)
    d, k = 12, 3
    w, b = rng.standard_normal((k, d)), rng.standard_normal(k)
    fn = lambda z: z @ w.T + b
    x, base = rng.standard_normal(d), (rng.standard_normal(d) if seed else 0.0)
    coef, intercept, calls = xn.lime(fn, x, 1, 200, np.random.default_rng(seed), baseline=base)
    close(coef, w[1] * (x - base), "c_i = w_i (x_i - baseline_i)", rtol=1e-8, atol=1e-10)
    close(intercept, fn(np.broadcast_to(base, (1, d)))[0, 1], "intercept = f(baseline)", rtol=1e-8, atol=1e-10)
    assert calls == 200
    shrunk, _, _ = xn.lime(fn, x, 1, 200, np.random.default_rng(seed), baseline=base, alpha=10.0)
    assert np.abs(shrunk).sum() < np.abs(coef).sum()          # the ridge penalty shrinks


def test_lime_first_sample_is_the_instance():
    seen = []

    def fn(z):
        seen.append(z.copy())
        return np.zeros((len(z), 2))

    x = np.arange(1.0, 6.0)
    xn.lime(fn, x, 0, 10, np.random.default_rng(0))
    close(seen[0][0], x, "unmasked instance first")


# --------------------------------------------------------------------------- comparing maps

@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, size=40).astype(float)            # many ties
    b = a + rng.standard_normal(40) * seed
    close(xn.spearman(a, b), scipy.stats.spearmanr(a, b).statistic, "with ties")
    c, e = rng.standard_normal((8, 8)), rng.standard_normal((8, 8))
    close(xn.spearman(c, e), scipy.stats.spearmanr(c.ravel(), e.ravel()).statistic, "maps, no ties")


def test_spearman_limits():
    a = np.random.default_rng(0).standard_normal(20)
    assert xn.spearman(a, np.exp(a)) == pytest.approx(1.0)
    assert xn.spearman(a, -a ** 3) == pytest.approx(-1.0)
    assert np.isnan(xn.spearman(a, np.ones(20)))
    with pytest.raises(ValueError):
        xn.spearman(a, a[:5])


# --------------------------------------------------------------------------- adversarial examples

@pytest.mark.parametrize("seed", range(3))
def test_fgsm_matches_autograd_and_stays_in_bounds(seed):
    model, params, x, rng = draw(seed)
    x = rng.uniform(0, 1, (5, x.shape[1]))                    # pixels in the valid range [0, 1]
    k = xn.mlp_logits(params, x).shape[1]
    y = rng.integers(0, k, size=5)
    eps = 0.1
    xt = torch.from_numpy(x.copy()).requires_grad_()
    F.cross_entropy(model(xt), torch.from_numpy(y)).backward()
    expected = np.clip(x + eps * np.sign(xt.grad.numpy()), 0, 1)
    adv = xn.fgsm(params, x, y, eps)
    close(adv, expected, "FGSM")
    assert np.abs(adv - x).max() <= eps + 1e-12 and adv.min() >= 0 and adv.max() <= 1


@pytest.mark.slow
def test_pgd_within_eps_and_stronger_than_fgsm_on_the_trained_model(trained, digits):
    _, params = trained
    x, y = digits[0][:300], digits[1][:300]
    eps = 0.1
    loss = lambda z: xn.cross_entropy_input_gradient(params, z, y)[0]
    adv_f = xn.fgsm(params, x, y, eps)
    for rng in (None, np.random.default_rng(0)):
        adv_p = xn.pgd(params, x, y, eps, alpha=eps / 4, steps=10, rng=rng)
        assert np.abs(adv_p - x).max() <= eps + 1e-12, "outside the eps-ball"
        assert adv_p.min() >= 0 and adv_p.max() <= 1, "outside [0, 1]"
        assert loss(adv_p) >= loss(adv_f) > loss(x)
    acc = lambda z: (xn.mlp_logits(params, z).argmax(axis=1) == y).mean()
    assert acc(xn.pgd(params, x, y, eps, eps / 4, 10)) <= acc(adv_f) < acc(x)


def test_pgd_without_clip_and_one_step_is_fgsm():
    _, params, x, _ = draw(1)
    y = np.zeros(x.shape[0], dtype=int)
    adv = xn.pgd(params, x, y, eps=0.3, alpha=0.3, steps=1, clip=None)
    close(adv, xn.fgsm(params, x, y, 0.3, clip=None), "one full step = FGSM")
    assert np.abs(adv - x).max() == pytest.approx(0.3)
