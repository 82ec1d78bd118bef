"""Compare eval runs side by side, with a paired bootstrap per metric.

    inboxrl eval compare ~/.inboxrl/evals/base ~/.inboxrl/evals/grpo-step-200

The first run is the baseline. Each other run is paired with it on question id (only questions
both runs judged count; rollouts that failed for infrastructure reasons are left out), and for
each metric of :data:`judge.summary.ROW_METRICS` the difference of
means gets a 95% bootstrap confidence interval and a two-sided p-value (``B`` resamples of the
paired questions). Writes ``compare.json``, ``compare.md`` and ``compare.png`` to the out dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judge.evaluate import RESULTS, SUMMARY, load_results, write_atomic
from judge.summary import HIGHER_IS_BETTER, ROW_METRICS, infra_failure

BOOTSTRAP_RESAMPLES = 10_000
HEADLINE = ("accuracy", "abstention_rate", "hallucination_rate", "no_answer_rate")


@dataclass
class Run:
    """One eval run folder: its name, summary, rows by question id, and how many rows it left out
    because the infrastructure failed (``infra_failures``; not in ``rows``)."""

    name: str
    path: Path
    summary: dict
    rows: dict[str, dict]
    infra_failures: int = 0


def load_run(path: str | Path) -> Run:
    """Read a run folder written by ``inboxrl eval``; a folder without results names the fix."""
    path = Path(path)
    if not (path / RESULTS).exists():
        raise FileNotFoundError(f"No {RESULTS} in {path}: pass folders written by `inboxrl eval --out DIR`.")
    summary_path = path / SUMMARY
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    rows = load_results(path)
    kept = {qid: row for qid, row in rows.items() if not infra_failure(row)}
    return Run(path.name, path, summary, kept, len(rows) - len(kept))


def paired_bootstrap(
    base: list[float], other: list[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """Difference of means (other - base) over paired values, its 95% CI and a two-sided p-value.

    >>> r = paired_bootstrap([0.0] * 30, [1.0] * 30)
    >>> r["diff"], r["ci_low"], r["p_value"]
    (1.0, 1.0, 0.0)
    >>> paired_bootstrap([0.0, 1.0] * 10, [1.0, 0.0] * 10)["p_value"] > 0.5
    True
    """
    import numpy as np

    diffs = np.asarray(other, dtype=float) - np.asarray(base, dtype=float)
    if diffs.size == 0:
        raise ValueError("No paired questions: the runs share no judged question ids.")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(resamples, diffs.size))].mean(axis=1)
    observed = float(diffs.mean())
    if np.all(diffs == diffs[0]):
        p = 1.0 if observed == 0 else 0.0
    else:
        p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "diff": round(observed, 6),
        "ci_low": round(float(low), 6),
        "ci_high": round(float(high), 6),
        "p_value": p,
    }


def _paired(base: Run, other: Run, metric: str) -> tuple[list[float], list[float]]:
    fn = ROW_METRICS[metric]
    a, b = [], []
    for qid in sorted(base.rows.keys() & other.rows.keys()):
        x, y = fn(base.rows[qid]), fn(other.rows[qid])
        if x is not None and y is not None:
            a.append(float(x))
            b.append(float(y))
    return a, b


def compare(paths: list[str | Path], *, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Compare runs (the first is the baseline): per-metric means per run and paired tests vs the baseline."""
    if len(paths) < 2:
        raise ValueError("Give at least two run folders to compare (the first is the baseline).")
    runs = [load_run(p) for p in paths]
    result: dict[str, Any] = {"baseline": runs[0].name, "runs": [], "metrics": {}}
    for run in runs:
        result["runs"].append(
            {
                "name": run.name,
                "path": str(run.path),
                "model": run.summary.get("model"),
                "n": len(run.rows),
                "infra_failures": run.infra_failures,
            }
        )
    for metric in ROW_METRICS:
        entry: dict[str, Any] = {"higher_is_better": HIGHER_IS_BETTER[metric], "mean": {}, "vs_baseline": {}}
        for run in runs:
            values = [v for v in (ROW_METRICS[metric](r) for r in run.rows.values()) if v is not None]
            entry["mean"][run.name] = sum(values) / len(values) if values else None
        for run in runs[1:]:
            a, b = _paired(runs[0], run, metric)
            entry["vs_baseline"][run.name] = (
                {**paired_bootstrap(a, b, resamples=resamples), "n_paired": len(a)} if a else None
            )
        result["metrics"][metric] = entry
    return result


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("rate") or metric in ("accuracy", "source_precision", "source_recall"):
        return f"{100 * value:.1f}%"
    return f"{value:.2f}"


