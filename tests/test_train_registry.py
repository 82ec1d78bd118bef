"""The runs/ registry: register, list, look up by name, and what the CLI shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from env.config import Settings
from train.registry import (
    NoRun,
    agent_settings,
    check_name,
    get_run,
    list_runs,
    register_run,
    resolve_adapter_path,
    update_eval,
)


def _adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def test_register_copies_the_adapter_and_writes_run_json(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    source = _adapter(tmp_path / "out")
    info = register_run(
        settings,
        "grpo-1",
        source,
        kind="grpo",
        base_model="/m",
        data={"inboxes": ["allen-p"]},
        config={"lora_r": 8},
    )
    assert (info.adapter_dir / "adapter_model.safetensors").read_bytes() == b"weights"
    stored = json.loads((settings.runs_dir / "grpo-1" / "run.json").read_text())
    assert stored["base_model"] == "/m" and stored["config"] == {"lora_r": 8} and stored["created"]
    assert [r.name for r in list_runs(settings)] == ["grpo-1"]
    assert get_run(settings, "grpo-1").data == {"inboxes": ["allen-p"]}
    assert resolve_adapter_path(settings, "grpo-1") == info.adapter_dir
    assert resolve_adapter_path(settings, str(source)) == source


def test_register_in_place_and_update_eval(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    adapter = _adapter(settings.runs_dir / "sft-1" / "adapter")
    register_run(settings, "sft-1", adapter, kind="sft", base_model="/m")
    assert (adapter / "adapter_config.json").is_file()
    update_eval(settings, "sft-1", {"accuracy": 0.5})
    assert get_run(settings, "sft-1").eval == {"accuracy": 0.5}


def test_unfinished_runs_are_not_listed_and_unknown_names_say_what_exists(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    (settings.runs_dir / "half-done" / "checkpoints").mkdir(parents=True)
    register_run(settings, "done", _adapter(tmp_path / "a"), kind="grpo", base_model="/m")
    assert [r.name for r in list_runs(settings)] == ["done"]
    with pytest.raises(NoRun, match="Runs: done"):
        get_run(settings, "half-done")
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        register_run(settings, "x", tmp_path, kind="grpo", base_model="/m")
    with pytest.raises(ValueError, match="Bad run name"):
        check_name("../escape")


def test_cli_lists_and_shows_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import cli

    monkeypatch.setenv("INBOXRL_HOME", str(tmp_path))
    settings = Settings(home=tmp_path)
    register_run(
        settings,
        "grpo-7",
        _adapter(tmp_path / "a"),
        kind="grpo",
        base_model="/m",
        eval_summary={"accuracy": 0.25},
    )
    runner = CliRunner()
    listed = runner.invoke(cli, ["runs"])
    assert listed.exit_code == 0 and "grpo-7" in listed.output and "25.0%" in listed.output
    shown = runner.invoke(cli, ["runs", "grpo-7"])
    assert shown.exit_code == 0 and json.loads(shown.output)["kind"] == "grpo"
    missing = runner.invoke(cli, ["runs", "nope"])
    assert missing.exit_code == 1 and "grpo-7" in missing.output


def test_a_registered_adapter_is_run_with_the_prompt_it_was_trained_with(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, max_turns=7)
    adapter = _adapter(settings.runs_dir / "sft-2" / "adapter")
    config = {"few_shot": False, "max_body_chars": 1500, "lora_r": 8}
    register_run(settings, "sft-2", adapter, kind="sft", base_model="/m", config=config)
    run = agent_settings(settings, "sft-2")
    assert (run.model, run.few_shot, run.max_body_chars, run.max_turns) == ("sft-2", False, 1500, 7)
    # Any other name (the served base model, a hosted model) keeps the settings' prompt.
    for name in ("smollm2-135m", "openai/gpt-4.1", "Qwen/Qwen2.5-14B-Instruct"):
        other = agent_settings(settings, name)
        assert (other.model, other.few_shot, other.max_body_chars) == (name, True, 20_000)


def test_a_run_is_served_merged_into_its_base_model(
    tmp_path: Path, embedded_model_dir: Path, lora_adapter_dir: Path
) -> None:
    """`inboxrl model prepare --model RUN` (and `serve`, `demo`) fold the run's adapter into its base:
    the folder computes what base + PEFT adapter compute, is reused while the adapter is unchanged
    and merged again when it changes."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from app.cli import cli
    from env.model import PREPARED_MARKER, ModelError
    from train.registry import prepare_run_model

    settings = Settings(home=tmp_path / "home")
    config = {"few_shot": False, "max_body_chars": 1200}
    register_run(
        settings, "mine", lora_adapter_dir, kind="grpo", base_model=str(embedded_model_dir), config=config
    )
    result = CliRunner().invoke(
        cli, ["model", "prepare", "--model", "mine"], env={"INBOXRL_HOME": str(settings.home)}
    )
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1])
    assert folder == settings.models_dir / "runs" / "mine"
    marker = json.loads((folder / PREPARED_MARKER).read_text())
    assert marker["run"] == "mine" and marker["prompt"] == config and len(marker["adapter_sha256"]) == 64
    ids = torch.tensor([[1, 504, 3458, 314, 260, 4780, 30, 2]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
        peft = PeftModel.from_pretrained(base, str(lora_adapter_dir))(ids).logits
    assert torch.allclose(merged, peft, atol=1e-3)  # float32 rounding of the folded weights

    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert prepare_run_model(settings, "mine", progress=False) == folder
    assert weights.stat().st_mtime_ns == before  # unchanged adapter: not merged again
    adapter = get_run(settings, "mine").adapter_dir / "adapter_model.safetensors"
    tensors = load_file(adapter)
    save_file({k: v * 2 for k, v in tensors.items()}, adapter)  # the run was trained further
    prepare_run_model(settings, "mine", progress=False)
    assert json.loads((folder / PREPARED_MARKER).read_text())["adapter_sha256"] != marker["adapter_sha256"]

    register_run(settings, "orphan", lora_adapter_dir, kind="sft", base_model=str(tmp_path / "gone"))
    with pytest.raises(ModelError, match="gone"):
        prepare_run_model(settings, "orphan", progress=False)
    unknown = CliRunner().invoke(
        cli, ["model", "prepare", "--model", "nope"], env={"INBOXRL_HOME": str(settings.home)}
    )
    assert unknown.exit_code == 1 and "inboxrl runs" in unknown.output
