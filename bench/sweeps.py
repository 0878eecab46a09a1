"""Named sweeps: the problems a benchmark run times, one tuple of Problem per name.

The learning rate is a fixed fraction of D (lr = 0.05 D: each step shrinks x - t by 10%), so every
problem converges at the same rate and the oracle check means the same thing at every size; the
arithmetic, and so the speed, does not depend on lr.
"""

from __future__ import annotations

from bench.problem import SEED, Problem

LR_FRACTION = 0.05  # lr / D: contraction 1 - 2 lr / D = 0.9 per step
STEPS = 100  # K: enough steps that one launch's overhead is amortized, few enough for 2^26 on a GPU


def problem(batch: int, dim: int, dtype: str = "float32", steps: int = STEPS) -> Problem:
    """A sweep problem: seeded random targets, lr = LR_FRACTION * D."""
    return Problem(batch=batch, dim=dim, steps=steps, lr=LR_FRACTION * dim, dtype=dtype)


# The default: one launch-bound and one bandwidth-bound shape, float32 only. torch.compile costs
# about 15 s per shape and dtype on a CPU, so the whole run stays within about 3 minutes there.
QUICK = (problem(64, 256), problem(1024, 1024))

# B x D from 2^10 to 2^26 elements (every second power of two) at D = 1024, float32 and bfloat16.
SIZES_DIM = 1024
SIZES = tuple(
    problem(2**exp // SIZES_DIM, SIZES_DIM, dtype)
    for dtype in ("float32", "bfloat16")
    for exp in range(10, 27, 2)
)

# D from 1 to 8192 (powers of two) at B x D = 2^20 elements, float32.
DIMS_ELEMENTS = 2**20
DIMS = tuple(problem(DIMS_ELEMENTS // 2**exp, 2**exp) for exp in range(14))

# A few milliseconds per fit: for checking the harness itself, not for measuring.
SMOKE = (problem(4, 33, steps=10),)

# The GPU self-check (`python -m bench gpu-check`): quick and sizes, plus the problems the speed
# goals name: 2^24 float32 elements at K = 1000, and the question's case.
GOALS = (problem(2**24 // SIZES_DIM, SIZES_DIM, steps=1000), SEED[0])
GPU_CHECK = tuple({p.name: p for p in (*QUICK, *SIZES, *GOALS)}.values())

SWEEPS: dict[str, tuple[Problem, ...]] = {
    "quick": QUICK,
    "seed": SEED,
    "sizes": SIZES,
    "dims": DIMS,
    "smoke": SMOKE,
    "gpu-check": GPU_CHECK,
}
DEFAULT_SWEEP = "quick"


def get_sweep(name: str) -> tuple[Problem, ...]:
    """The problems of the sweep called `name`; ValueError lists the known names."""
    try:
        return SWEEPS[name]
    except KeyError:
        raise ValueError(f"unknown sweep {name!r}; known sweeps: {', '.join(SWEEPS)}") from None
