"""Rounding in the kernels as a GPU rounds, also in Triton's interpreter.

Two things the interpreter (Triton 3.8, numpy underneath) does otherwise than a GPU:
- float32 to bfloat16: a GPU rounds to nearest even (cvt.rn.bf16.f32); the interpreter truncates,
  and mishandles subnormals both ways. 1 + 2^-8 + 2^-12 becomes 1.0 there and 1.0078125 in torch;
  the largest finite float32 stays finite instead of rounding to inf; a NaN whose payload is in
  its low 16 bits becomes inf; bfloat16 0x0001 (9.2e-41) widens to 0.
- x - scale * diff: a GPU kernel contracts it into one FMA, rounded once (Triton's default
  enable_fp_fusion: fma.rn.f32 in the PTX; torch's x.sub_(diff, alpha=scale) is an FMA too on an
  AVX2 CPU, ATen's vectorized fmadd); the interpreter rounds the product, then the difference.
`convert` and `update` spell these out when, and only when, the kernel runs in the interpreter:
`INTERPRETED` is a compile-time constant, so the code built for a GPU is the plain `.to(dtype)`
and `x - scale * diff` it always was (tests/test_kernels.py compares the PTX).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.jit import JITFunction


def _device_function(fn):
    """`triton.jit` where kernels are compiled; in the interpreter, the plain function, which the
    kernel calls as Python on the interpreter's tensors (triton.language is patched for the whole
    launch). A jit function there re-patches triton.language at every call (Triton 3.8's
    InterpretedFunction.__call__), about 0.5 ms: three calls a step tripled the fused kernel's
    step in the interpreter."""
    return fn if triton.knobs.runtime.interpret else triton.jit(fn)


def interpreted(kernel: object) -> bool:
    """True when `kernel` (a `triton.jit` function) runs in Triton's interpreter: triton.jit
    returns an interpreter wrapper instead of a JITFunction when TRITON_INTERPRET=1 is set at
    decoration, the one moment that decides it."""
    return not isinstance(kernel, JITFunction)


@_device_function
def _float32_to_bfloat16(value):
    bits = value.to(tl.uint32, bitcast=True)
    # Round to nearest, ties to even, on the bits: add half a unit of the 16 bits kept (0x7FFF),
    # plus their lowest bit (a tie rounds up only to an even result), and drop the low 16 bits.
    # A carry out of the mantissa lands in the next binade, past the largest finite on inf, and
    # subnormals round by the same rule. (bits < 0xFF800001 unless NaN: no overflow of 32 bits.)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    # A NaN keeps its sign and the top of its payload, made quiet (0x0040), so that it cannot
    # round to inf or wrap around.
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    out = tl.where(nan, (bits >> 16) | 0x0040, rounded)
    return out.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@_device_function
def _bfloat16_to_float32(value):
    # Exact: bfloat16 is the top half of a float32.
    bits = value.to(tl.uint16, bitcast=True).to(tl.uint32) << 16
    return bits.to(tl.float32, bitcast=True)


@_device_function
def convert(value, dtype: tl.constexpr, INTERPRETED: tl.constexpr):
    """`value.to(dtype)`, rounded to nearest even also in the interpreter (INTERPRETED, which
    the launcher sets from `interpreted(kernel)`); on a GPU exactly `value.to(dtype)`."""
    if INTERPRETED:
        if value.dtype == tl.float32 and dtype == tl.bfloat16:
            out = _float32_to_bfloat16(value)
        elif value.dtype == tl.bfloat16:
            out = _bfloat16_to_float32(value).to(dtype)
        else:
            out = value.to(dtype)  # numpy's own casts round to nearest even
    else:
        out = value.to(dtype)
    return out


@_device_function
def update(x, scale, diff, INTERPRETED: tl.constexpr):
    """`x - scale * diff`, rounded once as a GPU's FMA rounds it, also in the interpreter; on a
    GPU exactly `x - scale * diff`, which the compiler contracts."""
    if INTERPRETED:
        if x.dtype == tl.float32:
            # The product of two float32 is exact in float64; the difference is rounded to
            # float64's 53 bits, then to float32's 24: the FMA's result, unless the first rounding
            # lands exactly on a float32 tie that the exact difference is not on (about 2^-29 of
            # values).
            wide = x.to(tl.float64) - scale.to(tl.float64) * diff.to(tl.float64)
            out = wide.to(tl.float32)
        else:
            out = x - scale * diff  # float64: no wider type to compute in
    else:
        out = x - scale * diff
    return out
