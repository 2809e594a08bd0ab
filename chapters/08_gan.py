# %% [markdown]
# # 08 · Generative models: autoencoders, VAEs and GANs, by hand and in PyTorch, measured with IS and FID
#
# Every network so far learned a function from an input to a label. A **generative model** learns
# the data itself: after training it can produce new samples that look as if they came from the
# training set. This chapter builds the two classic families and measures them:
#
# 1. **autoencoders**: squeeze a digit through a bottleneck of a few numbers and rebuild it — a
#    2-D latent space you can plot, reconstruction against bottleneck size;
# 2. **denoising**, a use of autoencoders;
# 3. the **variational autoencoder** (VAE), which makes the latent space a distribution you can
#    sample from — the reparameterization trick and the KL term, their gradients checked;
# 4. **generative adversarial networks** (GANs): a generator and a discriminator trained against
#    each other — the minimax game, and why everyone trains the generator with a different loss;
# 5. **a GAN in NumPy with a hand-written backward pass** on a ring of 8 Gaussians, equal to
#    PyTorch's autograd in every gradient;
# 6. **how GANs fail** — mode collapse and oscillation, shown live — and what helps (the R1
#    gradient penalty, Adam's β₁), measured by how many of the 8 modes the generator covers;
# 7. **measuring a generator**: the Inception Score and the Fréchet Inception Distance, on the
#    features of a classifier trained in the course;
# 8. **a GAN on the digits** in PyTorch, trained live to an FID below 4;
# 9. a **walk through the latent space**, and latent arithmetic;
# 10. on a GPU: a wider GAN on MNIST.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

import dlcourse
from dlcourse import show_source
from dlcourse.data import load_digits
from dlcourse.gan import explore
from dlcourse.gan import numpy_impl as gn                 # the ring GAN, losses, KL, FID and IS in NumPy
from dlcourse.gan import torch_impl as gt                 # autoencoders, the VAE and the digits GAN in PyTorch

rng = dlcourse.seed(0)
device = dlcourse.device()
lesson_start = time.perf_counter()
digits = load_digits()
AE_STEPS, STUDY_STEPS, VAE_STEPS = 1500, 800, 2000      # training steps: seconds each on one CPU thread
RING_STEPS, GAN_STEPS = 1500, 1500
print(f"device: {device}; digits: {len(digits.x_train)} training, {len(digits.x_test)} test images of 8 × 8 pixels")


def max_diff(a, b):
    """Largest absolute difference between two arrays, NumPy or torch."""
    a, b = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in (a, b))
    return float(np.max(np.abs(a - b)))


# %% [markdown]
# ## 1 · An autoencoder: 64 pixels through 2 numbers
#
# An **autoencoder** is two networks in a row. The **encoder** maps an image x (64 pixels) to a
# short **code** z (Z numbers, the *latent* vector); the **decoder** maps the code back to 64
# pixels. Trained to make the output equal to the input (here: the mean squared error per pixel),
# it has to keep in Z numbers what matters most about a digit — the bottleneck forces a summary.
# With Z = 2 the summary can be plotted.

# %%
show_source(gt.Autoencoder)

# %%
# NBVAL_IGNORE_OUTPUT
ae, ae_history = gt.train_autoencoder(latent=2, steps=AE_STEPS, seed=0)
codes = gt.latent_codes(ae)                                   # (270, 2): the test digits' codes
print(f"Z = 2: test reconstruction MSE {ae_history.test_mse[-1]:.4f} per pixel "
      f"after {AE_STEPS} steps ({ae_history.seconds:.1f} s)")

fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2), width_ratios=[1.25, 1])
explore.plot_latent_scatter(codes, digits.y_test, ax=left,
                            title="the 270 test digits' 2-D codes (never seen in training)")
with torch.no_grad():
    rebuilt = ae(torch.as_tensor(digits.x_test[:16])).numpy()
explore.plot_images(right, np.concatenate([digits.x_test[:8], rebuilt[:8], digits.x_test[8:16], rebuilt[8:16]]), 8,
                    "rows 1 and 3: test digits; rows 2 and 4: rebuilt from 2 numbers")
plt.show()

# %% [markdown]
# Nobody told the autoencoder the labels, yet digits of one class land near each other: a code of
# two numbers that rebuilds a digit well has to say *which* digit it is first. Classes that look
# alike overlap. The reconstructions are blurry: two numbers cannot hold the details.
#
# **How wide must the bottleneck be?** The baseline is PCA, the best *linear* code of each size
# (an autoencoder with linear layers and the MSE loss finds the same subspace). Test MSE per pixel:

