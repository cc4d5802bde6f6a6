from collections.abc import Mapping
from typing import ClassVar

from sqlalchemy import func, update
from sqlmodel import col

from backoffice.core.errors import ConflictError, DomainError
from backoffice.core.repository import BaseRepository
from backoffice.products.models import Product


class ProductRepository(BaseRepository[Product]):
    model = Product
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {
        "uq_products_sku_lower": ConflictError("A product with this SKU already exists."),
    }

    async def adjust_stock(self, product_id: int, delta: int) -> Product | None:
        """Add `delta` to the stock in one conditional UPDATE, so concurrent adjustments can
        never take it below zero; None if the product is missing or the stock is short."""
        statement = (
            update(Product)
            .where(col(Product.id) == product_id, col(Product.stock_quantity) + delta >= 0)
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
