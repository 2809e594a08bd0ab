# %% [markdown]
# # 04 · Training practice: losses, metrics, data, regularization, normalization, initialization, tuning
#
# By the end of chapter 03 an MLP fits the digits. This chapter asks the question every
# practitioner meets next: **my network fits the training set — why does it fail on new data,
# and what do I do about it?** The answer is a toolbox, and each tool is measured here on real
# data rather than asserted:
#
# 1. **losses** — which one for which problem, and why a loss's scale is the gradient's scale;
# 2. **metrics** — accuracy, precision, recall, F1, the confusion matrix, ROC and AUC, and why
#    accuracy lies when one class is rare;
# 3. **data** — train / validation / test splits, standardisation without leaking the test set,
#    augmentation, and how accuracy grows with the amount of data;
# 4. **over- and under-fitting** — learning curves, weight decay (L2 penalty vs decoupled),
#    dropout, early stopping, and an explorer with sliders;
# 5. **batch normalization** — train and eval mode, running statistics, equal to `nn.BatchNorm1d`;
# 6. **initialization** — symmetry, too small, too large, Xavier and He, signals through 20+
#    layers, and the fixes that make a deep network train;
# 7. **tuning** — a learning-rate range test, grid search against random search.
#
# NumPy is our language for the ideas and PyTorch for the training runs; every NumPy piece is
# proven equal to PyTorch's in the course's tests, and several of them here, in the open.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import dlcourse
from dlcourse import show_source
from dlcourse.data import load_digits
from dlcourse.optim import numpy_impl as optim_np           # chapter 03's optimizers (NumPy)
from dlcourse.training import explore
from dlcourse.training import numpy_impl as tr              # losses, dropout, batch norm, metrics (NumPy)
from dlcourse.training import practice as pr                # data, init, early stopping, search (NumPy)
from dlcourse.training import torch_impl as tt              # the PyTorch side

rng = dlcourse.seed(0)
device = dlcourse.device()
digits = load_digits()
lesson_start = time.perf_counter()
print(f"device: {device}; digits: {len(digits.x_train)} training, {len(digits.x_val)} validation, "
      f"{len(digits.x_test)} test images of 8 x 8 pixels")

# %% [markdown]
# ## 1 · Losses: which one, and what its scale does
#
# A loss turns "how wrong is the network" into one number whose gradient training follows. The
# choice says what kind of error matters:
#
# | loss | formula per element ($r$ = prediction − target) | use it for |
# |---|---|---|
# | MSE | $r^2$ | regression; the optimum is the **mean** of the targets; an outlier with $r = 10$ costs 100 times more than $r = 1$ and pulls 10 times harder (the gradient is $2r$) |
# | MAE (L1) | $\lvert r\rvert$ | regression that should ignore outliers; the optimum is the **median**; the gradient is $\pm 1$ whatever the size of the error |
# | Huber | $\tfrac12 r^2$ for $\lvert r\rvert \le \delta$, else $\delta(\lvert r\rvert - \tfrac12\delta)$ | both: quadratic near 0 (smooth, a gradient that shrinks as we get close), linear far away (outliers pull with force $\delta$ at most) |
# | binary cross-entropy | $-[y\log\sigma(z) + (1-y)\log(1-\sigma(z))]$ on the logit $z$ | yes/no (and multi-label) classification |
# | cross-entropy | $-\log \operatorname{softmax}(\mathbf z)_y$ | one class out of $K$ |
#
# Each is a *mean* over its elements in PyTorch (`reduction="mean"`). Here is Huber as a
# forward/backward pair; MSE and MAE are the two halves of it.

# %%
show_source(tr.huber_loss_forward)
show_source(tr.huber_loss_backward)

# %%
residual = np.linspace(-3, 3, 601)
fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.4))
for name, fwd, bwd in [("MSE", tr.mse_loss_forward, tr.mse_loss_backward),
                       ("MAE", tr.l1_loss_forward, tr.l1_loss_backward),
                       ("Huber, δ = 1", tr.huber_loss_forward, tr.huber_loss_backward)]:
    values = [fwd(np.array([r]), np.zeros(1))[0] for r in residual]
    grads = [bwd(1.0, fwd(np.array([r]), np.zeros(1))[1])[0] for r in residual]
    ax_loss.plot(residual, values, label=name)
    ax_grad.plot(residual, grads, label=name)
ax_loss.set(xlabel="residual r = prediction - target", ylabel="loss", title="loss per element", ylim=(0, 5))
ax_grad.set(xlabel="residual r", ylabel="d loss / d prediction", title="its gradient")
ax_loss.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The gradients say it all: MSE's grows without bound with the error, MAE's is ±1 everywhere
# (and jumps at 0, so MAE never settles gently), Huber's grows in proportion to the error near 0
# like MSE's (half as steeply: Huber's quadratic part has the factor ½) and is clipped at ±δ.
# Fit a single number $c$ to data with one outlier by gradient descent on each loss, and each
# finds its own kind of centre:

# %%
data = np.array([1.0, 1.2, 0.9, 1.1, 1.0, 9.0])          # five ones and an outlier
for name, fwd, bwd in [("MSE", tr.mse_loss_forward, tr.mse_loss_backward),
                       ("MAE", tr.l1_loss_forward, tr.l1_loss_backward),
                       ("Huber", tr.huber_loss_forward, tr.huber_loss_backward)]:
    c = 0.0
    for step in range(3000):
        _, cache = fwd(np.full_like(data, c), data)
        c -= 0.05 * bwd(1.0, cache).sum()                # all six predictions are the same c
    print(f"{name:>5}: c = {c:.3f}")
print(f" mean = {data.mean():.3f}, median = {np.median(data):.3f}")

# %% [markdown]
# MSE lands on the mean, dragged up by the outlier; Huber much closer to the bulk of the data.
# MAE's 1.000 is not a mistake: with six numbers, *every* $c$ between the two middle values (1.0
# and 1.1) has the same MAE, and `np.median` reports their midpoint, 1.05; gradient descent stops
# at the first point of that flat stretch it reaches.

