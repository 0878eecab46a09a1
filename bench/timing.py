"""Timing one benchmark case honestly: the only module of the harness that times anything.

A case is (method, problem, device); its unit of work is one whole fit of K steps with the loss
trace, from a fresh copy of x0 made outside the timed region. `measure` does, in order:

1. `method.prepare` (compilation, autotuning, first-call allocation), untimed, recorded as setup_s;
2. a fit checked against the closed form (bench.oracle), recorded as oracle_max_abs_err/oracle_ok;
3. two warm-up fits;
4. timed rounds, adaptively (`sample`): in batches that grow geometrically, until the 95% interval
   of the median fit time is within +-`precision` of it (bench.stats.median_interval) or the time
   budget is spent, at least `min_rounds`. Per round: a fresh copy of x0 and, in the cold-cache
   regime, a write of an L2-sized buffer (`L2Flush`), both untimed; then the fit and a wait for
   the device (host clock: the fit is done when the host can use its result), with two CUDA
   events recorded around the fit on the stream (`EventSpan`: created and first recorded before
   the rounds, so that no round pays for creating them); then, where NVML is present, the SM
   clock and the throttle reasons (untimed). Rounds under thermal or power throttling are left
   out;
5. the kept rounds' host times recorded in pytest-benchmark's fixture as `benchmark.pedantic`
   records its rounds, so that the results file is exactly what pytest-benchmark writes (its
   `stats.data` the raw samples) and `pytest-benchmark compare` reads it;
6. on CUDA, untimed: a pass under torch.profiler (CUDA activity) that records the time the GPU
   was busy with the fit's kernels and copies, and how many kernels a step ran
   (`kernel_profile`); and one fit between `torch.cuda.reset_peak_memory_stats` and
   `max_memory_allocated` (`memory_pass`);
7. the derived figures of bench.results.CASE_FIELDS from those samples, through bench.stats; the
   1-minute load average before and after the rounds and the CPU pressure during them, with the
   `busy` flag (bench.environment).

Three times, three meanings (DESIGN.md, "Measuring"): the host time of a fit is what a user
waits; the event span is the time between two events on the stream, which includes the GPU
idling between launches when a method is launch-bound; the busy time is the union of the
intervals during which the fit's kernels, copies and memsets ran. host - busy is what launching
(and waiting) costs beyond the GPU's work. The whole case runs with its device as the current
CUDA device (`--device cuda:N`), so that events, Triton launches and graph capture use it.

The clock, the GPU monitor, the events, the flush and the profiler are parameters or small
classes, so a fake method, a fake clock and fake CUDA objects can drive the whole of it in a test
without timing anything real.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from pytest_benchmark.fixture import PauseInstrumentation

from bench import environment, oracle
from bench import stats as bstats
from bench.methods import Method
from bench.problem import Problem
from bench.results import NOISY_IQR_OVER_MEDIAN

DEFAULT_PRECISION = 0.02  # +-2%: the relative half-width of the median's 95% interval
MAX_ROUNDS = 10_000  # whatever the budget: the samples of a case stay a few hundred KB
# Each batch multiplies the rounds taken so far by this factor: the interval is checked O(log n)
# times, so checking costs nothing next to the rounds, and a case stops at most 25% past the
# round at which it first became precise enough.
GROWTH = 1.25
# The fewest samples whose extremes cover the median with at least 95%: 1 - 2 / 2^6 = 96.9%
# (with 5, the interval is the range and covers it 93.8% of the time). Fewer are never precise.
MIN_PRECISE_ROUNDS = 6
# Fits profiled per case (untimed), each in its own profiler session so that nothing else (a
# fresh copy of x0, a cold-cache flush) is in its trace; the case records their medians.
PROFILE_FITS = 3
# The profiler's kinds of device activity that are work of the fit (kineto's names, as
# torch.profiler's chrome trace export lists them); the others on the device, such as the
# synchronization records ("cuda_sync") and user annotations, are not.
KERNEL_ACTIVITY = "kernel"
MEMORY_ACTIVITIES = ("gpu_memcpy", "gpu_memset")
CACHE_REGIMES = ("warm", "cold")
# The figures of the untimed CUDA passes: in a case's extra_info where measured, absent (not
# zero) where not: on the CPU, without CUPTI, and memory for a method outside torch (jax).
PROFILE_FIELDS = ("gpu_busy_per_step_s", "kernel_launches_per_step", "memory_ops_per_step")
MEMORY_FIELDS = ("peak_memory_bytes", "fit_memory_bytes")
CUDA_PASS_FIELDS = PROFILE_FIELDS + MEMORY_FIELDS

Clock = Callable[[], float]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, where torch ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def current_device(device: torch.device) -> contextlib.AbstractContextManager:
    """`device` as the current CUDA device for the duration (a no-op on the CPU). CUDA events,
    Triton launches and graph capture use the current device, whatever tensor they touch, so a
    case on cuda:1 must run with cuda:1 current."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)


