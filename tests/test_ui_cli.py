"""`inboxrl app` and `inboxrl demo` as real processes: they serve the app on 127.0.0.1, headless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.commands.app import streamlit_command
from env.config import Settings
from env.db import list_inboxes, open_db
from env.model import is_healthy
from tests.fixtures.model import free_port

INBOXRL = str(Path(sys.executable).with_name("inboxrl"))
IGNORING_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float) -> list[str]:
    """Read the process's output until a line contains ``text``; returns the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line)
            if text in line:
                return lines
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.2)
    raise AssertionError(f"no line with {text!r} in {timeout_s} s:\n{''.join(lines)}")


def test_streamlit_command_is_headless_local_and_without_telemetry() -> None:
    cmd = streamlit_command(8600)
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/ui/main.py")
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.port"] == "8600"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, 143)])
def test_app_command_serves_on_localhost_and_stops_streamlit(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    port = free_port()
    env = {**os.environ, "INBOXRL_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        # Started with SIGINT ignored, as a parent's SIG_IGN is inherited: Ctrl-C must still stop it.
        [*IGNORING_SIGINT, INBOXRL, "app", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = wait_for_line(proc, "InboxRL is ready at", 60)
        assert f"http://127.0.0.1:{port}" in lines[-1]
        assert httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).text == "ok"
        proc.send_signal(stop)  # Ctrl-C, or `kill` / `docker stop`
        # Drain the output while waiting: Streamlit shares the pipe and blocks on it once it is full.
        # 30 s: the app gives Streamlit 10 s to stop before killing it, on a loaded machine.
        proc.communicate(timeout=30)
        assert proc.returncode == code
        with pytest.raises(httpx.ConnectError):  # Streamlit went down with it
            httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.vllm
@pytest.mark.slow
def test_demo_ingests_the_default_inbox_and_serves_the_app(vllm_server: Settings, tmp_path: Path) -> None:
    """With a model server already up, `inboxrl demo` loads the default inbox, serves the app, and
    leaves the server it did not start running when stopped."""
    port = free_port()
    env = {
        **os.environ,
        "INBOXRL_HOME": str(tmp_path),
        "INBOXRL_BASE_URL": vllm_server.base_url,
        "INBOXRL_API_KEY": vllm_server.api_key,
        "INBOXRL_MODEL": vllm_server.model,
    }
    proc = subprocess.Popen(
        [INBOXRL, "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = wait_for_line(proc, "InboxRL is ready at", 300)
        output = "".join(lines)
        assert "ingested" in output and "is already up" in output
        assert "done in" in output  # each step says how long it took
        inboxes = {i.id for i in list_inboxes(open_db(tmp_path / "inbox.db"))}
        assert inboxes == {"allen-p", "south-s", "grigsby-m"}
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert is_healthy(vllm_server.base_url, vllm_server.api_key)
    finally:
        if proc.poll() is None:
            proc.kill()
