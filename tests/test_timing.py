"""The timing engine, without asserting any speed: formulas, the copy yardstick, the oracle check,
the adaptive rounds (driven by a fake clock: nothing real is timed) and how they reach
pytest-benchmark's fixture."""

import contextlib
import itertools
import math
import random
import types

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench import stats, timing
from bench.methods import Method, get_method
from bench.problem import Problem
from bench.results import CASE_FIELDS
from bench.timing import (
    CUDA_PASS_FIELDS,
    GROWTH,
    MIN_PRECISE_ROUNDS,
    NOISY_IQR_OVER_MEDIAN,
    PROFILE_FITS,
    CopyBandwidth,
    EventSpan,
    L2Flush,
    Round,
    _round_taker,
    bytes_per_step,
    derived_figures,
    kernel_profile,
    measure,
    memory_pass,
    oracle_check,
    sample,
    summarize_kernels,
)


@pytest.mark.parametrize(
    ("dtype", "itemsize"), [("float32", 4), ("bfloat16", 2), ("float16", 2), ("float64", 8)]
)
def test_bytes_per_step_reads_x_and_t_and_writes_x(dtype, itemsize):
    problem = Problem(batch=3, dim=257, steps=7, lr=0.1, dtype=dtype)
    assert bytes_per_step(problem) == 3 * itemsize * 3 * 257


def test_derived_figures_follow_the_formulas():
    problem = Problem(batch=1000, dim=1000, steps=100, lr=0.1)  # 12e6 bytes per step
    samples = [0.010, 0.011, 0.009, 0.010, 0.010]  # seconds per fit: 1e-4 s per step
    fig = derived_figures(problem, samples, None, copy_gbs=240.0)
    assert fig["time_per_step_s"] == pytest.approx(1e-4)
    assert fig["bytes_per_step"] == 12_000_000
    assert fig["bandwidth_gbs"] == pytest.approx(120.0)  # 12e6 B / 1e-4 s
    assert fig["copy_fraction"] == pytest.approx(0.5)
    assert fig["elements_steps_per_s"] == pytest.approx(1e6 * 100 / 0.010)
    assert fig["event_span_per_step_s"] is None
    assert fig["iqr_over_median"] == pytest.approx(fig["time_per_step_iqr_s"] / 1e-4)
    assert fig["noisy"] is False


def test_noise_flag_and_event_span():
    problem = Problem(batch=2, dim=2, steps=10, lr=0.1)
    fig = derived_figures(problem, [1.0, 1.5, 1.0, 2.0, 1.0, 1.2], [0.5, 0.6, 0.4], copy_gbs=1.0)
    assert fig["iqr_over_median"] > NOISY_IQR_OVER_MEDIAN and fig["noisy"] is True
    assert fig["event_span_per_step_s"] == pytest.approx(0.05)


def test_median_and_iqr_are_bench_stats_not_pytest_benchmarks():
    """One definition of the quartiles everywhere (numpy's); pytest-benchmark's differ here."""
    samples = [1.0, 2.0, 3.0, 4.0, 10.0, 11.0]
    fig = derived_figures(Problem(batch=2, dim=2, steps=1, lr=0.1), samples, None, copy_gbs=1.0)
    q1, median, q3 = np.quantile(samples, [0.25, 0.5, 0.75])
    assert fig["time_per_step_s"] == median
    assert fig["time_per_step_iqr_s"] == pytest.approx(q3 - q1)
    assert fig["iqr_over_median"] == pytest.approx(stats.iqr_over_median(samples))


def test_copy_bandwidth_is_measured_once_per_device_and_size(monkeypatch):
    copy = CopyBandwidth(budget_s=0.001, samples=3)
    calls = []
    real = copy._measure
    monkeypatch.setattr(copy, "_measure", lambda d, n, t: calls.append(n) or real(d, n, t))
    first = copy.gbs(torch.device("cpu"), 4096)
    assert first > 0 and math.isfinite(first)
    assert copy.gbs(torch.device("cpu"), 4096) == first
    copy.gbs(torch.device("cpu"), 8192)
    assert calls == [4096, 8192]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_oracle_check_passes_a_right_method_and_catches_a_wrong_one(dtype):
    problem = Problem(batch=4, dim=33, steps=20, lr=1.6, dtype=dtype)
    x0, t = problem.inputs("cpu")
    err, tol = oracle_check(get_method("analytic"), problem, x0, t)
    assert err <= tol

    class Shifted(Method):
        name = "shifted"

        def run(self, x, t, lr, steps):
            loss = get_method("analytic").run(x, t, lr, steps)
            x.add_(10)
            return loss

    err, tol = oracle_check(Shifted(), problem, x0, t)
    assert err > tol


