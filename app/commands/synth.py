"""`inboxrl synth ...`: write, check, import and split question/answer pairs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from env.config import Settings

app = typer.Typer(
    help="Question/answer pairs from an inbox: generate (the default), check, import, split.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg="red")
    return typer.Exit(1)


def _table(title: str, rows: list[tuple[str, object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)


def _report_rows(report: dict) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("generated", report["generated"])]
    rows += [(f"  dropped: {reason}", n) for reason, n in report["dropped"].items()]
    rows += [("dropped (total)", report["dropped_total"]), ("kept", report["kept"])]
    skip = {"generated", "dropped", "dropped_total", "kept", "config"}
    rows += [(k, v) for k, v in report.items() if k not in skip]
    return rows


@app.callback(invoke_without_command=True)
def generate(
    ctx: typer.Context,
    db: Annotated[
        Path | None, typer.Option(help="Inbox DB (default: settings' DB, <home>/inbox.db).")
    ] = None,
    inbox: Annotated[
        list[str] | None,
        typer.Option(help="Inbox key or address; repeatable (default: every inbox in the DB)."),
    ] = None,
    n: Annotated[int, typer.Option(help="Pairs to keep per inbox.")] = 100,
    out: Annotated[
        Path | None, typer.Option(help="Output JSONL (default: <home>/synth/questions.jsonl).")
    ] = None,
    generator: Annotated[
        str, typer.Option(help="llm, template, or auto (llm when the endpoint answers, else template).")
    ] = "auto",
    model: Annotated[
        str | None, typer.Option(help="Model name at the endpoint (default: settings.model).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL (default: settings.base_url).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key for the endpoint (default: settings.api_key).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Emails the LLM reads per batch.")] = 10,
    pairs_per_batch: Annotated[int, typer.Option(help="Answerable pairs asked for per batch.")] = 5,
    unanswerable_per_batch: Annotated[
        int, typer.Option(help="Unanswerable questions asked for per batch.")
    ] = 1,
    max_batches: Annotated[
        int | None, typer.Option(help="Most batches per inbox (default: 3x n's need).")
    ] = None,
    max_body_chars: Annotated[int, typer.Option(help="Cut each email body to this many characters.")] = 1500,
    max_prompt_chars: Annotated[
        int, typer.Option(help="Email text per prompt; keep it within the model's context.")
    ] = 4_500,
    min_realism: Annotated[
        float, typer.Option(help="Drop pairs rated less realistic than this (0-1).")
    ] = 0.4,
    seed: Annotated[int, typer.Option(help="Seed for sampling batches.")] = 0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the question writer.")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per LLM reply.")] = 1024,
    concurrency: Annotated[
        int | None, typer.Option(help="Batches in flight (default: settings.concurrency).")
    ] = None,
    structured: Annotated[
        bool, typer.Option(help="Send the JSON schema as response_format (guided decoding).")
    ] = True,
    cache: Annotated[
        Path | None, typer.Option(help="LLM response cache (default: <home>/synth/cache.db).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Generate checked question/answer pairs for the inbox(es) of a DB (also: `inboxrl synth --db ...`).

    Reruns with the same arguments replay cached LLM replies and continue where they stopped.
    """
    if ctx.invoked_subcommand is not None:
        return
    from env.db import NoInbox, get_inbox, list_inboxes, open_db
    from synth_data.generate import SynthConfig, write_outputs
    from synth_data.generate import generate as run
    from synth_data.llm import LLM, ResponseCache

    settings = Settings()
    db_path = db or settings.db_path
    try:
        database = open_db(db_path)
        inboxes = [get_inbox(database, key) for key in inbox] if inbox else list_inboxes(database)
    except (FileNotFoundError, NoInbox) as e:
        raise _fail(str(e)) from e
    if not inboxes:
        raise _fail(f"{db_path} holds no inbox; ingest one with: inboxrl ingest PATH --db {db_path}")
    base_url = base_url or settings.base_url
    model = model or settings.model
    if generator == "auto":
        from env.model import is_healthy

        generator = "llm" if is_healthy(base_url, api_key or settings.api_key) else "template"
        if generator == "template":
            typer.secho(
                f"No model endpoint answers at {base_url}: using --generator template.", fg="yellow", err=True
            )
    try:
        config = SynthConfig(
            n=n,
            generator=generator,
            batch_size=batch_size,
            pairs_per_batch=pairs_per_batch,
            unanswerable_per_batch=unanswerable_per_batch,
            max_batches=max_batches,
            max_body_chars=max_body_chars,
            max_prompt_chars=max_prompt_chars,
            min_realism=min_realism,
            seed=seed,
        )
    except ValueError as e:
        raise _fail(str(e)) from e

    def make_llm() -> LLM | None:
        """A fresh client per inbox: each inbox's generation runs in its own event loop."""
        if generator != "llm":
            return None
        from env.model import make_client

        client_settings = settings.model_copy(
            update={"base_url": base_url, "api_key": api_key or settings.api_key}
        )
        client = make_client(client_settings).with_options(max_retries=settings.max_retries)
        return LLM(
            client,
            model,
            ResponseCache(cache or settings.home / "synth" / "cache.db"),
            temperature=temperature,
            max_tokens=max_tokens,
            structured=structured,
            seed=seed,
        )

    import openai

    questions, total = [], Counter()
    totals: dict = {"generated": 0, "kept": 0, "dropped": Counter()}
    for box in inboxes:
        llm = make_llm()
        try:
            kept, report = run(
                database,
                box,
                config,
                llm=llm,
                concurrency=concurrency or settings.concurrency,
                progress=progress,
            )
        except openai.APIError as e:
            raise _fail(
                f"the model endpoint failed ({e}). Rerun the same command to continue:"
                " finished batches are cached."
            ) from e
        if llm is not None and llm.last_rejection:
            typer.secho(f"The endpoint refused a request: {llm.last_rejection}", fg="yellow", err=True)
        questions += kept
        totals["generated"] += report.generated
        totals["kept"] += report.kept
        totals["dropped"].update(report.dropped)
        total.update(report.counters)
    from synth_data.ground import Report

    merged = Report(totals["generated"], totals["kept"], totals["dropped"], total)
    out = out or settings.home / "synth" / "questions.jsonl"
    report_file = write_outputs(out, questions, merged, config)
    _table(f"synth: {', '.join(b.id for b in inboxes)} ({generator})", _report_rows(merged.to_dict()))
    typer.echo(f"Wrote {len(questions)} pairs to {out} (report: {report_file})")
    if generator == "llm" and merged.generated and not merged.kept:
        typer.secho(
            f"No pair written by {model} passed the checks (see the drop reasons above). A small model"
            " like the embedded one rarely writes grounded pairs: point --base-url/--model at a larger"
            " one, or use --generator template for factual pairs without an LLM.",
            fg="yellow",
            err=True,
        )


