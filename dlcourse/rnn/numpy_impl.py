"""Recurrent networks by hand in NumPy: RNN, LSTM and GRU, forward and backpropagation through time.

A recurrent cell reads one time step ``x_t`` and the previous hidden state ``h_{t-1}``
and returns the next state.  The weights are laid out exactly as ``torch.nn.RNN`` /
``nn.LSTM`` / ``nn.GRU`` store them (single layer, unidirectional), in a dict with
PyTorch's names, so a NumPy model loaded with ``params_from_torch(module)`` gives the same
outputs, final states and gradients::

    params = init_params("lstm", input_size=D, hidden_size=H)      # or params_from_torch(nn.LSTM(D, H))
    out, (h_T, c_T), cache = lstm_forward(x, params)               # x (T, N, D), out (T, N, H)
    dx, (dh0, dc0), grads = lstm_backward(dout, cache)             # grads: same keys as params

====================  ===================  =====================================================
key                   shape                holds
====================  ===================  =====================================================
``weight_ih_l0``      (G*H, D)             input-to-hidden weights of the G gates, stacked
``weight_hh_l0``      (G*H, H)             hidden-to-hidden weights
``bias_ih_l0``        (G*H,)               input-side bias
``bias_hh_l0``        (G*H,)               hidden-side bias (only the GRU's n gate tells them apart)
====================  ===================  =====================================================

G = 1 for the vanilla RNN (``h = tanh(W_ih x + b_ih + W_hh h + b_hh)``), 4 for the LSTM
(gates i, f, g, o in this order: input, forget, cell candidate, output) and 3 for the GRU
(gates r, z, n: reset, update, new).

Two versions of each step live here.  The *cell* functions (``rnn_cell_forward``,
``lstm_cell_forward``, ``gru_cell_forward`` and their backwards) take one time step and
are written to be read.  The *sequence* functions (``rnn_forward`` / ``rnn_backward`` ...)
compute the same thing for all T steps, arranged for speed: the input projection
``x @ W_ih.T`` does not depend on the hidden state, so it is one matrix product for all
steps before the loop; only ``h @ W_hh.T`` must wait for the previous step.  Backward,
the loop over time (t = T-1 .. 0) only carries the hidden-state gradient; the weight
gradients, summed over the steps, are one matrix product each after the loop.

Dimension letters (the course glossary)
---------------------------------------
N    batch size
T    time steps (sequence length; L for the longest sequence in ``pad_sequences``)
D    input features per step
H    hidden size
G    gates per cell: 1 (RNN), 4 (LSTM), 3 (GRU)
V    vocabulary size (number of embeddings, number of logits)
E    embedding width
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

__all__ = [
    "GATES", "params_from_torch", "init_params", "sigmoid",
    "RnnCellCache", "rnn_cell_forward", "rnn_cell_backward",
    "RnnCache", "rnn_forward", "rnn_backward",
    "LstmCellCache", "lstm_cell_forward", "lstm_cell_backward",
    "LstmCache", "lstm_forward", "lstm_backward",
    "GruCellCache", "gru_cell_forward", "gru_cell_backward",
    "GruCache", "gru_forward", "gru_backward",
    "clip_grad_norm", "softmax", "sample_next",
    "embedding_forward", "embedding_backward", "pad_sequences",
    "hidden_gradient_norms",
]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
Params = dict  # {"weight_ih_l0": (G*H, D), "weight_hh_l0": (G*H, H), "bias_ih_l0": (G*H,), "bias_hh_l0": (G*H,)}


# --------------------------------------------------------------------------- parameters

def params_from_torch(module) -> dict[str, np.ndarray]:
    """Float64 NumPy copies of a torch recurrent module's layer-0 weights.

    Works for ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (keys ``weight_ih_l0`` ...) and for the
    cells ``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell`` (keys ``weight_ih`` ..., renamed
    to the ``_l0`` names).  A module built with ``bias=False`` gets zero biases.

    Returns
    -------
    params : dict with ``weight_ih_l0`` (G*H, D), ``weight_hh_l0`` (G*H, H),
        ``bias_ih_l0`` (G*H,), ``bias_hh_l0`` (G*H,)
    """
    state = {k: v.detach().cpu().double().numpy().copy() for k, v in module.state_dict().items()}
    params = {}
    for key in KEYS:
        cell_key = key[:-len("_l0")]
        if key in state:
            params[key] = state[key]
        elif cell_key in state:
            params[key] = state[cell_key]
    if "weight_ih_l0" not in params or "weight_hh_l0" not in params:
        raise ValueError(f"not a recurrent module with layer-0 weights: keys {sorted(state)}")
    rows = params["weight_ih_l0"].shape[0]
    for key in ("bias_ih_l0", "bias_hh_l0"):
        params.setdefault(key, np.zeros(rows))
    return params


def init_params(kind: str, input_size: int, hidden_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh float64 weights, drawn as PyTorch does: every entry from U(-1/sqrt(H), 1/sqrt(H)).

    Parameters
    ----------
    kind : "rnn", "lstm" or "gru"
    input_size, hidden_size : D and H
    seed : seed of ``np.random.default_rng``

    Returns
    -------
    params : dict with ``weight_ih_l0`` (G*H, D), ``weight_hh_l0`` (G*H, H), ``bias_ih_l0``,
        ``bias_hh_l0`` (G*H,)
    """
    G = _gates(kind)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    shapes = {"weight_ih_l0": (G * hidden_size, input_size), "weight_hh_l0": (G * hidden_size, hidden_size),
              "bias_ih_l0": (G * hidden_size,), "bias_hh_l0": (G * hidden_size,)}
    return {key: rng.uniform(-bound, bound, size=shape) for key, shape in shapes.items()}


