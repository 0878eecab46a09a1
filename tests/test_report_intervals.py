"""Headlines carry their uncertainty: speedups with their 95% intervals, "~1x" where the interval
includes 1, ranks only where the medians' intervals prove them, one IQR definition, error bars on
the speedup plot, and the console summary in the same words (issue 10, item 6)."""

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import results_factory as rf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from bench import stats
from bench.problem import Problem
from bench.report import plots, tables, write_report
from bench.report.console import print_summary, text_table
from bench.results import Results

SAMPLE = Path(__file__).parent / "data" / "sample_sweep.json"
P = Problem(batch=64, dim=256, steps=10)
Q = Problem(batch=8, dim=33, steps=10)


def samples(median: float, spread: float = 0.02, n: int = 25, seed: int = 0) -> list[float]:
    """`n` log-normal samples around `median`, seeded: IQR about 1.35 x `spread` of the median."""
    rng = np.random.default_rng(seed)
    return [float(v) for v in median * np.exp(rng.normal(0.0, spread, n))]


def load(tmp_path: Path, entries: list[dict]) -> Results:
    return Results.load(rf.write(tmp_path / "results.json", rf.results(entries)))


def summary_cells(results: Results) -> dict[tuple[str, str], str]:
    view = tables.speedup_view(tables.cases_frame(results))
    return {
        (row[0], method): cell
        for row in view.rows
        for method, cell in zip(view.header[1:], row[1:], strict=True)
    }


def timing_rows(results: Results, problem: Problem) -> dict[str, dict[str, str]]:
    """method -> {column: cell} of the timing table of `problem`."""
    (table,) = [
        t for t in tables.timing_tables(tables.cases_frame(results)) if problem.name in t.title
    ]
    return {
        cells["method"]: cells
        for cells in (dict(zip(table.header, row, strict=True)) for row in table.rows)
    }


def interval_text(interval: stats.Interval) -> tuple[float, float, float]:
    return interval.estimate, interval.low, interval.high


@pytest.fixture
def mixed(tmp_path) -> Results:
    """On P: analytic clearly 2x faster than autograd, compiled within noise of it (~1x), sgd
    with 3 samples only (untested). On Q: autograd and analytic tied, compiled clearly slower."""
    return load(
        tmp_path,
        [
            rf.entry("autograd", P, samples(2e-3, seed=1)),
            rf.entry("analytic", P, samples(1e-3, seed=2)),
            rf.entry("compiled", P, samples(2.01e-3, spread=0.05, seed=3)),
            rf.entry("sgd", P, [1.8e-3, 1.9e-3, 2.0e-3]),
            rf.entry("autograd", Q, samples(1e-3, seed=4)),
            rf.entry("analytic", Q, samples(1.005e-3, seed=5)),
            rf.entry("compiled", Q, samples(1.5e-3, seed=6)),
        ],
    )


def test_a_clear_speedup_carries_its_95_percent_interval(mixed):
    cell = summary_cells(mixed)[(P.name, "analytic")]
    by_case = {c.method: c for c in mixed.cases if c.problem == P.name}
    interval = stats.ratio_interval(by_case["autograd"].samples, by_case["analytic"].samples)
    assert interval.low > 1  # a clear speedup, not one that could be 1
    match = re.fullmatch(r"(\d+\.\d+)x \[(\d+\.\d+), (\d+\.\d+)\]", cell)
    assert match, cell
    shown = [float(v) for v in match.groups()]
    assert shown == pytest.approx(list(interval_text(interval)), rel=5e-3)
    assert shown[1] < shown[0] < shown[2]
    # The timing table's speedup column says the same.
    assert timing_rows(mixed, P)["analytic"]["speedup vs autograd"] == cell


def test_a_speedup_whose_interval_includes_1_is_no_clear_difference(mixed):
    cell = summary_cells(mixed)[(P.name, "compiled")]
    assert cell.startswith("~1x [") and cell.endswith("]"), cell
    low, high = (float(v) for v in cell[len("~1x [") : -1].split(", "))
    assert low < 1 < high
    assert timing_rows(mixed, P)["compiled"]["speedup vs autograd"] == cell
    assert summary_cells(mixed)[(P.name, "autograd")] == "1x"  # the reference, no interval


def test_too_few_samples_gives_the_point_value_marked_untested(mixed):
    cell = summary_cells(mixed)[(P.name, "sgd")]
    assert re.fullmatch(r"\d\.\d+x \(untested\)", cell), cell
    row = timing_rows(mixed, P)["sgd"]
    assert row["speedup vs autograd"] == cell
    assert row["time / step"].endswith("(untested)") and row["rank"] == "—"


