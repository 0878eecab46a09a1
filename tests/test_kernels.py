"""Triton kernels compiled ahead of time for real GPUs: no GPU needed, so a kernel that would not
build for an A100 (sm_80) or an H100 (sm_90) fails here. Then the programs per SM the step kernel's
launcher derives from a build's registers and shared memory, and the bfloat16 rounding of the
kernels where they run (the interpreter on a CPU, the GPU where there is one).

The builds run in one child process with TRITON_INTERPRET=0. In this process (TRITON_INTERPRET=1
on a machine with no GPU) `import triton` has already turned Triton's own library functions
(tl.sum, tl.cdiv, ...) into interpreter wrappers, and the code generator cannot compile kernels
that call them: with a cold Triton cache, an in-process build fails ("gluon: assert ...
isinstance(fn, JITFunction)", or a CompilationError in tl.range). A warm cache used to hide this.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import types
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

from bench.methods import get_method
from bench.problem import SEED, Problem
from kernels import as_acc, triton_fused, triton_step
from kernels.rounding import convert, update

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
    constexprs["INTERPRETED"] = False  # as the launchers build it for a GPU
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
        "shared": compiled.metadata.shared,  # the dynamic shared memory a launch asks for
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
    results += [[v, build_twins(*v)] for v in twins()]
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


# kernels.rounding: compiled for a GPU, the rounding the interpreter needs is not there.


@triton.jit
def _convert_kernel(
    src_ptr,  # *Pointer* to N values to convert.
    dst_ptr,  # *Pointer* to N values of the dtype to convert to.
    n_elements,  # N.
    BLOCK_SIZE: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    value = tl.load(src_ptr + offsets, mask=mask)
    tl.store(dst_ptr + offsets, convert(value, dst_ptr.dtype.element_ty, INTERPRETED), mask=mask)


@triton.jit
def _cast_kernel(src_ptr, dst_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """_convert_kernel with Triton's own cast: what convert must compile to for a GPU."""
    offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    value = tl.load(src_ptr + offsets, mask=mask)
    tl.store(dst_ptr + offsets, value.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _update_kernel(
    x_ptr,  # *Pointer* to N values of x, overwritten by x - scale * diff.
    diff_ptr,  # *Pointer* to N values of diff.
    scale_ptr,  # *Pointer* to one value, the scale.
    n_elements,  # N.
    BLOCK_SIZE: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    diff = tl.load(diff_ptr + offsets, mask=mask)
    tl.store(x_ptr + offsets, update(x, tl.load(scale_ptr), diff, INTERPRETED), mask=mask)


@triton.jit
def _sub_kernel(x_ptr, diff_ptr, scale_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """_update_kernel written out: what update must compile to for a GPU."""
    offsets = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    diff = tl.load(diff_ptr + offsets, mask=mask)
    tl.store(x_ptr + offsets, x - tl.load(scale_ptr) * diff, mask=mask)


def twins() -> list[tuple]:
    """(helper, source dtype, destination dtype, capability): each use the kernels make of
    kernels.rounding, to be built with the helper and with the plain code it stands for."""
    pairs = [("fp32", "bf16"), ("bf16", "fp32"), ("fp32", "fp16"), ("fp16", "fp32")]
    uses = [("convert", src, dst) for src, dst in pairs]
    uses += [("update", dtype, dtype) for dtype in ("fp32", "fp64")]
    return [(*use, cap) for use in uses for cap in TARGETS.values()]


def build_twins(helper: str, src: str, dst: str, capability: int) -> dict[str, str]:
    """The PTX of the kernel that calls the helper (INTERPRETED=False, as the launchers build for
    a GPU) and of its plain twin, without line information (their line numbers differ)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if helper == "convert":
        kernels = {"helper": _convert_kernel, "plain": _cast_kernel}
        pointers = {"src_ptr": f"*{src}", "dst_ptr": f"*{dst}"}
    else:
        kernels = {"helper": _update_kernel, "plain": _sub_kernel}
        pointers = {"x_ptr": f"*{src}", "diff_ptr": f"*{src}", "scale_ptr": f"*{src}"}
    ptx = {}
    with triton.knobs.compilation.scope():
        triton.knobs.compilation.disable_line_info = True
        for name, fn in kernels.items():
            constexprs = {"BLOCK_SIZE": 1024}
            if name == "helper":
                constexprs["INTERPRETED"] = False
            sig = {**pointers, "n_elements": "i32"}
            attrs = {(i,): ALIGNED for i in range(len(sig))}
            sig.update(dict.fromkeys(constexprs, "constexpr"))
            source = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
            compiled = triton.compile(
                source, target=GPUTarget("cuda", capability, 32), options={"num_warps": 4}
            )
            # The kernels' names, and the padding of the comments after them, differ.
            text = re.sub(r"\b_(?:convert|cast|update|sub)_kernel", "KERNEL", compiled.asm["ptx"])
            ptx[name] = re.sub(r"[ \t]+//", " //", text)
    return ptx


@pytest.mark.parametrize("twin", twins(), ids=lambda c: f"{c[0]}-{c[1]}-to-{c[2]}-sm_{c[3]}")
def test_rounding_helpers_compile_to_the_plain_code(twin):
    """On a GPU `convert` is `.to(dtype)` and `update` is `x - scale * diff`, nothing else: the
    same PTX, byte for byte (line info off). So the kernels built for sm_80 and sm_90 are those
    without them."""
    ptx = builds()[twin]
    assert ("cvt" if twin[0] == "convert" else "fma.rn") in ptx["plain"]
    assert ptx["helper"] == ptx["plain"]


# triton_step's programs per SM, from the registers and shared memory of a build.

# The SMs of the GPUs the tests build for, as torch's device properties give them (sm_limits).
A100 = triton_step.SMLimits(
    registers=65536, threads=2048, blocks=32, shared_bytes=164 * 1024, reserved_shared_bytes=1024
)
H100 = triton_step.SMLimits(
    registers=65536, threads=2048, blocks=32, shared_bytes=228 * 1024, reserved_shared_bytes=1024
)
# Compute capability 8.6 (RTX 3090, A40): 48 warps and 16 blocks an SM, 100 KiB of shared memory.
SM86 = triton_step.SMLimits(
    registers=65536, threads=1536, blocks=16, shared_bytes=100 * 1024, reserved_shared_bytes=1024
)
SMS = {"sm_80": A100, "sm_90": H100}


@pytest.mark.parametrize(
    ("registers", "shared", "warps", "sm", "expected"),
    [
        (32, 0, 4, H100, 16),  # 32 x 32 x 4 = 4096 registers a program: 64K hold 16
        (33, 0, 4, H100, 12),  # 33 x 32 = 1056, allocated as 1280 a warp: 51 warps, 12 programs
        (33, 0, 4, A100, 12),
        (40, 0, 4, H100, 12),  # 1280 a warp, as for 33
        (48, 0, 4, A100, 10),  # 1536 a warp: 42 warps, 10 programs
        (40, 0, 8, H100, 6),  # the same registers, twice the warps: half the programs
        (255, 0, 4, H100, 2),  # 8160, allocated as 8192 a warp: 8 warps
        (16, 0, 1, H100, 32),  # 64 warps fit twice over: the 32 blocks an SM holds decide
        (16, 0, 1, SM86, 16),
        (32, 0, 4, SM86, 12),  # 1536 threads an SM: 12 programs of 128
        (32, 48 * 1024, 4, H100, 4),  # 49 KiB a program, with CUDA's 1 KiB, in 228 KiB
        (32, 100 * 1024, 4, H100, 2),
        (32, 100 * 1024, 4, A100, 1),
        (32, 227 * 1024, 4, H100, 1),  # the most one block may have
        (32, 16, 4, H100, 16),  # the step kernel's 16 bytes of reduction scratch change nothing
    ],
)
def test_programs_per_sm(registers, shared, warps, sm, expected):
    assert triton_step.programs_per_sm(registers, shared, warps, sm) == expected


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_step_kernel_programs_per_sm_as_built(target, dtype):
    """The step kernel as built for an A100 and an H100: float32 and 16-bit x take 32 registers a
    thread at 4 warps, 16 programs an SM (64 warps, all an SM holds); float64 takes 46 (sm_80)
    and 40 (sm_90), 10 and 12 programs, where the old constant 16 asked for more than one wave."""
    result = builds()[
        ("step", dtype, TARGETS[target], triton_step.BLOCK_SIZE, triton_step.NUM_WARPS, False)
    ]
    usage = result["usage"]
    # All the shared memory the cubin declares (on sm_90 ptxas reports 1 KiB of static shared
    # memory besides Triton's dynamic scratch), counted in full.
    shared = result["shared"] + usage["SHARED"]
    programs = triton_step.programs_per_sm(usage["REG"], shared, triton_step.NUM_WARPS, SMS[target])
    expected = {"fp64": {"sm_80": 10, "sm_90": 12}}.get(dtype, {}).get(target, 16)
    assert programs == expected, f"{usage['REG']} registers, {shared} bytes of shared memory"


H100_PROPERTIES = {
    "major": 9,
    "minor": 0,
    "multi_processor_count": 132,
    "regs_per_multiprocessor": 65536,
    "max_threads_per_multi_processor": 2048,
    "shared_memory_per_multiprocessor": 228 * 1024,
    "warp_size": 32,
}


@pytest.mark.parametrize(("registers", "programs"), [(32, 16 * 132), (33, 12 * 132)])
def test_step_grid_on_a_gpu_follows_the_compiled_kernel(monkeypatch, registers, programs):
    """num_programs on an H100 (its properties and the compiled kernel stood in for): the SMs x
    the programs each holds; with one more register, 12 an SM instead of 16."""
    properties = types.SimpleNamespace(**H100_PROPERTIES)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    kernel = types.SimpleNamespace(
        n_regs=registers, metadata=types.SimpleNamespace(shared=16, num_warps=4)
    )
    builds = []
    monkeypatch.setattr(triton_step, "compiled_kernel", lambda x, t: builds.append(x) or kernel)
    monkeypatch.setattr(triton_step, "_PROGRAMS_PER_DEVICE", {})
    assert triton_step.sm_limits(torch.device("cuda")) == H100

    def tensor(numel):
        return types.SimpleNamespace(
            numel=lambda: numel,
            device=torch.device("cuda"),
            dtype=torch.float32,
            data_ptr=lambda: 0,
        )

    assert triton_step.num_programs(tensor(2**26)) == programs
    assert triton_step.num_programs(tensor(5 * 1024 + 16)) == 6  # one program a block
    assert len(builds) == 1  # the same specialization: looked up once, not on every fit
    triton_step.num_programs(tensor(5 * 1024 + 1))  # N not a multiple of 16: another build
    assert len(builds) == 2


def test_unknown_gpus_get_the_fewest_blocks_an_sm(monkeypatch):
    properties = types.SimpleNamespace(**{**H100_PROPERTIES, "major": 13, "minor": 7})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    limits = triton_step.sm_limits(torch.device("cuda"))
    assert limits.blocks == triton_step.UNKNOWN_MAX_BLOCKS_PER_SM == 16


def test_step_grid_in_the_interpreter():
    """No SMs there: a few long programs (INTERPRETER_PROGRAMS), or one a block if fewer."""
    assert triton_step.num_programs(torch.empty(2, 4099)) == triton_step.INTERPRETER_PROGRAMS
    assert triton_step.num_programs(torch.empty(1, 5)) == 1


@pytest.mark.cuda
def test_step_grid_from_the_compiled_kernel_on_this_gpu():
    x, t = Problem(batch=64, dim=4099).inputs("cuda")
    kernel = triton_step.compiled_kernel(x, t)
    assert kernel.n_regs > 0 and kernel.n_spills == 0
    per_sm = triton_step.programs_per_sm(
        kernel.n_regs, kernel.metadata.shared, kernel.metadata.num_warps,
        triton_step.sm_limits(x.device),
    )  # fmt: skip
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    assert triton_step.num_programs(x, t) == min(triton.cdiv(x.numel(), 1024), per_sm * sms)
    if torch.cuda.get_device_capability(x.device) in ((8, 0), (9, 0)):
        assert per_sm == 16, f"{kernel.n_regs} registers"


# bfloat16 where the kernels run (Triton's interpreter on a CPU, else the GPU) equals torch's.


def kernel_device() -> str:
    """Where the kernels run in this session: the interpreter on the CPU, or the GPU."""
    if triton_step.INTERPRETED:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("Triton kernels run nowhere here: no GPU, and TRITON_INTERPRET=1 is not set")


def bits_of_float32(*bits: int) -> torch.Tensor:
    return torch.tensor([b - 2**32 if b >= 2**31 else b for b in bits]).int().view(torch.float32)


# float32 values, by their bits, where rounding to bfloat16 can go wrong.
TRICKY_FLOAT32 = {
    "1 + 2^-8 + 2^-12 (above a tie: up)": 0x3F808800,
    "1 + 2^-8 (tie, even below: down)": 0x3F808000,
    "1 + 3 x 2^-8 (tie, odd below: up to even)": 0x3F818000,
    "-(1 + 2^-8 + 2^-12)": 0xBF808800,
    "-(1 + 3 x 2^-8)": 0xBF818000,
    "below a tie": 0x3F807FFF,
    "2 - 2^-23 (up into the next binade)": 0x3FFFFFFF,
    "largest finite float32 (up to inf)": 0x7F7FFFFF,
    "largest finite bfloat16 + a tie (up to inf)": 0x7F7F8000,
    "largest finite bfloat16": 0x7F7F0000,
    "-largest finite float32": 0xFF7FFFFF,
    "inf": 0x7F800000,
    "-inf": 0xFF800000,
    "0": 0x00000000,
    "-0": 0x80000000,
    "smallest subnormal float32 (down to 0)": 0x00000001,
    "subnormal, tie, odd below": 0x00018000,
    "subnormal, tie, even below": 0x00028000,
    "-subnormal above a tie": 0x80008001,
    "largest subnormal (up to the smallest normal)": 0x007FFFFF,
    "smallest normal": 0x00800000,
    "NaN": 0x7FC00000,
    "NaN, payload in the low bits only": 0x7F800001,
    "-NaN": 0xFFC00001,
    "NaN, all ones": 0xFFFFFFFF,
}


def convert_where_the_kernels_run(src: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    device = kernel_device()
    src = src.to(device)
    dst = torch.empty(src.numel(), dtype=dtype, device=device)
    block = 1024 if device == "cuda" else triton.next_power_of_2(src.numel())
    _convert_kernel[(triton.cdiv(src.numel(), block),)](
        src, dst, src.numel(), BLOCK_SIZE=block, INTERPRETED=triton_step.INTERPRETED
    )
    return dst.cpu()


def assert_same_bits(got: torch.Tensor, expected: torch.Tensor, names: list[str]) -> None:
    """Bit for bit, except that any NaN matches any NaN: torch on a CPU writes 0xFFFF for every
    NaN, a GPU 0x7FFF, the interpreter keeps sign and payload."""
    nan = expected.isnan()
    wrong = (got.isnan() != nan).nonzero().flatten().tolist()
    assert not wrong, [f"{names[i]}: {got[i].item()}, torch {expected[i].item()}" for i in wrong]
    width = torch.int16 if got.element_size() == 2 else torch.int32
    mask = (1 << (8 * got.element_size())) - 1
    got_bits, expected_bits = got.view(width), expected.view(width)
    wrong = ((got_bits != expected_bits) & ~nan).nonzero().flatten().tolist()
    assert not wrong, [
        f"{names[i]}: {got_bits[i].item() & mask:#x}, torch {expected_bits[i].item() & mask:#x}"
        for i in wrong[:10]
    ]


def test_float32_to_bfloat16_rounds_to_nearest_even():
    src = bits_of_float32(*TRICKY_FLOAT32.values())
    got = convert_where_the_kernels_run(src, torch.bfloat16)
    assert_same_bits(got, src.to(torch.bfloat16), list(TRICKY_FLOAT32))


def test_float32_to_bfloat16_on_random_bits():
    """2^16 float32 values drawn from every bit pattern (every sign, binade, NaN and subnormal)."""
    gen = torch.Generator().manual_seed(11)
    src = torch.randint(-(2**31), 2**31, (2**16,), generator=gen, dtype=torch.int64)
    src = src.int().view(torch.float32)
    got = convert_where_the_kernels_run(src, torch.bfloat16)
    assert_same_bits(
        got,
        src.to(torch.bfloat16),
        [f"{b & 0xFFFFFFFF:#010x}" for b in src.view(torch.int32).tolist()],
    )


def test_every_bfloat16_widens_to_float32_exactly():
    """All 2^16 bfloat16 values, subnormals included (the interpreter's own cast turns 0x0001
    into 0 and 0x007F into 0x007E0000)."""
    src = torch.arange(2**16, dtype=torch.int32).short().view(torch.bfloat16)
    got = convert_where_the_kernels_run(src, torch.float32)
    assert_same_bits(
        got, src.float(), [f"{b & 0xFFFF:#06x}" for b in src.view(torch.int16).tolist()]
    )


def test_the_interpreter_alone_truncates():
    """Why `convert` exists: Triton's interpreter casts float32 to bfloat16 by truncation, where
    torch and a GPU round to nearest even. If this fails, a new Triton rounds in the interpreter
    too, and the bit arithmetic in kernels/rounding.py can go."""
    if not triton_step.INTERPRETED:
        pytest.skip("the interpreter is not in use")
    src = bits_of_float32(TRICKY_FLOAT32["1 + 2^-8 + 2^-12 (above a tie: up)"])
    dst = torch.empty(1, dtype=torch.bfloat16)
    _cast_kernel[(1,)](src, dst, 1, BLOCK_SIZE=2)
    assert dst.item() == 1.0 and src.to(torch.bfloat16).item() == 1.0078125


def float32_nearest(value: Fraction) -> float:
    """The float32 nearest to an exact rational, ties to even: one rounding, no float64 between."""
    guess = torch.tensor(float(value), dtype=torch.float32)
    candidates = [torch.nextafter(guess, torch.tensor(d)) for d in (-math.inf, math.inf)]
    candidates = [guess, *candidates]
    best = min(
        candidates, key=lambda c: (abs(Fraction(c.item()) - value), c.view(torch.int32).item() & 1)
    )
    return best.item()


def test_update_is_rounded_once_as_an_fma():
    """x - scale * diff where the kernels run equals the exact value rounded once to float32 (an
    FMA), on random float32 values: 0.2% of them differ where product and difference are each
    rounded, as the interpreter's numpy computes it."""
    gen = torch.Generator().manual_seed(12)
    x = torch.rand(4096, generator=gen) * 8
    diff = torch.randn(4096, generator=gen)
    scale = torch.tensor([as_acc(2 * 0.37 / 257, torch.float32)])
    exact = [
        Fraction(a) - Fraction(scale.item()) * Fraction(d)
        for a, d in zip(x.tolist(), diff.tolist(), strict=True)
    ]
    fma = torch.tensor([float32_nearest(e) for e in exact])
    assert not torch.equal(x - scale * diff, fma), "no value here tells one rounding from two"
    device = kernel_device()
    got = x.to(device)
    _update_kernel[(4,)](
        got, diff.to(device), scale.to(device), x.numel(), BLOCK_SIZE=1024,
        INTERPRETED=triton_step.INTERPRETED,
    )  # fmt: skip
    assert torch.equal(got.cpu(), fma), f"{(got.cpu() != fma).sum().item()} values differ"


def bf16_update(x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int):
    """torch's bfloat16 update as the project defines it (bench/methods/analytic.py): x held in
    bfloat16, each step computed in float32, x rounded to bfloat16 after it. Returns x_K and the
    trace in float64, computed from the same bfloat16 x_k.

    x - scale * diff is rounded once, as in the FMA a GPU kernel contracts it into, and in the one
    analytic's x.sub_(diff, alpha=scale) is on an AVX2 CPU (ATen's vectorized fmadd)."""
    scale = as_acc(2.0 * lr / x0.shape[1], torch.float32)
    x, t32 = x0.clone(), t.float()
    loss = torch.empty(steps, dtype=torch.float64)
    for k in range(steps):
        x32 = x.float()
        diff = x32 - t32
        loss[k] = diff.double().square().mean()
        x = (x32.double() - scale * diff.double()).float().to(torch.bfloat16)
    return x, loss


def bf16_problems() -> list[Problem]:
    """The question's case at both rates; odd shapes (D = 1, 257, above a block) converging and
    oscillating, after 1, 3 and 30 steps: a step rounded otherwise than torch's can be washed out
    by the steps after it (where x stalls), so x is compared after the first ones too."""
    problems = [Problem(**{**vars(p), "dtype": "bfloat16"}) for p in SEED]
    for batch, dim in [(3, 1), (3, 257), (2, 4099)]:
        for fraction in (0.05, 0.8):
            for steps in (1, 3, 30):
                lr = fraction * dim
                problems.append(Problem(batch, dim, steps, lr, dtype="bfloat16"))
    return problems


FITS = {
    "triton_step": lambda x, t, lr, steps: triton_step.fit(x, t, lr, steps),
    "triton_fused": lambda x, t, lr, steps: triton_fused.fit(x, t, lr, steps),
    "triton_fused_per_program": lambda x, t, lr, steps: triton_fused.fit(
        x, t, lr, steps, per_element=False
    ),
}


def bf16_fits():
    for problem in bf16_problems():
        for fit in FITS:
            # Per-program partials change only the trace's sums: the larger shapes are enough.
            if fit != "triton_fused_per_program" or problem.dim >= 257:
                yield pytest.param(fit, problem, id=f"{fit}-{problem.name}")


@pytest.mark.parametrize(("fit", "problem"), list(bf16_fits()))
def test_bf16_fit_equals_torch_bit_for_bit(fit, problem):
    """x_K bit for bit; the trace within float32 rounding: each square rounded, N - 1 additions
    in any order, a division and a conversion are within (N + 3) units of 2^-24 of the exact
    mean of non-negative terms."""
    device = kernel_device()
    x0, t = problem.inputs()
    expected_x, expected_loss = bf16_update(x0, t, problem.lr, problem.steps)
    x = x0.to(device)
    loss = FITS[fit](x, t.to(device), problem.lr, problem.steps).cpu()
    x = x.cpu()
    differ = (x != expected_x).sum().item()
    assert differ == 0, f"{differ} of {x.numel()} values differ from torch's bfloat16 update"
    tolerance = (problem.elements + 3) * 2.0**-24 * expected_loss
    assert ((loss.double() - expected_loss).abs() <= tolerance).all()


@pytest.mark.parametrize("problem", bf16_problems(), ids=lambda p: p.name)
def test_the_bf16_update_is_the_analytic_method(problem):
    """bf16_update above is the update the project's analytic method makes, bit for bit."""
    x0, t = problem.inputs()
    expected_x, _ = bf16_update(x0, t, problem.lr, problem.steps)
    assert torch.equal(get_method("analytic").fit(x0, t, problem.lr, problem.steps).x, expected_x)
