"""Batch evaluation: files, metrics, resume, judge failures, trace scores, compare and the CLI.

The agent's model is the scripted OpenAI-compatible server (these tests are about the eval
pipeline, not the model), on a copy of the real default inbox; the end-to-end test at the bottom
runs the real embedded model on vLLM.
"""

from __future__ import annotations

import doctest
import importlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from env.config import Settings, trace_db_path
from env.trace import TraceStore
from judge.compare import compare
from judge.evaluate import REJECTED, RESULTS, EvalError, evaluate, load_results
from synth_data.questions import Question, default_questions_path, load_questions, save_questions
from tests.fixtures.scripted import ScriptedServer, Step, completion, hang, text, tool_call

IDS = ("allen-p-001", "allen-p-002", "allen-p-025")  # two answerable, one unanswerable


@pytest.fixture
def db_path(default_db_path: Path, tmp_path: Path) -> Path:
    """A private copy of the default inbox (eval writes traces beside it)."""
    path = tmp_path / "db" / "inbox.db"
    path.parent.mkdir()
    shutil.copy(default_db_path, path)
    return path


@pytest.fixture
def questions() -> list[Question]:
    by_id = {q.id: q for q in load_questions(default_questions_path())}
    return [by_id[i] for i in IDS]


def answer(text_: str, sources: list[str] | None = None) -> Step:
    return tool_call("return_final_answer", {"answer": text_, "sources": sources or []})


def settings_for(server: ScriptedServer, home: Path, **overrides: object) -> Settings:
    return server.settings(home, concurrency=1, max_retries=0, **overrides)


