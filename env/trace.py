"""Traces of agent rollouts: a local SQLite store always, Langfuse as well when configured.

One rollout is one trace; each model call and each tool call is a span (start, end, input, output,
error, tokens); scores (judge verdicts, rewards, user feedback) attach to a trace. The local store
is a SQLite file beside the inbox DB (``inbox.db`` -> ``inbox.traces.db``, see
:func:`env.config.trace_db_path`), in WAL mode, opened per operation, so several processes and
the UI's concurrent sessions can write and read it at once. A trace is written in one transaction
when its rollout ends, so readers never see half a trace.

When ``LANGFUSE_PUBLIC_KEY``, ``LANGFUSE_SECRET_KEY`` and ``LANGFUSE_HOST`` (or
``LANGFUSE_BASE_URL``) are all set, every trace is also sent to Langfuse (an ``agent``
observation with a ``generation`` per model call and a ``tool`` per tool call, same trace id). Without
them, the Langfuse SDK is never imported. Langfuse failures are logged, never raised.

    store = TraceStore(trace_db_path(Path("inbox.db")))
    store.list_traces(search="budget", limit=20)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from env.config import private_file, trace_db_path
from env.trajectory import Trajectory

log = logging.getLogger(__name__)

LANGFUSE_VARS = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")


def langfuse_configured() -> bool:
    """True when the Langfuse keys and host are all set in the environment."""
    host = os.environ.get("LANGFUSE_HOST") or os.environ.get("LANGFUSE_BASE_URL")
    return bool(host) and all(os.environ.get(v) for v in LANGFUSE_VARS)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------------------------
# Local store


class TraceStore:
    """The local trace store: tables ``traces``, ``spans`` and ``scores`` in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = private_file(Path(path))  # traces hold email text: 0600 (and so its -wal/-shm)
        with self._db() as db:
            self._ensure_schema(db)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite_utils.Database]:
        conn = sqlite3.connect(str(self.path), timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            yield sqlite_utils.Database(conn)
        finally:
            conn.close()

    @staticmethod
    def _ensure_schema(db: sqlite_utils.Database) -> None:
        with db.conn:
            db["traces"].create(
                {
                    "id": str,
                    "created": str,
                    "session_id": str,
                    "name": str,
                    "inbox": str,
                    "query_date": str,
                    "question": str,
                    "model": str,
                    "answer": str,
                    "sources": str,
                    "ended": str,
                    "error": str,
                    "duration_s": float,
                    "turns": int,
                    "tool_calls": int,
                    "prompt_tokens": int,
                    "completion_tokens": int,
                    "trajectory": str,
                },
                pk="id",
                if_not_exists=True,
            )
            db["traces"].create_index(["created"], if_not_exists=True)
            db["traces"].create_index(["session_id"], if_not_exists=True)
            db["spans"].create(
                {
                    "id": str,
                    "trace_id": str,
                    "kind": str,
                    "name": str,
                    "start": str,
                    "end": str,
                    "duration_s": float,
                    "input": str,
                    "output": str,
                    "error": str,
                    "prompt_tokens": int,
                    "completion_tokens": int,
                },
                pk="id",
                if_not_exists=True,
            )
            db["spans"].create_index(["trace_id"], if_not_exists=True)
            db["scores"].create(
                {"id": str, "trace_id": str, "name": str, "value": float, "comment": str, "created": str},
                pk="id",
                if_not_exists=True,
            )
            db["scores"].create_index(["trace_id"], if_not_exists=True)

    def save(
        self, traj: Trajectory, spans: list[dict], *, session_id: str | None = None, name: str = "rollout"
    ) -> None:
        """Write (or replace) the trace of one rollout and its spans in one transaction."""
        row = {
            "id": traj.trace_id,
            "created": _iso(traj.started or time.time()),
            "session_id": session_id,
            "name": name,
            "inbox": traj.inbox,
            "query_date": traj.query_date,
            "question": traj.question,
            "model": traj.model,
            "answer": traj.answer,
            "sources": _json(traj.sources),
            "ended": traj.ended,
            "error": traj.error,
            "duration_s": traj.duration_s,
            "turns": len(traj.turns),
            "tool_calls": len(traj.tool_calls),
            "prompt_tokens": traj.prompt_tokens,
            "completion_tokens": traj.completion_tokens,
            "trajectory": traj.to_json(),
        }
        with self._db() as db, db.conn:
            db.execute("delete from spans where trace_id = ?", [traj.trace_id])
            db["traces"].insert(row, replace=True)
            if spans:
                db["spans"].insert_all([{**s, "trace_id": traj.trace_id} for s in spans])

    def add_score(self, trace_id: str, name: str, value: float, comment: str | None = None) -> str:
        """Attach a score (a judge verdict, a reward, user feedback) to a trace; returns its id."""
        score_id = uuid.uuid4().hex
        row = {
            "id": score_id,
            "trace_id": trace_id,
            "name": name,
            "value": float(value),
            "comment": comment,
            "created": _iso(time.time()),
        }
        with self._db() as db, db.conn:
            db["scores"].insert(row)
        return score_id

    def list_traces(
        self, search: str | None = None, *, limit: int = 50, offset: int = 0, session_id: str | None = None
    ) -> list[dict]:
        """Recent traces, newest first, without their trajectories.

        :param search: keep traces whose question, answer, inbox, model or id contains this text.
        :param session_id: keep one session's traces.
        """
        where, params = [], []
        if search:
            where.append(
                "(question like :q or answer like :q or inbox like :q or model like :q or id like :q)"
            )
            params.append(("q", f"%{search}%"))
        if session_id:
            where.append("session_id = :session")
            params.append(("session", session_id))
        clause = f"where {' and '.join(where)}" if where else ""
        columns = (
            "id, created, session_id, name, inbox, query_date, question, model, answer, sources, ended, "
        )
        columns += "error, duration_s, turns, tool_calls, prompt_tokens, completion_tokens"
        sql = f"select {columns} from traces {clause} order by created desc, id limit :limit offset :offset"
        with self._db() as db:
            rows = list(db.query(sql, {**dict(params), "limit": limit, "offset": offset}))
        for row in rows:
            row["sources"] = json.loads(row["sources"] or "[]")
        return rows

    def get_trace(self, trace_id: str) -> dict | None:
        """One trace with its ``trajectory`` (a Trajectory), ``spans`` and ``scores``; None if unknown."""
        with self._db() as db:
            rows = list(db.query("select * from traces where id = ?", [trace_id]))
            if not rows:
                return None
            trace = rows[0]
            trace["spans"] = list(
                db.query("select * from spans where trace_id = ? order by start", [trace_id])
            )
            trace["scores"] = list(
                db.query("select * from scores where trace_id = ? order by created", [trace_id])
            )
        trace["sources"] = json.loads(trace["sources"] or "[]")
        trace["trajectory"] = Trajectory.from_dict(json.loads(trace["trajectory"]))
        for span in trace["spans"]:
            for key in ("input", "output"):
                span[key] = json.loads(span[key]) if span[key] is not None else None
        return trace


# ---------------------------------------------------------------------------------------------
# Tracer: what the agent loop talks to


class Tracer:
    """Records rollouts in a :class:`TraceStore` and, when configured, in Langfuse.

    :param store: the local store, or None for none.
    :param session_id: groups traces (a UI chat session, an eval run).
    :param name: the trace name (``ask``, ``chat``, ``eval``...).
    :param langfuse: mirror to Langfuse; default: when the ``LANGFUSE_*`` variables are set.
    """

    def __init__(
        self,
        store: TraceStore | None = None,
        *,
        session_id: str | None = None,
        name: str = "rollout",
        langfuse: bool | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.name = name
        self._langfuse = None
        if langfuse_configured() if langfuse is None else langfuse:
            try:
                from langfuse import get_client

                self._langfuse = get_client()
            except Exception:
                log.exception("Langfuse is configured but its client could not start; tracing locally only")

    @classmethod
    def for_db(cls, db_path: str | Path | None, **kwargs: Any) -> Tracer:
        """A tracer writing to the trace store beside ``db_path`` (no local store for an in-memory DB)."""
        store = TraceStore(trace_db_path(Path(db_path))) if db_path else None
        return cls(store, **kwargs)

    @property
    def langfuse_enabled(self) -> bool:
        """Whether traces are mirrored to Langfuse."""
        return self._langfuse is not None

    def start(self, traj: Trajectory) -> RolloutTrace:
        """Begin the trace of one rollout (``traj.trace_id`` is its id)."""
        return RolloutTrace(self, traj)

    def add_score(self, trace_id: str, name: str, value: float, comment: str | None = None) -> None:
        """Score a trace in the local store and in Langfuse."""
        if self.store:
            self.store.add_score(trace_id, name, value, comment)
        if self._langfuse is not None:
            try:
                self._langfuse.create_score(name=name, value=float(value), trace_id=trace_id, comment=comment)
            except Exception:
                log.exception("could not send a score to Langfuse")

    def flush(self) -> None:
        """Send buffered Langfuse events now (call before a short-lived process exits)."""
        if self._langfuse is not None:
            try:
                self._langfuse.flush()
            except Exception:
                log.exception("could not flush Langfuse")


class Span:
    """One model or tool call in a trace; :meth:`end` it with the output or error."""

    def __init__(self, rollout: RolloutTrace, kind: str, name: str, input: Any) -> None:
        self.rollout = rollout
        self.row: dict[str, Any] = {
            "id": uuid.uuid4().hex[:16],
            "kind": kind,
            "name": name,
            "start": _iso(time.time()),
            "input": _json(input),
        }
        self._t0 = time.time()
        self._observation = rollout._langfuse_child(kind, name, input)

    def end(
        self,
        *,
        output: Any = None,
        error: str | None = None,
        tokens: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """Close the span."""
        now = time.time()
        self.row.update(
            end=_iso(now),
            duration_s=now - self._t0,
            output=_json(output),
            error=error,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
        )
        self.rollout.spans.append(self.row)
        if self._observation is not None:
            try:
                usage = {k: v for k, v in zip(("input", "output"), tokens, strict=True) if v is not None}
                extra = {"usage_details": usage} if self.row["kind"] == "model" and usage else {}
                if error:
                    extra.update(level="ERROR", status_message=error)
                self._observation.update(output=output, **extra)
                self._observation.end()
            except Exception:
                log.exception("could not end a Langfuse observation")


class RolloutTrace:
    """The trace of one rollout while it runs: spans collect in memory, ``finish`` writes them."""

    def __init__(self, tracer: Tracer, traj: Trajectory) -> None:
        self.tracer = tracer
        self.trace_id = traj.trace_id
        self.model = traj.model
        self.spans: list[dict] = []
        self._stack = contextlib.ExitStack()
        self._root = None
        if tracer._langfuse is not None:
            try:
                from langfuse import propagate_attributes

                self._root = self._stack.enter_context(
                    tracer._langfuse.start_as_current_observation(
                        trace_context={"trace_id": traj.trace_id},
                        name=tracer.name,
                        as_type="agent",
                        input={"question": traj.question, "inbox": traj.inbox, "query_date": traj.query_date},
                        metadata={"model": traj.model},
                    )
                )
                self._stack.enter_context(
                    propagate_attributes(
                        session_id=tracer.session_id,
                        trace_name=tracer.name,
                        metadata={"inbox": traj.inbox, "query_date": traj.query_date},
                    )
                )
            except Exception:
                log.exception("could not start a Langfuse trace")
                self._stack.close()
                self._root = None

    def span(self, kind: str, name: str, input: Any) -> Span:
        """Open a span: ``kind`` is ``model`` or ``tool``."""
        return Span(self, kind, name, input)

    def _langfuse_child(self, kind: str, name: str, input: Any) -> Any:
        if self._root is None:
            return None
        try:
            if kind == "model":
                return self._root.start_observation(
                    name=name, as_type="generation", input=input, model=self.model
                )
            return self._root.start_observation(name=name, as_type="tool", input=input)
        except Exception:
            log.exception("could not start a Langfuse observation")
            return None

    def finish(self, traj: Trajectory) -> None:
        """Write the finished rollout to the store and close its Langfuse trace."""
        if self.tracer.store:
            try:
                self.tracer.store.save(
                    traj, self.spans, session_id=self.tracer.session_id, name=self.tracer.name
                )
            except sqlite3.Error:
                log.exception("could not write trace %s to %s", traj.trace_id, self.tracer.store.path)
        if self._root is not None:
            try:
                self._root.update(
                    output={"answer": traj.answer, "sources": traj.sources, "ended": traj.ended},
                    **({"level": "ERROR", "status_message": traj.error} if traj.error else {}),
                )
            except Exception:
                log.exception("could not close a Langfuse trace")
            finally:
                self._stack.close()