# %% [markdown]
# **Binary cross-entropy from logits.** Written naively, $\log(1-\sigma(z))$ is $\log 0 = -\infty$ as
# soon as $\sigma(z)$ rounds to 1 (from $z \approx 37$ in float64), and $\log\sigma(z)$ the same once
# $\sigma(z)$ underflows to 0 (below $z \approx -745$): below, both infinities come from such terms,
# while the finite 40 at $z = -40$ is right. Rewritten as
# $\max(z,0) - zy + \log(1 + e^{-\lvert z\rvert})$ it stays finite for any logit, and its gradient
# is simply $(\sigma(z) - y)/N$. (You write this one in the exercises, so we only call the
# course's version and PyTorch's.)

# %%
import torch.nn.functional as F

z = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
    naive = -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z))))
ours, _ = tr.bce_with_logits_forward(z, y)
theirs = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(y))
print("naive per element:", naive)
print(f"stable mean: {ours:.4f}   PyTorch: {theirs.item():.4f}")

# %% [markdown]
# **Cross-entropy with label smoothing.** A one-hot target asks for a probability of exactly 1,
# which only infinite logits give; the network keeps growing its logits and becomes
# over-confident. Label smoothing (Szegedy et al., 2016) mixes the one-hot target with the
# uniform distribution, $\mathbf q = (1-\varepsilon)\,\text{one-hot} + \varepsilon/K$, so the best
# logits are finite. PyTorch's `F.cross_entropy(..., label_smoothing=ε)` does the same:

# %%
show_source(tr.cross_entropy_forward)

# %%
# NBVAL_IGNORE_OUTPUT
logits = rng.normal(0, 3, (6, 4))
labels = np.array([0, 3, 1, 1, 2, 0])
for eps in (0.0, 0.1):
    ours, cache = tr.cross_entropy_forward(logits, labels, label_smoothing=eps)
    t = torch.tensor(logits, requires_grad=True)
    theirs = F.cross_entropy(t, torch.tensor(labels), label_smoothing=eps)
    theirs.backward()
    grad_error = np.abs(tr.cross_entropy_backward(1.0, cache) - t.grad.numpy()).max()
    print(f"label_smoothing = {eps}: ours {ours:.6f}, PyTorch {theirs.item():.6f}, "
          f"largest gradient difference {grad_error:.1e}")

# %% [markdown]
# **A loss's scale is the gradient's scale.** The mean divides by $N$, so the gradient of each
# example's logit carries a $1/N$; the sum does not. With `reduction="sum"` the same learning rate
# takes steps $N$ times larger — a batch of 64 turns a good rate into a divergent one. Any
# constant factor in a loss (a weight on one term, a change of units of a regression target) does
# the same: the learning rate and the loss's scale have to be tuned together.

# %%
z = rng.normal(size=(64,))
y = (rng.random(64) < 0.5).astype(float)
_, cache = tr.bce_with_logits_forward(z, y)
mean_grad = tr.bce_with_logits_backward(1.0, cache)
print(f"gradient norm with the mean over 64: {np.linalg.norm(mean_grad):.4f}; "
      f"with the sum: {np.linalg.norm(64 * mean_grad):.4f} (64 times larger)")

# %% [markdown]
# ## 2 · Metrics: what "good" means
#
# The loss is what training minimises; a **metric** is what we report. For a classifier:
#
# * **accuracy**: the fraction of correct predictions;
# * per class $c$, from the counts of true positives, false positives and false negatives:
#   **precision** $= TP/(TP+FP)$ (of the examples predicted $c$, how many are $c$),
#   **recall** $= TP/(TP+FN)$ (of the examples that are $c$, how many were found) and
#   **F1**, their harmonic mean $2PR/(P+R)$;
# * **macro** averages weigh every class the same; **micro** averages pool the counts (for
#   single-label classification micro-F1 equals accuracy);
# * the **confusion matrix** counts (true class, predicted class) pairs: everything above at a
#   glance.
#
# First a 10-class MLP on the digits (PyTorch, a couple of seconds), then its confusion matrix.

# %%
# NBVAL_IGNORE_OUTPUT
model, history = tt.train_mlp(digits.x_train, digits.y_train, digits.x_val, digits.y_val,
                              hidden=(128,), epochs=40, seed=0, device=device)
with torch.no_grad():
    test_logits = model(torch.as_tensor(digits.x_test, device=device)).cpu().numpy()
pred = test_logits.argmax(axis=1)
cm = tr.confusion_matrix(digits.y_test, pred, num_classes=10)
explore.plot_confusion_matrix(cm)
plt.show()
p, r, f1 = tr.precision_recall_f1(digits.y_test, pred, num_classes=10, average="macro")
print(f"test accuracy {tr.accuracy(digits.y_test, pred):.3f}; macro precision {p:.3f}, recall {r:.3f}, F1 {f1:.3f}")

# %% [markdown]
# **Why accuracy lies on an imbalanced set.** Ask a different question of the same images: *is
# this a 9?* About one image in ten is. A "classifier" that always answers *no* is right nine
# times in ten — and useless: it finds none of the nines. Recall and F1 for the rare class show
# it at once. Below, the do-nothing baseline against a real binary classifier trained on the
# same imbalanced split.

# %%
# NBVAL_IGNORE_OUTPUT
_, y9_train = pr.one_vs_rest_imbalanced(digits.x_train, digits.y_train, positive=9)
_, y9_val = pr.one_vs_rest_imbalanced(digits.x_val, digits.y_val, positive=9)
_, y9_test = pr.one_vs_rest_imbalanced(digits.x_test, digits.y_test, positive=9)
print(f"nines in the test set: {y9_test.sum()} of {len(y9_test)} ({y9_test.mean():.1%})")

