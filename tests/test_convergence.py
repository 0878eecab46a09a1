import math

import pandas as pd
import pytest
import torch

from bench import oracle
from bench.convergence import (
    CLOSED_FORM,
    ORIGINAL_QUESTION,
    STUDY_LRS,
    convergence_study,
    original_question_loop,
    question_case,
    regime,
    verdict,
)

# Cheap methods only: compiled and triton_step are checked against the oracle in test_methods.py.
METHODS = ["autograd", "analytic"]


@pytest.fixture(scope="module")
def study():
    return convergence_study("cpu", methods=METHODS)


def test_the_lrs_cover_every_regime_of_the_question_case():
    assert [regime(lr, 5) for lr in STUDY_LRS] == [
        "converged",
        "converged",
        "converged",
        "converged",  # 2.5 = D / 2: one step
        "oscillating",
        "diverged",
    ]
    assert oracle.contraction(2.5, 5) == 0.0


@pytest.mark.parametrize("lr", STUDY_LRS)
def test_verdicts_match_the_closed_form(study, lr):
    table, _ = study
    rows = table[(table.lr == lr) & table.method.isin(METHODS)]
    assert sorted(rows.method) == sorted(METHODS)
    assert (rows.verdict == regime(lr, 5)).all(), rows[["method", "verdict"]]


def test_the_answers_steps_and_oracle_errors(study):
    table, _ = study
    for method in METHODS:
        row = table[(table.method == method)].set_index("lr")
        assert row.loc[0.01, "step_to_1pct"] == 575
        assert row.loc[0.1, "step_to_1pct"] == 57
        assert row.loc[0.1, "step_to_1e-6"] == 170
        assert row.loc[0.01, "step_to_1e-6"] is pd.NA  # needs 1723 steps
        assert row.loc[0.01, "max_rel_err_trace"] < 1e-3
        assert row.loc[0.01, "max_abs_err_x"] < 1e-5
        assert row.loc[6.0, "final_distance"] == math.inf


def test_original_question_diverges_while_printing_a_constant_distance(study):
    table, _ = study
    (row,) = table[table.method == ORIGINAL_QUESTION].itertuples()
    assert row.lr == 0.01 and row.expected == "converged" and row.verdict == "diverged"
    assert row.final_distance > 1e6
    assert "stays at" in row.note

    x0, t = question_case(0.01).inputs()
    x, recorded, real = original_question_loop(x0, t, 0.01, 50)
    assert bool((recorded == recorded[0]).all())
    # Step k moves x by k times the first gradient g0 = 2 (x0 - t) / D: x_K = x0 - lr K(K+1)/2 g0.
    g0 = 2 * (x0 - t) / 5
    torch.testing.assert_close(x, x0 - 0.01 * 50 * 51 / 2 * g0)
    assert real[-1] > real[0]


def test_traces_hold_every_method_and_the_closed_form(study):
    _, traces = study
    assert set(traces.method) == {*METHODS, CLOSED_FORM, ORIGINAL_QUESTION}
    assert set(traces.columns) == {"method", "lr", "step", "distance"}
    closed = traces[(traces.method == CLOSED_FORM) & (traces.lr == 0.1)]
    assert len(closed) == 1000 and closed.distance.is_monotonic_decreasing


def test_unavailable_methods_are_listed_with_the_reason(monkeypatch):
    from bench.methods import METHODS as REGISTRY

    monkeypatch.setattr(REGISTRY["analytic"], "available", lambda device: "not today")
    table, _ = convergence_study("cpu", methods=["analytic"], lrs=[0.1], steps=10)
    row = table[table.method == "analytic"].iloc[0]
    assert row.verdict == "skipped" and row.note == "not today"


def test_verdict_rules():
    falling = torch.tensor([1.0, 0.5, 0.25])
    assert verdict(falling, 0.1, 0.7, 1e-3) == "converged"
    assert verdict(falling, 0.1, -0.7, 1e-3) == "oscillating"
    assert verdict(falling, 2.0, 0.7, 1e-3) == "diverged"
    assert verdict(torch.tensor([1.0, math.inf]), math.nan, 0.7, 1e-3) == "diverged"
    assert verdict(torch.tensor([1.0, 1.0]), 0.999, 0.9999, 1e-3) == "stalled"
    # lr = D: the error flips sign every step and never shrinks.
    assert verdict(torch.tensor([1.0, 1.0]), 1.0, -1.0, 1e-3) == "oscillating"
