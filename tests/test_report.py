"""Reports from stored results files (no timing here), the report command, and the main job with a
stubbed sweep."""

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import results_factory as rf

from bench import cli
from bench.convergence import convergence_study
from bench.problem import Problem
from bench.report import write_report
from bench.report.publish import leftovers
from bench.suite_runner import BenchmarkRunError

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "sample_sweep.json"
PLOTS = {"convergence.png", "time_per_step.png", "speedup.png", "bandwidth.png"}


@pytest.fixture(scope="module")
def study():
    return convergence_study("cpu", methods=["autograd", "analytic"])


@pytest.fixture(scope="module")
def report(tmp_path_factory, study):
    table, traces = study
    out = tmp_path_factory.mktemp("reports")
    return write_report(SAMPLE, out=out, convergence=table, traces=traces)


def test_the_run_directory_holds_every_output(report):
    names = {p.name for p in report.iterdir()}
    assert names == {
        "index.html",
        "timing.csv",
        "convergence.csv",
        "summary.md",
        "results.json",
        *PLOTS,
    }
    assert report.name == "20261125-000000-synthetic-gpu-test-data"
    latest = report.parent / "latest"
    assert latest.resolve() == report.resolve()
    assert (latest / "index.html").read_bytes() == (report / "index.html").read_bytes()
    assert json.loads((report / "results.json").read_text()) == json.loads(SAMPLE.read_text())
    assert leftovers(report.parent) == []


