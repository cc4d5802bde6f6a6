from collections.abc import Mapping
from typing import ClassVar

from backoffice.core.errors import ConflictError, DomainError
from backoffice.core.repository import BaseRepository
from backoffice.customers.models import Customer


class CustomerRepository(BaseRepository[Customer]):
    model = Customer
    constraint_errors: ClassVar[Mapping[str, DomainError]] = {
        "uq_customers_email_lower": ConflictError("A customer with this email already exists."),
    }

    async def lock(self, customer_id: int) -> Customer:
        """The customer, its row locked until the transaction ends: a task being created for
        it meanwhile waits (its foreign key check needs the row), or is waited for."""
        customer = await self.session.get(
            Customer, customer_id, with_for_update=True, populate_existing=True
        )
        if customer is None:
            raise self.not_found(customer_id)
        return customer
