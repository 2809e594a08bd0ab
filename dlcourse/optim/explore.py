"""Pictures and widgets for chapter 03: loss landscapes, optimizer paths, live loss curves.

* :func:`plot_surface` / :func:`plot_surfaces` draw contour maps of the 2-D test
  functions of ``dlcourse.data.surface``; :func:`plot_paths` adds optimisation paths.
* :func:`plot_learning_rates` shows one optimizer with several learning rates
  (too small, about right, too large) as paths and as loss curves.
* :func:`plot_histories` compares training runs (``History`` objects);
  :func:`plot_schedules` draws learning-rate schedules.
* :class:`LiveLossPlot` is a training callback that redraws one figure in place.
* :class:`OptimizerRace` (made by :func:`optimizer_race`) races SGD, momentum,
  RMSprop and Adam from the same start on a surface you choose, with sliders.

Figures that are updated in place (live plots, the widget) are
``matplotlib.figure.Figure`` objects outside pyplot, so pyplot never shows a
second copy; they reach the notebook as PNG images (:func:`figure_png`), which
every front end shows (a bare Figure can print as ``<Figure size ...>`` on Colab
when pyplot has drawn nothing yet).
"""
from __future__ import annotations

import io
import math
import time
from typing import Callable, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from dlcourse.data import SURFACES, surface as get_surface
from dlcourse.optim.numpy_impl import History, minimize
from dlcourse.runtime import ipython_shell

__all__ = ["figure_png", "show_in_place", "plot_surface", "plot_surfaces", "plot_paths", "plot_learning_rates",
           "plot_histories", "plot_schedules", "LiveLossPlot", "RACERS", "RACE_DEFAULTS",
           "race_paths", "OptimizerRace", "optimizer_race"]