# --- adaptive rounds, on a fake clock -----------------------------------------------------------


class FakeClock:
    """A clock that moves only when told: a fit "takes" what the test says it takes."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rounds_of(durations, clock: FakeClock, throttled=lambda i: False):
    """A take_round that advances the clock by the next duration and reports it."""
    taken = []

    def take_round() -> Round:
        i = len(taken)
        duration = next(durations)
        clock.now += duration
        taken.append(duration)
        return Round(duration, throttled=throttled(i))

    return take_round, taken


def steady():
    while True:
        yield 0.010


def noisy(seed=0, sigma=0.5):
    rng = random.Random(seed)
    while True:
        yield 0.010 * math.exp(rng.gauss(0, sigma))


def test_a_steady_timer_stops_as_soon_as_the_interval_can_be_trusted():
    clock = FakeClock()
    take_round, taken = rounds_of(steady(), clock)
    result = sample(take_round, precision=0.02, budget_s=10.0, min_rounds=5, clock=clock)
    # min_rounds, then one batch of GROWTH: the first batch at which 6 samples (MIN_PRECISE_ROUNDS:
    # the extremes of 6 cover the median 96.9% of the time, of 5 only 93.8%) can be trusted.
    assert result.precise and len(taken) == 7 and MIN_PRECISE_ROUNDS == 6
    assert result.interval.relative_halfwidth() == 0.0 and result.elapsed_s == pytest.approx(0.07)
    assert result.kept == result.rounds and result.throttled_rounds == 0


def test_a_noisy_timer_runs_to_its_budget_in_geometrically_growing_batches(monkeypatch):
    clock = FakeClock()
    take_round, taken = rounds_of(noisy(), clock)
    checks = []
    real = stats.median_interval
    monkeypatch.setattr(stats, "median_interval", lambda s: checks.append(len(s)) or real(s))
    result = sample(take_round, precision=0.02, budget_s=1.0, min_rounds=5, clock=clock)
    assert not result.precise and result.interval.relative_halfwidth() > 0.02
    # The budget, not much more: the last batch is sized to what was left of it.
    assert 1.0 <= result.elapsed_s < 1.1
    assert len(taken) > 50 and checks[-1] == len(taken)
    # Checked after each batch, each GROWTH times the rounds before it (the last one capped by
    # the budget): O(log n) checks in all.
    assert checks[0] == 5
    grown = [b / a for a, b in itertools.pairwise(checks[:-1])]
    assert all(g == pytest.approx(GROWTH, abs=0.1) for g in grown[4:])
    assert len(checks) < 4 * math.log(len(taken))


def test_a_noisy_timer_with_budget_to_spare_stops_at_the_precision():
    clock = FakeClock()
    take_round, taken = rounds_of(noisy(sigma=0.1), clock)
    result = sample(take_round, precision=0.02, budget_s=1000.0, min_rounds=5, clock=clock)
    assert result.precise and result.interval.relative_halfwidth() <= 0.02
    # Known to +-2% at a median of 10 ms: a hundred or so rounds, far below the budget.
    assert 50 < len(taken) < 1000 and result.elapsed_s < 20


def test_min_rounds_take_precedence_over_the_budget_and_max_rounds_bound_it():
    clock = FakeClock()
    take_round, taken = rounds_of(iter([2.0] * 20), clock)
    result = sample(take_round, precision=0.02, budget_s=1.0, min_rounds=7, clock=clock)
    assert len(taken) == 7 and result.precise  # equal samples: a zero-width interval
    take_round, taken = rounds_of(noisy(), clock)
    result = sample(
        take_round, precision=0.0, budget_s=1e9, min_rounds=5, clock=clock, max_rounds=60
    )
    assert len(taken) == 60 and not result.precise


def test_fewer_rounds_than_an_interval_needs_are_never_precise():
    clock = FakeClock()
    take_round, taken = rounds_of(steady(), clock)
    result = sample(take_round, precision=0.02, budget_s=0.02, min_rounds=1, clock=clock)
    assert len(taken) == 2 and not result.precise  # the budget ran out at 2 equal samples


def test_throttled_rounds_are_left_out_and_counted():
    clock = FakeClock()
    slow = {3, 4, 10}  # these rounds are throttled, and slow

    def durations():
        i = 0
        while True:
            yield 0.050 if i in slow else 0.010
            i += 1

    take_round, taken = rounds_of(durations(), clock, throttled=lambda i: i in slow)
    result = sample(take_round, precision=0.02, budget_s=10.0, min_rounds=5, clock=clock)
    assert result.precise and result.throttled_rounds == 2 and len(taken) == 8  # 6 unthrottled
    assert all(r.host_s == 0.010 for r in result.kept) and not result.throttled_kept


def test_a_gpu_throttled_all_along_keeps_its_rounds_and_says_so():
    clock = FakeClock()
    take_round, taken = rounds_of(noisy(sigma=0.01), clock, throttled=lambda i: True)
    result = sample(take_round, precision=0.02, budget_s=0.2, min_rounds=5, clock=clock)
    assert not result.precise and result.kept == result.rounds
    assert result.throttled_rounds == len(taken) and result.throttled_kept


def make_fixture() -> BenchmarkFixture:
    """pytest-benchmark's own fixture, as its plugin builds it for a test (5.x signature)."""
    return BenchmarkFixture(
        types.SimpleNamespace(name="test_fit", nodeid="suite.py::test_fit"),
        disable_gc=False,
        timer=types.SimpleNamespace(target=lambda: 0.0),
        min_rounds=5,
        min_time=0.000005,
        max_time=1.0,
        precision=None,
        confidence=None,
        warmup=False,
        warmup_iterations=0,
        calibration_precision=10,
        add_stats=lambda stats: None,
        logger=None,
        warner=None,
        disabled=False,
        cprofile=False,
        cprofile_loops=None,
        cprofile_dump=None,
    )


