"""Ingestion into a real SQLite file: the shipped default inbox, dedup, recipients, reruns, resume, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------------------------------------
# A small literal mailbox tree, in every supported format


def _raw(message_id: str, sender: str, to: str, subject: str, body: str, date: str, extra: str = "") -> bytes:
    head = (
        f"Message-ID: {message_id}\nDate: {date}\nFrom: {sender}\nTo: {to}\nSubject: {subject}\n{extra}"
        "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n"
    )
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body.encode()


SENT = _raw(
    "<s1@x>", "jane.doe@example.com", "bob@example.com", "Pipeline capacity", "Capacity is 50 MMcf/d.\n",
    "Mon, 14 May 2001 16:39:00 -0700", "Cc: carol@example.com\nBcc: dave@example.com\nX-Origin: Doe-J\n",
)  # fmt: skip
SENT_COPY = SENT.replace(b"<s1@x>", b"<s1-copy@x>")  # the Lotus Notes copy in all_documents
INBOX_1 = _raw(
    "<i1@x>", "bob@example.com", "jane.doe@example.com", "Re: Pipeline capacity", "Thanks, got it.\n",
    "Tue, 15 May 2001 09:00:00 -0500",
)  # fmt: skip
INBOX_2 = _raw(
    "<i2@x>", "news@example.com", "all-staff@example.com", "Holiday party", "Friday at 6pm.\n",
    "Wed, 16 May 2001 10:00:00 +0000",
)  # fmt: skip
GARBAGE = b"\x00\x01\x02 not an email \xff\xfe\x00"


def _tree(root: Path) -> Path:
    files = {
        "doe-j/sent/1.": SENT,
        "doe-j/all_documents/1.": SENT_COPY,
        "doe-j/inbox/1.": INBOX_1,
        "doe-j/inbox/2.": INBOX_2,
        "doe-j/inbox/3.": GARBAGE,
        "roe-r/inbox/1.": INBOX_1,  # the same message in another mailbox is that mailbox's own row
    }
    for name, data in files.items():
        path = root / "maildir" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / "maildir"


def _emails(path: Path) -> set[tuple]:
    conn = sqlite3.connect(path)
    rows = conn.execute("select inbox, message_id, subject, from_address, date, body from emails").fetchall()
    conn.close()
    return set(rows)


def test_maildir_tree(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "mail")
    db_path = tmp_path / "inbox.db"
    report = ingest([tree], db_path, progress=False, workers=1)
    assert (report.ingested, report.duplicate, report.quarantined) == (4, 1, 1)
    assert report.inboxes == ["doe-j", "roe-r"]
    db = open_db(db_path)
    doe = get_inbox(db, "doe-j")
    assert doe.addresses == ("jane.doe@example.com",)  # the sender of its sent folder
    assert doe.message_count == 3
    assert (doe.first_date, doe.last_date) == ("2001-05-14T23:39:00Z", "2001-05-16T10:00:00Z")
    assert get_inbox(db, "roe-r").addresses == ("jane.doe@example.com",)  # no sent mail: top recipient
    # the distribution-list message has no owner address in its headers but is in the inbox
    party = "select count(*) from emails where inbox = 'doe-j' and subject = 'Holiday party'"
    assert db.execute(party).fetchone() == (1,)
    copies = resolve_message_ids(db, "doe-j", ["<s1@x>", "<s1-copy@x>"])
    assert len(copies) == 2 and len(set(copies.values())) == 1
    folders = dict(db.execute("select message_id, folder from message_ids where inbox = 'doe-j'").fetchall())
    assert folders["<s1@x>"] == "sent" and folders["<s1-copy@x>"] == "all_documents"
    # recipients round-trip, kinds kept apart
    rows = db.execute(
        "select r.kind, r.address from recipients r join message_ids m on m.email_id = r.email_id"
        " where m.inbox = 'doe-j' and m.message_id = '<s1@x>' order by r.rowid"
    ).fetchall()
    assert rows == [("to", "bob@example.com"), ("cc", "carol@example.com"), ("bcc", "dave@example.com")]
    # quarantine keeps the path and the reason
    (source, inbox, reason) = db.execute("select source, inbox, reason from quarantine").fetchone()
    assert source == str(tree / "doe-j" / "inbox" / "3.") and inbox == "doe-j" and "NUL" in reason
    # the FTS index is in sync and finds the body
    hits = db.execute("select rowid from emails_fts where emails_fts match 'capacity'").fetchall()
    assert len(hits) == 3  # doe-j's sent message and reply, roe-r's reply


def test_rerun_new_mail_and_fixed_quarantine(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "mail")
    db_path = tmp_path / "inbox.db"
    ingest([tree], db_path, progress=False, workers=1)
    before = _counts(db_path)
    again = ingest([tree], db_path, progress=False, workers=1)
    assert (again.ingested, again.duplicate, again.quarantined, again.skipped_sources) == (0, 0, 0, 6)
    assert _counts(db_path) == before
    # new mail: only it is read; a fixed file leaves the quarantine
    new = _raw(
        "<i4@x>",
        "eve@example.com",
        "jane.doe@example.com",
        "New",
        "Brand new.\n",
        "Thu, 17 May 2001 10:00:00 +0000",
    )
    (tree / "doe-j" / "inbox" / "4.").write_bytes(new)
    fixed = _raw(
        "<i3@x>",
        "fay@example.com",
        "jane.doe@example.com",
        "Fixed",
        "Now readable.\n",
        "Thu, 17 May 2001 11:00:00 +0000",
    )
    (tree / "doe-j" / "inbox" / "3.").write_bytes(fixed)
    third = ingest([tree], db_path, progress=False, workers=1)
    assert (third.ingested, third.duplicate, third.quarantined, third.skipped_sources) == (2, 0, 0, 5)
    after = _counts(db_path)
    assert after["emails"] == before["emails"] + 2 and after["quarantine"] == 0
    assert get_inbox(open_db(db_path), "doe-j").last_date == "2001-05-17T11:00:00Z"


def _write_formats(tmp_path: Path, tree: Path) -> dict[str, Path]:
    import csv
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from env.parse import parse_message

    out: dict[str, Path] = {}
    out["tar"] = tmp_path / "mail.tar.gz"
    with tarfile.open(out["tar"], "w:gz") as archive:
        archive.add(tree, arcname="maildir")
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    out["csv"] = tmp_path / "emails.csv"
    with out["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "message"])
        for p in files:
            writer.writerow([p.relative_to(tree).as_posix(), p.read_bytes().decode("latin-1")])
    rows = []
    for p in files:
        if p.read_bytes() == GARBAGE:
            continue
        r = parse_message(p.read_bytes())
        rows.append(
            {
                "message_id": r.message_id,
                "subject": r.subject,
                "from": r.from_address,
                "to": [a for a, _ in r.to],
                "cc": [a for a, _ in r.cc],
                "bcc": [a for a, _ in r.bcc],
                "date": r.date.replace("T", " ").rstrip("Z"),
                "body": r.body,
                "file_name": p.relative_to(tree).as_posix(),
            }
        )
    out["jsonl"] = tmp_path / "emails.jsonl"
    out["jsonl"].write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    out["parquet"] = tmp_path / "emails.parquet"
    empty = {**rows[0], "message_id": "<empty@x>", "from": None, "body": None, "file_name": "doe-j/inbox/9."}
    pq.write_table(pa.Table.from_pylist([*rows, empty]), out["parquet"])
    mbox = tmp_path / "doe.mbox"
    with mbox.open("wb") as f:
        for p in files:
            if p.parts[-3] == "doe-j":
                f.write(
                    b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
                    + p.read_bytes().replace(b"\r\n", b"\n")
                    + b"\n"
                )
    out["mbox"] = mbox
    eml = tmp_path / "eml"
    eml.mkdir()
    for p in files:
        if p.parts[-3] == "doe-j":
            (eml / f"{p.parts[-2]}-{p.name}eml").write_bytes(p.read_bytes())
    out["eml"] = eml
    return out


def test_every_format_gives_the_same_emails(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "mail")
    reference = tmp_path / "maildir.db"
    ingest([tree], reference, progress=False, workers=1)
    expected = _emails(reference)
    paths = _write_formats(tmp_path, tree)
    for fmt in ("tar", "csv", "jsonl", "parquet"):
        db_path = tmp_path / f"{fmt}.db"
        report = ingest([paths[fmt]], db_path, progress=False, workers=1)
        assert _emails(db_path) == expected, fmt
        assert report.quarantined == 1, fmt  # the garbage file, the bad JSON line, the empty row
        assert _counts(db_path)["recipients"] == _counts(reference)["recipients"], fmt
    doe = {row[1:] for row in expected if row[0] == "doe-j"}
    for fmt in ("mbox", "eml"):
        db_path = tmp_path / f"{fmt}.db"
        report = ingest([paths[fmt]], db_path, progress=False, workers=1, inbox="jane")
        assert {row[1:] for row in _emails(db_path)} == doe, fmt
        assert (report.ingested, report.duplicate, report.quarantined) == (3, 1, 1), fmt
        assert [b.id for b in list_inboxes(open_db(db_path))] == ["jane"]
    # --format overrides detection: a tar read as mbox is quarantined, not crashed on
    report = ingest([paths["tar"]], tmp_path / "forced.db", fmt="mbox", progress=False, workers=1)
    assert report.ingested == 0 and report.quarantined >= 1


def test_pool_matches_in_process(tmp_path: Path, default_db_path: Path) -> None:
    """Two worker processes give exactly the rows one process gives (the fixture used the default)."""
    db_path = tmp_path / "one.db"
    ingest([default_inbox_archive()], db_path, progress=False, workers=1)
    assert _emails(db_path) == _emails(default_db_path)
    assert _counts(db_path) == _counts(default_db_path)


# ---------------------------------------------------------------------------------------------
# Interruptions: Ctrl-C and a killed process leave a usable DB; the rerun completes it


def _assert_consistent(path: Path) -> None:
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.execute("insert into emails_fts(emails_fts) values('integrity-check')")  # raises if out of sync
    n_emails = conn.execute("select count(*) from emails").fetchone()[0]
    assert conn.execute("select count(*) from emails_fts").fetchone()[0] == n_emails
    orphans = "select count(*) from message_ids where email_id not in (select id from emails)"
    assert conn.execute(orphans).fetchone() == (0,)
    conn.close()


def test_ctrl_c_then_resume(tmp_path: Path, default_db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import env.ingest as ingest_module

    parse_batch = ingest_module._parse_batch
    calls = {"n": 0}

    def interrupted(items):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return parse_batch(items)

    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 250)
    monkeypatch.setattr(ingest_module, "COMMIT_EVERY", 1000)
    monkeypatch.setattr(ingest_module, "_parse_batch", interrupted)
    db_path = tmp_path / "inbox.db"
    with pytest.raises(KeyboardInterrupt):
        ingest([default_inbox_archive()], db_path, progress=False, workers=1)
    _assert_consistent(db_path)
    partial = _counts(db_path)
    assert partial["sources"] == 2000  # 8 batches parsed, 2 commits of 1,000
    assert 0 < partial["emails"] < _counts(default_db_path)["emails"]
    assert [b.message_count for b in list_inboxes(open_db(db_path))] == [partial["emails"]]  # counted

    monkeypatch.setattr(ingest_module, "_parse_batch", parse_batch)
    report = ingest([default_inbox_archive()], db_path, progress=False, workers=1)
    assert report.skipped_sources == 2000
    assert report.ingested + report.duplicate == 5519 - 2000
    _assert_consistent(db_path)
    assert _counts(db_path) == _counts(default_db_path)
    assert _emails(db_path) == _emails(default_db_path)


@pytest.mark.slow
def test_killed_process_then_resume(tmp_path: Path, default_db_path: Path) -> None:
    """SIGKILL the whole process group (main and workers) mid-run; the next run completes the DB."""
    db_path = tmp_path / "inbox.db"
    script = (
        "import env.ingest as m; m.BATCH_SIZE = 50; m.COMMIT_EVERY = 200; "
        f"m.ingest([m.default_inbox_archive()], {str(db_path)!r}, progress=False, workers=2)"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, start_new_session=True)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            conn = sqlite3.connect(db_path, timeout=1)
            committed = conn.execute("select count(*) from sources").fetchone()[0]
            conn.close()
        except sqlite3.OperationalError:
            continue
        if committed >= 600:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    _assert_consistent(db_path)
    report = ingest([default_inbox_archive()], db_path, progress=False, workers=2)
    assert report.skipped_sources >= 600
    _assert_consistent(db_path)
    assert _counts(db_path) == _counts(default_db_path)
    assert _emails(db_path) == _emails(default_db_path)


def test_cli(tmp_path: Path, default_db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    runner = CliRunner()
    tree = _tree(tmp_path / "mail")
    db_path = tmp_path / "cli.db"
    result = runner.invoke(cli, ["ingest", str(tree), "--db", str(db_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    for text in (
        "ingested",
        "duplicate",
        "quarantined",
        "doe-j",
        "jane.doe@example.com",
        "1 message(s) in quarantine",
    ):
        assert text in result.output
    assert _counts(db_path)["emails"] == 4
    # no PATH: the default inbox into $INBOXRL_HOME/inbox.db (already there: nothing to do)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(default_db_path, home / "inbox.db")
    monkeypatch.setenv("INBOXRL_HOME", str(home))
    result = runner.invoke(cli, ["ingest"])
    assert result.exit_code == 0, result.output
    assert "allen-p" in result.output and "phillip.allen@enron.com" in result.output
    assert _counts(home / "inbox.db") == _counts(default_db_path)
    # errors say what to do and exit 1
    result = runner.invoke(cli, ["ingest", str(tmp_path / "missing"), "--db", str(db_path)])
    assert result.exit_code == 1 and "No such file" in result.output
    result = runner.invoke(cli, ["ingest", str(tree), "--db", str(db_path), "--format", "pst"])
    assert result.exit_code == 1 and "use one of" in result.output
    odd = tmp_path / "notes.bin"
    odd.write_bytes(b"\x00\x01")
    result = runner.invoke(cli, ["ingest", str(odd), "--db", str(db_path)])
    assert result.exit_code == 1 and "--format" in result.output


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "enron" / "enron-maildir-sample.tar.gz"


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data/enron")
def test_shared_sample(tmp_path: Path) -> None:
    db_path = tmp_path / "shared.db"
    report = ingest([SHARED], db_path, progress=False)
    assert report.messages == 22882 and report.quarantined == 0
    db = open_db(db_path)
    boxes = {b.id: b for b in list_inboxes(db)}
    assert len(boxes) == 9
    assert _counts(db_path)["message_ids"] == 22882  # every Message-ID resolves
    # distinct messages by Date, From, Subject and body, as the sample's README counts them
    assert boxes["allen-p"].message_count == 1397
    assert boxes["fossum-d"].message_count == 1551
    assert boxes["presto-k"].addresses[:2] == ("kevin.presto@enron.com", "m..presto@enron.com")
    for box in boxes.values():
        assert box.addresses[0].split("@")[0].endswith(box.id.split("-")[0]), box
        assert "1999-01-01" < box.first_date < box.last_date < "2003-01-01", box
    _assert_consistent(db_path)


def test_truncated_archive_is_quarantined_and_the_run_goes_on(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "mail")
    archive = _write_formats(tmp_path, tree)["tar"]
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    (tmp_path / "more").mkdir()
    mbox = _write_formats(tmp_path / "more", tree)["mbox"]
    db_path = tmp_path / "inbox.db"
    report = ingest([truncated, mbox], db_path, progress=False, workers=1)
    assert report.quarantined >= 1
    reasons = dict(open_db(db_path).execute("select source, reason from quarantine").fetchall())
    assert "cannot read the rest of this tar file" in reasons[str(truncated)]
    assert {"doe"} <= {b.id for b in list_inboxes(open_db(db_path))}  # the next path was still read
    # the archive is not marked finished: a repaired copy is read again
    truncated.write_bytes(archive.read_bytes())
    again = ingest([truncated], db_path, progress=False, workers=1)
    assert again.ingested >= 1
    assert str(truncated) not in dict(
        open_db(db_path).execute("select source, reason from quarantine").fetchall()
    )


# ---- issue 14: hostile mail cannot stop, stall or corrupt ingestion ----


def _file(path: bytes | Path, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.fsencode(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_undecodable_mail_and_names_do_not_stop_ingestion(tmp_path: Path) -> None:
    """Item 1: a utf-7 surrogate, a ``\\ud800`` JSON escape and non-UTF-8 names are stored, reruns too."""
    tree = _tree(tmp_path / "mail")
    _file(
        tree / "doe-j" / "inbox" / "9.",
        b"Subject: utf7\nContent-Type: text/plain; charset=utf-7\n\n+2D8- hello",
    )
    _file(os.fsencode(tree / "doe-j") + b"/f\xfe/4\xff.", b"Subject: odd name\n\nbytes in the name")
    jsonl = tmp_path / "rows.jsonl"
    row = {"subject": "json \ud800", "from": "a@b.c", "body": "x \ud800 y", "file_name": "jay-j/in\udcff/1."}
    jsonl.write_text(json.dumps(row) + "\n")
    db_path = tmp_path / "inbox.db"
    report = ingest([tree, jsonl], db_path, progress=False, workers=1)
    assert (report.ingested, report.quarantined, report.repaired) == (7, 1, 2)
    db = open_db(db_path)
    subjects = {row[0] for row in db.execute("select subject from emails")}
    assert {"utf7", "odd name", "json \ufffd"} <= subjects
    folder, source = db.execute(
        "select folder, source_file from emails where subject = 'odd name'"
    ).fetchone()
    assert folder == "f\\xfe" and source.endswith("/f\\xfe/4\\xff.")
    assert db.execute("select folder from emails where inbox = 'jay-j'").fetchone() == ("in\\xff",)
    db.close()
    again = ingest([tree, jsonl], db_path, progress=False, workers=1)
    assert (again.ingested, again.duplicate, again.quarantined) == (0, 0, 0)


def test_a_reused_message_id_does_not_hide_the_real_email(tmp_path: Path) -> None:
    """Item 6: Message-IDs dedup only when the content agrees; ``<>`` is no id."""
    from env.tools import make_tools

    tree = tmp_path / "maildir"
    for n in range(5):  # all_documents is read before inbox: the forgeries come first
        real = _raw(
            f"<real{n}@x>",
            "bob@x.com",
            "jane@x.com",
            f"Real {n}",
            f"real body {n}\n",
            "1 May 2001 10:00 -0000",
        )
        forged = real.replace(b"real body", b"forged body").replace(b"Real", b"Forged")
        _file(tree / "doe-j" / "all_documents" / f"{n + 1}.", forged)
        _file(tree / "doe-j" / "inbox" / f"{n + 1}.", real)
        _file(tree / "doe-j" / "sent" / f"{n + 1}.", real)  # a true copy: same id, same content
    for n in range(3):
        _file(
            tree / "doe-j" / "notes" / f"{n + 1}.", f"Message-ID: <>\nSubject: note {n}\n\nnote {n}".encode()
        )
    db_path = tmp_path / "inbox.db"
    report = ingest([tree], db_path, progress=False, workers=1)
    assert (report.ingested, report.duplicate) == (13, 5)
    db = open_db(db_path)
    bodies = {row[0] for row in db.execute("select body from emails")}
    assert {f"real body {n}\n" for n in range(5)} <= bodies
    assert {f"forged body {n}\n" for n in range(5)} <= bodies
    assert {f"note {n}" for n in range(3)} <= bodies
    tools = make_tools(db, "doe-j", None)
    [hit] = tools.search_emails(["real body 3"])
    assert tools.read_email(hit["message_id"])["body"] == "real body 3\n"
    assert hit["message_id"].endswith("@inboxrl.invalid>")  # its id was taken by the forgery
    assert db.execute("select count(*) from emails where message_id = '<>'").fetchone() == (0,)


def test_symlinks_do_not_escape_the_ingested_tree(tmp_path: Path) -> None:
    """Item 8: a link out of the tree is quarantined unread; a link inside it is read."""
    from env.tools import make_tools

    tree = _tree(tmp_path / "mail")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(
        _raw("<s@x>", "a@x", "b@x", "Vault", "the vault code is 1234\n", "1 May 2001 10:00 -0000")
    )
    (tree / "doe-j" / "inbox" / "7.").symlink_to(secret)
    (tree / "doe-j" / "inbox" / "8.").symlink_to(tmp_path)  # a folder out of the tree
    (tree / "doe-j" / "inbox" / "9.").symlink_to(tree / "roe-r" / "inbox" / "1.")  # inside: read
    os.mkfifo(tree / "doe-j" / "inbox" / "10.")  # a named pipe must not block the run
    db_path = tmp_path / "inbox.db"
    report = ingest([tree], db_path, progress=False, workers=1)
    db = open_db(db_path)
    assert make_tools(db, "doe-j", None).search_emails(["vault"]) == []
    reasons = dict(db.execute("select source, reason from quarantine").fetchall())
    inbox = tree / "doe-j" / "inbox"
    assert "symbolic link out of the ingested tree" in reasons[str(inbox / "7.")]
    assert "symbolic link out of the ingested tree" in reasons[str(inbox / "8.")]
    assert "not a regular file" in reasons[str(inbox / "10.")]
    assert report.quarantined == 4  # the three above and the tree's own garbage file
    read = "select messages from sources where path = ?"  # read and parsed (a copy of doe-j's inbox/1.)
    assert db.execute(read, [str(inbox / "9.")]).fetchone() == (1,)


def test_size_limits_quarantine_instead_of_reading(tmp_path: Path) -> None:
    """Item 8: messages over Limits.message_bytes are quarantined in every reader, the rest is read."""
    import tarfile

    from env.readers import Limits

    small, big = INBOX_1, INBOX_2 + b"x" * 5_000
    tree = tmp_path / "maildir"
    _file(tree / "doe-j" / "inbox" / "1.", small)
    _file(tree / "doe-j" / "inbox" / "2.", big)
    mbox = tmp_path / "box.mbox"
    mbox.write_bytes(b"".join(b"From a@x Mon Jan  1 00:00:00 2001\n" + m + b"\n" for m in (big, small)))
    archive = tmp_path / "mail.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="maildir")
    jsonl = tmp_path / "rows.jsonl"
    rows = [
        {"subject": "long", "from": "a@b.c", "body": "y" * 5_000},
        {"subject": "ok", "from": "a@b.c", "body": "k"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    limits = Limits(message_bytes=4_000)
    db_path = tmp_path / "inbox.db"
    report = ingest([tree, mbox, archive, jsonl], db_path, progress=False, workers=1, limits=limits)
    assert report.quarantined == 4
    reasons = dict(open_db(db_path).execute("select source, reason from quarantine").fetchall())
    assert all("over the 4,000-byte limit" in reason for reason in reasons.values()), reasons
    assert set(reasons) == {
        str(tree / "doe-j" / "inbox" / "2."),
        f"{mbox}#0",
        f"{archive}#maildir/doe-j/inbox/2.",
        f"{jsonl}#line1",
    }
    subjects = {row[0] for row in open_db(db_path).execute("select subject from emails")}
    assert subjects == {"Re: Pipeline capacity", "ok"}
    # A container over Limits.container_bytes is not read at all; the run goes on.
    other = tmp_path / "other.db"
    report = ingest([mbox, tree], other, progress=False, workers=1, limits=Limits(container_bytes=1_000))
    reasons = dict(open_db(other).execute("select source, reason from quarantine").fetchall())
    assert "OverLimit" in reasons[str(mbox)] and report.ingested == 2
