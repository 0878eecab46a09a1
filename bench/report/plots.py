"""The report's figures, drawn with seaborn on matplotlib Figures (no pyplot, no display needed).

Each function takes tidy frames and returns a Figure, or None when the data has nothing to show.
One colour per method in every figure: `palette(methods)`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from bench.convergence import CLOSED_FORM, ORIGINAL_QUESTION, regime
from bench.report.tables import BASELINE_METHOD, METHOD_ORDER
from bench.stats import MIN_SAMPLES

# Methods that do several steps per pass over memory (triton_fused all K, compiled_fused a chunk);
# their bytes-per-step figure is not a per-step traffic, so they can sit above the copy roof.
ONE_PASS_METHODS = ("triton_fused", "compiled_fused")
ONE_PASS_NOTE = (
    "* {names}: move x and t once for several steps (triton_fused: all K, x in registers; "
    "compiled_fused: a chunk of C), while the figure counts 3 x itemsize x B x D bytes for "
    "every step, so they can rise above the copy roof."
)
DPI = 110
# How speedup bars without a clear difference from autograd, or without an interval, look.
UNCLEAR_HATCH, UNCLEAR_EDGE = "///", "0.25"
UNTESTED_ALPHA = 0.4
FLOAT32_MAX = float(np.finfo(np.float32).max)


def palette(methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed colour per known name (METHOD_ORDER), so a method looks the same in every figure
    and every report; other names get colours of their own, in sorted order."""
    fixed = dict(zip(METHOD_ORDER, sns.color_palette("tab10", len(METHOD_ORDER)), strict=True))
    others = sorted(set(methods) - set(fixed))
    extra = dict(zip(others, sns.color_palette("husl", len(others)), strict=True))
    return {m: fixed[m] for m in METHOD_ORDER if m in methods} | {m: extra[m] for m in others}


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def convergence_figure(traces: pd.DataFrame) -> Figure | None:
    """Distance against iteration (log y), one panel per lr, every method over the closed form."""
    if traces is None or traces.empty:
        return None
    data = traces[np.isfinite(traces.distance) & (traces.distance > 0)]
    lrs = sorted(traces.lr.unique())
    methods = [m for m in data.method.unique() if m != CLOSED_FORM]
    colours = palette(methods)
    ncols = min(3, len(lrs))
    nrows = math.ceil(len(lrs) / ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(lrs) :]:
        ax.set_visible(False)
    for ax, lr in zip(axes, lrs, strict=False):
        closed = traces[(traces.method == CLOSED_FORM) & (traces.lr == lr)]
        start = float(closed.distance.iloc[0]) if len(closed) else float(data.distance.max())
        # Below 1e-18 of the start every dtype is at its rounding floor; above float32's largest
        # value every trace (float32) has overflowed, while the float64 closed form goes on.
        bottom, top = start * 1e-18, FLOAT32_MAX
        shown = data[(data.lr == lr) & (data.distance >= bottom) & (data.distance <= top)]
        # Stop the x axis soon after the closed form leaves the drawn range.
        leave = closed[(closed.distance < bottom) | (closed.distance > top)].step
        steps = int(traces[traces.lr == lr].step.max()) + 1
        right = steps if leave.empty else min(steps, max(20, int(1.5 * leave.iloc[0])))
        drawn = closed[(closed.distance >= bottom) & (closed.distance <= top)]
        ax.plot(drawn.step, drawn.distance, color="0.6", lw=5, alpha=0.5, solid_capstyle="round")
        lines = shown[shown.method != CLOSED_FORM]
        if not lines.empty:
            sns.lineplot(
                data=lines,
                x="step",
                y="distance",
                hue="method",
                style="method",
                palette=colours,
                hue_order=[m for m in colours if m in set(lines.method)],
                estimator=None,
                errorbar=None,
                lw=1.3,
                legend=False,
                ax=ax,
            )
        if len(drawn) <= 2:  # lr = D / 2: on the target after one step, 0 is off a log axis
            ax.plot(drawn.step, drawn.distance, "o", color="0.4")
            ax.set_ylim(bottom, start * 10)
            fits_zero = len(lines) <= len(set(lines.method))
            ax.annotate(
                "exactly 0 from step 1 on\n(one step lands on t)\n"
                + ("closed form and every fit" if fits_zero else "closed form"),
                (0.5, 0.5),
                xycoords="axes fraction",
                ha="center",
                fontsize=8,
            )
        elif bool((closed.distance > top).any()):
            ax.annotate(
                "float32 overflows:\ninf from here on",
                (float(leave.iloc[0]), top),
                xytext=(-8, -30),
                textcoords="offset points",
                ha="right",
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": "0.3"},
            )
        ax.set_yscale("log")
        ax.set_xlim(0, right)
        dim = 5  # the question's case
        ax.set_title(f"lr = {lr:g} ({regime(lr, dim)})", fontsize=10)
        ax.set_xlabel("iteration k")
        ax.set_ylabel("distance  mean (x - t)²")
    handles = [Line2D([], [], color="0.6", lw=5, alpha=0.5, label=CLOSED_FORM)]
    labels = {ORIGINAL_QUESTION: f"{ORIGINAL_QUESTION} (loss once, grad never zeroed)"}
    handles += [Line2D([], [], color=c, lw=1.5, label=labels.get(m, m)) for m, c in colours.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    fig.suptitle("The question's case: distance by iteration, each method over the closed form")
    return fig


def _per_device(cases: pd.DataFrame, width: float = 6.0, height: float = 4.2):
    devices = sorted(cases.device.unique())
    fig = Figure(figsize=(width * len(devices), height), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(devices), squeeze=False)).ravel()
    return fig, list(zip(axes, devices, strict=True))


