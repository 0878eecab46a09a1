"""The problem every method solves: B target vectors of length D, fitted by K gradient steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse a device name and check that it exists here; ValueError names what is wrong."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device name; use 'cpu' or 'cuda'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not supported; use 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} is not available: this machine has no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} is not available: "
                f"this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


@dataclass(frozen=True)
class Problem:
    """One fit: `batch` rows of length `dim`, `steps` updates with learning rate `lr`.

    `target`, when given, is one row of `dim` values shared by every batch row (the question's
    t = [1, 2, 3, 4, 5]); otherwise the targets are drawn from the seeded generator.
    """

    batch: int = 1
    dim: int = 5
    steps: int = 1000
    lr: float = 0.01
    dtype: str = "float32"
    seed: int = 0
    target: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for field in ("batch", "dim", "steps"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field}={value!r} is not allowed; it must be an integer >= 1")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise ValueError(f"lr={self.lr!r} is not allowed; it must be a finite number > 0")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr={self.lr!r} is not allowed; it must be a finite number > 0")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not allowed; use one of {', '.join(DTYPES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} is not allowed; it must be an integer")
        if self.target is not None:
            if len(self.target) != self.dim:
                raise ValueError(
                    f"target has {len(self.target)} values; it must have dim={self.dim}"
                )
            if not all(math.isfinite(v) for v in self.target):
                raise ValueError(f"target={self.target!r} is not allowed; values must be finite")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def elements(self) -> int:
        return self.batch * self.dim

    @property
    def name(self) -> str:
        """A short id used in tables, legends and benchmark names."""
        return f"B{self.batch}xD{self.dim}-K{self.steps}-lr{self.lr:g}-{self.dtype}"

    def inputs(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """x0 ~ U[0, 1) and the targets, made on the CPU from the seed, then moved to `device`.

        Both are drawn in float64 and rounded once to `dtype`, so every device and every method
        starts from the same numbers.
        """
        dev = resolve_device(device)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        x0 = torch.rand(self.batch, self.dim, generator=gen, dtype=torch.float64)
        if self.target is None:
            t = torch.randn(self.batch, self.dim, generator=gen, dtype=torch.float64)
        else:
            t = torch.tensor(self.target, dtype=torch.float64).expand(self.batch, -1)
        return (
            x0.to(self.torch_dtype).to(dev),
            t.to(self.torch_dtype).contiguous().to(dev),
        )


# The question's case: B = 1, D = 5, t = [1, 2, 3, 4, 5], 1000 steps, at the answer's two rates.
SEED = tuple(
    Problem(batch=1, dim=5, steps=1000, lr=lr, target=(1.0, 2.0, 3.0, 4.0, 5.0))
    for lr in (0.01, 0.1)
)

PRESETS: dict[str, tuple[Problem, ...]] = {
    "seed": SEED,
}


def preset(name: str) -> tuple[Problem, ...]:
    """The problems of a named preset; ValueError lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"preset {name!r} is unknown; known presets: {', '.join(PRESETS)}"
        ) from None