# %%
# NBVAL_IGNORE_OUTPUT
study = gt.bottleneck_study(latents=(2, 4, 8, 16, 32), steps=STUDY_STEPS, seed=0)
print("  Z   autoencoder   PCA")
for z, row in study.items():
    print(f"{z:3d}     {row['ae_mse']:.4f}     {row['pca_mse']:.4f}")

# %% [markdown]
# A non-linear code is worth most when it is small: up to Z = 16 the autoencoder's error is
# well below PCA's (its decoder bends the few code directions to follow the digits). The gap closes
# as Z grows, and at Z = 32 PCA wins: with half as many numbers as pixels a linear code is nearly
# exact, and a few hundred Adam steps do not find anything as good.
#
# ## 2 · Denoising
#
# Train the same network with **corrupted inputs and clean targets** (here Gaussian noise of
# standard deviation 0.3 on every pixel, then clipped back to [0, 1] — which is why the noisy
# input's error below is less than 0.3² = 0.09) and it learns to remove the noise: to map a noisy digit
# to the nearest thing that looks like a digit. Test MSE against the clean digits, for the same
# noisy test inputs:

# %%
# NBVAL_IGNORE_OUTPUT
denoise = gt.denoise_study(noise_std=0.3, latent=16, steps=STUDY_STEPS, seed=0)
print(f"the noisy input itself:                  {denoise['noisy_input']:.4f}")
print(f"an autoencoder trained on clean digits:  {denoise['plain']:.4f}")
print(f"a denoising autoencoder:                 {denoise['denoiser']:.4f}")

# %% [markdown]
# Doing nothing leaves the noise's whole error. The autoencoder trained on clean digits already
# removes part of it — a bottleneck keeps what looks like a digit and drops the rest — but the
# denoising one, trained for exactly this, removes about twice as much.
#
# ## 3 · The variational autoencoder
#
# Decode a *random* 2-D vector with the autoencoder above and you may get a digit or a smudge: the
# codes fill an odd-shaped region of the plane with gaps between classes, and nothing says where
# they are. A **variational autoencoder** (Kingma and Welling, 2014) fixes that by making the code
# a distribution:
#
# * the encoder outputs, for each image, a mean μ and a log-variance log σ² (each Z numbers): the
#   code of x is a Gaussian $q(z\mid x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)$;
# * training decodes a **sample** z from it and adds to the reconstruction loss the **KL
#   divergence** from $q(z\mid x)$ to the standard normal $\mathcal N(0, I)$:
#
# $$\mathrm{KL} = -\tfrac12 \sum_{j=1}^{Z}\big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big)$$
#
# The KL term pulls every code towards N(0, I), so the codes of all training digits together fill
# the standard normal — and a new digit is made by decoding **any** z drawn from N(0, I). The sum
# of the two terms is the negative *evidence lower bound* (ELBO) of the data's log-likelihood —
# which is why the reconstruction term here is a log-likelihood too, not section 1's MSE: the
# decoder's 64 outputs are Bernoulli probabilities of the pixels' grey levels, and the term is the
# binary cross-entropy summed over the 64 pixels, in nats per image (see `vae_loss` below).
#
# **The reparameterization trick.** Sampling z ~ N(μ, σ²) is not differentiable in μ and σ. Write
# it instead as a deterministic function of μ, σ and a noise ε ~ N(0, I) drawn outside the network:
#
# $$z = \mu + \sigma\,\varepsilon = \mu + e^{\frac12\log\sigma^2}\,\varepsilon
# \qquad\Rightarrow\qquad \frac{\partial z}{\partial \mu} = 1,\quad
# \frac{\partial z}{\partial \log\sigma^2} = \tfrac12\,\sigma\,\varepsilon$$
#
# and the gradient reaches the encoder. Both formulas, and the KL's gradient
# ($\partial\mathrm{KL}/\partial\mu = \mu$, $\partial\mathrm{KL}/\partial\log\sigma^2 = \tfrac12(\sigma^2 - 1)$,
# divided by the batch size for the batch mean), are exercises; here the course's versions are
# checked against autograd and the KL's closed form against a Monte-Carlo estimate:

