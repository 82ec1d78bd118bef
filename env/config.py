"""Settings shared by every part of InboxRL.

Values come, in increasing priority, from the defaults below, a TOML file (``$INBOXRL_HOME/config.toml``
or ``./inboxrl.toml``) and environment variables prefixed ``INBOXRL_`` (``INBOXRL_BASE_URL=...``).
The default endpoint is the embedded model served locally by ``inboxrl model serve``.

A ``./inboxrl.toml`` that changes an endpoint or key (`ENDPOINT_SETTINGS`) is named on stderr once per
process: a file in whatever folder one runs from must not silently send questions, emails and keys
elsewhere. The local server has an API key (``env.model.serve`` makes one per start and saves it in
``<home>/run/vllm.json``); settings without a key of their own (``api_key="EMPTY"``) use it for that
server's URL only (`Settings.use_server_key`). `private_files` makes what InboxRL writes readable by
its user only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from env.tools import MAX_BODY_CHARS

EMBEDDED_MODEL_NAME = "smollm2-135m"
# The embedded model with the adapter InboxRL trained (env/data/inboxrl-135m/): the default agent.
RELEASED_MODEL_NAME = "inboxrl-135m"
NO_KEY = "EMPTY"
SERVER_INFO_FILE = "vllm.json"
LOCAL_CONFIG = Path("inboxrl.toml")
ENDPOINT_SETTINGS = ("base_url", "api_key", "judge_base_url", "judge_api_key", "serve_host")
PRIVATE_UMASK = 0o077

log = logging.getLogger(__name__)
_noticed: set[Path] = set()


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
    model: str = Field(
        RELEASED_MODEL_NAME,
        description=f"Model (or served LoRA adapter) name at base_url; default the trained agent InboxRL "
        f"ships, {RELEASED_MODEL_NAME} ({EMBEDDED_MODEL_NAME}: the untrained base model).",
    )
    api_key: str = Field(
        NO_KEY,
        description="API key for base_url; EMPTY: none of your own (the local server's key is used for it).",
    )
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
    tool_choice: Literal["auto", "required"] = Field(
        "auto",
        description="auto: the model may reply without a tool (that ends the rollout as gave_up); "
        "required: the server constrains every turn to a tool call (vLLM structured decoding), for "
        "models that answer in prose instead of calling return_final_answer.",
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
    serve_lora: bool = Field(
        True,
        description="Serve with LoRA support (adapters loadable at start and at run time). False: no "
        "adapters (serve a trained run merged, --model RUN); vLLM's CPU build then compiles the model "
        "(torch inductor; it never compiles with LoRA on): faster decoding, a slower first start.",
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
        files = [p for p in (LOCAL_CONFIG, default_home() / "config.toml") if p.is_file()]
        if LOCAL_CONFIG in files:
            _notice_local_endpoints(LOCAL_CONFIG)
        toml = [TomlConfigSettingsSource(settings_cls, toml_file=p) for p in files]
        return (init_settings, env_settings, *toml)

    @model_validator(mode="after")
    def _local_server_key(self) -> Settings:
        """Use the key of the server started from this home (``<run_dir>/vllm.json``) for its URL."""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
            info = json.loads((self.run_dir / SERVER_INFO_FILE).read_text())
            if info.get("api_key"):
                self.use_server_key(info["base_url"], info["api_key"])
        return self

    def use_server_key(self, url: str, key: str) -> None:
        """Send ``key`` to the server at ``url`` where these settings talk to it without a key of their own.

        ``api_key`` is replaced only when it is ``EMPTY`` and ``base_url`` is that server, ``judge_api_key``
        only when it is unset and ``judge_base_url`` is that server; a judge elsewhere that would fall back
        to the replaced ``api_key`` gets ``EMPTY`` (as before), so the key never leaves for another endpoint.

        >>> s = Settings(home="/nowhere", base_url="http://localhost:8000/v1", judge_base_url="https://j/v1")
        >>> s.use_server_key("http://127.0.0.1:8000/v1", "k1")
        >>> s.api_key, s.judge_api_key
        ('k1', 'EMPTY')
        """
        judge_here = self.judge_base_url is not None and same_server(self.judge_base_url, url)
        if self.api_key == NO_KEY and same_server(self.base_url, url):
            self.api_key = key
            if self.judge_api_key is None and self.judge_base_url is not None and not judge_here:
                self.judge_api_key = NO_KEY
        if self.judge_api_key is None and judge_here:
            self.judge_api_key = key

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


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""}


def same_server(url_a: str, url_b: str) -> bool:
    """True if two base URLs reach the same local server (any loopback or wildcard name, same port and path).

    >>> same_server("http://localhost:8000/v1/", "http://127.0.0.1:8000/v1")
    True
    >>> same_server("http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1")
    False
    """
    try:
        a, b = urlsplit(url_a), urlsplit(url_b)
        ports = (a.port, b.port)
    except ValueError:
        return False
    host_a, host_b = (a.hostname or "", b.hostname or "")
    same_host = host_a == host_b or (host_a in _LOOPBACK and host_b in _LOOPBACK)
    return (
        same_host
        and ports[0] == ports[1]
        and a.scheme == b.scheme
        and a.path.rstrip("/") == b.path.rstrip("/")
    )


def _notice_local_endpoints(path: Path) -> None:
    """Name on stderr, once per process, the endpoint and key settings a working-directory config changes."""
    resolved = path.resolve()
    if resolved in _noticed:
        return
    _noticed.add(resolved)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return  # the settings source reports an unreadable file itself
    changed = [
        name if "key" in name else f"{name}={data[name]}"
        for name in ENDPOINT_SETTINGS
        if name in data and data[name] != Settings.model_fields[name].default
    ]
    if changed:
        log.warning(
            "Note: %s (in the working directory) sets %s; questions, emails and API keys go there.",
            resolved,
            ", ".join(changed),
        )


def private_files(home: Path | None = None) -> None:
    """Make what this process and its children (servers, the app) write from now on private to its user.

    Sets the umask to 0o077 (files 0600, folders 0700) and tightens an existing home folder (``home``,
    default `default_home`) of this user to 0700. The ``inboxrl`` command calls it first thing.
    """
    os.umask(PRIVATE_UMASK)
    home = home or default_home()
    with contextlib.suppress(OSError):
        if home.is_dir() and home.stat().st_uid == os.getuid():
            home.chmod(0o700)


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 (its new folders 0700) unless it exists; returns ``path``.

    For files that must never be readable by others whatever the umask, e.g. a SQLite DB before it is
    first opened (SQLite gives its ``-wal``/``-shm`` files the DB file's mode).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path


def trace_db_path(db_path: Path) -> Path:
    """The local trace store that sits beside an inbox DB: ``inbox.db`` -> ``inbox.traces.db``."""
    return db_path.with_name(db_path.stem + ".traces.db")
