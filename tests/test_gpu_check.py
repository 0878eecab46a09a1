import pytest
import torch

from bench.cli import main
from bench.sweeps import GPU_CHECK, QUICK, SEED, SIZES


def test_the_gpu_check_sweep_holds_quick_sizes_and_the_goal_problems():
    names = [p.name for p in GPU_CHECK]
    assert len(names) == len(set(names))
    for p in (*QUICK, *SIZES, SEED[0]):
        assert p.name in names
    assert any(p.elements == 2**24 and p.steps == 1000 and p.dtype == "float32" for p in GPU_CHECK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine with no GPU")
def test_gpu_check_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert main(["gpu-check", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gpu-check needs a CUDA GPU") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
