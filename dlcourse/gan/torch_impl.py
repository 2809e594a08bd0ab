"""The PyTorch side of chapter 08: autoencoders, a VAE, GANs, and how to measure a generator.

:mod:`dlcourse.gan.numpy_impl` writes the ring GAN's forward and backward passes by hand; here
the same ideas run in PyTorch, on the 8 x 8 digits (course code, written here):

* the ring twins: :class:`RingMLP` (fc1, fc2, fc3 with LeakyReLU(0.2); its ``state_dict`` keys
  are the NumPy parameter names), :func:`ring_generator`, :func:`ring_discriminator`,
  :func:`load_params` / :func:`params_of`;
* the losses from logits (:func:`d_loss_from_logits`, :func:`g_loss_nonsaturating`,
  :func:`g_loss_minimax`), :func:`r1_penalty` with autograd and :func:`gan_step`, one training
  step of both networks with ``detach`` in the right place;
* the course's **feature network** for FID and IS: :func:`course_classifier` (an MLP trained on
  the digits' training split in half a second, cached), :func:`features`, :func:`class_probs`,
  and the twins :func:`fid` / :func:`inception_score` of the NumPy ones;
* autoencoders: :class:`Autoencoder`, :func:`train_autoencoder`, :func:`bottleneck_study`,
  :func:`latent_codes`, :func:`denoise_study`; the :class:`VAE` (:func:`train_vae`,
  :func:`sample_vae`, :func:`latent_analogy`);
* the digits GAN: :func:`digits_generator`, :func:`digits_discriminator`,
  :func:`train_digits_gan` (tqdm, a live-plot callback, FID over time, sample grids at fixed z),
  :func:`interpolate`, and :func:`scale_up` (a wider GAN on a GPU).

Dimension letters: N batch, D data dims (2 for the ring, 64 for 8x8 digits), Z latent size,
H hidden width, K modes / classes, F feature size.

Data ranges: GANs see digits as ``x * 2 - 1`` in [-1, 1] (the generator ends in tanh), and so
does the course classifier; autoencoders see them in [0, 1] (the decoder's logits go through a
sigmoid).
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.torch_impl import TrainingBudget, _fork_rng, _model_device, _sync

configure_torch()

__all__ = ["RingMLP", "ring_generator", "ring_discriminator", "load_params", "params_of",
           "d_loss_from_logits", "g_loss_nonsaturating", "g_loss_minimax", "r1_penalty", "gan_step",
           "DigitsClassifier", "course_classifier", "classifier_accuracy", "features", "class_probs",
           "fid", "inception_score", "digits_for_gan", "fid_sanity",
           "Autoencoder", "AEHistory", "train_autoencoder", "reconstruction_mse", "bottleneck_study",
           "latent_codes", "train_denoiser", "denoise_study",
           "VAE", "kl_gaussian", "reparameterize", "vae_loss", "train_vae", "sample_vae", "latent_analogy",
           "digits_generator", "digits_discriminator", "GanHistory", "train_digits_gan", "interpolate",
           "scale_up"]


# --------------------------------------------------------------------------- the ring twins

class RingMLP(nn.Module):
    """Linear -> LeakyReLU(0.2) -> Linear -> LeakyReLU(0.2) -> Linear, the networks of both GANs.

    The twin of :func:`dlcourse.gan.numpy_impl.mlp_forward`: its ``state_dict`` keys are
    ``fc1.weight`` (H, D_in), ``fc1.bias`` (H,), ``fc2.*``, ``fc3.weight`` (D_out, H),
    ``fc3.bias``, the NumPy parameter dict's keys.  ``tanh=True`` squashes the output into
    (-1, 1) (the digits generator).

    Parameters
    ----------
    sizes : (D_in, H, H, D_out), e.g. (2, 64, 64, 2) for the ring's generator
    tanh : end with tanh

    Shape: (N, D_in) -> (N, D_out).
    """

    def __init__(self, sizes: Sequence[int], tanh: bool = False):
        super().__init__()
        d_in, h1, h2, d_out = sizes
        self.sizes = tuple(sizes)
        self.fc1 = nn.Linear(d_in, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, d_out)
        self.act = nn.LeakyReLU(0.2)
        self.tanh = tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))            # (N, H)
        h = self.act(self.fc2(h))            # (N, H)
        out = self.fc3(h)                    # (N, D_out)
        return torch.tanh(out) if self.tanh else out


def ring_generator(hidden: int = 64, latent: int = 2) -> RingMLP:
    """G: z (N, Z) -> H -> H -> x (N, 2), linear output."""
    return RingMLP((latent, hidden, hidden, 2))


def ring_discriminator(hidden: int = 64) -> RingMLP:
    """D: x (N, 2) -> H -> H -> one logit (N, 1)."""
    return RingMLP((2, hidden, hidden, 1))


def load_params(module: nn.Module, numpy_params: dict) -> nn.Module:
    """Copy a NumPy parameter dict (keys = ``state_dict`` keys) into ``module``, in the arrays' dtype."""
    dtype = torch.from_numpy(np.asarray(next(iter(numpy_params.values())))).dtype
    module.to(dtype)
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in numpy_params.items()}
    module.load_state_dict(state)
    return module


def params_of(module: nn.Module) -> dict:
    """The module's parameters as a dict of NumPy arrays (copies), keyed like its ``state_dict``."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- losses, R1, one GAN step

def d_loss_from_logits(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss ``mean softplus(-s_real) + mean softplus(s_fake)``: BCE, labels 1 real, 0 fake.

    ``softplus(-s) = -log sigmoid(s)``, computed without forming ``sigmoid`` (stable for any s).
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss ``mean softplus(-s_fake)`` = ``-mean log D(G(z))``."""
    return F.softplus(-fake_logits).mean()