# %%
mu = rng.standard_normal((5, 3))
logvar = rng.standard_normal((5, 3)) * 0.5
eps = rng.standard_normal((5, 3))
mu_t, logvar_t = (torch.tensor(a, requires_grad=True) for a in (mu, logvar))
z_t = gt.reparameterize(mu_t, logvar_t, torch.as_tensor(eps))
dz = rng.standard_normal((5, 3))
(z_t * torch.as_tensor(dz)).sum().backward()
print(f"reparameterization, largest difference to autograd: z {max_diff(gn.reparameterize(mu, logvar, eps), z_t):.1e}, "
      f"dmu and dlogvar {max(max_diff(a, b.grad) for a, b in zip(gn.reparameterize_backward(dz, logvar, eps), (mu_t, logvar_t))):.1e}")
mu_t.grad = logvar_t.grad = None
gt.kl_gaussian(mu_t, logvar_t).backward()
print(f"KL {gn.kl_gaussian(mu, logvar):.6f} (torch {gt.kl_gaussian(mu_t, logvar_t).item():.6f}); largest difference "
      f"to autograd: dmu and dlogvar {max(max_diff(a, b.grad) for a, b in zip(gn.kl_gaussian_backward(mu, logvar), (mu_t, logvar_t))):.1e}")
# Monte Carlo: KL(q || p) = E_q[log q(z) - log p(z)], one image's Gaussian, 10^6 samples
m, lv = mu[0], logvar[0]
zs = gn.reparameterize(m, lv, rng.standard_normal((1_000_000, 3)))
log_q = -0.5 * (((zs - m) ** 2) / np.exp(lv) + lv + np.log(2 * np.pi)).sum(1)
log_p = -0.5 * (zs ** 2 + np.log(2 * np.pi)).sum(1)
print(f"KL of one image's code: closed form {gn.kl_gaussian(m[None], lv[None]):.4f}, "
      f"Monte Carlo {np.mean(log_q - log_p):.4f}")

# %%
show_source(gt.VAE)
show_source(gt.vae_loss)

# %%
# NBVAL_IGNORE_OUTPUT
vae, vae_history = gt.train_vae(latent=2, steps=VAE_STEPS, seed=0)
print(f"VAE, Z = 2: negative ELBO {vae_history.train_loss[-1]:.1f} nats per image, "
      f"test MSE from the mean code {vae_history.test_mse[-1]:.4f} ({vae_history.seconds:.1f} s)")
with torch.no_grad():
    z_prior = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))   # z ~ N(0, I)
    from_ae = torch.sigmoid(ae.decode(z_prior)).numpy()
from_vae = gt.sample_vae(vae, 32, seed=0).numpy()
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), width_ratios=[1.2, 1, 1])
explore.plot_latent_scatter(gt.latent_codes(vae), digits.y_test, ax=axes[0], title="the VAE's codes (means μ)")
explore.plot_images(axes[1], from_ae, 8, "autoencoder: decoded z ~ N(0, I)")
explore.plot_images(axes[2], from_vae, 8, "VAE: decoded z ~ N(0, I)")
plt.show()

# %% [markdown]
# Left: the VAE's codes fill a round region of about ±2 around 0 — the KL term at work — while the
# autoencoder's spread over −11 … 9 (section 1). Both decoders turn z ~ N(0, I) into digit-like
# images, but only the VAE was trained to: for the autoencoder N(0, I) covers just the middle of
# its code cloud, so its samples come from the few classes that happen to sit there. Section 7
# puts a number on the difference.
#
# ## 4 · GANs: a forger and a detective
#
# A **generative adversarial network** (Goodfellow et al., 2014) never writes down a likelihood.
# A **generator** G maps noise z ~ N(0, I) to a sample G(z); a **discriminator** D maps a sample to
# a logit s, and σ(s) = D(x) is its probability that x is real. D is trained to tell real samples
# from generated ones; G is trained to make D wrong. The game, as a value that D maximises and G
# minimises:
#
# $$\min_G \max_D\; \mathbb E_{x\sim p_\text{data}}\big[\log D(x)\big] + \mathbb E_{z}\big[\log(1 - D(G(z)))\big]$$
#
# For a fixed G the best discriminator is $D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_G(x))$, and
# with it G minimises the Jensen–Shannon divergence between the two distributions: the game ends
# when $p_G = p_\text{data}$ and D says ½ everywhere. In practice the two take turns: a step of D on a
# batch of real and a batch of generated samples (G held fixed: the generated batch is *detached*
# from G's graph), then a step of G through the updated D.
#
# With logits, every loss is a **softplus**, $\operatorname{softplus}(t) = \log(1 + e^t)$, since
# $-\log\sigma(s) = \operatorname{softplus}(-s)$ and $-\log(1-\sigma(s)) = \operatorname{softplus}(s)$:
# D minimises $\operatorname{mean}\operatorname{softplus}(-s_\text{real}) + \operatorname{mean}\operatorname{softplus}(s_\text{fake})$ —
# computed this way it never takes the log of a sigmoid that rounded to 0.
#
# **Why nobody trains G on the minimax loss.** Early in training the fakes are bad, D rejects them
# with confidence (D(G(z)) ≈ 0), and $\log(1 - D(G(z)))$ is flat there as a function of D's logit s:
# its gradient with respect to s, −D(G(z)), vanishes just
# when G needs it most. The **non-saturating** loss $-\log D(G(z))$ has the same fixed point and
# pushes the same way, but its gradient is largest exactly there:

