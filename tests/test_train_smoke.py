"""CPU smoke run through the CLI: SFT warm-start, then GRPO from it, on the embedded model.

Real TRL training steps on SmolLM2-135M with the serving tools, prompt and judge reward; the
adapters are registered, load with PEFT, and differ from their starting weights. A last test
serves the GRPO adapter with the real vLLM server (``load_adapter``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from env.config import Settings
from synth_data.questions import save_questions
from tests.test_train_env import GAS, NOPE
from train.registry import get_run, list_runs

# Minutes on an idle 2-core machine; far more when the cores are shared.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

OFFSITE = GAS.__class__(
    id="offsite",
    inbox_address="alice@example.com",
    mailbox="alice-a",
    question="When does the team offsite start?",
    answer="Friday at 10am",
    message_ids=["<m2.alice@example.com>"],
    query_date="2001-05-01",
)


@pytest.fixture(scope="module")
def smoke_home(
    tmp_path_factory: pytest.TempPathFactory, tools_db_path: Path, embedded_model_dir: Path
) -> Path:
    """A home with its own copy of the literal DB, the questions, and the SFT + GRPO runs trained once."""
    home = tmp_path_factory.mktemp("train-home")
    shutil.copy(tools_db_path, home / "inbox.db")
    save_questions(home / "questions.jsonl", [GAS, OFFSITE, NOPE])
    return home


def _invoke(home: Path, model: Path, args: list[str]) -> str:
    from app.cli import cli

    env = {"INBOXRL_HOME": str(home), "INBOXRL_DB": str(home / "inbox.db")}
    common = [
        "--preset",
        "smoke",
        "--questions",
        str(home / "questions.jsonl"),
        "--set",
        f"base_model={model}",
    ]
    result = CliRunner().invoke(cli, [*args, *common], env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _lora_weights(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(smoke_home: Path, embedded_model_dir: Path) -> Settings:
    _invoke(smoke_home, embedded_model_dir, ["train", "sft", "--name", "sft-smoke"])
    _invoke(
        smoke_home,
        embedded_model_dir,
        ["train", "grpo", "--name", "grpo-smoke", "--init-adapter", "sft-smoke"],
    )
    return Settings(home=smoke_home, db=smoke_home / "inbox.db")


def test_sft_adapter_is_registered_and_trained(trained: Settings, embedded_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = get_run(trained, "sft-smoke")
    assert run.kind == "sft" and run.base_model == str(embedded_model_dir)
    assert run.data["examples"] == 3 and run.data["source"] == "qa"
    # LoRA B matrices start at zero: trained ones are not.
    weights = _lora_weights(run.adapter_dir)
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert len(lora_b) == 30 * 7 and all(w.abs().sum() > 0 for w in lora_b)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(embedded_model_dir), run.adapter_dir
    )
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())
    assert isinstance(next(model.parameters()), torch.Tensor)
    metrics = [json.loads(line) for line in (Path(run.path) / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2]
    assert all(m["peak_rss_mb"] > 0 for m in metrics)


def test_grpo_starts_from_the_sft_adapter_and_logs_its_metrics(trained: Settings) -> None:
    run = get_run(trained, "grpo-smoke")
    assert run.kind == "grpo" and run.parent == "sft-smoke"
    assert run.config["init_adapter"] == "sft-smoke" and run.config["num_generations"] == 2
    assert [r.name for r in list_runs(trained)] == ["sft-smoke", "grpo-smoke"]
    folder = Path(run.path)
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    keys = ["reward", "reward_std", "zero_signal_share", "inbox/accuracy", "inbox/hallucination"]
    keys += ["inbox/abstention", "inbox/turns", "completions/mean_length", "step_time_s", "peak_rss_mb"]
    for m in steps:
        assert set(keys) <= set(m), set(keys) - set(m)
        # the smoke preset's two rollouts share their prompt (system prompt, tools, question)
        assert m["shared_prefixes"] == 1 and m["shared_prefix_tokens_saved"] > 500
    assert (folder / "training.png").stat().st_size > 0
    checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]
    sft_weights = _lora_weights(get_run(trained, "sft-smoke").adapter_dir)
    grpo_weights = _lora_weights(run.adapter_dir)
    assert sft_weights.keys() == grpo_weights.keys()
    # GRPO changes the weights only when some group had unequal rewards (else every advantage is 0).
    if any(m["zero_signal_share"] < 1 for m in steps):
        assert any((grpo_weights[k] - sft_weights[k]).abs().max() > 0 for k in sft_weights)
    else:
        assert all(bool((grpo_weights[k] == sft_weights[k]).all()) for k in sft_weights)


@pytest.mark.vllm
def test_vllm_serves_the_trained_adapter(trained: Settings, vllm_server: Settings) -> None:
    import httpx

    from env.model import load_adapter, served_models

    run = get_run(trained, "grpo-smoke")
    load_adapter(vllm_server, "grpo-smoke", run.adapter_dir)
    assert "grpo-smoke" in served_models(vllm_server)
    reply = httpx.post(
        f"{vllm_server.base_url}/chat/completions",
        json={"model": "grpo-smoke", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
        headers={"Authorization": f"Bearer {vllm_server.api_key}"},
        timeout=120,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None


def test_a_merged_adapter_gives_the_adapters_logits(
    trained: Settings, embedded_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from train.loading import merge_adapter

    run = get_run(trained, "sft-smoke")
    merged_dir = merge_adapter(run.adapter_dir, tmp_path / "merged", base_model=str(embedded_model_dir))
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temp folder left
    assert (merged_dir / "chat_template.jinja").is_file()  # the tool template travels with it
    ids = torch.tensor([[1, 504, 3458, 314, 260, 1534, 30]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)(ids).logits
        policy = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
        adapted = PeftModel.from_pretrained(policy, run.adapter_dir)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
    assert torch.allclose(adapted, merged, atol=1e-4)
    assert (merged - base).abs().max() > 1e-3  # the adapter is in the weights
    assert merge_adapter(run.adapter_dir, merged_dir) == merged_dir  # an existing folder is kept


@pytest.mark.vllm
def test_grpo_with_server_rollouts_trains_through_a_vllm_server(
    trained: Settings, embedded_model_dir: Path
) -> None:
    _invoke(
        trained.home,
        embedded_model_dir,
        [
            "train",
            "grpo",
            "--name",
            "grpo-server",
            "--init-adapter",
            "sft-smoke",
            "--set",
            "generation=server",
            "--set",
            "max_turn_tokens=32",
            "--set",
            "max_steps=1",
            "--set",
            "validation_questions=2",
        ],
    )
    run = get_run(trained, "grpo-server")
    assert run.config["generation"] == "server" and run.data["generation"] == "server"
    folder = Path(run.path)
    steps = [
        m
        for m in (json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines())
        if "reward" in m
    ]
    assert [m["step"] for m in steps] == [1]
    assert all(m["inbox/infra_errors"] == 0 and m["completions/mean_length"] > 0 for m in steps)
    assert all(m["shared_prefixes"] == 1 and m["shared_prefix_tokens_saved"] > 500 for m in steps)
    assert (folder / "generation" / "weights" / "model.safetensors").is_file()
    assert not (folder / "generation" / "run" / "vllm.json").exists()  # the run's server is stopped
    assert (
        _lora_weights(run.adapter_dir).keys()
        == _lora_weights(get_run(trained, "sft-smoke").adapter_dir).keys()
    )
    # two questions held out; the start (step 0) and step 1 answered them; adapter/ is the pick
    held_out = [json.loads(x)["id"] for x in (folder / "validation.jsonl").read_text().splitlines()]
    assert len(held_out) == 2 and not set(held_out) & set(run.data["question_ids"])
    selection = json.loads((folder / "selection.json").read_text())
    assert [c["step"] for c in selection["candidates"]] == [0, 1]
    assert all(c["reward"] is not None and c["infra_failures"] == 0 for c in selection["candidates"])
    start = get_run(trained, "sft-smoke").adapter_dir
    picked = {0: start, 1: folder / "adapter-last"}[selection["picked_step"]]
    weights = "adapter_model.safetensors"
    assert (run.adapter_dir / weights).read_bytes() == (Path(picked) / weights).read_bytes()
    assert run.data["selection"]["picked_step"] == selection["picked_step"]
