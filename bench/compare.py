"""Regression check: compare two results files case by case; verdicts come from intervals.

For each case, the ratio of medians candidate / baseline (seconds per fit) and its confidence
interval at level 1 - alpha (95% by default; bench.stats.ratio_interval: distribution-free, the
same samples always give the same interval) decide the verdict against the threshold:

- `regression`: the whole interval lies above 1 + threshold: the data show a slowdown beyond it;
- `improvement`: the whole interval lies below 1 - threshold;
- `unchanged`: the whole interval lies within 1 +- threshold;
- `inconclusive`: the interval straddles a bound: more samples (or a quieter run) would tell;
- `untested`: fewer than bench.stats.MIN_SAMPLES samples on a side.

Noise widens the interval; it never by itself turns a slowdown the interval proves into anything
else, and it never makes a change that the interval does not prove into a regression. No
correction for testing many cases at once: the threshold on the size of the change is what keeps a
sweep of dozens of cases from flagging noise (a false regression needs the whole interval beyond
it). Run-to-run drift of a whole machine is not in either run's samples: `bench ab` measures both
sides in one run, interleaved, to beat it.

The gate never passes a broken candidate: a case of the baseline that the candidate failed, skipped
or lacks is `missing` (a gate failure unless `allow_missing`), a candidate case whose oracle check
failed is `wrong` whatever its time, an interrupted candidate fails the gate, and an interrupted
run is refused as a baseline.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import stats
from bench.results import NOISY_IQR_OVER_MEDIAN, Case, Results, ResultsError

if TYPE_CHECKING:  # pandas is imported where a table is made: `compare --help` needs none of it
    import pandas as pd

# Most severe first: the order of rows in the text and Markdown tables.
VERDICTS = (
    "regression",
    "wrong",
    "missing",
    "inconclusive",
    "improvement",
    "untested",
    "unchanged",
)

TABLE_COLUMNS = (
    "case",
    "method",
    "problem",
    "dtype",
    "device",
    "baseline_n",
    "candidate_n",
    "baseline_median_s",
    "candidate_median_s",
    "ratio",
    "ci_low",
    "ci_high",
    "change",
    "verdict",
    "notes",
)


class DeviceMismatchError(ResultsError):
    """The two files were measured on different device models."""


@dataclass
class Comparison:
    """The outcome of comparing a candidate run with a baseline run.

    `table` has one row per case of the baseline (columns: TABLE_COLUMNS; times in seconds,
    `ratio` = candidate / baseline median with its interval [ci_low, ci_high] at 1 - alpha,
    `change` = ratio - 1); a case the candidate did not time is a `missing` row whose notes say
    why.
    """

    table: pd.DataFrame
    only_in_candidate: list[str]
    threshold: float
    alpha: float
    baseline_device: str
    candidate_device: str
    baseline_label: str = "baseline"
    candidate_label: str = "candidate"
    allow_missing: bool = False
    # None for a complete candidate; else how far the interrupted run got ("2 of 5 cases").
    candidate_incomplete: str | None = None

    @property
    def regressions(self) -> list[str]:
        return self._cases("regression")

    @property
    def wrong(self) -> list[str]:
        return self._cases("wrong")

    @property
    def missing(self) -> list[str]:
        return self._cases("missing")

    @property
    def failures(self) -> list[str]:
        """The cases that fail the gate: regressions, wrong answers and (unless allowed) missing
        cases."""
        failing = ("regression", "wrong") + (() if self.allow_missing else ("missing",))
        return [case for verdict in failing for case in self._cases(verdict)]

    @property
    def improvements(self) -> list[str]:
        return self._cases("improvement")

    @property
    def inconclusive(self) -> list[str]:
        return self._cases("inconclusive")

    @property
    def exit_code(self) -> int:
        """0: the gate passes; 1: a regression, a wrong or missing case, or an interrupted
        candidate."""
        return 1 if self.failures or self.candidate_incomplete else 0

    def _cases(self, verdict: str) -> list[str]:
        if self.table.empty:
            return []
        return self.table.loc[self.table["verdict"] == verdict, "case"].tolist()

    def _rows_by_severity(self) -> pd.DataFrame:
        order = {v: i for i, v in enumerate(VERDICTS)}
        return self.table.sort_values(
            "verdict", key=lambda col: col.map(order), kind="stable"
        ).reset_index(drop=True)

    def summary_frame(self) -> pd.DataFrame:
        """The rows of the terminal table, formatted, most severe first: for reports."""
        import pandas as pd

        header, rows = self._cells()
        return pd.DataFrame(rows, columns=header)

    def summary_lines(self) -> list[str]:
        """The verdict in a few lines: each regression named, then the other notable cases."""
        return self._summary()

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["case", "baseline", "candidate", "change", "evidence", "verdict", "notes"]
        rows = [
            [
                row.case,
                format_seconds(row.baseline_median_s),
                format_seconds(row.candidate_median_s),
                format_change(row.change),
                format_evidence(row),
                row.verdict,
                row.notes,
            ]
            for row in self._rows_by_severity().itertuples()
        ]
        return header, rows

    def _title(self) -> str:
        devices = (
            self.baseline_device
            if self.baseline_device == self.candidate_device
            else f"{self.baseline_device} (baseline) vs {self.candidate_device} (candidate)"
        )
        return (
            f"{self.candidate_label} vs {self.baseline_label} on {devices}: "
            f"threshold {self.threshold * 100:g}%, {1 - self.alpha:.0%} intervals of the ratio of "
            "medians of seconds per fit"
        )

    def _summary(self) -> list[str]:
        lines = []
        n = len(self.table)
        if self.candidate_incomplete:
            lines.append(
                f"INCOMPLETE candidate: the run was interrupted ({self.candidate_incomplete}); "
                "an unfinished run cannot pass the gate"
            )
        if self.regressions:
            lines.append(f"{len(self.regressions)} regression(s) out of {n} case(s):")
            for row in self.table[self.table["verdict"] == "regression"].itertuples():
                lines.append(
                    f"  REGRESSION {row.case}: {format_change(row.change)}, {format_evidence(row)}"
                )
        else:
            lines.append(f"no regression in {n} case(s)")
        for row in self.table[self.table["verdict"] == "wrong"].itertuples():
            lines.append(f"  WRONG {row.case}: {row.notes}")
        for row in self.table[self.table["verdict"] == "missing"].itertuples():
            tag = "missing (allowed)" if self.allow_missing else "MISSING"
            lines.append(f"  {tag} {row.case}: {row.notes}")
        if self.improvements:
            lines.append(f"{len(self.improvements)} improvement(s): {', '.join(self.improvements)}")
        if self.inconclusive:
            lines.append(
                f"{len(self.inconclusive)} inconclusive (the interval straddles a bound of the "
                "threshold: more samples or a quieter run would tell; re-run them, or use "
                f"`python -m bench ab`): {', '.join(self.inconclusive)}"
            )
        untested = self._cases("untested")
        if untested:
            lines.append(
                f"{len(untested)} untested (fewer than {stats.MIN_SAMPLES} raw samples a side): "
                f"{', '.join(untested)}"
            )
        if self.baseline_device != self.candidate_device:
            lines.append(
                "note: different device models, compared because --allow-device-mismatch was given"
            )
        for case in self.only_in_candidate:
            lines.append(f"only in candidate: {case}")
        return lines

    def to_text(self) -> str:
        """A terminal table, most severe verdicts first, then a summary naming each regression."""
        header, rows = self._cells()
        lines = [self._title(), ""]
        if rows:
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            right = {1, 2, 3}  # numbers right-aligned
            for r in [header, *rows]:
                cells = [
                    c.rjust(w) if i in right else c.ljust(w)
                    for i, (c, w) in enumerate(zip(r, widths, strict=True))
                ]
                lines.append("  ".join(cells).rstrip())
        else:
            lines.append("no case is present in both files")
        lines.append("")
        lines.extend(self._summary())
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """The same, as Markdown for a CI comment."""
        status = "gate passes" if self.exit_code == 0 else "**gate fails**"
        if self.regressions:
            status += f": **{len(self.regressions)} regression(s)**"
        lines = [f"### Benchmark comparison: {status}", "", self._title(), ""]
        header, rows = self._cells()
        if rows:
            lines.append("| " + " | ".join(header) + " |")
            lines.append(
                "| "
                + " | ".join("---:" if i in (1, 2, 3) else "---" for i in range(len(header)))
                + " |"
            )
            for r in rows:
                cells = [c.replace("|", "\\|") for c in r]
                if r[5] in ("regression", "wrong") or (
                    r[5] == "missing" and not self.allow_missing
                ):
                    cells = [f"**{c}**" if c else c for c in cells]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        lines.extend(f"- {line.strip()}" for line in self._summary())
        return "\n".join(lines) + "\n"


def compare_files(
    baseline: str | Path,
    candidate: str | Path,
    threshold: float = 0.10,
    alpha: float = 0.05,
    allow_device_mismatch: bool = False,
    allow_missing: bool = False,
) -> Comparison:
    """Load two results files and compare them (see `compare`). ResultsError on a bad file."""
    return compare(
        Results.load(baseline),
        Results.load(candidate),
        threshold=threshold,
        alpha=alpha,
        allow_device_mismatch=allow_device_mismatch,
        allow_missing=allow_missing,
    )


def compare(
    base: Results,
    cand: Results,
    threshold: float = 0.10,
    alpha: float = 0.05,
    allow_device_mismatch: bool = False,
    allow_missing: bool = False,
) -> Comparison:
    """Compare two runs, matching cases by (method, problem, dtype, device)."""
    import pandas as pd

    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold={threshold!r} is not allowed; it must be a fraction >= 0")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not allowed; it must be between 0 and 1")
    if not base.complete:
        raise ResultsError(
            f"{base.path}: is not a complete run ({base.progress()}, interrupted or never marked "
            "complete); it cannot be a baseline"
        )
    if base.device_name != cand.device_name and not allow_device_mismatch:
        raise DeviceMismatchError(
            f"{base.path} was measured on {base.device_name!r} and {cand.path} on "
            f"{cand.device_name!r}: timings from different device models are not comparable "
            "(pass --allow-device-mismatch to compare anyway)"
        )
    base_cases, cand_cases = base.by_key(), cand.by_key()
    reasons = {(n.method, n.problem): f"{n.status}: {n.reason}" for n in cand.not_measured}
    rows = []
    for key, case in base_cases.items():
        if key in cand_cases:
            rows.append(_compare_case(case, cand_cases[key], threshold, alpha))
        else:
            why = reasons.get(key[:2], "absent from the candidate")
            rows.append(_missing_case(case, f"{why} (ran in the baseline)"))
    return Comparison(
        table=pd.DataFrame(rows, columns=list(TABLE_COLUMNS)),
        only_in_candidate=[case.name for k, case in cand_cases.items() if k not in base_cases],
        threshold=threshold,
        alpha=alpha,
        baseline_device=base.device_name,
        candidate_device=cand.device_name,
        baseline_label=str(base.path),
        candidate_label=str(cand.path),
        allow_missing=allow_missing,
        candidate_incomplete=None if cand.complete else cand.progress(),
    )


def _missing_case(base: Case, reason: str) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(("method", "problem", "dtype", "device"), base.key, strict=True))
    row.update(case=base.name, baseline_n=base.samples.size, candidate_n=0)
    row.update(baseline_median_s=float(np.median(base.samples)), candidate_median_s=math.nan)
    row.update(ratio=math.nan, change=math.nan, ci_low=math.nan, ci_high=math.nan)
    row.update(verdict="missing", notes=reason)
    return row


def _compare_case(base: Case, cand: Case, threshold: float, alpha: float) -> dict[str, Any]:
    # The results model guarantees at least one sample per side, each finite and > 0.
    b, c = base.samples, cand.samples
    row: dict[str, Any] = dict(zip(("method", "problem", "dtype", "device"), base.key, strict=True))
    row.update(case=base.name, baseline_n=b.size, candidate_n=c.size)
    b_med, c_med = float(np.median(b)), float(np.median(c))
    row.update(baseline_median_s=b_med, candidate_median_s=c_med, ratio=c_med / b_med)
    row.update(change=c_med / b_med - 1, ci_low=math.nan, ci_high=math.nan)
    notes = [
        f"noisy {side} (IQR {spread:.0%} of median)"
        for side, spread in (
            ("baseline", stats.iqr_over_median(b)),
            ("candidate", stats.iqr_over_median(c)),
        )
        if spread > NOISY_IQR_OVER_MEDIAN
    ]
    enough = min(b.size, c.size) >= stats.MIN_SAMPLES
    if enough:
        interval = stats.ratio_interval(c, b, level=1 - alpha)
        row.update(ci_low=interval.low, ci_high=interval.high)
    if not cand.oracle_ok:
        # A fast wrong answer is not an improvement: the gate fails whatever the time.
        verdict = "wrong"
        err = cand.info["oracle_max_abs_err"]
        shown = "not recorded" if err is None else f"{err:.3g}"
        notes.insert(0, f"oracle check failed in the candidate (max |x_K - oracle|: {shown})")
    elif not enough:
        verdict = "untested"
        notes.insert(0, f"too few samples ({b.size}/{c.size}) for an interval")
    else:
        verdict = verdict_of(row["ci_low"], row["ci_high"], threshold)
    row.update(verdict=verdict, notes="; ".join(notes))
    return row


def verdict_of(low: float, high: float, threshold: float) -> str:
    """The verdict of a ratio interval [low, high] against 1 +- threshold."""
    if low > 1 + threshold:
        return "regression"
    if high < 1 - threshold:
        return "improvement"
    if 1 - threshold <= low and high <= 1 + threshold:
        return "unchanged"
    return "inconclusive"


def format_seconds(seconds: float) -> str:
    """Three significant digits in s, ms, us or ns: '2.00 ms', '800 us', '1.20 s'."""
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = float(f"{seconds:.3g}")  # round first: 999.6 us is shown as 1.00 ms
    unit, scale = next(
        ((u, k) for u, k in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)) if abs(seconds) >= k),
        ("ns", 1e-9),
    )
    value = seconds / scale
    decimals = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 2
    return f"{value:.{decimals}f} {unit}"


def format_change(change: float) -> str:
    return "-" if change is None or math.isnan(change) else f"{change:+.1%}"


def format_evidence(row: Any) -> str:
    """'ratio in [1.21, 1.38]' (the interval of candidate / baseline), or '-'."""
    if math.isnan(row.ci_low):
        return "-"
    return f"ratio in [{row.ci_low:.3g}, {row.ci_high:.3g}]"


# --- command line -------------------------------------------------------------------------------


def parse_threshold(text: str) -> float:
    """'10%' or '0.1' -> 0.1. ValueError (with a hint) otherwise."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise ValueError(f"--threshold {text!r} is not a number; use e.g. 10% or 0.1") from None
    if percent:
        value /= 100
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--threshold {text!r} is not allowed; it must be >= 0, e.g. 10% or 0.1")
    if not percent and value >= 1:
        raise ValueError(
            f"--threshold {text!r} is ambiguous: a bare number is a fraction; "
            f"write {raw}% for percent"
        )
    return value


