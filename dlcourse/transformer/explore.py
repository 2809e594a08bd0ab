"""Pictures and widgets for chapter 07: what a trained Transformer's attention looks at.

* :func:`plot_attention_grid`: every layer's and head's attention weights for one input, as a
  grid of heat maps (queries down, keys across).
* :class:`AttentionExplorer` (made by :func:`attention_explorer`): choose a trained model (the
  reversal or the addition GPT, or the character GPT), type an input or pick a held-out
  example, choose a layer and a head; see that head's attention map over the input and what the
  model writes.
* :func:`plot_scale_study`: chapter 07's "why 1/sqrt(hs)" plot.

The weights come from :func:`dlcourse.transformer.torch_impl.attention_maps` (the model's
manual attention path, equal to the fused kernel's output; a test checks it).  The widget draws
a matplotlib ``Figure`` (outside pyplot) into an ``ipywidgets.Image`` as PNG, as chapters 03-06
do.

Dimension letters: T tokens, L layers, nh heads.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from dlcourse.optim.explore import figure_png

__all__ = ["token_labels", "plot_attention_grid", "model_reading", "AttentionExplorer", "attention_explorer",
           "plot_scale_study"]


def token_labels(text: str) -> list[str]:
    """One printable label per character (newline, space and tab made visible)."""
    return [{"\n": "⏎", " ": "·", "\t": "⇥"}.get(ch, ch) for ch in text]


def _heatmap(ax, weights: np.ndarray, labels: Sequence[str], title: str = "", fontsize: int = 8) -> None:
    ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    T = len(labels)
    ax.set_xticks(range(T), labels, fontsize=fontsize)
    ax.set_yticks(range(T), labels, fontsize=fontsize)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=9)


def plot_attention_grid(maps, labels: Sequence[str], title: str = "", fontsize: int = 7):
    """A grid of heat maps, one per layer (rows) and head (columns).

    Parameters
    ----------
    maps : (L, nh, T, T) attention weights (NumPy or torch), rows = queries, columns = keys
    labels : T token labels

    Returns
    -------
    the pyplot Figure
    """
    import matplotlib.pyplot as plt
    maps = np.asarray(maps)
    L, nh = maps.shape[:2]
    fig, axes = plt.subplots(L, nh, figsize=(2.6 * nh, 2.6 * L + 0.4), squeeze=False, layout="constrained")
    for layer in range(L):
        for head in range(nh):
            _heatmap(axes[layer, head], maps[layer, head], labels, f"layer {layer}, head {head}", fontsize)
    axes[-1, 0].set_xlabel("key (read from)", fontsize=8)
    axes[-1, 0].set_ylabel("query (reading)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def model_reading(model, codec, text: str, answer_len: Optional[int] = None, new_chars: int = 24):
    """What the explorer shows for one input: the model's greedy continuation and its attention.

    Parameters
    ----------
    model : a trained :class:`~dlcourse.transformer.torch_impl.GPT`
    codec : a :class:`~dlcourse.transformer.tasks.Task` (then ``text`` is a prompt and the model
        writes ``codec.answer_len`` tokens) or a :class:`dlcourse.data.TextCorpus` (the model
        writes ``new_chars`` characters)
    text : the input

    Returns
    -------
    dict: ``written`` (the continuation), ``tokens`` (the text the maps cover: input + continuation,
    at most ``block_size`` tokens, the last ones), ``maps`` (L, nh, T, T) NumPy
    """
    import torch

    from dlcourse.transformer.torch_impl import attention_maps, generate
    if not text:
        raise ValueError("type an input first")
    ids = np.asarray(codec.encode(text), dtype=np.int64)
    n_new = answer_len if answer_len is not None else new_chars
    B = model.block_size
    prompt = torch.as_tensor(ids[-B:])
    out = generate(model, prompt, n_new, greedy=True).cpu().numpy()           # (len + n_new,)
    written = codec.decode(out[len(prompt):])
    shown = out[:-1][-B:]                                                      # the tokens the model read
    return {"written": written, "tokens": codec.decode(shown), "maps": attention_maps(model, shown).numpy()}


class AttentionExplorer:
    """The widget: a model, an input (typed, or a held-out example), a layer and a head.

    Attributes
    ----------
    choice : dropdown of the models; text : the input; example : slider, which held-out example
    layer, head : sliders; readout : HTML with what the model wrote; reading : the last
    :func:`model_reading`; fig, image : the Figure and ``ipywidgets.Image``; widget : the VBox
    """

    def __init__(self, models: dict, examples: Optional[dict] = None, start: Optional[str] = None):
        import ipywidgets as w
        if not models:
            raise ValueError("give at least one model: {'name': (model, task or corpus)}")
        self.models = models
        self.examples = examples or {}
        style = {"description_width": "110px"}
        narrow = w.Layout(width="340px")
        names = list(models)
        self.choice = w.Dropdown(options=names, value=start or names[0], description="model", style=style,
                                 layout=narrow)
        self.example = w.IntSlider(value=0, min=0, max=max(1, self._example_count() - 1), description="example",
                                   style=style, layout=narrow, continuous_update=False)
        self.text = w.Text(value="", description="input", style=style, layout=w.Layout(width="600px"),
                           continuous_update=False)
        L, nh = self._shape()
        self.layer = w.IntSlider(value=L - 1, min=0, max=L - 1, description="layer", style=style, layout=narrow,
                                 continuous_update=False)
        self.head = w.IntSlider(value=0, min=0, max=nh - 1, description="head", style=style, layout=narrow,
                                continuous_update=False)
        self.readout = w.HTML(layout=w.Layout(width="420px"))
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="760px"))
        self.fig = Figure(figsize=(7.6, 6.4), layout="constrained")
        self.updates = 0
        self._quiet = False
        self.widget = w.VBox([w.HBox([w.VBox([self.choice, self.example, self.layer, self.head]), self.readout]),
                              self.text, self.image])
        self._load_example()
        self.choice.observe(self._model_changed, names="value")
        self.example.observe(self._example_changed, names="value")
        for control in (self.text, self.layer, self.head):
            control.observe(self.update, names="value")
        self.update()

    # ---- the chosen model and its examples
    def _current(self):
        return self.models[self.choice.value]

    def _shape(self) -> tuple[int, int]:
        model = self._current()[0]
        return len(model.blocks), model.n_head

    def _example_count(self) -> int:
        return len(self.examples.get(self.choice.value, [""]))

    def _is_task(self) -> bool:
        return hasattr(self._current()[1], "answer_len")

    def _load_example(self) -> None:
        examples = self.examples.get(self.choice.value)
        if examples:
            self._quiet = True
            self.text.value = examples[min(self.example.value, len(examples) - 1)]
            self._quiet = False

    def _model_changed(self, change=None) -> None:
        self._quiet = True
        L, nh = self._shape()
        self.layer.max, self.head.max = L - 1, nh - 1
        self.example.max = max(1, self._example_count() - 1)
        self._quiet = False
        self._load_example()
        self.update()

    def _example_changed(self, change=None) -> None:
        self._load_example()
        self.update()

    # ---- drawing
    def update(self, change=None) -> None:
        """Run the model on the input and redraw the chosen head's map."""
        if self._quiet:
            return
        model, codec = self._current()
        try:
            self.reading = model_reading(model, codec, self.text.value,
                                         answer_len=codec.answer_len if self._is_task() else None)
        except ValueError as err:           # an empty input, a character the task does not know
            self.readout.value = f"<b>cannot read this input</b>: {err}"
            return
        written = self.reading["written"]
        if self._is_task():
            prompt = self.text.value
            verdict = ""
            if len(prompt) == codec.prompt_len:
                expected = _task_answer(codec, prompt)
                if expected is not None:
                    verdict = " ✓ right" if written == expected else f" ✗ (right: {expected})"
            self.readout.value = f"the model writes <code>{_html(written)}</code>{verdict}"
        else:
            self.readout.value = f"the model continues (greedy): <code>{_html(written)}</code>"
        self._draw()
        self.updates += 1

    def _draw(self) -> None:
        self.fig.clear()
        ax = self.fig.subplots()
        layer, head = self.layer.value, self.head.value
        maps = self.reading["maps"]
        labels = token_labels(self.reading["tokens"])
        _heatmap(ax, maps[layer, head], labels, fontsize=9 if len(labels) <= 24 else 6)
        ax.set_xlabel("key: the token read from")
        ax.set_ylabel("query: the token reading")
        ax.set_title(f"{self.choice.value}: layer {layer}, head {head} "
                     f"(row i: how token i spreads its attention; each row sums to 1)", fontsize=9)
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def _html(text: str) -> str:
    import html
    return html.escape(text.replace("\n", "⏎"))


