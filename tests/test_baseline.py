"""The "always say I don't know" policy is scored like a model (judge.baseline) and compares with one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge.baseline import evaluate_policy
from judge.compare import compare
from judge.summary import ROW_METRICS
from synth_data.questions import default_questions_path, load_questions


@pytest.fixture(scope="module")
def idk_run(default_db_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("idk")
    summary = evaluate_policy(load_questions(default_questions_path()), db_path=default_db_path, out_dir=out)
    return out, summary


def test_it_is_never_wrong_and_right_only_on_unanswerable_questions(idk_run: tuple[Path, dict]) -> None:
    out, summary = idk_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == summary["n"] == len(load_questions(default_questions_path()))
    for row in rows:
        unanswerable = row["question"]["answer"] is None
        assert row["reward"]["outcome"] == ("correct" if unanswerable else "abstained")
        assert (row["reward"]["total"] > 0) == unanswerable
        assert row["trajectory"]["ended"] == "answered" and row["metrics"]["turns"] == 1
    assert summary["hallucination_rate"] == 0
    assert summary["by_kind"]["unanswerable"]["accuracy"] == 1
    assert summary["model"] == "always-idk"


def test_the_split_metrics_pair_with_a_model_run(idk_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = idk_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # a "model" that answers the first answerable question right and the second wrong
    answerable = [r for r in rows if r["question"]["answer"] is not None]
    for row, outcome in zip(answerable[:2], ("correct", "incorrect"), strict=True):
        row["reward"] = {**row["reward"], "outcome": outcome, "total": 1.0 if outcome == "correct" else -1.0}
    model = tmp_path / "model"
    model.mkdir()
    (model / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (model / "summary.json").write_text((out / "summary.json").read_text())
    assert ROW_METRICS["answered_precision"](answerable[0]) == 1.0
    assert ROW_METRICS["answered_precision"](answerable[2]) is None  # abstained: not an answer
    result = compare([out, model])
    means = {m: result["metrics"][m]["mean"] for m in ("answerable_accuracy", "answered_precision")}
    assert means["answerable_accuracy"]["model"] == pytest.approx(1 / len(answerable))
    assert means["answered_precision"] == {out.name: None, "model": 0.5}
    assert result["metrics"]["unanswerable_abstention"]["mean"]["model"] == 1.0


def test_an_unknown_policy_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="idk"):
        evaluate_policy([], policy="random", db_path=tmp_path / "x.db", out_dir=tmp_path)


def test_the_cli_scores_the_policy(idk_run: tuple[Path, dict], default_db_path: Path, tmp_path: Path) -> None:
    """``inboxrl eval --policy idk`` writes the same run as the library call; an unknown policy or a
    missing DB is a clear error that writes nothing."""
    from typer.testing import CliRunner

    from app.cli import cli

    out = tmp_path / "idk"
    result = CliRunner().invoke(
        cli, ["eval", "--policy", "idk", "--db", str(default_db_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "always-idk" in result.output
    assert json.loads((out / "summary.json").read_text())["reward_mean"] == idk_run[1]["reward_mean"]
    wrong = CliRunner().invoke(cli, ["eval", "--policy", "random", "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 1 and "choose one of idk" in wrong.output
    missing = CliRunner().invoke(cli, ["eval", "--policy", "idk", "--db", str(tmp_path / "no.db")])
    assert missing.exit_code == 1 and "inboxrl ingest" in missing.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "no.db").exists()


def test_process_credit_beats_the_policy_on_reward_but_not_on_outcome_reward(
    idk_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """An agent that searches, finds a gold email and then says "I don't know" earns process credit
    the policy cannot: ahead on ``reward``, level on ``outcome_reward``."""
    out, summary = idk_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    outcomes = [r["reward"]["components"]["outcome"] for r in rows]
    assert summary["outcome_reward_mean"] == pytest.approx(sum(outcomes) / len(outcomes))
    for row in rows:
        if row["question"]["answer"] is not None:
            row["reward"] = {
                **row["reward"],
                "total": 0.1,
                "components": {"outcome": 0.0, "process_found": 0.1},
            }
    searcher = tmp_path / "searcher"
    searcher.mkdir()
    (searcher / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (searcher / "summary.json").write_text((out / "summary.json").read_text())
    result = compare([out, searcher], resamples=2000)
    assert result["metrics"]["reward"]["vs_baseline"]["searcher"]["diff"] > 0
    assert result["metrics"]["outcome_reward"]["vs_baseline"]["searcher"]["diff"] == 0
