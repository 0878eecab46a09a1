"""`python -m bench gpu-check DIR`: on a CUDA machine, from the checkout, with nothing to install:
the CUDA tests, then the quick and sizes sweeps (and the problems the speed goals name), the
convergence study and the report, everything written into DIR."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Per case: a quarter second of timed rounds (at least 5) keeps the whole check within about 8
# minutes on one GPU, torch.compile of each shape included.
TIMING = ["--benchmark-max-time=0.25", "--benchmark-min-rounds=5"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", type=Path, metavar="DIR", help="where the logs, results and report go"
    )
    parser.add_argument(
        "--skip-tests", action="store_true", help="only the sweeps, convergence study and report"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (for logs and CI)"
    )


def run(args: argparse.Namespace) -> int:
    from bench import interrupt
    from bench.cli import UsageError
    from bench.main_job import main_job
    from bench.paths import check_file, check_folder

    if not torch.cuda.is_available():
        raise UsageError("gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False here")
    out: Path = args.dir
    check_folder(out, "DIR")
    check_file(out / "results.json", "DIR")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    tests_passed = True
    if not args.skip_tests:
        interrupt.set_stage("during the CUDA tests, before the first case")
        tests_passed = run_cuda_tests(out / "cuda-tests.log")
        print(f"gpu-check: CUDA tests took {time.perf_counter() - start:.0f} s", flush=True)
    main_job(
        "cuda",
        "gpu-check",
        output=out / "results.json",
        out=out,
        progress=not args.no_progress,
        pytest_args=TIMING,
    )
    print(f"gpu-check: {time.perf_counter() - start:.0f} s in all; everything is in {out}")
    return 0 if tests_passed else 1


def run_cuda_tests(log: Path) -> bool:
    """The tests that run on the GPU (parametrized or marked `cuda`), in a child process so that
    Triton compiles for the GPU there; returns whether they passed."""
    command = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider"]
    command.append(str(ROOT / "tests"))
    print("CUDA tests: " + " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    lines = done.stdout.strip().splitlines()
    print(f"CUDA tests: {lines[-1] if lines else 'no output'} (log: {log})", flush=True)
    return done.returncode == 0
