import math

import pytest
import torch

from bench.problem import PRESETS, Problem, preset, resolve_device


def test_inputs_are_seeded_and_made_on_the_cpu():
    p = Problem(batch=3, dim=257, steps=10, lr=0.1, seed=7)
    x0, t = p.inputs("cpu")
    again, _ = Problem(batch=3, dim=257, steps=10, lr=0.5, seed=7).inputs("cpu")
    other, _ = Problem(batch=3, dim=257, steps=10, lr=0.1, seed=8).inputs("cpu")
    assert x0.shape == t.shape == (3, 257)
    assert x0.dtype == t.dtype == torch.float32
    assert torch.equal(x0, again)
    assert not torch.equal(x0, other)
    assert x0.min() >= 0.0 and x0.max() < 1.0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_inputs_have_the_dtype(dtype):
    x0, t = Problem(batch=2, dim=3, dtype=dtype).inputs()
    assert x0.dtype == t.dtype == getattr(torch, dtype)


def test_seed_preset_is_the_question():
    assert preset("seed") is PRESETS["seed"]
    assert [p.lr for p in PRESETS["seed"]] == [0.01, 0.1]
    for p in PRESETS["seed"]:
        assert (p.batch, p.dim, p.steps) == (1, 5, 1000)
        _, t = p.inputs()
        assert t.tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0]]


def test_target_row_is_shared_by_every_batch_row():
    _, t = Problem(batch=4, dim=2, target=(1.0, -2.0)).inputs()
    assert t.tolist() == [[1.0, -2.0]] * 4


def test_problem_is_frozen():
    p = Problem()
    with pytest.raises(AttributeError):
        p.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"batch": 0}, ["batch=0", ">= 1"]),
        ({"dim": -3}, ["dim=-3", ">= 1"]),
        ({"steps": 0}, ["steps=0", ">= 1"]),
        ({"steps": 2.5}, ["steps=2.5", "integer"]),
        ({"lr": 0.0}, ["lr=0.0", "> 0"]),
        ({"lr": -1.0}, ["lr=-1.0", "> 0"]),
        ({"lr": math.nan}, ["lr=nan", "finite"]),
        ({"lr": math.inf}, ["lr=inf", "finite"]),
        ({"dtype": "int8"}, ["dtype='int8'", "float32", "bfloat16"]),
        ({"dim": 3, "target": (1.0, 2.0)}, ["target has 2 values", "dim=3"]),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(kwargs, words):
    with pytest.raises(ValueError) as info:
        Problem(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("device", ["tpu", "banana:0"])
def test_unknown_device_is_refused(device):
    with pytest.raises(ValueError, match=f"device={device!r}"):
        Problem().inputs(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine with no GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known presets: seed"):
        preset("nope")
