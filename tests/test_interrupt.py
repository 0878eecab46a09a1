"""Stopped by SIGINT or SIGTERM, wherever it is: `python -m bench` ends with one line
`interrupted ...` on stderr and exit code 130 or 143, `pytest --benchmark-only` with pytest's exit
code for an interrupted session (2); no traceback, the earlier reports untouched, and no results
file that looks complete: none at the target, or one marked `"complete": false`.

Each test starts the command in a child process and signals it once it shows that it has reached
the stage (a line or a progress bar on its output). The convergence study and the report take a
fraction of a second here, so a test-only helper holds them open: a script (written into the
test's folder) that makes the stage print PAUSED and sleep, then runs the command as usual.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.report import write_report
from bench.results import Results

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).parent / "data" / "sample_sweep.json"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}

# Holds one stage open: with PAUSE=study or PAUSE=report in the environment, that stage prints
# "PAUSED <stage>" on stderr and sleeps first. `python pause.py ARGS` runs `python -m bench ARGS`;
# `pytest -p pause` loads it as a plugin.
PAUSE = """
import os, runpy, sys, time

stage = os.environ["PAUSE"]

def paused(real):
    def wrapper(*args, **kwargs):
        print("PAUSED", stage, file=sys.stderr, flush=True)
        time.sleep(60)
        return real(*args, **kwargs)
    return wrapper

if stage == "study":
    import bench.convergence as module
    module.convergence_study = paused(module.convergence_study)
elif stage == "report":
    import bench.report.plots as module  # inside the report build, after its first files
    module.save = paused(module.save)
if __name__ == "__main__":
    sys.argv[0] = "bench"
    runpy.run_module("bench", run_name="__main__", alter_sys=True)
