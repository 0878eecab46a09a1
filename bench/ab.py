"""`python -m bench ab BASE [CAND]`: two git revisions measured in one run, interleaved.

Run-to-run drift of a whole machine (clocks, load, another job on the runner) is in neither of two
separate runs' samples, so comparing them cannot tell it from a change in the code. Here both sides
are measured in the same minutes, in turns: a round of baseline fits, a round of candidate fits,
case by case, so that drift lands on both sides alike.

- BASE (and CAND, if given) is checked out into a temporary `git worktree add --detach`; CAND
  defaults to the working tree of the current checkout, dirty or not.
- One worker process per side (bench/ab_worker.py, run from this harness in the side's tree)
  imports that tree's `bench` and `kernels`, whatever PYTHONPATH or an editable install say; each
  reports the files it imported and their commit, and a side that imported another tree is refused.
- Each worker prepares every case once, untimed (compile, autotune), and checks its fit against the
  closed form. Then, case by case, the two sides take turns (which side goes first alternates), each
  round about ROUND_S of fits timed as bench.timing times one, until the case's ratio interval is
  decided against the threshold (see Stopping: compare's verdict is no longer `inconclusive`, after
  at least MIN_ROUNDS rounds a side) or the time budget `--max-time` is spent.
- Both sides are saved as results files (bench.results) and compared by bench.compare, exactly as
  `python -m bench compare BASE.json CAND.json` compares them; exit codes are compare's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# A round of one side takes about this long: short enough that the sides alternate many times
# within a drift (a clock change, a neighbour's job), long enough that the pipe's round trip
# (well under a millisecond) is nothing beside it.
ROUND_S = 0.05
MAX_ROUND = 1000  # fits in one round, however fast a fit
# Pairs of rounds before a case can stop. Fits within one round share the machine's state of that
# moment (a neighbour's burst, a clock step), so one pair of long rounds would give a narrow
# interval that says more about that moment than about the code; five turns each spread both
# sides over the same stretch of time.
MIN_ROUNDS = 5
DEFAULT_MAX_TIME = 60.0
PROGRESS_EVERY_S = 10.0  # a progress line at least this often while sampling
# glibc's allocator, made steady in both workers alike: fixed thresholds turn off its dynamic mmap
# threshold, under which whether a step's temporaries cost page faults depends on what the process
# freed before (see bench.environment.steady_allocator). 32 MiB is the largest mmap threshold
# every glibc accepts. A value the user set in the environment is kept.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 2**31 - 1}
WORKER = Path(__file__).with_name("ab_worker.py")
SIDES = ("baseline", "candidate")


class WorkerError(RuntimeError):
    """A side that cannot run: one line saying which side and why; exit code 2."""


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Interleaved A/B run: benchmark two git revisions of this checkout in one run, in "
        "alternating rounds, until each case's verdict is decided or the time budget is spent; "
        "save both results files and compare them as `compare` does. Exit code: 0 the gate "
        "passes; 1 a regression, a wrong or missing case; 2 bad input (an unknown revision, not "
        "a git checkout, a side that cannot import or run)."
    )
    parser.add_argument("base", metavar="BASE", help="the baseline's git revision, e.g. main")
    parser.add_argument(
        "cand",
        metavar="CAND",
        nargs="?",
        default=None,
        help="the candidate's git revision (default: the working tree, dirty or not)",
    )
    # The sweeps' names only: bench.sweeps imports torch, and `ab --help` needs none of it.
    from bench.cli import DEFAULT_SWEEP
    from bench.cli import SWEEP_NAMES as SWEEPS
    from bench.compare import add_verdict_options

    parser.add_argument(
        "--sweep",
        default=DEFAULT_SWEEP,
        help=f"the problems to time: {', '.join(SWEEPS)} (default: {DEFAULT_SWEEP})",
    )
    parser.add_argument(
        "--methods",
        default=None,
        metavar="A,B",
        help="comma-separated methods to time (default: all; those a side or the device cannot "
        "run are skipped with the reason)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu or cuda (default: cuda if present, else cpu)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        metavar="D1,D2",
        help="run every problem of the sweep in these dtypes (default: the sweep's own)",
    )
    add_verdict_options(parser)
    parser.add_argument(
        "--max-time",
        default=str(DEFAULT_MAX_TIME),
        metavar="SECONDS",
        help=f"time budget of the interleaved rounds (default: {DEFAULT_MAX_TIME:g}); the "
        "untimed preparation (compile, autotune) comes on top, and every case gets at least "
        "its first rounds",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where to write baseline.json, candidate.json and the workers' logs "
        "(default: reports/ab/<UTC time>/)",
    )
    parser.add_argument(
        "--markdown", metavar="FILE", default=None, help="also write the comparison as Markdown"
    )


def parse_max_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--max-time {text!r} is not a number of seconds, e.g. 60") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--max-time {text!r} is not allowed; it must be seconds > 0, e.g. 60")
    return value


@dataclass(frozen=True)
class Options:
    sweep: str
    methods: list[str]
    device: str
    dtypes: list[str] | None
    threshold: float
    alpha: float
    max_time: float


def parse_options(args: argparse.Namespace) -> Options:
    """The options, checked as pytest's and compare's are: UsageError names the bad one."""
    from bench import plugin
    from bench.cli import UsageError
    from bench.compare import parse_alpha, parse_threshold
    from bench.methods import METHODS

    try:
        return Options(
            sweep=plugin.parse_sweep(args.sweep),
            methods=plugin.parse_methods(args.methods) if args.methods else list(METHODS),
            device=plugin.parse_device(args.device) if args.device else plugin.default_device(),
            dtypes=plugin.parse_dtypes(args.dtype) if args.dtype else None,
            threshold=parse_threshold(args.threshold),
            alpha=parse_alpha(args.alpha),
            max_time=parse_max_time(args.max_time),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from bench.cli import UsageError

    options = parse_options(args)
    out, markdown = check_outputs(args.out, args.markdown)
    repo = find_checkout(Path.cwd())
    base = Side("baseline", args.base, resolve(repo, args.base))
    if args.cand is None:
        cand = Side("candidate", "working tree", resolve(repo, "HEAD"), tree=repo)
    else:
        cand = Side("candidate", args.cand, resolve(repo, args.cand))
    ab = ABRun(repo, base, cand, options, out)
    finished = False
    try:
        ab.start()
        ab.prepare()
        ab.sample()
        ab.save()
        finished = True
    except WorkerError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (bench.interrupt): keep what was measured
        ab.save_incomplete()
        raise
    finally:
        ab.close(hurry=not finished)
    comparison = ab.compare()
    print(comparison.to_text(), end="")
    table = comparison.table
    undecided = table.loc[table["verdict"].isin(("inconclusive", "untested")), "case"].tolist()
    if ab.budget_spent and undecided:
        print(
            f"time budget spent ({options.max_time:g} s of rounds) with {len(undecided)} "
            "case(s) undecided: a larger --max-time, or a quieter machine, would tell"
        )
    print(f"results: {ab.paths['baseline']} {ab.paths['candidate']}")
    if markdown is not None:
        try:
            markdown.parent.mkdir(parents=True, exist_ok=True)
            markdown.write_text(comparison.to_markdown(), encoding="utf-8")
        except OSError as exc:  # said, but the verdict's exit code stands
            print(
                f"error: {markdown}: the Markdown was not written ({exc.strerror or exc})",
                file=sys.stderr,
            )
        else:
            print(f"markdown: {markdown}")
    return comparison.exit_code


def check_outputs(out: str | None, markdown: str | None) -> tuple[Path, Path | None]:
    """--out's folder and --markdown's file, checked before anything is checked out or timed."""
    from bench.paths import check_file, check_folder, check_not_inputs

    folder = check_folder(out, "--out") if out is not None else default_out(Path("reports"))
    if markdown is None:
        return folder, None
    path = check_file(markdown, "--markdown")
    check_not_inputs(
        [("--markdown", path, path)],
        [(f"{side} results", folder / f"{side}.json") for side in SIDES],
    )
    return folder, path


def default_out(reports: Path) -> Path:
    """reports/ab/<UTC time>/, a new name each run."""
    from bench.paths import check_folder

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder, counter = reports / "ab" / stamp, 1
    while folder.exists():
        folder, counter = reports / "ab" / f"{stamp}-{counter}", counter + 1
    return check_folder(folder, "--out")


# --- git ----------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, encoding="utf-8"
    )


def find_checkout(folder: Path) -> Path:
    """The top folder of the git checkout holding `folder`; UsageError where there is none."""
    from bench.cli import UsageError

    try:
        done = git(folder, "rev-parse", "--show-toplevel")
    except OSError as exc:
        raise UsageError(f"git cannot be run ({exc.strerror or exc}); ab needs git") from None
    if done.returncode != 0:
        raise UsageError(
            f"{folder} is not in a git checkout; run ab in the checkout whose revisions it compares"
        )
    return Path(done.stdout.strip()).resolve()


def resolve(repo: Path, revision: str) -> str:
    """The full commit id of `revision`; UsageError where the checkout has no such commit."""
    from bench.cli import UsageError

    if revision.startswith("-"):
        raise UsageError(f"unknown revision {revision!r}: a revision cannot start with '-'")
    done = git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if done.returncode != 0:
        raise UsageError(f"unknown revision {revision!r}: no such commit in {repo}")
    return done.stdout.strip()


def commit_time(repo: Path, commit: str) -> str | None:
    done = git(repo, "show", "-s", "--format=%cI", commit)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def branch(repo: Path, side: Side) -> str:
    """The branch a side is on, as pytest-benchmark writes it: the checkout's own branch for the
    working tree, the revision where it names a branch, else '(detached head)'."""
    if not side.worktree:
        done = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
        name = done.stdout.strip() if done.returncode == 0 else "HEAD"
    else:
        is_branch = git(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{side.revision}")
        name = side.revision if is_branch.returncode == 0 else "HEAD"
    return "(detached head)" if name == "HEAD" else name


# --- the two sides ------------------------------------------------------------------------------


@dataclass
class Side:
    """One side of the run: a revision, the tree it is checked out in and its worker."""

    name: str  # "baseline" or "candidate"
    revision: str  # as the user named it, or "working tree"
    commit: str
    tree: Path | None = None  # None until checked out; the checkout itself for the working tree
    worktree: bool = False  # True for a temporary worktree this run made
    dirty: bool = False
    hello: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    log: IO[str] | None = None
    log_path: Path | None = None

    @property
    def label(self) -> str:
        """'HEAD~1 (1a2b3c4)', 'working tree (1a2b3c4, dirty)'."""
        return f"{self.revision} ({self.commit[:7]}{', dirty' if self.dirty else ''})"

    def send(self, request: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self.died() from None

    def receive(self) -> dict[str, Any]:
        """The worker's next answer; WorkerError where it ended instead."""
        assert self.process is not None and self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise self.died()
            with contextlib.suppress(ValueError):  # a stray line printed before the worker ran
                message = json.loads(line)
                if isinstance(message, dict) and "event" in message:
                    return message

    def died(self, why: str | None = None) -> WorkerError:
        if why is None:
            assert self.process is not None
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            why = f"its worker stopped (exit code {code})"
            last = self.last_log_line()
            if last:
                why += f": {last}"
        return WorkerError(f"the {self.name} {self.label} cannot run: {why} (log: {self.log_path})")

    def last_log_line(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines()]
        return next((ln for ln in reversed(lines) if ln), "")


