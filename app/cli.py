"""The `inboxrl` command line. Each command group lives in `app/commands/<group>.py`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

from app import commands
from env.config import private_files

cli = typer.Typer(
    name="inboxrl",
    help="Train and serve email research agents on your own inbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"app.commands.{info.name}")
        module.register(cli)


_register_all()


def main() -> None:
    """Entry point of the `inboxrl` console script; what it and its servers write is private (0600)."""
    private_files()
    cli()
