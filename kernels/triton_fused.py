"""All K steps in one launch: each program holds its slice of x and t in registers for every step.

The update is elementwise, so a program never needs another program's values: it loads its
BLOCK_SIZE elements of x and t once, applies the K steps to them in registers, and writes x once.
Only the loss needs every element; each program writes one partial sum per step into a [K, P]
table (no atomics), and one reduction over P at the end gives the trace. For small N the
per-step block reduction (shuffles and barriers) would be the whole cost of a step, and it sits
in every step's path: there each element writes its own (x - t)^2 into a [K, N] table instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import as_acc
from kernels.rounding import convert, interpreted, update


@triton.jit(do_not_specialize=["steps"])
def _fused_kernel(
    x_ptr,  # *Pointer* to x, N contiguous values, read once and written once.
    t_ptr,  # *Pointer* to the targets, N contiguous values, read once.
    scale_ptr,  # *Pointer* to one value, 2 lr / D, in the arithmetic dtype.
    partials_ptr,  # *Pointer* to the [steps, partials_stride] sums of (x - t)^2, row k = step k.
    steps,  # K, the trip count: not specialized, so a new K does not recompile.
    partials_stride,  # Row stride of the partials: >= P (or >= N with PER_ELEMENT).
    n_elements,  # N = B * D.
    BLOCK_SIZE: tl.constexpr,
    ACC_DTYPE: tl.constexpr,  # float32, or float64 for float64 inputs.
    PER_ELEMENT: tl.constexpr,  # Row k holds each element's (x - t)^2, not one sum per program.
    INTERPRETED: tl.constexpr,  # In Triton's interpreter: round as a GPU does.
):
    pid = tl.program_id(0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    # Masked lanes hold x = t = 0: their difference is 0, so they add nothing to the loss.
    x = convert(tl.load(x_ptr + offsets, mask=mask, other=0.0), ACC_DTYPE, INTERPRETED)
    t = convert(tl.load(t_ptr + offsets, mask=mask, other=0.0), ACC_DTYPE, INTERPRETED)
    scale = tl.load(scale_ptr)
    for k in tl.range(0, steps):
        diff = x - t
        if PER_ELEMENT:
            tl.store(partials_ptr + k * partials_stride + offsets, diff * diff, mask=mask)
        else:
            tl.store(partials_ptr + k * partials_stride + pid, tl.sum(diff * diff, axis=0))
        # Round to x's dtype after every step, as every method does: x in registers is always a
        # value that x's dtype can hold (a no-op for float32 and float64).
        x = convert(update(x, scale, diff, INTERPRETED), x_ptr.dtype.element_ty, INTERPRETED)
        x = convert(x, ACC_DTYPE, INTERPRETED)
    tl.store(x_ptr + offsets, convert(x, x_ptr.dtype.element_ty, INTERPRETED), mask=mask)


# (BLOCK_SIZE, num_warps): 8 to 32 elements a thread, i.e. 16 to 64 registers for x and t in
# float32, well under the 255 a thread may have. Fewer elements a thread spend more of each step
# on the block reduction of the loss; more lower occupancy.
CONFIGS: tuple[tuple[int, int], ...] = (
    (1024, 4),
    (2048, 4),
    (4096, 4),
    (2048, 8),
    (4096, 8),
    (8192, 8),
)
MIN_BLOCK_SIZE = min(block for block, _ in CONFIGS)
# The interpreter cannot autotune ("0 active drivers"): it runs this one config.
INTERPRETER_CONFIG = (1024, 4)

# Up to this N each element writes its own partials: a [K, N] table, 64 MiB at K = 1024, and a
# step costs a few dependent FMAs and a store instead of a block reduction.
PER_ELEMENT_MAX_N = 2**14

# Otherwise the partials take K * cdiv(N, BLOCK_SIZE) values. At the smallest block, 1024, that
# is K / 1024 of x's size in float32: at K = 1000 and 2^26 float32 elements, 250 MiB beside x's
# 256 MiB. The launcher caps them at the larger of 64 MiB and x's own size by splitting K into
# chunks of launches (each re-reads and re-writes x once: 3 x 4 bytes x N per chunk, small next
# to the arithmetic of 1024 steps), so a fit never needs more than twice x's memory plus 64 MiB.
PARTIALS_MIN_CAP_BYTES = 64 * 2**20

# Decided once, when this module is imported (see kernels.rounding.interpreted).
INTERPRETED = interpreted(_fused_kernel)

if INTERPRETED:
    _tuned_kernel = None
else:
    # Keyed on N (and, by the autotuner, the dtype of every tensor argument), never on K: a
    # config tuned on a short fit serves a long one. The kernel writes x in place, so every
    # benchmarked config starts from the same x and the fit is not advanced by the tuning.
    _tuned_kernel = triton.autotune(
        configs=[triton.Config({"BLOCK_SIZE": block}, num_warps=warps) for block, warps in CONFIGS],
        key=["n_elements"],
        restore_value=["x_ptr"],
        prune_configs_by={"early_config_prune": lambda configs, args, **_: prune(configs, args)},
    )(_fused_kernel)


def tunable(block: int, warps: int, float64: bool) -> bool:
    """float64 x and t at 32 values a thread take about 230 of a thread's 255 registers (see
    tests/test_kernels.py), leaving one or two warps a scheduler: not tried for float64."""
    return not float64 or block <= FLOAT64_MAX_VALUES_PER_THREAD * 32 * warps


FLOAT64_MAX_VALUES_PER_THREAD = 16


def prune(configs: list, args: dict) -> list:
    float64 = args["x_ptr"].dtype == torch.float64
    return [c for c in configs if tunable(c.kwargs["BLOCK_SIZE"], c.num_warps, float64)]


def partials_shape(
    n_elements: int, steps: int, x_bytes: int, acc_bytes: int, per_element: bool = False
) -> tuple[int, int]:
    """(steps per launch, row stride) of the partials buffer, for N elements of `x_bytes` each
    summed in `acc_bytes`: at most max(64 MiB, x's size) at any K."""
    # A multiple of 16, which Triton sees at launch: each row starts 64-byte aligned, so the
    # per-element partials are stored in the same vectors as x, with no layout change per step.
    stride = n_elements if per_element else triton.cdiv(n_elements, MIN_BLOCK_SIZE)
    stride = triton.cdiv(stride, 16) * 16
    cap = max(PARTIALS_MIN_CAP_BYTES, n_elements * x_bytes)
    return max(1, min(steps, cap // (stride * acc_bytes))), stride


def fit(
    x: torch.Tensor,
    t: torch.Tensor,
    lr: float,
    steps: int,
    config: tuple[int, int] | None = None,
    per_element: bool | None = None,
) -> torch.Tensor:
    """Apply `steps` updates to x in place in one launch (or a few, for huge partials); return
    the [steps] float32 trace. `config` = (BLOCK_SIZE, num_warps) bypasses the autotuner;
    `per_element` overrides the choice of partials (per element up to PER_ELEMENT_MAX_N)."""
    if x.shape != t.shape or x.dtype != t.dtype or x.device != t.device:
        raise ValueError("x and t must have the same shape, dtype and device")
    if x.dim() != 2 or not (x.is_contiguous() and t.is_contiguous()):
        raise ValueError("x and t must be contiguous [batch, dim] tensors")
    n_elements = x.numel()
    if n_elements + max(block for block, _ in CONFIGS) >= 2**31:
        raise ValueError(f"{n_elements} elements is too many for 32-bit offsets")
    if config is None and INTERPRETED:
        config = INTERPRETER_CONFIG
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    acc_tl = tl.float64 if acc == torch.float64 else tl.float32
    # A fill on the device: no host copy.
    scale = torch.full((), as_acc(2.0 * lr / x.shape[1], acc), dtype=acc, device=x.device)
    if per_element is None:
        per_element = n_elements <= PER_ELEMENT_MAX_N
    chunk, stride = partials_shape(
        n_elements, steps, x.element_size(), scale.element_size(), per_element
    )
    partials = torch.empty(chunk, stride, dtype=acc, device=x.device)
    loss = torch.empty(steps, dtype=acc, device=x.device)
    for start in range(0, steps, chunk):
        k = min(chunk, steps - start)
        if config is None:
            _tuned_kernel[lambda meta: (triton.cdiv(n_elements, meta["BLOCK_SIZE"]),)](
                x, t, scale, partials, k, stride, n_elements,
                ACC_DTYPE=acc_tl, PER_ELEMENT=per_element, INTERPRETED=INTERPRETED,
            )  # fmt: skip
            # Read on the host after the launch: the config this key was tuned to, no sync.
            programs = triton.cdiv(n_elements, _tuned_kernel.best_config.kwargs["BLOCK_SIZE"])
        else:
            block, warps = config
            programs = triton.cdiv(n_elements, block)
            _fused_kernel[(programs,)](
                x, t, scale, partials, k, stride, n_elements,
                BLOCK_SIZE=block, ACC_DTYPE=acc_tl, PER_ELEMENT=per_element,
                INTERPRETED=INTERPRETED, num_warps=warps,
            )  # fmt: skip
        columns = n_elements if per_element else programs
        torch.sum(partials[:k, :columns], dim=1, out=loss[start : start + k])
    return (loss / n_elements).float()
