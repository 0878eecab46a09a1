"""The main job, `python -m bench`: benchmark sweep, convergence study, report, summary.

Every path it writes is checked before the sweep; an interruption at any stage ends with one line
saying how far it got (bench.interrupt): "interrupted after 3 of 8 cases; the incomplete results
are in PATH", "interrupted while building the report; the results are saved in PATH"."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

# The dtype names only, for the help: bench.problem.DTYPES maps them to torch's, and importing
# torch for `--help` takes seconds.
from bench.cli import DTYPE_NAMES as DTYPES


def best_device() -> str:
    """CUDA where present, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.report.command import add_report_options

    parser.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda if present, else cpu)"
    )
    parser.add_argument(
        "--sweep",
        default="quick",
        help="the named set of problems to benchmark (default: quick, a few minutes at most)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        metavar="A,B",
        help="comma-separated method names to benchmark and study (default: every method the "
        "device can run)",
    )
    parser.add_argument(
        "--dtypes",
        default=None,
        metavar="A,B",
        help=f"comma-separated dtypes to benchmark, of {', '.join(DTYPES)} (default: the sweep's)",
    )
    parser.add_argument(
        "--precision",
        default="2%",
        metavar="P",
        help="take rounds of each case until the 95%% interval of its median is within +-P of "
        "it (e.g. 2%% or 0.02; 0: the whole budget) or its time budget is spent (default: 2%%)",
    )
    parser.add_argument(
        "--threads",
        default=None,
        metavar="N",
        help="torch's thread count for the run (default: the cores this process may use)",
    )
    parser.add_argument(
        "--cache",
        default="warm",
        metavar="warm|cold",
        help="L2 cache regime of the timed fits: warm (default: as a user runs a fit) or cold "
        "(the GPU's L2 flushed before each timed fit; CUDA only, refused on the CPU)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="RESULTS.json",
        help="where to save the results file (default: the suite runner's place for it)",
    )
    add_report_options(parser)
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="do not record the run in the history (reports/history/; python -m bench history)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (for logs and CI)"
    )


def run(args: argparse.Namespace) -> int:
    from bench import plugin
    from bench.cli import UsageError
    from bench.results import load_results

    # The benchmark suite's own option parsers: the same checks and messages as pytest's options.
    try:
        device = plugin.parse_device(args.device) if args.device else best_device()
        sweep = plugin.parse_sweep(args.sweep)
        methods = plugin.parse_methods(args.methods) if args.methods is not None else None
        dtypes = plugin.parse_dtypes(args.dtypes) if args.dtypes is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        precision = plugin.parse_precision(args.precision)
    except ValueError as exc:
        raise UsageError(f"--precision: {exc}") from None
    try:
        threads = plugin.parse_threads(args.threads) if args.threads is not None else None
    except ValueError as exc:
        raise UsageError(f"--threads: {exc}") from None
    try:
        cache = plugin.parse_cache(args.cache)
        plugin.check_cache(cache, device)
    except ValueError as exc:
        raise UsageError(f"--cache: {exc}") from None
    if args.baseline is not None:
        load_results(args.baseline)  # a bad baseline fails now, not after the sweep
    # main_job() checks the output paths, before the sweep.
    main_job(
        device,
        sweep,
        methods=methods,
        dtypes=dtypes,
        output=args.output,
        out=args.out,
        baseline=args.baseline,
        progress=not args.no_progress,
        precision=precision,
        threads=threads,
        history=not args.no_history,
        cache=cache,
    )
    return 0


def main_job(
    device: str,
    sweep: str,
    methods: list[str] | None = None,
    dtypes: list[str] | None = None,
    output: Path | None = None,
    out: Path | None = None,
    baseline: Path | None = None,
    progress: bool = True,
    pytest_args: Sequence[str] = (),
    precision: float | None = None,
    threads: int | None = None,
    history: bool = True,
    cache: str = "warm",
) -> Path:
    """Sweep, convergence study, report, summary; returns the report's run directory.
    `precision` and `threads` go to the sweep (bench.suite_runner.run_benchmarks), and `cache`,
    the L2 regime of its timed fits (warm or cold: the plugin's --cache); with `history`, the run
    is recorded in `<out>/history/` (bench.history).

    The paths are checked first (bench.paths.OutputPathError names the option: --output, --out,
    --baseline)."""
    from bench import interrupt
    from bench.cli import CommandError, UsageError
    from bench.convergence import convergence_study
    from bench.report import write_report
    from bench.report.console import print_summary
    from bench.results import add_convergence
    from bench.suite_runner import BenchmarkRunError, run_benchmarks

    interrupt.set_stage("before the first case")
    check_outputs(output, out, baseline, progress)
    print(f"vecreg-bench on {device}: sweep {sweep!r}, convergence study, report", flush=True)
    try:
        results = run_benchmarks(
            sweep=sweep,
            device=device,
            methods=methods,
            dtypes=dtypes,
            output=output,
            progress=progress,
            precision=precision,
            threads=threads,
            pytest_args=[f"--cache={cache}", *pytest_args],
        )
    except ValueError as exc:  # an unknown sweep, or a method the sweep cannot run
        raise UsageError(str(exc)) from None
    except BenchmarkRunError as exc:
        raise CommandError(str(exc)) from None
    print(f"results: {results}", flush=True)
    saved = f"the results are saved in {results}"
    interrupt.set_stage(f"during the convergence study; {saved}")
    table, traces = convergence_study(device, methods=methods, progress=progress)
    # The study travels in the results file: `python -m bench report` rebuilds this same report.
    add_convergence(results, table, traces)
    if history:
        from bench.history import HISTORY_NAME, record_run
        from bench.report.build import DEFAULT_OUT

        interrupt.set_stage(f"while recording the run in the history; {saved}")
        record_run(Path(results), Path(out or DEFAULT_OUT) / HISTORY_NAME)
    interrupt.set_stage(f"while building the report; {saved}")
    run_dir = write_report(results, out=out, baseline=baseline)
    interrupt.set_stage(f"while printing the summary; {saved}, the report in {run_dir}")
    print_summary(Path(results), table)
    print(f"\nreport: {run_dir / 'index.html'}")
    return run_dir


def check_outputs(
    output: Path | None, out: Path | None, baseline: Path | None, progress: bool
) -> None:
    """The results file (default: a new one under reports/results/), its log and the reports
    folder (default: reports/) can be written, and none of them is the baseline; before minutes
    of measuring, not after."""
    from bench import plugin
    from bench.paths import check_file, check_folder, check_not_inputs
    from bench.report.build import DEFAULT_OUT

    if output is None:
        check_folder(plugin.RESULTS_DIR, "--output")  # under the working folder
    else:
        check_file(output, "--output")
        written = [("--output", output, output)]
        if progress:  # pytest's output goes to a .log beside the results
            written.append(("--output", output, output.with_suffix(".log")))
        check_not_inputs(written, [("--baseline", baseline)])
    check_folder(DEFAULT_OUT if out is None else out, "--out")
