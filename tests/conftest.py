"""One PostgreSQL per test session; every test inside a transaction that is rolled back.

Where the database comes from, first match wins: TEST_DATABASE_URL; a testcontainers
PostgreSQL when a Docker engine answers; the embedded PostgreSQL under `.data/test-postgres`.
The schema is built by applying `migrations/`, so the migrations are what the tests exercise.
The app under test has the app's database role's rights only (backoffice_app, not the owner's):
a grant the app lacks fails the tests that need it.
"""

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg
import fastapi.dependencies.models as fastapi_dependency_models
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backoffice.audit.access import AccessLogWriter
from backoffice.audit.changes import AuditedSession
from backoffice.audit.models import RETENTION_SETTING
from backoffice.auth.models import User
from backoffice.core.config import PROJECT_ROOT, Environment, Settings
from backoffice.core.database import (
    APP_GROUP_ROLE,
    Database,
    Driver,
    sqlalchemy_url,
    start_embedded_postgres,
)
from backoffice.core.main import create_app
from tests.support.database import (
    MIGRATIONS_DIR,
    CountingDriver,
    StatementCounter,
    admin_execute,
    as_app,
    docker_engine_answers,
    scratch_database,
)
from tests.support.factories import (
    CUSTOMERS,
    PRODUCTS,
    TASKS,
    CreateCustomer,
    CreateProduct,
    CreateTask,
    SetStatus,
    creator,
    customer_payload,
    product_payload,
    task_payload,
)
from tests.support.http import api_client
from tests.support.users import create_user, tokens_for


class TestEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")
    test_database_url: str | None = None


@pytest.fixture(autouse=True)
def _release_apps() -> Iterator[None]:
    """Let each test's app be garbage-collected. FastAPI memoises how it calls each endpoint
    (`lru_cache`, 4,096 entries) keyed by the endpoint function, and FastAPIOffline's docs
    endpoints close over their app: without this, over a thousand apps stay alive until the
    interpreter exits (gigabytes, and minutes spent freeing them at exit)."""
    yield
    for name in dir(fastapi_dependency_models):
        cached = getattr(fastapi_dependency_models, name)
        if name.endswith("_callable_cached") and hasattr(cached, "cache_clear"):
            cached.cache_clear()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server to create the session's database on."""
    if url := TestEnvironment().test_database_url:
        yield url
    elif docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        yield start_embedded_postgres(PROJECT_ROOT / ".data" / "test-postgres", "postgres")


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database for this session, its schema built by the migrations."""
    async with scratch_database(server_url, "backoffice_test") as url:
        yield url


@pytest.fixture(scope="session")
async def app_login(server_url: str, database_url: str) -> AsyncIterator[tuple[str, str]]:
    """(user, password) of a login role of this session's, a member of the app's group role
    (which the migrations created): what a deployed app connects as. The password serves
    servers that ask for one (testcontainers, TEST_DATABASE_URL); the embedded one trusts."""
    user, password = f"backoffice_test_{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(24)
    await admin_execute(
        server_url, f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {APP_GROUP_ROLE}"
    )
    yield user, password
    await admin_execute(server_url, f"DROP ROLE {user}")


@pytest.fixture(scope="session")
def app_database_url(database_url: str, app_login: tuple[str, str]) -> str:
    """This session's database, as the app's role: no UPDATE, DELETE nor TRUNCATE of the audit
    tables. `database_url` is the owner's (migrations, the archive job)."""
    return as_app(database_url, app_login)


