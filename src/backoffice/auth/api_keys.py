"""API keys, the credential of a service account: their format, their check on every request,
their rate limit, and the record of their last use.

A key reads `bo_sk_<public id>_<secret>`: the prefix makes a leaked key easy to find in a scan
(.gitleaks.toml has a rule for it), the public id (16 hex digits) finds its row, and the secret
is 43 base62 characters, 256 bits from the OS's CSPRNG. Only the SHA-256 of the whole key is
stored, and compared in constant time. A fast hash is right here, where argon2 is right for
passwords: argon2 makes each guess of a *guessable* secret expensive, but nobody can enumerate
2**256 secrets however cheap a guess is, and a key is checked on every request, where argon2's
64 MiB and tens of milliseconds would cost more than the request itself. No salt is needed
either: every key is unique and random, so precomputed tables gain nothing.
"""

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final

import structlog
from fastapi import FastAPI
from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.auth.errors import InvalidAccessTokenError
from backoffice.auth.models import API_KEY_PUBLIC_ID_LENGTH
from backoffice.auth.permissions import Permission
from backoffice.auth.rate_limit import RateLimiter
from backoffice.auth.repository import ApiKeyRepository
from backoffice.auth.service import Principal
from backoffice.core.config import Settings
from backoffice.core.periodic import periodic_job

log = structlog.get_logger(__name__)

API_KEY_PREFIX: Final = "bo_sk_"
_SECRET_ALPHABET: Final = string.ascii_letters + string.digits
SECRET_LENGTH: Final = 43  # 43 * log2(62) = 256.0 bits
API_KEY_PATTERN: Final = re.compile(
    rf"{API_KEY_PREFIX}([0-9a-f]{{{API_KEY_PUBLIC_ID_LENGTH}}})_[0-9A-Za-z]{{{SECRET_LENGTH}}}"
)
# The OpenAPI security scheme offered next to the password login (core/openapi.py).
API_KEY_SCHEME_NAME: Final = "ApiKey"
API_KEY_SECURITY_SCHEME: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "A service account's API key, `bo_sk_...`, sent as `Authorization: Bearer <key>`: "
        "paste it here. Its permissions are those given when it was created."
    ),
}
# A key without an expiry stays in a worker's principal cache until a change empties it.
_NO_EXPIRY: Final = datetime.max.replace(tzinfo=UTC)
# How often each worker writes the last use of the keys it saw (one UPDATE for all of them).
LAST_USED_FLUSH_S: Final = 30.0


def new_api_key() -> tuple[str, str]:
    """(key, public id) of a new key."""
    public_id = secrets.token_hex(API_KEY_PUBLIC_ID_LENGTH // 2)
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    return f"{API_KEY_PREFIX}{public_id}_{secret}", public_id


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(public_id: str) -> str:
    """What lists show of a key: enough to recognise it, nothing to use it."""
    return f"{API_KEY_PREFIX}{public_id}"


def _key_failure(row: RowMapping | None, key: str) -> str | None:
    """Why the key's row refuses it (for the log), or None."""
    if row is None:
        return "unknown key"
    checks = {
        # In constant time: the row was found by its public id, the secret is what is checked.
        "wrong secret": not hmac.compare_digest(row["key_hash"], hash_api_key(key)),
        "key revoked": row["revoked_at"] is not None,
        "key expired": row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC),
        "service account deactivated": not row["is_active"],
    }
    return next((reason for reason, failed in checks.items() if failed), None)


async def verify_api_key(
    session: AsyncSession, _settings: Settings, key: str
) -> tuple[Principal, datetime]:
    """The principal of an API key, and until when that answer holds if nothing changes
    meanwhile; every refusal is the same 401 as a bad access token's."""
    match = API_KEY_PATTERN.fullmatch(key)
    row = None if match is None else await ApiKeyRepository(session).load_principal(match[1])
    failure = "malformed key" if match is None else _key_failure(row, key)
    if failure is not None:
        log.info("auth.api_key_rejected", reason=failure, key_public_id=match and match[1])
        raise InvalidAccessTokenError
    assert row is not None  # noqa: S101  # a missing row is a failure above
    principal = Principal(
        id=row["user_id"],
        email=row["email"],
        full_name=row["full_name"],
        # A key is never a superuser: it can do what its permissions say, nothing more.
        is_superuser=False,
        permissions=frozenset(Permission.parse(text) for text in row["permissions"]),
        claims=None,
        api_key_id=row["id"],
    )
    return principal, row["expires_at"] or _NO_EXPIRY


# --- the rate limit -----------------------------------------------------------------------


def api_key_limiter(settings: Settings) -> RateLimiter:
    """Requests per key (API_KEY_RATE_LIMIT), shared by every worker and node when
    RATE_LIMIT_STORAGE_URL is set."""
    return RateLimiter(settings.api_key_rate_limit, settings.rate_limit_storage_url, "api_key")


# --- last use, without a write per request --------------------------------------------------


class ApiKeyUsage:
    """The last use of each key this worker saw, in memory, written to the database by
    `flush` (every LAST_USED_FLUSH_S, and at shutdown) in one UPDATE for all of them: a key
    used a thousand times a second costs a write every half a minute, not a thousand."""

    def __init__(self) -> None:
        self._pending: dict[int, datetime] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def touch(self, api_key_id: int) -> None:
        self._pending[api_key_id] = datetime.now(UTC)

    async def flush(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Write what was seen since the last flush; the number of keys written. What the
        database does not take is kept for the next flush (a newer use wins)."""
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        try:
            async with sessions() as session:
                await ApiKeyRepository(session).record_use(pending)
                await session.commit()
        except Exception:
            for api_key_id, used_at in pending.items():
                self._pending[api_key_id] = max(used_at, self._pending.get(api_key_id, used_at))
            raise
        return len(pending)


def install_api_keys(app: FastAPI, settings: Settings) -> None:
    """The app's key limiter and usage record (create_app), on `app.state` for its life."""
    app.state.api_key_limiter = api_key_limiter(settings)
    app.state.api_key_usage = ApiKeyUsage()


@asynccontextmanager
async def api_key_usage_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Flush the keys' last use periodically while the app runs, and once more at shutdown
    (inside the database's lifespan, so before the engine is disposed)."""
    usage: ApiKeyUsage = app.state.api_key_usage
    sessions = app.state.database.sessions

    async def flush_once() -> None:
        try:
            await usage.flush(sessions)
        except Exception as exc:  # noqa: BLE001  # kept for the next round
            log.warning("auth.api_key_usage_deferred", error=type(exc).__name__)

    try:
        async with periodic_job("api-key-usage", flush_once, LAST_USED_FLUSH_S):
            yield
    finally:
        try:
            await usage.flush(sessions)
        except Exception as exc:  # noqa: BLE001  # a last use is not worth a failed shutdown
            log.warning("auth.api_key_usage_lost", keys=len(usage), error=type(exc).__name__)