def _gates(kind: str) -> int:
    try:
        return GATES[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {sorted(GATES)}, got {kind!r}") from None


def _weights(params: Params, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays in the compute dtype (no copy when they already have it)."""
    return tuple(np.asarray(params[k]).astype(dtype, copy=False) for k in KEYS)


def _dtype(x: np.ndarray, params: Params):
    """Compute dtype: that of the inputs and weights together (float32 stays float32)."""
    return np.result_type(np.asarray(x).dtype, np.asarray(params["weight_ih_l0"]).dtype, np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))``, stable for any ``x``.

    Written with the identity ``sigmoid(x) = (1 + tanh(x / 2)) / 2``: ``tanh`` never
    overflows (``exp(-x)`` does, for ``x = -1000``), and it is three cheap array operations,
    which matters inside the loop over time.
    """
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _sigmoid_(a: np.ndarray) -> np.ndarray:
    """``sigmoid``, in place on a float array (the sequence loops' version: no temporaries)."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


# --------------------------------------------------------------------------- vanilla RNN, one step

class RnnCellCache(NamedTuple):
    x: np.ndarray       # (N, D)
    h_prev: np.ndarray  # (N, H)
    h: np.ndarray       # (N, H): tanh's output gives its derivative, 1 - h^2
    w_ih: np.ndarray    # (H, D)
    w_hh: np.ndarray    # (H, H)


def rnn_cell_forward(x_t: np.ndarray, h_prev: np.ndarray, params: Params) -> tuple[np.ndarray, RnnCellCache]:
    """One step of the vanilla RNN: ``h = tanh(x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh)``.

    Parameters
    ----------
    x_t : ndarray of shape (N, D)
    h_prev : ndarray of shape (N, H)
    params : dict, ``weight_ih_l0`` (H, D), ``weight_hh_l0`` (H, H), biases (H,)

    Returns
    -------
    h : ndarray of shape (N, H)
    cache : RnnCellCache for ``rnn_cell_backward``
    """
    w_ih, w_hh, b_ih, b_hh = _weights(params, _dtype(x_t, params))
    a = x_t @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh   # (N, H) pre-activation
    h = np.tanh(a)
    return h, RnnCellCache(x_t, h_prev, h, w_ih, w_hh)


def rnn_cell_backward(dh: np.ndarray, cache: RnnCellCache) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gradients of one RNN step.

    Parameters
    ----------
    dh : ndarray of shape (N, H), the loss gradient with respect to this step's ``h``
    cache : from ``rnn_cell_forward``

    Returns
    -------
    dx_t : ndarray of shape (N, D)
    dh_prev : ndarray of shape (N, H)
    grads : dict with the keys of ``params``: this step's contribution (BPTT adds them up)
    """
    x, h_prev, h, w_ih, w_hh = cache
    da = dh * (1 - h * h)                 # d tanh(a) / da = 1 - tanh(a)^2
    dx = da @ w_ih                        # da/dx = W_ih
    dh_prev = da @ w_hh                   # da/dh_prev = W_hh
    db = da.sum(axis=0)                   # both biases are broadcast over the batch
    grads = {"weight_ih_l0": da.T @ x,    # da/dW_ih = x, summed over the batch by the matmul
             "weight_hh_l0": da.T @ h_prev,
             "bias_ih_l0": db, "bias_hh_l0": db.copy()}
    return dx, dh_prev, grads


# --------------------------------------------------------------------------- sequences: shared helpers

def _time_major(x: np.ndarray, batch_first: bool) -> np.ndarray:
    if x.ndim != 3:
        raise ValueError(f"x must be (T, N, D) (or (N, T, D) with batch_first=True), got shape {x.shape}")
    return np.ascontiguousarray(x.swapaxes(0, 1)) if batch_first else x


def _state(h0, N: int, H: int, dtype, name: str = "h0") -> np.ndarray:
    if h0 is None:
        return np.zeros((N, H), dtype=dtype)
    h0 = np.asarray(h0)
    if h0.shape == (1, N, H):  # torch's (num_layers, N, H) is accepted too
        h0 = h0[0]
    if h0.shape != (N, H):
        raise ValueError(f"{name} must have shape (N, H) = ({N}, {H}), got {h0.shape}")
    return h0.astype(dtype, copy=False)


def _upstream(dout: Optional[np.ndarray], shape, batch_first: bool, dtype) -> np.ndarray:
    """dout in time-major layout, (T, N, H); None means no loss on the outputs (zeros)."""
    if dout is None:
        return np.zeros(shape, dtype=dtype)
    dout = np.asarray(dout)
    if batch_first:
        dout = dout.swapaxes(0, 1)
    if dout.shape != shape:
        raise ValueError(f"dout must have the shape of out, {shape} (time-major), got {dout.shape}")
    return dout


def _check_truncate(truncate: Optional[int]) -> Optional[int]:
    if truncate is None:
        return None
    if int(truncate) != truncate or truncate < 1:
        raise ValueError(f"truncate must be a positive whole number of steps or None, got {truncate!r}")
    return int(truncate)


def _cut(t: int, truncate: Optional[int]) -> bool:
    """True where truncated BPTT stops the hidden-state gradient: before the first step of a window."""
    return truncate is not None and t > 0 and t % truncate == 0


def _weight_grads(dgates_ih: np.ndarray, dgates_hh: np.ndarray, x: np.ndarray, hs_prev: np.ndarray,
                  w_ih: np.ndarray) -> tuple[np.ndarray, dict]:
    """dx and the four parameter gradients from the pre-activation gradients of all steps at once.

    ``dgates_*`` (T, N, G*H), ``x`` (T, N, D), ``hs_prev`` (T, N, H): the state each step read.
    Summing ``dgates_t^T h_{t-1}`` over t is one (G*H, T*N) @ (T*N, H) product.
    """
    T, N, GH = dgates_ih.shape
    gi = dgates_ih.reshape(T * N, GH)                                       # (T*N, G*H)
    gh = dgates_hh.reshape(T * N, GH)
    dx = (gi @ w_ih).reshape(T, N, x.shape[2])                              # (T, N, D)
    grads = {"weight_ih_l0": gi.T @ x.reshape(T * N, -1),                   # (G*H, D)
             "weight_hh_l0": gh.T @ hs_prev.reshape(T * N, -1),             # (G*H, H)
             "bias_ih_l0": gi.sum(axis=0)}                                 # biases: broadcast over T and N
    grads["bias_hh_l0"] = grads["bias_ih_l0"].copy() if dgates_hh is dgates_ih else gh.sum(axis=0)
    return dx, grads


# --------------------------------------------------------------------------- vanilla RNN, a sequence

class RnnCache(NamedTuple):
    x: np.ndarray       # (T, N, D), time-major
    hs: np.ndarray      # (T+1, N, H): hs[0] = h0, hs[t+1] = the output of step t
    w_ih: np.ndarray    # (H, D)
    w_hh: np.ndarray    # (H, H)
    batch_first: bool


def rnn_forward(x: np.ndarray, params: Params, h0: Optional[np.ndarray] = None,
                batch_first: bool = False) -> tuple[np.ndarray, np.ndarray, RnnCache]:
    """The vanilla RNN over a whole sequence: ``nn.RNN(D, H, nonlinearity="tanh")``.

    Each step is ``rnn_cell_forward``; the input projection of all steps is one product.

    Parameters
    ----------
    x : ndarray of shape (T, N, D), or (N, T, D) with ``batch_first=True``
    params : dict, ``weight_ih_l0`` (H, D), ``weight_hh_l0`` (H, H), biases (H,)
    h0 : ndarray of shape (N, H) (or torch's (1, N, H)), or None for zeros

    Returns
    -------
    out : ndarray of shape (T, N, H) (or (N, T, H)): the hidden state after every step
    h_T : ndarray of shape (N, H), the final hidden state (= out's last step)
    cache : RnnCache for ``rnn_backward``
    """
    dtype = _dtype(x, params)
    x = _time_major(np.asarray(x), batch_first).astype(dtype, copy=False)
    w_ih, w_hh, b_ih, b_hh = _weights(params, dtype)
    T, N, D = x.shape
    H = w_hh.shape[1]
    xw = (x.reshape(T * N, D) @ w_ih.T + (b_ih + b_hh)).reshape(T, N, H)  # (T, N, H) all input projections
    hs = np.empty((T + 1, N, H), dtype=dtype)
    hs[0] = _state(h0, N, H, dtype)
    w_hh_t = np.ascontiguousarray(w_hh.T)
    for t in range(T):
        a = np.matmul(hs[t], w_hh_t, out=hs[t + 1])     # (N, H), written straight into its slot
        a += xw[t]
        np.tanh(a, out=a)
    out = hs[1:]
    return (out.swapaxes(0, 1) if batch_first else out), hs[T], RnnCache(x, hs, w_ih, w_hh, batch_first)


def rnn_backward(dout: Optional[np.ndarray], cache: RnnCache, dh_T: Optional[np.ndarray] = None,
                 truncate: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Backpropagation through time for ``rnn_forward``.

    Going back from step T-1 to 0, the gradient reaching ``h_t`` is the loss's own
    (``dout[t]``) plus what step t+1 sends back through ``W_hh`` (``dh_next``).  The
    weights are shared by every step, so their gradients are the *sum* over steps.

    Truncated BPTT, ``truncate=k``: the sequence is split into windows of k steps
    (steps 0..k-1, k..2k-1, ...) and no gradient crosses from one window into the one
    before it.  Exactly what PyTorch computes when the state is detached between windows::

        for start in range(0, T, k):
            out, h = rnn(x[start:start + k], h)
            h = h.detach()            # (and the outputs collected before detaching)

    Inside a window every gradient is exact; ``dh0`` is the gradient from the first
    window only; ``dh_T`` enters the last window.

    Parameters
    ----------
    dout : ndarray shaped like ``out`` ((T, N, H), or (N, T, H) if the forward was
        ``batch_first``), or None for no loss on the outputs
    cache : from ``rnn_forward``
    dh_T : ndarray of shape (N, H), the gradient with respect to the final state ``h_T``,
        or None
    truncate : int k >= 1 or None (full BPTT)

    Returns
    -------
    dx : ndarray shaped like ``x`` (batch_first respected)
    dh0 : ndarray of shape (N, H)
    grads : dict with the keys and shapes of ``params``
    """
    dx, dh0, grads, _ = _rnn_bptt(dout, cache, dh_T, truncate)
    return dx, dh0, grads


def _rnn_bptt(dout, cache: RnnCache, dh_T, truncate, record: bool = False):
    x, hs, w_ih, w_hh, batch_first = cache
    T, N, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    truncate = _check_truncate(truncate)
    dout = _upstream(dout, (T, N, H), batch_first, hs.dtype)
    dh_next = _state(dh_T, N, H, hs.dtype, "dh_T")
    da = np.empty((T, N, H), dtype=hs.dtype)           # (T, N, H) pre-activation gradients
    dh_steps = np.empty((T, N, H), dtype=hs.dtype) if record else None
    for t in range(T - 1, -1, -1):
        dh = dout[t] + dh_next                         # the loss's own gradient + what step t+1 sends back
        if record:
            dh_steps[t] = dh
        h = hs[t + 1]
        np.multiply(dh, 1 - h * h, out=da[t])          # tanh' = 1 - h^2
        dh_next = da[t] @ w_hh                          # back through W_hh to h_{t-1}
        if _cut(t, truncate):
            dh_next = np.zeros_like(dh_next)           # the state was detached here
    dx, grads = _weight_grads(da, da, x, hs[:-1], w_ih)
    return (dx.swapaxes(0, 1) if batch_first else dx), dh_next, grads, dh_steps


# --------------------------------------------------------------------------- LSTM, one step

class LstmCellCache(NamedTuple):
    x: np.ndarray       # (N, D)
    h_prev: np.ndarray  # (N, H)
    c_prev: np.ndarray  # (N, H)
    i: np.ndarray       # (N, H) input gate, after its sigmoid
    f: np.ndarray       # (N, H) forget gate
    g: np.ndarray       # (N, H) cell candidate, after its tanh
    o: np.ndarray       # (N, H) output gate
    tanh_c: np.ndarray  # (N, H) tanh of the new cell state
    w_ih: np.ndarray    # (4H, D)
    w_hh: np.ndarray    # (4H, H)


def lstm_cell_forward(x_t: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray,
                      params: Params) -> tuple[np.ndarray, np.ndarray, LstmCellCache]:
    """One LSTM step, ``nn.LSTMCell``, gates in PyTorch's order i, f, g, o.

    ``a = x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh`` (N, 4H), split into four blocks of H:
    ``i = sigmoid(a_i)``, ``f = sigmoid(a_f)``, ``g = tanh(a_g)``, ``o = sigmoid(a_o)``;
    ``c = f * c_prev + i * g`` (forget some of the old memory, write some new);
    ``h = o * tanh(c)`` (show some of it).

    Parameters
    ----------
    x_t : ndarray of shape (N, D)
    h_prev, c_prev : ndarrays of shape (N, H)
    params : dict, ``weight_ih_l0`` (4H, D), ``weight_hh_l0`` (4H, H), biases (4H,)

    Returns
    -------
    h, c : ndarrays of shape (N, H)
    cache : LstmCellCache for ``lstm_cell_backward``
    """
    w_ih, w_hh, b_ih, b_hh = _weights(params, _dtype(x_t, params))
    H = w_hh.shape[1]
    a = x_t @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh     # (N, 4H)
    i = sigmoid(a[:, 0 * H:1 * H])
    f = sigmoid(a[:, 1 * H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:4 * H])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return h, c, LstmCellCache(x_t, h_prev, c_prev, i, f, g, o, tanh_c, w_ih, w_hh)


def lstm_cell_backward(dh: np.ndarray, dc: np.ndarray,
                       cache: LstmCellCache) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Gradients of one LSTM step.

    Parameters
    ----------
    dh : ndarray of shape (N, H), the loss gradient with respect to this step's ``h``
    dc : ndarray of shape (N, H), with respect to this step's ``c`` (from the next step)
    cache : from ``lstm_cell_forward``

    Returns
    -------
    dx_t : ndarray of shape (N, D)
    dh_prev, dc_prev : ndarrays of shape (N, H)
    grads : dict with the keys of ``params``: this step's contribution
    """
    x, h_prev, c_prev, i, f, g, o, tanh_c, w_ih, w_hh = cache
    do = dh * tanh_c                              # h = o * tanh(c)
    dc = dc + dh * o * (1 - tanh_c * tanh_c)      # c reaches the loss directly and through h
    di = dc * g                                   # c = f * c_prev + i * g
    df = dc * c_prev
    dg = dc * i
    dc_prev = dc * f
    da = np.concatenate([di * i * (1 - i),        # sigmoid' = s (1 - s)
                         df * f * (1 - f),
                         dg * (1 - g * g),        # tanh' = 1 - t^2
                         do * o * (1 - o)], axis=1)   # (N, 4H), gates i, f, g, o
    dx = da @ w_ih
    dh_prev = da @ w_hh
    db = da.sum(axis=0)
    grads = {"weight_ih_l0": da.T @ x, "weight_hh_l0": da.T @ h_prev,
             "bias_ih_l0": db, "bias_hh_l0": db.copy()}
    return dx, dh_prev, dc_prev, grads


# --------------------------------------------------------------------------- LSTM, a sequence

class LstmCache(NamedTuple):
    x: np.ndarray       # (T, N, D), time-major
    hs: np.ndarray      # (T+1, N, H): hs[0] = h0, hs[t+1] = h after step t
    cs: np.ndarray      # (T+1, N, H): cs[0] = c0, cs[t+1] = c after step t
    gates: np.ndarray   # (T, N, 4H): i, f, g, o after their nonlinearities
    tanh_c: np.ndarray  # (T, N, H)
    w_ih: np.ndarray    # (4H, D)
    w_hh: np.ndarray    # (4H, H)
    batch_first: bool


def lstm_forward(x: np.ndarray, params: Params, state=None,
                 batch_first: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], LstmCache]:
    """The LSTM over a whole sequence: ``nn.LSTM(D, H)``, one layer, gates i, f, g, o.

    Each step is ``lstm_cell_forward``; the input projection of all steps is one product
    before the loop, and every step writes into preallocated arrays.

    Parameters
    ----------
    x : ndarray of shape (T, N, D), or (N, T, D) with ``batch_first=True``
    params : dict, ``weight_ih_l0`` (4H, D), ``weight_hh_l0`` (4H, H), biases (4H,)
    state : pair (h0, c0) of ndarrays of shape (N, H) (either may be None), or None: zeros

    Returns
    -------
    out : ndarray of shape (T, N, H) (or (N, T, H)): h after every step
    (h_T, c_T) : ndarrays of shape (N, H), the final states
    cache : LstmCache for ``lstm_backward``
    """
    dtype = _dtype(x, params)
    x = _time_major(np.asarray(x), batch_first).astype(dtype, copy=False)
    w_ih, w_hh, b_ih, b_hh = _weights(params, dtype)
    T, N, D = x.shape
    H = w_hh.shape[1]
    h0, c0 = (None, None) if state is None else state
    gates = (x.reshape(T * N, D) @ w_ih.T + (b_ih + b_hh)).reshape(T, N, 4 * H)  # (T, N, 4H) input projections
    hs = np.empty((T + 1, N, H), dtype=dtype)
    cs = np.empty((T + 1, N, H), dtype=dtype)
    tanh_c = np.empty((T, N, H), dtype=dtype)
    hs[0], cs[0] = _state(h0, N, H, dtype), _state(c0, N, H, dtype, "c0")
    w_hh_t = np.ascontiguousarray(w_hh.T)                   # (H, 4H)
    ig = np.empty((N, H), dtype=dtype)
    for t in range(T):
        a = gates[t]                                        # (N, 4H), overwritten by the activations
        a += hs[t] @ w_hh_t
        _sigmoid_(a[:, :2 * H])                             # i, f
        np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])   # g
        _sigmoid_(a[:, 3 * H:])                             # o
        c = cs[t + 1]
        np.multiply(a[:, H:2 * H], cs[t], out=c)            # c = f * c_prev + i * g
        np.multiply(a[:, :H], a[:, 2 * H:3 * H], out=ig)
        c += ig
        np.tanh(c, out=tanh_c[t])
        np.multiply(a[:, 3 * H:], tanh_c[t], out=hs[t + 1])  # h = o * tanh(c)
    out = hs[1:]
    cache = LstmCache(x, hs, cs, gates, tanh_c, w_ih, w_hh, batch_first)
    return (out.swapaxes(0, 1) if batch_first else out), (hs[T], cs[T]), cache


