"""One PostgreSQL per test session; every test inside a transaction that is rolled back.

Where the database comes from, first match wins: TEST_DATABASE_URL; a testcontainers
PostgreSQL when a Docker engine answers; the embedded PostgreSQL under `.data/test-postgres`.
The schema is built by applying `migrations/`, so the migrations are what the tests exercise.
"""

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backoffice.core.config import PROJECT_ROOT, Environment, Settings
from backoffice.core.database import Database, libpq_url, sqlalchemy_url, start_embedded_postgres
from backoffice.core.main import create_app
from backoffice.core.migrations import apply_migrations

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


class TestEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")
    test_database_url: str | None = None


def _docker_engine_answers() -> bool:
    """A cheap ping of the local Docker engine (its default socket), closing what it opens."""
    try:
        with socket.socket(socket.AF_UNIX) as engine:
            engine.settimeout(2)
            engine.connect("/var/run/docker.sock")
            engine.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in engine.recv(64)
    except OSError:
        return False


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server to create the session's database on."""
    if url := TestEnvironment().test_database_url:
        yield url
    elif _docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        yield start_embedded_postgres(PROJECT_ROOT / ".data" / "test-postgres", "postgres")


async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(libpq_url(server_url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _with_database(server_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database for this session, its schema built by the migrations."""
    name = f"backoffice_test_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    await apply_migrations(url, MIGRATIONS_DIR)
    yield url
    await _admin(server_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(_env_file=None, environment=Environment.TEST, database_url=database_url)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The test's connection, inside a transaction rolled back at the end."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    # Each session (the app's and the test's) joins the test transaction through a
    # savepoint: its commit releases the savepoint, its rollback returns to it.
    return async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def app(
    settings: Settings, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> FastAPI:
    app = create_app(settings)
    app.state.database = Database(engine=engine, sessions=sessionmaker, read_sessions=sessionmaker)
    return app


def _client(app: FastAPI) -> AsyncClient:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    return AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with _client(app) as client:
        yield client


@pytest.fixture
async def committed_client(settings: Settings, database_url: str) -> AsyncIterator[AsyncClient]:
    """A client on an app with a real connection pool: requests run concurrently and commit.
    Every business table is emptied afterwards, so other tests never see the rows."""
    app = create_app(settings)
    database = Database.connect(database_url, settings)
    app.state.database = database
    try:
        async with _client(app) as client:
            yield client
    finally:
        async with database.engine.begin() as connection:
            tables = await connection.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            names = ", ".join(f'"{name}"' for name in tables)
            if names:
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        await database.dispose()


@pytest.fixture(scope="session")
def migrations_dir() -> Path:
    return MIGRATIONS_DIR
