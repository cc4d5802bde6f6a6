"""The access log: one row per API request, written off the request's critical path.

The middleware hands each finished request to `AccessLogWriter.record`, which only appends to a
bounded in-memory queue; a background task inserts what is queued in batches. When the queue is
full the oldest entries are dropped and counted (a request is never made to wait for the
audit), and on a clean shutdown everything still queued is written before the engine goes away.
While the database is unavailable nothing is lost but the queue's overflow: the writer keeps the
entries and retries with back-off until the database is back.
Every stored value is made storable first (no NUL, no lone surrogate, within its column's
length), and a batch the database refuses anyway is retried row by row, so a bad row costs only
itself.
"""

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from backoffice.audit.context import request_state
from backoffice.audit.models import (
    PATH_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    USER_AGENT_MAX_LENGTH,
    AccessLog,
)
from backoffice.core.config import Settings
from backoffice.core.database import Database
from backoffice.core.errors import describe_error, sqlstate_of
from backoffice.core.middleware import StatusRecorder
from backoffice.core.network import client_ip, forwarded_chain
from backoffice.core.text import scrub

log = structlog.get_logger(__name__)

_METHOD_MAX_LENGTH = 16  # access_logs.method

_TABLE = AccessLog.__tablename__


@dataclass(slots=True)
class AccessEntry:
    occurred_at: datetime
    request_id: str
    user_id: int | None
    client_ip: str | None
    user_agent: str | None
    method: str
    path: str
    status: int
    duration_ms: float
    api_key_id: int | None = None  # the API key the caller authenticated with


_COLUMNS = tuple(field.name for field in fields(AccessEntry))
_as_record = attrgetter(*_COLUMNS)  # a flat tuple; dataclasses.astuple would deep-copy
# SQLSTATE classes of a refusal of the data itself (22 data exception, 23 integrity): only then
# is a batch retried row by row. A lost connection fails every row alike.
_REFUSED_DATA_CLASSES = ("22", "23")
# Back-off between attempts while the database is unavailable (each wait is jittered down to
# half, so the workers of a fleet do not all return at once).
_RETRY_MIN_S = 0.25
_RETRY_MAX_S = 5.0


def storable(value: str, max_length: int) -> str:
    """`value` as a column of `max_length` characters can always store it."""
    return scrub(value[:max_length])


def _refused_data(exc: BaseException) -> bool:
    """Whether the database (or the driver, for a value it cannot encode) refused the data,
    as opposed to failing to be reached. asyncpg's COPY encoder raises a plain ValueError
    (UnicodeEncodeError for a lone surrogate)."""
    sqlstate = sqlstate_of(exc)
    return isinstance(exc, ValueError) or (
        sqlstate is not None and sqlstate.startswith(_REFUSED_DATA_CLASSES)
    )


