"""GRPO's loss with the prompt prefix that a step's rollouts share computed once, not once per rollout.

Every rollout of an inbox GRPO step starts with the same system prompt and tool schemas (about 1,000
tokens for the 135M agent) and differs only from the question on. TRL's loss runs the model over each
rollout's whole sequence, so a step of 16 rollouts pays for that prefix 16 times forward and 16 times
backward: more than half the positions the step computes (bench/results/grpo_profile.md).

`PrefixSharing` computes it once per optimizer step, with the same gradient:

1. the prefix runs once; its keys and values of every layer keep their graph;
2. each rollout's rest (the suffix) attends to detached copies of those keys and values that
   require grad, so its backward stops there and adds up the gradient of the loss with respect to
   them, rollout after rollout;
3. before the optimizer step, one backward through the prefix hands those summed gradients on to
   the LoRA weights.

This is the chain rule split at the keys and values, so the weights get the full-sequence gradient
(tests/test_train_prefix.py checks it against TRL's own computation). Left padding is dropped (RoPE
sees only relative positions). Gradient checkpointing is off for these passes: transformers drops a
cache passed to a checkpointed layer; the prefix is stored once instead of recomputed per rollout.
``shared_prefix_trainer`` wires this into TRL's ``GRPOTrainer`` (one process; no DeepSpeed/FSDP,
whose backward this would bypass).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

MIN_PREFIX_TOKENS = 32


def common_prefix_length(rows: Sequence[torch.Tensor]) -> int:
    """Tokens that every row of ``rows`` (1-D id tensors) starts with, at most the shortest row's length."""
    if not rows:
        return 0
    shortest = min(len(r) for r in rows)
    first = rows[0][:shortest]
    same = torch.ones(shortest, dtype=torch.bool)
    for row in rows[1:]:
        same &= row[:shortest] == first
    differing = (~same).nonzero()
    return int(differing[0]) if len(differing) else shortest


