"""The inbox database: schema and the few look-ups every part of InboxRL shares.

One SQLite file holds every ingested mailbox. Tables (created by :func:`ensure_schema`):

- ``inboxes``: one row per mailbox. ``id`` is the mailbox key (``allen-p``), ``addresses`` a JSON
  list of owner addresses (primary first), ``message_count``, ``first_date``, ``last_date``.
- ``emails``: one row per distinct message *within a mailbox* (``inbox`` + ``content_hash`` is
  unique). ``message_id`` is the first Message-ID seen; ``date`` is ISO 8601 UTC
  (``2001-04-26T17:00:00Z``); ``body`` is plain text.
- ``message_ids``: every Message-ID a message was seen under, with its folder and source file, so a
  question that cites any copy resolves (primary key ``inbox`` + ``message_id``).
- ``recipients``: ``email_id``, ``kind`` (to / cc / bcc), ``address``, ``name``.
- ``quarantine``: messages that could not be parsed: ``source`` (file path, or path#offset), reason.
- ``sources``: files already ingested (path, size, mtime), so a rerun skips them and resumes.
- ``emails_fts``: FTS5 over ``subject``, ``indexed_body`` and ``inbox_token`` of ``emails``, kept in
  sync by triggers. ``inbox_token`` is a generated column (see :func:`inbox_token`): one FTS5 token
  per inbox, so a search can intersect the inbox's posting list inside FTS5 instead of ranking every
  inbox's matches and filtering afterwards (search latency then follows the inbox's size, not the DB's).
  ``indexed_body`` is a generated column, the first ``INDEXED_BODY_BYTES`` bytes of ``body`` (cut
  as a blob: a text ``substr`` stops at a NUL, which older ingests stored), so what one email costs
  a search (BM25 walks every position of a matched term in it) is bounded by construction, whatever
  a hostile body holds (5 MB of one repeated word: 50 ms per search unbounded, 1 ms bounded). Words
  past the bound are not searchable (1 of the 22,882 messages of the Enron sample is that long);
  ``read_email`` shows the whole body.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils


class NoInbox(LookupError):
    """Specified inbox does not exist."""


@dataclass(frozen=True)
class Inbox:
    """A mailbox in the DB: its key, display name and owner addresses (primary first)."""

    id: str
    name: str
    addresses: tuple[str, ...]
    message_count: int
    first_date: str | None
    last_date: str | None

    @property
    def address(self) -> str:
        """The primary owner address."""
        return self.addresses[0] if self.addresses else self.id


def open_db(path: str | Path, *, create: bool = False) -> sqlite_utils.Database:
    """Open an inbox DB in WAL mode (many readers beside one writer).

    :param path: the SQLite file, or ``":memory:"``.
    :param create: create the file and schema if missing; otherwise a missing file raises
        ``FileNotFoundError`` naming the fix.
    """
    if str(path) != ":memory:":
        path = Path(path)
        if not path.exists() and not create:
            raise FileNotFoundError(
                f"No inbox DB at {path}; create one with: inboxrl ingest PATH --db {path}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    db = sqlite_utils.Database(conn)
    if str(path) != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    if create:
        ensure_schema(db)
    return db


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create every table, index and the FTS5 index if they are missing (idempotent)."""
    db["inboxes"].create(
        {
            "id": str,
            "name": str,
            "addresses": str,
            "message_count": int,
            "first_date": str,
            "last_date": str,
        },
        pk="id",
        if_not_exists=True,
    )
    db["emails"].create(
        {
            "id": int,
            "inbox": str,
            "message_id": str,
            "subject": str,
            "from_address": str,
            "from_name": str,
            "date": str,
            "body": str,
            "folder": str,
            "source_file": str,
            "content_hash": str,
        },
        pk="id",
        foreign_keys=[("inbox", "inboxes", "id")],
        if_not_exists=True,
    )
    db["emails"].create_index(["inbox", "content_hash"], unique=True, if_not_exists=True)
    db["emails"].create_index(["inbox", "date"], if_not_exists=True)
    db["emails"].create_index(["from_address"], if_not_exists=True)
    db["message_ids"].create(
        {"inbox": str, "message_id": str, "email_id": int, "folder": str, "source_file": str},
        pk=("inbox", "message_id"),
        foreign_keys=[("email_id", "emails", "id")],
        if_not_exists=True,
    )
    db["message_ids"].create_index(["email_id"], if_not_exists=True)
    db["recipients"].create(
        {"email_id": int, "kind": str, "address": str, "name": str},
        foreign_keys=[("email_id", "emails", "id")],
        if_not_exists=True,
    )
    db["recipients"].create_index(["email_id"], if_not_exists=True)
    db["recipients"].create_index(["address"], if_not_exists=True)
    db["quarantine"].create(
        {"source": str, "inbox": str, "reason": str, "created": str}, pk="source", if_not_exists=True
    )
    db["sources"].create(
        {"path": str, "size": int, "mtime": float, "messages": int}, pk="path", if_not_exists=True
    )
    if "inbox_token" not in {row[1] for row in db.execute("pragma table_xinfo(emails)")}:
        db.execute(
            f"alter table emails add column inbox_token text generated always as ({INBOX_TOKEN_SQL}) virtual"
        )
    if "indexed_body" not in {row[1] for row in db.execute("pragma table_xinfo(emails)")}:
        db.execute(
            "alter table emails add column indexed_body text generated always as"
            f" ({INDEXED_BODY_SQL}) virtual"
        )
        # Older ingests wrote years past 9999 with five digits and years before 1000 with fewer
        # than four, which sort wrongly as text: pad the short ones, and a date past 9999 is none.
        with db.conn:
            db.execute(
                "update emails set date = null where length(date) > 20 and date like '%-__-__T__:__:__Z'"
            )
            db.execute(
                "update emails set date = substr('000' || date, -20)"
                " where length(date) between 17 and 19 and date like '%-__-__T__:__:__Z'"
            )
    fts_columns = {row[1] for row in db.execute("pragma table_info(emails_fts)")}
    if not set(FTS_COLUMNS) <= fts_columns:  # missing, or built by an older InboxRL: (re)build it
        db["emails"].enable_fts(list(FTS_COLUMNS), create_triggers=True, tokenize="porter", replace=True)


