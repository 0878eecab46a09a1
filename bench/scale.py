"""`python -m bench scale`: how the time of one fit scales with the batch sharded over 1..N ranks.

Two ways to start it, one code path on the ranks (`rank_main`):

- `torchrun --nproc-per-node N -m bench scale ...` (and across nodes with torchrun's rendezvous):
  every process of the launch is a rank. The rank counts of the curve (`--ranks`, default 1, 2,
  4, ... up to N) are measured in this one launch, each on the process group of ranks 0 .. n-1
  (the others wait at a barrier), so every count runs with the launch's threads per rank.
- `python -m bench scale --ranks 1,2,4`: one launch of torch.distributed's own launcher
  (`torch.distributed.launcher.api.elastic_launch`, what torchrun runs) per rank count, so each
  count gets the machine to itself and its own threads per rank.

On CUDA each rank uses cuda:LOCAL_RANK with NCCL; on the CPU, gloo, with torch threads per rank =
the cores this process may use // the ranks on this node. Rank 0 checks every case's gathered x and
its trace against the closed form, prints the table and writes to --out: scale.csv and scale.md;
scale.json, a pytest-benchmark results file that bench.results reads (a case per method, problem,
scaling and rank count: `case_problem`); and the page, scaling/index.html (bench.report.scaling).

`--scaling strong` (the default) splits each problem of the sweep over the ranks; `weak` gives
each rank the sweep problem's rows (B = its B x ranks); `both` measures the two, the 1-rank case
once.

A rank that fails ends the run, never hangs it. One node: the launcher (torchrun, or ours under
`--ranks`) polls its ranks every 0.1 s (torchrun's --monitor-interval default), stops the others
at the first failure (SIGTERM, SIGKILL SHUTDOWN_S later), and the command exits 1 naming the rank
(`failure_line`; under torchrun, torchrun's summary names it). Across nodes, a rank whose peer
died fails in its next collective: at once where the connection breaks (gloo), at the latest
after `--timeout` seconds (the process group's timeout, DEFAULT_TIMEOUT_S).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_ROUNDS = 15  # timed fits per case: enough for the 95% intervals of bench.stats (>= 5)
# A rank that waits longer than this in one collective fails (init_process_group's timeout). Idle
# ranks wait at a barrier while a smaller rank count is measured, so it must exceed the longest
# case, torch.compile included (about 15 s per shape on a CPU).
DEFAULT_TIMEOUT_S = 600
# How long the launcher gives a rank to stop after SIGTERM before it kills it.
SHUTDOWN_S = 5


SCALING_CHOICES = ("strong", "weak", "both")


@dataclass(frozen=True)
class Plan:
    """What every rank measures: given to each rank of a launch (as JSON on its command line)."""

    sweep: str
    methods: tuple[str, ...]
    device: str  # "cpu" or "cuda"
    counts: tuple[int, ...]  # the rank counts, ascending, 1 first
    rounds: int = DEFAULT_ROUNDS
    timeout_s: float = DEFAULT_TIMEOUT_S
    launched: bool = False  # started by `--ranks`, one launch per count (not torchrun)
    progress: tuple[int, int] = (0, 0)  # cases shown before this launch's, and in all (--ranks)
    scaling: tuple[str, ...] = ("strong",)  # "strong", "weak" or both, in that order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ranks",
        default=None,
        metavar="1,2,4",
        help="rank counts to measure. Without torchrun: one launch of torch.distributed's "
        "launcher per count (default: 1,2). Under torchrun: process groups of the first n ranks "
        "of the launch (default: 1, 2, 4, ... up to its ranks). 1 is always measured: the "
        "speedups are over it",
    )
    parser.add_argument(
        "--scaling",
        default="strong",
        metavar="strong|weak|both",
        help="strong: each problem of the sweep as it is, split over the ranks; weak: each rank "
        "holds as many rows as the sweep's problem has (B = rows per rank x ranks); both "
        "(default: strong)",
    )
    parser.add_argument(
        "--sweep", default="quick", help="the named set of problems to time (default: quick)"
    )
    parser.add_argument(
        "--methods",
        default=None,
        metavar="A,B",
        help="comma-separated method names (default: every method the device can run)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu (gloo) or cuda (NCCL) (default: cuda if present)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write scale.csv, scale.md, scale.json (the results file) and the page "
        "scaling/index.html (default: reports/scale/<UTC time>/)",
    )
    parser.add_argument(
        "--rounds",
        default=str(DEFAULT_ROUNDS),
        metavar="N",
        help=f"timed fits per case, at least 5 (default: {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--timeout",
        default=str(DEFAULT_TIMEOUT_S),
        metavar="SECONDS",
        help="a rank waiting longer than this in one collective fails the run (default: "
        f"{DEFAULT_TIMEOUT_S}); a rank that dies ends the run at once",
    )


# --- options --------------------------------------------------------------------------------------


def launch_env() -> dict[str, int] | None:
    """RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE where a launcher (torchrun) started this
    process, else None."""
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    if not all(name in os.environ for name in names):
        return None
    return {name: int(os.environ[name]) for name in names}


def parse_ranks(value: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): whole numbers >= 1, 1 added where missing, ascending."""
    counts = set()
    for part in value.split(","):
        try:
            count = int(part.strip())
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(
                f"--ranks {value}: {part.strip() or 'an empty item'} is not a rank count; "
                "give whole numbers >= 1, e.g. 1,2,4"
            )
        counts.add(count)
    return tuple(sorted(counts | {1}))


