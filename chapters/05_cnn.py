# %% [markdown]
# # 05 · Convolutional networks: convolution and pooling by hand, a CNN on real images, transfer learning
#
# An MLP treats an image as a list of numbers: move the digit one pixel to the right and, for the
# MLP, every input has changed. Yet what makes a "7" is *local* (strokes, corners) and *the same
# everywhere* in the image. A **convolutional network** builds both facts into its layers: each
# unit looks at a small patch, and the same small set of weights — a **filter** — is slid over
# every position. This chapter builds that layer by hand, forward and backward, proves it equal to
# PyTorch's, and trains CNNs on real images:
#
# 1. **why convolutions**: parameters, locality, weight sharing;
# 2. **convolution as a sliding dot product** — channels, padding, stride, dilation, groups, the
#    output-size formula — and a kernel explorer on photos;
# 3. **the NumPy twin equals `F.conv2d`**, forward and every gradient;
# 4. **pooling**, **translation equivariance**, and **receptive fields** growing with depth;
# 5. **a CNN on the digits** in NumPy (≥ 97 %) and in PyTorch (≥ 98 %), its filters and feature maps;
# 6. **augmentation** for images, measured;
# 7. **transfer learning**: a network pretrained on printed letters reused for handwritten digits with a
#    handful of labels;
# 8. on a GPU: a residual CNN with batch norm on Fashion-MNIST, CPU vs GPU time.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import dlcourse
from dlcourse import show_source
from dlcourse.cnn import explore
from dlcourse.cnn import model_np                             # the digits CNN in NumPy
from dlcourse.cnn import numpy_impl as cnn                    # convolution and pooling in NumPy
from dlcourse.cnn import torch_impl as tc                     # the PyTorch side
from dlcourse.data import load_digits
from dlcourse.optim.explore import LiveLossPlot

rng = dlcourse.seed(0)
device = dlcourse.device()
digits = load_digits()
lesson_start = time.perf_counter()
print(f"device: {device}")

# %% [markdown]
# ## 1 · Why not an MLP?
#
# A 224 × 224 colour photo has 150,528 numbers. A dense layer from it to just 1,000 hidden units
# has 150 million weights — for one layer — and it must learn separately, at every position, what
# an edge looks like. A **convolution** with 64 filters of 3 × 3 × 3 has 1,792 parameters, whatever
# the size of the image: each filter is a small pattern detector, applied at every position
# (**weight sharing**) and looking only at a small neighbourhood (**locality**).

# %%
def dense_params(d_in, d_out):
    return d_in * d_out + d_out