class AccessLogWriter:
    """Bounded queue + batching inserter. `record` never blocks and never raises.

    While the database is unavailable the queue keeps what it holds and the writer retries
    with a growing, jittered back-off; only the queue's overflow loses entries, each counted
    in `dropped` (exported as `audit_access_dropped_total`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_queue: int,
        batch_size: int,
        flush_interval_s: float,
    ) -> None:
        self._sessions = sessions
        self._queue: deque[AccessEntry] = deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0
        self.last_error: str | None = None  # why the last batch went back to the queue

    @property
    def depth(self) -> int:
        return len(self._queue)

    def record(self, entry: AccessEntry) -> None:
        self._queue.append(entry)
        self._drop_overflow()
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def _drop_overflow(self) -> None:
        """Keep the newest `max_queue` entries: the oldest go first, counted."""
        while len(self._queue) > self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            # Once per power of two: a flood is visible in the logs without flooding them.
            if self.dropped & (self.dropped - 1) == 0:
                log.warning("audit.access_dropped", dropped=self.dropped, queue=self._max_queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="access-log-writer")

    async def stop(self) -> None:
        """Stop the background task at its next safe point, then write everything still
        queued. Never cancelled mid-batch: a batch taken off the queue would be lost with the
        task. One attempt: what the database does not take is counted as dropped and warned
        about."""
        if self._task is not None:
            self._stopping.set()
            self._wake.set()
            await self._task
            self._task = None
        if not await self.flush():  # False leaves the unwritten entries queued
            self.dropped += len(self._queue)
            log.warning("audit.access_unwritten_at_shutdown", entries=len(self._queue))
            self._queue.clear()

    async def _run(self) -> None:
        retry_in = 0.0  # seconds; 0 while the database takes our writes
        while not self._stopping.is_set():
            if retry_in:  # only a stop cuts the back-off short, not a full batch
                wait = self._stopping.wait()
                timeout = retry_in * random.uniform(0.5, 1)  # noqa: S311  # jitter, not crypto
            else:
                wait, timeout = self._wake.wait(), self._flush_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait, timeout)
            self._wake.clear()
            if self._stopping.is_set():
                return  # stop() writes what is left
            if await self.flush():
                if retry_in:
                    log.info("audit.access_write_resumed", queued=self.depth)
                retry_in = 0.0
            else:
                if not retry_in:
                    log.warning(
                        "audit.access_write_deferred", queued=self.depth, error=self.last_error
                    )
                retry_in = min(max(2 * retry_in, _RETRY_MIN_S), _RETRY_MAX_S)

    async def flush(self) -> bool:
        """Insert everything queued, a batch per transaction. Data the database refuses is
        retried row by row, so only the bad rows are lost (counted as dropped and warned). A
        batch that fails for any other reason (the database away, a connection lost mid-COPY,
        a missing grant) goes back to the head of the queue and the answer is False: the
        caller retries later, and nothing but the queue's overflow is ever lost."""
        while self._queue:
            count = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            try:
                await self._insert(batch)
            except Exception as exc:  # noqa: BLE001  # whatever it was, the entries are kept
                if not _refused_data(exc):
                    return self._put_back(batch, exc)
                if not await self._insert_one_by_one(batch):
                    return False
            else:
                self.written += len(batch)
        return True

    def _put_back(self, entries: Sequence[AccessEntry], exc: Exception) -> bool:
        self._queue.extendleft(reversed(entries))
        self._drop_overflow()  # record() may have filled the queue meanwhile
        self.last_error = describe_error(exc)
        return False

    async def _insert_one_by_one(self, batch: Sequence[AccessEntry]) -> bool:
        for position, entry in enumerate(batch):
            try:
                await self._insert([entry])
            except Exception as exc:  # noqa: BLE001  # one bad row must not stop its neighbours
                if not _refused_data(exc):
                    return self._put_back(batch[position:], exc)
                self.dropped += 1
                log.warning(
                    "audit.access_entry_refused",
                    request_id=storable(entry.request_id, REQUEST_ID_MAX_LENGTH),
                    error=describe_error(exc),
                )
            else:
                self.written += 1
        return True

    async def _insert(self, batch: Sequence[AccessEntry]) -> None:
        # COPY: one round trip and almost no Python per row, which is what keeps the access log
        # cheap under load (an INSERT of many rows costs several times more CPU).
        async with self._sessions() as session:
            connection = await session.connection()
            driver: Any = (await connection.get_raw_connection()).driver_connection  # asyncpg's
            try:
                await driver.copy_records_to_table(
                    _TABLE, records=[_as_record(entry) for entry in batch], columns=_COLUMNS
                )
                await session.commit()
            except Exception as exc:
                if not _refused_data(exc):
                    # The COPY ran beneath SQLAlchemy, which cannot tell whether the connection
                    # survived (a server gone mid-COPY leaves it half-way): never pool it again.
                    with contextlib.suppress(Exception):
                        await connection.invalidate()
                raise


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _skipped(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


class AccessAuditMiddleware:
    """Times every HTTP request and queues its access entry once the response has been sent.

    It also makes the request's state (request id, then the verified user id) visible to the
    data-change hooks, which is why it is installed even when the access log is switched off.
    The user id comes from `request.state.user_id`, which authentication sets only after it
    has verified the token.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        token = request_state.set(state)
        started = time.perf_counter()
        occurred_at = datetime.now(UTC)
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            request_state.reset(token)
            self._record(scope, state, recorder.status, occurred_at, started)

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        status: int,
        occurred_at: datetime,
        started: float,
    ) -> None:
        settings = self.settings
        path: str = scope["path"]  # the query string, where secrets may hide, is not kept
        if not settings.audit_access_enabled or _skipped(path, settings.audit_skip_paths):
            return
        writer: AccessLogWriter | None = getattr(scope["app"].state, "access_log_writer", None)
        if writer is None:
            return
        peer = scope.get("client")
        user_agent = _header(scope, b"user-agent")
        # Whatever a hostile client sent, every value fits its column (no NUL, no lone
        # surrogate, not too long): one request must never make a batch fail.
        writer.record(
            AccessEntry(
                occurred_at=occurred_at,
                request_id=storable(state.get("request_id", ""), REQUEST_ID_MAX_LENGTH),
                user_id=state.get("user_id"),
                client_ip=client_ip(
                    peer[0] if peer else None,
                    forwarded_chain(scope["headers"]),
                    settings.trusted_proxies,
                ),
                user_agent=storable(user_agent, USER_AGENT_MAX_LENGTH) if user_agent else None,
                method=storable(scope["method"], _METHOD_MAX_LENGTH),
                path=storable(path, PATH_MAX_LENGTH),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                api_key_id=state.get("api_key_id"),
            )
        )


@asynccontextmanager
async def access_log_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the writer while the app runs; on shutdown write what is queued (before the engine
    is disposed: this context is entered after the database's and left before it)."""
    settings: Settings = app.state.settings
    database: Database = app.state.database
    writer = AccessLogWriter(
        database.sessions,
        max_queue=settings.audit_queue_max,
        batch_size=settings.audit_batch_size,
        flush_interval_s=settings.audit_flush_interval_ms / 1000,
    )
    app.state.access_log_writer = writer
    writer.start()
    try:
        yield
    finally:
        await writer.stop()
        log.info("audit.access_flushed", written=writer.written, dropped=writer.dropped)
