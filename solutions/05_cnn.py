# %% [markdown]
# # 05 · Convolutional networks — exercises
#
# In this notebook you write the parts of a convolutional network yourself, each the way PyTorch
# computes it, so that your function could replace `F.conv2d` or `F.max_pool2d`'s gradient — and
# then train a CNN in PyTorch:
#
# | # | function | what it is | points |
# |---|---|---|---|
# | 1 | `conv_output_size` | the output size of a convolution, with padding, stride and dilation | 2 |
# | 2 | `conv2d` | a vectorised convolution with stride and padding | 3 |
# | 3 | `conv2d_backward` | its gradients `dx`, `dw`, `db` | 3 |
# | 4 | `maxpool2d_backward` | max-pooling's gradient, ties included | 2 |
# | 5 | `receptive_field` | how many input pixels one unit of a stack of layers sees | 2 |
# | 6 | `train_digits_cnn` | **the larger task**: build and train a CNN in PyTorch to 97 % on the digits | 4 |
# | | four concept questions | a number, a pair of numbers or a letter each | 4 × 1 |
#
# **How the checks work.** Under each exercise is a check cell, `check.<name>(<name>)`. Run it
# after the cell with your function: it runs your code on several cases, from small to large,
# compares with the course's reference, and shows ✓ or ✗ with the points and one message that says
# what is wrong (and, for the classic mistakes, *which* mistake it is), with the smallest failing
# case and a line that reproduces it. It never crashes the notebook. Stuck? `check.hint("conv2d")`
# gives a hint; run it again for the next one. Each exercise has three hints: first the idea, then
# the approach, last something close to code, so try the first ones first. The concept questions
# at the end have no hints (work them out from the lesson). The last cell adds up your score.
#
# **Conventions.** PyTorch's layout everywhere: images `x` of shape `(N, C_in, H_img, W_img)`
# (batch, channels, height, width), weights `w` of shape `(C_out, C_in, kH, kW)`, outputs
# `(N, C_out, H_out, W_out)`. Every function returns new arrays and changes none of its inputs.
# Write the code yourself: handing in (or calling) the course's own version of an exercise earns
# no points. The point of exercises 1–5 is to write them **in NumPy**: wrapping `F.conv2d` and
# autograd would pass the checks, which use PyTorch as the oracle they compare with, but it teaches
# nothing; only the course's own functions are refused. Exercise 6 is PyTorch on purpose.

# %%
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlcourse.cnn.checks import check

# %% [markdown]
# ## Exercise 1 · The output size (2 points)
#
# Along one axis, an input of `size` pixels is padded with `padding` zeros on each side; a kernel
# of `kernel` taps, spread `dilation` pixels apart, slides over it `stride` pixels at a time, and
# a last step that does not fit whole is dropped (PyTorch's floor). Write
# `conv_output_size(size, kernel, stride=1, padding=0, dilation=1)`, which returns the number of
# positions, `H_out` for `size = H_img` — an `int`. The same formula gives the size after a pooling
# layer.

# %%
def conv_output_size(size, kernel, stride=1, padding=0, dilation=1):
    """The output length of a convolution along one axis (an int)."""
    ### BEGIN SOLUTION
    span = dilation * (kernel - 1) + 1       # pixels one position of the dilated kernel covers
    steps = (size + 2 * padding - span) // stride
    return steps + 1                         # the first position, then `steps` more
    ### END SOLUTION


# %%
check.conv_output_size(conv_output_size)

# %% [markdown]
# ## Exercise 2 · A vectorised convolution (3 points)
#
# Write `conv2d(x, w, b, stride=1, padding=0)`, the forward pass of `nn.Conv2d` (which, like every
# deep-learning library, computes a *cross-correlation*: the kernel is not flipped):
#
# $$\text{out}[n, o, p, q] = b[o] + \sum_{c, i, j} x_{pad}[n, c,\, p s + i,\, q s + j]\; w[o, c, i, j]$$
#
# * `x`: `(N, C_in, H_img, W_img)`; `w`: `(C_out, C_in, kH, kW)`; `b`: `(C_out,)`
# * `stride`, `padding`: ints, the same for both image axes; padding adds zeros on both sides
# * return `out` of shape `(N, C_out, H_out, W_out)`
#
# **Vectorise it**: no Python loop over pixels or channels. The check times your function on
# 64 images of 4 × 32 × 32 with 32 filters; loops over every output value take about 10 s there,
# and the limit is 4 s. `np.lib.stride_tricks.sliding_window_view` gives every window of an array
# as a view, without copying.

# %%
def conv2d(x, w, b, stride=1, padding=0):
    """2-D cross-correlation of x (N, C_in, H_img, W_img) with w (C_out, C_in, kH, kW), plus b."""
    ### BEGIN SOLUTION
    kH, kW = w.shape[2:]
    x_pad = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, (kH, kW), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]                        # (N, C_in, H_out, W_out, kH, kW)
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))        # (N, H_out, W_out, C_out)
    return out.transpose(0, 3, 1, 2) + b.reshape(-1, 1, 1)             # (N, C_out, H_out, W_out)
    ### END SOLUTION


