"""The agent loop: one rollout = model call -> tool calls -> model call ... -> final answer.

The same loop serves the chat UI, ``inboxrl ask``, batch evaluation and training-data collection.
It talks to the model only through an OpenAI-compatible endpoint (vLLM here, any hosted API).

How a rollout ends (``Trajectory.ended``):

- ``answered``: the model called ``return_final_answer`` successfully.
- ``gave_up``: a reply with no tool call (its text is kept in ``Trajectory.reply``).
- ``max_turns``: ``max_turns`` model calls without a final answer.
- ``bad_tool_call``: :data:`MAX_BAD_TURNS` turns in a row in which every tool call failed. A single
  bad call (malformed JSON, unknown tool, wrong types) only becomes a tool error message that tells
  the model how to fix it.
- ``model_error``: the endpoint failed for good: a timeout, 5xx or dropped connection that
  persisted through ``settings.max_retries`` retries with exponential backoff, or a non-retryable
  error (4xx, an unreadable response). ``Trajectory.infra_error`` tells the two apart: True for
  the infrastructure's failures (:func:`is_transient`, and the endpoint refusing the request:
  a wrong API key or an unknown model, :func:`is_rejection`), which say nothing about the model,
  and for an exception inside the loop itself (a bug, logged with its traceback): it ends that
  rollout alone, so a batch, an eval or a GRPO step goes on without it.

Tool calls are read from the structured ``tool_calls`` field and, failing that, from the text in
any of the dialects models write (:func:`env.toolcalls.parse_tool_calls`: Hermes ``<tool_call>``,
``<tools>``, bare or fenced JSON, Python-style calls...); ``Turn.recovered_calls`` counts them.
Several calls in one reply run in order; calls after a successful ``return_final_answer`` are
recorded as skipped. Model misbehaviour never raises: it is recorded in the trajectory.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import openai
import sqlite_utils

from env.config import Settings
from env.db import Inbox, get_inbox, open_db
from env.model import make_client
from env.prompt import build_messages
from env.toolcalls import parse_tool_calls, tool_parameters
from env.tools import InboxTools, make_tools
from env.trace import RolloutTrace, Tracer
from env.trajectory import ToolCall, Trajectory, Turn

__all__ = ["MAX_BAD_TURNS", "arun_agent", "arun_batch", "build_messages", "is_transient", "run_agent"]

log = logging.getLogger(__name__)

MAX_BAD_TURNS = 3  # consecutive turns whose tool calls all failed before giving up (ended=bad_tool_call)
# Per model call. A tool call or final answer takes well under 200 tokens; the cap stops a rambling
# small model from spending minutes of CPU (and the context window) on text nobody reads.
MAX_COMPLETION_TOKENS = 512
RETRY_BACKOFF_S = 0.5  # first retry delay; doubles on each further retry
FINAL_TOOL = "return_final_answer"

EventHandler = Callable[[dict], Any]


class _ModelFailure(Exception):
    """The endpoint failed for good (after retries, or with a non-retryable error).

    ``infra`` is True when the failure is the infrastructure's (see :func:`is_transient`), not a
    reply or request the model is to blame for.
    """

    def __init__(self, message: str, *, infra: bool) -> None:
        super().__init__(message)
        self.infra = infra


# Statuses worth retrying, as the OpenAI client itself retries them: request timeout, conflict
# (a server swapping adapters), rate limit, and every 5xx (502/503 from a restarting server).
_TRANSIENT_STATUSES = (408, 409, 429)


_REJECTED_STATUSES = (401, 403, 404)


def is_rejection(exc: BaseException) -> bool:
    """Whether the endpoint refused the request itself: a wrong API key (401, 403) or a model it
    does not serve (404). Not worth retrying, and not the model's fault: the set-up is wrong.

    >>> import httpx, openai
    >>> req = httpx.Request("POST", "http://x/v1/chat/completions")
    >>> [is_rejection(openai.APIStatusError("x", response=httpx.Response(c, request=req), body=None))
    ...  for c in (400, 401, 404, 500)]
    [False, True, True, False]
    """
    return isinstance(exc, openai.APIStatusError) and exc.status_code in _REJECTED_STATUSES


def is_transient(exc: BaseException) -> bool:
    """Whether a failed model call is the infrastructure's trouble, worth retrying.

    Timeouts, refused/reset/dropped connections, 5xx and 408/409/429 are; a 4xx that rejects the
    request (a prompt too long for the context) and an unreadable response are the model's.

    >>> import httpx, openai
    >>> req = httpx.Request("POST", "http://x/v1/chat/completions")
    >>> is_transient(openai.APITimeoutError(request=req))
    True
    >>> def status(code):
    ...     return openai.APIStatusError("x", response=httpx.Response(code, request=req), body=None)
    >>> [is_transient(status(c)) for c in (400, 404, 429, 502, 503)]
    [False, False, True, True, True]
    """
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in _TRANSIENT_STATUSES
    return False


@dataclass
class _Call:
    """A tool call as parsed from a reply; ``problem`` is set when it could not be parsed.

    ``recovered``: it was written in the reply's text, not in the structured ``tool_calls``.
    """

    id: str
    name: str
    arguments: Any
    problem: str | None = None
    recovered: bool = False


# ---------------------------------------------------------------------------------------------
# Public entry points


async def arun_agent(
    question: str,
    inbox: Inbox | str,
    query_date: str | date,
    *,
    db: sqlite_utils.Database | str | Path,
    settings: Settings | None = None,
    client: openai.AsyncOpenAI | None = None,
    on_event: EventHandler | None = None,
    tracer: Tracer | Literal[False] | None = None,
    max_turns: int | None = None,
    max_tokens: int | None = None,
    few_shot: bool | None = None,
    record_tokens: bool = False,
) -> Trajectory:
    """Run the agent on one question and return its :class:`Trajectory` (never raises for model errors).

    :param question: the user's question.
    :param inbox: an :class:`~env.db.Inbox` or its key / owner address.
    :param query_date: the agent's "today" (``YYYY-MM-DD``); the tools hide later emails.
    :param db: the inbox DB (a ``sqlite_utils.Database`` or a path).
    :param settings: endpoint, model, temperature, timeouts, retries; default ``Settings()``.
    :param client: an ``AsyncOpenAI`` client; default ``env.model.make_client(settings)``.
    :param on_event: called with live events (``model_call``, ``retry``, ``tool_call``,
        ``tool_result``, ``final``); may be a coroutine function.
    :param tracer: an :class:`env.trace.Tracer`; default one writing beside the DB (and to
        Langfuse when configured). Pass ``False`` to trace nothing.
    :param max_turns: model calls allowed; default ``settings.max_turns``.
    :param max_tokens: completion tokens per model call; default :data:`MAX_COMPLETION_TOKENS`.
    :param few_shot: include the worked example in the prompt (see :mod:`env.prompt`); default
        ``settings.few_shot``.
    :param record_tokens: ask the server (vLLM) for each turn's prompt and sampled token ids and
        the sampled tokens' log-probs, kept on the trajectory's turns (what GRPO trains on).
    """
    settings = settings or Settings()
    db = db if isinstance(db, sqlite_utils.Database) else open_db(db)
    inbox = inbox if isinstance(inbox, Inbox) else get_inbox(db, inbox)
    day = query_date.isoformat() if isinstance(query_date, date) else str(query_date)[:10]
    own_client = client is None
    client = make_client(settings) if client is None else client
    if tracer is None:
        tracer = Tracer.for_db(_db_file(db))
    max_turns = settings.max_turns if max_turns is None else max_turns

    few_shot = settings.few_shot if few_shot is None else few_shot
    tools = make_tools(db, inbox, day, max_body_chars=settings.max_body_chars)
    traj = Trajectory(
        question=question,
        inbox=inbox.id,
        query_date=day,
        model=settings.model,
        messages=build_messages(question, inbox, day, few_shot=few_shot),
        trace_id=uuid.uuid4().hex,
        started=time.time(),
    )
    rollout = tracer.start(traj) if tracer else None
    emit = _emitter(on_event)
    try:
        await _loop(
            traj,
            tools,
            client,
            settings,
            max_turns,
            max_tokens or MAX_COMPLETION_TOKENS,
            emit,
            rollout,
            record_tokens=record_tokens,
        )
    except Exception as exc:  # a bug (ours or an on_event handler's): this rollout alone, not the model
        log.exception("The agent loop crashed on %r", question)
        traj.ended, traj.infra_error = "model_error", True
        traj.error = (
            f"the agent loop crashed ({type(exc).__name__}: {exc}): a bug, not the model's fault; "
            "the log has the traceback"
        )
    finally:
        traj.duration_s = time.time() - traj.started
        if rollout:
            rollout.finish(traj)
        if own_client:
            await client.close()
    await emit(
        {
            "type": "final",
            "ended": traj.ended,
            "answer": traj.answer,
            "sources": traj.sources,
            "reply": traj.reply,
            "error": traj.error,
            "trajectory": traj,
        }
    )
    return traj


def run_agent(question: str, inbox: Inbox | str, query_date: str | date, **kwargs: Any) -> Trajectory:
    """Synchronous :func:`arun_agent` (same arguments) for scripts and the CLI."""
    return asyncio.run(arun_agent(question, inbox, query_date, **kwargs))


async def arun_batch(
    items: Iterable[Any],
    *,
    db: sqlite_utils.Database | str | Path,
    settings: Settings | None = None,
    client: openai.AsyncOpenAI | None = None,
    tracer: Tracer | Literal[False] | None = None,
    progress: bool = True,
    description: str = "rollouts",
    on_result: Callable[[int, Trajectory], Any] | None = None,
    **kwargs: Any,
) -> list[Trajectory]:
    """Run many rollouts at once (``settings.concurrency`` in flight) with a progress bar.

    :param items: ``(question, inbox, query_date)`` tuples, dicts with those keys, or objects with
        ``question``, ``inbox_address`` (or ``inbox``) and ``query_date`` (e.g. ``Question``).
    :param on_result: called with ``(index, trajectory)`` as each rollout finishes.
    :param kwargs: passed on to :func:`arun_agent` (``max_turns``, ``few_shot``...).
    :returns: the trajectories in the order of ``items``.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = settings or Settings()
    db = db if isinstance(db, sqlite_utils.Database) else open_db(db)
    own_client = client is None
    client = make_client(settings) if client is None else client
    if tracer is None:
        tracer = Tracer.for_db(_db_file(db))
    jobs = [_batch_item(item) for item in items]
    # resolve every inbox first, so an unknown one fails before any rollout starts
    inboxes = {key: get_inbox(db, key) for key in {inbox for _, inbox, _ in jobs if isinstance(inbox, str)}}
    semaphore = asyncio.Semaphore(max(1, settings.concurrency))
    counts: dict[str, int] = {}

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
        disable=not progress,
    ) as bar:
        task = bar.add_task(description, total=len(jobs), counts="")

        async def one(index: int, question: str, inbox_key: str | Inbox, day: str) -> Trajectory:
            inbox = inbox_key if isinstance(inbox_key, Inbox) else inboxes[inbox_key]
            async with semaphore:
                traj = await arun_agent(
                    question, inbox, day, db=db, settings=settings, client=client, tracer=tracer, **kwargs
                )
            counts[traj.ended] = counts.get(traj.ended, 0) + 1
            bar.update(task, advance=1, counts=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            if on_result:
                on_result(index, traj)
            return traj

        try:
            return list(await asyncio.gather(*(one(i, *job) for i, job in enumerate(jobs))))
        finally:
            if own_client:
                await client.close()


# ---------------------------------------------------------------------------------------------
# The loop


async def _loop(
    traj: Trajectory,
    tools: InboxTools,
    client: openai.AsyncOpenAI,
    settings: Settings,
    max_turns: int,
    max_tokens: int,
    emit: Callable[[dict], Any],
    rollout: RolloutTrace | None,
    *,
    record_tokens: bool = False,
) -> None:
    schemas = tools.schemas()
    parameters = tool_parameters(schemas)
    bad_turns = 0
    for index in range(max_turns):
        # 1) call the model (with retries for transport errors)
        turn = Turn(index=index, started=time.time())
        traj.turns.append(turn)
        span = rollout.span("model", "chat", {"messages": traj.messages}) if rollout else None
        try:
            message, response = await _complete(
                client, settings, traj.messages, schemas, max_tokens, turn, emit, record_tokens
            )
        except _ModelFailure as exc:
            turn.latency_s = time.time() - turn.started
            turn.error = traj.error = str(exc)
            traj.ended = "model_error"
            traj.infra_error = exc.infra
            if span:
                span.end(error=turn.error)
            return
        turn.latency_s = time.time() - turn.started
        usage = getattr(response, "usage", None)
        turn.prompt_tokens = getattr(usage, "prompt_tokens", None)
        turn.completion_tokens = getattr(usage, "completion_tokens", None)
        turn.content = message.content
        turn.finish_reason = response.choices[0].finish_reason
        if record_tokens:
            _record_tokens(turn, response)
        calls, text = _parse_calls(message, parameters)
        turn.recovered_calls = sum(c.recovered and c.problem is None for c in calls)
        traj.reply = text
        if span:
            span.end(
                output={"content": message.content, "tool_calls": [_call_dict(c) for c in calls]},
                tokens=(turn.prompt_tokens, turn.completion_tokens),
            )
        await emit(
            {
                "type": "model_call",
                "turn": index,
                "latency_s": turn.latency_s,
                "content": message.content,
                "tool_calls": [_call_dict(c) for c in calls],
                "prompt_tokens": turn.prompt_tokens,
                "completion_tokens": turn.completion_tokens,
            }
        )

        # 2) no tool call: the model gave up (or answered in plain text, which does not count)
        if not calls:
            traj.messages.append({"role": "assistant", "content": message.content or ""})
            traj.ended = "gave_up"
            return
        traj.messages.append(
            {"role": "assistant", "content": text, "tool_calls": [_message_call(c) for c in calls]}
        )

        # 3) run the tool calls in order
        finished = False
        for call in calls:
            record = ToolCall(id=call.id, name=call.name, arguments=call.arguments, started=time.time())
            turn.tool_calls.append(record)
            if finished:
                record.error = f"not run: the episode ended at {FINAL_TOOL}"
                record.content = f"Error: {record.error}"
                continue
            await emit(
                {
                    "type": "tool_call",
                    "turn": index,
                    "id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
            tool_span = rollout.span("tool", call.name or "?", call.arguments) if rollout else None
            record.content, record.error = _run_tool(tools, call)
            record.duration_s = time.time() - record.started
            if tool_span:
                tool_span.end(output=record.content, error=record.error)
            traj.messages.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": record.content}
            )
            await emit(
                {
                    "type": "tool_result",
                    "turn": index,
                    "id": call.id,
                    "name": call.name,
                    "content": record.content,
                    "error": record.error,
                }
            )
            if call.name == FINAL_TOOL and record.error is None:
                finished = True
                traj.answer, traj.sources = _final_answer(record.content, call.arguments)
        if finished:
            traj.ended = "answered"
            return

        # 4) too many bad turns in a row: stop
        bad_turns = bad_turns + 1 if all(c.error for c in turn.tool_calls) else 0
        if bad_turns >= MAX_BAD_TURNS:
            traj.ended = "bad_tool_call"
            traj.error = (
                f"{bad_turns} turns in a row with only failing tool calls; last: {turn.tool_calls[-1].error}"
            )
            return
    traj.ended = "max_turns"


async def _complete(
    client: openai.AsyncOpenAI,
    settings: Settings,
    messages: list[dict],
    schemas: list[dict],
    max_tokens: int,
    turn: Turn,
    emit: Callable[[dict], Any],
    record_tokens: bool = False,
) -> tuple[Any, Any]:
    """One chat completion, retried with exponential backoff on timeouts, 5xx and dropped connections."""
    extra: dict[str, Any] = {}
    if record_tokens:
        extra = {"logprobs": True, "extra_body": {"return_token_ids": True}}
    for attempt in range(settings.max_retries + 1):
        try:
            response = await client.chat.completions.create(
                model=settings.model,
                messages=messages,
                tools=schemas,
                tool_choice=settings.tool_choice,
                temperature=settings.temperature,
                max_tokens=max_tokens,
                timeout=settings.timeout_s,
                **extra,
            )
        except (openai.OpenAIError, ValueError) as exc:
            error = _describe(exc)
            if not is_transient(exc):  # a 4xx, or a body that is not a completion: the model's
                raise _ModelFailure(error, infra=is_rejection(exc)) from exc  # unless refused outright
            if attempt == settings.max_retries:
                raise _ModelFailure(f"{error} (gave up after {attempt + 1} attempts)", infra=True) from exc
            delay = RETRY_BACKOFF_S * 2**attempt
            turn.retries.append(error)
            log.info("model call failed (%s); retrying in %.1f s", error, delay)
            await emit(
                {
                    "type": "retry",
                    "turn": turn.index,
                    "attempt": attempt + 1,
                    "error": error,
                    "delay_s": delay,
                }
            )
            await asyncio.sleep(delay)
            continue
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise _ModelFailure(f"the endpoint returned no choices: {str(response)[:200]}", infra=False)
        return choices[0].message, response
    raise AssertionError("unreachable")


def _record_tokens(turn: Turn, response: Any) -> None:
    """Keep the token ids and sampled log-probs vLLM returned (``return_token_ids``, ``logprobs``)."""
    choice = response.choices[0]
    turn.prompt_token_ids = getattr(response, "prompt_token_ids", None)
    turn.token_ids = getattr(choice, "token_ids", None)
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    turn.logprobs = [item.logprob for item in content] if content else None
    if turn.prompt_token_ids is None or turn.token_ids is None:
        raise ValueError(
            "the endpoint returned no token ids: recording tokens needs a vLLM server (return_token_ids)"
        )


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text[:300]}"


# ---------------------------------------------------------------------------------------------
# Parsing tool calls


def _parse_calls(message: Any, parameters: dict[str, list[str]]) -> tuple[list[_Call], str | None]:
    """The tool calls in a reply, and its text around calls written as text.

    ``parameters`` (``{tool: parameter names}``) are the tools a call in the text may name.
    """
    content = message.content
    structured = getattr(message, "tool_calls", None) or []
    if structured:
        calls = []
        for i, tc in enumerate(structured):
            function = getattr(tc, "function", None)
            name = getattr(function, "name", None) or ""
            raw = getattr(function, "arguments", None)
            calls.append(_Call(getattr(tc, "id", None) or _call_id(i), name, _load_arguments(raw)))
        return calls, content
    found, text = parse_tool_calls(content, parameters)
    calls = [_Call(_call_id(i), c.name, c.arguments, c.problem, recovered=True) for i, c in enumerate(found)]
    return calls, text


def _load_arguments(raw: Any) -> Any:
    """Arguments as a dict when they are a JSON object; otherwise as sent (the tools report the error)."""
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    return raw


def _call_id(index: int) -> str:
    return f"call_{uuid.uuid4().hex[:12]}_{index}"


def _call_dict(call: _Call) -> dict:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _message_call(call: _Call) -> dict:
    """A call in OpenAI message format. Arguments are always valid JSON (a raw string is JSON-quoted),
    because vLLM parses them when the conversation is sent back."""
    encoded = json.dumps(call.arguments, ensure_ascii=False)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": encoded}}


# ---------------------------------------------------------------------------------------------
# Running tools


def _run_tool(tools: InboxTools, call: _Call) -> tuple[str, str | None]:
    """(tool message content, error or None); ``InboxTools.call`` reports bad input, never raises."""
    if call.problem:
        return f"Error: {call.problem}", call.problem
    result = tools.call(call.name, call.arguments)
    return result.content, result.error


def _final_answer(content: str, arguments: Any) -> tuple[str, list[str]]:
    """The answer and sources of a successful return_final_answer (from its result, else its arguments)."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        data = arguments if isinstance(arguments, dict) else {}
    if not isinstance(data, dict):
        data = arguments if isinstance(arguments, dict) else {}
    sources = data.get("sources") or []
    return str(data.get("answer", "")), [str(s) for s in sources] if isinstance(sources, list) else [
        str(sources)
    ]


# ---------------------------------------------------------------------------------------------
# Helpers


def _emitter(on_event: EventHandler | None) -> Callable[[dict], Any]:
    async def emit(event: dict) -> None:
        if on_event is None:
            return
        result = on_event(event)
        if inspect.isawaitable(result):
            await result

    return emit


def _db_file(db: sqlite_utils.Database) -> Path | None:
    """The file behind a DB connection (None for an in-memory DB)."""
    for _, name, file in db.execute("pragma database_list").fetchall():
        if name == "main" and file:
            return Path(file)
    return None


def _batch_item(item: Any) -> tuple[str, str | Inbox, str]:
    if isinstance(item, tuple | list):
        question, inbox, day = item
    elif isinstance(item, dict):
        question, day = item["question"], item["query_date"]
        inbox = item.get("inbox") or item["inbox_address"]
    else:
        question, day = item.question, item.query_date
        inbox = getattr(item, "inbox", None) or item.inbox_address
    return question, inbox, day.isoformat() if isinstance(day, date) else str(day)[:10]
