from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    any_,
    bindparam,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col

from backoffice.core.errors import ConflictError, DomainError
from backoffice.core.repository import BaseRepository
from backoffice.core.schemas import MAX_INT4
from backoffice.products.models import Product

_TABLE: Table = Product.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models


class ProductRepository(BaseRepository[Product]):
    model = Product
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {
        "uq_products_sku_lower": ConflictError("A product with this SKU already exists."),
    }

    async def adjust_stock(self, product_id: int, delta: int) -> Product | None:
        """Add `delta` to the stock in one conditional UPDATE, so concurrent adjustments can
        never take it below zero nor past the column's range; None if the product is missing
        or the new stock would be out of range."""
        # Compared in bigint: in the column's int4 the sum itself would overflow (an error).
        new_stock = cast(col(Product.stock_quantity), BigInteger) + delta
        statement = (
            update(Product)
            .where(col(Product.id) == product_id, new_stock >= 0, new_stock <= MAX_INT4)
            .values(
                stock_quantity=Product.stock_quantity + delta,
                version=Product.version + 1,
                updated_at=func.now(),
            )
            .returning(Product)
        )
        result = await self.session.execute(
            statement, execution_options={"populate_existing": True}
        )
        return result.scalars().one_or_none()

    async def find_by_skus(self, skus: Sequence[str], *, lock: bool) -> list[Product]:
        """The products whose SKUs, lower-cased, are among `skus` (lower case): one query,
        one array parameter however many (served by the unique index on lower(sku)). With
        `lock`, their rows stay locked until the transaction ends (`write_many` relies on it)."""
        if not skus:
            return []
        wanted = bindparam("skus", list(skus), type_=ARRAY(String))
        statement = select(Product).where(func.lower(col(Product.sku)) == any_(wanted))
        if lock:
            statement = statement.with_for_update()
        result = await self.session.execute(statement)
        return list(result.scalars().all())

    async def write_many(
        self, new: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]]
    ) -> None:
        """Insert the `new` rows (every column of ProductCreate) and apply the `changes`
        (each with its product's `id`, the `version` it was read at and the changed fields),
        one statement each, the rows passed as arrays: 10,000 rows cost what their
        data-change trigger costs, not 10,000 round trips. Each UPDATE is conditional on the
        version it was read at and bumps it, as the ORM's own are; read with
        `find_by_skus(lock=True)`, no product can have changed meanwhile (else a 412)."""
        async with self.client_errors():
            if changes:
                await self._update_many(changes)
            if new:
                columns = list(new[0])
                rows = _unnest(columns, new)
                statement = insert(Product).from_select(columns, select(*rows.c))
                await self.session.execute(statement)

    async def _update_many(self, changes: Sequence[Mapping[str, Any]]) -> None:
        names = sorted({name for change in changes for name in change} - {"id", "version"})
        rows = _unnest(["id", "version", *names], changes)
        table = _TABLE
        statement = (
            update(table)
            .where(table.c.id == rows.c.id, table.c.version == rows.c.version)
            # An import never sets a value to null (an empty cell is no change): null in a
            # row's array means "keep".
            .values(
                {name: func.coalesce(rows.c[name], table.c[name]) for name in names}
                | {"version": table.c.version + 1, "updated_at": func.now()}
            )
        )
        result = await self.session.execute(statement)
        if result.rowcount != len(changes):  # type: ignore[attr-defined]  # an UPDATE's result
            raise StaleDataError("a product changed while the import ran")


def _unnest(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Any:
    """`rows` as a derived table of `columns`: one array parameter per column, typed as the
    products column it fills (`unnest` zips them back into rows)."""
    table = _TABLE
    arrays = [
        bindparam(f"rows_{name}", [row.get(name) for row in rows], type_=ARRAY(table.c[name].type))
        for name in columns
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name="rows")
