"""The per-case fields of timing that means its label, in the results model and the report: the
event span (device_time_per_step_s in older files), the profiler's busy time and kernel counts,
the cache regime, peak memory. No timing here: synthetic results files (tests/results_factory)."""

import json

import pytest
import results_factory as rf

from bench.problem import Problem
from bench.report import tables
from bench.results import CASE_FIELDS, RENAMED_FIELDS, ResultsError, load_results

P = Problem(batch=64, dim=1024, steps=100, lr=0.1)
PER_FIT = [1e-3, 1.02e-3, 0.99e-3, 1.01e-3, 1e-3, 0.98e-3]  # seconds: 10 µs per step

CUDA_FIGURES = {
    "event_span_per_step_s": 8e-6,
    "gpu_busy_per_step_s": 3e-6,
    "kernel_launches_per_step": 4.0,
    "memory_ops_per_step": 0.02,
    "cache": "cold",
    "l2_flush_bytes": 50 * 2**20,
    "peak_memory_bytes": 3 * 2**20,
    "fit_memory_bytes": 2**20,
    "no_event_span_reason": None,
}


def cuda_entry(method, **changes):
    info = {**CUDA_FIGURES, **changes}
    entry = rf.entry(method, P, PER_FIT, device="cuda", device_name="Some GPU", **info)
    del entry["extra_info"]["device_time_per_step_s"]  # the factory writes the old name
    return entry


def load(tmp_path, entries, name="r.json"):
    return load_results(rf.write(tmp_path / name, rf.results(entries, device_name="Some GPU")))


def test_the_old_name_of_the_event_span_is_read_as_the_new_one(tmp_path):
    assert RENAMED_FIELDS == {"device_time_per_step_s": "event_span_per_step_s"}
    assert "device_time_per_step_s" not in CASE_FIELDS and "event_span_per_step_s" in CASE_FIELDS
    old = rf.entry("analytic", P, PER_FIT, device="cuda")
    old["extra_info"]["device_time_per_step_s"] = 7e-6
    (case,) = load(tmp_path, [old]).cases
    assert case.info["event_span_per_step_s"] == 7e-6
    assert "device_time_per_step_s" not in case.info
    # A bad old value is named as the file has it.
    old["extra_info"]["device_time_per_step_s"] = -1.0
    with pytest.raises(ResultsError, match=r"extra_info\.device_time_per_step_s is -1\.0"):
        load(tmp_path, [old])


def test_the_new_fields_load_and_an_older_file_lacks_them(tmp_path):
    (case,) = load(tmp_path, [cuda_entry("analytic")]).cases
    for field, value in CUDA_FIGURES.items():
        assert case.info[field] == value, field
    (older,) = load(tmp_path, [rf.entry("analytic", P, PER_FIT)], "old.json").cases
    assert all(older.info[field] is None for field in CUDA_FIGURES)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("cache", "tepid", 'extra_info.cache is "tepid"; it must be "warm" or "cold"'),
        ("gpu_busy_per_step_s", -1e-6, "extra_info.gpu_busy_per_step_s is -1e-06"),
        ("kernel_launches_per_step", "4", 'extra_info.kernel_launches_per_step is "4"'),
        ("peak_memory_bytes", 1.5, "extra_info.peak_memory_bytes is 1.5"),
        ("l2_flush_bytes", 0, "extra_info.l2_flush_bytes is 0"),
        ("no_event_span_reason", 3, "extra_info.no_event_span_reason is 3"),
    ],
)
def test_bad_new_fields_are_named(tmp_path, field, value, words):
    with pytest.raises(ResultsError) as info:
        load(tmp_path, [cuda_entry("analytic", **{field: value})])
    assert words in str(info.value)


def timing_table(tmp_path, entries):
    (table,) = tables.timing_tables(tables.cases_frame(load(tmp_path, entries)))
    return table


def test_the_report_shows_host_time_span_and_busy_time_side_by_side(tmp_path):
    jax = cuda_entry(
        "jax",
        event_span_per_step_s=None,
        peak_memory_bytes=None,
        fit_memory_bytes=None,
        no_event_span_reason="jax runs on XLA's own CUDA stream: timed by the host clock only",
    )
    table = timing_table(tmp_path, [cuda_entry("analytic"), jax])
    header = table.header
    times = ["time / step", "event span / step", "GPU busy / step", "host - busy / step"]
    assert header[2:6] == times and "kernels / step" in header
    assert "fit memory" in header and "peak memory" in header
    assert "device time / step" not in header and "L2 cache" not in header  # one regime: caption
    rows = {row[1]: dict(zip(header, row, strict=True)) for row in table.rows}
    analytic = rows["analytic"]
    assert analytic["event span / step"] == "8 µs" and analytic["GPU busy / step"] == "3 µs"
    assert analytic["host - busy / step"] == "7 µs"  # 10 µs of host time, 3 of them busy
    assert analytic["kernels / step"] == "4"
    assert (analytic["fit memory"], analytic["peak memory"]) == ("1 MiB", "3 MiB")
    assert rows["jax"]["event span / step"] == "—" and rows["jax"]["peak memory"] == "—"
    assert "no event span (jax runs on XLA's own CUDA stream" in rows["jax"]["flags"]
    caption = table.caption
    assert "idle gaps between launches" in caption
    assert "launch overhead" in caption and "L2 cache: cold (a buffer of 50 MiB" in caption


def test_a_run_mixing_regimes_gets_a_cache_column(tmp_path):
    warm = cuda_entry("analytic", cache="warm", l2_flush_bytes=None)
    table = timing_table(tmp_path, [warm, cuda_entry("autograd")])
    rows = {row[1]: dict(zip(table.header, row, strict=True)) for row in table.rows}
    assert rows["analytic"]["L2 cache"] == "warm" and rows["autograd"]["L2 cache"] == "cold"
    assert "L2 cache:" not in table.caption


def test_a_cpu_table_says_nothing_of_spans_busy_time_or_memory(tmp_path):
    table = timing_table(tmp_path, [rf.entry("analytic", P, PER_FIT, cache="warm")])
    for column in ("event span / step", "GPU busy / step", "kernels / step", "peak memory"):
        assert column not in table.header
    assert "Three times per step" not in table.caption
    assert "L2 cache: warm" in table.caption


def test_the_csv_columns_carry_the_new_fields(tmp_path):
    frame = tables.cases_frame(load(tmp_path, [cuda_entry("analytic")]))
    row = frame.iloc[0]
    assert row.cache == "cold" and row.gpu_busy_per_step_s == pytest.approx(3e-6)
    assert row.peak_memory_bytes == 3 * 2**20 and row.event_span_per_step_s == 8e-6
    assert json.loads(frame.to_json(orient="records"))[0]["no_event_span_reason"] is None


def test_the_environment_table_shows_the_l2_size(tmp_path):
    data = rf.results([cuda_entry("analytic")], device_name="Some GPU")
    data["machine_info"]["vecreg"]["l2_cache_bytes"] = 50 * 2**20
    table = tables.environment_table(load_results(rf.write(tmp_path / "r.json", data)), "r.json")
    assert ["L2 cache", "50 MiB"] in table.rows