def default_counts(world: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `world`, and `world`."""
    counts, n = [], 1
    while n < world:
        counts.append(n)
        n *= 2
    return (*counts, world)


def parse_positive(value: str, option: str, least: float, integer: bool) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = math.nan
    if not number >= least or not math.isfinite(number):
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{option} {value}: it must be {kind} >= {least:g}")
    return number


def make_plan(args: argparse.Namespace, world: int | None) -> Plan:
    """The checked options (`world`: the launch's ranks under torchrun, else None); UsageError
    names the bad one."""
    from bench import plugin
    from bench.cli import UsageError
    from bench.methods import METHODS

    try:
        device = plugin.parse_device(args.device) if args.device else plugin.default_device()
        device = "cuda" if device.startswith("cuda") else "cpu"
        sweep = plugin.parse_sweep(args.sweep)
        if args.methods:
            methods = plugin.parse_methods(args.methods)
        else:  # those that can run on the device (a named one that cannot is skipped, with why)
            methods = [name for name, m in METHODS.items() if m.available(device) is None]
        if world is None:
            counts = parse_ranks(args.ranks) if args.ranks else (1, 2)
        else:
            counts = parse_ranks(args.ranks) if args.ranks else default_counts(world)
        if args.scaling not in SCALING_CHOICES:
            raise ValueError(f"--scaling {args.scaling}: give strong, weak or both")
        rounds = int(parse_positive(args.rounds, "--rounds", 5, integer=True))
        timeout = parse_positive(args.timeout, "--timeout", 1, integer=False)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if world is not None and counts[-1] > world:
        raise UsageError(
            f"--ranks {args.ranks}: this launch has {world} ranks; measure at most that many "
            "(torchrun --nproc-per-node / --nnodes start more)"
        )
    if device == "cuda" and world is None:
        import torch

        gpus = torch.cuda.device_count()
        if counts[-1] > gpus:
            raise UsageError(
                f"--ranks {args.ranks}: {counts[-1]} ranks need {counts[-1]} CUDA devices, one "
                f"each; this machine has {gpus} (more nodes: run under torchrun, see README)"
            )
    scaling = ("strong", "weak") if args.scaling == "both" else (args.scaling,)
    return Plan(
        sweep,
        tuple(methods),
        device,
        counts,
        rounds,
        timeout,
        launched=world is None,
        scaling=scaling,
    )


def default_out(reports: Path = Path("reports")) -> Path:
    """reports/scale/<UTC time>/, a new name each run."""
    import datetime as dt

    from bench.paths import check_folder

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder, counter = reports / "scale" / stamp, 1
    while folder.exists():
        folder, counter = reports / "scale" / f"{stamp}-{counter}", counter + 1
    return check_folder(folder, "--out")


def run(args: argparse.Namespace) -> int:
    from bench.cli import UsageError
    from bench.paths import check_folder

    env = launch_env()
    quiet = env is not None and env["RANK"] != 0  # under torchrun only rank 0 speaks
    try:
        plan = make_plan(args, env["WORLD_SIZE"] if env else None)
        out = None
        if not quiet:
            out = check_folder(args.out, "--out") if args.out is not None else default_out()
    except UsageError:
        if quiet:  # every rank refuses alike; rank 0 says why
            return 2
        raise
    if env is None:
        return launch_all(plan, out)
    from bench import interrupt

    try:
        cases = rank_main(plan)
    except KeyboardInterrupt:
        if quiet:
            return interrupt.exit_code()
        raise
    if quiet:
        return 0
    return finish(cases, plan, out)


# --- launching ------------------------------------------------------------------------------------


def launch_all(plan: Plan, out: Path) -> int:
    """One launch of torch.distributed's launcher per rank count; then the table."""
    from bench import interrupt
    from bench.sweeps import get_sweep

    cases: list[dict[str, Any]] = []
    total = len(get_sweep(plan.sweep)) * len(plan.methods) * len(plan.counts) * len(plan.scaling)
    for i, count in enumerate(plan.counts):
        interrupt.set_stage(
            f"while {count} rank{'s' if count > 1 else ''} ran (rank count {i + 1} of "
            f"{len(plan.counts)}); nothing was written"
        )
        progress = (len(cases), total)
        cases += launch(count, replace(plan, counts=(count,), progress=progress))
    interrupt.set_stage("while writing the scaling table")
    return finish(cases, plan, out)


def launch(count: int, plan: Plan) -> list[dict[str, Any]]:
    """`count` ranks on this machine, started as `torchrun --standalone --nproc-per-node count`
    starts them (torch.distributed's elastic launcher, each rank a `python -m bench.scale`
    process in a session of its own); rank 0's cases. A rank that fails ends the launch (the
    launcher stops the others at once): CommandError naming it. SIGINT or SIGTERM: the launcher
    stops the ranks (SIGTERM; Ctrl-C does not reach them, they are in their own sessions) and the
    command ends with its one line (bench.interrupt)."""
    import json
    import logging
    import tempfile
    import uuid
    from dataclasses import asdict

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from bench import interrupt
    from bench.cli import CommandError

    with tempfile.TemporaryDirectory(prefix="vecreg-scale-") as tmp:
        results = Path(tmp) / "cases.json"
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=count,
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone picks it
            run_id=f"vecreg-scale-{uuid.uuid4().hex}",
            max_restarts=0,
            monitor_interval=0.1,
            shutdown_timeout=SHUTDOWN_S,
            logs_specs=DefaultLogsSpecs(log_dir=str(Path(tmp) / "logs")),
            # What this process ignores (SIGINT in a shell's background job) stays ignored.
            signals_to_handle=",".join(
                name
                for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
                if signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN
            ),
        )
        # The launcher handles the signals itself while it runs, and logs what it does; the
        # command's own handlers come back after, and its one line says what happened.
        handlers = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}
        logging.disable(logging.ERROR)  # the launcher's loggers each set their own level
        try:
            elastic_launch(config, sys.executable)(
                "-m", "bench.scale", str(results), json.dumps(asdict(plan))
            )
        except SignalException as exc:
            interrupt.handle(int(exc.sigval), None)  # raises bench.interrupt.Interrupted
            raise
        except ChildFailedError as exc:
            raise CommandError(failure_line(exc, count)) from None
        finally:
            logging.disable(logging.NOTSET)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return json.loads(results.read_text(encoding="utf-8"))


