"""Idempotency-Key where it matters: concurrent repeats, several app instances on one
database, and a database that fails mid-request. Requests really commit here (the
committed client's database, emptied afterwards)."""

import asyncio
import time
from collections import Counter
from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backoffice.core.config import Settings
from backoffice.core.main import create_app
from tests.idempotency.conftest import StartNode
from tests.idempotency.support import REPLAYED, adjust, keyed, same_answer
from tests.support.factories import PRODUCTS, product_payload
from tests.support.http import assert_problem

IN_USE = "urn:backoffice:problem:idempotency-key-in-use"


async def _product(client: AsyncClient, stock: int) -> dict[str, Any]:
    response = await client.post(PRODUCTS, json=product_payload(stock_quantity=stock))
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


async def _stock_updates(engine: AsyncEngine, product: dict[str, Any]) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM data_changes WHERE entity_type = 'product' "
                "AND entity_id = :id AND action = 'update'"
            ),
            {"id": str(product["id"])},
        )
    return int(count or 0)


async def _stock(client: AsyncClient, product: dict[str, Any]) -> int:
    quantity: int = (await client.get(f"{PRODUCTS}/{product['id']}")).json()["stock_quantity"]
    return quantity


async def test_ten_concurrent_requests_with_one_key_move_stock_once(
    committed_client: AsyncClient, start_node: StartNode, engine: AsyncEngine
) -> None:
    """The issue's proof, over two app instances: one request runs; the others get the
    draft's 409 while it runs, retry as its Retry-After says (sooner here), and then get its
    answer replayed. All ten final answers are the same answer."""
    other_node = await start_node()
    product = await _product(committed_client, stock=5)
    figures: Counter[str] = Counter()  # scripts/idempotency_burst.py prints these figures

    async def request_until_final(client: AsyncClient) -> Response:
        while True:
            response = await adjust(client, product, 3, "burst")
            if response.status_code != 409:
                return response
            assert_problem(response, 409, "idempotency-key-in-use")
            assert response.json()["type"] == IN_USE
            figures["409 in use"] += 1
            await asyncio.sleep(0.02)

    answers = await asyncio.gather(
        *(request_until_final((committed_client, other_node)[n % 2]) for n in range(10))
    )

    first = [answer for answer in answers if REPLAYED not in answer.headers]
    replays = [answer for answer in answers if REPLAYED in answer.headers]
    assert len(first) == 1
    assert len(replays) == 9
    assert first[0].status_code == 200, first[0].text
    for replay in replays:
        same_answer(first[0], replay)
    assert await _stock(committed_client, product) == 8
    assert await _stock_updates(engine, product) == 1


async def test_a_key_used_on_one_instance_is_replayed_by_another(
    committed_client: AsyncClient, start_node: StartNode, engine: AsyncEngine
) -> None:
    other_node = await start_node()
    payload = product_payload()
    first = await committed_client.post(PRODUCTS, json=payload, headers=keyed("two-nodes"))
    repeat = await other_node.post(PRODUCTS, json=payload, headers=keyed("two-nodes"))

    assert first.status_code == 201, first.text
    same_answer(first, repeat)
    async with engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT count(*) FROM products WHERE sku = :sku"), {"sku": payload["sku"]}
        )
    assert stored == 1


async def test_a_503_during_an_outage_is_not_stored_and_the_retry_runs(
    committed_client: AsyncClient, start_node: StartNode, engine: AsyncEngine
) -> None:
    """The database cannot serve the route (its statement times out, held up by a lock): the
    503 is not the key's answer, and the retry, once the database serves again, runs once."""
    impatient = await start_node(db_statement_timeout_ms=300)
    product = await _product(committed_client, stock=5)
    async with engine.connect() as blocker:
        transaction = await blocker.begin()
        await blocker.execute(
            text("SELECT 1 FROM products WHERE id = :id FOR UPDATE"), {"id": product["id"]}
        )
        during = await adjust(impatient, product, 1, "outage")
        await transaction.rollback()

    after = await adjust(impatient, product, 1, "outage")
    repeat = await adjust(committed_client, product, 1, "outage")

    assert_problem(during, 503, "database-unavailable")
    assert REPLAYED not in after.headers
    assert after.status_code == 200, after.text
    same_answer(after, repeat)
    assert await _stock(committed_client, product) == 6
    assert await _stock_updates(engine, product) == 1


async def test_the_running_app_purges_expired_keys_periodically(
    committed_client: AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    product = await _product(committed_client, stock=5)
    for key in ("expiring", "kept"):
        await adjust(committed_client, product, 1, key)
    async with engine.begin() as owner:
        await owner.execute(
            text("UPDATE idempotency_keys SET expires_at = now() WHERE key = 'expiring'")
        )
    app = create_app(settings.model_copy(update={"idempotency_purge_interval_minutes": 0.001}))

    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 10
        while await _keys(engine) != ["kept"]:
            assert time.monotonic() < deadline, "the job did not purge in time"
            await asyncio.sleep(0.05)


async def _keys(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list(await connection.scalars(text("SELECT key FROM idempotency_keys ORDER BY key")))
