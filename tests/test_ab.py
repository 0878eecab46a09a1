"""`python -m bench ab`: two revisions timed in one run, interleaved, each side on its own code.

End to end on a git repository made here from this checkout: a baseline commit without the ab code
(an older revision knows nothing of it), and a candidate commit where `analytic` does extra work
per step (the same fit, slower). The sweep is `smoke` (one tiny problem) with analytic and autograd,
so a whole `ab` run takes a few seconds, most of it the workers importing torch.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import ab, ab_worker, cli
from bench.compare import compare_files
from bench.methods import get_method
from bench.problem import Problem
from bench.results import Results
from bench.timing import oracle_check

ROOT = Path(__file__).resolve().parents[1]
AB_FILES = ("bench/ab.py", "bench/ab_worker.py", "tests/test_ab.py")
CASE = "analytic B4xD33-K10-lr1.65-float32 cpu"
SMOKE = ["--sweep", "smoke", "--methods", "analytic,autograd"]

# Appended to the candidate's analytic.py: x - t computed 8 more times per step and thrown away.
SLOWDOWN = """

# Injected slowdown (tests/test_ab.py): the same fit, with extra work per step.
_original_run = Analytic.run


def _slower_run(self, x, t, lr, steps):
    for _ in range(8 * steps):
        torch.sub(x, t)
    return _original_run(self, x, t, lr, steps)


Analytic.run = _slower_run
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com",
         "-c", "commit.gpgsign=false", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    """A git repository with two commits: `base` (this checkout's files, without the ab code) and
    `cand` (with it, and a slower `analytic`); its working tree is `cand`, clean."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        tracked = git(ROOT, "ls-files").splitlines()
    except subprocess.CalledProcessError:
        pytest.skip(f"{ROOT} is not a git checkout")
    path = tmp_path_factory.mktemp("ab") / "repo"
    for name in sorted(set(tracked) | set(AB_FILES)):
        if (ROOT / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    git(path, "init", "--quiet")
    git(path, "add", "--all", "--", ".", *(f":!{name}" for name in AB_FILES))
    git(path, "commit", "--quiet", "-m", "base: no ab code")
    base = git(path, "rev-parse", "HEAD")
    with (path / "bench/methods/analytic.py").open("a", encoding="utf-8") as fh:
        fh.write(SLOWDOWN)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "candidate: analytic slower")
    return {"path": path, "base": base, "cand": git(path, "rev-parse", "HEAD")}


def run_ab(repo: dict, *args: str, env: dict | None = None, timeout: float = 300):
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bench", "ab", *args],
        cwd=repo["path"], env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def worktrees(repo: dict) -> list[str]:
    return [
        line for line in git(repo["path"], "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]  # fmt: skip


def test_a_slower_method_is_a_regression_and_each_side_runs_its_own_tree(repo, tmp_path):
    # The usual user: the candidate checkout first on PYTHONPATH (and an editable install of
    # this project in the environment); PYTHONSAFEPATH keeps the script's folder off sys.path.
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(repo["path"]), "PYTHONSAFEPATH": "1"}
    markdown = tmp_path / "ab.md"
    done = run_ab(
        repo, "HEAD~1", "HEAD", *SMOKE, "--max-time", "30", "--out", str(out),
        "--markdown", str(markdown), env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    regressions = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("REGRESSION")]
    assert [ln.split(":")[0].strip() for ln in regressions] == [f"REGRESSION {CASE}"]
    assert "**gate fails**: **1 regression(s)**" in markdown.read_text()

    # Each side imported its own checkout: the worktree of its commit, not the candidate's
    # checkout that PYTHONPATH and the editable install point at.
    base, cand = (Results.load(out / f"{side}.json") for side in ("baseline", "candidate"))
    assert base.commit.id == repo["base"] and cand.commit.id == repo["cand"]
    base_file = Path(base.environment["ab_bench_file"])
    cand_file = Path(cand.environment["ab_bench_file"])
    assert base_file.name == cand_file.name == "__init__.py"
    assert repo["path"] not in base_file.parents and ROOT not in base_file.parents
    assert base_file.parent != cand_file.parent
    assert not base_file.exists()  # its worktree is removed
    assert f"baseline  HEAD~1 ({repo['base'][:7]}): bench from {base_file}" in done.stderr

    # The files are the project's results files: compare reads them to the same verdicts.
    assert base.complete and cand.complete
    for case in cand.cases:
        assert case.oracle_ok and case.samples.size >= 20 and case.info["time_per_step_s"] > 0
    again = compare_files(out / "baseline.json", out / "candidate.json")
    assert again.regressions == [CASE] and again.exit_code == 1
    compared = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(out / "baseline.json"),
         str(out / "candidate.json")], capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert compared.returncode == 1
    # The same table and summary; only the title's labels differ (file names there).
    table = compared.stdout.splitlines()
    assert done.stdout.splitlines()[1 : len(table)] == table[1:]
    assert worktrees(repo) == [f"worktree {repo['path']}"]


def test_a_revision_against_itself_passes(repo, tmp_path):
    done = run_ab(repo, "HEAD~1", "HEAD~1", *SMOKE, "--max-time", "30", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no regression in 2 case(s)" in done.stdout
    assert worktrees(repo) == [f"worktree {repo['path']}"]


def test_the_candidate_defaults_to_the_working_tree_dirty_or_not(repo, tmp_path):
    readme = repo["path"] / "README.md"
    text = readme.read_text()
    readme.write_text(text + "\nA local edit.\n")
    try:
        done = run_ab(repo, "HEAD", "--sweep", "smoke", "--methods", "autograd",
                      "--max-time", "30", "--out", str(tmp_path))  # fmt: skip
    finally:
        readme.write_text(text)
    assert done.returncode == 0, done.stdout + done.stderr
    cand = Results.load(tmp_path / "candidate.json")
    assert cand.commit.id == repo["cand"] and cand.commit.dirty
    assert Path(cand.environment["ab_bench_file"]) == repo["path"].resolve() / "bench/__init__.py"
    assert "candidate working tree" in done.stdout


def test_a_side_that_imported_another_tree_is_refused(repo, tmp_path):
    # A sitecustomize that imports the candidate's bench before the worker can choose its tree.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(repo['path'])!r})\nimport bench\n"
    )
    done = run_ab(repo, "HEAD~1", "HEAD", *SMOKE, "--out", str(tmp_path / "out"),
                  env={"PYTHONPATH": str(site)})  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the baseline HEAD~1 (")
    assert f"imported bench from {repo['path'].resolve()}/bench/__init__.py" in error
    assert worktrees(repo) == [f"worktree {repo['path']}"]


def editable_bench() -> Path | None:
    """Where an editable install's finder (setuptools) maps `bench`, if there is one."""
    for finder in sys.meta_path:
        mapping = getattr(sys.modules.get(getattr(finder, "__module__", "")), "MAPPING", None)
        if isinstance(mapping, dict) and "bench" in mapping:
            return Path(mapping["bench"])
    return None


