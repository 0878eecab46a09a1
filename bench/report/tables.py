"""Tables from a results file: one tidy frame of cases, and the views a reader sees.

A `Table` is strings only (title, header, rows, one CSS class per row), so the HTML and Markdown
writers need no pandas; numbers are formatted here, once.

Every headline carries its uncertainty (bench.stats, from each case's raw samples): a time per step
comes with the relative half-width of its median's 95% interval, a speedup over autograd with the
95% interval of the ratio of medians, and the timing tables rank methods only where the intervals
prove an order (`tie_ranks`). The wording is defined here once (`speedup_text`, SPEEDUP_CAPTION)
and used by the HTML page, summary.md and the console summary alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.convergence import ORIGINAL_QUESTION
from bench.methods import METHODS
from bench.results import CASE_FIELDS, NOISY_IQR_OVER_MEDIAN, Results

BASELINE_METHOD = "autograd"
# Known names in the order tables and legends list them (and the plots' colour order): the
# registry's order, then the convergence table's extra row.
METHOD_ORDER = (*METHODS, ORIGINAL_QUESTION)
# The fields of CASE_FIELDS that are not numbers.
TEXT_FIELDS = ("method", "problem", "dtype", "device", "device_name")
# Per-case fields of the sampler and the machine check, optional in extra_info (files written
# before them lack them; read with .get, so a model or file without them costs only their flags):
# `imprecise` (out of time before the median was known to the target precision), `precision`
# (the relative half-width achieved) and `precision_target`, `busy` (the machine was loaded),
# `throttled` (rounds under GPU throttling had to be kept) and `throttled_rounds`.
OPTIONAL_FLAGS = (
    "imprecise",
    "precision",
    "precision_target",
    "busy",
    "throttled",
    "throttled_rounds",
)
FLAG_FIELDS = ("noisy", "oracle_ok", "imprecise", "busy", "throttled")
# Optional per-case text (None where a file or a device has none): kept as text, not coerced.
OPTIONAL_TEXT = ("cache", "no_event_span_reason")
# Figures computed here from the raw samples (bench.stats), one row per case.
INTERVAL_COLUMNS = (
    "time_per_step_low_s",  # 95% interval of the median time of one fit, / K
    "time_per_step_high_s",
    "median_halfwidth",  # that interval's larger half-width / the median (the "+-2%")
    "speedup_low",  # 95% interval of autograd's median / this median
    "speedup_high",
)
SPEEDUP_CAPTION = (
    "Speedup = autograd's median time over the method's, same problem: above 1x is faster. "
    "[low, high] is its 95% confidence interval, from the raw samples of both cases "
    "(bench.stats.ratio_interval). ~1x [low, high]: the interval includes 1, no clear "
    f"difference from autograd. (untested): fewer than {stats.MIN_SAMPLES} samples on a side, "
    "a point value with no interval and no claim."
)
RANK_CAPTION = (
    "rank: 1 + the number of methods proven faster (95% intervals of the median time apart); "
    "=: its interval overlaps another's, no order claimed between them. ±: that interval's "
    "half-width over the median. IQR: of the raw samples, over their median. Speedups as in the "
    "summary: [low, high] is the 95% interval, ~1x no clear difference from autograd."
)


def method_order(names) -> list[str]:
    """`names` in METHOD_ORDER, then any others sorted."""
    names = set(names)
    return [m for m in METHOD_ORDER if m in names] + sorted(names - set(METHOD_ORDER))


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    row_classes: list[str] = field(default_factory=list)
    caption: str = ""


def cases_frame(results: Results) -> pd.DataFrame:
    """One row per measured case: every CASE_FIELD (missing ones as NA), with the figures that
    come from the raw samples (bench.stats) computed here, once, for every table and plot.

    From the samples, whatever the file says: `iqr_over_median`, `time_per_step_iqr_s` and the
    `noisy` flag (one definition of the IQR, not pytest-benchmark's quartiles), the 95% interval
    of the median time (INTERVAL_COLUMNS) and the speedup over autograd on the same problem with
    its 95% interval. The file's speedup is used only where the file holds no autograd case.
    """
    rows = []
    for case in results.cases:
        row = dict(case.info)
        for name in OPTIONAL_FLAGS:
            row[name] = case.info.get(name)
        row.update(_sample_figures(case.samples, float(case.info["steps"])))
        row["elements"] = float(case.info["batch"]) * float(case.info["dim"])
        row["rounds"] = case.samples.size
        rows.append(row)
    _add_speedups(results, rows)
    # The results model may hold some of these fields itself: each column once.
    columns = list(dict.fromkeys([*CASE_FIELDS, *OPTIONAL_FLAGS, *INTERVAL_COLUMNS]))
    columns += ["elements", "rounds"]
    frame = pd.DataFrame(rows, columns=columns)
    numeric = [c for c in columns if c not in (*TEXT_FIELDS, *FLAG_FIELDS, *OPTIONAL_TEXT)]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in TEXT_FIELDS:
        frame[column] = frame[column].astype(str)
    return frame


def _sample_figures(samples, steps: float) -> dict[str, Any]:
    spread = stats.iqr_over_median(samples)
    figures = {
        "iqr_over_median": spread,
        "time_per_step_iqr_s": stats.iqr(samples) / steps,
        "noisy": bool(spread > NOISY_IQR_OVER_MEDIAN),
        "time_per_step_low_s": math.nan,
        "time_per_step_high_s": math.nan,
        "median_halfwidth": math.nan,
    }
    if len(samples) >= stats.MIN_SAMPLES:  # below it, no interval: the case is untested
        median = stats.median_interval(samples)
        figures["time_per_step_low_s"] = median.low / steps
        figures["time_per_step_high_s"] = median.high / steps
        figures["median_halfwidth"] = median.relative_halfwidth()
    return figures


def _add_speedups(results: Results, rows: list[dict[str, Any]]) -> None:
    """speedup_vs_autograd, speedup_low and speedup_high of each row, from the raw samples of
    autograd's case on the same problem, dtype and device and of the row's own case."""
    baseline = {
        case.key[1:]: case.samples for case in results.cases if case.method == BASELINE_METHOD
    }
    for case, row in zip(results.cases, rows, strict=True):
        base = baseline.get(case.key[1:])
        low = high = math.nan
        if case.method == BASELINE_METHOD:
            speedup = low = high = 1.0  # the reference, by definition
        elif base is None:  # no autograd here: the file's value, untested
            speedup = row.get("speedup_vs_autograd")
        elif min(base.size, case.samples.size) < stats.MIN_SAMPLES:
            speedup = float(np.median(base) / np.median(case.samples))
        else:
            ratio = stats.ratio_interval(base, case.samples)
            speedup, low, high = ratio.estimate, ratio.low, ratio.high
        row.update(speedup_vs_autograd=speedup, speedup_low=low, speedup_high=high)


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def seconds(value: float) -> str:
    """A duration with a unit a reader can compare at a glance: 12.3 µs, 4.56 ms, 1.2 s."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def number(value: Any, fmt: str = ".3g", suffix: str = "") -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:{fmt}}{suffix}"


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits, without an exponent: 0.0921, 6.93, 11800."""
    rounded = float(f"{value:.{digits}g}")
    if rounded == 0 or not math.isfinite(rounded):
        return number(rounded, "g")
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def speedup_text(estimate: float, low: float, high: float, baseline: bool = False) -> str:
    """A speedup as every view shows it (see SPEEDUP_CAPTION): '6.93x [6.52, 7.38]'; '~1x [0.97,
    1.04]' where the interval includes 1 (no clear difference); '6.93x (untested)' without an
    interval (too few samples); '1x' for autograd itself; '—' where there is no speedup."""
    if baseline:
        return "1x"
    if estimate is None or not math.isfinite(estimate):
        return "—"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{significant(estimate)}x (untested)"
    bounds = f"[{significant(low)}, {significant(high)}]"
    if low <= 1.0 <= high:
        return f"~1x {bounds}"
    return f"{significant(estimate)}x {bounds}"


def time_text(median: float, halfwidth: float) -> str:
    """'61.6 µs ±3.0%': a time per step with its 95% interval's relative half-width."""
    if halfwidth is None or not math.isfinite(halfwidth):
        return f"{seconds(median)} (untested)" if median and math.isfinite(median) else "—"
    return f"{seconds(median)} ±{significant(100 * halfwidth, 2)}%"


