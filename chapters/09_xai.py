# %% [markdown]
# # 09 · Explainable and trustworthy AI: attributions checked by their axioms, sanity checks, adversarial examples, bias
#
# A network that is 98 % accurate is still a black box: it does not say *why* it answered, and
# it does not say when it is about to be wrong. This chapter asks three questions of the digits
# models from earlier chapters, and measures every answer:
#
# 1. **Why this class?** Attribution methods give each input pixel a share of the decision:
#    gradients (saliency, gradient × input, SmoothGrad, Integrated Gradients), Grad-CAM for a CNN,
#    and methods that only call the model (occlusion, LIME, Shapley values) — built by hand in NumPy
#    for the MLP, in PyTorch for any model, and checked against the Captum library in the tests.
# 2. **Can we trust the explanation?** Integrated Gradients promises that its attributions add up
#    to the change of the score (*completeness*) — we measure how well each quadrature rule keeps
#    the promise. Then two tests of faithfulness: randomize the model's weights (a map that does
#    not change did not explain the model), and delete the top-ranked pixels (the score should fall).
# 3. **Can we trust the model?** Adversarial examples change a few grey levels and the answer;
#    adversarial training buys robustness and costs clean accuracy. A data set with a planted
#    shortcut shows a model that is unfair to one group, an attribution that catches it, and a fix.

# %%
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

import dlcourse
from dlcourse import show_source
from dlcourse.data import load_digits
from dlcourse.gradcheck import numerical_grad
from dlcourse.xai import explore
from dlcourse.xai import numpy_impl as xn               # attributions and attacks for an MLP, by hand in NumPy
from dlcourse.xai import torch_impl as xt               # the same for any PyTorch model, Grad-CAM, sanity checks
from dlcourse.xai import trust                          # adversarial examples and training, a planted shortcut

rng = dlcourse.seed(0)
device = dlcourse.device()
lesson_start = time.perf_counter()
digits = load_digits()
x_test, y_test = digits.x_test, digits.y_test             # (270, 64) in [0, 1], (270,)
print(f"device: {device}; digits: {len(digits.x_train)} training, {len(x_test)} test images of 8 × 8 pixels")


def max_diff(a, b):
    """Largest absolute difference between two arrays, NumPy or torch."""
    a, b = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in (a, b))
    return float(np.max(np.abs(a - b)))