def conv_params(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


print(f"dense 224x224x3 -> 1,000 units:        {dense_params(224 * 224 * 3, 1000):>13,} parameters")
print(f"conv  3 -> 64 channels, 3x3 filters:    {conv_params(3, 64, 3):>13,} parameters")
print(f"dense 8x8 digit (64) -> 16x8x8 maps:    {dense_params(64, 16 * 64):>13,} parameters")
print(f"conv  1 -> 16 channels, 3x3 (same maps): {conv_params(1, 16, 3):>12,} parameters")

# %% [markdown]
# ## 2 · Convolution: a sliding dot product
#
# Put a $k_H \times k_W$ filter $w$ on the image at position $(i, j)$, multiply element by element,
# add up, add a bias: that is one output pixel,
#
# $$\text{out}[i, j] = b + \sum_{u=0}^{k_H-1}\sum_{v=0}^{k_W-1} w[u, v]\; x[i + u,\, j + v].$$
#
# Slide it to every position and you get a **feature map**. Strictly this is a
# *cross-correlation*; a mathematician's convolution flips the kernel first ($w[k_H-1-u, k_W-1-v]$).
# Deep-learning libraries compute the cross-correlation and call it convolution — since the
# weights are learned, the flip makes no difference, and we follow PyTorch.
#
# Real layers have **channels**: the input has $C_{in}$ (3 for RGB, or the feature maps of the layer
# before), each filter spans all of them, and a layer has $C_{out}$ filters, one output channel
# each: weights of shape `(C_out, C_in, kH, kW)`. Three more settings:
#
# * **padding** $p$: zeros around the border, so the filter can be centred on edge pixels
#   ($p = (k-1)/2$ keeps the size, "same" padding);
# * **stride** $s$: move the filter by $s$ pixels at a time, shrinking the map $s$ times;
# * **dilation** $d$: spread the filter's taps $d$ pixels apart, so a 3 × 3 filter covers 5 × 5
#   with $d = 2$ — a larger view for the same parameters.
#
# Together they give the output size of every convolution and pooling layer (PyTorch's docs
# state the same formula):
#
# $$n_{out} = \left\lfloor \frac{n + 2p - d\,(k - 1) - 1}{s} \right\rfloor + 1 .$$
#
# (You write it, and the vectorised convolution, in the exercises.) Here is the convolution as
# loops, the form to read; the course's `conv2d_forward` computes the same thing vectorised, as
# one matrix product over all windows (im2col), which is what the training below uses.

# %%
show_source(cnn.conv2d_loops)

# %% [markdown]
# **Groups** split the channels into $g$ independent convolutions: with $g = C_{in} = C_{out}$ every
# channel gets its own filter (**depthwise** convolution, the building block of MobileNet; it comes
# back in chapter 10). The weights shrink by the factor $g$:

# %%
for groups in (1, 4, 16):
    w = rng.normal(size=(16, 16 // groups, 3, 3))
    out, _ = cnn.conv2d_forward(rng.normal(size=(1, 16, 8, 8)), w, np.zeros(16), padding=1, groups=groups)
    print(f"16 -> 16 channels, 3x3, groups = {groups:>2}: weights {w.shape}, {w.size:>5} parameters, "
          f"output {out.shape}")

# %% [markdown]
# Try it on a photo: a 3 × 3 kernel that detects vertical edges (Sobel), horizontal edges, blurs,
# sharpens or embosses, or nine numbers of your own; change the stride and the dilation and watch
# the size of the map follow the formula.

# %%
# NBVAL_IGNORE_OUTPUT
explore.kernel_explorer()

# %% [markdown]
# ## 3 · The NumPy twin equals PyTorch, forward and backward
#
# The backward pass of a convolution is again made of convolutions: the gradient with respect to
# the weights correlates the input with the upstream gradient, the gradient with respect to the
# input spreads each upstream value back over the window it came from, and the bias collects the
# upstream gradient summed over the batch and every position. (You write it in the exercises.) The
# course's version against `F.conv2d` and autograd, in float64, on random configurations with every
# option at once — the tests run hundreds of these:

# %%
worst = {"out": 0.0, "dx": 0.0, "dw": 0.0, "db": 0.0}
for trial in range(20):
    c_in, groups = [(2, 1), (4, 2), (3, 3), (4, 1)][trial % 4]
    c_out = groups * int(rng.integers(1, 4))
    k, s, p, d = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2)), int(rng.integers(1, 3))
    x = rng.normal(size=(2, c_in, 9, 7))
    w = rng.normal(size=(c_out, c_in // groups, k, k))
    b = rng.normal(size=c_out)
    out, cache = cnn.conv2d_forward(x, w, b, stride=s, padding=p, dilation=d, groups=groups)
    dout = rng.normal(size=out.shape)
    dx, dw, db = cnn.conv2d_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ot = F.conv2d(xt, wt, bt, stride=s, padding=p, dilation=d, groups=groups)
    ot.backward(torch.tensor(dout))
    for name, ours, theirs in [("out", out, ot), ("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)]:
        worst[name] = max(worst[name], np.abs(ours - theirs.detach().numpy()).max())
print("largest difference over 20 random configurations:", {k: f"{v:.1e}" for k, v in worst.items()})
assert max(worst.values()) < 1e-10

# %% [markdown]
# ## 4 · Pooling, equivariance, receptive fields
#
# A **pooling** layer summarises each window of a feature map: **max-pooling** keeps the largest
# value (was the feature present anywhere here?), **average pooling** the mean. A 2 × 2 pool with
# stride 2 halves the height and width, keeps the channels, and has no parameters. Backward,
# average pooling shares each upstream gradient equally over its window; max-pooling sends it to
# the one element that won (you write that one, ties included).

# %%
show_source(cnn.avgpool2d_forward)

# %% [markdown]
# **Translation equivariance.** Shift the input by one pixel, and a stride-1 convolution's feature
# map shifts by exactly one pixel: the same filter meets the same pattern one position later.
# Pooling then makes the network a little **invariant** — after a 2 × 2 max-pool, many of the values
# do not move at all. Measured on a digit:

# %%
image = digits.x_test[:1].reshape(1, 1, 8, 8).astype(np.float64)
shifted = np.roll(image, 1, axis=3)                   # one pixel to the right
shifted[..., 0] = 0                                   # (the digits have an empty border: nothing wraps)
w_edge = np.array(explore.KERNELS["vertical edges (Sobel x)"], dtype=np.float64)[None, None]
fmap, _ = cnn.conv2d_forward(image, w_edge, None, padding=1)
fmap_shifted, _ = cnn.conv2d_forward(shifted, w_edge, None, padding=1)
print("conv map of the shifted digit == conv map shifted by one:",
      np.allclose(fmap_shifted[..., 1:], fmap[..., :-1]))
pooled, _ = cnn.maxpool2d_forward(np.maximum(fmap, 0), 2)
pooled_shifted, _ = cnn.maxpool2d_forward(np.maximum(fmap_shifted, 0), 2)
print(f"after ReLU and a 2x2 max-pool, {np.mean(np.isclose(pooled, pooled_shifted)):.0%} of the 16 values "
      "are unchanged by the shift")

# %% [markdown]
# **Receptive fields.** One output of a 3 × 3 convolution sees 3 × 3 input pixels. Stack a second
# one and each of its outputs sees 3 × 3 of the first layer's outputs, which together see 5 × 5
# pixels. Strides and pooling make it grow faster: every later layer's step counts in units of the
# pixels between neighbouring units, which multiply. For the digits CNN below — conv 3 × 3, pool 2,
# conv 3 × 3, pool 2 — `cnn.receptive_field` gives the size after each layer; the check is
# empirical: the pixels whose gradient reaches one unit of the last layer (torch autograd).

# %%
stack = [(3, 1, 1), (2, 2, 1), (3, 1, 1), (2, 2, 1)]           # (kernel, stride, dilation) per layer
names = ["conv1 3x3", "pool 2x2", "conv2 3x3", "pool 2x2"]
for name, (size, jump) in zip(names, cnn.receptive_field(stack)):
    print(f"after {name}: each unit sees {size} x {size} input pixels; neighbouring units are {jump} pixel(s) apart")

torch.manual_seed(0)
probe = tc.SmallCNN(1, 10, width=4, image_size=16).double()
x16 = torch.zeros(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
# average pooling and no ReLU: the same receptive field, and every pixel in it gets a gradient
features = F.avg_pool2d(probe.conv2(F.avg_pool2d(probe.conv1(x16), 2)), 2)
features[0, :, 1, 1].sum().backward()
seen = (x16.grad[0, 0] != 0).numpy()
rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
print(f"autograd: one unit of the last layer depends on a {np.ptp(rows) + 1} x {np.ptp(cols) + 1} patch of the input")
fig, ax = plt.subplots(figsize=(3.2, 3.2))
ax.imshow(seen, cmap="Greens")
ax.set(title="input pixels that reach\none unit after conv-pool-conv-pool", xticks=[], yticks=[])
plt.show()

# %% [markdown]
# ## 5 · A CNN on the digits, in NumPy
#
# Now the real thing, with every piece built by hand: conv 3 × 3 (1 → 16 channels) → ReLU →
# max-pool 2 → conv 3 × 3 (16 → 32) → ReLU → max-pool 2 → dense (32·2·2 → 10), trained with chapter
# 03's Adam (NumPy) and a cosine schedule on mini-batches of 32, 15 epochs. The forward pass and all six
# gradients equal a PyTorch copy of the network (the tests); the curves are drawn as it trains.

# %%
# NBVAL_IGNORE_OUTPUT
live = LiveLossPlot("NumPy CNN on the digits", epochs=15)
np_params, np_history = model_np.train_cnn_numpy(digits, epochs=15, seed=0, callback=live)
np_test_loss, np_test_acc = model_np.evaluate_cnn(np_params, model_np.digits_to_images(digits.x_test),
                                                  digits.y_test)
print(f"NumPy CNN: test accuracy {np_test_acc:.3f} after {np_history.seconds:.1f} s of training")

# %%
assert np_test_acc >= 0.97
print("the NumPy CNN reaches at least 97 % on the held-out test digits")
n_cnn = sum(p.size for p in np_params.values())
n_mlp = dense_params(64, 128) + dense_params(128, 10)           # chapter 03's 64 -> 128 -> 10 MLP
print(f"parameters: this CNN {n_cnn:,}; chapter 03's MLP {n_mlp:,}")

# %% [markdown]
# ## 6 · The same network in PyTorch, a little wider
#
# `tc.SmallCNN` is the same architecture (its `state_dict` even loads the NumPy parameters). The
# course's recipe (`tc.DIGITS_CNN`): 32 and 64 channels, 30 epochs of AdamW with a cosine
# schedule, and a gentle augmentation (shifts up to half a pixel, rotations up to 5°) on every
# batch, on `device`:

# %%
print({k: v for k, v in tc.DIGITS_CNN.items() if k != "augment"}, "+ augmentation")

# %%
# NBVAL_IGNORE_OUTPUT
live = LiveLossPlot(f"PyTorch SmallCNN on {device}", epochs=tc.DIGITS_CNN["epochs"])
torch_model, torch_history, torch_test_acc = tc.train_digits_cnn(seed=0, device=device, callback=live)
print(f"PyTorch CNN: test accuracy {torch_test_acc:.3f} after {torch_history.seconds:.1f} s of training")

# %%
assert torch_test_acc >= 0.98
print("the PyTorch CNN reaches at least 98 % on the held-out test digits")

# %% [markdown]
# **What did it learn?** The 32 filters of the first layer (each 3 × 3, red positive, blue
# negative): many are oriented edge and stroke detectors, learned from nothing but labels; a few
# are nearly flat (they pass on a blurred copy of the brightness). Then their feature maps on one
# test digit, and the same filters slid over a photo: the edge detectors find edges in an image
# they were never trained on, the flat ones give blurred copies of it.

# %%
first = torch_model.conv1.weight.detach().cpu().numpy()            # (32, 1, 3, 3)
explore.plot_filters(first, title="first-layer filters of the trained digits CNN")
plt.show()

x0 = tc.digits_images(digits.x_test[:1])                           # (1, 1, 8, 8)
maps = explore.feature_maps(torch_model, x0, "conv1")[0]           # (32, 8, 8)
explore.plot_feature_maps(maps[:16], title=f"16 of conv1's feature maps on a test '{digits.y_test[0]}'")
plt.show()

photo = explore.photo_grayscale("flower", downsample=4)             # (106, 160)
photo_maps = F.conv2d(torch.tensor(photo, dtype=torch.float32)[None, None],
                      torch.tensor(first), padding=1)[0].numpy()    # (32, 106, 160)
explore.plot_feature_maps(photo_maps[:8], title="the same filters on a photo (8 of 32)", columns=4)
plt.show()

# %% [markdown]
# Explore every layer, filter and test image of the trained network:

# %%
# NBVAL_IGNORE_OUTPUT
explore.feature_map_explorer(torch_model, tc.digits_images(digits.x_test[:20]), labels=digits.y_test[:20])

# %% [markdown]
# ## 7 · Augmentation for images
#
# Chapter 04 found that shifting and rotating the tiny digits helped an MLP only where data was
# scarcest (50 images). Does a CNN
# profit more? Its filters already see every position, and its pooling absorbs small shifts, so
# the honest answer has to be measured: the same SmallCNN on a small training set (300 images),
# with and without shifts up to one pixel and rotations up to 10°, 3 seeds:

# %%
# NBVAL_IGNORE_OUTPUT
def augmentation_study(seeds=(0, 1, 2), n_train=300):
    accs = {"no augmentation": [], "shifts + rotations": []}
    for s in seeds:
        d = load_digits(s)
        x_tr, y_tr = tc.digits_images(d.x_train[:n_train]), d.y_train[:n_train]
        for name, augment in [("no augmentation", None), ("shifts + rotations", tc.augmenter(1.0, 10.0))]:
            torch.manual_seed(s)
            model = tc.SmallCNN(1, 10, width=16)
            model, _ = tc.train_cnn(x_tr, y_tr, tc.digits_images(d.x_val), d.y_val, model=model, epochs=40,
                                    lr=1e-2, batch_size=32, schedule="cosine", augment=augment, seed=s,
                                    device=device)
            accs[name].append(tc.evaluate_cnn(model, tc.digits_images(d.x_test), d.y_test)[1])
    return {k: np.array(v) for k, v in accs.items()}


start = time.perf_counter()
aug = augmentation_study()
for name, a in aug.items():
    print(f"{name:>20}: test accuracy {a.mean():.3f} ± {a.std():.3f}  (seeds 0-2: "
          + ", ".join(f"{v:.3f}" for v in a) + ")")
print(f"difference: {100 * (aug['shifts + rotations'].mean() - aug['no augmentation'].mean()):+.1f} points; "
      f"measured in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# On these digits the difference is within the spread between seeds: the convolutions and the
# pooling already give the network most of what shifting the images would teach it, and the
# scikit-learn digits are centred and upright to begin with. The recipe above keeps a gentle
# augmentation (half a pixel, 5°) because it did no harm, and `benchmarks/RESULTS.md` lists what it
# did over 10 seeds on the full training set. On photos, where objects appear anywhere, at any
# size, mirrored and lit differently, augmentation (random crops, flips, colour changes) is one of
# the strongest regularizers there is (`tc.augmenter(flip=True)` adds mirroring for such data).

# %% [markdown]
# ## 8 · Transfer learning
#
# Features learned for one task are useful for another — when the first task is bigger and more
# varied than the second. Photographs reuse networks pretrained on ImageNet's 1.2 million images;
# offline we have something smaller of the same kind: the twenty text fonts that ship with
# matplotlib. Draw 41 printed letters in each of them, jitter every one sixteen times (rotation,
# shift, bolder strokes), and shrink them to 8 × 8 the way the digits were made: about 13,000
# images of a task that is *not* digits. Pretrain the CNN on those letters, then face the
# handwritten digits with only a few labelled examples of each. Three ways to use those few labels:
#
# * **frozen features**: keep the pretrained convolutions fixed and train only a new dense layer
#   on their output;
# * **fine-tuning**: start from the pretrained network with a new dense layer and train everything,
#   the pretrained layers gently (learning rate 3e-3 against the new layer's 1e-2: large steps
#   would wash out what was learned);
# * **from scratch**: the same architecture with random weights, trained on the few labels alone.
#
# All three get the same images, the same augmentation and the same 100 steps.

# %%
from dlcourse.cnn import glyphs

letters, letter_labels, fonts = glyphs.render_glyphs()
jittered, _ = glyphs.glyph_images(variants=2, seed=0)
print(f"{len(glyphs.GLYPH_CHARS)} letters x {len(fonts)} fonts = {len(letters)} drawings; "
      f"the study jitters each 16 times")
fig, axes = plt.subplots(3, 12, figsize=(9, 2.5))
pick = np.random.default_rng(1).choice(len(letters), 12, replace=False)
for col, i in enumerate(pick):
    axes[0, col].imshow(letters[i], cmap="gray_r")
    axes[1, col].imshow(jittered[i, 0].numpy(), cmap="gray_r")
    axes[2, col].imshow(jittered[len(letters) + i, 0].numpy(), cmap="gray_r")
for ax in axes.flat:
    ax.set(xticks=[], yticks=[])
axes[0, 0].set_ylabel("32 x 32", fontsize=8)
axes[1, 0].set_ylabel("8 x 8", fontsize=8)
axes[2, 0].set_ylabel("bolder", fontsize=8)
fig.suptitle("the pretraining task: printed letters, not digits")
plt.show()

# %% [markdown]
# Test accuracy on the digits against the number of labels per class, mean of 3 seeds (the range
# over the seeds in brackets; one seed is one draw of the few labelled digits):

# %%
# NBVAL_IGNORE_OUTPUT
transfer = tc.transfer_study(labels_per_class=(1, 2, 5, 20), seeds=(0, 1, 2), device=device, progress=True)
print(transfer.table())
print(f"pretrained on {transfer.num_source} letter images ({transfer.pretrain_accuracy:.1%} of them right); "
      f"study took {transfer.seconds:.1f} s")

# %%
# NBVAL_IGNORE_OUTPUT
means = transfer.mean()
fig, ax = plt.subplots(figsize=(6.4, 3.8))
for method, acc in means.items():
    ax.plot(transfer.labels_per_class, acc, "o-", label=method)
ax.set(xscale="log", xlabel="labelled images per digit", ylabel="test accuracy on the digits",
       title="transfer learning: letters -> handwritten digits")
ax.set_xticks(transfer.labels_per_class, [str(n) for n in transfer.labels_per_class])
ax.legend()
plt.show()
gain = transfer.gain("finetune")           # (L, seeds) points over scratch
for k, labels in enumerate(transfer.labels_per_class):
    print(f"{labels:>3} labels per digit: fine-tuning {100 * gain[k].mean():+.1f} points over scratch "
          f"(ahead on {(gain[k] > 0).sum()} of {gain.shape[1]} seeds), frozen "
          f"{100 * transfer.gain('frozen')[k].mean():+.1f}")
assert gain[:2].mean(axis=1).min() > 0.03  # with 1 and 2 labels per digit: several points ahead on average

# %% [markdown]
# The measured gain is largest where labels are scarcest — with one or two digits per class the
# pretrained network is several points ahead (the printout says on how many seeds) — and it shrinks
# to a point or less as labels grow, because then the digits themselves teach a new network what it
# needs. The letters never showed
# the network a digit; what carries over must be lower down: stroke edges, curves, corners and line
# ends, which any handwritten or printed character is made of. That is why frozen features already
# do well, and why fine-tuning, which can still adjust them, is the safer default once there are
# more than a handful of labels.
#
# Transfer does not always pay. The first version of this section pretrained on the digits 0–4
# and reused the network for 5–9: from two labels per class on, training from scratch won.
# Five classes of about 630 small images teach narrower features than a new network learns from
# the target itself; the source task has to be bigger and more varied than the target.
#
# ## 9 · On a GPU: a residual CNN with batch norm on Fashion-MNIST
#
# Bigger images want deeper networks, and deeper networks want chapter 04's fixes: `tc.ResidualCNN`
# stacks residual blocks (conv → batch norm → ReLU → conv → batch norm, plus the skip connection)
# in three stages of 32, 64 and 128 channels. On a CUDA GPU this cell trains it on Fashion-MNIST
# (60,000 photos of clothes, 28 × 28, downloaded once and verified; the digits if the download
# fails) and prints the time per epoch on the GPU against the CPU. On a CPU it only says what it
# would do: an epoch takes minutes there.

# %%
# NBVAL_IGNORE_OUTPUT
result = tc.scale_up(device=device)
if result is not None:
    print(f"{result.dataset}: test accuracy {result.test_acc:.3f}; "
          f"{result.cpu_seconds_per_epoch:.0f} s per epoch on the CPU vs {min(result.epoch_seconds):.1f} s "
          f"on {device} ({result.speedup:.0f}x)")

# %% [markdown]
# ## Summary
#
# * A convolution slides one small filter over every position: few parameters, local patterns,
#   the same detector everywhere. Channels, padding, stride, dilation and groups are all in
#   $n_{out} = \lfloor (n + 2p - d(k-1) - 1)/s \rfloor + 1$.
# * Backward, a convolution's gradients are convolutions again; our NumPy twin equals `F.conv2d`
#   in every gradient.
# * Convolutions are translation-equivariant; pooling adds a little invariance; receptive fields
#   grow with depth, fastest with strides and pooling.
# * A two-layer CNN reaches 98–99 % on the digits, in NumPy and in PyTorch, with fewer parameters
#   than chapter 03's MLP (section 5 counts them).
# * Transfer learning reuses features learned on one task: pretrained on printed letters, the CNN
#   beats training from scratch on handwritten digits, by most where labels are fewest (section 8
#   measures it). It pays when the pretraining task is bigger and more varied than the target.
#
# **Exercises** (`exercises/05_cnn.ipynb`): the output-size formula, a vectorised convolution with
# padding and stride, its backward pass, max-pooling's backward pass with ties, a receptive-field
# calculator, and a CNN trained in PyTorch to 97 % — then concept questions.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"lesson ran in {time.perf_counter() - lesson_start:.0f} s")
