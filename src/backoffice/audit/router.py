from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from backoffice.audit import service
from backoffice.audit.schemas import (
    AccessLogListQuery,
    AccessLogRead,
    DataChangeListQuery,
    DataChangeRead,
)
from backoffice.auth.dependencies import PermissionChecker
from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.database import ReadSessionDep
from backoffice.core.errors import problem_responses
from backoffice.core.pagination import InvalidCursorError, Page

router = APIRouter(prefix="/audit", tags=["audit"])

AuditRead = Annotated[Principal, Depends(PermissionChecker(Module.AUDIT, Action.READ))]


@router.get(
    "/access-logs",
    response_model=Page[AccessLogRead],
    responses=problem_responses(InvalidCursorError),
)
async def list_access_logs(
    _: AuditRead, session: ReadSessionDep, query: Annotated[AccessLogListQuery, Query()]
) -> Response:
    """Every API call: who (`user_id`, null when anonymous), from where, what (`method`,
    `path`), the outcome (`status`) and how long it took. Newest first unless `sort=id`;
    filters combine with AND. `since` is inclusive, `until` exclusive; both need a time zone.

    A request's data changes carry the same `request_id`: see `/audit/data-changes`."""
    page = await service.list_access_logs(session, query)
    return page.to_response()


@router.get(
    "/data-changes",
    response_model=Page[DataChangeRead],
    responses=problem_responses(InvalidCursorError),
)
async def list_data_changes(
    _: AuditRead, session: ReadSessionDep, query: Annotated[DataChangeListQuery, Query()]
) -> Response:
    """Every insert, update and delete of an audited object, recorded in the transaction that
    made it: the values before and after (an update shows only the fields it changed; secrets
    read `***`), who made it and in which request. Newest first unless `sort=id`; filters
    combine with AND. `since` is inclusive, `until` exclusive; both need a time zone.

    An object's full history, oldest first:
    `GET /api/v1/audit/data-changes?entity_type=product&entity_id=42&sort=id`
    (`entity_id` is the primary key as text; a composite key's parts are joined with `/`,
    e.g. `entity_type=user_role&entity_id=7/2`)."""
    page = await service.list_data_changes(session, query)
    return page.to_response()
