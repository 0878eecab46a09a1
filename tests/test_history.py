"""`python -m bench history`: runs recorded per device, change points across commits, trend page.

Every history here is written through the public command from results files made with
tests/results_factory.py: a run's samples are seconds per fit, log-normal around the night's level
with a spread of NOISE (10%), the night's level itself off by DRIFT (3%) from the commit's (the
run-to-run drift a single run cannot see), SAMPLES samples a run. Commits are made-up ids, not in
any checkout, so runs are ordered by their commits' times, except where a test makes a git repo.
"""

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import results_factory as rf

from bench import cli
from bench.history import add_run, analyse, record_run
from bench.problem import Problem

PROBLEM = Problem(batch=64, dim=1024, steps=100, lr=0.1)
OTHER = Problem(batch=4096, dim=1024, steps=100, lr=0.1)
BASE_S = {"analytic": 2.0e-3, "autograd": 5.0e-3}  # seconds per fit at level 1
NOISE, DRIFT, SAMPLES = 0.10, 0.03, 10
T0 = dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.timezone.utc)
SEEDS = 40
CASE = f"analytic {PROBLEM.name} cpu"


def commit_id(tag: str, i: int) -> str:
    return hashlib.sha1(f"{tag}-{i}".encode()).hexdigest()


def results_file(
    path: Path,
    i: int,
    commit: str,
    levels: dict[str, float],
    rng: np.random.Generator,
    problems: tuple[Problem, ...] = (PROBLEM,),
) -> Path:
    """The run of night i, at `commit`: one case per method of `levels` (method -> level) and
    problem, its samples rescaled from BASE_S."""
    night = float(np.exp(rng.normal(0, DRIFT)))
    entries = []
    for problem in problems:
        for method, level in levels.items():
            fits = BASE_S[method] * level * night * np.exp(rng.normal(0, NOISE, SAMPLES))
            entries.append(rf.entry(method, problem, fits.tolist()))
    data = rf.results(entries)
    when = T0 + dt.timedelta(days=i)
    data["commit_info"] = {
        "id": commit,
        "time": when.isoformat(),
        "dirty": False,
        "branch": "main",
        "project": "vecreg-bench",
    }
    data["datetime"] = (when + dt.timedelta(hours=1)).isoformat()
    return rf.write(path, data)