def time_figure(cases: pd.DataFrame) -> Figure | None:
    """Time per step against problem size (B x D), one line per method, log-log."""
    data = cases[np.isfinite(cases.time_per_step_s) & (cases.time_per_step_s > 0)]
    data = data[np.isfinite(data.elements)]
    if data.empty:
        return None
    colours = palette(list(data.method.unique()))
    fig, panels = _per_device(data)
    many_dtypes = data.dtype.nunique() > 1
    marker = {"marker": "o"}
    for ax, device in panels:
        sub = data[data.device == device]
        sns.lineplot(
            data=sub,
            x="elements",
            y="time_per_step_s",
            hue="method",
            palette=colours,
            hue_order=[m for m in colours if m in set(sub.method)],
            **({"style": "dtype", "markers": True, "dashes": False} if many_dtypes else marker),
            estimator="median",
            errorbar=None,
            ax=ax,
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("problem size: elements B x D")
        ax.set_ylabel("time per step (s), median")
        ax.set_title(f"{_device_label(sub)}: time per step", fontsize=10)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0))  # clear of the data
        ax.grid(True, which="both", alpha=0.3)
    return fig


def speedup_figure(cases: pd.DataFrame) -> Figure | None:
    """Speedup over autograd per problem, one bar per method (log scale; 1x = autograd), with
    whiskers for the 95% interval of each speedup (none where the case is untested)."""
    data = cases[np.isfinite(cases.speedup_vs_autograd) & (cases.method != BASELINE_METHOD)]
    if data.empty:
        return None
    label = data.problem + (" " + data.device if data.device.nunique() > 1 else "")
    data = data.assign(case=label)
    colours = palette(list(data.method.unique()))
    order = sorted(data.case.unique(), key=lambda c: (data[data.case == c].elements.iloc[0], c))
    hue_order = [m for m in colours if m in set(data.method)]
    bars = len(order) * data.method.nunique()
    fig = Figure(figsize=(8, min(60.0, 1.4 + 0.22 * bars + 0.3 * len(order))), layout="constrained")
    ax = fig.subplots()
    sns.barplot(
        data=data,
        y="case",
        x="speedup_vs_autograd",
        hue="method",
        order=order,
        hue_order=hue_order,
        palette=colours,
        orient="h",
        estimator="median",
        errorbar=None,
        ax=ax,
    )
    unclear, untested = _interval_whiskers(ax, data, order, hue_order)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", ls="--", lw=1)
    _speedup_ticks(ax)
    ax.set_xlabel(
        "speedup over autograd (median time per step), log scale; whiskers: its 95% interval"
    )
    ax.set_ylabel("")
    ax.set_title("Speedup over autograd", fontsize=10)
    # The 1x line and the bar styles are named in the legend, where no bar or title covers them.
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", ls="--", lw=1))
    labels.append("autograd = 1x")
    if unclear:
        handles.append(Patch(facecolor="white", edgecolor=UNCLEAR_EDGE, hatch=UNCLEAR_HATCH))
        labels.append("hatched: interval includes 1,\nno clear difference")
    if untested:
        handles.append(Patch(facecolor="0.5", alpha=UNTESTED_ALPHA))
        labels.append(f"faded: untested\n(< {MIN_SAMPLES} samples a side)")
    ax.legend(handles, labels, title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return fig


def _speedup_ticks(ax) -> None:
    """Labels such as '0.2x', '1x', '10x' on the log axis, spaced so that none overlap: evenly
    spaced where the axis spans less than a decade, 1, 2 and 5 per decade where it spans a few,
    one per decade or fewer where it spans many; none on the minor ticks (matplotlib labels them
    on a short axis, over each other)."""
    low, high = ax.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    if decades < 0.7:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    elif decades <= 2.5:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,), numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _interval_whiskers(
    ax, data: pd.DataFrame, order: list[str], hue_order: list[str]
) -> tuple[int, int]:
    """One errorbar per bar that has an interval; bars whose interval includes 1 hatched, bars
    without an interval (untested) faded. Returns how many bars are (unclear, untested).

    seaborn draws one BarContainer per method of `hue_order`, each with a bar for every case of
    `order` that method has; the bar's centre is on the case's row."""
    intervals = {
        (row.case, row.method): (row.speedup_vs_autograd, row.speedup_low, row.speedup_high)
        for row in data.itertuples(index=False)
    }
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    x, y, below, above = [], [], [], []
    unclear = untested = 0
    for method, container in zip(hue_order, bars, strict=False):
        for patch in container.patches:
            centre = patch.get_y() + patch.get_height() / 2
            case = order[round(centre)]
            estimate, low, high = intervals.get((case, method), (math.nan,) * 3)
            if not np.isfinite([estimate, low, high]).all():
                patch.set_alpha(UNTESTED_ALPHA)  # a point value, no whisker
                untested += 1
                continue
            if low <= 1.0 <= high:
                patch.set_hatch(UNCLEAR_HATCH)
                patch.set_edgecolor(UNCLEAR_EDGE)
                unclear += 1
            x.append(estimate)
            y.append(centre)
            below.append(max(estimate - low, 0.0))
            above.append(max(high - estimate, 0.0))
    if x:
        ax.errorbar(
            x, y, xerr=[below, above], fmt="none", ecolor="black", elinewidth=1, capsize=2.5
        )
    return unclear, untested


