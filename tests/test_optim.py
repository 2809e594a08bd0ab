"""Chapter 03: our optimizers and schedules equal torch.optim step for step; checks catch classic mistakes."""
import math
import random
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from dlcourse.data import load_digits, surface
from dlcourse.optim import numpy_impl as ref
from dlcourse.optim import torch_impl
from dlcourse.optim.checks import check

from checktools import solution

STEM = "03_gradient_descent"
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
    ("adamw", dict(lr=0.01)),
    ("adamw", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-3)),
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
        ("adamw", dict(lr=0.01, weight_decay=0.1),
         [("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq"), ("step", "step")]),
    ]:
        _, states = _run_numpy(name, hyper)
        _, opt = _run_torch(name, hyper)
        for ours, param in zip(states, opt.param_groups[0]["params"]):
            for field, key in pairs:
                np.testing.assert_allclose(np.asarray(getattr(ours, field), dtype=float),
                                           np.asarray(opt.state[param][key], dtype=float), rtol=1e-10)


@pytest.mark.parametrize("name,hyper", [("sgd", dict(lr=0.05, momentum=0.9)),
                                        ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                        ("adam", dict(lr=0.01)),
                                        ("adamw", dict(lr=0.01, weight_decay=0.2))])
def test_optimizer_with_changing_lr_matches_torch(name, hyper):
    lrs = [ref.cosine_lr(k, hyper["lr"], STEPS) + 1e-3 for k in range(STEPS)]
    ours, _ = _run_numpy(name, hyper, lrs)
    theirs, _ = _run_torch(name, hyper, lrs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,init,torch_name,hyper", [
    ("nesterov_step", ref.sgd_init, "sgd", dict(lr=0.05, momentum=0.9)),
    ("rmsprop_step", ref.rmsprop_init, "rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-6)),
    ("adamw_step", ref.adam_init, "adamw", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1)),
])
def test_exercise_solutions_match_torch_step_for_step(name, init, torch_name, hyper):
    """Every optimizer the exercises ask for equals torch.optim, step for step (the solutions' code)."""
    step = solution(STEM, name)
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) for s in _shapes()]
    states = [init(p) for p in params]
    torch_hyper = dict(hyper, nesterov=True) if name == "nesterov_step" else hyper
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = torch_impl.make_optimizer(theirs, torch_name, **torch_hyper)
    for k in range(STEPS):
        grads = _grad(params, k)
        pairs = [step(p, g, s, **hyper) for p, g, s in zip(params, grads, states)]
        params, states = [p for p, _ in pairs], [s for _, s in pairs]
        for p, g in zip(theirs, grads):
            p.grad = torch.from_numpy(g)
        opt.step()
        for a, b in zip(params, theirs):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_exercise_schedule_matches_torch():
    ours = solution(STEM, "warmup_cosine_lr")
    torch_rates = _scheduled(lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.LinearLR(o, start_factor=1 / 5, end_factor=1.0, total_iters=4),
            lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-3)], milestones=[5]))
    np.testing.assert_allclose([ours(k, 0.1, 5, 25, 1e-3) for k in range(30)], torch_rates, rtol=1e-10)


