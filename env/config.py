"""Settings shared by every part of InboxRL.

Values come, in increasing priority, from the defaults below, a TOML file (``$INBOXRL_HOME/config.toml``
or ``./inboxrl.toml``) and environment variables prefixed ``INBOXRL_`` (``INBOXRL_BASE_URL=...``).
The default endpoint is the embedded model served locally by ``inboxrl model serve``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from env.tools import MAX_BODY_CHARS

EMBEDDED_MODEL_NAME = "smollm2-135m"


def default_home() -> Path:
    """The InboxRL home folder: ``$INBOXRL_HOME`` or ``~/.inboxrl``."""
    return Path(os.environ.get("INBOXRL_HOME", Path.home() / ".inboxrl")).expanduser()


class Settings(BaseSettings):
    """Where the data lives and which model endpoints to talk to."""

    model_config = SettingsConfigDict(env_prefix="INBOXRL_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Folder for the DB, models, runs and logs.")
    db: Path | None = Field(None, description="Inbox DB; default <home>/inbox.db.")

    # > The agent's model endpoint (any OpenAI-compatible server).
    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="OpenAI-compatible base URL of the agent model."
    )
    model: str = Field(EMBEDDED_MODEL_NAME, description="Model (or served LoRA adapter) name at base_url.")
    api_key: str = Field("EMPTY", description="API key for base_url (vLLM accepts any).")
    timeout_s: float = Field(120.0, description="Per-request timeout in seconds.")
    max_retries: int = Field(3, description="Retries with backoff for transport errors and 5xx.")
    concurrency: int = Field(4, description="Rollouts in flight at once against one server.")
    max_turns: int = Field(10, description="Model turns per rollout.")
    temperature: float = Field(0.0, description="Sampling temperature for serving and evaluation.")
    few_shot: bool = Field(
        True,
        description="Put the worked tool-call example in the prompt (small base models need it; "
        "adapters trained without it, and hosted APIs that reject a call without a result, do not).",
    )
    max_body_chars: int = Field(
        MAX_BODY_CHARS,
        description="read_email shows at most this many characters of a body.",
    )

    # > The judge's endpoint. judge_model=None means the deterministic judge (no LLM).
    judge_base_url: str | None = Field(None, description="Judge endpoint; default base_url.")
    judge_model: str | None = Field(None, description="Judge model; None selects the deterministic judge.")
    judge_api_key: str | None = Field(None, description="Judge API key; default api_key.")

    # > The local model server started by `inboxrl model serve`.
    serve_host: str = Field("127.0.0.1", description="Host the local vLLM server binds to.")
    serve_port: int = Field(8000, description="Port of the local vLLM server.")
    serve_max_model_len: int = Field(4096, description="vLLM --max-model-len for the local server.")
    serve_start_timeout_s: float = Field(
        600.0, description="How long to wait for the server to become healthy."
    )
    dtype: str = Field(
        "auto",
        description="auto | bfloat16 | float32 for serving on CPU and training; auto: bfloat16 where the "
        "CPU has native bf16 (AMX / AVX512-BF16) or the GPU supports it, else float32 (env.hardware).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init kwargs beat env vars, which beat the TOML files."""
        files = [p for p in (Path("inboxrl.toml"), default_home() / "config.toml") if p.is_file()]
        toml = [TomlConfigSettingsSource(settings_cls, toml_file=p) for p in files]
        return (init_settings, env_settings, *toml)

    @property
    def db_path(self) -> Path:
        """The inbox DB file."""
        return self.db or self.home / "inbox.db"

    @property
    def models_dir(self) -> Path:
        """Prepared model folders."""
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        """The registry of trained adapters."""
        return self.home / "runs"

    @property
    def run_dir(self) -> Path:
        """PID and log files of local servers."""
        return self.home / "run"


def trace_db_path(db_path: Path) -> Path:
    """The local trace store that sits beside an inbox DB: ``inbox.db`` -> ``inbox.traces.db``."""
    return db_path.with_name(db_path.stem + ".traces.db")
