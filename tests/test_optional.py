"""Optional means optional: scipy, tqdm, jax, nvidia-ml-py (pynvml) and ruptures are imported
where they are used, every command that does not need them works without them, and `--help`
imports nothing heavy. The packages are hidden from a child process by a `sitecustomize` on its
PYTHONPATH, as if they were not installed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import cli, optional, stats

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "sample_sweep.json"
HIDDEN = ("scipy", "tqdm", "jax", "pynvml", "ruptures")
HEAVY = ("torch", "pandas", "scipy", "matplotlib", "seaborn")

# Import names in VECREG_HIDE cannot be imported and are not found (importlib.util.find_spec),
# and their distributions have no version (importlib.metadata): not installed, as far as any
# code can tell.
SITECUSTOMIZE = """
import importlib.metadata
import importlib.util
import os
import sys

HIDDEN = {name for name in os.environ.get("VECREG_HIDE", "").split(",") if name}
DISTRIBUTIONS = {"pynvml": "nvidia-ml-py"}
HIDDEN_DISTRIBUTIONS = {DISTRIBUTIONS.get(name, name) for name in HIDDEN}
_find_spec, _version = importlib.util.find_spec, importlib.metadata.version


class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def find_spec(name, package=None):
    return None if name.partition(".")[0] in HIDDEN else _find_spec(name, package)


def version(name):
    if name in HIDDEN_DISTRIBUTIONS:
        raise importlib.metadata.PackageNotFoundError(name)
    return _version(name)


sys.meta_path.insert(0, Hidden())
importlib.util.find_spec = find_spec
importlib.metadata.version = version
"""


@pytest.fixture(scope="module")
def without(tmp_path_factory):
    """Run `python ARGS...` in the checkout with HIDDEN not installed, as far as it can tell."""
    folder = tmp_path_factory.mktemp("hide")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(VECREG_HIDE=",".join(HIDDEN), PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def test_the_hidden_packages_cannot_be_imported_or_found(without):
    probe = (
        "import importlib.util\n"
        f"for name in {HIDDEN!r}:\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(name + ' imported')\n"
    )
    done = without("-c", probe)
    assert done.returncode == 0, done.stderr


# --- --help --------------------------------------------------------------------------------------


def _imported(done: subprocess.CompletedProcess) -> set[str]:
    """The modules `python -X importtime` says were imported."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("command", [None, *cli.COMMANDS])
