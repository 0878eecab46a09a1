"""`python -m bench gpu-check DIR`: the first run on a CUDA machine, from the checkout, with nothing
to install; bounded and self-explaining. It prints its plan (phases, cases, compiles expected,
each phase's time budget), then runs the phases in turn, each timed and stopped at its budget:

1. doctor: the machine's inventory, DIR/doctor.txt; the check stops here, with the table, if
   something the main job needs is missing.
2. cuda-tests: the tests only a GPU can run (marked or parametrized `cuda`: `pytest -k cuda
   tests`), DIR/cuda-tests.log.
3. sweep: the `gpu-check` sweep on CUDA, DIR/results.json (pytest's output in results.log).
4. convergence: the question's case with every method, saved into DIR/results.json.
5. report: DIR/<run-id>/index.html, and DIR/latest/.
6. goals: the four GPU speed goals from DIR/results.json, met / not met / not measured, in
   DIR/goals.md.

Phases 1 to 5 run in child processes, each in a session of its own: at its budget a phase gets
SIGTERM (the sweep then saves what it measured, marked incomplete), GRACE_S later SIGKILL with
everything it started. The budgets, the grace periods and the start add up to less than 8
minutes (TOTAL_S): the bound holds by construction, whatever the GPU. A phase that fails or runs
out of time is reported and the next phase runs (the doctor's stops the check); the exit code is
then 1. Whether the goals are met does not change the exit code: they are measurements.
`--dry-run` prints the plan and stops, on any machine. Nothing changes GPU clocks or settings.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from bench.problem import Problem
    from bench.results import Case, Results

ROOT = Path(__file__).resolve().parents[1]

# The whole check, on one H100, is to end within this.
TOTAL_S = 8 * 60
# After a phase's budget: SIGTERM, then this long to save what it has, then SIGKILL.
GRACE_S = 5.0
# The parent's own share: imports, the plan, the goals, the summary.
START_S = 10.0
# Each phase's budget, in seconds; their sum, the grace periods and START_S stay within TOTAL_S
# (tests/test_gpu_check.py checks it).
BUDGETS: dict[str, float] = {
    "doctor": 30.0,
    "cuda-tests": 110.0,
    "sweep": 225.0,
    "convergence": 35.0,
    "report": 30.0,
}

# Per case of the sweep: up to TIMED_S of timed rounds (at least MIN_ROUNDS), fewer where the
# median is known to +-2% (the default precision) sooner.
TIMED_S = 0.1
MIN_ROUNDS = 5
TIMING = [f"--benchmark-max-time={TIMED_S}", f"--benchmark-min-rounds={MIN_ROUNDS}"]

# For the plan's estimate of the sweep, on one H100 (guesses until a first gpu-check's phase
# times replace them): per case, the preparation, the oracle fit and the copy yardstick around
# the timed rounds; per compile and per autotune.
CASE_OVERHEAD_S = 0.2
COMPILE_S = 1.5
AUTOTUNE_S = 1.0

RESULTS = "results.json"
DOCTOR_LOG = "doctor.txt"
TESTS_LOG = "cuda-tests.log"
GOALS = "goals.md"
SUMMARY = "gpu-check.txt"
PLAN_WIDTH = 100


# --- the plan ------------------------------------------------------------------------------------


def _shape(p: Problem) -> tuple:
    return (p.batch, p.dim, p.dtype)


def _shape_and_steps(p: Problem) -> tuple:
    return (p.batch, p.dim, p.dtype, p.steps)


def _size(p: Problem) -> tuple:
    return (p.elements, p.dtype)


# What a method compiles before it is timed (untimed preparation, its setup_s), and what a new
# compile takes: for the plan's count.
COMPILERS: dict[str, tuple[str, str, Callable[[Problem], tuple]]] = {
    "compiled": ("torch.compile", "shape and dtype", _shape),
    "compiled_graphs": ("torch.compile", "shape and dtype", _shape),
    "compiled_fused": ("torch.compile", "shape and dtype", _shape),
    "jax": ("jax.jit", "shape, dtype and K, where jax is installed", _shape_and_steps),
    "triton_fused": ("Triton autotune", "size and dtype", _size),
}


@dataclass(frozen=True)
class SweepPlan:
    problems: int
    methods: int
    compiles: dict[str, int]  # method -> compiles expected
    autotunes: dict[str, int]

    @property
    def cases(self) -> int:
        return self.problems * self.methods

    @property
    def estimate_s(self) -> float:
        return (
            self.cases * (TIMED_S + CASE_OVERHEAD_S)
            + sum(self.compiles.values()) * COMPILE_S
            + sum(self.autotunes.values()) * AUTOTUNE_S
        )


def sweep_plan(problems: Sequence[Problem], methods: Sequence[str]) -> SweepPlan:
    compiles, autotunes = {}, {}
    for method in methods:
        if method in COMPILERS:
            kind, _, key = COMPILERS[method]
            count = len({key(p) for p in problems})
            (autotunes if kind == "Triton autotune" else compiles)[method] = count
    return SweepPlan(len(problems), len(methods), compiles, autotunes)


def worst_case_s(phases: Iterable[str]) -> float:
    """The longest the check can take: each phase's budget and grace period, and the start."""
    return START_S + sum(BUDGETS[name] + GRACE_S for name in phases)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def plan_text(
    out: Path,
    problems: Sequence[Problem],
    methods: Sequence[str],
    skip_tests: bool = False,
) -> list[str]:
    """What gpu-check will do, phase by phase, with each phase's budget: printed first."""
    from bench.convergence import STUDY_LRS
    from bench.sweeps import GOALS as GOAL_PROBLEMS
    from bench.sweeps import QUICK, SIZES

    sweep = sweep_plan(problems, methods)
    shared = len(QUICK) + len(SIZES) + len(GOAL_PROBLEMS) - len({p.name for p in problems})
    phases = [name for name in BUDGETS if not (skip_tests and name == "cuda-tests")]
    lines = textwrap.wrap(
        f"gpu-check plan: {len(phases) + 1} phases into {out}, at most "
        f"{_duration(worst_case_s(phases))} in all: each phase is stopped at its budget, so the "
        f"{TOTAL_S // 60}-minute bound holds by construction.",
        PLAN_WIDTH,
    )
    lines.append(f"  {'phase':<12} {'budget':>6}  what")

    def phase(name: str, what: list[str], budget: str | None = None) -> None:
        shown = budget or f"{BUDGETS[name]:.0f} s"
        indent = 23  # "  phase        budget  "
        wrapped = [
            row
            for text in what
            for row in textwrap.wrap(text, PLAN_WIDTH - indent, subsequent_indent="  ")
        ]
        lines.append(f"  {name:<12} {shown:>6}  {wrapped[0]}")
        lines.extend(" " * indent + row for row in wrapped[1:])

    phase(
        "doctor",
        [
            f"the machine's inventory -> {DOCTOR_LOG}; the check stops here if something the "
            "main job needs is missing"
        ],
    )
    if skip_tests:
        phase("cuda-tests", ["skipped (--skip-tests)"], "-")
    else:
        phase(
            "cuda-tests",
            [
                "the tests only a GPU can run (marked or parametrized cuda): pytest -q -k cuda "
                f"tests -> {TESTS_LOG}"
            ],
        )
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for method, count in {**sweep.compiles, **sweep.autotunes}.items():
        kind, per, _ = COMPILERS[method]
        groups.setdefault((kind, per), {})[method] = count
    compiles = "; ".join(
        f"{sum(counts.values())} {kind} ("
        + ", ".join(f"{m} {n}" for m, n in counts.items())
        + f": one per {per})"
        for (kind, per), counts in groups.items()
    )
    phase(
        "sweep",
        [
            f"the gpu-check sweep on cuda -> {RESULTS}",
            f"{sweep.cases} cases: {sweep.problems} problems (quick {len(QUICK)}, sizes "
            f"{len(SIZES)}, goals {len(GOAL_PROBLEMS)}"
            + (f", {shared} shared" if shared else "")
            + f") x {sweep.methods} methods; a method that cannot run here is skipped at once, "
            "with the reason",
            f"per case: up to {TIMED_S:g} s of timed rounds (at least {MIN_ROUNDS}), fewer once "
            "its median is known to +-2%",
            f"compiles expected (untimed preparation): {compiles}",
            f"estimate: {sweep.cases} x ({TIMED_S:g} + {CASE_OVERHEAD_S:g}) s + "
            f"{sum(sweep.compiles.values())} x {COMPILE_S:g} s + "
            f"{sum(sweep.autotunes.values())} x {AUTOTUNE_S:g} s = {sweep.estimate_s:.0f} s "
            "(guessed costs per case and per compile); stopped at its budget, what it measured "
            "is kept, marked incomplete",
        ],
    )
    phase(
        "convergence",
        [
            f"the question's case (B=1, D=5, 1000 steps): {len(methods)} methods x "
            f"{len(STUDY_LRS)} lrs and the question's own loop -> {RESULTS}"
        ],
    )
    phase("report", [f"the report from {RESULTS} -> <run-id>/index.html, latest/"])
    phase(
        "goals",
        [f"the four GPU speed goals from {RESULTS} -> {GOALS}: met, not met or not measured"],
        "<1 s",
    )
    lines += textwrap.wrap(
        f"At a phase's budget: SIGTERM, and SIGKILL {GRACE_S:g} s later ({START_S:g} s are kept "
        "for the start). A phase that fails or runs out of time is reported and the next one "
        "runs (doctor: the check stops); the exit code is then 1.",
        PLAN_WIDTH,
    )
    return lines


