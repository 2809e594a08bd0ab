"""Chapter 08's widgets and plots: every control changes the picture, bad input gets a message."""
import numpy as np
import pytest
import torch

from dlcourse.gan import explore
from dlcourse.gan import numpy_impl as gn


@pytest.fixture(scope="module")
def runs():
    return {"short": gn.train_ring_gan(steps=120, snapshot_every=40, seed=0, n_eval=400, n_snapshot=128),
            "shorter": gn.train_ring_gan(steps=60, snapshot_every=30, seed=1, n_eval=400, n_snapshot=128)}


def test_ring_replay_every_control_changes_the_png(runs):
    replay = explore.ring_replay(runs)
    assert replay.step.max == len(runs["short"]["snapshot_steps"]) - 1
    assert replay.step.value == replay.step.max                     # starts at the end of training
    before = replay.image.value
    replay.step.value = 0
    assert replay.image.value != before
    assert "step <b>0</b>" in replay.readout.value
    before = replay.image.value
    replay.choice.value = "shorter"
    assert replay.image.value != before
    assert replay.step.max == len(runs["shorter"]["snapshot_steps"]) - 1
    # the readout is the history's own count
    replay.step.value = replay.step.max
    assert f"<b>{runs['shorter']['modes'][-1]}</b>/8 modes" in replay.readout.value


def test_ring_replay_refuses_what_is_not_a_history():
    with pytest.raises(ValueError, match="at least one run"):
        explore.ring_replay({})
    with pytest.raises(ValueError, match="missing"):
        explore.ring_replay({"x": {"modes": [1]}})


def test_latent_walk_shows_the_generators_own_images():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Tanh())
    walk = explore.latent_walk({"net": (explore.torch_decoder(net), 3)}, bank_size=4)
    frames, here = walk.frames()
    assert frames.shape == (walk.FRAMES, 64) and here.shape == (64,)
    z0, z1 = walk.bank["net"][0], walk.bank["net"][1]
    with torch.no_grad():
        expected = ((net(torch.as_tensor(np.stack([z0, z1]), dtype=torch.float32)) + 1) / 2).numpy()
    np.testing.assert_allclose(frames[0], expected[0], rtol=1e-6)    # t = 0 is z_start's image
    np.testing.assert_allclose(frames[-1], expected[1], rtol=1e-6)   # t = 1 is z_end's
    np.testing.assert_allclose(here, frames[walk.FRAMES // 2], rtol=1e-6)   # t = 0.5 is the middle frame
    for control, value in ((walk.start, 2), (walk.end, 3), (walk.t, 0.125)):
        before = walk.image.value
        control.value = value
        assert walk.image.value != before, f"moving {control.description} did not redraw"


def test_latent_walk_switches_generators_and_rejects_nan():
    good = (lambda z: np.full((len(z), 64), 0.5) + 0.1 * np.tanh(z[:, :1]), 2)
    walk = explore.latent_walk({"a": good, "b": (lambda z: np.tanh(z @ np.ones((5, 64))) / 2 + 0.5, 5)})
    before = walk.image.value
    walk.choice.value = "b"
    assert walk.image.value != before
    with pytest.raises(ValueError, match="at least one generator"):
        explore.latent_walk({})
    with pytest.raises(ValueError, match="non-finite"):
        explore.latent_walk({"bad": (lambda z: np.full((len(z), 64), np.nan), 2)})


def test_static_plots(runs):
    grid = explore.image_grid(np.arange(3 * 64).reshape(3, 64), nrow=2)
    assert grid.shape == (17, 17)
    assert grid[0, 0] == 0 and grid[0, 9] == 64 and grid[9, 0] == 128
    codes = np.random.default_rng(0).standard_normal((30, 2))
    assert explore.plot_latent_scatter(codes, np.arange(30) % 10) is not None
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        explore.plot_latent_scatter(np.zeros((5, 3)), np.zeros(5))
    d = np.linspace(0.01, 0.99, 50)
    assert explore.plot_generator_gradients(d, *gn.generator_gradient_curves(d)) is not None
    fig = explore.plot_ring_runs(runs)
    assert len(fig.axes) == 2
    assert f"{runs['short']['modes'][-1]}/8 modes" in fig.axes[0].get_title()
    fig = explore.plot_ring_snapshots(runs["short"], [0, 1, -1], "title")
    assert [ax.get_title() for ax in fig.axes] == [f"step {s}: {m}/8" for s, m in zip(
        runs["short"]["snapshot_steps"][[0, 1, -1]], runs["short"]["modes"][[0, 1, -1]])]


def test_live_gan_plot_draws_every_evaluation():
    from dlcourse.gan import torch_impl as gt
    live = explore.LiveGanPlot(evaluations=2)
    history = gt.train_digits_gan(steps=20, eval_every=10, progress=False, callback=live, n_eval=64)
    assert live.updates == len(history.fid) == 3                    # before training, and two evaluations
    assert f"{history.fid[-1]:.2f}" in live.ax_fid.get_title()
    assert "step 20" in live.ax_grid.get_title()
    with pytest.raises(ValueError, match="sample grids"):
        explore.LiveGanPlot()(gt.GanHistory())
