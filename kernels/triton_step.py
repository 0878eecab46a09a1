"""One fused gradient step per launch: read x and t once, write x and the loss partial sums."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import as_acc


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
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    scale = tl.load(scale_ptr)
    acc = tl.zeros([BLOCK_SIZE], dtype=ACC_DTYPE)
    # Grid-stride loop: P programs cover any N, so the partials stay [K, P] however large N is.
    for start in tl.range(pid * BLOCK_SIZE, n_elements, num_programs * BLOCK_SIZE):
        offsets = start + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        t = tl.load(t_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
        diff = x - t
        acc += diff * diff
        tl.store(x_ptr + offsets, (x - scale * diff).to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(partials_ptr + step * num_programs + pid, tl.sum(acc, axis=0))


BLOCK_SIZE = 1024  # 8 values a thread at 4 warps: two 128-bit loads of float32, one of 16-bit.
NUM_WARPS = 4
PROGRAMS_PER_SM = 16  # 16 programs x 4 warps = 64 warps, a full H100 or A100 SM.
INTERPRETER_PROGRAMS = 4  # the interpreter runs programs one after another: few and long is faster.


def num_programs(n_elements: int, device: torch.device) -> int:
    """P: one program per block, capped so that every SM is full and no more."""
    if device.type == "cuda":
        cap = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        cap = INTERPRETER_PROGRAMS
    return max(1, min(triton.cdiv(n_elements, BLOCK_SIZE), cap))


def fit(x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """Apply `steps` updates to x in place, one launch each; return the [steps] float32 trace."""
    if x.shape != t.shape or x.dtype != t.dtype or x.device != t.device:
        raise ValueError("x and t must have the same shape, dtype and device")
    if x.dim() != 2 or not (x.is_contiguous() and t.is_contiguous()):
        raise ValueError("x and t must be contiguous [batch, dim] tensors")
    n_elements = x.numel()
    if n_elements + BLOCK_SIZE * num_programs(n_elements, x.device) >= 2**31:
        raise ValueError(f"{n_elements} elements is too many for 32-bit offsets")
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    # A fill on the device: no host copy.
    scale = torch.full((), as_acc(2.0 * lr / x.shape[1], acc), dtype=acc, device=x.device)
    programs = num_programs(n_elements, x.device)
    partials = torch.empty(steps, programs, dtype=acc, device=x.device)
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    for k in range(steps):
        _step_kernel[(programs,)](
            x, t, scale, partials, k, n_elements,
            BLOCK_SIZE=BLOCK_SIZE, ACC_DTYPE=acc_tl, num_warps=NUM_WARPS,
        )  # fmt: skip
    return (partials.sum(dim=1) / n_elements).float()
