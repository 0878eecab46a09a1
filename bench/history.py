"""`python -m bench history`: every run kept per device, change points found across commits.

`compare` judges two runs. A nightly GPU runner asks something else: across the last 50 commits,
did anything get slower, starting where, by how much, and is it still slow?

Layout, under `reports/history/` (committed to git, like the baselines):

- `<device-slug>/<UTC time>-<commit 12>-<run key 16>.json`: one small file per run, holding the
  run's commit, time and device and per case its sample count, median seconds per fit and the 95%
  interval of that median (bench.stats.median_interval). New runs only ever add new files, so CI
  jobs that add runs on different branches never conflict, and git merges them.
- `accepted/<case>--<commit 12>.json`: a change declared intended (`history accept`), with the
  reason; it no longer fails the check and the trend page shows it in its own colour.

What a run file keeps, and why not the raw samples: the question is whether the level moved
between nights, and nights differ by more than the samples of one night show (clocks, the
runner's neighbours, the driver). So each run counts as one observation, its median, and the
interval between two segments of the history is bench.stats.ratio_interval of the per-run medians
after the change over those before it: run-to-run noise is what widens it. Raw samples would give
the within-run spread only, and they cost megabytes a run (a fast case times thousands of fits in
its second) where the summary is a few hundred bytes a case.

The same run is recognized by its run key: a hash of the commit, the time of the run, the device
and every case's raw samples. A copy of the file, or the same file rewritten (the main job adds
the convergence study after saving it), is the same run and is kept once; the key is in the file
name, so a second add finds it without reading the folder.

Ordering: by commit order (`git rev-list --topo-order` of the history's commits) where every
commit of the device's history is in the checkout; else by the commits' times (the measured
times where a run has none). A shallow clone lacks the old commits: fetch the whole history.

Detection, per case: PELT (ruptures, model "l2": changes of the mean) on the log of the per-run
medians (a slowdown multiplies; in logs, noise of timings has one size before and after a step),
each segment at least stats.MIN_SAMPLES runs long so that every change gets a ratio interval. The
penalty is 3 sigma^2 ln n: the modified BIC (Zhang and Siegmund 2007), which R's changepoint
package uses by default, on the scale of the l2 cost; sigma is the noise of the log medians, the
MAD of successive differences over sqrt 2 (the steps are a few of the differences and hardly move
it), no less than the runs' own median intervals show, nor than 0.5%. Simulated with 400
histories of 40 runs whose medians vary by 10% from night to night and no step: at 2 sigma^2 ln n
(BIC) 13% had a change point, at 3 3.3%, at 4 0.8%, none a slowdown beyond 10%. A 1.3x step was
found within a run of its place, as a slowdown, in 88-89% at each: at that noise, the data allow
no more (with both levels known, the best estimate of the place is within a run 95% of the
time). So 3: few false change points, no power lost.

A change is a slowdown beyond the threshold when bench.compare.verdict_of the ratio interval
(after / before) is `regression`. The check fails (exit 1) on a slowdown that is neither accepted
nor undone: the newest segment must still be proven slower than the segment before the change
(the same verdict), so that a slowdown fixed a week later stops failing the nightly job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import hashlib
import itertools
import json
import math
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.baseline import device_slug
from bench.results import Results, ResultsError, case_name, write_atomically

HISTORY_NAME = "history"  # the folder under a reports folder
HISTORY_DIR = Path("reports") / HISTORY_NAME
# What pytest-benchmark writes as commit_info.id outside a checkout, or when git failed.
NO_COMMIT = ("unversioned", "unknown")
ACCEPTED = "accepted"
FORMAT = "vecreg-bench history run"
ACCEPT_FORMAT = "vecreg-bench accepted change"
VERSION = 1

MIN_SEGMENT = stats.MIN_SAMPLES  # runs on each side of a change: enough for a ratio interval
PENALTY_FACTOR = 3.0  # x sigma^2 ln n: the modified BIC (see the module's docstring)
SIGMA_FLOOR = 0.005  # noise of the log medians is never taken as less than 0.5%
# Change points move by a run or two as nights are added; an acceptance of a commit covers a change
# found this many runs either side of it.
ACCEPT_WINDOW = 2
DEFAULT_THRESHOLD = 0.10


class HistoryError(ResultsError):
    """Bad input for the history (a refused run, an unusable history file, an unknown device,
    case or revision): one line, exit code 2."""


class RunRefused(HistoryError):
    """A results file that is not recorded, and why (incomplete, dirty tree, oracle failure)."""


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSummary:
    """One case of one run: sample count, median seconds per fit and its 95% interval."""

    method: str
    problem: str
    dtype: str
    device: str
    steps: int
    n: int
    median_s: float
    low_s: float
    high_s: float

    @property
    def name(self) -> str:
        return case_name((self.method, self.problem, self.dtype, self.device))


@dataclass(frozen=True)
class Run:
    """One history file: a run, as recorded."""

    path: Path
    key: str
    commit: str
    commit_time: dt.datetime | None
    branch: str | None
    measured_at: dt.datetime
    device_name: str
    sweep: str | None
    cases: dict[str, CaseSummary]

    @property
    def short(self) -> str:
        return self.commit[:7]


@dataclass(frozen=True)
class Acceptance:
    """A change declared intended: case, the commit it starts at, why; for one device or all."""

    path: Path
    case: str
    commit: str
    reason: str
    device: str | None
    accepted_at: str

    def covers(self, change: Change) -> bool:
        if self.case != change.case or self.device not in (None, change.slug):
            return False
        return self.commit in change.nearby_commits


@dataclass
class Change:
    """A change point of one case: the level before and after it, and the ratio's interval."""

    slug: str
    case: str
    index: int  # the first run after the change, in the case's ordered runs
    runs: int  # the case's ordered runs in all
    commit: str  # the first commit after the change
    before_commit: str  # the last commit before it
    before_s: float  # median of the per-run medians, seconds per step
    after_s: float
    ratio: stats.Interval
    verdict: str
    nearby_commits: frozenset[str]
    # For a slowdown: the commit of the first run of a later segment no longer proven slower than
    # the level before the change (None while it is still slow).
    undone_at: str | None = None
    accepted: Acceptance | None = None

    @property
    def slowdown(self) -> bool:
        return self.verdict == "regression"

    @property
    def failing(self) -> bool:
        """An unacknowledged slowdown beyond the threshold that is still slow."""
        return self.slowdown and self.accepted is None and self.undone_at is None

    @property
    def status(self) -> str:
        if not self.slowdown:
            return "improvement" if self.verdict == "improvement" else "change"
        if self.accepted is not None:
            return "accepted"
        return "undone" if self.undone_at else "SLOWDOWN"


