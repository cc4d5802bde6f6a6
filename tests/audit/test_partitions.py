"""The audit tables' monthly partitions (audit/partitions.py): made ahead, so an insert never
fails; every one of them, later ones included, guarded like its parent; the DEFAULT partition's
rows moved to their month once it exists."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from backoffice.audit import partitions
from backoffice.audit.models import APPEND_ONLY_TABLES, RETENTION_SETTING
from backoffice.audit.partitions import (
    ENSURE_FUNCTION,
    MAX_MONTHS_AHEAD,
    MONTHS_AHEAD,
    default_partition,
)
from backoffice.core import periodic
from backoffice.core.config import Settings
from backoffice.core.database import app_role_problems, libpq_url, sqlalchemy_url
from backoffice.core.main import create_app
from tests.audit.refusals import INSUFFICIENT_PRIVILEGE, refusal
from tests.support.database import as_app, owner_rights, scratch_database
from tests.support.waiting import until

INVALID_PARAMETER_VALUE = "22023"
_INSERTS = {
    "access_logs": (
        "INSERT INTO access_logs (occurred_at, request_id, method, path, status, duration_ms) "
        "VALUES (:at, 'r-1', 'GET', '/x', 200, 1.0) RETURNING id"
    ),
    "data_changes": (
        "INSERT INTO data_changes (occurred_at, entity_type, entity_id, action, new_values) "
        "VALUES (:at, 'product', '1', 'insert', '{}') RETURNING id"
    ),
}
FAR_PAST = datetime(1999, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
FAR_FUTURE = datetime(2400, 6, 1, tzinfo=UTC)
_PARTITIONS = text("""
    SELECT parent.relname AS parent, child.relname AS partition,
           pg_get_expr(child.relpartbound, child.oid) AS bound
    FROM pg_inherits inh JOIN pg_class parent ON parent.oid = inh.inhparent
    JOIN pg_class child ON child.oid = inh.inhrelid
    WHERE parent.relname = ANY(:tables) AND parent.relnamespace = 'public'::regnamespace
    ORDER BY 1, 2""")


async def _partitions(connection: AsyncConnection) -> dict[str, str]:
    """Every partition of the audit tables, with its bound (`DEFAULT` or `FOR VALUES ...`)."""
    rows = await connection.execute(_PARTITIONS, {"tables": list(APPEND_ONLY_TABLES)})
    return {row.partition: row.bound for row in rows}


async def _ensure(connection: AsyncConnection, months_ahead: int = MONTHS_AHEAD) -> int:
    created = await connection.scalar(
        text(f"SELECT {ENSURE_FUNCTION}(:months)"), {"months": months_ahead}
    )
    return int(created)


async def _where(connection: AsyncConnection, table: str, row_id: int) -> str:
    """The partition holding the row."""
    partition: str = await connection.scalar(
        text(f"SELECT tableoid::regclass::text FROM {table} WHERE id = :id"),  # noqa: S608  # test constants
        {"id": row_id},
    )
    return partition


def _month(instant: datetime) -> str:
    return f"{instant:%Y_%m}"


async def test_the_migration_made_the_partitions_from_this_month_to_months_ahead(
    connection: AsyncConnection,
) -> None:
    partitions = await _partitions(connection)
    now = datetime.now(UTC)

    for table in APPEND_ONLY_TABLES:
        assert partitions[default_partition(table)] == "DEFAULT"
        for ahead in range(MONTHS_AHEAD + 1):
            year, month = divmod(now.month - 1 + ahead, 12)
            first = datetime(now.year + year, month + 1, 1, tzinfo=UTC)
            assert partitions[f"{table}_p{_month(first)}"].startswith(
                f"FOR VALUES FROM ('{first:%Y-%m-%d} 00:00:00+00')"
            )


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
async def test_inserts_far_in_the_past_and_future_succeed_and_find_their_month_later(
    connection: AsyncConnection, table: str
) -> None:
    """No partition covers them: the DEFAULT one takes them, and the app's next start-up (or
    archive run) moves them to a partition of their month, ids and all."""
    before = await _partitions(connection)
    ids = {
        instant: await connection.scalar(text(_INSERTS[table]), {"at": instant})
        for instant in (FAR_PAST, FAR_FUTURE)
    }
    for row_id in ids.values():
        assert await _where(connection, table, row_id) == default_partition(table)

    created = await _ensure(connection)

    after = await _partitions(connection)
    assert created == 2
    assert set(after) - set(before) == {f"{table}_p1999_01", f"{table}_p2400_06"}
    for instant, row_id in ids.items():
        assert await _where(connection, table, row_id) == f"{table}_p{_month(instant)}"
        stored = await connection.scalar(
            text(f"SELECT occurred_at FROM {table} WHERE id = :id"),  # noqa: S608  # test constants
            {"id": row_id},
        )
        assert stored == instant
    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == len(ids)  # noqa: S608


async def test_ensuring_again_changes_nothing(connection: AsyncConnection) -> None:
    await connection.execute(text(_INSERTS["access_logs"]), {"at": FAR_FUTURE})
    await _ensure(connection)
    partitions = await _partitions(connection)

    assert await _ensure(connection) == 0
    assert await _partitions(connection) == partitions


@pytest.mark.parametrize("months_ahead", [-1, MAX_MONTHS_AHEAD + 1])
async def test_ensure_refuses_a_horizon_out_of_range(
    connection: AsyncConnection, months_ahead: int
) -> None:
    statement = f"SELECT {ENSURE_FUNCTION}({months_ahead})"

    assert await refusal(connection, statement) == INVALID_PARAMETER_VALUE


async def test_the_app_role_may_not_attach_partitions_itself(connection: AsyncConnection) -> None:
    """Only the archive job (the owner) re-attaches a partition it detached."""
    statement = "SELECT audit_attach_month('access_logs', '2300-01-01', true)"

    assert await refusal(connection, statement) == INSUFFICIENT_PRIVILEGE


async def test_every_partition_is_guarded_like_its_table(connection: AsyncConnection) -> None:
    """The row trigger is cloned from the parent, the TRUNCATE guard is the partition's own,
    and the app's role has no right on it: it reads and appends through the parent."""
    await connection.execute(text(_INSERTS["data_changes"]), {"at": FAR_FUTURE})
    await _ensure(connection)  # one partition made after the migration, by the app's role
    rows = await connection.execute(
        text("""
            SELECT child.relname AS partition, parent.relname AS parent,
                   array_agg(trg.tgname || ':' || pg_get_triggerdef(trg.oid) ORDER BY trg.tgname)
                     AS triggers,
                   has_table_privilege(child.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
                     AS app_rights
            FROM pg_inherits inh JOIN pg_class parent ON parent.oid = inh.inhparent
            JOIN pg_class child ON child.oid = inh.inhrelid
            JOIN pg_trigger trg ON trg.tgrelid = child.oid AND NOT trg.tgisinternal
            WHERE parent.relname = ANY(:tables)
            GROUP BY child.oid, child.relname, parent.relname"""),
        {"tables": list(APPEND_ONLY_TABLES)},
    )
    found = {row.partition: (row.parent, row.triggers, row.app_rights) for row in rows}

    assert found.keys() == (await _partitions(connection)).keys()
    assert "data_changes_p2400_06" in found
    for partition, (parent, triggers, app_rights) in found.items():
        assert triggers == [
            f"{parent}_append_only:CREATE TRIGGER {parent}_append_only BEFORE DELETE OR UPDATE "
            f"ON public.{partition} FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            f"{parent}_no_truncate:CREATE TRIGGER {parent}_no_truncate BEFORE TRUNCATE "
            f"ON public.{partition} FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
        ]
        assert app_rights is False


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
async def test_a_partition_made_later_refuses_rewrites_like_the_first_ones(
    connection: AsyncConnection, table: str
) -> None:
    await connection.execute(text(_INSERTS[table]), {"at": FAR_FUTURE})
    await _ensure(connection)
    partition = f"{table}_p2400_06"
    await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'on'"))

    app_refusals = {
        statement: await refusal(connection, statement.format(name=partition))
        for statement in (
            "SELECT * FROM {name}",
            "INSERT INTO {name} SELECT * FROM {name}",
            "UPDATE {name} SET id = id",
            "DELETE FROM {name}",
            "TRUNCATE {name}",
            "ALTER TABLE {name} DISABLE TRIGGER ALL",
            "DROP TABLE {name}",
            f"ALTER TABLE {table} DETACH PARTITION {{name}}",
        )
    }
    await connection.execute(text(f"SET LOCAL {RETENTION_SETTING} = 'off'"))
    async with owner_rights(connection):
        owner_refusals = {
            statement: await refusal(connection, statement.format(name=partition))
            for statement in ("UPDATE {name} SET id = id", "DELETE FROM {name}", "TRUNCATE {name}")
        }

    assert app_refusals == dict.fromkeys(app_refusals, INSUFFICIENT_PRIVILEGE)
    # The owner is held back by the triggers, as on the parent (the retention job aside).
    assert owner_refusals == dict.fromkeys(owner_refusals, INSUFFICIENT_PRIVILEGE)
    assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 1  # noqa: S608


