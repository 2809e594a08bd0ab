# %% [markdown]
# # 09 · Explainable and trustworthy AI — exercises
#
# In this notebook you write the explanation methods and the attacks of the lesson yourself: the
# input gradient of a class logit by hand in NumPy, SmoothGrad, Integrated Gradients (checked by its
# completeness axiom), occlusion, Grad-CAM with hooks, FGSM, and, as the larger task, a **PGD attack
# with projection**:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `logit_gradient` | d f_t / dx of an MLP's class logit, by hand (NumPy) | 3 |
# | 2 | `smoothgrad` | the mean gradient over noisy copies (PyTorch) | 2 |
# | 3 | `integrated_gradients` | IG with the Gauss-Legendre rule (NumPy) | 3 |
# | 4 | `occlusion` | the mean drop of the logit under a sliding patch (NumPy) | 3 |
# | 5 | `grad_cam` | Grad-CAM with hooks (PyTorch) | 3 |
# | 6 | `fgsm` | the fast gradient sign method (PyTorch) | 2 |
# | 7 | `pgd` | **the larger task**: PGD with projection and clipping (PyTorch) | 4 |
# | | five concept questions | a number, a shape or a letter each | 5 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several cases, from small to large,
# compares with the course's reference, and shows ✓ or ✗ with the points and one message that says
# what is wrong (and, for the classic mistakes, *which* mistake it is), with the smallest failing
# case and a line that reproduces it. It never crashes the notebook. Stuck?
# `check.hint("smoothgrad")` gives a hint; run it again for the next one. Each exercise has three
# hints: first the idea, then the approach, last something close to code, so try the first ones
# first. The concept questions at the end have no hints (work them out from the lesson). The last
# cell adds up your score.
#
# **Conventions.** Dimension letters: `N` batch, `D` input features (64 for the 8 × 8 digits), `H`
# hidden width, `K` classes, `C` channels, `S` steps or samples. Every attribution explains the
# chosen class's **logit** f_t(x) (not the loss, not the softmax probability) and has the shape of
# the input; `target` is an int (one class for every row) or `(N,)` ints (one per row). The attacks
# use the cross-entropy **loss** and keep pixels in [0, 1]. The PyTorch exercises get float64 copies
# of the course's two digits models: `digits_mlp()` takes flat digits `(N, 64)`, `digits_cnn()`
# images `(N, 1, 8, 8)`. Every NumPy function returns float64 (like its inputs) and changes none of
# its inputs. Write the code yourself: handing in (or calling) the course's own version of an
# exercise earns no points.

# %%
import numpy as np
import torch
import torch.nn.functional as F

from dlcourse.data import load_digits
from dlcourse.xai.checks import check
from dlcourse.xai.torch_impl import digits_cnn, digits_mlp

digits = load_digits()
mlp, cnn = digits_mlp(), digits_cnn()          # trained once per kernel (a few seconds), then cached
x_test, y_test = digits.x_test, digits.y_test  # (270, 64) in [0, 1], (270,)

# %% [markdown]
# ## Exercise 1 · The input gradient of a class logit, by hand (3 points)
#
# The lesson's MLP is `Linear(D, H) → ReLU → Linear(H, K)`. With torch's layout (`W1` is `(H, D)`,
# `W2` is `(K, H)`) its logits are
#
# $$z = x W_1^\top + b_1, \qquad f(x) = \operatorname{ReLU}(z)\, W_2^\top + b_2 .$$
#
# Saliency, gradient × input, SmoothGrad and IG all start from the gradient of **one** logit, the
# target class's $f_t$, with respect to the input. Write `logit_gradient(W1, b1, W2, b2, x, target)`:
#
# * `W1` `(H, D)`, `b1` `(H,)`, `W2` `(K, H)`, `b2` `(K,)`, `x` `(N, D)`, `target` an int or `(N,)` ints
# * return $\partial f_{t_n}(x_n) / \partial x_n$ for every row, `(N, D)`: the signed gradient, by hand
#   (no autograd)

# %%
def logit_gradient(W1, b1, W2, b2, x, target):
    """d f_t / dx of Linear-ReLU-Linear's class logit (torch layout), (N, D)."""
    ### BEGIN SOLUTION
    z = x @ W1.T + b1                              # (N, H) pre-activations
    onehot = np.zeros((len(x), len(b2)))
    onehot[np.arange(len(x)), target] = 1.0        # d f_t / d logits = e_t (target int or (N,))
    dz = (onehot @ W2) * (z > 0)                   # through W2, then the ReLU's mask
    return dz @ W1                                 # (N, D)
    ### END SOLUTION


