"""A database outage under load, end to end: `python -m backoffice serve` (two workers, the
production settings) over a PostgreSQL of the test's own, which is stopped for about four
seconds while four clients create and read products, then started again.

What a client must see: during the outage a 503 problem with Retry-After, fast (never a 500,
never a hang), and /health/ready saying 503 within a second while /health/live stays 200;
after it, success again without a restart of the app. What the database must hold: every
acknowledged write with its data-change row, no write that was answered "not carried out",
and the access row of every answered request, those of the outage included.
"""

import asyncio
import itertools
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from backoffice.core.errors import RETRY_AFTER_S
from tests.live_server import free_port, server_environment, server_process, tail, wait_until_ready
from tests.own_postgres import OwnPostgres, own_postgres

PRODUCTS = "/api/v1/products"
SECRET_KEY = secrets.token_urlsafe(48)  # made per run: no secret-looking literal in the repo
METRICS_TOKEN = secrets.token_urlsafe(32)
SUPERUSER_EMAIL = "outage@example.com"
SUPERUSER_PASSWORD = "database-outage-password"
CLIENTS = 4
LOAD_BEFORE_OUTAGE_S = 1.5
OUTAGE_S = 4.0
LOAD_AFTER_RECOVERY_S = 1.5
PROBE_EVERY_S = 0.1
# The server's bounds (its defaults, stated here so the test says what it holds them to).
CONNECT_TIMEOUT_S = 2.0
POOL_TIMEOUT_S = 2.0
HEALTH_TIMEOUT_S = 0.5
# A slow shared CI machine adds scheduling delays on top of any bound.
SLACK_S = 1.0
RECOVERY_TIMEOUT_S = 20.0
ACCESS_ROWS_TIMEOUT_S = 20.0
UNAVAILABLE_TYPES = {
    "urn:backoffice:problem:database-unavailable",
    "urn:backoffice:problem:commit-outcome-unknown",
}


@dataclass(slots=True)
class Answer:
    kind: str  # "write", "read", "ready" or "live"
    request_id: str
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no HTTP answer at all
    error: str | None = None
    problem_type: str | None = None
    retry_after: str | None = None
    content_type: str | None = None
    sku: str | None = None
    product_id: int | None = None

    @property
    def took(self) -> float:
        return self.ended - self.started


@dataclass(slots=True)
class Timeline:
    stop_sent: float = 0.0  # pg_ctl stop: the server starts ending every session
    down: float = 0.0  # the server is gone
    start_sent: float = 0.0  # pg_ctl start
    up: float = 0.0  # the server accepts connections again
    first_success: float = 0.0  # the end of the first API success started after `up`


async def _send(
    client: httpx.AsyncClient, answer: Answer, method: str, url: str, **kw: object
) -> None:
    headers = {"X-Request-ID": answer.request_id}
    try:
        response = await client.request(method, url, headers=headers, **kw)  # type: ignore[arg-type]
    except httpx.TransportError as exc:
        answer.error = type(exc).__name__
    else:
        answer.status = response.status_code
        answer.content_type = response.headers.get("content-type")
        answer.retry_after = response.headers.get("retry-after")
        if response.status_code >= 400 and answer.content_type == "application/problem+json":
            answer.problem_type = response.json().get("type")
        if response.status_code == 201:
            answer.product_id = response.json()["id"]
    finally:
        answer.ended = time.monotonic()


async def _api_client_loop(
    client: httpx.AsyncClient, number: int, read_id: int, answers: list[Answer], done: asyncio.Event
) -> None:
    """A write, then a read, then again, until told to stop."""
    for sequence in itertools.count():
        if done.is_set():
            return
        sku = f"OUT-{number}-{sequence}"
        write = Answer("write", f"outage-w-{number}-{sequence}", time.monotonic(), sku=sku)
        answers.append(write)
        await _send(
            client, write, "POST", PRODUCTS, json={"sku": sku, "name": "Outage", "price": "2.50"}
        )
        read = Answer("read", f"outage-r-{number}-{sequence}", time.monotonic())
        answers.append(read)
        await _send(client, read, "GET", f"{PRODUCTS}/{read_id}")


async def _probe_loop(
    client: httpx.AsyncClient, answers: list[Answer], done: asyncio.Event
) -> None:
    for sequence in itertools.count():
        if done.is_set():
            return
        for kind in ("ready", "live"):
            probe = Answer(kind, f"outage-{kind}-{sequence}", time.monotonic())
            answers.append(probe)
            await _send(client, probe, "GET", f"/health/{kind}")
        await asyncio.sleep(PROBE_EVERY_S)