class EventSpan:
    """Two CUDA events on one stream: the span between them, in seconds, is the event span of a
    fit. Both events are created and first recorded here, before any timed region:
    torch.cuda.Event creates its CUDA event lazily, at its first record() (torch/cuda/streams.py,
    torch 2.14), and a round should pay for a record, not a cudaEventCreate. The span includes
    whatever the stream did between the events, the GPU idling between launches included."""

    def __init__(self, stream: Any, event_class: Callable[..., Any] | None = None) -> None:
        make = event_class if event_class is not None else torch.cuda.Event
        self.stream = stream
        self.start = make(enable_timing=True)
        self.end = make(enable_timing=True)
        self.start.record(stream)
        self.end.record(stream)
        self.end.synchronize()

    @classmethod
    def on(cls, device: torch.device) -> EventSpan:
        """A pair on `device`'s current stream, where torch runs a method's work."""
        return cls(torch.cuda.current_stream(device))

    def begin(self) -> None:
        self.start.record(self.stream)

    def finish(self) -> None:
        self.end.record(self.stream)

    def seconds(self) -> float:
        """The span of the last begin() .. finish(); call once the end event has completed."""
        return self.start.elapsed_time(self.end) / 1e3


class L2Flush:
    """The cold-cache regime: writes a buffer the size of the GPU's L2 (from its properties, not a
    fixed size), so that a fit that follows finds none of x, t or its own buffers there.

    One write of exactly the L2's size is what the regime promises (as nvbench does); the L2's
    replacement policy is not documented, so a few lines may survive it. Called outside the timed
    region, before each timed fit and each profiled one."""

    def __init__(
        self, device: torch.device | str, properties: Callable[[Any], Any] | None = None
    ) -> None:
        device = torch.device(device)
        if properties is None:
            if device.type != "cuda":
                raise ValueError(
                    f"the cold-cache regime flushes a GPU's L2 cache; {device} has none that "
                    "the harness can flush (use --cache warm)"
                )
            properties = torch.cuda.get_device_properties
        self.nbytes = int(properties(device).L2_cache_size)
        if self.nbytes <= 0:
            raise ValueError(f"{device} reports an L2 cache of {self.nbytes} bytes: none to flush")
        self.buffer = torch.empty(self.nbytes, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self.buffer.zero_()


def bytes_per_step(problem: Problem) -> int:
    """The fewest bytes one step must move: read x and t, write x."""
    itemsize = torch.empty((), dtype=problem.torch_dtype).element_size()
    return 3 * itemsize * problem.elements  # read 2 BD elements ; write BD elements


@dataclass(frozen=True)
class Round:
    """One timed fit: host seconds, the event span in seconds (None where no events were
    recorded: the CPU, jax), and the GPU's SM clock and whether heat or power throttled it when
    the fit ended (None and False without NVML)."""

    host_s: float
    span_s: float | None = None
    sm_clock_mhz: int | None = None
    throttled: bool = False


@dataclass(frozen=True)
class Sampling:
    """What `sample` took: every round, and those the statistics use."""

    rounds: tuple[Round, ...]
    kept: tuple[Round, ...]  # the unthrottled rounds; all rounds where too few were unthrottled
    interval: bstats.Interval  # the median host time of the kept rounds, with its 95% interval
    precise: bool  # the interval came within +-precision before the budget ran out
    elapsed_s: float  # the clock's time from the first round to the end of the last

    @property
    def throttled_rounds(self) -> int:
        return sum(r.throttled for r in self.rounds)

    @property
    def throttled_kept(self) -> bool:
        """Throttled rounds are in the statistics: too few rounds were free of throttling."""
        return any(r.throttled for r in self.kept)


def sample(
    take_round: Callable[[], Round],
    *,
    precision: float = DEFAULT_PRECISION,
    budget_s: float = 1.0,
    min_rounds: int = 5,
    clock: Clock = time.perf_counter,
    max_rounds: int = MAX_ROUNDS,
) -> Sampling:
    """Take rounds until the median's 95% interval is within +-`precision` (relative half-width,
    `Interval.relative_halfwidth`) or `budget_s` of the clock is spent since the first round; at
    least `min_rounds` (they take precedence over the budget), at most `max_rounds`.

    The interval is checked after each batch; a batch adds GROWTH - 1 of the rounds so far (or
    what precision needs at least), and no more than the budget left is expected to hold.
    Precision needs at least max(min_rounds, MIN_PRECISE_ROUNDS) unthrottled rounds.
    """
    min_rounds = max(1, min_rounds)
    enough = max(min_rounds, MIN_PRECISE_ROUNDS)
    rounds: list[Round] = []
    start = clock()
    batch = min(min_rounds, max_rounds)
    while True:
        for _ in range(batch):
            rounds.append(take_round())
        elapsed = clock() - start
        free = [r for r in rounds if not r.throttled]
        kept = free if len(free) >= min_rounds else rounds
        interval = bstats.median_interval([r.host_s for r in kept])
        precise = len(free) >= enough and interval.relative_halfwidth() <= precision
        done = len(rounds)
        if precise or done >= max_rounds or (elapsed >= budget_s and done >= min_rounds):
            return Sampling(tuple(rounds), tuple(kept), interval, precise, elapsed)
        batch = max(1, math.ceil(done * (GROWTH - 1)), enough - len(free))
        per_round, left = elapsed / done, budget_s - elapsed
        if per_round > 0 and left > 0 and done >= min_rounds:
            batch = min(batch, math.ceil(left / per_round))
        batch = min(batch, max_rounds - done)


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
            span = EventSpan.on(device)
            span.begin()
            for _ in range(reps):
                dst.copy_(src)
            span.finish()
            span.end.synchronize()
            return span.seconds()
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
    span_s: list[float] | None,
    copy_gbs: float,
) -> dict[str, Any]:
    """The timing fields of CASE_FIELDS from the raw samples (seconds per whole fit).

    Median and IQR are bench.stats' (numpy's quartiles): the one definition every table, flag
    and verdict uses.
    """
    q1, median, q3 = bstats.quartiles(host_s)
    iqr, steps = q3 - q1, problem.steps
    per_step = median / steps
    moved = bytes_per_step(problem)
    bandwidth = moved / per_step / 1e9
    span_median = bstats.quartiles(span_s)[1] / steps if span_s else None
    return {
        "time_per_step_s": per_step,
        "time_per_step_iqr_s": iqr / steps,
        "event_span_per_step_s": span_median,
        "elements_steps_per_s": problem.elements * steps / median,
        "bytes_per_step": moved,
        "bandwidth_gbs": bandwidth,
        "copy_bandwidth_gbs": copy_gbs,
        "copy_fraction": bandwidth / copy_gbs,
        "iqr_over_median": iqr / median,
        "noisy": iqr / median > NOISY_IQR_OVER_MEDIAN,
    }


