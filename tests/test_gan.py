"""Chapter 08 · the generative-model pieces and the ring GAN in NumPy == torch autograd.

Property-style: seeded random small configurations, float64, torch as the referee: every
GAN loss and its gradient against ``F.binary_cross_entropy_with_logits`` / ``F.softplus``
(and finite, correct limits at logits of +-1000); the KL term and the reparameterisation
against autograd (and the KL's closed form against a Monte-Carlo estimate); the LeakyReLU
MLP against a tiny torch twin written here; R1 and EVERY parameter gradient against
autograd's double backward (``create_graph=True``) and the numerical gradient; one whole
GAN step (gradients with ``detach``, then Adam) against the same step in torch; FID against
``scipy.linalg.sqrtm`` and its invariances; IS's limits; the mode count on hand-made samples;
training deterministic per seed.
"""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.gan import numpy_impl as gn
from dlcourse.gradcheck import numerical_grad, rel_error

RTOL, ATOL = 1e-10, 1e-12
SEEDS = range(6)


def _t(a, grad=False):
    return torch.from_numpy(np.array(a, dtype=np.float64)).requires_grad_(grad)


def close(actual, expected, what, rtol=RTOL, atol=ATOL):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


class TorchMLP(nn.Module):
    """The test's torch twin of ``mlp_forward``: fc1 .. fcL with LeakyReLU between (none after the last)."""

    def __init__(self, sizes, slope=0.2):
        super().__init__()
        self.n = len(sizes) - 1
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            setattr(self, f"fc{i}", nn.Linear(a, b, dtype=torch.float64))
        self.act = nn.LeakyReLU(slope)

    def forward(self, x):
        for i in range(1, self.n + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.n:
                x = self.act(x)
        return x


def twin(params, sizes):
    m = TorchMLP(sizes)
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    return m


def draw_sizes(rng, out=None):
    depth = int(rng.integers(1, 4))                                       # 1 to 3 linear layers
    sizes = [int(rng.integers(1, 6))] + [int(rng.integers(2, 9)) for _ in range(depth - 1)]
    return sizes + [out if out is not None else int(rng.integers(1, 4))]


def grads_of(module):
    return {k: (p.grad.numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape)))
            for k, p in module.named_parameters()}


# --------------------------------------------------------------------------- losses from logits

@pytest.mark.parametrize("seed", SEEDS)
def test_d_loss_matches_bce_with_logits(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(v) for v in rng.integers(1, 9, size=2))
    shape_r, shape_f = ((n,), (m,)) if seed % 2 else ((n, 1), (m, 1))
    r, f = rng.standard_normal(shape_r) * 4, rng.standard_normal(shape_f) * 4
    loss, dr, df = gn.d_loss_from_logits(r, f)
    tr, tf = _t(r, True), _t(f, True)
    ref = (F.binary_cross_entropy_with_logits(tr, torch.ones_like(tr))
           + F.binary_cross_entropy_with_logits(tf, torch.zeros_like(tf)))
    ref.backward()
    close(loss, ref, "D loss")
    close(dr, tr.grad, "dD/dreal_logits")
    close(df, tf.grad, "dD/dfake_logits")
    assert dr.shape == r.shape and df.shape == f.shape


@pytest.mark.parametrize("seed", SEEDS)
def test_generator_losses_match_softplus(seed):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((int(rng.integers(1, 9)), 1)) * 4
    for fn, ref_fn in ((gn.g_loss_nonsaturating, lambda s: F.softplus(-s).mean()),
                       (gn.g_loss_minimax, lambda s: -F.softplus(s).mean())):
        tf = _t(f, True)
        ref = ref_fn(tf)
        ref.backward()
        loss, df = fn(f)
        close(loss, ref, fn.__name__)
        close(df, tf.grad, fn.__name__ + " gradient")
    # the non-saturating loss is -log D(G(z)) and the minimax one log(1 - D(G(z)))
    d = 1 / (1 + np.exp(-f))
    close(gn.g_loss_nonsaturating(f)[0], -np.log(d).mean(), "NS = -log D", rtol=1e-9)
    close(gn.g_loss_minimax(f)[0], np.log(1 - d).mean(), "minimax = log(1 - D)", rtol=1e-9)


