"""Graceful shutdown of the real server: `python -m backoffice serve` (two workers) is sent
SIGTERM in the middle of a write load. The requests in flight finish, the access-log queue is
flushed and the engine disposed before the process exits 0; nothing the server acknowledged is
lost: every 201 has its product, its data-change row and its access-log row.

The server runs over a fresh database of its own, with a pool of two connections per worker so
requests queue inside the app: at SIGTERM the workers hold many requests, not only the ones on
the wire.
"""

import asyncio
import itertools
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from backoffice.core.database import libpq_url
from backoffice.core.metrics import MULTIPROC_DIR_ENV
from tests.live_server import free_port, server_environment, server_process, tail, wait_until_ready
from tests.support.database import as_app, scratch_database
from tests.support.factories import PRODUCTS

SECRET_KEY = secrets.token_urlsafe(48)  # made per run: no secret-looking literal in the repo
METRICS_TOKEN = secrets.token_urlsafe(32)  # production refuses open metrics
SUPERUSER_EMAIL = "shutdown@example.com"
SUPERUSER_PASSWORD = "graceful-shutdown-password"
CONCURRENCY = 32  # clients posting products one after another
WARM_UP = 8  # sequential creations before the load, to check the workers' summed metrics
LOAD_BEFORE_SIGTERM_S = 1.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass(slots=True)
class Attempt:
    sku: str
    request_id: str
    answered: bool = False
    status: int | None = None
    error: str | None = None


def _environment(database_url: str, port: int, temporary: Path) -> dict[str, str]:
    environment = server_environment(
        ENVIRONMENT="production",
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        FIRST_SUPERUSER_EMAIL=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="2",
        LOG_LEVEL="WARNING",
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="0",
        AUDIT_ACCESS_ENABLED="true",
        AUDIT_DATA_ENABLED="true",
        METRICS_ENABLED="true",
        METRICS_TOKEN=METRICS_TOKEN,
        # The test client stands in for a load balancer: its X-Request-ID ties each request to
        # its rows (from anyone else, the server makes its own id).
        TRUSTED_PROXIES='["127.0.0.1/32"]',
        # `serve` makes its metrics directory here: the test can see it is removed.
        TMPDIR=str(temporary),
    )
    environment.pop(MULTIPROC_DIR_ENV, None)
    return environment


def _new_attempt(worker: int | str, sequence: int) -> Attempt:
    return Attempt(sku=f"SIG-{worker}-{sequence}", request_id=f"sigterm-{worker}-{sequence}")


async def _create(client: httpx.AsyncClient, attempt: Attempt) -> None:
    try:
        response = await client.post(
            PRODUCTS,
            json={"sku": attempt.sku, "name": "Shutdown", "price": "1.00"},
            headers={"X-Request-ID": attempt.request_id},
        )
    except httpx.TransportError as exc:
        attempt.error = type(exc).__name__
    else:
        attempt.status = response.status_code
    finally:
        attempt.answered = True


async def _keep_creating(client: httpx.AsyncClient, worker: int, attempts: list[Attempt]) -> None:
    """Products one after another, until the server stops answering (or refuses one)."""
    for sequence in itertools.count():
        attempt = _new_attempt(worker, sequence)
        attempts.append(attempt)
        await _create(client, attempt)
        if attempt.status != 201:
            return


