"""Serving benchmark: vLLM start-up time and memory, and agent rollout throughput on the CPU server.

1. Start the embedded model's server twice with fresh compile caches (vLLM's and torch inductor's):
   the first start is cold (compiles), the second warm (reuses the cache). Memory is the resident
   size of the server's whole process tree (RSS, and USS = memory no other process shares).
2. On the warm server, for the first N questions of the shipped default question set against the
   default inbox: plain sequential calls (each question's first model call, the agent's prompt and
   tools, one request after another), then whole agent rollouts through ``arun_batch`` at each
   concurrency level. Reported: rollouts (or calls)/min, completion and prompt tokens/s summed over
   every model call, model calls, mean latency per call, and how the rollouts ended.
3. A raw decode baseline: sequential chat calls of exactly 64 completion tokens (ignore_eos).

Run it on an otherwise idle machine if you can (it reports the load average it saw):

    .venv/bin/python bench/serve_bench.py --out bench/results/serve.md          # ~30 min on 2 cores
    .venv/bin/python bench/serve_bench.py --questions 10 --concurrency 1 4      # quick look
    .venv/bin/python bench/serve_bench.py --questions 16 --concurrency 16 --dtypes float32 bfloat16
    .venv/bin/python bench/serve_bench.py --questions 16 --concurrency 16 --reserved-cpus 1 0
    .venv/bin/python bench/serve_bench.py --questions 16 --concurrency 16 --worker-process 1 0
    .venv/bin/python bench/serve_bench.py --questions 16 --concurrency 1 16 --lora 1 0
    .venv/bin/python bench/serve_bench.py --questions 16 --concurrency 16 --through-adapter \
        --lora-ops stock grouped

``--dtypes``, ``--reserved-cpus``, ``--worker-process`` and ``--lora`` compare servers one after the
other in one run (each combination of values; a cold then a warm start of each).
``--reserved-cpus`` sets ``VLLM_CPU_NUM_OF_RESERVED_CPU``, the cores vLLM keeps its model threads
off: 1 is vLLM's own default, ``env.hardware.choose_reserved_cpus`` the automatic choice.
``--worker-process`` sets ``VLLM_ENABLE_V1_MULTIPROCESSING``: 1 runs the model in a worker process of
its own beside the engine's (vLLM's default on CPU), 0 in the engine's process. ``--lora`` sets
``Settings.serve_lora``: vLLM's CPU build compiles the model only without LoRA. ``--lora-ops`` sets
``INBOXRL_VLLM_LORA_OPS``: ``stock`` is vLLM's CPU LoRA ops, ``grouped`` env/vllm_lora.py's.
``--through-adapter`` serves the embedded base with the released adapter loaded as a LoRA and sends
every request through it (otherwise requests go to the served model, no adapter). A bench that
made its own temporary home removes it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from env.agent import arun_batch
from env.config import Settings
from env.hardware import choose_dtype, choose_reserved_cpus
from env.ingest import default_inbox_archive, ingest
from env.model import (
    LORA_OPS_ENV,
    embedded_model_dir,
    make_client,
    prepare_embedded_model,
    read_server_info,
    released_adapter_dir,
    serve,
    stop,
)
from env.trajectory import Trajectory
from synth_data.questions import default_questions_path, load_questions


def tree_memory(pid: int) -> dict[str, float]:
    """RSS and USS (MiB) summed over a process and its descendants."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    rss = uss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, uss = rss + info.rss, uss + info.uss
    return {"rss_mib": round(rss / 2**20), "uss_mib": round(uss / 2**20), "processes": len(procs)}


