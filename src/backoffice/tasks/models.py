from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from backoffice.core.models import (
    TRIGRAM_OPS,
    created_at_field,
    enum_field,
    id_field,
    optimistic_locking,
    updated_at_field,
    version_field,
)

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000


class TaskStatus(StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


class TaskPriority(StrEnum):
    """Declared from least to most pressing: the database enum sorts in this order."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


def due_date_or(far_end: str, due_date: Any = None) -> Any:
    """The due date with NULL read as `far_end` ('infinity' or '-infinity').

    Sorting by due date puts undated tasks last in both directions. A keyset needs a total order
    without NULLs, so each direction sorts by this expression, and an index on exactly the same
    expression (the literal inline, not a parameter) serves it.
    """
    column = Column("due_date", Date) if due_date is None else due_date
    return func.coalesce(column, text(f"'{far_end}'::date"))


def _reference(target: str) -> Any:
    # No cascade: deleting a referenced user or product is refused while tasks point at it,
    # and customers unlink their closed tasks explicitly (so every change is a visible UPDATE).
    return Field(default=None, sa_column=Column(Integer, ForeignKey(target), nullable=True))


class Task(SQLModel, table=True):
    __tablename__: ClassVar[str] = "tasks"
    __audit_entity__: ClassVar[str] = "task"

    id: int | None = id_field()
    title: str = Field(sa_column=Column(String(TITLE_MAX_LENGTH), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    status: TaskStatus = enum_field(TaskStatus, "task_status", TaskStatus.TODO)
    priority: TaskPriority = enum_field(TaskPriority, "task_priority", TaskPriority.MEDIUM)
    due_date: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    assignee_id: int | None = _reference("users.id")
    customer_id: int | None = _reference("customers.id")
    product_id: int | None = _reference("products.id")
    created_by: int = Field(sa_column=Column(Integer, ForeignKey("users.id"), nullable=False))
    completed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
    version: int = version_field()

    __table_args__ = (
        CheckConstraint(
            "(status = 'done') = (completed_at IS NOT NULL)", name="completed_at_iff_done"
        ),
        # Keyset pagination: one index per sort order, the id breaking ties.
        Index("ix_tasks_created_at_id", "created_at", "id"),
        Index("ix_tasks_priority_id", "priority", "id"),
        Index("ix_tasks_due_date_last_id", due_date_or("infinity"), "id"),
        Index("ix_tasks_due_date_last_desc_id", due_date_or("-infinity"), "id"),
        # Filters: status (and overdue = open and past due), due-date ranges, the references
        # (which also keep deleting a user, customer or product from scanning every task).
        Index("ix_tasks_status_due_date", "status", "due_date"),
        Index("ix_tasks_due_date", "due_date"),
        Index("ix_tasks_assignee_id", "assignee_id"),
        Index("ix_tasks_customer_id", "customer_id"),
        Index("ix_tasks_product_id", "product_id"),
        Index("ix_tasks_created_by", "created_by"),
        # `q` is a substring search (ILIKE '%...%'), which only a trigram index can serve.
        Index(
            "ix_tasks_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": TRIGRAM_OPS},
        ),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805  # a declared_attr gets the class
        return optimistic_locking(cls)