def _sum(exposition: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def _scrape_until(
    client: httpx.AsyncClient, name: str, expected: float, **labels: str
) -> None:
    """Scrape until the server's `name` (summed) reaches `expected`: a worker still starting
    has not written its numbers yet, and a response can reach the client a moment before its
    worker counts it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        found = _sum((await client.get("/metrics")).text, name, **labels)
        if found >= expected or time.monotonic() > deadline:
            assert found == expected, name
            return
        await asyncio.sleep(0.05)


async def test_sigterm_mid_load_finishes_in_flight_requests_and_loses_nothing_acknowledged(
    server_url: str, app_login: tuple[str, str], tmp_path: Path
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    log = tmp_path / "server.log"
    async with scratch_database(server_url, "backoffice_shutdown") as database_url:
        port = free_port()
        # As the app's login role: production refuses to start as the owner.
        environment = _environment(as_app(database_url, app_login), port, temporary)
        with server_process("serve", environment, tmp_path, log) as server:
            run = await _load_then_sigterm(server, f"http://127.0.0.1:{port}", log)
        products, logged, inserted = await _stored(database_url, run.attempts)

    acknowledged = [attempt for attempt in run.attempts if attempt.status == 201]
    finished = [attempt for attempt in run.in_flight if attempt.status == 201]
    unanswered = [attempt for attempt in run.attempts if attempt.status is None]
    print(  # noqa: T201  # the measured shutdown, shown with -s
        f"\nshutdown: {len(run.in_flight)} requests in flight at SIGTERM "
        f"({run.served:.0f} inside the workers), {len(finished)} of them answered 201;"
        f" {run.acknowledged_before} acknowledged before SIGTERM, {len(acknowledged)} in all,"
        f" 0 lost; {len(unanswered)} unanswered"
        f" ({', '.join(sorted({a.error or '' for a in unanswered}))});"
        f" exit {run.exit_code} {run.stopped_after:.2f} s after SIGTERM"
    )
    output = log.read_text(errors="replace")
    assert run.exit_code == 0, tail(log)
    assert "Traceback" not in output, tail(log)
    # Both workers ran their lifespan's shutdown: queue flushed, engine disposed.
    assert output.count("Application shutdown complete.") == 2, tail(log)
    # Only two outcomes: 201, or no answer at all once the server stopped listening.
    assert [a for a in run.attempts if a.status not in {201, None}] == []
    # The requests in flight at SIGTERM were finished, not cut off.
    assert run.in_flight
    assert finished
    # Nothing acknowledged is lost: each 201 has its product, its data change (same
    # transaction) and its access-log row (queued after the answer, flushed on shutdown).
    lost = [a.sku for a in acknowledged if a.sku not in products]
    assert lost == []
    assert {a.request_id for a in acknowledged} <= logged
    for attempt in acknowledged:
        assert inserted.get(str(products[attempt.sku])) == attempt.request_id, attempt
    # And a request the server did not answer, it never started: refused, not half done.
    assert [a.sku for a in unanswered if a.sku in products] == []
    # The metrics directory `serve` made for its workers went with it.
    assert list(temporary.iterdir()) == []


@dataclass(slots=True)
class Run:
    attempts: list[Attempt]
    in_flight: list[Attempt]  # sent, not yet answered, when SIGTERM was sent
    served: float  # requests the workers were serving then, by their own gauge
    acknowledged_before: int
    exit_code: int
    stopped_after: float  # seconds from SIGTERM to the server's exit


async def _load_then_sigterm(server: subprocess.Popen[bytes], base_url: str, log: Path) -> Run:
    attempts: list[Attempt] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as probe,
        httpx.AsyncClient(
            base_url=base_url, timeout=10, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        ) as scraper,
        httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client,
    ):
        await wait_until_ready(server, probe, log)
        login = await probe.post(
            "/api/v1/auth/sessions",
            data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD},
        )
        assert login.status_code == 200, login.text
        bearer = f"Bearer {login.json()['access_token']}"
        client.headers["Authorization"] = probe.headers["Authorization"] = bearer

        # Two workers, one answering each scrape: the numbers are the whole server's. Both
        # pools (2 connections each) counted means both workers are serving.
        await _scrape_until(scraper, "db_pool_size", 4)
        for sequence in range(WARM_UP):
            attempts.append(attempt := _new_attempt("warm", sequence))
            await _create(client, attempt)
            assert attempt.status == 201, attempt
        await _scrape_until(scraper, "http_requests_total", WARM_UP, handler=PRODUCTS, status="201")

        senders = [
            asyncio.create_task(_keep_creating(client, worker, attempts))
            for worker in range(CONCURRENCY)
        ]
        try:
            await asyncio.sleep(LOAD_BEFORE_SIGTERM_S)
            served = _sum((await scraper.get("/metrics")).text, "http_requests_inprogress")
            in_flight = [attempt for attempt in attempts if not attempt.answered]
            acknowledged_before = sum(attempt.status == 201 for attempt in attempts)
            assert all(attempt.status == 201 for attempt in attempts if attempt.answered)
            signalled_at = time.monotonic()
            os.killpg(server.pid, signal.SIGTERM)

            _, pending = await asyncio.wait(senders, timeout=STOP_TIMEOUT_S)
            assert not pending, "clients still waiting for answers"
            exit_code = await asyncio.to_thread(server.wait, STOP_TIMEOUT_S)
            stopped_after = time.monotonic() - signalled_at
        finally:
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
    return Run(attempts, in_flight, served, acknowledged_before, exit_code, stopped_after)


async def _stored(
    database_url: str, attempts: list[Attempt]
) -> tuple[dict[str, int], set[str], dict[str, str]]:
    """Products by SKU, access-logged request ids, and product-insert request ids by id."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        skus = [attempt.sku for attempt in attempts]
        request_ids = [attempt.request_id for attempt in attempts]
        products = await connection.fetch(
            "SELECT sku, id FROM products WHERE sku = ANY($1::text[])", skus
        )
        logged = await connection.fetch(
            "SELECT request_id FROM access_logs WHERE request_id = ANY($1::text[])"
            " AND method = 'POST' AND status = 201",
            request_ids,
        )
        changes = await connection.fetch(
            "SELECT entity_id, request_id FROM data_changes"
            " WHERE entity_type = 'product' AND action = 'insert'"
        )
    finally:
        await connection.close()
    return (
        {row["sku"]: row["id"] for row in products},
        {row["request_id"] for row in logged},
        {row["entity_id"]: row["request_id"] for row in changes},
    )
