"""`python -m bench seed`: fit the question's case with every method, print the steps to 1%."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda if present, else cpu)"
    )


def run(args: argparse.Namespace) -> int:
    from bench.cli import UsageError
    from bench.main_job import best_device
    from bench.problem import resolve_device

    device = args.device or best_device()
    try:
        resolve_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print_seed_case(device)
    return 0


def print_seed_case(device: str) -> None:
    """Print, per method and lr, the step at which the distance fell to 1%, and the final x."""
    from bench.convergence import first_step_below
    from bench.methods import METHODS
    from bench.problem import SEED

    print(f"The question's case on {device}: B=1, D=5, t=[1, 2, 3, 4, 5], 1000 steps")
    width = max(len(name) for name in METHODS)
    print(f"{'method':<{width}} {'lr':>5} {'1% at step':>10}  final x")
    for method in METHODS.values():
        reason = method.available(device)
        if reason is not None:
            print(f"{method.name:<{width}} skipped: {reason}")
            continue
        for problem in SEED:
            x0, t = problem.inputs(device)
            fit = method.fit(x0, t, problem.lr, problem.steps)
            step = first_step_below(fit.loss.cpu(), 0.01)
            x = ", ".join(f"{v:.4f}" for v in fit.x[0].tolist())
            print(f"{method.name:<{width}} {problem.lr:>5g} {step!s:>10}  [{x}]")
