"""One PostgreSQL per test session; every test inside a transaction that is rolled back.

Where the database comes from, first match wins: TEST_DATABASE_URL; a testcontainers
PostgreSQL when a Docker engine answers; the embedded PostgreSQL under `.data/test-postgres`.
The schema is built by applying `migrations/`, so the migrations are what the tests exercise.
The app under test has the app's database role's rights only (backoffice_app, not the owner's):
a grant the app lacks fails the tests that need it.
"""

import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from itertools import count
from pathlib import Path

import asyncpg
import fastapi.dependencies.models as fastapi_dependency_models
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backoffice.audit.changes import AuditedSession
from backoffice.audit.models import RETENTION_SETTING
from backoffice.auth.bootstrap import DEFAULT_ROLES
from backoffice.auth.models import Role, User, UserRole
from backoffice.auth.repository import RoleRepository
from backoffice.auth.schemas import TokenPair
from backoffice.auth.service import start_session
from backoffice.auth.tokens import hash_password
from backoffice.core.config import PROJECT_ROOT, Environment, Settings
from backoffice.core.database import (
    APP_GROUP_ROLE,
    Database,
    libpq_url,
    sqlalchemy_url,
    start_embedded_postgres,
)
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


def _as_login(url: str, user: str, password: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def app_login(server_url: str, database_url: str) -> AsyncIterator[tuple[str, str]]:
    """(user, password) of a login role of this session's, a member of the app's group role
    (which the migrations created): what a deployed app connects as. The password serves
    servers that ask for one (testcontainers, TEST_DATABASE_URL); the embedded one trusts."""
    user, password = f"backoffice_test_{uuid.uuid4().hex[:12]}", secrets.token_urlsafe(24)
    await _admin(
        server_url, f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {APP_GROUP_ROLE}"
    )
    yield user, password
    await _admin(server_url, f"DROP ROLE {user}")


def as_app(url: str, app_login: tuple[str, str]) -> str:
    """`url` (any database of the test server) connecting as the app's login role."""
    return _as_login(url, *app_login)


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


@asynccontextmanager
async def owner_rights(connection: AsyncConnection) -> AsyncIterator[None]:
    """The owner's rights on the test's connection for a while (what migrations and the
    archive job have), then the app's again; rows stay in the test's transaction."""
    await connection.execute(text("SET LOCAL ROLE NONE"))
    try:
        yield
    finally:
        await connection.execute(text(f"SET LOCAL ROLE {APP_GROUP_ROLE}"))


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
    app.state.database = Database(engine=engine, sessions=sessionmaker, read_sessions=read_sessions)
    return app


def _client(app: FastAPI, token: str | None = None) -> AsyncClient:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


TEST_PASSWORD = "correct horse battery staple"  # test users' password
_user_numbers = count(1)


@lru_cache
def _test_password_hash() -> str:
    # Hashed once: argon2 is slow by design, and most tests only need some user.
    return hash_password(TEST_PASSWORD)


async def create_user(
    session: AsyncSession,
    *,
    email: str | None = None,
    roles: Sequence[str] = (),
    is_superuser: bool = False,
    is_active: bool = True,
) -> User:
    """A stored user whose password is TEST_PASSWORD, with the named roles (created if
    missing, with the default roles' grants)."""
    user = User(
        email=email or f"user{next(_user_numbers)}@example.com",
        full_name="Test User",
        hashed_password=_test_password_hash(),
        is_superuser=is_superuser,
        is_active=is_active,
    )
    session.add(user)
    await session.flush()
    for name in roles:
        role = await RoleRepository(session).get_by_name(name)
        if role is None:
            description, grants = DEFAULT_ROLES[name]
            role = Role(name=name, description=description)
            session.add(role)
            await session.flush()
            assert role.id is not None
            await RoleRepository(session).replace_grants(
                role.id, {str(m): [str(a) for a in actions] for m, actions in grants.items()}
            )
        session.add(UserRole(user_id=user.id, role_id=role.id))  # type: ignore[arg-type]
    await session.commit()
    return user


async def tokens_for(session: AsyncSession, settings: Settings, user: User) -> TokenPair:
    """A real session for `user`, as a login would start it, without the password round."""
    pair = await start_session(session, settings, user)
    await session.commit()
    return pair


@pytest.fixture
async def superuser(session: AsyncSession) -> User:
    return await create_user(session, email="root@example.com", is_superuser=True)


@pytest.fixture
async def anonymous_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with _client(app) as client:
        yield client


@pytest.fixture
async def client(
    app: FastAPI, session: AsyncSession, settings: Settings, superuser: User
) -> AsyncIterator[AsyncClient]:
    """A client signed in as a superuser: for tests about a slice's behaviour, not its RBAC."""
    pair = await tokens_for(session, settings, superuser)
    async with _client(app, pair.access_token) as client:
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
        async with _client(app, pair.access_token) as client:
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


class _StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, *args: object) -> None:
        statement = str(args[2])
        if not statement.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            self.statements.append(statement)


@pytest.fixture
def statements(connection: AsyncConnection) -> Iterator[list[str]]:
    """The SQL of every statement the test's connection runs from now on (the app's requests
    included), savepoint bookkeeping left out: for counting queries."""
    counter = _StatementCounter()
    sync_connection = connection.sync_connection
    assert sync_connection is not None
    event.listen(sync_connection, "before_cursor_execute", counter)
    yield counter.statements
    event.remove(sync_connection, "before_cursor_execute", counter)


@pytest.fixture(scope="session")
def migrations_dir() -> Path:
    return MIGRATIONS_DIR
