"""Can we trust the digits models?  Adversarial examples and training; a planted shortcut and fairness metrics.

**Adversarial examples** (PyTorch twins of :func:`dlcourse.xai.numpy_impl.fgsm` / ``pgd``, for any
model: the MLP on flat digits, the CNN on images).  They use the gradient of the LOSS (mean
cross-entropy) with respect to the input, under an L-infinity budget ``eps``, clipped to the
valid pixel range [0, 1]::

    FGSM  x_adv = clip(x + eps * sign(dL/dx))                          (Goodfellow et al. 2015)
    PGD   x_0 = clip(x + U(-eps, eps)),  then `steps` times             (Madry et al. 2018)
          x_adv = clip(proj_eps(x_adv + alpha * sign(dL/dx_adv)))     projection first, then the clip

:func:`robust_accuracy` measures accuracy against eps; :func:`adversarial_training` fine-tunes a
copy of the course model on attacked batches (Madry's min-max: the inner max by PGD, or by FGSM
from a random start, Wong et al. 2020) and reports what robustness costs in clean accuracy.

**A planted shortcut** (:func:`shortcut_digits`): the binary task "is the digit >= 5?" where a
minority group B of images (say, from another scanner) carries a small bright watermark.  In the
TRAINING data the watermark co-occurs with the label 1 for ``correlation`` of group B; in the
TEST data it is independent of the label.  A model that learns the watermark as a cue for "1"
(a *shortcut*, Geirhos et al. 2020) fails group B's 0s.  :func:`group_metrics` measures it per
group (accuracy, TPR, FPR, positive rate; the demographic-parity and equalized-odds gaps of
Hardt et al. 2016; the worst-group accuracy), :func:`shortcut_study` compares a plain model with
mitigated ones (reweighing, Kamiran & Calders 2012; masking the mark) and shows that an
attribution method (Integrated Gradients, :mod:`dlcourse.xai.numpy_impl`) puts a large share of
its mass on the watermark when the model uses it.

Dimension letters (the course glossary)
---------------------------------------
N    batch size
D    input features (64 for the 8x8 digits)
C    channels (1), H / W image height / width (8): a CNN's input is (N, C, H, W)
K    classes
E    number of eps values
S    steps (of PGD, of an attribution path integral)
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlcourse.runtime import configure_torch
from dlcourse.xai.torch_impl import accuracy, digits_cnn, digits_mlp, model_input

configure_torch()

__all__ = ["loss_gradient", "fgsm", "pgd", "random_sign_noise", "robust_accuracy", "ATTACKS",
           "AdvHistory", "adversarial_training", "scale_up",
           "ShortcutData", "assign_groups", "shortcut_digits", "MARKS", "group_metrics", "reweighing_weights",
           "train_shortcut_model", "shortcut_predict", "MITIGATIONS", "attribution_share",
           "ShortcutStudy", "shortcut_study"]

Clip = Optional[tuple[float, float]]


def _clip(x: torch.Tensor, clip: Clip) -> torch.Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


def _labels(model: nn.Module, y) -> torch.Tensor:
    p = next(model.parameters())
    return torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y, device=p.device).long()


# --------------------------------------------------------------------------- adversarial examples

def loss_gradient(model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """The MEAN cross-entropy loss of ``model`` on (x, y) and its gradient with respect to x.

    The mean (``F.cross_entropy``'s default) divides every row's gradient by N; the attacks
    only use its sign, so mean or sum give the same adversarial examples.  The model's
    parameters get no ``.grad`` (``torch.autograd.grad`` with respect to x only).

    Parameters
    ----------
    model : an ``nn.Module`` returning (N, K) logits (its train/eval mode is used as it is)
    x : tensor or ndarray, (N, D) or (N, C, H, W); converted by :func:`~dlcourse.xai.torch_impl.model_input`
    y : int tensor or ndarray of shape (N,), the true labels

    Returns
    -------
    loss : scalar tensor (detached)
    grad : tensor with the shape of ``model_input(model, x)``, dL/dx
    """
    x = model_input(model, x).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), _labels(model, y))
        (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def fgsm(model: nn.Module, x, y, eps: float, clip: Clip = (0.0, 1.0)) -> torch.Tensor:
    """The fast gradient sign method: ``clip(x + eps * sign(dL/dx))``, one step up the loss.

    Parameters
    ----------
    model : returns (N, K) logits
    x : (N, D) or (N, C, H, W) clean inputs in the valid range (tensor or ndarray)
    y : (N,) true labels
    eps : the L-infinity budget (0 returns x)
    clip : the valid range (low, high), or None

    Returns
    -------
    x_adv : tensor shaped like ``model_input(model, x)``, ``|x_adv - x| <= eps``, detached
    """
    x = model_input(model, x).detach()
    _, grad = loss_gradient(model, x, y)
    return _clip(x + eps * grad.sign(), clip)


def pgd(model: nn.Module, x, y, eps: float, alpha: Optional[float] = None, steps: int = 10,
        random_start: bool = True, generator: Optional[torch.Generator] = None, start=None,
        clip: Clip = (0.0, 1.0)) -> torch.Tensor:
    """Projected gradient descent on the loss, L-infinity (Madry et al. 2018).

    From ``x0 = clip(x + delta0)`` (``delta0`` uniform in [-eps, eps]: the random start), ``steps``
    times: an FGSM step of size ``alpha``, the projection back into the eps-ball around x, THEN
    the clip to the valid range (x is inside both boxes, so the result is too).

    The random start is drawn with ``torch.rand(..., generator=generator)``; pass ``start`` to
    give ``delta0`` yourself (e.g. ``np.random.default_rng(0).uniform(-eps, eps, x.shape)``, the
    draw of ``numpy_impl.pgd(..., rng=np.random.default_rng(0))``: the two then agree).

    Parameters
    ----------
    model : returns (N, K) logits
    x : (N, D) or (N, C, H, W) clean inputs in the valid range
    y : (N,) true labels
    eps : the L-infinity budget
    alpha : the step size; None takes ``2.5 * eps / steps`` (Madry et al.: enough to cross the ball)
    steps : S, the number of gradient steps
    random_start : start from a uniform random point of the ball (ignored when ``start`` is given)
    generator : a ``torch.Generator`` on the model's device for the random start, or None (global RNG)
    start : None, or ``delta0`` with x's shape (tensor or ndarray)
    clip : the valid range (low, high), or None

    Returns
    -------
    x_adv : tensor shaped like ``model_input(model, x)``, detached
    """
    x = model_input(model, x).detach()
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else alpha
    if start is not None:
        delta0 = torch.as_tensor(start, device=x.device).to(x.dtype).reshape(x.shape)
        x_adv = _clip(x + delta0, clip)
    elif random_start and eps > 0:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = _clip(x + (2 * u - 1) * eps, clip)
    else:
        x_adv = x.clone()
    lo, hi = x - eps, x + eps
    for _ in range(steps):
        _, grad = loss_gradient(model, x_adv, y)
        x_adv = x_adv + alpha * grad.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, lo), hi)   # the projection onto the eps-ball
        x_adv = _clip(x_adv, clip)                            # then the valid range
    return x_adv


def random_sign_noise(model: nn.Module, x, y, eps: float, generator: Optional[torch.Generator] = None,
                      clip: Clip = (0.0, 1.0)) -> torch.Tensor:
    """The control: ``clip(x + eps * s)`` with random signs s = +-1 (same budget as FGSM, no gradient).

    ``y`` is unused (the signature of the attacks).  Returns a tensor shaped like ``model_input(model, x)``.
    """
    x = model_input(model, x).detach()
    s = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
    return _clip(x + eps * s, clip)


ATTACKS = {"pgd": pgd, "fgsm": fgsm, "noise": random_sign_noise}


def robust_accuracy(model: nn.Module, x, y, eps_list: Sequence[float], attack: str = "pgd",
                    seed: int = 0, **kw) -> np.ndarray:
    """Accuracy of ``model`` on ``attack``-ed copies of (x, y) for each eps (eps 0: the clean accuracy).

    Parameters
    ----------
    model : returns (N, K) logits
    x : (N, D) or (N, C, H, W); y : (N,)
    eps_list : E budgets
    attack : "pgd", "fgsm" or "noise" (random signs, the control), see :data:`ATTACKS`
    seed : seeds a ``torch.Generator`` for PGD's random start and the noise (reproducible numbers)
    **kw : passed to the attack (``steps``, ``alpha``, ``clip``)

    Returns
    -------
    acc : ndarray of shape (E,)
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {sorted(ATTACKS)}, got {attack!r}")
    device = next(model.parameters()).device
    out = []
    for eps in eps_list:
        if eps == 0:
            out.append(accuracy(model, x, y))
            continue
        if attack in ("pgd", "noise"):
            kw = {**kw, "generator": torch.Generator(device).manual_seed(seed)}
        out.append(accuracy(model, ATTACKS[attack](model, x, y, float(eps), **kw), y))
    return np.array(out)


@dataclass
class AdvHistory:
    """What :func:`adversarial_training` measured, one entry per epoch (validation split)."""
    arch: str
    eps: float
    attack: str
    loss: list = field(default_factory=list)        # mean training loss on the attacked batches
    clean_val: list = field(default_factory=list)   # validation accuracy, clean
    robust_val: list = field(default_factory=list)  # validation accuracy under PGD-10 at eps
    seconds: float = 0.0


def adversarial_training(arch: str = "mlp", eps: float = 0.1, seed: int = 0, attack: str = "pgd",
                         steps: int = 5, epochs: Optional[int] = None, lr: float = 3e-3,
                         batch_size: int = 64, device: Optional[str] = None, progress: bool = False,
                         callback: Optional[Callable[[AdvHistory], None]] = None) -> tuple[nn.Module, AdvHistory]:
    """Fine-tune a COPY of the course model on adversarial batches (Madry et al. 2018); cached.

    ``min_theta E max_{|delta| <= eps} L(x + delta, y; theta)``: each step attacks the batch with
    the current weights (PGD with ``steps`` steps, or ``attack="fgsm_rs"``: one FGSM step of
    1.25 eps from a random start, Wong et al. 2020, half the cost of PGD-2), then takes an Adam
    step on the attacked batch only.  It starts from :func:`~dlcourse.xai.torch_impl.digits_mlp` /
    ``digits_cnn`` (deep-copied; the cached models are never touched), which is cheaper than
    training from scratch.

    Measured (seed 0, train eps 0.1, PGD-5, 270 test digits, PGD-10 at eps 0.1): the MLP 0.289 ->
    0.852, the CNN 0.611 -> 0.833, clean accuracy unchanged (0.974, 0.989); trained at eps 0.2 the
    clean accuracy pays (MLP 0.970, CNN 0.967) for PGD-10 accuracy at eps 0.2 of 0.533 / 0.389
    (plain models: 0.000 / 0.030).  ``benchmarks/bench_xai_trust.py`` prints the whole table.

    Parameters
    ----------
    arch : "mlp" or "cnn"
    eps : the training budget (L-infinity, pixels in [0, 1])
    seed : the data split, the model's seed and the batches' order
    attack : "pgd" or "fgsm_rs"
    steps : PGD steps per batch (alpha = 2.5 eps / steps)
    epochs : passes over the training split; None: 200 for the MLP, 8 for the CNN (about 10 s each
        with PGD-5 on one CPU thread; FGSM-RS about 60 % of that)
    lr : Adam's learning rate; batch_size : the batch size
    device : where to train (default the CPU, where the course models live)
    progress : a tqdm bar over the epochs; callback : called with the history after every epoch
        (e.g. :class:`dlcourse.xai.explore.LiveRobustPlot`).  Neither is part of the cache key:
        a cached run returns at once without calling them.

    Returns
    -------
    model : the robust model in eval mode (cached: the same object on every call; deepcopy it
        before changing it)
    history : :class:`AdvHistory`
    """
    if arch not in ("mlp", "cnn"):
        raise ValueError(f"arch must be 'mlp' or 'cnn', got {arch!r}")
    if attack not in ("pgd", "fgsm_rs"):
        raise ValueError(f"attack must be 'pgd' or 'fgsm_rs', got {attack!r}")
    if epochs is None:
        epochs = 200 if arch == "mlp" else 8
    key = (arch, float(eps), int(seed), attack, int(steps), int(epochs), float(lr), int(batch_size),
           str(torch.device(device or "cpu")))
    if key not in _ADV_CACHE:
        if len(_ADV_CACHE) >= 8:
            _ADV_CACHE.pop(next(iter(_ADV_CACHE)))
        _ADV_CACHE[key] = _adv_trained(*key, progress=progress, callback=callback)
    return _ADV_CACHE[key]


_ADV_CACHE: dict = {}    # the last 8 adversarially trained models, by their settings


def _adv_trained(arch, eps, seed, attack, steps, epochs, lr, batch_size, device, progress=False, callback=None):
    from dlcourse.data import load_digits
    d = load_digits(seed)
    base = digits_mlp(seed) if arch == "mlp" else digits_cnn(seed)
    model = copy.deepcopy(base).to(device)
    x = model_input(model, d.x_train)                   # (N, D) or (N, 1, 8, 8)
    y = _labels(model, d.y_train)
    device = x.device
    gen = torch.Generator().manual_seed(seed)           # batch order (CPU)
    adv_gen = torch.Generator(device).manual_seed(seed)  # random starts
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = AdvHistory(arch, eps, attack)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc=f"adversarial training ({arch}, {attack}, eps {eps:g})", unit="epoch")
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen).to(device)
            losses = []
            for begin in range(0, len(x), batch_size):
                idx = order[begin:begin + batch_size]
                loss = _adv_step(model, opt, x[idx], y[idx], eps, steps, adv_gen, attack)
                losses.append(loss.item())
            model.eval()
            history.loss.append(float(np.mean(losses)))
            history.clean_val.append(accuracy(model, d.x_val, d.y_val))
            history.robust_val.append(float(robust_accuracy(model, d.x_val, d.y_val, [eps], seed=seed)[0]))
            history.seconds = time.perf_counter() - t0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(clean=f"{history.clean_val[-1]:.3f}", robust=f"{history.robust_val[-1]:.3f}")
            if callback is not None:
                callback(history)
    if bar is not None:
        bar.close()
    history.seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return model.eval(), history