@dataclass
class CaseHistory:
    """The ordered runs of one case of one device, with the changes found in them."""

    name: str
    method: str
    problem: str
    dtype: str
    device: str
    steps: int
    runs: list[Run]
    median_s: np.ndarray  # per run, seconds per fit
    low_s: np.ndarray
    high_s: np.ndarray
    noise: float = math.nan  # sigma of the log medians the penalty was set from
    changes: list[Change] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class DeviceHistory:
    slug: str
    device_name: str
    folder: Path
    runs: list[Run]
    ordering: str
    cases: list[CaseHistory]

    @property
    def changes(self) -> list[Change]:
        return [c for case in self.cases for c in case.changes]

    @property
    def commits(self) -> list[str]:
        return list(dict.fromkeys(run.commit for run in self.runs))


# --- recording a run ----------------------------------------------------------------------------


def run_key(results: Results) -> str:
    """The identity of a run: its commit, time, device and raw samples, hashed. The same run read
    from a copy, or from its file rewritten, has the same key."""
    identity = {
        "commit": results.commit.id if results.commit else None,
        "measured_at": results.measured_at.isoformat() if results.measured_at else None,
        "device": results.device_name,
        "cases": sorted([case.name, case.samples.tolist()] for case in results.cases),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def refusal(results: Results, allow_dirty: bool = False) -> str | None:
    """Why a run is not recorded, or None. The message names the file."""
    where = results.path
    if not results.complete:
        return (
            f"{where}: is not a complete run ({results.progress()}: interrupted or never marked "
            "complete); the history keeps complete runs only"
        )
    if results.commit is None or results.commit.id in NO_COMMIT:
        return f"{where}: has no commit (commit_info.id); the history is ordered by commit"
    if results.commit.dirty and not allow_dirty:
        return (
            f"{where}: was measured on a dirty tree (uncommitted changes at commit "
            f"{results.commit.id[:12]}); commit them, or record it anyway with --allow-dirty"
        )
    if results.measured_at is None:
        return f"{where}: has no time of measurement (datetime); the history needs it"
    wrong = [case.name for case in results.cases if not case.oracle_ok]
    if wrong:
        more = f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
        return (
            f"{where}: case {wrong[0]!r}{more} failed the oracle check; a run with a wrong answer "
            "is not a point of the history"
        )
    if not results.cases:
        return f"{where}: holds no timed case"
    return None


def summarize(results: Results, key: str) -> dict[str, Any]:
    """The history record of a checked run (see the module's docstring)."""
    assert results.commit is not None and results.measured_at is not None
    cases = []
    for case in sorted(results.cases, key=lambda c: c.name):
        interval = stats.median_interval(case.samples)
        cases.append(
            {
                "method": case.method,
                "problem": case.problem,
                "dtype": case.info["dtype"],
                "device": case.info["device"],
                "steps": case.info["steps"],
                "n": int(case.samples.size),
                "median_s": interval.estimate,
                "low_s": interval.low,
                "high_s": interval.high,
            }
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "run_key": key,
        "commit": {
            "id": results.commit.id,
            "time": _iso(results.commit.time),
            "branch": results.commit.branch,
        },
        "measured_at": results.measured_at.astimezone(dt.timezone.utc).isoformat(),
        "device_name": results.device_name,
        "sweep": results.sweep,
        "source": results.path.name,
        "level": stats.LEVEL,
        "cases": cases,
    }


def _iso(text: str | None) -> str | None:
    """A commit time as ISO 8601, or None where it is missing or not a time."""
    try:
        when = _time(text)
    except ValueError:
        return None
    return when.isoformat() if when else None


def run_file_name(results: Results, key: str) -> str:
    """'20261125T000000Z-<commit 12>-<key 16>.json': sorted by time, named by commit and run."""
    assert results.commit is not None and results.measured_at is not None
    when = results.measured_at.astimezone(dt.timezone.utc)
    commit = re.sub(r"[^0-9A-Za-z]+", "-", results.commit.id)[:12]
    return f"{when:%Y%m%dT%H%M%SZ}-{commit}-{key[:16]}.json"


def prepare(results: Path, history: Path, allow_dirty: bool) -> tuple[Path, dict[str, Any]]:
    """Load and check a results file: where its record goes and the record. RunRefused (with
    the reason) or ResultsError for an unusable file."""
    loaded = Results.load(results)
    reason = refusal(loaded, allow_dirty)
    if reason is not None:
        raise RunRefused(reason)
    key = run_key(loaded)
    target = Path(history) / device_slug(loaded.device_name) / run_file_name(loaded, key)
    return target, summarize(loaded, key)


def add_run(results: Path, history: Path = HISTORY_DIR, allow_dirty: bool = False) -> Path | None:
    """Record a saved run in the history: its new file's path, or None where the same run is
    there already. RunRefused says why a run is not recorded; ResultsError, an unusable file."""
    target, record = prepare(results, history, allow_dirty)
    return _write_record(target, record)


def _write_record(target: Path, record: dict[str, Any]) -> Path | None:
    if _recorded(target, record["run_key"]):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(record, indent=1) + "\n")
    return target


