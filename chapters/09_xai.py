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
#    adversarial training buys robustness — what it costs, measured. A data set with a planted
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
# everything can be done by hand there too. The MLP is an `nn.Sequential`, so its layers are named by
# their position: `0` the hidden layer, `1` the ReLU (no weights), `2` the output layer.

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
# (saturation). The loss gradient is the same mix turned around: ∂L/∂x = −∂log p_t/∂x =
# −(1 − p_t) ∂f_t/∂x + Σ_{k≠t} p_k ∂f_k/∂x, which also vanishes when p_t ≈ 1. The logit's gradient is
# about class t alone. Measured on the test digits (the einsum below is Σ_k p_k ∂f_k/∂x):

# %%
xb, tb = x_test[:100].astype(np.float64), y_test[:100]
g_logit = xn.input_gradient(params, xb, tb)                                # (100, 64)
logits_b = xn.mlp_logits(params, xb)
p = np.exp(logits_b - logits_b.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)                                               # (100, 10) softmax
g_all = np.stack([xn.input_gradient(params, xb, k) for k in range(10)], 1)  # (100, 10, 64)
pt = p[np.arange(100), tb][:, None]
g_prob = pt * (g_logit - np.einsum("nk,nkd->nd", p, g_all))                # d p_t / dx = p_t (df_t/dx - sum_k p_k df_k/dx)
norm = lambda g: np.linalg.norm(g, axis=1)
confident = pt[:, 0] > 0.99
print(f"{confident.sum()} of 100 digits are predicted with p > 0.99; there the probability's gradient is "
      f"{np.median(norm(g_prob[confident]) / norm(g_logit[confident])):.1e} times the logit's (median)")
print(f"rank correlation of |logit gradient| and |probability gradient|, median: "
      f"{np.median([xn.spearman(abs(a), abs(b)) for a, b in zip(g_logit, g_prob)]):.2f}")

# %% [markdown]
# So for a confident prediction the probability's gradient is almost nothing, and where it is not
# negligible it ranks the pixels differently from the logit's: it also answers "less like the other
# classes". From here on every map explains a **logit**.

# %% [markdown]
# ## 3 · Gradient maps: saliency, gradient × input, SmoothGrad
#
# * **Saliency** (Simonyan et al. 2014): |∂f_t/∂x|, how sensitive the score is to each pixel.
# * **Gradient × input**: x ⊙ ∂f_t/∂x — for a linear model exactly each pixel's contribution
#   w_i x_i to the score; blank pixels (x_i = 0) get nothing.
# * **SmoothGrad** (Smilkov et al. 2017): the mean gradient over noisy copies x + σε. A ReLU
#   network's gradient jumps wherever a unit switches on or off; averaging smooths the jumps.
#
# Red raises the class score, blue lowers it (saliency is a magnitude: all red); the thin line is
# the digit's outline. Each map is scaled to its own largest magnitude (the methods have different
# units). SmoothGrad here averages 50 noisy copies with σ = 0.15 (15 % of the pixel range), and keeps
# the sign. `xt.METHODS` maps each method's name to a function (model, x, target) → map;
# `xt.methods_for(model)` is the same without Grad-CAM for a model that has no convolution.

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
# A **quadrature rule** approximates ∫₀¹ g(α) dα by Σ_j w_j g(α_j); the rules differ in where the
# points α_j go and how they are weighted (left or right ends of `steps` equal slices, their
# middles ("middle"), the trapezoid rule, or Gauss–Legendre's optimally placed points). How much
# the sum misses — measured here on 100 test digits, δ as a percentage of |f_t(x) − f_t(x′)|:

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
change = xn.mlp_logits(params, xb)[np.arange(100), tb] - xn.mlp_logits(params, np.zeros((1, 64)))[0, tb]
ig_steps = [4, 8, 16, 32, 64, 128]
ig_error = {}
for rule in xn.IG_RULES:
    errors = []
    for steps in ig_steps:
        attributions, delta = xn.integrated_gradients(params, xb, tb, steps=steps, rule=rule)
        errors.append(100 * np.median(np.abs(delta) / np.abs(change)))
    ig_error[rule] = errors
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
# For a smooth integrand the left and right sums converge like 1/steps, the middle and trapezoid
# rules like 1/steps², Gauss–Legendre (points at the roots of a Legendre polynomial) much faster.
# Through a ReLU network the path is only piecewise smooth — the gradient jumps wherever a unit
# switches — and the table shows the price: every rule falls roughly like 1/steps. Gauss–Legendre
# and the middle rule are ahead by a constant factor, the left sum is the worst; at 50
# Gauss–Legendre steps the error is well under 1 % on every digit here.
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
# (A_k here is `conv2`'s output before its ReLU — the CNN applies the ReLU as a function, so the
# hook sees the convolution's output; Captum's `LayerGradCam` on `conv2` sees the same tensor.)
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
# *roughly where*, not *which pixels*. On a 224 × 224 photograph a ResNet's last layer is 7 × 7 —
# even coarser relative to the image — but an object covering half the photo spans many cells;
# here each cell is a quarter of the digit. The method's limit, made visible.

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
#   contribution over the orders in which the pixels could be switched on,
#   φ_i = mean over orders π of f_t(S ∪ {i}) − f_t(S), where S is the set of pixels switched on
#   before i (the others at the baseline); estimated from random orders. In each order the terms
#   telescope to f_t(x) − f_t(baseline), so they add up to it exactly (*efficiency*), even for the
#   sampled estimate. KernelSHAP (Lundberg & Lee 2017) gets them instead by a LIME-style fit with a
#   special weighting.

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
    *result, n_calls = run()                                         # (map, [intercept,] model calls)
    seconds = time.perf_counter() - start
    attr = np.asarray(result[0]).reshape(-1)                         # (64,)
    cost[name] = attr
    print(f"{name:20} {n_calls:6d} model calls, {1000 * seconds:6.1f} ms, "
          f"rank correlation with IG {xn.spearman(attr, ig1):5.2f}")
