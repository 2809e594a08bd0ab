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


def _label_edge(ax, start, end, text: str, offset: float = 6.0) -> None:
    """Write ``text`` at the middle of the edge start -> end, nudged ``offset`` points off the line.

    The nudge is perpendicular to the edge as drawn on screen (to its left, looking from the
    tail to the head), and the label sits on a white rounded background so it stays readable
    where it crosses other lines.
    """
    (x0, y0), (x1, y1) = ax.transData.transform([start, end])
    dx, dy = x1 - x0, y1 - y0
    length = float(np.hypot(dx, dy)) or 1.0
    normal = (-dy / length, dx / length)
    if normal[1] < 0:  # keep labels above the line (or to its left when vertical)
        normal = (-normal[0], -normal[1])
    middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    ax.annotate(text, xy=middle, xytext=(offset * normal[0], offset * normal[1]),
                textcoords="offset points", ha="center", va="center", fontsize=7.5,
                color="#0969da", zorder=3,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="#d0d7de", lw=0.6))


def _free_side(ax, centre, text: str, edges) -> str:
    """``"below"`` or ``"above"``: where a grad label next to the box at ``centre`` crosses fewer edges.

    Works in screen points with the box and label sizes estimated from the font sizes used
    by :func:`draw_graph` (two lines of 9 pt in the box, one line of 8 pt in the label).
    """
    to_points = 72.0 / ax.figure.dpi
    cx, cy = ax.transData.transform(centre) * to_points
    half_box, half_w, half_h = 14.0, 0.3 * 8 * len(text) + 2, 6.0
    segments = [ax.transData.transform([a, b]) * to_points for a, b in edges]
    t = np.linspace(0.0, 1.0, 60)[:, None]

    def hits(yc):
        count = 0
        for (x0, y0), (x1, y1) in segments:
            px, py = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            count += bool(np.any((np.abs(px - cx) < half_w) & (np.abs(py - yc) < half_h)))
        return count

    below = hits(cy - half_box - 2 - half_h)
    above = hits(cy + half_box + 2 + half_h)
    return "above" if above < below else "below"


def draw_graph(root: Value, ax=None, show_grad: bool = True, show_local: bool = True):
    """Draw the computational graph that produced ``root``.

    Parameters
    ----------
    root : the output Value (call ``root.backward()`` first to see gradients)
    ax : matplotlib Axes to draw on (a new figure if None)
    show_grad : write each node's ``.grad`` just below its box
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
    columns_x = [p[0] for p in pos.values()]
    ax.set_xlim(min(columns_x) - 0.7, max(columns_x) + 0.7)
    ax.set_ylim(-height / 2 - 0.1, height / 2 + 0.1)  # room for a grad label above or below
    ax.axis("off")
    # Boxes first (lowest zorder, so they are drawn first and their outlines are known when the
    # arrows are clipped to them), then the arrows, then the labels on white backgrounds on top.
    boxes = {}
    for node in order:
        x, y = pos[id(node)]
        op = _OP_NAMES.get(node.op, node.op)
        title = " = ".join(t for t in (node.label, op) if t) or "const"
        face = "#ddf4ff" if not node.children else "#f6f8fa"
        boxes[id(node)] = ax.text(x, y, f"{title}\n{node.data:.4g}", ha="center", va="center",
                                  fontsize=9, zorder=1,
                                  bbox=dict(boxstyle="round,pad=0.35", fc=face, ec="0.3"))
    for node in order:
        for child, local in zip(node.children, node.local_grads):
            head, tail = boxes[id(node)], boxes[id(child)]
            ax.annotate("", xy=pos[id(node)], xytext=pos[id(child)], zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="0.45", lw=1.2, mutation_scale=12,
                                        patchA=tail.get_bbox_patch(), patchB=head.get_bbox_patch(),
                                        shrinkA=0, shrinkB=1))
            if show_local:
                _label_edge(ax, pos[id(child)], pos[id(node)], f"{local:.3g}")
    if show_grad:
        edges = [(pos[id(child)], pos[id(node)]) for node in order for child in node.children]
        for node in order:
            text = f"grad {node.grad:.4g}"
            side = _free_side(ax, pos[id(node)], text, edges)
            ax.annotate(text, xy=(0.5, 0 if side == "below" else 1),
                        xycoords=boxes[id(node)].get_bbox_patch(),
                        xytext=(0, -2 if side == "below" else 2), textcoords="offset points",
                        ha="center", va="top" if side == "below" else "bottom",
                        fontsize=8, color=_GRAD_COLOUR, zorder=4,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"))
    return ax


def neuron_graph(x1: float = 1.5, w1: float = -0.5, x2: float = -1.0, w2: float = -1.0,
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

    The drawing is a PNG in an ``ipywidgets.Image`` whose value is replaced on every
    change: no ``Output`` widget, no ``clear_output``, no matplotlib figure displayed
    (which shows as ``<Figure size ...>`` where no pyplot figure was drawn before).

    Attributes
    ----------
    sliders : dict name -> FloatSlider for ``x1, w1, x2, w2, b`` (range -5 to 5)
    activation : Dropdown, ``tanh`` / ``sigmoid`` / ``relu``
    root : the current output Value (after backward)
    fig, ax : the matplotlib figure it draws on (never displayed itself)
    image : the ipywidgets Image showing the drawing
    widget : the ipywidgets box to display
    """

    def __init__(self, **initial: float):
        import ipywidgets as widgets

        defaults = dict(x1=1.5, w1=-0.5, x2=-1.0, w2=-1.0, b=0.5)
        defaults.update(initial)
        wide = {"description_width": "initial"}
        self.sliders = {name: widgets.FloatSlider(value=value, min=-5.0, max=5.0, step=0.25,
                                                  description=name, continuous_update=False,
                                                  readout_format=".2f", style=wide,
                                                  layout=widgets.Layout(width="280px", min_width="280px"))
                        for name, value in defaults.items()}
        self.activation = widgets.Dropdown(options=["tanh", "sigmoid", "relu"], value="tanh",
                                           description="activation", style=wide,
                                           layout=widgets.Layout(width="220px", min_width="220px"))
        self.fig, self.ax = plt.subplots(figsize=(10, 4.2))
        plt.close(self.fig)  # drawn into the Image widget only, never shown as a figure
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1000px",
                                                                       height="auto"))
        for control in [*self.sliders.values(), self.activation]:
            control.observe(self._on_change, names="value")
        controls = widgets.HBox([*self.sliders.values(), self.activation],
                                layout=widgets.Layout(flex_flow="row wrap", width="100%"))
        self.widget = widgets.VBox([controls, self.image], layout=widgets.Layout(width="100%"))
        self.root: Value | None = None
        self.update()

    def _on_change(self, change) -> None:
        self.update()

    def update(self) -> None:
        """Rebuild the neuron from the controls, backpropagate, redraw into the image."""
        import io

        inputs = {name: s.value for name, s in self.sliders.items()}
        self.root = neuron_graph(**inputs, activation=self.activation.value)
        self.ax.clear()
        draw_graph(self.root, ax=self.ax)
        self.ax.set_title(f"o = {self.activation.value}(x1·w1 + x2·w2 + b): forward values in the boxes, "
                          "gradients in red, local derivatives on the arrows", fontsize=9)
        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png", dpi=90)
        self.image.value = buffer.getvalue()

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
