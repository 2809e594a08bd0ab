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
