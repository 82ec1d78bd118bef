"""The agent loop: prompt, tool-call parsing, the error table, trajectories, batch runs.

Most tests drive the loop with the scripted policy (tests/fixtures/scripted.py) because they are
about the loop's handling of model misbehaviour; the ``vllm`` tests run it against the real
embedded model served by vLLM.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from env import agent
from env.agent import MAX_BAD_TURNS, arun_agent, arun_batch, run_agent
from env.config import trace_db_path
from env.db import NoInbox, get_inbox, open_db
from env.prompt import build_messages
from env.trace import Tracer, TraceStore
from env.trajectory import ENDED, Trajectory
from tests.fixtures.scripted import (
    ScriptedServer,
    Step,
    call,
    completion,
    drop,
    hang,
    raw,
    status,
    text,
    tool_call,
    tool_calls,
)
from tests.fixtures.tools import QUERY_DATE, build_tools_db

GAS = "<m1.alice@example.com>"
SEARCH = {"name": "search_emails", "arguments": {"keywords": ["gas"]}}
ANSWER = {"name": "return_final_answer", "arguments": {"answer": "$5.10", "sources": ["m1"]}}
FINAL = tool_call("return_final_answer", {"answer": "$5.10", "sources": [GAS]})


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep retry back-off short so the error table runs in seconds."""
    monkeypatch.setattr(agent, "RETRY_BACKOFF_S", 0.05)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The literal two-inbox DB, fresh per test so each test has its own trace store."""
    return build_tools_db(tmp_path / "inbox.db")


def rollout(server: ScriptedServer, db_path: Path, tmp_path: Path, **kwargs) -> Trajectory:
    settings = server.settings(tmp_path, **kwargs.pop("settings", {}))
    return run_agent(
        "What is the May gas price forecast?", "alice-a", QUERY_DATE, db=db_path, settings=settings, **kwargs
    )


def assert_well_formed(traj: Trajectory) -> None:
    """Invariants every trajectory keeps, whatever the model did."""
    assert traj.ended in ENDED
    assert traj.trace_id and traj.duration_s > 0
    assert traj.messages[0]["role"] == "system" and traj.messages[-1]["role"] in {"user", "assistant", "tool"}
    pending: list[str] = []
    users = [i for i, m in enumerate(traj.messages) if m["role"] == "user"]
    asked = next(i for i in users if traj.messages[i]["content"] == traj.question)
    for message in traj.messages[asked + 1 :]:  # after the prompt (and its few-shot example, if any)
        if message["role"] == "assistant":
            assert not pending, "every tool call of a turn gets a tool message before the next turn"
            for tc in message.get("tool_calls") or []:
                json.loads(tc["function"]["arguments"])  # always valid JSON when sent back
                pending.append(tc["id"])
        elif message["role"] == "tool":
            assert message["tool_call_id"] == pending.pop(0)
    for turn in traj.turns:
        assert turn.latency_s >= 0
    assert Trajectory.from_dict(json.loads(json.dumps(traj.to_dict()))) == traj
    assert traj.ended in traj.render()


# ---------------------------------------------------------------------------------------------
# Prompt


def test_build_messages_has_owner_date_rules_and_one_shot_example(db_path: Path) -> None:
    inbox = get_inbox(open_db(db_path), "alice-a")
    messages = build_messages("When is the offsite?", inbox, "2001-05-01")
    system = messages[0]["content"]
    assert "alice@example.com" in system and "a.smith@example.com" in system
    assert "2001-05-01" in system and "I don't know" in system
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    example = messages[2]["tool_calls"][0]["function"]
    assert example["name"] == "search_emails" and json.loads(example["arguments"])["keywords"]
    assert not any(m["role"] == "tool" for m in messages), (
        "a tool result in the example makes the 135M model spam"
    )
    assert messages[-1] == {"role": "user", "content": "When is the offsite?"}
    assert build_messages("q", inbox, "2001-05-01", few_shot=False) == [
        messages[0],
        {"role": "user", "content": "q"},
    ]


def test_prompt_doctests() -> None:
    import doctest

    import env.prompt

    result = doctest.testmod(env.prompt)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------
# Normal rollouts


def test_structured_tool_calls_answer(scripted: ScriptedServer, db_path: Path, tmp_path: Path) -> None:
    scripted.queue(
        tool_call("search_emails", {"keywords": ["gas", "forecast"]}),
        tool_call("read_email", {"message_id": GAS}),
        FINAL,
    )
    events: list[dict] = []
    traj = rollout(scripted, db_path, tmp_path, on_event=events.append)

    assert traj.ended == "answered" and traj.error is None
    assert traj.answer == "$5.10" and traj.sources == ["m1.alice@example.com"]
    assert [c.name for c in traj.tool_calls] == ["search_emails", "read_email", "return_final_answer"]
    assert "Gas price forecast for May" in traj.tool_calls[0].content
    assert "Henry Hub" in traj.tool_calls[1].content
    assert [(t.prompt_tokens, t.completion_tokens) for t in traj.turns] == [(100, 10)] * 3
    assert traj.prompt_tokens == 300 and traj.completion_tokens == 30
    assert_well_formed(traj)
    text_view = traj.render()
    assert '-> search_emails({"keywords": ["gas", "forecast"]})' in text_view
    assert "Answer: $5.10" in text_view and "Sources: m1.alice@example.com" in text_view

    request = scripted.requests[0]
    assert (
        request["model"] == "scripted" and request["tool_choice"] == "auto" and request["temperature"] == 0.0
    )
    assert {t["function"]["name"] for t in request["tools"]} == {
        "search_emails",
        "read_email",
        "return_final_answer",
    }
    assert request["messages"][-1]["content"] == "What is the May gas price forecast?"
    # the second request carries the first tool result back to the model
    assert scripted.requests[1]["messages"][-1]["role"] == "tool"

    kinds = [e["type"] for e in events]
    assert kinds == ["model_call", "tool_call", "tool_result"] * 3 + ["final"]
    assert events[-1]["trajectory"] is traj and events[-1]["ended"] == "answered"


def test_settings_choose_the_prompt_and_the_read_email_cap(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    """An adapter trained without the worked example and with short bodies is served the same way."""
    scripted.queue(tool_call("read_email", {"message_id": GAS}), FINAL)
    traj = rollout(scripted, db_path, tmp_path, settings={"few_shot": False, "max_body_chars": 10})
    assert traj.ended == "answered"
    first = scripted.requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user"]  # no worked example
    body = json.loads(traj.tool_calls[0].content)["body"]
    shown, note = body.split("\n[... ")
    assert len(shown) == 10 and note.endswith("more characters of this email not shown]")


def test_text_tool_calls_are_parsed(scripted: ScriptedServer, db_path: Path, tmp_path: Path) -> None:
    """Small models often write Hermes <tool_call> JSON in the text instead of structured calls."""
    scripted.queue(
        text(f"Let me search.\n<tool_call>\n{json.dumps(SEARCH)}\n</tool_call>"),
        # an unterminated block (the reply was cut off after the JSON) still counts
        text(f"<tool_call>{json.dumps(ANSWER)}"),
    )
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.ended == "answered" and traj.answer == "$5.10" and traj.sources == ["m1"]
    assert traj.tool_calls[0].arguments == {"keywords": ["gas"]} and traj.tool_calls[0].error is None
    assert traj.messages[4]["content"] == "Let me search."  # text outside the block is kept
    assert_well_formed(traj)


def test_parallel_tool_calls_run_in_order_and_calls_after_the_answer_are_skipped(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(
        tool_calls(call("search_emails", {"keywords": ["offsite"]}), call("read_email", {"message_id": GAS})),
        tool_calls(
            call("return_final_answer", {"answer": "$5.10", "sources": [GAS]}),
            call("search_emails", {"keywords": ["more"]}),
        ),
    )
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.ended == "answered"
    first, second = traj.turns
    assert [c.name for c in first.tool_calls] == ["search_emails", "read_email"]
    assert all(c.error is None for c in first.tool_calls)
    assert second.tool_calls[1].error.startswith("not run")
    assert_well_formed(traj)


# ---------------------------------------------------------------------------------------------
# The error table: model misbehaviour is recorded, never raised


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (tool_call("search_emails", '{"keywords": ["gas"'), "not valid JSON"),
        (tool_call("search_emails", "[1, 2]"), "must be a JSON object"),
        (tool_call("delete_inbox", {"everything": True}), "Unknown tool 'delete_inbox'"),
        (tool_call("search_emails", {"keywords": "gas"}), "Bad arguments for search_emails"),
        (tool_call("read_email", {"message_id": "<nope@example.com>"}), "message_id"),
        (tool_call("return_final_answer", {"answer": "x"}), "sources is required"),
        (
            text('<tool_call>{"name": "search_emails", "arguments": {"keywords": ["gas"]</tool_call>'),
            "not valid JSON",
        ),
        (text('<tool_call>["search_emails"]</tool_call>'), 'JSON object with a "name"'),
    ],
    ids=[
        "bad-json",
        "args-not-object",
        "unknown-tool",
        "wrong-type",
        "no-such-email",
        "missing-arg",
        "text-bad-json",
        "text-not-object",
    ],
)
def test_a_bad_call_becomes_a_tool_error_the_model_can_fix(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path, bad, expected: str
) -> None:
    scripted.queue(bad, FINAL)
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.ended == "answered", traj.render()
    failed = traj.turns[0].tool_calls[0]
    assert expected in failed.error
    assert failed.content.startswith("Error:")
    assert traj.messages[5] == {
        "role": "tool",
        "tool_call_id": failed.id,
        "name": failed.name,
        "content": failed.content,
    }
    assert expected in scripted.requests[1]["messages"][-1]["content"]  # the model saw the error
    assert_well_formed(traj)


def test_repeated_bad_calls_end_with_bad_tool_call(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(*[tool_call("nope", {}) for _ in range(MAX_BAD_TURNS + 2)])
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.ended == "bad_tool_call"
    assert len(traj.turns) == MAX_BAD_TURNS and traj.failed_tool_calls == MAX_BAD_TURNS
    assert "Unknown tool" in traj.error
    assert_well_formed(traj)


def test_a_good_call_resets_the_bad_call_count(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    bad = [tool_call("nope", {}) for _ in range(MAX_BAD_TURNS - 1)]
    scripted.queue(*bad, tool_call("search_emails", {"keywords": ["gas"]}), *bad, FINAL)
    traj = rollout(scripted, db_path, tmp_path, settings={"max_turns": 10})
    assert traj.ended == "answered" and traj.failed_tool_calls == 2 * (MAX_BAD_TURNS - 1)


@pytest.mark.parametrize(
    ("reply", "expected"), [(text("The forecast is $5.10."), "The forecast is $5.10."), (text(""), "")]
)
def test_a_reply_without_tool_calls_gives_up_and_keeps_its_text(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path, reply, expected: str
) -> None:
    scripted.queue(reply)
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.ended == "gave_up" and traj.answer is None and traj.sources == []
    assert traj.reply == expected and traj.messages[-1] == {"role": "assistant", "content": expected}
    assert_well_formed(traj)


def test_max_turns(scripted: ScriptedServer, db_path: Path, tmp_path: Path) -> None:
    scripted.queue(*[tool_call("search_emails", {"keywords": ["gas"]}) for _ in range(5)])
    traj = rollout(scripted, db_path, tmp_path, max_turns=3)
    assert traj.ended == "max_turns" and len(traj.turns) == 3 and scripted.remaining == 2
    assert_well_formed(traj)


def test_transient_transport_errors_are_retried(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(status(500), drop(), FINAL)
    events: list[dict] = []
    traj = rollout(scripted, db_path, tmp_path, on_event=events.append)
    assert traj.ended == "answered"
    assert len(scripted.requests) == 3
    assert len(traj.turns) == 1 and len(traj.turns[0].retries) == 2
    assert "InternalServerError 500" in traj.turns[0].retries[0]
    assert "APIConnectionError" in traj.turns[0].retries[1]
    assert [e["delay_s"] for e in events if e["type"] == "retry"] == [0.05, 0.1]  # exponential back-off
    assert_well_formed(traj)


@pytest.mark.parametrize(
    ("steps", "expected", "requests"),
    [
        ([status(503)] * 3, "InternalServerError 503", 3),
        ([drop()] * 3, "APIConnectionError", 3),
        ([hang(5.0)] * 2, "APITimeoutError", 2),
        ([status(400, "context too long")], "BadRequestError 400", 1),  # not retried
        ([raw("<html>not json</html>")], "", 1),
        ([raw(json.dumps({"id": "x", "object": "chat.completion", "choices": []}))], "no choices", 1),
    ],
    ids=["5xx", "dropped", "hang", "4xx", "not-json", "no-choices"],
)
def test_persistent_model_errors_end_with_model_error(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path, steps, expected: str, requests: int
) -> None:
    scripted.queue(*steps)
    settings = {"timeout_s": 0.5, "max_retries": 1} if expected == "APITimeoutError" else {}
    traj = rollout(scripted, db_path, tmp_path, settings=settings)
    assert traj.ended == "model_error", traj.render()
    assert expected in traj.error and traj.turns[-1].error == traj.error
    assert len(scripted.requests) == requests
    assert_well_formed(traj)


def test_a_model_error_after_tool_calls_keeps_the_work_done(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(tool_call("search_emails", {"keywords": ["gas"]}), *[status(500)] * 3)
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.ended == "model_error" and len(traj.turns) == 2
    assert traj.tool_calls[0].error is None and "Gas price" in traj.tool_calls[0].content


def test_missing_usage_is_recorded_as_unknown(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(Step(completion("No idea.", usage=False)))
    traj = rollout(scripted, db_path, tmp_path)
    assert traj.turns[0].prompt_tokens is None and traj.prompt_tokens == 0
    assert_well_formed(traj)


# ---------------------------------------------------------------------------------------------
# Traces, events, batches


def test_each_rollout_is_one_trace_with_spans(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(tool_call("search_emails", {"keywords": ["gas"]}), status(502), FINAL)
    traj = rollout(scripted, db_path, tmp_path)
    trace = TraceStore(trace_db_path(db_path)).get_trace(traj.trace_id)
    assert trace is not None
    assert trace["ended"] == "answered" and trace["answer"] == "$5.10" and trace["inbox"] == "alice-a"
    assert trace["trajectory"] == traj
    kinds = [(s["kind"], s["name"]) for s in trace["spans"]]
    assert kinds == [
        ("model", "chat"),
        ("tool", "search_emails"),
        ("model", "chat"),
        ("tool", "return_final_answer"),
    ]
    assert trace["spans"][0]["prompt_tokens"] == 100 and trace["spans"][0]["input"]["messages"]
    assert trace["spans"][1]["input"] == {"keywords": ["gas"]}


def test_tracing_can_be_turned_off(scripted: ScriptedServer, db_path: Path, tmp_path: Path) -> None:
    scripted.queue(FINAL)
    rollout(scripted, db_path, tmp_path, tracer=False)
    assert not trace_db_path(db_path).exists()


def test_async_event_handlers_are_awaited(scripted: ScriptedServer, db_path: Path, tmp_path: Path) -> None:
    seen: list[str] = []

    async def on_event(event: dict) -> None:
        await asyncio.sleep(0)
        seen.append(event["type"])

    scripted.queue(FINAL)
    traj = asyncio.run(
        arun_agent(
            "q", "alice-a", QUERY_DATE, db=db_path, settings=scripted.settings(tmp_path), on_event=on_event
        )
    )
    assert traj.ended == "answered" and seen == ["model_call", "tool_call", "tool_result", "final"]


def test_batch_keeps_order_and_runs_concurrently(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    n = 6
    scripted.queue(*[Step(text("I don't know.").body, delay_s=0.3) for _ in range(n)])  # 0.3 s per reply
    items = [(f"question {i}", "alice-a", QUERY_DATE) for i in range(n)]
    settings = scripted.settings(tmp_path, concurrency=3)
    store = TraceStore(tmp_path / "batch.traces.db")
    done: list[int] = []
    t0 = time.monotonic()
    trajs = asyncio.run(
        arun_batch(
            items,
            db=db_path,
            settings=settings,
            tracer=Tracer(store, name="eval"),
            progress=False,
            on_result=lambda i, t: done.append(i),
        )
    )
    wall = time.monotonic() - t0
    assert [t.question for t in trajs] == [f"question {i}" for i in range(n)]
    assert all(t.ended == "gave_up" for t in trajs) and sorted(done) == list(range(n))
    assert wall < n * 0.3  # 3 at a time: two waves of 0.3 s, not six
    assert max(t.started for t in trajs) - min(t.started for t in trajs) >= 0.25  # the semaphore held 3 back
    assert {t["name"] for t in store.list_traces()} == {"eval"} and len(store.list_traces()) == n


def test_a_crash_inside_one_rollout_ends_that_rollout_alone(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    scripted.queue(*[Step(text("I don't know.").body, delay_s=0.1) for _ in range(3)])
    items = [(f"question {i}", "alice-a", QUERY_DATE) for i in range(3)]

    calls = []

    def on_event(event: dict) -> None:
        if event["type"] == "model_call":
            calls.append(event)
            if len(calls) == 2:  # the second rollout to get its reply
                raise RuntimeError("a handler bug")

    trajs = asyncio.run(
        arun_batch(items, db=db_path, settings=scripted.settings(tmp_path), progress=False, on_event=on_event)
    )
    assert sorted(t.ended for t in trajs) == ["gave_up", "gave_up", "model_error"]
    crashed = next(t for t in trajs if t.ended == "model_error")
    assert crashed.infra_error and "crashed (RuntimeError: a handler bug)" in crashed.error
    assert sum(t.infra_error for t in trajs) == 1
    assert_well_formed(crashed)


def test_batch_checks_every_inbox_before_starting(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path
) -> None:
    items = [("q", "alice-a", QUERY_DATE), ("q", "nobody@example.com", QUERY_DATE)]
    with pytest.raises(NoInbox, match="nobody"):
        asyncio.run(arun_batch(items, db=db_path, settings=scripted.settings(tmp_path), progress=False))
    assert scripted.requests == []


# ---------------------------------------------------------------------------------------------
# inboxrl ask


@pytest.fixture
def cli_env(scripted: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    """Point the CLI's Settings (read from the environment) at the scripted server."""
    for key, value in {
        "INBOXRL_HOME": str(tmp_path / "home"),
        "INBOXRL_BASE_URL": scripted.base_url,
        "INBOXRL_MODEL": "scripted",
        "INBOXRL_TIMEOUT_S": "2",
        "INBOXRL_MAX_RETRIES": "1",
    }.items():
        monkeypatch.setenv(key, value)
    return scripted


