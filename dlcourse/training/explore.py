"""Pictures and the widget for chapter 04: learning curves, confusion matrices, ROC curves, deep nets.

* :func:`regularization_grid` trains a grid of small MLPs (dropout x weight decay x
  training-set size) once; :class:`RegularizationExplorer` (made by
  :func:`regularization_explorer`) shows any point of it with three sliders.
* :func:`plot_histories` compares :class:`~dlcourse.training.torch_impl.TrainHistory`
  runs; :class:`LiveLossPlot` (chapter 03's, reused) is the live plot for ``train_mlp``.
* :func:`plot_confusion_matrix`, :func:`plot_roc`, :func:`plot_depth_stats`,
  :func:`plot_deep_losses`, :func:`plot_lr_range`.

As in chapter 03, the widget draws a ``matplotlib.figure.Figure`` outside pyplot into an
``ipywidgets.Image`` as PNG bytes, which every front end (JupyterLab, Notebook 7, Colab) shows.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dlcourse.optim.explore import LiveLossPlot, figure_png
from dlcourse.training.torch_impl import GridPoint, TrainHistory, train_mlp_grid

__all__ = ["LiveLossPlot", "figure_png", "RegularizationGrid", "regularization_grid", "RegularizationExplorer",
           "regularization_explorer", "plot_histories", "plot_train_val", "plot_confusion_matrix", "plot_roc",
           "plot_depth_stats", "plot_deep_losses", "plot_deep_curves", "plot_lr_range", "plot_search"]


# --------------------------------------------------------------------------- the grid

@dataclass
class RegularizationGrid:
    """Training histories for every (training-set size, dropout, weight decay) combination.

    ``histories[(size, dropout, weight_decay)]`` is a ``TrainHistory`` recorded every
    ``record_every`` updates (its ``updates`` list says when).
    """

    sizes: tuple
    dropouts: tuple
    decays: tuple
    histories: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __getitem__(self, key) -> TrainHistory:
        return self.histories[key]

    def __len__(self) -> int:
        return len(self.histories)


def regularization_grid(data=None, sizes: Sequence[int] = (100, 200, 500, 1000),
                        dropouts: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
                        decays: Sequence[float] = (0.0, 0.3, 1.0, 3.0), steps: int = 500,
                        record_every: int = 25, hidden: int = 64, lr: float = 3e-3, seed: int = 0,
                        device: Optional[str] = None, progress: bool = False) -> RegularizationGrid:
    """Train one MLP (D -> H -> K, ReLU, dropout, AdamW) for every grid point; about 5 s on 2 cores.

    For each training-set size, the first ``size`` training digits are used and all dropout x
    decay networks train side by side (:func:`~dlcourse.training.torch_impl.train_mlp_grid`) for
    the same number of ``steps`` updates, so a small set is seen many more times than a big one.
    The validation set is the whole of ``data.x_val``.  Four values a slider: a slider of four
    positions moves one step when dragged a quarter of its length.

    Parameters
    ----------
    data : a ``DigitsSplit`` (default ``load_digits(seed)``)
    sizes, dropouts, decays : the grid's axes (decay: AdamW's ``weight_decay``)
    steps, record_every, hidden, lr : see ``train_mlp_grid``
    """
    if data is None:
        from dlcourse.data import load_digits
        data = load_digits(seed)
    points = [GridPoint(p, wd) for p in dropouts for wd in decays]
    grid = RegularizationGrid(tuple(sizes), tuple(dropouts), tuple(decays))
    start = time.perf_counter()
    loop = sizes
    if progress:
        from tqdm.auto import tqdm
        loop = tqdm(sizes, desc="regularization grid (training-set sizes)")
    for size in loop:
        histories = train_mlp_grid(data.x_train[:size], data.y_train[:size], data.x_val, data.y_val, points,
                                   hidden=hidden, lr=lr, steps=steps, record_every=record_every, seed=seed,
                                   device=device)
        for pt, hist in zip(points, histories):
            grid.histories[(size, pt.dropout, pt.weight_decay)] = hist
    grid.seconds = time.perf_counter() - start
    return grid


# --------------------------------------------------------------------------- learning curves

def draw_learning_curves(ax_loss, ax_acc, history: TrainHistory, x=None, xlabel: str = "epoch",
                         loss_limits: Optional[tuple] = None) -> None:
    """Training and validation loss (left) and accuracy (right) of one run, the gap shaded,
    the best validation point marked.  ``loss_limits`` fixes the loss axis (the explorer keeps
    one scale for every slider position, so curves compare by eye)."""
    x = np.arange(len(history.train_loss)) if x is None else np.asarray(x)
    train, val = np.asarray(history.train_loss), np.asarray(history.val_loss)
    ax_loss.plot(x, train, "-", color="C0", lw=2, label="training loss")
    ax_loss.plot(x, val, "-", color="C1", lw=2, label="validation loss")
    ax_loss.fill_between(x, train, val, where=val >= train, color="C3", alpha=0.15, label="gap (overfitting)")
    best = history.best_epoch
    ax_loss.axvline(x[best], color="gray", ls="--", lw=1)
    ax_loss.plot(x[best], val[best], "o", color="C1", markeredgecolor="black", ms=8,
                 label=f"best validation ({xlabel} {x[best]:g})")
    ax_loss.set(xlabel=xlabel, ylabel="cross-entropy", yscale="log", title="loss")
    if loss_limits is not None:
        ax_loss.set_ylim(*loss_limits)
    ax_loss.legend(fontsize=8, loc="upper right")
    ax_acc.plot(x, history.train_acc, "-", color="C0", lw=2, label="training")
    ax_acc.plot(x, history.val_acc, "-", color="C1", lw=2, label="validation")
    ax_acc.axvline(x[best], color="gray", ls="--", lw=1)
    ax_acc.set(xlabel=xlabel, ylabel="accuracy", title="accuracy", ylim=(0.5, 1.005))
    ax_acc.legend(fontsize=8, loc="lower right")


def plot_histories(histories: dict, x: str = "epoch"):
    """Compare runs ``{label: TrainHistory}``: training (dashed) and validation (solid) loss on the
    left, validation accuracy on the right, each run's best validation epoch marked.

    ``x="updates"`` puts the number of optimizer steps on the x-axis instead of epochs.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    for i, (label, h) in enumerate(histories.items()):
        xs = np.asarray(h.updates) if x == "updates" and h.updates else np.arange(len(h.train_loss))
        color = f"C{i}"
        ax_loss.plot(xs, h.train_loss, "--", color=color, lw=1.2)
        ax_loss.plot(xs, h.val_loss, "-", color=color, lw=1.8, label=label)
        ax_loss.plot(xs[h.best_epoch], h.val_loss[h.best_epoch], "o", color=color, markeredgecolor="black")
        ax_acc.plot(xs, h.val_acc, "-", color=color, lw=1.8, label=label)
    ax_loss.set(xlabel=x, ylabel="cross-entropy", yscale="log",
                title="loss: training (dashed), validation (solid), best (dot)")
    ax_acc.set(xlabel=x, ylabel="accuracy", title="validation accuracy", ylim=(0, 1.01))
    ax_loss.legend(fontsize=8)
    return fig


