"""Graded checks for the exercises of chapter 08 (``solutions/08_gan.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the
classic wrong answers, each a plain wrong implementation with the exercise's own
signature.  A check runs the learner's code on cases from small to large against the
course's answers (:mod:`dlcourse.gan.numpy_impl`, and the exercise forms at the bottom
of this file where an exercise asks for another form) and, when an answer is wrong,
recomputes the table's rows on the same inputs to name the mistake.  What recomputation
cannot see (an error raised inside the learner's code, a non-finite loss at large
logits, a penalty without a graph, gradients that leak into the generator during the
discriminator's step) the check recognises itself and reports with its row's message.
A failure shows the smallest failing case and a call that reproduces it.
``tests/test_course.py`` hands every row to its check and proves that exactly its
message comes back; ``tests/test_gan_checks.py`` tests the rest.

Dimension letters: N batch (M a second batch), Z latent size, D data dimensions (2 for
the ring), H hidden width, K modes or classes, F feature size.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.gan import numpy_impl as ref
from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close,
                              expect_float64, expect_tuple, fail_with, is_shape_error, name_first_wrong,
                              raises_like, same_items, trying)
from dlcourse.grading import matches as _close

from dlcourse.gan import torch_impl as _tg   # the PyTorch twins (losses, KL, R1, FID, gan_step) are refused too

check = Checker("08_gan")

__all__ = ["check", "kl_case", "reparam_case", "d_loss_case", "g_loss_case", "r1_case", "fid_case",
           "modes_case", "gan_case", "RingMLP", "kl_gaussian_with_grads", "r1_penalty_torch",
           "gan_train_step_reference"]


def _twins(*names):
    return tuple(getattr(_tg, n) for n in names)


def _factor_of(got, expected, n):
    """'the sign is flipped' / 'N = 4 times too large' when ``got`` is exactly that multiple of ``expected``."""
    try:
        g, e = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if g.shape != e.shape or not np.any(np.abs(e) > 1e-12):
        return None
    factors = [(-1.0, "has the wrong sign (exactly -1 times the right values): check the sign of each derivative")]
    if n and n > 1:
        factors += [(n, f"is exactly N = {n} (the batch size) times too large: a mean over the batch divides "
                        f"each sample's term by N"),
                    (1 / n, f"is exactly N = {n} (the batch size) times too small: it is divided by N once too "
                            f"often"),
                    (n * n, f"is exactly N^2 = {n * n} times too large (N = {n}, the batch size): it misses two "
                            f"factors 1/N"),
                    (1 / (n * n), f"is exactly N^2 = {n * n} times too small (N = {n}, the batch size): it is "
                                  f"divided by N twice too often")]
    with np.errstate(all="ignore"):
        for k, text in factors:
            if np.allclose(g, k * e, rtol=1e-9, atol=1e-12):
                return text
    return None


def _name_factor(names, out, expected, sizes, what):
    """Fail with 'dmu is exactly N = 16 times too large' and the like (a wrong constant factor or sign)."""
    for name, g, e, n in zip(names, out, expected, sizes):
        if _close(g, e):
            continue
        text = _factor_of(g, e, n)
        if text is not None:
            raise CheckFailed(f"{name} {text} ({what})", mistake="constant factor")
        return


def _numpy_outputs(fn, name, names, table, expected, args, what, tried, before=None, after=None, sizes=None):
    """Call ``fn(*args)``, name a table row or the first wrong output; return the outputs."""
    try:
        out = call(fn, *args)
    except CheckFailed as fail:
        raises_like(table, getattr(fail, "error", None), lambda row: row(*args), f"({what})")
        raise
    if len(names) > 1:
        out = expect_tuple(out, len(names), f"({', '.join(names)})", name)
    else:
        out = (out,)
    out = tuple(o.detach().cpu().numpy() if hasattr(o, "detach") else o for o in out)
    tried.got, tried.expected = (out if len(out) > 1 else out[0]), (expected if len(names) > 1 else expected[0])
    if before is not None:
        before(out)
    wrap = (lambda v: v) if len(names) > 1 else (lambda v: (v,))
    diagnose(out, expected, table, same=same_items, apply=lambda row: wrap(row(*args)), suffix=f"({what})")
    if after is not None:
        after(out)
    expect_float64(names, out, what)
    if sizes is not None:
        _name_factor(names, out, expected, sizes, what)
    name_first_wrong(names, out, expected, what)
    return out


# --------------------------------------------------------------------------- exercise forms (the graded answers)
# The answers to the exercises whose form differs from dlcourse.gan.numpy_impl's functions (that
# file returns the KL alone and its gradient separately; its R1 and GAN step are NumPy ones on
# parameter dicts).  Each is the ``reference=`` of its check below, so they sit above the checks;
# tests/test_gan_checks.py proves them equal to numpy_impl / torch autograd.

def kl_gaussian_with_grads(mu: np.ndarray, logvar: np.ndarray):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over Z and averaged over N, and its gradients.

    Parameters
    ----------
    mu, logvar : ndarrays of shape (N, Z)

    Returns
    -------
    kl : scalar;  dmu, dlogvar : ndarrays of shape (N, Z)
    """
    return (ref.kl_gaussian(mu, logvar),) + ref.kl_gaussian_backward(mu, logvar)


