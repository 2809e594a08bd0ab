"""Plots and the interactive activation explorer of chapter 01.

* :func:`plot_activations`      each activation next to its derivative
* :func:`plot_decision_boundary` the regions a classifier assigns to each class, with the data
* :class:`ActivationExplorer`    a widget: pick an activation, move a neuron's weights and bias,
  watch its output curve and its decision line in the plane

The explorer draws into a plain ``matplotlib.figure.Figure`` and shows it as a
PNG in an ``ipywidgets.Image``, so it works the same with any matplotlib
backend, on ipywidgets 7 (Colab) and 8, and can be tested without a browser.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dlcourse.neurons.numpy_impl import ACTIVATIONS

__all__ = ["plot_activations", "plot_decision_boundary", "ActivationExplorer"]

_TITLES = {"relu": "ReLU", "sigmoid": "sigmoid", "tanh": "tanh", "gelu": "GELU (exact)",
           "gelu_tanh": "GELU (tanh approx.)"}


def plot_activations(names: Sequence[str] = ("relu", "sigmoid", "tanh", "gelu"),
                     lo: float = -4.0, hi: float = 4.0) -> plt.Figure:
    """One panel per activation: the function (solid) and its derivative (dashed)."""
    z = np.linspace(lo, hi, 401)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        f, grad = ACTIVATIONS[name]
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.plot(z, f(z), lw=2, label="f(z)")
        ax.plot(z, grad(z), "--", lw=2, label="f'(z)")
        ax.set_title(_TITLES.get(name, name))
        ax.set_xlabel("z")
        ax.set_ylim(-1.5, 2.5)
    np.atleast_1d(axes)[0].legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_decision_boundary(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                           ax=None, bounds: tuple[float, float, float, float] | None = None,
                           resolution: int = 200, title: str | None = None, point_size: float = 12):
    """Colour the plane by the class ``predict`` assigns, and scatter the data on top.

    Parameters
    ----------
    predict : maps an (M, 2) float64 array of points to (M,) integer labels, or to
        (M, K) scores for K classes (the class is the argmax)
    x : ndarray of shape (N, 2);  y : ndarray of shape (N,) integer labels
    ax : matplotlib axes to draw into (default: a new figure)
    bounds : (xmin, xmax, ymin, ymax); default: the data's range plus a margin
    resolution : grid points per axis
    title : the axes' title;  point_size : marker area of the data points

    Returns
    -------
    ax : the axes drawn into
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if bounds is None:
        (x0, y0), (x1, y1) = x.min(axis=0), x.max(axis=0)
        mx, my = 0.1 * (x1 - x0) + 1e-3, 0.1 * (y1 - y0) + 1e-3
        bounds = (x0 - mx, x1 + mx, y0 - my, y1 + my)
    gx, gy = np.meshgrid(np.linspace(bounds[0], bounds[1], resolution),
                         np.linspace(bounds[2], bounds[3], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)       # (M, 2)
    out = np.asarray(predict(grid))
    labels = out.argmax(axis=1) if out.ndim == 2 else out
    labels = labels.reshape(gx.shape)
    classes = int(max(labels.max(), y.max())) + 1
    cmap = plt.get_cmap("tab10")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.contourf(gx, gy, labels, levels=np.arange(classes + 1) - 0.5,
                colors=[cmap(k) for k in range(classes)], alpha=0.25)
    ax.scatter(x[:, 0], x[:, 1], c=[cmap(int(k)) for k in y], s=point_size, edgecolors="k",
               linewidths=0.3 if point_size < 50 else 1.0)
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def _affine(terms: list[tuple[float, str]], bias: float) -> str:
    """``"2.0 x1 - 1.0 x2 + 0.5"``: a readable weighted sum for a title."""
    text = f"{terms[0][0]:.1f} {terms[0][1]}"
    for weight, name in terms[1:] + [(bias, "")]:
        text += f" {'-' if weight < 0 else '+'} {abs(weight):.1f}" + (f" {name}" if name else "")
    return text


class ActivationExplorer:
    """Widget: choose an activation and a neuron's weights ``w1, w2`` and bias ``b``.

    Three panels update live:

    1. the activation ``f(z)`` and its derivative ``f'(z)``;
    2. a neuron with one input, ``a = f(w1 x + b)``: the weight stretches the
       curve, the bias slides it (its "kink" or midpoint sits at ``x = -b / w1``);
    3. a neuron with two inputs, ``a = f(w1 x1 + w2 x2 + b)`` as a heat map, with
       the line ``w1 x1 + w2 x2 + b = 0`` where ``z`` changes sign.  The weight
       vector (arrow) is perpendicular to that line: a single neuron can only
       split the plane with a straight line.

    Attributes
    ----------
    activation : ipywidgets.Dropdown
    w1, w2, b : ipywidgets.FloatSlider
    image : ipywidgets.Image, the rendered figure (PNG bytes in ``image.value``, rendered at
        ``_DPI`` = 2x and displayed ``image.width`` pixels wide, sharp on HiDPI screens)
    fig : matplotlib.figure.Figure
    widget : ipywidgets.VBox, the whole explorer (displaying this object shows it)

    Examples
    --------
    >>> explorer = ActivationExplorer()          # in a notebook cell, as its last line
    >>> explorer.w1.value = 3.0                  # what moving the slider does
    """

    _Z = np.linspace(-5.0, 5.0, 301)     # panel 1: pre-activation axis
    _X = np.linspace(-5.0, 5.0, 301)     # panel 2: the single input
    _GRID = np.linspace(-3.0, 3.0, 121)  # panel 3: each axis of the plane
    _DPI = 144                            # 2x the 72 px per inch it is displayed at

    def __init__(self, activation: str = "sigmoid", w1: float = 1.0, w2: float = 1.0, b: float = 0.0):
        import ipywidgets as widgets

        self.activation = widgets.Dropdown(options=list(ACTIVATIONS), value=activation,
                                           description="activation")
        slider = dict(min=-5.0, max=5.0, step=0.1, continuous_update=False)
        self.w1 = widgets.FloatSlider(value=w1, description="w1", **slider)
        self.w2 = widgets.FloatSlider(value=w2, description="w2", **slider)
        self.b = widgets.FloatSlider(value=b, description="b", **slider)
        self.fig = self._build_figure()
        # Rendered at _DPI (twice the 72 px per inch of the displayed size), shown at the
        # displayed size: sharp on HiDPI screens, the same size everywhere else.
        self.image = widgets.Image(format="png", width=str(round(self.fig.get_figwidth() * 72)))
        for control in (self.activation, self.w1, self.w2, self.b):
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.activation, self.b]),
                                    widgets.HBox([self.w1, self.w2]), self.image])
        self.update()

    # drawing --------------------------------------------------------------
    def _build_figure(self) -> Figure:
        fig = Figure(figsize=(12.0, 3.6))
        ax_f, ax_1d, ax_2d = fig.subplots(1, 3)
        for ax in (ax_f, ax_1d):
            ax.axhline(0, color="0.8", lw=0.8)
            ax.axvline(0, color="0.8", lw=0.8)
        (self._f_line,) = ax_f.plot(self._Z, self._Z, lw=2, label="f(z)")
        (self._grad_line,) = ax_f.plot(self._Z, self._Z, "--", lw=2, label="f'(z)")
        ax_f.set_xlabel("z")
        ax_f.legend(loc="upper left")
        (self._neuron_line,) = ax_1d.plot(self._X, self._X, lw=2, color="C2")
        self._kink = ax_1d.axvline(0.0, color="C3", ls=":", lw=1.5)
        ax_1d.set_xlabel("input x")
        ax_1d.set_ylabel("output a")
        g = self._GRID
        self._heat = ax_2d.imshow(np.zeros((g.size, g.size)), origin="lower", cmap="viridis",
                                  extent=(g[0], g[-1], g[0], g[-1]), aspect="equal")
        (self._boundary,) = ax_2d.plot([], [], color="w", lw=2)
        (self._normal,) = ax_2d.plot([], [], color="C3", lw=2, marker="o", markevery=[1])
        ax_2d.set_xlim(g[0], g[-1])
        ax_2d.set_ylim(g[0], g[-1])
        ax_2d.set_xlabel("x1")
        ax_2d.set_ylabel("x2")
        fig.colorbar(self._heat, ax=ax_2d, fraction=0.046)
        fig.subplots_adjust(left=0.05, right=0.95, bottom=0.16, top=0.88, wspace=0.3)
        self.axes = (ax_f, ax_1d, ax_2d)
        return fig

    def _on_change(self, change) -> None:
        self.update()

    @property
    def state(self) -> dict:
        """The current settings: activation name, w1, w2, b."""
        return {"activation": self.activation.value, "w1": self.w1.value,
                "w2": self.w2.value, "b": self.b.value}

    def update(self) -> None:
        """Redraw every panel for the current settings (the sliders call this)."""
        name, w1, w2, b = (self.state[k] for k in ("activation", "w1", "w2", "b"))
        f, grad = ACTIVATIONS[name]
        ax_f, ax_1d, ax_2d = self.axes

        self._f_line.set_ydata(f(self._Z))
        self._grad_line.set_ydata(grad(self._Z))
        ax_f.set_ylim(-1.5, 2.5)
        ax_f.set_title(f"{_TITLES.get(name, name)} and its derivative")

        a = f(w1 * self._X + b)
        self._neuron_line.set_ydata(a)
        kink = -b / w1 if w1 != 0 else np.nan     # where z = w1 x + b crosses 0
        self._kink.set_xdata([kink, kink])
        ax_1d.set_ylim(min(-0.1, a.min()) - 0.1, max(1.1, a.max()) + 0.1)
        ax_1d.set_title(f"a = f({_affine([(w1, 'x')], b)})")

        gx, gy = np.meshgrid(self._GRID, self._GRID)
        heat = f(w1 * gx + w2 * gy + b)
        self._heat.set_data(heat)
        low, high = float(heat.min()), float(heat.max())
        if high - low < 1e-6:                    # a flat output (w = 0): give the colours some room
            low, high = low - 0.5, high + 0.5
        self._heat.set_clim(low, high)
        self._boundary.set_data(*self.decision_line())
        scale = 1.0 / max(1.0, np.hypot(w1, w2) / 2.5)   # keep the arrow inside the panel
        self._normal.set_data([0.0, w1 * scale], [0.0, w2 * scale])
        ax_2d.set_title(f"a = f({_affine([(w1, 'x1'), (w2, 'x2')], b)})")

        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png", dpi=self._DPI)
        self.image.value = buffer.getvalue()

    def decision_line(self) -> tuple[np.ndarray, np.ndarray]:
        """Points (x1, x2) of the line ``w1 x1 + w2 x2 + b = 0`` across the panel (empty if w = 0)."""
        w1, w2, b = self.w1.value, self.w2.value, self.b.value
        g = self._GRID
        if abs(w2) >= abs(w1) and w2 != 0:       # solve for x2: safe when the line is not steep
            return g, -(w1 * g + b) / w2
        if w1 != 0:                              # steep line: solve for x1 instead
            return -(w2 * g + b) / w1, g
        return np.array([]), np.array([])        # w = 0: z = b everywhere, no line

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)
