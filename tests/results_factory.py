"""Small synthetic results files in the project's format (see bench.results), for tests that must
not time anything."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.problem import Problem


def entry(
    method: str,
    problem: Problem,
    samples: list[float],
    device: str = "cpu",
    device_name: str = "Test CPU",
    **extra: Any,
) -> dict[str, Any]:
    """One benchmark entry with raw samples (seconds per fit) and the extra_info fields."""
    data = sorted(samples)
    median = statistics.median(data)
    q1, _, q3 = statistics.quantiles(data, n=4) if len(data) > 1 else (median, median, median)
    bytes_per_step = 3 * 4 * problem.elements
    per_step = median / problem.steps
    info = {
        "method": method,
        "problem": problem.name,
        "batch": problem.batch,
        "dim": problem.dim,
        "steps": problem.steps,
        "lr": problem.lr,
        "dtype": problem.dtype,
        "seed": problem.seed,
        "device": device,
        "device_name": device_name,
        "setup_s": 0.01,
        "time_per_step_s": per_step,
        "time_per_step_iqr_s": (q3 - q1) / problem.steps,
        "device_time_per_step_s": None,
        "elements_steps_per_s": problem.elements * problem.steps / median,
        "bytes_per_step": bytes_per_step,
        "bandwidth_gbs": bytes_per_step / per_step / 1e9,
        "copy_bandwidth_gbs": 20.0,
        "copy_fraction": bytes_per_step / per_step / 1e9 / 20.0,
        "speedup_vs_autograd": None,
        "iqr_over_median": (q3 - q1) / median,
        "noisy": (q3 - q1) / median > 0.10,
        "oracle_max_abs_err": 1e-7,
        "oracle_ok": True,
        **extra,
    }
    stats = {
        "min": data[0],
        "max": data[-1],
        "mean": statistics.fmean(data),
        "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "rounds": len(data),
        "median": median,
        "iqr": q3 - q1,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": 0,
        "stddev_outliers": 0,
        "outliers": "0;0",
        "ld15iqr": data[0],
        "hd15iqr": data[-1],
        "ops": 1 / statistics.fmean(data),
        "total": sum(data),
        "iterations": 1,
        "data": list(samples),
    }
    name = f"test_fit[{method}-{problem.name}-{device}]"
    return {
        "group": problem.name,
        "name": name,
        "fullname": f"bench/suite.py::{name}",
        "params": {"method": method, "problem": problem.name, "device": device},
        "param": f"{method}-{problem.name}-{device}",
        "extra_info": info,
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": 5,
            "max_time": 1.0,
            "min_time": 5e-06,
            "warmup": False,
        },
        "stats": stats,
    }


def results(entries: list[dict[str, Any]], device_name: str = "Test CPU") -> dict[str, Any]:
    """A whole results file around `entries`."""
    return {
        "machine_info": {
            "node": "test",
            "processor": "x86_64",
            "machine": "x86_64",
            "python_implementation": "CPython",
            "python_version": "3.11.7",
            "system": "Linux",
            "cpu": {"brand_raw": device_name},
            "vecreg": {"device": "cpu", "device_name": device_name, "torch": "2.13.0"},
        },
        "commit_info": {"id": "0" * 40, "dirty": False, "project": "vecreg-bench"},
        "benchmarks": entries,
        "datetime": "2026-11-25T00:00:00+00:00",
        "version": "5.2.3",
        "vecreg": {
            "skipped": [],
            "failed": [],
            "complete": True,
            "cases_total": len(entries),
            "cases_done": len(entries),
        },
    }


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def sample_sweep() -> dict[str, Any]:
    """A small made-up CUDA sweep: five methods (triton_fused among them, above the copy roof on
    the large problem), three sizes, one noisy case, one oracle failure, one skipped and one
    failed case; one speedup with no clear difference from autograd (compiled on the smallest
    problem) and one tie (compiled and triton_step on the largest). tests/data/sample_sweep.json
    is this, written with `write`."""
    device_name = "Synthetic GPU (test data)"
    copy_gbs = 2000.0
    problems = [
        Problem(batch=1, dim=5, steps=1000, lr=0.1),
        Problem(batch=64, dim=1024, steps=100, lr=0.1),
        Problem(batch=4096, dim=4096, steps=100, lr=0.1),
    ]
    # method -> (launch overhead per step in s, fraction of copy bandwidth reached per step)
    model = {
        "autograd": (60e-6, 0.25),
        "analytic": (20e-6, 0.45),
        "compiled": (9e-6, 0.8),
        "triton_step": (4e-6, 0.9),
    }
    # (method, problem index) -> seconds per step, where the model above does not say it: on the
    # smallest problem torch.compile's guard checks cost about what autograd's bookkeeping does
    # (a speedup whose interval includes 1); on the largest, compiled and triton_step both sit at
    # the copy roof, within each other's noise (a tie).
    placed = {("compiled", 0): 59.5e-6, ("compiled", 2): 117e-6}
    entries = []
    for index, problem in enumerate(problems):
        nbytes = 3 * 4 * problem.elements
        for method, (overhead, fraction) in model.items():
            per_step = overhead + nbytes / (fraction * copy_gbs * 1e9)
            per_step = placed.get((method, index), per_step)
            # analytic on B64xD1024 is noisy: IQR / median of its samples 31% (numpy's quartiles,
            # bench.stats), while the exclusive quartiles `entry` writes give 50%.
            factors = NOISY_FACTORS if (method, index) == ("analytic", 1) else STEADY_FACTORS
            entries.append(_case(method, problem, per_step, copy_gbs, device_name, factors))
        # One launch for all K steps: x and t read once, x written once.
        fused = (5e-6 + nbytes / (0.9 * copy_gbs * 1e9)) / problem.steps
        entries.append(_case("triton_fused", problem, fused, copy_gbs, device_name))
    autograd = {
        e["extra_info"]["problem"]: e for e in entries if e["extra_info"]["method"] == "autograd"
    }
    for e in entries:
        info = e["extra_info"]
        info["speedup_vs_autograd"] = (
            autograd[info["problem"]]["extra_info"]["time_per_step_s"] / info["time_per_step_s"]
        )
    broken = entries[8]["extra_info"]  # triton_step, B64xD1024
    broken.update(oracle_ok=False, oracle_max_abs_err=0.03)
    data = results(entries, device_name=device_name)
    data["machine_info"]["vecreg"] = {
        "device": "cuda",
        "device_name": device_name,
        "sm_count": 132,
        "memory_gb": 80,
        "driver": "570.00",
        "cuda": "12.8",
        "torch": "2.14.1",
        "triton": "3.8.0",
        "python": "3.11.7",
        "clocks": {"sm_mhz": 1980, "mem_mhz": 2619},
    }
    data["vecreg"] = {
        "complete": True,
        "cases_total": len(entries) + 2,
        "cases_done": len(entries) + 2,
        "skipped": [
            {"method": "jax", "problem": problems[0].name, "reason": "jax is not installed"}
        ],
        "failed": [
            {
                "method": "graphs",
                "problem": problems[2].name,
                "reason": "RuntimeError: CUDA graph capture failed",
            }
        ],
    }
    return data


# Samples of one fit, relative to its median: a steady case (IQR 2% of the median) and a noisy one.
STEADY_FACTORS = (0.98, 0.99, 1.0, 1.01, 1.03)
NOISY_FACTORS = (0.8, 0.85, 1.0, 1.16, 1.5)


def _case(
    method: str,
    problem: Problem,
    per_step: float,
    copy_gbs: float,
    device_name: str,
    factors: tuple[float, ...] = STEADY_FACTORS,
):
    fit = per_step * problem.steps
    samples = [fit * f for f in factors]
    e = entry(method, problem, samples, device="cuda", device_name=device_name)
    info = e["extra_info"]
    info.update(
        device_time_per_step_s=info["time_per_step_s"] * 0.93,
        copy_bandwidth_gbs=copy_gbs,
        copy_fraction=info["bandwidth_gbs"] / copy_gbs,
        setup_s={"compiled": 4.2, "triton_step": 0.8, "triton_fused": 1.1}.get(method, 0.0),
    )
    return e


def _good() -> dict[str, Any]:
    p = Problem(batch=4, dim=8, steps=10)
    return results([entry("analytic", p, [1e-3, 1.1e-3, 0.9e-3]), entry("autograd", p, [2e-3])])


def _mutated(change) -> str:
    """A valid file with one change made by `change(data, first entry)`."""
    data = _good()
    change(data, data["benchmarks"][0])
    return json.dumps(data)


def _set(where: str, key: str, value: Any):
    """A change that sets data[...][key] (where: "entry", "info", "stats", "vecreg", "machine",
    "env" or "top"), or deletes it when value is DELETE."""

    def change(data, entry):
        target = {
            "entry": entry,
            "info": entry["extra_info"],
            "stats": entry["stats"],
            "vecreg": data["vecreg"],
            "machine": data["machine_info"],
            "env": data["machine_info"]["vecreg"],
            "top": data,
        }[where]
        if value is DELETE:
            del target[key]
        else:
            target[key] = value

    return change


DELETE = object()
# The case the mutated field belongs to, as the error names it.
CASE = "analytic B4xD8-K10-lr0.01-float32 cpu"

# Unusable results files: name -> (content, or None for a missing file; words the error must say).
# One for each field the results model checks, and each way a file can be broken on disk.
BAD_FILES: dict[str, tuple[str | bytes | None, str]] = {
    "missing": (None, "no such file"),
    "empty": ("", "is empty"),
    "corrupt": ('{"benchmarks": [', "is not valid JSON"),
    "not-utf8": (b'{"benchmarks": ["\xff"]}', "cannot be read"),
    "foreign": (json.dumps({"hello": 1}), "not a pytest-benchmark results file"),
    "foreign-benchmark": (
        json.dumps({"benchmarks": [{"name": "x", "extra_info": {}, "stats": {}}]}),
        "not a vecreg-bench results file",
    ),
    "no-benchmarks": (json.dumps({"benchmarks": []}), "holds no benchmark results"),
    "deeply-nested": ('{"benchmarks": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "huge-integer": (
        _mutated(_set("info", "seed", 0)).replace('"seed": 0', '"seed": 1' + "0" * 5000),
        f"{CASE}': extra_info.seed is an integer of 5001 digits",
    ),
    "huge-integer-sample": (
        _mutated(_set("stats", "data", [0])).replace('"data": [0]', '"data": [1' + "0" * 400 + "]"),
        "stats.data[0] is an integer of 401 digits",
    ),
    "sample-infinity": (_mutated(_set("stats", "data", [1e-3, math.inf])), "stats.data[1]"),
    "sample-nan": (_mutated(_set("stats", "data", [math.nan])), "stats.data[0] is nan"),
    "sample-zero": (_mutated(_set("stats", "data", [1e-3, 0])), "stats.data[1] is 0"),
    "sample-negative": (_mutated(_set("stats", "data", [-1e-3])), "stats.data[0] is -0.001"),
    "sample-string": (_mutated(_set("stats", "data", ["1e-3"])), 'stats.data[0] is "1e-3"'),
    "sample-bool": (_mutated(_set("stats", "data", [True])), "stats.data[0] is true"),
    "sample-nested": (_mutated(_set("stats", "data", [[[1e-3]]])), "stats.data[0] is a list"),
    "no-samples": (_mutated(_set("stats", "data", [])), "stats.data is an empty list"),
    "samples-missing": (_mutated(_set("stats", "data", DELETE)), "stats.data is missing"),
    "stats-not-object": (_mutated(_set("entry", "stats", [1e-3])), "stats is a list"),
    "method-number": (_mutated(_set("info", "method", 3)), "extra_info.method is 3"),
    "problem-empty": (_mutated(_set("info", "problem", "")), "extra_info.problem"),
    "batch-zero": (_mutated(_set("info", "batch", 0)), f"{CASE}': extra_info.batch is 0"),
    "dim-float": (_mutated(_set("info", "dim", 8.5)), "extra_info.dim is 8.5"),
    "steps-bool": (_mutated(_set("info", "steps", True)), "extra_info.steps is true"),
    "lr-zero": (_mutated(_set("info", "lr", 0)), "extra_info.lr is 0"),
    "time-negative": (_mutated(_set("info", "time_per_step_s", -1.0)), "time_per_step_s is -1.0"),
    "time-nan": (_mutated(_set("info", "time_per_step_s", math.nan)), "time_per_step_s is nan"),
    "time-string": (_mutated(_set("info", "time_per_step_s", "fast")), 'time_per_step_s is "fast"'),
    "time-missing": (
        _mutated(_set("info", "time_per_step_s", DELETE)),
        "time_per_step_s is missing",
    ),
    "device-time-infinity": (
        _mutated(_set("info", "device_time_per_step_s", math.inf)),
        "device_time_per_step_s is inf",
    ),
    "speedup-zero": (_mutated(_set("info", "speedup_vs_autograd", 0)), "speedup_vs_autograd is 0"),
    "noisy-string": (_mutated(_set("info", "noisy", "no")), 'extra_info.noisy is "no"'),
    "oracle-string": (_mutated(_set("info", "oracle_ok", "yes")), 'extra_info.oracle_ok is "yes"'),
    "oracle-missing": (_mutated(_set("info", "oracle_ok", DELETE)), "oracle_ok is missing"),
    "machine-info-list": (_mutated(_set("top", "machine_info", [])), "machine_info is"),
    "environment-string": (_mutated(_set("machine", "vecreg", "cpu")), "machine_info.vecreg is"),
    "environment-nested": (
        _mutated(_set("env", "clocks", {"sm": {"mhz": 1}})),
        "machine_info.vecreg.clocks is nested too deeply",
    ),
    "device-name-number": (_mutated(_set("env", "device_name", 5)), "device_name"),
    "vecreg-list": (_mutated(_set("top", "vecreg", [])), "vecreg is"),
    "skipped-not-list": (_mutated(_set("vecreg", "skipped", "jax")), "vecreg.skipped is"),
    "skipped-method-number": (
        _mutated(_set("vecreg", "skipped", [{"method": 1, "problem": "p", "reason": "r"}])),
        "vecreg.skipped[0].method is 1",
    ),
    "complete-string": (_mutated(_set("vecreg", "complete", "yes")), "vecreg.complete"),
    "cases-total-negative": (_mutated(_set("vecreg", "cases_total", -1)), "vecreg.cases_total"),
    "convergence-string": (_mutated(_set("vecreg", "convergence", "none")), "vecreg.convergence"),
    "datetime-garbage": (_mutated(_set("top", "datetime", "yesterday")), "datetime is"),
    "commit-id-number": (_mutated(_set("top", "commit_info", {"id": 7})), "commit_info.id is 7"),
    "duplicate-case": (
        json.dumps(results([entry("analytic", Problem(batch=4, dim=8, steps=10), [1e-3])] * 2)),
        "holds the case",
    ),
}


def write_bad(folder: Path, name: str) -> tuple[Path, str]:
    """BAD_FILES[name] written in `folder` (not written if missing), and the words to expect."""
    content, words = BAD_FILES[name]
    path = folder / f"{name}.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    return path, words
