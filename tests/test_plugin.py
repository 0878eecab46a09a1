"""The benchmark plugin: options, filters, bookkeeping; a plain pytest skips the suite."""

import json
import sys

import pytest
import results_factory as rf
import torch

from bench import plugin
from bench.methods import METHODS
from bench.problem import DTYPES, Problem
from bench.results import load_results
from bench.suite_runner import SUITE, run_benchmarks
from bench.sweeps import SWEEPS


def test_methods_are_parsed_and_checked():
    assert plugin.parse_methods("analytic, compiled,analytic") == ["analytic", "compiled"]
    with pytest.raises(ValueError) as info:
        plugin.parse_methods("analytic,adamw")
    assert "'adamw'" in str(info.value) and all(name in str(info.value) for name in METHODS)
    with pytest.raises(ValueError, match="comma-separated"):
        plugin.parse_methods("analytic,,compiled")


def test_sweep_dtype_and_device_are_checked():
    assert plugin.parse_sweep("seed") == "seed"
    with pytest.raises(ValueError) as info:
        plugin.parse_sweep("huge")
    assert "'huge'" in str(info.value) and all(name in str(info.value) for name in SWEEPS)
    assert plugin.parse_dtypes("bfloat16,float32") == ["bfloat16", "float32"]
    with pytest.raises(ValueError) as info:
        plugin.parse_dtypes("int8")
    assert "'int8'" in str(info.value) and all(name in str(info.value) for name in DTYPES)
    assert plugin.parse_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="'tpu'"):
        plugin.parse_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            plugin.parse_device("cuda")


def test_dtype_runs_every_problem_in_each_dtype_once():
    sizes = plugin.select_problems("sizes", ["bfloat16"])
    assert sizes and {p.dtype for p in sizes} == {"bfloat16"}
    assert len(sizes) == len({p.name for p in sizes}) == len(SWEEPS["sizes"]) // 2
    seed = plugin.select_problems("seed", ["float32", "float64"])
    assert [p.dtype for p in seed] == ["float32", "float64", "float32", "float64"]
    assert plugin.select_problems("quick") == SWEEPS["quick"]


def test_speedup_is_autograd_median_over_this_median_on_the_same_problem():
    p, q = Problem(batch=4, dim=8, steps=10), Problem(batch=4, dim=8, steps=10, dtype="bfloat16")
    entries = [
        rf.entry("autograd", p, [4.0, 4.0, 4.0]),
        rf.entry("analytic", p, [1.0, 1.0, 1.0]),
        rf.entry("analytic", q, [1.0, 1.0, 1.0]),  # no autograd for this one
    ]
    plugin.fill_speedups(entries)
    assert [e["extra_info"]["speedup_vs_autograd"] for e in entries] == [1.0, 4.0, None]


def test_default_results_path_is_new_under_reports(tmp_path):
    first = plugin.default_json_path(tmp_path)
    assert first.parent == tmp_path / "reports" / "results" and first.suffix == ".json"
    first.parent.mkdir(parents=True)
    first.write_text("{}")
    assert plugin.default_json_path(tmp_path) != first


class Reports:
    def __init__(self):
        self.skipped = []

    def pytest_runtest_logreport(self, report):
        if report.skipped:
            self.skipped.append(report.longrepr[2].removeprefix("Skipped: "))


def test_a_plain_pytest_skips_the_benchmarks_at_once():
    reports = Reports()
    args = [str(SUITE), "-p", "bench.plugin", "-p", "no:cacheprovider", "-q"]
    assert pytest.main(args, plugins=[reports]) == pytest.ExitCode.OK
    assert reports.skipped and set(reports.skipped) == {plugin.SKIP_REASON}


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("--sweep=huge", ["'huge'", "quick", "sizes"]),
        ("--methods=analytic,adamw", ["'adamw'", "autograd", "triton_step"]),
        ("--dtype=int8", ["'int8'", "bfloat16"]),
        ("--device=tpu", ["'tpu'", "cpu", "cuda"]),
        ("--precision=2", ["--precision", "'2'", "2%"]),
        ("--precision=fine", ["--precision", "'fine'", "2%"]),
        ("--threads=0", ["--threads", "'0'", ">= 1"]),
        ("--cache=hot", ["--cache", "'hot'", "warm", "cold"]),
    ],
)
def test_bad_option_values_are_usage_errors_that_name_them(option, words, capsys):
    args = [str(SUITE), "-p", "bench.plugin", "-p", "no:cacheprovider", option]
    assert pytest.main(args) == pytest.ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    ("text", "value"), [("2%", 0.02), ("0.5%", 0.005), ("0.02", 0.02), ("0", 0.0), (" 10% ", 0.1)]
)
def test_precision_is_a_fraction_or_a_percentage(text, value):
    assert plugin.parse_precision(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2", "ambiguous"),
        ("100%", "below 100%"),
        ("-1%", "at least 0"),
        ("nan", "not allowed"),
        ("inf%", "not allowed"),
        ("two", "not a number"),
        ("%", "not a number"),
    ],
)
def test_bad_precisions_are_refused_with_the_value(text, words):
    with pytest.raises(ValueError) as info:
        plugin.parse_precision(text)
    assert repr(text) in str(info.value) and words in str(info.value)


