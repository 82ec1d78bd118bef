"""Metrics of an eval run, computed from its ``results.jsonl`` rows.

One row per question (see :mod:`judge.evaluate`): the question, the trajectory, the verdict(s), the
reward and per-question ``metrics``. Rates are over the *judged* rows (a judge failure is counted
and reported, never scored). A rollout that failed for infrastructure reasons (``infra_error``: the
endpoint timed out or dropped it) is counted apart (``infra_failures``) and is in no metric at all,
not even turns or latency: it says nothing about the model.

- ``accuracy``: correct (on an unanswerable question, declining is correct);
- ``abstention_rate``: declined on an answerable question;
- ``hallucination_rate``: answered, and wrong;
- ``no_answer_rate``: no final answer (max turns, gave up, bad tool calls, model error);
- ``answer_precision``: correct among the answers that were not abstentions;
- ``answerable_accuracy`` / ``answered_precision``: correct among the answerable questions / among
  those of them the agent answered (per row, so ``judge.compare`` gives them CIs);
- ``unanswerable_abstention``: declined ("I don't know") on an unanswerable question;
- ``outcome_reward``: the reward's outcome part alone (correct +1, "I don't know" 0, wrong -1, no
  answer below that): ``reward`` less the process and format credit, which an agent that searches
  and then abstains earns and the "always I don't know" policy cannot, so the comparison with that
  policy is fair on this one;
- ``source_precision``: gold emails among the cited ones (rows that cite something);
- ``source_recall``: gold emails cited (questions with gold emails; nothing cited counts 0).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

OUTCOMES = ("correct", "abstained", "incorrect", "no_answer")


def infra_failure(row: dict) -> bool:
    """Whether a row's rollout failed for infrastructure reasons (not scored; a rerun redoes it)."""
    return bool(row.get("infra_error"))


def outcome_group(row: dict) -> str | None:
    """``correct | abstained | incorrect | no_answer`` for a row, None when the judge or the
    infrastructure failed."""
    if row.get("judge_error") or infra_failure(row):
        return None
    outcome = (row.get("reward") or {}).get("outcome")
    if outcome is None:
        return None
    return outcome if outcome in ("correct", "abstained", "incorrect") else "no_answer"


#: Per-question values (None where a value does not apply); compare.py pairs runs on these.
ROW_METRICS: dict[str, Callable[[dict], float | None]] = {
    "accuracy": lambda r: _flag(r, "correct"),
    "abstention_rate": lambda r: _flag(r, "abstained"),
    "hallucination_rate": lambda r: _flag(r, "incorrect"),
    "no_answer_rate": lambda r: _flag(r, "no_answer"),
    "reward": lambda r: (r.get("reward") or {}).get("total") if outcome_group(r) else None,
    "outcome_reward": lambda r: (
        ((r.get("reward") or {}).get("components") or {}).get("outcome") if outcome_group(r) else None
    ),
    "answerable_accuracy": lambda r: _flag(r, "correct") if _answerable(r) else None,
    "answered_precision": lambda r: _flag(r, "correct") if _answerable(r) and _answered(r) else None,
    "unanswerable_abstention": lambda r: None if _answerable(r) else _flag(r, "correct"),
    "source_precision": lambda r: r["metrics"].get("source_precision"),
    "source_recall": lambda r: r["metrics"].get("source_recall"),
    "turns": lambda r: r["metrics"]["turns"],
    "tool_calls": lambda r: r["metrics"]["tool_calls"],
    "latency_s": lambda r: r["metrics"]["latency_s"],
    "tokens": lambda r: r["metrics"]["prompt_tokens"] + r["metrics"]["completion_tokens"],
}
#: Whether a higher value is better (None: neither).
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "accuracy": True,
    "abstention_rate": None,
    "hallucination_rate": False,
    "no_answer_rate": False,
    "reward": True,
    "outcome_reward": True,
    "answerable_accuracy": True,
    "answered_precision": True,
    "unanswerable_abstention": True,
    "source_precision": True,
    "source_recall": True,
    "turns": False,
    "tool_calls": None,
    "latency_s": False,
    "tokens": False,
}


def _answerable(row: dict) -> bool:
    return row["question"].get("answer") is not None


def _answered(row: dict) -> bool:
    return outcome_group(row) in ("correct", "incorrect")


