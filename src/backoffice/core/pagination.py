"""Keyset pagination with opaque, signed cursors.

A page is `WHERE (key, id) > (:last_key, :last_id) ORDER BY key, id LIMIT n`, which an index on
`(key, id)` answers by seeking, so page 1,000 costs what page 1 does. The cursor carries the
last row's key values and the sort it belongs to, signed so a client can neither forge nor
tamper with it. The key is the app's own (from its SECRET_KEY, made in create_app): a request
binds its app's `CursorSigner` (bind_cursor_signer), which the repository's pages then use.
"""

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Protocol

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, tuple_

from backoffice.core.errors import DomainError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_SIGNATURE_BYTES = 16


class InvalidCursorError(DomainError):
    status_code = 400
    title = "Invalid Cursor"
    slug = "invalid-cursor"


class Page[T](BaseModel):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )

    def to_response(self) -> Response:
        """Serialized once; the route declares `response_model` for the OpenAPI document."""
        return Response(self.model_dump_json(), media_type="application/json")


LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}.")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=1024, description="Opaque cursor from the previous page's `next_cursor`."),
]


class FilterQuery(BaseModel):
    """A query string of filters and a sort (a list's, an export's). An unknown parameter is
    an error, so that a misspelt filter never silently returns the whole list."""

    model_config = ConfigDict(extra="forbid")


class KeysetQuery(FilterQuery):
    """The query string of a list: a page size and the cursor of the page before. Each list
    adds its own filters and sort."""

    limit: LimitQuery = DEFAULT_LIMIT
    cursor: CursorQuery = None


@dataclass(frozen=True, slots=True)
class KeysetOrder:
    """One sort order: its public name, the key column and a unique tie-breaker."""

    name: str
    key: ColumnElement[Any]
    tiebreaker: ColumnElement[Any]
    descending: bool = False

    @property
    def columns(self) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        return (self.key, self.tiebreaker)


def keyset_orders[S: StrEnum](sorts: type[S], model: type[Any]) -> dict[S, KeysetOrder]:
    """The usual orders: sort `field` (or `-field`, descending) is the model's column of that
    name, ties broken by id. A slice with other keys adds or overrides entries."""
    return {
        sort: KeysetOrder(
            name=sort.value,
            key=getattr(model, sort.value.removeprefix("-")),
            tiebreaker=model.id,
            descending=sort.value.startswith("-"),
        )
        for sort in sorts
    }


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.isoformat,
    date: date.isoformat,
    Decimal: str,
}
# Any other type (an enum, say) is rebuilt by calling the type with the encoded value.
_DECODERS: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
}


class CursorSigner:
    """Signs cursors with a key derived from one SECRET_KEY: an app accepts the cursors it (or
    a node sharing its key) issued, and no other's."""

    __slots__ = ("_key",)

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), b"pagination-cursor", hashlib.sha256).digest()

    def sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


# The signer of the app serving the current request. Repositories page without the request at
# hand, and a request runs in a context of its own, so the binding ends with it.
_request_signer: ContextVar[CursorSigner] = ContextVar("cursor_signer")


def bind_cursor_signer(request: Request) -> None:
    """Sign and check the request's cursors with the key of the app serving it, made at
    start-up (`app.state.cursor_signer`). Called by the read dependencies (get_read_session,
    get_read_connection), through which every page is read: one dependency fewer to solve
    on every request than a dependency of its own."""
    _request_signer.set(request.app.state.cursor_signer)


def _signer_in_use(signer: CursorSigner | None) -> CursorSigner:
    if signer is not None:
        return signer
    try:
        return _request_signer.get()
    except LookupError:
        raise RuntimeError(
            "no cursor signer: page through a read dependency (bind_cursor_signer), or pass one"
        ) from None


def encode_cursor(
    order: KeysetOrder, values: Sequence[Any], signer: CursorSigner | None = None
) -> str:
    """`values` of the page's last row as an opaque cursor, signed by `signer` (by default
    the request's app's)."""
    encoded = [_ENCODERS.get(type(value), lambda v: v)(value) for value in values]
    payload = json.dumps([order.name, encoded], separators=(",", ":")).encode()
    signature = _signer_in_use(signer).sign(payload)
    return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")


def _decode(python_type: type, value: Any) -> Any:
    return _DECODERS.get(python_type, python_type)(value)


def decode_cursor(
    cursor: str, order: KeysetOrder, signer: CursorSigner | None = None
) -> tuple[Any, ...]:
    """The key values `cursor` carries, if `signer` (by default the request's app's) signed it
    for `order`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError("The cursor is malformed; start again without it.") from exc
    signature, payload = raw[:_SIGNATURE_BYTES], raw[_SIGNATURE_BYTES:]
    if not hmac.compare_digest(signature, _signer_in_use(signer).sign(payload)):
        raise InvalidCursorError("The cursor is not one this API issued; start again without it.")
    name, values = json.loads(payload)
    if name != order.name:
        raise InvalidCursorError(
            f"The cursor belongs to sort={name!r}, not sort={order.name!r}; keep the same sort "
            "while paging."
        )
    return tuple(
        None if value is None else _decode(column.type.python_type, value)
        for column, value in zip(order.columns, values, strict=True)
    )


class KeyedRow(Protocol):
    """A row whose values are read by column name: SQLAlchemy's RowMapping, asyncpg's Record."""

    def __getitem__(self, key: str, /) -> Any: ...


def seek[S: Select[Any]](
    statement: S, order: KeysetOrder, after: Sequence[Any] | None, limit: int
) -> S:
    """The `limit` rows of `statement` that come after the key values `after` (from the
    start if None), in `order`."""
    columns = order.columns
    if after is not None:
        row, last = tuple_(*columns), tuple_(*after)
        statement = statement.where(row < last if order.descending else row > last)
    ordering = [column.desc() if order.descending else column.asc() for column in columns]
    return statement.order_by(*ordering).limit(limit)


def apply_keyset[S: Select[Any]](
    statement: S, order: KeysetOrder, cursor: str | None, limit: int
) -> S:
    """Add the seek condition, the ordering and a LIMIT one past the page (to know whether a
    next page exists)."""
    after = None if cursor is None else decode_cursor(cursor, order)
    return seek(statement, order, after, limit + 1)


def key_of(row: KeyedRow, order: KeysetOrder) -> tuple[Any, ...]:
    """The row's values of the order's columns: where the next page or batch starts."""
    return tuple(row[str(column.key)] for column in order.columns)


def _typed(column: ColumnElement[Any], value: Any) -> Any:
    python_type = column.type.python_type
    return value if value is None or isinstance(value, python_type) else python_type(value)


def typed_key_of(row: KeyedRow, order: KeysetOrder) -> tuple[Any, ...]:
    """`key_of`, each value of its column's Python type, to be bound into the next query
    (the driver reads an enum as text, which PostgreSQL will not compare with the enum)."""
    return tuple(
        _typed(column, value)
        for column, value in zip(order.columns, key_of(row, order), strict=True)
    )


def next_cursor(rows: Sequence[KeyedRow], order: KeysetOrder, limit: int) -> str | None:
    """The cursor after the page's last row, if the query found a row past the page."""
    if len(rows) <= limit:
        return None
    return encode_cursor(order, key_of(rows[limit - 1], order))
