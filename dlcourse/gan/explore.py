"""Chapter 08's plots and widgets: the ring GAN's training replayed, a latent walk through a generator.

Dimension letters: N samples, Z latent size, S snapshots of a training run, K modes.

* :func:`ring_replay` — a slider over the snapshots of one or more ring-GAN runs (histories from
  :func:`dlcourse.gan.numpy_impl.train_ring_gan`): where the generated points are at that step,
  and how many of the 8 modes they cover;
* :func:`latent_walk` — two latent vectors and a slider between them: the generated digit at every
  point of the straight line, for any generator given as a function ``z (N, Z) -> images (N, 64)``;
* :class:`LiveGanPlot` — the digits GAN's training callback: the sample grid at fixed noise, the
  losses and the FID, redrawn in place;
* :func:`image_grid`, :func:`plot_images`, :func:`plot_latent_scatter`,
  :func:`plot_generator_gradients`, :func:`plot_ring_runs`, :func:`plot_ring_snapshots` — the lesson's static figures.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import math
import time

import numpy as np
from matplotlib.figure import Figure

from dlcourse.optim.explore import figure_png, show_in_place

RING_COLOR, REAL_COLOR = "#d62728", "#9e9e9e"


# --------------------------------------------------------------------------- images

def image_grid(images, nrow: int, side: int = 8, pad: int = 1) -> np.ndarray:
    """Tile flattened square images into one array for ``imshow``.

    Parameters
    ----------
    images : array-like of shape (N, side * side), grey levels (any range)
    nrow : images per row
    side : the images' width and height (8 for the digits)
    pad : pixels of blank between images (filled with the images' minimum)

    Returns
    -------
    ndarray of shape (rows * (side + pad) - pad, nrow * (side + pad) - pad)
    """
    x = np.asarray(images, dtype=np.float64).reshape(-1, side, side)    # (N, side, side)
    n = len(x)
    rows = max(1, -(-n // nrow))
    fill = float(x.min()) if n else 0.0
    grid = np.full((rows * (side + pad) - pad, nrow * (side + pad) - pad), fill)
    for k in range(n):
        r, c = divmod(k, nrow)
        grid[r * (side + pad):r * (side + pad) + side, c * (side + pad):c * (side + pad) + side] = x[k]
    return grid


def plot_images(ax, images, nrow: int, title: str = "", vmin: float = 0.0, vmax: float = 1.0) -> None:
    """Draw flattened 8 x 8 images (N, 64), grey levels in [vmin, vmax] (white = vmax), on ``ax``."""
    ax.imshow(image_grid(images, nrow), cmap="gray_r", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def plot_latent_scatter(codes, labels, title: str = "", ax=None):
    """The 2-D latent codes (N, 2) of digits, coloured by their class (N,); returns the figure."""
    codes, labels = np.asarray(codes), np.asarray(labels)
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"plot_latent_scatter draws 2-D codes, shape (N, 2); got {codes.shape}")
    fig = None
    if ax is None:
        fig = Figure(figsize=(5.6, 4.6), layout="constrained")
        ax = fig.subplots()
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=9, vmin=-0.5, vmax=9.5)
    ax.figure.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("latent 1"), ax.set_ylabel("latent 2")
    ax.set_title(title or "test digits in the 2-D latent space", fontsize=9)
    return fig if fig is not None else ax.figure


def plot_generator_gradients(d_values, grad_minimax, grad_nonsaturating):
    """The generator's gradient (w.r.t. D's logit on a fake) against D(G(z)), for both losses."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(d_values, np.abs(grad_minimax), label="minimax: log(1 − D(G(z)))", color="#1f77b4")
    ax.plot(d_values, np.abs(grad_nonsaturating), label="non-saturating: −log D(G(z))", color=RING_COLOR)
    ax.axvspan(0, 0.1, color="#eeeeee", zorder=0)
    ax.text(0.012, 0.5, "early training:\nD rejects fakes", fontsize=8, va="center")
    ax.set_xlabel("D(G(z)): how real the discriminator finds a fake")
    ax.set_ylabel("|gradient w.r.t. the logit|")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper center")
    return fig


# --------------------------------------------------------------------------- the ring