always_no = np.zeros_like(y9_test)
nine_model, _ = tt.train_mlp(digits.x_train, y9_train, digits.x_val, y9_val, hidden=(32,), epochs=40,
                             seed=0, device=device)
with torch.no_grad():
    nine_logits = nine_model(torch.as_tensor(digits.x_test, device=device)).cpu().numpy()
nine_score = nine_logits[:, 1] - nine_logits[:, 0]      # log-odds of "a nine"
nine_pred = (nine_score > 0).astype(np.int64)
for name, guess in [("always 'no'", always_no), ("trained MLP", nine_pred)]:
    prec, rec, f1s = tr.precision_recall_f1(y9_test, guess, num_classes=2)
    print(f"{name:>12}: accuracy {tr.accuracy(y9_test, guess):.3f}   for the nines: precision {prec[1]:.3f}, "
          f"recall {rec[1]:.3f}, F1 {f1s[1]:.3f}")

# %% [markdown]
# **ROC curve and AUC.** A binary classifier outputs a score; the threshold that turns it into a
# yes/no is our choice. Sweeping the threshold from high to low traces the **ROC curve**: the
# true-positive rate (recall) against the false-positive rate. Its area, the **AUC**, is the
# probability that a random positive scores higher than a random negative: 0.5 is guessing, 1.0
# a perfect ranking — and unlike accuracy it does not care how rare the positives are.

# %%
# NBVAL_IGNORE_OUTPUT
fpr, tpr, _ = tr.roc_curve(y9_test, nine_score)
auc = tr.roc_auc_score(y9_test, nine_score)
explore.plot_roc(fpr, tpr, auc)
plt.show()
from sklearn.metrics import roc_auc_score as sk_roc_auc
print(f"AUC: ours {auc:.6f}, scikit-learn {sk_roc_auc(y9_test, nine_score):.6f}")

# %% [markdown]
# ## 3 · Data: splits, standardisation, augmentation, and how much data
#
# **Three splits, three jobs.** The **training** set is what the weights learn from; the
# **validation** set is what *we* learn from — every choice of architecture, learning rate,
# regularization or epoch is a choice made by looking at it; the **test** set is looked at once, at
# the end, to report a number that no choice has been tuned to. `load_digits` splits 70 / 15 / 15,
# **stratified**: each part holds the ten classes in the same proportions (`pr.stratified_split`
# does the same for any labels).
#
# **Standardisation** — subtracting each feature's mean and dividing by its standard deviation —
# puts all inputs on one scale, which helps gradient descent (chapter 03's condition number).
# The statistics are **fitted on the training set only** and then applied unchanged to validation
# and test. Fitting them on all the data is a **leak**: the test set then shapes the inputs the
# model is trained on. The first sign is that the training data depend on the test data:

# %%
mean_ok, scale_ok = pr.fit_standardizer(digits.x_train)
all_x = np.concatenate([digits.x_train, digits.x_val, digits.x_test])
mean_leak, scale_leak = pr.fit_standardizer(all_x)
print(f"pixels that are 0 in every training image: {(scale_ok == 1).sum()} (their standard deviation is 0, "
      "so the scale is set to 1 instead of dividing by 0)")

changed_test = digits.x_test.copy()
changed_test[:50] = 1.0 - changed_test[:50]            # someone edits 50 test images...
_, scale_after = pr.fit_standardizer(np.concatenate([digits.x_train, digits.x_val, changed_test]))
print("leaky fit: training inputs change when test images change:",
      not np.allclose(pr.apply_standardizer(digits.x_train, mean_leak, scale_leak),
                      pr.apply_standardizer(digits.x_train, mean_leak, scale_after)))

# %% [markdown]
# (The training-only fit never reads a test image, so it cannot change.) The second sign is in the
# number we report. With a small training set (60 images), statistics fitted on all the images we
# hold — the 60 plus the 270 validation and 270 test images, 600 in all — are better estimates than
# those of the 60: information the model could never have when it meets truly new data. Ten seeds, each a different 60-image training
# set, the same network and training for both fits; only where the statistics come from differs:

# %%
# NBVAL_IGNORE_OUTPUT
def leak_study(seeds=range(10), n_train=60):
    accs = {"fit on training only": [], "fit on all data (leak)": []}
    for s in seeds:
        idx = pr.stratified_split(digits.y_train, (n_train / len(digits.y_train),
                                                   1 - n_train / len(digits.y_train)),
                                  np.random.default_rng(s))[0]
        x_tr, y_tr = digits.x_train[idx], digits.y_train[idx]
        x_te = digits.x_test
        for name, fit_on in [("fit on training only", x_tr),
                             ("fit on all data (leak)", np.concatenate([x_tr, digits.x_val, x_te]))]:
            m, sc = pr.fit_standardizer(fit_on)
            net, _ = tt.train_mlp(pr.apply_standardizer(x_tr, m, sc), y_tr,
                                  pr.apply_standardizer(digits.x_val, m, sc), digits.y_val,
                                  hidden=(64,), epochs=60, seed=s, device=device)
            accs[name].append(tt.evaluate(net, pr.apply_standardizer(x_te, m, sc), digits.y_test)[1])
    return {k: np.array(v) for k, v in accs.items()}


leak = leak_study()
for name, a in leak.items():
    print(f"{name:>24}: test accuracy {a.mean():.3f} ± {a.std():.3f} over {len(a)} seeds")
gain = leak["fit on all data (leak)"] - leak["fit on training only"]
print(f"the leak adds {100 * gain.mean():+.1f} points on average (per seed: "
      + ", ".join(f"{100 * g:+.1f}" for g in gain) + ")")