def test_ranks_claim_no_order_where_the_medians_intervals_overlap(mixed):
    rows = timing_rows(mixed, Q)
    assert list(rows) == ["autograd", "analytic", "compiled"]  # fastest first, by the median
    assert [r["rank"] for r in rows.values()] == ["=1", "=1", "3"]
    # Each time carries its interval's relative half-width.
    for method, row in rows.items():
        case = next(c for c in mixed.cases if c.problem == Q.name and c.method == method)
        halfwidth = stats.median_interval(case.samples).relative_halfwidth()
        assert row["time / step"].endswith(f" ±{tables.significant(100 * halfwidth, 2)}%")


def test_ranks_are_plain_where_every_interval_is_apart(mixed):
    rows = timing_rows(mixed, P)
    # analytic (1 ms) is apart from the rest; autograd and compiled overlap; sgd is untested.
    assert rows["analytic"]["rank"] == "1"
    assert rows["autograd"]["rank"] == rows["compiled"]["rank"] == "=2"
    assert tables.tie_ranks([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) == ["1", "2", "3"]
    assert "=" not in "".join(tables.tie_ranks([3.0, 1.0], [3.1, 1.1]))


def test_tie_ranks_is_a_partial_order():
    # A overlaps B, B overlaps C, A is apart from C: C is behind A, tied with B.
    assert tables.tie_ranks([1.0, 1.5, 2.2], [2.0, 2.5, 3.0]) == ["=1", "=1", "=2"]
    nan = float("nan")
    assert tables.tie_ranks([1.0, nan, 1.05], [1.1, nan, 1.2]) == ["=1", "—", "=1"]


def test_the_iqr_and_the_noisy_flag_come_from_the_samples_not_the_file(tmp_path):
    steady = rf.entry("analytic", P, [1e-3 * f for f in rf.STEADY_FACTORS])
    steady["extra_info"].update(iqr_over_median=0.5, noisy=True)  # other quartiles, other verdict
    noisy = rf.entry("autograd", P, [2e-3 * f for f in rf.NOISY_FACTORS])
    noisy["extra_info"].update(iqr_over_median=0.01, noisy=False)
    results = load(tmp_path, [steady, noisy])
    rows = timing_rows(results, P)
    assert stats.iqr_over_median(results.cases[1].samples) == pytest.approx(0.31)
    assert rows["autograd"]["flags"] == "noisy (IQR 31% of median)"
    assert rows["autograd"]["IQR"] == "31%"
    assert rows["analytic"]["flags"] == "" and rows["analytic"]["IQR"] == "2%"
    frame = tables.cases_frame(results)
    assert list(frame.noisy) == [False, True]
    assert list(frame.iqr_over_median) == pytest.approx([0.02, 0.31])


def test_the_sampler_flags_are_shown_when_present_and_absent_ones_cost_nothing(tmp_path):
    results = load(
        tmp_path, [rf.entry("autograd", P, samples(2e-3)), rf.entry("analytic", P, samples(1e-3))]
    )
    assert all(row["flags"] == "" for row in timing_rows(results, P).values())

    flagged = dataclasses.replace(
        results.cases[1],
        info={**results.cases[1].info, "imprecise": True, "busy": True, "precision": 0.034},
    )
    results = dataclasses.replace(results, cases=(results.cases[0], flagged))
    (table,) = tables.timing_tables(tables.cases_frame(results))
    row = dict(zip(table.header, table.rows[0], strict=True))
    assert row["method"] == "analytic"
    assert row["flags"] == "imprecise (ran out of time at ±3.4%); busy (the machine was loaded)"
    assert table.row_classes[0] == "imprecise busy"

    info = {**flagged.info, "precision_target": 0.02, "throttled": True, "throttled_rounds": 7}
    results = dataclasses.replace(
        results, cases=(results.cases[0], dataclasses.replace(flagged, info=info))
    )
    (table,) = tables.timing_tables(tables.cases_frame(results))
    assert table.rows[0][-1] == (
        "imprecise (ran out of time at ±3.4%, target ±2.0%); busy (the machine was loaded); "
        "throttled (7 rounds under GPU throttling kept in the samples)"
    )


def test_the_sampler_flags_in_a_file_build_a_report_whether_or_not_the_model_keeps_them(tmp_path):
    flagged = rf.entry("analytic", P, samples(1e-3), imprecise=True, busy=True, precision=0.034)
    path = rf.write(
        tmp_path / "r.json", rf.results([rf.entry("autograd", P, samples(2e-3)), flagged])
    )
    run = write_report(path, out=tmp_path / "reports")
    page = (run / "index.html").read_text(encoding="utf-8")
    kept = Results.load(path).cases[1].info.get("imprecise") is True
    assert ("imprecise (ran out of time at ±3.4%)" in page) == kept
    assert ("busy (the machine was loaded)" in page) == kept


def test_the_speedup_plot_has_error_bars_and_the_1x_line(mixed):
    frame = tables.cases_frame(mixed)
    fig = plots.speedup_figure(frame)
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    _, _, (whiskers,) = bars.lines
    spans = sorted((round(seg[0][0], 6), round(seg[1][0], 6)) for seg in whiskers.get_segments())
    with_interval = frame[frame.speedup_low.notna() & (frame.method != "autograd")]
    expected = sorted(
        zip(with_interval.speedup_low.round(6), with_interval.speedup_high.round(6), strict=True)
    )
    assert spans == expected  # one whisker per interval; the untested sgd bar has none
    assert len(spans) == 4  # analytic and compiled on P and on Q
    assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.get_lines())
    hatched = [
        p for c in ax.containers if not isinstance(c, ErrorbarContainer) for p in c if p.get_hatch()
    ]
    assert len(hatched) == 2  # no clear difference: compiled on P, analytic on Q
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "autograd = 1x" in labels


