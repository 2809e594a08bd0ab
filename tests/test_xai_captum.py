"""Captum as an ORACLE for dlcourse.xai.torch_impl (test-only: the course code never imports captum).

On the course's two digits models in float64: Saliency (abs=True), InputXGradient and LayerGradCam
(relu_attributions=True, + LayerAttribution.interpolate) give the same maps as ours to 1e-12;
NoiseTunnel's SmoothGrad too (1e-10) when given the same noise (Captum draws it with ``torch.normal``
and a float32 stdev from the global generator: we re-seed and redraw it); Occlusion to float32
rounding (Captum returns float32 maps: max difference 4.7e-7), for windows that tile the image;
IntegratedGradients with ``method="gausslegendre"`` within 2e-6 (measured 3.9e-9; the max difference
is printed by ``pytest -s``).  Captum's
``riemann_trapezoid`` weights sum to (n - 1)/n, so its completeness error does not vanish even on a
linear model, while ours (weights summing to 1) does.
"""
import copy

import numpy as np
import pytest
import torch

captum = pytest.importorskip("captum")
from captum.attr import (InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam,  # noqa: E402
                         NoiseTunnel, Occlusion, Saliency)
from captum.attr._utils.approximation_methods import approximation_parameters  # noqa: E402

from dlcourse.data import load_digits  # noqa: E402
from dlcourse.xai import torch_impl as T  # noqa: E402

EXACT = dict(rtol=1e-12, atol=1e-12)
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


@pytest.fixture(scope="module")
def models():
    return {"mlp": copy.deepcopy(T.digits_mlp()).double(), "cnn": copy.deepcopy(T.digits_cnn()).double()}


@pytest.fixture(scope="module")
def data():
    d = load_digits(0)
    return d.x_test[:10].astype(np.float64), torch.as_tensor(d.y_test[:10])


def _inputs(model, x):
    return T.model_input(model, x)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_saliency_and_input_x_gradient_equal_captum(models, data, name):
    model = models[name]
    x, y = data
    xin = _inputs(model, x)
    torch.testing.assert_close(T.saliency(model, xin, y), Saliency(model).attribute(xin, target=y, abs=True), **EXACT)
    torch.testing.assert_close(T.gradient_x_input(model, xin, y), InputXGradient(model).attribute(xin, target=y),
                               **EXACT)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_noise_tunnel_smoothgrad_with_the_same_noise(models, data, name):
    model = models[name]
    x, y = data
    xin = _inputs(model, x)
    s, sigma = 8, 0.15
    torch.manual_seed(123)
    theirs = NoiseTunnel(Saliency(model)).attribute(xin, nt_type="smoothgrad", nt_samples=s, stdevs=sigma,
                                                    target=y)
    # Captum's draw, redone: torch.normal(0, stdev) with a FLOAT32 stdev tensor of shape (N * S, ...),
    # the copies of one example next to each other (input.repeat_interleave(S, dim=0))
    torch.manual_seed(123)
    eps = torch.normal(0, torch.tensor(sigma).repeat((len(xin) * s, *xin.shape[1:]))).double()
    noisy = xin.repeat_interleave(s, dim=0) + eps                                      # what Captum feeds
    noise = (noisy - xin.repeat_interleave(s, dim=0)).reshape(len(xin), s, *xin.shape[1:]).transpose(0, 1)
    ours = T.smoothgrad(model, xin, y, n_samples=s, sigma=1.0, noise=noise, absolute="before")
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_integrated_gradients_gausslegendre_within_2e6(models, data, name):
    model = models[name]
    x, y = data
    xin = _inputs(model, x)
    ours, delta = T.integrated_gradients(model, xin, y, steps=50)
    theirs, their_delta = IntegratedGradients(model).attribute(xin, target=y, n_steps=50, method="gausslegendre",
                                                              return_convergence_delta=True)
    diff = (ours - theirs).abs().max().item()
    print(f"\n{name}: IG gausslegendre 50 steps, max |ours - Captum| = {diff:.2e}, "
          f"max |delta diff| = {(delta - their_delta).abs().max().item():.2e}")
    assert diff <= 2e-6
    assert (delta - their_delta).abs().max() <= 2e-6


def test_captum_riemann_trapezoid_weights_sum_to_n_minus_1_over_n():
    for n in (5, 20, 50):
        step_sizes, alphas = approximation_parameters("riemann_trapezoid")
        assert np.isclose(sum(step_sizes(n)), (n - 1) / n)
        assert np.allclose(alphas(n), np.linspace(0, 1, n))
    # on a linear model the integrand is constant: our weights (sum 1) are exact, Captum's miss by 1/n
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 10).double()
    x = torch.rand(4, 64, dtype=torch.float64)
    _, ours = T.integrated_gradients(lin, x, 3, steps=20, rule="trapezoid")
    _, theirs = IntegratedGradients(lin).attribute(x, target=3, n_steps=20, method="riemann_trapezoid",
                                                   return_convergence_delta=True)
    change = lin(x)[:, 3] - lin(torch.zeros(1, 64, dtype=torch.float64))[0, 3]
    assert ours.abs().max() < 1e-12
    torch.testing.assert_close(theirs, -change / 20, rtol=1e-5, atol=1e-9)   # Captum's alphas pass float32


@pytest.mark.parametrize("name", ["mlp", "cnn"])
# windows that tile the image exactly ((H - patch) % stride == 0).  Otherwise Captum adds a last window
# hanging over the edge (cropped: ceil((H - patch) / stride) + 1 positions per axis, its _occlusion_mask
# pads with negative amounts), where ours and numpy_impl's stop at the last window that fits
@pytest.mark.parametrize("patch,stride,baseline", [(2, 1, 0.0), (4, 2, 0.5)])
def test_occlusion_equals_captum(models, data, name, patch, stride, baseline):
    model = models[name]
    x, y = data
    img = torch.as_tensor(x).reshape(-1, 1, 8, 8)
    ours, _ = T.occlusion(model, img, y, patch=patch, stride=stride, baseline=baseline)
    fwd = (lambda z: model(z.reshape(len(z), -1))) if name == "mlp" else model
    theirs = Occlusion(fwd).attribute(img, sliding_window_shapes=(1, patch, patch), strides=(1, stride, stride),
                                      baselines=baseline, target=y)
    # Captum returns float32 even for a float64 model: it divides the summed drops by the window
    # counts as ``single_attrib.float() / weight`` (captum/attr/_core/feature_ablation.py), so the
    # maps agree to float32 rounding (measured max difference below 1e-6), not to 1e-12
    assert theirs.dtype == torch.float32
    print(f"\n{name} occlusion {patch}/{stride}/{baseline}: max |ours - Captum| = "
          f"{(ours - theirs.double()).abs().max().item():.1e}")
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grad_cam_equals_layer_grad_cam(models, data, mode):
    model = models["cnn"]
    x, y = data
    xin = _inputs(model, x)
    # (N, 1, h, w); Captum applies the ReLU only when asked (relu_attributions=False by default)
    theirs = LayerGradCam(model, model.conv2).attribute(xin, target=y, relu_attributions=True)
    torch.testing.assert_close(T.grad_cam(model, xin, y, upsample=False), theirs[:, 0], **EXACT)
    up = LayerAttribution.interpolate(theirs, (8, 8), interpolate_mode=mode)
    torch.testing.assert_close(T.grad_cam(model, xin, y, mode=mode), up, **EXACT)