"""


class Child:
    """A command in a child process whose stdout and stderr are read as they come."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str] | None = None):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        env.pop("TRITON_INTERPRET", None)
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.text = {"out": b"", "err": b""}
        self.readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, name: str, stream) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.text[name] += chunk

    def wait_for(self, words: str, stream: str = "err", timeout: float = 120) -> None:
        """Until `words` appear on the stream (bytes, so a progress bar's line counts too)."""
        deadline = time.monotonic() + timeout
        while words.encode() not in self.text[stream]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.finish()
                pytest.fail(f"never saw {words!r}:\n{self.out[-3000:]}\n{self.err[-3000:]}")
            time.sleep(0.01)

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.finish()

    def finish(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return code

    @property
    def out(self) -> str:
        return self.text["out"].decode(errors="replace")

    @property
    def err(self) -> str:
        return self.text["err"].decode(errors="replace")

    def interrupted_lines(self, stream: str = "err") -> list[str]:
        text = self.out if stream == "out" else self.err
        return [
            line.strip() for line in text.replace("\r", "\n").splitlines() if "interrupted" in line
        ]


@pytest.fixture(scope="module")
def earlier_report(tmp_path_factory) -> Path:
    """A reports folder with one report in it, as an earlier run left it."""
    out = tmp_path_factory.mktemp("earlier") / "reports"
    write_report(SAMPLE, out=out)
    return out


@pytest.fixture
def work(tmp_path, earlier_report) -> Path:
    shutil.copytree(earlier_report, tmp_path / "reports", symlinks=True)
    (tmp_path / "pause.py").write_text(PAUSE, encoding="utf-8")
    return tmp_path


def snapshot(reports: Path) -> dict[str, bytes]:
    """What a reader sees in a reports folder: each visible name, through its links."""
    seen = {}
    for entry in sorted(reports.iterdir()):
        if not entry.name.startswith("."):
            seen[entry.name] = (entry / "index.html").read_bytes()
    return seen


def check_results(path: Path, complete: bool | None) -> dict | None:
    """The results file: absent where `complete` is None, else marked as said."""
    if complete is None:
        assert not path.exists(), "a results file after an interruption in the sweep"
        return None
    data = json.loads(path.read_text())["vecreg"]
    assert data["complete"] is complete
    assert Results.load(path).complete is complete  # the loader every command uses agrees
    return data


def no_temporaries(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


MAIN = [sys.executable, "-m", "bench", "--sweep", "smoke", "--output", "results/r.json"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_python_m_bench_during_the_imports(work, signum):
    before = snapshot(work / "reports")
    # -X importtime lists each module as it is imported: torch's show that the imports are on.
    child = Child([sys.executable, "-X", "importtime", *MAIN[1:], "--methods", "analytic"], work)
    child.wait_for(" torch.")
    assert child.stop(signum) == EXIT[signum], child.err[-3000:]
    assert child.interrupted_lines() == ["interrupted before the first case"]
    assert "Traceback" not in child.err + child.out
    assert not (work / "results").exists()
    assert snapshot(work / "reports") == before


def test_python_m_bench_during_the_first_case(work):
    before = snapshot(work / "reports")
    child = Child([*MAIN, "--methods", "analytic,autograd"], work)
    child.wait_for("analytic B4xD33")  # the progress bar names the case being timed
    assert child.stop(signal.SIGINT) == 130, child.err[-3000:]
    assert child.interrupted_lines() == ["interrupted after 0 of 2 cases; nothing was saved"]
    assert "Traceback" not in child.err + child.out
    check_results(work / "results" / "r.json", complete=None)
    no_temporaries(work / "results")
    assert snapshot(work / "reports") == before


def test_python_m_bench_mid_sweep(work):
    before = snapshot(work / "reports")
    child = Child([*MAIN, "--methods", "analytic,autograd"], work)
    child.wait_for("autograd B4xD33")  # the second case has started
    assert child.stop(signal.SIGTERM) == 143, child.err[-3000:]
    results = work / "results" / "r.json"
    assert child.interrupted_lines() == [
        f"interrupted after 1 of 2 cases; the incomplete results are in {Path('results/r.json')}"
    ]
    assert "Traceback" not in child.err + child.out
    data = check_results(results, complete=False)
    assert (data["cases_total"], data["cases_done"]) == (2, 1)
    no_temporaries(work / "results")
    assert snapshot(work / "reports") == before


@pytest.mark.parametrize(
    ("stage", "signum", "line"),
    [
        ("study", signal.SIGINT, "during the convergence study"),
        ("report", signal.SIGTERM, "while building the report"),
    ],
)
def test_python_m_bench_after_the_sweep(work, stage, signum, line):
    before = snapshot(work / "reports")
    command = [sys.executable, "pause.py", *MAIN[3:], "--methods", "analytic"]
    child = Child(command, work, env={"PAUSE": stage})
    child.wait_for(f"PAUSED {stage}")
    assert child.stop(signum) == EXIT[signum], child.err[-3000:]
    saved = Path("results/r.json")
    assert child.interrupted_lines() == [f"interrupted {line}; the results are saved in {saved}"]
    assert "Traceback" not in child.err + child.out
    check_results(work / saved, complete=True)  # the sweep ran to its end
    assert snapshot(work / "reports") == before  # the half-built report is not shown


PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    str(ROOT / "bench" / "suite.py"),
    "--benchmark-only",
    "--sweep=smoke",
    "--device=cpu",
    "-p",
    "no:cacheprovider",
    "-v",  # names each case as it starts
]


def pytest_child(work: Path, *options: str, env: dict[str, str] | None = None) -> Child:
    paths = [f"--benchmark-json={work / 'r.json'}", f"--report-dir={work / 'reports'}"]
    return Child([*PYTEST, *paths, *options], work, env=env)


def check_pytest_stopped(child: Child, signum: int, line: str) -> None:
    assert child.stop(signum) == pytest.ExitCode.INTERRUPTED, child.out[-3000:]
    assert "Traceback" not in child.err + child.out
    assert child.interrupted_lines("out") == [line]


def test_pytest_during_the_first_case(work):
    before = snapshot(work / "reports")
    child = pytest_child(work, "--methods=analytic,autograd")
    child.wait_for("test_fit[analytic-", "out")
    check_pytest_stopped(child, signal.SIGINT, "interrupted after 0 of 2 cases; nothing was saved")
    check_results(work / "r.json", complete=None)
    no_temporaries(work)
    assert snapshot(work / "reports") == before


def test_pytest_mid_sweep_on_sigterm(work):
    before = snapshot(work / "reports")
    child = pytest_child(work, "--methods=analytic,autograd")
    child.wait_for("test_fit[autograd-", "out")
    results = work / "r.json"
    check_pytest_stopped(
        child,
        signal.SIGTERM,
        f"interrupted after 1 of 2 cases; the incomplete results are in {results}; "
        f"python -m bench report {results} builds its report",
    )
    data = check_results(results, complete=False)
    assert (data["cases_total"], data["cases_done"]) == (2, 1)
    no_temporaries(work)
    assert snapshot(work / "reports") == before


def test_pytest_during_the_report_on_sigterm(work):
    before = snapshot(work / "reports")
    # pause.py as a pytest plugin: importing it holds the report's plots open.
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{work}", "PAUSE": "report"}
    child = pytest_child(work, "--methods=analytic", "-p", "pause", env=env)
    child.wait_for("PAUSED report")
    results = work / "r.json"
    check_pytest_stopped(
        child,
        signal.SIGTERM,
        f"interrupted while building the report; the results are saved in {results}",
    )
    check_results(results, complete=True)
    assert snapshot(work / "reports") == before


def test_a_write_stopped_midway_leaves_no_file(tmp_path, monkeypatch):
    """pytest-benchmark writes the file in place; here it writes beside it, and a write cut
    short (Ctrl-C in the middle of it) leaves nothing at the target."""
    from pytest_benchmark.session import BenchmarkSession

    from bench.suite_runner import run_benchmarks

    def save_half(self, output_json):
        Path(self.json).write_text('{"benchmarks": [', encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(BenchmarkSession, "save_json", save_half)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KeyboardInterrupt):
        run_benchmarks(
            "smoke",
            "cpu",
            ["analytic"],
            output=tmp_path / "r.json",
            progress=False,
            pytest_args=["--benchmark-max-time=0.02"],
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_signal_held_back_while_saving_is_acted_on_after(tmp_path):
    """defer() holds SIGTERM until resume(); a second signal while stopping ends at once."""
    script = """
import os, signal, sys
from bench import interrupt

interrupt.install()
interrupt.set_stage("while saving")
interrupt.defer()
os.kill(os.getpid(), signal.SIGTERM)
print("held", flush=True)
try:
    interrupt.resume()
except KeyboardInterrupt:
    print("raised after resume", flush=True)
os.kill(os.getpid(), signal.SIGINT)  # a second signal: the line, then exit at once
print("not reached", flush=True)
"""
    child = Child([sys.executable, "-c", script], tmp_path)
    assert child.finish() == 143
    assert child.out == "held\nraised after resume\n"
    assert child.err == "interrupted while saving\n"


def test_an_interruption_a_library_wraps_still_stops_the_sweep(tmp_path, monkeypatch):
    """torch.compile and others may turn a KeyboardInterrupt into their own error: the case is
    not recorded as failed, the sweep stops as interrupted."""
    from bench import interrupt
    from bench.methods import METHODS, Method
    from bench.suite_runner import run_benchmarks

    class Wrapping(Method):
        name = "wrapping"

        def run(self, x, t, lr, steps):
            monkeypatch.setattr(interrupt, "_received", signal.SIGTERM)  # as the handler does
            raise RuntimeError("compile failed: KeyboardInterrupt")

    monkeypatch.setitem(METHODS, "wrapping", Wrapping())
    with pytest.raises(KeyboardInterrupt):
        run_benchmarks(
            "smoke",
            "cpu",
            ["wrapping", "analytic"],
            output=tmp_path / "r.json",
            progress=False,
            pytest_args=["--benchmark-max-time=0.02"],
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the only case ran was stopped