def _ring_panel(ax, history: dict, index: int, title: str = "") -> None:
    """Real points (grey), the generated snapshot ``index`` (red), the modes' 3-sigma circles."""
    from matplotlib.patches import Circle

    sigma = history["config"]["sigma"]
    real, fake = history["real"], history["snapshots"][index]
    ax.scatter(real[:, 0], real[:, 1], s=3, color=REAL_COLOR, alpha=0.5, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, color=RING_COLOR, alpha=0.6, label="generated")
    modes, radius = history["config"].get("modes", 8), history["config"].get("radius", 2.0)
    for k in range(modes):
        angle = 2 * np.pi * k / modes
        ax.add_patch(Circle((radius * np.cos(angle), radius * np.sin(angle)), 3 * sigma, fill=False,
                            lw=0.8, color="black"))
    ax.set_xlim(-3, 3), ax.set_ylim(-3, 3)
    ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])
    step, modes = history["snapshot_steps"][index], history["modes"][index]
    ax.set_title(title or f"step {step}: {modes}/8 modes covered", fontsize=9)


def plot_ring_runs(runs: dict, index: int = -1):
    """The final (or ``index``) snapshot of several ring runs side by side: ``{name: history}``."""
    n = len(runs)
    fig = Figure(figsize=(2.6 * n, 2.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, history) in zip(axes, runs.items()):
        i = index % len(history["snapshot_steps"])
        _ring_panel(ax, history, i, f"{name}\n{history['modes'][i]}/8 modes, step {history['snapshot_steps'][i]}")
    return fig


def plot_ring_snapshots(history: dict, indices: Sequence[int], title: str = ""):
    """Snapshots ``indices`` of ONE ring run side by side: how the generated points move."""
    n = len(indices)
    fig = Figure(figsize=(2.1 * n, 2.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    count = len(history["snapshot_steps"])
    for ax, index in zip(axes, indices):
        i = index % count
        _ring_panel(ax, history, i, f"step {history['snapshot_steps'][i]}: {history['modes'][i]}/8")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


class RingReplay:
    """The widget: a run (dropdown) and a training step (slider) of ring-GAN histories.

    Left: the generated points at that step over the real ones; right: modes covered during the
    whole run, with the step marked.

    Attributes
    ----------
    choice : dropdown of the runs; step : slider over the snapshots; fig, image : the Figure and
    ``ipywidgets.Image``; updates : how many times it has drawn; widget : the VBox
    """

    def __init__(self, runs: dict, start: Optional[str] = None):
        import ipywidgets as w
        if not runs:
            raise ValueError("give at least one run: {'name': history from train_ring_gan}")
        for name, history in runs.items():
            missing = {"snapshots", "snapshot_steps", "modes", "real", "config"} - set(history)
            if missing:
                raise ValueError(f"run {name!r} is not a train_ring_gan history: missing {sorted(missing)}")
        self.runs = runs
        style = {"description_width": "80px"}
        narrow = w.Layout(width="340px")
        names = list(runs)
        self.choice = w.Dropdown(options=names, value=start or names[0], description="run", style=style,
                                 layout=narrow)
        count = len(runs[self.choice.value]["snapshot_steps"])
        self.step = w.IntSlider(value=count - 1, min=0, max=count - 1, description="snapshot", style=style,
                                layout=narrow, continuous_update=False)
        self.readout = w.HTML(layout=w.Layout(width="340px"))
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="760px"))
        self.fig = Figure(figsize=(7.6, 3.4), layout="constrained")
        self.updates = 0
        self.widget = w.VBox([w.HBox([w.VBox([self.choice, self.step]), self.readout]), self.image])
        self.choice.observe(self._run_changed, names="value")
        self.step.observe(self.update, names="value")
        self.update()

    def _run_changed(self, change=None) -> None:
        count = len(self.runs[self.choice.value]["snapshot_steps"])
        if self.step.max != count - 1 or self.step.value > count - 1:
            self.step.unobserve(self.update, names="value")
            self.step.max = count - 1
            self.step.value = min(self.step.value, count - 1)
            self.step.observe(self.update, names="value")
        self.update()

    def update(self, change=None) -> None:
        history = self.runs[self.choice.value]
        i = min(self.step.value, len(history["snapshot_steps"]) - 1)
        self.fig.clear()
        left, right = self.fig.subplots(1, 2, width_ratios=[1, 1.5])
        _ring_panel(left, history, i)
        steps, modes = history["snapshot_steps"], history["modes"]
        right.plot(steps, modes, color=RING_COLOR, lw=1.5)
        right.axvline(steps[i], color="black", lw=0.8, ls="--")
        right.set_ylim(-0.3, 8.3), right.set_yticks(range(0, 9, 2))
        right.set_xlabel("training step"), right.set_ylabel("modes covered")
        right.set_title(f"{self.choice.value}", fontsize=9)
        hq = history.get("high_quality")
        self.readout.value = (f"step <b>{steps[i]}</b>: <b>{modes[i]}</b>/8 modes covered"
                              + (f", {100 * hq[i]:.0f} % of samples within 3σ of a mode" if hq is not None else ""))
        self.image.value = figure_png(self.fig)
        self.updates += 1

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def ring_replay(runs: dict, start: Optional[str] = None) -> RingReplay:
    """Build the ring replay widget; display it as a cell's last expression.

    Parameters
    ----------
    runs : ``{name: history}``, histories from :func:`dlcourse.gan.numpy_impl.train_ring_gan`
    start : the run shown first
    """
    return RingReplay(runs, start)


# --------------------------------------------------------------------------- the latent walk

class LatentWalk:
    """The widget: a generator (dropdown), two latent vectors (sliders over a fixed bank of
    seeds) and the position ``t`` on the straight line between them.

    The picture: the digit generated at ``z = (1 - t) z_start + t z_end`` large, and the whole walk
    below it as a strip of frames with the current ``t`` marked.

    Attributes
    ----------
    choice, start, end, t : the controls; bank : ``{name: (B, Z) latent vectors}``; fig, image;
    updates; widget
    """

    FRAMES = 9

    def __init__(self, generators: dict, bank_size: int = 16, seed: int = 0, start: Optional[str] = None):
        import ipywidgets as w
        if not generators:
            raise ValueError("give at least one generator: {'name': (function z -> images, Z)}")
        self.generators = generators
        rng = np.random.default_rng(seed)
        self.bank = {name: rng.standard_normal((bank_size, int(z_dim))) for name, (_, z_dim) in generators.items()}
        style = {"description_width": "80px"}
        narrow = w.Layout(width="340px")
        names = list(generators)
        self.choice = w.Dropdown(options=names, value=start or names[0], description="generator", style=style,
                                 layout=narrow)
        self.start = w.IntSlider(value=0, min=0, max=bank_size - 1, description="from z #", style=style,
                                 layout=narrow, continuous_update=False)
        self.end = w.IntSlider(value=1, min=0, max=bank_size - 1, description="to z #", style=style,
                               layout=narrow, continuous_update=False)
        self.t = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.125, description="t", style=style,
                               layout=narrow, continuous_update=False, readout_format=".3f")
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="640px"))
        self.fig = Figure(figsize=(6.4, 3.6), layout="constrained")
        self.updates = 0
        self.widget = w.VBox([w.VBox([self.choice, self.start, self.end, self.t]), self.image])
        for control in (self.choice, self.start, self.end, self.t):
            control.observe(self.update, names="value")
        self.update()

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """The images along the walk (FRAMES, 64) and the one at t (64,), in [0, 1]."""
        decode, _ = self.generators[self.choice.value]
        bank = self.bank[self.choice.value]
        z0, z1 = bank[self.start.value], bank[self.end.value]
        ts = np.append(np.linspace(0.0, 1.0, self.FRAMES), self.t.value)
        z = (1 - ts)[:, None] * z0 + ts[:, None] * z1                  # (FRAMES + 1, Z)
        images = np.asarray(decode(z), dtype=np.float64).reshape(len(ts), -1)
        if not np.all(np.isfinite(images)):
            raise ValueError(f"generator {self.choice.value!r} returned non-finite pixels")
        return images[:-1], images[-1]

    def update(self, change=None) -> None:
        walk, here = self.frames()
        self.fig.clear()
        top, bottom = self.fig.subfigures(2, 1, height_ratios=[2.2, 1])
        ax = top.subplots()
        plot_images(ax, here[None], 1, f"{self.choice.value}: z = (1 − t)·z#{self.start.value} "
                                       f"+ t·z#{self.end.value}, t = {self.t.value:.3f}")
        strip = bottom.subplots()
        plot_images(strip, walk, self.FRAMES)
        k = int(round(self.t.value * (self.FRAMES - 1)))
        strip.add_patch(_frame_box(k))
        strip.set_title("the whole walk, t = 0 … 1 (box: nearest frame)", fontsize=8)
        self.image.value = figure_png(self.fig)
        self.updates += 1

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def _frame_box(k: int, side: int = 8, pad: int = 1):
    from matplotlib.patches import Rectangle
    return Rectangle((k * (side + pad) - 0.5, -0.5), side, side, fill=False, lw=1.5, color=RING_COLOR)


