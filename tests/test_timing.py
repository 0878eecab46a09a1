"""The timing engine, without asserting any speed: formulas, the copy yardstick, the oracle check,
and the pedantic protocol (fresh copy per round, outside the timed region)."""

import math
import time

import pytest
import torch

from bench.methods import Method, get_method
from bench.problem import Problem
from bench.results import CASE_FIELDS
from bench.timing import (
    NOISY_IQR_OVER_MEDIAN,
    CopyBandwidth,
    bytes_per_step,
    choose_rounds,
    derived_figures,
    measure,
    oracle_check,
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
    assert fig["device_time_per_step_s"] is None
    assert fig["iqr_over_median"] == pytest.approx(fig["time_per_step_iqr_s"] / 1e-4)
    assert fig["noisy"] is False


def test_noise_flag_and_device_time():
    problem = Problem(batch=2, dim=2, steps=10, lr=0.1)
    fig = derived_figures(problem, [1.0, 1.5, 1.0, 2.0, 1.0, 1.2], [0.5, 0.6, 0.4], copy_gbs=1.0)
    assert fig["iqr_over_median"] > NOISY_IQR_OVER_MEDIAN and fig["noisy"] is True
    assert fig["device_time_per_step_s"] == pytest.approx(0.05)


def test_rounds_fill_the_budget_within_bounds():
    assert choose_rounds(0.1, 1.0, 5) == 10
    assert choose_rounds(2.0, 1.0, 5) == 5
    assert choose_rounds(1e-9, 1.0, 5) == 10_000
    assert choose_rounds(0.0, 1.0, 5) == 10_000


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


class FakeBenchmark:
    """pytest-benchmark's pedantic protocol, as its source does it: setup() before each round,
    outside the timer; its (args, kwargs) go to target (timed) and then to teardown."""

    def __init__(self):
        self.stats = type("Meta", (), {"stats": type("S", (), {"data": []})()})()
        self.calls = []

    def pedantic(self, target, setup, teardown, rounds, warmup_rounds, iterations):
        assert iterations == 1
        for _ in range(warmup_rounds + rounds):
            args, kwargs = setup()
            self.calls.append("setup")
            begin = time.perf_counter()
            target(*args, **kwargs)
            self.stats.stats.data.append(time.perf_counter() - begin)
            teardown(*args, **kwargs)


class Recording(Method):
    """Analytic, checking that every timed run starts from an untouched copy of x0."""

    name = "recording"

    def __init__(self, x0):
        self.x0 = x0
        self.seen = []
        self.prepared = 0

    def prepare(self, x0, t, lr, steps):
        self.prepared += 1

    def run(self, x, t, lr, steps):
        self.seen.append((x.data_ptr(), bool(torch.equal(x, self.x0)), x.is_contiguous()))
        return get_method("analytic").run(x, t, lr, steps)


def test_measure_fills_every_case_field_from_fresh_copies():
    problem = Problem(batch=4, dim=33, steps=10, lr=1.6)
    x0, _ = problem.inputs("cpu")
    method = Recording(x0)
    bench = FakeBenchmark()
    info = measure(
        bench, method, problem, "cpu", copy=CopyBandwidth(0.001, 3), device_name="X", budget_s=0.0
    )
    assert set(info) == set(CASE_FIELDS)
    assert method.prepared == 1
    assert len(bench.stats.stats.data) == 5  # min_rounds, the budget being 0
    assert all(fresh and contiguous for _, fresh, contiguous in method.seen)
    assert info["oracle_ok"] is True and info["speedup_vs_autograd"] is None
    assert info["method"] == "recording" and info["device_name"] == "X"
    assert info["time_per_step_s"] > 0 and info["setup_s"] >= 0