# --- committed: two sessions, the app's start-up --------------------------------------------


@pytest.fixture
async def scratch(server_url: str) -> AsyncIterator[str]:
    """A migrated database of its own: these tests commit partitions."""
    async with scratch_database(server_url, "partitions") as url:
        yield url


async def _partition_names(url: str) -> list[str]:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        rows = await connection.fetch(
            "SELECT inhrelid::regclass::text AS name FROM pg_inherits "
            "JOIN pg_class ON pg_class.oid = inhrelid WHERE relkind = 'r' ORDER BY 1"
        )
    finally:
        await connection.close()
    return [row["name"] for row in rows]


@pytest.mark.committed
async def test_two_sessions_ensuring_at_once_make_each_partition_once(
    scratch: str, app_login: tuple[str, str]
) -> None:
    """The second waits for the first (an advisory lock), then finds nothing left to do."""
    first, second = [await asyncpg.connect(libpq_url(as_app(scratch, app_login))) for _ in "ab"]
    ensure = f"SELECT {ENSURE_FUNCTION}({MAX_MONTHS_AHEAD})"
    try:
        async with first.transaction():
            created_first = await first.fetchval(ensure)
            waiting = asyncio.create_task(second.fetchval(ensure))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # the first holds the lock until it commits
        async with asyncio.timeout(10):
            created_second = await waiting
        assert await second.fetchval(ensure) == 0
    finally:
        await first.close()
        await second.close()

    names = await _partition_names(scratch)
    assert created_first == 2 * (MAX_MONTHS_AHEAD - MONTHS_AHEAD)
    assert created_second == 0
    assert len(names) == len(set(names)) == 2 * (MAX_MONTHS_AHEAD + 2)  # with DEFAULT


