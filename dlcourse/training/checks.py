"""Graded checks for the exercises of chapter 04 (``solutions/04_training.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the
classic wrong answers, each a plain wrong implementation with the exercise's own
signature.  A check runs the learner's code on cases from small to large against
the exercise form in :mod:`dlcourse.training.numpy_impl` and, when an answer is
wrong, recomputes the table's rows on the same inputs to name the mistake.  What
recomputation cannot see (a random mask, a random initialisation, an overflow, an
array changed in place, an aliased dict) the check recognises itself and reports
with its row's message.  A failure shows the smallest failing case and a call that
reproduces it.  ``tests/test_course.py`` hands every row to its check and proves
that exactly its message comes back.

Dimension letters: N examples, D features, K classes.
"""
from __future__ import annotations

import numpy as np

from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close,
                              expect_defaults, expect_tuple, fail_with, first_wrong_stage, trying)
from dlcourse.grading import matches as _close
from dlcourse.grading import raises_like, same_items
from dlcourse.training import numpy_impl as ref
from dlcourse.training import practice
from dlcourse.training import torch_impl

check = Checker("04_training")

__all__ = ["check", "early_stopping_problem"]


# --------------------------------------------------------------------------- helpers

def _finite(value) -> bool:
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return True  # not numbers: the comparisons say what is wrong


def _has_nan(value) -> bool:
    try:
        return bool(np.any(np.isnan(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- 1. binary cross-entropy from logits
#
# The wrong implementations of every table are plain functions with the exercise's signature.

def _naive_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def bce_log_of_sigmoid(logits, target):
    p = _naive_sigmoid(logits)
    loss = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    return loss, (p - target) / logits.size


def bce_naive_softplus(logits, target):
    loss = np.mean(np.log(1 + np.exp(logits)) - logits * target)  # exp(1000) = inf
    return loss, (_naive_sigmoid(logits) - target) / logits.size


def bce_clipped(logits, target):
    p = np.clip(_naive_sigmoid(logits), 1e-7, 1 - 1e-7)
    loss = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    return loss, (_naive_sigmoid(logits) - target) / logits.size


def bce_sum_not_mean(logits, target):
    z = logits
    loss = np.sum(np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z))))
    return loss, ref.sigmoid(z) - target


def bce_sign_flipped(logits, target):
    loss, _ = ref.bce_with_logits(logits, target)
    return loss, (target - ref.sigmoid(logits)) / logits.size


def bce_grad_not_divided(logits, target):
    loss, _ = ref.bce_with_logits(logits, target)
    return loss, ref.sigmoid(logits) - target


def bce_sigmoid_derivative(logits, target):
    loss, _ = ref.bce_with_logits(logits, target)
    p = ref.sigmoid(logits)
    return loss, (p - target) * p * (1 - p) / logits.size


def bce_mean_over_rows(logits, target):
    z = logits
    elementwise = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
    return np.sum(elementwise) / len(z), (ref.sigmoid(z) - target) / len(z)


def bce_grad_over_rows(logits, target):
    loss, _ = ref.bce_with_logits(logits, target)
    return loss, (ref.sigmoid(logits) - target) / logits.shape[0]   # N, not N·D


BCE_MISTAKES = (
    Mistake("sum not mean", bce_sum_not_mean,
            "the loss is the sum over the elements and the gradient is not divided by their number: the loss "
            "is the mean over all elements, so its gradient is (sigmoid(z) - y) / z.size"),
    Mistake("sign flipped", bce_sign_flipped,
            "dlogits has the wrong sign: the derivative of softplus(z) - z y is sigmoid(z) - y, not "
            "y - sigmoid(z) (a step against this gradient must raise z where y = 1)"),
    Mistake("gradient not divided by the size", bce_grad_not_divided,
            "the loss is a mean, but dlogits is sigmoid(z) - y without the 1 / z.size of that mean"),
    Mistake("sigmoid derivative factor", bce_sigmoid_derivative,
            "dlogits carries an extra factor p (1 - p), the sigmoid's derivative (the habit from a squared error "
            "on probabilities): for cross-entropy on logits it cancels, and the gradient is (p - y) / size"),
    Mistake("mean over rows only", bce_mean_over_rows,
            "for an (N, D) input the loss is divided by N only (a mean over rows of row sums): average over all "
            "N·D elements (np.mean), and divide the gradient by z.size"),
    Mistake("gradient divided by shape[0]", bce_grad_over_rows,
            "the loss is right but dlogits is divided by z.shape[0] (the number of rows, N): the loss is a mean "
            "over all N·D elements, so divide the gradient by z.size"),
    Mistake("log of sigmoid", bce_log_of_sigmoid,
            "the loss is nan at logits of ±1000: log(sigmoid(z)) and log(1 - sigmoid(z)) hit log(0) = -inf, and "
            "0 · (-inf) = nan; rewrite the loss as softplus(z) - z·y and compute softplus(z) = log(1 + e^z) "
            "stably, max(z, 0) + log1p(exp(-|z|))"),
    Mistake("naive softplus overflow", bce_naive_softplus,
            "the loss is inf at a logit of +1000: np.exp(1000) overflows in log(1 + exp(z)); use the stable "
            "softplus max(z, 0) + log1p(exp(-|z|)), whose exp only sees numbers <= 0"),
    Mistake("probabilities clipped", bce_clipped,
            "the loss is too small at logits of ±1000: clipping the probabilities to [eps, 1 - eps] caps each "
            "element's loss at -log(eps); compute the loss from the logits, softplus(z) - z·y, with no clipping"),
)


def _bce_cases():
    """Small to large: a vector, an (N, D) batch with soft labels, logits of ±1000, a large batch."""
    rng = np.random.default_rng(41)
    yield "3 logits", np.array([-1.5, 0.25, 2.0]), np.array([0.0, 1.0, 1.0])
    yield "an (N, D) = (4, 3) batch, soft labels", rng.standard_normal((4, 3)) * 2, rng.random((4, 3))
    extreme = np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 3.0]])
    yield "logits of ±1000", extreme, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    yield "a (64, 10) batch", rng.standard_normal((64, 10)) * 4, rng.integers(0, 2, (64, 10)).astype(float)


@check.exercise(points=2, mistakes=BCE_MISTAKES, reference=ref.bce_with_logits,
                forbid=(ref.bce_with_logits_forward, ref.bce_with_logits_backward), hints=[
    "Write the loss per element as softplus(z) - z·y, where softplus(z) = log(1 + e^z): it is the same "
    "number as -[y log σ(z) + (1 - y) log(1 - σ(z))], but never takes the log of 0. Its derivative is "
    "σ(z) - y.",
    "Compute softplus(z) as np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))): the exp only ever sees a "
    "number <= 0. The loss is the mean of the elementwise losses over ALL elements, so the gradient is "
    "divided by z.size.",
    "loss = float(np.mean(softplus - z * y)); dlogits = (sigmoid(z) - y) / z.size, with a stable sigmoid "
    "that never calls exp on a large positive number: e.g. np.where(z >= 0, 1 / (1 + exp(-|z|)), "
    "exp(-|z|) / (1 + exp(-|z|))), or scipy.special.expit (1 / (1 + exp(-z)) overflows, with a warning, "
    "at z = -1000).",
])
def bce_with_logits(fn):
    """Mean binary cross-entropy on logits and its gradient: (loss, dlogits)."""
    for what, z, y in _bce_cases():
        with trying("bce_with_logits", z, y, label=what) as tried:
            got = expect_tuple(call(fn, z, y), 2, "(loss, dlogits)", "bce_with_logits")
            expected = ref.bce_with_logits(z, y)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, BCE_MISTAKES, same=same_items, apply=lambda wrong: wrong(z, y),
                     suffix=f"({what})")
            loss, dz = got
            if _has_nan(loss):
                fail_with(BCE_MISTAKES, "log of sigmoid", f"({what})")
            if not _finite(loss):
                fail_with(BCE_MISTAKES, "naive softplus overflow", f"({what})")
            if np.abs(z).max() >= 1000 and np.ndim(loss) == 0 and float(loss) < expected[0] - 1e-3 \
                    and _close(dz, expected[1]):
                fail_with(BCE_MISTAKES, "probabilities clipped", f"({what})")
            expect(np.ndim(loss) == 0, f"the loss should be one number (the mean), got an array of shape "
                                       f"{np.shape(loss)}")
            expect_close(loss, expected[0], f"the loss ({what})")
            expect_close(dz, expected[1], f"dlogits ({what})")
    return "loss and dlogits equal F.binary_cross_entropy_with_logits on 4 cases, logits of ±1000 included"


# --------------------------------------------------------------------------- 2. standardising the splits

def _scale_of(std):
    return np.where(std == 0, 1.0, std)


def standardize_leak(x_train, x_val, x_test):
    pooled = np.concatenate([x_train, x_val, x_test])
    mean, scale = pooled.mean(axis=0), _scale_of(pooled.std(axis=0))
    return tuple((x - mean) / scale for x in (x_train, x_val, x_test))


def standardize_own_statistics(x_train, x_val, x_test):
    return tuple((x - x.mean(axis=0)) / _scale_of(x.std(axis=0)) for x in (x_train, x_val, x_test))


def standardize_global(x_train, x_val, x_test):
    mean, std = x_train.mean(), x_train.std()  # one number for all features
    return tuple((x - mean) / std for x in (x_train, x_val, x_test))


def standardize_wrong_axis(x_train, x_val, x_test):
    mean = x_train.mean(axis=1, keepdims=True)  # (N_train, 1): one per example
    std = x_train.std(axis=1, keepdims=True)
    return tuple((x - mean) / std for x in (x_train, x_val, x_test))


def standardize_zero_division(x_train, x_val, x_test):
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return tuple((x - mean) / std for x in (x_train, x_val, x_test))


def standardize_ddof1(x_train, x_val, x_test):
    mean, std = x_train.mean(axis=0), _scale_of(x_train.std(axis=0, ddof=1))
    return tuple((x - mean) / std for x in (x_train, x_val, x_test))


