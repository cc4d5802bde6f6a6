"""Requests and answers of `/service-accounts` and `/api-keys`."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field, Strict, StringConstraints, field_validator

from backoffice.auth.models import API_KEY_NAME_MAX_LENGTH
from backoffice.auth.permissions import ALL_PERMISSIONS, Action, Module
from backoffice.auth.schemas import FullName
from backoffice.core.pagination import KeysetQuery
from backoffice.core.schemas import NOT_BLANK, RecordId, RequestModel

_MODULES = "|".join(Module)
_ACTIONS = "|".join(Action)
PermissionName = Annotated[
    str,
    StringConstraints(pattern=f"^({_MODULES}):({_ACTIONS})$"),
    Field(description="`module:action`", examples=["products:update"]),
]
KeyName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=API_KEY_NAME_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["warehouse stock sync"]),
]


class ServiceAccountCreate(RequestModel):
    name: FullName = Field(description="What the account is for.", examples=["Shop front"])


class ApiKeyCreate(RequestModel):
    service_account_id: RecordId = Field(description="The service account the key acts as.")
    name: KeyName
    permissions: Annotated[list[PermissionName], Field(max_length=len(ALL_PERMISSIONS))] = Field(
        default_factory=list,
        description="What the key may do; each must be one you hold yourself. Any permission "
        "on a module includes reading it.",
        examples=[["products:read", "products:update"]],
    )
    expires_at: Annotated[AwareDatetime, Strict(False)] | None = Field(
        default=None, description="When the key stops working; never when null or absent."
    )

    @field_validator("permissions")
    @classmethod
    def _unique(cls, permissions: list[str]) -> list[str]:
        return sorted(set(permissions))


class ApiKeyRead(BaseModel):
    id: int
    name: str
    service_account_id: int
    key_prefix: str = Field(
        description="The key's first characters, to recognise it; the key itself is only in "
        "the answer that created it.",
        examples=["bo_sk_3f9a0c1d2e4b5a69"],
    )
    permissions: list[str] = Field(examples=[["products:read", "products:update"]])
    expires_at: datetime | None
    revoked_at: datetime | None = Field(description="Revoked then; null while usable.")
    last_used_at: datetime | None = Field(
        description="Its last use, recorded within a minute or so (not on every request)."
    )
    created_by_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int


class ApiKeyCreated(ApiKeyRead):
    api_key: str = Field(
        description="The key: send it as `Authorization: Bearer <key>`. Shown this once, "
        "never again: only its hash is stored.",
        examples=["bo_sk_3f9a0c1d2e4b5a69_..."],
    )


class ApiKeySort(StrEnum):
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"


class ApiKeyListQuery(KeysetQuery):
    service_account_id: RecordId | None = None
    revoked: bool | None = Field(default=None, description="Only revoked keys, or only others.")
    sort: ApiKeySort = ApiKeySort.CREATED_AT
