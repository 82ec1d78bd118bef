"""The agent's tools (env/tools.py): scoping, date clamping, ranking, schemas, dispatch, hostile input."""

from __future__ import annotations

import inspect
import json
import random
import re
import statistics
import time
from datetime import date, timedelta

import pytest

from env.db import NoInbox, ensure_schema, list_inboxes, open_db
from env.tools import TOOL_NAMES, InboxTools, ToolError, make_tools
from synth_data.questions import default_questions_path, load_questions
from tests.fixtures.tools import QUERY_DATE, build_tools_db


@pytest.fixture
def db(tools_db_path):
    db = open_db(tools_db_path)
    yield db
    db.close()


@pytest.fixture
def alice(db) -> InboxTools:
    return make_tools(db, "alice-a", QUERY_DATE)


def ids(results: list[dict]) -> list[str]:
    return [r["message_id"] for r in results]


# ---- binding: inbox and date ----


def test_inbox_resolves_by_key_or_any_owner_address(db):
    assert make_tools(db, "alice-a", None).inbox.id == "alice-a"
    assert make_tools(db, "A.Smith@Example.com", None).inbox.id == "alice-a"
    with pytest.raises(NoInbox, match="alice-a"):
        make_tools(db, "nobody@example.com", None)


def test_query_date_accepts_date_or_string(db):
    assert make_tools(db, "alice-a", date(2001, 5, 1)).until == "2001-05-02T00:00:00Z"
    assert make_tools(db, "alice-a", "2001-05-01").until == "2001-05-02T00:00:00Z"
    assert make_tools(db, "alice-a", "2001-05-01T23:30:00-05:00").until == "2001-05-03T00:00:00Z"
    assert make_tools(db, "alice-a", None).until is None
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        make_tools(db, "alice-a", "May 1st")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        make_tools(db, "alice-a", "2001-05-01junk")


def test_search_is_scoped_to_the_inbox(db, alice):
    assert ids(alice.search_emails(["forecast"])) == ["<m1.alice@example.com>"]
    assert alice.search_emails(["bobsecret"]) == []
    bob = make_tools(db, "bob@example.com", QUERY_DATE)
    assert ids(bob.search_emails(["bobsecret"])) == ["<m6.bob@example.com>"]


def test_future_and_undated_emails_are_invisible_after_the_clamp(db, alice):
    assert alice.search_emails(["merger"]) == []
    assert alice.search_emails(["zebra"]) == []
    with pytest.raises(ToolError, match="use a message_id from search_emails"):
        alice.read_email("<m3.alice@example.com>")
    # The clamp includes the whole query day; None shows everything.
    on_the_day = make_tools(db, "alice-a", "2001-06-01")
    assert ids(on_the_day.search_emails(["merger"])) == ["<m3.alice@example.com>"]
    unclamped = make_tools(db, "alice-a", None)
    assert ids(unclamped.search_emails(["zebra"])) == ["<m5.alice@example.com>"]
    # Still clamped through the OR fallback and explicit date filters.
    assert "<m3.alice@example.com>" not in ids(alice.search_emails(["merger", "gas"]))
    assert alice.search_emails(["gas"], sent_after="2001-05-15") == []


# ---- search_emails ----


def test_search_ranks_by_bm25_not_by_date(alice):
    # m4 (March) says "budget" four times, subject included; m2 (April, newer) once in a long body.
    assert ids(alice.search_emails(["budget"])) == ["<m4.alice@example.com>", "<m2.alice@example.com>"]


def test_search_result_fields_and_highlighted_snippet(alice):
    [hit] = alice.search_emails(["henry hub"])
    assert set(hit) == {"message_id", "subject", "from_address", "date", "snippet"}
    assert hit["subject"] == "Gas price forecast for May"
    assert hit["from_address"] == "bob@example.com"
    assert hit["date"] == "2001-04-20T10:00:00Z"
    assert "**Henry Hub**" in hit["snippet"]


