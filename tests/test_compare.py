"""The regression check, on synthetic results files: no timing here."""

import json
import os

import numpy as np
import pytest
import results_factory as rf

from bench import stats
from bench.baseline import baseline_path, device_slug, newest_results, save_baseline
from bench.cli import main
from bench.compare import (
    compare,
    compare_files,
    format_seconds,
    parse_threshold,
    verdict_of,
)
from bench.problem import Problem
from bench.results import Results

SMALL = Problem(batch=64, dim=257, steps=100, lr=0.1)
BIG = Problem(batch=1023, dim=1025, steps=100, lr=0.1, dtype="bfloat16")
METHOD_TIMES = {"autograd": 2e-3, "analytic": 8e-4, "compiled": 5e-4}


def timings(median, n=20, spread=0.01, seed=0):
    """n samples around `median`, log-normal with standard deviation `spread` of the log (about
    the relative spread where it is small; times stay > 0 where it is not), reproducible."""
    rng = np.random.default_rng(seed)
    return (median * np.exp(spread * rng.standard_normal(n))).tolist()


def run_file(path, scale=None, spread=0.01, n=20, seed=0, device_name="Test CPU", drop=()):
    """A results file with every method x (SMALL, BIG); `scale` multiplies one method's times."""
    scale = scale or {}
    entries = []
    for i, (method, t) in enumerate(METHOD_TIMES.items()):
        for j, problem in enumerate((SMALL, BIG)):
            if (method, problem) in drop:
                continue
            s = np.asarray(
                timings(
                    t,
                    n,
                    spread.get(method, 0.01) if isinstance(spread, dict) else spread,
                    seed * 100 + 10 * i + j,
                )
            )
            entries.append(
                rf.entry(
                    method, problem, (s * scale.get(method, 1.0)).tolist(), device_name=device_name
                )
            )
    return rf.write(path, rf.results(entries, device_name=device_name))


def case(method, problem=SMALL):
    return f"{method} {problem.name} cpu"


def test_identical_runs_exit_0(tmp_path, capsys):
    base = run_file(tmp_path / "base.json")
    assert main(["compare", str(base), str(base)]) == 0
    out = capsys.readouterr().out
    assert "no regression in 6 case(s)" in out


def test_two_runs_of_the_same_code_exit_0(tmp_path):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2)
    comparison = compare_files(base, cand)
    assert comparison.exit_code == 0
    assert set(comparison.table["verdict"]) == {"unchanged"}
    table = comparison.table
    assert ((table.ci_low < table.ratio) & (table.ratio < table.ci_high)).all()
    assert ((table.ci_low >= 0.9) & (table.ci_high <= 1.1)).all()


def test_a_30_percent_slowdown_with_tight_samples_is_flagged_and_named(tmp_path, capsys):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2, scale={"analytic": 1.3})
    assert main(["compare", str(base), str(cand)]) == 1
    out = capsys.readouterr().out
    assert f"REGRESSION {case('analytic')}" in out
    assert f"REGRESSION {case('analytic', BIG)}" in out
    assert "2 regression(s) out of 6 case(s)" in out
    assert "autograd" not in "".join(line for line in out.splitlines() if "REGRESSION" in line)


def test_a_30_percent_slowdown_in_heavy_noise_is_inconclusive(tmp_path):
    noisy = {"analytic": 0.6}  # log spread 0.6: medians of 10 move by tens of % between runs
    base = run_file(tmp_path / "base.json", seed=1, spread=noisy, n=10)
    cand = run_file(tmp_path / "cand.json", seed=2, spread=noisy, n=10, scale={"analytic": 1.3})
    comparison = compare_files(base, cand)
    rows = comparison.table.set_index("case")
    assert comparison.exit_code == 0 and comparison.regressions == []
    for c in (case("analytic"), case("analytic", BIG)):
        assert rows.loc[c, "change"] > 0.10  # slower beyond the threshold ...
        assert rows.loc[c, "ci_low"] < 1.10 < rows.loc[c, "ci_high"]  # ... but not proven
        assert rows.loc[c, "verdict"] == "inconclusive"
        assert "noisy" in rows.loc[c, "notes"]