def _delta(metric: str, test: dict | None) -> str:
    if not test:
        return "-"
    scale, unit, digits = (100, " pp", 1) if _fmt(metric, 0.0).endswith("%") else (1, "", 2)
    mark = "*" if test["p_value"] < 0.05 else ""
    low, high = scale * test["ci_low"], scale * test["ci_high"]
    diff = f"{scale * test['diff']:+.{digits}f}{unit}"
    return f"{diff} [{low:+.{digits}f}, {high:+.{digits}f}] p={test['p_value']:.3f}{mark}"


def print_table(result: dict[str, Any]) -> None:
    """A rich table: one row per metric, each run's mean, and each run's paired difference vs the baseline.

    Runs are numbered (1 is the baseline) and listed above the table with their name and model,
    so that long run names do not squeeze the columns: it reads from 80 columns up (two runs).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    runs = result["runs"]
    names = [r["name"] for r in runs]
    console.print("[bold]Runs[/] (1 is the baseline; * p < 0.05, paired bootstrap on question id):")
    for i, run in enumerate(runs, 1):
        about = [str(run.get("model") or "model ?"), f"{run['n']} questions"]
        if run.get("infra_failures"):
            about.append(f"{run['infra_failures']} infrastructure failures left out")
        console.print(f"  {i}  {escape(run['name'])}  ({escape(', '.join(about))})")
    table = Table(title="Eval comparison")
    table.add_column("metric", min_width=10, max_width=18)
    for i in range(1, len(names) + 1):
        table.add_column(f"run {i}", justify="right", min_width=8)
    for i in range(2, len(names) + 1):
        table.add_column(f"run {i} - run 1 [95% CI]", justify="right", min_width=14)
    for metric, entry in result["metrics"].items():
        table.add_row(
            metric.replace("_", " "),
            *[_fmt(metric, entry["mean"][n]) for n in names],
            *[_delta(metric, entry["vs_baseline"][n]) for n in names[1:]],
        )
    console.print(table)


def write_outputs(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``compare.json``, ``compare.md`` and ``compare.png`` (headline rates, CI of the differences)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [r["name"] for r in result["runs"]]
    write_atomic(out_dir / "compare.json", json.dumps(result, indent=2) + "\n")

    lines = [
        f"# Eval comparison (baseline: {result['baseline']})",
        "",
        "Paired bootstrap on question id, 95% CI of the difference vs the baseline; * p < 0.05.",
        "",
        "| metric | " + " | ".join(names) + " | " + " | ".join(f"{n} - baseline" for n in names[1:]) + " |",
        "|---|" + "---:|" * (2 * len(names) - 1),
    ]
    for metric, entry in result["metrics"].items():
        cells = [_fmt(metric, entry["mean"][n]) for n in names] + [
            _delta(metric, entry["vs_baseline"][n]) for n in names[1:]
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    write_atomic(out_dir / "compare.md", "\n".join(lines) + "\n\n![compare](compare.png)\n")

    fig, ax = plt.subplots(figsize=(1.8 * len(HEADLINE) + 2, 3.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(HEADLINE))]
        values = [result["metrics"][m]["mean"][name] or 0.0 for m in HEADLINE]
        errors = [[0.0] * len(HEADLINE), [0.0] * len(HEADLINE)]
        if i:
            for j, m in enumerate(HEADLINE):
                test = result["metrics"][m]["vs_baseline"][name]
                if test:
                    base = result["metrics"][m]["mean"][names[0]] or 0.0
                    errors[0][j] = max(0.0, values[j] - (base + test["ci_low"]))
                    errors[1][j] = max(0.0, (base + test["ci_high"]) - values[j])
        ax.bar(xs, values, width, label=name, yerr=errors if i else None, capsize=3)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(HEADLINE))], list(HEADLINE))
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of judged questions")
    ax.set_title("Runs vs baseline (error bars: 95% CI of the paired difference)")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / "compare.png", dpi=110)
    plt.close(fig)
    return [out_dir / "compare.json", out_dir / "compare.md", out_dir / "compare.png"]
