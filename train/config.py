"""Training settings: LoRA GRPO (:class:`InboxGRPOConfig`) and the SFT warm-start (:class:`InboxSFTConfig`).

Settings are data. Each field carries its help text (``metadata={"help": ...}``) under a group
heading, and ``__post_init__`` checks the invariants and says how to fix a bad value. A run is a
preset plus small overrides:

- ``gpu``: ART·E's published settings (4 rollouts per question, 12 questions per step, lr 1.2e-5,
  LoRA r=8 alpha=16 on the attention and MLP projections, no KL), with vLLM colocate generation.
- ``cpu``: the embedded model on a 2-core CPU: transformers generation, small groups, a rollout
  budget that just fits search results and one read email, a low temperature (the 135M model
  only calls tools when sampling is near-greedy).
- ``smoke``: the smallest run that still exercises every part (CI).

Overrides come from a TOML file (``configs/*.toml``) and ``KEY=VALUE`` pairs
(``inboxrl train grpo --preset cpu --set learning_rate=1e-4``); see :func:`load_config`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from env.hardware import DTYPES, DtypeChoice, choose_dtype, log_choice
from env.tools import MAX_BODY_CHARS, MAX_RESULTS

SFT_SOURCES = ("qa", "teacher", "qa+teacher")

# LoRA on every attention and MLP projection, as ART·E does.
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _f(default: Any, help: str, group: str) -> Any:
    """A dataclass field with help text and a group heading (for ``--help`` tables and docs)."""
    return field(default=default, metadata={"help": help, "group": group})


def _meta(help: str, group: str) -> dict[str, str]:
    """Field metadata for list-valued fields (declared with ``field(default_factory=...)``)."""
    return {"help": help, "group": group}


@dataclass
class _TrainFields:
    """Fields shared by SFT and GRPO: model, LoRA, hardware, checkpoints."""

    # > Model and data
    base_model: str | None = _f(
        None, "HF model folder or hub id; None prepares the embedded model (env.model).", "Model and data"
    )
    questions: str | None = _f(
        None, "Questions JSONL (synth_data format); None uses the shipped default set.", "Model and data"
    )
    inboxes: list[str] = field(
        default_factory=list,
        metadata=_meta(
            "Train only on these mailboxes (keys such as allen-p); empty = all.", "Model and data"
        ),
    )
    max_questions: int | None = _f(
        None, "Use at most this many training questions (None = all).", "Model and data"
    )
    unanswerable_share: float = _f(
        0.3,
        "Share of unanswerable questions in the training set: time-shifted and entity-swapped ones are "
        "made from the answerable questions and checked with the tools (synth_data.unanswerable); 0 = none.",
        "Model and data",
    )
    few_shot: bool = _f(
        True, "Put the worked tool-call example in the prompt (env.agent.build_messages).", "Model and data"
    )
    max_body_chars: int = _f(
        MAX_BODY_CHARS, "read_email's cap on a body, in characters (served the same).", "Model and data"
    )
    init_adapter: str | None = _f(
        None,
        "Start from this LoRA adapter, trainable (a folder or a registered run name: an SFT run for "
        "GRPO, or an earlier adapter to train further).",
        "Model and data",
    )

    # > LoRA
    lora_r: int = _f(8, "LoRA rank.", "LoRA")
    lora_alpha: int = _f(16, "LoRA alpha (scale = alpha / r).", "LoRA")
    lora_dropout: float = _f(0.0, "LoRA dropout.", "LoRA")
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(ALL_PROJECTIONS),
        metadata=_meta("Modules that get LoRA adapters.", "LoRA"),
    )

    # > Hardware
    device: str = _f("auto", "auto | cpu | cuda. auto picks cuda when torch sees a GPU.", "Hardware")
    dtype: str = _f(
        "auto",
        "auto | bfloat16 | float32. bfloat16 trains in bf16 mixed precision (fp32 LoRA weights); auto "
        "picks it where the CPU has native bf16 (AMX / AVX512-BF16) or the GPU supports it (env.hardware).",
        "Hardware",
    )
    cpu_threads: int = _f(
        0,
        "torch threads when training on CPU (0: torch's default, one per core). On a 2-vCPU machine with "
        "AMX, one thread trained as fast as two when idle, and ~10x faster beside another busy process.",
        "Hardware",
    )
    gradient_checkpointing: bool = _f(
        True, "Recompute activations: less memory, a little slower.", "Hardware"
    )
    use_unsloth: bool = _f(
        False, "Load the model with unsloth (GPU only; `pip install inboxrl[unsloth]`).", "Hardware"
    )

    # > Checkpoints and logging
    save_steps: int = _f(
        10, "Save a resumable checkpoint every N optimizer steps.", "Checkpoints and logging"
    )
    save_total_limit: int | None = _f(
        3, "Keep at most this many checkpoints (None = all).", "Checkpoints and logging"
    )
    logging_steps: int = _f(1, "Log metrics every N steps.", "Checkpoints and logging")
    seed: int = _f(42, "Random seed (data order, sampling, LoRA init).", "Checkpoints and logging")
    max_minutes: float | None = _f(
        None,
        "Time budget from the trainer's start: stop (with a checkpoint) before the step that would end "
        "past it, predicted from the steps so far (train.budget); None = train every planned step.",
        "Checkpoints and logging",
    )

    def _check_common(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device={self.device!r} is not one of auto, cpu, cuda.")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ValueError(
                f"lora_r={self.lora_r}, lora_alpha={self.lora_alpha}: set lora_r >= 1 and lora_alpha > 0."
            )
        if not self.lora_target_modules:
            raise ValueError(
                f"lora_target_modules is empty: name the modules to adapt, e.g. {ALL_PROJECTIONS}."
            )
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads={self.cpu_threads}: set 0 (torch's default) or a thread count.")
        if not 0 <= self.unanswerable_share < 1:
            raise ValueError(f"unanswerable_share={self.unanswerable_share}: set a share in [0, 1).")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes={self.max_minutes}: set a positive budget, or none.")
        if self.save_steps < 1:
            raise ValueError(f"save_steps={self.save_steps}: checkpoints need save_steps >= 1.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {', '.join(DTYPES)}.")
        if self.device == "cpu" and self.use_unsloth:
            raise ValueError("unsloth needs a CUDA GPU; set use_unsloth=False on CPU.")

    def resolved_device(self) -> str:
        """``cpu`` or ``cuda``: ``auto`` becomes ``cuda`` when torch sees a GPU."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_dtype(self, device: str) -> DtypeChoice:
        """The dtype training on ``device`` uses, and why (``env.hardware.choose_dtype``)."""
        return choose_dtype(device, self.dtype)

    def lora_config(self) -> Any:
        """The PEFT ``LoraConfig`` for these settings."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_target_modules),
            task_type="CAUSAL_LM",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for run.json)."""
        return dataclasses.asdict(self)

    def trainer_args(self, output_dir: Path, *, device: str) -> dict[str, Any]:
        """The ``transformers.TrainingArguments`` both trainers share: device, checkpoints, logging."""
        on_gpu = device == "cuda"
        return {
            "output_dir": str(output_dir),
            "use_cpu": not on_gpu,
            "bf16": log_choice("training", self.resolved_dtype(device)).bf16,
            "gradient_checkpointing": self.gradient_checkpointing,
            "save_strategy": "steps",
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "logging_steps": self.logging_steps,
            "seed": self.seed,
            "report_to": "none",
        }


