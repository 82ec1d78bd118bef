"""Shared pytest set-up. Fixtures live in tests/fixtures/<area>.py, one module per area."""

pytest_plugins = [
    "tests.fixtures.inbox",
    "tests.fixtures.model",
    "tests.fixtures.synth",
    "tests.fixtures.tools",
    "tests.fixtures.scripted",
]
