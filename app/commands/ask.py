"""`inboxrl ask`: one question to the agent, with its tool calls shown as they happen.

    inboxrl ask --inbox allen-p "Which check did I mail Brenda Stone for her September payment?"
    inboxrl ask --inbox allen-p --date 2000-09-20 --model my-adapter --json "..."

The rollout is the same ``env.agent`` loop that evaluation and training use, against the model at
``settings.base_url`` (start the embedded one with ``inboxrl model serve``); its trace is written
to the trace store beside the DB (and to Langfuse when configured).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from app.commands.search import email_table, sent_cell
from env.agent import run_agent
from env.config import Settings, trace_db_path
from env.db import Inbox, NoInbox, get_inbox, open_db
from env.tools import ToolError, make_tools
from env.trace import Tracer
from env.trajectory import Trajectory

RESULT_CHARS = 160  # how much of each tool result to show


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def _open(db_path: Path, inbox_key: str) -> tuple[Any, Inbox]:
    try:
        db = open_db(db_path)
        if not db["emails_fts"].exists():
            _fail(f"{db_path} is not an inbox DB; create one with: inboxrl ingest PATH --db {db_path}")
        return db, get_inbox(db, inbox_key)
    except FileNotFoundError as e:
        _fail(str(e))
    except sqlite3.DatabaseError as e:
        _fail(
            f"Cannot read {db_path} ({e}); pass an inbox DB with --db, "
            "or create one with: inboxrl ingest PATH"
        )
    except NoInbox as e:
        _fail(f"{e}. Pass one of them with --inbox.")


def _short(text: str, limit: int = RESULT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(name: str, content: str) -> str:
    """A one-line view of a tool result: counts and subjects rather than raw JSON."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return _short(content)
    if name == "search_emails" and isinstance(data, list):
        subjects = "; ".join(_short(hit.get("subject") or "(no subject)", 40) for hit in data[:3])
        return f"{len(data)} emails" + (f": {subjects}" + ("; …" if len(data) > 3 else "") if data else "")
    if name == "read_email" and isinstance(data, dict):
        return _short(f"{data.get('date', '')[:10]} from {data.get('from_address')}: {data.get('subject')}")
    return _short(content)


def _live_printer(console: Console) -> Any:
    def on_event(event: dict) -> None:
        kind = event["type"]
        if kind == "tool_call":
            args = event["arguments"]
            shown = json.dumps(args, ensure_ascii=False) if not isinstance(args, str) else args
            console.print(f"[cyan]→ {escape(event['name'] or '?')}[/]({escape(_short(shown))})")
        elif kind == "tool_result":
            if event["error"]:
                console.print(f"  [red]✗ {escape(_short(event['error']))}[/]")
            else:
                console.print(f"  [green]←[/] {escape(_summary(event['name'], event['content']))}")
        elif kind == "retry":
            console.print(f"  [yellow]model call failed ({escape(_short(event['error'], 80))}); retrying[/]")

    return on_event


def sources_table(tools: Any, sources: list[str]) -> Table:
    """The emails an answer cites, laid out as `inboxrl search` lays out hits: the date above the
    sender, then the subject above the message_id, which stays whole at 80 columns."""
    table = email_table("Sources", "subject / message_id", title_justify="left")
    for source in sources:
        try:
            email = tools.read_email(source)
        except ToolError:
            table.add_row("", f"[red](not an email of this inbox)[/]\n[cyan]{escape(source)}[/]")
            continue
        table.add_row(
            sent_cell(email),
            f"[bold]{escape(email['subject'] or '(no subject)')}[/]\n[cyan]{escape(source)}[/]",
        )
    return table


def _print_outcome(
    console: Console, traj: Trajectory, db: Any, inbox: Inbox, trace_path: Path | None
) -> None:
    if traj.ended == "answered":
        console.print(
            Panel(escape(traj.answer or ""), title="Answer", title_align="left", border_style="green")
        )
        if traj.sources:
            console.print(sources_table(make_tools(db, inbox, None), traj.sources))
        else:
            console.print("Sources: (none)")
    else:
        reason = {
            "gave_up": "the model replied without calling return_final_answer",
            "max_turns": f"no final answer after {len(traj.turns)} turns",
            "bad_tool_call": "too many failing tool calls in a row",
            "model_error": "the model endpoint failed",
        }[traj.ended]
        console.print(f"[bold yellow]No answer[/]: {reason}.")
        if traj.reply:
            console.print(Panel(escape(traj.reply), title="Model reply", title_align="left"))
        if traj.error:
            console.print(f"[red]{escape(traj.error)}[/]")
    tokens = f"{traj.prompt_tokens}+{traj.completion_tokens} tokens"
    stats = f"{len(traj.turns)} turns, {len(traj.tool_calls)} tool calls, {tokens}, {traj.duration_s:.1f} s"
    where = f" in {trace_path}" if trace_path else ""
    console.print(f"[dim]{stats}. Trace {traj.trace_id}{where}.[/]")


def ask(
    question: Annotated[str, typer.Argument(help="The question about the inbox.")],
    inbox: Annotated[str, typer.Option("--inbox", help="Inbox key (allen-p) or any owner address.")],
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Inbox DB file (default: $INBOXRL_HOME/inbox.db).", show_default=False),
    ] = None,
    query_date: Annotated[
        str | None,
        typer.Option(
            "--date", help="Today's date for the agent, YYYY-MM-DD (default: the inbox's last email)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model or served LoRA adapter name (default: INBOXRL_MODEL)."),
    ] = None,
    max_turns: Annotated[
        int | None,
        typer.Option("--max-turns", help="Model calls allowed (default: INBOXRL_MAX_TURNS or 10)."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Completion tokens per model call (default: 512).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole trajectory as JSON.")] = False,
) -> None:
    """Ask the agent a question about one inbox: prints its tool calls, answer and sources."""
    from train.registry import agent_settings

    settings = Settings()
    settings = agent_settings(settings, model or settings.model)
    db_path = db or settings.db_path
    database, mailbox = _open(db_path, inbox)
    day = query_date or (mailbox.last_date or "")[:10]
    if not day:
        _fail(f"Inbox {mailbox.id} has no dated emails; pass --date YYYY-MM-DD.")
    try:
        make_tools(database, mailbox, day)
    except ValueError as e:
        _fail(f"{e}: pass --date like 2001-05-31.")

    console = Console(stderr=as_json)
    if not as_json:
        console.print(f"[bold]{escape(question)}[/]  [dim]({mailbox.id}, {day}, {settings.model})[/]")
    tracer = Tracer.for_db(db_path, name="ask")
    traj = run_agent(
        question,
        mailbox,
        day,
        db=database,
        settings=settings,
        tracer=tracer,
        max_turns=max_turns,
        max_tokens=max_tokens,
        on_event=None if as_json else _live_printer(console),
    )
    tracer.flush()
    if as_json:
        typer.echo(traj.to_json())
    else:
        _print_outcome(console, traj, database, mailbox, trace_db_path(db_path))
    if traj.ended == "model_error":
        typer.echo(
            f"The model at {settings.base_url} failed. Is it running? Start it with: inboxrl model serve "
            f"(or set INBOXRL_BASE_URL / INBOXRL_MODEL).",
            err=True,
        )
        raise typer.Exit(1)


def register(cli: typer.Typer) -> None:
    """Add `ask` to the `inboxrl` CLI."""
    cli.command("ask")(ask)
