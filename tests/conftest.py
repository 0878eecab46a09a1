import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    # Triton chooses the interpreter when a kernel is decorated, so this must happen before any
    # test imports `kernels`. On a GPU machine the kernels are tested on the GPU instead. A
    # benchmark run keeps the user's setting: it must not time the interpreter by surprise.
    if not HAS_CUDA and not config.getoption("benchmark_only", default=False):
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
