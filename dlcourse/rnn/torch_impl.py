"""The PyTorch side of chapter 06: a character language model, a memory task, gradients over time.

:mod:`dlcourse.rnn.numpy_impl` builds the RNN, LSTM and GRU cells by hand in PyTorch's weight
layout; here PyTorch's fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` do the work:

* :class:`CharLM`: embedding -> recurrent layer(s) -> linear head, a next-character predictor;
* :func:`train_char_lm`: trains it on :func:`dlcourse.data.load_text_corpus` within a time
  budget (truncated BPTT over short windows), with Adam, gradient clipping by norm, a tqdm
  bar and a live-plot callback;
  :func:`evaluate_nats_per_char` scores held-out text, :func:`unigram_nats_per_char` is the
  baseline that knows only character frequencies, and :func:`sample` generates text;
* :func:`memory_task_study`: recall a symbol after ``lag`` steps of noise; the vanilla RNN
  fails beyond some lag where the LSTM and GRU still succeed;
* :func:`gradient_norms_over_time`: ``|| d loss_T / d h_t ||`` for every t, by autograd;
* :func:`scale_up`: the same language model, larger, on a GPU (CPU vs GPU characters/s).

Dimension letters: N batch (streams), T time steps, V vocabulary, E embedding width,
H hidden units, L layers, K symbols of the memory task.  Sequences are batch-first,
(N, T), as ``nn.LSTM(batch_first=True)``.  Losses are in nats per character (natural log;
divide by ln 2 = 0.693 for bits).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.runtime import configure_torch
from dlcourse.training.torch_impl import TrainHistory, TrainingBudget, _fork_rng, _model_device

configure_torch()

__all__ = ["RNN_KINDS", "CharLM", "CharLMHistory", "CHAR_LM", "train_char_lm", "evaluate_nats_per_char",
           "unigram_nats_per_char", "sample", "memory_task_batch", "MemoryStudy", "memory_task_study",
           "gradient_norms_over_time", "ScaleUpResult", "scale_up"]

RNN_KINDS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _rnn_layer(kind: str, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> nn.Module:
    if kind not in RNN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(RNN_KINDS)}, got {kind!r}")
    extra = {"nonlinearity": "tanh"} if kind == "rnn" else {}
    return RNN_KINDS[kind](input_size, hidden, num_layers=layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0, **extra)


def _detach(state):
    """Cut the graph behind a state (truncated BPTT): a tensor, or the LSTM's (h, c) pair."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


# --------------------------------------------------------------------------- the model

