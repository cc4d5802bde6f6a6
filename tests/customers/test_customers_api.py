"""The customers API: creating, changing and deleting a customer, and the rule that a customer
with open tasks cannot be deleted. ETag, If-Match, 404 and id range:
tests/core/test_versioned_resources_api.py."""

import asyncio
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.customers.models import Customer
from tests.support.database import stored
from tests.support.factories import (
    CUSTOMERS,
    TASKS,
    CreateCustomer,
    CreateTask,
    SetStatus,
    customer_payload,
)
from tests.support.http import assert_problem


async def stored_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Customer)) or 0)


# --- create ---------------------------------------------------------------------------------


async def test_create_customer_returns_201_with_location_etag_and_body(
    client: AsyncClient, session: AsyncSession
) -> None:
    payload = customer_payload(
        email="grace@navy.example",
        phone="+14155550123",
        company="Navy Labs",
        status="active",
        notes="Prefers email.",
    )

    response = await client.post(CUSTOMERS, json=payload)

    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"{CUSTOMERS}/{body['id']}"
    assert response.headers["etag"] == '"1"'
    assert body | payload == body  # every field sent comes back unchanged
    assert body["version"] == 1
    customer = await stored(session, Customer, body["id"])
    assert customer is not None
    assert (customer.email, customer.phone, customer.status) == (
        "grace@navy.example",
        "+14155550123",
        "active",
    )


async def test_create_customer_with_only_required_fields_defaults_to_lead(
    client: AsyncClient,
) -> None:
    response = await client.post(CUSTOMERS, json={"name": "Ada", "email": "ada@example.com"})

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "lead"
    assert (body["phone"], body["company"], body["notes"]) == (None, None, None)


async def test_create_customer_strips_whitespace_around_name_and_company(
    client: AsyncClient,
) -> None:
    response = await client.post(
        CUSTOMERS, json=customer_payload(name="  Grace Hopper ", company=" Navy Labs  ")
    )

    assert response.status_code == 201
    assert (response.json()["name"], response.json()["company"]) == ("Grace Hopper", "Navy Labs")


@pytest.mark.parametrize(
    ("phone", "normalised"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("+33.1.23.45.67.89", "+33123456789"),
        ("+49-151-2345-6789", "+4915123456789"),
        ("+4915123456789", "+4915123456789"),
        ("+1234567", "+1234567"),  # 7 digits, the fewest
        ("+123456789012345", "+123456789012345"),  # 15 digits, the most
    ],
)
async def test_create_customer_stores_phone_in_e164(
    client: AsyncClient, session: AsyncSession, phone: str, normalised: str
) -> None:
    response = await client.post(CUSTOMERS, json=customer_payload(phone=phone))

    assert response.status_code == 201, response.text
    assert response.json()["phone"] == normalised
    customer = await stored(session, Customer, response.json()["id"])
    assert customer is not None
    assert customer.phone == normalised


INVALID_PHONES = [
    "4155550123",  # no "+"
    "0044 20 7946 0958",  # international prefix instead of "+"
    "+0 415 555 0123",  # country codes never start with 0
    "+123456",  # 6 digits
    "+1234567890123456",  # 16 digits
    "+",
    "",
    "++14155550123",
    "+1 415 555 0123 ext 7",
    "+1 (415) 555-ABCD",
    "+1/415/555/0123",
    "+1 415 555 0123 +",
    # E.164 digits are ASCII: Arabic-Indic and full-width digits are not phone numbers.
    "+1\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0662\u0663",
    "+1\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff12\uff13",
]


@pytest.mark.parametrize("phone", INVALID_PHONES)
async def test_create_customer_with_invalid_phone_returns_422_and_stores_nothing(
    client: AsyncClient, session: AsyncSession, phone: str
) -> None:
    response = await client.post(CUSTOMERS, json=customer_payload(phone=phone))

    problem = assert_problem(response, 422, "validation-error")
    assert "body.phone" in {error["field"] for error in problem["errors"]}
    assert await stored_count(session) == 0


