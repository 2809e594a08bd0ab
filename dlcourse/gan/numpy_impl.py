"""Generative models by hand in NumPy: VAE pieces, GAN losses, the ring of Gaussians, FID and IS.

A **variational autoencoder** (Kingma & Welling 2014) encodes ``x`` into a Gaussian
``q(z|x) = N(mu, diag(exp(logvar)))`` and is trained with reconstruction + KL::

    z = reparameterize(mu, logvar, eps)         # z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)
    kl = kl_gaussian(mu, logvar)                # KL(q(z|x) || N(0, I)): sum over Z, mean over N

Sampling ``eps`` outside the network makes ``z`` a differentiable function of ``mu`` and
``logvar`` (the reparameterisation trick): the randomness no longer blocks the gradient.

A **GAN** (Goodfellow et al. 2014) trains a discriminator D to tell real from generated
samples and a generator G to fool it.  With ``s = D(x)`` a *logit* and ``sigmoid(s)`` the
probability "real", every loss is written with ``softplus(t) = log(1 + exp(t))``::

    D loss         mean(softplus(-s_real)) + mean(softplus(s_fake))   # BCE: real -> 1, fake -> 0
    G minimax      -mean(softplus(s_fake))                            # = mean log(1 - D(G(z))), minimised
    G non-sat.     mean(softplus(-s_fake))                            # = -mean log D(G(z))

Never ``log(sigmoid(s))``: for ``s = -1000`` the sigmoid rounds to 0 and the log to
``-inf``; ``softplus`` (``np.logaddexp(0, t)``) is exact for every ``t``.

**Measuring** generators: the Fréchet distance between Gaussians fitted to features of
real and generated samples (FID, Heusel et al. 2017) and the Inception Score (Salimans
et al. 2016).  Here the features / class probabilities come from a classifier trained in
the course, not from Inception (there is none offline), so absolute values are not
comparable with published ones.

The **ring of 8 Gaussians** (Metz et al. 2017) is the GAN's 2-D test bed: easy to plot,
and mode collapse is visible and countable (:func:`modes_covered`).

Dimension letters (the course glossary)
---------------------------------------
N    batch size (number of samples)
D    data dimensions (2 for the ring, 64 for 8x8 digits)
Z    latent size
H    hidden width
K    modes (of the ring) or classes (of a classifier)
F    feature size
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "softplus", "sigmoid",
    "kl_gaussian", "kl_gaussian_backward", "reparameterize", "reparameterize_backward",
    "d_loss_from_logits", "g_loss_nonsaturating", "g_loss_minimax", "generator_gradient_curves",
    "gaussian_stats", "frechet_distance", "fid", "inception_score",
    "ring_centers", "sample_ring", "modes_covered",
]


def _float(x) -> np.ndarray:
    """``x`` as a floating array, keeping float32 / float64 (anything else becomes float64)."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


# --------------------------------------------------------------------------- stable building blocks

def softplus(t: np.ndarray) -> np.ndarray:
    """``log(1 + exp(t))``, exact for every ``t`` (``np.logaddexp(0, t)``: no overflow at t = 1000)."""
    t = _float(t)
    return np.logaddexp(t.dtype.type(0), t)