shap = cost["Shapley, 25 orders"]
print(f"Shapley efficiency: Σφ = {shap.sum():.4f}, f(x) − f(0) = {change[0]:.4f}")
fig = explore.plot_maps(plt.figure(figsize=(7.5, 2.0), layout="constrained"), x1[None],
                        {"IG (50 steps)": ig1[None], **{k: v[None] for k, v in cost.items()}})
plt.show()

# %% [markdown]
# IG needed 50 gradient evaluations; occlusion 50 calls, its map blurred over 2 × 2 patches; LIME
# and Shapley sampling used a thousand and more calls for 64 features — and their cost grows with
# the number of features, which is why they are used on *superpixels* (groups of pixels) for real
# images. `benchmarks/bench_xai.py` measures every method's cost, and how the agreement with IG
# changes with more samples.

# %% [markdown]
# ## 7 · Are the explanations faithful?
#
# A map that looks like a digit is not proof that it explains the model. Two tests.
#
# **The model-randomization test** (Adebayo et al. 2018, "Sanity checks for saliency maps"):
# re-initialize the model's layers one after another, from the top, and recompute each map. If
# the map does not change when the weights it claims to explain are gone, it was showing
# something else — usually the input. The number is the rank correlation (Spearman) between the
# trained model's |map| and the randomized model's, median over 50 test digits. The columns name
# the layer randomized last: "+2" = the MLP's output layer random, "+0" = its hidden layer too (every
# layer random); "+fc", "+conv2", "+conv1" likewise for the CNN, from the top.

# %%
# NBVAL_IGNORE_OUTPUT
start = time.perf_counter()
sanity_mlp = xt.cascading_randomization(mlp, x_test[:50], y_test[:50], seed=0)
sanity_cnn = xt.cascading_randomization(cnn, x_test[:50], y_test[:50], seed=0)
print(f"({time.perf_counter() - start:.1f} s) MLP, layers randomized from the top (+name: up to that layer):")
print(sanity_mlp.table())
print("\nCNN:")
print(sanity_cnn.table())
print("\nCNN, the same for the signed maps (no absolute value):")
print(sanity_cnn.table(signed=True))
i = 0
image_maps = {m: as_numpy(sanity_cnn.maps[m])[:, i].reshape(len(sanity_cnn.stages) + 1, 64)
              for m in ["saliency", "gradient x input", "Integrated Gradients", "Grad-CAM"]}
rho = {m: np.r_[1.0, sanity_cnn.spearman_abs[sanity_cnn.methods.index(m)]] for m in image_maps}
fig = explore.plot_randomization(plt.figure(figsize=(6.5, 6.6), layout="constrained"), x_test[i],
                                 ["trained"] + [f"+{s}" for s in sanity_cnn.stages], image_maps, rho)
fig.suptitle("one test digit's |maps| as the CNN is randomized; ρ: the median over 50 digits", fontsize=9)
plt.show()