plot_train_val = plot_histories  # the lesson's name for it


# --------------------------------------------------------------------------- the explorer

def _label(value: float) -> str:
    return f"{value:g}"


class RegularizationExplorer:
    """The widget: dropout, weight decay and training-set size move the learning curves.

    Attributes
    ----------
    dropout, decay, size : the sliders (``ipywidgets.SelectionSlider``)
    readout : an ``ipywidgets.HTML`` with the numbers of the chosen point
    history : the chosen point's ``TrainHistory``
    fig : the Figure (loss and accuracy against updates); image : the ``ipywidgets.Image`` showing it
    widget : the whole thing, an ``ipywidgets.VBox``
    """

    def __init__(self, grid: RegularizationGrid, dropout: Optional[float] = None,
                 weight_decay: Optional[float] = None, size: Optional[int] = None):
        import ipywidgets as w
        self.grid = grid
        # Explicit widths (as chapter 03's explorer): JupyterLab cuts a description longer than its box.
        style = {"description_width": "150px"}
        layout = w.Layout(width="480px", min_width="480px")

        def slider(description, values, value):
            options = [(_label(v), v) for v in values]
            return w.SelectionSlider(options=options, value=values[0] if value is None else value,
                                     description=description, style=style, layout=layout,
                                     continuous_update=False)
        self.dropout = slider("dropout", grid.dropouts, dropout)
        self.decay = slider("weight decay", grid.decays, weight_decay)
        self.size = slider("training examples", grid.sizes, size if size is not None else grid.sizes[0])
        self.readout = w.HTML(layout=w.Layout(width="480px"))
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1000px"))
        self.fig = Figure(figsize=(11, 3.8), layout="constrained")
        self.updates = 0
        for control in (self.dropout, self.decay, self.size):
            control.observe(self.update, names="value")
        controls = w.VBox([self.dropout, self.decay, self.size, self.readout])
        self.widget = w.VBox([controls, self.image])
        self.update()

    @property
    def key(self) -> tuple:
        return (self.size.value, self.dropout.value, self.decay.value)

    def update(self, change=None) -> None:
        """Show the grid point the sliders point at."""
        self.history = h = self.grid[self.key]
        best = h.best_epoch
        final_gap = h.val_loss[-1] - h.train_loss[-1]
        self.readout.value = (
            f"<b>best validation loss</b> {h.val_loss[best]:.3f} after {h.updates[best]} updates "
            f"(accuracy {h.val_acc[best]:.1%})<br>"
            f"<b>at the end</b>: training loss {h.train_loss[-1]:.3f}, validation loss {h.val_loss[-1]:.3f}, "
            f"<b>gap</b> {final_gap:.3f}")
        self._draw()
        self.updates += 1

    def _draw(self) -> None:
        h = self.history
        self.fig.clear()
        ax_loss, ax_acc = self.fig.subplots(1, 2)
        draw_learning_curves(ax_loss, ax_acc, h, x=h.updates, xlabel="updates", loss_limits=(2e-3, 4.0))
        size, dropout, decay = self.key
        self.fig.suptitle(f"{size} training examples, dropout {dropout:g}, weight decay {decay:g}: "
                          f"gap {h.val_loss[-1] - h.train_loss[-1]:.3f}", fontsize=11)
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def regularization_explorer(grid: Optional[RegularizationGrid] = None, **start) -> RegularizationExplorer:
    """Build the explorer (training the default grid first when none is given); display it by
    making it the last expression of a cell.  ``start``: ``dropout=``, ``weight_decay=``, ``size=``."""
    return RegularizationExplorer(grid if grid is not None else regularization_grid(), **start)