class Timed(Method):
    """Analytic, whose timed fits take what `durations` says on a fake clock; it checks that
    every fit starts from an untouched contiguous copy of x0."""

    name = "timed"

    def __init__(self, x0, clock, durations):
        self.x0, self.clock, self.durations = x0, clock, durations
        self.seen = []
        self.prepared = 0

    def prepare(self, x0, t, lr, steps):
        self.prepared += 1

    def run(self, x, t, lr, steps):
        self.seen.append((x.data_ptr(), bool(torch.equal(x, self.x0)), x.is_contiguous()))
        self.clock.now += next(self.durations)
        return get_method("analytic").run(x, t, lr, steps)


class Monitor:
    """A GPU monitor whose every third reading is power-capped."""

    def __init__(self):
        self.reads = 0

    def read(self):
        self.reads += 1
        return (1980 if self.reads % 3 else 1410), self.reads % 3 == 0


@pytest.mark.parametrize(("durations", "precise"), [(steady, True), (noisy, False)])
def test_measure_takes_adaptive_rounds_and_records_them_in_the_fixture(durations, precise):
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    method = Timed(x0, clock, durations())
    bench = make_fixture()
    info = measure(
        bench,
        method,
        problem,
        "cpu",
        copy=CopyBandwidth(0.001, 3),
        device_name="X",
        budget_s=0.5,
        clock=clock,
    )
    # Every field is one of the results model's; the CUDA passes' figures are absent on the CPU,
    # not zero (other optional fields, such as bench.scale's, belong to other kinds of case).
    assert set(info) <= set(CASE_FIELDS) and not set(info) & set(CUDA_PASS_FIELDS)
    timing_fields = list(CASE_FIELDS)[: list(CASE_FIELDS).index("sm_clock_max_mhz") + 1]
    assert set(timing_fields) <= set(info)
    assert info["event_span_per_step_s"] is None and info["no_event_span_reason"] is None
    assert info["cache"] == "warm" and info["l2_flush_bytes"] is None
    assert method.prepared == 1
    assert all(fresh and contiguous for _, fresh, contiguous in method.seen)
    data = bench.stats.stats.data  # what pytest-benchmark writes as the raw samples
    assert len(data) == len(method.seen) - 3  # the oracle fit and two warm-ups are not samples
    assert bench._mode  # used: a second use of the fixture fails, no "unused" warning
    interval = stats.median_interval(data)
    assert info["imprecise"] is (not precise) and info["precision_target"] == 0.02
    assert info["precision"] == pytest.approx(interval.relative_halfwidth())
    assert info["time_per_step_low_s"] == pytest.approx(interval.low / 10)
    assert info["time_per_step_high_s"] == pytest.approx(interval.high / 10)
    assert info["time_per_step_low_s"] <= info["time_per_step_s"] <= info["time_per_step_high_s"]
    if precise:
        assert data == pytest.approx([0.010] * 7) and info["precision"] < 1e-9
    else:
        assert sum(data) >= 0.5 and info["precision"] > 0.02
    assert info["throttled_rounds"] is None and info["sm_clock_min_mhz"] is None  # no GPU
    assert info["oracle_ok"] is True and info["speedup_vs_autograd"] is None
    assert info["method"] == "timed" and info["device_name"] == "X"
    assert info["time_per_step_s"] > 0 and info["setup_s"] >= 0
    with pytest.raises(RuntimeError, match="used already"):
        measure(bench, method, problem, "cpu", copy=CopyBandwidth(0.001, 3), device_name="X")