class CharLM(nn.Module):
    """A character language model: embedding -> RNN / LSTM / GRU -> linear head.

    At every position it outputs logits for the next character, from everything seen so far
    (the recurrent state).  The state can be passed back in, so a long text is read window
    by window without forgetting (what :func:`train_char_lm`, :func:`evaluate_nats_per_char`
    and :func:`sample` do).

    Parameters
    ----------
    vocab_size : V
    kind : ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh)
    hidden : H, the state's width
    embed : E, the width of each character's learned vector
    layers : L stacked recurrent layers (the second reads the first's outputs)
    dropout : between stacked layers (only when L > 1)

    Shape:
        forward(ids (N, T) int64, state) -> logits (N, T, V), state; the state is (L, N, H),
        or for the LSTM a pair (h, c) of two (L, N, H) tensors; None means zeros
    """

    def __init__(self, vocab_size: int, kind: str = "lstm", hidden: int = 256, embed: int = 64,
                 layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.kind, self.hidden, self.layers = kind, hidden, layers
        self.embedding = nn.Embedding(vocab_size, embed)
        self.rnn = _rnn_layer(kind, embed, hidden, layers, dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        x = self.embedding(ids)             # (N, T, E)
        out, state = self.rnn(x, state)     # (N, T, H); state (L, N, H) or a pair of them
        return self.head(out), state        # (N, T, V)


# --------------------------------------------------------------------------- evaluation and baseline

def _streams(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Cut ids (M,) into n equal contiguous streams (n, M // n), dropping the remainder."""
    length = len(ids) // n
    return ids[:n * length].view(n, length)   # (n, M // n): row i is ids[i*len : (i+1)*len]


@torch.no_grad()
def _evaluate(model: nn.Module, ids, batch_size: int = 32, seq_len: int = 256) -> tuple[float, float]:
    """(nats per character, next-character accuracy) of ``model`` on ``ids``; see evaluate_nats_per_char."""
    device = _model_device(model)
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    if len(ids) < 2:
        raise ValueError("need at least two characters to score a prediction")
    was_training = model.training
    model.eval()
    inputs, targets = ids[:-1], ids[1:]                   # predict ids[t + 1] from ids[: t + 1]
    n = max(1, min(batch_size, len(inputs) // seq_len))   # streams, each at least a window long
    length = len(inputs) // n
    pieces = [(_streams(inputs, n), _streams(targets, n))]
    if n * length < len(inputs):                          # the remainder: one more, short stream
        pieces.append((inputs[n * length:][None], targets[n * length:][None]))
    nats, correct = 0.0, 0
    for x_all, y_all in pieces:
        x_all, y_all = x_all.to(device), y_all.to(device)  # (n, length)
        state = None
        for begin in range(0, x_all.shape[1], seq_len):
            logits, state = model(x_all[:, begin:begin + seq_len], state)  # (n, T, V); the state carries on
            y = y_all[:, begin:begin + seq_len]                            # (n, T)
            nats += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    return nats / len(targets), correct / len(targets)


def evaluate_nats_per_char(model: nn.Module, ids, batch_size: int = 32, seq_len: int = 256) -> float:
    """Mean cross-entropy (nats per character) of ``model`` predicting each next character of ``ids``.

    Every character after the first is predicted once, from the text before it: ``ids`` is cut
    into ``batch_size`` contiguous streams (plus one short stream for the remainder) read in
    windows of ``seq_len`` with the state carried from window to window, so each prediction sees
    its whole stream so far (only the first characters of each stream see little context).
    Eval mode, no gradients; the model's train/eval mode is restored afterwards.

    Parameters
    ----------
    model : a :class:`CharLM` (or any module with the same ``forward(ids, state)``)
    ids : (M,) int ids, e.g. ``corpus.val``

    Returns
    -------
    float: the sum of ``-ln p(next character)`` over the M - 1 predictions, divided by M - 1
    """
    return _evaluate(model, ids, batch_size, seq_len)[0]


def unigram_nats_per_char(corpus) -> float:
    """The baseline that knows only how often each character occurs: nats/char on ``corpus.val``.

    Frequencies are counted on ``corpus.train`` with add-one (Laplace) smoothing,
    ``p(c) = (count(c) + 1) / (N_train + V)``, so a character unseen in training still gets a
    finite cost; the score is the mean of ``-ln p(c)`` over the validation characters.
    """
    counts = np.bincount(np.asarray(corpus.train), minlength=corpus.vocab_size)      # (V,)
    log_p = np.log(counts + 1.0) - np.log(counts.sum() + corpus.vocab_size)          # (V,)
    return float(-log_p[np.asarray(corpus.val)].mean())


# --------------------------------------------------------------------------- training

@dataclass
class CharLMHistory(TrainHistory):
    """Chapter 04's :class:`~dlcourse.training.torch_impl.TrainHistory`, one record per evaluation.

    ``train_loss`` / ``train_acc``: the mean loss (nats/char) and next-character accuracy of the
    training batches since the previous record (index 0: the untrained model on the first batch);
    ``val_loss`` / ``val_acc``: on the validation text (its first ``eval_chars``).  Also per record:
    ``times`` (seconds of training so far, evaluation excluded) and ``chars`` (characters trained
    on so far); ``chars_per_second`` is the training throughput.  ``updates`` counts optimizer steps.
    """

    times: list[float] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    final_val_loss: Optional[float] = None   # on the whole validation split, after training

    @property
    def chars_per_second(self) -> float:
        return self.chars[-1] / self.times[-1] if self.times and self.times[-1] > 0 else float("nan")


# The course's character model.  Measured on load_text_corpus() (Python 3.11.7), CPU, one thread:
# see train_char_lm's docstring.
CHAR_LM = dict(kind="lstm", hidden=256, embed=64, layers=1, batch_size=32, seq_len=32, lr=1e-2, streams=False)


def train_char_lm(corpus, *, kind: str = CHAR_LM["kind"], hidden: int = CHAR_LM["hidden"],
                  embed: int = CHAR_LM["embed"], layers: int = CHAR_LM["layers"], dropout: float = 0.0,
                  seconds: Optional[float] = 60.0, steps: Optional[int] = None,
                  batch_size: int = CHAR_LM["batch_size"], seq_len: int = CHAR_LM["seq_len"],
                  lr: float = CHAR_LM["lr"], schedule: Optional[str] = "cosine", warmup: float = 0.02,
                  clip: Optional[float] = 1.0, streams: bool = CHAR_LM["streams"], seed: int = 0,
                  device: Optional[str] = None, model: Optional[CharLM] = None, eval_every: Optional[float] = None,
                  eval_chars: Optional[int] = 20_000, progress: bool = True,
                  callback: Optional[Callable[[CharLMHistory], None]] = None) -> tuple[CharLM, CharLMHistory]:
    """Train a :class:`CharLM` on ``corpus.train`` for ``seconds`` (or ``steps``), Adam + clipping.

    Truncated backpropagation through time.  By default (``streams=False``) every step reads
    ``batch_size`` windows of ``seq_len + 1`` characters from random places in the training
    text, each from a zero state, and learns to predict characters 1..T from 0..T-1: gradients
    flow back at most ``seq_len`` steps.  ``streams=True`` instead cuts the text into
    ``batch_size`` contiguous streams and reads them window after window, each window starting
    from the state the previous one ended in (detached: the state carries on, the graph does
    not); at the end of the streams they start again at a new random offset.  Measured at
    equal time (30 s, the defaults otherwise), random windows reached 1.19 nats/char and
    streams 1.27: the windows of one stream step follow each other, so consecutive batches are
    alike, while random windows give every step fresh, independent text.  At evaluation the
    state is always carried (:func:`evaluate_nats_per_char`), and a model trained on
    32-character windows uses the longer context: measured on the 30-s model (seed 0), 1.197
    nats/char with the state carried through the validation text, 1.200 / 1.217 / 1.286 when
    it is reset every 512 / 128 / 32 characters.

    Parameters
    ----------
    corpus : a :class:`dlcourse.data.TextCorpus` (``load_text_corpus()``)
    kind, hidden, embed, layers, dropout : the :class:`CharLM` (ignored when ``model`` is given)
    seconds : the time budget for the training steps (evaluation and the callback not counted)
    steps : train exactly this many steps instead (then ``seconds`` is ignored; runs with equal
        ``seed`` are then equal on one device, which a time budget cannot promise)
    batch_size, seq_len : N streams, T characters per window
    lr : Adam's peak learning rate; ``schedule="cosine"`` warms up linearly over the first
        ``warmup`` share of the budget, then falls to 0 along half a cosine (over the time
        budget, or the steps); None: constant
    clip : ``clip_grad_norm_`` on all gradients together (None: no clipping)
    seed : the model's initial weights and the stream offsets
    device : default ``dlcourse.device()`` (or the given model's)
    eval_every : seconds of training (or steps, with ``steps``) between evaluations; default a
        tenth of the budget
    eval_chars : evaluate on the first this many validation characters during training (None:
        all); the whole validation split is always scored at the end (``history.final_val_loss``)
    progress : a tqdm bar; callback : called with the history after every evaluation (e.g.
        ``LiveLossPlot``), its time not counted

    Returns
    -------
    model : the trained :class:`CharLM`, in eval mode
    history : :class:`CharLMHistory`

    Measured on ``load_text_corpus()`` (Python 3.11.7, sha256 4118e5d6...), CPU, one thread
    (the course's setting; 2-core machine shared with other jobs, 35-42k characters/s), the
    defaults (LSTM, H 256, E 64, 32 windows of 32, Adam 1e-2, cosine, clip 1), whole validation
    split; unigram baseline 3.056:

    ==========  ==========================================  ==========================
    budget      seed 0                                      seed 1
    ==========  ==========================================  ==========================
    20 s        1.293                                       1.294
    30 s        1.195                                       1.206
    60 s        1.141 (curve at 10/20/30/45 s: 1.450,       1.120 (1.422, 1.287,
                1.350, 1.258, 1.164)                        1.213, 1.139)
    ==========  ==========================================  ==========================

    The text differs between Python versions, and so does the result (the same code and
    defaults, seed 0, on the standard library of other interpreters, same machine):
    Python 3.12.1 (sha256 4cccdf9b..., unigram 3.184) 1.358 in 30 s, 1.288 in 60 s;
    Python 3.13.0 (sha256 590e42cf..., unigram 3.126) 1.323 in 30 s, 1.228 in 60 s.

    Tuning (seed 0, 30 s, random windows unless said): windows of 64 reached 1.24; 64 windows
    per step 1.26; lr 6e-3 1.24; H 192 1.20 (64k characters/s); the whole 3.7M-character
    standard library (``max_chars=None``, other validation text) 1.37.  With streams: windows
    of 32 1.27, of 64 1.35, of 128 1.72 (lr 4e-3; fewer, slower steps); H 384 1.40.
    """
    from dlcourse.runtime import device as best_device
    from dlcourse.optim.numpy_impl import _progress  # noqa: F401  (same tqdm style as chapters 03-05)
    if device is None:
        device = str(_model_device(model)) if model is not None else best_device()
    if steps is None and seconds is None:
        raise ValueError("give a time budget (seconds) or a number of steps")
    data = torch.as_tensor(np.asarray(corpus.train), dtype=torch.long)
    val = np.asarray(corpus.val)[:eval_chars] if eval_chars else np.asarray(corpus.val)
    if len(data) < batch_size * (seq_len + 1) + 1:
        raise ValueError(f"{len(data):,} training characters are too few for {batch_size} streams of "
                         f"windows of {seq_len}")
    rng = np.random.default_rng(seed)
    history = CharLMHistory()

    with _fork_rng(device):
        torch.manual_seed(seed)
        if model is None:
            model = CharLM(corpus.vocab_size, kind, hidden, embed, layers, dropout)
        model = model.to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    budget = TrainingBudget(steps, seconds if steps is None else None, eval_every,  # steps win if both are given
                            device=device, progress=progress, desc=f"train_char_lm {model.kind}-{model.hidden}")

    def rate(progress_made: float) -> float:
        if schedule is None:
            return lr
        if schedule != "cosine":
            raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
        if progress_made < warmup:
            return lr * max(progress_made / warmup, 0.02)
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress_made - warmup) / (1 - warmup))))

    def new_epoch():
        """Streams (N, S + 1) from a random offset: a different cut of the text each epoch."""
        offset = int(rng.integers(0, seq_len))
        length = (len(data) - offset - 1) // batch_size
        return data[offset:offset + batch_size * length + 1], length

    def batch_at(source, length, begin):
        rows = torch.arange(batch_size)[:, None] * length + begin + torch.arange(seq_len + 1)[None]  # (N, T + 1)
        return source[rows].to(device)

    def random_windows():
        starts = torch.from_numpy(rng.integers(0, len(data) - seq_len - 1, batch_size))
        return data[starts[:, None] + torch.arange(seq_len + 1)[None]].to(device)             # (N, T + 1)

    sum_loss, sum_acc, count, chars = 0.0, 0.0, 0, 0

    def record():
        nonlocal sum_loss, sum_acc, count
        if count:
            history.train_loss.append(sum_loss / count)
            history.train_acc.append(sum_acc / count)
        else:  # before training: the untrained model on one batch
            loss, acc = _evaluate(model, data[:batch_size * seq_len])
            history.train_loss.append(loss)
            history.train_acc.append(acc)
        sum_loss, sum_acc, count = 0.0, 0.0, 0
        loss, acc = _evaluate(model, val)
        history.val_loss.append(loss)
        history.val_acc.append(acc)
        history.updates.append(budget.updates)
        history.times.append(budget.trained)
        history.chars.append(chars)
        if history.val_loss[-1] < history.val_loss[history.best_epoch]:
            history.best_epoch = len(history.val_loss) - 1

    record()
    source, length = new_epoch()
    begin, state = 0, None
    while budget.running():
        with budget.step():
            for group in opt.param_groups:
                group["lr"] = rate(budget.fraction)
            if streams:
                if begin + seq_len > length:                # the streams ran out: a new epoch
                    source, length = new_epoch()
                    begin, state = 0, None
                xy = batch_at(source, length, begin)        # (N, T + 1)
                begin += seq_len
            else:
                xy, state = random_windows(), None
            x, y = xy[:, :-1], xy[:, 1:]                    # (N, T) inputs and next characters
            logits, state = model(x, state)                 # (N, T, V)
            state = _detach(state)                          # carry the state, not the graph
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sum_loss += float(loss.detach())                # float() waits for the device
            sum_acc += float((logits.argmax(-1) == y).float().mean())
            count += 1
            chars += x.numel()
        if budget.eval_due():
            record()
            budget.postfix(train=f"{history.train_loss[-1]:.3f}", val=f"{history.val_loss[-1]:.3f}")
            if callback is not None:
                callback(history)
            model.train()
    budget.close()
    history.seconds = budget.trained
    history.final_val_loss = evaluate_nats_per_char(model, corpus.val)
    model.eval()
    return model, history


# --------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample(model: CharLM, corpus, prompt: str = "def ", length: int = 200, temperature: float = 1.0,
           top_k: Optional[int] = None, seed: int = 0) -> str:
    """Generate ``length`` characters after ``prompt``, one at a time, feeding each back in.

    The prompt is read in one pass (its final state and the logits for the next character);
    then each step divides the logits by ``temperature`` (below 1: sharper, more likely
    characters; above 1: flatter, more surprising; 0: always the most likely one, greedy),
    keeps only the ``top_k`` largest if given, samples from the softmax and feeds the character in.

    Returns
    -------
    str: the prompt followed by the ``length`` generated characters (deterministic per ``seed``)
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)                 # on the CPU: equal text on any device
    ids = corpus.encode(prompt) if prompt else np.zeros(1, dtype=np.int64)  # an empty prompt starts at "\n"
    logits, state = model(torch.as_tensor(ids, device=device)[None], None)   # (1, T_prompt, V)
    logits = logits[0, -1].float().cpu()                                     # (V,)
    out = []
    for _ in range(length):
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            scaled = logits / temperature                                    # (V,)
            if top_k is not None and top_k < len(scaled):
                kth = torch.topk(scaled, top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, -math.inf)
            nxt = int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]], device=device), state)   # (1, 1, V)
        logits = logits[0, -1].float().cpu()
    model.train(was_training)
    return prompt + corpus.decode(out)


# --------------------------------------------------------------------------- the memory task

def memory_task_batch(n: int, lag: int, symbols: int = 8, noise: int = 4, rng: Optional[np.random.Generator] = None):
    """A batch of the recall task: remember the first symbol for ``lag`` steps of noise.

    Input ids: step 0 shows a symbol in ``0..K-1`` (K = ``symbols``); steps 1..lag show random
    noise ids in ``K..K+noise-1``; the last step shows the query id ``K + noise``.  The answer
    (read at the last step only) is the symbol of step 0.  Chance is 1 / K.

    Returns
    -------
    x : (n, lag + 2) int64 ids in ``0..K+noise``;  y : (n,) int64 answers in ``0..K-1``
    """
    rng = np.random.default_rng() if rng is None else rng
    y = rng.integers(0, symbols, n)                                            # (n,)
    x = np.empty((n, lag + 2), dtype=np.int64)
    x[:, 0] = y
    x[:, 1:lag + 1] = rng.integers(symbols, symbols + noise, (n, lag))         # distractors
    x[:, lag + 1] = symbols + noise                                            # "now answer"
    return x, y


class _Recall(nn.Module):
    """Embedding -> one recurrent layer -> a linear read-out of the last state (K answers)."""

    def __init__(self, kind: str, vocab: int, symbols: int, hidden: int, forget_bias: float = 1.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.rnn = _rnn_layer(kind, hidden, hidden)
        self.head = nn.Linear(hidden, symbols)
        if kind == "lstm":  # gates i, f, g, o: rows H..2H are the forget gate's
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden:2 * hidden] = forget_bias
                self.rnn.bias_hh_l0[hidden:2 * hidden] = 0.0

    def forward(self, ids):
        out, _ = self.rnn(self.embedding(ids))   # (N, T, H)
        return self.head(out[:, -1])             # (N, K): only the last step answers


@dataclass
class MemoryStudy:
    """What :func:`memory_task_study` measured: ``accuracy[kind]`` (len(lags),) on fresh sequences."""
    lags: tuple
    kinds: tuple
    accuracy: dict
    chance: float
    seconds: float
    steps: int

    def table(self) -> str:
        lines = ["lag   " + "".join(f"{k:>8}" for k in self.kinds)]
        for i, lag in enumerate(self.lags):
            lines.append(f"{lag:<6}" + "".join(f"{self.accuracy[k][i]:8.1%}" for k in self.kinds))
        return "\n".join(lines)

    def fails_at(self, kind: str, threshold: float = 0.9) -> Optional[int]:
        """The smallest lag at which ``kind`` stays below ``threshold`` accuracy (None: never)."""
        for lag, acc in zip(self.lags, self.accuracy[kind]):
            if acc < threshold:
                return lag
        return None


def memory_task_study(lags: Sequence[int] = (2, 5, 8, 10, 15, 20), kinds: Sequence[str] = ("rnn", "lstm", "gru"),
                      steps: int = 200, hidden: int = 32, batch_size: int = 64, lr: float = 1e-2,
                      symbols: int = 8, noise: int = 4, n_test: int = 1000, forget_bias: float = 1.0,
                      seed: int = 0, device: Optional[str] = "cpu", progress: bool = False) -> MemoryStudy:
    """Accuracy on the recall task (:func:`memory_task_batch`) against the lag, for each kind of cell.

    For each kind and lag a new model (embedding -> one recurrent layer of ``hidden`` -> linear
    read-out) is trained for ``steps`` Adam steps on fresh random batches (clipping at norm 1),
    then scored on ``n_test`` fresh sequences.  All kinds see the same batches and the same steps.
    The LSTM's forget-gate bias starts at ``forget_bias`` (1: the gate starts mostly open, so
    the cell state is kept by default; Gers et al. 2000, Jozefowicz et al. 2015); with PyTorch's
    default (near 0, the gate half open) the LSTM failed already at lag 10 within 200 steps.

    Measured (CPU, one thread, the defaults: 9-10 s per seed), accuracy, chance 12.5 %:

    ====  ==========================  ==========================  =====
    lag   rnn (seeds 0, 1, 2)         lstm (seeds 0, 1, 2)        gru
    ====  ==========================  ==========================  =====
    5     100, 100, 100 %             100, 100, 100 %             100 %
    8     27, 25, 62 %                100, 100, 100 %             100 %
    10    12, 14, 23 %                100, 100, 100 %             100 %
    15    39, 10, 12 %                63, 100, 100 %              100 %
    20    13, 14, 13 %                100, 28, 12 %               100 %
    ====  ==========================  ==========================  =====

    The vanilla RNN fails from lag 8 on; the LSTM solves lag 10 on every seed (15 and 20 on
    some: 200 steps are a tight budget), the GRU every lag up to 20 (and 30 on seeds 1-2).
    """
    device = device or "cpu"
    lags, kinds = tuple(int(v) for v in lags), tuple(kinds)
    accuracy = {k: np.zeros(len(lags)) for k in kinds}
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(lags) * len(kinds), desc="memory task")
    for i, lag in enumerate(lags):
        test_x, test_y = memory_task_batch(n_test, lag, symbols, noise, np.random.default_rng(10_000 + seed))
        test_x, test_y = torch.as_tensor(test_x, device=device), torch.as_tensor(test_y, device=device)
        for kind in kinds:
            with _fork_rng(device):
                torch.manual_seed(seed)
                model = _Recall(kind, symbols + noise + 1, symbols, hidden, forget_bias).to(device)
                opt = torch.optim.Adam(model.parameters(), lr=lr)
                rng = np.random.default_rng(seed)
                for _ in range(steps):
                    x, y = memory_task_batch(batch_size, lag, symbols, noise, rng)
                    loss = F.cross_entropy(model(torch.as_tensor(x, device=device)), torch.as_tensor(y, device=device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                with torch.no_grad():
                    accuracy[kind][i] = float((model(test_x).argmax(-1) == test_y).float().mean())
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return MemoryStudy(lags, kinds, accuracy, 1.0 / symbols, time.perf_counter() - start, steps)


# --------------------------------------------------------------------------- gradients over time

def gradient_norms_over_time(kind: str = "lstm", T: int = 50, *, model: Optional[nn.Module] = None, ids=None,
                             hidden: int = 64, input_size: int = 16, seed: int = 0,
                             device: Optional[str] = "cpu") -> np.ndarray:
    """``|| d loss / d h_t ||`` for t = 0..T-1, where the loss is read at the last step only.

    How much of the last step's error signal reaches each earlier state: through a vanilla
    RNN it shrinks (or grows) geometrically with the distance T - 1 - t; through the LSTM's
    cell state it fades much more slowly.

    The recurrent layer is run one step at a time, passing the state on, so each ``h_t`` is a
    tensor autograd can report the gradient of (``retain_grad``); for the LSTM, ``h_t`` is the
    hidden output (the cell state's own path is part of what carries the gradient back).

    * ``model=None``: a new untrained ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``kind``, ``hidden``,
      ``input_size``; seeded), fed standard normal inputs (1, T, D); the loss is the
      cross-entropy of a random linear read-out of ``h_{T-1}`` against class 0.
    * ``model`` a :class:`CharLM` (trained or not) and ``ids`` (T + 1,) character ids: the
      loss is the cross-entropy of its prediction of ``ids[T]`` after reading ``ids[:T]``.

    Returns
    -------
    (T,) float64 array of gradient norms
    """
    with _fork_rng(device or "cpu"):
        torch.manual_seed(seed)
        if model is None:
            rnn = _rnn_layer(kind, input_size, hidden).to(device)
            x = torch.randn(1, T, input_size, device=device)                   # (1, T, D)
            head = nn.Linear(hidden, 10).to(device)
            target = torch.zeros(1, dtype=torch.long, device=device)
        else:
            if ids is None:
                raise ValueError("give the character ids (T + 1,) to read with the CharLM")
            ids = torch.as_tensor(np.asarray(ids), dtype=torch.long, device=_model_device(model))
            T = len(ids) - 1
            rnn, head = model.rnn, model.head
            x = model.embedding(ids[:T])[None].detach()                        # (1, T, E)
            target = ids[T:T + 1]
        state, hs = None, []
        for t in range(T):
            _, state = rnn(x[:, t:t + 1], state)                              # one step
            h = state[0] if isinstance(state, tuple) else state               # (L, 1, H)
            h.retain_grad()
            hs.append(h)
        loss = F.cross_entropy(head(hs[-1][-1]), target)                  # read h_{T-1} of the last layer
        params = list(rnn.parameters()) + list(head.parameters())
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:  # leave no gradients behind on a caller's model
            p.grad = None
    return np.array([float(h.grad[-1].norm()) for h in hs])


# --------------------------------------------------------------------------- scaling up on a GPU

@dataclass
class ScaleUpResult:
    """What :func:`scale_up` measured (training steps only, no evaluation)."""
    device: str
    model: str
    cpu_chars_per_second: Optional[float]
    device_chars_per_second: float
    val_nats_per_char: float
    seconds: float
    history: CharLMHistory = field(repr=False, default=None)

    @property
    def speedup(self) -> Optional[float]:
        if self.cpu_chars_per_second is None:
            return None
        return self.device_chars_per_second / self.cpu_chars_per_second


def _cpu_chars_per_second(model: CharLM, batch_size: int, seq_len: int, steps: int, vocab_size: int) -> float:
    import copy
    model = copy.deepcopy(model).cpu().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab_size, (batch_size, seq_len + 1))
    seconds = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        logits, _ = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds.append(time.perf_counter() - t0)
    return batch_size * seq_len / float(np.median(seconds[1:]))


def scale_up(corpus=None, *, kind: str = "lstm", hidden: int = 1024, embed: int = 128, layers: int = 2,
             dropout: float = 0.1, seconds: float = 60.0, batch_size: int = 128, seq_len: int = 256,
             lr: float = 2e-3, cpu_steps: int = 2, seed: int = 0, device: Optional[str] = None,
             run_on_cpu: bool = False, progress: bool = False) -> Optional[ScaleUpResult]:
    """The character model, larger, trained on the GPU; prints CPU vs GPU characters per second.

    Without a GPU this does nothing (it prints why and returns None) unless ``run_on_cpu``.
    The CPU rate is the median of ``cpu_steps`` timed steps (after a warm-up step) at the course's
    thread setting; the GPU run is :func:`train_char_lm` for ``seconds`` (cuDNN's fused LSTM).

    Returns
    -------
    ScaleUpResult, or None when skipped
    """
    from dlcourse.data import load_text_corpus
    from dlcourse.runtime import scale_up_device
    device = scale_up_device(device, run_on_cpu)
    if device is None:
        return None
    corpus = load_text_corpus() if corpus is None else corpus
    with _fork_rng("cpu"):
        torch.manual_seed(seed)
        model = CharLM(corpus.vocab_size, kind, hidden, embed, layers, dropout)
    name = f"{kind.upper()} {layers} x {hidden}, {sum(p.numel() for p in model.parameters()):,} parameters"
    print(f"{name}; batch {batch_size} x {seq_len} characters")
    cpu_rate = None
    if cpu_steps > 0:
        cpu_rate = _cpu_chars_per_second(model, batch_size, seq_len, cpu_steps, corpus.vocab_size)
        print(f"  cpu ({torch.get_num_threads()} thread(s)): {cpu_rate:12,.0f} characters/s")
    model, history = train_char_lm(corpus, model=model, seconds=seconds, batch_size=batch_size, seq_len=seq_len,
                                   lr=lr, seed=seed, device=device, progress=progress)
    rate = history.chars_per_second
    print(f"  {device}: {rate:12,.0f} characters/s over {history.seconds:.0f} s of training "
          f"({history.chars[-1]:,} characters); validation {history.final_val_loss:.3f} nats/char")
    result = ScaleUpResult(str(device), name, cpu_rate, rate, history.final_val_loss, history.seconds, history)
    if result.speedup is not None:
        print(f"  {device} is {result.speedup:.0f}x faster than the CPU")
    return result
