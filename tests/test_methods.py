"""Every method against the closed form: odd shapes, every regime of lr, every dtype."""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import sys
import threading
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
# torch.compile costs about 15 s per shape and dtype on the CPU (and several on a GPU): the
# compiled methods get every shape in float32 and one shape in the other dtypes.
COMPILED_SHAPE = (3, 257)
COMPILED = ("compiled", "compiled_graphs")


def devices() -> list[str]:
    """The CPU always, CUDA where present."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def method_names() -> list[str]:
    return list(METHODS)


def cases(dtypes: list[str]):
    for name in method_names():
        for dtype in dtypes:
            for shape in SHAPES:
                if name in COMPILED and dtype != "float32" and shape != COMPILED_SHAPE:
                    continue
                for regime in REGIMES:
                    yield pytest.param(
                        name, dtype, shape, regime, id=f"{name}-{dtype}-{shape}-{regime}"
                    )


def available_method(name: str, device: str):
    """The method, or a skip that says why it cannot run on `device`."""
    method = get_method(name)
    reason = method.available(device)
    if reason is not None:
        pytest.skip(reason)
    return method


def fit_problem(name: str, problem: Problem, device: str, requires_grad: bool = False):
    """Fit `problem`'s inputs (x0 and t requiring grad if asked) and check what every fit keeps:
    x0 untouched, the result's shapes and dtypes, and no autograd history on the result."""
    method = available_method(name, device)
    x0, t = problem.inputs(device)
    x0.requires_grad_(requires_grad)
    t.requires_grad_(requires_grad)
    before = x0.detach().clone()
    fit = method.fit(x0, t, problem.lr, problem.steps)
    assert torch.equal(x0.detach(), before), "fit modified x0"
    assert x0.requires_grad == requires_grad and x0.is_leaf and x0.grad is None
    assert fit.x.shape == x0.shape and fit.x.dtype == x0.dtype and fit.x.device == x0.device
    assert fit.loss.shape == (problem.steps,) and fit.loss.dtype == torch.float32
    assert not fit.x.requires_grad and not fit.loss.requires_grad
    return x0.detach(), t.detach(), fit


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
    assert_matches_the_closed_form(problem, *fit_problem(name, problem, device))


def assert_matches_the_closed_form(problem: Problem, x0, t, fit) -> None:
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
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_divergence_is_a_result(name, device):
    """lr above D diverges: the fit returns and its trace shows the growth up to inf or NaN."""
    problem = Problem(batch=1, dim=5, steps=200, lr=1.5 * 5)  # |1 - 2 lr / D| = 2
    _, _, fit = fit_problem(name, problem, device)
    loss = fit.loss.cpu()
    finite = loss[torch.isfinite(loss)]
    assert len(finite) > 10 and bool((finite[1:] > finite[:-1]).all())
    assert not torch.isfinite(loss[-1]), "float32 should overflow after 200 doublings of x - t"


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", method_names())
def test_inputs_that_require_grad_are_fitted_as_values(name, device):
    """x0 and t that require grad (a user's leaf tensors) fit as if detached: x0 untouched, still
    requiring grad and without a grad; the result right and free of the caller's graph."""
    problem = Problem(batch=3, dim=257, steps=STEPS, lr=0.05 * 257)
    assert_matches_the_closed_form(problem, *fit_problem(name, problem, device, requires_grad=True))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", method_names())
