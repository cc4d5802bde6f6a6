from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    Numeric,
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
    id_field,
    optimistic_locking,
    updated_at_field,
    version_field,
)

SKU_MAX_LENGTH = 64
NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 5000


class Product(SQLModel, table=True):
    __tablename__: ClassVar[str] = "products"
    __audit_entity__: ClassVar[str] = "product"

    id: int | None = id_field()
    sku: str = Field(sa_column=Column(String(SKU_MAX_LENGTH), nullable=False))
    name: str = Field(sa_column=Column(String(NAME_MAX_LENGTH), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    price: Decimal = Field(sa_column=Column(Numeric(12, 2), nullable=False))
    stock_quantity: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    is_active: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true"))
    )
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
    version: int = version_field()

    __table_args__ = (
        CheckConstraint("price >= 0", name="price_non_negative"),
        CheckConstraint("stock_quantity >= 0", name="stock_non_negative"),
        # SKUs are unique whatever their case: "ab-1" and "AB-1" are the same product.
        Index("uq_products_sku_lower", func.lower(Column("sku")), unique=True),
        # Keyset pagination: one index per sort order, the id breaking ties.
        Index("ix_products_created_at_id", "created_at", "id"),
        Index("ix_products_name_id", "name", "id"),
        Index("ix_products_price_id", "price", "id"),
        # `q` is a substring search (ILIKE '%...%'), which only a trigram index can serve.
        Index(
            "ix_products_search_trgm",
            "name",
            "sku",
            postgresql_using="gin",
            postgresql_ops=dict.fromkeys(("name", "sku"), TRIGRAM_OPS),
        ),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805  # a declared_attr gets the class
        return optimistic_locking(cls)
