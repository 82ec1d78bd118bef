"""One chat turn: run the agent on a question, collect its live events, keep the trajectory.

The chat page calls :func:`run_turn` with an ``on_event`` callback that draws each tool call as it
happens, then keeps the returned :class:`ChatTurn` in ``st.session_state`` to redraw the history.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from env.config import Settings
from env.db import Inbox


@dataclass
class ChatTurn:
    """A question, the agent's trajectory for it and the user's feedback."""

    id: str
    question: str
    inbox_id: str
    query_date: str
    model: str
    trajectory: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    feedback: int | None = None

    @property
    def answer(self) -> str | None:
        """The final answer, or None when the agent gave none."""
        return self.trajectory.get("answer")

    @property
    def sources(self) -> list[str]:
        """Message-IDs the answer cites."""
        return list(self.trajectory.get("sources") or [])

    @property
    def trace_id(self) -> str | None:
        """The turn's trace in the local store."""
        return self.trajectory.get("trace_id")

    @property
    def found_answer(self) -> bool:
        """Whether the agent answered (rather than saying it does not know or failing)."""
        return self.trajectory.get("ended") == "answered" and not is_abstention(self.answer)


def is_abstention(answer: str | None) -> bool:
    """Whether an answer says the agent does not know (the judge's own rule)."""
    from judge.abstain import is_abstention as judge_is_abstention

    return judge_is_abstention(answer)


def run_turn(
    question: str,
    inbox: Inbox,
    query_date: str,
    *,
    db: sqlite_utils.Database,
    settings: Settings,
    session_id: str,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> ChatTurn:
    """Run the agent on one question; never raises for model or server trouble (see ``turn.error``)."""
    from env.agent import arun_agent
    from env.trace import Tracer

    turn = ChatTurn(
        id=uuid.uuid4().hex[:12],
        question=question,
        inbox_id=inbox.id,
        query_date=query_date,
        model=settings.model,
    )
    tracer = Tracer.for_db(settings.db_path, session_id=session_id, name="chat")
    try:
        trajectory = asyncio.run(
            arun_agent(
                question,
                inbox,
                query_date,
                db=db,
                settings=settings,
                on_event=on_event,
                tracer=tracer,
            )
        )
        turn.trajectory = trajectory.to_dict()
        turn.error = trajectory.error
    except Exception as exc:  # the UI must show any failure as a message, not a traceback
        turn.error = f"{type(exc).__name__}: {exc}"
    finally:
        tracer.flush()
    return turn


def save_feedback(settings: Settings, turn: ChatTurn, value: int | None) -> None:
    """Store a thumbs up (1) or down (0) as the ``user_feedback`` score on the turn's trace.

    The score goes to the local trace store and, when configured, to Langfuse.
    """
    from env.trace import Tracer

    turn.feedback = value
    if value is None or not turn.trace_id:
        return
    tracer = Tracer.for_db(settings.db_path)
    tracer.add_score(turn.trace_id, "user_feedback", float(value))
    tracer.flush()
