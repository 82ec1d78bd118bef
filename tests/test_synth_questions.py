"""The question record and its files: validation with file:line errors, atomic saves, ART·E import."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from synth_data.questions import (
    Question,
    QuestionFileError,
    default_questions_path,
    load_questions,
    save_questions,
)

GOOD = {
    "id": "q1",
    "inbox_address": "jane.doe@enron.com",
    "question": "When does the Tenaska storage contract renew?",
    "answer": "June 1",
    "message_ids": ["<5.jane@thyme>"],
    "query_date": "2001-05-20",
    "kind": "single",
    "difficulty": "easy",
    "how_realistic": 0.7,
    "evidence": "The storage contract with Tenaska renews on June 1.",
    "mailbox": "jane-d",
}

ART_E = [
    {
        "id": 11,
        "question": "When is the Houston offsite?",
        "answer": "Friday at 10am",
        "message_ids": ["<2.jane@thyme>"],
        "how_realistic": 0.8,
        "inbox_address": "jane.doe@enron.com",
        "query_date": "2001-04-10",
        "split": "train",
    },
    {
        "id": 12,
        "question": "What did Bob bid and when does the seller answer?",
        "answer": "$2.7 million; by March 20",
        "message_ids": ["<1.jane@thyme>", "<4.jane@thyme>"],
        "how_realistic": 0.6,
        "inbox_address": "jane.doe@enron.com",
        "query_date": "2001-03-15",
        "split": "test",
    },
]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_shipped_default_set_loads() -> None:
    questions = load_questions(default_questions_path())
    assert len(questions) == 82
    assert {q.mailbox for q in questions} == {"allen-p", "south-s", "grigsby-m"}
    kinds = Counter(q.kind for q in questions)
    assert kinds["unanswerable"] > 0 and kinds["multi"] > 0
    for q in questions:
        if q.kind == "unanswerable":
            assert q.answer is None and q.message_ids == []
        else:
            assert q.answer and q.message_ids and q.evidence


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path: Path) -> None:
    row = {**GOOD, "source": "hand-written"}
    path = save_questions(tmp_path / "q.jsonl", [Question.from_dict(row)])
    (loaded,) = load_questions(path)
    assert loaded.to_dict() == row
    assert [p.name for p in tmp_path.iterdir()] == ["q.jsonl"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "q.jsonl:3: not valid JSON"),
        (json.dumps({**GOOD, "id": "q3", "kind": "maybe"}), "q.jsonl:3: kind must be one of"),
        (
            json.dumps({**GOOD, "id": "q3", "query_date": "05/20/2001"}),
            "q.jsonl:3: query_date must be YYYY-MM-DD",
        ),
        (json.dumps({**GOOD, "id": "q3", "kind": "unanswerable"}), "q.jsonl:3: an unanswerable question"),
        (json.dumps({**GOOD, "id": "q3", "message_ids": []}), "q.jsonl:3: message_ids must cite"),
        (json.dumps({**GOOD, "id": "q3", "how_realistic": 3}), "q.jsonl:3: how_realistic must be"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "question"} | {"id": "q3"}), "q.jsonl:3: missing"),
        (json.dumps({**GOOD, "id": "q1"}), "q.jsonl:3: duplicate id 'q1' (first at 1)"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [GOOD, {**GOOD, "id": "q2"}, line])
    with pytest.raises(QuestionFileError) as err:
        load_questions(path)
    assert message in str(err.value)


def test_failed_save_leaves_the_old_file_intact(tmp_path: Path) -> None:
    path = save_questions(tmp_path / "q.jsonl", [Question.from_dict(GOOD)])
    before = path.read_text()

    def broken():
        yield Question.from_dict({**GOOD, "id": "new"})
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        save_questions(path, broken())
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.jsonl"]


def test_art_e_records_load_from_jsonl_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = _write_jsonl(tmp_path / "art_e.jsonl", ART_E)
    parquet = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(ART_E), parquet)
    for path in (jsonl, parquet):
        one, two = load_questions(path)
        assert (one.id, one.kind, one.split, one.generator) == ("11", "single", "train", "art-e")
        assert (two.kind, two.split, two.query_date) == ("multi", "test", "2001-03-15")
        assert one.difficulty is None and one.answer == "Friday at 10am"


def test_cli_imports_art_e_and_checks_the_result(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "art_e.parquet"
    pq.write_table(pa.Table.from_pylist(ART_E), parquet)
    out = tmp_path / "imported.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", "import", str(parquet), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Imported 2 questions" in result.output
    assert [q.id for q in load_questions(out)] == ["11", "12"]
    result = runner.invoke(cli, ["synth", "check", str(out)])
    assert result.exit_code == 0, result.output
    assert "kind: multi" in result.output


def test_cli_check_reports_a_bad_file_with_its_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [GOOD, {**GOOD, "id": "q2", "answer": None}])
    result = CliRunner().invoke(cli, ["synth", "check", str(path)])
    assert result.exit_code == 1
    assert "q.jsonl:2: answer must be a non-empty string" in result.output


def test_doctests_of_the_synth_modules_pass() -> None:
    import doctest

    from synth_data import generate, ground, llm, questions, sample, split, template

    for module in (questions, sample, ground, template, llm, split, generate):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
    assert doctest.testmod(ground).attempted >= 8
