"""The pytest plugin of the benchmark suite (bench/suite.py), registered by the root conftest.py.

- Options: --sweep NAME, --methods a,b, --device cpu|cuda, --dtype d1,d2 (bad values are usage
  errors that name the value and the allowed ones).
- Benchmarks run only with --benchmark-only; a plain `pytest` skips them at once.
- Results: raw samples always saved; the JSON goes to reports/results/<UTC time>.json unless
  --benchmark-json names a file, and its path is printed at the end. `speedup_vs_autograd` is
  filled when the run is complete; skipped and failed cases go in the top-level "vecreg" key.
- The environment goes in machine_info["vecreg"] (bench.environment).
- At the end, a report is built from the saved file (bench.report), unless --no-report.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import environment
from bench.methods import METHODS
from bench.problem import DTYPES, Problem, resolve_device
from bench.results import CASE_KEY
from bench.sweeps import DEFAULT_SWEEP, SWEEPS
from bench.timing import CopyBandwidth

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
    json_written: bool = False
    copy: CopyBandwidth = field(default_factory=CopyBandwidth)
    _device_name: str | None = None

    @property
    def device_name(self) -> str:
        if self._device_name is None:
            self._device_name = environment.device_name(self.device)
        return self._device_name

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
    config.stash[RUN] = run
    if run.active:
        # Raw samples in every saved file: the regression check tests significance on them.
        config.option.benchmark_save_data = True
        if not config.option.benchmark_json:
            config.option.benchmark_json = default_json_path(config.rootpath)
        run.json_path = Path(config.option.benchmark_json)
        run.json_path.parent.mkdir(parents=True, exist_ok=True)


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
    fill_speedups(output_json["benchmarks"])
    output_json["vecreg"] = {"sweep": run.sweep, "skipped": run.skipped, "failed": run.failed}
    run.json_written = True


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # around pytest-benchmark's, which saves
def pytest_sessionfinish(session: pytest.Session):
    # pytest-benchmark writes nothing (and warns) when no case was timed; a run where every case
    # was skipped or failed is still a result worth keeping, so it is written here instead.
    config = session.config
    run = get_run(config)
    bench_session = getattr(config, "_benchmarksession", None)
    ours = (
        run is not None
        and run.active
        and (run.skipped or run.failed)
        and bench_session is not None
        and not bench_session.benchmarks
    )
    if ours:
        bench_session.json = None
    yield
    if ours:
        _save_untimed_run(config, run)


def _save_untimed_run(config: pytest.Config, run: Run) -> None:
    """A results file with no timed case, through pytest-benchmark's own hooks."""
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
    run.json_path.write_text(json.dumps(output_json, indent=4, default=str), encoding="utf-8")


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
    if not run.json_written:
        write("results: nothing was timed, no file written")
        return
    write(f"results: {run.json_path}")
    config = terminalreporter.config
    if not config.getoption("no_report"):
        out = config.getoption("report_dir") or config.rootpath / "reports"
        write_session_report(run.json_path, Path(out), write)


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