def r1_penalty_torch(D: nn.Module, x_real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 = gamma / 2 * mean_n ||grad_x D(x_n)||^2 on the real batch, with a graph (create_graph=True).

    Parameters
    ----------
    D : a module mapping (N, D) to (N, 1) logits
    x_real : tensor of shape (N, D), real samples (need not require grad)
    gamma : the penalty's weight

    Returns
    -------
    penalty : 0-d tensor, differentiable with respect to D's parameters
    """
    x = x_real.detach().requires_grad_(True)                      # a leaf to differentiate with respect to
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)   # (N, D); the sum is fine: row n only
    return gamma / 2 * grad.pow(2).sum(dim=1).mean()               # feeds logit n


def gan_train_step_reference(G: nn.Module, D: nn.Module, opt_g, opt_d, x_real: torch.Tensor, z: torch.Tensor):
    """One GAN step: D's step on the real batch and the DETACHED fakes, then G's non-saturating step.

    Parameters
    ----------
    G : generator, (M, Z) -> (M, D);  D : discriminator, (N, D) -> (N, 1) logits
    opt_g, opt_d : their optimizers
    x_real : tensor of shape (N, D);  z : tensor of shape (M, Z)

    Returns
    -------
    d_loss, g_loss : floats (D's loss before its step, G's loss scored by the updated D)
    """
    fake = G(z)
    d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake.detach())).mean()   # real -> 1, fake -> 0
    opt_d.zero_grad()
    d_loss.backward()                                              # reaches D only: fake is detached
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()                           # -log D(G(z)), by the updated D
    opt_g.zero_grad()
    g_loss.backward()                                              # through D into G; only G steps
    opt_g.step()
    return d_loss.item(), g_loss.item()


# --------------------------------------------------------------------------- 1. the KL term with its gradient

def kl_sign_flipped(mu, logvar):
    n = mu.shape[0]
    kl = 0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()     # +0.5: the sign of -KL
    return kl, -mu / n, -0.5 * (np.exp(logvar) - 1) / n


def kl_half_missing(mu, logvar):
    n = mu.shape[0]
    kl = -np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()          # no 1/2
    return kl, 2 * mu / n, (np.exp(logvar) - 1) / n


def kl_logvar_squared(mu, logvar):
    n = mu.shape[0]
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - logvar ** 2, axis=1).mean()       # sigma^2 taken as logvar^2
    return kl, mu / n, -0.5 * (1 - 2 * logvar) / n


def kl_exp_two_logvar(mu, logvar):
    n = mu.shape[0]
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(2 * logvar), axis=1).mean()   # exp(2 logvar) = sigma^4
    return kl, mu / n, -0.5 * (1 - 2 * np.exp(2 * logvar)) / n


def kl_summed_over_batch(mu, logvar):
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))                  # no mean over N
    return kl, mu, 0.5 * (np.exp(logvar) - 1)


def kl_mean_over_z(mu, logvar):
    size = mu.size
    kl = -0.5 * np.mean(1 + logvar - mu ** 2 - np.exp(logvar))                  # a mean over Z too
    return kl, mu / size, 0.5 * (np.exp(logvar) - 1) / size


def kl_dlogvar_half_missing(mu, logvar):
    n = mu.shape[0]
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()
    return kl, mu / n, (np.exp(logvar) - 1) / n                                 # the 1/2 dropped


def kl_dlogvar_minus_one_missing(mu, logvar):
    n = mu.shape[0]
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()
    return kl, mu / n, 0.5 * np.exp(logvar) / n                                 # d(logvar)/d(logvar) = 1 lost


def kl_grads_not_divided(mu, logvar):
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()
    return kl, mu, 0.5 * (np.exp(logvar) - 1)                                   # the mean's 1/N forgotten


def kl_dlogvar_sign_flipped(mu, logvar):
    n = mu.shape[0]
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()
    return kl, mu / n, 0.5 * (1 - np.exp(logvar)) / n                          # -1/2 kept, the inner sign lost


def kl_dmu_not_divided(mu, logvar):
    n = mu.shape[0]
    kl = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar), axis=1).mean()
    return kl, mu, 0.5 * (np.exp(logvar) - 1) / n                              # dmu lost the mean's 1/N


def kl_logvar_as_log_sigma(mu, logvar):
    n = mu.shape[0]                                                             # log sigma^2 = 2 * "logvar"
    kl = -0.5 * np.sum(1 + 2 * logvar - mu ** 2 - np.exp(2 * logvar), axis=1).mean()
    return kl, mu / n, (np.exp(2 * logvar) - 1) / n


KL_MISTAKES = (
    Mistake("sign flipped", kl_sign_flipped,
            "the KL has the wrong sign: KL = -1/2 * sum(1 + logvar - mu^2 - exp(logvar)) is >= 0 (0 only at mu = 0, "
            "logvar = 0); with +1/2 it comes out negative, and the gradients point the other way"),
    Mistake("factor 1/2 missing", kl_half_missing,
            "the factor 1/2 is missing: KL = -1/2 * sum_z (1 + logvar - mu^2 - exp(logvar)), so the KL and both "
            "gradients come out twice too large"),
    Mistake("variance as logvar squared", kl_logvar_squared,
            "the variance is taken as logvar ** 2: logvar is log(sigma^2), so the variance is exp(logvar)"),
    Mistake("logvar read as log sigma", kl_logvar_as_log_sigma,
            "logvar is read as log(sigma) (a log-std): the formula came out in 2 * logvar and exp(2 * logvar); "
            "logvar IS log(sigma^2), so the bracket is 1 + logvar - mu^2 - exp(logvar)"),
    Mistake("variance as exp(2 logvar)", kl_exp_two_logvar,
            "the variance is taken as exp(2 * logvar), which treats logvar as log(sigma) (a log-std): logvar is "
            "log(sigma^2), so the variance is exp(logvar) and the std exp(logvar / 2)"),
    Mistake("summed over the batch", kl_summed_over_batch,
            "the KL is summed over the batch: sum over the latent axis Z (axis=1) but take the MEAN over the N "
            "samples, and divide both gradients by N too"),
    Mistake("mean over Z too", kl_mean_over_z,
            "the KL is averaged over the latent axis Z too: the KL of a diagonal Gaussian is the SUM over its Z "
            "dimensions (axis=1); only the batch axis is averaged"),
    Mistake("dlogvar missing the 1/2", kl_dlogvar_half_missing,
            "the KL is right but dlogvar is twice too large: d/dlogvar of -1/2 (logvar - exp(logvar)) is "
            "1/2 (exp(logvar) - 1), divided by N"),
    Mistake("dlogvar missing the -1", kl_dlogvar_minus_one_missing,
            "the KL is right but dlogvar lost the derivative of the lone logvar term: d/dlogvar of "
            "-1/2 (1 + logvar - exp(logvar)) is 1/2 (exp(logvar) - 1), not 1/2 exp(logvar) (divided by N)"),
    Mistake("dlogvar sign flipped", kl_dlogvar_sign_flipped,
            "the KL and dmu are right but dlogvar has the wrong sign: d/dlogvar of -1/2 (logvar - exp(logvar)) is "
            "-1/2 (1 - exp(logvar)) = +1/2 (exp(logvar) - 1), divided by N (positive where logvar > 0)"),
    Mistake("dmu not divided by N", kl_dmu_not_divided,
            "the KL and dlogvar are right but dmu is N times too large: the KL is a mean over the N samples, so "
            "dmu = mu / N, like dlogvar's 1/N"),
    Mistake("gradients not divided by N", kl_grads_not_divided,
            "the KL is right but the gradients are N times too large: the KL is a mean over the N samples, so "
            "each sample's gradient is divided by N"),
)

KL_CASES = [(3, 4), (5, 3), (16, 8)]


def kl_case(case: int):
    """The inputs of case ``case`` (1 to 3, small to large) of the kl_gaussian check: ``mu, logvar`` (N, Z)."""
    N, Z = KL_CASES[case - 1]
    rng = np.random.default_rng(800 + case)
    return rng.standard_normal((N, Z)), 0.8 * rng.standard_normal((N, Z))


@check.exercise(points=2, mistakes=KL_MISTAKES, reference=(kl_gaussian_with_grads, ref.kl_gaussian) + _twins("kl_gaussian"),
                forbid=(ref.kl_gaussian_backward,), hints=[
    "The KL divergence of N(mu, sigma^2) from N(0, 1) has a closed form per latent dimension; a diagonal Gaussian "
    "adds it up over its Z dimensions, and the loss averages it over the N samples. Write sigma^2 from logvar "
    "(logvar IS log sigma^2), then differentiate the same expression by hand.",
    "Per sample: -1/2 * sum over Z of (1 + logvar - mu^2 - sigma^2), then the mean over N. Each entry of mu and "
    "logvar appears in one term only, so its gradient is the derivative of that term times 1/N.",
    "per = -0.5 * np.sum(..., axis=1) ((N,): the bracket above); kl = per.mean(); n = mu.shape[0]; "
    "dmu = (d/dmu of -0.5 * (-mu^2)) / n; dlogvar = (d/dlogvar of -0.5 * (logvar - exp(logvar))) / n.",
])
def kl_gaussian(fn):
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over Z, mean over N, with its gradients."""
    for case in range(1, len(KL_CASES) + 1):
        args = kl_case(case)
        what = "N = {}, Z = {}".format(*KL_CASES[case - 1])
        line = f"from dlcourse.gan.checks import kl_case; mu, logvar = kl_case({case}); kl_gaussian(mu, logvar)"
        with trying("kl_gaussian", label=what, call_text=line) as tried:
            expected = kl_gaussian_with_grads(*args)
            _numpy_outputs(fn, "kl_gaussian", ("kl", "dmu", "dlogvar"), KL_MISTAKES, expected, args, what, tried,
                           sizes=(None,) + (args[0].shape[0],) * 2)
    return ("equals the closed-form KL (sum over Z, mean over N) and its gradients dmu = mu / N, "
            "dlogvar = (exp(logvar) - 1) / (2N) on 3 cases")


# --------------------------------------------------------------------------- 2. the reparameterisation's backward

def rep_std_is_exp_logvar(dz, logvar, eps):
    return dz.copy(), dz * eps * np.exp(logvar)                 # std = exp(logvar): no / 2


def rep_half_missing(dz, logvar, eps):
    return dz.copy(), dz * eps * np.exp(logvar / 2)             # d exp(logvar/2) / dlogvar lost its 1/2


def rep_std_factor_forgotten(dz, logvar, eps):
    return dz.copy(), dz * eps                                  # only dz/dstd's eps, no dstd/dlogvar


def rep_eps_forgotten(dz, logvar, eps):
    return dz.copy(), dz * 0.5 * np.exp(logvar / 2)             # dstd/dlogvar without the eps it multiplies


def rep_dmu_times_std(dz, logvar, eps):
    return dz * np.exp(logvar / 2), dz * eps * 0.5 * np.exp(logvar / 2)   # mu is added, not scaled


def rep_summed_over_batch(dz, logvar, eps):
    return dz.sum(axis=0), (dz * eps * 0.5 * np.exp(logvar / 2)).sum(axis=0)   # (Z,): like a bias gradient


REPARAM_MISTAKES = (
    Mistake("std = exp(logvar)", rep_std_is_exp_logvar,
            "dlogvar uses std = exp(logvar): the std is exp(logvar / 2) (logvar is log sigma^2), and "
            "d exp(logvar / 2) / dlogvar = exp(logvar / 2) / 2"),
    Mistake("dlogvar missing 1/2", rep_half_missing,
            "dlogvar is twice too large: z = mu + exp(logvar / 2) * eps, and the chain rule through "
            "exp(logvar / 2) brings a factor 1/2"),
    Mistake("std factor forgotten", rep_std_factor_forgotten,
            "dlogvar = dz * eps stops at dz/dstd = eps: multiply by dstd/dlogvar too (the std is exp(logvar / 2), "
            "its derivative exp(logvar / 2) / 2)"),
    Mistake("eps forgotten", rep_eps_forgotten,
            "dlogvar forgets eps: the std multiplies eps in z = mu + std * eps, so dz/dstd = eps, then times "
            "dstd/dlogvar"),
    Mistake("dmu times std", rep_dmu_times_std,
            "dmu is scaled by the std: mu is ADDED in z = mu + std * eps, so dz/dmu = 1 and dmu = dz"),
    Mistake("summed over the batch", rep_summed_over_batch,
            "the gradients are summed over the batch: mu and logvar are per sample (N, Z), so dmu and dlogvar "
            "keep the shape (N, Z), one gradient per sample (no sum over axis 0)"),
)

REPARAM_CASES = [(2, 3), (4, 5), (16, 8)]


def reparam_case(case: int):
    """Case ``case`` (1 to 3) of the reparameterize_backward check: ``dz, logvar, eps``, each (N, Z)."""
    N, Z = REPARAM_CASES[case - 1]
    rng = np.random.default_rng(810 + case)
    return rng.standard_normal((N, Z)), 0.8 * rng.standard_normal((N, Z)), rng.standard_normal((N, Z))


@check.exercise(points=2, mistakes=REPARAM_MISTAKES, reference=ref.reparameterize_backward,
                forbid=(ref.reparameterize,), hints=[
    "z = mu + std * eps with std = exp(logvar / 2) and eps a constant drawn outside the network: z is an "
    "ordinary differentiable function of mu and logvar. Apply the chain rule element by element.",
    "dmu = dz * dz/dmu, and dz/dmu is 1 (mu is added). dlogvar = dz * dz/dstd * dstd/dlogvar, where dz/dstd is "
    "eps and std = exp(logvar / 2). Every array stays (N, Z): nothing is summed.",
    "std = np.exp(logvar / 2); dmu = dz.copy() (or dz * 1.0); dlogvar = dz * eps * (the derivative of "
    "exp(logvar / 2) with respect to logvar).",
])
def reparameterize_backward(fn):
    """Gradients through z = mu + exp(logvar / 2) * eps: (dmu, dlogvar)."""
    for case in range(1, len(REPARAM_CASES) + 1):
        args = reparam_case(case)
        what = "N = {}, Z = {}".format(*REPARAM_CASES[case - 1])
        line = (f"from dlcourse.gan.checks import reparam_case; dz, logvar, eps = reparam_case({case}); "
                "reparameterize_backward(dz, logvar, eps)")
        with trying("reparameterize_backward", label=what, call_text=line) as tried:
            expected = ref.reparameterize_backward(*args)
            _numpy_outputs(fn, "reparameterize_backward", ("dmu", "dlogvar"), REPARAM_MISTAKES, expected, args,
                           what, tried, sizes=(None, None))
    return "dmu = dz and dlogvar = dz * eps * exp(logvar / 2) / 2, (N, Z) each, on 3 cases"


# --------------------------------------------------------------------------- 3. the discriminator's loss from logits

def dl_sigmoid_then_log(real_logits, fake_logits):
    p_real, p_fake = 1 / (1 + np.exp(-real_logits)), 1 / (1 + np.exp(-fake_logits))
    loss = -np.mean(np.log(p_real)) - np.mean(np.log(1 - p_fake))            # log(0) = -inf at large logits
    return loss, (p_real - 1) / real_logits.size, p_fake / fake_logits.size


def dl_labels_swapped(real_logits, fake_logits):
    loss = np.mean(ref.softplus(real_logits)) + np.mean(ref.softplus(-fake_logits))     # real -> 0, fake -> 1
    return loss, ref.sigmoid(real_logits) / real_logits.size, -ref.sigmoid(-fake_logits) / fake_logits.size


def dl_gradient_sign(real_logits, fake_logits):
    loss = np.mean(ref.softplus(-real_logits)) + np.mean(ref.softplus(fake_logits))
    return loss, ref.sigmoid(-real_logits) / real_logits.size, -ref.sigmoid(fake_logits) / fake_logits.size


def dl_sum_not_mean(real_logits, fake_logits):
    loss = np.sum(ref.softplus(-real_logits)) + np.sum(ref.softplus(fake_logits))
    return loss, -ref.sigmoid(-real_logits), ref.sigmoid(fake_logits)


def dl_grads_not_divided(real_logits, fake_logits):
    loss = np.mean(ref.softplus(-real_logits)) + np.mean(ref.softplus(fake_logits))
    return loss, -ref.sigmoid(-real_logits), ref.sigmoid(fake_logits)                   # the means' 1/N forgotten


def dl_fake_term_missing(real_logits, fake_logits):
    loss = np.mean(ref.softplus(-real_logits))                                       # only "real -> 1"
    return loss, -ref.sigmoid(-real_logits) / real_logits.size, np.zeros_like(fake_logits)


def dl_one_mean_over_both(real_logits, fake_logits):
    n = real_logits.size + fake_logits.size                                        # BCE over the joined batch
    loss = (np.sum(ref.softplus(-real_logits)) + np.sum(ref.softplus(fake_logits))) / n
    return loss, -ref.sigmoid(-real_logits) / n, ref.sigmoid(fake_logits) / n


D_LOSS_MISTAKES = (
    Mistake("sigmoid then log", dl_sigmoid_then_log,
            "the loss is not finite at large logits: either a sigmoid rounded to 0 before its log (sigmoid(-800) "
            "= 0 and 1 - sigmoid(800) = 0, log(0) = -inf) or an exp of a large number overflowed (np.exp(800) = "
            "inf, so np.log1p(np.exp(800)) = inf); write it from the logits with softplus: -log sigmoid(s) = "
            "softplus(-s) and -log(1 - sigmoid(s)) = softplus(s), softplus(t) = np.logaddexp(0, t), exact for "
            "every t"),
    Mistake("labels swapped", dl_labels_swapped,
            "the labels are swapped: D must call the real samples real (label 1: -log sigmoid(s_real) = "
            "softplus(-s_real)) and the generated ones fake (label 0: softplus(s_fake)); yours rewards the opposite"),
    Mistake("gradient sign", dl_gradient_sign,
            "the loss is right but both gradients have the wrong sign: d softplus(-s)/ds = -sigmoid(-s) (pushes "
            "the real logits UP when descending) and d softplus(s)/ds = +sigmoid(s)"),
    Mistake("sum instead of mean", dl_sum_not_mean,
            "the loss sums over the samples: take the mean of each term (over its own batch), so the loss does "
            "not grow with the batch size, and divide the gradients by the batch sizes too"),
    Mistake("gradient not divided by the batch size", dl_grads_not_divided,
            "the loss is right but the gradients are not divided by the batch size: each term is a MEAN, so "
            "dreal is divided by N (real_logits.size) and dfake by M (fake_logits.size)"),
    Mistake("fake term missing", dl_fake_term_missing,
            "only the real half is there: D's loss also has mean(softplus(s_fake)) for the generated samples "
            "(label 0), and dfake is its gradient, sigmoid(s_fake) / M"),
    Mistake("one mean over both batches", dl_one_mean_over_both,
            "both halves are averaged together (divided by N + M): the loss is the mean over the real batch PLUS "
            "the mean over the fake batch, each divided by its own size"),
)

# (N real, M fake, logit scale); the last case has logits of size 800
D_LOSS_CASES = [((3,), (4,), 1.0), ((5, 1), (3, 1), 2.0), ((8,), (6,), 800.0)]


def d_loss_case(case: int):
    """Case ``case`` (1 to 3) of the d_loss_from_logits check: ``real_logits, fake_logits``.
    Case 3 has logits of size ~800, of both signs (a discriminator that is very sure, right or wrong)."""
    shape_r, shape_f, scale = D_LOSS_CASES[case - 1]
    rng = np.random.default_rng(820 + case)
    if scale > 100:
        sign_r = np.array([1, -1] * 4, dtype=float)[:shape_r[0]]
        sign_f = np.array([-1, 1] * 4, dtype=float)[:shape_f[0]]
        return (sign_r * scale * (1 + 0.1 * rng.random(shape_r)),
                sign_f * scale * (1 + 0.1 * rng.random(shape_f)))
    return scale * rng.standard_normal(shape_r), scale * rng.standard_normal(shape_f)


def _not_finite_at_large(table, row: str, names, scale, what):
    """The outputs' test for the large-logit case: a non-finite loss is the log of an underflowed sigmoid."""
    def test(out):
        if scale < 100:
            return
        values = [np.asarray(o, dtype=np.float64) if not isinstance(o, complex) else np.nan for o in out]
        if not np.all(np.isfinite(values[0])):
            fail_with(table, row, f"({what})")
        for name, v in zip(names[1:], values[1:]):
            if not np.all(np.isfinite(v)):
                raise CheckFailed(f"{name} contains NaN or inf at logits of size 800 ({what}): the sigmoid "
                                  "overflows there (np.exp(800) = inf, inf / inf = nan); compute it without a large "
                                  "exp, e.g. sigmoid(s) = np.exp(-np.logaddexp(0, -s))", mistake="sigmoid overflows")
    return test


def _large_case_message(names, got, expected, scale, what):
    if scale < 100 or same_items(got, expected):
        return
    if not _close(got[0], expected[0]):
        raise CheckFailed(f"the loss is right on small logits but wrong at logits of size 800 ({what}): log(sigmoid(s)) "
                          "loses everything there, and clipping the probabilities only hides it (the loss should "
                          "grow like |s|); write the loss with softplus(t) = np.logaddexp(0, t)",
                          mistake="large logits")


@check.exercise(points=3, mistakes=D_LOSS_MISTAKES, reference=(ref.d_loss_from_logits,) + _twins("d_loss_from_logits"),
                forbid=(ref.softplus, ref.sigmoid), hints=[
    "D outputs a logit s; D's probability 'real' is sigmoid(s). Its loss is binary cross-entropy with label 1 "
    "for the real batch and 0 for the fake one, each averaged over its own batch. Write every log-probability "
    "straight from the logit, without computing a sigmoid first: at s = -800 the sigmoid is 0 in floating point.",
    "-log sigmoid(s) = softplus(-s) and -log(1 - sigmoid(s)) = softplus(s), with softplus(t) = log(1 + exp(t)) "
    "= np.logaddexp(0, t), exact for every t. Their derivatives: d softplus(t)/dt = sigmoid(t). Divide each "
    "gradient by its batch's size (.size), since each term is a mean.",
    "softplus = lambda t: np.logaddexp(0, t); sigmoid = lambda t: np.exp(-np.logaddexp(0, -t)) (both stable); "
    "loss = np.mean(softplus(...)) + np.mean(softplus(...)); dreal = ... / real_logits.size; "
    "dfake = ... / fake_logits.size (each the derivative of its own softplus term; mind the signs).",
])
def d_loss_from_logits(fn):
    """D's loss mean(softplus(-s_real)) + mean(softplus(s_fake)) and its gradients, stable at any logit."""
    names = ("loss", "dreal", "dfake")
    for case in range(1, len(D_LOSS_CASES) + 1):
        args = d_loss_case(case)
        shape_r, shape_f, scale = D_LOSS_CASES[case - 1]
        what = f"real {shape_r}, fake {shape_f}" + (", logits of size 800" if scale > 100 else "")
        line = (f"from dlcourse.gan.checks import d_loss_case; real_logits, fake_logits = d_loss_case({case}); "
                "d_loss_from_logits(real_logits, fake_logits)")
        with trying("d_loss_from_logits", label=what, call_text=line) as tried:
            expected = ref.d_loss_from_logits(*args)
            _numpy_outputs(fn, "d_loss_from_logits", names, D_LOSS_MISTAKES, expected, args, what, tried,
                           before=_not_finite_at_large(D_LOSS_MISTAKES, "sigmoid then log", names, scale, what),
                           after=lambda out: _large_case_message(names, out, expected, scale, what),
                           sizes=(None, args[0].size, args[1].size))
    return ("mean(softplus(-s_real)) + mean(softplus(s_fake)) with gradients -sigmoid(-s_real) / N and "
            "sigmoid(s_fake) / M, finite at logits of size 800")


# --------------------------------------------------------------------------- 4. the generator's non-saturating loss

def gl_minimax(fake_logits):
    return -np.mean(ref.softplus(fake_logits)), -ref.sigmoid(fake_logits) / fake_logits.size   # log(1 - D), minimised


def gl_sign_flipped(fake_logits):
    return -np.mean(ref.softplus(-fake_logits)), ref.sigmoid(-fake_logits) / fake_logits.size  # maximises -log D


def gl_sigmoid_then_log(fake_logits):
    p = 1 / (1 + np.exp(-fake_logits))
    return -np.mean(np.log(p)), (p - 1) / fake_logits.size                               # log(0) at s = -800


def gl_gradient_sigmoid(fake_logits):
    return np.mean(ref.softplus(-fake_logits)), ref.sigmoid(fake_logits) / fake_logits.size    # forgot the - 1


def gl_sum_not_mean(fake_logits):
    return np.sum(ref.softplus(-fake_logits)), -ref.sigmoid(-fake_logits)


def gl_grad_not_divided(fake_logits):
    return np.mean(ref.softplus(-fake_logits)), -ref.sigmoid(-fake_logits)


G_LOSS_MISTAKES = (
    Mistake("minimax loss", gl_minimax,
            "that is the MINIMAX loss mean(log(1 - D(G(z)))) = -mean(softplus(s)): when D confidently rejects the "
            "fakes (very negative logits) its gradient -sigmoid(s) / N vanishes and G stops learning; the "
            "non-saturating loss is -mean(log D(G(z))) = mean(softplus(-s)), gradient (sigmoid(s) - 1) / N"),
    Mistake("sign flipped", gl_sign_flipped,
            "the sign is flipped: G MINIMISES -log D(G(z)) = softplus(-s) (it wants D to call its samples real); "
            "yours maximises it, i.e. helps D"),
    Mistake("sigmoid then log", gl_sigmoid_then_log,
            "the loss is not finite at large logits: either a sigmoid rounded to 0 before its log (sigmoid(-800) "
            "= 0, log(0) = -inf) or an exp of a large number overflowed (np.exp(800) = inf, so "
            "np.log1p(np.exp(-s)) = inf at s = -800); write -log sigmoid(s) as softplus(-s) = "
            "np.logaddexp(0, -s), exact for every s"),
    Mistake("gradient sigmoid(s)", gl_gradient_sigmoid,
            "the loss is right but the gradient is sigmoid(s) / N: d softplus(-s)/ds = -sigmoid(-s) = "
            "sigmoid(s) - 1, negative (descending pushes the fake logits UP)"),
    Mistake("sum instead of mean", gl_sum_not_mean,
            "the loss sums over the samples: take the mean over the batch, and divide the gradient by N "
            "(fake_logits.size)"),
    Mistake("gradient not divided by N", gl_grad_not_divided,
            "the loss is right but the gradient is N times too large: the loss is a mean, so each sample's "
            "gradient is divided by N (fake_logits.size)"),
)

# (shape, kind): ordinary logits, logits of a D that rejects the fakes (~ -8), and logits of size 800
G_LOSS_CASES = [((4,), "normal"), ((6, 1), "rejected"), ((8,), "huge")]


def g_loss_case(case: int):
    """Case ``case`` (1 to 3) of the g_loss_nonsaturating check: ``fake_logits``.  Case 2 is a discriminator
    that rejects the fakes confidently (logits near -8), case 3 has logits of size ~800 of both signs."""
    shape, kind = G_LOSS_CASES[case - 1]
    rng = np.random.default_rng(830 + case)
    if kind == "normal":
        return (rng.standard_normal(shape),)
    if kind == "rejected":
        return (-8 + rng.standard_normal(shape),)
    sign = np.array([-1, 1] * 4, dtype=float)[:shape[0]]
    return (sign * 800 * (1 + 0.1 * rng.random(shape)),)


@check.exercise(points=2, mistakes=G_LOSS_MISTAKES, reference=(ref.g_loss_nonsaturating,) + _twins("g_loss_nonsaturating"),
                forbid=(ref.softplus, ref.sigmoid, ref.g_loss_minimax), hints=[
    "The generator wants D to call its samples real. Instead of minimising log(1 - D(G(z))), which goes flat "
    "exactly when D rejects the fakes, it minimises -log D(G(z)); with D = sigmoid(s), write that from the logit "
    "s directly and average it over the batch.",
    "-log sigmoid(s) = softplus(-s) = np.logaddexp(0, -s), finite for every s. Its derivative is "
    "-sigmoid(-s), which is sigmoid(s) - 1, near -1 when D rejects the fake: a strong gradient. Divide it by "
    "the batch size.",
    "sigmoid = lambda t: np.exp(-np.logaddexp(0, -t)) (stable); loss = np.mean(np.logaddexp(0, ...)); "
    "dfake = ... / fake_logits.size: the derivative of softplus(-s) with respect to s, by the chain rule.",
])
def g_loss_nonsaturating(fn):
    """G's non-saturating loss mean(softplus(-s_fake)) and its gradient, stable at any logit."""
    names = ("loss", "dfake")
    for case in range(1, len(G_LOSS_CASES) + 1):
        args = g_loss_case(case)
        shape, kind = G_LOSS_CASES[case - 1]
        scale = 800.0 if kind == "huge" else 1.0
        what = f"fake_logits {shape}" + {"normal": "", "rejected": ", D rejects the fakes (logits near -8)",
                                         "huge": ", logits of size 800"}[kind]
        line = (f"from dlcourse.gan.checks import g_loss_case; (fake_logits,) = g_loss_case({case}); "
                "g_loss_nonsaturating(fake_logits)")
        with trying("g_loss_nonsaturating", label=what, call_text=line) as tried:
            expected = ref.g_loss_nonsaturating(*args)
            _numpy_outputs(fn, "g_loss_nonsaturating", names, G_LOSS_MISTAKES, expected, args, what, tried,
                           before=_not_finite_at_large(G_LOSS_MISTAKES, "sigmoid then log", names, scale, what),
                           after=lambda out: _large_case_message(names, out, expected, scale, what),
                           sizes=(None, args[0].size))
    return ("mean(softplus(-s)) with gradient (sigmoid(s) - 1) / N: about -1/N per sample when D rejects the "
            "fakes (the minimax loss's would be ~0), finite at logits of size 800")


# --------------------------------------------------------------------------- 5. R1 in PyTorch

class RingMLP(nn.Module):
    """The ring's MLP, ``sizes[0] -> H -> H -> sizes[-1]`` with LeakyReLU(0.2): attributes fc1, fc2, fc3."""

    def __init__(self, sizes=(2, 16, 16, 1)):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.fc3 = nn.Linear(sizes[2], sizes[3])

    def forward(self, x):
        x = F.leaky_relu(self.fc1(x), 0.2)
        x = F.leaky_relu(self.fc2(x), 0.2)
        return self.fc3(x)


def _ring_mlp(sizes, seed):
    torch.manual_seed(seed)
    return RingMLP(sizes).double()


def r1_no_create_graph(D, x_real, gamma):
    x = x_real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x)                      # create_graph=False: g is a constant
    return gamma / 2 * g.pow(2).sum(dim=1).mean()


