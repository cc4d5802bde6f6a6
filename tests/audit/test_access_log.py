"""The access log: one row per request, queued off the critical path, batched, bounded, and
flushed on shutdown."""

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from ipaddress import ip_network

import pytest
import structlog
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from backoffice.audit.access import AccessEntry, AccessLogWriter, access_log_lifespan
from backoffice.audit.models import AccessLog
from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.core.database import Database
from backoffice.core.text import REPLACEMENT
from tests.live_server import free_port
from tests.support.factories import PRODUCTS
from tests.support.http import api_client


def reconfigure_access_audit(app: FastAPI, settings: Settings) -> None:
    """Give the app's access-audit middleware other settings (the app builds its middleware
    stack once, so it is rebuilt)."""
    for middleware in app.user_middleware:
        if "settings" in middleware.kwargs:  # the access-audit middleware's
            middleware.kwargs["settings"] = settings
    app.middleware_stack = app.build_middleware_stack()


async def logged(session: AsyncSession) -> list[AccessLog]:
    result = await session.execute(
        select(AccessLog).order_by(AccessLog.id).execution_options(populate_existing=True)  # type: ignore[arg-type]
    )
    return list(result.scalars())


def entry(number: int) -> AccessEntry:
    return AccessEntry(
        occurred_at=datetime.now(UTC),
        request_id=f"request-{number}",
        user_id=None,
        client_ip="192.0.2.1",
        user_agent="pytest",
        method="GET",
        path=f"/api/v1/products/{number}",
        status=200,
        duration_ms=1.5,
    )


# --- what a request leaves behind -----------------------------------------------------------


async def test_an_authenticated_request_is_logged_with_the_verified_user(
    client: AsyncClient, writer: AccessLogWriter, session: AsyncSession, superuser: User
) -> None:
    response = await client.get(
        PRODUCTS, params={"q": "secret-ish"}, headers={"User-Agent": "audit-test/1.0"}
    )
    await writer.flush()

    (row,) = await logged(session)
    assert (row.method, row.path, row.status) == ("GET", PRODUCTS, 200)
    assert row.user_id == superuser.id
    assert row.request_id == response.headers["x-request-id"]
    assert row.user_agent == "audit-test/1.0"
    assert str(row.client_ip) == "127.0.0.1"
    assert row.duration_ms > 0
    assert "secret-ish" not in row.path  # the query string is never kept


async def test_an_anonymous_refused_request_is_logged_without_a_user(
    anonymous_client: AsyncClient, writer: AccessLogWriter, session: AsyncSession
) -> None:
    await anonymous_client.get(PRODUCTS)
    await writer.flush()

    (row,) = await logged(session)
    assert (row.status, row.user_id) == (401, None)


async def test_a_forged_token_never_puts_its_subject_in_the_log(
    app: FastAPI, writer: AccessLogWriter, session: AsyncSession, superuser: User
) -> None:
    import jwt

    forged = jwt.encode(
        {"sub": str(superuser.id), "typ": "access"},
        "not-our-key-but-long-enough-for-hs256!",
        "HS256",
    )
    async with api_client(app, forged) as intruder:
        await intruder.get(PRODUCTS)
    await writer.flush()

    (row,) = await logged(session)
    assert (row.status, row.user_id) == (401, None)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", f"{PRODUCTS}/999999", 404), ("POST", PRODUCTS, 422), ("GET", "/nowhere", 404)],
)
async def test_failed_requests_are_logged_with_their_status(
    client: AsyncClient,
    writer: AccessLogWriter,
    session: AsyncSession,
    method: str,
    path: str,
    status: int,
) -> None:
    await client.request(method, path, json={})
    await writer.flush()

    (row,) = await logged(session)
    assert (row.method, row.path, row.status) == (method, path, status)


@pytest.mark.parametrize("path", ["/health/live", "/docs", "/openapi.json", "/redoc"])
async def test_skipped_paths_are_not_logged(
    client: AsyncClient, writer: AccessLogWriter, session: AsyncSession, path: str
) -> None:
    await client.get(path)
    await writer.flush()

    assert await logged(session) == []


