"""The shared prompt prefix (train.prefix) gives TRL's log-probs and the full-sequence gradient.

A tiny random Llama with a LoRA on every projection and TRL's fused LM head: the reference is what
TRL's ``_get_per_token_logps_and_entropies`` computes (the whole left-padded sequence per row), the
candidate is `PrefixSharing` with one rollout per micro-batch, as the CPU preset trains.
"""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.model import tiny_llama
from train.prefix import (
    PrefixSharing,
    common_prefix_length,
    no_gradient_checkpointing,
    real_tokens,
    shared_length,
)

VOCAB, PREFIX, PAD = 97, 40, 0


@pytest.fixture
def model() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    base = tiny_llama(vocab_size=VOCAB, max_position_embeddings=256)
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
    """Five rollouts as TRL shuffles a step: questions A, B, C, A, B. Every prompt starts with the same
    40-token "system prompt"; the rollouts of one question have the same prompt. Prompts are
    left-padded, completions (of different lengths) right-padded.
    Returns ``(input_ids, attention_mask, logits_to_keep)``."""
    g = torch.Generator().manual_seed(1)
    system = torch.randint(1, VOCAB, (PREFIX,), generator=g)
    questions = {
        q: torch.cat([system, torch.randint(1, VOCAB, (n,), generator=g)])
        for q, n in zip("ABC", (3, 7, 5), strict=True)
    }
    prompts = [questions[q] for q in "ABCAB"]
    completions = [torch.randint(1, VOCAB, (n,), generator=g) for n in (9, 4, 12, 6, 10)]
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    ids, mask = [], []
    for p, c in zip(prompts, completions, strict=True):
        lp, lc = width_p - len(p), width_c - len(c)
        ids.append(torch.cat([torch.full((lp,), PAD), p, c, torch.full((lc,), PAD)]))
        mask.append(torch.cat([torch.zeros(lp), torch.ones(len(p) + len(c)), torch.zeros(lc)]).long())
    return torch.stack(ids), torch.stack(mask), width_c


def _window(ids: torch.Tensor, mask: torch.Tensor, keep: int) -> list[torch.Tensor]:
    return [real_tokens(ids[b, :-keep], mask[b, :-keep]) for b in range(ids.size(0))]


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


def test_common_prefix_length_shared_length_and_real_tokens() -> None:
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 9])
    assert common_prefix_length([a, b]) == 2
    assert common_prefix_length([a, a]) == 4
    assert common_prefix_length([a, torch.tensor([7])]) == 0
    assert common_prefix_length([]) == 0
    assert shared_length(a, [a, b]) == 2  # its own copy is not "another" prompt
    assert shared_length(a, [a, a, b]) == 3  # the same prompt again: all but the last token
    assert shared_length(a, [a]) == 0
    assert real_tokens(torch.tensor([0, 0, 5, 6]), torch.tensor([0, 0, 1, 1])).tolist() == [5, 6]


def test_logps_and_gradient_match_the_full_sequence(model: torch.nn.Module) -> None:
    ids, mask, keep = _batch()
    rows = ids.size(0)
    completion_mask = mask[:, -keep:].float()
    advantages = torch.tensor([0.7, -1.3, 0.4, -0.2, 1.1])

    ref_logps, ref_entropy = _reference(model, ids, mask, keep)
    _loss(ref_logps, completion_mask, advantages).backward()
    ref_grads = _grads(model)
    model.zero_grad()

    sharing = PrefixSharing(min_tokens=8)
    window = _window(ids, mask, keep)
    logps, entropy = [], []
    for b in range(rows):  # one rollout per micro-batch, each with its own backward
        lp, ent = sharing.logps(model, ids[b : b + 1], mask[b : b + 1], keep, window)
        _loss(lp, completion_mask[b : b + 1], advantages[b : b + 1]).backward()
        logps.append(lp.detach())
        entropy.append(ent.detach())
    a_len, b_len = len(window[0]), len(window[1])
    # A and B: the whole prompt but its last token, shared by their two rollouts; C: the system part.
    assert sorted(sharing.prefix_lengths) == sorted([a_len - 1, b_len - 1, PREFIX])
    partial = _grads(model)
    stats = sharing.backward()
    grads = _grads(model)
    whole = int(mask.sum())  # each row without its padding, once
    saved = a_len - 1 + b_len - 1
    # each prefix runs twice: for its keys and values, then with its graph for the backward
    again = a_len - 1 + b_len - 1 + PREFIX
    assert stats == {"prefixes": 3, "tokens_saved": saved, "positions": whole - saved + again}
    assert sharing.prefix_lengths == [] and sharing.backward()["prefixes"] == 0

    # every position, right padding (0, as TRL gives it) included
    torch.testing.assert_close(torch.cat(logps), ref_logps.detach(), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat(entropy), ref_entropy.detach(), atol=2e-5, rtol=1e-4)
    for name, ref in ref_grads.items():
        torch.testing.assert_close(grads[name], ref, atol=1e-5, rtol=1e-3, msg=name)
    # The prefixes' own share of the gradient only arrives with their backward.
    assert any(not torch.allclose(partial[n], ref_grads[n], atol=1e-5) for n in ref_grads)


def test_a_micro_batch_of_several_rollouts_gives_the_same_log_probs(model: torch.nn.Module) -> None:
    ids, mask, keep = _batch()
    with torch.no_grad():
        ref_logps, _ = _reference(model, ids, mask, keep)
        sharing = PrefixSharing(min_tokens=8)
        logps, _ = sharing.logps(model, ids, mask, keep, _window(ids, mask, keep))
    torch.testing.assert_close(logps, ref_logps, atol=2e-5, rtol=1e-4)
    assert sharing.computed == 3


def test_declines_when_no_prompt_shares_enough(model: torch.nn.Module) -> None:
    ids, mask, keep = _batch()
    window = _window(ids, mask, keep)
    assert PrefixSharing(min_tokens=max(map(len, window))).logps(model, ids, mask, keep, window) is None
    assert (
        PrefixSharing(min_tokens=8).logps(model, ids, mask, keep, window=[]) is None
    )  # nothing to share with


def test_gradient_checkpointing_is_restored(model: torch.nn.Module) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    flagged = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    assert flagged
    with no_gradient_checkpointing(model):
        assert not any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    assert all(m.gradient_checkpointing is True for m in flagged)
