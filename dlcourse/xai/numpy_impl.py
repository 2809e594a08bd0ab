"""Explaining a classifier by hand in NumPy: attributions for a ReLU MLP, and attacks on it.

Every method here answers "which input features made the model give class ``target``
this score?" for the model's **logit** ``f_t(x)`` of that class (not the loss, not the
softmax probability: those mix in the other classes' logits).

**Gradient methods** (one backward pass each, through the ReLU masks)::

    saliency            |df_t/dx|                                  (Simonyan et al. 2014)
    gradient x input    x * df_t/dx
    SmoothGrad          mean_s df_t/dx (x + sigma * eps_s)         (Smilkov et al. 2017)
    Integrated Grads    (x - x') * int_0^1 df_t/dx (x' + a (x - x')) da   (Sundararajan et al. 2017)

Integrated Gradients satisfies **completeness**: its attributions sum to
``f_t(x) - f_t(x')`` (the path integral of a gradient is the change of the function).
With a finite quadrature rule the sum misses by ``delta``, the completeness error that
:func:`integrated_gradients` returns and the lesson measures against the rule and steps.

**Perturbation methods** (model calls only, no gradient; their cost is counted in calls):
occlusion (slide a patch of baseline values, read the drop of the logit), LIME (a weighted
linear surrogate fitted on random binary masks, Ribeiro et al. 2016) and Shapley values by
permutation sampling (Strumbelj & Kononenko 2014; KernelSHAP's weights, Lundberg & Lee 2017).

**Adversarial examples** use the other gradient, that of the LOSS with respect to the
input: FGSM (Goodfellow et al. 2015) takes one step of size eps along its sign; PGD
(Madry et al. 2018) takes several smaller ones, each projected back into the L-infinity
ball of radius eps around x and clipped to the valid pixel range.

The MLP's parameters are a dict keyed like a torch ``state_dict``: ``nn.Sequential``'s
``"0.weight", "0.bias", "2.weight", ...`` or a module's ``"fc1.weight", "fc1.bias", ...``,
each weight in ``nn.Linear``'s (out, in) layout; the layers are taken in the order of the
number in their name, with a ReLU between two layers and none after the last (logits out).

Dimension letters (the course glossary)
---------------------------------------
N    batch size (number of inputs explained at once)
D    input features (64 for the 8x8 digits)
H    hidden width
K    classes
S    steps (of a path integral) or samples (noisy copies, masks, permutations)
"""
from __future__ import annotations

import re
from math import comb
from typing import Callable, NamedTuple, Optional, Union

import numpy as np

__all__ = [
    "MlpCache", "mlp_forward", "mlp_input_backward", "mlp_logits", "input_gradient",
    "cross_entropy_input_gradient",
    "saliency", "gradient_x_input", "smoothgrad", "ig_rule", "IG_RULES", "integrated_gradients",
    "occlusion", "lime", "shapley_sampling", "kernel_shap_weights",
    "spearman", "fgsm", "pgd",
]

ModelFn = Callable[[np.ndarray], np.ndarray]      # (M, D) inputs -> (M, K) logits


def _float(x) -> np.ndarray:
    """``x`` as a floating array, keeping float32 / float64 (anything else becomes float64)."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _targets(target, n: int) -> np.ndarray:
    """``target`` (one class, or one per row) as an int array of shape (N,)."""
    return np.broadcast_to(np.asarray(target), (n,)).astype(np.int64)


# --------------------------------------------------------------------------- the MLP: logits and the input gradient

def _layers(params: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (weight, bias) pairs in layer order: by the number in each name ("0", "2" or "fc1", "fc2")."""
    prefixes = [k[: -len(".weight")] for k in params if k.endswith(".weight")]

    def number(prefix: str) -> int:
        digits = re.findall(r"\d+", prefix)
        if not digits:
            raise ValueError(f"cannot order layer {prefix!r}: its name holds no number")
        return int(digits[-1])

    return [(params[p + ".weight"], params[p + ".bias"]) for p in sorted(prefixes, key=number)]


class MlpCache(NamedTuple):
    weights: list            # L arrays (out_l, in_l), the weights used, in layer order
    masks: list              # L - 1 arrays (N, out_l): ReLU'(h_l), 1 where h_l > 0 else 0


