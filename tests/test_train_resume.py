"""A training run killed with SIGKILL after its first checkpoint resumes from it and loses nothing.

SFT and GRPO share the checkpoint, resume and metrics code (``train.loading``, ``train.metrics``);
the killed run here is SFT, the cheaper of the two on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth_data.questions import save_questions
from tests.test_train_env import GAS, NOPE
from train.metrics import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]


def _command(home: Path, model: Path) -> list[str]:
    return [
        str(Path(sys.executable).parent / "inboxrl"), "train", "sft", "--preset", "smoke", "--name", "killed",
        "--questions", str(home / "questions.jsonl"), "--max-steps", "3",
        "--set", f"base_model={model}", "--set", "save_steps=1",
    ]  # fmt: skip


def test_killed_run_resumes_from_its_last_checkpoint(
    tmp_path: Path, tools_db_path: Path, embedded_model_dir: Path
) -> None:
    shutil.copy(tools_db_path, tmp_path / "inbox.db")
    save_questions(tmp_path / "questions.jsonl", [GAS, NOPE])
    env = {**os.environ, "INBOXRL_HOME": str(tmp_path), "INBOXRL_DB": str(tmp_path / "inbox.db")}
    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "runs" / "killed"
    first = run / "checkpoints" / "checkpoint-1" / "trainer_state.json"

    proc = subprocess.Popen(
        _command(tmp_path, embedded_model_dir), cwd=root, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 2400
        while not first.is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 40 minutes"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "adapter").exists()
    before = read_metrics(run / "metrics.jsonl")
    data = run / "sft_data.jsonl"
    built = data.stat().st_mtime_ns

    done = subprocess.run(
        _command(tmp_path, embedded_model_dir),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["resumed_from"] is not None and result["steps"] == 3
    # the resumed run trained on the examples the killed one built (a teacher is not asked again)
    assert data.stat().st_mtime_ns == built
    assert result["data"]["examples"] == len(data.read_text().splitlines()) > 0
    resumed_step = int(result["resumed_from"].rsplit("-", 1)[1])
    assert resumed_step >= 1
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "run.json").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Every step logged once: lines the killed run wrote after its checkpoint were dropped, not doubled.
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    # What the killed run logged up to its checkpoint is still there, unchanged.
    kept = [r for r in before if r["step"] <= resumed_step]
    assert kept and records[: len(kept)] == kept

    # Killed after the last step's checkpoint, before the adapter was saved: the rerun trains no
    # step more (transformers would run one on resume) and the adapter is that checkpoint's.
    shutil.rmtree(run / "adapter")
    (run / "result.json").unlink()
    again = subprocess.run(
        _command(tmp_path, embedded_model_dir), cwd=root, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 3 and result["resumed_from"].endswith("checkpoint-3")
    weights = "adapter_model.safetensors"
    final = run / "checkpoints" / "checkpoint-3" / weights
    assert (run / "adapter" / weights).read_bytes() == final.read_bytes()
    assert not (run / "adapter" / "optimizer.pt").exists()
    assert [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] == records