# --- running the phases ----------------------------------------------------------------------


@dataclass
class Outcome:
    """How a phase ended: "ok", "failed", "timed out" or "skipped", with a line saying more."""

    status: str
    elapsed_s: float = 0.0
    detail: str = ""


@dataclass
class Phase:
    name: str
    budget_s: float
    start: Callable[[], Outcome]  # runs the phase within its budget
    stop_on_failure: bool = False
    needs: Path | None = None  # a file that must exist first, else the phase is skipped ...
    since: float = 0.0  # ... written at this time.time() or later (not a previous run's)
    outcome: Outcome | None = field(default=None, init=False)


def run_child(
    command: Sequence[str],
    budget_s: float,
    log: Path | None = None,
    cwd: Path | None = None,
    grace_s: float = GRACE_S,
) -> Outcome:
    """Run `command` in a session of its own; at `budget_s`, SIGTERM its whole process group,
    `grace_s` later SIGKILL. Its output goes to `log` (else to this terminal)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    begin = time.perf_counter()
    with open(log, "w", encoding="utf-8") if log else contextlib.nullcontext() as sink:
        child = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT if sink else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the group is ours to stop, and Ctrl-C reaches us alone
        )
        try:
            code = child.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            _stop(child, grace_s)
            return Outcome("timed out", time.perf_counter() - begin, f"stopped at {budget_s:g} s")
        except BaseException:  # Ctrl-C or SIGTERM here: the child goes too, then we do
            _stop(child, grace_s)
            raise
    elapsed = time.perf_counter() - begin
    if code == 0:
        return Outcome("ok", elapsed)
    return Outcome("failed", elapsed, f"exit code {code}")


def _stop(child: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the child's process group (the sweep saves what it measured), SIGKILL to what
    is left of it after `grace_s` (the child, or what it started: compile workers, a test's
    subprocess)."""
    _kill_group(child, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace_s)
    _kill_group(child, signal.SIGKILL)
    child.wait()


