"""`python -m dlcourse.doctor`: one line per item, [FAIL] names what is wrong, exit status 1 on any [FAIL]."""
import re
import subprocess
import sys

import pytest

from dlcourse import doctor

DEPENDENCIES = ["numpy", "torch", "matplotlib", "ipywidgets", "scikit-learn", "tqdm", "nbformat",
                "nbclient", "ipykernel", "threadpoolctl"]
LINE = re.compile(r"^\[(OK|WARN|FAIL)\] +(.+?): (.+)$")


def run_main(capsys, argv=()):
    code = doctor.main(list(argv))
    out = capsys.readouterr().out.splitlines()
    lines = [LINE.match(line) for line in out[1:-1]]
    assert all(lines), out  # every line between the header and the summary is a status line
    return code, out, {(m[2], m[1]): m[3] for m in lines}


def line_for(lines, item, status):
    matches = [detail for (name, st), detail in lines.items() if name == item and st == status]
    assert matches, f"no [{status}] {item} line in {lines}"
    return matches[0]


def test_main_reports_every_item_and_passes_here(capsys):
    code, out, lines = run_main(capsys)
    items = {name for name, _ in lines}
    assert {"python", "dlcourse", "jupyterlab", "device", "threads", "Colab", "data cache",
            "offline data (digits)", "offline data (sample images)"} | set(DEPENDENCIES) <= items
    assert not [key for key in lines if key[1] == "FAIL"], out
    assert code == 0 and out[-1].startswith("doctor: ready for the course")
    assert "supported: >=" in line_for(lines, "numpy", "OK")
    assert line_for(lines, "Colab", "OK").startswith("no")
    assert "1797 images" in line_for(lines, "offline data (digits)", "OK")
    assert "2 photos" in line_for(lines, "offline data (sample images)", "OK")


def test_floors_come_from_the_package_metadata():
    requires, dependencies = doctor.declared()
    assert requires.startswith(">=3.")
    found = dict(dependencies)
    assert set(DEPENDENCIES) <= set(found)
    assert "jupytext" not in found and "pytest" not in found  # the dev extra is not checked
    assert found["matplotlib"] == ">=3.8.4"  # plt.subplots(width_ratios=...) and NumPy 2


def test_a_missing_package_fails_and_is_named(monkeypatch, capsys):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: None if name == "tqdm" else real(name))
    code, out, lines = run_main(capsys)
    assert code == 1
    assert line_for(lines, "tqdm", "FAIL").startswith("not installed (supported: >=4.60)")
    assert "pip install -r requirements.txt" in line_for(lines, "tqdm", "FAIL")
    assert out[-1].startswith("doctor: 1 problem(s)")


def test_a_too_old_version_fails_and_is_named(monkeypatch, capsys):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: "3.5.3" if name == "matplotlib" else real(name))
    code, _, lines = run_main(capsys)
    assert code == 1
    assert "3.5.3 is installed, outside the supported range >=3.8.4" in line_for(lines, "matplotlib", "FAIL")


def test_without_torch_the_doctor_reports_instead_of_crashing(monkeypatch, capsys):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: None if name == "torch" else real(name))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    code, _, lines = run_main(capsys)
    assert code == 1
    assert line_for(lines, "torch", "FAIL").startswith("not installed")
    assert "torch does not import" in line_for(lines, "device", "FAIL")
    assert "PyTorch" not in line_for(lines, "threads", "OK")


def test_a_package_that_does_not_import_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    line = doctor.check_package("tqdm", ">=4.60")
    assert line.status == "FAIL" and "does not import (ModuleNotFoundError: import of tqdm halted" in line.detail


def test_an_unwritable_cache_fails_and_names_the_folder(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's parent folder should be")
    monkeypatch.setenv("DLCOURSE_DATA", str(blocker / "cache"))
    code, _, lines = run_main(capsys)
    assert code == 1
    detail = line_for(lines, "data cache", "FAIL")
    assert str(blocker / "cache") in detail and "is a file, not a folder" in detail and "DLCOURSE_DATA" in detail


def test_a_writable_cache_passes_and_creates_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("DLCOURSE_DATA", str(tmp_path / "a" / "b"))
    line = doctor.check_cache()
    assert line.status == "OK" and "created at the first download" in line.detail
    assert list(tmp_path.iterdir()) == []


def test_a_permission_error_is_reported(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(doctor.tempfile, "TemporaryDirectory", refuse)
    assert doctor.unwritable(tmp_path) == f"cannot write in {tmp_path}: Permission denied"


def test_too_old_python_fails():
    line = doctor.check_python(">=99")
    assert line.status == "FAIL" and "needs Python >=99" in line.detail


def test_colab_without_a_gpu_is_a_warning_with_the_menu_path(monkeypatch):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "test")
    line = doctor.check_device()
    assert line.status == "WARN" and "Runtime > Change runtime type > GPU" in line.detail
    assert doctor.check_colab().detail == "yes"
    assert doctor.check_jupyterlab() is None  # Colab is the front end there


def test_a_bad_thread_setting_fails(monkeypatch):
    monkeypatch.setenv("DLCOURSE_THREADS", "many")
    line = doctor.check_threads()
    assert line.status == "FAIL" and "whole number" in line.detail


def test_a_check_that_breaks_becomes_a_fail_line(monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom")
    monkeypatch.setattr(doctor, "check_sample_images", broken)
    code, _, lines = run_main(capsys)
    assert code == 1
    assert line_for(lines, "offline data (sample images)", "FAIL") == "the check itself failed: RuntimeError: boom"


@pytest.mark.parametrize("version, specifier, expected", [
    ("2.13.0+cpu", ">=2.0", True),
    ("1.26.4", ">=1.23", True),
    ("1.22.4", ">=1.23", False),
    ("3.10", ">=3.6", True),
    ("0.7.2", ">=0.7.3", False),
    ("7.7.1", ">=7.6,<9", True),
    ("9.0", ">=7.6,<9", False),
    ("2.0.0rc1", ">=2.0", True),   # release numbers only: a pre-release counts as its release
])
def test_the_small_version_compare_agrees_with_packaging(version, specifier, expected):
    assert doctor._simple_satisfies(version, specifier) is expected
    if "rc" not in version:
        assert doctor.satisfies(version, specifier) is expected


def test_command_line_exit_status():
    done = subprocess.run([sys.executable, "-m", "dlcourse.doctor"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK]   numpy:" in done.stdout and done.stderr == ""
