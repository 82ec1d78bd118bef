"""The inbox as a TRL environment: the same tools, prompt and reward as serving.

``GRPOTrainer(environment_factory=InboxEnvironment.factory(db_path), ...)`` creates one
:class:`InboxEnvironment` per rollout. TRL calls ``reset(**row)`` with the dataset row (built by
:func:`build_dataset`: the prompt from ``env.prompt.build_messages`` plus the question record), then
runs the model's tool calls on the environment's ``search_emails`` / ``read_email`` /
``return_final_answer`` methods. Each method hands the call to ``env.tools.InboxTools.call``, the
code the serving loop (``env.agent``) runs, so the model sees the same tool messages, errors
included. :func:`inbox_reward` then rebuilds an ``env.trajectory.Trajectory`` from the rollout,
judges the answer (``judge.judge_answer``) and scores it with ``judge.compute_reward``, the
function evaluation uses.

The prompt's tool list is the serving one too: :func:`use_serving_tool_schemas` makes TRL render
``InboxTools.schemas()`` instead of schemas re-derived from these methods.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from env.config import Settings
from env.db import get_inbox, open_db
from env.prompt import build_messages
from env.tools import MAX_BODY_CHARS, TOOL_NAMES, InboxTools, make_tools
from env.trajectory import ToolCall, Trajectory, Turn
from synth_data.questions import Question

FINAL_TOOL = "return_final_answer"


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as chat templates want them: tool-call arguments as objects, not JSON text.

    vLLM decodes OpenAI-style JSON-text arguments before it renders the template; doing the same
    here makes training prompts byte-identical to what the server renders.

    >>> template_messages([{"role": "assistant", "content": "", "tool_calls": [
    ...     {"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}])[0]["tool_calls"][0]
    {'type': 'function', 'function': {'name': 'f', 'arguments': {'a': 1}}}
    """
    out = []
    for message in messages:
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call["function"])
                if isinstance(function.get("arguments"), str):
                    with contextlib.suppress(json.JSONDecodeError):
                        function["arguments"] = json.loads(function["arguments"])
                calls.append({**call, "function": function})
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


def question_row(question: Question, db: Any, *, few_shot: bool = True) -> dict[str, Any]:
    """One dataset row: the prompt (``build_messages``) and what ``reset`` and the reward need."""
    inbox = get_inbox(db, question.inbox_key)
    return {
        "prompt": template_messages(
            build_messages(question.question, inbox, question.query_date, few_shot=few_shot)
        ),
        "question_id": question.id,
        "inbox": inbox.id,
        "query_date": question.query_date,
        # The whole record as JSON: Arrow would otherwise coerce None answers and ragged extras.
        "question_json": json.dumps(question.to_dict(), ensure_ascii=False),
    }


def build_dataset(questions: list[Question], db: Any, *, few_shot: bool = True) -> Any:
    """A ``datasets.Dataset`` of :func:`question_row` rows for GRPOTrainer."""
    from datasets import Dataset

    return Dataset.from_list([question_row(q, db, few_shot=few_shot) for q in questions])


def _tool_method(name: str) -> Callable[..., str]:
    """An environment method that runs tool ``name`` through ``InboxTools.call``.

    ``functools.wraps`` gives it the tool's name, docstring and signature (for TRL's checks); it
    accepts any keyword arguments so that bad model input reaches ``InboxTools.call``, which turns
    it into the same error message the serving loop shows.
    """

    @functools.wraps(getattr(InboxTools, name))
    def method(self: InboxEnvironment, **arguments: Any) -> str:
        return self._call(name, arguments)

    return method


class InboxEnvironment:
    """One rollout's inbox: tools bound to the row's inbox and date, and a record of every call."""

    search_emails = _tool_method("search_emails")
    read_email = _tool_method("read_email")
    return_final_answer = _tool_method("return_final_answer")

    def __init__(self, db_path: str | Path, max_body_chars: int | None = MAX_BODY_CHARS) -> None:
        self.db = open_db(db_path)
        self.max_body_chars = max_body_chars
        self.tools: InboxTools | None = None
        self.question: Question | None = None
        self.calls: list[ToolCall] = []
        self.answer: str | None = None
        self.sources: list[str] = []
        self.finished = False
        self.started = 0.0

    @classmethod
    def factory(
        cls, db_path: str | Path, max_body_chars: int | None = MAX_BODY_CHARS
    ) -> Callable[[], InboxEnvironment]:
        """A no-argument constructor for ``GRPOTrainer(environment_factory=...)``."""
        return functools.partial(cls, db_path, max_body_chars)

    def reset(self, **row: Any) -> None:
        """Start a rollout on the dataset row's question (the prompt already holds it)."""
        self.question = Question.from_dict(json.loads(row["question_json"]))
        self.tools = make_tools(self.db, row["inbox"], row["query_date"], max_body_chars=self.max_body_chars)
        self.calls, self.answer, self.sources, self.finished = [], None, [], False
        self.started = time.time()
        return None

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        record = ToolCall(id=f"call_{len(self.calls)}", name=name, arguments=arguments, started=time.time())
        self.calls.append(record)
        if self.tools is None:
            raise RuntimeError("InboxEnvironment.reset() must be called before its tools.")
        if self.finished:
            record.error = f"not run: the episode ended at {FINAL_TOOL}"
            record.content = f"Error: {record.error}"
            return record.content
        result = self.tools.call(name, arguments)
        record.content, record.error = result.content, result.error
        record.duration_s = time.time() - record.started
        if result.is_final:
            data = json.loads(result.content)
            self.answer, self.sources, self.finished = data["answer"], list(data["sources"]), True
        return record.content