async def test_access_logging_can_be_switched_off(
    settings: Settings,
    app: FastAPI,
    client: AsyncClient,
    writer: AccessLogWriter,
    session: AsyncSession,
) -> None:
    reconfigure_access_audit(app, settings.model_copy(update={"audit_access_enabled": False}))

    await client.get(PRODUCTS)
    await writer.flush()

    assert await logged(session) == []


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "expected"),
    [
        ([], "203.0.113.9", "127.0.0.1"),  # an untrusted peer cannot claim another address
        (["127.0.0.0/8"], "203.0.113.9", "203.0.113.9"),
        (["127.0.0.0/8"], "198.51.100.7, 203.0.113.9", "203.0.113.9"),  # right-most untrusted
        (["127.0.0.0/8", "203.0.113.0/24"], "198.51.100.7, 203.0.113.9", "198.51.100.7"),
        (["127.0.0.0/8"], "not-an-address", None),
    ],
)
async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    settings: Settings,
    app: FastAPI,
    client: AsyncClient,
    writer: AccessLogWriter,
    session: AsyncSession,
    trusted: list[str],
    forwarded_for: str,
    expected: str | None,
) -> None:
    trusted_proxies = [ip_network(network) for network in trusted]
    reconfigure_access_audit(app, settings.model_copy(update={"trusted_proxies": trusted_proxies}))

    await client.get(PRODUCTS, headers={"X-Forwarded-For": forwarded_for})
    await writer.flush()

    (row,) = await logged(session)
    assert (None if row.client_ip is None else str(row.client_ip)) == expected


# --- the writer -----------------------------------------------------------------------------


async def test_entries_are_inserted_in_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = AccessLogWriter(sessionmaker, max_queue=1000, batch_size=10, flush_interval_s=60)
    for number in range(25):
        writer.record(entry(number))
    batches: list[int] = []
    insert = writer._insert

    async def counted(batch: Sequence[AccessEntry]) -> None:
        batches.append(len(batch))
        await insert(batch)

    monkeypatch.setattr(writer, "_insert", counted)

    await writer.flush()

    assert batches == [10, 10, 5]
    assert [row.request_id for row in await logged(session)] == [
        f"request-{number}" for number in range(25)
    ]
    assert (writer.written, writer.depth, writer.dropped) == (25, 0, 0)