def sigmoid(t: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-t))`` written as ``exp(-softplus(-t))``: no overflow, no warning, at t = -1000.

    It is also ``d softplus(t) / dt``, the local derivative every loss below uses.
    """
    return np.exp(-softplus(-_float(t)))


# --------------------------------------------------------------------------- VAE: KL term and reparameterisation

def kl_gaussian(mu: np.ndarray, logvar: np.ndarray) -> np.floating:
    """KL divergence of ``N(mu, diag(exp(logvar)))`` from ``N(0, I)``: summed over Z, MEAN over the batch.

    .. math::
        \\mathrm{KL} = \\frac{1}{N}\\sum_n -\\frac12 \\sum_z
        \\left(1 + \\log\\sigma^2_{nz} - \\mu_{nz}^2 - \\sigma^2_{nz}\\right)

    Each term is >= 0 and is 0 exactly at ``mu = 0, logvar = 0`` (the prior itself).

    Parameters
    ----------
    mu : ndarray of shape (N, Z), the encoder's means
    logvar : ndarray of shape (N, Z), the encoder's log-variances ``log sigma^2``

    Returns
    -------
    kl : scalar of the inputs' dtype
    """
    mu, logvar = _float(mu), _float(logvar)
    per_sample = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=-1)   # (N,)
    return per_sample.mean()


def kl_gaussian_backward(mu: np.ndarray, logvar: np.ndarray, dout: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of :func:`kl_gaussian` (times ``dout``) with respect to ``mu`` and ``logvar``.

    Parameters
    ----------
    mu, logvar : ndarrays of shape (N, Z)
    dout : upstream gradient of the scalar KL (1 when the KL is the loss)

    Returns
    -------
    dmu, dlogvar : ndarrays of shape (N, Z)
    """
    mu, logvar = _float(mu), _float(logvar)
    n = mu.shape[0] if mu.ndim > 1 else 1
    dmu = dout * mu / n                               # d(-0.5 * -mu^2)/dmu = mu; the batch mean divides by N
    dlogvar = dout * 0.5 * (np.exp(logvar) - 1) / n   # d(-0.5 * (logvar - exp(logvar)))/dlogvar
    return dmu.astype(mu.dtype, copy=False), dlogvar.astype(logvar.dtype, copy=False)


