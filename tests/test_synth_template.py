"""The template generator: deterministic, grounded pairs that the agent's own tools can answer."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from env.db import NoInbox, get_inbox, list_inboxes, open_db
from env.tools import make_tools
from synth_data import ground
from synth_data.generate import SynthConfig, generate
from synth_data.questions import Question, load_questions

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "enron"


def _assert_answerable_with_tools(db, questions: list[Question]) -> None:
    """Each pair: the answer is verbatim in what read_email shows, and a search with the quoted subject
    words (what a reader of the question would type) finds the cited email."""
    for q in questions:
        inbox = get_inbox(db, q.inbox_key)
        tools = make_tools(db, inbox, q.query_date)
        subject = re.search(r'"(.+)"', q.question).group(1)
        hits = [h["message_id"] for h in tools.search_emails(ground.content_terms(subject)[:8])]
        assert q.message_ids[0] in hits, q.question
        shown = tools.read_email(q.message_ids[0])
        text = ground.normalize(json.dumps(shown))
        # recipients answers list several addresses; each is verbatim in what the agent reads
        assert all(ground.normalize(part) in text for part in q.answer.split(", ")), (q.question, q.answer)
        newest = dt.date.fromisoformat(shown["date"][:10])
        assert 1 <= (dt.date.fromisoformat(q.query_date) - newest).days <= 30


def test_template_pairs_are_grounded_and_deterministic(synth_db_path: Path) -> None:
    db = open_db(synth_db_path)
    inbox = get_inbox(db, "jane-d")
    config = SynthConfig(n=50, generator="template")
    questions, report = generate(db, inbox, config, progress=False)
    again, _ = generate(db, inbox, config, progress=False)
    assert [q.to_dict() for q in questions] == [q.to_dict() for q in again]
    assert report.kept == len(questions) >= 10
    assert report.generated == report.kept + sum(report.dropped.values())
    templates = {q.generator for q in questions}
    assert {"template:sender", "template:date", "template:recipients", "template:amount"} <= templates
    by_id = {q.message_ids[0]: q for q in questions}
    assert by_id["<2.jane@thyme>"].answer == "carol.white@enron.com"  # sent by the owner: recipients
    assert "<3.jane@thyme>" not in by_id and "<7.jane@thyme>" not in by_id
    amounts = [q for q in questions if q.generator == "template:amount"]
    assert all(q.answer.startswith("$") and q.answer in q.evidence for q in amounts)
    for q in questions:
        assert q.kind == "single" and q.difficulty == "easy" and q.mailbox == "jane-d"
        assert ground.check_pair(db, q) is None
    _assert_answerable_with_tools(db, questions)


def test_cli_issue_spelling_runs_the_template_generator(synth_db_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    args = ["synth", "--db", str(synth_db_path), "--inbox", "jane-d", "--n", "4", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--generator", "template", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Wrote 4 pairs" in result.output and "kept" in result.output
    assert len(load_questions(out)) == 4
    assert '"kept": 4' in out.with_name("pairs.report.json").read_text()
    result = CliRunner().invoke(
        cli, ["synth", "generate", *args[1:], "--generator", "template", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(cli, ["synth", "--db", str(synth_db_path), "--inbox", "nobody", "--n", "1"])
    assert bad.exit_code == 1 and "No inbox 'nobody'" in bad.output


@pytest.mark.shared
@pytest.mark.slow
def test_template_yields_200_grounded_pairs_from_the_shared_sample(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    from env.ingest import ingest

    source = Path("/tmp/enron/maildir")
    path = tmp_path / "enron.db"
    ingest([source if source.is_dir() else SHARED / "enron-maildir-sample.tar.gz"], path, progress=False)
    db = open_db(path)
    inboxes = list_inboxes(db)
    assert len(inboxes) == 9
    kept: list[Question] = []
    for inbox in inboxes:
        questions, report = generate(db, inbox, SynthConfig(n=25, generator="template"), progress=False)
        assert report.generated == report.kept + sum(report.dropped.values())
        kept += questions
    print(f"template pairs kept from the shared sample: {len(kept)}")
    assert len(kept) >= 200
    assert all(ground.check_pair(db, q) is None for q in kept)
    _assert_answerable_with_tools(db, kept)
    with pytest.raises(NoInbox):
        get_inbox(db, "jane-d")