def test_very_long_bodies_get_a_marked_snippet_and_are_cut_when_read(tmp_path):
    db = open_db(build_tools_db(tmp_path / "long.db"))
    filler = "lorem ipsum dolor sit amet " * 2000  # 54,000 characters
    body = filler + "The Quarterly AARDVARK forecasts are attached. " + filler
    db["emails"].insert(
        {"id": 50, "inbox": "alice-a", "message_id": "<long>", "subject": "Long", "body": body}
    )
    db["message_ids"].insert({"inbox": "alice-a", "message_id": "<long>", "email_id": 50})
    [hit] = make_tools(db, "alice-a", None).search_emails(["aardvark", "forecast"])
    assert hit["message_id"] == "<long>"
    assert hit["snippet"].startswith("… ") and hit["snippet"].endswith(" …")
    assert "The Quarterly **AARDVARK** **forecasts** are attached." in hit["snippet"]
    assert len(hit["snippet"]) < 300
    email = make_tools(db, "alice-a", None, max_body_chars=100).read_email("<long>")
    assert (
        email["body"] == body[:100] + f"\n[... {len(body) - 100:,} more characters of this email not shown]"
    )
    assert make_tools(db, "alice-a", None, max_body_chars=None).read_email("<long>")["body"] == body
    assert len(make_tools(db, "alice-a", None).read_email("<long>")["body"]) < 20_100
    db["emails"].insert(
        {"id": 51, "inbox": "alice-a", "message_id": "<empty>", "subject": "Zeppelin", "body": None}
    )
    db["message_ids"].insert({"inbox": "alice-a", "message_id": "<empty>", "email_id": 51})
    [hit] = make_tools(db, "alice-a", None).search_emails(["zeppelin"])
    assert hit["snippet"] == "**Zeppelin**"
    body = "Line one about the walrus.\n\n    Indented   line,\tthen a tab."
    db["emails"].insert({"id": 52, "inbox": "alice-a", "message_id": "<ws>", "subject": "ws", "body": body})
    db["message_ids"].insert({"inbox": "alice-a", "message_id": "<ws>", "email_id": 52})
    [hit] = make_tools(db, "alice-a", None).search_emails(["walrus"])
    assert hit["snippet"] == "Line one about the **walrus**. Indented line, then a tab."


def test_keywords_are_stemmed_and_case_insensitive(alice):
    assert ids(alice.search_emails(["REPORTS"])) == ["<m4.alice@example.com>"]


def test_all_keywords_first_then_any(alice):
    assert ids(alice.search_emails(["gas", "storage"])) == ["<m1.alice@example.com>"]
    # No email has both "offsite" and "storage": emails with either come back.
    assert set(ids(alice.search_emails(["offsite", "storage"]))) == {
        "<m1.alice@example.com>",
        "<m2.alice@example.com>",
    }


def test_a_multi_word_keyword_is_a_phrase(alice):
    assert ids(alice.search_emails(["price forecast"])) == ["<m1.alice@example.com>"]
    assert alice.search_emails(["forecast price"]) == []


def test_filters(alice):
    assert ids(alice.search_emails(["budget"], from_addr="CAROL")) == [
        "<m4.alice@example.com>",
        "<m2.alice@example.com>",
    ]
    assert alice.search_emails(["budget"], from_addr="bob@example.com") == []
    assert ids(alice.search_emails(["budget"], to_addr="team@")) == ["<m2.alice@example.com>"]
    assert ids(alice.search_emails(["gas"], to_addr="dave")) == ["<m1.alice@example.com>"]  # bcc counts
    assert ids(alice.search_emails(["budget"], sent_after="2001-04-01")) == ["<m2.alice@example.com>"]
    assert ids(alice.search_emails(["budget"], sent_before="2001-04-01")) == ["<m4.alice@example.com>"]
    assert ids(alice.search_emails(["budget"], sent_after="2001-04-25T16:30:00Z")) == [
        "<m2.alice@example.com>"
    ]
    # LIKE wildcards in a filter are literal characters.
    assert alice.search_emails(["budget"], from_addr="%") == []


def test_max_results(alice):
    assert len(alice.search_emails(["budget"], max_results=1)) == 1
    assert len(alice.search_emails(["budget"], max_results=1000)) == 2
    with pytest.raises(ToolError, match="max_results"):
        alice.search_emails(["budget"], max_results=0)


def test_every_search_result_can_be_read(alice):
    for keyword in ["gas", "budget", "team", "the"]:
        for hit in alice.search_emails([keyword], max_results=50):
            assert alice.read_email(hit["message_id"])["message_id"] == hit["message_id"]


