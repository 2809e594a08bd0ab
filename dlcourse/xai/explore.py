"""Chapter 09's plots and widget: what a digits model looked at, and how little it takes to fool it.

Dimension letters: N images, D = 64 pixels (8 x 8), K = 10 classes, S methods or stages.

* :func:`attribution_explorer` — the widget: pick a model, an image, an attribution method and
  the class to explain; an eps slider replaces the image by its adversarial example (PGD within
  eps of it) and every panel follows: the image, the method's map, the perturbation, and the
  model's class probabilities before and after;
* :func:`plot_maps` — a grid of attribution maps (rows: images, columns: methods);
* :func:`plot_randomization` — the model-randomization sanity check, maps and rank correlations;
* :func:`plot_curves` — curves against a shared x axis (deletion / insertion, accuracy against eps);
* :class:`LiveRobustPlot` — adversarial training's loss and clean / robust accuracy, live.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from dlcourse.optim.explore import figure_png

ATTACK_COLOR, CLEAN_COLOR = "#d62728", "#1f77b4"


# --------------------------------------------------------------------------- static plots

def _side(d: int) -> int:
    side = int(round(np.sqrt(d)))
    if side * side != d:
        raise ValueError(f"an image needs a square number of pixels, got {d}")
    return side


def show_image(ax, image, title: str = "") -> None:
    """A grey digit (64,) or (8, 8) in [0, 1] on ``ax`` (white background, dark ink)."""
    image = np.asarray(image, dtype=np.float64).reshape(-1)
    s = _side(image.size)
    ax.imshow(image.reshape(s, s), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def show_map(ax, attribution, title: str = "", image=None, signed: bool = True) -> None:
    """An attribution map (64,) or (8, 8) on ``ax``: red raises the class score, blue lowers it.

    The colour scale is symmetric around 0 and set by the map's own largest magnitude (maps of
    different methods have different units); ``image``, when given, is drawn faintly as contours.
    """
    a = np.asarray(attribution, dtype=np.float64).reshape(-1)
    s = _side(a.size)
    scale = float(np.max(np.abs(a))) or 1.0
    if signed:
        ax.imshow(a.reshape(s, s), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    else:
        ax.imshow(np.abs(a).reshape(s, s), cmap="Reds", vmin=0.0, vmax=scale, interpolation="nearest")
    if image is not None:
        ax.contour(np.asarray(image, dtype=np.float64).reshape(s, s), levels=[0.5], colors="k",
                   linewidths=0.6, alpha=0.5)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_maps(fig: Figure, images, maps: dict, titles: Optional[Sequence[str]] = None) -> Figure:
    """Rows: images (N, 64); columns: the image, then one map per method.

    ``maps`` is ``{method: (N, 64) array-like}``; ``titles`` (N,) label the rows' images.
    """
    images = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    names = list(maps)
    axes = fig.subplots(len(images), len(names) + 1, squeeze=False)
    for i, image in enumerate(images):
        show_image(axes[i, 0], image, titles[i] if titles is not None else "")
        for j, name in enumerate(names):
            m = np.asarray(maps[name], dtype=np.float64).reshape(len(images), -1)[i]
            show_map(axes[i, j + 1], m, name if i == 0 else "", image=image)
    return fig


def plot_randomization(fig: Figure, image, stages: Sequence[str], maps: dict, table: dict) -> Figure:
    """The sanity check of Adebayo et al. (2018): each method's map (rows) as the layers are
    randomized one after the other from the top (columns), titled with the rank correlation to
    the trained model's map.

    ``maps`` is ``{method: (S, 64)}`` (stage 0 = the trained model), ``table`` is
    ``{method: (S,) Spearman}``.
    """
    names = list(maps)
    axes = fig.subplots(len(names), len(stages) + 1, squeeze=False)
    for i, name in enumerate(names):
        show_image(axes[i, 0], image, name)
        for j, stage in enumerate(stages):
            rho = float(np.asarray(table[name])[j])
            show_map(axes[i, j + 1], np.asarray(maps[name])[j], f"{stage}\nρ = {rho:.2f}" if i == 0
                     else f"ρ = {rho:.2f}", signed=False)
    return fig


def plot_curves(ax, x, curves: dict, xlabel: str, ylabel: str, title: str = "") -> None:
    """Curves ``{label: (len(x),) values}`` against ``x``, with a legend."""
    for label, y in curves.items():
        ax.plot(x, np.asarray(y, dtype=np.float64), marker="o" if len(x) <= 12 else None, ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


class LiveRobustPlot:
    """A callback for :func:`dlcourse.xai.trust.adversarial_training`: the loss on the attacked
    batches, and validation accuracy clean and under PGD, redrawn in place after every epoch
    (at most every ``min_interval`` seconds, always after the first and the last).

    Attributes
    ----------
    fig; updates : how many times it was redrawn
    """

    def __init__(self, title: str = "adversarial training", epochs: Optional[int] = None,
                 min_interval: float = 1.5):
        self.fig = Figure(figsize=(8.5, 2.8), layout="constrained")
        self.ax_loss, self.ax_acc = self.fig.subplots(1, 2)
        self.title, self.epochs, self.min_interval = title, epochs, min_interval
        self.updates, self._handle, self._shown_at = 0, None, -np.inf

    def __call__(self, history) -> None:
        import time

        from dlcourse.optim.explore import show_in_place
        epochs = np.arange(1, len(history.loss) + 1)
        self.ax_loss.clear()
        self.ax_acc.clear()
        self.ax_loss.plot(epochs, history.loss, "o-", ms=3, color="C3")
        self.ax_loss.set(xlabel="epoch", ylabel="loss on attacked batches", title=f"{self.title}: loss")
        self.ax_acc.plot(epochs, history.clean_val, "o-", ms=3, color=CLEAN_COLOR, label="clean")
        self.ax_acc.plot(epochs, history.robust_val, "o-", ms=3, color=ATTACK_COLOR,
                         label=f"PGD-10, eps {history.eps:g}")
        self.ax_acc.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1.01),
                        title=f"{self.title}: accuracy")
        self.ax_acc.legend(fontsize=7)
        for ax in (self.ax_loss, self.ax_acc):
            ax.grid(alpha=0.3)
            if self.epochs:
                ax.set_xlim(0.5, self.epochs + 0.5)
        self.updates += 1
        last = self.epochs is not None and len(history.loss) >= self.epochs
        if self._handle is None or last or time.perf_counter() - self._shown_at >= self.min_interval:
            self._handle = show_in_place(self.fig, self._handle)
            self._shown_at = time.perf_counter()


# --------------------------------------------------------------------------- the widget

def _probabilities(model, x) -> np.ndarray:
    import torch

    from dlcourse.xai import torch_impl
    return torch.softmax(torch_impl.logits(model, x), dim=1).double().cpu().numpy()


def _default_attack(model, x, y, eps: float):
    """PGD, 10 steps of 2.5 eps / 10, from x itself (no random start: the same example every time)."""
    from dlcourse.xai import trust
    return trust.pgd(model, x, y, eps, steps=10, random_start=False)


class AttributionExplorer:
    """The widget: a model, an image, a method, the class explained, and eps for an adversarial example.

    The picture, left to right: the image the model sees (the adversarial example when eps > 0),
    the method's attribution map for the chosen class on that image, the perturbation added
    (x_adv − x, on a ±eps scale), and the class probabilities before (blue) and after (red).

    Attributes
    ----------
    model, image, method, target, eps : the controls; fig, picture; updates; widget;
    last : dict of what the last redraw showed (``x``, ``x_adv``, ``map``, ``probs``, ``probs_adv``)
    """

    def __init__(self, models: dict, x, y, methods: Optional[Callable] = None,
                 attack: Optional[Callable] = None, n_images: int = 30, eps_max: float = 0.3,
                 eps_step: float = 0.025):
        import ipywidgets as w
        if not models:
            raise ValueError("give at least one model: {'name': nn.Module}")
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
        if len(x) == 0:
            raise ValueError("give at least one image")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError("the images' pixels must lie in [0, 1] (the attack clips to that range)")
        self.models = models
        self.x, self.y = x[:n_images], y[:n_images]
        self.methods_for = methods or self._methods_for
        self.attack = attack or _default_attack
        self._cache: dict = {}
        style = {"description_width": "70px"}
        narrow = w.Layout(width="330px")
        names = list(models)
        self.model = w.Dropdown(options=names, value=names[0], description="model", style=style, layout=narrow)
        self.image = w.IntSlider(value=0, min=0, max=len(self.x) - 1, description="image #", style=style,
                                 layout=narrow, continuous_update=False)
        self.method = w.Dropdown(options=self._method_names(), description="method", style=style, layout=narrow)
        self.target = w.Dropdown(options=["predicted", "true"] + [str(k) for k in range(10)], value="predicted",
                                 description="explain", style=style, layout=narrow)
        self.eps = w.FloatSlider(value=0.0, min=0.0, max=eps_max, step=eps_step, description="eps (PGD)",
                                 style=style, layout=narrow, continuous_update=False, readout_format=".3f")
        self.picture = w.Image(format="png", layout=w.Layout(width="100%", max_width="820px"))
        self.message = w.HTML()
        self.fig = Figure(figsize=(8.2, 2.5), layout="constrained")
        self.updates = 0
        self.last: dict = {}
        controls = w.HBox([w.VBox([self.model, self.image, self.method]), w.VBox([self.target, self.eps])],
                          layout=w.Layout(flex_flow="row wrap"))
        self.widget = w.VBox([controls, self.message, self.picture])
        self.model.observe(self._model_changed, names="value")
        for control in (self.image, self.method, self.target, self.eps):
            control.observe(self.update, names="value")
        self.update()

    @staticmethod
    def _methods_for(model) -> dict:
        from dlcourse.xai import torch_impl
        return torch_impl.methods_for(model)

    def _method_names(self) -> list[str]:
        return list(self.methods_for(self.models[self.model.value]))

    def _model_changed(self, change=None) -> None:
        names = self._method_names()
        current = self.method.value
        with self.method.hold_trait_notifications():
            self.method.options = names
            self.method.value = current if current in names else names[0]
        self.update()

    def _adversarial(self, model, i: int, eps: float) -> np.ndarray:
        key = (self.model.value, i, round(eps, 6))
        if key not in self._cache:
            if eps == 0.0:
                self._cache[key] = self.x[i:i + 1]
            else:
                x_adv = self.attack(model, self.x[i:i + 1], self.y[i:i + 1], eps)
                x_adv = np.asarray(x_adv.detach().cpu() if hasattr(x_adv, "detach") else x_adv,
                                   dtype=np.float32).reshape(1, -1)
                if not np.all(np.isfinite(x_adv)):
                    raise ValueError("the attack returned non-finite pixels")
                self._cache[key] = x_adv
        return self._cache[key]

    def compute(self) -> dict:
        """Everything the picture shows, for the controls' current values."""
        model = self.models[self.model.value]
        i, eps = self.image.value, float(self.eps.value)
        x = self.x[i:i + 1]
        x_adv = self._adversarial(model, i, eps)
        probs, probs_adv = _probabilities(model, x)[0], _probabilities(model, x_adv)[0]
        choice = self.target.value
        target = (int(probs_adv.argmax()) if choice == "predicted" else int(self.y[i]) if choice == "true"
                  else int(choice))
        method = self.methods_for(model)[self.method.value]
        attribution = method(model, x_adv, target)
        attribution = np.asarray(attribution.detach().cpu() if hasattr(attribution, "detach") else attribution,
                                 dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(attribution)):
            raise ValueError(f"{self.method.value} returned a non-finite map")
        return dict(x=x[0], x_adv=x_adv[0], map=attribution, probs=probs, probs_adv=probs_adv, target=target,
                    eps=eps)

    def update(self, change=None) -> None:
        try:
            r = self.compute()
        except Exception as exc:  # a method that does not apply, a failing attack: say so, keep the widget
            self.message.value = f"<b>cannot show this:</b> {type(exc).__name__}: {exc}"
            return
        self.message.value = ""
        self.last = r
        true = int(self.y[self.image.value])
        pred, pred_adv = int(r["probs"].argmax()), int(r["probs_adv"].argmax())
        fig = self.fig
        fig.clear()
        ax = fig.subplots(1, 4, width_ratios=[1, 1, 1, 1.6])
        seen = "adversarial" if r["eps"] > 0 else "clean"
        show_image(ax[0], r["x_adv"], f"{seen} image, true {true}\npredicted {pred_adv} "
                                      f"({100 * r['probs_adv'][pred_adv]:.0f} %)")
        why = {"predicted": " (predicted)", "true": " (true)"}.get(self.target.value, "")
        show_map(ax[1], r["map"], f"{self.method.value}\nfor class {r['target']}{why}", image=r["x_adv"])
        delta = r["x_adv"] - r["x"]
        lim = max(r["eps"], 1e-6)
        ax[2].imshow(delta.reshape(8, 8), cmap="PuOr", vmin=-lim, vmax=lim, interpolation="nearest")
        ax[2].set_title(f"perturbation, eps = {r['eps']:.3f}\nmax |Δ| = {np.abs(delta).max():.3f}", fontsize=8)
        ax[2].set_xticks([])
        ax[2].set_yticks([])
        k = np.arange(10)
        ax[3].bar(k - 0.2, r["probs"], width=0.4, color=CLEAN_COLOR, label=f"clean: {pred}")
        ax[3].bar(k + 0.2, r["probs_adv"], width=0.4, color=ATTACK_COLOR, label=f"attacked: {pred_adv}")
        ax[3].set_xticks(k)
        ax[3].set_ylim(0, 1.05)
        ax[3].set_title(f"{self.model.value}: class probabilities", fontsize=8)
        ax[3].legend(fontsize=7, loc="upper right")
        ax[3].tick_params(labelsize=7)
        self.picture.value = figure_png(fig)
        self.updates += 1

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def attribution_explorer(models: dict, x, y, n_images: int = 30, eps_max: float = 0.3,
                         methods: Optional[Callable] = None, attack: Optional[Callable] = None) -> AttributionExplorer:
    """Build the attribution explorer; display it as a cell's last expression.

    Parameters
    ----------
    models : ``{name: nn.Module}`` digits classifiers (flat MLPs or CNNs: inputs are reshaped
        by :func:`dlcourse.xai.torch_impl.model_input`)
    x : (N, 64) images in [0, 1]; y : (N,) their labels; the first ``n_images`` are offered
    eps_max : the eps slider's largest value (steps of 0.025)
    methods : ``model -> {name: (model, x, target) -> map}``; default
        :func:`dlcourse.xai.torch_impl.methods_for` (Grad-CAM only for CNNs)
    attack : ``(model, x, y, eps) -> x_adv``; default PGD from x, 10 steps
    """
    return AttributionExplorer(models, x, y, methods=methods, attack=attack, n_images=n_images, eps_max=eps_max)
