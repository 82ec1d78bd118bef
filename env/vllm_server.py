"""The local model server: vLLM's OpenAI-compatible server with every route behind its API key.

    python -m env.vllm_server --model DIR ...      # what `env.model.serve` runs; same arguments as vLLM's

vLLM checks ``--api-key`` / ``VLLM_API_KEY`` only on paths under ``/v1``, ``/v2``, ``/inference`` and
``/cohere``. With runtime LoRA updating on (which `env.model.serve` needs), vLLM 0.32 also mounts
SageMaker's ``POST /adapters`` (load an adapter from any path the server can read) and
``DELETE /adapters/{name}``, plus ``/invocations`` (completions) and ``/tokenize``, all outside those
prefixes: any local user could use them without the key. This entry point widens the guarded prefix to
``/`` before vLLM builds its app, so every route (``/health`` too) needs the key, then runs vLLM's own
``vllm.entrypoints.openai.api_server`` main.
"""

from __future__ import annotations

import runpy
import sys

VLLM_MAIN = "vllm.entrypoints.openai.api_server"


def guard_all_routes() -> None:
    """Make vLLM's API-key middleware check every path; exit if this vLLM has no such middleware.

    Failing closed: a vLLM whose middleware moved would otherwise serve the adapter routes unguarded.
    """
    try:
        from vllm.entrypoints.serve.middleware import authenticate
    except ImportError as e:
        sys.exit(f"InboxRL cannot put every vLLM route behind the API key with this vLLM: {e}")
    if not isinstance(getattr(authenticate, "GUARDED_PREFIX", None), tuple):
        sys.exit("InboxRL cannot put every vLLM route behind the API key: vLLM's GUARDED_PREFIX moved.")
    authenticate.GUARDED_PREFIX = ("/",)


def main() -> None:
    """Guard every route, then run vLLM's OpenAI server with this process's arguments."""
    guard_all_routes()
    runpy.run_module(VLLM_MAIN, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