def mlp_forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, MlpCache]:
    """Linear -> ReLU -> ... -> Linear: the logits, and the cache for the input gradient.

    Parameters
    ----------
    params : dict of ndarrays keyed like a torch state_dict (see the module docstring)
    x : ndarray of shape (N, D)

    Returns
    -------
    logits : ndarray of shape (N, K)
    cache : MlpCache for :func:`mlp_input_backward`
    """
    layers = _layers(params)
    a = _float(x)
    masks = []
    for i, (w, b) in enumerate(layers):
        h = a @ w.T + b                                  # (N, out_l), nn.Linear's y = x W^T + b
        if i < len(layers) - 1:
            m = (h > 0).astype(h.dtype)                  # ReLU'(h); torch's choice at h = 0 is 0
            masks.append(m)
            a = h * m                                    # ReLU(h) = h * ReLU'(h)
        else:
            a = h
    return a, MlpCache([w for w, _ in layers], masks)


def mlp_input_backward(dlogits: np.ndarray, cache: MlpCache) -> np.ndarray:
    """The gradient with respect to the INPUT of :func:`mlp_forward` (no parameter gradients).

    Parameters
    ----------
    dlogits : ndarray of shape (N, K), the gradient with respect to the logits
    cache : from :func:`mlp_forward`

    Returns
    -------
    dx : ndarray of shape (N, D)
    """
    d = dlogits
    for i in range(len(cache.weights) - 1, -1, -1):
        d = d @ cache.weights[i]                         # dh_l/da_{l-1} = W_l
        if i > 0:
            d = d * cache.masks[i - 1]                   # da/dh = ReLU'(h): 0 where the unit was off
    return d


