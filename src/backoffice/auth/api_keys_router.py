"""`/service-accounts` and `/api-keys`, under the `users` module: a service account is a user,
and its keys are its credentials (docs/RBAC_GUIDE.md says why no module of their own)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from backoffice.auth import api_keys_service
from backoffice.auth.api_keys_schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyListQuery,
    ApiKeyRead,
    ServiceAccountCreate,
)
from backoffice.auth.dependencies import PermissionChecker
from backoffice.auth.permissions import Action, Module
from backoffice.auth.schemas import UserRead
from backoffice.auth.service import Principal
from backoffice.core.conditional import IfMatchHeader, IfNoneMatchHeader, versioned_response
from backoffice.core.database import ReadSessionDep, SessionDep
from backoffice.core.errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    problem_responses,
)
from backoffice.core.pagination import InvalidCursorError, Page
from backoffice.core.schemas import MAX_INT4

service_accounts_router = APIRouter(prefix="/service-accounts", tags=["api keys"])
router = APIRouter(prefix="/api-keys", tags=["api keys"])

ApiKeyId = Annotated[int, Path(gt=0, le=MAX_INT4, description="API key id")]
UsersRead = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.READ))]
UsersCreate = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.CREATE))]
UsersUpdate = Annotated[Principal, Depends(PermissionChecker(Module.USERS, Action.UPDATE))]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@service_accounts_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problem_responses(ForbiddenError),
)
async def create_service_account(
    data: ServiceAccountCreate, _: UsersCreate, session: SessionDep, request: Request
) -> Response:
    """A user that is not a person: it has no password and never logs in; it acts through
    the API keys created for it (`POST /api-keys`). It is then managed as any user is
    (`/users/{id}`: deactivate it to stop all its keys at once, or delete it);
    `GET /users?is_service_account=true` lists them."""
    user = await api_keys_service.create_service_account(session, data)
    location = request.app.url_path_for("get_user", user_id=user.id)
    return versioned_response(user, location=location)


@router.get(
    "",
    response_model=Page[ApiKeyRead],
    responses=problem_responses(ForbiddenError, InvalidCursorError),
)
async def list_api_keys(
    _: UsersRead, session: ReadSessionDep, query: Annotated[ApiKeyListQuery, Query()]
) -> Response:
    return (await api_keys_service.list_api_keys(session, query)).to_response()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=problem_responses(ForbiddenError, InvalidInputError),
)
async def create_api_key(
    data: ApiKeyCreate, actor: UsersUpdate, session: SessionDep, request: Request
) -> Response:
    """A key for a service account, with the permissions given, each of which you must hold
    yourself. The answer is the only place the key (`api_key`) ever appears: store it in
    your secret store at once."""
    key = await api_keys_service.create_api_key(session, actor, data)
    location = request.app.url_path_for("get_api_key", key_id=key.id)
    response = versioned_response(key, location=location)
    response.headers.update(_NO_STORE)
    return response


@router.get(
    "/{key_id}",
    response_model=ApiKeyRead,
    responses=problem_responses(ForbiddenError, NotFoundError),
)
async def get_api_key(
    key_id: ApiKeyId, _: UsersRead, session: ReadSessionDep, if_none_match: IfNoneMatchHeader = None
) -> Response:
    key = await api_keys_service.get_api_key(session, key_id)
    return versioned_response(key, if_none_match=if_none_match)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(ForbiddenError, NotFoundError, PreconditionFailedError),
)
async def revoke_api_key(
    key_id: ApiKeyId, actor: UsersUpdate, session: SessionDep, if_match: IfMatchHeader = None
) -> None:
    """Revoke the key: refused from the next request on, on every worker. The key stays
    listed, with `revoked_at`, so the audit trail's mentions of it keep their meaning.
    Idempotent. You must hold every permission the key has."""
    await api_keys_service.revoke_api_key(session, actor, key_id, if_match)
