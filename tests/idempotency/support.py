"""What the idempotency tests share: keys as headers, the key rows, the stock of a product."""

from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support.factories import PRODUCTS

REPLAYED = "idempotent-replayed"


def keyed(key: str) -> dict[str, str]:
    """The Idempotency-Key header for `key`, as the draft spells it: a quoted string."""
    return {"Idempotency-Key": f'"{key}"'}


def adjustments(product: dict[str, Any]) -> str:
    return f"{PRODUCTS}/{product['id']}/stock-adjustments"


async def adjust(client: AsyncClient, product: dict[str, Any], delta: int, key: str) -> Response:
    return await client.post(adjustments(product), json={"delta": delta}, headers=keyed(key))


def same_answer(first: Response, repeat: Response) -> None:
    """`repeat` is `first` replayed: status, body and the headers a replay keeps."""
    assert repeat.status_code == first.status_code, repeat.text
    assert repeat.content == first.content
    for header in ("content-type", "location", "etag"):
        assert repeat.headers.get(header) == first.headers.get(header), header
    assert REPLAYED not in first.headers
    assert repeat.headers[REPLAYED] == "true"


async def key_rows(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        text("SELECT scope, key, state, response_status FROM idempotency_keys ORDER BY key")
    )
    return [dict(row._mapping) for row in rows]


async def age_key(
    session: AsyncSession, key: str, *, lease: bool = False, life: bool = False
) -> None:
    """Move a key's lease, or its whole life, into the past: as if that much time had gone."""
    if lease:
        await session.execute(
            text("UPDATE idempotency_keys SET lease_until = now() - interval '1 s' WHERE key = :k"),
            {"k": key},
        )
    if life:
        await session.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 s' WHERE key = :k"),
            {"k": key},
        )
    await session.commit()
