"""Pick the GRPO checkpoint to release on the run's validation questions.

    inboxrl train select grpo-1                        # after a run with validation_questions > 0
    inboxrl train select grpo-1 --ceiling 0.1 --every 4

A GRPO run trained with ``validation_questions = N`` holds N of its questions out
(``<run>/validation.jsonl``). Each candidate, the starting adapter (step 0, when the run started from
one) and the saved checkpoints, answers them through the serving loop on one vLLM server: the
candidate's LoRA is merged into the base weights and reloaded in place (as GRPO's server rollouts
do), greedy, with the prompt the run trained with, judged by ``settings``' judge, each in
``<run>/selection/step-<k>/`` (an interrupted selection resumes there). A run that sampled its
rollouts on a generation server selects on that same server before stopping it. The pick is the highest mean
reward among candidates whose hallucination rate is at most the ceiling (the earliest step on a tie);
when none is under it, the least hallucinating one, and the result says so. Accuracy does not choose.

The run's ``adapter/`` then holds the pick (the last step's adapter moves to ``adapter-last/``) and
``selection.json`` every candidate's numbers, so registering or releasing the run ships the pick.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from env.config import Settings
from env.model import prompt_settings
from synth_data.questions import load_questions
from train.loading import CHECKPOINTS, FINAL_ADAPTER, copy_adapter
from train.registry import resolve_adapter_path, write_json_atomic

VALIDATION = "validation.jsonl"
"""The run's held-out questions (``validation_questions``)."""
SELECTION_FILE = "selection.json"
LAST_ADAPTER = "adapter-last"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
DEFAULT_CEILING = 0.2


class SelectionError(RuntimeError):
    """The run cannot be selected from (no validation questions, no checkpoints)."""


@dataclass
class Candidate:
    """One adapter evaluated on the validation questions."""

    step: int
    path: str
    reward: float | None = None
    hallucination_rate: float | None = None
    accuracy: float | None = None
    abstention_rate: float | None = None
    infra_failures: int = 0


def candidates(folder: Path, every: int = 1, settings: Settings | None = None) -> list[Candidate]:
    """The run's starting adapter (step 0, if any), its checkpoints and its final adapter (when the
    last step saved no checkpoint), every ``every``-th step kept (the last always), in step order.

    A starting adapter given by run name is found in ``settings``' registry.
    """
    result = json.loads((folder / "result.json").read_text())
    steps: dict[int, Path] = {}
    for ckpt in (folder / CHECKPOINTS).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", ckpt.name)
        if match and (ckpt / ADAPTER_FILES[0]).is_file():
            steps[int(match.group(1))] = ckpt
    final = folder / (LAST_ADAPTER if (folder / LAST_ADAPTER).is_dir() else FINAL_ADAPTER)
    if result.get("steps") and (final / ADAPTER_FILES[0]).is_file():
        steps.setdefault(int(result["steps"]), final)
    if not steps:
        raise SelectionError(f"{folder} holds no checkpoint and no adapter: nothing to select from.")
    last = max(steps)
    kept = [s for s in sorted(steps) if s % max(every, 1) == 0 or s == last]
    out = [Candidate(s, str(steps[s])) for s in kept]
    init = result.get("init_adapter")
    if init and settings is not None:
        try:
            init = str(resolve_adapter_path(settings, init))
        except LookupError:  # no longer registered: the run's own steps remain
            init = None
    if init and (Path(init) / ADAPTER_FILES[0]).is_file():
        out.insert(0, Candidate(0, init))
    return out


def choose(cands: list[Candidate], ceiling: float) -> tuple[Candidate, str]:
    """The candidate to release and why: best reward under the hallucination ceiling.

    >>> a, b, c = Candidate(0, "a", 0.1, 0.05), Candidate(2, "b", 0.3, 0.25), Candidate(4, "c", 0.2, 0.1)
    >>> pick, why = choose([a, b, c], 0.2)
    >>> pick.step, why
    (4, 'best mean reward (+0.200) with hallucination <= 0.20')
    >>> choose([b], 0.2)[0].step, choose([b], 0.2)[1]
    (2, 'no candidate under the 0.20 hallucination ceiling: the least hallucinating one (0.250)')
    """
    scored = [c for c in cands if c.reward is not None and c.hallucination_rate is not None]
    if not scored:
        raise SelectionError("No candidate was evaluated.")
    under = [c for c in scored if c.hallucination_rate <= ceiling]  # type: ignore[operator]
    if under:
        best = max(under, key=lambda c: (c.reward, -c.step))
        return best, f"best mean reward ({best.reward:+.3f}) with hallucination <= {ceiling:.2f}"
    best = min(scored, key=lambda c: (c.hallucination_rate, -(c.reward or 0.0), c.step))
    return best, (
        f"no candidate under the {ceiling:.2f} hallucination ceiling: the least hallucinating one "
        f"({best.hallucination_rate:.3f})"
    )


