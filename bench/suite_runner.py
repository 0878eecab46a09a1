"""Running the benchmark suite from Python: pytest in-process on bench/suite.py, --benchmark-only.

`python -m bench` calls `run_benchmarks`; it works from an installed copy too, where there is no
root conftest.py, because it loads the plugin itself (`-p bench.plugin`).
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pytest

from bench import interrupt, plugin

SUITE = Path(__file__).with_name("suite.py")


class BenchmarkRunError(RuntimeError):
    """pytest could not run the suite; the message says why, in a few lines."""


def run_benchmarks(
    sweep: str = "quick",
    device: str | None = None,
    methods: list[str] | None = None,
    dtypes: list[str] | None = None,
    output: Path | None = None,
    progress: bool = True,
    *,
    precision: float | None = None,
    threads: int | None = None,
    pytest_args: Sequence[str] = (),
) -> Path:
    """Time `methods` (default: all) on the problems of `sweep` on `device` (default: cuda if
    present, else cpu), each problem in each of `dtypes` (default: the sweep's own); return the
    path of the results JSON (default: reports/results/<UTC time>.json under the working folder).
    Each case takes rounds until its median is known to +-`precision` (a fraction; default 2%) or
    its time budget is spent; `threads` fixes torch's thread count (default: the cores this
    process may use).

    With `progress`, a progress bar names the case being timed and pytest's own output (tables,
    failures) goes to a .log file beside the JSON instead of the terminal. `pytest_args` are passed
    on as they are (e.g. "--benchmark-max-time=0.1"). Bad arguments raise ValueError; a run that
    pytest could not carry out raises BenchmarkRunError. Cases that were skipped or failed do not
    raise: they are in the file's "vecreg" key. An interrupted run (Ctrl-C, or SIGTERM where
    bench.interrupt handles it) raises KeyboardInterrupt once pytest has saved what was measured,
    marked incomplete; until then `bench.interrupt` is told how far the sweep got.
    """
    plugin.parse_sweep(sweep)
    args = [
        str(SUITE),
        "--benchmark-only",
        "-p",
        "bench.plugin",
        "-p",
        "no:cacheprovider",  # no .pytest_cache beside an installed copy
        "--no-report",  # the caller builds the report, with what it adds to it
        "--no-history",  # and records the run in the history, once it is complete
        f"--sweep={sweep}",
    ]
    if device is not None:
        args.append(f"--device={plugin.parse_device(device)}")
    if methods is not None:
        args.append(f"--methods={','.join(plugin.parse_methods(','.join(methods)))}")
    if dtypes is not None:
        args.append(f"--dtype={','.join(plugin.parse_dtypes(','.join(dtypes)))}")
    if precision is not None:
        args.append(f"--precision={plugin.parse_precision(repr(float(precision)))!r}")
    if threads is not None:
        args.append(f"--threads={plugin.parse_threads(str(threads))}")
    output = Path(output) if output is not None else plugin.default_json_path(Path.cwd())
    args += [f"--benchmark-json={output}", *pytest_args]

    watcher = _Watcher(sys.stderr if progress else None)
    interrupt.set_stage(watcher.describe)
    log = io.StringIO()
    try:
        if progress:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                code = pytest.main(args, plugins=[watcher])
        else:
            code = pytest.main(args, plugins=[watcher])
    finally:
        watcher.close()
        if progress:  # pytest's output, interrupted or not
            output.parent.mkdir(parents=True, exist_ok=True)
            output.with_suffix(".log").write_text(log.getvalue(), encoding="utf-8")

    run = watcher.run()
    if interrupt.received() is not None or (run is not None and run.interrupted):
        raise KeyboardInterrupt(watcher.describe())  # a collection error is not one: see below
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise BenchmarkRunError(
            f"pytest could not run the benchmarks (exit code {int(code)}: {_name(code)})"
            + _tail(log.getvalue())
        )
    if not watcher.written():
        raise BenchmarkRunError(
            f"no case of sweep {sweep!r} was timed, skipped or failed; nothing was saved"
            + _tail(log.getvalue())
        )
    return output


def _name(code: int) -> str:
    try:
        return pytest.ExitCode(code).name.lower().replace("_", " ")
    except ValueError:
        return "unknown"


def _tail(text: str, lines: int = 15) -> str:
    text = text.strip()
    return ("\n" + "\n".join(text.splitlines()[-lines:])) if text else ""


class _Watcher:
    """A pytest plugin object: keeps the run's config, and draws the progress bar if asked."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.config: pytest.Config | None = None
        self.bar: Any = None
        self.labels: dict[str, str] = {}

    def run(self) -> plugin.Run | None:
        return plugin.get_run(self.config) if self.config is not None else None

    def written(self) -> bool:
        run = self.run()
        return run is not None and run.json_written

    def describe(self) -> str:
        """How far the sweep got, for the line of an interrupted run."""
        run = self.run()
        return run.describe() if run is not None else "before the first case"

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        run = self.run()
        if run is not None:
            run.announce = False  # the caller says "interrupted ...", once

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.stream is None:
            return
        for item in session.items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            self.labels[item.nodeid] = f"{params.get('method', '?')} {params.get('problem', '?')}"
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional: one plain line per case instead of a bar
            self.bar = _Lines(len(session.items), self.stream)
            return
        self.bar = tqdm(
            total=len(session.items), unit="case", file=self.stream, dynamic_ncols=True, leave=True
        )

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        if self.bar is not None:
            self.bar.set_description_str(self.labels.get(nodeid, nodeid))

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Lines:
    """The progress bar's stand-in where tqdm is not installed: a line per case as it starts,
    `case 3/10: analytic B64xD256-K100-lr12.8-float32`."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = 0

    def set_description_str(self, text: str) -> None:
        print(f"case {self.done + 1}/{self.total}: {text}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        pass