def _adv_step(model, opt, x, y, eps, steps, generator, attack="pgd"):
    """One step of adversarial training: attack the batch (model in eval mode: as it will be used),
    then an optimizer step on the attacked batch only.  ``attack``: "pgd" (``steps`` steps, random
    start) or "fgsm_rs" (FGSM of 1.25 eps from a random start, Wong et al. 2020)."""
    model.eval()
    if attack == "pgd":
        xb = pgd(model, x, y, eps, steps=steps, generator=generator)
    else:
        x0 = pgd(model, x, y, eps, steps=0, generator=generator)
        xb = pgd(model, x, y, eps, alpha=1.25 * eps, steps=1, start=x0 - x)
    model.train()
    loss = F.cross_entropy(model(xb), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def scale_up(seconds: float = 60.0, *, eps: float = 0.1, steps: int = 10, width: int = 32, batch_size: int = 256,
             lr: float = 3e-3, n_test: int = 2000, eps_list: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2),
             cpu_steps: int = 3, seed: int = 0, device: Optional[str] = None, run_on_cpu: bool = False,
             progress: bool = True) -> Optional[dict]:
    """Adversarial training from scratch on a GPU: a wider CNN, PGD-``steps`` on every batch.

    MNIST (60,000 images of 28 x 28) when it downloads (Colab), else the 8 x 8 digits; chapter
    05's ``SmallCNN`` with ``width`` channels; Adam; a ``seconds`` budget, each step timed between
    device syncs.  Then PGD-10 accuracy against ``eps_list`` on ``n_test`` test images, and the
    speed against ``cpu_steps`` steps of the same training on the CPU (the course's one thread).
    Without a GPU it prints why and returns None (unless ``run_on_cpu``: the tests).

    Returns
    -------
    dict: ``data``, ``steps``, ``seconds``, ``steps_per_second``, ``cpu_steps_per_second``,
    ``speedup``, ``eps_list``, ``accuracy`` (E,) under PGD-10 (eps 0: clean), ``model``
    """
    from dlcourse.cnn.torch_impl import SmallCNN
    from dlcourse.runtime import scale_up_device
    from dlcourse.training.torch_impl import TrainingBudget
    device = scale_up_device(device, run_on_cpu)
    if device is None:
        return None
    from dlcourse.data import mnist_or_digits
    x_tr, y_tr, x_te, y_te, name, side = mnist_or_digits(seed)
    images = lambda a: torch.as_tensor(np.asarray(a, np.float32).reshape(len(a), 1, side, side))  # (N, 1, H, W)
    x, y = images(x_tr), torch.as_tensor(np.asarray(y_tr, np.int64))
    x_test, y_test = images(x_te[:n_test]), torch.as_tensor(np.asarray(y_te[:n_test], np.int64))
    torch.manual_seed(seed)
    model = SmallCNN(1, 10, width=width, image_size=side)
    print(f"scale_up: {name}; SmallCNN width {width}; PGD-{steps} adversarial training at eps {eps}, "
          f"batch {batch_size}")
    cpu_rate = None
    if cpu_steps > 0:
        cpu_model = copy.deepcopy(model)
        cpu_opt = torch.optim.Adam(cpu_model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        times = []
        with torch.enable_grad():
            for _ in range(cpu_steps):
                idx = torch.randint(0, len(x), (batch_size,), generator=gen)
                t0 = time.perf_counter()
                _adv_step(cpu_model, cpu_opt, x[idx], y[idx], eps, steps, gen)
                times.append(time.perf_counter() - t0)
        cpu_rate = 1.0 / float(np.median(times))
        print(f"  cpu ({torch.get_num_threads()} thread(s)): {cpu_rate:8.2f} steps/s")
    model, x, y = model.to(device), x.to(device), y.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device).manual_seed(seed)
    budget = TrainingBudget(seconds=seconds, device=device, progress=progress, desc="scale_up")
    with torch.enable_grad():
        while budget.running():
            with budget.step():
                idx = torch.randint(0, len(x), (batch_size,), device=device, generator=gen)
                loss = _adv_step(model, opt, x[idx], y[idx], eps, steps, gen)
            if budget.updates % 20 == 0:
                budget.postfix(loss=f"{loss.item():.3f}")
    budget.close()
    n_steps, trained = budget.updates, budget.trained
    model.eval()
    acc = robust_accuracy(model, x_test.to(device), y_test.to(device), eps_list, attack="pgd", seed=seed)
    rate = n_steps / trained
    print(f"  {device}: {rate:8.2f} steps/s" + (f", {rate / cpu_rate:.1f}x the CPU" if cpu_rate else "")
          + f"; {n_steps} steps in {trained:.1f} s")
    print("  PGD-10 accuracy on the test images: " + ", ".join(f"eps {e:g}: {a:.1%}" for e, a in zip(eps_list, acc)))
    return dict(data=name, steps=n_steps, seconds=trained, steps_per_second=rate, cpu_steps_per_second=cpu_rate,
                speedup=rate / cpu_rate if cpu_rate else None, eps_list=list(eps_list), accuracy=acc, model=model)


