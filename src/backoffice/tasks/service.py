"""Task use cases. Raise domain errors; never commit (the request owns the transaction).

Every read of tasks, one or a page, is one statement that joins the assignee, customer and
product summaries in: a page costs the same number of queries whatever its size. A summary is
shown only to a caller who may read its module (`visible_modules`); anyone else sees the id.
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import structlog
from sqlalchemy import ColumnElement, and_, inspect, not_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.conditional import check_if_match
from backoffice.core.database import ReadConnection
from backoffice.core.errors import ConflictError, FieldError, InvalidInputError, NotFoundError
from backoffice.core.pagination import KeysetOrder, Page, keyset_orders
from backoffice.core.repository import contains_pattern
from backoffice.core.spreadsheet import EXPORT_BATCH_SIZE
from backoffice.tasks.models import Task, TaskStatus, due_date_or
from backoffice.tasks.repository import REFERENCES, TaskRepository, summary_columns, summary_of
from backoffice.tasks.rules import (
    OPEN_STATUSES,
    TRANSITIONS,
    check_transition,
    completed_at_for,
)
from backoffice.tasks.schemas import (
    TaskCreate,
    TaskExportQuery,
    TaskFilters,
    TaskRead,
    TaskSelection,
    TaskSort,
    TaskUpdate,
)

log = structlog.get_logger(__name__)

_columns = inspect(Task).columns
_task_id = _columns.id

# Undated tasks last in both directions: see `due_date_or`.
SORT_ORDERS: dict[TaskSort, KeysetOrder] = {
    **keyset_orders(TaskSort, Task),
    TaskSort.DUE_DATE: KeysetOrder(
        name=TaskSort.DUE_DATE.value,
        key=due_date_or("infinity", _columns.due_date).label("due_date_key"),
        tiebreaker=_task_id,
    ),
    TaskSort.DUE_DATE_DESC: KeysetOrder(
        name=TaskSort.DUE_DATE_DESC.value,
        key=due_date_or("-infinity", _columns.due_date).label("due_date_key"),
        tiebreaker=_task_id,
        descending=True,
    ),
}


@dataclass(frozen=True, slots=True)
class _Guard:
    """The module that guards a reference's rows, and the one reason a caller who cannot
    read that module is given when the reference is refused."""

    module: Module
    refused: str


_GUARDS: Mapping[str, _Guard] = {
    "assignee_id": _Guard(Module.USERS, "cannot be assigned"),
    "customer_id": _Guard(Module.CUSTOMERS, "cannot be referred to"),
    "product_id": _Guard(Module.PRODUCTS, "cannot be referred to"),
}
REFERENCE_MODULES = frozenset(guard.module for guard in _GUARDS.values())


def visible_modules(principal: Principal) -> frozenset[Module]:
    """The referenced modules whose details the caller may see in a task: those it may read.
    Of any other reference a task shows only the id."""
    return frozenset(module for module in REFERENCE_MODULES if principal.can(module, Action.READ))


def _joined(visible: frozenset[Module]) -> frozenset[str]:
    """The references whose summaries the caller may see. The others are not even joined, so
    their rows never leave the database for this caller."""
    return frozenset(field for field, guard in _GUARDS.items() if guard.module in visible)


# Status -> the statuses a task may move to next, in TRANSITIONS' order.
_ALLOWED: Mapping[TaskStatus, tuple[TaskStatus, ...]] = {
    status: tuple(sorted(targets, key=list(TRANSITIONS).index))
    for status, targets in TRANSITIONS.items()
}
# Reference field -> the TaskRead field of its summary.
_SUMMARY_FIELDS: Mapping[str, str] = {field: field.removesuffix("_id") for field in _GUARDS}


def task_fields(row: Mapping[str, Any], joined: frozenset[str]) -> dict[str, Any]:
    """A task row as the fields of its TaskRead, with the summaries of the `joined`
    references (validated by the caller: one task, or a whole page in one pass)."""
    fields = {**row, "allowed_transitions": _ALLOWED[row["status"]]}
    for field, summary in _SUMMARY_FIELDS.items():
        fields[summary] = summary_of(row, field) if field in joined else None
    return fields


def _filters(
    query: TaskSelection, caller_id: int, today: date, customer_id: int | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    due_date = col(Task.due_date)
    if query.status:
        conditions.append(col(Task.status).in_(query.status))
    if query.priority:
        conditions.append(col(Task.priority).in_(query.priority))
    # `assignee=me` and `assignee_id` together: both must hold.
    assignees = (caller_id if query.assignee == "me" else None, query.assignee_id)
    conditions.extend(col(Task.assignee_id) == user for user in assignees if user is not None)
    if customer_id is not None:
        conditions.append(col(Task.customer_id) == customer_id)
    if query.product_id is not None:
        conditions.append(col(Task.product_id) == query.product_id)
    if query.due_after is not None:
        conditions.append(due_date >= query.due_after)
    if query.due_before is not None:
        conditions.append(due_date <= query.due_before)
    if query.overdue is not None:
        # Spelled out so that an undated task is "not overdue" rather than NULL.
        overdue = and_(col(Task.status).in_(OPEN_STATUSES), due_date.is_not(None), due_date < today)
        conditions.append(overdue if query.overdue else not_(overdue))
    if query.q is not None:
        conditions.append(col(Task.title).ilike(contains_pattern(query.q)))
    return conditions


async def _read(session: AsyncSession, task_id: int, visible: frozenset[Module]) -> TaskRead:
    joined = _joined(visible)
    row = await TaskRepository(session).read(task_id, joined)
    return TaskRead.model_validate(task_fields(dict(row), joined))


def _reference_error(
    field: str, entity_id: int, usable: bool | None, visible: frozenset[Module]
) -> FieldError:
    """Why a reference is refused. A caller who may read the module learns the precise reason;
    any other caller gets one answer for every reason, so that it cannot probe which ids exist
    or which users are active."""
    entity, guard = REFERENCES[field].entity, _GUARDS[field]
    if guard.module not in visible:
        message, kind = f"{entity} {entity_id} {guard.refused}.", "invalid_reference"
    elif usable is None:
        message, kind = f"{entity} {entity_id} does not exist.", "reference_not_found"
    else:
        message, kind = f"{entity} {entity_id} is inactive and cannot be assigned.", "inactive"
    return FieldError(field=f"body.{field}", message=message, type=kind)


async def _check_references(
    session: AsyncSession, changes: Mapping[str, Any], visible: frozenset[Module]
) -> None:
    """Every reference being set must exist (and an assignee be active): one query for all,
    and one 422 naming each offending field."""
    wanted = {field: changes[field] for field in _GUARDS if changes.get(field) is not None}
    if not wanted:
        return
    found = await TaskRepository(session).reference_states(wanted)
    errors = [
        _reference_error(field, entity_id, found[field], visible)
        for field, entity_id in wanted.items()
        if not found[field]
    ]
    if errors:
        raise InvalidInputError(
            " ".join(f"{error.field.removeprefix('body.')}: {error.message}" for error in errors),
            errors=errors,
        )


async def get_task(session: AsyncSession, task_id: int, visible: frozenset[Module]) -> TaskRead:
    return await _read(session, task_id, visible)


async def list_tasks(
    reader: ReadConnection,
    query: TaskFilters,
    caller_id: int,
    visible: frozenset[Module],
    customer_id: int | None,
) -> Page[TaskRead]:
    today = datetime.now(UTC).date()
    joined = _joined(visible)
    rows, cursor = await TaskRepository.read_tasks_page(
        reader,
        joined,
        _filters(query, caller_id, today, customer_id),
        SORT_ORDERS[query.sort],
        cursor=query.cursor,
        limit=query.limit,
    )
    items = [task_fields(dict(row), joined) for row in rows]
    return Page[TaskRead].model_validate({"items": items, "next_cursor": cursor})


# The export's columns: the JSON API's task fields, each reference's id followed by its
# summary's columns (empty where the caller may not read the module); `allowed_transitions`,
# which the status decides, left out.
EXPORT_COLUMNS = tuple(
    column
    for field in TaskRead.model_fields
    if field not in {"allowed_transitions", *_SUMMARY_FIELDS.values()}
    for column in (field, *(summary_columns(field) if field in _SUMMARY_FIELDS else ()))
)


def export_tasks(
    reader: ReadConnection, query: TaskExportQuery, caller_id: int, visible: frozenset[Module]
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every task the list would show with these filters and sort, a batch at a time."""
    conditions = _filters(query, caller_id, datetime.now(UTC).date(), query.customer_id)
    return TaskRepository.read_tasks_batches(
        reader, _joined(visible), conditions, SORT_ORDERS[query.sort], EXPORT_BATCH_SIZE
    )