# --------------------------------------------------------------------------- metrics

def plot_confusion_matrix(cm: np.ndarray, ax=None, labels: Optional[Sequence] = None, normalize: bool = False,
                          title: str = "confusion matrix"):
    """``cm[i, j]`` = examples of true class i predicted as j, as a heat map with the counts written in.

    ``normalize=True`` divides each row by its total (recall on the diagonal).  Returns the axes.
    """
    cm = np.asarray(cm)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    if ax is None:
        ax = plt.figure(figsize=(5, 4.4), layout="constrained").add_subplot()
    k = cm.shape[0]
    labels = list(range(k)) if labels is None else list(labels)
    image = ax.imshow(values, cmap="Blues")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    top = values.max() if values.size else 1
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8 if k > 5 else 10,
                    color="white" if values[i, j] > 0.6 * top else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=labels, yticklabels=labels,
           xlabel="predicted class", ylabel="true class", title=title)
    return ax


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, ax=None, label: Optional[str] = None):
    """A ROC curve with its area, against the diagonal of guessing.  Returns the axes."""
    if ax is None:
        ax = plt.figure(figsize=(4.6, 4.2), layout="constrained").add_subplot()
    ax.plot(fpr, tpr, lw=2, drawstyle="default", label=f"{label + ': ' if label else ''}AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="guessing (AUC = 0.5)")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate", ylabel="true-positive rate",
           title="ROC curve", aspect="equal")
    ax.legend(loc="lower right", fontsize=8)
    return ax


# --------------------------------------------------------------------------- depth

def plot_depth_stats(stats: dict, title: str = "signal and gradient size by depth"):
    """Per-layer activation std (left) and weight-gradient std (right), one line per setting, log y.

    ``stats``: ``{label: DepthStats}`` (``practice.depth_statistics``) or ``{label: (act_std, grad_std)}``.
    Exact zeros (a dead signal) are drawn at a floor a decade below the smallest positive value
    instead of vanishing from a log plot; every positive value is drawn where it is.
    """
    fig, (ax_act, ax_grad) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    pairs = [(s.activation_std, s.gradient_std) if hasattr(s, "activation_std") else s for s in stats.values()]
    positive = [v for pair in pairs for arr in pair for v in np.asarray(arr, dtype=float).ravel() if v > 0]
    floor = min(positive) / 10 if positive else 1e-30
    for i, (label, (act, grad)) in enumerate(zip(stats, pairs)):
        layers = np.arange(1, len(act) + 1)
        style = dict(color=f"C{i}", marker="o", ms=3, label=label)
        ax_act.plot(layers, np.maximum(act, floor), **style)
        ax_grad.plot(layers, np.maximum(grad, floor), **style)
    ax_act.set(xlabel="layer", ylabel="std of the layer's output", yscale="log", title="forward: activations")
    ax_grad.set(xlabel="layer", ylabel="std of dloss/dW", yscale="log", title="backward: weight gradients")
    ax_grad.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    return fig