# --------------------------------------------------------------------------- a planted shortcut

MARKS = {
    # a 2 x 2 patch of 1.0 in the top-left corner, where digits are (almost) blank:
    # pixel (1, 1) carries faint ink in some images, the other three are zero in the training split
    "corner": [(0, 0), (0, 1), (1, 0), (1, 1)],
    # a 4 x 1 bar down the left edge, rows 0-3 of column 0 (blank in every digit)
    "edge": [(0, 0), (1, 0), (2, 0), (3, 0)],
}


@dataclass
class ShortcutData:
    """The shortcut digits (:func:`shortcut_digits`).  Groups: 0 = A (no mark), 1 = B (marked)."""
    x_train: np.ndarray      # (N, 64) float32 in [0, 1], marked where g_train == 1
    y_train: np.ndarray      # (N,) int64, 1 if the digit >= 5
    g_train: np.ndarray      # (N,) int64 group
    x_test: np.ndarray
    y_test: np.ndarray
    g_test: np.ndarray
    mark_mask: np.ndarray    # (64,) bool, the watermark's pixels
    digit_train: np.ndarray  # (N,) the original digit labels 0..9
    digit_test: np.ndarray
    correlation: float
    minority: float


def assign_groups(y: np.ndarray, minority: float, p_pos: Optional[float], rng: np.random.Generator) -> np.ndarray:
    """Group B (1) for ``round(minority * N)`` rows: ``p_pos`` of them positives, or drawn at random if None.

    With ``p_pos`` the group is correlated with the label (the spurious cue of the training data);
    with None it is independent of it (the test data).
    """
    n_b = int(round(minority * len(y)))
    g = np.zeros(len(y), dtype=np.int64)
    if p_pos is None:
        g[rng.choice(len(y), n_b, replace=False)] = 1
        return g
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_pos = int(round(p_pos * n_b))
    if n_pos > len(pos) or n_b - n_pos > len(neg):
        raise ValueError(f"minority={minority}, correlation={p_pos} need more examples of one class")
    g[rng.choice(pos, n_pos, replace=False)] = 1
    g[rng.choice(neg, n_b - n_pos, replace=False)] = 1
    return g


