"""Evaluation page: `inboxrl eval` runs side by side, their plots, and the questions they disagree on."""

from __future__ import annotations

import streamlit as st

from app.ui import data, render, session

settings = session.settings()
st.title("Evaluations")
st.caption(f"Runs of `inboxrl eval` in {data.evals_dir(settings)}")
if settings.judge_model is None:
    st.info(
        "No judge model is configured, so `inboxrl eval` uses the deterministic judge (exact facts and "
        "cited sources). Set INBOXRL_JUDGE_MODEL (and INBOXRL_JUDGE_BASE_URL / INBOXRL_JUDGE_API_KEY) "
        "to grade with an LLM judge.",
        icon=":material/gavel:",
    )

runs = data.list_eval_runs(settings)
if not runs:
    st.info(
        "No evaluations yet. Run one with `inboxrl eval` (for example on the shipped questions); "
        "its results appear here.",
        icon=":material/info:",
    )
    st.stop()

names = [run.name for run in runs]
chosen = st.multiselect("Runs to compare", names, default=names[:3], key="eval_runs")
selected = [run for run in runs if run.name in chosen]
if not selected:
    st.stop()

st.subheader("Metrics")
st.dataframe(data.metrics_table(selected), width="stretch")

st.subheader("Plots")
tabs = st.tabs([run.name for run in selected])
for tab, run in zip(tabs, selected, strict=True):
    with tab:
        if not run.plots:
            st.caption("This run has no plots.")
        for plot in run.plots:
            st.image(str(plot), caption=plot.name)
        report = run.report()
        if report:
            with st.expander("report.md", icon=":material/description:"):
                st.markdown(report)

st.subheader("Questions where the runs disagree")
if len(selected) < 2:
    st.caption("Pick two runs or more to see where their verdicts differ.")
    st.stop()
rows = data.disagreements(selected)
if not rows:
    st.success("The runs agree on every question they share.", icon=":material/check_circle:")
    st.stop()
st.dataframe(rows, hide_index=True, width="stretch", column_config={"id": None})
picked = st.selectbox(
    "Open a question",
    rows,
    format_func=lambda r: r["question"][:150],
    index=None,
    placeholder="Choose a question to see each run's trajectory",
    key="eval_question",
)
if picked:
    db = None
    try:
        db = session.inbox_db(settings)
    except data.AppStateError:
        st.caption("No inbox DB here, so the emails behind the tool calls cannot be opened.")
    for column, run in zip(st.columns(len(selected)), selected, strict=True):
        with column:
            row = data.result_row(run, picked["id"])
            st.markdown(f"#### {run.name}: {data.result_verdict(row)}")
            trajectory = data.result_trajectory(row)
            if trajectory:
                render.render_trajectory(trajectory, key=f"eval-{run.name}", db=db)
            else:
                st.json(row, expanded=False)
