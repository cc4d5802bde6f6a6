from collections.abc import Mapping, Sequence
from typing import ClassVar

from sqlalchemy import BigInteger, String, any_, bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col

from backoffice.core.errors import ConflictError, DomainError
from backoffice.core.repository import BaseRepository
from backoffice.core.schemas import MAX_INT4
from backoffice.products.models import Product


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

    async def find_by_skus(self, skus: Sequence[str]) -> list[Product]:
        """The products whose SKUs, lower-cased, are among `skus` (lower case): one query,
        one array parameter however many (served by the unique index on lower(sku))."""
        if not skus:
            return []
        wanted = bindparam("skus", list(skus), type_=ARRAY(String))
        statement = select(Product).where(func.lower(col(Product.sku)) == any_(wanted))
        result = await self.session.execute(statement)
        return list(result.scalars().all())