# What a rank says when a peer's death broke its collective: a consequence, never the cause.
PEER_ERRORS = (
    "DistBackendError",
    "DistNetworkError",
    "DistStoreError",
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "timed out",
    "Timed out",
)


def failure_line(exc: Any, count: int) -> str:
    """'rank 1 of 2 was killed by SIGKILL', 'rank 0 of 2 failed (exit code 1): RuntimeError: ...',
    from the launcher's record of the failed ranks (each printed its traceback itself).

    The launcher's own choice (`get_first_failure`: the earliest time, in whole seconds, lowest
    rank first on a tie) names the wrong rank: when rank 1 is killed, the launcher stops rank 0
    with SIGTERM in the same second and records that too, and a rank whose collective broke
    records its error in the same second. The cause is chosen here instead: the failures in the
    order the launcher saw them (its record keeps that order: the ranks it stopped come after the
    ones that failed), a rank whose error is a broken collective (PEER_ERRORS) after any other."""
    failures = exc.failures
    seen = {rank: i for i, rank in enumerate(failures)}

    def order(rank: int) -> tuple[bool, int]:
        peer = any(s in message_of(failures[rank]) for s in PEER_ERRORS)
        return (failures[rank].exitcode >= 0 and peer, seen[rank])

    rank = min(failures, key=order)
    line = f"rank {rank} of {count} {what_happened(failures[rank])}"
    others = sorted(set(failures) - {rank})
    if others:
        line += f"; rank{'s' if len(others) > 1 else ''} "
        line += ", ".join(str(r) for r in others) + " ended after it"
    return line


def message_of(failure: Any) -> str:
    """The last line of what the rank recorded (bench.scale.launched_rank's `record`)."""
    message = (failure.error_file_data or {}).get("message", {})
    if isinstance(message, dict):
        message = message.get("message", "")
    detail = [line for line in str(message).strip().splitlines() if line != "<NONE>"]
    return detail[-1] if detail else ""


def what_happened(failure: Any) -> str:
    if failure.exitcode < 0:
        return f"was killed by {failure.signal_name()}"
    detail = message_of(failure)
    return f"failed (exit code {failure.exitcode})" + (f": {detail}" if detail else "")


