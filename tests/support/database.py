"""Databases on the test server, the logins tests connect as, and rows read back as stored."""

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import SQLModel

from backoffice.core.config import PROJECT_ROOT
from backoffice.core.database import APP_GROUP_ROLE, libpq_url
from backoffice.core.migrations import apply_migrations

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def docker_engine_answers() -> bool:
    """A cheap ping of the local Docker engine (its default socket), closing what it opens."""
    try:
        with socket.socket(socket.AF_UNIX) as engine:
            engine.settimeout(2)
            engine.connect("/var/run/docker.sock")
            engine.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in engine.recv(64)
    except OSError:
        return False


async def admin_execute(server_url: str, statement: str) -> None:
    """One statement on its own connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    connection = await asyncpg.connect(libpq_url(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def with_database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def as_login(url: str, user: str, password: str) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def as_app(url: str, app_login: tuple[str, str]) -> str:
    """`url` (any database of the test server) connecting as the app's login role."""
    return as_login(url, *app_login)


async def create_database(
    server_url: str, name: str, migrations: Path | None = MIGRATIONS_DIR
) -> str:
    """A new database on the server, its schema built by `migrations` (None: left empty)."""
    await admin_execute(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    if migrations is not None:
        await apply_migrations(url, migrations)
    return url


@asynccontextmanager
async def scratch_database(
    server_url: str, prefix: str, migrations: Path | None = MIGRATIONS_DIR
) -> AsyncIterator[str]:
    """A new database on the test server (migrated unless `migrations` is None), dropped
    afterwards whatever the test did to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield await create_database(server_url, name, migrations)
    finally:
        await admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def rolled_back_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own to `url` (not the test's, nor the app's: a script, a psql
    session), inside a transaction whose every write is undone at the end."""
    connection = await asyncpg.connect(libpq_url(url))
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        await transaction.rollback()
        await connection.close()


@asynccontextmanager
async def owner_rights(connection: AsyncConnection) -> AsyncIterator[None]:
    """The owner's rights on the test's connection for a while (what migrations and the
    archive job have), then the app's again; rows stay in the test's transaction."""
    await connection.execute(text("SET LOCAL ROLE NONE"))
    try:
        yield
    finally:
        await connection.execute(text(f"SET LOCAL ROLE {APP_GROUP_ROLE}"))


async def stored[M: SQLModel](
    session: AsyncSession, model: type[M], row_id: int | None
) -> M | None:
    """The row as the database holds it now (not as the session last saw it), or None: what
    a request did, seen from outside the API."""
    (primary_key,) = inspect(model).primary_key
    result = await session.execute(
        select(model).where(primary_key == row_id).execution_options(populate_existing=True)
    )
    return result.scalars().one_or_none()


class CountingDriver:
    """An asyncpg connection that tells a StatementCounter the SQL it runs: what SQLAlchemy's
    event sees of its own statements, for the hot read routes' raw ones."""

    def __init__(self, driver: asyncpg.Connection, counter: "StatementCounter") -> None:
        self._driver = driver
        self._counter = counter

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        self._counter.record(query, args)
        return await self._driver.fetch(query, *args)


class StatementCounter:
    """A `before_cursor_execute` listener keeping the SQL of each statement, savepoint
    bookkeeping left out: for counting the queries a request runs."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.parameters: list[object] = []  # of each statement, as the driver got them

    def __call__(self, *args: object) -> None:
        self.record(str(args[2]), args[3])

    def record(self, statement: str, parameters: object) -> None:
        if not statement.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            self.statements.append(statement)
            self.parameters.append(parameters)
