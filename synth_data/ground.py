"""Grounding checks: a pair is kept only when the inbox backs it up.

Each check returns ``None`` (passed) or a drop reason; :class:`Report` counts pairs generated,
dropped by reason, and kept. The checks:

- ``unknown_message_id``: a cited email is not in that inbox.
- ``cited_after_query_date``: a cited email is dated on or after ``query_date``.
- ``quote_not_found`` / ``quote_unrelated``: the supporting quote is not a verbatim span of a cited
  email (whitespace and case normalised), or does not contain the answer's terms.
- ``answer_not_in_email``: (template pairs) the answer is not a verbatim span of a cited email.
- ``unrealistic``: ``how_realistic`` below the threshold.
- ``not_findable``: searching the inbox with the question's words does not find a cited email.
- ``answer_found``: (unanswerable pairs) an email before ``query_date`` contains every key term.
- ``near_duplicate``: the question's content words overlap an earlier question's too much.
- ``copied_example``: (LLM pairs) the question is the prompt's own example.
- ``off_topic``: (unanswerable pairs) none of the question's words occur in the emails it came from.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import sqlite_utils

from env.db import get_inbox, resolve_message_ids
from synth_data.questions import Question
from synth_data.sample import Email, load_emails

_STOPWORD_TEXT = """
a about above after again all am an and any are as at be been before being between both but by can
could did do does doing down during each email emails few for from further had has have having he
her here hers him his how i if in into is it its just me mine more most my no nor not now of off on
once only or other our ours out over own same she should so some such than that the their theirs
them then there these they this those through to too under until up very was we were what when where
which while who whom whose why will with would you your yours sent send message mail regarding re fw
fwd
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*")


def normalize(text: str) -> str:
    """Lower-case, straighten quotes, collapse whitespace: the form quotes are matched in.

    >>> normalize("  The  “deal”\\n is   ON ")
    'the "deal" is on'
    """
    text = text.replace("“", '"').replace("”", '"').replace("’", "'").replace("‘", "'")
    return " ".join(text.lower().split())


def _stem(token: str) -> str:
    token = token.replace(",", "")
    if token[:1].isdigit():
        return re.sub(r"(st|nd|rd|th)$", "", token)
    for suffix in ("ing", "ed", "es", "s"):
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


def content_terms(text: str) -> list[str]:
    """Distinct content words of ``text`` (stopwords and 1-2 letter words dropped), in order.

    >>> content_terms("Who sent me the email about the Sagewood townhomes bid of $2.7 million?")
    ['sagewood', 'townhomes', 'bid', '2.7', 'million']
    """
    seen: dict[str, None] = {}
    for token in _WORD.findall(text.lower()):
        if token in STOPWORDS or (len(token) < 3 and not token[0].isdigit()):
            continue
        seen.setdefault(token, None)
    return list(seen)


def jaccard(a: set[str], b: set[str]) -> float:
    """Jaccard similarity of two sets (0 for two empty sets).

    >>> jaccard({"gas", "price"}, {"gas", "price", "june"})
    0.6666666666666666
    """
    return len(a & b) / len(a | b) if a or b else 0.0


class Deduper:
    """Drops questions whose stemmed content words overlap an earlier one's by ``threshold`` or more.

    >>> d = Deduper(0.8)
    >>> d.is_new("What price did Jane quote for June gas?")
    True
    >>> d.is_new("What price did Jane quote for the June gas?")
    False
    """

    def __init__(self, threshold: float = 0.8) -> None:
        self.threshold = threshold
        self._sets: list[set[str]] = []
        self._index: dict[str, list[int]] = {}

    @staticmethod
    def _terms(question: str) -> set[str]:
        return {_stem(t) for t in content_terms(question)} or {normalize(question)}

    def seen(self, question: str) -> bool:
        """Whether ``question`` near-duplicates one recorded before (without recording it)."""
        terms = self._terms(question)
        candidates = {i for t in terms for i in self._index.get(t, ())}
        return any(jaccard(terms, self._sets[i]) >= self.threshold for i in candidates)

    def is_new(self, question: str) -> bool:
        """Record ``question`` and say whether it is new (not a near-duplicate of one seen before)."""
        if self.seen(question):
            return False
        terms = self._terms(question)
        for t in terms:
            self._index.setdefault(t, []).append(len(self._sets))
        self._sets.append(terms)
        return True


def check_on_topic(question: str, emails: list[Email]) -> str | None:
    """An unanswerable question must still be about these emails: one of its content words occurs in them.

    >>> e = Email(1, "<1@x>", "Gas", "a@x.com", "", "2001-05-01T00:00:00Z", "inbox", "Tenaska renews.")
    >>> check_on_topic("What rate did Tenaska offer?", [e]), check_on_topic("Who won the chess cup?", [e])
    (None, 'off_topic')
    """
    text = {_stem(t) for e in emails for t in content_terms(e.render())}
    return None if any(_stem(t) in text for t in content_terms(question)) else "off_topic"


