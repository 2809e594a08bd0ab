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

import time
from typing import NamedTuple, Optional

import numpy as np

__all__ = [
    "softplus", "sigmoid",
    "kl_gaussian", "kl_gaussian_backward", "reparameterize", "reparameterize_backward",
    "d_loss_from_logits", "g_loss_nonsaturating", "g_loss_minimax", "generator_gradient_curves",
    "gaussian_stats", "frechet_distance", "fid", "inception_score",
    "ring_centers", "sample_ring", "modes_covered",
    "init_mlp", "MlpCache", "mlp_forward", "mlp_backward", "r1_penalty",
    "AdamState", "adam_init", "adam_step", "GanState", "init_ring_gan", "gan_step", "train_ring_gan",
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


# --------------------------------------------------------------------------- the ring GAN by hand: MLPs

def init_mlp(sizes: list[int], rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    """Parameters of an MLP ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``, keyed like a torch state_dict.

    ``"fc1.weight"`` (sizes[1], sizes[0]), ``"fc1.bias"`` (sizes[1],), ``"fc2.weight"``, ...:
    ``nn.Linear``'s (out, in) layout, ``y = x @ W.T + b``.  The initialisation is torch's
    default for ``nn.Linear``: weights and biases uniform in ``(-1/sqrt(in), 1/sqrt(in))``
    (``kaiming_uniform_(a=sqrt(5))`` works out to that bound).

    Parameters
    ----------
    sizes : layer widths, e.g. ``[2, H, H, 1]`` for the ring's discriminator
    rng : the random generator
    dtype : float64 or float32

    Returns
    -------
    params : dict of ndarrays
    """
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        bound = 1.0 / np.sqrt(fan_in)
        params[f"fc{i}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(dtype)
        params[f"fc{i}.bias"] = rng.uniform(-bound, bound, fan_out).astype(dtype)
    return params


def _n_layers(params: dict[str, np.ndarray]) -> int:
    return sum(1 for k in params if k.endswith(".weight"))


class MlpCache(NamedTuple):
    inputs: list            # L arrays: the input of each linear layer, (N, sizes[l-1])
    masks: list             # L - 1 arrays (N, sizes[l]): LeakyReLU's slope, 1 where h > 0 else `slope`
    params: dict            # the weights used
    slope: float


def mlp_forward(params: dict[str, np.ndarray], x: np.ndarray, slope: float = 0.2) -> tuple[np.ndarray, MlpCache]:
    """Linear -> LeakyReLU(slope) -> ... -> Linear (no activation after the last layer).

    The ring's generator (z -> H -> H -> 2) and discriminator (x -> H -> H -> 1 logit) are both
    this.  LeakyReLU's slope for negative inputs is 0.2 (``nn.LeakyReLU(0.2)``).

    Parameters
    ----------
    params : dict from :func:`init_mlp`
    x : ndarray of shape (N, sizes[0])

    Returns
    -------
    out : ndarray of shape (N, sizes[-1])
    cache : MlpCache for :func:`mlp_backward` (and :func:`r1_penalty`)
    """
    L = _n_layers(params)
    inputs, masks = [], []
    a = x
    for i in range(1, L + 1):
        inputs.append(a)
        h = a @ params[f"fc{i}.weight"].T + params[f"fc{i}.bias"]      # (N, out)
        if i < L:
            m = (h > 0).astype(h.dtype)          # LeakyReLU'(h): 1 where h > 0, `slope` elsewhere (torch's
            m *= 1 - slope                       # choice at h = 0); arithmetic on the bools is ~10x faster
            m += slope                           # here than np.where(h > 0, 1, slope)
            masks.append(m)
            a = h * m                                                   # LeakyReLU(h) = h * LeakyReLU'(h)
        else:
            a = h
    return a, MlpCache(inputs, masks, params, slope)


def mlp_backward(dout: np.ndarray, cache: MlpCache,
                 param_grads: bool = True) -> tuple[np.ndarray, Optional[dict[str, np.ndarray]]]:
    """Gradients through :func:`mlp_forward`.

    Parameters
    ----------
    dout : ndarray of shape (N, sizes[-1]), the gradient with respect to ``out``
    cache : from :func:`mlp_forward`
    param_grads : False skips the parameters' gradients (the generator step only needs
        D's input gradient) and returns None for them

    Returns
    -------
    dx : ndarray of shape (N, sizes[0])
    grads : dict keyed like ``params`` (or None)
    """
    params = cache.params
    L = len(cache.inputs)
    grads = {} if param_grads else None
    d = dout
    for i in range(L, 0, -1):
        w = params[f"fc{i}.weight"]
        if param_grads:
            grads[f"fc{i}.weight"] = d.T @ cache.inputs[i - 1]    # dh/dW = the layer's input, summed over N
            grads[f"fc{i}.bias"] = d.sum(axis=0)                   # the bias is broadcast over N
        d = d @ w                                                  # dh/da = W
        if i > 1:
            d = d * cache.masks[i - 2]                             # da/dh = LeakyReLU'(h)
    return d, grads


# --------------------------------------------------------------------------- R1, with its double backward by hand

def _r1_from_cache(cache: MlpCache, gamma: float, rows: slice = slice(None)) -> tuple[np.floating, dict]:
    """R1 and its parameter gradients from a forward cache of D (its ``rows`` are the real batch).

    Derivation.  D(x) = W_L a_{L-1} + b_L with a_l = m_l * (W_l a_{l-1} + b_l), m_l the
    LeakyReLU slopes (1 or 0.2).  LeakyReLU is piecewise linear: its second derivative is 0
    almost everywhere, so the masks m_l are locally constant and the input gradient is
    (as rows, one per sample, with the masks frozen)

        delta_L = 1                          (N, 1)
        e_l     = delta_l @ W_l              (N, in_l)    for l = L .. 1
        delta_{l-1} = e_l * m_{l-1}          (N, out_{l-1})
        g       = e_1 = grad_x D(x)          (N, D)

    -- linear in each W_l, independent of the biases.  With P = gamma/2 * mean_n |g_n|^2,
    backpropagating through this chain *from g back to delta_L* walks the network FORWARD:

        t_1     = dP/dg = gamma * g / N      (N, D)
        dP/dW_l = delta_l^T @ t_l            (out_l, in_l)     (e_l = delta_l @ W_l)
        t_{l+1} = (t_l @ W_l^T) * m_l        (N, out_l)        (dP/d e_{l+1}, through delta_l)

    t is the tangent of a forward pass of D along the direction dP/dx with the masks frozen
    (a Jacobian-vector product).  The biases' gradients are 0 (they only move the masks).
    """
    params, masks = cache.params, [m[rows] for m in cache.masks]
    L = len(cache.inputs)
    n = masks[0].shape[0] if masks else cache.inputs[0][rows].shape[0]
    dtype = params["fc1.weight"].dtype
    # backward pass for the input gradient, keeping every delta_l
    deltas = {L: np.ones((n, 1), dtype=dtype)}                       # dD/d(logit) = 1 per sample
    for i in range(L, 1, -1):
        deltas[i - 1] = (deltas[i] @ params[f"fc{i}.weight"]) * masks[i - 2]
    g = deltas[1] @ params["fc1.weight"]                              # (N, D) grad_x D(x)
    penalty = gamma / 2 * np.sum(g * g) / n
    # the double backward: a forward pass of t = dP/dg through the masked network
    grads = {}
    t = gamma * g / n                                                 # (N, D)
    for i in range(1, L + 1):
        w = params[f"fc{i}.weight"]
        grads[f"fc{i}.weight"] = deltas[i].T @ t                      # d(delta_i @ W_i)/dW_i
        grads[f"fc{i}.bias"] = np.zeros_like(params[f"fc{i}.bias"])   # masks are locally constant
        if i < L:
            t = (t @ w.T) * masks[i - 1]
    return penalty, grads


def r1_penalty(params_d: dict[str, np.ndarray], x_real: np.ndarray, gamma: float,
               slope: float = 0.2) -> tuple[np.floating, dict[str, np.ndarray]]:
    """R1 gradient penalty (Mescheder et al. 2018) on the discriminator, and its gradients.

    ``R1 = gamma / 2 * mean_n |grad_x D(x_n)|^2`` over the REAL batch, added to D's loss: it
    penalises D's slope at the data, so D cannot sharpen without bound around the real
    samples -- the gradient the generator receives stays informative and training converges
    instead of oscillating.  Its gradient with respect to D's weights differentiates a
    gradient (a "double backward"); see :func:`_r1_from_cache` for the derivation.

    Parameters
    ----------
    params_d : D's parameters (an MLP with ONE output, the logit)
    x_real : ndarray of shape (N, D), real samples
    gamma : the penalty's weight

    Returns
    -------
    penalty : scalar
    grads : dict keyed like ``params_d`` (the biases' entries are zeros)
    """
    _, cache = mlp_forward(params_d, x_real, slope)
    return _r1_from_cache(cache, gamma)


# --------------------------------------------------------------------------- Adam on dicts

class AdamState(NamedTuple):
    step: int
    exp_avg: dict           # m, one array per parameter
    exp_avg_sq: dict        # v


def adam_init(params: dict[str, np.ndarray]) -> AdamState:
    """Adam's state before the first step: step 0 and zero moments, one per parameter."""
    return AdamState(0, {k: np.zeros_like(p) for k, p in params.items()},
                     {k: np.zeros_like(p) for k, p in params.items()})


def adam_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], state: AdamState,
              lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
              eps: float = 1e-8) -> tuple[dict[str, np.ndarray], AdamState]:
    """One step of ``torch.optim.Adam`` on every parameter of a dict (state in, state out).

    ``m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  p <- p - lr * m_hat / (sqrt(v_hat) + eps)``
    with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.  The same as
    :func:`dlcourse.optim.numpy_impl.adam_step`, applied to each entry; nothing is modified in place.

    Returns
    -------
    params : dict, the updated parameters (new arrays)
    state : AdamState
    """
    b1, b2 = betas
    t = state.step + 1
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t                              # bias corrections
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        m = b1 * state.exp_avg[k] + (1 - b1) * g
        v = b2 * state.exp_avg_sq[k] + (1 - b2) * (g * g)
        new_p[k] = p - (lr / c1) * m / (np.sqrt(v / c2) + eps)
        new_m[k], new_v[k] = m, v
    return new_p, AdamState(t, new_m, new_v)


# --------------------------------------------------------------------------- one GAN step, and training on the ring

class GanState(NamedTuple):
    G: dict                 # generator parameters: z (Z) -> H -> H -> D
    D: dict                 # discriminator parameters: x (D) -> H -> H -> 1 logit
    opt_G: AdamState
    opt_D: AdamState


def init_ring_gan(rng: np.random.Generator, hidden: int = 64, z_dim: int = 2, data_dim: int = 2,
                  dtype=np.float64) -> GanState:
    """Fresh G and D (torch's default init, G first then D from ``rng``) with zero Adam states."""
    G = init_mlp([z_dim, hidden, hidden, data_dim], rng, dtype)
    D = init_mlp([data_dim, hidden, hidden, 1], rng, dtype)
    return GanState(G, D, adam_init(G), adam_init(D))


def gan_step(state: GanState, x_real: np.ndarray, z: np.ndarray, loss: str = "nonsaturating",
             r1_gamma: float = 1.0, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999),
             slope: float = 0.2, return_grads: bool = False) -> tuple[GanState, dict]:
    """One training step of both networks: a discriminator step, then a generator step.

    1. D step: ``x_fake = G(z)`` is a CONSTANT for D (G's backward is never called: the
       NumPy version of ``detach``); D's loss ``d_loss_from_logits`` (+ R1 on the real batch)
       updates D only.
    2. G step: the UPDATED D scores the same ``x_fake``; the generator's loss is
       backpropagated through D (whose parameter gradients are discarded) into G.

    Parameters
    ----------
    state : GanState
    x_real : ndarray of shape (N, D), a real batch
    z : ndarray of shape (M, Z), latent noise (standard normal)
    loss : "nonsaturating" or "minimax", the generator's loss
    r1_gamma : R1's weight; 0 turns it off
    lr, betas : Adam's, for both networks
    return_grads : also return the gradients used ("grads_D", "grads_G")

    Returns
    -------
    state : GanState, after both updates
    out : dict with "d_loss" (without R1), "r1", "g_loss" (floats), and the gradients if asked
    """
    if loss not in ("nonsaturating", "minimax"):
        raise ValueError(f"loss must be 'nonsaturating' or 'minimax', got {loss!r}")
    G, D, opt_G, opt_D = state
    n = x_real.shape[0]
    # ---- D step: real and fake rows go through D together (one forward, one backward)
    x_fake, cache_g = mlp_forward(G, z, slope)                        # (M, D), kept for the G step
    logits, cache_d = mlp_forward(D, np.concatenate([x_real, x_fake]), slope)
    d_loss, ds_real, ds_fake = d_loss_from_logits(logits[:n], logits[n:])
    _, grads_D = mlp_backward(np.concatenate([ds_real, ds_fake]), cache_d)   # sums both halves' gradients
    r1 = 0.0
    if r1_gamma:
        r1, g_r1 = _r1_from_cache(cache_d, r1_gamma, rows=slice(0, n))       # masks of the real rows
        grads_D = {k: grads_D[k] + g_r1[k] for k in grads_D}
    D, opt_D = adam_step(D, grads_D, opt_D, lr, betas)
    # ---- G step: through the updated D, into G
    s_fake, cache_f = mlp_forward(D, x_fake, slope)
    g_loss, ds = (g_loss_nonsaturating if loss == "nonsaturating" else g_loss_minimax)(s_fake)
    dx_fake, _ = mlp_backward(ds, cache_f, param_grads=False)         # D is not updated here
    _, grads_G = mlp_backward(dx_fake, cache_g)
    G, opt_G = adam_step(G, grads_G, opt_G, lr, betas)
    out = {"d_loss": float(d_loss), "r1": float(r1), "g_loss": float(g_loss)}
    if return_grads:
        out["grads_D"], out["grads_G"] = grads_D, grads_G
    return GanState(G, D, opt_G, opt_D), out


