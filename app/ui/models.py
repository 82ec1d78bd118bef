"""Which model answers: the served base model, a registered adapter, or a hosted endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from env.config import Settings

HOSTED = "Hosted endpoint..."


@dataclass
class ModelChoice:
    """The settings to run the agent with, and why the model cannot answer (``problem``) if so."""

    settings: Settings
    problem: str | None = None

    @property
    def ready(self) -> bool:
        """Whether the endpoint answered its health check."""
        return self.problem is None


def model_options(settings: Settings) -> tuple[list[str], str | None]:
    """Model names served at ``settings.base_url`` plus registered adapters, and the server's problem.

    The problem is None when the server is up, else a sentence saying how to start it.
    """
    served, problem = served_or_problem(settings.base_url, settings.api_key)
    names = [settings.model, *(m for m in served if m != settings.model)]
    names += [r for r in registered_adapters(settings) if r not in names]
    return names, problem


@st.cache_data(ttl=10, show_spinner=False)
def served_or_problem(base_url: str, api_key: str) -> tuple[list[str], str | None]:
    """The models a server lists, or why it cannot be used (cached 10 s: every click reruns the page)."""
    from env.model import ModelError, served_models

    try:
        return served_models(Settings(base_url=base_url, api_key=api_key)), None
    except ModelError:
        return [], (
            f"The model server at {base_url} is not answering. Start it with "
            "`inboxrl model serve` (or `inboxrl demo`), or pick a hosted endpoint in the sidebar."
        )


def registered_adapters(settings: Settings) -> list[str]:
    """Names of the trained adapters in the run registry."""
    from train.registry import list_runs

    return [run.name for run in list_runs(settings)]


def pick_model(settings: Settings) -> ModelChoice:
    """Sidebar widgets to choose the model; returns the settings the agent should use."""
    names, problem = model_options(settings)
    name = st.selectbox("Model", [*names, HOSTED], key="model_name")
    if name == HOSTED:
        base_url = st.text_input("Base URL", value="https://api.openai.com/v1", key="hosted_base_url")
        model = st.text_input("Model name", value="", key="hosted_model", placeholder="gpt-4.1-mini")
        api_key = st.text_input("API key", value="", type="password", key="hosted_api_key")
        chosen = settings.model_copy(
            update={"base_url": base_url, "model": model, "api_key": api_key or "EMPTY"}
        )
        if not model:
            return ModelChoice(chosen, "Enter the hosted model's name in the sidebar.")
        return ModelChoice(chosen)
    from train.registry import agent_settings

    chosen = agent_settings(settings, name)
    if problem is None and name in registered_adapters(settings):
        problem = ensure_adapter_loaded(chosen, name)
    return ModelChoice(chosen, problem)


def ensure_adapter_loaded(settings: Settings, name: str) -> str | None:
    """Load a registered adapter into the running server if it is not served yet; returns a problem."""
    from env.model import load_adapter, served_models

    if name in served_models(settings):
        return None
    try:
        load_adapter(settings, name)
    except Exception as exc:  # the server refuses: say so in the page (its text is not Markdown)
        from app.ui.render import escape_markdown

        reason = escape_markdown(f"{name!r} into the server: {exc}")
        return f"Could not load adapter {reason}"
    return None
