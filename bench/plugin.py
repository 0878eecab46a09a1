"""The pytest plugin of the benchmark suite (bench/suite.py), registered by the root conftest.py.

- Options: --sweep NAME, --methods a,b, --device cpu|cuda|cuda:N, --dtype d1,d2, --precision 2%,
  --threads N, --cache warm|cold (bad values are usage errors that name the value and the allowed
  ones). --device cuda:N makes cuda:N the current CUDA device for the session, since CUDA events,
  Triton launches and graph capture use the current device. --cache cold flushes the GPU's L2
  before each timed fit (bench.timing.L2Flush); on the CPU it is refused: the harness has no
  way to empty a CPU's caches, and a regime it cannot produce must not be recorded.
- Each case takes rounds until its median is known to +-`--precision` (95% interval) or its
  `--benchmark-max-time` is spent (bench.timing); the precision reached is in its extra_info, and
  the summary names the cases that ran out of time first (`imprecise`), or ran on a busy machine.
- A benchmark session fixes torch's thread count (--threads, default: the cores this process may
  use) and glibc's allocator thresholds (bench.environment), and records both.
- Benchmarks run only with --benchmark-only; a plain `pytest` skips them at once.
- Results: raw samples always saved; the JSON goes to reports/results/<UTC time>.json unless
  --benchmark-json names a file, and its path is printed at the end. `speedup_vs_autograd` is
  filled when the run is complete; skipped and failed cases go in the top-level "vecreg" key,
  with `complete` (false for an interrupted run, or one that did not run every case),
  `cases_total` and `cases_done`. The file is written beside its target and renamed into place,
  so a stopped write leaves no file there.
- The results file and the report folder are checked in pytest_configure: a bad one is a usage
  error before anything is timed.
- While a benchmark session runs, SIGTERM is handled as Ctrl-C (pytest's exit code 2, the results
  so far saved and marked incomplete), where nothing else handles it.
- The environment goes in machine_info["vecreg"] (bench.environment).
- At the end, a report is built from the saved file (bench.report), unless --no-report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import environment, interrupt
from bench.methods import METHODS
from bench.paths import OutputPathError, check_file, check_folder
from bench.problem import DTYPES, Problem, resolve_device
from bench.results import CASE_KEY
from bench.sweeps import DEFAULT_SWEEP, SWEEPS
from bench.timing import CACHE_REGIMES, DEFAULT_PRECISION, CopyBandwidth, L2Flush

SKIP_REASON = "benchmarks run with --benchmark-only"
MARKER = "vecreg_benchmark"
RESULTS_DIR = Path("reports") / "results"


# Option values: each parser returns the value or raises ValueError naming it and what is allowed
# (argparse puts the option's name in front).


def _known_names(value: str, kind: str, known) -> list[str]:
    """A comma-separated list of `kind`s (e.g. "method"), each one of `known`, duplicates once."""
    names = [name.strip() for name in value.split(",")]
    if not value.strip() or any(not name for name in names):
        raise ValueError(f"{value!r} is not a comma-separated list of {kind}s")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown {kind} {', '.join(map(repr, unknown))}; known {kind}s: {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def parse_sweep(value: str) -> str:
    if value not in SWEEPS:
        raise ValueError(f"unknown sweep {value!r}; known sweeps: {', '.join(SWEEPS)}")
    return value


def parse_methods(value: str) -> list[str]:
    return _known_names(value, "method", METHODS)


def parse_dtypes(value: str) -> list[str]:
    return _known_names(value, "dtype", DTYPES)


def parse_device(value: str) -> str:
    return str(resolve_device(value))  # its ValueError names the value and the choices


def parse_precision(value: str) -> float:
    """'2%' or '0.02' -> 0.02: the relative half-width of the median's 95% interval at which a
    case stops taking rounds; 0 takes rounds for the whole budget."""
    raw = value.strip()
    percent = raw.endswith("%")
    try:
        number = float(raw[:-1] if percent else raw)
    except ValueError:
        raise ValueError(f"precision {value!r} is not a number; use e.g. 2% or 0.02") from None
    if not percent and 1 <= number < 100:
        raise ValueError(
            f"precision {value!r} is ambiguous: a bare number is a fraction; write {raw}% for "
            "percent"
        )
    fraction = number / 100 if percent else number
    if not math.isfinite(fraction) or not 0 <= fraction < 1:
        raise ValueError(
            f"precision {value!r} is not allowed; it must be at least 0 and below 100%, e.g. 2%"
        )
    return fraction


def parse_cache(value: str) -> str:
    """The L2 cache regime of the timed fits: warm (a fit as a user runs it) or cold."""
    if value not in CACHE_REGIMES:
        raise ValueError(
            f"cache regime {value!r} is unknown; use {' or '.join(CACHE_REGIMES)} (warm: as a "
            "user runs a fit; cold: the GPU's L2 flushed before each timed fit)"
        )
    return value


def check_cache(cache: str, device: str) -> None:
    """ValueError where the regime cannot be produced on `device`: cold needs a CUDA device."""
    if cache == "cold" and torch.device(device).type != "cuda":
        raise ValueError(
            f"--cache cold flushes the GPU's L2 cache before each timed fit; the device is "
            f"{device}, whose caches the harness cannot flush: use --cache warm (the default) or "
            "a CUDA device"
        )


def parse_threads(value: str) -> int:
    """A positive whole number of torch threads."""
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"threads {value!r} is not allowed; it must be a whole number >= 1")
    return threads


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_problems(sweep: str, dtypes: list[str] | None = None) -> tuple[Problem, ...]:
    """The sweep's problems; with `dtypes`, every problem in each of them (duplicates once)."""
    problems = SWEEPS[sweep]
    if dtypes is not None:
        problems = tuple(replace(p, dtype=d) for p in problems for d in dtypes)
    return tuple(dict.fromkeys(problems))