def g_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's minimax loss ``-mean softplus(s_fake)`` = ``mean log(1 - D(G(z)))``, minimised."""
    return -F.softplus(fake_logits).mean()


def r1_penalty(D: nn.Module, x_real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 = (gamma / 2) * mean over the real batch of ``||grad_x D(x)||^2`` (Mescheder et al. 2018).

    The input gradient is itself built with autograd and kept in the graph
    (``create_graph=True``), so ``R1.backward()`` differentiates it once more, with respect to
    D's parameters (a double backward).

    Parameters
    ----------
    D : the discriminator, (N, ...) -> (N, 1) logits
    x_real : (N, D) real samples (not modified; a copy that requires grad is used)
    gamma : the penalty's weight

    Returns
    -------
    scalar tensor
    """
    x = x_real.detach().requires_grad_(True)
    logits = D(x)                                                           # (N, 1)
    # d(sum of logits)/dx gives every sample's own gradient: sample n's logit depends on x_n only
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)       # (N, D)
    return gamma / 2 * grad.pow(2).flatten(1).sum(dim=1).mean()


def gan_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             x_real: torch.Tensor, z: torch.Tensor, r1_gamma: float = 0.0,
             g_loss: str = "nonsaturating") -> dict:
    """One training step of both networks: first D (with R1 on the real batch), then G.

    Parameters
    ----------
    G, D : generator (N, Z) -> (N, D), discriminator (N, D) -> (N, 1) logits
    opt_g, opt_d : their optimizers (each holds only its own network's parameters)
    x_real : (N, D) a real batch;  z : (N, Z) latent vectors
    r1_gamma : R1's weight (0: no penalty)
    g_loss : "nonsaturating" (``-log D(G(z))``) or "minimax" (``log(1 - D(G(z)))``)

    Returns
    -------
    dict of floats: ``d_loss`` (without R1), ``r1``, ``g_loss``
    """
    # 1. the discriminator step: real samples should get high logits, generated ones low
    x_fake = G(z)                                              # (N, D)
    real_logits = D(x_real)                                    # (N, 1)
    fake_logits = D(x_fake.detach())                           # detach: D's loss must not reach G
    loss_d = d_loss_from_logits(real_logits, fake_logits)
    r1 = r1_penalty(D, x_real, r1_gamma) if r1_gamma > 0 else torch.zeros((), device=x_real.device)
    opt_d.zero_grad(set_to_none=True)
    (loss_d + r1).backward()
    opt_d.step()

    # 2. the generator step, through the updated D (G's loss also fills D's .grad, which the
    #    next D step clears; opt_g only updates G)
    fake_logits = D(x_fake)                                    # (N, 1), now with a path back to G
    if g_loss == "nonsaturating":
        loss_g = g_loss_nonsaturating(fake_logits)
    elif g_loss == "minimax":
        loss_g = g_loss_minimax(fake_logits)
    else:
        raise ValueError(f"g_loss must be 'nonsaturating' or 'minimax', got {g_loss!r}")
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return dict(d_loss=float(loss_d.detach()), r1=float(r1.detach()), g_loss=float(loss_g.detach()))


# --------------------------------------------------------------------------- the course's feature network

def digits_for_gan(split: str = "train", device=None) -> torch.Tensor:
    """The digits of one split ("train", "val", "test") as a float32 tensor (N, 64) in [-1, 1]."""
    from dlcourse.data import load_digits
    data = load_digits()
    x = getattr(data, f"x_{split}")
    return torch.as_tensor(x * 2 - 1, dtype=torch.float32, device=device)


class DigitsClassifier(nn.Module):
    """64 -> 128 -> F=32 -> 10 logits, ReLU; the penultimate layer's 32 activations are the features.

    The stand-in for the Inception network of FID and IS, which is not available offline: its
    features and class probabilities only know 8 x 8 digits, so FID and IS values here are on
    their own scale and cannot be compared with papers' (ImageNet-Inception) numbers.

    Shape: (N, 64) in [-1, 1] -> (N, 10) logits;  ``features``: (N, 64) -> (N, F).
    """

    def __init__(self, hidden: int = 128, num_features: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_features), nn.ReLU())
        self.head = nn.Linear(num_features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)                  # (N, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))       # (N, 10)


def course_classifier(seed: int = 0, steps: int = 600) -> DigitsClassifier:
    """The course's digits classifier, trained once per process (cached) on the digits TRAIN split.

    Adam (lr 3e-3), batches of 128 drawn with a generator seeded by ``seed``, ``steps`` steps
    (~0.5 s on one CPU thread), on the CPU in float32: the same weights on every run and machine
    with the same torch.  Test accuracy (measured, seed 0): 96.7 % (:func:`classifier_accuracy`).
    Returned in eval mode with gradients off; don't train it further (it is shared).
    """
    return _trained_classifier(int(seed), int(steps))


@functools.lru_cache(maxsize=4)
def _trained_classifier(seed: int, steps: int) -> DigitsClassifier:
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = DigitsClassifier()
        gen = torch.Generator().manual_seed(seed)
        from dlcourse.data import load_digits
        data = load_digits()
        x = torch.as_tensor(data.x_train * 2 - 1)
        y = torch.as_tensor(data.y_train)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (128,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    model.requires_grad_(False)
    return model


def classifier_accuracy(seed: int = 0) -> float:
    """Test-split accuracy of :func:`course_classifier` (``seed``)."""
    from dlcourse.data import load_digits
    data = load_digits()
    with torch.no_grad():
        logits = course_classifier(seed)(digits_for_gan("test").cpu())
    return float((logits.argmax(1).numpy() == data.y_test).mean())


@torch.no_grad()
def _classifier_call(x, method: str, seed: int) -> torch.Tensor:
    x = torch.as_tensor(x)
    model = course_classifier(seed)
    out = getattr(model, method)(x.detach().reshape(len(x), 64).to("cpu", torch.float32))
    return out.to(x.device)


def features(x, seed: int = 0) -> torch.Tensor:
    """The course classifier's penultimate activations: (N, 64) in [-1, 1] -> (N, F=32) float32.

    Run on the CPU (it is small); the result comes back on ``x``'s device.
    """
    return _classifier_call(x, "features", seed)


def class_probs(x, seed: int = 0) -> torch.Tensor:
    """The course classifier's p(y | x): (N, 64) in [-1, 1] -> (N, 10), rows sum to 1."""
    return torch.softmax(_classifier_call(x, "forward", seed).double(), dim=1)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix via eigh; eigenvalues that round-off made negative -> 0."""
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def fid(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows, in float64.

    ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with the unbiased covariances (ddof 1,
    as ``np.cov(rowvar=False)`` and pytorch-fid) and ``Tr((S1 S2)^(1/2))`` computed as
    ``Tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: a symmetric matrix with the same eigenvalues, which
    ``torch.linalg.eigh`` handles; eigenvalues made slightly negative by round-off are clipped
    to 0.  The twin of :func:`dlcourse.gan.numpy_impl.fid`.

    Parameters
    ----------
    features1 : (N1, F);  features2 : (N2, F)

    Returns
    -------
    float
    """
    f1 = torch.as_tensor(features1).double()
    f2 = torch.as_tensor(features2).double()
    mu1, mu2 = f1.mean(0), f2.mean(0)                                  # (F,)
    s1 = (f1 - mu1).T @ (f1 - mu1) / (len(f1) - 1)                      # (F, F)
    s2 = (f2 - mu2).T @ (f2 - mu2) / (len(f2) - 1)                      # (F, F)
    s1h = _psd_sqrt(s1)
    m = s1h @ s2 @ s1h                                                  # (F, F) symmetric PSD
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt)


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """``exp(mean_x KL(p(y|x) || p(y)))`` on ``splits`` chunks (cut like ``np.array_split``): mean, std.

    p(y) is each chunk's mean prediction; ``0 log 0 = 0``; std with ddof 0.  Float64.  The twin of
    :func:`dlcourse.gan.numpy_impl.inception_score`.

    Parameters
    ----------
    probs : (N, K) rows of probabilities;  splits : 1 <= splits <= N
    """
    p = torch.as_tensor(probs).double()
    if not 1 <= splits <= len(p):
        raise ValueError(f"splits must be between 1 and N = {len(p)}, got {splits}")
    scores = []
    for part in torch.tensor_split(p, splits):
        py = part.mean(dim=0, keepdim=True)                                # (1, K)
        kl = torch.xlogy(part, part) - torch.xlogy(part, py)                # (n, K), 0 where p = 0
        scores.append(torch.exp(kl.sum(dim=1).mean()))
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def fid_sanity(seed: int = 0) -> dict:
    """The sanity cases the lesson prints, all on the course classifier's features.

    * ``real_train_vs_test``: the 1,257 training digits vs the 270 test digits (the floor a
      perfect generator would reach with :func:`train_digits_gan`'s sample sizes);
    * ``real_half_vs_half``: the two halves of the training split (628 vs 629);
    * ``noise_vs_test``: 1,257 uniform-noise images in [-1, 1] vs the test digits;
    * ``is_real_train`` / ``is_real_test``: IS (mean, std over 10 splits) of real digits; the
      maximum is 10.
    """
    xtr, xte = digits_for_gan("train"), digits_for_gan("test")
    ftr, fte = features(xtr, seed), features(xte, seed)
    noise = torch.rand(len(xtr), 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    half = len(xtr) // 2
    return dict(real_train_vs_test=fid(ftr, fte), real_half_vs_half=fid(ftr[:half], ftr[half:]),
                noise_vs_test=fid(features(noise, seed), fte),
                is_real_train=inception_score(class_probs(xtr, seed)),
                is_real_test=inception_score(class_probs(xte, seed)))


# --------------------------------------------------------------------------- autoencoders

def _digits01(split: str, device=None) -> torch.Tensor:
    """One split of the digits in [0, 1], float32 (N, 64)."""
    from dlcourse.data import load_digits
    return torch.as_tensor(getattr(load_digits(), f"x_{split}"), device=device)


class Autoencoder(nn.Module):
    """64 -> H -> Z (the code) -> H -> 64 logits; ReLU inside, the code linear.

    ``forward`` returns the reconstruction ``sigmoid(logits)`` in [0, 1].

    Shape: encode (N, 64) -> (N, Z);  decode (N, Z) -> (N, 64) logits;  forward (N, 64) -> (N, 64).
    """

    def __init__(self, latent: int = 2, hidden: int = 128):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 64))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)               # (N, Z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)               # (N, 64) logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)))     # (N, 64) in [0, 1]


