"""Batch evaluation: run the agent on every question, judge, reward, and report.

    summary = evaluate(load_questions(path), db_path=db, out_dir=out, settings=Settings(model="smollm2-135m"))

writes to ``out_dir``:

- ``run.json``: what is being evaluated (model, endpoint, judge, questions, DB, reward table);
- ``results.jsonl``: one line per question, appended as each finishes: the question, the
  trajectory, the verdict (and the deterministic judge's, when an LLM judges), the reward and
  per-question metrics;
- ``summary.json``, ``report.md`` and PNG plots (:mod:`judge.report`).

Resumable: a rerun with the same ``out_dir`` skips questions already in ``results.jsonl`` and only
re-judges rows whose judge failed (their trajectories are kept) and runs again the rollouts that
failed for infrastructure reasons (``infra_error``: the endpoint timed out, dropped the connection or
answered 5xx through every retry; see ``env.agent.is_transient``). Those rows are kept for the
record but are no outcome of the model: the summary counts them apart (``infra_failures``) and
leaves them out of accuracy, reward and every other metric. A line torn by a crash is moved to
``results.rejected.jsonl`` and its question runs again. A run dir belongs to one model and one
judge: resuming with others is refused.

Each verdict is attached to its rollout's trace (local trace store, and Langfuse when configured)
as scores: ``correct``, ``hallucination``, ``abstained`` and ``reward``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judge.judge import JudgeError, ajudge_answer, deterministic_verdict
from judge.reward import GoldIds, RewardConfig, compute_reward

if TYPE_CHECKING:
    import openai
    import sqlite_utils

    from env.config import Settings
    from env.trace import Tracer
    from env.trajectory import Trajectory
    from synth_data.questions import Question

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
REJECTED = "results.rejected.jsonl"
RUN = "run.json"
SUMMARY = "summary.json"


class EvalError(RuntimeError):
    """The evaluation cannot start or resume; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Files


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temp file in the same folder and ``os.replace``; it stays private
    (mkstemp's 0600), as eval outputs quote questions, answers and email text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(out_dir: Path) -> dict[str, dict]:
    """The rows of ``results.jsonl`` by question id (the last row of an id wins).

    Lines that are not valid rows (a write torn by a crash) are moved to ``results.rejected.jsonl``
    and the file is rewritten without them, so their questions run again.
    """
    path = Path(out_dir) / RESULTS
    if not path.exists():
        return {}
    good, bad = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and isinstance(row.get("id"), str) and "trajectory" in row
        except json.JSONDecodeError:
            ok = False
        (good if ok else bad).append(line)
    if bad:
        log.warning("%s: moved %d unreadable line(s) to %s", path, len(bad), REJECTED)
        with (path.parent / REJECTED).open("a", encoding="utf-8") as f:
            f.write("\n".join(bad) + "\n")
        write_atomic(path, "".join(line + "\n" for line in good))
    rows: dict[str, dict] = {}
    for line in good:
        row = json.loads(line)
        rows[row["id"]] = row
    return rows


def _append(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def default_out_dir(settings: Settings) -> Path:
    """``<home>/evals/<UTC timestamp>-<model>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.home / "evals" / f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '_', settings.model)}"


# ---------------------------------------------------------------------------------------------
# One question


def source_scores(
    sources: list[str], gold_ids: list[str], inbox: str, db: sqlite_utils.Database | None
) -> tuple[float | None, float | None]:
    """(precision, recall) of the cited sources against the gold emails (any copy counts).

    Precision is None when nothing is cited; recall is None when the question has no gold emails.
    """
    gold = GoldIds(gold_ids, inbox, db)
    cited = gold.keys(sources)
    hits = len(cited & gold.gold)
    precision = hits / len(cited) if cited else None
    recall = hits / len(gold.gold) if gold.gold else None
    return precision, recall


def row_metrics(traj: Trajectory, question: Question, db: sqlite_utils.Database | None) -> dict[str, Any]:
    """Per-question numbers the summary aggregates."""
    cited = traj.sources if traj.ended == "answered" else []
    precision, recall = source_scores(cited, question.message_ids, traj.inbox, db)
    return {
        "turns": len(traj.turns),
        "tool_calls": len(traj.tool_calls),
        "failed_tool_calls": traj.failed_tool_calls,
        "tool_names": [c.name for c in traj.tool_calls],
        "latency_s": round(traj.duration_s, 3),
        "prompt_tokens": traj.prompt_tokens,
        "completion_tokens": traj.completion_tokens,
        "source_precision": precision,
        "source_recall": recall,
    }


async def judge_row(
    traj: Trajectory,
    question: Question,
    *,
    settings: Settings,
    reward_config: RewardConfig,
    db: sqlite_utils.Database | None,
    judge_client: openai.AsyncOpenAI | None = None,
) -> dict[str, Any]:
    """Judge and reward one trajectory: the ``results.jsonl`` row (``judge_error`` set on failure).

    A rollout that failed for infrastructure reasons is neither judged nor rewarded: its row has
    ``infra_error`` (the error) and ``reward`` None, and a resumed run does it again.
    """
    verdict = check = None
    error = None
    if traj.infra_error:
        return {
            "id": question.id,
            "question": question.to_dict(),
            "trajectory": traj.to_dict(),
            "verdict": None,
            "deterministic_verdict": None,
            "reward": None,
            "judge_error": None,
            "infra_error": traj.error,
            "metrics": row_metrics(traj, question, db),
        }
    if traj.ended == "answered":
        try:
            verdict = await ajudge_answer(
                question.question,
                question.answer,
                traj.answer,
                traj.sources,
                question.message_ids,
                settings=settings,
                client=judge_client,
            )
        except JudgeError as exc:
            error = str(exc)
        if settings.judge_model:
            check = deterministic_verdict(question.question, question.answer, traj.answer)
    reward = None if error else compute_reward(traj, verdict, question, reward_config, db=db)
    return {
        "id": question.id,
        "question": question.to_dict(),
        "trajectory": traj.to_dict(),
        "verdict": verdict.to_dict() if verdict else None,
        "deterministic_verdict": check.to_dict() if check else None,
        "reward": reward.to_dict() if reward else None,
        "judge_error": error,
        "infra_error": None,
        "metrics": row_metrics(traj, question, db),
    }


def _score_trace(tracer: Tracer | None, row: dict) -> None:
    trace_id = row["trajectory"].get("trace_id")
    if tracer is None or not trace_id or row["reward"] is None:
        return
    reward = row["reward"]
    rationale = (row["verdict"] or {}).get("rationale") or row["trajectory"]["ended"]
    try:
        for name in ("correct", "hallucination", "abstained"):
            outcome = {"hallucination": "incorrect"}.get(name, name)
            tracer.add_score(trace_id, name, float(reward["outcome"] == outcome), rationale)
        tracer.add_score(trace_id, "reward", reward["total"], json.dumps(reward["components"]))
    except Exception:
        log.exception("could not attach scores to trace %s", trace_id)


# ---------------------------------------------------------------------------------------------
# The run


def _run_meta(
    settings: Settings,
    db_path: Path,
    questions_path: Path | None,
    config: RewardConfig,
    n: int,
    max_tokens: int | None,
) -> dict:
    from env.agent import MAX_COMPLETION_TOKENS

    return {
        "model": settings.model,
        "base_url": settings.base_url,
        "judge_model": settings.judge_model or "deterministic",
        "judge_base_url": (settings.judge_base_url or settings.base_url) if settings.judge_model else None,
        "questions": str(questions_path) if questions_path else None,
        "n_questions": n,
        "db": str(db_path),
        "temperature": settings.temperature,
        "max_turns": settings.max_turns,
        "max_tokens": max_tokens or MAX_COMPLETION_TOKENS,
        "timeout_s": settings.timeout_s,
        "concurrency": settings.concurrency,
        "reward_config": config.to_dict(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _check_resume(out_dir: Path, meta: dict) -> dict:
    path = out_dir / RUN
    if not path.exists():
        write_atomic(path, json.dumps(meta, indent=2) + "\n")
        return meta
    old = json.loads(path.read_text(encoding="utf-8"))
    for key in ("model", "judge_model", "db", "max_turns", "max_tokens"):
        if old.get(key) != meta[key]:
            raise EvalError(
                f"{out_dir} holds a run with {key}={old.get(key)!r}, not {meta[key]!r}. "
                "Pass a new --out to start another run, or the same settings to resume this one."
            )
    return old


async def aevaluate(
    questions: list[Question],
    *,
    db_path: str | Path,
    out_dir: str | Path,
    settings: Settings | None = None,
    reward_config: RewardConfig | None = None,
    limit: int | None = None,
    max_tokens: int | None = None,
    questions_path: str | Path | None = None,
    progress: bool = True,
    client: openai.AsyncOpenAI | None = None,
    judge_client: openai.AsyncOpenAI | None = None,
) -> dict[str, Any]:
    """Evaluate the agent on ``questions`` (see the module docstring); returns the summary.

    :param questions: the questions (``limit`` keeps the first N).
    :param db_path: the inbox DB the questions are about.
    :param out_dir: the run folder; an existing one is resumed.
    :param settings: agent endpoint/model, judge, concurrency, max turns; default ``Settings()``.
    :param reward_config: the reward table; default :class:`RewardConfig` with ``settings.max_turns``.
    :param max_tokens: completion tokens per model call; default the agent's
        (:data:`env.agent.MAX_COMPLETION_TOKENS`).
    :param client: the agent's ``AsyncOpenAI`` client; default ``env.model.make_client(settings)``.
    :param judge_client: the judge's ``AsyncOpenAI`` client; default one from ``settings``.
    """
    from env.agent import arun_agent
    from env.config import Settings
    from env.db import get_inbox, open_db
    from env.trace import Tracer

    settings = settings or Settings()
    reward_config = reward_config or RewardConfig(max_turns=settings.max_turns)
    db_path, out_dir = Path(db_path), Path(out_dir)
    questions = questions[:limit] if limit else list(questions)
    db = open_db(db_path)
    inboxes = {}
    for q in questions:
        if q.inbox_key not in inboxes:
            inboxes[q.inbox_key] = get_inbox(db, q.inbox_key)  # fails early, naming the inboxes there are

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = _check_resume(
        out_dir,
        _run_meta(
            settings,
            db_path,
            questions_path and Path(questions_path),
            reward_config,
            len(questions),
            max_tokens,
        ),
    )
    done = load_results(out_dir)
    redo = {qid for qid, row in done.items() if row.get("infra_error")}  # the infrastructure failed
    todo = [q for q in questions if q.id not in done or q.id in redo]
    rejudge = [q for q in questions if q.id in done and q.id not in redo and done[q.id].get("judge_error")]
    results = out_dir / RESULTS

    own_client = client is None and bool(todo)
    if own_client:
        from env.model import make_client

        client = make_client(settings)
    tracer = Tracer.for_db(db_path, session_id=out_dir.name, name="eval")
    semaphore = asyncio.Semaphore(max(1, settings.concurrency))
    counts = Counter(g for g in (_group(r) for r in done.values()) if g)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]eval {task.fields[model]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
        disable=not progress,
    ) as bar:
        task = bar.add_task(
            "eval",
            total=len(questions),
            completed=len(questions) - len(todo) - len(rejudge),
            model=settings.model,
            counts="",
        )

        def finish(row: dict) -> None:
            _append(results, row)
            _score_trace(tracer, row)
            counts[_group(row) or ("infra_error" if row.get("infra_error") else "judge_error")] += 1
            bar.update(task, advance=1, counts=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))

        async def one(q: Question) -> None:
            from env.trajectory import Trajectory

            try:
                async with semaphore:
                    if q.id in done and q.id not in redo:  # its judge failed: judge the kept trajectory
                        traj = Trajectory.from_dict(done[q.id]["trajectory"])
                    else:
                        traj = await arun_agent(
                            q.question,
                            inboxes[q.inbox_key],
                            q.query_date,
                            db=db,
                            settings=settings,
                            client=client,
                            tracer=tracer,
                            max_tokens=max_tokens,
                        )
                    row = await judge_row(
                        traj,
                        q,
                        settings=settings,
                        reward_config=reward_config,
                        db=db,
                        judge_client=judge_client,
                    )
            except Exception:
                log.exception("question %s crashed; it will run again when this eval is resumed", q.id)
                crashed.append(q.id)
                return
            finish(row)

        crashed: list[str] = []
        try:
            await asyncio.gather(*(one(q) for q in rejudge + todo))
        finally:
            if own_client:  # closed inside the loop: left to the GC it fails with "Event loop is closed"
                await client.close()
    tracer.flush()
    summary = write_outputs(out_dir, questions, meta)
    if crashed:
        ids = ", ".join(crashed[:5]) + ("..." if len(crashed) > 5 else "")
        raise EvalError(
            f"{len(crashed)} question(s) crashed ({ids}): see the log above. The report covers the "
            "others; rerun the same command to retry them."
        )
    return summary


def _group(row: dict) -> str | None:
    from judge.summary import outcome_group

    return outcome_group(row)


def write_outputs(out_dir: Path, questions: list[Question], meta: dict) -> dict[str, Any]:
    """Write ``summary.json``, the plots and ``report.md`` from ``results.jsonl``; returns the summary."""
    from judge.report import write_plots, write_report
    from judge.summary import summarize

    all_rows = load_results(out_dir)
    rows = [all_rows[q.id] for q in questions if q.id in all_rows]
    summary = summarize(rows, {**meta, "finished": datetime.now(UTC).isoformat(timespec="seconds")})
    write_atomic(out_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    plots = write_plots(out_dir, rows, summary)
    write_report(out_dir, rows, summary, plots)
    return summary


def evaluate(questions: list[Question], **kwargs: Any) -> dict[str, Any]:
    """Synchronous :func:`aevaluate` (same arguments)."""
    started = time.time()
    summary = asyncio.run(aevaluate(questions, **kwargs))
    log.info("eval finished in %.1f s", time.time() - started)
    return summary
