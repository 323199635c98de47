"""The `__main__` frame of every command of the repository (preprocess, cmpl, bench): exit codes for a closed
pipe and Ctrl-C instead of tracebacks.

    if __name__ == "__main__":
        run_main(main)

- `python -m cmpl.predict --help | head -1`: once the reader of stdout is gone, the command stops quietly with
  exit code 141 (128 + SIGPIPE, what a shell reports for any Unix tool stopped that way). Python ignores SIGPIPE,
  so without this frame the next write raised BrokenPipeError, a traceback, and a second one at exit.
- Ctrl-C outside a trainer (which handles it itself, cmpl/preemption.py): one line, exit code 130 (128 + SIGINT).

It sits in the lowest stage and needs only the standard library, so every stage can use it without importing
a stage above it (docs/ARCHITECTURE.md) and a command's start stays cheap.
"""
from __future__ import annotations

import os
import select
import sys
from typing import Callable, NoReturn

EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`... | head`)
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Run `main()` and exit with its return value (or its SystemExit code); a closed stdout gives exit 141 and
    no output on stderr, Ctrl-C one line and exit 130. A BrokenPipeError of another pipe is a real error and
    keeps its traceback."""
    try:
        try:
            code = main()
        except SystemExit as e:  # argparse's --help and usage errors, cli.fail: still flushed below
            code = e.code
        sys.stdout.flush()  # output that fit in the buffer meets the closed pipe here
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        # Point stdout at /dev/null, so the interpreter's own flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        code = EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        print(f"{_program()}: interrupted (Ctrl-C)", file=sys.stderr)
        code = EXIT_INTERRUPTED
    raise SystemExit(code)


def stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose reading end is closed (Linux and macOS report POLLERR for it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or stdout is not a real file
        return False


def _program() -> str:
    """`python -m NAME`'s NAME, for the one-line messages."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name.removesuffix(".__main__") if spec is not None else os.path.basename(sys.argv[0])


__all__ = ["EXIT_CLOSED_PIPE", "EXIT_INTERRUPTED", "run_main", "stdout_reader_gone"]
