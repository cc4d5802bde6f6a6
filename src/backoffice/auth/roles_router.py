"""`/roles`: roles and their module grants, under the `roles` module."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from backoffice.auth import admin_service
from backoffice.auth.dependencies import PermissionChecker
from backoffice.auth.permissions import Action, Module
from backoffice.auth.schemas import RoleCreate, RoleListQuery, RoleRead, RoleUpdate
from backoffice.auth.service import Principal
from backoffice.core.conditional import IfMatchHeader, IfNoneMatchHeader, versioned_response
from backoffice.core.database import ReadSessionDep, SessionDep
from backoffice.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    problem_responses,
)
from backoffice.core.pagination import InvalidCursorError, Page
from backoffice.core.schemas import MAX_INT4

router = APIRouter(prefix="/roles", tags=["roles"])

RoleId = Annotated[int, Path(gt=0, le=MAX_INT4, description="Role id")]
RolesRead = Annotated[Principal, Depends(PermissionChecker(Module.ROLES, Action.READ))]
RolesCreate = Annotated[Principal, Depends(PermissionChecker(Module.ROLES, Action.CREATE))]
RolesUpdate = Annotated[Principal, Depends(PermissionChecker(Module.ROLES, Action.UPDATE))]
RolesDelete = Annotated[Principal, Depends(PermissionChecker(Module.ROLES, Action.DELETE))]


@router.get(
    "",
    response_model=Page[RoleRead],
    responses=problem_responses(ForbiddenError, InvalidCursorError),
)
async def list_roles(
    _: RolesRead, session: ReadSessionDep, query: Annotated[RoleListQuery, Query()]
) -> Response:
    return (await admin_service.list_roles(session, query)).to_response()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RoleRead,
    responses=problem_responses(ForbiddenError, ConflictError),
)
async def create_role(
    data: RoleCreate, actor: RolesCreate, session: SessionDep, request: Request
) -> Response:
    """Create a role with its grants; you can only grant permissions you hold."""
    role = await admin_service.create_role(session, actor, data)
    location = request.app.url_path_for("get_role", role_id=role.id)
    return versioned_response(role, location=location)


@router.get(
    "/{role_id}",
    response_model=RoleRead,
    responses=problem_responses(ForbiddenError, NotFoundError),
)
async def get_role(
    role_id: RoleId, _: RolesRead, session: ReadSessionDep, if_none_match: IfNoneMatchHeader = None
) -> Response:
    role = await admin_service.get_role(session, role_id)
    return versioned_response(role, if_none_match=if_none_match)


@router.patch(
    "/{role_id}",
    response_model=RoleRead,
    responses=problem_responses(
        ForbiddenError, NotFoundError, ConflictError, PreconditionFailedError
    ),
)
async def update_role(
    role_id: RoleId,
    data: RoleUpdate,
    actor: RolesUpdate,
    session: SessionDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """`grants`, when sent, replaces all of the role's grants."""
    role = await admin_service.update_role(session, actor, role_id, data, if_match)
    return versioned_response(role)


@router.delete(
    "/{role_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(ForbiddenError, NotFoundError, PreconditionFailedError),
)
async def delete_role(
    role_id: RoleId, actor: RolesDelete, session: SessionDep, if_match: IfMatchHeader = None
) -> None:
    await admin_service.delete_role(session, actor, role_id, if_match)
