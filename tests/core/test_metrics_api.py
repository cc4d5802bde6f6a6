"""`/metrics`: Prometheus exposition of the HTTP traffic per route template and status, the
requests in flight, the database pool and the access-log queue; protected or switched off by
settings, and never access-logged."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backoffice.audit.access import AccessLogWriter
from backoffice.audit.models import AccessLog
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from backoffice.core.metrics import _forget_dead_workers, prepare_multiprocess_dir
from tests.support.factories import PRODUCTS
from tests.support.http import api_client, assert_problem

METRICS = "/metrics"
PRODUCT = "/api/v1/products/{product_id}"
TOKEN = "scrape-token-0123456789abcdef"

Labels = dict[str, str]


def samples(response: Response) -> list[tuple[str, Labels, float]]:
    """Every sample of an exposition, as (name, labels, value)."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(response: Response, name: str, **labels: str) -> float | None:
    """The sample with this name and exactly these labels, if there is one."""
    matching = [v for n, found, v in samples(response) if n == name and found == labels]
    assert len(matching) <= 1
    return matching[0] if matching else None


async def scrape(client: AsyncClient, **headers: str) -> Response:
    response = await client.get(METRICS, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def create_product(client: AsyncClient, sku: str) -> int:
    response = await client.post(PRODUCTS, json={"sku": sku, "name": "Metered", "price": "1.00"})
    assert response.status_code == 201, response.text
    product_id: int = response.json()["id"]
    return product_id


@pytest.fixture
async def writer(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[AccessLogWriter]:
    """The app's access-log writer on the test transaction, flushed by hand; a tiny queue."""
    writer = AccessLogWriter(sessionmaker, max_queue=3, batch_size=100, flush_interval_s=60)
    app.state.access_log_writer = writer
    yield writer
    await writer.stop()


@pytest.fixture
async def protected_client(settings: Settings, app: FastAPI) -> AsyncIterator[AsyncClient]:
    """An anonymous client of an app whose metrics need TOKEN (on the test's database)."""
    protected = create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}))
    protected.state.database = app.state.database
    async with api_client(protected) as client:
        yield client


# --- HTTP traffic ---------------------------------------------------------------------------


async def test_metrics_are_a_prometheus_text_exposition(client: AsyncClient) -> None:
    response = await scrape(client)

    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "http_requests",
        "http_request_duration_seconds",
        "http_requests_inprogress",
        "db_pool_size",
        "db_pool_checked_out",
        "db_pool_checked_in",
        "db_pool_overflow",
        "audit_access_queue_depth",
        "audit_access_dropped",
        "audit_access_written",
    } <= names


async def test_openmetrics_is_served_to_who_asks_for_it(client: AsyncClient) -> None:
    response = await scrape(client, accept="application/openmetrics-text; version=1.0.0")

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_requests_are_counted_per_route_template_and_exact_status(
    client: AsyncClient,
) -> None:
    product_id = await create_product(client, "MET-1")
    await client.get(f"{PRODUCTS}/{product_id}")
    await client.get(f"{PRODUCTS}/{product_id}")
    await client.get(f"{PRODUCTS}/999999")

    response = await scrape(client)

    count = "http_requests_total"
    assert value(response, count, method="POST", handler=PRODUCTS, status="201") == 1
    assert value(response, count, method="GET", handler=PRODUCT, status="200") == 2
    assert value(response, count, method="GET", handler=PRODUCT, status="404") == 1
    # The template, never the concrete path: one series per route, whatever the ids.
    handlers = {labels["handler"] for _, labels, _ in samples(response) if "handler" in labels}
    assert handlers == {PRODUCTS, PRODUCT}


async def test_latency_is_a_histogram_per_route_template_and_status(
    client: AsyncClient,
) -> None:
    product_id = await create_product(client, "MET-2")
    await client.get(f"{PRODUCTS}/{product_id}")

    response = await scrape(client)

    name = "http_request_duration_seconds"
    labels = {"method": "GET", "handler": PRODUCT, "status": "200"}
    buckets = {
        found["le"]: v
        for n, found, v in samples(response)
        if n == f"{name}_bucket" and {k: found.get(k) for k in labels} == labels
    }
    assert len(buckets) > 5
    assert buckets["+Inf"] == 1
    assert value(response, f"{name}_count", **labels) == 1
    duration = value(response, f"{name}_sum", **labels)
    assert duration is not None
    assert 0 < duration < 10


async def test_unmatched_paths_share_one_series(client: AsyncClient) -> None:
    await client.get("/nowhere/1")
    await client.get("/nowhere/2")

    response = await scrape(client)

    assert value(response, "http_requests_total", method="GET", handler="none", status="404") == 2


async def test_the_scrape_probes_and_docs_are_not_measured(client: AsyncClient) -> None:
    for path in ("/health/live", "/openapi.json", "/docs", METRICS):
        await client.get(path)

    response = await scrape(client)

    counted = {
        labels["handler"] for name, labels, _ in samples(response) if name == "http_requests_total"
    }
    assert counted == set()


