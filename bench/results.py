"""Results files: read and checked here, once, into a typed `Results`; every consumer takes that.

The one results format of the project is pytest-benchmark's JSON, as `pytest --benchmark-only`
saves it (raw samples included), so `pytest-benchmark compare` reads it too. Our additions:

- each entry of `benchmarks` carries `extra_info` with the fields of `CASE_FIELDS`, and its
  `stats.data` holds the raw samples: seconds per whole fit of K steps, host clock (the rounds
  under GPU throttling left out, see bench.timing); the fields after `oracle_ok` (the median's
  interval, the precision reached and asked for, `imprecise`, the load average, the CPU
  pressure and `busy`, the throttled rounds and SM clocks, the profiler's busy time and kernel
  counts, the cache regime, peak memory) are optional: files written before them lack them, and
  the CUDA-only ones are absent from a CPU run's cases, not zero. `event_span_per_step_s` was
  `device_time_per_step_s` in files written before it was named for what it measures; the old
  name is read as the new one;
- `machine_info["vecreg"]` holds the environment (device name, versions, clocks), see
  `bench.environment`;
- the top-level `"vecreg"` key holds what a timing does not: `sweep`; the cases that did not
  produce one, `skipped` and `failed` (`[{"method", "problem", "reason"}]`); `complete` (true only
  for a run that was not interrupted and ran every case it collected), `cases_total` and
  `cases_done`; and `convergence`, the convergence study made with the run (see
  `add_convergence`), so that a report rebuilt from the file alone is the same report.

`Results.load(path)` checks every field that any consumer reads (types, finiteness, samples > 0,
at least one sample, names that are strings); a file that fails gets a `ResultsError` whose one
line names the file, the case and the field. No other module indexes the raw JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# Per case, in extra_info. Seconds are seconds; *_per_step_* figures divide a whole fit by K.
CASE_FIELDS: dict[str, str] = {
    "method": "method name, as in bench.methods.METHODS",
    "problem": "Problem.name, e.g. B1024xD1024-K100-lr0.1-float32",
    "batch": "B",
    "dim": "D",
    "steps": "K",
    "lr": "learning rate",
    "dtype": "float32, float16, bfloat16 or float64",
    "seed": "seed of the inputs",
    "device": "cpu or cuda",
    "device_name": "GPU model or CPU model",
    "setup_s": "untimed preparation: compile, autotune, first call",
    "time_per_step_s": "median host time of one fit / K",
    "time_per_step_iqr_s": "IQR of the host time of one fit / K",
    "event_span_per_step_s": (
        "median time between two CUDA events on torch's stream around one fit / K: includes the "
        "GPU idling between launches (None on the CPU and for jax; device_time_per_step_s in "
        "older files)"
    ),
    "elements_steps_per_s": "B * D * K / median fit time",
    "bytes_per_step": "fewest bytes one step must move: 3 * itemsize * B * D",
    "bandwidth_gbs": "bytes_per_step / time_per_step, in 1e9 bytes/s",
    "copy_bandwidth_gbs": "device-to-device copy of the same bytes, measured in the same run",
    "copy_fraction": "bandwidth_gbs / copy_bandwidth_gbs",
    "speedup_vs_autograd": "autograd's median / this median, same problem (None without it)",
    "iqr_over_median": "IQR / median of the raw samples",
    "noisy": "True when iqr_over_median > NOISY_IQR_OVER_MEDIAN: not to be trusted",
    "oracle_max_abs_err": "max |x_K - closed form| of a fit made for the check",
    "oracle_ok": "True when that error is within the method's tolerance",
    # Adaptive sampling and a quiet machine (optional: older files lack them; None = not known).
    "time_per_step_low_s": "low end of the 95% interval of the median fit time (bench.stats) / K",
    "time_per_step_high_s": "high end of that interval / K",
    "precision": "achieved: that interval's larger half-width / the median (0.02 is +-2%)",
    "precision_target": "the precision rounds were taken for (--precision)",
    "imprecise": "True when the time budget ran out before the target precision was reached",
    "load_before": "1-minute load average before the timed rounds (Linux only)",
    "load_after": "1-minute load average after the timed rounds (Linux only)",
    "cpu_stall": "share of the rounds' time some task waited for a CPU (Linux CPU pressure)",
    "busy": "True when the machine was not quiet: cpu_stall > 5%, else load > logical CPUs",
    "throttled_rounds": "rounds under thermal or power throttling, left out of the samples (NVML)",
    "throttled": "True when throttled rounds are in the samples: too few rounds were free of it",
    "sm_clock_min_mhz": "lowest GPU SM clock read after a round (NVML)",
    "sm_clock_max_mhz": "highest GPU SM clock read after a round (NVML)",
    # What the event span cannot be, the profiler pass, the cache regime and memory (optional:
    # older files lack them; the CUDA-only figures are absent on the CPU, not zero).
    "no_event_span_reason": "why a CUDA case has no event span (jax: XLA's own stream)",
    "gpu_busy_per_step_s": (
        "GPU busy time of one fit / K: the union of the intervals during which its kernels, "
        "copies and memsets ran (torch.profiler, CUDA activity; an untimed pass, median of fits)"
    ),
    "kernel_launches_per_step": (
        "kernels the GPU ran in one fit / K (profiler pass; each kernel of a CUDA graph replay "
        "counts, though the host launches the graph once)"
    ),
    "memory_ops_per_step": "memory copies and memsets of one fit / K (profiler pass)",
    "cache": "L2 cache regime of the timed fits: warm (as a user runs it) or cold (flushed)",
    "l2_flush_bytes": "cold regime: bytes written before each timed fit, the L2's size",
    "peak_memory_bytes": (
        "peak device memory allocated during one fit (max_memory_allocated after "
        "reset_peak_memory_stats): everything torch's allocator held, x0 and t included"
    ),
    "fit_memory_bytes": "that peak less what was allocated when the fit began: the fit's own",
    # The batch sharded over ranks (`python -m bench scale`, bench.scale; optional: only its cases
    # have them). Its problem names end in the rank count, "-r2", so CASE_KEY tells counts apart.
    "sweep_problem": "scale: the sweep's problem this case scales (weak scaling: rows per rank)",
    "scaling": "scale: strong (B fixed) or weak (B = rows_per_rank x ranks)",
    "ranks": "scale: ranks the batch was sharded over",
    "world_size": "scale: ranks of the launch (torchrun: more than `ranks` may have waited)",
    "backend": "scale: torch.distributed backend, nccl or gloo",
    "rows_per_rank": "scale: rows of the largest block, ceil(B / ranks)",
    "empty_ranks": "scale: ranks that held no rows (B < ranks)",
    "threads_per_rank": "scale: torch threads of each rank",
    "slowest_rank": "scale: the rank that was slowest in most rounds",
}

# Fields renamed for what they measure: the old name, as older files have it -> the new one.
RENAMED_FIELDS: dict[str, str] = {"device_time_per_step_s": "event_span_per_step_s"}

# Above this IQR / median a timing is flagged noisy: its median is not to be trusted.
NOISY_IQR_OVER_MEDIAN = 0.10

# A case is the same case in two files when these match.
CASE_KEY = ("method", "problem", "dtype", "device")

# Larger files are refused before they are read: parsing holds a few times the file in memory.
# A million samples of one case take about 45 MB as pytest-benchmark writes them.
MAX_FILE_BYTES = 512 * 2**20


class ResultsError(ValueError):
    """A results file that cannot be used; the message is one line naming the file."""


class _Bad(ValueError):
    """What is wrong with one value; the loader adds the file and the case."""


class _HugeInteger:
    """An integer literal too long to be a number of anything here; kept as its length, so the
    check of its field names it (Python refuses to convert more than 4300 digits at all)."""

    MAX_DIGITS = 300  # 1e300 still fits in a float

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | _HugeInteger:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= _HugeInteger.MAX_DIGITS else _HugeInteger(digits)


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One timed case: its extra_info fields (every CASE_FIELDS key, None where the file has none)
    and its raw samples, seconds per fit (at least one, each finite and > 0)."""

    info: Mapping[str, Any]
    samples: np.ndarray

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(method, problem, dtype, device): the same case in two files."""
        return tuple(self.info[k] for k in CASE_KEY)  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return case_name(self.key)

    @property
    def method(self) -> str:
        return self.info["method"]

    @property
    def problem(self) -> str:
        return self.info["problem"]

    @property
    def oracle_ok(self) -> bool:
        return self.info["oracle_ok"]


@dataclass(frozen=True)
class NotMeasured:
    """A case that produced no timing: `status` is "skipped" or "failed", with the reason."""

    status: str
    method: str
    problem: str
    reason: str


@dataclass(frozen=True)
class Commit:
    id: str
    dirty: bool
    time: str | None = None
    branch: str | None = None


@dataclass(frozen=True)
class Convergence:
    """The convergence study of a run: its table (one record per method and lr, the columns of
    bench.convergence.STUDY_COLUMNS plus `device`) and its traces (method, lr, distances)."""

    records: tuple[Mapping[str, Any], ...]
    traces: tuple[tuple[str, float, np.ndarray], ...]

    def table(self) -> pd.DataFrame:
        import pandas as pd

        from bench.convergence import STUDY_COLUMNS

        table = pd.DataFrame(list(self.records), columns=[*STUDY_COLUMNS, "device"])
        for column in ("step_to_1pct", "step_to_1e-6"):
            table[column] = table[column].astype("Int64")
        for column in ("lr", "final_distance", "max_abs_err_x", "max_rel_err_trace"):
            table[column] = pd.to_numeric(table[column]).astype("float64")
        table["note"] = table["note"].fillna("")
        return table

    def traces_frame(self) -> pd.DataFrame:
        import pandas as pd

        frames = [
            pd.DataFrame({"method": m, "lr": lr, "step": range(len(d)), "distance": d})
            for m, lr, d in self.traces
        ]
        columns = ["method", "lr", "step", "distance"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


@dataclass(frozen=True)
class Results:
    """A results file, checked. Build one with `Results.load(path)`."""

    path: Path
    cases: tuple[Case, ...]
    skipped: tuple[NotMeasured, ...]
    failed: tuple[NotMeasured, ...]
    device_name: str
    environment: Mapping[str, Any]  # machine_info["vecreg"]: scalars, or flat lists and dicts
    python_version: str | None
    host_cpu: str | None
    commit: Commit | None
    measured_at: dt.datetime | None
    sweep: str | None
    complete: bool
    cases_total: int | None
    cases_done: int | None
    convergence: Convergence | None

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """Read and check a results file; ResultsError says which file and what is wrong."""
        path = Path(path)
        data = _read_json(path)
        try:
            return _parse(path, data)
        except _Bad as exc:
            raise ResultsError(f"{path}: {exc}") from None

    def by_key(self) -> dict[tuple[str, str, str, str], Case]:
        return {case.key: case for case in self.cases}

    @property
    def not_measured(self) -> tuple[NotMeasured, ...]:
        return self.failed + self.skipped

    def progress(self) -> str:
        """'3 of 5 cases' where the run recorded it, else how many cases it holds."""
        if self.cases_total is not None and self.cases_done is not None:
            return f"{self.cases_done} of {self.cases_total} cases"
        return f"{len(self.cases) + len(self.not_measured)} cases"


def load_results(path: str | Path) -> Results:
    """`Results.load(path)`."""
    return Results.load(path)


def case_name(key: tuple[str, ...]) -> str:
    """'analytic B64xD256-K100-lr0.1-float32 cpu': method, problem, dtype (unless the problem
    name carries it already) and device."""
    method, problem, dtype, device = key
    parts = [method, problem] + ([] if problem.endswith(dtype) else [dtype]) + [device]
    return " ".join(parts)


# --- reading ------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ResultsError(f"{path}: no such file")
    if path.is_dir():
        raise ResultsError(f"{path}: is a directory, not a results file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ResultsError(
                f"{path}: is {size / 2**20:.0f} MiB; results files above "
                f"{MAX_FILE_BYTES // 2**20} MiB are refused"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot be read ({exc})") from None
    if not text.strip():
        raise ResultsError(f"{path}: is empty")
    try:
        data = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ResultsError(f"{path}: is not usable JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ResultsError(f"{path}: is not a pytest-benchmark results file (no 'benchmarks' list)")
    return data


def _parse(path: Path, data: dict[str, Any]) -> Results:
    machine = _dict(data, "machine_info", "machine_info")
    env = _environment(_dict(machine, "vecreg", "machine_info.vecreg"))
    vecreg = _dict(data, "vecreg", "vecreg")

    cases: list[Case] = []
    seen: set[tuple[str, ...]] = set()
    for index, entry in enumerate(data["benchmarks"]):
        case = _case(index, entry)
        if case.key in seen:
            raise _Bad(f"holds the case {case.name!r} twice")
        seen.add(case.key)
        cases.append(case)
    skipped = _not_measured(vecreg, "skipped")
    failed = _not_measured(vecreg, "failed")
    if not cases and not skipped and not failed:
        raise _Bad("holds no benchmark results")

    name = _optional(env, "device_name", "machine_info.vecreg.device_name", _text)
    if name is None:
        names = {c.info["device_name"] for c in cases} - {None}
        name = names.pop() if len(names) == 1 else "unknown device"

    complete = vecreg.get("complete", False)
    if not isinstance(complete, bool):
        raise _Bad(f"vecreg.complete is {_show(complete)}; it must be true or false")
    return Results(
        path=path,
        cases=tuple(cases),
        skipped=skipped,
        failed=failed,
        device_name=name,
        environment=env,
        python_version=_optional(machine, "python_version", "machine_info.python_version", _text),
        host_cpu=_optional(
            _dict(machine, "cpu", "machine_info.cpu"), "brand_raw", "machine_info.cpu", _text
        ),
        commit=_commit(data),
        measured_at=_optional(data, "datetime", "datetime", _timestamp),
        sweep=_optional(vecreg, "sweep", "vecreg.sweep", _text),
        complete=complete,
        cases_total=_optional(vecreg, "cases_total", "vecreg.cases_total", _count(0)),
        cases_done=_optional(vecreg, "cases_done", "vecreg.cases_done", _count(0)),
        convergence=_convergence(vecreg.get("convergence")),
    )


def _case(index: int, entry: Any) -> Case:
    where = f"benchmark {index + 1}"
    if not isinstance(entry, dict):
        raise _Bad(f"{where} is {_show(entry)}; it must be an object")
    info = entry.get("extra_info")
    if not isinstance(info, dict) or any(key not in info for key in CASE_KEY):
        label = entry.get("name") if isinstance(entry.get("name"), str) else index + 1
        raise _Bad(
            f"is not a vecreg-bench results file (benchmark {_show(label)} has no "
            f"{'/'.join(CASE_KEY)} in extra_info)"
        )
    checked: dict[str, Any] = {}
    for field in CASE_KEY:  # first, so that later messages can name the case
        checked[field] = _check(info[field], f"{where}: extra_info.{field}", _text)
    where = f"case {case_name(tuple(checked[k] for k in CASE_KEY))!r}"
    old_names = {new: old for old, new in RENAMED_FIELDS.items()}
    for field, (check, required) in _CASE_CHECKS.items():
        if field in checked:
            continue
        value, name = info.get(field), field
        if value is None and field in old_names:  # an older file: the field's former name
            name = old_names[field]
            value = info.get(name)
        if value is None:
            if required:
                raise _Bad(f"{where}: extra_info.{field} is missing")
            checked[field] = None
        else:
            checked[field] = _check(value, f"{where}: extra_info.{name}", check)
    stats = entry.get("stats")
    if not isinstance(stats, dict):
        raise _Bad(f"{where}: stats is {_show(stats)}; it must be an object")
    return Case(info=checked, samples=_samples(stats.get("data"), f"{where}: stats.data"))


def _samples(data: Any, where: str) -> np.ndarray:
    if not isinstance(data, list) or not data:
        raise _Bad(
            f"{where} is {_show(data)}; it must be a non-empty list of seconds per fit "
            "(raw samples: saved with --benchmark-save-data or --benchmark-json)"
        )
    for i, value in enumerate(data):
        if type(value) not in (int, float) or not 0 < value < math.inf:
            raise _Bad(f"{where}[{i}] is {_show(value)}; samples must be finite numbers > 0")
    values = np.array(data, dtype=np.float64)
    values.flags.writeable = False
    return values


def _not_measured(vecreg: dict[str, Any], status: str) -> tuple[NotMeasured, ...]:
    items = vecreg.get(status)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise _Bad(f"vecreg.{status} is {_show(items)}; it must be a list")
    found = []
    for i, item in enumerate(items):
        where = f"vecreg.{status}[{i}]"
        if not isinstance(item, dict):
            raise _Bad(f"{where} is {_show(item)}; it must be an object")
        method, problem = (
            _check(item.get(k), f"{where}.{k}", _text) for k in ("method", "problem")
        )
        reason = _optional(item, "reason", f"{where}.reason", _any_text) or ""
        found.append(NotMeasured(status, method, problem, reason))
    return tuple(found)


def _commit(data: dict[str, Any]) -> Commit | None:
    info = _dict(data, "commit_info", "commit_info")
    if not info.get("id"):
        return None
    return Commit(
        id=_check(info["id"], "commit_info.id", _text),
        dirty=bool(_optional(info, "dirty", "commit_info.dirty", _bool)),
        time=_optional(info, "time", "commit_info.time", _text),
        branch=_optional(info, "branch", "commit_info.branch", _any_text),
    )


def _environment(env: dict[str, Any]) -> dict[str, Any]:
    """Scalars as they are; lists and dicts of scalars kept; anything deeper is refused."""
    for key, value in env.items():
        inner = value.values() if isinstance(value, dict) else value
        if isinstance(value, (dict, list)) and not all(_scalar(v) for v in inner):
            raise _Bad(f"machine_info.vecreg.{key} is nested too deeply")
        if not isinstance(value, (dict, list)) and not _scalar(value):
            raise _Bad(f"machine_info.vecreg.{key} is {_show(value)}; it must be a plain value")
    return env


def _convergence(study: Any) -> Convergence | None:
    if study is None:
        return None
    where = "vecreg.convergence"
    if not isinstance(study, dict):
        raise _Bad(f"{where} is {_show(study)}; it must be an object")
    rows, traces = study.get("table"), study.get("traces")
    if not isinstance(rows, list) or not isinstance(traces, list):
        raise _Bad(f"{where} must hold a 'table' list and a 'traces' list")
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(_scalar(v) for v in row.values()):
            raise _Bad(f"{where}.table[{i}] must be an object of plain values")
        _check(row.get("method"), f"{where}.table[{i}].method", _text)
        records.append({k: _decode_float(v) for k, v in row.items()})
    curves = []
    for i, trace in enumerate(traces):
        w = f"{where}.traces[{i}]"
        if not isinstance(trace, dict):
            raise _Bad(f"{w} is {_show(trace)}; it must be an object")
        method = _check(trace.get("method"), f"{w}.method", _text)
        lr = _check(trace.get("lr"), f"{w}.lr", _number(0, strict=True))
        distance = trace.get("distance")
        if not isinstance(distance, list) or not all(
            type(v) in (int, float) or v in _NON_FINITE for v in distance
        ):
            raise _Bad(f"{w}.distance must be a list of numbers")
        curves.append((method, lr, np.array([_decode_float(v) for v in distance], dtype=float)))
    return Convergence(tuple(records), tuple(curves))


# --- checks of one value: each returns the value or raises _Bad with what is wrong ---------------


def _check(value: Any, where: str, check: Callable[[Any], Any]) -> Any:
    try:
        return check(value)
    except _Bad as exc:
        raise _Bad(f"{where} is {_show(value)}; {exc}") from None


def _optional(obj: dict[str, Any], key: str, where: str, check: Callable[[Any], Any]) -> Any:
    value = obj.get(key)
    return None if value is None else _check(value, where, check)


def _dict(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{where} is {_show(value)}; it must be an object")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("it must be a non-empty string")
    return value


def _any_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("it must be a string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("it must be true or false")
    return value


def _count(low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or value < low:
            raise _Bad(f"it must be an integer >= {low}")
        return value

    return check


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise _Bad("it must be an integer")
    return value


def _number(low: float, strict: bool, finite: bool = True) -> Callable[[Any], float]:
    bound = f"{'>' if strict else '>='} {low:g}"

    def check(value: Any) -> float:
        if type(value) not in (int, float):
            raise _Bad(f"it must be a {'finite ' if finite else ''}number {bound}")
        value = float(value)
        if finite and not math.isfinite(value):
            raise _Bad(f"it must be a finite number {bound}")
        if value < low or (strict and value == low):
            raise _Bad(f"it must be a {'finite ' if finite else ''}number {bound}")
        return value

    return check


def _any_number(value: Any) -> float:
    """Any float, non-finite included: the oracle error of a wrong fit may be inf or NaN."""
    if type(value) not in (int, float):
        raise _Bad("it must be a number")
    return float(value)


def _timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise _Bad("it must be an ISO 8601 time")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Bad("it must be an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _cache_regime(value: Any) -> str:
    if value not in ("warm", "cold"):
        raise _Bad('it must be "warm" or "cold"')
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


_POSITIVE, _NONNEG = _number(0, strict=True), _number(0, strict=False)

# extra_info field -> (check, required). The four CASE_KEY fields are strings, checked first.
_CASE_CHECKS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "device_name": (_text, False),
    "batch": (_count(1), True),
    "dim": (_count(1), True),
    "steps": (_count(1), True),
    "lr": (_POSITIVE, True),
    "seed": (_integer, False),
    "setup_s": (_NONNEG, False),
    "time_per_step_s": (_POSITIVE, True),
    "time_per_step_iqr_s": (_NONNEG, False),
    "event_span_per_step_s": (_POSITIVE, False),
    "elements_steps_per_s": (_POSITIVE, False),
    "bytes_per_step": (_POSITIVE, False),
    "bandwidth_gbs": (_POSITIVE, False),
    "copy_bandwidth_gbs": (_POSITIVE, False),
    "copy_fraction": (_NONNEG, False),
    "speedup_vs_autograd": (_POSITIVE, False),
    "iqr_over_median": (_NONNEG, False),
    "noisy": (_bool, False),
    "oracle_max_abs_err": (_any_number, False),
    "oracle_ok": (_bool, True),
    "time_per_step_low_s": (_POSITIVE, False),
    "time_per_step_high_s": (_POSITIVE, False),
    "precision": (_NONNEG, False),
    "precision_target": (_NONNEG, False),
    "imprecise": (_bool, False),
    "load_before": (_NONNEG, False),
    "load_after": (_NONNEG, False),
    "cpu_stall": (_NONNEG, False),
    "busy": (_bool, False),
    "throttled_rounds": (_count(0), False),
    "throttled": (_bool, False),
    "sm_clock_min_mhz": (_count(0), False),
    "sm_clock_max_mhz": (_count(0), False),
    "no_event_span_reason": (_text, False),
    "gpu_busy_per_step_s": (_NONNEG, False),
    "kernel_launches_per_step": (_NONNEG, False),
    "memory_ops_per_step": (_NONNEG, False),
    "cache": (_cache_regime, False),
    "l2_flush_bytes": (_count(1), False),
    "peak_memory_bytes": (_count(0), False),
    "fit_memory_bytes": (_count(0), False),
    "sweep_problem": (_text, False),
    "scaling": (_text, False),
    "ranks": (_count(1), False),
    "world_size": (_count(1), False),
    "backend": (_text, False),
    "rows_per_rank": (_count(0), False),
    "empty_ranks": (_count(0), False),
    "threads_per_rank": (_count(1), False),
    "slowest_rank": (_count(0), False),
}
assert set(_CASE_CHECKS) | set(CASE_KEY) == set(CASE_FIELDS)


def _show(value: Any) -> str:
    """A value as a message shows it: its type where that is the news, cut to 40 characters."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if value is None:
        return "missing"
    if isinstance(value, _HugeInteger):
        return f"an integer of {value.digits} digits"
    text = json.dumps(value) if isinstance(value, (str, bool)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- writing the convergence study into a results file --------------------------------------------

# Strict JSON has no inf or NaN; the study's diverging fits have both.
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _encode_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode_float(value: Any) -> Any:
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def add_convergence(path: str | Path, table: pd.DataFrame, traces: pd.DataFrame) -> None:
    """Save the convergence study into the results file at `path`, atomically (a reader, or a
    crash, sees the file before or after, never half of it)."""
    path = Path(path)
    Results.load(path)  # only a valid results file is rewritten
    data = json.loads(path.read_text(encoding="utf-8"))
    records = []
    for row in table.astype(object).where(table.notna(), None).to_dict("records"):
        records.append({str(k): _encode_float(_plain(v)) for k, v in row.items()})
    curves = [
        {
            "method": str(method),
            "lr": float(lr),
            "distance": [_encode_float(float(v)) for v in group.sort_values("step").distance],
        }
        for (method, lr), group in traces.groupby(["method", "lr"], sort=False)
    ]
    data.setdefault("vecreg", {})["convergence"] = {"table": records, "traces": curves}
    write_atomically(path, json.dumps(data, indent=4, allow_nan=False))


def _plain(value: Any) -> Any:
    """numpy and pandas scalars as the Python values JSON knows."""
    return value.item() if hasattr(value, "item") else value


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and one rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
