"""Chapter 03: our optimizers and schedules equal torch.optim step for step; checks catch classic mistakes."""
import math
import random
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from dlcourse.backprop.numpy_impl import mlp_loss_and_grads
from dlcourse.data import load_digits, surface
from dlcourse.optim import numpy_impl as ref
from dlcourse.optim import torch_impl
from dlcourse.optim.checks import check

STEPS = 25


# --------------------------------------------------------------------------- NumPy == torch.optim

def _shapes():
    return [(3, 4), (4,)]


def _grad(params, k):
    """A gradient that depends on the parameters (so that paths which drift apart stay apart)."""
    out = []
    for i, p in enumerate(params):
        noise = np.random.default_rng(100 * k + i).standard_normal(p.shape)
        out.append(noise + 0.5 * p + 0.1 * p ** 3)
    return out


def _run_numpy(name, hyper, lrs=None):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in _shapes()]
    opt = ref.Optimizer(params, name, **hyper)
    for k in range(STEPS):
        if lrs is not None:
            opt.lr = lrs[k]
        params = opt.step(params, _grad(params, k))
    return params, opt.states


def _run_torch(name, hyper, lrs=None):
    rng = np.random.default_rng(0)
    params = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s))) for s in _shapes()]
    opt = torch_impl.make_optimizer(params, name, **hyper)
    for k in range(STEPS):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[k]
        grads = _grad([p.detach().numpy() for p in params], k)
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g)
        opt.step()
    return [p.detach().numpy() for p in params], opt


OPTIMIZER_CASES = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-3)),
    ("rmsprop", dict(lr=0.01, alpha=0.95, weight_decay=0.1, momentum=0.7)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3)),
    ("adam", dict(lr=0.01, weight_decay=0.1)),
    ("adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
]


@pytest.mark.parametrize("name,hyper", OPTIMIZER_CASES, ids=lambda v: str(v))
def test_optimizer_matches_torch(name, hyper):
    ours, _ = _run_numpy(name, hyper)
    theirs, _ = _run_torch(name, hyper)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_optimizer_state_matches_torch():
    for name, hyper, pairs in [
        ("sgd", dict(lr=0.05, momentum=0.9), [("momentum_buffer", "momentum_buffer")]),
        ("rmsprop", dict(lr=0.01), [("square_avg", "square_avg")]),
        ("adam", dict(lr=0.01), [("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq"), ("step", "step")]),
    ]:
        _, states = _run_numpy(name, hyper)
        _, opt = _run_torch(name, hyper)
        for ours, param in zip(states, opt.param_groups[0]["params"]):
            for field, key in pairs:
                np.testing.assert_allclose(np.asarray(getattr(ours, field), dtype=float),
                                           np.asarray(opt.state[param][key], dtype=float), rtol=1e-10)


@pytest.mark.parametrize("name,hyper", [("sgd", dict(lr=0.05, momentum=0.9)),
                                        ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                        ("adam", dict(lr=0.01))])