def test_help_imports_nothing_heavy(command):
    args = [sys.executable, "-X", "importtime", "-m", "bench", *([command] if command else [])]
    done = subprocess.run([*args, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    heavy = {m.partition(".")[0] for m in _imported(done)} & set(HEAVY)
    assert not heavy, f"{command or 'python -m bench'} --help imported {sorted(heavy)}"


def test_top_level_help_lists_the_main_jobs_options_the_sweeps_and_the_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for option in ("--device", "--sweep", "--methods", "--dtypes", "--out", "--baseline"):
        assert f"\n  {option} " in out, option
    for name in (*cli.SWEEP_NAMES, *cli.COMMANDS):
        assert f"\n  {name} " in out or f"\n    {name} " in out, name


def test_a_commands_usage_names_the_command(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["compare"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("usage: python -m bench compare [-h]")


def test_the_names_the_help_gives_are_the_sweeps_and_dtypes():
    from bench.problem import DTYPES
    from bench.sweeps import DEFAULT_SWEEP, SWEEPS

    assert tuple(cli.SWEEP_NAMES) == tuple(SWEEPS)
    assert tuple(DTYPES) == cli.DTYPE_NAMES
    assert cli.DEFAULT_SWEEP == DEFAULT_SWEEP


# --- every command that does not need them, without them -----------------------------------------


def test_help_and_doctor_without_the_optional_packages(without, tmp_path):
    assert without("-m", "bench", "--help").returncode == 0
    done = without("-m", "bench", "doctor", "--reports", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("scipy", "tqdm", "jax", "nvidia-ml-py", "ruptures"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"{name} "))
        assert "not installed" in line and " optional " in line, line
    assert "jax is not installed" in done.stdout
    assert "The main job can run here" in done.stdout


def test_a_report_without_scipy_keeps_its_intervals(without, tmp_path):
    done = without("-m", "bench", "report", str(SAMPLE), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "latest" / "summary.md").read_text()
    assert re.search(r"\d+(\.\d+)?x \[\d", summary)  # a speedup with its 95% interval
    assert "±" in summary and "scipy" not in summary


def test_compare_without_scipy_gives_the_same_verdicts(without, capsys):
    args = ["compare", str(SAMPLE), str(SAMPLE)]
    done = without("-m", "bench", *args)
    assert done.returncode == cli.main(args), done.stderr
    assert done.stdout == capsys.readouterr().out
    assert "ratio in [" in done.stdout


def test_seed_without_the_optional_packages(without):
    done = without("-m", "bench", "seed", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert " 575 " in done.stdout and " 57 " in done.stdout
    assert "jax is not installed" in done.stdout


def test_history_check_without_ruptures_and_scipy_is_one_line_exit_2(without, tmp_path):
    for action in ("check", "report"):
        done = without("-m", "bench", "history", action, "--history", str(tmp_path))
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(
            f"error: python -m bench history {action} needs ruptures (change points in the "
            "history) and scipy ("
        )
        assert done.stderr.rstrip().endswith("pip install ruptures scipy")


def test_the_main_job_without_the_optional_packages(without, tmp_path):
    """No tqdm: a plain line per case on stderr instead of a bar."""
    done = without(
        "-m",
        "bench",
        "--sweep",
        "smoke",
        "--methods",
        "autograd,analytic",
        "--output",
        str(tmp_path / "results.json"),
        "--out",
        str(tmp_path / "reports"),
        "--no-history",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "case 1/2: autograd B4xD33" in done.stderr and "case 2/2: analytic" in done.stderr
    assert re.search(r"analytic\s*\n.*\dx \[", done.stdout)  # the speedup with its interval
    assert (tmp_path / "reports" / "latest" / "index.html").exists()


def test_the_gpu_tests_collect_without_scipy(without):
    done = without("-m", "pytest", "--collect-only", "-q", "-k", "cuda", "-p", "no:cacheprovider")
    assert done.returncode == 0 and "ERROR" not in done.stdout, done.stdout[-3000:]
    assert re.search(r"\d+/\d+ tests collected", done.stdout), done.stdout[-3000:]


# --- bench.stats needs no scipy, and gives scipy's numbers ---------------------------------------


def test_the_binomial_and_normal_quantiles_are_scipys():
    scipy_stats = pytest.importorskip("scipy.stats")
    for n in [*range(1, 120), 500, 4095, 4096, 4097, 10_007, 1_000_000]:
        ks = {0, 1, 2, n // 4, n // 2 - 1, n // 2, n // 2 + 1, n - 1, n}
        for k in (k for k in ks if k >= 0):
            expected = float(scipy_stats.binom.cdf(k, n, 0.5))
            assert stats.binomial_half_cdf(k, n) == pytest.approx(expected, rel=1e-8, abs=1e-300)
        for q in (0.005, 0.025, 0.05, 0.3):
            assert stats._binomial_half_quantile(q, n) == int(scipy_stats.binom.ppf(q, n, 0.5))
    for p in np.linspace(0.001, 0.999, 201):
        assert stats.normal_quantile(p) == pytest.approx(scipy_stats.norm.ppf(p), rel=1e-12)


def test_the_intervals_are_those_scipy_gives(monkeypatch):
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    samples = [np.exp(0.3 * rng.standard_normal(n)) for n in (5, 6, 9, 40, 101, 1000, 5000)]
    ours = [(stats.median_interval(x), stats.ratio_interval(x, samples[3])) for x in samples]
    monkeypatch.setattr(stats, "binomial_half_cdf", lambda k, n: scipy_stats.binom.cdf(k, n, 0.5))
    monkeypatch.setattr(
        stats, "_binomial_half_quantile", lambda q, n: int(scipy_stats.binom.ppf(q, n, 0.5))
    )
    monkeypatch.setattr(stats, "normal_quantile", scipy_stats.norm.ppf)
    for x, (median, ratio) in zip(samples, ours, strict=True):
        theirs = stats.median_interval(x), stats.ratio_interval(x, samples[3])
        for a, b in zip((median, ratio), theirs, strict=True):
            assert (a.low, a.high) == pytest.approx((b.low, b.high), rel=1e-12)


# --- the command line's one line for a missing package -------------------------------------------


def test_a_command_that_reaches_for_a_missing_package_is_one_line_exit_2(monkeypatch, capsys):
    from bench import seed_case

    def run(args):
        raise ModuleNotFoundError("No module named 'ruptures'", name="ruptures")

    monkeypatch.setattr(seed_case, "run", run)
    assert cli.main(["seed"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: python -m bench seed needs ruptures (change points in the history), which is "
        "not installed here: pip install ruptures\n"
    )


def test_a_missing_required_package_is_not_mistaken_for_an_optional_one():
    assert optional.missing_from(ModuleNotFoundError("x", name="torch")) is None
    assert optional.missing_from(ModuleNotFoundError("x", name="scipy.stats")) == "scipy"
    assert optional.installed("numpy") and not optional.installed("no_such_package_here")