def test_search_sql_is_the_query_search_runs(alice):
    sql, params = alice.search_sql(["gas"], from_addr="bob")
    assert "emails_fts match :query" in sql and "e.inbox = :inbox" in sql and "e.date < :until" in sql
    assert params["query"] == 'inbox_token : "inbox616c6963652d61" AND ("gas")'
    assert params["inbox"] == "alice-a" and params["from_addr"] == "%bob%"
    assert [row[0] for row in alice.db.execute(sql, params)] == ids(
        alice.search_emails(["gas"], from_addr="bob")
    )


def test_the_inbox_token_is_not_searchable_text(alice):
    with pytest.raises(ToolError, match="at least one keyword"):
        alice.search_emails(["inbox616c6963652d61"])
    with pytest.raises(ToolError, match="at least one keyword"):
        alice.search_emails(["(Inbox616C6963652D61s)"])
    assert alice.search_emails(["inbox616c6963652d61", "zzz"]) == []
    assert ids(alice.search_emails(["inbox616c6963652d61", "storage"])) == ["<m1.alice@example.com>"]


def test_an_index_built_before_inbox_token_is_rebuilt(tmp_path):
    """A DB whose FTS5 index has only subject and body gets inbox_token on its next ensure_schema."""
    path = build_tools_db(tmp_path / "old.db")
    db = open_db(path)
    db["emails"].disable_fts()
    db["emails"].enable_fts(["subject", "body"], create_triggers=True, tokenize="porter")
    with pytest.raises(ValueError, match=r"upgrade it once with env.db.ensure_schema\(db\)"):
        make_tools(db, "alice-a", QUERY_DATE)
    ensure_schema(db)
    assert "inbox_token" in {row[1] for row in db.execute("pragma table_info(emails_fts)")}
    tools = make_tools(db, "alice-a", QUERY_DATE)
    assert ids(tools.search_emails(["forecast"])) == ["<m1.alice@example.com>"]
    db["emails"].insert(
        {
            "id": 99,
            "inbox": "alice-a",
            "message_id": "<new>",
            "subject": "forecast",
            "date": "2001-01-01T00:00:00Z",
        }
    )
    assert ids(tools.search_emails(["forecast"])) == ["<new>", "<m1.alice@example.com>"]


# ---- read_email ----


def test_read_email_returns_recipients(alice):
    email = alice.read_email("<m1.alice@example.com>")
    assert email == {
        "message_id": "<m1.alice@example.com>",
        "subject": "Gas price forecast for May",
        "from_address": "bob@example.com",
        "from_name": "Bob Jones",
        "date": "2001-04-20T10:00:00Z",
        "to": ["Alice Smith <alice@example.com>"],
        "cc": ["carol@example.com"],
        "bcc": ["dave@example.com"],
        "folder": "inbox",
        "body": "Alice, the gas price forecast for May is $5.10 at Henry Hub. Gas storage is low.",
    }


@pytest.mark.parametrize(
    "message_id",
    [
        "m1.alice@example.com",
        " <m1.alice@example.com> ",
        "<m1-copy.alice@example.com>",
        "m1-copy.alice@example.com",
    ],
)
def test_read_email_accepts_any_copy_with_or_without_brackets(alice, message_id):
    assert alice.read_email(message_id)["message_id"] == "<m1.alice@example.com>"


def test_read_email_refuses_other_inboxes(alice):
    with pytest.raises(ToolError, match="No email"):
        alice.read_email("<m6.bob@example.com>")


# ---- return_final_answer ----


def test_i_dont_know_is_a_first_class_answer(alice):
    assert alice.return_final_answer("I don't know", []) == {"answer": "I don't know", "sources": []}
    result = alice.call("return_final_answer", {"answer": "I don't know", "sources": []})
    assert result.error is None and result.is_final
    assert json.loads(result.content) == {"answer": "I don't know", "sources": []}


def test_final_answer_cleans_sources(alice):
    answer = alice.return_final_answer(" $5.10 ", [" <m1.alice@example.com>", ""])
    assert answer == {"answer": "$5.10", "sources": ["m1.alice@example.com"]}


# ---- schemas ----


