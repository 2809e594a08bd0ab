"""Chapter 09's graded exercises (dlcourse/xai/checks.py): the exercise forms equal the package and autograd,
the checks' diagnoses that are not mistake-table rows, and valid alternative answers pass
(tests/test_course.py proves every row)."""

import numpy as np
import pytest
import torch

from checktools import solution
from dlcourse.xai import checks
from dlcourse.xai import numpy_impl as xn
from dlcourse.xai import torch_impl as xt
from dlcourse.xai.checks import check as ch09

STEM = "09_xai"


def _passes(name, fn):
    result = ch09.run(name, fn)
    assert result.passed, f"{result.message}\n{result.details}"
    return result


def _fails(name, fn, start, mistake=None, status=None):
    result = ch09.run(name, fn)
    assert not result.passed and result.message.startswith(start), result.message
    if mistake is not None:
        assert result.mistake == mistake, result.mistake
    if status is not None:
        assert result.status == status, result.status
    return result


# --------------------------------------------------------------------------- the exercise forms equal autograd

@pytest.mark.parametrize("answer", ["reference", "solution"])
@pytest.mark.parametrize("case", [1, 2, 3])
def test_logit_gradient_equals_torch_autograd(answer, case):
    fn = checks.logit_gradient_mlp if answer == "reference" else solution(STEM, "logit_gradient")
    W1, b1, W2, b2, x, target = checks.lg_case(case)
    model = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0]), torch.nn.ReLU(),
                                torch.nn.Linear(W2.shape[1], W2.shape[0])).double()
    model.load_state_dict({"0.weight": torch.tensor(W1), "0.bias": torch.tensor(b1),
                           "2.weight": torch.tensor(W2), "2.bias": torch.tensor(b2)})
    expected = xt.logit_gradient(model, torch.tensor(x), torch.as_tensor(target)).numpy()
    np.testing.assert_allclose(fn(W1, b1, W2, b2, x, target), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [1, 2, 3])