def _flag(row: dict, group: str) -> float | None:
    g = outcome_group(row)
    return None if g is None else float(g == group)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95)
    (2.5, 3.85)
    """
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 6)


def _rates(rows: list[dict]) -> dict[str, Any]:
    groups = [g for g in (outcome_group(r) for r in rows) if g is not None]
    counts = Counter(groups)
    judged = len(groups)
    rate = {
        f"{g}_rate" if g != "correct" else "accuracy": counts[g] / judged if judged else None
        for g in OUTCOMES
    }
    rate["abstention_rate"] = rate.pop("abstained_rate")
    rate["hallucination_rate"] = rate.pop("incorrect_rate")
    answered = counts["correct"] + counts["incorrect"]
    return {
        "n": len(rows),
        "judged": judged,
        **rate,
        "answer_precision": counts["correct"] / answered if answered else None,
        "reward_mean": mean(ROW_METRICS["reward"](r) for r in rows),
        "outcome_reward_mean": mean(ROW_METRICS["outcome_reward"](r) for r in rows),
    }


def agreement(rows: list[dict]) -> dict[str, Any] | None:
    """How often the LLM judge and the deterministic judge agree on judged answers (None without an LLM)."""
    pairs = [
        (r["verdict"]["verdict"], r["deterministic_verdict"]["verdict"])
        for r in rows
        if r.get("verdict")
        and r.get("deterministic_verdict")
        and r["verdict"]["judge_model"] != "deterministic"
    ]
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(left[k] * right[k] for k in left) / (n * n)
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 1.0
    confusion = Counter(f"{a}/{b}" for a, b in pairs)
    return {
        "n": n,
        "agreement": observed,
        "cohen_kappa": kappa,
        "llm/deterministic": dict(sorted(confusion.items())),
    }


def summarize(rows: list[dict], meta: dict) -> dict[str, Any]:
    """The summary written to ``summary.json``.

    ``n`` counts every row; ``infra_failures`` / ``infra_failed_ids`` the rows left out because the
    infrastructure failed (``infra_error_example``: the first one's error); every other number is
    over the remaining rows.
    """
    infra = [r for r in rows if infra_failure(r)]
    n = len(rows)
    rows = [r for r in rows if not infra_failure(r)]
    latencies = [r["metrics"]["latency_s"] for r in rows]
    tool_names: Counter[str] = Counter()
    for r in rows:
        tool_names.update(r["metrics"]["tool_names"])
    components: dict[str, list[float]] = {}
    for r in rows:
        for name, value in ((r.get("reward") or {}).get("components") or {}).items():
            components.setdefault(name, []).append(value)
    rewards = [v for v in (ROW_METRICS["reward"](r) for r in rows) if v is not None]
    reward_mean = mean(rewards)
    summary: dict[str, Any] = {
        **meta,
        **_rates(rows),
        "n": n,
        "judge_failures": sum(bool(r.get("judge_error")) for r in rows),
        "infra_failures": len(infra),
        "infra_failed_ids": [r["id"] for r in infra],
        "infra_error_example": next((r.get("infra_error") for r in infra if r.get("infra_error")), None),
        "reward_std": math.sqrt(sum((v - reward_mean) ** 2 for v in rewards) / len(rewards))
        if rewards
        else None,
        "reward_components": {k: sum(v) / len(rows) for k, v in sorted(components.items())},
        "ended": dict(Counter(r["trajectory"]["ended"] for r in rows).most_common()),
        "source_precision": mean(ROW_METRICS["source_precision"](r) for r in rows),
        "source_recall": mean(ROW_METRICS["source_recall"](r) for r in rows),
        "avg_turns": mean(ROW_METRICS["turns"](r) for r in rows),
        "avg_tool_calls": mean(ROW_METRICS["tool_calls"](r) for r in rows),
        "tool_calls_by_name": dict(tool_names.most_common()),
        "failed_tool_call_rate": (
            sum(r["metrics"]["failed_tool_calls"] for r in rows)
            / max(1, sum(r["metrics"]["tool_calls"] for r in rows))
        ),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "prompt_tokens": sum(r["metrics"]["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["metrics"]["completion_tokens"] for r in rows),
        "avg_tokens": mean(ROW_METRICS["tokens"](r) for r in rows),
        "by_kind": _breakdown(rows, lambda r: r["question"].get("kind") or "unknown"),
        "by_difficulty": _breakdown(rows, lambda r: r["question"].get("difficulty") or "unknown"),
        "judge_agreement": agreement(rows),
    }
    return summary


def _breakdown(rows: list[dict], key: Callable[[dict], str]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return {k: _rates(v) for k, v in sorted(groups.items())}
