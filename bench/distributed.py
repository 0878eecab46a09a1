"""The batch sharded over ranks with torch.distributed: each rank fits its own block of rows.

Rows are independent (x_k - t = (1 - 2 lr / D)^k (x0 - t) row by row), so a rank fits its rows
with any method that runs on its device, untouched; only the loss trace needs every row, and it
is a sum. `sharded_fit` returns the full-batch trace on every rank, assembled by one all-reduce at
the end of the fit, not one per step:

    loss[k] = sum over ranks of (rows_r * loss_r[k]) / B

where loss_r is the rank's own trace, the mean over its rows. The products and the sum are taken in
float64 (a float32 value times a row count below 2^29 is exact there), and the result is rounded to
float32 once. So the sharded trace differs from a one-process fit's only by the order in which the
float32 means were summed: within 2 units of float32's eps, relatively, on the CPU (1.6 to 1.9 eps
measured, B = 5 to 1024, 2 to 4 ranks, analytic and autograd, float32, float64 and bfloat16;
tests/test_distributed.py holds it to 4 eps). x is computed row by row as in one process: on the
CPU it came out bitwise equal to the one-process fit in every case measured.

`time_sharded_fit` times it as the slowest rank sees it (see there). Launching the ranks is the job
of `torchrun` or `python -m bench scale` (bench.scale); the functions here only need an initialized
process group, NCCL on GPUs or gloo on CPUs.
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist

from bench import oracle
from bench.methods.base import Fit, Method, check_inputs


def rows(rank: int, world_size: int, batch: int) -> slice:
    """The contiguous block of rows that `rank` of `world_size` fits: the first `batch %
    world_size` ranks hold one row more than the others. Where `batch < world_size` the last ranks
    hold no rows (an empty slice at the end)."""
    for name, value in (("rank", rank), ("world_size", world_size), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}={value!r} is not allowed; it must be an integer")
    if world_size < 1 or not 0 <= rank < world_size or batch < 0:
        raise ValueError(
            f"rows({rank}, {world_size}, {batch}): need 0 <= rank < world_size and batch >= 0"
        )
    share, extra = divmod(batch, world_size)
    start = rank * share + min(rank, extra)
    return slice(start, start + share + (rank < extra))


def block_size(rank: int, world_size: int, batch: int) -> int:
    block = rows(rank, world_size, batch)
    return block.stop - block.start


def sharded_fit(
    method: Method,
    x0: torch.Tensor,
    t: torch.Tensor,
    lr: float,
    steps: int,
    gather: bool = False,
    *,
    group: dist.ProcessGroup | None = None,
    batch: int | None = None,
) -> Fit:
    """Fit the batch sharded over the ranks of `group` (default: the whole world); every rank of
    the group calls it, with the same arguments.

    Inputs: either the full x0 and t ([B, D], the same on every rank; `batch` left out), or only
    this rank's rows, `x0[rows(rank, world_size, batch)]` and the same of t, with `batch` = B
    (then no rank ever holds the whole batch; a rank with no rows passes [0, D] tensors).

    Returns a Fit whose `loss` is the full-batch trace ([steps] float32, the same on every rank,
    on x0's device) and whose `x` is this rank's rows of x_K, or with `gather=True` on the group's
    rank 0 all B rows (the other ranks still get only their own). The trace costs one all-reduce
    at the end of the fit; `gather=True` adds one gather of x after it.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if batch is None:
        check_inputs(x0, t, lr, steps)
        batch = x0.shape[0]
        block = rows(rank, world, batch)
        x_mine, t_mine = x0[block], t[block]
    else:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch={batch!r} is not allowed; it must be an integer >= 1")
        block = rows(rank, world, batch)
        mine = block.stop - block.start
        if not isinstance(x0, torch.Tensor) or x0.dim() != 2 or x0.shape[0] != mine:
            shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
            raise ValueError(
                f"x0 has shape {shape}; rank {rank} of {world} holds rows "
                f"{block.start}:{block.stop} of batch={batch}, so it must be [{mine}, dim]"
            )
        if not isinstance(t, torch.Tensor) or t.shape != x0.shape:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t has shape {shape}; it must match x0's shape {tuple(x0.shape)}")
        # A rank with no rows checks the rest (dtype, device, lr, steps) on one row of zeros.
        probe = (x0, t) if mine else (x0.new_zeros(1, x0.shape[1]), t.new_zeros(1, t.shape[1]))
        check_inputs(*probe, lr, steps)
        x_mine, t_mine = x0, t
    mine = block.stop - block.start
    if mine:
        fit = method.fit(x_mine, t_mine, lr, steps)
        x = fit.x
        total = fit.loss.to(torch.float64) * mine  # this rank's sum of row losses, per step
    else:
        # No rows: nothing to fit, but the same refusals as the others (so that no rank is left
        # waiting in the all-reduce), and a zero sum to add.
        reason = method.available(x_mine.device)
        if reason is not None:
            raise RuntimeError(f"method {method.name!r} cannot run on {x_mine.device}: {reason}")
        method.check_memory(x_mine, steps)
        x = x_mine.detach().clone()
        total = torch.zeros(steps, dtype=torch.float64, device=x_mine.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)  # the trace's one collective
    loss = (total / batch).to(torch.float32)
    if gather:
        x = gather_rows(x, batch, group)
    return Fit(x=x, loss=loss)


def gather_rows(
    x: torch.Tensor, batch: int, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """All B rows on the group's rank 0, in order; the other ranks get their own `x` back.

    torch.distributed's gather takes blocks of one size, so each block is padded to the largest
    (ceil(B / world_size) rows) and trimmed after. The bytes are gathered, not the numbers: the
    same for every dtype, whatever the backend supports."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    largest = -(-batch // world)
    padded = x.new_zeros((largest, x.shape[1]))
    padded[: x.shape[0]] = x
    send = padded.view(torch.uint8)
    buckets = [torch.empty_like(send) for _ in range(world)] if rank == 0 else None
    dst = dist.get_global_rank(group, 0) if group is not None else 0
    dist.gather(send, gather_list=buckets, dst=dst, group=group)
    if rank != 0:
        return x
    return torch.cat(
        [bucket.view(x.dtype)[: block_size(r, world, batch)] for r, bucket in enumerate(buckets)]
    )


# --- timing --------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def barrier(group: dist.ProcessGroup | None, device: torch.device) -> None:
    """A barrier of `group` that has returned on this rank's host (NCCL's is queued on the
    stream: it needs the device and a wait)."""
    if device.type == "cuda":
        dist.barrier(group=group, device_ids=[device.index])
        synchronize(device)
    else:
        dist.barrier(group=group)


def time_sharded_fit(
    method: Method,
    x_mine: torch.Tensor,
    t_mine: torch.Tensor,
    lr: float,
    steps: int,
    batch: int,
    rounds: int,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """[rounds, world_size] seconds: each rank's time for each of `rounds` sharded fits.

    Per round: a barrier, then on each rank its fit (its rows' K steps and the trace's all-reduce)
    and a wait for its device, on the host clock. The fit ends in a collective, so no rank's clock
    stops before the slowest rank has finished its rows; a rank that left the barrier early waits
    in the all-reduce, and its time is the longest. The time of a round is the maximum over the
    ranks (`.amax(dim=1)`): never less than the slowest rank's work, whatever the barrier's skew.
    Every rank's times are exchanged once, after the last round (one all-reduce, untimed), and
    returned on every rank. Each fit copies the rank's rows once (Method.fit), one pass against
    the 3 K passes of its steps. Only this rank's rows are passed (`batch` = B)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    device = x_mine.device
    times = torch.zeros(rounds, world, dtype=torch.float64)
    for r in range(rounds):
        barrier(group, device)
        begin = time.perf_counter()
        sharded_fit(method, x_mine, t_mine, lr, steps, group=group, batch=batch)
        synchronize(device)
        times[r, rank] = time.perf_counter() - begin
    shared = times.to(device)  # NCCL reduces device tensors only
    dist.all_reduce(shared, op=dist.ReduceOp.SUM, group=group)
    return shared.cpu()


# --- the closed form ------------------------------------------------------------------------------


def oracle_errors(
    x: torch.Tensor, loss: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int
) -> dict[str, float | bool]:
    """A sharded fit's gathered x and its trace against the closed form (bench.oracle), with the
    rules bench.timing and tests/test_methods.py hold one-process fits to:

    - x: max |x_K - closed form| within 4 (K + 1) eps scale (the rounding of each step, a few
      units in the last place of the largest value, accumulated over K steps); float16 and
      bfloat16 also up to twice the error of the update in plain PyTorch at that precision;
    - trace: |loss[k] - closed form| within what that error in x allows,
      2 sqrt(loss[k]) delta + delta^2, plus 8 float32 eps of loss[k] for its rounding.
    """
    x0, t = x0.cpu(), t.cpu()
    expected_x = oracle.x_at(x0, t, lr, steps)
    x_err = (x.detach().double().cpu() - expected_x).abs().max().item()
    scale = max(x0.abs().max().item(), t.abs().max().item(), 1.0)
    eps = torch.finfo(x0.dtype).eps
    tolerance = 4 * (steps + 1) * eps * scale
    if x0.dtype in (torch.float16, torch.bfloat16):
        plain = x0.clone()
        for _ in range(steps):
            plain = plain - lr * 2 * (plain - t) / plain.shape[1]
        plain_err = (plain.double() - expected_x).abs().max().item()
        tolerance = max(tolerance, 2 * plain_err + eps * scale)
    ref = oracle.loss_trace(x0, t, lr, steps)
    allowed = 2 * ref.sqrt() * tolerance + tolerance**2 + 8 * torch.finfo(torch.float32).eps * ref
    trace_ratio = ((loss.detach().double().cpu() - ref).abs() / allowed).max().item()
    ok = x_err <= tolerance and trace_ratio <= 1.0  # False for NaN
    return {
        "x_err": x_err if math.isfinite(x_err) else math.inf,
        "x_tolerance": tolerance,
        "trace_err_over_allowed": trace_ratio if math.isfinite(trace_ratio) else math.inf,
        "oracle_ok": bool(ok),
    }
