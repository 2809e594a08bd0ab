"""Chapter 05's widgets and plots: every control changes the picture, presets are what they say."""
import numpy as np
import pytest
import torch

from dlcourse.cnn import explore


def test_apply_kernel_is_cross_correlation_with_same_padding():
    image = np.zeros((5, 7))
    image[:, 4:] = 1.0                                  # a vertical edge, dark -> bright
    out = explore.apply_kernel(image, explore.KERNELS["vertical edges (Sobel x)"])
    assert out.shape == image.shape
    assert out[2, 3] > 0 and out[2, 4] > 0 and out[2, 1] == 0   # responds at the edge, positive for dark -> bright
    identity = explore.apply_kernel(image, explore.KERNELS["identity"])
    np.testing.assert_array_equal(identity, image)
    strided = explore.apply_kernel(np.ones((9, 9)), explore.KERNELS["identity"], stride=2, dilation=2)
    assert strided.shape == (5, 5)


def test_presets_are_3x3_and_blurs_keep_the_mean():
    for name, k in explore.KERNELS.items():
        assert np.shape(k) == (3, 3), name
    for name in ("blur (box)", "blur (Gaussian)", "identity", "sharpen"):
        assert np.isclose(np.sum(explore.KERNELS[name]), 1.0), name
    for name in ("edges (Laplacian)", "vertical edges (Sobel x)", "horizontal edges (Sobel y)"):
        assert np.isclose(np.sum(explore.KERNELS[name]), 0.0), name


def test_photo_grayscale():
    grey = explore.photo_grayscale("flower")
    assert grey.shape == (213, 320) and 0 <= grey.min() and grey.max() <= 1


def test_kernel_explorer_every_control_changes_the_png():
    ex = explore.kernel_explorer()
    seen = {ex.image.value}
    for control, value in [(ex.stride, 2), (ex.dilation, 3), (ex.photo, "flower"), (ex.preset, "emboss")]:
        control.value = value
        assert ex.image.value not in seen, control.description
        seen.add(ex.image.value)
    np.testing.assert_allclose(ex.kernel, explore.KERNELS["emboss"], atol=1e-4)
    ex.cells[4].value = 7.0                              # typing a number makes it your own kernel
    assert ex.preset.value == "(your own)" and ex.kernel[1, 1] == 7.0
    assert ex.image.value not in seen
    assert ex.feature_map.shape == ((213 + 2 * 3 - 3 * 2 - 1) // 2 + 1, (320 + 2 * 3 - 3 * 2 - 1) // 2 + 1)
    assert "stride 2" in ex.readout.value and "dilation 3" in ex.readout.value


def small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(6 * 4 * 4, 10))


def test_feature_maps_and_their_explorer():
    model = small_cnn()
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    layers = explore.conv_layers(model)
    assert list(layers) == ["0", "3"]
    maps = explore.feature_maps(model, x, "3")
    assert maps.shape == (3, 6, 4, 4)
    with torch.no_grad():
        expect = model[:4](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(maps, expect, rtol=1e-6)
    ex = explore.feature_map_explorer(model, x, labels=[1, 2, 3])
    seen = {ex.image.value}
    for control, value in [(ex.channel, 3), (ex.example, 2), (ex.layer, "3"), (ex.channel, 5)]:
        control.value = value
        assert ex.image.value not in seen
        seen.add(ex.image.value)
    ex.layer.value = "0"                                 # 4 filters: the slider's range follows the layer
    assert ex.channel.max == 3 and ex.channel.value == 3
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        explore.feature_map_explorer(torch.nn.Linear(2, 2), x)


def test_filter_and_map_grids():
    import matplotlib.pyplot as plt
    fig = explore.plot_filters(np.random.default_rng(0).normal(size=(10, 3, 3, 3)))
    assert len(fig.axes) == 16
    plt.close(fig)
    fig = explore.plot_feature_maps(np.random.default_rng(0).normal(size=(5, 4, 4)), columns=5)
    assert len(fig.axes) == 5
    plt.close(fig)