# %% [markdown]
# Saliency and SmoothGrad pass: with every layer random their maps have (almost) nothing left in
# common with the trained model's; Grad-CAM passes too (ρ ≤ 0). **Gradient × input and Integrated
# Gradients fail**: their |maps| barely change, because both multiply by x (IG by x − x′), and a map
# times the digit looks like the digit whatever the gradient is. Occlusion keeps 0.6–0.7 for the
# same reason: covering blank pixels with black changes nothing, so its map is shaped by the ink.
# (The *signed* maps do change, as the last table shows; the failure is in the |map| one usually
# looks at.) Passing the test does not make a method right, and IG still has its axioms; but an
# attractive map is not evidence by itself.
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
# The two tests measure different things. Gradient × input and IG win at deletion partly because
# they rank exactly the inked pixels, and deleting ink kills any digit — the same reason they
# failed randomization. Saliency's |·| ranks pixels whose ink *lowers* the score as high as those
# that raise it, and deleting those helps the class, so its area is poor (ranked by the signed
# gradient it does much better). SmoothGrad passes both tests. Grad-CAM's 4 × 4 blob is little better
# than the random order here (after its ReLU most of its values are 0, and ties are deleted in pixel
# order). Evaluating explanations is an open problem; report more than one test.

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
# * **PGD** (projected gradient descent, Madry et al. 2018): x ← clip(Π_ε(x + α · sign(∇ₓL))),
#   repeated: small FGSM steps of size α, each followed by the **projection** Π_ε back into the ε-box
#   around the *original* x and the clip; from a random point of the box. Here PGD-10: 10 steps,
#   α = 2.5ε/10. (The name comes from optimization: it is gradient descent on −L.) The strongest
#   simple first-order attack.
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
print(f"accuracy on the 270 test digits against ε; pgd = PGD-10 from a random start ({time.perf_counter() - start:.1f} s)")
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
# Read the table: within the ε it was trained for, the robust CNN keeps far more of its accuracy
# under PGD; far beyond it (ε = 0.3, several grey levels on every pixel) nothing survives. At this
# small ε the clean accuracy did not drop; trained for a larger ε, robust models do lose clean
# accuracy (`benchmarks/RESULTS.md` has the numbers). Robustness is bought for the ε one trains for.

# %% [markdown]
# ## 9 · A shortcut, an unfair model, and how an attribution finds it
#
# Models learn whatever predicts the label in the training data, including things that should not
# matter. To see it happen under control, we plant a **shortcut**. The task: is the digit ≥ 5? The
# images come from two "scanners": group A's are clean, group B's (30 %) carry a small bright
# watermark in the top-left corner. In the *training* data most of group B happens to be positive
# (95 %), so the mark predicts the label; in the *test* data the mark is independent of it. (The
# test set is the digits' validation and test splits together, 540 images, so that group B has
# ~80 digits below 5 to measure on; nothing is tuned on it.)

# %%
show_source(trust.assign_groups)
show_source(trust.shortcut_digits)

# %%
# NBVAL_IGNORE_OUTPUT
data = trust.shortcut_digits(seed=0)
for part, y, g in [("train", data.y_train, data.g_train), ("test", data.y_test, data.g_test)]:
    print(f"{part}: {len(y)} images, group B {g.mean():.0%}; P(y = 1 | A) = {y[g == 0].mean():.2f}, "
          f"P(y = 1 | B) = {y[g == 1].mean():.2f}")
