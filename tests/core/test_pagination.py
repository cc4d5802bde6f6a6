import secrets
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.core.main import create_app
from backoffice.core.pagination import (
    CursorSigner,
    InvalidCursorError,
    KeysetOrder,
    decode_cursor,
    encode_cursor,
)
from backoffice.products.models import Product
from tests.support.http import assert_problem
from tests.support.users import tokens_for

BY_PRICE = KeysetOrder("price", Product.price, Product.id)  # type: ignore[arg-type]
BY_CREATED = KeysetOrder("-created_at", Product.created_at, Product.id, descending=True)  # type: ignore[arg-type]
SIGNER = CursorSigner(secrets.token_urlsafe(48))


@pytest.mark.parametrize(
    ("order", "values"),
    [
        (BY_PRICE, (Decimal("12.30"), 7)),
        (BY_CREATED, (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), 42)),
    ],
)
def test_cursor_round_trips_typed_values(order: KeysetOrder, values: tuple[object, int]) -> None:
    assert decode_cursor(encode_cursor(order, values, SIGNER), order, SIGNER) == values


def test_cursor_is_opaque() -> None:
    cursor = encode_cursor(BY_PRICE, (Decimal("12.30"), 7), SIGNER)

    assert "12.30" not in cursor
    assert cursor.isascii()


def test_cursor_with_flipped_bit_is_refused() -> None:
    cursor = encode_cursor(BY_PRICE, (Decimal("12.30"), 7), SIGNER)
    flipped = ("B" if cursor[5] == "A" else "A").join((cursor[:5], cursor[6:]))

    with pytest.raises(InvalidCursorError):
        decode_cursor(flipped, BY_PRICE, SIGNER)


def test_cursor_of_another_order_is_refused() -> None:
    with pytest.raises(InvalidCursorError, match="sort"):
        decode_cursor(encode_cursor(BY_PRICE, (Decimal(1), 1), SIGNER), BY_CREATED, SIGNER)


def test_cursor_signed_with_another_key_is_refused() -> None:
    cursor = encode_cursor(BY_PRICE, (Decimal(1), 1), CursorSigner(secrets.token_urlsafe(48)))

    with pytest.raises(InvalidCursorError, match="not one this API issued"):
        decode_cursor(cursor, BY_PRICE, SIGNER)


def test_paging_outside_a_request_needs_a_signer() -> None:
    with pytest.raises(RuntimeError, match="bind_cursor_signer"):
        encode_cursor(BY_PRICE, (Decimal(1), 1))


async def test_an_app_accepts_its_own_cursors_and_not_those_of_an_app_with_another_key(
    app: FastAPI, session: AsyncSession, settings: Settings, superuser: User
) -> None:
    """Each app signs with its own SECRET_KEY (two in one process, as in the tests), never with
    the process's cached settings."""
    session.add_all(Product(sku=f"KEYED-{n}", name=f"Keyed {n}", price=Decimal(n)) for n in (1, 2))
    await session.commit()
    other_settings = settings.model_copy(
        update={"secret_key": SecretStr(secrets.token_urlsafe(48))}
    )
    other = create_app(other_settings)
    other.state.database = app.state.database

    async def first_page_cursor(client: AsyncClient) -> str:
        response = await client.get("/api/v1/products", params={"limit": 1})
        assert response.status_code == 200
        cursor: str = response.json()["next_cursor"]
        return cursor

    clients = []
    for each_app, each_settings in ((app, settings), (other, other_settings)):
        token = (await tokens_for(session, each_settings, superuser)).access_token
        clients.append(
            AsyncClient(
                transport=ASGITransport(app=each_app, raise_app_exceptions=False),
                base_url="http://testserver",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
    async with clients[0] as own, clients[1] as foreign:
        own_cursor = await first_page_cursor(own)
        foreign_cursor = await first_page_cursor(foreign)

        for client, cursor in ((own, own_cursor), (foreign, foreign_cursor)):
            page = await client.get("/api/v1/products", params={"limit": 1, "cursor": cursor})
            assert page.status_code == 200
        for client, cursor in ((own, foreign_cursor), (foreign, own_cursor)):
            refused = await client.get("/api/v1/products", params={"limit": 1, "cursor": cursor})
            assert_problem(refused, 400, "invalid-cursor")