def test_schemas_are_generated_from_the_signatures():
    schemas = InboxTools.schemas()
    assert [s["function"]["name"] for s in schemas] == list(TOOL_NAMES)
    for schema in schemas:
        function = schema["function"]
        method = getattr(InboxTools, function["name"])
        params = list(inspect.signature(method).parameters)[1:]
        assert list(function["parameters"]["properties"]) == params
        assert function["description"].startswith(inspect.getdoc(method).splitlines()[0])
        assert all(p["description"] for p in function["parameters"]["properties"].values())
        assert "inbox" not in json.dumps(function["parameters"]).replace("the inbox", "")
        assert "query_date" not in json.dumps(function["parameters"])
    search = schemas[0]["function"]["parameters"]
    assert search["required"] == ["keywords"]
    assert search["properties"]["keywords"] == {
        "description": 'Words or short phrases to look for, e.g. ["gas", "price forecast"].',
        "items": {"type": "string"},
        "type": "array",
    }
    assert search["properties"]["from_addr"]["type"] == "string"
    assert search["properties"]["max_results"]["default"] == 10


# ---- call(): dispatch ----


def test_call_runs_json_arguments(alice):
    result = alice.call("search_emails", '{"keywords": ["forecast"]}')
    assert result.error is None and not result.is_final
    assert ids(json.loads(result.content)) == ["<m1.alice@example.com>"]
    result = alice.call("read_email", {"message_id": "m2.alice@example.com"})
    assert json.loads(result.content)["subject"] == "Team offsite"


@pytest.mark.parametrize(
    ("name", "arguments", "hint"),
    [
        ("delete_emails", "{}", "the tools are search_emails, read_email, return_final_answer"),
        ("search_emails", '{"keywords": ["gas"', "not valid JSON"),
        ("search_emails", '["gas"]', "must be a JSON object"),
        ("search_emails", "", "keywords is required"),
        ("search_emails", None, "keywords is required"),
        (
            "search_emails",
            {"keywords": ["gas"], "inbox": "bob-b"},
            "inbox is not an argument of search_emails",
        ),
        ("search_emails", {"keywords": ["gas"], "query_date": None}, "query_date is not an argument"),
        ("read_email", {"message_id": "nope"}, "No email 'nope' in this inbox"),
        ("return_final_answer", {"answer": "x"}, "sources is required"),
    ],
)
def test_call_turns_bad_calls_into_tool_errors(alice, name, arguments, hint):
    result = alice.call(name, arguments)
    assert result.error is not None and hint in result.error
    assert result.content == f"Error: {result.error}"
    assert not result.is_final


# ---- hostile input: every row must give a tool error or a valid in-scope result, never a crash ----

VISIBLE = {
    "<m1.alice@example.com>",
    "<m2.alice@example.com>",
    "<m4.alice@example.com>",
}  # alice-a up to 2001-05-01
LONG = "gas " * 2500  # 10,000 characters

HOSTILE_KEYWORDS = [
    '"',
    '""',
    'gas"',
    '"gas',
    'gas "price',
    "gas NEAR price",
    "NEAR(gas price)",
    "NEAR",
    "gas*",
    "*",
    "-gas",
    "gas -price",
    "subject:gas",
    "body:merger",
    "^gas",
    "gas)",
    "(gas",
    "((",
    "gas AND",
    "AND",
    "OR",
    "NOT",
    "gas OR merger",
    "NOT gas",
    "merger",
    "zebra",
    "bobsecret",
    "{subject body}: merger",
    "inbox:bob-b",
    "'; drop table emails; --",
    "1' OR '1'='1",
    "emails_fts",
    "Ünïcödé",
    "🔥",
    "🔥gas🔥",
    "مرحبا بالعالم",
    "\u202egas",
    "gas\u200bprice",
    "gas\x00merger",
    "\x00",
    "a" * 10_000,
    LONG,
]


@pytest.mark.parametrize("keyword", HOSTILE_KEYWORDS, ids=lambda k: repr(k[:20]))
def test_hostile_keywords(db, alice, keyword):
    for keywords in ([keyword], ["gas", keyword], [keyword, keyword]):
        result = alice.call("search_emails", {"keywords": keywords})
        check_hostile_result(result)
    assert db["emails"].count == 6


