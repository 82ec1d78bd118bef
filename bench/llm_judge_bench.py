"""The LLM judge with a local model (issue 15 item 3a): accuracy on hand-labelled verdicts, gaming
attempts included, and agreement with the deterministic judge on real answers.

    python bench/llm_judge_bench.py --model qwen2.5-coder-1.5b --home /tmp/q15 \
        --eval-dir /tmp/hb/evals/test-llm/sft --real 60

1. Serves ``--model`` with ``inboxrl``'s vLLM CPU server (``env.model.serve``; or uses
   ``--base-url``), as the judge (``judge_model``).
2. Hand-labelled set: the adversarial table of tests/test_judge_adversarial.py (question, gold
   answer, answer, expected verdict): hedges, guesses inside abstentions, lists of candidates,
   denials, right answers padded with wrong ones, grader-directed text, plain abstentions, right
   answers. Each is graded three ways: the deterministic judge, the LLM's own verdict (its JSON
   reply, no guard) and ``judge.judge_answer`` with the LLM (LLM + the model-independent guards:
   abstentions and unanswerable questions decided without the LLM, the injection check).
3. Real answers: the answered rollouts of an eval run (``--eval-dir``, its ``results.jsonl``),
   graded by the LLM and by the deterministic judge: agreement and Cohen's kappa.
4. Writes ``bench/results/llm_judge.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def hand_labelled() -> list[dict]:
    """The adversarial table with each row's kind (the list it comes from)."""
    import tests.test_judge_adversarial as table

    kinds = {
        "hedge": table.HEDGES,
        "guess in an abstention": table.GUESSING_ABSTENTIONS,
        "list of candidates": table.CANDIDATES,
        "denial": table.DENIALS,
        "padded with a wrong answer": table.PADDED_WRONG,
        "grader-directed": table.INJECTIONS,
        "plain abstention": table.ABSTAINED,
        "abstention, unanswerable": table.DECLINED,
        "right answer": table.CORRECT,
    }
    expected = {row[:3]: row[3] for row in table.TABLE}
    return [
        {"kind": kind, "question": q, "gold": gold, "answer": a, "expected": expected[(q, gold, a)]}
        for kind, rows in kinds.items()
        for q, gold, a in rows
    ]


def real_answers(eval_dir: Path, limit: int) -> list[dict]:
    """Answered rollouts of an eval run: question, gold answer, the model's answer."""
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines() if line]
    out = []
    for r in rows:
        t = r["trajectory"]
        if t["ended"] == "answered" and t.get("answer"):
            q, answer = r["question"], {"answer": t["answer"]}
            out.append({"kind": "real", "question": q["question"], "gold": q.get("answer"), **answer})
    return out[:limit]


def guarded(case: dict, judge_model: str) -> str:
    """What ``judge.judge_answer`` makes of the LLM's verdict on ``case`` (its cache left out)."""
    from judge.judge import Verdict, rule

    raw = Verdict(case["llm"], case.get("rationale", ""), judge_model)
    return rule(raw, case["question"], case["gold"], case["answer"]).verdict


async def grade(cases: list[dict], settings: object, concurrency: int) -> None:
    """Fill each case's ``deterministic``, ``llm`` (raw) and ``judged`` (LLM + guards) verdicts."""
    from judge.judge import (
        JudgeError,
        deterministic_verdict,
        judge_messages,
        judge_request,
        make_async_judge_client,
        parse_verdict,
    )

    client = make_async_judge_client(settings)
    limit = asyncio.Semaphore(concurrency)

    async def one(case: dict) -> None:
        case["deterministic"] = deterministic_verdict(case["question"], case["gold"], case["answer"]).verdict
        async with limit:
            started = time.monotonic()
            messages = judge_messages(case["question"], case["gold"], case["answer"])
            request = judge_request(settings.judge_model, messages)
            try:
                response = await client.chat.completions.create(**request)
                raw = parse_verdict(response.choices[0].message.content, settings.judge_model)
            except JudgeError as e:
                case["llm"], case["judged"], case["rationale"] = "error", "error", str(e)
            else:
                case["llm"], case["rationale"] = raw.verdict, raw.rationale
                case["judged"] = guarded(case, settings.judge_model)
            case["seconds"] = time.monotonic() - started

    await asyncio.gather(*(one(c) for c in cases))


def kappa(pairs: list[tuple[str, str]]) -> float:
    """Cohen's kappa of two raters' labels."""
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(left[k] * right[k] for k in left) / (n * n)
    return (observed - expected) / (1 - expected) if expected < 1 else 1.0


