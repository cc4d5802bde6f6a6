import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    Integer,
    RowMapping,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from backoffice.auth.models import (
    ApiKey,
    RefreshToken,
    Role,
    RoleGrant,
    User,
    UserRevokedToken,
    UserRole,
)
from backoffice.core.errors import ConflictError, DomainError
from backoffice.core.repository import BaseRepository

_users = User.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_grants = RoleGrant.__table__  # type: ignore[attr-defined]  # set by SQLModel at runtime
_user_roles = UserRole.__table__  # type: ignore[attr-defined]  # set by SQLModel at runtime
_revoked = UserRevokedToken.__table__  # type: ignore[attr-defined]  # set by SQLModel at runtime
_refresh = RefreshToken.__table__  # type: ignore[attr-defined]  # set by SQLModel at runtime
_api_keys = ApiKey.__table__  # type: ignore[attr-defined]  # set by SQLModel at runtime

# The whole per-request authentication check in one round trip: the user, whether this
# token's jti was revoked, until when its session (refresh family) stays alive (NULL: ended),
# and the user's grants over all their roles. What it reads is what the triggers of
# migrations/20261202040000_principal_invalidation.sql announce when it changes: keep both
# in step (auth/principal_cache.py caches its answer).
_PRINCIPAL: Select[Any] = select(
    _users.c.id,
    _users.c.email,
    _users.c.full_name,
    _users.c.is_active,
    _users.c.is_superuser,
    _users.c.token_version,
    exists().where(_revoked.c.jti == bindparam("jti")).label("token_revoked"),
    select(func.max(_refresh.c.expires_at))
    .where(
        _refresh.c.family_id == bindparam("session_id"),
        # A session id from the token of another user proves nothing about this one.
        _refresh.c.user_id == _users.c.id,
        _refresh.c.revoked_at.is_(None),
        _refresh.c.expires_at > func.now(),
    )
    .scalar_subquery()
    .label("session_expires_at"),
    # One "module:action,action" string per grant of any of the user's roles.
    select(
        func.array_agg(
            _grants.c.module + literal(":") + func.array_to_string(_grants.c.actions, ",")
        )
    )
    .select_from(_user_roles.join(_grants, _grants.c.role_id == _user_roles.c.role_id))
    .where(_user_roles.c.user_id == _users.c.id)
    .scalar_subquery()
    .label("grants"),
).where(_users.c.id == bindparam("user_id"))


# The execution option that marks a write to an auth table as leaving every principal as it
# was (login bookkeeping, the purge of expired rows): it does not empty the principal cache
# (auth/principal_cache.py), which the trigger-side rules mirror.
PRINCIPALS_UNCHANGED: Final = "principals_unchanged"
_UNCHANGED: Final = {PRINCIPALS_UNCHANGED: True}


def account_with_email(email: str) -> ColumnElement[bool]:
    """The account a password login names: never a service account, which has no password
    anyone could type (it authenticates with its API keys only)."""
    matches: ColumnElement[bool] = and_(
        func.lower(_users.c.email) == email.lower(), _users.c.is_service_account.is_(False)
    )
    return matches


def account_with_id(user_id: int) -> ColumnElement[bool]:
    matches: ColumnElement[bool] = _users.c.id == user_id
    return matches


@dataclass(frozen=True, slots=True)
class PasswordAttempt:
    """A booked password guess: what checking it needs, and whether booking it locked the
    account (then a wrong password is the last one allowed for a while)."""

    user_id: int
    hashed_password: str
    is_active: bool
    locked_until: datetime | None


