"""Trivial policies, scored exactly as a model is: the floor every trained agent must beat.

The "always say I don't know" policy answers every question with ``I don't know`` at once, without
searching. Under the reward table it is never wrong: it gets the ``correct`` reward on unanswerable
questions and ``abstained`` (0) on the others, so an agent whose answers are more often wrong than
right scores below it. :func:`evaluate_policy` writes the same ``results.jsonl`` / ``summary.json``
as ``judge.evaluate`` (one single-turn ``return_final_answer`` trajectory per question, judged by
the same judge and rewarded by the same table), so ``judge.compare`` pairs it with any model run.

    inboxrl eval --policy idk --questions test.jsonl --out evals/always-idk
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from env.config import Settings
from env.db import open_db
from env.prompt import I_DONT_KNOW
from env.trajectory import ToolCall, Trajectory, Turn
from judge.evaluate import RESULTS, RUN, _run_meta, judge_row, write_atomic, write_outputs
from judge.reward import RewardConfig
from synth_data.questions import Question

#: policy name -> the answer it always gives
POLICIES = {"idk": I_DONT_KNOW}


def policy_trajectory(question: Question, answer: str, name: str) -> Trajectory:
    """One turn that calls ``return_final_answer(answer, [])`` on ``question``."""
    now = time.time()
    arguments = {"answer": answer, "sources": []}
    call = ToolCall(
        id="call_0",
        name="return_final_answer",
        arguments=arguments,
        content=json.dumps(arguments),
        started=now,
    )
    return Trajectory(
        question=question.question,
        inbox=question.inbox_key,
        query_date=question.query_date,
        model=name,
        turns=[Turn(index=0, started=now, finish_reason="tool_calls", tool_calls=[call])],
        answer=answer,
        sources=[],
        ended="answered",
        started=now,
    )


def evaluate_policy(
    questions: list[Question],
    *,
    policy: str = "idk",
    db_path: str | Path,
    out_dir: str | Path,
    settings: Settings | None = None,
    reward_config: RewardConfig | None = None,
) -> dict[str, Any]:
    """Score ``policy`` (a key of :data:`POLICIES`) on ``questions``; returns the summary."""
    if policy not in POLICIES:
        raise ValueError(f"Unknown policy {policy!r}: choose one of {', '.join(POLICIES)}.")
    settings = (settings or Settings()).model_copy(update={"model": f"always-{policy}"})
    config = reward_config or RewardConfig(max_turns=settings.max_turns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = open_db(db_path)
    meta = _run_meta(settings, Path(db_path), None, config, len(questions), None)
    write_atomic(out / RUN, json.dumps(meta, indent=2) + "\n")

    async def score() -> list[dict]:
        return [
            await judge_row(
                policy_trajectory(q, POLICIES[policy], settings.model),
                q,
                settings=settings,
                reward_config=config,
                db=db,
            )
            for q in questions
        ]

    rows = asyncio.run(score())
    write_atomic(out / RESULTS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return write_outputs(out, questions, meta)