def test_train_epoch_reference_equals_the_solution():
    from dlcourse.optim.checks import epoch_problem
    params, states, x, y = epoch_problem(3)
    ours = ref.train_epoch(params, states, x, y, 4, np.random.default_rng(1), lr=0.01)
    theirs = solution(STEM, "train_epoch")(params, states, x, y, 4, np.random.default_rng(1), lr=0.01)
    for a, b in zip(ours[0], theirs[0]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert ours[2] == pytest.approx(theirs[2], rel=1e-12)


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


def test_live_loss_plot_displays_a_png_image_and_updates_it(monkeypatch):
    """In a notebook the live plot is a PNG Image under one display id (never a bare Figure)."""
    import IPython.display

    from dlcourse.optim import explore
    shown, updated = [], []

    class Handle:
        def update(self, obj):
            updated.append(obj)

    def fake_display(obj, display_id=False):
        shown.append(obj)
        return Handle()
    monkeypatch.setattr(explore, "ipython_shell", lambda: object())
    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = explore.LiveLossPlot("test", epochs=2, min_interval=0.0)
    h = ref.History(train_loss=[2.0], val_loss=[2.1], val_acc=[0.1])
    live(h)
    h.train_loss.append(1.0), h.val_loss.append(1.2), h.val_acc.append(0.5)
    live(h)
    assert len(shown) == 1 and len(updated) == 1
    for obj in shown + updated:
        assert isinstance(obj, IPython.display.Image) and obj.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_race_widget_labels_fit_and_image_is_png():
    from dlcourse.optim.explore import optimizer_race
    race = optimizer_race("bowl")
    for control in (race.surface, race.lr_sgd, race.lr_adaptive, race.momentum, race.steps):
        width = int(control.style.description_width.rstrip("px"))
        assert 7 * len(control.description) <= width, control.description  # ~7 px a character at 13 px font
        assert control.layout.width == "480px"
    assert bytes(race.image.value[:4]) == b"\x89PNG"


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
    styles = {(p.get_color(), p.get_linestyle(), p.get_marker()) for p in paths}
    assert len({c for c, _, _ in styles}) == len({ls for _, ls, _ in styles}) == len(paths) == 4
    assert not any(str(p.get_color()).lower() in ("white", "#ffffff", "w") for p in paths)
    ends = [line for line in ax.get_lines() if line.get_markersize() >= 10 and line.get_marker() != "*"]
    assert len(ends) == 4  # one end marker per racer
    star = next(line for line in ax.get_lines() if line.get_marker() == "*")
    assert star.get_zorder() > max(line.get_zorder() for line in ax.get_lines() if line is not star)
    plt.close(ax.figure)
    fig = explore.plot_schedules({"a": lambda e: 1.0, "b": lambda e: 2.0, "c": lambda e: 1.0}, 5)
    ax = fig.axes[0]
    assert ax.get_lines()[2].get_linestyle() != ax.get_lines()[0].get_linestyle()  # equal curves stay visible
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1  # the legend hides no curve
    plt.close(fig)


# --------------------------------------------------------------------------- graded checks
#
# tests/test_course.py proves every mistake-table row, the solutions, the stubs and the refusal of the
# course's own code; here: the diagnoses that are not table rows, and the specific pitfalls.

def _stub(*args, **kwargs):
    raise NotImplementedError


def _assert_fails(name, fn, *words):
    result = getattr(check, name)(fn)
    assert not result.passed, f"{name} passed a wrong answer: {result.message}"
    for word in words:
        assert word.lower() in result.message.lower(), f"{word!r} not in: {result.message}"
    return result


def _row(name, mistake):
    return next(r for r in check.mistakes(name) if r.name == mistake)


@pytest.mark.parametrize("name", check.names)
def test_check_stub_is_not_implemented(name):
    result = getattr(check, name)(_stub)
    assert not result.passed and result.status == "not implemented"
    assert getattr(check, name)(None).message.startswith("not defined")


def test_chapter_points():
    exercises = [n for n in check.names if not check.is_question(n)]
    assert len(exercises) == 7 and check.max_points == 17 + 4


@pytest.mark.parametrize("name", [n for n in check.names if not check.is_question(n)])
def test_check_passes_solution_and_shows_no_failing_case(name):
    result = getattr(check, name)(solution(STEM, name))
    assert result.passed and not result.details, result.message


def test_failures_show_the_smallest_case_and_a_reproducing_call():
    result = check.nesterov_step(_row("nesterov_step", "uphill").wrong)
    assert "smallest failing case (step 1 of a run with momentum 0.9 from a filled buffer; w shown)" in result.details
    assert ("reproduce it in a new cell:  from dlcourse.optim.numpy_impl import SGDState; "
            "nesterov_step(np.array([") in result.details
    result = check.gd_minimize(_row("gd_minimize", "uphill").wrong)
    assert "gd_minimize(bowl_grad, np.array([-4. ,  1.5]), 0.05, 3)" in result.details


def test_gd_minimize_refuses_a_list_and_names_it():
    result = check.gd_minimize(_row("gd_minimize", "list returned").wrong)
    assert result.mistake == "list returned" and "(got a list of 4 items)" in result.message


def test_nesterov_old_buffer_is_told_from_a_filled_buffer():
    """From a zero buffer the old-buffer look-ahead and the right step differ by μ·g only; the check
    starts from a filled buffer and names the old buffer (not "equals plain momentum")."""
    result = check.nesterov_step(_row("nesterov_step", "old buffer in the look-ahead").wrong)
    assert result.mistake == "old buffer in the look-ahead" and "filled buffer" in result.message


def test_adamw_nan_mistakes_are_named_not_overflow():
    for mistake in ["t counted from 0", "g instead of g squared"]:
        result = check.adamw_step(_row("adamw_step", mistake).wrong)
        assert result.mistake == mistake and "overflow" not in result.message


def test_warmup_cosine_mistakes_are_not_one_generic_message():
    messages = {check.warmup_cosine_lr(row.wrong).message for row in check.mistakes("warmup_cosine_lr")}
    assert len(messages) == len(check.mistakes("warmup_cosine_lr"))
    assert not any(m.startswith("at epoch") for m in messages)


def test_warmup_cosine_lr_check_asks_for_the_schedule_once():
    calls = []
    wrong = _row("warmup_cosine_lr", "cosine counts from epoch 0").wrong

    def counted(epoch, base_lr, warmup, total, eta_min):
        calls.append(epoch)
        return wrong(epoch, base_lr, warmup, total, eta_min)

    _assert_fails("warmup_cosine_lr", counted, "starts counting at epoch 0")
    # the first schedule (warmup 3, total 8) is right up to its first wrong epoch (3), then read once in full
    assert len(calls) == 4 + 9


def test_minibatches_check_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    check.minibatches(_row("minibatches", "global generator").wrong)
    assert np.random.random() == expected


def test_minibatches_accepts_another_valid_shuffle():
    def choice(n, batch_size, rng):
        order = rng.choice(n, size=n, replace=False)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]
    assert check.minibatches(choice).passed


