"""Timing one benchmark case honestly: the only module of the harness that times anything.

A case is (method, problem, device); its unit of work is one whole fit of K steps with the loss
trace, from a fresh copy of x0 made outside the timed region. `measure` does, in order:

1. `method.prepare` (compilation, autotuning, first-call allocation), untimed, recorded as setup_s;
2. a fit checked against the closed form (bench.oracle), recorded as oracle_max_abs_err/oracle_ok;
3. two warm-up fits, the second one timed to choose the number of rounds for the time budget;
4. `benchmark.pedantic`: per round, `setup` copies x0 (untimed), the target runs the fit and waits
   for the device (pytest-benchmark's timer is the host clock), and CUDA events time the fit on
   the device;
5. the derived figures of bench.results.CASE_FIELDS, from the raw host samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from pytest_benchmark.stats import Stats

from bench import oracle
from bench.methods import Method
from bench.problem import Problem
from bench.results import NOISY_IQR_OVER_MEDIAN

MAX_ROUNDS = 10_000


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, where torch ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bytes_per_step(problem: Problem) -> int:
    """The fewest bytes one step must move: read x and t, write x."""
    itemsize = torch.empty((), dtype=problem.torch_dtype).element_size()
    return 3 * itemsize * problem.elements  # read 2 BD elements ; write BD elements


def choose_rounds(probe_s: float, budget_s: float, min_rounds: int) -> int:
    """Enough rounds to fill `budget_s` at `probe_s` per fit, at least `min_rounds`."""
    if probe_s <= 0 or not math.isfinite(probe_s):
        return MAX_ROUNDS
    return max(min_rounds, min(MAX_ROUNDS, math.ceil(budget_s / probe_s)))


class CopyBandwidth:
    """Device-to-device copy bandwidth, measured once per (device, dtype, bytes) and cached.

    The yardstick for a step that moves N bytes is a copy that moves N bytes too: read N / 2 and
    write N / 2, counted as N bytes moved, in the problem's dtype (on the CPU the element count
    decides whether torch splits a copy across threads). It is the best of a few samples: what
    the hardware can do, not what a busy moment allowed.
    """

    def __init__(self, budget_s: float = 0.05, samples: int = 7) -> None:
        self.budget_s = budget_s
        self.samples = samples
        self._cache: dict[tuple[str, torch.dtype, int], float] = {}

    def gbs(self, device: torch.device, nbytes: int, dtype: torch.dtype = torch.float32) -> float:
        key = (str(device), dtype, nbytes)
        if key not in self._cache:
            self._cache[key] = self._measure(device, nbytes, dtype)
        return self._cache[key]

    def _measure(self, device: torch.device, nbytes: int, dtype: torch.dtype) -> float:
        itemsize = torch.empty((), dtype=dtype).element_size()
        src = torch.ones(max(1, math.ceil(nbytes / 2 / itemsize)), dtype=dtype, device=device)
        dst = torch.empty_like(src)
        dst.copy_(src)  # warm-up: first touch of the pages, allocation
        probe = self._time_copies(device, src, dst, 1)
        reps = max(1, math.ceil(self.budget_s / self.samples / max(probe, 1e-9)))
        best = min(self._time_copies(device, src, dst, reps) for _ in range(self.samples)) / reps
        return 2 * src.numel() * itemsize / best / 1e9

    @staticmethod
    def _time_copies(
        device: torch.device, src: torch.Tensor, dst: torch.Tensor, reps: int
    ) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                dst.copy_(src)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        for _ in range(reps):
            dst.copy_(src)
        return time.perf_counter() - begin


def oracle_check(
    method: Method, problem: Problem, x0: torch.Tensor, t: torch.Tensor
) -> tuple[float, float]:
    """(max |x_K - closed form|, the tolerance it is held to) for one fit of `method`.

    float32 and float64: the rounding of each step, at most a few units in the last place of the
    largest value, accumulated over K steps. float16 and bfloat16: twice the error of the update
    written in plain PyTorch at that precision (low-precision x can stall short of the closed form
    when a step is smaller than half a unit of x), and never less than the float bound.
    """
    lr, steps = problem.lr, problem.steps
    expected = oracle.x_at(x0, t, lr, steps)
    fit = method.fit(x0, t, lr, steps)
    err = (fit.x.double() - expected).abs().max().item()
    scale = max(x0.abs().max().item(), t.abs().max().item(), 1.0)
    tolerance = 4 * (steps + 1) * torch.finfo(x0.dtype).eps * scale
    if x0.dtype in (torch.float16, torch.bfloat16):
        x = x0.clone()
        for _ in range(steps):
            x = x - lr * 2 * (x - t) / x.shape[1]
        plain_err = (x.double() - expected).abs().max().item()
        tolerance = max(tolerance, 2 * plain_err + torch.finfo(x0.dtype).eps * scale)
    return err, tolerance


def derived_figures(
    problem: Problem,
    host_s: list[float],
    device_s: list[float] | None,
    copy_gbs: float,
) -> dict[str, Any]:
    """The timing fields of CASE_FIELDS from the raw samples (seconds per whole fit).

    Median and IQR are pytest-benchmark's own (its quartile method), so they match its tables.
    """
    stats = Stats()
    for sample in host_s:
        stats.update(sample)
    median, iqr, steps = stats.median, stats.iqr, problem.steps
    per_step = median / steps
    moved = bytes_per_step(problem)
    bandwidth = moved / per_step / 1e9
    device_median = None
    if device_s:
        dev = Stats()
        for sample in device_s:
            dev.update(sample)
        device_median = dev.median / steps
    return {
        "time_per_step_s": per_step,
        "time_per_step_iqr_s": iqr / steps,
        "device_time_per_step_s": device_median,
        "elements_steps_per_s": problem.elements * steps / median,
        "bytes_per_step": moved,
        "bandwidth_gbs": bandwidth,
        "copy_bandwidth_gbs": copy_gbs,
        "copy_fraction": bandwidth / copy_gbs,
        "iqr_over_median": iqr / median,
        "noisy": iqr / median > NOISY_IQR_OVER_MEDIAN,
    }


def measure(
    benchmark: Any,
    method: Method,
    problem: Problem,
    device: torch.device | str,
    *,
    copy: CopyBandwidth,
    device_name: str,
    budget_s: float = 1.0,
    min_rounds: int = 5,
) -> dict[str, Any]:
    """Time one case with `benchmark` (pytest-benchmark's fixture); return its extra_info.

    The timed rounds take about `budget_s` in all (at least `min_rounds` of them). Exceptions
    (out of memory, a broken method) propagate: the caller reports the case as failed.
    `speedup_vs_autograd` is None here; the plugin fills it when the whole run is known.
    """
    device = torch.device(device)
    lr, steps = problem.lr, problem.steps
    x0, t = problem.inputs(device)
    t = t.contiguous()

    synchronize(device)
    begin = time.perf_counter()
    method.prepare(x0, t, lr, steps)
    synchronize(device)
    setup_s = time.perf_counter() - begin

    oracle_err, tolerance = oracle_check(method, problem, x0, t)

    def fresh_copy() -> tuple[torch.Tensor, torch.Tensor]:
        x = x0.clone(memory_format=torch.contiguous_format)
        synchronize(device)
        return x, t

    probe_s = math.inf
    for _ in range(2):  # warm-up; the second fit sizes the rounds
        x, _t = fresh_copy()
        begin = time.perf_counter()
        method.run(x, t, lr, steps)
        synchronize(device)
        probe_s = time.perf_counter() - begin
    rounds = choose_rounds(probe_s, budget_s, min_rounds)

    device_s: list[float] = []
    target, setup, teardown = _round_functions(method, problem, device, fresh_copy, device_s)
    benchmark.pedantic(
        target, setup=setup, teardown=teardown, rounds=rounds, warmup_rounds=0, iterations=1
    )
    host_s = list(benchmark.stats.stats.data)
    copy_gbs = copy.gbs(device, bytes_per_step(problem), problem.torch_dtype)

    info: dict[str, Any] = {
        "method": method.name,
        "problem": problem.name,
        "batch": problem.batch,
        "dim": problem.dim,
        "steps": steps,
        "lr": lr,
        "dtype": problem.dtype,
        "seed": problem.seed,
        "device": device.type,
        "device_name": device_name,
        "setup_s": setup_s,
        **derived_figures(problem, host_s, device_s or None, copy_gbs),
        "speedup_vs_autograd": None,
        "oracle_max_abs_err": oracle_err,
        "oracle_ok": oracle_err <= tolerance,  # False for NaN
    }
    return info


def _round_functions(
    method: Method,
    problem: Problem,
    device: torch.device,
    fresh_copy: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    device_s: list[float],
) -> tuple[Callable[..., Any], Callable[[], Any], Callable[..., None]]:
    """pedantic's (target, setup, teardown). pytest-benchmark calls `setup` before each round,
    outside its timer, and passes what it returns to `target` (timed) and then to `teardown`."""
    lr, steps = problem.lr, problem.steps
    cuda = device.type == "cuda"

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        x, t = fresh_copy()
        events = (
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            if cuda
            else None
        )
        return (x, t, events), {}

    def target(x: torch.Tensor, t: torch.Tensor, events: Any) -> torch.Tensor:
        if events is not None:
            events[0].record()
        loss = method.run(x, t, lr, steps)
        if events is not None:
            events[1].record()
            torch.cuda.synchronize(device)
        return loss

    def teardown(x: torch.Tensor, t: torch.Tensor, events: Any) -> None:
        if events is not None:
            device_s.append(events[0].elapsed_time(events[1]) / 1e3)

    return target, setup, teardown
