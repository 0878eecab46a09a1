"""The closed form every method is checked against, in float64.

Each step multiplies the error by the same factor: x_k - t = (1 - 2 lr / D)^k (x0 - t), hence
loss[k] = loss[0] (1 - 2 lr / D)^(2k).
"""

from __future__ import annotations

import torch


def contraction(lr: float, dim: int) -> float:
    """The factor 1 - 2 lr / D applied to x - t by one step."""
    return 1.0 - 2.0 * lr / dim


def x_at(x0: torch.Tensor, t: torch.Tensor, lr: float, k: int) -> torch.Tensor:
    """x_k in float64, on x0's device."""
    x0, t = x0.double(), t.double()
    return t + contraction(lr, x0.shape[-1]) ** k * (x0 - t)


def loss_trace(x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """loss[k] for k = 0 .. steps-1 in float64, on the CPU: the batch mean of the row losses."""
    loss0 = (x0.double() - t.double()).square().mean().cpu()
    k = torch.arange(steps, dtype=torch.float64)
    return loss0 * torch.tensor(contraction(lr, x0.shape[-1]), dtype=torch.float64) ** (2 * k)
