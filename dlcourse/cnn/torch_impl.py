"""The PyTorch twin of chapter 05: convolutional networks on any device.

The primitives are PyTorch's own (``F.conv2d``, ``F.max_pool2d``, ``F.avg_pool2d``);
:mod:`dlcourse.cnn.numpy_impl` builds each by hand and the tests prove the two equal.
:func:`conv_layer_from_numpy` puts the NumPy twin's weights into an ``nn.Conv2d``.

The rest is the practice of CNNs:

* :class:`SmallCNN`, two convolutions and a dense layer for 8 x 8 digits (the layers and
  ``state_dict`` names of the NumPy network in :mod:`dlcourse.cnn.model_np`), and
  :class:`ResidualCNN`, batch norm and residual blocks for bigger images;
* :func:`train_cnn`, a training loop with augmentation and a per-epoch ``TrainHistory``
  (chapter 04's, imported), and :func:`image_augment`, random shifts and small rotations;
* :func:`transfer_study`: a CNN pretrained on printed letters reused for handwritten digits with few labels
  (frozen features vs fine-tuning vs training from scratch);
* :func:`scale_up`: the residual CNN on Fashion-MNIST, CPU vs GPU time per epoch.

Dimension letters: N batch, C channels (C_in, C_out), H_img x W_img image height x width,
kH x kW kernel, D features entering the dense layer, K classes.  Layout NCHW, conv weights
(C_out, C_in // groups, kH, kW), as PyTorch.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.torch_impl import TrainHistory, _fork_rng, _model_device, _sync, build_optimizer

configure_torch()

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "conv_layer_from_numpy",
           "SmallCNN", "ResidualBlock", "ResidualCNN", "digits_images", "evaluate_cnn", "train_cnn",
           "CNNHistory", "image_affine", "image_augment", "augmenter", "DIGITS_CNN", "train_digits_cnn",
           "TransferResult", "TRANSFER_METHODS", "transfer_study",
           "ScaleUpResult", "scale_up"]

# --------------------------------------------------------------------------- the primitives

# The twins of numpy_impl's conv2d_forward / maxpool2d_forward / avgpool2d_forward:
# x (N, C_in, H_img, W_img), w (C_out, C_in // groups, kH, kW) -> (N, C_out, H_out, W_out).
conv2d = F.conv2d
max_pool2d = F.max_pool2d
avg_pool2d = F.avg_pool2d


def conv_layer_from_numpy(w: np.ndarray, b: Optional[np.ndarray] = None, stride=1, padding=0, dilation=1,
                          groups: int = 1, device: str | torch.device = "cpu") -> nn.Conv2d:
    """An ``nn.Conv2d`` holding the NumPy twin's weights (copied; the dtype of ``w``).

    Parameters
    ----------
    w : ndarray of shape (C_out, C_in // groups, kH, kW)
    b : ndarray of shape (C_out,), or None for a layer without bias
    stride, padding, dilation : an int or a pair (rows, columns), as ``conv2d_forward``
    groups : C_in and C_out are split into this many groups that do not see each other

    Returns
    -------
    nn.Conv2d mapping (N, C_in, H_img, W_img) to (N, C_out, H_out, W_out)
    """
    w = np.asarray(w)
    c_out, c_in_per_group, kh, kw = w.shape
    layer = nn.Conv2d(c_in_per_group * groups, c_out, (kh, kw), stride=stride, padding=padding,
                      dilation=dilation, groups=groups, bias=b is not None)
    layer = layer.to(device=device, dtype=torch.from_numpy(w[:0]).dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        if b is not None:
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(b, dtype=w.dtype)))
    return layer


# --------------------------------------------------------------------------- models

class SmallCNN(nn.Module):
    """Two 3 x 3 convolutions, each followed by ReLU and a 2 x 2 max-pool, then a dense layer.

    The NumPy network of :mod:`dlcourse.cnn.model_np` in PyTorch, with the same parameter
    names (``conv1``, ``conv2``, ``fc``), so its ``state_dict`` loads the NumPy parameters.

    Parameters
    ----------
    in_channels : C_in (1 for grey images)
    num_classes : K
    width : C1, the channels of the first convolution; the second has C2 = 2 * width
    image_size : H_img (= W_img), a multiple of 4 (two poolings by 2)

    Shape:
        input (N, C_in, H_img, W_img), output (N, K) logits
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, image_size: int = 8):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two poolings by 2), got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)     # padding 1 keeps the size
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.num_features = 2 * width * (image_size // 4) ** 2       # D
        self.fc = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything but the last layer: (N, C_in, H_img, W_img) -> (N, D)."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)   # (N, C1, H_img/2, W_img/2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)   # (N, C2, H_img/4, W_img/4)
        return torch.flatten(h, 1)                   # (N, D), D = C2 * H_img/4 * W_img/4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))             # (N, K)


class ResidualBlock(nn.Module):
    """``relu(x' + bn(conv(relu(bn(conv(x))))))``, x' = x, or a strided 1 x 1 conv + bn when the shape changes.

    The identity path lets the signal and its gradient skip the block (He et al. 2016).

    Shape:
        input (N, C_in, H_img, W_img), output (N, C_out, H_img / stride, W_img / stride)
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        # no bias before batch norm: its mean subtraction would cancel it
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))      # (N, C_out, H_out, W_out)
        out = self.bn2(self.conv2(out))            # (N, C_out, H_out, W_out)
        return F.relu(out + self.shortcut(x))      # (N, C_out, H_out, W_out)


class ResidualCNN(nn.Module):
    """A small ResNet: a 3 x 3 stem, stages of residual blocks, global average pooling, a dense layer.

    Each stage after the first halves H_img and W_img (stride 2) and uses the next width.
    Global average pooling makes the model work for any image size.

    Parameters
    ----------
    in_channels : C_in (1 grey, 3 colour)
    num_classes : K
    widths : channels of the stages (C_1, C_2, ...)
    blocks_per_stage : residual blocks in each stage

    Shape:
        input (N, C_in, H_img, W_img), output (N, K) logits
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c_in = [], widths[0]
        for stage, c_out in enumerate(widths):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResidualBlock(c_in, c_out, stride))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c_in  # D
        self.fc = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))              # (N, C_last, H_img / 2^(S-1), W_img / 2^(S-1))
        return h.mean(dim=(2, 3))                  # (N, D): global average pooling, D = C_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))           # (N, K)