def as_numpy(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# %% [markdown]
# ## 1 · Two models to explain
#
# The **MLP** is 64 → 32 → 10 with a ReLU (chapter 04's kind of network); the **CNN** is chapter
# 05's: two 3 × 3 convolutions with ReLU and 2 × 2 max-pooling, then a dense layer. Both are trained
# here in a few seconds (on the CPU, so their numbers are the same everywhere) and kept for the
# whole chapter. The MLP's weights also go into NumPy as a dict keyed like its `state_dict`, so
# everything can be done by hand there too.

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
mlp, cnn = xt.digits_mlp(0), xt.digits_cnn(0)
params = {k: v.detach().double().numpy() for k, v in mlp.state_dict().items()}   # the MLP, for NumPy
print(f"trained both in {time.perf_counter() - start:.1f} s; test accuracy: "
      f"MLP {xt.accuracy(mlp, x_test, y_test):.1%}, CNN {xt.accuracy(cnn, x_test, y_test):.1%}")
print({k: v.shape for k, v in params.items()})

# %% [markdown]
# ## 2 · The gradient of a class score, by hand
#
# Every gradient method starts from one question: *if pixel i were a little brighter, how much
# would the score of class t change?* That is the **input gradient** ∂f_t/∂x, where f_t is the
# model's **logit** for class t. Backpropagation gives it for free: it is the backward pass of
# chapter 02 run one step further, down to the input, starting from the one-hot row e_t instead
# of a loss gradient. For the MLP, z = W₁x + b₁, h = ReLU(z), f = W₂h + b₂:
#
# ∂f_t/∂x = W₁ᵀ · (1[z > 0] ⊙ W₂ᵀ e_t)
#
# — the weights of class t, passed back through the hidden units that were switched on.

# %%
x0, t0 = x_test[:1].astype(np.float64), int(y_test[0])          # one test digit and its true class
grad_np = xn.input_gradient(params, x0, t0)                      # (1, 64), by hand
mlp64 = copy.deepcopy(mlp).double()                              # the same MLP in float64
grad_torch = xt.logit_gradient(mlp64, x0, t0)                    # autograd
numeric = numerical_grad(lambda v: xn.mlp_logits(params, v.reshape(1, -1))[0, t0], x0[0].copy())
print(f"class {t0}: by hand vs autograd {max_diff(grad_np, grad_torch):.1e}, "
      f"vs a numerical gradient {max_diff(grad_np[0], numeric):.1e}")

# %% [markdown]
# **Why the logit, and not the probability or the loss?** The softmax probability p_t depends on
# *every* logit: its gradient is p_t (∂f_t/∂x − Σ_k p_k ∂f_k/∂x), a mix of "more like t" and
# "less like the others", and for a confident prediction p_t ≈ 1 it is almost zero everywhere
# (saturation). The loss gradient is the same thing turned around (for the true class it is
# −(1 − p_t)…). The logit's gradient is about class t alone. Measured on the test digits:

# %%
xb, tb = x_test[:100].astype(np.float64), y_test[:100]
g_logit = xn.input_gradient(params, xb, tb)                                # (100, 64)
logits_b = xn.mlp_logits(params, xb)
p = np.exp(logits_b - logits_b.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)                                               # (100, 10) softmax
g_all = np.stack([xn.input_gradient(params, xb, k) for k in range(10)], 1)  # (100, 10, 64)
pt = p[np.arange(100), tb][:, None]
g_prob = pt * (g_logit - np.einsum("nk,nkd->nd", p, g_all))                # d p_t / dx
norm = lambda g: np.linalg.norm(g, axis=1)
confident = pt[:, 0] > 0.99
print(f"{confident.sum()} of 100 digits are predicted with p > 0.99; there the probability's gradient is "
      f"{np.median(norm(g_prob[confident]) / norm(g_logit[confident])):.1e} times the logit's (median)")
print(f"rank correlation of |logit gradient| and |probability gradient|, median: "
      f"{np.median([xn.spearman(abs(a), abs(b)) for a, b in zip(g_logit, g_prob)]):.2f}")

# %% [markdown]
# ## 3 · Gradient maps: saliency, gradient × input, SmoothGrad
#
# * **Saliency** (Simonyan et al. 2014): |∂f_t/∂x|, how sensitive the score is to each pixel.
# * **Gradient × input**: x ⊙ ∂f_t/∂x — for a linear model exactly each pixel's contribution
#   w_i x_i to the score; blank pixels (x_i = 0) get nothing.
# * **SmoothGrad** (Smilkov et al. 2017): the mean gradient over noisy copies x + σε. A ReLU
#   network's gradient jumps wherever a unit switches on or off; averaging smooths the jumps.
#
# Red raises the class score, blue lowers it; the thin line is the digit's outline. Each map is
# scaled to its own largest magnitude (the methods have different units).

# %%
# NBVAL_IGNORE_OUTPUT
show = [0, 1, 2, 5]                                                # four test digits
targets = y_test[show]
maps = {name: as_numpy(xt.METHODS[name](mlp, x_test[show], targets))
        for name in ["saliency", "gradient x input", "SmoothGrad"]}
fig = explore.plot_maps(plt.figure(figsize=(6.5, 6.4), layout="constrained"), x_test[show], maps,
                        titles=[f"a {t}" for t in targets])
fig.suptitle("MLP: gradient maps for the true class", fontsize=10)
plt.show()

# %% [markdown]
# Saliency lights up pixels *around* the strokes as much as on them: the score is sensitive to
# ink appearing where there is none. Gradient × input keeps only the pixels that are inked, so its
# map looks like the digit — remember that, it comes back in section 7.

# %% [markdown]
# ## 4 · Integrated Gradients and completeness
#
# A gradient is local: it says what a small change does, not how the score got where it is.
# **Integrated Gradients** (Sundararajan et al. 2017) walks from a **baseline** x′ (here a black
# image, all zeros) to x along the straight line and adds up the gradient on the way:
#
# IG_i(x) = (x_i − x′_i) · ∫₀¹ ∂f_t/∂x_i (x′ + α(x − x′)) dα
#
# By the fundamental theorem of calculus for path integrals, the attributions add up exactly to
# f_t(x) − f_t(x′): **completeness**, an axiom the method was built to satisfy. In practice the
# integral is a sum over `steps` points, and the sum misses by δ = Σ IG_i − (f_t(x) − f_t(x′)).
# How much it misses depends on the quadrature rule — measured here on 100 test digits, δ as a
# percentage of |f_t(x) − f_t(x′)|:

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
change = xn.mlp_logits(params, xb)[np.arange(100), tb] - xn.mlp_logits(params, np.zeros((1, 64)))[0, tb]
ig_steps = [4, 8, 16, 32, 64, 128]
ig_error = {}
for rule in xn.IG_RULES:
    ig_error[rule] = [100 * np.median(np.abs(xn.integrated_gradients(params, xb, tb, steps=s, rule=rule)[1])
                                      / np.abs(change)) for s in ig_steps]
print("median |δ| in % of |f(x) − f(x′)|, 100 test digits")
print(f"{'rule':>14}" + "".join(f"{s:>9}" for s in ig_steps))
for rule, errors in ig_error.items():
    print(f"{rule:>14}" + "".join(f"{e:9.3f}" for e in errors))
_, delta50 = xn.integrated_gradients(params, xb, tb, steps=50, rule="gausslegendre")
rel50 = 100 * np.abs(delta50) / np.abs(change)
print(f"Gauss–Legendre, 50 steps: median {np.median(rel50):.2f} %, max {rel50.max():.2f} % "
      f"({time.perf_counter() - start:.1f} s for the table)")

fig, ax = plt.subplots(figsize=(6.4, 3.4))
explore.plot_curves(ax, ig_steps, ig_error, "steps", "median |δ| (% of the change)",
                    "Integrated Gradients: completeness error against steps")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
plt.show()

# %% [markdown]
# The left and right Riemann sums converge like 1/steps; the midpoint and trapezoid rules like
# 1/steps²; Gauss–Legendre, which places its points at the roots of a Legendre polynomial,
# fastest of all on a smooth path — but the path through a ReLU network is only piecewise
# smooth (the gradient jumps where a unit switches), so no rule is exact at a finite step count.
# A practical note: Captum's `riemann_trapezoid` weights sum to (n − 1)/n, not 1, so that rule
# misses completeness by 1/n even on a linear model; the course's tests show it. Our rules' weights
# all sum to 1.

# %% [markdown]
# ## 5 · Grad-CAM: where the CNN looked
#
# **Grad-CAM** (Selvaraju et al. 2017) explains a CNN through its last convolutional layer. That
# layer's K feature maps A_k (here 64 maps of 4 × 4) each detect something; Grad-CAM weighs each
# map by how much the class score cares about it — the *spatial mean* of ∂f_t/∂A_k — adds them
# up, keeps the positive part (ReLU: evidence *for* the class) and stretches the coarse map to the
# image's size:
#
# α_k = mean_{i,j} ∂f_t/∂A_k[i, j],  map = ReLU(Σ_k α_k A_k), upsampled (bilinear) to 8 × 8.
#
# The course's version hooks the layer with `register_forward_hook` and reads the gradient with
# `torch.autograd.grad`.

# %%
# NBVAL_IGNORE_OUTPUT
cnn_maps = {name: as_numpy(xt.METHODS[name](cnn, x_test[show], targets)).reshape(len(show), 64)
            for name in ["gradient x input", "Integrated Gradients", "Grad-CAM"]}
coarse = as_numpy(xt.grad_cam(cnn, x_test[show], targets, upsample=False))     # (4, 4, 4) before upsampling
print(f"Grad-CAM before upsampling: {coarse.shape[1:]} per image; after: 8 × 8")
fig = explore.plot_maps(plt.figure(figsize=(6.5, 6.4), layout="constrained"), x_test[show], cnn_maps,
                        titles=[f"a {t}" for t in targets])
fig.suptitle("CNN: gradient × input, Integrated Gradients, Grad-CAM", fontsize=10)
plt.show()

# %% [markdown]
# On 8 × 8 digits the last convolution sees a 4 × 4 grid, so Grad-CAM is a blurry blob: it says
# *roughly where*, not *which pixels*. On a 224 × 224 photograph the same 4-to-1 ratio is plenty;
# here it is the method's limit made visible.

# %% [markdown]
# ## 6 · Methods that only call the model: occlusion, LIME, Shapley values
#
# No gradient needed — these work on any black box, and pay in model calls:
#
# * **Occlusion** (Zeiler & Fergus 2014): cover a 2 × 2 patch with the baseline, see how much the
#   score drops; slide the patch over the image. One call per position.
# * **LIME** (Ribeiro et al. 2016): switch random subsets of pixels off, call the model on each
#   masked copy, fit a *linear* model to the answers, weighted by closeness to the original; its
#   coefficients are the explanation.
# * **Shapley values** (Shapley 1953; Štrumbelj & Kononenko 2014): a pixel's average marginal
#   contribution over all the orders in which pixels could be switched on; estimated from random
#   orders. Like IG they add up exactly to f_t(x) − f_t(baseline) (*efficiency*). KernelSHAP
#   (Lundberg & Lee 2017) gets them instead by a LIME-style fit with a special weighting.

# %%
# NBVAL_IGNORE_OUTPUT
f_np = lambda z: xn.mlp_logits(params, z)                          # the black box: (M, 64) -> (M, 10)
x1, t1 = xb[0], int(tb[0])
ig1 = xn.integrated_gradients(params, xb[:1], t1, steps=50)[0][0]  # (64,): the reference to compare with
cost = {}
for name, run in [("occlusion 2 × 2", lambda: xn.occlusion(f_np, x1, t1, patch=2, stride=1)),
                  ("LIME, 1,000 masks", lambda: xn.lime(f_np, x1, t1, n_samples=1000, rng=np.random.default_rng(0))),
                  ("Shapley, 25 orders", lambda: xn.shapley_sampling(f_np, x1, t1, n_permutations=25,
                                                                     rng=np.random.default_rng(0)))]:
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    attr = np.asarray(out[0]).reshape(-1)
    cost[name] = (attr, out[-1], seconds)
    print(f"{name:20} {out[-1]:6d} model calls, {1000 * seconds:6.1f} ms, "
          f"rank correlation with IG {xn.spearman(attr, ig1):5.2f}")
shap = cost["Shapley, 25 orders"][0]
print(f"Shapley efficiency: Σφ = {shap.sum():.4f}, f(x) − f(0) = {change[0]:.4f}")
fig = explore.plot_maps(plt.figure(figsize=(7.5, 2.0), layout="constrained"), x1[None],
                        {"IG (50 steps)": ig1[None], **{k: v[0][None] for k, v in cost.items()}})
plt.show()

# %% [markdown]
# IG needed 50 gradient evaluations; occlusion 50 calls but only 2 × 2 resolution; LIME and
# Shapley sampling need hundreds to thousands of calls to get stable on 64 features — and the
# cost grows with the number of features, which is why they are used on *superpixels* (groups
# of pixels) for real images. `benchmarks/bench_xai.py` measures every method's cost.

# %% [markdown]
# ## 7 · Are the explanations faithful?
#
# A map that looks like a digit is not proof that it explains the model. Two tests.
#
# **The model-randomization test** (Adebayo et al. 2018, "Sanity checks for saliency maps"):
# re-initialize the model's layers one after another, from the top, and recompute each map. If
# the map does not change when the weights it claims to explain are gone, it was showing
# something else — usually the input. The number is the rank correlation (Spearman) between the
# trained model's |map| and the randomized model's, median over 50 test digits.

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
sanity_mlp = xt.cascading_randomization(mlp, x_test[:50], y_test[:50], seed=0)
sanity_cnn = xt.cascading_randomization(cnn, x_test[:50], y_test[:50], seed=0)
print(f"({time.perf_counter() - start:.1f} s) MLP, layers randomized from the top (+name: up to that layer):")
print(sanity_mlp.table())
print("\nCNN:")
print(sanity_cnn.table())
i = 0
image_maps = {m: as_numpy(sanity_cnn.maps[m])[:, i].reshape(len(sanity_cnn.stages) + 1, 64)
              for m in ["saliency", "gradient x input", "Integrated Gradients", "Grad-CAM"]}
rho = {m: np.r_[1.0, sanity_cnn.spearman_abs[sanity_cnn.methods.index(m)]] for m in image_maps}
explore.plot_randomization(plt.figure(figsize=(6.5, 6.4), layout="constrained"), x_test[i],
                           ["trained"] + [f"+{s}" for s in sanity_cnn.stages], image_maps, rho)
plt.show()

# %% [markdown]
# Saliency and SmoothGrad pass: with every layer random their maps have nothing left in common
# with the trained model's. **Gradient × input and Integrated Gradients fail**: their maps barely
# change, because both multiply by x (IG by x − x′), and a map times the digit looks like the
# digit whatever the gradient is. (Their *signed* maps do change — `sanity_mlp.table(signed=True)`;
# the failure is in the picture one looks at.) Passing the test does not make a method right,
# and IG still has its axioms; but an attractive map is not evidence by itself.
#
# **Deletion** (Petsiuk et al. 2018): black out the pixels in the order the map ranks them, most
# important first, and watch the class probability. A faithful map makes it fall fast: a *small*
# area under the curve. (Insertion is the reverse: a *large* area is good.) Against a random order:

# %%
# NBVAL_IGNORE_OUTPUT
curves, aucs = {}, {}
for name, method in xt.methods_for(cnn).items():
    attribution = method(cnn, x_test[:100], y_test[:100])
    r = xt.deletion_insertion(cnn, x_test[:100], y_test[:100], attribution, mode="deletion")
    curves[name], aucs[name] = r.probabilities.mean(0), float(r.auc.mean())
random_rank = torch.rand(100, 64, generator=torch.Generator().manual_seed(0))
r = xt.deletion_insertion(cnn, x_test[:100], y_test[:100], random_rank, mode="deletion")
curves["random order"], aucs["random order"] = r.probabilities.mean(0), float(r.auc.mean())
print("CNN, deletion AUC (mean of 100 test digits; smaller = the map found the decisive pixels):")
for name, auc in sorted(aucs.items(), key=lambda kv: kv[1]):
    print(f"  {name:22} {auc:.3f}")
fig, ax = plt.subplots(figsize=(6.4, 3.4))
explore.plot_curves(ax, as_numpy(r.fractions), {k: as_numpy(v) for k, v in curves.items()},
                    "fraction of pixels deleted", "probability of the true class", "deletion curves, CNN")
plt.show()

# %% [markdown]
# The two tests disagree, and both are right about something: gradient × input and IG point at
# the pixels whose removal kills the score (they are the inked pixels, and deleting ink kills any
# digit), which is also why they survive randomization. Saliency ranks blank pixels high — faithful
# to the *gradient*, poor at deletion. Grad-CAM's 4 × 4 blob is little better than random here.
# Evaluating explanations is an open problem; report more than one test.

# %% [markdown]
# ## 8 · Adversarial examples
#
# Explanations ask what the model looked at; **adversarial examples** show how little it takes to
# change its mind. The idea (Szegedy et al. 2014; Goodfellow et al. 2015): move the input a small
# step *up the loss*. Now the gradient we want is that of the **loss** (not of a logit), because
# the goal is "less like the true class, whatever else":
#
# * **FGSM** (fast gradient sign method): x_adv = clip(x + ε · sign(∇ₓ L(x, y))). Every pixel moves
#   by exactly ε, up or down — the largest step of the linearized loss allowed when no pixel may
#   change by more than ε (an **L∞ budget**). Then clip to the valid range [0, 1].
# * **PGD** (projected gradient descent, Madry et al. 2018): several smaller steps of size α, each
#   followed by a **projection** back into the ε-box around the *original* x and the clip; often from
#   a random start inside the box. The strongest simple first-order attack.
#
# ε is in grey levels: the digits have 17 of them (0, 1/16, …, 1), so ε = 0.1 is less than two.
# As a control, random ±ε noise of the same size:

# %%
# NBVAL_IGNORE_OUTPUT
eps_list = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
start = time.perf_counter()
acc = {}
for name, model in [("MLP", mlp), ("CNN", cnn)]:
    for attack in ["noise", "fgsm", "pgd"]:
        acc[f"{name}, {attack}"] = trust.robust_accuracy(model, x_test, y_test, eps_list, attack=attack, seed=0)
print(f"accuracy on the 270 test digits against ε ({time.perf_counter() - start:.1f} s)")
print(f"{'':14}" + "".join(f"{e:>7}" for e in eps_list))
for name, a in acc.items():
    print(f"{name:14}" + "".join(f"{v:7.1%}" for v in a))

# %%
# NBVAL_IGNORE_OUTPUT
x_show, y_show = x_test[:6], y_test[:6]
fig, axes = plt.subplots(3, 6, figsize=(8.5, 4.6), layout="constrained")
for row, eps in enumerate([0.0, 0.1, 0.2]):
    x_adv = as_numpy(trust.pgd(cnn, x_show, y_show, eps, steps=10, random_start=False)).reshape(6, 64)
    pred = xt.logits(cnn, x_adv).argmax(1).numpy()
    for j in range(6):
        explore.show_image(axes[row, j], x_adv[j], f"ε = {eps}: says {pred[j]}" + (" ✗" if pred[j] != y_show[j] else ""))
fig.suptitle("PGD against the CNN: the true labels are " + ", ".join(map(str, y_show)), fontsize=10)
plt.show()

# %% [markdown]
# Random noise of the same size barely matters; the *chosen* direction destroys the model. PGD is
# usually the stronger attack (several steps follow the loss where one linear step overshoots),
# though not on every single image. The CNN resists a little longer than the MLP, and falls too.
#
# **Adversarial training** (Madry et al. 2018) trains on the attacked batch: the minimax problem
# min_θ E max_{‖δ‖∞ ≤ ε} L(x + δ, y; θ). Each step first attacks the batch with the current weights
# (PGD, 5 steps), then takes the optimizer step on the attacked images. Each step costs the
# attack's 5 extra forward and backward passes — here we fine-tune a copy of the CNN for 8 epochs,
# watching its validation accuracy clean and under attack:

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
robust_cnn, adv_history = trust.adversarial_training("cnn", eps=0.1, seed=0, progress=True,
                                                    callback=explore.LiveRobustPlot("CNN, PGD-5, ε = 0.1", epochs=8))
print(f"adversarial training (PGD-5, ε = 0.1): {adv_history.seconds:.1f} s")
acc_robust = {"plain CNN": acc["CNN, pgd"],
              "adv. trained CNN": trust.robust_accuracy(robust_cnn, x_test, y_test, eps_list, attack="pgd", seed=0)}
print(f"PGD-10 accuracy on the test digits{'':3}" + "".join(f"{e:>7}" for e in eps_list))
for name, a in acc_robust.items():
    print(f"{name:36}" + "".join(f"{v:7.1%}" for v in a))
print(f"clean accuracy: {acc_robust['plain CNN'][0]:.1%} → {acc_robust['adv. trained CNN'][0]:.1%}")
fig, ax = plt.subplots(figsize=(6.4, 3.4))
explore.plot_curves(ax, eps_list, {**{k: v for k, v in acc.items() if k.startswith("CNN")},
                                   "adv. trained CNN, pgd": acc_robust["adv. trained CNN"]},
                    "ε (L∞, grey levels in [0, 1])", "test accuracy", "CNN under attack")
plt.show()

# %% [markdown]
# ## 9 · A shortcut, an unfair model, and how an attribution finds it
#
# Models learn whatever predicts the label in the training data, including things that should not
# matter. To see it happen under control, we plant a **shortcut**. The task: is the digit ≥ 5? The
# images come from two "scanners": group A's are clean, group B's (30 %) carry a small bright
# watermark in the top-left corner. In the *training* data most of group B happens to be positive
# (95 %), so the mark predicts the label; in the *test* data the mark is independent of it.

# %%
show_source(trust.shortcut_digits)

# %%
# NBVAL_IGNORE_OUTPUT
data = trust.shortcut_digits(seed=0)
for part, y, g in [("train", data.y_train, data.g_train), ("test", data.y_test, data.g_test)]:
    print(f"{part}: {len(y)} images, group B {g.mean():.0%}; P(y = 1 | A) = {y[g == 0].mean():.2f}, "
          f"P(y = 1 | B) = {y[g == 1].mean():.2f}")
start = time.perf_counter()
shortcut = {m: trust.train_shortcut_model(data, m, seed=0) for m in trust.MITIGATIONS}
metrics = {m: trust.group_metrics(data.y_test, trust.shortcut_predict(model, data, data.x_test, m), data.g_test)
           for m, model in shortcut.items()}
print(f"three models trained in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# **Fairness metrics** compare the groups (Hardt et al. 2016 for equalized odds):
#
# * per-group accuracy, and the **worst group's**;
# * **demographic parity gap** |P(ŷ = 1 | A) − P(ŷ = 1 | B)|: are positives predicted at the same
#   rate? (Here the true rates are equal in the test data, so a gap is the model's doing);
# * **equalized-odds gap**: the larger of the gaps in true-positive rate and in false-positive rate.
#   A model that calls every marked digit "≥ 5" has a high false-positive rate on group B.

# %%
# NBVAL_IGNORE_OUTPUT
b_test = data.g_test == 1
rows = [("overall accuracy", lambda r: r["accuracy"]),
        ("group A: accuracy on y = 0", lambda r: 1 - r["groups"][0]["fpr"]),
        ("group B: accuracy on y = 0", lambda r: 1 - r["groups"][1]["fpr"]),
        ("worst-group accuracy", lambda r: r["worst_group_accuracy"]),
        ("demographic parity gap", lambda r: r["dp_gap"]),
        ("equalized-odds gap", lambda r: r["eo_gap"])]
share = {m: float(trust.attribution_share(shortcut[m], data.x_test[b_test], data.mark_mask).mean())
         for m in [None, "reweigh"]}                   # the masked model never sees the mark
names = [str(m) if m else "plain" for m in shortcut]
print(f"{'test data, seed 0':30}" + "".join(f"{n:>10}" for n in names))
for label, f in rows:
    print(f"{label:30}" + "".join(f"{f(metrics[m]):10.3f}" for m in shortcut))
print(f"{'IG share on the mark (B)':30}" + "".join(f"{share[m]:10.3f}" if m in share else f"{'—':>10}"
                                                    for m in shortcut))

# %% [markdown]
# The plain model is accurate overall and unfair: on group B's digits below 5 it is fooled by the
# mark far more often than on group A's. Integrated Gradients shows why without being told where the
# mark is: a larger share of its attribution than the mark's 4 of 64 pixels (0.0625) lands on the
# corner. Here are marked digits below 5 that the plain model called "≥ 5":

# %%
# NBVAL_IGNORE_OUTPUT
plain_says = trust.shortcut_predict(shortcut[None], data, data.x_test)
fooled = np.flatnonzero(b_test & (data.y_test == 0) & (plain_says == 1))[:4]   # marked digits below 5 called ≥ 5
ig_maps = {}
for m in [None, "reweigh"]:
    p_m = {k: v.detach().double().numpy() for k, v in shortcut[m].state_dict().items()}
    ig_maps[f"IG, {m or 'plain'}"] = xn.integrated_gradients(p_m, data.x_test[fooled].astype(np.float64), 1)[0]
said = {m: trust.shortcut_predict(shortcut[m], data, data.x_test[fooled], m) for m in [None, "reweigh"]}
fig = explore.plot_maps(plt.figure(figsize=(5.0, 6.4), layout="constrained"), data.x_test[fooled], ig_maps,
                        titles=[f"a {d}; plain: {'≥ 5' if a else '< 5'}\nreweighed: {'≥ 5' if b else '< 5'}"
                                for d, a, b in zip(data.digit_test[fooled], said[None], said["reweigh"])])
fig.suptitle(f"{len(np.flatnonzero(b_test & (data.y_test == 0) & (plain_says == 1)))} marked digits below 5 "
             "fooled the plain model; IG for the class '≥ 5' on four", fontsize=9)
plt.show()

# %% [markdown]
# **Mitigations**, measured above: *reweighing* (Kamiran & Calders 2012) weights each training
# example by P(g)P(y)/P(g, y) so that, in the weighted data, group and label are independent — the
# mark stops predicting the label without anyone knowing what the mark is; *masking* removes the
# mark's pixels, which needs to know where it is (and is only possible because we planted it).
# Both help the worst group; neither is free, and neither is possible without first *finding* the
# shortcut — the job of the per-group metrics and of the attributions.

# %% [markdown]
# ## 10 · Explore
#
# Pick a model, a test digit, a method and the class to explain. The ε slider replaces the digit by
# its PGD adversarial example (10 steps, no random start) and every panel follows: how does the
# explanation change when the answer flips? Try the adversarially trained CNN too. (Grad-CAM only
# for the CNNs; the perturbation is shown on a ±ε scale.)

# %%
# NBVAL_IGNORE_OUTPUT
explore.attribution_explorer({"MLP": mlp, "CNN": cnn, "CNN, adversarially trained": robust_cnn},
                             x_test, y_test, n_images=30)

# %% [markdown]
# ## 11 · On a GPU
#
# `trust.scale_up` adversarially trains the CNN with a stronger attack (PGD-10) for longer on the
# GPU and reports PGD accuracy against ε and the speed against the CPU; without a GPU it says so
# and does nothing.

# %%
# NBVAL_IGNORE_OUTPUT
scaled = trust.scale_up(seconds=60, device=device)

# %% [markdown]
# ## Summary
#
# * **Attributions** explain one decision: gradient methods cost one to a few dozen backward
#   passes, perturbation methods (occlusion, LIME, Shapley sampling) only model calls, many of them.
#   Explain the class **logit**, not the loss or the probability.
# * **Integrated Gradients** sums to f(x) − f(x′) (completeness); with Gauss–Legendre nodes 50
#   steps keep the error well under 1 % here, Riemann sums need far more. **Shapley values** add up
#   the same way (efficiency).
# * **Grad-CAM** weighs a conv layer's maps by their mean gradient: cheap and class-specific, but as
#   coarse as the layer.
# * **Sanity checks**: gradient × input and IG maps survive randomizing the whole model (they
#   inherit the digit's shape), saliency does not; deletion curves rank them the other way. Test
#   explanations; do not just look at them.
# * **Adversarial examples**: a PGD perturbation of a grey level or two fools the models where
#   random noise of the same size does nothing; **adversarial training** buys robustness within
#   its ε (measured above, with its clean accuracy; trained for a larger ε, robust models lose
#   clean accuracy — `benchmarks/RESULTS.md` has the numbers).
# * **Bias**: a spurious feature in the training data makes a model unfair to a group; per-group
#   metrics expose it, attributions locate it, reweighing or removing it helps.
#
# **Exercises** (`exercises/09_xai.ipynb`): the class-logit gradient of an MLP by hand, SmoothGrad,
# Integrated Gradients graded by completeness, occlusion, Grad-CAM with hooks, FGSM, and a PGD
# attack with projection — then concept questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
