"""Profile GRPO steps on this CPU: where a step's time goes, against each part's compute floor.

    python bench/grpo_profile.py --home /tmp/grpo-profile --init-adapter RUN/adapter --steps 2

Runs the old and the new CPU path one after the other (each in its own process, so that its peak
RSS and torch thread count are its own), on the same questions, seed and starting adapter, as
``inboxrl train grpo --preset cpu --config configs/grpo-cpu-bench.toml`` with ``questions_per_step=4``:

- ``old``: the configuration of bench/results/train.md (dtype float32, torch's default threads,
  gradient checkpointing on, transformers generation, a question's 4 rollouts per micro-batch, no
  shared prompt prefix);
- ``new``: the ``cpu`` preset's current defaults (``--new-set KEY=VALUE`` adds overrides).

Each part of TRL's ``GRPOTrainer`` step is timed by wrapping its methods (exclusive time: a part
nested in another counts only once): generation (``_generate_single_turn``, every turn; with
``generation = "server"``, ``train.rollout.ServerRollouts``: the rollouts on the run's vLLM server,
tools included), weight_sync (merging the LoRA and reloading it into that server), tool
execution (``train.env.InboxEnvironment._call``), reward and judge (``_calculate_rewards``),
log-prob passes outside the loss (old / reference log-probs), forward (``_compute_loss``),
backward (``Accelerator.backward``), optimizer (between the ``on_pre_optimizer_step`` and
``on_optimizer_step`` callbacks), and ``other`` (the rest of the step: tokenising, padding,
advantages, logging). Each part gets its tokens and an estimate of its FLOPs; the machine's
measured matmul GFLOP/s (fp32 and bf16, 1 and 2 threads) gives each part's floor.

Writes ``bench/results/grpo_profile.json`` (a list of runs: device, config, s_per_step,
peak_rss_gb, parts, plus per-step parts, tokens, reward and accuracy) after each path, and
``bench/results/grpo_profile.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TRAIN_INBOXES = ["allen-p", "grigsby-m"]
PARTS = [
    "generation",
    "weight_sync",
    "tools",
    "reward",
    "logprobs",
    "forward",
    "backward",
    "optimizer",
    "other",
]
OLD = {
    "dtype": "float32",
    "cpu_threads": 0,
    "gradient_checkpointing": True,
    "generation": "trainer",
    "micro_batch_rows": 0,  # a question's rollouts per forward/backward
    "share_prompt_prefix": False,
}


# --------------------------------------------------------------------------------------------------
# Machine: matmul throughput


def matmul_gflops(dtype: str, threads: int, seconds: float = 1.5) -> float:
    """Measured GFLOP/s of a (2048 x 576) @ (576 x 1536) matmul (the 135M model's MLP shape)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kind = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        a = torch.randn(2048, 576, dtype=kind)
        b = torch.randn(576, 1536, dtype=kind)
        for _ in range(3):
            a @ b
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            n += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return 2 * 2048 * 576 * 1536 * n / elapsed / 1e9


def machine() -> dict[str, Any]:
    """CPU name, cores, memory, load average and matmul GFLOP/s (fp32 / bf16, 1 / 2 threads)."""
    from env.hardware import choose_dtype

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gflops = {
        f"{dtype}_{threads}t": round(matmul_gflops(dtype, threads), 1)
        for dtype in ("float32", "bfloat16")
        for threads in (1, 2)
    }
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "native_bf16": choose_dtype("cpu", "auto").bf16,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg": list(os.getloadavg()),
        "matmul_gflops": gflops,
    }


# --------------------------------------------------------------------------------------------------
# FLOPs of the model


def flops_per_token(model_config: Any) -> dict[str, float]:
    """Forward FLOPs per token: the matmuls of every layer, the LM head, and attention per context token."""
    d = model_config.hidden_size
    heads = model_config.num_attention_heads
    kv = getattr(model_config, "num_key_value_heads", heads)
    head_dim = d // heads
    layers = model_config.num_hidden_layers
    inter = model_config.intermediate_size
    per_layer = 2 * (d * d * 2 + d * kv * head_dim * 2 + 3 * d * inter)
    return {
        "matmul": float(layers * per_layer),
        "lm_head": float(2 * d * model_config.vocab_size),
        # QK^T and AV: 4 * d FLOPs per layer for each (query, key) pair
        "attention_per_ctx": float(4 * d * layers),
    }