def shortcut_digits(seed: int = 0, correlation: float = 0.95, minority: float = 0.3,
                    mark: str = "corner") -> ShortcutData:
    """The digits with a planted spurious feature: binary y = (digit >= 5), a watermark on group B.

    ``load_digits(seed)``: TRAIN is its training split (1,257 images); TEST is its validation and
    test splits together (540 images; nothing is tuned on them, and group B's 0s are then ~80
    images instead of ~40).  A fraction ``minority`` of each part is group B, whose images get
    the watermark (pixels set to 1.0).  In TRAIN, ``correlation`` of group B has y = 1 (the
    digits are ~50 % positive, so the mark is a cue for "1", and its absence a weaker cue for
    "0"); in TEST group B is drawn at random, independent of y.

    Returns
    -------
    :class:`ShortcutData`
    """
    if mark not in MARKS:
        raise ValueError(f"mark must be one of {sorted(MARKS)}, got {mark!r}")
    from dlcourse.data import load_digits
    d = load_digits(seed)
    rng = np.random.default_rng(seed)
    mark_mask = np.zeros((8, 8), dtype=bool)
    for r, c in MARKS[mark]:
        mark_mask[r, c] = True
    mark_mask = mark_mask.reshape(64)

    def build(x, digit, p_pos):
        y = (digit >= 5).astype(np.int64)
        g = assign_groups(y, minority, p_pos, rng)
        x = x.copy()
        x[np.ix_(g == 1, mark_mask)] = 1.0               # the watermark
        return x.astype(np.float32), y, g

    x_tr, y_tr, g_tr = build(d.x_train, d.y_train, correlation)
    digit_te = np.concatenate([d.y_val, d.y_test])
    x_te, y_te, g_te = build(np.concatenate([d.x_val, d.x_test]), digit_te, None)
    return ShortcutData(x_tr, y_tr, g_tr, x_te, y_te, g_te, mark_mask, d.y_train.copy(), digit_te,
                        float(correlation), float(minority))