# %% [markdown]
# On average the leaky pipeline reports a higher test accuracy than the honest one, but on these
# digits the difference is small and noisy — some seeds go the other way (the line above). The
# point is not its size here: the leaky number was computed with help from the test set, so it is
# no longer an estimate of how the model does on images that arrive one at a time after deployment.
# With stronger preprocessing fitted on all the data (feature selection, PCA, target encoding) the
# inflation can be large. The rule is simple: anything that is
# *fitted* — a mean, a vocabulary, a threshold, a hyperparameter — is fitted on the training set
# (hyperparameters: on the validation set), never on the test set.

# %% [markdown]
# **Augmentation.** A "7" moved by a pixel or tilted by ten degrees is still a "7". Showing the
# network such variants of its training images — a new random variant every time it sees one —
# teaches it that these changes do not matter, without a single new label. `pr.augment_digits`
# shifts each image by up to a pixel, rotates it by up to 12° (bilinear interpolation, vectorised
# over the batch) and adds a little noise:

# %%
show_source(pr.augment_digits)
sample = digits.x_train[:8]
variants = [sample] + [pr.augment_digits(sample, rng) for _ in range(3)]
fig, axes = plt.subplots(4, 8, figsize=(8, 4.2))
for row, batch in enumerate(variants):
    for col in range(8):
        axes[row, col].imshow(batch[col].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[row, col].axis("off")
axes[0, 0].set_title("original", fontsize=8, loc="left")
axes[1, 0].set_title("three random augmentations", fontsize=8, loc="left")
plt.show()

# %% [markdown]
# **The data-hunger curve.** How much does more data buy, and how much does augmentation? Below,
# the same MLP trained on 50 to 1,257 images — plain, with Gaussian pixel noise (σ = 0.2) added to
# every batch, and with gentle geometric augmentation (half-pixel shifts, up to 8°, a little
# noise) — test accuracy against training-set size on a log axis, the mean of 2 seeds.

# %%
# NBVAL_IGNORE_OUTPUT
def gentle(x, rng):
    """Half-pixel shifts, up to 8 degrees, a little noise: variants that still look like these digits."""
    return pr.augment_digits(x, rng, max_shift=0.5, max_degrees=8.0, noise=0.1)


sizes = [50, 100, 200, 400, 800, len(digits.x_train)]
augmentations = {"plain": None, "pixel noise": tt.input_noise(0.2), "gentle shifts + rotations": gentle}
hunger = {name: [] for name in augmentations}
for n in tqdm(sizes, desc="training-set sizes"):
    for name, augment in augmentations.items():
        accs = []
        for s in range(2):
            idx = (pr.stratified_split(digits.y_train, (n / len(digits.y_train), 1 - n / len(digits.y_train)),
                                       np.random.default_rng(s))[0] if n < len(digits.x_train) else np.arange(n))
            net, _ = tt.train_mlp(digits.x_train[idx], digits.y_train[idx], digits.x_val, digits.y_val,
                                  hidden=(128,), lr=3e-3, epochs=max(30, 6000 // n), augment=augment,
                                  seed=s, device=device)
            accs.append(tt.evaluate(net, digits.x_test, digits.y_test)[1])
        hunger[name].append(np.mean(accs))

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6, 3.6))
for name, accs in hunger.items():
    ax.plot(sizes, accs, "o-", label=name)
ax.set(xscale="log", xlabel="training images (log scale)", ylabel="test accuracy",
       title="accuracy against training-set size")
ax.legend()
plt.show()
for k, n in enumerate(sizes):
    print(f"{n:>5} images: " + ", ".join(f"{name} {accs[k]:.3f}" for name, accs in hunger.items()))
best_augmented = max(hunger["pixel noise"][0], hunger["gentle shifts + rotations"][0])
assert best_augmented > hunger["plain"][0], hunger
assert hunger["plain"][-1] > hunger["plain"][0] + 0.08, hunger["plain"]

# %% [markdown]
# Two lessons in one plot. Data is the strongest regularizer: from 50 to 1,257 images the test
# accuracy climbs by more than ten points, and no trick on 50 images comes close. Augmentation
# helps most where data is scarcest — at 50 images both kinds add accuracy — and its gain shrinks,
# even turns into a small loss, as real data takes over. Which augmentation helps depends on the
# data: these digits are centred and size-normalised, and a one-pixel shift is an eighth of an
# 8 × 8 image, so we keep the geometry gentle.

# %% [markdown]
# ## 4 · Over- and under-fitting
#
# A network with more parameters than training examples can memorise them. Its **learning
# curves** — training and validation loss against epochs — show it: the training loss keeps
# falling towards 0 while the validation loss turns round and climbs. That is **over-fitting**:
# the network learns the particular training images, not the digits. **Under-fitting** is the
# opposite: both losses stay high, the model is too small or too constrained (or trained too
# briefly) to fit even the training set. Below, 300 training images, a tiny network and a wide
# one, trained for the same 150 epochs, with the wide one's curves drawn live.

# %%
small = pr.stratified_split(digits.y_train, (300 / 1257, 957 / 1257), np.random.default_rng(0))[0]
x_small, y_small = digits.x_train[small], digits.y_train[small]

# %%
# NBVAL_IGNORE_OUTPUT
live = explore.LiveLossPlot("wide MLP (64 -> 512 -> 512 -> 10), 300 training images", epochs=150)
wide, wide_run = tt.train_mlp(x_small, y_small, digits.x_val, digits.y_val, hidden=(512, 512),
                              epochs=150, seed=0, device=device, progress=True, callback=live)
tiny, tiny_run = tt.train_mlp(x_small, y_small, digits.x_val, digits.y_val, hidden=(2,),
                              epochs=150, seed=0, device=device)

# %%
# NBVAL_IGNORE_OUTPUT
explore.plot_train_val({"wide (over-fits)": wide_run, "2 hidden units (under-fits)": tiny_run})
plt.show()
for name, run in [("wide", wide_run), ("tiny", tiny_run)]:
    print(f"{name:>5}: final train loss {run.train_loss[-1]:.3f}, final validation loss {run.val_loss[-1]:.3f}, "
          f"best validation loss {run.best_val_loss:.3f} after epoch {run.best_epoch}")

