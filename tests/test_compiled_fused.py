"""compiled_fused: chunks of C compiled steps against the closed form, and how many compiles.

Every method's checks in tests/test_methods.py run on it too; these add what chunking can get
wrong: K = 1, K < C, K = C, K = C + 3 (a remainder chunk), a chunk length that is not the default,
per-step rounding in float16 and bfloat16, and compiles counted by dynamo. A compile costs
seconds on the CPU (the first in a process about 10 s): the tests share a few shapes, each
compiled once for the module (two graphs a shape and dtype: the full and the remainder chunk).
"""

from __future__ import annotations

import pytest
import torch

from bench import oracle
from bench.methods import METHODS, get_method
from bench.methods.compiled_fused import CHUNK, CompiledFused
from bench.problem import Problem

SHAPE = (3, 257)  # D not a power of two: every test that can shares its graphs
C = CHUNK
STEPS = (1, C - 1, C, C + 3, 3 * C) if C > 1 else (1, 2, 5)
REGIMES = {"converging": 0.05, "one_step": 0.5, "oscillating": 0.8}  # lr as a fraction of D


def devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(scope="module")
def graphs():
    """The number of graphs dynamo has compiled so far in this process."""
    counters = pytest.importorskip("torch._dynamo.utils").counters
    return lambda: counters["stats"]["unique_graphs"]


def method_for(device: str, chunk: int = CHUNK) -> CompiledFused:
    method = get_method("compiled_fused") if chunk == CHUNK else CompiledFused(chunk=chunk)
    reason = method.available(device)
    if reason is not None:
        pytest.skip(reason)
    return method


def fit(method: CompiledFused, problem: Problem, device: str, requires_grad: bool = False):
    """The fit, with what every fit keeps checked: x0 untouched, shapes, dtypes, no graph."""
    x0, t = problem.inputs(device)
    x0.requires_grad_(requires_grad)
    t.requires_grad_(requires_grad)
    before = x0.detach().clone()
    result = method.fit(x0, t, problem.lr, problem.steps)
    assert torch.equal(x0.detach(), before), "fit modified x0"
    assert x0.requires_grad == requires_grad and x0.grad is None
    assert result.x.shape == x0.shape and result.x.dtype == x0.dtype
    assert result.x.device == x0.device
    assert result.loss.shape == (problem.steps,) and result.loss.dtype == torch.float32
    assert not result.x.requires_grad and not result.loss.requires_grad
    return x0.detach(), t.detach(), result


def x_tolerance(x0: torch.Tensor, t: torch.Tensor, steps: int) -> float:
    """As tests/test_methods.py: one unit in the last place of |x| per step, four times over."""
    eps = torch.finfo(x0.dtype).eps
    return 4 * (steps + 1) * eps * max(x0.abs().max().item(), t.abs().max().item(), 1.0)


def assert_matches_the_closed_form(problem: Problem, x0, t, result) -> None:
    """x_K within x_tolerance of the oracle; the trace within what that error in x allows."""
    delta = x_tolerance(x0, t, problem.steps)
    err = (result.x.double() - oracle.x_at(x0, t, problem.lr, problem.steps)).abs().max().item()
    assert err <= delta, f"max |x_K - oracle| = {err:.3g} > {delta:.3g}"
    ref = oracle.loss_trace(x0, t, problem.lr, problem.steps)
    allowed = 2 * ref.sqrt() * delta + delta**2 + 8 * torch.finfo(torch.float32).eps * ref
    worst = ((result.loss.double().cpu() - ref).abs() / allowed).max().item()
    assert worst <= 1.0, f"trace error {worst:.3g} times what x's error allows"


def test_registered_beside_triton_fused():
    names = list(METHODS)
    assert names.index("compiled_fused") == names.index("triton_fused") + 1
    assert isinstance(METHODS["compiled_fused"], CompiledFused)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("steps", STEPS, ids=lambda k: f"K{k}")