def r1_grad_wrt_parameters(D, x_real, gamma):
    grads = torch.autograd.grad(D(x_real).sum(), list(D.parameters()), create_graph=True)   # w.r.t. the weights
    return gamma / 2 * sum(g.pow(2).sum() for g in grads)


def r1_norm_not_squared(D, x_real, gamma):
    x = x_real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gamma / 2 * g.norm(dim=1).mean()                         # ||g||, not ||g||^2


def r1_gamma_not_halved(D, x_real, gamma):
    x = x_real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gamma * g.pow(2).sum(dim=1).mean()


def r1_sum_over_batch(D, x_real, gamma):
    x = x_real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gamma / 2 * g.pow(2).sum()                               # no mean over N


def r1_mean_over_everything(D, x_real, gamma):
    x = x_real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gamma / 2 * g.pow(2).mean()                              # also divided by D (the coordinates)


def r1_input_without_grad(D, x_real, gamma):
    (g,) = torch.autograd.grad(D(x_real).sum(), x_real, create_graph=True)   # x_real does not require grad
    return gamma / 2 * g.pow(2).sum(dim=1).mean()


def r1_mean_before_grad(D, x_real, gamma):
    x = x_real.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).mean(), x, create_graph=True)  # .mean(): every row's gradient / N
    return gamma / 2 * g.pow(2).sum(dim=1).mean()