def train_ring_gan(steps: int = 1500, batch: int = 256, lr: float = 1e-3,
                   betas: tuple[float, float] = (0.5, 0.999), loss: str = "nonsaturating",
                   r1_gamma: float = 1.0, sigma: float = 0.05, hidden: int = 64, z_dim: int = 2,
                   seed: int = 0, snapshot_every: int = 50, n_eval: int = 2000,
                   n_snapshot: int = 512, modes: int = 8, radius: float = 2.0,
                   min_share: float = 0.01, dtype=np.float32) -> dict:
    """Train the ring GAN by hand with :func:`gan_step`; returns the history for plots and the replay slider.

    The defaults (sigma 0.05, H = 64, 1,500 steps; measured in ``benchmarks/bench_gan.py --ring``,
    ~2 s a run in float32 on one CPU thread) cover 8 of 8 modes on seeds 0-4 with R1
    (gamma = 1); without R1, 7-8; at sigma = 0.02 without R1, 4-6 (partial collapse).

    Every ``snapshot_every`` steps (and at step 0 and the last step) the generator maps a
    FIXED set of ``n_eval`` latent vectors; :func:`modes_covered` scores them and the first
    ``n_snapshot`` are kept as the snapshot (the same z every time, so a slider replays
    how the samples move).

    Parameters
    ----------
    steps, batch, lr, betas, loss, r1_gamma : training (see :func:`gan_step`)
    sigma, modes, radius : the ring
    hidden, z_dim : network widths (H, Z)
    seed : everything random (init, data, noise, evaluation z) comes from ``default_rng(seed)``
    min_share : see :func:`modes_covered`
    dtype : float32 (faster) or float64

    Returns
    -------
    history : dict with
        "d_loss", "g_loss", "r1" : ndarrays of shape (steps,), per step
        "snapshot_steps" : ndarray (S,) of the evaluated steps
        "modes" : ndarray (S,) modes covered;  "high_quality" : ndarray (S,);  "counts" : (S, K)
        "snapshots" : ndarray (S, n_snapshot, 2) of generated samples at the fixed z
        "real" : ndarray (n_snapshot, 2) real samples, for the plot
        "final_modes", "final_high_quality" : the last evaluation
        "seconds" : training time in seconds (evaluations included), "config" : the arguments
    """
    config = dict(steps=steps, batch=batch, lr=lr, betas=betas, loss=loss, r1_gamma=r1_gamma,
                  sigma=sigma, hidden=hidden, z_dim=z_dim, seed=seed, modes=modes, radius=radius,
                  min_share=min_share, dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(seed)
    state = init_ring_gan(rng, hidden, z_dim, 2, dtype)
    z_eval = rng.standard_normal((n_eval, z_dim)).astype(dtype)
    real = sample_ring(n_snapshot, rng, sigma, modes, radius, dtype)
    centers = ring_centers(modes, radius)
    hist = {k: np.zeros(steps) for k in ("d_loss", "g_loss", "r1")}
    snap_steps, n_modes, hq, counts, snaps = [], [], [], [], []

    def evaluate(step):
        x, _ = mlp_forward(state.G, z_eval)
        c, cnt, q = modes_covered(x, centers, sigma, min_share)
        snap_steps.append(step), n_modes.append(c), hq.append(q), counts.append(cnt)
        snaps.append(x[:n_snapshot].astype(np.float32))

    t0 = time.perf_counter()
    evaluate(0)
    for step in range(1, steps + 1):
        x_real = sample_ring(batch, rng, sigma, modes, radius, dtype)
        z = rng.standard_normal((batch, z_dim)).astype(dtype)
        state, out = gan_step(state, x_real, z, loss, r1_gamma, lr, betas)
        for k in ("d_loss", "g_loss", "r1"):
            hist[k][step - 1] = out[k]
        if step % snapshot_every == 0 or step == steps:
            evaluate(step)
    seconds = time.perf_counter() - t0
    hist.update(snapshot_steps=np.array(snap_steps), modes=np.array(n_modes), high_quality=np.array(hq),
                counts=np.array(counts), snapshots=np.stack(snaps), real=real.astype(np.float32),
                final_modes=n_modes[-1], final_high_quality=hq[-1], seconds=seconds, config=config,
                state=state)
    return hist
