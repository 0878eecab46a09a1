"""`python -m bench`: the command line. Each subcommand lives in its own module, which provides
`add_arguments(parser)` and `run(args) -> exit code`; with no subcommand, `run` is the main job.

Only the module of the command being run is imported (and the main job's, whose options the
top-level help lists): a command module imports nothing heavy at import time, only in `run`, so
`python -m bench --help` and `python -m bench COMMAND --help` answer at once, with no torch,
pandas, scipy or matplotlib imported.

Exit codes: 0 done; 1 a command that could not do its work; 2 bad input (a usage error, an
unusable results file, a path that cannot be written) or an optional package the command needs
that is not installed (bench.optional), one line on stderr; 130 and 143 when stopped by SIGINT and
SIGTERM, with one line `interrupted <stage>` (see bench.interrupt).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

from bench import interrupt, optional
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
    "gpu-check": (
        "bench.gpu_check",
        "on a CUDA machine, in under 8 minutes: doctor, CUDA tests, sweep, report, speed goals",
    ),
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


# Optional packages (bench.optional) a command needs, by (command, action): checked before it
# starts, so that a missing one is one line and exit code 2, not a traceback halfway through.
NEEDS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("history", "check"): ("ruptures", "scipy"),
    ("history", "report"): ("ruptures", "scipy"),
}

# The names of bench.sweeps.SWEEPS and bench.problem.DTYPES, for the help: those modules import
# torch. tests/test_optional.py checks that they match.
SWEEP_NAMES: dict[str, str] = {
    "quick": "the default: two shapes, float32",
    "seed": "the question's case, B=1, D=5, at lr 0.01 and 0.1",
    "sizes": "B x D from 2^10 to 2^26 elements at D = 1024, float32 and bfloat16",
    "dims": "D from 1 to 8192 at B x D = 2^20, float32",
    "smoke": "one tiny problem, to check the harness",
    "gpu-check": "quick, sizes and the problems the GPU speed goals name",
}
DEFAULT_SWEEP = "quick"
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")

HELP_WIDTH = 80
EPILOG = "\n".join(
    [
        "sweeps (--sweep):",
        *(f"  {name:<10}  {text}" for name, text in SWEEP_NAMES.items()),
        f"dtypes (--dtypes): {', '.join(DTYPE_NAMES)}",
        "methods (--methods): python -m bench doctor lists them, and what each needs",
    ]
)
USAGE = (
    "python -m bench [OPTIONS]             the main job (the same as: python -m bench run)\n"
    "       python -m bench COMMAND [ARGS]      python -m bench COMMAND --help for its own"
)


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2."""


class CommandError(RuntimeError):
    """A command that could not do its work (the message says why): exit code 1."""


class EmptyValue(Exception):
    """An option given an empty value. Not a ValueError, so that argparse lets it through
    instead of printing its usage: it is reported as one line, exit code 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser, with the arguments of `command` (one of COMMANDS) defined, and
    the main job's options at the top level for the help. Only `command`'s module and the main
    job's are imported: the other commands are listed by name and help line alone (their
    arguments are defined when they are the command)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        usage=USAGE,
        description=textwrap.fill(
            "vecreg-bench: batched vector regression by gradient descent, several ways, timed. "
            "With no command, runs the main job: the benchmark sweep on the best device here "
            "(CUDA, else the CPU), the convergence study of the question's case, the history, "
            "and a report in reports/<run-id>/index.html.",
            HELP_WIDTH,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options = parser.add_argument_group(
        "the main job's options (python -m bench [OPTIONS], or python -m bench run [OPTIONS])"
    )
    _module("run").add_arguments(options)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", prog=parser.prog
    )
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == "run":
            sub.epilog, sub.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
        sub.set_defaults(module=module)
        if name == command:
            _module(name).add_arguments(sub)
            refuse_empty_values(sub)
    return parser


def _module(command: str):
    return importlib.import_module(COMMANDS[command][0])


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


_running = "python -m bench"  # the command being run, as a user typed it: for messages


def main(argv: list[str] | None = None) -> int:
    global _running
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = [next(iter(COMMANDS)), *argv]
    interrupt.set_stage(STAGES.get(argv[0], interrupt.START))
    try:
        command = argv[0] if argv[0] in COMMANDS else None
        args = build_parser(command).parse_args(argv)
        action = getattr(args, "action", None)
        _running = " ".join(["python -m bench", args.command, *([action] if action else [])])
        optional.require(NEEDS.get((args.command, action), ()), _running)
        return importlib.import_module(args.module).run(args)
    except BaseException as exc:
        return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception that ends a command, with its one line on stderr; what is
    not an expected failure is raised again."""
    if isinstance(exc, KeyboardInterrupt) or interrupt.received() is not None:
        # Whatever the exception, after SIGINT or SIGTERM it is the interruption that ends the run.
        return interrupt.report()
    if isinstance(exc, SystemExit):  # argparse's --help and usage errors: said already
        raise exc
    from bench.results import ResultsError

    if isinstance(exc, (UsageError, ResultsError, OutputPathError, EmptyValue)):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, optional.MissingDependency):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    package = optional.missing_from(exc)
    if package is not None:  # an optional package a command reached for: one line, not a trace
        print(f"error: {optional.message([package], _running)}", file=sys.stderr)
        return 2
    if isinstance(exc, CommandError):
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, OSError):  # a folder that cannot be made or written, a disk that is full
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    raise exc
