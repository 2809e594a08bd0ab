"""Pictures and widgets for chapter 06: what a recurrent network's state and gates do over a text.

* :func:`gate_activations`: run a trained PyTorch :class:`~dlcourse.rnn.torch_impl.CharLM`'s
  first recurrent layer through the course's NumPy cells (its weights copied out), keeping every
  gate at every step: LSTM i, f, g, o, c, h; GRU r, z, n, h; RNN h.  The NumPy twin is what
  reads the trained model, so the picture is exactly what torch computes (a test checks it).
* :class:`GateExplorer` (made by :func:`gate_explorer`): type a text; see the hidden state and
  each gate as heat maps (units x characters), a block of units at a time.
* :class:`SampleExplorer` (made by :func:`sample_explorer`): a prompt, a temperature, top-k and
  a seed; see the next-character distribution after the prompt and a sampled continuation.
* :func:`plot_gradient_norms`, :func:`plot_memory_study`: the chapter's static plots.

The widgets draw a matplotlib ``Figure`` (outside pyplot) into an ``ipywidgets.Image`` as PNG,
as chapters 03-05 do.

Dimension letters: T characters (time steps), H hidden units, E embedding width, V vocabulary.
"""
from __future__ import annotations

import textwrap
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from dlcourse.optim.explore import figure_png

__all__ = ["GATE_NAMES", "gate_activations", "GateExplorer", "gate_explorer", "next_char_distribution",
           "SampleExplorer", "sample_explorer", "plot_gradient_norms", "plot_memory_study"]

#: What :func:`gate_activations` returns for each kind, in PyTorch's gate order, then the states.
GATE_NAMES = {
    "lstm": ("i (input gate)", "f (forget gate)", "g (candidate)", "o (output gate)", "c (cell state)",
             "h (hidden state)"),
    "gru": ("r (reset gate)", "z (update gate)", "n (candidate)", "h (hidden state)"),
    "rnn": ("h (hidden state)",),
}


def _first_layer(model) -> tuple[str, dict, np.ndarray]:
    """(kind, layer-0 params as float64 NumPy, embedding (V, E)) of a CharLM."""
    from dlcourse.rnn.numpy_impl import params_from_torch
    return model.kind, params_from_torch(model.rnn), model.embedding.weight.detach().cpu().double().numpy()


def gate_activations(model, corpus, text: str) -> dict[str, np.ndarray]:
    """Every gate and state of the first recurrent layer of ``model`` at every character of ``text``.

    Reads ``text`` from a zero state with the course's NumPy cells and the model's own weights.

    Returns
    -------
    dict ``{name: (T, H) array}`` with the names of :data:`GATE_NAMES` for ``model.kind``
    (gates after their nonlinearities, in [0, 1] for the sigmoids, [-1, 1] for the tanh parts).
    """
    from dlcourse.rnn import numpy_impl as rn
    if not text:
        raise ValueError("type at least one character")
    kind, params, table = _first_layer(model)
    x = table[corpus.encode(text)][:, None, :]                   # (T, 1, E): a batch of one
    T, H = x.shape[0], params["weight_hh_l0"].shape[1]
    h = np.zeros((1, H))
    c = np.zeros((1, H))
    rows = {name: np.zeros((T, H)) for name in GATE_NAMES[kind]}
    names = GATE_NAMES[kind]
    for t in range(T):
        if kind == "lstm":
            h, c, cache = rn.lstm_cell_forward(x[t], h, c, params)
            values = (cache.i, cache.f, cache.g, cache.o, c, h)
        elif kind == "gru":
            h, cache = rn.gru_cell_forward(x[t], h, params)
            values = (cache.r, cache.z, cache.n, h)
        else:
            h, _ = rn.rnn_cell_forward(x[t], h, params)
            values = (h,)
        for name, value in zip(names, values):
            rows[name][t] = value[0]
    return rows


def _show_char(ch: str) -> str:
    return {"\n": "⏎", " ": "·", "\t": "⇥"}.get(ch, ch)