# %% [markdown]
# ### Weight decay: an L2 penalty, or a decay of the weights?
#
# The oldest regularizer adds $\tfrac{\lambda}{2}\lVert\mathbf w\rVert^2$ to the loss: large
# weights cost, so the network prefers smooth functions that use many small weights over a few
# large ones. Its gradient adds $\lambda\mathbf w$ to every weight's gradient. For plain SGD that is
# the same as shrinking every weight by a factor $(1 - \eta\lambda)$ each step — *weight decay* —
# and `torch.optim.SGD(weight_decay=λ)` does exactly that.
#
# For adaptive optimizers the two are different (Loshchilov & Hutter, 2019). Adam divides each
# gradient by the running RMS of that weight's gradients. An L2 term added to the gradient is
# divided too: weights with large gradients are hardly regularized at all. **Decoupled** weight
# decay — AdamW — shrinks the weights directly, $\mathbf w \leftarrow \mathbf w - \eta\lambda\mathbf w$,
# outside Adam's normalisation, so every weight decays at the same rate. `torch.optim.Adam(weight_decay=λ)`
# is the L2 version; `torch.optim.AdamW(weight_decay=λ)` the decoupled one. Chapter 03's NumPy
# optimizers take exactly their steps — and the two really differ:

# %%
def torch_steps(cls, w0, grads, **hyper):
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = cls([w], **hyper)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    return w.detach().numpy()


w0 = np.array([3.0, -2.0, 0.5])
grads = [np.array([100.0, 0.01, -1.0]) * (1 + 0.1 * k) for k in range(20)]  # very different gradient scales
numpy_runs = {}
for name, step in [("adam", optim_np.adam_step), ("adamw", optim_np.adamw_step)]:
    w, state = w0.copy(), optim_np.adam_init(w0)
    for g in grads:
        w, state = step(w, g, state, lr=0.1, weight_decay=0.5)
    numpy_runs[name] = w
adam_l2 = torch_steps(torch.optim.Adam, w0, grads, lr=0.1, weight_decay=0.5)
adamw = torch_steps(torch.optim.AdamW, w0, grads, lr=0.1, weight_decay=0.5)
print("Adam + L2 (ours):  ", numpy_runs["adam"], "  torch.optim.Adam: ", adam_l2)
print("AdamW     (ours):  ", numpy_runs["adamw"], "  torch.optim.AdamW:", adamw)
assert np.allclose(numpy_runs["adam"], adam_l2) and np.allclose(numpy_runs["adamw"], adamw)

# %% [markdown]
# Two practical rules: decay only the weight matrices — biases and batch-norm parameters set
# offsets and scales, and shrinking them towards 0 only hurts — and with Adam use AdamW.
# `tt.train_mlp` follows both (two parameter groups, `optimizer="adamw"` by default).
#
# ### Dropout
#
# **Dropout** (Srivastava et al., 2014) sets each hidden unit to 0 with probability $p$ at every
# training step, a new random choice each time. No unit can rely on one particular other unit
# being there, so the network learns redundant features; it also behaves like an average over
# exponentially many thinned networks. In the **inverted** form that everyone uses, the units
# that survive are multiplied by $1/(1-p)$ during training, so the expected value of every unit is
# unchanged and at evaluation time dropout is simply switched off (the identity). You write it
# in the exercises; here is what it does to a batch of ones, and that it equals PyTorch's
# `F.dropout` for the same mask:

# %%
x = np.ones((4, 10))
out, cache = tr.dropout_forward(x, p=0.5, train=True, rng=np.random.default_rng(0))
print(out)
big, _ = tr.dropout_forward(np.ones((1000, 100)), p=0.5, train=True, rng=np.random.default_rng(1))
print(f"mean over 100,000 units in training: {big.mean():.3f} (its expected value is 1);  "
      f"eval mode: {tr.dropout_forward(x, p=0.5, train=False)[0].mean()}")
t = torch.tensor(x, requires_grad=True)
theirs = tt.dropout_with_mask(t, torch.tensor(cache.mask), 0.5)
theirs.backward(torch.ones_like(t))
print("same output as PyTorch:", np.array_equal(out, theirs.detach().numpy()),
      "  same gradient:", np.array_equal(tr.dropout_backward(np.ones_like(x), cache), t.grad.numpy()))

# %% [markdown]
# ### Early stopping
#
# The learning curves above show that the best network is the one at the *bottom* of the
# validation curve, not the last one. **Early stopping** watches the validation loss after every
# epoch, remembers a copy of the weights whenever it improves, stops once it has not improved for
# `patience` epochs, and hands back the remembered weights. Two details matter: the copy must be a
# real copy (an optimizer changes the weights in place, so a reference would follow training to
# its end), and stopping is not enough — the best weights must be restored. (You write the loop
# in the exercises.)
#
# `tt.train_mlp(..., patience=p)` does it with a deep copy of the model's `state_dict`. The wide
# network from above, once more, now with patience 15:

# %%
# NBVAL_IGNORE_OUTPUT
stopped, stopped_run = tt.train_mlp(x_small, y_small, digits.x_val, digits.y_val, hidden=(512, 512),
                                    epochs=150, patience=15, seed=0, device=device)
print(f"stopped after epoch {stopped_run.stopped_epoch} (best validation loss "
      f"{stopped_run.best_val_loss:.3f} after epoch {stopped_run.best_epoch}); "
      f"{stopped_run.seconds:.1f} s instead of {wide_run.seconds:.1f} s for all 150 epochs")
print(f"validation loss of the returned model: {tt.evaluate(stopped, digits.x_val, digits.y_val)[0]:.3f} "
      f"(the best epoch's, restored); the last epoch's was {stopped_run.val_loss[-1]:.3f}")
