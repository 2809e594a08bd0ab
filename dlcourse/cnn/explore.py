"""Pictures and widgets for chapter 05: kernels on photos, filters and feature maps of a trained CNN.

* :class:`KernelExplorer` (made by :func:`kernel_explorer`): pick a photo and a 3 x 3 kernel
  (edge, blur, sharpen, emboss, ... or your own nine numbers), a stride and a dilation, and
  see the feature map the convolution computes.
* :class:`FeatureMapExplorer` (made by :func:`feature_map_explorer`): pick a convolution
  layer of a trained PyTorch CNN, one of its filters and an input image; see the filter's
  weights and the map it produces.
* :func:`plot_filters`, :func:`plot_feature_maps`: static grids of the same.

The widgets draw a matplotlib ``Figure`` (outside pyplot) into an ``ipywidgets.Image`` as
PNG, as chapters 03 and 04 do: every front end shows it, and nothing flickers.

Dimension letters: N images, C channels (C_in, C_out), H_img x W_img pixels, kH x kW kernel.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from dlcourse.optim.explore import figure_png

__all__ = ["KERNELS", "photo_grayscale", "apply_kernel", "KernelExplorer", "kernel_explorer",
           "conv_layers", "feature_maps", "FeatureMapExplorer", "feature_map_explorer",
           "plot_filters", "plot_feature_maps"]

# 3 x 3 kernels every image-processing course starts from; as cross-correlation (PyTorch's
# convention), so "sobel x" responds to a brightness increase from left to right.
KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "edges (Laplacian)": [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
    "vertical edges (Sobel x)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "horizontal edges (Sobel y)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "blur (box)": [[1 / 9] * 3] * 3,
    "blur (Gaussian)": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}


def photo_grayscale(name: str = "china", downsample: int = 2) -> np.ndarray:
    """One of scikit-learn's sample photos as a grey (H_img, W_img) float64 image in [0, 1].

    Grey = the luma weights of ITU-R BT.601 (0.299 R + 0.587 G + 0.114 B); ``downsample``
    averages blocks of that many pixels per side (427 x 640 -> 213 x 320 for 2), which keeps
    the widget quick.
    """
    from dlcourse.data import load_sample_image
    rgb = load_sample_image(name).astype(np.float64)                 # (H_img, W_img, 3)
    grey = rgb @ np.array([0.299, 0.587, 0.114])                      # (H_img, W_img)
    if downsample > 1:
        h, w = (grey.shape[0] // downsample) * downsample, (grey.shape[1] // downsample) * downsample
        grey = grey[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample).mean(axis=(1, 3))
    return grey


def apply_kernel(image: np.ndarray, kernel, stride: int = 1, dilation: int = 1,
                 padding: Optional[int] = None) -> np.ndarray:
    """Cross-correlate one grey image (H_img, W_img) with one kernel (kH, kW): the course's conv2d.

    ``padding=None`` keeps the size at stride 1 ("same" padding: dilation * (k - 1) / 2).
    """
    from dlcourse.cnn.numpy_impl import conv2d_forward
    k = np.asarray(kernel, dtype=np.float64)
    if padding is None:
        padding = dilation * (k.shape[0] - 1) // 2
    out, _ = conv2d_forward(image[None, None], k[None, None], None, stride=stride, padding=padding,
                            dilation=dilation)                       # (1, 1, H_out, W_out)
    return out[0, 0]


class KernelExplorer:
    """The widget: a photo, a 3 x 3 kernel (preset or typed in), a stride and a dilation.

    Attributes
    ----------
    photo, preset : dropdowns; cells : the nine ``FloatText`` kernel entries (row-major)
    stride, dilation : sliders; readout : an ``ipywidgets.HTML`` with shapes and the size formula
    feature_map : the last map computed; fig, image : the Figure and the ``ipywidgets.Image``
    widget : the whole thing, an ``ipywidgets.VBox``
    """

    def __init__(self, photo: str = "china", preset: str = "vertical edges (Sobel x)"):
        import ipywidgets as w
        self._photos = {name: photo_grayscale(name) for name in ("china", "flower")}
        style = {"description_width": "90px"}
        self.photo = w.Dropdown(options=list(self._photos), value=photo, description="photo", style=style,
                                layout=w.Layout(width="300px"))
        self.preset = w.Dropdown(options=list(KERNELS) + ["(your own)"], value=preset, description="kernel",
                                 style=style, layout=w.Layout(width="300px"))
        self.cells = [w.FloatText(value=0.0, step=0.5, layout=w.Layout(width="70px")) for _ in range(9)]
        self.stride = w.IntSlider(value=1, min=1, max=4, description="stride", style=style,
                                  layout=w.Layout(width="300px"), continuous_update=False)
        self.dilation = w.IntSlider(value=1, min=1, max=4, description="dilation", style=style,
                                    layout=w.Layout(width="300px"), continuous_update=False)
        self.readout = w.HTML(layout=w.Layout(width="300px"))
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1000px"))
        self.fig = Figure(figsize=(11, 3.9), layout="constrained")
        self.updates = 0
        self._setting = False
        grid = w.GridBox(self.cells, layout=w.Layout(grid_template_columns="repeat(3, 74px)", width="230px"))
        controls = w.HBox([w.VBox([self.photo, self.preset, self.stride, self.dilation]),
                           w.VBox([w.HTML("<b>the kernel</b> (type to edit)"), grid]), self.readout])
        self.widget = w.VBox([controls, self.image])
        self._load_preset()
        self.preset.observe(self._on_preset, names="value")
        for control in [self.photo, self.stride, self.dilation] + self.cells:
            control.observe(self.update, names="value")
        self.update()

    @property
    def kernel(self) -> np.ndarray:
        """The nine entries as a (3, 3) array."""
        return np.array([c.value for c in self.cells], dtype=np.float64).reshape(3, 3)

    def _load_preset(self) -> None:
        if self.preset.value not in KERNELS:
            return
        self._setting = True  # one redraw for the whole kernel, not nine
        for cell, value in zip(self.cells, np.ravel(KERNELS[self.preset.value])):
            cell.value = round(float(value), 4)
        self._setting = False

    def _on_preset(self, change=None) -> None:
        self._load_preset()
        self.update()

    def update(self, change=None) -> None:
        """Recompute the feature map and redraw."""
        if self._setting:
            return
        if change is not None and change.get("owner") in self.cells and self.preset.value != "(your own)":
            if not np.allclose(self.kernel, KERNELS[self.preset.value], atol=1e-4):
                self._setting = True
                self.preset.value = "(your own)"  # the kernel no longer is the preset
                self._setting = False
        x = self._photos[self.photo.value]
        s, d = self.stride.value, self.dilation.value
        self.feature_map = apply_kernel(x, self.kernel, stride=s, dilation=d)
        pad = d * (3 - 1) // 2
        self.readout.value = (
            f"input {x.shape[0]} × {x.shape[1]}, kernel 3 × 3, padding {pad}, stride {s}, dilation {d}<br>"
            f"output size ⌊(n + 2·{pad} − {d}·(3 − 1) − 1) / {s}⌋ + 1 = "
            f"<b>{self.feature_map.shape[0]} × {self.feature_map.shape[1]}</b><br>"
            f"each output sees {d * 2 + 1} × {d * 2 + 1} input pixels")
        self._draw(x)
        self.updates += 1

    def _draw(self, x: np.ndarray) -> None:
        self.fig.clear()
        ax_in, ax_k, ax_out = self.fig.subplots(1, 3, width_ratios=(4, 1.3, 4))
        ax_in.imshow(x, cmap="gray", vmin=0, vmax=1)
        ax_in.set_title(f"input ({x.shape[0]} × {x.shape[1]})", fontsize=10)
        k = self.kernel
        limit = max(np.abs(k).max(), 1e-9)
        ax_k.imshow(k, cmap="RdBu_r", vmin=-limit, vmax=limit)
        for (i, j), value in np.ndenumerate(k):
            ax_k.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=9)
        ax_k.set_title("kernel", fontsize=10)
        fm = self.feature_map
        # colour scale from the 99.5th percentile: the zero padding makes a few extreme border
        # values that would otherwise wash out every edge inside the photo
        spread = max(np.percentile(np.abs(fm), 99.5), 1e-9)
        signed = fm.min() < -1e-9 * max(np.abs(fm).max(), 1e-9)
        ax_out.imshow(fm, cmap="RdBu_r" if signed else "gray",
                      vmin=-spread if signed else np.percentile(fm, 0.5), vmax=spread if signed else np.percentile(fm, 99.5))
        ax_out.set_title(f"feature map ({fm.shape[0]} × {fm.shape[1]}), stride {self.stride.value}, "
                         f"dilation {self.dilation.value}", fontsize=10)
        for ax in (ax_in, ax_k, ax_out):
            ax.set_xticks([])
            ax.set_yticks([])
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def kernel_explorer(photo: str = "china", preset: str = "vertical edges (Sobel x)") -> KernelExplorer:
    """Build the kernel explorer; display it by making it the last expression of a cell."""
    return KernelExplorer(photo, preset)


# --------------------------------------------------------------------------- trained CNNs

def conv_layers(model) -> dict:
    """The ``nn.Conv2d`` modules of a PyTorch model by name, in order."""
    from torch import nn
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def feature_maps(model, x, layer: str) -> np.ndarray:
    """The output of conv layer ``layer`` for the images ``x`` (N, C, H_img, W_img): (N, C_out, H_out, W_out).

    Runs the model in eval mode under ``no_grad`` with a forward hook, on the model's device.
    """
    import torch
    module = conv_layers(model)[layer]
    seen = {}
    handle = module.register_forward_hook(lambda m, inputs, output: seen.update(out=output.detach()))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device))
    finally:
        handle.remove()
        model.train(was_training)
    return seen["out"].cpu().numpy()


class FeatureMapExplorer:
    """The widget: a conv layer, one of its filters, one input image; the filter and its map.

    Attributes
    ----------
    layer : dropdown of the model's conv layers; channel : slider over that layer's filters;
    example : slider over the images; fig, image : the Figure and the ``ipywidgets.Image``
    """

    def __init__(self, model, images: np.ndarray, labels: Optional[Sequence] = None):
        import ipywidgets as w
        self.model, self.images = model, np.asarray(images)
        self.labels = labels
        self._layers = conv_layers(model)
        if not self._layers:
            raise ValueError("the model has no nn.Conv2d layer to show")
        self._maps = {name: feature_maps(model, self.images, name) for name in self._layers}
        style = {"description_width": "90px"}
        first = next(iter(self._layers))
        self.layer = w.Dropdown(options=list(self._layers), value=first, description="layer", style=style,
                                layout=w.Layout(width="300px"))
        self.channel = w.IntSlider(value=0, min=0, max=self._layers[first].out_channels - 1,
                                   description="filter", style=style, layout=w.Layout(width="300px"),
                                   continuous_update=False)
        self.example = w.IntSlider(value=0, min=0, max=len(self.images) - 1, description="image",
                                   style=style, layout=w.Layout(width="300px"), continuous_update=False)
        self.image = w.Image(format="png", layout=w.Layout(width="100%", max_width="900px"))
        self.fig = Figure(figsize=(9, 3.2), layout="constrained")
        self.updates = 0
        self.layer.observe(self._on_layer, names="value")
        for control in (self.channel, self.example):
            control.observe(self.update, names="value")
        self.widget = w.VBox([w.HBox([self.layer, self.channel, self.example]), self.image])
        self.update()

    def _on_layer(self, change=None) -> None:
        channels = self._layers[self.layer.value].out_channels
        if self.channel.value >= channels:
            self.channel.value = channels - 1
        self.channel.max = channels - 1
        self.update()

    def update(self, change=None) -> None:
        self._draw()
        self.updates += 1

    def _draw(self) -> None:
        name, c, n = self.layer.value, self.channel.value, self.example.value
        weight = self._layers[name].weight.detach().cpu().numpy()[c]     # (C_in, kH, kW)
        fmap = self._maps[name][n, c]                                     # (H_out, W_out)
        x = self.images[n]
        self.fig.clear()
        ax_in, ax_w, ax_out = self.fig.subplots(1, 3)
        ax_in.imshow(x[0] if x.ndim == 3 else x, cmap="gray_r")
        label = f", label {self.labels[n]}" if self.labels is not None else ""
        ax_in.set_title(f"image {n}{label}", fontsize=10)
        kernel = weight.mean(axis=0)
        limit = max(np.abs(kernel).max(), 1e-9)
        ax_w.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax_w.set_title(f"{name}: filter {c}" + (f" (mean of {weight.shape[0]} input channels)"
                                                 if weight.shape[0] > 1 else ""), fontsize=10)
        ax_out.imshow(fmap, cmap="viridis")
        ax_out.set_title(f"its feature map ({fmap.shape[0]} × {fmap.shape[1]})", fontsize=10)
        for ax in (ax_in, ax_w, ax_out):
            ax.set_xticks([])
            ax.set_yticks([])
        self.image.value = figure_png(self.fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


def feature_map_explorer(model, images: np.ndarray, labels: Optional[Sequence] = None) -> FeatureMapExplorer:
    """Build the feature-map explorer for a trained PyTorch CNN and a few images (N, C, H_img, W_img)."""
    return FeatureMapExplorer(model, images, labels)


def plot_filters(weights: np.ndarray, title: str = "filters", columns: int = 8):
    """A grid of conv filters (C_out, C_in, kH, kW), each averaged over its input channels."""
    import matplotlib.pyplot as plt
    kernels = np.asarray(weights).mean(axis=1)                        # (C_out, kH, kW)
    rows = int(np.ceil(len(kernels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.25 * rows + 0.4), squeeze=False)
    limit = max(np.abs(kernels).max(), 1e-9)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(kernels):
            ax.imshow(kernels[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(str(k), fontsize=8)
    fig.suptitle(title)
    return fig


def plot_feature_maps(maps: np.ndarray, title: str = "feature maps", columns: int = 8):
    """A grid of one image's feature maps (C, H_out, W_out)."""
    import matplotlib.pyplot as plt
    rows = int(np.ceil(len(maps) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.45 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(maps):
            ax.imshow(maps[k], cmap="viridis")
            ax.set_title(str(k), fontsize=8)
    fig.suptitle(title)
    return fig
