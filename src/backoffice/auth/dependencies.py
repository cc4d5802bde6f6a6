"""The dependencies routes declare: who is calling, and may they do this."""

from collections.abc import Sequence
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from backoffice.auth import principal_cache
from backoffice.auth.api_keys import API_KEY_PREFIX, ApiKeyUsage, verify_api_key
from backoffice.auth.errors import MissingAccessTokenError, RateLimitedError
from backoffice.auth.permissions import Action, Module
from backoffice.auth.rate_limit import RateLimiter, RateLimitState, client_key
from backoffice.auth.service import PasswordGuard, Principal, verify_access_token
from backoffice.auth.tokens import PasswordHasher
from backoffice.core.config import SettingsDep
from backoffice.core.database import database_of
from backoffice.core.errors import ForbiddenError
from backoffice.core.network import client_ip, forwarded_chain

LOGIN_PATH = "/api/v1/auth/sessions"

log = structlog.get_logger(__name__)


async def enforce_rate_limit(
    limiter: RateLimiter, keys: Sequence[str], what: str
) -> RateLimitState | None:
    """Count this attempt under each key; 429 past any key's limit, with the tightest key's
    headers. None when the limiter's storage is down: the account lockout still stands, and
    the route keeps working (fail open, logged)."""
    try:
        states = [await limiter.hit(key) for key in keys]
    except Exception:  # any storage failure (Redis down, timeout...)
        log.exception("auth.rate_limiter_unavailable")
        return None
    tightest = min(states, key=lambda state: (state.allowed, state.remaining))
    if not tightest.allowed:
        raise RateLimitedError(
            f"Too many {what}; retry in {tightest.reset_after} s.", headers=tightest.headers
        )
    return tightest


class AccessTokenBearer(OAuth2PasswordBearer):
    """The caller's principal, from the `Authorization: Bearer` access token or API key: the
    OAuth2 password flow's security scheme (what makes Swagger UI's "Authorize" button log in
    for real) and the authentication itself in one dependency. As a scheme with a dependency
    of its own it cost FastAPI a second node to solve on every request."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        token = await super().__call__(request)
        if not token:
            raise MissingAccessTokenError
        # Already authenticated for this request by the Idempotency-Key middleware, from the
        # same header: not verified twice.
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:
            principal = await authenticate_bearer(request, token)
            request.state.principal = principal  # for PermissionChecker
        await admit(request, principal)
        return principal


async def authenticate_bearer(request: Request, token: str) -> Principal:
    """The principal of a bearer credential, an access token or an API key: the one place
    that tells them apart (for the routes, and for what must know the caller before a route
    runs). UnauthorizedError when it does not authenticate."""
    state = request.app.state
    is_api_key = token.startswith(API_KEY_PREFIX)  # the one test an access token pays
    return await principal_cache.authenticate(
        getattr(state, "principal_cache", None),  # None: no lifespan ran, or the cache is off
        database_of(request).read_sessions,
        state.settings,
        token,
        verify_api_key if is_api_key else verify_access_token,
    )


async def admit(request: Request, principal: Principal) -> None:
    """What an authenticated request owes before it is answered, whoever answers it (the
    route, or the Idempotency-Key middleware's replay): its caller named in the access log,
    and for an API key, `_admit_api_key`. Once per request: a second call changes nothing."""
    request.state.user_id = principal.id  # for the access log
    if principal.api_key_id is not None and (
        getattr(request.state, "api_key_id", None) != principal.api_key_id
    ):
        await _admit_api_key(request, principal)


async def _admit_api_key(request: Request, principal: Principal) -> None:
    """What a request with an API key adds: the key named in its audit rows (access and data
    changes, through the request's state), its use noted for `last_used_at`, and the key's
    rate limit (429, counted after authentication so nobody spends another key's budget)."""
    assert principal.api_key_id is not None  # noqa: S101  # verify_api_key sets it
    request.state.api_key_id = principal.api_key_id
    state = request.app.state
    usage: ApiKeyUsage = state.api_key_usage
    usage.touch(principal.api_key_id)
    await enforce_rate_limit(
        state.api_key_limiter, [str(principal.api_key_id)], "requests with this API key"
    )


# The scheme keeps the name FastAPI gives OAuth2PasswordBearer: the OpenAPI document's
# `securitySchemes` entry, which clients may refer to, does not change.
get_current_principal = AccessTokenBearer(
    tokenUrl=LOGIN_PATH, scheme_name="OAuth2PasswordBearer", auto_error=False
)


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, which costs more than the work itself on the hot path.
async def get_password_guard(request: Request, settings: SettingsDep) -> PasswordGuard:
    hasher: PasswordHasher = request.app.state.password_hasher
    return PasswordGuard(database_of(request).sessions, settings, hasher)


# For routes that check a password: lockout bookkeeping and the app's capped argon2.
PasswordGuardDep = Annotated[PasswordGuard, Depends(get_password_guard)]


async def get_client_key(request: Request, settings: SettingsDep) -> str:
    """Who the caller is for rate limits: its address (behind TRUSTED_PROXIES, the forwarded
    one), an IPv6 address by its /64."""
    peer = request.client.host if request.client else None
    forwarded = forwarded_chain(request.scope["headers"])
    return client_key(client_ip(peer, forwarded, settings.trusted_proxies))


ClientKey = Annotated[str, Depends(get_client_key)]


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


async def _principal_of(request: Request) -> Principal:
    """The principal the `/api/v1` group's own dependency resolved for this request, or, on a
    route outside that group, resolved here by the same function."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = await get_current_principal(request)
    return principal


class PermissionChecker:
    """`Depends(PermissionChecker(Module.PRODUCTS, Action.UPDATE))`: 403 unless the caller's
    roles grant it (or the caller is a superuser). The one place RBAC is enforced."""

    def __init__(self, module: Module, action: Action) -> None:
        self.module = module
        self.action = action

    # The principal from the request, not as a dependency of its own: FastAPI would walk the
    # principal's dependency tree again for every route (cached or not, a measurable share of
    # a read: docs/PERFORMANCE.md).
    async def __call__(self, request: Request) -> Principal:
        principal = await _principal_of(request)
        if not principal.can(self.module, self.action):
            raise ForbiddenError(
                f"This needs the `{self.module}:{self.action}` permission, which none of your "
                "roles grants."
            )
        return principal

    def __repr__(self) -> str:
        return f"PermissionChecker({self.module}, {self.action})"
