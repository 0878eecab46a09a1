"""torch.compile of a chunk of C steps (x in; x after C steps and the C losses out), called
ceil(K / C) times: inductor fuses the C steps and their C loss sums into one pass over x and t,
where `compiled` makes one pass per step. The torch-native rival of the hand-written
`triton_fused`: how much of its fusion the compiler finds by itself.

- Chunks: K = q C + r. The q full chunks call one graph; a remainder (0 < r < C, which is all of
  K when K < C) calls a second graph of the same C steps that hands back x after r steps (picked
  with torch.where by a 0-d step count) and the first r losses. So a shape, dtype and device
  costs at most two compiles per C, whatever K; the remainder chunk computes C - r steps it
  throws away, at most one chunk's time per fit. (Every chunk masked would save that compile
  but cost 15% a fit: 10.7 against 9.3 ms at C=10, 4096 x 512, K=100.)
- lr: the contraction a = 1 - 2 lr / D goes in as a 0-d tensor, filled on the device: a new lr
  (or a new K) does not recompile.
- Semantics as every method: loss[k] at x_k before step k; float32 and float64 computed in their
  own precision, float16 and bfloat16 in float32 with x rounded to its dtype after every step.
"""

from __future__ import annotations

import functools

import torch

from bench.methods.base import as_compute, compute_dtype
from bench.methods.compiled import Compiled, raise_recompile_limit

# Steps per compiled chunk: the fastest fit whose compile stays within 20 s, measured by
# `python scripts/compiled_fused_chunks.py --compare compiled analytic` (fp32, B=4096, D=512,
# K=100, lr=0.05 D; 2-core AMD EPYC VM shared with other jobs, 2 torch threads, torch 2.14).
# "first": a process's first compile, whatever C (inductor's start); "compile": then this C's own
# graph at 4096 x 512, the setup `prepare` records. Fits interleaved in one process, median
# [95% interval] of ~200 fits each (left out: fits during which some task waited for a CPU over
# 5% of the time, 3 to 10 of 209 rounds; 1-minute load 2.2 before, 2.1 after, 2 of it the study's):
#
#     C   first s   compile s   fit ms median [95% interval]
#     1       8.7         0.8   31.6  [31.3, 32.1]
#     2       9.0         0.8   16.9  [16.6, 17.3]
#     5       8.3         0.9    7.62 [7.52, 7.71]   <- CHUNK
#    10       8.1         1.2    8.75 [8.71, 8.80]
#    20       8.0         1.9   14.9  [14.8, 14.9]
#    25       7.9         2.4   14.8  [14.7, 14.8]
#    50       8.0         4.9   17.0  [16.9, 17.0]
#   100       7.9        11.2   20.0  [19.9, 20.1]
#   compiled 37.8 [37.3, 38.2] ms, analytic 41.7 [41.5, 42.1] ms in the same rounds: C=5 is
#   4.96x [4.88, 5.05] faster than compiled (bench.stats.ratio_interval). An earlier run under
#   a load of 3 to 4 gave the same order (C=5 7.38, C=10 8.75, compiled 35.5 ms).
#
# Around the best (--chunks 3 4 5 6 8 10, 33 of 40 fits kept, load 1.1 to 1.2): C=3 11.6
# [11.4, 11.8], 4 8.60 [8.49, 8.74], 5 7.01 [6.89, 7.11], 6 6.92 [6.87, 7.06], 8 8.02 [7.92, 8.09],
# 10 8.37 [8.29, 8.43] ms. 5 and 6 tie; 5 is the smaller and divides the sweeps' K (100, 1000): one
# graph a shape. Past 10 a fit gets slower again, though every C up to 100 compiles within
# about 20 s. Beyond the 32 MB L3 (B=16384, D=1024, K=20, 48 of 92 fits kept, load 1.6 to 2.1):
# C=5 14.4 [14.1, 14.6], 10 14.4 [14.3, 14.5], 20 23.9 [23.8, 24.4] ms, compiled 72.2 [70.9,
# 73.3] ms. On CUDA the best C is unmeasured.
CHUNK = 5

# The float16 and bfloat16 round trip after each step kept in the fused code: inductor otherwise
# drops a downcast followed by an upcast inside one kernel and carries x in float32 through the
# chunk. Measured: bfloat16 x0 = 1, t = 0, steps of 1e-3 (under half a unit in the last place):
# `analytic` keeps x at 1, the fused chunks without this option took it to 0.96875 in 30 steps
# (tests/test_compiled_fused.py). On CUDA it also keeps Triton from contracting a * b + c into
# an FMA in these kernels.
COMPILE_OPTIONS = {"emulate_precision_casts": True}


