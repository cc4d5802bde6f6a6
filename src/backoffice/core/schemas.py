"""What every slice's request models share: strictness, the not-null rule, common field types."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field

EMAIL_MAX_LENGTH = 254
# The largest PostgreSQL `integer`: ids and counts above it would fail in the database, so they
# are refused as input first (422, not 500).
MAX_INT4 = 2**31 - 1

Email = Annotated[EmailStr, Field(max_length=EMAIL_MAX_LENGTH, examples=["ada@example.com"])]


class RequestModel(BaseModel):
    """A request body: unknown fields are an error (no mass assignment), and no silent
    coercion of "12" to 12. Fields that arrive as strings by nature (enums, dates) opt out with
    `Strict(False)`."""

    model_config = ConfigDict(extra="forbid", strict=True)


def not_null(value: Any) -> Any:
    """For PATCH bodies, as `field_validator(...)(not_null)`: it only runs for values the client
    sent, so omitting a field is fine and sending null is not."""
    if value is None:
        raise ValueError("may be omitted but not null")
    return value
