"""How a loss trace converges, and the convergence study of the question's case.

The study fits the question's case (B = 1, D = 5, t = [1, 2, 3, 4, 5], 1000 steps) with every
method at learning rates that cover every regime of the closed form, plus the question's own
broken loop, and checks each against the oracle:

    python -c "from bench.convergence import convergence_study; print(convergence_study()[0])"
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bench import oracle
from bench.problem import SEED, Problem

if TYPE_CHECKING:
    import pandas as pd

# For D = 5: the answer's two rates, a fast one, D / 2 (lands in one step), D / 2 < lr < D
# (overshoots the target every step and still converges), lr > D (diverges).
STUDY_LRS: tuple[float, ...] = (0.01, 0.1, 1.0, 2.5, 4.0, 6.0)

# The question's broken loop, at the question's lr. Not a method: it computes the wrong thing.
ORIGINAL_QUESTION = "original_question"
# The oracle's trace in the traces frame.
CLOSED_FORM = "closed form"

VERDICTS = ("converged", "oscillating", "diverged", "stalled")

STUDY_COLUMNS = (
    "method",
    "lr",
    "expected",
    "verdict",
    "step_to_1pct",
    "step_to_1e-6",
    "final_distance",
    "max_abs_err_x",
    "max_rel_err_trace",
    "note",
)


def first_step_below(trace: torch.Tensor, fraction: float) -> int | None:
    """The first k with trace[k] <= fraction * trace[0], or None if the trace never gets there."""
    hits = (trace <= fraction * trace[0]).nonzero()
    return int(hits[0, 0]) if len(hits) else None


def regime(lr: float, dim: int) -> str:
    """What the closed form says: (1 - 2 lr / D)^k decays, decays flipping sign, or grows."""
    factor = oracle.contraction(lr, dim)
    if abs(factor) > 1:
        return "diverged"
    if factor < 0:
        return "oscillating"
    return "converged"


def question_case(lr: float) -> Problem:
    """The question's case (B = 1, D = 5, t = [1, 2, 3, 4, 5], 1000 steps) at learning rate `lr`."""
    return dataclasses.replace(SEED[0], lr=lr)