def test_minibatches_python_random_is_not_reproducible():
    def python_random(n, batch_size, rng):
        order = list(range(n))
        random.shuffle(order)
        for start in range(0, n, batch_size):
            yield np.array(order[start:start + batch_size])
    result = _assert_fails("minibatches", python_random)
    assert result.mistake == "global generator"


def test_train_epoch_fresh_generator_is_rng_ignored():
    train_epoch = solution(STEM, "train_epoch")

    def fresh(params, states, x, y, batch_size, rng, lr=1e-3):
        return train_epoch(params, states, x, y, batch_size, np.random.default_rng(), lr)
    result = _assert_fails("train_epoch", fresh)
    assert result.mistake == "rng ignored"


def test_train_epoch_mistakes_never_splice_a_hint_into_max_error():
    for row in check.mistakes("train_epoch"):
        message = check.train_epoch(row.wrong).message
        assert "max error" not in message and "did you use" not in message, (row.name, message)


def test_train_epoch_names_the_state_changed_in_place():
    result = check.train_epoch(_row("train_epoch", "states changed in place").wrong)
    assert "(states[0].exp_avg)" in result.message
    train_epoch = solution(STEM, "train_epoch")

    def states_list_assigned(params, states, x, y, batch_size, rng, lr=1e-3):
        new_params, new_states, loss = train_epoch(params, states, x, y, batch_size, rng, lr)
        states[:] = new_states
        return new_params, new_states, loss
    result = check.train_epoch(states_list_assigned)
    assert result.mistake == "states list items replaced"

    def copies_first(params, states, x, y, batch_size, rng, lr=1e-3):  # right, and leaves its inputs alone
        params = [p.copy() for p in params]
        states = [ref.AdamState(s.step, s.exp_avg.copy(), s.exp_avg_sq.copy()) for s in states]
        return train_epoch(params, states, x, y, batch_size, rng, lr)
    assert check.train_epoch(copies_first).passed


# --------------------------------------------------------------------------- the learner's review (issue 5)
# Each test below runs the learner's own code from the review of chapter 03.