def test_measure_leaves_out_throttled_rounds_and_records_the_clocks():
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    method, bench, monitor = Timed(x0, clock, steady()), make_fixture(), Monitor()
    info = measure(
        bench,
        method,
        problem,
        "cpu",
        copy=CopyBandwidth(0.001, 3),
        device_name="X",
        clock=clock,
        monitor=monitor,
    )
    # 5 rounds (1 throttled), 2 more (1 throttled), 2 more (1 throttled): 6 unthrottled kept.
    assert monitor.reads == 9 and info["throttled_rounds"] == 3 and info["throttled"] is False
    assert len(bench.stats.stats.data) == 6
    assert (info["sm_clock_min_mhz"], info["sm_clock_max_mhz"]) == (1410, 1980)


def test_measure_records_the_load_and_flags_a_busy_machine(monkeypatch):
    from bench import environment

    loads = iter([0.5, 64.0])
    monkeypatch.setattr(environment, "load_average", lambda: next(loads))
    monkeypatch.setattr(environment, "cpu_stall_total", lambda: None)  # no CPU pressure known
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    info = measure(
        make_fixture(),
        Timed(x0, clock, steady()),
        problem,
        "cpu",
        copy=CopyBandwidth(0.001, 3),
        device_name="X",
        clock=clock,
    )
    assert (info["load_before"], info["load_after"], info["busy"]) == (0.5, 64.0, True)
    assert info["cpu_stall"] is None


def test_measure_records_the_cpu_pressure_during_the_rounds(monkeypatch):
    """Some task waited for a CPU during all of the rounds' (real) time: busy, whatever the load."""
    from bench import environment

    stalled = iter([100.0, 1e9])
    monkeypatch.setattr(environment, "cpu_stall_total", lambda: next(stalled))
    monkeypatch.setattr(environment, "load_average", lambda: 0.0)
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    info = measure(
        make_fixture(),
        Timed(x0, clock, steady()),
        problem,
        "cpu",
        copy=CopyBandwidth(0.001, 3),
        device_name="X",
        clock=clock,
    )
    assert info["cpu_stall"] == 1.0 and info["busy"] is True


# --- events, the cold-cache flush, the profiler and memory passes, with fakes --------------------


class Log(list):
    """What happened, in order: the fakes below append to it."""


class LoggedClock(FakeClock):
    def __init__(self, log: Log):
        super().__init__()
        self.log = log

    def __call__(self) -> float:
        self.log.append("clock")
        return self.now


class FakeEvent:
    """torch.cuda.Event's life as torch 2.14 has it: the CUDA event is created at the first
    record(). Counts the objects and logs each creation of a CUDA event and each record."""

    made = 0

    def __init__(self, log: Log, enable_timing: bool = False):
        assert enable_timing
        type(self).made += 1
        self.log, self.recorded, self.streams = log, 0, []
        self.log.append("new Event")

    def record(self, stream=None):
        if not self.recorded:
            self.log.append("cudaEventCreate")
        self.recorded += 1
        self.streams.append(stream)
        self.log.append("record")

    def synchronize(self):
        self.log.append("event sync")

    def elapsed_time(self, end):
        return 4.0  # milliseconds