HOSTILE_CALLS = [
    ("search_emails", {"keywords": "gas"}),
    ("search_emails", {"keywords": 5}),
    ("search_emails", {"keywords": None}),
    ("search_emails", {"keywords": [["gas"]]}),
    ("search_emails", {"keywords": [1, 2]}),
    ("search_emails", {"keywords": {"gas": 1}}),
    ("search_emails", {"keywords": []}),
    ("search_emails", {"keywords": [""]}),
    ("search_emails", {"keywords": [" ", "\t"]}),
    ("search_emails", {"keywords": ["gas"] * 1000}),
    ("search_emails", {"keywords": ["gas"], "max_results": "ten"}),
    ("search_emails", {"keywords": ["gas"], "max_results": -1}),
    ("search_emails", {"keywords": ["gas"], "max_results": 10**30}),
    ("search_emails", {"keywords": ["gas"], "max_results": 1.5}),
    ("search_emails", {"keywords": ["gas"], "max_results": None}),
    ("search_emails", {"keywords": ["gas"], "from_addr": 5}),
    ("search_emails", {"keywords": ["gas"], "from_addr": "%' OR 1=1 --"}),
    ("search_emails", {"keywords": ["gas"], "from_addr": "_"}),
    ("search_emails", {"keywords": ["gas"], "to_addr": "x" * 10_000}),
    ("search_emails", {"keywords": ["gas"], "from_addr": None, "to_addr": None}),
    ("search_emails", {"keywords": ["gas"], "sent_after": "yesterday"}),
    ("search_emails", {"keywords": ["gas"], "sent_after": "2001-13-45"}),
    ("search_emails", {"keywords": ["merger"], "sent_after": "2001-05-15"}),
    ("search_emails", {"keywords": ["merger"], "sent_before": "2099-01-01"}),
    ("search_emails", {"keywords": ["gas"], "sent_before": "9" * 10_000}),
    ("search_emails", {"keywords": ["gas"], "sent_after": ["2001-01-01"]}),
    ("search_emails", '{"keywords": ["gas"], "keywords": ["merger"]}'),
    ("search_emails", "[" * 100_000),
    ("search_emails", "null"),
    ("search_emails", '"gas"'),
    ("search_emails", LONG),
    ("read_email", {"message_id": None}),
    ("read_email", {"message_id": 5}),
    ("read_email", {"message_id": ["<m1.alice@example.com>"]}),
    ("read_email", {"message_id": ""}),
    ("read_email", {"message_id": "<>"}),
    ("read_email", {"message_id": "%"}),
    ("read_email", {"message_id": "<m1%"}),
    ("read_email", {"message_id": "'; drop table emails; --"}),
    ("read_email", {"message_id": "x" * 10_000}),
    ("read_email", {"message_id": "🔥"}),
    ("read_email", {"message_id": "<m6.bob@example.com>"}),
    ("read_email", {"message_id": "<m3.alice@example.com>"}),
    ("read_email", {"message_id": "m3.alice@example.com"}),
    ("read_email", {"message_id": "<m5.alice@example.com>"}),
    ("read_email", {"message_id": "6"}),
    ("read_email", {}),
    ("return_final_answer", {"answer": None, "sources": []}),
    ("return_final_answer", {"answer": "x", "sources": "<m1.alice@example.com>"}),
    ("return_final_answer", {"answer": "x", "sources": [None]}),
    ("return_final_answer", {"answer": "x" * 10_000, "sources": ["🔥"]}),
    ("return_final_answer", {"answer": "x", "sources": ["m"] * 1000}),
    ("return_final_answer", {"answer": ["x"], "sources": []}),
    ("functions.search_emails", {"keywords": ["gas"]}),
    ("", {}),
    ("__init__", {}),
    ("call", {"name": "read_email", "arguments": {}}),
    ("schemas", {}),
    ("search_sql", {"keywords": ["gas"]}),
]


@pytest.mark.parametrize(("name", "arguments"), HOSTILE_CALLS, ids=lambda v: repr(v)[:40])
def test_hostile_calls(db, alice, name, arguments):
    check_hostile_result(alice.call(name, arguments))
    assert db["emails"].count == 6