@dataclass
class Report:
    """Counts of pairs generated, dropped by reason and kept (plus other counters, e.g. LLM calls)."""

    generated: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        """Count one dropped pair."""
        self.dropped[reason] += 1

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "generated": self.generated,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": sum(self.dropped.values()),
            "kept": self.kept,
            **dict(sorted(self.counters.items())),
        }


# ---- checks on cited emails


def cited_emails(db: sqlite_utils.Database, inbox_id: str, q: Question) -> tuple[list[Email], str | None]:
    """The distinct emails ``q`` cites, or a drop reason when one is unknown or not before ``query_date``."""
    resolved = resolve_message_ids(db, inbox_id, q.message_ids)
    if len(resolved) < len(set(q.message_ids)):
        return [], "unknown_message_id"
    emails = load_emails(db, inbox_id, sorted(set(resolved.values())))
    if any(e.day >= q.query_date for e in emails):
        return emails, "cited_after_query_date"
    return emails, None


def answer_terms_in(answer: str, text: str) -> float:
    """Share of the answer's content words (stemmed) that occur in ``text``.

    >>> answer_terms_in("Check #1178, mailed August 28", "I mailed check #1178 on August 28th.")
    1.0
    """
    wanted = {_stem(t) for t in content_terms(answer)}
    if not wanted:
        return 1.0 if normalize(answer) in normalize(text) else 0.0
    have = {_stem(t) for t in content_terms(text)}
    return len(wanted & have) / len(wanted)


def quote_in(quote: str, emails: list[Email]) -> bool:
    """Whether ``quote`` is a verbatim span of one of ``emails`` (whitespace and case normalised)."""
    q = normalize(quote).strip(" .\"'")
    return bool(q) and any(q in normalize(e.render()) for e in emails)


def check_quote(quote: str, answer: str, emails: list[Email], *, min_chars: int = 12) -> str | None:
    """The quote must be a verbatim span of a cited email and carry at least half the answer's terms."""
    if len(normalize(quote).strip(" .\"'")) < min_chars or not quote_in(quote, emails):
        return "quote_not_found"
    if answer_terms_in(answer, quote) < 0.5:
        return "quote_unrelated"
    return None


def check_answer_verbatim(answer: str, emails: list[Email]) -> str | None:
    """The answer itself appears in a cited email (for template pairs, whose answers are copied spans)."""
    a = normalize(answer)
    return None if any(a in normalize(e.render()) for e in emails) else "answer_not_in_email"


# ---- checks by search


def fts_search(
    db: sqlite_utils.Database,
    inbox_id: str,
    terms: list[str],
    *,
    before: str | None = None,
    match_all: bool = False,
    limit: int = 10,
) -> list[int]:
    """``emails.id`` of the best BM25 matches for ``terms`` in one inbox, sent before ``before``."""
    tokens = [t for t in (re.sub(r"[^0-9a-z]", " ", t.lower()).strip() for t in terms) if t]
    if not tokens:
        return []
    query = (" AND " if match_all else " OR ").join(f'"{t}"' for t in tokens)
    sql = (
        "select e.id from emails_fts f join emails e on e.id = f.rowid"
        " where emails_fts match ? and e.inbox = ?"
    )
    params: list = [query, inbox_id]
    if before:
        sql += " and e.date < ?"
        params.append(before)
    sql += " order by bm25(emails_fts) limit ?"
    return [row[0] for row in db.execute(sql, [*params, limit]).fetchall()]


def check_findable(
    db: sqlite_utils.Database, inbox_id: str, q: Question, emails: list[Email], *, k: int = 10
) -> str | None:
    """A search with the question's content words (any of them) ranks a cited email in the top ``k``."""
    hits = fts_search(db, inbox_id, content_terms(q.question), before=q.query_date, limit=k)
    return None if {e.id for e in emails} & set(hits) else "not_findable"


def check_unanswerable(
    db: sqlite_utils.Database, inbox_id: str, q: Question, key_terms: list[str]
) -> str | None:
    """No email before ``query_date`` contains every key term an answer would need."""
    terms = [t for t in key_terms if content_terms(t)]
    if not terms:
        return "no_key_terms"
    hits = fts_search(db, inbox_id, terms, before=q.query_date, match_all=True, limit=1)
    return "answer_found" if hits else None


def check_realism(q: Question, threshold: float) -> str | None:
    """Drop pairs rated below the realism threshold (or not rated at all)."""
    return None if q.how_realistic is not None and q.how_realistic >= threshold else "unrealistic"


def check_pair(db: sqlite_utils.Database, q: Question) -> str | None:
    """Deterministic checks of a finished pair (for ``inboxrl synth check``): its inbox exists, its
    cited emails are in it and predate ``query_date``, and its ``evidence``, when given, is a verbatim
    span of a cited email. Raises ``NoInbox`` for an unknown inbox.
    """
    inbox = get_inbox(db, q.inbox_key)
    if q.kind == "unanswerable":
        return None
    emails, reason = cited_emails(db, inbox.id, q)
    if reason:
        return reason
    if q.evidence and not quote_in(q.evidence, emails):
        return "evidence_not_found"
    return None