def run_last_turn(environment: InboxEnvironment, completion: list[dict]) -> None:
    """Run the tool calls of the rollout's last turn when TRL left them unrun, as serving would.

    TRL runs tools only ``max_tool_calling_iterations`` times (``max_turns - 1``), so the calls of
    the last allowed turn never run: a ``return_final_answer`` there would not count and the
    rollout would end as out of turns, although the serving loop (``env.agent``) ends it answered.
    Only a last turn with no tool messages after it, and calls the environment has not recorded,
    is run (a turn whose results TRL rolled back for length has run already).
    """
    if not completion or completion[-1].get("role") != "assistant":
        return
    last = completion[-1].get("tool_calls") or []
    made = sum(len(m.get("tool_calls") or []) for m in completion if m.get("role") == "assistant")
    if not last or len(environment.calls) >= made:
        return
    for call in last:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            with contextlib.suppress(json.JSONDecodeError):
                arguments = json.loads(arguments)
        environment._call(str(function.get("name")), arguments if isinstance(arguments, dict) else {})


def to_trajectory(
    environment: InboxEnvironment, prompt: list[dict], completion: list[dict], model: str = "policy"
) -> Trajectory:
    """A rollout as an ``env.trajectory.Trajectory``, as the serving loop would record it.

    (A function, not a method: TRL exposes every public method of the environment as a tool.)

    :param environment: the rollout's environment, after TRL ran the tool calls on it.
    :param prompt: the prompt messages TRL rendered.
    :param completion: TRL's completion messages (assistant turns with parsed ``tool_calls``,
        and the tool messages it appended).
    """
    question, tools = environment.question, environment.tools
    if question is None or tools is None:
        raise RuntimeError("to_trajectory() needs an environment that has been reset().")
    turns: list[Turn] = []
    pending = iter(environment.calls)
    for message in completion:
        if message.get("role") != "assistant":
            continue
        turn = Turn(index=len(turns), started=environment.started, content=message.get("content") or "")
        for _ in message.get("tool_calls") or []:
            record = next(pending, None)
            if record is not None:
                turn.tool_calls.append(record)
        turns.append(turn)
    assistant = [m for m in completion if m.get("role") == "assistant"]
    if environment.finished:
        ended = "answered"
    elif assistant and not assistant[-1].get("tool_calls"):
        ended = "gave_up"
    else:
        ended = "max_turns"
    return Trajectory(
        question=question.question,
        inbox=tools.inbox.id,
        query_date=question.query_date,
        model=model,
        messages=[*prompt, *completion],
        turns=turns,
        answer=environment.answer,
        sources=environment.sources,
        reply=(assistant[-1].get("content") or "") if assistant else None,
        ended=ended,
        trace_id=uuid.uuid4().hex,
        started=environment.started,
        duration_s=time.time() - environment.started,
    )


def use_serving_tool_schemas(trainer: Any) -> None:
    """Make a GRPOTrainer render ``InboxTools.schemas()`` (what vLLM serves) in its prompts.

    TRL derives a schema from each environment method with ``transformers.get_json_schema``, whose
    wording differs from ``InboxTools.schemas()``. Tools still run through the environment methods;
    only the rendered tool list changes. Raises if this TRL version keeps tools elsewhere.
    """
    env_tools = getattr(trainer, "_env_tools", None)
    if not isinstance(env_tools, dict) or None not in env_tools:
        raise RuntimeError(
            "This TRL version does not keep environment tools in GRPOTrainer._env_tools; "
            "pin trl>=1.16,<2 or update train.env.use_serving_tool_schemas."
        )
    names = sorted(getattr(t, "__name__", "") for t in env_tools[None])
    if names != sorted(TOOL_NAMES):
        raise RuntimeError(f"Unexpected environment tools {names}; expected {sorted(TOOL_NAMES)}.")
    env_tools[None] = InboxTools.schemas()