def check_hostile_result(result):
    """A clear tool error, or a valid result holding nothing outside alice-a before the query date."""
    if result.error is not None:
        assert "unexpectedly" not in result.error, result.error
        assert result.content.startswith("Error: ") and len(result.content) < 1000
        return
    value = json.loads(result.content)
    if result.name == "search_emails":
        assert {hit["message_id"] for hit in value} <= VISIBLE
    elif result.name == "read_email":
        assert value["message_id"] in VISIBLE
    else:
        assert result.is_final and set(value) == {"answer", "sources"}


def test_hostile_keywords_that_hold_words_still_search(alice):
    # Syntax characters are literal: the words around them are still found.
    for keyword in ['gas"', "(gas", "gas)", "gas*", "-gas", "^gas", "🔥gas🔥", "gas\u200b"]:
        found = ids(alice.search_emails([keyword]))
        assert "<m1.alice@example.com>" in found, keyword
    assert alice.search_emails(["gas NEAR price"]) == []  # a literal phrase, not the NEAR operator
    assert alice.search_emails(["body:forecast"]) == []  # the phrase "body forecast", not a column filter
    assert alice.search_emails(["NOT storage"]) == []  # the phrase "not storage", not the NOT operator
    assert alice.search_emails(["inbox:bob-b"]) == []


# ---- real data: the shipped default inbox (allen-p, south-s, grigsby-m) ----


@pytest.fixture(scope="module")
def real_db(default_db_path):
    db = open_db(default_db_path)
    yield db
    db.close()


def sample_keywords(db, inbox: str, n: int, seed: int = 0) -> list[list[str]]:
    """``n`` keyword lists of one or two words from the inbox's own subjects."""
    rng = random.Random(seed)
    subjects = [r[0] for r in db.execute("select subject from emails where inbox = ? order by id", [inbox])]
    words = sorted({w.lower() for s in subjects for w in re.findall(r"[A-Za-z]{4,}", s or "")})
    return [rng.sample(words, rng.choice([1, 2])) for _ in range(n)]


def owner_and_date(db, message_id: str) -> tuple[str, str | None]:
    return db.execute(
        "select e.inbox, e.date from message_ids m join emails e on e.id = m.email_id where m.message_id = ?",
        [message_id],
    ).fetchone()


def test_real_inbox_scoping_and_date_clamp(real_db):
    inboxes = [i.id for i in list_inboxes(real_db)]
    assert set(inboxes) == {"allen-p", "south-s", "grigsby-m"}
    searched = found = 0
    for inbox in inboxes:
        first, last = real_db.execute(
            "select min(date), max(date) from emails where inbox = ? and date > '1990'", [inbox]
        ).fetchone()
        middle = (
            date.fromisoformat(first[:10])
            + (date.fromisoformat(last[:10]) - date.fromisoformat(first[:10])) / 2
        )
        tools = make_tools(real_db, inbox, middle)
        for other in inboxes:  # keywords from every inbox, searched in this one
            for keywords in sample_keywords(real_db, other, 15):
                hits = tools.search_emails(keywords, max_results=50)
                searched += 1
                found += bool(hits)
                for hit in hits:
                    owner, sent = owner_and_date(real_db, hit["message_id"])
                    assert owner == inbox
                    assert sent is not None and sent[:10] <= middle.isoformat()
                    assert hit["date"] == sent
                    email = tools.read_email(hit["message_id"])  # every result can be read
                    assert email["message_id"] == hit["message_id"] and email["subject"] == hit["subject"]
    assert found > searched / 2  # the check above ran on real results


def test_real_future_emails_appear_only_after_their_date(real_db):
    rng = random.Random(1)
    rows = real_db.execute(
        "select inbox, message_id, subject, date from emails where date > '1990' and subject != '' "
        "order by id"
    ).fetchall()
    checked = 0
    for inbox, message_id, subject, sent in rng.sample(rows, 40):
        words = re.findall(r"[A-Za-z]{4,}", subject)
        if not words:
            continue
        day = date.fromisoformat(sent[:10])
        before, on_the_day = (
            make_tools(real_db, inbox, day - timedelta(days=1)),
            make_tools(real_db, inbox, day),
        )
        assert message_id not in ids(before.search_emails(words, max_results=50))
        with pytest.raises(ToolError):
            before.read_email(message_id)
        assert on_the_day.read_email(message_id)["message_id"] == message_id
        checked += 1
    assert checked >= 30


