from datetime import UTC, datetime
from decimal import Decimal

import pytest

from backoffice.core.pagination import InvalidCursorError, KeysetOrder, decode_cursor, encode_cursor
from backoffice.products.models import Product

BY_PRICE = KeysetOrder("price", Product.price, Product.id)  # type: ignore[arg-type]
BY_CREATED = KeysetOrder("-created_at", Product.created_at, Product.id, descending=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("order", "values"),
    [
        (BY_PRICE, (Decimal("12.30"), 7)),
        (BY_CREATED, (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), 42)),
    ],
)
def test_cursor_round_trips_typed_values(order: KeysetOrder, values: tuple[object, int]) -> None:
    assert decode_cursor(encode_cursor(order, values), order) == values


def test_cursor_is_opaque() -> None:
    cursor = encode_cursor(BY_PRICE, (Decimal("12.30"), 7))

    assert "12.30" not in cursor
    assert cursor.isascii()


def test_cursor_with_flipped_bit_is_refused() -> None:
    cursor = encode_cursor(BY_PRICE, (Decimal("12.30"), 7))
    flipped = ("B" if cursor[5] == "A" else "A").join((cursor[:5], cursor[6:]))

    with pytest.raises(InvalidCursorError):
        decode_cursor(flipped, BY_PRICE)


def test_cursor_of_another_order_is_refused() -> None:
    with pytest.raises(InvalidCursorError, match="sort"):
        decode_cursor(encode_cursor(BY_PRICE, (Decimal(1), 1)), BY_CREATED)
