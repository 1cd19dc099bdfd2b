# syntax=docker/dockerfile:1
#
# One image for every component of the Gate4 Platform; the command picks the component:
#
#   docker run IMAGE                                          # the gateway (default command)
#   docker run IMAGE python -m services.risk                  # audit, risk, execution, conversation
#   docker run IMAGE python -m services.runtime.storage.migrations   # the migration step
#   docker run IMAGE gate4 --help                             # the CLI
#
# The build stage installs the locked dependencies (uv.lock, --frozen) and the project itself
# as a regular (non-editable) package into /app/.venv; the final stage copies only that venv
# onto the same slim Python base, so it carries no uv, compiler or source tree. See
# deploy/README.md for building, running and probing it.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# The dependencies first, as their own layer: it changes only when uv.lock does.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project, built as a wheel and installed with its package data.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="gate4-platform" \
      org.opencontainers.image.description="Gate4 Platform: gateway, services and the gate4 CLI"

# The uid/gid the Kubernetes manifests run as (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 gate4 \
    && useradd --system --uid 10001 --gid gate4 --no-create-home \
        --home-dir /var/lib/gate4 --shell /usr/sbin/nologin gate4 \
    && install --directory --owner gate4 --group gate4 --mode 0750 /var/lib/gate4

# Root-owned and read-only to the process: the code cannot be changed at run time.
COPY --from=build /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATE4_VAR_DIR=/var/lib/gate4 \
    GATE4_GATEWAY_HOST=0.0.0.0

# `python -m` puts the working directory first on sys.path: a root-owned one holding no code.
WORKDIR /app
USER 10001:10001

# The gateway's HTTP port; the services listen where GATE4_<NAME>_ADDR says (50051-50054).
EXPOSE 8080

# Liveness and readiness are the orchestrator's: HTTP /healthz and /readyz on the gateway,
# the gRPC health service on every service port (deploy/k8s). One HEALTHCHECK could not
# fit every component, so the image defines none.
HEALTHCHECK NONE

CMD ["python", "-m", "gateway"]