async def test_a_full_queue_drops_the_oldest_entries_counts_them_and_warns(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    writer = AccessLogWriter(sessionmaker, max_queue=5, batch_size=100, flush_interval_s=60)

    with structlog.testing.capture_logs() as logs:
        for number in range(8):
            writer.record(entry(number))
    await writer.flush()

    assert writer.dropped == 3
    assert [row.request_id for row in await logged(session)] == [
        f"request-{number}" for number in range(3, 8)
    ]
    warnings = [line for line in logs if line["event"] == "audit.access_dropped"]
    assert [line["dropped"] for line in warnings] == [1, 2]  # then at 4, 8, ...: never a flood
    assert all(line["log_level"] == "warning" for line in warnings)


async def test_the_background_task_writes_without_being_asked(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    writer = AccessLogWriter(sessionmaker, max_queue=100, batch_size=2, flush_interval_s=60)
    writer.start()
    try:
        writer.record(entry(1))
        writer.record(entry(2))  # a full batch wakes the writer at once
        for _ in range(100):
            if writer.written == 2:
                break
            await _tick()
    finally:
        await writer.stop()

    assert writer.written == 2
    assert len(await logged(session)) == 2


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.01)


def _unreachable(settings: Settings) -> Database:
    """A database nothing listens for: every connection attempt is refused."""
    return Database.connect(f"postgresql://nobody@127.0.0.1:{free_port()}/none", settings)


async def test_while_the_database_is_away_entries_wait_and_are_written_when_it_returns(
    settings: Settings, connection: AsyncConnection, session: AsyncSession
) -> None:
    away = _unreachable(settings)
    sessions = async_sessionmaker(away.engine, expire_on_commit=False)
    writer = AccessLogWriter(sessions, max_queue=100, batch_size=2, flush_interval_s=60)
    try:
        for number in range(5):
            writer.record(entry(number))
        with structlog.testing.capture_logs() as logs:
            kept = await writer.flush()
        assert (kept, writer.depth, writer.dropped, writer.written) == (False, 5, 0, 0)
        assert [line for line in logs if line["log_level"] in {"error", "critical"}] == []

        # The database is back (the test's own transaction stands in for it).
        sessions.configure(bind=connection, join_transaction_mode="create_savepoint")
        assert await writer.flush() is True
    finally:
        await away.dispose()

    assert (writer.depth, writer.dropped, writer.written) == (0, 0, 5)
    assert [row.request_id for row in await logged(session)] == [
        f"request-{number}" for number in range(5)
    ]


async def test_a_batch_refused_for_any_reason_but_its_data_waits_in_the_queue_too(
    settings: Settings, server_url: str, connection: AsyncConnection, session: AsyncSession
) -> None:
    """Not only an outage: a connection lost mid-COPY, a missing grant or table. Here, the
    server's own database, which has no access log table: nothing is dropped, the error is
    named, and the entries are written once the writer can."""
    elsewhere = Database.connect(server_url, settings)
    sessions = async_sessionmaker(elsewhere.engine, expire_on_commit=False)
    writer = AccessLogWriter(sessions, max_queue=100, batch_size=10, flush_interval_s=60)
    try:
        writer.record(entry(1))
        writer.record(entry(2))
        kept = await writer.flush()
        assert (kept, writer.depth, writer.dropped) == (False, 2, 0)
        assert writer.last_error == "UndefinedTableError (SQLSTATE 42P01)"

        sessions.configure(bind=connection, join_transaction_mode="create_savepoint")
        assert await writer.flush() is True
    finally:
        await elsewhere.dispose()

    assert [row.request_id for row in await logged(session)] == ["request-1", "request-2"]


async def test_while_the_database_is_away_only_the_queue_overflow_is_dropped_and_counted(
    settings: Settings,
) -> None:
    away = _unreachable(settings)
    writer = AccessLogWriter(
        async_sessionmaker(away.engine), max_queue=5, batch_size=3, flush_interval_s=60
    )
    try:
        for number in range(4):
            writer.record(entry(number))
        assert await writer.flush() is False  # a batch taken out and put back
        with structlog.testing.capture_logs() as logs:
            for number in range(4, 8):
                writer.record(entry(number))
        assert await writer.flush() is False
    finally:
        await away.dispose()

    assert (writer.depth, writer.dropped) == (5, 3)
    assert [line["event"] for line in logs] == ["audit.access_dropped"] * 2  # at 1 and 2
    assert [queued.request_id for queued in writer._queue] == [
        f"request-{number}" for number in range(3, 8)
    ]


async def test_the_background_task_retries_until_the_database_returns(
    settings: Settings, connection: AsyncConnection, session: AsyncSession
) -> None:
    away = _unreachable(settings)
    sessions = async_sessionmaker(away.engine, expire_on_commit=False)
    writer = AccessLogWriter(sessions, max_queue=100, batch_size=1, flush_interval_s=60)
    writer.start()
    try:
        with structlog.testing.capture_logs() as logs:
            writer.record(entry(1))  # a full batch: the writer tries at once, and fails
            for _ in range(200):
                if any(line["event"] == "audit.access_write_deferred" for line in logs):
                    break
                await _tick()
            sessions.configure(bind=connection, join_transaction_mode="create_savepoint")
            for _ in range(500):  # the back-off starts at a quarter of a second
                if writer.written == 1:
                    break
                await _tick()
    finally:
        await writer.stop()
        await away.dispose()

    assert writer.written == 1
    assert [line["event"] for line in logs if line["event"].startswith("audit.")] == [
        "audit.access_write_deferred",
        "audit.access_write_resumed",
    ]
    assert len(await logged(session)) == 1


async def test_shutdown_never_loses_the_batch_being_written(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM while the writer is inside a batch: the batch is off the queue, so a stop that
    cancelled the task there would lose it. The stop waits for the batch instead."""
    writer = AccessLogWriter(sessionmaker, max_queue=100, batch_size=2, flush_interval_s=60)
    inside, carry_on = asyncio.Event(), asyncio.Event()
    insert = writer._insert

    async def slow(batch: Sequence[AccessEntry]) -> None:
        inside.set()
        await carry_on.wait()
        await insert(batch)

    monkeypatch.setattr(writer, "_insert", slow)
    writer.start()
    writer.record(entry(1))
    writer.record(entry(2))  # a full batch: the writer takes it at once
    await asyncio.wait_for(inside.wait(), 5)
    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0.05)  # the stop has begun while the batch is in flight
    carry_on.set()
    await asyncio.wait_for(stopping, 5)

    assert (writer.written, writer.dropped, writer.depth) == (2, 0, 0)
    assert [row.request_id for row in await logged(session)] == ["request-1", "request-2"]


async def test_shutdown_with_the_database_away_counts_what_it_could_not_write(
    settings: Settings,
) -> None:
    away = _unreachable(settings)
    writer = AccessLogWriter(
        async_sessionmaker(away.engine), max_queue=100, batch_size=10, flush_interval_s=60
    )
    for number in range(3):
        writer.record(entry(number))
    try:
        with structlog.testing.capture_logs() as logs:
            await writer.stop()
    finally:
        await away.dispose()

    assert (writer.depth, writer.dropped, writer.written) == (0, 3, 0)
    [warning] = [line for line in logs if line["event"] == "audit.access_unwritten_at_shutdown"]
    assert warning["entries"] == 3


async def test_shutdown_flushes_everything_still_queued(
    app: FastAPI, client: AsyncClient, session: AsyncSession
) -> None:
    async with access_log_lifespan(app):
        writer: AccessLogWriter = app.state.access_log_writer
        for _ in range(7):
            await client.get(PRODUCTS)
        assert writer.depth == 7  # batch size 500, interval 1 s: nothing written yet

    assert len(await logged(session)) == 7


async def test_a_batch_the_database_refuses_is_counted_as_dropped(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    writer = AccessLogWriter(sessionmaker, max_queue=100, batch_size=10, flush_interval_s=60)
    broken = entry(1)
    broken.method = "X" * 100  # longer than the column allows
    writer.record(broken)

    await writer.flush()

    assert (writer.written, writer.dropped, writer.depth) == (0, 1, 0)
    count = await session.scalar(select(func.count()).select_from(AccessLog))
    assert count == 0


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda bad: setattr(bad, "path", "/nul\x00byte"), id="nul"),
        pytest.param(lambda bad: setattr(bad, "user_agent", "lone \ud800"), id="surrogate"),
        pytest.param(lambda bad: setattr(bad, "method", "X" * 100), id="too-long"),
    ],
)
async def test_a_row_the_database_refuses_costs_only_itself_not_its_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    spoil: Callable[[AccessEntry], None],
) -> None:
    writer = AccessLogWriter(sessionmaker, max_queue=100, batch_size=10, flush_interval_s=60)
    entries = [entry(number) for number in range(10)]
    spoil(entries[4])  # put straight into the writer: no middleware cleaned it
    for queued in entries:
        writer.record(queued)

    with structlog.testing.capture_logs() as logs:
        await writer.flush()

    assert (writer.written, writer.dropped, writer.depth) == (9, 1, 0)
    assert [row.request_id for row in await logged(session)] == [
        f"request-{number}" for number in range(10) if number != 4
    ]
    [warning] = [line for line in logs if line["event"] == "audit.access_entry_refused"]
    assert (warning["log_level"], warning["request_id"]) == ("warning", "request-4")


async def test_hostile_requests_cannot_make_the_access_log_lose_real_requests(
    committed_client: AsyncClient,
) -> None:
    """Anonymous requests whose path holds a NUL, interleaved with real ones, on an app that
    commits: every request is logged, the hostile path made storable."""
    transport = committed_client._transport
    assert isinstance(transport, ASGITransport)
    app: FastAPI = transport.app  # type: ignore[assignment]  # the committed app, a FastAPI
    async with access_log_lifespan(app), api_client(app) as anonymous:
        for _ in range(20):
            await anonymous.get("/%00")
            assert (await committed_client.get(PRODUCTS)).status_code == 200

    database: Database = app.state.database
    async with database.sessions() as session:
        rows = await logged(session)
    assert [row.path for row in rows].count(PRODUCTS) == 20
    assert [row.path for row in rows].count(f"/{REPLACEMENT}") == 20