def parse_alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--alpha {text!r} is not a number; use e.g. 0.05") from None
    if not 0 < value < 1:
        raise ValueError(f"--alpha {text!r} is not allowed; it must be between 0 and 1")
    return value


def add_verdict_options(parser: argparse.ArgumentParser) -> None:
    """--threshold and --alpha: what a verdict is read against (compare, ab)."""
    parser.add_argument(
        "--threshold",
        default="10%",
        help="smallest slowdown that counts, as 10%% or 0.1 (default: 10%%)",
    )
    parser.add_argument(
        "--alpha",
        default="0.05",
        help="1 - the confidence level of the intervals (default: 0.05, 95%% intervals)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare a candidate results file with a baseline, case by case. A case is a regression "
        "when the whole confidence interval of the ratio of medians (candidate / baseline) lies "
        "above 1 + threshold. Exit code: 0 the gate passes; 1 a regression, a wrong or missing "
        "case, or an interrupted candidate; 2 bad input."
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="BASELINE.json CANDIDATE.json, or only CANDIDATE.json with --baseline-for-device",
    )
    parser.add_argument(
        "--baseline-for-device",
        action="store_true",
        help="use reports/baselines/<device-slug>.json for the candidate's device as the baseline",
    )
    parser.add_argument(
        "--reports",
        default="reports",
        metavar="DIR",
        help="where the baselines/ folder is (default: reports)",
    )
    add_verdict_options(parser)
    parser.add_argument(
        "--allow-device-mismatch",
        action="store_true",
        help="compare even when the files were measured on different device models",
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="let cases that ran in the baseline but not in the candidate pass the gate",
    )
    parser.add_argument(
        "--markdown", metavar="FILE", default=None, help="also write the comparison as Markdown"
    )