def _by_status(answers: list[Answer]) -> dict[str, int]:
    return {
        str(status): n for status, n in sorted(Counter(a.status for a in answers).items(), key=str)
    }


def _first_success_after(answers: list[Answer], moment: float) -> float | None:
    ends = [
        a.ended
        for a in answers
        if a.kind in {"write", "read"} and a.started >= moment and a.status in {200, 201}
    ]
    return min(ends, default=None)


async def _outage_under_load(
    postgres: OwnPostgres, base_url: str, answers: list[Answer], timeline: Timeline
) -> None:
    limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=20, limits=limits) as client,
        httpx.AsyncClient(base_url=base_url, timeout=20) as prober,
    ):
        login = await client.post(
            "/api/v1/auth/sessions",
            data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD},
        )
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        seed = await client.post(PRODUCTS, json={"sku": "OUT-READ", "name": "Read", "price": "1"})
        assert seed.status_code == 201, seed.text

        done = asyncio.Event()
        loops = [
            asyncio.create_task(_api_client_loop(client, n, seed.json()["id"], answers, done))
            for n in range(CLIENTS)
        ]
        loops.append(asyncio.create_task(_probe_loop(prober, answers, done)))
        try:
            await asyncio.sleep(LOAD_BEFORE_OUTAGE_S)
            timeline.stop_sent = time.monotonic()
            await asyncio.to_thread(postgres.stop)
            timeline.down = time.monotonic()
            await asyncio.sleep(OUTAGE_S)
            timeline.start_sent = time.monotonic()
            await asyncio.to_thread(postgres.start)
            timeline.up = time.monotonic()
            deadline = timeline.up + RECOVERY_TIMEOUT_S
            while (first := _first_success_after(answers, timeline.up)) is None:
                assert time.monotonic() < deadline, "no success after the database came back"
                await asyncio.sleep(0.05)
            timeline.first_success = first
            await asyncio.sleep(LOAD_AFTER_RECOVERY_S)
        finally:
            done.set()
            _, pending = await asyncio.wait(loops, timeout=30)
            for loop in pending:
                loop.cancel()
        assert not pending, "clients still waiting for answers"


async def _stored(url: str, skus: list[str]) -> tuple[dict[str, int], set[int], set[str]]:
    """Products by SKU, the ids with an insert data-change row, and access-logged request ids."""
    connection = await asyncpg.connect(url)
    try:
        products = await connection.fetch(
            "SELECT sku, id FROM products WHERE sku = ANY($1::text[])", skus
        )
        inserted = await connection.fetch(
            "SELECT entity_id FROM data_changes WHERE entity_type = 'product' AND action = 'insert'"
        )
        logged = await connection.fetch("SELECT request_id FROM access_logs")
    finally:
        await connection.close()
    return (
        {row["sku"]: row["id"] for row in products},
        {int(row["entity_id"]) for row in inserted},
        {row["request_id"] for row in logged},
    )


async def _access_rows_of(url: str, request_ids: set[str]) -> set[str]:
    """The request ids among `request_ids` with an access row, waiting for the writer's
    retries (it backs off while the database is down) up to ACCESS_ROWS_TIMEOUT_S."""
    deadline = time.monotonic() + ACCESS_ROWS_TIMEOUT_S
    while True:
        logged = (await _stored(url, []))[2] & request_ids
        if logged == request_ids or time.monotonic() > deadline:
            return logged
        await asyncio.sleep(0.25)


def _environment(database_url: str, port: int) -> dict[str, str]:
    return server_environment(
        ENVIRONMENT="production",
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        METRICS_TOKEN=METRICS_TOKEN,
        FIRST_SUPERUSER_EMAIL=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="2",
        LOG_LEVEL="WARNING",
        DB_CONNECT_TIMEOUT_MS=str(int(CONNECT_TIMEOUT_S * 1000)),
        DB_POOL_TIMEOUT_MS=str(int(POOL_TIMEOUT_S * 1000)),
        HEALTH_TIMEOUT_MS=str(int(HEALTH_TIMEOUT_S * 1000)),
        AUDIT_FLUSH_INTERVAL_MS="200",
        # The test stands in for a load balancer: its X-Request-ID ties each answer to its
        # access row.
        TRUSTED_PROXIES='["127.0.0.1/32"]',
    )


