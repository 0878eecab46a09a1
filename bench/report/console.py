"""The main job's summary on the terminal: the speedups with their 95% intervals, the question's
case in one line, and the convergence table.

The speedups are the report's own view (bench.report.tables.speedup_view), in the same words as
the HTML page and summary.md, caption included.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import pandas as pd

    from bench.report.tables import Table

WIDTH = 100  # the caption's wrap width; the tables are as wide as they need


def print_summary(
    results: Path, convergence: pd.DataFrame | None, out: TextIO | None = None
) -> None:
    """The speedups per problem (with intervals), the question's case in one line, and the
    convergence table (`bench.convergence.convergence_study()`'s; None prints no study)."""
    import pandas as pd

    from bench.report import tables
    from bench.results import load_results

    out = sys.stdout if out is None else out
    view = tables.speedup_view(tables.cases_frame(load_results(results)))
    print("\nSpeedup over autograd (median time per step, with its 95% interval):", file=out)
    if view is None:
        print("  no timings", file=out)
    else:
        print(text_table(view), file=out)
        caption = textwrap.fill(view.caption, WIDTH, initial_indent="  ", subsequent_indent="  ")
        print(caption, file=out)
    if convergence is None:
        return
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        _print_convergence(convergence, out)


def text_table(table: Table, indent: str = "  ") -> str:
    """`table` as aligned plain text: the first column left-aligned, the others right-aligned."""
    lines = [table.header, *table.rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(table.header))]
    return "\n".join(
        indent
        + "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in lines
    )


def _print_convergence(table: pd.DataFrame, out: TextIO) -> None:
    from bench.convergence import STUDY_COLUMNS

    measured = table[table.verdict != "skipped"]
    answer = measured[measured.lr.isin([0.01, 0.1]) & (measured.method != "original_question")]
    if not answer.empty:
        first = answer.iloc[0].method
        steps = answer[answer.method == first].set_index("lr").step_to_1pct
        said = " and ".join(f"step {steps[lr]} with lr {lr:g}" for lr in steps.index)
        print(
            f"\nThe question's case (D=5, 1000 steps): the distance first falls to 1% of its "
            f"start at {said} ({first}).",
            file=out,
        )
    columns = [c for c in STUDY_COLUMNS if c != "note"]  # the notes follow the table
    print("\nConvergence (the question's case, each method at each lr):", file=out)
    shown = measured[columns].astype({"step_to_1pct": object, "step_to_1e-6": object})
    shown = shown.fillna({"step_to_1pct": "-", "step_to_1e-6": "-"})
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"), file=out)
    for row in table[(table.note != "")].itertuples(index=False):
        print(f"  {row.method}: {row.note}", file=out)