def run(args: argparse.Namespace) -> int:
    from bench.baseline import baseline_path
    from bench.cli import UsageError

    try:
        threshold = parse_threshold(args.threshold)
        alpha = parse_alpha(args.alpha)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.baseline_for_device:
        if len(args.files) != 1:
            raise UsageError("with --baseline-for-device, give only the candidate results file")
        candidate = Path(args.files[0])
        device = Results.load(candidate).device_name
        baseline = baseline_path(device, Path(args.reports))
        if not baseline.exists():
            raise UsageError(
                f"no baseline for {device!r}: {baseline} does not exist "
                f"(save one with: python -m bench baseline save {candidate})"
            )
    else:
        if len(args.files) != 2:
            raise UsageError(
                "give BASELINE.json CANDIDATE.json, or --baseline-for-device CANDIDATE.json"
            )
        baseline, candidate = (Path(f) for f in args.files)
    markdown = _markdown_target(args.markdown, baseline, candidate)
    comparison = compare_files(
        baseline, candidate, threshold, alpha, args.allow_device_mismatch, args.allow_missing
    )
    print(comparison.to_text(), end="")
    if markdown is not None:
        try:
            markdown.write_text(comparison.to_markdown(), encoding="utf-8")
        except OSError as exc:  # said, but the verdict's exit code stands
            print(
                f"error: {markdown}: the Markdown was not written ({exc.strerror or exc})",
                file=sys.stderr,
            )
        else:
            print(f"markdown: {markdown}")
    return comparison.exit_code


def _markdown_target(value: str | None, baseline: Path, candidate: Path) -> Path | None:
    """--markdown's file, checked before comparing (bench.paths): not empty, not a folder, its
    folder writable, and not one of the inputs."""
    from bench.paths import check_file, check_not_inputs

    if value is None:
        return None
    path = check_file(value.strip() and value, "--markdown")
    check_not_inputs(
        [("--markdown", path, path)], [("baseline", baseline), ("candidate", candidate)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
