"""The trend page of `python -m bench history report`: one self-contained HTML page
(bench.report.html: inline CSS, images as data URIs, no scripts), published atomically as
`out/trend/`.

Per device and problem, one figure with one small panel per method: the median time per step of
each run against its commit, the run's 95% interval of the median as a band, each segment's level
as a dashed line, and the change points as vertical lines labelled with their first commit (red: a
slowdown beyond the threshold that fails the check; green: accepted; amber: a slowdown undone
since; grey: any other change). Then the table of every change found and the acceptances.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bench.compare import format_seconds
from bench.history import (
    MIN_SEGMENT,
    PENALTY_FACTOR,
    Acceptance,
    CaseHistory,
    Change,
    DeviceHistory,
)
from bench.report import html
from bench.report.publish import publish, staging_folder
from bench.report.tables import Table

NAME = "trend"
DPI = 100
STATUS_COLOURS = {
    "SLOWDOWN": "#cf222e",
    "accepted": "#1a7f37",
    "undone": "#bf8700",
    "improvement": "#57606a",
    "change": "#57606a",
}
MAX_TICKS = 16  # commit labels on one axis; the others are left out, evenly


def write_trend(
    histories: list[DeviceHistory],
    out: Path,
    threshold: float,
    acceptances: list[Acceptance],
) -> Path:
    """Build the trend page in a staging folder of `out` and publish it as `out/trend/`."""
    out.mkdir(parents=True, exist_ok=True)
    with staging_folder(out, NAME) as staging:
        build(staging, histories, threshold, acceptances)
        return publish(staging, out, NAME)


def build(
    folder: Path, histories: list[DeviceHistory], threshold: float, acceptances: list[Acceptance]
) -> None:
    from bench.report.plots import palette

    sections = [_changes_section(histories, threshold)]
    if acceptances:
        sections.append(_accepted_section(acceptances))
    for dev in histories:
        colours = palette(sorted({c.method for c in dev.cases}))
        for (problem, device), cases in _by_problem(dev.cases).items():
            fig = problem_figure(cases, colours)
            name = _file_name(f"{dev.slug}-{problem}-{device}")
            fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
            plot = html.Plot(
                f"{problem} on {device}, {dev.device_name}",
                folder / name,
                "Median time per step of each run (dots) against its commit, in commit order; "
                "band: the run's 95% interval of the median; dashed: each segment's level. "
                "Vertical lines: change points, labelled with the first commit after them (red: "
                "a slowdown that fails the check, green: accepted, amber: undone since, grey: "
                "other changes).",
            )
            sections.append(
                html.Section(
                    f"{dev.slug}: {problem} ({device})",
                    _file_name(f"{dev.slug}-{problem}-{device}")[:-4],
                    [],
                    [plot],
                    [],
                )
            )
    changes = sum(len(d.changes) for d in histories)
    failing = sum(c.failing for d in histories for c in d.changes)
    title = "vecreg-bench trend"
    built = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"{sum(len(d.runs) for d in histories)} runs on {len(histories)} device(s); "
        f"{changes} change point(s), {failing} unacknowledged slowdown(s) beyond "
        f"{threshold:.0%}; page built {built}."
    )
    (folder / "index.html").write_text(
        html.page(title, subtitle, _history_table(histories, threshold), sections),
        encoding="utf-8",
    )


def _by_problem(cases: list[CaseHistory]) -> dict[tuple[str, str], list[CaseHistory]]:
    from bench.report.tables import method_order

    groups: dict[tuple[str, str], list[CaseHistory]] = {}
    for case in cases:
        groups.setdefault((case.problem, case.device), []).append(case)
    for key, group in groups.items():
        order = {m: i for i, m in enumerate(method_order([c.method for c in group]))}
        groups[key] = sorted(group, key=lambda c: (order.get(c.method, len(order)), c.dtype))
    return dict(sorted(groups.items()))


def _file_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in text.lower()) + ".png"


def problem_figure(cases: list[CaseHistory], colours: dict) -> Figure:
    """One small panel per method of one problem: time per step against commit."""
    ncols = min(3, len(cases))
    nrows = math.ceil(len(cases) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(cases) :]:
        ax.set_visible(False)
    for ax, case in zip(axes, cases, strict=False):
        _panel(ax, case, colours.get(case.method, "C0"))
    return fig


def _panel(ax, case: CaseHistory, colour) -> None:
    x = np.arange(len(case.runs))
    per_step = case.median_s / case.steps
    ax.fill_between(
        x, case.low_s / case.steps, case.high_s / case.steps, color=colour, alpha=0.25, lw=0
    )
    ax.plot(x, per_step, "o-", color=colour, ms=3, lw=1)
    for start, end in case.segments:
        level = float(np.median(per_step[start:end]))
        ax.hlines(level, start - 0.4, end - 0.6, colors="0.25", linestyles="dashed", lw=0.9)
    for change in case.changes:
        _mark(ax, change)
    title = case.method + ("" if case.problem.endswith(case.dtype) else f" ({case.dtype})")
    ax.set_title(title, fontsize=10)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_seconds(v) if v > 0 else ""))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.tick_params(labelsize=7)
    every = max(1, math.ceil(len(x) / MAX_TICKS))
    ax.set_xticks(x[::every], [r.short for r in case.runs][::every], rotation=90, fontsize=6)
    ax.set_xlim(-0.6, len(x) - 0.4)
    ax.set_ylabel("time per step", fontsize=8)
    ax.grid(axis="y", color="0.9", lw=0.6)


def _mark(ax, change: Change) -> None:
    colour = STATUS_COLOURS[change.status]
    where = change.index - 0.5
    ax.axvline(where, color=colour, lw=1.6, alpha=0.9)
    ax.annotate(
        change.commit[:7],
        xy=(where, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(2, -2),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=7,
        color=colour,
        fontweight="bold",
    )


def _history_table(histories: list[DeviceHistory], threshold: float) -> Table:
    rows = []
    for dev in histories:
        commits = dev.commits
        rows.append(
            [
                dev.slug,
                f"{dev.device_name}: {len(dev.runs)} runs of {len(commits)} commits "
                f"({commits[0][:7]}..{commits[-1][:7]}), {len(dev.cases)} cases, ordered "
                f"{dev.ordering}; history in {dev.folder}",
            ]
        )
    rows.append(
        [
            "detector",
            f"PELT (ruptures, l2 cost) on the log of the per-run medians; penalty "
            f"{PENALTY_FACTOR:g} sigma^2 ln n, sigma the runs' noise; segments of at least "
            f"{MIN_SEGMENT} runs",
        ]
    )
    rows.append(
        [
            "verdict",
            f"95% interval of the ratio of per-run medians after / before; a slowdown beyond "
            f"{threshold:.0%} when it lies wholly above {1 + threshold:g}",
        ]
    )
    return Table("History", ["", ""], rows)


def _changes_section(histories: list[DeviceHistory], threshold: float) -> html.Section:
    header = [
        "device",
        "case",
        "first commit after",
        "run",
        "before / step",
        "after / step",
        "ratio [95%]",
        "verdict",
        "status",
    ]
    rows, classes = [], []
    for dev in histories:
        for change in dev.changes:
            r = change.ratio
            status = change.status
            if change.accepted is not None:
                status += f": {change.accepted.reason}"
            elif change.undone_at:
                status += f" at {change.undone_at[:7]}"
            rows.append(
                [
                    dev.slug,
                    change.case,
                    change.commit[:12],
                    f"{change.index + 1} of {change.runs}",
                    format_seconds(change.before_s),
                    format_seconds(change.after_s),
                    f"{r.estimate:.3g} [{r.low:.3g}, {r.high:.3g}]",
                    change.verdict,
                    status,
                ]
            )
            classes.append("bad" if change.failing else ("muted" if not change.slowdown else ""))
    notes = [] if rows else ["No change point in any case."]
    table = Table(
        "Change points",
        header,
        rows,
        classes,
        f"Red: a slowdown beyond {threshold:.0%} that is neither accepted nor undone; it fails "
        "`python -m bench history check`. Grey: changes that are not slowdowns.",
    )
    return html.Section("Changes", "changes", [table] if rows else [], [], notes)


def _accepted_section(acceptances: list[Acceptance]) -> html.Section:
    rows = [
        [a.case, a.commit[:12], a.device or "all", a.reason, a.accepted_at, a.path.name]
        for a in acceptances
    ]
    table = Table(
        "Accepted changes",
        ["case", "commit", "device", "reason", "accepted at", "file"],
        rows,
        caption="Written by python -m bench history accept; kept in the history folder.",
    )
    return html.Section("Accepted", "accepted", [table], [], [])
