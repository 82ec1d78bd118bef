"""The eval report: ``report.md`` and its PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from env.markdown import escape_markdown
from judge.summary import OUTCOMES, outcome_group

COLORS = {"correct": "#2e7d32", "abstained": "#9e9e9e", "incorrect": "#c62828", "no_answer": "#ef6c00"}
LABELS = {
    "correct": "correct",
    "abstained": "abstained",
    "incorrect": "hallucinated",
    "no_answer": "no answer",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_plots(out_dir: Path, rows: list[dict], summary: dict) -> list[str]:
    """``outcomes.png`` (accuracy vs abstention vs hallucination, overall and per kind/difficulty) and
    ``turns.png`` (turns per question by outcome); returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("all", summary)]
    groups += [(f"kind: {k}", v) for k, v in summary["by_kind"].items()]
    groups += [(f"difficulty: {k}", v) for k, v in summary["by_difficulty"].items()]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(groups) + 1.5))
    names = [f"{name} (n={g['judged']})" for name, g in groups][::-1]
    left = [0.0] * len(groups)
    for outcome in OUTCOMES:
        key = {"correct": "accuracy", "abstained": "abstention_rate", "incorrect": "hallucination_rate"}.get(
            outcome, "no_answer_rate"
        )
        values = [(g[key] or 0.0) for _, g in groups][::-1]
        ax.barh(names, values, left=left, color=COLORS[outcome], label=LABELS[outcome])
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of judged questions")
    ax.set_title(f"{summary['model']}: accuracy vs hallucination")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(out_dir / "outcomes.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    max_turns = max([r["metrics"]["turns"] for r in rows] + [1])
    bins = list(range(0, max_turns + 2))
    data = [[r["metrics"]["turns"] for r in rows if outcome_group(r) == o] for o in OUTCOMES]
    ax.hist(
        data,
        bins=bins,
        stacked=True,
        color=[COLORS[o] for o in OUTCOMES],
        label=[LABELS[o] for o in OUTCOMES],
    )
    ax.set_xlabel("model turns per question")
    ax.set_ylabel("questions")
    ax.set_title(f"{summary['model']}: turns by outcome")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out_dir / "turns.png", dpi=110)
    plt.close(fig)
    return ["outcomes.png", "turns.png"]


