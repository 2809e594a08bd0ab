"""Runtime helpers: device choice, seeding, threads, import weight, show_source, gradcheck."""
import subprocess
import sys

import numpy as np
import pytest

import dlcourse
from dlcourse import runtime
from dlcourse.gradcheck import numerical_grad, rel_error


def test_import_dlcourse_does_not_import_torch():
    code = "import sys, dlcourse; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_device_prefers_an_accelerator_and_explains_a_missing_one():
    torch = pytest.importorskip("torch")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert dlcourse.device() == expected
    assert dlcourse.device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available here.*Runtime"):
            dlcourse.device("cuda")


def test_seed_makes_numpy_python_and_torch_repeatable():
    import random
    torch = pytest.importorskip("torch")
    a = (dlcourse.seed(3).standard_normal(2), np.random.rand(), random.random(), torch.rand(1).item())
    b = (dlcourse.seed(3).standard_normal(2), np.random.rand(), random.random(), torch.rand(1).item())
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


def test_threads_default_to_one_and_can_be_overridden(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("DLCOURSE_THREADS", raising=False)
    assert runtime.default_threads() == 1
    monkeypatch.setenv("DLCOURSE_THREADS", "2")
    assert runtime.set_threads() == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("DLCOURSE_THREADS", "many")
    with pytest.raises(ValueError, match="whole number"):
        runtime.default_threads()
    runtime.set_threads(1)
    assert torch.get_num_threads() == 1


def test_colab_detection(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert dlcourse.in_colab() is ("google.colab" in sys.modules)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab")
    assert dlcourse.in_colab()


def test_show_source_prints_the_real_code(capsys):
    dlcourse.show_source(rel_error)
    out = capsys.readouterr().out
    assert "dlcourse.gradcheck.rel_error" in out and "def rel_error" in out
    with pytest.raises(TypeError, match="cannot show the source"):
        dlcourse.show_source(3)


def test_numerical_grad_of_a_known_function_and_rel_error():
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    grad = numerical_grad(np.sin, x, dout)
    assert rel_error(grad, np.cos(x) * dout) < 1e-8
    x_before = x.copy()
    numerical_grad(lambda v: np.sum(v ** 2), x)
    np.testing.assert_array_equal(x, x_before)  # the caller's array is untouched
    assert rel_error(np.ones(3), np.ones(3) * 1.1) > 1e-2
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))


def test_scale_up_device_skips_without_a_gpu(capsys):
    from dlcourse.runtime import scale_up_device
    assert scale_up_device("cpu") is None
    assert capsys.readouterr().out.startswith("scale_up: no GPU here (device 'cpu'), skipped.")
    assert scale_up_device("cpu", cuda_only=True) is None
    assert "no CUDA GPU here" in capsys.readouterr().out
    assert scale_up_device("cpu", run_on_cpu=True) == "cpu"       # tests train on the CPU
    assert capsys.readouterr().out == ""