def test_threads_are_a_positive_whole_number():
    assert plugin.parse_threads("3") == 3
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(ValueError, match=">= 1"):
            plugin.parse_threads(bad)


def test_the_summary_names_imprecise_busy_and_throttled_cases():
    base = {"method": "analytic", "problem": "P", "precision": 0.01, "imprecise": False}
    timed = [
        base,
        {**base, "method": "sgd", "precision": 0.031, "imprecise": True},
        {**base, "method": "autograd", "busy": True, "load_before": 1.5, "load_after": 3.25},
        {**base, "method": "jax", "busy": True, "cpu_stall": 0.31, "load_before": 2.5},
        {**base, "method": "compiled", "throttled_rounds": 4, "throttled": False},
    ]
    lines = plugin.sampling_summary(timed, 0.02)
    assert lines[0] == "precision: 4 of 5 cases reached +-2.0% (the 95% interval of the median)"
    assert lines[1] == "  sgd P: imprecise: +-3.1% when the time budget ran out"
    assert lines[2].startswith("  autograd P: busy: load average 3.25, above")
    assert lines[3] == "  jax P: busy: tasks waited for a CPU 31% of the time"
    assert lines[4] == "  compiled P: 4 rounds under GPU throttling left out"
    assert plugin.sampling_summary([], 0.02) == []


def test_precision_threads_and_the_new_fields_land_in_the_results_file(tmp_path, capsys):
    """--precision 0 takes rounds for the whole budget: the case is imprecise, by definition."""
    before = torch.get_num_threads()
    path = run_benchmarks(
        "smoke",
        "cpu",
        ["analytic"],
        output=tmp_path / "r.json",
        progress=False,
        precision=0.0,
        threads=1,
        pytest_args=["--benchmark-max-time=0.05"],
    )
    assert torch.get_num_threads() == before  # the session's setting does not outlive it
    out = capsys.readouterr().out
    assert "precision: 0 of 1 cases reached +-0.0%" in out
    data = json.loads(path.read_text())
    (entry,) = data["benchmarks"]
    info = entry["extra_info"]
    assert info["precision_target"] == 0.0 and info["imprecise"] is True
    assert info["precision"] > 0 and len(entry["stats"]["data"]) >= 5
    assert info["time_per_step_low_s"] <= info["time_per_step_s"] <= info["time_per_step_high_s"]
    assert info["throttled_rounds"] is None and info["sm_clock_min_mhz"] is None  # no GPU
    if sys.platform.startswith("linux"):
        assert info["load_before"] >= 0 and info["load_after"] >= 0
        assert isinstance(info["busy"], bool)
    if info["cpu_stall"] is not None:
        assert 0 <= info["cpu_stall"] <= 1
    env = data["machine_info"]["vecreg"]
    assert env["torch_threads"] == 1 and env["malloc"]
    (case,) = load_results(path).cases  # the loader checks every new field
    assert case.info["imprecise"] is True and case.info["precision_target"] == 0.0


def test_the_cache_regime_is_warm_or_cold():
    assert plugin.parse_cache("warm") == "warm" and plugin.parse_cache("cold") == "cold"
    with pytest.raises(ValueError, match="'tepid'"):
        plugin.parse_cache("tepid")
    plugin.check_cache("warm", "cpu")
    plugin.check_cache("cold", "cuda:0")  # a name only: nothing is asked of a GPU here
    with pytest.raises(ValueError) as info:
        plugin.check_cache("cold", "cpu")
    assert "--cache cold" in str(info.value) and "cpu" in str(info.value)


def test_a_cold_cache_on_the_cpu_is_a_usage_error(capsys):
    """The harness cannot empty a CPU's caches: a regime it cannot produce is refused, not
    recorded."""
    args = [str(SUITE), "-p", "bench.plugin", "-p", "no:cacheprovider"]
    args += ["--device=cpu", "--cache=cold", "--benchmark-only"]
    assert pytest.main(args) == pytest.ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert "--cache cold" in err and "L2" in err and "--cache warm" in err


@pytest.fixture
def sweeps(monkeypatch, tmp_path):
    """The main job with its sweep stubbed: the pytest arguments it would pass are kept."""
    import types

    from bench.suite_runner import BenchmarkRunError

    calls = []

    def run_benchmarks(*args, pytest_args=(), **kwargs):
        calls.append(list(pytest_args))
        raise BenchmarkRunError("stubbed: no sweep in this test")

    fake = types.ModuleType("bench.suite_runner")
    fake.run_benchmarks, fake.BenchmarkRunError = run_benchmarks, BenchmarkRunError
    monkeypatch.setitem(sys.modules, "bench.suite_runner", fake)
    monkeypatch.chdir(tmp_path)
    return calls


def test_the_main_job_takes_the_cache_regime(sweeps, capsys):
    from bench import cli

    assert cli.main(["--device", "cpu", "--cache", "cold", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--cache" in err and "cpu" in err and err.count("\n") == 1
    assert sweeps == []  # refused before the sweep
    cli.main(["--device", "cpu", "--cache", "warm", "--no-progress", "--no-history"])
    assert sweeps == [["--cache=warm"]]
