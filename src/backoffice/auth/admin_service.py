"""User and role administration, with the rule that nobody can raise their own privileges:
only a superuser grants superuser, and anyone else can only hand out (in roles, or roles to
users) permissions they hold themselves."""

from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from sqlalchemy import ColumnElement, RowMapping, Select, func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.errors import LastSuperuserError
from backoffice.auth.models import Role, User
from backoffice.auth.permissions import Action, Module, Permission, effective_permissions
from backoffice.auth.repository import ApiKeyRepository, RoleRepository, UserRepository
from backoffice.auth.schemas import (
    PermissionsRead,
    RoleCreate,
    RoleListQuery,
    RoleRead,
    RoleSort,
    RoleUpdate,
    UserCreate,
    UserListQuery,
    UserRead,
    UserSort,
    UserUpdate,
)
from backoffice.auth.service import Principal, revoke_all_sessions, unlock_account
from backoffice.auth.tokens import hash_password
from backoffice.core.conditional import check_if_match
from backoffice.core.errors import ForbiddenError, InvalidInputError
from backoffice.core.pagination import Page, keyset_orders
from backoffice.core.repository import contains_pattern

log = structlog.get_logger(__name__)

USER_ORDERS = keyset_orders(UserSort, User)
ROLE_ORDERS = keyset_orders(RoleSort, Role)


def _grant_permissions(
    grants: Iterable[tuple[str, Iterable[str]]], *, is_superuser: bool = False
) -> frozenset[Permission]:
    typed = ((Module(module), [Action(a) for a in actions]) for module, actions in grants)
    return effective_permissions(typed, is_superuser=is_superuser)


def ensure_holds(
    actor: Principal, permissions: frozenset[Permission], doing: str = "hand out"
) -> None:
    missing = permissions - actor.permissions
    if actor.is_superuser or not missing:
        return
    names = ", ".join(sorted(str(permission) for permission in missing))
    raise ForbiddenError(f"You cannot {doing} permissions you do not hold: {names}.")


async def _ensure_outranks(session: AsyncSession, actor: Principal, target: User) -> None:
    """Managing an account (status, email, deletion) needs every permission it has: a user
    admin cannot lock out or remove someone more powerful. A service account's power is in
    its live keys as well as its roles: deactivating or deleting it disarms them all, which
    needs what revoking each of them would (api_keys_service.revoke_api_key)."""
    assert target.id is not None  # noqa: S101  # loaded from the database
    grants = await UserRepository(session).grants_of(target.id)
    permissions = _grant_permissions(grants)
    if target.is_service_account:
        keys = await ApiKeyRepository(session).live_permissions_of(target.id)
        permissions |= frozenset(map(Permission.parse, keys))
    ensure_holds(actor, permissions, "manage an account with")


async def _keep_an_active_superuser(session: AsyncSession, user: User) -> None:
    """Removing `user` (demoting, deactivating or deleting it) must leave an active superuser,
    or nobody could ever manage superusers again. Decided on the locked rows, not on what was
    read earlier: two superusers removing each other at the same moment are serialized here,
    and the second one finds itself the last (409)."""
    active = await UserRepository(session).lock_active_superusers()
    if user.id in active and len(active) == 1:
        log.info("user.last_superuser_kept", user_id=user.id)
        raise LastSuperuserError


# --- users ----------------------------------------------------------------------------------


async def get_user(session: AsyncSession, user_id: int) -> UserRead:
    return UserRead.model_validate(await UserRepository(session).get_row(user_id))


async def list_users(session: AsyncSession, query: UserListQuery) -> Page[UserRead]:
    repository = UserRepository(session)
    conditions: list[ColumnElement[bool]] = []
    if query.q is not None:
        pattern = contains_pattern(query.q)
        conditions.append(or_(col(User.email).ilike(pattern), col(User.full_name).ilike(pattern)))
    if query.is_active is not None:
        conditions.append(col(User.is_active) == query.is_active)
    if query.is_service_account is not None:
        conditions.append(col(User.is_service_account) == query.is_service_account)
    statement: Select[Any] = repository.get_rows_statement().where(*conditions)
    rows, cursor = await repository.paginate(
        statement, USER_ORDERS[query.sort], query.cursor, query.limit
    )
    return Page[UserRead](items=[UserRead.model_validate(row) for row in rows], next_cursor=cursor)


