from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from backoffice.auth.models import NAME_MAX_LENGTH, ROLE_NAME_MAX_LENGTH
from backoffice.auth.permissions import Action, Module
from backoffice.core.pagination import KeysetQuery
from backoffice.core.schemas import NOT_BLANK, Email, RecordId, RequestModel, omittable

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128  # argon2 has no limit, but a megabyte "password" is a DoS vector

Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH),
    Field(
        description=f"At least {PASSWORD_MIN_LENGTH} characters.", examples=["a long passphrase"]
    ),
]
FullName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["Ada Lovelace"]),
]
RoleName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=ROLE_NAME_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["warehouse"]),
]


# --- tokens ---------------------------------------------------------------------------------


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshRequest(RequestModel):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


# --- users ----------------------------------------------------------------------------------


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    full_name: str
    is_active: bool
    is_superuser: bool
    is_service_account: bool = Field(
        description="A machine: no password, it acts through its API keys (`/api-keys`)."
    )
    locked_until: datetime | None = Field(
        description="Failed logins locked the account until then (no lock when null or past); "
        "`DELETE /users/{id}/lock` unlocks it now."
    )
    created_at: datetime
    updated_at: datetime
    version: int


class UserCreate(RequestModel):
    email: Email
    password: Password
    full_name: FullName


class UserUpdate(RequestModel):
    """Admin changes; each field optional, none nullable."""

    email: Email = omittable()
    full_name: FullName = omittable()
    is_active: bool = omittable()
    is_superuser: bool = omittable()


class MeUpdate(RequestModel):
    full_name: FullName


class PasswordChange(RequestModel):
    current_password: Annotated[
        str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH)
    ]
    # Must differ from the current one: checked once the current one is known to be right
    # (a rule across two fields is one no schema can state).
    new_password: Password


class UserRolesUpdate(RequestModel):
    role_ids: Annotated[
        list[RecordId], Field(max_length=100, json_schema_extra={"uniqueItems": True})
    ]

    @field_validator("role_ids")
    @classmethod
    def _unique(cls, role_ids: list[int]) -> list[int]:
        if len(set(role_ids)) != len(role_ids):
            raise ValueError("role_ids must not repeat")
        return role_ids


class PermissionsRead(BaseModel):
    user_id: int
    is_superuser: bool
    permissions: list[str] = Field(
        description="Sorted `module:action` pairs; a superuser has all of them.",
        examples=[["products:read", "products:update"]],
    )


class UserSort(StrEnum):
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"


class UserListQuery(KeysetQuery):
    q: Annotated[
        str | None, Field(min_length=1, max_length=100, description="Email or name contains")
    ] = None
    is_active: bool | None = None
    is_service_account: bool | None = None
    sort: UserSort = UserSort.CREATED_AT


# --- roles ----------------------------------------------------------------------------------


class Grant(RequestModel):
    module: Module
    actions: Annotated[list[Action], Field(max_length=len(Action))] = Field(
        default_factory=list, description="Granting a module always includes `read`."
    )

    model_config = ConfigDict(extra="forbid", strict=False)  # enums arrive as strings

    @field_validator("actions")
    @classmethod
    def _normalise(cls, actions: list[Action]) -> list[Action]:
        return sorted(set(actions))


def _merged_by_module(grants: list[Grant]) -> list[Grant]:
    """One grant per module: a module named twice gets the actions of both."""
    actions: dict[Module, set[Action]] = {}
    for grant in grants:
        actions.setdefault(grant.module, set()).update(grant.actions)
    return [Grant(module=module, actions=sorted(granted)) for module, granted in actions.items()]


class RoleCreate(RequestModel):
    name: RoleName
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    grants: Annotated[list[Grant], Field(max_length=len(Module))] = Field(default_factory=list)

    _grants_merged = field_validator("grants")(_merged_by_module)


class RoleUpdate(RequestModel):
    name: RoleName = omittable()
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    grants: Annotated[list[Grant], Field(max_length=len(Module))] = omittable(
        description="Replaces every grant of the role."
    )
    _grants_merged = field_validator("grants")(_merged_by_module)


class GrantRead(BaseModel):
    module: Module
    actions: list[Action]


class RoleRead(BaseModel):
    id: int
    name: str
    description: str | None
    grants: list[GrantRead]
    created_at: datetime
    updated_at: datetime
    version: int


class RoleSort(StrEnum):
    NAME = "name"
    NAME_DESC = "-name"


class RoleListQuery(KeysetQuery):
    sort: RoleSort = RoleSort.NAME
