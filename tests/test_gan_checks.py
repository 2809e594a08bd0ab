"""Chapter 08's graded exercises (dlcourse/gan/checks.py): the exercise forms equal NumPy / PyTorch, the
checks' diagnoses that are not mistake-table rows, and valid alternative answers pass
(tests/test_course.py proves every row)."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from checktools import solution
from dlcourse.gan import checks
from dlcourse.gan import numpy_impl as ref
from dlcourse.gan.checks import check as ch08

STEM = "08_gan"

from dlcourse.gan import torch_impl as tg


def _passes(name, fn):
    result = ch08.run(name, fn)
    assert result.passed, f"{result.message}\n{result.details}"


def _fails(name, fn, start, mistake=None):
    result = ch08.run(name, fn)
    assert not result.passed and result.message.startswith(start), result.message
    if mistake is not None:
        assert result.mistake == mistake, result.mistake
    return result


# --------------------------------------------------------------------------- the exercise forms equal autograd

@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_kl_form_equals_torch_autograd(answer):
    fn = checks.kl_gaussian_with_grads if answer == "reference" else solution(STEM, "kl_gaussian")
    rng = np.random.default_rng(0)
    mu, lv = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    mt, lt = torch.tensor(mu, requires_grad=True), torch.tensor(lv, requires_grad=True)
    kl = (-0.5 * (1 + lt - mt ** 2 - lt.exp()).sum(dim=1)).mean()
    kl.backward()
    got = fn(mu, lv)
    np.testing.assert_allclose(got[0], kl.item(), rtol=1e-12)
    np.testing.assert_allclose(got[1], mt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(got[2], lt.grad.numpy(), rtol=1e-12)


def test_r1_form_equals_the_numpy_double_backward():
    D, x, gamma = checks.r1_case(2)
    penalty = checks.r1_penalty_torch(D, x, gamma)
    penalty.backward()
    params = {k: v.detach().numpy() for k, v in D.state_dict().items()}
    value, grads = ref.r1_penalty(params, x.numpy(), gamma)
    np.testing.assert_allclose(penalty.item(), value, rtol=1e-10)
    for name, p in D.named_parameters():
        got = np.zeros_like(grads[name]) if p.grad is None else p.grad.numpy()   # biases: no path, zero
        np.testing.assert_allclose(got, grads[name], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("answer", ["reference", "solution"])
def test_gan_step_form_equals_the_course_gan_step(answer):
    fn = checks.gan_train_step_reference if answer == "reference" else solution(STEM, "gan_train_step")
    ours = checks._run_steps(fn, 3)
    theirs = checks._run_steps(lambda *a: tuple(tg.gan_step(*a).values())[::2], 3)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)
    np.testing.assert_allclose(np.ravel(ours[0]), np.ravel(theirs[0]), rtol=1e-12)
    assert ours[2] == theirs[2] == 1                          # G gets gradients once a step


def test_r1_form_equals_the_course_twin():
    D, x, gamma = checks.r1_case(3)
    assert checks.r1_penalty_torch(D, x, gamma).item() == pytest.approx(tg.r1_penalty(D, x, gamma).item(), rel=1e-12)


# --------------------------------------------------------------------------- diagnoses that are not table rows

def test_d_loss_sigmoid_that_overflows_in_the_gradient_is_named():
    def d_loss(real_logits, fake_logits):
        loss = np.mean(np.logaddexp(0, -real_logits)) + np.mean(np.logaddexp(0, fake_logits))
        sig = lambda t: np.exp(t) / (1 + np.exp(t))                     # inf / inf = nan at t = 800
        return loss, -sig(-real_logits) / real_logits.size, sig(fake_logits) / fake_logits.size
    _fails("d_loss_from_logits", d_loss, "dreal contains NaN or inf at logits of size 800", "sigmoid overflows")


def test_d_loss_clipped_probabilities_are_named():
    def d_loss(real_logits, fake_logits):
        p_r = np.clip(1 / (1 + np.exp(-real_logits)), 1e-7, 1 - 1e-7)
        p_f = np.clip(1 / (1 + np.exp(-fake_logits)), 1e-7, 1 - 1e-7)
        return (-np.mean(np.log(p_r)) - np.mean(np.log(1 - p_f)), (p_r - 1) / real_logits.size,
                p_f / fake_logits.size)
    _fails("d_loss_from_logits", d_loss, "the loss is right on small logits but wrong at logits of size 800",
           "large logits")


def test_fid_shape_error_of_the_wrong_axis_is_translated():
    right = solution(STEM, "fid")

    def fid(features1, features2):
        if len(features1) != len(features2):
            s1, s2 = np.cov(features1), np.cov(features2)               # (N1, N1) + (N2, N2)
            return float(np.trace(s1 + s2))
        return right(features1, features2)
    result = _fails("fid", fid, checks.FID_MISTAKES[0].message, "covariance over the wrong axis")
    assert "(N1, N1) = (5, 5) and (N2, N2) = (7, 7) do not fit" in result.message


def test_fid_returning_an_array_is_told_to_return_a_number():
    right = solution(STEM, "fid")
    _fails("fid", lambda a, b: np.array([right(a, b)]), "fid returned ndarray of shape (1,)")


def test_r1_returning_a_float_is_told_to_return_the_tensor():
    right = solution(STEM, "r1_penalty")
    _fails("r1_penalty", lambda D, x, gamma: right(D, x, gamma).item(), "r1_penalty returned a float")


def test_modes_covered_returning_only_the_count():
    right = solution(STEM, "modes_covered")
    _fails("modes_covered", lambda *a: right(*a)[0], "modes_covered must return three values")


def test_kl_mutating_its_input_is_named():
    right = solution(STEM, "kl_gaussian")

    def kl(mu, logvar):
        out = right(mu, logvar)
        mu *= 2
        return out
    _fails("kl_gaussian", kl, "kl mutated its input `mu`", "mutated input")


def _gan_with(d_part, g_part):
    def step(G, D, opt_g, opt_d, x_real, z):
        fake = G(z)
        d_loss = d_part(G, D, opt_d, x_real, z, fake)
        g_loss = g_part(G, D, opt_g, z, fake)
        return d_loss, g_loss
    return step


def _d_right(G, D, opt_d, x_real, z, fake):
    loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake.detach())).mean()
    opt_d.zero_grad()
    loss.backward()
    opt_d.step()
    return loss.item()


def _g_right(G, D, opt_g, z, fake):
    loss = F.softplus(-D(fake)).mean()
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    return loss.item()


def test_gan_no_detach_with_a_fresh_fake_and_zero_grad_is_still_named():
    def d_no_detach(G, D, opt_d, x_real, z, fake):
        loss = F.softplus(-D(x_real)).mean() + F.softplus(D(G(z))).mean()     # harmless here, but G gets grads
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        return loss.item()
    row = next(m for m in checks.GAN_MISTAKES if m.name == "no detach (weights right)")
    result = _fails("gan_train_step", _gan_with(d_no_detach, _g_right), row.message, row.name)
    assert "received gradients 2 times a step" in result.message


def test_gan_no_detach_reusing_the_fake_is_translated():
    def d_no_detach(G, D, opt_d, x_real, z, fake):
        loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake)).mean()      # frees fake's graph
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        return loss.item()
    result = _fails("gan_train_step", _gan_with(d_no_detach, _g_right), checks.GAN_MISTAKES[0].message, "no detach")
    assert "backward through the graph a second time" in result.message


def test_gan_g_loss_from_d_before_its_step_is_explained():
    def step(G, D, opt_g, opt_d, x_real, z):
        fake = G(z)
        s_fake = D(fake)                                                        # before D's step
        d_loss = F.softplus(-D(x_real)).mean() + F.softplus(s_fake.detach()).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-s_fake).mean()                                     # D's weights changed since
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        return d_loss.item(), g_loss.item()
    _fails("gan_train_step", step, "G's loss goes through D's output computed BEFORE opt_d.step()", "stale D output")


def test_gan_endless_loop_is_stopped(monkeypatch):
    monkeypatch.setattr(ch08._exercises["gan_train_step"], "seconds", 1.0)

    def step(G, D, opt_g, opt_d, x_real, z):
        while True:
            pass
    result = ch08.run("gan_train_step", step)
    assert result.status == "too slow", result.message


def test_gan_returning_a_dict_is_told_the_form():
    right = solution(STEM, "gan_train_step")
    _fails("gan_train_step", lambda *a: dict(zip(("d_loss", "g_loss"), right(*a))),
           "gan_train_step must return two numbers (d_loss, g_loss)")


# --------------------------------------------------------------------------- valid alternatives pass

def _softplus_by_hand(t):
    return np.maximum(t, 0) + np.log1p(np.exp(-np.abs(t)))


def test_d_and_g_losses_with_a_hand_written_softplus_pass():
    def sig(t):
        return np.where(t >= 0, 1 / (1 + np.exp(-np.abs(t))), np.exp(-np.abs(t)) / (1 + np.exp(-np.abs(t))))

    def d_loss(real_logits, fake_logits):
        loss = _softplus_by_hand(-real_logits).mean() + _softplus_by_hand(fake_logits).mean()
        return loss, (sig(real_logits) - 1) / len(real_logits), sig(fake_logits) / len(fake_logits)

    def g_loss(fake_logits):
        return _softplus_by_hand(-fake_logits).mean(), (sig(fake_logits) - 1) / len(fake_logits)
    _passes("d_loss_from_logits", d_loss)
    _passes("g_loss_nonsaturating", g_loss)


def test_fid_with_np_cov_and_scipy_sqrtm_passes():
    def fid(features1, features2):
        mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
        s1, s2 = np.cov(features1, rowvar=False), np.cov(features2, rowvar=False)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(covmean)))
    _passes("fid", fid)


def test_fid_with_clipped_eigenvalues_of_the_product_passes():
    def fid(features1, features2):
        mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
        s1, s2 = np.cov(features1.T), np.cov(features2.T)
        ev = np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev).sum())
    _passes("fid", fid)


def test_r1_with_grad_outputs_and_a_clone_passes():
    def r1(D, x_real, gamma):
        x = x_real.clone().requires_grad_()
        out = D(x)
        (g,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), create_graph=True)
        return 0.5 * gamma * (g * g).sum(1).mean()
    _passes("r1_penalty", r1)


def test_gan_step_alternatives_pass():
    def bce_order(G, D, opt_g, opt_d, x_real, z):
        opt_d.zero_grad()                                               # zeroed first, two backward calls
        real, fake = D(x_real), D(G(z).detach())
        loss_r = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        loss_f = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        loss_r.backward()
        loss_f.backward()
        opt_d.step()
        opt_g.zero_grad()
        s = D(G(z))                                                     # the fakes made again: the same
        g_loss = F.binary_cross_entropy_with_logits(s, torch.ones_like(s))
        g_loss.backward()
        opt_g.step()
        return (loss_r + loss_f).item(), g_loss.item()

    def both_zeroed_at_the_top(G, D, opt_g, opt_d, x_real, z):
        opt_g.zero_grad()
        opt_d.zero_grad()
        fake = G(z)
        d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake.detach())).mean()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(fake)).mean()
        g_loss.backward()
        opt_g.step()
        return float(d_loss), float(g_loss)
    _passes("gan_train_step", bce_order)
    _passes("gan_train_step", both_zeroed_at_the_top)


def test_gan_step_softplus_of_d_logits_detached_is_named():
    def step(G, D, opt_g, opt_d, x_real, z):
        fake = G(z)
        d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake)).detach().mean()   # after the softplus
        opt_d.zero_grad(); d_loss.backward(); opt_d.step()
        g_loss = F.softplus(-D(fake)).mean()
        opt_g.zero_grad(); g_loss.backward(); opt_g.step()
        return d_loss.item(), g_loss.item()
    _fails("gan_train_step", step, "D received no gradient from the fake half", "D's logits detached")


def test_gan_step_without_detach_but_g_recomputed_says_the_weights_match():
    def step(G, D, opt_g, opt_d, x_real, z):
        d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(G(z))).mean()           # no detach
        opt_d.zero_grad(); d_loss.backward(); opt_d.step()
        g_loss = F.softplus(-D(G(z))).mean()
        opt_g.zero_grad(); g_loss.backward(); opt_g.step()
        return d_loss.item(), g_loss.item()
    _fails("gan_train_step", step, "the weights match, but the fake batch is not detached", "no detach (weights right)")


def test_g_loss_log1p_exp_overflow_is_named_as_an_overflow():
    def g_loss(fake_logits):
        sig = np.exp(-np.logaddexp(0, -fake_logits))
        return np.mean(np.log1p(np.exp(-fake_logits))), (sig - 1) / fake_logits.size
    with np.errstate(all="ignore"):
        result = _fails("g_loss_nonsaturating", g_loss, "the loss is not finite at large logits", "sigmoid then log")
    assert "np.exp(800) = inf" in result.message


def test_kl_generic_sign_and_batch_factor_are_named():
    def kl_reparam_sign(dz, logvar, eps):          # dlogvar's sign flipped: no row, the generic fallback
        return dz.copy(), -dz * eps * 0.5 * np.exp(logvar / 2)
    _fails("reparameterize_backward", kl_reparam_sign, "dlogvar has the wrong sign", "constant factor")

    def d_loss(real_logits, fake_logits):          # dfake divided by N twice
        sp = lambda t: np.logaddexp(0, t)
        sg = lambda t: np.exp(-np.logaddexp(0, -t))
        n, m = real_logits.size, fake_logits.size
        return np.mean(sp(-real_logits)) + np.mean(sp(fake_logits)), -sg(-real_logits) / n, sg(fake_logits) / m / m
    result = ch08.run("d_loss_from_logits", d_loss)
    assert not result.passed and "dfake is exactly N = 4 (the batch size) times too small" in result.message, result.message


def test_kl_and_r1_rows_named_from_the_message():
    _fails("kl_gaussian", checks.kl_dlogvar_sign_flipped, "the KL and dmu are right but dlogvar has the wrong sign")
    _fails("r1_penalty", checks.r1_mean_before_grad, "the per-sample gradients are divided by N")
