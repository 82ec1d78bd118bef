"""What SFT and GRPO both load: the base model with its LoRA, the training questions, the run folder."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from env.config import Settings
from env.db import NoInbox, get_inbox, open_db
from synth_data.questions import Question, default_questions_path, load_questions
from synth_data.unanswerable import add_unanswerables
from train.config import _TrainFields
from train.registry import resolve_adapter_path, run_dir

CHECKPOINTS = "checkpoints"
FINAL_ADAPTER = "adapter"  # registered in place: run.json is written beside it
METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a training run produced (also written to ``<run>/result.json``)."""

    name: str
    stage: str
    run_dir: str
    adapter_dir: str
    base_model: str
    init_adapter: str | None
    questions: str
    n_questions: int
    steps: int
    train_runtime_s: float
    resumed_from: str | None = None
    metrics_path: str = ""
    plot_path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def base_model_path(settings: Settings, config: _TrainFields) -> str:
    """The base model: ``config.base_model``, else the model ``settings.model`` names when
    ``env.model`` can prepare it (by default the released agent, so training builds on it and the new
    adapter loads on the model that is served), else the embedded model."""
    if config.base_model:
        return config.base_model
    from env.model import EMBEDDED_MODEL_NAME, model_names, prepare_model

    name = settings.model if settings.model in model_names() else EMBEDDED_MODEL_NAME
    return str(prepare_model(settings, name))


def training_questions(settings: Settings, config: _TrainFields) -> tuple[Path, list[Question]]:
    """The questions to train on: the file, filtered to ``config.inboxes``, capped at ``max_questions``.

    Questions whose inbox is not in the DB are an error naming the fix.
    """
    path = Path(config.questions) if config.questions else default_questions_path()
    questions = load_questions(path)
    if config.inboxes:
        wanted = {i.lower() for i in config.inboxes}
        questions = [
            q for q in questions if (q.mailbox or "").lower() in wanted or q.inbox_address.lower() in wanted
        ]
    db = open_db(settings.db_path)
    missing = set()
    for key in {q.inbox_key for q in questions}:
        try:
            get_inbox(db, key)
        except NoInbox:
            missing.add(key)
    if missing:
        raise NoInbox(
            f"{len(missing)} inbox(es) of {path} are not in {settings.db_path}: {sorted(missing)}. "
            "Ingest them first (inboxrl ingest PATH) or pick others with inboxes=..."
        )
    if config.max_questions is not None:
        questions = questions[: config.max_questions]
    if not questions:
        raise ValueError(f"No training questions left from {path} (inboxes={config.inboxes or 'all'}).")
    return path, questions


def with_unanswerables(settings: Settings, config: _TrainFields, questions: list[Question]) -> list[Question]:
    """``questions`` plus made-up unanswerable ones up to ``config.unanswerable_share`` of the set
    (``synth_data.unanswerable``; the same ones for the same seed)."""
    if not config.unanswerable_share:
        return questions
    mixed, _ = add_unanswerables(
        open_db(settings.db_path), questions, config.unanswerable_share, seed=config.seed
    )
    return mixed


def split_validation(questions: list[Question], n: int, seed: int) -> tuple[list[Question], list[Question]]:
    """``(train, validation)``: ``n`` questions drawn with ``seed`` held out, the rest kept in order.

    The same questions and seed give the same split, so a resumed run trains on the same set.
    """
    if n <= 0:
        return questions, []
    if n >= len(questions):
        raise ValueError(
            f"validation_questions={n} would leave nothing to train on ({len(questions)} questions): "
            "hold out fewer."
        )
    held = set(random.Random(seed).sample(range(len(questions)), n))
    train = [q for i, q in enumerate(questions) if i not in held]
    return train, [q for i, q in enumerate(questions) if i in held]


