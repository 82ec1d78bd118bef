"""Hostile mail cannot stop, stall or corrupt ingestion (issue 14): a seeded fuzz over every reader.

One seeded generator writes 1,200 messages into a CMU maildir tree, an mbox, an .eml folder, a Kaggle
CSV and a corbt JSONL file: bad and Python-only charsets, lone surrogates, NULs, huge bodies on both
sides of the size limit, broken headers, odd dates, shared and empty Message-IDs, non-UTF-8 file and
folder names, symbolic links in and out of the tree and a named pipe. Every valid message carries a
unique marker in its subject and must be stored; every rejected one must be in ``quarantine`` under
its own source with the expected reason.
"""

from __future__ import annotations

import base64
import json
import os
import quopri
import random
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from env.db import list_inboxes, open_db
from env.ingest import ingest
from env.readers import Limits, storable_name
from env.tools import make_tools

SEED = 1414
MESSAGES = 1200
LIMIT = 128 * 1024
"""``Limits.message_bytes`` for the run: huge bodies are drawn at 0.3-0.8x and 1.3-2x of it."""
MARKER = re.compile(r"fz\d{5}")
WORDS = ["gas", "price", "forecast", "budget", "power", "trade", "houston", "deal", "report", "meeting"]
CHARSETS = [
    "utf-8", "utf-7", "unicode-escape", "raw-unicode-escape", "latin-1", "cp1252", "utf-16", "x-nonsense",
    "rot13", "base64", "idna", "punycode", "undefined", '"utf-8"', "",
]  # fmt: skip
DATES = [
    "Fri, 31 Dec 9999 23:59:59 -1200", "Mon, 1 Jan 0999 00:00:00 +0000", "Sun, 20 Nov 0001 08:05:56 -0800",
    "Sat, 1 Jan 0001 00:00:00 +0100", "Tue, 1 Jan 10000 00:00:00 +0000", "31 Feb 2001 25:61:00 +9999",
    "Thu, 1 Jan 1970 00:00:00 +1400", "garbage", "Mon, 14 May 2001 16:39:00 -0700 (PDT)",
]  # fmt: skip
ISO_DATES = ["9999-12-31T23:59:59-12:00", "0999-01-01", "0001-01-01T00:00:00+01:00", "2001-05-14", "x", None]
INVALID = [  # (raw, reason the quarantine gives)
    (b"", "empty"),
    (b"\x00\x01binary \x00junk\n\nbody", "NUL"),
    (b"just some text without any header\nsecond line\n", "header line"),
    (b"X-Foo: bar\n\nno key headers", "no Message-ID"),
]


