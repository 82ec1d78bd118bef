"""The CLI's tables read at 80 columns (and at 200): `search`, `runs`, `eval compare`, `ingest`,
the sources of an `ask` answer.

Each command runs for real (CliRunner, real SQLite files, real eval runs against the scripted
server) with ``COLUMNS`` set, and the rendered tables are parsed: no column may be narrower than
8 characters and no message_id or run name may be cut or broken across lines.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from env.config import Settings
from env.ingest import default_inbox_archive
from judge.evaluate import evaluate
from synth_data.questions import default_questions_path, load_questions
from tests.fixtures.scripted import ScriptedServer, tool_call
from train.registry import register_run

WIDTHS = (80, 200)
MIN_COLUMN = 8


def render(width: int, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """The command's standard output as rich renders it on a terminal ``width`` columns wide."""
    monkeypatch.setenv("COLUMNS", str(width))
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def column_widths(output: str) -> list[list[int]]:
    """The content width of every column of every table in ``output`` (from each top border)."""
    tables = []
    for line in output.splitlines():
        border = line.strip()
        if border.startswith("┏") and border.endswith("┓"):
            tables.append([len(cell) - 2 for cell in border[1:-1].split("┳")])  # minus the padding
    return tables


def assert_readable(output: str, width: int, tables: int, whole: list[str]) -> None:
    """``tables`` tables no wider than the terminal, every column >= 8 wide, each of ``whole`` on one line."""
    widths = column_widths(output)
    assert len(widths) == tables, output
    for columns in widths:
        assert min(columns) >= MIN_COLUMN, f"a column narrower than {MIN_COLUMN}: {columns}\n{output}"
    assert max(len(line) for line in output.splitlines()) <= width, output
    lines = output.splitlines()
    for text in whole:
        assert any(text in line for line in lines), f"{text!r} is cut or broken across lines:\n{output}"


@pytest.fixture
def db(default_db_path: Path, tmp_path: Path) -> Path:
    """A copy of the default inbox DB: the runs' trace store goes beside it."""
    copy = tmp_path / "inbox.db"
    shutil.copy(default_db_path, copy)
    return copy


@pytest.mark.parametrize("width", WIDTHS)
def test_search(width: int, default_db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["search", "--db", default_db_path, "--inbox", "allen-p", "--date", "2001-05-01", "-n", "5"]
    hits = json.loads(render(width, monkeypatch, *args, "--json", "gas", "price"))
    assert len(hits) == 5
    output = render(width, monkeypatch, *args, "gas", "price")
    assert_readable(output, width, 1, [h["message_id"] for h in hits])
    assert all(h["from_address"] in output for h in hits)


@pytest.mark.parametrize("width", WIDTHS)
def test_runs(width: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXRL_HOME", str(tmp_path / "home"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    settings = Settings()
    register_run(
        settings, "sft-20261206-101500", adapter, kind="sft", base_model="smollm2-135m",
        data={"question_ids": ["q1", "q2", "q3"]},
    )  # fmt: skip
    register_run(
        settings, "grpo-20261206-120000", adapter, kind="grpo", base_model="smollm2-135m",
        data={"question_ids": ["q1", "q2"]}, parent="sft-20261206-101500",
        eval_summary={"accuracy": 0.667, "hallucination_rate": 0.3},
    )  # fmt: skip
    output = render(width, monkeypatch, "runs")
    assert_readable(output, width, 1, ["sft-20261206-101500", "grpo-20261206-120000", "66.7%", "30.0%"])
    assert "grpo, from" in output


@pytest.mark.parametrize("width", WIDTHS)
def test_eval_compare(
    width: int,
    scripted: ScriptedServer,
    db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    by_id = {q.id: q for q in load_questions(default_questions_path())}
    questions = [by_id["allen-p-001"], by_id["allen-p-002"]]
    settings = scripted.settings(tmp_path, concurrency=1, max_retries=0)
    runs = [tmp_path / "evals" / f"20261206-12000{i}-smollm2-135m-a-long-run-name" for i in (1, 2)]
    for run, answers in zip(runs, [("Check #42.", "$1."), ("Check #1178.", "Almost $193,000.")], strict=True):
        for text in answers:
            scripted.queue(tool_call("return_final_answer", {"answer": text, "sources": []}))
        evaluate(questions, db_path=db, out_dir=run, settings=settings, progress=False)
    args = ["eval", "compare", *runs, "--out", tmp_path / "cmp", "--resamples", "200"]
    table = render(width, monkeypatch, *args).split("Wrote ")[0]
    assert_readable(table, width, 1, [run.name for run in runs] + ["+100.0 pp"])
    assert "hallucination" in table and "accuracy" in table


@pytest.mark.parametrize("width", WIDTHS)
def test_ingest_summary(width: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "inbox.db"
    output = render(width, monkeypatch, "ingest", default_inbox_archive(), "--db", db, "--workers", "1")
    assert_readable(output, width, 2, ["phillip.allen@enron.com", "1999-12-10", "2,681"])


@pytest.mark.parametrize("width", WIDTHS)
def test_ask_sources(
    width: int,
    scripted: ScriptedServer,
    db: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emails an answer cites, one of them not an email of the inbox (the model made it up)."""
    args = ["search", "--db", db, "--inbox", "allen-p", "--date", "2001-05-01", "-n", "1"]
    real = json.loads(render(width, monkeypatch, *args, "--json", "gas", "price"))[0]["message_id"]
    made_up = "<99999999.1075855555555.JavaMail.evans@thyme>"
    scripted.queue(tool_call("return_final_answer", {"answer": "About $5.", "sources": [real, made_up]}))
    for key, value in {
        "INBOXRL_HOME": tmp_path / "home",
        "INBOXRL_DB": db,
        "INBOXRL_BASE_URL": scripted.base_url,
        "INBOXRL_MODEL": "scripted",
        "INBOXRL_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(key, str(value))
    ask = ["ask", "--inbox", "allen-p", "--date", "2001-05-01", "What is the gas price?"]
    output = render(width, monkeypatch, *ask)
    sources = output[output.index("Sources") : output.index(" turns, ")]
    ids = [real.strip("<>"), made_up.strip("<>")]  # the agent reports them without brackets
    assert_readable(sources, width, 1, [*ids, "not an email of this inbox"])
