"""Triton kernels compiled ahead of time for real GPUs: no GPU needed, so a kernel that would not
build for an A100 (sm_80) or an H100 (sm_90) fails here."""

import os
import re
import subprocess
import tempfile
from contextlib import contextmanager

import pytest
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from kernels import triton_fused, triton_step

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


def compile_kernel(kernel, signature: dict, constexprs: dict, capability: int, num_warps: int):
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
    return compiled


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED and LOCAL of the cubin's kernel, as `cuobjdump -res-usage` reads them:
    spills are decided by ptxas, so they show here (STACK, LOCAL), not in the PTX."""
    cuobjdump = triton.knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        out = subprocess.run(
            [cuobjdump, "-res-usage", file.name], capture_output=True, text=True, check=True
        ).stdout
    return {name: int(value) for name, value in re.findall(r"\b([A-Z]+):(\d+)", out)}


def assert_no_spills(compiled) -> dict[str, int]:
    ptx = compiled.asm["ptx"]
    spills = re.findall(r"\b(?:ld|st)\.local\b", ptx)
    assert not spills, f"{len(spills)} local-memory accesses in the PTX"
    usage = resource_usage(compiled.asm["cubin"])
    assert usage["STACK"] == 0 and usage["LOCAL"] == 0, f"ptxas spilled registers: {usage}"
    assert usage["REG"] <= 255, usage
    return usage


# A 128-bit vector: four 32-bit words (float32, or eight 16-bit values) or two float64.
VECTOR_LOAD = r"ld\.global(?:\.\w+)*\.(?:v4\.b32|v2\.b64)"
VECTOR_STORE = r"st\.global(?:\.\w+)*\.(?:v4\.b32|v2\.b64)"


def step_kernel(dtype: str, capability: int):
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
    return compile_kernel(
        triton_step._step_kernel, signature, constexprs, capability, triton_step.NUM_WARPS
    )


def step_ptx(dtype: str, capability: int) -> str:
    return step_kernel(dtype, capability).asm["ptx"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "fp64"])
def test_step_kernel_builds_without_spills(target, dtype):
    compiled = step_kernel(dtype, TARGETS[target])
    assert re.search(r"\.entry\s+_step_kernel", compiled.asm["ptx"])
    assert_no_spills(compiled)


@pytest.mark.parametrize("target", TARGETS)
def test_step_kernel_moves_float32_in_128_bit_vectors(target):
    ptx = step_ptx("fp32", TARGETS[target])
    # x and t are read with ld.global.v4 and x written with st.global.v4: four floats at a time.
    assert len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", ptx)) >= 2
    assert re.search(r"st\.global(?:\.\w+)*\.v4\.b32", ptx)


def fused_kernel(dtype: str, capability: int, block: int, warps: int):
    acc = "fp64" if dtype == "fp64" else "fp32"
    signature = {
        "x_ptr": f"*{dtype}",
        "t_ptr": f"*{dtype}",
        "scale_ptr": f"*{acc}",
        "partials_ptr": f"*{acc}",
        "steps": "i32",
        "partials_stride": "i32",
        "n_elements": "i32",
    }
    constexprs = {"BLOCK_SIZE": block, "ACC_DTYPE": tl.float64 if dtype == "fp64" else tl.float32}
    return compile_kernel(triton_fused._fused_kernel, signature, constexprs, capability, warps)


@pytest.mark.parametrize("config", triton_fused.CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}w")
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16", "fp64"])
def test_fused_kernel_builds_every_config_without_spills(dtype, target, config):
    """Every autotune config, as the autotuner would build it: no spills, and x and t read (x
    written) once each in 128-bit vectors. float64 at 32 values a thread ((4096, 4), (8192, 8))
    takes about 240 of the 255 registers: slow, but it builds without spilling, and the
    autotuner will not pick it."""
    block, warps = config
    compiled = fused_kernel(dtype, TARGETS[target], block, warps)
    ptx = compiled.asm["ptx"]
    assert re.search(r"\.entry\s+_fused_kernel", ptx)
    assert_no_spills(compiled)
    assert len(re.findall(VECTOR_LOAD, ptx)) >= 2, "x and t are not loaded in 128-bit vectors"
    assert re.search(VECTOR_STORE, ptx), "x is not stored in 128-bit vectors"


def test_fused_kernel_does_not_specialize_the_trip_count():
    """K is passed as a plain i32: a new K (even 1, or a multiple of 16) reuses the binary."""
    fn = triton_fused._fused_kernel
    fn = fn if isinstance(fn, JITFunction) else JITFunction(fn.fn)
    steps = fn.arg_names.index("steps")
    assert steps in fn.do_not_specialize or "steps" in fn.do_not_specialize