@dataclass
class Case:
    """One generated message and what ingestion must do with it."""

    marker: str
    raw: bytes
    reason: str | None = None
    """None: a valid message that must be stored; else a substring of its quarantine reason."""
    source: str = ""


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _body(rng: random.Random, huge: bool) -> bytes:
    if huge:
        over = rng.random() < 0.5
        size = int(LIMIT * (rng.uniform(1.3, 2.0) if over else rng.uniform(0.3, 0.8)))
        return (_words(rng, size // 5) + " ").encode()[:size]
    kind = rng.choice(["text", "utf7", "escape", "nul", "random", "repeat", "from", "utf16"])
    text = _words(rng, rng.randint(5, 60))
    return {
        "text": text.encode(),
        "utf7": f"+2D8- hello {text}".encode(),
        "escape": f"x \\ud800 y {text}".encode(),
        "nul": f"gas\x00{text}\x00".encode(),
        "random": rng.randbytes(rng.randint(1, 3000)),
        "repeat": b"gas " * rng.randint(100, 5000),
        "from": f"{text}\nFrom here on\n>From quoted\n".encode(),
        "utf16": text.encode("utf-16-le")[:-1],
    }[kind]


def _raw(rng: random.Random, n: int) -> Case:
    """A hostile but valid message whose subject starts with its marker, or an invalid one."""
    marker = f"fz{n:05d}"
    if rng.random() < 0.06:
        raw, reason = rng.choice(INVALID)
        return Case(marker, raw, reason)
    tail = rng.choice(
        [
            b" plain",
            b" =?utf-7?B?KzJEOC0=?=",
            b" =?unicode-escape?Q?=5Cud800?=",
            b" \xff\xfe raw",
            b" =?x?Q?a?=",
        ]
    )
    lines = [f"Subject: {marker}".encode() + tail]
    message_id = rng.choice(["own", "shared", "empty", "blank", "missing", "raw8bit"])
    lines += {
        "own": [f"Message-ID: <{marker}@fuzz>".encode()],
        "shared": [f"Message-ID: <shared-{rng.randint(0, 9)}@fuzz>".encode()],
        "empty": [b"Message-ID: <>"],
        "blank": [b"Message-ID: < >"],
        "missing": [],
        "raw8bit": [b"Message-ID: <\xff\xfe@fuzz>"],
    }[message_id]
    senders = [b"From: Jane <jane@example.com>", b'From: "Na\xefve \xff" <x@y>', b"From: <<<>>>"]
    lines.append(rng.choice([*senders, b"From: =?utf-7?B?KzJEOC0=?= <u@v>", b"X-Nothing: here"]))
    date = rng.choice([*DATES, f"{rng.randint(1, 28)} May 2001 10:00:00 -0500", None])
    if date:
        lines.append(f"Date: {date}".encode())
    charset = rng.choice(CHARSETS)
    encoding = rng.choice(["", "quoted-printable", "base64", "base64-broken"])
    huge = rng.random() < 0.04
    body = _body(rng, huge)
    if encoding == "quoted-printable":
        body = quopri.encodestring(body)
    elif encoding.startswith("base64"):
        body = base64.encodebytes(body)[: -3 if encoding == "base64-broken" else None]
    kind = rng.choice(["text/plain", "text/plain", "text/html", "multipart"])
    cte = f"Content-Transfer-Encoding: {encoding.removesuffix('-broken')}".encode() if encoding else b""
    if kind == "multipart":
        lines.append(b'Content-Type: multipart/alternative; boundary="B"')
        part = [b"--B", f"Content-Type: text/plain; charset={charset}".encode(), cte, b"", body]
        body = b"\n".join([*part, b"--B", b"Content-Type: text/html", b"", b"<p>html</p>", b"--B--", b""])
    else:
        lines.append(f"Content-Type: {kind}; charset={charset}".encode())
        lines.append(cte)
    if rng.random() < 0.1:
        lines.append(b"this header line is broken")
    raw = b"\n".join(line for line in lines if line) + b"\n\n" + body
    return Case(marker, raw, "limit" if len(raw) > LIMIT else None)


def _fields(rng: random.Random, n: int) -> tuple[dict | str, Case]:
    """A JSONL row (corbt layout) with hostile strings, or a broken line."""
    marker = f"fz{n:05d}"
    if rng.random() < 0.06:
        line, reason = rng.choice(
            [("{not json", "bad JSON"), ("[1, 2]", "not a JSON object"), ('{"subject": "x"}', "without body")]
        )
        return line, Case(marker, b"", reason)
    huge = rng.random() < 0.04
    body = _body(rng, huge).decode("utf-8", "surrogateescape")
    row = {
        "message_id": rng.choice([f"<{marker}@fuzz>", f"<shared-{rng.randint(0, 9)}@fuzz>", "<>", "", None]),
        "subject": marker + rng.choice(["", " \ud800", " \x00", " \udcff"]),
        "from": rng.choice(["a@b.c", "Bad \ud800 <x@y>", None]),
        "to": rng.choice([["p@q.r"], "s@t.u, v@w.x", None]),
        "date": rng.choice(ISO_DATES),
        "body": body + rng.choice(["", " \ud800", "\x00"]),
        "file_name": rng.choice([f"fuzz-j/inbox/{n}.", f"fuzz-j/f\udcff/{n}.", f"fuzz-j/\ud800/{n}.", None]),
    }
    return row, Case(marker, b"")


def _write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _build(root: Path) -> tuple[list[Path], list[Case]]:
    """Write every container under ``root``; return the paths to ingest and the generated cases."""
    rng = random.Random(SEED)
    maildir = os.fsencode(root / "maildir")
    eml = os.fsencode(root / "fuzz-eml")
    mbox_path, csv_path, jsonl_path = root / "fuzz.mbox", root / "fuzz.csv", root / "fuzz.jsonl"
    cases: list[Case] = []
    mbox: list[bytes] = []
    csv_rows: list[tuple[str, str]] = []
    jsonl: list[bytes] = []
    for n in range(MESSAGES):
        where = rng.choices(["maildir", "mbox", "eml", "csv", "jsonl"], [40, 20, 15, 10, 15])[0]
        if where == "jsonl":
            row, case = _fields(rng, n)
            line = (row if isinstance(row, str) else json.dumps(row)).encode()
            if len(line) > LIMIT:
                case.reason = "limit"
            try:  # the reader names a row by its file_name, else its number; a line it cannot read by line
                decoded = json.loads(line) if case.reason != "limit" else None
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                key = str(decoded.get("file_name") or len(jsonl))
            else:
                key = f"line{len(jsonl) + 1}"
            case.source = f"{storable_name(str(jsonl_path))}#{storable_name(key)}"
            jsonl.append(line)
            cases.append(case)
            continue
        case = _raw(rng, n)
        if where == "csv" and case.reason == "limit":
            where = "maildir"  # a CSV field over the limit stops the csv module: tested on its own below
        if where == "maildir":
            user = rng.choice([b"fuzz-a", b"fuzz-b", b"fuzz-\xff"])
            folder = rng.choice([b"inbox", b"sent", b"f\xfe\xfd"])
            name = b"%d\xff." % n if rng.random() < 0.2 else b"%d." % n
            path = b"/".join([maildir, user, folder, name])
            _write(path, case.raw)
            case.source = storable_name(os.fsdecode(path))
        elif where == "eml":
            path = b"%s/%d.eml" % (eml, n)
            _write(path, case.raw)
            case.source = storable_name(os.fsdecode(path))
        elif where == "mbox":
            case.source = f"{mbox_path}#{len(mbox)}"
            quoted = re.sub(rb"(?m)^(>*From )", rb">\1", case.raw)
            mbox.append(b"From fuzz@example.com Mon Jan  1 00:00:00 2001\n" + quoted + b"\n")
        else:
            name = f"fuzz-c/inbox/{n}."
            case.source = f"{csv_path}#{name}"
            csv_rows.append((name, case.raw.decode("utf-8", "surrogateescape")))
        cases.append(case)
    mbox_path.write_bytes(b"".join(mbox))
    jsonl_path.write_bytes(b"\n".join(jsonl) + b"\n")
    _write_csv(csv_path, csv_rows, cases)
    cases += _links(root, maildir, eml)
    return [root / "maildir", root / "fuzz-eml", mbox_path, csv_path, jsonl_path], cases


def _write_csv(path: Path, rows: list[tuple[str, str]], cases: list[Case]) -> None:
    """Kaggle layout; the last field is over the limit, so the csv module stops there (reported)."""
    import csv

    rows = [*rows, ("fuzz-c/inbox/last.", "Subject: fz99999\n\n" + "gas " * LIMIT)]
    cases.append(Case("fz99999", b"", "cannot read the rest of this csv file", storable_name(str(path))))
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "message"])
        writer.writerows(rows)


