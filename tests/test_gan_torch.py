"""Tests for dlcourse.gan.torch_impl: the ring twins == the NumPy GAN, R1 and one GAN step with
autograd, FID / IS twins, the course classifier, autoencoders, the VAE, the digits GAN.

Fast: tiny budgets, step-counted (not timed) training.  No timing asserts (the FID goal and the
speeds live in benchmarks/bench_gan_digits.py).
"""
import copy
import math

import numpy as np
import pytest
import torch

from dlcourse.gan import torch_impl as G

np_impl = pytest.importorskip("dlcourse.gan.numpy_impl")


def _ring_pair(hidden=16, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    params_g = np_impl.init_mlp([2, hidden, hidden, 2], rng, dtype)
    params_d = np_impl.init_mlp([2, hidden, hidden, 1], rng, dtype)
    return params_g, params_d


# --------------------------------------------------------------------------- ring twins

def test_ring_mlp_state_dict_keys_and_shapes():
    g, d = G.ring_generator(8), G.ring_discriminator(8)
    assert list(g.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert g.fc1.weight.shape == (8, 2) and d.fc3.weight.shape == (1, 8)
    assert g(torch.randn(5, 2)).shape == (5, 2) and d(torch.randn(5, 2)).shape == (5, 1)


def test_ring_mlp_equals_numpy_forward_backward():
    params_g, params_d = _ring_pair()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 2))
    for params, out_dim in ((params_g, 2), (params_d, 1)):
        module = G.load_params(G.RingMLP((2, 16, 16, out_dim)), params)
        assert module.fc1.weight.dtype == torch.float64
        out, cache = np_impl.mlp_forward(params, x)
        dout = rng.standard_normal(out.shape)
        dx, grads = np_impl.mlp_backward(dout, cache)
        xt = torch.from_numpy(x).requires_grad_()
        yt = module(xt)
        yt.backward(torch.from_numpy(dout))
        np.testing.assert_allclose(yt.detach().numpy(), out, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-10, atol=1e-12)
        for name, p in module.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), grads[name], rtol=1e-10, atol=1e-12)
        back = G.params_of(module)
        assert all(np.array_equal(back[k], params[k]) for k in params)


def test_r1_penalty_equals_numpy_value_and_gradients():
    _, params_d = _ring_pair()
    x = np.random.default_rng(2).standard_normal((9, 2))
    value, grads = np_impl.r1_penalty(params_d, x, gamma=1.7)
    D = G.load_params(G.ring_discriminator(16), params_d)
    r1 = G.r1_penalty(D, torch.from_numpy(x), 1.7)
    r1.backward()
    np.testing.assert_allclose(float(r1.detach()), value, rtol=1e-10)
    for name, p in D.named_parameters():
        got = p.grad.numpy() if p.grad is not None else np.zeros_like(grads[name])
        np.testing.assert_allclose(got, grads[name], rtol=1e-9, atol=1e-12)


def test_losses_from_logits_equal_numpy_and_are_stable():
    rng = np.random.default_rng(3)
    sr, sf = rng.standard_normal((6, 1)) * 3, rng.standard_normal((6, 1)) * 3
    tr, tf = torch.from_numpy(sr), torch.from_numpy(sf)
    np.testing.assert_allclose(float(G.d_loss_from_logits(tr, tf)), np_impl.d_loss_from_logits(sr, sf)[0], rtol=1e-12)
    np.testing.assert_allclose(float(G.g_loss_nonsaturating(tf)), np_impl.g_loss_nonsaturating(sf)[0], rtol=1e-12)
    np.testing.assert_allclose(float(G.g_loss_minimax(tf)), np_impl.g_loss_minimax(sf)[0], rtol=1e-12)
    big = torch.tensor([[1e4], [-1e4]], dtype=torch.float32)
    assert math.isfinite(float(G.d_loss_from_logits(big, big))) and math.isfinite(float(G.g_loss_nonsaturating(big)))


# --------------------------------------------------------------------------- one GAN step

def _step_setup(seed=0):
    torch.manual_seed(seed)
    g, d = G.ring_generator(16).double(), G.ring_discriminator(16).double()
    x, z = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    return g, d, x, z


