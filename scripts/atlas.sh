#!/usr/bin/env bash
# Run the Atlas CLI for this project, wherever Atlas can run. The `task migrate-*` tasks call it.
#
#   scripts/atlas.sh migrate status --env local
#
# 1. `atlas` on PATH: runs it here. Commands that act on a database get DATABASE_URL: the
#    owner's URL (DATABASE_OWNER_URL, else DATABASE_URL, from the environment or .env), else the
#    embedded PostgreSQL as its superuser, which stays up for the length of the command. `migrate diff` / `migrate down` also need a "dev database": the
#    ATLAS_DEV_URL variable, else Atlas's docker://postgres/18 (needs a Docker engine), else an
#    `atlas_dev` database in the embedded PostgreSQL.
# 2. Else, with docker compose and a Docker engine: runs the arigaio/atlas image as the compose
#    `migrate` service with `--env docker` (see atlas.hcl), against the compose `db` service.
#    Containers cannot reach the embedded PostgreSQL or a localhost DATABASE_URL.
# 3. Else: exits 1 and says how to install Atlas.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -eq 0 ]; then
    echo "usage: scripts/atlas.sh <atlas arguments>   (e.g. migrate status --env local)" >&2
    exit 2
fi

# What does the command need? A target database (url) and/or a dev database (dev).
needs_url=1
needs_dev=0
if [ "$1" = migrate ]; then
    case "${2:-}" in
        diff | lint | validate | checkpoint) needs_url=0 needs_dev=1 ;;
        down) needs_dev=1 ;;
        hash | new | edit | rm | ls) needs_url=0 ;;
    esac
fi

docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# --- 1. the Atlas CLI ----------------------------------------------------------------------
if command -v atlas >/dev/null 2>&1; then
    dev_from_embedded=0
    if [ "$needs_dev" = 1 ] && [ -z "${ATLAS_DEV_URL:-}" ] && ! docker_engine; then
        dev_from_embedded=1
    fi
    if [ "$needs_url" = 0 ] && [ "$dev_from_embedded" = 0 ]; then
        exec atlas "$@"
    fi
    # Python resolves the URLs the way the app does, and keeps the embedded server (if that
    # is the one) running until Atlas exits.
    exec uv run --frozen python -c '
import os
import subprocess
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from backoffice.core.config import get_settings
from backoffice.core.database import libpq_url, owner_database_url, start_embedded_postgres


def with_defaults(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in params.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


needs_url, dev_from_embedded, command = sys.argv[1] == "1", sys.argv[2] == "1", sys.argv[3:]
settings = get_settings()
env = dict(os.environ)
if needs_url:  # as the owner: migrations change the schema
    if settings.database_owner_url or settings.database_url:  # never through a pooler
        env["DATABASE_URL"] = libpq_url(owner_database_url(settings))
    else:  # the embedded server: unix socket only, no TLS
        url = owner_database_url(settings)
        env["DATABASE_URL"] = with_defaults(libpq_url(url), sslmode="disable")
        print(f"atlas.sh: using the embedded PostgreSQL in {settings.embedded_db_dir}", file=sys.stderr)
if dev_from_embedded:
    dev = start_embedded_postgres(settings.embedded_db_dir, "atlas_dev")
    env["ATLAS_DEV_URL"] = with_defaults(libpq_url(dev), search_path="public", sslmode="disable")
    print("atlas.sh: dev database: atlas_dev in the embedded PostgreSQL", file=sys.stderr)
try:
    sys.exit(subprocess.call(command, env=env))
except KeyboardInterrupt:
    sys.exit(130)
' "$needs_url" "$dev_from_embedded" atlas "$@"
fi

# --- 2. the arigaio/atlas image through docker compose ---------------------------------------
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && docker_engine; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && ! grep -qs '^POSTGRES_PASSWORD=' .env; then
        echo "atlas.sh: docker compose needs POSTGRES_PASSWORD: \`cp .env.example .env\` (or export it)." >&2
        exit 1
    fi
    args=()
    previous=
    for arg in "$@"; do
        case "$previous $arg" in
            "--env local") arg=docker ;;
            *" --env=local") arg=--env=docker ;;
        esac
        args+=("$arg")
        previous=$arg
    done
    echo "atlas.sh: no Atlas CLI; running the arigaio/atlas image with docker compose," \
        "against the compose \`db\` service (env \"docker\" in atlas.hcl)." >&2
    if [ "$1" = migrate ] && [ "${2:-}" = diff ]; then
        # The image has no Python: write the models' DDL where env "docker" reads it.
        mkdir -p .data/atlas
        uv run --frozen python scripts/load_models.py >.data/atlas/schema.sql.tmp
        mv .data/atlas/schema.sql.tmp .data/atlas/schema.sql
    fi
    if [ "$needs_dev" = 1 ]; then
        docker compose up --detach --wait atlas-dev
    fi
    run_options=(--rm --volume "$PWD:/workspace" --workdir /workspace
        --user "$(id -u):$(id -g)" --env HOME=/tmp)
    if [ "$needs_url" = 0 ]; then
        run_options+=(--no-deps)
    fi
    exec docker compose run "${run_options[@]}" migrate "${args[@]}"
fi

# --- 3. nothing to run Atlas with ------------------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
    why="there is no docker command"
elif ! docker compose version >/dev/null 2>&1; then
    why="docker has no compose plugin"
else
    why="no Docker engine answers \`docker info\`"
fi
cat >&2 <<EOF
error: cannot run \`atlas $*\`: the Atlas CLI is not installed, and the
arigaio/atlas image cannot stand in for it ($why).

Install Atlas (https://atlasgo.io/getting-started), then run this again:
    curl -sSf https://atlasgo.sh | sh       # Linux, macOS
    brew install ariga/tap/atlas            # Homebrew
or start a Docker engine with the compose plugin.

No Atlas needed for these:
    task migrate-builtin    apply pending migrations (the project's own Atlas-compatible applier)
    task migrate-hash       rewrite migrations/atlas.sum
EOF
exit 1