class PeakMemory:
    """Samples a process tree's memory every second in a thread; ``peak`` is the largest RSS seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, {"rss_mib": 0, "uss_mib": 0}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with_mem = tree_memory(self.pid)
            if with_mem["rss_mib"] > self.peak["rss_mib"]:
                self.peak = with_mem

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_server(settings: Settings, model_dir: Path, adapters: dict[str, Path] | None = None) -> dict:
    """Start the server, return its start-up time and memory right after it became healthy."""
    start = time.monotonic()
    info = serve(settings, model_dir=model_dir, adapters=adapters, progress=True)
    seconds = time.monotonic() - start
    return {"start_s": round(seconds, 1), **tree_memory(info.pid)}


def summarize(label: str, trajs: list[Trajectory], wall_s: float, concurrency: int) -> dict:
    """Throughput numbers for one run of rollouts."""
    calls = [t for tr in trajs for t in tr.turns]
    completion = sum(tr.completion_tokens for tr in trajs)
    prompt = sum(tr.prompt_tokens for tr in trajs)
    return {
        "mode": label,
        "concurrency": concurrency,
        "rollouts": len(trajs),
        "wall_s": round(wall_s, 1),
        "rollouts_per_min": round(len(trajs) / wall_s * 60, 2),
        "completion_tokens_per_s": round(completion / wall_s, 1),
        "prompt_tokens_per_s": round(prompt / wall_s, 1),
        "model_calls": len(calls),
        "mean_call_latency_s": round(statistics.mean(t.latency_s for t in calls), 2) if calls else None,
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "ended": dict(Counter(tr.ended for tr in trajs)),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


def run_plain_calls(questions: list, db: Path, settings: Settings) -> dict:
    """Plain sequential calls: each question's first model call of a rollout (the agent's prompt and
    tools, no tool execution), one request after another."""
    from env.db import get_inbox, open_db
    from env.prompt import build_messages
    from env.tools import InboxTools

    database = open_db(db)

    async def go() -> tuple[list[tuple[int, int, float]], float]:
        rows = []
        async with make_client(settings) as client:
            start = time.monotonic()
            for q in questions:
                messages = build_messages(q.question, get_inbox(database, q.inbox_address), q.query_date)
                t0 = time.monotonic()
                r = await client.chat.completions.create(
                    model=settings.model,
                    messages=messages,
                    tools=InboxTools.schemas(),
                    temperature=settings.temperature,
                    max_tokens=512,
                )
                rows.append((r.usage.prompt_tokens, r.usage.completion_tokens, time.monotonic() - t0))
            return rows, time.monotonic() - start

    rows, wall = asyncio.run(go())
    return {
        "mode": "plain sequential calls",
        "concurrency": 1,
        "rollouts": len(rows),
        "wall_s": round(wall, 1),
        "rollouts_per_min": round(len(rows) / wall * 60, 2),
        "completion_tokens_per_s": round(sum(r[1] for r in rows) / wall, 1),
        "prompt_tokens_per_s": round(sum(r[0] for r in rows) / wall, 1),
        "model_calls": len(rows),
        "mean_call_latency_s": round(statistics.mean(r[2] for r in rows), 2),
        "completion_tokens": sum(r[1] for r in rows),
        "prompt_tokens": sum(r[0] for r in rows),
        "ended": {},
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }


def run_batch(
    questions: list, db: Path, settings: Settings, concurrency: int
) -> tuple[list[Trajectory], float]:
    """``arun_batch`` with ``concurrency`` rollouts in flight."""
    batch_settings = settings.model_copy(update={"concurrency": concurrency})
    start = time.monotonic()
    trajs = asyncio.run(
        arun_batch(questions, db=db, settings=batch_settings, tracer=False, description=f"c={concurrency}")
    )
    return trajs, time.monotonic() - start


def prefill(settings: Settings, n: int = 3, lines: int = 120) -> dict:
    """Sequential completions of one token for ``n`` long prompts (~1,900 tokens) that share no
    prefix (the prefix cache cannot help): the prompt-processing rate."""
    import httpx

    rows = []
    for i in range(n):
        body = " ".join(f"Line {k}: the gas price for May was discussed." for k in range(lines))
        text = f"Note {i}: {body}"
        t0 = time.monotonic()
        r = httpx.post(
            f"{settings.base_url}/completions",
            headers={"Authorization": f"Bearer {settings.api_key}"},
            json={"model": settings.model, "prompt": text, "max_tokens": 1, "temperature": 0},
            timeout=settings.timeout_s,
        )
        r.raise_for_status()
        rows.append((r.json()["usage"]["prompt_tokens"], time.monotonic() - t0))
    seconds = sum(s for _, s in rows)
    return {
        "calls": n,
        "prompt_tokens": rows[0][0],
        "seconds_per_call": round(seconds / n, 2),
        "tokens_per_s": round(sum(t for t, _ in rows) / seconds, 1),
    }


def raw_decode(settings: Settings, n: int = 3, tokens: int = 64) -> dict:
    """Sequential plain chat calls of exactly ``tokens`` completion tokens: the single-stream decode rate."""

    async def go() -> list[float]:
        async with make_client(settings) as client:
            times = []
            for i in range(n):
                start = time.monotonic()
                r = await client.chat.completions.create(
                    model=settings.model,
                    messages=[
                        {"role": "user", "content": f"Write a long story about gas trading, part {i}."}
                    ],
                    max_tokens=tokens,
                    temperature=0.0,
                    extra_body={"ignore_eos": True, "min_tokens": tokens},
                )
                assert r.usage.completion_tokens == tokens
                times.append(time.monotonic() - start)
            return times

    times = asyncio.run(go())
    return {"calls": n, "tokens_per_call": tokens, "tokens_per_s": round(n * tokens / sum(times), 1)}


def write_markdown(path: Path, result: dict) -> None:
    """The committed human-readable report."""
    s = result["server"]
    lines = [
        "# Serving benchmark: embedded SmolLM2-135M on vLLM's CPU build",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`. Date (UTC): {result['date']}.",
        "",
        "## Server start-up and memory",
        "",
        "| start | seconds to healthy | RSS (MiB) | USS (MiB) | processes |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in s.items():
        if not name.startswith("peak_during_rollouts"):
            lines.append(f"| {name} | {r['start_s']} | {r['rss_mib']} | {r['uss_mib']} | {r['processes']} |")
    for name, peak in s.items():
        if name.startswith("peak_during_rollouts"):
            during = name.removeprefix("peak_during_rollouts").strip()
            lines += [
                "",
                f"Peak during the rollouts{' ' + during if during else ''}: RSS {peak['rss_mib']} MiB, "
                f"USS {peak['uss_mib']} MiB.",
            ]
    lines += [
        "",
        f"## Agent rollouts ({result['questions']} questions on the default inbox, "
        f"max_turns {result['max_turns']})",
        "",
        *(
            ["Every request through the released adapter, loaded as a LoRA on the embedded base.", ""]
            if result.get("through_adapter")
            else []
        ),
        "| mode | server | concurrency | wall (s) | rollouts (calls)/min | completion tok/s | prompt tok/s "
        "| model calls | mean call latency (s) | ended | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["runs"]:
        ended = ", ".join(f"{k} {v}" for k, v in sorted(r["ended"].items()))
        server = r.get("server", r.get("dtype", "auto"))
        lines.append(
            f"| {r['mode']} | {server} | {r['concurrency']} | {r['wall_s']} | "
            f"{r['rollouts_per_min']} | "
            f"{r['completion_tokens_per_s']} | {r['prompt_tokens_per_s']} | {r['model_calls']} | "
            f"{r['mean_call_latency_s']} | {ended} | {r['load_avg_1m']} |"
        )
    if "raw_decode" in result:
        decodes = result["raw_decode"]
        decodes = decodes if "tokens_per_s" not in decodes else {"": decodes}  # one dtype, as before
        lines.append("")
        for dtype, d in decodes.items():
            lines.append(
                f"Raw decode{f' ({dtype})' if dtype else ''}, one stream: {d['tokens_per_s']} tokens/s "
                f"({d['calls']} sequential calls of {d['tokens_per_call']} tokens)."
            )
    for label, d in result.get("prefill", {}).items():
        lines.append(
            f"Prefill ({label}): {d['tokens_per_s']} prompt tokens/s, {d['seconds_per_call']} s per "
            f"{d['prompt_tokens']:,}-token prompt ({d['calls']} sequential calls, no shared prefix)."
        )
    if "dtype_choice" in result:
        lines += ["", f"Automatic dtype on this machine: {result['dtype_choice']}."]
    if "reserved_cpus_choice" in result:
        lines += ["", f"Automatic reserved CPUs on this machine: {result['reserved_cpus_choice']}."]
    path.write_text("\n".join([*lines, ""]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--questions", type=int, default=50, help="How many questions (from the start of the set)."
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--home", type=Path, help="INBOXRL home for the bench (default: a temp folder).")
    parser.add_argument("--out", type=Path, help="Markdown report (a .json twin is written beside it).")
    parser.add_argument(
        "--base-url",
        help="Measure throughput against this running server (its process tree's memory is sampled if "
        "--server-pid is given) instead of starting one; start-up is then not measured.",
    )
    parser.add_argument("--server-pid", type=int, help="PID of the --base-url server, for memory.")
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=["float32", "bfloat16"],
        help="Serve with each of these dtypes in turn, one server at a time (one cold start each, no "
        "plain calls), to compare them in one run; default: the automatic choice only.",
    )
    parser.add_argument(
        "--reserved-cpus",
        nargs="+",
        type=int,
        help="Serve with each VLLM_CPU_NUM_OF_RESERVED_CPU in turn (with each --dtypes), one server at "
        "a time, to compare them in one run; default: the automatic choice only.",
    )
    parser.add_argument(
        "--worker-process",
        nargs="+",
        type=int,
        choices=[0, 1],
        help="Serve with each VLLM_ENABLE_V1_MULTIPROCESSING in turn (with each --dtypes and "
        "--reserved-cpus), one server at a time; default: what env.model sets.",
    )
    parser.add_argument(
        "--lora",
        nargs="+",
        type=int,
        choices=[0, 1],
        help="Serve with LoRA on (1) and off (0, Settings.serve_lora: vLLM compiles the model) in turn "
        "(with each other variant), one server at a time; default: Settings.serve_lora.",
    )
    parser.add_argument(
        "--lora-ops",
        nargs="+",
        choices=["stock", "grouped"],
        help="Serve with each INBOXRL_VLLM_LORA_OPS in turn (with each other variant), one server at a "
        "time; default: what env.model sets (grouped).",
    )
    parser.add_argument(
        "--through-adapter",
        action="store_true",
        help="Serve the embedded base with the released adapter as a LoRA and send every request "
        "through the adapter (with the variants only).",
    )
    parser.add_argument(
        "--start-json", type=Path, help="Start-up numbers ({cold, warm}) from an earlier run, to report."
    )
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="inboxrl-serve-bench-"))
    caches = Path(tempfile.mkdtemp(prefix="inboxrl-serve-bench-cache-"))
    try:
        run_bench(args, home, caches)
    finally:
        shutil.rmtree(caches, ignore_errors=True)
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


def run_bench(args: argparse.Namespace, home: Path, caches: Path) -> None:
    """The bench of `main`'s arguments, in ``home``, with vLLM's and inductor's caches in ``caches``."""
    # Fresh compile caches, so the first start is cold and the second one warm.
    os.environ["VLLM_CACHE_ROOT"] = str(caches / "vllm")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(caches / "inductor")
    # A long request timeout: on a loaded machine a slow reply is data, not a failure.
    settings = Settings(home=home, serve_port=_free_port(), serve_start_timeout_s=1800, timeout_s=900)
    base_url = args.base_url or f"http://127.0.0.1:{settings.serve_port}/v1"
    settings = settings.model_copy(update={"base_url": base_url.rstrip("/")})
    model_dir = prepare_embedded_model(settings)
    db = home / "inbox.db"
    if not db.exists():
        ingest([default_inbox_archive()], db, progress=True)
    questions = load_questions(default_questions_path())[: args.questions]

    result: dict = {
        "machine": f"{os.cpu_count()} CPUs, {round(psutil.virtual_memory().total / 2**30)} GiB",
        "command": "python bench/serve_bench.py " + " ".join(
            f"--{k.replace('_', '-')}" if v is True
            else f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v not in (None, False) and k != "home"
        ),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "model_dir": str(embedded_model_dir(settings)),
        "questions": len(questions),
        "max_turns": settings.max_turns,
        "server": json.loads(args.start_json.read_text()) if args.start_json else {},
        "runs": [],
    }  # fmt: skip

    def report() -> None:  # after every step, so an interrupted run still leaves its numbers
        print(json.dumps(result["runs"][-1] if result["runs"] else result["server"]), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_markdown(args.out, result)
            args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

    choice = choose_dtype("cpu", settings.dtype)
    result["dtype_choice"] = f"{choice.dtype} ({choice.reason})"
    reserved = choose_reserved_cpus()
    result["reserved_cpus_choice"] = f"{reserved.cpus} ({reserved.reason})"
    try:
        compare = args.dtypes or args.reserved_cpus or args.worker_process or args.lora or args.lora_ops
        if compare and not args.base_url:
            variants = list(
                itertools.product(
                    args.dtypes or ["auto"],
                    args.reserved_cpus or [None],
                    args.worker_process or [None],
                    [bool(x) for x in args.lora] if args.lora else [None],
                    args.lora_ops or [None],
                )
            )
            adapter = {"released-lora": released_adapter_dir()} if args.through_adapter else None
            result["through_adapter"] = bool(adapter)
            compare_servers(
                variants, questions, db, settings, model_dir, args.concurrency, result, report, adapter
            )
            return
        if args.base_url:
            pid = args.server_pid
        else:
            result["server"]["cold"] = start_server(settings, model_dir)
            stop(settings)
            result["server"]["warm"] = start_server(settings, model_dir)
            pid = read_server_info(settings).pid
        report()
        with contextlib.ExitStack() as stack:
            peak = stack.enter_context(PeakMemory(pid)) if pid else None
            result["runs"].append(run_plain_calls(questions, db, settings))
            report()
            for c in args.concurrency:
                trajs, wall = run_batch(questions, db, settings, c)
                result["runs"].append(summarize("arun_batch", trajs, wall, c))
                if peak:
                    result["server"]["peak_during_rollouts"] = peak.peak
                report()
            result["raw_decode"] = raw_decode(settings)
            report()
    finally:
        if not args.base_url:
            stop(settings)


def compare_servers(
    variants: list[tuple[str, int | None, int | None, bool | None, str | None]],
    questions: list,
    db: Path,
    settings: Settings,
    model_dir: Path,
    concurrency: list[int],
    result: dict,
    report: Any,
    adapter: dict[str, Path] | None = None,
) -> None:
    """Per ``(dtype, reserved cpus, worker process, LoRA, LoRA ops)`` variant, one server after the
    other: a cold start, a warm one (the same server restarted, its compile cache kept), the rollouts
    at each concurrency and the raw decode rate (``result`` is filled in place, ``report`` called
    after every step). ``None`` = the automatic choice. With ``adapter`` (``{name: folder}``), the
    server loads it and every request goes through it."""
    result["raw_decode"] = {}
    for dtype, reserved, worker, lora, ops in variants:
        label = ", ".join(
            [dtype]
            + ([f"{reserved} reserved"] if reserved is not None else [])
            + ([{1: "worker process", 0: "worker in engine"}[worker]] if worker is not None else [])
            + ([{True: "LoRA on", False: "LoRA off (compiled)"}[lora]] if lora is not None else [])
            + ([f"{ops} LoRA ops"] if ops is not None else [])
        )
        served = settings.model_copy(
            update={"dtype": dtype} | ({"serve_lora": lora} if lora is not None else {})
        )
        with (
            _env("VLLM_CPU_NUM_OF_RESERVED_CPU", reserved),
            _env("VLLM_ENABLE_V1_MULTIPROCESSING", worker),
            _env(LORA_OPS_ENV, ops),
        ):
            result["server"][f"cold ({label})"] = start_server(served, model_dir, adapter)
            stop(served)
            result["server"][f"warm ({label})"] = start_server(served, model_dir, adapter)
        report()
        if adapter:
            served = served.model_copy(update={"model": next(iter(adapter))})
        try:
            result.setdefault("prefill", {})[label] = prefill(served)
            report()
            with PeakMemory(read_server_info(served).pid) as peak:
                for c in concurrency:
                    trajs, wall = run_batch(questions, db, served, c)
                    result["runs"].append({**summarize("arun_batch", trajs, wall, c), "server": label})
                    result["server"][f"peak_during_rollouts ({label})"] = peak.peak
                    report()
            result["raw_decode"][label] = raw_decode(served)
            report()
        finally:
            stop(served)


@contextlib.contextmanager
def _env(key: str, value: int | str | None) -> Any:
    """Environment variable ``key`` set to ``value`` for a server started inside (None: unchanged)."""
    before = os.environ.get(key)
    if value is not None:
        os.environ[key] = str(value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
