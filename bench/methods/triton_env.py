"""Loading the Triton kernels, and saying why they cannot run where they cannot."""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import torch

INTERPRETER_HINT = (
    "set TRITON_INTERPRET=1 before starting to run them in Triton's interpreter "
    "(slow: tiny sizes only)"
)


def interpreted() -> bool:
    """True when Triton kernels run in the interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_missing(device: torch.device) -> str | None:
    """None if Triton kernels can run on `device`, else the reason they cannot."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if device.type == "cuda":
        if interpreted():
            return "TRITON_INTERPRET=1 is set: unset it to run Triton kernels on the GPU"
        return None
    if interpreted():
        return None
    return f"Triton compiles for GPUs only; on the CPU, {INTERPRETER_HINT}"


# The interpreter runs each program of each launch in numpy, about a millisecond each: above this
# many elements a benchmark case (a dozen fits or more) would take minutes.
INTERPRETER_MAX_ELEMENTS = 4096


def interpreter_too_slow(elements: int) -> str | None:
    """The reason not to time `elements` in the interpreter, or None."""
    if interpreted() and elements > INTERPRETER_MAX_ELEMENTS:
        return (
            f"{elements} elements would take minutes in Triton's interpreter (it times up to "
            f"{INTERPRETER_MAX_ELEMENTS}); run it on a GPU"
        )
    return None


def load_kernels(module: str) -> ModuleType:
    """Import kernels.<module>, failing at once if another package named `kernels` shadows ours."""
    package = importlib.import_module("kernels")
    if not getattr(package, "VECREG_BENCH", False):
        raise ImportError(
            f"'import kernels' found {getattr(package, '__file__', package)!r}, which is not "
            "vecreg-bench's kernels package (another package named 'kernels', such as Hugging "
            "Face's kernel loader, shadows it). Install vecreg-bench in a virtual environment of "
            "its own: python -m venv .venv && . .venv/bin/activate && pip install -e ."
        )
    return importlib.import_module(f"kernels.{module}")