def test_optimizer_with_changing_lr_matches_torch(name, hyper):
    lrs = [ref.cosine_lr(k, hyper["lr"], STEPS) + 1e-3 for k in range(STEPS)]
    ours, _ = _run_numpy(name, hyper, lrs)
    theirs, _ = _run_torch(name, hyper, lrs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_steps_are_pure():
    w, dw = np.ones(3), np.full(3, 0.5)
    for init, step, kw in [(ref.sgd_init, ref.sgd_step, dict(lr=0.1, momentum=0.9)),
                           (ref.rmsprop_init, ref.rmsprop_step, {}), (ref.adam_init, ref.adam_step, {})]:
        state = init(w)
        before = [np.array(a, copy=True) for a in state]
        new_w, new_state = step(w, dw, state, **kw)
        assert np.array_equal(w, np.ones(3)) and np.array_equal(dw, np.full(3, 0.5))
        for a, b in zip(before, state):
            assert np.array_equal(a, b)
        assert type(new_state) is type(state) and not np.array_equal(new_w, w)


def test_float32_stays_float32():
    w = np.ones(3, dtype=np.float32)
    for init, step in [(ref.sgd_init, ref.sgd_step), (ref.rmsprop_init, ref.rmsprop_step),
                       (ref.adam_init, ref.adam_step)]:
        kw = dict(lr=0.1, momentum=0.9) if step is ref.sgd_step else {}
        new_w, state = step(w, w * 0.5, init(w), **kw)
        assert new_w.dtype == np.float32


def _scheduled(make, epochs=30, base=0.1):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    scheduler = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(out)


def test_schedules_match_torch():
    e = range(30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()" warnings
        cases = [
            (lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5), [ref.step_lr(k, 0.1, 7, 0.5) for k in e]),
            (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-3),
             [ref.cosine_lr(k, 0.1, 20, 1e-3) for k in e]),
            (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=12), [ref.cosine_lr(k, 0.1, 12) for k in e]),
            (lambda o: lr_scheduler.LinearLR(o, start_factor=1 / 5, end_factor=1.0, total_iters=4),
             [ref.linear_warmup_lr(k, 0.1, 5) for k in e]),
            (lambda o: lr_scheduler.LambdaLR(o, lambda k: min(1.0, (k + 1) / 5)),
             [ref.linear_warmup_lr(k, 0.1, 5) for k in e]),
            (lambda o: lr_scheduler.SequentialLR(
                o, [lr_scheduler.LinearLR(o, start_factor=1 / 5, end_factor=1.0, total_iters=4),
                    lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-3)], milestones=[5]),
             [ref.warmup_cosine_lr(k, 0.1, 5, 25, 1e-3) for k in e]),
        ]
        for make, ours in cases:
            np.testing.assert_allclose(ours, _scheduled(make), rtol=1e-10, atol=1e-15)


def test_schedule_ends():
    assert ref.warmup_cosine_lr(0, 1.0, 4, 20) == pytest.approx(0.25)
    assert ref.warmup_cosine_lr(3, 1.0, 4, 20) == pytest.approx(1.0)
    assert ref.warmup_cosine_lr(4, 1.0, 4, 20) == pytest.approx(1.0)
    assert ref.warmup_cosine_lr(20, 1.0, 4, 20, eta_min=0.1) == pytest.approx(0.1)
    assert ref.cosine_lr(10, 2.0, 20) == pytest.approx(1.0)


def test_gd_minimize_on_surfaces():
    bowl = surface("bowl")
    path = ref.gd_minimize(bowl.grad, bowl.start, lr=0.1, steps=200)
    assert path.shape == (201, 2) and np.array_equal(path[0], bowl.start)
    np.testing.assert_allclose(path[-1], bowl.minimum, atol=1e-6)
    # the theory of the lesson: on a quadratic with curvature L, lr > 2 / L diverges
    diverging = ref.minimize(bowl.grad, bowl.start, "sgd", steps=200, lr=0.21)
    assert not np.all(np.isfinite(diverging)) or np.abs(diverging[-1, 1]) > 1e3
    np.testing.assert_allclose(ref.minimize(bowl.grad, bowl.start, "sgd", 50, lr=0.1),
                               ref.gd_minimize(bowl.grad, bowl.start, 0.1, 50))


def test_minimize_stops_at_divergence():
    path = ref.minimize(lambda w: 10.0 * w ** 3, np.array([3.0, 3.0]), "sgd", steps=30, lr=1.0)
    assert path.shape == (31, 2)
    finite = np.all(np.isfinite(path), axis=1)
    assert finite[0] and not finite[-1]
    assert np.all(np.isnan(path[np.argmin(finite):]))


