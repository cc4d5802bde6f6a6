"""Sessions: login, refresh-token rotation, logout, password change, and turning an access
token into the principal a request runs as."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backoffice.auth.errors import (
    InvalidAccessTokenError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    UnchangedPasswordError,
    WrongCurrentPasswordError,
)
from backoffice.auth.models import RefreshToken, User
from backoffice.auth.permissions import Action, Module, Permission, effective_permissions
from backoffice.auth.repository import (
    PasswordAttempt,
    TokenRepository,
    UserRepository,
    account_with_email,
    account_with_id,
)
from backoffice.auth.schemas import TokenPair
from backoffice.auth.tokens import (
    AccessClaims,
    InvalidTokenError,
    PasswordHasher,
    create_access_token,
    decode_access_token,
    hash_refresh_token,
    new_refresh_token,
)
from backoffice.core.config import Settings
from backoffice.core.errors import ForbiddenError, NotFoundError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PasswordGuard:
    """What checking a password needs: the sessions that book each guess against the lockout
    in a transaction of its own, the settings (lockout, tokens) and the app's capped argon2."""

    attempts: async_sessionmaker[AsyncSession]
    settings: Settings
    hasher: PasswordHasher


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request runs as, checked against the database on every request."""

    id: int
    email: str
    full_name: str
    is_superuser: bool
    permissions: frozenset[Permission]
    claims: AccessClaims | None  # None: an API key, which has no session
    api_key_id: int | None = None  # the API key the caller authenticated with

    def can(self, module: Module, action: Action) -> bool:
        return self.is_superuser or Permission(module, action) in self.permissions


def parse_grants(rows: list[str] | None) -> list[tuple[Module, list[Action]]]:
    """`["products:create,update", "tasks:"]` as typed grants."""
    grants = []
    for row in rows or []:
        module, _, actions = row.partition(":")
        grants.append((Module(module), [Action(action) for action in actions.split(",") if action]))
    return grants


async def verify_access_token(
    session: AsyncSession, settings: Settings, token: str
) -> tuple[Principal, datetime]:
    """Every check an access token must pass, with the user's permissions, in one query; and
    until when its answer holds if nothing changes meanwhile: the token's expiry, or its
    session's if that comes first (the principal cache's bound)."""
    try:
        claims = decode_access_token(settings, token)
    except InvalidTokenError as exc:
        log.info("auth.token_rejected", reason=str(exc))
        raise InvalidAccessTokenError from exc
    row = await UserRepository(session).load_principal(
        claims.user_id, claims.jti, claims.session_id
    )
    failure = _principal_failure(row, claims)
    if failure is not None:
        log.info("auth.token_rejected", reason=failure, user_id=claims.user_id)
        raise InvalidAccessTokenError
    assert row is not None  # noqa: S101  # _principal_failure returned None only for a row
    permissions = effective_permissions(
        parse_grants(row["grants"]), is_superuser=row["is_superuser"]
    )
    principal = Principal(
        id=row["id"],
        email=row["email"],
        full_name=row["full_name"],
        is_superuser=row["is_superuser"],
        permissions=permissions,
        claims=claims,
    )
    return principal, min(claims.expires_at, row["session_expires_at"])


def _principal_failure(row: RowMapping | None, claims: AccessClaims) -> str | None:
    if row is None:
        return "user no longer exists"
    checks = {
        "user is deactivated": not row["is_active"],
        "token issued before the user's sessions were revoked": row["token_version"]
        != claims.token_version,
        "token was revoked (logout)": row["token_revoked"],
        "session was ended": row["session_expires_at"] is None,
    }
    return next((reason for reason, failed in checks.items() if failed), None)


async def _issue_pair(
    session: AsyncSession,
    settings: Settings,
    user: User,
    *,
    family_id: uuid.UUID,
    parent: RefreshToken | None = None,
) -> tuple[TokenPair, RefreshToken]:
    assert user.id is not None  # noqa: S101  # users are flushed before tokens are issued
    now = datetime.now(UTC)
    refresh_token = new_refresh_token()
    row = await TokenRepository(session).create(
        RefreshToken(
            user_id=user.id,
            token_hash=hash_refresh_token(refresh_token),
            family_id=family_id,
            parent_id=parent.id if parent else None,
            expires_at=now + timedelta(days=settings.refresh_token_ttl_days),
        )
    )
    access = create_access_token(
        settings, user_id=user.id, token_version=user.token_version, session_id=family_id, now=now
    )
    pair = TokenPair(
        access_token=access.token, refresh_token=refresh_token, expires_in=access.expires_in
    )
    return pair, row


async def start_session(session: AsyncSession, settings: Settings, user: User) -> TokenPair:
    """A new session (refresh-token family) for an authenticated user."""
    pair, _ = await _issue_pair(session, settings, user, family_id=uuid.uuid4())
    return pair


async def _book_attempt(
    guard: PasswordGuard, account: ColumnElement[bool]
) -> PasswordAttempt | None:
    """Book a password guess in a short transaction of its own, committed before the password
    is checked: the booking holds (and counts) whatever happens to the request afterwards,
    and no connection or row lock is held during argon2."""
    settings = guard.settings
    async with guard.attempts() as bookkeeping, bookkeeping.begin():
        return await UserRepository(bookkeeping).reserve_password_attempt(
            account, settings.login_max_failures, timedelta(minutes=settings.login_lockout_minutes)
        )


async def _why_refused(guard: PasswordGuard, account: ColumnElement[bool]) -> str:
    async with guard.attempts() as reading:
        locked = await UserRepository(reading).is_locked(account)
    return "account locked" if locked else "unknown email"


def _log_wrong_password(attempt: PasswordAttempt) -> None:
    if attempt.locked_until is not None:
        log.warning(
            "auth.account_locked",
            user_id=attempt.user_id,
            until=attempt.locked_until.isoformat(),
        )
    log.info("auth.login_failed", reason="wrong password", user_id=attempt.user_id)


async def _current_user(users: UserRepository, user_id: int) -> User | None:
    """The account as it is now; None when it was deleted meanwhile, which the callers answer
    as a failed authentication, not as a missing resource."""
    try:
        return await users.get(user_id)
    except NotFoundError:
        return None


async def login(
    session: AsyncSession, guard: PasswordGuard, email: str, password: str
) -> TokenPair:
    """The same failure, in about the same time, for an unknown email, a wrong password, a
    disabled or a locked account. Each guess is booked as a failure before argon2 checks it,
    in a transaction of its own, so however many arrive at once, at most
    LOGIN_MAX_FAILURES of them are checked before the account locks; a right one undoes its
    booking in the request's own transaction (`session`)."""
    account = account_with_email(email)
    attempt = await _book_attempt(guard, account)
    if attempt is None:
        await guard.hasher.verify(password, None)  # as long as a real check takes
        log.info("auth.login_failed", reason=await _why_refused(guard, account))
        raise InvalidCredentialsError
    matches, upgraded_hash = await guard.hasher.verify(password, attempt.hashed_password)
    if not matches:
        _log_wrong_password(attempt)
        raise InvalidCredentialsError
    users = UserRepository(session)
    user = await _current_user(users, attempt.user_id)
    # Re-read after argon2: a password changed or an account disabled meanwhile wins.
    if user is None or user.hashed_password != attempt.hashed_password:
        log.info("auth.login_failed", reason="password changed", user_id=attempt.user_id)
        raise InvalidCredentialsError
    if not user.is_active:
        log.info("auth.login_failed", reason="account disabled", user_id=attempt.user_id)
        raise InvalidCredentialsError
    await users.reset_login_failures(attempt.user_id)
    if upgraded_hash is not None:
        await users.update(user, {"hashed_password": upgraded_hash})
    pair = await start_session(session, guard.settings, user)
    log.info("auth.login_succeeded", user_id=user.id)
    return pair