@dataclass
class InboxGRPOConfig(_TrainFields):
    """LoRA GRPO on the inbox environment. Defaults are ART·E's published GPU settings."""

    # > GRPO
    num_generations: int = _f(4, "Rollouts per question (the GRPO group).", "GRPO")
    questions_per_step: int = _f(12, "Questions per optimizer step.", "GRPO")
    questions_per_micro_batch: int = _f(
        1, "Questions per forward/backward pass; the rest is gradient accumulation.", "GRPO"
    )
    micro_batch_rows: int = _f(
        0,
        "Rollouts per forward/backward pass (0 = questions_per_micro_batch x num_generations). "
        "1 trains each rollout alone: no padding and the least memory.",
        "GRPO",
    )
    share_prompt_prefix: bool = _f(
        False,
        "Compute the prompt prefix that a step's rollouts share (system prompt, tool schemas) once "
        "per step in the loss instead of once per rollout, with the same gradient (train.prefix). "
        "One process only; gradient checkpointing is off for the loss's passes.",
        "GRPO",
    )
    learning_rate: float = _f(1.2e-5, "AdamW learning rate.", "GRPO")
    num_epochs: float = _f(2.0, "Passes over the training questions (ignored when max_steps > 0).", "GRPO")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1 = use num_epochs).", "GRPO")
    beta: float = _f(0.0, "KL penalty against the base model (0 = no reference model, as ART·E).", "GRPO")
    loss_type: str = _f("dapo", "TRL loss: grpo, dr_grpo, dapo, bnpo, cispo, ...", "GRPO")
    scale_rewards: str = _f(
        "group", "Normalise advantages by the std of the group, the batch, or none.", "GRPO"
    )
    filter_questions: bool = _f(
        False,
        "Before training, roll out each question filter_samples times with the model served at "
        "settings.base_url (settings.model) and drop those it always solves or always fails.",
        "GRPO",
    )
    filter_samples: int = _f(4, "Rollouts per question used by filter_questions.", "GRPO")
    validation_questions: int = _f(
        0,
        "Questions (unanswerable ones included) held out of training, drawn with the seed, written to "
        "the run's validation.jsonl. After training, each checkpoint (and the starting adapter) "
        "answers them and the run's adapter/ becomes the one with the best mean reward whose "
        "hallucination rate is at most hallucination_ceiling (train.select). Every checkpoint is "
        "kept (save_total_limit is ignored).",
        "GRPO",
    )
    hallucination_ceiling: float = _f(
        0.2, "Highest validation hallucination rate a selected checkpoint may have.", "GRPO"
    )
    selection_every: int = _f(
        1, "Evaluate every N-th saved step for the pick (the start and the last always).", "GRPO"
    )

    # > Rollouts
    max_turns: int = _f(10, "Model turns per rollout (tool calls + final answer).", "Rollouts")
    max_completion_length: int = _f(
        2048, "Token budget for a whole rollout (model turns + tool results).", "Rollouts"
    )
    temperature: float = _f(1.0, "Sampling temperature for rollouts.", "Rollouts")
    max_turn_tokens: int = _f(
        512,
        "Tokens the model may write in one turn, as serving's max_tokens (without it each turn may "
        "write the whole max_completion_length, and a rambling turn costs minutes on a CPU).",
        "Rollouts",
    )

    # > Generation backend
    use_vllm: bool = _f(
        True, "Generate with vLLM (GPU, colocate mode); False uses transformers.", "Generation backend"
    )
    vllm_gpu_memory_utilization: float = _f(
        0.35, "Share of GPU memory the colocated vLLM may take.", "Generation backend"
    )
    generation: str = _f(
        "trainer",
        "Without use_vllm: 'trainer' samples with transformers generate inside TRL; 'server' starts "
        "a vLLM server for the run, reloads the merged policy into it each step and samples through "
        "the serving loop (train.rollout; several times faster on a CPU).",
        "Generation backend",
    )

    def __post_init__(self) -> None:
        self._check_common()
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: GRPO compares rollouts of the same question, "
                "so set num_generations >= 2."
            )
        rows = self.questions_per_step * self.num_generations
        if self.micro_batch_rows < 0 or (self.micro_batch_rows and rows % self.micro_batch_rows):
            raise ValueError(
                f"micro_batch_rows={self.micro_batch_rows} does not divide the {rows} rollouts of a step "
                "(questions_per_step x num_generations); pick a divisor, or 0."
            )
        if self.questions_per_micro_batch < 1 or self.questions_per_step % self.questions_per_micro_batch:
            raise ValueError(
                f"questions_per_step={self.questions_per_step} is not a multiple of "
                f"questions_per_micro_batch={self.questions_per_micro_batch}; make it one."
            )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate}: set a positive learning rate.")
        if self.validation_questions < 0:
            raise ValueError(f"validation_questions={self.validation_questions}: hold out 0 or more.")
        if self.selection_every < 1:
            raise ValueError(f"selection_every={self.selection_every}: evaluate every 1st step or more.")
        if not 0 <= self.hallucination_ceiling <= 1:
            raise ValueError(f"hallucination_ceiling={self.hallucination_ceiling}: set a rate in [0, 1].")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta}: the KL coefficient must be >= 0 (0 disables it).")
        if self.temperature <= 0:
            raise ValueError(
                f"temperature={self.temperature}: GRPO needs sampled, varied rollouts; set temperature > 0."
            )
        if self.max_turns < 1:
            raise ValueError(f"max_turns={self.max_turns}: a rollout needs at least one model turn.")
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_epochs <= 0):
            raise ValueError("Nothing to train: set max_steps > 0, or max_steps=-1 with num_epochs > 0.")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards={self.scale_rewards!r} is not one of group, batch, none.")
        if self.generation not in ("trainer", "server"):
            raise ValueError(f"generation={self.generation!r} is not one of trainer, server.")
        if self.generation == "server" and self.use_vllm:
            raise ValueError("generation='server' replaces TRL's vLLM generation: set use_vllm=false.")
        if self.use_vllm and self.device == "cpu":
            raise ValueError(
                "TRL's vLLM generation needs a CUDA GPU; on CPU set use_vllm=False (transformers generation)."
            )

    @property
    def micro_batch_size(self) -> int:
        """Sequences per forward/backward pass."""
        return self.micro_batch_rows or self.questions_per_micro_batch * self.num_generations

    @property
    def gradient_accumulation_steps(self) -> int:
        """Micro-batches per optimizer step."""
        return self.questions_per_step * self.num_generations // self.micro_batch_size

    def to_trl(self, output_dir: Path, *, device: str) -> Any:
        """The ``trl.GRPOConfig`` for these settings on ``device`` (``cpu`` or ``cuda``)."""
        from trl import GRPOConfig

        use_vllm = self.use_vllm and device == "cuda"
        common = self.trainer_args(output_dir, device=device)
        if self.validation_questions:  # the pick needs every saved step: none may be rotated out
            common["save_total_limit"] = None
        return GRPOConfig(
            **common,
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.micro_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            num_generations=self.num_generations,
            beta=self.beta,
            loss_type=self.loss_type,
            scale_rewards=self.scale_rewards,
            max_completion_length=self.max_completion_length,
            # One model turn, then one more per tool-calling iteration.
            max_tool_calling_iterations=self.max_turns - 1,
            temperature=self.temperature,
            # transformers' generate and vLLM's SamplingParams name the per-turn cap differently.
            generation_kwargs={("max_tokens" if use_vllm else "max_new_tokens"): self.max_turn_tokens},
            use_vllm=use_vllm,
            vllm_mode="colocate",
            vllm_gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            # TRL 1.16 crashes logging tool rollouts (trl/trainer/utils.py, tool_calls None).
            log_completions=False,
            # reset() reads the question, inbox, query date and gold answer from the dataset row.
            remove_unused_columns=False,
        )


