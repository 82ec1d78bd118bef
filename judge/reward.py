"""The reward: one documented table (:class:`RewardConfig`) and small pure components.

GRPO training and batch evaluation call the same :func:`compute_reward`. The table, with its
defaults (ART·E's shaped reward, with "I don't know" separated from a wrong answer):

==========================  ===========  ==================================================================
outcome                     reward       notes
==========================  ===========  ==================================================================
correct                     1.0          \\+ ``gold_source_bonus`` 0.3 when a cited source is a gold email,
                                         \\+ ``turn_bonus`` 0.1 x (1 - turns / max_turns)
abstained                   0.0          declined on an answerable question; on an *unanswerable* question
                                         declining is the correct answer (the judge says ``correct``)
incorrect (hallucination)   -1.0         answered, and wrong; answering an unanswerable question
max_turns                   -1.5         no final answer within ``max_turns``
model_error                 -1.5         the endpoint failed (often a rambling model overflowing the context)
gave_up                     -1.8         replied without calling a tool (ART·E: no tool call, -1.8)
bad_tool_call               -2.0         kept sending unusable tool calls (ART·E: unparseable call, -2)
==========================  ===========  ==================================================================

Optional terms, added to every outcome but ``correct``:

- **process credit** (``process_found`` 0.1, ``process_read`` 0.1): a search returned a gold email;
  the agent read one. Ids resolve through the inbox DB, so any copy's Message-ID counts.

Optional for every answered rollout:

- **calibration** (``calibration_weight``, default 0 = off): the agent may state a confidence in
  its answer ("confidence: 0.8", "80% sure"); the term is ``-weight * (confidence - correct)^2``
  (a Brier score: the RLCR recipe of binary reward plus Brier keeps accuracy and improves
  calibration). A missing confidence costs the full ``weight``.

The ordering *format failure < hallucination < abstention < correct* holds whatever the process
credit (:class:`RewardConfig` refuses values that would break it) and for a well-calibrated answer;
with calibration on, a confidently wrong answer may fall below a format failure, on purpose.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

    from judge.judge import Verdict

FAILURES = ("max_turns", "model_error", "gave_up", "bad_tool_call")


@dataclass(frozen=True)
class RewardConfig:
    """The reward table (see the module docstring). Every field has help text for CLI flags."""

    # > The answer's outcome (from the judge's verdict)
    correct: float = field(default=1.0, metadata={"help": "Reward for a correct answer."})
    gold_source_bonus: float = field(
        default=0.3, metadata={"help": "Added to a correct answer that cites at least one gold email."}
    )
    turn_bonus: float = field(
        default=0.1, metadata={"help": "Added to a correct answer, scaled by 1 - turns / max_turns."}
    )
    max_turns: int = field(default=10, metadata={"help": "Turn budget the turn bonus is measured against."})
    abstained: float = field(
        default=0.0, metadata={"help": "Declining on an answerable question (raise it to reward honesty)."}
    )
    incorrect: float = field(default=-1.0, metadata={"help": "A wrong answer: a hallucination."})

    # > Format failures (no final answer), graded as ART·E did: all below a hallucination
    max_turns_reached: float = field(default=-1.5, metadata={"help": "No final answer within max_turns."})
    model_error: float = field(default=-1.5, metadata={"help": "The model endpoint failed for good."})
    gave_up: float = field(default=-1.8, metadata={"help": "A reply without a tool call ended the episode."})
    bad_tool_call: float = field(default=-2.0, metadata={"help": "Repeated unusable tool calls ended it."})

    # > Process credit (for outcomes other than correct)
    process_found: float = field(default=0.1, metadata={"help": "A search returned a gold email."})
    process_read: float = field(default=0.1, metadata={"help": "The agent read a gold email."})

    # > Calibration (RLCR): off by default
    calibration_weight: float = field(
        default=0.0, metadata={"help": "Weight of the Brier term on a stated confidence (0 = off)."}
    )

    def __post_init__(self) -> None:
        process = max(0.0, self.process_found) + max(0.0, self.process_read)
        worst_failure = max(self.max_turns_reached, self.model_error, self.gave_up, self.bad_tool_call)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}.")
        if min(self.gold_source_bonus, self.turn_bonus, self.calibration_weight) < 0:
            raise ValueError("gold_source_bonus, turn_bonus and calibration_weight must be >= 0.")
        for low, high, what in (
            (
                worst_failure + process,
                self.incorrect,
                "every format failure (plus process credit) below incorrect",
            ),
            (self.incorrect + process, self.abstained, "incorrect (plus process credit) below abstained"),
            (self.abstained + process, self.correct, "abstained (plus process credit) below correct"),
        ):
            if not low < high:
                raise ValueError(
                    f"The reward table must keep {what}: {low:g} is not below {high:g}. "
                    "Lower the penalty or the process credit."
                )

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready dict."""
        return asdict(self)

    def table_markdown(self) -> str:
        """The table as Markdown (for reports)."""
        rows = ["| term | value | meaning |", "|---|---:|---|"]
        rows += [
            f"| `{f.name}` | {getattr(self, f.name):g} | {f.metadata.get('help', '')} |" for f in fields(self)
        ]
        return "\n".join(rows)


