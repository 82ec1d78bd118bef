"""`inboxrl search` and `inboxrl read`: the agent's tools on the command line.

They call ``env.tools`` exactly as the agent does (same inbox scoping and date clamp), so what you
see here is what the model sees::

    inboxrl search --inbox allen-p --date 2001-05-01 gas price
    inboxrl search --inbox allen-p --sql gas price      # print the SQL instead of running it
    inboxrl read --inbox allen-p '<18782981.1075855378110.JavaMail.evans@thyme>'
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from env.config import Settings
from env.db import NoInbox, open_db
from env.tools import InboxTools, ToolError, make_tools

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Inbox DB file [default: $INBOXRL_HOME/inbox.db].", show_default=False),
]
InboxOption = Annotated[str, typer.Option("--inbox", help="Inbox key (allen-p) or any owner address.")]
DateOption = Annotated[
    str | None,
    typer.Option(
        "--date", help="Question date YYYY-MM-DD: emails after that day are hidden [default: none]."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the tool's JSON result.")]


def _fail(message: str) -> NoReturn:
    """Print the error (which names the next step) and exit with status 1."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def _tools(db_path: Path | None, inbox: str, query_date: str | None, **options: int | None) -> InboxTools:
    """Open the DB and bind the tools, turning set-up problems into errors that name the next step."""
    path = db_path or Settings().db_path
    try:
        db = open_db(path)
        is_inbox_db = db["emails_fts"].exists()
    except FileNotFoundError as e:
        _fail(str(e))
    except sqlite3.DatabaseError as e:
        _fail(
            f"Cannot read {path} ({e}); pass an inbox DB with --db, or create one with: inboxrl ingest PATH"
        )
    if not is_inbox_db:
        _fail(f"{path} is not an inbox DB; create one with: inboxrl ingest PATH --db {path}")
    try:
        return make_tools(db, inbox, query_date, **options)
    except NoInbox as e:
        _fail(f"{e}. Pass one of them with --inbox.")
    except ValueError as e:  # a bad --date, or a DB to upgrade: the message says what to do
        _fail(str(e).replace("query_date", "--date"))


def _highlight(snippet: str) -> str:
    """Rich markup for a snippet whose matched terms are between ** marks."""
    return re.sub(r"\*\*(.+?)\*\*", r"[bold yellow]\1[/]", escape(snippet))


def search(
    keywords: Annotated[
        list[str],
        typer.Argument(
            help="Words or phrases (quote a phrase): emails with all of them, or any if none has all."
        ),
    ],
    inbox: InboxOption,
    db: DbOption = None,
    query_date: DateOption = None,
    from_addr: Annotated[
        str | None, typer.Option("--from", help="Sender address or name contains this.")
    ] = None,
    to_addr: Annotated[str | None, typer.Option("--to", help="A to/cc/bcc recipient contains this.")] = None,
    after: Annotated[str | None, typer.Option(help="Sent on or after this date (YYYY-MM-DD).")] = None,
    before: Annotated[str | None, typer.Option(help="Sent before this date (YYYY-MM-DD).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most results to show (1 to 50).")] = 10,
    as_json: JsonOption = False,
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL and its parameters instead of running it.")
    ] = False,
) -> None:
    """Search one inbox, BM25-ranked, exactly as the agent's search_emails tool does."""
    tools = _tools(db, inbox, query_date)
    filters = {"from_addr": from_addr, "to_addr": to_addr, "sent_after": after, "sent_before": before}
    try:
        if sql:
            text, params = tools.search_sql(keywords, **filters, max_results=limit)
            typer.echo(text)
            typer.echo(json.dumps(params, ensure_ascii=False, indent=2))
            return
        hits = tools.search_emails(keywords, **filters, max_results=limit)
    except ToolError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False, indent=2))
        return
    console = Console()
    if not hits:
        console.print(f"No emails in {tools.inbox.id} match {' '.join(keywords)!r}; try other keywords.")
        return
    console.print(results_table(tools.inbox.id, hits))


def results_table(inbox: str, hits: list[dict]) -> Table:
    """Search hits as a table that reads at any width from 80 columns up.

    Two columns: the date above the sender (at most 24 wide), then the subject, the snippet
    (wrapped) and the message_id on its own line, which the wide column holds whole at 80 columns
    (Enron ids are at most 45 characters).
    """
    table = email_table(f"{inbox}: {len(hits)} best matches", "subject / snippet / message_id")
    for hit in hits:
        text = (
            f"[bold]{escape(hit['subject'] or '(no subject)')}[/]\n{_highlight(hit['snippet'] or '')}\n"
            f"[cyan]{escape(hit['message_id'])}[/]"
        )
        table.add_row(sent_cell(hit), text)
    return table


def email_table(title: str, text_header: str, **kwargs: Any) -> Table:
    """An empty two-column table of emails: the date above the sender (at most 24 wide), then the
    email's text (``text_header``), in a wide column that holds a message_id whole at 80 columns.
    ``kwargs`` go to rich's ``Table``."""
    table = Table(title=title, show_lines=True, **kwargs)
    table.add_column("date / from", overflow="fold", min_width=12, max_width=24)
    table.add_column(text_header, overflow="fold", ratio=1, min_width=20)
    return table


def sent_cell(email: dict) -> str:
    """The first cell of an `email_table` row: the day above the sender's address."""
    return f"{(email['date'] or '?')[:10]}\n{escape(email['from_address'] or '')}"


def read(
    message_id: Annotated[str, typer.Argument(help="A message_id from `inboxrl search` (any copy's id).")],
    inbox: InboxOption,
    db: DbOption = None,
    query_date: DateOption = None,
    as_json: JsonOption = False,
    full: Annotated[bool, typer.Option("--full", help="Show the whole body, however long.")] = False,
) -> None:
    """Show one email with its to/cc/bcc, exactly as the agent's read_email tool does."""
    tools = _tools(db, inbox, query_date, **({"max_body_chars": None} if full else {}))
    try:
        email = tools.read_email(message_id)
    except ToolError as e:
        _fail(f"{e} Find one with: inboxrl search --inbox {tools.inbox.id} KEYWORDS...")
    if as_json:
        typer.echo(json.dumps(email, ensure_ascii=False, indent=2))
        return
    for field in ("message_id", "date", "from_address", "from_name", "to", "cc", "bcc", "subject", "folder"):
        value = email[field]
        if value:
            typer.echo(f"{field}: {', '.join(value) if isinstance(value, list) else value}")
    typer.echo("")
    typer.echo(email["body"])


def register(cli: typer.Typer) -> None:
    """Add `search` and `read` to the `inboxrl` CLI."""
    cli.command("search")(search)
    cli.command("read")(read)