@pytest.mark.parametrize("r1_gamma", [0.0, 1.0])
def test_gan_step_updates_as_written(r1_gamma):
    """With SGD: D moves by -lr * grad of (D loss on G(z).detach() + R1), computed before the
    step; G moves by -lr * grad of its loss through the UPDATED D; G's step leaves D alone."""
    g, d, x, z = _step_setup()
    lr = 0.1
    # the expected D update, by hand
    d_ref = copy.deepcopy(d)
    loss = G.d_loss_from_logits(d_ref(x), d_ref(g(z).detach())) + (G.r1_penalty(d_ref, x, r1_gamma) if r1_gamma else 0)
    grads_d = torch.autograd.grad(loss, list(d_ref.parameters()))
    expected_d = [p.detach() - lr * gr for p, gr in zip(d_ref.parameters(), grads_d)]
    with torch.no_grad():
        for p, new in zip(d_ref.parameters(), expected_d):
            p.copy_(new)
    g_ref = copy.deepcopy(g)
    grads_g = torch.autograd.grad(G.g_loss_nonsaturating(d_ref(g_ref(z))), list(g_ref.parameters()))
    expected_g = [p.detach() - lr * gr for p, gr in zip(g_ref.parameters(), grads_g)]

    calls = {name: 0 for name, _ in g.named_parameters()}   # how often a gradient reaches each G parameter
    for name, p in g.named_parameters():
        p.register_hook(lambda grad, name=name: calls.__setitem__(name, calls[name] + 1))
    opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=lr), torch.optim.SGD(d.parameters(), lr=lr)
    out = G.gan_step(g, d, opt_g, opt_d, x, z, r1_gamma=r1_gamma)
    assert set(out) == {"d_loss", "r1", "g_loss"} and all(math.isfinite(v) for v in out.values())
    assert (out["r1"] > 0) == (r1_gamma > 0)
    for p, want in zip(d.parameters(), expected_d):
        torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-14)
    for p, want in zip(g.parameters(), expected_g):
        torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-14)
    assert set(calls.values()) == {1}      # only G's own loss reached G: the D step used G(z).detach()


def test_gan_step_minimax_and_bad_loss():
    g, d, x, z = _step_setup(1)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    out = G.gan_step(g, d, opt_g, opt_d, x, z, g_loss="minimax")
    assert out["g_loss"] < 0
    with pytest.raises(ValueError):
        G.gan_step(g, d, opt_g, opt_d, x, z, g_loss="wasserstein")


# --------------------------------------------------------------------------- FID, IS, the classifier

