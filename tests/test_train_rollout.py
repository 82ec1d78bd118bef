"""Server rollouts for GRPO (train.rollout): token layout and the merged weights the server reloads.

The real server and a real GRPO step through it are in tests/test_train_smoke.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from env.config import Settings
from env.trajectory import Trajectory, Turn
from tests.fixtures.model import tiny_llama
from train.rollout import (
    RolloutError,
    ServerRollouts,
    generation_server,
    merged_state_dict,
    prompt_key,
    rollout_tokens,
)

END = 2


def _traj(*turns: tuple[list[int], list[int]]) -> Trajectory:
    return Trajectory(
        "q",
        "i",
        "2001-01-01",
        "m",
        turns=[
            Turn(i, 0.0, prompt_token_ids=p, token_ids=t, logprobs=[-0.5] * len(t))
            for i, (p, t) in enumerate(turns)
        ],
    )


def test_three_turns_keep_every_sampled_token_and_mask_what_the_server_added() -> None:
    traj = _traj(
        ([10, 11], [20, 21, END]),
        ([10, 11, 20, 21, END, 30, 31], [40, END]),
        ([10, 11, 20, 21, END, 30, 31, 40, END, 50], [60, 61, END]),
    )
    prompt, completion, logprobs, mask, drift = rollout_tokens(traj, END, 100)
    assert prompt == [10, 11] and drift == 0
    assert completion == [20, 21, END, 30, 31, 40, END, 50, 60, 61, END]
    assert mask == [1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1]
    assert [lp for lp, m in zip(logprobs, mask, strict=True) if not m] == [0.0] * 3
    assert len(logprobs) == len(completion)


def test_a_re_rendered_reply_keeps_the_sampled_tokens_in_later_turns_too() -> None:
    # Turn 0 sampled 20 21 END; the server showed it back as 22 END (an argument dropped).
    traj = _traj(
        ([10], [20, 21, END]),
        ([10, 22, END, 30], [40, END]),
        ([10, 22, END, 30, 40, END, 50], [60, END]),
    )
    prompt, completion, _, mask, drift = rollout_tokens(traj, END, 100)
    assert prompt == [10] and drift == 1
    assert completion == [20, 21, END, 30, 40, END, 50, 60, END]
    assert mask == [1, 1, 1, 0, 1, 1, 0, 1, 1]


def test_a_changed_earlier_prompt_is_an_error_not_a_silent_misalignment() -> None:
    traj = _traj(([10, 11], [20, END]), ([10, 99, 20, END, 30], [40, END]))
    with pytest.raises(RolloutError, match="earlier text"):
        rollout_tokens(traj, END, 100)


def test_log_probs_must_match_the_sampled_tokens() -> None:
    traj = _traj(([10], [20, END]))
    traj.turns[0].logprobs = [-0.1]
    with pytest.raises(RolloutError, match="log-probs"):
        rollout_tokens(traj, END, 100)


def test_the_completion_is_cut_at_max_completion_length() -> None:
    traj = _traj(([10], [20, 21, END]), ([10, 20, 21, END, 30, 31, 32], [40, END]))
    _, completion, logprobs, mask, _ = rollout_tokens(traj, END, 5)
    assert completion == [20, 21, END, 30, 31] and len(logprobs) == len(mask) == 5


def test_a_rollout_whose_first_call_failed_has_nothing_to_train_on() -> None:
    traj = Trajectory("q", "i", "2001-01-01", "m", turns=[Turn(0, 0.0, error="timeout")], infra_error=True)
    assert rollout_tokens(traj, END, 100) == ([END], [END], [0.0], [0], 0)


def test_prompt_key_ignores_key_order() -> None:
    assert prompt_key([{"role": "user", "content": "x"}]) == prompt_key([{"content": "x", "role": "user"}])


def test_merged_weights_equal_peft_merge_and_unload() -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = tiny_llama(tie_word_embeddings=True)
    names = set(base.state_dict())
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(base, lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param)
    original = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    merged = merged_state_dict(model, torch.float32)
    reference = model.merge_and_unload().state_dict()
    assert set(merged) <= names and "model.layers.0.self_attn.q_proj.weight" in merged
    for key, value in merged.items():
        assert torch.allclose(value, reference[key], atol=1e-6), key
    assert not torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], original)


@pytest.mark.slow
@pytest.mark.vllm
def test_the_generation_server_samples_from_the_synced_policy(
    embedded_model_dir: Path, tmp_path: Path
) -> None:
    """After a sync the server's sampled log-probs are the policy's (as transformers computes them),
    not the base model's: the merged weights really were reloaded into the running server."""
    import httpx
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(embedded_model_dir),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # far from the base, beyond bf16 serving noise
    messages = [{"role": "user", "content": "When does the team offsite start?"}]
    settings = Settings(home=tmp_path, db=tmp_path / "inbox.db")
    with generation_server(settings, embedded_model_dir, tmp_path / "run") as server:
        rollouts = ServerRollouts(
            server, [], [], None, tmp_path / "weights", end_token_id=2, dtype=torch.float32
        )
        rollouts.sync(policy)
        reply = httpx.post(
            f"{server.base_url}/chat/completions",
            json={
                "model": server.model,
                "messages": messages,
                "max_tokens": 12,
                "temperature": 1.0,
                "seed": 1,
                "logprobs": True,
                "return_token_ids": True,
            },
            headers={"Authorization": f"Bearer {server.api_key}"},
            timeout=300,
        ).json()
    assert not (tmp_path / "run" / "generation" / "run" / "vllm.json").exists()  # stopped
    prompt, sampled = reply["prompt_token_ids"], reply["choices"][0]["token_ids"]
    served = torch.tensor([t["logprob"] for t in reply["choices"][0]["logprobs"]["content"]])
    ids = torch.tensor([prompt + sampled])

    def logprobs(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1]
        return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(sampled)[:, None])[:, 0]

    adapted = (logprobs(policy) - served).abs().mean()
    base = (logprobs(AutoModelForCausalLM.from_pretrained(embedded_model_dir)) - served).abs().mean()
    assert adapted < 0.05 and adapted < base / 2, (adapted, base)
