"""The hand-derived gradient 2 (x - t) / D, applied in place, no autograd."""

from __future__ import annotations

import torch

from bench.methods.base import Method, as_compute, compute_dtype


class Analytic(Method):
    name = "analytic"
    summary = "hand-derived gradient 2 (x - t) / D applied in place, no autograd"

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        acc = compute_dtype(x.dtype)
        t_acc = t.to(acc)
        scale = as_compute(2.0 * lr / x.shape[1], x.dtype)
        # Every buffer is allocated once per fit, not per step: fresh [B, D] temporaries per step
        # are served by mmap and page faults or by the heap as glibc's dynamic threshold has it,
        # run to run (73 to 103 ms per fit at 4096 x 512, K=100, on 2 CPU threads; with the
        # buffers reused, 36 to 38 ms: see bench.environment.steady_allocator).
        x_acc = x if x.dtype == acc else torch.empty_like(x, dtype=acc)
        diff = torch.empty_like(x_acc)
        trace = torch.empty(steps, dtype=acc, device=x.device)
        for k in range(steps):
            if x_acc is not x:
                x_acc.copy_(x)  # x as its own dtype holds it, computed on in float32
            torch.sub(x_acc, t_acc, out=diff)
            x_acc.sub_(diff, alpha=scale)
            if x_acc is not x:
                x.copy_(x_acc)
            torch.mean(diff.square_(), dim=(0, 1), out=trace[k])  # the loss at x_k, before step k
        return trace.float()