def _argparse_type(parse):
    """argparse reports an ArgumentTypeError's message as is; pytest turns it into a usage error."""

    def convert(value: str):
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


# The state of one run.


@dataclass
class Run:
    sweep: str
    methods: list[str]
    device: str
    dtypes: list[str] | None
    active: bool  # --benchmark-only: the suite times; otherwise it is skipped
    problems: dict[str, Problem] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    json_path: Path | None = None
    json_written: bool = False  # the file is in place at json_path
    json_complete: bool = False  # ... and says "complete": true
    json_cases: int = 0  # cases in the file being written: timed, skipped and failed
    json_temporary: Path | None = None  # where pytest-benchmark writes it first
    untimed: bool = False  # nothing timed, some skipped or failed: this plugin writes the file
    cases_total: int | None = None  # known once collection is over
    cases_done: int = 0  # ran to their end: timed, skipped or failed
    interrupted: bool = False
    # Said on an interruption after the sweep ("while building the report; ..."); None before.
    stage: str | None = None
    announce: bool = True  # print "interrupted ..." in the summary (the suite runner says it)
    sigterm_installed: bool = False
    copy: CopyBandwidth = field(default_factory=CopyBandwidth)
    precision: float = DEFAULT_PRECISION
    cache: str = "warm"
    device_before: int | None = None  # the current CUDA device before --device cuda:N; restored
    threads_before: int | None = None  # restored at the end: pytest may run in a longer process
    timed: list[dict[str, Any]] = field(default_factory=list)  # extra_info of each timed case
    _device_name: str | None = None
    _monitor: environment.GpuMonitor | None = None
    _monitor_opened: bool = False
    _flush: L2Flush | None = None

    @property
    def flush(self) -> L2Flush | None:
        """The cold regime's L2 flush (one buffer for the run, made at its first case); None for
        the warm regime."""
        if self.cache != "cold":
            return None
        if self._flush is None:
            self._flush = L2Flush(self.device)
        return self._flush

    @property
    def device_name(self) -> str:
        if self._device_name is None:
            self._device_name = environment.device_name(self.device)
        return self._device_name

    @property
    def monitor(self) -> environment.GpuMonitor | None:
        """The GPU's clock and throttling, read per round (None: not CUDA, or no NVML)."""
        if not self._monitor_opened:
            self._monitor_opened = True
            self._monitor = environment.GpuMonitor.open(self.device)
        return self._monitor

    def close_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def cases(self) -> list[Any]:
        """(method, problem name, device type) of every case, as pytest params."""
        device_type = torch.device(self.device).type
        return [
            pytest.param(method, problem.name, device_type, id=f"{method}-{name}-{device_type}")
            for name, problem in self.problems.items()
            for method in self.methods
        ]

    def record(self, kind: str, method: str, problem: str, reason: str) -> None:
        getattr(self, kind).append({"method": method, "problem": problem, "reason": reason})

    @property
    def complete(self) -> bool:
        """Not interrupted, and every collected case ran to its end."""
        return not self.interrupted and self.cases_done == self.cases_total

    def describe(self) -> str:
        """Where the run is, for the line of an interrupted run: "after 3 of 8 cases; ..."."""
        if self.stage is not None:
            return self.stage
        if not self.cases_total:  # collection not over, or nothing collected
            return "before the first case"
        where = f"after {self.cases_done} of {self.cases_total} cases"
        if not self.json_written:
            return f"{where}; nothing was saved"
        kind = "results" if self.json_complete else "incomplete results"
        return f"{where}; the {kind} are in {self.json_path}"


