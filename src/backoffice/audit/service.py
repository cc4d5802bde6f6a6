"""Reading the audit trail: one keyset-paginated list per table, filtered by what an auditor
asks (who, what, which request, when)."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped
from sqlmodel import col

from backoffice.audit.models import AccessLog, DataChange
from backoffice.audit.repository import (
    AccessLogRepository,
    DataChangeRepository,
    prefix_pattern,
)
from backoffice.audit.schemas import (
    AccessLogListQuery,
    AccessLogRead,
    AuditListQuery,
    AuditSort,
    DataChangeListQuery,
    DataChangeRead,
)
from backoffice.core.pagination import KeysetOrder, Page, keyset_orders
from backoffice.core.repository import BaseRepository

# Both tables are paged by id alone: it is unique, so it is its own tie-breaker.
ACCESS_LOG_ORDERS = keyset_orders(AuditSort, AccessLog)
DATA_CHANGE_ORDERS = keyset_orders(AuditSort, DataChange)


def _common_filters(
    query: AuditListQuery,
    occurred_at: Mapped[datetime],
    request_id: Mapped[str] | Mapped[str | None],
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.request_id is not None:
        conditions.append(request_id == query.request_id)
    if query.since is not None:
        conditions.append(occurred_at >= query.since)
    if query.until is not None:
        conditions.append(occurred_at < query.until)
    return conditions


async def _page[R: BaseModel](
    repository: BaseRepository[Any],
    orders: Mapping[AuditSort, KeysetOrder],
    read: type[R],
    query: AuditListQuery,
    conditions: Sequence[ColumnElement[bool]],
) -> Page[R]:
    """One page of a table's rows that meet every condition, in the query's id order."""
    statement = repository.get_rows_statement().where(*conditions)
    rows, cursor = await repository.paginate(
        statement, orders[query.sort], query.cursor, query.limit
    )
    return Page[R](items=[read.model_validate(row) for row in rows], next_cursor=cursor)


def _access_log_filters(query: AccessLogListQuery) -> list[ColumnElement[bool]]:
    conditions = _common_filters(query, col(AccessLog.occurred_at), col(AccessLog.request_id))
    if query.user_id is not None:
        conditions.append(col(AccessLog.user_id) == query.user_id)
    if query.status is not None:
        conditions.append(col(AccessLog.status) == query.status)
    if query.method is not None:
        conditions.append(col(AccessLog.method) == query.method)
    if query.path_prefix is not None:
        conditions.append(col(AccessLog.path).like(prefix_pattern(query.path_prefix)))
    return conditions


def _data_change_filters(query: DataChangeListQuery) -> list[ColumnElement[bool]]:
    conditions = _common_filters(query, col(DataChange.occurred_at), col(DataChange.request_id))
    if query.entity_type is not None:
        conditions.append(col(DataChange.entity_type) == query.entity_type)
    if query.entity_id is not None:
        conditions.append(col(DataChange.entity_id) == query.entity_id)
    if query.action is not None:
        conditions.append(col(DataChange.action) == query.action)
    if query.actor_user_id is not None:
        conditions.append(col(DataChange.actor_user_id) == query.actor_user_id)
    return conditions


async def list_access_logs(session: AsyncSession, query: AccessLogListQuery) -> Page[AccessLogRead]:
    return await _page(
        AccessLogRepository(session),
        ACCESS_LOG_ORDERS,
        AccessLogRead,
        query,
        _access_log_filters(query),
    )


async def list_data_changes(
    session: AsyncSession, query: DataChangeListQuery
) -> Page[DataChangeRead]:
    return await _page(
        DataChangeRepository(session),
        DATA_CHANGE_ORDERS,
        DataChangeRead,
        query,
        _data_change_filters(query),
    )