class UserRepository(BaseRepository[User]):
    model = User
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {
        "uq_users_email_lower": ConflictError("A user with this email already exists."),
    }

    async def load_principal(
        self, user_id: int, jti: str, session_id: uuid.UUID
    ) -> RowMapping | None:
        result = await self.session.execute(
            _PRINCIPAL, {"user_id": user_id, "jti": jti, "session_id": session_id}
        )
        row: RowMapping | None = result.mappings().one_or_none()
        return row

    async def reserve_password_attempt(
        self, account: ColumnElement[bool], max_failures: int, lockout: timedelta
    ) -> PasswordAttempt | None:
        """Book one password guess for the account before it is checked: one atomic UPDATE
        that clears an expired lock, refuses a locked account (None), counts the guess as a
        failure and locks the account when the count reaches `max_failures`. Concurrent
        guesses serialize on the row, so at most `max_failures` of them are ever checked per
        lockout; a right password undoes its booking with `reset_login_failures`.
        Bookkeeping, not an edit: the user's version (ETag) and updated_at stay as they are."""
        expired = and_(_users.c.locked_until.is_not(None), _users.c.locked_until <= func.now())
        count = case((expired, 0), else_=_users.c.failed_login_count) + 1
        result = await self.session.execute(
            update(_users)
            .where(account, or_(_users.c.locked_until.is_(None), expired))
            .values(
                failed_login_count=count,
                locked_until=case((count >= max_failures, func.now() + lockout), else_=None),
                updated_at=_users.c.updated_at,
            )
            .returning(
                _users.c.id,
                _users.c.hashed_password,
                _users.c.is_active,
                _users.c.locked_until,
            ),
            execution_options=_UNCHANGED,
        )
        row = result.one_or_none()
        return None if row is None else PasswordAttempt(*row)

    async def is_locked(self, account: ColumnElement[bool]) -> bool:
        """Whether the account exists and is locked now (to say so in the log)."""
        locked = await self.session.scalar(
            select(literal(True)).where(account, _users.c.locked_until > func.now())
        )
        return bool(locked)

    async def reset_login_failures(self, user_id: int) -> bool:
        """Clear the failure count and any lock; whether there was anything to clear."""
        result = await self.session.execute(
            update(_users)
            .where(
                _users.c.id == user_id,
                or_(_users.c.failed_login_count != 0, _users.c.locked_until.is_not(None)),
            )
            .values(failed_login_count=0, locked_until=None, updated_at=_users.c.updated_at),
            execution_options=_UNCHANGED,
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult for UPDATE

    async def lock_active_superusers(self) -> list[int]:
        """The active superusers' ids, their rows locked until the transaction ends. In id
        order, so two transactions taking these locks queue rather than deadlock; the one that
        waits then sees the rows as the other committed them (READ COMMITTED re-checks a locked
        row's WHERE), so a superuser removed meanwhile is no longer counted."""
        result = await self.session.scalars(
            select(_users.c.id)
            .where(_users.c.is_superuser, _users.c.is_active)
            .order_by(_users.c.id)
            .with_for_update()
        )
        return list(result)

    async def get_by_email(self, email: str) -> User | None:
        return await self.get_one_or_none(select(User).where(account_with_email(email)))

    async def grants_of(self, user_id: int) -> list[tuple[str, list[str]]]:
        result = await self.session.execute(
            select(_grants.c.module, _grants.c.actions)
            .join(_user_roles, _user_roles.c.role_id == _grants.c.role_id)
            .where(_user_roles.c.user_id == user_id)
        )
        return [(module, list(actions)) for module, actions in result]

    async def role_ids_of(self, user_id: int) -> list[int]:
        result = await self.session.scalars(
            select(_user_roles.c.role_id).where(_user_roles.c.user_id == user_id)
        )
        return list(result)

    async def set_roles(self, user_id: int, role_ids: Sequence[int]) -> None:
        await self.session.execute(delete(_user_roles).where(_user_roles.c.user_id == user_id))
        if role_ids:
            await self.session.execute(
                insert(_user_roles), [{"user_id": user_id, "role_id": rid} for rid in role_ids]
            )
        await self.flush()


class RoleRepository(BaseRepository[Role]):
    model = Role
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {
        "uq_roles_name_lower": ConflictError("A role with this name already exists."),
    }

    async def grants(self, role_ids: Sequence[int]) -> dict[int, list[tuple[str, list[str]]]]:
        result = await self.session.execute(
            select(_grants.c.role_id, _grants.c.module, _grants.c.actions)
            .where(_grants.c.role_id.in_(role_ids))
            .order_by(_grants.c.role_id, _grants.c.module)
        )
        by_role: dict[int, list[tuple[str, list[str]]]] = {rid: [] for rid in role_ids}
        for role_id, module, actions in result:
            by_role[role_id].append((module, sorted(actions)))
        return by_role

    async def replace_grants(self, role_id: int, grants: Mapping[str, list[str]]) -> None:
        await self.session.execute(delete(_grants).where(_grants.c.role_id == role_id))
        if grants:
            await self.session.execute(
                insert(_grants),
                [
                    {"role_id": role_id, "module": module, "actions": actions}
                    for module, actions in grants.items()
                ],
            )
        await self.flush()

    async def existing_ids(self, role_ids: Sequence[int]) -> set[int]:
        roles = Role.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
        result = await self.session.scalars(select(roles.c.id).where(roles.c.id.in_(role_ids)))
        return {rid for rid in result if rid is not None}

    async def get_by_name(self, name: str) -> Role | None:
        roles = Role.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
        return await self.get_one_or_none(
            select(Role).where(func.lower(roles.c.name) == name.lower())
        )


class TokenRepository(BaseRepository[RefreshToken]):
    model = RefreshToken

    async def get_for_update(self, token_hash: str) -> RefreshToken | None:
        """Locks the row: two concurrent uses of one token are serialized, so only one can
        rotate it and the other is seen as a replay."""
        return await self.get_one_or_none(
            select(RefreshToken).where(_refresh.c.token_hash == token_hash).with_for_update()
        )

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> int:
        result = await self.session.execute(
            update(_refresh)
            .where(and_(_refresh.c.family_id == family_id, _refresh.c.revoked_at.is_(None)))
            .values(revoked_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult for UPDATE

    async def revoke_all_of_user(self, user_id: int, now: datetime) -> int:
        result = await self.session.execute(
            update(_refresh)
            .where(and_(_refresh.c.user_id == user_id, _refresh.c.revoked_at.is_(None)))
            .values(revoked_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult for UPDATE

    async def revoke_access_token(self, jti: str, user_id: int, expires_at: datetime) -> None:
        await self.session.execute(
            pg_insert(_revoked)
            .values(jti=jti, user_id=user_id, expires_at=expires_at)
            .on_conflict_do_nothing()
        )

    async def take_lock(self, key: int) -> bool:
        """A transaction-level advisory lock, without waiting: False when another transaction
        holds it. Released at COMMIT or ROLLBACK, so it works through PgBouncer's transaction
        pooling too."""
        return bool(await self.session.scalar(select(func.pg_try_advisory_xact_lock(key))))

    async def delete_expired_refresh_tokens(self, limit: int) -> int:
        """Up to `limit` refresh tokens past their expiry, whatever their state: a rotated or
        revoked token is kept until then, for replay detection (service.refresh)."""
        return await self._delete_expired(_refresh, _refresh.c.id, limit)

    async def delete_expired_revoked_tokens(self, limit: int) -> int:
        """Up to `limit` revoked access tokens past their expiry: the token itself is refused
        from then on, so its `jti` no longer needs remembering."""
        return await self._delete_expired(_revoked, _revoked.c.jti, limit)

    async def _delete_expired(self, table: Table, key: ColumnElement[Any], limit: int) -> int:
        """Up to `limit` rows of `table` whose `expires_at` has passed, oldest first. Rows
        another transaction has locked (a refresh in progress) are left for the next batch."""
        expired = (
            select(key)
            .where(table.c.expires_at <= func.now())
            .order_by(table.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self.session.execute(
            delete(table).where(key.in_(expired)), execution_options=_UNCHANGED
        )
        return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult for DELETE


# An API key's whole check in one round trip, found by its public id (auth/api_keys.py). What
# it reads is what the api_keys and users triggers announce when it changes.
_API_KEY_PRINCIPAL: Select[Any] = (
    select(
        _api_keys.c.id,
        _api_keys.c.key_hash,
        _api_keys.c.user_id,
        _api_keys.c.permissions,
        _api_keys.c.expires_at,
        _api_keys.c.revoked_at,
        _users.c.email,
        _users.c.full_name,
        _users.c.is_active,
    )
    .join(_users, _users.c.id == _api_keys.c.user_id)
    .where(_api_keys.c.public_id == bindparam("public_id"))
)


class ApiKeyRepository(BaseRepository[ApiKey]):
    model = ApiKey

    async def load_principal(self, public_id: str) -> RowMapping | None:
        result = await self.session.execute(_API_KEY_PRINCIPAL, {"public_id": public_id})
        row: RowMapping | None = result.mappings().one_or_none()
        return row

    async def live_permissions_of(self, user_id: int) -> list[str]:
        """What the account's keys that still work (not revoked, not expired) can do."""
        permissions = (
            select(func.unnest(_api_keys.c.permissions))
            .where(
                _api_keys.c.user_id == user_id,
                _api_keys.c.revoked_at.is_(None),
                or_(_api_keys.c.expires_at.is_(None), _api_keys.c.expires_at > func.now()),
            )
            .distinct()
        )
        return list(await self.session.scalars(permissions))

    async def record_use(self, used: Mapping[int, datetime]) -> None:
        """Every key's last use in one statement. Bookkeeping, not an edit: the key's version
        (ETag) and updated_at stay, no principal changes, and the audit trail skips it
        (`__audit_bookkeeping__`). A later use already recorded (by another worker) stays."""
        values = select(
            func.unnest(bindparam("ids", type_=ARRAY(Integer))).label("id"),
            func.unnest(bindparam("used", type_=ARRAY(DateTime(timezone=True)))).label("used"),
        ).subquery("used")
        await self.session.execute(
            update(_api_keys)
            .where(_api_keys.c.id == values.c.id)
            .values(
                last_used_at=func.greatest(_api_keys.c.last_used_at, values.c.used),
                updated_at=_api_keys.c.updated_at,
            ),
            {"ids": list(used), "used": list(used.values())},
            execution_options=_UNCHANGED,
        )
