"""The GPU image and compose file, checked without a Docker engine: every path they copy exists, every
inboxrl command and option they run exists, and the entry point builds the commands it should."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def help_text(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_dockerfile_copies_only_paths_that_exist() -> None:
    copies = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for rest in copies:
        *sources, _target = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for package in ("app/", "env/", "judge/", "synth_data/", "train/"):
        assert package not in ignored


def test_dockerfile_entrypoint_and_cmd() -> None:
    instructions = dict(dockerfile_instructions())
    assert instructions["FROM"].startswith("vllm/vllm-openai:")
    entry = yaml.safe_load(instructions["ENTRYPOINT"])
    assert entry == ["inboxrl-entrypoint"]
    assert f"docker/entrypoint.sh /usr/local/bin/{entry[0]}" in (ROOT / "Dockerfile").read_text()
    assert yaml.safe_load(instructions["CMD"]) == ["serve"]
    assert os.access(ENTRYPOINT, os.X_OK)
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)
    assert "8501" in instructions["EXPOSE"]


def test_every_inboxrl_command_named_exists_in_the_cli() -> None:
    """The commands and options the image runs, and those its documented `docker run` lines use."""
    for command, options in [
        (("model", "serve"), ["--model-dir", "--adapter", "--vllm-arg"]),
        (("app",), ["--host", "--port"]),
        (("retrain",), ["--inbox"]),
    ]:
        text = help_text(*command)
        for option in options:
            assert option in text, (command, option)
    script = ENTRYPOINT.read_text()
    assert "inboxrl model serve" in script and "exec inboxrl app --host 0.0.0.0" in script
    docs = (ROOT / "Dockerfile").read_text() + (ROOT / "docker-compose.yml").read_text()
    for line in re.findall(r"inboxrl (retrain[^\n]*)", docs):
        assert "--inbox" in line


def test_entrypoint_serves_base_model_with_every_registered_adapter(tmp_path: Path) -> None:
    """Run the entry point with a recorder named `inboxrl` first on PATH: it must start vLLM with the
    model folder, each registered run and the extra vLLM args, then the app on 0.0.0.0."""
    bin_dir, home, model = tmp_path / "bin", tmp_path / "data", tmp_path / "base-model"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    recorder = bin_dir / "inboxrl"
    recorder.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    recorder.chmod(0o755)
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name in ("grpo-1", "sft-1"):
        (home / "runs" / name).mkdir(parents=True)
        (home / "runs" / name / "run.json").write_text("{}")
    (home / "runs" / "unfinished").mkdir()  # no run.json: not registered, not served
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "INBOXRL_HOME": str(home),
        "INBOXRL_BASE_MODEL": str(model),
        "INBOXRL_VLLM_ARGS": "--tensor-parallel-size 2",
    }
    subprocess.run([str(ENTRYPOINT)], env=env, check=True, timeout=30)
    serve, app = log.read_text().splitlines()
    assert serve == (
        f"model serve --model-dir {model} --adapter grpo-1 --adapter sft-1 "
        "--vllm-arg=--tensor-parallel-size --vllm-arg=2"
    )
    assert app == "app --host 0.0.0.0 --port 8501"

    log.unlink()
    subprocess.run([str(ENTRYPOINT), "retrain", "--inbox", "/mail"], env=env, check=True, timeout=30)
    assert log.read_text().splitlines() == ["retrain --inbox /mail"]


def test_entrypoint_without_a_base_model_says_what_to_set(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "INBOXRL_HOME": str(tmp_path)}
    result = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Set INBOXRL_BASE_MODEL" in result.stderr


def test_compose_adds_langfuse_only_with_its_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    app = services["inboxrl"]
    assert app["build"] == "." and "profiles" not in app
    assert app["command"] == ["serve"]
    assert any(port.endswith(":8501") for port in app["ports"])
    assert any(volume.endswith(":/data") for volume in app["volumes"])
    langfuse = {name for name, service in services.items() if "langfuse" in service.get("profiles", [])}
    assert langfuse == {"langfuse-web", "langfuse-worker", "postgres", "clickhouse", "redis", "minio"}
    for name in langfuse:
        for dependency in services[name].get("depends_on", {}):
            assert dependency in services
    # the project Langfuse creates on first start has the keys the app sends traces with
    web = services["langfuse-web"]["environment"]
    assert web["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"] == app["environment"]["LANGFUSE_PUBLIC_KEY"]
    assert web["LANGFUSE_INIT_PROJECT_SECRET_KEY"] == app["environment"]["LANGFUSE_SECRET_KEY"]


@pytest.mark.parametrize("page", ["chat", "traces", "evaluation", "training"])
def test_app_pages_ship_with_the_package(page: str) -> None:
    """The image installs the package (not editable): pages must be package data of app.ui."""
    import tomllib

    from app.commands.app import streamlit_command

    main = Path(streamlit_command(8501)[4])
    assert main.is_file() and (main.parent / "pages" / f"{page}.py").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "pages/*" in package_data["*"]