def test_real_recipients_round_trip(real_db):
    """read_email returns every recipient row of the email (ART·E returned none)."""
    tools = make_tools(real_db, "allen-p", None)
    rows = real_db.execute(
        "select e.message_id, count(r.rowid) from emails e join recipients r on r.email_id = e.id "
        "where e.inbox = 'allen-p' group by e.id order by count(r.rowid) desc limit 20"
    ).fetchall()
    assert rows
    for message_id, count in rows:
        email = tools.read_email(message_id)
        assert len(email["to"]) + len(email["cc"]) + len(email["bcc"]) == count


def test_gold_sources_of_the_shipped_questions_are_readable_at_their_date(real_db):
    questions = load_questions(default_questions_path())
    assert questions
    for q in questions:
        tools = make_tools(real_db, q.inbox_address, q.query_date)
        for message_id in q.message_ids:
            assert tools.read_email(message_id), (q.id, message_id)


# ---- issue 14: hostile bodies cannot stall a search; dates are instants ----

ADVERSARIAL_WORDS = ["gas", "price", "forecast", "budget", "power", "trade", "houston", "deal"]


def _inbox_with_bodies(path, bodies: list[str]) -> InboxTools:
    """The literal tools DB plus one alice-a email per body, every one matching the keyword "gas"."""
    db = open_db(build_tools_db(path))
    for n, body in enumerate(bodies, start=100):
        row = {"id": n, "inbox": "alice-a", "message_id": f"<adv{n}>", "subject": "Gas", "body": body}
        db["emails"].insert({**row, "date": "2001-04-01T00:00:00Z"})
        db["message_ids"].insert({"inbox": "alice-a", "message_id": f"<adv{n}>", "email_id": n})
    return make_tools(db, "alice-a", QUERY_DATE)


def _search_cpu_seconds(tools: InboxTools, keywords: list[str], runs: int = 5) -> float:
    """Median thread CPU time of one search (CPU, not wall time: the test machine is shared)."""
    times = []
    for _ in range(runs):
        started = time.thread_time()
        tools.search_emails(keywords, max_results=50)
        times.append(time.thread_time() - started)
    return statistics.median(times)


def test_hostile_bodies_cost_a_search_no_more_than_a_few_normal_ones(tmp_path):
    """Item 2: a NUL early in a 5 MB body, 5 MB of one repeated word, 5 MB of random words.

    The index and the snippets see only a bounded prefix of each body (``env.db.INDEXED_BODY_BYTES``),
    so these searches cost about what the same search over ordinary emails costs.
    """
    rng = random.Random(14)
    text = " ".join(rng.choice(ADVERSARIAL_WORDS) for _ in range(800_000))  # ~5 MB
    hostile = ["gas price\x00" + text, "gas " * 1_300_000, text]  # the NUL one: a DB from an older ingest
    normal = [" ".join(rng.choice(ADVERSARIAL_WORDS) for _ in range(300)) for _ in hostile]
    hostile_tools = _inbox_with_bodies(tmp_path / "hostile.db", hostile)
    normal_tools = _inbox_with_bodies(tmp_path / "normal.db", normal)
    for keywords in (["gas"], ["price", "forecast"], ["zzz", "gas"]):
        hits = hostile_tools.search_emails(keywords)
        assert {"<adv100>", "<adv101>", "<adv102>"} & set(ids(hits))
        assert all(len(hit["snippet"]) < 400 for hit in hits)
        slow, fast = _search_cpu_seconds(hostile_tools, keywords), _search_cpu_seconds(normal_tools, keywords)
        # Unbounded (before issue 14): 3-4 s each, >1,000x (bench/results/search_adversarial.md).
        # Measured: 1 ms against 0.2 ms (the bounded prefix of 50,000 "gas" still costs BM25 a little).
        assert slow < 10 * fast + 0.002 and slow < 0.05, (keywords, slow, fast)


