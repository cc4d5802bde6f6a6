from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from backoffice.core.pagination import FilterQuery, KeysetQuery
from backoffice.core.schemas import (
    MAX_INT4,
    NOT_BLANK,
    Int4,
    Money,
    MoneyQuery,
    RequestModel,
    omittable,
)
from backoffice.products.models import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH, SKU_MAX_LENGTH

MAX_QUANTITY = MAX_INT4

Sku = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=SKU_MAX_LENGTH,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
    ),
    Field(description="Stock keeping unit; unique whatever its case.", examples=["KB-0042"]),
]
ProductName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["Mechanical keyboard"]),
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX_LENGTH),
    Field(examples=["Tenkeyless, brown switches."]),
]
# 89.9 and "89.90" alike; the value is kept exact either way.
Price = Annotated[
    Money,
    Field(description="Unit price; up to 2 decimal places. Returned as a string to keep it exact."),
]
StockQuantity = Annotated[Int4, Field(ge=0, le=MAX_QUANTITY, examples=[25])]


class ProductCreate(RequestModel):
    sku: Sku
    name: ProductName
    description: Description | None = None
    price: Price
    stock_quantity: StockQuantity = 0
    is_active: bool = True


class ProductUpdate(RequestModel):
    """Every field optional; only the fields sent are changed."""

    sku: Sku = omittable()
    name: ProductName = omittable()
    description: Description | None = None
    price: Price = omittable()
    stock_quantity: StockQuantity = omittable()
    is_active: bool = omittable()


class StockAdjustment(RequestModel):
    delta: Annotated[
        Int4,
        Field(
            ge=-MAX_QUANTITY,
            le=MAX_QUANTITY,
            description="Units to add (positive) or remove (negative); never below zero stock.",
            examples=[-3],
            json_schema_extra={"not": {"const": 0}},
        ),
    ]

    @field_validator("delta")
    @classmethod
    def _non_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be zero")
        return value


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    description: str | None
    price: Annotated[Decimal, Field(description="Unit price, as a string to keep it exact.")]
    stock_quantity: int
    is_active: bool
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Bumped on every change; the ETag carries it.")


class ProductSort(StrEnum):
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"
    NAME = "name"
    NAME_DESC = "-name"
    PRICE = "price"
    PRICE_DESC = "-price"


class ProductFilters(FilterQuery):
    """The filters and sort of the product list, and of its CSV export."""

    q: Annotated[
        str | None,
        Field(min_length=1, max_length=100, description="Name or SKU contains (any case)."),
    ] = None
    is_active: bool | None = None
    # A range with min_price above max_price is empty: it matches nothing.
    min_price: MoneyQuery | None = None
    max_price: MoneyQuery | None = None
    sort: ProductSort = ProductSort.CREATED_AT_DESC


class ProductListQuery(ProductFilters, KeysetQuery):
    """A page of the filtered, sorted products."""


class ProductImportSummary(BaseModel):
    dry_run: bool = Field(description="True: validated only, nothing was changed.")
    rows: int = Field(description="Data rows in the file (blank rows left out).")
    created: int
    updated: int
    unchanged: int = Field(description="Rows whose product already has every value given.")
    created_skus: list[str]
    updated_skus: list[str]