@pytest.mark.committed
async def test_the_app_start_up_makes_the_partitions_and_a_failure_does_not_stop_it(
    scratch: str, app_login: tuple[str, str], settings: Settings
) -> None:
    owner = await asyncpg.connect(libpq_url(scratch))
    try:
        await owner.execute(
            "INSERT INTO access_logs (occurred_at, request_id, method, path, status, duration_ms) "
            "VALUES ('2300-05-05Z', 'r', 'GET', '/', 200, 1)"
        )
        app = create_app(
            settings.model_copy(
                update={"database_url": as_app(scratch, app_login), "database_owner_url": scratch}
            )
        )
        async with app.router.lifespan_context(app):
            assert "access_logs_p2300_05" in await _partition_names(scratch)

        await owner.execute(f"REVOKE EXECUTE ON FUNCTION {ENSURE_FUNCTION}(integer) FROM PUBLIC")
        await owner.execute(
            f"REVOKE EXECUTE ON FUNCTION {ENSURE_FUNCTION}(integer) FROM backoffice_app"
        )
        with structlog.testing.capture_logs() as logs:
            async with app.router.lifespan_context(app):
                pass
    finally:
        await owner.close()

    warnings = [log for log in logs if log["event"] == "audit.partitions_not_ensured"]
    assert [log["log_level"] for log in warnings] == ["warning"]


@pytest.mark.committed
async def test_a_serving_app_makes_the_partitions_again_while_it_runs(
    scratch: str, app_login: tuple[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that lands in DEFAULT while the node serves (a month no run has made yet) moves
    to its own month at the next periodic run, without a restart."""
    monkeypatch.setattr(partitions, "ENSURE_INTERVAL_S", 0.2)
    monkeypatch.setattr(periodic, "FIRST_RUN_MAX_DELAY_S", 0.2)
    app = create_app(
        settings.model_copy(
            update={"database_url": as_app(scratch, app_login), "database_owner_url": scratch}
        )
    )
    owner = await asyncpg.connect(libpq_url(scratch))
    try:
        async with app.router.lifespan_context(app):
            await owner.execute(
                "INSERT INTO access_logs (occurred_at, request_id, method, path, status, "
                "duration_ms) VALUES ('2300-07-07Z', 'r', 'GET', '/', 200, 1)"
            )

            async def made() -> bool:
                return "access_logs_p2300_07" in await _partition_names(scratch)

            await until(made, 10, "the periodic run")
        placed = await owner.fetchval(
            "SELECT tableoid::regclass::text FROM access_logs WHERE request_id = 'r'"
        )
    finally:
        await owner.close()

    assert placed == "access_logs_p2300_07"


@pytest.mark.committed
async def test_a_partition_made_by_hand_is_reported_then_guarded_by_the_next_ensure(
    scratch: str, app_login: tuple[str, str]
) -> None:
    """`CREATE TABLE ... PARTITION OF` by the owner, without the functions: the default
    privileges grant the app's role UPDATE and DELETE on it, which the start-up role check
    reports, and the next ensure takes away (and adds the TRUNCATE guard)."""
    app_url = as_app(scratch, app_login)
    owner = await asyncpg.connect(libpq_url(scratch))
    try:
        await owner.execute(
            "CREATE TABLE access_logs_p2500_01 PARTITION OF access_logs "
            "FOR VALUES FROM ('2500-01-01Z') TO ('2500-02-01Z')"
        )
        reported = await _role_problems(app_url)
        app = await asyncpg.connect(libpq_url(app_url))
        try:
            await app.fetchval(f"SELECT {ENSURE_FUNCTION}()")
        finally:
            await app.close()
        guards = await owner.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'access_logs_p2500_01'::regclass "
            "AND tgname = 'access_logs_no_truncate'"
        )
    finally:
        await owner.close()

    assert reported == [
        f"role {app_login[0]} may UPDATE, DELETE or TRUNCATE audit table access_logs_p2500_01"
    ]
    assert await _role_problems(app_url) == []
    assert guards == 1


async def _role_problems(url: str) -> list[str]:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        return await app_role_problems(engine, APPEND_ONLY_TABLES)
    finally:
        await engine.dispose()
