"""`inboxrl train sft|grpo|select|config`, `inboxrl retrain`, `inboxrl runs`: training and the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from env.config import Settings

app = typer.Typer(help="Train LoRA adapters: SFT warm-start and GRPO.", no_args_is_help=True)

Preset = Annotated[str, typer.Option(help="Settings preset: auto (gpu if CUDA else cpu), gpu, cpu, smoke.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML file of settings (see configs/).")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one setting, KEY=VALUE (repeatable); see `train config`."),
]
Name = Annotated[str | None, typer.Option(help="Run name (folder under runs/); default <stage>-<timestamp>.")]
Questions = Annotated[Path | None, typer.Option(help="Questions JSONL; default the shipped set.")]
Inbox = Annotated[list[str] | None, typer.Option("--inbox", help="Train only on this mailbox (repeatable).")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")]
Resume = Annotated[bool, typer.Option(help="Resume the named run from its last checkpoint if it exists.")]


def _fail(e: Exception) -> typer.Exit:
    typer.secho(f"Error: {e}", err=True, fg="red")
    return typer.Exit(1)


def _overrides(cls: type, sets: list[str] | None, **options: object) -> dict:
    from train.config import parse_overrides

    values = parse_overrides(sets or [], cls)
    values.update({k: v for k, v in options.items() if v not in (None, [])})
    return values


def _report(result: object, info: object) -> None:
    typer.echo(
        f"Trained {result.stage} run {result.name}: {result.steps} steps in {result.train_runtime_s:.0f} s "
        f"on {result.n_questions} questions."
    )
    kept = result.data.get("filter")
    if kept:
        typer.echo(
            f"Question filter: kept {kept['kept']} of {kept['questions']} "
            f"({kept['always_solved']} always solved, {kept['always_failed']} always failed)."
        )
    typer.echo(
        f"Adapter: {info.adapter_dir}  (serve it: inboxrl model serve --model {result.name}, merged; "
        f"or load it as a LoRA: --adapter {result.name})"
    )
    typer.echo(
        f"Metrics: {result.metrics_path}" + (f"  plot: {result.plot_path}" if result.plot_path else "")
    )


def _train(
    stage: str, preset: str, config: Path | None, sets: list[str] | None, options: dict, **run: object
) -> None:
    """Load the settings, train one stage, register the adapter and report it."""
    import importlib

    from train.config import InboxGRPOConfig, InboxSFTConfig, load_config
    from train.registry import register_run

    cls = InboxSFTConfig if stage == "sft" else InboxGRPOConfig
    train_fn = getattr(importlib.import_module(f"train.{stage}"), f"train_{stage}")
    settings = Settings()
    try:
        cfg = load_config(cls, preset, config, _overrides(cls, sets, **options))
        result = train_fn(settings, cfg, **run)
        info = register_run(
            settings, result.name, result.adapter_dir, kind=stage, base_model=result.base_model,
            data={"questions": result.questions, **result.data}, config=cfg.to_dict(),
            parent=getattr(cfg, "init_adapter", None),
        )  # fmt: skip
    except (ValueError, LookupError, FileNotFoundError, FileExistsError) as e:
        raise _fail(e) from e
    _report(result, info)


@app.command()
def sft(
    preset: Preset = "auto",
    config: ConfigFile = None,
    set_: Sets = None,
    name: Name = None,
    questions: Questions = None,
    inbox: Inbox = None,
    max_steps: MaxSteps = None,
    source: Annotated[
        str | None,
        typer.Option(help="qa (built from QA pairs), teacher (a teacher's rollouts) or qa+teacher."),
    ] = None,
    init_adapter: Annotated[
        str | None,
        typer.Option(help="Train this adapter further: a registered run or a folder."),
    ] = None,
    resume: Resume = True,
) -> None:
    """Supervised fine-tuning (LoRA) on successful trajectories, then register the adapter.

    With ``--source teacher --set relabel_wrong=true`` and the served model as teacher, the model's own
    wrong rollouts become "I don't know" after its searches (R-Tuning): it learns to abstain where it fails.
    """
    options = {"questions": str(questions) if questions else None, "inboxes": inbox, "max_steps": max_steps}
    options |= {"source": source, "init_adapter": init_adapter}
    _train("sft", preset, config, set_, options, name=name, resume=resume)


@app.command()
def grpo(
    preset: Preset = "auto",
    config: ConfigFile = None,
    set_: Sets = None,
    name: Name = None,
    questions: Questions = None,
    inbox: Inbox = None,
    max_steps: MaxSteps = None,
    init_adapter: Annotated[
        str | None,
        typer.Option(help="Start from this adapter: a registered run (e.g. an SFT run) or a folder."),
    ] = None,
    resume: Resume = True,
) -> None:
    """LoRA GRPO on the inbox environment (judge reward), then register the adapter."""
    options = {"questions": str(questions) if questions else None, "inboxes": inbox, "max_steps": max_steps}
    _train("grpo", preset, config, set_, {**options, "init_adapter": init_adapter}, name=name, resume=resume)


@app.command("select")
def select(
    name: Annotated[str, typer.Argument(help="The GRPO run (trained with validation_questions > 0).")],
    ceiling: Annotated[
        float, typer.Option(help="Highest validation hallucination rate the pick may have.")
    ] = 0.2,
    every: Annotated[int, typer.Option(help="Evaluate every N-th checkpoint (the last always).")] = 1,
) -> None:
    """Pick the run's checkpoint to release on its validation questions; it becomes the run's adapter.

    GRPO does this itself at the end of a run with validation questions: rerun it for another ceiling.
    """
    from train.registry import run_dir
    from train.select import SelectionError, format_selection, select_checkpoint

    settings = Settings()
    try:
        result = select_checkpoint(settings, run_dir(settings, name), ceiling=ceiling, every=every)
    except (SelectionError, LookupError, FileNotFoundError, ValueError) as e:
        raise _fail(e) from e
    typer.echo(format_selection(result))


@app.command("config")
def show_config(
    stage: Annotated[str, typer.Argument(help="grpo or sft")] = "grpo",
    preset: Annotated[str, typer.Option(help="Show this preset's values (gpu, cpu, smoke).")] = "gpu",
) -> None:
    """List every training setting with its group, value in the preset, and help."""
    from rich.console import Console
    from rich.table import Table

    from train.config import InboxGRPOConfig, InboxSFTConfig, describe, load_config

    cls = {"grpo": InboxGRPOConfig, "sft": InboxSFTConfig}.get(stage)
    if cls is None:
        raise _fail(ValueError(f"Unknown stage {stage!r}; use grpo or sft."))
    values = load_config(cls, preset).to_dict()
    table = Table(title=f"{stage} settings (preset {preset}); override with --set KEY=VALUE")
    for column in ("group", "setting", "value", "help"):
        table.add_column(column)
    for group, field_name, _default, help_text in describe(cls):
        table.add_row(group, field_name, repr(values[field_name]), help_text)
    Console().print(table)


def runs(name: Annotated[str | None, typer.Argument(help="Show one run in full.")] = None) -> None:
    """List the registered adapters (runs/), or show one."""
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from train.registry import get_run, list_runs

    settings = Settings()
    if name:
        try:
            info = get_run(settings, name)
        except LookupError as e:
            raise _fail(e) from e
        typer.echo(
            json.dumps({**info.to_dict(), "adapter_dir": str(info.adapter_dir)}, indent=2, default=str)
        )
        return
    # Readable from 80 columns up: the kind and parent sit under the name, the time under the date.
    table = Table(title=f"Registered runs in {settings.runs_dir}", show_lines=True)
    table.add_column("run (kind, from)", overflow="fold", ratio=1, min_width=12)
    table.add_column("created", min_width=10, max_width=10)
    for column in ("questions", "accuracy", "hallucinated"):
        table.add_column(column, justify="right", min_width=8)
    for info in list_runs(settings):
        summary = info.eval or {}
        origin = f"{info.kind}, from {info.parent}" if info.parent else info.kind
        table.add_row(
            f"[bold]{escape(info.name)}[/]\n{escape(origin)}",
            info.created[:16].replace("T", " "),
            str(len(info.data.get("question_ids", [])) or info.data.get("examples", "")),
            _pct(summary.get("accuracy")),
            _pct(summary.get("hallucination_rate")),
        )
    Console().print(table)


def _pct(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else ""


def retrain(
    inbox: Annotated[
        Path, typer.Option(help="New mail: a maildir, mbox, .eml folder or .tar.gz of a maildir.")
    ],
    model: Annotated[
        str | None, typer.Option(help="Base model folder or hub id; default the embedded model.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the new adapter; default retrain-<timestamp>.")
    ] = None,
    preset: Preset = "auto",
    questions_per_inbox: Annotated[int, typer.Option(help="Questions to synthesize per new mailbox.")] = 24,
    synth_model: Annotated[
        str | None,
        typer.Option(
            help="Model at settings.base_url that writes the QA pairs; default the offline templates."
        ),
    ] = None,
    sft: Annotated[bool, typer.Option(help="Warm-start with SFT before GRPO.")] = True,
    sft_steps: Annotated[
        int | None, typer.Option(help="SFT optimizer steps (default: the preset's epochs).")
    ] = None,
    grpo_steps: Annotated[
        int | None, typer.Option(help="GRPO optimizer steps (default: the preset's epochs).")
    ] = None,
    eval_questions: Annotated[
        int | None, typer.Option(help="Evaluate on at most this many test questions.")
    ] = None,
    minutes: Annotated[
        float,
        typer.Option(
            help="Time budget for this run: SFT and GRPO stop early to leave the eval its share "
            "(0 = train every planned step)."
        ),
    ] = 30.0,
    set_: Sets = None,
) -> None:
    """Ingest new mail, make QA, train (SFT + GRPO), evaluate, and register the adapter if it is not worse."""
    from train.retrain import RetrainOptions, run_retrain

    settings = Settings()
    options = RetrainOptions(
        inbox=inbox,
        model=model,
        name=name,
        preset=preset,
        questions_per_inbox=questions_per_inbox,
        synth_model=synth_model,
        sft=sft,
        sft_steps=sft_steps,
        grpo_steps=grpo_steps,
        eval_questions=eval_questions,
        grpo_overrides=list(set_ or []),
        minutes=minutes or None,
    )
    try:
        outcome = run_retrain(settings, options)
    except (ValueError, LookupError, FileNotFoundError, RuntimeError) as e:
        raise _fail(e) from e
    typer.echo(outcome.summary())


def register(cli: typer.Typer) -> None:
    """Add `train`, `retrain` and `runs` to the CLI."""
    cli.add_typer(app, name="train")
    cli.command("retrain")(retrain)
    cli.command("runs")(runs)
