"""The benchmark plugin: options, filters, bookkeeping; a plain pytest skips the suite."""

import pytest
import results_factory as rf
import torch

from bench import plugin
from bench.methods import METHODS
from bench.problem import DTYPES, Problem
from bench.suite_runner import SUITE
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
    ],
)
def test_bad_option_values_are_usage_errors_that_name_them(option, words, capsys):
    args = [str(SUITE), "-p", "bench.plugin", "-p", "no:cacheprovider", option]
    assert pytest.main(args) == pytest.ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    for word in words:
        assert word in err
