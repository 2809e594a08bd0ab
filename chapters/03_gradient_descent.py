# %% [markdown]
# # 03 · Gradient descent and optimizers
#
# Chapter 02 gave us the gradient of the loss with respect to every weight. This chapter is
# about what to *do* with it. Training a network means walking downhill on a loss surface
# with millions of dimensions, in fog: at each point we only know the local slope. How long
# a step to take, in which direction exactly, and how to keep a memory of earlier steps —
# those choices are what an **optimizer** makes, and they decide whether training takes
# minutes, days, or never finishes.
#
# You will see:
#
# 1. **loss landscapes** — contour maps of four small 2-D test surfaces;
# 2. **gradient descent** and the one hyper-parameter it has, the **learning rate**: too small,
#    about right, and too large (it diverges, and we will see why);
# 3. **batch, stochastic and mini-batch** gradient descent on a real problem (handwritten digits):
#    noisy cheap steps against smooth expensive ones;
# 4. **momentum** and **Nesterov** momentum, **RMSprop**, and **Adam** with its bias correction —
#    each in NumPy, *exactly* as `torch.optim` computes it (some you will write in the exercises);
# 5. **learning-rate schedules**: step decay, cosine annealing, linear warm-up;
# 6. a **race** between the optimizers that you can steer with sliders;
# 7. **NumPy first, then PyTorch**: proof that our optimizers and `torch.optim` take the same steps;
# 8. an MLP trained on the digits to **≥ 97 % test accuracy**, in NumPy and in PyTorch, with live
#    loss curves;
# 9. on a GPU only: the same PyTorch code on a bigger problem (MNIST, a wider MLP).

# %%
import matplotlib.pyplot as plt
import numpy as np

import dlcourse
from dlcourse import show_source
from dlcourse.data import load_digits, surface
from dlcourse.optim import explore
from dlcourse.optim import numpy_impl as optim_np  # our NumPy optimizers; torch.optim stays PyTorch's

rng = dlcourse.seed(0)

# %% [markdown]
# ## 1 · Loss landscapes
#
# A loss $L(\mathbf w)$ assigns a number to every setting of the weights $\mathbf w$. With two
# weights we can draw it: a **contour map**, where each line joins points of equal loss, like the
# height lines of a hiking map. The **gradient** $\nabla L(\mathbf w)$ points in the direction in
# which $L$ rises fastest, at right angles to the contour line through $\mathbf w$; its length is
# the steepness.
#
# `dlcourse.data.surface(name)` gives four classic 2-D test functions with their exact gradients.
# Each shows one difficulty that real networks have in many dimensions at once:
#
# | surface | formula | what makes it hard |
# |---|---|---|
# | `bowl` | $\tfrac12(w_1^2 + 10w_2^2)$ | ten times steeper in $w_2$ than in $w_1$: one learning rate cannot suit both |
# | `rosenbrock` | $(1-w_1)^2 + 100(w_2-w_1^2)^2$ | a long, curved, almost flat valley |
# | `himmelblau` | $(w_1^2+w_2-11)^2 + (w_1+w_2^2-7)^2$ | four minima: where you end depends on where you start |
# | `saddle` | $w_1^2 - w_2^2$ | a point with zero gradient that is not a minimum |
#
# The colours are spaced logarithmically so that flat valleys show as much detail as steep
# walls; the red star is a minimum (for the saddle: the saddle point), the white dot the start
# point we will use.

# %%
explore.plot_surfaces()
plt.show()

