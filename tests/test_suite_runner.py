"""The benchmark suite end to end on a tiny problem: the results file has every field, the raw
samples, the skipped and failed cases, and both our loader and `pytest-benchmark compare` read it.
No speed is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.methods import METHODS, Method, get_method
from bench.results import CASE_FIELDS, load_results
from bench.suite_runner import BenchmarkRunError, run_benchmarks

FAST = ["--benchmark-max-time=0.02"]
ROOT = Path(__file__).resolve().parents[1]


class Broken(Method):
    name = "broken"

    def run(self, x, t, lr, steps):
        raise RuntimeError("boom\nsecond line")


class Wrong(Method):
    """Fast and wrong: one step short."""

    name = "wrong"

    def run(self, x, t, lr, steps):
        return get_method("analytic").run(x, t, lr, steps - 1)


@pytest.fixture
def extra_methods(monkeypatch):
    monkeypatch.setitem(METHODS, "broken", Broken())
    monkeypatch.setitem(METHODS, "wrong", Wrong())
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # triton_step is skipped on the CPU


@pytest.fixture(scope="module")
def compare_cli():
    path = Path(sys.executable).with_name("pytest-benchmark")  # this environment's, not another
    if not path.exists():
        pytest.skip("the pytest-benchmark command is not installed beside this Python")
    return str(path)


def test_results_file_has_every_field_samples_skips_and_failures(
    tmp_path, extra_methods, compare_cli
):
    names = ["autograd", "analytic", "triton_step", "broken", "wrong"]
    path = run_benchmarks(
        "smoke", "cpu", names, output=tmp_path / "r.json", progress=False, pytest_args=FAST
    )
    assert path == tmp_path / "r.json"
    assert len(load_results(path).cases) == 3  # the loader every command uses reads it
    data = json.loads(path.read_text())

    timed = {b["extra_info"]["method"]: b for b in data["benchmarks"]}
    assert set(timed) == {"autograd", "analytic", "wrong"}
    # Every field up to oracle_ok is in every case; the later ones are optional (CUDA-only,
    # `scale`-only); nothing outside CASE_FIELDS.
    core = list(CASE_FIELDS)[: list(CASE_FIELDS).index("oracle_ok") + 1]
    for entry in timed.values():
        assert set(core) <= set(entry["extra_info"]) <= set(CASE_FIELDS)
        assert len(entry["stats"]["data"]) == entry["stats"]["rounds"] >= 5
        assert entry["extra_info"]["device"] == "cpu"
    assert timed["autograd"]["extra_info"]["speedup_vs_autograd"] == 1.0
    assert timed["analytic"]["extra_info"]["speedup_vs_autograd"] > 0
    assert timed["analytic"]["extra_info"]["oracle_ok"] is True
    assert timed["wrong"]["extra_info"]["oracle_ok"] is False  # timed, and flagged

    assert data["vecreg"]["complete"] is True
    assert data["vecreg"]["cases_total"] == data["vecreg"]["cases_done"] == 5
    (skipped,) = data["vecreg"]["skipped"]
    assert skipped["method"] == "triton_step" and "TRITON_INTERPRET=1" in skipped["reason"]
    (failed,) = data["vecreg"]["failed"]
    assert failed == {
        "method": "broken",
        "problem": skipped["problem"],
        "reason": "RuntimeError: boom",
    }
    env = data["machine_info"]["vecreg"]
    assert env["device"] == "cpu" and env["device_name"] and env["torch"]

    shown = subprocess.run(
        [compare_cli, "compare", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "test_fit[analytic-" in shown.stdout


def test_a_run_with_nothing_timed_still_saves_the_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    path = run_benchmarks("smoke", "cpu", ["triton_step"], output=tmp_path / "r.json")
    data = load_results(path)
    assert data.cases == () and len(data.skipped) == 1 and data.complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.log"]  # no temporary
    assert capsys.readouterr().out == ""  # with the progress bar, pytest's output goes to a log
    assert "triton_step" in path.with_suffix(".log").read_text()


def test_bad_arguments_and_failed_runs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="'huge'"):
        run_benchmarks("huge", output=tmp_path / "r.json")
    with pytest.raises(ValueError, match="'adamw'"):
        run_benchmarks("smoke", methods=["adamw"], output=tmp_path / "r.json")
    with pytest.raises(BenchmarkRunError, match="usage error"):
        run_benchmarks(
            "smoke",
            "cpu",
            ["analytic"],
            output=tmp_path / "r.json",
            pytest_args=["--no-such-option"],
        )


def test_pytest_benchmark_only_from_the_root_prints_tables_and_the_path(tmp_path):
    """As a user types it (plus a tiny sweep): the root conftest.py loads the plugin."""
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--benchmark-only",
        "--sweep",
        "smoke",
        "--methods",
        "analytic",
        "--device",
        "cpu",
        f"--benchmark-json={out}",
        f"--report-dir={tmp_path / 'reports'}",
        "-p",
        "no:cacheprovider",
        *FAST,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "benchmark 'B4xD33-K10-lr1.65-float32'" in done.stdout
    assert f"results: {out}" in done.stdout
    assert "deselected" in done.stdout  # the unit tests are not listed one by one
    data = json.loads(out.read_text())
    assert data["benchmarks"][0]["extra_info"]["method"] == "analytic"
    assert data["vecreg"]["complete"] is True and data["vecreg"]["cases_done"] == 1
    # The same report `python -m bench report` builds, from the file just saved.
    reports = tmp_path / "reports"
    report = reports / (reports / "latest").readlink() / "index.html"  # latest -> <run-id>
    assert f"report: {report}" in done.stdout
    assert "B4xD33-K10-lr1.65-float32" in report.read_text(encoding="utf-8")