# %%
check.conv2d(conv2d)

# %% [markdown]
# ## Exercise 3 · The convolution's backward pass (3 points)
#
# Write `conv2d_backward(dout, x, w, stride=1, padding=0)`, the gradients of exercise 2's `conv2d`
# given the upstream gradient `dout` of shape `(N, C_out, H_out, W_out)`:
#
# * return `(dx, dw, db)`, shaped like `x` `(N, C_in, H_img, W_img)`, `w` `(C_out, C_in, kH, kW)` and
#   `b` `(C_out,)`
# * a loop over the `kH · kW` kernel taps is fine (nine steps for a 3 × 3 kernel); a loop over
#   pixels is not needed
#
# The check compares with autograd through `F.conv2d`, and says which of the three gradients is
# wrong.

# %%
def conv2d_backward(dout, x, w, stride=1, padding=0):
    """Gradients (dx, dw, db) of conv2d(x, w, b, stride, padding) for the upstream gradient dout."""
    ### BEGIN SOLUTION
    p, s = padding, stride
    kH, kW = w.shape[2:]
    H_out, W_out = dout.shape[2:]
    x_pad = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    dx_pad = np.zeros(x_pad.shape)
    dw = np.zeros(w.shape)
    for i in range(kH):                      # tap (i, j) met x_pad[..., p*s + i, q*s + j] at output (p, q)
        for j in range(kW):
            patch = x_pad[:, :, i:i + s * (H_out - 1) + 1:s, j:j + s * (W_out - 1) + 1:s]  # (N, C_in, H_out, W_out)
            dw[:, :, i, j] = np.tensordot(dout, patch, axes=([0, 2, 3], [0, 2, 3]))        # (C_out, C_in)
            back = np.tensordot(w[:, :, i, j], dout, axes=([0], [1]))                      # (C_in, N, H_out, W_out)
            dx_pad[:, :, i:i + s * (H_out - 1) + 1:s, j:j + s * (W_out - 1) + 1:s] += back.transpose(1, 0, 2, 3)
    dx = dx_pad[:, :, p:p + x.shape[2], p:p + x.shape[3]]
    db = dout.sum(axis=(0, 2, 3))
    return dx, dw, db
    ### END SOLUTION


# %%
check.conv2d_backward(conv2d_backward)

# %% [markdown]
# ## Exercise 4 · Max-pooling's backward pass, with ties (2 points)
#
# Max-pooling keeps the largest value of each `kernel_size × kernel_size` window. Its gradient goes
# to **one** element per window: the maximum. When a window holds several equal maxima (common
# after a ReLU, which makes many zeros), PyTorch picks the **first in row-major order** within the
# window, and so must you. Where windows overlap (`stride < kernel_size`), a pixel that wins in
# several windows collects the gradient of each.
#
# Write `maxpool2d_backward(dout, x, kernel_size=2, stride=2)`:
#
# * `x`: `(N, C, H_img, W_img)`; `dout`: `(N, C, H_out, W_out)`; no padding
# * return `dx` of shape `(N, C, H_img, W_img)`
#
# The check uses inputs of small integers, so that ties are everywhere.

# %%
def maxpool2d_backward(dout, x, kernel_size=2, stride=2):
    """Gradient of max pooling: each window's dout goes to its first maximum."""
    ### BEGIN SOLUTION
    k, s = kernel_size, stride
    N, C, H_out, W_out = dout.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    first = windows.reshape(N, C, H_out, W_out, k * k).argmax(axis=-1)   # (N, C, H_out, W_out), first maximum
    dx = np.zeros(x.shape)
    for tap in range(k * k):
        i, j = divmod(tap, k)
        dx[:, :, i:i + s * (H_out - 1) + 1:s, j:j + s * (W_out - 1) + 1:s] += (first == tap) * dout
    return dx
    ### END SOLUTION


# %%
check.maxpool2d_backward(maxpool2d_backward)

# %% [markdown]
# ## Exercise 5 · Receptive field (2 points)
#
# One unit of a stack of convolutions and poolings sees a square of input pixels, its *receptive
# field*. Write `receptive_field(layers)`, where `layers` lists `(kernel, stride, dilation)` for
# each layer from the input to the output, and return the side of that square in input pixels (an
# `int`; padding does not change it). For example `[(3, 1, 1), (3, 1, 1)]`, two 3 × 3 convolutions,
# sees 5 × 5 pixels: return 5.

# %%
def receptive_field(layers):
    """Receptive field (pixels along one axis) of one unit of the last layer."""
    ### BEGIN SOLUTION
    seen, spacing = 1, 1                     # one pixel; neighbouring units 1 pixel apart
    for kernel, stride, dilation in layers:
        seen = seen + (kernel - 1) * dilation * spacing
        spacing = spacing * stride
    return seen
    ### END SOLUTION