async def refresh(session: AsyncSession, settings: Settings, refresh_token: str) -> TokenPair:
    """Rotate: the presented token is spent and replaced. Presenting a spent token again is
    a replay (RFC 9700 section 4.14): its whole family is revoked."""
    tokens = TokenRepository(session)
    current = await tokens.get_for_update(hash_refresh_token(refresh_token))
    if current is None:
        raise InvalidRefreshTokenError
    now = datetime.now(UTC)
    if current.revoked_at is not None:
        if current.replaced_by_id is not None:
            revoked = await tokens.revoke_family(current.family_id, now)
            log.warning(
                "auth.refresh_token_reused",
                user_id=current.user_id,
                family_id=str(current.family_id),
                tokens_revoked=revoked,
            )
        raise InvalidRefreshTokenError
    user = await _current_user(UserRepository(session), current.user_id)
    if current.expires_at <= now or user is None or not user.is_active:
        raise InvalidRefreshTokenError
    pair, replacement = await _issue_pair(
        session, settings, user, family_id=current.family_id, parent=current
    )
    await tokens.update(current, {"revoked_at": now, "replaced_by_id": replacement.id})
    return pair


async def logout(session: AsyncSession, principal: Principal) -> None:
    claims = principal.claims
    if claims is None:
        raise ForbiddenError("An API key has no session to end: revoke the key instead.")
    tokens = TokenRepository(session)
    await tokens.revoke_access_token(claims.jti, principal.id, claims.expires_at)
    await tokens.revoke_family(claims.session_id, datetime.now(UTC))
    log.info("auth.logged_out", user_id=principal.id)