start = time.perf_counter()
mitigation = {"plain": None, "reweigh": "reweigh", "mask": "mask"}     # trust's names for them
shortcut = {name: trust.train_shortcut_model(data, m, seed=0) for name, m in mitigation.items()}
predicted = {name: trust.shortcut_predict(shortcut[name], data, data.x_test, mitigation[name]) for name in shortcut}
metrics = {name: trust.group_metrics(data.y_test, predicted[name], data.g_test) for name in shortcut}
print(f"three models trained in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# Group B took most of the positives, so in training group A is only 31 % positive: the *absence*
# of the mark is a (weaker) cue for "< 5" too.

# %% [markdown]
# **Fairness metrics** compare the groups (Hardt et al. 2016 for equalized odds):
#
# * per-group accuracy, and the **worst group's**;
# * **demographic parity gap** |P(ŷ = 1 | A) − P(ŷ = 1 | B)|: are positives predicted at the same
#   rate? (In the test data the true rates are almost equal, 0.51 and 0.48: even the true labels
#   have a gap of 0.03 — parity is not accuracy);
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
control_data = trust.shortcut_digits(seed=0, correlation=0.5)     # the mark means nothing here
control = trust.train_shortcut_model(control_data, None, seed=0)
share = {name: float(trust.attribution_share(shortcut[name], data.x_test[b_test], data.mark_mask).mean())
         for name in ["plain", "reweigh"]}                               # the masked model never sees the mark
share["control"] = float(trust.attribution_share(control, data.x_test[b_test], data.mark_mask).mean())
print(f"{'test data, seed 0':30}" + "".join(f"{name:>10}" for name in shortcut))
for label, f in rows:
    print(f"{label:30}" + "".join(f"{f(metrics[name]):10.3f}" for name in shortcut))
print(f"{'IG share on the mark (B)':30}" + "".join(f"{share[name]:10.3f}" if name in share else f"{'—':>10}"
                                                    for name in shortcut))
print(f"IG share on the mark for a control model trained where the mark is independent of y: {share['control']:.3f}")

# %% [markdown]
# The plain model is accurate overall and unfair: on group B's digits below 5 it is fooled by the
# mark more often than on group A's. Integrated Gradients shows the mark's weight: compare the share
# of |IG| on the mark's 4 pixels with the control model's, trained where the mark is independent of
# the label. (Not with 4/64: with a black baseline IG is zero on blank pixels, so the share is not an
# area share.) The number needs to know where the mark is; the maps do not — here are marked digits
# below 5 that the plain model called "≥ 5":

# %%
# NBVAL_IGNORE_OUTPUT
fooled_all = np.flatnonzero(b_test & (data.y_test == 0) & (predicted["plain"] == 1))
fooled = fooled_all[:4]                                            # marked digits below 5 called ≥ 5
ig_maps, said = {}, {}
for name in ["plain", "reweigh"]:
    p_m = {k: v.detach().double().numpy() for k, v in shortcut[name].state_dict().items()}
    ig_maps[f"IG, {name}"], _ = xn.integrated_gradients(p_m, data.x_test[fooled].astype(np.float64), 1)
    said[name] = predicted[name][fooled]
fig = explore.plot_maps(plt.figure(figsize=(5.0, 6.4), layout="constrained"), data.x_test[fooled], ig_maps,
                        titles=[f"a {d}; plain: {'≥ 5' if a else '< 5'}\nreweighed: {'≥ 5' if b else '< 5'}"
                                for d, a, b in zip(data.digit_test[fooled], said["plain"], said["reweigh"])])
fig.suptitle(f"{len(fooled_all)} marked digits below 5 fooled the plain model; IG for the class '≥ 5' on the "
             "first four", fontsize=9)
plt.show()
print(f"of the {len(fooled_all)}, the reweighed model still calls {int(predicted['reweigh'][fooled_all].sum())} '≥ 5'")

# %% [markdown]
# **Mitigations**, measured above: *reweighing* (Kamiran & Calders 2012) weights each training
# example by P(g)P(y)/P(g, y) so that, in the weighted data, group and label are independent — the
# mark stops predicting the label; it fixes part of the fooled digits, not all (its IG share stays
# above the control's: it still uses the mark a little). *Masking* removes the mark's pixels. Here
# neither costs accuracy — the shortcut was hurting on test data where it no longer holds. Their price
# is information: reweighing needs every training example's group label (here exactly who carries
# the mark), masking needs to know which pixels the mark is (possible only because we planted it).
# And neither is possible without first *finding* the shortcut — the job of the per-group metrics and
# of the attributions. These numbers are one seed; over seeds 0–2 (`benchmarks/RESULTS.md`) the gains
# vary but keep their direction.

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
# * **Integrated Gradients** sums to f(x) − f(x′) (completeness); through a ReLU net the quadrature
#   error falls roughly like 1/steps, and 50 Gauss–Legendre steps kept it well under 1 % here (the
#   left Riemann sum is ~3× worse). **Shapley values** add up the same way (efficiency).
# * **Grad-CAM** weighs a conv layer's maps by their mean gradient: cheap and class-specific, but as
#   coarse as the layer.
# * **Sanity checks**: gradient × input and IG |maps| barely change when the whole model is
#   randomized — they fail the check (they inherit the digit's shape); saliency, SmoothGrad and
#   Grad-CAM pass. Deletion curves favour the ink-shaped maps. Test explanations; do not just look
#   at them.
# * **Adversarial examples**: a PGD perturbation of a grey level or two fools the models where
#   random noise of the same size does nothing; **adversarial training** buys robustness within
#   its ε (measured above, with its clean accuracy; trained for a larger ε, robust models lose
#   clean accuracy — `benchmarks/RESULTS.md` has the numbers).
# * **Bias**: a spurious feature in the training data makes a model unfair to a group; per-group
#   metrics expose it, attributions locate it (against a control), reweighing or removing it helps —
#   each needs information someone has to have.
#
# **Exercises** (`exercises/09_xai.ipynb`): the class-logit gradient of an MLP by hand, SmoothGrad,
# Integrated Gradients graded by completeness, occlusion, Grad-CAM with hooks, FGSM, and a PGD
# attack with projection — then concept questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
