"""The peer most users would write: x a leaf tensor, autograd, and torch.optim.SGD."""

from __future__ import annotations

import torch

from bench.methods.base import Method, compute_dtype


def fused_supported(device: torch.device) -> bool:
    """Whether torch.optim.SGD(fused=True) runs on `device` (CUDA and the CPU since torch 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # a private helper: if it moves, assume the two devices we know
        return device.type in ("cuda", "cpu")


class SGD(Method):
    name = "sgd"
    summary = "x as a leaf tensor, autograd, torch.optim.SGD (fused where supported, else foreach)"
    keeps_a_tensor_per_step = True

    @torch.enable_grad()  # a caller's torch.no_grad() must not turn the loop's backward() off
    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        acc = compute_dtype(x.dtype)
        t_acc = t.to(acc)
        fused = fused_supported(x.device)
        x.requires_grad_(True)
        opt = torch.optim.SGD([x], lr=lr, fused=fused or None, foreach=None if fused else True)
        losses = []
        # No buffer is reused across steps, as no user of the optimizer would: each step's
        # temporaries are autograd's own, and zero_grad() sets the grad to None (torch's default)
        # so that backward() hands its new gradient over instead of adding it into a kept one.
        for _ in range(steps):
            opt.zero_grad()
            row_loss = (x.to(acc) - t_acc).square().mean(dim=1)
            # The sum of the row losses gives each row its own gradient 2 (x - t) / D, as in
            # `autograd`; the trace is their batch mean. Like every autograd user, SGD sees the
            # gradient rounded to x's dtype and applies it in float32 (its "opmath").
            row_loss.sum().backward()
            opt.step()
            losses.append(row_loss.detach().mean())
        x.requires_grad_(False)
        x.grad = None
        return torch.stack(losses).float()