def standardize_eps(x_train, x_val, x_test):
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
    return tuple((x - mean) / std for x in (x_train, x_val, x_test))


def standardize_centred_only(x_train, x_val, x_test):
    mean = x_train.mean(axis=0)
    return x_train - mean, x_val - mean, x_test - mean


def standardize_in_place(x_train, x_val, x_test):
    mean, std = x_train.mean(axis=0), _scale_of(x_train.std(axis=0))
    for x in (x_train, x_val, x_test):
        x -= mean
        x /= std
    return x_train, x_val, x_test


def standardize_global_std(x_train, x_val, x_test):
    mean, std = x_train.mean(axis=0), x_train.std()   # per-feature mean, but ONE std for all features
    return tuple((x - mean) / std for x in (x_train, x_val, x_test))


STANDARDIZE_MISTAKES = (
    Mistake("statistics from all splits", standardize_leak,
            "the mean and std come from all three splits together: that leaks the validation and test sets "
            "into the preprocessing; fit them on x_train alone and apply those to every split"),
    Mistake("each split its own statistics", standardize_own_statistics,
            "each split is standardised with its own mean and std: the model learned on the training set's "
            "scale, so val and test must be shifted and scaled with the TRAINING statistics"),
    Mistake("global statistics", standardize_global,
            "one mean and one std for the whole array: standardise each feature (column) separately, "
            "x_train.mean(axis=0) and x_train.std(axis=0), shape (D,)"),
    Mistake("one global std", standardize_global_std,
            "the mean is per feature but the std is one number for the whole array (x_train.std() without "
            "axis): every feature needs its own scale too, x_train.std(axis=0), shape (D,)"),
    Mistake("wrong axis", standardize_wrong_axis,
            "the statistics are taken over axis=1, one per example (row), so they do not fit the other splits: "
            "take them per feature over the examples, axis=0, giving shape (D,)"),
    Mistake("division by zero", standardize_zero_division,
            "nan/inf appear: some features are constant on the training set (like the digits' border pixels, "
            "always 0), so their std is 0 and you divide by it; use scale 1 where the std is 0, as sklearn's "
            "StandardScaler"),
    Mistake("ddof=1", standardize_ddof1,
            "the std is the sample std (ddof=1, divided by N - 1): StandardScaler uses ddof=0, np.std's default"),
    Mistake("eps instead of scale 1", standardize_eps,
            "a feature constant on the training set is divided by a tiny eps, so where val or test differ from "
            "that constant the values explode: replace a zero std by 1 (as StandardScaler) instead of adding eps"),
    Mistake("centred only", standardize_centred_only,
            "the splits are centred but not scaled: divide by the training set's per-feature std as well, so that "
            "every feature has std 1 on the training set"),
    Mistake("inputs modified in place", standardize_in_place,
            "the arrays passed in were modified in place (x -= mean): the caller's data are destroyed; compute "
            "new arrays, (x - mean) / scale"),
)


def _standardize_cases():
    """Small to large; from the second case on, features that are constant on the training set."""
    rng = np.random.default_rng(42)
    yield "N = 4, 3, 2 examples, D = 2", rng.normal(3, 2, (4, 2)), rng.normal(3, 2, (3, 2)), rng.normal(3, 2, (2, 2))
    train = rng.normal(5, 3, (6, 4))
    train[:, 0], train[:, 3] = 0.0, 2.0            # constant on the training set
    val, test = rng.normal(5, 3, (5, 4)), rng.normal(5, 3, (3, 4))
    val[:, 0], test[:, 0], val[:, 3], test[:, 3] = 0.0, 0.0, 2.0, 2.0
    val[1, 0], test[2, 3] = 0.5, 3.0               # ... but not on the other splits
    yield "D = 4, features 0 and 3 constant on x_train", train, val, test
    train = rng.integers(0, 17, (50, 8)).astype(float)   # like the digits: intensities 0..16
    train[:, [0, 7]] = 0.0
    val, test = rng.integers(0, 17, (20, 8)).astype(float), rng.integers(0, 17, (30, 8)).astype(float)
    val[:, 0] = 0.0
    yield "digit-like intensities, N = 50, 20, 30, D = 8", train, val, test


def _constant_only(got, expected, x_train) -> bool:
    """The learner's splits are right on every feature with a non-zero training std, wrong on a constant one."""
    constant = x_train.std(axis=0) == 0
    if not constant.any():
        return False
    try:
        parts = [(np.asarray(g, dtype=np.float64), e) for g, e in zip(got, expected)]
    except (TypeError, ValueError):
        return False
    if any(g.shape != e.shape for g, e in parts):
        return False
    return all(_close(g[:, ~constant], e[:, ~constant]) for g, e in parts) and \
        not all(_close(g, e) for g, e in parts)


@check.exercise(points=2, mistakes=STANDARDIZE_MISTAKES, reference=ref.standardize_splits,
                forbid=(practice.fit_standardizer, practice.apply_standardizer), hints=[
    "The statistics come from the training set only (the validation and test sets stand for data you do "
    "not have yet), one mean and one std per feature; then the same shift and scale go to every split.",
    "mean and std over axis=0 (over the examples), each of shape (D,); np.std's default ddof=0 is "
    "StandardScaler's. A feature constant on the training set has std 0: give it scale 1 instead "
    "(np.where), so it becomes 0 rather than nan.",
    "scale = np.where(std == 0, 1.0, std); then return a tuple of three NEW arrays, (x - mean) / scale for "
    "x in (x_train, x_val, x_test); do not use -= or /= on the inputs.",
])
def standardize_splits(fn):
    """Standardise train, val and test with the training set's per-feature statistics."""
    for what, train, val, test in _standardize_cases():
        with trying("standardize_splits", train, val, test, label=what) as tried:
            args = (train.copy(), val.copy(), test.copy())
            expected = ref.standardize_splits(train, val, test)
            try:
                out = call(fn, *args, allow_mutation=True)
            except CheckFailed as fail:
                raises_like(STANDARDIZE_MISTAKES, getattr(fail, "error", None),
                            lambda wrong: wrong(train.copy(), val.copy(), test.copy()), f"({what})")
                if isinstance(getattr(fail, "error", None), ValueError) and "broadcast" in str(fail):
                    fail_with(STANDARDIZE_MISTAKES, "wrong axis", f"({what})")
                raise
            if not all(np.array_equal(a, b) for a, b in zip(args, (train, val, test))):
                fail_with(STANDARDIZE_MISTAKES, "inputs modified in place", f"({what})")
            got = expect_tuple(out, 3, "(train, val, test)", "standardize_splits", noun="arrays")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, STANDARDIZE_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda wrong: wrong(train.copy(), val.copy(), test.copy()))
            if not all(_finite(g) for g in got):
                fail_with(STANDARDIZE_MISTAKES, "division by zero", f"({what})")
            if _constant_only(got, expected, train):
                fail_with(STANDARDIZE_MISTAKES, "eps instead of scale 1", f"({what})")
            for name, g, e in zip(("train", "val", "test"), got, expected):
                expect_close(g, e, f"the standardised {name} split ({what})")
    return "train, val and test standardised with the training statistics on 3 cases, constant pixels included"


# --------------------------------------------------------------------------- 3. inverted dropout

