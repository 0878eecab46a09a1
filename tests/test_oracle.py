import pytest
import torch

from bench import oracle
from bench.convergence import first_step_below
from bench.problem import SEED, Problem


def test_closed_form_matches_the_recurrence_in_float64():
    p = Problem(batch=3, dim=7, steps=50, lr=1.3, dtype="float64")
    x0, t = p.inputs()
    x, losses = x0.clone(), []
    for _ in range(p.steps):
        losses.append((x - t).square().mean())
        x = x - p.lr * 2 * (x - t) / p.dim
    torch.testing.assert_close(oracle.x_at(x0, t, p.lr, p.steps), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        oracle.loss_trace(x0, t, p.lr, p.steps), torch.stack(losses), rtol=1e-10, atol=1e-14
    )


@pytest.mark.parametrize(("lr", "step"), [(0.01, 575), (0.1, 57)])
def test_question_case_reaches_one_percent_at_the_answers_steps(lr, step):
    (p,) = [p for p in SEED if p.lr == lr]
    x0, t = p.inputs()
    assert first_step_below(oracle.loss_trace(x0, t, p.lr, p.steps), 0.01) == step


def test_regimes():
    x0, t = Problem(batch=2, dim=4).inputs()
    # lr = D / 2 lands in one step; D / 2 < lr < D oscillates; lr > D diverges.
    torch.testing.assert_close(oracle.x_at(x0, t, 2.0, 1), t.double())
    assert oracle.contraction(3.0, 4) == -0.5
    trace = oracle.loss_trace(x0, t, 5.0, 10)
    assert bool((trace[1:] > trace[:-1]).all())


def test_first_step_below_none_when_never_reached():
    assert first_step_below(torch.tensor([1.0, 0.5, float("nan")]), 0.01) is None
    assert first_step_below(torch.tensor([1.0, 0.5, 0.001]), 0.01) == 2
