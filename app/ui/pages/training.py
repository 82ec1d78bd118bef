"""Training page: the registered adapters, their reward and accuracy curves, and how to retrain."""

from __future__ import annotations

import streamlit as st

from app.ui import data, session

settings = session.settings()
st.title("Training runs")
st.caption(f"Registry: {settings.runs_dir}")

with st.expander("Retrain on new mail", icon=":material/autorenew:", expanded=False):
    st.write(
        "One command ingests the new mail, writes and checks new questions, trains (SFT warm-start, "
        "then GRPO), evaluates against the current adapter and the base model, and registers the "
        "new adapter only if it is not worse; the running server loads it."
    )
    st.code("inboxrl retrain --inbox PATH/TO/NEW/MAIL", language="bash")

runs = data.list_training_runs(settings)
if not runs:
    st.info(
        "No trained adapters yet. Train one with `inboxrl train grpo` (or `inboxrl retrain --inbox PATH`); "
        "registered runs appear here with their curves.",
        icon=":material/info:",
    )
    st.stop()

st.dataframe(data.training_table(runs), hide_index=True, width="stretch")
names = [run.name for run in runs]
chosen = st.multiselect("Compare runs", names, default=names[-1:], key="training_runs")
selected = [run for run in runs if run.name in chosen]
curves = data.training_curves(selected)
if curves.empty:
    st.info("These runs logged no metrics (metrics.jsonl is empty or missing).", icon=":material/info:")
for metric in data.curve_metrics(curves):
    st.subheader(metric)
    st.line_chart(curves[curves["metric"] == metric], x="step", y="value", color="run")
for run in selected:
    plots = data.run_plots(run)
    if plots:
        st.subheader(f"{run.name}: plots")
        for column, plot in zip(st.columns(min(len(plots), 2)) * len(plots), plots, strict=False):
            column.image(str(plot), caption=plot.name)
    with st.expander(f"{run.name}: run.json", icon=":material/description:"):
        st.json(run.to_dict(), expanded=False)