def _kill_group(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def execute(phases: Sequence[Phase], stream: TextIO | None = None) -> int:
    """Run `phases` in turn, each timed; print how each ended. 0 when every phase was ok, else 1.
    A phase with `stop_on_failure` that does not end ok ends the run."""
    from bench import interrupt

    stream = sys.stdout if stream is None else stream
    code = 0
    for index, phase in enumerate(phases, 1):
        interrupt.set_stage(f"during gpu-check's {phase.name} phase; what is done is kept")
        if phase.needs is not None and not _fresh(phase.needs, phase.since):
            phase.outcome = Outcome("skipped", 0.0, f"no {phase.needs.name} from this run")
        else:
            print(
                f"gpu-check: [{index}/{len(phases)}] {phase.name}, budget {phase.budget_s:g} s",
                file=stream,
                flush=True,
            )
            phase.outcome = phase.start()
        outcome = phase.outcome
        said = f"{outcome.status} in {outcome.elapsed_s:.1f} s (budget {phase.budget_s:g} s)"
        print(
            f"gpu-check: {phase.name}: {said}" + (f": {outcome.detail}" if outcome.detail else ""),
            file=stream,
            flush=True,
        )
        if outcome.status != "ok":
            code = 1
            if phase.stop_on_failure:
                print(f"gpu-check: stopping: the {phase.name} phase did not pass", file=stream)
                break
    return code


def _fresh(path: Path, since: float) -> bool:
    """Whether `path` was written at `since` or later (a second's slack: some file systems keep
    whole seconds; a previous run wrote its results well before its last phases)."""
    try:
        return path.stat().st_mtime >= since - 1.0
    except OSError:
        return False


def summary_lines(phases: Sequence[Phase], total_s: float) -> list[str]:
    lines = ["gpu-check phases:"]
    for phase in phases:
        o = phase.outcome
        if o is None:
            lines.append(f"  {phase.name:<12} not run")
            continue
        detail = f"  {o.detail}" if o.detail else ""
        lines.append(
            f"  {phase.name:<12} {o.status:<9} {o.elapsed_s:6.1f} s of {phase.budget_s:g} s{detail}"
        )
    lines.append(f"  total {total_s:.0f} s (bound: {TOTAL_S} s)")
    return lines


# --- the phases ------------------------------------------------------------------------------


def cuda_tests_command() -> list[str]:
    """The tests only a GPU can show: marked `cuda` or parametrized with a cuda device (their ids
    say cuda). A module that cannot be collected (an optional package missing) costs its own
    tests only."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-k",
        "cuda",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        str(ROOT / "tests"),
    ]


def run_cuda_tests(log: Path, budget_s: float = BUDGETS["cuda-tests"]) -> Outcome:
    """The CUDA tests in a child process (so that Triton compiles for the GPU there), stopped at
    `budget_s`; pytest's last line says how they went."""
    outcome = run_child(cuda_tests_command(), budget_s, log=log, cwd=ROOT)
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    last = lines[-1].strip("= ") if lines else "no output"
    outcome.detail = "; ".join(d for d in (outcome.detail, last, f"log: {log}") if d)
    return outcome


def doctor(out: Path) -> Outcome:
    """`python -m bench doctor`, its table shown here and kept in DIR/doctor.txt."""
    log = out / DOCTOR_LOG
    command = [sys.executable, "-m", "bench", "doctor", "--reports", str(out)]
    outcome = run_child(command, BUDGETS["doctor"], log=log)
    print(log.read_text(encoding="utf-8", errors="replace").rstrip(), flush=True)
    if outcome.status == "failed":
        outcome.detail = f"something required is missing (the table above; {log})"
    return outcome


def worker(phase: str, out: Path, progress: bool) -> Callable[[], Outcome]:
    """A phase run by `python -m bench gpu-check DIR --phase PHASE` in a child process."""
    command = [sys.executable, "-m", "bench", "gpu-check", str(out), "--phase", phase]
    if not progress:
        command.append("--no-progress")
    return lambda: run_child(command, BUDGETS[phase])


def make_phases(out: Path, skip_tests: bool, progress: bool, since: float) -> list[Phase]:
    """The phases of a check that started at `since` (time.time()): a results file in DIR from
    before it is a previous run's, not used."""
    results = out / RESULTS
    phases = [Phase("doctor", BUDGETS["doctor"], lambda: doctor(out), stop_on_failure=True)]
    if not skip_tests:
        phases.append(
            Phase("cuda-tests", BUDGETS["cuda-tests"], lambda: run_cuda_tests(out / TESTS_LOG))
        )
    phases += [
        Phase("sweep", BUDGETS["sweep"], worker("sweep", out, progress)),
        Phase(
            "convergence",
            BUDGETS["convergence"],
            worker("convergence", out, progress),
            needs=results,
            since=since,
        ),
        Phase(
            "report",
            BUDGETS["report"],
            worker("report", out, progress),
            needs=results,
            since=since,
        ),
        Phase("goals", 1.0, lambda: write_goals(results, out / GOALS, since)),
    ]
    return phases


def run_phase(phase: str, out: Path, progress: bool) -> int:
    """One phase, in this process (the child of `execute`)."""
    from bench import interrupt
    from bench.cli import CommandError

    results = out / RESULTS
    saved = f"the results are saved in {results}"
    if phase == "sweep":
        from bench.suite_runner import BenchmarkRunError, run_benchmarks

        try:
            run_benchmarks(
                sweep="gpu-check",
                device="cuda",
                output=results,
                progress=progress,
                pytest_args=TIMING,
            )
        except BenchmarkRunError as exc:
            raise CommandError(str(exc)) from None
        print(f"results: {results}")
    elif phase == "convergence":
        from bench.convergence import convergence_study
        from bench.results import add_convergence

        interrupt.set_stage(f"during the convergence study; {saved}")
        table, traces = convergence_study("cuda", progress=progress)
        add_convergence(results, table, traces)
        print(f"convergence study: saved in {results}")
    elif phase == "report":
        from bench.report import write_report

        interrupt.set_stage(f"while building the report; {saved}")
        run_dir = write_report(results, out=out)
        print(f"report: {run_dir / 'index.html'}")
    return 0


# --- the goals -----------------------------------------------------------------------------------

STEP_COPY_FRACTION = 0.85  # triton_step: of the copy bandwidth ...
STEP_MIN_ELEMENTS = 2**24  # ... at this many float32 elements or more
FUSED_SPEEDUP = 20.0  # triton_fused over triton_step ...
FUSED_STEPS, FUSED_ELEMENTS = 1000, 2**24  # ... at K = 1000 and 2^24 elements
PEERS = ("compiled_graphs", "jax")  # what the fastest method must beat on every sizes problem
SEED_GPU_S = 50e-6  # the question's case, one fit of triton_fused, GPU time
# The GPU time of one fit / K, best first: the kernels' busy time (profiler pass), else the span
# between two CUDA events (which includes the GPU idling between launches).
GPU_TIME_FIELDS = (
    ("gpu_busy_per_step_s", "GPU busy time"),
    ("event_span_per_step_s", "CUDA event span"),
)


@dataclass(frozen=True)
class Goal:
    goal: str
    measured: str
    verdict: str  # "met", "not met" or "not measured"
    why: str = ""  # for "not measured", and for "not met" where the reason is not the number


def _cuda(results: Results) -> list[Case]:
    return [c for c in results.cases if str(c.info.get("device", "")).startswith("cuda")]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _significant(value: float) -> str:
    """Three significant digits, no exponent: 12.0, 2.00, 12300."""
    rounded = float(f"{value:.3g}")
    if rounded == 0 or not math.isfinite(rounded):
        return f"{rounded:g}"
    return f"{rounded:.{max(0, 2 - math.floor(math.log10(abs(rounded))))}f}"


def _ratio(interval) -> str:
    return (
        f"{_significant(interval.estimate)}x "
        f"[{_significant(interval.low)}, {_significant(interval.high)}]"
    )


def _seconds(value: float) -> str:
    from bench.compare import format_seconds

    return format_seconds(value)


def _absent(results: Results, method: str, what: str) -> str:
    """Why there is no `method` case for `what`: its skip or failure reason, or how far an
    incomplete run got."""
    reasons = sorted(
        {f"{n.status}: {n.reason}" for n in results.not_measured if n.method == method}
    )
    if reasons:
        return f"no {method} case {what} ({'; '.join(reasons)})"
    if not results.complete:
        return f"no {method} case {what}: the run is incomplete ({results.progress()})"
    return f"no {method} case {what} in the results"


def _wrong(cases: Iterable[Case]) -> list[str]:
    return [c.problem for c in cases if not c.oracle_ok]


def goal_step_bandwidth(results: Results) -> Goal:
    from bench import stats

    goal = (
        f"triton_step reaches >= {STEP_COPY_FRACTION:.0%} of copy bandwidth at >= 2^24 float32 "
        "elements"
    )
    cases = [
        c
        for c in _cuda(results)
        if c.method == "triton_step"
        and c.info["dtype"] == "float32"
        and c.info["batch"] * c.info["dim"] >= STEP_MIN_ELEMENTS
    ]
    if not cases:
        return Goal(
            goal,
            "—",
            "not measured",
            _absent(results, "triton_step", "at >= 2^24 float32 elements on CUDA"),
        )
    parts, short, unproven = [], [], []
    for case in sorted(cases, key=lambda c: (c.info["batch"] * c.info["dim"], c.info["steps"])):
        copy, moved, steps = (
            case.info["copy_bandwidth_gbs"],
            case.info["bytes_per_step"],
            case.info["steps"],
        )
        fraction = moved / (float(stats.quartiles(case.samples)[1]) / steps) / 1e9 / copy
        text, low = _percent(fraction), fraction
        if case.samples.size >= stats.MIN_SAMPLES:
            median = stats.median_interval(case.samples)  # of the time: its high is the low here
            low = moved / (median.high / steps) / 1e9 / copy
            text += f" [{_percent(low)}, {_percent(moved / (median.low / steps) / 1e9 / copy)}]"
        parts.append(f"{text} at {case.problem}")
        if fraction < STEP_COPY_FRACTION:
            short.append(case.problem)
        elif low < STEP_COPY_FRACTION:
            unproven.append(case.problem)
    measured = "; ".join(parts)
    wrong = _wrong(cases)
    if wrong:
        return Goal(goal, measured, "not met", f"wrong answer (oracle) at {', '.join(wrong)}")
    if short:
        return Goal(goal, measured, "not met", f"below the bar at {', '.join(short)}")
    if unproven:
        why = f"the 95% interval reaches below the bar at {', '.join(unproven)}"
        return Goal(goal, measured, "not met", why)
    return Goal(goal, measured, "met")


def goal_fused_speedup(results: Results) -> Goal:
    from bench import stats

    goal = f"triton_fused >= {FUSED_SPEEDUP:g}x triton_step at K = {FUSED_STEPS} and 2^24 elements"
    at = {
        c.method: c
        for c in _cuda(results)
        if c.method in ("triton_step", "triton_fused")
        and c.info["steps"] == FUSED_STEPS
        and c.info["batch"] * c.info["dim"] == FUSED_ELEMENTS
    }
    where = f"at K = {FUSED_STEPS} and 2^24 elements on CUDA"
    for method in ("triton_step", "triton_fused"):
        if method not in at:
            return Goal(goal, "—", "not measured", _absent(results, method, where))
    step, fused = at["triton_step"], at["triton_fused"]
    estimate = float(stats.quartiles(step.samples)[1] / stats.quartiles(fused.samples)[1])
    low = estimate
    if min(step.samples.size, fused.samples.size) >= stats.MIN_SAMPLES:
        ratio = stats.ratio_interval(step.samples, fused.samples)
        measured = _ratio(ratio)
        low = ratio.low
    else:
        measured = f"{_significant(estimate)}x (too few samples for an interval)"
    measured += f" at {fused.problem}"
    if _wrong([step, fused]):
        return Goal(goal, measured, "not met", "wrong answer (oracle)")
    if estimate < FUSED_SPEEDUP:
        return Goal(goal, measured, "not met", "below the bar")
    if low < FUSED_SPEEDUP:
        return Goal(goal, measured, "not met", "the 95% interval reaches below the bar")
    return Goal(goal, measured, "met")


def goal_fastest_ahead(results: Results, sizes: Sequence[str]) -> Goal:
    """On every `sizes` problem, the fastest method that is not a peer is proven faster (95%
    interval of peer / fastest above 1) than each peer that was measured."""
    from bench import stats

    goal = f"the fastest method ahead of {' and '.join(PEERS)} on every sizes problem"
    by_problem: dict[str, list[Case]] = {}
    for case in _cuda(results):
        by_problem.setdefault(case.problem, []).append(case)
    parts, behind, unmeasured = [], [], []
    peers_seen: set[str] = set()
    for problem in sizes:
        cases = by_problem.get(problem, [])
        own = [c for c in cases if c.method not in PEERS and c.oracle_ok]
        peers = [c for c in cases if c.method in PEERS]
        if not own or not peers:
            unmeasured.append(problem)
            continue
        fastest = min(own, key=lambda c: float(stats.quartiles(c.samples)[1]))
        said = []
        for peer in peers:
            peers_seen.add(peer.method)
            if min(peer.samples.size, fastest.samples.size) >= stats.MIN_SAMPLES:
                ratio = stats.ratio_interval(peer.samples, fastest.samples)
                ahead = ratio.low > 1
                said.append(f"{_ratio(ratio)} {peer.method}")
            else:
                ahead = False
                said.append(f"{peer.method}: too few samples")
            if not ahead:
                behind.append(f"{problem} ({peer.method})")
        parts.append(f"{problem}: {fastest.method}, vs " + ", ".join(said))
    missing_peers = [p for p in PEERS if p not in peers_seen]
    notes = [_absent(results, p, "on the sizes problems") for p in missing_peers]
    seen = " and ".join(p for p in PEERS if p in peers_seen)
    measured = "; ".join(parts) or "—"
    if behind:
        return Goal(goal, measured, "not met", "not proven ahead at " + ", ".join(behind))
    if not parts:
        why = "no sizes problem has both a method and a peer measured on CUDA"
        return Goal(goal, measured, "not measured", "; ".join([why, *notes]))
    if unmeasured:
        count = f"{len(unmeasured)} of {len(sizes)}"
        why = f"{count} sizes problems not measured: {', '.join(unmeasured)}"
        return Goal(goal, measured, "not measured", "; ".join([why, *notes]))
    return Goal(goal, measured, "met", f"against {seen} only: {'; '.join(notes)}" if notes else "")


def goal_seed_case(results: Results) -> Goal:
    goal = f"the question's case under {SEED_GPU_S * 1e6:g} us of GPU time with triton_fused"
    cases = [
        c
        for c in _cuda(results)
        if c.method == "triton_fused"
        and (c.info["batch"], c.info["dim"], c.info["steps"]) == (1, 5, 1000)
    ]
    if not cases:
        return Goal(
            goal,
            "—",
            "not measured",
            _absent(results, "triton_fused", "of the question's case on CUDA"),
        )
    parts, met, unknown = [], True, []
    for case in cases:
        found = next(
            ((f, label) for f, label in GPU_TIME_FIELDS if (case.info.get(f) or 0) > 0), None
        )
        if found is None:
            unknown.append(case.problem)
            continue
        per_fit = float(case.info[found[0]]) * case.info["steps"]
        parts.append(f"{_seconds(per_fit)} per fit ({found[1]}) at {case.problem}")
        met = met and per_fit < SEED_GPU_S
    if not parts:
        why = (
            f"no GPU time recorded for {', '.join(unknown)} (the profiler and CUDA events give it)"
        )
        return Goal(goal, "—", "not measured", why)
    wrong = _wrong(cases)
    if wrong:
        return Goal(goal, "; ".join(parts), "not met", "wrong answer (oracle)")
    return Goal(goal, "; ".join(parts), "met" if met else "not met")


def evaluate_goals(results: Results, sizes: Sequence[str] | None = None) -> list[Goal]:
    """The four GPU speed goals, from a results file's CUDA cases. `sizes`: the problem names of
    the sizes sweep (default: bench.sweeps.SIZES)."""
    if sizes is None:
        from bench.sweeps import SIZES

        sizes = [p.name for p in SIZES]
    return [
        goal_step_bandwidth(results),
        goal_fused_speedup(results),
        goal_fastest_ahead(results, sizes),
        goal_seed_case(results),
    ]


def goals_markdown(goals: Sequence[Goal], source: str) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "# GPU speed goals",
        "",
        source,
        "",
        "| goal | measured | verdict |",
        "| --- | --- | --- |",
    ]
    for g in goals:
        verdict = g.verdict + (f": {g.why}" if g.why else "")
        lines.append(f"| {cell(g.goal)} | {cell(g.measured)} | {cell(verdict)} |")
    lines += [
        "",
        "Met where the whole 95% interval clears the bar ([low, high]: of the median time per "
        "fit, from the raw samples, bench.stats); bandwidth against a device-to-device copy "
        "measured in the same run; GPU time from the profiler's busy time, else the CUDA event "
        "span (a median, no interval). Not measured: the reason is given.",
    ]
    return "\n".join(lines) + "\n"


