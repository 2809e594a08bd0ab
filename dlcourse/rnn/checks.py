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
                              expect_float64, expect_tuple, fail_with, is_shape_error, name_first_wrong,
                              raises_like, same_items, trying)
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








# --------------------------------------------------------------------------- 1. the LSTM cell

def _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh          # (N, 4H)
    return np.split(a, 4, axis=1)                             # four (N, H) blocks, in the stored order


def lstm_order_ifog(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_o, a_g = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)   # CS231n's order
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_order_figo(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_f, a_i, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)   # forget gate first
    c = _sigmoid(a_f) * c_prev + _sigmoid(a_i) * np.tanh(a_g)
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_i_g_activations_swapped(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    a_i, a_f, a_g, a_o = _lstm_gates(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    c = _sigmoid(a_f) * c_prev + np.tanh(a_i) * _sigmoid(a_g)             # tanh on i, sigmoid on g
    return _sigmoid(a_o) * np.tanh(c), c


def lstm_no_biases(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    return ref.lstm_cell_step(x_t, h_prev, c_prev, W_ih, W_hh, 0 * b_ih, 0 * b_hh)


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


def lstm_weights_reshaped(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    return ref.lstm_cell_step(x_t, h_prev, c_prev, W_ih.reshape(W_ih.shape[1], -1).T, W_hh.reshape(H, -1).T,
                              b_ih, b_hh)                                  # reshape is not a transpose


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
    Mistake("gate order f, i, g, o", lstm_order_figo,
            "the first two blocks are read as f, i: PyTorch stacks the LSTM's rows as i, f, g, o — [0:H] input "
            "gate, [H:2H] forget gate, [2H:3H] cell candidate g, [3H:4H] output gate"),
    Mistake("i and g activations swapped", lstm_i_g_activations_swapped,
            "the input gate gets a tanh and the candidate g a sigmoid: the three gates i, f, o take the sigmoid "
            "(a share between 0 and 1), only g takes tanh"),
    Mistake("no biases", lstm_no_biases,
            "both biases are missing: PyTorch's cells add b_ih and b_hh, "
            "x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh"),
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
    Mistake("weights reshaped, not transposed", lstm_weights_reshaped,
            "the weights are reshaped instead of transposed: W_ih.reshape(D, 4H) has the right shape but mixes "
            "the entries of different rows; the products are x_t @ W_ih.T and h_prev @ W_hh.T"),
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
    if is_shape_error(err):
        fail_with(table, row_name, f"({type(err).__name__}: {err}) {suffix}")


@check.exercise(points=3, mistakes=LSTM_MISTAKES, reference=ref.lstm_cell_step,
                forbid=(ref.lstm_cell_forward, ref.lstm_forward, ref._lstm_bptt), hints=[
    "One matrix product per side gives all four gates' pre-activations at once, an (N, 4H) array; cut it into "
    "four blocks of H columns in PyTorch's order i, f, g, o. The gates i, f, o take a sigmoid, the cell "
    "candidate g a tanh. Then the new memory forgets some of the old and writes some new, and h shows some of it.",
    "a = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh has shape (N, 4H); block k is a[:, k*H:(k+1)*H]. "
    "c = f * c_prev + i * g; h = o * tanh(c). The notebook defines sigmoid(a) = 1 / (1 + exp(-a)) for you.",
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
            expect_float64(("h", "c"), got, what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, LSTM_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(*args))
            name_first_wrong(("h", "c"), got, expected, what)
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


def _gru_blocks(order, x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    """The r, z, n blocks of both sides when the learner reads the stacked rows in ``order`` (e.g. "nrz")."""
    gi, gh = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    where = {name: k for k, name in enumerate(order)}
    return [gi[where[g]] for g in "rzn"], [gh[where[g]] for g in "rzn"]


def gru_order_nrz(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_blocks("nrz", x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    return (1 - z) * np.tanh(i_n + r * h_n) + z * h_prev


def gru_order_rnz(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_blocks("rnz", x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    return (1 - z) * np.tanh(i_n + r * h_n) + z * h_prev


def gru_no_reset(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    z = _sigmoid(i_z + h_z)
    return (1 - z) * np.tanh(i_n + h_n) + z * h_prev           # r computed (or not) but never applied


def gru_sigmoid_on_n(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_sides(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)
    r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
    return (1 - z) * _sigmoid(i_n + r * h_n) + z * h_prev


def gru_weights_reshaped(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    W_ih, W_hh = W_ih.reshape(W_ih.shape[1], -1).T, W_hh.reshape(H, -1).T     # reshape is not a transpose
    return ref.gru_cell_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)


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
    Mistake("gate order n, r, z", gru_order_nrz,
            "the blocks are read as n, r, z: PyTorch stacks the GRU's rows as r, z, n — [0:H] reset, "
            "[H:2H] update, [2H:3H] the candidate n"),
    Mistake("gate order r, n, z", gru_order_rnz,
            "the blocks are read as r, n, z: PyTorch stacks the GRU's rows as r, z, n — the update gate is the "
            "SECOND block of H rows, the candidate n the third"),
    Mistake("no reset gate", gru_no_reset,
            "the reset gate is never applied: it scales the hidden side of the candidate, "
            "n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))"),
    Mistake("sigmoid on n", gru_sigmoid_on_n,
            "the candidate n gets a sigmoid: n is new content and takes tanh (values in (-1, 1)); only the "
            "gates r and z take the sigmoid"),
    Mistake("weights reshaped, not transposed", gru_weights_reshaped,
            "the weights are reshaped instead of transposed: W_ih.reshape(D, 3H) has the right shape but mixes "
            "the entries of different rows; the products are x_t @ W_ih.T and h_prev @ W_hh.T"),
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
            expect_float64(("h",), (got,), what)
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


def bptt_only_last_dout(dout, x, hs, W_ih, W_hh):
    dx, dW_ih, dW_hh, db, dh_next = _bptt_zeros(x, hs, W_ih, W_hh)
    for t in reversed(range(len(x))):
        dh = dh_next + (dout[t] if t == len(x) - 1 else 0)    # only the last step's loss gradient
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
    Mistake("only dout[-1] added", bptt_only_last_dout,
            "right for T = 1, wrong from T = 2: only the last step's dout is added; the loss reads EVERY h_t, so "
            "dout[t] of every step must be added, not only the last one's: dh = dout[t] + dh_next at each t"),
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
    name_first_wrong(BPTT_NAMES, got, expected, f"T = {T}")


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
            expect_float64(BPTT_NAMES, got, what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, BPTT_MISTAKES, same=same_items, suffix=f"({what})",
                     apply=lambda row: row(*args))
            if not same_items(got, expected):
                _bptt_where(got, expected, T, last_right if BPTT_CASES[case - 1][0] == 1 else None)
            if BPTT_CASES[case - 1][0] == 1:
                last_right = T
    return ("dx, dh0, dW_ih, dW_hh and db equal nn.RNN's autograd for T = 1, 2, 3, 5 and 6 steps "
            "(the gradient carried back through every step, the weights' gradients summed)")


# --------------------------------------------------------------------------- 4. gradient clipping by global norm

def clip_per_tensor(grads, max_norm):
    clipped = [g * min(1.0, max_norm / (np.linalg.norm(g) + 1e-6)) for g in grads]   # one factor per array
    return clipped, float(np.sqrt(sum(np.sum(g * g) for g in grads)))


def clip_scales_up(grads, max_norm):
    total = float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    scale = max_norm / (total + 1e-6)                         # applied even when the norm is below the limit
    return [g * scale for g in grads], total


def clip_sum_of_norms(grads, max_norm):
    total = float(sum(np.linalg.norm(g) for g in grads))      # sum of the arrays' norms
    scale = min(1.0, max_norm / (total + 1e-6))
    return [g * scale for g in grads], total


def clip_norm_without_sqrt(grads, max_norm):
    total = float(sum(np.sum(g * g) for g in grads))          # the squared norm
    scale = min(1.0, max_norm / (total + 1e-6))
    return [g * scale for g in grads], total


def clip_returns_clipped_norm(grads, max_norm):
    total = float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    scale = min(1.0, max_norm / (total + 1e-6))
    return [g * scale for g in grads], total * scale          # the norm AFTER clipping


def clip_in_place(grads, max_norm):
    total = float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    scale = min(1.0, max_norm / (total + 1e-6))
    for g in grads:
        g *= scale                                            # torch's clip_grad_norm_ does this; ours may not
    return grads, total


def clip_max_abs(grads, max_norm):
    total = float(max(np.max(np.abs(g)) for g in grads))      # the largest entry: the inf-norm
    scale = min(1.0, max_norm / (total + 1e-6))
    return [g * scale for g in grads], total


CLIP_MISTAKES = (
    Mistake("changed in place", clip_in_place,
            "the gradients you were given were scaled in place (g *= scale): torch's clip_grad_norm_ does that "
            "to .grad, but this function's contract is to return NEW arrays and leave its input alone; "
            "write [g * scale for g in grads]"),
    Mistake("clipped per tensor", clip_per_tensor,
            "each array is clipped on its own, to its own norm: that changes the DIRECTION of the update; clip "
            "by the GLOBAL norm, one factor for all arrays, scale = max_norm / (total + 1e-6)"),
    Mistake("scaled up below the limit", clip_scales_up,
            "gradients whose norm is already below max_norm are scaled UP to it: clipping only ever shrinks; "
            "apply the factor only when it is below 1 (scale = min(1, max_norm / (total + 1e-6)))"),
    Mistake("sum of the norms", clip_sum_of_norms,
            "the total is the sum of the arrays' norms: the global norm is the norm of all entries together, "
            "sqrt(sum of every array's sum of squares) — the square root of the sum of the SQUARED norms"),
    Mistake("square root forgotten", clip_norm_without_sqrt,
            "the total is the sum of squares: take its square root, total = sqrt(sum of every array's "
            "(g**2).sum())"),
    Mistake("norm after clipping", clip_returns_clipped_norm,
            "the clipped arrays are right; the returned norm is the one AFTER clipping: return the total norm "
            "BEFORE clipping, as clip_grad_norm_ does (it is what you log to see whether gradients explode)"),
    Mistake("largest entry as the norm", clip_max_abs,
            "the total is the largest absolute entry (the inf-norm): the default is the L2 norm of all entries, "
            "sqrt of the sum of squares over every array"),
)

CLIP_CASES = [  # (shapes, gradient scales, max_norm), small to large
    ([(2,), (3,)], [1.0, 1.5], 1.0),                  # clipped, two arrays of similar size
    ([(3, 2), (2,)], [0.3, 0.2], 5.0),                # below the limit: unchanged
    ([(4, 3), (3,), (2, 2)], [2.0, 0.05, 0.5], 2.5),  # one dominates: per-array clipping differs the most
    ([(8, 5), (5,), (5, 5), (1,)], [1.0, 3.0, 0.2, 4.0], 3.0),
]


def clip_case(case: int):
    """The inputs of case ``case`` (1 to 4) of the clip_grad_norm check: ``grads, max_norm``."""
    shapes, scales, max_norm = CLIP_CASES[case - 1]
    rng = np.random.default_rng(640 + case)
    return [s * rng.standard_normal(shape) for shape, s in zip(shapes, scales)], max_norm


def _same_clip(a, b) -> bool:
    """Two (arrays, norm) answers agree (rtol 1e-5: torch's 1e-6 in the factor, or not, is not a mistake)."""
    try:
        (ga, na), (gb, nb) = a, b
        return (len(ga) == len(gb) and all(_close(x, y, rtol=1e-5) for x, y in zip(ga, gb))
                and _close(na, nb, rtol=1e-5))
    except (TypeError, ValueError):
        return False


@check.exercise(points=2, mistakes=CLIP_MISTAKES, reference=ref.clip_grad_norm, hints=[
    "Treat all the gradients as ONE long vector: its length (L2 norm) is the total. If it is above max_norm, "
    "shrink every array by the same factor so that the total becomes max_norm; otherwise leave them as they are.",
    "total = square root of the sum, over the arrays, of each array's sum of squares. "
    "scale = max_norm / (total + 1e-6), as torch computes it, used only when it is below 1. "
    "Return new arrays (multiply, do not *=) and the total from BEFORE clipping.",
    "total = float(np.sqrt(sum(np.sum(g ** 2) for g in grads))); scale = min(1.0, max_norm / (total + 1e-6)); "
    "then a list comprehension that scales every g, and return it with total.",
])
def clip_grad_norm(fn):
    """Clip a list of gradients by their global L2 norm: (clipped list, total norm before clipping)."""
    for case in range(1, len(CLIP_CASES) + 1):
        grads, max_norm = clip_case(case)
        what = f"shapes {[g.shape for g in grads]}, max_norm {max_norm:g}"
        line = (f"from dlcourse.rnn.checks import clip_case; grads, max_norm = clip_case({case}); "
                "clip_grad_norm(grads, max_norm)")
        with trying("clip_grad_norm", label=what, call_text=line) as tried:
            before = [g.copy() for g in grads]
            out = call(fn, grads, max_norm, allow_mutation=True)
            if any(not np.array_equal(g, b) for g, b in zip(grads, before)) or len(grads) != len(before):
                fail_with(CLIP_MISTAKES, "changed in place", f"({what})")
            if (isinstance(out, (list, tuple)) and len(out) == len(before)
                    and all(isinstance(o, np.ndarray) and o.shape == b.shape for o, b in zip(out, before))):
                raise CheckFailed(f"clip_grad_norm returned only the clipped gradients: return (clipped, total), "
                                  f"the list and the total norm before clipping ({what})", mistake="list only")
            clipped, total = expect_tuple(out, 2, "(clipped, total_norm)", "clip_grad_norm", noun="values")
            expected = ref.clip_grad_norm(before, max_norm)
            tried.got, tried.expected = (clipped, total), expected
            expect(isinstance(clipped, (list, tuple)) and len(clipped) == len(before),
                   f"the clipped gradients should be a list of {len(before)} arrays, one per gradient; got "
                   f"{type(clipped).__name__}" + (f" of length {len(clipped)}" if hasattr(clipped, '__len__') else ""))
            expect(np.ndim(total) == 0, f"total_norm should be one number, got {type(total).__name__}")
            expect_float64([f"clipped[{k}]" for k in range(len(clipped))] + ["total_norm"],
                           list(clipped) + [total], what)
            if clipped is grads or any(c is g for c in clipped for g in grads):
                raise CheckFailed(f"clip_grad_norm returned the arrays it was given (when there is nothing to clip): "
                                  f"return new arrays every time, e.g. [g * scale for g in grads] with scale = 1, "
                                  f"so that changing them (an optimizer step) cannot change the gradients passed in "
                                  f"({what})", mistake="inputs returned")
            diagnose((clipped, total), expected, CLIP_MISTAKES[1:], same=_same_clip, suffix=f"({what})",
                     apply=lambda row: row([b.copy() for b in before], max_norm))
            expect_close(float(total), expected[1], f"total_norm ({what})", rtol=1e-5)
            for k, (g, e) in enumerate(zip(clipped, expected[0])):
                expect_close(g, e, f"clipped[{k}] ({what})", rtol=1e-5)
    return ("equals torch.nn.utils.clip_grad_norm_ on 4 cases (one factor for all arrays, only when the norm "
            "is above max_norm) and leaves the gradients it was given unchanged")


# --------------------------------------------------------------------------- 5. the embedding's gradient

def embedding_fancy_index_add(dout, ids, V):
    dW = np.zeros((V, dout.shape[-1]))
    dW[ids.reshape(-1)] += dout.reshape(-1, dout.shape[-1])   # buffered: a repeated id counts once
    return dW


def embedding_transposed(dout, ids, V):
    dW = np.zeros((V, dout.shape[-1]))
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dW.T                                               # (E, V)


def embedding_averaged(dout, ids, V):
    dW = np.zeros((V, dout.shape[-1]))
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    counts = np.bincount(ids.reshape(-1), minlength=V)
    return dW / np.maximum(counts, 1)[:, None]                # the mean over the occurrences


def embedding_time_major_flatten(dout, ids, V):
    E = dout.shape[-1]
    dW = np.zeros((V, E))
    np.add.at(dW, ids.reshape(-1), dout.transpose(1, 0, 2).reshape(-1, E))   # dout flattened (T, N) order
    return dW


def embedding_last_sequence_only(dout, ids, V):
    E = dout.shape[-1]
    for n in range(len(ids)):
        dW = np.zeros((V, E))                                 # a fresh array every sequence
        np.add.at(dW, np.reshape(ids[n], -1), np.reshape(dout[n], (-1, E)))
    return dW


def embedding_rows_from_ids(dout, ids, V):
    E = dout.shape[-1]
    dW = np.zeros((ids.max() + 1, E))                         # as many rows as the largest id seen
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, E))
    return dW


EMBEDDING_MISTAKES = (
    Mistake("repeated ids lost", embedding_fancy_index_add,
            "ids that occur more than once get only ONE of their gradients: dW[ids] += dout is buffered, each "
            "row is written once; use np.add.at(dW, ids, dout), which adds once per occurrence (or a one-hot "
            "matrix product)"),
    Mistake("transposed", embedding_transposed,
            "dW is (E, V): the embedding table is (V, E), one row per token, and its gradient has its shape"),
    Mistake("averaged over occurrences", embedding_averaged,
            "each row is the MEAN of its id's gradients: the lookup adds W[v] to the computation at every "
            "occurrence of v, so its gradient is the SUM of them"),
    Mistake("flattened in another order", embedding_time_major_flatten,
            "dout and ids are flattened in different orders (one as (T, N), the other as (N, T)), so gradients "
            "land on the wrong tokens: flatten both the same way, ids.reshape(-1) with dout.reshape(-1, E)"),
    Mistake("last sequence only", embedding_last_sequence_only,
            "only the last sequence of the batch is in dW: the array is created afresh inside the loop over the "
            "batch; create it once, before the loop, and add every sequence's gradient to it (or do all at "
            "once with np.add.at on the flattened ids)"),
    Mistake("rows from the largest id", embedding_rows_from_ids,
            "dW has ids.max() + 1 rows: the table has V rows whatever ids this batch holds (rows of unseen "
            "tokens get zero gradient), np.zeros((V, E))"),
)

EMBEDDING_CASES = [((2, 3), 7, 4), ((3, 5), 10, 3), ((9,), 6, 2), ((4, 6), 12, 5)]   # (ids shape, V, E)


def embedding_case(case: int):
    """The inputs of case ``case`` (1 to 4) of the embedding_backward check: ``dout, ids, V``.
    The ids repeat and never reach V - 1."""
    shape, V, E = EMBEDDING_CASES[case - 1]
    rng = np.random.default_rng(650 + case)
    ids = rng.integers(0, V - 2, size=shape)
    ids.reshape(-1)[-1] = ids.reshape(-1)[0]                  # at least one repeat
    return rng.standard_normal(shape + (E,)), ids, V


@check.exercise(points=2, mistakes=EMBEDDING_MISTAKES, reference=ref.embedding_backward, hints=[
    "The forward pass looked up row ids[n, t] of the table for every position, out[n, t] = W[ids[n, t]]. "
    "So row v of the table's gradient collects dout[n, t] from EVERY position where v was looked up — "
    "and an id can occur many times.",
    "Start from zeros of shape (V, E). Flatten ids to (N·T,) and dout to (N·T, E) in the same order, then "
    "add each row of dout to the row of dW its id names — one addition per occurrence (np.add.at does "
    "that; dW[ids] += dout does not).",
    "dW = np.zeros((V, E)); np.add.at(dW, ids.reshape(-1), dout.reshape(-1, E)); return dW. "
    "(Or: a one-hot matrix of the ids, (N·T, V), transposed, times dout flattened.)",
])
def embedding_backward(fn):
    """The gradient of an embedding table: dW (V, E)."""
    for case in range(1, len(EMBEDDING_CASES) + 1):
        dout, ids, V = embedding_case(case)
        what = f"ids {ids.shape}, V = {V}, E = {dout.shape[-1]}"
        line = (f"from dlcourse.rnn.checks import embedding_case; dout, ids, V = embedding_case({case}); "
                "embedding_backward(dout, ids, V)")
        with trying("embedding_backward", label=what, call_text=line) as tried:
            expected = ref.embedding_backward(dout, ids, V)
            got = call(fn, dout, ids, V)
            expect_float64(("dW",), (got,), what)
            tried.got, tried.expected = got, expected
            diagnose(got, expected, EMBEDDING_MISTAKES, suffix=f"({what})", apply=lambda row: row(dout, ids, V))
            expect_close(got, expected, f"dW ({what})")
    return (f"equals nn.Embedding's weight gradient on {len(EMBEDDING_CASES)} cases (repeated ids add up, "
            "rows of unseen ids stay zero)")


# --------------------------------------------------------------------------- 6. the larger task: a generation loop

class ToyCharModel:
    """A tiny NumPy character model, one step at a time: ``model(token, state) -> (logits (V,), new state)``.

    ``state = tanh(E[token] + state @ W)``, ``logits = state @ W_out``; the state is an (H,) array.
    With ``fixed_logits`` every step returns those logits (the state still changes), so the
    tokens a sampler draws can be compared with one known distribution.  With ``peak`` every
    step's logits are ``peak`` on the most likely token and 0 elsewhere: any sampler then
    draws that token (all but surely), so the check sees which step's logits a token came from.  Every call is
    recorded in ``calls`` as (token, state given, state returned, logits returned), so the
    check can see what the learner fed in and in which order.
    """

    def __init__(self, V: int = 8, H: int = 5, seed: int = 0, fixed_logits=None, peak: float | None = None):
        rng = np.random.default_rng(seed)
        self.V, self.H = V, H
        self.E = rng.standard_normal((V, H))
        self.W = 0.6 * rng.standard_normal((H, H))
        self.W_out = 1.5 * rng.standard_normal((H, V))
        self.fixed_logits = None if fixed_logits is None else np.asarray(fixed_logits, dtype=float)
        self.peak = peak
        self.calls: list = []

    def __deepcopy__(self, memo):
        return self      # a function-like object: the check watches its calls, not its identity

    def initial_state(self, seed: int = 1) -> np.ndarray:
        return 0.5 * np.random.default_rng(seed).standard_normal(self.H)

    def __call__(self, token, state):
        if isinstance(token, (float, np.floating)) or not np.ndim(token) == 0:
            raise TypeError(f"the model takes one token, an int; got {token!r}")
        token = int(token)
        if not 0 <= token < self.V:
            raise IndexError(f"token {token} is outside the vocabulary 0..{self.V - 1}")
        state_in = np.array(state, dtype=float, copy=True)
        new_state = np.tanh(self.E[token] + state_in @ self.W)
        logits = new_state @ self.W_out if self.fixed_logits is None else self.fixed_logits.copy()
        if self.peak is not None:
            logits = self.peak * (np.arange(self.V) == int(np.argmax(logits)))
        self.calls.append((token, state_in, new_state.copy(), logits.copy()))
        return logits, new_state


def _softmax(z):
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max())
    return e / e.sum()


def _draw(probs, rng):
    return int(rng.choice(len(probs), p=probs))


def _top(logits, k):
    """logits with all but the k largest set to -inf."""
    keep = np.argsort(logits)[::-1][:k]
    masked = np.full_like(logits, -np.inf)
    masked[keep] = logits[keep]
    return masked


def _sample_right(logits, temperature, top_k, rng):
    z = np.asarray(logits, dtype=float) / temperature
    if top_k is not None:
        z = _top(z, top_k)
    return _draw(_softmax(z), rng)


def gen_prompt_returned(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    out = list(prompt_ids)                                    # starts with the prompt
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    for _ in range(length):
        token = _sample_right(logits, temperature, top_k, rng)
        out.append(token)
        logits, state = next_logits(token, state)
    return out


def gen_state_not_carried(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, _ = next_logits(token, state)                 # the new state is dropped
    out = []
    for _ in range(length):
        token = _sample_right(logits, temperature, top_k, rng)
        out.append(token)
        logits, _ = next_logits(token, state)
    return out


def gen_last_prompt_token_only(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    logits, state = next_logits(prompt_ids[-1], state)        # the rest of the prompt is never read
    out = []
    for _ in range(length):
        token = _sample_right(logits, temperature, top_k, rng)
        out.append(token)
        logits, state = next_logits(token, state)
    return out


def gen_last_prompt_token_twice(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    token, out = prompt_ids[-1], []
    for _ in range(length):
        logits, state = next_logits(token, state)             # the first pass feeds prompt_ids[-1] again
        token = _sample_right(logits, temperature, top_k, rng)
        out.append(token)
    return out


def gen_not_fed_back(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        out.append(_sample_right(logits, temperature, top_k, rng))
        logits, state = next_logits(prompt_ids[-1], state)    # the same input every step
    return out


def gen_top_k_plus_one(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = np.asarray(logits) / temperature
        if top_k is not None:
            kth = np.sort(z)[::-1][top_k]                     # the (k+1)-th largest...
            z = np.where(z >= kth, z, -np.inf)                # ... kept too
        out.append(_draw(_softmax(z), rng))
        logits, state = next_logits(out[-1], state)
    return out


def gen_top_k_smallest(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = np.asarray(logits) / temperature
        if top_k is not None:
            keep = np.argsort(z)[:top_k]                      # ascending order: the k SMALLEST
            z = np.where(np.isin(np.arange(len(z)), keep), z, -np.inf)
        out.append(_draw(_softmax(z), rng))
        logits, state = next_logits(out[-1], state)
    return out


def gen_argmax(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        out.append(int(np.argmax(logits)))                    # greedy: never samples
        logits, state = next_logits(out[-1], state)
    return out


def gen_temperature_after_softmax(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None,
                                  rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = np.asarray(logits, dtype=float)
        if top_k is not None:
            z = _top(z, top_k)
        p = _softmax(z) / temperature                         # divides the probabilities ...
        out.append(_draw(p / p.sum(), rng))                   # ... and renormalising undoes it
        logits, state = next_logits(out[-1], state)
    return out


def gen_temperature_multiplied(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None, rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = np.asarray(logits, dtype=float) * temperature     # T = 2 should flatten; this sharpens
        if top_k is not None:
            z = _top(z, top_k)
        out.append(_draw(_softmax(z), rng))
        logits, state = next_logits(out[-1], state)
    return out


def gen_logits_as_probabilities(next_logits, state, prompt_ids, length, temperature=1.0, top_k=None,
                                rng=None):
    for token in prompt_ids:
        logits, state = next_logits(token, state)
    out = []
    for _ in range(length):
        z = np.asarray(logits, dtype=float) / temperature
        if top_k is not None:
            z = np.where(np.isfinite(_top(z, top_k)), z, 0.0)
        out.append(int(rng.choice(len(z), p=z / z.sum())))   # no softmax: raises on negative logits
        logits, state = next_logits(out[-1], state)
    return out


GENERATE_MISTAKES = (
    Mistake("prompt returned too", gen_prompt_returned,
            "the list starts with the prompt: return only the `length` generated tokens (the caller has the "
            "prompt already)"),
    Mistake("state not carried", gen_state_not_carried,
            "every call gets the initial state: the model's memory is the state it returns; pass the state "
            "returned by each call into the next (logits, state = next_logits(token, state))"),
    Mistake("only the last prompt token", gen_last_prompt_token_only,
            "only the last token of the prompt is fed in: feed EVERY prompt token, in order, carrying the "
            "state, so that the model has read the whole prompt before it predicts"),
    Mistake("last prompt token fed twice", gen_last_prompt_token_twice,
            "the last prompt token is fed twice: after the loop over the prompt, its logits already predict "
            "the first new token; sample from them first, then feed the token you sampled"),
    Mistake("sampled token not fed back", gen_not_fed_back,
            "the model gets the same input at every step: feed back the token you just sampled, so that "
            "each prediction is conditioned on the text generated so far"),
    Mistake("top-k keeps k + 1", gen_top_k_plus_one,
            "one token too many can be drawn: top-k keeps exactly the k largest logits (e.g. the indices "
            "np.argsort(logits)[-k:]) and sets every other logit to -inf before the softmax"),
    Mistake("top-k keeps the smallest", gen_top_k_smallest,
            "the k SMALLEST logits are kept: np.argsort sorts in ascending order, so the k largest are its "
            "LAST k indices, np.argsort(logits)[-k:]"),
    Mistake("argmax instead of sampling", gen_argmax,
            "always the most likely token (argmax): that is greedy decoding, the same text every time; draw "
            "from the distribution softmax(logits / temperature), e.g. rng.choice(V, p=probs)"),
    Mistake("temperature after softmax", gen_temperature_after_softmax,
            "the temperature has no effect: dividing the PROBABILITIES by T and renormalising gives them back; "
            "divide the LOGITS by T before the softmax, softmax(logits / temperature)"),
    Mistake("temperature multiplied", gen_temperature_multiplied,
            "the logits are multiplied by the temperature: T above 1 must flatten the distribution and below 1 "
            "sharpen it, so divide, softmax(logits / temperature)"),
    Mistake("logits as probabilities", gen_logits_as_probabilities,
            "the logits are used as probabilities (logits / logits.sum()): logits are any real numbers, "
            "negative ones too; turn them into probabilities with a softmax, exp(z - z.max()) normalised"),
)

# The structure cases: a stateful model, (prompt, length, temperature, top_k, seed of the rng, peak): case 2's
# model puts (all but) all probability on one token per step, so the check sees which logits each token is from.
GENERATE_CASES = [([1, 4, 2], 6, 1.0, None, 1, None), ([4, 2, 7, 3], 8, 1.0, None, 3, 30.0),
                  ([3, 0, 5, 5, 6], 12, 0.8, 3, 2, None)]
PEAKED_MODEL_SEED = 669   # its most likely token changes from step to step (7, 5, 7, 4 | 3, 7, 3, 2, 0, 5, 0)
# The distribution cases: a model with fixed logits, (temperature, top_k, draws).
FIXED_LOGITS = [2.5, 1.6, 1.2, 0.7, 0.4, 0.1]
DRAW_CASES = [(0.5, None, 1500), (2.0, None, 1500), (1.0, 3, 1500), (2.0, 4, 1500)]
P_VALUE = 1e-6   # a right sampler fails a case with this probability: never, in practice


def generate_case(case: int):
    """The inputs of case ``case`` of the generate check (1 to 3: a model with a state, case 2's logits peaked
    on one token; 4 to 7: fixed logits, many draws): ``model, state, prompt_ids, length, temperature, top_k,
    rng``."""
    if case <= len(GENERATE_CASES):
        prompt, length, temperature, top_k, seed, peak = GENERATE_CASES[case - 1]
        model = ToyCharModel(seed=660 + case if peak is None else PEAKED_MODEL_SEED, peak=peak)
        return model, model.initial_state(), list(prompt), length, temperature, top_k, np.random.default_rng(seed)
    temperature, top_k, draws = DRAW_CASES[case - len(GENERATE_CASES) - 1]
    model = ToyCharModel(V=len(FIXED_LOGITS), seed=670 + case, fixed_logits=FIXED_LOGITS)
    return model, model.initial_state(), [0, 2], draws, temperature, top_k, np.random.default_rng(case)


def _generate_line(case: int) -> str:
    return (f"from dlcourse.rnn.checks import generate_case; model, state, prompt, length, temperature, top_k, "
            f"rng = generate_case({case}); generate(model, state, prompt, length, temperature, top_k, rng)")


def _tokens(out, length: int, prompt) -> list:
    """The learner's answer as a list of ints, or a message saying what is wrong with its form."""
    if out is None:
        raise CheckFailed("generate returned None: did you forget to `return` the list of tokens?")
    if isinstance(out, np.ndarray) and out.ndim == 1 and out.dtype.kind in "iu":
        out = out.tolist()
    if isinstance(out, str) or not isinstance(out, (list, tuple)):
        raise CheckFailed(f"generate returned a {type(out).__name__}; return a list of ints, the generated tokens")
    bad = [t for t in out if isinstance(t, bool) or not isinstance(t, (int, np.integer))]
    if bad:
        raise CheckFailed(f"generate's list holds {bad[0]!r} ({type(bad[0]).__name__}): the tokens are ints "
                          "(e.g. int(rng.choice(V, p=probs)))")
    out = [int(t) for t in out]
    if len(out) == len(prompt) + length and out[:len(prompt)] == list(prompt):
        fail_with(GENERATE_MISTAKES, "prompt returned too")
    if len(out) != length:
        raise CheckFailed(f"generate returned {len(out)} tokens; length = {length} asks for {length}")
    return out


def _check_feeding(model: ToyCharModel, state0, prompt, out, suffix: str) -> None:
    """The model was fed the prompt, then each sampled token, carrying the state from call to call."""
    calls = model.calls
    P, length = len(prompt), len(out)
    fed = [c[0] for c in calls]
    if not calls:
        raise CheckFailed("generate never called next_logits: the tokens must come from the model's logits")
    if not np.allclose(calls[0][1], state0):
        raise CheckFailed("the first call to next_logits did not get the state you were given: start from it")
    carried = [np.allclose(calls[j][1], calls[j - 1][2]) for j in range(1, len(calls))]
    if not all(carried):
        if all(np.allclose(c[1], state0) for c in calls):
            fail_with(GENERATE_MISTAKES, "state not carried", suffix)
        j = carried.index(False) + 1
        raise CheckFailed(f"call {j + 1} to next_logits did not get the state that call {j} returned: pass each "
                          f"returned state into the next call {suffix}")
    if fed in (list(prompt) + out[:-1], list(prompt) + out):
        return
    if fed[:P] != list(prompt):
        if P > 1 and fed[0] == prompt[-1] and fed[1:] in (out[:-1], out):
            fail_with(GENERATE_MISTAKES, "only the last prompt token", suffix)
        raise CheckFailed(f"the model was fed {fed[:P]} first; feed the prompt {list(prompt)} token by token, "
                          f"in order, before sampling {suffix}")
    rest = fed[P:]
    if rest and rest[0] == prompt[-1] and rest[1:] in (out[:-1], out, out[:-2]):
        fail_with(GENERATE_MISTAKES, "last prompt token fed twice", suffix)
    if rest and all(t == prompt[-1] for t in rest) and any(t != prompt[-1] for t in out):
        fail_with(GENERATE_MISTAKES, "sampled token not fed back", suffix)
    raise CheckFailed(f"after the prompt the model was fed {rest}, but the tokens you returned were {out}: feed "
                      f"each sampled token back, in order {suffix}")


def _check_which_logits(model: ToyCharModel, prompt, out, suffix: str) -> str | None:
    """With peaked logits, token k must be the peak of the logits returned by call P-1+k (after the token before).
    A known off-by-one fails here; anything else is returned as a message, raised only if the draws from fixed
    logits (which name a wrong distribution) pass."""
    P = len(prompt)
    peaks = [int(np.argmax(c[3])) for c in model.calls]
    want = peaks[P - 1:P - 1 + len(out)]
    if out == want:
        return None
    k = next(i for i, (a, b) in enumerate(zip(out, want)) if a != b)
    if k == 0 and P > 1 and out[0] == peaks[0] and out[1:] == want[1:]:
        raise CheckFailed(f"the first new token was drawn from the logits after the FIRST prompt token: the logits "
                          f"returned for the LAST prompt token (prompt[-1]) predict the first new token {suffix}",
                          mistake="first token from prompt[0]'s logits")
    if out == peaks[P - 2:P - 2 + len(out)]:
        raise CheckFailed(f"each token is drawn from the logits of the step BEFORE (one step stale): draw token k "
                          f"from the logits the model returned when it was fed the token just before it (for the "
                          f"first new token, prompt[-1]), then feed the new token {suffix}",
                          mistake="logits one step stale")
    return (f"new token {k} ({out[k]}) is not drawn from the logits the model returned for the token before it "
            f"(those logits put all but all the probability on token {want[k]}): sample each token from "
            f"softmax(latest logits / temperature) {suffix}")


def _check_top_k(model: ToyCharModel, prompt, out, top_k, suffix: str) -> str | None:
    """Every token was among the top k of the logits it was drawn from.  A few draws cannot tell which top-k
    mistake it is (k + 1 kept, the others set to 0, top-k ignored): the message is returned and raised only
    if the 1,500 draws from fixed logits, which name it, pass."""
    P = len(prompt)
    for k, token in enumerate(out):
        order = np.argsort(model.calls[P - 1 + k][3])[::-1]
        if token not in order[:top_k]:
            rank = int(np.flatnonzero(order == token)[0]) + 1
            return (f"token {k} ({token}) is not among the top_k = {top_k} largest logits of its step (its logit "
                    f"is number {rank} from the top): keep the k largest, set every other logit to -inf {suffix}")
    return None


def _p_value(counts, probs) -> float:
    """Chi-square goodness of fit of ``counts`` to ``probs`` (0 where a count falls outside the support)."""
    from scipy.stats import chisquare
    counts, probs = np.asarray(counts, dtype=float), np.asarray(probs, dtype=float)
    if np.any(counts[probs == 0] > 0):
        return 0.0
    support = probs > 0
    if support.sum() < 2:
        return 1.0
    expected = probs[support] * counts.sum()
    return float(chisquare(counts[support], expected).pvalue)


def _candidates(logits, temperature, top_k):
    """(row name, the distribution its mistake draws from) for the mistakes seen only in the frequencies."""
    z = np.asarray(logits, dtype=float)
    mask = (lambda v: _top(v, top_k)) if top_k is not None else (lambda v: v)
    positive = np.where(np.isfinite(mask(z)), z, 0.0)
    return [("temperature after softmax", _softmax(mask(z))),
            ("temperature multiplied", _softmax(mask(z * temperature))),
            ("logits as probabilities", positive / positive.sum())]


def _check_distribution(out, temperature, top_k, suffix: str, temperatures_right: bool = False) -> str:
    logits = np.asarray(FIXED_LOGITS)
    z = logits / temperature
    right = _softmax(_top(z, top_k) if top_k is not None else z)
    counts = np.bincount(out, minlength=len(logits))
    if len(set(out)) == 1 and out[0] == int(np.argmax(logits)):
        fail_with(GENERATE_MISTAKES, "argmax instead of sampling", suffix)
    if top_k is not None and counts[right == 0].any():
        order = np.argsort(logits)[::-1]
        drawn = set(np.flatnonzero(counts))
        zeroed = _softmax(np.where(np.isfinite(_top(z, top_k)), z, 0.0))
        if _p_value(counts, _softmax(z)) > P_VALUE:
            raise CheckFailed(f"top_k has no effect: the tokens follow softmax(logits / temperature) over ALL "
                              f"tokens; keep only the k largest logits (np.argsort(z)[-k:]) and set every other "
                              f"to -inf before the softmax {suffix}", mistake="top-k ignored")
        if _p_value(counts, zeroed) > P_VALUE:
            raise CheckFailed("tokens outside the top k are drawn: the logits of the others are set to 0, which "
                              "still leaves them a probability (exp(0) = 1); set every logit but the k largest to "
                              f"-inf before the softmax {suffix}", mistake="top-k others set to 0")
        if drawn <= set(order[:top_k + 1]):
            fail_with(GENERATE_MISTAKES, "top-k keeps k + 1", suffix)
        if drawn <= set(order[-top_k:]):
            fail_with(GENERATE_MISTAKES, "top-k keeps the smallest", suffix)
    p_right = _p_value(counts, right)
    if p_right > P_VALUE:
        return f"T = {temperature:g}{'' if top_k is None else f', top_k = {top_k}'}: chi-square p = {p_right:.2g}"
    for name, probs in _candidates(logits, temperature, top_k):
        if np.abs(probs - right).max() > 0.02 and _p_value(counts, probs) > P_VALUE:
            if name == "temperature after softmax" and top_k is not None and temperatures_right:
                raise CheckFailed("with top_k the temperature has no effect (without top_k it has): divide the "
                                  "logits by the temperature in the top-k branch too, then keep the k largest, "
                                  f"softmax(top_k(logits / temperature)) {suffix}", mistake="temperature ignored "
                                  "with top-k")
            fail_with(GENERATE_MISTAKES, name, suffix)
    shown = ", ".join(f"{c / counts.sum():.3f}" for c in counts)
    want = ", ".join(f"{p:.3f}" for p in right)
    raise CheckFailed(f"the tokens are not drawn from softmax(logits / temperature) {suffix}: token frequencies "
                      f"[{shown}] over {len(out)} draws, expected [{want}] (chi-square p = {p_right:.1g})",
                      mistake="wrong distribution")


def _peaked(case: int) -> bool:
    return case <= len(GENERATE_CASES) and GENERATE_CASES[case - 1][5] is not None


def _check_rng(fn, case: int, out, suffix: str) -> None:
    """The same rng state gives the same tokens, another seed other tokens: the draws come from ``rng``."""
    model, state, prompt, length, temperature, top_k, rng = generate_case(case)
    again = _tokens(call(fn, model, state, prompt, length, temperature, top_k, rng), length, prompt)
    model, state, prompt, length, temperature, top_k, _ = generate_case(case)
    other = _tokens(call(fn, model, state, prompt, length, temperature, top_k, np.random.default_rng(10_000 + case)),
                    length, prompt)
    if again != out or other == out:
        how = ("two calls with generators of the same seed gave different tokens" if again != out else
               "generators of different seeds gave the same tokens")
        raise CheckFailed(f"use the generator rng you are given: the same rng state must give the same tokens "
                          f"({how}; draw with rng.choice, rng.random, ..., not np.random or a generator of your "
                          f"own) {suffix}", mistake="rng not used")


def _forbidden_samplers() -> tuple:
    """The course's own samplers: ``sample_next`` and ``softmax``, and torch_impl's ``sample`` when it loads."""
    found = [ref.sample_next, ref.softmax]
    try:
        from dlcourse.rnn import torch_impl
        found += [getattr(torch_impl, name) for name in ("sample",) if callable(getattr(torch_impl, name, None))]
    except Exception:  # noqa: BLE001 - torch missing, or the module in the middle of a change
        pass
    return tuple(found)


@check.exercise(points=4, mistakes=GENERATE_MISTAKES, reference=ref.generate_tokens, seconds=30,
                target="generate", forbid=_forbidden_samplers(), hints=[
    "Two phases. First feed the prompt, token by token, carrying the state: the logits after its LAST token "
    "predict the first new token. Then repeat `length` times: turn the logits into probabilities (temperature, "
    "top-k, softmax), draw a token with rng, keep it, and feed it to the model to get the next logits and state.",
    "Probabilities: z = logits / temperature; for top-k set every entry but the k largest to -inf "
    "(np.argsort(z)[-k:] are the k largest); then p = exp(z - z.max()), normalised. Draw with "
    "rng.choice(V, p=p). The state returned by each call goes into the next call.",
    "for token in prompt_ids: logits, state = next_logits(token, state). Then in a loop of `length` steps: "
    "compute p from logits as above, token = int(rng.choice(len(p), p=p)), append it to out, and "
    "logits, state = next_logits(token, state). Return out.",
])
def generate(fn):
    """Generate `length` tokens after a prompt from a one-step model: a list of ints."""
    pending = []                          # (message, what, case): raised if the draws name nothing
    for case in range(1, len(GENERATE_CASES) + 1):
        model, state, prompt, length, temperature, top_k, rng = generate_case(case)
        state0 = state.copy()
        what = f"prompt {prompt}, length {length}, temperature {temperature:g}, top_k {top_k}"
        with trying("generate", label=what, call_text=_generate_line(case)) as tried:
            try:
                raw = call(fn, model, state, prompt, length, temperature, top_k, rng)
            except CheckFailed as fail:
                raises_like(GENERATE_MISTAKES, getattr(fail, "error", None),
                            lambda row: row(*generate_case(case)), f"({what})")
                raise
            tried.got = raw
            out = _tokens(raw, length, prompt)
            _check_feeding(model, state0, prompt, out, f"({what})")
            if model.peak is not None:
                pending.append((_check_which_logits(model, prompt, out, f"({what})"), what, case))
            if top_k is not None:
                pending.append((_check_top_k(model, prompt, out, top_k, f"({what})"), what, case))
    fits = []
    for case in range(len(GENERATE_CASES) + 1, len(GENERATE_CASES) + len(DRAW_CASES) + 1):
        model, state, prompt, length, temperature, top_k, rng = generate_case(case)
        what = f"fixed logits {FIXED_LOGITS}, temperature {temperature:g}, top_k {top_k}, {length} draws"
        with trying("generate", label=what, call_text=_generate_line(case)):
            out = _tokens(call(fn, model, state, prompt, length, temperature, top_k, rng), length, prompt)
            fits.append(_check_distribution(out, temperature, top_k, f"({what})",
                                            temperatures_right=len(fits) >= 2))
            if len(fits) == 1:
                _check_rng(fn, case, out, f"({what})")
    for message, what, case in pending:
        if message:
            with trying("generate", label=what, call_text=_generate_line(case)):
                raise CheckFailed(message, mistake="wrong step's logits" if _peaked(case) else "top-k")
    return ("feeds the prompt and every sampled token back with the state carried, keeps the top k, and its "
            f"draws follow softmax(logits / temperature) ({'; '.join(fits)})")


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
    "q_uniform_nats", answer=float(np.log(100)), rtol=0.02,
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
    "q_vanishing_factor", answer=0.5 ** 20, rtol=0.02,
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
