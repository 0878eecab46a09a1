"""`python -m bench gpu-check`: its plan, its phases stopped at their budgets, and goals.md, all
without a GPU (fake phases, synthetic results)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import results_factory as rf
import torch

from bench import gpu_check
from bench.cli import main
from bench.methods import METHODS
from bench.problem import SEED as QUESTION
from bench.problem import Problem
from bench.results import Results
from bench.sweeps import GPU_CHECK, QUICK, SEED, SIZES


def test_the_gpu_check_sweep_holds_quick_sizes_and_the_goal_problems():
    names = [p.name for p in GPU_CHECK]
    assert len(names) == len(set(names))
    for p in (*QUICK, *SIZES, SEED[0]):
        assert p.name in names
    assert any(p.elements == 2**24 and p.steps == 1000 and p.dtype == "float32" for p in GPU_CHECK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine with no GPU")
def test_gpu_check_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert main(["gpu-check", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gpu-check needs a CUDA GPU") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --- the plan --------------------------------------------------------------------------------


def test_the_budgets_keep_the_whole_check_under_8_minutes_by_construction():
    assert gpu_check.worst_case_s(gpu_check.BUDGETS) <= gpu_check.TOTAL_S == 8 * 60


def test_the_plan_names_each_phase_its_budget_the_cases_and_the_compiles():
    lines = gpu_check.plan_text(Path("/out"), GPU_CHECK, list(METHODS))
    text = "\n".join(lines)
    assert text.startswith("gpu-check plan: 6 phases into /out, at most 7 min 45 s in all")
    for name, budget in gpu_check.BUDGETS.items():
        assert any(line.startswith(f"  {name:<12} {budget:>4.0f} s  ") for line in lines), name
    assert any(line.startswith(f"  {'goals':<12}   <1 s  ") for line in lines)
    cases = len(GPU_CHECK) * len(METHODS)
    assert f"{cases} cases: {len(GPU_CHECK)} problems" in text
    assert f"x {len(METHODS)} methods" in text
    shapes = len({(p.batch, p.dim, p.dtype) for p in GPU_CHECK})
    assert f"compiled {shapes}" in text and "torch.compile" in text
    assert "Triton" in text and "autotune" in text
    assert "pytest -q -k cuda tests -> cuda-tests.log" in " ".join(text.split())
    assert all(len(line) <= gpu_check.PLAN_WIDTH for line in lines)


def test_the_plan_without_tests_has_no_test_budget():
    lines = gpu_check.plan_text(Path("/out"), GPU_CHECK, list(METHODS), skip_tests=True)
    assert any(line.startswith(f"  {'cuda-tests':<12}      -  skipped") for line in lines)
    assert lines[0].startswith("gpu-check plan: 5 phases")


def test_the_compiles_are_counted_per_shape_size_and_steps():
    problems = [
        Problem(batch=4, dim=8, steps=10),
        Problem(batch=4, dim=8, steps=20),  # same shape: no new torch.compile, a new jax.jit
        Problem(batch=2, dim=16, steps=10),  # same size: no new autotune
        Problem(batch=4, dim=8, steps=10, dtype="bfloat16"),
    ]
    plan = gpu_check.sweep_plan(problems, ["autograd", "compiled", "jax", "triton_fused"])
    assert plan.cases == 16
    assert plan.compiles == {"compiled": 3, "jax": 4}
    assert plan.autotunes == {"triton_fused": 2}


def test_dry_run_prints_the_plan_and_makes_nothing(tmp_path, capsys):
    assert main(["gpu-check", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu-check plan: ") and "goals.md" in out
    assert not (tmp_path / "out").exists()


# --- phases and their budgets ----------------------------------------------------------------


def _phase(name, command, budget_s=20.0, **kwargs):
    grace = kwargs.pop("grace_s", 1.0)
    return gpu_check.Phase(
        name,
        budget_s,
        lambda: gpu_check.run_child([sys.executable, "-c", command], budget_s, grace_s=grace),
        **kwargs,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def test_a_slow_phase_is_stopped_at_its_budget_and_the_next_phase_runs(tmp_path, capsys):
    pids = tmp_path / "pids"
    # The phase starts a grandchild that would outlive it: the whole process group goes.
    slow = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    phases = [
        _phase("first", "pass"),
        _phase("slow", slow, budget_s=2.0),
        _phase("after", "pass"),
    ]
    begin = time.perf_counter()
    assert gpu_check.execute(phases) == 1
    assert time.perf_counter() - begin < 20
    assert [p.outcome.status for p in phases] == ["ok", "timed out", "ok"]
    out = capsys.readouterr().out
    assert "gpu-check: slow: timed out in " in out and "(budget 2 s): stopped at 2 s" in out
    grandchild = int(pids.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
    summary = gpu_check.summary_lines(phases, 3.0)
    assert any("slow" in line and "timed out" in line for line in summary)


def test_a_phase_that_ignores_sigterm_is_killed_after_the_grace_period():
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    begin = time.perf_counter()
    outcome = gpu_check.run_child([sys.executable, "-c", stubborn], 1.0, grace_s=1.0)
    assert outcome.status == "timed out"
    assert time.perf_counter() - begin < 10


def test_a_failing_phase_that_must_pass_stops_the_check(capsys):
    phases = [
        _phase("doctor", "raise SystemExit(1)", stop_on_failure=True),
        _phase("next", "pass"),
    ]
    assert gpu_check.execute(phases) == 1
    assert phases[0].outcome.status == "failed" and phases[1].outcome is None
    assert "stopping: the doctor phase did not pass" in capsys.readouterr().out
    assert "next" in "\n".join(gpu_check.summary_lines(phases, 1.0))


def test_a_phase_whose_input_is_missing_or_a_previous_runs_is_skipped(tmp_path):
    results = tmp_path / "results.json"
    phases = [_phase("report", "pass", needs=results)]
    assert gpu_check.execute(phases) == 1
    assert phases[0].outcome.status == "skipped"
    results.write_text("{}")
    os.utime(results, (time.time() - 60, time.time() - 60))
    phases = [_phase("report", "pass", needs=results, since=time.time())]
    assert gpu_check.execute(phases) == 1
    assert phases[0].outcome.detail == "no results.json from this run"
    phases = [_phase("report", "pass", needs=results, since=time.time() - 120)]
    assert gpu_check.execute(phases) == 0


INTERRUPTED = """
import sys
from bench import gpu_check, interrupt

