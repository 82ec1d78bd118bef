"""Training metrics: one JSON line per logged step, and PNG plots of them.

:class:`MetricsCallback` (a ``transformers.TrainerCallback``) appends what the trainer logs (TRL's
reward mean/std, ``frac_reward_zero_std``, completion lengths, tool-call frequency, our
``inbox/*`` and ``reward/*`` metrics) plus step time and peak memory to ``metrics.jsonl``. On resume
it first drops lines past the checkpoint's step, so the file never holds a step twice.
:func:`plot_metrics` draws the reward curve and the rest from that file.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

# TRL's name for the share of groups whose rewards are all equal (no learning signal), and ours.
TRL_ZERO_STD = "frac_reward_zero_std"
ZERO_SIGNAL = "zero_signal_share"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, from a killed run, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: str | Path, last_step: int) -> int:
    """Keep only records with ``step <= last_step`` (atomically); returns how many were dropped."""
    path = Path(path)
    records = read_metrics(path)
    kept = [r for r in records if r.get("step", 0) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(records) - len(kept)


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory when a GPU is in use), in MB."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out


def make_callback(path: str | Path, *, stage: str) -> Any:
    """A ``TrainerCallback`` that writes ``metrics.jsonl`` at ``path`` (transformers imported lazily)."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """Append every log of the trainer, with step time and peak memory, to a JSONL file."""

        def __init__(self) -> None:
            self.path = Path(path)
            self.step_start: float | None = None
            self.step_times: list[float] = []
            self.synced = False

        def _sync(self, state: Any) -> None:
            # A resumed run continues from the checkpoint's step: forget what the killed run logged
            # after it. Done at the first step or log, not in on_train_begin, which runs before the
            # trainer restores the checkpoint's state.
            if not self.synced:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                truncate_metrics(self.path, state.global_step)
                self.synced = True

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._sync(state)
            self.step_start = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.step_start is not None:
                self.step_times.append(time.monotonic() - self.step_start)
                self.step_start = None

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            self._sync(state)
            record: dict[str, Any] = {"stage": stage, "step": state.global_step, "time": time.time()}
            record.update({k: v for k, v in logs.items() if isinstance(v, int | float | str)})
            if TRL_ZERO_STD in logs:
                record[ZERO_SIGNAL] = logs[TRL_ZERO_STD]
            if self.step_times:
                record["step_time_s"] = sum(self.step_times) / len(self.step_times)
                self.step_times = []
            record.update(peak_memory_mb())
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())

    return MetricsCallback()


# Panels of the training plot: (title, [(metric key, label)]). Missing keys are skipped.
PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Reward", [("reward", "mean"), ("reward_std", "std within groups")]),
    (
        "Answers",
        [
            ("inbox/accuracy", "correct"),
            ("inbox/hallucination", "wrong answer"),
            ("inbox/abstention", "abstained"),
        ],
    ),
    ("Groups without signal", [(ZERO_SIGNAL, "share of groups with equal rewards")]),
    ("Rollouts", [("inbox/turns", "turns"), ("inbox/tool_calls", "tool calls")]),
    ("Loss", [("loss", "loss")]),
    ("Step time (s)", [("step_time_s", "seconds per step")]),
]


def plot_metrics(metrics_path: str | Path, out_png: str | Path, *, title: str = "") -> Path | None:
    """Plot ``metrics.jsonl`` to a PNG grid; returns the file, or None when there is nothing to plot."""
    records = [r for r in read_metrics(metrics_path) if "train_runtime" not in r]
    panels = [(t, [(k, lbl) for k, lbl in series if any(k in r for r in records)]) for t, series in PANELS]
    panels = [(t, series) for t, series in panels if series]
    if not records or not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3 * rows), squeeze=False)
    for ax, (panel_title, series) in zip(axes.flat, panels, strict=False):
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