def write_goals(results_path: Path, target: Path, since: float = 0.0) -> Outcome:
    """goals.md from the results file, printed too; with no usable results file (or only one
    written before `since`, a time.time()), every goal is not measured and says why."""
    from bench.results import Results, ResultsError

    begin = time.perf_counter()
    try:
        if results_path.exists() and not _fresh(results_path, since):
            raise ResultsError(f"{results_path}: is a previous run's; this run saved none")
        results = Results.load(results_path)
    except ResultsError as exc:
        why = f"no usable results file ({exc})"
        goals = [Goal(g, "—", "not measured", why) for g in GOAL_NAMES]
        source = f"From {results_path}: not usable."
        status = "failed"
    else:
        goals = evaluate_goals(results)
        run = "complete" if results.complete else f"INCOMPLETE ({results.progress()})"
        when = f", measured {results.measured_at:%Y-%m-%d %H:%M UTC}" if results.measured_at else ""
        source = f"From {results_path.name}: {results.device_name}{when}; the run is {run}."
        status = "ok"
    text = goals_markdown(goals, source)
    target.write_text(text, encoding="utf-8")
    print(text, end="", flush=True)
    return Outcome(status, time.perf_counter() - begin, f"{target}")


GOAL_NAMES = (
    "triton_step reaches >= 85% of copy bandwidth at >= 2^24 float32 elements",
    "triton_fused >= 20x triton_step at K = 1000 and 2^24 elements",
    "the fastest method ahead of compiled_graphs and jax on every sizes problem",
    "the question's case under 50 us of GPU time with triton_fused",
)