def mlp_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP's logits only.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)

    Returns
    -------
    logits : ndarray of shape (N, K)
    """
    return mlp_forward(params, x)[0]


def input_gradient(params: dict[str, np.ndarray], x: np.ndarray, target) -> np.ndarray:
    """``d f_t(x) / dx``: the gradient of the chosen CLASS LOGIT with respect to the input, by hand.

    Backpropagating the one-hot row ``e_t`` through the network picks the target's logit
    alone; the rows are independent, so one pass serves the whole batch.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)
    target : int, or int ndarray of shape (N,): the class explained in each row

    Returns
    -------
    grad : ndarray of shape (N, D)
    """
    logits, cache = mlp_forward(params, x)
    n = logits.shape[0]
    dlogits = np.zeros_like(logits)
    dlogits[np.arange(n), _targets(target, n)] = 1.0     # d f_t / d logits = e_t
    return mlp_input_backward(dlogits, cache)


def cross_entropy_input_gradient(params: dict[str, np.ndarray], x: np.ndarray,
                                 y) -> tuple[np.floating, np.ndarray]:
    """The mean cross-entropy loss and its gradient with respect to the input (what attacks use).

    ``loss = mean_n (logsumexp(z_n) - z_{n, y_n})``; ``dloss/dz = (softmax(z) - onehot(y)) / N``,
    then the same backward pass as :func:`input_gradient`.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)
    y : int ndarray of shape (N,), the true labels

    Returns
    -------
    loss : scalar, ``F.cross_entropy(logits, y)``
    dx : ndarray of shape (N, D)
    """
    logits, cache = mlp_forward(params, x)
    n = logits.shape[0]
    y = _targets(y, n)
    shifted = logits - logits.max(axis=1, keepdims=True)            # log-sum-exp without overflow
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z                                         # (N, K) log softmax
    loss = -log_p[np.arange(n), y].mean()
    dlogits = np.exp(log_p)                                         # dloss/dz = softmax - onehot,
    dlogits[np.arange(n), y] -= 1.0
    dlogits /= n                                                    # divided by N for the mean
    return loss, mlp_input_backward(dlogits, cache)


# --------------------------------------------------------------------------- gradient attributions

def saliency(params: dict[str, np.ndarray], x: np.ndarray, target, absolute: bool = True) -> np.ndarray:
    """Vanilla saliency: ``|d f_t / dx|`` per feature (Simonyan et al. 2014; Captum's ``Saliency``).

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)
    target : int or int ndarray of shape (N,)
    absolute : False returns the signed gradient

    Returns
    -------
    attributions : ndarray of shape (N, D)
    """
    g = input_gradient(params, x, target)
    return np.abs(g) if absolute else g


def gradient_x_input(params: dict[str, np.ndarray], x: np.ndarray, target) -> np.ndarray:
    """Gradient x input: ``x * d f_t / dx``, the first-order Taylor share of each feature.

    For a linear model without bias it is exactly each feature's contribution ``w_i x_i``.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)
    target : int or int ndarray of shape (N,)

    Returns
    -------
    attributions : ndarray of shape (N, D)
    """
    return _float(x) * input_gradient(params, x, target)


def smoothgrad(params: dict[str, np.ndarray], x: np.ndarray, target, n_samples: int = 50,
               sigma: float = 0.15, rng: Optional[np.random.Generator] = None,
               absolute: Optional[str] = None) -> np.ndarray:
    """SmoothGrad: the mean of the gradients at ``n_samples`` noisy copies of ``x`` (Smilkov et al. 2017).

    ``mean_s grad f_t(x + sigma * eps_s)`` with ``eps_s ~ N(0, I)``, drawn as
    ``rng.standard_normal((n_samples, N, D))``.  Averaging smooths the gradient's sharp
    piecewise-constant jumps (a ReLU net's gradient changes wherever a unit switches).
    ``sigma`` is in input units (the paper's 10-20 % of the input range: 0.1-0.2 for pixels
    in [0, 1]).

    Where the absolute value goes matters, and is chosen with ``absolute``:

    * ``None`` (default): the mean of the signed gradients (the paper's estimator);
    * ``"after"``: ``|mean_s g_s|``, the absolute value AFTER the mean (the paper's maps);
    * ``"before"``: ``mean_s |g_s|``, the absolute value BEFORE the mean (Captum's
      ``NoiseTunnel`` over ``Saliency`` with its default ``abs=True``).  It is >= ``"after"``
      everywhere: gradients that flip sign between copies no longer cancel.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)
    target : int or int ndarray of shape (N,)
    n_samples : S, the number of noisy copies
    sigma : the noise's standard deviation
    rng : the random generator (a fresh ``default_rng()`` if None)
    absolute : None, "after" or "before"

    Returns
    -------
    attributions : ndarray of shape (N, D)
    """
    if absolute not in (None, "after", "before"):
        raise ValueError(f"absolute must be None, 'after' or 'before', not {absolute!r}")
    rng = np.random.default_rng() if rng is None else rng
    x = _float(x)
    n, d = x.shape
    noisy = x + sigma * rng.standard_normal((n_samples, n, d)).astype(x.dtype)   # (S, N, D)
    t = np.tile(_targets(target, n), n_samples)                                   # (S * N,)
    grads = input_gradient(params, noisy.reshape(n_samples * n, d), t).reshape(n_samples, n, d)
    if absolute == "before":
        return np.abs(grads).mean(axis=0)
    mean = grads.mean(axis=0)
    return np.abs(mean) if absolute == "after" else mean


# --------------------------------------------------------------------------- Integrated Gradients

IG_RULES = ("gausslegendre", "left", "right", "middle", "trapezoid")


def ig_rule(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``a_k`` in [0, 1] and weights ``w_k`` of a quadrature rule for ``int_0^1 g(a) da``.

    With ``n = steps``:

    ============== ================================== ===================================
    rule           nodes a_k                          weights w_k
    ============== ================================== ===================================
    left           k / n,  k = 0 .. n-1               1 / n
    right          k / n,  k = 1 .. n                 1 / n
    middle         (k + 1/2) / n,  k = 0 .. n-1       1 / n
    trapezoid      k / (n-1),  k = 0 .. n-1           1 / (n-1), halved at both ends
    gausslegendre  (t_k + 1) / 2, t_k the roots of    v_k / 2, v_k Gauss-Legendre's weights
                   the Legendre polynomial P_n        on [-1, 1]
    ============== ================================== ===================================

    Every rule's weights sum to 1 (the integral of a constant is exact).  Captum's
    ``riemann_trapezoid`` uses the same nodes with weights 1/n halved at both ends, which
    sum to (n - 1)/n: it is no reference for completeness.  The Riemann rules are exact
    for constants, the midpoint and trapezoid rules for lines, Gauss-Legendre for
    polynomials of degree 2n - 1; a ReLU net's integrand is piecewise constant along
    the path, which none of them integrates exactly.

    Parameters
    ----------
    rule : one of :data:`IG_RULES`
    steps : n, the number of nodes (at least 2 for the trapezoid)

    Returns
    -------
    alphas, weights : ndarrays of shape (S,)
    """
    n = int(steps)
    if n < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    if rule == "left":
        return np.arange(n) / n, np.full(n, 1.0 / n)
    if rule == "right":
        return np.arange(1, n + 1) / n, np.full(n, 1.0 / n)
    if rule == "middle":
        return (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    if rule == "trapezoid":
        if n < 2:
            raise ValueError("the trapezoid rule needs steps >= 2")
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2                                      # the end points count half
        return np.linspace(0.0, 1.0, n), w
    if rule == "gausslegendre":
        t, v = np.polynomial.legendre.leggauss(n)            # on [-1, 1]
        return (t + 1) / 2, v / 2                             # mapped to [0, 1]: da = dt / 2
    raise ValueError(f"unknown rule {rule!r}; choose one of {IG_RULES}")


def integrated_gradients(params: dict[str, np.ndarray], x: np.ndarray, target, baseline=None,
                         steps: int = 50, rule: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Integrated Gradients (Sundararajan et al. 2017) and its completeness error.

    ``attr = (x - x') * sum_k w_k grad f_t(x' + a_k (x - x'))``, the quadrature of
    ``(x - x') * int_0^1 grad f_t(x' + a (x - x')) da`` with the rule's nodes and weights
    (:func:`ig_rule`).  Exactly, the attributions sum to ``f_t(x) - f_t(x')``; the rule
    misses by ``delta = sum_i attr_i - (f_t(x) - f_t(x'))``.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D)
    target : int or int ndarray of shape (N,)
    baseline : None (zeros, a black image), a scalar, or an ndarray of shape (D,) or (N, D)
    steps : S, the number of points on the path (gradient evaluations per input)
    rule : one of :data:`IG_RULES`

    Returns
    -------
    attributions : ndarray of shape (N, D)
    delta : ndarray of shape (N,), the completeness error
    """
    x = _float(x)
    n, d = x.shape
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(_float(baseline), x.shape).astype(x.dtype)
    alphas, weights = ig_rule(rule, steps)
    s = len(alphas)
    diff = x - base                                                      # (N, D)
    path = base + alphas[:, None, None].astype(x.dtype) * diff           # (S, N, D)
    t = _targets(target, n)
    grads = input_gradient(params, path.reshape(s * n, d), np.tile(t, s)).reshape(s, n, d)
    avg_grad = np.tensordot(weights.astype(x.dtype), grads, axes=1)      # (N, D) sum_k w_k g_k
    attributions = diff * avg_grad
    ends = mlp_logits(params, np.concatenate([x, base]))                 # (2N, K)
    rows = np.arange(n)
    change = ends[rows, t] - ends[n + rows, t]                           # f_t(x) - f_t(x')
    delta = attributions.sum(axis=1) - change
    return attributions, delta


# --------------------------------------------------------------------------- perturbation attributions

def _image_side(d: int) -> int:
    side = round(np.sqrt(d))
    if side * side != d:
        raise ValueError(f"occlusion needs a square image: {d} features is no side x side")
    return side


def occlusion(model_fn: ModelFn, x: np.ndarray, target: int, patch: int = 2, stride: int = 1,
              baseline: float = 0.0) -> tuple[np.ndarray, int]:
    """Occlusion: slide a ``patch x patch`` square of ``baseline`` values over the image.

    For every window position ``W`` (top-left corners ``0, stride, 2 stride, ...`` while the
    window fits), the drop ``f_t(x) - f_t(x with W set to baseline)`` is credited to each pixel
    in ``W``; a pixel's attribution is the MEAN drop over the windows that cover it (Captum's
    ``Occlusion`` with ``sliding_window_shapes=(patch, patch)`` and ``strides=stride``).  A
    pixel no window covers (a stride that skips it) gets 0.

    Parameters
    ----------
    model_fn : function (M, D) -> (M, K) logits, e.g. ``lambda z: mlp_logits(params, z)``
    x : ndarray of shape (D,) or (side, side), one image (D = side^2, 64 for the digits)
    target : the class explained
    patch, stride : window side and step, in pixels
    baseline : the value an occluded pixel takes

    Returns
    -------
    attributions : ndarray of shape (side, side)
    n_calls : model evaluations (rows given to ``model_fn``): windows + 1
    """
    x = _float(x).reshape(-1)
    side = _image_side(x.size)
    corners = range(0, side - patch + 1, stride)
    windows = [(r, c) for r in corners for c in corners]
    batch = np.repeat(x.reshape(1, side, side), len(windows) + 1, axis=0)   # row 0: the image itself
    for j, (r, c) in enumerate(windows, start=1):
        batch[j, r:r + patch, c:c + patch] = baseline
    scores = model_fn(batch.reshape(len(batch), -1))[:, target]            # (windows + 1,)
    drops = scores[0] - scores[1:]
    total = np.zeros((side, side), dtype=x.dtype)
    count = np.zeros((side, side), dtype=x.dtype)
    for drop, (r, c) in zip(drops, windows):
        total[r:r + patch, c:c + patch] += drop
        count[r:r + patch, c:c + patch] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0), len(batch)


def lime(model_fn: ModelFn, x: np.ndarray, target: int, n_samples: int = 1000,
         rng: Optional[np.random.Generator] = None, kernel_width: float = 0.25,
         baseline: Union[float, np.ndarray] = 0.0, alpha: float = 0.0) -> tuple[np.ndarray, float, int]:
    """A LIME-style local surrogate (Ribeiro et al. 2016): a weighted linear fit on binary masks.

    1. Draw ``S = n_samples`` masks ``z in {0, 1}^D`` (each feature kept with probability 1/2;
       the first mask keeps everything, the instance itself).
    2. Evaluate ``y_s = f_t(z * x + (1 - z) * baseline)``: masked features take the baseline.
    3. Weight each sample by its closeness to the instance: ``pi(z) = exp(-d^2 / (2 w^2))`` with
       ``d = 1 - cos(z, 1) = 1 - sqrt(|z| / D)`` the cosine distance to the all-ones mask and
       ``w = kernel_width`` (LIME's image explainer: cosine distance between the masks, width
       0.25; Captum's ``Lime`` default has the same kernel form with width 1.0, but takes the
       cosine distance between the original and the perturbed INPUTS).
    4. Fit ``y ~ b + z . c`` by weighted least squares (ridge penalty ``alpha`` on ``c``, 0 by
       default; LIME's own default is Ridge(alpha=1)).

    For a linear model ``f_t(x) = w . x + b0`` the fit is exact: ``c_i = w_i (x_i - baseline_i)``.

    Parameters
    ----------
    model_fn : function (M, D) -> (M, K) logits
    x : ndarray of shape (D,), one input
    target : the class explained
    n_samples : S, masks (= model evaluations)
    rng : the random generator (a fresh ``default_rng()`` if None)
    kernel_width : w of the proximity kernel
    baseline : scalar or ndarray of shape (D,)
    alpha : ridge penalty on the coefficients (not on the intercept)

    Returns
    -------
    coef : ndarray of shape (D,), the surrogate's coefficient per feature
    intercept : float, the surrogate's value with every feature masked
    n_calls : model evaluations (= n_samples)
    """
    rng = np.random.default_rng() if rng is None else rng
    x = _float(x).reshape(-1)
    d = x.size
    masks = rng.integers(0, 2, size=(n_samples, d)).astype(x.dtype)     # (S, D)
    masks[0] = 1.0                                                       # the instance itself
    base = np.broadcast_to(_float(baseline), (d,))
    y = model_fn(masks * x + (1 - masks) * base)[:, target]             # (S,)
    cos = np.sqrt(masks.sum(axis=1) / d)                                 # cos(z, 1) for binary z
    weights = np.exp(-((1 - cos) ** 2) / (2 * kernel_width ** 2))       # (S,) proximity pi(z)
    design = np.hstack([np.ones((n_samples, 1), dtype=x.dtype), masks])  # (S, 1 + D), intercept first
    sw = np.sqrt(weights)[:, None]
    a, b = design * sw, y * sw[:, 0]                                     # weighted least squares
    if alpha > 0:                                                        # ridge rows: sqrt(alpha) I, not on b
        pen = np.hstack([np.zeros((d, 1)), np.sqrt(alpha) * np.eye(d)])
        a, b = np.vstack([a, pen]), np.concatenate([b, np.zeros(d)])
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return sol[1:], float(sol[0]), n_samples


def shapley_sampling(model_fn: ModelFn, x: np.ndarray, target: int, n_permutations: int = 25,
                     rng: Optional[np.random.Generator] = None,
                     baseline: Union[float, np.ndarray] = 0.0) -> tuple[np.ndarray, int]:
    """Shapley values estimated by permutation sampling (Strumbelj & Kononenko 2014; Captum's
    ``ShapleyValueSampling``).

    For each random order of the D features, start at the baseline and switch the features to
    their values in ``x`` one at a time; each feature's marginal contribution is the change
    of ``f_t`` when it joins.  A feature's Shapley value is its contribution averaged over ALL
    orders; this averages over ``n_permutations`` random ones.

    **Efficiency holds exactly** for every sample: in one order the contributions telescope to
    ``f_t(x) - f_t(baseline)``, so their mean does too.  On an additive model
    ``f = sum_i g_i(x_i)`` every order gives ``g_i(x_i) - g_i(baseline_i)``: the estimate is exact.

    Parameters
    ----------
    model_fn : function (M, D) -> (M, K) logits
    x : ndarray of shape (D,), one input
    target : the class explained
    n_permutations : S, random orders
    rng : the random generator (a fresh ``default_rng()`` if None)
    baseline : scalar or ndarray of shape (D,), the "absent" value of a feature

    Returns
    -------
    phi : ndarray of shape (D,), the Shapley value estimates
    n_calls : model evaluations: 1 + S * D (the baseline once, then D per order)
    """
    rng = np.random.default_rng() if rng is None else rng
    x = _float(x).reshape(-1)
    d = x.size
    base = np.broadcast_to(_float(baseline), (d,)).astype(x.dtype)
    orders = np.stack([rng.permutation(d) for _ in range(n_permutations)])   # (S, D)
    # row j of order s: the baseline with the first j + 1 features of the order switched on
    position = np.argsort(orders, axis=1)                                    # (S, D) where each feature joins
    on = position[:, None, :] <= np.arange(d)[None, :, None]                 # (S, step j, feature)
    inputs = np.where(on, x, base)                                           # (S, D, D)
    f0 = model_fn(base[None, :])[0, target]
    f = model_fn(inputs.reshape(-1, d))[:, target].reshape(n_permutations, d)  # (S, D) after each step
    before = np.concatenate([np.full((n_permutations, 1), f0), f[:, :-1]], axis=1)
    gains = f - before                                                       # (S, D) contribution at step j
    phi = np.zeros((n_permutations, d), dtype=gains.dtype)
    np.put_along_axis(phi, orders, gains, axis=1)                            # credit step j to order[j]
    return phi.mean(axis=0), 1 + n_permutations * d


def kernel_shap_weights(M: int, s) -> np.ndarray:
    """KernelSHAP's weight of a coalition of size ``s`` among ``M`` features (Lundberg & Lee 2017).

    ``pi(s) = (M - 1) / (C(M, s) s (M - s))``: weighted least squares on coalitions with these
    weights recovers the Shapley values.  Small and large coalitions weigh most (they isolate
    one feature's effect); ``pi(s) = pi(M - s)``; the empty and the full coalition get an
    infinite weight (in practice: enforced as constraints).

    Parameters
    ----------
    M : the number of features
    s : int or int ndarray, coalition sizes in 0 .. M

    Returns
    -------
    weights : float ndarray of the shape of ``s`` (inf at s = 0 and s = M)
    """
    s_arr = np.asarray(s)
    flat = s_arr.reshape(-1)
    out = np.empty(flat.shape, dtype=np.float64)
    for i, k in enumerate(flat):
        k = int(k)
        if not 0 <= k <= M:
            raise ValueError(f"coalition size {k} outside 0 .. {M}")
        out[i] = np.inf if k in (0, M) else (M - 1) / (comb(M, k) * k * (M - k))
    return out.reshape(s_arr.shape)


# --------------------------------------------------------------------------- comparing maps

def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1 .. n, ties given the mean of the ranks they span (scipy's ``rankdata``)."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)                         # the rank of each distinct value's last copy
    return (last - (counts - 1) / 2)[inverse]        # the mean of ranks last - counts + 1 .. last


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (flattened), ties averaged (``scipy.stats.spearmanr``).

    The Pearson correlation of the ranks: 1 when one map is an increasing function of the
    other, whatever the scale.  NaN when one map is constant (its ranks do not vary).

    Parameters
    ----------
    a, b : ndarrays with the same number of elements

    Returns
    -------
    rho : float in [-1, 1], or nan
    """
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size != b.size:
        raise ValueError(f"spearman needs maps of equal size, got {a.size} and {b.size}")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


# --------------------------------------------------------------------------- adversarial examples

def _clip(x: np.ndarray, clip: Optional[tuple[float, float]]) -> np.ndarray:
    return x if clip is None else np.clip(x, clip[0], clip[1])


def fgsm(params: dict[str, np.ndarray], x: np.ndarray, y, eps: float,
         clip: Optional[tuple[float, float]] = (0.0, 1.0)) -> np.ndarray:
    """The fast gradient sign method (Goodfellow et al. 2015): one step of size eps up the LOSS.

    ``x_adv = clip(x + eps * sign(d loss / dx))``: the largest increase of the linearised loss
    inside the L-infinity ball of radius eps.  The sign, not the raw gradient: every pixel
    moves by exactly eps (before clipping).

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D), clean inputs in the valid range
    y : int ndarray of shape (N,), the true labels
    eps : the L-infinity budget
    clip : the valid range (low, high), or None

    Returns
    -------
    x_adv : ndarray of shape (N, D), ``|x_adv - x| <= eps`` everywhere
    """
    x = _float(x)
    _, dx = cross_entropy_input_gradient(params, x, y)
    return _clip(x + eps * np.sign(dx), clip)


def pgd(params: dict[str, np.ndarray], x: np.ndarray, y, eps: float, alpha: float, steps: int,
        rng: Optional[np.random.Generator] = None,
        clip: Optional[tuple[float, float]] = (0.0, 1.0)) -> np.ndarray:
    """Projected gradient descent on the loss, L-infinity (Madry et al. 2018).

    Start at ``x`` (or, given ``rng``, at a uniform random point of the eps-ball: Madry's random
    start), then ``steps`` times::

        x_adv = x_adv + alpha * sign(d loss / dx_adv)        # an FGSM step of size alpha
        x_adv = clip(x_adv, x - eps, x + eps)                # project back into the eps-ball
        x_adv = clip(x_adv, low, high)                       # and into the valid range

    Both clips keep the other's constraint (x itself is in the valid range), so the result is
    inside both.

    Parameters
    ----------
    params : dict keyed like a torch state_dict
    x : ndarray of shape (N, D), clean inputs in the valid range
    y : int ndarray of shape (N,), the true labels
    eps : the L-infinity budget
    alpha : the step size (eps / 4 and 10 steps is a common choice)
    steps : the number of steps
    rng : the random generator for the random start, or None for no random start
    clip : the valid range (low, high), or None

    Returns
    -------
    x_adv : ndarray of shape (N, D)
    """
    x = _float(x)
    x_adv = x.copy()
    if rng is not None:
        x_adv = _clip(x + rng.uniform(-eps, eps, size=x.shape).astype(x.dtype), clip)
    for _ in range(steps):
        _, dx = cross_entropy_input_gradient(params, x_adv, y)
        x_adv = x_adv + alpha * np.sign(dx)
        x_adv = np.clip(x_adv, x - eps, x + eps)           # the projection onto the eps-ball
        x_adv = _clip(x_adv, clip)
    return x_adv
