"""Build one report directory from a results file and publish it, with `latest` pointing at it.

The report is written into a hidden staging folder and published whole (bench.report.publish): an
interrupted or failed build leaves the previous reports and `latest` as they were.
"""

from __future__ import annotations

import datetime as dt
import errno
import shutil
from pathlib import Path

import pandas as pd

from bench.baseline import device_slug
from bench.report import html, plots, tables
from bench.report.publish import point_latest, publish, staging_folder
from bench.results import NOISY_IQR_OVER_MEDIAN, Results
from bench.stats import MIN_SAMPLES

DEFAULT_OUT = Path("reports")


def write_report(
    results: Path,
    out: Path | None = None,
    baseline: Path | None = None,
    convergence: pd.DataFrame | None = None,
    traces: pd.DataFrame | None = None,
) -> Path:
    """Write `out/<run-id>/` (index.html, CSV and Markdown tables, plots, the results JSON) and
    point `out/latest` at it; return the run directory. ResultsError for an unusable file.

    The convergence study is the one saved in the results file unless `convergence` and `traces`
    are given, so a report rebuilt from the file alone is the same report."""
    results = Path(results)
    data = Results.load(results)
    base = Results.load(baseline) if baseline is not None else None
    if convergence is None and data.convergence is not None:
        convergence, traces = data.convergence.table(), data.convergence.traces_frame()
    out = make_folder(DEFAULT_OUT if out is None else Path(out))
    run_id = make_run_id(data)
    with staging_folder(out, run_id) as staging:  # first cleans what killed builds left
        build(staging, run_id, data, base, convergence, traces)
        target = publish(staging, out, run_id)
    point_latest(out, run_id)
    return target


def make_run_id(results: Results) -> str:
    """When the results were measured and on what: 20261125-140312-nvidia-h100-80gb-hbm3."""
    when = results.measured_at or dt.datetime.fromtimestamp(
        results.path.stat().st_mtime, tz=dt.timezone.utc
    )
    slug = device_slug(results.device_name)[:40].strip("-")
    return f"{when:%Y%m%d-%H%M%S}-{slug}"


