"""Triton kernels of vecreg-bench: one module per kernel family, each kernel beside its launcher;
`rounding` holds what both share, to round in Triton's interpreter as on a GPU.

Whether a kernel runs on the GPU or in Triton's interpreter is decided when it is decorated, so
TRITON_INTERPRET=1 must be set before these modules are imported.
"""

import math
import struct

import torch

# Checked by `bench.methods.load_kernels`: another package named `kernels` can shadow this one.
VECREG_BENCH = True


def as_acc(value: float, acc: torch.dtype) -> float:
    """`value` as the arithmetic dtype `acc` (float32 or float64) holds it, rounded as IEEE does:
    beyond float32's range (3.4e38) it is inf, where torch.full would raise "value cannot be
    converted to type float without overflow" for a finite lr whose fit simply diverges."""
    if acc == torch.float64:
        return float(value)
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # packing raises where the rounding gives inf
        return math.copysign(math.inf, value)
