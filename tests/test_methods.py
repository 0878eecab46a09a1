"""Every method against the closed form: odd shapes, every regime of lr, every dtype."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from bench import oracle
from bench.convergence import first_step_below
from bench.methods import METHODS, get_method
from bench.methods.triton_env import load_kernels
from bench.problem import SEED, Problem

SHAPES = [(1, 1), (3, 257), (64, 5), (2, 4099)]  # D = 1, non-powers of two, D above one block
REGIMES = {"converging": 0.05, "one_step": 0.5, "oscillating": 0.8}  # lr as a fraction of D
STEPS = 30
LOW_PRECISION = ["float16", "bfloat16"]
# torch.compile costs about 15 s per shape and dtype on the CPU: it gets every shape in float32
# and one shape in the other dtypes.
COMPILED_SHAPE = (3, 257)


def devices() -> list[str]:
    """The CPU always, CUDA where present."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def method_names() -> list[str]:
    return list(METHODS)


def cases(dtypes: list[str]):
    for name in method_names():
        for dtype in dtypes:
            for shape in SHAPES:
                if name == "compiled" and dtype != "float32" and shape != COMPILED_SHAPE:
                    continue
                for regime in REGIMES:
                    yield pytest.param(
                        name, dtype, shape, regime, id=f"{name}-{dtype}-{shape}-{regime}"
                    )


def fit_problem(name: str, problem: Problem, device: str):
    method = get_method(name)
    reason = method.available(device)
    if reason is not None:
        pytest.skip(reason)
    x0, t = problem.inputs(device)
    before = x0.clone()
    fit = method.fit(x0, t, problem.lr, problem.steps)
    assert torch.equal(x0, before), "fit modified x0"
    assert fit.x.shape == x0.shape and fit.x.dtype == x0.dtype and fit.x.device == x0.device
    assert fit.loss.shape == (problem.steps,) and fit.loss.dtype == torch.float32
    return x0, t, fit


def x_tolerance(x0: torch.Tensor, t: torch.Tensor, steps: int) -> float:
    """Rounding of each step, at most one unit in the last place of |x| per step, accumulated."""
    eps = torch.finfo(x0.dtype).eps
    scale = max(x0.abs().max().item(), t.abs().max().item(), 1.0)
    return 4 * (steps + 1) * eps * scale


def trace_error(loss: torch.Tensor, ref: torch.Tensor, delta: float) -> torch.Tensor:
    """|loss - ref| over what an error of `delta` in x allows: (d + delta)^2 - d^2, with the mean of
    |d| bounded by sqrt(mean d^2), plus the float32 rounding of the stored trace."""
    allowed = 2 * ref.sqrt() * delta + delta**2 + 8 * torch.finfo(torch.float32).eps * ref
    return ((loss.double().cpu() - ref).abs() / allowed).max()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(("name", "dtype", "shape", "regime"), list(cases(["float32", "float64"])))
def test_matches_the_closed_form(name, dtype, shape, regime, device):
    batch, dim = shape
    problem = Problem(batch=batch, dim=dim, steps=STEPS, lr=REGIMES[regime] * dim, dtype=dtype)
    x0, t, fit = fit_problem(name, problem, device)
    delta = x_tolerance(x0, t, problem.steps)
    expected = oracle.x_at(x0, t, problem.lr, problem.steps)
    err = (fit.x.double() - expected).abs().max().item()
    assert err <= delta, f"max |x_K - oracle| = {err:.3g} > {delta:.3g}"
    ref = oracle.loss_trace(x0, t, problem.lr, problem.steps)
    assert trace_error(fit.loss, ref, delta) <= 1.0


def plain_torch_fit(x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int):
    """The update written in plain PyTorch at the input's own precision: the yardstick."""
    x, losses = x0.clone(), []
    for _ in range(steps):
        losses.append((x - t).square().mean())
        x = x - lr * 2 * (x - t) / x.shape[1]
    return x, torch.stack(losses).float()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(("name", "dtype", "shape", "regime"), list(cases(LOW_PRECISION)))