def build(
    folder: Path,
    run_id: str,
    data: Results,
    baseline: Results | None,
    convergence: pd.DataFrame | None,
    traces: pd.DataFrame | None,
) -> None:
    """Every file of the report, into `folder`."""
    results = data.path
    shutil.copyfile(results, folder / "results.json")
    cases = tables.cases_frame(data)
    cases.to_csv(folder / "timing.csv", index=False)

    timing = tables.timing_tables(cases)
    missing = tables.not_measured_table(data)
    summary_table = tables.speedup_view(cases)
    timing_notes = [] if timing else ["No timings in this results file."]
    if not data.complete:
        timing_notes.insert(
            0,
            f"This run is INCOMPLETE: it was interrupted ({data.progress()}) or never marked "
            "complete. Its cases are what was measured before it stopped.",
        )

    convergence_tables, convergence_notes = [], []
    if convergence is not None and not convergence.empty:
        convergence.to_csv(folder / "convergence.csv", index=False)
        convergence_tables.append(tables.convergence_view(convergence))
    else:
        convergence_notes.append(
            "No convergence study in this report: `python -m bench` runs one with the sweep."
        )

    comparison_section, comparison_markdown = None, ""
    if baseline is not None:
        shutil.copyfile(baseline.path, folder / "baseline.json")
        comparison_section, comparison_markdown = _comparison(baseline, data)

    figures = [
        (
            "convergence",
            "Distance against iteration",
            lambda: plots.convergence_figure(traces) if traces is not None else None,
            "The question's case at each lr. Thick grey: the closed form; thin lines: each method "
            "(all overlap when correct). Log scale; the x range stops where the closed form falls "
            "to 1e-18 of its start; past the dtype's resolution a fit sits at its rounding floor.",
        ),
        (
            "time_per_step",
            "Time per step against problem size",
            lambda: plots.time_figure(cases),
            "Median host time of one fit divided by K, log-log; one line per method (the median "
            "over problems of the same size). Flat on the left: launch-bound; rising on the right: "
            "memory-bound.",
        ),
        (
            "speedup",
            "Speedup over autograd",
            lambda: plots.speedup_figure(cases),
            "Autograd's median time per step over each method's, per problem; log scale. "
            "Whiskers: the 95% interval of that ratio. Hatched bars: the interval includes 1 "
            "(the dashed line), no clear difference from autograd. Faded bars, without whiskers: "
            f"fewer than {MIN_SAMPLES} samples on a side (untested).",
        ),
        (
            "bandwidth",
            "Fraction of copy bandwidth",
            lambda: plots.bandwidth_figure(cases),
            "Effective bandwidth (3 x itemsize x B x D bytes per step: read x and t, write x) over "
            "a device-to-device copy of the same bytes measured in the same run; the black line "
            "at 1 is that roof for a method that moves the bytes every step.",
        ),
    ]
    images = []
    for name, title, draw, caption in figures:
        fig = draw()
        if fig is None:
            continue
        if name == "bandwidth":
            one_pass = sorted(set(cases.method) & set(plots.ONE_PASS_METHODS))
            if one_pass:
                caption += " " + plots.ONE_PASS_NOTE.format(names=", ".join(one_pass))
        images.append(html.Plot(title, plots.save(fig, folder / f"{name}.png"), caption))

    environment = tables.environment_table(data, results.name)
    sections = []
    if summary_table is not None:
        sections.append(html.Section("Summary", "summary", [summary_table], [], []))
    sections.append(
        html.Section(
            "Timing",
            "timing",
            [*timing, *([missing] if missing else [])],
            [],
            [
                *timing_notes,
                f"Rows marked yellow are noisy (IQR above {NOISY_IQR_OVER_MEDIAN:.0%} of the "
                "median), imprecise (out of time before the median was known to the precision "
                "asked for), measured while the machine was busy or with GPU throttling in the "
                "samples: do not trust their time. "
                "Rows marked red failed the oracle check: the time is not of a correct fit. "
                "Methods are listed fastest first, but ranked only where the 95% intervals of "
                "their medians do not overlap (=: no order claimed).",
            ],
        )
    )
    sections.append(
        html.Section("Convergence", "convergence", convergence_tables, [], convergence_notes)
    )
    if comparison_section is not None:
        sections.append(comparison_section)
    sections.append(html.Section("Plots", "plots", [], images, [] if images else ["No plots."]))

    title = f"vecreg-bench report: {data.device_name}"
    built = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"Run {run_id}, from {results.name}; report built {built}."
    (folder / "index.html").write_text(
        html.page(title, subtitle, environment, sections), encoding="utf-8"
    )

    markdown = [f"# {title}", "", subtitle, ""]
    everything = [environment]
    if summary_table is not None:
        everything.append(summary_table)
    everything += timing + ([missing] if missing else []) + convergence_tables
    markdown += [tables.markdown(t) for t in everything]
    if comparison_markdown:
        markdown += ["### Comparison with the baseline", "", comparison_markdown]
    markdown += [f"![{p.title}]({p.path.name})\n" for p in images]
    (folder / "summary.md").write_text("\n".join(markdown), encoding="utf-8")


def _comparison(baseline: Results, results: Results) -> tuple[html.Section, str]:
    """The baseline comparison from bench.compare, or a note saying why there is none."""
    title, anchor = "Comparison with the baseline", "comparison"
    try:
        from bench.compare import compare
    except ImportError as exc:
        note = f"Comparison skipped: bench.compare is not available here ({exc})."
        return html.Section(title, anchor, [], [], [note]), note
    try:
        comparison = compare(baseline, results)
    except ValueError as exc:
        note = f"Comparison not made: {exc}"
        return html.Section(title, anchor, [], [], [note]), note
    view = tables.frame_view(
        comparison.summary_frame(),
        f"{results.path.name} against {baseline.path.name}",
        f"Threshold {comparison.threshold:.0%}, alpha {comparison.alpha:g}; medians of seconds "
        "per fit. Every figure per case: python -m bench compare BASELINE CANDIDATE.",
    )
    notes = comparison.summary_lines()
    return html.Section(title, anchor, [view], [], notes), comparison.to_markdown()


def make_folder(folder: Path) -> Path:
    """`folder`, made if needed; NotADirectoryError (an OSError) where a file stands in its way."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
