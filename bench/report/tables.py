"""Tables from a results file: one tidy frame of cases, and the views a reader sees.

A `Table` is strings only (title, header, rows, one CSS class per row), so the HTML and Markdown
writers need no pandas; numbers are formatted here, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.convergence import ORIGINAL_QUESTION
from bench.methods import METHODS
from bench.results import CASE_FIELDS, NOISY_IQR_OVER_MEDIAN, Results

BASELINE_METHOD = "autograd"
# Known names in the order tables and legends list them (and the plots' colour order): the
# registry's order, then the convergence table's extra row.
METHOD_ORDER = (*METHODS, ORIGINAL_QUESTION)
# The fields of CASE_FIELDS that are not numbers.
TEXT_FIELDS = ("method", "problem", "dtype", "device", "device_name")
FLAG_FIELDS = ("noisy", "oracle_ok")


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
    """One row per measured case: every CASE_FIELD (missing ones as NA), speedup filled in.

    The speedup over autograd is taken from the file where it is there, else computed from
    autograd's median on the same problem and device.
    """
    rows = []
    for case in results.cases:
        row = dict(case.info)
        row["elements"] = float(case.info["batch"]) * float(case.info["dim"])
        row["rounds"] = case.samples.size
        rows.append(row)
    columns = [*CASE_FIELDS, "elements", "rounds"]
    frame = pd.DataFrame(rows, columns=columns)
    numeric = [c for c in columns if c not in (*TEXT_FIELDS, *FLAG_FIELDS)]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in TEXT_FIELDS:
        frame[column] = frame[column].astype(str)
    if frame.empty:
        return frame
    baseline = (
        frame[frame.method == BASELINE_METHOD]
        .groupby(["problem", "device"])["time_per_step_s"]
        .median()
    )
    key = list(zip(frame.problem, frame.device, strict=True))
    computed = [baseline.get(k, math.nan) for k in key] / frame.time_per_step_s
    frame["speedup_vs_autograd"] = frame.speedup_vs_autograd.fillna(computed)
    return frame


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


def timing_tables(cases: pd.DataFrame) -> list[Table]:
    """One table per problem and device, methods as rows, fastest first."""
    tables = []
    groups = sorted(
        cases.groupby(["problem", "device"], sort=False),
        key=lambda item: (item[1].elements.min(), item[0]),
    )
    for (problem, device), group in groups:
        group = group.sort_values("time_per_step_s", na_position="last")
        with_device_time = bool(group.device_time_per_step_s.notna().any())
        header = ["method", "time / step", "IQR"]
        if with_device_time:
            header.append("device time / step")
        header += ["GB/s", "of copy BW", "speedup vs autograd", "setup", "flags"]
        rows, classes = [], []
        for case in group.itertuples(index=False):
            flags, css = [], []
            if _flag(case.noisy) or (case.iqr_over_median or 0) > NOISY_IQR_OVER_MEDIAN:
                flags.append(f"noisy (IQR {number(100 * case.iqr_over_median, '.0f')}% of median)")
                css.append("noisy")
            if case.oracle_ok is not None and not _flag(case.oracle_ok):
                flags.append(f"ORACLE FAILED (max err {number(case.oracle_max_abs_err)})")
                css.append("bad")
            row = [case.method, seconds(case.time_per_step_s), seconds(case.time_per_step_iqr_s)]
            if with_device_time:
                row.append(seconds(case.device_time_per_step_s))
            row += [
                number(case.bandwidth_gbs, ".3g"),
                number(100 * case.copy_fraction, ".3g", "%"),
                number(case.speedup_vs_autograd, ".3g", "x"),
                seconds(case.setup_s),
                "; ".join(flags),
            ]
            rows.append(row)
            classes.append(" ".join(css))
        first = group.iloc[0].to_dict()
        caption = (
            f"B={_int(first['batch'])}, D={_int(first['dim'])}, K={_int(first['steps'])} steps, "
            f"lr={number(first['lr'], 'g')}, {first['dtype']}, on {first['device_name']}. Bytes "
            "per step counted: 3 x itemsize x B x D (read x and t, write x) = "
            f"{_int(first['bytes_per_step'])}; copy bandwidth measured in the same run: "
            f"{number(first['copy_bandwidth_gbs'])} GB/s."
        )
        tables.append(Table(f"{problem} on {device}", header, rows, classes, caption))
    return tables


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


def speedup_summary(cases: pd.DataFrame) -> pd.DataFrame:
    """Problems as rows, methods as columns, speedup over autograd: the one-glance answer."""
    if cases.empty:
        return pd.DataFrame()
    label = cases.problem + (" " + cases.device if cases.device.nunique() > 1 else "")
    wide = cases.assign(case=label).pivot_table(
        index="case", columns="method", values="speedup_vs_autograd", aggfunc="median"
    )
    size = cases.assign(case=label).groupby("case").elements.min()
    wide = wide.loc[sorted(wide.index, key=lambda case: (size[case], case))]
    wide = wide[method_order(wide.columns)]
    wide.columns.name = None
    wide.index.name = "problem"
    return wide


# bench.environment's fields, in the order a reader looks for them; others follow, sorted.
ENVIRONMENT_ORDER = (
    "sm_count",
    "compute_capability",
    "memory_bytes",
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
