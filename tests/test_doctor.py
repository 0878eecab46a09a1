"""`python -m bench doctor`: the machine's inventory, and whether the main job can run."""

import importlib.metadata

import pytest

from bench import doctor
from bench.cli import main
from bench.methods import METHODS


def test_doctor_on_this_machine(capsys, tmp_path):
    assert main(["doctor", "--reports", str(tmp_path / "reports")]) == 0
    out = capsys.readouterr().out
    for item in ("python", "C compiler", "Python headers", "torch", "pytest-benchmark", "scipy"):
        assert f"\n{item} " in out, item
    assert "Methods on " in out and all(f"  {name} " in out for name in METHODS)
    assert "The main job can run here" in out
    assert not (tmp_path / "reports").exists()  # checked, not made


def _versions(monkeypatch, **fake):
    real = importlib.metadata.version

    def version(name):
        if name in fake:
            if fake[name] is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return fake[name]
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.mark.parametrize(
    ("fake", "item", "words"),
    [
        ({"pandas": None}, "pandas", ["not installed", "missing"]),
        ({"pytest-benchmark": "5.1.0"}, "pytest-benchmark", ["5.1.0", "5.2 or newer needed"]),
    ],
)
def test_a_required_package_missing_or_too_old_exits_1(
    monkeypatch, capsys, tmp_path, fake, item, words
):
    _versions(monkeypatch, **fake)
    assert main(["doctor", "--reports", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(f"{item} "))
    assert all(word in line for word in words), line
    assert f"The main job cannot run here: {item} missing or too old." in out


def test_an_optional_package_missing_costs_its_feature_only(monkeypatch, capsys, tmp_path):
    hidden = ("jax", "tqdm", "scipy", "ruptures", "nvidia-ml-py")
    _versions(monkeypatch, **dict.fromkeys(hidden))
    assert main(["doctor", "--reports", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "needed for the jax peer method" in out and "needed for progress bars" in out
    for item in hidden:
        line = next(line for line in out.splitlines() if line.startswith(f"{item} "))
        assert "not installed" in line and " optional " in line, line
    assert "The main job can run here" in out


def test_a_reports_folder_that_cannot_be_written_exits_1(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["doctor", "--reports", str(blocker / "reports")]) == 1
    assert "not a directory" in capsys.readouterr().out


def test_versions_compare_as_versions_not_strings():
    assert doctor._older("5.10.0", "5.2") is False and doctor._older("2.7.1", "2.8") is True