interrupt.install()
phase = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
try:
    gpu_check.run_child([sys.executable, "-c", phase, sys.argv[1]], 60, grace_s=1)
except KeyboardInterrupt:
    raise SystemExit(interrupt.report())
"""


def test_an_interrupted_check_stops_its_child(tmp_path):
    """SIGTERM to gpu-check while a phase runs: the phase's process group goes too."""
    pids, script = tmp_path / "pids", tmp_path / "check.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "PYTHONPATH": str(gpu_check.ROOT)}
    parent = subprocess.Popen([sys.executable, str(script), str(pids)], env=env)
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=20) == 143
    child = int(pids.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


# --- goals.md ------------------------------------------------------------------------------------

GPU = "Synthetic H100 (test data)"
COPY_GBS = 3000.0


def _case(method, problem, per_fit_s, spread=0.002, n=30, **extra):
    """A CUDA case whose samples sit within +-spread of `per_fit_s`."""
    samples = [per_fit_s * (1 + spread * (2 * k / (n - 1) - 1)) for k in range(n)]
    extra.setdefault("copy_bandwidth_gbs", COPY_GBS)
    return rf.entry(method, problem, samples, device="cuda", device_name=GPU, **extra)


def _fit_at_fraction(problem, fraction):
    """Seconds per fit of a method that moves 3 x 4 x B x D bytes a step at `fraction` of the
    copy bandwidth."""
    return problem.steps * 12 * problem.elements / (fraction * COPY_GBS * 1e9)


BIG = Problem(batch=2**24 // 1024, dim=1024, steps=100, lr=51.2)
GOAL_2 = Problem(batch=2**24 // 1024, dim=1024, steps=1000, lr=51.2)
SMALL = Problem(batch=1, dim=1024, steps=100, lr=51.2)


def _results(tmp_path, entries, skipped=(), complete=True):
    data = rf.results(entries, device_name=GPU)
    data["vecreg"]["skipped"] = [
        {"method": m, "problem": p.name, "reason": reason} for m, p, reason in skipped
    ]
    data["vecreg"]["complete"] = complete
    return Results.load(rf.write(tmp_path / "results.json", data))


def _goals(results, sizes=(SMALL, BIG)):
    return gpu_check.evaluate_goals(results, [p.name for p in sizes])


def _met_entries(step_fraction=0.9, fused_speedup=25.0, seed_busy_s=30e-6, graphs_factor=2.0):
    step_goal = _fit_at_fraction(GOAL_2, 0.9)
    entries = [
        _case("triton_step", BIG, _fit_at_fraction(BIG, step_fraction)),
        _case("triton_step", GOAL_2, step_goal),
        _case("triton_fused", GOAL_2, step_goal / fused_speedup),
        _case(
            "triton_fused",
            QUESTION[0],
            40e-6,
            gpu_busy_per_step_s=seed_busy_s / 1000,
            event_span_per_step_s=35e-9,
        ),
    ]
    for problem in (SMALL, BIG):
        fast = _fit_at_fraction(problem, 0.95)
        entries += [
            _case("triton_fused", problem, fast),
            _case("autograd", problem, 10 * fast),
            _case("compiled_graphs", problem, graphs_factor * fast),
        ]
    return entries


JAX_SKIPPED = [("jax", p, "jax is not installed") for p in (SMALL, BIG)]


def test_every_goal_met(tmp_path):
    goals = _goals(_results(tmp_path, _met_entries(), JAX_SKIPPED))
    assert [g.verdict for g in goals] == ["met"] * 4, goals
    step, fused, ahead, seed = goals
    assert step.measured.startswith("90.0% [") and BIG.name in step.measured
    assert fused.measured.startswith("25.0x [") and GOAL_2.name in fused.measured
    assert "triton_fused, vs 2.00x [" in ahead.measured and "compiled_graphs" in ahead.measured
    assert ahead.why.startswith("against compiled_graphs only: no jax case")
    assert "jax is not installed" in ahead.why
    assert seed.measured.startswith("30.0 us per fit (GPU busy time)")


def test_goals_not_met_say_by_how_much(tmp_path):
    entries = _met_entries(
        step_fraction=0.7, fused_speedup=10.0, seed_busy_s=80e-6, graphs_factor=0.5
    )
    goals = _goals(_results(tmp_path, entries, JAX_SKIPPED))
    assert [g.verdict for g in goals] == ["not met"] * 4, goals
    step, fused, ahead, seed = goals
    assert step.measured.startswith("70.0% [") and step.why == f"below the bar at {BIG.name}"
    assert fused.measured.startswith("10.0x [") and fused.why == "below the bar"
    assert ahead.why.startswith(f"not proven ahead at {SMALL.name} (compiled_graphs)")
    assert seed.measured.startswith("80.0 us per fit")


def test_a_goal_within_noise_of_its_bar_is_not_met(tmp_path):
    # 86% at the median, but +-5% noise over 6 samples: the interval reaches below 85%.
    entries = [_case("triton_step", BIG, _fit_at_fraction(BIG, 0.86), spread=0.05, n=6)]
    step = gpu_check.goal_step_bandwidth(_results(tmp_path, entries))
    assert step.verdict == "not met" and step.why.startswith("the 95% interval reaches below")


def test_a_wrong_answer_does_not_meet_a_goal(tmp_path):
    entries = [_case("triton_step", BIG, _fit_at_fraction(BIG, 0.95), oracle_ok=False)]
    step = gpu_check.goal_step_bandwidth(_results(tmp_path, entries))
    assert step.verdict == "not met" and step.why.startswith("wrong answer (oracle)")


def test_goals_not_measured_give_the_reason(tmp_path):
    entries = [
        _case("autograd", SMALL, 1e-3),
        _case("triton_fused", QUESTION[0], 40e-6),  # no GPU time recorded
    ]
    skipped = [("triton_step", BIG, "Triton compiles for GPUs only"), *JAX_SKIPPED]
    goals = _goals(_results(tmp_path, entries, skipped, complete=False))
    assert [g.verdict for g in goals] == ["not measured"] * 4, goals
    step, fused, ahead, seed = goals
    assert "skipped: Triton compiles for GPUs only" in step.why
    assert "triton_step" in fused.why and "Triton compiles for GPUs only" in fused.why
    assert ahead.why.startswith("no sizes problem has both")
    assert "no GPU time recorded" in seed.why


def test_an_incomplete_run_says_so_where_a_case_is_missing(tmp_path):
    entries = [_case("triton_step", GOAL_2, 1e-3)]
    fused = gpu_check.goal_fused_speedup(_results(tmp_path, entries, complete=False))
    assert fused.verdict == "not measured"
    assert fused.why.startswith("no triton_fused case at K = 1000") and "incomplete" in fused.why


def test_goals_md_from_a_results_file(tmp_path, capsys):
    path = _results(tmp_path, _met_entries(), JAX_SKIPPED).path
    outcome = gpu_check.write_goals(path, tmp_path / "goals.md")
    assert outcome.status == "ok"
    text = (tmp_path / "goals.md").read_text()
    assert text == capsys.readouterr().out
    assert text.startswith("# GPU speed goals\n\nFrom results.json: Synthetic H100 (test data)")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5  # the header and the four goals
    assert rows[1].startswith("| triton_step reaches >= 85% of copy bandwidth")
    assert all(
        row.split(" | ")[-1].startswith(("met", "not met", "not measured")) for row in rows[1:]
    )


def test_goals_md_from_a_previous_runs_results_says_so(tmp_path):
    path = _results(tmp_path, _met_entries(), JAX_SKIPPED).path
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert gpu_check.write_goals(path, tmp_path / "goals.md", since=time.time()).status == "failed"
    assert (tmp_path / "goals.md").read_text().count(
        "is a previous run's; this run saved none"
    ) == 4


def test_goals_md_without_results_says_why_for_each_goal(tmp_path):
    outcome = gpu_check.write_goals(tmp_path / "results.json", tmp_path / "goals.md")
    assert outcome.status == "failed"
    text = (tmp_path / "goals.md").read_text()
    assert text.count("| not measured: no usable results file") == 4
