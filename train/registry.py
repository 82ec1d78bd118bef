"""The registry of trained adapters: ``settings.runs_dir/<name>/``.

A run folder holds what training wrote (``checkpoints/``, ``metrics.jsonl``, ``*.png``) and, once
the run is registered, ``adapter/`` (a PEFT LoRA folder) and ``run.json``: base model, data, config,
eval summary, creation time. Only folders with ``run.json`` are registered runs; the model server
(``inboxrl model serve --adapter NAME``, ``env.model.load_adapter``) and the UI load them by name.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from env.config import Settings
from env.model import model_prompt_settings, prompt_settings

RUN_FILE = "run.json"
ADAPTER_DIR = "adapter"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class NoRun(LookupError):
    """Specified run does not exist in the registry."""


@dataclass
class RunInfo:
    """One registered adapter (the contents of ``run.json``)."""

    name: str
    kind: str
    base_model: str
    created: str
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    parent: str | None = None
    path: str = ""

    @property
    def adapter_dir(self) -> Path:
        """The PEFT adapter folder."""
        return Path(self.path) / ADAPTER_DIR

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``path`` is where the registry found it, not stored)."""
        out = asdict(self)
        del out["path"]
        return out


def check_name(name: str) -> str:
    """A run name is a folder name: letters, digits, ``._-``, up to 64 characters.

    >>> check_name("grpo-allen-p.1")
    'grpo-allen-p.1'
    """
    if not _NAME.match(name):
        raise ValueError(
            f"Bad run name {name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)."
        )
    return name


def new_run_name(settings: Settings, prefix: str) -> str:
    """A fresh name ``<prefix>-YYYYmmdd-HHMMSS`` (with a counter if taken)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    name, n = f"{prefix}-{stamp}", 1
    while (settings.runs_dir / name).exists():
        n += 1
        name = f"{prefix}-{stamp}-{n}"
    return check_name(name)


def run_dir(settings: Settings, name: str) -> Path:
    """The folder of run ``name`` (registered or still training)."""
    return settings.runs_dir / check_name(name)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` all at once (``judge.evaluate.write_atomic``: temp file, ``os.replace``)."""
    from judge.evaluate import write_atomic

    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def register_run(
    settings: Settings,
    name: str,
    adapter: str | Path,
    *,
    kind: str,
    base_model: str,
    data: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    eval_summary: dict[str, Any] | None = None,
    parent: str | None = None,
) -> RunInfo:
    """Register the adapter at ``adapter`` as run ``name``.

    The adapter is copied to ``<runs_dir>/<name>/adapter`` (skipped when it is already there) through
    a temp folder, and ``run.json`` is written last, atomically: a crash leaves no half-registered run.
    Registering a name twice replaces the earlier entry.
    """
    folder = run_dir(settings, name)
    source = Path(adapter)
    if not (source / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{source} is not a PEFT adapter folder (no adapter_config.json).")
    target = folder / ADAPTER_DIR
    if source.resolve() != target.resolve():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=folder))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    info = RunInfo(
        name=name,
        kind=kind,
        base_model=str(base_model),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        data=data or {},
        config=config or {},
        eval=eval_summary,
        parent=parent,
        path=str(folder),
    )
    write_json_atomic(folder / RUN_FILE, info.to_dict())
    return info


def _read(folder: Path) -> RunInfo:
    data = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    known = {k: data[k] for k in RunInfo.__dataclass_fields__ if k in data and k != "path"}
    return RunInfo(**known, path=str(folder))


def list_runs(settings: Settings) -> list[RunInfo]:
    """Every registered run, oldest first (folders without ``run.json`` are unfinished and left out)."""
    if not settings.runs_dir.is_dir():
        return []
    runs = []
    for folder in settings.runs_dir.iterdir():
        if (folder / RUN_FILE).is_file():
            try:
                runs.append(_read(folder))
            except (json.JSONDecodeError, TypeError):
                continue  # a run.json this version cannot read; `get_run` reports it
    return sorted(runs, key=lambda r: (r.created, r.name))


def get_run(settings: Settings, name: str) -> RunInfo:
    """The registered run ``name``; raises :class:`NoRun` listing the runs that exist."""
    folder = settings.runs_dir / name
    if not (folder / RUN_FILE).is_file():
        known = (
            ", ".join(r.name for r in list_runs(settings)) or "none yet: train one with `inboxrl train grpo`"
        )
        raise NoRun(f"No registered run {name!r} in {settings.runs_dir}. Runs: {known}")
    return _read(folder)


def update_eval(settings: Settings, name: str, summary: dict[str, Any]) -> RunInfo:
    """Store an evaluation summary in run ``name``'s ``run.json``."""
    info = get_run(settings, name)
    info.eval = summary
    write_json_atomic(Path(info.path) / RUN_FILE, info.to_dict())
    return info


def agent_settings(settings: Settings, model: str) -> Settings:
    """``settings`` for running ``model``: a registered adapter, or the released model InboxRL ships,
    brings the prompt it was trained with (``env.model.model_prompt_settings``)."""
    try:
        run = get_run(settings, check_name(model))
    except (NoRun, ValueError):  # a served or hosted model name, not a run of this registry
        return settings.model_copy(update={"model": model, **model_prompt_settings(model)})
    return settings.model_copy(update={"model": model, **prompt_settings(run.config)})


def resolve_adapter_path(settings: Settings, spec: str) -> Path:
    """An adapter folder from a path or a registered run name."""
    path = Path(spec).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    return get_run(settings, spec).adapter_dir


MERGED_DIR = "runs"
"""Merged run models live in ``<models_dir>/runs/<name>``."""


def prepare_run_model(settings: Settings, name: str, *, progress: bool = True) -> Path:
    """Registered run ``name`` as a model folder: its base model with its adapter merged in, at
    ``<models_dir>/runs/<name>`` (merged again when the adapter changes). Served under the run's name,
    it answers at the base model's speed, where vLLM's CPU build runs a LoRA several times slower.

    The base is the folder the run trained on; when that is gone and it was a model InboxRL prepares
    (e.g. ``inboxrl-135m``), it is prepared again.

    :raises NoRun: no registered run ``name``.
    :raises ModelError: the base model is gone and cannot be prepared again.
    """
    from env.model import ModelError, model_names, prepare_merged, prepare_model

    run = get_run(settings, check_name(name))
    base = Path(run.base_model)
    if not (base / "config.json").is_file():
        if base.name not in model_names():
            raise ModelError(
                f"Run {name!r} was trained on {base}, which is gone; serve its adapter on another base "
                f"with `inboxrl model serve --model-dir BASE --adapter {name}`."
            )
        base = prepare_model(settings, base.name, progress=progress)
    marker = {"run": name, "prompt": prompt_settings(run.config)}
    target = settings.models_dir / MERGED_DIR / name
    return prepare_merged(run.adapter_dir, base, target, marker=marker, progress=progress)