RUN = pytest.StashKey[Run]()


def get_run(config: pytest.Config) -> Run | None:
    """The run's state, or None where this plugin was not configured."""
    return config.stash.get(RUN, None)


def default_json_path(root: Path) -> Path:
    """reports/results/<UTC time>.json under `root`, a new name each run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = root / RESULTS_DIR / f"{stamp}.json"
    counter = 1
    while path.exists():
        path = root / RESULTS_DIR / f"{stamp}-{counter}.json"
        counter += 1
    return path


def fill_speedups(entries: list[dict[str, Any]]) -> None:
    """speedup_vs_autograd = autograd's median / this median, same problem, dtype and device."""

    def key(entry: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(entry["extra_info"][k]) for k in CASE_KEY if k != "method")

    autograd = {
        key(e): e["stats"]["median"] for e in entries if e["extra_info"]["method"] == "autograd"
    }
    for entry in entries:
        base = autograd.get(key(entry))
        median = entry["stats"]["median"]
        entry["extra_info"]["speedup_vs_autograd"] = base / median if base and median else None


# Hooks.


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vecreg-bench", "vecreg-bench benchmarks (with --benchmark-only)")
    group.addoption(
        "--sweep",
        default=DEFAULT_SWEEP,
        type=_argparse_type(parse_sweep),
        help=f"the problems to time: {', '.join(SWEEPS)} (default: {DEFAULT_SWEEP})",
    )
    group.addoption(
        "--methods",
        default=None,
        metavar="A,B",
        type=_argparse_type(parse_methods),
        help=f"comma-separated methods to time (default: all: {','.join(METHODS)})",
    )
    group.addoption(
        "--device",
        default=None,
        type=_argparse_type(parse_device),
        help="cpu or cuda (default: cuda if present, else cpu)",
    )
    group.addoption(
        "--dtype",
        default=None,
        metavar="D1,D2",
        type=_argparse_type(parse_dtypes),
        help=f"run every problem of the sweep in these dtypes ({', '.join(DTYPES)}); "
        "default: the sweep's own",
    )

    group.addoption(
        "--precision",
        default=DEFAULT_PRECISION,
        metavar="P",
        type=_argparse_type(parse_precision),
        help="take rounds of a case until the 95%% interval of its median is within +-P of it "
        "(e.g. 2%% or 0.02; 0: the whole budget), or until --benchmark-max-time is spent; "
        f"default: {DEFAULT_PRECISION * 100:g}%%",
    )
    group.addoption(
        "--threads",
        default=None,
        metavar="N",
        type=_argparse_type(parse_threads),
        help="torch's thread count for the run (default: the cores this process may use, "
        f"here {environment.default_threads()})",
    )
    group.addoption(
        "--cache",
        default="warm",
        type=_argparse_type(parse_cache),
        help="L2 cache regime of the timed fits: warm (default: as a user runs a fit) or cold "
        "(the GPU's L2 flushed before each timed fit, outside the timed region; CUDA only)",
    )
    group.addoption(
        "--report-dir",
        default=None,
        metavar="DIR",
        help="where the report of the run is built: DIR/<run-id>/ and DIR/latest "
        "(default: reports/ under the root directory)",
    )
    group.addoption(
        "--no-report",
        action="store_true",
        help="do not build the report from the results at the end of the run",
    )
    group.addoption(
        "--no-history",
        action="store_true",
        help="do not record the run in the history, reports/history/ (python -m bench history)",
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's (trylast) reads its options
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a case of the vecreg-bench benchmark suite")
    run = Run(
        sweep=config.getoption("sweep"),
        methods=config.getoption("methods") or list(METHODS),
        device=config.getoption("device") or default_device(),
        dtypes=config.getoption("dtype"),
        active=bool(config.getoption("benchmark_only", default=False)),
    )
    run.problems = {p.name: p for p in select_problems(run.sweep, run.dtypes)}
    run.precision = config.getoption("precision")
    run.cache = config.getoption("cache")
    try:
        check_cache(run.cache, run.device)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RUN] = run
    if run.active:
        device = torch.device(run.device)
        if device.type == "cuda" and device.index is not None:
            run.device_before = torch.cuda.current_device()
            torch.cuda.set_device(device)
        # The machine's part of the measurement, fixed for the session and recorded in
        # machine_info["vecreg"] (torch_threads, malloc).
        run.threads_before = torch.get_num_threads()
        environment.set_threads(config.getoption("threads"))
        environment.steady_allocator()
        # Raw samples in every saved file: the regression check tests significance on them.
        config.option.benchmark_save_data = True
        _check_outputs(config)
        if not config.option.benchmark_json:
            config.option.benchmark_json = default_json_path(config.rootpath)
        run.json_path = Path(config.option.benchmark_json)
        run.json_path.parent.mkdir(parents=True, exist_ok=True)
        run.sigterm_installed = interrupt.install_for_session()
        config.pluginmanager.register(_InterruptWatch(run), "vecreg-bench-interrupt")


