import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)

from backoffice.core.pagination import FilterQuery, KeysetQuery
from backoffice.core.schemas import NOT_BLANK, Email, RequestModel, omittable
from backoffice.customers.models import (
    COMPANY_MAX_LENGTH,
    NAME_MAX_LENGTH,
    NOTES_MAX_LENGTH,
    CustomerStatus,
)

_PHONE_SEPARATORS = re.compile(r"[ ().-]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # ASCII digits only: \d takes any script's
# The same rule with the separators in, as the document states it.
PHONE_PATTERN = r"^[ ().-]*\+[ ().-]*[1-9]([ ().-]*[0-9]){6,14}[ ().-]*$"


def _normalise_phone(phone: str) -> str:
    """Spaces, dots, dashes and parentheses are presentation; what is stored is E.164."""
    compact = _PHONE_SEPARATORS.sub("", phone)
    if not _E164.fullmatch(compact):
        raise ValueError(
            "must be an international number: '+', a country code and 7 to 15 digits in all"
        )
    return compact


CustomerName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=NAME_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["Grace Hopper"]),
]
Phone = Annotated[
    str,
    StringConstraints(max_length=32, pattern=PHONE_PATTERN),
    AfterValidator(_normalise_phone),
    Field(description="E.164; separators are accepted and dropped.", examples=["+44 20 7946 0958"]),
]
Company = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=COMPANY_MAX_LENGTH, pattern=NOT_BLANK
    ),
    Field(examples=["Navy Labs"]),
]
Notes = Annotated[str, StringConstraints(max_length=NOTES_MAX_LENGTH)]
Status = Annotated[CustomerStatus, Strict(False)]  # arrives as a string


class CustomerCreate(RequestModel):
    name: CustomerName
    email: Email
    phone: Phone | None = None
    company: Company | None = None
    status: Status = CustomerStatus.LEAD
    notes: Notes | None = None


class CustomerUpdate(RequestModel):
    """Every field optional; only the fields sent are changed. Phone, company and notes can
    be cleared with null."""

    name: CustomerName = omittable()
    email: Email = omittable()
    phone: Phone | None = None
    company: Company | None = None
    status: Status = omittable()
    notes: Notes | None = None


class CustomerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    phone: str | None
    company: str | None
    status: CustomerStatus
    notes: str | None
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="Bumped on every change; the ETag carries it.")


class CustomerSort(StrEnum):
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"
    NAME = "name"
    NAME_DESC = "-name"


class CustomerFilters(FilterQuery):
    """The filters and sort of the customer list, and of its CSV export."""

    q: Annotated[
        str | None,
        Field(min_length=1, max_length=100, description="Name, email or company contains."),
    ] = None
    status: CustomerStatus | None = None
    sort: CustomerSort = CustomerSort.CREATED_AT_DESC


class CustomerListQuery(CustomerFilters, KeysetQuery):
    """A page of the filtered, sorted customers."""