@dataclass
class AEHistory:
    """What the autoencoder trainers recorded, one entry per evaluation (index 0: before training).

    ``train_loss``: mean training loss since the previous record; ``test_mse``: reconstruction
    MSE per pixel on the test split (inputs noisy for a denoiser, targets clean); ``steps``,
    ``times`` (training seconds so far, evaluation excluded); ``seconds``: the whole training.
    """
    train_loss: list = field(default_factory=list)
    test_mse: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    times: list = field(default_factory=list)
    seconds: float = 0.0


def _corrupt(x: torch.Tensor, noise_std: float, mask_prob: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise of ``noise_std`` and / or pixels zeroed with probability ``mask_prob``, clipped to [0, 1]."""
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=gen, device=x.device)
    if mask_prob > 0:
        x = x * (torch.rand(x.shape, generator=gen, device=x.device) >= mask_prob)
    return x.clamp(0, 1)


def _recon(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)                     # an autoencoder: the image; a VAE: (logits, mu, logvar)
    return torch.sigmoid(out[0]) if isinstance(out, tuple) else out


@torch.no_grad()
def reconstruction_mse(model: nn.Module, x=None, target=None) -> float:
    """Mean squared error per pixel of ``model``'s reconstruction of ``x`` (default: the test split)
    against ``target`` (default ``x``), in [0, 1] units.  A VAE reconstructs from its mean code."""
    device = _model_device(model)
    x = _digits01("test", device) if x is None else torch.as_tensor(x, device=device)
    target = x if target is None else torch.as_tensor(target, device=device)
    was_training = model.training
    model.eval()
    mse = float(F.mse_loss(_recon(model, x), target))
    model.train(was_training)
    return mse


def _train_loop(model: nn.Module, loss_fn: Callable, *, seconds, steps, lr, batch_size, seed, device, progress,
                callback, eval_every, eval_fn, desc) -> AEHistory:
    """Adam on random batches of the digits' training split; ``loss_fn(model, x, gen) -> loss``."""
    budget = TrainingBudget(steps, seconds, eval_every, device=device, progress=progress, desc=desc)
    x_train = _digits01("train", device)
    history = AEHistory()
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    index_gen = torch.Generator().manual_seed(seed)

    def record(loss_sum, count):
        history.train_loss.append(float(loss_sum) / max(count, 1) if count else math.nan)
        history.test_mse.append(eval_fn(model))
        history.steps.append(budget.updates)
        history.times.append(budget.trained)
        model.train()
        if callback is not None:
            callback(history)

    record(0.0, 0)
    loss_sum, count = torch.zeros((), device=device), 0
    while budget.running():
        with budget.step():
            idx = torch.randint(0, len(x_train), (batch_size,), generator=index_gen).to(device)
            loss = loss_fn(model, x_train[idx], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            count += 1
        if budget.eval_due():
            record(loss_sum, count)
            loss_sum, count = torch.zeros((), device=device), 0
            budget.postfix(loss=f"{history.train_loss[-1]:.4f}", test_mse=f"{history.test_mse[-1]:.4f}")
    budget.close()
    history.seconds = budget.trained
    model.eval()
    return history


def train_autoencoder(latent: int = 2, *, seconds: Optional[float] = None, steps: Optional[int] = 2000,
                      hidden: int = 128, lr: float = 3e-3, batch_size: int = 128, noise_std: float = 0.0,
                      mask_prob: float = 0.0, seed: int = 0, device: Optional[str] = None, progress: bool = True,
                      callback: Optional[Callable] = None, eval_every: Optional[float] = None,
                      ) -> tuple[Autoencoder, AEHistory]:
    """Train an :class:`Autoencoder` on the digits (train split, [0, 1]) with the MSE loss and Adam.

    With ``noise_std`` > 0 or ``mask_prob`` > 0 it is a **denoising** autoencoder: the input is
    corrupted (Gaussian noise, or pixels set to 0), the target is the clean image; the recorded
    ``test_mse`` then uses test inputs corrupted the same way (fixed noise, seed 1).

    Parameters
    ----------
    latent : Z, the code size;  hidden : H
    seconds / steps : the budget (give one; ``seconds=`` overrides the default steps);
        ``steps`` runs are equal for equal seeds on one device
    seed : the weights' init, the batches and the noise;  device : default the best one
    progress : a tqdm bar;  callback : called with the :class:`AEHistory` after each evaluation
    eval_every : in steps (or seconds); default a tenth of the budget

    Returns
    -------
    model (eval mode), history
    """
    from dlcourse.runtime import device as best_device
    device = device or best_device()
    steps = None if seconds is not None else steps
    x_test = _digits01("test", device)
    noisy_test = _corrupt(x_test, noise_std, mask_prob, torch.Generator(device=device).manual_seed(1))

    def loss_fn(model, x, gen):
        inputs = _corrupt(x, noise_std, mask_prob, gen) if (noise_std or mask_prob) else x
        return F.mse_loss(torch.sigmoid(model.decode(model.encode(inputs))), x)

    with _fork_rng(device):
        torch.manual_seed(seed)
        model = Autoencoder(latent, hidden)
        history = _train_loop(model, loss_fn, seconds=seconds, steps=steps, lr=lr, batch_size=batch_size,
                              seed=seed, device=device, progress=progress, callback=callback,
                              eval_every=eval_every, eval_fn=lambda m: reconstruction_mse(m, noisy_test, x_test),
                              desc=f"autoencoder Z={latent}")
    return model, history


def latent_codes(model: nn.Module, x=None) -> torch.Tensor:
    """The codes of ``x`` (default the test split, [0, 1]): (N, Z) on the CPU (a VAE: the means mu)."""
    device = _model_device(model)
    x = _digits01("test", device) if x is None else torch.as_tensor(x, device=device)
    with torch.no_grad():
        code = model.encode(x)
    return (code[0] if isinstance(code, tuple) else code).cpu()


def bottleneck_study(latents: Sequence[int] = (2, 4, 8, 16, 32), steps: int = 2000, seed: int = 0,
                     device: Optional[str] = None, progress: bool = False) -> dict:
    """Reconstruction MSE on the test split against the code size, autoencoder vs PCA.

    PCA (the best LINEAR code of that size, fitted on the training split) is the baseline: an
    autoencoder with linear layers would find the same subspace.  Measured (seed 0, 2,000 steps
    each, ~3 s each on one CPU thread), test MSE autoencoder / PCA: Z=2 0.0359 / 0.0527,
    Z=4 0.0224 / 0.0375, Z=8 0.0119 / 0.0246, Z=16 0.0061 / 0.0116, Z=32 0.0032 / 0.0026 -- the
    non-linear code wins clearly at small Z; at Z=32 (half the 64 pixels) PCA keeps almost
    everything and the briefly trained autoencoder falls behind it.  With 1,000 steps (7 s for
    all five): 0.0364, 0.0243, 0.0132, 0.0069, 0.0047.

    Returns
    -------
    dict ``{latent: dict(ae_mse, pca_mse, seconds)}``
    """
    x_train, x_test = _digits01("train").double(), _digits01("test").double()
    mean = x_train.mean(0)
    _, _, vt = torch.linalg.svd(x_train - mean, full_matrices=False)        # (64, 64) principal directions
    out = {}
    for z in latents:
        _, history = train_autoencoder(z, steps=steps, seed=seed, device=device, progress=progress)
        basis = vt[:z]                                                     # (Z, 64)
        pca = (x_test - mean) @ basis.T @ basis + mean                     # (N, 64)
        out[z] = dict(ae_mse=history.test_mse[-1], pca_mse=float(F.mse_loss(pca, x_test)),
                      seconds=history.seconds)
    return out


def train_denoiser(noise_std: float = 0.3, mask_prob: float = 0.0, latent: int = 16, **kwargs):
    """A denoising autoencoder: :func:`train_autoencoder` with corrupted inputs and clean targets."""
    return train_autoencoder(latent, noise_std=noise_std, mask_prob=mask_prob, **kwargs)


def denoise_study(noise_std: float = 0.3, latent: int = 16, steps: int = 2000, seed: int = 0,
                  device: Optional[str] = None, progress: bool = False) -> dict:
    """Test MSE against the clean digits, for noisy inputs (noise ``noise_std``, fixed, seed 1).

    Measured (seed 0, Z=16, 2,000 steps each, noise 0.3): noisy input 0.0517, plain autoencoder
    0.0434, denoiser 0.0185 (the plain one on clean inputs: 0.0061); noise 0.5: 0.1173, 0.0827,
    0.0326.  With 1,000 steps (2.3 s for both): 0.0517, 0.0380, 0.0193.

    Returns
    -------
    dict: ``noisy_input`` (doing nothing), ``plain`` (an autoencoder trained on clean digits,
    fed the noisy ones), ``denoiser`` (trained on noisy -> clean), ``plain_clean`` (the plain one
    on clean inputs), the two models and their training seconds
    """
    x_test = _digits01("test")
    noisy = _corrupt(x_test, noise_std, 0.0, torch.Generator().manual_seed(1))
    plain, h_plain = train_autoencoder(latent, steps=steps, seed=seed, device=device, progress=progress)
    denoiser, h_den = train_denoiser(noise_std, latent=latent, steps=steps, seed=seed, device=device,
                                     progress=progress)
    return dict(noisy_input=float(F.mse_loss(noisy, x_test)),
                plain=reconstruction_mse(plain, noisy, x_test), denoiser=reconstruction_mse(denoiser, noisy, x_test),
                plain_clean=reconstruction_mse(plain, x_test),
                models=dict(plain=plain, denoiser=denoiser), seconds=dict(plain=h_plain.seconds, denoiser=h_den.seconds))


# --------------------------------------------------------------------------- the variational autoencoder

def kl_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum_z (1 + logvar - mu^2 - exp(logvar)),
    summed over Z, MEAN over the batch.  mu, logvar: (N, Z) -> scalar."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): the noise is an input, so z is differentiable in mu, logvar."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(logvar / 2) * eps


class VAE(nn.Module):
    """Encoder 64 -> H -> (mu, logvar) (each (N, Z)), a sampled code, decoder Z -> H -> 64 logits.

    ``forward(x)`` returns ``(logits, mu, logvar)``; in eval mode it decodes the mean ``mu``
    (no sampling), in train mode a sample :func:`reparameterize`.
    """

    def __init__(self, latent: int = 2, hidden: int = 256):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, 64))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)           # (N, Z) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)                                  # (N, 64) logits

    def forward(self, x: torch.Tensor, eps: Optional[torch.Tensor] = None):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, eps) if self.training else mu
        return self.decode(z), mu, logvar


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0):
    """The negative ELBO per image in nats: BCE(logits, x) summed over the 64 pixels + beta * KL,
    both MEAN over the batch.  Pixels in [0, 1] are the BCE's (soft) targets, from logits (stable).

    Returns (loss, reconstruction term, KL term), scalars.
    """
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = kl_gaussian(mu, logvar)
    return rec + beta * kl, rec, kl


