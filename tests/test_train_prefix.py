"""The shared prompt prefix (train.prefix) gives TRL's log-probs and the full-sequence gradient.

A tiny random Llama with a LoRA on every projection and TRL's fused LM head: the reference is what
TRL's ``_get_per_token_logps_and_entropies`` computes (the whole left-padded sequence per row), the
candidate is `PrefixSharing` with one rollout per micro-batch, as the CPU preset trains.
"""

from __future__ import annotations

import pytest
import torch

from train.prefix import PrefixSharing, common_prefix_length, no_gradient_checkpointing, real_tokens

VOCAB, PREFIX, PAD = 97, 40, 0


@pytest.fixture
def model() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    base = LlamaForCausalLM(config)
    add_fused_lm_head(base, temperature=0.7, outputs=("log_probs", "entropy"))
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # both LoRA matrices random, so every one gets a gradient
    )
    peft_model = get_peft_model(base, lora)
    peft_model.train()
    return peft_model


def _batch() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Three rollouts: a shared 40-token prefix, different questions (left-padded), different
    completion lengths (right-padded). Returns ``(input_ids, attention_mask, logits_to_keep)``."""
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(1, VOCAB, (PREFIX,), generator=g)
    prompts = [torch.cat([prefix, torch.randint(1, VOCAB, (n,), generator=g)]) for n in (3, 7, 5)]
    completions = [torch.randint(1, VOCAB, (n,), generator=g) for n in (9, 4, 12)]
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    ids, mask = [], []
    for p, c in zip(prompts, completions, strict=True):
        lp, lc = width_p - len(p), width_c - len(c)
        ids.append(torch.cat([torch.full((lp,), PAD), p, c, torch.full((lc,), PAD)]))
        mask.append(torch.cat([torch.zeros(lp), torch.ones(len(p) + len(c)), torch.zeros(lc)]).long())
    return torch.stack(ids), torch.stack(mask), width_c


def _reference(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, keep: int):
    """TRL's computation: the whole row through the model, prompt labels masked."""
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-keep] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -keep:], out.entropy[:, -keep:]


def _loss(logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (logps * mask * weights[:, None]).sum()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_common_prefix_length_and_real_tokens() -> None:
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 9])
    assert common_prefix_length([a, b]) == 2
    assert common_prefix_length([a, a]) == 4
    assert common_prefix_length([a, torch.tensor([7])]) == 0
    assert common_prefix_length([]) == 0
    assert real_tokens(torch.tensor([0, 0, 5, 6]), torch.tensor([0, 0, 1, 1])).tolist() == [5, 6]


def test_logps_and_gradient_match_the_full_sequence(model: torch.nn.Module) -> None:
    ids, mask, keep = _batch()
    completion_mask = mask[:, -keep:].float()
    advantages = torch.tensor([0.7, -1.3, 0.4])

    ref_logps, ref_entropy = _reference(model, ids, mask, keep)
    _loss(ref_logps, completion_mask, advantages).backward()
    ref_grads = _grads(model)
    model.zero_grad()

    sharing = PrefixSharing(min_tokens=8)
    window = [real_tokens(ids[b, :-keep], mask[b, :-keep]) for b in range(3)]
    logps, entropy = [], []
    for b in range(3):  # one rollout per micro-batch, each with its own backward
        lp, ent = sharing.logps(model, ids[b : b + 1], mask[b : b + 1], keep, window)
        _loss(lp, completion_mask[b : b + 1], advantages[b : b + 1]).backward()
        logps.append(lp.detach())
        entropy.append(ent.detach())
    assert sharing.computed == 1 and len(sharing.ids) == PREFIX
    partial = _grads(model)
    sharing.backward()
    grads = _grads(model)

    real = completion_mask.bool()
    torch.testing.assert_close(torch.cat(logps)[real], ref_logps.detach()[real], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat(entropy)[real], ref_entropy.detach()[real], atol=2e-5, rtol=1e-4)
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name], ref, atol=1e-5, rtol=1e-3, msg=name)
    # The prefix's own share of the gradient only arrives with its backward.
    assert any(not torch.allclose(partial[n], ref_grads[n], atol=1e-5) for n in ref_grads)
    assert sharing.ids is None


def test_declines_a_short_prefix_and_starts_a_new_one_when_the_prompts_change(model: torch.nn.Module) -> None:
    ids, mask, keep = _batch()
    assert PrefixSharing(min_tokens=PREFIX + 1).logps(model, ids, mask, keep) is None

    sharing = PrefixSharing(min_tokens=8)
    sharing.logps(model, ids[:1], mask[:1], keep)  # alone: the whole prompt but its last token
    first = len(sharing.ids)
    other = ids[1:2].clone()
    other[0, -keep - 1] = (other[0, -keep - 1] + 1) % VOCAB  # change the question's last token
    sharing.logps(model, other, mask[1:2], keep, [real_tokens(ids[0, :-keep], mask[0, :-keep])])
    assert sharing.computed == 2 and len(sharing.ids) == PREFIX < first


def test_gradient_checkpointing_is_restored(model: torch.nn.Module) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    flagged = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    assert flagged
    with no_gradient_checkpointing(model):
        assert not any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    assert all(m.gradient_checkpointing is True for m in flagged)
