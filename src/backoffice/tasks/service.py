"""Task use cases. Raise domain errors; never commit (the request owns the transaction).

Every read of tasks, one or a page, is one statement that joins the assignee, customer and
product summaries in: a page costs the same number of queries whatever its size.
"""

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Label, RowMapping, Select, and_, inspect, not_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.auth.models import User
from backoffice.core.conditional import check_if_match
from backoffice.core.errors import FieldError, InvalidInputError
from backoffice.core.pagination import KeysetOrder, Page, keyset_orders
from backoffice.core.repository import contains_pattern
from backoffice.customers.models import Customer
from backoffice.customers.repository import CustomerRepository
from backoffice.products.models import Product
from backoffice.tasks.models import Task, due_date_or
from backoffice.tasks.repository import TaskRepository
from backoffice.tasks.rules import (
    OPEN_STATUSES,
    TRANSITIONS,
    check_transition,
    completed_at_for,
)
from backoffice.tasks.schemas import (
    CustomerSummary,
    CustomerTaskListQuery,
    ProductSummary,
    TaskCreate,
    TaskListQuery,
    TaskRead,
    TaskSort,
    TaskUpdate,
    UserSummary,
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

_READ: Select[Any] = (
    select(
        *_columns,
        col(User.email).label("assignee_email"),
        col(User.full_name).label("assignee_full_name"),
        col(Customer.name).label("customer_name"),
        col(Customer.company).label("customer_company"),
        col(Product.sku).label("product_sku"),
        col(Product.name).label("product_name"),
    )
    .outerjoin(User, col(User.id) == col(Task.assignee_id))
    .outerjoin(Customer, col(Customer.id) == col(Task.customer_id))
    .outerjoin(Product, col(Product.id) == col(Task.product_id))
)

# Each reference a task can hold: the entity's name and a probe that is NULL when the row does
# not exist and otherwise whether it may be referred to (only an active user can be assigned).
_REFERENCES: Mapping[str, tuple[str, Callable[[int], Select[Any]]]] = {
    "assignee_id": (
        "User",
        lambda user_id: select(col(User.is_active)).where(col(User.id) == user_id),
    ),
    "customer_id": ("Customer", lambda id_: select(true()).where(col(Customer.id) == id_)),
    "product_id": ("Product", lambda id_: select(true()).where(col(Product.id) == id_)),
}


def _summary[S: UserSummary | CustomerSummary | ProductSummary](
    summary: type[S], entity_id: int | None, **fields: Any
) -> S | None:
    return None if entity_id is None else summary(id=entity_id, **fields)


def task_read(row: RowMapping) -> TaskRead:
    return TaskRead(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        status=row["status"],
        allowed_transitions=sorted(TRANSITIONS[row["status"]], key=list(TRANSITIONS).index),
        priority=row["priority"],
        due_date=row["due_date"],
        assignee_id=row["assignee_id"],
        assignee=_summary(
            UserSummary,
            row["assignee_id"],
            email=row["assignee_email"],
            full_name=row["assignee_full_name"],
        ),
        customer_id=row["customer_id"],
        customer=_summary(
            CustomerSummary,
            row["customer_id"],
            name=row["customer_name"],
            company=row["customer_company"],
        ),
        product_id=row["product_id"],
        product=_summary(
            ProductSummary, row["product_id"], sku=row["product_sku"], name=row["product_name"]
        ),
        created_by=row["created_by"],
        completed_at=row["completed_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _filters(
    query: CustomerTaskListQuery, caller_id: int, today: date, customer_id: int | None
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


async def _read(session: AsyncSession, task_id: int) -> TaskRead:
    result = await session.execute(_READ.where(_task_id == task_id))
    row = result.mappings().one_or_none()
    if row is None:
        raise TaskRepository(session).not_found(task_id)
    return task_read(row)


async def _check_references(session: AsyncSession, changes: Mapping[str, Any]) -> None:
    """Every reference being set must exist (and an assignee be active): one query for all,
    and one 422 naming each offending field."""
    wanted = {field: changes[field] for field in _REFERENCES if changes.get(field) is not None}
    if not wanted:
        return
    probes = [
        _REFERENCES[field][1](entity_id).scalar_subquery().label(field)
        for field, entity_id in wanted.items()
    ]
    found = (await session.execute(select(*probes))).mappings().one()
    errors: list[FieldError] = []
    for field, entity_id in wanted.items():
        entity = _REFERENCES[field][0]
        if found[field] is None:
            message, kind = f"{entity} {entity_id} does not exist.", "reference_not_found"
        elif found[field] is False:
            message, kind = f"{entity} {entity_id} is inactive and cannot be assigned.", "inactive"
        else:
            continue
        errors.append(FieldError(field=f"body.{field}", message=message, type=kind))
    if errors:
        raise InvalidInputError(
            " ".join(f"{error.field.removeprefix('body.')}: {error.message}" for error in errors),
            errors=errors,
        )


async def get_task(session: AsyncSession, task_id: int) -> TaskRead:
    return await _read(session, task_id)


async def list_tasks(
    session: AsyncSession,
    query: CustomerTaskListQuery,
    caller_id: int,
    customer_id: int | None = None,
) -> Page[TaskRead]:
    if isinstance(query, TaskListQuery) and query.customer_id is not None:
        customer_id = query.customer_id
    order = SORT_ORDERS[query.sort]
    today = datetime.now(UTC).date()
    statement = _READ.where(*_filters(query, caller_id, today, customer_id))
    if isinstance(order.key, Label):  # a computed sort key must be selected to be read back
        statement = statement.add_columns(order.key)
    rows, cursor = await TaskRepository(session).paginate(
        statement, order, query.cursor, query.limit
    )
    return Page[TaskRead](items=[task_read(row) for row in rows], next_cursor=cursor)


async def list_customer_tasks(
    session: AsyncSession, customer_id: int, query: CustomerTaskListQuery, caller_id: int
) -> Page[TaskRead]:
    await CustomerRepository(session).get_existing_row(customer_id)
    return await list_tasks(session, query, caller_id, customer_id)


async def create_task(session: AsyncSession, data: TaskCreate, creator_id: int) -> TaskRead:
    fields = data.model_dump()
    await _check_references(session, fields)
    task = await TaskRepository(session).create(Task(**fields, created_by=creator_id))
    assert task.id is not None  # noqa: S101  # flushed, so the identity column is set
    log.info("task.created", task_id=task.id)
    return await _read(session, task.id)


async def update_task(
    session: AsyncSession, task_id: int, data: TaskUpdate, if_match: str | None
) -> TaskRead:
    repository = TaskRepository(session)
    task = await repository.get_existing(task_id)
    check_if_match(if_match, task.version)
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return await _read(session, task_id)
    target = changes.get("status")
    if target is not None and target != task.status:
        check_transition(task.status, target)
        changes["completed_at"] = completed_at_for(target, task.completed_at, datetime.now(UTC))
    await _check_references(session, changes)
    await repository.update(task, changes)
    log.info("task.updated", task_id=task_id, fields=sorted(changes))
    return await _read(session, task_id)


async def delete_task(session: AsyncSession, task_id: int, if_match: str | None) -> None:
    repository = TaskRepository(session)
    task = await repository.get_existing(task_id)
    check_if_match(if_match, task.version)
    await repository.delete(task)
    log.info("task.deleted", task_id=task_id)
