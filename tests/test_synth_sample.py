"""Sampling emails to write questions from: bulk mail and duplicates skipped, spread across time."""

from __future__ import annotations

from pathlib import Path

from env.db import get_inbox, open_db
from synth_data.sample import candidate_emails, load_emails, sample_batches


def test_bulk_mail_placeholder_dates_and_duplicates_are_skipped(synth_db_path: Path) -> None:
    db = open_db(synth_db_path)
    emails = load_emails(db, "jane-d")
    kept, skipped = candidate_emails(emails)
    assert dict(skipped) == {"bulk_sender": 1, "mass_mailing": 1, "bad_date": 1, "duplicate": 1}
    ids = {e.message_id for e in kept}
    assert "<3.jane@thyme>" not in ids  # newsletter
    assert "<6.jane@thyme>" not in ids  # 30 recipients
    assert "<7.jane@thyme>" not in ids  # 1980 placeholder date
    assert ("<1.jane@thyme>" in ids) != ("<4.jane@thyme>" in ids)  # one copy of the duplicate
    assert all(e.message_id.endswith("jane@thyme>") for e in kept)  # never another inbox's mail


def test_batches_are_seeded_and_spread_across_months_and_senders(synth_db_path: Path) -> None:
    db = open_db(synth_db_path)
    inbox = get_inbox(db, "jane-d")
    batches, _ = sample_batches(db, inbox, batch_size=5, seed=1)
    again, _ = sample_batches(db, inbox, batch_size=5, seed=1)
    other, _ = sample_batches(db, inbox, batch_size=5, seed=2)
    assert [b.key for b in batches] == [b.key for b in again]
    assert [b.key for b in batches] != [b.key for b in other]
    assert sum(len(b.emails) for b in batches) == 15
    first = batches[0].emails
    assert len({e.date[:7] for e in first}) == 5  # five emails, five different months
    assert len({e.from_address for e in first}) >= 3
    recipients = {e.message_id: e.to for b in batches for e in b.emails}
    assert recipients["<2.jane@thyme>"] == ("carol.white@enron.com",)