@pytest.mark.parametrize(
    "duplicate", ["ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.com", "aDa@example.COM"]
)
async def test_create_customer_with_duplicate_email_in_any_case_returns_409(
    client: AsyncClient, session: AsyncSession, create_customer: CreateCustomer, duplicate: str
) -> None:
    await create_customer(email="ada@example.com")

    response = await client.post(CUSTOMERS, json=customer_payload(email=duplicate))

    problem = assert_problem(response, 409, "conflict")
    assert "email" in problem["detail"]
    assert await stored_count(session) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "body.email"),
        ({"email": "ada@"}, "body.email"),
        ({"email": "@example.com"}, "body.email"),
        ({"email": "ada example@example.com"}, "body.email"),
        ({"email": "ada@@example.com"}, "body.email"),
        ({"email": ""}, "body.email"),
        ({"email": f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.com"}, "body.email"),
        ({"email": 123}, "body.email"),
        ({"name": ""}, "body.name"),
        ({"name": "   "}, "body.name"),
        ({"name": "x" * 201}, "body.name"),
        ({"name": 123}, "body.name"),
        ({"name": True}, "body.name"),
        ({"name": ["Ada"]}, "body.name"),
        ({"phone": 14155550123}, "body.phone"),
        ({"company": ""}, "body.company"),
        ({"company": "x" * 201}, "body.company"),
        ({"company": 7}, "body.company"),
        ({"notes": "x" * 2001}, "body.notes"),
        ({"notes": 1}, "body.notes"),
        ({"status": "vip"}, "body.status"),
        ({"status": "Active"}, "body.status"),
        ({"status": ""}, "body.status"),
        ({"status": 1}, "body.status"),
        ({"status": None}, "body.status"),
        ({"id": 99}, "body.id"),
        ({"version": 7}, "body.version"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "body.created_at"),
        ({"owner": "me"}, "body.owner"),
    ],
)
async def test_create_customer_with_invalid_field_returns_422_naming_it(
    client: AsyncClient, session: AsyncSession, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post(CUSTOMERS, json=customer_payload(**overrides))

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    assert await stored_count(session) == 0


async def test_create_customer_with_notes_at_the_limit_returns_201(client: AsyncClient) -> None:
    response = await client.post(CUSTOMERS, json=customer_payload(notes="x" * 2000))

    assert response.status_code == 201
    assert len(response.json()["notes"]) == 2000


async def test_create_customer_without_required_fields_lists_each_one(
    client: AsyncClient,
) -> None:
    response = await client.post(CUSTOMERS, json={})

    problem = assert_problem(response, 422, "validation-error")
    assert {error["field"] for error in problem["errors"]} == {"body.name", "body.email"}


@pytest.mark.parametrize("content", [b'{"name": ', b"[]", b'"Ada"', b"null"])
async def test_create_customer_with_malformed_or_non_object_json_returns_422(
    client: AsyncClient, content: bytes
) -> None:
    response = await client.post(
        CUSTOMERS, content=content, headers={"content-type": "application/json"}
    )

    assert_problem(response, 422)


async def test_create_customer_with_huge_body_returns_413(
    client: AsyncClient, session: AsyncSession
) -> None:
    response = await client.post(CUSTOMERS, json=customer_payload(notes="x" * 2_000_000))

    assert_problem(response, 413)
    assert await stored_count(session) == 0


async def test_create_customer_with_huge_chunked_body_returns_413(client: AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65_536

    response = await client.post(
        CUSTOMERS, content=chunks(), headers={"content-type": "application/json"}
    )

    assert_problem(response, 413)


# --- update ---------------------------------------------------------------------------------


async def test_patch_customer_changes_only_the_fields_sent_and_bumps_version(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    created = await create_customer(phone="+14155550123", company="Acme", notes="before")

    response = await client.patch(
        f"{CUSTOMERS}/{created['id']}", json={"name": "Renamed", "status": "inactive"}
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["status"], body["version"]) == ("Renamed", "inactive", 2)
    unchanged = ("email", "phone", "company", "notes", "created_at")
    assert {field: body[field] for field in unchanged} == {
        field: created[field] for field in unchanged
    }
    assert body["updated_at"] >= created["updated_at"]
    assert response.headers["etag"] == '"2"'
    assert (await client.get(f"{CUSTOMERS}/{created['id']}")).json() == body


async def test_patch_customer_every_field_at_once(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    created = await create_customer()
    changes = {
        "name": "New name",
        "email": "new@example.com",
        "phone": "+442079460958",
        "company": "New Co",
        "status": "active",
        "notes": "n",
    }

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json=changes)

    assert response.status_code == 200
    assert response.json() | changes == response.json()
    assert response.json()["version"] == 2


@pytest.mark.parametrize(
    ("phone", "normalised"),
    [("+44 (0)20-7946.0958", "+4402079460958"), ("+1 415 555 0123", "+14155550123")],
)
async def test_patch_customer_phone_is_normalised(
    client: AsyncClient, create_customer: CreateCustomer, phone: str, normalised: str
) -> None:
    created = await create_customer()

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json={"phone": phone})

    assert response.status_code == 200
    assert response.json()["phone"] == normalised


@pytest.mark.parametrize("field", ["phone", "company", "notes"])
async def test_patch_customer_optional_field_to_null_clears_it(
    client: AsyncClient, create_customer: CreateCustomer, field: str
) -> None:
    created = await create_customer(phone="+14155550123", company="Acme", notes="to clear")

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json={field: None})

    assert response.status_code == 200
    body = response.json()
    assert body[field] is None
    assert body["version"] == 2
    others = {"phone", "company", "notes"} - {field}
    assert {name: body[name] for name in others} == {name: created[name] for name in others}


@pytest.mark.parametrize("field", ["name", "email", "status"])
async def test_patch_customer_required_field_to_null_returns_422_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_customer: CreateCustomer, field: str
) -> None:
    created = await create_customer()

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json={field: None})

    problem = assert_problem(response, 422, "validation-error")
    assert f"body.{field}" in {error["field"] for error in problem["errors"]}
    customer = await stored(session, Customer, created["id"])
    assert customer is not None
    assert (customer.name, customer.email, customer.status, customer.version) == (
        created["name"],
        created["email"],
        "lead",
        1,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "body.email"),
        ({"email": "ada@"}, "body.email"),
        ({"email": 5}, "body.email"),
        ({"name": ""}, "body.name"),
        ({"name": "  "}, "body.name"),
        ({"name": "x" * 201}, "body.name"),
        ({"name": 123}, "body.name"),
        ({"company": ""}, "body.company"),
        ({"company": False}, "body.company"),
        ({"notes": "x" * 2001}, "body.notes"),
        ({"notes": ["a"]}, "body.notes"),
        ({"status": "vip"}, "body.status"),
        ({"status": "LEAD"}, "body.status"),
        ({"status": 2}, "body.status"),
        ({"phone": "555-0123"}, "body.phone"),
        ({"phone": "+0123456789"}, "body.phone"),
        ({"phone": 14155550123}, "body.phone"),
        ({"version": 5}, "body.version"),
        ({"id": 3}, "body.id"),
        ({"updated_at": "2020-01-01T00:00:00Z"}, "body.updated_at"),
        ({"name": "Fine", "nickname": "x"}, "body.nickname"),
    ],
)
async def test_patch_customer_with_invalid_body_returns_422_and_changes_nothing(
    client: AsyncClient,
    session: AsyncSession,
    create_customer: CreateCustomer,
    body: dict[str, Any],
    field: str,
) -> None:
    created = await create_customer()

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json=body)

    problem = assert_problem(response, 422, "validation-error")
    assert field in {error["field"] for error in problem["errors"]}
    customer = await stored(session, Customer, created["id"])
    assert customer is not None
    assert (customer.name, customer.version) == (created["name"], 1)


