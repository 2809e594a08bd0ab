# %% [markdown]
# # 08 · Generative models — exercises
#
# In this notebook you write the pieces of a VAE and of a GAN yourself: the KL term and the
# reparameterisation's gradients, the GAN losses straight from logits (stable at any logit), a
# generator-quality measure (FID) and a mode count for the ring, all in NumPy, where you see every
# number; then, in PyTorch, the R1 penalty (a gradient of a gradient) and **one whole GAN training
# step** with `detach` in the right place:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `kl_gaussian` | the VAE's KL term and its gradients | 2 |
# | 2 | `reparameterize_backward` | gradients through z = mu + std · eps | 2 |
# | 3 | `d_loss_from_logits` | the discriminator's loss and gradients, from logits | 3 |
# | 4 | `g_loss_nonsaturating` | the generator's non-saturating loss and gradient | 2 |
# | 5 | `r1_penalty` | R1 with autograd (PyTorch) | 3 |
# | 6 | `fid` | Fréchet distance between two sets of features | 3 |
# | 7 | `modes_covered` | how many modes of the ring a generator covers | 2 |
# | 8 | `gan_train_step` | **the larger task**: one GAN step, D then G (PyTorch) | 4 |
# | | five concept questions | a number or a letter each | 5 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several cases, from small to large,
# compares with the course's reference, and shows ✓ or ✗ with the points and one message that says
# what is wrong (and, for the classic mistakes, *which* mistake it is), with the smallest failing
# case and a line that reproduces it. It never crashes the notebook. Stuck?
# `check.hint("fid")` gives a hint; run it again for the next one. Each exercise has three hints:
# first the idea, then the approach, last something close to code, so try the first ones first.
# The concept questions at the end have no hints (work them out from the lesson). The last cell
# adds up your score.
#
# **Conventions.** Dimension letters: `N` batch (`M` a second batch), `Z` latent size, `H` hidden
# width, `K` modes or classes, `F` feature size; the ring's data are points, `(N, 2)`, and `D` is
# always the discriminator. A
# discriminator outputs a **logit** `s`; its probability "real" is `sigmoid(s)`. Every NumPy
# function returns float64 (like its inputs) and changes none of its inputs. Write the code
# yourself: handing in (or calling) the course's own version of an exercise earns no points. The
# point of Exercises 1–4, 6 and 7 is the math **in NumPy** (PyTorch is the oracle the checks
# compare with); Exercises 5 and 8 are PyTorch, where autograd and optimizers do the bookkeeping
# and you decide what flows where.

# %%
import numpy as np
import torch
import torch.nn.functional as F

from dlcourse.gan.checks import check

# %% [markdown]
# ## Exercise 1 · The KL term of a VAE (2 points)
#
# A VAE's encoder gives each sample a Gaussian $q(z|x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)$
# as `mu` and `logvar` $= \log\sigma^2$. Its loss adds the KL divergence from the prior
# $\mathcal N(0, I)$, which has a closed form:
#
# $$\mathrm{KL} = \frac1N \sum_{n} -\frac12 \sum_{z} \left(1 + \log\sigma^2_{nz} - \mu_{nz}^2 - \sigma^2_{nz}\right)$$
#
# Write `kl_gaussian(mu, logvar)`:
#
# * `mu`, `logvar` `(N, Z)`
# * return `(kl, dmu, dlogvar)`: the KL (a number: **sum** over Z, **mean** over N) and its gradients
#   with respect to `mu` and `logvar`, each `(N, Z)`