class _InterruptWatch:
    """Marks the run interrupted on Ctrl-C, SIGTERM (bench.interrupt) or pytest.exit(); not on
    a collection error or --maxfail, which pytest ends by the same road."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        if not isinstance(excinfo.value, pytest.Session.Interrupted):
            self.run.interrupted = True


def _check_outputs(config: pytest.Config) -> None:
    """The results file and the report folder can be written: a usage error now, not after the
    sweep."""
    args = list(config.invocation_params.args)
    empty = [
        option
        for option in ("--benchmark-json", "--report-dir")
        if f"{option}=" in args or any(a == option and b == "" for a, b in itertools.pairwise(args))
    ]
    try:
        if empty:
            raise OutputPathError(f"{empty[0]} is empty: give a path or leave the option out")
        if config.option.benchmark_json:
            check_file(config.option.benchmark_json, "--benchmark-json")
        else:
            check_folder(config.rootpath / RESULTS_DIR, "--benchmark-json")
        if not config.getoption("no_report"):
            folder = config.getoption("report_dir") or config.rootpath / "reports"
            check_folder(folder, "--report-dir")
    except OutputPathError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    run = get_run(config)
    if run is None:
        return
    if run.sigterm_installed:
        interrupt.uninstall_for_session()
        run.sigterm_installed = False
    run.close_monitor()
    run._flush = None
    if run.device_before is not None:
        torch.cuda.set_device(run.device_before)
        run.device_before = None
    if run.threads_before is not None:
        torch.set_num_threads(run.threads_before)
        run.threads_before = None


def pytest_collection_finish(session: pytest.Session) -> None:
    run = get_run(session.config)
    if run is not None and run.active:
        run.cases_total = sum(1 for item in session.items if item.get_closest_marker(MARKER))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A case is done once its test has run to its end, timed, skipped or failed (or its setup
    failed or skipped it); one stopped midway makes no report."""
    report = yield
    run = get_run(item.config)
    ran = call.when == "call" or (call.when == "setup" and not report.passed)
    if ran and run is not None and run.active and item.get_closest_marker(MARKER):
        run.cases_done += 1
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    result = yield
    run = get_run(item.config)
    if run is not None and run.active:
        interrupt.check()  # a signal whose exception a library caught stops the sweep here
    return result


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run = get_run(config)
    if run is None:
        return
    if run.active:
        # pytest-benchmark would skip the unit tests one by one (hundreds of lines under -ra);
        # deselecting them says the same in one count.
        others = [item for item in items if not item.get_closest_marker(MARKER)]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = [item for item in items if item.get_closest_marker(MARKER)]
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker(MARKER):
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    run = get_run(config)
    if run is not None:
        machine_info["vecreg"] = environment.collect(run.device)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list, output_json: dict
) -> None:
    run = get_run(config)
    if run is None:
        return
    # A case stopped midway (an interruption) has pytest-benchmark's stats but none of our
    # figures: it is no result.
    entries = output_json["benchmarks"]
    entries[:] = [e for e in entries if all(k in e.get("extra_info", {}) for k in CASE_KEY)]
    fill_speedups(entries)
    output_json["vecreg"] = {
        "sweep": run.sweep,
        "skipped": run.skipped,
        "failed": run.failed,
        "complete": run.complete,
        "cases_total": run.cases_total,
        "cases_done": run.cases_done,
    }
    run.json_cases = len(entries) + len(run.skipped) + len(run.failed)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # around pytest-benchmark's, which saves
