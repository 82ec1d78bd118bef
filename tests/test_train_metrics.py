"""metrics.jsonl: torn lines, resume truncation in the callback, and the training plot."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from train.metrics import ZERO_SIGNAL, make_callback, plot_metrics, read_metrics, truncate_metrics


def _state(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def test_torn_last_line_is_skipped_and_truncation_keeps_earlier_steps(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward": 0.1}\n{"step": 2, "reward": 0.2}\n{"step": 3, "rew')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert truncate_metrics(path, 1) == 1
    assert read_metrics(path) == [{"step": 1, "reward": 0.1}]


def test_resumed_callback_drops_lines_past_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)))
    callback = make_callback(path, stage="grpo")
    # on_train_begin runs before the trainer restores the checkpoint: it must not truncate yet.
    callback.on_train_begin(None, _state(0), None)
    callback.on_step_begin(None, _state(2), None)  # resumed from checkpoint-2
    callback.on_step_end(None, _state(3), None)
    callback.on_log(None, _state(3), None, logs={"loss": 0.5, "reward": 1.0, "frac_reward_zero_std": 0.5})
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    last = records[-1]
    assert last["reward"] == 1.0 and last[ZERO_SIGNAL] == 0.5 and last["stage"] == "grpo"
    assert last["step_time_s"] >= 0 and last["peak_rss_mb"] > 0


def test_plot(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"step": s, "reward": s / 10, "reward_std": 0.1, ZERO_SIGNAL: 0.5, "inbox/accuracy": 0.2}
        for s in (1, 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = plot_metrics(path, tmp_path / "out.png", title="t")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert plot_metrics(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
