"""Optional packages: imported where they are used, so that a missing one costs its feature, not
the command line (pandas does the same for its optional engines: `import_optional_dependency`).

Required (`python -m bench doctor` says so): torch, pytest, pytest-benchmark, pandas, seaborn.
Optional, and what lacking each costs:

- tqdm: progress bars (the sweep prints one plain line per case instead; the study, nothing);
- jax: the `jax` peer method (skipped, with the reason);
- nvidia-ml-py (`pynvml`): GPU clocks, driver and throttling in the results;
- ruptures and scipy: `history check` and `history report` (change points, and their noise level).

bench.stats needs no scipy: the intervals every table, verdict and the sampler rest on are there
wherever numpy is.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

# import name -> (the distribution to install, what it gives)
OPTIONAL: dict[str, tuple[str, str]] = {
    "tqdm": ("tqdm", "progress bars"),
    "jax": ("jax", "the jax peer method"),
    "pynvml": ("nvidia-ml-py", "GPU clocks and throttling in the results"),
    "ruptures": ("ruptures", "change points in the history"),
    "scipy": ("scipy", "the noise level of the history's change points"),
}


class MissingDependency(ImportError):
    """A command needs an optional package that cannot be imported here: one line on stderr,
    exit code 2 (bench.cli), before the command does anything."""


def installed(module: str) -> bool:
    """Whether `module` (a top-level import name) can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a broken half-import
        return False


def require(modules: Iterable[str], what: str) -> None:
    """MissingDependency naming every module of `modules` that is not here, and what needs it."""
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise MissingDependency(message(missing, what), name=missing[0])


def message(modules: list[str], what: str) -> str:
    """'history check needs ruptures (change points in the history), which is not installed
    here: pip install ruptures'"""
    named = " and ".join(f"{m} ({OPTIONAL[m][1]})" if m in OPTIONAL else m for m in modules)
    verb = "is" if len(modules) == 1 else "are"
    install = " ".join(OPTIONAL.get(m, (m, ""))[0] for m in modules)
    return f"{what} needs {named}, which {verb} not installed here: pip install {install}"


def missing_from(exc: BaseException) -> str | None:
    """The optional package whose absence raised `exc` (a ModuleNotFoundError), or None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.partition(".")[0]
    return top if top in OPTIONAL else None
