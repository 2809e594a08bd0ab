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
# * return the map, a tensor of x's shape

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
