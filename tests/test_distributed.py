"""The batch sharded over ranks (bench.distributed) and `python -m bench scale` (bench.scale).

CPU and gloo only; three launches in all, each bounded by a timeout that kills what it started:
one torch.multiprocessing launch of 3 ranks that runs every sharded-fit case (process groups of
1, 2 and 3 ranks inside it), one `python -m bench scale --ranks 1,2` end to end, and one that is
interrupted. The rest needs no process group.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench import cli, scale
from bench.distributed import oracle_errors, rows, sharded_fit, time_sharded_fit
from bench.environment import default_threads
from bench.methods import get_method
from bench.problem import Problem
from bench.results import Results

WORLD = 3
LAUNCH_TIMEOUT_S = 240  # a launch here takes 5 to 20 s on a busy 2-core machine
# A killed rank must end the command within this: the launcher polls its ranks every 0.1 s and
# gives the others bench.scale.SHUTDOWN_S to stop after SIGTERM.
KILLED_TIMEOUT_S = 30
# The trace's rounding: each rank's float32 mean of its rows, combined in float64 and rounded once,
# against one float32 mean over all rows (1.6 to 1.9 eps measured).
TRACE_RTOL = 4 * torch.finfo(torch.float32).eps

# (method, batch, dim, dtype): B not divisible by the ranks, and B below them (an empty rank).
CASES = [
    ("analytic", 5, 33, "float32"),
    ("autograd", 5, 33, "float32"),
    ("analytic", 2, 17, "float32"),
    ("autograd", 2, 17, "float32"),
    ("analytic", 7, 9, "float64"),
    ("autograd", 4, 65, "bfloat16"),
]
STEPS = 20
SWEEP_PLAN = scale.Plan(
    "smoke", ("analytic", "autograd"), "cpu", (1, 2, 3), rounds=5, scaling=("strong", "weak")
)
COLLECTIVES = (
    "all_reduce",
    "gather",
    "all_gather",
    "all_gather_into_tensor",
    "broadcast",
    "reduce",
    "reduce_scatter",
    "scatter",
    "all_to_all",
    "send",
    "recv",
    "barrier",
)


def problem_of(batch: int, dim: int, dtype: str) -> Problem:
    return Problem(batch=batch, dim=dim, steps=STEPS, lr=0.05 * dim, dtype=dtype, seed=batch)


# --- rows --------------------------------------------------------------------------------------


def test_rows_partition_the_batch_exactly():
    pairs = [(w, b) for w in range(1, 18) for b in range(40)]
    pairs += [(7, 10**6 + 3), (64, 1000), (1000, 64), (3, 2**31 + 1)]
    for world, batch in pairs:
        blocks = [rows(rank, world, batch) for rank in range(world)]
        sizes = [b.stop - b.start for b in blocks]
        assert blocks[0].start == 0 and blocks[-1].stop == batch, (world, batch)
        assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
        assert all(b.step is None for b in blocks)
        assert max(sizes) - min(sizes) <= 1, (world, batch, sizes)
        assert sizes == sorted(sizes, reverse=True)  # the larger blocks first
        assert sum(sizes) == batch
        if batch < world:
            assert sizes == [1] * batch + [0] * (world - batch)


@pytest.mark.parametrize(
    "args", [(0, 0, 5), (3, 3, 5), (-1, 2, 5), (0, 2, -1), (0, 2.0, 5), (True, 2, 5)]
)
def test_rows_refuses_what_is_no_partition(args):
    with pytest.raises(ValueError):
        rows(*args)


# --- the sharded fit on 1, 2 and 3 ranks --------------------------------------------------------


def counted(calls: list[str]):
    """Wrap torch.distributed's collectives so that each call is listed by name."""
    for name in COLLECTIVES:
        real = getattr(dist, name, None)
        if real is None:
            continue

        def wrapper(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(dist, name, wrapper)


def sharded_worker(rank: int, world: int, store: str, out: str) -> None:
    """One rank: every case on process groups of 1, 2 and 3 ranks; what it got is saved for the
    test (the test process compares, so that a failure reads as a pytest assertion)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
        timeout=dt.timedelta(seconds=60),
    )  # fmt: skip
    groups = {n: dist.new_group(list(range(n))) for n in range(1, world)}
    groups[world] = None
    calls: list[str] = []
    counted(calls)
    got = {}
    for name, batch, dim, dtype in CASES:
        problem = problem_of(batch, dim, dtype)
        x0, t = problem.inputs("cpu")
        method = get_method(name)
        for n, group in groups.items():
            if rank >= n:
                continue
            for mode in ("full", "rows", "gathered"):
                calls.clear()
                if mode == "rows":  # only this rank's rows are passed
                    block = rows(rank, n, batch)
                    fit = sharded_fit(
                        method, x0[block], t[block], problem.lr, STEPS, group=group, batch=batch
                    )
                else:
                    gather = mode == "gathered"
                    fit = sharded_fit(method, x0, t, problem.lr, STEPS, gather, group=group)
                got[(name, batch, dtype, n, mode)] = (fit.x, fit.loss, list(calls))
    problem = problem_of(7, 9, "float32")
    x0, t = problem.inputs("cpu")
    block = rows(rank, world, problem.batch)
    got["times"] = time_sharded_fit(
        get_method("analytic"), x0[block], t[block], problem.lr, STEPS, problem.batch, 2
    )
    # The scaling sweep as torchrun runs it: rank counts 1, 2 and 3 on the first ranks of this
    # world, the others waiting (bench.scale.measure_all, its code path under torchrun).
    calls.clear()
    got["sweep"] = scale.measure_all(
        SWEEP_PLAN, torch.device("cpu"), "gloo", 1, {"LOCAL_WORLD_SIZE": world}
    )
    torch.save(got, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def launch_spawn(world: int, folder: Path) -> list[dict]:
    """`world` ranks by torch.multiprocessing; every one is killed if they are not done within
    LAUNCH_TIMEOUT_S; a rank's exception fails the test with its traceback."""
    context = mp.start_processes(
        sharded_worker,
        args=(world, str(folder / "store"), str(folder)),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"the {world} ranks did not finish within {LAUNCH_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join(5)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> list[dict]:
    return launch_spawn(WORLD, tmp_path_factory.mktemp("sharded"))


@pytest.mark.parametrize(("name", "batch", "dim", "dtype"), CASES)
@pytest.mark.parametrize("n", range(1, WORLD + 1))
def test_sharded_fit_equals_the_one_process_fit(sharded, name, batch, dim, dtype, n):
    problem = problem_of(batch, dim, dtype)
    x0, t = problem.inputs("cpu")
    whole = get_method(name).fit(x0, t, problem.lr, STEPS)
    for mode in ("full", "rows", "gathered"):
        for rank in range(n):
            x, loss, _ = sharded[rank][(name, batch, dtype, n, mode)]
            # The trace: the same on every rank, bit for bit, and the full batch's.
            assert torch.equal(loss, sharded[0][(name, batch, dtype, n, mode)][1])
            assert loss.dtype == torch.float32 and loss.shape == (STEPS,)
            torch.testing.assert_close(loss, whole.loss, rtol=TRACE_RTOL, atol=0)
            # x: this rank's rows (all of them on rank 0 when gathered), bit for bit.
            block = slice(0, batch) if mode == "gathered" and rank == 0 else rows(rank, n, batch)
            assert x.dtype == x0.dtype and x.shape == (block.stop - block.start, dim)
            assert torch.equal(x, whole.x[block]), (mode, rank)
        x, loss, _ = sharded[0][(name, batch, dtype, n, "gathered")]
        assert oracle_errors(x, loss, x0, t, problem.lr, STEPS)["oracle_ok"]


def test_a_rank_may_hold_no_rows(sharded):
    # B = 2 over 3 ranks: rank 2 has nothing to fit, yet it joins the all-reduce and gets the trace
    x, loss, calls = sharded[2][("analytic", 2, "float32", 3, "full")]
    assert x.shape == (0, 17) and calls == ["all_reduce"]
    assert torch.equal(loss, sharded[0][("analytic", 2, "float32", 3, "full")][1])


@pytest.mark.parametrize("n", range(1, WORLD + 1))
def test_the_trace_is_one_collective_per_fit(sharded, n):
    for name, batch, _, dtype in CASES:
        for rank in range(n):
            assert sharded[rank][(name, batch, dtype, n, "full")][2] == ["all_reduce"]
            assert sharded[rank][(name, batch, dtype, n, "rows")][2] == ["all_reduce"]
            # gather=True: one gather of x after the trace's all-reduce, nothing per step
            assert sharded[rank][(name, batch, dtype, n, "gathered")][2] == ["all_reduce", "gather"]


def test_timing_takes_every_ranks_time(sharded):
    times = [got["times"] for got in sharded]
    assert times[0].shape == (2, WORLD)
    assert all(torch.equal(t, times[0]) for t in times)  # exchanged: the same on every rank
    assert bool((times[0] > 0).all())


def test_the_sweep_under_torchrun_measures_every_count(sharded, tmp_path, capsys):
    cases = sharded[0]["sweep"]
    assert all(got["sweep"] is None for got in sharded[1:])  # rank 0 alone reports
    assert [(c["method"], c["scaling"], c["ranks"]) for c in cases] == [
        (m, s, n) for m in ("analytic", "autograd") for s in ("strong", "weak") for n in (1, 2, 3)
    ]
    for case in cases:
        assert case["oracle_ok"], case
        assert len(case["samples_s"]) == 5 and min(case["samples_s"]) > 0
        assert case["sweep_problem"] == "B4xD33-K10-lr1.65-float32" and case["world_size"] == WORLD
        if case["scaling"] == "strong":  # B = 4 split over the ranks
            assert case["batch"] == 4 and case["rows_per_rank"] == -(-4 // case["ranks"])
        else:  # 4 rows per rank
            assert case["batch"] == 4 * case["ranks"] and case["rows_per_rank"] == 4
    one = {c["method"]: c for c in cases if c["ranks"] == 1 and c["scaling"] == "strong"}
    for case in cases:  # weak on 1 rank is the strong 1-rank case, measured once
        if case["ranks"] == 1 and case["scaling"] == "weak":
            assert case["samples_s"] == one[case["method"]]["samples_s"]
    assert scale.finish(cases, SWEEP_PLAN, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "one torchrun launch of 3 ranks, each count on its first n ranks" in printed
    with open(tmp_path / "out" / "scale.csv", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert [float(r["speedup"]) for r in written if r["ranks"] == "1"] == [1.0] * 4
    assert all(float(r["speedup_low"]) <= float(r["speedup_high"]) for r in written)
    results = Results.load(tmp_path / "out" / "scale.json")
    assert len({c.key for c in results.cases}) == len(cases) == 12
    assert {c.problem for c in results.cases if c.info["scaling"] == "weak"} == {
        "B4xD33-K10-lr1.65-float32-weak-r1",
        "B8xD33-K10-lr1.65-float32-weak-r2",
        "B12xD33-K10-lr1.65-float32-weak-r3",
    }
    check_page(tmp_path / "out", rows=12, panels=2, methods=["autograd", "analytic"])


def check_page(out: Path, rows: int, panels: int, methods: list[str]) -> None:
    """out/scaling/index.html: self-contained (the plot a data URI, nothing fetched), the table
    with a row per case, the plot with a panel per scaling and problem, the ideal line."""
    from bench.report import scaling

    page = (out / "scaling" / "index.html").read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') == 1
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "speedup over 1 rank [95%]" in page and "efficiency [95%]" in page
    assert page.count("<tr><td>B") == rows
    assert (out / "scaling" / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = Results.load(out / "scaling" / "results.json")
    fig = scaling.speedup_figure(scaling.scaling_rows(results))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == panels
    for ax in axes:
        assert ax.get_xlabel() == "ranks" and "speedup" in ax.get_ylabel()
        ideal = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(ideal) == 1 and list(ideal[0].get_xdata()) == list(ideal[0].get_ydata())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [*methods, "ideal: speedup = ranks"]


# --- the scaling table, without a launch ---------------------------------------------------------


def fake_case(method: str, ranks: int, median: float, batch: int = 4) -> dict:
    spread = [median * (1 + 0.01 * k) for k in range(-7, 8)]
    return {
        "problem": "P", "method": method, "device": "cpu", "device_name": "CPU", "backend": "gloo",
        "world_size": ranks, "ranks": ranks, "batch": batch, "rows_per_rank": -(-batch // ranks),
        "empty_ranks": max(0, ranks - batch), "threads_per_rank": 1, "samples_s": spread,
        "oracle_ok": True, "x_err": 0.0, "x_tolerance": 1.0, "trace_err_over_allowed": 0.0,
        "load_before": 0.5, "load_after": 0.7,
    }  # fmt: skip


def test_speedup_and_efficiency_come_with_intervals():
    cases = [fake_case("analytic", 1, 0.010), fake_case("analytic", 2, 0.006),
             fake_case("analytic", 8, 0.005)]  # fmt: skip
    one, two, eight = scale.scaling_rows(cases)
    assert one["speedup"] == 1.0 and one["efficiency"] == 1.0
    assert math.isclose(two["speedup"], 0.010 / 0.006)
    assert two["speedup_low"] < two["speedup"] < two["speedup_high"]
    assert math.isclose(two["efficiency"], two["speedup"] / 2)
    assert math.isclose(two["efficiency_high"], two["speedup_high"] / 2)
    assert two["time_low_s"] < two["time_s"] == 0.006 < two["time_high_s"]
    text = "\n".join(scale.text_table([one, two, eight]))
    assert "1.67x [" in text and "83.3% [" in text
    assert "1 (4 empty)" in text  # 8 ranks over 4 rows
    plan = scale.Plan("smoke", ("analytic",), "cpu", (1, 2, 8), launched=True)
    assert any("4 ranks hold no rows" in line for line in scale.notes([one, two, eight], plan))


def test_the_failure_named_is_the_cause_not_its_consequences():
    from types import SimpleNamespace

    def failure(exitcode: int, message: str = "", signal_name: str = "SIGTERM"):
        data = {"message": {"message": message}} if message else {}
        return SimpleNamespace(
            exitcode=exitcode, error_file_data=data, signal_name=lambda: signal_name, timestamp=7
        )

    broken = "DistBackendError: [gloo/transport/tcp/pair.cc:534] Connection closed by peer"
    # rank 0's all-reduce broke first (seen first), then rank 1 was found killed
    seen = {0: failure(1, broken), 1: failure(-9, signal_name="SIGKILL")}
    assert scale.failure_line(SimpleNamespace(failures=seen), 2) == (
        "rank 1 of 2 was killed by SIGKILL; rank 0 ended after it"
    )
    # rank 2 raised; the launcher then stopped ranks 0 and 1 (recorded after it)
    seen = {2: failure(1, "Traceback...\nMemoryError: out of memory"), 0: failure(-15),
            1: failure(-15)}  # fmt: skip
    assert scale.failure_line(SimpleNamespace(failures=seen), 3) == (
        "rank 2 of 3 failed (exit code 1): MemoryError: out of memory; ranks 0, 1 ended after it"
    )


def test_weak_scaling_efficiency_is_t1_over_tn():
    def weak(ranks: int, median: float) -> dict:
        case = fake_case("analytic", ranks, median, batch=4 * ranks)
        return {**case, "rows_per_rank": 4, "scaling": "weak", "sweep_problem": "P"}

    # strong cases of the same sweep problem and method do not mix in: their own 1-rank case
    strong = [fake_case("analytic", 1, 0.001), fake_case("analytic", 2, 0.0009)]
    rows = scale.scaling_rows([*strong, weak(1, 0.010), weak(2, 0.0125), weak(4, 0.020)])
    one, two, four = rows[2:]
    assert one["efficiency"] == one["speedup"] == 1.0 and one["scaling"] == "weak"
    assert math.isclose(two["efficiency"], 0.010 / 0.0125)  # t1 / tn
    assert math.isclose(two["speedup"], 2 * 0.010 / 0.0125)  # n t1 / tn: rows per second
    assert math.isclose(four["efficiency"], 0.5)
    assert four["efficiency_low"] < 0.5 < four["efficiency_high"]
    assert math.isclose(four["speedup_high"], 4 * four["efficiency_high"])
    assert math.isclose(rows[1]["speedup"], 0.001 / 0.0009)  # strong: t1 / tn
    text = "\n".join(scale.text_table(rows))
    assert "80.0% [" in text and "50.0% [" in text and " weak " in text


@pytest.mark.parametrize(("value", "expected"), [("strong", ("strong",)), ("weak", ("weak",)),
                                                 ("both", ("strong", "weak"))])  # fmt: skip
def test_scaling_is_parsed(value, expected):
    parser = argparse.ArgumentParser()
    scale.add_arguments(parser)
    args = parser.parse_args(["--scaling", value, "--device", "cpu"])
    assert scale.make_plan(args, None).scaling == expected


def test_rank_counts_are_parsed():
    assert scale.parse_ranks("4,2") == (1, 2, 4)  # 1 is always measured
    assert scale.parse_ranks(" 1 , 3") == (1, 3)
    assert scale.default_counts(1) == (1,)
    assert scale.default_counts(6) == (1, 2, 4, 6)
    assert scale.default_counts(16) == (1, 2, 4, 8, 16)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--ranks", "0"], "--ranks 0: 0 is not a rank count"),
        (["--ranks", "1,x"], "--ranks 1,x: x is not a rank count"),
        (["--ranks", "1,,2"], "--ranks 1,,2: an empty item is not a rank count"),
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--sweep", "nope"], "unknown sweep 'nope'"),
        (["--device", "tpu"], "device='tpu' is not a device name"),
        (["--rounds", "3"], "--rounds 3: it must be a whole number >= 5"),
        (["--timeout", "0"], "--timeout 0: it must be a number >= 1"),
        (["--scaling", "nope"], "--scaling nope: give strong, weak or both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, says, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["scale", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "reports").exists()


def test_under_torchrun_the_counts_fit_the_launch(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["scale", "--ranks", "1,4", "--device", "cpu"]) == 2
    assert "this launch has 2 ranks" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")  # the other ranks refuse too, silently
    assert cli.main(["scale", "--ranks", "1,4", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == ""


# --- end to end ---------------------------------------------------------------------------------


def bench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", "scale", *args]


def ranks_of(parent: int) -> list[int]:
    """The rank processes that `parent` started (`python -m bench.scale ...`)."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    found = [line.split(None, 2) for line in ps.splitlines()]
    return [
        int(p[0]) for p in found if len(p) == 3 and p[1] == str(parent) and "bench.scale" in p[2]
    ]


def alive(pid: int) -> bool:
    """Running, or stopped; not gone and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_scale_end_to_end(tmp_path):
    out = tmp_path / "scale"
    done = subprocess.run(
        bench_command("--ranks", "1,2", "--sweep", "smoke", "--methods", "analytic",
                      "--device", "cpu", "--rounds", "5", "--out", str(out), "--scaling", "both"),
        cwd=tmp_path, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    weak = [line.split() for line in done.stdout.splitlines() if " weak " in line]
    assert [(row[0], row[2], row[4]) for row in weak] == [
        ("B4xD33-K10-lr1.65-float32", "1", "4"),  # 4 rows per rank
        ("B8xD33-K10-lr1.65-float32", "2", "4"),
    ]
    problem = "B4xD33-K10-lr1.65-float32"  # the smoke sweep's one problem
    table = [line.split() for line in done.stdout.splitlines() if line.startswith(problem)]
    assert [row[2] for row in table if row[3] == "strong"] == ["1", "2"]
    assert all(row[-1] == "ok" for row in table)
    with open(out / "scale.csv", encoding="utf-8") as fh:
        written = [r for r in csv.DictReader(fh) if r["scaling"] == "strong"]
    assert [(r["method"], r["ranks"], r["oracle_ok"]) for r in written] == [
        ("analytic", "1", "True"),
        ("analytic", "2", "True"),
    ]
    cores = default_threads()  # threads per rank: the cores // the ranks of the launch
    assert [int(r["threads_per_rank"]) for r in written] == [cores, max(1, cores // 2)]
    assert float(written[1]["speedup_low"]) <= float(written[1]["speedup"])
    assert len(written[1]["samples_s"].split()) == 5
    markdown = (out / "scale.md").read_text(encoding="utf-8")
    assert "| B4xD33-K10-lr1.65-float32 | analytic | 2 |" in markdown
    assert "backend gloo" in markdown and "Load (1-minute average" in markdown
    check_results_file(out / "scale.json", world_sizes=[1, 2], weak=True)
    check_page(out, rows=4, panels=2, methods=["analytic"])


def check_results_file(path: Path, world_sizes: list[int], weak: bool = False) -> None:
    """The results model reads the file; a case per (method, problem, ranks) of each scaling;
    `python -m bench compare` of the file against itself exits 0."""
    results = Results.load(path)
    assert results.complete and results.cases_total == results.cases_done == len(results.cases)
    names = ["B4xD33-K10-lr1.65-float32-r1", "B4xD33-K10-lr1.65-float32-r2"]
    if weak:  # --ranks: one launch per count, so the cases come count by count
        names = [names[0], "B4xD33-K10-lr1.65-float32-weak-r1",
                 names[1], "B8xD33-K10-lr1.65-float32-weak-r2"]  # fmt: skip
        world_sizes = [1, 1, 2, 2]
    assert [c.problem for c in results.cases] == names
    for case, world in zip(results.cases, world_sizes, strict=True):
        ranks = int(case.problem.rsplit("-r", 1)[1])
        assert case.info["ranks"] == ranks and case.info["world_size"] == world
        assert case.info["scaling"] == ("weak" if "-weak-" in case.problem else "strong")
        assert case.info["backend"] == "gloo" and case.oracle_ok
        assert case.info["sweep_problem"] == "B4xD33-K10-lr1.65-float32"
        assert case.samples.size == 5
    raw = json.loads(path.read_text(encoding="utf-8"))["benchmarks"]
    for entry, case in zip(raw, results.cases, strict=True):
        per_rank = entry["extra_info"]["rank_samples_s"]  # [round][rank]
        assert len(per_rank) == 5 and all(len(r) == case.info["ranks"] for r in per_rank)
        assert [max(r) for r in per_rank] == entry["stats"]["data"]  # samples: the maxima
    assert cli.main(["compare", str(path), str(path)]) == 0


def rank_number(pid: int) -> int | None:
    """The RANK a launcher gave process `pid`, from its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
    except OSError:
        return None
    return int(env[b"RANK"]) if b"RANK" in env else None


def test_a_killed_rank_ends_the_run_naming_it(tmp_path):
    """Rank 1 of the 2-rank launch killed: the launcher stops rank 0 and the command exits 1
    within KILLED_TIMEOUT_S, naming rank 1, with nothing written."""
    out = tmp_path / "scale"
    proc = subprocess.Popen(
        bench_command("--ranks", "1,2", "--sweep", "smoke", "--methods", "analytic",
                      "--device", "cpu", "--rounds", "5", "--out", str(out)),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        victim = None
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            ranks = ranks_of(proc.pid)
            if len(ranks) == 2:  # the 2-rank launch: kill its rank 1
                victim = next((pid for pid in ranks if rank_number(pid) == 1), None)
        assert victim is not None, "the 2-rank launch was never seen"
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=KILLED_TIMEOUT_S)
        took = time.monotonic() - killed
    finally:
        for pid in [proc.pid, *ranks]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 1, err
    assert took < KILLED_TIMEOUT_S
    assert err.startswith("error: rank 1 of 2 was killed by SIGKILL"), err
    assert err.count("\n") == 1, err
    assert not [pid for pid in ranks if alive(pid)]  # rank 0 was stopped too
    assert not out.exists()


def test_torchrun_end_to_end(tmp_path):
    """`torchrun --standalone --nproc-per-node 2 -m bench scale --device cpu --sweep smoke`
    (torch.distributed.run is torchrun), with one method for time."""
    out = tmp_path / "scale"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "bench", "scale", "--device", "cpu", "--sweep", "smoke", "--methods", "analytic",
         "--rounds", "5", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    problem = "B4xD33-K10-lr1.65-float32"
    table = [line.split() for line in done.stdout.splitlines() if line.startswith(problem)]
    assert [row[2] for row in table] == ["1", "2"] and all(r[-1] == "ok" for r in table)
    assert "one torchrun launch of 2 ranks" in done.stdout
    assert (out / "scale.csv").exists() and (out / "scale.md").exists()
    check_results_file(out / "scale.json", world_sizes=[2, 2])  # written by rank 0


def test_scale_interrupted_ends_with_one_line(tmp_path):
    """Ctrl-C (SIGINT to the whole process group) while a launch runs: exit 130, one line, the
    ranks stopped, nothing written."""
    out = tmp_path / "scale"
    proc = subprocess.Popen(
        bench_command("--ranks", "1", "--sweep", "smoke", "--methods", "analytic",
                      "--device", "cpu", "--rounds", "100000000", "--out", str(out)),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not ranks and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            ranks = ranks_of(proc.pid)
        assert ranks, "the rank never started"
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)  # the ranks are in sessions of their own
        _, err = proc.communicate(timeout=60)
    finally:
        for pid in [proc.pid, *ranks]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 130
    assert err == "interrupted while 1 rank ran (rank count 1 of 1); nothing was written\n"
    assert not [pid for pid in ranks if alive(pid)]  # the launcher stopped them before it ended
    assert not out.exists()