def test_eval_writes_files_metrics_and_resumes(
    scripted: ScriptedServer, tmp_path: Path, db_path: Path, questions: list[Question]
) -> None:
    out = tmp_path / "run"
    settings = settings_for(scripted, tmp_path)
    check, sagewood, _ = questions
    scripted.queue(
        answer(
            "Check #1178, mailed Aug 28, 2000.", [check.message_ids[1]]
        ),  # correct, cites a copy of a gold email
        answer("About $250,000 per duplex."),  # hallucination
    )
    summary = evaluate(questions, db_path=db_path, out_dir=out, settings=settings, limit=2, progress=False)
    assert (summary["n"], summary["accuracy"], summary["hallucination_rate"]) == (2, 0.5, 0.5)
    assert summary["source_precision"] == 1.0 and summary["source_recall"] == pytest.approx(0.5)
    for name in ("results.jsonl", "summary.json", "report.md", "outcomes.png", "turns.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    rows = load_results(out)
    assert rows[check.id]["reward"]["outcome"] == "correct"
    assert rows[check.id]["reward"]["components"]["gold_source"] == pytest.approx(0.3)
    assert rows[sagewood.id]["reward"]["total"] == pytest.approx(-1.0)
    assert rows[check.id]["trajectory"]["answer"].startswith("Check #1178")

    # A crash tore the last line; the rerun moves it aside and runs only the missing question.
    with (out / RESULTS).open("a") as f:
        f.write('{"id": "allen-p-025", "trajec')
    scripted.queue(answer("I could not find any email about a PBR award."))
    before = len(scripted.requests)
    summary = evaluate(questions, db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert len(scripted.requests) == before + 1
    assert (out / REJECTED).read_text().startswith('{"id": "allen-p-025", "trajec')
    assert summary["n"] == 3 and summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["by_kind"]["unanswerable"]["accuracy"] == 1.0
    assert sorted(load_results(out)) == sorted(IDS)
    assert all(json.loads(line) for line in (out / RESULTS).read_text().splitlines())

    # Everything done: a rerun makes no request and rewrites the same numbers.
    again = evaluate(questions, db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert len(scripted.requests) == before + 1
    assert again["accuracy"] == summary["accuracy"]
    report = (out / "report.md").read_text()
    assert "| accuracy | 66.7% |" in report and "![outcomes.png](outcomes.png)" in report


def test_format_failures_and_trace_scores(
    scripted: ScriptedServer, tmp_path: Path, db_path: Path, questions: list[Question]
) -> None:
    out = tmp_path / "run"
    scripted.queue(text("I think it was check 1178."))  # no tool call: gave_up
    summary = evaluate(
        questions[:1], db_path=db_path, out_dir=out, settings=settings_for(scripted, tmp_path), progress=False
    )
    row = load_results(out)[questions[0].id]
    assert row["trajectory"]["ended"] == "gave_up" and row["verdict"] is None
    assert row["reward"]["total"] == pytest.approx(-1.8)
    assert summary["no_answer_rate"] == 1.0 and summary["ended"] == {"gave_up": 1}

    trace = TraceStore(trace_db_path(db_path)).get_trace(row["trajectory"]["trace_id"])
    assert trace is not None
    scores = {s["name"]: s["value"] for s in trace["scores"]}
    assert scores == {"correct": 0.0, "hallucination": 0.0, "abstained": 0.0, "reward": -1.8}


def test_judge_failure_is_reported_then_rejudged_on_resume(
    scripted: ScriptedServer, tmp_path: Path, db_path: Path, questions: list[Question]
) -> None:
    out = tmp_path / "run"
    settings = settings_for(scripted, tmp_path, judge_model="scripted-judge")
    scripted.queue(answer("Check #1178, mailed Aug 28, 2000."), text("Looks right to me!"))  # judge: not JSON
    summary = evaluate(questions[:1], db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert summary["judge_failures"] == 1 and summary["judged"] == 0 and summary["accuracy"] is None
    row = load_results(out)[questions[0].id]
    assert "invalid JSON" in row["judge_error"] and row["reward"] is None

    # The rerun re-judges the kept trajectory: one judge request, no agent request.
    scripted.queue(Step(completion(json.dumps({"rationale": "same check", "verdict": "correct"}))))
    before = len(scripted.requests)
    summary = evaluate(questions[:1], db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert len(scripted.requests) == before + 1
    assert "response_format" in scripted.requests[-1]
    assert (summary["judge_failures"], summary["accuracy"]) == (0, 1.0)
    agreement = summary["judge_agreement"]
    assert agreement["n"] == 1 and agreement["agreement"] == 1.0


def test_a_crashing_question_does_not_stop_the_others(
    scripted: ScriptedServer,
    tmp_path: Path,
    db_path: Path,
    questions: list[Question],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import judge.evaluate

    real = judge.evaluate.judge_row

    async def flaky(traj, q, **kwargs):  # type: ignore[no-untyped-def]
        if q.id == questions[0].id:
            raise RuntimeError("boom")
        return await real(traj, q, **kwargs)

    out = tmp_path / "run"
    settings = settings_for(scripted, tmp_path)
    monkeypatch.setattr(judge.evaluate, "judge_row", flaky)
    scripted.queue(answer("Check #1178."), answer("Almost $193,000 per duplex."))
    with pytest.raises(EvalError, match=f"1 question\\(s\\) crashed \\({questions[0].id}\\)"):
        evaluate(questions[:2], db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert list(load_results(out)) == [questions[1].id]
    assert json.loads((out / "summary.json").read_text())["n"] == 1

    monkeypatch.setattr(judge.evaluate, "judge_row", real)
    scripted.queue(answer("Check #1178, mailed Aug 28, 2000."))
    summary = evaluate(questions[:2], db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert summary["n"] == 2 and summary["accuracy"] == 1.0


def test_resume_refuses_another_model(
    scripted: ScriptedServer, tmp_path: Path, db_path: Path, questions: list[Question]
) -> None:
    out = tmp_path / "run"
    scripted.queue(answer("I don't know."))
    evaluate(
        questions[:1], db_path=db_path, out_dir=out, settings=settings_for(scripted, tmp_path), progress=False
    )
    with pytest.raises(EvalError, match="model='scripted'"):
        evaluate(
            questions[:1],
            db_path=db_path,
            out_dir=out,
            settings=settings_for(scripted, tmp_path, model="other"),
            progress=False,
        )


def test_compare_and_the_cli(
    scripted: ScriptedServer,
    tmp_path: Path,
    db_path: Path,
    questions: list[Question],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    qfile = save_questions(tmp_path / "qs.jsonl", questions)
    monkeypatch.setenv("INBOXRL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INBOXRL_BASE_URL", scripted.base_url)
    monkeypatch.setenv("INBOXRL_CONCURRENCY", "1")
    monkeypatch.setenv("INBOXRL_MAX_RETRIES", "0")
    runner = CliRunner()
    args = ["eval", "--questions", str(qfile), "--db", str(db_path), "--model", "scripted", "--no-progress"]

    # Baseline: wrong, wrong, hallucinates on the unanswerable one.
    scripted.queue(answer("Check #42."), answer("$1 per duplex."), answer("$5,000."))
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "hallucination rate" in result.output and "100.0%" in result.output
    # Better run: right, right, declines.
    check = questions[0]
    scripted.queue(
        answer("Check 1178 on Aug 28 2000", [check.message_ids[0]]),
        answer("Almost $193,000 per duplex."),
        answer("No email mentions a PBR cash amount."),
    )
    assert runner.invoke(cli, [*args, "--out", str(tmp_path / "b")]).exit_code == 0

    result = compare([tmp_path / "a", tmp_path / "b"], resamples=2000)
    acc = result["metrics"]["accuracy"]
    assert acc["mean"] == {"a": 0.0, "b": 1.0}
    assert acc["vs_baseline"]["b"]["diff"] == 1.0 and acc["vs_baseline"]["b"]["n_paired"] == 3
    assert result["metrics"]["hallucination_rate"]["vs_baseline"]["b"]["diff"] == -1.0

    out = tmp_path / "cmp"
    printed = runner.invoke(
        cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    )
    assert printed.exit_code == 0, printed.output
    assert "accuracy" in printed.output and "+100.0 pp" in printed.output
    assert {p.name for p in out.iterdir()} >= {"compare.json", "compare.md", "compare.png"}

    missing = runner.invoke(cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "inboxrl eval --out" in missing.output
    bad_db = runner.invoke(cli, [*args, "--db", str(tmp_path / "none.db")])
    assert bad_db.exit_code == 1 and "inboxrl ingest" in bad_db.output


@pytest.mark.vllm
@pytest.mark.slow
def test_real_model_end_to_end(
    vllm_server: Settings, tmp_path: Path, db_path: Path, questions: list[Question]
) -> None:
    out = tmp_path / "run"
    settings = vllm_server.model_copy(update={"home": tmp_path, "max_turns": 4, "concurrency": 2})
    summary = evaluate(questions[:2], db_path=db_path, out_dir=out, settings=settings, progress=False)
    assert summary["n"] == 2 and summary["judge_failures"] == 0
    assert summary["avg_turns"] >= 1 and summary["prompt_tokens"] > 0
    rows = load_results(out)
    assert all(
        r["reward"] is not None and r["trajectory"]["model"] == vllm_server.model for r in rows.values()
    )
    assert (out / "report.md").exists() and (out / "outcomes.png").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_the_cli_sends_the_key_of_a_server_named_by_base_url_and_a_refusal_is_not_scored(
    vllm_server: Settings,
    tmp_path: Path,
    db_path: Path,
    questions: list[Question],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--base-url`` of the server this home started sends its key (the key was once only picked
    for the configured URL: every rollout got 401 and was scored a model error, reward -1.5);
    from another home the real server refuses the request, which is left out of every metric."""
    if not (vllm_server.run_dir / "vllm.json").is_file():
        pytest.skip("the server was not started by this test session (INBOXRL_TEST_BASE_URL)")
    qfile = save_questions(tmp_path / "qs.jsonl", questions[:1])
    monkeypatch.setenv("INBOXRL_BASE_URL", "http://127.0.0.1:9/v1")  # somewhere else
    monkeypatch.delenv("INBOXRL_API_KEY", raising=False)
    args = ["eval", "--questions", str(qfile), "--db", str(db_path), "--model", vllm_server.model]
    args += ["--base-url", vllm_server.base_url, "--max-turns", "1", "--no-progress"]

    monkeypatch.setenv("INBOXRL_HOME", str(vllm_server.home))
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "own")])
    assert result.exit_code == 0, result.output
    row = next(iter(load_results(tmp_path / "own").values()))
    assert row["infra_error"] is None and row["reward"] is not None, row["trajectory"].get("error")

    monkeypatch.setenv("INBOXRL_HOME", str(tmp_path / "other-home"))
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    assert "infrastructure reasons" in result.output and "401" in result.output
    row = next(iter(load_results(tmp_path / "other").values()))
    assert row["reward"] is None and "401" in row["infra_error"]
    summary = json.loads((tmp_path / "other" / "summary.json").read_text())
    assert (summary["n"], summary["infra_failures"], summary["reward_mean"]) == (1, 1, None)


@pytest.mark.parametrize("module", ["judge.summary", "judge.compare"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_infrastructure_failures_are_retried_left_out_and_completed_by_a_rerun(
    scripted: ScriptedServer,
    tmp_path: Path,
    db_path: Path,
    questions: list[Question],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load the server times out on one question's every attempt: that rollout is retried,
    then reported as an infrastructure failure, kept out of accuracy and reward, and run by a rerun."""
    qfile = save_questions(tmp_path / "qs.jsonl", questions)
    monkeypatch.setenv("INBOXRL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INBOXRL_BASE_URL", scripted.base_url)
    monkeypatch.setenv("INBOXRL_MAX_RETRIES", "1")
    out = tmp_path / "run"
    args = ["eval", "--questions", str(qfile), "--db", str(db_path), "--model", "scripted"]
    args += ["--out", str(out), "--concurrency", "3", "--timeout", "0.5", "--no-progress"]
    check, sagewood, _ = questions
    scripted.queue_for("Which check", answer("Check #1178, mailed Aug 28, 2000."))
    scripted.queue_for("duplex", hang(1.5), hang(1.5))  # every attempt times out
    scripted.queue_for("PBR award", answer("$5,000."))  # a hallucination: the model's own failure

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps lines at the terminal's width
    assert "infrastructure failures" in printed and "Rerun the same command" in printed
    assert "First of them: APITimeoutError" in printed
    rows = load_results(out)
    failed = rows[sagewood.id]
    assert "APITimeoutError" in failed["infra_error"] and failed["reward"] is None
    assert failed["trajectory"]["infra_error"] and len(failed["trajectory"]["turns"][0]["retries"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["judged"], summary["infra_failures"]) == (3, 2, 1)
    assert summary["infra_failed_ids"] == [sagewood.id]
    assert summary["accuracy"] == 0.5 and summary["hallucination_rate"] == 0.5
    assert summary["reward_mean"] == pytest.approx((rows[check.id]["reward"]["total"] - 1.0) / 2)
    assert summary["ended"] == {"answered": 2} and summary["avg_turns"] == 1.0
    report = (out / "report.md").read_text()
    assert "1 rollout(s) failed for infrastructure reasons" in report and sagewood.id in report
    assert compare([out, out], resamples=200)["runs"][0]["infra_failures"] == 1

    # On a quiet server the same command runs only the failed question, and the run is complete.
    scripted.queue_for("duplex", answer("Almost $193,000 per duplex."))
    before = len(scripted.requests)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert len(scripted.requests) == before + 1 and "Rerun the same command" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["judged"], summary["infra_failures"]) == (3, 3, 0)
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert load_results(out)[sagewood.id]["infra_error"] is None
    assert "infrastructure reasons" not in (out / "report.md").read_text()


def test_the_report_shows_a_hostile_answer_as_text(
    scripted: ScriptedServer, tmp_path: Path, db_path: Path, questions: list[Question]
) -> None:
    """A model's answer is untrusted: in report.md (rendered by any Markdown viewer) it stays the
    characters it is made of, with no image fetched, no link, no HTML and no broken table."""
    from markdown_it import MarkdownIt

    hostile = "![t](http://e.vil/t.png) [click](http://e.vil) <img src=x> **$5** | col"
    scripted.queue(answer(hostile))
    out = tmp_path / "run"
    evaluate(questions, db_path=db_path, out_dir=out, settings=settings_for(scripted, tmp_path), limit=1,
             progress=False)  # fmt: skip
    report = (out / "report.md").read_text()
    rendered = MarkdownIt("commonmark").enable(["table"]).render(report)
    examples = rendered[rendered.index("Examples") :]
    assert "e.vil" in examples and not any(tag in examples for tag in ("<img", "<a ", "<strong>"))
    row = next(line for line in examples.split("<tr>") if "e.vil" in line)
    assert row.count("<td>") == 5  # the answer's "|" did not split its cell
