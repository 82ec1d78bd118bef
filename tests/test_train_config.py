"""Training settings: presets, invariants that name the fix, overrides, the TRL configs they become."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from env.hardware import choose_dtype
from train.config import (
    ALL_PROJECTIONS,
    GRPO_PRESETS,
    InboxGRPOConfig,
    InboxSFTConfig,
    describe,
    load_config,
    parse_overrides,
)


def test_gpu_defaults_are_art_e_settings() -> None:
    c = load_config(InboxGRPOConfig, "gpu")
    assert (c.num_generations, c.questions_per_step, c.learning_rate) == (4, 12, 1.2e-5)
    assert (c.lora_r, c.lora_alpha, c.beta) == (8, 16, 0.0)
    assert c.lora_target_modules == ALL_PROJECTIONS
    assert c.use_vllm and c.device == "cuda"


def test_cpu_preset_uses_transformers_generation_and_small_groups() -> None:
    c = load_config(InboxGRPOConfig, "cpu")
    assert not c.use_vllm and c.device == "cpu" and c.dtype == "auto"
    assert c.num_generations <= 4 and c.temperature < 1
    # Room for search results and one read email: shorter budgets end every rollout before its answer.
    assert c.max_completion_length >= 1024


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({"num_generations": 1}, "num_generations >= 2"),
        ({"questions_per_step": 5, "questions_per_micro_batch": 2}, "multiple"),
        ({"temperature": 0.0}, "temperature > 0"),
        ({"beta": -0.1}, ">= 0"),
        ({"max_steps": 0}, "max_steps > 0"),
        ({"device": "cpu", "use_vllm": True}, "use_vllm=False"),
        ({"device": "cpu", "use_unsloth": True, "use_vllm": False}, "use_unsloth=False"),
        ({"lora_target_modules": []}, "name the modules"),
        ({"scale_rewards": "always"}, "group, batch, none"),
    ],
)
def test_grpo_invariants_name_the_fix(overrides: dict, fix: str) -> None:
    with pytest.raises(ValueError, match=fix.replace("(", r"\(")):
        InboxGRPOConfig(**overrides)


def test_sft_invariants() -> None:
    with pytest.raises(ValueError, match="qa, teacher"):
        InboxSFTConfig(source="magic")
    with pytest.raises(ValueError, match="auto, bfloat16, float32"):
        InboxSFTConfig(dtype="fp16")


def test_overrides_are_typed_and_unknown_keys_list_the_known_ones() -> None:
    values = parse_overrides(
        ["lora_r=16", "use_vllm=false", "inboxes=allen-p,south-s", "init_adapter=none", "loss_type=grpo"],
        InboxGRPOConfig,
    )
    assert values == {
        "lora_r": 16,
        "use_vllm": False,
        "inboxes": ["allen-p", "south-s"],
        "init_adapter": None,
        "loss_type": "grpo",
    }
    with pytest.raises(ValueError, match="learning_rate"):
        parse_overrides(["learnig_rate=1"], InboxGRPOConfig)
    with pytest.raises(ValueError, match="not a valid int"):
        parse_overrides(["lora_r=big"], InboxGRPOConfig)


def test_toml_file_then_overrides(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('learning_rate = 3e-5\ninboxes = ["allen-p"]\nmax_steps = 7\n')
    c = load_config(InboxGRPOConfig, "cpu", file, {"max_steps": 9})
    assert (c.learning_rate, c.inboxes, c.max_steps, c.device) == (3e-5, ["allen-p"], 9, "cpu")
    file.write_text("lerning_rate = 1\n")
    with pytest.raises(ValueError, match="unknown settings"):
        load_config(InboxGRPOConfig, "cpu", file)
    with pytest.raises(ValueError, match="gpu, cpu, smoke"):
        load_config(InboxGRPOConfig, "tpu")


def test_shipped_config_files_load() -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(configs.glob("*.toml"))
    assert files, "configs/ should hold example override files"
    for file in files:
        cls = InboxSFTConfig if file.name.startswith("sft") else InboxGRPOConfig
        load_config(cls, "cpu", file)


def test_micro_batch_rows_trains_rollouts_alone_with_the_same_step(tmp_path: Path) -> None:
    c = InboxGRPOConfig(
        device="cpu", use_vllm=False, questions_per_step=4, num_generations=4, micro_batch_rows=1
    )
    args = c.to_trl(tmp_path, device="cpu")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 16)
    with pytest.raises(ValueError, match="does not divide the 16 rollouts"):
        InboxGRPOConfig(
            device="cpu", use_vllm=False, questions_per_step=4, num_generations=4, micro_batch_rows=3
        )


def test_to_trl_maps_groups_steps_and_turns(tmp_path: Path) -> None:
    c = load_config(InboxGRPOConfig, "cpu", overrides={"questions_per_step": 4, "max_turns": 3})
    args = c.to_trl(tmp_path, device="cpu")
    assert args.per_device_train_batch_size == 1  # micro_batch_rows: each rollout alone
    assert args.gradient_accumulation_steps == 4 * c.num_generations
    assert args.max_tool_calling_iterations == 2
    assert args.use_cpu and args.bf16 == choose_dtype("cpu").bf16 and not args.use_vllm
    assert args.log_completions is False  # TRL 1.16 crashes logging tool rollouts
    assert args.remove_unused_columns is False
    assert (args.beta, args.temperature) == (c.beta, c.temperature)
    assert args.generation_kwargs == {"max_new_tokens": c.max_turn_tokens}  # a turn is capped as in serving
    sft = load_config(InboxSFTConfig, "cpu").to_trl(tmp_path, device="cpu")
    assert sft.use_cpu and not sft.assistant_only_loss  # the masks come from train.sft.tokenize_examples
    assert args.save_total_limit == c.save_total_limit == 3
    picking = load_config(InboxGRPOConfig, "cpu", overrides={"validation_questions": 8})
    assert picking.to_trl(tmp_path, device="cpu").save_total_limit is None  # the pick needs every step


def test_every_field_has_help_and_a_group() -> None:
    for cls in (InboxGRPOConfig, InboxSFTConfig):
        rows = describe(cls)
        assert all(group and help_text for group, _, _, help_text in rows)
    assert set(GRPO_PRESETS) == {"gpu", "cpu", "smoke"}


@pytest.mark.parametrize(
    "module",
    [
        "train.config",
        "train.env",
        "train.registry",
        "train.sft",
        "train.retrain",
        "train.budget",
        "train.metrics",
        "train.rollout",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


def test_cpu_preset_samples_on_a_server_and_trains_bf16_on_every_core(tmp_path: Path) -> None:
    """The CPU path bench/grpo_profile.py measured: rollouts on the run's vLLM server, training on
    torch's default threads (the server idles meanwhile), bf16 where the CPU has it, gradient
    checkpointing kept (without it a 4-rollout micro-batch of ~2,500 positions needs several GB of
    activations more)."""
    c = load_config(InboxGRPOConfig, "cpu")
    assert (c.generation, c.cpu_threads, c.dtype, c.gradient_checkpointing) == ("server", 0, "auto", True)
    assert c.to_trl(tmp_path, device="cpu").bf16 == choose_dtype("cpu").bf16
    # The profile's old path stays expressible as overrides.
    old = load_config(InboxGRPOConfig, "cpu", overrides={"dtype": "float32", "generation": "trainer"})
    assert old.to_trl(tmp_path, device="cpu").bf16 is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"generation": "remote"}, "not one of trainer, server"),
        ({"generation": "server", "use_vllm": True, "device": "cuda"}, "set use_vllm=false"),
    ],
)
def test_generation_backend_is_checked(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InboxGRPOConfig(**overrides)


def test_generate_in_autocast_samples_under_the_trainers_bf16_autocast() -> None:
    """TRL's transformers generation runs outside autocast; the wrapper puts it under the trainer's."""
    from types import SimpleNamespace

    import torch
    from accelerate import Accelerator

    from train.grpo import generate_in_autocast

    layer = torch.nn.Linear(8, 8)  # fp32 weights, as the policy on a CPU

    def generate(prompt_ids: list[list[int]], *rest: object) -> tuple[torch.Tensor, None]:
        return layer(torch.ones(len(prompt_ids), 8)), None

    trainer = SimpleNamespace(
        accelerator=Accelerator(cpu=True, mixed_precision="bf16"), _generate_single_turn=generate
    )
    assert trainer._generate_single_turn([[1]])[0].dtype == torch.float32
    generate_in_autocast(trainer)
    out, _ = trainer._generate_single_turn([[1], [2]], None, {}, 1)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 8)
    assert not torch.is_autocast_enabled("cpu")  # only for the call
