"""Chapter 07's widget and plots: the maps shown are the model's own, every control changes the picture."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dlcourse.data import TextCorpus
from dlcourse.transformer import explore, tasks
from dlcourse.transformer import torch_impl as tt


def gpt_for(vocab_size, block_size, n_layer=2, n_head=2, seed=0):
    torch.manual_seed(seed)
    return tt.GPT(vocab_size, block_size, n_layer=n_layer, n_head=n_head, n_embd=16).eval()


@pytest.fixture(scope="module")
def setting():
    reversal = tasks.Reversal(length=5)
    addition = tasks.Addition(digits=2)
    corpus = TextCorpus.from_text("def f(x):\n    return x + 1\n" * 40, chunk_size=100)
    models = {"reversal": (gpt_for(reversal.vocab_size, reversal.block_size), reversal),
              "addition": (gpt_for(addition.vocab_size, addition.block_size, n_layer=1, n_head=4, seed=1), addition),
              "text": (gpt_for(corpus.vocab_size, 32, seed=2), corpus)}
    examples = {"reversal": ["12345>", "54321>", "11223>"], "addition": ["12+34=", "99+01="],
                "text": ["def f(x):", "return "]}
    return models, examples


def test_model_reading_is_the_models_own_attention(setting):
    models, _ = setting
    model, task = models["reversal"]
    reading = explore.model_reading(model, task, "12345>", answer_len=task.answer_len)
    assert len(reading["written"]) == task.answer_len
    assert reading["tokens"] == "12345>" + reading["written"][:-1]
    maps = reading["maps"]
    assert maps.shape == (2, 2, 10, 10)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(maps, k=1) == 0)                        # causal: nothing above the diagonal
    expected = tt.attention_maps(model, torch.as_tensor(task.encode(reading["tokens"]))).numpy()
    np.testing.assert_array_equal(maps, expected)
    # the written answer is the greedy continuation
    out = tt.generate(model, torch.as_tensor(task.encode("12345>")), task.answer_len, greedy=True)
    assert task.decode(out[6:]) == reading["written"]
    with pytest.raises(ValueError, match="type an input"):
        explore.model_reading(model, task, "")


def test_text_model_reading_keeps_the_last_block(setting):
    models, _ = setting
    model, corpus = models["text"]
    reading = explore.model_reading(model, corpus, "x" * 50, new_chars=10)
    assert len(reading["written"]) == 10
    assert len(reading["tokens"]) == model.block_size
    assert reading["maps"].shape == (2, 2, 32, 32)


def test_explorer_every_control_changes_the_png(setting):
    models, examples = setting
    ex = explore.attention_explorer(models, examples)
    assert ex.text.value == "12345>" and ex.updates == 1
    seen = {ex.image.value}
    for control, value in [(ex.layer, 0), (ex.head, 1), (ex.example, 1), (ex.text, "13579>"),
                           (ex.choice, "addition"), (ex.head, 3), (ex.choice, "text"), (ex.example, 0)]:
        control.value = value
        assert ex.image.value not in seen, (control.description, value)
        seen.add(ex.image.value)
    # switching models adapts the sliders to the model's layers and heads
    ex.choice.value = "addition"
    assert (ex.layer.max, ex.head.max) == (0, 3)
    assert ex.text.value == examples["addition"][min(ex.example.value, 1)]


def test_explorer_says_when_an_input_cannot_be_read(setting):
    models, examples = setting
    ex = explore.attention_explorer(models, examples)
    before, updates = ex.image.value, ex.updates
    ex.text.value = "12a45>"                                     # 'a' is not a digit of the task
    assert "cannot read this input" in ex.readout.value and "'a'" in ex.readout.value
    assert ex.image.value == before and ex.updates == updates
    ex.text.value = ""
    assert "type an input" in ex.readout.value


def test_explorer_grades_typed_problems(setting):
    models, examples = setting
    ex = explore.attention_explorer(models, examples)
    model, task = models["reversal"]
    written = ex.reading["written"]
    mark = "✓ right" if written == "54321" else "✗ (right: 54321)"
    assert mark in ex.readout.value
    assert explore._task_answer(models["addition"][1], "12+34=") == "046"       # 46 in 3 digits
    assert explore._task_answer(tasks.Addition(digits=2, reverse_answer=True), "12+34=") == "640"
    assert explore._task_answer(models["addition"][1], "12+34") is None
    assert explore._task_answer(task, "123>") == "321"


def test_plots():
    maps = np.tril(np.ones((2, 3, 4, 4)))
    maps /= maps.sum(-1, keepdims=True)
    fig = explore.plot_attention_grid(maps, list("abcd"), title="t")
    assert len(fig.axes) == 6
    plt.close(fig)
    sizes = [4, 16, 64]
    fig = explore.plot_scale_study(sizes, {"unscaled": [2, 4, 8], "scaled": [1, 1, 1]},
                                   {"unscaled": [0.5, 0.8, 0.99], "scaled": [0.4, 0.4, 0.4]},
                                   {"unscaled": [1, 0.1, 1e-3], "scaled": [1, 1, 1]})
    assert len(fig.axes) == 3
    plt.close(fig)