def test_minibatches_cover_each_example_once():
    batches = list(ref.minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert np.array_equal(np.concatenate(list(ref.minibatches(7, 3))), np.arange(7))  # rng=None: in order


# --------------------------------------------------------------------------- training (slow)

@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.mark.slow
def test_train_numpy_reaches_97_percent(digits):
    params, history = ref.train_numpy(digits, progress=False)
    assert history.test_acc >= 0.97
    assert len(history.step_loss) == 25 * math.ceil(len(digits.x_train) / 64)
    assert len(history.train_loss) == len(history.val_acc) == 26 and history.epochs == 25
    assert history.train_loss[-1] < 0.1 < history.train_loss[0]


@pytest.mark.slow
def test_train_torch_matches_numpy(digits):
    calls = []
    _, ours = ref.train_numpy(digits, epochs=5, progress=False, optimizer="sgd", lr=0.3, momentum=0.9,
                              schedule=lambda e: ref.cosine_lr(e, 0.3, 5))
    model, theirs = torch_impl.train_torch(digits, epochs=5, progress=False, device="cpu", optimizer="sgd",
                                           lr=0.3, momentum=0.9, schedule=lambda e: ref.cosine_lr(e, 0.3, 5),
                                           callback=calls.append)
    assert len(calls) == 5 and theirs.lr == ours.lr
    # same initial weights, same batches, same updates: only float32 rounding differs
    np.testing.assert_allclose(ours.step_loss, theirs.step_loss, atol=1e-4)
    np.testing.assert_allclose(ours.train_loss, theirs.train_loss, atol=1e-4)


@pytest.mark.slow
def test_train_torch_reaches_97_percent(digits):
    model, history = torch_impl.train_torch(digits, progress=False, device="cpu")
    assert history.test_acc >= 0.97
    assert next(model.parameters()).device.type == "cpu"


# --------------------------------------------------------------------------- widgets

def test_optimizer_race_widget_reacts():
    from dlcourse.optim.explore import RACE_DEFAULTS, optimizer_race
    race = optimizer_race("rosenbrock")
    first = {k: v.copy() for k, v in race.paths.items()}
    assert set(first) == {"SGD", "momentum", "RMSprop", "Adam"}
    assert all(p.shape == (RACE_DEFAULTS["rosenbrock"][2] + 1, 2) for p in first.values())
    assert all(np.array_equal(p[0], surface("rosenbrock").start) for p in first.values())
    updates = race.updates
    race.lr_adaptive.value = 0.01
    assert race.updates == updates + 1
    assert not np.allclose(race.paths["Adam"][-1], first["Adam"][-1])
    assert np.array_equal(race.paths["SGD"], first["SGD"])  # SGD uses the other slider
    race.momentum.value = 0.5
    assert not np.array_equal(race.paths["momentum"], first["momentum"])
    race.steps.value = 20
    assert race.paths["SGD"].shape == (21, 2)
    before = race.updates
    race.surface.value = "bowl"  # switches to the bowl's defaults and redraws once
    assert race.updates == before + 1
    assert race.lr_sgd.value == pytest.approx(RACE_DEFAULTS["bowl"][0], rel=0.15)
    assert np.array_equal(race.paths["Adam"][0], surface("bowl").start)
    assert race.final["momentum"] < surface("bowl").f(surface("bowl").start)
    assert len(race.fig.axes) == 2


def test_live_loss_plot_updates(digits):
    from dlcourse.optim.explore import LiveLossPlot
    live = LiveLossPlot("test", epochs=2)
    ref.train_numpy(digits, epochs=2, progress=False, callback=live)
    assert live.updates == 2
    x, y = live.lines["train"].get_data()
    assert len(x) == 3 and y[-1] < y[0]


def test_plots_build():
    import matplotlib.pyplot as plt
    from dlcourse.optim import explore
    h = ref.History(step_loss=[2.0, 1.0], train_loss=[2.0, 1.0], val_loss=[2.0, 1.1], val_acc=[0.1, 0.5], lr=[0.1])
    figs = [explore.plot_surfaces(), explore.plot_learning_rates("bowl", [0.02, 0.1, 0.21], steps=10),
            explore.plot_histories({"a": h}), explore.plot_schedules({"cos": lambda e: ref.cosine_lr(e, 1, 9)}, 10)]
    assert [len(f.axes) for f in figs] == [4, 2, 3, 1]
    for f in figs:
        plt.close(f)


def test_race_draws_sgd_on_top_and_schedule_legend_outside():
    import matplotlib.pyplot as plt
    from dlcourse.optim import explore
    ax = explore.plot_surface("rosenbrock")
    explore.plot_paths(ax, explore.race_paths("rosenbrock", 1e-3, 0.1, steps=20), on_top=("SGD",))
    paths = [line for line in ax.get_lines() if line.get_label() in explore.RACERS]
    assert paths[-1].get_label() == "SGD" and paths[-1].get_zorder() > max(p.get_zorder() for p in paths[:-1])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(explore.RACERS)  # legend keeps the order
    plt.close(ax.figure)
    fig = explore.plot_schedules({"a": lambda e: 1.0, "b": lambda e: 2.0, "c": lambda e: 1.0}, 5)
    ax = fig.axes[0]
    assert ax.get_lines()[2].get_linestyle() != ax.get_lines()[0].get_linestyle()  # equal curves stay visible
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1  # the legend hides no curve
    plt.close(fig)


# --------------------------------------------------------------------------- graded checks

def _stub(*args, **kwargs):
    raise NotImplementedError


def _assert_fails(name, fn, *words):
    result = getattr(check, name)(fn)
    assert not result.passed, f"{name} passed a wrong answer: {result.message}"
    for word in words:
        assert word.lower() in result.message.lower(), f"{word!r} not in: {result.message}"
    return result


@pytest.mark.parametrize("name", check.names)
def test_check_stub_is_not_implemented(name):
    result = getattr(check, name)(_stub)
    assert not result.passed and result.status == "not implemented"
    assert getattr(check, name)(None).message.startswith("not defined")


def _sgd_momentum_step(w, dw, state, lr, momentum=0.9, nesterov=False):
    return ref.sgd_step(w, dw, state, lr, momentum=momentum, nesterov=nesterov)


def _train_epoch(params, states, x, y, batch_size, rng, lr=1e-3, carry=True, write_back=True, weighted=True):
    total, losses, start, start_states = 0.0, [], params, states
    for idx in ref.minibatches(len(x), batch_size, rng):
        loss, grads = mlp_loss_and_grads(params if write_back else start, x[idx], y[idx])
        new = [ref.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states if carry else start_states)]
        params, states = [p for p, _ in new], [s for _, s in new]
        total += loss * len(idx)
        losses.append(loss)
    return params, states, total / len(x) if weighted else float(np.mean(losses))