def latent_walk(generators: dict, bank_size: int = 16, seed: int = 0, start: Optional[str] = None) -> LatentWalk:
    """Build the latent-walk widget; display it as a cell's last expression.

    Parameters
    ----------
    generators : ``{name: (decode, Z)}`` where ``decode`` maps latent vectors (N, Z) (a NumPy
        array) to flattened 8 x 8 images (N, 64) with grey levels in [0, 1]
    bank_size : how many fixed latent vectors the two sliders choose from
    seed : the bank's seed (standard normal vectors)
    start : the generator shown first
    """
    return LatentWalk(generators, bank_size, seed, start)


def torch_decoder(module, scale: Callable = None, device: Optional[str] = None) -> Callable:
    """Wrap a torch generator / decoder as ``decode(z ndarray) -> images ndarray in [0, 1]``.

    ``scale`` maps the module's output to [0, 1] (default: ``(x + 1) / 2``, for a tanh output in
    [-1, 1]; pass ``lambda x: x`` for a sigmoid output).
    """
    import torch

    scale = scale or (lambda x: (x + 1) / 2)

    def decode(z: np.ndarray) -> np.ndarray:
        param = next(module.parameters())
        with torch.no_grad():
            out = module(torch.as_tensor(np.asarray(z), dtype=param.dtype, device=device or param.device))
        return scale(out).clamp(0, 1).cpu().numpy()

    return decode