def sampling_figures(sampling: Sampling, steps: int, precision: float) -> dict[str, Any]:
    """The adaptive-sampling and GPU-clock fields of CASE_FIELDS."""
    interval = sampling.interval
    clocks = [r.sm_clock_mhz for r in sampling.rounds if r.sm_clock_mhz is not None]
    monitored = bool(clocks)
    return {
        "time_per_step_low_s": interval.low / steps,
        "time_per_step_high_s": interval.high / steps,
        "precision": interval.relative_halfwidth(),
        "precision_target": precision,
        "imprecise": not sampling.precise,
        "throttled_rounds": sampling.throttled_rounds if monitored else None,
        "throttled": sampling.throttled_kept if monitored else None,
        "sm_clock_min_mhz": min(clocks) if monitored else None,
        "sm_clock_max_mhz": max(clocks) if monitored else None,
    }


@dataclass(frozen=True)
class KernelSummary:
    """What the profiler saw the GPU do during one fit."""

    busy_s: float  # the union of the intervals of its kernels, copies and memsets
    kernels: int  # kernels run (each kernel of a CUDA graph replay counts: CUPTI records nodes)
    memory_ops: int  # copies and memsets


def summarize_kernels(events: Iterable[Any], device_index: int | None) -> KernelSummary | None:
    """The fit's GPU work from a profile's kineto events (`_KinetoEvent`s: `device_type()`,
    `device_index()`, `activity_type()`, `start_ns()`, `end_ns()`), on the device `device_index`
    (None: any). Busy time is the union of the intervals, not their sum: work on two streams at
    once keeps the GPU busy once. None when the profile holds no work on the device: nothing was
    recorded (the profiler lacked CUPTI, say), which is not "no time"."""
    from torch.autograd import DeviceType

    intervals: list[tuple[int, int]] = []
    kernels = memory_ops = 0
    for event in events:
        if event.device_type() != DeviceType.CUDA:
            continue
        if device_index is not None and event.device_index() != device_index:
            continue
        kind = event.activity_type()
        if kind == KERNEL_ACTIVITY:
            kernels += 1
        elif kind in MEMORY_ACTIVITIES:
            memory_ops += 1
        else:
            continue
        intervals.append((event.start_ns(), event.end_ns()))
    if not intervals:
        return None
    busy_ns, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            busy_ns += end - start
            reach = end
        elif end > reach:
            busy_ns += end - reach
            reach = end
    return KernelSummary(busy_ns / 1e9, kernels, memory_ops)