from dlcourse.backprop.numpy_impl import mlp_loss_and_grads  # noqa: E402  (the learner's notebook imports)
from dlcourse.optim import numpy_impl as optim_np  # noqa: E402
from dlcourse.optim.numpy_impl import AdamState, RMSpropState, SGDState  # noqa: E402


def test_review_train_epoch_replacing_list_items_is_not_called_changing_arrays():
    def train_epoch(params, states, x, y, batch_size, rng, lr=1e-3):
        total = 0.0
        for idx in optim_np.minibatches(len(x), batch_size, rng):
            loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
            for i in range(len(params)):
                params[i], states[i] = optim_np.adam_step(params[i], grads[i], states[i], lr=lr)
            total += loss * len(idx)
        return params, states, total / len(x)
    result = check.train_epoch(train_epoch)
    assert result.mistake == "params list items replaced"
    assert result.message.startswith("train_epoch replaced the items of the list `params` it was given")
    assert "changed the parameter arrays" not in result.message and "`states`" in result.message
    # the reproducing line builds the real case
    assert ("from dlcourse.optim.checks import epoch_problem; params, states, x, y = epoch_problem(31); "
            "train_epoch(params, states, x, y, 5, np.random.default_rng(31), lr=0.01)") in result.details


def test_review_adamw_t_from_zero_kept_in_the_state_is_named_not_overflow():
    def adamw_step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        b1, b2 = betas
        t = state.step
        w2 = w * (1 - lr * weight_decay)  # noqa: F841 - computed, then forgotten: the mistake
        g = dw
        m = b1 * state.exp_avg + (1 - b1) * g
        v = b2 * state.exp_avg_sq + (1 - b2) * g * g
        mh = m / (1 - b1 ** t)
        vh = v / (1 - b2 ** t)
        return w2 - lr * mh / (np.sqrt(vh) + eps), AdamState(t, m, v)
    result = check.adamw_step(adamw_step)
    assert result.mistake == "t counted from 0, counter not advanced"
    assert "overflow" not in result.message and "NaN at step 1" in result.message


def test_review_nesterov_in_place_shows_the_inputs_before_and_names_the_parameter():
    def nesterov_step(w, dw, state, lr, momentum=0.9):
        buf = state.momentum_buffer
        buf *= momentum; buf += dw
        w -= lr * (dw + momentum * buf)
        return w, SGDState(buf)
    result = check.nesterov_step(nesterov_step)
    assert "mutated its input `w` (argument 1) in place" in result.message
    # the reproducing line shows the case's inputs as they were before the call
    assert ("nesterov_step(np.array([0.34558419, 0.82161814]), np.array([0.27646735, 4.35457616]), "
            "SGDState(momentum_buffer=np.array([ 0.33043708, -1.30315723])), lr=0.05, momentum=0.9)"
            in result.details)


def test_review_minibatches_identity_by_chance_is_not_called_unshuffled():
    def minibatches(n, batch_size, rng):
        rng.random()
        idx = rng.permutation(n)
        for i in range(0, n, batch_size):
            yield idx[i:i + batch_size]
    assert np.array_equal(np.concatenate(list(minibatches(5, 2, np.random.default_rng(2)))), np.arange(5))
    result = check.minibatches(minibatches)
    assert result.passed, result.message  # a valid shuffle (one extra draw before it) is accepted


def test_review_minibatches_unshuffled_is_still_named_and_reproducible():
    def minibatches(n, batch_size, rng):
        idx = np.arange(n)
        for i in range(0, n, batch_size):
            yield idx[i:i + batch_size]
    result = check.minibatches(minibatches)
    assert result.mistake == "not shuffled"
    assert "list(minibatches(5, 2, np.random.default_rng(2)))" in result.details


def test_review_minibatches_list_is_not_a_generator():
    def minibatches(n, batch_size, rng):
        idx = rng.permutation(n)
        return [idx[i:i + batch_size] for i in range(0, n, batch_size)]
    result = check.minibatches(minibatches)
    assert result.mistake == "list instead of generator" and "(it returned a list)" in result.message


