"""ruff, as configured in pyproject.toml, is clean: lint and format are part of the test run."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")  # this environment's, installed by [test]
    path = str(beside) if beside.exists() else shutil.which("ruff")
    if path is None:
        pytest.skip('ruff is not installed: pip install -e ".[test]"')
    return path


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    done = subprocess.run([ruff(), *command], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
