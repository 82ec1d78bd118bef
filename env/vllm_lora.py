"""Grouped LoRA ops for vLLM's CPU build: one matmul per adapter in the batch, not one per token.

vLLM 0.32 runs LoRA on the CPU with PyTorch ops (``vllm.lora.ops.torch_ops``) that gather every
token's LoRA matrices (``weights[indices]``: a ``tokens x out x rank`` copy per layer and module)
and multiply them one token at a time (``einsum("bi, boi -> bo")``). A 1,938-token prompt through an
adapter took 56.8 s to prefill against 2.7 s without one (bench/results/lora_ops.md). A batch holds
one or two adapters, so the same products are one matrix multiplication per adapter over the rows
that use it.

This module is a vLLM general plugin (the ``vllm.general_plugins`` entry point in pyproject.toml),
loaded in every vLLM process: its engine and workers are spawned, so a patch made by
``env.vllm_server`` before vLLM starts would not reach them. It patches nothing unless
``INBOXRL_VLLM_LORA_OPS=grouped`` is set, as `env.model.serve` does on the CPU (``stock`` there keeps
vLLM's ops, for the bench). A token whose adapter index is -1 (no adapter) gets no LoRA term, as in
vLLM's GPU kernels; the stock CPU ops index the last adapter slot with it, which holds zeros unless
every slot is in use.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ENV_VAR = "INBOXRL_VLLM_LORA_OPS"
OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
INSTALLED = "InboxRL: vLLM's CPU LoRA ops grouped by adapter (env/vllm_lora.py)"

_stock: dict[str, Any] = {}


def register() -> None:
    """vLLM's plugin hook: install the grouped ops when ``INBOXRL_VLLM_LORA_OPS=grouped``."""
    if os.environ.get(ENV_VAR) == "grouped":
        install()


def install() -> None:
    """Replace vLLM's CPU LoRA ops (where they are defined and where they were imported) with these."""
    import vllm.lora.ops.torch_ops as package
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    for name in OPS:
        _stock.setdefault(name, getattr(ops, name))
        for module in (ops, package, punica_cpu):
            setattr(module, name, globals()[name])
    print(f"{INSTALLED} (pid {os.getpid()})", file=sys.stderr, flush=True)  # into the server's log


def _stock_op(name: str) -> Any:
    """vLLM's own op ``name`` (kept by `install`, else still in its module)."""
    import vllm.lora.ops.torch_ops.lora_ops as ops

    return _stock.get(name) or getattr(ops, name)


def lora_rows(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """Row ``t`` of ``inputs`` times adapter ``indices[t]``'s matrix ``weights[indices[t]]`` transposed.

    :param inputs: ``[tokens, in]``.
    :param weights: ``[adapters, out, in]`` (or ``[adapters, 1, out, in]``).
    :param indices: ``[tokens]``, each token's adapter slot; -1: none (its row is zeros).
    :returns: ``[tokens, out]`` in ``dtype``, one matmul per adapter the batch uses.
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    used = torch.unique(indices).tolist()
    if len(used) == 1 and used[0] >= 0:  # the usual batch: one adapter for every token
        return x @ weights[used[0]].to(dtype).T
    out = x.new_zeros((x.shape[0], weights.shape[1]))
    for slot in used:
        if slot >= 0:
            rows = (indices == slot).nonzero().squeeze(1)
            out[rows] = x[rows] @ weights[slot].to(dtype).T
    return out


def bgmv_shrink(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any, scaling: float = 1.0
) -> None:
    """vLLM's ``bgmv_shrink`` (inputs times each token's LoRA A), grouped by adapter."""
    if lora_indices_tensor.shape[0] != inputs.shape[0]:  # not a shape vLLM sends; its own op decides
        return _stock_op("bgmv_shrink")(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling)
    outputs = lora_rows(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any, add_inputs: bool = True
) -> None:
    """vLLM's ``bgmv_expand`` (each token's LoRA B times inputs, into the output), grouped by adapter."""
    if lora_indices_tensor.shape[0] != inputs.shape[0]:
        stock = _stock_op("bgmv_expand")
        return stock(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs)
    outputs = lora_rows(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    """vLLM's ``bgmv_expand_slice`` (``bgmv_expand`` into columns ``slice_offset:+slice_size``)."""
    if lora_indices_tensor.shape[0] != inputs.shape[0]:
        return _stock_op("bgmv_expand_slice")(
            inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size, add_inputs
        )
    outputs = lora_rows(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    columns = slice(slice_offset, slice_offset + slice_size)
    if add_inputs:
        output_tensor[:, columns] += outputs
    else:
        output_tensor[:, columns] = outputs