@app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="Question file (JSONL, JSON list, or ART·E Parquet).")],
    db: Annotated[
        Path | None, typer.Option(help="Inbox DB to ground the pairs against (citations, evidence, search).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 when any pair fails a grounding check.")] = False,
) -> None:
    """Validate a question file and report its contents; with --db, check each pair against the inbox."""
    from synth_data.questions import QuestionFileError, load_questions

    try:
        questions = load_questions(path)
    except (QuestionFileError, FileNotFoundError) as e:
        raise _fail(str(e)) from e
    rows: list[tuple[str, object]] = [("pairs", len(questions))]
    for name in ("inbox_key", "kind", "difficulty", "split", "generator"):
        counts = Counter(str(getattr(q, name)) for q in questions)
        rows += [(f"{name}: {k}", v) for k, v in sorted(counts.items())]
    failures: Counter = Counter()
    if db is not None:
        from env.db import NoInbox, open_db
        from synth_data.ground import check_pair

        database = open_db(db)
        for q in questions:
            try:
                reason = check_pair(database, q)
            except NoInbox:
                reason = "unknown_inbox"
            if reason:
                failures[reason] += 1
        rows.append(("grounded", len(questions) - sum(failures.values())))
        rows += [(f"  failed: {k}", v) for k, v in sorted(failures.items())]
    _table(f"synth check: {path}", rows)
    if strict and failures:
        raise typer.Exit(1)


@app.command("import")
def import_(
    source: Annotated[
        Path, typer.Argument(help="ART·E question set (Parquet or JSONL), or any question file.")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the questions (JSONL).")],
) -> None:
    """Import a question set (e.g. ART·E's corbt/enron_emails_sample_questions) into InboxRL's format."""
    from synth_data.questions import QuestionFileError, load_questions, save_questions

    try:
        questions = load_questions(source)
    except (QuestionFileError, FileNotFoundError) as e:
        raise _fail(str(e)) from e
    save_questions(out, questions)
    typer.echo(f"Imported {len(questions)} questions into {out}")


@app.command("split")
def split(
    path: Annotated[Path, typer.Argument(help="Question file to split.")],
    by: Annotated[
        str, typer.Option(help="inbox (whole mailboxes to test) or time (latest questions per inbox).")
    ] = "inbox",
    test_fraction: Annotated[
        float, typer.Option(help="Share of inboxes (by inbox) or of questions (by time).")
    ] = 0.2,
    test_inbox: Annotated[
        list[str] | None, typer.Option(help="Inbox to put in test (by inbox); repeatable.")
    ] = None,
    db: Annotated[
        Path | None, typer.Option(help="Inbox DB: use the cited emails' own dates (by time).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for picking test inboxes.")] = 0,
    out_dir: Annotated[
        Path | None, typer.Option(help="Folder for <stem>.train.jsonl and <stem>.test.jsonl.")
    ] = None,
) -> None:
    """Split a question file into train and test so that test never cites a training email."""
    from synth_data.questions import QuestionFileError, load_questions, save_questions
    from synth_data.split import split_by_inbox, split_by_time

    try:
        questions = load_questions(path)
        if by == "inbox":
            result = split_by_inbox(
                questions, test_inboxes=test_inbox, test_fraction=test_fraction, seed=seed
            )
        elif by == "time":
            from env.db import open_db

            result = split_by_time(questions, test_fraction=test_fraction, db=open_db(db) if db else None)
        else:
            raise _fail(f"--by must be 'inbox' or 'time', got {by!r}")
    except (QuestionFileError, FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from e
    folder = out_dir or path.parent
    stem = path.name.removesuffix(".jsonl")
    train_path = save_questions(folder / f"{stem}.train.jsonl", result.train)
    test_path = save_questions(folder / f"{stem}.test.jsonl", result.test)
    summary = result.summary()
    rows: list[tuple[str, object]] = [("train", summary["train"]), ("test", summary["test"])]
    rows += [(f"dropped: {k}", v) for k, v in summary["dropped"].items()]
    rows += [
        (f"{k}", f"train {v['train']} / test {v['test']}") for k, v in sorted(summary["inboxes"].items())
    ]
    rows += [(f"cutoff {k}", v) for k, v in sorted(summary["cutoffs"].items())]
    _table(f"synth split --by {by}", rows)
    typer.echo(f"Wrote {train_path} and {test_path}")


app.command("generate")(generate)


def register(cli: typer.Typer) -> None:
    """Add the `synth` command group to the `inboxrl` CLI."""
    cli.add_typer(app, name="synth")
