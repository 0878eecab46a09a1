"""The registry of methods: each one fits x0 to t by the same K gradient steps.

fit = get_method("analytic").fit(x0, t, lr=0.1, steps=100)   # x0 is not modified
fit.x      # final x_K: same shape, dtype and device as x0
fit.loss   # [steps] float32: loss[k] is the batch mean of the row losses at x_k, before step k
"""

from __future__ import annotations

from bench.methods.analytic import Analytic
from bench.methods.autograd import Autograd
from bench.methods.base import Fit, Method
from bench.methods.compiled import Compiled
from bench.methods.compiled_fused import CompiledFused
from bench.methods.compiled_graphs import CompiledGraphs
from bench.methods.graphs import Graphs
from bench.methods.jax_scan import Jax
from bench.methods.sgd import SGD
from bench.methods.triton_fused import TritonFused
from bench.methods.triton_step import TritonStep

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Autograd(),
        Analytic(),
        Compiled(),
        TritonStep(),
        TritonFused(),
        CompiledFused(),
        Graphs(),
        CompiledGraphs(),
        SGD(),
        Jax(),
    )
}


def get_method(name: str) -> Method:
    """The method called `name`; ValueError lists the known names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "Fit", "Method", "get_method"]
