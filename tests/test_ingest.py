"""Ingestion into a real SQLite file: the shipped default inbox, dedup, recipients, reruns, resume, CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from env.db import get_inbox, list_inboxes, open_db, resolve_message_ids
from env.ingest import default_inbox_archive, ingest

QUESTIONS = Path(__file__).resolve().parents[1] / "synth_data" / "data" / "default_questions.jsonl"


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    tables = ("emails", "message_ids", "recipients", "sources", "quarantine", "emails_fts")
    counts = {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}
    conn.close()
    return counts


def test_default_archive_inboxes(default_db_path: Path) -> None:
    db = open_db(default_db_path)
    boxes = {b.id: b for b in list_inboxes(db)}
    assert set(boxes) == {"allen-p", "grigsby-m", "south-s"}
    # allen-p: 1,397 distinct messages by Date, From, Subject and body (shared sample README).
    assert boxes["allen-p"].message_count == 1397
    assert boxes["allen-p"].addresses[0] == "phillip.allen@enron.com"
    assert "k..allen@enron.com" in boxes["allen-p"].addresses
    assert boxes["grigsby-m"].addresses[0] == "mike.grigsby@enron.com"
    assert boxes["south-s"].addresses[0] == "steven.south@enron.com"
    # The 1979-12-31 placeholder dates stay on the rows but not in the inbox's range.
    assert db.execute("select count(*) from emails where date like '1980-01-01%'").fetchone()[0] > 0
    assert boxes["allen-p"].first_date.startswith("1999-12")
    assert boxes["allen-p"].last_date.startswith("2002-01")
    assert get_inbox(db, "K..Allen@enron.com").id == "allen-p"
    counts = _counts(default_db_path)
    assert counts["emails"] == sum(b.message_count for b in boxes.values())
    assert counts["emails_fts"] == counts["emails"]
    assert counts["message_ids"] == 5519  # every file's Message-ID resolves
    assert counts["quarantine"] == 0


def test_every_cited_copy_resolves(default_db_path: Path) -> None:
    """Questions cite all Lotus Notes copies of a message: each one resolves, copies to one row."""
    db = open_db(default_db_path)
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    single_row = 0
    for q in questions:
        resolved = resolve_message_ids(db, q["mailbox"], q["message_ids"])
        assert set(resolved) == set(q["message_ids"]), q["id"]
        single_row += q["kind"] == "single" and len(q["message_ids"]) > 1 and len(set(resolved.values())) == 1
    assert single_row >= 35
    # the three copies of one allen-p message: one emails row, three message_ids rows with their folders
    ids = ["<9007402.1075855688248.JavaMail.evans@thyme>", "<11578703.1075855681711.JavaMail.evans@thyme>",
           "<26240402.1075855668375.JavaMail.evans@thyme>"]  # fmt: skip
    rows = db.execute(
        "select email_id, folder from message_ids where inbox = 'allen-p' and message_id in (?, ?, ?)", ids
    ).fetchall()
    assert len({r[0] for r in rows}) == 1
    assert {r[1] for r in rows} == {"_sent_mail", "sent", "all_documents"}


def test_recipients_round_trip(default_db_path: Path) -> None:
    db = open_db(default_db_path)
    email_id = resolve_message_ids(db, "allen-p", ["<18782981.1075855378110.JavaMail.evans@thyme>"])[
        "<18782981.1075855378110.JavaMail.evans@thyme>"
    ]
    rows = db.execute("select kind, address from recipients where email_id = ?", [email_id]).fetchall()
    assert rows == [("to", "tim.belden@enron.com")]
    kinds = {kind for (kind,) in db.execute("select distinct kind from recipients")}
    assert kinds == {"to", "cc", "bcc"}


def test_rerun_changes_nothing(default_db_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    shutil.copy(default_db_path, path)
    before = _counts(path)
    report = ingest([default_inbox_archive()], path, progress=False)
    assert (report.ingested, report.duplicate, report.quarantined) == (0, 0, 0)
    assert report.skipped_sources == 1
    assert _counts(path) == before
