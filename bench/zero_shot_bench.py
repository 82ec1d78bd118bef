"""Untrained models beside the released agent and the "always I don't know" policy, on held-out questions.

    python bench/zero_shot_bench.py --home /tmp/qz --db /tmp/hb2/inbox.db \
        --questions /tmp/hb2/test-llm.jsonl --sample 60 \
        --models always-idk,inboxrl-135m,smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b

The questions (``--questions``: the LLM-written questions of mailboxes the released agent never
trained on, e.g. the held-out set of bench/train_bench.py, in a DB that holds those mailboxes) are
shuffled with ``--seed`` and the first ``--sample`` kept. Each model is prepared
(`env.model.prepare_model`: the opt-in Qwen2.5-Coder models from their PyPI parts), served alone by
vLLM on the CPU and asked every question with the settings it runs with in the product
(`env.model.model_prompt_settings`: the released agent's training prompt; the Qwen models without
the worked example and with ``tool_choice="required"``), the same turn budget for all. The
deterministic judge grades. Runs live in ``<home>/evals/<model>`` and are resumed, so an
interrupted bench goes on where it stopped. Writes bench/results/zero_shot.md and .json: per model
the outcome rates, reward, tool-call recovery, seconds per rollout and how rollouts ended, and the
paired bootstrap of every model against ``always-idk``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from train_bench import _ci  # bench/ is on the path when this runs as a script

from env.config import Settings
from env.model import model_prompt_settings, prepare_model, serve, stop
from judge.baseline import evaluate_policy
from judge.compare import compare
from judge.evaluate import evaluate
from synth_data.questions import load_questions, save_questions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METRICS = (
    ("accuracy", "accuracy"),
    ("hallucination_rate", "halluc."),
    ("abstention_rate", "abstain"),
    ("answerable_accuracy", "acc. (answ.)"),
    ("unanswerable_abstention", "IDK (unansw.)"),
    ("reward", "reward"),
)
DIFFS = ("reward", "hallucination_rate", "answerable_accuracy")


def sample_questions(path: Path, n: int, seed: int, out: Path) -> Path:
    """The first ``n`` questions of ``path`` after a shuffle with ``seed``, saved to ``out``."""
    questions = load_questions(path)
    random.Random(seed).shuffle(questions)
    return save_questions(out, questions[:n])


def run_model(name: str, questions: Path, args: argparse.Namespace) -> Path:
    """Evaluate model ``name`` (or the ``always-idk`` policy) on ``questions``; its run folder."""
    out = args.home / "evals" / name
    summary = out / "summary.json"
    if summary.exists() and not json.loads(summary.read_text()).get("infra_failures"):
        return out  # complete; a run with infrastructure failures is resumed to redo just those
    qs = load_questions(questions)
    if name == "always-idk":
        evaluate_policy(
            qs, db_path=args.db, out_dir=out, settings=Settings(home=args.home, max_turns=args.max_turns)
        )
        return out
    settings = Settings(
        home=args.home,
        model=name,
        base_url=f"http://127.0.0.1:{args.port}/v1",
        serve_port=args.port,
        concurrency=args.concurrency,
        max_turns=args.max_turns,
        **model_prompt_settings(name),
    )
    serve(settings, model_dir=prepare_model(settings, name))
    try:
        evaluate(qs, db_path=args.db, out_dir=out, settings=settings, questions_path=questions, progress=True)
    finally:
        stop(settings)
    return out


def recovered_share(run: Path) -> float | None:
    """The share of a run's tool calls that were read from the reply's text (``Turn.recovered_calls``)."""
    recovered = calls = 0
    for line in (run / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        recovered += sum(t.get("recovered_calls") or 0 for t in row["trajectory"].get("turns") or [])
        calls += row["metrics"]["tool_calls"]
    return recovered / calls if calls else None


def _cpu() -> str:
    """The CPU model and core count."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{os.cpu_count()} cores"


def report(runs: dict[str, Path], args: argparse.Namespace) -> str:
    """The markdown report: means, endings and costs, and the paired differences vs always-idk."""
    result = compare(list(runs.values()))
    summaries = {name: json.loads((path / "summary.json").read_text()) for name, path in runs.items()}
    names = [r["name"] for r in result["runs"]]
    lines = [
        "# Untrained models, the released agent and always-IDK on held-out LLM-written questions",
        "",
        f"Command: `python bench/zero_shot_bench.py {' '.join(args.argv)}`",
        f"{result['runs'][0]['n']} questions ({args.sample} sampled with seed {args.seed} from "
        f"`{args.questions.name}`), {args.max_turns} turns, deterministic judge, vLLM on the CPU "
        f"({_cpu()}), one model at a time, {args.concurrency} rollouts at once.",
        "",
        "| model | n | " + " | ".join(title for _, title in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for run, name in zip(result["runs"], names, strict=True):
        cells = []
        for metric, _ in METRICS:
            value = result["metrics"][metric]["mean"][name]
            cells.append("n/a" if value is None else f"{value:.3f}")
        lines.append(f"| {name} | {run['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | ended | tool calls | recovered | s / rollout | infra |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in names:
        s = summaries[name]
        ended = ", ".join(f"{k} {v}" for k, v in sorted(s["ended"].items()))
        recovered = recovered_share(runs[name])
        lines.append(
            f"| {name} | {ended} | {s['avg_tool_calls'] or 0:.2f} | "
            f"{'n/a' if recovered is None else f'{recovered:.0%}'} | {s['latency_p50_s'] or 0:.0f} | "
            f"{s.get('infra_failures', 0)} |"
        )
    lines += [
        "",
        f"| model - {result['baseline']} | " + " | ".join(DIFFS) + " |",
        "|---|" + "---|" * len(DIFFS),
    ]
    for name in names[1:]:
        lines.append(
            f"| {name} | "
            + " | ".join(_ci(result["metrics"][m]["vs_baseline"].get(name)) for m in DIFFS)
            + " |"
        )
    lines += [
        "",
        "`s / rollout` is the median rollout latency at the given concurrency; `recovered` the share of",
        "tool calls read from the reply's text rather than vLLM's structured `tool_calls`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="Bench home (models, servers, eval runs).")
    parser.add_argument("--db", type=Path, required=True, help="Inbox DB holding the questions' mailboxes.")
    parser.add_argument("--questions", type=Path, required=True, help="Held-out question file.")
    parser.add_argument("--sample", type=int, default=60, help="Questions kept after the shuffle.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="always-idk,inboxrl-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.home.mkdir(parents=True, exist_ok=True)
    questions = sample_questions(
        args.questions, args.sample, args.seed, args.home / f"sample-{args.sample}.jsonl"
    )
    runs = {name: run_model(name, questions, args) for name in args.models.split(",")}
    text = report(runs, args)
    (RESULTS / "zero_shot.md").write_text(text)
    (RESULTS / "zero_shot.json").write_text(
        json.dumps({name: json.loads((p / "summary.json").read_text()) for name, p in runs.items()}, indent=1)
        + "\n"
    )
    print(text)


if __name__ == "__main__":
    main()
