"""The Streamlit app: chat with the agent, browse traces, compare evaluations, follow training.

Run it with ``inboxrl app`` (or ``inboxrl demo``, which also prepares the model, the inbox and the
server). ``main.py`` is the entry script; ``pages/`` holds one script per page; the other modules
hold the page logic that tests call without a browser.
"""
