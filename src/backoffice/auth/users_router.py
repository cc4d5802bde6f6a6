"""`/users/me` for everyone signed in; `/users` administration under the `users` module."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status

from backoffice.auth import admin_service, service
from backoffice.auth.dependencies import (
    CurrentPrincipal,
    PasswordGuardDep,
    PermissionChecker,
)
from backoffice.auth.errors import AuthenticationError, LastSuperuserError, RateLimitedError
from backoffice.auth.permissions import Action, Module
from backoffice.auth.router import PasswordChangeRateLimit
from backoffice.auth.schemas import (
    MeUpdate,
    PasswordChange,
    PermissionsRead,
    RoleRead,
    TokenPair,
    UserCreate,
    UserListQuery,
    UserRead,
    UserRolesUpdate,
    UserUpdate,
)
from backoffice.auth.service import Principal
from backoffice.core.conditional import IfMatchHeader, IfNoneMatchHeader, versioned_response
from backoffice.core.database import ReadSessionDep, SessionDep
from backoffice.core.errors import (
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    problem_responses,
)
from backoffice.core.pagination import InvalidCursorError, Page
from backoffice.core.schemas import MAX_INT4

router = APIRouter(prefix="/users", tags=["users"])

UserId = Annotated[int, Path(gt=0, le=MAX_INT4, description="User id")]
UsersRead = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.READ))]
UsersCreate = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.CREATE))]
UsersUpdate = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.UPDATE))]
UsersDelete = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.DELETE))]

# --- the caller's own account ----------------------------------------------------------------


@router.get("/me", response_model=UserRead, responses=problem_responses(AuthenticationError))
async def read_me(principal: CurrentPrincipal, session: ReadSessionDep) -> Response:
    return versioned_response(await admin_service.get_user(session, principal.id))


@router.patch("/me", response_model=UserRead, responses=problem_responses(AuthenticationError))
async def update_me(data: MeUpdate, principal: CurrentPrincipal, session: SessionDep) -> Response:
    """Change your name (only that: privileges are an administrator's business)."""
    return versioned_response(await admin_service.update_me(session, principal, data.full_name))


@router.delete("/me", include_in_schema=False)
async def delete_me() -> None:
    """`/users/me` is not an instance of `/users/{user_id}`: without this, DELETE would reach
    that route and fail as an invalid id instead of the 405 a client should get."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED)


@router.put(
    "/me/password",
    responses=problem_responses(AuthenticationError, ForbiddenError, RateLimitedError),
)
async def change_password(
    data: PasswordChange,
    principal: CurrentPrincipal,
    rate_limit: PasswordChangeRateLimit,
    session: SessionDep,
    guard: PasswordGuardDep,
    *,
    response: Response,
) -> TokenPair:
    """Needs the current password. Ends every session of the account, this one included, and
    returns a new token pair for this client. Rate limited per client IP and per user; wrong
    current passwords count towards the account's lockout, like failed logins."""
    limit_headers = rate_limit.headers if rate_limit else {}
    response.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache", **limit_headers})
    try:
        return await service.change_password(
            session,
            guard,
            principal,
            current_password=data.current_password,
            new_password=data.new_password,
        )
    except DomainError as exc:
        exc.headers = {**exc.headers, **limit_headers}
        raise


# --- administration ---------------------------------------------------------------------------


@router.get(
    "",
    response_model=Page[UserRead],
    responses=problem_responses(ForbiddenError, InvalidCursorError),
)
async def list_users(
    _: UsersRead, session: ReadSessionDep, query: Annotated[UserListQuery, Query()]
) -> Response:
    return (await admin_service.list_users(session, query)).to_response()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problem_responses(ForbiddenError, ConflictError),
)
async def create_user(
    data: UserCreate, _: UsersCreate, session: SessionDep, request: Request
) -> Response:
    user = await admin_service.create_user(session, data)
    location = request.app.url_path_for("get_user", user_id=user.id)
    return versioned_response(user, location=location)


@router.get(
    "/{user_id}",
    response_model=UserRead,
    responses=problem_responses(ForbiddenError, NotFoundError),
)
async def get_user(
    user_id: UserId, _: UsersRead, session: ReadSessionDep, if_none_match: IfNoneMatchHeader = None
) -> Response:
    user = await admin_service.get_user(session, user_id)
    return versioned_response(user, if_none_match=if_none_match)


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    responses=problem_responses(
        ForbiddenError, NotFoundError, ConflictError, LastSuperuserError, PreconditionFailedError
    ),
)
async def update_user(
    user_id: UserId,
    data: UserUpdate,
    actor: UsersUpdate,
    session: SessionDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """Deactivating a user ends all their sessions. Only a superuser can touch `is_superuser`
    or a superuser's account; nobody can change their own status. The last active superuser
    cannot be demoted or deactivated (409 `last-superuser`)."""
    user = await admin_service.update_user(session, actor, user_id, data, if_match)
    return versioned_response(user)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    # 409: the last active superuser, or a user that tasks still refer to (deactivate instead).
    responses=problem_responses(
        ForbiddenError, NotFoundError, LastSuperuserError, PreconditionFailedError
    ),
)
async def delete_user(
    user_id: UserId, actor: UsersDelete, session: SessionDep, if_match: IfMatchHeader = None
) -> None:
    """The last active superuser cannot be deleted (409 `last-superuser`)."""
    await admin_service.delete_user(session, actor, user_id, if_match)


@router.delete(
    "/{user_id}/lock",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(ForbiddenError, NotFoundError, PreconditionFailedError),
)
async def unlock_user(
    user_id: UserId, actor: UsersUpdate, session: SessionDep, if_match: IfMatchHeader = None
) -> None:
    """Unlock an account that failed logins locked (`locked_until` on the user): its failure
    count starts again from zero. Idempotent. Only a superuser can unlock a superuser."""
    await admin_service.unlock_user(session, actor, user_id, if_match)


@router.put(
    "/{user_id}/roles",
    responses=problem_responses(ForbiddenError, NotFoundError, InvalidInputError),
)
async def set_user_roles(
    user_id: UserId, data: UserRolesUpdate, actor: UsersUpdate, session: SessionDep
) -> list[RoleRead]:
    """Replace the user's roles. You can only add or remove roles whose permissions you hold,
    and never change your own."""
    return await admin_service.set_user_roles(session, actor, user_id, data.role_ids)


@router.get("/{user_id}/permissions", responses=problem_responses(ForbiddenError, NotFoundError))
async def get_user_permissions(
    user_id: UserId, _: UsersRead, session: ReadSessionDep
) -> PermissionsRead:
    """The effective permissions: the union over the user's roles, `read` implied by any
    grant of a module, everything for a superuser."""
    return await admin_service.user_permissions(session, user_id)
