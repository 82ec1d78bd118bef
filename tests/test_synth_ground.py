"""Grounding checks on a real SQLite inbox: citations, quotes, search, unanswerable, dedup."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from env.db import get_inbox, open_db
from synth_data import ground
from synth_data.questions import Question, default_questions_path, load_questions, save_questions


def _q(**overrides: object) -> Question:
    base = Question(
        id="g1",
        inbox_address="jane.doe@enron.com",
        mailbox="jane-d",
        question="When does the Tenaska gas storage contract renew?",
        answer="June 1",
        message_ids=["<5.jane@thyme>"],
        query_date="2001-05-20",
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def db(synth_db_path: Path):
    database = open_db(synth_db_path)
    yield database
    database.close()


def test_citations_must_exist_in_that_inbox_and_predate_the_query(db) -> None:
    emails, reason = ground.cited_emails(db, "jane-d", _q())
    assert reason is None and [e.message_id for e in emails] == ["<5.jane@thyme>"]
    # a Lotus Notes copy's id resolves to the same email
    emails, reason = ground.cited_emails(
        db, "jane-d", _q(message_ids=["<5-copy.jane@thyme>", "<5.jane@thyme>"])
    )
    assert reason is None and len(emails) == 1
    assert ground.cited_emails(db, "jane-d", _q(message_ids=["<nope@x>"]))[1] == "unknown_message_id"
    # the same story in another inbox does not count
    assert ground.cited_emails(db, "jane-d", _q(message_ids=["<900.tom@thyme>"]))[1] == "unknown_message_id"
    # the email is dated 2001-05-10: a question asked that day (or before) cannot cite it
    assert ground.cited_emails(db, "jane-d", _q(query_date="2001-05-10"))[1] == "cited_after_query_date"


def test_quote_must_be_verbatim_and_carry_the_answer(db) -> None:
    emails, _ = ground.cited_emails(db, "jane-d", _q())
    verbatim = "the storage contract with   Tenaska\nrenews on June 1."
    assert ground.check_quote(verbatim, "June 1", emails) is None
    assert ground.check_quote("The Tenaska contract renews on July 1.", "June 1", emails) == "quote_not_found"
    assert ground.check_quote("Please sign the renewal by May 20.", "June 1", emails) == "quote_unrelated"
    assert ground.check_quote("June 1", "June 1", emails) == "quote_not_found"  # too short to be a quote
    # headers are part of the email the agent reads
    assert ground.check_quote("From: Lisa Ng <lisa.ng@enron.com>", "Lisa Ng", emails) is None


def test_search_checks(db) -> None:
    q = _q()
    emails, _ = ground.cited_emails(db, "jane-d", q)
    assert ground.check_findable(db, "jane-d", q, emails) is None
    vague = _q(question="What is happening with the thing we discussed?")
    assert ground.check_findable(db, "jane-d", vague, emails) == "not_findable"
    unanswerable = _q(
        kind="unanswerable", answer=None, message_ids=[], question="What did the Zanzibar ferry cost?"
    )
    assert ground.check_unanswerable(db, "jane-d", unanswerable, ["Zanzibar ferry"]) is None
    # "Tenaska" and "renews" are both in an email before the query date: not unanswerable
    assert ground.check_unanswerable(db, "jane-d", unanswerable, ["Tenaska", "renews"]) == "answer_found"
    # ...but only emails before the query date count
    early = dataclasses.replace(unanswerable, query_date="2001-05-01")
    assert ground.check_unanswerable(db, "jane-d", early, ["Tenaska", "renews"]) is None
    assert ground.check_unanswerable(db, "jane-d", unanswerable, ["the", ""]) == "no_key_terms"


def test_realism_threshold() -> None:
    assert ground.check_realism(_q(how_realistic=0.5), 0.4) is None
    assert ground.check_realism(_q(how_realistic=0.3), 0.4) == "unrealistic"
    assert ground.check_realism(_q(how_realistic=None), 0.4) == "unrealistic"


def test_near_duplicates_are_dropped_but_different_questions_kept() -> None:
    d = ground.Deduper(0.8)
    assert d.is_new("When does the Tenaska storage contract renew?")
    assert not d.is_new("When does the Tenaska storage contract renew")
    assert not d.is_new("when  does the tenaska STORAGE contract renews?")
    assert d.is_new("Who signs the Tenaska storage contract renewal?")
    assert d.is_new('Who sent me the email with the subject "Malin basis curve"?')
    assert d.is_new('Who sent me the email with the subject "Budget review meeting"?')


def test_shipped_default_set_is_grounded_in_the_default_inbox(default_db_path: Path) -> None:
    db = open_db(default_db_path)
    questions = load_questions(default_questions_path())
    failures = {q.id: ground.check_pair(db, q) for q in questions}
    assert {k: v for k, v in failures.items() if v} == {}
    assert get_inbox(db, "allen-p").address == "phillip.allen@enron.com"


def test_cli_check_with_db_counts_failures(synth_db_path: Path, tmp_path: Path) -> None:
    path = save_questions(
        tmp_path / "q.jsonl",
        [_q(), _q(id="g2", message_ids=["<nope@x>"]), _q(id="g3", evidence="A sentence that is not there.")],
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", "check", str(path), "--db", str(synth_db_path)])
    assert result.exit_code == 0, result.output
    assert "grounded" in result.output and "unknown_message_id" in result.output
    assert "evidence_not_found" in result.output
    strict = runner.invoke(cli, ["synth", "check", str(path), "--db", str(synth_db_path), "--strict"])
    assert strict.exit_code == 1