# --------------------------------------------------------------------------- data and evaluation

def digits_images(x) -> np.ndarray:
    """The digits of ``load_digits`` as images: (N, 64) -> (N, 1, 8, 8) (ndarray or tensor)."""
    return x.reshape(-1, 1, 8, 8)  # (N, C=1, H_img=8, W_img=8), row-major as sklearn stores them


@torch.no_grad()
def evaluate_cnn(model: nn.Module, x, y, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``x`` (N, C, H_img, W_img), ``y`` (N,), in eval mode.

    In batches of ``batch_size`` (a whole data set of images at once may not fit in memory);
    the data go to the model's device; its train/eval mode is restored afterwards.
    """
    device = _model_device(model)
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    y = torch.as_tensor(y, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for begin in range(0, len(x), batch_size):
        logits = model(x[begin:begin + batch_size])                     # (B, K)
        yb = y[begin:begin + batch_size]
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    model.train(was_training)
    return loss_sum / len(x), correct / len(x)


# --------------------------------------------------------------------------- augmentation

def image_affine(x, degrees, shift_rows, shift_cols, flip=None):
    """Rotate each image about its centre, shift it, and optionally mirror it, with bilinear interpolation.

    One ``F.affine_grid`` + ``F.grid_sample`` for the whole batch, on ``x``'s device.  For every
    output pixel the grid holds where it comes from in the input (the inverse transform);
    pixels from outside the image are 0.  For 8 x 8 digits this equals chapter 04's
    ``practice.affine_digits``.

    Parameters
    ----------
    x : ndarray or tensor of shape (N, C, H_img, W_img); every channel of an image moves together
    degrees : (N,) counter-clockwise rotation of each image on screen
    shift_rows, shift_cols : (N,) shifts in pixels (down, right)
    flip : (N,) bool, mirror left-right (after the rotation and the shift), or None

    Returns
    -------
    the same type, shape and dtype as ``x``
    """
    is_numpy = isinstance(x, np.ndarray)
    xt = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    n, _, h_img, w_img = xt.shape
    kw = dict(dtype=xt.dtype if xt.is_floating_point() else torch.float32, device=xt.device)
    theta = torch.as_tensor(np.deg2rad(np.asarray(degrees, dtype=float)), **kw)   # (N,)
    t = torch.stack([torch.as_tensor(np.asarray(shift_cols, dtype=float), **kw),
                     torch.as_tensor(np.asarray(shift_rows, dtype=float), **kw)], dim=1)  # (N, 2) as (x, y)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # In pixel offsets u from the centre (x right, y down) the source of output pixel u is
    # A (u - t), A = [[cos, -sin], [sin, cos]] (y points down: counter-clockwise on screen).
    # affine_grid works in normalised coordinates v = u / s, s = (W_img / 2, H_img / 2)
    # (align_corners=False), so theta = [s^-1 A s | -s^-1 A t].
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)   # (N, 2, 2)
    s = torch.tensor([w_img / 2, h_img / 2], **kw)                                  # (2,)
    a_norm = a * s[None, None, :] / s[None, :, None]                                # s^-1 A s
    offset = -(a @ t[:, :, None])[:, :, 0] / s                                      # (N, 2)
    if flip is not None:  # mirror the output: the source column of output x is that of -x
        sign = 1.0 - 2.0 * torch.as_tensor(np.asarray(flip, dtype=bool), device=xt.device).to(kw["dtype"])
        a_norm = a_norm * torch.stack([sign, torch.ones_like(sign)], 1)[:, None, :]
    matrix = torch.cat([a_norm, offset[:, :, None]], dim=2)                         # (N, 2, 3)
    grid = F.affine_grid(matrix, list(xt.shape), align_corners=False)               # (N, H_img, W_img, 2)
    out = F.grid_sample(xt.to(kw["dtype"]), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)                                        # (N, C, H_img, W_img)
    out = out.to(xt.dtype)
    return out.numpy() if is_numpy else out


def image_augment(x, rng: np.random.Generator, max_shift: float = 1.0, max_degrees: float = 10.0,
                  flip: bool = False):
    """Random shifts, small rotations (and, with ``flip``, left-right mirrors) of a batch of images.

    Each image gets its own rotation in ``[-max_degrees, max_degrees]`` and its own shift in
    ``[-max_shift, max_shift]`` pixels per axis (and a mirror with probability 1/2).  A digit
    moved by a pixel is the same digit: new views of the data without a single new label.
    (No mirrors for digits: a mirrored 2 is not a 2; a mirrored photo of a cat is a cat.)

    Parameters
    ----------
    x : ndarray or tensor of shape (N, C, H_img, W_img)
    rng : NumPy Generator (a new draw every call)

    Returns
    -------
    the same type, shape, dtype and device as ``x``
    """
    n = x.shape[0]
    degrees = rng.uniform(-max_degrees, max_degrees, n)
    rows = rng.uniform(-max_shift, max_shift, n)
    cols = rng.uniform(-max_shift, max_shift, n)
    mirror = rng.random(n) < 0.5 if flip else None
    return image_affine(x, degrees, rows, cols, mirror)


def augmenter(max_shift: float = 1.0, max_degrees: float = 10.0, flip: bool = False):
    """An ``augment`` for :func:`train_cnn`: :func:`image_augment` with these settings."""
    def augment(x, rng):
        return image_augment(x, rng, max_shift=max_shift, max_degrees=max_degrees, flip=flip)
    return augment


# --------------------------------------------------------------------------- the training loop

@dataclass
class CNNHistory(TrainHistory):
    """Chapter 04's :class:`~dlcourse.training.torch_impl.TrainHistory` plus the time of each epoch's
    training steps alone (no evaluation, no callback): what :func:`scale_up` compares across devices."""

    epoch_seconds: list[float] = field(default_factory=list)


def train_cnn(x_train, y_train, x_val, y_val, *, model: Optional[nn.Module] = None, epochs: int = 20,
              lr: float = 3e-3, batch_size: int = 64, weight_decay: float = 0.0, optimizer: str = "adamw",
              schedule: Optional[str] = None, augment: Optional[Callable] = None, seed: int = 0, device: Optional[str] = None,
              progress: bool = False, callback: Optional[Callable[[TrainHistory], None]] = None,
              eval_batch_size: int = 1024) -> tuple[nn.Module, CNNHistory]:
    """Train a CNN classifier with mini-batches and cross-entropy.

    Parameters
    ----------
    x_train : (N, C, H_img, W_img) float images; y_train : (N,) int labels 0..K-1 (ndarrays or tensors;
        digits from ``load_digits`` go through :func:`digits_images` first)
    x_val, y_val : the validation set, measured after every epoch
    model : the network to train (in place, on ``device``); default a new :class:`SmallCNN` for
        the data's C_in, K and H_img, initialised from ``seed``.  Only parameters with
        ``requires_grad`` are trained: freeze a part by switching it off
    epochs, lr, batch_size : passes over the training set, the learning rate, examples per step
    weight_decay, optimizer : as chapter 04's ``build_optimizer`` (weight matrices decay, biases
        and batch-norm parameters do not); ``"adamw"``, ``"adam"`` or ``"sgd"`` (momentum 0.9)
    schedule : None (a constant ``lr``) or ``"cosine"``: the rate falls from ``lr`` to 0 along half
        a cosine over all the steps, so the last epochs take small steps and the final weights
        settle instead of jumping around a minimum
    augment : ``augment(x_batch, rng) -> x_batch`` on each training batch, a (B, C, H_img, W_img)
        float32 tensor on ``device``, e.g. ``augmenter(max_shift=1, max_degrees=10)``
    seed : seeds the default model's weights, the shuffling and ``augment``'s rng: equal seeds
        give equal runs (on one device).  The global torch generator is left as it was
    device : default ``dlcourse.device()`` (or the given model's device); the data move there once
    progress : a ``tqdm`` bar over the epochs
    callback : called with the history after every epoch (a live plot); its time is not counted
    eval_batch_size : the batch size of the evaluation passes

    Returns
    -------
    model : the trained network (the last epoch's weights), in eval mode, on ``device``
    history : :class:`CNNHistory` (chapter 04's ``TrainHistory``): loss and accuracy on the whole
        training and validation sets (eval mode) before training and after every epoch, the
        seconds of the loop (without the callback) and of each epoch's steps alone
    """
    from dlcourse.optim.numpy_impl import _progress
    from dlcourse.runtime import device as best_device
    if device is None:
        device = str(_model_device(model)) if model is not None else best_device()
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)  # (N, C, H_img, W_img)
    yt = torch.as_tensor(y_train, dtype=torch.long, device=device)     # (N,)
    xv = torch.as_tensor(x_val, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_val, dtype=torch.long, device=device)
    if xt.ndim != 4:
        raise ValueError(f"x_train must be images (N, C, H_img, W_img), got shape {tuple(xt.shape)}; "
                         f"for load_digits' (N, 64) use digits_images(x)")
    n, c_in, h_img, _ = xt.shape
    rng = np.random.default_rng(seed)
    history = CNNHistory()
    updates = 0

    def record():
        history.updates.append(updates)
        for losses, accs, (loss, acc) in ((history.train_loss, history.train_acc,
                                          evaluate_cnn(model, xt, yt, eval_batch_size)),
                                         (history.val_loss, history.val_acc,
                                          evaluate_cnn(model, xv, yv, eval_batch_size))):
            losses.append(loss)
            accs.append(acc)

    with _fork_rng(device):
        torch.manual_seed(seed)
        if model is None:
            k = int(max(int(yt.max()), int(yv.max()))) + 1
            model = SmallCNN(c_in, k, image_size=h_img)
        model = model.to(device)
        opt = build_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(n / batch_size)
        if schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
        elif schedule is None:
            scheduler = None
        else:
            raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
        record()
        bar = _progress(range(epochs), progress, f"train_cnn ({device})")
        start, paused = time.perf_counter(), 0.0
        for epoch in bar:
            model.train()
            _sync(device)
            epoch_start = time.perf_counter()
            order = torch.from_numpy(rng.permutation(n)).to(device)  # one transfer per epoch
            for begin in range(0, n, batch_size):
                idx = order[begin:begin + batch_size]
                xb = xt[idx]                                          # (B, C, H_img, W_img)
                if augment is not None:
                    xb = augment(xb, rng)
                loss = F.cross_entropy(model(xb), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                updates += 1
            _sync(device)
            history.epoch_seconds.append(time.perf_counter() - epoch_start)
            record()
            e = epoch + 1
            if history.val_loss[e] < history.val_loss[history.best_epoch]:
                history.best_epoch = e
            t0 = time.perf_counter()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(train_loss=f"{history.train_loss[-1]:.3f}", val_acc=f"{history.val_acc[-1]:.3f}")
            if callback is not None:
                callback(history)
            paused += time.perf_counter() - t0
        if hasattr(bar, "close"):
            bar.close()
        history.seconds = time.perf_counter() - start - paused
    model.eval()
    return model, history


# The digits CNN of the lesson.  Measured on 10 seeds (load_digits(s), seed=s, CPU, one thread):
# held-out test accuracy 98.15-99.63 %, mean 99.07 %, about 5 s each (the loop with its
# per-epoch evaluations); width 16 gave a mean of 98.93 % (lowest 97.78 %).  The cosine
# schedule lets the last epochs settle; with a constant rate the final weights jump around.
DIGITS_CNN = dict(width=32, epochs=30, lr=1e-2, batch_size=32, schedule="cosine",
                  augment=augmenter(max_shift=0.5, max_degrees=5.0))


def train_digits_cnn(seed: int = 0, device: Optional[str] = None, progress: bool = False,
                     callback: Optional[Callable[[TrainHistory], None]] = None,
                     **overrides) -> tuple[SmallCNN, CNNHistory, float]:
    """The lesson's digits CNN: :data:`DIGITS_CNN` (or ``overrides``) on ``load_digits(seed)``.

    Returns
    -------
    model : the trained :class:`SmallCNN`; history : :class:`CNNHistory`;
    test_acc : accuracy on the held-out test images (never seen in training or for any choice)
    """
    from dlcourse.data import load_digits
    recipe = {**DIGITS_CNN, **overrides}
    width = recipe.pop("width")
    d = load_digits(seed)
    with _fork_rng("cpu"):
        torch.manual_seed(seed)
        model = SmallCNN(1, 10, width=width)
    model, history = train_cnn(digits_images(d.x_train), d.y_train, digits_images(d.x_val), d.y_val,
                               model=model, seed=seed, device=device, progress=progress, callback=callback,
                               **recipe)
    return model, history, evaluate_cnn(model, digits_images(d.x_test), d.y_test)[1]


# --------------------------------------------------------------------------- transfer learning

TRANSFER_METHODS = {
    "frozen": "the pretrained convolutions kept fixed, a new dense layer trained on their features",
    "finetune": "the pretrained network with a new dense layer, everything trained",
    "scratch": "a new network trained from random weights on the few labels alone",
}


@dataclass
class TransferResult:
    """What :func:`transfer_study` measured.

    ``accuracy[method]`` is an (L, S) array: test accuracy on the digits for each number of
    labels per class (rows, ``labels_per_class``) and each seed (columns, ``seeds``).
    """
    labels_per_class: tuple
    seeds: tuple
    accuracy: dict
    pretrain_accuracy: float   # accuracy of the pretrained network on its own (jittered) letters
    num_source: int            # images in the pretraining set
    seconds: float

    def mean(self) -> dict:
        """``{method: (L,) accuracy averaged over the seeds}``."""
        return {m: a.mean(axis=1) for m, a in self.accuracy.items()}

    def gain(self, method: str = "finetune") -> np.ndarray:
        """(L, S) accuracy of ``method`` minus training from scratch, per count and seed."""
        return self.accuracy[method] - self.accuracy["scratch"]

    def table(self) -> str:
        """The curve as text: one row per number of labels, mean (min-max) over the seeds."""
        lines = ["labels/class  " + "  ".join(f"{m:>18}" for m in self.accuracy)]
        for i, labels in enumerate(self.labels_per_class):
            cells = [f"{a[i].mean():6.1%} ({a[i].min():.0%}-{a[i].max():.0%})" for a in self.accuracy.values()]
            lines.append(f"{labels:>12}  " + "  ".join(f"{c:>18}" for c in cells))
        return "\n".join(lines)


def _few_labels(y: np.ndarray, labels_per_class: int, order: np.ndarray) -> np.ndarray:
    """Indices of the first ``labels_per_class`` examples of every class in the random ``order``.

    The same ``order`` for every count makes the subsets nested (5 labels contain the 2),
    so the curve compares more labels, not different luck.
    """
    picked = [order[y[order] == k][:labels_per_class] for k in np.unique(y)]
    return np.sort(np.concatenate(picked))


def _fit_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch_size: int,
               augment: Optional[Callable], rng: np.random.Generator, body_lr: Optional[float] = None) -> nn.Module:
    """``steps`` AdamW steps with a cosine schedule on mini-batches drawn in shuffled passes, no evaluation.

    The few-label runs of :func:`transfer_study` count steps, not epochs: one epoch of 10
    images is a single step.  Trains the parameters with ``requires_grad``; with ``body_lr``
    everything but the last layer ``fc`` learns at ``body_lr`` and ``fc`` at ``lr``
    (discriminative learning rates: small steps keep what pretraining learned, the new head
    needs large ones).  Returns the model in eval mode.
    """
    if body_lr is None:
        opt = build_optimizer(model, "adamw", lr=lr)
    else:
        head = [p for n, p in model.named_parameters() if n.startswith("fc.") and p.requires_grad]
        body = [p for n, p in model.named_parameters() if not n.startswith("fc.") and p.requires_grad]
        opt = torch.optim.AdamW([{"params": head, "lr": lr}, {"params": body, "lr": body_lr}])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    model.train()
    order = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:  # start a new shuffled pass (finishing the old one first)
            order = np.concatenate([order, rng.permutation(len(y))])
        idx, order = torch.from_numpy(order[:batch_size]).to(y.device), order[batch_size:]
        xb = x[idx]                                                    # (B, 1, 8, 8)
        if augment is not None:
            xb = augment(xb, rng)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
    return model.eval()


def transfer_study(labels_per_class: Sequence[int] = (1, 2, 5, 10, 20, 50), seeds: Sequence[int] = (0, 1, 2),
                   *, width: int = 32, variants: int = 16, pretrain_steps: int = 1200, steps: int = 100,
                   lr: float = 1e-2, finetune_lr: float = 3e-3,
                   augment: Optional[Callable] = DIGITS_CNN["augment"],
                   device: Optional[str] = "cpu", progress: bool = False) -> TransferResult:
    """Reuse a CNN trained on printed letters for handwritten digits with few labels.

    1. Pretrain one :class:`SmallCNN` (41 outputs) on 41 printed letters in matplotlib's 20
       text fonts, ``variants`` jittered 8 x 8 copies of each (:func:`dlcourse.cnn.glyphs.glyph_images`,
       about 17,000 images) for ``pretrain_steps`` steps of 64 (seed 0).
    2. For each seed s and each count L in ``labels_per_class``, take L training images of each
       digit 0-9 from ``load_digits(s)`` (nested subsets: the 5 of L=5 contain the 2 of L=2) and
       train for ``steps`` AdamW steps (cosine schedule, mini-batches of up to 64, ``augment``):

       * ``"frozen"``: the pretrained convolutions, fixed; a new dense layer (10 outputs) on top,
         at ``lr``;
       * ``"finetune"``: the pretrained network with a new dense layer, everything trained: the new
         layer at ``lr``, the pretrained ones at the smaller ``finetune_lr``;
       * ``"scratch"``: a new network with random weights (the same architecture), at ``lr``.

    3. Measure accuracy on the seed's test digits (about 360: one image is 0.3 %).

    The three methods see the same images, the same ``augment`` and the same number of steps,
    and nothing is chosen on the test images.

    Measured while building it (CPU, the defaults, seeds 0-2, 33 s on a busy 2-core machine),
    mean test accuracy for L = 1, 2, 5, 10, 20, 50: finetune 70.5, 76.3, 88.3, 92.8, 94.9,
    95.1 %; frozen 68.9, 74.6, 86.7, 91.5, 94.2, 94.7 %; scratch 61.6, 68.1, 87.9, 92.0, 94.1,
    93.8 %.  Fine-tuning is ahead of scratch by 9 and 8 points with one and two labels per class
    (every seed), by about a point beyond (2 seeds of 3).  (The pretrained network gets 99.4 %
    of its own letters right.)  With cmti10 as a 21st font (matplotlib 3.11 ships it, 3.10 does
    not) the gains beyond two labels were 2-3 points: the small gains depend on such details.  The first version of this study pretrained on the digits 0-4 and reused
    the network for 5-9: there scratch won from two labels per class on, as 5 classes of about
    630 images teach narrower features than a new network learns from the target itself.

    Returns
    -------
    TransferResult (``accuracy[method]`` of shape (L, S)); print ``result.table()``
    """
    from dlcourse.cnn.glyphs import glyph_images
    from dlcourse.data import load_digits
    from dlcourse.runtime import device as best_device
    device = device or best_device()
    labels_per_class, seeds = tuple(int(v) for v in labels_per_class), tuple(int(s) for s in seeds)
    accuracy = {m: np.zeros((len(labels_per_class), len(seeds))) for m in TRANSFER_METHODS}
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=1 + len(seeds) * len(labels_per_class) * len(TRANSFER_METHODS), desc="transfer study")

    x_source, y_source = glyph_images(variants=variants, seed=0, device=device)   # (G, 1, 8, 8), (G,)
    num_letters = int(y_source.max()) + 1
    with _fork_rng(device):
        torch.manual_seed(0)
        pretrained = SmallCNN(1, num_letters, width=width).to(device)
        _fit_steps(pretrained, x_source, y_source, pretrain_steps, lr, 64, augment, np.random.default_rng(0))
    pretrain_accuracy = evaluate_cnn(pretrained, x_source, y_source)[1]
    if bar is not None:
        bar.update()

    for j, s in enumerate(seeds):
        d = load_digits(s)
        x_pool = torch.as_tensor(digits_images(d.x_train), dtype=torch.float32, device=device)   # (N, 1, 8, 8)
        y_pool = torch.as_tensor(d.y_train, dtype=torch.long, device=device)
        x_test = torch.as_tensor(digits_images(d.x_test), dtype=torch.float32, device=device)
        y_test = torch.as_tensor(d.y_test, dtype=torch.long, device=device)
        order = np.random.default_rng(s).permutation(len(y_pool))
        for i, count in enumerate(labels_per_class):
            idx = torch.from_numpy(_few_labels(d.y_train, count, order)).to(device)
            for method in TRANSFER_METHODS:
                with _fork_rng(device):
                    torch.manual_seed(1000 + s)  # the same new dense layer for "frozen" and "finetune"
                    if method == "scratch":
                        model = SmallCNN(1, 10, width=width).to(device)
                    else:
                        model = copy.deepcopy(pretrained)
                        model.fc = nn.Linear(model.num_features, 10).to(device)
                    if method == "frozen":
                        for name, p in model.named_parameters():
                            p.requires_grad_(name.startswith("fc."))
                    _fit_steps(model, x_pool[idx], y_pool[idx], steps, lr, min(64, len(idx)), augment,
                               np.random.default_rng(s), body_lr=finetune_lr if method == "finetune" else None)
                accuracy[method][i, j] = evaluate_cnn(model, x_test, y_test)[1]
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return TransferResult(labels_per_class, seeds, accuracy, pretrain_accuracy, len(y_source),
                          time.perf_counter() - start)


# --------------------------------------------------------------------------- scaling up on a GPU

@dataclass
class ScaleUpResult:
    """What :func:`scale_up` measured (seconds are training steps only, no evaluation)."""
    dataset: str
    device: str
    n_train: int
    cpu_seconds_per_epoch: Optional[float]   # extrapolated from a few timed CPU steps; None if not timed
    epoch_seconds: list[float]               # each epoch on ``device`` (the first includes warm-up)
    test_acc: float
    history: CNNHistory = field(repr=False, default=None)

    @property
    def speedup(self) -> Optional[float]:
        """CPU time per epoch over the device's fastest epoch."""
        if self.cpu_seconds_per_epoch is None or not self.epoch_seconds:
            return None
        return self.cpu_seconds_per_epoch / min(self.epoch_seconds)


def _scale_up_data():
    """Fashion-MNIST as (N, 1, 28, 28), or the digits as (N, 1, 8, 8) when it cannot be downloaded."""
    from dlcourse.data import DownloadError, load_digits, load_fashion_mnist
    try:
        x_train, y_train = load_fashion_mnist("train")
        x_test, y_test = load_fashion_mnist("test")
        return "Fashion-MNIST", x_train[:, None], y_train, x_test[:, None], y_test   # (N, 1, 28, 28)
    except DownloadError as err:
        print(f"Fashion-MNIST is not available ({str(err).splitlines()[0]}); using the digits instead.")
        d = load_digits(0)
        return ("digits", digits_images(np.concatenate([d.x_train, d.x_val])),
                np.concatenate([d.y_train, d.y_val]), digits_images(d.x_test), d.y_test)


def _time_cpu_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int,
                    lr: float) -> float:
    """Seconds per training step on the CPU (after one untimed warm-up step), on a copy of ``model``."""
    model = copy.deepcopy(model).cpu().train()
    opt = build_optimizer(model, "adamw", lr=lr)
    xb, yb = x[:batch_size].cpu(), y[:batch_size].cpu()
    seconds = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds[1:]))