def test_losses_are_stable_at_huge_logits():
    big = np.array([1000.0, -1000.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, log 0 or NaN (underflow to 0 is fine)
        loss, dr, df = gn.d_loss_from_logits(big, -big)              # real [+1000, -1000], fake [-1000, +1000]
        ns, dns = gn.g_loss_nonsaturating(big)
        mm, dmm = gn.g_loss_minimax(big)
    # D: a perfectly classified pair costs 0, a wrong pair 1000 each: mean 500 + 500
    close(loss, 1000.0, "D loss at +-1000")
    close(dr, [0.0, -0.5], "dreal at +-1000")
    close(df, [0.0, 0.5], "dfake at +-1000")
    close(ns, 500.0, "NS loss at +-1000")
    close(dns, [0.0, -0.5], "NS gradient: -1/N where D rejects the fake")
    close(mm, -500.0, "minimax loss at +-1000")
    close(dmm, [-0.5, 0.0], "minimax gradient: 0 where D rejects the fake (saturated)")
    for v in (loss, ns, mm):
        assert np.isfinite(v)


def test_generator_gradient_curves():
    d = np.linspace(0.01, 0.99, 21)
    g_mm, g_ns = gn.generator_gradient_curves(d)
    s = _t(np.log(d / (1 - d)), True)                               # the logit with sigmoid(s) = d
    torch.log1p(-torch.sigmoid(s)).sum().backward()
    close(g_mm, s.grad, "d log(1 - D)/ds")
    s.grad = None
    (-F.logsigmoid(s)).sum().backward()
    close(g_ns, s.grad, "d -log D/ds", rtol=1e-9)
    assert abs(g_mm[0]) < 0.02 and abs(g_ns[0]) > 0.98               # minimax saturates where D ~ 0


def test_losses_keep_float32():
    f = np.array([[0.3], [-2.0]], dtype=np.float32)
    assert gn.d_loss_from_logits(f, f)[1].dtype == np.float32
    assert gn.g_loss_nonsaturating(f)[1].dtype == np.float32
    assert gn.g_loss_minimax(f)[1].dtype == np.float32


# --------------------------------------------------------------------------- VAE pieces

@pytest.mark.parametrize("seed", SEEDS)
def test_kl_and_reparameterize_match_autograd(seed):
    rng = np.random.default_rng(seed)
    n, z = (int(v) for v in rng.integers(1, 7, size=2))
    mu, logvar, eps = rng.standard_normal((n, z)), rng.standard_normal((n, z)), rng.standard_normal((n, z))
    tmu, tlv = _t(mu, True), _t(logvar, True)
    kl = (-0.5 * (1 + tlv - tmu ** 2 - tlv.exp()).sum(dim=1)).mean()
    kl.backward()
    close(gn.kl_gaussian(mu, logvar), kl, "KL")
    dout = float(rng.uniform(0.5, 2))
    dmu, dlv = gn.kl_gaussian_backward(mu, logvar, dout)
    close(dmu, dout * tmu.grad, "dKL/dmu")
    close(dlv, dout * tlv.grad, "dKL/dlogvar")

    tmu.grad = tlv.grad = None
    dz = rng.standard_normal((n, z))
    zz = tmu + torch.exp(tlv / 2) * _t(eps)
    zz.backward(_t(dz))
    close(gn.reparameterize(mu, logvar, eps), zz, "z")
    dmu, dlv = gn.reparameterize_backward(dz, logvar, eps)
    close(dmu, tmu.grad, "dz/dmu")
    close(dlv, tlv.grad, "dz/dlogvar")


def test_kl_closed_form_equals_monte_carlo():
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated with 400,000 samples per row: within 5 standard errors."""
    rng = np.random.default_rng(0)
    mu, logvar = rng.standard_normal((3, 2)) * 0.7, rng.standard_normal((3, 2)) * 0.5
    S = 400_000
    estimates, variances = [], []
    for m, lv in zip(mu, logvar):
        eps = rng.standard_normal((S, 2))
        z = m + np.exp(lv / 2) * eps
        log_q = -0.5 * (eps ** 2 + lv + np.log(2 * np.pi)).sum(axis=1)
        log_p = -0.5 * (z ** 2 + np.log(2 * np.pi)).sum(axis=1)
        estimates.append((log_q - log_p).mean())
        variances.append((log_q - log_p).var() / S)
    mc, se = np.mean(estimates), np.sqrt(np.sum(variances)) / 3
    assert abs(gn.kl_gaussian(mu, logvar) - mc) < 5 * se, (gn.kl_gaussian(mu, logvar), mc, se)
    assert gn.kl_gaussian(np.zeros((2, 3)), np.zeros((2, 3))) == 0          # q = p


def test_kl_gradient_numerically():
    rng = np.random.default_rng(1)
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    dmu, dlv = gn.kl_gaussian_backward(mu, logvar)
    assert rel_error(dmu, numerical_grad(lambda m: gn.kl_gaussian(m, logvar), mu)) < 1e-7
    assert rel_error(dlv, numerical_grad(lambda lv: gn.kl_gaussian(mu, lv), logvar)) < 1e-7


# --------------------------------------------------------------------------- the MLP

@pytest.mark.parametrize("seed", SEEDS)
def test_mlp_matches_torch_twin(seed):
    rng = np.random.default_rng(seed)
    sizes = draw_sizes(rng)
    params = gn.init_mlp(sizes, rng)
    x = rng.standard_normal((int(rng.integers(1, 7)), sizes[0]))
    out, cache = gn.mlp_forward(params, x)
    dout = rng.standard_normal(out.shape)
    dx, grads = gn.mlp_backward(dout, cache)

    model = twin(params, sizes)
    tx = _t(x, True)
    tout = model(tx)
    tout.backward(_t(dout))
    close(out, tout, "mlp output")
    close(dx, tx.grad, "mlp dx")
    ref = grads_of(model)
    assert set(grads) == set(ref) == set(params)
    for k in params:
        close(grads[k], ref[k], f"mlp d{k}")
        assert grads[k].shape == params[k].shape


def test_init_mlp_is_torch_default_layout_and_bounds():
    rng = np.random.default_rng(0)
    p = gn.init_mlp([2, 64, 64, 1], rng, np.float32)
    assert list(p) == list(TorchMLP([2, 64, 64, 1]).state_dict())
    assert p["fc1.weight"].shape == (64, 2) and p["fc3.weight"].shape == (1, 64)
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.abs(p["fc2.weight"]).max() <= 1 / 8 and np.abs(p["fc1.bias"]).max() <= 1 / np.sqrt(2)
    assert np.abs(p["fc2.weight"]).max() > 0.9 / 8                   # uniform on the whole interval


def test_mlp_keeps_float32():
    rng = np.random.default_rng(0)
    p = gn.init_mlp([2, 5, 1], rng, np.float32)
    out, cache = gn.mlp_forward(p, rng.standard_normal((3, 2)).astype(np.float32))
    dx, grads = gn.mlp_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    pen, g = gn.r1_penalty(p, rng.standard_normal((3, 2)).astype(np.float32), 1.0)
    assert pen.dtype == np.float32 and all(v.dtype == np.float32 for v in g.values())


# --------------------------------------------------------------------------- R1

def torch_r1(model, x, gamma):
    """R1 = gamma/2 * mean |grad_x D(x)|^2 by autograd, with create_graph=True for the double backward."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    return gamma / 2 * g.pow(2).sum(dim=1).mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_r1_matches_double_backward(seed):
    rng = np.random.default_rng(seed)
    sizes = draw_sizes(rng, out=1)
    params = gn.init_mlp(sizes, rng)
    x = rng.standard_normal((int(rng.integers(1, 9)), sizes[0]))
    gamma = float(rng.uniform(0.1, 10))
    pen, grads = gn.r1_penalty(params, x, gamma)

    model = twin(params, sizes)
    ref = torch_r1(model, _t(x), gamma)
    ref.backward()
    close(pen, ref, "R1")
    ref_grads = grads_of(model)                    # a parameter absent from the double graph (the last bias) -> 0
    assert set(grads) == set(params)
    for k in params:
        close(grads[k], ref_grads[k], f"dR1/d{k}")
    assert all(np.all(grads[k] == 0) for k in params if k.endswith("bias"))


def test_r1_numerical_gradient():
    rng = np.random.default_rng(3)
    sizes = [2, 6, 5, 1]
    params = gn.init_mlp(sizes, rng)
    x = rng.standard_normal((7, 2))
    _, grads = gn.r1_penalty(params, x, 2.0)
    for k in params:
        def f(w, k=k):
            return gn.r1_penalty({**params, k: w}, x, 2.0)[0]
        assert rel_error(grads[k], numerical_grad(f, params[k])) < 1e-6, k


# --------------------------------------------------------------------------- one GAN step

def torch_gan_step(G, D, opt_g, opt_d, x_real, z, loss, r1_gamma):
    """The reference: D step on G(z).detach() (+ R1), then G step through the updated D."""
    x_fake = G(z)
    opt_d.zero_grad()
    s_real, s_fake = D(x_real), D(x_fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(s_real, torch.ones_like(s_real))
              + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake)))
    total = d_loss + (torch_r1(D, x_real, r1_gamma) if r1_gamma else 0)
    total.backward()
    grads_d = grads_of(D)
    opt_d.step()
    opt_g.zero_grad()
    s = D(x_fake)
    g_loss = F.softplus(-s).mean() if loss == "nonsaturating" else -F.softplus(s).mean()
    g_loss.backward()
    grads_g = grads_of(G)
    opt_g.step()
    return d_loss.item(), g_loss.item(), grads_d, grads_g


