"""`python -m bench`: the command line. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args) -> exit code`; with no subcommand, `run` is the main job.

Exit codes: 0 done; 1 a command that could not do its work; 2 bad input (a usage error, an
unusable results file, a path that cannot be written), one line on stderr; 130 and 143 when
stopped by SIGINT and SIGTERM, with one line `interrupted <stage>` (see bench.interrupt).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench import interrupt
from bench.paths import OutputPathError

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
    "doctor": ("bench.doctor", "what the harness needs and what this machine has; each method"),
    "ab": ("bench.ab", "two git revisions timed in one run, interleaved; exit 1 on a slowdown"),
    "history": ("bench.history", "runs kept per device; change points across commits; trend page"),
    "scale": ("bench.scale", "rows sharded over 1..N ranks (torchrun): time, speedup, efficiency"),
}

# What a command is doing from its start, for the line of an interrupted run ("interrupted ...");
# the main job says more as it goes on.
STAGES: dict[str, str] = {
    "run": "before the first case",
    "report": "while building the report",
    "compare": "while comparing",
    "baseline": "while saving the baseline",
    "gpu-check": "before the first case",
    "seed": "while fitting the question's case",
    "doctor": "while checking this machine",
    "ab": "during the A/B run",
    "history": "while working on the history",
    "scale": "before the first case",
}


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2."""


class CommandError(RuntimeError):
    """A command that could not do its work (the message says why): exit code 1."""


class EmptyValue(Exception):
    """An option given an empty value. Not a ValueError, so that argparse lets it through
    instead of printing its usage: it is reported as one line, exit code 2."""


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
        refuse_empty_values(sub)
    return parser


def refuse_empty_values(parser: argparse.ArgumentParser) -> None:
    """Every option and argument that takes a value refuses an empty one: `--out ""` is an
    error, not the default."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):  # e.g. `baseline save`
            for sub in dict.fromkeys(action.choices.values()):
                refuse_empty_values(sub)
            continue
        if action.nargs == 0:
            continue
        if action.option_strings:
            name = max(action.option_strings, key=len)
            message = f"{name} is empty: give a value or leave the option out"
        else:
            message = f"{action.metavar or action.dest} is empty: give a value"

        def checked(value, convert=action.type or str, message=message):
            if isinstance(value, str) and value == "":
                raise EmptyValue(message)
            return convert(value)

        # argparse names the type in its own messages ("invalid Path value")
        checked.__name__ = getattr(action.type or str, "__name__", "value")
        action.type = checked


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = [next(iter(COMMANDS)), *argv]
    interrupt.set_stage(STAGES.get(argv[0], interrupt.START))
    try:
        args = build_parser().parse_args(argv)  # imports every command's module: torch, seconds
        return importlib.import_module(args.module).run(args)
    except BaseException as exc:
        return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception that ends a command, with its one line on stderr; what is
    not an expected failure is raised again."""
    if isinstance(exc, KeyboardInterrupt) or interrupt.received() is not None:
        # Whatever the exception, after SIGINT or SIGTERM it is the interruption that ends the run.
        return interrupt.report()
    from bench.results import ResultsError

    if isinstance(exc, (UsageError, ResultsError, OutputPathError, EmptyValue)):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, CommandError):
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, OSError):  # a folder that cannot be made or written, a disk that is full
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    raise exc