def test_a_slowdown_the_interval_proves_is_a_regression_however_noisy_the_runs(tmp_path, capsys):
    """Noise widens the interval; it does not turn a proven slowdown into 'inconclusive'."""
    noisy = {"analytic": 0.25}  # IQR about 34% of the median
    base = run_file(tmp_path / "base.json", seed=1, spread=noisy, n=160)
    cand = run_file(tmp_path / "cand.json", seed=2, spread=noisy, n=160, scale={"analytic": 1.5})
    assert main(["compare", str(base), str(cand)]) == 1
    out = capsys.readouterr().out
    rows = compare_files(base, cand).table.set_index("case")
    for c in (case("analytic"), case("analytic", BIG)):
        assert rows.loc[c, "ci_low"] > 1.1 and rows.loc[c, "verdict"] == "regression"
        assert "noisy baseline" in rows.loc[c, "notes"]
        assert f"REGRESSION {c}: +" in out


def test_a_faster_case_is_an_improvement(tmp_path, capsys):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2, scale={"compiled": 0.7})
    assert main(["compare", str(base), str(cand)]) == 0
    out = capsys.readouterr().out
    assert "2 improvement(s)" in out and case("compiled") in out
    comparison = compare_files(base, cand)
    assert comparison.improvements == [case("compiled"), case("compiled", BIG)]
    assert comparison.regressions == []


def test_a_small_proven_slowdown_is_within_the_threshold(tmp_path):
    base = run_file(tmp_path / "base.json", seed=1, spread=0.001)
    cand = run_file(tmp_path / "cand.json", seed=2, spread=0.001, scale={"autograd": 1.05})
    row = compare_files(base, cand).table.set_index("case").loc[case("autograd")]
    assert 1 < row["ci_low"] < row["ci_high"] < 1.1 and row["verdict"] == "unchanged"
    assert compare_files(base, cand, threshold=0.03).regressions == [
        case("autograd"),
        case("autograd", BIG),
    ]


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (1.11, 1.5, "regression"),
        (1.10, 1.5, "inconclusive"),  # on the bound: not beyond it
        (0.5, 0.89, "improvement"),
        (0.5, 0.90, "inconclusive"),
        (0.90, 1.10, "unchanged"),
        (0.95, 1.05, "unchanged"),
        (0.89, 1.05, "inconclusive"),
        (0.95, 1.11, "inconclusive"),
        (0.5, 1.5, "inconclusive"),
    ],
)
def test_verdicts_of_intervals_at_the_bounds(low, high, verdict):
    assert verdict_of(low, high, 0.10) == verdict


def _with_not_measured(path, status, method, problem, reason):
    data = json.loads(path.read_text())
    data["vecreg"][status].append({"method": method, "problem": problem.name, "reason": reason})
    return rf.write(path, data)


@pytest.mark.parametrize("status", ["failed", "skipped", "absent"])
def test_a_case_of_the_baseline_that_the_candidate_did_not_time_fails_the_gate(
    tmp_path, capsys, status
):
    base = run_file(tmp_path / "base.json", drop=[("compiled", BIG)])
    cand = run_file(tmp_path / "cand.json", drop=[("autograd", SMALL)])
    if status != "absent":
        _with_not_measured(cand, status, "autograd", SMALL, "out of memory")
    comparison = compare_files(base, cand)
    assert comparison.missing == [case("autograd")] and comparison.failures == [case("autograd")]
    assert comparison.only_in_candidate == [case("compiled", BIG)]
    assert len(comparison.table) == 5 and comparison.exit_code == 1
    assert main(["compare", str(base), str(cand)]) == 1
    out = capsys.readouterr().out
    why = "absent from the candidate" if status == "absent" else f"{status}: out of memory"
    assert f"MISSING {case('autograd')}: {why} (ran in the baseline)" in out
    assert f"only in candidate: {case('compiled', BIG)}" in out

    assert main(["compare", str(base), str(cand), "--allow-missing"]) == 0
    assert f"missing (allowed) {case('autograd')}" in capsys.readouterr().out


def test_a_candidate_with_a_wrong_answer_fails_the_gate_however_fast(tmp_path, capsys):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2, scale={"analytic": 0.5})
    data = json.loads(cand.read_text())
    for entry in data["benchmarks"]:
        if entry["extra_info"]["method"] == "analytic" and entry["group"] == SMALL.name:
            entry["extra_info"].update(oracle_ok=False, oracle_max_abs_err=0.25)
    rf.write(cand, data)
    comparison = compare_files(base, cand)
    assert comparison.wrong == [case("analytic")] and comparison.exit_code == 1
    assert comparison.improvements == [case("analytic", BIG)]  # the correct one is faster
    assert main(["compare", str(base), str(cand), "--allow-missing"]) == 1
    out = capsys.readouterr().out
    assert f"WRONG {case('analytic')}: oracle check failed in the candidate" in out
    assert "0.25" in out