def _cuda_profile() -> contextlib.AbstractContextManager:
    """torch.profiler with CUDA activity only (CUPTI's records of the GPU's work)."""
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CUDA])


def _profile_events(prof: Any) -> Iterable[Any]:
    """The raw kineto events of a finished torch.profiler session: the C++ records, without the
    event tree that `prof.events()` builds (seconds for a fit of thousands of kernels)."""
    return prof.profiler.kineto_results.events()


def cuda_profiling_supported() -> bool:
    from torch.profiler import ProfilerActivity, supported_activities

    return ProfilerActivity.CUDA in supported_activities()


def kernel_profile(
    run_fit: Callable[[], Any],
    prepare_fit: Callable[[], None],
    device: torch.device,
    steps: int,
    *,
    fits: int = PROFILE_FITS,
    profile: Callable[[], contextlib.AbstractContextManager] | None = None,
    events_of: Callable[[Any], Iterable[Any]] | None = None,
) -> dict[str, Any]:
    """The profiler figures of CASE_FIELDS: GPU busy time, kernels and memory operations per
    step, medians over `fits` fits, each profiled alone (`prepare_fit` before each, outside the
    session: the fresh copy of x0 and the cold-cache flush are not the fit's work). {} where
    there is nothing to say: the profile recorded no work on the device. `profile` and
    `events_of` stand for torch.profiler (a test's fakes)."""
    profile = profile if profile is not None else _cuda_profile
    events_of = events_of if events_of is not None else _profile_events
    summaries = []
    for _ in range(fits):
        prepare_fit()
        with profile() as prof:
            run_fit()
            synchronize(device)
        summary = summarize_kernels(events_of(prof), device.index)
        if summary is None:
            return {}
        summaries.append(summary)
    return {
        "gpu_busy_per_step_s": statistics.median(s.busy_s for s in summaries) / steps,
        "kernel_launches_per_step": statistics.median(s.kernels for s in summaries) / steps,
        "memory_ops_per_step": statistics.median(s.memory_ops for s in summaries) / steps,
    }


def memory_pass(
    run_fit: Callable[[], Any], device: torch.device, cuda: Any = None
) -> dict[str, Any]:
    """Peak device memory of one fit, untimed: torch.cuda.reset_peak_memory_stats before it,
    max_memory_allocated after. `peak_memory_bytes` is the peak of everything torch's caching
    allocator held (x0, t, x's copy, what this and other methods keep, such as CUDA graph pools,
    the cold-cache buffer); `fit_memory_bytes` the part the fit allocated on top of what was
    allocated when it began (its temporaries, trace and outputs). `cuda` stands for torch.cuda
    (a test's fake)."""
    cuda = cuda if cuda is not None else torch.cuda
    synchronize(device)
    cuda.reset_peak_memory_stats(device)
    before = cuda.memory_allocated(device)
    result = run_fit()
    synchronize(device)
    peak = cuda.max_memory_allocated(device)
    del result
    return {"peak_memory_bytes": int(peak), "fit_memory_bytes": int(peak - before)}


