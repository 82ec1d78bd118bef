"""Ingest mailboxes into the inbox DB: ``ingest(paths, db_path)``; the CLI is ``inboxrl ingest``.

How it works:

1. A reader (``env.readers``) lists the messages under each path with the key of their source.
   Sources already recorded in ``sources`` with the same size and mtime are skipped (files are
   stat-ed by the workers), so a rerun resumes where an interrupted one stopped and new mail adds
   only new messages.
2. Worker processes (one per CPU) read and parse batches of messages (``env.parse``).
3. The main process, the only writer, deduplicates within each mailbox, first by Message-ID, then
   by content hash (Lotus Notes copies of one message under several Message-IDs become one
   ``emails`` row plus one ``message_ids`` row per copy), and writes emails, recipients,
   Message-IDs, quarantine and sources in one transaction per ``COMMIT_EVERY`` messages. The same
   transaction adds the new rows to the FTS5 index (see ``_Writer.flush``), so every committed
   state is consistent: a crash or Ctrl-C loses at most the uncommitted batch.
4. Inbox rows (owner addresses, message count, date range) are a function of the stored rows
   (``refresh_inbox``; the X-Origin counts it ranks owner aliases by are stored in
   ``inbox_origins``): the transaction that writes a batch also recomputes the rows of the inboxes
   it changed, so no committed state, even one left by ``kill -9``, has a stale inbox row. At the
   end of every completed run the inboxes touched by the run and any inbox whose row disagrees with
   its emails (a DB left stale by an older version) are recomputed again.
5. Ctrl-C: workers ignore SIGINT (a terminal sends it to the whole process group), so only the
   main process stops; it rolls back the open batch and stops the pool within
   ``POOL_STOP_TIMEOUT`` seconds, killing workers that do not stop (``_stop_pool``).
6. A worker that dies (killed, out of memory) stops the run with :class:`WorkerDied` (the same
   roll-back; a rerun resumes) instead of a wait forever for the batch it held.

Owner addresses: the senders of the mailbox's sent folders (``sent``, ``_sent_mail``,
``sent_items``, ...) with at least 5% of its sent mail, plus any sent-folder sender whose address
carries the mailbox owner's surname (from ``X-Origin``, e.g. ``Presto-K``, or the mailbox key).
Addresses matching surname and first initial come first (``kevin.presto`` before ``m..presto``).
A mailbox without sent mail falls back to its most frequent recipient(s).

Date range: ``emails.date`` keeps each message's own date, but ``first_date``/``last_date`` ignore
dates before 1985 (the 1979-12-31/1980-01-01 and 1970 placeholders), dates in the future, and a
head or tail of fewer than 5% of the dated messages separated from the rest by more than a year
(the bogus 2004 dates of the Enron corpus).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from env.parse import EmailRecord, ParseError, parse_fields, parse_message, synthetic_message_id
from env.readers import (
    CONTAINER_FORMATS,
    Item,
    Limits,
    detect_format,
    iter_items,
    read_message_file,
    storable_name,
)

BATCH_SIZE = 1000
"""Messages per worker task (larger batches cut the pool's per-task overhead in the main process)."""
COMMIT_EVERY = 5000
"""Messages per write transaction (a crash loses at most this much work); the environment variable
``INBOXRL_INGEST_COMMIT_EVERY`` overrides it."""
CRASH_ENV = "INBOXRL_INGEST_CRASH"
"""Test hook (tests/test_ingest_kill.py): ``before-commit:N`` or ``after-commit:N`` makes the ingest
SIGKILL itself just before or just after the commit of its Nth write transaction, as ``kill -9``
would; ``finish`` (the end-of-run inbox recompute) counts as a transaction. Unset: no effect."""
WORKER_CHECK_S = 0.5
"""How often a wait for parse results checks that no worker died."""
POOL_STOP_TIMEOUT = 5.0
"""Seconds the main process waits for the worker pool to stop before killing the workers."""
_INBOX_CACHE_SIZE = 4


@dataclass
class IngestReport:
    """What one ``ingest`` call did."""

    db_path: Path
    ingested: int = 0
    """New distinct messages written to ``emails``."""
    duplicate: int = 0
    """Messages already in their mailbox (same Message-ID, or same content under another id)."""
    quarantined: int = 0
    """Messages that could not be parsed (see the ``quarantine`` table)."""
    skipped_sources: int = 0
    """Sources (files, archive members, whole containers) already ingested and unchanged."""
    repaired: int = 0
    """Messages read with characters replaced by U+FFFD (undecodable text, NULs; see ``env.parse``)."""
    inboxes: list[str] = field(default_factory=list)
    """Inboxes that received messages in this run."""
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        """Messages read in this run."""
        return self.ingested + self.duplicate + self.quarantined


def default_inbox_archive() -> Path:
    """The default inbox shipped with InboxRL: three Enron mailboxes (allen-p, south-s, grigsby-m)."""
    return Path(str(resources.files("env") / "data" / "default_maildir.tar.gz"))


# ---------------------------------------------------------------------------------------------
# Parsing (runs in worker processes)

_Parsed = tuple[str, str, str, str, str | None, str, str, str, tuple[tuple[str, str, str], ...], int]
"""message_id, subject, from_address, from_name, date, body, content_hash, origin, recipients, repaired."""
_Result = tuple[str, str, str, int, float, _Parsed | None, str | None]
"""source, mailbox, folder, size, mtime, parsed fields (None when quarantined), error."""


def _flat(record: EmailRecord) -> _Parsed:
    """Plain tuples pickle several times faster than the dataclass (the main process unpickles)."""
    return (
        record.message_id,
        record.subject,
        record.from_address,
        record.from_name,
        record.date,
        record.body,
        record.content_hash,
        record.origin,
        tuple(record.recipients()),
        record.repaired,
    )


_SKIPPED = "\x00skipped"
"""The error value of a result whose source was already ingested unchanged."""


_Task = tuple[str, str, str, int, float, str | None, bytes | None, dict | None, int, tuple[int, float] | None]
"""An Item as a plain tuple (dataclass pickling is slow) plus the (size, mtime) its source was
recorded with, if any."""


def _task(item: Item, known: tuple[int, float] | None) -> _Task:
    return (
        item.source,
        item.mailbox,
        item.folder,
        item.size,
        item.mtime,
        item.path,
        item.data,
        item.fields,
        item.limit,
        known,
    )


def _parse_item(task: _Task) -> _Result:
    """Parse one message; an unstat-ed file equal to its ``known`` (size, mtime) is skipped unread."""
    source, mailbox, folder, size, mtime, path, raw, fields, limit, known = task
    record: EmailRecord | None = None
    error: str | None = None
    try:
        if fields is not None:
            record = parse_fields(fields)
        else:
            if raw is None:
                path = path or source
                if size < 0:
                    stat = os.stat(path)
                    size, mtime = stat.st_size, stat.st_mtime
                    if known == (size, mtime):
                        return (source, mailbox, folder, size, mtime, None, _SKIPPED)
                raw = read_message_file(path, limit)
            record = parse_message(raw)
    except ParseError as e:
        error = str(e)
    except Exception as e:  # a malformed message must never stop the run
        error = f"{type(e).__name__}: {e}"
    parsed = _flat(record) if record is not None else None
    return (source, mailbox, folder, max(size, 0), mtime, parsed, error)


def _parse_batch(batch: list[_Task]) -> list[_Result]:
    return [_parse_item(task) for task in batch]


# ---------------------------------------------------------------------------------------------
# Owner addresses and date ranges

_SENT_NAMES = frozenset(
    ("sent", "sent_mail", "sent_items", "sent items", "sent mail", "sent messages", "outbox")
)


def is_sent_folder(folder: str) -> bool:
    """Whether a folder holds the owner's sent mail.

    >>> [is_sent_folder(f) for f in ("_sent_mail", "sent_items", "Sent", "inbox", "all_documents")]
    [True, True, True, False, False]
    """
    name = folder.replace("\\", "/").rsplit("/", 1)[-1].strip("_ .").lower()
    return name in _SENT_NAMES or name.startswith(("sent_", "sent "))


def _origin_name(origin: str) -> tuple[str, str] | None:
    """``(surname, first initial)`` from a CMU mailbox key or X-Origin such as ``Presto-K``."""
    match = re.fullmatch(r"([a-z']+)[-_ ]([a-z])", origin.strip().lower())
    return (match.group(1), match.group(2)) if match else None


def owner_addresses(sent: Counter, recipients: Counter, origin: str = "") -> list[str]:
    """The mailbox owner's addresses, primary first.

    :param sent: sender address counts over the mailbox's sent folders.
    :param recipients: recipient address counts over the whole mailbox (used without sent mail).
    :param origin: the owner's ``X-Origin`` or mailbox key (``presto-k``), to rank aliases.

    >>> owner_addresses(Counter({"m..presto@enron.com": 783, "kevin.presto@enron.com": 170,
    ...                          "jae.black@enron.com": 3}), Counter(), "Presto-K")
    ['kevin.presto@enron.com', 'm..presto@enron.com']
    >>> owner_addresses(Counter(), Counter({"ann@x.com": 40, "bob@x.com": 3}))
    ['ann@x.com']
    """
    sent = Counter({a: n for a, n in sent.items() if a})
    recipients = Counter({a: n for a, n in recipients.items() if a})
    name = _origin_name(origin)

    def rank(address: str) -> int:
        if not name:
            return 2
        tokens = [t for t in re.split(r"[._\-]+", address.split("@", 1)[0]) if t]
        if name[0] not in tokens:
            return 2
        first = tokens[0]
        return 0 if first != name[0] and first.startswith(name[1]) else 1

    total = sum(sent.values())
    threshold = max(2.0, 0.05 * total) if total >= 20 else 1.0
    chosen = [a for a, n in sent.most_common() if n >= threshold or (rank(a) < 2 and n >= 2)]
    if not chosen and recipients:
        top = recipients.most_common(3)
        chosen = [a for a, n in top if n >= 0.5 * top[0][1]]
    counts = sent + recipients
    return sorted(chosen, key=lambda a: (rank(a), -counts[a], a))


def date_range(dates: Iterable[str], *, now: datetime | None = None) -> tuple[str | None, str | None]:
    """First and last plausible date of a mailbox (see the module docstring for what is ignored).

    >>> date_range(["1980-01-01T00:00:00Z"] + ["2001-05-%02dT00:00:00Z" % d for d in range(1, 29)]
    ...            + ["2004-02-03T00:00:00Z"])
    ('2001-05-01T00:00:00Z', '2001-05-28T00:00:00Z')
    """
    limit = ((now or datetime.now(UTC)) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kept = sorted(d for d in dates if d and d[:4] >= "1985" and d <= limit)
    if not kept:
        return None, None
    small = max(1, int(0.05 * len(kept)))

    def gap(a: str, b: str) -> float:
        return (_to_dt(b) - _to_dt(a)).days

    changed = True
    while changed and len(kept) > 1:
        changed = False
        for i in range(1, min(small, len(kept) - 1) + 1):
            if gap(kept[-i - 1], kept[-i]) > 365:
                kept = kept[:-i]
                changed = True
                break
            if gap(kept[i - 1], kept[i]) > 365:
                kept = kept[i:]
                changed = True
                break
    return kept[0], kept[-1]


def _to_dt(iso: str) -> datetime:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Writing (main process)


class _Writer:
    """Deduplicates parsed messages and writes them, one transaction per ``flush``."""

    def __init__(self, db_path: Path, report: IngestReport) -> None:
        from env.db import open_db  # here, not at module level: workers import this module, light

        self.db = open_db(db_path, create=True)
        self.conn = self.db.conn
        self.conn.execute("PRAGMA synchronous=NORMAL")
        # The writer creates every inbox and email row before the rows that point at them, in the
        # same transaction; per-row foreign-key look-ups would only cost time (tests check orphans).
        self.conn.execute("PRAGMA foreign_keys=OFF")
        self.conn.execute("PRAGMA cache_size=-200000")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        self.conn.execute("PRAGMA wal_autocheckpoint=10000")  # fewer rewrites of hot index pages
        self.report = report
        self.next_id = self.conn.execute("select coalesce(max(id), 0) + 1 from emails").fetchone()[0]
        self.has_quarantine = self.conn.execute("select count(*) from quarantine").fetchone()[0] > 0
        self.known_inboxes = {row[0] for row in self.conn.execute("select id from inboxes")}
        self.fts_triggers = [
            (name, sql)
            for name, sql in self.conn.execute(
                "select name, sql from sqlite_master where type = 'trigger' and tbl_name = 'emails'"
            )
            if "emails_fts" in sql and "after insert" in " ".join(sql.lower().split())
        ]
        fts_columns = [row[1] for row in self.conn.execute("pragma table_info(emails_fts)")]
        columns = ", ".join(f'"{c}"' for c in fts_columns)
        self.fts_insert = (
            f"insert into emails_fts (rowid, {columns}) select id, {columns} from emails"
            " where id between ? and ?"
        )
        self.touched: dict[str, Counter] = {}
        self.committed_origins: dict[str, Counter] = {}
        self.conn.execute(
            "create table if not exists inbox_origins (inbox text not null, origin text not null,"
            " messages integer not null, primary key (inbox, origin))"
        )
        self.conn.commit()
        self.commit_every = int(os.environ.get("INBOXRL_INGEST_COMMIT_EVERY") or COMMIT_EVERY)
        self.transactions = 0
        self.crash = _crash_point(os.environ.get(CRASH_ENV, ""))
        self.cache: OrderedDict[str, tuple[dict[str, int], dict[str, int]]] = OrderedDict()
        self._clear()

    def _clear(self) -> None:
        self.emails: list[tuple] = []
        self.message_ids: list[tuple] = []
        self.recipients: list[tuple] = []
        self.sources: list[tuple] = []
        self.quarantine: list[tuple] = []
        self.unquarantine: list[tuple] = []
        self.pending = 0

    def pending_items(self, items: list[Item]) -> list[_Task]:
        """The items to parse, each with the (size, mtime) its source was recorded with, if any.

        Items whose size is known are dropped here when unchanged; files not yet stat-ed are
        checked by the worker, which stats them anyway.
        """
        if not items:
            return []
        marks = ", ".join("?" for _ in items)
        rows = self.conn.execute(
            f"select path, size, mtime from sources where path in ({marks})", [i.source for i in items]
        ).fetchall()
        done = {path: (size, mtime) for path, size, mtime in rows}
        todo = [
            _task(i, done.get(i.source))
            for i in items
            if i.size < 0 or done.get(i.source) != (i.size, i.mtime)
        ]
        self.report.skipped_sources += len(items) - len(todo)
        return todo

    def _inbox_keys(self, inbox: str) -> tuple[dict[str, int], dict[str, int]]:
        if inbox in self.cache:
            self.cache.move_to_end(inbox)
            return self.cache[inbox]
        ids = dict(self.conn.execute("select message_id, email_id from message_ids where inbox = ?", [inbox]))
        hashes = dict(self.conn.execute("select content_hash, id from emails where inbox = ?", [inbox]))
        self.cache[inbox] = (ids, hashes)
        while len(self.cache) > _INBOX_CACHE_SIZE:
            self.cache.popitem(last=False)
        return ids, hashes

    def _ensure_inbox(self, inbox: str) -> None:
        if inbox not in self.known_inboxes:
            self.conn.execute(
                "insert or ignore into inboxes (id, name, addresses, message_count) values (?, ?, '[]', 0)",
                [inbox, inbox],
            )
            self.known_inboxes.add(inbox)
        if inbox not in self.touched:
            self.touched[inbox] = Counter()

    def add(self, result: _Result) -> None:
        source, inbox, folder, size, mtime, parsed, error = result
        if error == _SKIPPED:
            self.report.skipped_sources += 1
            return
        self._ensure_inbox(inbox)
        self.pending += 1
        if parsed is None:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.quarantine.append((source, inbox, storable_name(error or "unreadable"), now))
            self.sources.append((source, size, mtime, 0))
            self.report.quarantined += 1
            return
        if self.has_quarantine:
            self.unquarantine.append((source,))
        self.sources.append((source, size, mtime, 1))
        message_id, subject, from_address, from_name, date, body, content_hash, origin, recipients, fixed = (
            parsed
        )
        if fixed:
            self.report.repaired += 1
        if origin:
            self.touched[inbox][origin] += 1
        ids, hashes = self._inbox_keys(inbox)
        email_id = hashes.get(content_hash)
        if message_id in ids and ids[message_id] != email_id:
            # The Message-ID is already another message's (a forged or reused id): it does not
            # identify this one, which keeps its content under a synthetic id instead.
            message_id = synthetic_message_id(content_hash)
        if message_id in ids:  # a copy of a message already stored (same id, same content)
            self.report.duplicate += 1
            return
        if email_id is not None:
            self.report.duplicate += 1
        else:
            email_id = self.next_id
            self.next_id += 1
            hashes[content_hash] = email_id
            self.emails.append(
                (
                    email_id,
                    inbox,
                    message_id,
                    subject,
                    from_address,
                    from_name,
                    date,
                    body,
                    folder,
                    source,
                    content_hash,
                )
            )
            self.recipients.extend((email_id, kind, address, name) for kind, address, name in recipients)
            self.report.ingested += 1
        ids[message_id] = email_id
        self.message_ids.append((inbox, message_id, email_id, folder, source))

    def mark_source(self, path: Path, messages: int) -> None:
        stat = path.stat()
        key = storable_name(str(path))
        self.sources.append((key, stat.st_size, stat.st_mtime, messages))
        self.unquarantine.append((key,))  # an earlier run may have stopped inside it

    def flush(self) -> None:
        """Write everything added since the last flush in one transaction.

        New emails reach the FTS index through one ``insert ... select`` over their id range instead
        of the per-row insert trigger (half the CPU time); the trigger is dropped and re-created
        inside the same transaction, so every committed state has both the trigger and an index in
        sync with ``emails``.
        """
        c = self.conn
        self.transactions += 1
        try:
            if not c.in_transaction:
                c.execute("begin immediate")
            if self.emails:
                for name, _sql in self.fts_triggers:
                    c.execute(f'drop trigger "{name}"')
                c.executemany(
                    "insert into emails (id, inbox, message_id, subject, from_address, from_name, date, body,"
                    " folder, source_file, content_hash) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self.emails,
                )
                c.execute(self.fts_insert, [self.emails[0][0], self.emails[-1][0]])
                for _name, sql in self.fts_triggers:
                    c.execute(sql)
            c.executemany(
                "insert or ignore into message_ids (inbox, message_id, email_id, folder, source_file)"
                " values (?, ?, ?, ?, ?)",
                self.message_ids,
            )
            c.executemany(
                "insert into recipients (email_id, kind, address, name) values (?, ?, ?, ?)", self.recipients
            )
            c.executemany(
                "insert or replace into quarantine (source, inbox, reason, created) values (?, ?, ?, ?)",
                self.quarantine,
            )
            c.executemany("delete from quarantine where source = ?", self.unquarantine)
            c.executemany(
                "insert or replace into sources (path, size, mtime, messages) values (?, ?, ?, ?)",
                self.sources,
            )
            self._update_inboxes()
            self._crash_at("before-commit")
            c.commit()
        except BaseException:
            c.rollback()
            self.cache.clear()  # the caches may hold ids of rows that were rolled back
            raise
        self._crash_at("after-commit")
        self._clear()

    def abandon(self) -> None:
        """Drop what was not flushed (after an interruption) and forget cached keys."""
        self.conn.rollback()
        self.cache.clear()
        self._clear()

    def _update_inboxes(self) -> None:
        """Inside ``flush``'s transaction: store the batch's X-Origin counts and recompute the rows of
        the inboxes the batch changed, so that every committed state has up-to-date inbox rows."""
        changed = {row[0] for row in self.message_ids}
        origins: list[tuple[str, str, int]] = []
        for inbox, counts in self.touched.items():
            new = counts - self.committed_origins.get(inbox, Counter())
            if new:
                changed.add(inbox)
                origins.extend((inbox, origin, n) for origin, n in new.items())
        self.conn.executemany(
            "insert into inbox_origins (inbox, origin, messages) values (?, ?, ?)"
            " on conflict (inbox, origin) do update set messages = messages + excluded.messages",
            origins,
        )
        for inbox in sorted(changed):
            refresh_inbox(self.db, inbox)
        # a failed commit ends the run (flush re-raises), so the snapshot may be taken before it
        self.committed_origins = {inbox: counts.copy() for inbox, counts in self.touched.items()}

    def _crash_at(self, point: str) -> None:
        """The ``INBOXRL_INGEST_CRASH`` test hook: SIGKILL this process at the chosen commit."""
        if self.crash == (point, self.transactions):
            os.kill(os.getpid(), signal.SIGKILL)

    def finish(self) -> None:
        """Recompute, in one transaction, the rows of the inboxes this run touched and of every
        inbox whose row disagrees with its stored emails (left stale by an older version)."""
        stale = {
            row[0]
            for row in self.conn.execute(
                "select i.id from inboxes i left join"
                " (select inbox, count(*) as n from emails group by inbox) e on e.inbox = i.id"
                " where i.message_count is not coalesce(e.n, 0)"
            )
        }
        self.transactions += 1
        for inbox in sorted(stale | set(self.touched)):
            refresh_inbox(self.db, inbox)
        self._crash_at("before-commit")
        self.conn.commit()
        self._crash_at("after-commit")


def _crash_point(value: str) -> tuple[str, int] | None:
    """Parse the ``INBOXRL_INGEST_CRASH`` hook (``after-commit:3`` -> ``("after-commit", 3)``)."""
    if not value:
        return None
    point, _, n = value.partition(":")
    if point not in ("before-commit", "after-commit") or not n.isdigit():
        raise ValueError(f"{CRASH_ENV}={value!r}: use before-commit:N or after-commit:N")
    return point, int(n)


def refresh_inbox(db, inbox: str) -> None:
    """Recompute an inbox row (owner addresses, name, message count, date range) from its stored
    emails, Message-ID copies, recipients and X-Origin counts (``inbox_origins``)."""
    conn = db.conn
    folders = [
        row[0] for row in conn.execute("select distinct folder from message_ids where inbox = ?", [inbox])
    ]
    sent_folders = [f for f in folders if f and is_sent_folder(f)]
    sent: Counter = Counter()
    if sent_folders:
        marks = ", ".join("?" for _ in sent_folders)
        sent = Counter(
            dict(
                conn.execute(
                    "select e.from_address, count(distinct e.id) from message_ids m"
                    " join emails e on e.id = m.email_id"
                    f" where m.inbox = ? and m.folder in ({marks}) group by e.from_address",
                    [inbox, *sent_folders],
                ).fetchall()
            )
        )
    recipients: Counter = Counter()
    if not sent:
        recipients = Counter(
            dict(
                conn.execute(
                    "select r.address, count(*) from recipients r join emails e on e.id = r.email_id"
                    " where e.inbox = ? group by r.address order by 2 desc limit 20",
                    [inbox],
                ).fetchall()
            )
        )
    origin = conn.execute(
        "select origin from inbox_origins where inbox = ? order by messages desc, origin limit 1", [inbox]
    ).fetchone()
    addresses = owner_addresses(sent, recipients, origin[0] if origin else inbox)
    name = inbox
    if addresses:
        row = conn.execute(
            "select from_name from emails where inbox = ? and from_address = ? and from_name != ''"
            " group by from_name order by count(*) desc limit 1",
            [inbox, addresses[0]],
        ).fetchone()
        name = row[0] if row else inbox
    count = conn.execute("select count(*) from emails where inbox = ?", [inbox]).fetchone()[0]
    first, last = date_range(
        row[0] for row in conn.execute("select date from emails where inbox = ?", [inbox])
    )
    conn.execute(
        "insert or replace into inboxes (id, name, addresses, message_count, first_date, last_date)"
        " values (?, ?, ?, ?, ?, ?)",
        [inbox, name, json.dumps(addresses), count, first, last],
    )


# ---------------------------------------------------------------------------------------------
# The run


def _chunks(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def _exclusive(db_path: Path) -> Iterator[None]:
    """Refuse a second concurrent ingest into the same DB (their ids would collide)."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db_path.with_name(db_path.name + ".ingest-lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"Another inboxrl ingest is writing {db_path}; wait for it to finish"
            ) from None
        yield


def _pool(workers: int):
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["env.ingest"])  # workers fork with the parser imported, once
    else:
        ctx = multiprocessing.get_context("spawn")
    return ctx.Pool(workers, initializer=_init_worker)


def _init_worker() -> None:
    """Set up a pool worker: ignore SIGINT.

    A terminal's Ctrl-C reaches the whole process group; a worker it killed while it held a pool
    queue lock made ``Pool.terminate`` wait forever, so only the main process handles it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_pool(pool, timeout: float = POOL_STOP_TIMEOUT) -> None:
    """Stop the worker pool within about ``timeout`` seconds, killing workers that do not stop.

    ``Pool.terminate`` waits forever on a queue lock held by a worker that died inside a queue
    operation (killed from outside), so it runs in a daemon thread that is abandoned after
    ``timeout``; the workers only parse, so killing them loses nothing.
    """
    stopper = threading.Thread(target=pool.terminate, name="ingest-pool-stop", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        workers = list(pool._pool)  # Pool has no public handle on its worker processes
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.join(1.0)


def ingest(
    paths: Sequence[str | Path],
    db_path: str | Path,
    *,
    fmt: str | None = None,
    inbox: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    limits: Limits | None = None,
) -> IngestReport:
    """Ingest mail from ``paths`` into the DB at ``db_path`` (created if missing).

    :param paths: maildir trees, mbox files, .eml folders, Kaggle emails.csv, corbt Parquet/JSONL,
        or .tar.gz archives of a maildir.
    :param fmt: force one reader for every path (see ``env.readers.FORMATS``).
    :param inbox: put every message into this mailbox instead of the one its path names.
    :param workers: parsing processes; default one per CPU, 0 or 1 parses in this process.
    :param progress: show a rich progress bar.
    :param limits: size limits per message and per container file (``env.readers.Limits``); what is
        over them is quarantined unread.
    """
    db_path = Path(db_path)
    report = IngestReport(db_path=db_path)
    started = time.perf_counter()
    workers = (os.cpu_count() or 1) if workers is None else workers
    paths = [Path(p).resolve() for p in paths]  # one key per file however the path is spelled
    formats = [fmt or detect_format(p) for p in paths]
    with _exclusive(db_path):
        writer = _Writer(db_path, report)
        pool = _pool(workers) if workers > 1 else None
        bar = _Progress(progress)
        try:
            with bar:
                for path, path_fmt in zip(paths, formats, strict=True):
                    _ingest_path(path, path_fmt, inbox, writer, pool, workers, bar, limits)
            writer.flush()
        except BaseException:
            writer.abandon()  # committed inbox rows are already up to date (see _Writer.flush)
            raise
        finally:
            if pool is not None:
                _stop_pool(pool)
        writer.finish()
        writer.db.close()
    report.inboxes = sorted(writer.touched)
    report.seconds = time.perf_counter() - started
    return report


def _ingest_path(
    path: Path,
    path_fmt: str,
    inbox: str | None,
    writer: _Writer,
    pool,
    workers: int,
    bar: _Progress,
    limits: Limits | None = None,
) -> None:
    container = path_fmt in CONTAINER_FORMATS and path.is_file()
    if container:
        stat = path.stat()
        key = storable_name(str(path))
        row = writer.conn.execute("select size, mtime from sources where path = ?", [key]).fetchone()
        if row == (stat.st_size, stat.st_mtime):
            writer.report.skipped_sources += 1
            return
    bar.start_path(path)
    errors: list[str] = []
    items = _guarded(iter_items(path, path_fmt, inbox=inbox, limits=limits), errors)
    read: list[int] = []  # messages per chunk read, those already ingested included
    batches = (writer.pending_items(chunk) for chunk in _tally(_chunks(items, BATCH_SIZE), read))
    for results in _map_bounded(pool, batches, 2 * workers + 2):
        for result in results:
            writer.add(result)
        bar.advance(len(results), writer.report)
        if writer.pending >= writer.commit_every:
            writer.flush()
    if errors:  # what was read is kept; the file stays unfinished, so a repaired copy is read again
        reason = f"cannot read the rest of this {path_fmt} file: {errors[0]}"
        source, mailbox = storable_name(str(path)), storable_name(inbox or path.name)
        writer.add((source, mailbox, "", 0, -1.0, None, reason))
    elif container:
        writer.mark_source(path, sum(read))
    writer.flush()


def _tally(chunks: Iterator[list[Item]], sizes: list[int]) -> Iterator[list[Item]]:
    """Pass ``chunks`` through, appending each one's size to ``sizes``."""
    for chunk in chunks:
        sizes.append(len(chunk))
        yield chunk


def _guarded(items: Iterator[Item], errors: list[str]) -> Iterator[Item]:
    """Stop at a reader error (a truncated archive, a broken CSV) and record it, instead of raising."""
    try:
        yield from items
    except Exception as e:  # the messages read so far are still ingested
        errors.append(f"{type(e).__name__}: {e}")


def _map_bounded(pool, batches: Iterator[list], window: int) -> Iterator[list[_Result]]:
    """Parse batches in order with at most ``window`` in flight (bounded memory, unlike Pool.imap)."""
    if pool is None:
        for batch in batches:
            yield _parse_batch(batch)
        return
    workers = _worker_pids(pool)
    in_flight: deque = deque()
    for batch in batches:
        if not batch:
            continue
        in_flight.append(pool.apply_async(_parse_batch, (batch,)))
        if len(in_flight) >= window:
            yield _result(pool, in_flight.popleft(), workers)
    while in_flight:
        yield _result(pool, in_flight.popleft(), workers)


class WorkerDied(RuntimeError):
    """A parsing worker process died (killed, out of memory, a crash in a C library)."""


def _worker_pids(pool) -> frozenset[int]:
    return frozenset(worker.pid for worker in pool._pool)  # Pool has no public handle on its workers


def _result(pool, pending, workers: frozenset[int]) -> list[_Result]:
    """The batch's parse results; :class:`WorkerDied` if a worker died before they came.

    ``Pool`` replaces a dead worker but never reruns the batch it held, so a plain ``get()`` would
    wait forever. Workers never exit on their own here, so a changed worker set means one died.
    """
    while not pending.ready():
        pending.wait(WORKER_CHECK_S)
        if not pending.ready() and _worker_pids(pool) != workers:
            raise WorkerDied(
                "A parsing worker died (killed, or out of memory?). What was committed is kept: run the "
                "same command again to resume, or with --workers 1 to parse in one process."
            )
    return pending.get()


class _Progress:
    """A rich progress bar counting messages (no total: readers stream)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,} messages"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("ingest", total=None, stats="")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_path(self, path: Path) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"ingest {path.name}")

    def advance(self, n: int, report: IngestReport) -> None:
        if self.progress is not None:
            stats = f"new {report.ingested:,} dup {report.duplicate:,} quarantined {report.quarantined:,}"
            self.progress.update(self.task, advance=n, stats=stats)