# %% [markdown]
# ## 2 · Gradient descent
#
# Repeat one move: a small step *against* the gradient,
#
# $$\mathbf w_{k+1} = \mathbf w_k - \eta\, \nabla L(\mathbf w_k),$$
#
# where $\eta > 0$ is the **learning rate**. Near $\mathbf w_k$ the loss is almost linear,
# $L(\mathbf w_k + \boldsymbol\delta) \approx L(\mathbf w_k) + \nabla L(\mathbf w_k)^\top
# \boldsymbol\delta$, and among all steps of a given length the one along $-\nabla L$ lowers this
# linear approximation the most. The approximation only holds nearby, which is why the steps must
# be small. That is the whole algorithm: start somewhere, repeat the update, keep every point
# visited. `optim_np.gd_minimize(grad, start, lr, steps)` returns that path, an array of shape
# `(steps + 1, D)` (row 0 is the start); you write it yourself in the exercises, so here we only
# call it.

# %% [markdown]
# ## 3 · The learning rate: too small, about right, too large
#
# Why can a step be "too large"? Take the bowl, $L = \tfrac12(\lambda_1 w_1^2 + \lambda_2 w_2^2)$ with
# $\lambda_1 = 1$, $\lambda_2 = 10$. Its gradient is $(\lambda_1 w_1, \lambda_2 w_2)$, so one step of
# gradient descent acts on each coordinate separately:
#
# $$w_{1,k+1} = (1 - \eta\lambda_1)\, w_{1,k}, \qquad w_{2,k+1} = (1 - \eta\lambda_2)\, w_{2,k} .$$
#
# Each coordinate is multiplied by a fixed factor at every step. It shrinks to 0 only if
# $|1 - \eta\lambda| < 1$, that is $0 < \eta < 2/\lambda$. The steepest direction sets the limit:
# here $\eta < 2/10 = 0.2$. Between $1/\lambda_2$ and $2/\lambda_2$ the factor for $w_2$ is negative,
# so $w_2$ flips sign at every step — the familiar **zig-zag**. Above $0.2$ the zig-zag grows and
# the run **diverges**. And the *flat* direction converges with factor $1 - \eta\lambda_1$, which
# stays close to 1 whenever $\eta$ has to be small for the steep direction: the ratio
# $\lambda_{max}/\lambda_{min}$ (the **condition number**) is what makes plain gradient descent
# slow. Every smooth loss looks like such a bowl near a minimum, with the eigenvalues of the
# Hessian as the $\lambda$s, so this little calculation is the general rule.

# %%
bowl = surface("bowl")
lrs = [0.02, 0.15, 0.22]
explore.plot_learning_rates(bowl, lrs, steps=40,
                            labels=["too small: lr = 0.02", "about right: lr = 0.15", "too large: lr = 0.22"])
plt.show()

for lr in lrs:
    path = optim_np.gd_minimize(bowl.grad, bowl.start, lr, steps=40)
    print(f"lr = {lr:<5} factor for w2: {1 - lr * 10:+.1f}   loss after 40 steps: {bowl.f(path[-1]):.3g}")

# %% [markdown]
# The same three regimes appear on a real problem. Below, a small MLP (64 → 128 → 10) learns the
# scikit-learn **digits** (8×8 images of handwritten digits, 1,257 for training) with plain
# mini-batch SGD at three learning rates. `optim_np.train_numpy` is the course's training loop, all
# NumPy: chapter 02's backward pass for the gradients, this chapter's optimizers for the steps
# (section 11 says what it does). With too small a rate the training loss barely moves in 10
# epochs (from 2.31 to 2.11, still close to chance level; the validation accuracy does climb,
# from 0.17 to 0.66, because the right class can come out on top while all ten probabilities are
# still almost equal); too large a rate throws the weights so far in the first steps that the
# loss jumps up and the network gets stuck at chance level (a loss of $\ln 10 \approx 2.3$: many ReLUs are "dead", their input is negative
# for every example, and they never receive a gradient again).

# %%
digits = load_digits()
print("training:", digits.x_train.shape, " validation:", digits.x_val.shape, " test:", digits.x_test.shape)

runs = {}
for lr in [0.01, 1.0, 5.0]:
    _, runs[f"SGD lr = {lr:g}"] = optim_np.train_numpy(digits, optimizer="sgd", lr=lr, epochs=10,
                                                    progress=False)
explore.plot_histories(runs)
plt.show()

