"""Chapter 10's plots and widget: what a model keeps of its accuracy as it gets smaller.

Dimension letters: N images, D = 64 pixels, H hidden units, K = 10 classes, L layers.

* :func:`tradeoff_explorer` — the widget: a sparsity slider (magnitude pruning, global or per
  layer) and a bit-width slider (affine weight quantization, per channel or per tensor, or float32)
  move one point on the accuracy-against-size plot, over the curves measured for pruning alone and
  quantization alone (and any curve measured elsewhere, e.g. pruning with retraining);
* :func:`mlp_accuracy`, :func:`compressed`, :func:`storage_bytes` — the NumPy pieces it is built
  from, usable on their own;
* :func:`plot_tradeoff` — the static accuracy-against-size plot;
* :class:`LiveTrainPlot` — a training run's loss and accuracy, redrawn in place.

How a compressed model's size is counted (:func:`storage_bytes`): every weight that is kept costs
``bits`` bits; a pruned model also stores a bitmap of 1 bit per weight saying which are kept (the
simplest sparse format; CSR's 16- or 32-bit column indices cost more at the sparsities used here);
a quantized layer stores its scale (32 bits) and zero point (32 bits) once per tensor or once per
output row; biases stay float32.  It is the size of the information, not of a file format.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from dlcourse.efficiency import numpy_impl as en
from dlcourse.optim.explore import figure_png

POINT_COLOR, PRUNE_COLOR, QUANT_COLOR, HERE_COLOR = "#d62728", "#1f77b4", "#2ca02c", "#9467bd"
WEIGHTS = ("float32", "int, per channel", "int, per tensor")


# --------------------------------------------------------------------------- the model, in NumPy

def _layer_names(params: dict) -> list[str]:
    """The prefixes of the dense layers, in order ("0", "2", "4" for an nn.Sequential MLP)."""
    names = [k[: -len(".weight")] for k in params if k.endswith(".weight")]
    if not names:
        raise ValueError("params holds no '<layer>.weight' entry: give a state_dict-like dict of an MLP")
    return names


def mlp_accuracy(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of the images (N, D) whose largest logit is their label (N,) (logits by
    :func:`dlcourse.efficiency.numpy_impl.mlp_forward`)."""
    logits = en.mlp_forward(params, np.asarray(x, dtype=np.float64))
    return float(np.mean(logits.argmax(axis=1) == np.asarray(y)))


def compressed(params: dict, sparsity: float = 0.0, bits: Optional[int] = None, scope: str = "global",
               per_channel: bool = True) -> tuple[dict, dict]:
    """The MLP's weights pruned to ``sparsity`` and quantized to ``bits`` (None: float).

    Magnitude pruning first (weights only, never biases; ``scope`` "global" or "layer"), then each
    weight matrix is quantized and dequantized (unsigned affine, per output row or per tensor), and
    the pruned weights are zero again (0 is exact in an affine grid whose range includes it, so the
    mask survives).  Returns (new params, masks); the input is not changed.
    """
    weights = {k: v for k, v in params.items() if k.endswith(".weight")}
    masks = en.magnitude_masks(weights, sparsity, scope=scope)
    out = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    for k, m in masks.items():
        w = out[k] * m
        if bits is not None:
            axis = 0 if per_channel else None
            scale, zp = en.qparams(w, bits=bits, axis=axis)
            w = en.dequantize(en.quantize(w, scale, zp, bits=bits, axis=axis), scale, zp, axis=axis) * m
        out[k] = w
    return out, masks


def storage_bytes(params: dict, masks: Optional[dict] = None, bits: Optional[int] = None,
                  per_channel: bool = True) -> float:
    """Bytes to store the model as described in the module doc (masks None: a dense model)."""
    total_bits = 0.0
    for name in _layer_names(params):
        w, b = params[name + ".weight"], params[name + ".bias"]
        kept = float(masks[name + ".weight"].sum()) if masks is not None else float(w.size)
        total_bits += kept * (bits or 32)
        if masks is not None and kept < w.size:
            total_bits += w.size                                   # the bitmap of kept weights
        if bits is not None:
            total_bits += 64 * (w.shape[0] if per_channel else 1)  # scale + zero point per row / tensor
        total_bits += 32 * b.size
    return total_bits / 8


# --------------------------------------------------------------------------- the static plot

