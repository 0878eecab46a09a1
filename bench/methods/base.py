"""What every method shares: the Fit result, the input checks and the fit/run split."""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import torch

from bench.problem import DTYPES, Problem


@dataclass(frozen=True)
class Fit:
    """The result of K steps: the final x_K and the loss trace loss[0 .. K-1] (float32)."""

    x: torch.Tensor
    loss: torch.Tensor


def check_inputs(x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
    """ValueError naming the argument, its value and what is allowed."""
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2 or 0 in x0.shape:
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 has shape {shape}; it must be a non-empty [batch, dim] tensor")
    if not isinstance(t, torch.Tensor) or t.shape != x0.shape:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t has shape {shape}; it must match x0's shape {tuple(x0.shape)}")
    if x0.dtype not in DTYPES.values():
        raise ValueError(f"x0 has dtype {x0.dtype}; use one of {', '.join(DTYPES)}")
    if t.dtype != x0.dtype or t.device != x0.device:
        raise ValueError(
            f"t is {t.dtype} on {t.device}; it must match x0 ({x0.dtype} on {x0.device})"
        )
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr={lr!r} is not allowed; it must be a finite number > 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} is not allowed; it must be an integer >= 1")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic precision: float64 stays float64; float32, float16 and bfloat16 use float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_compute(value: float, dtype: torch.dtype) -> float:
    """`value` as the compute dtype of `dtype` holds it, rounded as IEEE does: beyond float32's
    range (3.4e38) it is inf. torch.full, fill_ and alpha= raise "value cannot be converted to
    type float without overflow" instead, yet a finite lr that large must diverge like any other."""
    if compute_dtype(dtype) == torch.float64:
        return float(value)
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # packing raises where the rounding gives inf
        return math.copysign(math.inf, value)


# What one 0-d loss tensor kept until torch.stack costs, at least: on CUDA the caching allocator's
# smallest block is 512 bytes; on the CPU the tensor's objects and its 4-byte storage took 540 to
# 590 bytes a tensor (RSS over 500,000 of them, torch 2.14).
STEP_TENSOR_BYTES = 512


def device_memory(device: torch.device) -> int:
    """The memory that exists on `device`, in bytes: all of it, not what is free now."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def binary_size(n: float) -> str:
    """3.7 * 1024**4 -> '3.7 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


class Method:
    """One implementation of the update x <- x - lr * 2 (x - t) / D.

    Subclasses implement `run`, which updates a fresh contiguous copy of x0 in place and returns
    the loss trace without synchronizing with the host; `fit` wraps it with the input checks and
    the copy. `prepare` does the untimed work (compilation, autotuning, first-call allocation).
    """

    name: str = ""
    summary: str = ""
    # True for the loops that keep each step's 0-d loss tensor in a list until torch.stack.
    keeps_a_tensor_per_step: bool = False
    # Why torch cannot see this method's GPU work, where it cannot: its events on torch's stream
    # would not bracket the work, and torch's memory statistics would not count it (jax: XLA's
    # own stream and allocator). None: the work is torch's.
    outside_torch: str | None = None

    def available(self, device: str | torch.device) -> str | None:
        """None if the method can run on `device`, else the reason it cannot."""
        return None

    def can_time(self, problem: Problem, device: str | torch.device) -> str | None:
        """None if the benchmark suite should time `problem` on `device`, else the reason not."""
        return self.available(device)

    def prepare(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
        """Untimed warm-up for this shape, dtype and device: one short fit compiles and caches."""
        self.fit(x0, t, lr, min(steps, 2))

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        """Apply `steps` updates to `x` in place; return the [steps] float32 loss trace."""
        raise NotImplementedError

    def verify(self) -> None:
        """Raise RuntimeError, with the reason, if the fits since the last `prepare` did not run
        as this method's name says (bench.timing calls it, untimed, after a case's fits): a
        method timed under a name must be that method."""

    def fit_bytes(self, x0: torch.Tensor, steps: int) -> int:
        """A lower bound on the memory a fit of `steps` steps needs on x0's device beyond x0, t
        and x's copy: the [steps] trace in the compute dtype, and what the method keeps per step."""
        per_step = compute_dtype(x0.dtype).itemsize
        if self.keeps_a_tensor_per_step:
            per_step += STEP_TENSOR_BYTES
        return steps * per_step

    def check_memory(self, x0: torch.Tensor, steps: int) -> None:
        """ValueError, before anything is allocated, if a fit of `steps` cannot fit in memory."""
        needed, present = self.fit_bytes(x0, steps), device_memory(x0.device)
        if needed > present:
            trace = steps * compute_dtype(x0.dtype).itemsize
            raise ValueError(
                f"steps={steps} needs at least {binary_size(needed)} of memory for method "
                f"{self.name!r} ({binary_size(trace)} for the loss trace alone); "
                f"{x0.device} has {binary_size(present)} in all"
            )

    def fit(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> Fit:
        """Fit from x0 (left unmodified); see the module docstring of `bench.methods`.

        Inputs that require grad are fitted as the values they hold: the fit is no part of the
        caller's autograd graph, and its x and loss do not require grad."""
        check_inputs(x0, t, lr, steps)
        reason = self.available(x0.device)
        if reason is not None:
            raise RuntimeError(f"method {self.name!r} cannot run on {x0.device}: {reason}")
        self.check_memory(x0, steps)
        x = x0.detach().clone(memory_format=torch.contiguous_format)
        loss = self.run(x, t.detach().contiguous(), float(lr), steps)
        return Fit(x=x, loss=loss)

    def __repr__(self) -> str:
        return f"<method {self.name}>"
