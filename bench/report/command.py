"""`python -m bench report RESULTS.json`: build a report from a saved results file."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        type=Path,
        metavar="RESULTS.json",
        help="a results file saved by `pytest --benchmark-only` or `python -m bench`",
    )
    add_report_options(parser)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """--out and --baseline: where a report goes and what it is compared with."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="reports directory: the report goes to DIR/<run-id>/ and DIR/latest points at it "
        "(default: reports/)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="BASE.json",
        help="a second results file to compare against, case by case (adds a comparison section)",
    )


def run(args: argparse.Namespace) -> int:
    from bench.paths import check_folder
    from bench.report import write_report
    from bench.report.build import DEFAULT_OUT

    check_folder(DEFAULT_OUT if args.out is None else args.out, "--out")
    run_dir = write_report(args.results, out=args.out, baseline=args.baseline)
    print(f"report: {run_dir / 'index.html'}")
    return 0
