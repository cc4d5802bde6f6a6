"""A per-worker cache of verified principals, keyed by the access token, so a repeat of a
known-good token costs a dict lookup instead of a JWT decode and a query.

Invalidation is what makes it safe (SECURITY.md, "Principal cache"):

- Database triggers (migrations/20261202040000_principal_invalidation.sql) announce on the
  channel CHANNEL every committed change to what a principal is made of; each worker listens
  on one connection of its own and empties its cache on any announcement.
- The worker that makes a change empties its cache itself, at the write and again right after
  COMMIT, before the response is sent: it does not wait for the announcement.
- The listener proves it is alive every PING_INTERVAL_S by announcing a ping of its own and
  hearing it back; the cache serves hits only within STALENESS_BOUND_S of the last ping sent
  and heard (its lease). PostgreSQL delivers notifications to a listener in commit order, so a
  ping heard means every change committed before it was sent has been heard too. A lost, dead
  or frozen connection (or a listener URL through a transaction-pooling PgBouncer, where LISTEN
  cannot work: DATABASE_DIRECT_URL is for it) thus stops the cache within the bound; it serves
  again once a new connection listens and pings, emptied first for the changes of the gap.
- A query that read the old state before a change must not store it after the change emptied
  the cache: each fill carries the generation it started under, and any emptying bumps it.
"""

import asyncio
import itertools
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import structlog
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.orm.attributes import get_history

from backoffice.auth.models import (
    API_KEY_PRINCIPAL_FIELDS,
    PRINCIPAL_CHANNEL,
    PRINCIPAL_USER_FIELDS,
    ApiKey,
    RefreshToken,
    Role,
    RoleGrant,
    User,
    UserRevokedToken,
    UserRole,
)
from backoffice.auth.repository import PRINCIPALS_UNCHANGED
from backoffice.auth.service import Principal, verify_access_token
from backoffice.core.config import Settings
from backoffice.core.database import libpq_url

CHANNEL: Final = PRINCIPAL_CHANNEL
LISTENER_APPLICATION_NAME: Final = "backoffice-principal-listener"
# A change is seen by the worker that made it at once, and by every other worker within this
# bound; a worker that cannot confirm its listener within it stops using its cache.
STALENESS_BOUND_S: Final = 1.0
PING_INTERVAL_S: Final = 0.25
# A ping not heard back within this is a lost connection: with the interval, a lease renewed
# in time is never interrupted by a connection that works.
PING_TIMEOUT_S: Final = 0.5
_PING_PREFIX: Final = "ping:"
_RECONNECT_FIRST_S: Final = 0.1
_RECONNECT_MAX_S: Final = 5.0
# The key, in a session's `info`, of the cache its writes empty.
_CACHE_INFO_KEY: Final = "principal_cache"
_PENDING_INFO_KEY: Final = "principal_cache_pending"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    valid_until: float  # epoch seconds: the token's expiry, or its session's if sooner