def tie_ranks(lows: list[float], highs: list[float]) -> list[str]:
    """A rank for each interval that claims only what the intervals prove: 1 + the number of
    intervals wholly below this one, with '=' where it overlaps another (no order claimed between
    them); '—' for a case without an interval (untested)."""
    known = [(lo, hi) for lo, hi in zip(lows, highs, strict=True) if math.isfinite(lo + hi)]
    ranks = []
    for low, high in zip(lows, highs, strict=True):
        if not math.isfinite(low + high):
            ranks.append("—")
            continue
        faster = sum(other_high < low for _, other_high in known)
        # Itself overlaps itself once; any other overlap is a tie.
        overlaps = sum(lo <= high and low <= hi for lo, hi in known) > 1
        ranks.append(f"{'=' if overlaps else ''}{faster + 1}")
    return ranks


def _flags(case: Any) -> tuple[list[str], list[str]]:
    """The flags of one case (texts) and its row's CSS classes."""
    flags, css = [], []
    if _flag(case.noisy):
        flags.append(f"noisy (IQR {number(100 * case.iqr_over_median, '.0f')}% of median)")
        css.append("noisy")
    if _flag(case.imprecise):
        achieved, target = _percent(case.precision), _percent(case.precision_target)
        said = f"ran out of time at {achieved}" if achieved else "ran out of time"
        flags.append(f"imprecise ({said}{f', target {target}' if target else ''})")
        css.append("imprecise")
    if _flag(case.busy):
        flags.append("busy (the machine was loaded)")
        css.append("busy")
    if _flag(case.throttled):
        count = case.throttled_rounds
        rounds = f"{int(count)} " if isinstance(count, float) and math.isfinite(count) else ""
        flags.append(f"throttled ({rounds}rounds under GPU throttling kept in the samples)")
        css.append("throttled")
    if isinstance(case.no_event_span_reason, str) and case.no_event_span_reason:
        flags.append(f"no event span ({case.no_event_span_reason})")
    if case.oracle_ok is not None and not _flag(case.oracle_ok):
        flags.append(f"ORACLE FAILED (max err {number(case.oracle_max_abs_err)})")
        css.append("bad")
    return flags, css


