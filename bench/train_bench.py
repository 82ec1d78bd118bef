"""Training benchmark: base vs SFT vs SFT+GRPO vs "always I don't know", on mailboxes never trained on.

    python bench/train_bench.py --home /tmp/train-bench            # every stage; reruns skip finished ones
    python bench/train_bench.py --home /tmp/train-bench --sft-steps 60 --grpo-steps 10 --eval-limit 30
    # train on a GPU machine (same configuration, device cuda), evaluate on the CPU one:
    python bench/train_bench.py --home H --device cuda --models ''     # then copy H/runs over, and
    python bench/train_bench.py --home H --stages ''                   # evaluates and writes the report

1. Ingest the shipped default inbox (allen-p, grigsby-m, south-s) and the 9-mailbox sample of
   ``../shared/data/enron`` into ``<home>/inbox.db``.
2. Train questions: template pairs of the default inbox's mailboxes (``synth_data``, no LLM) and
   the shipped LLM-written questions of them; training adds unanswerable questions made from them
   (``synth_data.unanswerable``, ``unanswerable_share`` of the set). Held-out test sets, from the
   six other mailboxes: their LLM-written questions (``questions/*.jsonl``) and template pairs.
3. SFT (trajectories built from the train pairs), then GRPO from the SFT adapter (``configs/``).
   Or, after SFT, the ``self`` stage (R-Tuning): the SFT model, served, answers a sample of the
   training questions; its right rollouts are kept and the others become "I don't know" after its
   own searches (``relabel_wrong``), or end with the gold answer where they read a cited email
   holding it (``hindsight_answers``), and SFT goes on from the SFT adapter on those plus the built
   trajectories. ``--self-from ADAPTER`` runs the self stage from another adapter instead (the
   released one: model ``release+self``), without the SFT stage; ``--report NAME`` keeps another
   report beside ``train.md``. The adapters learn without the prompt's worked example
   (``few_shot = false``) and are served without it; the base model keeps it (zero-shot it never
   calls a tool).
4. Evaluate the "always I don't know" policy (``judge.baseline``), the base model, SFT and
   SFT+GRPO on both test sets (``judge.evaluate``, deterministic judge) through the vLLM server, one
   model at a time, each adapter merged into the base weights (vLLM's CPU build runs LoRA layers
   ~10x slower), every model with the same turn budget; compare them with a paired bootstrap
   (``judge.compare``) against "always I don't know" and against the base model.
5. Write ``bench/results/train.md`` and ``train.json``: accuracy, hallucination, abstention,
   precision, answerable accuracy and unanswerable abstention, reward, with 95% CIs and p-values,
   the GRPO reward curve, and step time and peak memory per training configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TRAIN_INBOXES = ["allen-p", "grigsby-m", "south-s"]  # the shipped default inbox
SHARED = ROOT.parent / "shared" / "data" / "enron"


def prepare_data(home: Path, per_inbox: int, test_per_inbox: int) -> dict[str, Path]:
    """DB and question files (train, test-template, test-llm).

    Train: template pairs of the default inbox's mailboxes and the shipped LLM-written questions.
    Test: the mailboxes of ``../shared/data/enron`` never trained on: their LLM-written questions
    (``questions/*.jsonl``) and ``test_per_inbox`` template pairs each.
    """
    from env.db import get_inbox, open_db
    from env.ingest import default_inbox_archive, ingest
    from synth_data.generate import SynthConfig, generate
    from synth_data.questions import default_questions_path, load_questions, save_questions

    archive = SHARED / "enron-maildir-sample.tar.gz"
    if not archive.exists():
        raise SystemExit(f"The held-out mailboxes are in {archive}: check out ../shared beside the repo.")
    db_path = home / "inbox.db"
    if not db_path.exists():
        ingest([default_inbox_archive(), archive], db_path, progress=False)
    db = open_db(db_path)
    files = {"train": home / "train.jsonl", "test-template": home / "test-template.jsonl"}
    files["test-llm"] = home / "test-llm.jsonl"
    if not files["train"].exists():
        config = SynthConfig(n=per_inbox, generator="template")
        shipped = load_questions(default_questions_path())
        train = [
            q for key in TRAIN_INBOXES for q in generate(db, get_inbox(db, key), config, progress=False)[0]
        ]
        save_questions(files["train"], train + [q for q in shipped if q.mailbox in TRAIN_INBOXES])
        held_out = [
            q
            for f in sorted((SHARED / "questions").glob("*.jsonl"))
            for q in load_questions(f)
            if q.mailbox not in TRAIN_INBOXES
        ]
        test_config = SynthConfig(n=test_per_inbox, generator="template")
        test = [
            q
            for key in sorted({q.mailbox for q in held_out})
            for q in generate(db, get_inbox(db, key), test_config, progress=False)[0]
        ]
        save_questions(files["test-template"], test)
        save_questions(files["test-llm"], held_out)
    return {"db": db_path, **files}


def train(
    home: Path,
    data: dict[str, Path],
    model: str,
    stages: list[str],
    overrides: dict[str, dict],
    args: argparse.Namespace,
) -> dict:
    """SFT, then GRPO and/or the self stage from it; returns the TrainResults as dicts (a finished
    run is reused).

    ``overrides`` holds each stage's config values on top of its ``configs/`` file (``--sft-set``...).
    """
    import importlib

    from env.config import Settings
    from train.config import InboxGRPOConfig, InboxSFTConfig, load_config

    settings = Settings(home=home, db=data["db"])
    sft_adapter = str(home / "runs" / "sft-bench" / "adapter")
    grpo_start = str(home / "runs" / f"{args.grpo_from}-bench" / "adapter")
    self_start = str(args.self_from) if args.self_from else sft_adapter
    self_extra = {"init_adapter": self_start, "source": "qa+teacher", "relabel_wrong": True}
    out = {}
    for stage, cls, file, extra in (
        ("sft", InboxSFTConfig, "sft-cpu.toml", {}),
        ("self", InboxSFTConfig, "sft-cpu.toml", self_extra),
        ("grpo", InboxGRPOConfig, "grpo-cpu-bench.toml", {"init_adapter": grpo_start}),
    ):
        result_file = home / "runs" / f"{stage}-bench" / "result.json"
        if result_file.exists():  # trained earlier, here or on another machine (see the docstring)
            out[stage] = {**json.loads(result_file.read_text()), "device": _trained_on(result_file.parent)}
            continue
        if stage not in stages:
            continue
        values = {
            **extra,
            **overrides[stage],
            "questions": str(data["train"]),
            "base_model": model,
            "inboxes": TRAIN_INBOXES,
        }
        kind = "sft" if stage == "self" else stage
        fn = getattr(importlib.import_module(f"train.{kind}"), f"train_{kind}")  # imported stage by stage
        config = load_config(cls, "cpu", ROOT / "configs" / file, values)
        started = time.monotonic()
        if stage == "self":
            result = _train_self(home, data, model, args, cls, file, values, fn)
        else:
            result = fn(settings, config, name=f"{stage}-bench")
        wall_s = time.monotonic() - started
        out[stage] = {**result.to_dict(), "wall_s": wall_s, "device": _device_name(config.resolved_device())}
        (home / "runs" / f"{stage}-bench" / "device.txt").write_text(out[stage]["device"] + "\n")
    return out


TEACHER_KEY_ENV = "INBOXRL_BENCH_TEACHER_KEY"


def _train_self(
    home: Path,
    data: dict[str, Path],
    model: str,
    args: argparse.Namespace,
    cls: type,
    file: str,
    values: dict,
    fn: Any,
) -> Any:
    """The self stage: serve the adapter it starts from (the SFT stage's, or ``--self-from``) as the
    teacher (as it is evaluated: same prompt, turns and concurrency) while its rollouts are collected
    and relabeled (``train.sft.sft_data``), then train on them with the server stopped."""
    from env.model import serve, stop
    from train.config import load_config
    from train.sft import sft_data

    start = args.self_from or home / "runs" / RUN_OF["sft"] / "adapter"
    teacher, served = _adapter_settings(home, data, model, args, Path(start), "self-teacher")
    values = {
        **values,
        "teacher_model": teacher.model,
        "teacher_base_url": teacher.base_url,
        "teacher_api_key_env": TEACHER_KEY_ENV,
    }
    config = load_config(cls, "cpu", ROOT / "configs" / file, values)
    settings = teacher.model_copy(update={"home": home})
    if not (home / "runs" / "self-bench" / "sft_data.json").exists():  # else a resumed run reads it back
        serve(teacher, model_dir=served)  # sets teacher.api_key to the server's key
        try:
            os.environ[TEACHER_KEY_ENV] = teacher.api_key
            sft_data(settings, config, "self-bench")
        finally:
            stop(teacher)  # not beside the training: it holds GBs and spins on the CPU
    return fn(settings, config, name="self-bench")


def _trained_on(run: Path) -> str:
    """The device a bench run folder records (``device.txt``), or ``?``."""
    file = run / "device.txt"
    return file.read_text().strip() if file.exists() else "?"


def _device_name(device: str) -> str:
    """The hardware a stage trained on (``cpu`` or ``cuda``), as the report names it."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores"


MODELS = ("always-idk", "base", "previous", "sft", "sft+grpo", "sft+self", "sft+self+grpo", "release+self")
SHIPPED_EXAMPLES_FROM = 82  # shipped questions asked of a released model to pick its demo examples (all)
SHIPPED_CONCURRENCY = 1
"""The shipped questions are asked one at a time, as `inboxrl ask` and the app ask them: batched with
others, a bf16 greedy decode of the 135M model parts ways (an example answered in the batched eval
was declined in the app)."""
RUN_OF = {
    "sft": "sft-bench",
    "sft+grpo": "grpo-bench",
    "sft+self": "self-bench",
    "sft+self+grpo": "grpo-bench",
    "release+self": "self-bench",
}
"""``sft+grpo`` and ``sft+self+grpo`` are the one GRPO run, named by where it started (``--grpo-from``);
``release+self`` is the self stage started from the released adapter (``--self-from``)."""
BASELINES = ("always-idk", "base", "previous", "sft+self")
"""Each model is compared with these (when evaluated): the trivial policy, the untrained model, the
adapter released before and the R-Tuning adapter GRPO may start from."""
TEST_SETS = ("test-llm", "test-template")
METRICS = (
    ("accuracy", "accuracy"),
    ("hallucination_rate", "halluc."),
    ("abstention_rate", "abstain"),
    ("answered_precision", "precision"),
    ("answerable_accuracy", "acc. (answerable)"),
    ("unanswerable_abstention", "IDK (unanswerable)"),
    ("reward", "reward"),
    ("outcome_reward", "outcome reward"),
)


def evaluate_all(
    home: Path,
    data: dict[str, Path],
    model_dir: str,
    args: argparse.Namespace,
    labels: tuple[str, ...] = MODELS,
    test_sets: tuple[str, ...] = TEST_SETS,
) -> dict:
    """Each model on each test set, one vLLM server per model; returns the paired comparisons.

    ``always-idk`` is the trivial policy (``judge.baseline``): no server. The adapters are merged
    into the base weights first (``train.loading.merge_adapter``) and served with the prompt they
    were trained with (``train.registry.prompt_settings``); the base model gets the default prompt,
    worked example included. Every model has the same turn budget (``--eval-turns``). A later run
    reuses finished evaluations. Comparisons: every model against ``always-idk`` and against ``base``.
    """
    from env.model import serve, stop
    from judge.baseline import evaluate_policy
    from judge.compare import compare
    from judge.evaluate import evaluate
    from synth_data.questions import load_questions

    base, _ = _model_settings(home, data, model_dir, args, "base")

    def out(test_set: str, label: str) -> Path:
        return home / "evals" / test_set / label

    for label in labels:
        todo = [s for s in test_sets if not (out(s, label) / "summary.json").exists()]
        if not todo:
            continue
        if label == "always-idk":
            for test_set in todo:
                questions = load_questions(data[test_set])[: args.eval_limit]
                evaluate_policy(questions, db_path=data["db"], out_dir=out(test_set, label), settings=base)
            continue
        if label == "previous":  # the released adapter's evaluation in an earlier bench home, as it was
            if args.previous_home is None:
                raise SystemExit("The 'previous' row needs --previous-home (an earlier bench home).")
            for test_set in todo:
                source = args.previous_home / "evals" / test_set / args.previous_label
                shutil.copytree(source, out(test_set, label))
            continue
        settings, served = _model_settings(home, data, model_dir, args, label)
        serve(settings, model_dir=served)
        try:
            for test_set in todo:
                one_by_one = {"concurrency": SHIPPED_CONCURRENCY} if test_set == "shipped" else {}
                evaluate(
                    load_questions(data[test_set]),
                    db_path=data["db"],
                    out_dir=out(test_set, label),
                    settings=settings.model_copy(update=one_by_one),
                    limit=args.eval_limit,
                    questions_path=data[test_set],
                    progress=False,
                )
        finally:
            stop(settings)
    done = [x for x in labels if all((out(s, x) / "summary.json").exists() for s in test_sets)]
    comparisons = {}
    for test_set in test_sets:
        for baseline in BASELINES:
            if baseline in done and len(done) > 1:
                order = [baseline, *(x for x in done if x != baseline)]
                comparisons[f"{test_set} vs {baseline}"] = compare([out(test_set, x) for x in order])
    return comparisons


def _model_settings(
    home: Path, data: dict[str, Path], model_dir: str, args: argparse.Namespace, label: str
) -> tuple[Any, Path]:
    """Settings to serve and ask model ``label`` (``base`` or a trained one), and the folder to serve.

    Every model gets the same turn budget, concurrency, ``read_email`` cap and context length; a
    trained one is merged into the base weights (``train.loading.merge_adapter``) and gets the prompt
    it was trained with (``train.registry.prompt_settings``).
    """
    from env.config import EMBEDDED_MODEL_NAME, Settings

    base = Settings(
        home=home / "servers" / str(args.port),  # one server per port: evaluations can run side by side
        model=EMBEDDED_MODEL_NAME,
        db=data["db"],
        serve_port=args.port,
        base_url=f"http://127.0.0.1:{args.port}/v1",
        concurrency=args.concurrency,
        max_turns=args.eval_turns,
        max_body_chars=args.max_body_chars,
        serve_max_model_len=4096,
    )
    if label == "base":
        return base, Path(model_dir)
    run = home / "runs" / RUN_OF[label]
    return _adapter_settings(home, data, model_dir, args, run / "adapter", RUN_OF[label])


def _adapter_settings(
    home: Path, data: dict[str, Path], model_dir: str, args: argparse.Namespace, adapter: Path, name: str
) -> tuple[Any, Path]:
    """Settings to serve and ask an adapter (a run's ``adapter`` folder, or a released one with its
    ``run.json``) merged into the base weights as ``home/merged/<name>``, with its training prompt."""
    from train.loading import merge_adapter
    from train.registry import prompt_settings

    base, _ = _model_settings(home, data, model_dir, args, "base")
    record = (
        adapter.parent / "train.json" if (adapter.parent / "train.json").exists() else adapter / "run.json"
    )
    config = json.loads(record.read_text())["config"]
    served = merge_adapter(adapter, home / "merged" / name, base_model=model_dir)
    return base.model_copy(update={"model": f"e-{name}", **prompt_settings(config)}), served


def _ci(test: dict | None) -> str:
    if not test:
        return "n/a"
    p = f"p={test['p_value']:.3f}" if test["p_value"] >= 0.001 else "p<0.001"
    return f"{test['diff']:+.3f} [{test['ci_low']:+.3f}, {test['ci_high']:+.3f}] {p}"


def _means_table(comparison: dict) -> list[str]:
    names = [r["name"] for r in comparison["runs"]]
    lines = [
        "| model | n | " + " | ".join(title for _, title in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for run in comparison["runs"]:
        cells = []
        for metric, _ in METRICS:
            value = comparison["metrics"][metric]["mean"][run["name"]]
            cells.append("n/a" if value is None else f"{value:.3f}")
        lines.append(f"| {run['name']} | {run['n']} | " + " | ".join(cells) + " |")
    return lines if names else []


def _diff_table(comparison: dict) -> list[str]:
    baseline = comparison["baseline"]
    metrics = (
        "reward",
        "outcome_reward",
        "accuracy",
        "hallucination_rate",
        "answerable_accuracy",
        "unanswerable_abstention",
    )
    lines = [
        f"| model - {baseline} | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for run in comparison["runs"][1:]:
        cells = [_ci(comparison["metrics"][m]["vs_baseline"].get(run["name"])) for m in metrics]
        lines.append(f"| {run['name']} | " + " | ".join(cells) + " |")
    return lines


def _ending_rows(home: Path, labels: list[str]) -> list[str]:
    rows = []
    for test_set in TEST_SETS:
        for label in labels:
            path = home / "evals" / test_set / label / "summary.json"
            if not path.exists():
                continue
            s = json.loads(path.read_text())
            ended = ", ".join(f"{k} {v}" for k, v in sorted(s["ended"].items()))
            rows.append(
                f"| {test_set} | {label} | {ended} | {s['avg_tool_calls']:.2f} | "
                f"{s['failed_tool_call_rate']:.0%} | {s['avg_turns']:.2f} | {s.get('infra_failures', 0)} |"
            )
    return rows


def _train_rows(homes: list[Path]) -> list[str]:
    """A row per training run in ``homes`` (this bench's, ``--timing-home`` ones): device, shape, speed."""
    from train.metrics import read_metrics

    lines = []
    for home in homes:
        for stage in ("sft", "self", "grpo"):
            folder = home / "runs" / f"{stage}-bench"
            if not (folder / "result.json").exists():
                continue
            result = json.loads((folder / "result.json").read_text())
            records = read_metrics(folder / "metrics.jsonl")
            times = [r["step_time_s"] for r in records if "step_time_s" in r]
            rss = max((r.get("peak_rss_mb", 0) for r in records), default=0)
            cuda = max((r.get("peak_cuda_mb", 0) for r in records), default=0)
            cfg = json.loads((folder / "train.json").read_text())["config"]
            shape = (
                f"batch {cfg['batch_size']}x{cfg['gradient_accumulation_steps']}, "
                f"max_length {cfg['max_length']}"
                if stage in ("sft", "self")
                else f"{cfg['questions_per_step']} questions x {cfg['num_generations']} rollouts, "
                f"max_completion_length {cfg['max_completion_length']}, max_turns {cfg['max_turns']}"
            )
            timing = f"{sum(times) / len(times):.1f} ({min(times):.1f}-{max(times):.1f})" if times else "n/a"
            lines.append(
                f"| {stage} | {_trained_on(folder)} | {shape} | {result['steps']} | {timing} | "
                f"{rss / 1024:.2f} | {f'{cuda / 1024:.2f}' if cuda else '-'} | "
                f"{sum(times) if times else result['train_runtime_s']:.0f} |"
            )
    return lines


def _train_seconds(home: Path, stage: str, result: dict) -> float:
    """Seconds a stage trained: the sum of its logged step times (a resumed run's ``train_runtime_s``
    counts only the part after the resume)."""
    from train.metrics import read_metrics

    metrics = home / "runs" / f"{stage}-bench" / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.exists() else []
    return sum(r["step_time_s"] for r in records if "step_time_s" in r) or float(result["train_runtime_s"])


def _eval_minutes(home: Path) -> float:
    """Wall minutes the model evaluations took (from each summary's start and finish)."""
    from datetime import datetime

    total = 0.0
    for summary in (home / "evals").glob("*/*/summary.json"):
        s = json.loads(summary.read_text())
        took = datetime.fromisoformat(s["finished"]) - datetime.fromisoformat(s["started"])
        total += took.total_seconds()
    return total / 60


def _self_lines(result: dict | None, args: argparse.Namespace) -> list[str]:
    """What the self stage trained on: its starting model's rollouts on training questions, kept,
    corrected or relabeled."""
    if not result:
        return []
    data = result.get("data") or {}
    teacher = data.get("teacher") or {}
    kept = teacher.get("kept_after_max_length") or {}
    label, start = (
        ("release+self", f"`{args.self_from}`") if args.self_from else ("sft+self", "the SFT adapter")
    )
    return [
        f"Self stage (`{label}`, R-Tuning): {start}, served, answered "
        f"{sum(v for k, v in teacher.items() if k != 'kept_after_max_length')} sampled training questions: "
        f"{teacher.get('correct', 0)} right (kept), {teacher.get('corrected', 0)} wrong, unfinished or "
        "abstaining after reading a cited email that holds the answer (kept, ending with the gold "
        f"answer: `hindsight_answers`), {teacher.get('relabeled', 0)} other wrong, unfinished or "
        'abstaining ones (kept as its own searches and reads, then "I don\'t know"), '
        f"{teacher.get('failed_call', 0)} with a failed tool call and {teacher.get('dropped', 0)} others "
        f"dropped, {teacher.get('infra', 0)} infrastructure failures; {kept.get('correct', 0)} + "
        f"{kept.get('corrected', 0)} + {kept.get('relabeled', 0)} fit max_length. SFT went on from "
        f"{start} for {result.get('steps')} steps on those and the "
        f"{data.get('examples', 0) - sum(kept.values())} trajectories built from the QA pairs.",
        "",
    ]


def _grpo_lines(result: dict | None, args: argparse.Namespace) -> list[str]:
    """What the GRPO stage ran and, with validation questions, the checkpoint it picked on them."""
    if not result:
        return []
    run = args.home / "runs" / "grpo-bench"
    cfg = json.loads((run / "train.json").read_text())["config"]
    label = "sft+self+grpo" if args.grpo_from == "self" else "sft+grpo"
    lines = [
        f"GRPO stage (`{label}`): from the {args.grpo_from} adapter, {result.get('steps')} steps of "
        f"{cfg['questions_per_step']} questions x {cfg['num_generations']} rollouts (temperature "
        f"{cfg['temperature']}, {cfg['max_turns']} turns, learning rate {cfg['learning_rate']}, "
        f"generation {cfg.get('generation', 'trainer')}), {result.get('n_questions')} training questions "
        "(unanswerable share included), reward table unchanged (`judge.compute_reward`).",
        "",
    ]
    selection_file = run / "selection.json"
    if selection_file.exists():
        from train.select import format_selection

        selection = json.loads(selection_file.read_text())
        lines += [
            f"Checkpoint pick on the {selection['n_questions']} validation questions held out of GRPO's "
            f"training set (`validation_questions`; step 0 is the starting adapter; greedy, "
            f"{cfg['max_turns']} turns): the released `{label}` adapter is the pick.",
            "",
            "```",
            format_selection(selection),
            "```",
            "",
        ]
    return lines


def write_report(trained: dict, comparisons: dict, args: argparse.Namespace) -> None:
    from train.metrics import plot_metrics, read_metrics

    RESULTS.mkdir(parents=True, exist_ok=True)
    stages = [s for s in ("sft", "self", "grpo") if s in trained]
    plots = {
        stage: plot_metrics(
            args.home / "runs" / f"{stage}-bench" / "metrics.jsonl",
            RESULTS / f"{args.report}_{stage}_curve.png",
            title=f"{stage.upper()} (train bench)",
        )
        for stage in stages
    }
    grpo_metrics = args.home / "runs" / "grpo-bench" / "metrics.jsonl"
    rewards = [r for r in read_metrics(grpo_metrics) if "reward" in r] if grpo_metrics.exists() else []
    labels = [r["name"] for c in comparisons.values() for r in c["runs"]]
    labels = list(dict.fromkeys(x for x in MODELS if x in labels))
    devices = ", ".join(f"{stage.upper()} on {trained[stage].get('device', '?')}" for stage in stages)
    lines = [
        "# Training benchmark (embedded SmolLM2-135M): an honest agent on mailboxes never trained on",
        "",
        f"Command: `python bench/train_bench.py {' '.join(args.argv)}`",
        f"Training: {devices}. "
        f"Evaluation here: vLLM CPU server on {platform.machine()}, {os.cpu_count()} cores; load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min) when this report was written. "
        f"Training {sum(_train_seconds(args.home, s, trained[s]) for s in stages) / 60:.1f} min, "
        f"evaluation {_eval_minutes(args.home):.0f} min.",
        "",
        f"Train: template pairs and the shipped LLM-written questions of {', '.join(TRAIN_INBOXES)} (the "
        f"shipped default inbox; {trained[stages[0]]['n_questions']} questions, unanswerable ones made from "
        "them up to the config's `unanswerable_share`). Test: the other mailboxes of "
        "`../shared/data/enron`, never trained on: their LLM-written questions (`questions/*.jsonl`) and "
        f"{args.test_per_inbox} template pairs each. Every model gets {args.eval_turns} turns; the "
        "adapters are served with the prompt they were trained with (no worked example, read_email "
        f"capped at {args.max_body_chars:,} characters), the base model with the default prompt.",
        "Judge: deterministic. `always-idk` answers 'I don't know' to everything at once "
        "(`judge.baseline`). Accuracy counts 'I don't know' on an unanswerable question as correct; "
        "`precision` is correct / answered on answerable questions; `acc. (answerable)` and "
        "`IDK (unanswerable)` split the two kinds. `outcome reward` is the reward without its process "
        "credit (a search that surfaced or read a gold email earns some even when the agent then "
        "abstains, which `always-idk` never can): the fair comparison with `always-idk`. Differences "
        "are paired by question, 95% bootstrap CI (10,000 resamples) and two-sided p-value.",
        "",
        *_self_lines(trained.get("self"), args),
        *_grpo_lines(trained.get("grpo"), args),
        *(
            [
                "`previous` is an earlier released adapter, its evaluation copied from "
                f"`{args.previous_home}` (`{args.previous_label}` there; same test sets, judge and turn "
                "budget).",
                "",
            ]
            if "previous" in labels
            else []
        ),
    ]
    for name, comparison in comparisons.items():
        if name.endswith("vs always-idk"):
            lines += [f"## {name.split(' vs ')[0]}", "", *_means_table(comparison), ""]
        lines += [f"### {name}", "", *_diff_table(comparison), ""]
    lines += [
        "## How the rollouts ended",
        "",
        "| test set | model | ended | tool calls / rollout | failed tool calls | turns / rollout | infra |",
        "|---|---|---|---:|---:|---:|---:|",
        *_ending_rows(args.home, labels),
        "",
    ]
    if rewards:
        lines += [
            "## GRPO reward curve",
            "",
            "| step | reward mean | reward std | groups with equal rewards | accuracy | answered "
            "| hallucinated |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *[
                "| "
                + " | ".join(
                    [str(r["step"]), f"{r['reward']:.3f}"]
                    + [f"{r.get(k, float('nan')):.2f}" for k in ("reward_std", "zero_signal_share")]
                    + [f"{r.get(k, float('nan')):.2f}" for k in ("inbox/accuracy", "inbox/answered")]
                    + [f"{r.get('inbox/hallucination', float('nan')):.2f}"]
                )
                + " |"
                for r in rewards
            ],
            "",
        ]
    lines += [f"![{stage}]({plot.name})" for stage, plot in plots.items() if plot]
    lines += [
        "",
        "## Step time and peak memory",
        "",
        "| stage | device | configuration | steps | s/step (mean, min-max) | peak RSS (GB) | "
        "peak GPU (GB) | train time (s, sum of steps) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *_train_rows([args.home, *args.timing_home]),
        "",
    ]
    (RESULTS / f"{args.report}.md").write_text("\n".join(lines) + "\n")
    _copy_raw(args.home, RESULTS / f"{args.report}_evals")
    (RESULTS / f"{args.report}.json").write_text(
        json.dumps(
            {"trained": trained, "comparisons": comparisons, "eval_minutes": _eval_minutes(args.home)},
            indent=2,
            default=str,
        )
        + "\n"
    )