def test_a_fit_inside_no_grad_is_the_same_fit(name, device):
    """A caller's torch.no_grad() (common around evaluation code) changes nothing."""
    problem = Problem(batch=3, dim=257, steps=STEPS, lr=0.05 * 257)
    with torch.no_grad():
        assert_matches_the_closed_form(problem, *fit_problem(name, problem, device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("lr", [1e30, 1e40, 1e308])  # 1e40 and 1e308 are inf in float32
@pytest.mark.parametrize("name", method_names())
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_any_finite_lr_diverges_without_raising(name, lr, device):
    """A finite lr however large is a result, as in `test_divergence_is_a_result`: loss[0] as the
    oracle has it, then the float32 trace and x overflow to inf or NaN, in every method alike."""
    problem = Problem(batch=1, dim=5, steps=5, lr=lr)
    x0, t, fit = fit_problem(name, problem, device)
    loss = fit.loss.cpu()
    loss0 = oracle.loss_trace(x0, t, lr, 1)[0].item()
    assert loss[0].item() == pytest.approx(loss0, rel=1e-6)
    assert loss[1].item() == float("inf"), "loss[1] = loss[0] (2 lr / D - 1)^2 overflows float32"
    assert not torch.isfinite(loss[1:]).any() and not torch.isfinite(fit.x).any()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", method_names())
def test_a_fit_too_large_for_memory_is_refused_before_it_starts(name, device, monkeypatch):
    """10**12 steps need terabytes for the loss trace alone: a ValueError naming steps and the
    memory, before anything is allocated (here, a fit that starts fails the test at once)."""
    method = available_method(name, device)

    def started(*args) -> None:
        pytest.fail(f"{name} started a fit of 10**12 steps instead of refusing it")

    monkeypatch.setattr(method, "run", started)
    x0, t = Problem(batch=2, dim=3).inputs(device)
    with pytest.raises(ValueError) as info:
        method.fit(x0, t, 0.1, 10**12)
    message = str(info.value)
    assert "steps=1000000000000" in message and f"{x0.device} has" in message
    assert re.search(r"needs at least [\d.]+ TiB", message), message


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", method_names())
def test_ordinary_fits_pass_the_memory_check(name, device):
    """A million steps of a small problem is an ordinary fit: it needs well under a gigabyte."""
    method = available_method(name, device)
    x0, _ = Problem(batch=64, dim=257).inputs(device)
    method.check_memory(x0, 10**6)
    assert 4 * 10**6 <= method.fit_bytes(x0, 10**6) < 2**30


@pytest.mark.parametrize("device", devices())
def test_compiled_does_not_recompile_for_a_new_lr(device):
    counters = pytest.importorskip("torch._dynamo.utils").counters
    problem = Problem(batch=3, dim=257, steps=3, lr=0.1)
    fit_problem("compiled", problem, device)
    graphs = counters["stats"]["unique_graphs"]
    for lr in (0.7, 42.0, 200.0):
        fit_problem("compiled", Problem(batch=3, dim=257, steps=3, lr=lr), device)
    assert counters["stats"]["unique_graphs"] == graphs


def test_methods_are_registered_in_order():
    assert list(METHODS) == [
        "autograd",
        "analytic",
        "compiled",
        "triton_step",
        "triton_fused",
        "compiled_fused",
        "graphs",
        "compiled_graphs",
        "sgd",
        "jax",
    ]


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


# triton_fused: the launcher's own paths, beyond what every method is checked for above.


def fused_fit(problem: Problem, device: str, **kwargs):
    reason = get_method("triton_fused").available(device)
    if reason is not None:
        pytest.skip(reason)
    fused = load_kernels("triton_fused")
    x0, t = problem.inputs(device)
    x = x0.clone()
    loss = fused.fit(x, t, problem.lr, problem.steps, **kwargs)
    return x, loss


def assert_same_fit(a, b):
    """x bitwise (the update is elementwise: blocking cannot change it); the trace up to the order
    of the float32 sums."""
    (x_a, loss_a), (x_b, loss_b) = a, b
    assert torch.equal(x_a, x_b)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=0)


FUSED_PROBLEM = {"batch": 2, "dim": 4099, "steps": 20, "lr": 0.05 * 4099}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_element", [True, False], ids=["per_element", "per_program"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_config_does_not_change_the_fit(dtype, per_element, device):
    """The config the launcher picks (the autotuned one on CUDA, the fixed one in the interpreter)
    fits exactly as a config with other blocks and warps does, with either kind of partials."""
    problem = Problem(**FUSED_PROBLEM, dtype=dtype)
    fused = load_kernels("triton_fused")
    other = next(c for c in fused.CONFIGS if c != fused.INTERPRETER_CONFIG and c[0] >= 4096)
    assert_same_fit(
        fused_fit(problem, device, per_element=per_element),
        fused_fit(problem, device, config=other, per_element=per_element),
    )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_autotuning_does_not_change_the_fit(dtype):
    """Tuning runs every config on x in place; restore_value must hand the fit an untouched x."""
    problem = Problem(**FUSED_PROBLEM, dtype=dtype)
    fused = load_kernels("triton_fused")
    fused._tuned_kernel.cache.clear()  # the next fit tunes
    tuned = fused_fit(problem, "cuda")
    assert fused._tuned_kernel.best_config is not None
    assert_same_fit(tuned, fused_fit(problem, "cuda"))  # the cached config
    for config in fused.CONFIGS:
        assert_same_fit(tuned, fused_fit(problem, "cuda", config=config))
    # Small N: per-element partials, tuned separately (another key).
    small = Problem(batch=3, dim=257, steps=20, lr=0.05 * 257, dtype=dtype)
    tuned = fused_fit(small, "cuda")
    for config in fused.CONFIGS:
        assert_same_fit(tuned, fused_fit(small, "cuda", config=config))


@pytest.mark.cuda
def test_fused_new_steps_do_not_recompile():
    fused = load_kernels("triton_fused")

    def compiled() -> int:
        return sum(len(cache[0]) for cache in fused._fused_kernel.device_caches.values())

    fused_fit(Problem(batch=3, dim=257, steps=2), "cuda", config=(1024, 4))
    before = compiled()
    for steps in (1, 16, 37, 1000):
        fused_fit(Problem(batch=3, dim=257, steps=steps), "cuda", config=(1024, 4))
    assert compiled() == before


def test_fused_partials_are_bounded():
    """[K, P] partials at K = 1000 and 2^26 float32 elements stay within x's own size, and any
    K is covered by whole chunks."""
    fused = load_kernels("triton_fused")
    n = 2**26
    chunk, stride = fused.partials_shape(n, 1000, 4, 4)
    assert stride >= triton_programs(n, fused.MIN_BLOCK_SIZE)
    assert chunk * stride * 4 <= max(fused.PARTIALS_MIN_CAP_BYTES, 4 * n)
    n = fused.PER_ELEMENT_MAX_N  # the largest [K, N] table of per-element partials
    chunk, stride = fused.partials_shape(n, 1000, 4, 4, per_element=True)
    assert stride == n and chunk * stride * 4 <= fused.PARTIALS_MIN_CAP_BYTES
    chunk, _ = fused.partials_shape(5, 10**6, 4, 4, per_element=True)
    assert chunk == 10**6  # the question's case: all K in one launch


def triton_programs(n: int, block: int) -> int:
    return -(-n // block)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("per_element", [True, False], ids=["per_element", "per_program"])
def test_fused_chunks_of_steps_fit_as_one_launch(per_element, device, monkeypatch):
    """Where the partials would exceed their cap, K is split across launches: the same fit."""
    problem = Problem(**FUSED_PROBLEM)
    whole = fused_fit(problem, device, config=(1024, 4), per_element=per_element)
    fused = load_kernels("triton_fused")
    unchunked = fused.partials_shape
    # 7 steps a launch: chunks of 7, 7 and 6 steps.
    monkeypatch.setattr(fused, "partials_shape", lambda *args: (7, unchunked(*args)[1]))
    assert_same_fit(whole, fused_fit(problem, device, config=(1024, 4), per_element=per_element))


# The CUDA-only methods, whose bodies run on the CPU too: checked there against the oracle.


def test_graphs_loop_body_on_the_cpu():
    from bench.methods.graphs import analytic_loop

    problem = Problem(batch=3, dim=257, steps=STEPS, lr=0.8 * 257, dtype="bfloat16")
    x0, t = problem.inputs()
    x, loss = x0.clone(), torch.empty(problem.steps)
    analytic_loop(x, t, torch.tensor(problem.lr), loss)
    expected = get_method("analytic").fit(x0, t, problem.lr, problem.steps)
    assert torch.equal(x, expected.x)
    torch.testing.assert_close(loss, expected.loss, rtol=1e-6, atol=0)


def test_compiled_graphs_step_on_the_cpu():
    """mode="reduce-overhead" compiles on the CPU too (without graphs): the in-place step on
    static buffers matches the oracle."""
    if get_method("compiled").available("cpu") is not None:
        pytest.skip(get_method("compiled").available("cpu"))
    from bench.methods import compiled_graphs

    problem = Problem(batch=3, dim=257, steps=STEPS, lr=0.05 * 257)
    x0, t = problem.inputs()
    x = x0.clone()
    step = compiled_graphs.compiled_step_in_place()
    loss = compiled_graphs.run_steps(
        step, compiled_graphs.static_buffers(x, t), x, t, problem.lr, problem.steps
    )
    delta = x_tolerance(x0, t, problem.steps)
    assert (x.double() - oracle.x_at(x0, t, problem.lr, problem.steps)).abs().max() <= delta
    assert trace_error(loss, oracle.loss_trace(x0, t, problem.lr, problem.steps), delta) <= 1.0


@pytest.mark.parametrize("device", devices())
def test_jax_does_not_recompile_for_a_new_lr(device):
    method = get_method("jax")
    reason = method.available(device)
    if reason is not None:
        pytest.skip(reason)
    from bench.methods.jax_scan import jitted_fit

    fit_problem("jax", Problem(batch=3, dim=257, steps=3, lr=0.1), device)
    compiled = jitted_fit()._cache_size()
    for lr in (0.7, 42.0, 200.0):
        fit_problem("jax", Problem(batch=3, dim=257, steps=3, lr=lr), device)
    assert jitted_fit()._cache_size() == compiled


def test_jax_missing_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a)
    )
    reason = get_method("jax").available("cpu")
    assert reason is not None and ".[peers]" in reason


