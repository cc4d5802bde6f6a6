"""The API with authentication switched off, for the bench (`scripts/bench/`) only: never
deploy it.

`create_app_without_auth()` is the real `create_app()` with `get_current_principal`
overridden to return a fixed superuser, so no token is decoded and no user is loaded: the
difference between it and the real API, on the same route, is what authentication costs.
Everything else (routers, middleware, settings, the database pool) is the production app's.

It lives in scripts/, outside the `backoffice` package, so nothing in src/ can import it, and
it refuses to build unless BENCH_AUTH_OFF=1 is set (servers.py sets it for its own server),
which serves it the way `python -m backoffice serve` serves the API:

    BENCH_AUTH_OFF=1 ENVIRONMENT=production DATABASE_URL=... SECRET_KEY=... METRICS_TOKEN=... \\
        uv run uvicorn --factory scripts.bench.auth_off:create_app_without_auth \\
        --workers 2 --loop uvloop --http httptools --no-access-log ...
"""

import os
import uuid
from datetime import UTC, datetime

from fastapi import FastAPI, Request

from backoffice.auth.dependencies import get_current_principal
from backoffice.auth.service import Principal
from backoffice.auth.tokens import AccessClaims
from backoffice.core.main import create_app

OPT_IN_ENV = "BENCH_AUTH_OFF"

BENCH_PRINCIPAL = Principal(
    id=0,
    email="bench-auth-off@example.com",
    full_name="Benchmark (auth off)",
    is_superuser=True,
    permissions=frozenset(),
    claims=AccessClaims(
        user_id=0,
        jti="bench-auth-off",
        session_id=uuid.UUID(int=0),
        token_version=0,
        expires_at=datetime.max.replace(tzinfo=UTC),
    ),
)


# `async`: FastAPI runs a plain `def` dependency in a worker thread, which would make the
# auth-off server pay a thread hop the real dependency does not.
async def _bench_principal(request: Request) -> Principal:
    request.state.user_id = BENCH_PRINCIPAL.id  # as the real dependency does
    request.state.principal = BENCH_PRINCIPAL
    return BENCH_PRINCIPAL


def create_app_without_auth() -> FastAPI:
    if os.environ.get(OPT_IN_ENV) != "1":
        raise RuntimeError(
            f"scripts.bench.auth_off serves the API with authentication OFF; it is for the "
            f"bench only. Set {OPT_IN_ENV}=1 if that is really what you want."
        )
    app = create_app()
    app.dependency_overrides[get_current_principal] = _bench_principal
    return app
