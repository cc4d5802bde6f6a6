"""Service accounts and their API keys, administered under the `users` module: a service
account is a user that is not a person, and a key is one of its credentials. Nobody mints a
key stronger than themselves: each of its permissions must be one the creator holds."""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, RowMapping, Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.admin_service import ensure_holds
from backoffice.auth.api_keys import display_prefix, hash_api_key, new_api_key
from backoffice.auth.api_keys_schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyListQuery,
    ApiKeyRead,
    ApiKeySort,
    ServiceAccountCreate,
)
from backoffice.auth.models import ApiKey, User
from backoffice.auth.permissions import Permission, expand_grant
from backoffice.auth.repository import ApiKeyRepository, UserRepository
from backoffice.auth.schemas import UserRead
from backoffice.auth.service import Principal
from backoffice.core.conditional import check_if_match
from backoffice.core.errors import FieldError, InvalidInputError, NotFoundError
from backoffice.core.pagination import Page, keyset_orders

log = structlog.get_logger(__name__)

API_KEY_ORDERS = keyset_orders(ApiKeySort, ApiKey)
# A service account's email: required and unique like any user's, under a reserved domain
# (RFC 2606) so that nothing is ever sent to it.
SERVICE_ACCOUNT_DOMAIN = "service-accounts.invalid"
# No argon2 hash ever has this form: no password can match it. Logins skip service accounts
# anyway (repository.account_with_email).
UNUSABLE_PASSWORD_HASH = "!service-account"  # noqa: S105  # a marker, no password


async def create_service_account(session: AsyncSession, data: ServiceAccountCreate) -> UserRead:
    user = await UserRepository(session).create(
        User(
            email=f"sa-{uuid.uuid4().hex[:16]}@{SERVICE_ACCOUNT_DOMAIN}",
            full_name=data.name,
            hashed_password=UNUSABLE_PASSWORD_HASH,
            is_service_account=True,
        )
    )
    log.info("user.service_account_created", user_id=user.id)
    return UserRead.model_validate(user)


def _key_read(key: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    return {
        **key,
        "service_account_id": key["user_id"],
        "key_prefix": display_prefix(key["public_id"]),
    }


def _requested_permissions(names: list[str]) -> frozenset[Permission]:
    """Each permission asked for, with `read` of its module (as any grant implies)."""
    permissions: set[Permission] = set()
    for name in names:
        permission = Permission.parse(name)
        permissions |= expand_grant(permission.module, [permission.action])
    return frozenset(permissions)


async def _service_account(session: AsyncSession, user_id: int) -> User:
    """The service account a key is for; 422 naming the field when there is none."""
    try:
        user = await UserRepository(session).get(user_id)
    except NotFoundError:
        user = None
    if user is None or not user.is_service_account:
        raise InvalidInputError(
            f"service_account_id: user {user_id} is not a service account.",
            errors=[
                FieldError(
                    field="body.service_account_id",
                    message="no service account with this id",
                    type="value_error",
                )
            ],
        )
    return user


async def _expiry_within_the_minters(
    repository: ApiKeyRepository, actor: Principal, asked: datetime | None
) -> datetime | None:
    """A key minted with an API key expires no later than the key that minted it: a key
    is no stronger than its minter, in time as in permissions. Unset, it is the minter's."""
    if actor.api_key_id is None:
        return asked
    minter = await repository.get(actor.api_key_id)
    if minter.expires_at is None:
        return asked
    if asked is None:
        return minter.expires_at
    if asked > minter.expires_at:
        raise InvalidInputError(
            "expires_at must not be later than the expiry of the API key minting this one.",
            errors=[
                FieldError(
                    field="body.expires_at",
                    message="later than the minting API key's expiry",
                    type="value_error",
                )
            ],
        )
    return asked


async def create_api_key(
    session: AsyncSession, actor: Principal, data: ApiKeyCreate
) -> ApiKeyCreated:
    permissions = _requested_permissions(data.permissions)
    ensure_holds(actor, permissions, "give a key")
    if data.expires_at is not None and data.expires_at <= datetime.now(UTC):
        raise InvalidInputError(
            "expires_at must be in the future.",
            errors=[
                FieldError(
                    field="body.expires_at", message="must be in the future", type="value_error"
                )
            ],
        )
    repository = ApiKeyRepository(session)
    expires_at = await _expiry_within_the_minters(repository, actor, data.expires_at)
    account = await _service_account(session, data.service_account_id)
    assert account.id is not None  # noqa: S101  # loaded from the database
    api_key, public_id = new_api_key()
    key = await repository.create(
        ApiKey(
            public_id=public_id,
            key_hash=hash_api_key(api_key),
            user_id=account.id,
            name=data.name,
            permissions=sorted(str(permission) for permission in permissions),
            created_by_id=actor.id,
            expires_at=expires_at,
        )
    )
    log.info("api_key.created", api_key_id=key.id, user_id=account.id)
    return ApiKeyCreated.model_validate({**_key_read(key.model_dump()), "api_key": api_key})


async def get_api_key(session: AsyncSession, key_id: int) -> ApiKeyRead:
    return ApiKeyRead.model_validate(_key_read(await ApiKeyRepository(session).get_row(key_id)))


async def list_api_keys(session: AsyncSession, query: ApiKeyListQuery) -> Page[ApiKeyRead]:
    repository = ApiKeyRepository(session)
    conditions: list[ColumnElement[bool]] = []
    if query.service_account_id is not None:
        conditions.append(col(ApiKey.user_id) == query.service_account_id)
    if query.revoked is not None:
        revoked_at = col(ApiKey.revoked_at)
        conditions.append(revoked_at.is_not(None) if query.revoked else revoked_at.is_(None))
    statement: Select[Any] = repository.get_rows_statement().where(*conditions)
    rows, cursor = await repository.paginate(
        statement, API_KEY_ORDERS[query.sort], query.cursor, query.limit
    )
    items = [ApiKeyRead.model_validate(_key_read(row)) for row in rows]
    return Page[ApiKeyRead](items=items, next_cursor=cursor)


async def revoke_api_key(
    session: AsyncSession, actor: Principal, key_id: int, if_match: str | None
) -> None:
    """Revoked for good, from the next request on (every worker's principal cache hears of
    it); the row stays, so the audit trail's mentions of the key keep their meaning. Revoking
    a revoked key changes nothing. Revoking needs holding what the key can do, as minting it
    did: a user admin cannot disarm a more powerful integration."""
    repository = ApiKeyRepository(session)
    key = await repository.get(key_id)
    check_if_match(if_match, key.version)
    ensure_holds(actor, frozenset(map(Permission.parse, key.permissions)), "revoke a key with")
    if key.revoked_at is None:
        await repository.update(key, {"revoked_at": datetime.now(UTC)})
        log.info("api_key.revoked", api_key_id=key_id)
