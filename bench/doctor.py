"""`python -m bench doctor`: what the harness needs, and what this machine has.

One table: Python and each package (version, whether it is required, what it is for), the compilers
Triton and torch.compile build with, the CUDA device, a writable reports folder; then each method,
"can run here" or the reason it cannot. Exit 0 when the main job can run here, 1 otherwise.
Package versions are read from their metadata, not by importing them, except torch (the device and
the methods need it), so doctor itself runs wherever Python does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

MIN_PYTHON = (3, 10)


@dataclass(frozen=True)
class Need:
    """One thing the harness uses: `required` for the main job, else what lacking it costs."""

    name: str
    distribution: str | None  # the package to read a version of; None for non-packages
    minimum: str | None
    required: bool
    purpose: str


PACKAGES = (
    Need("torch", "torch", "2.8", True, "every method"),
    Need("triton", "triton", "3.4", False, "triton_step and triton_fused"),
    Need("pytest", "pytest", "8", True, "the benchmark suite"),
    Need("pytest-benchmark", "pytest-benchmark", "5.2", True, "timing and results files"),
    Need("pandas", "pandas", "2.0", True, "tables and reports"),
    Need("seaborn", "seaborn", "0.13", True, "report plots"),
    Need("scipy", "scipy", "1.10", False, "history check and history report (with ruptures)"),
    Need("tqdm", "tqdm", "4.60", False, "progress bars"),
    Need("ruptures", "ruptures", "1.1", False, "change points: history check and history report"),
    Need("jax", "jax", "0.4", False, "the jax peer method"),
    Need("nvidia-ml-py", "nvidia-ml-py", "12", False, "GPU clocks and throttling in results"),
)


@dataclass(frozen=True)
class Row:
    item: str
    found: str
    status: str  # "ok", "missing" (required), "optional" (not there, costs a feature), "info"
    note: str = ""


def package_row(need: Need) -> Row:
    try:
        version = importlib.metadata.version(need.distribution)
    except importlib.metadata.PackageNotFoundError:
        status = "missing" if need.required else "optional"
        return Row(need.name, "not installed", status, f"needed for {need.purpose}")
    if need.minimum and _older(version, need.minimum):
        status = "missing" if need.required else "optional"
        return Row(need.name, version, status, f"{need.minimum} or newer needed for {need.purpose}")
    return Row(need.name, version, "ok", need.purpose)


def _older(version: str, minimum: str) -> bool:
    try:
        return Version(version) < Version(minimum)
    except InvalidVersion:
        return False


def toolchain_rows() -> list[Row]:
    """Python itself, the C compiler and Python's headers (Triton builds its launcher with them;
    torch.compile on the CPU builds C++)."""
    python = ".".join(map(str, sys.version_info[:3]))
    rows = [
        Row(
            "python",
            python,
            "ok" if sys.version_info[:2] >= MIN_PYTHON else "missing",
            f"{'.'.join(map(str, MIN_PYTHON))} or newer",
        )
    ]
    compiler = shutil.which("gcc") or shutil.which("cc") or shutil.which("c++")
    rows.append(
        Row(
            "C compiler",
            compiler or "not found",
            "ok" if compiler else "optional",
            "torch.compile on the CPU (compiled) and Triton's launcher",
        )
    )
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    rows.append(
        Row(
            "Python headers",
            str(header) if header.exists() else "not found",
            "ok" if header.exists() else "optional",
            "Triton's launcher (Debian: apt-get install python3-dev)",
        )
    )
    return rows


def device_rows() -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        return [Row("CUDA device", "none", "info", "methods run on the CPU")]
    rows = []
    for index in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(index)
        l2 = getattr(p, "L2_cache_size", 0)
        found = (
            f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
            f"{p.multi_processor_count} SMs, L2 {l2 / 2**20:.0f} MiB"
        )
        rows.append(Row(f"cuda:{index}", found, "ok", f"torch {torch.version.cuda} build"))
    from bench.environment import nvml_info

    driver = nvml_info(0).get("driver")
    if driver:
        rows.append(Row("driver", str(driver), "info", "through NVML"))
    return rows


def reports_row(reports: Path) -> Row:
    from bench.paths import OutputPathError, check_folder

    try:
        check_folder(reports, "reports")
    except OutputPathError as exc:
        return Row("reports folder", str(reports), "missing", str(exc))
    return Row("reports folder", str(reports.resolve()), "ok", "writable")


def method_rows(device: str) -> list[tuple[str, str | None]]:
    """(method, None if it can run on `device`, else the reason it cannot)."""
    from bench.methods import METHODS

    rows = []
    for name, method in METHODS.items():
        try:
            reason = method.available(device)
        except Exception as exc:  # a method that cannot even say: that is the news
            reason = f"{type(exc).__name__}: {exc}"
        rows.append((name, reason))
    return rows


def diagnose(
    reports: Path = Path("reports"),
) -> tuple[list[Row], list[tuple[str, str | None]], str]:
    """(requirements, methods, device): the table's two parts and the device the methods are for."""
    rows = toolchain_rows() + [package_row(need) for need in PACKAGES]
    torch_ok = next(r for r in rows if r.item == "torch").status == "ok"
    device = "cpu"
    methods: list[tuple[str, str | None]] = []
    if torch_ok:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        rows += device_rows()
        methods = method_rows(device)
    rows.append(reports_row(reports))
    return rows, methods, device


def format_table(rows: list[Row]) -> list[str]:
    cells = [("need", "found", "status", "what for")]
    cells += [(r.item, r.found, r.status, r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    return [
        "  ".join(c[i].ljust(widths[i]) for i in range(3)) + ("  " + c[3] if c[3] else "")
        for c in cells
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "What the harness needs and what this machine has: packages, compilers, the CUDA device, "
        "a writable reports folder, and each method. Exit 0 when the main job can run here."
    )
    parser.add_argument(
        "--reports", type=Path, default=Path("reports"), metavar="DIR", help="(default: reports)"
    )


def run(args: argparse.Namespace) -> int:
    rows, methods, device = diagnose(args.reports)
    print("\n".join(format_table(rows)))
    if methods:
        print(f"\nMethods on {device}:")
        width = max(len(name) for name, _ in methods)
        for name, reason in methods:
            print(f"  {name.ljust(width)}  {'can run here' if reason is None else reason}")
    missing = [r.item for r in rows if r.status == "missing"]
    if missing:
        print(f"\nThe main job cannot run here: {', '.join(missing)} missing or too old.")
        return 1
    print(f"\nThe main job can run here (on {device}, {os.cpu_count()} CPU cores).")
    return 0
