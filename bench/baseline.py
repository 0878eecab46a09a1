"""Baselines per device: `reports/baselines/<device-slug>.json`, committed to git.

A baseline is a results file, copied verbatim (so `pytest-benchmark compare` still reads it), named
after the device model it was measured on: timings from one GPU model say nothing about another.
`python -m bench compare --baseline-for-device RESULTS.json` picks the one for RESULTS' device.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from bench.results import ResultsError, device_name, load_results

BASELINES = "baselines"


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': lower case, runs of anything but
    letters and digits become one '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-device"


def baseline_path(device: str, reports: Path = Path("reports")) -> Path:
    """Where the baseline of the device model `device` lives."""
    return Path(reports) / BASELINES / f"{device_slug(device)}.json"


def newest_results(reports: Path = Path("reports")) -> Path:
    """The most recently modified valid results file under `reports/` (any depth, pytest-benchmark
    storage included), leaving out the baselines themselves. Files that are not results files
    (report metadata, half-written files) are passed over. ResultsError if there is none."""
    reports = Path(reports)
    baselines = (reports / BASELINES).resolve()
    found = []
    for path in reports.rglob("*.json"):
        if baselines in path.resolve().parents or not path.is_file():
            continue
        try:
            load_results(path)
        except ResultsError:
            continue
        found.append((path.stat().st_mtime, str(path), path))
    if not found:
        raise ResultsError(f"{reports}: no results file found (run a sweep first)")
    return max(found)[2]


def save_baseline(results: Path, reports: Path = Path("reports")) -> Path:
    """Copy `results` to the baseline of its device, atomically: a reader (or a crash) never sees
    a half-written baseline. Returns the baseline's path."""
    data = load_results(results)
    target = baseline_path(device_name(data), reports)
    target.parent.mkdir(parents=True, exist_ok=True)
    content = Path(results).read_bytes()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a baseline is for everyone to read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Baselines per device model, in reports/baselines/<device-slug>.json (committed to git)."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    save = actions.add_parser(
        "save",
        help="save a results file as the baseline of the device it was measured on",
        description="Copy RESULTS.json (default: the newest results file under reports/) to "
        "reports/baselines/<device-slug>.json, replacing the device's previous baseline.",
    )
    save.add_argument("results", nargs="?", default=None, metavar="RESULTS.json")
    actions.add_parser(
        "path",
        help="print the baseline path of a results file's device",
    ).add_argument("results", metavar="RESULTS.json")
    for sub in actions.choices.values():
        sub.add_argument(
            "--reports", default="reports", metavar="DIR", help="reports folder (default: reports)"
        )


def run(args: argparse.Namespace) -> int:
    reports = Path(args.reports)
    if args.action == "path":
        print(baseline_path(device_name(load_results(args.results)), reports))
        return 0
    results = Path(args.results) if args.results else newest_results(reports)
    device = device_name(load_results(results))
    replaced = baseline_path(device, reports).exists()
    target = save_baseline(results, reports)
    print(
        f"saved {results} as the baseline for {device!r}: {target}"
        + (" (replaced the previous one)" if replaced else "")
    )
    print(f"commit it: git add {target}")
    return 0
