"""Triton kernels compiled ahead of time for real GPUs: no GPU needed, so a kernel that would not
build for an A100 (sm_80) or an H100 (sm_90) fails here."""

import os
import re
from contextlib import contextmanager

import pytest
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from kernels import triton_step

TARGETS = {"sm_80": 80, "sm_90": 90}
# Pointers 16-byte aligned and N a multiple of 16, as Triton assumes at launch when they are.
ALIGNED = [["tt.divisibility", 16]]


@contextmanager
def interpreter_off():
    """Triton's code generator takes the interpreter's path while TRITON_INTERPRET=1 is set."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def compile_ptx(kernel, signature: dict, constexprs: dict, capability: int, num_warps: int) -> str:
    # Under TRITON_INTERPRET=1 the decorated kernel is an interpreter wrapper: compile its source.
    fn = kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)
    for name in constexprs:
        signature[name] = "constexpr"
    attrs = {
        (fn.arg_names.index(name),): ALIGNED
        for name, kind in signature.items()
        if kind.startswith("*") or name == "n_elements"
    }
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    with interpreter_off():
        compiled = triton.compile(
            source, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps}
        )
    assert compiled.asm["cubin"], "ptxas produced no cubin"
    return compiled.asm["ptx"]


def step_ptx(dtype: str, capability: int) -> str:
    acc = "fp64" if dtype == "fp64" else "fp32"
    signature = {
        "x_ptr": f"*{dtype}",
        "t_ptr": f"*{dtype}",
        "scale_ptr": f"*{acc}",
        "partials_ptr": f"*{acc}",
        "step": "i32",
        "n_elements": "i32",
    }
    constexprs = {
        "BLOCK_SIZE": triton_step.BLOCK_SIZE,
        "ACC_DTYPE": tl.float64 if dtype == "fp64" else tl.float32,
    }
    return compile_ptx(
        triton_step._step_kernel, signature, constexprs, capability, triton_step.NUM_WARPS
    )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "fp64"])
def test_step_kernel_builds_without_spills(target, dtype):
    ptx = step_ptx(dtype, TARGETS[target])
    assert re.search(r"\.entry\s+_step_kernel", ptx)
    spills = re.findall(r"\b(?:ld|st)\.local\b", ptx)
    assert not spills, f"{len(spills)} local-memory accesses (register spills) in the PTX"


@pytest.mark.parametrize("target", TARGETS)
def test_step_kernel_moves_float32_in_128_bit_vectors(target):
    ptx = step_ptx("fp32", TARGETS[target])
    # x and t are read with ld.global.v4 and x written with st.global.v4: four floats at a time.
    assert len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", ptx)) >= 2
    assert re.search(r"st\.global(?:\.\w+)*\.v4\.b32", ptx)
