"""`python -m bench`. The signal handlers come first, before anything heavy is imported (torch
takes seconds), so that SIGINT or SIGTERM at any moment ends with one line, `interrupted ...`, and
exit code 130 or 143 (see bench.interrupt)."""

from bench import interrupt

interrupt.install()
try:
    from bench.cli import main

    code = main()
except BaseException as exc:  # main() handles its own; this is for the import of bench.cli
    if not isinstance(exc, KeyboardInterrupt) and interrupt.received() is None:
        raise
    code = interrupt.report()
interrupt.ignore()  # the work is over: a signal while the interpreter shuts down changes nothing
raise SystemExit(code)