def make_history(
    folder: Path,
    levels: list[dict[str, float]],
    seed: int,
    commits: list[str] | None = None,
    problems: tuple[Problem, ...] = (PROBLEM,),
) -> tuple[Path, list[str]]:
    """One run per commit, night by night, recorded with `history add`: the history folder and
    the commits."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    commits = commits or [commit_id(f"{folder.name}-{seed}", i) for i in range(len(levels))]
    files = [
        str(results_file(folder / f"run-{i:02d}.json", i, c, lv, rng, problems))
        for i, (c, lv) in enumerate(zip(commits, levels, strict=True))
    ]
    history = folder / "history"
    assert cli.main(["history", "add", *files, "--history", str(history)]) == 0
    return history, commits


def steps(*levels: tuple[int, float], n: int = 40, method: str = "analytic") -> list[dict]:
    """Levels per commit (1-based): 1.0, then each (commit, level) from that commit on."""
    out, level = [], 1.0
    starts = dict(levels)
    for commit in range(1, n + 1):
        level = starts.get(commit, level)
        out.append({method: level})
    return out


def check(history: Path, *extra: str) -> int:
    return cli.main(["history", "check", "--history", str(history), "--repo", "/", *extra])


# --- detection and false alarms -------------------------------------------------------------------


def test_a_slowdown_starting_at_commit_25_is_found_there(tmp_path, capsys):
    found = []
    for seed in range(SEEDS):
        history, commits = make_history(tmp_path / f"s{seed}", steps((25, 1.3)), seed)
        code = check(history)
        out = capsys.readouterr().out
        changes = analyse(history, repo=Path("/"))[0].changes
        at = [c for c in changes if c.failing and abs(c.index - 24) <= 1]
        found.append(code == 1 and len(at) == 1 and f"SLOWDOWN    {CASE} at" in out)
        if seed == 0:
            assert at[0].commit in commits[23:26], out
            assert "ordered by commit time" in out
    rate = sum(found) / SEEDS
    print(f"\n1.3x slowdown at commit 25 of 40 found at 25 +-1 and failing: {rate:.1%} of seeds")
    assert rate >= 0.95


def test_no_step_no_slowdown(tmp_path, capsys):
    codes, changes = [], 0
    for seed in range(SEEDS):
        history, _ = make_history(tmp_path / f"s{seed}", steps(), 1000 + seed)
        codes.append(check(history))
        changes += "no change point" not in capsys.readouterr().out
    rate = codes.count(0) / SEEDS
    print(
        f"\nno step: no slowdown reported in {rate:.1%} of seeds; a change point of any kind "
        f"in {changes / SEEDS:.1%}"
    )
    assert set(codes) <= {0, 1} and rate >= 0.95


def test_two_steps_are_both_found_and_the_undone_one_does_not_fail(tmp_path, capsys):
    both = []
    for seed in range(10):
        history, _ = make_history(tmp_path / f"s{seed}", steps((15, 1.3), (30, 1.0)), seed)
        code = check(history)
        out = capsys.readouterr().out
        changes = analyse(history, repo=Path("/"))[0].changes
        slow = [c for c in changes if c.slowdown and abs(c.index - 14) <= 1]
        fast = [c for c in changes if c.verdict == "improvement" and abs(c.index - 29) <= 1]
        both.append(len(changes) == 2 and len(slow) == len(fast) == 1)
        if both[-1]:
            assert code == 0 and slow[0].status == "undone", out
            assert f"undone at {fast[0].commit[:12]}" in out
    assert sum(both) >= 9, both


def test_a_slowdown_half_undone_still_fails(tmp_path, capsys):
    history, _ = make_history(tmp_path / "h", steps((15, 1.5), (28, 1.3)), seed=3)
    assert check(history) == 1
    assert "still slow" in capsys.readouterr().out


# --- accepting a change -------------------------------------------------------------------------


def test_an_accepted_step_no_longer_fails(tmp_path, capsys):
    history, commits = make_history(tmp_path / "h", steps((25, 1.3)), seed=0)
    assert check(history) == 1
    capsys.readouterr()
    # A neighbour of the commit found: change points move by a run as nights are added.
    argv = ["history", "accept", CASE, commits[25][:10], "--reason", "bounds checks, on purpose"]
    assert cli.main([*argv, "--history", str(history), "--repo", "/"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"accepted {CASE} at {commits[25][:10]}: ")
    record = json.loads(next((history / "accepted").glob("*.json")).read_text())
    assert record["commit"] == commits[25] and record["reason"] == "bounds checks, on purpose"
    assert check(history) == 0
    out = capsys.readouterr().out
    assert "accepted " in out and "accepted: bounds checks, on purpose" in out
    assert out.strip().endswith("no unacknowledged slowdown beyond 10%")
    # A threshold above the step: no slowdown at all.
    assert check(history, "--threshold", "40%") == 0


@pytest.mark.parametrize(
    ("case", "rev", "words"),
    [
        ("analytic nope cpu", "COMMIT", "no such case in the history"),
        (f"analytc {PROBLEM.name} cpu", "COMMIT", "did you mean"),
        (CASE, "deadbeef", "no run of the history has that commit"),
    ],
)
def test_accept_refuses_what_the_history_does_not_know(tmp_path, capsys, case, rev, words):
    history, commits = make_history(tmp_path / "h", steps(n=12), seed=0)
    rev = commits[5] if rev == "COMMIT" else rev
    argv = ["history", "accept", case, rev, "--reason", "x", "--history", str(history)]
    assert cli.main([*argv, "--repo", "/"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert not (history / "accepted").exists()


# --- recording runs -----------------------------------------------------------------------------


def run_data(commit: str = "a" * 40, seed: int = 0, **vecreg) -> dict:
    rng = np.random.default_rng(seed)
    fits = BASE_S["analytic"] * np.exp(rng.normal(0, NOISE, SAMPLES))
    data = rf.results([rf.entry("analytic", PROBLEM, fits.tolist())])
    data["commit_info"] = {"id": commit, "dirty": False, "project": "vecreg-bench"}
    data["vecreg"].update(vecreg)
    return data


def test_the_same_run_added_twice_is_kept_once(tmp_path, capsys):
    history = tmp_path / "history"
    first = rf.write(tmp_path / "run.json", run_data())
    assert cli.main(["history", "add", str(first), "--history", str(history)]) == 0
    # The same run again, and rewritten (the main job adds the convergence study to its file).
    again = run_data()
    again["vecreg"]["convergence"] = {"table": [], "traces": []}
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(again, indent=4))
    assert cli.main(["history", "add", str(first), str(copy), "--history", str(history)]) == 0
    out = capsys.readouterr().out
    assert out.count("already in the history") == 2
    files = list((history / "test-cpu").glob("*.json"))
    assert len(files) == 1
    name = files[0].name
    assert re.fullmatch(r"20261125T000000Z-aaaaaaaaaaaa-[0-9a-f]{16}\.json", name), name
    record = json.loads(files[0].read_text())
    assert record["commit"]["id"] == "a" * 40 and record["device_name"] == "Test CPU"
    (case,) = record["cases"]
    assert case["n"] == SAMPLES and case["low_s"] < case["median_s"] < case["high_s"]
    assert len(files[0].read_bytes()) < 1500  # a summary per case, not the samples

    # Another run of the same commit is another point.
    other = rf.write(tmp_path / "other.json", run_data(seed=1))
    assert add_run(other, history) is not None
    assert len(list((history / "test-cpu").glob("*.json"))) == 2


def test_record_run_says_one_line_and_never_raises(tmp_path):
    lines = []
    good = rf.write(tmp_path / "good.json", run_data())
    assert record_run(good, tmp_path / "h", write=lines.append) is not None
    assert record_run(good, tmp_path / "h", write=lines.append) is None
    bad = rf.write(tmp_path / "bad.json", run_data(complete=False))
    assert record_run(bad, tmp_path / "h", write=lines.append) is None
    assert lines[0].startswith("history: ") and lines[0].endswith(".json")
    assert lines[1] == f"history: already recorded ({good})"
    assert lines[2].startswith("history: not recorded: ") and "not a complete run" in lines[2]


def dirty(data: dict) -> dict:
    data["commit_info"]["dirty"] = True
    return data


def oracle_failure(data: dict) -> dict:
    data["benchmarks"][0]["extra_info"].update(oracle_ok=False, oracle_max_abs_err=0.5)
    return data


def no_commit(data: dict) -> dict:
    del data["commit_info"]
    return data


BAD_RUNS = {
    "foreign": (lambda _: {"hello": 1}, "not a pytest-benchmark results file"),
    "incomplete": (lambda d: run_data(complete=False, cases_done=0), "not a complete run"),
    "dirty": (dirty, "dirty tree"),
    "oracle": (oracle_failure, "failed the oracle check"),
    "no-commit": (no_commit, "has no commit"),
    "unversioned": (lambda d: run_data(commit="unversioned"), "has no commit"),
}


@pytest.mark.parametrize("name", BAD_RUNS)
def test_a_run_that_cannot_be_recorded_is_one_line_exit_2(tmp_path, capsys, name):
    make, words = BAD_RUNS[name]
    good = rf.write(tmp_path / "good.json", run_data(commit="b" * 40))
    bad = rf.write(tmp_path / f"{name}.json", make(run_data()))
    history = tmp_path / "history"
    assert cli.main(["history", "add", str(good), str(bad), "--history", str(history)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and words in err
    assert not history.exists()  # nothing recorded, not even the good file
    if name == "dirty":
        argv = ["history", "add", str(bad), "--allow-dirty", "--history", str(history)]
        assert cli.main(argv) == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["check", "--device", "nope"], "--device nope: no history for that device"),
        (["report", "--device", "nope"], "--device nope: no history for that device"),
        (["check", "--since", "0123abc"], "--since 0123abc: no run of the history"),
        (["check", "--threshold", "lots"], "--threshold 'lots' is not a number"),
        (["check", "--history", "EMPTY"], "no history here"),
        (["check", "--history", "FOREIGN"], "is not a vecreg-bench history file"),
    ],
)
def test_bad_input_to_check_and_report_is_one_line_exit_2(tmp_path, capsys, argv, words):
    history, _ = make_history(tmp_path / "h", steps(n=12), seed=0)
    if "FOREIGN" in argv:
        (history / "test-cpu" / "notes.json").write_text('{"hello": 1}')
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    argv = [str(history) if a == "FOREIGN" else a for a in argv]
    extra = [] if "--history" in argv else ["--history", str(history)]
    out = ["--out", str(tmp_path / "out")] if argv[0] == "report" else []
    assert cli.main(["history", *argv, *extra, *out, "--repo", "/"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


# --- ordering -----------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(repo),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not found")
def test_runs_are_ordered_by_git_commit_order_where_the_commits_are_here(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    commits = []
    for i in range(12):
        git(repo, "commit", "-q", "--allow-empty", "-m", f"c{i}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    # Measured in reverse: the newest commit first. Git's order wins over the times.
    history, _ = make_history(tmp_path / "h", steps(n=12), 0, commits=commits[::-1])
    dev = analyse(history, repo=repo)[0]
    assert [r.commit for r in dev.runs] == commits
    assert dev.ordering == "by commit order (git)"
    assert [r.commit for r in analyse(history, repo=tmp_path)[0].runs] == commits[::-1]

    argv = ["history", "check", "--history", str(history), "--repo", str(repo)]
    assert cli.main([*argv, "--since", commits[4][:9]]) == 0
    out = capsys.readouterr().out
    assert f"8 runs of 8 commits ({commits[4][:7]}..{commits[-1][:7]})" in out
    assert "ordered by commit order (git), since" in out
    assert cli.main([*argv, "--since", "no-such-rev"]) == 2


# --- the trend page -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trend(tmp_path_factory):
    """A history of two problems and two methods: analytic 1.3x slower from commit 25 (accepted),
    autograd 1.25x slower from commit 20 (failing); the analytic step is accepted on one problem
    only. And its page."""
    tmp = tmp_path_factory.mktemp("trend")
    levels = [
        {"analytic": 1.3 if i >= 25 else 1.0, "autograd": 1.25 if i >= 20 else 1.0}
        for i in range(1, 41)
    ]
    history, commits = make_history(tmp / "h", levels, seed=7, problems=(PROBLEM, OTHER))
    argv = ["history", "accept", CASE, commits[24], "--reason", "intended", "--repo", "/"]
    assert cli.main([*argv, "--history", str(history)]) == 0
    argv = ["history", "report", "--history", str(history), "--out", str(tmp / "out")]
    assert cli.main([*argv, "--repo", "/"]) == 0
    return tmp / "out" / "trend"


def test_the_trend_page_is_self_contained_with_a_plot_per_problem(trend, capsys):
    names = {p.name for p in trend.iterdir()}
    assert "index.html" in names and len([n for n in names if n.endswith(".png")]) == 2
    assert trend.is_symlink()  # published by bench.report.publish: swapped whole
    page = (trend / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == 2 and all(s.startswith("data:image/png;base64,") for s in images)
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "<script" not in page
    # autograd's slowdown on both problems, analytic's on the problem where it was not accepted
    assert page.count('<tr class="bad">') == 3
    assert page.count("accepted: intended") == 1 and "Accepted changes" in page
    assert "3 unacknowledged slowdown(s)" in page


CHROMIUM = next((p for p in ("chromium", "chromium-browser") if shutil.which(p)), None)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found (Debian: apt-get install chromium)"
)
def test_the_trend_page_renders_in_headless_chromium(trend, tmp_path):
    shot = tmp_path / "trend.png"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,1800",
            (trend / "index.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if ":CONSOLE" in line] == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a page, not a blank
