"""Example questions on the chat page: one click fills the chat input and sets the inbox and date.

The examples are :func:`app.examples.example_questions` (the shipped question set, the default
model's known-good questions first), kept to the inboxes of the open DB.
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app.examples import example_questions
from env.config import Settings
from env.db import Inbox
from synth_data.questions import Question

CHAT_INPUT_KEY = "question"


@st.cache_data(show_spinner=False)
def _examples(settings_json: str, inbox_keys: tuple[str, ...]) -> list[Question]:
    """The examples for these settings and inboxes (cached: the question file is read once)."""
    return example_questions(Settings.model_validate_json(settings_json), 3, inboxes=inbox_keys)


def _use(question: Question, inbox: Inbox) -> None:
    """Button callback (runs before the page): select the inbox and date, fill the chat input."""
    st.session_state["inbox"] = inbox
    st.session_state[f"date-{inbox.id}"] = dt.date.fromisoformat(question.query_date)
    st.session_state[CHAT_INPUT_KEY] = question.question


def example_buttons(settings: Settings, inboxes: list[Inbox]) -> None:
    """Up to three example questions as buttons (nothing when none is about these inboxes)."""
    by_key = {key: inbox for inbox in inboxes for key in (inbox.id, *inbox.addresses)}
    examples = _examples(settings.model_dump_json(), tuple(sorted(by_key)))
    if not examples:
        return
    st.caption("Not sure what to ask? Try a question from the shipped question set:")
    for i, question in enumerate(examples):
        inbox = by_key.get(question.inbox_key) or by_key[question.inbox_address]
        st.button(
            f"{question.question} · {inbox.id} · {question.query_date}",
            key=f"example-{i}",
            icon=":material/lightbulb:",
            on_click=_use,
            args=(question, inbox),
        )