def fake_events(log: Log, stream="stream"):
    FakeEvent.made = 0
    return EventSpan(stream, event_class=lambda **kw: FakeEvent(log, **kw))


def timed_regions(log: Log) -> list[list[str]]:
    """The entries between each "clock" that starts a fit ("run" follows) and the next "clock"."""
    regions = []
    for i, entry in enumerate(log):
        if entry != "run":
            continue
        begin = max(j for j in range(i) if log[j] == "clock")
        end = min(j for j in range(i, len(log)) if log[j] == "clock")
        regions.append(log[begin + 1 : end])
    return regions


class LoggedRun(Method):
    name = "logged"

    def __init__(self, log: Log, clock: FakeClock | None = None):
        self.log, self.clock = log, clock

    def prepare(self, x0, t, lr, steps):
        pass

    def run(self, x, t, lr, steps):
        self.log.append("run")
        if self.clock is not None:
            self.clock.now += 0.010
        return get_method("analytic").run(x, t, lr, steps)


def test_events_are_created_and_first_recorded_before_the_timed_region():
    """No round pays for creating an event: both are made and recorded once, untimed, and a timed
    region holds only the two records around the fit."""
    log = Log()
    events = fake_events(log)
    assert FakeEvent.made == 2 and log.count("cudaEventCreate") == 2
    assert log[-1] == "event sync"  # the first records are done before any fit starts
    setup = len(log)
    problem = Problem(batch=2, dim=3, steps=4, lr=0.1)
    x0, t = problem.inputs("cpu")
    clock = LoggedClock(log)
    take_round = _round_taker(
        LoggedRun(log, clock), problem, torch.device("cpu"), t, x0.clone, None, False, clock, events
    )
    rounds = [take_round() for _ in range(5)]
    assert FakeEvent.made == 2 and log[setup:].count("cudaEventCreate") == 0
    assert timed_regions(log) == [["record", "run", "record"]] * 5
    assert all(r.span_s == 0.004 for r in rounds)
    assert events.start.streams == events.end.streams == ["stream"] * 6  # the one stream


def test_measure_creates_two_events_per_case_however_many_rounds(monkeypatch):
    log = Log()
    monkeypatch.setattr(timing, "_event_span", lambda method, device: fake_events(log))
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    bench = make_fixture()
    info = measure(
        bench,
        Timed(x0, clock, noisy()),
        problem,
        "cpu",
        copy=CopyBandwidth(0.001, 3),
        device_name="X",
        budget_s=0.5,
        clock=clock,
    )
    rounds = len(bench.stats.stats.data)
    assert rounds > 20 and FakeEvent.made == 2 and log.count("cudaEventCreate") == 2
    assert log.count("record") == 2 + 2 * rounds
    assert info["event_span_per_step_s"] == pytest.approx(0.004 / 10)


def test_jax_gets_no_events_and_says_why():
    """XLA runs jax's scan on its own stream: events on torch's would not bracket it."""
    jax = get_method("jax")
    assert "host clock only" in jax.outside_torch and "XLA" in jax.outside_torch
    assert timing._event_span(jax, torch.device("cuda")) is None  # decided before any CUDA call
    assert timing._event_span(get_method("analytic"), torch.device("cpu")) is None


def test_the_l2_flush_buffer_is_sized_from_the_device_properties():
    seen = []

    def properties(device):
        seen.append(device)
        return types.SimpleNamespace(L2_cache_size=50 * 2**20 + 123)  # not a round size

    flush = L2Flush("cpu", properties=properties)
    assert seen == [torch.device("cpu")]
    assert flush.nbytes == 50 * 2**20 + 123
    assert flush.buffer.dtype == torch.uint8 and flush.buffer.numel() == flush.nbytes
    flush.buffer.fill_(7)
    flush()
    assert not flush.buffer.any()  # every byte written
    with pytest.raises(ValueError, match="none to flush"):
        L2Flush("cpu", properties=lambda d: types.SimpleNamespace(L2_cache_size=0))


def test_the_cold_regime_is_refused_without_a_gpu():
    with pytest.raises(ValueError) as info:
        L2Flush("cpu")
    assert "L2" in str(info.value) and "--cache warm" in str(info.value)


class FakeFlush:
    nbytes = 52_428_800

    def __init__(self, log: Log):
        self.log, self.calls = log, 0

    def __call__(self):
        self.calls += 1
        self.log.append("flush")


