"""Chat page: ask the agent about an inbox and watch every tool call it makes."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from app.ui import models, render, session
from app.ui.chat import ChatTurn, run_turn, save_feedback
from app.ui.data import AppStateError, default_query_date, inboxes_or_error, read_email
from app.ui.examples import CHAT_INPUT_KEY, example_buttons

settings = session.settings()
st.title("Ask your inbox")
try:
    db = session.inbox_db(settings)
    inboxes = inboxes_or_error(db, settings)
except AppStateError as error:
    session.show_state_error(error)

# ---------------------------------------------------------------- sidebar: inbox, date, model
with st.sidebar:
    inbox = st.selectbox(
        "Inbox",
        inboxes,
        format_func=lambda i: f"{i.id} · {i.address} ({i.message_count:,} emails)",
        key="inbox",
    )
    last = default_query_date(inbox)
    query_date = st.date_input(
        "Today's date",
        value=dt.date.fromisoformat(last) if last else dt.date.today(),
        key=f"date-{inbox.id}",
        help="The agent answers as if it were this day; it defaults to the inbox's last email.",
    ).isoformat()
    choice = models.pick_model(settings)

if st.session_state.get("turns") and st.sidebar.button("New chat", icon=":material/add_comment:"):
    st.session_state.turns = []
    st.session_state.pop(render.OPEN_EMAIL, None)
    st.session_state.pop("chat_id", None)
    st.rerun()

turns: list[ChatTurn] = st.session_state.setdefault("turns", [])


def draw_turn(turn: ChatTurn, index: int) -> None:
    """One finished turn: the question, its tool calls, the answer, its sources and feedback."""
    with st.chat_message("user"):
        st.text(turn.question)
    with st.chat_message("assistant"):
        calls = [c for t in turn.trajectory.get("turns", []) for c in t.get("tool_calls", [])]
        if calls:
            with st.status(f"{len(calls)} tool call{'s' * (len(calls) != 1)}", state="complete"):
                for j, call in enumerate(calls):
                    render.render_tool_call(call, scope=turn.id, inbox=turn.inbox_id, key=f"t{index}-c{j}")
        if turn.error:
            st.error(f"The agent failed: {render.escape_markdown(turn.error)}", icon=":material/error:")
        if turn.found_answer:
            st.markdown(render.escape_markdown(turn.answer or ""))
        elif not turn.error:
            st.info("The agent did not find an answer.", icon=":material/help:")
            said = turn.answer if turn.answer is not None else turn.trajectory.get("reply")
            if said:
                with st.expander(f"What the model said ({turn.trajectory.get('ended')})"):
                    st.text(said)
        if turn.sources:
            st.caption("Sources")
            for j, message_id in enumerate(turn.sources):
                email = read_email(db, turn.inbox_id, message_id)
                label = email["subject"] or "(no subject)" if email else message_id
                render.open_email_button(
                    label,
                    scope=turn.id,
                    inbox=turn.inbox_id,
                    message_id=message_id,
                    key=f"t{index}-s{j}",
                )
        opened = st.session_state.get(render.OPEN_EMAIL)
        if opened and opened["scope"] == turn.id:
            mid = opened["message_id"]
            render.render_email(read_email(db, opened["inbox"], mid), mid, key=f"t{index}-email")
        if turn.trace_id:
            st.feedback(
                "thumbs",
                key=f"fb-{turn.id}",
                on_change=lambda t=turn: save_feedback(settings, t, st.session_state[f"fb-{t.id}"]),
            )
        model_line = f"{turn.model} · {turn.inbox_id} · {turn.query_date}"
        st.caption(model_line + (f" · trace {turn.trace_id}" if turn.trace_id else ""))


if not turns:
    example_buttons(settings, inboxes)
for index, turn in enumerate(turns):
    draw_turn(turn, index)

if not choice.ready:
    st.warning(choice.problem, icon=":material/cloud_off:")

question = st.chat_input(f"Ask about {inbox.address}'s email", disabled=not choice.ready, key=CHAT_INPUT_KEY)
if question:
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        status = st.status("Searching the inbox...", expanded=True)

        def on_event(event: dict) -> None:
            """Draw each tool call and its result as soon as the agent loop reports it."""
            kind = event.get("type")
            with status:
                if kind == "model_call":
                    took = f"model call {event.get('turn', 0) + 1} took {event.get('latency_s', 0):.1f} s"
                    status.update(label=f"Searching the inbox... ({took})", state="running", expanded=True)
                elif kind == "retry":
                    st.caption(f"Retrying the model: {render.escape_markdown(str(event.get('error')))}")
                elif kind == "tool_call":
                    label = render.call_label(event.get("name", "?"), event.get("arguments"))
                    st.markdown(f":material/build: {render.escape_markdown(label)}")
                elif kind == "tool_result":
                    if event.get("error"):
                        st.error(render.escape_markdown(str(event["error"])))
                    else:
                        st.text(str(event.get("content") or "")[:600])

        turn = run_turn(
            question,
            inbox,
            query_date,
            db=db,
            settings=choice.settings,
            session_id=session.chat_id(),
            on_event=on_event,
        )
        status.update(label="Done", state="error" if turn.error else "complete", expanded=False)
    turns.append(turn)
    st.rerun()
