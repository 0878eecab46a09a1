"""The scaling page of `python -m bench scale`: from its results file alone (scale.json, read by
the results model), one self-contained HTML page with the scaling table (time per fit, speedup
over one rank and efficiency, each with its 95% interval) and one plot (speedup against ranks per
method and problem, the ideal line, the intervals as error bars).

The page is built in a staging folder and published whole as `<out>/scaling/`
(bench.report.publish): a reader finds the previous page or the new one, never half of one.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.problem import Problem
from bench.report import html, plots, tables
from bench.report.publish import publish, staging_folder
from bench.results import Results

PAGE = "scaling"  # the published folder's name in --out
PLOT_CAPTION = (
    "Speedup over 1 rank against ranks, one line per method, one panel per scaling and sweep "
    "problem. Strong scaling (B fixed): t1 / tn. Weak scaling (each rank holds the sweep "
    "problem's rows, B = those x ranks): n t1 / tn, the gain in rows fitted per second. Dashed: "
    "the ideal, speedup = ranks (efficiency 100%). Error bars: the 95% interval of each speedup "
    "(none where a side has fewer than 5 samples)."
)


def scaling_rows(results: Results) -> list[dict[str, Any]]:
    """The table's rows (bench.scale.scaling_rows) from the results model's cases: those of a
    scale run (they have `ranks`), with the problem each fitted and its samples."""
    from bench.scale import scaling_rows as rows_of

    cases = []
    for case in results.cases:
        info = dict(case.info)
        if info.get("ranks") is None:
            continue  # not a scale run's case
        fitted = Problem(
            batch=info["batch"],
            dim=info["dim"],
            steps=info["steps"],
            lr=info["lr"],
            dtype=info["dtype"],
        )
        info.update(
            problem=fitted.name,
            sweep_problem=info.get("sweep_problem") or fitted.name,
            scaling=info.get("scaling") or "strong",
            samples_s=case.samples.tolist(),
        )
        cases.append(info)
    return rows_of(cases)


def table(rows: list[dict[str, Any]]) -> tables.Table:
    from bench.scale import HEADERS, row_texts

    return tables.Table(
        title="Scaling",
        header=list(HEADERS),
        rows=[row_texts(row) for row in rows],
        row_classes=["bad" if row.get("oracle_ok") is False else "" for row in rows],
        caption="Time per fit: the slowest rank's per round, median with its 95% interval. "
        "Speedup over the same method, problem and scaling on 1 rank with its 95% interval; "
        "efficiency = speedup / ranks (weak scaling: t1 / tn).",
    )


def speedup_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Speedup against ranks: a panel per (scaling, sweep problem), a line per method, the ideal
    (speedup = ranks) dashed, error bars for the 95% intervals."""
    data = [r for r in rows if r.get("speedup") is not None and math.isfinite(r["speedup"])]
    if not data:
        return None
    panels = sorted(
        {(r["scaling"], r["sweep_problem"]) for r in data}, key=lambda p: (p[0] != "strong", p)
    )
    colours = plots.palette(sorted({r["method"] for r in data}))
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.0 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (scaling, problem) in zip(axes, panels, strict=False):
        shown = [r for r in data if (r["scaling"], r["sweep_problem"]) == (scaling, problem)]
        counts = sorted({r["ranks"] for r in shown})
        ax.plot(counts, counts, color="black", ls="--", lw=1)
        for method, colour in colours.items():
            line = sorted((r for r in shown if r["method"] == method), key=lambda r: r["ranks"])
            if not line:
                continue
            x = [r["ranks"] for r in line]
            y = [r["speedup"] for r in line]
            ax.plot(x, y, marker="o", color=colour, lw=1.5)
            bars = [r for r in line if math.isfinite(r["speedup_low"]) and r["ranks"] > 1]
            if bars:
                ax.errorbar(
                    [r["ranks"] for r in bars],
                    [r["speedup"] for r in bars],
                    yerr=[
                        [max(r["speedup"] - r["speedup_low"], 0.0) for r in bars],
                        [max(r["speedup_high"] - r["speedup"], 0.0) for r in bars],
                    ],
                    fmt="none",
                    ecolor=colour,
                    elinewidth=1,
                    capsize=3,
                )
        ax.set_xticks(counts)
        ax.set_xlim(0.8, counts[-1] * 1.05 + 0.2)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("ranks")
        if scaling == "weak":
            rows_per_rank = shown[0]["rows_per_rank"]
            ax.set_ylabel("scaled speedup  n t1 / tn")
            ax.set_title(
                f"weak scaling: {rows_per_rank} rows per rank\n({problem}, B = that x ranks)",
                fontsize=9,
            )
        else:
            ax.set_ylabel("speedup over 1 rank  t1 / tn")
            ax.set_title(f"strong scaling: {problem}", fontsize=9)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", lw=1.5, label=m) for m, c in colours.items()]
    handles.append(Line2D([], [], color="black", ls="--", lw=1, label="ideal: speedup = ranks"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    fig.suptitle("Speedup over 1 rank, with 95% intervals", fontsize=11)
    return fig


def notes(results: Results, rows: list[dict[str, Any]]) -> list[str]:
    measured = [r for r in rows if not r.get("skipped")]
    first = measured[0] if measured else {}
    lines = [
        f"Device {results.device_name}, backend {first.get('backend', '?')}, "
        f"{first.get('threads_per_rank', '?')} torch threads per rank in the first case; "
        f"sweep {results.sweep or '?'}; {results.progress()}.",
        "Each round: a barrier, then on every rank its sharded fit (its rows' K steps, the "
        "trace's all-reduce, a wait for its device), timed on the host; the round's time is "
        "the slowest rank's. Rows marked red disagreed with the closed form.",
    ]
    if not results.complete:
        lines.insert(0, f"This run is INCOMPLETE ({results.progress()}).")
    lines += [f"{n.method} on {n.problem}: {n.status}: {n.reason}" for n in results.not_measured]
    return lines


def write_page(results_path: Path, out: Path) -> Path:
    """`out/scaling/index.html` (with speedup.png and the results file beside it), published in
    one atomic step; returns the page."""
    results = Results.load(results_path)
    rows = scaling_rows(results)
    with staging_folder(out, PAGE) as staging:
        shutil.copyfile(results_path, staging / "results.json")
        images = []
        fig = speedup_figure(rows)
        if fig is not None:
            path = plots.save(fig, staging / "speedup.png")
            images.append(html.Plot("Speedup against ranks", path, PLOT_CAPTION))
        sections = [
            html.Section("Scaling", "scaling", [table(rows)], [], notes(results, rows)),
            html.Section("Plot", "plot", [], images, [] if images else ["Nothing to plot."]),
        ]
        built = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        title = f"vecreg-bench scaling: {results.device_name}"
        subtitle = f"From {results_path.name}; page built {built}."
        environment = tables.environment_table(results, results_path.name)
        page = html.page(title, subtitle, environment, sections)
        (staging / "index.html").write_text(page, encoding="utf-8")
        target = publish(staging, out, PAGE)
    return target / "index.html"