# --------------------------------------------------------------------------- live training plot

class LiveGanPlot:
    """A callback for :func:`dlcourse.gan.torch_impl.train_digits_gan`, redrawn in place.

    Left: the generator's images at the 64 fixed latent vectors at the last evaluation; middle:
    D's and G's losses; right: the FID over training (log scale).  In a notebook the figure is
    shown once and updated through a display handle (refreshed at most every ``min_interval``
    seconds, and always at the first and the last evaluation); elsewhere it only redraws.

    Attributes
    ----------
    fig : the Figure;  updates : how many times it has been drawn
    """

    def __init__(self, title: str = "digits GAN", evaluations: Optional[int] = None, min_interval: float = 1.5):
        self.fig = Figure(figsize=(10.5, 3.4), layout="constrained")
        self.ax_grid, self.ax_loss, self.ax_fid = self.fig.subplots(1, 3, width_ratios=[1, 1.1, 1.1])
        self.title, self.evaluations, self.min_interval = title, evaluations, min_interval
        self.updates = 0
        self._handle = None
        self._shown_at = -math.inf

    def __call__(self, history) -> None:
        if not history.grids:
            raise ValueError("LiveGanPlot needs a history with sample grids (train_digits_gan's)")
        self.ax_grid.clear(), self.ax_loss.clear(), self.ax_fid.clear()
        plot_images(self.ax_grid, history.grids[-1].reshape(-1, 64), 8,
                    f"{self.title}: step {history.steps[-1]}")
        steps = np.asarray(history.steps)
        self.ax_loss.plot(steps[1:], history.d_loss[1:], "o-", ms=3, label="D loss (without R1)")
        self.ax_loss.plot(steps[1:], history.g_loss[1:], "o-", ms=3, label="G loss (non-saturating)")
        self.ax_loss.axhline(2 * math.log(2), color="gray", lw=0.8, ls="--")
        self.ax_loss.set(xlabel="step", title="losses (dashed: D's 2 log 2 at the equilibrium)")
        self.ax_loss.legend(fontsize=8)
        self.ax_fid.semilogy(steps, history.fid, "o-", ms=3, color=RING_COLOR)
        self.ax_fid.axhline(4, color="gray", lw=0.8, ls="--")
        self.ax_fid.set(xlabel="step", title=f"FID vs the test digits: {history.fid[-1]:.2f} (dashed: 4)")
        for ax in (self.ax_loss, self.ax_fid):
            ax.title.set_fontsize(9)
        self.updates += 1
        last = self.evaluations is not None and len(history.fid) > self.evaluations
        due = self.evaluations is None or time.perf_counter() - self._shown_at >= self.min_interval
        if self._handle is None or last or due:
            self._show()

    def _show(self) -> None:
        self._handle = show_in_place(self.fig, self._handle)
        self._shown_at = time.perf_counter()
