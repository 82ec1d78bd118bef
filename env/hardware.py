"""The floating-point format this machine computes fastest in, for serving and training.

A CPU with native bfloat16 instructions (AMX, AVX512-BF16) runs bf16 matrix products many times
faster than fp32; one without them emulates bf16, hundreds of times slower. Measured on two of
this project's 2-core machines (torch 2.13, 1024x1024 matmul, 2 threads):

==========================================  ==============  ==============
CPU                                         fp32 GFLOP/s    bf16 GFLOP/s
==========================================  ==============  ==============
AVX2 only                                   82              0.3
Xeon with AMX + AVX512-BF16                 88              1,210
==========================================  ==============  ==============

vLLM on the AVX2 machine ran the same eval 2.7x faster in fp32 than in bf16. So the choice is
made per machine: ``bfloat16`` where the CPU has native bf16, ``float32`` elsewhere, and the
reason is logged. ``Settings.dtype`` (``INBOXRL_DTYPE``) overrides it.

The same module decides how many cores vLLM's CPU worker leaves to its other processes
(:func:`choose_reserved_cpus`): none on a small machine, where a reserved core is half the compute.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
SMALL_MACHINE_CPUS = 4
DTYPES = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class DtypeChoice:
    """A dtype (``bfloat16`` or ``float32``) and why it was chosen."""

    dtype: str
    reason: str

    @property
    def bf16(self) -> bool:
        """True for bfloat16."""
        return self.dtype == "bfloat16"


@cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file is unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def choose_dtype(
    device: str = "cpu", override: str = "auto", *, flags: frozenset[str] | None = None
) -> DtypeChoice:
    """The dtype to serve or train in on ``device`` (``cpu`` or ``cuda``).

    :param override: ``auto`` (decide from the hardware), ``bfloat16`` or ``float32``.
    :param flags: CPU flags to decide from (default: this machine's, :func:`cpu_flags`).

    >>> choose_dtype("cpu", flags=frozenset({"avx2"})).dtype
    'float32'
    >>> choose_dtype("cpu", flags=frozenset({"avx2", "amx_bf16"})).dtype
    'bfloat16'
    >>> choose_dtype("cpu", "float32", flags=frozenset({"amx_bf16"})).reason
    'set by the user (dtype=float32)'
    """
    if override not in DTYPES:
        raise ValueError(f"dtype={override!r} is not one of {', '.join(DTYPES)}.")
    if override != "auto":
        return DtypeChoice(override, f"set by the user (dtype={override})")
    if device == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return DtypeChoice("bfloat16", f"{torch.cuda.get_device_name(0)} supports bfloat16")
        return DtypeChoice("float32", f"{torch.cuda.get_device_name(0)} has no bfloat16 support")
    flags = cpu_flags() if flags is None else flags
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if native:
        return DtypeChoice("bfloat16", f"the CPU has native bfloat16 ({', '.join(native)})")
    return DtypeChoice(
        "float32",
        "the CPU has no native bfloat16 (no amx_bf16 / avx512_bf16): bf16 would be emulated, far slower",
    )


def log_choice(what: str, choice: DtypeChoice) -> DtypeChoice:
    """Log ``choice`` for ``what`` (e.g. "vLLM server") and return it."""
    log.info("%s dtype: %s (%s)", what, choice.dtype, choice.reason)
    return choice


@dataclass(frozen=True)
class ReservedCpus:
    """Cores vLLM's CPU worker leaves unbound (None: vLLM's own default, one per worker) and why."""

    cpus: int | None
    reason: str


def choose_reserved_cpus(cpus: int | None = None) -> ReservedCpus:
    """How many cores vLLM's CPU worker keeps its model threads off (``VLLM_CPU_NUM_OF_RESERVED_CPU``).

    vLLM binds its OpenMP threads to every core but one, kept for its API server and scheduler. On a
    machine of at most :data:`SMALL_MACHINE_CPUS` cores that core is a quarter to half of the compute,
    and the processes it is kept for mostly wait for the model; there none is reserved. Larger
    machines keep vLLM's default.

    :param cpus: the cores this process may run on (default: its CPU affinity).

    >>> choose_reserved_cpus(2).cpus
    0
    >>> choose_reserved_cpus(64).cpus is None
    True
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cpus <= SMALL_MACHINE_CPUS:
        return ReservedCpus(
            0, f"{cpus} cores: the model's threads take every core (vLLM would keep one of them free)"
        )
    return ReservedCpus(None, f"{cpus} cores: vLLM's default (one core kept for its API server)")
