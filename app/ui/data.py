"""Data access for the app's pages: the inbox DB, emails, eval runs and training runs.

Everything here is plain Python (no Streamlit), so the pages stay thin and tests can call it.
Each browser session opens its own SQLite connections (WAL mode): sessions never share one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from env.config import Settings
from env.db import Inbox, list_inboxes, open_db


class AppStateError(RuntimeError):
    """Something the app needs is missing; the message says how to fix it."""


# ---------------------------------------------------------------- the inbox DB


def open_inbox_db(settings: Settings) -> sqlite_utils.Database:
    """Open the inbox DB, or raise :class:`AppStateError` saying how to create it."""
    path = settings.db_path
    if not path.exists():
        raise AppStateError(
            f"No inbox DB yet at {path}. Ingest a mailbox with `inboxrl ingest PATH`, "
            "or run `inboxrl demo` to load the default inbox."
        )
    return open_db(path)


def inboxes_or_error(db: sqlite_utils.Database, settings: Settings) -> list[Inbox]:
    """The DB's inboxes that hold at least one email, or :class:`AppStateError` when there are none."""
    inboxes = [i for i in list_inboxes(db) if i.message_count > 0]
    if not inboxes:
        raise AppStateError(
            f"The inbox DB at {settings.db_path} has no emails yet. "
            "Ingest a mailbox with `inboxrl ingest PATH` (maildir, mbox, .eml folder, emails.csv)."
        )
    return inboxes


def default_query_date(inbox: Inbox) -> str:
    """ "Today" for questions about an inbox: the day of its last email (Enron mail ends in 2002)."""
    return (inbox.last_date or "")[:10]


def read_email(db: sqlite_utils.Database, inbox_id: str, message_id: str) -> dict[str, Any] | None:
    """One email of an inbox by any of its Message-IDs: headers (to, cc, bcc lists) and body.

    This is the agent's own ``read_email`` tool with no date limit; None when the inbox has no such email.
    """
    from env.tools import ToolError, make_tools

    try:
        return make_tools(db, inbox_id, None).read_email(message_id)
    except (ToolError, LookupError):
        return None


# ---------------------------------------------------------------- traces