def train_vae(latent: int = 2, *, seconds: Optional[float] = None, steps: Optional[int] = 3000, hidden: int = 256,
              lr: float = 2e-3, batch_size: int = 128, beta: float = 1.0, seed: int = 0,
              device: Optional[str] = None, progress: bool = True, callback: Optional[Callable] = None,
              eval_every: Optional[float] = None) -> tuple[VAE, AEHistory]:
    """Train a :class:`VAE` on the digits ([0, 1], train split) with :func:`vae_loss` (BCE + beta * KL) and Adam.

    The recorded ``train_loss`` is the negative ELBO (nats per image); ``test_mse`` the test
    reconstruction MSE from the mean code.  Arguments as :func:`train_autoencoder`.
    """
    from dlcourse.runtime import device as best_device
    device = device or best_device()
    steps = None if seconds is not None else steps

    def loss_fn(model, x, gen):
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=gen, device=mu.device)
        return vae_loss(model.decode(reparameterize(mu, logvar, eps)), x, mu, logvar, beta)[0]

    with _fork_rng(device):
        torch.manual_seed(seed)
        model = VAE(latent, hidden)
        history = _train_loop(model, loss_fn, seconds=seconds, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                              device=device, progress=progress, callback=callback, eval_every=eval_every,
                              eval_fn=reconstruction_mse, desc=f"VAE Z={latent}")
    return model, history


