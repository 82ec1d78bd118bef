"""Entry script of the Streamlit app (``inboxrl app`` runs ``streamlit run app/ui/main.py``)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="InboxRL", page_icon=":material/mail:", layout="wide")
page = st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/traces.py", title="Traces", icon=":material/timeline:"),
        st.Page("pages/evaluation.py", title="Evaluation", icon=":material/leaderboard:"),
        st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
    ]
)
page.run()