def test_the_flush_comes_before_the_clock_starts_in_every_round():
    log = Log()
    problem = Problem(batch=2, dim=3, steps=4, lr=0.1)
    x0, t = problem.inputs("cpu")
    clock, flush = LoggedClock(log), FakeFlush(log)

    def fresh():
        log.append("copy")
        return x0.clone()

    take_round = _round_taker(
        LoggedRun(log, clock),
        problem,
        torch.device("cpu"),
        t,
        fresh,
        None,
        False,
        clock,
        None,
        flush,
    )
    for _ in range(3):
        take_round()
    assert log == ["copy", "flush", "clock", "run", "clock"] * 3  # copy, then flush: x cold too


def test_measure_in_the_cold_regime_flushes_before_each_timed_fit_and_records_it():
    log = Log()
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    flush, bench = FakeFlush(log), make_fixture()
    info = measure(
        bench,
        Timed(x0, clock, steady()),
        problem,
        "cpu",
        copy=CopyBandwidth(0.001, 3),
        device_name="X",
        clock=clock,
        flush=flush,
    )
    assert flush.calls == len(bench.stats.stats.data)  # not before the oracle fit or warm-ups
    assert info["cache"] == "cold" and info["l2_flush_bytes"] == FakeFlush.nbytes


class KinetoEvent:
    """The parts of torch's _KinetoEvent that the summary reads."""

    def __init__(self, kind, start_ns, end_ns, device="cuda", index=0, name="k"):
        from torch.autograd import DeviceType

        self._kind, self._start, self._end, self._index, self._name = (
            kind,
            start_ns,
            end_ns,
            index,
            name,
        )
        self._device = DeviceType.CUDA if device == "cuda" else DeviceType.CPU

    def device_type(self):
        return self._device

    def device_index(self):
        return self._index

    def activity_type(self):
        return self._kind

    def start_ns(self):
        return self._start

    def end_ns(self):
        return self._end

    def name(self):
        return self._name


def one_fit_profile(offset=0):
    """Two kernels on two streams overlapping (100..300 and 200..400: busy 300), a copy after a
    gap (500..550), a memset inside a kernel (250..260: no extra busy time); and what is no work
    of the fit: a synchronization record, a user annotation, a CPU op, a kernel on GPU 1."""
    return [
        KinetoEvent("kernel", offset + 100, offset + 300),
        KinetoEvent("kernel", offset + 200, offset + 400),
        KinetoEvent("gpu_memcpy", offset + 500, offset + 550),
        KinetoEvent("gpu_memset", offset + 250, offset + 260),
        KinetoEvent("cuda_sync", offset + 0, offset + 1000, name="Context Sync"),
        KinetoEvent("gpu_user_annotation", offset + 0, offset + 1000),
        KinetoEvent("cpu_op", offset + 0, offset + 1000, device="cpu", index=-1),
        KinetoEvent("kernel", offset + 0, offset + 1000, index=1),
    ]


def test_the_profile_summary_counts_the_fits_work_on_its_gpu():
    summary = summarize_kernels(one_fit_profile(), device_index=0)
    assert summary.busy_s == pytest.approx(350e-9)  # the union: 300 + 50, not 200+200+50+10
    assert (summary.kernels, summary.memory_ops) == (2, 2)
    assert summarize_kernels(one_fit_profile(), device_index=None).kernels == 3  # any GPU
    # Nothing recorded (no CUPTI): no figure, not zero.
    assert summarize_kernels([KinetoEvent("cpu_op", 0, 9, device="cpu")], 0) is None
    assert summarize_kernels([], 0) is None


class FakeProfile:
    """torch.profiler.profile as the pass uses it: a context manager; its events come from the
    list of per-session profiles given."""

    def __init__(self, log: Log, profiles):
        self.log, self.profiles = log, list(profiles)

    def __call__(self):
        return self

    def __enter__(self):
        self.log.append("profile on")
        return self.profiles.pop(0)

    def __exit__(self, *exc):
        self.log.append("profile off")
        return False


