from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from backoffice.auth.dependencies import PermissionChecker
from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.conditional import IfMatchHeader, IfNoneMatchHeader, versioned_response
from backoffice.core.database import ReadConnectionDep, ReadSessionDep, SessionDep
from backoffice.core.errors import (
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    problem_responses,
)
from backoffice.core.pagination import InvalidCursorError, Page
from backoffice.core.schemas import MAX_INT4
from backoffice.core.spreadsheet import (
    CsvResponse,
    csv_download,
    csv_download_responses,
    refuse_methods,
)
from backoffice.customers import service
from backoffice.customers.schemas import (
    CustomerCreate,
    CustomerFilters,
    CustomerListQuery,
    CustomerRead,
    CustomerUpdate,
)

router = APIRouter(prefix="/customers", tags=["customers"])

CustomerId = Annotated[int, Path(gt=0, le=MAX_INT4, description="Customer id")]
CustomersRead = Annotated[Principal, Depends(PermissionChecker(Module.CUSTOMERS, Action.READ))]
CustomersCreate = Annotated[Principal, Depends(PermissionChecker(Module.CUSTOMERS, Action.CREATE))]
CustomersUpdate = Annotated[Principal, Depends(PermissionChecker(Module.CUSTOMERS, Action.UPDATE))]
CustomersDelete = Annotated[Principal, Depends(PermissionChecker(Module.CUSTOMERS, Action.DELETE))]


@router.get("", response_model=Page[CustomerRead], responses=problem_responses(InvalidCursorError))
async def list_customers(
    _: CustomersRead, session: ReadSessionDep, query: Annotated[CustomerListQuery, Query()]
) -> Response:
    """Customers, newest first unless `sort` says otherwise, one keyset page at a time."""
    page = await service.list_customers(session, query)
    return page.to_response()


# Declared before `/{customer_id}`, whose path would match "export" too.
@router.get(
    "/export", response_class=CsvResponse, responses=csv_download_responses("The customers")
)
async def export_customers(
    _: CustomersRead, reader: ReadConnectionDep, query: Annotated[CustomerFilters, Query()]
) -> CsvResponse:
    """Every customer the list shows with these filters and sort, as a CSV file (README,
    "Spreadsheets"). Text cells a spreadsheet would run as a formula (a phone number's `+`
    too) start with `'`."""
    batches = service.export_customers(reader, query)
    return await csv_download("customers", service.EXPORT_COLUMNS, batches)


refuse_methods(
    router,
    "/export",
    ("PATCH", "DELETE"),
    Depends(PermissionChecker(Module.CUSTOMERS, Action.READ)),
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CustomerRead,
    responses=problem_responses(ConflictError),
)
async def create_customer(
    data: CustomerCreate, _: CustomersCreate, session: SessionDep, request: Request
) -> Response:
    """Create a customer. An email already in use (in any case) is a 409."""
    customer = await service.create_customer(session, data)
    location = request.app.url_path_for("get_customer", customer_id=customer.id)
    return versioned_response(customer, location=location)


@router.get(
    "/{customer_id}",
    response_model=CustomerRead,
    responses=problem_responses(NotFoundError),
)
async def get_customer(
    customer_id: CustomerId,
    _: CustomersRead,
    session: ReadSessionDep,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    customer = await service.get_customer(session, customer_id)
    return versioned_response(customer, if_none_match=if_none_match)


@router.patch(
    "/{customer_id}",
    response_model=CustomerRead,
    responses=problem_responses(NotFoundError, ConflictError, PreconditionFailedError),
)
async def update_customer(
    customer_id: CustomerId,
    data: CustomerUpdate,
    _: CustomersUpdate,
    session: SessionDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """Change the fields sent. With `If-Match`, a stale ETag is a 412 and nothing changes."""
    customer = await service.update_customer(session, customer_id, data, if_match)
    return versioned_response(customer)


@router.delete(
    "/{customer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(NotFoundError, ConflictError, PreconditionFailedError),
)
async def delete_customer(
    customer_id: CustomerId,
    _: CustomersDelete,
    session: SessionDep,
    if_match: IfMatchHeader = None,
) -> None:
    """Delete a customer. Refused (409) while it has open tasks; its closed tasks are kept
    and unlinked from it (`customer_id` becomes null)."""
    await service.delete_customer(session, customer_id, if_match)
