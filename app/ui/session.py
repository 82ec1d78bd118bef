"""Per-browser-session state: settings, this session's own DB connection, its chat id.

Each session opens its own SQLite connection (WAL mode, see ``env.db.open_db``) and keeps it in
``st.session_state``; sessions never share a connection, so one tab cannot disturb another.
"""

from __future__ import annotations

import uuid

import sqlite_utils
import streamlit as st

from app.ui.data import AppStateError, open_inbox_db
from env.config import Settings


def settings() -> Settings:
    """Settings from the environment and config files (read on every run, so edits apply)."""
    return Settings()


def inbox_db(settings: Settings) -> sqlite_utils.Database:
    """This session's connection to the inbox DB; raises :class:`AppStateError` when there is no DB."""
    key = f"_db:{settings.db_path}"
    db = st.session_state.get(key)
    if db is None:
        db = open_inbox_db(settings)
        st.session_state[key] = db
    return db


def chat_id() -> str:
    """This session's chat id (the Langfuse session of its traces)."""
    if "chat_id" not in st.session_state:
        st.session_state.chat_id = uuid.uuid4().hex
    return st.session_state.chat_id


def show_state_error(error: AppStateError) -> None:
    """Show a missing-setup state as an info box with its fix, and stop the page."""
    st.info(str(error), icon=":material/info:")
    st.stop()