def traces_table(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``TraceStore.list_traces`` for a table: when, what was asked, how it ended."""
    columns = ("created", "name", "inbox", "question", "answer", "ended", "model", "turns", "tool_calls")
    rows = []
    for trace in traces:
        row = {c: trace.get(c) for c in columns}
        row["created"] = str(row["created"] or "")[:19].replace("T", " ")
        row["seconds"] = round(trace.get("duration_s") or 0.0, 1)
        rows.append(row)
    return rows


def spans_table(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trace's spans for a table: kind, name, duration, tokens, error and a short input."""
    rows = []
    for span in spans:
        text = json.dumps(span.get("input"), ensure_ascii=False) if span.get("input") is not None else ""
        rows.append(
            {
                "kind": span.get("kind"),
                "name": span.get("name"),
                "seconds": round(span.get("duration_s") or 0.0, 2),
                "prompt tokens": span.get("prompt_tokens"),
                "completion tokens": span.get("completion_tokens"),
                "error": span.get("error"),
                "input": text[:200],
            }
        )
    return rows


# ---------------------------------------------------------------- evaluation runs


@dataclass
class EvalRun:
    """One `inboxrl eval` output folder."""

    name: str
    path: Path
    summary: dict[str, Any]
    plots: list[Path] = field(default_factory=list)

    def results(self) -> dict[str, dict[str, Any]]:
        """The rows of results.jsonl by question id, read only: a line an eval is still writing is
        skipped (``judge.evaluate.load_results`` would repair the file, racing a running eval)."""
        return {
            row["id"]: row
            for row in read_jsonl(self.path / "results.jsonl")
            if isinstance(row.get("id"), str)
        }

    def report(self) -> str:
        """report.md, or an empty string."""
        path = self.path / "report.md"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def evals_dir(settings: Settings) -> Path:
    """Where `inboxrl eval` writes its runs."""
    return settings.home / "evals"


def list_eval_runs(settings: Settings) -> list[EvalRun]:
    """Every eval run folder (one with a summary.json or results.jsonl), newest first."""
    root = evals_dir(settings)
    if not root.is_dir():
        return []
    runs = []
    for path in root.iterdir():
        summary_file = path / "summary.json"
        if not path.is_dir() or not (summary_file.is_file() or (path / "results.jsonl").is_file()):
            continue
        summary = read_json(summary_file)
        plots = sorted(path.glob("*.png"))
        runs.append(EvalRun(name=path.name, path=path, summary=summary, plots=plots))
    return sorted(runs, key=lambda r: r.path.stat().st_mtime, reverse=True)


def summary_metrics(summary: dict[str, Any], prefix: str = "") -> dict[str, float | str]:
    """Flatten a summary.json into ``{"accuracy": 0.4, "by_kind.single.accuracy": 0.5, ...}``.

    Numbers and short strings are kept; lists are left out.

    >>> summary_metrics({"model": "m", "n": 3, "rates": {"correct": 0.5}, "ids": [1]})
    {'model': 'm', 'n': 3, 'rates.correct': 0.5}
    """
    flat: dict[str, float | str] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(summary_metrics(value, prefix=f"{name}."))
        elif isinstance(value, bool):
            flat[name] = str(value)
        elif _is_number(value) or (isinstance(value, str) and len(value) <= 120):
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def result_verdict(row: dict[str, Any]) -> str:
    """How a results.jsonl row came out: ``correct``, ``abstained``, ``incorrect``, ``no_answer``
    (the judge's grouping), or ``judge failed``."""
    from judge.summary import outcome_group

    return outcome_group(row) or "judge failed"


def disagreements(runs: list[EvalRun]) -> list[dict[str, Any]]:
    """Questions asked in every run whose outcomes differ between runs.

    Returns one row per question: ``{"id", "question", <run name>: outcome, ...}``.
    """
    by_run = {run.name: run.results() for run in runs}
    if len(by_run) < 2:
        return []
    shared = set.intersection(*(set(rows) for rows in by_run.values()))
    out = []
    for key in sorted(shared):
        outcomes = {name: result_verdict(rows[key]) for name, rows in by_run.items()}
        if len(set(outcomes.values())) > 1:
            question = next(iter(by_run.values()))[key].get("question") or {}
            out.append({"id": key, "question": question.get("question", ""), **outcomes})
    return out


#: The eval metrics that lead the side-by-side table (then everything else in summary.json).
HEADLINE_METRICS = (
    "accuracy",
    "hallucination_rate",
    "abstention_rate",
    "no_answer_rate",
    "answer_precision",
    "reward_mean",
    "source_precision",
    "source_recall",
    "avg_turns",
    "avg_tool_calls",
    "latency_p50_s",
    "latency_p95_s",
    "avg_tokens",
    "n",
)


def metrics_table(runs: list[EvalRun]) -> Any:
    """Summary metrics side by side: one row per metric, one column per run (values as text)."""
    import pandas as pd

    columns = {run.name: summary_metrics(run.summary) for run in runs}
    seen = list(dict.fromkeys(k for flat in columns.values() for k in flat))
    metrics = [k for k in HEADLINE_METRICS if k in seen] + [k for k in seen if k not in HEADLINE_METRICS]
    table = {name: [_fmt(flat.get(metric)) for metric in metrics] for name, flat in columns.items()}
    return pd.DataFrame(table, index=pd.Index(metrics, name="metric"))


def _fmt(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def result_row(run: EvalRun, key: str) -> dict[str, Any]:
    """The results.jsonl row of question ``key`` in a run (``{}`` if the run did not ask it)."""
    return run.results().get(key, {})


def result_trajectory(row: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's trajectory stored in a results.jsonl row, if any."""
    trajectory = row.get("trajectory")
    return trajectory if isinstance(trajectory, dict) else None


# ---------------------------------------------------------------- files


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file; missing files and unreadable lines give nothing."""
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- training runs

CURVE_WORDS = ("reward", "accuracy", "correct", "abstain", "halluc")


def list_training_runs(settings: Settings) -> list[Any]:
    """The registered adapters (``train.registry.RunInfo``), oldest first."""
    from train.registry import list_runs

    return list_runs(settings)


def training_table(runs: list[Any]) -> list[dict[str, Any]]:
    """One row per run: name, kind, base model, creation time and its eval accuracy if known."""
    rows = []
    for run in runs:
        evaluation = summary_metrics(run.eval or {})
        row = {"run": run.name, "kind": run.kind, "base model": run.base_model, "created": run.created}
        row.update({k: v for k, v in evaluation.items() if isinstance(v, int | float)})
        rows.append(row)
    return rows


def training_curves(runs: list[Any]) -> Any:
    """Every numeric metric of the runs' metrics.jsonl as a long table: run, step, metric, value.

    A run that logged several stages (``sft``, ``grpo``) gets one series per stage.
    """
    import pandas as pd

    from train.metrics import read_metrics

    rows = []
    for run in runs:
        records = [r for r in read_metrics(Path(run.path) / "metrics.jsonl") if "train_runtime" not in r]
        for i, record in enumerate(records):
            series = f"{run.name} · {record['stage']}" if record.get("stage") else run.name
            step = record.get("step", i)
            for key, value in record.items():
                if key != "step" and _is_number(value) and not isinstance(value, bool):
                    rows.append({"run": series, "step": step, "metric": key, "value": float(value)})
    return pd.DataFrame(rows, columns=["run", "step", "metric", "value"])


def curve_metrics(curves: Any) -> list[str]:
    """The metrics worth a chart: rewards, accuracy, abstention and hallucination rates."""
    names = sorted(set(curves["metric"])) if len(curves) else []
    return [n for n in names if any(word in n.lower() for word in CURVE_WORDS)]


def run_plots(run: Any) -> list[Path]:
    """The PNG plots training wrote into the run folder."""
    return sorted(Path(run.path).glob("*.png"))
