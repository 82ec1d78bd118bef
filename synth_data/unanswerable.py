"""Unanswerable questions made from answerable ones, with no LLM, each checked with the real tools.

An agent that never sees a question it cannot answer learns to always answer. Two ways to make one
from an answerable pair of the inbox itself:

- **time-shifted**: the same question asked before its evidence existed. ``query_date`` moves to
  1-60 days before the earliest cited email (and stays after the inbox's first email), so the
  tools hide that email and every later one.
- **entity-swapped**: the question's key number, name or subject word is replaced by one that
  occurs nowhere in the inbox ("Which check did I mail Brenda Vasquel ...?").

A candidate is kept only when the real tools (``env.tools.make_tools`` at the new ``query_date``)
agree that it is unanswerable: no cited email is readable, and no email that a search for the
question's or the answer's key terms returns holds the answer (time-shifted), or no email of the
inbox holds the new term at all (entity-swapped). :func:`add_unanswerables` mixes them into a
question set at a given share; ``Report`` counts what was made and dropped by reason.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

import sqlite_utils

from env.db import Inbox, get_inbox, resolve_message_ids
from env.tools import InboxTools, ToolError, make_tools
from synth_data.ground import content_terms, normalize
from synth_data.questions import Question

KINDS = ("time-shift", "entity-swap")
MIN_DAYS_AFTER_FIRST = 7

_NUMBER = re.compile(r"(?<![\w.])[#$]?\d[\d,]*(?:\.\d+)?(?![\w.])")
_NAME = re.compile(r"(?<=\s)(?:[A-Z][a-z]+)(?:\s+[A-Z][a-z]+)*")
_QUOTED = re.compile(r'"([^"]{3,})"')
_SYLLABLES = ("var", "quel", "dor", "bri", "stan", "mol", "tre", "ven", "cas", "lor", "pim", "zel", "hurst")
_ENDINGS = ("ton", "ley", "wick", "man", "dale", "ford", "sby", "ard", "ine", "ock")
_NOT_NAMES = frozenset(
    "I What Which Who Whom Whose When Where Why How Did Does Do Is Are Was Were Has Have Had Can Could "  # noqa: SIM905
    "Will Would Should On In At For From To By Of The A An And Or My Our Your Their Please Monday Tuesday "
    "Wednesday Thursday Friday Saturday Sunday January February March April May June July August "
    "September October November December Enron".split()
)


@dataclass
class Report:
    """What :func:`add_unanswerables` made: kept per kind and dropped per reason."""

    kept: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"kept": dict(self.kept), "dropped": dict(self.dropped)}


def _rng(q: Question, kind: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\n{kind}\n{q.id}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _derived(q: Question, kind: str, question: str, query_date: str, evidence: str) -> Question:
    return Question(
        id=f"{q.id}-u-{kind}",
        inbox_address=q.inbox_address,
        question=question,
        answer=None,
        message_ids=[],
        query_date=query_date,
        kind="unanswerable",
        difficulty=q.difficulty,
        how_realistic=q.how_realistic,
        evidence=evidence,
        mailbox=q.mailbox,
        split=q.split,
        generator=f"unanswerable:{kind}",
    )


def _cited_dates(db: sqlite_utils.Database, inbox: Inbox, q: Question) -> list[str]:
    rows = set(resolve_message_ids(db, inbox.id, q.message_ids).values())
    if not rows:
        return []
    marks = ",".join("?" * len(rows))
    sql = f"select date from emails where id in ({marks}) and date is not null"
    return sorted(r[0] for r in db.execute(sql, list(rows)).fetchall())


def _answer_visible(tools: InboxTools, q: Question) -> bool:
    """True if a cited email is readable, or an email found by the question's or answer's key terms
    holds the answer (normalised text) or every content term of it."""
    for message_id in q.message_ids:
        try:
            tools.read_email(message_id)
            return True
        except ToolError:
            pass
    answer = normalize(q.answer or "")
    terms = content_terms(q.answer or "")
    for keywords in (content_terms(q.question)[:4], terms[:4]):
        if not keywords:
            continue
        for hit in tools.search_emails(keywords, max_results=10):
            email = tools.read_email(hit["message_id"])
            text = normalize(f"{email['subject']}\n{email['body']}")
            if answer in text or (terms and all(t in text for t in terms)):
                return True
    return False


def time_shifted(
    db: sqlite_utils.Database, q: Question, *, seed: int = 0
) -> tuple[Question | None, str | None]:
    """``q`` asked 1-60 days before its earliest cited email, or ``(None, drop reason)``."""
    inbox = get_inbox(db, q.inbox_key)
    dates = _cited_dates(db, inbox, q)
    if not dates:
        return None, "no_dated_evidence"
    evidence_day = date.fromisoformat(dates[0][:10])
    earliest = date.fromisoformat(inbox.first_date[:10]) + timedelta(days=MIN_DAYS_AFTER_FIRST)
    latest = evidence_day - timedelta(days=1)
    if latest < earliest:
        return None, "evidence_too_early"
    back = _rng(q, "time-shift", seed).randint(1, 60)
    query_date = max(earliest, evidence_day - timedelta(days=back)).isoformat()
    tools = make_tools(db, inbox, query_date)
    if _answer_visible(tools, q):
        return None, "answer_visible"
    evidence = f"asked on {query_date}, before its evidence ({dates[0][:10]}) existed"
    return _derived(q, "time-shift", q.question, query_date, evidence), None


def _in_inbox(db: sqlite_utils.Database, inbox: Inbox, term: str) -> bool:
    """True if any email of the inbox (any date) holds ``term`` as an FTS phrase."""
    tokens = re.sub(r"[^0-9A-Za-z]+", " ", term).strip()
    if not tokens:
        return True
    sql = (
        "select 1 from emails_fts f join emails e on e.id = f.rowid "
        "where emails_fts match ? and e.inbox = ? limit 1"
    )
    return db.execute(sql, [f'"{tokens}"', inbox.id]).fetchone() is not None


def _new_number(text: str, rng: random.Random) -> str:
    digits = iter(str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(len(text))))
    return "".join(next(digits) if ch.isdigit() else ch for ch in text)


def _new_name(rng: random.Random) -> str:
    return (rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES[:-1]) + rng.choice(_ENDINGS)).capitalize()


def _swap_targets(question: str) -> list[tuple[str, str]]:
    """(span, kind) candidates in the order tried: numbers of 3+ digits, names (last word), quoted
    subject words."""
    numbers = [m.group(0) for m in _NUMBER.finditer(question)]
    out = [(n, "number") for n in numbers if sum(c.isdigit() for c in n) >= 3]
    for m in _NAME.finditer(" " + question):
        words = [w for w in m.group(0).split() if w not in _NOT_NAMES]
        if words:
            out.append((words[-1], "name"))
    for m in _QUOTED.finditer(question):
        words = sorted(content_terms(m.group(1)), key=len, reverse=True)
        out += [(w, "word") for w in words[:1] if w.isalpha() and len(w) >= 4]
    return out


def entity_swapped(
    db: sqlite_utils.Database, q: Question, *, seed: int = 0, tries: int = 5
) -> tuple[Question | None, str | None]:
    """``q`` with its key number, name or subject word replaced by one the inbox never mentions."""
    inbox = get_inbox(db, q.inbox_key)
    targets = _swap_targets(q.question)
    if not targets:
        return None, "no_entity"
    rng = _rng(q, "entity-swap", seed)
    for span, kind in targets:
        for _ in range(tries):
            new = _new_number(span, rng) if kind == "number" else _new_name(rng)
            if kind == "word" and span.islower():
                new = new.lower()
            if new == span or _in_inbox(db, inbox, new):
                continue
            pattern = re.compile(rf"(?<![\w]){re.escape(span)}(?![\w])")
            question = pattern.sub(new, q.question, count=1)
            if question != q.question:
                evidence = f"{span!r} replaced by {new!r}, which no email of the inbox mentions"
                return _derived(q, "entity-swap", question, q.query_date, evidence), None
    return None, "no_unused_term"


def add_unanswerables(
    db: sqlite_utils.Database, questions: list[Question], share: float, *, seed: int = 0
) -> tuple[list[Question], Report]:
    """``questions`` plus made-up unanswerable ones so that unanswerables are ``share`` of the set.

    Sources are the answerable questions (shuffled by ``seed``), the two kinds alternating; the
    unanswerable questions already in the set count towards the share. Returns the mixed set
    (originals first, new ones after) and a :class:`Report`.
    """
    if not 0 <= share < 1:
        raise ValueError(f"unanswerable share={share} must be in [0, 1).")
    report = Report()
    have = sum(q.kind == "unanswerable" for q in questions)
    wanted = max(0, round((share * len(questions) - have) / (1 - share)))
    sources = [q for q in questions if q.kind != "unanswerable" and q.answer]
    random.Random(seed).shuffle(sources)
    made: list[Question] = []
    makers = (time_shifted, entity_swapped)
    for i, q in enumerate(sources):
        if len(made) >= wanted:
            break
        for maker in (makers[i % 2], makers[(i + 1) % 2]):
            new, reason = maker(db, q, seed=seed)
            if new is not None:
                made.append(new)
                report.kept[new.generator.split(":", 1)[1]] += 1
                break
            report.dropped[reason] += 1
    return questions + made, report