def lstm_backward(dout: Optional[np.ndarray], cache: LstmCache, dstate=None,
                  truncate: Optional[int] = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict]:
    """Backpropagation through time for ``lstm_forward``.

    Two gradients travel back from step t+1 to step t: one to ``h_t`` (through ``W_hh``)
    and one to ``c_t`` (through the forget gate: ``dc_prev = dc * f``, the path along
    which gradients survive many steps).  ``truncate=k`` as in ``rnn_backward``: windows
    of k steps, and neither gradient crosses a window boundary (torch: detach h and c).

    Parameters
    ----------
    dout : ndarray shaped like ``out``, or None
    cache : from ``lstm_forward``
    dstate : pair (dh_T, dc_T) of (N, H) ndarrays (either may be None), or None
    truncate : int k >= 1 or None (full BPTT)

    Returns
    -------
    dx : ndarray shaped like ``x``
    (dh0, dc0) : ndarrays of shape (N, H)
    grads : dict with the keys and shapes of ``params``
    """
    dx, dstate0, grads, _ = _lstm_bptt(dout, cache, dstate, truncate)
    return dx, dstate0, grads


def _lstm_bptt(dout, cache: LstmCache, dstate, truncate, record: bool = False):
    x, hs, cs, gates, tanh_c, w_ih, w_hh, batch_first = cache
    T, N, H = tanh_c.shape
    dtype = hs.dtype
    truncate = _check_truncate(truncate)
    dout = _upstream(dout, (T, N, H), batch_first, dtype)
    dh_T, dc_T = (None, None) if dstate is None else dstate
    dh_next, dc_next = _state(dh_T, N, H, dtype, "dh_T"), _state(dc_T, N, H, dtype, "dc_T").copy()
    da = np.empty((T, N, 4 * H), dtype=dtype)               # (T, N, 4H) pre-activation gradients
    dh_steps = np.empty((T, N, H), dtype=dtype) if record else None
    dc, tmp = np.empty((N, H), dtype=dtype), np.empty((N, H), dtype=dtype)
    for t in range(T - 1, -1, -1):
        dh = dout[t] + dh_next
        if record:
            dh_steps[t] = dh
        a, d = gates[t], da[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        di, df, dg, do = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
        tc = tanh_c[t]
        # dc = dc_next + dh * o * (1 - tanh(c)^2): the memory reaches the loss directly and through h
        np.multiply(tc, tc, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        np.add(dc_next, tmp, out=dc)
        # do = dh * tanh(c), then through the sigmoid: * o (1 - o)
        np.multiply(dh, tc, out=do)
        np.subtract(1, o, out=tmp)
        tmp *= o
        do *= tmp
        # di = dc * g * i (1 - i)
        np.multiply(dc, g, out=di)
        np.subtract(1, i, out=tmp)
        tmp *= i
        di *= tmp
        # df = dc * c_prev * f (1 - f)
        np.multiply(dc, cs[t], out=df)
        np.subtract(1, f, out=tmp)
        tmp *= f
        df *= tmp
        # dg = dc * i * (1 - g^2)
        np.multiply(dc, i, out=dg)
        np.multiply(g, g, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dg *= tmp
        dc_next = dc * f                                    # c = f * c_prev + ...
        dh_next = d @ w_hh                                  # (N, H) back through W_hh
        if _cut(t, truncate):
            dh_next, dc_next = np.zeros_like(dh_next), np.zeros_like(dc_next)
    dx, grads = _weight_grads(da, da, x, hs[:-1], w_ih)
    return (dx.swapaxes(0, 1) if batch_first else dx), (dh_next, dc_next), grads, dh_steps


# --------------------------------------------------------------------------- GRU, one step

class GruCellCache(NamedTuple):
    x: np.ndarray       # (N, D)
    h_prev: np.ndarray  # (N, H)
    r: np.ndarray       # (N, H) reset gate, after its sigmoid
    z: np.ndarray       # (N, H) update gate
    n: np.ndarray       # (N, H) new candidate, after its tanh
    hn: np.ndarray      # (N, H) W_hn h_prev + b_hn, the part the reset gate scales
    w_ih: np.ndarray    # (3H, D)
    w_hh: np.ndarray    # (3H, H)


def gru_cell_forward(x_t: np.ndarray, h_prev: np.ndarray, params: Params) -> tuple[np.ndarray, GruCellCache]:
    """One GRU step, ``nn.GRUCell``, gates in PyTorch's order r, z, n.

    ``gi = x_t W_ih^T + b_ih`` and ``gh = h_prev W_hh^T + b_hh`` (N, 3H) each, split in
    blocks of H: ``r = sigmoid(gi_r + gh_r)``, ``z = sigmoid(gi_z + gh_z)``,
    ``n = tanh(gi_n + r * gh_n)`` (the reset gate scales the hidden side only, bias
    included: why the GRU keeps two biases), ``h = (1 - z) * n + z * h_prev``.

    Parameters
    ----------
    x_t : ndarray of shape (N, D)
    h_prev : ndarray of shape (N, H)
    params : dict, ``weight_ih_l0`` (3H, D), ``weight_hh_l0`` (3H, H), biases (3H,)

    Returns
    -------
    h : ndarray of shape (N, H)
    cache : GruCellCache for ``gru_cell_backward``
    """
    w_ih, w_hh, b_ih, b_hh = _weights(params, _dtype(x_t, params))
    H = w_hh.shape[1]
    gi = x_t @ w_ih.T + b_ih                                 # (N, 3H)
    gh = h_prev @ w_hh.T + b_hh                              # (N, 3H)
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    hn = gh[:, 2 * H:]
    n = np.tanh(gi[:, 2 * H:] + r * hn)
    h = (1 - z) * n + z * h_prev
    return h, GruCellCache(x_t, h_prev, r, z, n, hn, w_ih, w_hh)


def gru_cell_backward(dh: np.ndarray, cache: GruCellCache) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gradients of one GRU step.

    Parameters
    ----------
    dh : ndarray of shape (N, H), the loss gradient with respect to this step's ``h``
    cache : from ``gru_cell_forward``

    Returns
    -------
    dx_t : ndarray of shape (N, D)
    dh_prev : ndarray of shape (N, H)
    grads : dict with the keys of ``params``: this step's contribution
    """
    x, h_prev, r, z, n, hn, w_ih, w_hh = cache
    dn = dh * (1 - z)                     # h = (1 - z) n + z h_prev
    dz = dh * (h_prev - n)
    dh_prev = dh * z
    dan = dn * (1 - n * n)                # tanh' = 1 - n^2; an = gi_n + r * hn
    dr = dan * hn
    dar = dr * r * (1 - r)                # sigmoid' = s (1 - s)
    daz = dz * z * (1 - z)
    dgi = np.concatenate([dar, daz, dan], axis=1)          # (N, 3H): d/d(x W_ih^T + b_ih)
    dgh = np.concatenate([dar, daz, dan * r], axis=1)      # (N, 3H): d/d(h_prev W_hh^T + b_hh)
    dx = dgi @ w_ih
    dh_prev = dh_prev + dgh @ w_hh
    grads = {"weight_ih_l0": dgi.T @ x, "weight_hh_l0": dgh.T @ h_prev,
             "bias_ih_l0": dgi.sum(axis=0), "bias_hh_l0": dgh.sum(axis=0)}
    return dx, dh_prev, grads


# --------------------------------------------------------------------------- GRU, a sequence

class GruCache(NamedTuple):
    x: np.ndarray       # (T, N, D), time-major
    hs: np.ndarray      # (T+1, N, H): hs[0] = h0, hs[t+1] = h after step t
    gates: np.ndarray   # (T, N, 3H): r, z, n after their nonlinearities
    hn: np.ndarray      # (T, N, H): W_hn h_{t-1} + b_hn
    w_ih: np.ndarray    # (3H, D)
    w_hh: np.ndarray    # (3H, H)
    batch_first: bool


def gru_forward(x: np.ndarray, params: Params, h0: Optional[np.ndarray] = None,
                batch_first: bool = False) -> tuple[np.ndarray, np.ndarray, GruCache]:
    """The GRU over a whole sequence: ``nn.GRU(D, H)``, one layer, gates r, z, n.

    Parameters
    ----------
    x : ndarray of shape (T, N, D), or (N, T, D) with ``batch_first=True``
    params : dict, ``weight_ih_l0`` (3H, D), ``weight_hh_l0`` (3H, H), biases (3H,)
    h0 : ndarray of shape (N, H), or None for zeros

    Returns
    -------
    out : ndarray of shape (T, N, H) (or (N, T, H))
    h_T : ndarray of shape (N, H)
    cache : GruCache for ``gru_backward``
    """
    dtype = _dtype(x, params)
    x = _time_major(np.asarray(x), batch_first).astype(dtype, copy=False)
    w_ih, w_hh, b_ih, b_hh = _weights(params, dtype)
    T, N, D = x.shape
    H = w_hh.shape[1]
    gates = (x.reshape(T * N, D) @ w_ih.T + b_ih).reshape(T, N, 3 * H)   # (T, N, 3H) input side
    gates[:, :, :2 * H] += b_hh[:2 * H]          # r and z add the two sides: fold the hidden bias in
    hs = np.empty((T + 1, N, H), dtype=dtype)
    hn = np.empty((T, N, H), dtype=dtype)
    hs[0] = _state(h0, N, H, dtype)
    w_hh_t = np.ascontiguousarray(w_hh.T)        # (H, 3H)
    tmp = np.empty((N, H), dtype=dtype)
    for t in range(T):
        a = gates[t]                             # (N, 3H), overwritten by r, z, n
        gh = hs[t] @ w_hh_t                      # (N, 3H)
        a[:, :2 * H] += gh[:, :2 * H]
        _sigmoid_(a[:, :2 * H])                  # r, z
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        np.add(gh[:, 2 * H:], b_hh[2 * H:], out=hn[t])
        np.multiply(r, hn[t], out=tmp)
        n += tmp
        np.tanh(n, out=n)                        # n = tanh(gi_n + r * hn)
        np.subtract(hs[t], n, out=tmp)           # h = n + z (h_prev - n)
        tmp *= z
        np.add(n, tmp, out=hs[t + 1])
    out = hs[1:]
    cache = GruCache(x, hs, gates, hn, w_ih, w_hh, batch_first)
    return (out.swapaxes(0, 1) if batch_first else out), hs[T], cache


def gru_backward(dout: Optional[np.ndarray], cache: GruCache, dh_T: Optional[np.ndarray] = None,
                 truncate: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Backpropagation through time for ``gru_forward`` (``truncate`` as in ``rnn_backward``).

    Parameters
    ----------
    dout : ndarray shaped like ``out``, or None
    cache : from ``gru_forward``
    dh_T : ndarray of shape (N, H), or None
    truncate : int k >= 1 or None (full BPTT)

    Returns
    -------
    dx : ndarray shaped like ``x``
    dh0 : ndarray of shape (N, H)
    grads : dict with the keys and shapes of ``params``
    """
    dx, dh0, grads, _ = _gru_bptt(dout, cache, dh_T, truncate)
    return dx, dh0, grads


def _gru_bptt(dout, cache: GruCache, dh_T, truncate, record: bool = False):
    x, hs, gates, hn, w_ih, w_hh, batch_first = cache
    T, N, H = hn.shape
    dtype = hs.dtype
    truncate = _check_truncate(truncate)
    dout = _upstream(dout, (T, N, H), batch_first, dtype)
    dh_next = _state(dh_T, N, H, dtype, "dh_T")
    dgi = np.empty((T, N, 3 * H), dtype=dtype)    # gradients of the input-side pre-activations
    dgh = np.empty((T, N, 3 * H), dtype=dtype)    # and of the hidden side (they differ in the n block)
    dh_steps = np.empty((T, N, H), dtype=dtype) if record else None
    tmp = np.empty((N, H), dtype=dtype)
    for t in range(T - 1, -1, -1):
        dh = dout[t] + dh_next
        if record:
            dh_steps[t] = dh
        a, d = gates[t], dgi[t]
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        dar, daz, dan = d[:, :H], d[:, H:2 * H], d[:, 2 * H:]
        # dan = dh (1 - z) (1 - n^2)
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        np.subtract(1, z, out=dan)
        dan *= dh
        dan *= tmp
        # daz = dh (h_prev - n) z (1 - z)
        np.subtract(hs[t], n, out=daz)
        daz *= dh
        np.subtract(1, z, out=tmp)
        tmp *= z
        daz *= tmp
        # dar = dan * hn * r (1 - r)
        np.multiply(dan, hn[t], out=dar)
        np.subtract(1, r, out=tmp)
        tmp *= r
        dar *= tmp
        dgh[t, :, :2 * H] = d[:, :2 * H]
        np.multiply(dan, r, out=dgh[t, :, 2 * H:])       # hn is scaled by r
        dh_next = dh * z + dgh[t] @ w_hh                 # directly through z h_prev, and through W_hh
        if _cut(t, truncate):
            dh_next = np.zeros_like(dh_next)
    dx, grads = _weight_grads(dgi, dgh, x, hs[:-1], w_ih)
    return (dx.swapaxes(0, 1) if batch_first else dx), dh_next, grads, dh_steps


# --------------------------------------------------------------------------- why gates: gradient norms

def hidden_gradient_norms(kind: str, params: Params, x: np.ndarray, state=None,
                          dh_last: Optional[np.ndarray] = None, batch_first: bool = False) -> np.ndarray:
    """How much gradient reaches each hidden state from a loss on the last step.

    The loss is ``sum(dh_last * h_{T-1})`` (only the last output counts; ``dh_last``
    defaults to ones), and the result is ``|| d loss / d h_t ||`` (Frobenius norm over
    the batch and the hidden units) for t = 0 .. T-1.  For a vanilla RNN with small
    weights it shrinks geometrically going back in time (vanishing gradients); the
    LSTM's cell-state path keeps it alive much longer.

    Parameters
    ----------
    kind : "rnn", "lstm" or "gru"
    params : dict of that kind's weights
    x : ndarray of shape (T, N, D) (or (N, T, D) with ``batch_first``)
    state : initial state as for the kind's forward (h0; (h0, c0) for the LSTM), or None
    dh_last : ndarray of shape (N, H), or None for ones

    Returns
    -------
    norms : ndarray of shape (T,), float
    """
    _gates(kind)  # validates kind
    forward, bptt = {"rnn": (rnn_forward, _rnn_bptt), "lstm": (lstm_forward, _lstm_bptt),
                     "gru": (gru_forward, _gru_bptt)}[kind]
    out, _, cache = forward(x, params, state, batch_first=batch_first)
    T, N, H = cache.hs.shape[0] - 1, cache.hs.shape[1], cache.hs.shape[2]
    dout = np.zeros((T, N, H), dtype=out.dtype)
    dout[-1] = np.ones((N, H)) if dh_last is None else dh_last
    if batch_first:
        dout = dout.swapaxes(0, 1)
    dh_steps = bptt(dout, cache, None, None, record=True)[3]
    return np.sqrt((dh_steps * dh_steps).sum(axis=(1, 2)))


# --------------------------------------------------------------------------- gradient clipping

def clip_grad_norm(grads: Union[dict, Sequence[np.ndarray]], max_norm: float,
                   norm_type: float = 2.0) -> tuple[Union[dict, list], float]:
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: the global norm is the norm of the
    vector of every gradient entry (equivalently the norm of the per-array norms); if it
    exceeds ``max_norm``, every gradient is multiplied by ``max_norm / (norm + 1e-6)``.
    One factor for all: clipping each array on its own would change the update's
    direction.  Pure: returns new arrays and leaves ``grads`` untouched.

    Parameters
    ----------
    grads : dict name -> ndarray, or a list/tuple of ndarrays
    max_norm : float, the largest norm allowed
    norm_type : float (1, 2, ...) or ``inf`` (largest absolute entry)

    Returns
    -------
    clipped : same type as ``grads`` (a dict, or a list), same shapes
    total_norm : float, the global norm *before* clipping
    """
    norm_type = float(norm_type)
    arrays = list(grads.values()) if isinstance(grads, dict) else list(grads)
    if not arrays:
        return (dict(grads) if isinstance(grads, dict) else []), 0.0
    if norm_type == np.inf:
        total = max(float(np.max(np.abs(g))) if np.size(g) else 0.0 for g in arrays)
    else:
        per_array = [np.sum(np.abs(np.asarray(g, dtype=np.float64)) ** norm_type) for g in arrays]
        total = float(np.sum(per_array) ** (1.0 / norm_type))
    scale = min(1.0, max_norm / (total + 1e-6))   # torch's eps keeps the division finite at norm 0
    clipped = [np.asarray(g) * np.asarray(scale, dtype=np.asarray(g).dtype) for g in arrays]
    if isinstance(grads, dict):
        return dict(zip(grads.keys(), clipped)), total
    return clipped, total


# --------------------------------------------------------------------------- sampling

def softmax(logits: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """``softmax(logits / temperature)`` along ``axis``, stable (the max is subtracted first).

    Temperature below 1 sharpens the distribution (towards the argmax), above 1 flattens
    it (towards uniform).  It divides the *logits*: raising probabilities to a power after
    the softmax is a different (and unnormalised) thing.

    Parameters
    ----------
    logits : ndarray of shape (..., V)
    temperature : float > 0

    Returns
    -------
    probs : ndarray shaped like ``logits``, summing to 1 along ``axis``
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use sample_next(..., temperature=0) for greedy), "
                         f"got {temperature}")
    z = np.asarray(logits, dtype=np.result_type(np.asarray(logits).dtype, np.float32)) / temperature
    z = z - np.max(z, axis=axis, keepdims=True)       # exp(<= 0) never overflows; softmax is shift-invariant
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
                top_k: Optional[int] = None):
    """Draw the next token from ``softmax(logits / temperature)``, optionally among the top k.

    Parameters
    ----------
    logits : ndarray of shape (V,) or (N, V)
    rng : np.random.Generator (``np.random.default_rng(seed)``): the only source of randomness
    temperature : float >= 0; 0 means greedy (the argmax, no randomness used)
    top_k : int >= 1 or None; only the k largest logits can be drawn (exactly k, ties broken
        by position as ``np.argpartition`` does)

    Returns
    -------
    int for logits (V,), ndarray of shape (N,) of int for logits (N, V)
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim not in (1, 2):
        raise ValueError(f"logits must be (V,) or (N, V), got shape {logits.shape}")
    rows = logits.reshape(-1, logits.shape[-1])          # (N, V)
    V = rows.shape[1]
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        picks = np.argmax(rows, axis=1)
    else:
        if top_k is not None:
            if not 1 <= top_k:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
            if top_k < V:
                keep = np.argpartition(-rows, top_k - 1, axis=1)[:, :top_k]   # (N, k) the k largest
                masked = np.full_like(rows, -np.inf)
                np.put_along_axis(masked, keep, np.take_along_axis(rows, keep, axis=1), axis=1)
                rows = masked
        probs = softmax(rows, temperature)                # (N, V), zero outside the top k
        cdf = np.cumsum(probs, axis=1)
        u = rng.random((rows.shape[0], 1)) * cdf[:, -1:]  # inverse CDF: the first index whose cdf exceeds u
        picks = (cdf <= u).sum(axis=1)
        last = V - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)   # guard against rounding at the very top
        picks = np.minimum(picks, last)
    return int(picks[0]) if logits.ndim == 1 else picks


# --------------------------------------------------------------------------- embeddings and padding

def embedding_forward(ids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Look up one row of ``weight`` per id: ``nn.Embedding`` (a matrix product with one-hot rows).

    Parameters
    ----------
    ids : int ndarray of any shape (...), values in [0, V)
    weight : ndarray of shape (V, E)

    Returns
    -------
    out : ndarray of shape (..., E)
    """
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        raise IndexError(f"ids must lie in [0, {weight.shape[0]}), got [{ids.min()}, {ids.max()}]")
    return weight[ids]


