"""The benchmark suite: one test per (method, problem) of the chosen sweep, on the chosen device.

Run it with `pytest --benchmark-only` from the repository root (options: see bench.plugin), or
`bench.suite_runner.run_benchmarks()` from Python. A plain `pytest` skips it.
"""

from __future__ import annotations

import pytest
import torch

from bench import interrupt, plugin, timing
from bench.methods import get_method

pytestmark = pytest.mark.vecreg_benchmark


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.name != "test_fit":
        return
    run = plugin.get_run(metafunc.config)
    cases = run.cases() if run is not None else []
    metafunc.parametrize(("method", "problem", "device"), cases)


def test_fit(benchmark, method: str, problem: str, device: str, pytestconfig) -> None:
    """One whole fit of K steps with its loss trace, from a fresh copy of x0."""
    run = plugin.get_run(pytestconfig)
    impl, case = get_method(method), run.problems[problem]
    reason = impl.can_time(case, run.device)
    if reason is not None:
        run.record("skipped", method, problem, reason)
        pytest.skip(reason)

    benchmark.group = problem
    try:
        info = timing.measure(
            benchmark,
            impl,
            case,
            run.device,
            copy=run.copy,
            device_name=run.device_name,
            budget_s=float(pytestconfig.getoption("benchmark_max_time")),
            min_rounds=int(pytestconfig.getoption("benchmark_min_rounds")),
            precision=run.precision,
            monitor=run.monitor,
            disable_gc=bool(pytestconfig.getoption("benchmark_disable_gc")),
            flush=run.flush,
        )
    except Exception as exc:  # out of memory or a broken method: report it, go on with the sweep
        interrupt.check()  # unless the exception is an interruption that a library wrapped
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        benchmark.has_error = True  # keep a half-made case out of the results file
        message = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")
        run.record("failed", method, problem, reason)
        pytest.fail(reason, pytrace=False)
    benchmark.extra_info.update(info)
    run.timed.append(info)

    if not info["oracle_ok"]:
        # The timing is kept (and flagged): a fast wrong method must not pass unnoticed.
        pytest.fail(
            f"{method} does not match the closed form on {problem}: "
            f"max |x_K - oracle| = {info['oracle_max_abs_err']:.3g}",
            pytrace=False,
        )