def r1_callers_tensor_flagged(D, x_real, gamma):
    x_real.requires_grad_(True)                                    # flips the CALLER's data tensor
    (g,) = torch.autograd.grad(D(x_real).sum(), x_real, create_graph=True)
    return gamma / 2 * g.pow(2).sum(dim=1).mean()


R1_MISTAKES = (
    Mistake("create_graph=False", r1_no_create_graph,
            "the penalty has the right value but no graph (requires_grad is False): torch.autograd.grad(..., "
            "create_graph=False) returns a constant, so loss.backward() cannot reach D's weights and D never "
            "learns from R1; pass create_graph=True so that the gradient itself can be differentiated"),
    Mistake("gradient w.r.t. the parameters", r1_grad_wrt_parameters,
            "that is the gradient with respect to D's PARAMETERS: R1 penalises D's slope in x, grad_x D(x), so "
            "differentiate D(x).sum() with respect to the input x (one (N, D) gradient, one row per sample)"),
    Mistake("norm not squared", r1_norm_not_squared,
            "the norm is not squared: R1 = gamma / 2 * mean over the batch of ||grad_x D(x)||^2, i.e. "
            ".pow(2).sum(dim=1).mean(), not .norm(dim=1).mean()"),
    Mistake("caller's x_real set to require grad", r1_callers_tensor_flagged,
            "the penalty is right, but x_real.requires_grad_(True) changed the CALLER's batch: it now requires "
            "grad, and every later use of it (D's loss, the next step) builds graphs through the data; make a "
            "fresh leaf instead, x = x_real.detach().requires_grad_(True), and differentiate with respect to x"),
    Mistake("mean before the gradient", r1_mean_before_grad,
            "the per-sample gradients are divided by N: differentiate the SUM of the logits (each sample's logit "
            "depends only on its own x), then average the squared norms; with D(x).mean() every gradient is N "
            "times too small and the penalty N^2 times too small"),
    Mistake("gamma not halved", r1_gamma_not_halved,
            "the penalty is twice too large: R1's weight is gamma / 2 (Mescheder et al. 2018), not gamma"),
    Mistake("sum over the batch", r1_sum_over_batch,
            "the squared norms are summed over the batch: R1 takes their MEAN over the N real samples, so it "
            "does not grow with the batch size"),
    Mistake("mean over the coordinates too", r1_mean_over_everything,
            "the squared gradient is averaged over the coordinates too (.pow(2).mean()): each sample's squared "
            "NORM sums over its D coordinates (.sum(dim=1)); only the batch is averaged"),
    Mistake("x_real does not require grad", r1_input_without_grad,
            "torch cannot differentiate with respect to x_real: it does not require grad (a data batch never "
            "does); make a leaf that does, x = x_real.detach().requires_grad_(True), and use it for D(x) and "
            "torch.autograd.grad"),
)