def pytest_sessionfinish(session: pytest.Session):
    """pytest-benchmark writes the results file in its own wrapper, before the plain hooks run:
    pointed at a temporary file here, it is renamed into place by the plain hook below, before
    the summary and the report read it. Signals wait until it is in place; an interruption after
    that (the summary, the report) ends the session as interrupted, with one line, instead of a
    traceback."""
    config = session.config
    run = get_run(config)
    bench_session = getattr(config, "_benchmarksession", None)
    if run is None or not run.active or bench_session is None:
        return (yield)
    # A case stopped midway has pytest-benchmark's stats but none of our figures: it is no
    # result, in the tables or in the file.
    bench_session.benchmarks[:] = [b for b in bench_session.benchmarks if b.extra_info]
    # pytest-benchmark writes nothing (and warns) when no case was timed; a run where every case
    # was skipped or failed is still a result worth keeping, so it is written here instead.
    run.untimed = bool(run.skipped or run.failed) and not bench_session.benchmarks
    run.json_temporary = run.json_path.with_name(f".{run.json_path.name}.{os.getpid()}.tmp")
    bench_session.json = None if run.untimed else run.json_temporary
    _quiet_save(bench_session)
    interrupt.defer()  # what the sweep measured is saved whole, up to the end of the rename
    try:
        try:
            return (yield)
        finally:
            run.json_temporary.unlink(missing_ok=True)
            interrupt.resume()  # where saving stopped before its end
    except KeyboardInterrupt:
        run.interrupted = True
        session.exitstatus = pytest.ExitCode.INTERRUPTED
        if run.announce:
            _say(config, f"interrupted {run.describe()}")
        return None


@pytest.hookimpl(tryfirst=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_publish(session: pytest.Session) -> None:
    run = get_run(session.config)
    if run is None or not run.active or run.json_temporary is None:
        return
    if run.untimed:
        _save_untimed_run(session.config, run)
    elif run.json_temporary.exists() and run.json_cases:
        os.replace(run.json_temporary, run.json_path)
    else:  # nothing to keep: no case ran to its end
        interrupt.resume()
        return
    run.json_written = True
    run.json_complete = run.complete
    interrupt.resume()  # a signal held back while saving ends the session now


def _quiet_save(bench_session: Any) -> None:
    """pytest-benchmark's save_json, less its line "Wrote benchmark data in: <the temporary
    file>": a name the user would look for and not find (the summary says where the file is)."""
    save = bench_session.save_json

    def save_json(output_json: dict) -> None:
        logger, info = bench_session.logger, bench_session.logger.info
        logger.info = lambda *args, **kwargs: None
        try:
            save(output_json)
        finally:
            logger.info = info

    bench_session.save_json = save_json


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line, file=sys.stderr)