# %%
check.logit_gradient(logit_gradient)

# %% [markdown]
# ## Exercise 2 · SmoothGrad, in PyTorch (2 points)
#
# A ReLU network's gradient jumps wherever a unit switches on or off, so saliency maps are noisy.
# SmoothGrad (Smilkov et al. 2017) averages the gradient over S noisy copies of the input and shows
# the absolute value of the mean:
#
# $$\text{map}(x) = \Bigl|\frac1S \sum_{s=1}^{S} \nabla_x f_t(x + \varepsilon_s)\Bigr| .$$
#
# Write `smoothgrad(model, x, target, noise)`:
#
# * `model` an `nn.Module` returning `(N, K)` logits; `x` a float64 tensor `(N, ...)` (flat digits for
#   the MLP, images for the CNN); `target` an int or an `(N,)` int tensor
# * `noise` `(S, *x.shape)`, already scaled (the ε_s)
# * return the map, a tensor of x's shape (detached or not: both are accepted)

# %%
def smoothgrad(model, x, target, noise):
    """|mean_s grad_x f_t(x + noise_s)|, a tensor of x's shape."""
    ### BEGIN SOLUTION
    s, n = noise.shape[0], x.shape[0]
    batch = (x.unsqueeze(0) + noise).reshape(s * n, *x.shape[1:]).detach().requires_grad_(True)
    t = torch.as_tensor(target).long().expand(n).repeat(s)          # (S * N,) targets
    score = model(batch).gather(1, t[:, None]).sum()                # every copy's own logit
    (grad,) = torch.autograd.grad(score, batch)
    return grad.reshape(s, *x.shape).mean(0).abs()                  # the mean first, then |.|
    ### END SOLUTION


# %%
check.smoothgrad(smoothgrad)

# %% [markdown]
# ## Exercise 3 · Integrated Gradients, graded by completeness (3 points)
#
# Integrated Gradients (Sundararajan et al. 2017) integrates the gradient along the straight path
# from a baseline x' to x:
#
# $$\mathrm{IG}_i(x) = (x_i - x'_i) \int_0^1 \frac{\partial f_t}{\partial x_i}\bigl(x' + a\,(x - x')\bigr)\,da ,$$
#
# and its attributions add up to $f_t(x) - f_t(x')$ (completeness). Approximate the integral with the
# **Gauss–Legendre** rule: `t, v = np.polynomial.legendre.leggauss(steps)` gives nodes and weights for
# $[-1, 1]$; on $[0, 1]$ the nodes are `(t + 1) / 2` and the weights `v / 2`.
#
# Write `integrated_gradients(grad_fn, x, baseline, steps)`:
#
# * `grad_fn(points)` returns $\partial f_t / \partial x$ at `points` `(M, D)` as `(M, D)` (for any M;
#   the model and the target are inside it)
# * `x`, `baseline` `(N, D)`; `steps` S, the number of nodes
# * return the attributions `(N, D)`
#
# The check tries a function whose gradient is linear along the path (there the rule is exact, and
# the attributions must add up to f(x) − f(x') to 1e-9) and the digits MLP, and prints how far from
# complete your attributions are.

# %%
def integrated_gradients(grad_fn, x, baseline, steps):
    """IG with the Gauss-Legendre rule on [0, 1], (N, D)."""
    ### BEGIN SOLUTION
    t, v = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (t + 1) / 2, v / 2                            # mapped from [-1, 1] to [0, 1]
    diff = x - baseline                                             # (N, D)
    total = np.zeros_like(x)
    for a, w in zip(alphas, weights):
        total = total + w * grad_fn(baseline + a * diff)            # one point of the path per row
    return diff * total
    ### END SOLUTION


# %%
check.integrated_gradients(integrated_gradients)

