"""An opt-in Qwen2.5-Coder for real: prepared from its PyPI parts (joined file checked by SHA-256,
converted once per machine into tests/.cache), served by the vLLM CPU server, and asked untrained
(zero-shot) questions about the default inbox through the agent loop.

The 0.5B, not the 1.5B: the same code path (parts, join, conversion keeping the model's own
template, hermes tool calls) at a third of the disk (1.2 GB converted against 3.6 GB; CI ran out of
disk converting the 1.5B) and a third of the conversion (57 s against about 90 s).
bench/zero_shot_bench.py runs both.

Its agent settings come from ``env.model.model_prompt_settings``: no worked example and
``tool_choice="required"`` (vLLM's structured decoding makes every turn a tool call; unconstrained,
the model often answers in prose and the rollout ends without a final answer).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from env.agent import arun_agent
from env.config import Settings
from env.db import get_inbox, open_db
from env.model import PARTED_MODELS, PREPARED_MARKER, prepare_model, serve, stop
from synth_data.generate import SynthConfig, generate
from tests.fixtures.model import CACHE_DIR, free_port, server_settings
from train.registry import agent_settings

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1800)]

QWEN = "qwen2.5-coder-0.5b"
EVERY_TOOL = {"search_emails", "read_email", "return_final_answer"}
IN_FLIGHT = 3
"""Rollouts in flight at once; the test stops at the first that used every tool and starts another
question as each one ends without (rollouts take minutes on the CPU: with the 1.5B, a batch of six
all run to the end took 310 s for the test here, against 110-114 s with three in flight)."""


async def _until_one_uses_every_tool(questions: list, db: object, settings: Settings) -> tuple[list, list]:
    """Rollouts of ``questions``, ``IN_FLIGHT`` at a time, until one answered after calling every tool;
    the others still running are cancelled then. Returns (finished trajectories, those that did)."""
    from env.model import make_client

    client = make_client(settings)
    pending: set[asyncio.Task] = set()
    finished: list = []
    full: list = []
    waiting = list(questions)
    try:
        while (waiting or pending) and not full:
            while waiting and len(pending) < IN_FLIGHT:
                q = waiting.pop(0)
                pending.add(
                    asyncio.ensure_future(
                        arun_agent(
                            q.question, q.inbox_address, q.query_date, db=db, settings=settings, client=client
                        )
                    )
                )
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            finished += [task.result() for task in done]
            full = [t for t in finished if t.ended == "answered" and _called(t) >= EVERY_TOOL]
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await client.close()
    return finished, full


def test_qwen_zero_shot_rollouts_call_every_tool_through_the_real_server(
    default_db_path: Path, tmp_path: Path
) -> None:
    folder = prepare_model(Settings(home=CACHE_DIR / "home"), QWEN, progress=False)
    assert json.loads((folder / PREPARED_MARKER).read_text())["sha256"] == PARTED_MODELS[QWEN].sha256

    db = open_db(default_db_path)
    config = SynthConfig(n=18, generator="template")
    questions, _ = generate(db, get_inbox(db, "allen-p"), config, progress=False)
    server = server_settings(tmp_path / "home", free_port(), model=QWEN)
    serve(server, model_dir=folder, progress=False)
    try:
        # sampled: greedy decoding sends the untrained model into the same search over and over
        update = {"db": default_db_path, "max_turns": 4, "timeout_s": 600.0, "temperature": 0.7}
        settings = agent_settings(server.model_copy(update=update), QWEN)
        assert (settings.few_shot, settings.tool_choice) == (False, "required")
        trajectories, full = asyncio.run(_until_one_uses_every_tool(questions, db, settings))
    finally:
        stop(server)

    assert not [t.error for t in trajectories if t.infra_error]
    # every turn was a tool call the server parsed, never prose
    assert all(t.ended != "gave_up" and t.recovered_calls == 0 for t in trajectories)
    assert full, [(t.ended, [(c.name, c.error) for c in t.tool_calls]) for t in trajectories]


def _called(t: object) -> set[str]:
    """The tools a trajectory called, the server having parsed the call (a tool may still refuse
    its arguments: the untrained 0.5B often reads a message_id it made up, and is told so)."""
    return {c.name for c in t.tool_calls}
