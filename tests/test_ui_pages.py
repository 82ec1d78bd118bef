"""The app's pages in Streamlit's AppTest (no browser): clear states, chat turns, traces, training.

Chat turns that must show one exact outcome (an answer with a source, an "I don't know") use the
scripted OpenAI-compatible server: the real tiny model cannot be made to give a chosen answer.
The chat against the real model (vLLM) is in test_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from env.config import trace_db_path
from env.db import open_db
from env.trace import TraceStore
from tests.fixtures.scripted import ScriptedServer, text, tool_call
from tests.fixtures.tools import build_tools_db

UI = Path(__file__).resolve().parents[1] / "app" / "ui"
OFFSITE_ID = "<m2.alice@example.com>"


def page(name: str) -> AppTest:
    """An AppTest for one page script (``chat``, ``traces``, ``evaluation``, ``training``)."""
    return AppTest.from_file(str(UI / "pages" / f"{name}.py"), default_timeout=60)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty INBOXRL_HOME; the endpoint points at a closed port unless a test changes it."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    for name in ("INBOXRL_DB", "INBOXRL_JUDGE_MODEL", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INBOXRL_HOME", str(home))
    monkeypatch.setenv("INBOXRL_BASE_URL", "http://127.0.0.1:9/v1")
    return home


@pytest.fixture
def inbox_home(home: Path) -> Path:
    """A home whose inbox.db holds the literal test emails (inboxes alice-a and bob-b)."""
    build_tools_db(home / "inbox.db")
    return home


@pytest.fixture
def scripted_home(inbox_home: Path, scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The inbox home with the agent pointed at the scripted server."""
    monkeypatch.setenv("INBOXRL_BASE_URL", scripted.base_url)
    monkeypatch.setenv("INBOXRL_MODEL", "scripted")
    monkeypatch.setenv("INBOXRL_TIMEOUT_S", "5")
    monkeypatch.setenv("INBOXRL_MAX_RETRIES", "0")
    return inbox_home


