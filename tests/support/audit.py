"""Reading the audit trail back: the data changes recorded for an entity."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.audit.models import DataChange


async def changes_of(
    session: AsyncSession, entity_type: str, entity_id: object | None = None
) -> list[DataChange]:
    """The recorded changes of one entity type (and id), oldest first."""
    statement = select(DataChange).where(DataChange.entity_type == entity_type)  # type: ignore[arg-type]
    if entity_id is not None:
        statement = statement.where(DataChange.entity_id == str(entity_id))  # type: ignore[arg-type]
    result = await session.execute(
        statement.order_by(DataChange.id).execution_options(populate_existing=True)  # type: ignore[arg-type]
    )
    return list(result.scalars())


def summary(change: DataChange) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    return (change.action, change.old_values, change.new_values)