REFERENCES = {
    "gd_minimize": ref.gd_minimize,
    "sgd_momentum_step": _sgd_momentum_step,
    "rmsprop_step": ref.rmsprop_step,
    "adam_step": ref.adam_step,
    "warmup_cosine_lr": ref.warmup_cosine_lr,
    "minibatches": ref.minibatches,
    "train_epoch": _train_epoch,
}


def test_every_check_has_a_reference_test():
    assert set(REFERENCES) == set(check.names)
    assert check.max_points == 16


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_check_passes_reference(name):
    result = getattr(check, name)(REFERENCES[name])
    assert result.passed, result.message


# 1. gradient descent
def test_gd_minimize_catches_mistakes():
    def final_only(grad, start, lr, steps):
        return ref.gd_minimize(grad, start, lr, steps)[-1]

    def no_start(grad, start, lr, steps):
        return ref.gd_minimize(grad, start, lr, steps)[1:]

    def in_place(grad, start, lr, steps):
        w = np.array(start, dtype=float)
        path = [w]
        for _ in range(steps):
            w -= lr * grad(w)
            path.append(w)
        return np.stack(path)

    def uphill(grad, start, lr, steps):
        return ref.gd_minimize(grad, start, -lr, steps)

    def lr_twice(grad, start, lr, steps):
        return ref.gd_minimize(grad, start, lr * lr, steps)

    def one_short(grad, start, lr, steps):
        return ref.gd_minimize(grad, start, lr, steps)[:-1] if steps else np.asarray(start)[None]

    def mutates(grad, start, lr, steps):
        path = ref.gd_minimize(grad, start, lr, steps)
        start[:] = path[-1]
        return path

    _assert_fails("gd_minimize", final_only, "only the final point")
    _assert_fails("gd_minimize", no_start, "start point")
    _assert_fails("gd_minimize", in_place, "same point", "in place")
    _assert_fails("gd_minimize", uphill, "uphill")
    _assert_fails("gd_minimize", lr_twice, "applied twice")
    _assert_fails("gd_minimize", one_short, "one step early")
    def alias(grad, start, lr, steps):  # w = start; w -= ...: w is start, not a copy
        w = start
        path = [w.copy()]
        for _ in range(steps):
            w -= lr * grad(w)
            path.append(w.copy())
        return np.stack(path)

    _assert_fails("gd_minimize", mutates, "`start`", "in place")
    _assert_fails("gd_minimize", alias, "`start`", "w = start", "np.array(start, dtype=float)")