# %% [markdown]
# ## 4 · Batch, stochastic and mini-batch gradient descent
#
# The training loss is an average over all $N$ examples, $L(\mathbf w) = \frac1N\sum_i
# \ell_i(\mathbf w)$, so its gradient is an average of $N$ per-example gradients. We can pay for
# all of them at every step, or estimate the average from a few:
#
# * **batch** (full-batch) gradient descent uses all $N$: the exact gradient, one step per pass
#   over the data (an **epoch**);
# * **stochastic** gradient descent (SGD) in its pure form uses one random example: $N$ cheap,
#   very noisy steps per epoch;
# * **mini-batch** SGD uses $B$ examples (here 64): an unbiased estimate whose noise shrinks like
#   $1/\sqrt B$, and $N/B$ steps per epoch. Everyone trains this way, and "SGD" usually means this.
#
# Each epoch visits every example once, in a new random order: one random permutation of the $N$
# indices per epoch, cut into consecutive slices of $B$; the last batch keeps the leftovers, so
# every example counts in every epoch. (You write this generator in the exercises; here we call
# the course's `optim_np.minibatches(n, batch_size, rng)`.) Ten examples in batches of four:

# %%
print([idx.tolist() for idx in optim_np.minibatches(10, batch_size=4, rng=rng)])

# %% [markdown]
# Now the three on the digits, each with a learning rate that suits it. Full-batch gradient
# descent makes smooth progress but only one step per epoch. Pure SGD makes 1,257 steps per epoch
# and gets far in its first epoch, but its loss curve is a cloud. Mini-batches sit in between,
# and they have a second advantage the plots do not show: one matrix product over 64 examples
# costs far less than 64 products over one example each, so an epoch of mini-batches is about
# as fast as an epoch of full batches, and many times faster than pure SGD (timings below).

# %%
batch_runs = {
    "full batch (1,257), lr = 0.5": optim_np.train_numpy(digits, optimizer="sgd", lr=0.5, epochs=30,
                                                      batch_size=len(digits.x_train), progress=False)[1],
    "stochastic (1), lr = 0.02": optim_np.train_numpy(digits, optimizer="sgd", lr=0.02, epochs=3,
                                                   batch_size=1, progress=False)[1],
    "mini-batch (64), lr = 0.5": optim_np.train_numpy(digits, optimizer="sgd", lr=0.5, epochs=30,
                                                   batch_size=64, progress=False)[1],
}
explore.plot_histories(batch_runs)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
for label, h in batch_runs.items():
    print(f"{label:<28} {len(h.step_loss):>5} updates in {h.epochs:>2} epochs, "
          f"{1000 * h.seconds / h.epochs:6.1f} ms per epoch, test accuracy {h.test_acc:.3f}")

# %% [markdown]
# ## 5 · Momentum and Nesterov momentum
#
# On the bowl, gradient descent zig-zags across the steep direction while it crawls along the
# flat one. **Momentum** gives the walker inertia: it keeps a running sum of past gradients, a
# **velocity** $\mathbf v$, and steps along that. Across the valley the gradients alternate in sign
# and cancel in the sum; along the valley they agree and add up. PyTorch writes it as
#
# $$\mathbf v_{k+1} = \mu\, \mathbf v_k + \mathbf g_k, \qquad \mathbf w_{k+1} = \mathbf w_k - \eta\,
# \mathbf v_{k+1},$$
#
# with the **momentum** $\mu$ typically 0.9. On a constant slope $\mathbf g$ the velocity grows to
# $\mathbf g/(1-\mu)$: momentum 0.9 moves up to ten times faster where the gradients agree.
# (Textbooks often write $\mathbf v \leftarrow \mu\mathbf v - \eta\mathbf g$, $\mathbf w \leftarrow
# \mathbf w + \mathbf v$, with $\eta$ inside the velocity. As long as $\eta$ is constant the two
# trace the same path; once a schedule changes $\eta$ they do not. We follow PyTorch.)
#
# **Nesterov momentum** looks ahead: the momentum is going to carry us to about
# $\mathbf w - \eta\mu\mathbf v$ anyway, so use the gradient *there*. PyTorch's form of that idea
# needs no second gradient evaluation: it keeps the same buffer but steps along the gradient plus
# one more momentum move, which reacts a little earlier when the slope changes and overshoots
# less. (Exercise 2 gives PyTorch's formula for that step; writing it, with its state carried
# from step to step, is the exercise.)
#
# Here is plain momentum in code. Note the style that every optimizer in this package follows:
# **state in, state out**. The function changes nothing in place; it returns the new weights and
# a new state (a small `NamedTuple`), and the caller passes the state back in at the next step.