INBOX_TOKEN_SQL = "'inbox' || lower(hex(inbox))"
"""SQL of the ``emails.inbox_token`` generated column; :func:`inbox_token` computes the same in Python."""
INDEXED_BODY_BYTES = 200_000
"""Bytes of a body the search index holds (``emails.indexed_body``); see the module docstring."""


def _indexed_body_sql(limit: int) -> str:
    """SQL of ``emails.indexed_body``: the first ``limit`` bytes of ``body``, never half a character.

    The body is cut as a blob (a text ``substr`` stops at a NUL) and the cut moves back over a
    character that does not fit: the byte after the cut is not a UTF-8 continuation byte.
    """
    body, cont = "cast(body as blob)", "between x'80' and x'bf'"
    cuts = " ".join(f"when substr({body}, {limit + 1 - k}, 1) not {cont} then {limit - k}" for k in range(3))
    return f"cast(substr({body}, 1, case {cuts} else {limit - 3} end) as text)"


INDEXED_BODY_SQL = _indexed_body_sql(INDEXED_BODY_BYTES)
FTS_COLUMNS = ("subject", "indexed_body", "inbox_token")
"""The columns of ``emails_fts``, in order (``bm25()`` weights follow it)."""


def inbox_token(inbox_id: str) -> str:
    """The single FTS5 token that tags every email of an inbox: ``inbox`` + hex of its UTF-8 key.

    >>> inbox_token("allen-p")
    'inbox616c6c656e2d70'
    """
    return "inbox" + inbox_id.encode("utf-8").hex()


def list_inboxes(db: sqlite_utils.Database) -> list[Inbox]:
    """Every inbox in the DB, largest first."""
    if not db["inboxes"].exists():
        return []
    rows = db.query("select * from inboxes order by message_count desc, id")
    return [_inbox(row) for row in rows]


def get_inbox(db: sqlite_utils.Database, key: str) -> Inbox:
    """Resolve an inbox by its key (``allen-p``) or any of its owner addresses (case-insensitive).

    Raises :class:`NoInbox` listing the inboxes that exist.
    """
    wanted = key.strip().lower()
    inboxes = list_inboxes(db)
    for inbox in inboxes:
        if inbox.id.lower() == wanted or wanted in (a.lower() for a in inbox.addresses):
            return inbox
    known = ", ".join(f"{i.id} ({i.address})" for i in inboxes) or "none: run inboxrl ingest first"
    raise NoInbox(f"No inbox {key!r}. Inboxes in this DB: {known}")


def _inbox(row: dict) -> Inbox:
    return Inbox(
        id=row["id"],
        name=row["name"] or row["id"],
        addresses=tuple(json.loads(row["addresses"] or "[]")),
        message_count=row["message_count"] or 0,
        first_date=row["first_date"],
        last_date=row["last_date"],
    )


def resolve_message_ids(db: sqlite_utils.Database, inbox_id: str, message_ids: list[str]) -> dict[str, int]:
    """Map Message-IDs (of any copy of a message) in one inbox to their ``emails.id``.

    Ids that are not in the inbox are left out, so ``len(result) < len(message_ids)`` means some
    were unknown. Two copies of one message map to the same ``emails.id``.
    """
    if not message_ids:
        return {}
    marks = ", ".join("?" for _ in message_ids)
    rows = db.execute(
        f"select message_id, email_id from message_ids where inbox = ? and message_id in ({marks})",
        [inbox_id, *message_ids],
    ).fetchall()
    return {message_id: email_id for message_id, email_id in rows}
