"""Regression check: compare two results files case by case and flag only real slowdowns.

A case is a regression when the candidate's median is slower than the baseline's by more than
`threshold` AND the raw samples say the difference is not noise (one-sided test at `alpha`).
Improvements are the mirror image. A big change that is not significant is "inconclusive", and so
is a significant one where either run was noisy (IQR above 10% of the median, the same bound as the
results' `noisy` flag): the test only sees the spread within each run, and an unsteady run may have
been slow as a whole, so such a case is named for a re-run rather than failed.

Significance, on the raw samples (seconds per fit) of each side:

- both sides with >= MWU_MIN_SAMPLES (8) samples: Mann-Whitney U, one-sided (exact below 9 per
  side, asymptotic above, as scipy picks). Why 8: the smallest p-value the exact test can give is
  1 / C(n1 + n2, n1): 1/70 = 0.014 at 4 + 4, which can never pass alpha = 0.01; 1/252 at 5 + 5,
  which passes only when every candidate sample is slower than every baseline sample; 1/12870 at
  8 + 8, which leaves room for a few overlapping samples in a real slowdown.
- both sides with 3 to 7 samples: a percentile bootstrap of the ratio of medians (each side
  resampled on its own, BOOTSTRAP_RESAMPLES times, seeded so that verdicts are reproducible). The
  p-value is the share of resampled ratios on the other side of 1, so "p < alpha" is the same as
  "1 lies outside the one-sided (1 - alpha) interval", which is shown too.
- fewer than 3 on either side: no test ("untested"): one or two samples cannot tell noise apart.

No correction for testing many cases at once: the threshold on the size of the change is what keeps
a sweep of dozens of cases from flagging noise.

The gate never passes a broken candidate: a case of the baseline that the candidate failed, skipped
or lacks is `missing` (a gate failure unless `allow_missing`), a candidate case whose oracle check
failed is `wrong` whatever its time, an interrupted candidate fails the gate, and an interrupted
run is refused as a baseline.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from bench.results import NOISY_IQR_OVER_MEDIAN, Case, Results, ResultsError

MWU_MIN_SAMPLES = 8
BOOTSTRAP_MIN_SAMPLES = 3
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

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
    "change",
    "test",
    "p_value",
    "ci_low",
    "ci_high",
    "significant",
    "verdict",
    "notes",
)


class DeviceMismatchError(ResultsError):
    """The two files were measured on different device models."""


@dataclass
class Comparison:
    """The outcome of comparing a candidate run with a baseline run.

    `table` has one row per case of the baseline (columns: TABLE_COLUMNS; times in seconds,
    `change` = ratio - 1, `p_value` one-sided in the direction of the change); a case the
    candidate did not time is a `missing` row whose notes say why.
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
            f"threshold {self.threshold * 100:g}%, alpha {self.alpha:g}, medians of seconds per fit"
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
                f"{len(self.inconclusive)} inconclusive (changed beyond the threshold, but the "
                f"samples are too noisy to tell; re-run them): {', '.join(self.inconclusive)}"
            )
        untested = self._cases("untested")
        if untested:
            lines.append(
                f"{len(untested)} untested (fewer than {BOOTSTRAP_MIN_SAMPLES} raw samples): "
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
    alpha: float = 0.01,
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
    alpha: float = 0.01,
    allow_device_mismatch: bool = False,
    allow_missing: bool = False,
) -> Comparison:
    """Compare two runs, matching cases by (method, problem, dtype, device)."""
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
    row.update(ratio=math.nan, change=math.nan, test="none", p_value=math.nan)
    row.update(ci_low=math.nan, ci_high=math.nan, significant=False)
    row.update(verdict="missing", notes=reason)
    return row


def _compare_case(base: Case, cand: Case, threshold: float, alpha: float) -> dict[str, Any]:
    # The results model guarantees at least one sample per side, each finite and > 0.
    b, c = base.samples, cand.samples
    row: dict[str, Any] = dict(zip(("method", "problem", "dtype", "device"), base.key, strict=True))
    row.update(case=base.name, baseline_n=b.size, candidate_n=c.size)
    row.update(test="none", p_value=math.nan, ci_low=math.nan, ci_high=math.nan)
    notes = []
    b_med, c_med = float(np.median(b)), float(np.median(c))
    ratio = c_med / b_med
    change = ratio - 1
    row.update(baseline_median_s=b_med, candidate_median_s=c_med, ratio=ratio, change=change)
    slower = ratio > 1

    if b.size >= MWU_MIN_SAMPLES and c.size >= MWU_MIN_SAMPLES:
        # x = candidate: 'greater' means the candidate's times are stochastically larger: slower.
        p = mannwhitneyu(c, b, alternative="greater" if slower else "less").pvalue
        row.update(test="mann-whitney", p_value=float(p))
    elif b.size >= BOOTSTRAP_MIN_SAMPLES and c.size >= BOOTSTRAP_MIN_SAMPLES:
        ratios = _bootstrap_ratios(b, c)
        beyond = np.count_nonzero(ratios <= 1) if slower else np.count_nonzero(ratios >= 1)
        row.update(
            test="bootstrap",
            p_value=float(beyond / ratios.size),
            ci_low=float(np.quantile(ratios, alpha)),
            ci_high=float(np.quantile(ratios, 1 - alpha)),
        )
        notes.append(f"few samples ({b.size}/{c.size}): bootstrap")
    p = row["p_value"]
    significant = bool(p < alpha) if not math.isnan(p) else False
    row["significant"] = significant

    noisy = [
        f"noisy {side} (IQR {spread:.0%} of median)"
        for side, spread in (("baseline", _iqr_over_median(b)), ("candidate", _iqr_over_median(c)))
        if spread > NOISY_IQR_OVER_MEDIAN
    ]
    beyond_threshold = change > threshold if slower else change < -threshold
    if not cand.oracle_ok:
        # A fast wrong answer is not an improvement: the gate fails whatever the time.
        verdict = "wrong"
        err = cand.info["oracle_max_abs_err"]
        shown = "not recorded" if err is None else f"{err:.3g}"
        notes.insert(0, f"oracle check failed in the candidate (max |x_K - oracle|: {shown})")
    elif row["test"] == "none":
        verdict = "untested"
        notes.append(f"too few samples ({b.size}/{c.size}) for a test")
    elif beyond_threshold and significant and noisy:
        # The test compares samples within each run; a run that was this unsteady may have been
        # slow as a whole (another process, a bad memory placement), which no within-run test
        # sees. Such a timing is flagged untrustworthy in the results, so it cannot fail a gate.
        verdict = "inconclusive"
        notes.append(f"significantly {'slower' if slower else 'faster'}, but a run was noisy")
    elif beyond_threshold and significant:
        verdict = "regression" if slower else "improvement"
    elif beyond_threshold:
        verdict = "inconclusive"
        notes.append(f"{'slower' if slower else 'faster'} but not significant")
    else:
        verdict = "unchanged"
        if significant and not math.isnan(change) and change != 0:
            notes.append(f"significantly {'slower' if slower else 'faster'}, within threshold")
    row.update(verdict=verdict, notes="; ".join(notes + noisy))
    return row