# %%
def kl_gaussian(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), sum over Z, mean over N, and (dmu, dlogvar)."""
    ### BEGIN SOLUTION
    n = mu.shape[0]
    per_sample = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1)   # (N,)
    kl = per_sample.mean()
    dmu = mu / n                                   # d(mu^2 / 2)/dmu, divided by N for the mean
    dlogvar = 0.5 * (np.exp(logvar) - 1) / n       # d(-(logvar - exp(logvar)) / 2)/dlogvar
    return kl, dmu, dlogvar
    ### END SOLUTION


# %%
check.kl_gaussian(kl_gaussian)

# %% [markdown]
# ## Exercise 2 · Gradients through the reparameterisation (2 points)
#
# The reparameterisation trick draws `eps ~ N(0, I)` outside the network and computes
# $z = \mu + e^{\log\sigma^2 / 2}\,\varepsilon$, so that `z` is a differentiable function of `mu` and
# `logvar`. Given the upstream gradient `dz` = ∂loss/∂z, write `reparameterize_backward(dz, logvar, eps)`:
#
# * `dz`, `logvar`, `eps` `(N, Z)`
# * return `(dmu, dlogvar)`, each `(N, Z)`

# %%
def reparameterize_backward(dz, logvar, eps):
    """Gradients of z = mu + exp(logvar / 2) * eps: (dmu, dlogvar)."""
    ### BEGIN SOLUTION
    std = np.exp(logvar / 2)
    dmu = dz.copy()                                # dz/dmu = 1
    dlogvar = dz * eps * std / 2                   # dz/dstd = eps, dstd/dlogvar = std / 2
    return dmu, dlogvar
    ### END SOLUTION


# %%
check.reparameterize_backward(reparameterize_backward)

# %% [markdown]
# ## Exercise 3 · The discriminator's loss, from logits (3 points)
#
# D's loss is binary cross-entropy: label 1 for the real batch, 0 for the generated one, each half
# averaged over its own batch. With $\operatorname{softplus}(t) = \log(1 + e^t)$,
# $-\log\sigma(s) = \operatorname{softplus}(-s)$ and $-\log(1 - \sigma(s)) = \operatorname{softplus}(s)$:
#
# $$L_D = \frac1N\sum_n \operatorname{softplus}(-s^{\text{real}}_n) + \frac1M\sum_m \operatorname{softplus}(s^{\text{fake}}_m)$$
#
# Write `d_loss_from_logits(real_logits, fake_logits)`:
#
# * `real_logits` `(N,)` or `(N, 1)`, `fake_logits` `(M,)` or `(M, 1)` (N and M may differ)
# * return `(loss, dreal, dfake)`: the loss (a number) and its gradients, shaped like the logits
#
# It must stay finite for logits like ±800 (a very confident D): computing `sigmoid` first and then
# its `log` does not.

# %%
def d_loss_from_logits(real_logits, fake_logits):
    """mean(softplus(-s_real)) + mean(softplus(s_fake)) and its gradients: (loss, dreal, dfake)."""
    ### BEGIN SOLUTION
    def sigmoid(t):
        return np.exp(-np.logaddexp(0, -t))        # no overflow for any t

    loss = np.mean(np.logaddexp(0, -real_logits)) + np.mean(np.logaddexp(0, fake_logits))
    dreal = -sigmoid(-real_logits) / real_logits.size   # d softplus(-s)/ds = -sigmoid(-s)
    dfake = sigmoid(fake_logits) / fake_logits.size     # d softplus(s)/ds = sigmoid(s)
    return loss, dreal, dfake
    ### END SOLUTION


# %%
check.d_loss_from_logits(d_loss_from_logits)

# %% [markdown]
# ## Exercise 4 · The generator's non-saturating loss (2 points)
#
# The original game has G minimise $\log(1 - D(G(z)))$, whose gradient vanishes when D confidently
# rejects the fakes (the start of training). Goodfellow et al. therefore train G to minimise
# $-\log D(G(z))$ instead:
#
# $$L_G = \frac1N\sum_n \operatorname{softplus}(-s^{\text{fake}}_n)$$
#
# Write `g_loss_nonsaturating(fake_logits)`:
#
# * `fake_logits` `(N,)` or `(N, 1)`
# * return `(loss, dfake)`, the loss (a number) and its gradient shaped like `fake_logits`
#
# The check includes a D that rejects the fakes (logits near −8) and logits of size 800.

# %%
def g_loss_nonsaturating(fake_logits):
    """mean(softplus(-s_fake)) and its gradient: (loss, dfake)."""
    ### BEGIN SOLUTION
    loss = np.mean(np.logaddexp(0, -fake_logits))
    dfake = -np.exp(-np.logaddexp(0, fake_logits)) / fake_logits.size   # -sigmoid(-s) = sigmoid(s) - 1
    return loss, dfake
    ### END SOLUTION


# %%
check.g_loss_nonsaturating(g_loss_nonsaturating)

# %% [markdown]
# ## Exercise 5 · The R1 penalty, in PyTorch (3 points)
#
# R1 (Mescheder et al. 2018) keeps D from growing steep around the real data: it adds to D's loss
#
# $$R_1 = \frac{\gamma}{2}\,\frac1N\sum_n \lVert \nabla_x D(x_n) \rVert^2 \quad\text{over the REAL batch.}$$
#
# The lesson computed it by hand in NumPy; here PyTorch's autograd does the work, but the penalty
# is itself a function of a gradient, and D's optimizer must be able to differentiate it. Write
# `r1_penalty(D, x_real, gamma)`:
#
# * `D` an `nn.Module` mapping `(N, 2)` points to `(N, 1)` logits; `x_real` `(N, 2)` float64, **without**
#   `requires_grad` (data never has it); `gamma` a number
# * return the penalty as a 0-d tensor that `backward()` can take into D's weights

# %%
def r1_penalty(D, x_real, gamma):
    """gamma / 2 * mean_n ||grad_x D(x_n)||^2, differentiable with respect to D's weights."""
    ### BEGIN SOLUTION
    x = x_real.detach().requires_grad_(True)       # a leaf to take the gradient with respect to
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)   # (N, 2), itself differentiable
    return gamma / 2 * (grad ** 2).sum(dim=1).mean()
    ### END SOLUTION


