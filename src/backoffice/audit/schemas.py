from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from backoffice.audit.models import (
    PATH_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    DataChangeAction,
)
from backoffice.core.pagination import KeysetQuery
from backoffice.core.schemas import MAX_INT4, Instant

METHOD_MAX_LENGTH = 16
ENTITY_ID_MAX_LENGTH = 128


def _ip_text(value: Any) -> Any:
    # The driver may hand INET back as an `ipaddress` object; clients get its text.
    if isinstance(value, IPv4Interface | IPv6Interface):
        return str(value.ip) if value.network.prefixlen == value.max_prefixlen else str(value)
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    return value


class AuditEntity(StrEnum):
    """The models whose changes are recorded (their `__audit_entity__`)."""

    PRODUCT = "product"
    CUSTOMER = "customer"
    TASK = "task"
    USER = "user"
    ROLE = "role"
    ROLE_GRANT = "role_grant"
    USER_ROLE = "user_role"
    API_KEY = "api_key"


class AuditSort(StrEnum):
    ID = "id"
    ID_DESC = "-id"


class AccessLogRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    request_id: str
    user_id: int | None = Field(description="The verified caller; null for anonymous calls.")
    api_key_id: int | None = Field(
        description="The API key the caller authenticated with; null for a password login."
    )
    client_ip: Annotated[str | None, BeforeValidator(_ip_text)]
    user_agent: str | None
    method: str
    path: str
    status: int
    duration_ms: float


class DataChangeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    entity_type: str = Field(examples=["product"])
    entity_id: str = Field(
        description="The primary key; a composite key's parts joined with `/`.", examples=["42"]
    )
    action: DataChangeAction
    old_values: dict[str, Any] | None = Field(
        description="Before the change: every column for a delete, the changed ones for an "
        "update, null for an insert. Secrets read `***`."
    )
    new_values: dict[str, Any] | None = Field(
        description="After the change: every column for an insert, the changed ones for an "
        "update, null for a delete. Secrets read `***`."
    )
    actor_user_id: int | None = Field(description="Who made the change; null outside a request.")
    api_key_id: int | None = Field(
        description="The API key the actor used (a service account's); null otherwise."
    )
    request_id: str | None


RequestId = Annotated[str, StringConstraints(min_length=1, max_length=REQUEST_ID_MAX_LENGTH)]
UserId = Annotated[int, Field(gt=0, le=MAX_INT4)]


class AuditListQuery(KeysetQuery):
    """What both audit lists share: the id order, the page, the request and the time window."""

    request_id: Annotated[RequestId | None, Field(description="One request's records.")] = None
    # since later than until is an empty window: it matches nothing.
    since: Annotated[
        Instant | None,
        Field(description="Occurred at or after this instant (with a time zone)."),
    ] = None
    until: Annotated[
        Instant | None,
        Field(description="Occurred before this instant (with a time zone)."),
    ] = None
    sort: Annotated[AuditSort, Field(description="`-id`: newest first; `id`: oldest first.")] = (
        AuditSort.ID_DESC
    )


class AccessLogListQuery(AuditListQuery):
    user_id: UserId | None = None
    status: Annotated[int | None, Field(ge=100, le=599, description="HTTP status code.")] = None
    method: Annotated[
        str | None,
        StringConstraints(min_length=1, max_length=METHOD_MAX_LENGTH, to_upper=True),
        Field(description="HTTP method, in any case.", examples=["POST"]),
    ] = None
    path_prefix: Annotated[
        str | None,
        StringConstraints(min_length=1, max_length=PATH_MAX_LENGTH),
        Field(description="Path starts with this (`%` and `_` are literal).", examples=["/api"]),
    ] = None


class DataChangeListQuery(AuditListQuery):
    entity_type: AuditEntity | None = None
    entity_id: Annotated[
        str | None,
        StringConstraints(min_length=1, max_length=ENTITY_ID_MAX_LENGTH),
        Field(description="The object's primary key, as `entity_id` shows it."),
    ] = None
    action: DataChangeAction | None = None
    actor_user_id: UserId | None = None
