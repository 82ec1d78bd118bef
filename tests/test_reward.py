"""The reward table: values per outcome, ordering, process credit through the real inbox DB, calibration."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from env.db import open_db, resolve_message_ids
from env.trajectory import ToolCall, Trajectory, Turn
from judge.judge import Verdict
from judge.reward import RewardConfig, compute_reward, parse_confidence
from synth_data.questions import Question, default_questions_path, load_questions


@pytest.fixture(scope="module")
def questions() -> dict[str, Question]:
    return {q.id: q for q in load_questions(default_questions_path())}


@pytest.fixture(scope="module")
def check_question(questions: dict[str, Question]) -> Question:
    """allen-p-001: its three gold Message-IDs are copies of one email (three folders)."""
    return questions["allen-p-001"]


@pytest.fixture(scope="module")
def unanswerable(questions: dict[str, Question]) -> Question:
    return next(q for q in questions.values() if q.kind == "unanswerable")


def verdict(label: str) -> Verdict:
    return Verdict(label, "test", "deterministic")


def trajectory(
    ended: str = "answered",
    answer: str | None = "Check #1178",
    sources: list[str] | None = None,
    calls: list[ToolCall] | None = None,
    turns: int = 3,
    inbox: str = "allen-p",
) -> Trajectory:
    t = Trajectory(
        question="q",
        inbox=inbox,
        query_date="2000-09-20",
        model="m",
        answer=answer if ended == "answered" else None,
        sources=sources or [],
        ended=ended,
    )
    t.turns = [Turn(index=i, started=0.0) for i in range(turns)]
    t.turns[0].tool_calls = calls or []
    return t


def search_result(*ids: str) -> ToolCall:
    content = "[" + ", ".join(f'{{"message_id": "{i}", "subject": "s"}}' for i in ids) + "]"
    return ToolCall(id="c1", name="search_emails", arguments={"keywords": ["check"]}, content=content)


def read(message_id: str, error: str | None = None) -> ToolCall:
    return ToolCall(
        id="c2", name="read_email", arguments={"message_id": message_id}, content="{}", error=error
    )


# ---------------------------------------------------------------------------------------------


def test_reward_table_values(check_question: Question) -> None:
    gold = check_question.message_ids[0]
    cases = [
        # correct + gold source + 2 turns: 1 + 0.3 + 0.1 * (1 - 2/10)
        (trajectory(sources=[gold], turns=2), "correct", 1.38),
        (trajectory(sources=["<other@x>"], turns=10), "correct", 1.0),
        (trajectory(), "abstained", 0.0),
        (trajectory(), "incorrect", -1.0),
        (trajectory("max_turns"), None, -1.5),
        (trajectory("model_error"), None, -1.5),
        (trajectory("gave_up"), None, -1.8),
        (trajectory("bad_tool_call"), None, -2.0),
    ]
    for traj, label, expected in cases:
        r = compute_reward(traj, verdict(label) if label else None, check_question)
        assert r.total == pytest.approx(expected), (traj.ended, label, r)
        assert r.total == pytest.approx(sum(r.components.values()))
        assert r.outcome == (label or traj.ended)


def test_format_failures_ignore_the_verdict(check_question: Question) -> None:
    r = compute_reward(trajectory("max_turns"), verdict("correct"), check_question)
    assert (r.outcome, r.total) == ("max_turns", -1.5)


def test_ordering_holds_with_every_bonus_and_credit(check_question: Question) -> None:
    gold = check_question.message_ids[0]
    process = [search_result(gold), read(gold)]
    worst_correct = compute_reward(trajectory(turns=10), verdict("correct"), check_question).total
    best_abstained = compute_reward(trajectory(calls=process), verdict("abstained"), check_question).total
    worst_abstained = compute_reward(trajectory(), verdict("abstained"), check_question).total
    best_incorrect = compute_reward(trajectory(calls=process), verdict("incorrect"), check_question).total
    worst_incorrect = compute_reward(trajectory(), verdict("incorrect"), check_question).total
    best_failure = max(
        compute_reward(trajectory(ended, calls=process), None, check_question).total
        for ended in ("max_turns", "model_error", "gave_up", "bad_tool_call")
    )
    assert (
        best_failure < worst_incorrect <= best_incorrect < worst_abstained <= best_abstained < worst_correct
    )


def test_process_credit_counts_any_copy_through_the_db(
    check_question: Question, default_db_path: Path
) -> None:
    db = open_db(default_db_path)
    first, second, third = check_question.message_ids
    assert len(set(resolve_message_ids(db, "allen-p", [first, second, third]).values())) == 1  # one email

    only_first = Question(**{**check_question.to_dict(), "message_ids": [first]})
    calls = [search_result("<unrelated@x>", second), read(third)]
    with_db = compute_reward(trajectory(calls=calls), verdict("incorrect"), only_first, db=db)
    assert with_db.components == {"outcome": -1.0, "process_found": 0.1, "process_read": 0.1}
    assert with_db.total == pytest.approx(-0.8)
    # Without the DB ids compare literally, so the other copies do not count.
    literal = compute_reward(trajectory(calls=calls), verdict("incorrect"), only_first)
    assert literal.total == pytest.approx(-1.0)
    # Citing another copy earns the gold-source bonus with the DB, and ids without <> resolve too.
    cited = compute_reward(
        trajectory(sources=[third.strip("<>")], turns=10), verdict("correct"), only_first, db=db
    )
    assert cited.components["gold_source"] == pytest.approx(0.3)


def test_failed_tool_calls_earn_no_process_credit(check_question: Question) -> None:
    gold = check_question.message_ids[0]
    r = compute_reward(
        trajectory(calls=[read(gold, error="no such email")]), verdict("incorrect"), check_question
    )
    assert r.total == pytest.approx(-1.0)


def test_unanswerable_question(unanswerable: Question) -> None:
    # The judge calls a decline on an unanswerable question "correct"; there is no gold source to cite.
    declined = compute_reward(trajectory(answer="I don't know", turns=5), verdict("correct"), unanswerable)
    assert declined.total == pytest.approx(1.0 + 0.1 * 0.5)
    assert declined.components["gold_source"] == 0.0
    hallucinated = compute_reward(trajectory(answer="$5,000"), verdict("incorrect"), unanswerable)
    assert hallucinated.total == pytest.approx(-1.0)


def test_abstention_bonus_is_configurable(check_question: Question) -> None:
    config = RewardConfig(abstained=0.4)
    assert compute_reward(trajectory(), verdict("abstained"), check_question, config).total == pytest.approx(
        0.4
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"incorrect": 0.5}, "incorrect"),
        ({"abstained": -1.0}, "incorrect"),
        ({"max_turns_reached": -0.9}, "format failure"),
        ({"process_found": 0.9}, "process credit"),
        ({"abstained": 1.0}, "below correct"),
        ({"max_turns": 0}, "max_turns"),
        ({"turn_bonus": -0.1}, "turn_bonus"),
    ],
)
def test_config_refuses_a_broken_table(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RewardConfig(**overrides)


def test_every_field_is_documented() -> None:
    help_text = RewardConfig.help()
    assert all(help_text.values()), help_text
    table = RewardConfig().table_markdown()
    assert all(f"`{name}`" in table for name in help_text)


def test_calibration_brier_term(check_question: Question) -> None:
    config = RewardConfig(calibration_weight=0.5)
    sure_right = compute_reward(
        trajectory(answer="Check #1178 (confidence: 0.9)", turns=10),
        verdict("correct"),
        check_question,
        config,
    )
    assert sure_right.components["calibration"] == pytest.approx(-0.5 * 0.01)
    sure_wrong = compute_reward(
        trajectory(answer="Check #99, 90% sure"), verdict("incorrect"), check_question, config
    )
    assert sure_wrong.total == pytest.approx(-1.0 - 0.5 * 0.81)
    humble_wrong = compute_reward(
        trajectory(answer="Check #99, confidence 10%"), verdict("incorrect"), check_question, config
    )
    assert humble_wrong.total > sure_wrong.total
    silent = compute_reward(trajectory(answer="Check #99"), verdict("incorrect"), check_question, config)
    assert silent.components["calibration"] == pytest.approx(-0.5)
    # Off by default: no calibration component at all.
    assert "calibration" not in compute_reward(trajectory(), verdict("incorrect"), check_question).components


@pytest.mark.parametrize(
    ("text", "value"),
    [("confidence: 0.75", 0.75), ("Confidence 80%", 0.8), ("I am 95 percent sure", 0.95), ("sure: 1", 1.0)],
)
def test_parse_confidence(text: str, value: float) -> None:
    assert parse_confidence(text) == pytest.approx(value)


def test_an_answer_needs_a_verdict(check_question: Question) -> None:
    with pytest.raises(ValueError, match="judge it first"):
        compute_reward(trajectory(), None, check_question)


def test_reward_components_doctests() -> None:
    import judge.reward

    result = doctest.testmod(judge.reward)
    assert result.attempted >= 8 and result.failed == 0
