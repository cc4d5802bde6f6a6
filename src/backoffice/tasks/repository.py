"""Task queries: the joined read of one task or a page, the reference probes, and the bulk
changes a customer's deletion needs.

A task refers to a user, a customer and a product. Their tables are read here, joined to the
task, never through those slices' repositories: the references are part of a task's row.
"""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import asyncpg
from sqlalchemy import (
    Column,
    ColumnElement,
    Label,
    RowMapping,
    Select,
    func,
    inspect,
    literal,
    select,
    true,
    update,
)
from sqlmodel import SQLModel, col

from backoffice.auth.models import User
from backoffice.core.database import ReadConnection
from backoffice.core.errors import DomainError, FieldError, InvalidInputError
from backoffice.core.pagination import KeysetOrder
from backoffice.core.repository import BaseRepository
from backoffice.customers.models import Customer
from backoffice.products.models import Product
from backoffice.tasks.models import Task
from backoffice.tasks.rules import OPEN_STATUSES

_columns = inspect(Task).columns


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference a task can hold: the referenced table, the columns of its summary, and
    which of its rows may be referred to (only an active user can be assigned)."""

    model: type[SQLModel]
    summary: tuple[str, ...]
    usable: ColumnElement[bool]

    @property
    def entity(self) -> str:
        return self.model.__name__

    def column(self, name: str) -> Column[Any]:
        column: Column[Any] = inspect(self.model).columns[name]
        return column


# Task field -> what it refers to.
REFERENCES: Mapping[str, Reference] = {
    "assignee_id": Reference(User, ("email", "full_name"), col(User.is_active).is_(True)),
    "customer_id": Reference(Customer, ("name", "company"), true()),
    "product_id": Reference(Product, ("sku", "name"), true()),
}


def _label(field: str, name: str) -> str:
    return f"{field.removesuffix('_id')}_{name}"


@cache
def _read_statement(joined: frozenset[str]) -> Select[Any]:
    """Tasks with the summaries of the `joined` reference fields: one statement whatever the
    page size. A reference not joined is not read at all."""
    statement = select(*_columns)
    for field, reference in REFERENCES.items():
        if field in joined:
            labelled = (
                reference.column(name).label(_label(field, name)) for name in reference.summary
            )
            statement = statement.add_columns(*labelled).outerjoin(
                reference.model, reference.column("id") == _columns[field]
            )
    return statement


def _keyed_statement(
    joined: frozenset[str], conditions: list[ColumnElement[bool]], order: KeysetOrder
) -> Select[Any]:
    statement = _read_statement(joined).where(*conditions)
    if isinstance(order.key, Label):  # a computed sort key must be selected to be read back
        statement = statement.add_columns(order.key)
    return statement


# Reference field -> (summary field, its column's label in a joined read): computed once, as
# a page reads them for every row.
_SUMMARY_LABELS: Mapping[str, tuple[tuple[str, str], ...]] = {
    field: tuple((name, _label(field, name)) for name in reference.summary)
    for field, reference in REFERENCES.items()
}


def summary_columns(field: str) -> tuple[str, ...]:
    """The labels of the reference `field`'s summary columns in a joined read
    (`assignee_email`, ...)."""
    return tuple(label for _, label in _SUMMARY_LABELS[field])


def summary_of(row: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    """The summary of the reference `field` in a row of a read joined with it."""
    if row[field] is None:
        return None
    return {"id": row[field]} | {name: row[label] for name, label in _SUMMARY_LABELS[field]}


def _gone(field: str, entity: str) -> InvalidInputError:
    # The service checks references first; this covers one deleted between check and write.
    message = f"The {entity} does not exist (any more)."
    return InvalidInputError(
        f"{field}: {message}",
        errors=[FieldError(field=f"body.{field}", message=message, type="reference_not_found")],
    )


class TaskRepository(BaseRepository[Task]):
    model = Task
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {
        "fk_tasks_assignee_id_users": _gone("assignee_id", "user"),
        "fk_tasks_customer_id_customers": _gone("customer_id", "customer"),
        "fk_tasks_product_id_products": _gone("product_id", "product"),
    }

    async def read(self, task_id: int, joined: frozenset[str]) -> RowMapping:
        """The task with the summaries of the `joined` references, or a 404 problem."""
        result = await self.session.execute(_read_statement(joined).where(_columns.id == task_id))
        row: RowMapping | None = result.mappings().one_or_none()
        if row is None:
            raise self.not_found(task_id)
        return row

    @classmethod
    async def read_tasks_page(
        cls,
        reader: ReadConnection,
        joined: frozenset[str],
        conditions: list[ColumnElement[bool]],
        order: KeysetOrder,
        *,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[asyncpg.Record], str | None]:
        """One keyset page of the tasks matching `conditions`, read as `read` reads one, on
        the hot read path (core.database.ReadConnection)."""
        statement = _keyed_statement(joined, conditions, order)
        return await cls.read_page(reader, statement, order, cursor, limit)

    @classmethod
    def read_tasks_batches(
        cls,
        reader: ReadConnection,
        joined: frozenset[str],
        conditions: list[ColumnElement[bool]],
        order: KeysetOrder,
        size: int,
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """Every task matching `conditions`, read as a page is, `size` at a time."""
        statement = _keyed_statement(joined, conditions, order)
        return cls.read_batches(reader, statement, order, size)

    async def reference_states(self, wanted: Mapping[str, int]) -> dict[str, bool | None]:
        """For each reference field -> id: None when no such row exists, else whether it may
        be referred to. One query for all of them."""
        probes = [
            select(REFERENCES[field].usable)
            .where(REFERENCES[field].column("id") == entity_id)
            .scalar_subquery()
            .label(field)
            for field, entity_id in wanted.items()
        ]
        found = (await self.session.execute(select(*probes))).mappings().one()
        return {field: found[field] for field in wanted}

    @staticmethod
    async def customer_exists(reader: ReadConnection, customer_id: int) -> bool:
        customers = REFERENCES["customer_id"]
        statement = select(literal(True)).where(customers.column("id") == customer_id)
        return bool(await reader.fetch_statement(statement))

    async def count_open_for_customer(self, customer_id: int) -> int:
        statement = select(func.count()).where(
            col(Task.customer_id) == customer_id, col(Task.status).in_(OPEN_STATUSES)
        )
        return int(await self.session.scalar(statement) or 0)

    async def unlink_customer(self, customer_id: int) -> int:
        """Detach every task from the customer as ordinary versioned updates; the count."""
        statement = (
            update(Task)
            .where(col(Task.customer_id) == customer_id)
            .values(customer_id=None, version=Task.version + 1, updated_at=func.now())
            .returning(col(Task.id))
        )
        result = await self.session.execute(statement)
        return len(result.all())
