"""torch.compile of one analytic step; lr is passed as a tensor so a new lr does not recompile."""

from __future__ import annotations

import functools
import shutil

import torch

from bench.methods.base import Method, as_compute, compute_dtype

# Each shape and dtype is compiled statically (the fastest code for a benchmark), and dynamo keeps
# at most `recompile_limit` (default 8) versions of one function before it silently falls back to
# eager; a sweep visits more shapes than that, so the limit is raised.
RECOMPILE_LIMIT = 256


def _step(x: torch.Tensor, t: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acc = compute_dtype(x.dtype)
    x_acc = x.to(acc)
    diff = x_acc - t.to(acc)
    loss = diff.square().mean()
    return (x_acc - (2.0 / x.shape[1]) * lr * diff).to(x.dtype), loss


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
    summary = "torch.compile of one analytic step (lr as a tensor: no recompile per lr)"
    keeps_a_tensor_per_step = True

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
        cur = x
        losses = []
        for _ in range(steps):
            cur, loss = step(cur, t, lr_t)
            losses.append(loss)
        x.copy_(cur)
        return torch.stack(losses).float()