def make_reward(settings: Settings, reward_config: Any = None) -> Callable[..., list[float | None]]:
    """The GRPO reward: judge each rollout's final answer and score it with ``judge.compute_reward``.

    Also logs, per batch, accuracy, abstention and hallucination rates, turns and tool errors
    (``log_metric``), so they land in ``metrics.jsonl`` beside TRL's own metrics. A rollout the
    judge fails on (``JudgeError``, e.g. its endpoint is down) gets no reward (None: TRL leaves it
    out) and is counted in ``inbox/judge_errors``.
    """
    from judge.judge import JudgeError, judge_answer
    from judge.reward import compute_reward

    def inbox_reward(
        prompts: list,
        completions: list,
        log_metric: Callable,
        environments: list[InboxEnvironment] | None = None,
        trajectory: list[dict] | None = None,
        question_json: list[str] | None = None,
        **_: Any,
    ) -> list[float | None]:
        rewards: list[float | None] = []
        verdicts, trajectories, errors, infra = [], [], 0, 0
        for traj, q, db in _rollouts(prompts, completions, environments, trajectory, question_json, settings):
            if traj.infra_error:  # the server's trouble, not the model's: no reward, left out
                infra += 1
                rewards.append(None)
                continue
            verdict = None
            if traj.ended == "answered":
                try:
                    verdict = judge_answer(
                        q.question, q.answer, traj.answer, traj.sources, q.message_ids, settings=settings
                    )
                except JudgeError:
                    errors += 1
                    rewards.append(None)
                    continue
            breakdown = compute_reward(traj, verdict, q, reward_config, db=db)
            rewards.append(float(breakdown.total))
            verdicts.append(breakdown.outcome)
            trajectories.append(traj)
            for component, value in breakdown.components.items():
                log_metric(f"reward/{component}", float(value))
        for name, value in batch_metrics(trajectories, verdicts).items():
            log_metric(name, value)
        log_metric("inbox/judge_errors", float(errors))
        log_metric("inbox/infra_errors", float(infra))
        return rewards

    return inbox_reward


def _rollouts(
    prompts: list,
    completions: list,
    environments: list[InboxEnvironment] | None,
    trajectories: list[dict] | None,
    question_json: list[str] | None,
    settings: Settings,
) -> list[tuple[Trajectory, Question, Any]]:
    """Each rollout's trajectory, question and inbox DB: from the rollout function's trajectories
    (server generation, ``train.rollout``; the DB of ``settings``), else rebuilt from TRL's
    environments (each one's DB)."""
    if trajectories is not None:
        if question_json is None:
            raise ValueError("server rollouts need the dataset's question_json column")
        db = open_db(settings.db_path)
        return [
            (Trajectory.from_dict(t), Question.from_dict(json.loads(q)), db)
            for t, q in zip(trajectories, question_json, strict=True)
        ]
    if environments is None:
        raise ValueError("the GRPO reward needs TRL's environments or the rollouts' trajectories")
    out = []
    for prompt, completion, environment in zip(prompts, completions, environments, strict=True):
        run_last_turn(environment, completion)
        assert environment.question is not None
        out.append((to_trajectory(environment, prompt, completion), environment.question, environment.db))
    return out


def batch_metrics(trajectories: list[Trajectory], outcomes: list[str]) -> dict[str, float]:
    """Shares of correct / abstained / hallucinated (answered wrongly) rollouts, mean turns and tool errors.

    ``outcomes`` are ``RewardBreakdown.outcome`` values (``correct``, ``incorrect``, ``abstained``,
    or how a rollout without an answer ended).

    >>> t = Trajectory("q", "i", "2001-01-01", "m", ended="answered")
    >>> batch_metrics([t, t], ["correct", "incorrect"])["inbox/hallucination"]
    0.5
    """
    n = max(len(outcomes), 1)
    calls = [c for t in trajectories for c in t.tool_calls]
    return {
        "inbox/accuracy": outcomes.count("correct") / n,
        "inbox/abstention": outcomes.count("abstained") / n,
        "inbox/hallucination": outcomes.count("incorrect") / n,
        "inbox/answered": sum(t.ended == "answered" for t in trajectories) / n,
        "inbox/turns": sum(len(t.turns) for t in trajectories) / n,
        "inbox/tool_calls": len(calls) / n,
        "inbox/tool_error_rate": (sum(c.error is not None for c in calls) / len(calls)) if calls else 0.0,
    }