# (N, H, gamma)
R1_CASES = [(3, 8, 1.0), (5, 16, 10.0), (16, 32, 0.1)]


def r1_case(case: int):
    """Case ``case`` (1 to 3) of the r1_penalty check: ``D, x_real, gamma`` (D a float64 RingMLP 2 -> H -> H -> 1,
    x_real (N, 2) from the ring, without requires_grad)."""
    N, H, gamma = R1_CASES[case - 1]
    D = _ring_mlp((2, H, H, 1), 840 + case)
    x = torch.from_numpy(ref.sample_ring(N, np.random.default_rng(840 + case), sigma=0.3))
    return D, x, gamma


def _scalar(value):
    """A float from a tensor or a number; None for anything else."""
    try:
        if isinstance(value, torch.Tensor):
            return float(value.detach().reshape(()).item()) if value.numel() == 1 else None
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


@check.exercise(points=3, mistakes=R1_MISTAKES, reference=(r1_penalty_torch,) + _twins("r1_penalty"), hints=[
    "R1 penalises how steep D is at the real data: the squared norm of D's gradient with respect to its INPUT, "
    "averaged over the real batch, times gamma / 2. That gradient must itself be differentiable (the penalty "
    "is added to D's loss and backpropagated into D's weights): a gradient of a gradient.",
    "Make the input a leaf that requires grad (a fresh x from x_real.detach()); run D on it; "
    "torch.autograd.grad of the summed logits with respect to x, with create_graph=True, gives (N, D) "
    "(summing is fine: each logit depends on its own row only). Then the squared norm per row, mean over N.",
    "x = x_real.detach().requires_grad_(True); (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True); "
    "return gamma / 2 * (the per-row sum of g squared, averaged over the batch).",
])
def r1_penalty(fn):
    """The R1 penalty gamma/2 * mean ||grad_x D(x)||^2 on the real batch, differentiable (PyTorch)."""
    for case in range(1, len(R1_CASES) + 1):
        N, H, gamma = R1_CASES[case - 1]
        what = f"N = {N}, H = {H}, gamma = {gamma}"
        line = (f"from dlcourse.gan.checks import r1_case; D, x_real, gamma = r1_case({case}); "
                "r1_penalty(D, x_real, gamma)")
        with trying("r1_penalty", label=what, call_text=line) as tried:
            D, x, _ = r1_case(case)
            expected_t = r1_penalty_torch(D, x, gamma)
            expected = float(expected_t.detach())
            params = list(D.parameters())
            expected_grads = torch.autograd.grad(expected_t, params, allow_unused=True)
            x_in = x.clone()
            try:
                out = call(fn, D, x_in, gamma, allow_mutation=True)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                if isinstance(err, RuntimeError) and "does not require grad" in str(err):
                    fail_with(R1_MISTAKES, "x_real does not require grad", f"({what})")
                raise
            expect(torch.equal(x_in.detach(), x), f"r1_penalty changed x_real in place ({what}): compute on a copy")
            if x_in.requires_grad and not x.requires_grad:
                value = _scalar(out)
                if value is not None and _close(value, expected, rtol=1e-8):
                    fail_with(R1_MISTAKES, "caller's x_real set to require grad", f"({what})")
            value = _scalar(out)
            if value is None:
                raise CheckFailed(f"r1_penalty returned {type(out).__name__}: return the penalty as a scalar "
                                  f"tensor ({what})")
            tried.got, tried.expected = value, expected
            diagnose(value, expected, R1_MISTAKES, apply=lambda row: _scalar(row(*r1_case(case))),
                     suffix=f"({what})")
            factor = _factor_of(value, expected, N)
            if factor is not None and not _close(value, expected, rtol=1e-8):
                raise CheckFailed(f"the penalty {factor} ({what})", mistake="constant factor")
            expect_close(value, expected, f"the penalty ({what})", rtol=1e-8)
            if not isinstance(out, torch.Tensor):
                raise CheckFailed(f"r1_penalty returned a {type(out).__name__}: return the TENSOR (no .item(), no "
                                  f"float()): D's loss needs its graph ({what})")
            if not out.requires_grad:
                fail_with(R1_MISTAKES, "create_graph=False", f"({what})")
            got_grads = torch.autograd.grad(out.reshape(()), params, allow_unused=True)
            for (name, _), g, e in zip(D.named_parameters(), got_grads, expected_grads):
                g = torch.zeros_like(_) if g is None else g
                e = torch.zeros_like(_) if e is None else e
                expect_close(g.detach().numpy(), e.detach().numpy(),
                             f"the penalty's gradient with respect to D's {name} ({what})", rtol=1e-6)
    return ("gamma / 2 * mean_n ||grad_x D(x_n)||^2 with create_graph=True: its value and its gradients with "
            "respect to all of D's weights equal the reference on 3 discriminators")


# --------------------------------------------------------------------------- 6. FID from two feature sets

def _fid_parts(f1, f2, cov=lambda x: np.cov(x, rowvar=False)):
    return f1.mean(axis=0), cov(f1), f2.mean(axis=0), cov(f2)


def _tr_sqrt_product(s1, s2):
    """Tr((S1 S2)^(1/2)) by the symmetric form, as the reference does."""
    w, v = np.linalg.eigh(s1)
    h = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(h @ s2 @ h), 0, None)))


def fid_cov_wrong_axis(features1, features2):
    mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
    s1, s2 = np.cov(features1), np.cov(features2)                 # rows taken as variables: (N, N)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * _tr_sqrt_product(s1, s2))


def fid_no_trace_term(features1, features2):
    mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
    return float(np.sum((mu1 - mu2) ** 2))                        # the covariances never compared


def fid_elementwise_sqrt(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.sqrt(s1 @ s2)))   # np.sqrt: per entry


def fid_sqrt_of_sum(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2)
    w, v = np.linalg.eigh(s1 + s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.sum(np.sqrt(np.clip(w, 0, None))))


def fid_mean_not_squared(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2)
    return float(np.linalg.norm(mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * _tr_sqrt_product(s1, s2))


def fid_biased_covariance(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2, cov=lambda x: np.cov(x, rowvar=False, ddof=0))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * _tr_sqrt_product(s1, s2))


def fid_cross_term_not_doubled(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - _tr_sqrt_product(s1, s2))


def fid_complex_kept(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2)
    ev = np.linalg.eigvals(s1 @ s2).astype(complex)                # the eigenvalues of a non-symmetric product
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(ev))   # a complex number


def fid_eigenvalues_not_clipped(features1, features2):
    mu1, s1, mu2, s2 = _fid_parts(features1, features2)
    ev = np.linalg.eigvals(s1 @ s2).real                           # round-off makes some slightly negative
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(ev)))


FID_MISTAKES = (
    Mistake("covariance over the wrong axis", fid_cov_wrong_axis,
            "the covariance is over the wrong axis: the features are ROWS (N, F), so the covariance is (F, F): "
            "np.cov(features, rowvar=False), or xc.T @ xc / (N - 1) with xc the centred rows; np.cov(features) "
            "takes the rows as variables and gives (N, N)"),
    Mistake("no trace term", fid_no_trace_term,
            "only the means are compared: FID adds the covariances' term Tr(S1 + S2 - 2 (S1 S2)^(1/2)), so two "
            "sets with the same mean but different spreads still differ"),
    Mistake("element-wise sqrt", fid_elementwise_sqrt,
            "np.sqrt(S1 @ S2) takes the square root of each ENTRY: FID needs the MATRIX square root, a matrix R "
            "with R @ R = S1 S2; only its trace is needed, the sum of the square roots of S1 S2's eigenvalues"),
    Mistake("square root of S1 + S2", fid_sqrt_of_sum,
            "the cross term is the square root of the PRODUCT S1 S2 (its trace), not of the sum S1 + S2"),
    Mistake("mean term not squared", fid_mean_not_squared,
            "the mean term is the SQUARED distance ||mu1 - mu2||^2 (np.sum((mu1 - mu2) ** 2)), not the norm"),
    Mistake("biased covariance", fid_biased_covariance,
            "the covariances divide by N: FID (like pytorch-fid and np.cov) uses the unbiased covariance, "
            "divided by N - 1 (ddof=1); it matters for small N"),
    Mistake("cross term not doubled", fid_cross_term_not_doubled,
            "the cross term needs its factor 2: Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (without it a set's FID with itself "
            "is not 0)"),
    Mistake("complex result", fid_complex_kept,
            "fid returned a complex number: the square root of the non-symmetric S1 S2 (np.linalg.eigvals, "
            "scipy.linalg.sqrtm) carries tiny imaginary parts from round-off; the true value is real, so take "
            ".real, or use the symmetric form Tr((S1^(1/2) S2 S1^(1/2))^(1/2)) with np.linalg.eigh"),
    Mistake("eigenvalues not clipped", fid_eigenvalues_not_clipped,
            "fid returned NaN: when a covariance is singular (fewer samples than features), round-off makes some "
            "of S1 S2's zero eigenvalues slightly negative, and their square root is NaN; clip them at 0 "
            "(np.clip(ev, 0, None)) before the square root"),
)

# (N1, N2, F, mean shift); the last case has fewer samples than features: singular covariances
FID_CASES = [(6, 6, 2, 0.5), (5, 7, 3, 1.0), (40, 50, 4, 0.3), (5, 6, 8, 0.2)]


def fid_case(case: int):
    """Case ``case`` (1 to 4) of the fid check: ``features1 (N1, F), features2 (N2, F)``.  The features are
    positively correlated; case 4 has fewer samples than features (singular covariances)."""
    n1, n2, f, shift = FID_CASES[case - 1]
    rng = np.random.default_rng(850 + case)
    a1 = np.eye(f) + 0.5 * rng.random((f, f))                      # mixing matrices with positive entries
    a2 = np.eye(f) + 0.5 * rng.random((f, f))
    return rng.standard_normal((n1, f)) @ a1 + 1.0, 1.5 * rng.standard_normal((n2, f)) @ a2 + 1.0 + shift


