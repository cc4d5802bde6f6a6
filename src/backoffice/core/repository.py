"""The generic repository every slice's repository extends.

Services build statements; repositories run them. Repositories `flush()` and never commit:
the request's session dependency owns the transaction.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg
from sqlalchemy import ColumnElement, RowMapping, Select, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import SQLModel

from backoffice.core.database import CompiledQuery, ReadConnection
from backoffice.core.errors import (
    ConflictError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    sqlstate_of,
)
from backoffice.core.pagination import KeysetOrder, apply_keyset, next_cursor, seek, typed_key_of
from backoffice.core.spreadsheet import EXPORT_BATCH_SIZE

_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_CHECK_VIOLATION = "23514"
_NOT_NULL_VIOLATION = "23502"


def _integrity_details(exc: IntegrityError) -> tuple[str | None, str | None]:
    """(SQLSTATE, constraint name) of a failed statement, from the asyncpg error under it."""
    driver_error = getattr(exc.orig, "__cause__", None)
    return sqlstate_of(exc), getattr(driver_error, "constraint_name", None)


_DEFAULT_ERRORS: Mapping[str | None, DomainError] = {
    _UNIQUE_VIOLATION: ConflictError("The request conflicts with an existing record."),
    _FOREIGN_KEY_VIOLATION: ConflictError(
        "The record is still referred to by other records (deactivate it instead), or the "
        "request refers to a record that does not exist."
    ),
    _CHECK_VIOLATION: InvalidInputError("A value is outside its allowed range."),
    _NOT_NULL_VIOLATION: InvalidInputError("A required value is missing."),
}


def contains_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its `%`, `_` and `\\` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class BaseRepository[M: SQLModel]:
    model: ClassVar[type[Any]]
    # Constraint name -> the error a client should see when it is violated.
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {}
    _row_by_id: ClassVar[Select[Any]]
    _row_by_id_query: ClassVar[CompiledQuery]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = cls.model.__table__
        # Built once per repository; SQLAlchemy then reuses the compiled form on every call.
        cls._row_by_id = select(*table.c).where(table.c.id == bindparam("entity_id"))
        cls._row_by_id_query = CompiledQuery.of(cls._row_by_id)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @classmethod
    def not_found(cls, entity_id: int) -> NotFoundError:
        return NotFoundError(f"{cls.model.__name__} {entity_id} does not exist.")

    @classmethod
    async def read_row(cls, reader: ReadConnection, entity_id: int) -> asyncpg.Record:
        """`get_row` for the hot read routes: the same row, by the statement compiled once,
        on the driver connection (ReadConnection says why)."""
        row = await reader.fetch_one(cls._row_by_id_query, {"entity_id": entity_id})
        if row is None:
            raise cls.not_found(entity_id)
        return row

    async def get(self, entity_id: int) -> M:
        """The entity, to change or delete it; a 404 problem naming it when it is missing."""
        entity: M | None = await self.session.get(self.model, entity_id)
        if entity is None:
            raise self.not_found(entity_id)
        return entity

    async def get_row(self, entity_id: int) -> RowMapping:
        """The row as a plain mapping, for read-only answers: no ORM instance, no identity
        map, one round trip. A 404 problem naming the entity when it is missing."""
        result = await self.session.execute(self._row_by_id, {"entity_id": entity_id})
        row: RowMapping | None = result.mappings().one_or_none()
        if row is None:
            raise self.not_found(entity_id)
        return row

    async def get_one_or_none(self, statement: Select[Any]) -> M | None:
        result = await self.session.execute(statement)
        entity: M | None = result.scalars().one_or_none()
        return entity

    async def create(self, entity: M) -> M:
        self.session.add(entity)
        await self.flush()
        return entity

    async def update(self, entity: M, changes: Mapping[str, Any]) -> M:
        for field, value in changes.items():
            setattr(entity, field, value)
        await self.flush()
        return entity

    async def delete(self, entity: M) -> None:
        await self.session.delete(entity)
        await self.flush()

    @classmethod
    def get_rows_statement(cls) -> Select[Any]:
        """`SELECT <every column>` for read-only lists, answered as plain rows."""
        return select(*cls.model.__table__.c)

    async def paginate(
        self, statement: Select[Any], order: KeysetOrder, cursor: str | None, limit: int
    ) -> tuple[list[RowMapping], str | None]:
        """One keyset page of `statement` (a `get_rows_statement()` with filters) as rows."""
        result = await self.session.execute(apply_keyset(statement, order, cursor, limit))
        rows = list(result.mappings().all())
        return rows[:limit], next_cursor(rows, order, limit)

    @staticmethod
    async def read_page(
        reader: ReadConnection,
        statement: Select[Any],
        order: KeysetOrder,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[asyncpg.Record], str | None]:
        """`paginate` for the hot read routes, on the driver connection (ReadConnection)."""
        rows = await reader.fetch_statement(apply_keyset(statement, order, cursor, limit))
        return rows[:limit], next_cursor(rows, order, limit)

    @classmethod
    def read_all(
        cls, reader: ReadConnection, conditions: Sequence[ColumnElement[bool]], order: KeysetOrder
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """Every row matching `conditions` (an export), in `order`, a batch at a time."""
        statement = cls.get_rows_statement().where(*conditions)
        return cls.read_batches(reader, statement, order, EXPORT_BATCH_SIZE)

    @staticmethod
    async def read_batches(
        reader: ReadConnection, statement: Select[Any], order: KeysetOrder, size: int
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """Every row of `statement` in `order`, `size` at a time: a keyset read per batch,
        each on a connection held for that read only (an export streams at the client's
        pace, and must not keep a pooled connection meanwhile)."""
        after = None
        while True:
            rows = await reader.fetch_statement(seek(statement, order, after, size))
            if rows:
                yield rows
            if len(rows) < size:
                return
            after = typed_key_of(rows[-1], order)

    async def flush(self) -> None:
        """Flush, turning constraint violations and lost updates into client errors."""
        async with self.client_errors():
            await self.session.flush()

    @asynccontextmanager
    async def client_errors(self) -> AsyncIterator[None]:
        """Constraint violations and lost updates of the writes inside, as client errors."""
        try:
            yield
        except IntegrityError as exc:
            sqlstate, constraint = _integrity_details(exc)
            error = self.constraint_errors.get(constraint or "") or _DEFAULT_ERRORS.get(sqlstate)
            if error is None:
                raise
            raise type(error)(error.detail, errors=error.errors) from exc
        except StaleDataError as exc:
            raise PreconditionFailedError(
                "The resource was modified by another request; fetch it again and retry."
            ) from exc