@dataclass(frozen=True)
class RewardBreakdown:
    """A reward and its parts: ``total == sum(components.values())``."""

    total: float
    components: dict[str, float]
    outcome: str

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"total": self.total, "components": dict(self.components), "outcome": self.outcome}


# ---------------------------------------------------------------------------------------------
# Components: small and pure


def outcome_reward(outcome: str, config: RewardConfig) -> float:
    """The table's base value for an outcome.

    >>> c = RewardConfig()
    >>> [outcome_reward(o, c) for o in ("correct", "abstained", "incorrect", "max_turns", "bad_tool_call")]
    [1.0, 0.0, -1.0, -1.5, -2.0]
    """
    values = {
        "correct": config.correct,
        "abstained": config.abstained,
        "incorrect": config.incorrect,
        "max_turns": config.max_turns_reached,
        "model_error": config.model_error,
        "gave_up": config.gave_up,
        "bad_tool_call": config.bad_tool_call,
    }
    if outcome not in values:
        raise ValueError(f"Unknown outcome {outcome!r}; expected one of {', '.join(values)}.")
    return values[outcome]


def gold_source_bonus(cited_gold: bool, config: RewardConfig) -> float:
    """Bonus for a correct answer that cites a gold email.

    >>> gold_source_bonus(True, RewardConfig()), gold_source_bonus(False, RewardConfig())
    (0.3, 0.0)
    """
    return config.gold_source_bonus if cited_gold else 0.0


def turn_bonus(turns: int, config: RewardConfig) -> float:
    """Small bonus for a correct answer found in fewer turns: ``turn_bonus * (1 - turns / max_turns)``.

    >>> c = RewardConfig()
    >>> round(turn_bonus(2, c), 3), turn_bonus(10, c), turn_bonus(12, c)
    (0.08, 0.0, 0.0)
    """
    return config.turn_bonus * max(0.0, 1 - turns / config.max_turns)


def process_credit(found: bool, read: bool, config: RewardConfig) -> dict[str, float]:
    """Partial credit for process: a search surfaced a gold email; the agent read one.

    >>> process_credit(True, False, RewardConfig())
    {'process_found': 0.1, 'process_read': 0.0}
    """
    return {
        "process_found": config.process_found if found else 0.0,
        "process_read": config.process_read if read else 0.0,
    }


_CONFIDENCE_PATTERNS = (
    re.compile(r"\bconfidence(?: level)?\s*(?:[:=]|is|of)?\s*(\d{1,3}(?:\.\d+)?)\s*(%|percent)?", re.I),
    re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*(%|percent)\s*(?:confident|confidence|sure|certain)\b", re.I),
    re.compile(r"\b(?:confidence|confident|sure|certain)\s*[:=]?\s*(0?\.\d+|1\.0+|[01])\b()", re.I),
)


def parse_confidence(text: str | None) -> float | None:
    """The confidence an answer states, in [0, 1], or None.

    >>> parse_confidence("Check #1178 (confidence: 0.8)"), parse_confidence("I'm 90% sure it was May 1.")
    (0.8, 0.9)
    >>> parse_confidence("Check #1178.") is None
    True
    """
    for pattern in _CONFIDENCE_PATTERNS:
        m = pattern.search(text or "")
        if m:
            value = float(m.group(1))
            if m.group(2) or value > 1:
                value /= 100
            return value if 0.0 <= value <= 1.0 else None
    return None


def brier_term(confidence: float | None, correct: bool, config: RewardConfig) -> float:
    """Calibration (RLCR): ``-weight * (confidence - correct)^2``; a missing confidence costs ``weight``.

    >>> c = RewardConfig(calibration_weight=0.5)
    >>> brier_term(0.9, True, c), brier_term(0.9, False, c), brier_term(None, True, c)
    (-0.005, -0.405, -0.5)
    """
    if not config.calibration_weight:
        return 0.0
    if confidence is None:
        return -config.calibration_weight
    return -config.calibration_weight * round((confidence - float(correct)) ** 2, 6)


