"""Graded checks for the exercises of chapter 06 (``solutions/06_rnn.py``).

Every exercise has a mistake table (:class:`~dlcourse.grading.Mistake` rows): the
classic wrong answers, each a plain wrong implementation with the exercise's own
signature.  A check runs the learner's code on cases from small to large against the
exercise forms at the bottom of :mod:`dlcourse.rnn.numpy_impl` (which equal PyTorch:
``tests/test_rnn_checks.py``) and, when an answer is wrong, recomputes the table's rows
on the same inputs to name the mistake.  What recomputation cannot see (an error raised
inside the learner's code, an input changed in place, how a generation loop fed its
model, how its draws are distributed) the check recognises itself and reports with its
row's message.  A failure shows the smallest failing case and a call that reproduces it.
``tests/test_course.py`` hands every row to its check and proves that exactly its
message comes back.

Dimension letters: N batch, T time steps, D input features, H hidden units,
V vocabulary (embeddings, logits), E embedding width.  Weights as PyTorch stores them:
``W_ih`` (G*H, D), ``W_hh`` (G*H, H), ``b_ih`` and ``b_hh`` (G*H,), G = 4 gates for the
LSTM (i, f, g, o), 3 for the GRU (r, z, n), 1 for the vanilla RNN.
"""
from __future__ import annotations

import numpy as np

from dlcourse.grading import (CheckFailed, Checker, Mistake, call, diagnose, expect, expect_close,
                              expect_tuple, fail_with, raises_like, same_items, trying)
from dlcourse.grading import matches as _close
from dlcourse.rnn import numpy_impl as ref

check = Checker("06_rnn")

__all__ = ["check", "lstm_case", "gru_case", "bptt_case", "clip_case", "embedding_case", "ToyCharModel",
           "generate_case"]


# --------------------------------------------------------------------------- helpers

def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _weights(rng, G: int, D: int, H: int, scale: float = 0.8):
    """Random W_ih (G*H, D), W_hh (G*H, H), b_ih, b_hh (G*H,): gates far from saturation, biases non-zero."""
    return (scale * rng.standard_normal((G * H, D)), scale * rng.standard_normal((G * H, H)),
            0.5 * rng.standard_normal(G * H), 0.5 * rng.standard_normal(G * H))


def _is_shape_error(err) -> bool:
    """An error NumPy raises for a matrix product of shapes that do not fit."""
    text = str(err)
    return isinstance(err, ValueError) and ("matmul" in text or "not aligned" in text or "broadcast" in text)


def _name_wrong(names, got, expected, what: str) -> None:
    """'h is right; c is wrong: max error ...' for the first output that differs."""
    right = [n for n, g, e in zip(names, got, expected) if _close(g, e)]
    for name, g, e in zip(names, got, expected):
        if name in right:
            continue
        listed = right[0] if len(right) == 1 else f"{', '.join(right[:-1])} and {right[-1]}"
        prefix = f"{listed} {'is' if len(right) == 1 else 'are'} right; " if right else ""
        try:
            expect_close(g, e, f"{name} ({what})")
        except CheckFailed as fail:
            raise CheckFailed(prefix + str(fail), mistake=fail.mistake) from None


# --------------------------------------------------------------------------- 1. the LSTM cell

def _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh          # (N, 4H)
    return np.split(a, 4, axis=1)                             # four (N, H) blocks, in the stored order