def reparameterize(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """A sample of ``N(mu, diag(exp(logvar)))`` as a differentiable function: ``z = mu + exp(logvar / 2) * eps``.

    Parameters
    ----------
    mu, logvar : ndarrays of shape (N, Z)
    eps : ndarray of shape (N, Z), standard normal noise drawn by the caller

    Returns
    -------
    z : ndarray of shape (N, Z)
    """
    mu, logvar = _float(mu), _float(logvar)
    return mu + np.exp(logvar / 2) * eps              # the std is exp(logvar / 2) = sqrt(sigma^2)


def reparameterize_backward(dz: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients through :func:`reparameterize`.

    Parameters
    ----------
    dz : ndarray of shape (N, Z), the gradient with respect to ``z``
    logvar, eps : ndarrays of shape (N, Z), as given to the forward

    Returns
    -------
    dmu, dlogvar : ndarrays of shape (N, Z)
    """
    dz = _float(dz)
    dmu = dz.copy()                                        # dz/dmu = 1
    dlogvar = dz * eps * 0.5 * np.exp(_float(logvar) / 2)  # dz/dlogvar = eps * exp(logvar/2) / 2
    return dmu, dlogvar.astype(dz.dtype, copy=False)


# --------------------------------------------------------------------------- GAN losses from logits

def d_loss_from_logits(real_logits: np.ndarray, fake_logits: np.ndarray) -> tuple[np.floating, np.ndarray, np.ndarray]:
    """The discriminator's loss, binary cross-entropy with labels 1 (real) and 0 (fake), from LOGITS.

    ``loss = mean(softplus(-s_real)) + mean(softplus(s_fake))``, i.e.
    ``-mean log D(x) - mean log(1 - D(G(z)))`` with ``D = sigmoid(s)``; finite for logits of any size.

    Parameters
    ----------
    real_logits : ndarray of shape (N,) or (N, 1), D's logits on real samples
    fake_logits : ndarray of shape (M,) or (M, 1), D's logits on generated samples

    Returns
    -------
    loss : scalar
    dreal : ndarray shaped like ``real_logits``, the gradient of ``loss``
    dfake : ndarray shaped like ``fake_logits``
    """
    sr, sf = _float(real_logits), _float(fake_logits)
    loss = softplus(-sr).mean() + softplus(sf).mean()
    dreal = -sigmoid(-sr) / sr.size       # d softplus(-s)/ds = -sigmoid(-s) = D - 1: push real logits up
    dfake = sigmoid(sf) / sf.size         # d softplus(s)/ds = sigmoid(s) = D: push fake logits down
    return loss, dreal, dfake


def g_loss_nonsaturating(fake_logits: np.ndarray) -> tuple[np.floating, np.ndarray]:
    """The generator's NON-SATURATING loss ``mean(softplus(-s_fake)) = -mean log D(G(z))``, from logits.

    Parameters
    ----------
    fake_logits : ndarray of shape (N,) or (N, 1), D's logits on generated samples

    Returns
    -------
    loss : scalar
    dfake : ndarray shaped like ``fake_logits``
    """
    sf = _float(fake_logits)
    loss = softplus(-sf).mean()
    dfake = -sigmoid(-sf) / sf.size       # = (D - 1) / N: close to -1/N when D rejects the fake (D ~ 0)
    return loss, dfake


def g_loss_minimax(fake_logits: np.ndarray) -> tuple[np.floating, np.ndarray]:
    """The generator's MINIMAX loss ``-mean(softplus(s_fake)) = mean log(1 - D(G(z)))`` (minimised), from logits.

    This is the original game's objective; its gradient vanishes exactly when the generator
    is bad (see :func:`generator_gradient_curves`).

    Parameters
    ----------
    fake_logits : ndarray of shape (N,) or (N, 1)

    Returns
    -------
    loss : scalar
    dfake : ndarray shaped like ``fake_logits``
    """
    sf = _float(fake_logits)
    loss = -softplus(sf).mean()
    dfake = -sigmoid(sf) / sf.size        # = -D / N: close to 0 when D rejects the fake (D ~ 0)
    return loss, dfake


def generator_gradient_curves(d_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of each generator loss (one sample) with respect to D's logit, against ``D(G(z))``.

    With ``D = sigmoid(s)``: minimax ``log(1 - D)`` has ``d/ds = -D``; non-saturating
    ``-log D`` has ``d/ds = D - 1``.  Early in training D rejects the fakes (``D ~ 0``): the
    minimax gradient is ~0 (it *saturates*) while the non-saturating one is ~-1.  Both push
    ``s`` up, the same direction; only their size differs.

    Parameters
    ----------
    d_values : ndarray of shape (P,), values of ``D(G(z))`` in (0, 1)

    Returns
    -------
    grad_minimax : ndarray of shape (P,), ``-D``
    grad_nonsaturating : ndarray of shape (P,), ``D - 1``
    """
    d = _float(d_values)
    return -d, d - 1


# --------------------------------------------------------------------------- FID and IS

def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of feature vectors stored as ROWS, the Gaussian that FID fits.

    The covariance is the unbiased one (divides by N - 1), like ``np.cov(features, rowvar=False)``
    and pytorch-fid.

    Parameters
    ----------
    features : ndarray of shape (N, F), N >= 2

    Returns
    -------
    mu : ndarray of shape (F,)
    cov : ndarray of shape (F, F)
    """
    x = _float(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, F) with N >= 2 rows, got shape {x.shape}")
    mu = x.mean(axis=0)
    xc = x - mu                                   # (N, F) centred rows
    cov = xc.T @ xc / (x.shape[0] - 1)            # (F, F), ddof = 1
    return mu, cov


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via ``eigh``; round-off negatives -> 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``, squared.

    .. math::
        \\lVert\\mu_1-\\mu_2\\rVert^2 + \\mathrm{Tr}\\left(\\Sigma_1 + \\Sigma_2 - 2(\\Sigma_1\\Sigma_2)^{1/2}\\right)

    ``S1 S2`` is not symmetric, so its square root is awkward (``scipy.linalg.sqrtm`` may
    return complex round-off).  Its trace equals that of the symmetric PSD matrix
    ``(S1^(1/2) S2 S1^(1/2))^(1/2)`` (similar matrices share eigenvalues), whose eigenvalues
    ``eigh`` gives reliably; eigenvalues that round-off makes slightly negative are
    clipped to 0.  Computed in float64 whatever the input dtype.

    Parameters
    ----------
    mu1, mu2 : ndarrays of shape (F,)
    cov1, cov2 : ndarrays of shape (F, F), symmetric positive semi-definite

    Returns
    -------
    distance : float, >= 0 up to round-off
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    diff = mu1 - mu2
    s1h = _psd_sqrt(cov1)                                    # S1^(1/2)
    m = s1h @ cov2 @ s1h                                     # symmetric PSD, same eigenvalues as S1 S2
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sum(np.sqrt(np.clip(ev, 0, None)))          # Tr((S1 S2)^(1/2))
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fid(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (rows).

    Parameters
    ----------
    features1 : ndarray of shape (N1, F), e.g. classifier features of real images
    features2 : ndarray of shape (N2, F), e.g. features of generated images

    Returns
    -------
    fid : float (0 for identical sets; symmetric in its arguments)
    """
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``exp(mean_x KL(p(y|x) || p(y)))``, on ``splits`` chunks: their mean and std.

    High when each sample is classified confidently (``p(y|x)`` peaked) AND the classes are
    balanced (``p(y)``, the chunk's mean prediction, flat): between 1 and K.  The samples are
    cut in order into ``splits`` nearly equal chunks (``np.array_split``, every sample used);
    ``p(y)`` is each chunk's own mean, as in Salimans et al.'s code.  ``0 log 0 = 0``.

    Parameters
    ----------
    probs : ndarray of shape (N, K), each row a probability vector p(y|x)
    splits : number of chunks, 1 <= splits <= N

    Returns
    -------
    mean, std : floats, over the chunks' scores (std with ddof = 0, like the reference code)
    """
    p = np.asarray(probs, dtype=np.float64)
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be between 1 and N = {p.shape[0]}, got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)                       # (1, K) marginal p(y) of the chunk
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)   # 0 log 0 = 0
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- the ring of Gaussians

def ring_centers(modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """Centres of the ring's modes: ``radius * (cos, sin)(2 pi k / modes)``, k = 0 .. modes - 1.

    Returns
    -------
    centers : ndarray of shape (K, 2), K = modes
    """
    angles = 2 * np.pi * np.arange(modes) / modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def sample_ring(n: int, rng: np.random.Generator, sigma: float = 0.05, modes: int = 8,
                radius: float = 2.0, dtype=np.float64) -> np.ndarray:
    """``n`` samples of the ring: a uniformly chosen mode's centre plus isotropic N(0, sigma^2) noise.

    Parameters
    ----------
    n : number of samples
    rng : the random generator (``np.random.default_rng(seed)``)
    sigma : standard deviation of each mode (Metz et al. 2017 use 0.02)

    Returns
    -------
    x : ndarray of shape (n, 2)
    """
    centers = ring_centers(modes, radius)
    k = rng.integers(modes, size=n)                              # (n,) which mode
    x = centers[k] + sigma * rng.standard_normal((n, 2))
    return x.astype(dtype, copy=False)


def modes_covered(samples: np.ndarray, centers: np.ndarray, sigma: float,
                  min_share: float = 0.01, n_std: float = 3.0) -> tuple[int, np.ndarray, float]:
    """How many modes a generator covers, counted as in VEEGAN (Srivastava et al. 2017).

    A sample is *high quality* if it lies within ``n_std`` standard deviations (3 sigma) of
    its nearest centre; it then counts for that mode.  A mode is *covered* if it receives at
    least ``min_share`` of ALL the samples (default 1 %: with 8 balanced modes each
    expects 12.5 %; PacGAN, Lin et al. 2018, similarly calls a mode lost below 20 of 2,500
    samples, 0.8 %).  A threshold, rather than "at least one sample", keeps a few stray
    samples from counting as a mode.

    Parameters
    ----------
    samples : ndarray of shape (N, 2), generated points
    centers : ndarray of shape (K, 2), e.g. :func:`ring_centers`
    sigma : the modes' standard deviation
    min_share : share of the N samples a mode needs to count as covered
    n_std : radius of "high quality", in units of sigma

    Returns
    -------
    n_covered : int, number of covered modes (0 .. K)
    counts : ndarray of int64, shape (K,), high-quality samples per mode
    high_quality : float, the share of samples that are high quality
    """
    x = np.asarray(samples, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)     # (N, K) squared distances
    nearest = d2.argmin(axis=1)                                   # (N,)
    good = d2[np.arange(len(x)), nearest] <= (n_std * sigma) ** 2  # (N,) within 3 sigma
    counts = np.bincount(nearest[good], minlength=len(c)).astype(np.int64)
    n_covered = int(np.sum((counts > 0) & (counts >= min_share * len(x))))
    return n_covered, counts, float(good.mean()) if len(x) else 0.0