# --- the command -----------------------------------------------------------------------------

PHASES = ("sweep", "convergence", "report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "On a CUDA machine, from the checkout: doctor, the CUDA tests, the gpu-check sweep, the "
        "convergence study, the report and the four GPU speed goals, each phase timed and stopped "
        f"at its budget (the whole under {TOTAL_S // 60} minutes on one H100), everything in DIR. "
        "Exit 0 when every phase passed, 1 when one failed or ran out of time."
    )
    parser.add_argument(
        "dir", type=Path, metavar="DIR", help="where the logs, results, report and goals go"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (phases, cases, compiles expected, budgets) and stop; any machine",
    )
    parser.add_argument(
        "--skip-tests", action="store_true", help="no CUDA tests: the other phases only"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (for logs and CI)"
    )
    # One phase, in the child process `execute` starts for it.
    parser.add_argument("--phase", choices=PHASES, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from bench.cli import UsageError
    from bench.paths import check_file, check_folder

    start = time.perf_counter()
    out: Path = args.dir.resolve()  # the phases' child processes get it whole
    progress = not args.no_progress
    if args.phase is not None:
        return run_phase(args.phase, out, progress)
    check_folder(args.dir, "DIR")
    check_file(args.dir / RESULTS, "DIR")
    if args.dry_run:
        print("\n".join(_plan(out, args.skip_tests)))
        return 0

    import torch

    if not torch.cuda.is_available():
        raise UsageError("gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False here")
    plan = _plan(out, args.skip_tests)
    print("\n".join(plan), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    phases = make_phases(out, args.skip_tests, progress, since=time.time())
    code = execute(phases)
    summary = summary_lines(phases, time.perf_counter() - start)
    print("\n" + "\n".join(summary))
    (out / SUMMARY).write_text("\n".join([*plan, "", *summary]) + "\n", encoding="utf-8")
    print(f"gpu-check: everything is in {out}")
    return code


def _plan(out: Path, skip_tests: bool) -> list[str]:
    from bench.methods import METHODS
    from bench.sweeps import GPU_CHECK

    return plan_text(out, GPU_CHECK, list(METHODS), skip_tests)