# %%
d_values = np.linspace(0.001, 0.999, 400)
grad_minimax, grad_nonsaturating = gn.generator_gradient_curves(d_values)
fig = explore.plot_generator_gradients(d_values, grad_minimax, grad_nonsaturating)
fig

# %% [markdown]
# (The gradient is with respect to D's logit on the fake: −D(G(z)) for the minimax loss,
# D(G(z)) − 1 for the non-saturating one.) The losses and their gradients from logits are exercises.
#
# ## 5 · A GAN by hand, on a ring of 8 Gaussians
#
# The classic test bed (Metz et al., 2017): 8 narrow Gaussians on a circle of radius 2. It is 2-D, so
# every sample can be drawn, and it has 8 well-separated **modes**, so we can count how many the
# generator finds. Both networks are small MLPs with LeakyReLU(0.2): G maps 2-D noise through two
# hidden layers of 64 to a point; D maps a point to one logit. Their forward and backward passes,
# by hand:

# %%
show_source(gn.mlp_forward)
show_source(gn.mlp_backward)

# %% [markdown]
# One training step of both networks, in NumPy, against PyTorch's autograd on the same weights in
# float64: D's gradients (its loss on a real and a generated batch, plus the R1 penalty of
# section 6) and G's (its non-saturating loss through D):

# %%
state = gn.init_ring_gan(np.random.default_rng(0), hidden=64)
x_real = gn.sample_ring(256, np.random.default_rng(1), sigma=0.05)
z = np.random.default_rng(2).standard_normal((256, 2))
_, out = gn.gan_step(state, x_real, z, r1_gamma=1.0, return_grads=True)

G = gt.load_params(gt.ring_generator(64), state.G)
D = gt.load_params(gt.ring_discriminator(64), state.D)
x_real_t, z_t = torch.as_tensor(x_real), torch.as_tensor(z)
fake = G(z_t)
loss_d = gt.d_loss_from_logits(D(x_real_t), D(fake.detach())) + gt.r1_penalty(D, x_real_t, 1.0)
grads_d = torch.autograd.grad(loss_d, list(D.parameters()))
print(f"D: largest difference to autograd over all its gradients "
      f"{max(max_diff(out['grads_D'][name], g) for (name, _), g in zip(D.named_parameters(), grads_d)):.1e}")
# G's gradient goes through D AFTER D's update: load the updated D, then backpropagate G's loss
state_after, _ = gn.gan_step(state, x_real, z, r1_gamma=1.0)
D_after = gt.load_params(gt.ring_discriminator(64), state_after.D)
grads_g = torch.autograd.grad(gt.g_loss_nonsaturating(D_after(fake)), list(G.parameters()))
print(f"G: largest difference to autograd over all its gradients "
      f"{max(max_diff(out['grads_G'][name], g) for (name, _), g in zip(G.named_parameters(), grads_g)):.1e}")

# %% [markdown]
# Trained with Adam (learning rate 10⁻³, β = (0.5, 0.999) — a lower β₁ than usual, the choice of
# most GAN papers since DCGAN: momentum from old gradients is stale when the opponent keeps
# changing), batches of 256, the non-saturating loss and R1 (γ = 1), for 1,500 steps:

# %%
# NBVAL_IGNORE_OUTPUT
ring = gn.train_ring_gan(steps=RING_STEPS, sigma=0.05, r1_gamma=1.0, seed=0)
print(f"{ring['final_modes']}/8 modes covered, {100 * ring['final_high_quality']:.0f} % of 2,000 samples "
      f"within 3σ of a mode ({ring['seconds']:.1f} s)")
fig = explore.plot_ring_runs({"non-saturating + R1, σ = 0.05": ring})
fig

