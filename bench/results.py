"""Results files: pytest-benchmark's JSON, with our figures in each case's `extra_info`.

The one results format of the project. A file is what `pytest --benchmark-only` saves (raw samples
included), so `pytest-benchmark compare` reads it too. Our additions:

- each entry of `benchmarks` carries `extra_info` with the fields of `CASE_FIELDS`, and its
  `stats.data` holds the raw samples: seconds per whole fit of K steps, host clock;
- `machine_info["vecreg"]` holds the environment (device name, versions, clocks), see
  `bench.environment`;
- the top-level `"vecreg"` key holds the cases that did not produce a timing:
  `{"skipped": [{"method", "problem", "reason"}], "failed": [{"method", "problem", "reason"}]}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    "device_time_per_step_s": "median CUDA-event time of one fit / K (None on the CPU)",
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
}

# Above this IQR / median a timing is flagged noisy: its median is not to be trusted.
NOISY_IQR_OVER_MEDIAN = 0.10

# A case is the same case in two files when these match.
CASE_KEY = ("method", "problem", "dtype", "device")


class ResultsError(ValueError):
    """A results file that cannot be used; the message is one line naming the file."""


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and check a results file; ResultsError says which file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path}: no such file")
    if path.is_dir():
        raise ResultsError(f"{path}: is a directory, not a results file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot be read ({exc})") from None
    if not text.strip():
        raise ResultsError(f"{path}: is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ResultsError(f"{path}: is not a pytest-benchmark results file (no 'benchmarks' list)")
    for entry in data["benchmarks"]:
        info = entry.get("extra_info") if isinstance(entry, dict) else None
        if not isinstance(info, dict) or any(key not in info for key in CASE_KEY):
            raise ResultsError(
                f"{path}: is not a vecreg-bench results file "
                f"(benchmark {entry.get('name', '?') if isinstance(entry, dict) else entry!r} "
                f"has no {'/'.join(CASE_KEY)} in extra_info)"
            )
        if not isinstance(entry.get("stats"), dict):
            raise ResultsError(f"{path}: benchmark {entry.get('name', '?')!r} has no stats")
    if not data["benchmarks"] and not data.get("vecreg"):
        raise ResultsError(f"{path}: holds no benchmark results")
    return data


def case_key(entry: dict[str, Any]) -> tuple[str, ...]:
    """(method, problem, dtype, device) of one benchmark entry."""
    return tuple(str(entry["extra_info"][key]) for key in CASE_KEY)


def samples(entry: dict[str, Any]) -> list[float]:
    """The raw samples (seconds per fit) of one entry; empty if it was saved without them."""
    return list(entry["stats"].get("data") or [])


def device_name(data: dict[str, Any]) -> str:
    """The device model the run measured, from machine_info (or the cases, for older files)."""
    name = data.get("machine_info", {}).get("vecreg", {}).get("device_name")
    if name:
        return str(name)
    names = {b["extra_info"].get("device_name") for b in data["benchmarks"]}
    names.discard(None)
    return names.pop() if len(names) == 1 else "unknown device"