def _save_untimed_run(config: pytest.Config, run: Run) -> None:
    """A results file with no timed case, through pytest-benchmark's own hooks; written beside
    its target and renamed into place."""
    hook = config.hook
    machine_info = hook.pytest_benchmark_generate_machine_info(config=config)
    hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
    commit_info = hook.pytest_benchmark_generate_commit_info(config=config)
    hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
    output_json = hook.pytest_benchmark_generate_json(
        config=config,
        benchmarks=[],
        include_data=True,
        machine_info=machine_info,
        commit_info=commit_info,
    )
    hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=output_json)
    temporary = run.json_temporary
    temporary.write_text(json.dumps(output_json, indent=4, default=str), encoding="utf-8")
    os.replace(temporary, run.json_path)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter: Any) -> None:
    run = get_run(terminalreporter.config)
    if run is None or not run.active:
        return
    write = terminalreporter.write_line
    terminalreporter.section("vecreg-bench", sep="-")
    for case in run.skipped:
        write(f"skipped {case['method']} {case['problem']}: {case['reason']}")
    for case in run.failed:
        write(f"FAILED  {case['method']} {case['problem']}: {case['reason']}")
    for line in sampling_summary(run.timed, run.precision):
        write(line)
    if run.interrupted:
        if run.announce:
            hint = f"; python -m bench report {run.json_path} builds its report"
            write(f"interrupted {run.describe()}" + (hint if run.json_written else ""))
        return
    if not run.json_written:
        write("results: nothing was timed, no file written")
        return
    write(f"results: {run.json_path}")
    config = terminalreporter.config
    if not config.getoption("no_history"):
        from bench.history import HISTORY_NAME, record_run

        reports = Path(config.getoption("report_dir") or config.rootpath / "reports")
        record_run(run.json_path, reports / HISTORY_NAME, write=write)
    if not config.getoption("no_report"):
        out = config.getoption("report_dir") or config.rootpath / "reports"
        run.stage = f"while building the report; the results are saved in {run.json_path}"
        write_session_report(run.json_path, Path(out), write)


def sampling_summary(timed: list[dict[str, Any]], precision: float) -> list[str]:
    """Lines on how precise the timed cases are, and which were measured on a busy machine or
    with a throttled GPU."""
    if not timed:
        return []
    precise = sum(not info.get("imprecise") for info in timed)
    lines = [
        f"precision: {precise} of {len(timed)} cases reached +-{precision:.1%} "
        "(the 95% interval of the median)"
    ]
    for info in timed:
        name = f"{info['method']} {info['problem']}"
        notes = []
        if info.get("imprecise"):
            notes.append(f"imprecise: +-{info['precision']:.1%} when the time budget ran out")
        if info.get("busy"):
            if info.get("cpu_stall") is not None:
                notes.append(f"busy: tasks waited for a CPU {info['cpu_stall']:.0%} of the time")
            else:
                load = max(info.get(k) or 0.0 for k in ("load_before", "load_after"))
                notes.append(f"busy: load average {load:.2f}, above {os.cpu_count()} CPUs")
        if info.get("throttled_rounds"):
            kept = ", kept: too few rounds without" if info.get("throttled") else " left out"
            notes.append(f"{info['throttled_rounds']} rounds under GPU throttling{kept}")
        if notes:
            lines.append(f"  {name}: {'; '.join(notes)}")
    return lines


def write_session_report(results: Path, out: Path, write: Any) -> None:
    """The same report `python -m bench report` builds; a failure is said, not raised, since the
    results are already safe on disk."""
    from bench.report import write_report

    try:
        folder = write_report(results, out=out)
    except Exception as exc:  # the timings are saved; the report can be rebuilt from them
        write(
            f"report: not written ({type(exc).__name__}: {exc}); rebuild it with "
            f"python -m bench report {results}"
        )
        return
    write(f"report: {folder / 'index.html'}")