# %% [markdown]
# A mode counts as **covered** when at least 1 % of the samples fall within 3σ of it (VEEGAN's
# criterion, Srivastava et al., 2017); writing that count is an exercise. With these settings every
# one of 5 seeds covered 8/8 (`python benchmarks/bench_gan.py --ring`; the table is in
# `benchmarks/RESULTS.md`).
#
# ## 6 · How GANs fail, and what helps
#
# **Mode collapse.** G is rewarded for samples D accepts *now*. Where D is weak, G piles its
# samples; D learns to reject that spot, G moves them elsewhere, and the whole crowd hops from place
# to place instead of spreading over every mode. The easiest way to see it here is to change one
# setting to the usual default: Adam's β₁ = 0.9 instead of 0.5 (seed 4):

# %%
# NBVAL_IGNORE_OUTPUT
collapse = gn.train_ring_gan(steps=RING_STEPS, sigma=0.05, r1_gamma=0.0, betas=(0.9, 0.999), seed=4)
print("modes covered every 50 steps:", "".join(str(m) for m in collapse["modes"]))
fig = explore.plot_ring_snapshots(collapse, [5, 10, 15, 20, 25, -1], "Adam β₁ = 0.9, seed 4: one clump, wandering")
fig

# %% [markdown]
# For a thousand steps the samples crowd onto one thin arc — 0 to 2 modes covered — that swings
# from one side of the ring to the other: G chases the spot D currently likes, D follows. Then they
# scatter over the whole square before partly settling. In the table below this setting ended with
# 1 or 2 modes on two seeds of five.
#
# **Oscillation** is the same chase seen in the losses: each player's momentum carries it past a
# point the other has already left. Narrow modes are the other hard case: at σ = 0.02 (a target
# 2.5 times smaller) the generator spreads along the circle and covers only some modes well enough.

# %%
# NBVAL_IGNORE_OUTPUT
no_r1 = gn.train_ring_gan(steps=RING_STEPS, sigma=0.05, r1_gamma=0.0, seed=0)
narrow = gn.train_ring_gan(steps=RING_STEPS, sigma=0.02, r1_gamma=0.0, seed=0)
print("modes covered every 50 steps:")
for name, run in (("σ = 0.05, R1", ring), ("σ = 0.05, no R1", no_r1), ("σ = 0.02, no R1", narrow)):
    print(f"  {name:16s}", "".join(str(m) for m in run["modes"]))
fig = explore.plot_ring_runs({"σ = 0.05, R1 γ = 1": ring, "σ = 0.05, no penalty": no_r1,
                              "σ = 0.02, no penalty": narrow})
fig

# %% [markdown]
# **The R1 penalty** (Mescheder, Geiger and Nowozin, 2018) adds to D's loss
#
# $$R_1 = \frac{\gamma}{2}\,\mathbb E_{x\sim p_\text{data}}\big\|\nabla_x D(x)\big\|^2$$
#
# — D is punished for being steep **at the real data**. Without it, D can sharpen without bound
# around the real samples; its gradient to G then points at wherever D happens to be weak, G
# overshoots, and the pair circles instead of settling (Mescheder et al. show that the
# unregularised game need not converge even in a one-dimensional example; with R1 it does, locally).
#
# Its gradient with respect to D's weights differentiates a gradient — a *double backward*. In
# PyTorch that is `torch.autograd.grad(..., create_graph=True)` (an exercise). By hand it is
# shorter than it sounds: LeakyReLU is piecewise linear, so with its slopes frozen ∇ₓD(x) is a
# product of the weight matrices and the slope masks, linear in each weight; differentiating its
# squared norm walks the network forward once more:

# %%
show_source(gn._r1_from_cache)

# %% [markdown]
# **What helps, measured** on 5 seeds each (`python benchmarks/bench_gan.py --ring`, 1,500 steps;
# modes covered at the end):
#
# | setting | seeds 0 1 2 3 4 |
# |---|---|
# | σ = 0.05, non-saturating + R1 γ = 1, Adam β₁ = 0.5 (the default) | 8 8 8 8 8 |
# | σ = 0.05, non-saturating, no penalty | 7 8 8 7 7 |
# | σ = 0.05, minimax loss, no penalty | 8 8 8 8 8 |
# | σ = 0.05, non-saturating, no penalty, Adam β₁ = 0.9 | 6 2 8 8 1 |
# | σ = 0.05, the same with learning rate 10⁻² | 1 0 6 0 8 |
# | σ = 0.02, non-saturating, no penalty | 5 4 6 6 5 |
# | σ = 0.02, non-saturating + R1 γ = 1 | 8 5 4 4 4 |
#
# Read honestly: **β₁ matters most** — with Adam's usual 0.9, two seeds of five ended with 1 or 2
# modes and a third with 6, and a 10× larger step made it worse. R1 turned the 3 seeds of 5 that kept losing a mode into 8/8. The minimax loss
# happened to do well too: its weakness is a discriminator that wins early, which on 2-D points it
# does not (the digits GAN below uses the non-saturating loss). And the narrow ring stayed hard for
# everything tried here (R1 with γ = 0.1 or 0.01 gave 3–8 modes at 1,500 steps and 5–8 at 3,000).
#
# Replay any run snapshot by snapshot (the dropdown picks the run):