async def revoke_all_sessions(session: AsyncSession, user: User) -> None:
    """End every session of the user: access tokens through the version they carry, refresh
    tokens by revoking them."""
    assert user.id is not None  # noqa: S101  # only called for stored users
    await UserRepository(session).update(user, {"token_version": user.token_version + 1})
    await TokenRepository(session).revoke_all_of_user(user.id, datetime.now(UTC))


async def change_password(
    session: AsyncSession,
    guard: PasswordGuard,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
) -> TokenPair:
    """Ends every session, this one included, and returns a fresh pair for this client.
    A wrong current password counts towards the lockout like a failed login, booked the same
    way: a stolen access token must not become an unlimited password oracle."""
    if principal.api_key_id is not None:
        raise ForbiddenError("A service account has no password: it authenticates with API keys.")
    attempt = await _book_attempt(guard, account_with_id(principal.id))
    if attempt is None:
        raise ForbiddenError("Too many wrong passwords: the account is locked for a while.")
    matches, _ = await guard.hasher.verify(current_password, attempt.hashed_password)
    if not matches:
        _log_wrong_password(attempt)
        raise WrongCurrentPasswordError
    if new_password == current_password:
        await UserRepository(session).reset_login_failures(principal.id)
        raise UnchangedPasswordError
    # Hashed before the request's transaction starts: no connection or row lock held meanwhile.
    new_hash = await guard.hasher.hash(new_password)
    users = UserRepository(session)
    user = await _current_user(users, principal.id)
    if user is None or user.hashed_password != attempt.hashed_password:
        raise WrongCurrentPasswordError  # changed meanwhile by a concurrent request
    await users.reset_login_failures(principal.id)
    await users.update(user, {"hashed_password": new_hash})
    await revoke_all_sessions(session, user)
    log.info("auth.password_changed", user_id=user.id)
    return await start_session(session, guard.settings, user)


async def unlock_account(session: AsyncSession, user_id: int) -> bool:
    """Clear the lockout (failure count and lock) of an account; whether it had any."""
    cleared = await UserRepository(session).reset_login_failures(user_id)
    log.info("auth.account_unlocked", user_id=user_id, cleared=cleared)
    return cleared


async def unlock_account_by_email(session: AsyncSession, email: str) -> int | None:
    """For the command line, when no administrator can log in: the user's id, None when no
    account has this email."""
    user = await UserRepository(session).get_by_email(email)
    if user is None or user.id is None:
        return None
    await unlock_account(session, user.id)
    return user.id
