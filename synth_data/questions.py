"""The question/answer record every stage shares, and its files.

A question file is JSON Lines, one :class:`Question` per line (``.json`` lists and ART·E's Parquet
files load too). Records are validated on load; a bad record raises :class:`QuestionFileError`
naming ``file:line`` and the field to fix.

ART·E's published set (``corbt/enron_emails_sample_questions``: id, question, answer, message_ids,
how_realistic, inbox_address, query_date, split) loads as is: records without ``kind`` are imported
with :func:`from_art_e`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

KINDS = ("single", "multi", "unanswerable")
DIFFICULTIES = ("easy", "medium", "hard")
SPLITS = ("train", "test")


class QuestionFileError(ValueError):
    """A question file or record is malformed; the message names file:line and the field."""


@dataclass
class Question:
    """One question about one inbox, with its gold answer and the emails that support it.

    ``answer`` is ``None`` (and ``message_ids`` empty) for an unanswerable question: no email in the
    inbox before ``query_date`` answers it, so the right reply is an honest "I don't know".
    """

    id: str
    inbox_address: str
    question: str
    answer: str | None
    message_ids: list[str]
    query_date: str
    kind: str = "single"
    difficulty: str | None = None
    how_realistic: float | None = None
    evidence: str | None = None
    mailbox: str | None = None
    split: str | None = None
    generator: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise QuestionFileError("; ".join(problems))

    @property
    def inbox_key(self) -> str:
        """The mailbox key when known, else the owner address (both resolve with ``get_inbox``)."""
        return self.mailbox or self.inbox_address

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; optional fields that are unset are left out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for name in ("split", "generator", "mailbox"):
            if out[name] is None:
                del out[name]
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Question:
        """Build and validate a record; unknown keys are kept in ``extra`` and written back."""
        if not isinstance(data, dict):
            raise QuestionFileError(f"expected a JSON object, got {type(data).__name__}")
        if "kind" not in data:
            return from_art_e(data)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [
            n for n in ("id", "inbox_address", "question", "message_ids", "query_date") if n not in data
        ]
        if missing:
            raise QuestionFileError(f"missing field(s): {', '.join(missing)}")
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        known.setdefault("answer", None)
        if isinstance(known.get("id"), int):
            known["id"] = str(known["id"])
        return cls(**known, extra=extra)


def _problems(q: Question) -> list[str]:
    """Everything wrong with a record, as field-named messages (empty when valid)."""
    problems = []
    for name in ("id", "inbox_address", "question"):
        value = getattr(q, name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a non-empty string, got {value!r}")
    if q.kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}, got {q.kind!r}")
    if not isinstance(q.message_ids, list) or not all(isinstance(m, str) and m for m in q.message_ids):
        problems.append(f"message_ids must be a list of Message-ID strings, got {q.message_ids!r}")
    elif q.kind == "unanswerable":
        if q.answer is not None or q.message_ids:
            problems.append("an unanswerable question has answer null and message_ids []")
    else:
        if not isinstance(q.answer, str) or not q.answer.strip():
            problems.append(
                f"answer must be a non-empty string for kind {q.kind!r} (null only when unanswerable)"
            )
        if not q.message_ids:
            problems.append(f"message_ids must cite at least one email for kind {q.kind!r}")
    if not _is_date(q.query_date):
        problems.append(f"query_date must be YYYY-MM-DD, got {q.query_date!r}")
    if q.difficulty is not None and q.difficulty not in DIFFICULTIES:
        problems.append(f"difficulty must be one of {', '.join(DIFFICULTIES)} or null, got {q.difficulty!r}")
    if q.how_realistic is not None and (
        isinstance(q.how_realistic, bool)
        or not isinstance(q.how_realistic, int | float)
        or not 0.0 <= q.how_realistic <= 1.0
    ):
        problems.append(f"how_realistic must be a number in [0, 1] or null, got {q.how_realistic!r}")
    if q.split is not None and q.split not in SPLITS:
        problems.append(f"split must be one of {', '.join(SPLITS)} or null, got {q.split!r}")
    for name in ("evidence", "mailbox", "generator"):
        value = getattr(q, name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name} must be a string or null, got {value!r}")
    return problems


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def from_art_e(data: dict[str, Any]) -> Question:
    """Import one record of ART·E's question set (``corbt/enron_emails_sample_questions``).

    ART·E has no ``kind`` or ``difficulty``: ``kind`` is ``single`` for one cited email and
    ``multi`` for several; its integer ids become strings; a ``query_date`` given with a time keeps
    only the date.

    >>> q = from_art_e({"id": 7, "question": "When is the offsite?", "answer": "Friday",
    ...     "message_ids": ["<1.JavaMail.evans@thyme>"], "how_realistic": 0.8,
    ...     "inbox_address": "a@enron.com", "query_date": "2001-05-03 00:00:00", "split": "test"})
    >>> (q.id, q.kind, q.query_date, q.split)
    ('7', 'single', '2001-05-03', 'test')
    """
    missing = [
        n for n in ("id", "question", "answer", "message_ids", "inbox_address", "query_date") if n not in data
    ]
    if missing:
        raise QuestionFileError(f"ART·E record lacks field(s): {', '.join(missing)}")
    message_ids = list(data["message_ids"] or [])
    query_date = data["query_date"]
    if isinstance(query_date, dt.datetime | dt.date):
        query_date = query_date.isoformat()
    known = {
        "id",
        "question",
        "answer",
        "message_ids",
        "how_realistic",
        "inbox_address",
        "query_date",
        "split",
    }
    return Question(
        id=str(data["id"]),
        inbox_address=data["inbox_address"],
        question=data["question"],
        answer=data["answer"],
        message_ids=message_ids,
        query_date=str(query_date)[:10],
        kind="multi" if len(message_ids) > 1 else "single",
        how_realistic=data.get("how_realistic"),
        split=data.get("split"),
        generator="art-e",
        extra={k: v for k, v in data.items() if k not in known},
    )


# ---- files


def load_questions(path: str | Path) -> list[Question]:
    """Load and validate a question file: JSON Lines, a JSON list, or Parquet (ART·E's format).

    Raises :class:`QuestionFileError` naming ``file:line`` (``file:row N`` for JSON lists and
    Parquet) for the first bad record, and ``FileNotFoundError`` for a missing file.
    Duplicate ids are an error too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No question file at {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [(f"row {i + 1}", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise QuestionFileError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
        if not isinstance(data, list):
            raise QuestionFileError(f"{path}: a .json question file holds a list of records")
        rows = [(f"row {i + 1}", r) for i, r in enumerate(data)]
    else:
        rows = list(_jsonl_rows(path))
    questions, seen = [], {}
    for where, row in rows:
        try:
            q = Question.from_dict(row)
        except QuestionFileError as e:
            raise QuestionFileError(f"{path}:{where}: {e}") from None
        except TypeError as e:
            raise QuestionFileError(f"{path}:{where}: {e}") from None
        if q.id in seen:
            raise QuestionFileError(f"{path}:{where}: duplicate id {q.id!r} (first at {seen[q.id]})")
        seen[q.id] = where
        questions.append(q)
    return questions


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield str(lineno), json.loads(line)
            except json.JSONDecodeError as e:
                raise QuestionFileError(
                    f"{path}:{lineno}: not valid JSON: {e.msg} (column {e.colno})"
                ) from None


def save_questions(path: str | Path, questions: Iterable[Question]) -> Path:
    """Write questions as JSON Lines atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for q in questions:
                f.write(json.dumps(q.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_questions_path() -> Path:
    """The question set shipped for the default inbox (allen-p, south-s, grigsby-m)."""
    return Path(str(resources.files("synth_data").joinpath("data", "default_questions.jsonl")))