def test_the_html_is_self_contained_and_starts_with_the_environment(report):
    page = (report / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == len(PLOTS)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:|#)', page), "a link that is not a data URI"
    assert "<script" not in page
    order = [page.index(f'id="{a}"') for a in ("environment", "timing", "convergence", "plots")]
    assert order == sorted(order)
    for text in ("Synthetic GPU (test data) (cuda)", "sm_mhz=1980", "3.8.0"):
        assert text in page


def test_timing_tables_one_per_problem_with_flags(report):
    page = (report / "index.html").read_text(encoding="utf-8")
    for problem in ("B1xD5-K1000", "B64xD1024-K100", "B4096xD4096-K100"):
        assert f"<h3>{problem}-lr0.1-float32 on cuda</h3>" in page
    assert page.count('<tr class="noisy">') == 1 and "noisy (IQR 31% of median)" in page
    assert "ORACLE FAILED (max err 0.03)" in page
    assert "event span / step" in page  # device_time_per_step_s in this older file
    assert "jax is not installed" in page and "CUDA graph capture failed" in page
    assert "triton_fused: move x and t once for several steps" in page

    timing = pd.read_csv(report / "timing.csv")
    assert len(timing) == 15
    fused = timing[(timing.method == "triton_fused") & (timing.batch == 4096)].iloc[0]
    assert fused.copy_fraction > 1 and fused.speedup_vs_autograd > 100


def test_convergence_table_and_summary(report):
    conv = pd.read_csv(report / "convergence.csv")
    row = conv[(conv.method == "autograd") & (conv.lr == 0.01)].iloc[0]
    assert row.step_to_1pct == 575 and row.verdict == "converged"
    assert set(conv.verdict) >= {"converged", "oscillating", "diverged"}
    summary = (report / "summary.md").read_text(encoding="utf-8")
    assert "### Convergence: the question's case at each lr" in summary
    assert "| autograd | 0.1 | converged | converged | 57 | 170 |" in summary
    assert "![Distance against iteration](convergence.png)" in summary


def test_a_report_without_a_study_or_autograd_and_with_unknown_methods(tmp_path):
    p = Problem(batch=8, dim=33, steps=10)
    entries = [rf.entry("jax", p, [1e-3, 1.1e-3]), rf.entry("my_new_method", p, [2e-3, 2e-3])]
    path = rf.write(tmp_path / "r.json", rf.results(entries))
    run = write_report(path, out=tmp_path / "reports")
    page = (run / "index.html").read_text(encoding="utf-8")
    assert "No convergence study in this report" in page
    assert not (run / "convergence.csv").exists() and not (run / "speedup.png").exists()
    assert "my_new_method" in page and (run / "bandwidth.png").exists()


def test_a_newer_run_moves_latest_and_a_rebuild_replaces_its_directory(tmp_path):
    p = Problem(batch=4, dim=8, steps=10)
    out = tmp_path / "reports"
    first = rf.results([rf.entry("analytic", p, [1e-3, 1e-3])])
    second = {**first, "datetime": "2026-11-26T08:00:00+00:00"}
    run1 = write_report(rf.write(tmp_path / "a.json", first), out=out)
    run2 = write_report(rf.write(tmp_path / "b.json", second), out=out)
    assert run1 != run2 and (out / "latest").resolve() == run2.resolve()
    (run2 / "stale.txt").write_text("from an older build")
    assert write_report(tmp_path / "b.json", out=out) == run2
    assert not (run2 / "stale.txt").exists()
    shown = sorted(p.name for p in out.iterdir() if p.name[0] != ".")
    assert shown == sorted([run1.name, run2.name, "latest"]) and leftovers(out) == []


def test_a_build_that_fails_halfway_leaves_nothing_behind(tmp_path, monkeypatch):
    from bench.report import plots

    p = Problem(batch=4, dim=8, steps=10)
    out = tmp_path / "reports"
    old = write_report(rf.write(tmp_path / "old.json", rf.results([rf.entry("x", p, [1.0])])), out)
    before = {q.name: q.stat().st_mtime_ns for q in old.iterdir()}

    saved = []
    real_save = plots.save

    def save_then_fail(fig, path):
        if saved:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C while the plots were drawn
        saved.append(real_save(fig, path))
        return saved[-1]

    monkeypatch.setattr(plots, "save", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_report(SAMPLE, out=out)
    assert saved, "the failure came after the first plot was written"
    shown = sorted(q.name for q in out.iterdir() if q.name[0] != ".")
    assert shown == sorted([old.name, "latest"]) and leftovers(out) == []
    assert (out / "latest").resolve() == old.resolve()
    assert {q.name: q.stat().st_mtime_ns for q in old.iterdir()} == before


def test_a_baseline_adds_a_comparison_section(tmp_path, monkeypatch):
    p = Problem(batch=4, dim=8, steps=10)
    base_samples = [1e-3 * (1 + 0.001 * i) for i in range(10)]
    base = rf.write(tmp_path / "base.json", rf.results([rf.entry("analytic", p, base_samples)]))
    slower = [1.25 * s for s in base_samples]
    new = rf.write(tmp_path / "new.json", rf.results([rf.entry("analytic", p, slower)]))
    run = write_report(new, out=tmp_path / "reports", baseline=base)
    page = (run / "index.html").read_text(encoding="utf-8")
    assert 'id="comparison"' in page and "<td>regression</td>" in page
    assert f"REGRESSION analytic {p.name} cpu" in page
    assert "REGRESSION" in (run / "summary.md").read_text()
    assert (run / "baseline.json").exists()

    monkeypatch.setitem(sys.modules, "bench.compare", None)  # as if not installed
    run = write_report(new, out=tmp_path / "reports", baseline=base)
    assert "Comparison skipped: bench.compare is not available" in (run / "index.html").read_text()


@pytest.mark.parametrize("name", rf.BAD_FILES)
@pytest.mark.parametrize("as_baseline", [False, True])
def test_report_command_rejects_bad_files_in_one_line(tmp_path, capsys, name, as_baseline):
    bad, words = rf.write_bad(tmp_path, name)
    args = ["report", str(SAMPLE), "--baseline", str(bad)] if as_baseline else ["report", str(bad)]
    assert cli.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and words in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_report_command_as_a_user_runs_it(tmp_path):
    bad = tmp_path / "corrupt.json"
    bad.write_text("{")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}: is not valid JSON")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_report_command_builds_a_report(tmp_path, capsys):
    assert cli.main(["report", str(SAMPLE), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("report: ") and out.strip().endswith("index.html")
    assert Path(out.split("report: ")[1].strip()).exists()


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    top = capsys.readouterr().out
    assert all(name in top for name in ("run", "report", "seed"))
    for command, options in {
        "report": ["RESULTS.json", "--out", "--baseline"],
        "run": ["--device", "--sweep", "--methods", "--dtypes", "--output", "--out", "--baseline"],
    }.items():
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        for option in options:
            assert re.search(rf"{re.escape(option)}\b.*\n?.*\w", text), option
        assert "--no-progress" in text or command == "report"


@pytest.fixture
def stub_sweep(monkeypatch, tmp_path):
    """bench.suite_runner.run_benchmarks, stubbed: records its arguments, returns SAMPLE's copy."""
    calls = []

    def run_benchmarks(
        sweep="quick",
        device=None,
        methods=None,
        dtypes=None,
        output=None,
        progress=True,
        *,
        pytest_args=(),
        **options,  # the sweep's further options (precision, threads): not what is checked here
    ):
        calls.append(
            {
                "sweep": sweep,
                "device": device,
                "methods": methods,
                "dtypes": dtypes,
                "progress": progress,
            }
        )
        path = output or tmp_path / "results.json"
        path.write_text(SAMPLE.read_text())
        return path

    fake = types.ModuleType("bench.suite_runner")
    fake.run_benchmarks = run_benchmarks
    fake.BenchmarkRunError = BenchmarkRunError
    monkeypatch.setitem(sys.modules, "bench.suite_runner", fake)
    return calls


def test_the_main_job_runs_sweep_study_and_report(stub_sweep, tmp_path, capsys):
    argv = ["--methods", "autograd,analytic", "--out", str(tmp_path / "r"), "--no-progress"]
    assert cli.main(argv) == 0
    assert stub_sweep == [
        {
            "sweep": "quick",
            "device": "cpu",
            "methods": ["autograd", "analytic"],
            "dtypes": None,
            "progress": False,
        }
    ]
    out = capsys.readouterr().out
    assert "Speedup over autograd" in out and "triton_fused" in out
    assert "falls to 1% of its start at step 575 with lr 0.01 and step 57 with lr 0.1" in out
    assert "original_question" in out and "oscillating" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("report: ") and last.endswith("index.html")
    run = Path(last.removeprefix("report: ")).parent
    assert (run / "convergence.csv").exists() and (tmp_path / "r" / "latest").exists()

    # The results file alone rebuilds the same report: the convergence study travels in it.
    assert (
        cli.main(["report", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")]) == 0
    )
    again = tmp_path / "again" / run.name
    for name in ("convergence.csv", "timing.csv", "convergence.png", "results.json"):
        assert (again / name).read_bytes() == (run / name).read_bytes(), name
    built = re.compile(r"report built [^.]*\.")
    for name in ("summary.md", "index.html"):
        first, second = ((d / name).read_text() for d in (run, again))
        assert built.sub("", first) == built.sub("", second), name


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--methods", "autograd,nope"], "unknown method 'nope'"),
        (["--dtypes", "float8"], "unknown dtype 'float8'"),
        (["--device", "tpu"], "device='tpu'"),
        (["--baseline", "/nonexistent/base.json"], "/nonexistent/base.json: no such file"),
    ],
)
def test_the_main_job_rejects_bad_input_before_the_sweep(stub_sweep, capsys, argv, words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert stub_sweep == []


CHROMIUM = next(
    (p for p in ("chromium", "chromium-browser", "/usr/bin/chromium") if shutil.which(p)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found (Debian: apt-get install -y chromium)"
)


def headless(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """Load `page` in headless chromium, offline; its console messages go to stderr as CONSOLE."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def console_messages(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@needs_chromium
def test_the_console_capture_sees_errors(tmp_path):
    # The check below is only worth something if a page's errors do reach us.
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        'content="default-src \'none\'"></head><body><img src="https://example.invalid/x.png">'
        "</body></html>"
    )
    proc = headless(bad, tmp_path, "--dump-dom")
    assert any("example.invalid" in line for line in console_messages(proc)), proc.stderr[-2000:]


@needs_chromium
def test_the_report_renders_in_headless_chromium(report, tmp_path):
    page = report / "index.html"
    dom = headless(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom) == []
    html = dom.stdout
    assert html.count("<table") >= 6  # environment, summary, three problems, not measured, ...
    assert "Convergence: the question's case at each lr" in html
    images = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', html)
    assert len(images) == len(PLOTS)

    shot = tmp_path / "report.png"
    proc = headless(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert proc.returncode == 0 and console_messages(proc) == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2000) and len(png) > 50_000  # a page, not a blank


def test_an_output_folder_that_cannot_be_made_is_one_line_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["report", str(SAMPLE), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {blocker}: not a directory\n"


def test_the_main_job_checks_its_output_folders_before_measuring(stub_sweep, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["--out", str(blocker), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"error: --out {blocker}: not a directory\n"
    assert stub_sweep == []  # nothing was measured
