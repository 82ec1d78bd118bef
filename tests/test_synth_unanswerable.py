"""Unanswerable questions made from the inbox itself (synth_data.unanswerable), checked with the tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from env.db import get_inbox, open_db
from env.prompt import I_DONT_KNOW
from env.tools import ToolError, make_tools
from synth_data.ground import content_terms, normalize
from synth_data.questions import Question, default_questions_path, load_questions
from synth_data.unanswerable import add_unanswerables, entity_swapped, time_shifted
from train.sft import qa_trajectory


@pytest.fixture(scope="module")
def mixed(default_db_path: Path) -> tuple[list[Question], list[Question]]:
    """The shipped questions, and the set with unanswerables at a 30% share."""
    shipped = load_questions(default_questions_path())
    out, _ = add_unanswerables(open_db(default_db_path), shipped, 0.3, seed=7)
    return shipped, out


def test_the_share_is_met_with_both_kinds(mixed: tuple[list[Question], list[Question]]) -> None:
    shipped, out = mixed
    made = out[len(shipped) :]
    assert out[: len(shipped)] == shipped
    share = sum(q.kind == "unanswerable" for q in out) / len(out)
    assert abs(share - 0.3) < 0.02, share
    assert {q.generator for q in made} == {"unanswerable:time-shift", "unanswerable:entity-swap"}
    assert all(q.answer is None and q.message_ids == [] and q.kind == "unanswerable" for q in made)
    assert len({q.id for q in out}) == len(out)


def test_same_seed_same_questions(
    default_db_path: Path, mixed: tuple[list[Question], list[Question]]
) -> None:
    shipped, out = mixed
    again, _ = add_unanswerables(open_db(default_db_path), shipped, 0.3, seed=7)
    assert [q.to_dict() for q in again] == [q.to_dict() for q in out]
    other, _ = add_unanswerables(open_db(default_db_path), shipped, 0.3, seed=8)
    assert [q.to_dict() for q in other] != [q.to_dict() for q in out]


def test_time_shifted_questions_are_unanswerable_with_the_real_tools(
    default_db_path: Path, mixed: tuple[list[Question], list[Question]]
) -> None:
    db = open_db(default_db_path)
    shipped, out = mixed
    source = {q.id: q for q in shipped}
    shifted = [q for q in out if q.generator == "unanswerable:time-shift"]
    assert shifted
    for q in shifted:
        original = source[q.id.removesuffix("-u-time-shift")]
        assert q.question == original.question and q.query_date < original.query_date
        tools = make_tools(db, get_inbox(db, q.inbox_key), q.query_date)
        for message_id in original.message_ids:
            with pytest.raises(ToolError):
                tools.read_email(message_id)
        for hit in tools.search_emails(content_terms(q.question)[:4]):
            body = normalize(tools.read_email(hit["message_id"])["body"])
            assert normalize(original.answer) not in body


def test_entity_swapped_questions_name_what_the_inbox_never_mentions(
    default_db_path: Path, mixed: tuple[list[Question], list[Question]]
) -> None:
    db = open_db(default_db_path)
    shipped, out = mixed
    source = {q.id: q for q in shipped}
    swapped = [q for q in out if q.generator == "unanswerable:entity-swap"]
    assert swapped
    for q in swapped:
        original = source[q.id.removesuffix("-u-entity-swap")]
        new_words = set(q.question.split()) - set(original.question.split())
        assert new_words, q.question
        # far in the future: every email of the inbox is visible, and none holds the new term
        tools = make_tools(db, get_inbox(db, q.inbox_key), "2100-01-01")
        for word in new_words:
            term = word.strip("?,.'\"")
            hits = tools.search_emails([term])
            assert all(term.lower() not in json.dumps(h).lower() for h in hits), (term, hits)


def test_a_question_is_dropped_when_the_tools_still_show_its_answer(default_db_path: Path) -> None:
    """Moved before its cited email, a question whose answer an earlier email also holds stays answerable."""
    db = open_db(default_db_path)
    inbox = get_inbox(db, "allen-p")
    rows = db.execute(
        "select message_id, subject, date from emails where inbox = ? and date > ? and length(subject) > 25 "
        "order by date",
        [inbox.id, "2000-09-01"],
    ).fetchall()
    early = rows[0]
    late = next(r for r in rows if r[2][:10] > "2000-12-15")
    q = Question(
        id="leaky",
        inbox_address=inbox.addresses[0],
        mailbox="allen-p",
        question=f"What was the subject of the email about {early[1]}?",
        answer=early[1],
        message_ids=[late[0]],
        query_date="2001-01-31",
    )
    assert time_shifted(db, q) == (None, "answer_visible")
    no_entity = Question(**{**q.to_dict(), "question": "what is it about?", "id": "bare"})
    assert entity_swapped(db, no_entity) == (None, "no_entity")


def test_sft_trajectory_for_an_unanswerable_searches_twice_then_says_i_dont_know(
    default_db_path: Path, mixed: tuple[list[Question], list[Question]]
) -> None:
    db = open_db(default_db_path)
    _, out = mixed
    q = next(q for q in out if q.generator == "unanswerable:entity-swap")
    messages = qa_trajectory(q, db, few_shot=False)
    calls = [m["tool_calls"][0]["function"] for m in messages if m.get("tool_calls")]
    assert [c["name"] for c in calls] == ["search_emails", "search_emails", "return_final_answer"]
    first, retry = (json.loads(c["arguments"])["keywords"] for c in calls[:2])
    assert not set(first) & set(retry)
    assert json.loads(calls[-1]["arguments"]) == {"answer": I_DONT_KNOW, "sources": []}


def test_an_answer_must_come_from_what_the_trajectory_read(default_db_path: Path) -> None:
    """A read_email cut before the evidence cannot teach its answer: no trajectory."""
    db = open_db(default_db_path)
    shipped = [q for q in load_questions(default_questions_path()) if q.kind != "unanswerable"]
    full = [q for q in shipped if qa_trajectory(q, db, few_shot=False) is not None]
    cut = [q for q in full if qa_trajectory(q, db, few_shot=False, max_body_chars=20) is not None]
    assert len(full) >= 0.8 * len(shipped)
    assert len(cut) < len(full) / 2
    for q in cut:  # what remains is answered from the headers a cut body still shows
        messages = qa_trajectory(q, db, few_shot=False, max_body_chars=20)
        reads = [m for m in messages if m.get("role") == "tool" and m["name"] == "read_email"]
        shown = " ".join(m["content"] for m in reads)
        assert any(t in normalize(shown) for t in content_terms(q.answer))