def group_metrics(y_true, y_pred, group) -> dict:
    """Per-group accuracy, TPR, FPR and positive rate; the fairness gaps between the groups.

    For each group value a: ``accuracy``, ``tpr = P(yhat=1 | y=1, a)``, ``fpr = P(yhat=1 | y=0, a)``
    (1 - fpr is the accuracy on the group's 0s), ``positive_rate = P(yhat=1 | a)``, ``n``.
    Gaps (max minus min over the groups; |A - B| for two):

    * ``dp_gap``, demographic parity: positive rates;
    * ``eo_gap``, equalized odds (Hardt et al. 2016): ``max(TPR gap, FPR gap)``;
    * ``worst_group_accuracy``: the lowest group accuracy.

    A rate with an empty denominator is nan (and so is any gap it enters).

    Parameters
    ----------
    y_true, y_pred, group : ndarrays (or tensors) of shape (N,); y's are 0/1, group any labels

    Returns
    -------
    dict with ``accuracy`` (overall), ``groups`` ({group value: {accuracy, tpr, fpr, positive_rate, n}}),
    ``dp_gap``, ``eo_gap``, ``worst_group_accuracy``
    """
    y_true, y_pred, group = (np.asarray(torch.as_tensor(a).cpu()).reshape(-1) for a in (y_true, y_pred, group))

    def rate(hits, where):
        return float(hits[where].mean()) if where.any() else float("nan")

    groups = {}
    for a in np.unique(group):
        m = group == a
        groups[a.item()] = dict(accuracy=rate(y_pred == y_true, m), tpr=rate(y_pred == 1, m & (y_true == 1)),
                                fpr=rate(y_pred == 1, m & (y_true == 0)), positive_rate=rate(y_pred == 1, m),
                                n=int(m.sum()))

    def gap(key):
        v = np.array([s[key] for s in groups.values()])
        return float(v.max() - v.min())

    return dict(accuracy=float((y_pred == y_true).mean()), groups=groups, dp_gap=gap("positive_rate"),
                eo_gap=float(np.max([gap("tpr"), gap("fpr")])),
                worst_group_accuracy=float(min(s["accuracy"] for s in groups.values())))