# %%
# NBVAL_IGNORE_OUTPUT
explore.ring_replay({"σ = 0.05, R1 γ = 1": ring, "σ = 0.05, no penalty": no_r1,
                     "Adam β₁ = 0.9 (seed 4)": collapse, "σ = 0.02, no penalty": narrow})

# %% [markdown]
# ## 7 · Measuring a generator: IS and FID
#
# Looking at samples does not scale, and a likelihood is not available for a GAN. The two standard
# numbers both run the samples through a trained **classifier**:
#
# * the **Inception Score** (Salimans et al., 2016): each sample should be classified confidently
#   (p(y|x) peaked) and all classes should appear (the average p(y) flat), so
#   $\mathrm{IS} = \exp\big(\mathbb E_x\, \mathrm{KL}(p(y\mid x)\,\|\,p(y))\big)$, between 1 and the
#   number of classes. It never looks at real data.
# * the **Fréchet Inception Distance** (Heusel et al., 2017): fit a Gaussian to the classifier's
#   *features* of real samples (mean μ_r, covariance Σ_r) and one to those of generated samples (μ_g,
#   Σ_g), and compute the Fréchet (2-Wasserstein) distance between the two Gaussians:
#
# $$\mathrm{FID} = \|\mu_r - \mu_g\|^2 + \operatorname{Tr}\big(\Sigma_r + \Sigma_g - 2(\Sigma_r\Sigma_g)^{1/2}\big)$$
#
#   Lower is better; 0 means the same mean and covariance. It sees both quality and variety: a
#   generator that collapsed onto a few perfect digits has the wrong covariance.
#
# The "Inception" in both names is Google's Inception-v3 image classifier, trained on ImageNet;
# published numbers use its 2,048 features. **It is not available offline, and it was never trained
# on 8 × 8 digits**, so here both scores use a classifier trained in the course on the digits' training
# split (an MLP, 64 → 128 → 32 → 10; its 32 penultimate activations are the features). The numbers are
# therefore only comparable with each other, never with a paper's FID. The matrix square root and the
# careful numerics of FID are an exercise.
#
# Before trusting a metric, try it on cases whose answer we know:

# %%
# NBVAL_IGNORE_OUTPUT
print(f"course classifier: {100 * gt.classifier_accuracy():.1f} % test accuracy")
sanity = gt.fid_sanity()
print(f"FID, real training digits vs real test digits:   {sanity['real_train_vs_test']:7.2f}")
# the noise of FID at these sample sizes: all 1,797 digits shuffled into 1,257 + 270, ten times
all_digits = torch.as_tensor(np.concatenate([digits.x_train, digits.x_val, digits.x_test]) * 2 - 1)
f_all = gt.features(all_digits)
resplit = [gt.fid(f_all[order[:1257]], f_all[order[1257:1527]])
           for order in (np.random.default_rng(seed).permutation(len(f_all)) for seed in range(10))]
print(f"FID, 10 random splits of all digits, 1,257 vs 270: {min(resplit):.2f} to {max(resplit):.2f}, "
      f"mean {np.mean(resplit):.2f}")
print(f"FID, uniform noise vs real test digits:          {sanity['noise_vs_test']:7.2f}")
print(f"IS of the real digits: training {sanity['is_real_train'][0]:.2f} ± {sanity['is_real_train'][1]:.2f}, "
      f"test {sanity['is_real_test'][0]:.2f} ± {sanity['is_real_test'][1]:.2f} (at most 10)")
# the NumPy and PyTorch versions agree
f_train = gt.features(gt.digits_for_gan("train")).double()
f_test = gt.features(gt.digits_for_gan("test")).double()
alive = f_train.std(0) > 0                                   # features that are not always 0
print(f"FID NumPy vs PyTorch: {abs(gn.fid(f_train.numpy(), f_test.numpy()) - gt.fid(f_train, f_test)):.1e}; "
      f"without the {int((~alive).sum())} features that are 0 for every digit: "
      f"{abs(gn.fid(f_train[:, alive].numpy(), f_test[:, alive].numpy()) - gt.fid(f_train[:, alive], f_test[:, alive])):.1e}")
