"""Graded checks for the exercises of chapter 07 (``solutions/07_transformer.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the
classic wrong answers, each a plain wrong implementation with the exercise's own
signature.  A check runs the learner's code on cases from small to large against the
exercise forms at the bottom of :mod:`dlcourse.transformer.numpy_impl` (which equal
PyTorch: ``tests/test_transformer_checks.py``) and, when an answer is wrong, recomputes
the table's rows on the same inputs to name the mistake.  What recomputation cannot see
(an error raised inside the learner's code, which stage of a backward pass went wrong,
whether a generation loop really caches, or used the model's own cache) the check
recognises itself and reports with its row's message.  A failure shows the smallest
failing case and a call that reproduces it.  ``tests/test_course.py`` hands every row to
its check and proves that exactly its message comes back.

Dimension letters: N batch, T time steps (Tq queries, Tk keys), E model width, nh heads,
hs head size (E = nh * hs), hv the width of the values, V vocabulary.  Masks are boolean,
True = may attend.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F

from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close,
                              expect_defaults, expect_float64, expect_tuple, fail_with, first_wrong_stage,
                              is_shape_error, name_first_wrong, raises_like, same_items, trying)
from dlcourse.grading import matches as _close
from dlcourse.transformer import numpy_impl as ref
from dlcourse.transformer import torch_impl as tt

check = Checker("07_transformer")

__all__ = ["check", "attention_case", "attention_grad_case", "heads_case", "layer_norm_case",
           "layer_norm_grad_case", "generate_case", "generate_model"]


# --------------------------------------------------------------------------- helpers

def _softmax(s, axis=-1):
    z = s - np.max(s, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)






def _permuted(table, row: str, names, got, expected, what: str) -> None:
    """Fail with ``row`` when the outputs are the right arrays in another order than ``names``."""
    n = len(names)
    if n < 2 or len(got) != n:
        return
    where = [[j for j in range(n) if _close(got[i], expected[j])] for i in range(n)]
    for perm in itertools.permutations(range(n)):
        if all(perm[i] in where[i] for i in range(n)):
            if list(perm) != list(range(n)):
                returned = ", ".join(names[j] for j in perm)
                fail_with(table, row, f"(you returned ({returned})) ({what})")
            return


def _as_array(out, what: str):
    """The learner's output as an array (a torch tensor is accepted: its values are compared)."""
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return out


# --------------------------------------------------------------------------- 1. attention forward

def att_no_scaling(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return _softmax(s) @ v


def _att_scaled(q, k, v, mask, scale):
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return _softmax(s) @ v


def att_sqrt_of_tk(q, k, v, mask=None):
    return _att_scaled(q, k, v, mask, 1 / np.sqrt(k.shape[-2]))          # sqrt(Tk): the number of keys


def att_sqrt_of_hv(q, k, v, mask=None):
    return _att_scaled(q, k, v, mask, 1 / np.sqrt(v.shape[-1]))          # sqrt(hv): the values' width


def att_divided_by_hs(q, k, v, mask=None):
    return _att_scaled(q, k, v, mask, 1 / q.shape[-1])                   # 1/hs, not 1/sqrt(hs)


def att_softmax_over_queries(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return _softmax(s, axis=-2) @ v                                     # columns sum to 1, not rows


def att_mask_after_softmax(q, k, v, mask=None):
    p = _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]))
    if mask is not None:
        p = np.where(mask, p, 0.0)                                      # rows no longer sum to 1
    return p @ v


def att_masked_to_zero(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, 0.0)                                      # exp(0) = 1: the key still counts
    return _softmax(s) @ v


def att_mask_inverted(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, -np.inf, s)                                  # True read as "blocked"
    return _softmax(s) @ v


def att_no_max_subtraction(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s)                                                       # exp(1000) = inf, inf / inf = nan
    return e / e.sum(axis=-1, keepdims=True) @ v


def att_k_not_transposed(q, k, v, mask=None):
    s = q @ k / np.sqrt(q.shape[-1])                                    # (N, Tq, hs) @ (N, Tk, hs)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return _softmax(s) @ v


ATTENTION_MISTAKES = (
    Mistake("no scaling", att_no_scaling,
            "the scores are not scaled: divide q @ k^T by sqrt(hs), the head size (q.shape[-1]); unscaled, their "
            "spread grows like sqrt(hs) and the softmax saturates"),
    Mistake("sqrt of Tk", att_sqrt_of_tk,
            "the scores are divided by sqrt(Tk), the number of keys: the scale is 1/sqrt(hs), the length of the "
            "vectors in each dot product (q.shape[-1])"),
    Mistake("sqrt of hv", att_sqrt_of_hv,
            "the scores are divided by sqrt(hv), the width of the VALUES: the scale is 1/sqrt(hs), the width of "
            "q and k (q.shape[-1]), which is what the dot products sum over"),
    Mistake("divided by hs", att_divided_by_hs,
            "the scores are divided by hs: the scale is 1/sqrt(hs) (a dot product of hs unit-variance terms has "
            "variance hs, so standard deviation sqrt(hs))"),
    Mistake("softmax over queries", att_softmax_over_queries,
            "the softmax runs over the queries (axis -2): each query's weights over the KEYS must sum to 1, so "
            "take it over the last axis, axis=-1"),
    Mistake("mask after softmax", att_mask_after_softmax,
            "the mask is applied after the softmax (weights set to 0): the rows no longer sum to 1; set the "
            "masked SCORES to -inf before the softmax, so the allowed keys share all the weight"),
    Mistake("masked scores set to 0", att_masked_to_zero,
            "masked scores are set to 0: exp(0) = 1, so a masked key still gets weight; set them to -inf "
            "(np.where(mask, scores, -np.inf)), which the softmax turns into exactly 0"),
    Mistake("mask inverted", att_mask_inverted,
            "the mask is read the wrong way round: True means MAY attend (the convention of "
            "F.scaled_dot_product_attention's boolean attn_mask); block where the mask is False"),
    Mistake("no max-subtraction", att_no_max_subtraction,
            "the softmax overflows on large scores (exp(1000) = inf, and inf / inf = nan): subtract each row's "
            "max before np.exp (keepdims=True); the softmax does not change, and exp never sees a positive number"),
    Mistake("k not transposed", att_k_not_transposed,
            "q @ k multiplies (N, Tq, hs) by (N, Tk, hs): the scores need k transposed on its last two axes, "
            "q @ k.transpose(0, 2, 1) (or np.swapaxes(k, -1, -2)), giving (N, Tq, Tk)"),
)

# (N, Tq, Tk, hs, hv, mask kind, score size); hv != hs, Tq != Tk, Tk != hs, so that the scales separate
ATTENTION_CASES = [(1, 2, 4, 3, 2, None, 1.0), (2, 3, 5, 4, 3, "causal", 1.0), (3, 4, 6, 5, 2, "padding", 1.0),
                   (2, 4, 4, 3, 2, "causal", 30.0)]


