"""The ``inboxrl`` console script: catches Ctrl-C from its first instruction, then runs `app.cli`.

Importing the CLI takes about a second (typer, openai, pandas). A Ctrl-C in that second raises
``KeyboardInterrupt`` wherever the interpreter is, and some third-party import code swallows it
(seen as an ``inboxrl ingest`` that ran to the end after a Ctrl-C at 0.3 s). So the handler
installed here first also records the Ctrl-C, and a command that returns after one exits 130.
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