class GateExplorer:
    """The widget: a text box, which block of hidden units, how many; heat maps of every gate.

    Attributes
    ----------
    text : ``ipywidgets.Text``; first, count : sliders (first unit shown, number of units)
    order : dropdown, units in index order or the most active first (largest variance over the text)
    activations : the last :func:`gate_activations`; fig, image : the Figure and ``ipywidgets.Image``
    widget : the whole thing, an ``ipywidgets.VBox``
    """

    def __init__(self, model, corpus, text: str = "def __init__(self, name):\n    self.name = name\n"):
        import ipywidgets as w
        self.model, self.corpus = model, corpus
        H = model.hidden
        style = {"description_width": "110px"}
        self.text = w.Textarea(value=text, description="text", rows=4, style=style,
                               layout=w.Layout(width="600px"), continuous_update=False)
        self.first = w.IntSlider(value=0, min=0, max=H - 1, description="first unit", style=style,
                                 layout=w.Layout(width="340px"), continuous_update=False)
        self.count = w.IntSlider(value=min(16, H), min=1, max=min(64, H), description="units shown", style=style,
                                 layout=w.Layout(width="340px"), continuous_update=False)
        self.order = w.Dropdown(options=["most active first", "by index"], value="most active first",
                                description="units", style=style, layout=w.Layout(width="340px"))
        self.readout = w.HTML(layout=w.Layout(width="360px"))
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1100px"))
        self.fig = Figure(figsize=(11, 7), layout="constrained")
        self.updates = 0
        self.widget = w.VBox([self.text, w.HBox([w.VBox([self.first, self.count, self.order]), self.readout]),
                              self.image])
        for control in (self.text, self.first, self.count, self.order):
            control.observe(self.update, names="value")
        self.update()

    def units(self) -> np.ndarray:
        """The indices of the hidden units shown, in the order drawn."""
        H = self.model.hidden
        if self.order.value == "by index":
            ranked = np.arange(H)
        else:   # the units whose hidden state changes most over this text
            ranked = np.argsort(-self.activations["h (hidden state)"].var(axis=0), kind="stable")
        return ranked[self.first.value:self.first.value + self.count.value]

    def update(self, change=None) -> None:
        """Recompute the activations for the text and redraw."""
        text = self.text.value or " "
        self.activations = gate_activations(self.model, self.corpus, text)
        shown = self.units()
        self.readout.value = (f"{self.model.kind.upper()}, H = {self.model.hidden}: units "
                              f"{', '.join(map(str, shown[:8]))}{' ...' if len(shown) > 8 else ''} "
                              f"over {len(text)} characters")
        self._draw(text, shown)
        self.updates += 1

    def _draw(self, text: str, shown: np.ndarray) -> None:
        self.fig.clear()
        names = list(self.activations)
        axes = np.atleast_1d(self.fig.subplots(len(names), 1, sharex=True))
        labels = [_show_char(ch) for ch in text]
        for ax, name in zip(axes, names):
            values = self.activations[name][:, shown].T                  # (units, T)
            signed = name.startswith(("g", "n", "c", "h"))
            limit = max(np.abs(values).max(), 1e-9) if name.startswith("c") else 1.0
            ax.imshow(values, aspect="auto", interpolation="nearest", cmap="RdBu_r" if signed else "viridis",
                      vmin=-limit if signed else 0.0, vmax=limit)
            ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
            ax.set_yticks([])
        axes[-1].set_xticks(range(len(labels)), labels, fontsize=7 if len(labels) < 80 else 5)
        self.fig.suptitle(f"{len(shown)} hidden units (rows) reading the text (columns); "
                          "sigmoid gates 0 → 1 (viridis), tanh parts −1 → 1 (red/blue)", fontsize=9)
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def gate_explorer(model, corpus, text: Optional[str] = None) -> GateExplorer:
    """Build the gate explorer for a trained CharLM; display it as a cell's last expression."""
    return GateExplorer(model, corpus) if text is None else GateExplorer(model, corpus, text)