# %%
show_source(optim_np.SGDState)
show_source(optim_np.momentum_step)

# %% [markdown]
# `sgd_step`, the twin of `torch.optim.SGD`, adds weight decay ($\lambda\mathbf w$ added to the
# gradient, the gradient of an L2 penalty $\tfrac\lambda2\|\mathbf w\|^2$) and picks plain SGD,
# momentum or Nesterov:

# %%
show_source(optim_np.sgd_step)

# %% [markdown]
# ## 6 · RMSprop: a learning rate per coordinate
#
# Momentum fights the zig-zag; **RMSprop** removes its cause. It keeps a running average of the
# *squared* gradient of every coordinate and divides each step by its root:
#
# $$\mathbf s_{k+1} = \alpha\, \mathbf s_k + (1-\alpha)\, \mathbf g_k^2, \qquad \mathbf w_{k+1} =
# \mathbf w_k - \eta\, \frac{\mathbf g_k}{\sqrt{\mathbf s_{k+1}} + \epsilon}$$
#
# (squares, roots and the division are taken element by element). A coordinate with large
# gradients gets a small effective learning rate, a coordinate with small ones a large rate: on
# the bowl both axes advance at about the same speed, and $\eta$ becomes roughly a step *length*
# in parameter units rather than a multiplier of the gradient. The $\epsilon$ (PyTorch: $10^{-8}$,
# added *after* the root) only avoids a division by zero. The smoothing constant $\alpha$ (PyTorch:
# 0.99) sets the memory: about $1/(1-\alpha) = 100$ steps. (`optim_np.rmsprop_step` is the code;
# you write it in exercise 3, so it is not shown here.)

# %% [markdown]
# ## 7 · Adam: momentum + RMSprop + bias correction
#
# **Adam** keeps both running averages — of the gradient (the first moment $\mathbf m$, like
# momentum) and of its square (the second moment $\mathbf v$, like RMSprop) — and steps along
# their ratio:
#
# $$\mathbf m_t = \beta_1 \mathbf m_{t-1} + (1-\beta_1)\mathbf g_t,\qquad
# \mathbf v_t = \beta_2 \mathbf v_{t-1} + (1-\beta_2)\mathbf g_t^2,$$
#
# $$\hat{\mathbf m}_t = \frac{\mathbf m_t}{1-\beta_1^t},\qquad \hat{\mathbf v}_t = \frac{\mathbf
# v_t}{1-\beta_2^t},\qquad \mathbf w_t = \mathbf w_{t-1} - \eta\, \frac{\hat{\mathbf
# m}_t}{\sqrt{\hat{\mathbf v}_t} + \epsilon},$$
#
# with $t = 1, 2, \dots$ counting steps and PyTorch's defaults $\beta_1 = 0.9$, $\beta_2 = 0.999$,
# $\epsilon = 10^{-8}$.
#
# **Why the bias correction?** Both averages start at zero. If every gradient were the same
# $\mathbf g$, unrolling the recursion gives $\mathbf m_t = (1-\beta_1^t)\,\mathbf g$: far too small
# at first (after one step, $0.1\,\mathbf g$). Dividing by $1-\beta_1^t$ removes exactly that
# factor. For $\mathbf v$ with $\beta_2 = 0.999$ the bias lasts for thousands of steps; without the
# correction $\sqrt{\mathbf v}$ would be far too small, and the first steps far too large.
# RMSprop has no such correction, which is why its first steps in the race below are long.
#
# The figure shows this for a constant gradient $g = 1$: the raw averages creep up towards 1
# (with $\beta = 0.999$ barely started after 60 steps), while the bias-corrected estimates are
# exactly 1 from the first step, for both $\beta$s, so they are one dashed line.

