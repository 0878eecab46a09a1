"""torch.compile(mode="reduce-overhead") of one analytic step: inductor's kernels replayed as a
CUDA graph per step (cudagraph trees), so each step costs one graph launch from the host.

The step updates static buffers in place (x, t and lr marked as static addresses, reused across
fits of one shape and dtype), so a replay copies no inputs; only the 0-dim loss comes out, and it
is copied into the trace before the next replay overwrites it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

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

    def __init__(self) -> None:
        self._buffers: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()

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
        the third): a few steps, untimed."""
        self.fit(x0, t, lr, min(steps, 3))

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
