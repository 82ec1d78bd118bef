"""Streamlit drawing shared by the pages: tool calls, emails, answers and whole trajectories.

Model output and email content are untrusted: they are shown as text or code, never as HTML, and
wherever Streamlit reads Markdown (labels, captions, alerts, ``st.markdown``) they go through
:func:`escape_markdown` first, so they cannot add links, images, formatting, colours or icons.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils
import streamlit as st

from app.ui.data import read_email
from env.markdown import escape_markdown
from judge.abstain import is_abstention

OPEN_EMAIL = "open_email"  # session_state key: {"scope": ..., "inbox": ..., "message_id": ...}


def parse_json(text: Any) -> Any:
    """A tool result as JSON when it is JSON, else the text itself."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def call_label(name: str, arguments: Any) -> str:
    """``search_emails(keywords=['gas'], max_results=5)``, shortened for a title."""
    if isinstance(arguments, dict):
        args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    else:
        args = str(arguments)
    label = f"{name}({args})"
    return label if len(label) <= 120 else label[:117] + "..."


def open_email_button(label: str, *, scope: str, inbox: str, message_id: str, key: str) -> None:
    """A button that opens an email below the turn it belongs to (``scope``); ``label`` is shown as text."""
    if st.button(escape_markdown(label), key=key, help=escape_markdown(message_id), icon=":material/mail:"):
        st.session_state[OPEN_EMAIL] = {"scope": scope, "inbox": inbox, "message_id": message_id}


def render_tool_call(call: dict[str, Any], *, scope: str, inbox: str, key: str) -> None:
    """One tool call in an expander: its arguments, then its result (emails found get open buttons)."""
    name = call.get("name", "?")
    error = call.get("error")
    icon = ":material/error:" if error else ":material/build:"
    with st.expander(escape_markdown(call_label(name, call.get("arguments"))), icon=icon):
        st.caption("Arguments")
        st.json(call.get("arguments") or {}, expanded=True)
        if error:
            st.error(f"Tool error: {escape_markdown(str(error))}")
        result = parse_json(call.get("content"))
        if error or result in (None, ""):
            return
        st.caption("Result")
        if isinstance(result, list) and all(isinstance(r, dict) and "message_id" in r for r in result):
            if not result:
                st.write("No emails found.")
            for i, row in enumerate(result):
                subject = row.get("subject") or "(no subject)"
                label = f"{str(row.get('date', ''))[:10]} · {row.get('from_address', '')} · {subject}"
                open_email_button(
                    label, scope=scope, inbox=inbox, message_id=row["message_id"], key=f"{key}-r{i}"
                )
        elif isinstance(result, dict | list):
            st.json(result, expanded=False)
        else:
            st.text(str(result))


def render_email(email: dict[str, Any] | None, message_id: str, *, key: str) -> None:
    """An opened email: headers (from, to, cc, date, subject) and the body as plain text."""
    with st.container(border=True):
        if email is None:
            st.warning(f"Email {escape_markdown(message_id)} is not in this inbox.")
        else:
            st.markdown(f"**:material/mail: {escape_markdown(email.get('subject') or '(no subject)')}**")
            sender = email.get("from_address", "")
            if email.get("from_name"):
                sender = f"{email['from_name']} <{sender}>"
            rows = [("From", sender), ("Date", email.get("date", ""))]
            rows += [(k.title(), ", ".join(email.get(k) or [])) for k in ("to", "cc", "bcc") if email.get(k)]
            rows += [("Folder", email.get("folder", "")), ("Message-ID", email.get("message_id", message_id))]
            st.text("\n".join(f"{name + ':':<12}{value}" for name, value in rows))
            body = email.get("body") or ""
            # a long body scrolls inside the panel instead of pushing the chat away
            with st.container(
                height=400 if body.count("\n") > 20 or len(body) > 2000 else "content", border=False
            ):
                st.text(body)
        if st.button("Close email", key=f"{key}-close", icon=":material/close:"):
            st.session_state.pop(OPEN_EMAIL, None)
            st.rerun()


def render_trajectory(
    trajectory: dict[str, Any], *, key: str, db: sqlite_utils.Database | None = None, turn: int | None = None
) -> None:
    """A rollout: its question, each model turn (or only turn number ``turn``), then how it ended.

    With ``db``, emails opened from its tool results are shown below it.
    """
    inbox = str(trajectory.get("inbox", ""))
    turns = trajectory.get("turns", [])
    st.markdown(f"**Question:** {escape_markdown(str(trajectory.get('question', '')))}")
    where = f"inbox {inbox} · date {trajectory.get('query_date', '?')} · model {trajectory.get('model', '?')}"
    st.caption(f"{escape_markdown(where)} · {len(turns)} turns · {trajectory.get('duration_s', 0):.1f} s")
    for t, record in enumerate(turns):
        if turn is None or t == turn:
            render_turn(record, t, inbox=inbox, key=key)
    render_outcome(trajectory)
    opened = st.session_state.get(OPEN_EMAIL)
    if db is not None and opened and opened["scope"] == key:
        message_id = opened["message_id"]
        render_email(read_email(db, opened["inbox"], message_id), message_id, key=f"{key}-email")


def render_turn(turn: dict[str, Any], index: int, *, inbox: str, key: str) -> None:
    """One model call: latency, tokens, retries, its text when it called no tool, its tool calls."""
    tokens = f"{turn.get('prompt_tokens') or 0}+{turn.get('completion_tokens') or 0} tokens"
    st.markdown(f"**Turn {index + 1}** · {turn.get('latency_s', 0):.2f} s · {tokens}")
    for retry in turn.get("retries", []):
        st.caption(f"retried after: {escape_markdown(str(retry))}")
    if turn.get("error"):
        st.error(f"Model error: {escape_markdown(str(turn['error']))}")
    content = turn.get("content")
    if content and not turn.get("tool_calls"):
        st.text(content)
    for c, call in enumerate(turn.get("tool_calls", [])):
        render_tool_call(call, scope=key, inbox=inbox, key=f"{key}-t{index}-c{c}")


def render_outcome(trajectory: dict[str, Any]) -> None:
    """How a rollout ended: its answer and sources, or a plain "no answer" box."""
    ended = trajectory.get("ended", "?")
    answer = trajectory.get("answer")
    if ended == "answered" and not is_abstention(answer):
        st.success(f"Answer: {escape_markdown(str(answer))}", icon=":material/check_circle:")
        st.caption("Sources: " + escape_markdown(", ".join(trajectory.get("sources") or []) or "(none)"))
    else:
        said = escape_markdown(str(answer if ended == "answered" else trajectory.get("reply") or ""))
        st.info(f"No answer ({ended})." + (f' It said: "{said}"' if said else ""), icon=":material/help:")
    if trajectory.get("error"):
        st.error(escape_markdown(str(trajectory["error"])))
