"""Publish finished report folders so that `out/<run-id>` and `out/latest` are always whole.

Layout: a report is built in a hidden folder `out/.<run-id>.<random>.tmp` (`staging_folder`) and is
never moved: `out/<run-id>` is a relative symlink to it and `out/latest` a relative symlink to
`<run-id>`. A link is replaced by `os.replace` of a new link, one atomic rename, so at every instant
a reader finds the old version or the new one, complete; the version replaced is deleted
GRACE_S later, once readers already inside it are done.

A real folder at `out/<run-id>` or `out/latest` (made by older versions) cannot be replaced by a
rename. On Linux it is swapped with the new link by renameat2(RENAME_EXCHANGE), also atomic, then
deleted. Where that call is missing (not Linux, kernel < 3.15, a filesystem without it), the old
folder is renamed aside and the new entry renamed in: for the microseconds between the two renames
the name is missing. An error or Ctrl-C there renames the old folder back; after a kill, the next
build does (`clean_stale`).

Where symlinks are refused (os.symlink raises OSError), `out/<run-id>` is the staging folder itself
and `out/latest` a copy of it, each put in place as a real folder is above: atomic with renameat2,
else with that window. Lost: `latest` takes the space of a second copy.

Leftovers: the builder holds a lock (fcntl.flock) on its staging folder until it leaves
`staging_folder`; the OS drops the locks of a process that dies. As each build starts, hidden
entries of ours (`.tmp`, `.swap`, `.old`, older versions' too) that no process holds and no
`out/<name>` link points at are deleted. A second lock, on `out` itself, is held for the short
steps (make and lock a staging folder, swap, clean), so publishers and cleaners never interleave:
two builds of one run at once each publish a whole report, and the last wins. Without working
locks (no fcntl on Windows, flock refused on some network filesystems) nothing is cleaned and
builds are not serialized.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no locks, so no cleaning (see above)
    fcntl = None

LATEST = "latest"
# How long a replaced version stays after the swap, for readers already on their way into it
# (a path lookup that resolved the old link and is still walking it). Seen without it: 1 read in
# 3,500 through `latest` failed with ENOENT while two processes published, on a loaded 2-core VM.
GRACE_S = 0.2
OURS = (".tmp", ".swap", ".old")  # suffixes of the hidden entries made here and by older versions

try:  # glibc >= 2.28
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError, TypeError):
    _renameat2 = None
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from linux/fcntl.h and linux/fs.h


@contextlib.contextmanager
def staging_folder(out: Path, run_id: str) -> Iterator[Path]:
    """A new hidden folder in `out` to build run `run_id` in, locked until the block ends, then
    deleted unless published. Leftovers of killed builds are deleted first."""
    with _locked(out) as held:
        if held:
            _clean(out)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}.", suffix=".tmp", dir=out))
        fd = _hold(staging)
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a report is for reading
        yield staging
    finally:
        try:
            with _locked(out):
                if staging.name not in _links(out):
                    _remove(staging)
        finally:
            if fd is not None:
                os.close(fd)


def publish(staging: Path, out: Path, run_id: str) -> Path:
    """Make `out/<run_id>` show the finished `staging` folder, in one atomic step; return it."""
    target = out / run_id
    with _locked(out):
        old = os.readlink(target) if target.is_symlink() else None
        new = _link(out, run_id, staging.name) or staging
        try:
            _put(new, target)
        finally:
            _remove(new)  # what `target` held after an exchange, or the link if the swap failed
    if old and old != staging.name and _ours(old):
        # A reader that resolved the old link just before the swap is still reading through it.
        time.sleep(GRACE_S)
        with _locked(out):
            if old not in _links(out):
                _remove_if_free(out / old)  # skipped while its builder still holds it
    return target


def point_latest(out: Path, run_id: str) -> None:
    """Make `out/latest` show `out/<run_id>` in one atomic step: a relative symlink, or a copy
    where symlinks are refused."""
    with _locked(out):
        new = _link(out, LATEST, run_id)
        if new is None:
            new = _hidden(out, LATEST, ".swap")
            shutil.copytree(out / run_id, new, symlinks=True)
        try:
            _put(new, out / LATEST)
        finally:
            _remove(new)


def clean_stale(out: Path) -> None:
    """Delete what killed builds left in `out`, never what a live build holds (`staging_folder`
    does this as it starts)."""
    with _locked(out) as held:
        if held:
            _clean(out)


def leftovers(out: Path) -> list[Path]:
    """The hidden entries of ours in `out` that no link points at: leftovers, or builds at work."""
    used = _links(out)
    return sorted(out / name for name in os.listdir(out) if _ours(name) and name not in used)


def _clean(out: Path) -> None:
    for path in leftovers(out):
        if path.name.endswith(".old"):  # a swap cut between its two renames: undo it
            dest = out / path.name[1:].rsplit(".", 2)[0]
            inner = path / dest.name  # older versions put the folder inside
            if not os.path.lexists(dest):
                os.rename(inner if inner.is_dir() else path, dest)
        _remove_if_free(path)


def _put(new: Path, dest: Path) -> None:
    """Put `new` at `dest`; what `dest` held ends at `new`'s name or is deleted."""
    if not os.path.lexists(dest) or (new.is_symlink() and not _real_dir(dest)):
        os.replace(new, dest)
    elif not _exchange(new, dest):
        aside = _hidden(dest.parent, dest.name, ".old")
        try:
            os.rename(dest, aside)
            os.rename(new, dest)  # the window: `dest` is missing until this returns
        except BaseException:
            if os.path.lexists(aside) and not os.path.lexists(dest):
                os.rename(aside, dest)
            raise
        _remove(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the entries at `a` and `b` in one atomic step; False where the system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link(out: Path, name: str, to: str) -> Path | None:
    """A new hidden symlink in `out` to `to`; None where symlinks are refused."""
    link = _hidden(out, name, ".swap")
    try:
        os.symlink(to, link, target_is_directory=True)
    except OSError:  # some Windows setups, some mounted filesystems
        return None
    return link


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[bool]:
    """Hold the lock on `out` itself: one publisher or cleaner at a time. False: no locks here."""
    fd = _hold(out)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def _hold(folder: Path, wait: bool = True) -> int | None:
    """An open descriptor of `folder` holding its lock; None where the lock is taken (and not
    `wait`) or locks are not to be had here."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_if_free(path: Path) -> None:
    """Delete `path` unless a live process holds its lock (a build still at work in it)."""
    if not _real_dir(path):
        _remove(path)
        return
    try:
        fd = _hold(path, wait=False)
    except OSError:  # gone already
        return
    if fd is None:
        return
    try:
        _remove(path)
    finally:
        os.close(fd)


def _links(out: Path) -> set[str]:
    """What the visible links in `out` point at."""
    entries = [e for e in os.scandir(out) if e.is_symlink() and not e.name.startswith(".")]
    return {os.readlink(e.path) for e in entries}


def _ours(name: str) -> bool:
    return name.startswith(".") and name.endswith(OURS) and "/" not in name and os.sep not in name


def _hidden(out: Path, name: str, suffix: str) -> Path:
    return out / f".{name}.{secrets.token_hex(4)}{suffix}"


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
