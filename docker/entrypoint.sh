#!/usr/bin/env bash
# Entry point of the InboxRL GPU image.
#
#   serve (default)  start vLLM on the GPU with the base model and every registered adapter
#                    (INBOXRL_HOME/runs/*), then the app on 0.0.0.0:${INBOXRL_APP_PORT:-8501}
#   anything else    runs as an inboxrl command: `retrain --inbox /mail`, `eval ...`, `ingest ...`
#
# Configuration (environment variables):
#   INBOXRL_BASE_MODEL   Hugging Face model id (downloaded once into INBOXRL_HOME/models/) or a folder
#   INBOXRL_MODEL        the name the base model is served under (the chat page lists it)
#   INBOXRL_VLLM_ARGS    extra vLLM arguments, e.g. "--tensor-parallel-size 2 --gpu-memory-utilization 0.9"
#   INBOXRL_HOME         data folder (inbox.db, traces, runs/, evals/, models/); mount a volume there
#   LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_HOST   also send traces to Langfuse
set -euo pipefail

if [ "${1:-serve}" != "serve" ]; then
  exec inboxrl "$@"
fi

: "${INBOXRL_BASE_MODEL:?Set INBOXRL_BASE_MODEL to a Hugging Face model id or a model folder.}"
model_dir=$INBOXRL_BASE_MODEL
if [ ! -f "$model_dir/config.json" ]; then
  model_dir=$INBOXRL_HOME/models/$(basename "$INBOXRL_BASE_MODEL")
  if [ ! -f "$model_dir/config.json" ]; then
    echo "Downloading $INBOXRL_BASE_MODEL into $model_dir (once)..."
    rm -rf "$model_dir.partial"
    python3 -c 'import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], local_dir=sys.argv[2])' \
      "$INBOXRL_BASE_MODEL" "$model_dir.partial"
    mv "$model_dir.partial" "$model_dir"
  fi
fi

serve_args=(--model-dir "$model_dir")
for run in "$INBOXRL_HOME"/runs/*/run.json; do
  [ -f "$run" ] && serve_args+=(--adapter "$(basename "$(dirname "$run")")")
done
for arg in ${INBOXRL_VLLM_ARGS:-}; do
  serve_args+=("--vllm-arg=$arg")
done

inboxrl model serve "${serve_args[@]}"
exec inboxrl app --host 0.0.0.0 --port "${INBOXRL_APP_PORT:-8501}"
