"""A time budget for a training run: stop before the step that would run past it.

``max_minutes`` (on every training config) bounds the wall time from the trainer's start: after each
optimizer step, the next step's time is predicted from the steps so far (the mean of the last three,
and never less than the last one); when it would end past the budget, training stops there with a
checkpoint, and the run's adapter is that step's. At least one step always runs. The learning-rate
schedule stays the one planned for ``max_steps`` (a budget stop leaves the rate where that step had
it). ``inboxrl retrain`` uses it to fit SFT, GRPO and the evaluation into its ``--minutes``.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

log = logging.getLogger(__name__)

RECENT_STEPS = 3


def predicted_step_s(step_times: list[float]) -> float:
    """The next step's predicted seconds: the mean of the last few steps, at least the last one.

    >>> predicted_step_s([60.0, 30.0, 30.0, 30.0])
    30.0
    >>> predicted_step_s([30.0, 30.0, 90.0])
    90.0
    """
    recent = step_times[-RECENT_STEPS:]
    return max(statistics.mean(recent), recent[-1])


def next_step_fits(elapsed_s: float, step_times: list[float], budget_s: float) -> bool:
    """True when one more step, at its predicted time, ends within ``budget_s`` of the start.

    >>> next_step_fits(100.0, [50.0, 50.0], 200.0)
    True
    >>> next_step_fits(160.0, [50.0, 50.0], 200.0)
    False
    >>> next_step_fits(500.0, [], 200.0)  # nothing measured yet: the first step always runs
    True
    """
    if not step_times:
        return True
    return elapsed_s + predicted_step_s(step_times) <= budget_s


def make_budget_callback(max_minutes: float) -> Any:
    """A ``TrainerCallback`` that stops training before the step that would pass ``max_minutes``.

    After a stop its ``stopped`` attribute says where (``step``, ``planned_steps``, ``elapsed_s``,
    ``predicted_step_s``, ``max_minutes``); :func:`budget_stop` finds it on a trainer.
    """
    from transformers import TrainerCallback

    budget_s = max_minutes * 60

    class TimeBudget(TrainerCallback):
        """Stop (with a checkpoint) when the next step would end past the time budget."""

        def __init__(self) -> None:
            self.started = self.last = 0.0
            self.step_times: list[float] = []
            self.stopped: dict[str, Any] | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = self.last = time.monotonic()
            self.step_times, self.stopped = [], None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            self.step_times.append(now - self.last)
            self.last = now
            elapsed = now - self.started
            if state.global_step >= state.max_steps or next_step_fits(elapsed, self.step_times, budget_s):
                return
            control.should_training_stop = True
            control.should_save = True
            self.stopped = {
                "step": state.global_step,
                "planned_steps": state.max_steps,
                "elapsed_s": round(elapsed, 1),
                "predicted_step_s": round(predicted_step_s(self.step_times), 1),
                "max_minutes": max_minutes,
            }
            log.warning(
                "Time budget: stopping after step %d of %d (%.1f of %g minutes used, the next step "
                "would take ~%.0f s).",
                state.global_step,
                state.max_steps,
                elapsed / 60,
                max_minutes,
                self.stopped["predicted_step_s"],
            )

    return TimeBudget()


def budget_callbacks(max_minutes: float | None) -> list[Any]:
    """``[make_budget_callback(max_minutes)]``, or ``[]`` without a budget."""
    return [make_budget_callback(max_minutes)] if max_minutes else []


def budget_stop(trainer: Any) -> dict[str, Any] | None:
    """Where a trainer's time budget stopped it (see :func:`make_budget_callback`), or None."""
    for callback in trainer.callback_handler.callbacks:
        stopped = getattr(callback, "stopped", None)
        if isinstance(stopped, dict) and "planned_steps" in stopped:
            return stopped
    return None