@dataclass
class CaseRun:
    """One case (method, problem) on both sides: preparation, samples, verdict so far."""

    method: str
    problem: Any  # bench.problem.Problem
    status: dict[str, str] = field(default_factory=dict)  # side -> ok, skipped, failed
    reason: dict[str, str] = field(default_factory=dict)
    prepared: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_s: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    device_s: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    rounds: int = 0
    verdict: str | None = None  # set once decided

    @property
    def name(self) -> str:
        return f"{self.method} {self.problem.name}"

    def ok(self, side: str) -> bool:
        return self.status.get(side) == "ok"

    def round_size(self) -> int:
        probe = max(self.prepared[s]["probe_s"] for s in SIDES if self.ok(s))
        return max(1, min(MAX_ROUND, math.ceil(ROUND_S / max(probe, 1e-9))))

    def look(self, stopping: Stopping) -> str | None:
        """The verdict where the case can stop now, else None (see Stopping)."""
        if self.prepared["candidate"]["oracle_ok"] is False and self.rounds >= MIN_ROUNDS:
            return "wrong"  # compare's verdict whatever the times: a fast wrong answer fails
        return stopping.look(self, self.host_s["baseline"], self.host_s["candidate"], self.rounds)


class Stopping:
    """When a case may stop early: the stopping rule of the interleaved rounds.

    A case is looked at once it has MIN_ROUNDS rounds and MIN_STOP_SAMPLES samples a side, and
    again each time its samples have grown by LOOK_GROWTH; it stops when the ratio interval at
    the stricter level 1 - alpha / STRICTER (99% for alpha = 0.05) is decided against the threshold
    (compare.verdict_of: not `inconclusive`). Intervals are nested, so the verdict at 1 - alpha,
    the one compare gives on the saved files, is then the same. Looking again and again at a
    growing sample would otherwise raise the false alarms: simulated with log-normal samples of
    IQR 30% of the median, one sample a round (the worst case), threshold 10%, 1,000 runs each,
    stopping at 1 - alpha after every round from 5 samples on called 1.4% of identical pairs and
    5.3% of 1.05x slowdowns a regression; this rule calls 0.0% and 0.5%, and still every 1.5x
    slowdown, at the first look (tests/test_ab.py runs a smaller version of that simulation).
    A case that has not stopped when the budget is spent gets compare's verdict at 1 - alpha,
    whatever it is.
    """

    MIN_STOP_SAMPLES = 20
    LOOK_GROWTH = 1.25
    STRICTER = 5

    def __init__(self, threshold: float, alpha: float) -> None:
        self.threshold = threshold
        self.level = 1 - alpha / self.STRICTER
        self._looked_at: dict[int, int] = {}  # id of the case -> samples a side at its last look

    def look(self, key: Any, base: list[float], cand: list[float], rounds: int) -> str | None:
        from bench import stats
        from bench.compare import verdict_of

        n = min(len(base), len(cand))
        if rounds < MIN_ROUNDS or n < max(self.MIN_STOP_SAMPLES, stats.MIN_SAMPLES):
            return None
        if n < self.LOOK_GROWTH * self._looked_at.get(id(key), 0):
            return None
        self._looked_at[id(key)] = n
        interval = stats.ratio_interval(cand, base, level=self.level)
        verdict = verdict_of(interval.low, interval.high, self.threshold)
        return None if verdict == "inconclusive" else verdict