@pytest.mark.parametrize("phone", INVALID_PHONES)
async def test_patch_customer_with_invalid_phone_returns_422(
    client: AsyncClient, create_customer: CreateCustomer, phone: str
) -> None:
    created = await create_customer(phone="+14155550123")

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json={"phone": phone})

    problem = assert_problem(response, 422, "validation-error")
    assert "body.phone" in {error["field"] for error in problem["errors"]}
    assert (await client.get(f"{CUSTOMERS}/{created['id']}")).json()["phone"] == "+14155550123"


@pytest.mark.parametrize("taken", ["taken@example.com", "TAKEN@EXAMPLE.COM", "Taken@example.com"])
async def test_patch_customer_to_a_taken_email_in_any_case_returns_409_and_changes_nothing(
    client: AsyncClient, session: AsyncSession, create_customer: CreateCustomer, taken: str
) -> None:
    await create_customer(email="taken@example.com")
    other = await create_customer(email="other@example.com")

    response = await client.patch(f"{CUSTOMERS}/{other['id']}", json={"email": taken})

    problem = assert_problem(response, 409, "conflict")
    assert "email" in problem["detail"]
    customer = await stored(session, Customer, other["id"])
    assert customer is not None
    assert (customer.email, customer.version) == ("other@example.com", 1)


async def test_patch_customer_email_to_its_own_address_in_another_case_returns_200(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    created = await create_customer(email="ada@example.com")

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json={"email": "Ada@example.com"})

    assert response.status_code == 200
    assert response.json()["email"] == "Ada@example.com"