def _percent(fraction: Any) -> str:
    """'±3.4%' from 0.034; '' where there is no such number."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        return ""
    return f"±{significant(100 * value, 2)}%" if math.isfinite(value) else ""


TIMES_CAPTION = (
    "Three times per step, each what it says: time / step is the host's, from the call until "
    "the result can be used (what a user waits); event span is the time between two CUDA events "
    "on torch's stream around the fit, the GPU's idle gaps between launches included; GPU busy "
    "is the union of the intervals during which the fit's kernels, copies and memsets ran "
    "(torch.profiler, an untimed pass). host - busy is the time the GPU spent on none of the "
    "fit's work: launch overhead, the host's own work and the wait for the result (most of a "
    "launch-bound method's time). kernels / step counts the kernels the GPU ran (each kernel of "
    "a CUDA graph replay counts, though the host launches the graph once)."
)
MEMORY_CAPTION = (
    "fit memory: the most device memory a fit allocated beyond what was allocated when it "
    "began (its temporaries, trace and outputs); peak memory: everything torch's allocator held "
    "at that peak (x0, t, the fit's copy of x0, state this and other methods keep, the "
    "cold-cache buffer)."
)


def _cache_caption(group: pd.DataFrame) -> str:
    """The L2 regime of the group's timed fits, where all share one (else a column says it)."""
    regimes = set(group.cache.dropna())
    if len(regimes) != 1:
        return ""
    if regimes == {"warm"}:
        return "L2 cache: warm (each fit finds what the previous one left, as a user's would)."
    flushed = group.l2_flush_bytes.dropna()
    size = f" of {flushed.iloc[0] / 2**20:.3g} MiB" if len(flushed) else ""
    return f"L2 cache: cold (a buffer{size}, the L2's size, written before each timed fit)."