@check.exercise(points=3, mistakes=FID_MISTAKES, reference=_twins("fid") + (ref.fid,),
                forbid=(ref.frechet_distance, ref.gaussian_stats), hints=[
    "FID fits a Gaussian to each set of features (a mean vector and a covariance matrix over the F features) "
    "and returns the Fréchet distance between the two Gaussians: a squared distance of the means plus a "
    "term that compares the covariances through the matrix square root of their product.",
    "mu = features.mean(axis=0) (F,); the covariance (F, F) over the rows, unbiased (N - 1), e.g. "
    "np.cov(features, rowvar=False). FID = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)). Only the "
    "trace of the square root is needed: the sum of the square roots of the eigenvalues of S1 S2.",
    "diff = mu1 - mu2; the symmetric form is safest: with R1 = S1^(1/2) (np.linalg.eigh of S1, square roots of "
    "its eigenvalues clipped at 0), Tr((S1 S2)^(1/2)) = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(R1 @ S2 @ R1), "
    "0, None))); return a float.",
])
def fid(fn):
    """FID between two sets of feature rows (N1, F) and (N2, F): a float."""
    for case in range(1, len(FID_CASES) + 1):
        n1, n2, f, _ = FID_CASES[case - 1]
        args = fid_case(case)
        what = f"N1 = {n1}, N2 = {n2}, F = {f}" + (", fewer samples than features" if n1 < f else "")
        line = (f"from dlcourse.gan.checks import fid_case; features1, features2 = fid_case({case}); "
                "fid(features1, features2)")
        with trying("fid", label=what, call_text=line) as tried:
            expected = ref.fid(*args)
            try:
                out = call(fn, *args)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                raises_like(FID_MISTAKES, err, lambda row: row(*args), f"({what})")
                if err is not None and is_shape_error(err) and n1 != n2:
                    fail_with(FID_MISTAKES, "covariance over the wrong axis",
                              f"(here (N1, N1) = ({n1}, {n1}) and (N2, N2) = ({n2}, {n2}) do not fit: {err}) ({what})")
                raise
            if np.iscomplexobj(out) or isinstance(out, complex):
                fail_with(FID_MISTAKES, "complex result", f"(got {out!r}) ({what})")
            if hasattr(out, "detach"):
                out = out.detach().cpu().numpy()
            value = _scalar(out) if np.ndim(out) == 0 else None
            if value is None:
                raise CheckFailed(f"fid returned {type(out).__name__} of shape {np.shape(out)}: return one number, "
                                  f"float(...) ({what})")
            tried.got, tried.expected = value, expected
            if not np.isfinite(value) and n1 < f:
                fail_with(FID_MISTAKES, "eigenvalues not clipped", f"({what})")
            diagnose(value, expected, FID_MISTAKES, apply=lambda row: row(*args), suffix=f"({what})",
                     rtol=1e-6, atol=1e-9)
            expect_close(value, expected, f"fid ({what})", rtol=1e-6)
    return ("||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) with unbiased (F, F) covariances, real and finite "
            "on 4 cases, singular covariances included")


# --------------------------------------------------------------------------- 7. modes covered on the ring

def _hq_share(good, n):
    return float(np.mean(good)) if n else 0.0


def mc_wrong_axis(samples, centers, sigma, min_share=0.01, n_std=3.0):
    d2 = ((samples[:, None, :] - centers[None, :, :]) ** 2).sum(axis=1)    # summed over the MODES: (N, 2)
    nearest = d2.argmin(axis=1)
    good = d2[np.arange(len(samples)), nearest] <= (n_std * sigma) ** 2
    counts = np.bincount(nearest[good], minlength=len(centers)).astype(np.int64)
    return int(np.sum((counts > 0) & (counts >= min_share * len(samples)))), counts, _hq_share(good, len(samples))


def _modes_from(d2, good_of, min_share, n, k, nearest_only=True, strict=False, any_count=False):
    nearest = d2.argmin(axis=1)
    good = good_of(d2[np.arange(n), nearest])
    counts = np.bincount(nearest[good], minlength=k).astype(np.int64)
    if any_count:
        covered = counts > 0
    elif strict:
        covered = counts > min_share * n
    else:
        covered = (counts > 0) & (counts >= min_share * n)
    return int(np.sum(covered)), counts, _hq_share(good, n)


