"""Engine, sessions and the embedded PostgreSQL that a fresh clone runs on."""

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from fastapi import Depends, FastAPI, Request
from sqlalchemy import ClauseElement, Connection, Dialect, event, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.cache_key import CacheKey
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import LRUCache

from backoffice.core import embedded
from backoffice.core.config import Settings
from backoffice.core.errors import (
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    DatabaseUnreachableError,
    DomainError,
    database_unavailable,
    describe_error,
)
from backoffice.core.pagination import bind_cursor_signer

EMBEDDED_DATABASE_NAME = "backoffice"
# The group role the migrations grant the application's rights to
# (migrations/20261202010000_app_role.sql), and the login role, a member of it, that the app
# uses on the embedded server (trust authentication on its unix socket: no password).
APP_GROUP_ROLE = "backoffice_app"
EMBEDDED_APP_LOGIN = "backoffice_api"
# How long the start-up check of the app's role may wait for the database.
_ROLE_CHECK_TIMEOUT_S = 10
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

log = structlog.get_logger(__name__)

# An asyncpg connection: one of a pool (a proxy), or one of its own.
type Driver = asyncpg.Connection | PoolConnectionProxy


class EmbeddedDatabaseError(RuntimeError):
    """The embedded PostgreSQL could not be started; the message says what to do."""