def real_tokens(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A left-padded prompt row without its padding."""
    return ids[int(_first_real(mask)) :]


def _first_real(mask: torch.Tensor) -> int:
    ones = mask.nonzero()
    return int(ones[0]) if len(ones) else mask.numel()


@contextlib.contextmanager
def no_gradient_checkpointing(model: torch.nn.Module) -> Iterator[None]:
    """Turn transformers' per-layer gradient checkpointing off inside the block (it drops a passed cache)."""
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for m in layers:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in layers:
            m.gradient_checkpointing = True


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder without its LM head (through a PEFT wrapper), as TRL's fused LM head finds it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model


class PrefixSharing:
    """The prefix of the current optimizer step and the passes that use it (see the module docstring).

    :param autocast: a context manager factory for the passes (the trainer's ``accelerator.autocast``).
    :param min_tokens: below this many shared tokens, `logps` declines (returns None) and the caller
        runs the ordinary full-sequence pass.
    """

    def __init__(
        self, autocast: Callable[[], Any] = contextlib.nullcontext, min_tokens: int = MIN_PREFIX_TOKENS
    ) -> None:
        self.autocast = autocast
        self.min_tokens = min_tokens
        self.ids: torch.Tensor | None = None
        self._outputs: list[torch.Tensor] = []
        self._leaves: list[torch.Tensor] = []
        self.computed = 0  # prefixes computed so far (one per step when every rollout shares it)

    def logps(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        window: Sequence[torch.Tensor] = (),
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Per-token log-probs and entropies of the last ``logits_to_keep`` tokens of each row.

        The same result as TRL's ``_get_per_token_logps_and_entropies`` on a model patched with its
        fused LM head: rows are ``[left-padded prompt | right-padded completion]``. The prefix is the
        one these prompts share with ``window`` (the other prompts of the step, unpadded), computed
        now unless the current one already fits. None when the shared part is under ``min_tokens``.
        """
        prompt_len = input_ids.size(1) - logits_to_keep
        starts = [_first_real(attention_mask[b, :prompt_len]) for b in range(input_ids.size(0))]
        prompts = [input_ids[b, s:prompt_len] for b, s in enumerate(starts)]
        if not self._fits(prompts):
            self.backward()
            pool = [*prompts, *window]
            # The last prompt token must stay in the suffix: it predicts the first completion token.
            n = min(common_prefix_length(pool), min(len(p) for p in pool) - 1)
            if n < self.min_tokens:
                return None
            self._compute(model, prompts[0][:n])
        logps, entropies = [], []
        for b, start in enumerate(starts):
            lp, ent = self._suffix(model, input_ids[b, start:], attention_mask[b, start:], logits_to_keep)
            logps.append(lp)
            entropies.append(ent)
        return torch.cat(logps), (None if entropies[0] is None else torch.cat(entropies))

    def backward(self) -> None:
        """Pass the gradient the suffixes left on the prefix's keys and values on to the weights; drop it."""
        pairs = [
            (out, leaf.grad)
            for out, leaf in zip(self._outputs, self._leaves, strict=True)
            if leaf.grad is not None
        ]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        self.ids, self._outputs, self._leaves = None, [], []

    def _fits(self, prompts: Sequence[torch.Tensor]) -> bool:
        if self.ids is None:
            return False
        n = len(self.ids)
        return all(len(p) > n and torch.equal(p[:n], self.ids) for p in prompts)

    def _compute(self, model: torch.nn.Module, ids: torch.Tensor) -> None:
        with self.autocast(), no_gradient_checkpointing(model):
            out = _backbone(model)(input_ids=ids[None], use_cache=True)
        cache = out.past_key_values
        if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", [])):
            raise ValueError("share_prompt_prefix does not support sliding-window attention layers.")
        self._outputs = [t for keys, values, *_ in cache for t in (keys, values)]
        self._leaves = [t.detach().requires_grad_() for t in self._outputs]
        self.ids = ids
        self.computed += 1

    def _suffix(
        self, model: torch.nn.Module, row: torch.Tensor, mask: torch.Tensor, logits_to_keep: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        from transformers import DynamicCache

        n = len(self.ids)
        ids, suffix_mask = row[n:], mask[n:]
        labels = ids.masked_fill(suffix_mask == 0, -100)
        labels[: len(ids) - logits_to_keep] = -100
        cache = DynamicCache(ddp_cache_data=list(zip(self._leaves[::2], self._leaves[1::2], strict=True)))
        full_mask = torch.cat([torch.ones(n, dtype=mask.dtype, device=mask.device), suffix_mask])
        with self.autocast(), no_gradient_checkpointing(model):
            out = model(
                input_ids=ids[None],
                attention_mask=full_mask[None],
                past_key_values=cache,
                labels=labels[None],
                fused_lm_head=True,
            )
        entropy = None if out.entropy is None else out.entropy[:, -logits_to_keep:]
        return out.log_probs[:, -logits_to_keep:], entropy


def shared_prefix_trainer(base: type) -> type:
    """A subclass of TRL's ``GRPOTrainer`` (``base``) whose loss shares the step's prompt prefix.

    Only the loss's own pass (grad enabled, training, text only) shares it; log-prob passes without
    grad and multimodal or MoE-aux inputs run TRL's code. The prefix's backward runs after the step's
    last micro-batch, before the optimizer, and counts in the step's logged ``step_time``; the
    step's last prefix length is logged as ``shared_prefix_tokens`` (0: none was shared).
    """

    class SharedPrefixGRPOTrainer(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.accelerator.num_processes > 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "share_prompt_prefix runs its own backward pass and supports one process without "
                    "DeepSpeed/FSDP; set share_prompt_prefix=false for distributed training."
                )
            self.prefix_sharing = PrefixSharing(self.accelerator.autocast)

        def _get_per_token_logps_and_entropies(
            self,
            model: Any,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            logits_to_keep: int,
            batch_size: int | None = None,
            compute_entropy: bool = False,
            compute_aux_loss: bool = False,
            **multimodal: Any,
        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
            ordinary = not (model.training and torch.is_grad_enabled()) or compute_aux_loss
            if not ordinary and not any(v is not None for v in multimodal.values()):
                shared = self.prefix_sharing.logps(
                    model, input_ids, attention_mask, logits_to_keep, self._window_prompts()
                )
                if shared is not None:
                    return shared[0], shared[1] if compute_entropy else None, None
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size,
                compute_entropy,
                compute_aux_loss,
                **multimodal,
            )

        def _window_prompts(self) -> list[torch.Tensor]:
            """The unpadded prompts of every micro-batch of the step (TRL buffers them)."""
            batches = getattr(self, "_buffered_inputs", None) or []
            return [
                real_tokens(ids, mask)
                for batch in batches
                for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)
            ]

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self._step % self.current_gradient_accumulation_steps == 0:
                shared = self.prefix_sharing.ids
                self._metrics["train"]["shared_prefix_tokens"].append(0 if shared is None else len(shared))
                started = time.perf_counter()
                self._backward_shared_prefix()
                step_times = self._metrics["train"]["step_time"]
                if step_times:
                    step_times[-1] += time.perf_counter() - started
            return loss

        def _backward_shared_prefix(self) -> None:
            self.prefix_sharing.backward()

    return SharedPrefixGRPOTrainer
