"""All K steps in one Triton launch: x and t held in registers, x written once."""

from __future__ import annotations

import torch

from bench.methods.base import Method
from bench.methods.triton_env import interpreter_too_slow, load_kernels, triton_missing
from bench.problem import Problem

# prepare() autotunes on a fit of at most this many steps: long enough that the K-step loop, not
# the one load and store of x, decides the best config; short enough to keep tuning cheap.
TUNE_STEPS = 1000


class TritonFused(Method):
    name = "triton_fused"
    summary = "all K steps in one autotuned Triton launch (x, t in registers; x written once)"

    def available(self, device: str | torch.device) -> str | None:
        return triton_missing(torch.device(device))

    def can_time(self, problem: Problem, device: str | torch.device) -> str | None:
        return self.available(device) or interpreter_too_slow(problem.elements)

    def prepare(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
        self.fit(x0, t, lr, min(steps, TUNE_STEPS))

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        return load_kernels("triton_fused").fit(x, t, lr, steps)