def reweighing_weights(y, g) -> np.ndarray:
    """Kamiran & Calders (2012) reweighing: ``w(g, y) = P(g) P(y) / P(g, y)`` per example.

    Under these weights the empirical joint of (g, y) becomes the product of its marginals:
    the group no longer predicts the label, so the watermark is no longer a cue.  The weights
    have mean 1.  Cells with no example get no weight (there is nobody to weigh).

    Parameters
    ----------
    y, g : int ndarrays of shape (N,)

    Returns
    -------
    w : ndarray of shape (N,) float64
    """
    y, g = np.asarray(y).reshape(-1), np.asarray(g).reshape(-1)
    w = np.empty(len(y), dtype=np.float64)
    for a in np.unique(g):
        for b in np.unique(y):
            m = (g == a) & (y == b)
            if m.any():
                w[m] = (g == a).mean() * (y == b).mean() / m.mean()
    return w


MITIGATIONS = {
    None: "plain training",
    "reweigh": "Kamiran & Calders reweighing of the loss, w(g, y) = P(g) P(y) / P(g, y)",
    "mask": "the watermark's pixels set to 0 in training and at test time (needs to know where it is)",
}


def _shortcut_input(x, data: ShortcutData, mitigation) -> np.ndarray:
    if mitigation == "mask":
        x = np.array(x, dtype=np.float32, copy=True)
        x[:, data.mark_mask] = 0.0
    return x


