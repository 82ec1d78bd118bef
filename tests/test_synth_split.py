"""Train/test splits: by inbox and by time, never letting test cite an email a training question cites."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from env.db import open_db
from synth_data.questions import Question, default_questions_path, load_questions, save_questions
from synth_data.split import split_by_inbox, split_by_time


def _cited(db, questions: list[Question]) -> dict[str, set[int]]:
    """emails.id cited by each question (any copy's Message-ID resolves to the same email)."""
    from env.db import get_inbox, resolve_message_ids

    return {
        q.id: set(resolve_message_ids(db, get_inbox(db, q.inbox_key).id, q.message_ids).values())
        for q in questions
    }


def test_split_by_inbox_keeps_mailboxes_whole() -> None:
    questions = load_questions(default_questions_path())
    split = split_by_inbox(questions, test_inboxes=["south-s"])
    assert {q.mailbox for q in split.test} == {"south-s"}
    assert {q.mailbox for q in split.train} == {"allen-p", "grigsby-m"}
    assert len(split.train) + len(split.test) == len(questions)
    assert {q.split for q in split.train} == {"train"} and {q.split for q in split.test} == {"test"}
    by_address = split_by_inbox(questions, test_inboxes=["steven.south@enron.com"])
    assert [q.id for q in by_address.test] == [q.id for q in split.test]
    seeded = split_by_inbox(questions, test_fraction=0.34, seed=3)
    assert len({q.mailbox for q in seeded.test}) == 1
    assert seeded.summary() == split_by_inbox(questions, test_fraction=0.34, seed=3).summary()
    with pytest.raises(ValueError, match="No questions for inbox"):
        split_by_inbox(questions, test_inboxes=["nobody"])


def test_split_by_time_never_shares_emails(default_db_path: Path) -> None:
    db = open_db(default_db_path)
    questions = load_questions(default_questions_path())
    split = split_by_time(questions, test_fraction=0.3, db=db)
    assert split.train and split.test
    cited = _cited(db, split.train + split.test)
    train_emails = set().union(*(cited[q.id] for q in split.train))
    test_emails = set().union(*(cited[q.id] for q in split.test))
    assert not train_emails & test_emails
    for key, cutoff in split.cutoffs.items():
        assert all(q.query_date <= cutoff for q in split.train if q.inbox_key == key)
        assert all(q.query_date > cutoff for q in split.test if q.inbox_key == key)
    kept = len(split.train) + len(split.test)
    assert kept + sum(split.dropped.values()) == len(questions)
    # without the DB the rule is stricter (cited emails may be up to 30 days before query_date)
    no_db = split_by_time(questions, test_fraction=0.3)
    assert len(no_db.test) <= len(split.test)


def test_split_by_time_drops_a_question_that_straddles_the_cutoff() -> None:
    def q(i: int, day: str, ids: list[str]) -> Question:
        return Question(str(i), "a@x.com", f"Question {i}?", "yes", ids, day)

    questions = [q(1, "2001-01-10", ["<a>"]), q(2, "2001-02-10", ["<b>"]), q(3, "2001-02-15", ["<c>"])]
    later = [*questions[:2], dataclasses.replace(questions[2], query_date="2001-04-01")]
    split = split_by_time(later, test_fraction=0.34)  # cut-off 2001-02-10: 3 cites mail after it
    assert [x.id for x in split.train] == ["1", "2"] and [x.id for x in split.test] == ["3"]
    # Mail close together: at the query-date cut-off (2001-02-10) question 3 may cite mail from up to
    # 30 days before 2001-02-15, so no test question is clean; the cut-off moves to a date that
    # leaves one (2001-01-11: 1 asked before it, 3 citing only later mail) and 2 straddles it.
    split = split_by_time(questions, test_fraction=0.34)
    assert [x.id for x in split.train] == ["1"] and [x.id for x in split.test] == ["3"]
    assert split.dropped == {"straddles_cutoff": 1} and split.cutoffs == {"a@x.com": "2001-01-11"}
    same_day = [dataclasses.replace(x, query_date="2001-02-10") for x in questions]
    assert split_by_time(same_day, test_fraction=0.34).test == []  # no date separates them


def test_cli_split_writes_both_files(tmp_path: Path) -> None:
    source = save_questions(tmp_path / "qs.jsonl", load_questions(default_questions_path()))
    result = CliRunner().invoke(
        cli, ["synth", "split", str(source), "--by", "inbox", "--test-inbox", "south-s"]
    )
    assert result.exit_code == 0, result.output
    train, test = load_questions(tmp_path / "qs.train.jsonl"), load_questions(tmp_path / "qs.test.jsonl")
    assert len(train) + len(test) == 82 and {q.mailbox for q in test} == {"south-s"}
    bad = CliRunner().invoke(cli, ["synth", "split", str(source), "--by", "sender"])
    assert bad.exit_code == 1 and "--by must be 'inbox' or 'time'" in bad.output