def scale_up(data=None, *, epochs: int = 3, batch_size: int = 256, lr: float = 3e-3,
             widths: Sequence[int] = (32, 64, 128), blocks_per_stage: int = 1, cpu_steps: int = 5,
             augment: Optional[Callable] = None, seed: int = 0, device: Optional[str] = None,
             run_on_cpu: bool = False, progress: bool = False) -> Optional[ScaleUpResult]:
    """Train :class:`ResidualCNN` on Fashion-MNIST on the GPU, and print CPU vs GPU time per epoch.

    Without a GPU this does nothing (it prints why and returns None) unless ``run_on_cpu``:
    an epoch of 60,000 images through a residual network takes minutes on a laptop's CPU.

    The CPU time per epoch is measured on ``cpu_steps`` training steps of one batch (the median,
    after a warm-up step) at the course's thread setting, and multiplied by the steps of an
    epoch: a whole CPU epoch would cost more than the lesson's budget.  The GPU epochs are
    timed whole (steps only, the data already on the GPU); the first includes cuDNN's
    autotuning and memory allocation, so the fastest is compared.

    Parameters
    ----------
    data : ``(x_train, y_train, x_test, y_test)`` with x as (N, C, H_img, W_img) float32; default
        Fashion-MNIST (downloaded once, about 30 MB), or the digits when offline
    epochs, batch_size, lr : the training run on ``device`` (AdamW, cosine schedule)
    widths, blocks_per_stage : the :class:`ResidualCNN`
    cpu_steps : CPU steps to time (0: do not time the CPU)
    augment : as :func:`train_cnn` (e.g. ``augmenter(max_shift=2, max_degrees=0)``)
    device : default ``dlcourse.device()``
    run_on_cpu : train even when ``device`` is the CPU (for tests, on tiny data)

    Returns
    -------
    ScaleUpResult, or None when skipped
    """
    from dlcourse.runtime import scale_up_device
    device = scale_up_device(device, run_on_cpu)
    if device is None:
        return None
    if data is None:
        name, x_train, y_train, x_test, y_test = _scale_up_data()
    else:
        name, (x_train, y_train, x_test, y_test) = "given data", data
    x_train = torch.as_tensor(x_train, dtype=torch.float32)                 # (N, C, H_img, W_img)
    y_train = torch.as_tensor(y_train, dtype=torch.long)
    n, c_in = x_train.shape[:2]
    k = int(max(int(y_train.max()), int(np.max(np.asarray(y_test))))) + 1
    with _fork_rng(device):
        torch.manual_seed(seed)
        model = ResidualCNN(c_in, k, widths=widths, blocks_per_stage=blocks_per_stage)
    print(f"{name}: {n:,} training images of {tuple(x_train.shape[1:])}, ResidualCNN(widths={tuple(widths)}), "
          f"batch {batch_size}, {math.ceil(n / batch_size)} steps per epoch")

    cpu_epoch = None
    if cpu_steps > 0:
        per_step = _time_cpu_steps(model, x_train, y_train, cpu_steps, batch_size, lr)
        cpu_epoch = per_step * math.ceil(n / batch_size)
        print(f"  cpu ({torch.get_num_threads()} thread(s)): {cpu_epoch:8.2f} s per epoch "
              f"(median of {cpu_steps} steps x {math.ceil(n / batch_size)} steps)")

    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # let cuDNN pick the fastest algorithms for these shapes
    try:
        model, history = train_cnn(x_train, y_train, x_test, y_test, model=model, epochs=epochs, lr=lr,
                                   batch_size=batch_size, schedule="cosine", augment=augment, seed=seed,
                                   device=device, progress=progress)
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
    for e, seconds in enumerate(history.epoch_seconds, 1):
        print(f"  {device} epoch {e}: {seconds:8.2f} s{'  (includes warm-up)' if e == 1 else ''}, "
              f"test accuracy {history.val_acc[e]:.2%}")
    result = ScaleUpResult(name, str(device), n, cpu_epoch, list(history.epoch_seconds), history.val_acc[-1],
                           history)
    if result.speedup is not None:
        print(f"  {device} is {result.speedup:.1f}x faster than the CPU per epoch")
    return result