@dataclass
class InboxSFTConfig(_TrainFields):
    """Supervised warm-start on successful trajectories (LoRA, TRL SFTTrainer)."""

    # > Trajectories
    source: str = _f(
        "qa",
        "qa: build trajectories from the QA pairs; teacher: keep a teacher model's correct ones; "
        "qa+teacher: both.",
        "Trajectories",
    )
    teacher_model: str | None = _f(
        None, "Teacher model name (source=teacher); default settings.model.", "Trajectories"
    )
    teacher_base_url: str | None = _f(
        None,
        "Teacher endpoint, any OpenAI-compatible URL (source=teacher); default settings.base_url.",
        "Trajectories",
    )
    teacher_api_key_env: str | None = _f(
        None, "Environment variable holding the teacher's API key (source=teacher).", "Trajectories"
    )
    teacher_questions: int | None = _f(
        None,
        "Run the teacher on a seeded sample of this many training questions (None = all): rollouts "
        "cost far more than built trajectories.",
        "Trajectories",
    )
    relabel_wrong: bool = _f(
        False,
        "Keep the teacher's wrong, unfinished and abstaining rollouts as abstentions: its own searches "
        'and reads, then "I don\'t know" with no sources (R-Tuning). With the served model as its own '
        "teacher, the model learns to abstain where it fails instead of imitating answers it cannot find.",
        "Trajectories",
    )
    hindsight_answers: bool = _f(
        False,
        "With relabel_wrong: a rollout that read a cited email holding the answer, then answered "
        "wrongly or abstained, keeps its searches and reads and ends with the gold answer citing those "
        'emails, instead of "I don\'t know". Off by default: on the 135M agent it raised template '
        "accuracy and hallucination alike (bench/results/train_hindsight.md).",
        "Trajectories",
    )
    search_results: int = _f(
        5,
        "max_results of the searches in trajectories built from QA pairs (source=qa): fewer results "
        "make shorter trajectories, so more of them (abstentions with their two searches above all) "
        "fit max_length, and the model learns to ask for that many.",
        "Trajectories",
    )

    # > SFT
    learning_rate: float = _f(2e-4, "AdamW learning rate.", "SFT")
    num_epochs: float = _f(3.0, "Passes over the trajectories (ignored when max_steps > 0).", "SFT")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1 = use num_epochs).", "SFT")
    batch_size: int = _f(4, "Trajectories per forward/backward pass.", "SFT")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step.", "SFT")
    max_length: int = _f(2048, "Truncate trajectories to this many tokens.", "SFT")

    def __post_init__(self) -> None:
        self._check_common()
        if self.source not in SFT_SOURCES:
            raise ValueError(f"source={self.source!r} is not one of {', '.join(SFT_SOURCES)}.")
        if self.teacher_questions is not None and self.teacher_questions < 1:
            raise ValueError(f"teacher_questions={self.teacher_questions}: set None (all) or >= 1.")
        if not 1 <= self.search_results <= MAX_RESULTS:
            raise ValueError(f"search_results={self.search_results}: set 1 to {MAX_RESULTS}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate}: set a positive learning rate.")
        if self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("batch_size and gradient_accumulation_steps must be >= 1.")
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_epochs <= 0):
            raise ValueError("Nothing to train: set max_steps > 0, or max_steps=-1 with num_epochs > 0.")

    def to_trl(self, output_dir: Path, *, device: str) -> Any:
        """The ``trl.SFTConfig`` for these settings on ``device``."""
        from trl import SFTConfig

        return SFTConfig(
            **self.trainer_args(output_dir, device=device),
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_length=self.max_length,
            # train.sft.tokenize_examples hands over input_ids with assistant_masks, from which TRL
            # builds the labels (assistant turns only); TRL's own flag is for untokenized messages.
            assistant_only_loss=False,
        )