# %%
t = np.arange(1, 61)
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
for beta, colour in [(0.9, "C0"), (0.999, "C1")]:
    raw = 1 - beta ** t  # m_t for a constant gradient g = 1
    ax.plot(t, raw, color=colour, label=f"running average, beta = {beta}")
# corrected, both are raw / (1 - beta**t) = 1 exactly: one line stands for the two
ax.plot(t, np.ones_like(t, dtype=float), "k--", label="bias-corrected, either beta (exactly 1)")
ax.set(xlabel="step t", ylabel="estimate of g (true value 1)", title="averages that start at zero",
       ylim=(0, 1.1))
ax.legend(fontsize=8)
plt.show()

# %%
show_source(optim_np.AdamState)
show_source(optim_np.adam_step)

# %% [markdown]
# Adam's `weight_decay` adds $\lambda\mathbf w$ to the gradient, where the division by
# $\sqrt{\hat{\mathbf v}}$ rescales it differently for every coordinate: weights with large
# gradients are barely decayed. **AdamW** *decouples* the decay from the adaptive step, and is the
# form used to train most large models today; you write it in exercise 4.
#
# To use an optimizer on a whole network, `optim_np.Optimizer` keeps one state per parameter array,
# as `torch.optim.Adam(model.parameters())` does:

# %%
show_source(optim_np.Optimizer)

# %% [markdown]
# ## 8 · The race
#
# Here are all four on the surfaces of section 1, from the same start (white dot). Each racer has
# its own colour, line style and marker, and a large marker where its path ends. First a fixed
# picture on each surface with the course's default settings; then a widget to play with.
#
# * On the **bowl**, SGD first drops into the steep direction and then crawls along the flat one;
#   momentum overshoots and swings back and forth around the minimum (drawn over Adam's path, which
#   it crosses); RMSprop and Adam first move
#   *diagonally* — the same step length in both coordinates, whatever the slope — and Adam's
#   momentum then carries it in a smooth curve to the minimum.
# * In **Rosenbrock's** valley, plain SGD (the solid black line, drawn on top) reaches the valley
#   floor and then barely moves along it;
#   momentum gathers speed along the floor and gets closest to the star; Adam follows the floor
#   more slowly; RMSprop jumps about at first: its first steps are ten times too long, because its
#   average of squared gradients starts at zero and is not bias-corrected.
# * **Himmelblau** has four minima. From this start all four racers end in the same one (upper
#   left), not the one marked with the star: which minimum you reach is decided mostly by where
#   you start. Momentum takes a loop on the way.
# * At the **saddle**, the start lies almost on the line $y = 0$, where the gradient has no $y$
#   part: gradient descent first slides towards the saddle point, then escapes along $y$, where
#   the loss falls without end. Momentum overshoots the saddle before it turns; the adaptive
#   methods scale the tiny $y$ gradient up and turn away early.

# %%
fig, axes = plt.subplots(1, 4, figsize=(18, 4), layout="constrained")
for ax, name in zip(axes, explore.RACE_DEFAULTS):
    lr_sgd, lr_adaptive, steps = explore.RACE_DEFAULTS[name]
    explore.plot_surface(name, ax)
    explore.plot_paths(ax, explore.race_paths(name, lr_sgd, lr_adaptive, momentum=0.9, steps=steps),
                       on_top=("momentum", "SGD"))
    ax.set_title(f"{name}: {steps} steps")
plt.show()

