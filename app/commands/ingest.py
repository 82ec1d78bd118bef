"""`inboxrl ingest`: read mailboxes into the inbox DB.

::

    inboxrl ingest                                    # the shipped default inbox
    inboxrl ingest ~/enron/maildir --db enron.db      # maildir tree, .tar.gz, mbox, .eml, csv, parquet, jsonl
    inboxrl ingest mail.mbox --inbox me --format mbox
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from env.config import Settings
from env.readers import FORMATS


def register(cli: typer.Typer) -> None:
    """Add ``inboxrl ingest`` to the CLI."""

    @cli.command("ingest")
    def ingest_command(
        paths: Annotated[
            list[Path] | None,
            typer.Argument(
                help="Maildir trees, mbox files, .eml folders, emails.csv, Parquet/JSONL or .tar.gz archives"
                " (default: the shipped default inbox).",
                show_default=False,
            ),
        ] = None,
        db: Annotated[
            Path | None,
            typer.Option("--db", help="Inbox DB file (default: $INBOXRL_HOME/inbox.db).", show_default=False),
        ] = None,
        fmt: Annotated[
            str | None,
            typer.Option(
                "--format",
                help=f"Reader to use for every PATH: {', '.join(FORMATS)} (default: detected).",
            ),
        ] = None,
        inbox: Annotated[
            str | None,
            typer.Option(
                "--inbox", help="Put every message into this inbox (default: the mailbox its path names)."
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers",
                help="Parsing processes (default: one per CPU; 1 parses in-process).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Ingest mail into the inbox DB (deduplicated; reruns resume and add only new mail)."""
        from rich.console import Console

        from env.db import list_inboxes, open_db
        from env.ingest import default_inbox_archive, ingest
        from env.readers import UnknownFormat

        if fmt is not None and fmt not in FORMATS:
            typer.echo(f"Error: unknown --format {fmt!r}; use one of {', '.join(FORMATS)}", err=True)
            raise typer.Exit(1)
        db_path = db or Settings().db_path
        sources = list(paths) if paths else [default_inbox_archive()]
        console = Console(stderr=True)
        try:
            report = ingest(sources, db_path, fmt=fmt, inbox=inbox, workers=workers, progress=True)
        except (FileNotFoundError, UnknownFormat, RuntimeError) as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from e
        except KeyboardInterrupt:
            console.print(
                f"Interrupted: what was committed is kept; run the same command again to resume ({db_path})."
            )
            raise typer.Exit(130) from None
        with open_db(db_path) as handle:
            inboxes = list_inboxes(handle)
            quarantined = handle.execute("select count(*) from quarantine").fetchone()[0]
        Console().print(_summary(report, inboxes, quarantined))


def _summary(report, inboxes, quarantined_total: int):
    """The run's counts and every inbox in the DB, as rich tables."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    # Readable from 80 columns up: every column at least 8 wide, long address lists wrap.
    run = Table(title=f"Ingested in {report.seconds:.1f} s")
    for column in ("ingested", "duplicate", "quarantined", "skipped sources"):
        run.add_column(column, justify="right", min_width=8)
    run.add_row(
        f"{report.ingested:,}",
        f"{report.duplicate:,}",
        f"{report.quarantined:,}",
        f"{report.skipped_sources:,}",
    )
    boxes = Table(title="Inboxes")
    for column, justify in (
        ("inbox", "left"),
        ("owner addresses", "left"),
        ("messages", "right"),
        ("dates", "left"),
    ):
        boxes.add_column(column, justify=justify, min_width=8)
    for box in inboxes:
        dates = f"{(box.first_date or '?')[:10]} – {(box.last_date or '?')[:10]}"
        boxes.add_row(box.id, ", ".join(box.addresses), f"{box.message_count:,}", dates)
    parts = [f"Inbox DB: {escape(str(report.db_path))}", run, boxes]
    if quarantined_total:
        parts.append(f"{quarantined_total:,} message(s) in quarantine: select source, reason from quarantine")
    return Group(*parts)