def _d2(samples, centers):
    return ((samples[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1)   # (N, K)


def mc_squared_vs_3sigma(samples, centers, sigma, min_share=0.01, n_std=3.0):
    return _modes_from(_d2(samples, centers), lambda d2: d2 <= n_std * sigma, min_share, len(samples),
                       len(centers))                                       # d^2 against 3 sigma, not (3 sigma)^2


def mc_counts_samples(samples, centers, sigma, min_share=0.01, n_std=3.0):
    _, counts, hq = _modes_from(_d2(samples, centers), lambda d2: d2 <= (n_std * sigma) ** 2, min_share,
                                len(samples), len(centers))
    return int(counts.sum()), counts, hq                                   # the high-quality SAMPLES


def mc_one_sigma(samples, centers, sigma, min_share=0.01, n_std=3.0):
    return _modes_from(_d2(samples, centers), lambda d2: d2 <= sigma ** 2, min_share, len(samples),
                       len(centers))                                       # n_std ignored: within 1 sigma


def mc_every_mode_in_reach(samples, centers, sigma, min_share=0.01, n_std=3.0):
    d2 = _d2(samples, centers)
    near = d2 <= (n_std * sigma) ** 2                                      # (N, K): every mode within reach
    counts = near.sum(axis=0).astype(np.int64)
    covered = (counts > 0) & (counts >= min_share * len(samples))
    return int(np.sum(covered)), counts, _hq_share(near.any(axis=1), len(samples))


def mc_strict_threshold(samples, centers, sigma, min_share=0.01, n_std=3.0):
    return _modes_from(_d2(samples, centers), lambda d2: d2 <= (n_std * sigma) ** 2, min_share, len(samples),
                       len(centers), strict=True)                          # > instead of >=


def mc_min_share_ignored(samples, centers, sigma, min_share=0.01, n_std=3.0):
    return _modes_from(_d2(samples, centers), lambda d2: d2 <= (n_std * sigma) ** 2, min_share, len(samples),
                       len(centers), any_count=True)                       # one sample covers a mode


MODES_MISTAKES = (
    Mistake("distance over the wrong axis", mc_wrong_axis,
            "the squared distances are summed over the wrong axis: samples[:, None, :] - centers[None, :, :] is "
            "(N, K, 2), and the distance sums the 2 COORDINATES (axis=-1), leaving (N, K), one distance per "
            "sample and mode"),
    Mistake("squared distance against 3 sigma", mc_squared_vs_3sigma,
            "a SQUARED distance is compared with n_std * sigma: compare it with (n_std * sigma) ** 2 (or take the "
            "square root first); as written, samples much farther than 3 sigma count as high quality"),
    Mistake("counting samples, not modes", mc_counts_samples,
            "n_covered counts high-quality SAMPLES: it is the number of MODES whose count reaches the threshold, "
            "np.sum(counts >= min_share * N), at most K"),
    Mistake("threshold 1 sigma", mc_one_sigma,
            "a sample counts only within 1 sigma: the radius of 'high quality' is n_std * sigma (3 sigma by "
            "default, VEEGAN's rule)"),
    Mistake("every mode within reach", mc_every_mode_in_reach,
            "a sample counts for every mode within 3 sigma: it counts for its NEAREST mode only (argmin over the "
            "modes), and only if that one is within 3 sigma; otherwise samples between two close modes count twice"),
    Mistake("> instead of >=", mc_strict_threshold,
            "a mode with exactly min_share * N samples is not counted: it is covered when counts >= min_share * N "
            "(at least that share), not >"),
    Mistake("min_share ignored", mc_min_share_ignored,
            "one stray sample covers a mode: a mode is covered only if it receives at least min_share of ALL N "
            "samples (counts >= min_share * N)"),
)

MODES_CASES = ["hand-made ring", "two close modes", "a collapsed generator"]


def modes_case(case: int):
    """Case ``case`` (1 to 3) of the modes_covered check: ``samples (N, 2), centers (K, 2), sigma, min_share``."""
    rng = np.random.default_rng(860 + case)
    if case == 1:                                                 # ring of 8, sigma 0.05, 40 samples, need 10
        sigma, centers = 0.05, ref.ring_centers()
        angle = rng.uniform(0, 2 * np.pi, 40)
        unit = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        radius = np.concatenate([np.full(12, 0.5), np.full(10, 2.0), np.full(10, 5.0), np.full(8, 2.5)]) * sigma
        mode = np.repeat([0, 1, 2, 3], [12, 10, 10, 8])
        return centers[mode] + radius[:, None] * unit, centers, sigma, 0.25
    if case == 2:                                                 # modes 0.3 apart with sigma 0.1: 3 sigma overlaps
        sigma, centers = 0.1, np.array([[0.0, 0.0], [0.3, 0.0], [2.0, 2.0]])
        near0 = np.stack([rng.uniform(0.10, 0.14, 20), rng.uniform(-0.02, 0.02, 20)], axis=1)
        at1 = centers[1] + 0.03 * rng.standard_normal((5, 2))
        at2 = centers[2] + 0.05 * rng.standard_normal((25, 2))
        return np.concatenate([near0, at1, at2]), centers, sigma, 0.2
    sigma, centers = 0.05, ref.ring_centers()                      # 5 of 8 modes, some wide, some junk
    mode = rng.choice([0, 1, 2, 5, 6], size=1900, p=[0.3, 0.3, 0.2, 0.15, 0.05])
    width = np.where(mode == 2, 2.5 * sigma, sigma)
    x = centers[mode] + width[:, None] * rng.standard_normal((1900, 2))
    junk = rng.uniform(-2.5, 2.5, (100, 2))
    return np.concatenate([x, junk]), centers, sigma, 0.01


def _modes_same(a, b) -> bool:
    try:
        return len(a) == len(b) == 3 and int(a[0]) == int(b[0]) and np.array_equal(np.asarray(a[1]), b[1]) \
            and abs(float(a[2]) - float(b[2])) <= 1e-12
    except (TypeError, ValueError):
        return False


@check.exercise(points=2, mistakes=MODES_MISTAKES, reference=ref.modes_covered, hints=[
    "VEEGAN's rule: a sample is 'high quality' when it lies within n_std standard deviations of its NEAREST "
    "centre, and it then counts for that mode; a mode is covered when it gets at least a share min_share of "
    "all the samples. Return the number of covered modes, the per-mode counts and the high-quality share.",
    "Squared distances to every centre with broadcasting: (N, 1, 2) - (1, K, 2), summed over the coordinates, "
    "(N, K); the nearest mode by argmin over K; high quality where that squared distance is <= (n_std * "
    "sigma) ** 2; counts per mode with np.bincount(..., minlength=K).",
    "d2 = ((samples[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1); nearest = d2.argmin(axis=1); "
    "good = ... ((N,) bool: the nearest centre's d2 within the radius); counts = np.bincount(..., "
    "minlength=len(centers)); n_covered = ... (the modes with at least one sample and at least min_share * N); "
    "return (int(n_covered), counts, float(good.mean())).",
])
def modes_covered(fn):
    """(n_covered, counts, high_quality) of generated ring samples, VEEGAN's rule."""
    names = ("n_covered", "counts", "high_quality")
    for case in range(1, len(MODES_CASES) + 1):
        args = modes_case(case)
        what = f"{MODES_CASES[case - 1]}: N = {len(args[0])}, K = {len(args[1])}, sigma = {args[2]}, " \
               f"min_share = {args[3]}"
        line = (f"from dlcourse.gan.checks import modes_case; samples, centers, sigma, min_share = "
                f"modes_case({case}); modes_covered(samples, centers, sigma, min_share)")
        with trying("modes_covered", label=what, call_text=line) as tried:
            expected = ref.modes_covered(*args)
            try:
                out = call(fn, *args)
            except CheckFailed as fail:
                raises_like(MODES_MISTAKES, getattr(fail, "error", None), lambda row: row(*args), f"({what})")
                raise
            out = expect_tuple(out, 3, "(n_covered, counts, high_quality)", "modes_covered")
            tried.got, tried.expected = out, expected
            diagnose(out, expected, MODES_MISTAKES, same=_modes_same, apply=lambda row: row(*args),
                     suffix=f"({what})")
            expect(np.ndim(out[0]) == 0 and float(out[0]) == int(expected[0]),
                   f"n_covered is {out[0]!r}, expected {expected[0]} ({what})")
            counts = np.asarray(out[1])
            expect(counts.shape == expected[1].shape and np.array_equal(counts, expected[1]),
                   f"counts is {counts.tolist()}, expected {expected[1].tolist()}: the high-quality samples of each "
                   f"mode, shape (K,) ({what})")
            expect_close(out[2], expected[2], f"high_quality ({what})")
    return ("VEEGAN's count: nearest centre within 3 sigma, modes with at least min_share of the samples, on a "
            "hand-made ring, two overlapping modes and a collapsed generator")


# --------------------------------------------------------------------------- 8. one GAN training step (PyTorch)

def _d_loss_t(D, x_real, fake):
    return F.softplus(-D(x_real)).mean() + F.softplus(D(fake)).mean()


def gs_no_detach(G, D, opt_g, opt_d, x_real, z):
    opt_g.zero_grad()
    opt_d.zero_grad()                                              # both zeroed once, at the top
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake)                            # no detach: backward runs into G too
    d_loss.backward()
    opt_d.step()
    g_loss = F.softplus(-D(G(z))).mean()
    g_loss.backward()                                              # adds to the D-step gradients in G's .grad
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_minimax(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake.detach())
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = -F.softplus(D(fake)).mean()                           # log(1 - D(G(z))), minimised
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_d_maximises(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake.detach())
    opt_d.zero_grad()
    (-d_loss).backward()                                           # D climbs its own loss
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_d_zero_grad_missing(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake.detach())
    d_loss.backward()                                              # adds to whatever D's .grad held
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_g_zero_grad_missing(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake.detach())
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()
    g_loss.backward()                                              # adds to whatever G's .grad held
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_g_first(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    g_loss = F.softplus(-D(fake)).mean()                           # G steps against the OLD D first
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    d_loss = _d_loss_t(D, x_real, fake.detach())
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    return d_loss.item(), g_loss.item()


def gs_g_on_d_loss(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake)                            # no detach, and G steps on D's loss
    opt_d.zero_grad()
    opt_g.zero_grad()
    d_loss.backward()
    opt_d.step()
    opt_g.step()                                                   # G helps D: it learns to be caught
    with torch.no_grad():
        g_loss = F.softplus(-D(fake)).mean()
    return d_loss.item(), g_loss.item()


def gs_no_zero_grad(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake.detach())
    d_loss.backward()                                              # no opt_d.zero_grad(): adds to D's .grad
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()
    g_loss.backward()                                              # no opt_g.zero_grad() either
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_d_output_detached(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(fake).detach()).mean()   # D's LOGITS detached
    opt_d.zero_grad()
    d_loss.backward()                                              # D learns from the real half only
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


def gs_no_detach_g_zeroed(G, D, opt_g, opt_d, x_real, z):
    fake = G(z)
    d_loss = _d_loss_t(D, x_real, fake)                            # no detach: backward runs into G too
    opt_d.zero_grad()
    d_loss.backward(retain_graph=True)
    opt_d.step()
    g_loss = F.softplus(-D(fake)).mean()
    opt_g.zero_grad()                                              # ...but G's .grad is cleared before its own
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


GAN_MISTAKES = (
    Mistake("no detach", gs_no_detach,
            "the fake batch is not detached in D's step: d_loss.backward() also runs back into G and leaves the "
            "gradient of D's loss in G's .grad, which then joins G's own gradient (or is wasted work at best); "
            "score D(fake.detach()) in D's loss, so D's step treats the fakes as constants"),
    Mistake("minimax generator loss", gs_minimax,
            "G minimises the minimax loss log(1 - D(G(z))) = -softplus(s): it saturates when D rejects the fakes; "
            "use the non-saturating loss -log D(G(z)) = F.softplus(-D(fake)).mean()"),
    Mistake("D maximises its loss", gs_d_maximises,
            "D's step goes uphill: D MINIMISES softplus(-s_real) + softplus(s_fake) (BCE with real 1, fake 0); "
            "call d_loss.backward(), not (-d_loss).backward()"),
    Mistake("D's zero_grad missing", gs_d_zero_grad_missing,
            "D's gradients are not zeroed before its backward: .backward() ADDS to .grad, so D's step used old "
            "gradients too (the last step's, and those the generator's backward left in D); call "
            "opt_d.zero_grad() before d_loss.backward()"),
    Mistake("no zero_grad at all", gs_no_zero_grad,
            "neither optimizer's gradients are zeroed: .backward() ADDS to .grad, so both steps used old gradients "
            "too (the leftovers in .grad, the last step's, and what G's backward left in D); call "
            "opt_d.zero_grad() before d_loss.backward() and opt_g.zero_grad() before g_loss.backward()"),
    Mistake("D's logits detached", gs_d_output_detached,
            "D received no gradient from the fake half: detach the generated batch (fake.detach()) before D, not "
            "D's logits (D(fake).detach() cuts D out of that term, so D only learns to call the real batch real)"),
    Mistake("no detach (weights right)", gs_no_detach_g_zeroed,
            "the weights match, but the fake batch is not detached in D's step: d_loss.backward() also "
            "backpropagates into G, wasted work that opt_g.zero_grad() happens to clear here (and wrong gradients "
            "for G wherever G's .grad is not zeroed before its own backward); score D(fake.detach()) in D's loss"),
    Mistake("G's zero_grad missing", gs_g_zero_grad_missing,
            "G's gradients are not zeroed before its backward: .backward() ADDS to .grad, so G's step used "
            "gradients left over from before; call opt_g.zero_grad() before g_loss.backward()"),
    Mistake("G step before D step", gs_g_first,
            "the steps are in the wrong order: first D's step (on the real batch and the detached fakes), then "
            "G's step scored by the UPDATED D"),
    Mistake("G trained on D's loss", gs_g_on_d_loss,
            "G is stepped with the gradient of D's loss: that makes G help D (its samples get easier to reject); "
            "detach the fakes in D's loss and give G its own loss, F.softplus(-D(fake)).mean(), its own "
            "zero_grad, backward and step"),
)

# (N, H, steps)
GAN_CASES = [(4, 8, 1), (8, 16, 3), (32, 32, 3)]


def gan_case(case: int):
    """Case ``case`` (1 to 3) of the gan_train_step check: ``G, D, opt_g, opt_d, batches``.

    G (Z = 2 -> H -> H -> 2) and D (2 -> H -> H -> 1) are float64 RingMLPs, both optimizers Adam(lr 1e-3,
    betas (0.5, 0.999)); ``batches`` is a list of ``(x_real, z)`` pairs, one per step.  Every parameter's
    .grad holds junk before the first step, as if another computation had left it there."""
    N, H, steps = GAN_CASES[case - 1]
    G, D = _ring_mlp((2, H, H, 2), 870 + case), _ring_mlp((2, H, H, 1), 880 + case)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(890 + case)
    for p in list(G.parameters()) + list(D.parameters()):
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    rng = np.random.default_rng(890 + case)
    batches = [(torch.from_numpy(ref.sample_ring(N, rng, sigma=0.05)),
                torch.randn(N, 2, generator=gen, dtype=torch.float64)) for _ in range(steps)]
    return G, D, opt_g, opt_d, batches


def _run_steps(step_fn, case, count=None):
    """Run ``step_fn`` over a fresh case's batches: (losses and parameters as one vector, G-gradient count)."""
    G, D, opt_g, opt_d, batches = gan_case(case)
    into_g = [0]
    handles = [p.register_hook(lambda g: into_g.__setitem__(0, into_g[0] + 1)) for p in G.parameters()]
    losses = []
    try:
        for x_real, z in batches:
            out = step_fn(G, D, opt_g, opt_d, x_real.clone(), z.clone())
            losses.append(out)
    finally:
        for h in handles:
            h.remove()
    return losses, _state(G, D), into_g[0] / len(list(G.parameters())) / len(batches)


def _state(G, D):
    return np.concatenate([p.detach().numpy().ravel() for p in list(G.parameters()) + list(D.parameters())])


def _loss_pair(out, what):
    if out is None:
        raise CheckFailed(f"gan_train_step returned None: return (d_loss, g_loss) as two numbers ({what})")
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed(f"gan_train_step must return two numbers (d_loss, g_loss), e.g. (d_loss.item(), "
                          f"g_loss.item()); got a {type(out).__name__} ({what})")
    pair = [_scalar(v) for v in out]
    if any(v is None for v in pair):
        raise CheckFailed(f"gan_train_step must return two numbers (d_loss, g_loss); got "
                          f"({type(out[0]).__name__}, {type(out[1]).__name__}) ({what})")
    return pair


def _gan_vector(losses, state):
    return np.concatenate([np.ravel(losses), state])


def _translate_gan_error(fail, what):
    err = getattr(fail, "error", None)
    if err is None:
        return
    text = str(err)
    if "backward through the graph a second time" in text:
        fail_with(GAN_MISTAKES, "no detach", f"(torch says: backward through the graph a second time: D's "
                                             f"backward already freed G's graph) ({what})")
    if "modified by an inplace operation" in text:
        raise CheckFailed("G's loss goes through D's output computed BEFORE opt_d.step() changed D's weights in "
                          "place (torch: 'modified by an inplace operation'): score the fakes again with the "
                          f"updated D, g_loss = F.softplus(-D(fake)).mean() after D's step ({what})",
                          mistake="stale D output") from None


@check.exercise(points=4, mistakes=GAN_MISTAKES, seconds=60,
                reference=(gan_train_step_reference,) + _twins("gan_step") + (ref.gan_step,), hints=[
    "One step trains D, then G. D learns to call the real batch real and G(z) fake; during D's step G must not "
    "move and must not even receive gradients, so the fakes enter D's loss DETACHED (constants). Then G learns "
    "to make the UPDATED D call its samples real, with the non-saturating loss; its gradients flow through D, "
    "but only G's optimizer steps.",
    "Generate the fakes once. D's step: its loss is Exercise 3's (real -> 1, fake -> 0) written with "
    "F.softplus on D's logits, where the fakes go in cut off from G's graph; then the usual three calls of a "
    "training step for D's optimizer (clear the old gradients first: backward ADDS to .grad). G's step: score "
    "the SAME fakes again with the updated D, Exercise 4's loss, and the same three calls for G's optimizer. "
    "Return both losses as Python floats.",
    "fake = G(z); d_loss = F.softplus(-D(x_real)).mean() + F.softplus(D(...)).mean() (the fake half: which "
    "tensor gets .detach()?); opt_d.zero_grad(); d_loss.backward(); opt_d.step(); g_loss = ... (the "
    "non-saturating loss, by the updated D); then G's three calls ...; return d_loss.item(), g_loss.item().",
])
def gan_train_step(fn):
    """One GAN step in PyTorch (D then G, non-saturating, detach): (d_loss, g_loss)."""
    for case in range(1, len(GAN_CASES) + 1):
        N, H, steps = GAN_CASES[case - 1]
        what = f"N = {N}, H = {H}, {steps} step{'s' if steps > 1 else ''}"
        line = (f"from dlcourse.gan.checks import gan_case; G, D, opt_g, opt_d, batches = gan_case({case}); "
                "[gan_train_step(G, D, opt_g, opt_d, x, z) for x, z in batches]")
        with trying("gan_train_step", label=what, call_text=line) as tried:
            exp_losses, exp_state, _ = _run_steps(gan_train_step_reference, case)
            expected = _gan_vector(exp_losses, exp_state)
            try:
                losses, state, into_g = _run_steps(
                    lambda *a: _loss_pair(call(fn, *a, allow_mutation=True), what), case)
            except CheckFailed as fail:
                _translate_gan_error(fail, what)
                raise
            got = _gan_vector(losses, state)
            n_g = sum(p.numel() for p in gan_case(case)[0].parameters())
            gap = np.abs(state - exp_state) if state.shape == exp_state.shape else np.full(2, np.inf)
            tried.got = {"losses": [tuple(v) for v in losses], "G's weights, max error": float(gap[:n_g].max()),
                         "D's weights, max error": float(gap[n_g:].max())}
            tried.expected = {"losses": [tuple(v) for v in exp_losses]}
            diagnose(got, expected, GAN_MISTAKES, suffix=f"({what})", rtol=1e-7, atol=1e-10,
                     apply=lambda row: _gan_vector(*_run_steps(row, case)[:2]))
            if into_g > 1:
                row = "no detach (weights right)" if _close(got, expected, rtol=1e-7, atol=1e-10) else "no detach"
                fail_with(GAN_MISTAKES, row, f"(here G received gradients {into_g:g} times a step; once, "
                                             f"from its own loss, is enough) ({what})")
            d_ok = _close(np.asarray(losses)[:, 0], np.asarray(exp_losses)[:, 0], rtol=1e-7)
            g_ok = _close(np.asarray(losses)[:, 1], np.asarray(exp_losses)[:, 1], rtol=1e-7)
            g_params = _close(state[:n_g], exp_state[:n_g], rtol=1e-7)
            d_params = _close(state[n_g:], exp_state[n_g:], rtol=1e-7)
            if not (d_ok and g_ok and g_params and d_params):
                parts = [f"d_loss {'right' if d_ok else 'WRONG'}", f"g_loss {'right' if g_ok else 'WRONG'}",
                         f"D's weights {'right' if d_params else 'WRONG'}",
                         f"G's weights {'right' if g_params else 'WRONG'}"]
                where = ("D's step" if not (d_ok and d_params) else "G's step")
                raise CheckFailed(f"after {steps} step{'s' if steps > 1 else ''}: {', '.join(parts)}; look at "
                                  f"{where} first ({what})")
    return ("after 1 and 3 steps every weight of G and D and every loss equal the reference's; the D step's "
            "gradients never reach G (detach), and leftover .grad never leaks into either step")


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_optimal_d", answer=0.5, rtol=1e-3,
    explanation="D*(x) = p_data(x) / (p_data(x) + p_g(x)); where the two densities are equal that is 1/2 "
                "everywhere: the best discriminator can only guess.",
    mistakes=[
        Mistake("one", 1.0, "1 means 'surely real', but the generated samples look exactly like the real ones: "
                            "D*(x) = p_data / (p_data + p_g)"),
        Mistake("zero", 0.0, "0 means 'surely fake'; with p_g = p_data D*(x) = p_data / (p_data + p_g)"),
        Mistake("log 2", float(np.log(2)), "log 2 is a value of the loss, not of D: D outputs a probability, "
                                          "p_data / (p_data + p_g)"),
    ])

check.question(
    "q_d_loss_equilibrium", answer=2 * float(np.log(2)), rtol=1e-3,
    explanation="with D = 1/2 everywhere both terms are -log(1/2) = log 2: mean(softplus(-s_real)) + "
                "mean(softplus(s_fake)) = 2 log 2 ≈ 1.386 (the s = 0 logits). A D loss that hovers near 1.39 "
                "means D cannot tell real from fake.",
    mistakes=[
        Mistake("log 2", float(np.log(2)), "that is one of the two terms: the loss adds the real half and the fake "
                                           "half, log 2 each"),
        Mistake("zero", 0.0, "0 would need D to be certain and right on every sample; at the equilibrium it "
                             "outputs 1/2"),
        Mistake("log2 base 2", 2.0, "2 is 2 log2(2): the losses use the natural log, 2 ln 2"),
        Mistake("minus 2 log 2", -2 * float(np.log(2)), "the minimax value function V(D, G) is -2 log 2 at the "
                                                        "equilibrium; D's LOSS is -V, positive"),
    ])

check.question(
    "q_is_upper_bound", answer=10.0, rtol=1e-3,
    explanation="IS = exp(E_x KL(p(y|x) || p(y))) is largest when every p(y|x) is one-hot and p(y) uniform over the "
                "K classes: KL = log K for each x, IS = K = 10.",
    mistakes=[
        Mistake("lower bound", 1.0, "1 is the LOWEST score (all samples give the same p(y|x)); the largest "
                                    "comes from confident predictions spread evenly over the classes"),
        Mistake("log K", float(np.log(10)), "log 10 is the largest KL; the score is its exponential"),
        Mistake("infinite", float("inf"), "the KL of a one-hot p(y|x) from the uniform p(y) is log K, finite; "
                                          "IS = exp(log K) = K"),
    ])

check.question(
    "q_kl_one_dim", answer=0.5, rtol=1e-3,
    explanation="-1/2 (1 + logvar - mu^2 - exp(logvar)) = -1/2 (1 + 0 - 1 - 1) = 1/2: the KL of N(1, 1) from "
                "N(0, 1) is half the squared distance of the means.",
    mistakes=[
        Mistake("factor 1/2 missing", 1.0, "that leaves out the factor 1/2 in -1/2 (1 + logvar - mu^2 - exp(logvar))"),
        Mistake("sign", -0.5, "a KL divergence is never negative: -1/2 (1 + logvar - mu^2 - exp(logvar))"),
        Mistake("zero", 0.0, "0 is the KL of N(0, 1) from itself; here the mean moved to 1"),
    ])

check.question(
    "q_saturating_loss", answer="a", choices=("a", "b", "c", "d"),
    explanation="with D = sigmoid(s), log(1 - D) has d/ds = -D ≈ 0 when D rejects the fakes (D ≈ 0): the minimax "
                "loss saturates at the very start of training; -log D has d/ds = D - 1 ≈ -1, strong. That is why "
                "G is trained with the non-saturating loss.",
    mistakes=[
        Mistake("non-saturating", "b", "-log D(G(z)) has gradient D - 1 ≈ -1 with respect to the logit when "
                                       "D ≈ 0: large, not vanishing"),
        Mistake("both", "c", "they push the logit the same way but not equally hard: d/ds of log(1 - D) is -D ≈ 0, "
                             "of -log D it is D - 1 ≈ -1"),
        Mistake("neither", "d", "look at d/ds log(1 - sigmoid(s)) = -sigmoid(s): when D rejects the fakes "
                                "(s very negative) it is ≈ 0"),
    ])
