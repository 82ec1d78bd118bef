"""env.vllm_lora: the grouped CPU LoRA ops give vLLM's own ops' results, and are installed only when
asked (the served end: tests/test_model.py's adapter tests read the server's log)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
import vllm.lora.ops.torch_ops as package
import vllm.lora.ops.torch_ops.lora_ops as stock
import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

from env import vllm_lora

TOKENS, IN, RANK, OUT, SLOTS = 37, 24, 8, 40, 3


def _indices(kind: str) -> torch.Tensor:
    if kind == "one":
        return torch.full((TOKENS,), 1)
    if kind == "mixed":  # two adapters, interleaved as the scheduler may batch them
        return torch.tensor([i % 2 for i in range(TOKENS)])
    return torch.tensor([-1 if i < 10 else 0 for i in range(TOKENS)])  # "none": no adapter for some


@pytest.fixture
def weights() -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA A and B stacks as vLLM holds them; the last slot unused (zeros), as vLLM leaves it."""
    torch.manual_seed(0)
    a, b = torch.randn(SLOTS, 1, RANK, IN), torch.randn(SLOTS, 1, OUT, RANK)
    a[-1], b[-1] = 0, 0
    return a, b


@pytest.mark.parametrize("kind", ["one", "mixed", "none"])
@pytest.mark.parametrize("add", [True, False])
def test_grouped_ops_equal_vllms(kind: str, add: bool, weights: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = weights
    x, idx = torch.randn(TOKENS, IN), _indices(kind)
    shrunk = [torch.zeros(TOKENS, RANK) for _ in range(2)]
    stock.bgmv_shrink(x, a, shrunk[0], idx, 0.5)
    vllm_lora.bgmv_shrink(x, a, shrunk[1], idx, 0.5)
    torch.testing.assert_close(shrunk[1], shrunk[0])

    out = torch.randn(TOKENS, OUT)
    expanded = [out.clone(), out.clone()]
    stock.bgmv_expand(shrunk[0], b, expanded[0], idx, add)
    vllm_lora.bgmv_expand(shrunk[0], b, expanded[1], idx, add)
    torch.testing.assert_close(expanded[1], expanded[0])

    wide = torch.randn(TOKENS, 3 * OUT)
    sliced = [wide.clone(), wide.clone()]
    stock.bgmv_expand_slice(shrunk[0], b, sliced[0], idx, OUT, OUT, add)
    vllm_lora.bgmv_expand_slice(shrunk[0], b, sliced[1], idx, OUT, OUT, add)
    torch.testing.assert_close(sliced[1], sliced[0])


def test_a_token_without_an_adapter_gets_no_lora_term_even_with_every_slot_in_use() -> None:
    """vLLM's CPU ops index the last slot with -1; ours, as its GPU kernels, leave the row alone."""
    torch.manual_seed(1)
    a = torch.randn(2, 1, RANK, IN)
    x, idx = torch.randn(4, IN), torch.tensor([0, -1, 0, -1])
    y = torch.full((4, RANK), 7.0)
    vllm_lora.bgmv_shrink(x, a, y, idx, 1.0)
    assert torch.all(y[1] == 0) and torch.all(y[3] == 0)
    torch.testing.assert_close(y[0], x[0] @ a[0, 0].T)
    b = torch.randn(2, 1, OUT, RANK)
    out = torch.ones(4, OUT)
    vllm_lora.bgmv_expand(y, b, out, idx, add_inputs=True)
    assert torch.all(out[1] == 1) and torch.all(out[3] == 1)


def test_installed_only_when_asked_and_registered_as_a_vllm_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(p.value == "env.vllm_lora:register" for p in plugins)  # every vLLM process loads it
    originals = {name: getattr(stock, name) for name in vllm_lora.OPS}
    for name in vllm_lora.OPS:  # undone after the test, whatever it installs
        monkeypatch.setattr(stock, name, originals[name])
        monkeypatch.setattr(punica_cpu, name, getattr(punica_cpu, name))
        monkeypatch.setattr(package, name, originals[name])
    monkeypatch.delenv(vllm_lora.ENV_VAR, raising=False)
    vllm_lora.register()
    assert stock.bgmv_shrink is originals["bgmv_shrink"]
    monkeypatch.setenv(vllm_lora.ENV_VAR, "grouped")
    vllm_lora.register()
    assert stock.bgmv_shrink is vllm_lora.bgmv_shrink and punica_cpu.bgmv_expand is vllm_lora.bgmv_expand
