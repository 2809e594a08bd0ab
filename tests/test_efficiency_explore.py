"""Chapter 10's explorer and plots: every control redraws, the numbers are the model's own, bad input is named."""
import numpy as np
import pytest
import torch

from dlcourse.efficiency import explore
from dlcourse.efficiency import numpy_impl as en


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 24),
                                torch.nn.ReLU(), torch.nn.Linear(24, 4)).double()
    x = torch.rand(60, 16, dtype=torch.float64)
    y = model(x).argmax(1)                  # labels the model gets right: dense accuracy is 1
    return model, x.numpy(), y.numpy()


def test_the_explorers_numpy_mlp_is_the_torch_mlp(mlp):
    model, x, y = mlp
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(en.mlp_forward(params, x), model(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    assert explore.mlp_accuracy(params, x, y) == 1.0


def test_compressed_keeps_the_mask_and_quantizes_to_the_grid(mlp):
    model, x, y = mlp
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    p, masks = explore.compressed(params, sparsity=0.7, bits=3, scope="global", per_channel=True)
    for k, m in masks.items():
        assert np.all(p[k][m == 0] == 0), "a pruned weight came back after quantization"
        for row in p[k]:                                          # at most 2^3 levels per output row
            assert len(np.unique(row)) <= 8
    assert all(np.array_equal(p[k], params[k]) for k in params if k.endswith("bias"))
    assert np.isclose(en.sparsity(p, masks)[0], 0.7, atol=1 / sum(m.size for m in masks.values()))
    dense, _ = explore.compressed(params)
    assert all(np.array_equal(dense[k], params[k]) for k in params)


def test_storage_bytes_counts_bits_bitmap_and_qparams(mlp):
    model, _, _ = mlp
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    n_w = sum(v.size for k, v in params.items() if k.endswith("weight"))
    n_b = sum(v.size for k, v in params.items() if k.endswith("bias"))
    assert explore.storage_bytes(params) == 4 * (n_w + n_b)
    rows = sum(v.shape[0] for k, v in params.items() if k.endswith("weight"))
    assert explore.storage_bytes(params, bits=8) == n_w + 4 * n_b + 8 * rows
    assert explore.storage_bytes(params, bits=8, per_channel=False) == n_w + 4 * n_b + 8 * 3
    _, masks = explore.compressed(params, sparsity=0.5)
    kept = sum(m.sum() for m in masks.values())
    assert explore.storage_bytes(params, masks) == (32 * kept + n_w + 32 * n_b) / 8


def test_every_control_redraws_and_the_point_is_the_models_own(mlp):
    model, x, y = mlp
    ex = explore.tradeoff_explorer(model.state_dict(), x, y, measured={"retrained": ([1e3, 2e3], [0.9, 0.95])})
    assert ex.updates == 1 and ex.picture.value[:4] == b"\x89PNG"
    for control, value in ((ex.sparsity, 0.0), (ex.bits, 8), (ex.weights, "float32"), (ex.scope, "layer")):
        before, png = ex.updates, ex.picture.value
        control.value = value
        assert ex.updates == before + 1 and ex.picture.value != png, f"{control.description} did not redraw"
    assert ex.last["accuracy"] == 1.0 and ex.last["ratio"] == 1.0      # sparsity 0, float32: the model itself
    ex.weights.value = "int, per channel"
    params = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    p, _ = explore.compressed(params, 0.0, 8, scope="layer", per_channel=True)
    assert ex.last["accuracy"] == explore.mlp_accuracy(p, x, y)
    assert ex.last["ratio"] == explore.storage_bytes(params) / explore.storage_bytes(params, bits=8)
    assert 1.0 < ex.last["ratio"] < 4.0                     # scales and zero points cost a little per row
    assert "retrained" in ex.curves()


def test_bad_input_is_named(mlp):
    model, x, y = mlp
    with pytest.raises(ValueError, match="weight"):
        explore.tradeoff_explorer({"w": np.zeros((2, 2))}, x, y)
    with pytest.raises(ValueError, match="as many labels"):
        explore.tradeoff_explorer(model.state_dict(), x, y[:5])
    ex = explore.tradeoff_explorer(model.state_dict(), x, y)
    ex.sparsity.max = 1.0
    ex.sparsity.value = 1.0                                  # nothing left: the widget says so, no traceback
    assert "cannot show this" in ex.readout.value or ex.last["sparsity"] == 1.0
