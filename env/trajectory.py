"""What one agent rollout did: every message, model turn and tool call, and why it ended.

A :class:`Trajectory` is plain data. It round-trips through JSON (``to_dict``/``from_dict``), so
eval writes it to ``results.jsonl``, the trace store keeps it, and training reads it back; and it
renders as readable text (``render``) for the terminal and bug reports.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Ended = Literal["answered", "gave_up", "max_turns", "bad_tool_call", "model_error"]
ENDED: tuple[Ended, ...] = ("answered", "gave_up", "max_turns", "bad_tool_call", "model_error")


@dataclass
class ToolCall:
    """One tool call the model made and what came back.

    ``arguments`` is what the model sent: a dict when it parsed as a JSON object, else the raw
    text. ``content`` is the tool message the model saw next; ``error`` is set when the call failed
    (bad JSON, unknown tool, wrong types, a tool error) and is then also in ``content``.
    """

    id: str
    name: str
    arguments: Any
    content: str = ""
    error: str | None = None
    started: float = 0.0
    duration_s: float = 0.0


@dataclass
class Turn:
    """One model call: its reply, cost and the tool calls it asked for.

    ``retries`` lists the transport errors (timeouts, 5xx, dropped connections) that were retried
    before this reply; ``error`` is set when the call failed for good and ended the rollout.
    ``recovered_calls`` counts the tool calls read from the reply's text (``env.toolcalls``)
    because the endpoint returned none in ``tool_calls``.
    ``prompt_token_ids``, ``token_ids`` and ``logprobs`` (of the sampled tokens) are recorded only
    when the rollout asked the server for them (``arun_agent(record_tokens=True)``, vLLM only):
    GRPO trains on them.
    """

    index: int
    started: float
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    content: str | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    error: str | None = None
    recovered_calls: int = 0
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


@dataclass
class Trajectory:
    """One rollout of the agent on one question.

    ``answer``/``sources`` are what the model passed to ``return_final_answer`` (``answer`` is None
    unless ``ended == "answered"``). ``reply`` is the text of the last assistant message, which is
    the whole reply when the model gave up without calling a tool. ``messages`` is the
    conversation in OpenAI chat format, prompt included.

    ``infra_error`` is True when a ``model_error`` rollout failed for infrastructure reasons (the
    endpoint timed out, refused or dropped the connection, or answered 5xx / 408 / 409 / 429 through
    every retry): it says nothing about the model, so evaluation leaves it out and runs it again.
    """

    question: str
    inbox: str
    query_date: str
    model: str
    messages: list[dict] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None
    sources: list[str] = field(default_factory=list)
    reply: str | None = None
    ended: Ended = "model_error"
    error: str | None = None
    infra_error: bool = False
    trace_id: str = ""
    started: float = 0.0
    duration_s: float = 0.0

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every tool call of every turn, in order."""
        return [call for turn in self.turns for call in turn.tool_calls]

    @property
    def failed_tool_calls(self) -> int:
        """How many tool calls returned an error."""
        return sum(call.error is not None for call in self.tool_calls)

    @property
    def recovered_calls(self) -> int:
        """How many tool calls were read from reply text rather than structured ``tool_calls``."""
        return sum(turn.recovered_calls for turn in self.turns)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens summed over the turns that reported usage."""
        return sum(turn.prompt_tokens or 0 for turn in self.turns)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens summed over the turns that reported usage."""
        return sum(turn.completion_tokens or 0 for turn in self.turns)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``json.dumps`` works on it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Trajectory:
        """Rebuild a trajectory from :meth:`to_dict` output (unknown keys are ignored)."""
        turns = [
            Turn(
                **{
                    **_known(Turn, turn),
                    "tool_calls": [ToolCall(**_known(ToolCall, c)) for c in turn.get("tool_calls", [])],
                }
            )
            for turn in data.get("turns", [])
        ]
        return cls(**{**_known(cls, data), "turns": turns})

    def to_json(self) -> str:
        """The trajectory as one line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def render(self, *, max_result_chars: int = 300) -> str:
        """Readable text: the question, each turn's reply and tool calls, and the outcome."""
        lines = [
            f"Question: {self.question}",
            f"Inbox: {self.inbox}  date: {self.query_date}  model: {self.model}",
        ]
        for turn in self.turns:
            tokens = f"{turn.prompt_tokens or 0}+{turn.completion_tokens or 0} tokens"
            lines.append(f"--- turn {turn.index + 1} ({turn.latency_s:.2f} s, {tokens})")
            lines.extend(f"  retried after: {r}" for r in turn.retries)
            if turn.error:
                lines.append(f"  model error: {turn.error}")
            if turn.content and not (turn.tool_calls and turn.recovered_calls):
                lines.append(f"  assistant: {_clip(turn.content, max_result_chars)}")
            for call in turn.tool_calls:
                args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
                lines.append(f"  -> {call.name}({_clip(args, max_result_chars)})")
                status = f"ERROR {call.error}" if call.error else _clip(call.content, max_result_chars)
                lines.append(f"     {status}")
        lines.append(f"Ended: {self.ended} after {len(self.turns)} turns, {self.duration_s:.1f} s")
        if self.error:
            kind = "Infrastructure error" if self.infra_error else "Error"
            lines.append(f"{kind}: {self.error}")
        if self.ended == "answered":
            lines.append(f"Answer: {self.answer}")
            lines.append(f"Sources: {', '.join(self.sources) or '(none)'}")
        elif self.reply:
            lines.append(f"Reply: {_clip(self.reply, max_result_chars)}")
        return "\n".join(lines)


def _known(cls: type, data: dict) -> dict:
    names = cls.__dataclass_fields__
    return {k: v for k, v in data.items() if k in names}


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