def embedding_backward(dout: np.ndarray, ids: np.ndarray, num_embeddings: int) -> np.ndarray:
    """Gradient of ``embedding_forward`` with respect to ``weight``.

    Row v receives the sum of ``dout`` over every position where id v was looked up.
    ``np.add.at`` adds once per occurrence; ``dweight[ids] += dout`` would keep only one
    of the repeated ids' gradients (buffered fancy-index assignment).

    Parameters
    ----------
    dout : ndarray of shape (..., E)
    ids : int ndarray of shape (...), as passed to the forward
    num_embeddings : V

    Returns
    -------
    dweight : ndarray of shape (V, E)
    """
    ids = np.asarray(ids)
    E = dout.shape[-1]
    dweight = np.zeros((num_embeddings, E), dtype=dout.dtype)
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, E))   # repeated ids accumulate
    return dweight


def pad_sequences(seqs: Sequence[np.ndarray], pad_value=0, batch_first: bool = True):
    """Stack sequences of different lengths into one array, padded at the end, with a mask.

    Parameters
    ----------
    seqs : list of N ndarrays of shape (L_i,) or (L_i, D) (token ids or feature vectors)
    pad_value : value written after each sequence's end
    batch_first : True gives (N, L, ...), False the time-major (L, N, ...)

    Returns
    -------
    padded : ndarray of shape (N, L) / (N, L, D) (or (L, N) / (L, N, D)), L = max L_i
    lengths : int ndarray of shape (N,)
    mask : bool ndarray of shape (N, L) (or (L, N)), True where a real element sits
    """
    seqs = [np.asarray(s) for s in seqs]
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    trailing = {s.shape[1:] for s in seqs}
    if len(trailing) != 1:
        raise ValueError(f"all sequences must share their feature shape, got {sorted(trailing)}")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    L = int(lengths.max())
    dtype = np.result_type(*seqs) if all(s.size for s in seqs) else np.result_type(*[s.dtype for s in seqs])
    padded = np.full((len(seqs), L) + seqs[0].shape[1:], pad_value, dtype=dtype)
    for row, s in enumerate(seqs):
        padded[row, :len(s)] = s
    mask = np.arange(L)[None, :] < lengths[:, None]       # (N, L)
    if not batch_first:
        padded, mask = padded.swapaxes(0, 1), mask.T
    return padded, lengths, mask