def figure_png(fig) -> bytes:
    """The figure rendered as PNG bytes (for ``IPython.display.Image``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --------------------------------------------------------------------------- contour maps

def plot_surface(surface, ax=None, resolution: int = 200, levels: int = 30):
    """Filled contour map of a 2-D surface (a ``Surface`` or its name) on its ``bounds``.

    Levels are spaced logarithmically above the lowest value on the grid, so
    flat valleys (Rosenbrock's) show as much detail as steep walls.  The
    surface's ``minimum`` is marked with a star, drawn above everything that is
    added later (paths), so a zig-zag never hides it.  Returns the axes.
    """
    s = get_surface(surface) if isinstance(surface, str) else surface
    if ax is None:
        ax = plt.figure(figsize=(5, 4)).add_subplot()
    xmin, xmax, ymin, ymax = s.bounds
    xs, ys = np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)  # (R, R, 2) points
    z = s.f(grid)                                   # (R, R) heights
    shifted = z - z.min() + 1e-3                    # positive, for log-spaced levels
    ax.contourf(xs, ys, shifted, levels=np.geomspace(shifted.min(), shifted.max(), levels),
                norm=LogNorm(), cmap="viridis", alpha=0.85)
    ax.contour(xs, ys, shifted, levels=np.geomspace(shifted.min(), shifted.max(), levels),
               norm=LogNorm(), colors="white", linewidths=0.3, alpha=0.5)
    ax.plot(*s.minimum, marker="*", color="red", markeredgecolor="white", markeredgewidth=0.8,
            markersize=14, linestyle="none", zorder=10, label="_minimum")
    ax.set(xlim=(xmin, xmax), ylim=(ymin, ymax), xlabel="$w_1$", ylabel="$w_2$", title=s.name)
    return ax


def plot_surfaces(names: Sequence[str] = SURFACES):
    """Contour maps of several surfaces side by side, each with its demo start (white dot)."""
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), layout="constrained")
    for ax, name in zip(np.atleast_1d(axes), names):
        s = get_surface(name)
        plot_surface(s, ax)
        ax.plot(*s.start, "o", color="white", markeredgecolor="black")
    return fig


# The racers' styles: a colour, a line style and a marker each, so that paths that overlap stay
# distinguishable (Adam's curve runs over momentum's on the bowl), and none is white.
PATH_STYLES = {
    "SGD": dict(color="black", ls="-", marker="o"),
    "momentum": dict(color="#ff7f0e", ls="--", marker="s"),
    "RMSprop": dict(color="#e377c2", ls="-.", marker="^"),
    "Adam": dict(color="#d62728", ls=":", marker="D"),
}


def plot_paths(ax, paths: dict, colors: Optional[dict] = None, markevery: int = 0,
               on_top: Sequence[str] = ()):
    """Draw optimisation paths ``{label: (steps + 1, 2) array}`` on a contour map ``ax``.

    Each path gets its own colour, line style and marker (:data:`PATH_STYLES`
    for the racers' labels, ``C0``, ``C1``, ... otherwise), a dot every
    ``markevery`` steps (0: about 8 dots along the path), and a large marker at
    its last finite point, edged in white.  Paths named in ``on_top`` are drawn
    last (a short path, SGD crawling along a valley, stays visible under longer
    ones).  Non-finite points (a diverged run) are not drawn; the axes keep their
    limits.  The legend lists the paths in the given order.
    """
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    labels = list(paths)
    order = [lab for lab in labels if lab not in on_top] + [lab for lab in labels if lab in on_top]
    lines = {}
    for i, label in enumerate(labels):
        style = dict(PATH_STYLES.get(label, dict(color=f"C{i}", ls="-", marker="o")))
        if colors and label in colors:
            style["color"] = colors[label]
        lines[label] = style
    for rank, label in enumerate(order):
        path = paths[label]
        style = lines[label]
        finite = path[np.all(np.isfinite(path), axis=1)]
        every = markevery or max(1, len(path) // 8)
        lines[label] = ax.plot(path[:, 0], path[:, 1], color=style["color"], ls=style["ls"], lw=1.8,
                               marker=style["marker"], markevery=every, markersize=4, label=label,
                               zorder=3 + rank * 0.1)[0]
        if len(finite):
            ax.plot(*finite[-1], marker=style["marker"], color=style["color"], markersize=10,
                    markeredgecolor="white", markeredgewidth=1.2, linestyle="none", zorder=6)
        ax.plot(*path[0], "o", color="white", markeredgecolor="black", zorder=7)
    ax.set(xlim=xlim, ylim=ylim)
    ax.legend([lines[lab] for lab in labels], labels, loc="upper right", fontsize=8, framealpha=0.85)
    return ax


# --------------------------------------------------------------------------- learning rates

def plot_learning_rates(surface, lrs: Sequence[float], steps: int = 40, optimizer: str = "sgd",
                        labels: Optional[Sequence[str]] = None, **hyper):
    """Paths (left) and loss per step (right) of one optimizer at several learning rates.

    A run that blows up is drawn until it leaves the picture; its loss curve
    rises off the top of the (log-scale) plot.
    """
    s = get_surface(surface) if isinstance(surface, str) else surface
    labels = labels or [f"lr = {lr:g}" for lr in lrs]
    paths = {lab: minimize(s.grad, s.start, optimizer, steps, lr=lr, **hyper)
             for lab, lr in zip(labels, lrs)}
    fig, (ax_map, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    plot_surface(s, ax_map)
    plot_paths(ax_map, paths, markevery=1)
    for i, (lab, path) in enumerate(paths.items()):
        with np.errstate(all="ignore"):
            loss = s.f(path) - s.f(s.minimum)
        ax_loss.semilogy(np.maximum(loss, 1e-16), color=f"C{i}", label=lab)
    ax_loss.set(xlabel="step", ylabel="f(w) - f(w*)", title="distance to the minimum value",
                ylim=(1e-8, 1e4))
    ax_loss.legend()
    return fig


# --------------------------------------------------------------------------- training runs

def plot_histories(histories: dict, x: str = "epoch", smooth: int = 1):
    """Compare training runs ``{label: History}``: mini-batch loss per update (left),
    training-set loss per epoch (middle) and validation accuracy per epoch (right).

    ``smooth`` averages the per-update losses over that many steps (1: raw).
    """
    fig, (ax_step, ax_epoch, ax_acc) = plt.subplots(1, 3, figsize=(14, 3.8), layout="constrained")
    for i, (label, h) in enumerate(histories.items()):
        steps = np.asarray(h.step_loss)
        if smooth > 1 and len(steps) >= smooth:
            steps = np.convolve(steps, np.ones(smooth) / smooth, mode="valid")
        ax_step.plot(np.arange(1, len(steps) + 1), steps, color=f"C{i}", lw=0.8, label=label)
        ax_epoch.plot(h.train_loss, "o-", color=f"C{i}", markersize=3, label=label)
        ax_acc.plot(h.val_acc, "o-", color=f"C{i}", markersize=3, label=label)
    ax_step.set(xscale="log", yscale="log", xlabel="update (log scale)", ylabel="mini-batch loss",
                title="loss of each step's batch")
    ax_epoch.set(yscale="log", xlabel="epoch (passes over the data)", ylabel="training loss",
                 title="whole training set")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01), title="validation accuracy")
    ax_epoch.legend(fontsize=8)
    return fig


def plot_schedules(schedules: dict[str, Callable[[int], float]], epochs: int):
    """Learning rate against epoch for ``{label: epoch -> lr}``.

    Each curve has its own line style and marker (curves that coincide, like a
    warm-up alone and a warm-up followed by a decay, stay distinguishable), and
    the legend sits outside the axes, so it hides none of them.
    """
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    e = np.arange(epochs)
    styles = [dict(ls="-", marker="."), dict(ls="-", marker="."), dict(ls="--", marker="s", markersize=3.5, lw=2.2),
              dict(ls=":", marker="^", markersize=3.5, lw=1.6)]
    for i, (label, fn) in enumerate(schedules.items()):
        ax.plot(e, [fn(int(k)) for k in e], label=label, **styles[i % len(styles)])
    ax.set(xlabel="epoch", ylabel="learning rate", title="learning-rate schedules")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    return fig


class LiveLossPlot:
    """A training callback that redraws its loss curves after every epoch, in place.

    Pass it as ``callback=`` to ``train_numpy`` / ``train_torch``.  In a notebook
    the figure is shown once and updated through an IPython display handle, so the
    output does not grow; elsewhere (tests, scripts) it only redraws.

    Rendering a figure takes a good fraction of a second on a small CPU, longer
    than an epoch of a small model, so when ``epochs`` is given the notebook
    display is refreshed at most every ``min_interval`` seconds, and always after
    the first and the last epoch.

    Attributes
    ----------
    fig : the matplotlib Figure
    updates : how many times it has been redrawn
    """

    def __init__(self, title: str = "training", epochs: Optional[int] = None, min_interval: float = 2.0):
        self.fig = Figure(figsize=(9, 3.2), layout="constrained")
        self.ax_loss, self.ax_acc = self.fig.subplots(1, 2)
        self.ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{title}: loss")
        self.ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: validation accuracy")
        if epochs:
            for ax in (self.ax_loss, self.ax_acc):
                ax.set_xlim(0, epochs)
        self.ax_acc.set_ylim(0, 1.01)
        self.lines = {
            "train": self.ax_loss.plot([], [], "o-", ms=3, label="training loss")[0],
            "val": self.ax_loss.plot([], [], "o-", ms=3, label="validation loss")[0],
            "acc": self.ax_acc.plot([], [], "o-", ms=3, color="C2", label="validation accuracy")[0],
        }
        self.ax_loss.legend()
        self.updates = 0
        self.epochs, self.min_interval = epochs, min_interval
        self._handle = None
        self._shown_at = -math.inf

    def __call__(self, history: History) -> None:
        epochs = np.arange(len(history.train_loss))
        self.lines["train"].set_data(epochs, history.train_loss)
        self.lines["val"].set_data(epochs, history.val_loss)
        self.lines["acc"].set_data(epochs, history.val_acc)
        for ax in (self.ax_loss, self.ax_acc):
            ax.relim()
            ax.autoscale_view()
        self.ax_acc.set_ylim(0, 1.01)
        self.updates += 1
        last = self.epochs is not None and len(history.train_loss) > self.epochs
        due = self.epochs is None or time.perf_counter() - self._shown_at >= self.min_interval
        if self._handle is None or last or due:
            self._show()

    def _show(self) -> None:
        self._handle = show_in_place(self.fig, self._handle)
        self._shown_at = time.perf_counter()  # after rendering: rendering never takes over


def show_in_place(fig, handle=None):
    """Show ``fig`` in a notebook, or redraw it where ``handle`` showed it before; the handle.

    PNG bytes, not the Figure: a Figure outside pyplot may print as "<Figure size ...>" (Colab,
    when no pyplot figure was drawn before); an Image shows everywhere.  Outside a notebook it
    does nothing and returns ``handle``.
    """
    if ipython_shell() is None:
        return handle
    from IPython.display import Image, display
    image = Image(data=figure_png(fig), format="png")
    if handle is None:
        return display(image, display_id=True)
    handle.update(image)
    return handle


# --------------------------------------------------------------------------- the optimizer race

# label -> (optimizer, which learning-rate slider it uses, uses momentum slider)
RACERS = {
    "SGD": ("sgd", "lr_sgd", False),
    "momentum": ("sgd", "lr_sgd", True),
    "RMSprop": ("rmsprop", "lr_adaptive", False),
    "Adam": ("adam", "lr_adaptive", False),
}

# Per surface: the SGD learning rate, the adaptive methods' learning rate, the number of steps.
RACE_DEFAULTS = {
    "rosenbrock": (1e-3, 0.1, 300),
    "bowl": (0.05, 0.3, 60),
    "himmelblau": (0.01, 0.1, 100),
    "saddle": (0.05, 0.05, 60),
}


def race_paths(surface, lr_sgd: float, lr_adaptive: float, momentum: float = 0.9,
               steps: int = 100) -> dict[str, np.ndarray]:
    """The paths of the four racers of :data:`RACERS`, all from the surface's ``start``.

    SGD and momentum share ``lr_sgd`` (a multiplier of the gradient); RMSprop
    and Adam share ``lr_adaptive`` (roughly a step length, since they divide the
    gradient by its own size).  Returns ``{label: (steps + 1, 2) path}``.
    """
    s = get_surface(surface) if isinstance(surface, str) else surface
    rates = {"lr_sgd": lr_sgd, "lr_adaptive": lr_adaptive}
    paths = {}
    for label, (name, rate, uses_momentum) in RACERS.items():
        hyper = {"lr": rates[rate]}
        if uses_momentum:
            hyper["momentum"] = momentum
        paths[label] = minimize(s.grad, s.start, name, steps, **hyper)
    return paths


class OptimizerRace:
    """The widget: pick a surface, set learning rates, momentum and steps; watch four optimizers race.

    Attributes
    ----------
    surface, lr_sgd, lr_adaptive, momentum, steps : the controls (ipywidgets)
    paths : ``{label: (K, 2) path}`` of the latest race
    final : ``{label: f at the last finite point}`` of the latest race
    fig : the Figure (contour map with paths, and loss against step)
    image : the ``ipywidgets.Image`` that shows ``fig`` as PNG
    widget : the whole thing, an ``ipywidgets.VBox``
    """

    def __init__(self, surface: str = "rosenbrock"):
        import ipywidgets as w
        lr_sgd, lr_adaptive, steps = RACE_DEFAULTS[surface]
        # Explicit widths: JupyterLab cuts a description longer than its box ("lr SGD/momen...");
        # 170 px holds the longest label at the default font, and 480 px leaves the slider room.
        style = {"description_width": "170px"}
        layout = w.Layout(width="480px", min_width="480px")
        self.surface = w.Dropdown(options=list(SURFACES), value=surface, description="surface",
                                  style=style, layout=layout)
        self.lr_sgd = w.FloatLogSlider(value=lr_sgd, base=10, min=-4, max=0, step=0.05,
                                       description="lr (SGD, momentum)", readout_format=".1e",
                                       style=style, layout=layout)
        self.lr_adaptive = w.FloatLogSlider(value=lr_adaptive, base=10, min=-3, max=0, step=0.05,
                                            description="lr (RMSprop, Adam)", readout_format=".1e",
                                            style=style, layout=layout)
        self.momentum = w.FloatSlider(value=0.9, min=0.0, max=0.99, step=0.01, description="momentum",
                                      style=style, layout=layout)
        self.steps = w.IntSlider(value=steps, min=10, max=500, step=10, description="steps",
                                 style=style, layout=layout)
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1000px"))
        self.fig = Figure(figsize=(11, 4.2), layout="constrained")
        self.paths: dict[str, np.ndarray] = {}
        self.final: dict[str, float] = {}
        self.updates = 0
        self.surface.observe(self._on_surface, names="value")
        for control in (self.lr_sgd, self.lr_adaptive, self.momentum, self.steps):
            control.observe(self.update, names="value")
        controls = w.VBox([self.surface, self.lr_sgd, self.lr_adaptive, self.momentum, self.steps])
        self.widget = w.VBox([controls, self.image])
        self.update()

    def _on_surface(self, change=None) -> None:
        lr_sgd, lr_adaptive, steps = RACE_DEFAULTS[self.surface.value]
        self._quiet = True  # set all three, then redraw once
        try:
            self.lr_sgd.value, self.lr_adaptive.value, self.steps.value = lr_sgd, lr_adaptive, steps
        finally:
            self._quiet = False
        self.update()

    def update(self, change=None) -> None:
        """Re-run the race with the current control values and redraw."""
        if getattr(self, "_quiet", False):
            return
        s = get_surface(self.surface.value)
        self.paths = race_paths(s, self.lr_sgd.value, self.lr_adaptive.value,
                                self.momentum.value, self.steps.value)
        self.final = {}
        for label, path in self.paths.items():
            finite = path[np.all(np.isfinite(path), axis=1)]
            self.final[label] = float(s.f(finite[-1]))
        self._draw(s)
        self.updates += 1

    def _draw(self, s) -> None:
        self.fig.clear()
        ax_map, ax_loss = self.fig.subplots(1, 2, width_ratios=[1.2, 1])
        plot_surface(s, ax_map)
        plot_paths(ax_map, self.paths, on_top=("momentum", "SGD"))
        for label, path in self.paths.items():
            style = PATH_STYLES[label]
            with np.errstate(all="ignore"):
                gap = s.f(path) - s.f(s.minimum)
            if s.name == "saddle":  # no minimum: plot the value itself
                ax_loss.plot(s.f(path), color=style["color"], ls=style["ls"], label=label)
            else:
                ax_loss.semilogy(np.maximum(gap, 1e-16), color=style["color"], ls=style["ls"], label=label)
        ax_loss.set(xlabel="step", title="f(w)" if s.name == "saddle" else "f(w) - f(w*)")
        ax_loss.legend(fontsize=8)
        # an ipywidgets Image of PNG bytes: shows the same in JupyterLab, classic Jupyter and Colab
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def optimizer_race(surface: str = "rosenbrock") -> OptimizerRace:
    """Build the optimizer race widget; display it by making it the last expression of a cell."""
    return OptimizerRace(surface)