# %% [markdown]
# Now steer it yourself. Two learning-rate sliders, because the two families read the learning
# rate differently: SGD and momentum multiply the gradient by it, RMSprop and Adam use it as a
# step length. Things to try:
#
# * Bowl: raise the SGD rate past 0.2 and watch it diverge (section 3); momentum 0.99 turns the
#   path into a spiral; momentum 0 turns "momentum" into SGD.
# * Rosenbrock: how many steps does each racer need to reach the star?
# * Saddle: which optimizers escape, and how fast?

# %%
# NBVAL_IGNORE_OUTPUT
race = explore.optimizer_race("bowl")
race

# %% [markdown]
# ## 9 · Learning-rate schedules
#
# A constant learning rate is a compromise: large rates make fast progress early but, with noisy
# mini-batch gradients, keep bouncing around the minimum at the end; small rates settle better
# but start slowly. So we change it over time. The classic **schedules**, as functions of the
# epoch $e$ (each equals a `torch.optim.lr_scheduler` class, as section 10 shows):
#
# * **step decay** (`StepLR`): $\eta_e = \eta_0\,\gamma^{\lfloor e/s\rfloor}$, e.g. ×0.1 every $s$ epochs;
# * **cosine annealing** (`CosineAnnealingLR`): $\eta_e = \eta_{min} + \tfrac12(\eta_0 -
#   \eta_{min})(1 + \cos(\pi e / T))$, a smooth glide from $\eta_0$ to $\eta_{min}$ at epoch $T$;
# * **linear warm-up** (`LinearLR` / `LambdaLR`): $\eta_e = \eta_0\,\min(1, (e+1)/W)$, which is
#   `LinearLR(optimizer, start_factor=1/W, total_iters=W-1)`: the factor starts at $1/W$ and
#   grows linearly to 1 over $W-1$ steps (`end_factor` keeps its default 1). At the start
#   the weights are random and Adam's second-moment estimate is built from very few gradients, so
#   big steps are risky; warming up over $W$ epochs avoids an early blow-up. Transformers are
#   trained with warm-up followed by cosine decay.

# Here is cosine annealing; warm-up followed by cosine (the last curve below) is exercise 5.

# %%
show_source(optim_np.cosine_lr)
explore.plot_schedules({
    "step decay (x0.5 every 8)": lambda e: optim_np.step_lr(e, 3e-3, 8, 0.5),
    "cosine (T = 30)": lambda e: optim_np.cosine_lr(e, 3e-3, 30),
    "linear warm-up (5)": lambda e: optim_np.linear_warmup_lr(e, 3e-3, 5),
    "warm-up (5) + cosine": lambda e: optim_np.warmup_cosine_lr(e, 3e-3, 5, 30),
}, epochs=31)
plt.show()

# %% [markdown]
# ## 10 · NumPy first, then PyTorch: the same steps, to the last digit
#
# Our optimizers claim to compute what `torch.optim` computes. Here is the proof on a real
# network: the same MLP (same initial weights) in both twins, trained for 24 steps on the same
# mini-batches, once with our NumPy functions (gradients from chapter 02's backward pass) and
# once with `torch.optim` on `dlcourse.device()` — the GPU if you have one. We work in float64,
# so that any difference beyond rounding would be a real mistake. (Apple GPUs have no float64;
# there we compare in float32 with a looser tolerance.)

# %%
import torch
import torch.nn.functional as F

from dlcourse.backprop.numpy_impl import init_mlp, mlp_loss_and_grads
from dlcourse.backprop.torch_impl import load_params, make_mlp
from dlcourse.optim import torch_impl

device = dlcourse.device()
dtype, np_dtype, tolerance = ((torch.float32, np.float32, 1e-4) if device == "mps"
                              else (torch.float64, np.float64, 1e-10))
x, y = digits.x_train[:256].astype(np_dtype), digits.y_train[:256]
x_t, y_t = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
sizes = [64, 32, 10]

