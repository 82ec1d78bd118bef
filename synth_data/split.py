"""Train/test splits that never let evaluation see training emails.

- By inbox (as ART·E): whole mailboxes go to test, the rest to train.
- By time within each inbox: a cut-off date per inbox; a question is train when every email it can
  depend on is before the cut-off (its ``query_date`` is on or before it), test when every email it
  cites is after the cut-off. Questions that straddle the cut-off are left out, so no test email was
  ever cited by a training question.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlite_utils

from env.db import get_inbox, resolve_message_ids
from synth_data.questions import Question


@dataclass
class Split:
    """The two sides of a split and the questions left out (with why)."""

    train: list[Question] = field(default_factory=list)
    test: list[Question] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        """Counts per side, per inbox."""
        by: dict[str, dict[str, int]] = defaultdict(lambda: {"train": 0, "test": 0})
        for side in ("train", "test"):
            for q in getattr(self, side):
                by[q.inbox_key][side] += 1
        return {
            "train": len(self.train),
            "test": len(self.test),
            "dropped": dict(self.dropped),
            "inboxes": dict(by),
            "cutoffs": dict(self.cutoffs),
        }


def _tag(q: Question, side: str) -> Question:
    return dataclasses.replace(q, split=side, extra=dict(q.extra))


def split_by_inbox(
    questions: list[Question],
    *,
    test_inboxes: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Put every question of the ``test_inboxes`` (keys or addresses) in test, the rest in train.

    Without ``test_inboxes``, a seeded shuffle picks ``round(test_fraction * inboxes)`` of them (at
    least one, and never all when there are two or more).

    >>> qs = [Question(str(i), f"u{i % 3}@x.com", "q?", "a", ["<m>"], "2001-01-02") for i in range(6)]
    >>> s = split_by_inbox(qs, test_inboxes=["u0@x.com"])
    >>> (len(s.train), len(s.test), {q.split for q in s.test})
    (4, 2, {'test'})
    """
    keys = sorted({q.inbox_key for q in questions})
    if test_inboxes:
        wanted = {t.lower() for t in test_inboxes}
        chosen = {k for k in keys if k.lower() in wanted}
        chosen |= {q.inbox_key for q in questions if q.inbox_address.lower() in wanted}
        unknown = wanted - {k.lower() for k in chosen} - {q.inbox_address.lower() for q in questions}
        if unknown:
            raise ValueError(
                f"No questions for inbox(es) {', '.join(sorted(unknown))}; inboxes here: {', '.join(keys)}"
            )
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError("test_fraction must be between 0 and 1")
        count = max(1, round(test_fraction * len(keys)))
        if len(keys) > 1:
            count = min(count, len(keys) - 1)
        shuffled = list(keys)
        random.Random(seed).shuffle(shuffled)
        chosen = set(shuffled[:count])
    out = Split()
    for q in questions:
        side = "test" if q.inbox_key in chosen else "train"
        getattr(out, side).append(_tag(q, side))
    return out


def _cited_days(db: sqlite_utils.Database, questions: list[Question]) -> dict[str, list[str]]:
    """Days of the cited emails of each question (by id), looked up in the DB."""
    days: dict[str, list[str]] = {}
    inbox_ids: dict[str, str] = {}
    for q in questions:
        if not q.message_ids:
            days[q.id] = []
            continue
        key = q.inbox_key
        if key not in inbox_ids:
            inbox_ids[key] = get_inbox(db, key).id
        resolved = resolve_message_ids(db, inbox_ids[key], q.message_ids)
        ids = sorted(set(resolved.values()))
        marks = ", ".join("?" for _ in ids)
        rows = db.execute(f"select date from emails where id in ({marks})", ids).fetchall() if ids else []
        days[q.id] = [r[0][:10] for r in rows if r[0]]
    return days


def split_by_time(
    questions: list[Question], *, test_fraction: float = 0.2, db: sqlite_utils.Database | None = None
) -> Split:
    """Within each inbox, the latest ``test_fraction`` of questions (by ``query_date``) become test.

    The cut-off is the last train question's ``query_date``. With ``db`` the cited emails' own dates
    decide whether a test question is clean; without it they are bounded by ``query_date`` minus 30
    days (the generator's rule), which is stricter. Where that leaves an inbox without a clean test
    question (a small mailbox whose mail spans a few weeks: every later question cites mail older
    than the last training question's date), the cut-off is searched among the questions' dates
    instead: train = asked on or before it, test = citing only mail after it, the test share closest
    to ``test_fraction`` (ties: the most questions kept).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    import datetime as dt

    days = _cited_days(db, questions) if db is not None else {}

    def earliest(q: Question) -> str:
        """The earliest day of the mail ``q`` cites (bounded as described above)."""
        if db is not None:
            return min(days.get(q.id) or [q.query_date])
        if not q.message_ids:
            return q.query_date
        return (dt.date.fromisoformat(q.query_date) - dt.timedelta(days=30)).isoformat()

    by_inbox: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_inbox[q.inbox_key].append(q)
    out = Split()
    dropped: dict[str, int] = defaultdict(int)
    for key, group in sorted(by_inbox.items()):
        dates = sorted(q.query_date for q in group)
        n_train = len(dates) - max(1, round(test_fraction * len(dates)))
        if n_train < 1:
            out.train += [_tag(q, "train") for q in group]
            continue
        cutoff = dates[n_train - 1]
        if not any(q.query_date > cutoff and earliest(q) > cutoff for q in group):
            cutoff = _evidence_cutoff(group, earliest, test_fraction) or cutoff
        out.cutoffs[key] = cutoff
        for q in group:
            if q.query_date <= cutoff:
                out.train.append(_tag(q, "train"))
            elif earliest(q) > cutoff:
                out.test.append(_tag(q, "test"))
            else:
                dropped["straddles_cutoff"] += 1
    out.dropped = dict(dropped)
    return out


def _evidence_cutoff(
    group: list[Question], earliest: Callable[[Question], str], test_fraction: float
) -> str | None:
    """The day that splits ``group`` into train (asked on or before it) and test (citing only later
    mail) with the test share closest to ``test_fraction``, most questions kept on a tie; None when
    no day leaves both sides a question."""
    best: tuple[float, int, str] | None = None
    for day in sorted({q.query_date for q in group} | {earliest(q) for q in group}):
        train = sum(q.query_date <= day for q in group)
        test = sum(q.query_date > day and earliest(q) > day for q in group)
        if train and test:
            score = (abs(test / (train + test) - test_fraction), -(train + test), day)
            best = min(best, score) if best else score
    return best[2] if best else None
