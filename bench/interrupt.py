"""Stopping on SIGINT or SIGTERM: one line on stderr, exit code 128 + the signal, no traceback.

`python -m bench` calls `install()` before it imports anything heavy (torch takes seconds), so a
signal at any moment, the imports included, ends the same way. The handler raises `Interrupted`,
a KeyboardInterrupt, so that pytest and every `except KeyboardInterrupt` treat SIGTERM as they
treat Ctrl-C; the command line catches it and `report()` prints `interrupted <stage>`, the stage
being what the program last said it was doing (`set_stage`): "before the first case", "after 3 of
8 cases; ...". A second signal while stopping ends the process at once.

Only the standard library here: this module is imported first of all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
START = "at start-up, before anything was measured or written"


class Interrupted(KeyboardInterrupt):
    """Raised by `handle` for SIGINT or SIGTERM; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _start() -> str:
    return START


_received: int | None = None  # the first signal, once one came
_stage: Callable[[], str] = _start
_reported = False
_command_line = False  # install() was called: the command line prints the line
_deferred: dict[int, object] = {}  # signal -> its handler, while defer() holds them back
_pending: int | None = None  # a signal that came while held back


def install() -> None:
    """Handle SIGINT and SIGTERM with `handle` (main thread only: Python allows no other). A
    signal the parent process ignores stays ignored (as Python leaves SIGINT for a background
    job of a shell)."""
    global _command_line
    _command_line = True
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handle)


def handle(signum: int, frame: FrameType | None) -> None:
    """The first signal raises `Interrupted`; a second one, while the first is being handled
    (cleanup, saving), stops the process at once."""
    global _received
    if _received is None:
        _received = signum
        raise Interrupted(signum)
    if _command_line:
        report()
    _flush()
    os._exit(exit_code())


def check() -> None:
    """Raise `Interrupted` again where a signal came and its exception was caught on the way
    (a library that wraps every exception it sees, e.g. torch.compile's)."""
    if _received is not None:
        raise Interrupted(_received)


def install_for_session() -> bool:
    """SIGTERM handled as Ctrl-C, for a pytest session: only in the main thread and only where
    SIGTERM has its default handler (nobody else handles it). True when installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    global _received
    _received = None  # a new session: an earlier one's signal in this process is over
    signal.signal(signal.SIGTERM, handle)
    return True


def uninstall_for_session() -> None:
    """Undo `install_for_session`."""
    if signal.getsignal(signal.SIGTERM) is handle:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def defer() -> None:
    """Hold SIGINT and SIGTERM back until `resume()`, where this module or Python's default
    (SIGINT) handles them: for a step that must not be cut in half, such as saving the results
    of a finished sweep. Main thread only; elsewhere it does nothing."""
    if _deferred or threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is handle or current is signal.default_int_handler:
            _deferred[signum] = current
            signal.signal(signum, _hold)


def resume() -> None:
    """Undo `defer()`; a signal that came meanwhile is acted on now (raises `Interrupted`)."""
    global _pending
    for signum, previous in _deferred.items():
        signal.signal(signum, previous)
    _deferred.clear()
    signum, _pending = _pending, None
    if signum is not None:
        handle(signum, None)


def _hold(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _pending is None:
        _pending = signum


def ignore() -> None:
    """The work is over: a signal while the interpreter shuts down changes nothing."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def received() -> int | None:
    """The signal that interrupted the run, or None."""
    return _received


def set_stage(stage: str | Callable[[], str]) -> None:
    """What the program is doing now, as it ends "interrupted ...": "before the first case", or
    a function that says it when asked (e.g. how many cases are done)."""
    global _stage
    _stage = stage if callable(stage) else (lambda: stage)


def message() -> str:
    try:
        stage = _stage()
    except Exception:  # a stage that cannot say where it is: the line still comes
        stage = ""
    return f"interrupted {stage}".rstrip()


def exit_code() -> int:
    """128 + the signal: 130 for SIGINT (and a KeyboardInterrupt with no signal), 143 for
    SIGTERM."""
    return 128 + (_received or signal.SIGINT)


def report() -> int:
    """Print `interrupted <stage>` on stderr, once; return the exit code."""
    global _reported
    if not _reported:
        _reported = True
        _flush()
        # stderr closed, or a signal landed inside a write on it: the exit code still says it
        with contextlib.suppress(Exception):
            sys.stderr.write(message() + "\n")
    _flush()
    return exit_code()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a signal landed inside a write on this stream
            stream.flush()
