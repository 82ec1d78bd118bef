"""The LLM generation pipeline: which pairs the checks drop, caching, resume after a kill, and the real
embedded model end to end.

Pipeline tests use a scripted writer behind a local HTTP server (``function_server``): they are about
the pipeline (drop reasons, cache, resume), not the model. The ``vllm`` test runs the real model.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import openai
import pytest

from env.config import Settings
from env.db import get_inbox, open_db
from env.model import make_client
from synth_data import ground
from synth_data.generate import SynthConfig, generate, write_outputs
from synth_data.llm import (
    LLM,
    QUOTE_SCHEMA,
    ResponseCache,
    pairs_schema,
    quote_request,
    unanswerable_schema,
)
from synth_data.questions import load_questions
from synth_data.sample import load_emails

_EMAIL = re.compile(r"\[(\d+)\]\nFrom: (.*)\n(?:.*\n)*?Subject: (.*)\n")


def writer(request: dict) -> str:
    """A scripted question writer: per batch one good pair and one of each kind of bad output."""
    prompt = request["messages"][-1]["content"]
    emails = {int(k): (sender, subject) for k, sender, subject in _EMAIL.findall(prompt)}
    if "Proposed answer:" in prompt:
        answer = re.search(r"Proposed answer: (.*)", prompt).group(1)
        if "fabricated" in answer:
            return json.dumps(
                {"supported": True, "quote": "a fabricated claim about nothing", "how_realistic": 0.9}
            )
        for sender, _ in emails.values():
            if answer in sender:
                return json.dumps({"supported": True, "quote": f"From: {sender}", "how_realistic": 0.9})
        return json.dumps({"supported": False, "quote": "", "how_realistic": 0.5})
    if "NONE of these emails" in prompt:
        first_subject = emails[1][1]
        questions = [
            {
                "question": f'How much did the Zanzibar ferry cost for the "{first_subject}" trip?',
                "key_terms": ["Zanzibar"],
                "how_realistic": 0.6,
            },
            {
                "question": f"What else was said about {first_subject}?",
                "key_terms": [first_subject],
                "how_realistic": 0.6,
            },
            {"question": "Who won the chess cup in Oslo?", "key_terms": ["chess"], "how_realistic": 0.6},
        ]
        return json.dumps({"questions": questions})
    (sender1, subject1), (sender2, subject2) = emails[1], emails[2]
    name1 = sender1.split(" <")[0]
    good = {
        "question": f'Who sent me the email about "{subject1}"?',
        "answer": name1,
        "sources": [1],
        "difficulty": "easy",
        "how_realistic": 0.9,
    }
    pairs = [
        good,
        {
            **good,
            "question": f'What did {sender2.split(" <")[0]} say about "{subject2}"?',
            "answer": "a fabricated claim",
            "sources": [2],
        },
        {**good, "question": "Which email is number 99?", "sources": [99]},
        dict(good),  # the same question twice
        {**good, "question": f"Which person wrote to me regarding {subject1}?", "how_realistic": 0.1},
        {"question": 5, "answer": None},
        {**good, "question": "Who is presenting the Q3 forecast to the Acme board?", "answer": "Maria Lopez"},
    ]
    return json.dumps({"pairs": pairs})


def _llm(base_url: str, cache: Path, model: str = "scripted", **kwargs: object) -> LLM:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    return LLM(client, model, ResponseCache(cache), **kwargs)


CONFIG = SynthConfig(n=50, batch_size=5, pairs_per_batch=7, unanswerable_per_batch=3)


def test_checks_drop_bad_pairs_and_keep_grounded_ones(
    synth_db_path: Path, tmp_path: Path, function_server
) -> None:
    server = function_server(writer)
    db = open_db(synth_db_path)
    inbox = get_inbox(db, "jane-d")
    llm = _llm(server.base_url, tmp_path / "cache.db")
    kept, report = generate(db, inbox, CONFIG, llm=llm, progress=False)
    summary = report.to_dict()
    assert summary["batches"] == 3 and summary["generated"] == 30
    assert summary["dropped"] == {
        "answer_found": 3,
        "bad_sources": 3,
        "copied_example": 3,
        "malformed": 3,
        "near_duplicate": 3,
        "off_topic": 3,
        "quote_not_found": 3,
        "unrealistic": 3,
    }
    assert summary["kept"] == len(kept) == 6
    # the repeated question's quote check is answered from the cache: 18 requests, 15 paid
    assert (summary["llm_calls"], summary["cache_hits"]) == (15, 3) and server.calls == 15
    kinds = sorted(q.kind for q in kept)
    assert kinds == ["single"] * 3 + ["unanswerable"] * 3
    for q in kept:
        assert ground.check_pair(db, q) is None
        if q.kind == "single":
            assert q.evidence.startswith("From: ") and q.how_realistic == 0.9
            assert q.query_date > max(e.day for e in ground.cited_emails(db, inbox.id, q)[0])
    out = tmp_path / "pairs.jsonl"
    write_outputs(out, kept, report, CONFIG)
    assert [q.to_dict() for q in load_questions(out)] == [q.to_dict() for q in kept]

    # a rerun pays for nothing and keeps the same pairs
    again, report2 = generate(
        db, inbox, CONFIG, llm=_llm(server.base_url, tmp_path / "cache.db"), progress=False
    )
    assert [q.to_dict() for q in again] == [q.to_dict() for q in kept]
    assert report2.counters["llm_calls"] == 0 and report2.counters["cache_hits"] == 18
    assert server.calls == 15


def test_refused_requests_are_counted_and_skipped(
    synth_db_path: Path, tmp_path: Path, function_server
) -> None:
    server = function_server(
        lambda request: 400 if "Write up to" in request["messages"][-1]["content"] else writer(request)
    )
    db = open_db(synth_db_path)
    llm = _llm(server.base_url, tmp_path / "cache.db")
    kept, report = generate(db, get_inbox(db, "jane-d"), CONFIG, llm=llm, progress=False)
    assert report.counters["llm_rejected"] == 3 and "scripted refusal" in llm.last_rejection
    assert sorted(q.kind for q in kept) == ["unanswerable"] * 3
    # prompts stay within the budget: 10 emails share 4,500 characters of body text
    assert SynthConfig().body_chars(10) == 450 and SynthConfig().body_chars(2) == 1500


def hostile(request: dict) -> str:
    """A writer whose every reply is malformed in some way."""
    prompt = request["messages"][-1]["content"]
    if "NONE of these emails" in prompt:
        return json.dumps({"questions": "not a list"})
    if "Proposed answer:" in prompt:
        return "no JSON at all"
    return json.dumps(
        {
            "pairs": [
                {"question": "Who sent the Malin basis curve?", "answer": "Mike", "sources": 1},
                {"question": "Who?", "answer": "Kim", "sources": [True, "2", {"a": 1}]},
                {"question": "What about the Malin basis curve?", "answer": "45 cents", "sources": [1]},
                ["not", "an", "object"],
            ]
        }
    )


def test_malformed_model_output_is_dropped_not_raised(
    synth_db_path: Path, tmp_path: Path, function_server
) -> None:
    server = function_server(hostile)
    db = open_db(synth_db_path)
    config = SynthConfig(n=5, batch_size=5, max_batches=1)
    kept, report = generate(db, get_inbox(db, "jane-d"), config, llm=_llm(server.base_url, tmp_path / "c.db"))
    assert kept == []
    assert report.to_dict()["dropped"] == {"bad_sources": 2, "checker_failed": 1, "malformed": 1}
    assert report.counters["invalid_json"] == 1


def test_cli_explains_when_no_pair_survives(synth_db_path: Path, tmp_path: Path, function_server) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    server = function_server(hostile)
    args = ["synth", "--db", str(synth_db_path), "--inbox", "jane-d", "--n", "2", "--generator", "llm"]
    args += ["--base-url", server.base_url, "--model", "scripted", "--max-batches", "1", "--no-progress"]
    args += ["--out", str(tmp_path / "x.jsonl"), "--cache", str(tmp_path / "c.db")]
    result = CliRunner(env={"INBOXRL_HOME": str(tmp_path)}).invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (
        "Wrote 0 pairs" in result.output and "No pair written by scripted passed the checks" in result.output
    )
    assert load_questions(tmp_path / "x.jsonl") == []


def test_schema_goes_as_response_format_unless_switched_off(tmp_path: Path, function_server) -> None:
    seen: list[dict] = []
    server = function_server(lambda request: seen.append(request) or '{"supported": true}')
    messages = [{"role": "user", "content": "Reply with JSON."}]

    async def ask(structured: bool) -> object:
        llm = _llm(server.base_url, tmp_path / f"{structured}.db", structured=structured)
        try:
            return await llm.ask(messages, QUOTE_SCHEMA, "support_quote")
        finally:
            await llm.client.close()

    assert asyncio.run(ask(True)) == {"supported": True}
    assert seen[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "support_quote", "schema": QUOTE_SCHEMA, "strict": True},
    }
    assert asyncio.run(ask(False)) == {"supported": True}
    assert "response_format" not in seen[1]


def test_killed_generation_resumes_without_paying_twice(
    synth_db_path: Path, tmp_path: Path, function_server
) -> None:
    server = function_server(writer)
    # Answer five requests, then hang until the writer is killed. One batch at a time, so the fifth
    # reply is stored before the sixth request goes out (a reply still in flight at the kill would
    # be lost, and rightly asked for again).
    server.hold_after = 5
    out, cache = tmp_path / "pairs.jsonl", tmp_path / "cache.db"
    command = [str(Path(sys.executable).parent / "inboxrl"), "synth", "generate", "--db", str(synth_db_path)]
    command += [
        "--inbox",
        "jane-d",
        "--n",
        "50",
        "--out",
        str(out),
        "--generator",
        "llm",
        "--model",
        "scripted",
    ]
    command += ["--base-url", server.base_url, "--cache", str(cache), "--batch-size", "5", "--no-progress"]
    command += ["--pairs-per-batch", "7", "--unanswerable-per-batch", "3", "--concurrency", "1"]
    env = {**os.environ, "INBOXRL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert server.holding.wait(60), "the writer never reached the sixth request"
    finally:
        proc.kill()
        proc.wait(30)
    assert server.calls == 5 and not out.exists()
    server.hold_after = None
    server.release.set()

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert max(server.answered.values()) == 1  # no request was paid for twice
    assert server.calls == 15  # what one uninterrupted run needs
    report = json.loads(out.with_name("pairs.report.json").read_text())
    assert (report["llm_calls"], report["cache_hits"], report["kept"]) == (10, 8, 6)
    assert len(load_questions(out)) == 6


def test_endpoint_failure_says_how_to_resume(synth_db_path: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    args = ["synth", "--db", str(synth_db_path), "--inbox", "jane-d", "--n", "2", "--generator", "llm"]
    args += ["--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "x.jsonl"), "--no-progress"]
    result = CliRunner(env={"INBOXRL_HOME": str(tmp_path), "INBOXRL_MAX_RETRIES": "0"}).invoke(cli, args)
    assert result.exit_code == 1
    assert "Rerun the same command to continue" in result.output
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_embedded_model_end_to_end(vllm_server: Settings, synth_db_path: Path, tmp_path: Path) -> None:
    """The real 135M model writes pairs through guided JSON; whatever it writes, records are valid and
    the report accounts for every pair."""
    db = open_db(synth_db_path)
    inbox = get_inbox(db, "jane-d")
    config = SynthConfig(
        n=5, batch_size=3, pairs_per_batch=1, unanswerable_per_batch=1, max_batches=2, max_body_chars=300
    )

    def llm() -> LLM:  # a fresh client each time: generate() closes the one it was given
        client = make_client(vllm_server).with_options(max_retries=2)
        cache = ResponseCache(tmp_path / "cache.db")
        return LLM(client, vllm_server.model, cache, max_tokens=300, temperature=0.0)

    kept, report = generate(db, inbox, config, llm=llm(), concurrency=1, progress=False)
    out = tmp_path / "pairs.jsonl"
    write_outputs(out, kept, report, config)
    summary = json.loads(out.with_name("pairs.report.json").read_text())
    print(f"embedded model synth report: {summary}")
    assert summary["batches"] == 2
    assert summary["llm_calls"] >= 4  # two batches x (pairs + unanswerable), plus any quote checks
    # Guided decoding keeps replies on the schema; a reply cut at max_tokens (the 135M model can loop
    # on whitespace inside the JSON) is counted as invalid_json and its batch yields nothing.
    assert summary.get("invalid_json", 0) < summary["llm_calls"]
    assert summary["generated"] == summary["kept"] + summary["dropped_total"]
    loaded = load_questions(out)
    assert len(loaded) == summary["kept"]
    for q in loaded:
        assert ground.check_pair(db, q) is None
    # a rerun is served from the cache
    again, report2 = generate(db, inbox, config, llm=llm(), concurrency=1, progress=False)
    assert report2.counters["llm_calls"] == 0 and [q.id for q in again] == [q.id for q in kept]

    # the second pass (quote the support) also answers on its schema; whatever it quotes is checked
    emails = load_emails(db, inbox.id)
    storage = [e for e in emails if e.message_id == "<5.jane@thyme>"]
    messages, schema = quote_request("When does the Tenaska storage contract renew?", "June 1", storage, 300)
    checker = llm()

    async def check_once() -> object:
        try:
            return await checker.ask(messages, schema, "support_quote")
        finally:
            await checker.client.close()

    verdict = asyncio.run(check_once())
    assert isinstance(verdict, dict)
    print(f"embedded model quote check: {verdict}")

    # every reply the model gave matches the JSON schema it was asked for
    cache = ResponseCache(tmp_path / "cache.db")
    replies = [json.loads(row[0]) for row in cache._conn.execute("select content from responses")]
    assert len(replies) == summary["llm_calls"] + 1
    for reply in replies:
        if "pairs" in reply:
            jsonschema.validate(reply, pairs_schema(config.batch_size, config.pairs_per_batch))
        elif "questions" in reply:
            jsonschema.validate(reply, unanswerable_schema(config.unanswerable_per_batch))
        else:
            jsonschema.validate(reply, QUOTE_SCHEMA)