@torch.no_grad()
def sample_vae(model: VAE, n: int, seed: int = 0) -> torch.Tensor:
    """n new digits: z ~ N(0, I) (n, Z) through the decoder; (n, 64) in [0, 1] on the CPU."""
    device = _model_device(model)
    z = torch.randn(n, model.latent, generator=torch.Generator().manual_seed(seed)).to(device)
    return torch.sigmoid(model.decode(z)).cpu()


@torch.no_grad()
def latent_analogy(model: nn.Module, source: int, target: int, x=None, y=None) -> dict:
    """Latent arithmetic on digits: ``z - mean code(source class) + mean code(target class)``.

    For every test digit of class ``source`` its code is moved by the difference of the two
    class means (means of the codes of the TEST digits of each class) and decoded; the course
    classifier then says how many of the results read as ``target``.  A high share means the
    class is (nearly) a direction in the code space.  Measured with an 8-D VAE (3,000 steps,
    seed 0): 1 -> 7: 86 %, 3 -> 8: 82 %, 0 -> 6: 100 %, 4 -> 9: 78 % read as the target.  How
    much of the source digit's style (slant, thickness) survives is not measured: look at the
    images; on 8 x 8 pixels there is little style to keep.

    Returns
    -------
    dict: ``inputs`` (n, 64) and ``outputs`` (n, 64) in [0, 1]; ``share_target`` (float);
    ``share_target_of_mean`` (the target class mean code decoded, classified as target: 0 or 1)
    """
    from dlcourse.data import load_digits
    device = _model_device(model)
    if x is None:
        data = load_digits()
        x, y = data.x_test, data.y_test
    x = torch.as_tensor(x, device=device)
    y = torch.as_tensor(y)
    model.eval()
    code = model.encode(x)
    code = code[0] if isinstance(code, tuple) else code                     # (N, Z) (a VAE: the means)
    mean_s = code[y == source].mean(0)
    mean_t = code[y == target].mean(0)
    moved = code[y == source] - mean_s + mean_t                              # (n, Z)
    out = torch.sigmoid(model.decode(moved)).cpu()                           # (n, 64)
    pred = class_probs(out * 2 - 1).argmax(1)
    mean_img = torch.sigmoid(model.decode(mean_t[None])).cpu()
    return dict(inputs=x[y == source].cpu(), outputs=out, share_target=float((pred == target).double().mean()),
                share_target_of_mean=float(class_probs(mean_img * 2 - 1).argmax(1)[0] == target))