print(f"test accuracy: {tt.evaluate(stopped, digits.x_test, digits.y_test)[1]:.3f} with early stopping, "
      f"{tt.evaluate(wide, digits.x_test, digits.y_test)[1]:.3f} after all 150 epochs")
#
# ### What all of it buys, measured
#
# The question of this chapter, answered on 300 training images and 5 seeds: the same MLP
# (64 → 128 → 10, AdamW, 100 epochs) without any regularization, and with weight decay plus a
# cheap augmentation — Gaussian noise added to every training image each time it is seen. For each
# seed $s$ both runs get the same split (`load_digits(s)`, its first 300 training images), the same
# initial weights and the same batch order, so the comparison is paired. Held-out **test**
# accuracy, mean ± standard deviation over the seeds:

# %%
for name, config in tt.SMALL_DATA_CONFIGS.items():
    shown = {k: v for k, v in config.items() if k != "augment"}
    extra = ", plus Gaussian noise (σ = 0.2) on every training batch" if "augment" in config else ""
    print(f"{name:>14}: {shown}{extra}")

# %%
# NBVAL_IGNORE_OUTPUT
study_start = time.perf_counter()
study = tt.small_data_study(seeds=range(5), device=device, progress=True)
for name, accs in study.items():
    print(f"{name:>14}: test accuracy {accs.mean():.3f} ± {accs.std():.3f}   (seeds 0-4: "
          + ", ".join(f"{a:.3f}" for a in accs) + ")")
margin = study["regularized"].mean() - study["unregularized"].mean()
errors = 1 - study["unregularized"].mean(), 1 - study["regularized"].mean()
print(f"margin: {100 * margin:+.1f} points; test error {100 * errors[0]:.1f} % -> {100 * errors[1]:.1f} % "
      f"({1 - errors[1] / errors[0]:.0%} fewer mistakes); measured in {time.perf_counter() - study_start:.1f} s")

# %%
# NBVAL_IGNORE_OUTPUT
wins = int((study["regularized"] > study["unregularized"]).sum())
assert margin > 0.005 and wins >= 4, (margin, wins)
print(f"regularization wins on held-out test accuracy on {wins} of 5 seeds")

# %% [markdown]
# A point of accuracy sounds small; counted in mistakes it is about a fifth of them. It is also
# what an honest search found: dropout alone, early stopping, or the shifts and rotations of
# section 3 at full strength added little or nothing on 300 of these digits (the measurements
# are in `benchmarks/RESULTS.md`). The scikit-learn digits are centred and size-normalised, and a
# one-pixel shift is an eighth of an 8 × 8 image: an augmentation only helps when it produces
# images that look like the data. Regularization is a set of knobs to tune on the validation
# set, not a switch.
#
# ### The regularization explorer
#
# Move the sliders: **dropout rate**, **weight decay** and **training-set size** change the train and
# validation curves. The grid was trained just now, once per combination (a few seconds); the
# sliders then only pick a run. Look for: the gap between the curves shrinking with more data and
# with more regularization, and too much weight decay pushing both curves up (under-fitting).

# %%
# NBVAL_IGNORE_OUTPUT
grid_start = time.perf_counter()
grid = explore.regularization_grid(digits, seed=0, device=device)
print(f"{len(grid)} runs trained in {time.perf_counter() - grid_start:.1f} s")

# %%
# NBVAL_IGNORE_OUTPUT
explore.regularization_explorer(grid)

# %% [markdown]
# ## 5 · Batch normalization
#
# Each layer's input distribution changes as the layers before it learn. **Batch normalization**
# (Ioffe & Szegedy, 2015) normalises each unit over the mini-batch, then lets the network rescale
# it with learned $\gamma$ and $\beta$:
#
# $$\mu = \tfrac1N\textstyle\sum_i x_i, \quad \sigma^2 = \tfrac1N\sum_i (x_i-\mu)^2, \quad
# \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad y_i = \gamma\hat x_i + \beta,$$
#
# per feature, over the batch axis (axis 0 of an (N, D) array). At evaluation time there may be
# a single example, so the layer uses **running** estimates instead, updated at every training
# step with PyTorch's convention $r \leftarrow (1-m)\,r + m\cdot\text{batch statistic}$, momentum
# $m = 0.1$ — and the variance that goes into the running estimate is the **unbiased** one
# (divided by $N-1$), while the batch is normalised with the biased one. In the backward pass,
# $\mu$ and $\sigma^2$ depend on every example, so each $\partial L/\partial x_i$ collects three
# paths: the direct one through $\hat x_i$, one through the mean and one through the variance.
#
# You write the forward and the backward pass in the exercises. Here the course's versions run
# for four training steps and then in eval mode, next to `nn.BatchNorm1d` — output, every gradient,
# and the running statistics:

# %%
# NBVAL_IGNORE_OUTPUT
D = 5
gamma, beta = rng.normal(1, 0.2, D), rng.normal(0, 0.2, D)
running = tr.batchnorm_init(D)
layer = tt.make_batchnorm(gamma, beta)                       # nn.BatchNorm1d(5), float64, same γ, β
worst = {"out": 0.0, "dx": 0.0, "dgamma": 0.0, "dbeta": 0.0}
for step in range(4):
    x = rng.normal(3.0, 2.0, (16, D))
    dout = rng.normal(size=(16, D))
    out, cache, running = tr.batchnorm_forward(x, gamma, beta, running, train=True)
    dx, dgamma, dbeta = tr.batchnorm_backward(dout, cache)
    xt = torch.tensor(x, requires_grad=True)
    layer.zero_grad()
    yt = layer(xt)
    yt.backward(torch.tensor(dout))
    for name, a, b in [("out", out, yt), ("dx", dx, xt.grad), ("dgamma", dgamma, layer.weight.grad),
                       ("dbeta", dbeta, layer.bias.grad)]:
        worst[name] = max(worst[name], np.abs(a - b.detach().numpy()).max())
