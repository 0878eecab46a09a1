"""Checks of the paths a command will write, made before anything is measured, so that a bad one
costs a one-line usage error naming the option, not a traceback after minutes of timing.

A checked folder is not made here (nothing is written before the run starts); the nearest folder
that exists must be a folder and take a file. Standard library only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


class OutputPathError(ValueError):
    """A path that cannot be written as asked; the message names the option and the path."""


def check_folder(folder: str | Path, option: str, *, shown: str | Path | None = None) -> Path:
    """`folder` where a command will write files: refused if empty, if it or an ancestor is a
    file, or if it cannot be made or written. `shown` is the path the user gave, where `folder`
    was derived from it (a file's parent)."""
    shown = folder if shown is None else shown
    if str(folder) == "":
        raise OutputPathError(f"{option} is empty: give a path or leave the option out")
    folder = Path(folder)
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent  # the folders from here down are made when the file is written
    if not nearest.is_dir():
        where = "" if nearest == Path(shown) else f"{nearest} is "
        raise OutputPathError(f"{option} {shown}: {where}not a directory")
    try:
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"{option} {shown}: cannot write in {nearest} ({exc.strerror or exc})"
        ) from None
    return folder


def check_file(path: str | Path, option: str) -> Path:
    """`path` where a command will write one file: not empty, not a directory, and its folder
    can be made and written."""
    if str(path) == "":
        raise OutputPathError(f"{option} is empty: give a path or leave the option out")
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path}: is a directory; give a file name")
    check_folder(path.parent, option, shown=path)
    return path


def check_not_inputs(
    outputs: Iterable[tuple[str, Path, Path]], inputs: Iterable[tuple[str, Path | None]]
) -> None:
    """Refuse an output that is also an input: (option, path given, file written) against
    (option, path). Resolved paths are compared, and the files themselves where both exist."""
    inputs = [(option, Path(path)) for option, path in inputs if path is not None]
    for option, given, written in outputs:
        for in_option, source in inputs:
            if _same_file(Path(written), source):
                what = "is" if Path(written) == Path(given) else f"writes {written}, which is"
                raise OutputPathError(
                    f"{option} {given}: {what} also the {in_option} file; "
                    "the run would overwrite it"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()