def _mask(kind, N, Tq, Tk):
    if kind is None:
        return None
    if kind == "causal":
        return ref.causal_mask(Tq, Tk)                                   # (Tq, Tk): the last Tq of Tk positions
    lengths = [Tk, max(1, Tk // 2), Tk - 1][:N]
    return ref.padding_mask(lengths, Tk)[:, 0] & ref.causal_mask(Tq, Tk)   # (N, Tq, Tk)


def attention_case(case: int):
    """The inputs of case ``case`` (1 to 4, small to large) of the attention_forward check:
    ``q, k, v, mask`` (import it to reproduce a failing case).  Case 4 has scores near 1000."""
    N, Tq, Tk, hs, hv, kind, size = ATTENTION_CASES[case - 1]
    rng = np.random.default_rng(700 + case)
    q = size * rng.standard_normal((N, Tq, hs))
    k = size * rng.standard_normal((N, Tk, hs))
    v = rng.standard_normal((N, Tk, hv))
    return q, k, v, _mask(kind, N, Tq, Tk)




def _describe(N, Tq, Tk, hs, hv, kind):
    masked = {None: "no mask", "causal": "causal mask", "padding": "padding & causal mask"}[kind]
    return f"N = {N}, Tq = {Tq}, Tk = {Tk}, hs = {hs}, hv = {hv}, {masked}"


@check.exercise(points=3, mistakes=ATTENTION_MISTAKES, reference=ref.attention,
                forbid=(ref.attention_scores, ref.attention_weights, ref.softmax), hints=[
    "Each query scores every key by a dot product, scaled so that the scores do not grow with the head size; "
    "a softmax over the KEYS turns a query's scores into weights that sum to 1, and the output is the weighted "
    "average of the values. A masked key must get weight exactly 0, which happens only if its score is -inf "
    "BEFORE the softmax.",
    "scores = q @ k^T (transpose k's last two axes) times 1/sqrt(hs) with hs = q.shape[-1], shape (N, Tq, Tk); "
    "np.where(mask, scores, -np.inf) when a mask is given; a stable softmax over axis=-1 (subtract the row max, "
    "keepdims=True); then weights @ v, shape (N, Tq, hv).",
    "s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]); if mask is not None: s = np.where(mask, s, -np.inf); "
    "e = np.exp(s - s.max(axis=-1, keepdims=True)); then divide e by its row sums and multiply by v.",
])
def attention_forward(fn):
    """Scaled dot-product attention's output, (N, Tq, hv)."""
    for case in range(1, len(ATTENTION_CASES) + 1):
        args = attention_case(case)
        N, Tq, Tk, hs, hv, kind, size = ATTENTION_CASES[case - 1]
        what = _describe(N, Tq, Tk, hs, hv, kind) + (", scores near 1000" if size > 1 else "")
        line = (f"from dlcourse.transformer.checks import attention_case; q, k, v, mask = attention_case({case}); "
                "attention_forward(q, k, v, mask)")
        with trying("attention_forward", label=what, call_text=line) as tried:
            expected = ref.attention(*args)
            try:
                out = call(fn, *args) if args[3] is not None else call(fn, *args[:3])
            except CheckFailed as fail:
                raises_like(ATTENTION_MISTAKES, getattr(fail, "error", None), lambda row: row(*args), f"({what})")
                raise
            out = _as_array(out, "attention_forward")
            expect_float64(("out",), (out,), what)
            tried.got, tried.expected = out, expected
            diagnose(out, expected, ATTENTION_MISTAKES, suffix=f"({what})", apply=lambda row: row(*args))
            expect_close(out, expected, f"out ({what})")
    return ("equals F.scaled_dot_product_attention on 4 cases: scale 1/sqrt(hs), softmax over the keys, causal "
            "and padding masks as -inf before the softmax, stable at scores near 1000")


# --------------------------------------------------------------------------- 2. attention backward

def _forward_parts(q, k, v, mask, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return _softmax(s), scale


def attb_softmax_diagonal(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (1 - P) * dP                                               # only the diagonal of the Jacobian
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


def attb_row_sum_wrong_axis(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-2, keepdims=True))              # summed over the queries
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


def attb_scale_forgotten(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k, np.swapaxes(dS, -1, -2) @ q, np.swapaxes(P, -1, -2) @ dout   # no * scale


def attb_row_sum_broadcast_wrong(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1)[..., None, :])              # query i's sum lined up with KEY i
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


def attb_no_max_subtraction(dout, q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(s)                                                   # exp(1000) = inf, inf / inf = nan
        P = e / e.sum(axis=-1, keepdims=True)
        dP = dout @ np.swapaxes(v, -1, -2)
        dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
        scale = 1 / np.sqrt(q.shape[-1])
        return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


def attb_outputs_reversed(dout, q, k, v, mask=None):
    dq, dk, dv = ref.attention_grads(dout, q, k, v, mask)
    return dv, dk, dq                                                   # right arrays, wrong order


def attb_dk_not_transposed(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k * scale, dS @ q * scale, np.swapaxes(P, -1, -2) @ dout       # dS @ q, not dS^T @ q


def attb_dv_not_transposed(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, P @ dout       # P @ dout, not P^T @ dout


def attb_mask_ignored(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, None)                            # the unmasked softmax
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


def attb_dweights_not_transposed(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ v                                                       # (N, Tq, hv) @ (N, Tk, hv)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


def attb_scale_squared(dout, q, k, v, mask=None):
    P, scale = _forward_parts(q, k, v, mask)
    dP = dout @ np.swapaxes(v, -1, -2)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True)) * scale     # scaled here AND in dq, dk
    return dS @ k * scale, np.swapaxes(dS, -1, -2) @ q * scale, np.swapaxes(P, -1, -2) @ dout


ATTENTION_GRAD_MISTAKES = (
    Mistake("softmax backward: diagonal only", attb_softmax_diagonal,
            "dv and dweights are right; dscores is wrong: P * (1 - P) * dP is only the diagonal of the softmax's "
            "Jacobian; each weight depends on EVERY score of its row, so dscores = P * (dP - row sum of dP * P)"),
    Mistake("row sum over the wrong axis", attb_row_sum_wrong_axis,
            "dv and dweights are right; dscores is wrong: the softmax backward's sum of dP * P runs over the "
            "queries (axis -2); it runs over each query's KEYS, axis=-1 with keepdims=True, the axis the "
            "softmax normalised"),
    Mistake("row sum broadcast along the wrong axis", attb_row_sum_broadcast_wrong,
            "dv and dweights are right; dscores is wrong: each query's row sum of dP * P is right, but it is "
            "broadcast along the wrong axis: np.sum(..., axis=-1) without keepdims gives shape (N, Tq), and "
            "[..., None, :] (or plain broadcasting) lines query i's sum up with KEY i; keep the summed axis, "
            "np.sum(dP * P, axis=-1, keepdims=True) (or [..., :, None]), shape (N, Tq, 1), so that each query's "
            "sum is subtracted along its own row"),
    Mistake("no max-subtraction", attb_no_max_subtraction,
            "the recomputed softmax overflows on large scores (exp(1000) = inf, and inf / inf = nan): subtract "
            "each row's max before np.exp (keepdims=True), as in the forward pass"),
    Mistake("outputs in the wrong order", attb_outputs_reversed,
            "your three arrays are the right gradients in the wrong order: return (dq, dk, dv) in this order"),
    Mistake("scale forgotten in dq, dk", attb_scale_forgotten,
            "dv is right; dq and dk are not multiplied by the scale: the scores were q @ k^T / sqrt(hs), so the "
            "chain rule multiplies both by 1/sqrt(hs)"),
    Mistake("scale applied twice", attb_scale_squared,
            "dv is right; dq and dk carry the scale twice: multiply by 1/sqrt(hs) once, either on dscores or on "
            "dq and dk, not on both"),
    Mistake("dk = dS @ q", attb_dk_not_transposed,
            "dk is wrong: dS @ q multiplies (N, Tq, Tk) by (N, Tq, hs); scores = q @ k^T, so dk = dS^T @ q * scale "
            "(transpose dscores on its last two axes), shape (N, Tk, hs)"),
    Mistake("dv = P @ dout", attb_dv_not_transposed,
            "dv is wrong: P @ dout multiplies (N, Tq, Tk) by (N, Tq, hv); out = P @ v, so dv = P^T @ dout "
            "(transpose the weights on their last two axes), shape (N, Tk, hv)"),
    Mistake("dweights = dout @ v", attb_dweights_not_transposed,
            "dweights = dout @ v multiplies (N, Tq, hv) by (N, Tk, hv): out = P @ v, so dP = dout @ v^T, "
            "shape (N, Tq, Tk)"),
    Mistake("masked keys leak gradient", attb_mask_ignored,
            "the backward pass uses the unmasked weights: masked keys get gradient they never earned; recompute "
            "P WITH the mask (-inf before the softmax), and then P = 0 stops their gradient"),
)

# (N, Tq, Tk, hs, hv, mask kind): a square case first (dk = dS @ q and dv = P @ dout go silently wrong there,
# and raise the very same matmul error on rectangular ones), then rectangular and square, masked
ATTENTION_GRAD_CASES = [(1, 3, 3, 2, 4, None), (2, 3, 5, 2, 4, "causal"), (2, 4, 4, 3, 2, "causal"),
                        (3, 5, 5, 4, 3, "padding"), (2, 3, 4, 3, 2, "causal")]
GRAD_SCORE_SIZE = {5: 40.0}      # case 5: scores near 1000, so a softmax without max-subtraction overflows


def attention_grad_case(case: int):
    """The inputs of case ``case`` (1 to 5, small to large) of the attention_backward check:
    ``dout, q, k, v, mask`` (import it to reproduce a failing case).  Case 5 has scores near 1000."""
    N, Tq, Tk, hs, hv, kind = ATTENTION_GRAD_CASES[case - 1]
    rng = np.random.default_rng(720 + case)
    size = GRAD_SCORE_SIZE.get(case, 1.0)
    q, k = size * rng.standard_normal((N, Tq, hs)), size * rng.standard_normal((N, Tk, hs))
    v, dout = rng.standard_normal((N, Tk, hv)), rng.standard_normal((N, Tq, hv))
    return dout, q, k, v, _mask(kind, N, Tq, Tk)


ATTENTION_GRAD_NAMES = ("dq", "dk", "dv")


def _attention_stages(dout, q, k, v, mask):
    _, cache = ref.attention_forward(q, k, v, mask)
    st = ref.attention_backward_stages(dout, cache)
    return [("P", cache.weights, "the weights recomputed inside: P = softmax(q @ k^T / sqrt(hs), masked keys "
                                 "-inf) over the last axis"),
            ("dv", st["dv"], "out = P @ v, so dv = P^T @ dout"),
            ("dweights", st["dweights"], "out = P @ v, so dweights = dout @ v^T"),
            ("dscores", st["dscores"], "the softmax backward needs the row sum: "
                                       "dscores = P * (dweights - sum over the keys of dweights * P)"),
            ("dq", st["dq"], "scores = q @ k^T * scale, so dq = dscores @ k * scale"),
            ("dk", st["dk"], "scores = q @ k^T * scale, so dk = dscores^T @ q * scale")]


@check.exercise(points=4, mistakes=ATTENTION_GRAD_MISTAKES, reference=ref.attention_grads,
                forbid=(ref.attention_backward_stages, ref.softmax_backward, ref.attention_forward,
                        ref.attention_scores, ref.attention_weights, ref.attention), hints=[
    "Go backward through the three steps of the forward pass: out = P @ v, P = softmax(S) over each row, "
    "S = q @ k^T * scale. Recompute P first (with the mask). A product A @ B sends dout @ B^T to A and A^T @ dout "
    "to B; the softmax mixes a whole row, so its backward needs each row's sum.",
    "dv = P^T @ dout and dP = dout @ v^T; dS = P * (dP - sum(dP * P, axis=-1, keepdims=True)) (0 where P is 0, "
    "so masked keys get nothing); dq = dS @ k * scale and dk = dS^T @ q * scale, with scale = 1/sqrt(hs). "
    "Transposes swap the LAST two axes (np.swapaxes(a, -1, -2)).",
    "P = the forward's softmax weights; dv = np.swapaxes(P, -1, -2) @ dout; dP = dout @ np.swapaxes(v, -1, -2); "
    "dS from dP and P as above; then the two lines for dq and dk, and return (dq, dk, dv).",
])
def attention_backward(fn):
    """Gradients of attention: (dq, dk, dv)."""
    for case in range(1, len(ATTENTION_GRAD_CASES) + 1):
        args = attention_grad_case(case)
        N, Tq, Tk, hs, hv, kind = ATTENTION_GRAD_CASES[case - 1]
        what = _describe(N, Tq, Tk, hs, hv, kind) + (", scores near 1000" if case in GRAD_SCORE_SIZE else "")
        line = ("from dlcourse.transformer.checks import attention_grad_case; "
                f"dout, q, k, v, mask = attention_grad_case({case}); attention_backward(dout, q, k, v, mask)")
        with trying("attention_backward", label=what, call_text=line) as tried:
            expected = ref.attention_grads(*args)
            recorded: list = []
            try:
                out = call(fn, *args, record=recorded) if args[4] is not None else \
                    call(fn, *args[:4], record=recorded)
            except CheckFailed as fail:
                raises_like(ATTENTION_GRAD_MISTAKES, getattr(fail, "error", None), lambda row: row(*args),
                            f"({what})")
                raise
            got = expect_tuple(out, 3, "(dq, dk, dv)", "attention_backward", noun="arrays")
            got = tuple(_as_array(g, "attention_backward") for g in got)
            expect_float64(ATTENTION_GRAD_NAMES, got, what)
            tried.got, tried.expected = got, expected
            _permuted(ATTENTION_GRAD_MISTAKES, "outputs in the wrong order", ATTENTION_GRAD_NAMES, got, expected,
                      what)
            diagnose(got, expected, ATTENTION_GRAD_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(*args))
            if not same_items(got, expected):
                try:
                    first_wrong_stage(recorded, _attention_stages(*args))
                except CheckFailed as fail:
                    raise CheckFailed(f"{fail} ({what})", mistake=fail.mistake) from None
                name_first_wrong(ATTENTION_GRAD_NAMES, got, expected, what)
    return ("dq, dk and dv equal PyTorch's autograd through F.scaled_dot_product_attention on 5 cases "
            "(rectangular and square, causal and padding masks: masked keys get no gradient; stable at scores "
            "near 1000)")


# --------------------------------------------------------------------------- 3. split and merge heads

def split_reshape_directly(x, nh):
    N, T, E = x.shape
    return x.reshape(N, nh, T, E // nh)                                 # reads the numbers in memory order


def split_no_transpose(x, nh):
    N, T, E = x.shape
    return x.reshape(N, T, nh, E // nh)                                 # (N, T, nh, hs)


def split_transpose_wrong_axes(x, nh):
    N, T, E = x.shape
    return x.reshape(N, T, nh, E // nh).transpose(0, 3, 1, 2)           # (N, hs, T, nh)


def split_round_robin(x, nh):
    N, T, E = x.shape
    return x.reshape(N, T, E // nh, nh).transpose(0, 3, 1, 2)           # head h gets features h, h + nh, ...


def split_hs_from_t(x, nh):
    N, T, E = x.shape
    return x.reshape(N, T, nh, E // T).transpose(0, 2, 1, 3)            # hs = E // T


def split_transpose_first(x, nh):
    N, T, E = x.shape
    return x.transpose(0, 2, 1).reshape(N, nh, T, E // nh)              # (N, E, T) cut into blocks of T*hs


SPLIT_MISTAKES = (
    Mistake("reshape to (N, nh, T, hs)", split_reshape_directly,
            "x.reshape(N, nh, T, hs) reads the numbers in memory order, token after token, so it mixes tokens: "
            "with T = 2 tokens of E = 4 features and nh = 2, your head 0 gets token 0's features 0-1 as its "
            "'token 0' and token 0's features 2-3 as its 'token 1'. Reshape to (N, T, nh, hs) first (only the "
            "feature axis is cut), then swap the T and nh axes"),
    Mistake("no transpose", split_no_transpose,
            "the result is (N, T, nh, hs): the features are cut right, but the heads must come before the time "
            "axis, (N, nh, T, hs): swap axes 1 and 2 (x.transpose(0, 2, 1, 3))"),
    Mistake("transpose of the wrong axes", split_transpose_wrong_axes,
            "the axes are transposed in the wrong order, giving (N, hs, T, nh): from (N, T, nh, hs) only the "
            "T and nh axes swap, .transpose(0, 2, 1, 3)"),
    Mistake("features dealt round-robin", split_round_robin,
            "head h gets the features h, h + nh, h + 2nh, ... (reshape to (N, T, hs, nh)): heads are "
            "CONTIGUOUS blocks of hs features (nn.MultiheadAttention's layout), reshape to (N, T, nh, hs)"),
    Mistake("hs = E // T", split_hs_from_t,
            "the head size is computed from the wrong dimension: hs = E // nh (the features shared among the "
            "heads), not E // T"),
    Mistake("transpose before reshape", split_transpose_first,
            "x is transposed to (N, E, T) before the reshape, so each head gets a block of the (E, T) layout "
            "that mixes features and tokens: cut the LAST axis first, x.reshape(N, T, nh, hs), then transpose"),
)

# (N, T, E, nh); T, nh and hs = E / nh all differ in the first case, so that a swap of any two is a wrong shape
SPLIT_CASES = [(1, 2, 12, 3), (2, 3, 8, 2), (2, 5, 12, 4), (3, 4, 12, 3)]


def heads_case(case: int, merged: bool = False):
    """Case ``case`` (1 to 4) of the split_heads check, ``(x, nh)``; with ``merged=True`` the
    merge_heads check's input, the split heads ``(N, nh, T, hs)``."""
    N, T, E, nh = SPLIT_CASES[case - 1]
    x = np.arange(N * T * E, dtype=np.float64).reshape(N, T, E) + np.random.default_rng(740 + case).random((N, T, E))
    if merged:
        return np.ascontiguousarray(ref.split_heads(x, nh))
    return x, nh


@check.exercise(points=1, mistakes=SPLIT_MISTAKES, reference=(ref.split_heads, tt.split_heads), hints=[
    "Each token's E features are cut into nh consecutive blocks of hs = E / nh, one per head; no number may move "
    "to another token. Then the heads go next to the batch, so that each head is a (T, hs) matrix.",
    "Two steps: a reshape that cuts ONLY the last axis, (N, T, E) -> (N, T, nh, hs), then a transpose that swaps "
    "the T and nh axes, -> (N, nh, T, hs).",
    "N, T, E = x.shape; hs = E // nh; return x.reshape(N, T, nh, hs) followed by .transpose(...) of axes 1 and 2.",
])
def split_heads(fn):
    """(N, T, E) -> (N, nh, T, hs)."""
    for case in range(1, len(SPLIT_CASES) + 1):
        x, nh = heads_case(case)
        N, T, E, _ = SPLIT_CASES[case - 1]
        what = f"N = {N}, T = {T}, E = {E}, nh = {nh}"
        line = f"from dlcourse.transformer.checks import heads_case; x, nh = heads_case({case}); split_heads(x, nh)"
        with trying("split_heads", label=what, call_text=line) as tried:
            expected = ref.split_heads(x, nh)
            try:
                out = call(fn, x, nh)
            except CheckFailed as fail:
                raises_like(SPLIT_MISTAKES, getattr(fail, "error", None), lambda row: row(x, nh), f"({what})")
                raise
            out = _as_array(out, "split_heads")
            expect_float64(("heads",), (out,), what)
            tried.got, tried.expected = out, expected
            diagnose(out, expected, SPLIT_MISTAKES, suffix=f"({what})", apply=lambda row: row(x, nh))
            expect_close(out, expected, f"heads ({what})")
    return "equals torch's view + transpose on 4 cases: head h holds features h*hs .. (h+1)*hs - 1 of every token"


def merge_no_transpose(x):
    N, nh, T, hs = x.shape
    return x.reshape(N, T, nh * hs)                                     # mixes tokens (the inverse mistake)


def merge_interleaved(x):
    N, nh, T, hs = x.shape
    return x.transpose(0, 2, 3, 1).reshape(N, T, nh * hs)              # (N, T, hs, nh): features interleaved


def merge_no_reshape(x):
    return x.transpose(0, 2, 1, 3)                                      # (N, T, nh, hs)


def merge_heads_along_time(x):
    return np.concatenate([x[:, h] for h in range(x.shape[1])], axis=1)   # (N, nh*T, hs)


def merge_heads_summed(x):
    return x.sum(axis=1)                                                # (N, T, hs)


MERGE_MISTAKES = (
    Mistake("reshape without transposing back", merge_no_transpose,
            "x.reshape(N, T, E) straight from (N, nh, T, hs) reads the numbers in memory order, head after head, "
            "so it mixes tokens: bring the time axis back next to the batch first, x.transpose(0, 2, 1, 3) -> "
            "(N, T, nh, hs), then reshape to (N, T, nh * hs)"),
    Mistake("features interleaved", merge_interleaved,
            "the heads' features are interleaved (transposed to (N, T, hs, nh) before the reshape): head h must "
            "come back as the contiguous features h*hs .. (h+1)*hs - 1, so transpose to (N, T, nh, hs)"),
    Mistake("no reshape", merge_no_reshape,
            "the result is still (N, T, nh, hs): after the transpose, reshape to (N, T, nh * hs) to join the "
            "heads' features into one vector per token"),
    Mistake("heads along time", merge_heads_along_time,
            "the heads are concatenated along the TIME axis, (N, nh*T, hs): each token's nh pieces belong side "
            "by side in its feature vector, (N, T, nh*hs)"),
    Mistake("heads summed", merge_heads_summed,
            "the heads are summed (N, T, hs): merging keeps every head's features side by side, (N, T, nh*hs); "
            "mixing them is the job of the output projection that follows"),
)


@check.exercise(points=1, mistakes=MERGE_MISTAKES, reference=(ref.merge_heads, tt.merge_heads), hints=[
    "Merging is the inverse of splitting: every token gets back one vector of E = nh * hs features, head 0's hs "
    "features first, then head 1's, and so on.",
    "Undo the two steps of split_heads in reverse order: first the transpose (N, nh, T, hs) -> (N, T, nh, hs), "
    "then a reshape that joins the last two axes.",
    "Unpack the four sizes from x.shape; return x.transpose(...) of axes 1 and 2, then .reshape(N, T, nh * hs) "
    "(a transposed array is not contiguous: reshape copies it, which is fine).",
])
def merge_heads(fn):
    """(N, nh, T, hs) -> (N, T, E)."""
    for case in range(1, len(SPLIT_CASES) + 1):
        x = heads_case(case, merged=True)
        N, nh, T, hs = x.shape
        what = f"N = {N}, nh = {nh}, T = {T}, hs = {hs}"
        line = ("from dlcourse.transformer.checks import heads_case; x = heads_case("
                f"{case}, merged=True); merge_heads(x)")
        with trying("merge_heads", label=what, call_text=line) as tried:
            expected = ref.merge_heads(x)
            try:
                out = call(fn, x)
            except CheckFailed as fail:
                raises_like(MERGE_MISTAKES, getattr(fail, "error", None), lambda row: row(x), f"({what})")
                raise
            out = _as_array(out, "merge_heads")
            expect_float64(("merged",), (out,), what)
            tried.got, tried.expected = out, expected
            diagnose(out, expected, MERGE_MISTAKES, suffix=f"({what})", apply=lambda row: row(x))
            expect_close(out, expected, f"merged ({what})")
    return "inverts split_heads on 4 cases: (N, nh, T, hs) -> (N, T, nh*hs), head h's features back in block h"


# --------------------------------------------------------------------------- 4. layer norm forward

def _ln(x, gamma, beta, eps, axis=-1, ddof=0, eps_outside=False):
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return (x - mu) / std * gamma + beta


def ln_batch_axis(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, axis=0)                             # batch norm's axis


def ln_unbiased(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, ddof=1)                             # divides by E - 1


def ln_eps_outside_sqrt(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, eps, eps_outside=True)                   # sqrt(var) + eps


def ln_no_eps(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, 0.0)


def ln_eps_ignored(x, gamma, beta, eps=1e-5):
    return _ln(x, gamma, beta, 1e-5)                                    # the eps argument never used


def ln_gamma_beta_swapped(x, gamma, beta, eps=1e-5):
    return _ln(x, beta, gamma, eps)                                     # xhat * beta + gamma


def ln_missing_keepdims(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1)                                                # (N, T): no longer broadcasts
    var = ((x - mu) ** 2).mean(axis=-1)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def ln_all_axes(x, gamma, beta, eps=1e-5):
    return (x - x.mean()) / np.sqrt(x.var() + eps) * gamma + beta       # one mean for the whole batch


def ln_uncentred_variance(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = (x ** 2).mean(axis=-1, keepdims=True)                         # E[x^2], not E[(x - mu)^2]
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


LAYER_NORM_MISTAKES = (
    Mistake("over the batch axis", ln_batch_axis,
            "the statistics are taken over the batch (axis 0), as batch norm does: layer norm normalises each "
            "token on its own, over its E features, the LAST axis (axis=-1, keepdims=True)"),
    Mistake("over all axes", ln_all_axes,
            "one mean and variance for the whole array: layer norm takes them per token, over the last axis "
            "only (axis=-1, keepdims=True)"),
    Mistake("unbiased variance", ln_unbiased,
            "the variance divides by E - 1 (ddof=1, the unbiased estimate): nn.LayerNorm uses the biased one, "
            "the mean of the squared deviations (np.var's default ddof=0)"),
    Mistake("eps outside the sqrt", ln_eps_outside_sqrt,
            "eps is added to the standard deviation: nn.LayerNorm adds it to the VARIANCE, "
            "(x - mean) / sqrt(var + eps)"),
    Mistake("no eps", ln_no_eps,
            "eps is missing: divide by sqrt(var + eps), which keeps a row of (nearly) equal features from a "
            "division by (nearly) zero, and use the eps you are given"),
    Mistake("eps argument ignored", ln_eps_ignored,
            "the eps argument is ignored (1e-5 hard-coded): use the eps you are given, "
            "(x - mean) / np.sqrt(var + eps); with eps = 0.1 the difference shows"),
    Mistake("gamma and beta swapped", ln_gamma_beta_swapped,
            "gamma and beta are swapped: gamma scales the normalised x and beta shifts it, y = xhat * gamma + beta"),
    Mistake("missing keepdims", ln_missing_keepdims,
            "x.mean(axis=-1) drops the feature axis, so x - mean cannot line up the (N, T) means with the (N, T, "
            "E) input: pass keepdims=True to mean and var, which keeps a length-1 axis that broadcasts"),
    Mistake("variance not centred", ln_uncentred_variance,
            "the variance is the mean of x**2: it is the mean of the squared DEVIATIONS, ((x - mean)**2).mean "
            "(or np.var), over the last axis"),
)

# (shape, feature spread, eps): 2-D first, a row of nearly equal features, then a larger eps
LAYER_NORM_CASES = [((2, 3), 1.0, 1e-5), ((2, 3, 4), 1.0, 1e-5), ((3, 2, 5), 1e-3, 1e-5), ((2, 4, 6), 1.0, 0.1)]


def layer_norm_case(case: int):
    """The inputs of case ``case`` (1 to 4) of the layer_norm_forward check: ``x, gamma, beta, eps``."""
    shape, spread, eps = LAYER_NORM_CASES[case - 1]
    rng = np.random.default_rng(750 + case)
    E = shape[-1]
    x = 2.0 + rng.standard_normal(shape[:-1] + (1,)) + spread * rng.standard_normal(shape)
    return x, 1.0 + 0.5 * rng.standard_normal(E), 0.5 * rng.standard_normal(E), eps


def _ln_what(x, eps):
    return f"x {x.shape}, eps = {eps:g}" + (", rows of nearly equal features" if x.std(axis=-1).max() < 0.01 else "")


@check.exercise(points=2, mistakes=LAYER_NORM_MISTAKES, reference=ref.layer_norm, forbid=(ref.layer_norm_forward,),
                hints=[
    "Layer norm treats every token (every row of E features) on its own: subtract the row's mean, divide by the "
    "row's standard deviation (with eps inside the square root), then scale by gamma and shift by beta, one "
    "value per feature.",
    "mean and variance over axis=-1 with keepdims=True, so they stay (..., 1) and broadcast; the variance is "
    "the biased one (divide by E, np.var's default); xhat = (x - mean) / sqrt(var + eps); y = xhat * gamma + beta.",
    "mu = x.mean(axis=-1, keepdims=True); var = x.var(axis=-1, keepdims=True); then the line for xhat and "
    "return xhat * gamma + beta.",
])
def layer_norm_forward(fn):
    """nn.LayerNorm over the last axis."""
    expect_defaults(fn, "layer_norm_forward", eps=1e-5)
    for case in range(1, len(LAYER_NORM_CASES) + 1):
        args = layer_norm_case(case)
        what = _ln_what(args[0], args[3])
        line = ("from dlcourse.transformer.checks import layer_norm_case; x, gamma, beta, eps = "
                f"layer_norm_case({case}); layer_norm_forward(x, gamma, beta, eps)")
        with trying("layer_norm_forward", label=what, call_text=line) as tried:
            expected = ref.layer_norm(*args)
            try:
                out = call(fn, *args)
            except CheckFailed as fail:
                err = getattr(fail, "error", None)
                raises_like(LAYER_NORM_MISTAKES, err, lambda row: row(*args), f"({what})")
                if err is not None and isinstance(err, ValueError) and "broadcast" in str(err):
                    fail_with(LAYER_NORM_MISTAKES, "missing keepdims", f"({type(err).__name__}: {err}) ({what})")
                raise
            out = _as_array(out, "layer_norm_forward")
            expect_float64(("y",), (out,), what)
            tried.got, tried.expected = out, expected
            diagnose(out, expected, LAYER_NORM_MISTAKES, suffix=f"({what})", apply=lambda row: row(*args))
            expect_close(out, expected, f"y ({what})")
    return "equals nn.LayerNorm on 4 cases (per token over the last axis, biased variance, eps inside the sqrt)"


# --------------------------------------------------------------------------- 5. layer norm backward

def _ln_parts(x, eps, ddof=0):
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True, ddof=ddof) + eps)
    return (x - mu) * rstd, rstd


def _lead(dy):
    return tuple(range(dy.ndim - 1))


def lnb_constants(dy, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    return dy * gamma * rstd, (dy * xhat).sum(axis=_lead(dy)), dy.sum(axis=_lead(dy))   # mean, var as constants


def lnb_mean_path_only(dy, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True))                     # the variance's path forgotten
    return dx, (dy * xhat).sum(axis=_lead(dy)), dy.sum(axis=_lead(dy))


def lnb_not_summed(dy, x, gamma, eps=1e-5):
    dx, _, _ = ref.layer_norm_grads(dy, x, gamma, eps)
    xhat, _ = _ln_parts(x, eps)
    return dx, dy * xhat, dy                                            # one gradient per token, (..., E)


def lnb_dgamma_from_x(dy, x, gamma, eps=1e-5):
    dx, _, dbeta = ref.layer_norm_grads(dy, x, gamma, eps)
    return dx, (dy * x).sum(axis=_lead(dy)), dbeta                      # x, not xhat


def lnb_wrong_axis(dy, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=0, keepdims=True) - xhat * np.mean(g * xhat, axis=0, keepdims=True))
    return dx, (dy * xhat).sum(axis=_lead(dy)), dy.sum(axis=_lead(dy))


def lnb_unbiased(dy, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps, ddof=1)                              # the forward's variance is biased
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=_lead(dy)), dy.sum(axis=_lead(dy))


def lnb_summed_over_axis0(dy, x, gamma, eps=1e-5):
    dx, _, _ = ref.layer_norm_grads(dy, x, gamma, eps)
    xhat, _ = _ln_parts(x, eps)
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)                  # (T, E) for a 3-d input


def lnb_gamma_forgotten(dy, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    g = dy                                                              # dxhat = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=_lead(dy)), dy.sum(axis=_lead(dy))


LAYER_NORM_GRAD_MISTAKES = (
    Mistake("mean and variance as constants", lnb_constants,
            "dgamma and dbeta are right; dx = dy * gamma / std treats the mean and the standard deviation as "
            "constants, but both depend on every x of the row: subtract the paths through them, "
            "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means over the last axis"),
    Mistake("variance path forgotten", lnb_mean_path_only,
            "dgamma and dbeta are right; dx has the path through the mean but not the one through the variance: "
            "also subtract xhat * mean(dxhat * xhat) (over the last axis) before multiplying by rstd"),
    Mistake("dgamma not summed", lnb_not_summed,
            "dgamma and dbeta have the input's shape: gamma and beta are shared by every token, so their "
            "gradients are summed over every axis but the last, shape (E,)"),
    Mistake("dgamma from x", lnb_dgamma_from_x,
            "dgamma is summed from dy * x: gamma multiplies the NORMALISED input, y = xhat * gamma + beta, so "
            "dgamma = sum of dy * xhat"),
    Mistake("means over the wrong axis", lnb_wrong_axis,
            "dgamma and dbeta are right; dx's means run over axis 0 (the batch): the statistics were per token, "
            "so the means in dx run over the features, axis=-1 with keepdims=True"),
    Mistake("unbiased variance", lnb_unbiased,
            "dgamma and dbeta are right; dx uses the unbiased variance (ddof=1): the forward pass divides by E "
            "(the biased variance), and its backward must use the same xhat and rstd"),
    Mistake("summed over axis 0 only", lnb_summed_over_axis0,
            "dgamma and dbeta are summed over the batch axis only: with a (N, T, E) input they must be summed "
            "over N AND T, every axis but the last, shape (E,)"),
    Mistake("gamma forgotten in dx", lnb_gamma_forgotten,
            "dgamma and dbeta are right; dx forgets gamma: the gradient reaching xhat is dxhat = dy * gamma, "
            "and the rest of dx is built from it"),
)

LAYER_NORM_GRAD_CASES = [((2, 3), 1e-5), ((2, 3, 4), 1e-5), ((3, 2, 5), 1e-2), ((2, 4, 6), 1e-5)]


def layer_norm_grad_case(case: int):
    """The inputs of case ``case`` (1 to 4) of the layer_norm_backward check: ``dy, x, gamma, eps``."""
    shape, eps = LAYER_NORM_GRAD_CASES[case - 1]
    rng = np.random.default_rng(760 + case)
    x = 1.0 + rng.standard_normal(shape[:-1] + (1,)) + rng.standard_normal(shape)
    return rng.standard_normal(shape), x, 1.0 + 0.5 * rng.standard_normal(shape[-1]), eps


LAYER_NORM_GRAD_NAMES = ("dx", "dgamma", "dbeta")


@check.exercise(points=3, mistakes=LAYER_NORM_GRAD_MISTAKES, reference=ref.layer_norm_grads,
                forbid=(ref.layer_norm_backward, ref.layer_norm_forward, ref.layer_norm), hints=[
    "y = xhat * gamma + beta gives dbeta and dgamma directly (summed over every token: gamma and beta are "
    "shared). The hard part is dx: xhat = (x - mean) * rstd, and BOTH the mean and the variance of the row depend "
    "on every x in it, so the gradient flows along three paths.",
    "dxhat = dy * gamma. Along the three paths the chain rule collapses into one line per row: "
    "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), both means over the last axis with "
    "keepdims=True. Recompute xhat and rstd = 1 / sqrt(var + eps) (the biased variance) from x first.",
    "lead = tuple(range(x.ndim - 1)); dbeta = dy.sum(axis=lead); dgamma = (dy * xhat).sum(axis=lead); "
    "g = dy * gamma; then the one line for dx above; return (dx, dgamma, dbeta).",
])
def layer_norm_backward(fn):
    """Gradients of layer norm: (dx, dgamma, dbeta)."""
    expect_defaults(fn, "layer_norm_backward", eps=1e-5)
    for case in range(1, len(LAYER_NORM_GRAD_CASES) + 1):
        args = layer_norm_grad_case(case)
        dy, x, gamma, eps = args
        what = f"x {x.shape}, eps = {eps:g}"
        line = ("from dlcourse.transformer.checks import layer_norm_grad_case; dy, x, gamma, eps = "
                f"layer_norm_grad_case({case}); layer_norm_backward(dy, x, gamma, eps)")
        with trying("layer_norm_backward", label=what, call_text=line) as tried:
            expected = ref.layer_norm_grads(*args)
            recorded: list = []
            try:
                out = call(fn, *args, record=recorded)
            except CheckFailed as fail:
                raises_like(LAYER_NORM_GRAD_MISTAKES, getattr(fail, "error", None), lambda row: row(*args),
                            f"({what})")
                raise
            got = expect_tuple(out, 3, "(dx, dgamma, dbeta)", "layer_norm_backward", noun="arrays")
            got = tuple(_as_array(g, "layer_norm_backward") for g in got)
            expect_float64(LAYER_NORM_GRAD_NAMES, got, what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, LAYER_NORM_GRAD_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(*args))
            if not _close(got[0], expected[0]):
                xhat, rstd = _ln_parts(x, eps)
                try:
                    first_wrong_stage(recorded, [
                        ("xhat", xhat, "recompute the forward: xhat = (x - mean) / sqrt(var + eps), mean and "
                                       "biased variance over the last axis"),
                        ("dxhat", dy * gamma, "the gradient reaching xhat is dy * gamma"),
                        ("dx", expected[0], "dx must also flow through the row's mean and variance (both depend "
                                            "on every x of the row): subtract the mean of dxhat and the part of "
                                            "dxhat along xhat (means over the last axis), then multiply by rstd")])
                except CheckFailed as fail:
                    raise CheckFailed(f"{fail} ({what})", mistake=fail.mistake) from None
            name_first_wrong(LAYER_NORM_GRAD_NAMES, got, expected, what)
    return "dx, dgamma and dbeta equal nn.LayerNorm's autograd on 4 cases (2-d and 3-d inputs, two eps)"


# --------------------------------------------------------------------------- 6. sinusoidal positions

def _angles(T, E, base=10000.0, start=0, exponent=2.0):
    t = np.arange(start, start + T, dtype=np.float64)[:, None]
    i = np.arange(E // 2, dtype=np.float64)
    return t * base ** (-exponent * i / E)                              # (T, E/2)


def _interleave(a, b):
    pe = np.empty((a.shape[0], 2 * a.shape[1]))
    pe[:, 0::2], pe[:, 1::2] = a, b
    return pe


def pos_halves(T, E):
    a = _angles(T, E)
    return np.concatenate([np.sin(a), np.cos(a)], axis=1)               # [sin | cos]


def pos_exponent_i_over_e(T, E):
    a = _angles(T, E, exponent=1.0)                                     # base^(i/E)
    return _interleave(np.sin(a), np.cos(a))


def pos_sin_cos_swapped(T, E):
    a = _angles(T, E)
    return _interleave(np.cos(a), np.sin(a))


def pos_from_one(T, E):
    a = _angles(T, E, start=1)
    return _interleave(np.sin(a), np.cos(a))


def pos_base_1000(T, E):
    a = _angles(T, E, base=1000.0)
    return _interleave(np.sin(a), np.cos(a))


def pos_own_column_index(T, E):
    t = np.arange(T, dtype=np.float64)[:, None]
    j = np.arange(E, dtype=np.float64)
    a = t / 10000.0 ** (j / E)                                          # column j's own index: odd ones drift
    return np.where(j % 2 == 0, np.sin(a), np.cos(a))


def pos_multiplied(T, E):
    t = np.arange(T, dtype=np.float64)[:, None]
    i = np.arange(E // 2, dtype=np.float64)
    a = t * 10000.0 ** (2 * i / E)                                      # t * base^(2i/E): faster, not slower
    return _interleave(np.sin(a), np.cos(a))


POSITION_MISTAKES = (
    Mistake("halves concatenated", pos_halves,
            "the sines fill the first half of the columns and the cosines the second ([sin | cos]): the paper's "
            "table interleaves them, sin in the EVEN columns 0, 2, 4, ... and cos in the odd columns 1, 3, 5, ... "
            "(pe[:, 0::2] and pe[:, 1::2])"),
    Mistake("exponent i/E", pos_exponent_i_over_e,
            "pair i's frequency uses the exponent i/E: it is 2i/E (the column index of the pair's sine), "
            "w_i = 10000^(-2i/E), so the slowest pair turns about once every 10000 * 2pi steps"),
    Mistake("sin and cos swapped", pos_sin_cos_swapped,
            "sin and cos are swapped: the even columns hold the sine, PE[t, 2i] = sin(t * w_i), the odd columns the "
            "cosine, PE[t, 2i+1] = cos(t * w_i)"),
    Mistake("positions from 1", pos_from_one,
            "the positions start at 1: the first token is position 0 (row 0 is [0, 1, 0, 1, ...]), "
            "t = 0 .. T-1 (np.arange(T))"),
    Mistake("base 1000", pos_base_1000,
            "the base is 1000: the paper's frequencies are w_i = 1 / 10000^(2i/E)"),
    Mistake("odd columns with their own index", pos_own_column_index,
            "each column uses its own index j in the exponent, so the cosine of pair i turns at 10000^(-(2i+1)/E), "
            "not at its sine's frequency: a sin/cos pair shares ONE frequency, w_i = 10000^(-2i/E)"),
    Mistake("t times base^(2i/E)", pos_multiplied,
            "the angle is t * 10000^(2i/E), which makes the later pairs turn FASTER: it is t / 10000^(2i/E), "
            "so the frequencies fall from 1 radian per step to about 1/10000"),
)

POSITION_CASES = [(1, 2), (3, 4), (5, 8), (16, 12), (50, 64)]           # (T, E)


@check.exercise(points=2, mistakes=POSITION_MISTAKES, reference=(ref.sinusoidal_positions, tt.sinusoidal_positions), hints=[
    "Each pair of columns (2i, 2i+1) is a point turning on a circle at its own frequency w_i; row t holds where "
    "every point is after t steps: the sine in the even column, the cosine in the odd one. The frequencies fall "
    "geometrically from 1 radian per step (i = 0) to about 1/10000.",
    "t = 0 .. T-1 as a column (T, 1), w_i = 10000^(-2i/E) for i = 0 .. E/2 - 1 as a row, and their product is "
    "the (T, E/2) angle table; write sin(angle) into columns 0, 2, 4, ... and cos(angle) into 1, 3, 5, ....",
    "pe = np.zeros((T, E)); t = np.arange(T)[:, None]; w = 10000.0 ** (-np.arange(0, E, 2) / E); then "
    "pe[:, 0::2] and pe[:, 1::2] from t * w; return pe.",
])
def sinusoidal_positions(fn):
    """The (T, E) sinusoidal table."""
    for T, E in POSITION_CASES:
        what = f"T = {T}, E = {E}"
        with trying("sinusoidal_positions", T, E, label=what) as tried:
            expected = ref.sinusoidal_positions(T, E)
            try:
                out = call(fn, T, E)
            except CheckFailed as fail:
                raises_like(POSITION_MISTAKES, getattr(fail, "error", None), lambda row: row(T, E), f"({what})")
                raise
            out = _as_array(out, "sinusoidal_positions")
            if getattr(out, "dtype", None) in (np.float32, np.float16):
                out = np.asarray(out, dtype=np.float64)                 # float32 is fine for a position table
            tried.got, tried.expected = out, expected
            diagnose(out, expected, POSITION_MISTAKES, rtol=1e-5, atol=1e-6, suffix=f"({what})",
                     apply=lambda row: row(T, E))
            expect_close(out, expected, f"pe ({what})", rtol=1e-5, atol=1e-6)
    return "equals the paper's table on 5 sizes (interleaved sin/cos, w_i = 10000^(-2i/E), positions from 0)"


# --------------------------------------------------------------------------- 7. KV-cached generation (PyTorch)

def _split(a, nh):
    N, T, E = a.shape
    return a.view(N, T, nh, E // nh).transpose(1, 2)                    # (N, nh, T, hs)


def _join(y):
    N, nh, T, hs = y.shape
    return y.transpose(1, 2).reshape(N, T, nh * hs)                     # (N, T, E)


def _attend(block, h, cache, dim=2, is_causal=False, own_first=True):
    """One layer's cached self-attention on the new tokens h (N, T, E), after the projection: (N, T, E).

    ``cache`` is this layer's dict with "k" and "v" (N, nh, T_seen, hs).  The keyword arguments
    build the table's wrong variants: the cache appended along another axis, SDPA's top-left
    ``is_causal``, or the new tokens' own keys appended only after attending.
    """
    nh = block.attn.n_head
    q, k, v = block.attn.qkv(h).split(h.shape[-1], dim=2)
    q, k, v = _split(q, nh), _split(k, nh), _split(v, nh)
    if own_first:
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=dim), torch.cat([cache["v"], v], dim=dim)
        cache["k"], cache["v"] = k, v
    elif "k" in cache:                                                 # attends to the old keys only
        k_new, v_new = k, v
        k, v = cache["k"], cache["v"]
        cache["k"], cache["v"] = torch.cat([k, k_new], dim=dim), torch.cat([v, v_new], dim=dim)
    else:
        cache["k"], cache["v"] = k, v
    Tq, Tk = q.shape[2], k.shape[2]
    if is_causal:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        mask = torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq)     # query i sees keys up to Tk - Tq + i
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return block.attn.proj(_join(y))


def _block(block, x, cache, attend):
    x = x + attend(block, block.ln1(x), cache)
    return x + block.mlp(block.ln2(x))


def _block_no_residual(block, x, cache, attend):
    x = attend(block, block.ln1(x), cache)                              # the residual stream dropped
    return x + block.mlp(block.ln2(x))


def _decode(model, ids, max_new_tokens, attend=_attend, block=_block, offset=True, keep=True):
    """Greedy decoding with a hand-written cache (right with the defaults); the rows change one piece."""
    with torch.no_grad():
        caches = [{} for _ in model.blocks]
        out, new, past = ids, ids, 0
        for _ in range(max_new_tokens):
            if not keep:
                caches = [{} for _ in model.blocks]
            x = model.embed(new, past if offset else 0)                 # (N, T_new, E)
            for layer, cache in zip(model.blocks, caches):
                x = block(layer, x, cache, attend)
            nxt = model.head(model.ln_f(x[:, -1])).argmax(-1, keepdim=True)   # (N, 1)
            out = torch.cat([out, nxt], dim=1)
            past += new.shape[1]
            new = nxt
        return out


def gen_model_cache(model, ids, max_new_tokens):
    with torch.no_grad():
        cache = tt.new_cache(model)
        logits, _ = model(ids, cache=cache)                             # the course's cache code does the work
        out = ids
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], dim=1)
            logits, _ = model(nxt, cache=cache)
        return out


def gen_not_cached(model, ids, max_new_tokens):
    out = ids
    for _ in range(max_new_tokens):                                     # the whole sequence again every step
        out = torch.cat([out, _decode(model, out, 1)[:, -1:]], dim=1)
    return out


def gen_cache_on_heads_axis(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, attend=functools.partial(_attend, dim=1))


def gen_cache_on_last_axis(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, attend=functools.partial(_attend, dim=3))


def gen_positions_not_offset(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, offset=False)


def gen_is_causal_one_query(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, attend=functools.partial(_attend, is_causal=True))


def gen_residual_forgotten(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, block=_block_no_residual)


def gen_own_kv_not_appended(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, attend=functools.partial(_attend, own_first=False))


def gen_cache_not_kept(model, ids, max_new_tokens):
    return _decode(model, ids, max_new_tokens, keep=False)


GENERATE_MISTAKES = (
    Mistake("model's own cache used", gen_model_cache,
            "your loop hands a cache to the model (model(..., cache=...), a block's or an attention layer's "
            "forward with a cache): that is the course's KV cache doing the work; run the pieces yourself "
            "(model.embed, block.ln1, block.attn.qkv, attention over YOUR cached keys and values, "
            "block.attn.proj, block.ln2, block.mlp, model.ln_f, model.head)"),
    Mistake("not cached", gen_not_cached,
            "the tokens are right, but nothing is cached: every step runs the whole sequence through the layers "
            "again. Run the prompt once, keep each layer's keys and values, and then feed only the ONE newest "
            "token per step"),
    Mistake("cache on the heads axis", gen_cache_on_heads_axis,
            "the new keys and values are appended along dim 1, the heads: in (N, nh, T, hs) the time axis is "
            "dim 2, torch.cat([cache_k, k], dim=2)"),
    Mistake("cache on the last axis", gen_cache_on_last_axis,
            "the new keys and values are appended along dim 3, the head size: in (N, nh, T, hs) the time axis is "
            "dim 2, torch.cat([cache_k, k], dim=2)"),
    Mistake("positions not offset", gen_positions_not_offset,
            "every new token is embedded at position 0: after `past` cached tokens the new one sits at position "
            "`past`, model.embed(new_ids, past)"),
    Mistake("is_causal with one query", gen_is_causal_one_query,
            "a causal mask aligned top-left (is_causal=True or a tril mask such as torch.ones(Tq, Tk).tril()) with "
            "ONE query against many keys: the triangle starts at the top-left corner, so the new token sees only "
            "key 0; after the prompt the new token may see every cached key (no mask), and in general query i "
            "sees keys up to Tk - Tq + i"),
    Mistake("residual forgotten", gen_residual_forgotten,
            "the attention's residual is missing: the block ADDS the attention's output to its input, "
            "x = x + proj(attention(ln1(x))), and then x = x + mlp(ln2(x))"),
    Mistake("own k, v not appended first", gen_own_kv_not_appended,
            "the new token attends to the cached keys only, its own key and value appended afterwards: append "
            "first, then attend, so that the token also sees itself (as it does without a cache)"),
    Mistake("cache not kept", gen_cache_not_kept,
            "the cache starts empty at every step, so each new token sees only itself: keep each layer's "
            "keys and values across the steps and append to them"),
)

# (N, prompt length, new tokens); prompt + new tokens fit in the model's block_size (32)
GENERATE_CASES = [(1, 1, 5), (1, 4, 6), (2, 3, 8), (3, 6, 10)]


def generate_model():
    """The small GPT of the generate_cached check (learned positions, 2 layers, 2 heads, E = 16, V = 13,
    block_size 32), its weights drawn large enough that every mistake changes the tokens."""
    g = torch.Generator().manual_seed(707)
    model = tt.GPT(vocab_size=13, block_size=32, n_layer=2, n_head=2, n_embd=16, pos="learned")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:                                          # layer norm gains
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.6 * torch.randn(p.shape, generator=g))
    return model.eval()


def generate_case(case: int):
    """Case ``case`` (1 to 4) of the generate_cached check: ``model, ids, max_new_tokens``."""
    N, T, n = GENERATE_CASES[case - 1]
    g = torch.Generator().manual_seed(770 + case)
    return generate_model(), torch.randint(0, 13, (N, T), generator=g), n


class _Spy:
    """Watches a model while the learner's loop runs: tokens through layer 0's qkv per call, and any
    forward of the model, a block or an attention layer that is handed a cache."""

    def __init__(self, model, N: int):
        self.model, self.N, self.tokens, self.cached = model, N, [], False
        self.on, self.handles = False, []

    def __enter__(self):
        def count(module, inputs, output):
            if self.on and inputs and hasattr(inputs[0], "shape") and inputs[0].dim() >= 2:
                x = inputs[0]
                self.tokens.append(x.numel() // x.shape[-1] // self.N)      # token positions per sequence

        def with_cache(position):
            def hook(module, args, kwargs):
                cache = args[position] if len(args) > position else kwargs.get("cache")
                if self.on and cache is not None:
                    self.cached = True
            return hook

        self.handles.append(self.model.blocks[0].attn.qkv.register_forward_hook(count))
        self.handles.append(self.model.register_forward_pre_hook(with_cache(2), with_kwargs=True))
        for block in self.model.blocks:
            self.handles.append(block.register_forward_pre_hook(with_cache(1), with_kwargs=True))
            self.handles.append(block.attn.register_forward_pre_hook(with_cache(1), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


def _tokens(out, N: int, total: int, what: str):
    """The learner's output as an (N, total) int64 tensor, or a failure that says what came back."""
    if out is None:
        raise CheckFailed(f"generate_cached returned None: did you forget to `return` the ids? ({what})")
    try:
        out = torch.as_tensor(np.asarray(out) if isinstance(out, list) else out)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"generate_cached returned a {type(out).__name__}: return the ids as a tensor of "
                          f"shape (N, T + max_new_tokens) ({what})") from None
    expect(out.dim() == 2 and tuple(out.shape) == (N, total),
           f"generate_cached returned shape {tuple(out.shape)}: return the prompt followed by the new tokens, "
           f"(N, T + max_new_tokens) = {(N, total)} ({what})")
    expect(not out.is_floating_point(), f"generate_cached returned {out.dtype} ids: token ids are integers, "
                                        f"int64 (argmax gives them) ({what})")
    return out.long()


def _same_tokens(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
        bool(torch.equal(a.long(), b.long()))


def _translate_cat_error(fail: CheckFailed, run, what: str) -> None:
    err = getattr(fail, "error", None)
    if err is None:
        return
    raises_like(GENERATE_MISTAKES, err, run, f"({what})")
    text = str(err)
    if "Sizes of tensors must match except in dimension" in text:
        raise CheckFailed(f"torch.cat of the cache and the new keys fails ({text}): the cached keys and values "
                          "are (N, nh, T_seen, hs) and the new ones (N, nh, T_new, hs); they join along the "
                          f"time axis, dim=2 ({what})", mistake="cache axis") from None


@check.exercise(points=4, mistakes=GENERATE_MISTAKES, reference=tt.generate, seconds=60, hints=[
    "Without a cache each new token re-runs the whole sequence. But the keys and values of earlier tokens "
    "never change (causal attention: a token never sees later ones), so keep them per layer: run the prompt "
    "once, then each step feeds only the newest token, which attends to every cached key plus its own.",
    "Per step: x = model.embed(new_ids, past) (positions continue after the `past` tokens already seen); per "
    "block: q, k, v from block.attn.qkv(block.ln1(x)) split into E-wide thirds and into heads (N, nh, T, hs); "
    "append k, v to that layer's cache along the time axis (dim 2); attend: the prompt pass (T > 1 queries) "
    "DOES need the causal mask (is_causal=True), but a step's one query needs no mask (is_causal=True or a tril "
    "mask would hide the cache from it); merge the heads, block.attn.proj, add the residual; then the MLP "
    "residual; finally model.head(model.ln_f(x[:, -1])).argmax(-1).",
    "caches = [None] * len(model.blocks); new, past = ids, 0; loop max_new_tokens times: the embedding, the "
    "blocks (k = torch.cat([cache_k, k], dim=2) when the cache has something), "
    "nxt = logits.argmax(-1, keepdim=True), ids = torch.cat([ids, nxt], dim=1), past += new.shape[1], new = nxt.",
])
def generate_cached(fn):
    """Greedy decoding with a hand-written KV cache: (N, T + max_new_tokens) ids."""
    for case in range(1, len(GENERATE_CASES) + 1):
        model, ids, n = generate_case(case)
        N, T, _ = GENERATE_CASES[case - 1]
        what = f"N = {N}, prompt of T = {T} tokens, {n} new tokens"
        line = ("from dlcourse.transformer.checks import generate_case; model, ids, n = "
                f"generate_case({case}); generate_cached(model, ids, n)")
        with trying("generate_cached", label=what, call_text=line) as tried:
            expected = tt.generate(model, ids, n, greedy=True, use_cache=False)
            with _Spy(model, N) as spy:
                spy.on = True
                try:
                    out = call(fn, model, ids.clone(), n, allow_mutation=True)
                except CheckFailed as fail:
                    spy.on = False
                    _translate_cat_error(fail, lambda row: row(model, ids.clone(), n), what)
                    raise
                finally:
                    spy.on = False
            if spy.cached:
                fail_with(GENERATE_MISTAKES, "model's own cache used", f"({what})")
            out = _tokens(out, N, T + n, what)
            tried.got, tried.expected = out, expected
            expect(torch.equal(out[:, :T], ids), f"the first T = {T} ids are not the prompt: return the prompt "
                                                 f"followed by the new tokens ({what})")
            diagnose(out, expected, GENERATE_MISTAKES, same=_same_tokens, suffix=f"({what})",
                     apply=lambda row: row(model, ids.clone(), n))
            if not torch.equal(out, expected):
                first = int((out != expected).any(dim=0).nonzero()[0]) - T + 1      # 1 .. n
                where = ("it comes straight from the prompt pass, so look there first (positions, the causal mask "
                         "within the prompt, the blocks)" if first == 1 else
                         "the prompt pass was right, so look at the cached steps (the new token's position, what "
                         "it attends to, how the cache grows)")
                raise CheckFailed(f"the tokens differ from greedy decoding without a cache from new token {first} of "
                                  f"{n} on: {where} ({what})")
            fed = sum(spy.tokens)
            if fed > T + n:
                fail_with(GENERATE_MISTAKES, "not cached",
                          f"(layer 0 saw {fed} token positions; the prompt once and one per step is "
                          f"at most {T + n}) ({what})")
    return ("the same tokens as greedy decoding without a cache on 4 prompts, with the prompt run once and ONE "
            "token per step through the layers (your cache does the rest)")


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_mha_parameters", answer=16640, rtol=0,
    explanation="in_proj_weight holds W_q, W_k, W_v, three (E, E) matrices, and out_proj one more: 4E² = 16,384 "
                "weights, plus 4E = 256 biases (three in_proj_bias blocks and out_proj.bias): 16,640. The number "
                "of heads does not change it: the heads cut the same matrices into slices.",
    mistakes=[
        Mistake("no biases", 16384, "that counts the weights only: in_proj_bias (3E) and out_proj.bias (E) add 4E"),
        Mistake("per head", 66560, "the heads do not have their own full matrices: each head uses hs = E / nh "
                                   "columns of the same W_q, W_k, W_v; the count does not depend on nh"),
        Mistake("no output projection", 12480, "the output projection out_proj (E·E weights + E biases) "
                                               "belongs to the module too"),
        Mistake("q, k, v only, no biases", 12288, "that is W_q, W_k, W_v alone: add out_proj's E·E weights and "
                                                  "the 4E biases"),
        Mistake("one head's slice", 4160, "that is a quarter: the four heads share the (E, E) matrices, each "
                                          "using a slice, so all of them count"),
    ])

check.question(
    "q_score_std", answer=8.0, rtol=0.01,
    explanation="q·k is a sum of hs = 64 products of independent unit-variance numbers, so its variance is 64 "
                "and its standard deviation sqrt(64) = 8: unscaled scores are 8 times too spread for the softmax, "
                "which is why they are divided by sqrt(hs).",
    mistakes=[
        Mistake("the variance", 64.0, "64 is the variance of the sum of 64 unit-variance products; the standard "
                                      "deviation is its square root"),
        Mistake("scaled", 1.0, "1 is the spread AFTER dividing by sqrt(hs); unscaled the sum of 64 products "
                               "spreads further"),
        Mistake("inverse", 0.125, "0.125 = 1/8 is the scale factor that fixes it, not the spread"),
    ])

check.question(
    "q_kv_cache_numbers", answer=2 * 12 * 1024 * 768, rtol=0,
    explanation="every layer keeps a key and a value vector of E numbers for every token: 2·L·T·E = 2·12·1024·768 "
                "= 18,874,368 numbers (about 36 MiB in float16 for ONE sequence), growing linearly with T.",
    mistakes=[
        Mistake("keys only", 12 * 1024 * 768, "that counts only one of keys and values: the cache keeps both"),
        Mistake("queries too", 3 * 12 * 1024 * 768, "the queries are not cached: a query is used only at its "
                                                    "own step; only keys and values are read again later"),
        Mistake("one layer", 2 * 1024 * 768, "that is one layer's cache: every one of the L = 12 layers keeps "
                                             "its own keys and values"),
        Mistake("in bytes", 4 * 2 * 12 * 1024 * 768, "that looks like bytes (4 a number): the question asks "
                                                      "for numbers, not bytes"),
        Mistake("in float16 bytes", 2 * 2 * 12 * 1024 * 768, "that looks like bytes (2 a number in float16): "
                                                             "the question asks for numbers, not bytes"),
        Mistake("per head", 2 * 12 * 1024 * 768 * 12, "the heads share E: each head caches hs = E / nh "
                                                       "numbers per token, E in all"),
    ])

check.question(
    "q_score_memory_mib", answer=1024.0, rtol=0.01,
    explanation="T² scores per head, 16 heads, 4 bytes each: 4096² · 16 · 4 = 1,073,741,824 bytes = 1024 MiB, "
                "per layer and per sequence, and the backward pass keeps the softmax of the same size. That "
                "quadratic cost is what flash attention avoids by never materialising the matrix.",
    mistakes=[
        Mistake("one head", 64.0, "that is one head's score matrix: all 16 heads have one"),
        Mistake("bytes forgotten", 256.0, "that counts numbers as bytes: float32 takes 4 bytes a number"),
        Mistake("float64", 2048.0, "that is float64 (8 bytes): the question says float32, 4 bytes"),
        Mistake("in GiB", 1.0, "1 GiB is right, but the question asks for MiB: 1024"),
        Mistake("linear in T", 0.25, "the score matrix is T × T per head: quadratic in T, not linear"),
    ])

check.question(
    "q_mask_value", answer="b", choices=("a", "b", "c", "d"),
    explanation="-inf: exp(-inf) = 0 exactly, so after the softmax a masked key has weight 0 and the allowed "
                "keys share all of it (each row still sums to 1). Any other number leaves the key some weight.",
    mistakes=[
        Mistake("zero", "a", "exp(0) = 1: a masked score of 0 still gives the key as much weight as an average "
                             "key"),
        Mistake("minus one", "c", "exp(-1) ≈ 0.37: the key keeps weight; only -inf gives exactly 0"),
        Mistake("weights zeroed after", "d", "zeroing the weights after the softmax leaves rows that no longer "
                                             "sum to 1; the mask acts on the scores, before the softmax"),
    ])
