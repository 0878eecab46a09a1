"""One fused gradient step per launch: read x and t once, write x and the loss partial sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from kernels import as_acc
from kernels.rounding import convert, interpreted, update

if TYPE_CHECKING:
    from triton.compiler import CompiledKernel


@triton.jit(do_not_specialize=["step"])
def _step_kernel(
    x_ptr,  # *Pointer* to x, N contiguous values, updated in place.
    t_ptr,  # *Pointer* to the targets, N contiguous values.
    scale_ptr,  # *Pointer* to one value, 2 lr / D, in the arithmetic dtype.
    partials_ptr,  # *Pointer* to the [K, P] sums of (x - t)^2: one per program per step.
    step,  # k, the row of partials this launch writes.
    n_elements,  # N = B * D.
    BLOCK_SIZE: tl.constexpr,
    ACC_DTYPE: tl.constexpr,  # float32, or float64 for float64 inputs.
    INTERPRETED: tl.constexpr,  # In Triton's interpreter: round as a GPU does.
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    scale = tl.load(scale_ptr)
    acc = tl.zeros([BLOCK_SIZE], dtype=ACC_DTYPE)
    # Grid-stride loop: P programs cover any N, so the partials stay [K, P] however large N is.
    for start in tl.range(pid * BLOCK_SIZE, n_elements, num_programs * BLOCK_SIZE):
        offsets = start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        x = convert(tl.load(x_ptr + offsets, mask=mask, other=0.0), ACC_DTYPE, INTERPRETED)
        t = convert(tl.load(t_ptr + offsets, mask=mask, other=0.0), ACC_DTYPE, INTERPRETED)
        diff = x - t
        acc += diff * diff
        x = convert(update(x, scale, diff, INTERPRETED), x_ptr.dtype.element_ty, INTERPRETED)
        tl.store(x_ptr + offsets, x, mask=mask)
    tl.store(partials_ptr + step * num_programs + pid, tl.sum(acc, axis=0))


BLOCK_SIZE = 1024  # 8 values a thread at 4 warps: two 128-bit loads of float32, one of 16-bit.
NUM_WARPS = 4
INTERPRETER_PROGRAMS = 4  # the interpreter runs programs one after another: few and long is faster.

# Decided once, when this module is imported (see kernels.rounding.interpreted).
INTERPRETED = interpreted(_step_kernel)


@dataclass(frozen=True)
class SMLimits:
    """What one streaming multiprocessor holds at once: the limits on its resident programs."""

    registers: int  # 32-bit registers in its register file
    threads: int
    blocks: int
    # Shared memory at the largest carveout: the driver sets each kernel's carveout so that shared
    # memory does not limit its occupancy where it can.
    shared_bytes: int
    reserved_shared_bytes: int  # shared memory CUDA reserves for itself in every resident block
    warp_size: int = 32


# Resident blocks an SM can hold, by compute capability (CUDA C++ Programming Guide, "Technical
# Specifications per Compute Capability"); torch's device properties do not carry it.
MAX_BLOCKS_PER_SM = {
    (7, 0): 32,
    (7, 5): 16,
    (8, 0): 32,
    (8, 6): 16,
    (8, 7): 16,
    (8, 9): 24,
    (9, 0): 32,
    (10, 0): 32,
}
# An unknown GPU gets the fewest of those: an SM under-filled, rather than a grid that needs two
# waves.
UNKNOWN_MAX_BLOCKS_PER_SM = 16
# Registers are allocated to a warp in units of 256 (8 a thread), shared memory to a block in
# units of 128 bytes; since compute capability 8.0 CUDA reserves 1 KiB of each block's shared
# memory for itself (cudaDevAttrReservedSharedMemoryPerBlock).
REGISTER_UNIT = 256
SHARED_UNIT = 128
RESERVED_SHARED_BYTES = 1024


def sm_limits(device: torch.device) -> SMLimits:
    """The limits of one SM of a CUDA device, from torch's device properties."""
    props = torch.cuda.get_device_properties(device)
    return SMLimits(
        registers=props.regs_per_multiprocessor,
        threads=props.max_threads_per_multi_processor,
        blocks=MAX_BLOCKS_PER_SM.get((props.major, props.minor), UNKNOWN_MAX_BLOCKS_PER_SM),
        shared_bytes=props.shared_memory_per_multiprocessor,
        reserved_shared_bytes=RESERVED_SHARED_BYTES if props.major >= 8 else 0,
        warp_size=props.warp_size,
    )


