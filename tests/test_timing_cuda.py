"""The timing engine's CUDA paths on a real GPU: the profiler pass, the cold-cache flush, peak
memory, the current device of a case, and compiled_graphs' guard through a whole case. Every
test here needs CUDA (skipped with the reason elsewhere); their logic is tested with fakes in
tests/test_timing.py and tests/test_methods.py."""

import pytest
import torch
from test_timing import make_fixture

from bench import timing
from bench.methods import Method, get_method
from bench.problem import Problem
from bench.timing import (
    CUDA_PASS_FIELDS,
    PROFILE_FITS,
    CopyBandwidth,
    L2Flush,
    kernel_profile,
    measure,
    memory_pass,
)

pytestmark = pytest.mark.cuda

PROBLEM = Problem(batch=64, dim=1024, steps=20, lr=0.1)


def measure_case(method, problem=PROBLEM, device="cuda", **kwargs):
    return measure(
        make_fixture(),
        method,
        problem,
        device,
        copy=CopyBandwidth(0.001, 3),
        device_name="GPU",
        budget_s=0.05,
        **kwargs,
    )


def test_the_profiler_pass_counts_kernels_and_copies_and_their_busy_time():
    """Ten steps of one kernel (add_) and one device-to-device copy (cudaMemcpyAsync) each."""
    device = torch.device("cuda", torch.cuda.current_device())
    x = torch.zeros(2**20, device=device)
    y = torch.empty_like(x)

    def fit():
        for _ in range(10):
            x.add_(1.0)
            y.copy_(x)

    fit()
    torch.cuda.synchronize()
    figures = kernel_profile(fit, lambda: None, device, steps=10)
    assert figures["kernel_launches_per_step"] == 1.0
    assert figures["memory_ops_per_step"] == 1.0
    # 12 MiB moved per step: well under a millisecond on any GPU this harness meets.
    assert 0 < figures["gpu_busy_per_step_s"] < 1e-3


def test_a_cuda_case_has_span_busy_time_kernels_and_memory():
    info = measure_case(get_method("analytic"))
    assert set(CUDA_PASS_FIELDS) <= set(info)
    assert info["event_span_per_step_s"] > 0 and info["no_event_span_reason"] is None
    assert 0 < info["gpu_busy_per_step_s"] <= info["time_per_step_s"] * 1.5
    assert info["kernel_launches_per_step"] >= 3  # sub, sub_, square_ and mean, per step
    # The fit's own memory holds at least diff ([B, D] float32) and the trace.
    assert info["fit_memory_bytes"] >= 64 * 1024 * 4
    assert info["peak_memory_bytes"] >= info["fit_memory_bytes"]
    assert info["cache"] == "warm" and info["l2_flush_bytes"] is None


def test_jax_on_cuda_is_timed_by_the_host_clock_only():
    method = get_method("jax")
    reason = method.available("cuda")
    if reason is not None:
        pytest.skip(reason)
    info = measure_case(method)
    assert info["event_span_per_step_s"] is None
    assert "XLA" in info["no_event_span_reason"]
    assert "peak_memory_bytes" not in info  # XLA's allocator: not measured, not zero


class CountingFlush:
    def __init__(self, flush: L2Flush):
        self.flush, self.calls, self.nbytes = flush, 0, flush.nbytes

    def __call__(self):
        self.calls += 1
        self.flush()


def test_the_cold_regime_writes_an_l2_sized_buffer_before_each_timed_and_profiled_fit():
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    flush = L2Flush("cuda")
    assert flush.nbytes == properties.L2_cache_size > 0
    assert flush.buffer.is_cuda and flush.buffer.numel() * flush.buffer.element_size() == (
        flush.nbytes
    )
    counting = CountingFlush(flush)
    bench = make_fixture()
    info = measure(
        bench,
        get_method("analytic"),
        PROBLEM,
        "cuda",
        copy=CopyBandwidth(0.001, 3),
        device_name="GPU",
        budget_s=0.05,
        flush=counting,
    )
    assert counting.calls == len(bench.stats.stats.data) + PROFILE_FITS
    assert info["cache"] == "cold" and info["l2_flush_bytes"] == properties.L2_cache_size


def test_peak_memory_of_one_fit():
    device = torch.device("cuda", torch.cuda.current_device())
    held = torch.empty(2**20, device=device)  # 4 MiB allocated before the fit

    def fit():
        a = torch.empty(2**20, device=device)
        b = torch.empty(2**20, device=device)
        return a, b

    figures = memory_pass(fit, device)
    assert 2 * 4 * 2**20 <= figures["fit_memory_bytes"] < 3 * 4 * 2**20
    assert figures["peak_memory_bytes"] >= figures["fit_memory_bytes"] + 4 * 2**20
    del held


class Where(Method):
    """analytic, noting the current CUDA device at each fit."""

    name = "where"

    def __init__(self):
        self.devices = []

    def run(self, x, t, lr, steps):
        self.devices.append(torch.cuda.current_device())
        return get_method("analytic").run(x, t, lr, steps)


def test_a_case_on_cuda_n_runs_with_cuda_n_current():
    """With one GPU this is cuda:0 and proves little; with two or more, the last one."""
    index = torch.cuda.device_count() - 1
    before = torch.cuda.current_device()
    method = Where()
    info = measure_case(method, device=f"cuda:{index}")
    assert set(method.devices) == {index}
    assert info["event_span_per_step_s"] > 0
    assert torch.cuda.current_device() == before  # restored after the case


def test_timing_current_device_switches_and_restores():
    index = torch.cuda.device_count() - 1
    before = torch.cuda.current_device()
    with timing.current_device(torch.device("cuda", index)):
        assert torch.cuda.current_device() == index
    assert torch.cuda.current_device() == before


def test_a_compiled_graphs_case_whose_graphs_inductor_skipped_fails(monkeypatch):
    """Through the timing engine: the exception that bench/suite.py reports as the case's
    failure, with inductor's reason (its test switch makes it skip CUDA graphs)."""
    from bench.methods import compiled_graphs

    def step(x, t, lr):  # a code object of its own: compiled afresh, under the switch
        return compiled_graphs.step_in_place(x, t, lr)

    compiled = torch.compile(step, mode="reduce-overhead", dynamic=False, fullgraph=True)
    monkeypatch.setattr(compiled_graphs, "compiled_step_in_place", lambda: compiled)
    with (
        torch._inductor.config.patch(force_disable_cudagraph_TESTING_ONLY=True),
        torch.compiler.config.patch(force_disable_caches=True),  # the switch is no cache key
        pytest.raises(RuntimeError, match="inductor skipped CUDA graphs"),
    ):
        measure_case(compiled_graphs.CompiledGraphs(), Problem(batch=3, dim=257, steps=5))