def test_review_minibatches_new_permutation_prefix_is_named():
    def minibatches(n, batch_size, rng):
        for i in range(0, n, batch_size):
            yield rng.permutation(n)[:min(batch_size, n - i)]
    assert check.minibatches(minibatches).mistake == "new permutation per batch, first items"


def test_review_q_lr_limit_as_a_string_asks_for_a_number():
    result = check.q_lr_limit(lambda: "0.2")
    assert not result.passed and result.message.startswith("return a number")


def test_review_rmsprop_state_dropped_or_plain_tuple_fails():
    def dropped(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
        s = alpha * state.square_avg + (1 - alpha) * dw**2
        return w - lr * dw / (np.sqrt(s) + eps), RMSpropState(s, None)

    def plain_tuple(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
        s = alpha * state.square_avg + (1 - alpha) * dw * dw
        return w - lr * dw / (np.sqrt(s) + eps), (s, state.momentum_buffer)
    assert check.rmsprop_step(dropped).mistake == "momentum buffer dropped"
    assert check.rmsprop_step(plain_tuple).mistake == "plain tuple state"


def test_review_train_epoch_on_the_optimizer_class_earns_nothing():
    def train_epoch(params, states, x, y, batch_size, rng, lr=1e-3):
        opt = optim_np.Optimizer(params, "adam", lr=lr); opt.states = list(states)
        total = 0.0
        for idx in optim_np.minibatches(len(x), batch_size, rng):
            loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
            params = opt.step(params, grads); total += loss * len(idx)
        return params, opt.states, total / len(x)
    assert check.train_epoch(train_epoch).mistake == "Optimizer class used"


def test_review_reproducing_lines_run_in_a_fresh_namespace():
    result = check.gd_minimize(_row("gd_minimize", "uphill").wrong)
    line = result.details.split("reproduce it in a new cell:  ")[1].splitlines()[0]
    namespace = {"np": np, "gd_minimize": _row("gd_minimize", "uphill").wrong}
    exec(line, namespace)  # noqa: S102 - bowl_grad's import comes with the line
    result = check.minibatches(_row("minibatches", "last batch dropped").wrong)
    line = result.details.split("reproduce it in a new cell:  ")[1].splitlines()[0]
    assert line == "list(minibatches(5, 2, np.random.default_rng(2)))"
    wrong = _row("train_epoch", "lr not passed").wrong
    result = check.train_epoch(wrong)
    line = result.details.split("reproduce it in a new cell:  ")[1].splitlines()[0]
    exec(line, {"np": np, "train_epoch": wrong})  # noqa: S102


def test_review_state_mistakes_show_the_state_not_equal_ws():
    """Where w is right and the state is wrong, got/expected are the state field, not two equal ws."""
    cases = [("adamw_step", "stores corrected moments", "state.exp_avg shown"),
             ("adamw_step", "step not advanced", "state.step shown"),
             ("adamw_step", "decay both coupled and decoupled", "state.exp_avg shown"),
             ("nesterov_step", "state not returned", "state.momentum_buffer shown")]
    for name, mistake, label in cases:
        result = getattr(check, name)(_row(name, mistake).wrong)
        assert result.mistake == mistake and label in result.details, (mistake, result.details)
        got, expected = [line for line in result.details.splitlines() if line.strip().startswith(("got", "exp"))]
        assert got.split()[1:] != expected.split()[1:]
    result = check.train_epoch(_row("train_epoch", "states never updated").wrong)
    assert "params[0] shown" in result.details  # its parameters differ first, and that is what is shown


def test_review_warmup_cosine_float32_is_named():
    def warmup_cosine_lr(epoch, base_lr, warmup, total, eta_min=0.0):
        if epoch < warmup:
            return base_lr * (epoch + 1) / warmup
        t, T = epoch - warmup, total - warmup
        return np.float32(eta_min + 0.5 * (base_lr - eta_min) * (1 + np.cos(np.pi * t / T)))
    result = check.warmup_cosine_lr(warmup_cosine_lr)
    assert result.mistake == "float32" and "np.float32" in result.message


def test_review_generic_messages_now_have_rows():
    """The learner's variants that got a generic "max error" message now get their row."""
    base = """
def train_epoch(params, states, x, y, batch_size, rng, lr=1e-3):
    params, states = list(params), list(states)
    total, count = 0.0, 0
    for idx in {BATCHES}:
        loss, grads = mlp_loss_and_grads(params, x[idx], y[idx])
        {UPDATE}
        {ACC}
    return params, states, {RET}
"""
    good_update = """new = [optim_np.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params = [p for p, _ in new]; states = [s for _, s in new]"""

    def mk(BATCHES="optim_np.minibatches(len(x), batch_size, rng)", UPDATE=good_update,
           ACC="total += loss * len(idx); count += len(idx)", RET="total / count"):
        namespace = {"np": np, "optim_np": optim_np, "mlp_loss_and_grads": mlp_loss_and_grads}
        exec(base.format(BATCHES=BATCHES, UPDATE=UPDATE, ACC=ACC, RET=RET), namespace)  # noqa: S102
        return namespace["train_epoch"]
    epoch_cases = [
        (mk(ACC="total += loss; count += len(idx)"), "batch means divided by N"),
        (mk(RET="total"), "loss summed, not divided"),
        (mk(UPDATE="""new = [optim_np.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params = [p for p, _ in new]"""), "states never updated"),
        (mk(UPDATE="""new = [optim_np.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        states = [s for _, s in new]"""), "params never updated"),
        (mk(BATCHES="list(optim_np.minibatches(len(x), batch_size, rng))[:-1]"), "last batch skipped"),
        (mk(UPDATE="""new = [optim_np.adam_step(p, g, s, lr=lr) for p, g, s in zip(params, grads, states)]
        params = [p for p, _ in new]; states = [s for _, s in new]
        loss, _ = mlp_loss_and_grads(params, x[idx], y[idx])"""), "loss after the update"),
    ]
    for fn, mistake in epoch_cases:
        assert check.train_epoch(fn).mistake == mistake, mistake

    def nesterov_step(w, dw, state, lr, momentum=0.9):
        v = 0.9 * state.momentum_buffer + dw
        return w - lr * (dw + 0.9 * v), SGDState(v)
    assert check.nesterov_step(nesterov_step).mistake == "momentum hard-coded"

    def rmsprop_alpha(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
        s = 0.99 * state.square_avg + 0.01 * dw * dw
        return w - lr * dw / (np.sqrt(s) + eps), RMSpropState(s, state.momentum_buffer)
    assert check.rmsprop_step(rmsprop_alpha).mistake == "alpha hard-coded"

    def rmsprop_eps(w, dw, state, lr=1e-2, alpha=0.99, eps=1e-8):
        s = alpha * state.square_avg + (1 - alpha) * dw * dw
        return w - lr * dw / (np.sqrt(s) + 1e-8), RMSpropState(s, state.momentum_buffer)
    assert check.rmsprop_step(rmsprop_eps).mistake == "eps hard-coded"

    def adamw_both(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        b1, b2 = betas; t = state.step + 1
        g = dw + weight_decay * w
        m = b1 * state.exp_avg + (1 - b1) * g
        v = b2 * state.exp_avg_sq + (1 - b2) * g * g
        return (w * (1 - lr * weight_decay) - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps),
                AdamState(t, m, v))
    assert check.adamw_step(adamw_both).mistake == "decay both coupled and decoupled"

    def adamw_no_decay(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        b1, b2 = betas
        t = state.step + 1
        w2 = w * (1 - lr * weight_decay)  # noqa: F841 - computed, then forgotten: the mistake
        g = dw
        m = b1 * state.exp_avg + (1 - b1) * g
        v = b2 * state.exp_avg_sq + (1 - b2) * g * g
        mh = m / (1 - b1 ** t)
        vh = v / (1 - b2 ** t)
        return w - lr * mh / (np.sqrt(vh) + eps), AdamState(t, m, v)
    assert check.adamw_step(adamw_no_decay).mistake == "no decay"


def test_train_epoch_wrong_arity_is_reported():
    train_epoch = solution(STEM, "train_epoch")
    _assert_fails("train_epoch", lambda *a, **k: train_epoch(*a, **k)[:2], "triple")


def test_optimizer_default_lr():
    params = [np.ones(3), np.zeros(2)]
    for name, default in [("adam", 1e-3), ("rmsprop", 1e-2), ("adamw", 1e-3)]:
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


def test_hints_go_from_nudge_to_near_code():
    """Three hints each; the first is a nudge with no code of the answer in it yet."""
    answers = {"gd_minimize": "np.stack(path)", "nesterov_step": "SGDState(buf)",
               "rmsprop_step": "np.sqrt(square_avg) + eps", "adamw_step": "AdamState(t, m, v)",
               "warmup_cosine_lr": "math.cos", "minibatches": "range(0, n, batch_size)",
               "train_epoch": "total / len(x)"}
    assert set(answers) == {n for n in check.names if not check.is_question(n)}
    for name, answer in answers.items():
        hints = check.hints(name)
        assert len(hints) == 3, name
        assert answer not in hints[0], name
        assert answer in hints[1] + hints[2], name


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


def test_scale_up_data_falls_back_to_digits_with_a_reason(monkeypatch, tmp_path):
    """A real failing download (every mirror refuses): the message keeps the last attempt's reason."""
    import urllib.error

    import dlcourse.data

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(dlcourse.data.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(dlcourse.data.time, "sleep", lambda seconds: None)
    monkeypatch.setenv("DLCOURSE_DATA", str(tmp_path))
    with pytest.raises(dlcourse.data.DownloadError) as raised:
        dlcourse.data.load_mnist("train")
    assert "(tried" in str(raised.value).splitlines()[0]  # the header that names no reason
    data, about = torch_impl.scale_up_data()
    assert data.x_train.shape[1] == 64
    assert "could not be downloaded (" in about and "using the 8x8 digits instead" in about
    reason = about.split("could not be downloaded (", 1)[1].rsplit("); using", 1)[0]
    assert "Temporary failure in name resolution" in reason and "tried" not in reason


def test_download_failure_reason_forms():
    from dlcourse.data import DownloadError
    header = "could not download x.gz (tried 2 time(s)):\n  https://a/x.gz: URLError: timed out\n" \
             "  https://b/x.gz: HTTPError: HTTP Error 404: Not Found\nCheck the internet connection."
    assert torch_impl.download_failure_reason(DownloadError(header)) == "https://b/x.gz: HTTPError: HTTP Error 404: Not Found"
    assert torch_impl.download_failure_reason(DownloadError("offline mode is on")) == "offline mode is on"
    assert torch_impl.download_failure_reason(DownloadError("could not download x (tried 0 time(s)):")) == "DownloadError"


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


# --------------------------------------------------------------------------- second review

def test_review2_a_changed_default_is_named():
    nesterov = solution(STEM, "nesterov_step")

    def nesterov_step(w, dw, state, lr, momentum=0.99):
        return nesterov(w, dw, state, lr, momentum)
    result = check.nesterov_step(nesterov_step)
    assert result.mistake == "wrong default"
    assert result.message.startswith("nesterov_step's default momentum=0.99 is not the exercise's momentum=0.9")
    adamw = solution(STEM, "adamw_step")

    def adamw_step(w, dw, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        return adamw(w, dw, state, lr, betas, eps, weight_decay)
    assert check.adamw_step(adamw_step).mistake == "wrong default"


def test_review2_a_lazy_iterator_class_is_a_generator_enough():
    class minibatches:  # noqa: N801 - the learner's name for it
        def __init__(self, n, batch_size, rng):
            self.perm, self.bs = rng.permutation(n), batch_size

        def __iter__(self):
            for i in range(0, len(self.perm), self.bs):
                yield self.perm[i:i + self.bs]
    result = check.minibatches(minibatches)
    assert result.passed, result.message


def test_review2_an_error_inside_the_generator_is_reported_as_such():
    def minibatches(n, batch_size, rng):
        idx = rng.shuffle(np.arange(n))  # shuffle works in place and returns None
        for i in range(0, n, batch_size):
            yield idx[i:i + batch_size]
    result = check.minibatches(minibatches)
    assert "raised TypeError while producing its batches" in result.message
    assert "cannot be iterated" not in result.message
