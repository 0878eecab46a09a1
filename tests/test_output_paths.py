"""Every path a command writes is checked before anything is measured: an empty value, a folder
that cannot be made or written, a directory where a file is expected, an output that is also an
input. Each is one line naming the option, exit code 2 (pytest: its usage error, 4)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import cli
from bench.paths import OutputPathError, check_file, check_folder, check_not_inputs
from bench.suite_runner import SUITE

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).parent / "data" / "sample_sweep.json"


@pytest.fixture
def no_sweep(monkeypatch):
    """The sweep, replaced by a failure: these commands must stop before it."""
    import bench.suite_runner

    def run_benchmarks(*args, **kwargs):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(bench.suite_runner, "run_benchmarks", run_benchmarks)


@pytest.fixture
def paths(tmp_path, monkeypatch):
    """A folder to work in: a file where a folder is expected, a folder where a file is, a
    valid results file (a baseline)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    shutil.copyfile(SAMPLE, tmp_path / "base.json")
    return tmp_path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "vecreg-bench on" not in captured.out and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    return captured.err.removeprefix("error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", ""], "--output is empty: give a value or leave the option out"),
        (["--out="], "--out is empty: give a value or leave the option out"),
        (["--baseline", ""], "--baseline is empty: give a value or leave the option out"),
        (["--device", ""], "--device is empty: give a value or leave the option out"),
        (["--sweep", ""], "--sweep is empty: give a value or leave the option out"),
        (["--methods", ""], "--methods is empty: give a value or leave the option out"),
        (["--dtypes", ""], "--dtypes is empty: give a value or leave the option out"),
        (["--output", "a-dir"], "--output a-dir: is a directory; give a file name"),
        (["--output", "a-file/r.json"], "--output a-file/r.json: a-file is not a directory"),
        (["--out", "a-file"], "--out a-file: not a directory"),
        (["--out", "a-file/sub/dir"], "--out a-file/sub/dir: a-file is not a directory"),
        (
            ["--output", "base.json", "--baseline", "base.json"],
            "--output base.json: is also the --baseline file; the run would overwrite it",
        ),
        (
            ["--output", "a-dir/../base.json", "--baseline", "base.json"],
            "--output a-dir/../base.json: is also the --baseline file; the run would overwrite it",
        ),
        (
            ["--output", "base.json", "--baseline", "base.log"],
            "--output base.json: writes base.log, which is also the --baseline file; "
            "the run would overwrite it",
        ),
        (
            ["report", str(SAMPLE), "--out", ""],
            "--out is empty: give a value or leave the option out",
        ),
        (["report", str(SAMPLE), "--out", "a-file"], "--out a-file: not a directory"),
        (["report", ""], "RESULTS.json is empty: give a value"),
        (
            ["compare", str(SAMPLE), str(SAMPLE), "--markdown", ""],
            "--markdown is empty: give a value or leave the option out",
        ),
        (["baseline", "save", ""], "RESULTS.json is empty: give a value"),
        (["gpu-check", ""], "DIR is empty: give a value"),
    ],
)
def test_bad_output_paths_and_empty_values_stop_the_command_at_once(
    paths, no_sweep, capsys, argv, message
):
    if "base.log" in argv:  # a baseline where the run's log would go
        shutil.copyfile(paths / "base.json", paths / "base.log")
    before = sorted(p.name for p in paths.iterdir())
    assert cli.main(argv) == 2
    assert one_error_line(capsys).startswith(message)
    assert sorted(p.name for p in paths.iterdir()) == before  # nothing written, no folder made
    assert all(p.read_bytes() == SAMPLE.read_bytes() for p in paths.glob("base.*"))


def test_an_output_that_is_a_link_to_the_baseline_is_refused(paths, no_sweep, capsys):
    os.link(paths / "base.json", paths / "hard.json")
    (paths / "soft.json").symlink_to(paths / "base.json")
    for name in ("hard.json", "soft.json"):
        assert cli.main(["--output", name, "--baseline", "base.json", "--no-progress"]) == 2
        assert one_error_line(capsys) == (
            f"--output {name}: is also the --baseline file; the run would overwrite it"
        )


def test_a_folder_that_cannot_be_written_is_refused(paths, no_sweep, capsys):
    # sysfs takes no new files, even from root (a chmod would not stop root)
    folder = Path("/sys/vecreg-bench-test/reports")
    try:
        check_folder(folder, "--out")
    except OutputPathError:
        pass
    else:
        pytest.skip("/sys takes files here")
    assert cli.main(["--out", str(folder)]) == 2
    assert one_error_line(capsys).startswith(f"--out {folder}: cannot write in /sys (")
    assert cli.main(["report", str(SAMPLE), "--out", str(folder)]) == 2
    assert one_error_line(capsys).startswith(f"--out {folder}: cannot write in /sys (")


def test_gpu_check_checks_its_folder_before_the_tests(paths, monkeypatch, capsys):
    from bench import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "run_cuda_tests", lambda log: pytest.fail("tests started"))
    assert cli.main(["gpu-check", "a-file"]) == 2
    assert one_error_line(capsys) == "DIR a-file: not a directory"
    (paths / "out" / "results.json").mkdir(parents=True)
    assert cli.main(["gpu-check", "out"]) == 2
    assert one_error_line(capsys) == "DIR out/results.json: is a directory; give a file name"


def test_the_checks_make_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "r.json"
    assert check_file(target, "--output") == target
    assert check_folder(tmp_path / "reports", "--out") == tmp_path / "reports"
    assert sorted(tmp_path.iterdir()) == []
    check_not_inputs([("--output", target, target)], [("--baseline", None)])


def run_pytest(*options: str) -> pytest.ExitCode:
    args = [str(SUITE), "--benchmark-only", "-p", "bench.plugin", "-p", "no:cacheprovider"]
    return pytest.main([*args, "--sweep=smoke", "--methods=analytic", "--device=cpu", *options])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--benchmark-json="], "--benchmark-json is empty: give a path or leave the option out"),
        (["--benchmark-json", ""], "--benchmark-json is empty"),
        (["--benchmark-json=a-dir"], "--benchmark-json a-dir: is a directory; give a file name"),
        (["--benchmark-json=a-file/r.json"], "--benchmark-json a-file/r.json: a-file is not a"),
        (["--report-dir="], "--report-dir is empty: give a path or leave the option out"),
        (["--report-dir=a-file"], "--report-dir a-file: not a directory"),
    ],
)
def test_pytest_benchmark_only_checks_its_outputs_in_configure(paths, capsys, options, message):
    start = time.perf_counter()
    assert run_pytest(*options) == pytest.ExitCode.USAGE_ERROR
    assert time.perf_counter() - start < 10  # nothing was timed
    captured = capsys.readouterr()
    assert f"ERROR: {message}" in captured.err and "Traceback" not in captured.err
    assert "test_fit" not in captured.out
    assert sorted(p.name for p in paths.iterdir()) == ["a-dir", "a-file", "base.json"]


def test_python_m_bench_refuses_to_overwrite_its_baseline_in_seconds(tmp_path):
    """As a user runs it: exit 2 and one line before the sweep, the baseline untouched."""
    shutil.copyfile(SAMPLE, tmp_path / "B.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bench", "--sweep", "smoke", "--methods", "analytic"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--output", "B.json", "--baseline", "B.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.perf_counter() - start < 60
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "error: --output B.json: is also the --baseline file; the run would overwrite it\n"
    )
    assert done.stdout == ""
    assert (tmp_path / "B.json").read_bytes() == SAMPLE.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B.json"]