# %% [markdown]
# ## Exercise 4 · Occlusion (3 points)
#
# Occlusion needs no gradient, only the model: slide a `patch × patch` square of `baseline` values over
# the image and watch the target's logit. For every window position (top-left corners `0, stride,
# 2·stride, …` in both directions, as long as the window fits) the **drop** f_t(x) − f_t(x with the
# window occluded) is credited to every pixel of the window; a pixel's attribution is the **mean** drop
# over the windows that cover it, and 0 if no window covers it (Captum's convention, and the lesson's).
#
# Write `occlusion(model_fn, image, target, patch, stride, baseline)`:
#
# * `model_fn(images)` maps a batch of images `(M, side, side)` to logits `(M, K)`
# * `image` `(side, side)`, `target` an int, `patch` and `stride` ints, `baseline` a number
# * return the map `(side, side)`

# %%
def occlusion(model_fn, image, target, patch, stride, baseline):
    """Mean drop of the target's logit over the windows covering each pixel, (side, side)."""
    ### BEGIN SOLUTION
    side = image.shape[0]
    corners = range(0, side - patch + 1, stride)
    f0 = model_fn(image[None])[0, target]
    total, count = np.zeros((side, side)), np.zeros((side, side))
    for r in corners:
        for c in corners:
            occluded = image.copy()
            occluded[r:r + patch, c:c + patch] = baseline
            drop = f0 - model_fn(occluded[None])[0, target]
            total[r:r + patch, c:c + patch] += drop
            count[r:r + patch, c:c + patch] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)   # 0 where nothing covers
    ### END SOLUTION


# %%
check.occlusion(occlusion)

# %% [markdown]
# ## Exercise 5 · Grad-CAM with hooks (3 points)
#
# Grad-CAM (Selvaraju et al. 2017) explains a CNN through one of its layers. With $A$ `(N, C, h, w)`
# the output of `layer` and $\partial F_t / \partial A$ its gradient (of the class **logit**):
#
# $$\alpha_k = \frac{1}{hw}\sum_{i,j} \frac{\partial F_t}{\partial A_{k,ij}}, \qquad
#   \text{map} = \operatorname{ReLU}\Bigl(\sum_k \alpha_k A_k\Bigr),$$
#
# upsampled to the input's size with `F.interpolate(..., size=(H, W), mode="bilinear",
# align_corners=False)`. The layer's output is inside the model's `forward`: read it with a **hook**
# (`layer.register_forward_hook`, or a tensor hook), and remove the hook afterwards.
#
# Write `grad_cam(model, layer, x, target)`:
#
# * `model` a CNN, `layer` one of its modules (e.g. `cnn.conv2`), `x` `(N, C, H, W)` float64,
#   `target` an int or an `(N,)` int tensor
# * return the map, a tensor `(N, 1, H, W)` (detached or not: both are accepted)
#
# The check tries the digits CNN's `conv2` and a small random CNN on 12 × 12 images.

# %%
def grad_cam(model, layer, x, target):
    """ReLU(sum_k alpha_k A_k) of `layer`'s output, bilinearly upsampled to (N, 1, H, W)."""
    ### BEGIN SOLUTION
    saved = []
    handle = layer.register_forward_hook(lambda module, inputs, output: saved.append(output))
    try:
        logits = model(x)
    finally:
        handle.remove()
    t = torch.as_tensor(target).long().expand(x.shape[0])
    (dA,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), saved[0])   # (N, C, h, w)
    alpha = dA.mean(dim=(2, 3), keepdim=True)                                      # (N, C, 1, 1)
    cam = F.relu((alpha * saved[0]).sum(1, keepdim=True))                          # (N, 1, h, w)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).detach()
    ### END SOLUTION


# %%
check.grad_cam(grad_cam)

# %% [markdown]
# ## Exercise 6 · FGSM (2 points)
#
# The fast gradient sign method (Goodfellow et al. 2015) takes one step of size ε **up** the
# cross-entropy loss of the true labels, every pixel by exactly ±ε, and keeps the pixels valid:
#
# $$x_{\text{adv}} = \operatorname{clip}_{[0,1]}\bigl(x + \varepsilon\,\operatorname{sign}(\nabla_x L(f(x), y))\bigr).$$
#
# Write `fgsm(model, x, y, eps)`:
#
# * `model` returns `(N, K)` logits; `x` float64 `(N, ...)` in [0, 1]; `y` `(N,)` int labels; `eps` a number
# * return `x_adv`, a detached tensor of x's shape; leave `x` itself unchanged

# %%
def fgsm(model, x, y, eps):
    """clip(x + eps * sign(dL/dx), 0, 1), detached."""
    ### BEGIN SOLUTION
    xr = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(xr), y)                            # the mean over the batch: same sign
    (grad,) = torch.autograd.grad(loss, xr)
    return (x.detach() + eps * grad.sign()).clamp(0, 1)
    ### END SOLUTION