def overlaps(boxes) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]


@pytest.mark.parametrize("source", ["mixed", "sample"])
def test_the_speedup_plot_labels_do_not_overlap(mixed, source):
    results = mixed if source == "mixed" else Results.load(SAMPLE)
    fig = plots.speedup_figure(tables.cases_frame(results))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    ticks = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert len(ticks) >= 2
    assert overlaps([t.get_window_extent(renderer) for t in ticks]) == []
    texts = [ax.title, ax.xaxis.label, *ax.texts, ax.get_legend()]
    assert overlaps([t.get_window_extent(renderer) for t in texts]) == []


def test_the_console_summary_prints_the_speedups_with_intervals(mixed):
    out = io.StringIO()
    print_summary(mixed.path, None, out=out)
    lines = out.getvalue().splitlines()
    assert lines[1] == "Speedup over autograd (median time per step, with its 95% interval):"
    header = lines[2].split()
    assert header == ["problem", "autograd", "analytic", "compiled", "sgd"]
    row = next(line for line in lines if line.strip().startswith(P.name))
    cells = summary_cells(mixed)
    for method in header[1:]:
        assert cells[(P.name, method)] in row
    assert re.search(r"\d\.\d+x \[\d\.\d+, \d\.\d+\]", row)
    assert "~1x [" in row and "x (untested)" in row
    caption = " ".join(line.strip() for line in lines[5:])
    assert "95% confidence interval" in caption and "no clear difference" in caption


def test_the_console_summary_keeps_the_convergence_part():
    from bench.convergence import convergence_study

    table, _ = convergence_study("cpu", methods=["autograd"])
    out = io.StringIO()
    print_summary(SAMPLE, table, out=out)
    text = out.getvalue()
    assert "falls to 1% of its start at step 575 with lr 0.01 and step 57 with lr 0.1" in text
    assert "Convergence (the question's case, each method at each lr):" in text
    assert "original_question" in text and "~1x [" in text


def test_text_table_aligns_columns():
    table = tables.Table("t", ["a", "bb"], [["xxx", "1x"], ["y", "~1x [0.9, 1.1]"]])
    assert text_table(table, indent="").splitlines() == [
        "a                bb",
        "xxx              1x",
        "y    ~1x [0.9, 1.1]",
    ]


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory):
    return write_report(SAMPLE, out=tmp_path_factory.mktemp("reports"))


def test_the_sample_sweep_file_is_the_generator_written():
    assert json.loads(SAMPLE.read_text()) == json.loads(json.dumps(rf.sample_sweep()))


def test_summary_md_and_html_show_intervals_ties_and_one_caption(sample_report):
    summary = (sample_report / "summary.md").read_text(encoding="utf-8")
    lines = summary.splitlines()
    small = next(line for line in lines if line.startswith("| B1xD5-K1000-lr0.1-float32 |"))
    assert re.search(r"\| 3\.\d\dx \[2\.\d+, 3\.\d+\] \|", small)  # analytic
    assert "| ~1x [0." in small  # compiled: no clear difference
    assert summary.count(tables.SPEEDUP_CAPTION) == 1
    # Ties: compiled and autograd on the smallest problem, compiled and triton_step on the largest.
    assert re.search(r"^\| =4 \| compiled \| 59\.5 µs ±3\.0% \|", summary, re.M)
    assert re.search(r"^\| =4 \| autograd \| ", summary, re.M)
    assert re.search(r"^\| =2 \| triton_step \| ", summary, re.M)
    assert re.search(r"^\| =2 \| compiled \| 117 µs", summary, re.M)
    assert re.search(r"^\| 4 \| analytic \| 244 µs", summary, re.M)  # apart: no "="

    page = (sample_report / "index.html").read_text(encoding="utf-8")
    assert page.count(tables.SPEEDUP_CAPTION.replace("'", "&#x27;")) == 1
    assert '<td class="n">~1x [0.' in page and '<td class="n">=2</td>' in page
    assert re.search(r'<td class="n">3\.\d\dx \[2\.\d+, 3\.\d+\]</td>', page)
