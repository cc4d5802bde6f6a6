"""The audit read API: both lists, every filter checked against the same filter written in
Python over the table's rows, keyset paging in both orders, an object's history, and the
refusals (422, 400, 401, 403)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from backoffice.audit.models import AccessLog, DataChange, DataChangeAction
from backoffice.audit.schemas import AuditEntity, AuditSort
from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.core.logging import REDACTED
from backoffice.core.main import API_PREFIX
from tests.support.factories import CUSTOMERS, customer_payload, product_payload
from tests.support.http import api_client, assert_problem, walk_pages
from tests.support.users import TEST_PASSWORD, create_user, tokens_for

ACCESS_LOGS = f"{API_PREFIX}/audit/access-logs"
DATA_CHANGES = f"{API_PREFIX}/audit/data-changes"
PRODUCTS = f"{API_PREFIX}/products"
USERS = f"{API_PREFIX}/users"
ENDPOINTS = [ACCESS_LOGS, DATA_CHANGES]

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> str:
    return (EPOCH + timedelta(minutes=minutes)).isoformat()


async def walk(
    client: AsyncClient, url: str, params: dict[str, str], limit: int = 11
) -> list[dict[str, Any]]:
    return await walk_pages(client, url, params | {"limit": str(limit)})


async def walk_both_orders(
    client: AsyncClient, url: str, params: dict[str, str], expected: Sequence[int]
) -> None:
    """Walking the pages in either order gives exactly `expected`, each row once, in order."""
    ascending = sorted(expected)
    for sort, ids in ((AuditSort.ID, ascending), (AuditSort.ID_DESC, ascending[::-1])):
        items = await walk(client, url, params | {"sort": sort.value})
        assert [item["id"] for item in items] == ids, (params, sort)


# --- access logs ------------------------------------------------------------------------------

ACCESS_ROWS = 150
_USERS = [None, 1001, 1002, 1003]
_STATUSES = [200, 200, 201, 204, 400, 401, 403, 404, 422, 500, 503]
_METHODS = ["GET", "GET", "POST", "PATCH", "DELETE"]
_PATHS = [
    "/api/v1/products",
    "/api/v1/products/7",
    "/api/v1/customers",
    "/api/v1/customers/3/tasks",
    "/api/v1/pro%duct",  # literal wildcards and escapes: path_prefix must not treat them
    "/api/v1/pro_duct",  # as patterns
    "/api/v1/pro\\duct",
    "/api/v1/auth/sessions",
    "/health",
]
_IPS = [None, "203.0.113.7", "2001:db8::1", "10.0.0.1"]


async def seed_access_logs(session: AsyncSession) -> list[AccessLog]:
    """Users, statuses, methods and paths in cycles of different lengths; times out of id
    order and repeated; three rows per request id."""
    rows = [
        AccessLog(
            occurred_at=EPOCH + timedelta(minutes=(number * 7) % 53, seconds=number % 2),
            request_id=f"req-{number // 3}",
            user_id=_USERS[number % len(_USERS)],
            client_ip=_IPS[number % len(_IPS)],
            user_agent=None if number % 5 == 0 else f"agent/{number % 3}",
            method=_METHODS[number % len(_METHODS)],
            path=_PATHS[number % len(_PATHS)],
            status=_STATUSES[number % len(_STATUSES)],
            duration_ms=number * 0.25,
        )
        for number in range(ACCESS_ROWS)
    ]
    session.add_all(rows)
    await session.commit()
    return rows


async def all_access_logs(session: AsyncSession) -> list[AccessLog]:
    result = await session.execute(select(AccessLog).execution_options(populate_existing=True))
    return list(result.scalars())


def access_log_matches(row: AccessLog, params: dict[str, str]) -> bool:
    """The filters, spelt out in Python."""
    checks: dict[str, Callable[[str], bool]] = {
        "user_id": lambda value: row.user_id == int(value),
        "status": lambda value: row.status == int(value),
        "method": lambda value: row.method == value.upper(),
        "path_prefix": row.path.startswith,
        "request_id": lambda value: row.request_id == value,
        "since": lambda value: row.occurred_at >= datetime.fromisoformat(value),
        "until": lambda value: row.occurred_at < datetime.fromisoformat(value),
    }
    return all(checks[name](value) for name, value in params.items())


ACCESS_LOG_FILTERS: list[dict[str, str]] = [
    {},
    {"user_id": "1001"},
    {"user_id": "999"},
    {"status": "404"},
    {"status": "200"},
    {"method": "POST"},
    {"method": "patch"},
    {"path_prefix": "/api/v1/products"},
    {"path_prefix": "/api/v1/pro%"},
    {"path_prefix": "/api/v1/pro_"},
    {"path_prefix": "/api/v1/pro\\"},
    {"path_prefix": "/"},
    {"path_prefix": "/nothing"},
    {"request_id": "req-7"},
    {"request_id": "req-"},
    {"since": at(20)},
    {"until": at(20)},
    {"since": at(10), "until": at(30)},
    {"since": "2026-01-01T02:10:00+02:00"},  # 00:10 UTC
    {"since": at(10), "until": at(10)},  # empty, and allowed
    {"user_id": "1002", "status": "200", "method": "GET"},
    {"path_prefix": "/api/v1/customers", "since": at(5), "user_id": "1003"},
]


NOTHING_MATCHES = [
    {"user_id": "999"},
    {"path_prefix": "/nothing"},
    {"request_id": "req-"},
    {"since": at(10), "until": at(10)},
]
EVERYTHING_MATCHES: list[dict[str, str]] = [{}, {"path_prefix": "/"}]


@pytest.mark.parametrize("params", ACCESS_LOG_FILTERS, ids=str)
async def test_access_log_filters_match_the_same_filter_in_python(
    client: AsyncClient, session: AsyncSession, params: dict[str, str]
) -> None:
    await seed_access_logs(session)
    rows = await all_access_logs(session)

    expected = [row.id for row in rows if access_log_matches(row, params) and row.id]

    if not params:
        assert len(expected) == ACCESS_ROWS
    await walk_both_orders(client, ACCESS_LOGS, params, expected)


async def test_access_log_filters_do_select_something(session: AsyncSession) -> None:
    """The seed is rich enough that the filters above are neither all trivially empty nor
    all trivially full."""
    rows = await seed_access_logs(session)

    for params in ACCESS_LOG_FILTERS:
        hits = sum(access_log_matches(row, params) for row in rows)
        if params in NOTHING_MATCHES:
            assert hits == 0, params
        elif params in EVERYTHING_MATCHES:
            assert hits == ACCESS_ROWS, params
        else:
            assert 0 < hits < ACCESS_ROWS, params
    assert sum(access_log_matches(row, {"path_prefix": "/api/v1/pro%"}) for row in rows) == 17
    assert sum(access_log_matches(row, {"path_prefix": "/api/v1/pro_"}) for row in rows) == 17


async def test_access_log_items_have_every_column(
    client: AsyncClient, session: AsyncSession
) -> None:
    rows = [
        AccessLog(
            occurred_at=EPOCH,
            request_id="req-shape-1",
            user_id=7,
            api_key_id=3,
            client_ip="203.0.113.7",
            user_agent="curl/8.5",
            method="POST",
            path="/api/v1/products",
            status=201,
            duration_ms=12.5,
        ),
        AccessLog(
            occurred_at=EPOCH + timedelta(seconds=1),
            request_id="req-shape-2",
            user_id=None,
            client_ip="2001:db8::1",
            user_agent=None,
            method="GET",
            path="/api/v1/products/1",
            status=401,
            duration_ms=0.125,
        ),
        AccessLog(
            occurred_at=EPOCH + timedelta(seconds=2),
            request_id="req-shape-3",
            client_ip=None,
            method="GET",
            path="/health",
            status=200,
            duration_ms=1,
        ),
    ]
    session.add_all(rows)
    await session.commit()

    items = (await client.get(ACCESS_LOGS, params={"sort": "id"})).json()["items"]

    assert [
        {**item, "occurred_at": datetime.fromisoformat(item["occurred_at"])} for item in items
    ] == [
        {
            "id": row.id,
            "occurred_at": row.occurred_at,
            "request_id": row.request_id,
            "user_id": row.user_id,
            "api_key_id": row.api_key_id,
            "client_ip": row.client_ip,
            "user_agent": row.user_agent,
            "method": row.method,
            "path": row.path,
            "status": row.status,
            "duration_ms": row.duration_ms,
        }
        for row in rows
    ]


async def test_access_logs_default_to_20_newest_first(
    client: AsyncClient, session: AsyncSession
) -> None:
    await seed_access_logs(
        session,
    )

    page = (await client.get(ACCESS_LOGS)).json()

    ids = [item["id"] for item in page["items"]]
    assert len(ids) == 20
    assert ids == sorted(ids, reverse=True)
    assert page["next_cursor"] is not None


async def test_access_logs_when_there_are_none_is_an_empty_page(client: AsyncClient) -> None:
    response = await client.get(ACCESS_LOGS)

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


# --- data changes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seeded:
    product_ids: list[int]
    customer_ids: list[int]
    request_ids: list[str]


DIRECT_CHANGES = 60
_DIRECT_TYPES = list(AuditEntity)
_DIRECT_ACTORS = [None, 501, 502]
_DIRECT_IDS = ["1", "2", "3", "3/4", "42"]


def _ok(response: Response, status: int) -> Response:
    assert response.status_code == status, response.text
    return response


async def seed_data_changes(client: AsyncClient, session: AsyncSession) -> Seeded:
    """Changes made through the API (the hooks record them, with actor and request id), and
    as many again written directly, with varied times, types, actors and request ids."""
    request_ids: list[str] = []

    async def call(response: Response, status: int) -> dict[str, Any]:
        request_ids.append(_ok(response, status).headers["x-request-id"])
        return response.json() if response.content else {}

    product_ids = [
        (await call(await client.post(PRODUCTS, json=product_payload()), 201))["id"]
        for _ in range(6)
    ]
    customer_ids = [
        (await call(await client.post(CUSTOMERS, json=customer_payload()), 201))["id"]
        for _ in range(4)
    ]
    for number, product_id in enumerate(product_ids):
        await call(await client.patch(f"{PRODUCTS}/{product_id}", json={"price": "12.50"}), 200)
        if number % 2:
            await call(
                await client.patch(f"{PRODUCTS}/{product_id}", json={"name": f"Renamed {number}"}),
                200,
            )
    for customer_id in customer_ids[:2]:
        await call(await client.patch(f"{CUSTOMERS}/{customer_id}", json={"company": "Acme"}), 200)
    await call(await client.delete(f"{PRODUCTS}/{product_ids[0]}"), 204)
    await call(await client.delete(f"{PRODUCTS}/{product_ids[3]}"), 204)
    await call(await client.delete(f"{CUSTOMERS}/{customer_ids[1]}"), 204)

    actions = list(DataChangeAction)
    session.add_all(
        DataChange(
            occurred_at=EPOCH + timedelta(minutes=(number * 7) % 23),
            entity_type=_DIRECT_TYPES[number % len(_DIRECT_TYPES)],
            entity_id=_DIRECT_IDS[number % len(_DIRECT_IDS)],
            action=actions[number % len(actions)],
            old_values=None if number % 3 == 0 else {"n": number},
            new_values=None if number % 3 == 2 else {"n": number + 1},
            actor_user_id=_DIRECT_ACTORS[number % len(_DIRECT_ACTORS)],
            request_id=None if number % 4 == 0 else f"seed-{number % 5}",
        )
        for number in range(DIRECT_CHANGES)
    )
    await session.commit()
    return Seeded(product_ids, customer_ids, request_ids)


async def all_data_changes(session: AsyncSession) -> list[DataChange]:
    result = await session.execute(select(DataChange).execution_options(populate_existing=True))
    return list(result.scalars())


def data_change_matches(row: DataChange, params: dict[str, str]) -> bool:
    """The filters, spelt out in Python."""
    checks: dict[str, Callable[[str], bool]] = {
        "entity_type": lambda value: row.entity_type == value,
        "entity_id": lambda value: row.entity_id == value,
        "action": lambda value: row.action == value,
        "actor_user_id": lambda value: row.actor_user_id == int(value),
        "request_id": lambda value: row.request_id == value,
        "since": lambda value: row.occurred_at >= datetime.fromisoformat(value),
        "until": lambda value: row.occurred_at < datetime.fromisoformat(value),
    }
    return all(checks[name](value) for name, value in params.items())


async def test_data_change_filters_match_the_same_filter_in_python(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    seeded = await seed_data_changes(client, session)
    rows = await all_data_changes(session)
    superuser_id = str(superuser.id)
    product = str(seeded.product_ids[1])
    cases: list[dict[str, str]] = [
        {},
        *({"entity_type": entity.value} for entity in AuditEntity),
        *({"action": action.value} for action in DataChangeAction),
        {"entity_type": "product", "entity_id": product},
        {"entity_type": "customer", "entity_id": str(seeded.customer_ids[1])},
        {"entity_type": "user_role", "entity_id": "3/4"},
        {"entity_id": "3"},
        {"entity_id": "nothing"},
        {"actor_user_id": superuser_id},
        {"actor_user_id": "501"},
        {"actor_user_id": "999"},
        {"request_id": seeded.request_ids[7]},
        {"request_id": "seed-2"},
        {"since": at(10)},
        {"until": at(10)},
        {"since": at(5), "until": at(15)},
        {"since": "2026-01-01T01:05:00+01:00"},
        {"entity_type": "product", "action": "update", "actor_user_id": superuser_id},
        {"entity_type": "product", "entity_id": product, "action": "update"},
        {"action": "delete", "request_id": "seed-0", "since": at(3)},
    ]

    for params in cases:
        expected = [row.id for row in rows if data_change_matches(row, params) and row.id]
        await walk_both_orders(client, DATA_CHANGES, params, expected)

    everything = [row for row in rows if row.id]
    # At least a change per API call and the direct ones (the superuser's creation too).
    assert len(everything) > len(seeded.request_ids) + DIRECT_CHANGES
    for params in cases[1:]:  # and the cases are not trivially all or nothing
        if "nothing" in params.values() or "999" in params.values():
            continue
        hits = sum(data_change_matches(row, params) for row in everything)
        assert 0 < hits < len(everything), params


async def test_data_change_items_have_every_column(
    client: AsyncClient, session: AsyncSession
) -> None:
    change = DataChange(
        occurred_at=EPOCH,
        entity_type="user_role",
        entity_id="3/4",
        action=DataChangeAction.DELETE,
        old_values={"user_id": 3, "role_id": 4},
        new_values=None,
        actor_user_id=77,
        api_key_id=5,
        request_id="req-shape",
    )
    session.add(change)
    await session.commit()

    page = (
        await client.get(DATA_CHANGES, params={"entity_type": "user_role", "entity_id": "3/4"})
    ).json()

    assert page["next_cursor"] is None
    (item,) = page["items"]
    assert item == {
        "id": change.id,
        "occurred_at": item["occurred_at"],
        "entity_type": "user_role",
        "entity_id": "3/4",
        "action": "delete",
        "old_values": {"user_id": 3, "role_id": 4},
        "new_values": None,
        "actor_user_id": 77,
        "api_key_id": 5,
        "request_id": "req-shape",
    }
    assert datetime.fromisoformat(item["occurred_at"]) == EPOCH


async def test_an_objects_history_is_every_change_in_order_with_actor_and_request(
    client: AsyncClient, superuser: User
) -> None:
    created = _ok(await client.post(PRODUCTS, json=product_payload(name="Lamp")), 201)
    product_id = created.json()["id"]
    renamed = _ok(await client.patch(f"{PRODUCTS}/{product_id}", json={"name": "Desk lamp"}), 200)
    repriced = _ok(
        await client.patch(
            f"{PRODUCTS}/{product_id}", json={"price": "19.90", "stock_quantity": 3}
        ),
        200,
    )
    deleted = _ok(await client.delete(f"{PRODUCTS}/{product_id}"), 204)
    # Another object's changes are not part of this history.
    _ok(await client.post(PRODUCTS, json=product_payload()), 201)

    response = await client.get(
        DATA_CHANGES,
        params={"entity_type": "product", "entity_id": str(product_id), "sort": "id"},
    )

    assert response.status_code == 200, response.text
    history = response.json()["items"]
    assert [change["action"] for change in history] == ["insert", "update", "update", "delete"]
    insert, rename, reprice, delete = history
    assert insert["old_values"] is None
    assert insert["new_values"]["id"] == product_id
    assert insert["new_values"]["name"] == "Lamp"
    assert insert["new_values"]["price"] == "10.00"
    assert (rename["old_values"], rename["new_values"]) == (
        {"name": "Lamp"},
        {"name": "Desk lamp"},
    )
    assert (reprice["old_values"], reprice["new_values"]) == (
        {"price": "10.00", "stock_quantity": 5},
        {"price": "19.90", "stock_quantity": 3},
    )
    assert delete["new_values"] is None
    assert delete["old_values"]["name"] == "Desk lamp"
    assert delete["old_values"]["price"] == "19.90"
    for change, call in zip(history, (created, renamed, repriced, deleted), strict=True):
        assert change["entity_type"] == "product"
        assert change["entity_id"] == str(product_id)
        assert change["actor_user_id"] == superuser.id
        assert change["request_id"] == call.headers["x-request-id"]
    ids = [change["id"] for change in history]
    assert ids == sorted(ids)


async def test_a_users_password_hash_never_appears_in_its_changes(client: AsyncClient) -> None:
    password = TEST_PASSWORD * 2
    created = _ok(
        await client.post(
            USERS, json={"email": "grace@example.com", "full_name": "Grace", "password": password}
        ),
        201,
    )
    user_id = created.json()["id"]

    response = await client.get(
        DATA_CHANGES, params={"entity_type": "user", "entity_id": str(user_id)}
    )

    (insert,) = response.json()["items"]
    assert insert["action"] == "insert"
    assert insert["new_values"]["email"] == "grace@example.com"
    assert insert["new_values"]["hashed_password"] == REDACTED == "***"
    every_user_change = await walk(client, DATA_CHANGES, {"entity_type": "user"}, limit=100)
    text = repr(every_user_change)
    assert "argon2" not in text
    assert password not in text
    for change in every_user_change:
        for values in (change["old_values"], change["new_values"]):
            if values is not None and "hashed_password" in values:
                assert values["hashed_password"] == REDACTED


def test_the_entity_types_are_exactly_the_audited_models() -> None:
    audited = {
        mapper.class_.__audit_entity__
        for mapper in SQLModel._sa_registry.mappers
        if hasattr(mapper.class_, "__audit_entity__")
    }
    assert {entity.value for entity in AuditEntity} == audited


def test_the_history_query_is_documented_in_openapi(app: FastAPI) -> None:
    operation = app.openapi()["paths"][DATA_CHANGES]["get"]
    assert "entity_type=product&entity_id=42&sort=id" in operation["description"]
    parameters = {parameter["name"] for parameter in operation["parameters"]}
    assert parameters == {
        "entity_type",
        "entity_id",
        "action",
        "actor_user_id",
        "request_id",
        "since",
        "until",
        "sort",
        "limit",
        "cursor",
    }


# --- refusals ---------------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, str]]] = [
    *((url, {"unknown": "1"}) for url in ENDPOINTS),
    *((url, {"since": "2026-01-01T00:00:00"}) for url in ENDPOINTS),  # no time zone
    *((url, {"until": "2026-01-01"}) for url in ENDPOINTS),
    *((url, {"since": "yesterday"}) for url in ENDPOINTS),
    *((url, {"limit": "0"}) for url in ENDPOINTS),
    *((url, {"limit": "101"}) for url in ENDPOINTS),
    *((url, {"sort": "occurred_at"}) for url in ENDPOINTS),
    *((url, {"request_id": "x" * 129}) for url in ENDPOINTS),
    *((url, {"request_id": ""}) for url in ENDPOINTS),
    (ACCESS_LOGS, {"status": "99"}),
    (ACCESS_LOGS, {"status": "600"}),
    (ACCESS_LOGS, {"status": "ok"}),
    (ACCESS_LOGS, {"user_id": "0"}),
    (ACCESS_LOGS, {"user_id": str(2**31)}),
    (ACCESS_LOGS, {"method": "X" * 17}),
    (ACCESS_LOGS, {"path_prefix": ""}),
    (ACCESS_LOGS, {"entity_type": "product"}),  # the other list's filter
    (DATA_CHANGES, {"entity_type": "widget"}),
    (DATA_CHANGES, {"entity_type": "products"}),
    (DATA_CHANGES, {"action": "upsert"}),
    (DATA_CHANGES, {"actor_user_id": "-1"}),
    (DATA_CHANGES, {"user_id": "1"}),  # the actor is `actor_user_id` here
    (DATA_CHANGES, {"entity_id": "x" * 129}),
    (DATA_CHANGES, {"status": "200"}),
]


@pytest.mark.parametrize(("url", "params"), INVALID, ids=str)
async def test_invalid_queries_are_422(
    client: AsyncClient, url: str, params: dict[str, str]
) -> None:
    response = await client.get(url, params=params)

    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("url", ENDPOINTS)
async def test_since_later_than_until_is_an_empty_window(
    client: AsyncClient, session: AsyncSession, url: str
) -> None:
    await seed_access_logs(session)

    response = await client.get(url, params={"since": at(10), "until": at(9)})

    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("instant", ["0.5", "1700000000", "2026-12-02", "2026-12-02T01:00+01:00"])
async def test_an_instant_is_an_rfc_3339_date_time(
    client: AsyncClient, url: str, instant: str
) -> None:
    response = await client.get(url, params={"until": instant})

    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("url", ENDPOINTS)
async def test_a_forged_or_foreign_cursor_is_400(
    client: AsyncClient, session: AsyncSession, url: str
) -> None:
    await seed_access_logs(session)
    if url == DATA_CHANGES:
        await seed_data_changes(client, session)
    first = (await client.get(url, params={"limit": "2", "sort": "id"})).json()
    cursor = first["next_cursor"]
    assert cursor is not None
    forged = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")

    for params in (
        {"cursor": "garbage"},
        {"cursor": "!!!"},
        {"cursor": forged, "sort": "id"},
        {"cursor": cursor, "sort": "-id"},  # another sort's cursor
    ):
        response = await client.get(url, params=params)
        assert_problem(response, 400, "invalid-cursor")


@pytest.mark.parametrize("url", ENDPOINTS)
async def test_anonymous_callers_are_401(anonymous_client: AsyncClient, url: str) -> None:
    response = await anonymous_client.get(url)

    assert_problem(response, 401)


# The default roles: only admin grants the audit module (a superuser has everything).
ROLE_OUTCOMES = [("manager", 403), ("viewer", 403), ("admin", 200)]


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("outcome", ROLE_OUTCOMES, ids=str)
async def test_only_roles_granting_the_audit_module_may_read(
    app: FastAPI, session: AsyncSession, settings: Settings, url: str, outcome: tuple[str, int]
) -> None:
    role, status = outcome
    user = await create_user(session, roles=[role])
    pair = await tokens_for(session, settings, user)
    async with api_client(app, pair.access_token) as caller:
        response = await caller.get(url)

    if status == 200:
        assert response.status_code == 200, response.text
    else:
        problem = assert_problem(response, 403, "forbidden")
        assert "audit:read" in problem["detail"]