def test_matches_the_closed_form(steps, regime, device):
    """K = 1, K < C, K = C, K = C + 3, 3 C: full chunks, a remainder chunk, or only one."""
    batch, dim = SHAPE
    problem = Problem(batch=batch, dim=dim, steps=steps, lr=REGIMES[regime] * dim)
    assert_matches_the_closed_form(problem, *fit(method_for(device), problem, device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", [(5, 1), (1, 5)], ids=["D1", "B1"])
def test_odd_shapes(shape, device):
    batch, dim = shape
    problem = Problem(batch=batch, dim=dim, steps=C + 3, lr=0.05 * dim)
    assert_matches_the_closed_form(problem, *fit(method_for(device), problem, device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7])
def test_another_chunk_length_is_the_same_fit(steps, device):
    """C = 3: K below, at and past one chunk. x as the default C has it, the trace up to the
    order of the float32 sums."""
    batch, dim = SHAPE
    problem = Problem(batch=batch, dim=dim, steps=steps, lr=0.3 * dim)
    x0, t, three = fit(method_for(device, chunk=3), problem, device)
    assert_matches_the_closed_form(problem, x0, t, three)
    default = method_for(device).fit(x0, t, problem.lr, problem.steps)
    torch.testing.assert_close(three.x, default.x, rtol=2e-7, atol=2e-7)
    torch.testing.assert_close(three.loss, default.loss, rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", devices())
def test_float64_matches_the_closed_form(device):
    batch, dim = SHAPE
    problem = Problem(batch=batch, dim=dim, steps=C + 3, lr=0.8 * dim, dtype="float64")
    assert_matches_the_closed_form(problem, *fit(method_for(device), problem, device))


def plain_torch_fit(x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int):
    """The update in plain PyTorch at the input's own precision: the yardstick for float16 and
    bfloat16, as in tests/test_methods.py."""
    x, losses = x0.clone(), []
    for _ in range(steps):
        losses.append((x - t).square().mean())
        x = x - lr * 2 * (x - t) / x.shape[1]
    return x, torch.stack(losses).float()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_is_no_worse_than_plain_torch(dtype, regime, device):
    """Against the float64 oracle, at most twice the error of plain PyTorch at the same precision
    plus one unit of rounding (tests/test_methods.py's bound), through a remainder chunk."""
    batch, dim = SHAPE
    problem = Problem(batch=batch, dim=dim, steps=C + 3, lr=REGIMES[regime] * dim, dtype=dtype)
    x0, t, result = fit(method_for(device), problem, device)
    expected = oracle.x_at(x0, t, problem.lr, problem.steps)
    ref = oracle.loss_trace(x0, t, problem.lr, problem.steps)
    plain_x, plain_loss = plain_torch_fit(x0, t, problem.lr, problem.steps)
    unit = torch.finfo(x0.dtype).eps * max(t.abs().max().item(), 1.0)
    err = (result.x.double() - expected).abs().max().item()
    plain_err = (plain_x.double() - expected).abs().max().item()
    assert err <= 2 * plain_err + unit, f"x error {err:.3g}, plain torch {plain_err:.3g}"
    loss_err = (result.loss.double().cpu() - ref).abs().max().item()
    plain_loss_err = (plain_loss.double().cpu() - ref).abs().max().item()
    loss_unit = 2 * unit * ref[0].sqrt().item() + unit**2
    assert loss_err <= 2 * plain_loss_err + loss_unit


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(("dtype", "move"), [("bfloat16", 1e-3), ("float16", 2e-4)])
def test_low_precision_x_is_rounded_after_every_step(dtype, move, device):
    """x0 = 1, t = 0 and steps that move x by less than half a unit in the last place: rounded
    to its dtype after every step, as `analytic` rounds it, x never moves. Fused code that kept
    x in float32 across the chunk's steps lets it drift (bfloat16, 30 steps: to 0.96875)."""
    batch, dim = SHAPE
    dt = getattr(torch, dtype)
    x0 = torch.ones(batch, dim, dtype=dt, device=device)
    t = torch.zeros(batch, dim, dtype=dt, device=device)
    lr = move * dim / 2  # a = 1 - 2 lr / D = 1 - move
    result = method_for(device).fit(x0, t, lr, C + 3)
    analytic = get_method("analytic").fit(x0, t, lr, C + 3)
    assert torch.equal(analytic.x, x0), "the yardstick itself moved: pick a smaller step"
    assert torch.equal(result.x, x0)
    torch.testing.assert_close(result.loss, analytic.loss, rtol=0, atol=0)


@pytest.mark.parametrize("device", devices())
def test_inputs_that_require_grad_are_fitted_as_values(device):
    batch, dim = SHAPE
    problem = Problem(batch=batch, dim=dim, steps=C + 3, lr=0.05 * dim)
    method = method_for(device)
    assert_matches_the_closed_form(problem, *fit(method, problem, device, requires_grad=True))
    with torch.no_grad():
        assert_matches_the_closed_form(problem, *fit(method, problem, device, requires_grad=True))


@pytest.mark.parametrize("device", devices())
def test_divergence_returns_the_trace(device):
    """lr = 1.5 D: |x - t| doubles every step, through whole chunks past 200 steps (x beyond
    float32's 2^128 by then) and a remainder chunk of one step, to inf."""
    batch, dim = SHAPE
    steps = C * (200 // C + 1) + (C > 1)
    problem = Problem(batch=batch, dim=dim, steps=steps, lr=1.5 * dim)
    _, _, result = fit(method_for(device), problem, device)
    loss = result.loss.cpu()
    finite = loss[torch.isfinite(loss)]
    assert len(finite) > 10 and bool((finite[1:] > finite[:-1]).all())
    assert not torch.isfinite(loss[-1]) and not torch.isfinite(result.x).all()


@pytest.mark.parametrize("device", devices())
def test_no_recompile_for_a_new_lr_or_a_new_steps(device, graphs):
    """Once a shape has its full and its remainder chunk, any lr and any K reuse them."""
    batch, dim = SHAPE
    method = method_for(device)
    fit(method, Problem(batch=batch, dim=dim, steps=C + 3, lr=0.1), device)
    before = graphs()
    for lr in (0.7, 42.0, 200.0, 1e30):
        for steps in (1, C, C + 3, 2 * C + 5):
            fit(method, Problem(batch=batch, dim=dim, steps=steps, lr=lr), device)
    assert graphs() == before
    with torch.no_grad():  # grad mode is one of dynamo's guards: the fit fixes it
        fit(method, Problem(batch=batch, dim=dim, steps=C + 3, lr=0.3), device)
    assert graphs() == before


@pytest.mark.parametrize("device", devices())
def test_prepare_compiles_what_the_fit_needs(device, graphs):
    """After prepare, the fit it prepared compiles nothing: the setup holds all of the compile."""
    method = method_for(device)
    problem = Problem(batch=2, dim=7, steps=2 * C + 1, lr=0.05 * 7)
    x0, t = problem.inputs(device)
    before = graphs()
    method.prepare(x0, t, problem.lr, problem.steps)
    compiled = graphs() - before
    assert compiled == (2 if C > 1 else 1)  # the full chunk and the remainder chunk
    fit(method, problem, device)
    assert graphs() - before == compiled


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_a_bad_chunk_length_is_refused(chunk):
    with pytest.raises(ValueError, match="chunk="):
        CompiledFused(chunk=chunk)