def _bootstrap_ratios(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ratios of medians (candidate / baseline) of BOOTSTRAP_RESAMPLES paired resamples."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    return _bootstrap_medians(c, rng) / _bootstrap_medians(b, rng)


# Above this many samples the medians of resamples are drawn from their distribution instead of
# resampling: BOOTSTRAP_RESAMPLES x n values would not fit in memory for n in the millions.
DIRECT_RESAMPLING_MAX = 256


def _bootstrap_medians(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """BOOTSTRAP_RESAMPLES medians of resamples (with replacement) of `x`, in O(n) memory.

    For large n, the resample's median is drawn directly: the number of resampled values at or
    below the j-th smallest of `x` is Binomial(n, j / n), so P(median <= x_(j)) =
    P(Binomial(n, j / n) >= m), m = ceil(n / 2) (the lower median, which differs from numpy's
    mean of the two middle values by far less than the bootstrap's spread at such n).
    """
    n = x.size
    if n <= DIRECT_RESAMPLING_MAX:
        return np.median(x[rng.integers(0, n, (BOOTSTRAP_RESAMPLES, n))], axis=1)
    from scipy.stats import binom

    ordered = np.sort(x)
    m = (n + 1) // 2
    cdf = binom.sf(m - 1, n, np.arange(1, n + 1) / n)
    index = np.searchsorted(cdf, rng.random(BOOTSTRAP_RESAMPLES), side="left")
    return ordered[np.minimum(index, n - 1)]


def _iqr_over_median(x: np.ndarray) -> float:
    if x.size < 2:
        return 0.0
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return float((q3 - q1) / med) if med > 0 else math.inf


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
    """'p=2e-05 (MWU)', 'ratio in [1.21, 1.38] (bootstrap)' or '-'."""
    if row.test == "mann-whitney":
        # The asymptotic test underflows to 0 for large, fully separated samples.
        p = f"p={row.p_value:.2g}" if row.p_value > 0 else "p<1e-300"
        return f"{p} (MWU)"
    if row.test == "bootstrap":
        # p is a share of BOOTSTRAP_RESAMPLES ratios: 0 means below 1 / BOOTSTRAP_RESAMPLES.
        p = f"p={row.p_value:.2g}" if row.p_value > 0 else f"p<{1 / BOOTSTRAP_RESAMPLES:g}"
        return f"ratio in [{row.ci_low:.3g}, {row.ci_high:.3g}], {p} (bootstrap)"
    return "-"


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
        raise ValueError(f"--alpha {text!r} is not a number; use e.g. 0.01") from None
    if not 0 < value < 1:
        raise ValueError(f"--alpha {text!r} is not allowed; it must be between 0 and 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare a candidate results file with a baseline, case by case. A case is a regression "
        "when its median is slower by more than the threshold and the raw samples say so "
        "significantly. Exit code: 0 no regression, 1 regression(s), 2 bad input."
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
    parser.add_argument(
        "--threshold",
        default="10%",
        help="smallest slowdown that counts, as 10%% or 0.1 (default: 10%%)",
    )
    parser.add_argument(
        "--alpha", default="0.01", help="significance level, one-sided (default: 0.01)"
    )
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


def _markdown_target(value: str | None, *inputs: Path) -> Path | None:
    """--markdown's file, checked before comparing: not empty, not a folder, not an input."""
    from bench.cli import UsageError

    if value is None:
        return None
    if not value.strip():
        raise UsageError("argument --markdown: an empty string is not a file name")
    path = Path(value)
    if path.is_dir():
        raise UsageError(f"argument --markdown: {path} is a directory; name a file")
    for given in inputs:
        if path.resolve() == Path(given).resolve():
            raise UsageError(f"argument --markdown: {path} would overwrite the input {given}")
    os.makedirs(path.parent, exist_ok=True)
    return path
