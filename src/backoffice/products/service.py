"""Product use cases. Raise domain errors; never commit (the request owns the transaction)."""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog
from sqlalchemy import ColumnElement, Select, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from backoffice.core.conditional import check_if_match
from backoffice.core.database import ReadConnection
from backoffice.core.errors import ConflictError
from backoffice.core.pagination import Page, keyset_orders
from backoffice.core.repository import contains_pattern
from backoffice.products.models import Product
from backoffice.products.repository import ProductRepository
from backoffice.products.schemas import (
    MAX_QUANTITY,
    ProductCreate,
    ProductFilters,
    ProductListQuery,
    ProductRead,
    ProductSort,
    ProductUpdate,
)

log = structlog.get_logger(__name__)

SORT_ORDERS = keyset_orders(ProductSort, Product)


# The export's columns: the JSON API's fields, in its order.
EXPORT_COLUMNS = tuple(ProductRead.model_fields)


def _filters(query: ProductFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.q is not None:
        pattern = contains_pattern(query.q)
        conditions.append(or_(col(Product.name).ilike(pattern), col(Product.sku).ilike(pattern)))
    if query.is_active is not None:
        conditions.append(col(Product.is_active) == query.is_active)
    if query.min_price is not None:
        conditions.append(col(Product.price) >= query.min_price)
    if query.max_price is not None:
        conditions.append(col(Product.price) <= query.max_price)
    return conditions


async def get_product(session: AsyncSession, product_id: int) -> ProductRead:
    row = await ProductRepository(session).get_row(product_id)
    return ProductRead.model_validate(row)


async def read_product(reader: ReadConnection, product_id: int) -> ProductRead:
    """The product for GET: the hot path, on the read connection."""
    row = await ProductRepository.read_row(reader, product_id)
    return ProductRead.model_validate(dict(row))


async def list_products(reader: ReadConnection, query: ProductListQuery) -> Page[ProductRead]:
    statement: Select[Any] = ProductRepository.get_rows_statement().where(*_filters(query))
    rows, cursor = await ProductRepository.read_page(
        reader, statement, SORT_ORDERS[query.sort], query.cursor, query.limit
    )
    # Validated in one pass, the page and its items together.
    return Page[ProductRead].model_validate(
        {"items": [dict(row) for row in rows], "next_cursor": cursor}
    )


def export_products(
    reader: ReadConnection, query: ProductFilters
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every product the list would show with these filters and sort, a batch at a time."""
    return ProductRepository.read_all(reader, _filters(query), SORT_ORDERS[query.sort])


async def create_product(session: AsyncSession, data: ProductCreate) -> ProductRead:
    product = await ProductRepository(session).create(Product(**data.model_dump()))
    log.info("product.created", product_id=product.id)
    return ProductRead.model_validate(product)


async def update_product(
    session: AsyncSession, product_id: int, data: ProductUpdate, if_match: str | None
) -> ProductRead:
    repository = ProductRepository(session)
    product = await repository.get(product_id)
    check_if_match(if_match, product.version)
    changes = data.model_dump(exclude_unset=True)
    if changes:
        product = await repository.update(product, changes)
        log.info("product.updated", product_id=product_id, fields=sorted(changes))
    return ProductRead.model_validate(product)


async def delete_product(session: AsyncSession, product_id: int, if_match: str | None) -> None:
    repository = ProductRepository(session)
    product = await repository.get(product_id)
    check_if_match(if_match, product.version)
    await repository.delete(product)
    log.info("product.deleted", product_id=product_id)


async def adjust_stock(session: AsyncSession, product_id: int, delta: int) -> ProductRead:
    product = await ProductRepository(session).adjust_stock(product_id, delta)
    if product is not None:
        log.info("product.stock_adjusted", product_id=product_id, delta=delta)
        return ProductRead.model_validate(product)
    current = await get_product(session, product_id)
    if delta > 0:
        raise ConflictError(
            f"Stock cannot exceed {MAX_QUANTITY}: {current.stock_quantity} in stock, "
            f"cannot add {delta}."
        )
    raise ConflictError(
        f"Insufficient stock: {current.stock_quantity} in stock, cannot remove {-delta}."
    )