# --------------------------------------------------------------------------- exercise forms (the graded answers)
# The answers to the graded exercises of chapter 06 (solutions/06_rnn.py), in the form the
# exercises ask for; each is the ``reference=`` of its check in dlcourse/rnn/checks.py.  The
# functions above take a params dict and return caches; these take the four weight arrays
# (as PyTorch stores them) and return plain values.  ``clip_grad_norm`` and
# ``embedding_backward`` above are already in the exercises' form.

def lstm_cell_step(x_t: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray, W_ih: np.ndarray,
                   W_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ``nn.LSTMCell`` step from its four weight arrays (gates i, f, g, o).

    Parameters
    ----------
    x_t : (N, D); h_prev, c_prev : (N, H)
    W_ih : (4H, D); W_hh : (4H, H); b_ih, b_hh : (4H,)

    Returns
    -------
    h, c : ndarrays of shape (N, H)
    """
    params = dict(zip(KEYS, (W_ih, W_hh, b_ih, b_hh)))
    h, c, _ = lstm_cell_forward(x_t, h_prev, c_prev, params)
    return h, c


def gru_cell_step(x_t: np.ndarray, h_prev: np.ndarray, W_ih: np.ndarray, W_hh: np.ndarray,
                  b_ih: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """One ``nn.GRUCell`` step from its four weight arrays (gates r, z, n).

    Parameters
    ----------
    x_t : (N, D); h_prev : (N, H)
    W_ih : (3H, D); W_hh : (3H, H); b_ih, b_hh : (3H,)

    Returns
    -------
    h : ndarray of shape (N, H)
    """
    params = dict(zip(KEYS, (W_ih, W_hh, b_ih, b_hh)))
    return gru_cell_forward(x_t, h_prev, params)[0]


def rnn_bptt(dout: np.ndarray, x: np.ndarray, hs: np.ndarray, W_ih: np.ndarray,
             W_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through time for the vanilla tanh RNN, from the forward pass's states.

    Parameters
    ----------
    dout : (T, N, H), the loss gradient with respect to every output h_1 .. h_T
    x : (T, N, D), the inputs
    hs : (T+1, N, H), hs[0] = h0 and hs[t+1] = the state after step t (``rnn_forward``'s)
    W_ih : (H, D); W_hh : (H, H)

    Returns
    -------
    dx : (T, N, D); dh0 : (N, H); dW_ih : (H, D); dW_hh : (H, H);
    db : (H,), the gradient of either bias (b_ih and b_hh get the same)
    """
    hs = np.asarray(hs)
    zeros = np.zeros(W_hh.shape[0], dtype=hs.dtype)
    params = dict(zip(KEYS, (W_ih, W_hh, zeros, zeros)))
    cache = RnnCache(np.asarray(x), hs, *_weights(params, hs.dtype)[:2], False)
    dx, dh0, grads = rnn_backward(dout, cache)
    return dx, dh0, grads["weight_ih_l0"], grads["weight_hh_l0"], grads["bias_ih_l0"]


def generate_tokens(next_logits, state, prompt_ids: Sequence[int], length: int, temperature: float = 1.0,
                    top_k: Optional[int] = None, rng: Optional[np.random.Generator] = None) -> list[int]:
    """Feed a prompt through a recurrent model, then sample ``length`` tokens, feeding each back.

    Parameters
    ----------
    next_logits : function ``(token, state) -> (logits (V,), new state)``: one step of the model
    state : the model's initial state (anything ``next_logits`` accepts)
    prompt_ids : sequence of at least one int token
    length : number of tokens to generate
    temperature : float > 0; top_k : int >= 1 or None
    rng : np.random.Generator, the only source of randomness (None: a fresh default_rng(0))

    Returns
    -------
    list of ``length`` ints: the generated tokens (without the prompt)
    """
    rng = np.random.default_rng(0) if rng is None else rng
    logits = None
    for token in prompt_ids:                       # the prompt sets up the state; its last logits predict
        logits, state = next_logits(int(token), state)
    out: list[int] = []
    for step in range(length):
        token = sample_next(logits, rng, temperature=temperature, top_k=top_k)
        out.append(token)
        if step < length - 1:
            logits, state = next_logits(token, state)
    return out