def start_embedded_postgres(
    data_dir: Path, database: str = EMBEDDED_DATABASE_NAME, *, keep_running: bool = False
) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir` and return a libpq URL to
    `database`, creating it on first use. The last process to leave stops it (core/embedded.py),
    unless `keep_running`. Blocking: call it from a thread in async code."""
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = embedded.join(data_dir, keep_running=keep_running)
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


def with_user(url: str, user: str) -> str:
    """`url` connecting as `user`, with no password (the embedded server trusts its socket)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def owner_database_url(settings: Settings) -> str:
    """Where migrations and the archive job connect: DATABASE_OWNER_URL, else DATABASE_URL
    (one role for everything, which production refuses at start-up; DATABASE_DIRECT_URL in
    transaction mode, as both hold a session-level advisory lock across statements), else the
    embedded server as its superuser (starting it if needed). Blocking."""
    if settings.database_owner_url:
        return settings.database_owner_url
    if settings.transaction_pooled and settings.database_direct_url:
        return settings.database_direct_url
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(
        settings.embedded_db_dir, keep_running=settings.embedded_db_keep_running
    )


async def ensure_login_role(owner_url: str, login: str) -> None:
    """Create the login role `login`, a member of APP_GROUP_ROLE, unless it exists. Roles are
    server-wide: another database of the same server may have created it already."""
    if not _IDENTIFIER.fullmatch(login):
        raise ValueError(f"unsafe role name {login!r}")
    connection = await asyncpg.connect(libpq_url(owner_url))
    try:
        await connection.execute(f"""
            DO $$
            BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN
                CREATE ROLE "{login}" LOGIN;
              END IF;
            EXCEPTION
              WHEN duplicate_object OR unique_violation THEN NULL;
            END
            $$;
            GRANT "{APP_GROUP_ROLE}" TO "{login}";
        """)
    finally:
        await connection.close()


async def prepare_embedded_database(
    settings: Settings, database: str = EMBEDDED_DATABASE_NAME
) -> str:
    """Start the embedded PostgreSQL, migrate `database` as the server's superuser (its owner),
    make sure the app's login role exists, and return the URL the app connects with: as that
    role, which cannot rewrite the audit trail."""
    from backoffice.core.migrations import apply_migrations  # noqa: PLC0415  # migrations import this module

    owner_url = await asyncio.to_thread(
        start_embedded_postgres,
        settings.embedded_db_dir,
        database,
        keep_running=settings.embedded_db_keep_running,
    )
    await apply_migrations(owner_url, settings.migrations_dir)
    await ensure_login_role(owner_url, EMBEDDED_APP_LOGIN)
    return with_user(owner_url, EMBEDDED_APP_LOGIN)


async def app_database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded database, started, migrated and given the
    app's login role (prepare_embedded_database)."""
    if settings.database_url:
        return settings.database_url
    return await prepare_embedded_database(settings)


class DatabaseRoleError(RuntimeError):
    """The app's database role could rewrite the audit trail; production refuses to start."""


_ROLE_CHECK = text("""
    SELECT c.relname::text AS table_name,
           pg_has_role(c.relowner, 'MEMBER') AS owner,
           has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE')
             OR has_table_privilege(c.oid, 'TRUNCATE') AS rewrites
    FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND (c.relname = ANY(:tables) OR c.oid IN (
      -- and their partitions, if they are partitioned: each has rights of its own
      SELECT inh.inhrelid FROM pg_inherits inh JOIN pg_class parent ON parent.oid = inh.inhparent
      WHERE parent.relnamespace = 'public'::regnamespace AND parent.relname = ANY(:tables)))
    ORDER BY 1
""")


async def app_role_problems(engine: AsyncEngine, audit_tables: Sequence[str]) -> list[str]:
    """What the role `engine` connects as may do to the audit tables (append-only: named by
    the audit slice, through core/main.py) that only the owner should: nothing, for a member of
    APP_GROUP_ROLE."""
    async with engine.connect() as connection:
        role, superuser = (
            await connection.execute(
                text("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
        rows = (await connection.execute(_ROLE_CHECK, {"tables": list(audit_tables)})).all()
    if superuser:  # may do anything, to any table
        return [f"role {role} is a superuser"]
    problems = [f"role {role} owns audit table {row.table_name}" for row in rows if row.owner]
    problems += [
        f"role {role} may UPDATE, DELETE or TRUNCATE audit table {row.table_name}"
        for row in rows
        if row.rewrites and not row.owner
    ]
    return problems


async def check_app_role(
    engine: AsyncEngine, settings: Settings, audit_tables: Sequence[str]
) -> list[str]:
    """Refuse to start in production (warn elsewhere, and return the problems) when the app's
    role could rewrite the audit trail. A database that does not answer is not a reason to stay
    down: requests get 503s until it returns, so the check is skipped with a warning."""
    try:
        async with asyncio.timeout(_ROLE_CHECK_TIMEOUT_S):
            problems = await app_role_problems(engine, audit_tables)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("database.role_check_skipped", error=describe_error(exc))
        return []
    if not problems:
        return []
    advice = (
        f"DATABASE_URL must connect as a login role that is a member of {APP_GROUP_ROLE} and "
        "owns nothing; migrations and the archive job use DATABASE_OWNER_URL "
        '(docs/AUDIT_GUIDE.md, "Database roles")'
    )
    if settings.is_production:
        raise DatabaseRoleError(f"{'; '.join(problems)}. {advice}")
    log.warning("database.app_role_can_rewrite_audit_trail", problems=problems, advice=advice)
    return problems


# What every transaction of the app runs under (session_settings gives their values).
SESSION_SETTINGS = (
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "backoffice.audit",  # read by the audit slice's data-change trigger: "off" records nothing
)


def session_settings(settings: Settings) -> dict[str, str]:
    values = (
        settings.db_statement_timeout_ms,
        settings.db_lock_timeout_ms,
        settings.db_idle_in_transaction_timeout_ms,
        "on" if settings.audit_data_enabled else "off",
    )
    return dict(zip(SESSION_SETTINGS, map(str, values), strict=True))


def _server_settings(settings: Settings) -> dict[str, str]:
    """The start-up packet's settings. PgBouncer forwards only the few it tracks per client
    (these two among them) and refuses a connection that names any other, so in transaction
    mode the session settings are set per transaction instead (_set_session_settings)."""
    forwarded = {"application_name": settings.project_name, "timezone": "UTC"}
    if settings.transaction_pooled:
        return forwarded
    return forwarded | session_settings(settings)


def _unnamed_statement() -> str:
    return ""


def _driver_arguments(settings: Settings) -> dict[str, Any]:
    """Prepared statements that never outlive their transaction, behind a transaction pooler
    (the next transaction may run on another server connection). asyncpg with its statement
    cache off prepares the unnamed statement and parses it again in the very message batch
    that binds and runs it, so statement and execution always meet on one server connection,
    in a transaction or not. SQLAlchemy's cache off, and an empty name rather than the unique
    names its documentation suggests: a named statement stays behind on the server connection
    (a leak on every one of them), and asyncpg closes it later with a Sync of its own, between
    a prepare and its execution, which outside a transaction (the autocommit reads) hands the
    execution to another server connection: "prepared statement ... does not exist"."""
    if not settings.transaction_pooled:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unnamed_statement,
    }


_SET_SESSION_SETTINGS = "SELECT " + ", ".join(
    f"set_config('{name}', ${index}, true)" for index, name in enumerate(SESSION_SETTINGS, 1)
)


def _set_session_settings(settings: Settings) -> Callable[[Connection], None]:
    """The engine's `begin` hook in transaction mode: the session settings, local to the
    transaction that starts, as its first statement. A server connection serves many clients'
    transactions in turn, so a setting made for the session would reach strangers, and one
    made in the start-up packet is refused. Reads in autocommit get no transaction: their
    statements are bounded by the driver's own time-out (DB_STATEMENT_TIMEOUT_MS + 1 s), which
    cancels them on the server."""
    values = tuple(session_settings(settings).values())

    def set_session_settings(connection: Connection) -> None:
        dbapi_connection: Any = connection.connection.dbapi_connection
        if dbapi_connection.autocommit:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_SET_SESSION_SETTINGS, values)
        except Exception as exc:  # noqa: BLE001  # always re-raised, wrapped, by the call below
            # As when SQLAlchemy's own BEGIN fails (this hook runs outside its guard): wrapped,
            # and seen by the handle_error hooks, so an outage is answered as one (503).
            connection._handle_dbapi_exception(exc, _SET_SESSION_SETTINGS, values, cursor, None)
        finally:
            cursor.close()

    return set_session_settings


def _create_engine(
    url: str,
    settings: Settings,
    *,
    connect_timeout_s: float,
    command_timeout_s: float | None,
    **pool: Any,
) -> AsyncEngine:
    """An engine whose waits are all bounded (a new connection, a free one from the pool, a
    statement), whose pool never hands out a connection the server has closed, and whose
    failures to connect carry one type (DatabaseUnreachableError) for the error mapper."""
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_pre_ping=settings.db_pool_pre_ping,
        # A failed statement's message must not carry its parameters into a log line: they
        # are the clients' data (emails, names) and our secrets' hashes.
        hide_parameters=True,
        connect_args={
            "timeout": connect_timeout_s,
            "command_timeout": command_timeout_s,
            "server_settings": _server_settings(settings),
            **_driver_arguments(settings),
        },
        **pool,
    )
    if settings.transaction_pooled:
        event.listen(engine.sync_engine, "begin", _set_session_settings(settings))
    event.listen(engine.sync_engine, "do_connect", _connect_or_unreachable)
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    event.listen(engine.sync_engine, "handle_error", _discard_timed_out_connection)
    return engine


def _connect_or_unreachable(
    dialect: Dialect, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:  # refused, no socket, timed out (TimeoutError is an OSError)
        raise DatabaseUnreachableError(type(exc).__name__) from exc


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection whose server went away while it sat idle (a restart, a failover)
    is already closed on our side: asyncpg saw the socket close. Refusing it here makes the
    pool discard it and open a fresh one, so no request pays for the outage after it ended."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("closed by the server while idle in the pool")


def _discard_timed_out_connection(context: ExceptionContext) -> None:
    """A statement the server did not answer within its bound leaves the connection in an
    unknown state (the server may be frozen, or still working): it is thrown away, and the
    rest of the pool left alone. Cut at once: SQLAlchemy would first try a polite close,
    which a silent server makes wait two seconds more."""
    if not isinstance(context.original_exception, TimeoutError):
        return
    context.is_disconnect = True
    context.invalidate_pool_on_disconnect = False
    if context.connection is not None:
        driver: Any = context.connection.connection.driver_connection  # asyncpg's
        driver.terminate()


@dataclass(slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]
    # Driver connections for the hot read routes (get_read_connection): ReadPool's, or in
    # tests the test transaction's own.
    read_connections: Callable[[], AbstractAsyncContextManager[Driver]]
    # /health/ready's own single connection: a pool busy with requests must not make the node
    # look dead, and a dead database must not make the probe wait for the pool's time-out.
    probe: AsyncEngine | None = None
    read_pool: "ReadPool | None" = None

    @classmethod
    def connect(
        cls, url: str, settings: Settings, *, session_class: type[Session] = Session
    ) -> "Database":
        """`session_class` is the sync Session under every AsyncSession of both makers: the
        hook a slice's session event listeners hang on (the audit trail's AuditedSession,
        which core/main.py, the commands and the scripts pass). A plain Session's changes are
        recorded too, with no actor."""
        statement_timeout_s = settings.db_statement_timeout_ms / 1000
        engine = _create_engine(
            url,
            settings,
            connect_timeout_s=settings.db_connect_timeout_ms / 1000,
            # The server cancels a statement at statement_timeout; this bound is for a server
            # that cannot answer at all (frozen, or a network that drops packets).
            command_timeout_s=statement_timeout_s + 1 if statement_timeout_s else None,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_ms / 1000,
        )
        probe_timeout_s = settings.health_timeout_ms / 1000
        probe = _create_engine(
            url,
            settings,
            connect_timeout_s=probe_timeout_s,
            command_timeout_s=probe_timeout_s,
            pool_size=1,
            max_overflow=0,
            pool_timeout=probe_timeout_s,
        )
        # Reads run one statement each: autocommit spares the BEGIN and COMMIT round trips.
        read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        read_pool = ReadPool(url, settings)
        return cls(
            engine=engine,
            sessions=async_sessionmaker(
                engine, expire_on_commit=False, sync_session_class=session_class
            ),
            read_sessions=async_sessionmaker(
                read_engine, expire_on_commit=False, sync_session_class=session_class
            ),
            read_connections=read_pool.connection,
            probe=probe,
            read_pool=read_pool,
        )

    async def ping(self) -> None:
        """One round trip to the database, on the probe's connection."""
        async with (self.probe or self.engine).connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.probe is not None:
            await self.probe.dispose()
        if self.read_pool is not None:
            await self.read_pool.close()


def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


# The request-state key of a hook a middleware may set: awaited with the request's session
# just before its COMMIT, so what the hook writes commits with the route's changes or not at
# all (the idempotency slice marks its claimed key applied). A hook that raises rolls back.
BEFORE_COMMIT: Final = "before_commit"
type BeforeCommit = Callable[[AsyncSession], Awaitable[None]]


async def _before_commit(request: Request, session: AsyncSession) -> None:
    hook: BeforeCommit | None = request.scope.get("state", {}).get(BEFORE_COMMIT)
    if hook is not None:
        await hook(session)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route succeeds, rolled back otherwise.
    Services and repositories only flush."""
    async with database_of(request).sessions() as session:
        try:
            yield session
        except DomainError as exc:
            if exc.keeps_changes:
                await _before_commit(request, session)
            await (session.commit() if exc.keeps_changes else session.rollback())
            raise
        except BaseException:
            await session.rollback()
            raise
        await session.flush()  # a failure up to here stored nothing: an ordinary error
        await _before_commit(request, session)
        await _commit(session)


async def _commit(session: AsyncSession) -> None:
    """COMMIT, the one step whose failure leaves the outcome unknown: the connection may have
    dropped before the server got it, or after it committed but before we heard so. Never
    answered as a success, nor as "nothing happened"."""
    try:
        await session.commit()
    except Exception as exc:
        if database_unavailable(exc):
            raise CommitOutcomeUnknownError from exc
        raise


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for routes that only read, with no explicit transaction."""
    bind_cursor_signer(request)
    async with database_of(request).read_sessions() as session:
        yield session


_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A Core statement compiled once, to asyncpg's SQL (`$1, $2...`), with the names of its
    parameters in the order the driver takes them."""

    sql: str
    parameters: tuple[str, ...]

    @classmethod
    def of(cls, statement: ClauseElement) -> "CompiledQuery":
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)  # noqa: S101  # a statement's compiler
        return cls(str(compiled), tuple(compiled.positiontup or ()))

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.parameters]


# What the driver raises when the connection itself failed, not the statement: the socket
# (OSError), the connection's state (InterfaceError: closed; InternalClientError: its protocol
# caught mid-operation by a connection the server dropped), the server's connection errors.
_DRIVER_CONNECTION_ERRORS = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
)


class ReadPool:
    """asyncpg's own pool, for the hot read routes only (ReadConnection says why): checking a
    connection out of SQLAlchemy's pool and back in costs more than the query. Its connections
    are set up like the engine's (time-outs, server settings), opened on demand, and reset
    for nothing on release: the routes that use them run single read statements outside any
    transaction, so there is no session state to undo."""

    def __init__(self, url: str, settings: Settings) -> None:
        statement_timeout_s = settings.db_statement_timeout_ms / 1000
        self._acquire_timeout_s = settings.db_pool_timeout_ms / 1000
        self._pool = asyncpg.create_pool(
            libpq_url(url),
            min_size=0,
            max_size=settings.db_read_pool_size,
            timeout=settings.db_connect_timeout_ms / 1000,
            command_timeout=statement_timeout_s + 1 if statement_timeout_s else None,
            server_settings=_server_settings(settings),
            reset=_keep_as_is,
            # Behind a transaction pooler: the unnamed statement only (_driver_arguments).
            statement_cache_size=0 if settings.transaction_pooled else 100,
        )
        self._started = False
        self._starting = asyncio.Lock()

    async def _started_pool(self) -> asyncpg.Pool:
        if self._started:
            return self._pool
        # Once, whatever the burst of first requests: asyncpg refuses a pool awaited twice.
        async with self._starting:
            if not self._started:
                await self._pool  # min_size=0: opens no connection, so it cannot fail
                self._started = True
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Driver]:
        """A connection; a failure to get one raises what the error mapper answers as 503
        (DatabaseUnreachableError, or the time-out), and one that failed is not reused."""
        pool = await self._started_pool()
        try:
            connection = await pool.acquire(timeout=self._acquire_timeout_s)
        except _DRIVER_CONNECTION_ERRORS as exc:
            raise DatabaseUnreachableError(type(exc).__name__) from exc
        try:
            yield connection
        except BaseException as exc:
            if _lost(exc):
                connection.terminate()  # at once: a frozen server would make a close wait
            raise
        finally:
            await pool.release(connection)

    async def close(self) -> None:
        if self._started:
            self._pool.terminate()  # every request is done by now (the server drained them)


async def _keep_as_is(_connection: asyncpg.Connection) -> None:
    """The read pool's reset: nothing to undo (ReadPool)."""


@dataclass(frozen=True, slots=True)
class ReadConnection:
    """How a hot read route reads: each statement on a driver (asyncpg) connection of the
    read pool, held for that statement only, so that a request waiting for its turn on the
    event loop holds no connection.

    Why not a session: for a read of one row, the ORM session (its creation, its transaction
    bookkeeping, its close), Core's per-statement execution (cache key, execution context,
    result processing) and a checkout from SQLAlchemy's pool each cost more than the query.
    Repositories run statements compiled once (CompiledQuery, compiled_statement) and get
    asyncpg Records. A time-out or a lost connection is answered as the database being
    unavailable (503)."""

    connections: Callable[[], AbstractAsyncContextManager[Driver]]

    async def _fetch(self, sql: str, arguments: Sequence[Any]) -> list[asyncpg.Record]:
        try:
            async with self.connections() as driver:
                rows: list[asyncpg.Record] = await driver.fetch(sql, *arguments)
                return rows
        except Exception as exc:
            if _lost(exc) and not database_unavailable(exc):
                raise DatabaseUnavailableError from exc
            raise

    async def fetch_one(
        self, query: CompiledQuery, values: dict[str, Any]
    ) -> asyncpg.Record | None:
        rows = await self._fetch(query.sql, query.arguments(values))
        return rows[0] if rows else None

    async def fetch_statement(self, statement: ClauseElement) -> list[asyncpg.Record]:
        """The rows of a statement built per request (a filtered, sorted page): compiled once
        per shape (compiled_statement), run with this request's values."""
        return await self._fetch(*compiled_statement(statement))


# Compiled statements by their shape (SQLAlchemy's cache key, which leaves the values out):
# a list's shapes are few (its sorts times the filters given), however many requests come.
_compiled_statements: LRUCache[Any, SQLCompiler] = LRUCache(500)


def _compiler(statement: ClauseElement, key: CacheKey | None) -> SQLCompiler:
    if key is None:  # a construct SQLAlchemy cannot cache: compiled every time
        compiler: SQLCompiler = _DIALECT.statement_compiler(_DIALECT, statement)
        return compiler
    cached = _compiled_statements.get(key.key)
    if cached is None:
        cached = _DIALECT.statement_compiler(_DIALECT, statement, cache_key=key)
        _compiled_statements[key.key] = cached
    return cached


def compiled_statement(statement: ClauseElement) -> tuple[str, list[Any]]:
    """`statement` as asyncpg's SQL and its arguments: what Core's execution does, without
    its per-statement bookkeeping. The cache key is SQLAlchemy's own (the one its compiled
    cache uses); `construct_params` takes this statement's values in place of those the
    cached compilation was made with, and the expanded state renders `IN` lists."""
    key = statement._generate_cache_key()  # SQLAlchemy's caching contract
    compiled = _compiler(statement, key)
    parameters = compiled.construct_params(
        extracted_parameters=key.bindparams if key is not None else None
    )
    expanded = compiled.construct_expanded_state(parameters)
    processors = expanded.processors
    arguments = [
        processors[name](expanded.parameters[name])
        if name in processors
        else expanded.parameters[name]
        for name in expanded.positiontup or ()
    ]
    return expanded.statement, arguments


def _lost(exc: BaseException) -> bool:
    """A failure that leaves a driver connection unusable or in an unknown state."""
    return database_unavailable(exc) or isinstance(exc, _DRIVER_CONNECTION_ERRORS)


async def get_read_connection(request: Request) -> ReadConnection:
    bind_cursor_signer(request)
    return ReadConnection(database_of(request).read_connections)


# scope="function": the commit happens before the response is sent, so a failed commit
# becomes an error response instead of a success the database never saw.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
ReadConnectionDep = Annotated[ReadConnection, Depends(get_read_connection)]


@asynccontextmanager
async def database_lifespan(
    app: FastAPI, *, session_class: type[Session], audit_tables: Sequence[str]
) -> AsyncIterator[None]:
    """Connect on start-up (starting and migrating the embedded server when DATABASE_URL is
    unset), check the app's role, and release every connection on shutdown. The sessions are
    of `session_class` and the role check covers `audit_tables`: what the slices plug in,
    through core/main.py (core knows no slice)."""
    settings: Settings = app.state.settings
    app.state.database = Database.connect(
        await app_database_url(settings), settings, session_class=session_class
    )
    try:
        await check_app_role(app.state.database.engine, settings, audit_tables)
        yield
    finally:
        await app.state.database.dispose()
