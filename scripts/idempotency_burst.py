"""Issue 15's idempotency figures: N concurrent requests with one Idempotency-Key against
running servers (one or more base URLs: the requests are spread over them).

Each client retries the draft's 409 (`idempotency-key-in-use`) after a short pause until it
gets a final answer; the script prints how many ran, how many were replays, how many 409s
were answered meanwhile, the time taken, whether the ten answers are identical, and the
stock's move. The servers must share one database (e.g. `python -m backoffice serve` with
WORKERS=2, or two servers on one DATABASE_URL).

    BURST_EMAIL=admin@example.com BURST_PASSWORD=... uv run python scripts/idempotency_burst.py \\
        --base-url http://127.0.0.1:8000 [--base-url http://127.0.0.1:8001] [--requests 10]
"""

import argparse
import asyncio
import os
import time
import uuid
from collections import Counter
from typing import Any

import httpx

API = "/api/v1"
RETRY_PAUSE_S = 0.02  # shorter than the answer's Retry-After: the figures are about the race


async def _token(client: httpx.AsyncClient) -> str:
    response = await client.post(
        f"{API}/auth/sessions",
        data={"username": os.environ["BURST_EMAIL"], "password": os.environ["BURST_PASSWORD"]},
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


async def _until_final(
    client: httpx.AsyncClient, url: str, key: str, figures: Counter[str]
) -> httpx.Response:
    while True:
        response = await client.post(
            url, json={"delta": 3}, headers={"Idempotency-Key": f'"{key}"'}
        )
        if response.status_code != httpx.codes.CONFLICT:
            return response
        figures[response.json()["type"].rsplit(":", 1)[-1]] += 1
        await asyncio.sleep(RETRY_PAUSE_S)


async def burst(base_urls: list[str], requests: int) -> dict[str, Any]:
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in base_urls]
    try:
        token = await _token(clients[0])
        for client in clients:
            client.headers["Authorization"] = f"Bearer {token}"
        created = await clients[0].post(
            f"{API}/products",
            json={
                "sku": f"BURST-{uuid.uuid4().hex[:10]}",
                "name": "Burst",
                "price": "1.00",
                "stock_quantity": 5,
            },
        )
        created.raise_for_status()
        product = created.json()
        url = f"{API}/products/{product['id']}/stock-adjustments"
        key = f"burst-{uuid.uuid4()}"
        figures: Counter[str] = Counter()
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(_until_final(clients[n % len(clients)], url, key, figures) for n in range(requests))
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        stock = (await clients[0].get(f"{API}/products/{product['id']}")).json()["stock_quantity"]
    finally:
        for client in clients:
            await client.aclose()
    replayed = sum(answer.headers.get("idempotent-replayed") == "true" for answer in answers)
    identical = len({(a.status_code, a.content, a.headers.get("etag")) for a in answers}) == 1
    return {
        "requests": requests,
        "servers": len(base_urls),
        "ran": requests - replayed,
        "replayed": replayed,
        "409 in use (retried)": figures["idempotency-key-in-use"],
        "other 409s": sum(figures.values()) - figures["idempotency-key-in-use"],
        "identical answers": identical,
        "stock": f"5 -> {stock} (one move of +3 expected: 8)",
        "elapsed_ms": round(elapsed_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", action="append", required=True)
    parser.add_argument("--requests", type=int, default=10)
    arguments = parser.parse_args()
    for name, value in asyncio.run(burst(arguments.base_url, arguments.requests)).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
