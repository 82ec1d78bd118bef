"""`inboxrl search` and `inboxrl read` (app/commands/search.py) on the literal two-inbox DB."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.fixtures.tools import QUERY_DATE

runner = CliRunner()


def run(*args: str):
    return runner.invoke(cli, [str(a) for a in args])


@pytest.fixture
def base(tools_db_path):
    return ["--db", tools_db_path]


def test_search_prints_a_table_of_ranked_results(base):
    result = run("search", *base, "--inbox", "alice-a", "--date", QUERY_DATE, "budget")
    assert result.exit_code == 0, result.output
    assert "alice-a: 2 best matches" in result.output
    assert result.output.index("<m4.alice@example.com>") < result.output.index("<m2.alice@example.com>")
    assert "Budget report" in result.output


def test_search_json_is_the_tool_result(base):
    result = run("search", *base, "--inbox", "alice@example.com", "--json", "price forecast")
    assert result.exit_code == 0, result.output
    [hit] = json.loads(result.output)
    assert hit["message_id"] == "<m1.alice@example.com>"
    assert "**price forecast**" in hit["snippet"]


def test_search_is_scoped_and_date_clamped(base):
    def found(*args):
        result = run("search", *base, "--json", *args)
        assert result.exit_code == 0, result.output
        return [hit["message_id"] for hit in json.loads(result.output)]

    assert found("--inbox", "alice-a", "bobsecret") == []
    assert found("--inbox", "bob-b", "bobsecret") == ["<m6.bob@example.com>"]
    assert found("--inbox", "alice-a", "merger") == ["<m3.alice@example.com>"]
    assert found("--inbox", "alice-a", "--date", QUERY_DATE, "merger") == []


def test_search_filters_and_limit(base):
    args = ("search", *base, "--inbox", "alice-a", "--json", "budget")
    assert len(json.loads(run(*args, "-n", "1").output)) == 1
    assert [h["message_id"] for h in json.loads(run(*args, "--to", "team").output)] == [
        "<m2.alice@example.com>"
    ]
    assert json.loads(run(*args, "--from", "bob").output) == []
    assert [h["message_id"] for h in json.loads(run(*args, "--before", "2001-04-01").output)] == [
        "<m4.alice@example.com>"
    ]


def test_search_sql_prints_the_query_and_its_parameters(base):
    result = run("search", *base, "--inbox", "alice-a", "--date", QUERY_DATE, "--sql", 'gas"', "price")
    assert result.exit_code == 0, result.output
    sql, params = result.output.split("\n{", 1)
    assert sql.startswith("select e.message_id") and "emails_fts match :query" in sql
    params = json.loads("{" + params)
    assert params["query"].endswith('AND ("gas""" AND "price")')
    assert params["inbox"] == "alice-a" and params["until"] == "2001-05-02T00:00:00Z"


def test_read_shows_the_whole_email(base):
    result = run("read", *base, "--inbox", "alice-a", "m1-copy.alice@example.com")
    assert result.exit_code == 0, result.output
    assert "to: Alice Smith <alice@example.com>" in result.output
    assert "cc: carol@example.com" in result.output and "bcc: dave@example.com" in result.output
    assert result.output.rstrip().endswith("Gas storage is low.")
    as_json = json.loads(run("read", *base, "--inbox", "alice-a", "--json", "<m1.alice@example.com>").output)
    assert as_json["bcc"] == ["dave@example.com"]
    full = run("read", *base, "--inbox", "alice-a", "--full", "<m1.alice@example.com>")
    assert full.exit_code == 0 and full.output.rstrip().endswith("Gas storage is low.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--inbox", "nobody", "gas"], "Pass one of them with --inbox"),
        (
            ["search", "--inbox", "alice-a", "--date", "5/1/2001", "gas"],
            "--date must be YYYY-MM-DD, got '5/1/2001'",
        ),
        (["search", "--inbox", "alice-a", "***"], "at least one keyword with letters or digits"),
        (["search", "--inbox", "alice-a", "--after", "soon", "gas"], "sent_after must be a date"),
        (
            ["read", "--inbox", "alice-a", "<m6.bob@example.com>"],
            "Find one with: inboxrl search --inbox alice-a",
        ),
        (["read", "--inbox", "alice-a", "--date", QUERY_DATE, "<m3.alice@example.com>"], "No email"),
    ],
)
def test_errors_exit_1_and_name_the_next_step(base, args, message):
    result = run(args[0], *base, *args[1:])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert message in result.output


def test_db_defaults_to_the_home_db_and_says_how_to_create_it(tools_db_path, tmp_path, monkeypatch):
    monkeypatch.setenv("INBOXRL_HOME", str(tmp_path))
    result = run("search", "--inbox", "alice-a", "gas")
    assert result.exit_code == 1
    assert f"create one with: inboxrl ingest PATH --db {tmp_path / 'inbox.db'}" in result.output
    shutil.copy(tools_db_path, tmp_path / "inbox.db")
    result = run("search", "--inbox", "alice-a", "--json", "gas")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)


def test_a_file_that_is_not_an_inbox_db(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite " * 100)
    result = run("search", "--db", junk, "--inbox", "alice-a", "gas")
    assert result.exit_code == 1 and "inboxrl ingest PATH" in result.output
