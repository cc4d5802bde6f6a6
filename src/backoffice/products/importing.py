"""Products from a CSV file: `POST /products/import` (README, "Spreadsheets").

Each row is matched to a product by SKU, whatever its case: a new SKU is created, a known one
updated with the cells given (an empty cell leaves the value as it is). Every row is checked
with the JSON API's own schemas (ProductCreate for a new product, ProductUpdate for a known
one), and the whole file is one transaction: one bad row and nothing is imported, the answer
naming every bad cell by its row in the file and its column. The data-change trigger records
each insert and update, as for the JSON API.
"""

import re
from dataclasses import dataclass

import anyio
import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.permissions import Action, Module
from backoffice.auth.service import Principal
from backoffice.core.errors import ForbiddenError
from backoffice.core.spreadsheet import CsvErrors, check_header, given, read_csv
from backoffice.products.models import Product
from backoffice.products.repository import ProductRepository
from backoffice.products.schemas import ProductCreate, ProductImportSummary, ProductUpdate

log = structlog.get_logger(__name__)

COLUMNS = tuple(ProductCreate.model_fields)
# An export's read-only columns: accepted, so that an exported file can be sent back as it is,
# and ignored (a product is found by its SKU, never by its id).
IGNORED_COLUMNS = ("id", "created_at", "updated_at")
# An export's version column: when given, a row that updates a product is refused if the
# product changed since the export (the CSV form of If-Match), so no one's change is lost.
VERSION_COLUMN = "version"
REQUIRED_COLUMNS = ("sku",)
# ASCII digits, as an export writes it: str.isdigit also takes "²" (int() refuses it) and
# Arabic-Indic digits (int() reads them); and short enough for int() to take.
_VERSION = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class _Row:
    number: int  # in the file: the header is row 1
    cells: dict[str, str]  # the product columns given
    data: ProductUpdate  # its SKU alone when the row is not `valid`
    version: str
    valid: bool

    @property
    def key(self) -> str:
        return str(self.data.sku).lower()


def _add_validation_errors(errors: CsvErrors, number: int, exc: ValidationError) -> None:
    for error in exc.errors():
        column = str(error["loc"][0]) if error["loc"] else None
        errors.add(number, column, error["msg"], error["type"])


def _read_rows(body: bytes) -> tuple[list[_Row], CsvErrors]:
    """The file's rows, each validated on its own (types, ranges, patterns) and its SKU
    unique in the file. CPU work over the whole file: run in a thread."""
    errors = CsvErrors()
    table = read_csv(body)
    check_header(
        table.header, (*COLUMNS, *IGNORED_COLUMNS, VERSION_COLUMN), REQUIRED_COLUMNS, errors
    )
    errors.raise_if_any()  # rows cannot be read against a wrong header
    rows: list[_Row] = []
    first_row: dict[str, int] = {}
    for number, cells in table.rows(errors):
        values = given(cells, COLUMNS)
        if "sku" not in values:
            errors.add(number, "sku", "required: the SKU finds or names the product", "missing")
            continue
        try:
            data, valid = ProductUpdate.model_validate_strings(values, strict=False), True
        except ValidationError as exc:
            _add_validation_errors(errors, number, exc)
            # Kept, by its SKU, to learn whether it would create a product (and then what
            # else it lacks) and to catch the same SKU further down.
            try:
                data = ProductUpdate.model_validate_strings({"sku": values["sku"]}, strict=False)
            except ValidationError:
                continue
            valid = False
        row = _Row(number, values, data, cells.get(VERSION_COLUMN, "").strip(), valid)
        first = first_row.setdefault(row.key, number)
        if first != number:
            errors.add(number, "sku", f"{data.sku} is on row {first} already", "duplicate_sku")
            continue
        rows.append(row)
    return rows, errors


@dataclass(slots=True)
class _Plan:
    creates: list[ProductCreate]
    updates: list[tuple[Product, dict[str, object]]]
    unchanged: int = 0


def _stale_version(row: _Row, product: Product, errors: CsvErrors) -> bool:
    if not row.version:
        return False
    if not _VERSION.fullmatch(row.version):
        errors.add(row.number, VERSION_COLUMN, "must be a whole number", "int_parsing")
        return True
    if int(row.version) != product.version:
        errors.add(
            row.number,
            VERSION_COLUMN,
            f"the product has changed since (now version {product.version}); export again",
            "stale_version",
        )
        return True
    return False


def _plan(rows: list[_Row], existing: dict[str, Product], errors: CsvErrors) -> _Plan:
    plan = _Plan(creates=[], updates=[])
    for row in rows:
        product = existing.get(row.key)
        if product is None:
            try:
                plan.creates.append(ProductCreate.model_validate_strings(row.cells, strict=False))
            except ValidationError as exc:  # the cells the update check found, and what a
                _add_validation_errors(errors, row.number, exc)  # new product needs more
            continue
        if not row.valid or _stale_version(row, product, errors):
            continue
        # The SKU matched whatever its case; the stored spelling stays.
        fields = row.data.model_dump(exclude_unset=True, exclude={"sku"})
        changes = {name: value for name, value in fields.items() if getattr(product, name) != value}
        if changes:
            plan.updates.append((product, changes))
        else:
            plan.unchanged += 1
    return plan


def _check_permissions(plan: _Plan, caller: Principal) -> None:
    """The route needs `products:update`; a file that creates products needs
    `products:create` too, as `POST /products` does."""
    if plan.creates and not caller.can(Module.PRODUCTS, Action.CREATE):
        raise ForbiddenError(
            f"The file creates {len(plan.creates)} product(s), which needs the "
            f"`{Module.PRODUCTS}:{Action.CREATE}` permission; none of your roles grants it."
        )


async def import_products(
    session: AsyncSession, body: bytes, caller: Principal, *, dry_run: bool
) -> ProductImportSummary:
    """Validate every row, then (unless `dry_run`) create and update the products in the
    request's transaction. A 422 lists every bad cell; nothing is changed then."""
    rows, errors = await anyio.to_thread.run_sync(_read_rows, body)
    repository = ProductRepository(session)
    found = await repository.find_by_skus([row.key for row in rows], lock=not dry_run)
    plan = _plan(rows, {product.sku.lower(): product for product in found}, errors)
    errors.raise_if_any()
    _check_permissions(plan, caller)
    if not dry_run:
        await repository.write_many(
            [data.model_dump() for data in plan.creates],
            [
                {"id": product.id, "version": product.version, **changes}
                for product, changes in plan.updates
            ],
        )
    log.info(
        "products.imported",
        dry_run=dry_run,
        created=len(plan.creates),
        updated=len(plan.updates),
        unchanged=plan.unchanged,
    )
    return ProductImportSummary(
        dry_run=dry_run,
        rows=len(rows),
        created=len(plan.creates),
        updated=len(plan.updates),
        unchanged=plan.unchanged,
        created_skus=[data.sku for data in plan.creates],
        updated_skus=[product.sku for product, _ in plan.updates],
    )
