"""Every INSERT, UPDATE and DELETE of an audited model leaves a data_changes row in the same
transaction: through the unit of work, through our own bulk statements, through cascades."""

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from pydantic_core import to_jsonable_python
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from backoffice.audit.changes import (
    SWITCH_SETTING,
    AuditedSession,
    audited_tables,
    session_class,
)
from backoffice.audit.models import DataChange
from backoffice.audit.schemas import AuditEntity
from backoffice.auth.models import User
from backoffice.core.config import Settings
from backoffice.core.database import Database
from backoffice.core.logging import REDACTED
from backoffice.core.main import create_app
from backoffice.products.models import Product
from tests.support.audit import changes_of, summary
from tests.support.database import rolled_back_connection
from tests.support.factories import PRODUCTS, CreateProduct, product_payload
from tests.support.users import TEST_PASSWORD, create_user


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(DataChange)) or 0)


# --- products: every action, actor and request id ------------------------------------------


async def test_product_insert_update_delete_are_recorded_with_actor_and_request_id(
    client: AsyncClient, session: AsyncSession, superuser: User
) -> None:
    created = await client.post(PRODUCTS, json=product_payload(name="Lamp", price="10.00"))
    product_id = created.json()["id"]
    patched = await client.patch(f"{PRODUCTS}/{product_id}", json={"name": "Desk lamp"})
    deleted = await client.delete(f"{PRODUCTS}/{product_id}")

    changes = await changes_of(session, "product", product_id)

    assert [change.action for change in changes] == ["insert", "update", "delete"]
    insert, update, delete = changes
    assert insert.old_values is None
    assert insert.new_values is not None
    assert insert.new_values["name"] == "Lamp"
    assert insert.new_values["price"] == "10.00"
    assert insert.new_values["id"] == product_id
    # Only what the request changed (the version column is the ORM's bookkeeping).
    assert update.old_values == {"name": "Lamp"}
    assert update.new_values == {"name": "Desk lamp"}
    assert delete.old_values is not None
    assert delete.old_values["name"] == "Desk lamp"
    assert delete.new_values is None
    for change, response in zip(changes, (created, patched, deleted), strict=True):
        assert change.actor_user_id == superuser.id
        assert change.request_id == response.headers["x-request-id"]


