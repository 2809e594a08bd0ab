"""The check framework: every way a learner's function can go wrong gets one precise message."""
import threading
import time

import numpy as np
import pytest

from dlcourse.grading import (CheckFailed, CheckTimeout, Checker, call, diagnose, expect, expect_close,
                              expect_tuple, time_limit)


def make_checker(seconds=1.0):
    check = Checker("99_demo")

    @check.exercise(points=2, hints=["Use np.maximum.", "np.maximum(x, 0)"], seconds=seconds)
    def relu(fn):
        for x in (np.array([[-1.0, 2.0], [3.0, -4.0]]), np.array([1e300, -1e300])):
            expect_close(call(fn, x), np.maximum(x, 0), f"relu(x) for x of shape {x.shape}")
        return "matches the reference on 2 inputs"

    @check.exercise(points=1, hints=["Return a positive integer."])
    def answer(value):
        expect(value == 42, f"expected 42, got {value!r}")
        return "right"

    return check


def relu_ok(x):
    return np.maximum(x, 0)


def test_correct_function_passes_with_full_points():
    result = make_checker().relu(relu_ok)
    assert result.passed and result.points == 2 and result.max_points == 2
    assert repr(result).startswith("✓ relu  [2/2 points]  matches the reference")
    assert "✓" in result._repr_html_()


@pytest.mark.parametrize("fn, words", [
    (lambda x: (_ for _ in ()).throw(NotImplementedError()), "not implemented yet"),
    (lambda x: x.no_such_thing, "raised AttributeError"),
    (lambda x: np.maximum(x, 0).ravel(), "wrong shape: got (4,), expected (2, 2)"),
    (lambda x: np.abs(x), "max error 4 at index (1, 1)"),
    (lambda x: np.full(x.shape, np.nan), "NaN or inf at index (0, 0)"),
    (lambda x: None, "forget a `return`"),
    (lambda x: (np.maximum(x, 0), None), "tuple of 2 items"),
    (lambda x: "relu", "is a str"),
])
def test_wrong_functions_fail_with_a_precise_message(fn, words):
    result = make_checker().relu(fn)
    assert not result.passed and result.points == 0
    assert words in result.message
    assert "check.hint('relu')" in repr(result)


def test_mutating_the_input_is_reported():
    def relu_in_place(x):
        x[x < 0] = 0
        return x
    result = make_checker().relu(relu_in_place)
    assert not result.passed and "mutated its input" in result.message


def test_overflowing_function_reports_nan_not_a_warning():
    def exp_based(x):
        return np.log1p(np.exp(x)) * 0 + np.where(x > 0, x, 0) * (np.exp(x) / np.exp(x))
    result = make_checker().relu(exp_based)
    assert not result.passed and "NaN or inf" in result.message


def test_undefined_and_not_callable():
    check = make_checker()
    assert "not defined" in check.relu(None).message
    assert "not callable" in check.relu(3).message


@pytest.mark.parametrize("body", ["loop", "sleep"])
def test_endless_code_is_stopped_by_the_time_limit(body):
    def endless(x):
        if body == "sleep":
            time.sleep(30)
        while True:
            pass
    start = time.perf_counter()
    result = make_checker(seconds=0.5).relu(endless)
    assert time.perf_counter() - start < 5
    assert not result.passed and "too slow: stopped after 0.5 s" in result.message


def test_learner_cannot_swallow_the_timeout():
    def stubborn(x):
        try:
            while True:
                pass
        except Exception:
            return np.maximum(x, 0)
    result = make_checker(seconds=0.3).relu(stubborn)
    assert "too slow" in result.message


def test_time_limit_works_outside_the_main_thread():
    outcome = []

    def worker():
        try:
            with time_limit(0.3):
                while True:
                    pass
        except CheckTimeout:
            outcome.append("stopped")
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert outcome == ["stopped"]


def test_recursion_error_is_named():
    def forever(x):
        return forever(x)
    result = make_checker().relu(forever)
    assert not result.passed and "RecursionError" in result.message


def test_non_function_exercise_and_expect():
    check = make_checker()
    assert check.answer(42).passed
    result = check.answer(41)
    assert not result.passed and result.message == "expected 42, got 41"