def timing_tables(cases: pd.DataFrame) -> list[Table]:
    """One table per problem and device, methods as rows, fastest first; ranks only where the
    95% intervals of the medians prove them (`tie_ranks`). On CUDA: the event span, the
    profiler's GPU busy time and host - busy beside the host time, kernels per step, memory."""
    tables = []
    groups = sorted(
        cases.groupby(["problem", "device"], sort=False),
        key=lambda item: (item[1].elements.min(), item[0]),
    )
    for (problem, device), group in groups:
        group = group.sort_values("time_per_step_s", na_position="last")
        with_span = bool(group.event_span_per_step_s.notna().any())
        with_busy = bool(group.gpu_busy_per_step_s.notna().any())
        with_kernels = bool(group.kernel_launches_per_step.notna().any())
        with_memory = bool(group.peak_memory_bytes.notna().any())
        with_cache = group.cache.dropna().nunique() > 1
        header = ["rank", "method", "time / step"]
        if with_span:
            header.append("event span / step")
        if with_busy:
            header += ["GPU busy / step", "host - busy / step"]
        header.append("IQR")
        if with_kernels:
            header.append("kernels / step")
        header += ["GB/s", "of copy BW", "speedup vs autograd", "setup"]
        if with_memory:
            header += ["fit memory", "peak memory"]
        if with_cache:
            header.append("L2 cache")
        header.append("flags")
        ranks = tie_ranks(list(group.time_per_step_low_s), list(group.time_per_step_high_s))
        rows, classes = [], []
        for rank, case in zip(ranks, group.itertuples(index=False), strict=True):
            flags, css = _flags(case)
            row = [rank, case.method, time_text(case.time_per_step_s, case.median_halfwidth)]
            if with_span:
                row.append(seconds(case.event_span_per_step_s))
            if with_busy:
                busy = case.gpu_busy_per_step_s
                row += [seconds(busy), seconds(case.time_per_step_s - busy)]
            row.append(number(100 * case.iqr_over_median, ".2g", "%"))
            if with_kernels:
                row.append(number(case.kernel_launches_per_step, ".3g"))
            row += [
                number(case.bandwidth_gbs, ".3g"),
                number(100 * case.copy_fraction, ".3g", "%"),
                speedup_text(
                    case.speedup_vs_autograd,
                    case.speedup_low,
                    case.speedup_high,
                    baseline=case.method == BASELINE_METHOD,
                ),
                seconds(case.setup_s),
            ]
            if with_memory:
                row += [memory_text(case.fit_memory_bytes), memory_text(case.peak_memory_bytes)]
            if with_cache:
                row.append(case.cache if isinstance(case.cache, str) else "—")
            row.append("; ".join(flags))
            rows.append(row)
            classes.append(" ".join(css))
        first = group.iloc[0].to_dict()
        notes = [
            TIMES_CAPTION if with_span or with_busy else "",
            MEMORY_CAPTION if with_memory else "",
            _cache_caption(group),
        ]
        caption = " ".join(
            [
                f"B={_int(first['batch'])}, D={_int(first['dim'])}, K={_int(first['steps'])} "
                f"steps, lr={number(first['lr'], 'g')}, {first['dtype']}, on "
                f"{first['device_name']}. Bytes per step counted: 3 x itemsize x B x D (read x "
                f"and t, write x) = {_int(first['bytes_per_step'])}; copy bandwidth measured in "
                f"the same run: {number(first['copy_bandwidth_gbs'])} GB/s.",
                *[note for note in notes if note],
                RANK_CAPTION,
            ]
        )
        tables.append(Table(f"{problem} on {device}", header, rows, classes, caption))
    return tables


