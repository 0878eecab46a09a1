"""Triton kernels of vecreg-bench: one module per kernel family, each kernel beside its launcher.

Whether a kernel runs on the GPU or in Triton's interpreter is decided when it is decorated, so
TRITON_INTERPRET=1 must be set before these modules are imported.
"""

# Checked by `bench.methods.load_kernels`: another package named `kernels` can shadow this one.
VECREG_BENCH = True