def forward_flops(fpt: dict[str, float], tokens: int, mean_ctx: float, lm_head_tokens: int) -> float:
    """FLOPs of a forward pass over ``tokens`` positions of mean attended context ``mean_ctx``."""
    return tokens * (fpt["matmul"] + fpt["attention_per_ctx"] * mean_ctx) + lm_head_tokens * fpt["lm_head"]


# --------------------------------------------------------------------------------------------------
# The child: one path, one process


class Profiler:
    """Exclusive wall time per part (a stack of running parts), tokens and FLOPs, per optimizer step."""

    def __init__(self, fpt: dict[str, float], gradient_checkpointing: bool, rows_per_step: int) -> None:
        self.fpt = fpt
        self.gradient_checkpointing = gradient_checkpointing
        self.rows_per_step = rows_per_step
        self.stack: list[list[Any]] = []  # [part, started, time spent in children]
        self.parts: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.flops: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.rss_growth: dict[str, float] = defaultdict(float)  # peak-RSS rise while a part ran (GB)
        self.steps: list[dict[str, Any]] = []
        self.step_started = time.perf_counter()
        self.optimizer_started = 0.0
        self.server_rss_gb = 0.0  # peak RSS of the generation server's processes (server path)

    def enter(self, part: str) -> None:
        """Start timing ``part`` (nested parts are subtracted from it)."""
        self.stack.append([part, time.perf_counter(), 0.0, _maxrss_gb()])
        self.calls[part] += 1

    def leave(self) -> None:
        """Stop the innermost part."""
        part, started, children, rss = self.stack.pop()
        elapsed = time.perf_counter() - started
        self.parts[part] += elapsed - children
        self.rss_growth[part] += _maxrss_gb() - rss
        if self.stack:
            self.stack[-1][2] += elapsed

    def current(self) -> str | None:
        """The innermost running part."""
        return self.stack[-1][0] if self.stack else None

    def wrap(self, owner: Any, name: str, part: Any) -> None:
        """Replace ``owner.name`` by a timed version.

        ``part`` is a part name, or a function of ``(args, kwargs)`` giving one (None: not timed).
        """
        original = getattr(owner, name)
        profiler = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            label = part(args, kwargs) if callable(part) else part
            if label is None:
                return original(*args, **kwargs)
            profiler.enter(label)
            try:
                result = original(*args, **kwargs)
            finally:
                profiler.leave()
            if isinstance(result, dict) and "tokens_saved" in result:  # PrefixSharing.backward
                profiler.tokens["shared_prefix_saved"] += result["tokens_saved"]
                profiler.tokens["shared_prefix_positions"] += result["positions"]
            elif label == "generation" and isinstance(result, dict):
                profiler.count_server_generation(args[0], result)
            elif label == "generation":
                profiler.count_generation(args, result)
            return result

        setattr(owner, name, timed)

    def count_generation(self, args: tuple, result: Any) -> None:
        """Tokens and FLOPs of one ``_generate_single_turn`` call (left-padded prefill, then decoding)."""
        prompt_ids, completion_ids = args[1], result[0]  # args[0] is the trainer
        if not prompt_ids:
            return
        rows = len(completion_ids)  # transformers generation: one completion per (repeated) prompt
        pad_len = max(len(p) for p in prompt_ids)
        new = max((len(c) for c in completion_ids), default=0)
        self.tokens["generation_prefill"] += sum(len(p) for p in prompt_ids)
        self.tokens["generation_prefill_padded"] += pad_len * rows
        self.tokens["generated"] += sum(len(c) for c in completion_ids)
        self.tokens["generation_decode_padded"] += new * rows
        self.tokens["generate_calls"] += 1
        prefill = forward_flops(self.fpt, pad_len * rows, pad_len / 2, rows)
        decode = forward_flops(self.fpt, new * rows, pad_len + new / 2, new * rows)
        self.flops["generation"] += prefill + decode

    def count_server_generation(self, rollouts: Any, result: dict[str, Any]) -> None:
        """Tokens and FLOPs of one server generation batch (every turn's prompt is prefilled, no
        prefix cache counted), and the server's RSS."""
        from env.model import read_server_info

        for traj in result["trajectory"]:
            for turn in traj["turns"]:
                prompt, new = len(turn.get("prompt_token_ids") or []), len(turn.get("token_ids") or [])
                self.tokens["generation_prefill"] += prompt
                self.tokens["generated"] += new
                self.tokens["generate_calls"] += 1
                self.flops["generation"] += forward_flops(self.fpt, prompt, prompt / 2, 1)
                self.flops["generation"] += forward_flops(self.fpt, new, prompt + new / 2, new)
        info = read_server_info(rollouts.server)
        if info is not None:
            self.server_rss_gb = max(self.server_rss_gb, _group_rss_gb(info.pid))

    def count_batch(self, output: dict[str, Any]) -> None:
        """Tokens of a scored generation batch: prompt, completion (tool results included), trained."""
        prompt_mask, completion_mask = output["prompt_mask"], output["completion_mask"]
        trained = completion_mask * output["tool_mask"] if "tool_mask" in output else completion_mask
        rows = prompt_mask.size(0)
        self.tokens["prompt"] += int(prompt_mask.sum())
        self.tokens["completion"] += int(completion_mask.sum())
        self.tokens["trained"] += int(trained.sum())
        self.tokens["padded_positions"] += rows * (prompt_mask.size(1) + completion_mask.size(1))
        self.tokens["padded_completion"] += rows * completion_mask.size(1)

    def end_step(self, step: int) -> None:
        """Close an optimizer step: its wall time, parts (``other`` = the rest), tokens and FLOPs."""
        now = time.perf_counter()
        wall = now - self.step_started
        parts = {p: round(self.parts.get(p, 0.0), 2) for p in PARTS if p != "other"}
        parts["other"] = round(wall - sum(parts.values()), 2)
        fpt = self.fpt
        real = self.tokens["prompt"] + self.tokens["completion"]
        padded = self.tokens["padded_positions"]
        kept = self.tokens["padded_completion"]
        rows = max(1, self.rows_per_step)
        # With shared prompt prefixes (train.prefix) the loss runs each prefix once, without
        # left padding and without gradient checkpointing.
        shared = self.tokens.get("shared_prefix_positions", 0)
        fwd = forward_flops(fpt, shared or padded, padded / rows / 2, kept)
        fwd_real = forward_flops(fpt, real, real / rows / 2, self.tokens["completion"])
        flops = dict(self.flops)
        flops["forward"] = fwd
        # LoRA: the backward pass needs activation gradients (about one forward), not base-weight
        # gradients; with gradient checkpointing it also recomputes the forward.
        flops["backward"] = fwd * (2 if self.gradient_checkpointing and not shared else 1)
        flops["logprobs"] = fwd * self.calls.get("logprobs", 0) / max(1, self.calls.get("forward", 1))
        self.steps.append(
            {
                "step": step,
                "wall_s": round(wall, 2),
                "parts": parts,
                "tokens": dict(self.tokens),
                "gflop": {k: round(v / 1e9, 1) for k, v in flops.items()},
                "gflop_trained_unpadded_fwd_bwd": round(2 * fwd_real / 1e9, 1),
                "peak_rss_gb": round(_maxrss_gb(), 2),
                "peak_rss_rise_gb": {k: round(v, 2) for k, v in self.rss_growth.items()},
            }
        )
        self.parts.clear()
        self.tokens.clear()
        self.flops.clear()
        self.calls.clear()
        self.rss_growth.clear()
        self.step_started = time.perf_counter()