@pytest.mark.parametrize("seed", range(4))
def test_gan_step_matches_torch(seed):
    rng = np.random.default_rng(seed)
    H, Z = int(rng.integers(3, 9)), int(rng.integers(1, 4))
    loss = ("nonsaturating", "minimax")[seed % 2]
    r1_gamma = (0.0, 1.0, 2.5, 0.0)[seed]
    state = gn.init_ring_gan(rng, hidden=H, z_dim=Z)
    G, D = twin(state.G, [Z, H, H, 2]), twin(state.D, [2, H, H, 1])
    kw = dict(lr=1e-2, betas=(0.5, 0.999))
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **kw), torch.optim.Adam(D.parameters(), **kw)
    for step in range(3):                                            # Adam's bias correction changes per step
        x_real, z = rng.standard_normal((5, 2)) * 2, rng.standard_normal((4, Z))
        state, out = gn.gan_step(state, x_real, z, loss, r1_gamma, return_grads=True, **kw)
        d_loss, g_loss, grads_d, grads_g = torch_gan_step(G, D, opt_g, opt_d, _t(x_real), _t(z), loss, r1_gamma)
        close(out["d_loss"], d_loss, "D loss")
        close(out["g_loss"], g_loss, "G loss")
        for k in grads_d:
            close(out["grads_D"][k], grads_d[k], f"step {step}: D's d{k} (no G gradient may reach it)")
        for k in grads_g:
            close(out["grads_G"][k], grads_g[k], f"step {step}: G's d{k}")
        for name, params, model in (("G", state.G, G), ("D", state.D, D)):
            for k, v in model.state_dict().items():
                close(params[k], v, f"step {step}: {name}.{k} after Adam", rtol=1e-9)


