"""What a request with an Idempotency-Key may do: run (holding the key), replay the stored
answer, or be refused. Each step is a transaction of its own except marking the key applied,
which is the route's (middleware.py tells the order)."""

import hashlib
import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Final

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.auth.service import Principal
from backoffice.core.config import Settings
from backoffice.idempotency.errors import (
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    IdempotentAnswerLostError,
    MalformedIdempotencyKeyError,
)
from backoffice.idempotency.models import KEY_MAX_LENGTH, KeyState
from backoffice.idempotency.repository import Answer, IdempotencyRepository

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
# The headers of an answer a replay repeats; the others (the request id, caching, the date)
# are the replay's own.
STORED_HEADERS: Final = frozenset({"content-type", "location", "etag", "content-location"})
# 4xx answers that say "not now" rather than "not this request": the state or the caller's
# rights may change (a conflict, a stale If-Match, a missing permission, a rate limit), so
# they are not stored and a retry with the key runs again. Every other 2xx and 4xx is final.
_TRANSIENT_4XX: Final = frozenset(
    {
        HTTPStatus.UNAUTHORIZED,
        HTTPStatus.FORBIDDEN,
        HTTPStatus.REQUEST_TIMEOUT,
        HTTPStatus.CONFLICT,
        HTTPStatus.PRECONDITION_FAILED,
        HTTPStatus.LOCKED,
        HTTPStatus.TOO_EARLY,
        HTTPStatus.TOO_MANY_REQUESTS,
    }
)
# RFC 8941 sf-string, the draft's form: printable ASCII in double quotes, `"` and `\` escaped
# with `\`. Also a bare token (a UUID, say), as Stripe-style clients send the header: it cannot
# be read as anything else, so refusing it would only break those clients. `"abc"` and `abc`
# are the same key.
_SF_STRING: Final = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BARE_TOKEN: Final = re.compile(r"[A-Za-z0-9._~:+/=-]+")
_ESCAPE: Final = re.compile(r'\\(["\\])')
# The OpenAPI document's pattern for the header: the same grammar.
KEY_PATTERN: Final = r'^(?:"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])+"|[A-Za-z0-9._~:+/=-]+)$'

_CLAIM_ROUNDS: Final = 3

type SessionMaker = async_sessionmaker[AsyncSession]

log = structlog.get_logger(__name__)


def caller_scope(principal: Principal) -> str:
    """Whose keys these are: two callers may use the same key for different requests. The one
    place that says who a principal is, for keys (another kind of principal, an API key say,
    gets a prefix of its own here). Each API key is a caller of its own, even beside another
    key of the same service account: two integrations must not replay each other's answers."""
    if principal.api_key_id is not None:
        return f"api_key:{principal.api_key_id}"
    return f"user:{principal.id}"


def parse_key(values: Sequence[bytes]) -> str:
    """The key of the request's Idempotency-Key header (its raw values), or a 400."""
    if len(values) != 1:
        raise MalformedIdempotencyKeyError("The request has more than one Idempotency-Key.")
    try:
        text = values[0].decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        raise MalformedIdempotencyKeyError("The Idempotency-Key is not ASCII.") from None
    if _BARE_TOKEN.fullmatch(text):
        key = text
    elif match := _SF_STRING.fullmatch(text):
        key = _ESCAPE.sub(r"\1", match.group(1))
    else:
        raise MalformedIdempotencyKeyError(
            "The Idempotency-Key is neither a quoted string nor a bare token of letters, "
            "digits and ._~:+/=-."
        )
    if not 1 <= len(key) <= KEY_MAX_LENGTH:
        raise MalformedIdempotencyKeyError(
            f"The Idempotency-Key is empty or longer than {KEY_MAX_LENGTH} characters."
        )
    return key


