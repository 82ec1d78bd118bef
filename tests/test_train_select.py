"""Checkpoint selection on a GRPO run's validation questions (train.select): which candidates, which
pick, and the swap of the run's adapter folder. The evaluation on a real server is in
test_train_smoke (the GRPO run through a vLLM server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth_data.questions import Question
from train.loading import split_validation
from train.select import (
    Candidate,
    SelectionError,
    _install,
    candidates,
    choose,
    format_selection,
    select_checkpoint,
)


def _adapter(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_text(tag)
    (folder / "adapter_config.json").write_text(json.dumps({"tag": tag}))
    return folder


def _run(tmp_path: Path, steps: list[int], last: int, init: str | None = None) -> Path:
    run = tmp_path / "grpo-1"
    for s in steps:
        _adapter(run / "checkpoints" / f"checkpoint-{s}", f"step {s}")
    _adapter(run / "adapter", f"final {last}")
    (run / "result.json").write_text(json.dumps({"steps": last, "init_adapter": init}))
    return run


def test_candidates_are_the_start_the_checkpoints_and_an_unsaved_last_step(tmp_path: Path) -> None:
    start = _adapter(tmp_path / "sft" / "adapter", "start")
    run = _run(tmp_path, [2, 4, 6], last=7, init=str(start))
    got = [(c.step, c.path) for c in candidates(run)]
    assert [s for s, _ in got] == [0, 2, 4, 6, 7]
    assert got[0][1] == str(start) and got[-1][1] == str(run / "adapter")
    assert [c.step for c in candidates(run, every=4)] == [0, 4, 7]  # the last always


def test_candidates_skip_a_start_that_is_gone_and_need_something_to_pick(tmp_path: Path) -> None:
    run = _run(tmp_path, [2], last=2, init=str(tmp_path / "deleted"))
    assert [c.step for c in candidates(run)] == [2]  # checkpoint-2 is the last step: not twice
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "result.json").write_text(json.dumps({"steps": 0}))
    with pytest.raises(SelectionError, match="nothing to select from"):
        candidates(tmp_path / "empty")


def test_choose_never_picks_by_accuracy_over_the_ceiling() -> None:
    accurate = Candidate(2, "a", reward=0.5, hallucination_rate=0.3, accuracy=0.7)
    honest = Candidate(4, "b", reward=0.1, hallucination_rate=0.1, accuracy=0.2)
    tie = Candidate(6, "c", reward=0.1, hallucination_rate=0.0, accuracy=0.2)
    pick, why = choose([accurate, honest, tie], ceiling=0.2)
    assert pick is honest and "best mean reward" in why  # the earliest of equal rewards
    pick, why = choose([accurate, Candidate(3, "d", 0.4, 0.25)], ceiling=0.2)
    assert pick.step == 3 and "no candidate under the 0.20" in why
    with pytest.raises(SelectionError):
        choose([Candidate(1, "x")], 0.2)


def test_install_swaps_the_adapter_and_keeps_the_last_one(tmp_path: Path) -> None:
    run = _run(tmp_path, [2, 4], last=4)
    _install(run, run / "checkpoints" / "checkpoint-2")
    assert (run / "adapter" / "adapter_model.safetensors").read_text() == "step 2"
    assert (run / "adapter-last" / "adapter_model.safetensors").read_text() == "final 4"
    _install(run, run / "adapter-last")  # a second selection may pick the last step after all
    assert (run / "adapter" / "adapter_model.safetensors").read_text() == "final 4"
    assert sorted(p.name for p in run.iterdir()) == ["adapter", "adapter-last", "checkpoints", "result.json"]
    assert [c.step for c in candidates(run)] == [2, 4]


def test_format_selection_marks_the_pick_within_80_columns() -> None:
    result = {
        "picked_step": 4,
        "why": "best mean reward (+0.100) with hallucination <= 0.20",
        "candidates": [
            {"step": s, "reward": r, "hallucination_rate": h, "accuracy": 0.2, "abstention_rate": 0.5,
             "infra_failures": 0}
            for s, r, h in ((0, 0.05, 0.1), (4, 0.1, 0.15))
        ],
    }  # fmt: skip
    text = format_selection(result)
    assert "<- picked" in text.splitlines()[2] and max(map(len, text.splitlines())) <= 80


def test_a_run_without_validation_questions_says_how_to_get_them(tmp_path: Path) -> None:
    from env.config import Settings

    run = _run(tmp_path, [2], last=2)
    with pytest.raises(SelectionError, match="validation_questions=N"):
        select_checkpoint(Settings(home=tmp_path), run)


def test_split_validation_is_seeded_and_disjoint() -> None:
    qs = [Question(id=f"q{i}", question="?", answer="a", message_ids=["<m>"], how_realistic=1.0,
                   inbox_address="a@b.c", query_date="2001-01-01") for i in range(10)]  # fmt: skip
    train, val = split_validation(qs, 3, seed=1)
    assert len(val) == 3 and {q.id for q in train}.isdisjoint(q.id for q in val)
    assert split_validation(qs, 3, seed=1) == (train, val)
    assert split_validation(qs, 0, seed=1) == (qs, [])
    with pytest.raises(ValueError, match="nothing to train on"):
        split_validation(qs, 10, seed=1)
