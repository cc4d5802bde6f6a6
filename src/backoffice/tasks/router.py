from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from backoffice.auth.dependencies import PermissionChecker
from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.conditional import IfMatchHeader, IfNoneMatchHeader, versioned_response
from backoffice.core.database import ReadConnectionDep, ReadSessionDep, SessionDep
from backoffice.core.errors import (
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    problem_responses,
)
from backoffice.core.pagination import InvalidCursorError, Page
from backoffice.core.schemas import MAX_INT4
from backoffice.core.spreadsheet import (
    CsvResponse,
    csv_download,
    csv_download_responses,
    refuse_methods,
)
from backoffice.tasks import service
from backoffice.tasks.rules import IllegalTransitionError
from backoffice.tasks.schemas import (
    TaskCreate,
    TaskExportQuery,
    TaskFilters,
    TaskListQuery,
    TaskRead,
    TaskUpdate,
)

router = APIRouter(prefix="/tasks", tags=["tasks"])
# A customer's tasks are a view of tasks: this slice serves it, under the customer's path.
customer_tasks_router = APIRouter(prefix="/customers/{customer_id}/tasks", tags=["tasks"])

TaskId = Annotated[int, Path(gt=0, le=MAX_INT4, description="Task id")]
CustomerId = Annotated[int, Path(gt=0, le=MAX_INT4, description="Customer id")]
TasksRead = Annotated[Principal, Depends(PermissionChecker(Module.TASKS, Action.READ))]
TasksCreate = Annotated[Principal, Depends(PermissionChecker(Module.TASKS, Action.CREATE))]
TasksUpdate = Annotated[Principal, Depends(PermissionChecker(Module.TASKS, Action.UPDATE))]
TasksDelete = Annotated[Principal, Depends(PermissionChecker(Module.TASKS, Action.DELETE))]


@router.get("", response_model=Page[TaskRead], responses=problem_responses(InvalidCursorError))
async def list_tasks(
    caller: TasksRead, reader: ReadConnectionDep, query: Annotated[TaskListQuery, Query()]
) -> Response:
    """Tasks with their assignee, customer and product, newest first unless `sort` says
    otherwise, one keyset page at a time. `status` and `priority` may repeat. The assignee,
    customer and product summaries are shown to callers who may read those modules; others
    get null and the id."""
    visible = service.visible_modules(caller)
    page = await service.list_tasks(reader, query, caller.id, visible, query.customer_id)
    return page.to_response()


# Declared before `/{task_id}`, whose path would match "export" too.
@router.get("/export", response_class=CsvResponse, responses=csv_download_responses("The tasks"))
async def export_tasks(
    caller: TasksRead, reader: ReadConnectionDep, query: Annotated[TaskExportQuery, Query()]
) -> CsvResponse:
    """Every task the list shows with these filters and sort, as a CSV file (README,
    "Spreadsheets"): each reference's id, then its summary's columns, empty where the caller
    may not read that module. Text cells a spreadsheet would run as a formula start with `'`."""
    batches = service.export_tasks(reader, query, caller.id, service.visible_modules(caller))
    return await csv_download("tasks", service.EXPORT_COLUMNS, batches)


refuse_methods(
    router, "/export", ("PATCH", "DELETE"), Depends(PermissionChecker(Module.TASKS, Action.READ))
)


@customer_tasks_router.get(
    "",
    response_model=Page[TaskRead],
    responses=problem_responses(NotFoundError, InvalidCursorError),
)
async def list_customer_tasks(
    customer_id: CustomerId,
    caller: TasksRead,
    reader: ReadConnectionDep,
    query: Annotated[TaskFilters, Query()],
) -> Response:
    """The customer's tasks, with the same filters and sorts as `GET /tasks`. A missing
    customer is a 404 for callers who may read customers, an empty page for others."""
    page = await service.list_customer_tasks(
        reader, customer_id, query, caller.id, service.visible_modules(caller)
    )
    return page.to_response()


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskRead,
    responses=problem_responses(InvalidInputError),
)
async def create_task(
    data: TaskCreate, caller: TasksCreate, session: SessionDep, request: Request
) -> Response:
    """Create a task in status `todo`, created by the caller. The assignee (an active user),
    customer and product must exist: a 422 names each one that does not, with the reason
    only if the caller may read that module (else one answer for every reason)."""
    task = await service.create_task(session, data, caller.id, service.visible_modules(caller))
    location = request.app.url_path_for("get_task", task_id=task.id)
    return versioned_response(task, location=location)


@router.get(
    "/{task_id}",
    response_model=TaskRead,
    responses=problem_responses(NotFoundError),
)
async def get_task(
    task_id: TaskId,
    caller: TasksRead,
    session: ReadSessionDep,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    task = await service.get_task(session, task_id, service.visible_modules(caller))
    return versioned_response(task, if_none_match=if_none_match)


@router.patch(
    "/{task_id}",
    response_model=TaskRead,
    responses=problem_responses(
        NotFoundError, IllegalTransitionError, PreconditionFailedError, InvalidInputError
    ),
)
async def update_task(
    task_id: TaskId,
    data: TaskUpdate,
    caller: TasksUpdate,
    session: SessionDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """Change the fields sent. A status change must follow the transition table (else 409,
    naming the allowed ones); `done` sets `completed_at`, reopening clears it. With
    `If-Match`, a stale ETag is a 412 and nothing changes."""
    task = await service.update_task(
        session, task_id, data, if_match, service.visible_modules(caller)
    )
    return versioned_response(task)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(NotFoundError, PreconditionFailedError),
)
async def delete_task(
    task_id: TaskId, _: TasksDelete, session: SessionDep, if_match: IfMatchHeader = None
) -> None:
    await service.delete_task(session, task_id, if_match)