# ---------------------------------------------------------------------------------------------------
# Presets: small dicts of overrides on the dataclass defaults (the defaults are the GPU run).

GRPO_PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {"device": "cuda"},
    "cpu": {
        "device": "cpu",
        "use_vllm": False,
        "num_generations": 4,
        "questions_per_step": 2,
        "learning_rate": 5e-5,
        "max_turns": 3,
        "max_completion_length": 1536,
        "max_turn_tokens": 256,
        "temperature": 0.3,
        "save_steps": 5,
        # Rollouts sampled by a vLLM server the run starts (train.rollout), not transformers generate;
        # the server idles while the trainer computes, so training takes every core (torch's
        # default): 2 threads trained 1.5x faster than 1 here (bench/results/grpo_profile.md).
        "generation": "server",
        "cpu_threads": 0,
        # Each rollout trained alone: no padding, and half the peak memory of 4-rollout micro-batches.
        "micro_batch_rows": 1,
        # The ~1,000-token system prompt and tool schemas once per step, not once per rollout.
        "share_prompt_prefix": True,
    },
    "smoke": {
        "device": "cpu",
        "use_vllm": False,
        "num_generations": 2,
        "questions_per_step": 1,
        "learning_rate": 1e-4,
        "max_steps": 2,
        "max_turns": 2,
        "max_completion_length": 48,
        "temperature": 0.3,
        "save_steps": 1,
        "max_questions": 4,
        "cpu_threads": 1,  # CI: two threads stalled ~5x beside another busy process on 2 vCPUs
        "share_prompt_prefix": True,
    },
}