def test_hints_come_one_at_a_time_and_stop_at_the_last():
    check = make_checker()
    first, second, third = (check._hint("relu") for _ in range(3))
    assert (first.number, second.number, third.number) == (1, 2, 2)
    assert "Use np.maximum" in repr(first) and "again for the next" in repr(first)
    assert "again for the next" not in repr(second)
    assert "last hint" in repr(second)
    assert check._hint("relu", 1).text == "Use np.maximum."
    assert "no exercise 'nope' in 99_demo; exercises: relu, answer" == repr(check._hint("nope"))
    assert "has hints 1 to 2" in repr(check._hint("relu", 5))
    assert check.hints("relu") == ["Use np.maximum.", "np.maximum(x, 0)"]


def test_hint_shows_itself_even_inside_a_loop(capsys):
    check = make_checker()
    for _ in range(2):
        assert check.hint("relu") is None  # nothing left for the cell to display twice
    out = capsys.readouterr().out
    assert "hint 1/2 for relu: Use np.maximum." in out and "hint 2/2 for relu" in out


def test_scoreboard_rechecks_the_names_defined_now_like_the_grader():
    check = make_checker()
    check.relu(np.abs)  # the last check cell run saw a wrong function ...
    table = check.scoreboard(namespace={"relu": relu_ok})
    assert (table.points, table.max_points) == (2, 3)  # ... but the table checks what `relu` is now
    text = repr(table)
    assert "relu" in text and "passed" in text and "not defined" in text and "2/3" in text
    assert "<table>" in table._repr_html_()


def test_scoreboard_defaults_to_the_callers_globals():
    table = make_checker().scoreboard()  # this module defines neither relu nor answer
    assert table.points == 0 and "not defined" in repr(table)


def test_grade_runs_every_check_against_a_namespace():
    results = make_checker().grade({"relu": relu_ok, "answer": 7})
    assert [r.passed for r in results] == [True, False]


def test_registration_rules():
    check = Checker("99_demo")
    with pytest.raises(ValueError, match="needs at least one hint"):
        check.exercise(points=1)(lambda fn: "ok")
    with pytest.raises(ValueError, match="taken"):
        check.exercise(points=1, hints=["h"])(make_checker)  # fine once
        check.exercise(points=1, hints=["h"])(make_checker)


