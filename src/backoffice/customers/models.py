from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import Column, Index, String, func
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from backoffice.core.models import (
    TRIGRAM_OPS,
    created_at_field,
    enum_field,
    id_field,
    optimistic_locking,
    updated_at_field,
    version_field,
)
from backoffice.core.schemas import EMAIL_MAX_LENGTH

NAME_MAX_LENGTH = 200
COMPANY_MAX_LENGTH = 200
PHONE_MAX_LENGTH = 16  # "+" and at most 15 digits (E.164)
NOTES_MAX_LENGTH = 2000


class CustomerStatus(StrEnum):
    LEAD = "lead"
    ACTIVE = "active"
    INACTIVE = "inactive"


class Customer(SQLModel, table=True):
    __tablename__: ClassVar[str] = "customers"
    __audit_entity__: ClassVar[str] = "customer"

    id: int | None = id_field()
    name: str = Field(sa_column=Column(String(NAME_MAX_LENGTH), nullable=False))
    email: str = Field(sa_column=Column(String(EMAIL_MAX_LENGTH), nullable=False))
    phone: str | None = Field(default=None, sa_column=Column(String(PHONE_MAX_LENGTH)))
    company: str | None = Field(default=None, sa_column=Column(String(COMPANY_MAX_LENGTH)))
    status: CustomerStatus = enum_field(CustomerStatus, "customer_status", CustomerStatus.LEAD)
    notes: str | None = Field(default=None, sa_column=Column(String(NOTES_MAX_LENGTH)))
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
    version: int = version_field()

    __table_args__ = (
        # One customer per address, whatever its case.
        Index("uq_customers_email_lower", func.lower(Column("email")), unique=True),
        # Keyset pagination: one index per sort order, the id breaking ties; the status filter
        # leads its own copy of the default order.
        Index("ix_customers_created_at_id", "created_at", "id"),
        Index("ix_customers_name_id", "name", "id"),
        Index("ix_customers_status_created_at_id", "status", "created_at", "id"),
        # `q` is a substring search (ILIKE '%...%'), which only a trigram index can serve.
        Index(
            "ix_customers_search_trgm",
            "name",
            "email",
            "company",
            postgresql_using="gin",
            postgresql_ops=dict.fromkeys(("name", "email", "company"), TRIGRAM_OPS),
        ),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805  # a declared_attr gets the class
        return optimistic_locking(cls)
