"""GRPO's loss with the prompt prefixes that a step's rollouts share computed once, not once per rollout.

The rollouts of a GRPO group answer the same question: their prompts (system prompt, tool schemas,
question; about 1,100 tokens for the 135M inbox agent) are identical. TRL's loss runs the model
over each rollout's whole sequence, so a step of 4 questions x 4 rollouts pays for each prompt 4
times forward and 4 times backward: about half the positions the step computes
(bench/results/grpo_profile.md).

`PrefixSharing` computes each distinct prefix once per optimizer step, with the same gradient:

1. a prefix runs once without a graph, for its keys and values of every layer;
2. each rollout's rest (the suffix) attends to copies of those keys and values that require grad,
   so its backward stops there and adds up the gradient of the loss with respect to them, rollout
   after rollout;
3. before the optimizer step, each prefix runs once more, with its graph, and its backward hands
   those summed gradients on to the LoRA weights (one prefix's activations in memory at a time).

This is the chain rule split at the keys and values, so the weights get the full-sequence gradient
(tests/test_train_prefix.py checks it against TRL's own computation). Left padding is dropped (RoPE
sees only relative positions). Gradient checkpointing is off for these passes (transformers drops
a cache passed to a checkpointed layer): a rollout's suffix keeps its activations for its backward.
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


def shared_length(prompt: torch.Tensor, window: Sequence[torch.Tensor]) -> int:
    """The longest start ``prompt`` shares with another prompt of ``window`` (one copy of ``prompt``
    itself there is not "another"), at most all but its last token (which predicts the completion)."""
    others = list(window)
    for i, other in enumerate(others):
        if torch.equal(other, prompt):
            del others[i]
            break
    n = max((common_prefix_length([prompt, other]) for other in others), default=0)
    return max(0, min(n, len(prompt) - 1))


def _first_real(mask: torch.Tensor) -> int:
    ones = mask.nonzero()
    return int(ones[0]) if len(ones) else mask.numel()


def _last_real(mask: torch.Tensor) -> int:
    ones = mask.nonzero()
    return int(ones[-1]) if len(ones) else -1


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


class _Prefix:
    """One shared prompt prefix: its ids and its keys and values, as leaves that collect gradients."""

    def __init__(self, ids: torch.Tensor, keys_values: list[torch.Tensor]) -> None:
        self.ids = ids
        self.leaves = [t.detach().requires_grad_() for t in keys_values]

    def cache(self) -> Any:
        """A fresh transformers cache over the leaves (a suffix's pass appends to its own copy)."""
        from transformers import DynamicCache

        pairs = zip(self.leaves[::2], self.leaves[1::2], strict=True)
        return DynamicCache(ddp_cache_data=list(pairs))


class PrefixSharing:
    """The prefixes of the current optimizer step and the passes that use them (see the module docstring).

    A rollout's prefix is the longest start its prompt shares with another prompt of the step (the
    other rollouts of its question share the whole prompt but its last token); each distinct prefix
    is computed once per step, and all of them get their backward together (`backward`).

    :param autocast: a context manager factory for the passes (the trainer's ``accelerator.autocast``).
    :param min_tokens: a prompt sharing fewer tokens than this with every other runs whole; when no
        row of a micro-batch shares that many, `logps` declines (returns None) and the caller runs
        the ordinary full-sequence pass.
    """

    def __init__(
        self, autocast: Callable[[], Any] = contextlib.nullcontext, min_tokens: int = MIN_PREFIX_TOKENS
    ) -> None:
        self.autocast = autocast
        self.min_tokens = min_tokens
        self._prefixes: dict[bytes, _Prefix] = {}
        self.computed = 0  # prefixes computed so far
        self.tokens_saved = 0  # prompt positions served from a prefix computed for another rollout
        self.positions = 0  # positions run through the model (prefixes twice, suffixes, whole rows)
        self._model: torch.nn.Module | None = None

    @property
    def prefix_lengths(self) -> list[int]:
        """Lengths of the prefixes held now (computed this step, backward not yet run)."""
        return [len(p.ids) for p in self._prefixes.values()]

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
        fused LM head: rows are ``[left-padded prompt | right-padded completion]``. ``window`` holds
        the step's prompts (unpadded, these rows' own included) that prefixes may be shared with.
        """
        prompt_len = input_ids.size(1) - logits_to_keep
        starts = [_first_real(attention_mask[b, :prompt_len]) for b in range(input_ids.size(0))]
        prompts = [input_ids[b, s:prompt_len] for b, s in enumerate(starts)]
        lengths = [shared_length(p, window) for p in prompts]
        if all(n < self.min_tokens for n in lengths):
            return None
        logps, entropies = [], []
        for b, (start, n) in enumerate(zip(starts, lengths, strict=True)):
            prefix = self._prefix(model, prompts[b][:n]) if n >= self.min_tokens else None
            lp, ent = self._suffix(
                model, prefix, input_ids[b, start:], attention_mask[b, start:], logits_to_keep
            )
            logps.append(lp)
            entropies.append(ent)
        return torch.cat(logps), (None if entropies[0] is None else torch.cat(entropies))

    def backward(self) -> dict[str, int]:
        """Pass the gradient the suffixes left on the prefixes' keys and values on to the weights.

        Each prefix runs again, now with its graph, and gets its backward at once (one prefix's
        activations in memory at a time, as gradient checkpointing would). Drops the prefixes;
        returns how many there were, the prompt positions they saved and the positions run through
        the model since the last call (``prefixes``, ``tokens_saved``, ``positions``).
        """
        for prefix in self._prefixes.values():
            grads = [leaf.grad for leaf in prefix.leaves]
            if all(g is None for g in grads):
                continue
            outputs = self._keys_values(prefix.ids)
            pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
            self.positions += len(prefix.ids)
        stats = {
            "prefixes": len(self._prefixes),
            "tokens_saved": self.tokens_saved,
            "positions": self.positions,
        }
        self._prefixes, self.tokens_saved, self.positions, self._model = {}, 0, 0, None
        return stats

    def _prefix(self, model: torch.nn.Module, ids: torch.Tensor) -> _Prefix:
        key = ids.numpy().tobytes()
        if key in self._prefixes:
            self.tokens_saved += len(ids)
            return self._prefixes[key]
        self._model = model
        with torch.no_grad():
            prefix = _Prefix(ids, self._keys_values(ids))
        self._prefixes[key] = prefix
        self.computed += 1
        self.positions += len(ids)
        return prefix

    def _keys_values(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's keys and values of ``ids`` (the model's backbone, no LM head)."""
        with self.autocast(), no_gradient_checkpointing(self._model):
            out = _backbone(self._model)(input_ids=ids[None], use_cache=True)
        cache = out.past_key_values
        if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", [])):
            raise ValueError("share_prompt_prefix does not support sliding-window attention layers.")
        return [t for keys, values, *_ in cache for t in (keys, values)]

    def _suffix(
        self,
        model: torch.nn.Module,
        prefix: _Prefix | None,
        row: torch.Tensor,
        mask: torch.Tensor,
        logits_to_keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = 0 if prefix is None else len(prefix.ids)
        # Right padding runs last and attends to nothing real after it: drop it, give it log-prob and
        # entropy 0 as TRL does (kept when the whole completion is padding, so the row stays in the graph).
        pad = len(row) - _last_real(mask) - 1
        if pad >= logits_to_keep:
            pad = 0
        keep = logits_to_keep - pad
        ids, suffix_mask = row[n : len(row) - pad], mask[n : len(mask) - pad]
        self.positions += len(ids)
        labels = ids.masked_fill(suffix_mask == 0, -100)
        labels[: len(ids) - keep] = -100
        full_mask = torch.cat([torch.ones(n, dtype=mask.dtype, device=mask.device), suffix_mask])
        with self.autocast(), no_gradient_checkpointing(model):
            out = model(
                input_ids=ids[None],
                attention_mask=full_mask[None],
                past_key_values=None if prefix is None else prefix.cache(),
                labels=labels[None],
                fused_lm_head=True,
            )
        logps = torch.nn.functional.pad(out.log_probs[:, -keep:], (0, pad))
        entropy = None if out.entropy is None else torch.nn.functional.pad(out.entropy[:, -keep:], (0, pad))
        return logps, entropy


def shared_prefix_trainer(base: type) -> type:
    """A subclass of TRL's ``GRPOTrainer`` (``base``) whose loss shares the step's prompt prefix.

    Only the loss's own pass (grad enabled, training, text only) shares it; log-prob passes without
    grad and multimodal or MoE-aux inputs run TRL's code. The prefix's backward runs after the step's
    last micro-batch, before the optimizer, and counts in the step's logged ``step_time``; each step
    logs ``shared_prefixes`` (distinct prefixes computed) and ``shared_prefix_tokens_saved`` (prompt
    positions not recomputed).
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
            """The unpadded prompts of every micro-batch of the step (TRL buffers them), worked out
            once per generation batch (TRL replaces the buffer list when it generates)."""
            batches = getattr(self, "_buffered_inputs", None) or []
            if getattr(self, "_window_source", None) is not batches:
                self._window_source = batches
                self._window = [
                    real_tokens(ids, mask)
                    for batch in batches
                    for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)
                ]
            return self._window

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self._step % self.current_gradient_accumulation_steps == 0:
                started = time.perf_counter()
                stats = self.prefix_sharing.backward()
                metrics = self._metrics["train"]
                if metrics["step_time"]:
                    metrics["step_time"][-1] += time.perf_counter() - started
                metrics["shared_prefixes"].append(stats["prefixes"])
                metrics["shared_prefix_tokens_saved"].append(stats["tokens_saved"])
            return loss

    return SharedPrefixGRPOTrainer