def _links(root: Path, maildir: bytes, eml: bytes) -> list[Case]:
    """Symbolic links out of the tree (to a secret, a folder, /dev/zero), one inside it, a named pipe."""
    secret = root / "secret.txt"
    secret.write_bytes(b"Subject: fz88888 secret\nMessage-ID: <secret@x>\n\nthe vault code is 1234\n")
    inbox = maildir + b"/fuzz-a/inbox/"
    cases = []
    for name, target, marker in [
        (b"escape.", os.fsencode(secret), "fz88888"),
        (b"folder.", os.fsencode(root), "fz88887"),
        (b"zero.", b"/dev/zero", "fz88886"),
    ]:
        os.symlink(target, inbox + name)
        cases.append(Case(marker, b"", "symbolic link", storable_name(os.fsdecode(inbox + name))))
    os.symlink(os.fsencode(secret), eml + b"/escape.eml")
    cases.append(Case("fz88885", b"", "symbolic link", storable_name(os.fsdecode(eml + b"/escape.eml"))))
    target = b"Subject: fz77777 linked\nMessage-ID: <linked@x>\nFrom: a@b.c\n\nread once, stored once\n"
    _write(inbox + b"target.", target)
    cases.append(Case("fz77777", target, None, storable_name(os.fsdecode(inbox + b"target."))))
    os.symlink(inbox + b"target.", inbox + b"inside.")  # a link within the tree is read (a duplicate)
    os.mkfifo(inbox + b"pipe.")
    cases.append(Case("fz88884", b"", "not a regular file", storable_name(os.fsdecode(inbox + b"pipe."))))
    return cases