def test_an_interrupted_candidate_fails_the_gate_and_is_refused_as_a_baseline(tmp_path, capsys):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2)
    data = json.loads(cand.read_text())
    data["vecreg"].update(complete=False, cases_total=8, cases_done=6)
    rf.write(cand, data)
    comparison = compare_files(base, cand)
    assert comparison.failures == [] and comparison.exit_code == 1
    assert main(["compare", str(base), str(cand)]) == 1
    assert "INCOMPLETE candidate: the run was interrupted (6 of 8 cases)" in capsys.readouterr().out
    assert main(["compare", str(cand), str(base)]) == 2
    err = capsys.readouterr().err
    assert "not a complete run (6 of 8 cases" in err and err.count("\n") == 1


def test_device_mismatch_is_refused_unless_allowed(tmp_path, capsys):
    base = run_file(tmp_path / "base.json", device_name="NVIDIA A100-SXM4-80GB")
    cand = run_file(tmp_path / "cand.json", device_name="NVIDIA H100 80GB HBM3")
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err
    assert "'NVIDIA A100-SXM4-80GB'" in err and "'NVIDIA H100 80GB HBM3'" in err
    assert "--allow-device-mismatch" in err and err.count("\n") == 1
    assert main(["compare", str(base), str(cand), "--allow-device-mismatch"]) == 0
    assert "different device models" in capsys.readouterr().out


@pytest.mark.parametrize("name", rf.BAD_FILES)
@pytest.mark.parametrize("side", ["baseline", "candidate"])
def test_bad_files_exit_2_with_one_line(tmp_path, capsys, name, side):
    good = run_file(tmp_path / "good.json")
    bad, words = rf.write_bad(tmp_path, name)
    argv = [str(good), str(bad)] if side == "candidate" else [str(bad), str(good)]
    assert main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert str(bad) in captured.err and words in captured.err
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--threshold", "ten"], "not a number"),
        (["--threshold", "10"], "ambiguous"),
        (["--threshold=-5%"], "must be >= 0"),
        (["--alpha", "1.5"], "between 0 and 1"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, argv, words):
    base = run_file(tmp_path / "base.json")
    assert main(["compare", str(base), str(base), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_threshold_accepts_percent_and_fraction():
    assert parse_threshold("10%") == pytest.approx(0.10)
    assert parse_threshold("0.1") == pytest.approx(0.10)
    assert parse_threshold("0") == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2e-3, "2.00 ms"),
        (7.996e-4, "800 us"),
        (999.6e-6, "1.00 ms"),
        (1.2, "1.20 s"),
        (5e-10, "0.500 ns"),
    ],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_one_file_without_baseline_for_device_is_a_usage_error(tmp_path, capsys):
    base = run_file(tmp_path / "base.json")
    assert main(["compare", str(base)]) == 2
    assert "BASELINE.json CANDIDATE.json" in capsys.readouterr().err


def test_markdown_is_written(tmp_path, capsys):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2, scale={"analytic": 1.3})
    md = tmp_path / "ci" / "comparison.md"
    assert main(["compare", str(base), str(cand), "--markdown", str(md)]) == 1
    text = md.read_text()
    assert text.startswith("### Benchmark comparison: **gate fails**: **2 regression(s)**")
    assert f"| **{case('analytic')}** |" in text
    assert f"markdown: {md}" in capsys.readouterr().out


def test_the_fewest_samples_that_give_an_interval(tmp_path):
    n = stats.MIN_SAMPLES
    base = run_file(tmp_path / "base.json", n=n, seed=1, spread=0.005)
    cand = run_file(tmp_path / "cand.json", n=n, seed=2, spread=0.005, scale={"analytic": 1.3})
    comparison = compare_files(base, cand)
    table = comparison.table.set_index("case")
    assert comparison.regressions == [case("analytic"), case("analytic", BIG)]
    row = table.loc[case("analytic")]
    assert 1.1 < row["ci_low"] < row["ratio"] < row["ci_high"]
    assert "ratio in [" in comparison.to_text()
    # Deterministic: the same files give the same verdicts and numbers.
    assert compare_files(base, cand).table.equals(comparison.table)


def test_too_few_samples_are_untested(tmp_path):
    n = stats.MIN_SAMPLES - 1
    base = run_file(tmp_path / "base.json", n=n, seed=1)
    cand = run_file(tmp_path / "cand.json", n=n, seed=2, scale={"analytic": 2.0})
    comparison = compare_files(base, cand)
    assert set(comparison.table["verdict"]) == {"untested"}
    assert comparison.exit_code == 0
    assert "untested" in comparison.to_text()