def _event_span(method: Method, device: torch.device) -> EventSpan | None:
    """The events of a case: on CUDA, for a method whose work torch's stream carries."""
    if device.type != "cuda" or method.outside_torch is not None:
        return None
    return EventSpan.on(device)


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
    precision: float = DEFAULT_PRECISION,
    monitor: environment.GpuMonitor | None = None,
    disable_gc: bool = False,
    clock: Clock = time.perf_counter,
    flush: Callable[[], None] | None = None,
    profile: bool = True,
) -> dict[str, Any]:
    """Time one case with `benchmark` (pytest-benchmark's fixture); return its extra_info.

    Rounds go on until the median is known to +-`precision` or the rounds have taken `budget_s`
    (at least `min_rounds` of them). `monitor` reads the GPU's clock and throttling per round
    (bench.environment.GpuMonitor; None: not read); `disable_gc` turns Python's garbage collector
    off during each timed fit (pytest-benchmark's --benchmark-disable-gc). `flush` (an `L2Flush`)
    is the cold-cache regime: called before each timed fit, untimed; None is the warm regime.
    `profile`: on CUDA, the profiler and memory passes (untimed). The case runs with `device` as
    the current CUDA device. Exceptions (out of memory, a broken method, a method that did not run
    as it claims: `Method.verify`) propagate: the caller reports the case as failed.
    `speedup_vs_autograd` is None here; the plugin fills it when the whole run is known.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda": the current device, by index
        device = torch.device("cuda", torch.cuda.current_device())
    with current_device(device):
        return _measure(
            benchmark,
            method,
            problem,
            device,
            copy=copy,
            device_name=device_name,
            budget_s=budget_s,
            min_rounds=min_rounds,
            precision=precision,
            monitor=monitor,
            disable_gc=disable_gc,
            clock=clock,
            flush=flush,
            profile=profile,
        )


def _measure(
    benchmark: Any,
    method: Method,
    problem: Problem,
    device: torch.device,
    *,
    copy: CopyBandwidth,
    device_name: str,
    budget_s: float,
    min_rounds: int,
    precision: float,
    monitor: environment.GpuMonitor | None,
    disable_gc: bool,
    clock: Clock,
    flush: Callable[[], None] | None,
    profile: bool,
) -> dict[str, Any]:
    lr, steps = problem.lr, problem.steps
    x0, t = problem.inputs(device)
    t = t.contiguous()

    synchronize(device)
    begin = time.perf_counter()
    method.prepare(x0, t, lr, steps)
    synchronize(device)
    setup_s = time.perf_counter() - begin

    oracle_err, tolerance = oracle_check(method, problem, x0, t)

    def fresh_copy() -> torch.Tensor:
        x = x0.clone(memory_format=torch.contiguous_format)
        synchronize(device)
        return x

    for _ in range(2):  # warm-up
        method.run(fresh_copy(), t, lr, steps)
        synchronize(device)

    events = _event_span(method, device)
    take_round = _round_taker(
        method, problem, device, t, fresh_copy, monitor, disable_gc, clock, events, flush
    )
    load_before = environment.load_average()
    stall_before, wall_before = environment.cpu_stall_total(), time.perf_counter()
    with PauseInstrumentation():  # a tracer or profiler (coverage) would time itself
        sampling = sample(
            take_round,
            precision=precision,
            budget_s=budget_s,
            min_rounds=min_rounds,
            clock=clock,
        )
    stall_after, wall = environment.cpu_stall_total(), time.perf_counter() - wall_before
    load_after = environment.load_average()
    stall = None
    if stall_before is not None and stall_after is not None and wall > 0:
        stall = min(1.0, max(0.0, (stall_after - stall_before) / wall))
    host_s = [r.host_s for r in sampling.kept]
    span_s = [r.span_s for r in sampling.kept if r.span_s is not None]
    record_rounds(benchmark, host_s)

    # Untimed passes, after the rounds: whatever the profiler leaves behind cannot touch them.
    passes: dict[str, Any] = {}
    if profile and device.type == "cuda":
        passes.update(_profiler_pass(method, problem, device, t, fresh_copy, flush))
        if method.outside_torch is None:  # torch's allocator sees the method's memory
            x = fresh_copy()
            passes.update(memory_pass(lambda: method.run(x, t, lr, steps), device))
            del x
    method.verify()  # e.g. compiled_graphs: inductor replayed CUDA graphs in every fit so far
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
        **derived_figures(problem, host_s, span_s or None, copy_gbs),
        **sampling_figures(sampling, steps, precision),
        "no_event_span_reason": method.outside_torch if device.type == "cuda" else None,
        **passes,
        "cache": "warm" if flush is None else "cold",
        "l2_flush_bytes": getattr(flush, "nbytes", None),
        "load_before": load_before,
        "load_after": load_after,
        "cpu_stall": stall,
        "busy": environment.busy((load_before, load_after), stall),
        "speedup_vs_autograd": None,
        "oracle_max_abs_err": oracle_err,
        "oracle_ok": oracle_err <= tolerance,  # False for NaN
    }
    return info


def record_rounds(benchmark: Any, host_s: list[float]) -> None:
    """Record the samples in pytest-benchmark's fixture as `benchmark.pedantic` does (its
    `_raw_pedantic` in pytest-benchmark 5.3.1's fixture.py: `stats = self._make_stats(iterations)`,
    then `stats.update(duration)` per round), and mark the fixture used, as pedantic does, so
    that a second use fails and an unused fixture is not warned about. pedantic itself cannot
    serve: it takes a fixed number of rounds and can be called once per test."""
    if getattr(benchmark, "_mode", None):
        raise RuntimeError(f"the benchmark fixture was used already ({benchmark._mode})")
    if not hasattr(benchmark, "_make_stats"):
        raise RuntimeError(
            "this pytest-benchmark has no BenchmarkFixture._make_stats: the samples cannot be "
            "recorded (vecreg-bench is written against pytest-benchmark 5.2 and 5.3)"
        )
    benchmark._mode = "vecreg-bench adaptive rounds"
    stats = benchmark._make_stats(1)  # one fit per round
    for duration in host_s:
        stats.update(duration)


def _profiler_pass(
    method: Method,
    problem: Problem,
    device: torch.device,
    t: torch.Tensor,
    fresh_copy: Callable[[], torch.Tensor],
    flush: Callable[[], None] | None,
) -> dict[str, Any]:
    """`kernel_profile` of the case's fits; {} with a warning where the profiler cannot record
    the GPU's work (no CUPTI), since a missing figure is better than a case lost to it."""
    if not cuda_profiling_supported():
        return {}
    copies: list[torch.Tensor] = []

    def prepare_fit() -> None:
        copies.append(fresh_copy())
        if flush is not None:
            flush()
            synchronize(device)

    def run_fit() -> Any:
        return method.run(copies.pop(), t, problem.lr, problem.steps)

    try:
        return kernel_profile(run_fit, prepare_fit, device, problem.steps)
    except RuntimeError as exc:  # the profiler's own failures; the fits ran before without it
        warnings.warn(
            f"{method.name} {problem.name}: no profiler figures ({exc})", RuntimeWarning, 2
        )
        return {}


