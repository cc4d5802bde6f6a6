"""Passwords, access tokens (JWT) and refresh tokens (opaque, stored as hashes)."""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import jwt
from anyio import CapacityLimiter, to_thread
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from backoffice.core.config import Settings

# Pinned: decoding accepts this algorithm only, so `alg: none` and HS/RS confusion fail.
ALGORITHM: Final = "HS256"
ACCESS_TOKEN_TYPE: Final = "access"  # noqa: S105  # the `typ` claim, not a secret
_REQUIRED_CLAIMS: Final = ["sub", "exp", "iat", "nbf", "jti", "iss", "aud", "typ", "ver", "sid"]

# argon2id at RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes), above OWASP's
# minimum; pwdlib flags hashes made with other parameters so login can upgrade them.
password_hash = PasswordHash((Argon2Hasher(time_cost=3, memory_cost=65_536, parallelism=4),))


class InvalidTokenError(Exception):
    """The access token cannot be trusted; the message is for logs, never for the client."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    jti: str
    session_id: uuid.UUID
    token_version: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    claims: AccessClaims
    expires_in: int


def hash_password(password: str) -> str:
    return password_hash.hash(password)


@lru_cache
def _dummy_hash() -> str:
    return password_hash.hash(secrets.token_urlsafe(16))


def verify_password(password: str, hashed: str | None) -> tuple[bool, str | None]:
    """(matches, upgraded hash or None). With no hash (unknown user) a dummy hash is verified
    anyway, so the answer takes as long as for a real user."""
    if hashed is None:
        password_hash.verify(password, _dummy_hash())
        return False, None
    return password_hash.verify_and_update(password, hashed)


class PasswordHasher:
    """argon2 in worker threads, at most `max_concurrency` at a time. On the event loop each
    hash would stall every other request of the process for its whole duration; unbounded in
    threads, a login flood would take a core and 64 MiB per attempt. Callers over the cap
    wait their turn. One per application (created with it), shared by all its requests."""

    def __init__(self, max_concurrency: int) -> None:
        self.limiter = CapacityLimiter(max_concurrency)

    async def hash(self, password: str) -> str:
        return await to_thread.run_sync(hash_password, password, limiter=self.limiter)

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        return await to_thread.run_sync(verify_password, password, hashed, limiter=self.limiter)


def create_access_token(
    settings: Settings,
    *,
    user_id: int,
    token_version: int,
    session_id: uuid.UUID,
    now: datetime | None = None,
) -> IssuedAccessToken:
    issued_at = now or datetime.now(UTC)
    lifetime = timedelta(minutes=settings.access_token_ttl_minutes)
    claims = AccessClaims(
        user_id=user_id,
        jti=uuid.uuid4().hex,
        session_id=session_id,
        token_version=token_version,
        expires_at=issued_at + lifetime,
    )
    payload: dict[str, Any] = {
        "sub": str(user_id),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": claims.expires_at,
        "jti": claims.jti,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "typ": ACCESS_TOKEN_TYPE,
        "ver": token_version,
        "sid": str(session_id),
    }
    token = jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm=ALGORITHM)
    return IssuedAccessToken(token, claims, int(lifetime.total_seconds()))


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": _REQUIRED_CLAIMS},
        )
        if payload["typ"] != ACCESS_TOKEN_TYPE:
            raise InvalidTokenError(f"token type {payload['typ']!r} is not an access token")
        return AccessClaims(
            user_id=int(payload["sub"]),
            jti=str(payload["jti"]),
            session_id=uuid.UUID(str(payload["sid"])),
            token_version=int(payload["ver"]),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidTokenError(str(exc)) from exc


def new_refresh_token() -> str:
    """256 bits from the OS's CSPRNG, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    # A fast hash is right here: the token is 256 random bits, not a guessable password.
    return hashlib.sha256(token.encode()).hexdigest()
