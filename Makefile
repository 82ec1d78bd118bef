# The two README commands: `make demo` (the main job, offline, on the embedded default) and `make test`.
.PHONY: install demo test lint

install:
	scripts/install.sh

demo: install
	.venv/bin/inboxrl demo

test:
	scripts/install.sh --browser
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q --durations=15

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