def plot_deep_losses(losses: dict, num_classes: int = 10, smooth: int = 5,
                     title: str = "a 20-layer MLP: which variants train?"):
    """Mini-batch loss per step ``{variant: losses}`` (``deep_mlp_losses``), with the chance level ln K."""
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    for i, (label, values) in enumerate(losses.items()):
        values = np.asarray(values, dtype=float)
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(1, len(values) + 1), values, color=f"C{i}", lw=1.8, label=label)
    chance = math.log(num_classes)
    ax.axhline(chance, color="gray", ls="--", lw=1)
    ax.annotate(f"chance: ln {num_classes} = {chance:.2f}", (0.01, chance), xycoords=("axes fraction", "data"),
                xytext=(0, 4), textcoords="offset points", fontsize=8, color="gray")
    ax.set(xlabel="update", ylabel="mini-batch loss", title=title, ylim=(0, max(3.0, chance + 0.5)))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


plot_deep_curves = plot_deep_losses  # the lesson's name for it


def plot_lr_range(lrs: np.ndarray, losses: np.ndarray, suggested: Optional[float] = None, smooth: int = 5):
    """The learning-rate range test: loss against learning rate (log x), raw and smoothed."""
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    lrs, losses = np.asarray(lrs), np.asarray(losses, dtype=float)
    ax.plot(lrs, losses, color="C0", alpha=0.35, lw=1, label="mini-batch loss")
    if smooth > 1 and len(losses) >= smooth:  # a centred moving average, only where the window is full
        smoothed = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        centre = lrs[smooth // 2: smooth // 2 + len(smoothed)]
        ax.plot(centre, smoothed, color="C0", lw=2, label=f"smoothed ({smooth} steps)")
    if suggested is not None:
        ax.axvline(suggested, color="C3", ls="--", label=f"suggested lr = {suggested:.2g}")
    # up to where the test stopped (4x the lowest loss), but never below the starting loss: the flat start shows
    top = min(np.nanmax(losses), max(4 * np.nanmin(losses), losses[0])) if len(losses) else 1
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="loss", title="learning-rate range test",
           ylim=(0, top * 1.05))
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- search

def plot_search(search: dict, x: str = "lr", y: str = "dropout", xlog: bool = True):
    """Trials of several searches side by side: ``{name: [(config, score), ...]}``.

    Each trial is a dot at its two hyperparameters, coloured by its score; the best of
    each search is ringed.  Below each panel, the score against the first hyperparameter
    alone shows how many distinct values of it the search tried.
    """
    fig, axes = plt.subplots(2, len(search), figsize=(5 * len(search), 6.4), layout="constrained",
                             height_ratios=(2, 1), squeeze=False)
    scores = [s for trials in search.values() for _, s in trials]
    lo, hi = min(scores), max(scores)
    for col, (name, trials) in enumerate(search.items()):
        xs = np.array([c[x] for c, _ in trials])
        ys = np.array([c[y] for c, _ in trials])
        ss = np.array([s for _, s in trials])
        top, bottom = axes[0, col], axes[1, col]
        dots = top.scatter(xs, ys, c=ss, cmap="viridis", vmin=lo, vmax=hi, s=60, edgecolors="k")
        best = int(np.argmax(ss))
        top.scatter(xs[best], ys[best], s=260, facecolors="none", edgecolors="red", linewidths=2)
        top.set(title=f"{name} search: {len(trials)} trials, best (ringed) {ss[best]:.3f}", xlabel=x, ylabel=y)
        bottom.plot(xs, ss, "o", color="C0")
        bottom.set(xlabel=f"{x} ({len(np.unique(np.round(xs, 12)))} distinct values tried)", ylabel="score")
        if xlog:
            top.set_xscale("log")
            bottom.set_xscale("log")
    fig.colorbar(dots, ax=axes[0, :].tolist(), label="validation accuracy", shrink=0.8)
    return fig
