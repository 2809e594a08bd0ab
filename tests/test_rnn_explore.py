"""Chapter 06's widgets and plots: the gates shown are torch's own, every control changes the picture."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dlcourse.data import TextCorpus
from dlcourse.rnn import explore
from dlcourse.rnn import numpy_impl as rn
from dlcourse.rnn import torch_impl as rt

TEXT = "def f(x):\n    return x + 1\n" * 40


@pytest.fixture(scope="module")
def corpus():
    return TextCorpus.from_text(TEXT, chunk_size=100)


def model_of(kind, corpus, hidden=12):
    torch.manual_seed(0)
    return rt.CharLM(corpus.vocab_size, kind=kind, hidden=hidden, embed=6).double()


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_gate_activations_are_what_torch_computes(kind, corpus):
    model = model_of(kind, corpus)
    text = "return x"
    acts = explore.gate_activations(model, corpus, text)
    assert tuple(acts) == explore.GATE_NAMES[kind]
    for values in acts.values():
        assert values.shape == (len(text), 12)
    # the hidden states equal the torch layer's outputs
    with torch.no_grad():
        out, _ = model.rnn(model.embedding(torch.as_tensor(corpus.encode(text))[None]))
    np.testing.assert_allclose(acts["h (hidden state)"], out[0].numpy(), rtol=1e-10, atol=1e-12)
    for name, values in acts.items():
        if name[0] in "ifozr":                                  # sigmoid gates
            assert values.min() >= 0 and values.max() <= 1, name
        else:
            assert np.abs(values).max() <= (np.inf if name[0] == "c" else 1), name
    if kind == "lstm":   # c_t = f * c_{t-1} + i * g, step by step
        c_prev = np.vstack([np.zeros(12), acts["c (cell state)"][:-1]])
        np.testing.assert_allclose(acts["c (cell state)"],
                                   acts["f (forget gate)"] * c_prev + acts["i (input gate)"] * acts["g (candidate)"],
                                   rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="at least one character"):
        explore.gate_activations(model, corpus, "")


def test_gate_explorer_every_control_changes_the_png(corpus):
    ex = explore.gate_explorer(model_of("lstm", corpus), corpus, text="def f(x):")
    seen = {ex.image.value}
    for control, value in [(ex.first, 3), (ex.count, 5), (ex.order, "by index"), (ex.text, "return x + 1")]:
        control.value = value
        assert ex.image.value not in seen, control.description
        seen.add(ex.image.value)
    np.testing.assert_array_equal(ex.units(), np.arange(3, 8))
    assert ex.activations["h (hidden state)"].shape == (len("return x + 1"), 12)
    ex.order.value = "most active first"
    variance = ex.activations["h (hidden state)"].var(axis=0)
    shown = ex.units()
    assert np.all(np.diff(variance[shown]) <= 1e-15)            # most active first
    ex.text.value = ""                                          # an empty box does not break it
    assert ex.updates >= 6


def test_next_char_distribution_temperature_and_top_k(corpus):
    model = model_of("lstm", corpus)
    p1 = explore.next_char_distribution(model, corpus, "def ", 1.0)
    assert p1.shape == (corpus.vocab_size,) and np.isclose(p1.sum(), 1)
    with torch.no_grad():
        logits = model(torch.as_tensor(corpus.encode("def "))[None])[0][0, -1].double().numpy()
    np.testing.assert_allclose(p1, np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(), rtol=1e-10)
    greedy = explore.next_char_distribution(model, corpus, "def ", 0.0)
    assert greedy.max() == 1 and greedy.argmax() == logits.argmax()
    cold, hot = (explore.next_char_distribution(model, corpus, "def ", t) for t in (0.3, 3.0))
    entropy = [-(p[p > 0] * np.log(p[p > 0])).sum() for p in (cold, p1, hot)]
    assert entropy[0] < entropy[1] < entropy[2]
    top3 = explore.next_char_distribution(model, corpus, "def ", 1.0, top_k=3)
    assert (top3 > 0).sum() == 3 and set(np.flatnonzero(top3)) == set(np.argsort(-logits)[:3])


def test_sample_explorer_every_control_changes_the_png_and_the_text(corpus):
    ex = explore.sample_explorer(model_of("gru", corpus), corpus, prompt="def ")
    seen = {ex.image.value}
    texts = {ex.text}
    for control, value in [(ex.temperature, 1.5), (ex.top_k, 3), (ex.prompt, "return ")]:
        control.value = value
        assert ex.image.value not in seen, control.description
        seen.add(ex.image.value)
    assert ex.text.startswith("return ") and len(ex.text) == len("return ") + ex.length
    before, picture = ex.text, ex.image.value
    ex.seed.value = 5                                           # the seed changes the sample drawn under the bars
    assert ex.text != before and ex.text.startswith("return ") and ex.image.value != picture


def test_static_plots():
    fig = explore.plot_gradient_norms({"a": np.geomspace(1e-6, 1, 20), "b": np.ones(20)})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2
    plt.close(fig)
    study = rt.MemoryStudy(lags=(2, 4), kinds=("rnn", "lstm"), accuracy={"rnn": np.array([1.0, 0.2]),
                                                                           "lstm": np.array([1.0, 1.0])},
                           chance=0.125, seconds=1.0, steps=10)
    fig = explore.plot_memory_study(study)
    assert len(fig.axes[0].lines) == 3                          # two kinds and chance
    plt.close(fig)
