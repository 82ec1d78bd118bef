"""Shared pytest set-up. Fixtures live in tests/fixtures/<area>.py, one module per area."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.inbox",
    "tests.fixtures.model",
    "tests.fixtures.synth",
    "tests.fixtures.tools",
    "tests.fixtures.scripted",
]


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Put back ``sys.modules["__main__"]`` after each test.

    Streamlit's AppTest runs a page as ``__main__`` and leaves it there; multiprocessing's
    forkserver and spawn workers (the ingest pool) then re-run that page at start-up, die, and are
    replaced forever, so a later parallel ingest in the same pytest process hangs.
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
