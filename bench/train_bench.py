"""Training benchmark on CPU: base vs SFT vs SFT+GRPO on inboxes the adapters never saw.

    python bench/train_bench.py --home /tmp/train-bench            # every stage; reruns skip finished ones
    python bench/train_bench.py --home /tmp/train-bench --sft-steps 40 --grpo-steps 10 --eval-limit 30
    # train on a GPU machine (same configuration, device cuda), evaluate on the CPU one:
    python bench/train_bench.py --home H --device cuda --models ''     # then copy H/runs over, and
    python bench/train_bench.py --home H --stages ''                   # evaluates and writes the report

1. Ingest the shipped default inbox (allen-p, grigsby-m, south-s) into ``<home>/inbox.db``.
2. Train questions: template pairs of allen-p and grigsby-m (``synth_data``, no LLM) and the
   shipped LLM-written questions of those two inboxes (unanswerable ones included).
   Held-out test sets, from south-s only: its template pairs, and the shipped LLM-written questions.
3. SFT (trajectories built from the train pairs), then GRPO from the SFT adapter (``configs/``).
   The adapters learn without the prompt's worked example (``few_shot = false``) and are served
   without it; the base model keeps it (zero-shot it never calls a tool).
4. Evaluate the base model, SFT and SFT+GRPO on both test sets (``judge.evaluate``, deterministic
   judge) through the vLLM server, one model at a time, each adapter merged into the base weights
   (vLLM's CPU build runs LoRA layers ~10x slower), every model with the same tools and turn budget;
   compare them with a paired bootstrap (``judge.compare``).
5. Write ``bench/results/train.md`` and ``train.json``: accuracy / hallucination / abstention per
   model and set, differences vs base with 95% CIs and p-values, the GRPO reward curve, and step time
   and peak memory per training configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TRAIN_INBOXES = ["allen-p", "grigsby-m"]
TEST_INBOX = "south-s"


def prepare_data(home: Path, per_inbox: int) -> dict[str, Path]:
    """DB and question files (train, test-template, test-llm)."""
    from env.db import get_inbox, open_db
    from env.ingest import default_inbox_archive, ingest
    from synth_data.generate import SynthConfig, generate
    from synth_data.questions import default_questions_path, load_questions, save_questions

    db_path = home / "inbox.db"
    if not db_path.exists():
        ingest([default_inbox_archive()], db_path, progress=False)
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
        test, _ = generate(
            db, get_inbox(db, TEST_INBOX), SynthConfig(n=per_inbox, generator="template"), progress=False
        )
        save_questions(files["test-template"], test)
        save_questions(files["test-llm"], [q for q in shipped if q.mailbox == TEST_INBOX])
    return {"db": db_path, **files}


def train(
    home: Path, data: dict[str, Path], model: str, stages: list[str], overrides: dict[str, dict]
) -> dict:
    """SFT then GRPO from it; returns the TrainResults as dicts (a finished run is reused).

    ``overrides`` holds each stage's config values on top of its ``configs/`` file (``--sft-set``...).
    """
    import importlib

    from env.config import Settings
    from train.config import InboxGRPOConfig, InboxSFTConfig, load_config

    settings = Settings(home=home, db=data["db"])
    sft_adapter = str(home / "runs" / "sft-bench" / "adapter")
    out = {}
    for stage, cls, file, extra in (
        ("sft", InboxSFTConfig, "sft-cpu.toml", {}),
        ("grpo", InboxGRPOConfig, "grpo-cpu-bench.toml", {"init_adapter": sft_adapter}),
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
        config = load_config(cls, "cpu", ROOT / "configs" / file, values)
        fn = getattr(
            importlib.import_module(f"train.{stage}"), f"train_{stage}"
        )  # imported late: stage by stage
        started = time.monotonic()
        result = fn(settings, config, name=f"{stage}-bench")
        wall_s = time.monotonic() - started
        out[stage] = {**result.to_dict(), "wall_s": wall_s, "device": _device_name(config.resolved_device())}
        (home / "runs" / f"{stage}-bench" / "device.txt").write_text(out[stage]["device"] + "\n")
    return out


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


def evaluate_all(
    home: Path,
    data: dict[str, Path],
    model_dir: str,
    args: argparse.Namespace,
    labels: tuple[str, ...] = ("base", "sft", "sft+grpo"),
) -> dict:
    """Each model on each test set, one vLLM server per model; returns the paired comparisons.

    The adapters are merged into the base weights first (``train.loading.merge_adapter``) and
    served with the prompt they were trained with (``train.registry.prompt_settings``); the base
    model gets the default prompt, worked example included. Every model has the same tools
    (``--max-body-chars``) and turn budget (``--eval-turns``). A later run reuses finished
    evaluations.
    """
    from env.config import Settings
    from env.model import serve, stop
    from judge.compare import compare
    from judge.evaluate import evaluate
    from synth_data.questions import load_questions
    from train.loading import merge_adapter
    from train.registry import prompt_settings

    base = Settings(
        home=home,
        db=data["db"],
        serve_port=args.port,
        base_url=f"http://127.0.0.1:{args.port}/v1",
        concurrency=4,
        max_turns=args.eval_turns,
        max_body_chars=args.max_body_chars,
        serve_max_model_len=4096,
    )
    run_of = {"sft": "sft-bench", "sft+grpo": "grpo-bench"}
    test_sets = ("test-template", "test-llm")
    for label in labels:
        todo = [s for s in test_sets if not (home / "evals" / s / label / "summary.json").exists()]
        if not todo:
            continue
        settings, served = base, Path(model_dir)
        if label != "base":
            run = home / "runs" / run_of[label]
            config = json.loads((run / "train.json").read_text())["config"]
            served = merge_adapter(run / "adapter", home / "merged" / run_of[label], base_model=model_dir)
            settings = base.model_copy(update={"model": f"e-{run_of[label]}", **prompt_settings(config)})
        serve(settings, model_dir=served)
        try:
            for test_set in todo:
                evaluate(
                    load_questions(data[test_set]),
                    db_path=data["db"],
                    out_dir=home / "evals" / test_set / label,
                    settings=settings,
                    limit=args.eval_limit,
                    questions_path=data[test_set],
                    progress=False,
                )
        finally:
            stop(settings)
    if len(labels) < 2:
        return {}
    return {s: compare([home / "evals" / s / label for label in labels]) for s in test_sets}


def _metric_rows(comparison: dict) -> list[str]:
    lines = []
    for metric in ("accuracy", "hallucination_rate", "abstention_rate", "no_answer_rate", "reward"):
        entry = comparison["metrics"][metric]
        means = entry["mean"]
        cells = [
            f"{means[r['name']]:.3f}" if means[r["name"]] is not None else "n/a" for r in comparison["runs"]
        ]
        deltas = []
        for r in comparison["runs"][1:]:
            t = entry["vs_baseline"].get(r["name"])
            deltas.append(
                f"{t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] "
                + (f"p={t['p_value']:.3f}" if t["p_value"] >= 0.001 else "p<0.001")
                if t
                else "n/a"
            )
        lines.append(f"| {metric} | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")
    return lines


def _train_rows(homes: list[Path]) -> list[str]:
    """A row per training run in ``homes`` (this bench's, ``--timing-home`` ones): device, shape, speed."""
    from train.metrics import read_metrics

    lines = []
    for home in homes:
        for stage in ("sft", "grpo"):
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
                if stage == "sft"
                else f"{cfg['questions_per_step']} questions x {cfg['num_generations']} rollouts, "
                f"max_completion_length {cfg['max_completion_length']}, max_turns {cfg['max_turns']}"
            )
            timing = f"{sum(times) / len(times):.1f} ({min(times):.1f}-{max(times):.1f})" if times else "n/a"
            lines.append(
                f"| {stage} | {_trained_on(folder)} | {shape} | {result['steps']} | {timing} | "
                f"{rss / 1024:.2f} | {f'{cuda / 1024:.2f}' if cuda else '-'} | "
                f"{result['train_runtime_s']:.0f} |"
            )
    return lines