# --------------------------------------------------------------------------- the digits GAN

def digits_generator(latent: int = 32, hidden: int = 256) -> RingMLP:
    """G: z (N, Z) -> H -> H -> 64 pixels in (-1, 1) (tanh)."""
    return RingMLP((latent, hidden, hidden, 64), tanh=True)


def digits_discriminator(hidden: int = 256) -> RingMLP:
    """D: x (N, 64) in [-1, 1] -> H -> H -> one logit (N, 1)."""
    return RingMLP((64, hidden, hidden, 1))


@dataclass
class GanHistory:
    """What :func:`train_digits_gan` recorded, one entry per evaluation (index 0: before training).

    ``d_loss`` / ``g_loss`` / ``r1``: means over the steps since the previous record; ``fid``:
    FID of the averaged generator's samples (:func:`train_digits_gan` says which);
    ``grids``: its images at 64 fixed latent vectors, (64, 8, 8) arrays in [0, 1];
    ``steps``, ``times`` (training seconds so far, evaluation excluded).  At the end: ``G``
    (the averaged generator, in eval mode), ``G_raw`` (the last iterate), ``D``, ``final_fid``,
    ``inception`` (mean, std), ``seconds`` (training), ``eval_seconds``.
    """
    d_loss: list = field(default_factory=list)
    g_loss: list = field(default_factory=list)
    r1: list = field(default_factory=list)
    fid: list = field(default_factory=list)
    grids: list = field(default_factory=list, repr=False)
    steps: list = field(default_factory=list)
    times: list = field(default_factory=list)
    G: Optional[nn.Module] = field(default=None, repr=False)
    G_raw: Optional[nn.Module] = field(default=None, repr=False)
    D: Optional[nn.Module] = field(default=None, repr=False)
    final_fid: float = math.nan
    inception: tuple = (math.nan, math.nan)
    seconds: float = 0.0
    eval_seconds: float = 0.0

    def seconds_to(self, target: float) -> float:
        """Training seconds at the first evaluation with FID <= ``target`` (inf if none)."""
        return next((t for t, f in zip(self.times, self.fid) if f <= target), math.inf)