# %%
check.fgsm(fgsm)

# %% [markdown]
# ## Exercise 7 · A PGD attack with projection (4 points) — the larger task
#
# The lesson ran PGD (Madry et al. 2018) without showing it; here you write it. PGD repeats small
# FGSM steps, each at the **current** point, and after each step projects back into the set the
# attack may move in:
#
# 1. start at `x_adv = clip(x + start)` (`start` is given, uniform in [−ε, ε]: the random start, drawn
#    for you so that the check can compare);
# 2. `steps` times: the loss gradient at `x_adv`; `x_adv + alpha · sign(gradient)`; **project** onto the
#    L∞ ball of radius ε around the **original** x (elementwise into [x − ε, x + ε]); **clip** to [0, 1];
#    detach before the next step.
#
# Write `pgd(model, x, y, eps, alpha, steps, start)`:
#
# * `model`, `x`, `y`, `eps` as in Exercise 6; `alpha` the step size, `steps` their number,
#   `start` a tensor of x's shape
# * return `x_adv`, a detached tensor of x's shape
#
# The check compares with the course's attack on the digits MLP and CNN (one case has a step larger
# than ε), checks that |x_adv − x| ≤ ε and 0 ≤ x_adv ≤ 1, and that the attack works (the accuracy falls).

# %%
def pgd(model, x, y, eps, alpha, steps, start):
    """L-infinity PGD from x + start: signed steps, projection onto x's eps-ball, clip to [0, 1]."""
    ### BEGIN SOLUTION
    x = x.detach()
    x_adv = (x + start).clamp(0, 1)
    for _ in range(steps):
        xr = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
        x_adv = xr.detach() + alpha * grad.sign()                     # ascend the loss
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)          # back into the eps-ball around x
        x_adv = x_adv.clamp(0, 1)                                      # and into the valid range
    return x_adv
    ### END SOLUTION


# %%
check.pgd(pgd)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer with a value. **Q1.** For one digit, the model's logit of class 3 is f_3(x) = 7.5 and for the
# baseline (a black image) f_3(x') = 2.5. With an exact integral, what do the 64 Integrated-Gradients
# attributions add up to? (lesson: Integrated Gradients)

# %%
def q_ig_sum():
    """A number."""
    ### BEGIN SOLUTION
    return 5.0
    ### END SOLUTION


# %%
check.q_ig_sum(q_ig_sum)

# %% [markdown]
# **Q2.** FGSM with eps = 0.1 on a digit of 64 pixels: what is the L-infinity norm of the perturbation
# x_adv − x **before** the clip to [0, 1]? (lesson: adversarial examples)

# %%
def q_fgsm_norm():
    """A number."""
    ### BEGIN SOLUTION
    return 0.1
    ### END SOLUTION


# %%
check.q_fgsm_norm(q_fgsm_norm)

# %% [markdown]
# **Q3.** In the lesson's sanity check every layer of the model was re-initialized. Whose |map| still
# had a rank correlation of about 0.9 with the trained model's: `'a'` the plain gradient (saliency),
# `'b'` gradient × input and Integrated Gradients, `'c'` neither? (lesson: are explanations faithful?)

# %%
def q_sanity_check():
    """'a', 'b' or 'c'."""
    ### BEGIN SOLUTION
    return "b"
    ### END SOLUTION


# %%
check.q_sanity_check(q_sanity_check)

# %% [markdown]
# **Q4.** Grad-CAM on the CNN's `conv2` for the 8 × 8 digits: what is the shape (h, w) of the map
# **before** it is upsampled? (lesson: Grad-CAM)

# %%
def q_grad_cam_size():
    """A shape, as a tuple."""
    ### BEGIN SOLUTION
    return (4, 4)
    ### END SOLUTION


# %%
check.q_grad_cam_size(q_grad_cam_size)

# %% [markdown]
# **Q5.** A model predicts "positive" for 60 % of group A and 45 % of group B. What is its demographic
# parity gap? (lesson: bias and fairness)

# %%
def q_parity_gap():
    """A number."""
    ### BEGIN SOLUTION
    return 0.15
    ### END SOLUTION


# %%
check.q_parity_gap(q_parity_gap)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
