"""The dtype chosen for serving and training follows the CPU's native bf16 support (env.hardware)."""

from __future__ import annotations

import doctest
import logging
from pathlib import Path

import pytest

import env.hardware
import env.model
from env.config import Settings
from env.hardware import choose_dtype, choose_reserved_cpus, cpu_flags
from env.model import server_command
from train.config import InboxGRPOConfig, InboxSFTConfig, load_config

AVX2_ONLY = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
AMX = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}


def test_doctests() -> None:
    assert doctest.testmod(env.hardware).failed == 0


@pytest.mark.parametrize(
    ("flags", "dtype"), [(AVX2_ONLY, "float32"), (AMX, "bfloat16"), (AVX512_BF16, "bfloat16")]
)
def test_auto_follows_native_bf16(flags: frozenset[str], dtype: str) -> None:
    choice = choose_dtype("cpu", flags=flags)
    assert choice.dtype == dtype
    assert ("native bfloat16" in choice.reason) and (("no native" in choice.reason) == (dtype == "float32"))


def test_an_override_wins_and_a_bad_value_names_the_choices() -> None:
    assert choose_dtype("cpu", "float32", flags=AMX).dtype == "float32"
    assert choose_dtype("cpu", "bfloat16", flags=AVX2_ONLY).dtype == "bfloat16"
    with pytest.raises(ValueError, match="auto, bfloat16, float32"):
        choose_dtype("cpu", "half")


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def _dtype_arg(cmd: list[str]) -> str:
    return cmd[cmd.index("--dtype") + 1]


def test_the_server_is_started_in_the_chosen_dtype_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="env.hardware"):
        auto = server_command(Settings(home=tmp_path), tmp_path)
    assert _dtype_arg(auto) == choose_dtype("cpu").dtype
    assert "vLLM server dtype" in caplog.text and choose_dtype("cpu").reason in caplog.text
    forced = server_command(Settings(home=tmp_path, dtype="float32"), tmp_path)
    assert _dtype_arg(forced) == "float32"
    explicit = server_command(Settings(home=tmp_path), tmp_path, extra_args=["--dtype=bfloat16"])
    assert "--dtype" not in explicit and explicit[-1] == "--dtype=bfloat16"


@pytest.mark.parametrize("cls", [InboxSFTConfig, InboxGRPOConfig])
def test_training_runs_in_the_chosen_dtype(cls: type, tmp_path: Path) -> None:
    auto = load_config(cls, "cpu").to_trl(tmp_path, device="cpu")
    assert auto.bf16 == choose_dtype("cpu").bf16 and auto.use_cpu
    fp32 = load_config(cls, "cpu", overrides={"dtype": "float32"}).to_trl(tmp_path, device="cpu")
    assert not fp32.bf16


@pytest.mark.parametrize(("cpus", "reserved"), [(1, 0), (2, 0), (4, 0), (8, None), (64, None)])
def test_small_machines_give_the_model_every_core(cpus: int, reserved: int | None) -> None:
    assert choose_reserved_cpus(cpus).cpus == reserved


def test_the_server_env_reserves_by_the_choice_unless_the_user_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(env.model, "choose_reserved_cpus", lambda: choose_reserved_cpus(2))
    assert env.model._server_env(False, "k")["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env.model._server_env(True, "k")  # GPU: vLLM's own
    monkeypatch.setattr(env.model, "choose_reserved_cpus", lambda: choose_reserved_cpus(64))
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env.model._server_env(False, "k")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    monkeypatch.setattr(env.model, "choose_reserved_cpus", lambda: choose_reserved_cpus(2))
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env.model._server_env(False, "k")  # the user's binding
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    assert env.model._server_env(False, "k")["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
