"""Baselines per device: `reports/baselines/<device-slug>.json`, committed to git.

A baseline is a results file, copied verbatim (so `pytest-benchmark compare` still reads it), named
after the device model it was measured on: timings from one GPU model say nothing about another.
`python -m bench compare --baseline-for-device RESULTS.json` picks the one for RESULTS' device.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bench.results import Results, ResultsError, write_atomically

BASELINES = "baselines"
# Where runs save their results files by default (bench.plugin.RESULTS_DIR, under reports/).
RESULTS = "results"


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': lower case, runs of anything but
    letters and digits become one '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-device"


def baseline_path(device: str, reports: Path = Path("reports")) -> Path:
    """Where the baseline of the device model `device` lives."""
    return Path(reports) / BASELINES / f"{device_slug(device)}.json"


def newest_results(reports: Path = Path("reports")) -> Path:
    """The newest complete run under `reports/results/`, by the time it was measured (then by
    file time). Reports' copies of a run, baselines and interrupted runs are passed over, and so
    are files that are not results files. ResultsError if there is none."""
    folder = Path(reports) / RESULTS
    found = []
    for path in folder.glob("*.json"):
        try:
            results = Results.load(path)
        except ResultsError:
            continue
        if results.complete:
            when = results.measured_at.timestamp() if results.measured_at else 0.0
            found.append((when, path.stat().st_mtime, str(path), path))
    if not found:
        raise ResultsError(f"{folder}: no complete results file found (run a sweep first)")
    return max(found)[3]


def save_baseline(results: Path, reports: Path = Path("reports")) -> Path:
    """Copy `results` to the baseline of its device, atomically: a reader (or a crash) never sees
    a half-written baseline. Returns the baseline's path. ResultsError for an unusable file or an
    interrupted run."""
    loaded = Results.load(results)
    if not loaded.complete:
        raise ResultsError(
            f"{results}: is not a complete run ({loaded.progress()}, interrupted or never marked "
            "complete); an unfinished run is never a baseline"
        )
    target = baseline_path(loaded.device_name, reports)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, Path(results).read_text(encoding="utf-8"))
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Baselines per device model, in reports/baselines/<device-slug>.json (committed to git)."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    save = actions.add_parser(
        "save",
        help="save a results file as the baseline of the device it was measured on",
        description="Copy RESULTS.json (default: the newest complete run under "
        "reports/results/) to reports/baselines/<device-slug>.json, replacing the device's "
        "previous baseline. An interrupted run is refused.",
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
        print(baseline_path(Results.load(args.results).device_name, reports))
        return 0
    results = Path(args.results) if args.results else newest_results(reports)
    device = Results.load(results).device_name
    replaced = baseline_path(device, reports).exists()
    target = save_baseline(results, reports)
    print(
        f"saved {results} as the baseline for {device!r}: {target}"
        + (" (replaced the previous one)" if replaced else "")
    )
    print(f"commit it: git add {target}")
    return 0