def _breakdown_table(title: str, groups: dict[str, dict]) -> list[str]:
    lines = [
        f"### By {title}",
        "",
        "| group | n | accuracy | abstained | hallucinated | no answer | mean reward |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, g in groups.items():
        lines.append(
            f"| {name} | {g['n']} | {_pct(g['accuracy'])} | {_pct(g['abstention_rate'])} | "
            f"{_pct(g['hallucination_rate'])} | {_pct(g['no_answer_rate'])} | {_num(g['reward_mean'])} |"
        )
    return [*lines, ""]


def _infra_note(summary: dict) -> list[str]:
    """A paragraph on the rollouts the infrastructure failed (none: no lines)."""
    count = summary.get("infra_failures") or 0
    if not count:
        return []
    ids = summary.get("infra_failed_ids") or []
    shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
    return [
        f"**{count} rollout(s) failed for infrastructure reasons** (the endpoint timed out, dropped the "
        f"connection or answered 5xx through every retry): {shown}. They are left out of every number "
        "below; rerun the same `inboxrl eval` command (same `--out`) to run just those.",
        "",
    ]


def _clip(text: Any, limit: int = 160) -> str:
    """Untrusted text (a question, an answer, a reply) for a table cell: one line, at most ``limit``
    characters before escaping, Markdown shown literally (no links, images or HTML from a model)."""
    text = " ".join(str(text).split())
    return escape_markdown(text if len(text) <= limit else text[: limit - 1] + "…")


def write_report(out_dir: Path, rows: list[dict], summary: dict, plots: list[str]) -> Path:
    """Write ``report.md``: headline numbers, breakdowns, judge agreement, examples, the reward table."""
    from judge.reward import RewardConfig

    s = summary
    lines = [
        f"# Eval: {s['model']}",
        "",
        f"{s['n']} questions ({s['judged']} judged, {s['judge_failures']} judge failures) from "
        f"`{s.get('questions') or '-'}` on `{s['db']}`; agent at `{s['base_url']}`, judge "
        f"`{s['judge_model']}`, temperature {s['temperature']}, max {s['max_turns']} turns of at most "
        f"{s.get('max_tokens', '-')} tokens, {s.get('timeout_s', '-')} s per request, concurrency "
        f"{s.get('concurrency', '-')}. "
        f"Started {s['started']}, finished {s.get('finished', '-')}.",
        "",
        *_infra_note(s),
        "| metric | value |",
        "|---|---:|",
        f"| accuracy | {_pct(s['accuracy'])} |",
        f"| abstention rate | {_pct(s['abstention_rate'])} |",
        f"| hallucination rate (answered and wrong) | {_pct(s['hallucination_rate'])} |",
        f"| no final answer | {_pct(s['no_answer_rate'])} |",
        f"| answer precision (correct / answered) | {_pct(s['answer_precision'])} |",
        f"| source precision | {_pct(s['source_precision'])} |",
        f"| source recall | {_pct(s['source_recall'])} |",
        f"| mean reward (std) | {_num(s['reward_mean'])} ({_num(s['reward_std'])}) |",
        f"| mean outcome reward (no process credit) | {_num(s.get('outcome_reward_mean'))} |",
        f"| avg turns | {_num(s['avg_turns'])} |",
        f"| avg tool calls | {_num(s['avg_tool_calls'])} |",
        f"| failed tool calls | {_pct(s['failed_tool_call_rate'])} |",
        f"| latency p50 / p95 | {_num(s['latency_p50_s'], 1)} s / {_num(s['latency_p95_s'], 1)} s |",
        f"| tokens: prompt + completion (avg per question) | {s['prompt_tokens']} + "
        f"{s['completion_tokens']} ({_num(s['avg_tokens'], 0)}) |",
        "",
        "How rollouts ended: " + ", ".join(f"{k} {v}" for k, v in s["ended"].items()) + ".",
        "Tool calls: " + (", ".join(f"{k} {v}" for k, v in s["tool_calls_by_name"].items()) or "none") + ".",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
        *_breakdown_table("kind", s["by_kind"]),
        *_breakdown_table("difficulty", s["by_difficulty"]),
    ]
    agreement = s.get("judge_agreement")
    lines += ["### Judge agreement (LLM vs deterministic)", ""]
    if agreement:
        lines += [
            f"{agreement['n']} judged answers: agreement {_pct(agreement['agreement'])}, Cohen's kappa "
            f"{_num(agreement['cohen_kappa'])}.",
            "",
            "| LLM / deterministic | answers |",
            "|---|---:|",
            *[f"| {k} | {v} |" for k, v in agreement["llm/deterministic"].items()],
            "",
        ]
    else:
        lines += ["No LLM judge in this run: the deterministic judge graded every answer.", ""]
    lines += [
        "### Examples",
        "",
        "| id | outcome | question | gold | answer / how it ended |",
        "|---|---|---|---|---|",
    ]
    shown: dict[str, int] = {}
    for r in rows:
        group = outcome_group(r) or ("infra_error" if r.get("infra_error") else "judge_error")
        if shown.get(group, 0) >= 3:
            continue
        shown[group] = shown.get(group, 0) + 1
        t = r["trajectory"]
        said = (
            t["answer"]
            if t["ended"] == "answered"
            else f"({t['ended']}) {t.get('reply') or t.get('error') or ''}"
        )
        lines.append(
            f"| {r['id']} | {LABELS.get(group, group)} | {_clip(r['question']['question'], 90)} | "
            f"{_clip(r['question'].get('answer') or '(unanswerable)', 70)} | {_clip(said, 110)} |"
        )
    config = RewardConfig(**s["reward_config"]) if s.get("reward_config") else RewardConfig()
    lines += ["", "### Reward table", "", config.table_markdown(), ""]
    path = out_dir / "report.md"
    from judge.evaluate import write_atomic

    write_atomic(path, "\n".join(lines))
    return path
