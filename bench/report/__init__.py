"""Reports from results files: CSV and Markdown tables, seaborn plots, one self-contained HTML page.

    from bench.report import write_report
    run_dir = write_report(Path("results.json"))   # reports/<run-id>/, and reports/latest/

The heavy imports (pandas, seaborn, matplotlib) happen on the first call, not on import, so the
command line stays quick to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def write_report(
    results: Path,
    out: Path | None = None,
    baseline: Path | None = None,
    convergence: pd.DataFrame | None = None,
    traces: pd.DataFrame | None = None,
) -> Path:
    """Build `out/<run-id>/` from a results file and point `out/latest` at it; return the run dir.

    `out` defaults to `reports/`. `baseline`, a second results file, adds a comparison section.
    `convergence` and `traces` are `bench.convergence.convergence_study()`'s table and traces;
    without them the report says there is no convergence study. Every file is written into a
    temporary directory beside the target and renamed into place when complete. A missing, empty,
    corrupt or foreign results file raises bench.results.ResultsError naming the file.
    """
    from bench.report.build import write_report as build_report

    return build_report(results, out, baseline, convergence, traces)


__all__ = ["write_report"]