def report(
    model: str, labelled: list[dict], real: list[dict], args: argparse.Namespace, wall_s: float
) -> str:
    """The Markdown report: accuracy by kind against the hand labels, agreement on real answers."""

    def acc(rows: list[dict], key: str) -> str:
        return f"{sum(r[key] == r['expected'] for r in rows) / len(rows):.0%}" if rows else "n/a"

    kinds = list(dict.fromkeys(r["kind"] for r in labelled))
    lines = [
        f"# LLM judge with a local model: {model}",
        "",
        f"Command: `python bench/llm_judge_bench.py {' '.join(args.argv)}`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, vLLM CPU server; load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"at the end. {len(labelled) + len(real)} verdicts in {wall_s / 60:.1f} min "
        f"(concurrency {args.concurrency}).",
        "",
        *(
            [f"LLM verdicts from that run; guards and this report recomputed from `{args.from_json}`.", ""]
            if args.from_json
            else []
        ),
        "## Hand-labelled verdicts (tests/test_judge_adversarial.py)",
        "",
        "Accuracy against the hand labels. `LLM` is the model's own JSON verdict; `LLM + guards` is "
        "`judge.judge_answer` with it (abstentions and unanswerable questions decided without the LLM, "
        "an LLM 'correct' overruled for grader-directed text that does not match the gold answer, and "
        "for an answer that does not commit: a hedge, a list of candidates, a denial of the gold answer).",
        "",
        "| kind | n | deterministic | LLM | LLM + guards |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in [*kinds, "all"]:
        rows = labelled if kind == "all" else [r for r in labelled if r["kind"] == kind]
        lines.append(
            f"| {kind} | {len(rows)} | {acc(rows, 'deterministic')} | {acc(rows, 'llm')} | "
            f"{acc(rows, 'judged')} |"
        )
    wrong = [r for r in labelled if r["judged"] != r["expected"]]
    lines += ["", f"LLM + guards disagreed with the label on {len(wrong)}:", ""]
    lines += [
        f"- {r['kind']}: {r['answer'][:90]!r} (gold {str(r['gold'])[:40]!r}): "
        f"{r['judged']}, label {r['expected']}"
        for r in wrong[:25]
    ]
    if real:
        pairs = [(r["judged"], r["deterministic"]) for r in real]
        confusion = Counter(f"{a}/{b}" for a, b in pairs)
        lines += [
            "",
            f"## Real answers ({args.eval_dir}, {len(real)} answered rollouts)",
            "",
            f"Agreement of LLM + guards with the deterministic judge: "
            f"{sum(a == b for a, b in pairs) / len(pairs):.0%}, Cohen's kappa {kappa(pairs):.2f}.",
            "",
            "| LLM / deterministic | answers |",
            "|---|---:|",
            *[f"| {k} | {v} |" for k, v in sorted(confusion.items())],
        ]
    seconds = sorted(r["seconds"] for r in labelled + real if "seconds" in r)
    if seconds:
        lines += [
            "",
            f"Seconds per verdict (in flight with others): median {seconds[len(seconds) // 2]:.1f}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from env.config import Settings
    from env.model import serve, stop

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="Judge model (a registry name).")
    parser.add_argument("--home", type=Path, default=Path("/tmp/llm-judge-bench"))
    parser.add_argument("--base-url", default=None, help="Use a running server instead of starting one.")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--eval-dir", type=Path, default=None, help="An eval run whose answers to grade too.")
    parser.add_argument("--real", type=int, default=60, help="Real answers to grade from --eval-dir.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="Hand-labelled rows (default: all).")
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_judge.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="Reuse the LLM verdicts of an earlier run's .json (the guards and report are recomputed).",
    )
    args = parser.parse_args()
    args.argv = sys.argv[1:]

    if args.from_json:
        earlier = json.loads(args.from_json.read_text())
        labelled, real = earlier["labelled"], earlier["real"]
        then = parser.parse_args(earlier.get("argv", []))
        args.concurrency, args.eval_dir = then.concurrency, then.eval_dir
        for case in labelled + real:
            if case["llm"] != "error":
                case["judged"] = guarded(case, args.model)
        write(args, labelled, real, earlier.get("wall_s", 0.0), earlier.get("argv", args.argv))
        return
    labelled = hand_labelled()[: args.limit]
    real = real_answers(args.eval_dir, args.real) if args.eval_dir else []
    url = args.base_url or f"http://127.0.0.1:{args.port}/v1"
    settings = Settings(
        home=args.home,  # where `inboxrl model prepare` put the model
        base_url=url,
        model=args.model,
        judge_model=args.model,
        serve_port=args.port,
        timeout_s=900.0,
    )
    if not args.base_url:
        serve(settings, model_dir=None)
    try:
        started = time.monotonic()
        asyncio.run(grade(labelled + real, settings, args.concurrency))
        wall_s = time.monotonic() - started
    finally:
        if not args.base_url:
            stop(settings)
    write(args, labelled, real, wall_s, args.argv)


def write(
    args: argparse.Namespace, labelled: list[dict], real: list[dict], wall_s: float, argv: list
) -> None:
    """The report (``--out``) and the verdicts beside it (``.json``, reusable with ``--from-json``)."""
    args.argv = argv
    text = report(args.model, labelled, real, args, wall_s)
    args.out.write_text(text)
    data = {"labelled": labelled, "real": real, "wall_s": wall_s, "argv": argv}
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