def test_gan_step_rejects_unknown_loss():
    state = gn.init_ring_gan(np.random.default_rng(0), hidden=4)
    with pytest.raises(ValueError, match="nonsaturating"):
        gn.gan_step(state, np.zeros((2, 2)), np.zeros((2, 2)), loss="wasserstein")


# --------------------------------------------------------------------------- FID and IS

def scipy_fid(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


@pytest.mark.parametrize("seed", SEEDS)
def test_fid_matches_sqrtm_formula_and_invariances(seed):
    rng = np.random.default_rng(seed)
    f = int(rng.integers(1, 7))
    x = rng.standard_normal((int(rng.integers(20, 60)), f)) @ rng.standard_normal((f, f))
    y = rng.standard_normal((int(rng.integers(20, 60)), f)) * 1.5 + rng.standard_normal(f)
    mu, cov = gn.gaussian_stats(x)
    close(mu, x.mean(0), "mean")
    close(cov, np.cov(x, rowvar=False).reshape(f, f), "unbiased covariance of ROWS")
    d = gn.fid(x, y)
    close(d, scipy_fid(x, y), "FID vs sqrtm", rtol=1e-7)
    close(gn.fid(y, x), d, "symmetric", rtol=1e-9)
    assert abs(gn.fid(x, x)) < 1e-9 * max(1.0, np.trace(cov))
    shift = rng.standard_normal(f)
    close(gn.fid(x + shift, x), shift @ shift, "a shift adds |shift|^2", rtol=1e-7, atol=1e-9)
    q, _ = np.linalg.qr(rng.standard_normal((f, f)))               # a random rotation (orthogonal)
    close(gn.fid(x @ q, y @ q), d, "invariant to a common rotation", rtol=1e-7)


def test_fid_positive_and_larger_when_farther():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    near, far = rng.standard_normal((500, 4)) + 0.1, rng.standard_normal((500, 4)) * 3 + 2
    assert 0 < gn.fid(x, near) < gn.fid(x, far)


def test_inception_score_limits():
    K = 7
    mean, std = gn.inception_score(np.full((70, K), 1 / K))
    close(mean, 1.0, "uniform predictions: IS = 1")
    close(std, 0.0, "same score in every split", atol=1e-12)
    onehot = np.eye(K)[np.arange(70) % K]                           # confident and balanced within each split
    close(gn.inception_score(onehot, splits=10)[0], K, "confident + balanced: IS = K")
    close(gn.inception_score(np.eye(K)[np.zeros(70, int)], splits=1)[0], 1.0, "one class only: IS = 1")


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(5, 0.3), size=40)
    scores = []
    for part in np.array_split(p, 4):
        py = part.mean(0)
        scores.append(np.exp(np.mean([np.sum(r * np.log(r / py)) for r in part])))
    mean, std = gn.inception_score(p, splits=4)
    close(mean, np.mean(scores), "IS mean")
    close(std, np.std(scores), "IS std")
    with pytest.raises(ValueError):
        gn.inception_score(p, splits=41)


