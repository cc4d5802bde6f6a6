"""The app connects as a role that cannot rewrite the audit trail: the embedded database gives
it one, and production refuses to start as one that could (the owner, a superuser)."""

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import asyncpg
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine

from backoffice.audit.changes import AuditedSession
from backoffice.audit.models import APPEND_ONLY_TABLES
from backoffice.core.config import PROJECT_ROOT, Environment, Settings
from backoffice.core.database import (
    DatabaseRoleError,
    app_role_problems,
    check_app_role,
    database_lifespan,
    libpq_url,
    prepare_embedded_database,
    sqlalchemy_url,
    start_embedded_postgres,
)

EMBEDDED_TEST_DIR = PROJECT_ROOT / ".data" / "test-postgres"


def _settings(database_url: str, environment: Environment) -> Settings:
    key = SecretStr(secrets.token_urlsafe(48))  # made per run: the repo scan flags literals
    return Settings(
        _env_file=None,
        environment=environment,
        database_url=database_url,
        secret_key=key,
        first_superuser_password=SecretStr(uuid.uuid4().hex),
        metrics_token=SecretStr(uuid.uuid4().hex),
    )


def _database_lifespan(app: FastAPI) -> AbstractAsyncContextManager[None]:
    """The database's part of the app's lifespan, as core/main.py plugs the audit slice in."""
    return database_lifespan(app, session_class=AuditedSession, audit_tables=APPEND_ONLY_TABLES)


async def _problems(url: str) -> list[str]:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        return await app_role_problems(engine, APPEND_ONLY_TABLES)
    finally:
        await engine.dispose()


@pytest.fixture
async def embedded_database() -> AsyncIterator[str]:
    """The name of a fresh database on the embedded server, dropped afterwards."""
    name = f"embedded_{uuid.uuid4().hex[:12]}"
    yield name
    server = start_embedded_postgres(EMBEDDED_TEST_DIR, "postgres")
    connection = await asyncpg.connect(libpq_url(server))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def test_the_embedded_database_gives_the_app_a_role_that_cannot_rewrite_the_audit_trail(
    embedded_database: str,
) -> None:
    settings = Settings(_env_file=None, embedded_db_dir=EMBEDDED_TEST_DIR)

    url = await prepare_embedded_database(settings, embedded_database)

    connection = await asyncpg.connect(libpq_url(url))
    try:
        superuser = await connection.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        owned = await connection.fetchval(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND pg_has_role(relowner, 'MEMBER')"
        )
        for table in APPEND_ONLY_TABLES:
            await connection.execute(f"SELECT count(*) FROM {table}")  # noqa: S608  # constants
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(f"DELETE FROM {table}")  # noqa: S608  # constants
    finally:
        await connection.close()
    assert superuser is False
    assert owned == 0
    assert await _problems(url) == []
    # Idempotent: a second start finds the role and the migrations in place.
    assert await prepare_embedded_database(settings, embedded_database) == url


async def test_the_owner_is_reported_as_able_to_rewrite_the_audit_trail(
    database_url: str, app_database_url: str
) -> None:
    # The tests' owner is the server's superuser (embedded, testcontainers), or at least the
    # owner of the tables (TEST_DATABASE_URL).
    assert await _problems(database_url) != []
    assert await _problems(app_database_url) == []


async def test_production_refuses_to_start_as_a_role_that_can_rewrite_the_audit_trail(
    database_url: str,
) -> None:
    app = FastAPI()
    app.state.settings = _settings(database_url, Environment.PRODUCTION)

    with pytest.raises(DatabaseRoleError, match=r"superuser.*DATABASE_OWNER_URL"):
        async with _database_lifespan(app):
            pass


async def test_production_starts_as_the_app_role(app_database_url: str) -> None:
    app = FastAPI()
    app.state.settings = _settings(app_database_url, Environment.PRODUCTION)

    async with _database_lifespan(app):
        assert (
            await check_app_role(app.state.database.engine, app.state.settings, APPEND_ONLY_TABLES)
            == []
        )


async def test_development_starts_as_the_owner_but_warns(database_url: str) -> None:
    """Warns: the problems it returns are what it logs (structlog's own capture cannot see
    loggers that an earlier test's configuration cached)."""
    app = FastAPI()
    app.state.settings = _settings(database_url, Environment.DEVELOPMENT)

    async with _database_lifespan(app):
        assert (
            await check_app_role(app.state.database.engine, app.state.settings, APPEND_ONLY_TABLES)
            != []
        )
