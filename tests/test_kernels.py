"""Triton kernels compiled ahead of time for real GPUs: no GPU needed, so a kernel that would not
build for an A100 (sm_80) or an H100 (sm_90) fails here.

The builds run in one child process with TRITON_INTERPRET=0. In this process (TRITON_INTERPRET=1
on a machine with no GPU) `import triton` has already turned Triton's own library functions
(tl.sum, tl.cdiv, ...) into interpreter wrappers, and the code generator cannot compile kernels
that call them: with a cold Triton cache, an in-process build fails ("gluon: assert ...
isinstance(fn, JITFunction)", or a CompilationError in tl.range). A warm cache used to hide this.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kernels import triton_fused, triton_step

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"sm_80": 80, "sm_90": 90}
DTYPES = ["fp32", "fp16", "bf16", "fp64"]
# Pointers 16-byte aligned and N a multiple of 16, as Triton assumes at launch when they are; the
# fused launcher always pads the partials' row stride to a multiple of 16.
ALIGNED = [["tt.divisibility", 16]]

# A 128-bit vector: four 32-bit words (four float32, or eight 16-bit values) or two float64.
VECTOR_LOAD = r"ld\.global(?:\.\w+)*\.(?:v4\.b32|v2\.b64)"
VECTOR_STORE = r"st\.global(?:\.\w+)*\.(?:v4\.b32|v2\.b64)"


def variants() -> list[tuple]:
    """(kernel, dtype, capability, BLOCK_SIZE, num_warps, PER_ELEMENT): every build the tests
    read; PER_ELEMENT is the fused kernel's choice of partials (False for the step kernel)."""
    step = [
        ("step", dtype, cap, triton_step.BLOCK_SIZE, triton_step.NUM_WARPS, False)
        for dtype in DTYPES
        for cap in TARGETS.values()
    ]
    fused = [
        ("fused", dtype, cap, block, warps, per_element)
        for dtype in DTYPES
        for cap in TARGETS.values()
        for block, warps in triton_fused.CONFIGS
        for per_element in (False, True)
    ]
    return step + fused


def signature(kernel: str, dtype: str) -> dict[str, str]:
    acc = "fp64" if dtype == "fp64" else "fp32"
    pointers = {
        "x_ptr": f"*{dtype}",
        "t_ptr": f"*{dtype}",
        "scale_ptr": f"*{acc}",
        "partials_ptr": f"*{acc}",
    }
    if kernel == "step":
        return {**pointers, "step": "i32", "n_elements": "i32"}
    return {**pointers, "steps": "i32", "partials_stride": "i32", "n_elements": "i32"}


def build(
    kernel: str, dtype: str, capability: int, block: int, warps: int, per_element: bool
) -> dict:
    """Compile one variant (in a process without the interpreter): its PTX and resource usage."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = triton_step._step_kernel if kernel == "step" else triton_fused._fused_kernel
    sig = signature(kernel, dtype)
    constexprs = {"BLOCK_SIZE": block, "ACC_DTYPE": tl.float64 if dtype == "fp64" else tl.float32}
    if kernel == "fused":
        constexprs["PER_ELEMENT"] = per_element
    attrs = {
        (fn.arg_names.index(name),): ALIGNED
        for name, kind in sig.items()
        if kind.startswith("*") or name in ("n_elements", "partials_stride")
    }
    sig.update(dict.fromkeys(constexprs, "constexpr"))
    source = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps}
    )
    return {
        "ptx": compiled.asm["ptx"],
        "cubin_bytes": len(compiled.asm["cubin"]),
        "usage": resource_usage(compiled.asm["cubin"]),
    }


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED and LOCAL of the cubin's kernel, as `cuobjdump -res-usage` reads them:
    register spills are decided by ptxas, so they show here (STACK, LOCAL), not in the PTX."""
    import triton

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        out = subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, "-res-usage", file.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return {name: int(value) for name, value in re.findall(r"\b([A-Z]+):(\d+)", out)}