def select_checkpoint(
    settings: Settings,
    folder: str | Path,
    *,
    ceiling: float = DEFAULT_CEILING,
    every: int = 1,
    max_turns: int | None = None,
    progress: bool = True,
    server: Settings | None = None,
) -> dict[str, Any]:
    """Evaluate the run's candidates on its validation questions and install the pick as ``adapter/``.

    :param settings: the inbox DB and judge (the model, server and concurrency are the run's: one
        step's rollouts in flight).
    :param folder: the GRPO run folder.
    :param ceiling: the highest hallucination rate a pick may have.
    :param every: evaluate every ``every``-th checkpoint (the start and the last always).
    :param max_turns: model turns per validation rollout (default: the run's ``max_turns``).
    :param server: a running generation server on the run's base model (``train_grpo`` passes its
        own, which saves a server start); default one started for the selection and stopped after.

    Needs ``result.json`` (a finished run), whose ``data.selection`` gets the pick and why. Returns
    what ``selection.json`` holds.
    """
    from judge.evaluate import evaluate
    from train.rollout import generation_server

    folder = Path(folder)
    questions_file = folder / VALIDATION
    if not questions_file.is_file():
        raise SelectionError(
            f"{questions_file} is missing: train with --set validation_questions=N (N > 0) to hold "
            "questions out for selection."
        )
    questions = load_questions(questions_file)
    config = json.loads((folder / "train.json").read_text())["config"]
    base_model = json.loads((folder / "result.json").read_text())["base_model"]
    cands = candidates(folder, every, settings)
    with contextlib.ExitStack() as stack:
        if server is None:
            server = stack.enter_context(generation_server(settings, base_model, folder))
        agent = server.model_copy(
            update={
                **prompt_settings(config),
                "temperature": 0.0,
                "max_turns": max_turns or config.get("max_turns", settings.max_turns),
                "concurrency": config.get("questions_per_step", 1) * config.get("num_generations", 1),
            }
        )
        for cand in cands:
            out = folder / "selection" / f"step-{cand.step}"
            serve_merged(server, base_model, cand.path, folder)
            summary = evaluate(
                questions,
                db_path=settings.db_path,
                out_dir=out,
                settings=agent,
                questions_path=questions_file,
                progress=progress,
            )
            cand.reward = summary["reward_mean"]
            cand.hallucination_rate = summary["hallucination_rate"]
            cand.accuracy = summary["accuracy"]
            cand.abstention_rate = summary["abstention_rate"]
            cand.infra_failures = summary.get("infra_failures", 0)
    pick, why = choose(cands, ceiling)
    _install(folder, Path(pick.path))
    result = {
        "picked_step": pick.step,
        "why": why,
        "ceiling": ceiling,
        "n_questions": len(questions),
        "candidates": [asdict(c) for c in cands],
    }
    write_json_atomic(folder / SELECTION_FILE, result)
    run_result = json.loads((folder / "result.json").read_text())
    run_result.setdefault("data", {})["selection"] = {k: v for k, v in result.items() if k != "candidates"}
    write_json_atomic(folder / "result.json", run_result)
    return result


def serve_merged(server: Settings, base_model: str | Path, adapter: str | Path, folder: Path) -> None:
    """Have a run's generation server (``train.rollout.generation_server`` on ``base_model``) serve
    ``adapter`` merged into the base weights, in the server's dtype, reloaded in place."""
    import torch

    from env.hardware import choose_dtype
    from train.rollout import GENERATION_DIR, write_weights

    dtype = getattr(torch, choose_dtype("cpu", server.dtype).dtype)
    write_weights(server, _merged(base_model, adapter, dtype), folder / GENERATION_DIR / "weights")


def _merged(base_model: str | Path, adapter: str | Path, dtype: Any) -> dict[str, Any]:
    """The base weights with ``adapter`` merged in, named as in the base checkpoint."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train.rollout import merged_state_dict

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    return merged_state_dict(PeftModel.from_pretrained(base, adapter), dtype)


def _install(folder: Path, picked: Path) -> None:
    """Make ``<folder>/adapter`` the picked adapter; the trained-last one stays in ``adapter-last``."""
    final = folder / FINAL_ADAPTER
    last = folder / LAST_ADAPTER
    if final.is_dir() and not last.exists():
        shutil.copytree(final, last)
    copy_adapter(picked, final)


def format_selection(result: dict[str, Any]) -> str:
    """The candidates as an 80-column table, the pick marked."""
    lines = [
        f"{'step':>5}  {'reward':>7}  {'halluc.':>7}  {'accuracy':>8}  {'abstain':>7}  {'infra':>5}",
    ]
    for c in result["candidates"]:
        mark = "  <- picked" if c["step"] == result["picked_step"] else ""
        lines.append(
            f"{c['step']:>5}  {c['reward']:>+7.3f}  {c['hallucination_rate']:>7.3f}  "
            f"{c['accuracy']:>8.3f}  {c['abstention_rate']:>7.3f}  {c['infra_failures']:>5}{mark}"
        )
    lines.append(f"Picked step {result['picked_step']}: {result['why']}.")
    return "\n".join(lines)