def launched_rank(argv: Sequence[str]) -> None:
    """`python -m bench.scale RESULTS PLAN`: one rank of a `launch`; rank 0 writes its cases to
    RESULTS (JSON). The launcher stops a rank with the signal it got, SIGINT or SIGTERM: both
    end the rank silently (their defaults; no KeyboardInterrupt, no traceback), the launcher
    prints the one line."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # first of all: torch takes seconds to import
    import json

    from torch.distributed.elastic.multiprocessing.errors import record

    results, plan = Path(argv[0]), json.loads(argv[1])
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan.items()})
    cases = record(rank_main)(plan)  # an exception is recorded for the launcher's error line
    if cases is not None:
        partial = results.with_suffix(".partial")
        partial.write_text(json.dumps(cases), encoding="utf-8")
        partial.replace(results)


# --- on every rank --------------------------------------------------------------------------------


def rank_main(plan: Plan) -> list[dict[str, Any]] | None:
    """One rank of a launch: set up its device and the process group, measure every case of the
    plan; rank 0 returns the cases, the others None."""
    import datetime as dt

    import torch
    import torch.distributed as dist

    from bench import environment

    env = launch_env()
    if env is None:
        raise RuntimeError("rank_main needs RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE")
    if plan.device == "cuda":
        if env["LOCAL_RANK"] >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {env['LOCAL_RANK']} needs cuda:{env['LOCAL_RANK']}; this node has "
                f"{torch.cuda.device_count()} CUDA devices: start at most that many ranks per node"
            )
        device = torch.device("cuda", env["LOCAL_RANK"])
        torch.cuda.set_device(device)
        backend, threads = "nccl", torch.get_num_threads()
    else:
        device, backend = torch.device("cpu"), "gloo"
        threads = max(1, environment.default_threads() // env["LOCAL_WORLD_SIZE"])
        torch.set_num_threads(threads)
    environment.steady_allocator()
    dist.init_process_group(
        backend,
        timeout=dt.timedelta(seconds=plan.timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    try:
        return measure_all(plan, device, backend, threads, env)
    finally:
        dist.destroy_process_group()


def measure_all(
    plan: Plan, device: Any, backend: str, threads: int, env: dict[str, int]
) -> list[dict[str, Any]] | None:
    import torch.distributed as dist

    from bench import distributed, environment, interrupt
    from bench.methods import get_method
    from bench.sweeps import get_sweep

    rank, world = dist.get_rank(), dist.get_world_size()
    # Every rank makes every group, in the same order (torch.distributed's rule).
    groups = {n: None if n == world else dist.new_group(list(range(n))) for n in plan.counts}
    problems, methods = get_sweep(plan.sweep), [get_method(name) for name in plan.methods]
    shown, total = plan.progress
    total = total or len(problems) * len(methods) * len(plan.counts) * len(plan.scaling)
    cases: list[dict[str, Any]] = []
    common = {
        "device": device.type,
        "device_name": environment.device_name(device),
        "backend": backend,
        "threads_per_rank": threads,
        "ranks_per_node": env["LOCAL_WORLD_SIZE"],
        "world_size": world,
    }
    if not plan.launched and rank == 0:
        interrupt.set_stage(lambda: f"after {len(cases)} of {total} cases; nothing was written")
    for problem in problems:
        x0, t = problem.inputs("cpu")  # each rank moves only its own rows to its device
        for method in methods:
            # Each rank holds at most the sweep problem's rows, in both scalings.
            reason = method.can_time(problem, device)
            one_rank: dict[str, Any] = {}
            for scaling in plan.scaling:
                for count in plan.counts:
                    shape = scaled(problem, scaling, count)
                    case = {
                        **common,
                        **problem_fields(shape),
                        "sweep_problem": problem.name,
                        "scaling": scaling,
                        "method": method.name,
                        "ranks": count,
                    }
                    same = scaling == "weak" and count == 1 and "strong" in plan.scaling
                    if reason is not None:
                        case["skipped"] = reason
                    elif same:  # weak scaling on 1 rank is strong scaling's 1-rank case
                        case = {**one_rank, "scaling": "weak"}
                    elif rank < count:
                        inputs = (x0, t) if shape is problem else shape.inputs("cpu")
                        group = groups[count]
                        case.update(
                            measure_case(method, shape, *inputs, group, device, plan.rounds)
                        )
                    if not same:
                        distributed.barrier(None, device)  # ranks beyond `count` wait here
                    if count == 1:
                        one_rank = case
                    if rank == 0:
                        cases.append(case)
                        print(progress_line(case, shown + len(cases), total), flush=True)
    return cases if rank == 0 else None


def scaled(problem: Any, scaling: str, count: int) -> Any:
    """The problem `count` ranks fit together: the sweep's (strong scaling), or with B = its B x
    count, so that each rank holds the sweep problem's rows (weak scaling)."""
    if scaling == "strong" or count == 1:
        return problem
    return replace(problem, batch=problem.batch * count)