def test_compare_on_loaded_results_and_validation(tmp_path):
    results = Results.load(run_file(tmp_path / "base.json"))
    assert compare(results, results).exit_code == 0
    with pytest.raises(ValueError, match="alpha"):
        compare(results, results, alpha=0)


@pytest.mark.parametrize("which", [0, 1])
def test_markdown_that_would_overwrite_an_input_is_refused_before_comparing(
    tmp_path, capsys, which
):
    files = [run_file(tmp_path / "base.json", seed=1), run_file(tmp_path / "cand.json", seed=2)]
    before = files[which].read_bytes()
    alias = tmp_path / "sub" / ".." / files[which].name
    (tmp_path / "sub").mkdir()
    assert main(["compare", *map(str, files), "--markdown", str(alias)]) == 2
    captured = capsys.readouterr()
    assert "the run would overwrite it" in captured.err and captured.out == ""
    assert files[which].read_bytes() == before


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_markdown_path_is_a_usage_error(tmp_path, capsys, value):
    files = [run_file(tmp_path / "base.json", seed=1), run_file(tmp_path / "cand.json", seed=2)]
    assert main(["compare", *map(str, files), "--markdown", value]) == 2
    err = capsys.readouterr().err
    assert "--markdown" in err and "empty" in err and err.count("\n") == 1


def test_a_markdown_that_cannot_be_written_keeps_the_verdicts_exit_code(
    tmp_path, capsys, monkeypatch
):
    base = run_file(tmp_path / "base.json", seed=1)
    cand = run_file(tmp_path / "cand.json", seed=2, scale={"analytic": 1.3})
    md = tmp_path / "comparison.md"

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(md), "write_text", refuse)
    assert main(["compare", str(base), str(cand), "--markdown", str(md)]) == 1
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out
    assert f"error: {md}: the Markdown was not written (Permission denied)" in captured.err


# --- baselines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("NVIDIA A100-SXM4-80GB", "nvidia-a100-sxm4-80gb"),
        ("Intel(R) Xeon(R) Platinum 8480+", "intel-r-xeon-r-platinum-8480"),
        ("  ", "unknown-device"),
    ],
)
def test_device_slug(name, slug):
    assert device_slug(name) == slug


def test_baseline_save_and_find_round_trip(tmp_path, capsys):
    reports = tmp_path / "reports"
    storage = reports / "results"
    storage.mkdir(parents=True)
    old = run_file(storage / "0001_old.json", seed=1, device_name="NVIDIA H100 80GB HBM3")
    new = run_file(storage / "0002_new.json", seed=2, device_name="NVIDIA H100 80GB HBM3")
    (reports / "notes.json").write_text('{"not": "results"}')
    os.utime(old, (1_000, 1_000))
    os.utime(new, (2_000, 2_000))
    assert newest_results(reports) == new

    assert main(["baseline", "save", "--reports", str(reports)]) == 0
    saved = reports / "baselines" / "nvidia-h100-80gb-hbm3.json"
    assert saved.read_bytes() == new.read_bytes()
    assert str(saved) in capsys.readouterr().out
    # A baseline is never taken for the newest run, even when it is the newest file.
    os.utime(saved, (3_000, 3_000))
    assert newest_results(reports) == new
    assert list(saved.parent.iterdir()) == [saved]  # no temporary left behind

    cand = run_file(
        tmp_path / "cand.json", seed=3, device_name="NVIDIA H100 80GB HBM3", scale={"analytic": 1.3}
    )
    argv = ["compare", "--baseline-for-device", str(cand), "--reports", str(reports)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"vs {saved}" in out and "REGRESSION analytic" in out

    assert save_baseline(old, reports) == baseline_path("NVIDIA H100 80GB HBM3", reports)
    assert saved.read_bytes() == old.read_bytes()


def test_no_baseline_for_this_device(tmp_path, capsys):
    cand = run_file(tmp_path / "cand.json", device_name="NVIDIA L4")
    argv = ["compare", "--baseline-for-device", str(cand), "--reports", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no baseline for 'NVIDIA L4'" in err and "nvidia-l4.json" in err


def test_baseline_save_with_no_results_exit_2(tmp_path, capsys):
    assert main(["baseline", "save", "--reports", str(tmp_path)]) == 2
    assert "no complete results file found" in capsys.readouterr().err
