"""All K steps in one Triton launch: x and t held in registers, x written once."""

from __future__ import annotations

import torch

from bench.methods.base import Method, compute_dtype
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

    def fit_bytes(self, x0: torch.Tensor, steps: int) -> int:
        """The trace, and the partial sums of one chunk of steps (capped by the launcher)."""
        kernels = load_kernels("triton_fused")
        acc_bytes = compute_dtype(x0.dtype).itemsize
        per_element = x0.numel() <= kernels.PER_ELEMENT_MAX_N
        chunk, stride = kernels.partials_shape(
            x0.numel(), steps, x0.element_size(), acc_bytes, per_element
        )
        return super().fit_bytes(x0, steps) + chunk * stride * acc_bytes

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        return load_kernels("triton_fused").fit(x, t, lr, steps)