async def create_user(session: AsyncSession, data: UserCreate) -> UserRead:
    user = await UserRepository(session).create(
        User(
            email=data.email, full_name=data.full_name, hashed_password=hash_password(data.password)
        )
    )
    log.info("user.created", user_id=user.id)
    return UserRead.model_validate(user)


async def update_user(
    session: AsyncSession, actor: Principal, user_id: int, data: UserUpdate, if_match: str | None
) -> UserRead:
    users = UserRepository(session)
    user = await users.get(user_id)
    check_if_match(if_match, user.version)
    changes = data.model_dump(exclude_unset=True)
    privileged = {"is_active", "is_superuser"} & changes.keys()
    if privileged and user_id == actor.id:
        raise ForbiddenError("You cannot change your own active or superuser status.")
    if ("is_superuser" in changes or user.is_superuser) and not actor.is_superuser:
        raise ForbiddenError("Only a superuser can change a superuser or grant superuser.")
    if not changes:
        return UserRead.model_validate(user)
    await _ensure_outranks(session, actor, user)
    if user.is_superuser and (
        changes.get("is_superuser") is False or changes.get("is_active") is False
    ):
        await _keep_an_active_superuser(session, user)
    user = await users.update(user, changes)
    if changes.get("is_active") is False:
        await revoke_all_sessions(session, user)
    log.info("user.updated", user_id=user_id, fields=sorted(changes))
    return UserRead.model_validate(user)


async def update_me(session: AsyncSession, actor: Principal, full_name: str) -> UserRead:
    users = UserRepository(session)
    user = await users.update(await users.get(actor.id), {"full_name": full_name})
    return UserRead.model_validate(user)


async def delete_user(
    session: AsyncSession, actor: Principal, user_id: int, if_match: str | None
) -> None:
    user = await UserRepository(session).get(user_id)
    check_if_match(if_match, user.version)
    if user_id == actor.id:
        raise ForbiddenError("You cannot delete your own account.")
    if user.is_superuser and not actor.is_superuser:
        raise ForbiddenError("Only a superuser can delete a superuser.")
    await _ensure_outranks(session, actor, user)
    if user.is_superuser:
        await _keep_an_active_superuser(session, user)
    await UserRepository(session).delete(user)
    log.info("user.deleted", user_id=user_id)


async def unlock_user(
    session: AsyncSession, actor: Principal, user_id: int, if_match: str | None
) -> None:
    """Clear the lockout of an account, under the rules of any other change to it."""
    user = await UserRepository(session).get(user_id)
    check_if_match(if_match, user.version)
    if user.is_superuser and not actor.is_superuser:
        raise ForbiddenError("Only a superuser can unlock a superuser.")
    await _ensure_outranks(session, actor, user)
    await unlock_account(session, user_id)


async def set_user_roles(
    session: AsyncSession, actor: Principal, user_id: int, role_ids: list[int]
) -> list[RoleRead]:
    user = await UserRepository(session).get(user_id)
    if user_id == actor.id and not actor.is_superuser:
        raise ForbiddenError("You cannot change your own roles.")
    if user.is_superuser and not actor.is_superuser:
        raise ForbiddenError("Only a superuser can change a superuser's roles.")
    roles = RoleRepository(session)
    missing = sorted(set(role_ids) - await roles.existing_ids(role_ids))
    if missing:
        raise InvalidInputError(f"role_ids: no role with id {', '.join(map(str, missing))}.")
    users = UserRepository(session)
    previous = await users.role_ids_of(user_id)
    grants = await roles.grants(sorted(set(role_ids) | set(previous)))
    # Adding or removing a role both require holding what it grants.
    changed = set(role_ids) ^ set(previous)
    ensure_holds(actor, _grant_permissions(grant for rid in changed for grant in grants[rid]))
    await users.set_roles(user_id, role_ids)
    log.info("user.roles_set", user_id=user_id, role_ids=sorted(role_ids))
    return [await get_role(session, rid) for rid in sorted(role_ids)]


