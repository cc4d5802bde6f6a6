from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from backoffice.auth.dependencies import PermissionChecker
from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.conditional import IfMatchHeader, IfNoneMatchHeader, versioned_response
from backoffice.core.database import ReadConnectionDep, SessionDep
from backoffice.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    problem_responses,
)
from backoffice.core.pagination import InvalidCursorError, Page
from backoffice.core.schemas import MAX_INT4
from backoffice.core.spreadsheet import (
    CsvResponse,
    UnsupportedMediaTypeError,
    csv_download,
    csv_download_responses,
    csv_upload_body,
    refuse_methods,
    require_csv,
)
from backoffice.products import importing, service
from backoffice.products.schemas import (
    ProductCreate,
    ProductFilters,
    ProductImportSummary,
    ProductListQuery,
    ProductRead,
    ProductUpdate,
    StockAdjustment,
)

router = APIRouter(prefix="/products", tags=["products"])

ProductId = Annotated[int, Path(gt=0, le=MAX_INT4, description="Product id")]
ProductsRead = Annotated[Principal, Depends(PermissionChecker(Module.PRODUCTS, Action.READ))]
ProductsCreate = Annotated[Principal, Depends(PermissionChecker(Module.PRODUCTS, Action.CREATE))]
ProductsUpdate = Annotated[Principal, Depends(PermissionChecker(Module.PRODUCTS, Action.UPDATE))]
ProductsDelete = Annotated[Principal, Depends(PermissionChecker(Module.PRODUCTS, Action.DELETE))]


@router.get("", response_model=Page[ProductRead], responses=problem_responses(InvalidCursorError))
async def list_products(
    _: ProductsRead, reader: ReadConnectionDep, query: Annotated[ProductListQuery, Query()]
) -> Response:
    """Products, newest first unless `sort` says otherwise, one keyset page at a time."""
    page = await service.list_products(reader, query)
    return page.to_response()


# Declared before `/{product_id}`, whose path would match "export" too.
@router.get("/export", response_class=CsvResponse, responses=csv_download_responses("The products"))
async def export_products(
    _: ProductsRead, reader: ReadConnectionDep, query: Annotated[ProductFilters, Query()]
) -> CsvResponse:
    """Every product the list shows with these filters and sort, as a CSV file (README,
    "Spreadsheets"). Text cells a spreadsheet would run as a formula start with `'`."""
    return await csv_download(
        "products", service.EXPORT_COLUMNS, service.export_products(reader, query)
    )


@router.post(
    "/import",
    response_model=ProductImportSummary,
    responses=problem_responses(InvalidInputError, ConflictError, UnsupportedMediaTypeError),
    openapi_extra=csv_upload_body(
        "A CSV file, UTF-8, its first row naming the columns: `sku` (required), and any of "
        f"{', '.join(importing.COLUMNS[1:])}; an export's id, created_at and updated_at are "
        "ignored, its version refuses rows whose product changed since."
    ),
)
async def import_products(
    caller: ProductsUpdate,
    session: SessionDep,
    request: Request,
    dry_run: Annotated[
        bool, Query(description="true: validate every row and answer the summary; change nothing.")
    ] = False,
) -> Response:
    """Create and update products from a CSV file, matched by SKU (any case): all rows or
    none. A 422 names every bad cell by row (the header is row 1) and column. Creating
    products needs `products:create` as well. The body limit is CSV_IMPORT_MAX_BYTES."""
    require_csv(request.headers.get("content-type"))
    summary = await importing.import_products(
        session, await request.body(), caller, dry_run=dry_run
    )
    return Response(summary.model_dump_json(), media_type="application/json")


_ReadGuard = Depends(PermissionChecker(Module.PRODUCTS, Action.READ))
refuse_methods(router, "/export", ("PATCH", "DELETE"), _ReadGuard)
refuse_methods(router, "/import", ("GET", "PATCH", "DELETE"), _ReadGuard)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductRead,
    responses=problem_responses(ConflictError),
)
async def create_product(
    data: ProductCreate, _: ProductsCreate, session: SessionDep, request: Request
) -> Response:
    """Create a product. A SKU already in use (in any case) is a 409."""
    product = await service.create_product(session, data)
    location = request.app.url_path_for("get_product", product_id=product.id)
    return versioned_response(product, location=location)


@router.get(
    "/{product_id}",
    response_model=ProductRead,
    responses=problem_responses(NotFoundError),
)
async def get_product(
    product_id: ProductId,
    _: ProductsRead,
    reader: ReadConnectionDep,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    product = await service.read_product(reader, product_id)
    return versioned_response(product, if_none_match=if_none_match)


@router.patch(
    "/{product_id}",
    response_model=ProductRead,
    responses=problem_responses(NotFoundError, ConflictError, PreconditionFailedError),
)
async def update_product(
    product_id: ProductId,
    data: ProductUpdate,
    _: ProductsUpdate,
    session: SessionDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """Change the fields sent. With `If-Match`, a stale ETag is a 412 and nothing changes."""
    product = await service.update_product(session, product_id, data, if_match)
    return versioned_response(product)


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    # 409: tasks still refer to the product (deactivate it instead).
    responses=problem_responses(NotFoundError, ConflictError, PreconditionFailedError),
)
async def delete_product(
    product_id: ProductId, _: ProductsDelete, session: SessionDep, if_match: IfMatchHeader = None
) -> None:
    await service.delete_product(session, product_id, if_match)


@router.post(
    "/{product_id}/stock-adjustments",
    response_model=ProductRead,
    responses=problem_responses(NotFoundError, ConflictError),
)
async def adjust_stock(
    product_id: ProductId, data: StockAdjustment, _: ProductsUpdate, session: SessionDep
) -> Response:
    """Add or remove stock atomically. Removing more than is in stock is a 409, also when
    many requests race for the last units."""
    product = await service.adjust_stock(session, product_id, data.delta)
    return versioned_response(product)