async def test_patch_customer_with_huge_body_returns_413(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    created = await create_customer()

    response = await client.patch(f"{CUSTOMERS}/{created['id']}", json={"notes": "x" * 2_000_000})

    assert_problem(response, 413)
    assert (await client.get(f"{CUSTOMERS}/{created['id']}")).json() == created


# --- delete ---------------------------------------------------------------------------------


async def test_delete_customer_frees_its_email(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    created = await create_customer(email="reuse@example.com")
    await client.delete(f"{CUSTOMERS}/{created['id']}")

    response = await client.post(CUSTOMERS, json=customer_payload(email="REUSE@example.com"))

    assert response.status_code == 201


# Each open status, reached from `todo` through legal transitions only.
OPEN_PATHS = {
    "todo": [],
    "in_progress": ["in_progress"],
    "blocked": ["blocked"],
    "blocked_after_work": ["in_progress", "blocked"],
    "back_in_progress": ["in_progress", "blocked", "in_progress"],
    "reopened": ["in_progress", "done", "in_progress"],
}


@pytest.mark.parametrize("path", OPEN_PATHS.values(), ids=OPEN_PATHS.keys())
async def test_delete_customer_with_open_tasks_returns_409_and_deletes_nothing(
    client: AsyncClient,
    create_customer: CreateCustomer,
    create_task: CreateTask,
    set_status: SetStatus,
    path: list[str],
) -> None:
    customer = await create_customer()
    tasks = [await create_task(customer_id=customer["id"]) for _ in range(2)]
    for status in path:
        tasks = [await set_status(task, status) for task in tasks]
    closed = await set_status(await create_task(customer_id=customer["id"]), "cancelled")
    tasks.append(closed)

    response = await client.delete(f"{CUSTOMERS}/{customer['id']}")

    problem = assert_problem(response, 409, "conflict")
    assert "2 open task" in problem["detail"]
    assert "todo, in_progress or blocked" in problem["detail"]
    assert (await client.get(f"{CUSTOMERS}/{customer['id']}")).json() == customer
    for task in tasks:
        now = (await client.get(f"{TASKS}/{task['id']}")).json()
        assert (now["customer_id"], now["version"]) == (customer["id"], task["version"])
        assert now["customer"]["id"] == customer["id"]


async def test_delete_customer_with_open_tasks_and_current_if_match_still_returns_409(
    client: AsyncClient, create_customer: CreateCustomer, create_task: CreateTask
) -> None:
    customer = await create_customer()
    await create_task(customer_id=customer["id"])

    response = await client.delete(f"{CUSTOMERS}/{customer['id']}", headers={"If-Match": '"1"'})

    problem = assert_problem(response, 409, "conflict")
    assert "1 open task" in problem["detail"]
    assert (await client.get(f"{CUSTOMERS}/{customer['id']}")).status_code == 200


async def test_delete_customer_with_only_closed_tasks_returns_204_and_unlinks_them(
    client: AsyncClient,
    create_customer: CreateCustomer,
    create_task: CreateTask,
    set_status: SetStatus,
) -> None:
    customer = await create_customer(company="Acme")
    done = await set_status(
        await set_status(await create_task(customer_id=customer["id"]), "in_progress"), "done"
    )
    cancelled = await set_status(await create_task(customer_id=customer["id"]), "cancelled")
    cancelled_from_blocked = await set_status(
        await set_status(await create_task(customer_id=customer["id"]), "blocked"), "cancelled"
    )
    closed = [done, cancelled, cancelled_from_blocked]
    other_customer = await create_customer()
    unrelated = await create_task(customer_id=other_customer["id"])

    response = await client.delete(f"{CUSTOMERS}/{customer['id']}")

    assert response.status_code == 204
    assert_problem(await client.get(f"{CUSTOMERS}/{customer['id']}"), 404)
    for task in closed:
        after = await client.get(f"{TASKS}/{task['id']}")
        assert after.status_code == 200
        now = after.json()
        assert now["customer_id"] is None
        assert now["customer"] is None
        assert now["version"] == task["version"] + 1
        assert after.headers["etag"] == f'"{task["version"] + 1}"'
        kept = ("title", "status", "completed_at", "created_at", "priority")
        assert {field: now[field] for field in kept} == {field: task[field] for field in kept}
    assert (await client.get(f"{TASKS}/{unrelated['id']}")).json() == unrelated


async def test_delete_customer_whose_tasks_belong_to_others_returns_204(
    client: AsyncClient, create_customer: CreateCustomer, create_task: CreateTask
) -> None:
    customer = await create_customer()
    other = await create_customer()
    task = await create_task(customer_id=other["id"])

    response = await client.delete(f"{CUSTOMERS}/{customer['id']}")

    assert response.status_code == 204
    assert (await client.get(f"{TASKS}/{task['id']}")).json() == task


# --- concurrency (real commits) -------------------------------------------------------------


@pytest.mark.committed
async def test_concurrent_patches_with_the_same_if_match_let_exactly_one_win(
    committed_client: AsyncClient,
) -> None:
    created = (await committed_client.post(CUSTOMERS, json=customer_payload())).json()
    url = f"{CUSTOMERS}/{created['id']}"

    responses = await asyncio.gather(
        *(
            committed_client.patch(
                url,
                json={"name": f"writer {n}", "notes": f"note {n}"},
                headers={"If-Match": '"1"'},
            )
            for n in range(8)
        )
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [412] * 7
    for response in responses:
        if response.status_code == 412:
            assert_problem(response, 412, "precondition-failed")
    winner = next(response for response in responses if response.status_code == 200)
    final = (await committed_client.get(url)).json()
    assert (final["name"], final["notes"]) == (winner.json()["name"], winner.json()["notes"])
    assert final["version"] == 2
    assert final == winner.json()