def memory_text(value: Any) -> str:
    """Bytes as a reader compares them: '12.3 MiB'; '—' where not measured."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(value):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}" if abs(value) < 1000 else f"{value:.0f} {unit}"
        value /= 1024
    return "—"


def _int(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "?"


def not_measured_table(results: Results) -> Table | None:
    """The cases that produced no timing: skipped (with the reason) and failed."""
    rows, classes = [], []
    for case in results.not_measured:
        rows.append([case.status, case.method, case.problem, case.reason])
        classes.append("bad" if case.status == "failed" else "")
    if not rows:
        return None
    return Table("Cases not measured", ["status", "method", "problem", "reason"], rows, classes)


def _summary_cases(cases: pd.DataFrame) -> pd.DataFrame:
    """The cases with a `case` label (the problem, and the device where there are several) in
    the order the summary lists them: smallest problem first."""
    label = cases.problem + (" " + cases.device if cases.device.nunique() > 1 else "")
    return cases.assign(case=label)


def speedup_summary(cases: pd.DataFrame) -> pd.DataFrame:
    """Problems as rows, methods as columns, speedup over autograd (the point values; see
    `speedup_view` for the view with intervals): the one-glance answer."""
    if cases.empty:
        return pd.DataFrame()
    labelled = _summary_cases(cases)
    wide = labelled.pivot_table(
        index="case", columns="method", values="speedup_vs_autograd", aggfunc="median"
    )
    size = labelled.groupby("case").elements.min()
    wide = wide.loc[sorted(wide.index, key=lambda case: (size[case], case))]
    wide = wide[method_order(wide.columns)]
    wide.columns.name = None
    wide.index.name = "problem"
    return wide


def speedup_view(cases: pd.DataFrame) -> Table | None:
    """The speedup summary as a reader sees it everywhere (HTML, summary.md, console): problems
    as rows, methods as columns, each speedup with its 95% interval (`speedup_text`)."""
    if cases.empty:
        return None
    labelled = _summary_cases(cases)
    size = labelled.groupby("case").elements.min()
    order = sorted(size.index, key=lambda case: (size[case], case))
    methods = method_order(labelled.method.unique())
    cells = {
        (row.case, row.method): speedup_text(
            row.speedup_vs_autograd,
            row.speedup_low,
            row.speedup_high,
            baseline=row.method == BASELINE_METHOD,
        )
        for row in labelled.itertuples(index=False)
    }
    rows = [[case, *(cells.get((case, m), "—") for m in methods)] for case in order]
    title = "Speedup over autograd (median time per step, with its 95% interval)"
    return Table(title, ["problem", *methods], rows, caption=SPEEDUP_CAPTION)


# bench.environment's fields, in the order a reader looks for them; others follow, sorted.
ENVIRONMENT_ORDER = (
    "sm_count",
    "compute_capability",
    "memory_bytes",
    "l2_cache_bytes",
    "driver",
    "cuda",
    "torch",
    "triton",
    "python",
    "sm_clock_mhz",
    "max_sm_clock_mhz",
    "app_sm_clock_mhz",
    "mem_clock_mhz",
    "max_mem_clock_mhz",
    "power_limit_w",
    "temperature_c",
    "cpu",
    "cpu_count",
    "torch_threads",
    "triton_interpret",
    "platform",
    "executable",
)


def environment_table(results: Results, source: str) -> Table:
    """Device, versions and clocks as the run recorded them (machine_info["vecreg"])."""
    env = dict(results.environment)
    kind = env.pop("device", None)
    env.pop("device_name", None)
    rows: list[list[str]] = [["device", results.device_name + (f" ({kind})" if kind else "")]]
    keys = [k for k in ENVIRONMENT_ORDER if k in env] + sorted(
        k for k in env if k not in ENVIRONMENT_ORDER
    )
    for key in keys:
        value = env[key]
        if value is None:  # not known for this device (no GPU, no NVML): nothing to show
            continue
        if key == "memory_bytes" and isinstance(value, (int, float)):
            rows.append(["memory", f"{value / 2**30:.1f} GiB"])
        elif key == "l2_cache_bytes" and isinstance(value, (int, float)):
            rows.append(["L2 cache", memory_text(value)])
        else:
            rows.append([key, _flat(value)])
    if "python" not in env and results.python_version:
        rows.append(["python", results.python_version])
    if results.host_cpu:
        rows.append(["host CPU", results.host_cpu])
    if results.commit is not None:
        dirty = " (dirty)" if results.commit.dirty else ""
        rows.append(["commit", f"{results.commit.id[:12]}{dirty}"])
    if results.measured_at is not None:
        rows.append(["measured at", results.measured_at.isoformat()])
    if not results.complete:
        rows.append(["run", f"INCOMPLETE: interrupted ({results.progress()})"])
    rows.append(["results file", source])
    return Table("Environment", ["", ""], rows)


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_flat(v) for v in value) or "—"
    return "—" if value is None else str(value)


def convergence_view(table: pd.DataFrame) -> Table:
    """The convergence study for a reader: a verdict that differs from the closed form is marked."""
    header = [
        "method",
        "lr",
        "closed form",
        "verdict",
        "1% at step",
        "1e-6 at step",
        "final distance",
        "max |x_K - oracle|",
        "max rel. err. of trace",
        "note",
    ]
    rows, classes = [], []
    for row in table.to_dict("records"):
        verdict, expected = str(row["verdict"]), row.get("expected")
        css = ""
        if row["method"] == "original_question":
            css = "pitfall"
        elif isinstance(expected, str) and verdict not in (expected, "skipped"):
            css = "bad"
        elif verdict == "skipped":
            css = "muted"
        rows.append(
            [
                str(row["method"]),
                number(row.get("lr"), "g"),
                expected if isinstance(expected, str) else "—",
                verdict,
                _step(row.get("step_to_1pct")),
                _step(row.get("step_to_1e-6")),
                number(row.get("final_distance"), ".3g"),
                number(row.get("max_abs_err_x"), ".2g"),
                number(row.get("max_rel_err_trace"), ".2g"),
                str(row.get("note") or ""),
            ]
        )
        classes.append(css)
    device = str(table["device"].iloc[0]) if "device" in table and len(table) else "?"
    caption = (
        "The question's case (B=1, D=5, t=[1, 2, 3, 4, 5], 1000 steps) on "
        f"{device}. Distance = mean (x - t)²; steps count from 0; — means not reached in "
        "1000 steps. The relative error of the trace is taken where the dtype can resolve the "
        "oracle's distance (above eps x scale², below overflow). original_question is the "
        "question's loop (loss computed once, grad never zeroed), compared with the fixed loop's "
        "closed form."
    )
    return Table("Convergence: the question's case at each lr", header, rows, classes, caption)


def _step(value: Any) -> str:
    if value is None or pd.isna(value):
        return "—"
    return str(int(value))


def frame_view(frame: pd.DataFrame, title: str, caption: str = "") -> Table:
    """Any frame (e.g. bench.compare's table) as strings, numbers to 3 significant digits."""
    header = [str(c) for c in frame.columns]
    rows = [
        [number(v) if isinstance(v, float) else ("—" if v is None else str(v)) for v in values]
        for values in frame.itertuples(index=False)
    ]
    return Table(title, header, rows, caption=caption)


def markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table, with its title as a heading and caption below."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.header) + "|")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", table.caption]
    return "\n".join(lines) + "\n"