def _recorded(target: Path, key: str) -> bool:
    """The run key is in the file name: the same run always gets the same name."""
    if not target.exists():
        return False
    try:
        return json.loads(target.read_text(encoding="utf-8")).get("run_key") == key
    except (OSError, ValueError, AttributeError):
        return False  # an unreadable file of that name is replaced by the good record


def record_run(
    results: Path,
    history: Path = HISTORY_DIR,
    allow_dirty: bool = False,
    write: Callable[[str], Any] = print,
) -> Path | None:
    """For the main job and the pytest plugin, after they saved a run: record it, saying one line
    either way; a refused or unusable run is said, never raised (the results are safe on disk)."""
    try:
        path = add_run(results, history, allow_dirty)
    except (ResultsError, OSError) as exc:
        write(f"history: not recorded: {exc}")
        return None
    if path is None:
        write(f"history: already recorded ({results})")
    else:
        write(f"history: {path}")
    return path


# --- reading the history ------------------------------------------------------------------------


def device_folders(history: Path) -> dict[str, Path]:
    """slug -> folder, for every device with a history."""
    if not history.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(history.iterdir())
        if p.is_dir() and p.name != ACCEPTED and not p.name.startswith(".")
    }


def load_runs(folder: Path) -> list[Run]:
    """Every run file of one device's folder; HistoryError names a file that is not one."""
    return [load_run(path) for path in sorted(folder.glob("*.json")) if path.name[0] != "."]


