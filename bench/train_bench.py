"""Training benchmark on CPU: base vs SFT vs SFT+GRPO on inboxes the adapters never saw.

    python bench/train_bench.py --home /tmp/train-bench            # every stage; reruns skip finished ones
    python bench/train_bench.py --home /tmp/train-bench --sft-steps 40 --grpo-steps 10 --eval-limit 30

1. Ingest the shipped default inbox (allen-p, grigsby-m, south-s) into ``<home>/inbox.db``.
2. Train questions: template pairs of allen-p and grigsby-m (``synth_data``, no LLM).
   Held-out test sets, from south-s only: its template pairs, and the shipped LLM-written questions.
3. SFT (trajectories built from the train pairs), then GRPO from the SFT adapter (``configs/``).
4. Evaluate the base model, SFT and SFT+GRPO on both test sets through one vLLM server
   (``judge.evaluate``, deterministic judge), and compare them with a paired bootstrap
   (``judge.compare``).
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
        train = [
            q for key in TRAIN_INBOXES for q in generate(db, get_inbox(db, key), config, progress=False)[0]
        ]
        save_questions(files["train"], train)
        test, _ = generate(
            db, get_inbox(db, TEST_INBOX), SynthConfig(n=per_inbox, generator="template"), progress=False
        )
        save_questions(files["test-template"], test)
        shipped = [q for q in load_questions(default_questions_path()) if q.mailbox == TEST_INBOX]
        save_questions(files["test-llm"], shipped)
    return {"db": db_path, **files}


def train(
    home: Path, data: dict[str, Path], sft_steps: int, grpo_steps: int, model: str | None, stages: list[str]
) -> dict:
    """SFT then GRPO from it; returns the TrainResults as dicts (a finished run is reused)."""
    import importlib

    from env.config import Settings
    from train.config import InboxGRPOConfig, InboxSFTConfig, load_config

    settings = Settings(home=home, db=data["db"])
    sft_adapter = str(home / "runs" / "sft-bench" / "adapter")
    out = {}
    for stage, cls, overrides in (
        # One trajectory per step: about 17 s on 2 idle cores.
        ("sft", InboxSFTConfig, {"max_steps": sft_steps, "batch_size": 1, "gradient_accumulation_steps": 1}),
        ("grpo", InboxGRPOConfig, {"max_steps": grpo_steps, "init_adapter": sft_adapter}),
    ):
        if stage not in stages:
            continue
        result_file = home / "runs" / f"{stage}-bench" / "result.json"
        if result_file.exists():
            out[stage] = json.loads(result_file.read_text())
            continue
        file = ROOT / "configs" / ("sft-cpu.toml" if stage == "sft" else "grpo-cpu-bench.toml")
        values = {**overrides, "questions": str(data["train"]), "base_model": model, "inboxes": TRAIN_INBOXES}
        config = load_config(cls, "cpu", file, values)
        fn = getattr(
            importlib.import_module(f"train.{stage}"), f"train_{stage}"
        )  # imported late: stage by stage
        started = time.monotonic()
        result = fn(settings, config, name=f"{stage}-bench")
        out[stage] = {**result.to_dict(), "wall_s": time.monotonic() - started}
    return out


def evaluate_all(
    home: Path,
    data: dict[str, Path],
    trained: dict,
    port: int,
    limit: int | None,
    labels: tuple[str, ...] = ("base", "sft", "sft+grpo"),
    server: str | None = None,
) -> dict:
    """Each model on each test set, through one vLLM server serving both adapters.

    ``labels`` picks the models (base, sft, sft+grpo): the base model needs no training, so it
    can be evaluated while the adapters train; a later run reuses finished evaluations.
    ``server`` is the base URL of a vLLM server already serving the base model (with runtime LoRA
    loading): the adapters are loaded into it instead of starting a server here.
    """
    from env.config import Settings
    from env.model import load_adapter, serve, stop
    from judge.compare import compare
    from judge.evaluate import evaluate
    from synth_data.questions import load_questions

    # The same turn budget for every model; short, so a rambling 135M model cannot stall the bench.
    base = Settings(
        home=home,
        db=data["db"],
        serve_port=port,
        base_url=server or f"http://127.0.0.1:{port}/v1",
        concurrency=4,
        max_turns=3,
        serve_max_model_len=4096,
    )
    names = {"base": base.model, "sft": "e-sft-bench", "sft+grpo": "e-grpo-bench"}
    stage_of = {"sft": "sft", "sft+grpo": "grpo"}
    models = {label: names[label] for label in labels}
    adapters = {names[x]: Path(trained[stage_of[x]]["adapter_dir"]) for x in labels if x != "base"}
    out: dict = {}
    todo = [
        (s, m)
        for s in ("test-template", "test-llm")
        for m in models
        if not (home / "evals" / s / m / "summary.json").exists()
    ]
    started = bool(todo) and server is None
    if started:
        serve(base, model_dir=Path(trained["model"]), adapters=adapters)
    elif todo:
        for name, path in adapters.items():
            load_adapter(base, name, path)
    try:
        for test_set in ("test-template", "test-llm"):
            questions = load_questions(data[test_set])
            for label, model in models.items():
                folder = home / "evals" / test_set / label
                if not (folder / "summary.json").exists():
                    evaluate(
                        questions,
                        db_path=data["db"],
                        out_dir=folder,
                        settings=base.model_copy(update={"model": model}),
                        limit=limit,
                        questions_path=data[test_set],
                        progress=False,
                    )
            if len(models) > 1:
                out[test_set] = compare([home / "evals" / test_set / label for label in models])
    finally:
        if started:
            stop(base)
    return out


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
                f"{t['diff']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] p={t['p_value']:.3f}"
                if t
                else "n/a"
            )
        lines.append(f"| {metric} | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")
    return lines


def _train_rows(trained: dict) -> list[str]:
    from train.metrics import read_metrics

    lines = []
    for stage in ("sft", "grpo"):
        result = trained[stage]
        records = read_metrics(result["metrics_path"])
        times = [r["step_time_s"] for r in records if "step_time_s" in r]
        peak = max((r.get("peak_rss_mb", 0) for r in records), default=0)
        mean_time = sum(times) / len(times) if times else float("nan")
        cfg = json.loads((Path(result["run_dir"]) / "train.json").read_text())["config"]
        shape = (
            f"batch {cfg['batch_size']}x{cfg['gradient_accumulation_steps']}, max_length {cfg['max_length']}"
            if stage == "sft"
            else f"{cfg['questions_per_step']} questions x {cfg['num_generations']} rollouts, "
            f"max_completion_length {cfg['max_completion_length']}, max_turns {cfg['max_turns']}"
        )
        lines.append(
            f"| {stage} | {shape} | {result['steps']} | {mean_time:.1f} | {peak / 1024:.2f} | "
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
    plot = plot_metrics(
        trained["grpo"]["metrics_path"], RESULTS / "train_grpo_curve.png", title="GRPO (CPU bench)"
    )
    rewards = [
        (r["step"], r["reward"], r.get("zero_signal_share"))
        for r in read_metrics(trained["grpo"]["metrics_path"])
        if "reward" in r
    ]
    lines = [
        "# Training benchmark (CPU, embedded SmolLM2-135M)",
        "",
        f"Command: `python bench/train_bench.py --home {args.home} --sft-steps {args.sft_steps} "
        f"--grpo-steps {args.grpo_steps} --per-inbox {args.per_inbox}"
        + (f" --eval-limit {args.eval_limit}" if args.eval_limit else "")
        + "`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, no GPU; load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min) when this report was written. "
        f"Training {sum(trained[s]['train_runtime_s'] for s in ('sft', 'grpo')) / 60:.0f} min, "
        f"evaluation {_eval_minutes(args.home):.0f} min.",
        "",
        f"Train: template pairs of {', '.join(TRAIN_INBOXES)} ({trained['sft']['n_questions']} questions). "
        f"Test: inbox {TEST_INBOX}, never trained on: its template pairs and the shipped LLM-written "
        "questions.",
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
        "| step | reward mean | share of groups with equal rewards |",
        "|---:|---:|---:|",
        *[f"| {s} | {r:.3f} | {z if z is not None else 'n/a'} |" for s, r, z in rewards],
        "",
        f"![GRPO metrics]({plot.name})" if plot else "",
        "",
        "## Step time and peak memory",
        "",
        "| stage | configuration | steps | s/step | peak RSS (GB) | train time (s) |",
        "|---|---|---:|---:|---:|---:|",
        *_train_rows(trained),
        "",
    ]
    (RESULTS / "train.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "train.json").write_text(
        json.dumps(
            {"trained": trained, "comparisons": comparisons, "eval_minutes": _eval_minutes(args.home)},
            indent=2,
            default=str,
        )
        + "\n"
    )


def main() -> None:
    from env.config import Settings
    from env.model import prepare_embedded_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path("/tmp/train-bench"))
    parser.add_argument("--model", default=None, help="Base model folder (default: the embedded model).")
    parser.add_argument("--per-inbox", type=int, default=40, help="Template pairs per inbox.")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--eval-limit", type=int, default=None, help="Questions per test set.")
    parser.add_argument("--port", type=int, default=8765, help="Port of the server started for the eval.")
    parser.add_argument("--server", default=None, help="Use this running vLLM server (base URL) instead.")
    parser.add_argument("--fresh", action="store_true", help="Delete --home first.")
    parser.add_argument("--models", default="base,sft,sft+grpo", help="Models to evaluate (comma-separated).")
    parser.add_argument("--stages", default="sft,grpo", help="Training stages to run (comma-separated).")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args.home, args.per_inbox)
    model = args.model or str(prepare_embedded_model(Settings(home=args.home)))
    stages, labels = args.stages.split(","), tuple(args.models.split(","))
    trained = {"model": model, **train(args.home, data, args.sft_steps, args.grpo_steps, model, stages)}
    comparisons = evaluate_all(args.home, data, trained, args.port, args.eval_limit, labels, args.server)
    if {"sft", "grpo"} <= set(trained) and len(labels) == 3:
        write_report(trained, comparisons, args)
        print((RESULTS / "train.md").read_text())


if __name__ == "__main__":
    main()