# ---------------------------------------------------------------------------------------------
# Reading the trajectory


def _norm_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip().lower()


def _ids_in(text: str) -> list[str]:
    """Message-IDs in a tool result: ``message_id`` fields of its JSON, else ``<...@...>`` tokens."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return re.findall(r"<[^<>\s]+@[^<>\s]+>", text or "")
    items = data if isinstance(data, list) else [data]
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        items = data["results"]
    return [i["message_id"] for i in items if isinstance(i, dict) and isinstance(i.get("message_id"), str)]


def _arguments(call: Any) -> dict:
    args = call.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return {}
    return args if isinstance(args, dict) else {}


class GoldIds:
    """Decides which Message-IDs are a question's gold emails.

    With the inbox DB, ids resolve to ``emails.id`` (:func:`env.db.resolve_message_ids`), so any
    copy of a gold message counts and two copies count once; without it (or for ids the DB does
    not know), ids compare literally, ignoring case and ``<>``.
    """

    def __init__(self, gold_ids: list[str], inbox: str, db: sqlite_utils.Database | None = None) -> None:
        self.inbox, self.db = inbox, db
        self.gold = self.keys(gold_ids)

    def keys(self, ids: list[str]) -> set[str]:
        """One key per distinct email among ``ids``."""
        ids = [i.strip() for i in ids if isinstance(i, str) and i.strip()]
        resolved: dict[str, int] = {}
        if self.db is not None and ids:
            from env.db import resolve_message_ids

            variants = sorted({v for i in ids for v in (i, f"<{i.strip('<>')}>")})
            resolved = resolve_message_ids(self.db, self.inbox, variants)
        keys = set()
        for i in ids:
            email = resolved.get(i, resolved.get(f"<{i.strip('<>')}>"))
            keys.add(f"email:{email}" if email is not None else _norm_id(i))
        return keys

    def hits(self, ids: list[str]) -> set[str]:
        """The distinct gold emails among ``ids``."""
        return self.keys(ids) & self.gold


def process_signals(trajectory: Any, gold: GoldIds) -> tuple[bool, bool]:
    """(a search returned a gold email, the agent read a gold email) from the tool calls."""
    found = read = False
    for call in trajectory.tool_calls:
        if call.error:
            continue
        if call.name == "search_emails":
            found = found or bool(gold.hits(_ids_in(call.content)))
        elif call.name == "read_email":
            message_id = _arguments(call).get("message_id")
            read = read or (isinstance(message_id, str) and bool(gold.hits([message_id])))
    return found, read


def outcome_of(trajectory: Any, verdict: Verdict | None) -> str:
    """``correct | incorrect | abstained`` for an answered rollout, else how it ended."""
    if trajectory.ended != "answered":
        return trajectory.ended if trajectory.ended in FAILURES else "model_error"
    if verdict is None:
        raise ValueError("An answered trajectory needs a verdict; judge it first (judge.judge.judge_answer).")
    return verdict.verdict


def compute_reward(
    trajectory: Any,
    verdict: Verdict | None,
    question: Any,
    config: RewardConfig | None = None,
    *,
    db: sqlite_utils.Database | None = None,
) -> RewardBreakdown:
    """The reward of one rollout, with its parts.

    :param trajectory: an :class:`env.trajectory.Trajectory` (``ended``, ``answer``, ``sources``,
        ``turns``, ``tool_calls``, ``inbox``).
    :param verdict: the judge's verdict on ``trajectory.answer``; may be None when the rollout did
        not answer (``ended != "answered"``).
    :param question: a :class:`synth_data.questions.Question` (``message_ids``, ``answer``).
    :param config: the reward table; default :class:`RewardConfig`.
    :param db: the inbox DB, so that any copy's Message-ID counts as a gold source; without it ids
        compare literally.
    """
    config = config or RewardConfig()
    outcome = outcome_of(trajectory, verdict)
    gold = GoldIds(list(question.message_ids or []), trajectory.inbox, db)
    components = {"outcome": outcome_reward(outcome, config)}
    if outcome == "correct":
        components["gold_source"] = gold_source_bonus(bool(gold.hits(list(trajectory.sources or []))), config)
        components["turns"] = turn_bonus(len(trajectory.turns), config)
    else:
        components.update(process_credit(*process_signals(trajectory, gold), config))
    if trajectory.ended == "answered" and config.calibration_weight:
        components["calibration"] = brier_term(
            parse_confidence(trajectory.answer), outcome == "correct", config
        )
    return RewardBreakdown(total=round(sum(components.values()), 6), components=components, outcome=outcome)