def plot_tradeoff(ax, curves: dict, point: Optional[tuple] = None, title: str = "",
                  colors: Optional[dict] = None) -> None:
    """Accuracy (%) against size (KB, log scale): ``curves`` name -> (sizes in bytes, accuracies).

    ``colors`` maps a curve's name to its colour (so a curve keeps its colour when others come
    and go); the others take the next colour of a fixed cycle.
    """
    cycle = iter(["#ff7f0e", "#8c564b", "#7f7f7f", "#17becf", "#bcbd22"])
    for name, (sizes, accs) in curves.items():
        color = (colors or {}).get(name) or next(cycle, "#7f7f7f")
        ax.plot(np.asarray(sizes) / 1024, 100 * np.asarray(accs), "o-", ms=3, lw=1.2, color=color, label=name)
    if point is not None:
        ax.plot(point[0] / 1024, 100 * point[1], "*", ms=16, color=POINT_COLOR, label="this setting", zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("model size (KB, log scale)", fontsize=8)
    ax.set_ylabel("test accuracy (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)


# --------------------------------------------------------------------------- the widget

class TradeoffExplorer:
    """Sparsity and bit-width sliders move a point on the accuracy-against-size plot.

    The curves: magnitude pruning alone (float32, the chosen scope), weight quantization alone
    (per channel or per tensor as chosen, no pruning), the same quantization at the slider's
    sparsity (the curve the point moves along), and any ``measured`` curves given.  Nothing here
    retrains: every point is the trained model compressed after the fact, evaluated on the test
    images in NumPy (a few milliseconds), so the sliders answer at once.

    Attributes
    ----------
    sparsity, bits, weights, scope : the controls; picture, readout; updates; widget;
    last : dict of the last redraw (``accuracy``, ``bytes``, ``ratio``, ``sparsity``, ``bits``)
    """

    SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    BITS = (2, 3, 4, 5, 6, 8)

    def __init__(self, params: dict, x, y, measured: Optional[dict] = None):
        import ipywidgets as w
        self.params = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float64)
                       for k, v in params.items()}
        _layer_names(self.params)
        self.x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(self.x) != len(self.y) or len(self.y) == 0:
            raise ValueError(f"give as many labels as images (got {len(self.x)} images, {len(self.y)} labels)")
        self.measured = dict(measured or {})
        self.dense_bytes = storage_bytes(self.params)
        self.dense_accuracy = mlp_accuracy(self.params, self.x, self.y)
        self._cache: dict = {}
        style = {"description_width": "80px"}
        narrow = w.Layout(width="340px")
        self.sparsity = w.FloatSlider(value=0.9, min=0.0, max=0.98, step=0.02, description="sparsity",
                                      style=style, layout=narrow, continuous_update=False, readout_format=".2f")
        self.bits = w.IntSlider(value=4, min=2, max=8, description="bits", style=style, layout=narrow,
                                continuous_update=False)
        self.weights = w.Dropdown(options=list(WEIGHTS), value=WEIGHTS[1], description="weights", style=style,
                                  layout=narrow)
        self.scope = w.Dropdown(options=["global", "layer"], value="global", description="pruning", style=style,
                                layout=narrow)
        self.picture = w.Image(format="png", layout=w.Layout(width="100%", max_width="760px"))
        self.readout = w.HTML()
        self.fig = Figure(figsize=(7.4, 3.4), layout="constrained")
        self.updates = 0
        self.last: dict = {}
        controls = w.HBox([w.VBox([self.sparsity, self.bits]), w.VBox([self.weights, self.scope])],
                          layout=w.Layout(flex_flow="row wrap"))
        self.widget = w.VBox([controls, self.readout, self.picture])
        for control in (self.sparsity, self.bits, self.weights, self.scope):
            control.observe(self.update, names="value")
        self.update()

    def evaluate(self, sparsity: float, bits: Optional[int], scope: str, per_channel: bool) -> tuple[float, float]:
        """(size in bytes, test accuracy) of one setting; cached."""
        key = (round(float(sparsity), 4), bits, scope, per_channel if bits is not None else None)
        if key not in self._cache:
            p, masks = compressed(self.params, sparsity, bits, scope=scope, per_channel=per_channel)
            size = storage_bytes(p, masks if sparsity > 0 else None, bits, per_channel)
            self._cache[key] = (size, mlp_accuracy(p, self.x, self.y))
        return self._cache[key]

    def curves(self) -> dict:
        """The plot's curves for the current dropdowns and sparsity."""
        scope, kind = self.scope.value, self.weights.value
        per_channel = kind != WEIGHTS[2]
        quant_name = "per channel" if per_channel else "per tensor"
        prune = [self.evaluate(s, None, scope, True) for s in self.SPARSITIES]
        quant = [self.evaluate(0.0, b, scope, per_channel) for b in self.BITS]
        out = {f"pruning alone ({scope}, float32)": tuple(zip(*prune)),
               f"quantization alone ({quant_name}), 2-8 bits": tuple(zip(*quant))}
        self._colors = {name: color for name, color in zip(out, (PRUNE_COLOR, QUANT_COLOR))}
        s = float(self.sparsity.value)
        if kind != WEIGHTS[0] and s > 0:
            here = [self.evaluate(s, b, scope, per_channel) for b in self.BITS]
            out[f"quantization at sparsity {s:.2f}"] = tuple(zip(*here))
            self._colors[f"quantization at sparsity {s:.2f}"] = HERE_COLOR
        out.update(self.measured)
        return out

    def update(self, change=None) -> None:
        s, kind = float(self.sparsity.value), self.weights.value
        bits = None if kind == WEIGHTS[0] else int(self.bits.value)
        try:
            size, acc = self.evaluate(s, bits, self.scope.value, kind != WEIGHTS[2])
            curves = self.curves()
        except Exception as exc:  # never a traceback in the widget: say what failed
            self.readout.value = f"<b>cannot show this:</b> {type(exc).__name__}: {exc}"
            return
        ratio = self.dense_bytes / size
        what = "float32" if bits is None else f"{bits}-bit {kind.split(', ')[1]}"
        self.readout.value = (f"sparsity {s:.0%} ({self.scope.value}), {what}: <b>{acc:.1%}</b> test accuracy "
                              f"(dense float32 {self.dense_accuracy:.1%}), {size / 1024:.1f} KB, "
                              f"<b>{ratio:.1f}× smaller</b>")
        self.last = dict(accuracy=acc, bytes=size, ratio=ratio, sparsity=s, bits=bits)
        self.fig.clear()
        ax = self.fig.subplots()
        plot_tradeoff(ax, curves, point=(size, acc), colors=self._colors,
                      title=f"{what}, sparsity {s:.0%}: {acc:.1%} at {size / 1024:.1f} KB ({ratio:.1f}× smaller)")
        self.picture.value = figure_png(self.fig)
        self.updates += 1

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def tradeoff_explorer(params: dict, x, y, measured: Optional[dict] = None) -> TradeoffExplorer:
    """Build the trade-off explorer for an MLP; display it as a cell's last expression.

    Parameters
    ----------
    params : the MLP's state_dict (tensors or arrays), Linear layers only ("0.weight" (H, D), ...)
    x : (N, D) test images; y : (N,) labels
    measured : optional extra curves, name -> (sizes in bytes, accuracies), e.g. pruning with
        retraining measured by :func:`dlcourse.efficiency.torch_impl.pruning_curve`
    """
    return TradeoffExplorer(params, x, y, measured=measured)


