"""Pick emails to write questions from: spread across time, folders and senders.

Bulk mail (newsletters, announcements, mailing lists, auto-notices), messages with placeholder
dates, near-empty messages and duplicates (the same sender, subject and body seen under another
Message-ID, as Lotus Notes folders do) are skipped. Sampling is seeded, so the same inbox and seed
give the same batches: that is what makes generation resumable.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import sqlite_utils

from env.db import Inbox

MIN_YEAR = 1990  # earlier dates are placeholders (the Enron corpus carries 1979-12-31)
MAX_RECIPIENTS = 25  # more recipients than this marks a mass mailing
MIN_BODY_CHARS = 40

_BULK_SENDER = re.compile(
    r"(^|[._-])(no-?reply|do-?not-?reply|newsletters?|news|mailer-daemon|postmaster|bounces?|announce(ments?)?"
    r"|listserv|majordomo|lists?|alerts?|notifications?|notify|digest|subscriptions?|marketing|promo)([._-]|@|$)",
    re.IGNORECASE,
)
_BULK_BODY = re.compile(
    r"unsubscribe|to be removed from (this|our) (mailing )?list|click here to|view this (e-?mail|message) in"
    r"|you are receiving this|opt[ -]out|forward to a friend",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Email:
    """One message as the question writer and the grounding checks see it."""

    id: int
    message_id: str
    subject: str
    from_address: str
    from_name: str
    date: str
    folder: str
    body: str
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()

    @property
    def day(self) -> str:
        """The UTC date ``YYYY-MM-DD``."""
        return self.date[:10]

    def render(self, max_body_chars: int | None = None) -> str:
        """Headers and body as plain text: what quotes and answers are matched against.

        With ``max_body_chars`` (for prompts) the body is cut and long recipient lists shortened.
        """
        clip = max_body_chars is not None
        body = _clip(self.body, max_body_chars) if clip else self.body
        sender = f"{self.from_name} <{self.from_address}>" if self.from_name else self.from_address
        lines = [f"From: {sender}", f"To: {_addresses(self.to, clip)}"]
        if self.cc:
            lines.append(f"Cc: {_addresses(self.cc, clip)}")
        lines += [f"Date: {self.date}", f"Subject: {self.subject}", "", body]
        return "\n".join(lines)


def _addresses(addresses: tuple[str, ...], clip: bool, keep: int = 6) -> str:
    if clip and len(addresses) > keep:
        return f"{', '.join(addresses[:keep])} and {len(addresses) - keep} more"
    return ", ".join(addresses)


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " [...]"


@dataclass(frozen=True)
class Batch:
    """Emails shown to the question writer together; ``key`` identifies it across runs."""

    index: int
    emails: tuple[Email, ...]

    @property
    def key(self) -> str:
        """A stable hash of the batch's Message-IDs."""
        ids = "\n".join(sorted(e.message_id for e in self.emails))
        return hashlib.sha256(ids.encode()).hexdigest()[:16]


def load_emails(db: sqlite_utils.Database, inbox_id: str, email_ids: list[int] | None = None) -> list[Email]:
    """Emails of one inbox (all, or those with the given ``emails.id``), oldest first, with recipients."""
    sql = (
        "select id, message_id, subject, from_address, from_name, date, folder, body"
        " from emails where inbox = ?"
    )
    params: list = [inbox_id]
    if email_ids is not None:
        if not email_ids:
            return []
        sql += f" and id in ({', '.join('?' for _ in email_ids)})"
        params += list(email_ids)
    rows = db.execute(sql + " order by date, id", params).fetchall()
    recipients: dict[int, dict[str, list[str]]] = defaultdict(lambda: {"to": [], "cc": []})
    rec_sql = (
        "select r.email_id, r.kind, r.address from recipients r join emails e on e.id = r.email_id"
        " where e.inbox = ? and r.kind in ('to', 'cc')"
    )
    rec_params: list = [inbox_id]
    if email_ids is not None:
        rec_sql += f" and r.email_id in ({', '.join('?' for _ in email_ids)})"
        rec_params += list(email_ids)
    for email_id, kind, address in db.execute(rec_sql + " order by r.rowid", rec_params).fetchall():
        recipients[email_id][kind].append(address)
    return [
        Email(
            id=r[0],
            message_id=r[1],
            subject=(r[2] or "").strip(),
            from_address=(r[3] or "").strip().lower(),
            from_name=(r[4] or "").strip(),
            date=r[5] or "",
            folder=r[6] or "",
            body=r[7] or "",
            to=tuple(recipients[r[0]]["to"]) if r[0] in recipients else (),
            cc=tuple(recipients[r[0]]["cc"]) if r[0] in recipients else (),
        )
        for r in rows
    ]


