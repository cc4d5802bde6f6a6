from collections.abc import Mapping
from typing import ClassVar

from sqlalchemy import func, select, update
from sqlmodel import col

from backoffice.core.errors import DomainError, FieldError, InvalidInputError
from backoffice.core.repository import BaseRepository
from backoffice.tasks.models import Task
from backoffice.tasks.rules import OPEN_STATUSES


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