async def test_stock_adjustment_bulk_update_is_recorded_with_old_and_new_values(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = (await client.post(PRODUCTS, json=product_payload(stock_quantity=5))).json()

    await client.post(f"{PRODUCTS}/{created['id']}/stock-adjustments", json={"delta": -2})

    last = (await changes_of(session, "product", created["id"]))[-1]
    assert last.action == "update"
    assert last.old_values is not None
    assert last.new_values is not None
    # Only the business change: the version and updated_at bookkeeping is left out, as it is
    # for updates through the unit of work.
    assert last.old_values == {"stock_quantity": 5}
    assert last.new_values == {"stock_quantity": 3}


async def test_a_refused_stock_adjustment_records_nothing(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = (await client.post(PRODUCTS, json=product_payload(stock_quantity=1))).json()

    response = await client.post(
        f"{PRODUCTS}/{created['id']}/stock-adjustments", json={"delta": -5}
    )

    assert response.status_code == 409
    assert [c.action for c in await changes_of(session, "product", created["id"])] == ["insert"]


async def test_a_patch_that_changes_nothing_records_nothing(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = (await client.post(PRODUCTS, json=product_payload(name="Same"))).json()

    await client.patch(f"{PRODUCTS}/{created['id']}", json={})

    assert len(await changes_of(session, "product", created["id"])) == 1


async def test_the_actor_is_set_once_per_write_transaction_and_never_on_reads(
    client: AsyncClient, create_product: CreateProduct, statements: list[str]
) -> None:
    created = await create_product()
    statements.clear()

    patched = await client.patch(f"{PRODUCTS}/{created['id']}", json={"name": "Renamed"})
    writes = [statement for statement in statements if "set_config" in statement]
    statements.clear()
    read = await client.get(f"{PRODUCTS}/{created['id']}")

    assert (patched.status_code, read.status_code) == (200, 200)
    assert len(writes) == 1, statements
    assert not [statement for statement in statements if "set_config" in statement]


# --- rollback -------------------------------------------------------------------------------


async def test_a_failed_request_rolls_its_audit_rows_back_with_its_changes(
    client: AsyncClient, session: AsyncSession
) -> None:
    await client.post(PRODUCTS, json=product_payload(sku="TAKEN-1"))
    other = (await client.post(PRODUCTS, json=product_payload(sku="FREE-1"))).json()
    before = await _count(session)

    # The UPDATE is flushed (and would be recorded), then the unique index refuses it.
    response = await client.patch(f"{PRODUCTS}/{other['id']}", json={"sku": "taken-1"})

    assert response.status_code == 409
    assert await _count(session) == before


async def test_a_rolled_back_transaction_leaves_no_audit_row(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    async with sessionmaker() as writer:
        writer.add(Product(sku="GONE-1", name="Gone", price=Decimal(1)))
        await writer.flush()
        assert len(await changes_of(writer, "product")) == 1  # recorded, in the transaction
        await writer.rollback()

    assert await changes_of(session, "product") == []


async def test_a_transaction_with_the_audit_switched_off_records_nothing(
    connection: AsyncConnection, session: AsyncSession
) -> None:
    await connection.execute(text(f"SET LOCAL {SWITCH_SETTING} = 'off'"))

    session.add(Product(sku="QUIET-1", name="Quiet", price=Decimal(1)))
    await session.flush()

    assert await changes_of(session, "product") == []


@pytest.mark.parametrize("enabled", [True, False])
async def test_audit_data_enabled_reaches_every_connection_the_app_opens(
    settings: Settings, app_database_url: str, enabled: bool
) -> None:
    """AUDIT_DATA_ENABLED=false: the app's connections carry the switch, and its writes are
    not recorded (rolled back: nothing is left behind)."""
    switched = settings.model_copy(update={"audit_data_enabled": enabled})
    database = Database.connect(app_database_url, switched, session_class=session_class(switched))
    try:
        async with database.sessions() as writer:
            writer.add(Product(sku="SWITCH-1", name="Switch", price=Decimal(1)))
            await writer.flush()
            recorded = await changes_of(writer, "product")
            await writer.rollback()
    finally:
        await database.dispose()

    assert len(recorded) == (1 if enabled else 0)


# --- customers and tasks --------------------------------------------------------------------


async def test_customer_and_task_changes_are_recorded_including_unlinking_on_delete(
    client: AsyncClient, session: AsyncSession
) -> None:
    customer = (
        await client.post("/api/v1/customers", json={"name": "Ada", "email": "ada@example.com"})
    ).json()
    task = (
        await client.post("/api/v1/tasks", json={"title": "Call", "customer_id": customer["id"]})
    ).json()
    await client.patch(f"/api/v1/tasks/{task['id']}", json={"status": "cancelled"})
    await client.patch(f"/api/v1/customers/{customer['id']}", json={"status": "active"})

    response = await client.delete(f"/api/v1/customers/{customer['id']}")

    assert response.status_code == 204
    customer_changes = await changes_of(session, "customer", customer["id"])
    assert [c.action for c in customer_changes] == ["insert", "update", "delete"]
    assert customer_changes[1].old_values == {"status": "lead"}
    assert customer_changes[1].new_values == {"status": "active"}
    task_changes = await changes_of(session, "task", task["id"])
    assert [c.action for c in task_changes] == ["insert", "update", "update"]
    assert task_changes[1].new_values is not None
    assert task_changes[1].new_values["status"] == "cancelled"
    unlinked = task_changes[2]
    assert unlinked.old_values is not None
    assert unlinked.new_values is not None
    assert (unlinked.old_values["customer_id"], unlinked.new_values["customer_id"]) == (
        customer["id"],
        None,
    )


async def test_task_delete_is_recorded_with_its_last_values(
    client: AsyncClient, session: AsyncSession
) -> None:
    task = (await client.post("/api/v1/tasks", json={"title": "Temporary"})).json()

    await client.delete(f"/api/v1/tasks/{task['id']}")

    delete = (await changes_of(session, "task", task["id"]))[-1]
    assert summary(delete)[0] == "delete"
    assert delete.old_values is not None
    assert delete.old_values["title"] == "Temporary"


# --- users, roles, grants, user-role links, and masking -------------------------------------


async def test_user_changes_never_record_the_password_hash(
    client: AsyncClient, session: AsyncSession
) -> None:
    created = await client.post(
        "/api/v1/users",
        json={"email": "grace@example.com", "full_name": "Grace", "password": TEST_PASSWORD * 2},
    )
    user_id = created.json()["id"]
    await client.patch(f"/api/v1/users/{user_id}", json={"full_name": "Grace H."})
    await client.delete(f"/api/v1/users/{user_id}")

    changes = await changes_of(session, "user", user_id)

    assert [c.action for c in changes] == ["insert", "update", "delete"]
    assert changes[0].new_values is not None
    assert changes[0].new_values["hashed_password"] == REDACTED
    assert changes[2].old_values is not None
    assert changes[2].old_values["hashed_password"] == REDACTED
    rows = await session.execute(
        text("SELECT old_values::text, new_values::text FROM data_changes")
    )
    assert not any("argon2" in (value or "") for row in rows for value in row)


async def test_a_password_change_is_recorded_masked(
    session: AsyncSession, settings: Any, app: Any
) -> None:
    from tests.support.http import api_client
    from tests.support.users import tokens_for

    user = await create_user(session)
    pair = await tokens_for(session, settings, user)
    async with api_client(app, pair.access_token) as own:
        response = await own.put(
            "/api/v1/users/me/password",
            json={"current_password": TEST_PASSWORD, "new_password": "another long passphrase"},
        )

    assert response.status_code == 200, response.text
    changes = await changes_of(session, "user", user.id)
    updates = [summary(change) for change in changes if change.action == "update"]
    assert ("update", {"hashed_password": REDACTED}, {"hashed_password": REDACTED}) in updates
    assert ("update", {"token_version": 1}, {"token_version": 2}) in updates  # sessions ended
    assert all(change.actor_user_id == user.id for change in changes[1:])


async def test_a_failed_login_counter_update_is_recorded(
    anonymous_client: AsyncClient, session: AsyncSession
) -> None:
    user = await create_user(session, email="typo@example.com")

    await anonymous_client.post(
        "/api/v1/auth/sessions", data={"username": "typo@example.com", "password": "wrong!"}
    )

    update = (await changes_of(session, "user", user.id))[-1]
    assert update.action == "update"
    assert update.old_values == {"failed_login_count": 0}
    assert update.new_values == {"failed_login_count": 1}
    assert update.actor_user_id is None  # nobody is signed in on a login


async def test_roles_grants_and_user_role_links_are_recorded_even_when_cascaded(
    client: AsyncClient, session: AsyncSession
) -> None:
    role = (
        await client.post(
            "/api/v1/roles",
            json={"name": "auditors", "grants": [{"module": "audit", "actions": ["read"]}]},
        )
    ).json()
    renamed = await client.patch(f"/api/v1/roles/{role['id']}", json={"name": "auditing"})
    assert renamed.status_code == 200, renamed.text
    user = await create_user(session)
    assigned = await client.put(f"/api/v1/users/{user.id}/roles", json={"role_ids": [role["id"]]})
    assert assigned.status_code == 200, assigned.text

    deleted = await client.delete(f"/api/v1/roles/{role['id']}")

    assert deleted.status_code == 204, deleted.text
    role_changes = await changes_of(session, "role", role["id"])
    assert [summary(c)[0] for c in role_changes] == ["insert", "update", "delete"]
    assert summary(role_changes[1])[1:] == ({"name": "auditors"}, {"name": "auditing"})
    grant_changes = await changes_of(session, "role_grant", f"{role['id']}/audit")
    assert [c.action for c in grant_changes] == ["insert", "delete"]
    assert grant_changes[0].new_values == {
        "role_id": role["id"],
        "module": "audit",
        "actions": ["read"],
    }
    link_changes = await changes_of(session, "user_role", f"{user.id}/{role['id']}")
    assert [c.action for c in link_changes] == ["insert", "delete"]  # the cascade, recorded


# pg_trigger.tgtype bits: a row trigger (1) on INSERT (4), DELETE (8) and UPDATE (16), and not
# BEFORE (2): after the change, so it sees its final values and every cascade.
_AFTER_EACH_ROW_WRITE = 1 | 4 | 8 | 16


async def test_every_audited_model_and_no_other_table_has_the_trigger_of_its_policy(
    session: AsyncSession,
) -> None:
    """Generated from the model registry: a model with `__audit_entity__` whose table lacks
    the trigger (or has it with other arguments) would change unrecorded."""
    rows = await session.execute(
        text("""
            SELECT rel.relname, trg.tgname, trg.tgtype,
                   encode(trg.tgargs, 'escape') AS arguments
            FROM pg_trigger trg JOIN pg_class rel ON rel.oid = trg.tgrelid
            WHERE trg.tgfoid = 'audit_data_change'::regproc
        """)
    )
    found = {
        (row.relname, row.tgname, row.tgtype, tuple(row.arguments.split("\\000")[:-1]))
        for row in rows
    }

    expected = {
        (policy.table, policy.trigger_name, _AFTER_EACH_ROW_WRITE, policy.trigger_arguments())
        for policy in audited_tables()
    }
    assert found == expected
    assert {policy.entity_type for policy in audited_tables()} == set(AuditEntity)


@pytest.mark.parametrize("enabled", [True, False])
async def test_audit_data_enabled_reaches_every_session_the_app_opens(
    settings: Settings, enabled: bool
) -> None:
    """The app's own lifespan installs the capture: its sessions are of the audited class,
    unless AUDIT_DATA_ENABLED is off."""
    app = create_app(settings.model_copy(update={"audit_data_enabled": enabled}))

    async with app.router.lifespan_context(app):
        database: Database = app.state.database
        async with database.sessions() as writes, database.read_sessions() as reads:
            assert isinstance(writes.sync_session, AuditedSession) is enabled
            assert isinstance(reads.sync_session, AuditedSession) is enabled


# --- writes made outside the app ------------------------------------------------------------


@pytest.fixture
async def outsider(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the app's role that is not the app's (a psql session, a script), in a
    transaction rolled back at the end: it sets no actor, and no switch."""
    async with rolled_back_connection(app_database_url) as connection:
        yield connection


async def _outsider_changes(
    connection: asyncpg.Connection, entity_type: str, entity_id: object
) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT action::text, old_values::text, new_values::text, actor_user_id, request_id "
        "FROM data_changes WHERE entity_type = $1 AND entity_id = $2 ORDER BY id",
        entity_type,
        str(entity_id),
    )


async def test_raw_sql_from_another_connection_is_recorded_with_no_actor(
    outsider: asyncpg.Connection,
) -> None:
    product_id = await outsider.fetchval(
        "INSERT INTO products (sku, name, price, stock_quantity) "
        "VALUES ('RAW-1', 'Raw', 12.5, 3) RETURNING id"
    )
    await outsider.execute("UPDATE products SET stock_quantity = 4 WHERE id = $1", product_id)
    await outsider.execute("DELETE FROM products WHERE id = $1", product_id)

    changes = await _outsider_changes(outsider, "product", product_id)

    assert [change["action"] for change in changes] == ["insert", "update", "delete"]
    assert all(c["actor_user_id"] is None and c["request_id"] is None for c in changes)
    assert json.loads(changes[0]["new_values"])["price"] == "12.50"
    assert json.loads(changes[1]["old_values"]) == {"stock_quantity": 3}
    assert json.loads(changes[1]["new_values"]) == {"stock_quantity": 4}
    assert json.loads(changes[2]["old_values"])["sku"] == "RAW-1"


async def test_a_masked_column_changed_by_raw_sql_is_masked(
    outsider: asyncpg.Connection,
) -> None:
    user_id = await outsider.fetchval(
        "INSERT INTO users (email, full_name, hashed_password) "
        "VALUES ('raw@example.com', 'Raw', '$argon2id$v=19$old') RETURNING id"
    )
    await outsider.execute(
        "UPDATE users SET hashed_password = '$argon2id$v=19$new' WHERE id = $1", user_id
    )

    changes = await _outsider_changes(outsider, "user", user_id)

    assert json.loads(changes[0]["new_values"])["hashed_password"] == REDACTED
    assert (json.loads(changes[1]["old_values"]), json.loads(changes[1]["new_values"])) == (
        {"hashed_password": REDACTED},
        {"hashed_password": REDACTED},
    )
    assert not any("argon2" in (value or "") for change in changes for value in change.values())


async def test_an_update_of_bookkeeping_columns_only_records_nothing(
    outsider: asyncpg.Connection,
) -> None:
    product_id = await outsider.fetchval(
        "INSERT INTO products (sku, name, price) VALUES ('BOOK-1', 'Book', 1) RETURNING id"
    )

    await outsider.execute(
        "UPDATE products SET version = version + 1, updated_at = now() + interval '1 day', "
        "name = name WHERE id = $1",
        product_id,
    )

    assert [c["action"] for c in await _outsider_changes(outsider, "product", product_id)] == [
        "insert"
    ]


@pytest.mark.parametrize(
    "instant",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
async def test_values_are_recorded_as_the_api_renders_them(
    session: AsyncSession, instant: datetime
) -> None:
    """Numerics, timestamps, dates and enums in the trail read as pydantic writes them (the
    form the rows had when the app wrote them itself)."""
    user = await create_user(session)
    user.locked_until = instant
    await session.flush()
    task = (
        await session.execute(
            text(
                "INSERT INTO tasks (title, status, priority, due_date, created_by) "
                "VALUES ('Render', 'todo', 'high', '2026-02-03', :user) RETURNING id"
            ).bindparams(user=user.id),
        )
    ).scalar_one()
    await session.execute(
        text("UPDATE tasks SET status = 'done', completed_at = :instant WHERE id = :id").bindparams(
            instant=instant, id=task
        )
    )
    session.add(Product(sku="RENDER-1", name="Render", price=Decimal("1234567890.5")))
    await session.flush()

    locked = (await changes_of(session, "user", user.id))[-1]
    completed = (await changes_of(session, "task", task))[-1]
    product = (await changes_of(session, "product"))[-1]

    assert locked.new_values == {"locked_until": to_jsonable_python(instant)}
    assert completed.new_values == {"status": "done", "completed_at": to_jsonable_python(instant)}
    inserted = (await changes_of(session, "task", task))[0].new_values
    assert inserted is not None
    assert (inserted["due_date"], inserted["status"], inserted["priority"]) == (
        to_jsonable_python(date(2026, 2, 3)),
        "todo",
        "high",
    )
    assert product.new_values is not None
    assert product.new_values["price"] == to_jsonable_python(Decimal("1234567890.50"))
