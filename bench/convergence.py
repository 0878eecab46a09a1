"""How a loss trace converges: the step at which it first falls below a fraction of its start."""

from __future__ import annotations

import torch


def first_step_below(trace: torch.Tensor, fraction: float) -> int | None:
    """The first k with trace[k] <= fraction * trace[0], or None if the trace never gets there."""
    hits = (trace <= fraction * trace[0]).nonzero()
    return int(hits[0, 0]) if len(hits) else None
