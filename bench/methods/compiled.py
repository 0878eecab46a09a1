"""torch.compile of one analytic step on x in place; lr is passed as a tensor so a new lr does not
recompile."""

from __future__ import annotations

import functools
import shutil

import torch

from bench.methods.base import Method, as_compute, compute_dtype

# Each shape and dtype is compiled statically (the fastest code for a benchmark), and dynamo keeps
# at most `recompile_limit` (default 8) versions of one function before it silently falls back to
# eager; a sweep visits more shapes than that, so the limit is raised.
RECOMPILE_LIMIT = 256


def _step(x: torch.Tensor, t: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """One analytic step on x in place; returns the loss at x before the step. Inductor fuses it
    into one pass that writes x where it read it: no [B, D] temporary per step. (Returning a new x
    each step cost 178,000 to 203,000 page faults and 163 to 187 ms per fit at 4096 x 512, K=100,
    on a 2-core CPU under glibc's default allocator thresholds; in place, 35 to 39 ms and none:
    bench.environment.steady_allocator.)"""
    acc = compute_dtype(x.dtype)
    x_acc = x.to(acc)
    diff = x_acc - t.to(acc)
    x.copy_((x_acc - (2.0 / x.shape[1]) * lr * diff).to(x.dtype))
    return diff.square().mean()


def raise_recompile_limit() -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))


@functools.cache
def compiled_step():
    raise_recompile_limit()
    return torch.compile(_step, dynamic=False, fullgraph=True)


class Compiled(Method):
    name = "compiled"
    summary = "torch.compile of one analytic step in place (lr as a tensor: no recompile per lr)"

    def available(self, device: str | torch.device) -> str | None:
        if (
            torch.device(device).type == "cpu"
            and shutil.which("g++") is None
            and shutil.which("c++") is None
        ):
            return "torch.compile on the CPU needs a C++ compiler (g++), and none is on PATH"
        return None

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        step = compiled_step()
        # A fill on the device, not a copy from the host: no synchronization.
        acc = compute_dtype(x.dtype)
        lr_t = torch.full((), as_compute(lr, acc), dtype=acc, device=x.device)
        trace = torch.empty(steps, dtype=acc, device=x.device)
        for k in range(steps):
            trace[k].copy_(step(x, t, lr_t))
        return trace.float()