SFT_PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {"device": "cuda"},
    "cpu": {
        "device": "cpu",
        "batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_length": 2048,
        "save_steps": 20,
    },
    "smoke": {
        "device": "cpu",
        "batch_size": 1,
        "max_steps": 2,
        "max_length": 2048,
        "save_steps": 1,
        "max_questions": 4,
        "cpu_threads": 1,
    },
}


def parse_overrides(pairs: list[str], cls: type) -> dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into typed overrides for ``cls``'s fields.

    >>> parse_overrides(["learning_rate=1e-4", "inboxes=allen-p,south-s", "base_model=none"], InboxGRPOConfig)
    {'learning_rate': 0.0001, 'inboxes': ['allen-p', 'south-s'], 'base_model': None}
    """
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in hints:
            known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
            raise ValueError(f"Bad override {pair!r}: use KEY=VALUE with KEY one of: {known}")
        out[key] = _coerce(raw.strip(), hints[key], key)
    return out


def _coerce(raw: str, hint: Any, key: str) -> Any:
    args = typing.get_args(hint)
    if raw.lower() in ("none", "null") and type(None) in args:
        return None
    base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
    origin = typing.get_origin(base)
    try:
        if origin is list:
            return [s.strip() for s in raw.split(",") if s.strip()]
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if base in (int, float, str):
            return base(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a valid {getattr(base, '__name__', base)}") from None
    return raw


def load_config(
    cls: type, preset: str = "auto", file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Any:
    """Build a config: dataclass defaults, then the preset, then a TOML file, then ``overrides``.

    ``preset="auto"`` picks ``gpu`` when torch sees a CUDA device, else ``cpu``.
    """
    presets = GRPO_PRESETS if cls is InboxGRPOConfig else SFT_PRESETS
    if preset == "auto":
        import torch

        preset = "gpu" if torch.cuda.is_available() else "cpu"
    if preset not in presets:
        raise ValueError(f"Unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    values = dict(presets[preset])
    if file is not None:
        data = tomllib.loads(Path(file).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{file}: unknown settings {unknown}; known: {', '.join(sorted(names))}")
        values.update(data)
    values.update(overrides or {})
    return cls(**values)


def describe(cls: type) -> list[tuple[str, str, str, str]]:
    """``(group, name, default, help)`` for every field, for ``inboxrl train config``."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((f.metadata.get("group", ""), f.name, repr(default), f.metadata.get("help", "")))
    order = list(dict.fromkeys(r[0] for r in rows))  # groups in the order they are declared
    return sorted(rows, key=lambda r: order.index(r[0]))