# %%
check.receptive_field(receptive_field)

# %% [markdown]
# ## Exercise 6 · A CNN on the digits, in PyTorch (4 points) — the larger task
#
# Now the real thing, with PyTorch doing the gradients. Write
# `train_digits_cnn(x_train, y_train, x_val, y_val, seed)` that builds a small CNN and trains it on
# the 8 × 8 handwritten digits:
#
# * inputs as `load_digits` gives them: `x_train` `(N, 64)` float32 in [0, 1], `y_train` `(N,)` int64
#   labels 0–9 (and the same for the validation set, yours to use for choices, or not at all);
#   reshape the images to `(N, 1, 8, 8)` for the convolutions
# * seed torch with `seed` before building the model, so that a run can be repeated
# * return the trained model (an `nn.Module`) that takes `(N, 1, 8, 8)` images and returns
#   `(N, 10)` logits
#
# The check calls it once on `load_digits(0)`, puts the model in eval mode, and measures its accuracy
# on the 270 **test** images it never saw: at least **97 %** earns the points. Training may take at
# most 60 s on the CPU (a few seconds is plenty). The course's own trainers (`train_cnn`,
# `SmallCNN`, ...) earn no points: build the network and write the loop yourself. When the accuracy
# falls short, the check tells the classic mistakes of a training loop apart.

# %%
def train_digits_cnn(x_train, y_train, x_val, y_val, seed):
    """Build and train a small CNN on the 8 x 8 digits; return the trained model."""
    ### BEGIN SOLUTION
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # (N, 32, 4, 4)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 64, 2, 2)
        nn.Flatten(), nn.Linear(64 * 2 * 2, 10))                       # (N, 10) logits
    images = torch.as_tensor(x_train).reshape(-1, 1, 8, 8)             # (N, 1, 8, 8)
    labels = torch.as_tensor(y_train)                                  # (N,) int64
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(15):
        model.train()
        for batch in torch.randperm(len(images)).split(32):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
    ### END SOLUTION


# %%
# NBVAL_IGNORE_OUTPUT
check.train_digits_cnn(train_digits_cnn)   # (the accuracy it reports can differ in the last digit between machines)

# %% [markdown]
# ## Concept questions (1 point each)
#
# Answer each with a value (no hints: the lesson has what you need).
#
# **Q1.** A 3 × 3 convolution maps 16 feature maps of 8 × 8 to 32 feature maps of 8 × 8 (padding 1),
# with biases. How many parameters does it have — and how many would a dense layer (with biases)
# need between the same inputs and outputs, all 16 · 8 · 8 values to all 32 · 8 · 8? Answer with the
# pair `(conv, dense)`.

# %%
def q_conv_vs_dense_parameters():
    """(parameters of the convolution, parameters of the dense layer)."""
    ### BEGIN SOLUTION
    return (32 * (16 * 3 * 3 + 1), (16 * 64) * (32 * 64) + 32 * 64)
    ### END SOLUTION


# %%
check.q_conv_vs_dense_parameters(q_conv_vs_dense_parameters)

# %% [markdown]
# **Q2.** A convolution with a 5 × 5 kernel, stride 2 and padding 2 is applied to 32 × 32 images.
# What is `H_out`?

# %%
def q_output_size():
    """H_out (a number)."""
    ### BEGIN SOLUTION
    return 16
    ### END SOLUTION


# %%
check.q_output_size(q_output_size)

# %% [markdown]
# **Q3.** A stack of a 3 × 3 convolution (stride 1), a 2 × 2 max-pool (stride 2), and two more
# 3 × 3 convolutions (stride 1), no dilation. How many input pixels wide is the receptive field of
# one unit of the last layer?

# %%
def q_receptive_field():
    """The receptive field in pixels (a number)."""
    ### BEGIN SOLUTION
    return 12
    ### END SOLUTION


# %%
check.q_receptive_field(q_receptive_field)

# %% [markdown]
# **Q4.** You shift an input image one pixel to the right. What happens to the feature map of a
# stride-1 convolution (with enough padding that nothing falls off), and to that map after a
# 2 × 2 max-pool with stride 2?
#
# * `'a'` both shift one pixel (one cell) to the right
# * `'b'` the convolution's map shifts one pixel to the right; the pooled map does not shift by a
#   whole cell: some of its values stay the same, others change
# * `'c'` the convolution's map does not change; the pooled map shifts one cell
# * `'d'` the convolution's map shifts two pixels; the pooled map one cell

# %%
def q_shift():
    """'a', 'b', 'c' or 'd'."""
    ### BEGIN SOLUTION
    return "b"
    ### END SOLUTION


# %%
check.q_shift(q_shift)

# %% [markdown]
# ## Your score

# %%
check.scoreboard()
