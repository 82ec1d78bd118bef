"""The ``inboxrl`` console script: sets its Ctrl-C handler first, then imports and runs `app.cli`.

Importing the CLI takes about a second (typer, openai, pandas). The handler set before that records
every Ctrl-C it sees as well as raising ``KeyboardInterrupt``, so a command that returns after one
(library code that catches the interrupt) still exits 130. A Ctrl-C before this module runs falls to
CPython's start-up (site, .pth files): a KeyboardInterrupt traceback and status 1.
"""

from __future__ import annotations

import signal
import sys

INTERRUPTED_EXIT = 130
"""Exit status after Ctrl-C (128 + SIGINT), as a shell reports it."""

_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def main() -> None:
    """Entry point of the ``inboxrl`` console script."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started ignoring it
        signal.signal(signal.SIGINT, _on_sigint)
    code: int | str | None = 0
    try:
        from app.cli import main as cli_main

        if not _interrupted:
            cli_main()
    except KeyboardInterrupt:
        code = None
    except SystemExit as e:  # typer exits with the command's status
        code = e.code
    if _interrupted and not code:  # ran to the end (or never started) after a swallowed Ctrl-C
        print("Interrupted.", file=sys.stderr)
        code = INTERRUPTED_EXIT
    sys.exit(code)