def _summaries(home: Path, comparisons: dict) -> list[tuple[str, str, dict]]:
    return [
        (test_set, label, json.loads((home / "evals" / test_set / label / "summary.json").read_text()))
        for test_set in comparisons
        for label in ("base", "sft", "sft+grpo")
    ]


def _ending_rows(home: Path, comparisons: dict) -> list[str]:
    return [
        f"| {test_set} | {label} | {', '.join(f'{k} {v}' for k, v in sorted(s['ended'].items()))} | "
        f"{s['avg_tool_calls']:.2f} | {s['failed_tool_call_rate']:.0%} | {s['avg_turns']:.2f} |"
        for test_set, label, s in _summaries(home, comparisons)
    ]


def _eval_minutes(home: Path) -> float:
    """Wall minutes the evaluations took (from each summary's start and finish)."""
    from datetime import datetime

    total = 0.0
    for summary in (home / "evals").glob("*/*/summary.json"):
        s = json.loads(summary.read_text())
        took = datetime.fromisoformat(s["finished"]) - datetime.fromisoformat(s["started"])
        total += took.total_seconds()
    return total / 60


def write_report(trained: dict, comparisons: dict, args: argparse.Namespace) -> None:
    from train.metrics import plot_metrics, read_metrics

    RESULTS.mkdir(parents=True, exist_ok=True)
    grpo_metrics = args.home / "runs" / "grpo-bench" / "metrics.jsonl"
    plot = plot_metrics(grpo_metrics, RESULTS / "train_grpo_curve.png", title="GRPO (train bench)")
    sft_metrics = args.home / "runs" / "sft-bench" / "metrics.jsonl"
    sft_plot = plot_metrics(sft_metrics, RESULTS / "train_sft_curve.png", title="SFT (train bench)")
    rewards = [r for r in read_metrics(grpo_metrics) if "reward" in r]
    devices = {stage: trained[stage].get("device", "?") for stage in ("sft", "grpo")}
    lines = [
        "# Training benchmark (embedded SmolLM2-135M)",
        "",
        f"Command: `python bench/train_bench.py --home {args.home} --per-inbox {args.per_inbox} "
        f"--device {args.device} --sft-steps {args.sft_steps} --grpo-steps {args.grpo_steps}"
        + "".join(f" --sft-set {x}" for x in args.sft_set)
        + "".join(f" --grpo-set {x}" for x in args.grpo_set)
        + f" --max-body-chars {args.max_body_chars} --eval-turns {args.eval_turns}"
        + (f" --eval-limit {args.eval_limit}" if args.eval_limit else "")
        + "`",
        f"Training: SFT on {devices['sft']}, GRPO on {devices['grpo']}. Evaluation here: vLLM CPU server "
        f"on {platform.machine()}, {os.cpu_count()} cores; load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min) when this report was written. "
        f"Training {sum(trained[s]['train_runtime_s'] for s in ('sft', 'grpo')) / 60:.1f} min, "
        f"evaluation {_eval_minutes(args.home):.0f} min.",
        "",
        f"Train: template pairs and the shipped LLM-written questions of {', '.join(TRAIN_INBOXES)} "
        f"({trained['sft']['n_questions']} questions). "
        f"Test: inbox {TEST_INBOX}, never trained on: its template pairs and the shipped LLM-written "
        "questions. Every model gets the same tools (read_email shows "
        f"{args.max_body_chars:,} characters) and {args.eval_turns} turns; the adapters are served "
        "without the worked example they were trained without, the base model with it.",
        "Judge: deterministic. Differences are vs the base model, paired by question, 95% bootstrap CI "
        "(10,000 resamples) and two-sided p-value.",
        "",
    ]
    for test_set, comparison in comparisons.items():
        names = [r["name"] for r in comparison["runs"]]
        n = comparison["runs"][0]["n"]
        lines += [
            f"## {test_set} ({n} questions)",
            "",
            "| metric | " + " | ".join(names) + " | " + " | ".join(f"{x} - base" for x in names[1:]) + " |",
            "|---|" + "---:|" * len(names) + "---|" * (len(names) - 1),
            *_metric_rows(comparison),
            "",
        ]
    lines += [
        "## How the rollouts ended",
        "",
        "| test set | model | ended | tool calls / rollout | failed tool calls | turns / rollout |",
        "|---|---|---|---:|---:|---:|",
        *_ending_rows(args.home, comparisons),
        "",
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
        f"![GRPO metrics]({plot.name})" if plot else "",
        "",
        f"SFT loss: ![SFT]({sft_plot.name})" if sft_plot else "",
        "",
        "## Step time and peak memory",
        "",
        "| stage | device | configuration | steps | s/step (mean, min-max) | peak RSS (GB) | "
        "peak GPU (GB) | train time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *_train_rows([args.home, *args.timing_home]),
        "",
    ]
    (RESULTS / "train.md").write_text("\n".join(lines) + "\n")
    _copy_raw(args.home, RESULTS / "train_evals")
    (RESULTS / "train.json").write_text(
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
    for stage in ("sft", "grpo"):
        run = home / "runs" / f"{stage}-bench"
        for name in ("metrics.jsonl", "train.json", "device.txt"):
            if (run / name).exists():
                shutil.copy(run / name, out / f"{stage}-{name}")


def main() -> None:
    from env.config import Settings
    from env.model import prepare_embedded_model
    from train.config import InboxGRPOConfig, InboxSFTConfig, parse_overrides

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path("/tmp/train-bench"))
    parser.add_argument("--model", default=None, help="Base model folder (default: the embedded model).")
    parser.add_argument("--per-inbox", type=int, default=40, help="Template pairs per inbox.")
    parser.add_argument("--sft-steps", type=int, default=40, help="-1: the config's num_epochs.")
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--sft-set", action="append", default=[], help="SFT config KEY=VALUE (repeatable).")
    parser.add_argument("--grpo-set", action="append", default=[], help="GRPO config KEY=VALUE (repeatable).")
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
    parser.add_argument("--models", default="base,sft,sft+grpo", help="Models to evaluate (comma-separated).")
    parser.add_argument("--stages", default="sft,grpo", help="Training stages to run (comma-separated).")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args.home, args.per_inbox)
    model = args.model or str(prepare_embedded_model(Settings(home=args.home)))
    shared = {"device": args.device, "max_body_chars": args.max_body_chars}
    overrides = {
        "sft": {**shared, "max_steps": args.sft_steps, **parse_overrides(args.sft_set, InboxSFTConfig)},
        "grpo": {**shared, "max_steps": args.grpo_steps, **parse_overrides(args.grpo_set, InboxGRPOConfig)},
    }
    trained = {"model": model, **train(args.home, data, model, args.stages.split(","), overrides)}
    labels = tuple(x for x in args.models.split(",") if x)
    comparisons = evaluate_all(args.home, data, model, args, labels)
    if {"sft", "grpo"} <= set(trained) and len(labels) == 3:
        write_report(trained, comparisons, args)
        print((RESULTS / "train.md").read_text())


if __name__ == "__main__":
    main()
