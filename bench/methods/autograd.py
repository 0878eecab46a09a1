"""The answer's loop, batched: loss in the loop, backward(), update under no_grad, zero the grad."""

from __future__ import annotations

import torch

from bench.methods.base import Method, as_compute, compute_dtype


class Autograd(Method):
    name = "autograd"
    summary = "loss inside the loop, backward(), update under no_grad, zero the grad"
    keeps_a_tensor_per_step = True

    @torch.enable_grad()  # a caller's torch.no_grad() must not turn the loop's backward() off
    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        acc = compute_dtype(x.dtype)
        t_acc = t.to(acc)
        alpha = as_compute(lr, x.dtype)  # alpha= refuses a float beyond float32's range, not inf
        x.requires_grad_(True)
        losses = []
        for _ in range(steps):
            row_loss = (x.to(acc) - t_acc).square().mean(dim=1)
            # Summing the row losses gives each row its own gradient 2 (x - t) / D; the trace is
            # their batch mean.
            row_loss.sum().backward()
            with torch.no_grad():
                if x.dtype == acc:  # in place, as the answer does it: no [B, D] temporary
                    x.sub_(x.grad, alpha=alpha)
                else:  # float16 and bfloat16 are updated in float32 and rounded once
                    x.copy_(x.to(acc) - lr * x.grad.to(acc))
                x.grad.zero_()  # the grad's buffer is kept: backward() accumulates into it
            losses.append(row_loss.detach().mean())
        x.requires_grad_(False)
        return torch.stack(losses).float()
