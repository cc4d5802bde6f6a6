"""Customer use cases. Raise domain errors; never commit (the request owns the transaction)."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy import ColumnElement, Select, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.core.conditional import check_if_match
from backoffice.core.database import ReadConnection
from backoffice.core.pagination import Page, keyset_orders
from backoffice.core.repository import contains_pattern
from backoffice.customers.models import Customer
from backoffice.customers.repository import CustomerRepository
from backoffice.customers.schemas import (
    CustomerCreate,
    CustomerFilters,
    CustomerListQuery,
    CustomerRead,
    CustomerSort,
    CustomerUpdate,
)

log = structlog.get_logger(__name__)

SORT_ORDERS = keyset_orders(CustomerSort, Customer)


# The export's columns: the JSON API's fields, in its order.
EXPORT_COLUMNS = tuple(CustomerRead.model_fields)


def _filters(query: CustomerFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.q is not None:
        pattern = contains_pattern(query.q)
        conditions.append(
            or_(
                col(Customer.name).ilike(pattern),
                col(Customer.email).ilike(pattern),
                col(Customer.company).ilike(pattern),
            )
        )
    if query.status is not None:
        conditions.append(col(Customer.status) == query.status)
    return conditions


async def get_customer(session: AsyncSession, customer_id: int) -> CustomerRead:
    row = await CustomerRepository(session).get_row(customer_id)
    return CustomerRead.model_validate(row)


async def list_customers(session: AsyncSession, query: CustomerListQuery) -> Page[CustomerRead]:
    repository = CustomerRepository(session)
    statement: Select[Any] = repository.get_rows_statement().where(*_filters(query))
    rows, cursor = await repository.paginate(
        statement, SORT_ORDERS[query.sort], query.cursor, query.limit
    )
    return Page[CustomerRead](
        items=[CustomerRead.model_validate(row) for row in rows], next_cursor=cursor
    )


def export_customers(
    reader: ReadConnection, query: CustomerFilters
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every customer the list would show with these filters and sort, a batch at a time."""
    return CustomerRepository.read_all(reader, _filters(query), SORT_ORDERS[query.sort])


async def create_customer(session: AsyncSession, data: CustomerCreate) -> CustomerRead:
    customer = await CustomerRepository(session).create(Customer(**data.model_dump()))
    log.info("customer.created", customer_id=customer.id)
    return CustomerRead.model_validate(customer)


async def update_customer(
    session: AsyncSession, customer_id: int, data: CustomerUpdate, if_match: str | None
) -> CustomerRead:
    repository = CustomerRepository(session)
    customer = await repository.get(customer_id)
    check_if_match(if_match, customer.version)
    changes = data.model_dump(exclude_unset=True)
    if changes:
        customer = await repository.update(customer, changes)
        log.info("customer.updated", customer_id=customer_id, fields=sorted(changes))
    return CustomerRead.model_validate(customer)


type DeletionGuard = Callable[[AsyncSession, int], Awaitable[object]]

# What the slices that refer to customers do before one is deleted, in the same transaction:
# the tasks slice refuses while open tasks remain and unlinks the closed ones. core/main.py
# registers them, so customers imports none of those slices: tasks -> customers, one way.
_deletion_guards: list[DeletionGuard] = []


def guard_deletion(guard: DeletionGuard) -> None:
    """Run `guard(session, customer_id)` before every customer deletion (registered once)."""
    if guard not in _deletion_guards:
        _deletion_guards.append(guard)


async def delete_customer(session: AsyncSession, customer_id: int, if_match: str | None) -> None:
    """Locked, checked against If-Match, then each deletion guard has its say (a guard refuses
    with a problem, e.g. a 409 while the customer has open tasks)."""
    repository = CustomerRepository(session)
    customer = await repository.lock(customer_id)
    check_if_match(if_match, customer.version)
    for guard in _deletion_guards:
        await guard(session, customer_id)
    await repository.delete(customer)
    log.info("customer.deleted", customer_id=customer_id)
