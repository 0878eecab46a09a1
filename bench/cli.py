"""`python -m bench`: the command line. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args) -> exit code`; with no subcommand, `run` is the main job."""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.results import ResultsError

# name -> (module, one-line help). The first is the default.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "bench.main_job",
        "the main job (default): benchmark sweep, convergence study, report",
    ),
    "report": ("bench.report.command", "build a report from a saved results file"),
    "compare": ("bench.compare", "compare two results files; exit 1 on a significant slowdown"),
    "baseline": ("bench.baseline", "save a results file as this device's baseline"),
    "gpu-check": ("bench.gpu_check", "on a CUDA machine: CUDA tests, GPU sweeps and report in DIR"),
    "seed": ("bench.seed_case", "fit the question's case with every method and print the steps"),
}


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2."""


class CommandError(RuntimeError):
    """A command that could not do its work (the message says why): exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="vecreg-bench: batched vector regression by gradient descent, several ways, "
        "timed. With no subcommand, runs the main job ('run').",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = [next(iter(COMMANDS)), *argv]
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(args.module).run(args)
    except (UsageError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a folder that cannot be made or written, a disk that is full
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