def load_run(path: Path) -> Run:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise HistoryError(f"{path}: is not a readable history file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HistoryError(
            f'{path}: is not a vecreg-bench history file (no "format": "{FORMAT}"); '
            "the history folder holds only what `python -m bench history add` writes"
        )
    if data.get("version") != VERSION:
        raise HistoryError(
            f"{path}: history format version {data.get('version')!r} is not {VERSION}"
        )
    try:
        commit = data["commit"]
        cases = {}
        for item in data["cases"]:
            case = CaseSummary(
                method=_str(item["method"]),
                problem=_str(item["problem"]),
                dtype=_str(item["dtype"]),
                device=_str(item["device"]),
                steps=int(item["steps"]),
                n=int(item["n"]),
                median_s=_positive(item["median_s"]),
                low_s=_positive(item["low_s"]),
                high_s=_positive(item["high_s"]),
            )
            cases[case.name] = case
        return Run(
            path=path,
            key=_str(data["run_key"]),
            commit=_str(commit["id"]),
            commit_time=_time(commit.get("time")),
            branch=commit.get("branch"),
            measured_at=_time(data["measured_at"]) or _bad("measured_at"),
            device_name=_str(data["device_name"]),
            sweep=data.get("sweep"),
            cases=cases,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HistoryError(f"{path}: is not a usable history file ({exc!s})") from None


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


def _positive(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value < math.inf:
        raise ValueError(f"{value!r} is not a finite number > 0")
    return float(value)


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _bad(what: str) -> Any:
    raise ValueError(f"{what} is missing")


def load_acceptances(history: Path) -> list[Acceptance]:
    folder = Path(history) / ACCEPTED
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != ACCEPT_FORMAT:
                raise ValueError(f'no "format": "{ACCEPT_FORMAT}"')
            found.append(
                Acceptance(
                    path=path,
                    case=_str(data["case"]),
                    commit=_str(data["commit"]),
                    reason=_str(data["reason"]),
                    device=data.get("device"),
                    accepted_at=str(data.get("accepted_at", "")),
                )
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HistoryError(f"{path}: is not a usable acceptance file ({exc})") from None
    return found


# --- ordering -----------------------------------------------------------------------------------


def _git(repo: Path, *args: str, stdin: str | None = None) -> str | None:
    """git's output, or None where git is missing, `repo` is no checkout or the command fails."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def commit_positions(commits: Iterable[str], repo: Path) -> dict[str, int] | None:
    """Each commit's place in git's topological order (parents first), or None unless every one
    of them is a commit of the checkout at `repo`."""
    commits = list(dict.fromkeys(commits))
    if not commits:
        return {}
    found = _git(
        repo, "cat-file", "--batch-check", stdin="".join(f"{c}^{{commit}}\n" for c in commits)
    )
    if found is None or any(line.endswith(" missing") for line in found.splitlines()):
        return None
    full = [line.split()[0] for line in found.splitlines()]
    order = _git(repo, "rev-list", "--topo-order", "--reverse", "--stdin", stdin="\n".join(full))
    place = {sha: i for i, sha in enumerate((order or "").split())}
    if not all(sha in place for sha in full):
        return None
    return {commit: place[sha] for commit, sha in zip(commits, full, strict=True)}


def order_runs(runs: list[Run], repo: Path) -> tuple[list[Run], str]:
    """The runs in commit order (git) where every commit is in the checkout at `repo`, else in
    time order; and how they were ordered, in words."""
    positions = commit_positions((r.commit for r in runs), repo)
    if positions is not None:
        ordered = sorted(runs, key=lambda r: (positions[r.commit], r.measured_at, r.key))
        return ordered, "by commit order (git)"
    with_time = all(r.commit_time is not None for r in runs)
    if with_time:
        ordered = sorted(runs, key=lambda r: (r.commit_time, r.measured_at, r.key))
        how = "by commit time"
    else:
        ordered = sorted(runs, key=lambda r: (r.measured_at, r.key))
        how = "by time of measurement"
    return ordered, f"{how} (the history's commits are not all in the git checkout at {repo})"


def runs_since(runs: list[Run], rev: str, repo: Path, by_git: bool) -> list[Run]:
    """The ordered runs of commit `rev` and after it: its descendants where git ordered them,
    else the runs from its first one on. HistoryError for a revision the history does not know."""
    commits = {r.commit for r in runs}
    sha = None
    if by_git:
        resolved = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        sha = resolved.strip() if resolved else None
    if sha is None:
        sha = _unique_prefix(rev, commits, "--since")
    if by_git:
        listed = _git(
            repo, "rev-list", "--ancestry-path", "--stdin", stdin=f"^{sha}\n" + "\n".join(commits)
        )
        keep = set((listed or "").split()) | {sha}
        return [r for r in runs if r.commit in keep]
    first = next(i for i, r in enumerate(runs) if r.commit == sha)
    return runs[first:]


def _unique_prefix(rev: str, commits: Iterable[str], option: str) -> str:
    matches = sorted({c for c in commits if c.lower().startswith(rev.lower())})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise HistoryError(f"{option} {rev}: no run of the history has that commit")
    raise HistoryError(f"{option} {rev}: is ambiguous ({', '.join(m[:12] for m in matches[:4])})")


# --- detection ----------------------------------------------------------------------------------


def noise_level(log_medians: np.ndarray, log_halfwidths: np.ndarray) -> float:
    """sigma of the log medians: the MAD of successive differences / sqrt 2 (steps are a few of
    the differences, so they hardly move it), no less than the runs' own intervals say (their
    median half-width / 1.96), nor than SIGMA_FLOOR."""
    diffs = np.diff(log_medians)
    between = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
    within = float(np.median(log_halfwidths)) / _z()
    return max(between, within, SIGMA_FLOOR)


def _z() -> float:
    from scipy.stats import norm

    return float(norm.ppf((1 + stats.LEVEL) / 2))


def change_points(log_medians: np.ndarray, sigma: float) -> list[int]:
    """Where the level of the series changes: the index of the first run after each change.

    PELT (exact for a penalized cost) with ruptures' "l2" cost (a change of the mean), segments of
    at least MIN_SEGMENT runs, penalty PENALTY_FACTOR sigma^2 ln n."""
    n = log_medians.size
    if n < 2 * MIN_SEGMENT:
        return []
    import ruptures

    penalty = PENALTY_FACTOR * sigma**2 * math.log(n)
    algo = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT, jump=1).fit(log_medians.reshape(-1, 1))
    return [int(b) for b in algo.predict(pen=penalty)[:-1]]


def analyse_case(case: CaseHistory, slug: str, threshold: float) -> None:
    """Find the case's change points and judge each one (fills case.changes and .segments)."""
    from bench.compare import verdict_of

    logs = np.log(case.median_s)
    halfwidths = (np.log(case.high_s) - np.log(case.low_s)) / 2
    case.noise = noise_level(logs, halfwidths) if logs.size > 1 else math.nan
    bounds = change_points(logs, case.noise) if logs.size > 1 else []
    edges = [0, *bounds, logs.size]
    case.segments = list(itertools.pairwise(edges))
    per_step = case.median_s / case.steps
    for k, b in enumerate(bounds):
        (lo, _), (_, hi) = case.segments[k], case.segments[k + 1]
        before, after = case.median_s[lo:b], case.median_s[b:hi]
        ratio = stats.ratio_interval(after, before)
        change = Change(
            slug=slug,
            case=case.name,
            index=b,
            runs=logs.size,
            commit=case.runs[b].commit,
            before_commit=case.runs[b - 1].commit,
            before_s=float(np.median(per_step[lo:b])),
            after_s=float(np.median(per_step[b:hi])),
            ratio=ratio,
            verdict=verdict_of(ratio.low, ratio.high, threshold),
            nearby_commits=frozenset(
                r.commit for r in case.runs[max(0, b - ACCEPT_WINDOW) : b + ACCEPT_WINDOW + 1]
            ),
        )
        if change.slowdown:
            # Still slow? Each later segment against the level before the change: the first one
            # not proven slower beyond the threshold undoes it, unless a later one is slow again.
            for start, end in case.segments[k + 2 :]:
                later = stats.ratio_interval(case.median_s[start:end], before)
                slow = verdict_of(later.low, later.high, threshold) == "regression"
                if not slow and change.undone_at is None:
                    change.undone_at = case.runs[start].commit
                elif slow:
                    change.undone_at = None
        case.changes.append(change)


def analyse(
    history: Path = HISTORY_DIR,
    device: str | None = None,
    since: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    repo: Path = Path("."),
) -> list[DeviceHistory]:
    """Every device's history (or `device`'s), ordered, with its change points judged and the
    acceptances applied. HistoryError for an empty history, an unknown device or revision, or a
    file that is not a history file."""
    history = Path(history)
    folders = device_folders(history)
    if not folders:
        raise HistoryError(
            f"{history}: no history here (record runs with: python -m bench history add "
            "RESULTS.json)"
        )
    if device is not None:
        if device not in folders:
            raise HistoryError(
                f"--device {device}: no history for that device in {history} "
                f"(known: {', '.join(folders)})"
            )
        folders = {device: folders[device]}
    acceptances = load_acceptances(history)
    found = []
    for slug, folder in folders.items():
        runs = load_runs(folder)
        if not runs:
            continue
        ordered, how = order_runs(runs, repo)
        if since is not None:
            ordered = runs_since(ordered, since, repo, how.startswith("by commit order"))
            if not ordered:
                raise HistoryError(f"--since {since}: no run of {slug} is of that commit or after")
            how += f", since {since}"
        dev = DeviceHistory(slug, ordered[-1].device_name, folder, ordered, how, [])
        found.append(dev)
        for name in sorted({n for r in ordered for n in r.cases}):
            runs_of = [r for r in ordered if name in r.cases]
            first = runs_of[0].cases[name]
            summaries = [r.cases[name] for r in runs_of]
            case = CaseHistory(
                name=name,
                method=first.method,
                problem=first.problem,
                dtype=first.dtype,
                device=first.device,
                steps=first.steps,
                runs=runs_of,
                median_s=np.array([s.median_s for s in summaries]),
                low_s=np.array([s.low_s for s in summaries]),
                high_s=np.array([s.high_s for s in summaries]),
            )
            analyse_case(case, slug, threshold)
            for change in case.changes:
                change.accepted = next((a for a in acceptances if a.covers(change)), None)
            dev.cases.append(case)
    if not found:
        raise HistoryError(f"{history}: no runs recorded for {device or 'any device'}")
    return found


# --- accepting a change -------------------------------------------------------------------------


def accept(
    case: str,
    rev: str,
    reason: str,
    history: Path = HISTORY_DIR,
    device: str | None = None,
    repo: Path = Path("."),
) -> Path:
    """Record that the change of `case` starting at commit `rev` is intended; its file's path.
    HistoryError for a case or revision the history does not know."""
    history = Path(history)
    folders = device_folders(history)
    if device is not None and device not in folders:
        raise HistoryError(
            f"--device {device}: no history for that device in {history} "
            f"(known: {', '.join(folders) or 'none'})"
        )
    runs = [r for slug, f in folders.items() if device in (None, slug) for r in load_runs(f)]
    cases = {name for r in runs for name in r.cases}
    if case not in cases:
        close = difflib.get_close_matches(case, sorted(cases), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise HistoryError(f"{case!r}: no such case in the history in {history}{hint}")
    commits = {r.commit for r in runs if case in r.cases}
    resolved = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    sha = resolved.strip() if resolved and resolved.strip() in commits else None
    sha = sha or _unique_prefix(rev, commits, f"{case!r} at")
    record = {
        "format": ACCEPT_FORMAT,
        "case": case,
        "commit": sha,
        "reason": reason,
        "device": device,
        "accepted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", case.lower()).strip("-")
    target = history / ACCEPTED / f"{slug}--{sha[:12]}{'--' + device if device else ''}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, json.dumps(record, indent=1) + "\n")
    return target


# --- text ---------------------------------------------------------------------------------------


def change_line(change: Change, threshold: float) -> str:
    from bench.compare import format_seconds

    r = change.ratio
    if change.slowdown:
        judged = f"a slowdown beyond {threshold:.0%}"
    elif change.verdict == "improvement":
        judged = f"a speedup beyond {threshold:.0%}"
    else:
        judged = f"{change.verdict} against {threshold:.0%}"
    line = (
        f"{change.status:<11} {change.case} at {change.commit[:12]} (run {change.index + 1} of "
        f"{change.runs}): {format_seconds(change.before_s)} -> {format_seconds(change.after_s)} "
        f"per step, ratio {r.estimate:.3g} [{r.low:.3g}, {r.high:.3g}]: {judged}"
    )
    if change.accepted is not None:
        line += f"; accepted: {change.accepted.reason}"
    elif change.undone_at is not None:
        line += f"; undone at {change.undone_at[:12]}"
    if change.commit == change.before_commit:
        line += "; both sides ran this commit: the machine changed, not the code"
    return line


def check_text(histories: list[DeviceHistory], threshold: float) -> tuple[list[str], int]:
    """The lines `history check` prints, and its exit code."""
    lines, failing = [], []
    for dev in histories:
        commits = dev.commits
        span = f"{commits[0][:7]}..{commits[-1][:7]}" if commits else "-"
        lines.append(
            f"{dev.device_name} ({dev.folder}): {len(dev.runs)} runs of {len(commits)} commits "
            f"({span}), ordered {dev.ordering}; {len(dev.cases)} case(s)"
        )
        short = [c.name for c in dev.cases if len(c.runs) < 2 * MIN_SEGMENT]
        if short:
            lines.append(
                f"  {len(short)} case(s) with fewer than {2 * MIN_SEGMENT} runs: no change can be "
                "told yet"
            )
        for change in dev.changes:
            lines.append("  " + change_line(change, threshold))
            if change.failing:
                failing.append(f"{change.case} at {change.commit[:12]} ({dev.slug})")
        if not dev.changes:
            lines.append("  no change point")
    if failing:
        lines.append(
            f"{len(failing)} unacknowledged slowdown(s) beyond {threshold:.0%}, still slow: "
            + "; ".join(failing)
        )
        lines.append(
            "if intended: python -m bench history accept CASE COMMIT --reason TEXT, and commit "
            "the file it writes"
        )
        return lines, 1
    lines.append(f"no unacknowledged slowdown beyond {threshold:.0%}")
    return lines, 0


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Continuous benchmarking: every complete run kept per device in reports/history/, change "
        "points found per case across commits, a trend page."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="record complete runs in the history of their device",
        description="Record each results file under HISTORY/<device-slug>/, one small file per "
        "run (commit, time, device; per case the sample count, the median and its 95%% interval). "
        "Incomplete runs, runs from a dirty tree and runs with an oracle failure are refused "
        "(exit 2, nothing recorded); the same run added twice is kept once.",
    )
    add.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    add.add_argument(
        "--allow-dirty", action="store_true", help="record runs measured on a dirty tree too"
    )
    check = actions.add_parser(
        "check",
        help="find change points per case; exit 1 on an unacknowledged slowdown",
        description="Order each device's runs by commit (git, where the commits are in this "
        "checkout; else by time), find change points per case (ruptures' PELT on the log of the "
        "per-run medians) and print each: the first commit after it, the median time per step "
        "before and after, the ratio with its 95%% interval. Exit 1 if a slowdown beyond the "
        "threshold is neither accepted nor undone since, 0 otherwise, 2 for bad input.",
    )
    report = actions.add_parser(
        "report",
        help="the trend page: DIR/trend/index.html",
        description="One self-contained HTML page: per problem, one small plot per method of the "
        "median time per step against commit, with its interval and the change points; the "
        "table of changes. Published atomically as DIR/trend/.",
    )
    report.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="reports folder (default: reports)"
    )
    for sub in (check, report):
        sub.add_argument("--device", default=None, metavar="SLUG", help="only this device")
        sub.add_argument(
            "--since", default=None, metavar="REV", help="only runs of REV and the commits after it"
        )
        sub.add_argument(
            "--threshold",
            default="10%",
            help="smallest slowdown that counts, as 10%% or 0.1 (default: 10%%)",
        )
    accepted = actions.add_parser(
        "accept",
        help="record that a change of a case is intended",
        description="Record that the change of CASE starting at commit REV is intended: a file in "
        "HISTORY/accepted/ (commit it). The check no longer fails on it; the page shows it.",
    )
    accepted.add_argument("case", metavar="CASE", help="the case as check prints it")
    accepted.add_argument("rev", metavar="REV", help="the first commit after the change")
    accepted.add_argument("--reason", required=True, help="why the change is intended")
    accepted.add_argument(
        "--device", default=None, metavar="SLUG", help="only for this device (default: all)"
    )
    for sub in actions.choices.values():
        sub.add_argument(
            "--history",
            type=Path,
            default=HISTORY_DIR,
            metavar="DIR",
            help=f"the history folder (default: {HISTORY_DIR})",
        )
        if sub is not add:
            sub.add_argument(
                "--repo",
                type=Path,
                default=Path("."),
                metavar="DIR",
                help="the git checkout that orders the commits (default: .)",
            )


def run(args: argparse.Namespace) -> int:
    return {"add": _run_add, "check": _run_check, "report": _run_report, "accept": _run_accept}[
        args.action
    ](args)


def _run_add(args: argparse.Namespace) -> int:
    # Every file is checked before any is recorded: one bad file records nothing.
    planned = [prepare(path, args.history, args.allow_dirty) for path in args.results]
    for path, (target, record) in zip(args.results, planned, strict=True):
        written = _write_record(target, record)
        if written is None:
            print(f"already in the history: {path} is {target}")
        else:
            print(f"recorded {path}: {written}")
    return 0


def _threshold(text: str) -> float:
    from bench.cli import UsageError
    from bench.compare import parse_threshold

    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run_check(args: argparse.Namespace) -> int:
    threshold = _threshold(args.threshold)
    histories = analyse(args.history, args.device, args.since, threshold, args.repo)
    lines, code = check_text(histories, threshold)
    print("\n".join(lines))
    return code


def _run_report(args: argparse.Namespace) -> int:
    from bench.paths import check_folder
    from bench.report.trend import write_trend

    threshold = _threshold(args.threshold)
    out = check_folder(Path("reports") if args.out is None else args.out, "--out")
    histories = analyse(args.history, args.device, args.since, threshold, args.repo)
    page = write_trend(histories, out, threshold, load_acceptances(args.history))
    print(f"trend page: {page / 'index.html'}")
    return 0


def _run_accept(args: argparse.Namespace) -> int:
    path = accept(args.case, args.rev, args.reason, args.history, args.device, args.repo)
    print(f"accepted {args.case} at {args.rev}: {path}")
    print(f"commit it: git add {path}")
    return 0