# 2. SGD with momentum
def _sgd_variant(kind):
    def step(w, dw, state, lr, momentum=0.9, nesterov=False):
        v_old = state.momentum_buffer
        if kind == "not carried":
            return ref.sgd_step(w, dw, state, lr, momentum=momentum, nesterov=nesterov)[0], state
        if kind == "textbook":
            v = momentum * v_old - lr * dw
            return w + v, ref.SGDState(v)
        if kind == "lr twice":
            v = momentum * v_old + lr * dw
            return w - lr * v, ref.SGDState(v)
        if kind == "average":
            v = momentum * v_old + (1 - momentum) * dw
            return w - lr * (dw + momentum * v if nesterov else v), ref.SGDState(v)
        if kind == "buffer ignored":  # buf = momentum * np.zeros_like(w) + dw
            buf = momentum * np.zeros_like(w) + dw
            return w - lr * (dw + momentum * buf if nesterov else buf), ref.SGDState(buf)
        if kind == "nesterov ignored":
            return ref.sgd_step(w, dw, state, lr, momentum=momentum)
        if kind == "nesterov without mu":
            v = momentum * v_old + dw
            return w - lr * (dw + v if nesterov else v), ref.SGDState(v)
        if kind == "in place":
            state.momentum_buffer[...] = momentum * v_old + dw
            w -= lr * state.momentum_buffer
            return w, state
        if kind == "plain tuple":
            new_w, new_state = ref.sgd_step(w, dw, state, lr, momentum=momentum, nesterov=nesterov)
            return new_w, {"momentum_buffer": new_state.momentum_buffer}
        raise ValueError(kind)
    return step


@pytest.mark.parametrize("kind,words", [
    ("not carried", ["old momentum buffer"]),
    ("buffer ignored", ["state.momentum_buffer is ignored", "restarts from zeros"]),
    ("textbook", ["textbook", "v = μv + g"]),
    ("lr twice", ["applied twice"]),
    ("average", ["average", "(1 − μ)"]),
    ("nesterov ignored", ["nesterov", "equals plain momentum"]),
    ("nesterov without mu", ["g + v", "g + μ·v"]),
    ("in place", ["mutated"]),
    ("plain tuple", ["dict", "SGDState"]),
])
def test_sgd_momentum_step_catches_mistakes(kind, words):
    _assert_fails("sgd_momentum_step", _sgd_variant(kind), *words)