def test_low_precision_is_no_worse_than_plain_torch(name, dtype, shape, regime, device):
    """float16 and bfloat16 are judged against the float64 oracle, relative to the error that
    plain PyTorch makes at the same precision (at most twice it, plus one unit of rounding)."""
    batch, dim = shape
    problem = Problem(batch=batch, dim=dim, steps=STEPS, lr=REGIMES[regime] * dim, dtype=dtype)
    x0, t, fit = fit_problem(name, problem, device)
    expected = oracle.x_at(x0, t, problem.lr, problem.steps)
    ref = oracle.loss_trace(x0, t, problem.lr, problem.steps)
    plain_x, plain_loss = plain_torch_fit(x0, t, problem.lr, problem.steps)
    unit = torch.finfo(x0.dtype).eps * max(t.abs().max().item(), 1.0)

    err = (fit.x.double() - expected).abs().max().item()
    plain_err = (plain_x.double() - expected).abs().max().item()
    assert err <= 2 * plain_err + unit, f"x error {err:.3g}, plain torch {plain_err:.3g}"

    loss_err = (fit.loss.double().cpu() - ref).abs().max().item()
    plain_loss_err = (plain_loss.double().cpu() - ref).abs().max().item()
    loss_unit = 2 * unit * ref[0].sqrt().item() + unit**2
    assert loss_err <= 2 * plain_loss_err + loss_unit, (
        f"trace error {loss_err:.3g}, plain torch {plain_loss_err:.3g}"
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", method_names())
def test_question_case(name, device):
    """The distance first falls to 1% at step 575 (lr 0.01) and 57 (lr 0.1), as in the answer."""
    for problem, step in zip(SEED, (575, 57), strict=True):
        x0, t, fit = fit_problem(name, problem, device)
        assert first_step_below(fit.loss.cpu(), 0.01) == step
        delta = x_tolerance(x0, t, problem.steps)
        expected = oracle.x_at(x0, t, problem.lr, problem.steps)
        assert (fit.x.double() - expected).abs().max().item() <= delta


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", method_names())
def test_divergence_is_a_result(name, device):
    """lr above D diverges: the fit returns and its trace shows the growth up to inf or NaN."""
    problem = Problem(batch=1, dim=5, steps=200, lr=1.5 * 5)  # |1 - 2 lr / D| = 2
    _, _, fit = fit_problem(name, problem, device)
    loss = fit.loss.cpu()
    finite = loss[torch.isfinite(loss)]
    assert len(finite) > 10 and bool((finite[1:] > finite[:-1]).all())
    assert not torch.isfinite(loss[-1]), "float32 should overflow after 200 doublings of x - t"


@pytest.mark.parametrize("device", devices())
def test_compiled_does_not_recompile_for_a_new_lr(device):
    counters = pytest.importorskip("torch._dynamo.utils").counters
    problem = Problem(batch=3, dim=257, steps=3, lr=0.1)
    fit_problem("compiled", problem, device)
    graphs = counters["stats"]["unique_graphs"]
    for lr in (0.7, 42.0, 200.0):
        fit_problem("compiled", Problem(batch=3, dim=257, steps=3, lr=lr), device)
    assert counters["stats"]["unique_graphs"] == graphs


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        get_method("sgd_typo")
    for name in METHODS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"t": torch.zeros(2, 4)}, ["t has shape (2, 4)", "(2, 3)"]),
        ({"x0": torch.zeros(6)}, ["x0 has shape (6,)", "[batch, dim]"]),
        ({"t": torch.zeros(2, 3, dtype=torch.float64)}, ["t is torch.float64", "x0"]),
        ({"x0": torch.zeros(2, 3, dtype=torch.int32)}, ["dtype torch.int32"]),
        ({"lr": 0.0}, ["lr=0.0", "> 0"]),
        ({"lr": float("nan")}, ["lr=nan"]),
        ({"steps": 0}, ["steps=0", ">= 1"]),
    ],
)
@pytest.mark.parametrize("name", method_names())
def test_bad_arguments_are_refused(name, change, words):
    args = {"x0": torch.zeros(2, 3), "t": torch.ones(2, 3), "lr": 0.1, "steps": 2, **change}
    with pytest.raises(ValueError) as info:
        get_method(name).fit(**args)
    for word in words:
        assert word in str(info.value)


def test_triton_on_the_cpu_without_the_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = get_method("triton_step").available("cpu")
    assert reason is not None and "TRITON_INTERPRET=1" in reason


def test_a_shadowing_kernels_package_is_named(monkeypatch, tmp_path):
    impostor = types.ModuleType("kernels")
    impostor.__file__ = str(tmp_path / "kernels" / "__init__.py")
    monkeypatch.setitem(sys.modules, "kernels", impostor)
    with pytest.raises(ImportError) as info:
        load_kernels("triton_step")
    assert impostor.__file__ in str(info.value)
    assert "virtual environment" in str(info.value)
