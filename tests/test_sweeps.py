"""The named sweeps: what each one times."""

import math

import pytest

from bench.problem import SEED
from bench.sweeps import DEFAULT_SWEEP, SWEEPS, get_sweep


def test_quick_is_the_default_and_small():
    """The whole default run, torch.compile included, must end within minutes on a 2-core CPU."""
    assert DEFAULT_SWEEP == "quick"
    quick = get_sweep("quick")
    assert 1 <= len(quick) <= 3
    assert len({(p.batch, p.dim, p.dtype) for p in quick}) <= 3  # one compile per shape and dtype
    assert all(p.elements * p.steps <= 2**27 for p in quick)


def test_seed_is_the_question():
    assert get_sweep("seed") == SEED


def test_sizes_cover_2_10_to_2_26_elements_at_fixed_dim_and_steps():
    sizes = get_sweep("sizes")
    assert {p.dtype for p in sizes} == {"float32", "bfloat16"}
    assert len({p.dim for p in sizes}) == 1 and len({p.steps for p in sizes}) == 1
    for dtype in ("float32", "bfloat16"):
        elements = sorted(p.elements for p in sizes if p.dtype == dtype)
        assert elements[0] == 2**10 and elements[-1] == 2**26
        assert all(math.log2(e).is_integer() for e in elements)
        assert len(elements) == len(set(elements)) >= 5


def test_dims_cover_1_to_8192_at_fixed_elements():
    dims = get_sweep("dims")
    assert sorted(p.dim for p in dims)[0] == 1 and sorted(p.dim for p in dims)[-1] == 8192
    assert len({p.elements for p in dims}) == 1 and len({p.steps for p in dims}) == 1


@pytest.mark.parametrize("name", list(SWEEPS))
def test_every_problem_converges_and_names_are_unique(name):
    problems = get_sweep(name)
    assert problems and len({p.name for p in problems}) == len(problems)
    assert all(0 < p.lr < p.dim for p in problems)  # 0 < lr < D converges


def test_unknown_sweep_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        get_sweep("huge")
    assert "'huge'" in str(info.value)
    for name in SWEEPS:
        assert name in str(info.value)