probs = gt.class_probs(gt.digits_for_gan("train"))
print(f"IS NumPy vs PyTorch: {abs(gn.inception_score(probs.numpy())[0] - gt.inception_score(probs)[0]):.1e}")

# %% [markdown]
# Real against real is not 0: two finite samples of one distribution differ (FID is biased upwards
# for small samples, so **compare FIDs only at equal sample sizes**), and at these sizes it is
# noisy. The training and test splits were both drawn stratified by class, so their class
# proportions agree and they score low; ten random splits of the same 1,797 digits into 1,257 and
# 270, whose class proportions wander a little, score several times higher and spread widely — FID
# sees the mix of classes (the mean feature moves with it). So differences of a couple of units are
# noise here. Uniform noise scores in the hundreds. The real digits' IS is close to the maximum of 10: the classifier is
# confident, and the ten classes are balanced.
#
# Why do the two FIDs differ around 10⁻⁶, when everything else agreed to 10⁻¹⁵? Two of the 32
# features are 0 for every digit (dead ReLUs). Their variance is 0, so two of the covariance's
# eigenvalues are pure round-off, about ±10⁻¹⁵, and FID takes square roots of eigenvalues:
# √(10⁻¹⁵) ≈ 3·10⁻⁸. The different round-off of NumPy's and PyTorch's eigen-solvers survives the
# square root; without those two features the twins agree to ~10⁻¹¹. (The FID exercise asks for
# this care: a round-off eigenvalue of −10⁻¹⁵ must not become a NaN.)
#
# **First use: section 3's samples.** 1,257 decoded z ~ N(0, I) from the autoencoder and from the VAE,
# against the test digits:

# %%
# NBVAL_IGNORE_OUTPUT
z_prior = torch.randn(1257, 2, generator=torch.Generator().manual_seed(0))
for name, model in (("autoencoder", ae), ("VAE", vae)):
    with torch.no_grad():
        x = torch.sigmoid(model.decode(z_prior)) * 2 - 1          # in [-1, 1], what the classifier reads
    probs = gt.class_probs(x)
    per_class = np.bincount(probs.argmax(1).numpy(), minlength=10)
    print(f"{name:11s}: FID {gt.fid(gt.features(x), f_test):6.1f}, IS {gt.inception_score(probs)[0]:.2f}; "
          f"samples read as 0-9: {per_class.tolist()}")

# %% [markdown]
# The VAE's samples cover every class about equally; the autoencoder's crowd into the few classes
# near the middle of its code cloud and almost never produce some digits — a far worse FID and IS.
#
# ## 8 · A GAN on the digits
#
# The same game on the 8 × 8 digits, in PyTorch: G maps 32 noise numbers through two hidden layers
# of 256 to 64 pixels in (−1, 1) (tanh); D is the mirror image with one logit out. The step is
# section 4's (the PyTorch version is the chapter's larger exercise), with R1 (γ = 1) and Adam
# (2·10⁻³, β = (0.5, 0.999)), batches of 64. One more trick: the samples come from a **moving
# average of G's weights**, updated after every step as $\bar\theta \leftarrow 0.995\,\bar\theta + 0.005\,\theta$
# (an *EMA*; Karras et al., 2018, and most GANs since). A GAN's last iterate wanders; the average of
# the last ~200 is steadier and better, and costs nothing in training. The networks are the ring's
# `RingMLP`, wider:

# %%
show_source(gt.RingMLP)
show_source(gt.digits_generator)

# %% [markdown]
# Trained live: the grid shows the averaged generator on 64 fixed noise vectors at every
# evaluation, FID measured against the test digits.

# %%
# NBVAL_IGNORE_OUTPUT
live = explore.LiveGanPlot(f"digits GAN ({device})", evaluations=10)
gan = gt.train_digits_gan(steps=GAN_STEPS, seed=0, callback=live)

# %%
# NBVAL_IGNORE_OUTPUT
print(f"digits GAN: FID {gan.final_fid:.2f} after {GAN_STEPS} steps ({gan.seconds:.1f} s of training); "
      f"IS {gan.inception[0]:.2f} ± {gan.inception[1]:.2f}")
print("FID at each evaluation:", " ".join(f"{v:.1f}" for v in gan.fid))

