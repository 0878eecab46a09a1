"""One fused Triton kernel per step: reads x and t once, writes x and the loss partial sums."""

from __future__ import annotations

import torch

from bench.methods.base import Method, compute_dtype
from bench.methods.triton_env import interpreter_too_slow, load_kernels, triton_missing
from bench.problem import Problem


class TritonStep(Method):
    name = "triton_step"
    summary = "one fused Triton kernel per step (x, t read once; x and loss partials written)"

    def available(self, device: str | torch.device) -> str | None:
        return triton_missing(torch.device(device))

    def can_time(self, problem: Problem, device: str | torch.device) -> str | None:
        return self.available(device) or interpreter_too_slow(problem.elements)

    def fit_bytes(self, x0: torch.Tensor, steps: int) -> int:
        """The trace, and the [steps, P] partial sums the launcher allocates up front."""
        kernels = load_kernels("triton_step")
        programs = kernels.num_programs(x0)  # on a GPU this compiles the kernel (untimed)
        acc_bytes = compute_dtype(x0.dtype).itemsize
        return super().fit_bytes(x0, steps) + steps * programs * acc_bytes

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        return load_kernels("triton_step").fit(x, t, lr, steps)
