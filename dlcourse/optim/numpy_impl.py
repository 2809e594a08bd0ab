"""Gradient descent and the optimizers built on it, by hand in NumPy.

Every optimizer is a pair of pure functions, "state in, state out"::

    state = adam_init(w)                      # zeros shaped like w
    w, state = adam_step(w, dw, state, lr=1e-3)

``w`` is one parameter array (a weight matrix, a bias, or a point on a 2-D
surface), ``dw`` the gradient of the loss with respect to it, and ``state`` a
NamedTuple holding whatever the optimizer remembers between steps (a momentum
buffer, running averages, a step counter).  Nothing is modified in place: the
caller gets a new ``w`` and a new ``state`` and decides what to keep.

Each update follows ``torch.optim`` to the letter, including the places where
PyTorch's form differs from the textbook's (where ``lr`` multiplies the
momentum buffer, where ``eps`` is added), so that the tests can prove our
functions and ``torch.optim`` produce the same numbers step after step.  The
state fields carry PyTorch's names (``momentum_buffer``, ``square_avg``,
``exp_avg``, ``exp_avg_sq``, ``step``).

Learning-rate schedules are plain functions of the epoch number that return the
learning rate to use during that epoch; they equal ``torch.optim.lr_scheduler``
(``StepLR``, ``CosineAnnealingLR``, ``LinearLR`` / ``LambdaLR`` warm-up) after
``epoch`` calls of ``scheduler.step()``.

Dimension letters (the course glossary, DESIGN.md)
--------------------------------------------------
N  examples (in a batch, or in a data set)
D  input features (the coordinates of a point on a 2-D surface: D = 2)
H  hidden units
K  classes
P  any parameter shape (``w``, ``dw`` and every state array share it)
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np

__all__ = [
    "SGDState", "sgd_init", "sgd_step", "momentum_step", "nesterov_step",
    "RMSpropState", "rmsprop_init", "rmsprop_step",
    "AdamState", "adam_init", "adam_step", "adamw_step",
    "OPTIMIZERS", "Optimizer",
    "gd_minimize", "minimize",
    "step_lr", "cosine_lr", "linear_warmup_lr", "warmup_cosine_lr",
    "minibatches", "train_epoch", "History", "evaluate", "train_numpy",
]


# --------------------------------------------------------------------------- plain gradient descent

def gd_minimize(grad: Callable[[np.ndarray], np.ndarray], start: np.ndarray,
                lr: float, steps: int) -> np.ndarray:
    """Plain gradient descent ``w <- w - lr * grad(w)``, returning the whole path.

    Parameters
    ----------
    grad : callable mapping a point of shape (D,) to the gradient there, shape (D,)
    start : ndarray of shape (D,), the first point (not modified)
    lr : the learning rate (step size)
    steps : number of updates

    Returns
    -------
    path : ndarray of shape (steps + 1, D); ``path[0]`` is ``start``, ``path[k]`` the
        point after ``k`` updates
    """
    w = np.array(start, dtype=np.float64)
    path = [w]
    for _ in range(steps):
        w = w - lr * grad(w)  # move against the gradient: the direction of steepest descent
        path.append(w)
    return np.stack(path)


# --------------------------------------------------------------------------- SGD (momentum, Nesterov)

class SGDState(NamedTuple):
    momentum_buffer: np.ndarray  # (P,) running sum of gradients, decayed by `momentum`


def sgd_init(w: np.ndarray) -> SGDState:
    """The state of :func:`sgd_step` before the first step: an empty (zero) buffer."""
    return SGDState(np.zeros_like(w))


def sgd_step(w: np.ndarray, dw: np.ndarray, state: SGDState, lr: float, momentum: float = 0.0,
             nesterov: bool = False, weight_decay: float = 0.0) -> tuple[np.ndarray, SGDState]:
    """One step of stochastic gradient descent, as ``torch.optim.SGD`` defines it.

    .. math::
        g \\leftarrow g + \\lambda w, \\qquad
        v \\leftarrow \\mu v + g, \\qquad
        w \\leftarrow w - \\eta\\,(g + \\mu v) \\text{ (Nesterov) or } w - \\eta v

    PyTorch keeps the learning rate *out* of the buffer ``v`` (the textbook form
    ``v <- mu v - lr g; w <- w + v`` keeps it in); the two give the same path
    while ``lr`` is constant, but not once a schedule changes it.  With
    ``momentum = 0`` this is plain gradient descent on the mini-batch gradient.

    Parameters
    ----------
    w : ndarray of shape (P,), the parameter
    dw : ndarray of shape (P,), the gradient of the loss w.r.t. ``w``
    state : SGDState from :func:`sgd_init` or the previous step
    lr : learning rate :math:`\\eta`
    momentum : :math:`\\mu`, how much of the previous buffer survives a step
    nesterov : look ahead: step along ``g + mu v`` instead of ``v``
    weight_decay : :math:`\\lambda`, L2 penalty added to the gradient

    Returns
    -------
    w : ndarray of shape (P,), the updated parameter
    state : SGDState with the updated buffer (unchanged zeros when ``momentum = 0``)
    """
    g = dw + weight_decay * w if weight_decay else dw
    if momentum == 0:
        return w - lr * g, state
    return (nesterov_step if nesterov else momentum_step)(w, g, state, lr, momentum)


def momentum_step(w: np.ndarray, dw: np.ndarray, state: SGDState, lr: float,
                  momentum: float = 0.9) -> tuple[np.ndarray, SGDState]:
    """One step of (heavy-ball) momentum in PyTorch's form: ``v <- mu v + g``, ``w <- w - lr v``.

    Parameters
    ----------
    w, dw : ndarrays of shape (P,), parameter and gradient
    state : SGDState; ``state.momentum_buffer`` is ``v`` (zeros before the first step)
    lr : learning rate; momentum : :math:`\\mu`

    Returns
    -------
    w : ndarray of shape (P,)
    state : SGDState(new buffer)
    """
    # PyTorch starts the buffer as a copy of the first gradient; mu * 0 + g is exactly that.
    velocity = momentum * state.momentum_buffer + dw  # an exponentially decayed sum of gradients
    return w - lr * velocity, SGDState(velocity)


def nesterov_step(w: np.ndarray, dw: np.ndarray, state: SGDState, lr: float,
                  momentum: float = 0.9) -> tuple[np.ndarray, SGDState]:
    """One step of Nesterov momentum, as ``torch.optim.SGD(nesterov=True)`` computes it.

    The buffer is updated as in :func:`momentum_step`; the step looks one momentum
    move ahead, along ``g + mu * v_new`` (the *updated* buffer).

    Parameters
    ----------
    w, dw : ndarrays of shape (P,), parameter and gradient
    state : SGDState (zeros before the first step)
    lr : learning rate; momentum : :math:`\\mu`

    Returns
    -------
    w : ndarray of shape (P,)
    state : SGDState(new buffer)
    """
    buf = momentum * state.momentum_buffer + dw
    look_ahead = dw + momentum * buf
    return w - lr * look_ahead, SGDState(buf)


# --------------------------------------------------------------------------- RMSprop

class RMSpropState(NamedTuple):
    square_avg: np.ndarray       # (P,) running average of squared gradients
    momentum_buffer: np.ndarray  # (P,) used only with momentum > 0


def rmsprop_init(w: np.ndarray) -> RMSpropState:
    """The state of :func:`rmsprop_step` before the first step: zeros."""
    return RMSpropState(np.zeros_like(w), np.zeros_like(w))


def rmsprop_step(w: np.ndarray, dw: np.ndarray, state: RMSpropState, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0) -> tuple[np.ndarray, RMSpropState]:
    """One step of RMSprop, as ``torch.optim.RMSprop`` defines it (``centered=False``).

    .. math::
        s \\leftarrow \\alpha s + (1 - \\alpha) g^2, \\qquad
        w \\leftarrow w - \\eta\\, \\frac{g}{\\sqrt{s} + \\epsilon}

    Each coordinate's step is divided by the root-mean-square of its recent
    gradients, so steep and flat directions advance at similar speeds.  ``eps``
    is added *after* the square root, as in PyTorch.

    Parameters
    ----------
    w, dw : ndarrays of shape (P,), parameter and gradient
    state : RMSpropState from :func:`rmsprop_init` or the previous step
    lr : learning rate :math:`\\eta`
    alpha : smoothing constant: the weight of the old average
    eps : added to the denominator, to avoid dividing by zero
    weight_decay : L2 penalty added to the gradient
    momentum : if > 0, a momentum buffer accumulates the scaled steps

    Returns
    -------
    w : ndarray of shape (P,)
    state : RMSpropState
    """
    g = dw + weight_decay * w if weight_decay else dw
    square_avg = alpha * state.square_avg + (1 - alpha) * g * g
    avg = np.sqrt(square_avg) + eps  # the RMS of recent gradients, per coordinate
    if momentum > 0:
        buf = momentum * state.momentum_buffer + g / avg
        return w - lr * buf, RMSpropState(square_avg, buf)
    return w - lr * g / avg, RMSpropState(square_avg, state.momentum_buffer)


# --------------------------------------------------------------------------- Adam

class AdamState(NamedTuple):
    step: int                # number of steps taken so far
    exp_avg: np.ndarray      # (P,) m: running average of gradients (first moment)
    exp_avg_sq: np.ndarray   # (P,) v: running average of squared gradients (second moment)


def adam_init(w: np.ndarray) -> AdamState:
    """The state of :func:`adam_step` before the first step: step 0, zero moments."""
    return AdamState(0, np.zeros_like(w), np.zeros_like(w))


def adam_step(w: np.ndarray, dw: np.ndarray, state: AdamState, lr: float = 1e-3,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0) -> tuple[np.ndarray, AdamState]:
    """One step of Adam, as ``torch.optim.Adam`` defines it.

    .. math::
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2, \\quad
        \\hat m = \\frac{m}{1-\\beta_1^t}, \\quad \\hat v = \\frac{v}{1-\\beta_2^t}, \\quad
        w \\leftarrow w - \\eta\\,\\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon}

    Both averages start at zero, so early on they are biased towards zero;
    dividing by ``1 - beta**t`` undoes exactly that bias (``t`` counts from 1).
    ``eps`` is added after the square root of the *corrected* ``v``, as PyTorch does.

    Parameters
    ----------
    w, dw : ndarrays of shape (P,), parameter and gradient
    state : AdamState from :func:`adam_init` or the previous step
    lr : learning rate :math:`\\eta`
    betas : :math:`(\\beta_1, \\beta_2)`, decay rates of the two running averages
    eps : added to the denominator
    weight_decay : L2 penalty, added to the gradient (see :func:`adamw_step` for
        the decoupled form)

    Returns
    -------
    w : ndarray of shape (P,)
    state : AdamState with the step counter advanced by one
    """
    beta1, beta2 = betas
    t = state.step + 1
    g = dw + weight_decay * w if weight_decay else dw
    m = beta1 * state.exp_avg + (1 - beta1) * g
    v = beta2 * state.exp_avg_sq + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** t)  # bias correction: both averages started at zero
    v_hat = v / (1 - beta2 ** t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), AdamState(t, m, v)


def adamw_step(w: np.ndarray, dw: np.ndarray, state: AdamState, lr: float = 1e-3,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 1e-2) -> tuple[np.ndarray, AdamState]:
    """One step of AdamW (decoupled weight decay), as ``torch.optim.AdamW`` defines it.

    The weights first shrink, ``w <- w (1 - lr * weight_decay)``, outside Adam's
    adaptive scaling; then Adam steps with the plain gradient.  (Adam's own
    ``weight_decay`` adds ``weight_decay * w`` to the gradient instead, where the
    division by ``sqrt(v_hat)`` rescales it differently for every coordinate.)

    Parameters
    ----------
    w, dw : ndarrays of shape (P,), parameter and gradient
    state : AdamState from :func:`adam_init` or the previous step
    lr, betas, eps : as in :func:`adam_step`
    weight_decay : :math:`\\lambda`, the fraction (times ``lr``) by which the weights shrink

    Returns
    -------
    w : ndarray of shape (P,)
    state : AdamState with the step counter advanced by one
    """
    beta1, beta2 = betas
    t = state.step + 1                      # t counts the steps from 1
    decayed = w * (1 - lr * weight_decay)   # decoupled: the decay never enters m or v
    exp_avg = beta1 * state.exp_avg + (1 - beta1) * dw
    exp_avg_sq = beta2 * state.exp_avg_sq + (1 - beta2) * np.square(dw)
    denom = np.sqrt(exp_avg_sq / (1 - beta2 ** t)) + eps
    update = (exp_avg / (1 - beta1 ** t)) / denom
    return decayed - lr * update, AdamState(t, exp_avg, exp_avg_sq)


# --------------------------------------------------------------------------- many parameters

OPTIMIZERS: dict[str, tuple[Callable, Callable]] = {
    "sgd": (sgd_init, sgd_step),
    "rmsprop": (rmsprop_init, rmsprop_step),
    "adam": (adam_init, adam_step),
    "adamw": (adam_init, adamw_step),
}


class Optimizer:
    """One optimizer for a list of parameters, like ``torch.optim.Adam(model.parameters())``.

    Keeps one state per parameter and applies the step function to each::

        opt = Optimizer(params, "adam", lr=1e-3)
        params = opt.step(params, grads)   # new arrays; the old ones are untouched

    ``opt.lr`` may be changed between steps (that is what a schedule does).

    Parameters
    ----------
    params : list of parameter arrays (their shapes and dtypes set the states')
    name : ``"sgd"``, ``"rmsprop"``, ``"adam"`` or ``"adamw"``
    **hyper : the step function's keyword arguments (``lr``, ``momentum``, ``betas``, ...);
        without ``lr``, the step function's default learning rate is used
    """

    def __init__(self, params: list[np.ndarray], name: str = "adam", **hyper):
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
        init, self._step = OPTIMIZERS[name]
        if "lr" not in hyper:  # fill in the step function's own default, so that opt.lr can be read
            default = inspect.signature(self._step).parameters["lr"].default
            if default is inspect.Parameter.empty:
                raise TypeError(f"{name} has no default learning rate: pass lr=...")
            hyper = {"lr": default, **hyper}
        self.name = name
        self.hyper = hyper
        self.states = [init(p) for p in params]

    @property
    def lr(self) -> float:
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper["lr"] = value

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        """Update every parameter with its gradient; returns the new parameter list."""
        new_params, new_states = [], []
        for p, g, s in zip(params, grads, self.states):
            p, s = self._step(p, g, s, **self.hyper)
            new_params.append(p)
            new_states.append(s)
        self.states = new_states
        return new_params


def minimize(grad: Callable[[np.ndarray], np.ndarray], start: np.ndarray, optimizer: str = "sgd",
             steps: int = 100, **hyper) -> np.ndarray:
    """Run one of :data:`OPTIMIZERS` on a function, returning the path.

    Parameters
    ----------
    grad : callable mapping a point of shape (D,) to the gradient there, shape (D,)
    start : ndarray of shape (D,)
    optimizer : ``"sgd"``, ``"rmsprop"`` or ``"adam"``
    steps : number of updates
    **hyper : the step function's keyword arguments (``lr=...``, ``momentum=...``)

    Returns
    -------
    path : ndarray of shape (steps + 1, D), starting with ``start``.  A path that
        diverges is stopped: once a point is not finite, the rest stay NaN.
    """
    init, step = OPTIMIZERS[optimizer]
    w = np.array(start, dtype=np.float64)
    state = init(w)
    path = np.full((steps + 1,) + w.shape, np.nan)
    path[0] = w
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, steps + 1):
            w, state = step(w, grad(w), state, **hyper)
            if not np.all(np.isfinite(w)):
                break
            path[k] = w
    return path


# --------------------------------------------------------------------------- learning-rate schedules

def step_lr(epoch: int, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """Step decay: multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Equals ``torch.optim.lr_scheduler.StepLR(opt, step_size, gamma)`` after
    ``epoch`` calls of ``scheduler.step()`` (epoch 0 is the first epoch).
    """
    return base_lr * gamma ** (epoch // step_size)


def cosine_lr(epoch: int, base_lr: float, t_max: int, eta_min: float = 0.0) -> float:
    """Cosine annealing from ``base_lr`` (epoch 0) down to ``eta_min`` (epoch ``t_max``).

    .. math:: \\eta_t = \\eta_{min} + \\tfrac12(\\eta_{base} - \\eta_{min})(1 + \\cos(\\pi t / T_{max}))

    Equals ``torch.optim.lr_scheduler.CosineAnnealingLR(opt, t_max, eta_min)``
    after ``epoch`` calls of ``scheduler.step()``.
    """
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def linear_warmup_lr(epoch: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up: ``base_lr * (epoch + 1) / warmup`` for the first ``warmup`` epochs, then ``base_lr``.

    The first epoch already gets a small non-zero rate (``base_lr / warmup``), the
    epoch ``warmup - 1`` the full one.  Equals ``LambdaLR`` with this factor, and
    ``LinearLR(opt, start_factor=1 / warmup, total_iters=warmup - 1)``.
    """
    return base_lr * min(1.0, (epoch + 1) / warmup)


def warmup_cosine_lr(epoch: int, base_lr: float, warmup: int, total: int,
                     eta_min: float = 0.0) -> float:
    """Linear warm-up for ``warmup`` epochs, then cosine annealing to ``eta_min`` at epoch ``total``.

    The recipe most Transformers are trained with.  Equals ``SequentialLR`` of
    ``LinearLR`` (as in :func:`linear_warmup_lr`) and ``CosineAnnealingLR(t_max =
    total - warmup)`` with the milestone at ``warmup``.
    """
    if epoch < warmup:
        return linear_warmup_lr(epoch, base_lr, warmup)
    return cosine_lr(epoch - warmup, base_lr, total - warmup, eta_min)


# --------------------------------------------------------------------------- mini-batches

def minibatches(n: int, batch_size: int, rng: Optional[np.random.Generator] = None) -> Iterator[np.ndarray]:
    """Index arrays of shuffled mini-batches that cover ``range(n)`` exactly once (one epoch).

    Parameters
    ----------
    n : number of examples
    batch_size : examples per batch; the last batch holds the ``n % batch_size``
        left over (it is not dropped: every example counts in every epoch)
    rng : a NumPy Generator for the shuffle; None keeps the order (no shuffle)

    Yields
    ------
    idx : int ndarray of shape (batch_size,) (the last one possibly shorter)
    """
    order = np.arange(n) if rng is None else rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


# --------------------------------------------------------------------------- training an MLP

def train_epoch(params: list[np.ndarray], states: list[AdamState], x: np.ndarray, y: np.ndarray,
                batch_size: int, rng: np.random.Generator,
                lr: float = 1e-3) -> tuple[list[np.ndarray], list[AdamState], float]:
    """One epoch of mini-batch Adam on an MLP, functional style (the exercises' larger task).

    Parameters
    ----------
    params : ``[w1, b1, w2, b2, ...]``, e.g. w1 (H, D), b1 (H,), w2 (K, H), b2 (K,)
    states : one :class:`AdamState` per parameter
    x : ndarray of shape (N, D); y : int ndarray of shape (N,), labels in 0..K-1
    batch_size : examples per update; rng : shuffles the epoch (:func:`minibatches`)
    lr : Adam's learning rate

    Returns
    -------
    params, states : new lists (the inputs are not modified)
    mean_loss : the epoch's loss averaged over the N examples (batches weighted by size)
    """
    from dlcourse.backprop.numpy_impl import mlp_loss_and_grads
    loss_sum = 0.0
    for idx in minibatches(len(x), batch_size, rng):
        loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
        pairs = [adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        loss_sum += float(loss) * len(idx)  # the last batch may be smaller: weight by size
    return params, states, loss_sum / len(x)


@dataclass
class History:
    """What a training run recorded.  Per-epoch lists start with the value before training."""

    step_loss: list[float] = field(default_factory=list)    # mini-batch loss at every update
    train_loss: list[float] = field(default_factory=list)   # whole training set, per epoch
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)           # the rate used in each epoch
    test_acc: float = float("nan")                          # once, at the end
    seconds: float = 0.0                                    # wall time of the training loop,
                                                            # without the callback's (plotting)

    @property
    def epochs(self) -> int:
        return len(self.lr)


def evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of an MLP on ``x`` (N, D), ``y`` (N,) of labels in 0..K-1."""
    from dlcourse.backprop.numpy_impl import mlp_forward, softmax_cross_entropy
    logits, _ = mlp_forward(params, x)
    loss, _ = softmax_cross_entropy(logits, y)
    return float(loss), float(np.mean(logits.argmax(axis=1) == y))


def train_numpy(data=None, sizes=(64, 128, 10), optimizer: str = "adam", lr: float = 3e-3,
                epochs: int = 25, batch_size: int = 64,
                schedule: Optional[Callable[[int], float]] = None, seed: int = 0,
                progress: bool = True, callback: Optional[Callable[[History], None]] = None,
                **hyper) -> tuple[list[np.ndarray], History]:
    """Train an MLP classifier with our optimizers and chapter 02's backprop, all in NumPy.

    Parameters
    ----------
    data : a ``dlcourse.data.DigitsSplit`` (default: ``load_digits()``)
    sizes : layer widths (D, H, ..., K): input features first, classes last
    optimizer : ``"sgd"``, ``"rmsprop"`` or ``"adam"``
    lr : learning rate (ignored when ``schedule`` is given)
    epochs : passes over the training set
    batch_size : examples per update (``len(x_train)`` = full-batch gradient descent,
        1 = "pure" stochastic gradient descent)
    schedule : optional ``epoch -> learning rate``, e.g. ``lambda e: cosine_lr(e, 3e-3, 25)``
    seed : seeds the initial weights and the shuffling
    progress : show a ``tqdm`` progress bar over the epochs
    callback : called with the History after every epoch (e.g. a live loss plot)
    **hyper : more keyword arguments for the step function (``momentum=0.9``, ...)

    Returns
    -------
    params : the trained ``[w1, b1, ...]`` (float32)
    history : :class:`History`
    """
    from dlcourse.backprop.numpy_impl import init_mlp, mlp_loss_and_grads
    if data is None:
        from dlcourse.data import load_digits
        data = load_digits()
    rng = np.random.default_rng(seed)
    params = init_mlp(list(sizes), rng)
    opt = Optimizer(params, optimizer, lr=lr, **hyper)
    history = History()
    _record(history, evaluate(params, data.x_train, data.y_train), evaluate(params, data.x_val, data.y_val))
    epoch_bar = _progress(range(epochs), progress, "NumPy")
    start, paused = time.perf_counter(), 0.0
    for epoch in epoch_bar:
        opt.lr = schedule(epoch) if schedule is not None else lr
        history.lr.append(opt.lr)
        for idx in minibatches(len(data.x_train), batch_size, rng):
            loss, grads = mlp_loss_and_grads(params, data.x_train[idx], data.y_train[idx])
            params = opt.step(params, grads)
            history.step_loss.append(float(loss))
        _record(history, evaluate(params, data.x_train, data.y_train),
                evaluate(params, data.x_val, data.y_val))
        paused += _report(epoch_bar, history, callback)
    history.seconds = time.perf_counter() - start - paused
    history.test_acc = evaluate(params, data.x_test, data.y_test)[1]
    return params, history


def _record(history: History, train: tuple[float, float], val: tuple[float, float]) -> None:
    history.train_loss.append(train[0])
    history.val_loss.append(val[0])
    history.val_acc.append(val[1])


def _progress(epochs, enabled: bool, name: str):
    if not enabled:
        return epochs
    from tqdm.auto import tqdm
    return tqdm(epochs, desc=f"{name} epochs", leave=True)


def _report(epoch_bar, history: History, callback) -> float:
    """Update the progress bar and call the callback; returns the seconds spent (not training)."""
    start = time.perf_counter()
    if hasattr(epoch_bar, "set_postfix"):
        epoch_bar.set_postfix(train_loss=f"{history.train_loss[-1]:.3f}",
                              val_acc=f"{history.val_acc[-1]:.3f}")
    if callback is not None:
        callback(history)
    return time.perf_counter() - start
