"""The PyTorch side of chapter 09: attributions for any model, Grad-CAM, sanity checks, deletion/insertion.

:mod:`dlcourse.xai.numpy_impl` computes every attribution by hand for a ReLU MLP; here the same
methods run through autograd, so they work for **any** differentiable model (the MLP, the CNN):

* the course's two digits models, trained once per process and cached: :func:`digits_mlp`
  (``nn.Sequential(Linear(64, 32), ReLU(), Linear(32, 10))``, whose ``state_dict`` loads into
  ``numpy_impl`` as-is) and :func:`digits_cnn` (chapter 05's ``SmallCNN``); :func:`model_input`
  gives a model the input shape it expects, :func:`accuracy`;
* gradient methods: :func:`logit_gradient` (d f_t / dx by autograd), :func:`saliency`,
  :func:`gradient_x_input`, :func:`smoothgrad`, :func:`integrated_gradients` (numpy_impl's
  quadrature rules, one batched backward pass for all the steps);
* :func:`occlusion` (all the windows in one forward pass) and :func:`grad_cam` (Selvaraju et al.
  2017: the activations of a convolution and their gradient, read with hooks);
* :data:`METHODS`, the methods by name with one signature ``(model, x, target) -> map``;
* sanity checks: :func:`cascading_randomization` (Adebayo et al. 2018: does the map change when
  the weights are destroyed?) and :func:`deletion_insertion` (Petsiuk et al. 2018: does deleting
  the top-ranked pixels first destroy the prediction fastest?).

Every attribution is a map with the SAME shape as the input x, of the chosen class LOGIT
``f_t(x)`` (not the loss, not the softmax); ``target`` is an int or an (N,) int array/tensor.
Tensors in, tensors out (NumPy arrays are accepted); the work runs on the model's device, in
the model's dtype (a float64 copy of a model gives float64 maps).

Dimension letters (the course glossary)
---------------------------------------
N    batch size (inputs explained at once)
D    input features (64 for the 8x8 digits)
C    channels (of an image or of a convolution's output)
H, W image height and width (8), or h, w of a convolution's output
K    classes
S    steps (of a path integral or a curve) or samples (noisy copies, windows)
L    layers (stages of a randomization)
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.torch_impl import _fork_rng, _model_device

configure_torch()

__all__ = ["digits_mlp", "digits_cnn", "MLP_RECIPE", "CNN_RECIPE", "is_image_model", "model_input", "accuracy",
           "logits"]


# --------------------------------------------------------------------------- the course's models

# digits_mlp: Adam, lr 1e-2, batches of 64, 30 epochs, seeded (about 1 s on one CPU thread).
MLP_RECIPE = dict(hidden=32, epochs=30, lr=1e-2, batch_size=64)
# digits_cnn: chapter 05's DIGITS_CNN recipe with 15 epochs instead of 30 (seed 0: 98.9 % test,
# about 3 s on one thread; the full 30-epoch recipe gives 99.3 % in about 11 s).
CNN_RECIPE = dict(epochs=15)


def digits_mlp(seed: int = 0) -> nn.Sequential:
    """The course's digits MLP, ``Sequential(Linear(64, 32), ReLU(), Linear(32, 10))``, trained and cached.

    Trained once per process and seed on ``load_digits(seed)``'s training split (Adam,
    :data:`MLP_RECIPE`), on the CPU, in eval mode.  The SAME object comes back on every call:
    never modify it (``copy.deepcopy`` it first, e.g. ``.double()`` or training a copy).
    Its ``state_dict`` (keys ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ``"2.bias"``) loads into
    :mod:`dlcourse.xai.numpy_impl` as ``{k: v.detach().double().numpy()}``.

    Shape: (N, 64) -> (N, 10) logits.
    """
    return _trained_mlp(int(seed))


@functools.lru_cache(maxsize=4)
def _trained_mlp(seed: int) -> nn.Sequential:
    from dlcourse.data import load_digits
    d = load_digits(seed)
    r = MLP_RECIPE
    x = torch.as_tensor(d.x_train)                       # (N, 64)
    y = torch.as_tensor(d.y_train)                       # (N,)
    with _fork_rng("cpu"), torch.enable_grad():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, r["hidden"]), nn.ReLU(), nn.Linear(r["hidden"], 10))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=r["lr"])
        for _ in range(r["epochs"]):
            order = torch.randperm(len(x), generator=gen)
            for begin in range(0, len(x), r["batch_size"]):
                idx = order[begin:begin + r["batch_size"]]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def digits_cnn(seed: int = 0) -> nn.Module:
    """The course's digits CNN: chapter 05's ``SmallCNN`` (conv1, conv2, fc), trained and cached.

    ``dlcourse.cnn.torch_impl.train_digits_cnn(seed, device="cpu", **CNN_RECIPE)``: the lesson's
    recipe with 15 epochs (seed 0: 98.9 % test accuracy in about 3 s on one thread), once per
    process and seed, in eval mode.  The SAME object comes back on every call: never modify it
    (``copy.deepcopy`` it first).

    Shape: (N, 1, 8, 8) images -> (N, 10) logits (:func:`model_input` reshapes (N, 64) digits).
    """
    return _trained_cnn(int(seed))


@functools.lru_cache(maxsize=4)
def _trained_cnn(seed: int) -> nn.Module:
    from dlcourse.cnn.torch_impl import train_digits_cnn
    with torch.enable_grad():
        model, _, _ = train_digits_cnn(seed, device="cpu", **CNN_RECIPE)
    model.zero_grad(set_to_none=True)
    return model.eval()


def _first_layer(model: nn.Module) -> Optional[nn.Module]:
    """The first module with parameters (in registration order)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m
    return None


def is_image_model(model: nn.Module) -> bool:
    """True when the model's first layer is a ``Conv2d`` (it wants (N, C, H, W) images)."""
    return isinstance(_first_layer(model), nn.Conv2d)


def model_input(model: nn.Module, x) -> torch.Tensor:
    """``x`` as the tensor ``model`` expects, on its device and in its dtype.

    A Conv2d-first model (the CNN) gets images: flat digits (N, 64) become (N, 1, 8, 8); a
    Linear-first model (the MLP) gets flat rows: images (N, 1, 8, 8) become (N, 64).  Anything
    else passes unchanged.  NumPy arrays are converted.
    """
    p = next(model.parameters())
    x = torch.as_tensor(x, device=p.device).to(p.dtype)
    first = _first_layer(model)
    if isinstance(first, nn.Conv2d) and x.ndim == 2:
        side = int(round(x.shape[1] ** 0.5))
        x = x.reshape(-1, 1, side, side)                  # (N, D) -> (N, 1, H, W)
    elif isinstance(first, nn.Linear) and x.ndim > 2:
        x = x.reshape(x.shape[0], -1)                     # (N, C, H, W) -> (N, D)
    return x


def logits(model: nn.Module, x) -> torch.Tensor:
    """The model's logits (N, K) for ``x`` (flat or images, see :func:`model_input`), no gradient."""
    with torch.no_grad():
        return model(model_input(model, x))


def accuracy(model: nn.Module, x, y) -> float:
    """Fraction of ``x`` (N, 64) or (N, 1, 8, 8) that ``model`` classifies as ``y`` (N,)."""
    y = torch.as_tensor(y, device=_model_device(model))
    return float((logits(model, x).argmax(1) == y).double().mean())