# %% [markdown]
# FID starts above a thousand (an untrained G makes noise) and falls below 4 — inside the range
# that random sets of real digits score against the test digits (section 7): by this measure, at
# this sample size, the samples are about as close to the test digits as other real digits are.
# (The stratified training split scores about 1.5: a generator that reproduced its training set
# exactly.) Measured on three
# seeds (`python benchmarks/bench_gan_digits.py`): 3.06, 3.32 and 3.34 at step 1,500. The IS comes
# close to that of the real test digits. D's loss climbs towards 2 log 2 ≈ 1.386, its value when
# it can no longer tell real from fake (D = ½ everywhere).
#
# ## 9 · Walking through the latent space
#
# A generator is a smooth function of its noise: walk in a straight line from one z to another and
# the digit changes gradually. Choose the generator and the two ends:

# %%
# NBVAL_IGNORE_OUTPUT
explore.latent_walk({"GAN (Z = 32)": (explore.torch_decoder(gan.G), 32),
                     "VAE (Z = 2)": (explore.torch_decoder(vae.decoder, scale=torch.sigmoid), 2)})

# %% [markdown]
# **Latent arithmetic.** In a VAE's code space some differences mean something: move every test 1
# by (mean code of the 7s − mean code of the 1s) and decode. How many of the results does the course
# classifier read as the target digit?

# %%
# NBVAL_IGNORE_OUTPUT
vae8, vae8_history = gt.train_vae(latent=8, steps=VAE_STEPS, seed=0, progress=False)
pairs = [(1, 7), (3, 8), (0, 6), (4, 9)]
for name, model in (("Z = 2", vae), ("Z = 8", vae8)):
    shares = [gt.latent_analogy(model, a, b)["share_target"] for a, b in pairs]
    print(f"VAE {name}: " + ", ".join(f"{a} → {b}: {100 * sh:.0f} %" for (a, b), sh in zip(pairs, shares)))
moved = gt.latent_analogy(vae8, 1, 7)
fig, ax = plt.subplots(figsize=(7, 2.2))
explore.plot_images(ax, np.concatenate([moved["inputs"][:10].numpy(), moved["outputs"][:10].numpy()]), 10,
                    "Z = 8: test 1s (top) moved by mean(7) − mean(1) and decoded (bottom)")
plt.show()

# %% [markdown]
# With a 2-D code the classes overlap (section 3's scatter), and moving the 1s by the difference of
# the class means lands on a 7 only some of the time; with 8 dimensions most moved 1s read as 7s,
# and 0 → 6 always works. The results look alike: they are close to the mean 7 — on 8 × 8 pixels
# there is little *style* (slant, thickness) for the arithmetic to carry over. Latent arithmetic
# works where a class difference is (nearly) a direction in the code space; nothing guarantees it.
#
# ## 10 · On a GPU
#
# `gt.scale_up` trains a wider GAN (hidden layers of 1,024) on MNIST's 28 × 28 digits when they can be
# downloaded (on Colab; the 8 × 8 digits otherwise), in bfloat16 autocast on the GPU, and prints its
# speed against the CPU's; without a GPU it says so and does nothing.

# %%
# NBVAL_IGNORE_OUTPUT
scaled = gt.scale_up(seconds=60, device=device)

# %% [markdown]
# ## Summary
#
# * An **autoencoder** squeezes data through a bottleneck; its codes organise themselves by class
#   without labels, and trained on corrupted inputs it **denoises**.
# * A **VAE** makes each code a Gaussian and pulls it towards N(0, I) with a KL term; the
#   **reparameterization** z = μ + σε lets the gradient through the sampling, and any z ~ N(0, I)
#   decodes to a digit.
# * A **GAN** trains a generator against a discriminator. Losses are written from logits (softplus);
#   the generator uses the **non-saturating** loss because the minimax one has no gradient when the
#   discriminator wins; the discriminator's step **detaches** the generated batch.
# * GANs **collapse** onto some modes and **oscillate**; the **R1** penalty on D's gradient at the
#   real data (and β₁ = 0.5) brought every run on the ring with σ = 0.05 to all 8 modes; the
#   narrow ring (σ = 0.02) stayed hard.
# * **FID** and **IS** measure a generator through a classifier's features and predictions; here a
#   course classifier stands in for Inception, so the numbers compare only with each other.
#
# **Exercises** (`exercises/08_gan.ipynb`): the KL term and its gradient, the reparameterization's
# backward, the discriminator's and the generator's losses from logits with their gradients, R1 in
# PyTorch, FID, the mode count, and one whole GAN training step in PyTorch with `detach` in the
# right place — then concept questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
