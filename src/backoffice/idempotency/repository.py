"""The statements on `idempotency_keys`. Times are the database's (`now()`), so the nodes'
clocks need not agree. Every write to a claim names its attempt: an attempt whose claim was
taken over (its lease ran out) changes nothing."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Table, and_, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.idempotency.models import IdempotencyKey, KeyState

_keys: Table = IdempotencyKey.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_columns = _keys.c


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key's row as a repeat sees it, with the lease and expiry judged by the database."""

    fingerprint: bytes
    state: KeyState
    attempt: UUID
    lease_over: bool
    expired: bool
    status: int | None
    headers: list[list[str]] | None
    body: bytes | None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[list[str]]
    body: bytes


def _named(scope: str, key: str) -> ColumnElement[bool]:
    return and_(_columns.scope == scope, _columns.key == key)


def _held(scope: str, key: str, attempt: UUID) -> ColumnElement[bool]:
    return and_(_named(scope, key), _columns.attempt == attempt)


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_claim(
        self,
        scope: str,
        key: str,
        fingerprint: bytes,
        attempt: UUID,
        *,
        lease: timedelta,
        ttl: timedelta,
    ) -> bool:
        """Claim a key nobody has used: False when it exists (a concurrent claim of the same
        key waits here for the first one's transaction, then finds it)."""
        statement = (
            insert(_keys)
            .values(
                scope=scope,
                key=key,
                fingerprint=fingerprint,
                state=KeyState.RUNNING,
                attempt=attempt,
                lease_until=func.now() + lease,
                expires_at=func.now() + ttl,
            )
            .on_conflict_do_nothing(index_elements=[_columns.scope, _columns.key])
            .returning(_columns.attempt)
        )
        return (await self.session.scalar(statement)) is not None

    async def lock(self, scope: str, key: str) -> StoredKey | None:
        """The key's row, locked for this transaction (a claim being taken over or marked
        applied cannot change under the decision taken on it)."""
        statement = (
            select(
                _columns.fingerprint,
                _columns.state,
                _columns.attempt,
                (_columns.lease_until <= func.now()).label("lease_over"),
                (_columns.expires_at <= func.now()).label("expired"),
                _columns.response_status,
                _columns.response_headers,
                _columns.response_body,
            )
            .where(_named(scope, key))
            .with_for_update()
        )
        row = (await self.session.execute(statement)).one_or_none()
        if row is None:
            return None
        return StoredKey(
            fingerprint=row.fingerprint,
            state=KeyState(row.state),
            attempt=row.attempt,
            lease_over=row.lease_over,
            expired=row.expired,
            status=row.response_status,
            headers=row.response_headers,
            body=row.response_body,
        )

    async def take_over(
        self,
        scope: str,
        key: str,
        fingerprint: bytes,
        attempt: UUID,
        *,
        lease: timedelta,
        ttl: timedelta | None,
    ) -> None:
        """Claim a locked row afresh: an expired key (`ttl`: its life starts again) or a claim
        whose request never committed (`ttl` None: it keeps its expiry)."""
        values: dict[str, Any] = {
            "fingerprint": fingerprint,
            "state": KeyState.RUNNING,
            "attempt": attempt,
            "lease_until": func.now() + lease,
            "response_status": None,
            "response_headers": None,
            "response_body": None,
        }
        if ttl is not None:
            values |= {"expires_at": func.now() + ttl, "created_at": func.now()}
        await self.session.execute(update(_keys).where(_named(scope, key)).values(values))

    async def mark_applied(self, scope: str, key: str, attempt: UUID, *, lease: timedelta) -> bool:
        """In the route's own transaction: its COMMIT is then the key's. False when this
        attempt no longer holds the claim. The lease starts again: the time to store the
        answer."""
        statement = (
            update(_keys)
            .where(_held(scope, key, attempt), _columns.state == KeyState.RUNNING)
            .values(state=KeyState.APPLIED, lease_until=func.now() + lease)
            .returning(_columns.attempt)
        )
        return (await self.session.scalar(statement)) is not None

    async def store_answer(
        self, scope: str, key: str, attempt: UUID, states: Sequence[KeyState], answer: Answer
    ) -> bool:
        """Complete the claim with its answer, if it is this attempt's and in one of
        `states`."""
        statement = (
            update(_keys)
            .where(_held(scope, key, attempt), _columns.state.in_(states))
            .values(
                state=KeyState.COMPLETED,
                lease_until=func.now(),
                response_status=answer.status,
                response_headers=answer.headers,
                response_body=answer.body,
            )
            .returning(_columns.attempt)
        )
        return (await self.session.scalar(statement)) is not None

    async def release(self, scope: str, key: str, attempt: UUID) -> bool:
        """Forget this attempt's claim unless its route committed: the key is free again."""
        statement = (
            delete(_keys)
            .where(_held(scope, key, attempt), _columns.state == KeyState.RUNNING)
            .returning(_columns.attempt)
        )
        return (await self.session.scalar(statement)) is not None

    async def take_lock(self, lock_key: int) -> bool:
        """A transaction-level advisory lock, without waiting: False when another holds it."""
        return bool(await self.session.scalar(select(func.pg_try_advisory_xact_lock(lock_key))))

    async def delete_expired(self, limit: int) -> int:
        """Up to `limit` keys past their expiry, whatever their state."""
        expired = (
            select(_columns.scope, _columns.key)
            .where(_columns.expires_at <= func.now())
            .limit(limit)
        )
        statement = (
            delete(_keys)
            .where(tuple_(_columns.scope, _columns.key).in_(expired))
            .returning(_columns.key)
        )
        return len((await self.session.scalars(statement)).all())