def _task_answer(task, prompt: str) -> Optional[str]:
    """The right answer to a typed task prompt, or None when it is not a well-formed problem."""
    try:
        ids = task.encode(prompt)
    except ValueError:
        return None
    if getattr(task, "name", "") == "reversal":
        if prompt.endswith(">") and ">" not in prompt[:-1]:
            return prompt[:-1][::-1]
        return None
    if getattr(task, "name", "") == "addition":
        d = task.digits
        if len(ids) == 2 * d + 2 and prompt[d] == "+" and prompt[-1] == "=" and prompt[:d].isdigit() \
                and prompt[d + 1:-1].isdigit():
            total = str(int(prompt[:d]) + int(prompt[d + 1:-1])).zfill(d + 1)
            return total[::-1] if task.reverse_answer else total
    return None


def attention_explorer(models: dict, examples: Optional[dict] = None, start: Optional[str] = None):
    """Build the attention explorer; display it as a cell's last expression.

    Parameters
    ----------
    models : ``{name: (GPT, task or corpus)}``
    examples : ``{name: [input text, ...]}`` for the example slider (held-out problems, prompts)
    start : the model shown first
    """
    return AttentionExplorer(models, examples, start)


def plot_scale_study(head_sizes: Sequence[int], score_std: dict, top_weight: dict, grad_norm: dict,
                     title: str = "why the scores are divided by sqrt(hs)"):
    """Three panels against the head size: score spread, the largest softmax weight, the gradient
    through the softmax — each with and without the 1/sqrt(hs) scale.

    ``score_std`` etc.: ``{"unscaled": [...], "scaled": [...]}`` aligned with ``head_sizes``.
    """
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    panels = ((score_std, "spread (std) of the scores", "log"), (top_weight, "rows with one weight > 0.99", None),
              (grad_norm, "gradient reaching a row of scores (median norm)", "log"))
    for ax, (values, label, scale) in zip(axes, panels):
        for key, style in (("unscaled", "o-"), ("scaled", "s-")):
            ax.plot(head_sizes, values[key], style, label=f"{key}" + (" by 1/sqrt(hs)" if key == "scaled" else ""))
        ax.set_xscale("log", base=2)
        if scale:
            ax.set_yscale(scale)
        ax.set(xlabel="head size hs", title=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