async def user_permissions(session: AsyncSession, user_id: int) -> PermissionsRead:
    user = await UserRepository(session).get(user_id)
    grants = await UserRepository(session).grants_of(user_id)
    permissions = _grant_permissions(grants, is_superuser=user.is_superuser)
    return PermissionsRead(
        user_id=user_id,
        is_superuser=user.is_superuser,
        permissions=sorted(str(permission) for permission in permissions),
    )


# --- roles ----------------------------------------------------------------------------------


def _role_read(
    role: Mapping[str, Any] | RowMapping, grants: list[tuple[str, list[str]]]
) -> RoleRead:
    return RoleRead.model_validate(
        {**role, "grants": [{"module": m, "actions": a} for m, a in grants]}
    )


async def get_role(session: AsyncSession, role_id: int) -> RoleRead:
    role = await RoleRepository(session).get(role_id)
    grants = await RoleRepository(session).grants([role_id])
    return _role_read(role.model_dump(), grants[role_id])


async def list_roles(session: AsyncSession, query: RoleListQuery) -> Page[RoleRead]:
    repository = RoleRepository(session)
    rows, cursor = await repository.paginate(
        repository.get_rows_statement(), ROLE_ORDERS[query.sort], query.cursor, query.limit
    )
    grants = await repository.grants([row["id"] for row in rows])
    items = [_role_read(row, grants[row["id"]]) for row in rows]
    return Page[RoleRead](items=items, next_cursor=cursor)


def _grants_of(data: RoleCreate | RoleUpdate) -> dict[str, list[str]]:
    return {
        str(grant.module): sorted(str(action) for action in grant.actions)
        for grant in data.grants or []
    }


async def create_role(session: AsyncSession, actor: Principal, data: RoleCreate) -> RoleRead:
    grants = _grants_of(data)
    ensure_holds(actor, _grant_permissions(grants.items()))
    repository = RoleRepository(session)
    role = await repository.create(Role(name=data.name, description=data.description))
    assert role.id is not None  # noqa: S101  # flushed by create
    await repository.replace_grants(role.id, grants)
    log.info("role.created", role_id=role.id)
    return await get_role(session, role.id)


async def update_role(
    session: AsyncSession, actor: Principal, role_id: int, data: RoleUpdate, if_match: str | None
) -> RoleRead:
    role = await RoleRepository(session).get(role_id)
    check_if_match(if_match, role.version)
    repository = RoleRepository(session)
    current = (await repository.grants([role_id]))[role_id]
    ensure_holds(actor, _grant_permissions(current), "change a role with")
    changes = data.model_dump(exclude_unset=True, exclude={"grants"})
    if data.grants is not None:
        new_grants = _grants_of(data)
        ensure_holds(actor, _grant_permissions(new_grants.items()))
        await repository.replace_grants(role_id, new_grants)
        changes["updated_at"] = func.now()  # grants live in their own table: bump the role
    if changes:
        await repository.update(role, changes)
        await session.refresh(role)
    log.info("role.updated", role_id=role_id, fields=sorted(data.model_fields_set))
    return await get_role(session, role_id)


async def delete_role(
    session: AsyncSession, actor: Principal, role_id: int, if_match: str | None
) -> None:
    role = await RoleRepository(session).get(role_id)
    check_if_match(if_match, role.version)
    grants = (await RoleRepository(session).grants([role_id]))[role_id]
    ensure_holds(actor, _grant_permissions(grants), "delete a role with")
    await RoleRepository(session).delete(role)
    log.info("role.deleted", role_id=role_id)
