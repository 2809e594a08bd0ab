"""Pictures for chapter 02: computational graphs drawn with matplotlib, and a widget to play with one.

:func:`draw_graph` lays out the graph of a :class:`~dlcourse.backprop.engine.Value`
left to right (inputs on the left, the output on the right).  Each box shows a
node's forward value and its gradient; each arrow is labelled with its local
derivative, so you can redo the chain rule by eye: a node's gradient is the sum,
over its outgoing arrows, of the local derivative times the gradient at the
arrow's head.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from dlcourse.backprop import numpy_impl as ref
from dlcourse.backprop.engine import Value, topological_order

__all__ = ["draw_graph", "neuron_graph", "GraphExplorer", "graph_explorer", "plot_local_derivatives"]

_OP_NAMES = {"+": "+", "*": "×", "-": "−", "/": "÷", "neg": "−x"}
_GRAD_COLOUR = "#cf222e"


def _levels(order: list[Value]) -> dict[int, int]:
    """Column of each node: 0 for inputs, else one more than its deepest child."""
    level: dict[int, int] = {}
    for node in order:  # children come first in a topological order
        level[id(node)] = 1 + max((level[id(c)] for c in node.children), default=-1)
    return level


def draw_graph(root: Value, ax=None, show_grad: bool = True, show_local: bool = True):
    """Draw the computational graph that produced ``root``.

    Parameters
    ----------
    root : the output Value (call ``root.backward()`` first to see gradients)
    ax : matplotlib Axes to draw on (a new figure if None)
    show_grad : write each node's ``.grad`` in its box
    show_local : write each edge's local derivative on the arrow

    Returns
    -------
    ax : the Axes
    """
    order = topological_order(root)
    level = _levels(order)
    columns: dict[int, list[Value]] = {}
    for node in order:
        columns.setdefault(level[id(node)], []).append(node)
    height = max(len(c) for c in columns.values())
    pos = {}
    for col, nodes in columns.items():
        for i, node in enumerate(nodes):  # centre each column vertically
            pos[id(node)] = (col * 1.6, (len(nodes) - 1) / 2 - i)
    if ax is None:
        _, ax = plt.subplots(figsize=(2.1 * len(columns) + 1, 1.3 * height + 1))
    for node in order:
        x1, y1 = pos[id(node)]
        for child, local in zip(node.children, node.local_grads):
            x0, y0 = pos[id(child)]
            ax.annotate("", xy=(x1 - 0.42, y1), xytext=(x0 + 0.42, y0),
                        arrowprops=dict(arrowstyle="->", color="0.45", lw=1.2))
            if show_local:
                ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, f"{local:.3g}", fontsize=7.5,
                        ha="center", va="bottom", color="#0969da")
    for node in order:
        x, y = pos[id(node)]
        op = _OP_NAMES.get(node.op, node.op)
        title = " = ".join(t for t in (node.label, op) if t) or "const"
        lines = [title, f"{node.data:.4g}"]
        face = "#ddf4ff" if not node.children else "#f6f8fa"
        ax.text(x, y, "\n".join(lines), ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", fc=face, ec="0.3"))
        if show_grad:
            ax.text(x, y - 0.27, f"grad {node.grad:.4g}", ha="center", va="top", fontsize=8,
                    color=_GRAD_COLOUR)
    columns_x = [p[0] for p in pos.values()]
    ax.set_xlim(min(columns_x) - 0.7, max(columns_x) + 0.7)
    ax.set_ylim(-height / 2 - 0.2, height / 2 + 0.1)
    ax.axis("off")
    return ax


def neuron_graph(x1: float = 1.5, w1: float = -0.5, x2: float = -1.0, w2: float = 2.0,
                 b: float = 0.5, activation: str = "tanh") -> Value:
    """One neuron ``o = act(x1 w1 + x2 w2 + b)`` built from Values, after ``o.backward()``."""
    leaves = {name: Value(v, label=name) for name, v in
              dict(x1=x1, w1=w1, x2=x2, w2=w2, b=b).items()}
    x1w1 = leaves["x1"] * leaves["w1"]
    x1w1.label = "x1w1"
    x2w2 = leaves["x2"] * leaves["w2"]
    x2w2.label = "x2w2"
    s = x1w1 + x2w2
    s.label = "s"
    n = s + leaves["b"]
    n.label = "n"
    if activation not in ("tanh", "sigmoid", "relu"):
        raise ValueError(f"activation must be 'tanh', 'sigmoid' or 'relu', got {activation!r}")
    out = getattr(n, activation)()
    out.label = "o"
    out.backward()
    return out


class GraphExplorer:
    """A neuron's computational graph with sliders for its inputs; redraws on every change.

    Attributes
    ----------
    sliders : dict name -> FloatSlider for ``x1, w1, x2, w2, b``
    activation : Dropdown, ``tanh`` / ``sigmoid`` / ``relu``
    root : the current output Value (after backward)
    fig, ax : the matplotlib figure it draws on
    widget : the ipywidgets box to display
    """

    def __init__(self, **initial: float):
        import ipywidgets as widgets

        defaults = dict(x1=1.5, w1=-0.5, x2=-1.0, w2=2.0, b=0.5)
        defaults.update(initial)
        self.sliders = {name: widgets.FloatSlider(value=value, min=-3.0, max=3.0, step=0.1,
                                                  description=name, continuous_update=False,
                                                  layout=widgets.Layout(width="260px"))
                        for name, value in defaults.items()}
        self.activation = widgets.Dropdown(options=["tanh", "sigmoid", "relu"], value="tanh",
                                           description="activation")
        self.output = widgets.Output()
        self.fig, self.ax = plt.subplots(figsize=(11, 4.2))
        plt.close(self.fig)  # shown inside the widget only, not again below the cell
        for control in [*self.sliders.values(), self.activation]:
            control.observe(self._on_change, names="value")
        controls = widgets.VBox([*self.sliders.values(), self.activation])
        self.widget = widgets.HBox([controls, self.output])
        self.root: Value | None = None
        self.update()

    def _on_change(self, change) -> None:
        self.update()

    def update(self) -> None:
        """Rebuild the neuron from the controls, backpropagate, redraw."""
        from IPython.display import clear_output, display

        inputs = {name: s.value for name, s in self.sliders.items()}
        self.root = neuron_graph(**inputs, activation=self.activation.value)
        self.ax.clear()
        draw_graph(self.root, ax=self.ax)
        self.ax.set_title(f"o = {self.activation.value}(x1·w1 + x2·w2 + b): forward values in the boxes, "
                          "gradients in red, local derivatives on the arrows", fontsize=9)
        with self.output:
            clear_output(wait=True)
            display(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def graph_explorer(**initial: float) -> GraphExplorer:
    """The widget of the lesson: ``graph_explorer()`` as the last line of a cell shows it."""
    return GraphExplorer(**initial)


def plot_local_derivatives(lim: float = 4.0):
    """ReLU, sigmoid and tanh with their derivatives, computed by the package's backward functions.

    Each derivative curve is ``*_backward(dout=1, cache)``: with an upstream
    gradient of one, a backward function returns exactly the local derivative.
    """
    x = np.linspace(-lim, lim, 401)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
    for ax, name in zip(axes, ("relu", "sigmoid", "tanh")):
        out, cache = getattr(ref, f"{name}_forward")(x)
        slope = getattr(ref, f"{name}_backward")(np.ones_like(x), cache)
        ax.plot(x, out, label=f"{name}(x)")
        ax.plot(x, slope, "--", label=f"{name}'(x)")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylim(-1.2, 2.2)
    fig.tight_layout()
    return fig