# 3. RMSprop
def _rms_variant(kind):
    def step(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
        s_old = state.square_avg
        s = alpha * s_old + (1 - alpha) * dw * dw
        denom = np.sqrt(s) + eps
        if kind == "eps inside":
            denom = np.sqrt(s + eps)
        elif kind == "alpha swapped":
            s = (1 - alpha) * s_old + alpha * dw * dw
            denom = np.sqrt(s) + eps
        elif kind == "no sqrt":
            denom = s + eps
        elif kind == "g not squared":
            s = alpha * s_old + (1 - alpha) * dw
            denom = np.sqrt(s) + eps
        elif kind == "not carried":
            return w - lr * dw / denom, state
        elif kind == "no return":
            return None
        return w - lr * dw / denom, ref.RMSpropState(s, state.momentum_buffer)
    return step


@pytest.mark.parametrize("kind,words", [
    ("eps inside", ["eps is inside the square root"]),
    ("alpha swapped", ["swapped"]),
    ("no sqrt", ["square root is missing"]),
    ("g not squared", ["square_avg"]),
    ("not carried", ["old square_avg"]),
    ("no return", ["returned none"]),
])
def test_rmsprop_step_catches_mistakes(kind, words):
    _assert_fails("rmsprop_step", _rms_variant(kind), *words)


# 4. Adam
def _adam_variant(kind):
    def step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        b1, b2 = betas[::-1] if kind == "betas swapped" else betas
        t = state.step + (0 if kind == "t from zero" else 1)
        m = b1 * state.exp_avg + (1 - b1) * dw
        v = b2 * state.exp_avg_sq + (1 - b2) * dw * dw
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        if kind == "no bias correction":
            m_hat, v_hat = m, v
        if kind == "only m corrected":
            v_hat = v
        new_w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        if kind == "eps inside":
            new_w = w - lr * m_hat / np.sqrt(v_hat + eps)
        if kind == "eps hat":
            new_w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        if kind == "counter stuck":
            return new_w, ref.AdamState(state.step, m, v)
        if kind == "corrected moments stored":
            return new_w, ref.AdamState(t, m_hat, v_hat)
        return new_w, ref.AdamState(t, m, v)
    return step


@pytest.mark.parametrize("kind,words", [
    ("no bias correction", ["not bias-corrected", "m̂ and v̂"]),
    ("only m corrected", ["v̂ is not bias-corrected"]),
    ("eps inside", ["eps is inside the square root"]),
    ("eps hat", ["before the bias correction"]),
    ("t from zero", ["t = state.step + 1"]),
    ("counter stuck", ["step counter did not advance"]),
    ("betas swapped", ["swapped"]),
    ("corrected moments stored", ["holds the bias-corrected", "raw averages"]),
])
def test_adam_step_catches_mistakes(kind, words):
    _assert_fails("adam_step", _adam_variant(kind), *words)


# 5. warm-up + cosine
def _schedule_variant(kind):
    def lr(epoch, base_lr, warmup, total, eta_min=0.0):
        if kind == "zero division":
            ramp = base_lr * (epoch + 1) / warmup
            return ramp if epoch < warmup else ref.cosine_lr(epoch - warmup, base_lr, total - warmup, eta_min)
        if epoch < warmup:
            if kind == "warmup late":
                return base_lr * epoch / warmup
            if kind == "warmup plus one":
                return base_lr * (epoch + 1) / (warmup + 1)
            return base_lr * (epoch + 1) / warmup
        t, period, floor = epoch - warmup, total - warmup, eta_min
        if kind == "cosine ahead":
            t += 1
        elif kind == "period total":
            period = total
        elif kind == "no eta_min":
            floor = 0.0
        elif kind == "cosine from zero":
            t, period = epoch, total
        elif kind == "returns list":
            return [ref.cosine_lr(t, base_lr, period, floor)]
        return floor + (base_lr - floor) * (1 + math.cos(math.pi * t / period)) / 2
    return lr


@pytest.mark.parametrize("kind,words", [
    ("warmup late", ["one epoch late", "epoch 0 gets lr = 0"]),
    ("warmup plus one", ["never reaches base_lr"]),
    ("cosine ahead", ["one epoch ahead"]),
    ("period total", ["total − warmup"]),
    ("no eta_min", ["eta_min is ignored"]),
    ("cosine from zero", ["starts counting at epoch 0"]),
    ("zero division", ["ZeroDivisionError", "warmup = 0 means no warm-up"]),
    ("returns list", ["list", "one float"]),
])
def test_warmup_cosine_lr_catches_mistakes(kind, words):
    _assert_fails("warmup_cosine_lr", _schedule_variant(kind), *words)


# 6. mini-batches
def _minibatch_variant(kind):
    def batches(n, batch_size, rng):
        if kind == "drop last":
            order = rng.permutation(n)
            for start in range(0, n - batch_size + 1, batch_size):
                yield order[start:start + batch_size]
        elif kind == "with replacement":
            for _ in range(math.ceil(n / batch_size)):
                yield rng.integers(0, n, size=batch_size)
        elif kind == "not shuffled":
            yield from ref.minibatches(n, batch_size, None)
        elif kind == "global numpy":
            order = np.random.permutation(n)
            for start in range(0, n, batch_size):
                yield order[start:start + batch_size]
        elif kind == "python random":
            order = list(range(n))
            random.shuffle(order)
            for start in range(0, n, batch_size):
                yield np.array(order[start:start + batch_size])
        elif kind == "own seed":
            yield from ref.minibatches(n, batch_size, np.random.default_rng(0))
        elif kind == "float indices":
            for idx in ref.minibatches(n, batch_size, rng):
                yield idx.astype(float)
    return batches


@pytest.mark.parametrize("kind,words", [
    ("drop last", ["last partial batch was dropped"]),
    ("with replacement", ["appears", "times in one epoch"]),
    ("not shuffled", ["original order"]),
    ("global numpy", ["not reproducible from rng"]),
    ("python random", ["not reproducible from rng"]),
    ("own seed", ["does not depend on rng"]),
    ("float indices", ["integer indices"]),
])
def test_minibatches_catches_mistakes(kind, words):
    _assert_fails("minibatches", _minibatch_variant(kind), *words)


def test_minibatches_check_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    check.minibatches(_minibatch_variant("global numpy"))
    assert np.random.random() == expected


# 7. one epoch
def test_train_epoch_catches_mistakes():
    def in_place(params, states, x, y, batch_size, rng, lr=1e-3):
        new_params, new_states, loss = _train_epoch(params, states, x, y, batch_size, rng, lr)
        for p, q in zip(params, new_params):
            p[...] = q
        return params, new_states, loss

    def three_items_missing(params, states, x, y, batch_size, rng, lr=1e-3):
        return _train_epoch(params, states, x, y, batch_size, rng, lr)[:2]

    _assert_fails("train_epoch", lambda *a, **k: _train_epoch(*a, **k, carry=False), "carry each parameter's new state")
    _assert_fails("train_epoch", lambda *a, **k: _train_epoch(*a, **k, write_back=False), "initial parameters")
    _assert_fails("train_epoch", lambda *a, **k: _train_epoch(*a, **k, weighted=False), "plain mean", "weight")
    _assert_fails("train_epoch", in_place, "in place")
    _assert_fails("train_epoch", three_items_missing, "triple")


def test_train_epoch_reports_states_changed_in_place():
    def states_in_place(params, states, x, y, batch_size, rng, lr=1e-3):
        new_params, new_states, loss = _train_epoch(params, states, x, y, batch_size, rng, lr)
        for s, new in zip(states, new_states):
            s.exp_avg[...] = new.exp_avg  # the right answer is returned, but the input is changed
        return new_params, new_states, loss

    def list_item_replaced(params, states, x, y, batch_size, rng, lr=1e-3):
        new_params, new_states, loss = _train_epoch(params, states, x, y, batch_size, rng, lr)
        states[:] = new_states
        return new_params, new_states, loss

    result = _assert_fails("train_epoch", states_in_place, "states[0].exp_avg in place")
    assert "max" not in result.message.lower()  # not a misleading "max error" report
    _assert_fails("train_epoch", list_item_replaced, "states[0].step in place")

    def copies_first(params, states, x, y, batch_size, rng, lr=1e-3):  # right, and leaves its inputs alone
        params = [p.copy() for p in params]
        states = [ref.AdamState(s.step, s.exp_avg.copy(), s.exp_avg_sq.copy()) for s in states]
        return _train_epoch(params, states, x, y, batch_size, rng, lr)

    result = check.train_epoch(copies_first)
    assert result.passed, result.message


def test_warmup_cosine_lr_check_asks_for_the_schedule_once():
    calls = []

    def counted(epoch, base_lr, warmup, total, eta_min):
        calls.append(epoch)
        return _schedule_variant("cosine from zero")(epoch, base_lr, warmup, total, eta_min)

    _assert_fails("warmup_cosine_lr", counted, "starts counting at epoch 0")
    # the first schedule (total 25) is right up to its first wrong epoch (5), then read once in full
    assert len(calls) == 6 + 26


def test_optimizer_default_lr():
    params = [np.ones(3), np.zeros(2)]
    for name, default in [("adam", 1e-3), ("rmsprop", 1e-2)]:
        opt = ref.Optimizer(params, name)
        assert opt.lr == default
        opt.lr = 0.5
        assert opt.lr == 0.5 and opt.hyper["lr"] == 0.5
    assert ref.Optimizer(params, "adam", lr=0.1).lr == 0.1
    grads = [np.full(3, 2.0), np.full(2, -1.0)]
    stepped = ref.Optimizer(params, "adam").step(params, grads)
    for p, g, new in zip(params, grads, stepped):
        np.testing.assert_array_equal(new, ref.adam_step(p, g, ref.adam_init(p))[0])
    with pytest.raises(TypeError, match="lr"):
        ref.Optimizer(params, "sgd")  # sgd_step has no default learning rate


def test_hints_exist():
    for name in check.names:
        assert "hint 1/" in repr(check._hint(name, 1))


def test_hints_go_from_nudge_to_answer():
    """Three hints each, and the first is a nudge: no code from the answer in it yet."""
    answers = {"gd_minimize": "np.stack(path)", "sgd_momentum_step": "SGDState(buf)",
               "rmsprop_step": "RMSpropState(square_avg", "adam_step": "AdamState(t, m, v)",
               "warmup_cosine_lr": "math.cos", "minibatches": "yield order[start:start + batch_size]",
               "train_epoch": "total / len(x)"}
    assert set(answers) == set(check.names)
    for name, answer in answers.items():
        hints = check.hints(name)
        assert len(hints) == 3, name
        assert answer not in hints[0] and answer not in hints[1], name
        assert answer in hints[2], name


# --------------------------------------------------------------------------- scaling up (GPU section)

def _fake_mnist(split="train", **kwargs):
    n = 120 if split == "train" else 30
    rng = np.random.default_rng(0 if split == "train" else 1)
    return rng.random((n, 28, 28), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def test_scale_up_data_splits_mnist(monkeypatch):
    import dlcourse.data
    monkeypatch.setattr(dlcourse.data, "load_mnist", _fake_mnist)
    data, about = torch_impl.scale_up_data(limit=60)
    assert about.startswith("MNIST: 50 training, 10 validation and 30 test images")
    assert data.x_train.shape == (50, 784) and data.x_val.shape == (10, 784) and data.x_test.shape == (30, 784)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    full, about = torch_impl.scale_up_data(n_val=20)
    assert full.x_train.shape == (100, 784) and full.x_val.shape == (20, 784)
    # train and validation come from disjoint images
    seen = {row.tobytes() for row in full.x_train}
    assert not any(row.tobytes() in seen for row in full.x_val)


def test_scale_up_data_falls_back_to_digits(monkeypatch):
    import dlcourse.data

    def offline(split="train", **kwargs):
        raise dlcourse.data.DownloadError("could not download train-images-idx3-ubyte.gz\nmirror list")
    monkeypatch.setattr(dlcourse.data, "load_mnist", offline)
    data, about = torch_impl.scale_up_data()
    assert data.x_train.shape[1] == 64
    assert "could not be downloaded" in about and "digits" in about and "mirror list" not in about


@pytest.mark.slow
def test_train_scaled_up_runs_on_cpu(monkeypatch):
    import dlcourse.data
    monkeypatch.setattr(dlcourse.data, "load_mnist", _fake_mnist)
    data, _ = torch_impl.scale_up_data(limit=60)
    calls = []
    model, history = torch_impl.train_scaled_up(data, device="cpu", hidden=(16, 8), epochs=2, batch_size=32,
                                                progress=False, callback=calls.append)
    assert [m.in_features for m in model if isinstance(m, torch.nn.Linear)] == [784, 16, 8]
    assert model[-1].out_features == 10 and next(model.parameters()).device.type == "cpu"
    assert len(calls) == 2 and history.lr == [ref.cosine_lr(0, 1e-3, 2), ref.cosine_lr(1, 1e-3, 2)]
    assert len(history.step_loss) == 2 * 2 and 0.0 <= history.test_acc <= 1.0
    assert torch_impl.SCALE_UP["hidden"] == (512, 256)
