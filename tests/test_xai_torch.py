"""Tests for dlcourse.xai.torch_impl: every autograd attribution == numpy_impl's on the digits MLP
(float64 copy, 1e-10), any-model behaviour on the CNN (shapes, IG completeness, occlusion == a naive
loop, Grad-CAM == a hand computation from the hooked activations), the randomization sanity check
and deletion / insertion curves.

Fast: the two models are trained once per process (cached, about 2 + 4 s).  No timing asserts
(the costs live in benchmarks/bench_xai.py).
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlcourse.data import load_digits
from dlcourse.xai import numpy_impl as N
from dlcourse.xai import torch_impl as T

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def data():
    d = load_digits(0)
    return d.x_test[:12].astype(np.float64), d.y_test[:12]


@pytest.fixture(scope="module")
def mlp64():
    return copy.deepcopy(T.digits_mlp()).double()


@pytest.fixture(scope="module")
def params(mlp64):
    return {k: v.detach().double().numpy() for k, v in mlp64.state_dict().items()}


@pytest.fixture(scope="module")
def cnn64():
    return copy.deepcopy(T.digits_cnn()).double()


def _np(t):
    return t.detach().cpu().numpy()


# --------------------------------------------------------------------------- the models

def test_models_cached_eval_and_accurate():
    d = load_digits(0)
    mlp, cnn = T.digits_mlp(), T.digits_cnn()
    assert T.digits_mlp() is mlp and T.digits_cnn() is cnn
    assert not mlp.training and not cnn.training
    assert list(mlp.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert T.accuracy(mlp, d.x_test, d.y_test) > 0.95
    assert T.accuracy(cnn, d.x_test, d.y_test) >= 0.98
    assert T.accuracy(cnn, d.x_test.reshape(-1, 1, 8, 8), d.y_test) == T.accuracy(cnn, d.x_test, d.y_test)


def test_model_input_reshapes_for_each_model(data):
    x, _ = data
    assert T.model_input(T.digits_cnn(), x).shape == (12, 1, 8, 8)
    assert T.model_input(T.digits_mlp(), x.reshape(-1, 1, 8, 8)).shape == (12, 64)
    assert T.model_input(T.digits_mlp(), x).dtype == torch.float32
    assert T.is_image_model(T.digits_cnn()) and not T.is_image_model(T.digits_mlp())


# --------------------------------------------------------------------------- == numpy_impl on the MLP

def test_gradient_methods_equal_numpy(mlp64, params, data):
    x, y = data
    np.testing.assert_allclose(_np(T.logit_gradient(mlp64, x, y)), N.input_gradient(params, x, y), **TOL)
    np.testing.assert_allclose(_np(T.saliency(mlp64, x, y)), N.saliency(params, x, y), **TOL)
    np.testing.assert_allclose(_np(T.saliency(mlp64, x, 3, absolute=False)),
                               N.saliency(params, x, 3, absolute=False), **TOL)
    np.testing.assert_allclose(_np(T.gradient_x_input(mlp64, x, y)), N.gradient_x_input(params, x, y), **TOL)


@pytest.mark.parametrize("absolute", [None, "after", "before"])
def test_smoothgrad_same_noise_equals_numpy(mlp64, params, data, absolute):
    x, y = data
    ref = N.smoothgrad(params, x, y, n_samples=20, sigma=0.2, rng=np.random.default_rng(5), absolute=absolute)
    noise = np.random.default_rng(5).standard_normal((20, *x.shape))
    got = T.smoothgrad(mlp64, x, y, n_samples=20, sigma=0.2, noise=noise, absolute=absolute)
    np.testing.assert_allclose(_np(got), ref, **TOL)


def test_smoothgrad_generator_reproducible(mlp64, data):
    x, y = data
    a = T.smoothgrad(mlp64, x, y, generator=torch.Generator().manual_seed(1))
    b = T.smoothgrad(mlp64, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape


@pytest.mark.parametrize("rule", N.IG_RULES)
def test_integrated_gradients_every_rule_equals_numpy(mlp64, params, data, rule):
    x, y = data
    base = np.full(64, 0.1)
    ref, ref_delta = N.integrated_gradients(params, x, y, baseline=base, steps=17, rule=rule)
    got, delta = T.integrated_gradients(mlp64, x, y, baseline=base, steps=17, rule=rule)
    np.testing.assert_allclose(_np(got), ref, **TOL)
    np.testing.assert_allclose(_np(delta), ref_delta, **TOL)
    chunked, _ = T.integrated_gradients(mlp64, x, y, baseline=base, steps=17, rule=rule, internal_batch=5)
    np.testing.assert_allclose(_np(chunked), ref, **TOL)


def test_occlusion_equals_numpy(mlp64, params, data):
    x, y = data
    got, calls = T.occlusion(mlp64, x, y, patch=3, stride=2, baseline=0.5)
    for i in range(len(x)):
        ref, ref_calls = N.occlusion(lambda z: N.mlp_logits(params, z), x[i], int(y[i]), patch=3, stride=2,
                                     baseline=0.5)
        np.testing.assert_allclose(_np(got[i]), ref.reshape(-1), **TOL)
    assert calls == len(x) * ref_calls


# --------------------------------------------------------------------------- any model: the CNN

def test_cnn_shapes_follow_the_input(cnn64, data):
    x, y = data
    img = x.reshape(-1, 1, 8, 8)
    for name, f in T.methods_for(cnn64).items():
        assert f(cnn64, x, y).shape == x.shape, name
        assert f(cnn64, img, y).shape == img.shape, name
    assert "Grad-CAM" not in T.methods_for(T.digits_mlp())
    assert list(T.METHODS) == ["saliency", "gradient x input", "SmoothGrad", "Integrated Gradients",
                               "occlusion", "Grad-CAM"]


def test_cnn_ig_completeness_within_one_percent(cnn64, data):
    x, y = data
    attr, delta = T.integrated_gradients(cnn64, x, y, steps=50)
    with torch.no_grad():
        out = cnn64(torch.as_tensor(x).reshape(-1, 1, 8, 8))
        zero = cnn64(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    change = out[torch.arange(len(y)), torch.as_tensor(y)] - zero[0, torch.as_tensor(y)]
    assert torch.allclose(attr.sum(1) - change, delta, atol=1e-10)
    assert (delta.abs() / change.abs()).max() <= 0.01


def test_cnn_occlusion_equals_naive_loop(cnn64, data):
    x, y = data
    img = torch.as_tensor(x[:3]).reshape(-1, 1, 8, 8)
    got, calls = T.occlusion(cnn64, img, y[:3], patch=2, stride=3, baseline=0.25)
    corners = range(0, 7, 3)
    assert calls == 3 * (len(corners) ** 2 + 1)
    with torch.no_grad():
        for i in range(3):
            t = int(y[i])
            full = cnn64(img[i:i + 1])[0, t]
            total, count = torch.zeros(8, 8, dtype=torch.float64), torch.zeros(8, 8, dtype=torch.float64)
            for r in corners:
                for c in corners:
                    z = img[i:i + 1].clone()
                    z[..., r:r + 2, c:c + 2] = 0.25
                    total[r:r + 2, c:c + 2] += full - cnn64(z)[0, t]
                    count[r:r + 2, c:c + 2] += 1
            want = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
            torch.testing.assert_close(got[i, 0], want, rtol=1e-10, atol=1e-10)


def test_grad_cam_equals_hand_computation(cnn64, data):
    x, y = data
    cam = T.grad_cam(cnn64, x, y, upsample=False)
    assert cam.shape == (12, 4, 4) and (cam >= 0).all()
    # the hooked tensor is conv2's output: recompute it by hand, and its gradient with autograd
    img = torch.as_tensor(x).reshape(-1, 1, 8, 8)
    h = F.max_pool2d(F.relu(cnn64.conv1(img)), 2)
    a = cnn64.conv2(h).detach().requires_grad_(True)
    logits = cnn64.fc(torch.flatten(F.max_pool2d(F.relu(a), 2), 1))
    (da,) = torch.autograd.grad(logits[torch.arange(12), torch.as_tensor(y)].sum(), a)
    want = torch.relu((da.mean((2, 3))[:, :, None, None] * a).sum(1)).detach()
    torch.testing.assert_close(cam, want, rtol=1e-10, atol=1e-12)
    up = T.grad_cam(cnn64, x, y)
    assert up.shape == (12, 1, 8, 8) and (up >= 0).all()
    torch.testing.assert_close(up, F.interpolate(want[:, None], size=(8, 8), mode="bilinear", align_corners=False))
    with pytest.raises(ValueError):
        T.grad_cam(T.digits_mlp(), x, y)


def test_no_gradient_left_in_parameters(data):
    x, y = data
    cnn = T.digits_cnn()
    for f in T.METHODS.values():
        f(cnn, x, y)
    assert all(p.grad is None for p in cnn.parameters())


# --------------------------------------------------------------------------- sanity checks

def test_cascading_randomization_leaves_model_and_orders_stages(data):
    x, y = data
    mlp = T.digits_mlp()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    res = T.cascading_randomization(mlp, x, y, seed=0)
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert res.stages == ["2", "0"]
    assert res.spearman_abs.shape == (5, 2) and res.maps["saliency"].shape == (3, 12, 64)
    # the fully random network's gradient no longer ranks pixels like the trained one's
    assert abs(res.spearman_abs[0, -1]) < 0.3 and abs(res.spearman_signed[0, -1]) < 0.3
    # ... while gradient x input inherits the digit's shape
    assert res.spearman_abs[1, -1] > 0.7
    cnn_res = T.cascading_randomization(T.digits_cnn(), x[:4], y[:4],
                                        methods={"saliency": T.METHODS["saliency"]})
    assert cnn_res.stages == ["fc", "conv2", "conv1"]


@pytest.mark.parametrize("model_fn", [T.digits_mlp, T.digits_cnn])
def test_deletion_insertion_curves_end_at_the_baseline(model_fn, data):
    x, y = data
    model = model_fn()
    attr = T.saliency(model, x, y)
    with torch.no_grad():
        p_x = model(T.model_input(model, x)).softmax(1)[torch.arange(12), torch.as_tensor(y)]
        p_0 = model(T.model_input(model, np.zeros_like(x))).softmax(1)[torch.arange(12), torch.as_tensor(y)]
    dele = T.deletion_insertion(model, x, y, attr, "deletion")
    ins = T.deletion_insertion(model, x, y, attr, "insertion", steps=9)
    assert dele.probabilities.shape == (12, 65) and ins.probabilities.shape == (12, 9)
    np.testing.assert_allclose(dele.probabilities[:, 0], _np(p_x.double()), rtol=1e-6)
    np.testing.assert_allclose(dele.probabilities[:, -1], _np(p_0.double()), rtol=1e-6)
    np.testing.assert_allclose(ins.probabilities[:, 0], _np(p_0.double()), rtol=1e-6)
    np.testing.assert_allclose(ins.probabilities[:, -1], _np(p_x.double()), rtol=1e-6)
    for r in (dele, ins):
        assert ((r.auc >= 0) & (r.auc <= 1)).all()
        assert r.fractions[0] == 0 and r.fractions[-1] == 1


def test_deletion_removes_the_top_ranked_pixel_first(mlp64, data):
    x, y = data
    attr = np.zeros_like(x)
    attr[:, 10] = 1.0                                    # pixel 10 ranked first
    r = T.deletion_insertion(mlp64, x, y, attr, "deletion", steps=65)
    z = x.copy()
    z[:, 10] = 0.0
    with torch.no_grad():
        want = mlp64(torch.as_tensor(z)).softmax(1)[torch.arange(12), torch.as_tensor(y)]
    np.testing.assert_allclose(r.probabilities[:, 1], _np(want), rtol=1e-12)
