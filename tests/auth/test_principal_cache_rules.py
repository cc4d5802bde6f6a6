"""The principal cache's own rules, on fake clocks: bounded, expiry checked on every hit,
nothing served outside the listener's lease, and no stale fill after an emptying."""

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.auth import principal_cache
from backoffice.auth.principal_cache import (
    CHANNEL,
    STALENESS_BOUND_S,
    PrincipalCache,
    PrincipalListener,
    authenticate,
)
from backoffice.auth.service import Principal
from backoffice.auth.tokens import AccessClaims
from backoffice.core.config import Settings
from tests.live_server import free_port

NOW = 1_000_000.0


class Clock:
    def __init__(self, at: float = NOW) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def principal(user_id: int = 1) -> Principal:
    claims = AccessClaims(
        user_id=user_id,
        jti=uuid.uuid4().hex,
        session_id=uuid.uuid4(),
        token_version=1,
        expires_at=datetime.fromtimestamp(NOW + 60, UTC),
    )
    return Principal(user_id, "u@example.com", "U", False, frozenset(), claims)


@pytest.fixture
def wall() -> Clock:
    return Clock()


@pytest.fixture
def monotonic() -> Clock:
    return Clock(0.0)


@pytest.fixture
def cache(wall: Clock, monotonic: Clock) -> PrincipalCache:
    cache = PrincipalCache(3, monotonic=monotonic, wall=wall)
    cache.renew(STALENESS_BOUND_S)
    return cache


def fill(cache: PrincipalCache, token: str, until: float = NOW + 60) -> Principal:
    answer = principal()
    cache.put(token, answer, until, cache.generation)
    return answer


def test_a_stored_principal_is_served_until_its_token_expires(
    cache: PrincipalCache, wall: Clock
) -> None:
    answer = fill(cache, "t", until=NOW + 10)

    assert cache.get("t") is answer
    wall.at = NOW + 10  # `exp` itself is expired, as PyJWT has it
    assert cache.get("t") is None
    assert len(cache) == 0


def test_the_least_recently_used_goes_first_beyond_the_bound(cache: PrincipalCache) -> None:
    for token in ("a", "b", "c"):
        fill(cache, token)
    assert cache.get("a") is not None  # now the most recent

    fill(cache, "d")

    assert len(cache) == 3
    assert cache.get("b") is None
    assert all(cache.get(token) is not None for token in ("a", "c", "d"))


def test_a_fill_that_started_before_an_emptying_is_not_stored(cache: PrincipalCache) -> None:
    """The race: a query reads the old state, a change empties the cache, the query's answer
    arrives. Storing it would keep the old state until the token expires."""
    started_under = cache.generation
    cache.clear()  # the change, heard while the query ran

    cache.put("t", principal(), NOW + 60, started_under)

    assert cache.get("t") is None


def test_nothing_is_served_or_stored_outside_the_lease(
    cache: PrincipalCache, monotonic: Clock
) -> None:
    fill(cache, "t")
    monotonic.at = STALENESS_BOUND_S  # the listener did not confirm in time

    assert not cache.serving
    assert cache.get("t") is None
    cache.put("u", principal(), NOW + 60, cache.generation)
    cache.renew(monotonic.at + STALENESS_BOUND_S)  # confirmed again: nothing was missed
    assert cache.get("t") is not None
    assert cache.get("u") is None


def test_a_new_cache_serves_nothing_until_its_listener_confirms(wall: Clock) -> None:
    cache = PrincipalCache(10, wall=wall)

    cache.put("t", principal(), NOW + 60, cache.generation)

    assert not cache.serving
    assert len(cache) == 0


def test_stopping_empties_and_stops_serving(cache: PrincipalCache) -> None:
    fill(cache, "t")
    generation = cache.generation

    cache.stop()

    assert (len(cache), cache.serving) == (0, False)
    assert cache.generation > generation


async def test_authenticate_does_not_cache_an_answer_older_than_a_change_heard_meanwhile(
    cache: PrincipalCache, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    answers = iter([principal(1), principal(2)])

    async def verify_during_a_change(*_args: Any) -> tuple[Principal, datetime]:
        answer = next(answers)
        if answer.id == 1:
            cache.clear()  # a notification arrives while the query runs
        return answer, datetime.fromtimestamp(NOW + 60, UTC)

    @asynccontextmanager
    async def no_session() -> AsyncIterator[None]:
        yield None

    monkeypatch.setattr(principal_cache, "verify_access_token", verify_during_a_change)
    sessions = cast(async_sessionmaker[AsyncSession], no_session)

    first = await authenticate(cache, sessions, settings, "t")
    assert cache.get("t") is None  # not stored: it may predate the change
    second = await authenticate(cache, sessions, settings, "t")
    third = await authenticate(cache, sessions, settings, "t")

    assert (first.id, second.id, third.id) == (1, 2, 2)  # the third from the cache


def test_the_listener_empties_on_any_announcement_but_a_ping(cache: PrincipalCache) -> None:
    listener = PrincipalListener(cache, "postgresql://unused", 1.0)
    fill(cache, "t")

    listener._on_notification(None, 1, CHANNEL, "ping:another-worker:7")
    assert cache.get("t") is not None
    listener._on_notification(None, 1, CHANNEL, "users")
    assert cache.get("t") is None


def test_the_documented_bound_is_one_second() -> None:
    """SECURITY.md and the settings' descriptions promise it."""
    assert STALENESS_BOUND_S == 1.0
    assert principal_cache.PING_INTERVAL_S + principal_cache.PING_TIMEOUT_S < STALENESS_BOUND_S


async def test_a_listener_that_cannot_connect_never_lets_the_cache_serve() -> None:
    """Pointed at a closed port: the cache stops at once and stays stopped, the listener keeps
    trying with its back-off, and the outage is one warning naming the error's class."""
    real = PrincipalCache(10)
    real.renew(math.inf)
    real.put("t", principal(), time.time() + 60, real.generation)
    listener = PrincipalListener(real, f"postgresql://nobody@127.0.0.1:{free_port()}/x", 0.5)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(listener.run())
        await asyncio.sleep(1.0)  # several attempts
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    assert (real.serving, len(real)) == (False, 0)
    warnings = [line for line in logs if line["event"] == "auth.principal_listener_lost"]
    assert [line["error"] for line in warnings] in (["ConnectionRefusedError"], ["OSError"])