print("largest differences over 4 training steps:", {k: f"{v:.1e}" for k, v in worst.items()})
theirs = tt.running_stats(layer)
print(f"running mean: largest difference {np.abs(running.mean - theirs.mean).max():.1e}; "
      f"running variance: {np.abs(running.var - theirs.var).max():.1e}")
layer.eval()
x = rng.normal(3.0, 2.0, (3, D))
out_eval, _, _ = tr.batchnorm_forward(x, gamma, beta, running, train=False)
print(f"eval mode output: largest difference {np.abs(out_eval - layer(torch.tensor(x)).detach().numpy()).max():.1e}")

# %% [markdown]
# ## 6 · Initialization
#
# Training starts from random weights, and *how* random matters.
#
# * **Zeros** (or any constant): every hidden unit computes the same function and receives the same
#   gradient, so they stay identical forever — a layer of 64 units is worth one. With exact zeros
#   and ReLU it is even worse: every hidden unit outputs 0 and gets a gradient of exactly 0, so the
#   layer never moves and is worth none; only the output biases learn, which gives the class
#   frequencies, chance level. Random initial weights **break the symmetry**.
# * **Too small**: each layer multiplies the signal by a small factor; after 20 layers nothing is
#   left, and the gradients vanish on the way back in the same way.
# * **Too large**: signals grow layer by layer (ReLU) or saturate (sigmoid, tanh), and gradients
#   explode or vanish.
# * **Xavier/Glorot** (Glorot & Bengio, 2010): $\operatorname{Var}(W) = 2/(\text{fan}_{in} + \text{fan}_{out})$,
#   which keeps the variance of signals and gradients for activations that are linear around 0
#   (tanh, as long as its inputs stay small; it flattens beyond, so the signal still shrinks slowly).
# * **He/Kaiming** (He et al., 2015): $\operatorname{Var}(W) = 2/\text{fan}_{in}$ — ReLU zeroes half its
#   inputs, which halves the variance, and the factor 2 gives it back.
#
# `pr.init_weights` draws each scheme as `torch.nn.init` does (the tests compare the
# distributions with a Kolmogorov–Smirnov test). Zeros, trained for real:

# %%
# NBVAL_IGNORE_OUTPUT
zero_net, _ = tt.train_mlp(digits.x_train, digits.y_train, digits.x_val, digits.y_val, hidden=(64,),
                           epochs=10, init="zeros", seed=0, device=device)
first = next(m for m in zero_net.modules() if isinstance(m, torch.nn.Linear)).weight.detach().cpu().numpy()
print(f"zero init, after 10 epochs: {len(np.unique(first.round(12), axis=0))} distinct hidden units of {first.shape[0]}; "
      f"test accuracy {tt.evaluate(zero_net, digits.x_test, digits.y_test)[1]:.3f}")

# %% [markdown]
# Now the scale of signals and gradients through a 30-layer MLP, 64 units wide, on a random
# batch — forward and backward by hand in NumPy (`pr.depth_statistics`, equal to torch autograd
# in the tests). One line per setting: the standard deviation of each layer's output, and of the
# gradient of each layer's weights (log scale):

# %%
settings = {
    "sigmoid, Xavier": dict(activation="sigmoid", scheme="xavier_normal"),
    "tanh, Xavier": dict(activation="tanh", scheme="xavier_normal"),
    "ReLU, small N(0, 0.01²)": dict(activation="relu", scheme="small"),
    "ReLU, large N(0, 1)": dict(activation="relu", scheme="large"),
    "ReLU, He": dict(activation="relu", scheme="he_normal"),
    "ReLU, small + batch norm": dict(activation="relu", scheme="small", batchnorm=True),
}
depth_stats = {name: pr.depth_statistics(30, 64, rng=np.random.default_rng(0), **kw) for name, kw in settings.items()}
explore.plot_depth_stats(depth_stats)
plt.show()
for name, s in depth_stats.items():
    print(f"{name:>25}: output std layer 1 {s.activation_std[0]:.2e} -> layer 30 {s.activation_std[-1]:.2e};  "
          f"weight-gradient std layer 30 {s.gradient_std[-1]:.2e} -> layer 1 {s.gradient_std[0]:.2e}")

# %% [markdown]
# Sigmoid's gradients shrink layer by layer on the way back (its slope is at most 1/4): the first
# layers of a deep sigmoid network learn almost nothing — the **vanishing gradient**. Tanh with
# Xavier loses signal much more slowly (0.62 → 0.12 over 30 layers) and its gradients arrive. With ReLU,
# too small a scale kills the signal, too large a scale makes it explode, and He keeps it steady.
# Batch normalization rescues even the tiny initialization, because it resets the scale at every
# layer (the weight gradients even grow towards the input: batch norm divides by the tiny scale of
# the weights, so the gradient with respect to them is large).
#
# Does that decide whether a network *trains*? Below, 20-layer MLPs (64 units wide) on the digits,
# each trained for 150 steps of SGD with momentum (not Adam, which divides every gradient by its
# own size and so hides a vanishing one): plain networks with sigmoid and with ReLU as PyTorch
# initialises them, the ReLU network with He init + batch norm, and a residual network
# ($h \leftarrow h + f(h)$: the gradient has a path around every layer; each branch's weights are
# scaled by $1/\sqrt L$ so that the sum does not grow layer by layer). Chance level is
# $\ln 10 \approx 2.30$.

# %%
# NBVAL_IGNORE_OUTPUT
deep_start = time.perf_counter()
deep = tt.deep_mlp_curves(digits, depth=20, seed=0, device=device, progress=True)
print(f"trained {len(deep)} 20-layer networks in {time.perf_counter() - deep_start:.1f} s")

# %%
# NBVAL_IGNORE_OUTPUT
explore.plot_deep_curves(deep)
plt.show()
for name, losses in deep.items():
    print(f"{name:>16}: mini-batch loss, mean of the first 10 steps {np.mean(losses[:10]):.2f} -> "
          f"last 10 steps {np.mean(losses[-10:]):.2f}")
