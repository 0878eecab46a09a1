"""The results model: one place reads and checks a results file; every command gets its verdict."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import results_factory as rf

from bench.baseline import newest_results
from bench.cli import main
from bench.problem import Problem
from bench.results import ResultsError, add_convergence, load_results

P = Problem(batch=4, dim=8, steps=10)


def test_a_results_file_loads_into_the_model(tmp_path):
    path = rf.write(tmp_path / "r.json", rf.results([rf.entry("analytic", P, [1.0, 1.1, 0.9])]))
    results = load_results(path)
    (case,) = results.cases
    assert case.key == ("analytic", P.name, "float32", "cpu")
    assert case.samples.tolist() == [1.0, 1.1, 0.9]
    assert not case.samples.flags.writeable
    assert case.oracle_ok is True and case.info["batch"] == 4
    assert results.device_name == "Test CPU"
    assert results.complete and results.progress() == "1 of 1 cases"
    assert results.commit.id == "0" * 40 and results.measured_at.year == 2026


def test_a_run_not_marked_complete_is_incomplete(tmp_path):
    data = rf.results([rf.entry("analytic", P, [1.0])])
    del data["vecreg"]["complete"]
    assert not load_results(rf.write(tmp_path / "r.json", data)).complete
    data["vecreg"].update(complete=False, cases_total=5, cases_done=2)
    results = load_results(rf.write(tmp_path / "r.json", data))
    assert not results.complete and results.progress() == "2 of 5 cases"


def test_the_device_name_comes_from_the_cases_where_the_environment_has_none(tmp_path):
    data = rf.results([rf.entry("analytic", P, [1.0], device_name="Some GPU")])
    del data["machine_info"]["vecreg"]["device_name"]
    assert load_results(rf.write(tmp_path / "r.json", data)).device_name == "Some GPU"


@pytest.mark.parametrize("name", rf.BAD_FILES)
def test_bad_files_get_one_line_naming_the_file_and_field(tmp_path, name):
    path, words = rf.write_bad(tmp_path, name)
    with pytest.raises(ResultsError) as info:
        load_results(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


# Every command that reads a results file, with the bad file in each position it can take.
def _commands(bad, good, tmp_path):
    out = str(tmp_path / "out")
    return {
        "report": ["report", bad, "--out", out],
        "report --baseline": ["report", good, "--baseline", bad, "--out", out],
        "compare baseline": ["compare", bad, good],
        "compare candidate": ["compare", good, bad],
        "baseline save": ["baseline", "save", bad, "--reports", str(tmp_path / "reports")],
    }


COMMANDS = ("report", "report --baseline", "compare baseline", "compare candidate", "baseline save")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", rf.BAD_FILES)
def test_every_command_refuses_a_bad_file_with_exit_2_and_one_line(tmp_path, capsys, name, command):
    good = str(rf.write(tmp_path / "good.json", rf.results([rf.entry("analytic", P, [1.0])])))
    bad, words = rf.write_bad(tmp_path, name)
    assert main(_commands(str(bad), good, tmp_path)[command]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and words in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "reports" / "baselines").exists()


def test_a_million_samples_per_case_compare_in_bounded_memory(tmp_path, capsys):
    import tracemalloc

    rng = np.random.default_rng(0)
    many = (1e-3 * (1 + 0.01 * rng.standard_normal(1_000_000))).tolist()
    base = rf.write(tmp_path / "base.json", rf.results([rf.entry("analytic", P, many)]))
    few = [1.5e-3, 1.51e-3, 1.49e-3, 1.5e-3, 1.52e-3]
    cand = rf.write(tmp_path / "cand.json", rf.results([rf.entry("analytic", P, few)]))
    tracemalloc.start()
    try:
        code = main(["compare", str(base), str(cand)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1 and "REGRESSION" in capsys.readouterr().out
    assert peak < 1 * 2**30  # a bootstrap of a million samples 10,000 times would take 75 GiB


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, monkeypatch, capsys):
    import bench.results

    path = rf.write(tmp_path / "r.json", rf.results([rf.entry("analytic", P, [1.0])]))
    monkeypatch.setattr(bench.results, "MAX_FILE_BYTES", 100)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "MiB are refused" in capsys.readouterr().err


def test_the_convergence_study_travels_in_the_results_file(tmp_path):
    from bench.convergence import STUDY_COLUMNS

    path = rf.write(tmp_path / "r.json", rf.results([rf.entry("analytic", P, [1.0])]))
    table = pd.DataFrame(
        [
            ["analytic", 0.1, "converged", "converged", 57, 200, 1e-9, 1e-7, 1e-6, ""],
            ["analytic", 6.0, "diverged", "diverged", None, None, math.inf, math.nan, 0.1, "x"],
        ],
        columns=list(STUDY_COLUMNS),
    ).assign(device="cpu")
    traces = pd.DataFrame(
        {"method": "analytic", "lr": 6.0, "step": [1, 0, 2], "distance": [4.0, 1.0, math.inf]}
    )
    before = path.read_text()
    add_convergence(path, table, traces)
    json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no inf, no NaN
    study = load_results(path).convergence
    back = study.table()
    assert back.step_to_1pct.tolist()[0] == 57 and pd.isna(back.step_to_1pct[1])
    assert back.final_distance[1] == math.inf and math.isnan(back.max_abs_err_x[1])
    assert back.note.tolist() == ["", "x"] and back.device.tolist() == ["cpu", "cpu"]
    curve = study.traces_frame()
    assert curve.distance.tolist() == [1.0, 4.0, math.inf] and curve.step.tolist() == [0, 1, 2]
    assert json.loads(before)["benchmarks"] == json.loads(path.read_text())["benchmarks"]


def test_the_default_baseline_is_the_newest_complete_measurement(tmp_path):
    reports = tmp_path / "reports"
    (reports / "results").mkdir(parents=True)

    def run(name, when, complete=True, folder="results"):
        data = rf.results([rf.entry("analytic", P, [1.0])])
        data["datetime"] = when
        data["vecreg"]["complete"] = complete
        (reports / folder).mkdir(exist_ok=True)
        return rf.write(reports / folder / name, data)

    older = run("a.json", "2026-11-24T00:00:00+00:00")
    run("b.json", "2026-11-25T00:00:00+00:00", complete=False)  # newer, but interrupted
    run("results.json", "2026-11-26T00:00:00+00:00", folder="20261126-000000-test-cpu")
    (reports / "results" / "broken.json").write_text("{")
    assert newest_results(reports) == older
    (reports / "results" / "a.json").unlink()
    with pytest.raises(ResultsError, match="no complete results file"):
        newest_results(reports)


def test_baseline_save_refuses_an_interrupted_run(tmp_path, capsys):
    data = rf.results([rf.entry("analytic", P, [1.0])])
    data["vecreg"].update(complete=False, cases_total=5, cases_done=2)
    path = rf.write(tmp_path / "partial.json", data)
    assert main(["baseline", "save", str(path), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert "not a complete run (2 of 5 cases" in err and err.count("\n") == 1
    assert not (tmp_path / "reports" / "baselines").exists()
