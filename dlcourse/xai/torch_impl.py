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
           "logits", "logit_gradient", "saliency", "gradient_x_input", "smoothgrad", "integrated_gradients",
           "occlusion", "default_layer", "layer_activations_and_grads", "grad_cam", "METHODS", "methods_for",
           "RandomizationResult", "cascading_randomization", "CurveResult", "deletion_insertion"]


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


# --------------------------------------------------------------------------- gradient attributions

def _targets(target, n: int, device) -> torch.Tensor:
    """``target`` (one class, or one per row) as an int64 tensor of shape (N,) on ``device``."""
    t = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target, device=device)
    return torch.broadcast_to(t.to(torch.int64), (n,))


def _prepare(model: nn.Module, x, target):
    """(input as the model wants it, the caller's shape to give maps back in, targets (N,))."""
    shape = tuple(np.shape(x)) if not torch.is_tensor(x) else tuple(x.shape)
    xm = model_input(model, x)
    return xm, shape, _targets(target, xm.shape[0], xm.device)


def _logit_grad(model: nn.Module, xm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """d (sum_n f_{t_n}(x_n)) / dx for inputs already in the model's shape: one forward, one backward."""
    with torch.enable_grad():
        xr = xm.detach().requires_grad_(True)
        out = model(xr)                                                   # (N, K)
        picked = out.gather(1, t[:, None]).sum()                          # sum_n f_{t_n}(x_n)
        (grad,) = torch.autograd.grad(picked, xr)
    return grad


def logit_gradient(model: nn.Module, x, target) -> torch.Tensor:
    """``d f_t(x) / dx`` by autograd: the gradient of the chosen class logit with respect to the input.

    Summing the selected logits of the batch gives every row its own gradient in one
    backward pass (row n's logit depends on row n's input only, in eval mode).  Works for
    any model; only the input gets a gradient (``torch.autograd.grad``: nothing accumulates
    in the parameters' ``.grad``).

    Parameters
    ----------
    model : maps (N, ...) inputs to (N, K) logits
    x : (N, D) or (N, C, H, W) tensor or array (reshaped for the model by :func:`model_input`)
    target : int, or (N,) ints

    Returns
    -------
    grad : tensor of x's shape, in the model's dtype and on its device
    """
    xm, shape, t = _prepare(model, x, target)
    return _logit_grad(model, xm, t).reshape(shape)


def saliency(model: nn.Module, x, target, absolute: bool = True) -> torch.Tensor:
    """``|d f_t / dx|`` (Simonyan et al. 2014; Captum's ``Saliency(abs=True)``); signed if not ``absolute``.

    x : (N, D) or (N, C, H, W); target : int or (N,).  Returns a map of x's shape.
    """
    g = logit_gradient(model, x, target)
    return g.abs() if absolute else g


def gradient_x_input(model: nn.Module, x, target) -> torch.Tensor:
    """``x * d f_t / dx`` (Captum's ``InputXGradient``).  x : (N, D) or (N, C, H, W); returns x's shape."""
    xm, shape, t = _prepare(model, x, target)
    return (xm * _logit_grad(model, xm, t)).reshape(shape)


def smoothgrad(model: nn.Module, x, target, n_samples: int = 50, sigma: float = 0.15, noise=None,
               generator: Optional[torch.Generator] = None, absolute: Optional[str] = None) -> torch.Tensor:
    """SmoothGrad: the mean gradient at ``n_samples`` noisy copies ``x + sigma * eps_s`` (Smilkov et al. 2017).

    All S * N copies go through the model in one batch (one forward, one backward).
    ``absolute`` as in :func:`dlcourse.xai.numpy_impl.smoothgrad`: None (the mean of the signed
    gradients), ``"after"`` (``|mean|``) or ``"before"`` (``mean |g|``, Captum's NoiseTunnel over
    ``Saliency``).

    Parameters
    ----------
    model : maps inputs to (N, K) logits
    x : (N, D) or (N, C, H, W)
    target : int or (N,)
    n_samples, sigma : S and the noise's standard deviation (input units)
    noise : optional eps of shape (S, *x.shape) (tensor or array); given, it replaces the draw
        (pass numpy_impl's ``rng.standard_normal((S, N, D))`` to get numpy_impl's result)
    generator : the torch generator of the draw (the global one if None)
    absolute : None, "after" or "before"

    Returns
    -------
    attributions : tensor of x's shape
    """
    if absolute not in (None, "after", "before"):
        raise ValueError(f"absolute must be None, 'after' or 'before', not {absolute!r}")
    xm, shape, t = _prepare(model, x, target)
    n = xm.shape[0]
    if noise is None:
        gen_device = generator.device if generator is not None else xm.device
        noise = torch.randn((n_samples, *shape), generator=generator, dtype=xm.dtype, device=gen_device)
    noise = torch.as_tensor(noise, device=xm.device).to(xm.dtype)
    s = noise.shape[0]
    noisy = xm.unsqueeze(0) + sigma * noise.reshape(s, *xm.shape)             # (S, N, ...)
    grads = _logit_grad(model, noisy.reshape(s * n, *xm.shape[1:]), t.repeat(s)).reshape(s, *xm.shape)
    if absolute == "before":
        out = grads.abs().mean(0)
    else:
        out = grads.mean(0)
        out = out.abs() if absolute == "after" else out
    return out.reshape(shape)


def integrated_gradients(model: nn.Module, x, target, baseline=None, steps: int = 50,
                         rule: str = "gausslegendre",
                         internal_batch: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients (Sundararajan et al. 2017) and its completeness error, by autograd.

    ``attr = (x - x') * sum_k w_k grad f_t(x' + a_k (x - x'))`` with the nodes and weights of
    :func:`dlcourse.xai.numpy_impl.ig_rule` (every rule's weights sum to 1), and
    ``delta = sum attr - (f_t(x) - f_t(x'))``.  Captum's ``IntegratedGradients`` with
    ``method="gausslegendre"`` uses the same nodes and weights.

    Parameters
    ----------
    model : maps inputs to (N, K) logits
    x : (N, D) or (N, C, H, W)
    target : int or (N,)
    baseline : None (zeros: a black image), a scalar, or a tensor broadcastable to x
    steps : S, the points on the path (gradient evaluations per input)
    rule : one of ``numpy_impl.IG_RULES``
    internal_batch : at most this many path points per forward/backward pass (None: all S at
        once, S * N rows); smaller batches save memory and give the same result

    Returns
    -------
    attributions : tensor of x's shape
    delta : tensor of shape (N,), the completeness error
    """
    from dlcourse.xai.numpy_impl import ig_rule
    xm, shape, t = _prepare(model, x, target)
    n = xm.shape[0]
    if baseline is None:
        base = torch.zeros_like(xm)
    else:
        base = torch.as_tensor(baseline, device=xm.device).to(xm.dtype)
        base = torch.broadcast_to(base.reshape(shape) if base.numel() == xm.numel() else base, shape)
        base = base.reshape(xm.shape)
    alphas, weights = (torch.as_tensor(a, device=xm.device).to(xm.dtype) for a in ig_rule(rule, steps))
    s = len(alphas)
    diff = xm - base                                                          # (N, ...)
    view = (-1,) + (1,) * xm.ndim
    chunk = s if internal_batch is None else max(1, int(internal_batch))
    avg_grad = torch.zeros_like(xm)
    for begin in range(0, s, chunk):
        a, w = alphas[begin:begin + chunk], weights[begin:begin + chunk]
        k = len(a)
        path = base.unsqueeze(0) + a.reshape(view) * diff.unsqueeze(0)          # (k, N, ...)
        g = _logit_grad(model, path.reshape(k * n, *xm.shape[1:]), t.repeat(k)).reshape(k, *xm.shape)
        avg_grad = avg_grad + torch.tensordot(w, g, dims=1)                   # sum_k w_k g_k
    attributions = diff * avg_grad
    with torch.no_grad():
        ends = model(torch.cat([xm, base]))                                   # (2N, K)
    rows = torch.arange(n, device=xm.device)
    change = ends[rows, t] - ends[n + rows, t]                                # f_t(x) - f_t(x')
    delta = attributions.reshape(n, -1).sum(1) - change
    return attributions.reshape(shape), delta


# --------------------------------------------------------------------------- occlusion and Grad-CAM

def _as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, D) square digits -> (N, 1, side, side); images pass unchanged."""
    if x.ndim == 2:
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise ValueError(f"{x.shape[1]} features is no side x side image")
        return x.reshape(-1, 1, side, side)
    return x


def occlusion(model: nn.Module, x, target, patch: int = 2, stride: int = 1,
              baseline: float = 0.0) -> tuple[torch.Tensor, int]:
    """Occlusion: slide a ``patch x patch`` square of ``baseline`` values over each image.

    The twin of :func:`dlcourse.xai.numpy_impl.occlusion` for a batch and any model: for each
    window W (top-left corners 0, stride, 2 stride, ... while it fits; all channels at once)
    the drop ``f_t(x) - f_t(x with W set to baseline)`` is credited to the pixels of W, and a
    pixel's attribution is the MEAN drop over the windows covering it (0 if none does);
    Captum's ``Occlusion`` with ``sliding_window_shapes=(C, patch, patch)``,
    ``strides=(C, stride, stride)`` when the windows tile the image ((H - patch) % stride == 0;
    otherwise Captum adds a last window hanging over the edge, cropped).  Every image and window goes through the model in ONE
    forward pass of N * (windows + 1) rows.

    Parameters
    ----------
    model : maps inputs to (N, K) logits
    x : (N, D) square digits or (N, C, H, W) images
    target : int or (N,)
    patch, stride : window side and step in pixels
    baseline : the value of an occluded pixel (a scalar)

    Returns
    -------
    attributions : tensor of x's shape
    n_calls : model evaluations (rows through the model): N * (windows + 1)
    """
    xm, shape, t = _prepare(model, x, target)
    img = _as_images(xm)                                                      # (N, C, H, W)
    n, c, h, w = img.shape
    rows = range(0, h - patch + 1, stride)
    cols = range(0, w - patch + 1, stride)
    masks = torch.zeros((len(rows) * len(cols), h, w), dtype=torch.bool, device=img.device)   # (S, H, W)
    for j, (r, q) in enumerate((r, q) for r in rows for q in cols):
        masks[j, r:r + patch, q:q + patch] = True
    s = masks.shape[0]
    occluded = img.unsqueeze(1).repeat(1, s + 1, 1, 1, 1)                     # (N, S+1, C, H, W), slot 0: x
    fill = torch.as_tensor(baseline, dtype=img.dtype, device=img.device)
    occluded[:, 1:] = torch.where(masks[None, :, None], fill, occluded[:, 1:])
    batch = model_input(model, occluded.reshape(n * (s + 1), c, h, w))
    with torch.no_grad():
        scores = model(batch).reshape(n, s + 1, -1)                           # (N, S+1, K)
    picked = scores.gather(2, t[:, None, None].expand(n, s + 1, 1))[..., 0]   # (N, S+1)
    drops = picked[:, :1] - picked[:, 1:]                                     # (N, S)
    flat = masks.reshape(s, h * w).to(img.dtype)
    total = drops @ flat                                                      # (N, H*W)
    count = flat.sum(0)                                                       # (H*W,)
    per_pixel = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    attr = per_pixel.reshape(n, 1, h, w).expand(n, c, h, w)
    return attr.reshape(shape), n * (s + 1)


def default_layer(model: nn.Module) -> nn.Module:
    """Grad-CAM's default layer: ``model.conv2`` if there is one, else the last ``Conv2d``."""
    if isinstance(getattr(model, "conv2", None), nn.Conv2d):
        return model.conv2
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional layer; this model has none (an MLP?)")
    return convs[-1]


def layer_activations_and_grads(model: nn.Module, x, target,
                                layer: Optional[nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The OUTPUT of ``layer`` and the gradient of the target logit with respect to it, read with a hook.

    Returns A and dA = d f_t / dA, both (N, C, h, w) (detached).  For ``SmallCNN``'s default
    ``conv2`` this is the convolution's output BEFORE the ReLU (``features`` applies ``F.relu``
    as a function, outside the module), the same tensor Captum's ``LayerGradCam(model, model.conv2)``
    sees (``LayerGradCam(model, model.conv2).attribute(x, target, relu_attributions=True)`` equals
    :func:`grad_cam` with ``upsample=False``; Captum's default leaves out the ReLU).
    """
    layer = default_layer(model) if layer is None else layer
    xm, _, t = _prepare(model, x, target)
    seen = {}

    def keep(module, inputs, output):
        seen["A"] = output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            out = model(xm.detach().requires_grad_(True))
            (grad,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), seen["A"])
    finally:
        handle.remove()
    return seen["A"].detach(), grad


def grad_cam(model: nn.Module, x, target, layer: Optional[nn.Module] = None, upsample: bool = True,
             mode: str = "bilinear") -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): where in a convolution's feature maps the class evidence is.

    With A (N, C, h, w) the output of ``layer`` (default ``model.conv2``, pre-ReLU for SmallCNN,
    see :func:`layer_activations_and_grads`) and dA its gradient of the target logit::

        alpha_k = mean over (h, w) of dA_k         (N, C)   how much channel k matters
        map     = ReLU(sum_k alpha_k A_k)          (N, h, w)

    Parameters
    ----------
    model : a CNN mapping images to (N, K) logits
    x : (N, D) digits or (N, C_in, H, W) images
    target : int or (N,)
    layer : the module whose output is explained
    upsample : resize the map to the input's (H, W) with ``F.interpolate`` (``mode``;
        ``align_corners=False`` for bilinear / bicubic), like Captum's
        ``LayerAttribution.interpolate``
    mode : the interpolation mode ("bilinear", "nearest", ...)

    Returns
    -------
    map : (N, 1, H, W) tensor when ``upsample``, else (N, h, w); non-negative
    """
    a, da = layer_activations_and_grads(model, x, target, layer)
    alpha = da.mean(dim=(2, 3), keepdim=True)                                 # (N, C, 1, 1)
    cam = F.relu((alpha * a).sum(1))                                          # (N, h, w)
    if not upsample:
        return cam
    size = model_input(model, x).shape[-2:]
    corners = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(cam[:, None], size=tuple(size), mode=mode, **corners)   # (N, 1, H, W)


def _grad_cam_map(model, x, target):
    shape = tuple(np.shape(x)) if not torch.is_tensor(x) else tuple(x.shape)
    return grad_cam(model, x, target).reshape(shape)


_SMOOTHGRAD_SEED = 0


def _smoothgrad_map(model, x, target):
    gen = torch.Generator(device=_model_device(model)).manual_seed(_SMOOTHGRAD_SEED)
    return smoothgrad(model, x, target, generator=gen)


# name -> (model, x, target) -> map of x's shape.  SmoothGrad: 50 copies, sigma 0.15, signed mean,
# a generator seeded 0 (the same noise on every call); IG: 50 Gauss-Legendre steps from zeros;
# occlusion: 2 x 2 patches, stride 1, baseline 0; Grad-CAM: conv2, bilinear (CNNs only).
METHODS: dict[str, Callable] = {
    "saliency": saliency,
    "gradient x input": gradient_x_input,
    "SmoothGrad": _smoothgrad_map,
    "Integrated Gradients": lambda model, x, target: integrated_gradients(model, x, target)[0],
    "occlusion": lambda model, x, target: occlusion(model, x, target)[0],
    "Grad-CAM": _grad_cam_map,
}


def methods_for(model: nn.Module) -> dict[str, Callable]:
    """:data:`METHODS` that apply to ``model``: all of them for a CNN, all but Grad-CAM for an MLP."""
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return {k: f for k, f in METHODS.items() if k != "Grad-CAM" or has_conv}


# --------------------------------------------------------------------------- sanity checks

class RandomizationResult:
    """What :func:`cascading_randomization` measured.

    Attributes
    ----------
    stages : the L layer names, in the order they were re-initialized (last layer first);
        after stage l every layer up to and including stages[l] is random
    methods : the M method names
    spearman_abs : (M, L) ndarray, median over the examples of Spearman(|trained map|, |map|)
    spearman_signed : (M, L) ndarray, the same for the signed maps
    maps : {method: tensor (L + 1, N, ...)}, index 0 the trained model's maps
    """

    def __init__(self, stages, methods, spearman_abs, spearman_signed, maps):
        self.stages, self.methods = list(stages), list(methods)
        self.spearman_abs, self.spearman_signed, self.maps = spearman_abs, spearman_signed, maps

    def table(self, signed: bool = False) -> str:
        """A markdown table: one row per method, one column per stage (median Spearman)."""
        values = self.spearman_signed if signed else self.spearman_abs
        head = "| method | " + " | ".join(f"+{s}" for s in self.stages) + " |"
        lines = [head, "|---" * (len(self.stages) + 1) + "|"]
        for name, row in zip(self.methods, values):
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"RandomizationResult(stages={self.stages}, methods={self.methods})"


def _parametrized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the modules that own parameters themselves, in registration order."""
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")]


def _median_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from dlcourse.xai.numpy_impl import spearman
    a = a.detach().cpu().double().reshape(a.shape[0], -1).numpy()
    b = b.detach().cpu().double().reshape(b.shape[0], -1).numpy()
    rhos = np.array([spearman(p, q) for p, q in zip(a, b)])
    return float(np.nanmedian(rhos)) if np.isfinite(rhos).any() else float("nan")


def cascading_randomization(model: nn.Module, x, target, methods: Optional[dict] = None,
                            seed: int = 0) -> RandomizationResult:
    """The model-parameter randomization test (Adebayo et al. 2018, "Sanity checks for saliency maps").

    An explanation of the MODEL should change when the model's weights are destroyed.  On a
    deep copy (the given model is left as it is), the layers with parameters are re-initialized
    cumulatively from the LAST to the first (``reset_parameters()`` under ``torch.manual_seed(seed
    + l)``, in a forked RNG), and after each stage every method's map is compared with the
    trained model's map: Spearman's rank correlation per example, of the absolute maps and of
    the signed maps, then the median over the examples.  A method whose correlation stays high
    when the network is random is explaining the INPUT, not the model.

    Gradient x input (and Integrated Gradients from a zero baseline, which multiplies by
    ``x - 0``) keeps a high correlation for that reason: the map is ``x * g``, zero wherever the
    pixel is zero, so even with a random ``g`` it inherits the digit's shape (the ranks of
    ``|x g|`` follow the stroke), while the plain gradient ``g`` itself decorrelates.  Measured on
    50 test digits (true labels), |map|, everything re-initialized: digits_mlp saliency 0.03,
    SmoothGrad 0.06, gradient x input 0.91, IG 0.91, occlusion 0.62; digits_cnn saliency 0.15,
    gradient x input 0.93, IG 0.92 (``python benchmarks/bench_xai.py --sanity``).  The SIGNED maps
    of gradient x input and IG do decorrelate (0.01 and -0.02 on the MLP): the random gradient's
    signs are new, only the support (where x is not 0) is inherited.

    An example whose map is constant (an all-zero Grad-CAM, say) has no ranks: its NaN is left
    out of the median.

    Parameters
    ----------
    model : a trained model (eval mode)
    x : (N, D) or (N, C, H, W) inputs
    target : int or (N,): the class explained (e.g. the true labels)
    methods : {name: (model, x, target) -> map}; default :func:`methods_for` (model)
    seed : seeds the re-initializations

    Returns
    -------
    :class:`RandomizationResult` (stages, the (M, L) tables, the maps)
    """
    methods = methods_for(model) if methods is None else methods
    work = copy.deepcopy(model).eval()
    layers = _parametrized_layers(work)[::-1]
    stages = [name for name, _ in layers]
    trained = {k: f(work, x, target).detach() for k, f in methods.items()}
    maps = {k: [m] for k, m in trained.items()}
    s_abs = np.zeros((len(methods), len(stages)))
    s_signed = np.zeros_like(s_abs)
    device = str(_model_device(work))
    for j, (_, layer) in enumerate(layers):
        with _fork_rng(device):
            torch.manual_seed(seed + j)
            layer.reset_parameters()
        for i, (k, f) in enumerate(methods.items()):
            m = f(work, x, target).detach()
            maps[k].append(m)
            s_abs[i, j] = _median_spearman(trained[k].abs(), m.abs())
            s_signed[i, j] = _median_spearman(trained[k], m)
    return RandomizationResult(stages, list(methods), s_abs, s_signed,
                               {k: torch.stack(v) for k, v in maps.items()})


class CurveResult:
    """What :func:`deletion_insertion` measured.

    fractions : (S,) ndarray, the fraction of pixels deleted (or inserted), 0 .. 1
    probabilities : (N, S) ndarray, the softmax probability of the target class
    auc : (N,) ndarray, the area under each curve (trapezoid rule over the fractions)
    """

    def __init__(self, mode, fractions, probabilities, auc):
        self.mode, self.fractions, self.probabilities, self.auc = mode, fractions, probabilities, auc

    def __repr__(self) -> str:
        return f"CurveResult({self.mode}, mean AUC {self.auc.mean():.3f})"


def deletion_insertion(model: nn.Module, x, target, attribution, mode: str = "deletion",
                       steps: Optional[int] = None, baseline=0.0) -> CurveResult:
    """Deletion and insertion curves (Petsiuk et al. 2018, RISE): is the top-ranked evidence decisive?

    The pixels are ranked by ``attribution`` (descending; ties keep the pixel order).
    *Deletion* sets the top fraction f of them to ``baseline`` and reads the softmax probability
    of the target: a faithful map makes it fall fast (a SMALL area under the curve is good).
    *Insertion* starts from the baseline image and restores the top fraction: the probability
    should rise fast (a LARGE area is good).  Compare with a random ranking.

    Parameters
    ----------
    model : maps inputs to (N, K) logits
    x : (N, D) or (N, C, H, W)
    target : int or (N,)
    attribution : map of x's shape (tensor or array); larger = more important
    mode : "deletion" or "insertion"
    steps : S, the number of fractions, evenly spaced over [0, 1] (None: every pixel, D + 1)
    baseline : a scalar, or a tensor of x's shape (the "deleted" image)

    Returns
    -------
    :class:`CurveResult` (fractions (S,), probabilities (N, S), auc (N,)); all S * N images go
    through the model in one forward pass
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', not {mode!r}")
    xm, shape, t = _prepare(model, x, target)
    n = xm.shape[0]
    flat = xm.reshape(n, -1)                                                   # (N, D)
    d = flat.shape[1]
    base = torch.broadcast_to(torch.as_tensor(baseline, device=xm.device).to(xm.dtype).reshape(
        (n, d) if torch.as_tensor(baseline).numel() == n * d else ()), (n, d))
    attr = torch.as_tensor(attribution, device=xm.device).reshape(n, d).to(torch.float64)
    order = torch.argsort(-attr, dim=1, stable=True)                           # (N, D) most important first
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d, device=xm.device).expand(n, d))   # rank of each pixel
    s = d + 1 if steps is None else int(steps)
    fractions = np.linspace(0.0, 1.0, s)
    counts = torch.as_tensor(np.rint(fractions * d).astype(np.int64), device=xm.device)   # (S,) pixels changed
    changed = rank.unsqueeze(0) < counts[:, None, None]                        # (S, N, D)
    start, end = (flat, base) if mode == "deletion" else (base, flat)
    images = torch.where(changed, end.unsqueeze(0), start.unsqueeze(0))        # (S, N, D)
    with torch.no_grad():
        out = model(model_input(model, images.reshape(s * n, *xm.shape[1:])))
    probs = out.softmax(1).reshape(s, n, -1).gather(2, t.repeat(s, 1)[..., None])[..., 0].T   # (N, S)
    probs = probs.detach().cpu().double().numpy()
    auc = np.trapezoid(probs, fractions, axis=1) if hasattr(np, "trapezoid") else np.trapz(probs, fractions, axis=1)
    return CurveResult(mode, fractions, probs, auc)
