"""The released agent (``inboxrl-135m``): shipped in the repo, prepared by merging, served by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from env.config import EMBEDDED_MODEL_NAME, RELEASED_MODEL_NAME, Settings
from env.model import (
    PREPARED_MARKER,
    model_names,
    model_prompt_settings,
    prepare_model,
    released_adapter_dir,
    released_run,
)
from synth_data.questions import default_questions_path, load_questions
from train.registry import agent_settings


def test_the_released_agent_is_the_default_model(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).model == RELEASED_MODEL_NAME
    assert model_names()[:2] == [RELEASED_MODEL_NAME, EMBEDDED_MODEL_NAME]


def test_the_shipped_adapter_says_how_it_was_made_and_what_it_scores() -> None:
    folder = released_adapter_dir()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == EMBEDDED_MODEL_NAME and config["peft_type"] == "LORA"
    size = (folder / "adapter_model.safetensors").stat().st_size
    assert 100_000 < size < 20_000_000  # a LoRA of a few MB, not a model
    run = released_run()
    assert run["name"] == RELEASED_MODEL_NAME and run["base_model"] == EMBEDDED_MODEL_NAME
    assert len(run["commit"]) == 40 and run["bench"].startswith("python bench/train_bench.py")
    assert run["config"]["unanswerable_share"] > 0
    for test_set in ("test-llm", "test-template"):
        scores = run["eval"][test_set]
        assert scores["n"] > 0 and "vs always-idk" in scores and "vs base" in scores
    shipped = {q.id for q in load_questions(default_questions_path())}
    assert run["example_question_ids"] and set(run["example_question_ids"]) <= shipped


def test_it_is_served_with_the_prompt_it_was_trained_with(tmp_path: Path) -> None:
    prompt = model_prompt_settings(RELEASED_MODEL_NAME)
    assert prompt == {k: released_run()["config"][k] for k in ("few_shot", "max_body_chars")}
    settings = Settings(home=tmp_path)
    chosen = agent_settings(settings, RELEASED_MODEL_NAME)
    assert (chosen.few_shot, chosen.max_body_chars) == (prompt["few_shot"], prompt["max_body_chars"])
    base = agent_settings(settings, EMBEDDED_MODEL_NAME)
    assert (base.few_shot, base.max_body_chars) == (settings.few_shot, settings.max_body_chars)
    assert model_prompt_settings(EMBEDDED_MODEL_NAME) == {}


@pytest.mark.slow
def test_prepare_merges_the_adapter_into_the_embedded_model(
    released_model_dir: Path, embedded_model_dir: Path
) -> None:
    """The merged folder computes what the base model plus the PEFT adapter computes."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    marker = json.loads((released_model_dir / PREPARED_MARKER).read_text())
    assert marker["base_model"] == EMBEDDED_MODEL_NAME and len(marker["adapter_sha256"]) == 64
    assert (
        prepare_model(Settings(home=released_model_dir.parents[1]), RELEASED_MODEL_NAME) == released_model_dir
    )
    ids = torch.tensor([[1, 504, 3458, 314, 260, 4780, 30, 2]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(released_model_dir)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
        peft = PeftModel.from_pretrained(base, str(released_adapter_dir()))(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(embedded_model_dir)(ids).logits
    assert torch.allclose(merged, peft, atol=1e-4)
    assert not torch.allclose(merged, plain, atol=1e-3)  # the adapter changes what the model says