# --------------------------------------------------------------------------- the ring and its mode count

def test_ring_geometry_and_samples():
    c = gn.ring_centers()
    assert c.shape == (8, 2)
    close(np.linalg.norm(c, axis=1), np.full(8, 2.0), "radius 2")
    close(c[2], [0.0, 2.0], "angle 2 pi k / 8", atol=1e-12)
    x = gn.sample_ring(4000, np.random.default_rng(0), sigma=0.05)
    n, counts, hq = gn.modes_covered(x, c, 0.05)
    assert n == 8 and hq > 0.98 and counts.min() > 400


def test_modes_covered_hand_made():
    c, s = gn.ring_centers(), 0.05
    rng = np.random.default_rng(0)
    every = c[np.arange(800) % 8] + 0.5 * s * rng.standard_normal((800, 2))
    n, counts, hq = gn.modes_covered(every, c, s)
    assert (n, hq) == (8, 1.0) and list(counts) == [100] * 8
    three = c[[0, 3, 5] * 100]
    n, counts, hq = gn.modes_covered(three, c, s)
    assert n == 3 and list(np.nonzero(counts)[0]) == [0, 3, 5] and hq == 1.0
    none_near = rng.standard_normal((300, 2)) * 0.1                 # around the origin, 2 away from every centre
    n, counts, hq = gn.modes_covered(none_near, c, s)
    assert (n, hq) == (0, 0.0) and counts.sum() == 0
    # a mode with fewer than min_share of the samples is not covered
    few = np.concatenate([c[np.zeros(995, int)], c[np.ones(5, int)]])
    assert gn.modes_covered(few, c, s)[0] == 1                       # 5 of 1000 < 1 %
    assert gn.modes_covered(few, c, s, min_share=0.005)[0] == 2
    # 3 sigma is the edge of "high quality"
    edge = c[:1] + np.array([[2.9 * s, 0.0], [3.1 * s, 0.0]])
    assert gn.modes_covered(edge, c, s, min_share=0)[2] == 0.5


# --------------------------------------------------------------------------- training

@pytest.mark.slow
def test_train_ring_gan_deterministic_per_seed():
    kw = dict(steps=150, batch=64, hidden=16, snapshot_every=50, n_eval=400, n_snapshot=100)
    a, b = gn.train_ring_gan(seed=1, **kw), gn.train_ring_gan(seed=1, **kw)
    c = gn.train_ring_gan(seed=2, **kw)
    for k in ("d_loss", "g_loss", "r1", "snapshots", "modes", "counts"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["snapshots"], c["snapshots"])
    assert a["snapshots"].shape == (4, 100, 2) and list(a["snapshot_steps"]) == [0, 50, 100, 150]
    assert a["d_loss"].shape == (150,) and np.all(np.isfinite(a["d_loss"])) and np.all(a["r1"] > 0)
    assert a["snapshots"].dtype == np.float32
    d64 = gn.train_ring_gan(seed=1, dtype=np.float64, **kw)
    assert d64["state"].G["fc1.weight"].dtype == np.float64 and np.all(np.isfinite(d64["g_loss"]))