def _group_rss_gb(pid: int) -> float:
    """RSS of a process and its children now, in GB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**30


def _maxrss_gb() -> float:
    """This process's peak RSS so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(args: argparse.Namespace) -> None:
    """Train one path for ``--steps`` steps with every part timed; write the run's JSON to ``--child-out``."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoConfig, TrainerCallback
    from trl import GRPOTrainer

    from env.config import Settings
    from train.config import InboxGRPOConfig, load_config, parse_overrides
    from train.env import InboxEnvironment
    from train.grpo import train_grpo
    from train.metrics import read_metrics
    from train.prefix import PrefixSharing
    from train.rollout import ServerRollouts

    home = Path(args.home)
    overrides = {
        "questions_per_step": 4,
        "max_steps": args.steps,
        "save_steps": 1000,
        "questions": str(home / "train.jsonl"),
        "inboxes": TRAIN_INBOXES,
        "init_adapter": args.init_adapter,
        "base_model": args.base_model,
        **(OLD if args.child == "old" else {}),
        **parse_overrides(args.set, InboxGRPOConfig),
    }
    config = load_config(InboxGRPOConfig, "cpu", ROOT / "configs" / "grpo-cpu-bench.toml", overrides)
    settings = Settings(home=home, db=home / "inbox.db")
    name = f"profile-{args.child}"
    shutil.rmtree(home / "runs" / name, ignore_errors=True)

    from train.loading import base_model_path

    model_config = AutoConfig.from_pretrained(base_model_path(settings, config))
    prof = Profiler(
        flops_per_token(model_config),
        config.gradient_checkpointing,
        config.questions_per_step * config.num_generations,
    )

    prof.wrap(GRPOTrainer, "_generate_single_turn", "generation")
    prof.wrap(ServerRollouts, "__call__", "generation")
    prof.wrap(ServerRollouts, "sync", "weight_sync")
    prof.wrap(InboxEnvironment, "_call", "tools")
    prof.wrap(GRPOTrainer, "_calculate_rewards", "reward")
    prof.wrap(GRPOTrainer, "_compute_loss", "forward")
    prof.wrap(
        GRPOTrainer,
        "_get_per_token_logps_and_entropies",
        lambda a, k: None if prof.current() == "forward" else "logprobs",
    )
    prof.wrap(Accelerator, "backward", "backward")
    prof.wrap(PrefixSharing, "backward", "backward")  # the shared prompt prefixes' own backward
    score = GRPOTrainer._generate_and_score_completions

    def scored(self: Any, inputs: Any) -> Any:
        output = score(self, inputs)
        prof.count_batch(output)
        return output

    GRPOTrainer._generate_and_score_completions = scored

    logged: list[Any] = []  # run after each logged step (the metrics callback wrote it first)

    class Steps(TrainerCallback):
        """Step boundaries and the optimizer's time."""

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            prof.step_started = time.perf_counter()

        def on_pre_optimizer_step(self, *a: Any, **k: Any) -> None:
            prof.enter("optimizer")

        def on_optimizer_step(self, *a: Any, **k: Any) -> None:
            prof.leave()

        def on_step_end(self, a: Any, state: Any, *rest: Any, **k: Any) -> None:
            prof.end_step(state.global_step)

        def on_log(self, *a: Any, **k: Any) -> None:
            for hook in logged:
                hook()

    init = GRPOTrainer.__init__

    def with_callback(self: Any, *a: Any, **k: Any) -> None:
        k["callbacks"] = [*(k.get("callbacks") or []), Steps()]
        init(self, *a, **k)

    GRPOTrainer.__init__ = with_callback

    def write(finished: bool) -> None:
        """The run so far as JSON in ``--child-out`` (after every logged step, so a cut run keeps them)."""
        if not prof.steps:
            return
        records = [r for r in read_metrics(home / "runs" / name / "metrics.jsonl") if "reward" in r]
        curve = [
            {
                "step": r.get("step"),
                "reward": r.get("reward"),
                "reward_std": r.get("reward_std"),
                "accuracy": r.get("inbox/accuracy"),
                "answered": r.get("inbox/answered"),
                "num_tokens": r.get("num_tokens"),
            }
            for r in records
        ]
        steps = prof.steps
        result = {
            "path": args.child,
            "device": f"CPU, {os.cpu_count()} cores",
            "config": {
                "preset": "cpu",
                "file": "configs/grpo-cpu-bench.toml",
                "questions_per_step": config.questions_per_step,
                "num_generations": config.num_generations,
                "max_turns": config.max_turns,
                "max_completion_length": config.max_completion_length,
                "max_turn_tokens": config.max_turn_tokens,
                "dtype": config.dtype,
                "resolved_bf16": config.resolved_dtype("cpu").bf16,
                "cpu_threads": config.cpu_threads,
                "torch_threads": torch.get_num_threads(),
                "gradient_checkpointing": config.gradient_checkpointing,
                "generation": config.generation,
                "micro_batch_rows": config.micro_batch_rows,
                "share_prompt_prefix": config.share_prompt_prefix,
                "seed": config.seed,
                "init_adapter": args.init_adapter,
            },
            "finished": finished,
            "steps_run": len(steps),
            "s_per_step": round(sum(s["wall_s"] for s in steps) / len(steps), 1),
            "peak_rss_gb": round(_maxrss_gb(), 2),
            "server_peak_rss_gb": round(prof.server_rss_gb, 2) if prof.server_rss_gb else None,
            "parts": {p: round(sum(s["parts"][p] for s in steps) / len(steps), 2) for p in PARTS},
            "total_s": round(time.perf_counter() - started, 1),
            "per_step": steps,
            "curve": curve,
        }
        Path(args.child_out).write_text(json.dumps(result, indent=1))

    logged.append(lambda: write(False))
    started = time.perf_counter()
    train_grpo(settings, config, name=name, resume=False)
    write(True)