def test_the_profiler_pass_profiles_each_fit_alone_and_keeps_the_medians(monkeypatch):
    log = Log()
    monkeypatch.setattr(timing, "synchronize", lambda device: log.append("sync"))
    sessions = [one_fit_profile(), one_fit_profile(10_000), one_fit_profile()[:2]]
    figures = kernel_profile(
        lambda: log.append("run"),
        lambda: log.append("copy and flush"),
        torch.device("cuda", 0),
        steps=10,
        profile=FakeProfile(log, sessions),
        events_of=lambda events: events,
    )
    assert log == ["copy and flush", "profile on", "run", "sync", "profile off"] * 3
    assert figures["gpu_busy_per_step_s"] == pytest.approx(350e-9 / 10)  # median of 350, 350, 300
    assert figures["kernel_launches_per_step"] == pytest.approx(0.2)
    assert figures["memory_ops_per_step"] == pytest.approx(0.2)  # median of 2, 2, 0
    silent = kernel_profile(
        lambda: None,
        lambda: None,
        torch.device("cuda", 0),
        steps=10,
        profile=FakeProfile(log, [[]] * 3),
        events_of=lambda events: events,
    )
    assert silent == {}  # absent, not zero


class FakeAllocatorStats:
    """torch.cuda's peak-memory functions: 300 bytes held before the fit; the fit peaks at 1300."""

    def __init__(self, log: Log):
        self.log, self.allocated, self.peak = log, 300, 5000  # a peak from before the fit

    def reset_peak_memory_stats(self, device):
        self.log.append("reset")
        self.peak = self.allocated

    def memory_allocated(self, device):
        return self.allocated

    def max_memory_allocated(self, device):
        self.log.append("max")
        return self.peak

    def fit(self):
        self.log.append("run")
        self.peak = max(self.peak, self.allocated + 1000)


def test_the_memory_pass_resets_the_peak_before_the_fit():
    log = Log()
    cuda = FakeAllocatorStats(log)
    figures = memory_pass(cuda.fit, torch.device("cpu"), cuda=cuda)
    assert log == ["reset", "run", "max"]
    assert figures == {"peak_memory_bytes": 1300, "fit_memory_bytes": 1000}


def test_a_case_runs_with_its_device_as_the_current_cuda_device():
    assert isinstance(timing.current_device(torch.device("cpu")), contextlib.nullcontext)
    guard = timing.current_device(torch.device("cuda", 1))  # made, not entered: no CUDA here
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1


def test_measure_fails_a_method_that_did_not_run_as_it_claims():
    class Pretender(Timed):
        def verify(self):
            raise RuntimeError("inductor skipped CUDA graphs")

    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="skipped CUDA graphs"):
        measure(
            make_fixture(),
            Pretender(x0, clock, steady()),
            problem,
            "cpu",
            copy=CopyBandwidth(0.001, 3),
            device_name="X",
            clock=clock,
        )


def test_the_profiler_pass_of_a_case_keeps_copies_and_flushes_out_of_the_sessions(monkeypatch):
    """bench.timing's own pass, with torch.profiler faked: each profiled fit gets a fresh copy of
    x0 and, cold, the flush, both before its session opens; a profiler that fails costs the
    figures (a warning), not the case."""
    log = Log()
    monkeypatch.setattr(timing, "cuda_profiling_supported", lambda: True)
    monkeypatch.setattr(timing, "_cuda_profile", FakeProfile(log, [one_fit_profile()] * 3))
    monkeypatch.setattr(timing, "_profile_events", lambda events: events)
    problem = Problem(batch=2, dim=3, steps=10, lr=0.1)
    x0, t = problem.inputs("cpu")

    def fresh():
        log.append("copy")
        return x0.clone()

    figures = timing._profiler_pass(
        LoggedRun(log), problem, torch.device("cpu"), t, fresh, FakeFlush(log)
    )
    assert log == ["copy", "flush", "profile on", "run", "profile off"] * PROFILE_FITS
    assert figures["kernel_launches_per_step"] == pytest.approx(0.3)  # no index: every GPU's

    def broken():
        raise RuntimeError("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES")

    monkeypatch.setattr(timing, "_cuda_profile", broken)
    with pytest.warns(RuntimeWarning, match="no profiler figures.*CUPTI"):
        assert (
            timing._profiler_pass(LoggedRun(log), problem, torch.device("cpu"), t, fresh, None)
            == {}
        )
    monkeypatch.setattr(timing, "cuda_profiling_supported", lambda: False)
    assert timing._profiler_pass(LoggedRun(log), problem, torch.device("cpu"), t, fresh, None) == {}
