"""Sessions and tokens: `/auth/sessions` (login, logout) and `/auth/tokens` (refresh)."""

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from backoffice.auth import service
from backoffice.auth.dependencies import (
    ClientKey,
    CurrentPrincipal,
    PasswordGuardDep,
    enforce_rate_limit,
)
from backoffice.auth.errors import AuthenticationError, RateLimitedError
from backoffice.auth.rate_limit import RateLimiter, RateLimitState
from backoffice.auth.schemas import RefreshRequest, TokenPair
from backoffice.core.config import Settings, SettingsDep
from backoffice.core.database import SessionDep
from backoffice.core.errors import problem_responses

router = APIRouter(prefix="/auth", tags=["auth"])
log = structlog.get_logger(__name__)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 section 5.1


def install_rate_limiters(app: FastAPI, settings: Settings) -> None:
    """Make the login and password-change limiters once, at start-up (create_app), and keep
    them on `app.state` for the app's life: their counts (in memory, or their Redis client
    with RATE_LIMIT_STORAGE_URL) are the app's, shared by all its requests."""
    app.state.login_limiter = RateLimiter.for_login(settings)
    app.state.password_change_limiter = RateLimiter.for_password_change(settings)


async def _login_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.login_limiter
    return limiter


async def rate_limit_login(
    client: ClientKey, limiter: Annotated[RateLimiter, Depends(_login_limiter)]
) -> RateLimitState | None:
    """Count this attempt per client (behind TRUSTED_PROXIES, the forwarded address; an IPv6
    client by its /64); 429 past the limit."""
    return await enforce_rate_limit(limiter, [client], "login attempts")


async def _password_change_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.password_change_limiter
    return limiter


async def rate_limit_password_change(
    principal: CurrentPrincipal,
    client: ClientKey,
    limiter: Annotated[RateLimiter, Depends(_password_change_limiter)],
) -> RateLimitState | None:
    """`PUT /users/me/password` checks a password with argon2 like a login: counted per
    client and per user (many clients sharing one stolen token still share one budget)."""
    return await enforce_rate_limit(limiter, [client, f"user:{principal.id}"], "password changes")


PasswordChangeRateLimit = Annotated[RateLimitState | None, Depends(rate_limit_password_change)]


@router.post("/sessions", responses=problem_responses(AuthenticationError, RateLimitedError))
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    rate_limit: Annotated[RateLimitState | None, Depends(rate_limit_login)],
    session: SessionDep,
    guard: PasswordGuardDep,
    response: Response,
) -> TokenPair:
    """Log in with the OAuth2 password form (`username` is the email). Returns an access
    token (Bearer) and a refresh token for `POST /auth/tokens`."""
    limit_headers = rate_limit.headers if rate_limit else {}
    response.headers.update({**_NO_STORE, **limit_headers})
    try:
        return await service.login(session, guard, form.username, form.password)
    except AuthenticationError as exc:
        exc.headers = {**exc.headers, **limit_headers}
        raise


@router.post("/tokens", responses=problem_responses(AuthenticationError))
async def refresh_tokens(
    data: RefreshRequest, session: SessionDep, settings: SettingsDep, response: Response
) -> TokenPair:
    """Trade a refresh token for a new pair. The old refresh token is spent: presenting it
    again revokes every token of its session."""
    response.headers.update(_NO_STORE)
    return await service.refresh(session, settings, data.refresh_token)


@router.delete(
    "/sessions/current",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(AuthenticationError),
)
async def logout(principal: CurrentPrincipal, session: SessionDep) -> None:
    """End this session: the access token and every refresh token of its login die now."""
    await service.logout(session, principal)