def _copy_raw(home: Path, out: Path) -> None:
    """The raw data behind the report: judged rollouts, eval summaries, training metrics and settings."""
    shutil.rmtree(out, ignore_errors=True)
    for summary in sorted((home / "evals").glob("*/*/summary.json")):
        target = out / summary.parent.parent.name / summary.parent.name
        target.mkdir(parents=True)
        for name in ("results.jsonl", "summary.json"):
            shutil.copy(summary.parent / name, target / name)
    for stage in ("sft", "self", "grpo"):
        run = home / "runs" / f"{stage}-bench"
        for name in ("metrics.jsonl", "train.json", "device.txt"):
            if (run / name).exists():
                shutil.copy(run / name, out / f"{stage}-{name}")


def release(home: Path, label: str, comparisons: dict, args: argparse.Namespace) -> Path:
    """Ship model ``label``'s adapter as the default agent: ``env/data/inboxrl-135m/``.

    Copies the PEFT files (its base model becomes the embedded model's name) and writes ``run.json``:
    base model, training data and config, the commit, the device, this bench's held-out scores, and
    ``example_question_ids`` (shipped questions it answers correctly, for the demo and the app).
    """
    import subprocess

    from env.config import EMBEDDED_MODEL_NAME, RELEASED_MODEL_NAME
    from env.model import released_adapter_dir

    run = home / "runs" / RUN_OF[label]
    target = released_adapter_dir()
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "adapter" / "adapter_model.safetensors", target / "adapter_model.safetensors")
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = EMBEDDED_MODEL_NAME
    (target / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    train_json = json.loads((run / "train.json").read_text())
    result = json.loads((run / "result.json").read_text())
    scores = {}
    for name, comparison in comparisons.items():
        test_set, baseline = name.split(" vs ")
        metrics = comparison["metrics"]
        scores.setdefault(test_set, {"n": comparison["runs"][0]["n"]})
        scores[test_set].update({m: metrics[m]["mean"].get(label) for m, _ in METRICS})
        scores[test_set][f"vs {baseline}"] = {
            m: metrics[m]["vs_baseline"].get(label) for m in ("reward", "accuracy", "hallucination_rate")
        }
    examples = _answered_correctly(home / "evals" / "shipped" / label)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    info = {
        "name": RELEASED_MODEL_NAME,
        "kind": train_json["stage"],
        "base_model": EMBEDDED_MODEL_NAME,
        "config": train_json["config"],
        "data": {
            "questions": "template pairs + shipped LLM-written questions of " + ", ".join(TRAIN_INBOXES),
            "n_questions": result.get("n_questions"),
            **(result.get("data") or {}),
        },
        "trained": {
            "device": _trained_on(run),
            "steps": result.get("steps"),
            "train_runtime_s": result.get("train_runtime_s"),
        },
        "commit": commit.strip(),
        "bench": f"python bench/train_bench.py {' '.join(args.argv)}",
        "eval": scores,
        "example_question_ids": examples,
        "examples_from": examples_note(home / "evals" / "shipped" / label),
    }
    for key in ("questions", "base_model", "init_adapter", "teacher_base_url", "teacher_model"):
        if key in info["config"]:
            info["config"][key] = None  # paths and servers of the machine it was trained on
    info["lineage"] = _lineage(run)
    (target / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return target


def _lineage(run: Path) -> list[dict]:
    """The training runs behind ``run``'s adapter, first to last: each run's name, stage, steps and
    data source, the first one's starting adapter by folder name (e.g. an earlier release)."""
    chain: list[dict] = []
    while (run / "result.json").exists():
        result = json.loads((run / "result.json").read_text())
        config = json.loads((run / "train.json").read_text())["config"]
        init = result.get("init_adapter")
        parent = Path(init).parent if init and Path(init).name == "adapter" else None  # a run's adapter
        start = None if not init else parent.name if parent else Path(init).name
        chain.insert(
            0,
            {
                "run": result["name"],
                "stage": result["stage"],
                "steps": result["steps"],
                "source": config.get("source"),
                "init_adapter": start,
            },
        )
        if parent is None:
            break
        run = parent
    return chain


def examples_note(out: Path) -> str:
    """How the shipped questions went when asked one at a time: where ``example_question_ids`` come from."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    counts = Counter(
        ((r.get("reward") or {}).get("outcome") or "not scored", r["question"].get("answer") is None)
        for r in rows
    )
    return (
        f"the {len(rows)} shipped questions asked one at a time, as the app asks them "
        f"(bench/train_bench.py SHIPPED_CONCURRENCY): answerable ones {counts['correct', False]} right, "
        f"{counts['incorrect', False]} wrong, {counts['abstained', False]} 'I don't know'; unanswerable "
        f"ones {counts['correct', True]} declined, {counts['incorrect', True]} answered"
    )


def _answered_correctly(out: Path) -> list[str]:
    """Ids of the questions an eval run (``results.jsonl``) got right, answerable ones first."""
    path = out / "results.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    right = [r for r in rows if (r.get("reward") or {}).get("outcome") == "correct"]
    return [r["id"] for r in sorted(right, key=lambda r: r["question"].get("answer") is None)]


def main() -> None:
    from env.config import Settings
    from env.model import prepare_embedded_model
    from synth_data.questions import default_questions_path, load_questions, save_questions
    from train.config import InboxGRPOConfig, InboxSFTConfig, parse_overrides

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path("/tmp/train-bench"))
    parser.add_argument("--model", default=None, help="Base model folder (default: the embedded model).")
    parser.add_argument("--per-inbox", type=int, default=100, help="Template pairs per training inbox.")
    parser.add_argument("--test-per-inbox", type=int, default=5, help="Template pairs per held-out inbox.")
    parser.add_argument("--sft-steps", type=int, default=40, help="-1: the config's num_epochs.")
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument(
        "--grpo-from",
        choices=("sft", "self"),
        default="sft",
        help="GRPO starts from this stage's adapter (its model is then sft+grpo or sft+self+grpo).",
    )
    parser.add_argument("--sft-set", action="append", default=[], help="SFT config KEY=VALUE (repeatable).")
    parser.add_argument("--grpo-set", action="append", default=[], help="GRPO config KEY=VALUE (repeatable).")
    parser.add_argument("--self-steps", type=int, default=20, help="Steps of the self stage (R-Tuning).")
    parser.add_argument(
        "--self-set", action="append", default=[], help="Self-stage SFT config KEY=VALUE (repeatable)."
    )
    parser.add_argument("--device", default="cpu", help="Train on cpu or cuda (the evaluation needs vLLM).")
    parser.add_argument("--max-body-chars", type=int, default=2000, help="read_email's cap, for every model.")
    parser.add_argument("--eval-turns", type=int, default=4, help="Model turns per evaluation rollout.")
    parser.add_argument("--eval-limit", type=int, default=None, help="Questions per test set.")
    parser.add_argument("--port", type=int, default=8765, help="Port of the server started for the eval.")
    parser.add_argument("--fresh", action="store_true", help="Delete --home first.")
    parser.add_argument(
        "--timing-home",
        type=Path,
        action="append",
        default=[],
        help="Another bench home whose training runs join the step-time table (repeatable).",
    )
    parser.add_argument(
        "--models",
        default=",".join(x for x in MODELS if x != "previous"),
        help="Models to evaluate (comma-separated); 'previous' is --previous-home's SFT row.",
    )
    parser.add_argument(
        "--previous-home",
        type=Path,
        default=None,
        help="An earlier bench home whose evaluation of the adapter released then joins as 'previous'.",
    )
    parser.add_argument(
        "--previous-label",
        default="sft",
        help="That adapter's label in --previous-home's evals/ (default sft).",
    )
    parser.add_argument(
        "--self-from",
        type=Path,
        default=None,
        help="Start the self stage from this adapter (e.g. the released one, env/data/inboxrl-135m) "
        "instead of the SFT stage's; its model is then release+self.",
    )
    parser.add_argument(
        "--report",
        default="train",
        help="Name of the report under bench/results (NAME.md, NAME.json, NAME_evals/, curves).",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="Rollouts in flight per evaluation.")
    parser.add_argument("--stages", default="sft,grpo", help="Training stages to run (comma-separated).")
    parser.add_argument(
        "--release",
        choices=sorted(RUN_OF),
        help="Ship this model's adapter as the default agent (env/data/inboxrl-135m/) with its scores.",
    )
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.fresh:
        shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args.home, args.per_inbox, args.test_per_inbox)
    model = args.model or str(prepare_embedded_model(Settings(home=args.home)))
    shared = {"device": args.device, "max_body_chars": args.max_body_chars}
    overrides = {
        "sft": {**shared, "max_steps": args.sft_steps, **parse_overrides(args.sft_set, InboxSFTConfig)},
        "grpo": {**shared, "max_steps": args.grpo_steps, **parse_overrides(args.grpo_set, InboxGRPOConfig)},
        "self": {**shared, "max_steps": args.self_steps, **parse_overrides(args.self_set, InboxSFTConfig)},
    }
    trained = {"model": model, **train(args.home, data, model, args.stages.split(","), overrides, args)}
    labels = tuple(x for x in args.models.split(",") if x)
    comparisons = evaluate_all(args.home, data, model, args, labels)
    if any(stage in trained for stage in ("sft", "self", "grpo")) and comparisons:
        write_report(trained, comparisons, args)
        print((RESULTS / f"{args.report}.md").read_text())
    if args.release:
        # the shipped questions were trained on: this only picks the demo's example questions
        shipped = args.home / "shipped.jsonl"
        save_questions(shipped, load_questions(default_questions_path())[:SHIPPED_EXAMPLES_FROM])
        evaluate_all(args.home, {**data, "shipped": shipped}, model, args, (args.release,), ("shipped",))
        print(f"Released {args.release} as {release(args.home, args.release, comparisons, args)}")


if __name__ == "__main__":
    main()