async def test_a_database_outage_under_load_is_answered_fast_recovered_alone_and_loses_nothing(
    tmp_path: Path,
) -> None:
    answers: list[Answer] = []
    timeline = Timeline()
    log = tmp_path / "server.log"
    with own_postgres() as postgres:
        owner_url, app_url = await postgres.migrated_database()
        port = free_port()
        with server_process("serve", _environment(app_url, port), tmp_path, log) as server:
            base_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as probe:
                await wait_until_ready(server, probe, log)
            await _outage_under_load(postgres, base_url, answers, timeline)
            api = [a for a in answers if a.kind in {"write", "read"}]
            answered_ids = {a.request_id for a in api if a.status is not None}
            logged = await _access_rows_of(owner_url, answered_ids)
            assert server.poll() is None, "the server died"
        writes = [a for a in answers if a.kind == "write"]
        products, inserted, _ = await _stored(owner_url, [a.sku for a in writes if a.sku])
    output = log.read_text(errors="replace")

    # Everything sent from the stop to the end of the restart, for the time bounds.
    during = [a for a in api if timeline.stop_sent <= a.started < timeline.up]
    # The probes sent while the server was entirely gone, which must all say 503.
    probes_during = [
        a for a in answers if a.kind == "ready" and timeline.down <= a.started < timeline.start_sent
    ]
    acknowledged = [a for a in writes if a.status == 201]
    not_carried_out = [
        a for a in writes if a.problem_type == "urn:backoffice:problem:database-unavailable"
    ]
    unknown = [
        a for a in writes if a.problem_type == "urn:backoffice:problem:commit-outcome-unknown"
    ]
    print(  # noqa: T201  # the measured outage, shown with -s
        f"\noutage of {timeline.up - timeline.stop_sent:.1f} s"
        f" (down {timeline.start_sent - timeline.down:.1f} s) under {CLIENTS} clients:"
        f" {len(api)} API requests, by status {_by_status(api)};"
        f" during the outage {len(during)}, the longest {max(a.took for a in during):.3f} s;"
        f" readiness during it {_by_status(probes_during)},"
        f" the longest {max(a.took for a in probes_during):.3f} s;"
        f" first success {timeline.first_success - timeline.up:.3f} s after the"
        f" restart; writes acknowledged {len(acknowledged)}, stored"
        f" {sum(a.sku in products for a in acknowledged)}, with their data change"
        f" {sum(products.get(a.sku or '') in inserted for a in acknowledged)};"
        f" {len(unknown)} answered commit-outcome-unknown;"
        f" access rows: answered {len(answered_ids)}, written {len(logged)}"
    )

    # Every answer is a success or a 503 problem with Retry-After: never a 500, never silence.
    assert {a.status for a in api} <= {200, 201, 503}, (
        f"{Counter(a.status for a in api)}\n{tail(log)}"  # the server says which error
    )
    refused = [a for a in api if a.status == 503]
    assert refused, "the outage was not seen: the test proved nothing"
    for answer in refused:
        assert answer.content_type == "application/problem+json", answer
        assert answer.problem_type in UNAVAILABLE_TYPES, answer
        assert answer.retry_after == str(RETRY_AFTER_S), answer
    # Answered fast: within the connect and pool-checkout bounds.
    assert during, "no request was sent during the outage"
    assert max(a.took for a in during) <= CONNECT_TIMEOUT_S + POOL_TIMEOUT_S + SLACK_S
    # Readiness says 503 within a second, liveness stays 200 throughout.
    assert probes_during
    assert {a.status for a in probes_during} == {503}
    assert max(a.took for a in probes_during) <= 1.0
    assert {a.status for a in answers if a.kind == "live"} == {200}
    # Recovered alone, and no dead connection handed out after: once a request succeeded
    # after the restart, every later one did.
    after = [a for a in api if a.started >= timeline.first_success]
    assert after
    assert [a for a in after if a.status not in {200, 201}] == []
    # Nothing acknowledged is lost: each 201 is stored, with its data-change row.
    assert acknowledged
    assert [a.sku for a in acknowledged if a.sku not in products] == []
    assert [a.sku for a in acknowledged if products[a.sku or ""] != a.product_id] == []
    assert [a.sku for a in acknowledged if a.product_id not in inserted] == []
    # A write answered "not carried out" was not carried out.
    assert [a.sku for a in not_carried_out if a.sku in products] == []
    # Every answered request has its access row, those answered during the outage included.
    assert answered_ids - logged == set()
    assert "Traceback" not in output, tail(log)
