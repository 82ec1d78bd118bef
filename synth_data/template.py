"""Deterministic question/answer pairs from headers and bodies: no LLM, an easy curriculum.

Every pair cites one email and its answer is a verbatim span of it (a sender, a date, recipients, a
dollar amount); its question names the email by subject words, so a keyword search finds it. A
subject that several distinct emails share is ambiguous and is not used. ``how_realistic`` is a
fixed prior per template (a person does ask "who sent me X?", less often "who else got X?").
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator

from env.db import Inbox
from synth_data.ground import content_terms
from synth_data.questions import Question
from synth_data.sample import Email, normalize_subject

_AMOUNT = re.compile(
    r"\$\s?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:\s?(?:million|billion|mm|k)\b)?"
    r"|\$\s?\d+(?:\.\d+)?(?:\s?(?:million|billion|mm|k)\b)?",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n]*(?:\n(?!\s*\n)[^.!?\n]*)*[.!?]?")

# template name -> how_realistic prior
TEMPLATES = {"sender": 0.6, "date": 0.5, "recipients": 0.4, "amount": 0.7}


def _pair_id(inbox: Inbox, email: Email, template: str) -> str:
    digest = hashlib.sha256(f"{email.message_id}\n{template}".encode()).hexdigest()[:10]
    return f"{inbox.id}-t-{digest}"


def query_date_after(day: str, pair_id: str) -> str:
    """A query date 1-30 days after ``day``, fixed by a hash of ``pair_id`` (so reruns agree).

    >>> query_date_after("2001-05-30", "x") > "2001-05-30"
    True
    """
    import datetime as dt

    offset = 1 + int(hashlib.sha256(pair_id.encode()).hexdigest(), 16) % 30
    return (dt.date.fromisoformat(day) + dt.timedelta(days=offset)).isoformat()


def _sender(email: Email) -> str:
    """A display name when it looks like a person's name, else the address."""
    name = email.from_name
    if name and not re.search(r"[@/<>=\"]", name) and len(name.split()) >= 2:
        return name
    return email.from_address


def _subject_ok(email: Email, subject_counts: Counter) -> bool:
    subject = normalize_subject(email.subject)
    return len(content_terms(subject)) >= 2 and subject_counts[subject] == 1 and len(email.subject) <= 90


def _quoted(subject: str) -> str:
    return re.sub(r"^\s*((re|fw|fwd)\s*:\s*)+", "", subject, flags=re.IGNORECASE).strip()


def _amount_fact(email: Email) -> tuple[str, str] | None:
    """The single dollar amount of the body and the sentence around it, if there is exactly one."""
    amounts = {m.group(0) for m in _AMOUNT.finditer(email.body)}
    if len(amounts) != 1:
        return None
    amount = amounts.pop()
    for sentence in _SENTENCE.findall(email.body):
        if amount in sentence:
            return amount, " ".join(sentence.split())
    return None


def _pairs_for(
    email: Email, inbox: Inbox, owner: set[str], subject_counts: Counter
) -> Iterator[tuple[str, dict]]:
    """Every template pair one email supports, as (template, fields)."""
    if not _subject_ok(email, subject_counts):
        return
    subject = _quoted(email.subject)
    sender = _sender(email)
    from_owner = email.from_address in owner
    if not from_owner:
        yield (
            "sender",
            {
                "question": f'Who sent me the email with the subject "{subject}"?',
                "answer": sender,
                "evidence": f"From: {email.from_name} <{email.from_address}>"
                if email.from_name
                else email.from_address,
            },
        )
        yield (
            "date",
            {
                "question": f'On what date did {sender} send me the email "{subject}"?',
                "answer": email.day,
                "evidence": f"Date: {email.date}",
            },
        )
    recipients = [a for a in email.to if a not in owner]
    if from_owner and 1 <= len(email.to) <= 3 and recipients:
        yield (
            "recipients",
            {
                "question": f'Who did I send the email "{subject}" to?',
                "answer": ", ".join(email.to),
                "evidence": f"To: {', '.join(email.to)}",
            },
        )
    fact = _amount_fact(email)
    if fact:
        amount, sentence = fact
        who = "I" if from_owner else sender
        verb = "mention" if from_owner else "mention to me"
        yield (
            "amount",
            {
                "question": f'What dollar amount did {who} {verb} in the email "{subject}"?',
                "answer": amount,
                "evidence": sentence,
            },
        )


def template_pairs(emails: list[Email], inbox: Inbox, *, all_emails: list[Email]) -> Iterator[Question]:
    """Template pairs for ``emails`` (in the order given), one per email, rotating the templates.

    ``all_emails`` is the whole inbox: a subject is used only if no other distinct email has it.
    """
    owner = {a.lower() for a in inbox.addresses}
    subject_counts = Counter(
        normalize_subject(e.subject)
        for e in {(e.from_address, e.subject, e.body[:200]): e for e in all_emails}.values()
    )
    used: Counter = Counter()
    for email in emails:
        options = list(_pairs_for(email, inbox, owner, subject_counts))
        if not options:
            continue
        template, fields = min(options, key=lambda o: (used[o[0]], list(TEMPLATES).index(o[0])))
        used[template] += 1
        pair_id = _pair_id(inbox, email, template)
        yield Question(
            id=pair_id,
            inbox_address=inbox.address,
            mailbox=inbox.id,
            question=fields["question"],
            answer=fields["answer"],
            message_ids=[email.message_id],
            query_date=query_date_after(email.day, pair_id),
            kind="single",
            difficulty="easy",
            how_realistic=TEMPLATES[template],
            evidence=fields["evidence"],
            generator=f"template:{template}",
        )