def fingerprint(secret: bytes, method: str, path: str, query: bytes, body: bytes) -> bytes:
    """HMAC-SHA-256 of what makes two requests the same one; each part length-prefixed, so
    no two different requests run together into the same bytes. Keyed with the app's
    secret: a body may hold a password (`POST /users`), and a plain hash of it, beside the
    email and name the users table gives, would be a cheap guess away from the password."""
    digest = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def stores(status: int) -> bool:
    """Whether an answer whose route committed nothing is final, and so stored: 2xx and 4xx
    but the transient ones. A 5xx never is (the draft leaves it to us): a database outage
    answered 503 must let the retry run."""
    return HTTPStatus.OK <= status < HTTPStatus.INTERNAL_SERVER_ERROR and (
        status not in _TRANSIENT_4XX
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """A key held by one attempt of a request, while it runs."""

    scope: str
    key: str
    attempt: uuid.UUID
    lease: timedelta

    async def mark_applied(self, session: AsyncSession) -> None:
        """The route's hook (core.database.BEFORE_COMMIT): the key is applied by the route's
        own COMMIT. An attempt whose claim was taken over meanwhile (its lease ran out) must
        not commit: a 409, and its transaction rolls back."""
        if not await IdempotencyRepository(session).mark_applied(
            self.scope, self.key, self.attempt, lease=self.lease
        ):
            raise IdempotencyKeyInUseError


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    lease: timedelta
    ttl: timedelta

    @classmethod
    def of(cls, settings: Settings) -> "KeyPolicy":
        return cls(
            lease=timedelta(seconds=settings.idempotency_lease_seconds),
            ttl=timedelta(hours=settings.idempotency_key_ttl_hours),
        )


async def claim(
    sessions: SessionMaker,
    policy: KeyPolicy,
    scope: str,
    key: str,
    request_fingerprint: bytes,
) -> Claim | Answer:
    """Hold the key for a run (a Claim), or the stored answer to replay; else raise the
    problem: 422 for another request's key, 409 while the first runs or when its answer was
    lost. One short transaction of its own, committed before the route runs."""
    attempt = uuid.uuid4()
    held = Claim(scope, key, attempt, policy.lease)
    async with sessions.begin() as session:
        keys = IdempotencyRepository(session)
        stored = None
        # The key may be deleted (released, purged) between the insert and the lock: then
        # the next insert may claim it. A few rounds at most, even against a busy purge.
        for _ in range(_CLAIM_ROUNDS):
            if await keys.insert_claim(
                scope, key, request_fingerprint, attempt, lease=policy.lease, ttl=policy.ttl
            ):
                return held
            if (stored := await keys.lock(scope, key)) is not None:
                break
        if stored is None:
            raise IdempotencyKeyInUseError
        if stored.expired:  # not purged yet, but gone for the caller: a fresh key
            await keys.take_over(
                scope, key, request_fingerprint, attempt, lease=policy.lease, ttl=policy.ttl
            )
            return held
        if stored.fingerprint != request_fingerprint:
            raise IdempotencyKeyReusedError
        if stored.state is KeyState.COMPLETED:
            assert stored.status is not None  # noqa: S101  # the table's check constraint
            return Answer(stored.status, stored.headers or [], stored.body or b"")
        if not stored.lease_over:
            raise IdempotencyKeyInUseError
        if stored.state is KeyState.APPLIED:
            raise IdempotentAnswerLostError
        # Running, and its lease is over: its request died before committing (a commit would
        # have made it applied), so nothing of it was stored and it runs again.
        log.info("idempotency.claim_taken_over", scope=scope)
        await keys.take_over(scope, key, request_fingerprint, attempt, lease=policy.lease, ttl=None)
        return held


async def finish(sessions: SessionMaker, held: Claim, answer: Answer | None) -> None:
    """After the route: store its answer if its changes were committed (the key is applied:
    whatever it answered, short of a 5xx, that is the outcome) or if it is final; otherwise
    release the key so that a retry runs. `answer` None: the request failed without one."""
    async with sessions.begin() as session:
        keys = IdempotencyRepository(session)
        if answer is not None and answer.status < HTTPStatus.INTERNAL_SERVER_ERROR:
            states = (
                (KeyState.APPLIED, KeyState.RUNNING)
                if stores(answer.status)
                else (KeyState.APPLIED,)
            )
            if await keys.store_answer(held.scope, held.key, held.attempt, states, answer):
                return
        # An applied key whose answer is a 5xx (the commit's outcome was unknown to the route)
        # stays applied: a retry learns the answer was lost, and nothing runs twice.
        await keys.release(held.scope, held.key, held.attempt)
