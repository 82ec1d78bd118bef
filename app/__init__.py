"""The `inboxrl` command line and the Streamlit chat UI."""