def test_expect_close_accepts_torch_tensors_refuses_lists_and_float32():
    torch = pytest.importorskip("torch")
    expect_close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]))
    expect_close(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    with pytest.raises(CheckFailed, match="max error 1"):
        expect_close(np.array([1.0, 3.0]), np.array([1.0, 2.0]), rtol=0)
    with pytest.raises(CheckFailed, match="is a list; return a NumPy array of shape \\(2,\\)"):
        expect_close([1.0, 2.0], np.array([1.0, 2.0]))
    with pytest.raises(CheckFailed, match="is float32 where the input was float64") as fail:
        expect_close(np.array([1.0, 2.0], dtype=np.float32), np.array([1.0, 2.0]))
    assert fail.value.mistake == "float32"


def test_a_limit_inside_a_limit_keeps_the_outer_one():
    start = time.perf_counter()
    with pytest.raises(CheckTimeout):
        with time_limit(0.6):
            with time_limit(5):  # the inner limit may not outlast the outer one
                while True:
                    pass
    assert time.perf_counter() - start < 2
    start = time.perf_counter()
    with pytest.raises(CheckTimeout):
        with time_limit(0.6):
            with time_limit(0.1):
                pass  # the inner block ends in time ...
            while True:  # ... and the outer limit still stops this
                pass
    assert time.perf_counter() - start < 2


def test_drawing_from_a_random_generator_is_not_a_mutation():
    def sample(n, rng):
        return rng.permutation(n)
    assert call(sample, 5, np.random.default_rng(0)).shape == (5,)


def test_hint_for_an_unknown_exercise_reads_the_same_as_html():
    hint = make_checker()._hint("nope")
    assert "hint 0/0" not in hint._repr_html_() and "no exercise &#x27;nope&#x27;" in hint._repr_html_()


# --------------------------------------------------------------------------- diagnose and expect_tuple

def test_diagnose_names_the_first_mistake_matched():
    expected = np.array([1.0, 2.0])
    mistakes = [(np.array([9.0, 9.0]), "not this one"), (expected * 2, "doubled"), (expected * 2, "later")]
    with pytest.raises(CheckFailed, match="^doubled$"):
        diagnose(expected * 2, expected, mistakes)


def test_diagnose_is_quiet_for_the_right_answer_and_for_unknown_mistakes():
    expected = np.array([1.0, 2.0])
    diagnose(expected.copy(), expected, [(expected * 2, "doubled")])  # right: nothing to say
    diagnose(expected + 1, expected, [(expected * 2, "doubled")])  # wrong, but not a known mistake
    diagnose(None, expected, [(expected * 2, "doubled")])


def test_diagnose_skips_candidates_that_raise_or_equal_the_answer():
    expected = np.array([0.0, 0.0])

    def broken():
        raise ZeroDivisionError

    got = np.array([0.0, 1e-12])  # within tolerance of the answer AND of the "mistake" below
    diagnose(got, expected, [(broken, "raised"), (-expected, "a sign flip that changes nothing")])
    wrong = np.array([1.0, 1.0])
    diagnose(wrong, expected, [(broken, "raised"), (expected, "equals the answer")])
    with pytest.raises(CheckFailed, match="ones"):
        diagnose(wrong, expected, [(broken, "raised"), (lambda: np.ones(2), "ones")])


def test_diagnose_uses_the_callers_tolerances_and_comparison():
    expected = np.array([1.0])
    mistakes = [(np.array([2.0]), "doubled")]
    with pytest.raises(CheckFailed, match="doubled"):
        diagnose(np.array([2.0 + 1e-7]), expected, mistakes)  # default rtol 1e-6
    diagnose(np.array([2.0 + 1e-7]), expected, mistakes, rtol=1e-9, atol=1e-12)
    same_sum = lambda a, b: np.isclose(np.sum(a), np.sum(b))  # noqa: E731
    with pytest.raises(CheckFailed, match="sum"):
        diagnose([1.0, 2.0], [0.0], [([3.0], "sum")], same=same_sum)


def test_expect_tuple_returns_a_right_tuple_or_list():
    assert expect_tuple((1, 2), 2, "(a, b)", "f") == (1, 2)
    assert expect_tuple([1, 2, 3], 3, "[a, b, c]", "f") == [1, 2, 3]


@pytest.mark.parametrize("result, types, words", [
    (None, (tuple, list), "f returned None: did you forget a `return` of (dx, db)?"),
    ((1, 2, 3), (tuple, list), "f must return two arrays (dx, db) as a pair: a tuple or list of 2 arrays; "
                               "got a tuple of length 3"),
    (np.zeros(2), (tuple, list), "f must return two arrays (dx, db) as a pair: a tuple or list of 2 arrays; "
                                 "got a ndarray"),
    ([1, 2], (tuple,), "f must return two arrays (dx, db) as a pair: a tuple of 2 arrays; got a list of length 2"),
])
def test_expect_tuple_says_what_came_back(result, types, words):
    with pytest.raises(CheckFailed) as fail:
        expect_tuple(result, 2, "(dx, db)", "f", "arrays", types=types)
    assert str(fail.value) == words


def test_expect_tuple_counts_in_words():
    with pytest.raises(CheckFailed, match=r"^g must return four values \[a, b, c, d\]: a tuple or list of 4 "
                                          r"values; got a tuple of length 3$"):
        expect_tuple((1, 2, 3), 4, "[a, b, c, d]", "g")
    with pytest.raises(CheckFailed, match=r"must return three values \(a, b, c\) as a triple: a tuple of 3 "):
        expect_tuple([1, 2, 3], 3, "(a, b, c)", "g", types=(tuple,))


# --------------------------------------------------------------------------- honest grading

from dlcourse.grading import Mistake, first_wrong_stage, reproduce, trying  # noqa: E402
from dlcourse.neurons import numpy_impl as course  # noqa: E402


def course_checker():
    """A check whose reference is a function of the course's (dlcourse.neurons.numpy_impl.sigmoid)."""
    check = Checker("99_demo")
    rows = [Mistake("naive", lambda x: 1 / (1 + np.exp(-x)) + 1, "plus one")]

    @check.exercise(points=1, hints=["h"], reference=course.sigmoid, mistakes=rows)
    def sigmoid(fn):
        x = np.array([-2.0, 0.0, 3.0])
        got = call(fn, x)
        diagnose(got, course.sigmoid(x), rows, apply=lambda wrong: wrong(x))
        expect_close(got, course.sigmoid(x))
        return "ok"
    return check


def my_sigmoid(x):
    return 0.5 * (1 + np.tanh(x / 2))


@pytest.mark.parametrize("how, obj", [
    ("imported", course.sigmoid),
    ("lambda", lambda x: course.sigmoid(x)),
    ("partial", __import__("functools").partial(course.sigmoid)),
    ("def", lambda x: [course.sigmoid(v) for v in [x]][0]),
])
def test_the_course_reference_and_wrappers_earn_nothing(how, obj):
    result = course_checker().sigmoid(obj)
    assert not result.passed and result.status == "course code" and result.outcome == "course code"
    assert "no points for the course's own code" in result.message
    assert "dlcourse.neurons.numpy_impl.sigmoid" in result.message


def test_an_own_answer_still_passes_while_the_check_uses_the_reference():
    assert course_checker().sigmoid(my_sigmoid).passed


def test_a_course_function_named_like_the_exercise_is_refused_without_registering_it():
    check = Checker("99_demo")

    @check.exercise(points=1, hints=["h"])
    def sigmoid(fn):
        expect_close(call(fn, np.zeros(2)), np.full(2, 0.5))
        return "ok"
    assert check.sigmoid(lambda x: course.sigmoid(x)).status == "course code"
    assert check.sigmoid(my_sigmoid).passed


def test_a_subclass_of_a_course_class_is_course_code():
    from dlcourse.backprop.engine import Value
    check = Checker("99_demo")

    @check.exercise(points=1, hints=["h"], target="Value", reference=Value)
    def value_ops(cls):
        expect((cls(2.0) * cls(3.0)).data == 6.0, "wrong product")
        return "ok"

    class Mine(Value):
        pass

    class Delegating:
        def __init__(self, data):
            self.inner = Value(data)
            self.data = data

        def __mul__(self, other):
            return Delegating((self.inner * other.inner).data)

    assert check.value_ops(Mine).status == "course code"
    assert check.value_ops(Delegating).status == "course code"


def test_a_mistake_row_is_named_and_its_name_reaches_the_outcome():
    result = course_checker().sigmoid(lambda x: 1 / (1 + np.exp(-x)) + 1)
    assert result.message == "plus one" and result.mistake == "naive"
    assert result.outcome == "mistake: naive" and result.status == "failed"


def test_the_smallest_failing_case_is_shown_with_a_call_that_reproduces_it():
    check = Checker("99_demo")

    @check.exercise(points=1, hints=["h"])
    def double(fn):
        for x in (np.array([1.0]), np.array([1.0, -2.0]), np.arange(100.0)):
            with trying("double", x) as case:
                case.got, case.expected = call(fn, x), 2 * x
                expect_close(case.got, case.expected)
        return "ok"
    result = check.double(lambda x: 2 * np.abs(x))
    assert "max error 8" in result.message
    assert "got      np.array([2., 4.])" in result.details
    assert "expected np.array([ 2., -4.])" in result.details
    assert "reproduce it in a new cell:  double(np.array([ 1., -2.]))" in result.details
    assert "\n  smallest failing case:\n    got      np.array([2., 4.])" in repr(result)
    assert "<pre" in result._repr_html_()
    assert reproduce("f", np.arange(200.0), lr=0.1) == "f(<array of shape (200,), dtype float64>, lr=0.1)"


def test_first_wrong_stage_names_the_stage_after_the_last_right_one():
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    dh = np.array([[0.5, 1.0], [-1.0, 2.0]])
    mask = x > 0

    def backward_with_wrong_mask(x, dh):
        dpre = dh * (dh > 0)  # the mask taken from the upstream gradient, not the input
        dx = dpre * 2.0
        return dx

    recorded: list = []
    call(backward_with_wrong_mask, x, dh, record=recorded)
    stages = [("dh", dh, "the upstream gradient"), ("dpre", dh * mask, "the ReLU mask"),
              ("dx", dh * mask * 2, "times 2")]
    with pytest.raises(CheckFailed, match=r"^dh is right; dpre is wrong: the ReLU mask$") as fail:
        first_wrong_stage(recorded, stages)
    assert fail.value.mistake == "stage dpre"
    first_wrong_stage([dh, dh * mask, dh * mask * 2], stages)  # all found: nothing to say
    first_wrong_stage([dh], stages)  # no array of dpre's shape... it has: but only dh itself
    first_wrong_stage([np.zeros(3)], stages)  # nothing of the stages' shape: cannot point


def test_concept_question_explains_once_right_and_names_wrong_values():
    check = Checker("99_demo")
    check.question("q_shape", answer=(3, 4), explanation="dW has the shape of W.",
                   mistakes=[Mistake("transposed", (4, 3), "that is W.T's shape")])
    check.question("q_choice", answer="b", choices=("a", "b", "c"), explanation="b diverges.",
                   mistakes=[Mistake("too small", "a", "a converges, slowly")])
    assert check.q_shape(lambda: (3, 4)).message == "right. dW has the shape of W."
    assert check.q_shape([3, 4]).passed
    result = check.q_shape(lambda: (4, 3))
    assert result.message == "that is W.T's shape" and result.outcome == "mistake: transposed"
    assert "not the answer" in check.q_shape((1, 1)).message
    assert check.q_choice(" B ").passed and check.q_choice("a").message == "a converges, slowly"
    assert "not one of the choices" in check.q_choice("z").message
    assert check.q_choice(lambda: (_ for _ in ()).throw(NotImplementedError())).status == "not implemented"


def test_a_course_method_attached_to_a_learners_class_is_course_code():
    from dlcourse.backprop import engine
    check = Checker("99_demo")

    @check.exercise(points=1, hints=["h"], target="Value")
    def value_backward(cls):
        return "ok"

    class Mine:
        def __init__(self, data):
            self.data = data
    Mine.backward = engine.Value.backward
    result = check.value_backward(Mine)
    assert result.status == "course code" and "as Mine.backward" in result.message


def test_questions_want_exact_counts_and_say_when_the_form_is_wrong():
    check = Checker("99_demo")
    check.question("q_count", answer=101770, explanation="count them.")
    check.question("q_rate", answer=0.2, explanation="2 / L.")
    check.question("q_shape", answer=(32, 64), explanation="(N, H).")
    assert not check.q_count(101760).passed and check.q_count(101770.0).passed
    assert check.q_count(True).message == "return a number, not a bool (True)"
    assert check.q_rate(0.2001).passed and check.q_rate("0.2").message.startswith("return a number, not a str")
    assert check.q_shape(np.array([32, 64])).passed
    assert check.q_shape("(32, 64)").message.startswith("return a shape as a tuple")
    assert "concept question: it has no hints" in repr(check._hint("q_count"))


def test_the_reproducing_line_brings_its_imports_and_shows_the_inputs_before_a_mutation():
    from dlcourse.backprop.numpy_impl import LinearCache
    line = reproduce("linear_backward", np.ones(1), LinearCache(np.ones(1), np.ones(1)))
    assert line.startswith("from dlcourse.backprop.numpy_impl import LinearCache; linear_backward(")
    check = Checker("99_demo")

    @check.exercise(points=1, hints=["h"])
    def shift(fn):
        x = np.array([1.0, 2.0])
        with trying("shift", x):
            expect_close(call(fn, x), x + 1)
        return "ok"

    def in_place(values):
        values += 1
        return values
    result = check.shift(in_place)
    assert "mutated its input `values` (argument 1) in place" in result.message
    assert "shift(np.array([1., 2.]))" in result.details


def test_expect_defaults_names_a_changed_default_and_ignores_the_rest():
    from dlcourse.grading import expect_defaults

    def step(w, lr, momentum=0.9, betas=(0.9, 0.999), eps=1e-8):
        return w
    expect_defaults(step, "step", momentum=0.9, betas=(0.9, 0.999), eps=1e-8, lr=0.1, missing=1)
    with pytest.raises(CheckFailed, match=r"^step's default momentum=0.99 is not the exercise's momentum=0.9") as fail:
        expect_defaults(lambda w, momentum=0.99: w, "step", momentum=0.9)
    assert fail.value.mistake == "wrong default"
    with pytest.raises(CheckFailed):
        expect_defaults(lambda w, betas=(0.9, 0.99): w, "step", betas=(0.9, 0.999))
    expect_defaults(lambda w, eps=1e-08: w, "step", eps=1e-8)
    expect_defaults(lambda x, train=True: x, "layer", train=True)          # a bool default that matches
    with pytest.raises(CheckFailed, match="train=False is not the exercise's train=True"):
        expect_defaults(lambda x, train=False: x, "layer", train=True)
    with pytest.raises(CheckFailed):
        expect_defaults(lambda x, train=1: x, "layer", train=True)          # 1 is not True for a flag