settings = {
    "sgd": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": dict(lr=1e-3, alpha=0.9),
    "adam": dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-3),
    "adamw": dict(lr=1e-2, weight_decay=1e-2),
}
for name, hyper in settings.items():
    params = init_mlp(sizes, np.random.default_rng(0), dtype=np_dtype)
    model = load_params(make_mlp(sizes).to(device=device, dtype=dtype), params)
    ours = optim_np.Optimizer(params, name, **hyper)             # NumPy
    theirs = torch_impl.make_optimizer(model.parameters(), name, **hyper)  # torch.optim
    batch_rng = np.random.default_rng(1)
    for epoch in range(3):
        for idx in optim_np.minibatches(len(x), 32, batch_rng):
            loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
            params = ours.step(params, grads)
            theirs.zero_grad()
            F.cross_entropy(model(x_t[idx]), y_t[idx]).backward()
            theirs.step()
    diff = max(np.abs(p - q.detach().cpu().numpy()).max() for p, q in zip(params, model.parameters()))
    assert diff < tolerance, (name, diff)
    print(f"{name:>8}: NumPy and torch.optim agree after 24 steps, on every weight")

# %% [markdown]
# The largest differences, for the curious (they depend on the machine, so this cell's output is
# not compared when the course is tested):

# %%
# NBVAL_IGNORE_OUTPUT
print(f"device: {device}; last run ({name}): max |NumPy - torch| = {diff:.1e}")

# %% [markdown]
# And the schedules against `torch.optim.lr_scheduler`: after $e$ calls of `scheduler.step()`, the
# optimizer's learning rate equals our function of $e$.

# %%
from torch.optim import lr_scheduler


def torch_rates(make_scheduler, epochs=30, base_lr=0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_scheduler(opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(rates)


e30 = np.arange(30)
pairs = {
    "StepLR": (lambda o: lr_scheduler.StepLR(o, step_size=8, gamma=0.5),
               [optim_np.step_lr(e, 0.1, 8, 0.5) for e in e30]),
    "CosineAnnealingLR": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=1e-3),
                          [optim_np.cosine_lr(e, 0.1, 30, 1e-3) for e in e30]),
    "LinearLR warm-up": (lambda o: lr_scheduler.LinearLR(o, start_factor=1 / 5, total_iters=4),
                         [optim_np.linear_warmup_lr(e, 0.1, 5) for e in e30]),
    "LambdaLR warm-up": (lambda o: lr_scheduler.LambdaLR(o, lambda e: min(1.0, (e + 1) / 5)),
                         [optim_np.linear_warmup_lr(e, 0.1, 5) for e in e30]),
}
for label, (make, ours) in pairs.items():
    assert np.allclose(torch_rates(make), ours, rtol=1e-12, atol=0), label
    print(f"{label:>18}: same learning rate in all 30 epochs")

# %% [markdown]
# ## 11 · Training an MLP on the digits, in NumPy and in PyTorch
#
# Time to put it together. `train_numpy` trains the 64 → 128 → 10 MLP with mini-batches of 64
# and Adam; every epoch it measures the loss on the whole training set and the accuracy on the
# validation set, and at the very end, once, the accuracy on the held-out **test** set (data the
# model and we never looked at while choosing settings). The training itself takes about a
# second on a laptop CPU. Every piece is one we built: each epoch draws shuffled mini-batches,
# takes chapter 02's gradients on each batch and hands them to an `optim_np.Optimizer`, which
# keeps one state per parameter array, as `torch.optim` does. (Exercise 7 is one such epoch written
# out with the step functions, every state carried by hand, so the code is not shown here.)
#
# The curves below are drawn while it trains (a `LiveLossPlot` redraws one figure after every
# epoch) under a progress bar. The learning rate follows a cosine schedule from $5\cdot10^{-3}$.

