"""`inboxrl app` (the Streamlit UI) and `inboxrl demo` (everything the UI needs, then the UI).

`inboxrl demo` is the main job of the first README command: prepare the embedded model, ingest the
default inbox, start the local model server, then serve the app on 127.0.0.1, all offline. Once
the app answers it prints three example questions to try (:mod:`app.examples`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import httpx
import typer

from env.config import EMBEDDED_MODEL_NAME, RELEASED_MODEL_NAME, Settings

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def streamlit_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command that serves the app: headless, no usage statistics, bound to ``host``."""
    import app.ui

    main = Path(app.ui.__file__).with_name("main.py")
    return [
        sys.executable, "-m", "streamlit", "run", str(main),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def app_url(host: str, port: int) -> str:
    """The URL to open for an app bound to ``host``."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def wait_for_app(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Wait until Streamlit's health endpoint answers; raise if the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"The app exited with code {proc.returncode} before it was ready.")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"The app did not answer at {url} within {timeout_s:.0f} s.")


def run_app(
    host: str, port: int, *, started: float | None = None, on_ready: Callable[[], None] | None = None
) -> int:
    """Serve the app in the foreground until Ctrl-C; print its URL once it answers, then call ``on_ready``."""
    env = {**os.environ, **OFFLINE_ENV, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    # `docker stop` and `kill` send SIGTERM: exit through the `finally` below so Streamlit stops too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Ctrl-C stops the app even when it was started with SIGINT ignored (a parent's SIG_IGN is
    # inherited, and Python then installs no KeyboardInterrupt handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(streamlit_command(port, host), env=env)
    url = app_url(host, port)
    try:
        wait_for_app(url, proc)
        took = f" ({time.monotonic() - started:.1f} s in all)" if started is not None else ""
        typer.secho(f"InboxRL is ready at {url}{took}. Press Ctrl-C to stop.", fg="green", bold=True)
        if on_ready:
            on_ready()
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as e:
        typer.secho(f"Error: {e}", err=True, fg="red")
        return 1
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Print a step's title, then how long it took."""
    typer.echo(f"• {title}...")
    start = time.monotonic()
    yield
    typer.echo(f"  done in {time.monotonic() - start:.1f} s")


def ensure_default_inbox(settings: Settings) -> str:
    """Ingest the shipped default inbox unless the DB already holds mail; returns what happened."""
    from env.db import list_inboxes, open_db
    from env.ingest import default_inbox_archive, ingest

    if settings.db_path.exists():
        db = open_db(settings.db_path)
        inboxes = [i for i in list_inboxes(db) if i.message_count]
        db.close()
        if inboxes:
            return f"{settings.db_path} already holds {', '.join(i.id for i in inboxes)}"
    report = ingest([default_inbox_archive()], settings.db_path)
    return f"ingested {report.ingested:,} emails into {settings.db_path}"


def print_examples(settings: Settings, n: int = 3) -> None:
    """Print ``n`` example questions from the shipped set as ``inboxrl ask`` commands (none: nothing)."""
    from app.examples import ask_command, example_questions, expected_answer
    from env.db import list_inboxes, open_db

    db = open_db(settings.db_path)
    try:
        inboxes = [key for i in list_inboxes(db) for key in (i.id, *i.addresses)]
    finally:
        db.close()
    examples = example_questions(settings, n, inboxes=inboxes)
    if not examples:
        return
    typer.echo(
        "Not sure what to ask? Try one of these questions from the shipped question set: click it\n"
        "in the app's chat page (that sets its inbox and date), or run:"
    )
    for question in examples:
        typer.echo(f"  {ask_command(question)}")
        typer.echo(f"    expected: {expected_answer(question)}")


def registered_adapters(settings: Settings, base: Path | None = None) -> dict[str, Path]:
    """The trained adapters in the run registry, ``{name: adapter folder}``; with ``base``, only
    those trained on that model folder (an adapter computes what it learned only on its own base)."""
    from env.model import resolve_adapter
    from train.registry import list_runs

    runs = [r for r in list_runs(settings) if base is None or Path(r.base_model).resolve() == base.resolve()]
    pairs = (resolve_adapter(settings, run.name) for run in runs)
    return {name: path for name, path in pairs if (path / "adapter_config.json").is_file()}


def register(cli: typer.Typer) -> None:
    """Add `app` and `demo` to the `inboxrl` CLI."""

    @cli.command("app")
    def app_command(
        port: Annotated[int, typer.Option(help="Port of the web app.")] = 8501,
        host: Annotated[
            str, typer.Option(help="Address to bind; 0.0.0.0 exposes it (Docker).")
        ] = "127.0.0.1",
    ) -> None:
        """Serve the chat, traces, evaluation and training pages (Streamlit, headless)."""
        raise typer.Exit(run_app(host, port))

    @cli.command("demo")
    def demo_command(
        port: Annotated[int, typer.Option(help="Port of the web app.")] = 8501,
        host: Annotated[str, typer.Option(help="Address to bind the app to.")] = "127.0.0.1",
        keep_server: Annotated[
            bool, typer.Option(help="Leave the model server running when the app stops.")
        ] = False,
        model: Annotated[
            str | None,
            typer.Option(
                help=f"Model to serve: {RELEASED_MODEL_NAME} (the trained agent InboxRL ships, the "
                f"default), {EMBEDDED_MODEL_NAME} (the untrained base model), or a trained run "
                "(`inboxrl runs`), merged into its base model."
            ),
        ] = None,
    ) -> None:
        """Prepare the trained model, ingest the default inbox, start the model server, serve the app."""
        from app.commands.model import prepare_named_model
        from env.model import ModelError, is_healthy, serve, stop

        os.environ.update(OFFLINE_ENV)
        if model:
            os.environ["INBOXRL_MODEL"] = model  # the app's own process reads the same default
        settings = Settings()
        started = time.monotonic()
        typer.secho(f"InboxRL demo (home {settings.home})", bold=True)
        server_up = is_healthy(settings.base_url, settings.api_key)
        try:
            if not server_up:
                with step(f"Preparing the model {settings.model} (once; about 1 min)"):
                    model_dir = prepare_named_model(settings, settings.model)
                    typer.echo(f"  {model_dir}")
            with step("Loading the default inbox"):
                typer.echo(f"  {ensure_default_inbox(settings)}")
            if server_up:
                typer.echo(f"• The model server at {settings.base_url} is already up.")
            else:
                adapters = registered_adapters(settings, base=model_dir) if settings.serve_lora else {}
                names = f" with adapters {', '.join(adapters)}" if adapters else ""
                what = (
                    f"Starting the model server{names} (about 2 min cold, 40 s warm)"
                    if settings.serve_lora
                    else "Starting the model server without LoRA (it compiles the model: about 2 min)"
                )
                with step(what):
                    info = serve(settings, model_dir=model_dir, adapters=adapters)
                    typer.echo(f"  vLLM serves {info.model} at {info.base_url} (log {info.log_path})")
        except (ModelError, OSError, ValueError) as e:
            typer.secho(f"Error: {e}", err=True, fg="red")
            raise typer.Exit(1) from e
        typer.echo("• Starting the app...")
        try:
            code = run_app(host, port, started=started, on_ready=lambda: print_examples(settings))
        finally:
            if not server_up and not keep_server and stop(settings):
                typer.echo("Stopped the model server.")
        raise typer.Exit(code)