class PrincipalCache:
    """Bounded (least recently used out first), and serving nothing outside its lease."""

    __slots__ = ("_entries", "_lease_until", "_max_size", "_monotonic", "_wall", "generation")

    def __init__(
        self,
        max_size: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_size = max_size
        self._monotonic = monotonic
        self._wall = wall
        self._lease_until = 0.0  # on the monotonic clock; nothing served until a first lease
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def serving(self) -> bool:
        return self._monotonic() < self._lease_until

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None or not self.serving:
            return None
        if self._wall() >= entry.valid_until:  # as PyJWT: expired at `exp` itself
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry.principal

    def put(self, token: str, principal: Principal, valid_until: float, generation: int) -> None:
        """Store the answer of a verification that started under `generation`, unless the
        cache was emptied since (the answer may predate the change) or is not serving."""
        if generation != self.generation or not self.serving:
            return
        self._entries[token] = _Entry(principal, valid_until)
        self._entries.move_to_end(token)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    def renew(self, until: float) -> None:
        """Serve until `until` (monotonic clock) unless emptied or renewed again meanwhile."""
        self._lease_until = until

    def stop(self) -> None:
        """Serve nothing until renewed, and forget everything (changes may be missed)."""
        self._lease_until = 0.0
        self.clear()


type Verifier = Callable[[AsyncSession, Settings, str], Awaitable[tuple[Principal, datetime]]]


async def authenticate(
    cache: PrincipalCache | None,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    token: str,
    verify: Verifier | None = None,
) -> Principal:
    """The principal of an access token (or of an API key, with its `verify`): from the
    cache, or fully verified (signature, claims, the principal query on a session of its
    own) and then cached."""
    if cache is not None and (principal := cache.get(token)) is not None:
        return principal
    generation = cache.generation if cache is not None else 0
    # A session of its own, closed at once: holding its connection for the whole request
    # would make every write request need two, and a burst of them could exhaust the pool.
    async with sessions() as session:
        principal, valid_until = await (verify or verify_access_token)(session, settings, token)
    if cache is not None:
        cache.put(token, principal, valid_until.timestamp(), generation)
    return principal


# --- the worker's own writes -------------------------------------------------------------

_AUTH_TABLES: Final = frozenset(
    model.__tablename__
    for model in (User, Role, RoleGrant, UserRole, UserRevokedToken, RefreshToken, ApiKey)
)
# Nobody holds a token of a new user, and a new session, refresh token or API key ends none.
_INSERTS_CHANGE_NOTHING: Final = frozenset(
    model.__tablename__ for model in (User, Role, RefreshToken, ApiKey)
)


def attach(sessions: async_sessionmaker[AsyncSession], cache: PrincipalCache) -> None:
    """Make the writes of `sessions` to what a principal is made of empty `cache`."""
    info = {**sessions.kw.get("info", {}), _CACHE_INFO_KEY: cache}
    sessions.configure(info=info)


def _object_changes_principals(obj: object, *, new: bool, deleted: bool) -> bool:
    match obj:
        case User():
            return deleted or (
                not new
                and any(get_history(obj, name).has_changes() for name in PRINCIPAL_USER_FIELDS)
            )
        case Role():
            return deleted  # its grants and user links go with it (ON DELETE CASCADE)
        case RoleGrant() | UserRole() | UserRevokedToken():
            return True
        case RefreshToken():
            # A rotation revokes a token and links its replacement, inserted with it.
            return deleted or (not new and obj.replaced_by_id is None)
        case ApiKey():
            return deleted or (
                not new
                and any(get_history(obj, name).has_changes() for name in API_KEY_PRINCIPAL_FIELDS)
            )
    return False


def _changed(session: Session, cache: PrincipalCache) -> None:
    # At once, so a later read in this worker cannot be served the old principal (the test
    # suite's requests share one uncommitted transaction), and again after COMMIT: a
    # concurrent request may have read and stored the old state in between.
    cache.clear()
    session.info[_PENDING_INFO_KEY] = True


def _on_statement(state: ORMExecuteState) -> None:
    cache: PrincipalCache | None = state.session.info.get(_CACHE_INFO_KEY)
    if cache is None or state.is_select:
        return
    table = getattr(getattr(state.statement, "table", None), "name", None)
    if table not in _AUTH_TABLES or state.execution_options.get(PRINCIPALS_UNCHANGED):
        return
    if state.is_insert and table in _INSERTS_CHANGE_NOTHING:
        return
    if state.is_insert or state.is_update or state.is_delete:
        _changed(state.session, cache)


def _after_flush(session: Session, _flush_context: UOWTransaction) -> None:
    cache: PrincipalCache | None = session.info.get(_CACHE_INFO_KEY)
    if cache is None:
        return
    changes = itertools.chain(
        ((obj, True, False) for obj in session.new),
        ((obj, False, False) for obj in session.dirty),
        ((obj, False, True) for obj in session.deleted),
    )
    if any(_object_changes_principals(obj, new=n, deleted=d) for obj, n, d in changes):
        _changed(session, cache)


def _after_commit(session: Session) -> None:
    if session.info.pop(_PENDING_INFO_KEY, False):
        cache: PrincipalCache = session.info[_CACHE_INFO_KEY]
        cache.clear()


def _after_rollback(session: Session, _previous: SessionTransaction) -> None:
    session.info.pop(_PENDING_INFO_KEY, None)


# On every session class; they act on the sessions `attach` gave a cache, and return at once
# on the others.
event.listen(Session, "do_orm_execute", _on_statement)
event.listen(Session, "after_flush", _after_flush)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_soft_rollback", _after_rollback)


# --- every other worker's writes ---------------------------------------------------------


class PrincipalListener:
    """One connection per worker that LISTENs on CHANNEL, pings itself through it, and keeps
    the cache's lease while both work; reconnects with a jittered back-off when they do not."""

    def __init__(self, cache: PrincipalCache, url: str, connect_timeout_s: float) -> None:
        self.cache = cache
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._ping_payload = ""
        self._ping_heard = asyncio.Event()
        self._lost = asyncio.Event()
        self._worker = uuid.uuid4().hex
        self._confirmed = False

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: object) -> None:
        if payload == self._ping_payload:
            self._ping_heard.set()
        elif not str(payload).startswith(_PING_PREFIX):  # another worker's ping changes nothing
            self.cache.clear()

    def _on_termination(self, _connection: Any) -> None:
        self.cache.stop()
        self._lost.set()

    async def run(self) -> None:
        """Until cancelled."""
        backoff = _RECONNECT_FIRST_S
        warned = False  # one warning per outage, not one per attempt
        while True:
            self._confirmed = False
            try:
                await self._listen()
            except Exception as exc:  # noqa: BLE001  # any failure is a lost listener
                if self._confirmed or not warned:
                    log.warning("auth.principal_listener_lost", error=type(exc).__name__)
                warned = True
            if self._confirmed:  # it worked for a while: retry soon
                backoff = _RECONNECT_FIRST_S
            self.cache.stop()
            # Full jitter: the workers of every node reconnect spread out, not all at once.
            await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311  # not a secret
            backoff = min(backoff * 2, _RECONNECT_MAX_S)

    async def _listen(self) -> None:
        """One connection's life, until it is lost (an exception)."""
        self._lost.clear()
        connection: asyncpg.Connection = await asyncpg.connect(
            self.url,
            timeout=self.connect_timeout_s,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        try:
            connection.add_termination_listener(self._on_termination)
            await connection.add_listener(CHANNEL, self._on_notification)
            self.cache.clear()  # whatever changed while nobody listened
            for sequence in itertools.count():
                await self._ping(connection, sequence)
                if not self._confirmed:
                    log.info("auth.principal_listener_connected")
                    self._confirmed = True
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), PING_INTERVAL_S)
                if self._lost.is_set():
                    raise ConnectionError("listener connection terminated")
        finally:
            self.cache.stop()
            connection.terminate()

    async def _ping(self, connection: asyncpg.Connection, sequence: int) -> None:
        sent_at = time.monotonic()
        self._ping_payload = f"{_PING_PREFIX}{self._worker}:{sequence}"
        self._ping_heard.clear()
        async with asyncio.timeout(PING_TIMEOUT_S):
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, self._ping_payload)
            await self._ping_heard.wait()
        # Every change committed before `sent_at` has been heard by now.
        self.cache.renew(sent_at + STALENESS_BOUND_S)


@asynccontextmanager
async def principal_cache_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's principal cache (`app.state.principal_cache`, None when
    PRINCIPAL_CACHE_ENABLED is off) and its listener, inside the database's lifespan."""
    settings: Settings = app.state.settings
    if not settings.principal_cache_enabled:
        app.state.principal_cache = None
        yield
        return
    cache = PrincipalCache(settings.principal_cache_size)
    database = app.state.database
    attach(database.sessions, cache)
    app.state.principal_cache = cache
    # LISTEN needs a session of its own: DATABASE_DIRECT_URL when set (required behind a
    # transaction pooler, where the engine's URL would never hear a notification).
    url = libpq_url(
        settings.database_direct_url or database.engine.url.render_as_string(hide_password=False)
    )
    listener = PrincipalListener(cache, url, settings.db_connect_timeout_ms / 1000)
    task = asyncio.create_task(listener.run(), name="principal-listener")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        cache.stop()