def lstm_order_ifog(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_o, a_g = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)   # CS231n's order
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_order_igfo(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_g, a_f, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)   # TensorFlow 1's BasicLSTMCell
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_sigmoid_g(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * _sigmoid(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_cell_not_carried(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    c = _sigmoid(a_i) * np.tanh(a_g)                          # c_prev never enters
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_forget_on_h(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    c = _sigmoid(a_f) * h_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_h_without_tanh(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * c, c


def lstm_h_from_c_prev(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c_prev), c


def lstm_b_hh_forgotten(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, np.zeros_like(b_hh))
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_weights_not_transposed(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a = x_t @ W_ih + b_ih + h_prev @ W_hh + b_hh               # (N, D) @ (4H, D): a shape error
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


LSTM_MISTAKES = (
    Mistake("gate order i, f, o, g", lstm_order_ifog,
            "the four blocks of W_ih's rows are read in the order i, f, o, g (CS231n's layout): PyTorch stacks "
            "them as i, f, g, o — rows [0:H] input gate, [H:2H] forget gate, [2H:3H] the cell candidate g, "
            "[3H:4H] output gate"),
    Mistake("gate order i, g, f, o", lstm_order_igfo,
            "the blocks are read as i, g, f, o (TensorFlow 1's BasicLSTMCell): PyTorch's order is i, f, g, o, "
            "so the forget gate is the SECOND block of H rows and the cell candidate the third"),
    Mistake("sigmoid on g", lstm_sigmoid_g,
            "the cell candidate g gets a sigmoid: g is the new content to write and takes tanh (values in "
            "(-1, 1), so it can lower the memory too); only the three gates i, f, o take the sigmoid"),
    Mistake("cell state not carried", lstm_cell_not_carried,
            "the new cell state forgets the old one entirely (c = i * g): the LSTM's memory is "
            "c = f * c_prev + i * g — the forget gate decides how much of c_prev is kept"),
    Mistake("forget gate on h_prev", lstm_forget_on_h,
            "the forget gate multiplies h_prev: it scales the old CELL state, c = f * c_prev + i * g (h_prev "
            "only enters through the matrix products of the gates)"),
    Mistake("h without tanh", lstm_h_without_tanh,
            "c is right; h is wrong: h = o * c without the tanh; the output squashes the cell state first, "
            "h = o * tanh(c)"),
    Mistake("h from c_prev", lstm_h_from_c_prev,
            "c is right; h is wrong: it is computed from the OLD cell state; h = o * tanh(c) uses the c you "
            "just computed"),
    Mistake("b_hh forgotten", lstm_b_hh_forgotten,
            "the hidden-side bias b_hh is missing: PyTorch's cells have two bias vectors and add both, "
            "x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh"),
    Mistake("weights not transposed", lstm_weights_not_transposed,
            "a matrix product fails on the shapes: PyTorch stores W_ih as (4H, D) and W_hh as (4H, H), one "
            "ROW per gate unit, so the products are x_t @ W_ih.T and h_prev @ W_hh.T, each (N, 4H)"),
)

LSTM_CASES = [(1, 2, 3), (2, 3, 4), (3, 5, 2), (4, 6, 7)]     # (N, D, H), small to large; D never 4H


def lstm_case(case: int):
    """The inputs of case ``case`` (1 to 4, small to large) of the lstm_cell_forward check:
    ``x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh`` (import it to reproduce a failing case)."""
    N, D, H = LSTM_CASES[case - 1]
    rng = np.random.default_rng(610 + case)
    x_t, h_prev, c_prev = rng.standard_normal((N, D)), rng.standard_normal((N, H)), 1.5 * rng.standard_normal((N, H))
    return (x_t, h_prev, c_prev) + _weights(rng, 4, D, H)


def _translate_shape_error(fail: CheckFailed, table, row_name: str, run, suffix: str) -> None:
    """Name the mistake behind a shape error raised inside the learner's code (weights not transposed)."""
    err = getattr(fail, "error", None)
    if err is None:
        return
    raises_like(table, err, run, suffix)
    if _is_shape_error(err):
        fail_with(table, row_name, f"({type(err).__name__}: {err}) {suffix}")


@check.exercise(points=3, mistakes=LSTM_MISTAKES, reference=ref.lstm_cell_step,
                forbid=(ref.lstm_cell_forward, ref.lstm_forward, ref._lstm_bptt), hints=[
    "One matrix product per side gives all four gates' pre-activations at once, an (N, 4H) array; cut it into "
    "four blocks of H columns in PyTorch's order i, f, g, o. The gates i, f, o take a sigmoid, the cell "
    "candidate g a tanh. Then the new memory forgets some of the old and writes some new, and h shows some of it.",
    "a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh has shape (N, 4H); block k is a[:, k*H:(k+1)*H]. "
    "c = f * c_prev + i * g; h = o * tanh(c). Write your own sigmoid, 1 / (1 + exp(-a)).",
    "H = h_prev.shape[1]; i = sigmoid(a[:, :H]); f = sigmoid(a[:, H:2*H]); g = np.tanh(a[:, 2*H:3*H]); "
    "o = sigmoid(a[:, 3*H:]); then the two lines for c and h, and return the pair (h, c).",
])
def lstm_cell_forward(fn):
    """One LSTM step, nn.LSTMCell's: (h, c)."""
    for case in range(1, len(LSTM_CASES) + 1):
        args = lstm_case(case)
        N, D, H = LSTM_CASES[case - 1]
        what = f"N = {N}, D = {D}, H = {H}"
        line = (f"from dlcourse.rnn.checks import lstm_case; args = lstm_case({case}); "
                "lstm_cell_forward(*args)")
        with trying("lstm_cell_forward", label=what, call_text=line) as tried:
            expected = ref.lstm_cell_step(*args)
            try:
                out = call(fn, *args)
            except CheckFailed as fail:
                _translate_shape_error(fail, LSTM_MISTAKES, "weights not transposed", lambda row: row(*args),
                                       f"({what})")
                raise
            got = expect_tuple(out, 2, "(h, c)", "lstm_cell_forward", noun="arrays")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, LSTM_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(*args))
            _name_wrong(("h", "c"), got, expected, what)
    return f"h and c equal nn.LSTMCell's on {len(LSTM_CASES)} cases (gates i, f, g, o; both biases; c_prev carried)"


# --------------------------------------------------------------------------- 2. the GRU cell

def _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    gi = np.split(x_t @ W_ih.T + b_ih, 3, axis=1)             # input side: r, z, n blocks
    gh = np.split(h_prev @ W_hh.T + b_hh, 3, axis=1)          # hidden side (b_hn included)
    return gi, gh


def gru_z_swapped(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return z * n + (1 - z) * h_prev                           # the roles of z and 1 - z exchanged


def gru_reset_after_bias(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    (i_r, i_z, i_n), (h_r, h_z, _) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * (h_prev @ W_hh[2 * H:].T) + b_hh[2 * H:])   # b_hn outside the reset
    return (1 - z) * n + z * h_prev


def gru_reset_before_matmul(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    (i_r, i_z, i_n), (h_r, h_z, _) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + (r * h_prev) @ W_hh[2 * H:].T + b_hh[2 * H:])   # Cho et al. (2014)
    return (1 - z) * n + z * h_prev


def gru_order_zrn(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_z, i_r, i_n), (h_z, h_r, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h_prev


def gru_tanh_on_z(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), np.tanh(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h_prev


def gru_b_hh_forgotten(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, np.zeros_like(b_hh))
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h_prev


def gru_reset_on_input_side(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    n = np.tanh(r * i_n + h_n)                                 # r gates the input instead of the history
    return (1 - z) * n + z * h_prev


def gru_weights_not_transposed(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    i_r, i_z, i_n = np.split(x_t @ W_ih + b_ih, 3, axis=1)    # (N, D) @ (3H, D): a shape error
    h_r, h_z, h_n = np.split(h_prev @ W_hh + b_hh, 3, axis=1)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    return (1 - z) * np.tanh(i_n + r * h_n) + z * h_prev


GRU_MISTAKES = (
    Mistake("z and 1 - z swapped", gru_z_swapped,
            "z and 1 - z are exchanged: in PyTorch's GRU the update gate z is the share of the OLD state that "
            "is kept, h = (1 - z) * n + z * h_prev (some texts write it the other way round)"),
    Mistake("reset applied after b_hn", gru_reset_after_bias,
            "the reset gate multiplies W_hn h_prev but not its bias: PyTorch resets the whole hidden side of "
            "the n gate, n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))"),
    Mistake("reset before the matmul (Cho et al.)", gru_reset_before_matmul,
            "the reset gate multiplies h_prev BEFORE the matrix product, W_hn (r * h_prev): that is the "
            "original GRU of Cho et al. (2014); PyTorch (like cuDNN) resets AFTER it, "
            "n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))"),
    Mistake("gate order z, r, n", gru_order_zrn,
            "the first two blocks are read as z, r: PyTorch stacks the GRU's rows as r, z, n — [0:H] reset, "
            "[H:2H] update, [2H:3H] new"),
    Mistake("tanh on z", gru_tanh_on_z,
            "the update gate z gets a tanh: z is a gate, a share between 0 and 1, so it takes the sigmoid; "
            "only the candidate n takes tanh"),
    Mistake("b_hh forgotten", gru_b_hh_forgotten,
            "the hidden-side bias b_hh is missing: PyTorch's GRU adds both biases (and b_hn sits inside the "
            "reset: r * (W_hn h_prev + b_hn))"),
    Mistake("reset on the input side", gru_reset_on_input_side,
            "the reset gate multiplies the INPUT part of n: it decides how much of the history enters the "
            "candidate, n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))"),
    Mistake("weights not transposed", gru_weights_not_transposed,
            "a matrix product fails on the shapes: PyTorch stores W_ih as (3H, D) and W_hh as (3H, H), one "
            "ROW per gate unit, so the products are x_t @ W_ih.T and h_prev @ W_hh.T, each (N, 3H)"),
)

GRU_CASES = [(1, 2, 3), (2, 4, 5), (3, 5, 2), (4, 7, 6)]     # (N, D, H), small to large; D never 3H


def gru_case(case: int):
    """The inputs of case ``case`` (1 to 4, small to large) of the gru_cell_forward check:
    ``x_t, h_prev, W_ih, W_hh, b_ih, b_hh`` (import it to reproduce a failing case)."""
    N, D, H = GRU_CASES[case - 1]
    rng = np.random.default_rng(620 + case)
    return (rng.standard_normal((N, D)), rng.standard_normal((N, H))) + _weights(rng, 3, D, H)


@check.exercise(points=2, mistakes=GRU_MISTAKES, reference=ref.gru_cell_step,
                forbid=(ref.gru_cell_forward, ref.gru_forward, ref._gru_bptt), hints=[
    "Like the LSTM, one product per side gives every gate's pre-activation; but keep the two sides APART: "
    "the reset gate r scales only the hidden side of the candidate n. The update gate z then mixes the "
    "candidate with the old state.",
    "gi = x_t @ W_ih.T + b_ih and gh = h_prev @ W_hh.T + b_hh, both (N, 3H), blocks r, z, n in this order. "
    "r and z are sigmoids of the sum of their two blocks; n = tanh(gi_n + r * gh_n); "
    "h = (1 - z) * n + z * h_prev.",
    "H = h_prev.shape[1]; r = sigmoid(gi[:, :H] + gh[:, :H]); z = sigmoid(gi[:, H:2*H] + gh[:, H:2*H]); "
    "n = np.tanh(gi[:, 2*H:] + r * gh[:, 2*H:]); then the mix of n and h_prev with z.",
])
def gru_cell_forward(fn):
    """One GRU step, nn.GRUCell's: h."""
    for case in range(1, len(GRU_CASES) + 1):
        args = gru_case(case)
        N, D, H = GRU_CASES[case - 1]
        what = f"N = {N}, D = {D}, H = {H}"
        line = f"from dlcourse.rnn.checks import gru_case; args = gru_case({case}); gru_cell_forward(*args)"
        with trying("gru_cell_forward", label=what, call_text=line) as tried:
            expected = ref.gru_cell_step(*args)
            try:
                got = call(fn, *args)
            except CheckFailed as fail:
                _translate_shape_error(fail, GRU_MISTAKES, "weights not transposed", lambda row: row(*args),
                                       f"({what})")
                raise
            if isinstance(got, tuple) and len(got) == 2 and _close(got[0], expected):
                raise CheckFailed("gru_cell_forward returned a pair: a GRU has no cell state, return h alone "
                                  "(N, H)")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, GRU_MISTAKES, suffix=f"({what})", apply=lambda row: row(*args))
            expect_close(got, expected, f"h ({what})")
    return f"h equals nn.GRUCell's on {len(GRU_CASES)} cases (gates r, z, n; the reset after W_hn h + b_hn)"


# --------------------------------------------------------------------------- 3. backpropagation through time

def _bptt_zeros(x, hs, W_ih, W_hh):
    return (np.zeros(x.shape), np.zeros(W_ih.shape), np.zeros(W_hh.shape), np.zeros(W_hh.shape[0]),
            np.zeros(hs.shape[1:]))


def bptt_next_step_forgotten(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t]                                          # what step t+1 sent back is dropped
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_weights_overwritten(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih = da.T @ x[t]                                   # = keeps only the last step visited
        dW_hh = da.T @ hs[t]
        db = da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_tanh_of_previous_state(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t] ** 2)                            # the state step t READ, not the one it made
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_tanh_applied_again(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - np.tanh(hs[t + 1]) ** 2)               # tanh of h, which is already tanh(a)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_dW_hh_with_h_t(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t + 1]                             # the state step t made, not the one it read
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_dW_hh_transposed(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += hs[t].T @ da                                 # (H, H) too, but transposed
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_carried_through_W_hh_T(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh.T                                 # the forward product was h @ W_hh.T
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_dx_through_W_ih_T(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih.T                                   # (N, H) @ (D, H): a shape error
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_loop_forwards(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in range(len(x)):                                   # from the first step to the last
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


def bptt_dh0_one_step_short(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(axis=0)
        dh_next = da @ W_hh
    return dx, dh, dW_ih, dW_hh, db                           # the gradient of h_1, not of h_0


def bptt_dh0_zero(dout, x, hs, W_ih, W_hh):
    dx, _, dW_ih, dW_hh, db = bptt_dh0_one_step_short(dout, x, hs, W_ih, W_hh)
    return dx, np.zeros(hs.shape[1:]), dW_ih, dW_hh, db


def bptt_db_not_summed(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    db = np.zeros(hs.shape[1:])
    for t in reversed(range(len(x))):
        dh = dout[t] + dh_next
        da = dh * (1 - hs[t + 1] ** 2)
        dx[t] = da @ W_ih
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da                                              # (N, H): one row per example
        dh_next = da @ W_hh
    return dx, dh_next, dW_ih, dW_hh, db


BPTT_MISTAKES = (
    Mistake("next step's gradient forgotten", bptt_next_step_forgotten,
            "right for T = 1, wrong from T = 2: the gradient from the next step is not carried; the loss reaches "
            "h_t directly (dout[t]) AND through every later step, so going back from t = T-1 to 0, "
            "dh = dout[t] + dh_next, where dh_next = da @ W_hh comes from step t+1"),
    Mistake("weight gradients overwritten", bptt_weights_overwritten,
            "dx and dh0 are right; dW_ih, dW_hh and db hold only ONE step's contribution (= in the loop "
            "overwrites): the weights are shared by all T steps, so their gradients are the SUM over the steps, "
            "dW_ih += ..., dW_hh += ..., db += ..., starting from zeros"),
    Mistake("tanh derivative from h_{t-1}", bptt_tanh_of_previous_state,
            "tanh's derivative is taken at the wrong state: step t computed hs[t+1] = tanh(a_t), so "
            "da = dh * (1 - hs[t+1]**2); hs[t] is the state it READ"),
    Mistake("tanh applied again", bptt_tanh_applied_again,
            "the derivative is 1 - tanh(h)**2, but h is already tanh(a): the derivative of tanh at a is "
            "1 - h**2, with h = hs[t+1] itself"),
    Mistake("dW_hh from h_t", bptt_dW_hh_with_h_t,
            "dx, dh0, dW_ih and db are right; dW_hh is wrong: it multiplies da by the state step t MADE "
            "(hs[t+1]); W_hh multiplied the state step t read, so dW_hh += da.T @ hs[t]"),
    Mistake("dW_hh transposed", bptt_dW_hh_transposed,
            "dx, dh0, dW_ih and db are right; dW_hh is transposed (hs[t].T @ da): W_hh is (H_out, H_in) as "
            "PyTorch stores it, so dW_hh += da.T @ hs[t] — the same layout as dW_ih = da.T @ x[t]"),
    Mistake("carried through W_hh.T", bptt_carried_through_W_hh_T,
            "the gradient sent back to h_{t-1} goes through W_hh.T: the forward was a = ... + h_prev @ W_hh.T, "
            "so its gradient with respect to h_prev is da @ W_hh (no .T)"),
    Mistake("dx through W_ih.T", bptt_dx_through_W_ih_T,
            "dx fails on the shapes: the forward was x_t @ W_ih.T with W_ih of shape (H, D), so "
            "dx[t] = da @ W_ih, (N, H) @ (H, D) = (N, D)"),
    Mistake("loop forwards", bptt_loop_forwards,
            "right for T = 1, wrong from T = 2: the loop runs forwards in time; the gradient flows from the "
            "LAST step back to the first, so loop t = T-1, T-2, ..., 0 (reversed(range(T))): step t needs what "
            "step t+1 sends back"),
    Mistake("dh0 one step short", bptt_dh0_one_step_short,
            "dh0 is the gradient of h_1 (dh at step 0, before the step): h_0 = hs[0] is what step 0 READ, so "
            "send step 0's da back once more, dh0 = da @ W_hh"),
    Mistake("dh0 zero", bptt_dh0_zero,
            "dh0 is zero: the initial state h_0 receives gradient too (it matters when the state is carried "
            "from one window to the next); it is what the loop sends back from step 0, da @ W_hh"),
    Mistake("db not summed over the batch", bptt_db_not_summed,
            "db has one row per example, (N, H): the bias is shared by every example and every step, so sum "
            "da over the batch too, db += da.sum(axis=0), giving (H,)"),
)

BPTT_SEQUENCES = {1: (5, 2, 3, 4), 2: (6, 3, 5, 7)}          # sequence -> (T, N, D, H); N, D, H all differ
BPTT_CASES = [(1, 1), (1, 2), (1, 3), (1, 5), (2, 6)]        # (sequence, T): its first T steps, small to large


def bptt_case(case: int):
    """The inputs of case ``case`` (1 to 5, small to large) of the rnn_backward check:
    ``dout, x, hs, W_ih, W_hh`` (import it to reproduce a failing case).  Cases 1 to 4 are the
    first T = 1, 2, 3, 5 steps of one sequence, so a mistake that first shows at T = 2 is one of
    carrying the gradient from a step to the one before it."""
    sequence, T = BPTT_CASES[case - 1]
    T_all, N, D, H = BPTT_SEQUENCES[sequence]
    rng = np.random.default_rng(630 + sequence)
    x = rng.standard_normal((T_all, N, D))
    W_ih, W_hh, b_ih, b_hh = _weights(rng, 1, D, H, scale=0.6)
    params = dict(zip(ref.KEYS, (W_ih, W_hh, b_ih, b_hh)))
    _, _, cache = ref.rnn_forward(x, params, h0=0.8 * rng.standard_normal((N, H)))
    dout = rng.standard_normal((T_all, N, H))
    return dout[:T].copy(), x[:T].copy(), cache.hs[:T + 1].copy(), W_ih, W_hh


BPTT_NAMES = ("dx", "dh0", "dW_ih", "dW_hh", "db")


def _bptt_where(got, expected, T: int, last_right: int | None) -> None:
    """Say where along the time axis the learner's gradients go wrong (no table row matched)."""
    dx, dx_right = np.asarray(got[0], dtype=float), expected[0]
    if dx.shape == dx_right.shape:
        wrong = [t for t in range(T) if not _close(dx[t], dx_right[t])]
        if wrong and wrong[-1] == T - 1:
            raise CheckFailed(f"dx is already wrong at the last step t = {T - 1}, where only dout[{T - 1}] "
                              "arrives: check one step on its own, da = dh * (1 - hs[t+1]**2) and "
                              "dx[t] = da @ W_ih", mistake="stage: one step")
        if wrong:
            t = wrong[-1]
            seen = f"right up to T = {last_right}, wrong from T = {T}: " if last_right else ""
            raise CheckFailed(f"{seen}dx is right for the steps t = {t + 1}..{T - 1} and wrong from step t = {t} "
                              f"back: what step {t + 1} sends back to the state it read (dh_next = da @ W_hh, "
                              f"added to dout[{t}]) is not right", mistake="stage: carried gradient")
    _name_wrong(BPTT_NAMES, got, expected, f"T = {T}")


@check.exercise(points=4, mistakes=BPTT_MISTAKES, reference=ref.rnn_bptt,
                forbid=(ref.rnn_backward, ref._rnn_bptt, ref._weight_grads, ref.hidden_gradient_norms), hints=[
    "Go back in time, from the last step to the first. The gradient reaching h_t is the loss's own, dout[t], "
    "plus what step t+1 sends back; from it, one step's backward pass (the lesson's rnn_cell_backward) gives "
    "step t's share of every gradient. The weights are shared by all steps, so their gradients add up.",
    "Start dW_ih, dW_hh, db and dh_next at zero. For t = T-1 down to 0: dh = dout[t] + dh_next; "
    "da = dh * (1 - hs[t+1]**2) (tanh' from the state step t made); dx[t] = da @ W_ih; add da.T @ x[t] to "
    "dW_ih, da.T @ hs[t] to dW_hh (the state step t read) and da summed over the batch to db; "
    "dh_next = da @ W_hh. After the loop, dh0 is the last dh_next.",
    "for t in reversed(range(T)): dh = dout[t] + dh_next; da = dh * (1 - hs[t + 1] ** 2); then the four "
    "lines that fill dx[t] and add to dW_ih, dW_hh, db; then dh_next = da @ W_hh. "
    "return dx, dh_next, dW_ih, dW_hh, db.",
])
def rnn_backward(fn):
    """BPTT for the vanilla tanh RNN: (dx, dh0, dW_ih, dW_hh, db)."""
    last_right = None
    for case in range(1, len(BPTT_CASES) + 1):
        args = bptt_case(case)
        dout, x, hs, W_ih, W_hh = args
        T, N, D = x.shape
        what = f"T = {T}, N = {N}, D = {D}, H = {W_hh.shape[0]}"
        line = (f"from dlcourse.rnn.checks import bptt_case; dout, x, hs, W_ih, W_hh = bptt_case({case}); "
                "rnn_backward(dout, x, hs, W_ih, W_hh)")
        with trying("rnn_backward", label=what, call_text=line) as tried:
            expected = ref.rnn_bptt(*args)
            try:
                out = call(fn, *args)
            except CheckFailed as fail:
                raises_like(BPTT_MISTAKES, getattr(fail, "error", None), lambda row: row(*args), f"({what})")
                raise
            got = expect_tuple(out, 5, "(dx, dh0, dW_ih, dW_hh, db)", "rnn_backward", noun="arrays")
            tried.got, tried.expected = got, expected
            diagnose(got, expected, BPTT_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(*args))
            if not same_items(got, expected):
                _bptt_where(got, expected, T, last_right if BPTT_CASES[case - 1][0] == 1 else None)
            if BPTT_CASES[case - 1][0] == 1:
                last_right = T
    return ("dx, dh0, dW_ih, dW_hh and db equal nn.RNN's autograd for T = 1, 2, 3, 5 and 6 steps "
            "(the gradient carried back through every step, the weights' gradients summed)")


# --------------------------------------------------------------------------- concept questions

check.question(
    "q_lstm_parameters", answer=25088, rtol=0,
    explanation="each of the 4 gates has an (H, D) input matrix, an (H, H) hidden matrix and TWO bias vectors "
                "of H (b_ih and b_hh, as PyTorch stores them): 4·64·(32 + 64) + 8·64 = 24,576 + 512 = 25,088. "
                "(One bias vector per gate would do the same job; PyTorch keeps two for cuDNN's layout.)",
    mistakes=[
        Mistake("one bias vector", 24832, "PyTorch's LSTM has TWO bias vectors per gate, b_ih and b_hh: "
                                          "8·H biases, not 4·H"),
        Mistake("no biases", 24576, "that counts the weights only: add the biases, b_ih and b_hh, 4·H each"),
        Mistake("three gates", 18816, "that is a GRU's count (3 blocks): the LSTM has 4 blocks, i, f, g, o"),
        Mistake("one gate", 6272, "that is a vanilla RNN's count: an LSTM has 4 blocks of weights "
                                  "(i, f, g, o), each as large as an RNN's"),
        Mistake("hidden weights forgotten", 8704, "each gate also reads h_prev: an (H, H) matrix per gate, "
                                                  "4·H·H more weights"),
    ])

check.question(
    "q_uniform_nats", answer=float(np.log(100)), rtol=1e-3,
    explanation="a uniform guess gives every character probability 1/100, so the loss is -ln(1/100) = ln 100 "
                "≈ 4.605 nats per character; a model is only learning when it beats this (and the unigram "
                "baseline, which knows the characters' frequencies, is lower still).",
    mistakes=[
        Mistake("bits", float(np.log2(100)), "6.64 is log2(100): bits per character; the course's losses "
                                             "(F.cross_entropy) use the natural log, nats"),
        Mistake("probability", 0.01, "0.01 is the probability of each character; the loss is -ln of it"),
        Mistake("log10", 2.0, "2 is log10(100): cross-entropy uses the natural log"),
        Mistake("V", 100, "100 is the number of characters (the perplexity of a uniform guess); the loss is "
                          "its natural log"),
    ])

check.question(
    "q_vanishing_factor", answer=0.5 ** 20, rtol=1e-3,
    explanation="20 steps back, the gradient has been multiplied by 0.5 twenty times: 0.5**20 ≈ 9.5e-7, a "
                "millionth. That is why a vanilla RNN cannot learn from what happened 20 steps earlier; the "
                "LSTM's cell state, multiplied only by the forget gate (near 1), keeps it alive.",
    mistakes=[
        Mistake("multiplied by the step count", 10.0, "0.5 · 20 = 10: the factors multiply, one per step: "
                                                      "0.5 ** 20"),
        Mistake("divided by the step count", 0.025, "0.5 / 20: the gradient is multiplied by 0.5 at EACH of "
                                                    "the 20 steps: 0.5 ** 20"),
        Mistake("one step short", 0.5 ** 19, "that is 19 factors: 20 steps multiply by 0.5 twenty times"),
        Mistake("halved once", 0.5, "0.5 is one step; over 20 steps the factors multiply"),
    ])

check.question(
    "q_lstm_keep_gate", answer="f", choices=("i", "f", "g", "o"),
    explanation="c = f * c_prev + i * g: the forget gate f scales the old cell state, entry by entry, so it "
                "decides what is kept (f near 1: remember, near 0: forget). Along this path the gradient is "
                "multiplied by f only, which is how an LSTM carries gradients over many steps.",
    mistakes=[
        Mistake("input gate", "i", "the input gate i decides how much of the NEW content g is written, "
                                   "not what of the old is kept"),
        Mistake("output gate", "o", "the output gate o decides how much of the cell state is SHOWN in h; the "
                                    "cell state itself is carried on regardless"),
        Mistake("candidate", "g", "g is the candidate content (a tanh), not a gate"),
    ])