# --------------------------------------------------------------------------- live training plot

class LiveTrainPlot:
    """A training run's loss and test accuracy, redrawn in place (a callback ``(history) -> None``).

    ``history`` is a dict of lists: ``step``, ``loss`` and optionally ``accuracy`` (with ``eval_step``).
    Several runs can share one plot: call :meth:`new_run` with a name before each.
    """

    def __init__(self, title: str = "training", every: int = 1):
        from IPython.display import display
        import ipywidgets as w
        self.title, self.every = title, max(1, int(every))
        self.runs: dict = {}
        self.current = "run"
        self.fig = Figure(figsize=(7.4, 2.6), layout="constrained")
        self.picture = w.Image(format="png", layout=w.Layout(width="100%", max_width="760px"))
        self.calls = 0
        display(self.picture)

    def new_run(self, name: str) -> "LiveTrainPlot":
        self.current = name
        return self

    def __call__(self, history: dict) -> None:
        self.runs[self.current] = {k: list(v) for k, v in history.items()}
        self.calls += 1
        if self.calls % self.every:
            return
        self.fig.clear()
        ax = self.fig.subplots(1, 2)
        for name, h in self.runs.items():
            ax[0].plot(h.get("step", range(len(h["loss"]))), h["loss"], lw=1, label=name)
            if h.get("accuracy"):
                ax[1].plot(h.get("eval_step", range(len(h["accuracy"]))), 100 * np.asarray(h["accuracy"]),
                           "o-", ms=3, lw=1, label=name)
        ax[0].set_yscale("log")
        ax[0].set_title(f"{self.title}: training loss", fontsize=9)
        ax[1].set_title("test accuracy (%)", fontsize=9)
        for a in ax:
            a.set_xlabel("step", fontsize=8)
            a.tick_params(labelsize=7)
            a.grid(True, alpha=0.3)
            a.legend(fontsize=7)
        self.picture.value = figure_png(self.fig)
