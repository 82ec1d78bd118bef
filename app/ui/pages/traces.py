"""Traces page: search past rollouts (chat, ask, eval), open one and step through its turns."""

from __future__ import annotations

import streamlit as st

from app.ui import data, render, session
from env.config import trace_db_path
from env.trace import TraceStore

settings = session.settings()
st.title("Traces")
path = trace_db_path(settings.db_path)
st.caption(f"Local trace store: {path}")
if not path.exists():
    st.info(
        "No traces yet. Ask a question on the Chat page (or run `inboxrl ask`): every rollout is "
        "traced here.",
        icon=":material/info:",
    )
    st.stop()

store = TraceStore(path)
search = st.text_input("Search", placeholder="words in the question or answer, an inbox, a model, a trace id")
traces = store.list_traces(search or None, limit=200)
if not traces:
    st.info("No trace matches." if search else "The trace store is empty.", icon=":material/info:")
    st.stop()

st.dataframe(data.traces_table(traces), hide_index=True, width="stretch")
picked = st.selectbox(
    "Open a trace",
    traces,
    format_func=lambda t: f"{t['created'][:19]} · {t['question'][:100]}",
    key="trace_pick",
)
trace = store.get_trace(picked["id"])
if trace is None:
    st.warning("This trace is gone from the store.")
    st.stop()

trajectory = trace["trajectory"].to_dict()
scores = trace.get("scores") or []
if scores:
    st.caption("Scores: " + ", ".join(f"{s['name']}={s['value']:g}" for s in scores))
turns = trajectory.get("turns", [])
step = None
if len(turns) > 1:
    step = st.radio(
        "Turn",
        [None, *range(len(turns))],
        format_func=lambda i: "all" if i is None else str(i + 1),
        horizontal=True,
        key=f"turn-{picked['id']}",
    )
db = None
try:
    db = session.inbox_db(settings)
except data.AppStateError:
    st.caption("No inbox DB here, so the emails behind the tool calls cannot be opened.")
render.render_trajectory(trajectory, key=f"trace-{picked['id']}", db=db, turn=step)
with st.expander("Spans", icon=":material/timeline:"):
    st.dataframe(data.spans_table(trace.get("spans") or []), hide_index=True, width="stretch")