def _steps(x: torch.Tensor, t: torch.Tensor, a: torch.Tensor, steps: int):
    """x_1 .. x_steps and the losses at x_0 .. x_{steps-1}, as x <- t + a (x - t).

    Written so that x_k appears once in x_{k+1}: inductor inlines an elementwise op into each of
    its users, and x - s (x - t) reads x twice, so lowering x_C expanded 2^C calls (a process's
    first compile, 4096 x 512 on this CPU: 18 s at C=10, not done after 300 s at C=15; the issue
    saw 708 s at C=25); t + a (x - t) takes 9 s at C=10 and 21 s at C=100. The price: a is
    rounded once to the compute dtype (relative error <= 2^-24 in float32), which x_k - t
    carries k times, k 2^-24 relative, within the oracle's tolerance of 4 (K + 1) eps
    (`analytic` rounds s = 2 lr / D instead, an error s times smaller in the contraction).
    """
    acc = compute_dtype(x.dtype)
    t_acc = t.to(acc)
    xs = [x]
    for _ in range(steps):
        xs.append((t_acc + a * (xs[-1].to(acc) - t_acc)).to(x.dtype))
    losses = torch.stack([(xk.to(acc) - t_acc).square().mean() for xk in xs[:-1]])
    return xs, losses


def _chunk(x: torch.Tensor, t: torch.Tensor, a: torch.Tensor, steps: int):
    """`steps` steps from x: (x_steps, the [steps] losses in the compute dtype).

    A new x, not x in place: returned, x_C is stored in the same loop that computes it and the
    loss sums; stored into x, the store must wait for every read of x and inductor emits a second
    loop that computes the C steps again (10.9 ms per fit against 8.8 ms at C=10, 4096 x 512,
    K=100, with the copy back into x below counted)."""
    xs, losses = _steps(x, t, a, steps)
    return xs[-1], losses


def _masked_chunk(x: torch.Tensor, t: torch.Tensor, a: torch.Tensor, n: torch.Tensor, steps: int):
    """`_chunk`, handing back x_n for a 0-d step count 1 <= n <= steps (a tensor: any n shares
    the graph); the losses past n are computed and not used."""
    xs, losses = _steps(x, t, a, steps)
    out = xs[-1]
    for k in range(steps - 1, 0, -1):
        out = torch.where(n == k, xs[k], out)
    return out, losses


@functools.cache
def compiled_chunks():
    """(full, masked): the two compiled chunk functions, shared by every fit and instance."""
    raise_recompile_limit()
    return tuple(
        torch.compile(fn, dynamic=False, fullgraph=True, options=COMPILE_OPTIONS)
        for fn in (_chunk, _masked_chunk)
    )


class CompiledFused(Compiled):
    """Runs where `compiled` runs (on the CPU, torch.compile needs a C++ compiler)."""

    name = "compiled_fused"
    summary = "torch.compile of a chunk of C steps: one fused pass per C steps (lr as a tensor)"

    def __init__(self, chunk: int = CHUNK) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk={chunk!r} is not allowed; it must be an integer >= 1")
        self.chunk = chunk

    def prepare(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
        """Compile what a fit of `steps` steps calls: the full chunk if steps >= C, the remainder
        chunk if C does not divide steps; one short fit that calls both."""
        self.fit(x0, t, lr, min(steps, self.chunk + steps % self.chunk))

    def fit_bytes(self, x0: torch.Tensor, steps: int) -> int:
        """The trace, and x as two chunks hand it on: the current chunk's input and its output."""
        return super().fit_bytes(x0, steps) + 2 * x0.numel() * x0.element_size()

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        full_chunk, masked_chunk = compiled_chunks()
        c = self.chunk
        acc = compute_dtype(x.dtype)
        # Fills on the device, not copies from the host: no synchronization. 1 - 2 lr / D in
        # float64 first, rounded once (inf beyond float32's range, as any finite lr may be).
        a = torch.full(
            (), as_compute(1.0 - 2.0 * lr / x.shape[1], x.dtype), dtype=acc, device=x.device
        )
        trace = torch.empty(steps, dtype=acc, device=x.device)
        full, rest = divmod(steps, c)
        current = x
        # Grad mode is part of dynamo's guards: one mode for every fit, one graph.
        with torch.no_grad():
            for i in range(full):
                current, losses = full_chunk(current, t, a, c)
                trace[i * c : (i + 1) * c].copy_(losses)
            if rest:
                n = torch.full((), rest, dtype=torch.int64, device=x.device)
                current, losses = masked_chunk(current, t, a, n, c)
                trace[full * c :].copy_(losses[:rest])
            x.copy_(current)
        return trace.float()
