"""The training time budget (train.budget): when the callback stops a trainer, and what it records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from train import budget
from train.config import InboxGRPOConfig, InboxSFTConfig


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _run(monkeypatch: pytest.MonkeyPatch, minutes: float, step_s: list[float], max_steps: int) -> tuple:
    """Drive the callback through steps of the given lengths; returns (steps run, the stop record)."""
    clock = Clock()
    monkeypatch.setattr(budget, "time", SimpleNamespace(monotonic=clock.monotonic))
    callback = budget.make_budget_callback(minutes)
    state, control = TrainerState(max_steps=max_steps), TrainerControl()
    callback.on_train_begin(None, state, control)
    for seconds in step_s:
        clock.now += seconds
        state.global_step += 1
        callback.on_step_end(None, state, control)
        if control.should_training_stop:
            assert control.should_save  # the stop step's checkpoint is the run's adapter
            break
    return state.global_step, callback.stopped


def test_stops_before_the_step_that_would_overrun(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10-minute budget, 100 s steps: after step 5 (500 s) a sixth ends at 600 s (fits), a seventh not.
    steps, stopped = _run(monkeypatch, 10, [100.0] * 20, max_steps=20)
    assert steps == 6
    assert stopped == {
        "step": 6, "planned_steps": 20, "elapsed_s": 600.0, "predicted_step_s": 100.0, "max_minutes": 10,
    }  # fmt: skip


def test_a_slow_last_step_counts_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # The mean of the last three (60, 60, 240 -> 120) would let a step start at 360 s; the last step's
    # 240 s says it would end at 600 s > 480 s.
    steps, stopped = _run(monkeypatch, 8, [60.0, 60.0, 240.0, 60.0], max_steps=10)
    assert steps == 3 and stopped["predicted_step_s"] == 240.0


def test_the_first_step_always_runs_and_a_run_that_fits_is_not_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps, stopped = _run(monkeypatch, 0.01, [120.0, 120.0], max_steps=2)
    assert steps == 1 and stopped["step"] == 1 and stopped["planned_steps"] == 2
    steps, stopped = _run(monkeypatch, 60, [100.0] * 4, max_steps=4)
    assert steps == 4 and stopped is None
    # The planned last step is never reported as a budget stop, even when it ran late.
    steps, stopped = _run(monkeypatch, 1, [30.0, 40.0], max_steps=2)
    assert steps == 2 and stopped is None


def test_max_minutes_must_be_positive() -> None:
    for cls in (InboxSFTConfig, InboxGRPOConfig):
        with pytest.raises(ValueError, match="max_minutes=0"):
            cls(max_minutes=0)
    assert budget.budget_callbacks(None) == []
    assert len(budget.budget_callbacks(5.0)) == 1
