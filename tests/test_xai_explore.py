"""Chapter 09's widget and plots: every control changes the picture, the picture is the model's own
attribution and attack, bad input gets a message."""
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from dlcourse.data import load_digits
from dlcourse.xai import explore
from dlcourse.xai import torch_impl as ti


@pytest.fixture(scope="module")
def digits():
    d = load_digits(0)
    return d.x_test[:12], d.y_test[:12]


@pytest.fixture(scope="module")
def models():
    return {"MLP": ti.digits_mlp(0), "CNN": ti.digits_cnn(0)}


def test_every_control_changes_the_picture(models, digits):
    e = explore.attribution_explorer(models, *digits, n_images=12)
    assert e.message.value == "" and e.updates == 1
    assert "Grad-CAM" not in e.method.options                      # the MLP has no convolution
    for control, value in [(e.image, 3), (e.method, "Integrated Gradients"), (e.target, "true"),
                           (e.target, "0"), (e.eps, 0.2), (e.model, "CNN")]:
        before = e.picture.value
        control.value = value
        assert e.message.value == "", e.message.value
        assert e.picture.value != before, f"{control.description} -> {value!r} did not redraw"
    assert "Grad-CAM" in e.method.options
    e.method.value = "Grad-CAM"
    assert e.message.value == "" and e.last["map"].min() >= 0.0     # Grad-CAM's ReLU
    e.model.value = "MLP"                                            # Grad-CAM not offered: falls back
    assert e.method.value == e.method.options[0] and e.message.value == ""


def test_the_picture_is_the_models_own_map_and_attack(models, digits):
    x, y = digits
    e = explore.attribution_explorer(models, x, y, n_images=12)
    e.image.value, e.method.value, e.target.value = 2, "gradient x input", "true"
    mlp = models["MLP"]
    expected = ti.gradient_x_input(mlp, x[2:3], int(y[2])).numpy().reshape(-1)
    np.testing.assert_allclose(e.last["map"], expected, rtol=1e-6, atol=1e-7)
    e.eps.value = 0.1
    r = e.last
    assert np.abs(r["x_adv"] - r["x"]).max() <= 0.1 + 1e-6             # inside the eps-ball
    assert r["x_adv"].min() >= 0.0 and r["x_adv"].max() <= 1.0          # valid pixels
    np.testing.assert_allclose(r["probs_adv"], torch.softmax(ti.logits(mlp, r["x_adv"][None]), 1)[0].numpy(),
                               rtol=1e-6)
    # the attack raises the loss: the true class's probability goes down
    assert r["probs_adv"][int(y[2])] < r["probs"][int(y[2])]
    e.target.value = "predicted"
    assert e.last["target"] == int(r["probs_adv"].argmax())


def test_a_failing_method_is_reported_not_raised(models, digits):
    def methods(model):
        def broken(model, x, target):
            raise RuntimeError("learner's method broke")
        return {"fine": lambda model, x, target: ti.saliency(model, x, target), "broken": broken}
    e = explore.attribution_explorer(models, *digits, methods=methods)
    before = e.picture.value
    e.method.value = "broken"
    assert "learner's method broke" in e.message.value
    assert e.picture.value == before
    e.method.value = "fine"
    assert e.message.value == ""


def test_nan_maps_are_named(models, digits):
    e = explore.attribution_explorer(models, *digits,
                                     methods=lambda m: {"nan": lambda model, x, t: np.full(64, np.nan)})
    assert "non-finite" in e.message.value


def test_bad_inputs_get_a_message(models, digits):
    x, y = digits
    with pytest.raises(ValueError, match="at least one model"):
        explore.attribution_explorer({}, x, y)
    with pytest.raises(ValueError, match="labels"):
        explore.attribution_explorer(models, x, y[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        explore.attribution_explorer(models, x * 16, y)


def test_static_plots_draw():
    rng = np.random.default_rng(0)
    images = rng.random((2, 64))
    fig = explore.plot_maps(Figure(), images, {"a": rng.standard_normal((2, 64)), "b": rng.random((2, 64))},
                            titles=["one", "two"])
    assert len(fig.axes) == 6
    fig = explore.plot_randomization(Figure(), images[0], ["trained", "fc", "all"],
                                     {"m": rng.random((3, 64))}, {"m": [1.0, 0.5, 0.1]})
    assert len(fig.axes) == 4 and "ρ = 0.50" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="square"):
        explore.show_image(Figure().subplots(), np.zeros(10))