def problem_fields(problem: Any) -> dict[str, Any]:
    return {
        "problem": problem.name,
        "batch": problem.batch,
        "dim": problem.dim,
        "steps": problem.steps,
        "lr": problem.lr,
        "dtype": problem.dtype,
        "seed": problem.seed,
    }


def measure_case(
    method: Any, problem: Any, x0: Any, t: Any, group: Any, device: Any, rounds: int
) -> dict[str, Any]:
    """On each rank of `group`: prepare (untimed; each rank compiles for its own rows), one
    gathered fit checked against the closed form on rank 0, one warm-up, then `rounds` timed fits
    (bench.distributed.time_sharded_fit). Rank 0's result holds the figures."""
    import torch.distributed as dist

    from bench import distributed, environment

    rank, count = dist.get_rank(group), dist.get_world_size(group)
    block = distributed.rows(rank, count, problem.batch)
    x_mine, t_mine = x0[block].to(device), t[block].to(device)
    lr, steps, batch = problem.lr, problem.steps, problem.batch
    load_before = environment.load_average()
    if block.stop > block.start:
        method.prepare(x_mine, t_mine, lr, steps)
    fit = distributed.sharded_fit(
        method, x_mine, t_mine, lr, steps, gather=True, group=group, batch=batch
    )
    result: dict[str, Any] = {}
    if rank == 0:
        result.update(distributed.oracle_errors(fit.x, fit.loss, x0, t, lr, steps))
        if not result["oracle_ok"]:
            line = wrong_line({**problem_fields(problem), **result}, method.name, count)
            print(f"error: {line}", file=sys.stderr, flush=True)
    times = distributed.time_sharded_fit(
        method, x_mine, t_mine, lr, steps, batch, rounds + 1, group
    )[1:]  # the first round is a warm-up
    if rank == 0:
        slowest = times.argmax(dim=1)
        result.update(
            samples_s=times.amax(dim=1).tolist(),
            rank_samples_s=times.tolist(),  # [round][rank], seconds
            rank_medians_s=times.median(dim=0).values.tolist(),
            slowest_rank=int(slowest.mode().values),
            rows_per_rank=-(-batch // count),
            empty_ranks=max(0, count - batch),
            rounds=rounds,
            load_before=load_before,
            load_after=environment.load_average(),
        )
    return result


def wrong_line(case: dict[str, Any], method: str, count: int) -> str:
    return (
        f"{method} on {case['problem']} with {count} rank{'s' if count > 1 else ''}: the sharded "
        f"fit disagrees with the closed form (max |x - x_K| = {case['x_err']:.3g}, allowed "
        f"{case['x_tolerance']:.3g}; trace error {case['trace_err_over_allowed']:.3g} of its "
        "allowance)"
    )


def progress_line(case: dict[str, Any], done: int, total: int) -> str:
    from bench.report.tables import seconds

    head = f"[{done}/{total}] {case['method']} {case['problem']} {case['ranks']} rank(s): "
    if "skipped" in case:
        return head + f"skipped: {case['skipped']}"
    median = sorted(case["samples_s"])[len(case["samples_s"]) // 2]
    return head + f"{seconds(median)} per fit" + ("" if case["oracle_ok"] else " WRONG")


# --- the table ------------------------------------------------------------------------------------

COLUMNS = (
    "problem",
    "method",
    "device",
    "device_name",
    "backend",
    "world_size",
    "ranks",
    "scaling",
    "sweep_problem",
    "batch",
    "dim",
    "steps",
    "dtype",
    "rows_per_rank",
    "empty_ranks",
    "threads_per_rank",
    "ranks_per_node",
    "rounds",
    "time_s",
    "time_low_s",
    "time_high_s",
    "speedup",
    "speedup_low",
    "speedup_high",
    "efficiency",
    "efficiency_low",
    "efficiency_high",
    "slowest_rank",
    "rank_medians_s",
    "oracle_ok",
    "x_err",
    "x_tolerance",
    "trace_err_over_allowed",
    "load_before",
    "load_after",
    "skipped",
    "samples_s",
)


def scaling_rows(cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each case with its time per fit (median and 95% interval of the rounds' slowest-rank
    times), its speedup over the same sweep problem, scaling and method on 1 rank and its
    efficiency, each with its 95% interval (bench.stats.ratio_interval of t1 / tn).

    Strong scaling (B fixed): speedup = t1 / tn, efficiency = speedup / n. Weak scaling (B = the
    sweep's B x n, the same rows per rank): efficiency = t1 / tn (1 when n ranks fit n times the
    rows in the time one took), speedup = n t1 / tn, the gain in rows fitted per second; so
    efficiency = speedup / n in both."""
    from bench import stats

    one = {base_key(c): c["samples_s"] for c in cases if c["ranks"] == 1 and "samples_s" in c}
    rows = []
    for case in cases:
        row = {name: case.get(name) for name in COLUMNS}
        row["scaling"] = case.get("scaling", "strong")
        samples = case.get("samples_s")
        if samples:
            time = stats.median_interval(samples)
            row.update(time_s=time.estimate, time_low_s=time.low, time_high_s=time.high)
            base = one.get(base_key(case))
            if base is not None:
                n = case["ranks"]
                if n == 1:
                    ratio = stats.Interval(1.0, 1.0, 1.0)
                elif min(len(base), len(samples)) >= stats.MIN_SAMPLES:
                    ratio = stats.ratio_interval(base, samples)
                else:
                    median = stats.median_interval(base).estimate / time.estimate
                    ratio = stats.Interval(median, math.nan, math.nan)
                gain = n if row["scaling"] == "weak" else 1  # rows n times as many
                row.update(
                    speedup=gain * ratio.estimate,
                    speedup_low=gain * ratio.low,
                    speedup_high=gain * ratio.high,
                    efficiency=gain * ratio.estimate / n,
                    efficiency_low=gain * ratio.low / n,
                    efficiency_high=gain * ratio.high / n,
                )
        rows.append(row)
    return rows


def base_key(case: dict[str, Any]) -> tuple[str, str, str]:
    """What a case's 1-rank case shares with it: scaling, sweep problem, method."""
    return (
        case.get("scaling", "strong"),
        case.get("sweep_problem", case["problem"]),
        case["method"],
    )


def row_texts(row: dict[str, Any]) -> list[str]:
    """problem, method, ranks, scaling, rows/rank, threads, time per fit, speedup, efficiency,
    oracle."""
    from bench.report.tables import seconds, significant, speedup_text

    head = [row["problem"], row["method"], str(row["ranks"]), row.get("scaling") or "strong"]
    if row.get("skipped"):
        return [*head, "—", "—", "—", "—", "—", f"skipped: {row['skipped']}"]
    time = f"{seconds(row['time_s'])} [{seconds(row['time_low_s'])}, {seconds(row['time_high_s'])}]"
    speedup, efficiency = "—", "—"
    if row.get("speedup") is not None:
        speedup = speedup_text(
            row["speedup"], row["speedup_low"], row["speedup_high"], baseline=row["ranks"] == 1
        )
        efficiency = f"{significant(100 * row['efficiency'], 3)}%"
        if math.isfinite(row["efficiency_low"]) and row["ranks"] > 1:
            low, high = (
                significant(100 * row[k], 3) for k in ("efficiency_low", "efficiency_high")
            )
            efficiency += f" [{low}, {high}]"
    rows = str(row["rows_per_rank"])
    if row.get("empty_ranks"):
        rows += f" ({row['empty_ranks']} empty)"
    check = "ok" if row["oracle_ok"] else "WRONG"
    return [*head, rows, str(row["threads_per_rank"]), time, speedup, efficiency, check]


HEADERS = (
    "problem",
    "method",
    "ranks",
    "scaling",
    "rows/rank",
    "threads/rank",
    "time per fit [95%]",
    "speedup over 1 rank [95%]",
    "efficiency [95%]",
    "oracle",
)


def text_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cells = [list(HEADERS), *(row_texts(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


def markdown_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    lines += ["| " + " | ".join(row_texts(row)) + " |" for row in rows]
    return lines


def notes(rows: Sequence[dict[str, Any]], plan: Plan) -> list[str]:
    """What a reader must know to read the table: the timing rule, the machine, the load."""
    from bench.environment import default_threads

    measured = [r for r in rows if not r.get("skipped")]
    first = measured[0] if measured else (rows[0] if rows else {})
    loads = [r[k] for r in measured for k in ("load_before", "load_after") if r.get(k) is not None]
    cores = default_threads()  # the cores this process may use
    how = (
        "one launch of torch.distributed's launcher per rank count"
        if plan.launched
        else f"one torchrun launch of {first.get('world_size', '?')} ranks, each count on its "
        "first n ranks"
    )
    lines = [
        f"Device: {first.get('device', plan.device)} ({first.get('device_name', '?')}), backend "
        f"{first.get('backend', '?')}; {how}.",
        "Time per fit: the slowest rank's (a barrier, then each rank's sharded fit with the "
        "trace's all-reduce and a wait for its device; the maximum over the ranks per round); "
        f"median of {plan.rounds} rounds with its 95% interval."
        + (
            " Strong scaling (the sweep's B split over the ranks): speedup = the 1-rank median "
            "over this one, with its 95% interval; efficiency = speedup / ranks."
            if "strong" in plan.scaling
            else ""
        )
        + (
            " Weak scaling (each rank holds the sweep problem's B rows, B = that x ranks): "
            "efficiency = the 1-rank median over this one, with its 95% interval; speedup = "
            "ranks x efficiency (rows fitted per second over 1 rank's)."
            if "weak" in plan.scaling
            else ""
        ),
    ]
    if plan.device == "cpu":
        lines.append(
            "CPU: torch threads per rank = the cores this process may use // the ranks on the "
            f"node (column threads/rank); {cores} cores here."
        )
    if loads:
        lines.append(
            f"Load (1-minute average, this run's ranks included) from {min(loads):.2f} to "
            f"{max(loads):.2f} on {cores} cores"
            + ("; the machine was busy." if max(loads) > cores else ".")
        )
    if plan.device == "cpu" and plan.counts[-1] > cores:
        lines.append(
            f"{plan.counts[-1]} ranks on {cores} cores: oversubscribed, the ranks share cores."
        )
    for row in rows:
        if row.get("empty_ranks") and row["method"] == first.get("method"):
            lines.append(
                f"{row['problem']} on {row['ranks']} ranks: {row['empty_ranks']} ranks hold no "
                f"rows (batch {row['batch']}); they still join each fit's all-reduce."
            )
    return lines


# --- the results file ----------------------------------------------------------------------------

RESULTS_NAME = "scale.json"


def case_problem(case: dict[str, Any]) -> str:
    """The problem name a case has in the results file: the problem's and its rank count,
    `B1024xD1024-K100-lr51.2-float32-r2`; in weak scaling, with the whole batch's B and "-weak"
    so that it never meets a strong case of that B: `B2048xD1024-K100-lr51.2-float32-weak-r2`.

    CASE_KEY (method, problem, dtype, device) stays as it is. The count goes in the problem,
    which names what was fitted, and not in the method, whose name stays the one of
    bench.methods (colours, baselines and `compare` look methods up by it): two scale runs
    compare case by case, same method, problem, scaling and rank count; and the sweep's problem
    name is a prefix of the case's (also in extra_info.sweep_problem)."""
    weak = "-weak" if case.get("scaling") == "weak" else ""
    return f"{case['problem']}{weak}-r{case['ranks']}"


def results_json(
    cases: Sequence[dict[str, Any]], plan: Plan, environment: dict[str, Any]
) -> dict[str, Any]:
    """One pytest-benchmark results file (bench.results): a benchmark per measured case, its raw
    samples the rounds' slowest-rank times (seconds per fit), each rank's own times in
    extra_info.rank_samples_s; the skipped cases in vecreg.skipped."""
    import datetime as dt
    import platform

    from pytest_benchmark import __version__ as pytest_benchmark_version
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    entries, skipped = [], []
    for case in cases:
        name = case_problem(case)
        if "skipped" in case:
            skipped.append({"method": case["method"], "problem": name, "reason": case["skipped"]})
            continue
        entries.append(benchmark_entry(case, name))
    machine = pytest_benchmark_generate_machine_info()
    machine["vecreg"] = environment
    return {
        "machine_info": machine,
        "commit_info": get_commit_info(),
        "benchmarks": entries,
        "datetime": dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": pytest_benchmark_version,
        "vecreg": {
            "sweep": plan.sweep,
            "kind": "scale",
            "python": platform.python_version(),
            "skipped": skipped,
            "failed": [],  # a rank that fails ends the run: no file is written
            "complete": True,  # written only once every case of the plan was measured
            "cases_total": len(cases),
            "cases_done": len(cases),
        },
    }


def benchmark_entry(case: dict[str, Any], name: str) -> dict[str, Any]:
    """One benchmark of the results file, as pytest-benchmark writes it (tests/results_factory)."""
    import statistics

    from bench import stats
    from bench.results import NOISY_IQR_OVER_MEDIAN

    samples = [float(s) for s in case["samples_s"]]
    q1, median, q3 = stats.quartiles(samples)
    interval = stats.median_interval(samples)
    steps, elements = case["steps"], case["batch"] * case["dim"]
    itemsize = {"float64": 8, "float32": 4}.get(case["dtype"], 2)
    bytes_per_step = 3 * itemsize * elements
    per_step = median / steps
    spread = (q3 - q1) / median
    info = {
        "method": case["method"],
        "problem": name,
        "batch": case["batch"],
        "dim": case["dim"],
        "steps": steps,
        "lr": case["lr"],
        "dtype": case["dtype"],
        "seed": case.get("seed"),
        "device": case["device"],
        "device_name": case["device_name"],
        "time_per_step_s": per_step,
        "time_per_step_iqr_s": (q3 - q1) / steps,
        "time_per_step_low_s": interval.low / steps,
        "time_per_step_high_s": interval.high / steps,
        "precision": interval.relative_halfwidth(),
        "elements_steps_per_s": elements * steps / median,
        "bytes_per_step": bytes_per_step,
        "bandwidth_gbs": bytes_per_step / per_step / 1e9,
        "iqr_over_median": spread,
        "noisy": spread > NOISY_IQR_OVER_MEDIAN,
        "oracle_max_abs_err": case["x_err"],
        "oracle_ok": case["oracle_ok"],
        "load_before": case.get("load_before"),
        "load_after": case.get("load_after"),
        # the scaling figures (bench.results: optional fields)
        "sweep_problem": case.get("sweep_problem", case["problem"]),
        "scaling": case.get("scaling", "strong"),
        "ranks": case["ranks"],
        "world_size": case["world_size"],
        "backend": case["backend"],
        "rows_per_rank": case["rows_per_rank"],
        "empty_ranks": case["empty_ranks"],
        "threads_per_rank": case["threads_per_rank"],
        "slowest_rank": case["slowest_rank"],
        "rank_samples_s": case["rank_samples_s"],  # [round][rank]; samples: the max per round
    }
    return {
        "group": case.get("sweep_problem", case["problem"]),
        "name": f"scale[{case['method']}-{name}-{case['device']}]",
        "fullname": f"bench/scale.py::scale[{case['method']}-{name}-{case['device']}]",
        "params": {"method": case["method"], "problem": name, "device": case["device"]},
        "param": f"{case['method']}-{name}-{case['device']}",
        "extra_info": info,
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": len(samples),
            "max_time": None,
            "min_time": None,
            "warmup": True,
        },
        "stats": {
            "min": min(samples),
            "max": max(samples),
            "mean": sum(samples) / len(samples),
            "stddev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
            "rounds": len(samples),
            "median": median,
            "iqr": q3 - q1,
            "q1": q1,
            "q3": q3,
            "iqr_outliers": 0,
            "stddev_outliers": 0,
            "outliers": "0;0",
            "ld15iqr": min(samples),
            "hd15iqr": max(samples),
            "ops": len(samples) / sum(samples),
            "total": sum(samples),
            "iterations": 1,
            "data": samples,
        },
    }


def write_results(cases: Sequence[dict[str, Any]], plan: Plan, out: Path) -> Path:
    """`out/scale.json`, written atomically and checked by the results model before it is put in
    place."""
    import json
    import tempfile

    import torch

    from bench import environment
    from bench.results import Results, write_atomically

    env = environment.collect(torch.device(plan.device))
    text = json.dumps(results_json(cases, plan, env), indent=2, allow_nan=False)
    with tempfile.TemporaryDirectory(dir=out, prefix=".scale-check-") as tmp:
        check = Path(tmp) / RESULTS_NAME
        check.write_text(text, encoding="utf-8")
        Results.load(check)  # what this writes, the harness reads
    target = out / RESULTS_NAME
    write_atomically(target, text)
    return target


def finish(cases: list[dict[str, Any]], plan: Plan, out: Path) -> int:
    """Print the table and write it; 1 where a case disagreed with the closed form."""
    import csv

    from bench import interrupt

    rows = scaling_rows(cases)
    lines, text = notes(rows, plan), text_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    interrupt.defer()  # a signal now waits until both files are written
    try:
        with open(out / "scale.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                lists = ("samples_s", "rank_medians_s")  # seconds, space-separated
                writer.writerow(
                    {**row, **{k: " ".join(f"{s:.6g}" for s in row.get(k) or []) for k in lists}}
                )
        markdown = ["# Scaling", "", *lines, "", *markdown_table(rows), ""]
        (out / "scale.md").write_text("\n".join(markdown), encoding="utf-8")
        results = write_results(cases, plan, out)
    finally:
        interrupt.resume()
    from bench.report.scaling import write_page

    page = write_page(results, out)  # published whole, or not at all
    print()
    print("\n".join(text))
    print()
    print("\n".join(lines))
    print(f"\nThe table: {out / 'scale.md'} and {out / 'scale.csv'}; the results: {results}")
    print(f"The page: {page}")
    wrong = [row for row in rows if row.get("oracle_ok") is False]
    for row in wrong:
        print(f"error: {wrong_line(row, row['method'], row['ranks'])}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    from bench.scale import launched_rank as _launched_rank  # the module, not a copy as __main__

    _launched_rank(sys.argv[1:])