@pytest.fixture(scope="session")
def settings(database_url: str, app_database_url: str) -> Settings:
    return Settings(
        _env_file=None,
        environment=Environment.TEST,
        database_url=app_database_url,
        database_owner_url=database_url,
    )


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The test's connection, inside a transaction rolled back at the end, with the app's
    role's rights only (SET LOCAL ends with the transaction): the app's sessions join it."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(text(f"SET LOCAL ROLE {APP_GROUP_ROLE}"))
        yield connection
        await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    # Each session (the app's and the test's) joins the test transaction through a
    # savepoint: its commit releases the savepoint, its rollback returns to it. Of the app's
    # class: the test's own writes are recorded in the audit trail too.
    return async_sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        sync_session_class=AuditedSession,
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def app(
    settings: Settings,
    engine: AsyncEngine,
    connection: AsyncConnection,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> FastAPI:
    app = create_app(settings)
    # Read sessions (autocommit in production) must not open savepoints of their own: one
    # that outlives a write session in the same request would roll the write back on close.
    read_sessions = async_sessionmaker(
        bind=connection,
        join_transaction_mode="rollback_only",
        expire_on_commit=False,
        sync_session_class=AuditedSession,
    )

    @asynccontextmanager
    async def read_connections() -> AsyncIterator[Driver]:
        # The driver connection under the test's: it sees the test transaction's rows.
        driver = (await connection.get_raw_connection()).driver_connection
        assert isinstance(driver, asyncpg.Connection)
        counter: StatementCounter | None = connection.info.get(StatementCounter)
        yield driver if counter is None else cast(Driver, CountingDriver(driver, counter))

    app.state.database = Database(
        engine=engine,
        sessions=sessionmaker,
        read_sessions=read_sessions,
        read_connections=read_connections,
    )
    return app


@pytest.fixture
async def writer(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AccessLogWriter]:
    """The app's access-log writer on the test transaction, flushed by hand."""
    writer = AccessLogWriter(sessionmaker, max_queue=100, batch_size=10, flush_interval_s=60)
    app.state.access_log_writer = writer
    yield writer
    await writer.stop()


@pytest.fixture
async def superuser(session: AsyncSession) -> User:
    return await create_user(session, email="root@example.com", is_superuser=True)


@pytest.fixture
async def anonymous_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with api_client(app) as client:
        yield client


@pytest.fixture
async def client(
    app: FastAPI, session: AsyncSession, settings: Settings, superuser: User
) -> AsyncIterator[AsyncClient]:
    """A client signed in as a superuser: for tests about a slice's behaviour, not its RBAC."""
    pair = await tokens_for(session, settings, superuser)
    async with api_client(app, pair.access_token) as client:
        yield client


@pytest.fixture
async def committed_client(
    settings: Settings, app_database_url: str, engine: AsyncEngine
) -> AsyncIterator[AsyncClient]:
    """A client on an app with a real connection pool, connected as the app's login role:
    requests run concurrently and commit. Every table is emptied afterwards (by the owner), so
    other tests never see the rows."""
    app = create_app(settings)
    database = Database.connect(app_database_url, settings, session_class=AuditedSession)
    app.state.database = database
    try:
        async with database.sessions() as session:
            user = await create_user(session, email="committed@example.com", is_superuser=True)
            pair = await tokens_for(session, settings, user)
        async with api_client(app, pair.access_token) as client:
            yield client
    finally:
        await database.dispose()
        async with engine.begin() as connection:
            # Only the owner may, and only as the retention job, TRUNCATE the audit tables.
            await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))
            tables = await connection.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            names = ", ".join(f'"{name}"' for name in tables)
            if names:
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def statements(connection: AsyncConnection) -> AsyncIterator[list[str]]:
    """The SQL of every statement the test's connection runs from now on (the app's requests
    included), savepoint bookkeeping left out: for counting queries. SQLAlchemy's statements
    are seen by its event; the hot read routes' (core.database.ReadConnection), which run on
    the driver connection underneath, by the app fixture's CountingDriver."""
    counter = StatementCounter()
    sync_connection = connection.sync_connection
    assert sync_connection is not None
    event.listen(sync_connection, "before_cursor_execute", counter)
    connection.info[StatementCounter] = counter
    yield counter.statements
    del connection.info[StatementCounter]
    event.remove(sync_connection, "before_cursor_execute", counter)


@pytest.fixture(scope="session")
def migrations_dir() -> Path:
    return MIGRATIONS_DIR


# --- the business resources, created through the API as the superuser `client` ------------


@pytest.fixture
def create_product(client: AsyncClient) -> CreateProduct:
    return creator(client, PRODUCTS, product_payload)


@pytest.fixture
def create_customer(client: AsyncClient) -> CreateCustomer:
    """Create a customer through the API (as the superuser `client`) and return its body."""
    return creator(client, CUSTOMERS, customer_payload)


@pytest.fixture
def create_task(client: AsyncClient) -> CreateTask:
    """Create a task through the API (as the superuser `client`) and return its body."""
    return creator(client, TASKS, task_payload)


@pytest.fixture
def set_status(client: AsyncClient) -> SetStatus:
    """PATCH a task's status, asserting it is accepted; the task's new body."""

    async def patch(task: dict[str, Any], status: str) -> dict[str, Any]:
        response = await client.patch(f"{TASKS}/{task['id']}", json={"status": status})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return patch