def load_tokenizer(base_model: str) -> Any:
    """The base model's tokenizer; its chat template must render tool calls (e.g. the Qwen2.5 one)."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import supports_tool_calling

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not supports_tool_calling(tokenizer):
        raise ValueError(
            f"The chat template of {base_model} cannot render tool calls. Use a model with a tool template, "
            "or install one: tokenizer.chat_template = trl.chat_template_utils.qwen2_5_chat_template "
            "(inboxrl model prepare does this for the embedded model)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(settings: Settings, config: _TrainFields, base_model: str, device: str) -> tuple[Any, Any]:
    """``(model, peft_config)``: the base model, with the starting adapter loaded trainable if any.

    When ``config`` names an ``init_adapter`` (a folder or a registered run), the model comes back
    as a ``PeftModel`` and ``peft_config`` is None; otherwise the trainer adds a fresh LoRA from
    ``peft_config``. With ``use_unsloth`` (GPU) unsloth loads the model and adds the LoRA itself.
    """
    import torch

    if device == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    init_adapter = getattr(config, "init_adapter", None)
    # On a GPU the weights are bf16 when training is; on a CPU they stay fp32 and bf16 training runs
    # under autocast (TrainingArguments bf16), so the LoRA weights keep full precision.
    dtype = torch.bfloat16 if (device == "cuda" and config.resolved_dtype(device).bf16) else torch.float32
    if config.use_unsloth:
        return _load_unsloth(config, base_model, init_adapter, settings), None
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    if init_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            model, str(resolve_adapter_path(settings, init_adapter)), is_trainable=True
        )
        return model, None
    return model, config.lora_config()


def _load_unsloth(config: _TrainFields, base_model: str, init_adapter: str | None, settings: Settings) -> Any:
    try:
        from unsloth import FastLanguageModel
    except ImportError as e:
        raise ImportError(
            "use_unsloth=True needs unsloth on a CUDA machine: pip install 'inboxrl[unsloth]'"
        ) from e
    max_len = getattr(config, "max_completion_length", 2048) + 2048
    if init_adapter:
        model, _ = FastLanguageModel.from_pretrained(
            str(resolve_adapter_path(settings, init_adapter)), max_seq_length=max_len
        )
        return model
    model, _ = FastLanguageModel.from_pretrained(base_model, max_seq_length=max_len, load_in_4bit=False)
    return FastLanguageModel.get_peft_model(
        model,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed,
    )


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder under ``folder`` (None when there is none)."""
    if not folder.is_dir():
        return None
    done = [
        p
        for p in folder.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def prepare_run_dir(settings: Settings, name: str, stage: str, config: _TrainFields, *, resume: bool) -> Path:
    """Create (or reopen, to resume) ``<runs_dir>/<name>`` and record the config in ``train.json``.

    Resuming with a different config is refused: the checkpoints would not match it.
    """
    folder = run_dir(settings, name)
    spec = folder / "train.json"
    wanted = {"stage": stage, "config": config.to_dict()}
    if spec.is_file():
        previous = json.loads(spec.read_text())
        if not resume:
            raise FileExistsError(
                f"Run {name!r} already exists in {folder}; pick another --name or pass --resume."
            )
        if previous != wanted and last_checkpoint(folder / CHECKPOINTS) is None:
            from train.registry import write_json_atomic

            write_json_atomic(spec, wanted)  # nothing was saved under the old settings: start over
        elif previous != wanted:
            changed = sorted(
                k for k in set(previous["config"]) | set(wanted["config"])
                if previous["config"].get(k) != wanted["config"].get(k)
            )  # fmt: skip
            raise ValueError(
                f"Run {name!r} was started with other settings ({', '.join(changed) or previous['stage']}); "
                "resume it with the same settings, or start a new --name."
            )
    else:
        from train.registry import write_json_atomic

        write_json_atomic(spec, wanted)
    return folder


def train_and_save(
    trainer: Any,
    folder: Path,
    *,
    name: str,
    stage: str,
    resume: bool,
    base_model: str,
    init_adapter: str | None,
    questions: Path,
    n_questions: int,
    data: dict[str, Any],
) -> TrainResult:
    """Run ``trainer`` (from the newest checkpoint when resuming), save the adapter and the plot.

    Writes ``<folder>/adapter``, ``training.png`` and ``result.json`` (the returned
    :class:`TrainResult`); ``data`` is what the run trained on, kept in the result.
    """
    from train.budget import budget_stop
    from train.metrics import plot_metrics
    from train.registry import write_json_atomic

    start = last_checkpoint(folder / CHECKPOINTS) if resume else None
    began = time.monotonic()
    adapter_dir = folder / FINAL_ADAPTER
    if start is not None and 0 < trainer.args.max_steps <= _checkpoint_step(start):
        # killed after its last checkpoint: transformers would train one step more on resume
        trainer.state.global_step = _checkpoint_step(start)
        runtime = 0.0
        copy_adapter(start, adapter_dir)
    else:
        output = trainer.train(resume_from_checkpoint=str(start) if start else None)
        runtime = float(output.metrics.get("train_runtime", time.monotonic() - began))
        trainer.save_model(str(adapter_dir))
        stopped = budget_stop(trainer)
        if stopped:
            data = {**data, "budget_stop": stopped}
    metrics_path = folder / METRICS
    plot = plot_metrics(metrics_path, folder / "training.png", title=f"{stage.upper()} {name}")
    result = TrainResult(
        name=name,
        stage=stage,
        run_dir=str(folder),
        adapter_dir=str(adapter_dir),
        base_model=base_model,
        init_adapter=init_adapter,
        questions=str(questions),
        n_questions=n_questions,
        steps=trainer.state.global_step,
        train_runtime_s=runtime,
        resumed_from=str(start) if start else None,
        metrics_path=str(metrics_path),
        plot_path=str(plot) if plot else None,
        data=data,
    )
    write_json_atomic(folder / "result.json", result.to_dict())
    return result


def _checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint was saved at (its ``trainer_state.json``)."""
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def copy_adapter(source: Path, adapter_dir: Path) -> None:
    """``source``'s PEFT files (adapter, tokenizer), without a checkpoint's optimizer and trainer
    state, as ``adapter_dir``: built beside it and swapped in by renames, so an interruption leaves
    the old folder or the new one, never a half-copied one."""
    import shutil
    import tempfile

    state = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}
    tmp = Path(tempfile.mkdtemp(prefix=f".{adapter_dir.name}.", dir=adapter_dir.parent))
    for f in source.iterdir():
        if f.is_file() and f.name not in state:
            shutil.copy2(f, tmp / f.name)
    old = adapter_dir.parent / f".{adapter_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if adapter_dir.exists():
        os.replace(adapter_dir, old)
    os.replace(tmp, adapter_dir)
    shutil.rmtree(old, ignore_errors=True)


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Fold a LoRA adapter into its base model's weights and save a plain HF model folder.

    A merged model serves at the base model's speed: vLLM's CPU build runs LoRA layers about ten
    times slower (measured in bench/results/train.md). The folder is written to a temp folder
    beside ``out_dir`` and renamed into place, so a crash leaves no half-written model; an
    existing ``out_dir`` is returned as is.

    :param base_model: the base model folder; default the one named in ``adapter_config.json``.
    """
    import shutil
    import tempfile

    from env.model import merge_lora

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    adapter = Path(adapter_dir)
    base = base_model or json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merge_lora(adapter, Path(base), tmp)  # files readable by servers and trainers
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