def bandwidth_figure(cases: pd.DataFrame) -> Figure | None:
    """Effective bandwidth as a fraction of the measured copy bandwidth (the roof) against size."""
    data = cases[np.isfinite(cases.copy_fraction) & (cases.copy_fraction > 0)]
    data = data[np.isfinite(data.elements)]
    if data.empty:
        return None
    one_pass = sorted(set(data.method) & set(ONE_PASS_METHODS))
    data = data.assign(
        method=[f"{m}*" if m in ONE_PASS_METHODS else m for m in data.method],
    )
    base = palette([m.rstrip("*") for m in data.method.unique()])
    colours = {(f"{m}*" if m in ONE_PASS_METHODS else m): c for m, c in base.items()}
    fig, panels = _per_device(data, height=4.6)
    for ax, device in panels:
        sub = data[data.device == device]
        sns.lineplot(
            data=sub,
            x="elements",
            y="copy_fraction",
            hue="method",
            palette=colours,
            hue_order=[m for m in colours if m in set(sub.method)],
            marker="o",
            estimator="median",
            errorbar=None,
            ax=ax,
        )
        ax.axhline(1.0, color="black", lw=2)
        ax.text(
            0.01,
            1.0,
            "device-to-device copy of 3 x itemsize x B x D bytes = the roof per step",
            transform=ax.get_yaxis_transform(),
            va="bottom",
            fontsize=8,
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("problem size: elements B x D")
        ax.set_ylabel("effective bandwidth / copy bandwidth")
        ax.set_title(f"{_device_label(sub)}: fraction of copy bandwidth", fontsize=10)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0))  # clear of the data
        ax.grid(True, which="both", alpha=0.3)
    if one_pass:
        fig.text(0.0, -0.04, ONE_PASS_NOTE.format(names=", ".join(one_pass)), fontsize=8, wrap=True)
    return fig


def _device_label(cases: pd.DataFrame) -> str:
    names = sorted(set(cases.device_name) - {"None", "nan"})
    device = str(cases.device.iloc[0])
    return f"{device} ({names[0]})" if len(names) == 1 else device