def train_digits_gan(seconds: Optional[float] = None, steps: Optional[int] = None, *, latent: int = 32,
                     hidden: int = 256, lr: float = 2e-3, betas: tuple = (0.5, 0.999), batch_size: int = 64,
                     r1_gamma: float = 1.0, ema: float = 0.995, g_loss: str = "nonsaturating", seed: int = 0,
                     device: Optional[str] = None, progress: bool = True, callback: Optional[Callable] = None,
                     eval_every: Optional[float] = None, n_eval: int = 1257, target_fid: Optional[float] = None,
                     ) -> GanHistory:
    """A GAN on the 8 x 8 digits: MLP G and D (:func:`digits_generator`, :func:`digits_discriminator`),
    :func:`gan_step` (non-saturating loss, R1 on the real batch), Adam for both, and a moving
    average of G's weights.

    **The average (EMA).**  After every step ``G_ema <- ema * G_ema + (1 - ema) * G``.  The
    last iterate of a GAN wanders (its FID jumped between ~4 and ~15 from one evaluation to the
    next while choosing the settings); the average of the last ~1 / (1 - ema) = 200 iterates is
    far steadier and better.  It costs nothing in training: D and G train as usual, the
    average only follows.

    **Settings, measured** (CPU, one thread, seeds 0 / 1 / 2, FID every 250 steps): with these
    defaults FID <= 4 from step 1,250 / 1,500 / 1,250 on, 3.06 / 3.32 / 3.34 at step 1,500 and
    2.92 / 3.08 / 3.29 at step 2,000 (about 4 ms a step).  Adam lr 1e-3 with ``ema=0.99`` needed
    ~2,500 steps to stay below 4; without the average the last iterate's FID stayed ~4-15 and
    jumps; without R1 (``r1_gamma=0``, lr 1e-3, ema 0.99) it was still ~12 after 1,500 steps;
    lr 3e-3 stalled near 5 on seed 1; ``hidden=128`` needed ~1,400-1,600 steps.
    ``batch_size=128`` stays below 4 from step 1,000 / 1,125 / 1,125 and ends lower (2.75 /
    3.06 / 2.44 at 2,000 steps) but a step costs ~1.4x as much: about the same seconds to 4.

    **What FID is computed against.**  ``n_eval`` = 1,257 samples of the averaged generator at
    fixed latent vectors (the same for every seed and evaluation) vs the 270 digits of the TEST
    split, on the course classifier's 32 features (:func:`features`).  The real TRAIN split
    (1,257 digits) vs the test split gives 1.5 with the same sample sizes (:func:`fid_sanity`):
    the floor here.  IS at the end: the same 1,257 samples, 10 splits.

    Parameters
    ----------
    seconds / steps : the training budget (give exactly one; ``steps`` is deterministic on one
        device).  Suggested: ``steps=1500`` (~6 s on one CPU thread)
    latent : Z;  hidden : H;  lr, betas : Adam's for both networks;  batch_size : N
    r1_gamma : R1's weight (0: off);  ema : the average's decay (0: no average);  g_loss : see :func:`gan_step`
    seed : the weights, the batches and the noise;  device : default the best one
    progress : a tqdm bar;  callback : called with the history after each evaluation (live grids, curves)
    eval_every : steps (or seconds) between evaluations; default a tenth of the budget
    n_eval : generated samples per FID
    target_fid : stop at the first evaluation with FID <= target_fid (for time-to-FID measurements)

    Returns
    -------
    :class:`GanHistory`
    """
    from dlcourse.runtime import device as best_device
    device = torch.device(device or best_device())
    budget = TrainingBudget(steps, seconds, eval_every, device=device, progress=progress, desc="digits GAN")
    x_train = digits_for_gan("train", device)                              # (1257, 64)
    real_test_features = features(digits_for_gan("test"))                   # (270, F), CPU
    fixed = torch.Generator().manual_seed(12345)                             # the same z for every seed
    z_eval = torch.randn(n_eval, latent, generator=fixed).to(device)         # (n_eval, Z)
    z_grid = torch.randn(64, latent, generator=fixed).to(device)             # (64, Z)
    history = GanHistory()

    with _fork_rng(device):
        torch.manual_seed(seed)
        G = digits_generator(latent, hidden).to(device)
        D = digits_discriminator(hidden).to(device)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
        gen = torch.Generator(device=device).manual_seed(seed)
        index_gen = torch.Generator().manual_seed(seed)
        sums = dict(d_loss=0.0, g_loss=0.0, r1=0.0)

        def record(count):
            t0 = time.perf_counter()
            for k in sums:
                getattr(history, k).append(sums[k] / count if count else math.nan)
                sums[k] = 0.0
            with torch.no_grad():
                history.fid.append(fid(features(G_ema(z_eval)), real_test_features))
                grid = (G_ema(z_grid) + 1) / 2                               # (64, 64) in [0, 1]
                history.grids.append(grid.reshape(64, 8, 8).cpu().numpy())   # (64, 8, 8)
            history.steps.append(budget.updates)
            history.times.append(budget.trained)
            history.eval_seconds += time.perf_counter() - t0
            if callback is not None:
                callback(history)

        record(0)
        count = 0
        while budget.running():
            with budget.step():
                idx = torch.randint(0, len(x_train), (batch_size,), generator=index_gen).to(device)
                z = torch.randn(batch_size, latent, generator=gen, device=device)
                losses = gan_step(G, D, opt_g, opt_d, x_train[idx], z, r1_gamma, g_loss)
                with torch.no_grad():                                        # the moving average of G
                    for p_avg, p in zip(G_ema.parameters(), G.parameters()):
                        p_avg.lerp_(p, 1 - ema)
                for k in sums:
                    sums[k] += losses[k]
                count += 1
            if budget.eval_due():
                record(count)
                count = 0
                budget.postfix(d=f"{history.d_loss[-1]:.3f}", g=f"{history.g_loss[-1]:.3f}",
                               fid=f"{history.fid[-1]:.2f}")
                if target_fid is not None and history.fid[-1] <= target_fid:
                    break
        budget.close()
    history.seconds = budget.trained
    history.G, history.G_raw, history.D = G_ema, G.eval(), D.eval()
    history.final_fid = history.fid[-1]
    with torch.no_grad():
        history.inception = inception_score(class_probs(G_ema(z_eval)))
    return history


