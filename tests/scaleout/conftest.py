"""A deployment of several nodes in miniature: a PostgreSQL of the tests' own, migrated, with
the app's login role; a real PgBouncer in transaction mode in front of it; a redis-server."""

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from backoffice.core.database import EMBEDDED_APP_LOGIN
from tests.own_postgres import OwnPostgres, own_postgres
from tests.support.database import admin_execute
from tests.support.services import PgBouncer, pgbouncer, redis_server

# Server connections per database and user: fewer than the nodes' clients, so that every
# node's transactions take turns on the same few server connections.
BOUNCER_POOL_SIZE = 6


@dataclass(frozen=True, slots=True)
class Deployment:
    postgres: OwnPostgres
    bouncer: PgBouncer
    owner_url: str  # direct, the tables' owner
    direct_url: str  # direct, the app's login role
    pooled_url: str  # through PgBouncer, the app's login role


@pytest.fixture(scope="session")
async def deployment() -> AsyncIterator[Deployment]:
    password = secrets.token_urlsafe(24)
    with own_postgres() as postgres:
        owner_url, direct_url = await postgres.migrated_database()
        await admin_execute(owner_url, f"ALTER ROLE {EMBEDDED_APP_LOGIN} PASSWORD '{password}'")
        with pgbouncer(
            postgres.port, {EMBEDDED_APP_LOGIN: password}, pool_size=BOUNCER_POOL_SIZE
        ) as bouncer:
            yield Deployment(
                postgres,
                bouncer,
                owner_url,
                direct_url,
                bouncer.url(EMBEDDED_APP_LOGIN, password, "backoffice"),
            )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url