end = {name: np.mean(losses[-10:]) for name, losses in deep.items()}
assert end["plain sigmoid"] > 2.2 and end["plain relu"] > 2.2, end
assert end["he + batchnorm"] < 1.2 and end["residual"] < 1.2, end

# %% [markdown]
# ## 7 · Tuning hyperparameters
#
# **A learning-rate range test** (Smith, 2017): train for a hundred mini-batches while the learning
# rate grows exponentially from $10^{-5}$ towards $10$, and plot the loss against the rate. The
# loss does nothing while the rate is too small, falls where the rate is useful, and explodes
# where it is too large — the test stops there, once the loss exceeds 4 times its lowest value.
# A common pick (Smith's rule of thumb, also fastai's) is a tenth of the rate at the lowest
# smoothed loss: safely below the point where training becomes unstable.

# %%
# NBVAL_IGNORE_OUTPUT
lrs, range_losses = tt.lr_range_test(digits.x_train, digits.y_train, seed=0, device=device)
suggestion = tt.suggested_lr(lrs, range_losses)
explore.plot_lr_range(lrs, range_losses, suggested=suggestion)
plt.show()
print(f"lowest smoothed loss at lr = {10 * suggestion:.2g}; a tenth of it, {suggestion:.2g}, is the usual pick")

# %% [markdown]
# **Grid search vs random search.** With a budget of 9 training runs and two hyperparameters, a
# 3 × 3 grid tries only 3 values of each; 9 random configurations try 9 values of each. When one
# hyperparameter matters much more than the other — the usual case (Bergstra & Bengio, 2012) — the
# grid wastes two thirds of its budget re-testing the same 3 values of the one that matters. Here:
# the learning rate (it matters) and the dropout rate of a small network (it barely does), both on
# the same budget, scored by validation accuracy.

# %%
show_source(pr.random_configs)

# %%
# NBVAL_IGNORE_OUTPUT
def score(config, seed=0):
    net, _ = tt.train_mlp(x_small, y_small, digits.x_val, digits.y_val, hidden=(64,), epochs=20,
                          lr=config["lr"], dropout=config["dropout"], optimizer="sgd", seed=seed,
                          device=device)
    return tt.evaluate(net, digits.x_val, digits.y_val)[1]


grid_trials = pr.grid_configs({"lr": list(np.geomspace(1e-3, 1.0, 3)), "dropout": [0.0, 0.25, 0.5]})
random_trials = pr.random_configs({"lr": (1e-3, 1.0, "log"), "dropout": (0.0, 0.5, "lin")}, 9,
                                  np.random.default_rng(0))
search = {name: [(c, score(c)) for c in trials]
          for name, trials in [("grid", grid_trials), ("random", random_trials)]}

# %%
# NBVAL_IGNORE_OUTPUT
explore.plot_search(search)
plt.show()
for name, results in search.items():
    best, acc = max(results, key=lambda r: r[1])
    print(f"{name:>6} search: {len({round(c['lr'], 12) for c, _ in results})} distinct learning rates tried, "
          f"best validation accuracy {acc:.3f} at lr = {best['lr']:.3g}, dropout = {best['dropout']:.2f}")
best = {name: max(acc for _, acc in results) for name, results in search.items()}
assert best["random"] > best["grid"], best

# %% [markdown]
# Both searches covered the same ranges (learning rate $10^{-3}$ to $1$ on a log scale, dropout 0
# to 0.5) with the same budget. Along the dropout axis the scores barely change; along the learning
# rate they change a lot, and the grid could only try $10^{-3}$, $0.03$ and $1$ — it never saw the
# good region between $0.05$ and $0.5$. Random search did, because every trial drew a new learning
# rate. In practice: search learning rates (and weight decays) on a log scale, use random search
# (or a smarter method that builds on it), and spend a few trials on a coarse range first.

# %% [markdown]
# ## 8 · On a GPU
#
# Every training run above goes through `tt.train_mlp`, which follows `device`. On a CUDA GPU this
# section repeats the regularization study with 10 seeds; on a CPU it only says what it would do.

# %%
# NBVAL_IGNORE_OUTPUT
if device == "cuda":
    start = time.perf_counter()
    big = tt.small_data_study(seeds=range(10), device=device)
    for name, accs in big.items():
        print(f"{name:>14}: test accuracy {accs.mean():.3f} ± {accs.std():.3f} over 10 seeds")
    print(f"on {torch.cuda.get_device_name()}: {time.perf_counter() - start:.1f} s")
else:
    print("No CUDA GPU: on one, this cell repeats the regularization study over 10 seeds.")

# %% [markdown]
# ## Summary
#
# * Pick the loss for the error that matters (MSE: means, MAE: medians, Huber: both; BCE and
#   cross-entropy for classes, on logits); its scale is the gradient's scale.
# * Report metrics that match the question: accuracy hides a rare class; precision, recall, F1 and
#   AUC do not.
# * Fit every statistic on the training set only; tune on the validation set; touch the test set once.
# * Regularization is a set of knobs, tuned on the validation set: here weight decay plus input
#   noise bought a point of test accuracy on 300 images (a fifth of the mistakes); dropout,
#   geometric augmentation and early stopping (with the best weights restored) are worth what the
#   data say. Data itself is the strongest regularizer.
# * Batch norm normalises over the batch in training and uses running statistics in evaluation.
# * Initialise for the activation (He for ReLU, Xavier for tanh); depth needs normalization or
#   residual connections.
# * Search learning rates on a log scale, and prefer random search to a grid.
#
# **Exercises** (`exercises/04_training.ipynb`): binary cross-entropy from logits, standardising
# three splits, inverted dropout, batch norm forward and backward, precision / recall / macro-F1,
# He initialization, and a training loop with early stopping — then concept questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