@functools.cache
def builds() -> dict[tuple, dict]:
    """Every variant, built once per test session in one child process without the interpreter
    (a few seconds; Triton caches the builds across sessions)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "builds.json"
        env = {**os.environ, "TRITON_INTERPRET": "0"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        code = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_kernels; "
        code += f"test_kernels.build_all({str(out)!r})"
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, f"the AOT builds failed:\n{done.stderr[-6000:]}"
        return {tuple(key): value for key, value in json.loads(out.read_text())}


def build_all(path: str) -> None:
    """The child process: build every variant, write [[variant, result], ...] as JSON, and the
    fused kernel's parameters that are not specialized under the key "unspecialized"."""
    assert not triton_fused.INTERPRETED, "the AOT builds must run without TRITON_INTERPRET=1"
    results = [[v, build(*v)] for v in variants()]
    unspecialized = [p.name for p in triton_fused._fused_kernel.params if p.do_not_specialize]
    results.append([["unspecialized"], unspecialized])
    Path(path).write_text(json.dumps(results))


def assert_no_spills(result: dict) -> None:
    spills = re.findall(r"\b(?:ld|st)\.local\b", result["ptx"])
    assert not spills, f"{len(spills)} local-memory accesses in the PTX"
    usage = result["usage"]
    assert usage["STACK"] == 0 and usage["LOCAL"] == 0, f"ptxas spilled registers: {usage}"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_step_kernel_builds_without_spills(target, dtype):
    result = builds()[
        ("step", dtype, TARGETS[target], triton_step.BLOCK_SIZE, triton_step.NUM_WARPS, False)
    ]
    assert re.search(r"\.entry\s+_step_kernel", result["ptx"])
    assert result["cubin_bytes"] > 0, "ptxas produced no cubin"
    assert_no_spills(result)


@pytest.mark.parametrize("target", TARGETS)
def test_step_kernel_moves_float32_in_128_bit_vectors(target):
    ptx = builds()[
        ("step", "fp32", TARGETS[target], triton_step.BLOCK_SIZE, triton_step.NUM_WARPS, False)
    ]["ptx"]
    # x and t are read with ld.global.v4 and x written with st.global.v4: four floats at a time.
    assert len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", ptx)) >= 2
    assert re.search(r"st\.global(?:\.\w+)*\.v4\.b32", ptx)


@pytest.mark.parametrize("per_element", [False, True], ids=["per_program", "per_element"])
@pytest.mark.parametrize("config", triton_fused.CONFIGS, ids=lambda c: f"{c[0]}x{c[1]}w")
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_kernel_builds_every_config_without_spills(dtype, target, config, per_element):
    """Every autotune config, as the autotuner would build it: no spills, and x and t read and x
    written once each in 128-bit vectors, whatever the dtype. (float64 at 32 values a thread
    builds without spilling too, at about 230 registers; the autotuner does not try it.)"""
    result = builds()[("fused", dtype, TARGETS[target], *config, per_element)]
    ptx = result["ptx"]
    assert re.search(r"\.entry\s+_fused_kernel", ptx)
    assert result["cubin_bytes"] > 0, "ptxas produced no cubin"
    assert_no_spills(result)
    assert len(re.findall(VECTOR_LOAD, ptx)) >= 2, "x and t are not loaded in 128-bit vectors"
    assert re.search(VECTOR_STORE, ptx), "x is not stored in 128-bit vectors"


def test_fused_per_element_partials_need_no_shuffle_or_barrier():
    """With per-element partials a float32 step is FMAs and one vector store: no warp shuffle or
    barrier in each step's path. (16-bit x is loaded 8 values to a vector and the float32
    partials stored 4 to a vector: Triton converts between the two layouts through shared
    memory, with barriers, in each step; an accepted cost of the small-N path.)"""
    for dtype in ("fp32", "fp64"):
        ptx = builds()[("fused", dtype, 90, 1024, 4, True)]["ptx"]
        assert not re.search(r"\bbar\.sync\b|\bshfl\.", ptx), dtype
        assert len(re.findall(VECTOR_STORE, ptx)) >= 2, "partials not stored in vectors"


def test_fused_kernel_keeps_x_and_t_in_registers():
    """x and t of a float32 program take 2 x 8 registers a thread at (1024, 4): the kernel uses
    about that many and no shared memory beyond the loss reduction's scratch."""
    usage = builds()[("fused", "fp32", 90, 1024, 4, False)]["usage"]
    assert 16 <= usage["REG"] <= 64, usage


def test_fused_kernel_does_not_specialize_the_trip_count():
    """K is a plain i32 argument: a new K (even 1, or a multiple of 16) reuses the binary."""
    assert builds()[("unspecialized",)] == ["steps"]
