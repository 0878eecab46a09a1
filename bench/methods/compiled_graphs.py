"""torch.compile(mode="reduce-overhead") of one analytic step: inductor's kernels replayed as a
CUDA graph per step (cudagraph trees), so each step costs one graph launch from the host.

The step updates static buffers in place (x, t and lr marked as static addresses, reused across
fits of one shape and dtype), so a replay copies no inputs; only the 0-dim loss comes out, and it
is copied into the trace before the next replay overwrites it.

Inductor may skip CUDA graphs and run its kernels one by one instead, with no more than a log
warning (an input mutation it cannot prove safe, a CPU tensor, a dynamic shape, a re-recording
limit), which pytest captures and a benchmark run's log buries. That would time something else
under this name, so the method fails loudly instead: `CudagraphSkips` watches inductor's count
of skips over a case's fits (`prepare` to `verify`) and the case fails with inductor's reason.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from bench.methods.base import Method, as_compute, compute_dtype
from bench.methods.compiled import raise_recompile_limit

# Static buffers per device, dtype and shape; a sweep visits many shapes: keep the latest few.
MAX_BUFFERS = 4


def step_in_place(x: torch.Tensor, t: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """One analytic step on x in place; returns the loss at x before the step."""
    acc = compute_dtype(x.dtype)
    x_acc = x.to(acc)
    diff = x_acc - t.to(acc)
    x.copy_((x_acc - (2.0 / x.shape[1]) * lr * diff).to(x.dtype))
    return diff.square().mean()


@functools.cache
def compiled_step_in_place():
    raise_recompile_limit()
    return torch.compile(step_in_place, mode="reduce-overhead", dynamic=False, fullgraph=True)


class CudagraphSkips:
    """Inductor's count of skipped CUDA graphs, and the reasons it gave.

    In torch 2.14 every place that decides against CUDA graphs, at compile time
    (torch/_inductor/output_code.py `cudagraph_post_compile`, compile_fx.py) or at run time
    (cudagraph_trees.py: a mutated input that cudagraphs does not manage, the re-recording limit),
    calls `log_cudagraph_skip_and_bump_counter(msg)` in torch/_inductor/cudagraph_utils.py:
    `counters["inductor"]["cudagraph_skips"] += 1` (torch._dynamo.utils.counters) and a warning
    "skipping cudagraphs due to ..." on its artifact logger `cudagraphs_log`
    (torch._inductor.cudagraph_utils.__cudagraphs). The count is the test; a handler on that
    logger keeps the reasons. `counters` and `logger` stand for torch's (a test's fakes)."""

    KEY = ("inductor", "cudagraph_skips")

    def __init__(
        self, counters: Mapping[str, Mapping[str, int]] | None = None, logger: Any = None
    ) -> None:
        if counters is None:
            from torch._dynamo.utils import counters
        if logger is None:
            from torch._inductor.cudagraph_utils import cudagraphs_log as logger
        self.counters = counters
        self.reasons: list[str] = []
        logger.addHandler(_Collect(self.reasons))

    def count(self) -> int:
        group, name = self.KEY
        return int(self.counters[group][name])

    def mark(self) -> tuple[int, int]:
        """Where the count and the reasons stand now."""
        return self.count(), len(self.reasons)

    def since(self, mark: tuple[int, int]) -> str | None:
        """None if no skip was counted since `mark`, else what inductor said of it."""
        count, said = mark
        if self.count() <= count:
            return None
        reasons = list(dict.fromkeys(self.reasons[said:]))
        if not reasons:
            return f"counters{list(self.KEY)} rose by {self.count() - count}, no reason logged"
        return "; ".join(reasons)


class _Collect(logging.Handler):
    """Keeps the messages of a logger's warnings."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@functools.cache
def cudagraph_skips() -> CudagraphSkips:
    return CudagraphSkips()


def skipped_message(reason: str) -> str:
    return (
        "inductor skipped CUDA graphs, so this would time its kernels launched one by one, not "
        f"graph replays: {reason}"
    )


def static_buffers(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x, t and lr buffers whose addresses cudagraphs may bake in: they are updated, not copied."""
    buffers = (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(t, memory_format=torch.contiguous_format),
        torch.zeros((), dtype=compute_dtype(x.dtype), device=x.device),
    )
    for buffer in buffers:
        torch._dynamo.mark_static_address(buffer)
    return buffers


class CompiledGraphs(Method):
    name = "compiled_graphs"
    summary = 'torch.compile(mode="reduce-overhead") of one step: a CUDA graph replay per step'

    def __init__(self, skips: CudagraphSkips | None = None) -> None:
        self._buffers: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()
        self._skips = skips
        # Per device, dtype and shape: why inductor skipped CUDA graphs for it. A shape compiled
        # once stays compiled without graphs, and a later case of it counts no new skip.
        self.skipped: dict[tuple, str] = {}
        self._watch: tuple[tuple, tuple[int, int]] | None = None  # (shape key, mark)

    @property
    def skips(self) -> CudagraphSkips:
        if self._skips is None:
            self._skips = cudagraph_skips()
        return self._skips

    def available(self, device: str | torch.device) -> str | None:
        if torch.device(device).type != "cuda":
            return 'mode="reduce-overhead" replays CUDA graphs: it needs a CUDA device'
        return None

    def _static(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = (x.device, x.dtype, tuple(x.shape))
        if key in self._buffers:
            self._buffers.move_to_end(key)
        else:
            while len(self._buffers) >= MAX_BUFFERS:
                self._buffers.popitem(last=False)
            self._buffers[key] = static_buffers(x, t)
        return self._buffers[key]

    def prepare(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
        """Compile, warm up and record (cudagraph trees record on the second call, replay from
        the third): a few steps, untimed. RuntimeError if inductor skipped CUDA graphs for this
        shape, now or before; `verify` checks the fits that follow."""
        key = (x0.device, x0.dtype, tuple(x0.shape))
        if key in self.skipped:
            raise RuntimeError(skipped_message(self.skipped[key]))
        self._watch = (key, self.skips.mark())
        self.fit(x0, t, lr, min(steps, 3))
        self.verify()

    def verify(self) -> None:
        """RuntimeError with inductor's reason if it skipped CUDA graphs since `prepare`."""
        if self._watch is None:
            return
        key, mark = self._watch
        reason = self.skips.since(mark)
        if reason is not None:
            self.skipped[key] = reason
            raise RuntimeError(skipped_message(reason))

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        return run_steps(compiled_step_in_place(), self._static(x, t), x, t, lr, steps)


def run_steps(step, static, x, t, lr: float, steps: int) -> torch.Tensor:
    """Copy x, t and lr into the static buffers, apply `step` K times, copy x back."""
    x_static, t_static, lr_static = static
    x_static.copy_(x)
    t_static.copy_(t)
    lr_static.fill_(as_compute(lr, x.dtype))
    trace = torch.empty(steps, dtype=lr_static.dtype, device=x.device)
    for k in range(steps):
        # Each call is a new iteration for cudagraph trees: the previous loss may be overwritten.
        torch.compiler.cudagraph_mark_step_begin()
        trace[k].copy_(step(x_static, t_static, lr_static))
    x.copy_(x_static)
    return trace.float()