def _round_taker(
    method: Method,
    problem: Problem,
    device: torch.device,
    t: torch.Tensor,
    fresh_copy: Callable[[], torch.Tensor],
    monitor: environment.GpuMonitor | None,
    disable_gc: bool,
    clock: Clock,
    events: EventSpan | None = None,
    flush: Callable[[], None] | None = None,
) -> Callable[[], Round]:
    """One round: a fresh copy of x0 and, in the cold regime, the L2 flush (untimed), the fit
    timed on the host clock until the device is done, between `events` (created and first
    recorded before: see EventSpan), then the GPU monitor's reading (untimed)."""
    lr, steps = problem.lr, problem.steps

    def take_round() -> Round:
        x = fresh_copy()
        if flush is not None:
            flush()
            synchronize(device)  # the flush is done before the clock starts
        gc_was_enabled = gc.isenabled()
        if disable_gc:
            gc.disable()
        try:
            begin = clock()
            if events is not None:
                events.begin()
            method.run(x, t, lr, steps)
            if events is not None:
                events.finish()
            synchronize(device)
            host_s = clock() - begin
        finally:
            if disable_gc and gc_was_enabled:
                gc.enable()
        span_s = events.seconds() if events is not None else None
        sm_clock, throttled = monitor.read() if monitor is not None else (None, False)
        return Round(host_s, span_s, sm_clock, throttled)

    return take_round
