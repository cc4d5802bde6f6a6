"""The versioned-resource contract, proved once for every resource in RESOURCES.

Every business resource under `/api/v1/<collection>/{id}` answers the same way:

- GET: 200 with `ETag: "<version>"`; 304 with an empty body when `If-None-Match` matches
  (strong or weak, in a list, or `*`); 200 with the new ETag once the resource moved on;
- PATCH and DELETE: `If-Match` with a stale ETag (an older version, a weak tag, a malformed
  one) is a 412 that changes nothing; a current one (in a list, or `*`) goes through;
- a missing id is a 404 problem naming it; an id outside 1..2**31-1 (or not a whole number)
  is a 422 problem naming the path parameter, never a database error;
- every error is an RFC 9457 problem (`assert_problem`).

A new resource joins RESOURCES and inherits the proof. What only one resource does (its
fields, its rules, what else a delete removes) stays in its slice's tests.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from backoffice.auth.models import Role, User
from backoffice.core.schemas import MAX_INT4
from backoffice.customers.models import Customer
from backoffice.products.models import Product
from backoffice.tasks.models import Task
from tests.support.database import stored
from tests.support.factories import (
    CUSTOMERS,
    PRODUCTS,
    ROLES,
    TASKS,
    USERS,
    customer_payload,
    product_payload,
    role_payload,
    task_payload,
    user_payload,
)
from tests.support.http import assert_problem

CHANGED = "Changed"
MISSING_ID = 424242
# Not an id: below the range, above PostgreSQL's integer, or not a whole number.
BAD_IDS = ["0", "-1", "abc", str(MAX_INT4 + 1), "1.5", "1e3"]


@dataclass(frozen=True, slots=True)
class Resource:
    name: str  # as in its path parameter: `product` -> `product_id`
    collection: str
    model: type[SQLModel]
    payload: Callable[[], dict[str, Any]]  # a valid, unique POST body
    changed_field: str  # a text field a PATCH sets to CHANGED

    def url(self, resource_id: object) -> str:
        return f"{self.collection}/{resource_id}"

    @property
    def change(self) -> Mapping[str, str]:
        return {self.changed_field: CHANGED}

    def __str__(self) -> str:
        return self.name


RESOURCES = [
    Resource("product", PRODUCTS, Product, product_payload, "name"),
    Resource("customer", CUSTOMERS, Customer, customer_payload, "name"),
    Resource("task", TASKS, Task, task_payload, "title"),
    Resource("user", USERS, User, user_payload, "full_name"),
    Resource("role", ROLES, Role, role_payload, "description"),
]

pytestmark = pytest.mark.parametrize("resource", RESOURCES, ids=str)


async def create(client: AsyncClient, resource: Resource) -> dict[str, Any]:
    response = await client.post(resource.collection, json=resource.payload())
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == '"1"'
    body: dict[str, Any] = response.json()
    return body


async def stored_version(session: AsyncSession, resource: Resource, resource_id: int) -> int:
    row = await stored(session, resource.model, resource_id)
    assert row is not None, f"{resource} {resource_id} is gone"
    version: int = row.version  # type: ignore[attr-defined]  # every versioned model has one
    return version


# --- GET ------------------------------------------------------------------------------------


async def test_get_returns_200_with_etag(client: AsyncClient, resource: Resource) -> None:
    created = await create(client, resource)

    response = await client.get(resource.url(created["id"]))

    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == '"1"'


async def test_get_with_matching_if_none_match_returns_304(
    client: AsyncClient, resource: Resource
) -> None:
    created = await create(client, resource)

    for if_none_match in ['"1"', 'W/"1"', '"9", "1"', "*"]:
        response = await client.get(
            resource.url(created["id"]), headers={"If-None-Match": if_none_match}
        )

        assert response.status_code == 304, if_none_match
        assert response.content == b""
        assert response.headers["etag"] == '"1"'


async def test_get_with_if_none_match_of_an_older_version_returns_200_with_new_etag(
    client: AsyncClient, resource: Resource
) -> None:
    created = await create(client, resource)
    await client.patch(resource.url(created["id"]), json=resource.change)

    response = await client.get(resource.url(created["id"]), headers={"If-None-Match": '"1"'})

    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'
    assert response.json()[resource.changed_field] == CHANGED


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_a_missing_id_returns_404_naming_it(
    client: AsyncClient, resource: Resource, method: str
) -> None:
    body = dict(resource.change) if method == "PATCH" else None

    response = await client.request(method, resource.url(MISSING_ID), json=body)

    problem = assert_problem(response, 404, "not-found")
    assert str(MISSING_ID) in problem["detail"]


async def test_get_missing_with_if_none_match_star_returns_404(
    client: AsyncClient, resource: Resource
) -> None:
    response = await client.get(resource.url(MISSING_ID), headers={"If-None-Match": "*"})

    assert_problem(response, 404, "not-found")


async def test_get_with_the_largest_id_returns_404(client: AsyncClient, resource: Resource) -> None:
    assert_problem(await client.get(resource.url(MAX_INT4)), 404, "not-found")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_an_id_out_of_range_returns_422_naming_the_path_parameter(
    client: AsyncClient, resource: Resource, method: str
) -> None:
    body = dict(resource.change) if method == "PATCH" else None

    for bad_id in BAD_IDS:
        response = await client.request(method, resource.url(bad_id), json=body)

        problem = assert_problem(response, 422, "validation-error")
        fields = {error["field"] for error in problem["errors"]}
        assert f"path.{resource.name}_id" in fields, (bad_id, fields)


# --- PATCH ----------------------------------------------------------------------------------


async def test_patch_with_current_if_match_returns_200_with_the_next_etag(
    client: AsyncClient, resource: Resource
) -> None:
    created = await create(client, resource)

    for version, if_match in enumerate(['"1"', '"7", "2"', "*"], start=2):
        response = await client.patch(
            resource.url(created["id"]),
            json={resource.changed_field: f"{CHANGED} {version}"},
            headers={"If-Match": if_match},
        )

        assert response.status_code == 200, (if_match, response.text)
        assert response.json()[resource.changed_field] == f"{CHANGED} {version}"
        assert response.headers["etag"] == f'"{version}"'


async def test_patch_with_stale_if_match_returns_412_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, resource: Resource
) -> None:
    created = await create(client, resource)

    for if_match in ['"0"', 'W/"1"', '"2"', "1", '"1']:
        response = await client.patch(
            resource.url(created["id"]), json=resource.change, headers={"If-Match": if_match}
        )

        assert_problem(response, 412, "precondition-failed")
    assert await stored_version(session, resource, created["id"]) == 1
    assert (await client.get(resource.url(created["id"]))).json() == created


async def test_patch_with_if_match_of_the_previous_version_returns_412(
    client: AsyncClient, resource: Resource
) -> None:
    created = await create(client, resource)
    url = resource.url(created["id"])
    first = await client.patch(url, json=resource.change, headers={"If-Match": '"1"'})

    second = await client.patch(
        url, json={resource.changed_field: "Lost update"}, headers={"If-Match": '"1"'}
    )

    assert first.status_code == 200
    problem = assert_problem(second, 412, "precondition-failed")
    assert '"2"' in problem["detail"]
    assert (await client.get(url)).json()[resource.changed_field] == CHANGED


async def test_patch_with_an_empty_body_changes_nothing(
    client: AsyncClient, resource: Resource
) -> None:
    created = await create(client, resource)

    response = await client.patch(resource.url(created["id"]), json={})

    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == '"1"'
    assert (await client.get(resource.url(created["id"]))).json() == created


# --- DELETE ---------------------------------------------------------------------------------


async def test_delete_returns_204_then_404(
    client: AsyncClient, session: AsyncSession, resource: Resource
) -> None:
    created = await create(client, resource)
    url = resource.url(created["id"])

    response = await client.delete(url)

    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(url), 404, "not-found")
    assert_problem(await client.patch(url, json=resource.change), 404, "not-found")
    assert_problem(await client.delete(url), 404, "not-found")
    assert await stored(session, resource.model, created["id"]) is None


async def test_delete_with_stale_if_match_returns_412_and_keeps_it(
    client: AsyncClient, session: AsyncSession, resource: Resource
) -> None:
    created = await create(client, resource)
    await client.patch(resource.url(created["id"]), json=resource.change)

    for if_match in ['"1"', 'W/"2"', '"3"']:
        response = await client.delete(resource.url(created["id"]), headers={"If-Match": if_match})

        assert_problem(response, 412, "precondition-failed")
    assert await stored_version(session, resource, created["id"]) == 2


@pytest.mark.parametrize("if_match", ['"1"', '"7", "1"', "*"])
async def test_delete_with_current_if_match_returns_204(
    client: AsyncClient, session: AsyncSession, resource: Resource, if_match: str
) -> None:
    created = await create(client, resource)

    response = await client.delete(resource.url(created["id"]), headers={"If-Match": if_match})

    assert response.status_code == 204
    assert await stored(session, resource.model, created["id"]) is None