def test_smoothgrad_form_equals_a_loop_over_the_copies(case):
    model, x, target, noise = checks.sg_case(case)
    got = checks.smoothgrad_abs_after(model, x, target, noise)
    loop = torch.stack([xt.logit_gradient(model, x + eps, target) for eps in noise]).mean(0).abs()
    torch.testing.assert_close(got, loop, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(solution(STEM, "smoothgrad")(model, x, target, noise), got, rtol=1e-10, atol=1e-12)


def test_integrated_gradients_form_equals_numpy_impl_and_is_complete():
    grad_fn, x, baseline, steps, f = checks.ig_case(3, with_f=True)
    got = checks.integrated_gradients_rule(grad_fn, x, baseline, steps)
    params = checks._mlp_params()
    attr, delta = xn.integrated_gradients(params, x, 6, baseline=baseline, steps=steps)
    np.testing.assert_allclose(got, attr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.sum(1) - (f(x) - f(baseline)), delta, atol=1e-10)
    # exact on a gradient that is linear along the path
    grad_fn, x, baseline, steps, f = checks.ig_case(1, with_f=True)
    np.testing.assert_allclose(solution(STEM, "integrated_gradients")(grad_fn, x, baseline, steps).sum(1),
                               f(x) - f(baseline), rtol=1e-12)


# --------------------------------------------------------------------------- diagnoses that are not table rows

def test_logit_gradient_shape_error_in_the_backward_pass_is_translated():
    def logit_gradient(W1, b1, W2, b2, x, target):
        z = x @ W1.T + b1
        e = np.zeros((len(x), len(b2)))
        e[np.arange(len(x)), target] = 1
        return ((e @ W2) * (z > 0)) @ W1.T                     # (N, H) @ (D, H): does not fit
    _fails("logit_gradient", logit_gradient, "W1 is in torch's nn.Linear layout", mistake="W1 read as (D, H)")


def test_logit_gradient_float32_is_named():
    def logit_gradient(W1, b1, W2, b2, x, target):
        return solution(STEM, "logit_gradient")(W1, b1, W2, b2, x, target).astype(np.float32)
    _fails("logit_gradient", logit_gradient, "the gradient (", mistake="float32")


def test_logit_gradient_that_raises_shows_the_error_and_the_case():
    def logit_gradient(W1, b1, W2, b2, x, target):
        raise KeyError("oops")
    result = _fails("logit_gradient", logit_gradient, "logit_gradient raised KeyError", status="raised")
    assert "lg_case(1)" in result.details


def test_integrated_gradients_nan_is_named():
    def integrated_gradients(grad_fn, x, baseline, steps):
        out = solution(STEM, "integrated_gradients")(grad_fn, x, baseline, steps)
        return out / (x - baseline != 0)                      # 0 / 0 where x equals the baseline
    grad_fn, x, baseline, steps = checks.ig_case(1)
    assert np.all(x != baseline)                              # case 1 passes; case 2 has zeros in x
    _fails("integrated_gradients", integrated_gradients, "the attributions (")
    result = ch09.run("integrated_gradients", integrated_gradients)
    assert "NaN or inf" in result.message


def test_integrated_gradients_incomplete_attributions_are_measured():
    def integrated_gradients(grad_fn, x, baseline, steps):
        out = solution(STEM, "integrated_gradients")(grad_fn, x, baseline, steps)
        return out + 0.01 * (x - baseline)                     # no row of the table: just wrong
    result = _fails("integrated_gradients", integrated_gradients, "completeness fails: row", mistake="completeness")
    assert "relative error" in result.message


def test_integrated_gradients_endless_loop_is_stopped(monkeypatch):
    def integrated_gradients(grad_fn, x, baseline, steps):
        while True:
            pass
    monkeypatch.setattr(ch09._exercises["integrated_gradients"], "seconds", 1.0)
    _fails("integrated_gradients", integrated_gradients, "too slow", status="too slow")


def test_smoothgrad_copies_not_flattened_are_explained():
    def smoothgrad(model, x, target, noise):
        batch = (x.unsqueeze(0) + noise).detach().requires_grad_(True)    # (S, N, ...) given to the model
        t = torch.as_tensor(target).long().expand(x.shape[0])
        out = model(batch)                                                 # the MLP takes it, the CNN does not
        score = out.gather(-1, t.expand(noise.shape[0], -1)[..., None]).sum()
        (g,) = torch.autograd.grad(score, batch)
        return g.mean(0).abs()
    _fails("smoothgrad", smoothgrad, "the model cannot take the copies as they are")


# --------------------------------------------------------------------------- valid alternatives pass

def test_smoothgrad_with_backward_and_sqrt_of_square_passes():
    def smoothgrad(model, x, target, noise):
        grads = []
        n = x.shape[0]
        t = torch.as_tensor(target).long().expand(n)
        for eps in noise:                                      # one copy at a time, .backward()
            xi = (x + eps).detach().requires_grad_(True)
            model.zero_grad()
            model(xi)[torch.arange(n), t].sum().backward()
            grads.append(xi.grad)
        mean = torch.stack(grads).mean(0)
        return torch.sqrt(mean ** 2)                           # |mean| another way
    _passes("smoothgrad", smoothgrad)


def test_logit_gradient_with_np_abs_free_loop_passes():
    def logit_gradient(W1, b1, W2, b2, x, target):
        target = np.broadcast_to(target, (len(x),))
        rows = []
        for xn_, t in zip(x, target):                          # one row at a time
            z = W1 @ xn_ + b1
            rows.append(W1.T @ (W2[t] * np.where(z > 0, 1.0, 0.0)))
        return np.array(rows)
    _passes("logit_gradient", logit_gradient)


def test_integrated_gradients_vectorised_passes():
    def integrated_gradients(grad_fn, x, baseline, steps):
        t, v = np.polynomial.legendre.leggauss(steps)
        path = baseline[None] + ((t + 1) / 2)[:, None, None] * (x - baseline)[None]
        g = grad_fn(path.reshape(-1, x.shape[1])).reshape(path.shape)
        return (x - baseline) * np.einsum("s,snd->nd", v / 2, g)
    _passes("integrated_gradients", integrated_gradients)


# --------------------------------------------------------------------------- exercises 4-7: the forms

@pytest.mark.parametrize("case", [1, 2, 3])
def test_occlusion_form_equals_a_naive_loop_and_the_torch_twin(case):
    model_fn, image, target, patch, stride, baseline = checks.oc_case(case)
    got = checks.occlusion_map(model_fn, image, target, patch, stride, baseline)
    np.testing.assert_allclose(solution(STEM, "occlusion")(model_fn, image, target, patch, stride, baseline), got,
                               rtol=1e-12, atol=1e-12)
    if case == 3:                                              # the digits MLP: torch_impl's batched occlusion
        twin, _ = xt.occlusion(checks._model64("mlp"), torch.tensor(image.reshape(1, 64)), target, patch, stride,
                               baseline)
        np.testing.assert_allclose(twin.numpy().reshape(8, 8), got, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [1, 2])
def test_grad_cam_form_equals_a_hand_computation(case):
    model, layer, x, target = checks.gc_case(case)
    a, g = xt.layer_activations_and_grads(model, x, target, layer)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    by_hand = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(checks.grad_cam_hooks(model, layer, x, target), by_hand, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(solution(STEM, "grad_cam")(model, layer, x, target), by_hand, rtol=1e-10, atol=1e-12)


def test_attack_forms_equal_numpy_impl_on_the_float64_mlp():
    params = checks._mlp_params()
    model, x, y, eps = checks.fgsm_case(3)
    np.testing.assert_allclose(checks.fgsm_attack(model, x, y, eps).numpy(), xn.fgsm(params, x.numpy(), y.numpy(), eps),
                               atol=1e-12)
    model, x, y, eps, alpha, steps, start = checks.pgd_case(2)
    theirs = xn.pgd(params, x.numpy(), y.numpy(), eps, alpha, steps)       # no random start ...
    ours = checks.pgd_from_start(model, x, y, eps, alpha, steps, torch.zeros_like(x))   # ... = a zero start
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-12)
    for case in (1, 2, 3):
        args = checks.pgd_case(case)
        torch.testing.assert_close(solution(STEM, "pgd")(*args), checks.pgd_from_start(*args), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- exercises 4-7: not table rows

def test_occlusion_returning_the_map_and_its_calls_is_told_the_form():
    def occlusion(model_fn, image, target, patch, stride, baseline):
        return solution(STEM, "occlusion")(model_fn, image, target, patch, stride, baseline), 10
    _fails("occlusion", occlusion, "occlusion returned a tuple of 2 items: return the map alone")


def test_occlusion_flat_map_is_told_the_shape():
    def occlusion(model_fn, image, target, patch, stride, baseline):
        return solution(STEM, "occlusion")(model_fn, image, target, patch, stride, baseline).ravel()
    _fails("occlusion", occlusion, "the map is flat")


def test_grad_cam_left_at_the_layer_size_without_channel_axis_is_named():
    def grad_cam(model, layer, x, target):
        return checks.gc_no_upsampling(model, layer, x, target)[:, 0]          # (N, h, w)
    _fails("grad_cam", grad_cam, "the map is still the layer's size", mistake="no upsampling")


def test_pgd_requires_grad_on_a_non_leaf_is_named_not_detached():
    def pgd(model, x, y, eps, alpha, steps, start):
        x_adv = (x + start).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)                          # fails from the 2nd step on: x_adv is no leaf
            loss = torch.nn.functional.cross_entropy(model(x_adv), y)
            (g,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.min(torch.max(x_adv + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
        return x_adv
    _fails("pgd", pgd, "the values are right, but x_adv still carries", mistake="not detached between steps")


def test_pgd_that_hangs_is_stopped(monkeypatch):
    def pgd(model, x, y, eps, alpha, steps, start):
        while True:
            pass
    monkeypatch.setattr(ch09._exercises["pgd"], "seconds", 1.0)
    _fails("pgd", pgd, "too slow", status="too slow")


def test_pgd_random_extra_noise_is_caught_by_the_ball_or_the_reference():
    def pgd(model, x, y, eps, alpha, steps, start):
        out = solution(STEM, "pgd")(model, x, y, eps, alpha, steps, start)
        return (out + 0.5 * eps).clamp(0, 1)                    # every pixel pushed: leaves the ball
    _fails("pgd", pgd, "x_adv leaves the eps-ball", mistake="outside the ball")


def test_fgsm_returning_nan_is_named():
    def fgsm(model, x, y, eps):
        out = solution(STEM, "fgsm")(model, x, y, eps).clone()
        out[0, 0] = float("nan")
        return out
    result = _fails("fgsm", fgsm, "x_adv (")
    assert "NaN or inf" in result.message


# --------------------------------------------------------------------------- exercises 4-7: alternatives pass

def test_occlusion_vectorised_passes():
    def occlusion(model_fn, image, target, patch, stride, baseline):
        side = image.shape[0]
        corners = [(r, c) for r in range(0, side - patch + 1, stride) for c in range(0, side - patch + 1, stride)]
        masks = np.zeros((len(corners), side, side), dtype=bool)
        for j, (r, c) in enumerate(corners):
            masks[j, r:r + patch, c:c + patch] = True
        batch = np.where(masks, baseline, image[None])                         # all windows in one batch
        drops = model_fn(image[None])[0, target] - model_fn(batch)[:, target]
        count = masks.sum(0)
        return np.where(count > 0, np.tensordot(drops, masks, axes=1) / np.maximum(count, 1), 0.0)
    _passes("occlusion", occlusion)


def test_grad_cam_with_a_tensor_hook_and_backward_passes():
    def grad_cam(model, layer, x, target):
        kept = {}

        def forward_hook(module, inputs, output):
            kept["A"] = output
            output.register_hook(lambda grad: kept.__setitem__("dA", grad))   # a tensor hook for the gradient
        handle = layer.register_forward_hook(forward_hook)
        out = model(x)
        handle.remove()
        n = x.shape[0]
        out[torch.arange(n), torch.as_tensor(target).expand(n)].sum().backward()
        weights = kept["dA"].mean(dim=(2, 3))                                   # (N, C)
        cam = torch.relu(torch.einsum("nc,nchw->nhw", weights, kept["A"].detach()))
        return torch.nn.functional.interpolate(cam.unsqueeze(1), size=tuple(x.shape[2:]), mode="bilinear",
                                               align_corners=False)
    _passes("grad_cam", grad_cam)


def test_fgsm_with_backward_and_a_summed_loss_passes():
    def fgsm(model, x, y, eps):
        xr = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xr), y, reduction="sum").backward()   # sum: same signs
        return torch.clamp(x + eps * torch.sign(xr.grad), 0.0, 1.0)
    _passes("fgsm", fgsm)


def test_pgd_with_clamp_bounds_and_backward_passes():
    def pgd(model, x, y, eps, alpha, steps, start):
        x_adv = torch.clamp(x + start, 0, 1)
        for _ in range(steps):
            x_adv = x_adv.clone().detach().requires_grad_(True)
            torch.nn.functional.cross_entropy(model(x_adv), y).backward()
            with torch.no_grad():
                x_adv = x_adv + alpha * x_adv.grad.sign()
                x_adv = torch.clamp(x_adv, min=x - eps, max=x + eps)            # tensor bounds
                x_adv = torch.clamp(x_adv, 0, 1)
        return x_adv.detach()
    _passes("pgd", pgd)


def test_smoothgrad_built_on_the_course_logit_gradient_earns_nothing():
    def smoothgrad(model, x, target, noise):
        return torch.stack([xt.logit_gradient(model, x + eps, target) for eps in noise]).mean(0).abs()
    _fails("smoothgrad", smoothgrad, "no points for the course's own code", status="course code")


# --------------------------------------------------------------------------- rules the values cannot show (review 9)

def _in_float32_then_float64(reference):
    """An answer that works in float32 (model.float(), x.float()) and hands back float64: right to about 1e-8."""
    def answer(*args):
        return reference(*checks._float32_copy(args)).double()
    return answer


@pytest.mark.parametrize("name", ["smoothgrad", "grad_cam", "fgsm", "pgd"])
def test_float32_work_returned_as_float64_is_named(name):
    # named by recomputing the row where float32 round-off is above 1e-6 (smoothgrad, grad_cam), else by comparing
    # with the answer computed in float32 (fgsm, pgd)
    result = _fails(name, _in_float32_then_float64(solution(STEM, name)), "the computation ran in float32",
                    mistake="float32")
    assert "leaves the eps-ball" not in result.message and "max error" not in result.message


def test_smoothgrad_float32_accumulator_is_named():
    def smoothgrad(model, x, target, noise):
        total = torch.zeros(x.shape)                            # float32 by default: += rounds every gradient
        for eps in noise:
            xi = (x + eps).detach().requires_grad_(True)
            n = x.shape[0]
            model(xi)[torch.arange(n), torch.as_tensor(target).expand(n)].sum().backward()
            total += xi.grad
        return (total / noise.shape[0]).abs()
    result = _fails("smoothgrad", smoothgrad, "the computation ran in float32", mistake="float32")
    assert "torch.float32" in result.message


@pytest.mark.parametrize("kind", ["forward", "full backward", "parameter tensor hook", "global forward"])
def test_grad_cam_hooks_left_behind_are_named(kind):
    def grad_cam(model, layer, x, target):
        if kind == "forward":
            layer.register_forward_hook(lambda m, i, o: None)
        elif kind == "full backward":
            layer.register_full_backward_hook(lambda m, gi, go: None)
        elif kind == "parameter tensor hook":
            layer.weight.register_hook(lambda g: None)
        else:
            handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
            grad_cam.handles.append(handle)
        return solution(STEM, "grad_cam")(model, layer, x, target)
    grad_cam.handles = []
    try:
        result = _fails("grad_cam", grad_cam, "the values are right, but a hook is still registered",
                        mistake="hook never removed")
    finally:
        for handle in grad_cam.handles:
            handle.remove()
    assert "1 more hook than before the call" in result.message


def test_grad_cam_no_upsampling_advice_fits_a_map_with_its_channel_axis():
    result = _fails("grad_cam", checks.gc_no_upsampling, "the map is still the layer's size")
    assert "cam[:, None]" not in result.message and "F.interpolate(cam, size=x.shape[-2:]" in result.message
    # the advice, followed on an (N, 1, h, w) map, gives the answer
    model, layer, x, target = checks.gc_case(2)
    cam = checks.gc_no_upsampling(model, layer, x, target)
    assert cam.shape[1] == 1
    fixed = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(fixed, checks.grad_cam_hooks(*checks.gc_case(2)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["grad_cam", "pgd"])
def test_torch_exercises_returning_numpy_are_told_the_type(name):
    def answer(*args):
        return solution(STEM, name)(*args).numpy()
    _fails(name, answer, f"{name} returned a NumPy array: return", mistake="NumPy array returned")


def test_integrated_gradients_returning_a_tensor_is_told_the_type():
    def integrated_gradients(grad_fn, x, baseline, steps):
        return torch.as_tensor(solution(STEM, "integrated_gradients")(grad_fn, x, baseline, steps))
    _fails("integrated_gradients", integrated_gradients, "integrated_gradients returned a torch tensor: this is a "
           "NumPy exercise", mistake="torch tensor returned")


def test_integrated_gradients_grad_fn_on_a_3d_array_is_told_the_contract():
    def integrated_gradients(grad_fn, x, baseline, steps):
        t, v = np.polynomial.legendre.leggauss(steps)
        path = baseline[None] + ((t + 1) / 2)[:, None, None] * (x - baseline)[None]   # (S, N, D)
        return (x - baseline) * np.tensordot(v / 2, grad_fn(path), axes=1)         # grad_fn given (S, N, D)
    result = _fails("integrated_gradients", integrated_gradients, "integrated_gradients raised ValueError: grad_fn "
                    "takes the points as one (M, D) array")
    assert "(4, 2, 3)" in result.message


def test_pgd_that_clamps_the_callers_x_in_place_is_named():
    def pgd(model, x, y, eps, alpha, steps, start):
        out = solution(STEM, "pgd")(model, x.clone(), y, eps, alpha, steps, start)
        x.copy_(out)                                            # the caller's x overwritten
        return out
    _fails("pgd", pgd, "pgd changed the tensor it was given as `x` in place", mistake="mutated input")


def test_smoothgrad_that_makes_the_callers_x_require_grad_is_named():
    def smoothgrad(model, x, target, noise):
        x.requires_grad_(True)
        return solution(STEM, "smoothgrad")(model, x.detach(), target, noise)
    _fails("smoothgrad", smoothgrad, "smoothgrad switched on requires_grad of the tensor it was given as `x`",
           mistake="input made to require grad")


def test_smoothgrad_and_grad_cam_not_detached_still_pass():
    def smoothgrad(model, x, target, noise):
        batch = (x.unsqueeze(0) + noise).reshape(-1, *x.shape[1:]).requires_grad_(True)
        t = torch.as_tensor(target).long().expand(x.shape[0]).repeat(noise.shape[0])
        (g,) = torch.autograd.grad(model(batch).gather(1, t[:, None]).sum(), batch, create_graph=True)
        return g.reshape(noise.shape).mean(0).abs()             # part of a graph: allowed
    _passes("smoothgrad", smoothgrad)

    def grad_cam(model, layer, x, target):
        return solution(STEM, "grad_cam")(model, layer, x, target).requires_grad_(True)   # not detached
    _passes("grad_cam", grad_cam)


def test_fgsm_that_switches_requires_grad_back_off_passes():
    def fgsm(model, x, y, eps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), x)
        x.requires_grad_(False)                                 # the caller's x as it was
        return (x + eps * g.sign()).clamp(0, 1)
    _passes("fgsm", fgsm)