def test_fid_and_inception_score_equal_numpy():
    rng = np.random.default_rng(4)
    f1, f2 = rng.standard_normal((50, 6)), rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6)) + 0.5
    want = np_impl.fid(f1, f2)
    np.testing.assert_allclose(G.fid(torch.from_numpy(f1), torch.from_numpy(f2)), want, rtol=1e-10)
    assert abs(G.fid(torch.from_numpy(f1), torch.from_numpy(f1))) < 1e-9
    # fewer samples than features: singular covariances, eigenvalues ~1e-16 clipped at 0 or not;
    # their square roots (~1e-8) are round-off, so the twins agree to ~1e-9 relative only
    np.testing.assert_allclose(G.fid(torch.from_numpy(f1[:4]), torch.from_numpy(f2[:5])),
                               np_impl.fid(f1[:4], f2[:5]), rtol=1e-7)
    logits = rng.standard_normal((53, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[0] = np.eye(10)[3]                                    # zeros: 0 log 0 = 0
    for splits in (1, 5, 10):
        np.testing.assert_allclose(G.inception_score(torch.from_numpy(probs), splits),
                                   np_impl.inception_score(probs, splits), rtol=1e-10)
    with pytest.raises(ValueError):
        G.inception_score(torch.from_numpy(probs), 0)


def test_course_classifier_is_deterministic_and_accurate():
    model = G.course_classifier()
    assert G.course_classifier(0) is model                     # cached: trained once per process
    fresh = G._trained_classifier.__wrapped__(0, 600)          # trained again, uncached
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert G.classifier_accuracy() >= 0.95
    x = G.digits_for_gan("test")[:5]
    assert G.features(x).shape == (5, 32)
    p = G.class_probs(x)
    assert p.shape == (5, 10) and torch.allclose(p.sum(1), torch.ones(5, dtype=p.dtype))


def test_fid_sanity_cases():
    s = G.fid_sanity()
    assert s["real_train_vs_test"] < 3 and s["noise_vs_test"] > 100
    assert 8 < s["is_real_train"][0] <= 10


# --------------------------------------------------------------------------- autoencoders, VAE

def test_autoencoder_and_vae_shapes():
    x = torch.rand(5, 64)
    ae = G.Autoencoder(latent=3).requires_grad_(False)
    assert ae.encode(x).shape == (5, 3) and ae(x).shape == (5, 64) and 0 <= float(ae(x).min())
    vae = G.VAE(latent=4)
    logits, mu, logvar = vae(x)
    assert logits.shape == (5, 64) and mu.shape == logvar.shape == (5, 4)
    vae.eval()
    assert torch.equal(vae(x)[0], vae.decode(vae.encode(x)[0]))   # eval: decodes the mean


def test_kl_and_reparameterize_equal_numpy():
    rng = np.random.default_rng(5)
    mu, logvar, eps = (rng.standard_normal((6, 3)) for _ in range(3))
    tm, tl = torch.from_numpy(mu).requires_grad_(), torch.from_numpy(logvar).requires_grad_()
    kl = G.kl_gaussian(tm, tl)
    np.testing.assert_allclose(float(kl.detach()), np_impl.kl_gaussian(mu, logvar), rtol=1e-12)
    kl.backward()
    dmu, dlogvar = np_impl.kl_gaussian_backward(mu, logvar)
    np.testing.assert_allclose(tm.grad.numpy(), dmu, rtol=1e-12)
    np.testing.assert_allclose(tl.grad.numpy(), dlogvar, rtol=1e-12)
    z = G.reparameterize(torch.from_numpy(mu), torch.from_numpy(logvar), torch.from_numpy(eps))
    np.testing.assert_allclose(z.numpy(), np_impl.reparameterize(mu, logvar, eps), rtol=1e-12)


@pytest.mark.slow
def test_short_autoencoder_training_lowers_loss_and_is_deterministic():
    model, h = G.train_autoencoder(2, steps=60, eval_every=30, progress=False, device="cpu")
    _, h2 = G.train_autoencoder(2, steps=60, eval_every=30, progress=False, device="cpu")
    assert h.test_mse[-1] < h.test_mse[0] and h.test_mse == h2.test_mse and h.steps == [0, 30, 60]
    assert G.latent_codes(model).shape == (270, 2)
    _, hd = G.train_denoiser(0.3, latent=4, steps=30, eval_every=30, progress=False, device="cpu")
    assert hd.test_mse[-1] < hd.test_mse[0]


@pytest.mark.slow
def test_short_vae_training_lowers_loss_and_samples():
    model, h = G.train_vae(2, steps=80, eval_every=40, progress=False, device="cpu")
    _, h2 = G.train_vae(2, steps=80, eval_every=40, progress=False, device="cpu")
    assert h.train_loss[-1] < h.train_loss[1] and h.test_mse[-1] < h.test_mse[0] and h.test_mse == h2.test_mse
    s = G.sample_vae(model, 7)
    assert s.shape == (7, 64) and 0 <= float(s.min()) and float(s.max()) <= 1
    a = G.latent_analogy(model, 1, 7)
    assert a["outputs"].shape == a["inputs"].shape and 0 <= a["share_target"] <= 1


# --------------------------------------------------------------------------- the digits GAN

@pytest.mark.slow
def test_short_digits_gan_is_deterministic_and_records():
    seen = []
    h = G.train_digits_gan(steps=40, eval_every=20, hidden=32, n_eval=200, progress=False, device="cpu",
                           callback=lambda hist: seen.append(len(hist.fid)))
    h2 = G.train_digits_gan(steps=40, eval_every=20, hidden=32, n_eval=200, progress=False, device="cpu")
    assert h.fid == h2.fid and h.steps == [0, 20, 40] and seen == [1, 2, 3]
    assert h.fid[-1] < h.fid[0] and all(math.isfinite(v) for v in h.d_loss[1:] + h.g_loss[1:] + h.r1[1:])
    assert h.grids[-1].shape == (64, 8, 8) and 1 <= h.inception[0] <= 10
    assert h.seconds_to(float("inf")) == 0.0 and h.seconds_to(-1) == math.inf


def test_interpolation_endpoints():
    torch.manual_seed(0)
    g = G.digits_generator(8, 16)
    z0, z1 = torch.randn(8), torch.randn(8)
    with torch.no_grad():
        ends = g(torch.stack([z0, z1]))
    for mode in ("linear", "spherical"):
        path = G.interpolate(g, z0, z1, 6, mode)
        assert path.shape == (6, 64)
        assert torch.equal(path[0], ends[0]) and torch.equal(path[-1], ends[1])
    with pytest.raises(ValueError):
        G.interpolate(g, z0, z1, 4, "cubic")


def test_scale_up_skips_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: scale_up would train")
    assert G.scale_up(seconds=1) is None
    assert "skipped" in capsys.readouterr().out