def original_question_loop(
    x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The question's loop as asked: the loss computed once, outside the loop; grad never zeroed.

    Returns (x_K, the distance the loop itself records, the distance x really has before each step).
    The recorded one never changes (`distance` is the same tensor every time); the real one first
    falls, then grows without bound: backward() adds the same gradient 2 (x0 - t) / D to x.grad on
    every call, so step k moves x by k times that gradient.
    """
    x = x0.clone().requires_grad_(True)
    distance = torch.mean((x - t) ** 2, dim=1).sum()  # torch.mean((x - t) ** 2) for one row
    recorded, real = [], []
    for _ in range(steps):
        with torch.no_grad():
            real.append(torch.mean((x - t) ** 2))
        recorded.append(distance.detach() / x.shape[0])
        distance.backward(retain_graph=True)
        x.data.sub_(lr * x.grad)
    return x.detach(), torch.stack(recorded).float(), torch.stack(real).float()


def verdict(trace: torch.Tensor, final_distance: float, step_factor: float, tol: float) -> str:
    """converged, oscillating, diverged or stalled, from what the fit did.

    diverged: anything non-finite, or the distance after K steps is above its start. oscillating:
    the first step overshoots the target (x_1 - t points against x0 - t by more than `tol`, the
    resolution of the dtype), whether or not it decays. converged: the distance fell by more than
    1%. stalled: none of these (an lr too small to move in K steps).
    """
    start = float(trace[0])
    finite = bool(torch.isfinite(trace).all()) and math.isfinite(final_distance)
    if not finite or final_distance > start * 1.01:
        return "diverged"
    if step_factor < -tol:
        return "oscillating"
    if final_distance <= start * 0.99:
        return "converged"
    return "stalled"


def step_factor(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> float:
    """The observed factor of one step, <x1 - t, x0 - t> / |x0 - t|^2 (closed form: 1 - 2 lr/D)."""
    e0, e1 = (x0.double() - t.double()), (x1.double() - t.double())
    return float((e1 * e0).sum() / e0.square().sum())


def compare_with_oracle(
    x0: torch.Tensor, t: torch.Tensor, lr: float, trace: torch.Tensor, x_final: torch.Tensor
) -> dict[str, Any]:
    """Final distance, max |x_K - oracle| and the max relative error of the trace.

    The relative error is taken over the steps where the oracle's loss is one the dtype can
    resolve: at least eps * scale^2 (scale = the largest |x0| or |t|), where rounding x alone moves
    the distance by no more than about sqrt(eps) of itself, and far enough below the largest
    float32 (or x's dtype's largest, squared) that a correct fit has not overflowed to inf. Past
    the floor a converged fit sits at its rounding noise, which the closed form, falling towards
    zero forever, does not model.
    """
    steps = len(trace)
    info = torch.finfo(x0.dtype)
    scale = max(float(x0.abs().max()), float(t.abs().max()), 1.0)
    floor = info.eps * scale**2
    # The trace is float32 and x is in its own dtype: below this mean square no element of x - t
    # or of its square comes within a factor 4 of overflowing either.
    ceiling = min(float(torch.finfo(torch.float32).max), float(info.max) * float(info.max))
    ceiling /= 4 * x0.shape[-1]
    expected = oracle.loss_trace(x0, t, lr, steps)
    got = trace.double().cpu()
    compared = (expected >= floor) & (expected <= ceiling)
    if bool(compared.any()):
        rel = ((got - expected).abs() / expected)[compared]
        rel_err = float(rel.max()) if bool(torch.isfinite(rel).all()) else math.inf
    else:
        rel_err = math.nan
    x_final = x_final.double().cpu()
    t64 = t.double().cpu()
    final_distance = float((x_final - t64).square().mean())
    abs_err = float((x_final - oracle.x_at(x0.cpu(), t.cpu(), lr, steps)).abs().max())
    return {
        "final_distance": final_distance if math.isfinite(final_distance) else math.inf,
        "max_abs_err_x": abs_err if math.isfinite(abs_err) else math.inf,
        "max_rel_err_trace": rel_err,
    }


def study_row(
    name: str, problem: Problem, trace: torch.Tensor, x_final: torch.Tensor, factor: float, x0, t
) -> dict[str, Any]:
    trace = trace.double().cpu()
    errors = compare_with_oracle(x0, t, problem.lr, trace, x_final)
    tol = max(1e-3, 10 * torch.finfo(x0.dtype).eps)
    return {
        "method": name,
        "lr": problem.lr,
        "expected": regime(problem.lr, problem.dim),
        "verdict": verdict(trace, errors["final_distance"], factor, tol),
        "step_to_1pct": first_step_below(trace, 1e-2),
        "step_to_1e-6": first_step_below(trace, 1e-6),
        **errors,
        "note": "",
    }


def convergence_study(
    device: str = "cpu",
    methods: Iterable[str] | None = None,
    lrs: Iterable[float] = STUDY_LRS,
    steps: int = 1000,
    include_original: bool = True,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit the question's case with each method at each lr; compare with the closed form.

    Returns (table, traces). `table` has one row per method and lr (columns STUDY_COLUMNS, plus
    `device`); methods that cannot run on `device` get one row with verdict "skipped" and the
    reason. `traces` is long-form (method, lr, step, distance) for the plot, the closed form
    included as method "closed form". `methods` defaults to every method in METHODS.
    """
    import pandas as pd

    from bench.methods import METHODS, get_method

    names = list(METHODS) if methods is None else list(methods)
    chosen = [get_method(name) for name in names]
    lrs = list(lrs)
    problems = [dataclasses.replace(question_case(lr), steps=steps) for lr in lrs]
    rows: list[dict[str, Any]] = []
    traces: list[pd.DataFrame] = []

    def add_trace(name: str, lr: float, trace: torch.Tensor) -> None:
        values = trace.double().cpu().numpy()
        traces.append(
            pd.DataFrame({"method": name, "lr": lr, "step": range(len(values)), "distance": values})
        )

    work = [(m, p) for m in chosen if m.available(device) is None for p in problems]
    bar = _progress(len(work) + int(include_original), progress)
    for method in chosen:
        reason = method.available(device)
        if reason is not None:
            rows.append({"method": method.name, "verdict": "skipped", "note": reason})
    for method, problem in work:
        bar.set_description(f"convergence: {method.name} lr={problem.lr:g}")
        x0, t = problem.inputs(device)
        try:
            # A diverging lr overflows by design; Triton's interpreter (numpy) would warn of it.
            with np.errstate(over="ignore", invalid="ignore"):
                fit = method.fit(x0, t, problem.lr, problem.steps)
                factor = step_factor(x0, method.fit(x0, t, problem.lr, 1).x, t)
        except Exception as exc:  # one broken method must not hide the others' results
            first_line = (str(exc).strip().splitlines() or [""])[0]
            rows.append(
                {
                    "method": method.name,
                    "lr": problem.lr,
                    "expected": regime(problem.lr, problem.dim),
                    "verdict": "failed",
                    "note": f"{type(exc).__name__}: {first_line}",
                }
            )
        else:
            rows.append(study_row(method.name, problem, fit.loss, fit.x, factor, x0, t))
            add_trace(method.name, problem.lr, fit.loss)
        bar.update()
    for problem in problems:
        x0, t = problem.inputs("cpu")
        add_trace(CLOSED_FORM, problem.lr, oracle.loss_trace(x0, t, problem.lr, problem.steps))
    if include_original:
        problem = dataclasses.replace(question_case(0.01), steps=steps)
        bar.set_description(f"convergence: {ORIGINAL_QUESTION} lr={problem.lr:g}")
        x0, t = problem.inputs(device)
        x_final, recorded, real = original_question_loop(x0, t, problem.lr, problem.steps)
        x1 = original_question_loop(x0, t, problem.lr, 1)[0]
        row = study_row(ORIGINAL_QUESTION, problem, real, x_final, step_factor(x0, x1, t), x0, t)
        row["note"] = (
            f"loss computed once, grad never zeroed: the distance it prints stays at "
            f"{float(recorded[-1]):.4g} for all {problem.steps} steps; the real distance, shown "
            "here, falls, then grows as the gradient piles up"
        )
        rows.append(row)
        add_trace(ORIGINAL_QUESTION, problem.lr, real)
        bar.update()
    bar.close()
    table = pd.DataFrame(rows, columns=list(STUDY_COLUMNS))
    for column in ("step_to_1pct", "step_to_1e-6"):
        table[column] = table[column].astype("Int64")
    table["note"] = table["note"].fillna("")
    table["device"] = device
    return table, pd.concat(traces, ignore_index=True)


class _NoBar:
    def set_description(self, text: str) -> None: ...

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr when enabled and tqdm is installed; otherwise a silent stand-in."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="fit", leave=False)