# %%
check.r1_penalty(r1_penalty)

# %% [markdown]
# ## Exercise 6 · FID (3 points)
#
# FID fits a Gaussian to each of two sets of feature vectors (a classifier's features of real and of
# generated images) and measures the Fréchet distance between the two Gaussians:
#
# $$\mathrm{FID} = \lVert\mu_1 - \mu_2\rVert^2 + \operatorname{Tr}\left(\Sigma_1 + \Sigma_2 - 2\,(\Sigma_1\Sigma_2)^{1/2}\right)$$
#
# Write `fid(features1, features2)`:
#
# * `features1` `(N1, F)`, `features2` `(N2, F)`: one feature vector per **row**; N1 and N2 may
#   differ, and may be smaller than F
# * the covariances are the unbiased ones (divided by N − 1), like `np.cov` and pytorch-fid
# * return a float, ≥ 0 (up to round-off), 0 for a set with itself
#
# $\Sigma_1\Sigma_2$ is not symmetric; only the trace of its square root is needed (the sum of the
# square roots of its eigenvalues), and round-off must not turn it into NaN or a complex number.

# %%
def fid(features1, features2):
    """Fréchet distance between Gaussians fitted to two sets of feature rows: a float."""
    ### BEGIN SOLUTION
    def stats(x):
        mu = x.mean(axis=0)
        xc = x - mu
        return mu, xc.T @ xc / (len(x) - 1)        # (F,), (F, F) unbiased

    def psd_sqrt(s):
        w, v = np.linalg.eigh(s)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    mu1, s1 = stats(features1)
    mu2, s2 = stats(features2)
    r1 = psd_sqrt(s1)
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)          # same eigenvalues as S1 S2, symmetric
    tr_sqrt = np.sum(np.sqrt(np.clip(ev, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    ### END SOLUTION


# %%
check.fid(fid)

# %% [markdown]
# ## Exercise 7 · Modes covered on the ring (2 points)
#
# On the ring of 8 Gaussians, mode collapse is countable (VEEGAN, Srivastava et al. 2017): a
# generated sample is **high quality** if it lies within `n_std` standard deviations (3σ) of its
# **nearest** centre, and then counts for that mode; a mode is **covered** if it receives at least
# a share `min_share` of all the samples (and at least one sample, so that `min_share=0` still
# needs one). Write
# `modes_covered(samples, centers, sigma, min_share=0.01, n_std=3.0)`:
#
# * `samples` `(N, 2)`, `centers` `(K, 2)`, `sigma` the modes' standard deviation
# * return `(n_covered, counts, high_quality)`: the number of covered modes (an int), the
#   high-quality samples per mode (`(K,)` ints), and the share of all samples that are high
#   quality (a float)

# %%
def modes_covered(samples, centers, sigma, min_share=0.01, n_std=3.0):
    """(n_covered, counts, high_quality) by VEEGAN's rule."""
    ### BEGIN SOLUTION
    d2 = ((samples[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1)   # (N, K)
    nearest = d2.argmin(axis=1)                                           # (N,)
    good = d2[np.arange(len(samples)), nearest] <= (n_std * sigma) ** 2
    counts = np.bincount(nearest[good], minlength=len(centers))
    n_covered = int(np.sum((counts > 0) & (counts >= min_share * len(samples))))
    return n_covered, counts, float(good.mean())
    ### END SOLUTION


# %%
check.modes_covered(modes_covered)

# %% [markdown]
# ## Exercise 8 · One GAN training step, in PyTorch (4 points) — the larger task
#
# The lesson trained GANs with the course's step function without showing it; here you write it.
# One step trains the discriminator, then the generator:
#
# 1. **D's step**: `fake = G(z)`; D's loss (Exercise 3's, with `F.softplus`) on `D(x_real)` and on
#    the fakes **detached**: during D's step, G is a constant (no gradient may flow into it);
#    zero D's gradients, backward, `opt_d.step()`.
# 2. **G's step**: the *updated* D scores the fakes again; G's non-saturating loss (Exercise 4's);
#    zero G's gradients, backward (through D into G), `opt_g.step()`; D does not step here.
#
# Write `gan_train_step(G, D, opt_g, opt_d, x_real, z)`:
#
# * `G` maps `z` `(M, Z)` to points `(M, 2)`, `D` maps `(N, 2)` to `(N, 1)` logits; `opt_g`, `opt_d`
#   their optimizers; `x_real` `(N, 2)`, `z` `(M, Z)`
# * return `(d_loss, g_loss)` as two floats (`.item()`): D's loss before its step, G's loss as
#   scored by the updated D
#
# The check runs your step once and three times on small ring GANs (float64, Adam) and compares
# every weight of G and D with the course's step; the parameters' `.grad` hold leftovers before the
# first step, and it watches whether G receives gradients during D's step.

# %%
def gan_train_step(G, D, opt_g, opt_d, x_real, z):
    """One GAN step (D then G, non-saturating, detach): (d_loss, g_loss) as floats."""
    ### BEGIN SOLUTION
    fake = G(z)
    d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake.detach())).mean()   # real -> 1, fake -> 0
    opt_d.zero_grad()
    d_loss.backward()                              # stops at fake.detach(): G gets nothing
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()           # -log D(G(z)), scored by the updated D
    opt_g.zero_grad()
    g_loss.backward()                              # through D into G (D's .grad is zeroed next step)
    opt_g.step()
    return d_loss.item(), g_loss.item()
    ### END SOLUTION


# %%
check.gan_train_step(gan_train_step)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer with a value. **Q1.** The generator has learned the data exactly: $p_g = p_{\text{data}}$.
# What does the optimal discriminator $D^*(x)$ output (a probability)? (lesson: the GAN game)

# %%
def q_optimal_d():
    """A probability (a number)."""
    ### BEGIN SOLUTION
    return 0.5
    ### END SOLUTION


# %%
check.q_optimal_d(q_optimal_d)

# %% [markdown]
# **Q2.** At that equilibrium, what is the value of D's loss
# mean(softplus(−s_real)) + mean(softplus(s_fake)) (natural log; a number)? (lesson: the GAN losses)

# %%
def q_d_loss_equilibrium():
    """A number."""
    ### BEGIN SOLUTION
    return 2 * np.log(2)
    ### END SOLUTION


# %%
check.q_d_loss_equilibrium(q_d_loss_equilibrium)

# %% [markdown]
# **Q3.** The Inception Score of samples judged by a classifier with K = 10 classes: what is the
# largest value it can take? (lesson: measuring generators)

# %%
def q_is_upper_bound():
    """A number."""
    ### BEGIN SOLUTION
    return 10.0
    ### END SOLUTION


# %%
check.q_is_upper_bound(q_is_upper_bound)

# %% [markdown]
# **Q4.** In one dimension, what is the KL divergence of $\mathcal N(\mu = 1, \log\sigma^2 = 0)$ from
# $\mathcal N(0, 1)$? (lesson: the VAE's loss)

# %%
def q_kl_one_dim():
    """A number."""
    ### BEGIN SOLUTION
    return 0.5
    ### END SOLUTION


# %%
check.q_kl_one_dim(q_kl_one_dim)

# %% [markdown]
# **Q5.** Early in training D rejects the fakes confidently ($D(G(z)) \approx 0$). Which generator
# loss gives G almost no gradient then: `'a'` the minimax $\log(1 - D(G(z)))$, `'b'` the
# non-saturating $-\log D(G(z))$, `'c'` both, `'d'` neither? (lesson: the GAN losses)

# %%
def q_saturating_loss():
    """'a', 'b', 'c' or 'd'."""
    ### BEGIN SOLUTION
    return "a"
    ### END SOLUTION


# %%
check.q_saturating_loss(q_saturating_loss)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