def skip_reason(email: Email) -> str | None:
    """Why an email is not worth writing questions from, or ``None``.

    >>> e = Email(1, "<1@x>", "Gas prices", "jane@enron.com", "Jane", "2001-05-01T10:00:00Z", "inbox",
    ...           "Can you send me the curve for June by Friday? Thanks.", ("phillip.allen@enron.com",))
    >>> skip_reason(e) is None
    True
    >>> skip_reason(Email(2, "<2@x>", "Weekly digest", "newsletter@cera.com", "", e.date, "inbox", e.body))
    'bulk_sender'
    """
    if not email.date or int(email.date[:4] or 0) < MIN_YEAR:
        return "bad_date"
    if _BULK_SENDER.search(email.from_address):
        return "bulk_sender"
    if len(email.to) + len(email.cc) > MAX_RECIPIENTS:
        return "mass_mailing"
    if len(" ".join(email.body.split())) < MIN_BODY_CHARS:
        return "too_short"
    if _BULK_BODY.search(email.body):
        return "bulk_body"
    return None


def normalize_subject(subject: str) -> str:
    """Subject without reply/forward prefixes, lower-cased, whitespace collapsed.

    >>> normalize_subject("RE: Fw:  Gas   Prices")
    'gas prices'
    """
    s = subject.strip()
    while True:
        stripped = re.sub(r"^\s*(re|fw|fwd)\s*:\s*", "", s, flags=re.IGNORECASE)
        if stripped == s:
            break
        s = stripped
    return " ".join(s.lower().split())


def _dup_key(email: Email) -> str:
    body = " ".join(email.body.split()).lower()[:2000]
    raw = f"{email.from_address}\n{normalize_subject(email.subject)}\n{body}"
    return hashlib.sha256(raw.encode()).hexdigest()


def candidate_emails(emails: list[Email]) -> tuple[list[Email], Counter]:
    """Emails worth writing about (duplicates and bulk mail removed), and the counts of skip reasons."""
    skipped: Counter = Counter()
    seen: set[str] = set()
    kept = []
    for email in emails:
        reason = skip_reason(email)
        if reason is None:
            key = _dup_key(email)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason:
            skipped[reason] += 1
        else:
            kept.append(email)
    return kept, skipped


def spread_order(emails: list[Email], *, seed: int = 0, window: int = 64) -> list[Email]:
    """Order emails so that any prefix spreads across months, senders and folders.

    Greedy over a seeded shuffle: each next email is, among ``window`` candidates, the one whose
    month has been picked least so far, then whose sender and folder have been picked least.
    """
    rng = random.Random(seed)
    remaining = list(emails)
    rng.shuffle(remaining)
    months: Counter = Counter()
    senders: Counter = Counter()
    folders: Counter = Counter()
    order: list[Email] = []
    while remaining:
        head = remaining[:window]
        best = min(
            range(len(head)),
            key=lambda i: (
                months[head[i].date[:7]],
                senders[head[i].from_address] + folders[head[i].folder],
                i,
            ),
        )
        email = head[best]
        remaining[best] = remaining[-1]
        remaining.pop()
        months[email.date[:7]] += 1
        senders[email.from_address] += 1
        folders[email.folder] += 1
        order.append(email)
    return order


def sample_batches(
    db: sqlite_utils.Database, inbox: Inbox, *, batch_size: int = 20, seed: int = 0
) -> tuple[list[Batch], Counter]:
    """Every candidate email of ``inbox`` in spread order, cut into batches of ``batch_size``.

    Returns the batches and the counts of skipped emails by reason.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    candidates, skipped = candidate_emails(load_emails(db, inbox.id))
    order = spread_order(candidates, seed=seed)
    batches = [
        Batch(index=i // batch_size, emails=tuple(order[i : i + batch_size]))
        for i in range(0, len(order), batch_size)
    ]
    return batches, skipped