def test_fuzzed_mail_is_stored_or_quarantined_never_fatal(tmp_path: Path) -> None:
    paths, cases = _build(tmp_path)
    db_path = tmp_path / "inbox.db"
    started = time.perf_counter()
    report = ingest(paths, db_path, workers=1, progress=False, limits=Limits(message_bytes=LIMIT))
    seconds = time.perf_counter() - started
    valid = {c.marker for c in cases if c.reason is None}
    rejected = [c for c in cases if c.reason is not None]
    assert len(cases) >= 1000 and len(rejected) >= 60 and report.repaired >= 100
    assert sum(c.reason == "limit" for c in cases) >= 10

    conn = sqlite3.connect(db_path)  # a text value SQLite could not decode would raise here
    subjects = [row[0] for row in conn.execute("select subject from emails")]
    stored = {m for s in subjects for m in MARKER.findall(s)}
    assert valid - stored == set(), "valid messages lost"
    assert stored & {c.marker for c in rejected} == set(), "a rejected message was stored"

    quarantine = dict(conn.execute("select source, reason from quarantine"))
    missing = [(c.source, c.reason) for c in rejected if c.reason not in quarantine.get(c.source, "")]
    assert missing == [], f"rejected without the expected quarantine reason: {missing[:5]}"
    assert all(reason.strip() for reason in quarantine.values())
    assert report.quarantined == len(rejected)

    # Stored text is storable and measurable, dates are instants written with four-digit years.
    for (body,) in conn.execute("select body from emails"):
        assert "\x00" not in body
    dates = [row[0] for row in conn.execute("select date from emails where date is not null")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d) for d in dates)
    assert "0999-01-01T00:00:00Z" in dates
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.execute("insert into emails_fts(emails_fts) values('integrity-check')")
    # Message-IDs shared by different messages were not dedup keys: one row per shared id and inbox.
    shared = conn.execute(
        "select count(*) from emails where message_id like '<shared-%'"
        " group by inbox, message_id having count(*) > 1"
    ).fetchall()
    assert shared == []
    conn.close()

    # Searches over the hostile inboxes work and stay fast.
    db = open_db(db_path)
    for inbox in list_inboxes(db):
        tools = make_tools(db, inbox, "2001-12-31")
        for keywords in (["gas"], ["price", "forecast"], ["fz00001"]):
            started_search = time.perf_counter()
            tools.search_emails(keywords, sent_after="0001-01-01T00:00:00+01:00")
            assert time.perf_counter() - started_search < 0.5
    db.close()

    rerun = ingest(paths, db_path, workers=1, progress=False, limits=Limits(message_bytes=LIMIT))
    assert (rerun.ingested, rerun.duplicate) == (0, 0)
    assert seconds < 60
