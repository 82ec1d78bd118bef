"""`inboxrl eval`: batch evaluation of the agent, and `inboxrl eval compare` of runs.

inboxrl eval --model smollm2-135m --limit 10
inboxrl eval --questions qs.jsonl --db inbox.db --model my-adapter --judge-model gpt-4.1 --out evals/a
inboxrl eval compare ~/.inboxrl/evals/base ~/.inboxrl/evals/trained
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from env.config import Settings

app = typer.Typer(
    help="Evaluate the agent on a question set (the default), or compare eval runs (`compare`).",
    invoke_without_command=True,
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg="red")
    return typer.Exit(1)


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    questions: Annotated[
        Path | None, typer.Option(help="Question file (JSONL, JSON or Parquet) (default: the shipped set).")
    ] = None,
    db: Annotated[
        Path | None, typer.Option(help="Inbox DB (default: settings' DB, <home>/inbox.db).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model or served adapter name (default: settings.model).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="Agent endpoint (default: settings.base_url).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder; an existing one is resumed (default: <home>/evals/<timestamp>-<model>)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N questions.")] = None,
    judge_model: Annotated[
        str | None,
        typer.Option(help="LLM judge model (default: settings.judge_model; none = deterministic judge)."),
    ] = None,
    judge_base_url: Annotated[
        str | None, typer.Option(help="Judge endpoint (default: settings.judge_base_url or base_url).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Rollouts in flight at once (default: settings.concurrency).")
    ] = None,
    max_turns: Annotated[
        int | None, typer.Option(help="Model turns per rollout (default: settings.max_turns).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Completion tokens per model call (default: the agent's, 512).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds per model request (default: settings.timeout_s).")
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="Score a trivial policy instead of a model: idk (always 'I don't know', the floor "
            "a trained agent must beat; no server needed)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the agent on every question, judge, reward; write results.jsonl, summary.json, report.md, plots."""
    if ctx.invoked_subcommand is not None:
        return
    from judge.baseline import POLICIES, evaluate_policy
    from judge.evaluate import EvalError, default_out_dir, evaluate
    from synth_data.questions import QuestionFileError, default_questions_path, load_questions
    from train.registry import agent_settings

    overrides = {
        "model": model,
        "base_url": base_url,
        "judge_model": judge_model,
        "judge_base_url": judge_base_url,
        "concurrency": concurrency,
        "max_turns": max_turns,
        "timeout_s": timeout,
    }
    # built, not copied: the key of a server this home started is picked for the URL given here
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    settings = agent_settings(settings, settings.model)
    questions_path = questions or default_questions_path()
    db_path = db or settings.db_path
    if policy is not None:
        if policy not in POLICIES:
            raise _fail(f"Unknown --policy {policy!r}: choose one of {', '.join(POLICIES)}.")
        if not Path(db_path).is_file():
            raise _fail(f"No inbox DB at {db_path}: run inboxrl ingest first.")
        settings = settings.model_copy(update={"model": f"always-{policy}"})
    out_dir = out or default_out_dir(settings)
    try:
        qs = load_questions(questions_path)
        if policy is not None:
            qs = qs[:limit] if limit else qs
            summary = evaluate_policy(qs, policy=policy, db_path=db_path, out_dir=out_dir, settings=settings)
            _print_summary(summary, out_dir)
            return
        summary = evaluate(
            qs,
            db_path=db_path,
            out_dir=out_dir,
            settings=settings,
            limit=limit,
            max_tokens=max_tokens,
            questions_path=questions_path,
            progress=progress,
        )
    except (FileNotFoundError, QuestionFileError, EvalError, LookupError) as exc:
        raise _fail(str(exc)) from None
    _print_summary(summary, out_dir)


def _print_summary(summary: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    table = Table(title=f"{summary['model']} on {summary['n']} questions (judge: {summary['judge_model']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in (
        ("accuracy", pct(summary["accuracy"])),
        ("abstention rate", pct(summary["abstention_rate"])),
        ("hallucination rate", pct(summary["hallucination_rate"])),
        ("no final answer", pct(summary["no_answer_rate"])),
        (
            "source precision / recall",
            f"{pct(summary['source_precision'])} / {pct(summary['source_recall'])}",
        ),
        ("mean reward", "-" if summary["reward_mean"] is None else f"{summary['reward_mean']:.3f}"),
        (
            "  outcome part",
            "-" if summary.get("outcome_reward_mean") is None else f"{summary['outcome_reward_mean']:.3f}",
        ),
        ("avg turns / tool calls", f"{summary['avg_turns'] or 0:.2f} / {summary['avg_tool_calls'] or 0:.2f}"),
        (
            "latency p50 / p95",
            f"{summary['latency_p50_s'] or 0:.1f} s / {summary['latency_p95_s'] or 0:.1f} s",
        ),
        ("judge failures", str(summary["judge_failures"])),
        ("infrastructure failures", str(summary.get("infra_failures", 0))),
    ):
        table.add_row(name, value)
    console = Console()
    console.print(table)
    if summary.get("infra_failures"):
        console.print(
            f"[yellow]{summary['infra_failures']} rollout(s) failed for infrastructure reasons (timeouts, "
            "dropped connections, 5xx, a refused API key or model) and are left out of every metric. "
            f"Rerun the same command (--out {out_dir}) to run just those.[/]"
        )
        if summary.get("infra_error_example"):
            console.print(f"[yellow]First of them: {escape(summary['infra_error_example'])}[/]")
    console.print(f"Report: {out_dir / 'report.md'}")


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Eval run folders; the first is the baseline.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write compare.json/.md/.png (default: <home>/evals/compare-<time>)."),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 10_000,
) -> None:
    """Print runs side by side with a paired bootstrap per metric (paired on question id), and plot them."""
    from judge.compare import compare, print_table, write_outputs

    try:
        result = compare(runs, resamples=resamples)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    print_table(result)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    files = write_outputs(result, out or Settings().home / "evals" / f"compare-{stamp}")
    typer.echo("Wrote " + ", ".join(str(f) for f in files))


def register(cli: typer.Typer) -> None:
    """Add `inboxrl eval` and `inboxrl eval compare`."""
    cli.add_typer(app, name="eval")