async def list_customer_tasks(
    reader: ReadConnection,
    customer_id: int,
    query: TaskFilters,
    caller_id: int,
    visible: frozenset[Module],
) -> Page[TaskRead]:
    # Only a caller who may read customers learns that one does not exist; to anyone else a
    # missing customer has no tasks, as `GET /tasks?customer_id=` already answers.
    if Module.CUSTOMERS in visible and not await TaskRepository.customer_exists(
        reader, customer_id
    ):
        raise NotFoundError(f"{REFERENCES['customer_id'].entity} {customer_id} does not exist.")
    return await list_tasks(reader, query, caller_id, visible, customer_id)


async def create_task(
    session: AsyncSession, data: TaskCreate, creator_id: int, visible: frozenset[Module]
) -> TaskRead:
    fields = data.model_dump()
    await _check_references(session, fields, visible)
    task = await TaskRepository(session).create(Task(**fields, created_by=creator_id))
    assert task.id is not None  # noqa: S101  # flushed, so the identity column is set
    log.info("task.created", task_id=task.id)
    return await _read(session, task.id, visible)


async def update_task(
    session: AsyncSession,
    task_id: int,
    data: TaskUpdate,
    if_match: str | None,
    visible: frozenset[Module],
) -> TaskRead:
    repository = TaskRepository(session)
    task = await repository.get(task_id)
    check_if_match(if_match, task.version)
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return await _read(session, task_id, visible)
    target = changes.get("status")
    if target is not None and target != task.status:
        check_transition(task.status, target)
        changes["completed_at"] = completed_at_for(target, task.completed_at, datetime.now(UTC))
    await _check_references(session, changes, visible)
    await repository.update(task, changes)
    log.info("task.updated", task_id=task_id, fields=sorted(changes))
    return await _read(session, task_id, visible)


async def delete_task(session: AsyncSession, task_id: int, if_match: str | None) -> None:
    repository = TaskRepository(session)
    task = await repository.get(task_id)
    check_if_match(if_match, task.version)
    await repository.delete(task)
    log.info("task.deleted", task_id=task_id)


async def detach_customer(session: AsyncSession, customer_id: int) -> int:
    """Before a customer is deleted: refused while it has open tasks; its closed tasks stay,
    unlinked from it (their `customer_id` becomes null, their version is bumped). The number
    of tasks unlinked."""
    tasks = TaskRepository(session)
    open_tasks = await tasks.count_open_for_customer(customer_id)
    if open_tasks:
        raise ConflictError(
            f"Customer {customer_id} has {open_tasks} open task(s) (todo, in_progress or "
            "blocked); finish, cancel or move them to another customer first."
        )
    unlinked = await tasks.unlink_customer(customer_id)
    log.info("tasks.unlinked_from_customer", customer_id=customer_id, tasks=unlinked)
    return unlinked