def next_char_distribution(model, corpus, prompt: str, temperature: float = 1.0,
                           top_k: Optional[int] = None) -> np.ndarray:
    """The probabilities (V,) the model gives the character after ``prompt``, after temperature and top-k.

    ``temperature`` 0 puts all the mass on the most likely character (greedy).
    """
    import torch
    device = next(model.parameters()).device
    ids = corpus.encode(prompt or "\n")
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids, device=device)[None])
    logits = logits[0, -1].double().cpu().numpy()                        # (V,)
    if temperature == 0:
        p = np.zeros_like(logits)
        p[np.argmax(logits)] = 1.0
        return p
    scaled = logits / temperature
    if top_k:
        kth = np.sort(scaled)[-top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    scaled = scaled - scaled.max()
    p = np.exp(scaled)
    return p / p.sum()


class SampleExplorer:
    """The widget: prompt, temperature, top-k and seed; the next-character distribution and a sample.

    Attributes
    ----------
    prompt : ``ipywidgets.Text``; temperature, top_k, seed, length : sliders (top-k 0 = off)
    text : the last generated text (prompt included), drawn under the bars; probabilities : the last
    distribution (V,)
    fig, image : the Figure and ``ipywidgets.Image``; widget : the whole thing, an ``ipywidgets.VBox``
    """

    def __init__(self, model, corpus, prompt: str = "def ", temperature: float = 0.8, length: int = 200):
        import ipywidgets as w
        self.model, self.corpus = model, corpus
        style = {"description_width": "110px"}
        V = len(corpus.vocab)
        self.prompt = w.Text(value=prompt, description="prompt", style=style, layout=w.Layout(width="500px"),
                             continuous_update=False)
        self.temperature = w.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                         style=style, layout=w.Layout(width="340px"), continuous_update=False)
        self.top_k = w.IntSlider(value=0, min=0, max=min(V, 40), description="top-k (0 = off)", style=style,
                                 layout=w.Layout(width="340px"), continuous_update=False)
        self.seed = w.IntSlider(value=0, min=0, max=20, description="seed", style=style,
                                layout=w.Layout(width="340px"), continuous_update=False)
        self.length = length
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1000px"))
        self.fig = Figure(figsize=(10, 4.6), layout="constrained")
        self.updates = 0
        self.widget = w.VBox([self.prompt, w.HBox([w.VBox([self.temperature, self.top_k, self.seed])]),
                              self.image])
        for control in (self.prompt, self.temperature, self.top_k, self.seed):
            control.observe(self.update, names="value")
        self.update()

    def update(self, change=None) -> None:
        """Recompute the distribution and the sample; redraw."""
        from dlcourse.rnn.torch_impl import sample
        top_k = self.top_k.value or None
        self.probabilities = next_char_distribution(self.model, self.corpus, self.prompt.value,
                                                    self.temperature.value, top_k)
        text = sample(self.model, self.corpus, self.prompt.value, self.length, self.temperature.value, top_k,
                      seed=self.seed.value)
        self.text = text
        self._draw()
        self.updates += 1

    def _draw(self) -> None:
        self.fig.clear()
        ax, ax_text = self.fig.subplots(2, 1, height_ratios=(1, 1.3))
        p = self.probabilities
        top = np.argsort(-p, kind="stable")[:30]
        ax.bar(range(len(top)), p[top], color="tab:blue")
        ax.set_xticks(range(len(top)), [repr(self.corpus.vocab[i])[1:-1] or "?" for i in top], fontsize=8)
        ax.set(ylim=(0, 1), ylabel="probability")
        k = self.top_k.value
        ax.set_title(f"the next character after the prompt: temperature {self.temperature.value:.2f}"
                     f"{f', top-{k}' if k else ''} (the 30 most likely)", fontsize=10)
        ax_text.axis("off")
        ax_text.set_title(f"a sample of {self.length} characters (seed {self.seed.value}), the prompt first",
                          fontsize=10, loc="left")
        lines = [piece for line in self.text.replace("\t", "    ").split("\n")
                 for piece in (textwrap.wrap(line, 110, drop_whitespace=False) or [""])][:14]
        ax_text.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8,
                     va="top", ha="left", transform=ax_text.transAxes)
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def sample_explorer(model, corpus, prompt: str = "def ", temperature: float = 0.8) -> SampleExplorer:
    """Build the sampling explorer for a trained CharLM; display it as a cell's last expression."""
    return SampleExplorer(model, corpus, prompt, temperature)


# --------------------------------------------------------------------------- static plots

def plot_gradient_norms(norms: dict, title: str = "how far back does the gradient reach?"):
    """``norms``: ``{label: (T,) array of ||d loss / d h_t||}``, loss on the last step; a log-scale plot."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.8, 3.6))
    for label, values in norms.items():
        values = np.asarray(values, dtype=np.float64)
        steps_back = np.arange(len(values))[::-1]                      # t = T-1 is 0 steps back
        ax.semilogy(steps_back, np.maximum(values, 1e-300), label=label)
    ax.set(xlabel="steps back from the loss (T - 1 - t)", ylabel="‖∂ loss / ∂ h_t‖", title=title)
    ax.legend(fontsize=8)
    return fig


def plot_memory_study(study, title: str = "remembering one symbol for `lag` steps"):
    """Accuracy against lag, one line per kind, from a ``MemoryStudy``."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for kind, acc in study.accuracy.items():
        ax.plot(study.lags, acc, "o-", label=kind.upper())
    chance = getattr(study, "chance", None)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set(xlabel="lag (steps between the symbol and the question)", ylabel="held-out accuracy", ylim=(0, 1.05),
           title=title)
    ax.set_xticks(list(study.lags))
    ax.legend()
    return fig
