"""Small synthetic results files in the project's format (see bench.results), for tests that must
not time anything."""

from __future__ import annotations

import json
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
        "vecreg": {"skipped": [], "failed": []},
    }


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path