def test_ask_prints_tool_calls_answer_and_sources(cli_env: ScriptedServer, db_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    cli_env.queue(
        tool_call("search_emails", {"keywords": ["gas", "forecast"]}),
        tool_call("read_email", {"message_id": "<nope@x>"}),
        FINAL,
    )
    result = CliRunner().invoke(
        cli, ["ask", "--db", str(db_path), "--inbox", "alice@example.com", "What is the May gas forecast?"]
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert '→ search_emails({"keywords": ["gas", "forecast"]})' in out
    assert "← 1 emails: Gas price forecast for May" in out
    assert "→ read_email" in out and "✗" in out  # the failed call is shown with its error
    assert "Answer" in out and "$5.10" in out
    assert "m1.alice@example.com" in out and "bob@example.com" in out  # sources, resolved to emails
    # --date defaults to the inbox's last email (2001-06-01 here; the literal DB has a June email)
    last = get_inbox(open_db(db_path), "alice-a").last_date[:10]
    assert f"alice-a, {last}, scripted" in out
    trace_id = out.split("Trace ")[1].split()[0]
    trace = TraceStore(trace_db_path(db_path)).get_trace(trace_id)
    assert trace["name"] == "ask" and trace["ended"] == "answered" and trace["query_date"] == last


def test_ask_json_and_errors(cli_env: ScriptedServer, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    runner = CliRunner()
    cli_env.queue(FINAL)
    result = runner.invoke(
        cli, ["ask", "--db", str(db_path), "--inbox", "alice-a", "--date", "2001-05-01", "--json", "q"]
    )
    assert result.exit_code == 0, result.output
    traj = Trajectory.from_dict(json.loads(result.stdout))
    assert traj.ended == "answered" and traj.query_date == "2001-05-01" and traj.model == "scripted"

    result = runner.invoke(cli, ["ask", "--db", str(db_path), "--inbox", "nobody", "q"])
    assert result.exit_code == 1 and "No inbox 'nobody'" in result.output and "--inbox" in result.output
    result = runner.invoke(cli, ["ask", "--db", str(db_path), "--inbox", "alice-a", "--date", "May 1st", "q"])
    assert result.exit_code == 1 and "YYYY-MM-DD" in result.output
    result = runner.invoke(
        cli, ["ask", "--db", str(db_path.with_name("missing.db")), "--inbox", "alice-a", "q"]
    )
    assert result.exit_code == 1 and "inboxrl ingest" in result.output

    monkeypatch.setenv("INBOXRL_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on port 9
    result = runner.invoke(cli, ["ask", "--db", str(db_path), "--inbox", "alice-a", "q"])
    assert result.exit_code == 1
    assert "No answer: the model endpoint failed" in result.output and "inboxrl model serve" in result.output


# ---------------------------------------------------------------------------------------------
# Against the real embedded model served by vLLM


@pytest.mark.vllm
@pytest.mark.slow
def test_rollouts_on_the_default_inbox_with_vllm(vllm_server, default_db_path: Path, tmp_path: Path) -> None:
    """Whatever the tiny model answers, rollouts complete, are well-formed and are traced."""
    from synth_data.questions import default_questions_path, load_questions

    questions = load_questions(default_questions_path())[:4]
    store = TraceStore(tmp_path / "traces.db")
    settings = vllm_server.model_copy(update={"concurrency": 4, "max_turns": 4})
    t0 = time.monotonic()
    trajs = asyncio.run(
        arun_batch(
            questions,
            db=default_db_path,
            settings=settings,
            tracer=Tracer(store),
            progress=False,
            max_tokens=128,
        )
    )
    wall = time.monotonic() - t0
    for question, traj in zip(questions, trajs, strict=True):
        assert traj.question == question.question and traj.inbox == question.mailbox
        assert traj.ended != "model_error", traj.render()
        assert_well_formed(traj)
        assert traj.turns[0].prompt_tokens > 0 and traj.turns[0].completion_tokens > 0
        assert store.get_trace(traj.trace_id)["trajectory"] == traj
    # the one-shot prompt gets the 135M model to call tools (measured: it does on most questions)
    assert sum(len(t.tool_calls) for t in trajs) > 0
    # concurrent rollouts overlap: less wall time than the rollouts took one after another
    assert wall < sum(t.duration_s for t in trajs)


@pytest.mark.vllm
@pytest.mark.slow
def test_ask_end_to_end_with_vllm(vllm_server, default_db_path: Path, tmp_path: Path) -> None:
    """`inboxrl ask` as a user runs it, in its own process, against the real server."""
    env = {
        **os.environ,
        "INBOXRL_HOME": str(tmp_path),
        "INBOXRL_BASE_URL": vllm_server.base_url,
        "INBOXRL_API_KEY": vllm_server.api_key,
        "INBOXRL_MODEL": vllm_server.model,
        "INBOXRL_MAX_TURNS": "2",
        "INBOXRL_TIMEOUT_S": "300",  # a loaded 2-core CI machine can be slow; the test is about the CLI
    }
    db = tmp_path / "inbox.db"
    shutil.copy(default_db_path, db)
    question = "Which check did I mail Brenda Stone for her September 1 payment?"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "inboxrl"),
            "ask",
            "--db",
            str(db),
            "--inbox",
            "phillip.allen@enron.com",
            "--max-tokens",
            "96",
            question,
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    traces = TraceStore(trace_db_path(db)).list_traces()
    assert len(traces) == 1 and traces[0]["question"] == question and traces[0]["name"] == "ask"
    out = " ".join(result.stdout.split())
    assert f"Trace {traces[0]['id']}" in out
    assert ("Answer" in out) == (traces[0]["ended"] == "answered")
    calls = TraceStore(trace_db_path(db)).get_trace(traces[0]["id"])["trajectory"].tool_calls
    assert all(f"→ {c.name}" in out for c in calls)


@pytest.mark.parametrize(
    ("steps", "infra"),
    [
        ([status(503)] * 3, True),  # a restarting server
        ([status(502)] * 3, True),
        ([status(429)] * 3, True),
        ([drop()] * 3, True),  # a reset connection
        ([hang(2.0)] * 3, True),  # a timeout
        ([status(400, "context too long")], False),
        ([raw("<html>not json</html>")], False),
        ([raw(json.dumps({"id": "x", "object": "chat.completion", "choices": []}))], False),
    ],
    ids=["503", "502", "429", "dropped", "hang", "400", "not-json", "no-choices"],
)
def test_model_errors_say_whether_the_infrastructure_failed(
    scripted: ScriptedServer, db_path: Path, tmp_path: Path, steps: list[Step], infra: bool
) -> None:
    scripted.queue(*steps)
    traj = rollout(scripted, db_path, tmp_path, settings={"timeout_s": 0.5})
    assert traj.ended == "model_error" and traj.infra_error is infra, traj.render()
    assert len(traj.turns[0].retries) == (2 if infra else 0)  # only transient failures are retried
    assert Trajectory.from_dict(json.loads(traj.to_json())).infra_error is infra
    assert ("Infrastructure error:" in traj.render()) is infra


def test_a_refused_connection_is_an_infrastructure_failure(
    db_path: Path, tmp_path: Path, scripted: ScriptedServer
) -> None:
    settings = scripted.settings(tmp_path, base_url="http://127.0.0.1:9/v1", max_retries=1)
    traj = run_agent("When is the offsite?", "alice-a", QUERY_DATE, db=db_path, settings=settings)
    assert traj.ended == "model_error" and traj.infra_error, traj.render()
    assert "APIConnectionError" in traj.error and len(traj.turns[0].retries) == 1


def test_agent_doctests() -> None:
    import doctest

    result = doctest.testmod(agent)
    assert result.attempted > 0 and result.failed == 0