# %%
# NBVAL_IGNORE_OUTPUT
epochs = 25
schedule = lambda e: optim_np.cosine_lr(e, 5e-3, epochs)
live = explore.LiveLossPlot("NumPy, Adam", epochs=epochs)
params, numpy_run = optim_np.train_numpy(digits, optimizer="adam", epochs=epochs, schedule=schedule,
                                      callback=live)
print(f"NumPy:   test accuracy {numpy_run.test_acc:.3f} after {numpy_run.seconds:.2f} s of training")

# %% [markdown]
# Now the PyTorch twin on `dlcourse.device()`: `train_torch` uses `torch.optim.Adam`, autograd
# for the gradients, and the very same initial weights and mini-batches, so it should trace the
# same curves — up to float32 rounding, which grows a little over 500 steps.

# %%
show_source(torch_impl.train_torch)

# %%
# NBVAL_IGNORE_OUTPUT
live = explore.LiveLossPlot(f"PyTorch on {device}, Adam", epochs=epochs)
model, torch_run = torch_impl.train_torch(digits, optimizer="adam", epochs=epochs, schedule=schedule,
                                          callback=live)
print(f"PyTorch: test accuracy {torch_run.test_acc:.3f} after {torch_run.seconds:.2f} s of training")

# %%
explore.plot_histories({"NumPy (our Adam)": numpy_run, f"PyTorch (torch.optim.Adam, {device})": torch_run})
plt.show()

assert numpy_run.test_acc >= 0.97 and torch_run.test_acc >= 0.97
print("both twins reach at least 97 % accuracy on the held-out test digits")

# %% [markdown]
# ## 12 · Scaling up on a GPU
#
# Nothing in `train_torch` is specific to the small digits: it follows `device`, and the input
# width comes from the data. With a CUDA GPU this section trains it on **MNIST** (60,000
# handwritten digits of 28×28 pixels: 50,000 for training, 10,000 for validation, and MNIST's
# own 10,000 test images) with a wider, deeper MLP, 784 → 512 → 256 → 10, for 15 epochs of Adam
# with a cosine schedule. MNIST is downloaded once and cached, its checksum verified; if the
# download fails, the run falls back to the digits and says so. On a CPU the section only says
# what it would do, so that the notebook stays quick.

# %%
show_source(torch_impl.train_scaled_up)
if device == "cuda":
    print("A CUDA GPU is available: the next cell trains the scaled-up run.")
else:
    print("No CUDA GPU here, so the scaled-up run is skipped: on a GPU, the next cell would train a "
          "784 -> 512 -> 256 -> 10 MLP on MNIST's 60,000 images for 15 epochs of Adam.")

# %%
# NBVAL_IGNORE_OUTPUT
if device == "cuda":
    big_data, about = torch_impl.scale_up_data()
    print(about)
    live = explore.LiveLossPlot("PyTorch on cuda, scaled up", epochs=torch_impl.SCALE_UP["epochs"])
    big_model, big_run = torch_impl.train_scaled_up(big_data, device=device, callback=live)
    print(f"scaled up: test accuracy {big_run.test_acc:.3f} after {big_run.seconds:.1f} s of training")

# %% [markdown]
# ## Summary
#
# * Gradient descent steps against the gradient; the learning rate must stay below
#   $2/\lambda_{max}$ of the local curvature, and the condition number $\lambda_{max}/\lambda_{min}$
#   decides how slow it is.
# * Mini-batches trade a little gradient noise for many cheap, vectorised steps.
# * Momentum sums gradients (inertia); RMSprop divides by their running RMS (a rate per
#   coordinate); Adam does both and corrects the zero start of its averages.
# * Schedules change the rate over training: warm up, then decay.
# * Our NumPy optimizers take *exactly* `torch.optim`'s steps.
#
# **Exercises** (`exercises/03_gradient_descent.ipynb`): write gradient descent, Nesterov
# momentum, RMSprop, AdamW, a warm-up + cosine schedule, the mini-batch generator and one whole
# epoch of training yourself, then answer four concept questions; the checks compare each with
# the course's reference and name the classic mistakes.