def unescape(markdown: str) -> str:
    """Markdown text as shown: the app escapes model and email text (``\\$5\\.10`` -> ``$5.10``)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(at: AppTest, kind: str) -> list[str]:
    """The values of every element of one kind (``info``, ``markdown``, ``text``...)."""
    return [str(e.value) for e in getattr(at, kind)]


# ---------------------------------------------------------------- clear states


def test_chat_without_db_says_how_to_create_one(home: Path) -> None:
    at = page("chat").run()
    assert not at.exception
    assert any("No inbox DB yet" in m and "inboxrl ingest" in m for m in texts(at, "info"))
    assert not at.chat_input


def test_chat_with_empty_db_says_to_ingest(home: Path) -> None:
    open_db(home / "inbox.db", create=True).close()
    at = page("chat").run()
    assert not at.exception
    assert any("no emails yet" in m for m in texts(at, "info"))
    assert not at.chat_input


def test_chat_with_server_down_disables_the_input(inbox_home: Path) -> None:
    at = page("chat").run()
    assert not at.exception
    assert any("not answering" in w and "inboxrl model serve" in w for w in texts(at, "warning"))
    assert at.chat_input[0].proto.disabled
    inboxes = at.sidebar.selectbox(key="inbox").options
    assert inboxes == ["alice-a · alice@example.com (5 emails)", "bob-b · bob@example.com (1 emails)"]
    # "today" defaults to the day of the inbox's last email
    assert str(at.sidebar.date_input[0].value) == "2001-06-01"


def test_other_pages_explain_what_is_missing(home: Path) -> None:
    for name, expected in [
        ("traces", "No traces yet"),
        ("evaluation", "No evaluations yet"),
        ("training", "No trained adapters yet"),
    ]:
        at = page(name).run()
        assert not at.exception, name
        assert any(expected in m for m in texts(at, "info")), (name, texts(at, "info"))
    assert any("deterministic judge" in m for m in texts(page("evaluation").run(), "info"))


def test_main_navigates_every_page(inbox_home: Path) -> None:
    at = AppTest.from_file(str(UI / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Ask your inbox"]
    for name, title in [("traces", "Traces"), ("evaluation", "Evaluations"), ("training", "Training runs")]:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, name
        assert [t.value for t in at.title] == [title]


# ---------------------------------------------------------------- chat turns (scripted model)


def test_chat_turn_shows_tool_calls_answer_source_email_and_stores_feedback(
    scripted_home: Path, scripted: ScriptedServer
) -> None:
    scripted.queue(
        tool_call("search_emails", {"keywords": ["offsite"]}),
        tool_call("read_email", {"message_id": OFFSITE_ID}),
        tool_call(
            "return_final_answer", {"answer": "Friday at 10am, Houston office.", "sources": [OFFSITE_ID]}
        ),
    )
    at = page("chat").run()
    at.chat_input[0].set_value("When is the team offsite?").run()
    assert not at.exception
    assert scripted.remaining == 0
    assistant = at.chat_message[1]
    assert [s.label for s in assistant.status] == ["3 tool calls"]
    labels = [unescape(e.label) for e in assistant.expander]
    assert labels[0] == "search_emails(keywords=['offsite'])"
    assert labels[1] == f"read_email(message_id='{OFFSITE_ID}')"
    assert any("Friday at 10am" in m for m in texts(assistant, "markdown"))
    assert not texts(assistant, "info")  # a real answer is not shown as "did not find"

    # the source is a button that opens the email (headers with to/cc, and the body) in the page
    source = assistant.button(key="t0-s0")
    assert "Team offsite" in source.label
    source.click().run()
    shown = "\n".join(texts(at.chat_message[1], "text"))
    assert (
        "To:" in shown and "Alice Smith <alice@example.com>" in shown and "Team <team@example.com>" in shown
    )
    assert "The team offsite starts Friday at 10am" in shown

    # the turn is a trace in the local store, in this chat's session; thumbs up is a score on it
    store = TraceStore(trace_db_path(scripted_home / "inbox.db"))
    (trace,) = store.list_traces()
    assert trace["name"] == "chat" and trace["session_id"] == at.session_state["chat_id"]
    assert trace["answer"] == "Friday at 10am, Houston office."
    at.chat_message[1].feedback[0].set_value(1).run()
    scores = store.get_trace(trace["id"])["scores"]
    assert [(s["name"], s["value"]) for s in scores] == [("user_feedback", 1.0)]


def test_i_dont_know_is_shown_as_no_answer(scripted_home: Path, scripted: ScriptedServer) -> None:
    scripted.queue(
        tool_call("search_emails", {"keywords": ["zebra"]}),
        tool_call("return_final_answer", {"answer": "I don't know.", "sources": []}),
    )
    at = page("chat").run()
    at.chat_input[0].set_value("Who is buying the company?").run()
    assert not at.exception
    assistant = at.chat_message[1]
    assert texts(assistant, "info") == ["The agent did not find an answer."]
    assert not any("I don't know" in m for m in texts(assistant, "markdown"))
    assert not assistant.button  # no sources to open, and the search found nothing


def test_search_result_opens_email_and_gave_up_is_not_an_answer(
    scripted_home: Path, scripted: ScriptedServer
) -> None:
    scripted.queue(tool_call("search_emails", {"keywords": ["gas"]}), text("Gas is cheap, I think."))
    at = page("chat").run()
    at.chat_input[0].set_value("What is the gas forecast?").run()
    assistant = at.chat_message[1]
    assert texts(assistant, "info") == ["The agent did not find an answer."]
    assert any("Gas is cheap" in t for t in texts(assistant, "text"))
    result = next(b for b in assistant.button if "Gas price forecast" in b.label)
    result.click().run()
    assert any("$5.10 at Henry Hub" in t for t in texts(at.chat_message[1], "text"))


def test_two_sessions_keep_their_own_chats(scripted_home: Path, scripted: ScriptedServer) -> None:
    scripted.queue(tool_call("return_final_answer", {"answer": "Houston.", "sources": []}))
    scripted.queue(tool_call("return_final_answer", {"answer": "Friday.", "sources": []}))
    first, second = page("chat").run(), page("chat").run()
    first.chat_input[0].set_value("Where?").run()
    second.chat_input[0].set_value("When?").run()
    assert [t.value for t in first.chat_message[0].text] == ["Where?"]
    assert [t.value for t in second.chat_message[0].text] == ["When?"]
    assert len(first.chat_message) == len(second.chat_message) == 2
    assert first.session_state["chat_id"] != second.session_state["chat_id"]
    store = TraceStore(trace_db_path(scripted_home / "inbox.db"))
    sessions = {t["question"]: t["session_id"] for t in store.list_traces()}
    assert sessions == {"Where?": first.session_state["chat_id"], "When?": second.session_state["chat_id"]}


# ---------------------------------------------------------------- traces and training


def test_traces_page_searches_opens_and_steps_through_turns(
    scripted_home: Path, scripted: ScriptedServer
) -> None:
    scripted.queue(
        tool_call("search_emails", {"keywords": ["offsite"]}),
        tool_call("return_final_answer", {"answer": "Friday.", "sources": [OFFSITE_ID]}),
        tool_call("return_final_answer", {"answer": "I don't know", "sources": []}),
    )
    chat = page("chat").run()
    chat.chat_input[0].set_value("When is the offsite?").run()
    chat.chat_input[0].set_value("What is the budget?").run()

    at = page("traces").run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 2
    at.text_input[0].set_value("offsite").run()
    assert list(at.dataframe[0].value["question"]) == ["When is the offsite?"]
    assert unescape(next(e.label for e in at.expander)) == "search_emails(keywords=['offsite'])"
    assert any("Answer: Friday" in s for s in texts(at, "success"))
    at.radio[0].set_value(1).run()  # step to turn 2: only its tool call is shown
    assert unescape(next(e.label for e in at.expander)).startswith("return_final_answer(")
    at.text_input[0].set_value("budget").run()
    assert any("No answer" in m for m in texts(at, "info"))


def test_training_page_shows_registered_runs_and_curves(home: Path, tmp_path: Path) -> None:
    from peft import LoraConfig

    from env.config import Settings
    from train.metrics import plot_metrics
    from train.registry import register_run

    adapter = tmp_path / "adapter"
    LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    ).save_pretrained(adapter)
    settings = Settings()
    info = register_run(
        settings,
        "grpo-test",
        adapter,
        kind="grpo",
        base_model="smollm2-135m",
        eval_summary={"accuracy": 0.25},
    )
    metrics = Path(info.path) / "metrics.jsonl"
    records = [
        {
            "stage": "grpo",
            "step": s,
            "reward": 0.1 * s,
            "reward_std": 0.2,
            "inbox/accuracy": 0.05 * s,
            "loss": 0.3,
        }
        for s in range(1, 5)
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_metrics(metrics, Path(info.path) / "training.png")

    at = page("training").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == ["grpo-test"] and list(table["accuracy"]) == [0.25]
    assert [s.value for s in at.subheader] == ["inbox/accuracy", "reward", "reward_std", "grpo-test: plots"]
    assert any("inboxrl retrain" in c.value for c in at.code)


# ---------------------------------------------------------------- evaluation runs


def test_evaluation_page_compares_real_eval_runs(
    scripted_home: Path, scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `judge.evaluate` runs (the scripted model answers, the deterministic judge grades) that
    disagree on both questions: metrics side by side, plots, the disagreement table, trajectories."""
    from env.config import Settings
    from judge.evaluate import evaluate
    from synth_data.questions import Question

    gas = Question(
        id="q-gas",
        inbox_address="alice@example.com",
        question="What is the gas price forecast for May?",
        answer="$5.10",
        message_ids=["<m1.alice@example.com>"],
        query_date="2001-05-01",
    )
    offsite = Question(
        id="q-offsite",
        inbox_address="alice@example.com",
        question="Where is the team offsite?",
        answer="The Houston office",
        message_ids=[OFFSITE_ID],
        query_date="2001-05-01",
    )
    settings = Settings(concurrency=1)
    answers = {
        "base": [("$5.10", ["<m1.alice@example.com>"]), ("I don't know", [])],
        "tuned": [("I don't know", []), ("The Houston office", [OFFSITE_ID])],
    }
    for name, replies in answers.items():
        for answer, sources in replies:
            scripted.queue(
                tool_call("search_emails", {"keywords": ["gas" if "5.10" in answer else "offsite"]}),
                tool_call("return_final_answer", {"answer": answer, "sources": sources}),
            )
        evaluate(
            [gas, offsite],
            db_path=scripted_home / "inbox.db",
            out_dir=scripted_home / "evals" / name,
            settings=settings,
            progress=False,
        )
    assert scripted.remaining == 0

    at = page("evaluation").run()
    assert not at.exception
    assert sorted(at.multiselect[0].value) == ["base", "tuned"]
    metrics = at.dataframe[0].value
    assert metrics.loc["accuracy", "base"] == metrics.loc["accuracy", "tuned"] == "0.500"
    assert [t.label for t in at.tabs] == list(at.multiselect[0].value)
    captions = [c for image in at.image for c in image.captions]
    assert any(c.endswith(".png") for c in captions) and len(captions) >= 2  # each run's PNG plots
    disagreement = at.dataframe[1].value
    assert sorted(disagreement["question"]) == [gas.question, offsite.question]
    at.selectbox[0].select_index(at.selectbox[0].options.index(gas.question)).run()
    assert not at.exception
    headers = [m.value for m in at.markdown if m.value.startswith("####")]
    assert sorted(headers) == ["#### base: correct", "#### tuned: abstained"]
    assert "Answer: $5.10" in [unescape(s) for s in texts(at, "success")]