async def test_requests_in_flight_are_gauged(app: FastAPI, client: AsyncClient) -> None:
    entered: list[None] = []
    both_in, release = asyncio.Event(), asyncio.Event()

    async def slow() -> dict[str, str]:
        entered.append(None)
        if len(entered) == 2:
            both_in.set()
        await release.wait()
        return {}

    app.add_api_route("/slow", slow)
    requests = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
    try:
        await asyncio.wait_for(both_in.wait(), 5)
        during = await scrape(client)
    finally:
        release.set()
        await asyncio.gather(*requests)
    after = await scrape(client)

    assert value(during, "http_requests_inprogress") == 2
    assert value(after, "http_requests_inprogress") == 0
    slow_ones = {"method": "GET", "handler": "/slow", "status": "200"}
    assert value(after, "http_requests_total", **slow_ones) == 2


# --- the database pool and the access-log queue ---------------------------------------------


async def test_the_database_pool_is_gauged(client: AsyncClient, engine: AsyncEngine) -> None:
    response = await scrape(client)

    pool = engine.pool
    assert value(response, "db_pool_size") == pool.size()  # type: ignore[attr-defined]
    # The test's own connection (every request runs inside it) is checked out.
    checked_out = value(response, "db_pool_checked_out")
    assert checked_out is not None
    assert checked_out >= 1
    assert value(response, "db_pool_overflow") == 0


async def test_the_access_log_queue_depth_drops_and_writes_are_exposed(
    client: AsyncClient, writer: AccessLogWriter
) -> None:
    for _ in range(5):  # a queue of 3: the two oldest entries are dropped
        await client.get(PRODUCTS)

    queued = await scrape(client)
    await writer.flush()
    flushed = await scrape(client)

    assert value(queued, "audit_access_queue_depth") == 3
    assert value(queued, "audit_access_dropped_total") == 2
    assert value(queued, "audit_access_written_total") == 0
    assert value(flushed, "audit_access_queue_depth") == 0
    assert value(flushed, "audit_access_dropped_total") == 2
    assert value(flushed, "audit_access_written_total") == 3


async def test_metrics_are_not_access_logged(
    client: AsyncClient, writer: AccessLogWriter, session: AsyncSession
) -> None:
    await scrape(client)
    await scrape(client)
    await writer.flush()

    assert writer.written == 0
    assert list(await session.scalars(select(AccessLog))) == []


# --- protection and switch ------------------------------------------------------------------


async def test_without_a_token_setting_metrics_are_open(anonymous_client: AsyncClient) -> None:
    await scrape(anonymous_client)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", ""],
)
async def test_a_token_setting_refuses_scrapes_without_it(
    protected_client: AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = await protected_client.get(METRICS, headers=headers)

    assert_problem(response, 401, "invalid-metrics-token")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "http_requests" not in response.text


async def test_a_token_setting_admits_scrapes_with_it(protected_client: AsyncClient) -> None:
    response = await scrape(protected_client, authorization=f"Bearer {TOKEN}")

    assert value(response, "http_requests_inprogress") == 0


async def test_the_token_does_not_replace_api_authentication(
    protected_client: AsyncClient,
) -> None:
    response = await protected_client.get(PRODUCTS, headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 401


async def test_metrics_can_be_switched_off(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_enabled": False}))
    async with api_client(app) as client:
        response = await client.get(METRICS)

    assert_problem(response, 404)
    assert not hasattr(app.state, "metrics")


async def test_apps_do_not_share_their_numbers(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    await client.get(f"{PRODUCTS}/999999")
    other = create_app(settings)
    async with api_client(other) as other_client:
        response = await scrape(other_client)

    not_found = {"method": "GET", "handler": PRODUCT, "status": "404"}
    assert value(response, "http_requests_total", **not_found) is None


# --- multiprocess bookkeeping (the server test runs the mode itself) ------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "prometheus"


def test_a_given_multiprocess_directory_is_emptied_of_a_previous_run(directory: Path) -> None:
    directory.mkdir()
    for name in ("counter_12.db", "histogram_12.db", "gauge_livesum_12.db", "notes.txt"):
        (directory / name).write_bytes(b"")

    prepare_multiprocess_dir(directory)

    assert [path.name for path in directory.iterdir()] == ["notes.txt"]


def test_live_gauges_of_dead_workers_are_forgotten(directory: Path) -> None:
    directory.mkdir()
    dead = 4_194_305  # above Linux's largest pid: no process has it
    for name in (
        f"gauge_livesum_{dead}.db",
        f"gauge_livesum_{os.getpid()}.db",
        f"counter_{dead}.db",  # totals outlive their worker
    ):
        (directory / name).write_bytes(b"")

    _forget_dead_workers(str(directory))

    assert sorted(path.name for path in directory.iterdir()) == sorted(
        [f"gauge_livesum_{os.getpid()}.db", f"counter_{dead}.db"]
    )