def test_a_module_an_editable_install_supplies_is_refused(repo, tmp_path):
    # A module missing from a side's tree is looked up by the editable install's finder next, in
    # the tree it was installed from: a revision that imports bench.oracle but lacks the file
    # would run another tree's code for it, without a word.
    installed = editable_bench()
    if installed is None or not (installed / "oracle.py").is_file():
        pytest.skip("no editable install of vecreg-bench with bench/oracle.py in this environment")
    index = tmp_path / "index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    path = repo["path"]

    def plumbing(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            ["git", "-C", str(path), "-c", "user.name=test", "-c", "user.email=test@example.com",
             *args], input=stdin, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    plumbing("read-tree", repo["base"])
    methods = plumbing("show", f"{repo['base']}:bench/methods/__init__.py")
    methods += "\n\nimport bench.oracle\n"
    blob = plumbing("hash-object", "-w", "--stdin", stdin=methods)
    plumbing("update-index", "--cacheinfo", f"100644,{blob},bench/methods/__init__.py")
    plumbing("update-index", "--force-remove", "bench/oracle.py")
    commit = plumbing("commit-tree", plumbing("write-tree"), "-p", repo["base"], "-m", "no oracle")
    done = run_ab(repo, commit, "HEAD", *SMOKE, "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert f"its worker imported bench.oracle {installed.resolve() / 'oracle.py'}, outside" in error
    assert worktrees(repo) == [f"worktree {repo['path']}"]


def test_interrupted_ab_removes_worktrees_and_workers(repo, tmp_path):
    # An alpha this small makes every interval [0, inf]: no case is ever decided, the rounds go
    # on until the signal.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "ab", "HEAD~1", "HEAD", "--sweep", "smoke",
         "--methods", "autograd", "--alpha", "1e-300", "--max-time", "300",
         "--out", str(tmp_path)],
        cwd=repo["path"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "interleaving rounds" in line:
            break
    # Rounds of about 50 ms a side: within 3 s some are done even on a loaded machine (0.5 s was
    # not always enough for the first one, and a run stopped before any round saves nothing).
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = "".join(lines) + err
    assert proc.returncode == 130, out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted during the A/B run, after ")
    assert f"the incomplete results are in {tmp_path}" in last
    assert worktrees(repo) == [f"worktree {repo['path']}"]
    assert not Path(Results.load(tmp_path / "baseline.json").environment["ab_bench_file"]).exists()
    for side in ("baseline", "candidate"):
        data = json.loads((tmp_path / f"{side}.json").read_text())
        assert data["vecreg"]["complete"] is False
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(repo["path"] / "bench" / "ab_worker.py") not in ps


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-revision"], "error: unknown revision 'no-such-revision': no such commit in"),
        (["HEAD", "--methods", "nope"], "error: unknown method 'nope'; known methods: "),
        (["HEAD", "--max-time", "0"], "error: --max-time '0' is not allowed"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(repo, monkeypatch, capsys, args, message):
    monkeypatch.chdir(repo["path"])
    assert cli.main(["ab", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1
    assert worktrees(repo) == [f"worktree {repo['path']}"]


def test_not_a_git_checkout_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert cli.main(["ab", "HEAD", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path} is not in a git checkout; run ab in the checkout whose " \
        "revisions it compares\n"  # fmt: skip


def test_worker_puts_its_tree_first_whatever_the_environment(repo, tmp_path):
    """The worker script alone: started in another tree with PYTHONPATH pointing at this
    checkout, it imports `bench` and `kernels` from its own tree and says so."""
    tree = tmp_path / "tree"
    git(repo["path"], "worktree", "add", "--detach", "--quiet", str(tree), repo["base"])
    try:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{repo['path']}"}
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "ab_worker.py"), str(tree)],
            input='{"cmd": "exit"}\n', capture_output=True, text=True, env=env, cwd=ROOT,
            timeout=120,
        )  # fmt: skip
    finally:
        git(repo["path"], "worktree", "remove", "--force", str(tree))
    hello = json.loads(done.stdout.splitlines()[0])
    assert hello["event"] == "hello", done.stderr
    assert hello["bench"] == str(tree.resolve() / "bench" / "__init__.py")
    assert hello["kernels"] == str(tree.resolve() / "kernels" / "__init__.py")
    assert hello["foreign"] == [] and hello["commit"] == repo["base"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_worker_oracle_rule_is_the_timing_modules(dtype):
    problem = Problem(batch=3, dim=17, steps=20, lr=0.85, dtype=dtype)
    x0, t = problem.inputs("cpu")
    for name in ("analytic", "autograd"):
        method = get_method(name)
        assert ab_worker.oracle_check(method, problem, x0, t) == oracle_check(
            method, problem, x0, t
        )


def test_stopping_rule_keeps_false_alarms_rare_and_finds_real_slowdowns():
    """The stopping rule on simulated rounds of one sample each (its worst case: a look after
    every few samples), log-normal with an IQR of 30% of the median, threshold 10%."""
    sigma = 0.30 / (2 * statistics.NormalDist().inv_cdf(0.75))
    rng = np.random.default_rng(2)

    def verdicts(ratio: float, runs: int, max_samples: int = 150) -> dict[str, int]:
        found: dict[str, int] = {}
        for _ in range(runs):
            stopping = ab.Stopping(threshold=0.10, alpha=0.05)
            base, cand, verdict, rounds = [], [], None, 0
            while verdict is None and len(base) < max_samples:
                base.append(float(np.exp(rng.normal(0, sigma))))
                cand.append(float(ratio * np.exp(rng.normal(0, sigma))))
                rounds += 1
                verdict = stopping.look("case", base, cand, rounds)
            found[verdict or "budget"] = found.get(verdict or "budget", 0) + 1
        return found

    assert verdicts(1.0, 300).get("regression", 0) <= 3
    assert verdicts(1.05, 300).get("regression", 0) <= 3
    assert verdicts(1.5, 200).get("regression", 0) >= 198