def programs_per_sm(registers: int, shared_bytes: int, num_warps: int, sm: SMLimits) -> int:
    """How many programs of a kernel one SM holds at once, as CUDA's occupancy calculator counts
    them: `registers` a thread x 32 threads a warp (rounded up to 256) x `num_warps` warps against
    the register file; `shared_bytes` a program (plus CUDA's reservation, rounded up to 128)
    against the SM's shared memory; threads and blocks against the hardware's maxima."""
    warp_registers = triton.cdiv(max(registers, 1) * sm.warp_size, REGISTER_UNIT) * REGISTER_UNIT
    by_registers = sm.registers // warp_registers // num_warps
    by_threads = sm.threads // (num_warps * sm.warp_size)
    block_shared = triton.cdiv(shared_bytes + sm.reserved_shared_bytes, SHARED_UNIT) * SHARED_UNIT
    by_shared = sm.shared_bytes // block_shared if block_shared else sm.blocks
    return max(1, min(sm.blocks, by_registers, by_threads, by_shared))


def compiled_kernel(x: torch.Tensor, t: torch.Tensor) -> CompiledKernel:
    """The step kernel as Triton builds it for these x and t: compiled on first use, then from
    Triton's cache. Its registers depend on the dtype and the specialization: at 4 warps, float32
    takes 32 on sm_80 and sm_90 with 16-byte aligned pointers, 36 on sm_80 without; float64 40 to
    48 (tests/test_kernels.py reads them from the AOT builds)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    # scale and partials as dtypes: Triton assumes them 16-byte aligned, as torch's allocations
    # on the GPU always are (the caching allocator hands out blocks of 512 bytes and more).
    kernel = _step_kernel.warmup(
        x, t, acc, acc, 0, x.numel(),
        BLOCK_SIZE=BLOCK_SIZE, ACC_DTYPE=tl.float64 if acc == torch.float64 else tl.float32,
        INTERPRETED=False, num_warps=NUM_WARPS, grid=(1,),
    )  # fmt: skip
    kernel._init_handles()  # loads the binary: n_regs is read from the driver there (Triton 3.8)
    return kernel


def num_programs(x: torch.Tensor, t: torch.Tensor | None = None) -> int:
    """P: one program per block, capped so that every SM is full and no more. On a GPU the cap is
    the SMs x the programs each holds, from the compiled kernel's registers and shared memory
    (`programs_per_sm`); in the interpreter, which has no SMs, INTERPRETER_PROGRAMS."""
    blocks = triton.cdiv(x.numel(), BLOCK_SIZE)
    if x.device.type != "cuda":
        return max(1, min(blocks, INTERPRETER_PROGRAMS))
    t = x if t is None else t
    # What Triton specializes a build on (pointer alignment, N divisible by 16) and where: the
    # same key, the same build. Cached, so that a timed fit pays no compile-cache lookup.
    key = (x.device, x.dtype, x.data_ptr() % 16 == 0, t.data_ptr() % 16 == 0, x.numel() % 16 == 0)
    if key not in _PROGRAMS_PER_DEVICE:
        kernel = compiled_kernel(x, t)
        # metadata.shared: the shared memory Triton asks for at launch (16 bytes of reduction
        # scratch here). Not in it: the 1 KiB that ptxas adds statically to sm_90 builds using
        # shared memory (cuobjdump shows it; the tests count it), which matters only where shared
        # memory limits occupancy: not here, at 2 KiB a program of 228 KiB.
        per_sm = programs_per_sm(
            kernel.n_regs, kernel.metadata.shared, kernel.metadata.num_warps, sm_limits(x.device)
        )
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        _PROGRAMS_PER_DEVICE[key] = per_sm * sms
    return max(1, min(blocks, _PROGRAMS_PER_DEVICE[key]))


# (device, dtype, alignments) -> the programs that fill every SM once.
_PROGRAMS_PER_DEVICE: dict[tuple, int] = {}


def fit(x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """Apply `steps` updates to x in place, one launch each; return the [steps] float32 trace."""
    if x.shape != t.shape or x.dtype != t.dtype or x.device != t.device:
        raise ValueError("x and t must have the same shape, dtype and device")
    if x.dim() != 2 or not (x.is_contiguous() and t.is_contiguous()):
        raise ValueError("x and t must be contiguous [batch, dim] tensors")
    n_elements = x.numel()
    programs = num_programs(x, t)
    if n_elements + BLOCK_SIZE * programs >= 2**31:
        raise ValueError(f"{n_elements} elements is too many for 32-bit offsets")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    # A fill on the device: no host copy.
    scale = torch.full((), as_acc(2.0 * lr / x.shape[1], acc), dtype=acc, device=x.device)
    partials = torch.empty(steps, programs, dtype=acc, device=x.device)
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    for k in range(steps):
        _step_kernel[(programs,)](
            x, t, scale, partials, k, n_elements,
            BLOCK_SIZE=BLOCK_SIZE, ACC_DTYPE=acc_tl, INTERPRETED=INTERPRETED, num_warps=NUM_WARPS,
        )  # fmt: skip
    return (partials.sum(dim=1) / n_elements).float()