def test_dates_are_compared_as_instants(tmp_path):
    """Item 7: stored dates have four-digit years, so text order is time order; offsets never overflow."""
    db = open_db(build_tools_db(tmp_path / "dates.db"))
    for n, sent in [(60, "0999-01-01T00:00:00Z"), (61, "9999-12-31T11:59:59Z")]:
        db["emails"].insert(
            {"id": n, "inbox": "alice-a", "message_id": f"<d{n}>", "subject": "Yak", "body": "yak"}
        )
        db["emails"].update(n, {"date": sent})
        db["message_ids"].insert({"inbox": "alice-a", "message_id": f"<d{n}>", "email_id": n})
    alice = make_tools(db, "alice-a", QUERY_DATE)
    assert ids(alice.search_emails(["yak"])) == ["<d60>"]  # the year-999 email is in the past; 9999 is not
    for name, value in [
        ("sent_after", "0001-01-01T00:00:00+01:00"),
        ("sent_before", "9999-12-31T23:00:00-02:00"),
    ]:
        result = alice.call("search_emails", {"keywords": ["yak"], name: value})
        assert result.error is None and ids(json.loads(result.content)) == ["<d60>"]
    assert ids(alice.search_emails(["yak"], sent_after="0999-01-01T01:00:00+02:00")) == ["<d60>"]
    assert alice.search_emails(["yak"], sent_after="0999-01-01T03:00:00+02:00") == []
    assert ids(make_tools(db, "alice-a", date.max).search_emails(["yak"])) == ["<d60>", "<d61>"]
    assert ids(make_tools(db, "alice-a", "9999-12-31T23:00:00-05:00").search_emails(["yak"])) == [
        "<d60>",
        "<d61>",
    ]


def test_an_older_db_gets_the_bounded_index_and_sortable_dates(tmp_path):
    """ensure_schema upgrades a DB an older ingest wrote: five- and three-digit years, NUL bodies."""
    db = open_db(build_tools_db(tmp_path / "older.db"))
    db["emails"].disable_fts()
    db.execute("alter table emails drop column indexed_body")
    db["emails"].enable_fts(["subject", "body", "inbox_token"], create_triggers=True, tokenize="porter")
    rows = [
        (70, "10000-01-01T11:59:59Z", "yak"),
        (71, "999-01-01T00:00:00Z", "yak"),
        (72, None, "\x00 yak gnu"),
    ]
    for n, sent, body in rows:
        db["emails"].insert(
            {"id": n, "inbox": "alice-a", "message_id": f"<o{n}>", "subject": "s", "body": body}
        )
        db["emails"].update(n, {"date": sent})
        db["message_ids"].insert({"inbox": "alice-a", "message_id": f"<o{n}>", "email_id": n})
    db.conn.commit()
    with pytest.raises(ValueError, match="indexed_body"):
        make_tools(db, "alice-a", QUERY_DATE)
    ensure_schema(db)
    dates = dict(db.execute("select id, date from emails where id >= 70").fetchall())
    assert dates == {70: None, 71: "0999-01-01T00:00:00Z", 72: None}
    assert ids(make_tools(db, "alice-a", QUERY_DATE).search_emails(["yak"])) == ["<o71>"]
    [hit] = make_tools(db, "alice-a", None).search_emails(["gnu"])  # the text after a NUL is indexed
    assert hit["message_id"] == "<o72>" and hit["snippet"] == "yak **gnu**"


def test_the_indexed_prefix_is_cut_between_characters(tmp_path):
    """A long multi-byte body is indexed up to INDEXED_BODY_BYTES without half a character."""
    from env.db import INDEXED_BODY_BYTES

    db = open_db(build_tools_db(tmp_path / "long.db"))
    body = "gnu " + "é" * INDEXED_BODY_BYTES + " okapi"  # the cut falls inside an "é"
    db["emails"].insert({"id": 80, "inbox": "alice-a", "message_id": "<l80>", "subject": "s", "body": body})
    db["message_ids"].insert({"inbox": "alice-a", "message_id": "<l80>", "email_id": 80})
    (indexed,) = db.execute("select indexed_body from emails where id = 80").fetchone()  # decodes
    assert body.startswith(indexed) and INDEXED_BODY_BYTES - 2 < len(indexed.encode()) <= INDEXED_BODY_BYTES
    tools = make_tools(db, "alice-a", None)
    assert ids(tools.search_emails(["gnu"])) == ["<l80>"]
    assert tools.search_emails(["okapi"]) == []  # past the indexed prefix
    assert tools.read_email("<l80>")["body"].startswith("gnu éé")