def train_shortcut_model(data: ShortcutData, mitigation: Optional[str] = None, seed: int = 0,
                         hidden: int = 32, epochs: int = 30, lr: float = 1e-2,
                         batch_size: int = 64) -> nn.Sequential:
    """An MLP ``Sequential(Linear(64, hidden), ReLU(), Linear(hidden, 2))`` for the shortcut task.

    Adam on mini-batches, seeded (about 1 s on one CPU thread), on the CPU; the mean of the
    per-example cross-entropies weighted by :func:`reweighing_weights` for ``"reweigh"``; the mark's
    pixels zeroed for ``"mask"`` (predict with :func:`shortcut_predict`, which masks the test inputs
    the same way).  See :data:`MITIGATIONS`.

    Returns
    -------
    model : in eval mode (not cached: the caller owns it)
    """
    if mitigation not in MITIGATIONS:
        raise ValueError(f"mitigation must be one of {list(MITIGATIONS)}, got {mitigation!r}")
    x = torch.as_tensor(_shortcut_input(data.x_train, data, mitigation))   # (N, 64)
    y = torch.as_tensor(data.y_train)
    w = torch.as_tensor(reweighing_weights(data.y_train, data.g_train) if mitigation == "reweigh"
                        else np.ones(len(y)), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for begin in range(0, len(x), batch_size):
                idx = order[begin:begin + batch_size]
                loss = (F.cross_entropy(model(x[idx]), y[idx], reduction="none") * w[idx]).sum() / w[idx].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def shortcut_predict(model: nn.Module, data: ShortcutData, x, mitigation: Optional[str] = None) -> np.ndarray:
    """Predicted labels (N,) of a shortcut model on ``x`` (N, 64), masked like its training for "mask"."""
    with torch.no_grad():
        return model(torch.as_tensor(_shortcut_input(x, data, mitigation))).argmax(1).numpy()


def attribution_share(model: nn.Module, x, mask, target: int = 1, steps: int = 32) -> np.ndarray:
    """The share of Integrated Gradients' absolute mass on the ``mask`` pixels, per input.

    IG of the logit of class ``target`` (1: "digit >= 5", the class the watermark points to)
    with a black baseline and Gauss-Legendre nodes (:func:`dlcourse.xai.numpy_impl.integrated_gradients`),
    then ``sum_{mask} |IG| / sum |IG|``.  Compare with a CONTROL model trained where the mark is
    independent of the label (``shortcut_digits(correlation=0.5)``), not with the mark's 4 of 64
    pixels: with a black baseline IG is zero on blank pixels, so the share is not an area share
    (learner review, seeds 0-2: control 0.056 / 0.067 / 0.049, shortcut model 0.146 / 0.130 / 0.132).

    Parameters
    ----------
    model : an ``nn.Sequential`` MLP (its state_dict loads into numpy_impl)
    x : ndarray of shape (N, D); mask : bool ndarray of shape (D,)

    Returns
    -------
    share : ndarray of shape (N,) in [0, 1]
    """
    from dlcourse.xai import numpy_impl
    params = {k: v.detach().double().cpu().numpy() for k, v in model.state_dict().items()}
    ig, _ = numpy_impl.integrated_gradients(params, np.asarray(x, dtype=np.float64), target, steps=steps,
                                            rule="gausslegendre")
    mass = np.abs(ig)
    return mass[:, mask].sum(axis=1) / np.maximum(mass.sum(axis=1), 1e-12)


@dataclass
class ShortcutStudy:
    """What :func:`shortcut_study` measured: ``metrics[method][i]`` is :func:`group_metrics` of seed i,
    ``share[method]`` the (S,) mean IG share on the mark for group-B test images (S seeds)."""
    seeds: tuple
    methods: tuple
    metrics: dict
    share: dict
    seconds: float

    def summary(self) -> dict:
        """``{method: {row: (S,) ndarray}}`` for the rows of :meth:`table`."""
        out = {}
        for m in self.methods:
            rows = {}
            for key, f in [("accuracy", lambda r: r["accuracy"]),
                           ("A: acc on y=0", lambda r: 1 - r["groups"][0]["fpr"]),
                           ("B: acc on y=0", lambda r: 1 - r["groups"][1]["fpr"]),
                           ("A: acc on y=1", lambda r: r["groups"][0]["tpr"]),
                           ("B: acc on y=1", lambda r: r["groups"][1]["tpr"]),
                           ("worst group acc", lambda r: r["worst_group_accuracy"]),
                           ("DP gap", lambda r: r["dp_gap"]),
                           ("EO gap", lambda r: r["eo_gap"])]:
                rows[key] = np.array([f(r) for r in self.metrics[m]])
            rows["IG share on mark (B)"] = np.asarray(self.share[m])
            out[m] = rows
        return out

    def table(self) -> str:
        """Mean (min-max over the seeds) of each metric, one column per method."""
        s = self.summary()
        names = [str(m) if m is not None else "plain" for m in self.methods]
        lines = [f"{'':22}" + "".join(f"{n:>20}" for n in names)]
        for row in next(iter(s.values())):
            cells = [f"{v.mean():.3f} ({v.min():.2f}-{v.max():.2f})" for v in (s[m][row] for m in self.methods)]
            lines.append(f"{row:22}" + "".join(f"{c:>20}" for c in cells))
        return "\n".join(lines)


def shortcut_study(seeds: Sequence[int] = (0, 1, 2), mitigations: Sequence[Optional[str]] = (None, "reweigh", "mask"),
                   correlation: float = 0.95, minority: float = 0.3, mark: str = "corner") -> ShortcutStudy:
    """Train a plain and mitigated shortcut models per seed; their group metrics on TEST and IG share.

    Per seed: :func:`shortcut_digits` (seed), one :func:`train_shortcut_model` per mitigation,
    :func:`group_metrics` on the test images, and the mean :func:`attribution_share` on the mark
    for group B's test images (as the model sees them: masked for "mask", so it is 0 there by
    construction).  About 1 s per model on one CPU thread.

    Measured (seeds 0, 1, 2; mean): the plain model classifies group A's test 0s at 0.977 and
    group B's (marked) 0s at 0.860, equalized-odds gap 0.117, 0.136 of IG's mass on the 4 marked
    pixels (1/16 of the image); reweighing: B's 0s 0.913, gap 0.056, share 0.086, overall accuracy
    0.948 -> 0.960; masking the mark: B's 0s 0.984, gap 0.027.
    """
    t0 = time.perf_counter()
    metrics = {m: [] for m in mitigations}
    share = {m: [] for m in mitigations}
    for seed in seeds:
        data = shortcut_digits(seed, correlation, minority, mark)
        b = data.g_test == 1
        for m in mitigations:
            model = train_shortcut_model(data, m, seed=seed)
            pred = shortcut_predict(model, data, data.x_test, m)
            metrics[m].append(group_metrics(data.y_test, pred, data.g_test))
            xb = _shortcut_input(data.x_test[b], data, m)
            share[m].append(float(attribution_share(model, xb, data.mark_mask).mean()))
    return ShortcutStudy(tuple(seeds), tuple(mitigations), metrics, {m: np.array(v) for m, v in share.items()},
                         time.perf_counter() - t0)
