"""The dependencies routes declare: who is calling, and may they do this."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from backoffice.auth import service
from backoffice.auth.errors import MissingAccessTokenError
from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.config import Settings
from backoffice.core.database import database_of
from backoffice.core.errors import ForbiddenError

LOGIN_PATH = "/api/v1/auth/sessions"

# The OAuth2 password flow is what makes Swagger UI's "Authorize" button log in for real.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=LOGIN_PATH, auto_error=False)


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, which costs more than the work itself on the hot path.
async def get_settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_of)]


async def get_current_principal(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    if not token:
        raise MissingAccessTokenError
    # A session of its own, closed at once: holding its connection for the whole request
    # would make every write request need two, and a burst of them could exhaust the pool.
    async with database_of(request).read_sessions() as session:
        principal = await service.authenticate(session, settings, token)
    request.state.user_id = principal.id  # for the access log
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


class PermissionChecker:
    """`Depends(PermissionChecker(Module.PRODUCTS, Action.UPDATE))`: 403 unless the caller's
    roles grant it (or the caller is a superuser). The one place RBAC is enforced."""

    def __init__(self, module: Module, action: Action) -> None:
        self.module = module
        self.action = action

    async def __call__(self, principal: CurrentPrincipal) -> Principal:
        if not principal.can(self.module, self.action):
            raise ForbiddenError(
                f"This needs the `{self.module}:{self.action}` permission, which none of your "
                "roles grants."
            )
        return principal

    def __repr__(self) -> str:
        return f"PermissionChecker({self.module}, {self.action})"
