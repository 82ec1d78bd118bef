# InboxRL GPU image: vLLM serving the base model with the trained LoRA adapters, plus the chat app.
#
#   docker build -t inboxrl .
#   # serve: the app on http://127.0.0.1:8501, vLLM inside on 127.0.0.1:8000
#   docker run --gpus all -p 127.0.0.1:8501:8501 -v ~/.inboxrl:/data \
#     -e INBOXRL_BASE_MODEL=Qwen/Qwen2.5-14B-Instruct -e INBOXRL_MODEL=qwen2.5-14b inboxrl
#   # retrain on new mail (ingest, synthesize, train, evaluate, register if not worse)
#   docker run --gpus all -v ~/.inboxrl:/data -v /path/to/new/mail:/mail:ro \
#     -e INBOXRL_BASE_MODEL=Qwen/Qwen2.5-14B-Instruct inboxrl retrain --inbox /mail
#
# Settings are INBOXRL_* environment variables (see env/config.py and docker/entrypoint.sh).
ARG VLLM_VERSION=0.33.0
FROM vllm/vllm-openai:v${VLLM_VERSION}

ENV INBOXRL_HOME=/data \
    INBOXRL_APP_PORT=8501 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/inboxrl
COPY pyproject.toml README.md ./
COPY app ./app
COPY env ./env
COPY judge ./judge
COPY synth_data ./synth_data
COPY train ./train
COPY docker/entrypoint.sh /usr/local/bin/inboxrl-entrypoint

# Keep the image's CUDA torch and vLLM: install InboxRL with the app, plus the training libraries
# without the CPU torch pin of the `train` extra.
RUN python3 -c "import torch, vllm; print(f'torch=={torch.__version__}\nvllm=={vllm.__version__}')" > /tmp/keep.txt \
 && python3 -m pip install -c /tmp/keep.txt ".[app]" \
      "transformers>=5.0" "trl>=1.16" "peft>=0.21" "accelerate>=1.10" "datasets>=4" "gguf>=0.17" \
 && rm /tmp/keep.txt \
 && inboxrl --help > /dev/null

VOLUME /data
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m \
  CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"
ENTRYPOINT ["inboxrl-entrypoint"]
CMD ["serve"]