def interpolate(G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, steps: int = 8,
                mode: str = "linear") -> torch.Tensor:
    """G's outputs along a path from ``z0`` to ``z1`` (both (Z,)): (steps, D), endpoints G(z0), G(z1).

    ``mode="linear"``: ``z_t = (1 - t) z0 + t z1``.  ``"spherical"`` (slerp): along the great
    circle, ``(sin((1 - t) W) z0 + sin(t W) z1) / sin W`` with W the angle between them.  A
    Gaussian z of high dimension lies near a sphere of radius sqrt(Z); the linear midpoint is
    shorter (by up to 1/sqrt(2) for orthogonal endpoints), the spherical one keeps the length.
    """
    device = _model_device(G)
    z0, z1 = torch.as_tensor(z0, device=device), torch.as_tensor(z1, device=device)
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=device)[:, None]          # (steps, 1)
    if mode == "linear":
        z = (1 - t) * z0 + t * z1                                                     # (steps, Z)
    elif mode == "spherical":
        cos = (z0 @ z1) / (z0.norm() * z1.norm())
        omega = torch.arccos(cos.clamp(-1, 1))
        if float(omega) < 1e-6:                                                       # (nearly) parallel
            z = (1 - t) * z0 + t * z1
        else:
            z = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
        z[0], z[-1] = z0, z1                                                          # exact endpoints
    else:
        raise ValueError(f"mode must be 'linear' or 'spherical', got {mode!r}")
    with torch.no_grad():
        return G(z)


# --------------------------------------------------------------------------- on a GPU

def _steps_per_second(G, D, x, latent, batch_size, steps, device, autocast: bool) -> float:
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    times = []
    for _ in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        idx = torch.randint(0, len(x), (batch_size,), device=x.device)
        z = torch.randn(batch_size, latent, device=device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=autocast):
            gan_step(G, D, opt_g, opt_d, x[idx], z, r1_gamma=0.0)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1.0 / float(np.median(times[1:]))


def scale_up(seconds: float = 60.0, *, hidden: int = 1024, latent: int = 64, batch_size: int = 256,
             lr: float = 2e-4, cpu_steps: int = 5, bf16: bool = True, seed: int = 0, device: Optional[str] = None,
             run_on_cpu: bool = False, progress: bool = False) -> Optional[dict]:
    """A wider MLP GAN on MNIST (28 x 28, when it downloads; else the 8 x 8 digits) on a GPU.

    Without CUDA this prints why and returns None (unless ``run_on_cpu``).  G: Z -> H -> H -> D
    (tanh), D: D -> H -> H -> 1, H = ``hidden``; Adam (lr, betas (0.5, 0.999)), no R1, a
    ``seconds`` budget; on CUDA the forward passes run under bfloat16 autocast when ``bf16``
    (weights and Adam in float32).  The CPU rate is the median of ``cpu_steps`` float32 steps at
    the course's thread setting.  No FID here (the course classifier knows 8 x 8 digits only).

    Returns
    -------
    dict: ``data``, ``steps_per_second`` (device), ``cpu_steps_per_second``, ``speedup``,
    ``steps``, ``seconds``, ``d_loss`` / ``g_loss`` (last 100 steps' means), ``samples`` (64, side, side)
    """
    from dlcourse.runtime import scale_up_device
    device = scale_up_device(device, run_on_cpu, cuda_only=True)
    if device is None:
        return None
    try:
        from dlcourse.data import load_mnist
        images, _ = load_mnist("train")
        name, side = "MNIST (60,000 x 28 x 28)", 28
    except Exception as err:  # offline: no download
        print(f"scale_up: MNIST not available ({type(err).__name__}), using the 8 x 8 digits")
        from dlcourse.data import load_digits
        images, name, side = load_digits().x_train, "digits (1,257 x 8 x 8)", 8
    x = torch.as_tensor(np.asarray(images, np.float32).reshape(len(images), -1) * 2 - 1)   # (N, D)
    d = x.shape[1]
    torch.manual_seed(seed)
    G = RingMLP((latent, hidden, hidden, d), tanh=True)
    D = RingMLP((d, hidden, hidden, 1))
    print(f"scale_up: {name}; G and D MLPs with H = {hidden}, batch {batch_size}")
    cpu_rate = None
    if cpu_steps > 0:
        cpu_rate = _steps_per_second(copy.deepcopy(G), copy.deepcopy(D), x, latent, batch_size, cpu_steps,
                                     "cpu", False)
        print(f"  cpu ({torch.get_num_threads()} thread(s)): {cpu_rate:8.1f} steps/s")
    cuda = torch.device(device).type == "cuda"
    G, D, x = G.to(device), D.to(device), x.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    recent, steps, trained = [], 0, 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=round(seconds), desc=f"scale_up ({device})", unit="s")
    while trained < seconds:
        _sync(device)
        t0 = time.perf_counter()
        idx = torch.randint(0, len(x), (batch_size,), device=device)
        z = torch.randn(batch_size, latent, device=device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cuda and bf16):
            losses = gan_step(G, D, opt_g, opt_d, x[idx], z)
        recent = (recent + [losses])[-100:]
        steps += 1
        _sync(device)
        dt = time.perf_counter() - t0
        trained += dt
        if bar is not None:
            bar.update(min(dt, max(0.0, seconds - bar.n)))
    if bar is not None:
        bar.close()
    rate = steps / trained
    with torch.no_grad():
        samples = ((G(torch.randn(64, latent, device=device)).float() + 1) / 2).reshape(64, side, side).cpu().numpy()
    result = dict(data=name, device=str(device), steps_per_second=rate, cpu_steps_per_second=cpu_rate,
                  speedup=rate / cpu_rate if cpu_rate else None, steps=steps, seconds=trained,
                  d_loss=float(np.mean([r["d_loss"] for r in recent])),
                  g_loss=float(np.mean([r["g_loss"] for r in recent])), samples=samples)
    print(f"  {device}: {rate:8.1f} steps/s over {trained:.0f} s ({steps} steps); "
          f"last losses D {result['d_loss']:.3f}, G {result['g_loss']:.3f}")
    if result["speedup"] is not None:
        print(f"  {device} is {result['speedup']:.0f}x faster than the CPU")
    return result