def test_sgd_uses_the_fused_optimizer_on_the_cpu_and_cuda():
    from bench.methods.sgd import fused_supported

    assert fused_supported(torch.device("cpu")) and fused_supported(torch.device("cuda"))


@pytest.mark.parametrize("name", ["triton_step", "triton_fused"])
def test_the_interpreter_times_only_tiny_problems(name, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    method = get_method(name)
    assert method.can_time(Problem(batch=4, dim=33), "cpu") is None
    reason = method.can_time(Problem(batch=64, dim=256), "cpu")
    assert reason is not None and "16384 elements" in reason and "interpreter" in reason
    assert get_method("analytic").can_time(Problem(batch=64, dim=256), "cpu") is None


@pytest.mark.cuda
@pytest.mark.parametrize("name", method_names())
def test_no_host_synchronization_during_a_fit(name):
    """The loss trace stays on the GPU until the fit ends: torch's sync debug mode raises at the
    first operation that makes the host wait (a .item(), a copy to the host, a synchronize)."""
    if name == "jax":
        pytest.skip("jax's fit ends with block_until_ready by design; its K steps are one XLA scan")
    method = get_method(name)
    reason = method.available("cuda")
    if reason is not None:
        pytest.skip(reason)
    problem = Problem(batch=3, dim=257, steps=20, lr=0.05 * 257)
    x0, t = problem.inputs("cuda")
    method.prepare(x0, t, problem.lr, problem.steps)  # compile, tune, capture: may synchronize
    x = x0.clone()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = method.run(x, t, problem.lr, problem.steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = oracle.loss_trace(x0, t, problem.lr, problem.steps)
    assert trace_error(loss, ref, x_tolerance(x0, t, problem.steps)) <= 1.0


# graphs: capture in thread_local mode (other threads may use CUDA while it captures).


def test_graphs_captures_in_thread_local_mode(monkeypatch):
    """The capture's mode, with torch.cuda's graph API faked: the loop itself runs on the CPU."""
    from bench.methods import graphs

    captured = []

    class Graph:
        pass

    @contextlib.contextmanager
    def graph(cuda_graph, **kwargs):
        captured.append(kwargs)
        yield

    fake = types.SimpleNamespace(
        CUDAGraph=Graph,
        Stream=lambda device=None: types.SimpleNamespace(wait_stream=lambda other: None),
        current_stream=lambda device=None: types.SimpleNamespace(wait_stream=lambda other: None),
        stream=lambda stream: contextlib.nullcontext(),
        graph=graph,
    )

    class TorchWithFakeCuda:  # torch as graphs.py sees it, with torch.cuda faked
        def __getattr__(self, name):
            return fake if name == "cuda" else getattr(torch, name)

    monkeypatch.setattr(graphs, "torch", TorchWithFakeCuda())
    x0, t = Problem(batch=3, dim=5, steps=4, lr=0.1).inputs()
    static = graphs.capture(x0, t, 4)
    assert captured == [{"capture_error_mode": "thread_local"}]
    assert isinstance(static.graph, Graph) and static.loss.shape == (4,)


@pytest.mark.cuda
def test_graphs_capture_survives_another_thread_allocating_during_it(monkeypatch):
    """A cudaMalloc from another thread (jax's, say) in the middle of the capture: in the default
    "global" mode CUDA refuses it, and the capture is lost; in "thread_local" both go on."""
    from bench.methods import graphs

    capturing, allocated, errors = threading.Event(), threading.Event(), []
    loop = graphs.analytic_loop

    def loop_that_waits(x, t, lr, loss):
        if torch.cuda.is_current_stream_capturing():
            capturing.set()
            assert allocated.wait(timeout=60), "the other thread did not allocate"
        loop(x, t, lr, loss)

    def allocate():
        capturing.wait(timeout=60)
        try:
            # New sizes, larger than any block a test leaves in the cache: each a cudaMalloc.
            blocks = [
                torch.empty(2**28 + i * 2**21, dtype=torch.uint8, device="cuda") for i in range(4)
            ]
            del blocks
        except Exception as exc:  # the test's verdict, not the thread's
            errors.append(exc)
        finally:
            allocated.set()

    monkeypatch.setattr(graphs, "analytic_loop", loop_that_waits)
    worker = threading.Thread(target=allocate)
    worker.start()
    try:
        problem = Problem(batch=3, dim=257, steps=STEPS, lr=0.05 * 257)
        method = graphs.Graphs()
        x0, t, fit = fit_problem_with(method, problem, "cuda")
    finally:
        capturing.set()
        worker.join(timeout=120)
    assert not errors, f"the other thread's allocation failed: {errors[0]!r}"
    assert_matches_the_closed_form(problem, x0, t, fit)


def fit_problem_with(method, problem: Problem, device: str):
    x0, t = problem.inputs(device)
    return x0, t, method.fit(x0, t, problem.lr, problem.steps)


# compiled_graphs: a case fails if inductor skipped CUDA graphs.


class FakeCounters(dict):
    """torch._dynamo.utils.counters: a dict of Counters."""

    def __missing__(self, key):
        self[key] = collections.Counter()
        return self[key]


def guarded_method(monkeypatch, skip_during_fit: list[str]):
    """CompiledGraphs with a fake skip counter and a fit that compiles nothing; each fit bumps
    the count and logs inductor's message for each reason in `skip_during_fit` (emptied after)."""
    from bench.methods import compiled_graphs

    counters = FakeCounters()
    logger = logging.getLogger("test.fake_cudagraphs_log")
    method = compiled_graphs.CompiledGraphs(
        skips=compiled_graphs.CudagraphSkips(counters=counters, logger=logger)
    )

    def fit(x0, t, lr, steps):
        for reason in skip_during_fit:
            logger.warning(reason)
            counters["inductor"]["cudagraph_skips"] += 1
        skip_during_fit.clear()

    monkeypatch.setattr(method, "fit", fit)
    return method


def test_compiled_graphs_fails_where_inductor_skipped_cuda_graphs(monkeypatch):
    reasons: list[str] = []
    method = guarded_method(monkeypatch, reasons)
    x0, t = Problem(batch=3, dim=257, steps=5).inputs()
    method.prepare(x0, t, 0.1, 5)  # no skip counted: a case may go on
    method.verify()

    reasons.append("skipping cudagraphs due to mutated inputs (1 instances)")
    with pytest.raises(RuntimeError) as info:
        method.prepare(x0, t, 0.1, 5)
    message = str(info.value)
    assert "inductor skipped CUDA graphs" in message and "mutated inputs" in message
    # The shape stays compiled without graphs: a later case of it fails too, with no new skip.
    with pytest.raises(RuntimeError, match="mutated inputs"):
        method.prepare(x0, t, 0.5, 9)
    other, _ = Problem(batch=4, dim=257, steps=5).inputs()
    method.prepare(other, other, 0.1, 5)  # another shape is not refused


def test_compiled_graphs_fails_on_a_skip_during_the_timed_fits(monkeypatch):
    """A skip at run time (cudagraph trees: an unmanaged input mutation, the re-recording limit)
    is found by verify, after the case's fits."""
    reasons: list[str] = []
    method = guarded_method(monkeypatch, reasons)
    x0, t = Problem(batch=3, dim=257, steps=5).inputs()
    method.prepare(x0, t, 0.1, 5)
    method.skips.counters["inductor"]["cudagraph_skips"] += 1  # counted, nothing logged
    with pytest.raises(RuntimeError, match=r"cudagraph_skips'\] rose by 1, no reason logged"):
        method.verify()


@pytest.mark.cuda
def test_compiled_graphs_passes_its_own_guard():
    """The real method replays CUDA graphs: inductor counts no skip over prepare and fits."""
    method = get_method("compiled_graphs")
    problem = Problem(batch=3, dim=257, steps=20, lr=0.05 * 257)
    x0, t = problem.inputs("cuda")
    method.prepare(x0, t, problem.lr, problem.steps)
    for _ in range(3):
        method.run(x0.clone(), t, problem.lr, problem.steps)
    torch.cuda.synchronize()
    method.verify()


@pytest.mark.cuda
def test_compiled_graphs_fails_a_case_where_inductor_really_skips(monkeypatch):
    """inductor's test switch force_disable_cudagraph_TESTING_ONLY makes it skip CUDA graphs
    (torch/_inductor/output_code.py) with its log and count: the case fails with the reason."""
    from bench.methods import compiled_graphs

    def step(x, t, lr):  # a code object of its own: compiled afresh, under the switch
        return compiled_graphs.step_in_place(x, t, lr)

    compiled = torch.compile(step, mode="reduce-overhead", dynamic=False, fullgraph=True)
    monkeypatch.setattr(compiled_graphs, "compiled_step_in_place", lambda: compiled)
    method = compiled_graphs.CompiledGraphs()
    x0, t = Problem(batch=3, dim=257, steps=5).inputs("cuda")
    with (
        torch._inductor.config.patch(force_disable_cudagraph_TESTING_ONLY=True),
        torch.compiler.config.patch(force_disable_caches=True),  # the switch is no cache key
        pytest.raises(RuntimeError) as info,
    ):
        method.prepare(x0, t, 0.1, 5)
    assert "inductor skipped CUDA graphs" in str(info.value)
    assert "force_disable_cudagraph_TESTING_ONLY" in str(info.value)
    with pytest.raises(RuntimeError, match="inductor skipped CUDA graphs"):
        method.prepare(x0, t, 0.1, 5)


# jax: the step scale is made once per device, dtype, D and lr, not in every fit.


def test_jax_makes_its_step_scale_once_per_shape(monkeypatch):
    method = get_method("jax")
    reason = method.available("cpu")
    if reason is not None:
        pytest.skip(reason)
    from bench.methods.jax_scan import jax_module

    jax = jax_module()
    puts = []
    real = jax.device_put
    monkeypatch.setattr(jax, "device_put", lambda *a, **k: puts.append(a) or real(*a, **k))
    problem = Problem(batch=3, dim=257, steps=5, lr=0.7)
    x0, t = problem.inputs("cpu")
    method.prepare(x0, t, problem.lr, problem.steps)
    made = len(puts)
    for _ in range(3):  # the timed fits: no host-to-device copy of the scale
        assert_matches_the_closed_form(problem, x0, t, method.fit(x0, t, problem.lr, 5))
    assert len(puts) == made
    method.fit(x0, t, 1.3, 5)  # a new lr: one new scale
    assert len(puts) == made + 1
