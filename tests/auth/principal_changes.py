"""The changes that must end a cached principal, as data: each principal-cache test runs over
this table, so a new kind of change joins it once and is proven everywhere."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from httpx import AsyncClient, Response
from sqlalchemy import TextClause, text

from tests.support.factories import PRODUCTS, ROLES, USERS
from tests.support.users import LOGOUT, ME, NEW_PASSWORD, TEST_PASSWORD

# The member's probe: needs the products:read its one role grants.
PROBE = PRODUCTS
TOKEN_REFUSED = 401
PERMISSION_GONE = 403


@dataclass(frozen=True, slots=True)
class Member:
    """A user whose one role grants products:read, signed in."""

    user_id: int
    role_id: int
    access_token: str
    jti: str


@dataclass(frozen=True, slots=True)
class ApiChange:
    name: str
    # (an administrator's client, the member's client, the member) -> the change's answer
    make: Callable[[AsyncClient, AsyncClient, Member], Awaitable[Response]]
    refused_with: int


async def _logout(_admin: AsyncClient, member: AsyncClient, _m: Member) -> Response:
    return await member.delete(LOGOUT)


async def _change_password(_admin: AsyncClient, member: AsyncClient, _m: Member) -> Response:
    body = {"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}
    return await member.put(f"{ME}/password", json=body)


async def _deactivate(admin: AsyncClient, _member: AsyncClient, m: Member) -> Response:
    return await admin.patch(f"{USERS}/{m.user_id}", json={"is_active": False})


async def _delete_user(admin: AsyncClient, _member: AsyncClient, m: Member) -> Response:
    return await admin.delete(f"{USERS}/{m.user_id}")


async def _remove_roles(admin: AsyncClient, _member: AsyncClient, m: Member) -> Response:
    return await admin.put(f"{USERS}/{m.user_id}/roles", json={"role_ids": []})


async def _empty_grants(admin: AsyncClient, _member: AsyncClient, m: Member) -> Response:
    return await admin.patch(f"{ROLES}/{m.role_id}", json={"grants": []})


async def _delete_role(admin: AsyncClient, _member: AsyncClient, m: Member) -> Response:
    return await admin.delete(f"{ROLES}/{m.role_id}")


API_CHANGES = [
    ApiChange("logout", _logout, TOKEN_REFUSED),
    ApiChange("password change", _change_password, TOKEN_REFUSED),
    ApiChange("deactivation", _deactivate, TOKEN_REFUSED),
    ApiChange("user deleted", _delete_user, TOKEN_REFUSED),
    ApiChange("roles removed", _remove_roles, PERMISSION_GONE),
    ApiChange("role's grants removed", _empty_grants, PERMISSION_GONE),
    ApiChange("role deleted", _delete_role, PERMISSION_GONE),
]


@dataclass(frozen=True, slots=True)
class SqlChange:
    """A change made behind the app's back, by another connection: only the triggers see it."""

    name: str
    statement: TextClause
    refused_with: int


SQL_CHANGES = [
    SqlChange("deactivated", text("UPDATE users SET is_active = false WHERE id = :user_id"), 401),
    SqlChange(
        "sessions revoked by version",
        text("UPDATE users SET token_version = token_version + 1 WHERE id = :user_id"),
        TOKEN_REFUSED,
    ),
    SqlChange("user deleted", text("DELETE FROM users WHERE id = :user_id"), TOKEN_REFUSED),
    SqlChange(
        "refresh family revoked",
        text("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = :user_id"),
        TOKEN_REFUSED,
    ),
    SqlChange(
        "access token revoked",
        text(
            "INSERT INTO user_revoked_tokens (jti, user_id, expires_at) "
            "VALUES (:jti, :user_id, now() + interval '1 hour')"
        ),
        TOKEN_REFUSED,
    ),
    SqlChange(
        "role unlinked", text("DELETE FROM user_roles WHERE user_id = :user_id"), PERMISSION_GONE
    ),
    SqlChange(
        "grant removed", text("DELETE FROM role_grants WHERE role_id = :role_id"), PERMISSION_GONE
    ),
    SqlChange(
        "grant narrowed to nothing",
        text("UPDATE role_grants SET module = 'audit' WHERE role_id = :role_id"),
        PERMISSION_GONE,
    ),
    SqlChange("role deleted", text("DELETE FROM roles WHERE id = :role_id"), PERMISSION_GONE),
]