class ABRun:
    """The run: checkouts, workers, preparation, interleaved rounds, results files."""

    def __init__(self, repo: Path, base: Side, cand: Side, options: Options, out: Path) -> None:
        from bench.plugin import select_problems

        self.repo, self.options, self.out = repo, options, out
        self.sides = {"baseline": base, "candidate": cand}
        self.cases = [
            CaseRun(method, problem)
            for problem in select_problems(options.sweep, options.dtypes)
            for method in options.methods
        ]
        self.paths = {side: out / f"{side}.json" for side in SIDES}
        self.temp: Path | None = None
        self.phase = "before the first case"
        self.sampling_began: float | None = None
        self.budget_spent = False
        self.saved: str | None = None  # "complete" or "incomplete" once the files are written

    # where the run is, for the line of an interrupted run
    def describe(self) -> str:
        where = f"during the A/B run, {self.phase}"
        if self.saved:
            kind = "results" if self.saved == "complete" else "incomplete results"
            where += f"; the {kind} are in {self.out}"
        return where + "; the temporary worktrees are removed"

    def say(self, line: str) -> None:
        print(f"ab: {line}", file=sys.stderr, flush=True)

    def start(self) -> None:
        from bench import interrupt

        interrupt.set_stage(self.describe)
        self.phase = "while checking out"
        self.temp = Path(tempfile.mkdtemp(prefix="vecreg-ab-"))
        for side in self.sides.values():
            if side.tree is None:
                side.tree = self.temp / side.name
                side.worktree = True
                done = git(
                    self.repo, "worktree", "add", "--detach", "--quiet", str(side.tree), side.commit
                )
                if done.returncode != 0:
                    lines = done.stderr.strip().splitlines() or ["git failed"]
                    raise WorkerError(f"cannot check out {side.label}: {lines[-1]}")
            else:
                status = git(side.tree, "status", "--porcelain", "--untracked-files=no")
                side.dirty = bool(status.stdout.strip())
        self.out.mkdir(parents=True, exist_ok=True)
        self.phase = "while starting the workers"
        for side in self.sides.values():
            self._start_worker(side)
        for side in self.sides.values():
            self._check_hello(side, side.receive())
            self.say(f"{side.name:9} {side.label}: bench from {side.hello['bench']}")

    def _start_worker(self, side: Side) -> None:
        assert side.tree is not None
        side.log_path = self.out / f"{side.name}-worker.log"
        side.log = side.log_path.open("w", encoding="utf-8")
        env = dict(os.environ)
        for name, value in WORKER_MALLOC.items():
            env.setdefault(name, str(value))
        side.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(side.tree)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=side.log,
            cwd=side.tree,
            text=True,
            encoding="utf-8",
            bufsize=1,
            # Its own session: Ctrl-C in the terminal reaches this process alone, which then
            # ends the workers itself (close).
            start_new_session=True,
        )

    def _check_hello(self, side: Side, hello: dict[str, Any]) -> None:
        """Refuse a side whose worker did not import its own tree, or from another commit."""
        assert side.tree is not None
        if hello["event"] == "error":
            raise side.died(f"its worker cannot import its bench: {hello['message']}")
        side.hello = hello
        tree = side.tree.resolve()
        wanted = {"bench": tree / "bench" / "__init__.py"}
        if (tree / "kernels" / "__init__.py").is_file():
            wanted["kernels"] = tree / "kernels" / "__init__.py"
        for package, path in wanted.items():
            found = hello.get(package)
            if found is None or Path(found) != path.resolve():
                raise side.died(
                    f"its worker imported {package} from {found}, not from its checkout {tree}"
                )
        self._check_foreign(side, hello.get("foreign"))
        if hello.get("commit") != side.commit:
            raise side.died(
                f"its worker imported the checkout of commit {hello.get('commit')}, "
                f"not {side.commit}"
            )

    def _check_foreign(self, side: Side, foreign: list[str] | None) -> None:
        if foreign:
            raise side.died(
                f"its worker imported {foreign[0]}, outside its checkout {side.tree}"
                + (f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else "")
            )

    def prepare(self) -> None:
        """Every case once on each side, untimed: compile, autotune, the oracle check, a probe."""
        from bench.problem import Problem

        # What a Problem of any revision takes: the shape and the step always, the rest only
        # where it is not the default (an older Problem may not know the field at all).
        always = ("batch", "dim", "steps", "lr", "dtype")
        default = Problem()
        self.say(
            f"preparing {len(self.cases)} case(s) on {self.options.device} "
            "(untimed: compile, autotune, oracle check)"
        )
        for number, case in enumerate(self.cases, 1):
            self.phase = f"while preparing case {number} of {len(self.cases)}"
            problem = {
                f: getattr(case.problem, f)
                for f in Problem.__dataclass_fields__
                if f in always or getattr(case.problem, f) != getattr(default, f)
            }
            for name, side in self.sides.items():
                side.send(
                    {
                        "cmd": "prepare",
                        "case": number,
                        "method": case.method,
                        "problem": problem,
                        "device": self.options.device,
                    }
                )
                answer = side.receive()
                self._check_foreign(side, answer.get("foreign"))
                case.status[name] = answer["status"]
                if answer["status"] == "ok":
                    case.prepared[name] = answer
                    shown = f"ok, setup {answer['setup_s']:.2f} s"
                    if not answer["oracle_ok"]:
                        shown += ", WRONG answer (oracle check failed)"
                else:
                    case.reason[name] = answer["reason"]
                    shown = f"{answer['status']}: {answer['reason']}"
                self.say(f"  {name:9} {case.name}: {shown}")

    def sample(self) -> None:
        """Rounds in turn, case by case, until every case is decided or the budget is spent."""
        from bench.stats import MIN_SAMPLES

        opts = self.options
        both = [c for c in self.cases if c.ok("baseline") and c.ok("candidate")]
        # A case only one side can run gets one round there: the gate sees it as missing.
        for case in self.cases:
            for name in SIDES:
                if case.ok(name) and case not in both:
                    self._round(case, name, max(case.round_size(), MIN_SAMPLES))
        pending = list(both)
        self.say(
            f"interleaving rounds of {len(pending)} case(s), about {ROUND_S * 1e3:g} ms a side, "
            f"at least {MIN_ROUNDS} a side per case, budget {opts.max_time:g} s"
        )
        stopping = Stopping(opts.threshold, opts.alpha)
        self.sampling_began = begin = time.monotonic()
        last_said = begin
        while pending:
            for case in list(pending):
                spent = time.monotonic() - begin
                if spent >= opts.max_time and case.rounds >= MIN_ROUNDS:
                    continue
                self.phase = (
                    f"after {spent:.0f} s of rounds, {len(both) - len(pending)} of {len(both)} "
                    "case(s) decided"
                )
                n = case.round_size()
                # Which side goes first alternates, so that neither always follows the other.
                order = SIDES if case.rounds % 2 == 0 else SIDES[::-1]
                if not all(self._round(case, name, n) for name in order):
                    pending.remove(case)  # a side failed while sampling: said in _round
                    continue
                case.rounds += 1
                case.verdict = case.look(stopping)
                if case.verdict is not None:
                    pending.remove(case)
                    n_base, n_cand = (len(case.host_s[s]) for s in SIDES)
                    self.say(
                        f"  [{time.monotonic() - begin:5.1f} s] {len(both) - len(pending)} of "
                        f"{len(both)} decided: {case.name}: {case.verdict} "
                        f"({case.rounds} rounds, {n_base}/{n_cand} samples)"
                    )
                    last_said = time.monotonic()
            now = time.monotonic()
            if now - begin >= opts.max_time and all(c.rounds >= MIN_ROUNDS for c in pending):
                self.budget_spent = bool(pending)
                break
            if pending and now - last_said >= PROGRESS_EVERY_S:
                self.say(
                    f"  [{now - begin:5.1f} s] {len(both) - len(pending)} of {len(both)} decided; "
                    f"sampling {', '.join(c.name for c in pending[:3])}"
                    + (" ..." if len(pending) > 3 else "")
                )
                last_said = now
        spent = time.monotonic() - begin
        if self.budget_spent:
            self.say(
                f"time budget spent after {spent:.1f} s: {len(pending)} of {len(both)} case(s) "
                "undecided"
            )
        else:
            self.say(f"{len(both)} case(s) decided in {spent:.1f} s")
        self.phase = "while saving the results"

    def _round(self, case: CaseRun, name: str, n: int) -> bool:
        """One round of `n` fits on one side; False where the side's case failed."""
        side = self.sides[name]
        side.send({"cmd": "sample", "case": self.cases.index(case) + 1, "n": n})
        answer = side.receive()
        if answer["event"] == "failed":
            case.status[name], case.reason[name] = "failed", answer["reason"]
            case.host_s[name].clear()
            self.say(f"  {name:9} {case.name}: failed while sampling: {answer['reason']}")
            return False
        case.host_s[name].extend(answer["host_s"])
        if answer.get("device_s"):
            case.device_s[name].extend(answer["device_s"])
        return True

    def save(self, complete: bool = True) -> None:
        """Both results files (bench.results' format), written atomically, both or neither."""
        from bench import interrupt
        from bench.results import write_atomically

        interrupt.defer()
        try:
            documents = self._documents(complete)
            for name in SIDES:
                write_atomically(self.paths[name], json.dumps(documents[name], indent=2))
            self.saved = "complete" if complete else "incomplete"
        finally:
            interrupt.resume()

    def save_incomplete(self) -> None:
        """After an interruption in the rounds: what was measured, marked incomplete."""
        if self.sampling_began is not None and not self.saved:
            self.save(complete=False)

    def compare(self) -> Any:
        """The saved files compared as `python -m bench compare` compares them."""
        from bench.compare import compare
        from bench.results import Results

        base, cand = (Results.load(self.paths[name]) for name in SIDES)
        comparison = compare(base, cand, self.options.threshold, self.options.alpha)
        comparison.baseline_label = f"baseline {self.sides['baseline'].label}"
        comparison.candidate_label = f"candidate {self.sides['candidate'].label}"
        return comparison

    def _documents(self, complete: bool) -> dict[str, dict[str, Any]]:
        import pytest_benchmark
        from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

        from bench import environment

        device_name = environment.device_name(self.options.device)
        machine = pytest_benchmark_generate_machine_info()
        env = environment.collect(self.options.device)
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        documents = {}
        for name, side in self.sides.items():
            other = SIDES[1 - SIDES.index(name)]
            entries, skipped, failed, done = [], [], [], 0
            for case in self.cases:
                status = case.status.get(name)
                finished = case.verdict is not None or complete or status != "ok"
                done += bool(status) and finished
                if status == "ok" and case.host_s[name]:
                    entries.append(self._entry(case, name, device_name))
                elif status in ("skipped", "failed"):
                    target = skipped if status == "skipped" else failed
                    target.append(
                        {"method": case.method, "problem": case.problem.name,
                         "reason": case.reason[name]}
                    )  # fmt: skip
            documents[name] = {
                "machine_info": {
                    **machine,
                    "vecreg": {
                        **env,
                        "ab_side": name,
                        "ab_revision": side.revision,
                        "ab_bench_file": side.hello.get("bench"),
                        "ab_kernels_file": side.hello.get("kernels"),
                        # the workers', not this process's
                        "torch_threads": side.hello.get("threads"),
                        "malloc": side.hello.get("malloc"),
                    },
                },
                "commit_info": {
                    "id": side.commit,
                    "time": commit_time(self.repo, side.commit),
                    "dirty": side.dirty,
                    "project": "vecreg-bench",
                    "branch": branch(self.repo, side),
                    "revision": side.revision,
                },
                "benchmarks": entries,
                "datetime": now,
                "version": pytest_benchmark.__version__,
                "vecreg": {
                    "sweep": self.options.sweep,
                    "skipped": skipped,
                    "failed": failed,
                    "complete": complete,
                    "cases_total": len(self.cases),
                    "cases_done": done,
                    "ab": {
                        "side": name,
                        "revision": side.revision,
                        "other": str(self.paths[other]),
                        "threshold": self.options.threshold,
                        "alpha": self.options.alpha,
                        "max_time_s": self.options.max_time,
                        "round_s": ROUND_S,
                        "budget_spent": self.budget_spent,
                    },
                },
            }
        return documents

    def _entry(self, case: CaseRun, name: str, device_name: str) -> dict[str, Any]:
        """One case of one side as pytest-benchmark saves it, our figures in extra_info."""
        import torch
        from pytest_benchmark.stats import Stats

        from bench import stats
        from bench.results import NOISY_IQR_OVER_MEDIAN
        from bench.timing import bytes_per_step

        problem, samples, prepared = case.problem, case.host_s[name], case.prepared[name]
        pb_stats = Stats()
        for sample in samples:
            pb_stats.update(sample)
        q1, median, q3 = stats.quartiles(samples)
        steps, moved = problem.steps, bytes_per_step(problem)
        device_s = case.device_s[name]
        device = torch.device(self.options.device).type
        info = {
            "method": case.method,
            "problem": problem.name,
            "batch": problem.batch,
            "dim": problem.dim,
            "steps": steps,
            "lr": problem.lr,
            "dtype": problem.dtype,
            "seed": problem.seed,
            "device": device,
            "device_name": device_name,
            "setup_s": prepared["setup_s"],
            "time_per_step_s": median / steps,
            "time_per_step_iqr_s": (q3 - q1) / steps,
            "device_time_per_step_s": stats.quartiles(device_s)[1] / steps if device_s else None,
            "elements_steps_per_s": problem.elements * steps / median,
            "bytes_per_step": moved,
            "bandwidth_gbs": moved / (median / steps) / 1e9,
            "copy_bandwidth_gbs": None,
            "copy_fraction": None,
            "speedup_vs_autograd": None,
            "iqr_over_median": (q3 - q1) / median,
            "noisy": (q3 - q1) / median > NOISY_IQR_OVER_MEDIAN,
            "oracle_max_abs_err": prepared["oracle_max_abs_err"],
            "oracle_ok": prepared["oracle_ok"],
            "ab_rounds": case.rounds,
        }
        test = f"test_fit[{case.method}-{problem.name}-{device}]"
        return {
            "group": problem.name,
            "name": test,
            "fullname": f"bench/ab.py::{test}",
            "params": {"method": case.method, "problem": problem.name, "device": device},
            "param": f"{case.method}-{problem.name}-{device}",
            "extra_info": info,
            "options": {"timer": "perf_counter", "max_time": self.options.max_time},
            "stats": {**pb_stats.as_dict(), "iterations": 1, "data": list(samples)},
        }

    def close(self, hurry: bool = False) -> None:
        """End the workers (at once where `hurry`: the run failed or was stopped) and remove the
        worktrees, whatever happened; signals are held back meanwhile."""
        from bench import interrupt

        interrupt.defer()
        try:
            for side in self.sides.values():
                _stop(side, hurry)
            for side in self.sides.values():
                if side.worktree and side.tree is not None:
                    git(self.repo, "worktree", "remove", "--force", str(side.tree))
            if self.temp is not None:
                shutil.rmtree(self.temp, ignore_errors=True)
                git(self.repo, "worktree", "prune")
        finally:
            interrupt.resume()


def _stop(side: Side, hurry: bool) -> None:
    """Ask the worker to exit, or terminate it at once where `hurry`; kill it if it is still
    there a few seconds later."""
    process = side.process
    if process is not None:
        if process.poll() is None:
            if hurry:
                process.terminate()
            else:
                with contextlib.suppress(OSError, ValueError):
                    process.stdin.write('{"cmd": "exit"}\n')
                    process.stdin.flush()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
    if side.log is not None:
        side.log.close()
