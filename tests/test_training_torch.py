"""Chapter 04, PyTorch side: the MLP and its regularizers, train_mlp, L2 vs decoupled weight decay,
deep networks, the range test, the regularization explorer and the plots."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from dlcourse.data import load_digits
from dlcourse.optim import numpy_impl as opt_np
from dlcourse.training import torch_impl as ti

LN10 = math.log(10)


@pytest.fixture(scope="module")
def digits():
    return load_digits(0)


@pytest.fixture(scope="module")
def small(digits):
    """120 training digits, the first 90 validation digits."""
    return digits.x_train[:120], digits.y_train[:120], digits.x_val[:90], digits.y_val[:90]


# --------------------------------------------------------------------------- the MLP

def test_mlp_shapes_and_layers():
    x = torch.randn(5, 64)
    model = ti.MLP((64, 32, 32, 10), dropout=0.5, batchnorm=True)
    assert model(x).shape == (5, 10)
    assert len(model.blocks) == 2
    kinds = [type(m) for m in model.blocks[0]]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    plain = ti.MLP((64, 10))
    assert len(plain.blocks) == 0 and plain(x).shape == (5, 10)
    assert [type(m) for m in ti.MLP((64, 16, 10)).blocks[0]] == [nn.Linear, nn.ReLU]  # no p = 0 Dropout
    with pytest.raises(ValueError):
        ti.MLP((64,))


def test_residual_adds_the_input_where_widths_match():
    torch.manual_seed(0)
    model = ti.MLP((8, 8, 8, 3), residual=True)
    x = torch.randn(4, 8)
    with torch.no_grad():
        h = x + model.blocks[0](x)
        h = h + model.blocks[1](h)
        np.testing.assert_allclose(model(x), model.head(h), rtol=1e-6)
    skip_first = ti.MLP((6, 8, 8, 3), residual=True)  # 6 -> 8 cannot add its input: no skip there
    x6 = torch.randn(4, 6)
    with torch.no_grad():
        h = skip_first.blocks[0](x6)
        h = h + skip_first.blocks[1](h)
        np.testing.assert_allclose(skip_first(x6), skip_first.head(h), rtol=1e-6)


@pytest.mark.parametrize("scheme,std", [("he", math.sqrt(2 / 256)), ("xavier", math.sqrt(2 / (256 + 256))),
                                        ("small", 0.01), ("large", 1.0), ("zeros", 0.0)])
def test_init_schemes(scheme, std):
    torch.manual_seed(0)
    model = ti.MLP((256, 256, 10), init=scheme)
    w = model.blocks[0][0].weight
    assert float(w.detach().std()) == pytest.approx(std, rel=0.05, abs=1e-12)
    assert float(model.blocks[0][0].bias.detach().abs().max()) == 0.0
    with pytest.raises(ValueError):
        ti.MLP((4, 4, 2), init="bogus")


def test_dropout_differs_in_train_mode_and_not_in_eval_mode():
    torch.manual_seed(0)
    model = ti.MLP((16, 64, 4), dropout=0.5)
    x = torch.randn(8, 16)
    model.train()
    assert not torch.equal(model(x), model(x))  # a new mask each call
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a, b)
    hidden = model.blocks[0][:2](x)  # Linear -> ReLU, no dropout: eval mode is the identity
    np.testing.assert_allclose(a.detach(), model.head(hidden).detach(), rtol=1e-6)


def test_batchnorm_uses_batch_stats_in_train_and_running_stats_in_eval():
    torch.manual_seed(0)
    model = ti.MLP((5, 7, 3), batchnorm=True)
    bn = model.blocks[0][1]
    x = torch.randn(32, 5) * 3 + 1
    model.train()
    model(x)
    assert not torch.allclose(bn.running_mean, torch.zeros(7))  # train mode learns running stats
    frozen = bn.running_mean.clone()
    model.eval()
    one = model(x[:1])  # eval mode works on a single example and does not change the stats
    assert torch.equal(bn.running_mean, frozen)
    np.testing.assert_allclose(one.detach(), model(x)[:1].detach(), rtol=1e-5)  # per example, batch-independent


# --------------------------------------------------------------------------- weight decay: which parameters

def test_weight_decay_skips_biases_and_batchnorm():
    model = ti.MLP((6, 5, 4, 3), batchnorm=True)
    decay, no_decay = ti.param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert {id(p) for p in decay["params"]} == {id(m.weight) for m in linears}
    assert {id(p) for p in no_decay["params"]} == ({id(m.bias) for m in linears}
                                                    | {id(m.weight) for m in bns} | {id(m.bias) for m in bns})
    for name in ("sgd", "adam", "adamw"):
        opt = ti.build_optimizer(model, name, lr=0.1, weight_decay=0.1)
        assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    with pytest.raises(ValueError):
        ti.build_optimizer(model, "lbfgs")


def test_adamw_with_zero_gradients_shrinks_weights_only():
    torch.manual_seed(0)
    model = ti.MLP((6, 5, 3), batchnorm=True).double()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = ti.build_optimizer(model, "adamw", lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.1 * 0.5) if p.ndim == 2 else before[n]
        np.testing.assert_allclose(p.detach(), expected, rtol=1e-12, err_msg=n)


# --------------------------------------------------------------------------- L2 penalty vs decoupled decay

STEPS, LR, WD = 12, 0.05, 0.3


def _grads(w, k):
    """A gradient that depends on w (so different paths stay different)."""
    return np.random.default_rng(k).standard_normal(w.shape) + 0.5 * w


def _numpy_path(step, init, **hyper):
    w = np.random.default_rng(0).standard_normal((4, 3))
    state = init(w)
    for k in range(STEPS):
        w, state = step(w, _grads(w, k), state, **hyper)
    return w


def _torch_path(opt_class, **hyper):
    w = nn.Parameter(torch.from_numpy(np.random.default_rng(0).standard_normal((4, 3))))
    opt = opt_class([w], **hyper)
    for k in range(STEPS):
        w.grad = torch.from_numpy(_grads(w.detach().numpy(), k))
        opt.step()
    return w.detach().numpy()


def test_sgd_weight_decay_is_l2_in_the_gradient():
    ours = _numpy_path(opt_np.sgd_step, opt_np.sgd_init, lr=LR, momentum=0.9, weight_decay=WD)
    np.testing.assert_allclose(ours, _torch_path(torch.optim.SGD, lr=LR, momentum=0.9, weight_decay=WD), rtol=1e-10)
    # and it IS the gradient of the penalty WD/2 ||w||^2 added to the loss
    def l2_step(w, dw, state, **hyper):
        return opt_np.sgd_step(w, dw + WD * w, state, **hyper)
    np.testing.assert_allclose(ours, _numpy_path(l2_step, opt_np.sgd_init, lr=LR, momentum=0.9), rtol=1e-12)


def test_adam_weight_decay_is_l2_inside_adam():
    ours = _numpy_path(opt_np.adam_step, opt_np.adam_init, lr=LR, weight_decay=WD)
    np.testing.assert_allclose(ours, _torch_path(torch.optim.Adam, lr=LR, weight_decay=WD), rtol=1e-10)


def test_adamw_is_decoupled_decay():
    ours = _numpy_path(opt_np.adamw_step, opt_np.adam_init, lr=LR, weight_decay=WD)
    np.testing.assert_allclose(ours, _torch_path(torch.optim.AdamW, lr=LR, weight_decay=WD), rtol=1e-10)
    # decoupled: shrink the weights, then a plain Adam step on the loss gradient alone
    def decoupled(w, dw, state, **hyper):
        return opt_np.adam_step(w * (1 - LR * WD), dw, state, **hyper)
    np.testing.assert_allclose(ours, _numpy_path(decoupled, opt_np.adam_init, lr=LR), rtol=1e-12)


def test_adam_with_l2_is_not_adamw_but_sgd_with_l2_is_decoupled_sgd():
    """The point of the lesson: for SGD the two forms of decay agree, inside Adam they do not."""
    adam_l2 = _torch_path(torch.optim.Adam, lr=LR, weight_decay=WD)
    adamw = _torch_path(torch.optim.AdamW, lr=LR, weight_decay=WD)
    assert np.abs(adam_l2 - adamw).max() > 0.05
    sgd_l2 = _torch_path(torch.optim.SGD, lr=LR, weight_decay=WD)

    def sgd_decoupled(w, dw, state, **hyper):
        return opt_np.sgd_step(w * (1 - LR * WD), dw, state, **hyper)
    np.testing.assert_allclose(sgd_l2, _numpy_path(sgd_decoupled, opt_np.sgd_init, lr=LR), rtol=1e-10)


# --------------------------------------------------------------------------- train_mlp

def test_train_mlp_history_and_determinism(small):
    before = torch.random.get_rng_state()
    runs = [ti.train_mlp(*small, hidden=(32,), dropout=0.3, epochs=6, batch_size=50, seed=3, device="cpu")
            for _ in range(2)]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is left alone
    (m1, h1), (m2, h2) = runs
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert len(h1.train_loss) == len(h1.val_loss) == len(h1.train_acc) == len(h1.val_acc) == 7
    assert h1.epochs == 6 and h1.updates == [0, 3, 6, 9, 12, 15, 18]  # ceil(120 / 50) = 3 steps an epoch
    assert h1.train_loss[-1] < h1.train_loss[0] and h1.seconds > 0
    assert h1.best_epoch == int(np.argmin(h1.val_loss)) and not m1.training
    _, h3 = ti.train_mlp(*small, hidden=(32,), dropout=0.3, epochs=6, batch_size=50, seed=4, device="cpu")
    assert h3.train_loss != h1.train_loss


def test_early_stopping_restores_the_best_weights(small):
    x, y, xv, yv = small
    # a high learning rate on 120 examples overfits fast: the validation loss turns up
    model, h = ti.train_mlp(x, y, xv, yv, hidden=(64,), lr=3e-2, epochs=60, patience=4, seed=0, device="cpu")
    assert h.stopped_epoch is not None and h.stopped_epoch == h.best_epoch + 4 < 60
    assert h.epochs == h.stopped_epoch
    assert ti.evaluate(model, xv, yv)[0] == pytest.approx(h.best_val_loss, rel=1e-6)
    assert h.best_val_loss < h.val_loss[-1]  # the last weights were worse and are not kept
    _, no_stop = ti.train_mlp(x, y, xv, yv, hidden=(64,), lr=3e-2, epochs=8, seed=0, device="cpu")
    assert no_stop.stopped_epoch is None and no_stop.epochs == 8


def test_train_mlp_options(small):
    calls, seen = [], []

    def augment(batch, rng):
        seen.append(batch.shape)
        return batch + rng.normal(0, 0.1, batch.shape).astype(np.float32)
    for name in ("sgd", "adam", "adamw"):
        _, h = ti.train_mlp(*small, hidden=(16, 16), optimizer=name, lr=0.01, weight_decay=0.01, epochs=2,
                            batchnorm=True, augment=augment, callback=calls.append, batch_size=119, device="cpu")
        assert np.isfinite(h.train_loss).all()
    assert len(calls) == 6 and isinstance(calls[0], ti.TrainHistory)
    assert seen[0] == (119, 64) and (1, 64) not in seen  # a last batch of 1 is skipped under batch norm
    with pytest.raises(ValueError):
        ti.train_mlp(*small, optimizer="rmsprop", epochs=1, device="cpu")
    zeros, h = ti.train_mlp(*small, hidden=(8,), init="zeros", epochs=2, device="cpu")
    hidden_w = zeros.blocks[0][0].weight
    assert torch.equal(hidden_w, hidden_w[:1].expand_as(hidden_w))  # symmetric units stay identical


def test_live_loss_plot_is_a_train_mlp_callback(small):
    from dlcourse.training.explore import LiveLossPlot
    live = LiveLossPlot("test", epochs=3)
    ti.train_mlp(*small, hidden=(16,), epochs=3, callback=live, device="cpu", progress=True)
    assert live.updates == 3
    assert len(live.lines["val"].get_data()[0]) == 4


def test_evaluate_accepts_arrays_and_keeps_the_mode(small):
    x, y, _, _ = small
    model = ti.MLP((64, 8, 10), dropout=0.5).train()
    loss, acc = ti.evaluate(model, x, y)
    assert model.training and 0 <= acc <= 1 and loss > 0
    assert ti.evaluate(model, torch.from_numpy(x), torch.from_numpy(y)) == (loss, acc)


@pytest.mark.slow
def test_train_mlp_learns(digits):
    """300 examples x 100 epochs (its time, 0.33 s, is in benchmarks/RESULTS.md, not asserted here)."""
    model, h = ti.train_mlp(digits.x_train[:300], digits.y_train[:300], digits.x_val, digits.y_val,
                            epochs=100, device="cpu")
    assert h.epochs == 100 and h.seconds > 0
    assert ti.evaluate(model, digits.x_test, digits.y_test)[1] > 0.9


@pytest.mark.slow
def test_regularized_beats_unregularized_on_small_data():
    """300 training digits, paired seeds: noise + weight decay win on held-out test accuracy."""
    acc = ti.small_data_study(seeds=(0, 1, 2), device="cpu")
    assert (acc["regularized"] > acc["unregularized"]).all(), acc  # measured +1.1, +1.5, +0.7 points
    assert acc["regularized"].mean() - acc["unregularized"].mean() > 0.005


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_train_mlp_runs_on_cuda(small):
    model, h = ti.train_mlp(*small, hidden=(16,), epochs=2, device="cuda", patience=1)
    assert next(model.parameters()).device.type == "cuda" and len(h.train_loss) >= 2


# --------------------------------------------------------------------------- deep networks, range test

@pytest.mark.slow
def test_deep_plain_nets_stay_at_chance_and_fixed_ones_train(digits):
    losses = ti.deep_mlp_curves(digits, depth=20, seed=0, device="cpu")
    assert list(losses) == list(ti.DEEP_VARIANTS) and all(len(v) == 150 for v in losses.values())
    end = {v: float(np.mean(values[-10:])) for v, values in losses.items()}
    assert abs(end["plain sigmoid"] - LN10) < 0.1 and abs(end["plain relu"] - LN10) < 0.1, end
    assert end["he + batchnorm"] < 1.0 and end["residual"] < 1.0, end  # measured 0.41-0.57 and 0.14-0.28


def test_deep_mlp_variants_build():
    x = torch.randn(4, 64)
    for variant in ti.DEEP_VARIANTS:
        model = ti.deep_mlp(variant, depth=20, width=16)
        assert model(x).shape == (4, 10)
        assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 21  # 20 hidden + the head
    with pytest.raises(ValueError):
        ti.deep_mlp("plain tanh")


def test_lr_range_test_grows_the_rate_and_stops_at_the_explosion(digits):
    lrs, losses = ti.lr_range_test(digits.x_train, digits.y_train, steps=100, seed=0, device="cpu")
    assert len(lrs) == len(losses) < 100  # lr_max = 10 blows an SGD run up before the end
    assert lrs[0] == pytest.approx(1e-5) and np.all(np.diff(lrs) > 0)
    assert losses[-1] > 4 * losses.min() or not np.isfinite(losses[-1])
    assert 1e-4 < ti.suggested_lr(lrs, losses) < 1.0


# --------------------------------------------------------------------------- the explorer and the plots

@pytest.fixture(scope="module")
def grid(digits):
    from dlcourse.training.explore import regularization_grid
    return regularization_grid(digits, sizes=(40, 80, 120, 160), steps=120, record_every=30, hidden=16,
                               device="cpu")


def test_regularization_grid(grid):
    assert len(grid) == len(grid.histories) == 4 * 4 * 4
    h = grid[(40, 0.0, 0.0)]
    assert h.updates == [0, 30, 60, 90, 120] and len(h.val_loss) == 5
    strong = grid[(40, 0.0, 3.0)]
    assert strong.train_loss[-1] > h.train_loss[-1]  # heavy decay holds the training loss up


def test_regularization_explorer_every_slider_changes_the_png(grid):
    from dlcourse.training.explore import regularization_explorer
    ex = regularization_explorer(grid)
    png, readout, updates = bytes(ex.image.value), ex.readout.value, ex.updates
    assert png[:4] == b"\x89PNG"
    for control in (ex.dropout, ex.decay, ex.size):
        control.value = control.options[2][1]
        assert ex.updates == updates + 1
        updates = ex.updates
        assert bytes(ex.image.value) != png and ex.readout.value != readout
        png, readout = bytes(ex.image.value), ex.readout.value
        width = int(control.style.description_width.rstrip("px"))
        assert 7 * len(control.description) <= width, control.description  # ~7 px a character
        assert control.layout.width == "480px"
    assert ex.history is grid[(grid.sizes[2], grid.dropouts[2], grid.decays[2])]
    assert len(ex.fig.axes) == 2


def test_plots_build(grid):
    import matplotlib.pyplot as plt

    from dlcourse.training import explore, practice
    from dlcourse.training import numpy_impl as tn
    rng = np.random.default_rng(0)
    y, score = rng.integers(0, 2, 50), rng.random(50)
    fpr, tpr, _ = tn.roc_curve(y, score)
    stats = {"he": practice.depth_statistics(5, 8, rng=np.random.default_rng(0)),
             "tuple": (np.ones(5), np.zeros(5))}
    figs = [explore.plot_histories({"a": grid[(40, 0.0, 0.0)], "b": grid[(40, 0.5, 0.3)]}, x="updates"),
            explore.plot_confusion_matrix(tn.confusion_matrix(y, score > 0.5, 2)).figure,
            explore.plot_confusion_matrix(np.eye(3) * 5 + 1, normalize=True).figure,
            explore.plot_roc(fpr, tpr, tn.auc(fpr, tpr), label="random").figure,
            explore.plot_depth_stats(stats),
            explore.plot_deep_curves({"a": [2.3] * 20, "b": list(np.linspace(2.3, 0.5, 20))}),
            explore.plot_train_val({"a": grid[(40, 0.0, 0.0)]}),
            explore.plot_lr_range(np.geomspace(1e-4, 1, 30), np.linspace(2.3, 5, 30), suggested=1e-2),
            explore.plot_search({"grid": [({"lr": 1e-3, "dropout": 0.0}, 0.5), ({"lr": 1e-1, "dropout": 0.5}, 0.9)],
                                 "random": [({"lr": 3e-2, "dropout": 0.2}, 0.95)]})]
    assert [len(f.axes) for f in figs] == [2, 2, 2, 1, 2, 1, 2, 1, 5]
    search_fig = figs[-1]
    assert search_fig.axes[1].get_title() == "random search: 1 trials, best (ringed) 0.950"
    for f in figs:
        plt.close(f)


# --------------------------------------------------------------------------- the budget of a training loop

def _run_budget(budget, step_seconds=0.0):
    """Run a loop of empty (or sleeping) steps; the steps done when each evaluation fell."""
    import time
    evals = []
    while budget.running():
        with budget.step():
            time.sleep(step_seconds)
        if budget.eval_due():
            evals.append(budget.updates)
    budget.close()
    return evals


def test_training_budget_in_steps_evaluates_on_schedule_and_at_the_end():
    assert _run_budget(ti.TrainingBudget(steps=10, eval_every=4)) == [4, 8, 10]    # the end too
    assert _run_budget(ti.TrainingBudget(steps=20)) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert _run_budget(ti.TrainingBudget(steps=5)) == [1, 2, 3, 4, 5]              # at least every step
    assert _run_budget(ti.TrainingBudget(steps=13, eval_every=1.3)) == [2, 3, 4, 6, 7, 8, 10, 11, 12, 13]
    budget = ti.TrainingBudget(steps=6, eval_every=3, progress=True, desc="test")
    assert _run_budget(budget) == [3, 6]
    assert budget.updates == 6 and budget.bar.n == 6 and budget.trained > 0 and budget.fraction == 1.0


def test_training_budget_in_seconds_ends_and_counts_only_the_steps():
    budget = ti.TrainingBudget(seconds=0.05, eval_every=0.02, progress=True)
    evals = _run_budget(budget, step_seconds=0.005)
    assert 0.05 <= budget.trained < 0.5 and evals[-1] == budget.updates and len(evals) >= 2
    assert budget.bar.n <= 0.05 + 1e-12                                           # the bar stops at its total


def test_training_budget_needs_exactly_one_of_steps_and_seconds():
    with pytest.raises(ValueError, match="exactly one"):
        ti.TrainingBudget()
    with pytest.raises(ValueError, match="exactly one"):
        ti.TrainingBudget(steps=10, seconds=1.0)
