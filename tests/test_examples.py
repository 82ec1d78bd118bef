"""Example questions for a newcomer (app/examples.py): which are picked, the chat page's example
buttons (Streamlit AppTest), and the list `inboxrl demo` prints once the app is up.

The click in a real browser (the chat input filled, the question asked of the right inbox on the
right date) is in test_browser.py.
"""

from __future__ import annotations

import doctest
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import app.examples
from app.examples import EXAMPLE_IDS_KEY, ask_command, example_questions, expected_answer, pick_examples
from env.config import EMBEDDED_MODEL_NAME, RELEASED_MODEL_NAME, Settings
from env.model import released_run
from synth_data.questions import default_questions_path, load_questions
from tests.fixtures.model import free_port
from tests.fixtures.scripted import ScriptedServer
from train.registry import RUN_FILE, register_run

INBOXRL = str(Path(sys.executable).with_name("inboxrl"))
CHAT = Path(__file__).resolve().parents[1] / "app" / "ui" / "pages" / "chat.py"
SHIPPED_INBOXES = {"allen-p", "south-s", "grigsby-m"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty INBOXRL_HOME; the model endpoint is a closed port."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("INBOXRL_DB", "INBOXRL_MODEL", "INBOXRL_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INBOXRL_HOME", str(home))
    monkeypatch.setenv("INBOXRL_BASE_URL", "http://127.0.0.1:9/v1")
    return home


def register(settings: Settings, name: str, tmp_path: Path, extra: dict) -> None:
    """Register a run ``name`` and add ``extra`` keys to its run.json (as the lead's eval writes them)."""
    adapter = tmp_path / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    info = register_run(settings, name, adapter, kind="grpo", base_model="smollm2-135m")
    path = Path(info.path) / RUN_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))


def test_examples_without_known_good_ones_are_answerable_realistic_and_cover_the_inboxes(home: Path) -> None:
    base = Settings(model=EMBEDDED_MODEL_NAME)  # the untrained model has no eval to pick from
    examples = example_questions(base, 3)
    assert len(examples) == 3
    assert {q.inbox_key for q in examples} == SHIPPED_INBOXES
    shipped = load_questions(default_questions_path())
    realism = sorted((q.how_realistic or 0 for q in shipped if q.answer), reverse=True)
    for q in examples:
        assert q.answer is not None and q.query_date and len(q.question) <= 100
        assert (q.how_realistic or 0) >= realism[len(realism) // 4]  # from the most realistic quarter
    assert example_questions(base, 3, inboxes=["alice-a"]) == []


def test_the_released_agents_examples_are_the_questions_it_answered_right(home: Path) -> None:
    """The default model is the released agent: its examples are the shipped questions its release
    eval got right (run.json's ``example_question_ids``), as many as it has, before any other."""
    assert Settings().model == RELEASED_MODEL_NAME
    right = released_run()[EXAMPLE_IDS_KEY]
    assert right, "the released run.json lists no example question it answered right"
    examples = [q.id for q in example_questions(Settings(), 3)]
    assert len(examples) == 3
    assert set(examples[: len(right)]) <= set(right)
    assert examples[: min(3, len(right))] == [i for i in examples if i in right]


def test_the_default_models_known_good_questions_come_first(home: Path, tmp_path: Path) -> None:
    settings = Settings(model="grpo-default")
    register(settings, "grpo-default", tmp_path, {EXAMPLE_IDS_KEY: ["south-s-003", "missing", "allen-p-002"]})
    assert [q.id for q in example_questions(settings, 3)][:2] == ["south-s-003", "allen-p-002"]
    # the ids may also sit in the eval summary the registry keeps
    register(settings, "grpo-default", tmp_path, {"eval": {EXAMPLE_IDS_KEY: ["grigsby-m-001"]}})
    assert example_questions(settings, 1)[0].id == "grigsby-m-001"
    # another model (the embedded base model) has no such list: the default picks
    base = Settings(model=EMBEDDED_MODEL_NAME)
    assert example_questions(base, 3) == pick_examples(load_questions(default_questions_path()), 3)


def test_doctests() -> None:
    result = doctest.testmod(app.examples)
    assert result.attempted > 0 and result.failed == 0


def test_chat_page_example_buttons_set_inbox_date_and_question(home: Path, default_db_path: Path) -> None:
    shutil.copy(default_db_path, home / "inbox.db")
    first = example_questions(Settings(), 3)[0]
    at = AppTest.from_file(str(CHAT), default_timeout=60).run()
    assert not at.exception
    labels = [b.label for b in at.button if b.key and b.key.startswith("example-")]
    assert len(labels) == 3 and first.question in labels[0] and first.query_date in labels[0]
    at.button(key="example-0").click().run()
    assert not at.exception
    assert at.sidebar.selectbox(key="inbox").value.id == first.inbox_key
    assert str(at.sidebar.date_input(key=f"date-{first.inbox_key}").value) == first.query_date
    assert at.chat_input[0].proto.value == first.question and at.chat_input[0].proto.set_value


def test_demo_ends_with_example_commands(scripted: ScriptedServer, tmp_path: Path) -> None:
    """`inboxrl demo` with a model server already up (the scripted one) prints, once the app is
    ready, three `inboxrl ask` commands for the shipped inbox."""
    env = {**os.environ, "INBOXRL_HOME": str(tmp_path), "INBOXRL_BASE_URL": scripted.base_url}
    env.update({"INBOXRL_MODEL": "scripted", "COLUMNS": "200"})
    env.pop("INBOXRL_DB", None)
    proc = subprocess.Popen(
        [INBOXRL, "demo", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(180, proc.kill)  # a demo that hangs ends the read loop below
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if sum(line.startswith("    expected: ") for line in lines) == 3:
                break
        output = "".join(lines)
        assert "InboxRL is ready at" in output, output
        ready = output.index("InboxRL is ready at")
        examples = example_questions(scripted.settings(tmp_path), 3)
        expected = [ask_command(q) for q in examples]
        assert [line.strip() for line in lines if line.startswith("  inboxrl ask ")] == expected
        answers = [f"expected: {expected_answer(q)}" for q in examples]
        assert [line.strip() for line in lines if line.startswith("    expected: ")] == answers
        assert all(output.index(command) > ready for command in expected)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
