"""What every slice's request models share: strictness, PATCH fields, common field types.

The OpenAPI document is generated from these types, and contract tests hold the API to it: a
value the document allows must be accepted, so every rule a validator applies is also stated in
the schema (as a pattern, a bound or a type), not only in Python.
"""

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.config import JsonDict

EMAIL_MAX_LENGTH = 254
# The largest PostgreSQL `integer`: ids and counts above it would fail in the database, so they
# are refused as input first (422, not 500).
MAX_INT4 = 2**31 - 1
# For stripped text with a minimum length of 1: "contains a character that stripping keeps" is
# how JSON Schema says "not blank once stripped" (and, like every string here, no NUL: see
# core/openapi.py). The class is spelled out because pydantic strips Unicode White_Space, which
# is not what every regex engine means by \s.
_WHITESPACE = r"\t\n\x0b\x0c\r\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"^[^\x00]*[^\x00{_WHITESPACE}][^\x00]*$"
# Email addresses: ASCII, as a pattern that the document states and validation enforces alike, so
# a client (or a schema-driven test) knows exactly what is accepted: a local part of one or two
# dot-separated atoms (64 characters at most), one to four domain labels of single-hyphen words
# (63 characters each at most), and a letters-only top-level domain. Nothing here sends mail, so
# special-use domains (`example.test`) are as good as any.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,32}"
_LABEL = r"[A-Za-z0-9]{1,20}(-[A-Za-z0-9]{1,20}){0,2}"
EMAIL_PATTERN = rf"^{_ATOM}(\.{_ATOM})?@({_LABEL}\.){{1,4}}[A-Za-z]{{2,24}}$"


def _normalised_email(address: str) -> str:
    """Domains are case-insensitive (local parts, in principle, are not)."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX_LENGTH, pattern=EMAIL_PATTERN),
    AfterValidator(_normalised_email),
    Field(json_schema_extra={"format": "email"}, examples=["ada@example.com"]),
]


def _allows_null(schema: JsonDict) -> bool:
    options = schema.get("anyOf")
    if isinstance(options, list):
        return any(isinstance(option, dict) and _allows_null(option) for option in options)
    return schema.get("type") == "null"


def _drop_stand_in_defaults(schema: JsonDict) -> None:
    """An `omittable()` field's None default is a stand-in for "not sent", not a value a client
    could send (its schema refuses null), so the document must not offer it."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for field in properties.values():
        if (
            isinstance(field, dict)
            and field.get("default", ...) is None
            and not _allows_null(field)
        ):
            del field["default"]


class RequestModel(BaseModel):
    """A request body: unknown fields are an error (no mass assignment), and no silent
    coercion of "12" to 12. Fields that arrive as strings by nature (enums, dates) opt out with
    `Strict(False)`."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra=_drop_stand_in_defaults
    )


def omittable(**kwargs: Any) -> Any:
    """A PATCH field that may be left out but not sent as null: declare it with its plain type
    (`name: Name = omittable()`), so an explicit null fails validation and the document says
    the field is not nullable. None only stands for "not sent" (`exclude_unset` drops it)."""
    return Field(default=None, **kwargs)


def _whole_number(value: Any) -> Any:
    """JSON has one number type, and JSON Schema counts 7.0 as the integer 7 (7.5 is not)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer field of a request body: a PostgreSQL `integer`, sent as 7 or 7.0.
Int4 = Annotated[int, BeforeValidator(_whole_number), Field(ge=-MAX_INT4, le=MAX_INT4)]
# A reference to a stored record by id.
RecordId = Annotated[int, BeforeValidator(_whole_number), Field(gt=0, le=MAX_INT4)]

# Money: up to 10 digits before the point and 2 after (numeric(12, 2)), never negative.
CENTS = Decimal("0.01")
MONEY_MAX = Decimal("9999999999.99")
MONEY_TEXT = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
_MONEY_ERROR = 'must be an amount from 0 to 9999999999.99 with at most 2 decimals, e.g. "89.90"'
# Binary floats cannot hold most cent amounts exactly (0.57 arrives as 0.5700000000000001).
_FLOAT_NOISE = Decimal("1e-9")


def _amount(value: Any) -> Decimal:
    if isinstance(value, str) and re.fullmatch(MONEY_TEXT, value):
        return Decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float):
        try:
            amount = Decimal(repr(value))
            if abs(amount - amount.quantize(CENTS)) <= _FLOAT_NOISE:
                return amount
        except InvalidOperation:  # inf, nan
            pass
    raise ValueError(_MONEY_ERROR)


def _money(value: Any) -> Decimal:
    amount = value if isinstance(value, Decimal) else _amount(value)
    if not amount.is_finite() or not 0 <= amount <= MONEY_MAX:
        raise ValueError(_MONEY_ERROR)
    return amount.quantize(CENTS).copy_abs()  # -0.00 is 0.00


_MONEY_NUMBER: JsonDict = {"type": "number", "minimum": 0, "maximum": 9999999999.99}
_MONEY_STRING: JsonDict = {"type": "string", "pattern": MONEY_TEXT}
# In a JSON body: a number or, to keep it exact, a string ("89.90").
Money = Annotated[
    Decimal,
    PlainValidator(_money),
    WithJsonSchema(
        {"anyOf": [_MONEY_NUMBER | {"multipleOf": 0.01}, _MONEY_STRING], "examples": ["89.90"]},
        mode="validation",
    ),
]
# In a query string, where every value is text.
MoneyQuery = Annotated[
    Decimal, PlainValidator(_money), WithJsonSchema(_MONEY_STRING | {"examples": ["89.90"]})
]

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _day_text(value: Any) -> Any:
    # A date is "YYYY-MM-DD" (RFC 3339 full-date): not a number, not a timestamp.
    if isinstance(value, date) or (isinstance(value, str) and _DAY.fullmatch(value)):
        return value
    raise ValueError("must be a date as a string, YYYY-MM-DD")


def _instant_text(value: Any) -> Any:
    # An instant is an RFC 3339 date-time with its offset: not a number of seconds.
    if isinstance(value, datetime) or (isinstance(value, str) and _INSTANT.fullmatch(value)):
        return value
    raise ValueError("must be a date-time with a time zone, e.g. 2026-12-24T09:00:00Z")


# date.min and date.max stand for -infinity and infinity in the driver, so they are excluded.
Day = Annotated[date, Strict(False), BeforeValidator(_day_text), Field(gt=date.min, lt=date.max)]
Instant = Annotated[AwareDatetime, Strict(False), BeforeValidator(_instant_text)]
