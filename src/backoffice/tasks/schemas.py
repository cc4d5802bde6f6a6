from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    Strict,
    StringConstraints,
)

from backoffice.core.pagination import FilterQuery, KeysetQuery
from backoffice.core.schemas import MAX_INT4, NOT_BLANK, Day, RecordId, RequestModel, omittable
from backoffice.tasks.models import (
    DESCRIPTION_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    TaskPriority,
    TaskStatus,
)

Title = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=TITLE_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["Call back about the invoice"]),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH)]
Priority = Annotated[TaskPriority, Strict(False)]  # arrives as a string
Status = Annotated[TaskStatus, Strict(False)]
DueDate = Annotated[Day, Field(examples=["2026-12-24"])]
ReferenceId = RecordId


class TaskCreate(RequestModel):
    """A new task starts as `todo`; its status then moves through PATCH."""

    title: Title
    description: Description | None = None
    priority: Priority = TaskPriority.MEDIUM
    due_date: DueDate | None = None
    assignee_id: Annotated[ReferenceId | None, Field(description="An active user.")] = None
    customer_id: ReferenceId | None = None
    product_id: ReferenceId | None = None


class TaskUpdate(RequestModel):
    """Every field optional; only the fields sent are changed. Description, due date and the
    references can be cleared with null. A status change must follow the transition table."""

    title: Title = omittable()
    description: Description | None = None
    status: Status = omittable()
    priority: Priority = omittable()
    due_date: DueDate | None = None
    assignee_id: ReferenceId | None = None
    customer_id: ReferenceId | None = None
    product_id: ReferenceId | None = None


class UserSummary(BaseModel):
    id: int
    email: str
    full_name: str


class CustomerSummary(BaseModel):
    id: int
    name: str
    company: str | None


class ProductSummary(BaseModel):
    id: int
    sku: str
    name: str


class TaskRead(BaseModel):
    id: int
    title: str
    description: str | None
    status: TaskStatus
    allowed_transitions: list[TaskStatus] = Field(
        description="The statuses this task may move to next."
    )
    priority: TaskPriority
    due_date: date | None
    assignee_id: int | None
    assignee: UserSummary | None
    customer_id: int | None
    customer: CustomerSummary | None
    product_id: int | None
    product: ProductSummary | None
    created_by: int
    completed_at: datetime | None = Field(description="When the task was last marked done.")
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Bumped on every change; the ETag carries it.")


class TaskSort(StrEnum):
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"
    DUE_DATE = "due_date"
    DUE_DATE_DESC = "-due_date"
    PRIORITY = "priority"
    PRIORITY_DESC = "-priority"


class TaskSelection(FilterQuery):
    """The filters and sort of a task list, and of the CSV export."""

    status: Annotated[
        list[TaskStatus] | None, Field(max_length=len(TaskStatus), description="Any of these.")
    ] = None
    priority: Annotated[
        list[TaskPriority] | None,
        Field(max_length=len(TaskPriority), description="Any of these."),
    ] = None
    assignee_id: Annotated[int | None, Field(gt=0, le=MAX_INT4)] = None
    assignee: Annotated[
        Literal["me"] | None,
        Field(description="`me`: the tasks assigned to the caller (with `assignee_id`, both)."),
    ] = None
    product_id: Annotated[int | None, Field(gt=0, le=MAX_INT4)] = None
    # due_after later than due_before is an empty window: it matches nothing.
    due_after: Annotated[Day | None, Field(description="Due on or after this day.")] = None
    due_before: Annotated[Day | None, Field(description="Due on or before this day.")] = None
    overdue: Annotated[
        bool | None,
        Field(description="true: open and due before today (UTC); false: everything else."),
    ] = None
    q: Annotated[str | None, Field(min_length=1, max_length=100, description="Title contains.")] = (
        None
    )
    sort: Annotated[
        TaskSort, Field(description="Undated tasks come last in both due-date orders.")
    ] = TaskSort.CREATED_AT_DESC


class TaskFilters(TaskSelection, KeysetQuery):
    """The filters, sort and page of a task list. A customer's task list takes exactly these
    (its customer is the path's); `GET /tasks` adds `customer_id` (`TaskListQuery`)."""


CustomerFilter = Annotated[int | None, Field(gt=0, le=MAX_INT4)]


class TaskListQuery(TaskFilters):
    customer_id: CustomerFilter = None


class TaskExportQuery(TaskSelection):
    """`GET /tasks/export`: the filters and sort of `GET /tasks`, no page."""

    customer_id: CustomerFilter = None