def dropout_no_rescale(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    mask = rng.random(x.shape) >= p
    return x * mask, mask


def dropout_at_eval(x, p, train, rng):
    mask = rng.random(x.shape) >= p   # the train flag is never read
    return x * mask / (1 - p), mask


def dropout_not_inverted(x, p, train, rng):
    if not train:
        return x * (1 - p), np.ones(x.shape, dtype=bool)  # the original paper's form
    mask = rng.random(x.shape) >= p
    return x * mask, mask


def dropout_keeps_with_p(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    mask = rng.random(x.shape) < p    # kept with probability p: that is the drop probability
    return x * mask / (1 - p), mask


def dropout_divides_by_p(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    mask = rng.random(x.shape) >= p
    return x * mask / p, mask


def dropout_shared_mask(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    mask = rng.random(x.shape[1:]) >= p   # (D,): the same units dropped for every example
    return x * mask / (1 - p), mask


def dropout_nan_at_p1(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    mask = rng.random(x.shape) >= p
    return x * mask / (1 - p), mask   # p = 1: 0 / 0


def dropout_per_example(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    keep = rng.random((x.shape[0], 1)) >= p   # (N, 1): one draw per example, whole rows dropped
    mask = np.repeat(keep, x.shape[1], axis=1)
    return x * mask / (1 - p), mask


def dropout_duplicated_columns(x, p, train, rng):
    if not train:
        return x.copy(), np.ones(x.shape, dtype=bool)
    half = rng.random((x.shape[0], (x.shape[1] + 1) // 2)) >= p
    mask = np.repeat(half, 2, axis=1)[:, :x.shape[1]]   # every draw used for two neighbouring units
    return x * mask / (1 - p), mask


DROPOUT_MISTAKES = (
    Mistake("one mask per example", dropout_per_example,
            "whole examples are dropped or kept (one draw per row, broadcast over the features): dropout drops "
            "each UNIT independently, so draw one number per element, rng.random(x.shape), not rng.random((N, 1))"),
    Mistake("mask not independent per element", dropout_duplicated_columns,
            "the mask is not independent per element: neighbouring units are kept or dropped together (a draw "
            "reused, e.g. repeated or tiled columns); draw one fresh number per element, rng.random(x.shape)"),
    Mistake("no rescale", dropout_no_rescale,
            "in training the kept units are not scaled up: inverted dropout divides them by 1 - p, so that the "
            "expected output equals x and nothing needs rescaling at eval time"),
    Mistake("applied at eval", dropout_at_eval,
            "units are dropped in eval mode too: with train=False dropout is the identity (out = x, every unit "
            "kept), otherwise predictions are random"),
    Mistake("not inverted", dropout_not_inverted,
            "this is the original (non-inverted) dropout, which scales by 1 - p at eval time; inverted dropout "
            "scales the kept units by 1 / (1 - p) in training and leaves eval mode the identity"),
    Mistake("keeps with probability p", dropout_keeps_with_p,
            "about a fraction p of the units is kept: p is the probability of DROPPING a unit, so keep each with "
            "probability 1 - p (mask = rng.random(x.shape) >= p)"),
    Mistake("divides by p", dropout_divides_by_p,
            "the kept units are divided by p: divide by the keep probability, 1 - p"),
    Mistake("one mask shared", dropout_shared_mask,
            "the mask is shared by every example: each example of the batch has the same units dropped (one "
            "mask of shape (D,)); draw an independent mask for every element, of x's shape (N, D)"),
    Mistake("nan at p = 1", dropout_nan_at_p1,
            "with p = 1 the output is nan: every unit is dropped and x * 0 / 0 = nan; return zeros for p = 1 "
            "(as F.dropout does)"),
)


def _as_mask(mask, x, what):
    """The learner's mask as a bool array of x's shape, or a precise complaint."""
    if mask is None:
        raise CheckFailed(f"the mask is None in training mode ({what}): return (out, mask), mask True where a "
                          "unit was kept")
    mask = np.asarray(mask)
    if mask.shape != x.shape and mask.size == x.shape[-1]:
        fail_with(DROPOUT_MISTAKES, "one mask shared", f"(the mask has shape {mask.shape}; {what})")
    expect(mask.shape == x.shape, f"the mask has shape {mask.shape}, expected x's shape {x.shape} ({what})")
    expect(mask.dtype == bool, f"the mask has dtype {mask.dtype}: return a boolean mask (True where a unit is "
                               f"kept), e.g. rng.random(x.shape) >= p, not a 0/1 {mask.dtype} array ({what})")
    return mask


def _independence(mask, p, what):
    """A large mask must look like independent Bernoulli(1 - p) draws: no correlation between neighbouring
    columns or rows, and per-row kept fractions that spread like a binomial's."""
    if mask.shape[0] > 1 and (mask == mask[0]).all():
        fail_with(DROPOUT_MISTAKES, "one mask shared", f"({what})")
    if mask.shape[1] > 1 and (mask == mask[:, :1]).all():
        fail_with(DROPOUT_MISTAKES, "one mask per example", f"({what})")
    m = mask.astype(np.float64)

    def corr(a, b):
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        scale = np.sqrt((a @ a) * (b @ b))
        return 0.0 if scale == 0 else float(a @ b / scale)

    for where, c in (("neighbouring columns", corr(m[:, :-1], m[:, 1:])),
                     ("neighbouring rows", corr(m[:-1], m[1:]))):
        if abs(c) > 0.05:
            fail_with(DROPOUT_MISTAKES, "mask not independent per element",
                      f"(the mask's correlation between {where} is {c:.2f}, expected about 0; {what})")
    spread = m.mean(axis=1).var() / (p * (1 - p) / m.shape[1])
    if not 0.6 < spread < 1.6:
        fail_with(DROPOUT_MISTAKES, "mask not independent per element",
                  f"(the kept fraction per example varies {spread:.2f} times as much as independent draws "
                  f"would; {what})")


def _dropout_train_case(fn, x, p, seed, what):
    out, mask = expect_tuple(call(fn, x, p, True, np.random.default_rng(seed)), 2, "(out, mask)",
                             "dropout_forward")
    if p == 1.0 and _has_nan(out):
        fail_with(DROPOUT_MISTAKES, "nan at p = 1", f"({what})")
    mask = _as_mask(mask, x, what)
    if p < 1.0:
        scaled = x * mask / (1 - p)
        if not _close(out, scaled):
            if _close(out, x * mask):
                fail_with(DROPOUT_MISTAKES, "no rescale", f"({what})")
            if p > 0 and _close(out, x * mask / p):
                fail_with(DROPOUT_MISTAKES, "divides by p", f"({what})")
            if _close(out, x * ~mask / (1 - p)):
                raise CheckFailed(f"out keeps the units where your mask is False: the mask must be True where a "
                                  f"unit is KEPT ({what})")
            expect_close(out, scaled, f"out, compared with x * mask / (1 - p) for the mask you returned ({what})")
    else:
        expect_close(out, np.zeros_like(x), f"out for p = 1 ({what})")
    return out, mask


@check.exercise(points=2, mistakes=DROPOUT_MISTAKES, reference=ref.dropout_forward_with_mask,
                forbid=(ref.dropout_forward, torch_impl.dropout_with_mask), hints=[
    "In training, keep each unit independently with probability 1 - p and scale the survivors by "
    "1 / (1 - p), so that the expected output is x; in eval mode return x unchanged (and a mask of all "
    "True).",
    "Draw one uniform number per element of x from the rng given, rng.random(x.shape); a unit is kept "
    "where that number is >= p. p = 1 drops everything: return zeros there instead of dividing by 0.",
    "mask = rng.random(x.shape) >= p; out = x * mask / (1 - p) (zeros if p == 1); return (out, mask); "
    "for train=False: return (x.copy(), np.ones(x.shape, dtype=bool)).",
])
def dropout_forward(fn):
    """Inverted dropout returning (out, mask); eval mode is the identity."""
    rng = np.random.default_rng(43)
    x = rng.standard_normal((3, 4)) + 0.1
    what = "eval mode, p = 0.3"
    with trying("dropout_forward", x, 0.3, False, np.random.default_rng(0), label=what) as tried:
        out, mask = expect_tuple(call(fn, x, 0.3, False, np.random.default_rng(0)), 2, "(out, mask)",
                                 "dropout_forward")
        tried.got, tried.expected = out, x
        if not _close(out, x):
            if _close(out, x * 0.7):
                fail_with(DROPOUT_MISTAKES, "not inverted", f"({what})")
            if np.any((np.asarray(out) == 0) & (x != 0)) or np.any(np.abs(np.asarray(out) - x / 0.7) < 1e-12):
                fail_with(DROPOUT_MISTAKES, "applied at eval", f"({what})")
            expect_close(out, x, f"out in eval mode (the identity; {what})")
        expect(mask is not None and np.shape(mask) == x.shape and np.asarray(mask).dtype == bool
               and np.asarray(mask).all(),
               f"in eval mode return an all-True boolean mask of x's shape, np.ones(x.shape, dtype=bool): every "
               f"unit is kept (got {'None' if mask is None else np.asarray(mask).dtype} of shape "
               f"{np.shape(mask)}; {what})")
    cases = [(x, 0.3, 1, "train mode, x of shape (3, 4), p = 0.3"),
             (rng.standard_normal((6, 5)) + 0.1, 0.6, 2, "train mode, x of shape (6, 5), p = 0.6"),
             (rng.standard_normal((400, 250)) + 0.1, 0.2, 3, "train mode, x of shape (400, 250), p = 0.2"),
             (rng.standard_normal((4, 3)), 0.0, 4, "train mode, p = 0: nothing dropped"),
             (rng.standard_normal((4, 3)), 1.0, 5, "train mode, p = 1: everything dropped")]
    for xc, p, seed, what in cases:
        with trying("dropout_forward", xc, p, True, np.random.default_rng(seed), label=what):
            out, mask = _dropout_train_case(fn, xc, p, seed, what)
            kept = mask.mean()
            if xc.size >= 1000:
                _independence(mask, p, what)
                if abs(kept - (1 - p)) > 0.01:
                    if abs(kept - p) < 0.01:
                        fail_with(DROPOUT_MISTAKES, "keeps with probability p", f"(kept {kept:.3f}; {what})")
                    raise CheckFailed(f"a fraction {kept:.3f} of the units is kept, expected about 1 - p = {1 - p:g} "
                                      f"({what})")
            elif p == 0.0 and not mask.all():
                if not mask.any():
                    fail_with(DROPOUT_MISTAKES, "keeps with probability p", f"({what})")
                raise CheckFailed(f"with p = 0 every unit must be kept ({what})")
    x = rng.standard_normal((20, 30))
    what = "the same seed twice, then another seed"
    with trying("dropout_forward", x, 0.5, True, np.random.default_rng(7), label=what):
        first = _as_mask(expect_tuple(call(fn, x, 0.5, True, np.random.default_rng(7)), 2, "(out, mask)",
                                      "dropout_forward")[1], x, what)
        again = _as_mask(call(fn, x, 0.5, True, np.random.default_rng(7))[1], x, what)
        other = _as_mask(call(fn, x, 0.5, True, np.random.default_rng(8))[1], x, what)
        expect(np.array_equal(first, again) and not np.array_equal(first, other),
               "the mask does not come from the rng given: draw it with rng.random(x.shape), not np.random "
               "(the global generator), so that the same seed gives the same mask")
    return ("identity in eval mode; in training out = x * mask / (1 - p) with a fraction 1 - p kept, "
            "independently per element, p = 0 and p = 1 included")


# --------------------------------------------------------------------------- 4. batch norm, forward

def _bn_eval(x, gamma, beta, running_mean, running_var, eps):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def bn_var_wrong_axis(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    n = x.shape[0]
    mean = x.mean(axis=0)
    var = x.var(axis=1, keepdims=True)   # (N, 1): one variance per example
    out = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return (out, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def bn_biased_running_var(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    mean, var = x.mean(axis=0), x.var(axis=0)
    out = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return out, (1 - momentum) * running_mean + momentum * mean, (1 - momentum) * running_var + momentum * var


def bn_unbiased_normalise(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    mean, var = x.mean(axis=0), x.var(axis=0, ddof=1)
    out = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return out, (1 - momentum) * running_mean + momentum * mean, (1 - momentum) * running_var + momentum * var


def bn_momentum_reversed(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    out = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return (out, momentum * running_mean + (1 - momentum) * mean,
            momentum * running_var + (1 - momentum) * var * n / (n - 1))


def bn_eval_batch_stats(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    mean, var = x.mean(axis=0), x.var(axis=0)   # the batch's statistics, in both modes
    out = gamma * (x - mean) / np.sqrt(var + eps) + beta
    if not train:
        return out, running_mean, running_var
    n = x.shape[0]
    return (out, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def bn_eval_updates_running(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    new_mean = (1 - momentum) * running_mean + momentum * mean   # updated in both modes
    new_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), new_mean, new_var
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, new_mean, new_var


def bn_eps_outside_sqrt(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        out = gamma * (x - running_mean) / (np.sqrt(running_var) + eps) + beta
        return out, running_mean, running_var
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    out = gamma * (x - mean) / (np.sqrt(var) + eps) + beta
    return (out, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def bn_running_in_place(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    running_mean *= 1 - momentum          # changes the caller's arrays
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * n / (n - 1)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta, running_mean, running_var


def bn_keepdims(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    n = x.shape[0]
    mean, var = x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)   # (1, D)
    out = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return (out, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def _bn_train(x, gamma, beta, running_mean, running_var, momentum, eps):
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    return (gamma * (x - mean) / np.sqrt(var + eps) + beta, (1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * n / (n - 1))


def bn_running_unchanged(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    out, _, _ = _bn_train(x, gamma, beta, running_mean, running_var, momentum, eps)
    return out, running_mean, running_var   # the running statistics never learn


def bn_momentum_hard_coded(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, eps), running_mean, running_var
    return _bn_train(x, gamma, beta, running_mean, running_var, 0.1, eps)   # not the momentum passed


def bn_eps_hard_coded(x, gamma, beta, running_mean, running_var, train=True, momentum=0.1, eps=1e-5):
    if not train:
        return _bn_eval(x, gamma, beta, running_mean, running_var, 1e-5), running_mean, running_var
    return _bn_train(x, gamma, beta, running_mean, running_var, momentum, 1e-5)   # not the eps passed


BN_FORWARD_MISTAKES = (
    Mistake("variance over the wrong axis", bn_var_wrong_axis,
            "the variance is taken over axis=1 (one per example): batch norm normalises each FEATURE over the "
            "batch, x.var(axis=0), shape (D,)"),
    Mistake("biased running variance", bn_biased_running_var,
            "the running variance averages the biased batch variance (divided by N): PyTorch puts the unbiased "
            "one, var · N / (N - 1), into the running average (and normalises the batch with the biased one)"),
    Mistake("unbiased variance to normalise", bn_unbiased_normalise,
            "the batch is normalised with the unbiased variance (ddof=1): normalise with the biased one "
            "(divided by N, x.var(axis=0)); only the running average gets the unbiased one"),
    Mistake("momentum reversed", bn_momentum_reversed,
            "the running statistics keep only a fraction `momentum` of the old value: in PyTorch's convention "
            "momentum is the weight of the NEW batch, running = (1 - momentum) · running + momentum · batch"),
    Mistake("eval uses batch statistics", bn_eval_batch_stats,
            "in eval mode the batch's own mean and variance are used: eval mode normalises with the running "
            "statistics (so that a prediction does not depend on the rest of the batch)"),
    Mistake("running stats updated in eval", bn_eval_updates_running,
            "the running statistics change in eval mode: evaluation must not learn from the data, return "
            "running_mean and running_var unchanged when train=False"),
    Mistake("eps outside the sqrt", bn_eps_outside_sqrt,
            "eps is added after the square root, sqrt(var) + eps: PyTorch adds it to the variance, "
            "sqrt(var + eps)"),
    Mistake("running arrays changed in place", bn_running_in_place,
            "running_mean / running_var passed in were changed in place (*=, +=): compute new arrays and return "
            "them, leaving the caller's untouched (state in, state out)"),
    Mistake("keepdims shape slip", bn_keepdims,
            "the new running statistics have shape (1, D): the batch mean and variance were taken with "
            "keepdims=True; running_mean and running_var keep their shape (D,)"),
    Mistake("running stats not updated in train", bn_running_unchanged,
            "out is right but the running statistics come back unchanged in train mode: update them, "
            "running = (1 - momentum) · running + momentum · batch statistic (the unbiased variance for the var)"),
    Mistake("momentum hard-coded", bn_momentum_hard_coded,
            "you used momentum 0.1, not the momentum passed: use the argument `momentum` in the running "
            "averages"),
    Mistake("eps hard-coded", bn_eps_hard_coded,
            "you used eps 1e-5, not the eps passed: use the argument `eps` in sqrt(var + eps)"),
)


def _bn_forward_cases():
    """Small to large, all from NON-trivial running statistics (as in the middle of training)."""
    rng = np.random.default_rng(44)

    def case(n, d, train, momentum, eps, what):
        x = rng.normal(rng.normal(0, 2, d), rng.uniform(0.5, 3, d), (n, d))
        gamma, beta = rng.uniform(0.5, 2, d), rng.normal(0, 1, d)
        running_mean, running_var = rng.normal(0, 1, d), rng.uniform(0.5, 2, d)
        return what, (x, gamma, beta, running_mean, running_var), dict(train=train, momentum=momentum, eps=eps)
    yield case(4, 3, True, 0.1, 1e-5, "train mode, N = 4, D = 3")
    yield case(3, 3, False, 0.1, 1e-5, "eval mode, N = 3, D = 3")
    yield case(6, 4, True, 0.3, 1e-3, "train mode, N = 6, D = 4, momentum = 0.3, eps = 1e-3")
    yield case(32, 10, True, 0.1, 1e-5, "train mode, N = 32, D = 10")


def _bn_forward_stages(x, gamma, beta, running_mean, running_var, train, momentum, eps):
    if not train:
        x_hat = (x - running_mean) / np.sqrt(running_var + eps)
        return [("x_hat", x_hat, "in eval mode x_hat = (x - running_mean) / sqrt(running_var + eps)"),
                ("out", gamma * x_hat + beta, "out = gamma * x_hat + beta")]
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    x_hat = (x - mean) / np.sqrt(var + eps)
    return [("mean", mean, "the batch mean of each feature, x.mean(axis=0), shape (D,)"),
            ("var", var, "the biased variance of each feature over the batch, x.var(axis=0), shape (D,)"),
            ("x_hat", x_hat, "x_hat = (x - mean) / sqrt(var + eps)"),
            ("out", gamma * x_hat + beta, "out = gamma * x_hat + beta"),
            ("new_running_mean", (1 - momentum) * running_mean + momentum * mean,
             "new_running_mean = (1 - momentum) * running_mean + momentum * mean"),
            ("new_running_var", (1 - momentum) * running_var + momentum * var * n / (n - 1),
             "new_running_var = (1 - momentum) * running_var + momentum * (unbiased variance, var · N / (N - 1))")]


def _implied_stages(got, stages, recorded, eps) -> list:
    """The stages the learner computed inline (no variable holds them) but must have got right.

    A right ``out`` needs right mean, var and x_hat; a right running mean needs the right mean, a
    right running variance the right var; a var seen only inside sqrt(var + eps) counts as well.
    """
    expected = dict((name, value) for name, value, _ in stages)
    implied = []
    if _close(got[0], expected["out"]):
        implied += [expected[k] for k in ("mean", "var", "x_hat") if k in expected]
    if "mean" in expected and _close(got[1], expected["new_running_mean"]):
        implied.append(expected["mean"])
    if "var" in expected:
        var = expected["var"]
        if _close(got[2], expected["new_running_var"]) or any(
                _close(a, v) for a in recorded for v in (np.sqrt(var + eps), 1 / np.sqrt(var + eps))):
            implied.append(var)
    return implied


@check.exercise(points=3, mistakes=BN_FORWARD_MISTAKES, reference=ref.batchnorm_forward_running,
                forbid=(ref.batchnorm_forward, torch_impl.make_batchnorm), hints=[
    "Train mode: normalise each feature (column) with the batch's own mean and variance, then scale by "
    "gamma and shift by beta; and move the running statistics a step `momentum` towards the batch's. "
    "Eval mode: normalise with the running statistics, and return them unchanged.",
    "mean and var over axis=0, shape (D,); the variance that normalises is the biased one (np.var's "
    "default, divided by N); eps goes inside the square root. The running variance averages the UNBIASED "
    "batch variance, var * N / (N - 1).",
    "x_hat = (x - mean) / np.sqrt(var + eps); out = gamma * x_hat + beta; new_mean = (1 - momentum) * "
    "running_mean + momentum * mean, the same form for the variance; build new arrays, no *= on the "
    "running ones.",
])
def batchnorm_forward(fn):
    """Batch norm over (N, D) in train and eval mode: (out, new_running_mean, new_running_var)."""
    expect_defaults(fn, "batchnorm_forward", momentum=0.1, eps=1e-5)  # (a bool default cannot be compared by expect_defaults)
    for what, args, kw in _bn_forward_cases():
        x, gamma, beta, running_mean, running_var = args
        with trying("batchnorm_forward", *args, label=what, **kw) as tried:
            expected = ref.batchnorm_forward_running(*args, **kw)
            recorded: list = []
            given = (x.copy(), gamma.copy(), beta.copy(), running_mean.copy(), running_var.copy())
            try:
                out = call(fn, *given, record=recorded, **kw)
            except CheckFailed as fail:
                if fail.mistake == "mutated input" and not (np.array_equal(given[3], running_mean)
                                                            and np.array_equal(given[4], running_var)):
                    fail_with(BN_FORWARD_MISTAKES, "running arrays changed in place", f"({what})")
                raises_like(BN_FORWARD_MISTAKES, getattr(fail, "error", None),
                            lambda wrong: wrong(*(a.copy() for a in args), **kw), f"({what})")
                raise
            got = expect_tuple(out, 3, "(out, new_running_mean, new_running_var)", "batchnorm_forward",
                               noun="arrays")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, BN_FORWARD_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda wrong: wrong(*(a.copy() for a in args), **kw))
            if not same_items(got, expected):
                stages = _bn_forward_stages(*args, **kw)
                first_wrong_stage(recorded + _implied_stages(got, stages, recorded, kw["eps"]), stages)
            for name, g, e in zip(("out", "new_running_mean", "new_running_var"), got, expected):
                expect_close(g, e, f"{name} ({what})")
    return "out and both running statistics equal nn.BatchNorm1d's in train and eval mode on 4 cases"


# --------------------------------------------------------------------------- 5. batch norm, backward

def _bn_parts(x, gamma, eps):
    m = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    return m, inv_std, x_hat


def bnb_constant_statistics(dout, x, gamma, eps=1e-5):
    _, inv_std, x_hat = _bn_parts(x, gamma, eps)
    return dout * gamma * inv_std, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def bnb_no_variance_path(dout, x, gamma, eps=1e-5):
    _, inv_std, x_hat = _bn_parts(x, gamma, eps)
    g = dout * gamma
    return (g - g.mean(axis=0)) * inv_std, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def bnb_no_mean_path(dout, x, gamma, eps=1e-5):
    _, inv_std, x_hat = _bn_parts(x, gamma, eps)
    g = dout * gamma
    return (g - x_hat * (g * x_hat).mean(axis=0)) * inv_std, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def bnb_dbeta_mean(dout, x, gamma, eps=1e-5):
    dx, dgamma, _ = ref.batchnorm_backward_from_x(dout, x, gamma, eps)
    return dx, dgamma, dout.mean(axis=0)


def bnb_dgamma_without_xhat(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = ref.batchnorm_backward_from_x(dout, x, gamma, eps)
    return dx, dout.sum(axis=0), dbeta


def bnb_m_minus_one(dout, x, gamma, eps=1e-5):
    m, inv_std, x_hat = _bn_parts(x, gamma, eps)
    g = dout * gamma   # d var / d x taken as 2 (x - mean) / (m - 1), the unbiased variance's
    dx = (g - g.sum(axis=0) / m - x_hat * (g * x_hat).sum(axis=0) / (m - 1)) * inv_std
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def bnb_unbiased_statistics(dout, x, gamma, eps=1e-5):
    mean, var = x.mean(axis=0), x.var(axis=0, ddof=1)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    g = dout * gamma
    dx = (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)) * inv_std
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def bnb_axis1(dout, x, gamma, eps=1e-5):
    _, inv_std, x_hat = _bn_parts(x, gamma, eps)
    g = dout * gamma
    dx = (g - g.mean(axis=1, keepdims=True) - x_hat * (g * x_hat).mean(axis=1, keepdims=True)) * inv_std
    return dx, (dout * x_hat).sum(axis=1), dout.sum(axis=1)


def bnb_gamma_forgotten(dout, x, gamma, eps=1e-5):
    _, inv_std, x_hat = _bn_parts(x, gamma, eps)
    g = dout   # the gradient reaching x_hat is dout * gamma
    dx = (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)) * inv_std
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def bnb_means_not_sums(dout, x, gamma, eps=1e-5):
    dx, dgamma, dbeta = ref.batchnorm_backward_from_x(dout, x, gamma, eps)
    return dx, dgamma / x.shape[0], dbeta / x.shape[0]   # both averaged over the batch


def bnb_inv_std_forgotten(dout, x, gamma, eps=1e-5):
    _, _, x_hat = _bn_parts(x, gamma, eps)
    g = dout * gamma
    dx = g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)   # the final * inv_std is missing
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


BN_BACKWARD_MISTAKES = (
    Mistake("dgamma and dbeta as means", bnb_means_not_sums,
            "dx is right; dgamma and dbeta are wrong: they are averaged over the batch, but gamma and beta act "
            "on every example, so their gradients are SUMS over the batch (axis=0), not means"),
    Mistake("inv_std forgotten", bnb_inv_std_forgotten,
            "dgamma and dbeta are right; dx is wrong: the factor 1 / sqrt(var + eps) (inv_std) at the end is "
            "missing; x_hat = (x - mean) · inv_std, so the whole bracket is multiplied by inv_std"),
    Mistake("statistics treated as constants", bnb_constant_statistics,
            "dgamma and dbeta are right; dx is wrong: it is dout * gamma * inv_std, as if the batch mean and "
            "variance were constants; in train mode they depend on every x, which adds two terms: "
            "- mean(dx_hat) and - x_hat * mean(dx_hat * x_hat), over the batch"),
    Mistake("variance path missing", bnb_no_variance_path,
            "dgamma and dbeta are right; dx is wrong: the path through the variance is missing, the term "
            "- x_hat * mean(dx_hat * x_hat, axis=0)"),
    Mistake("mean path missing", bnb_no_mean_path,
            "dgamma and dbeta are right; dx is wrong: the path through the mean is missing, the term "
            "- mean(dx_hat, axis=0)"),
    Mistake("dbeta as a mean", bnb_dbeta_mean,
            "dx and dgamma are right; dbeta is wrong: beta is added to every example, so its gradient is the "
            "SUM of dout over the batch, not the mean"),
    Mistake("dgamma without x_hat", bnb_dgamma_without_xhat,
            "dx and dbeta are right; dgamma is wrong: out = gamma * x_hat + beta, so dgamma sums dout * x_hat "
            "over the batch (not dout alone)"),
    Mistake("m - 1 in the variance path", bnb_m_minus_one,
            "dgamma and dbeta are right; dx is wrong: the variance that normalises divides by m, so "
            "d var / d x = 2 (x - mean) / m, not / (m - 1)"),
    Mistake("unbiased statistics", bnb_unbiased_statistics,
            "dbeta is right; dx and dgamma are wrong: the statistics were recomputed with the unbiased variance (ddof=1); train "
            "mode normalises with the biased one, x.var(axis=0)"),
    Mistake("sums over axis=1", bnb_axis1,
            "dgamma and dbeta have shape (N,) and dx is wrong: the sums and means run over axis=1 (the "
            "features); batch norm's run over the batch, axis=0, giving dgamma and dbeta of shape (D,)"),
    Mistake("gamma forgotten in dx", bnb_gamma_forgotten,
            "dgamma and dbeta are right; dx is wrong: the gradient reaching x_hat is dout * gamma, and gamma is "
            "missing"),
)


def _bn_backward_cases():
    rng = np.random.default_rng(45)

    def case(n, d, eps, what):
        x = rng.normal(rng.normal(0, 2, d), rng.uniform(0.5, 3, d), (n, d))
        return what, (rng.standard_normal((n, d)), x, rng.uniform(0.5, 2, d)), dict(eps=eps)
    yield case(3, 2, 1e-5, "N = 3, D = 2")
    yield case(5, 4, 1e-5, "N = 5, D = 4")
    yield case(8, 3, 1e-2, "N = 8, D = 3, eps = 1e-2")
    yield case(64, 16, 1e-5, "N = 64, D = 16")


@check.exercise(points=3, mistakes=BN_BACKWARD_MISTAKES, reference=ref.batchnorm_backward_from_x,
                forbid=(ref.batchnorm_backward, ref.batchnorm_forward), hints=[
    "Recompute the forward pass (mean, variance, inv_std = 1 / sqrt(var + eps), x_hat) from x. dbeta and "
    "dgamma are the easy two: out = gamma * x_hat + beta, with gamma and beta shared by the whole batch. "
    "For dx, remember that the mean and the variance depend on every example.",
    "With dx_hat = dout * gamma and m = N: dx has three terms, the direct one dx_hat, the mean's "
    "- mean(dx_hat) and the variance's - x_hat * mean(dx_hat * x_hat) (means over the batch, axis=0), "
    "all times inv_std.",
    "dbeta = dout.sum(axis=0); dgamma = (dout * x_hat).sum(axis=0); dx = inv_std * (dx_hat - "
    "dx_hat.mean(axis=0) - x_hat * (dx_hat * x_hat).mean(axis=0)).",
])
def batchnorm_backward(fn):
    """Gradients of train-mode batch norm: (dx, dgamma, dbeta)."""
    expect_defaults(fn, "batchnorm_backward", eps=1e-5)
    names = ("dx", "dgamma", "dbeta")
    for what, args, kw in _bn_backward_cases():
        with trying("batchnorm_backward", *args, label=what, **kw) as tried:
            try:
                out = call(fn, *args, **kw)
            except CheckFailed as fail:
                raises_like(BN_BACKWARD_MISTAKES, getattr(fail, "error", None), lambda wrong: wrong(*args, **kw),
                            f"({what})")
                raise
            got = expect_tuple(out, 3, "(dx, dgamma, dbeta)", "batchnorm_backward", noun="arrays")
            expected = ref.batchnorm_backward_from_x(*args, **kw)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, BN_BACKWARD_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda wrong: wrong(*args, **kw))
            right = [n for n, g, e in zip(names, got, expected) if _close(g, e)]
            said = f"{' and '.join(right)} {'is' if len(right) == 1 else 'are'} right; " if right else ""
            for name, g, e in zip(names, got, expected):
                expect_close(g, e, f"{said}{name} ({what})")
    return "dx, dgamma and dbeta equal the reference (= nn.BatchNorm1d's autograd) on 4 batches"


# --------------------------------------------------------------------------- 6. precision, recall, macro F1

def _counts(y_true, y_pred, k):
    cm = np.zeros((k, k))
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _ratio(a, b):
    return np.divide(a, b, out=np.zeros(np.shape(a)), where=np.asarray(b) > 0)


def prf_swapped(y_true, y_pred, num_classes):
    cm = _counts(y_true, y_pred, num_classes).T   # rows and columns mixed up
    tp = np.diag(cm)
    precision, recall = _ratio(tp, cm.sum(axis=0)), _ratio(tp, cm.sum(axis=1))
    return precision, recall, float(_ratio(2 * precision * recall, precision + recall).mean())


def prf_f1_of_means(y_true, y_pred, num_classes):
    precision, recall, _ = ref.precision_recall_macro_f1(y_true, y_pred, num_classes)
    p, r = precision.mean(), recall.mean()
    return precision, recall, float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def prf_micro(y_true, y_pred, num_classes):
    precision, recall, _ = ref.precision_recall_macro_f1(y_true, y_pred, num_classes)
    return precision, recall, float(np.mean(y_true == y_pred))   # micro F1 = accuracy


def prf_nan(y_true, y_pred, num_classes):
    cm = _counts(y_true, y_pred, num_classes)
    tp = np.diag(cm)
    precision, recall = tp / cm.sum(axis=0), tp / cm.sum(axis=1)   # 0 / 0 = nan
    return precision, recall, float(np.mean(2 * precision * recall / (precision + recall)))


def prf_absent_left_out(y_true, y_pred, num_classes):
    precision, recall, _ = ref.precision_recall_macro_f1(y_true, y_pred, num_classes)
    f1 = _ratio(2 * precision * recall, precision + recall)
    seen = np.union1d(y_true, y_pred)   # only the classes that occur
    return precision, recall, float(f1[seen].mean())


def prf_classes_from_y_true(y_true, y_pred, num_classes):
    labels = np.unique(y_true)          # num_classes ignored
    tp = np.array([np.sum((y_true == c) & (y_pred == c)) for c in labels])
    precision = _ratio(tp, np.array([np.sum(y_pred == c) for c in labels]))
    recall = _ratio(tp, np.array([np.sum(y_true == c) for c in labels]))
    return precision, recall, float(_ratio(2 * precision * recall, precision + recall).mean())


def prf_nanmean(y_true, y_pred, num_classes):
    cm = _counts(y_true, y_pred, num_classes)
    tp = np.diag(cm)
    with np.errstate(invalid="ignore"):
        precision, recall = tp / cm.sum(axis=0), tp / cm.sum(axis=1)   # 0 / 0 = nan ...
        f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, float(np.nanmean(f1))   # ... and nanmean skips those classes


def prf_f1_arithmetic(y_true, y_pred, num_classes):
    precision, recall, _ = ref.precision_recall_macro_f1(y_true, y_pred, num_classes)
    return precision, recall, float(((precision + recall) / 2).mean())   # not the harmonic mean


PRF_MISTAKES = (
    Mistake("nan skipped with nanmean", prf_nanmean,
            "the macro F1 skips classes: 0 / 0 gave nan and np.nanmean left those classes out, so it averages "
            "only some classes; count a 0 / 0 precision or recall as 0 (zero_division=0) and average the F1 of "
            "every one of the num_classes classes"),
    Mistake("F1 as the arithmetic mean", prf_f1_arithmetic,
            "each class's F1 is (P + R) / 2, the arithmetic mean: F1 is the HARMONIC mean, 2 P R / (P + R) "
            "(0 where P + R = 0)"),
    Mistake("precision and recall swapped", prf_swapped,
            "precision and recall are swapped: precision divides the true positives by how often a class was "
            "PREDICTED (a column of the confusion matrix counts[true, pred]), recall by how often it is TRUE (a row)"),
    Mistake("F1 of the macro averages", prf_f1_of_means,
            "the macro F1 is the harmonic mean of the macro precision and the macro recall: compute each "
            "class's F1 first, then average the K F1 scores"),
    Mistake("micro instead of macro", prf_micro,
            "the F1 is the micro average (pooled counts; for single-label data it equals the accuracy): the "
            "macro F1 is the plain mean of the per-class F1 scores, every class weighing the same"),
    Mistake("nan for 0/0", prf_nan,
            "nan appears: a class that is never predicted (or never true) has 0 / 0 precision (or recall); "
            "count it as 0 (scikit-learn's zero_division=0), e.g. with np.divide(..., where=den > 0)"),
    Mistake("absent classes left out", prf_absent_left_out,
            "the macro F1 averages only the classes that occur: every one of the num_classes classes counts, "
            "an absent one with F1 = 0"),
    Mistake("classes from y_true only", prf_classes_from_y_true,
            "the classes are taken from y_true (np.unique) instead of 0 .. num_classes - 1: a class only "
            "predicted, or absent from both, then goes missing; return arrays of shape (num_classes,)"),
)


def _prf_cases():
    rng = np.random.default_rng(46)
    yield "K = 3, every class present", np.array([0, 1, 2, 2, 1, 0]), np.array([0, 2, 2, 2, 1, 1]), 3
    yield "K = 3, class 1 never predicted", np.array([0, 1, 2, 2, 1]), np.array([0, 0, 2, 2, 2]), 3
    yield ("K = 5, class 3 only predicted, class 4 absent", np.array([0, 1, 2, 2, 1, 0, 1]),
           np.array([0, 1, 3, 2, 1, 1, 2]), 5)
    y_true = rng.integers(0, 6, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 6, 300))
    yield "K = 7, N = 300, class 6 absent", y_true, y_pred, 7


@check.exercise(points=2, mistakes=PRF_MISTAKES, reference=ref.precision_recall_macro_f1,
                forbid=(ref.precision_recall_f1, ref.precision_score, ref.recall_score, ref.f1_score,
                        torch_impl.precision_recall_f1), hints=[
    "Count, for every class c, the true positives (true c, predicted c), the examples predicted c and the "
    "examples that are c. Precision divides by the predicted count, recall by the true count, and the macro F1 "
    "averages the per-class F1 scores over ALL num_classes classes.",
    "A confusion matrix counts[t, p] of shape (K, K) holds all three: its diagonal, its column sums and its "
    "row sums. np.add.at(counts, (y_true, y_pred), 1) fills it. Where a denominator is 0, the ratio is 0 "
    "(np.divide with out= and where=).",
    "precision = TP / column sums, recall = TP / row sums (0 where the sum is 0); f1 = 2 P R / (P + R), "
    "0 where P + R = 0; return precision, recall, float(f1.mean()).",
])
def precision_recall_f1(fn):
    """Per-class precision and recall, and the macro F1: (precision (K,), recall (K,), macro_f1)."""
    for what, y_true, y_pred, k in _prf_cases():
        with trying("precision_recall_f1", y_true, y_pred, k, label=what) as tried:
            got = expect_tuple(call(fn, y_true, y_pred, k), 3, "(precision, recall, macro_f1)",
                               "precision_recall_f1")
            expected = ref.precision_recall_macro_f1(y_true, y_pred, k)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, PRF_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda wrong: wrong(y_true, y_pred, k))
            if any(_has_nan(g) for g in got):
                fail_with(PRF_MISTAKES, "nan for 0/0", f"({what})")
            expect(np.ndim(got[2]) == 0, f"macro_f1 should be one number, got shape {np.shape(got[2])}")
            for name, g, e in zip(("precision", "recall", "macro_f1"), got, expected):
                expect_close(g, e, f"{name} ({what})")
    return "precision, recall and macro F1 equal scikit-learn's (zero_division=0) on 4 cases, absent classes included"


# --------------------------------------------------------------------------- 7. He initialisation

def he_variance_as_std(fan_in, fan_out, rng):
    return rng.normal(0.0, 2.0 / fan_in, size=(fan_in, fan_out))


def he_lecun(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), size=(fan_in, fan_out))


def he_xavier(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


def he_fan_out(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / fan_out), size=(fan_in, fan_out))


def he_transposed(fan_in, fan_out, rng):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))


def he_uniform_bound(fan_in, fan_out, rng):
    std = np.sqrt(2.0 / fan_in)
    return rng.uniform(-std, std, size=(fan_in, fan_out))


def he_global_state(fan_in, fan_out, rng):
    return np.random.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


HE_MISTAKES = (
    Mistake("variance used as std", he_variance_as_std,
            "the std is 2 / fan_in, the VARIANCE: rng.normal(loc, scale, size) takes the standard deviation as "
            "scale, sqrt(2 / fan_in)"),
    Mistake("LeCun", he_lecun,
            "the std is sqrt(1 / fan_in), LeCun's initialization: for ReLU He doubles the variance, "
            "sqrt(2 / fan_in), because ReLU zeroes half of each unit's inputs"),
    Mistake("Xavier", he_xavier,
            "the std is sqrt(2 / (fan_in + fan_out)), Xavier/Glorot's (made for tanh): He uses fan_in only, "
            "sqrt(2 / fan_in)"),
    Mistake("fan_out instead of fan_in", he_fan_out,
            "the std is sqrt(2 / fan_out): He's forward-pass form (kaiming_normal_'s default mode) divides by "
            "fan_in, the number of inputs each unit sums"),
    Mistake("shape transposed", he_transposed,
            "W has shape (fan_out, fan_in): this exercise's layout is (fan_in, fan_out), so that x @ W maps "
            "fan_in features to fan_out"),
    Mistake("uniform with the normal's std as bound", he_uniform_bound,
            "W is uniform on [-sqrt(2 / fan_in), sqrt(2 / fan_in)], whose std is smaller by sqrt(3): He normal "
            "draws from a normal distribution with that std, rng.normal(0, std, size)"),
    Mistake("global random state", he_global_state,
            "W does not come from the rng given: the same seed gave different weights; draw from rng "
            "(rng.normal(...)), not np.random (the global generator)"),
)


@check.exercise(points=2, mistakes=HE_MISTAKES, reference=ref.he_init,
                forbid=(practice.init_weights, practice.init_std), hints=[
    "He initialization for a ReLU layer draws every weight independently from a normal distribution with "
    "mean 0 and variance 2 / fan_in, from the generator it is given (so that a seed makes it reproducible).",
    "NumPy's normal takes the standard deviation, not the variance: the std is the square root of "
    "2 / fan_in. The shape is (fan_in, fan_out).",
    "Two steps: compute the std from fan_in (a square root), then make ONE call to the generator's normal "
    "method (rng.normal: mean, std, size) for the whole (fan_in, fan_out) array; no loops, no np.random.",
])
def he_init(fn):
    """He normal initialization: W of shape (fan_in, fan_out), N(0, 2 / fan_in), drawn from rng."""
    what = "fan_in = 3, fan_out = 5"
    with trying("he_init", 3, 5, np.random.default_rng(0), label=what):
        w = call(fn, 3, 5, np.random.default_rng(0))
        expect(w is not None, "he_init returned None: did you forget a `return`?")
        w = np.asarray(w)
        if w.shape == (5, 3):
            fail_with(HE_MISTAKES, "shape transposed", f"({what})")
        expect(w.shape == (3, 5), f"W has shape {w.shape}, expected (fan_in, fan_out) = (3, 5)")
        expect(np.issubdtype(w.dtype, np.floating), f"W is {w.dtype}; return floating-point weights (rng.normal's "
                                                    f"float64, or float32)")
    what = "fan_in = 300, fan_out = 200, seeds 1, 1 and 2"
    with trying("he_init", 300, 200, np.random.default_rng(1), label=what):
        first = np.asarray(call(fn, 300, 200, np.random.default_rng(1)))
        again = np.asarray(call(fn, 300, 200, np.random.default_rng(1)))
        if not np.array_equal(first, again):
            fail_with(HE_MISTAKES, "global random state", f"({what})")
        other = np.asarray(call(fn, 300, 200, np.random.default_rng(2)))
        expect(not np.array_equal(first, other), "two different seeds gave the same W: draw from the rng given, "
                                                 "not from a generator of your own")
    fan_in, fan_out = 800, 300
    what = f"fan_in = {fan_in}, fan_out = {fan_out}: the statistics of {fan_in * fan_out} weights"
    with trying("he_init", fan_in, fan_out, np.random.default_rng(3), label=what):
        w = np.asarray(call(fn, fan_in, fan_out, np.random.default_rng(3)), dtype=np.float64)
        expect(w.shape == (fan_in, fan_out), f"W has shape {w.shape}, expected {(fan_in, fan_out)}")
        std, right = w.std(), np.sqrt(2 / fan_in)
        if abs(std / right - 1) > 0.03:
            candidates = {"variance used as std": 2 / fan_in, "LeCun": np.sqrt(1 / fan_in),
                          "Xavier": np.sqrt(2 / (fan_in + fan_out)), "fan_out instead of fan_in": np.sqrt(2 / fan_out),
                          "uniform with the normal's std as bound": right / np.sqrt(3)}
            for name, value in candidates.items():
                if abs(std / value - 1) < 0.03:
                    fail_with(HE_MISTAKES, name, f"(std {std:.4g}; {what})")
            raise CheckFailed(f"the std of W is {std:.4g}, expected sqrt(2 / fan_in) = {right:.4g} ({what})")
        expect(abs(w.mean()) < 5 * right / np.sqrt(w.size), f"the mean of W is {w.mean():.3g}, expected 0 ({what})")
        tails = np.mean(np.abs(w) > 2 * right)
        expect(abs(tails - 0.0455) < 0.01, f"{tails:.1%} of the weights lie beyond 2 std, where a normal "
                                           f"distribution has 4.6%: draw from rng.normal ({what})")
        kurtosis = float(np.mean((w - w.mean()) ** 4) / w.var() ** 2)
        expect(abs(kurtosis - 3) < 0.15, f"the kurtosis of W is {kurtosis:.2f}, where a normal distribution has 3 "
                                         f"(heavier or lighter tails than a normal): draw from rng.normal ({what})")
    return "W has shape (fan_in, fan_out), std sqrt(2 / fan_in) within 3 %, mean 0, normal tails, and comes from rng"


# --------------------------------------------------------------------------- 8. early stopping (the larger task)

def _snapshot(params):
    return {k: v.copy() for k, v in params.items()}


def es_keeps_last(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, waited, losses = np.inf, 0, 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, waited = losses[-1], epoch, 0
        else:
            waited += 1
            if waited == patience:
                break
    return _snapshot(params), best_epoch, losses   # the weights of the LAST epoch


def es_reference_kept(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, params, 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, waited = losses[-1], epoch, 0
            best = params.copy()   # a new dict, but the same arrays: train_epoch keeps changing them
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def es_patience_off_by_one(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best, waited = losses[-1], epoch, _snapshot(params), 0
        else:
            waited += 1
            if waited > patience:   # one epoch too many
                break
    return best, best_epoch, losses


def es_counter_not_reset(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best = losses[-1], epoch, _snapshot(params)   # waited stays
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def es_tie_improves(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] <= best_loss:
            best_loss, best_epoch, best, waited = losses[-1], epoch, _snapshot(params), 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def es_first_increase(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, losses = np.inf, 0, _snapshot(params), []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best = losses[-1], epoch, _snapshot(params)
        if len(losses) > 1 and losses[-1] > losses[-2]:   # patience never used
            break
    return best, best_epoch, losses


def es_never_stops(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, losses = np.inf, 0, _snapshot(params), []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best = losses[-1], epoch, _snapshot(params)
    return best, best_epoch, losses


def es_zero_based(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(max_epochs):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best, waited = losses[-1], epoch, _snapshot(params), 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def es_previous_epoch(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best = losses[-1], epoch, _snapshot(params)
        if len(losses) == 1 or losses[-1] < losses[-2]:   # better than the PREVIOUS epoch, not the best
            waited = 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


def es_restored_into_params(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if losses[-1] < best_loss:
            best_loss, best_epoch, best, waited = losses[-1], epoch, _snapshot(params), 0
        else:
            waited += 1
            if waited == patience:
                break
    for key, value in best.items():
        params[key][...] = value   # the best weights restored into the caller's arrays ...
    return params, best_epoch, losses   # ... and the caller's own dict handed back


def es_val_loss_twice(params, train_epoch, val_loss, max_epochs, patience):
    best_loss, best_epoch, best, waited, losses = np.inf, 0, _snapshot(params), 0, []
    for epoch in range(1, max_epochs + 1):
        train_epoch(params)
        losses.append(float(val_loss(params)))
        if val_loss(params) < best_loss:   # a second evaluation of the same epoch
            best_loss, best_epoch, best, waited = losses[-1], epoch, _snapshot(params), 0
        else:
            waited += 1
            if waited == patience:
                break
    return best, best_epoch, losses


ES_MISTAKES = (
    Mistake("compared with the previous epoch", es_previous_epoch,
            "training runs too long: the count of epochs without improvement is reset whenever the loss beats "
            "the PREVIOUS epoch's, even when it is no new best; compare each loss with the best loss so far and "
            "reset the count only on a new best"),
    Mistake("returns the caller's dict", es_restored_into_params,
            "best_params is the very dict you were given (params): returning the caller's own dict aliases it, "
            "so the caller's next training step changes your 'best' weights too; return a new dict of copies, "
            "{k: v.copy() for k, v in params.items()}, saved at the best epoch"),
    Mistake("val_loss called twice per epoch", es_val_loss_twice,
            "val_loss is called more than once per epoch: a validation pass costs a full sweep over the "
            "validation set (and may be noisy); call it exactly once after each epoch's train_epoch, keep the "
            "number and compare that"),
    Mistake("keeps the last weights", es_keeps_last,
            "best_params are the weights of the LAST epoch: early stopping returns the weights of the best "
            "epoch, so take a copy of the parameters whenever the validation loss improves"),
    Mistake("stores a reference", es_reference_kept,
            "best_params share their arrays with params (params.copy() or dict(params) copy the dict but not the "
            "arrays), so train_epoch keeps changing them; store a copy of every "
            "array, {k: v.copy() for k, v in params.items()}"),
    Mistake("patience off by one", es_patience_off_by_one,
            "training runs one epoch too long: stop as soon as `patience` epochs in a row have not improved "
            "(after epoch best + patience), not after patience + 1"),
    Mistake("counter never reset", es_counter_not_reset,
            "training stops too early: the count of epochs without improvement is not reset to 0 when the loss "
            "improves, so it counts bad epochs since the start rather than since the best one"),
    Mistake("tie counts as improvement", es_tie_improves,
            "a validation loss EQUAL to the best one counts as an improvement (<=): only a strictly lower loss "
            "(<) is one, so a plateau does not reset the patience"),
    Mistake("stops at the first increase", es_first_increase,
            "training stops at the first epoch whose loss goes up: that is what patience is for; stop only "
            "after `patience` epochs in a row without a new best"),
    Mistake("never stops", es_never_stops,
            "training always runs max_epochs: stop once `patience` epochs in a row brought no new best "
            "validation loss"),
    Mistake("0-based epoch", es_zero_based,
            "best_epoch counts from 0: count epochs from 1 (the first epoch of training is epoch 1), e.g. "
            "for epoch in range(1, max_epochs + 1)"),
)


class _Scripted:
    """A fake training run: each epoch adds 1 to every weight (in place); the validation loss is scripted."""

    def __init__(self, losses):
        self.losses = list(losses)

    def train_epoch(self, params):
        for value in params.values():
            value += 1.0   # in place, as an optimizer step

    def val_loss(self, params):
        epochs = int(round(float(np.asarray(params["w"]).flat[0])))
        return self.losses[epochs - 1] if epochs >= 1 else 10.0


class _Regression:
    """A real small model: linear regression, full-batch gradient descent, 30 features and 20 noisy examples,
    which overfits, so that the validation loss goes down, then up."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        w_true = np.zeros(30)
        w_true[:3] = (2.0, -1.0, 0.5)
        self.x, self.x_val = rng.standard_normal((20, 30)), rng.standard_normal((100, 30))
        self.y = self.x @ w_true + rng.standard_normal(20)
        self.y_val = self.x_val @ w_true + rng.standard_normal(100)

    def train_epoch(self, params):
        err = self.x @ params["w"] + params["b"] - self.y
        params["w"] -= 0.2 * self.x.T @ err / len(err)   # in place, as an optimizer step
        params["b"] -= 0.2 * err.mean()

    def val_loss(self, params):
        return float(np.mean((self.x_val @ params["w"] + params["b"] - self.y_val) ** 2))


_ES_SCRIPTS = {  # name: (losses per epoch, max_epochs, patience)
    1: ([1.0, 0.8, 0.8, 0.85, 0.7, 0.7, 0.75, 0.9, 0.95, 1.0, 1.1, 1.2], 12, 3),
    2: ([0.9, 0.7, 0.6, 0.5, 0.45, 0.4], 6, 2),
    3: ([0.5, 0.6, 0.4, 0.3, 0.2, 0.1], 6, 1),
    5: ([1.0, 0.5, 0.9, 0.8, 0.7, 0.6, 0.55, 0.52], 8, 2),
}


def early_stopping_problem(case: int):
    """The inputs of one case of the fit_with_early_stopping check, as
    ``params, train_epoch, val_loss, max_epochs, patience`` (import it to reproduce a failing case):
    cases 1-3 and 5 are scripted validation losses, case 4 a real linear regression that overfits."""
    if case in _ES_SCRIPTS:
        losses, max_epochs, patience = _ES_SCRIPTS[case]
        run = _Scripted(losses)
        return {"w": np.zeros(3), "b": np.zeros(1)}, run.train_epoch, run.val_loss, max_epochs, patience
    run = _Regression(case)
    return {"w": np.zeros(30), "b": np.zeros(1)}, run.train_epoch, run.val_loss, 200, 10


_ES_LABELS = {1: "scripted losses 1.0, 0.8, 0.8, 0.85, 0.7, 0.7, 0.75, 0.9, ... with patience 3",
              2: "scripted losses that only go down, max_epochs 6",
              3: "scripted losses 0.5, 0.6, 0.4, ... with patience 1",
              4: "a linear regression that overfits, patience 10",
              5: "scripted losses 1.0, 0.5, 0.9, 0.8, 0.7, ... (falling, but no new best) with patience 2"}


def _same_fit(a, b) -> bool:
    (pa, ea, la), (pb, eb, lb) = a, b
    try:
        return (isinstance(pa, dict) and pa.keys() == pb.keys() and all(_close(pa[k], pb[k]) for k in pb)
                and int(ea) == int(eb) and len(la) == len(lb) and _close(np.asarray(la, dtype=float), lb))
    except (TypeError, ValueError):
        return False


@check.exercise(points=4, mistakes=ES_MISTAKES, reference=ref.fit_with_early_stopping,
                forbid=(practice.EarlyStopping,), seconds=30, hints=[
    "Keep the best validation loss seen so far, the epoch it came from, a COPY of the parameters of that "
    "epoch, and how many epochs in a row have not beaten it. After each epoch's train_epoch(params) and "
    "val_loss(params), either record a new best (strictly lower) or count one more epoch without one, and "
    "stop when that count reaches patience.",
    "Count epochs from 1: for epoch in range(1, max_epochs + 1). train_epoch changes the arrays of params "
    "in place, so a saved `best = params` (or params.copy(), a shallow copy) would change with them: "
    "copy every array. Reset the count to 0 on every improvement.",
    "On `loss < best_loss`: best_loss, best_epoch, waited = loss, epoch, 0 and best_params = "
    "{k: v.copy() for k, v in params.items()}; otherwise waited += 1 and break once waited == patience; "
    "return best_params, best_epoch, val_losses.",
])
def fit_with_early_stopping(fn):
    """Train with early stopping; return (best_params, best_epoch counted from 1, val_losses)."""
    for case in (1, 2, 3, 5, 4):
        what = _ES_LABELS[case]
        line = (f"from dlcourse.training.checks import early_stopping_problem; "
                f"fit_with_early_stopping(*early_stopping_problem({case}))")
        with trying("fit_with_early_stopping", label=what, call_text=line) as tried:
            expected = ref.fit_with_early_stopping(*early_stopping_problem(case))
            params, train_epoch, val_loss, max_epochs, patience = early_stopping_problem(case)
            arrays = dict(params)
            calls = []

            def counted_val_loss(p, _val_loss=val_loss):
                calls.append(1)
                return _val_loss(p)

            out = call(fn, params, train_epoch, counted_val_loss, max_epochs, patience, allow_mutation=True)
            got = expect_tuple(out, 3, "(best_params, best_epoch, val_losses)", "fit_with_early_stopping",
                               noun="values")
            best, epoch, losses = got
            expect(isinstance(best, dict), f"best_params is a {type(best).__name__}; return a dict like params, "
                                           f"with the same keys")
            expect(best.keys() == params.keys(), f"best_params has the keys {sorted(best)}, expected "
                                                 f"{sorted(params)}")
            if best is params:
                restored = all(_close(best[k], expected[0][k]) for k in expected[0])
                fail_with(ES_MISTAKES, "returns the caller's dict" if restored else "stores a reference", f"({what})")
            if any(np.shares_memory(np.asarray(best[k]), v) for k, v in arrays.items()):
                fail_with(ES_MISTAKES, "stores a reference", f"({what})")
            expect(isinstance(losses, (list, tuple, np.ndarray)), f"val_losses is a {type(losses).__name__}; "
                                                                   "return a list of the losses, one per epoch")
            tried.got, tried.expected = (epoch, list(np.round(losses, 6))), (expected[1], expected[2])
            if len(calls) > len(losses):
                fail_with(ES_MISTAKES, "val_loss called twice per epoch",
                          f"({len(calls)} calls for {len(losses)} epochs; {what})")
            diagnose(got, expected, ES_MISTAKES, same=_same_fit, suffix=f"({what})",
                     apply=lambda wrong: wrong(*early_stopping_problem(case)))
            if len(losses) == len(expected[2]) + 1 and _close(np.asarray(losses[1:], dtype=float), expected[2]):
                raise CheckFailed(f"val_losses starts with the loss measured before any training: record one loss "
                                  f"per epoch, after that epoch's train_epoch ({what})")
            expect(len(losses) == len(expected[2]),
                   f"{len(losses)} validation losses came back, expected {len(expected[2])}: training should stop "
                   f"after epoch {len(expected[2])} ({what})")
            expect_close(np.asarray(losses, dtype=float), expected[2], f"val_losses ({what})", rtol=1e-9)
            expect(epoch == expected[1], f"best_epoch is {epoch}, expected {expected[1]} ({what})")
            for key in expected[0]:
                expect_close(best[key], expected[0][key], f"best_params[{key!r}] ({what})")
    return ("stops after `patience` epochs without a strictly lower loss and returns copies of the best "
            "epoch's weights, on 3 scripted runs and a real regression")


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_accuracy_always_not_nine", answer=0.9, rtol=1e-6,
    explanation="a model that always answers 'not 9' is right on every one of the 90 % non-nines: 0.9 accuracy "
                "without finding a single 9 (recall 0 for the nines). On imbalanced data, look at precision, "
                "recall and F1 per class, not at accuracy alone.",
    mistakes=[
        Mistake("fraction of nines", 0.1, "0.1 is the fraction of nines; the model is right on all the OTHER "
                                          "examples, which it labels 'not 9'"),
        Mistake("zero", 0.0, "it finds no 9 (its recall on the nines is 0), but accuracy counts every correct "
                             "answer, and 'not 9' is correct for 90 % of the set"),
        Mistake("percent", 90, "answer as a fraction between 0 and 1, as accuracy() returns it"),
    ])

check.question(
    "q_he_std", answer=0.0625, rtol=1e-3,
    explanation="He's variance is 2 / fan_in = 2 / 512 = 1/256, so the std is sqrt(1/256) = 1/16 = 0.0625.",
    mistakes=[
        Mistake("the variance", 2 / 512, "2 / 512 ≈ 0.0039 is the variance; the standard deviation is its square "
                                         "root"),
        Mistake("LeCun", float(np.sqrt(1 / 512)), "sqrt(1 / fan_in) is LeCun's std; He's doubles the variance for "
                                                  "ReLU: sqrt(2 / fan_in)"),
        Mistake("2 / sqrt", 2 / np.sqrt(512), "the 2 goes under the square root: sqrt(2 / 512)"),
    ])

check.question(
    "q_batchnorm_parameters", answer=128, rtol=0,
    explanation="gamma (weight) and beta (bias), 64 each: 128. The running mean and variance (and the batch "
                "counter) are buffers: saved with the model, but updated by the forward pass, not by the optimizer.",
    mistakes=[
        Mistake("running stats counted", 256, "the running mean and variance are buffers, not learnable "
                                              "parameters: the optimizer never updates them"),
        Mistake("buffers and counter counted", 257, "running_mean, running_var and num_batches_tracked are "
                                                    "buffers, not parameters"),
        Mistake("gamma only", 64, "there are two learnable vectors of 64: the scale gamma and the shift beta"),
    ])

check.question(
    "q_grid_vs_random", answer=(3, 9), rtol=0,
    explanation="a 3 × 3 grid repeats the same 3 values of each hyperparameter; 9 random trials give 9 distinct "
                "values of each, so the important one is explored three times more finely for the same budget "
                "(Bergstra & Bengio, 2012).",
    mistakes=[
        Mistake("both 9", (9, 9), "a 3 × 3 grid has 9 points but only 3 distinct values along each axis"),
        Mistake("both 3", (3, 3), "random search draws a new value for every trial: 9 trials, 9 distinct values "
                                  "(with probability 1)"),
        Mistake("reversed", (9, 3), "the first number is the grid's: 3 values per axis; the random search's is 9"),
    ])

check.question(
    "q_dropout_expectation", answer=2.0, rtol=1e-6,
    explanation="the unit is kept with probability 0.5 and then scaled to 2 / 0.5 = 4, dropped (0) otherwise: "
                "0.5 · 4 + 0.5 · 0 = 2, the input itself; that is why inverted dropout needs no rescaling at eval "
                "time.",
    mistakes=[
        Mistake("not inverted", 1.0, "that is the original, non-inverted dropout (no scaling in training); "
                                     "inverted dropout divides the kept units by 1 - p"),
        Mistake("kept value", 4.0, "4 is the value when the unit is kept; it is dropped half the time, so the "
                                   "mean is 0.5 · 4"),
        Mistake("zero", 0.0, "half of the time the unit survives with the value 4"),
    ])