# --------------------------------------------------------------------------------------------------
# The parent: data, both paths, the report


def prepare(home: Path, per_inbox: int) -> None:
    """The default inbox in ``home/inbox.db`` and template questions of the train mailboxes."""
    from env.db import get_inbox, open_db
    from env.ingest import default_inbox_archive, ingest
    from synth_data.generate import SynthConfig, generate
    from synth_data.questions import save_questions

    home.mkdir(parents=True, exist_ok=True)
    db_path = home / "inbox.db"
    if not db_path.exists():
        ingest([default_inbox_archive()], db_path, progress=False)
    if not (home / "train.jsonl").exists():
        db = open_db(db_path)
        config = SynthConfig(n=per_inbox, generator="template")
        questions = [
            q for key in TRAIN_INBOXES for q in generate(db, get_inbox(db, key), config, progress=False)[0]
        ]
        save_questions(home / "train.jsonl", questions)


def write_report(runs: list[dict], info: dict, command: str, out: Path = RESULTS) -> None:
    """``grpo_profile.json`` (the runs, each with the machine and command) and ``grpo_profile.md``."""
    out.mkdir(parents=True, exist_ok=True)
    listed = [{**run, "machine": info, "command": command} for run in runs]
    (out / "grpo_profile.json").write_text(json.dumps(listed, indent=1) + "\n")
    g = info["matmul_gflops"]
    lines = [
        "# GRPO step profile on CPU (embedded SmolLM2-135M, LoRA r=8)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, native bf16: "
        f"{info['native_bf16']}. Load average at start {' / '.join(f'{x:.2f}' for x in info['loadavg'])} "
        f"(1/5/15 min), at the end {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "Measured matmul throughput (2048x576 @ 576x1536): "
        + ", ".join(f"{k.replace('_', ' ')} {v} GFLOP/s" for k, v in g.items())
        + ".",
        "",
    ]
    for run in runs:
        c = run["config"]
        rate = g[f"{'bfloat16' if c['resolved_bf16'] else 'float32'}_{min(c['torch_threads'], 2)}t"]
        lines += [
            f"## {run['path']} path: dtype {c['dtype']} (bf16: {c['resolved_bf16']}), "
            f"{c['torch_threads']} torch thread(s), gradient checkpointing {c['gradient_checkpointing']}, "
            f"generation {c.get('generation', 'trainer')}, rollouts per micro-batch "
            f"{c.get('micro_batch_rows') or 'a question'}, "
            f"shared prompt prefixes {c.get('share_prompt_prefix', False)}",
            "",
            f"{run['steps_run']} steps, {run['s_per_step']} s/step, peak RSS {run['peak_rss_gb']} GB"
            + (
                f" (trainer; the generation server's processes peaked at {run['server_peak_rss_gb']} GB)"
                if run.get("server_peak_rss_gb")
                else ""
            )
            + ". "
            f"Floor = the part's estimated FLOPs at {rate} GFLOP/s (this path's dtype and threads).",
            "",
            "| part | s/step | share | GFLOP/step | floor (s) | x floor |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        steps = run["per_step"]
        for part in PARTS:
            seconds = run["parts"].get(part, 0.0)
            gflop = sum(s["gflop"].get(part, 0.0) for s in steps) / len(steps)
            floor = gflop / rate if gflop else 0.0
            lines.append(
                f"| {part} | {seconds:.1f} | {seconds / run['s_per_step']:.0%} | "
                f"{gflop:.0f} | {floor:.1f} | {f'{seconds / floor:.1f}' if floor else '-'} |"
            )
        keys = steps[0]["tokens"]
        tokens = {k: round(sum(s["tokens"].get(k, 0) for s in steps) / len(steps)) for k in keys}
        lines += ["", "Tokens per step (mean): " + ", ".join(f"{k} {v}" for k, v in tokens.items()) + ".", ""]
        lines += ["| step | s | reward | accuracy | answered |", "|---:|---:|---:|---:|---:|"]
        for s, r in zip(steps, run["curve"] + [{}] * len(steps), strict=False):
            lines.append(
                f"| {s['step']} | {s['wall_s']:.0f} | {_fmt(r.get('reward'))} | {_fmt(r.get('accuracy'))} | "
                f"{_fmt(r.get('answered'))} |"
            )
        lines.append("")
    variants = out / "grpo_profile_variants.json"
    if variants.exists():
        lines += [
            "## Variants of the new path (separate runs, one after the other on the same machine)",
            "",
            "| variant | steps | s/step | generation | forward | backward | peak RSS (GB) | server (GB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for run in json.loads(variants.read_text()):
            p = run["parts"]
            lines.append(
                f"| {run['variant']} | {run['steps_run']} | {run['s_per_step']} | {p['generation']:.0f} | "
                f"{p['forward']:.0f} | {p['backward']:.0f} | {run['peak_rss_gb']} | "
                f"{run['server_peak_rss_gb']} |"
            )
        lines += ["", "Each row's command is in grpo_profile_variants.json.", ""]
    if len(runs) == 2:
        old, new = runs
        lines += [
            "## old vs new",
            "",
            f"Step time {old['s_per_step']} -> {new['s_per_step']} s "
            f"({new['s_per_step'] / old['s_per_step']:.2f}x), peak RSS {old['peak_rss_gb']} -> "
            f"{new['peak_rss_gb']} GB.",
            "",
        ]
    (out / "grpo_profile.md").write_text("\n".join(lines) + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    """Parse arguments; run the paths (children) or one path (``--child``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default="/tmp/grpo-profile")
    parser.add_argument("--init-adapter", default=None, help="SFT adapter folder to start from")
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--per-inbox", type=int, default=100)
    parser.add_argument("--paths", default="old,new", help="comma-separated: old, new (in this order)")
    parser.add_argument("--new-set", action="append", default=[], help="KEY=VALUE for the new path")
    parser.add_argument("--out", default=str(RESULTS), help="folder for grpo_profile.json / .md")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the paths' JSON in --home"
    )
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        run_child(args)
        return
    home = Path(args.home)
    command = "python bench/grpo_profile.py " + " ".join(sys.argv[1:])
    out = Path(args.out)
    if args.report_only:  # the machine and command of the last full invocation
        saved = json.loads((out / "grpo_profile.json").read_text())
        first = saved if isinstance(saved, dict) else saved[0]
        files = [home / f"profile-{p}.json" for p in ("old", "new")]
        runs = [json.loads(f.read_text()) for f in files if f.exists()]
        write_report(runs, first["machine"], first.get("command", command), out)
        return
    prepare(home, args.per_inbox)
    info = machine()
    runs = []
    for path in args.paths.split(","):
        child_out = home / f"profile-{path}.json"
        child = [sys.executable, __file__, "--home", str(home), "--steps", str(args.steps)]
        child += ["--child", path, "--child-out", str(child_out)]
        child += [f"--init-adapter={args.init_adapter}"] if args.init_adapter else []
        child += [f"--base-model={args.base_model}"] if args.base_model else []
        for pair in args.new_set if path == "new" else []:
            child += ["--set", pair]
        subprocess.run(child, check=True)
        runs.append(json.loads(child_out.read_text()))
        runs.sort(key=lambda run: run["path"] == "new")  # old first
        write_report(runs, info, command, out)


if __name__ == "__main__":
    main()
