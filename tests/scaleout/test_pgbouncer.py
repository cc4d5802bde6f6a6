"""The engine and the read pool through a real PgBouncer in transaction mode (Debian's 1.18,
which knows nothing of prepared statements): concurrent transactions and autocommit reads
share a few server connections without a prepared-statement error and leave no statement
behind, the session settings hold in every transaction without reaching other clients, and
PostgreSQL down behind PgBouncer is an outage (503), not an unknown error."""

import asyncio
from collections import Counter

import asyncpg
import pytest
from sqlalchemy import column, select, table, text
from sqlalchemy.exc import DBAPIError

from backoffice.core.config import Environment, Settings
from backoffice.core.database import Database, ReadConnection, libpq_url
from backoffice.core.errors import database_unavailable
from tests.scaleout.conftest import BOUNCER_POOL_SIZE, Deployment

CLIENTS = 24
ROUNDS = 15
PRODUCTS = table("products", column("id"), column("sku"))


def transaction_mode(deployment: Deployment, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": Environment.TEST,
        "database_pool_mode": "transaction",
        "database_url": deployment.pooled_url,
        "database_direct_url": deployment.direct_url,
        "rate_limit_storage_url": "memory://",
        "db_pool_size": 4,
        "db_read_pool_size": 4,
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]


async def _mixed_load(database: Database) -> Counter[str]:
    """Each client: a transaction of several statements (distinct SQL texts, so nothing could
    be served from a statement cache), an ORM read in autocommit, a read pool statement."""
    errors: Counter[str] = Counter()
    reads = ReadConnection(database.read_connections)

    async def client(number: int) -> None:
        for round_ in range(ROUNDS):
            try:
                async with database.sessions.begin() as session:
                    await session.execute(text(f"SELECT {round_} + :n"), {"n": number})
                    await session.execute(text("SELECT CAST(:j AS jsonb)"), {"j": "{}"})
                    await session.execute(select(PRODUCTS).where(PRODUCTS.c.id == number).limit(1))
                async with database.read_sessions() as session:
                    await session.scalars(
                        select(PRODUCTS.c.id).where(PRODUCTS.c.id > number).limit(2)
                    )
                await reads.fetch_statement(select(PRODUCTS.c.sku).where(PRODUCTS.c.id > round_))
            except Exception as exc:  # noqa: BLE001  # every failure is counted, by kind
                errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"] += 1

    await asyncio.gather(*(client(number) for number in range(CLIENTS)))
    return errors


async def _prepared_statements_left(pooled_url: str) -> set[int]:
    """The named statements on the server connections, sampled through the pooler."""
    counts = set()
    for _ in range(BOUNCER_POOL_SIZE * 2):
        connection = await asyncpg.connect(libpq_url(pooled_url), statement_cache_size=0)
        try:
            counts.add(await connection.fetchval("SELECT count(*) FROM pg_prepared_statements"))
        finally:
            await connection.close()
    return counts


async def test_concurrent_transactions_and_autocommit_reads_share_the_pooled_connections(
    deployment: Deployment,
) -> None:
    database = Database.connect(deployment.pooled_url, transaction_mode(deployment))
    try:
        errors = await _mixed_load(database)
    finally:
        await database.dispose()

    assert errors == Counter()
    assert await _prepared_statements_left(deployment.pooled_url) == {0}


async def test_the_session_mode_engine_cannot_go_through_a_transaction_pooler(
    deployment: Deployment,
) -> None:
    """The trap this mode exists for: the start-up packet's settings are refused outright."""
    settings = transaction_mode(deployment, database_pool_mode="session")
    database = Database.connect(deployment.pooled_url, settings)
    try:
        with pytest.raises(DBAPIError, match="unsupported startup parameter"):
            async with database.sessions() as session:
                await session.execute(text("SELECT 1"))
    finally:
        await database.dispose()


async def _settings_in_force(database: Database) -> dict[str, str]:
    async with database.sessions.begin() as session:
        row = (
            await session.execute(
                text(
                    "SELECT current_setting('statement_timeout') AS statement_timeout, "
                    "current_setting('lock_timeout') AS lock_timeout, "
                    "current_setting('idle_in_transaction_session_timeout') AS idle, "
                    "current_setting('backoffice.audit', true) AS audit, "
                    "current_setting('application_name') AS application_name"
                )
            )
        ).one()
    return dict(row._mapping)


async def test_session_settings_hold_in_every_transaction_and_reach_no_other_client(
    deployment: Deployment,
) -> None:
    settings = transaction_mode(
        deployment,
        db_statement_timeout_ms=300,
        db_lock_timeout_ms=200,
        db_idle_in_transaction_timeout_ms=5000,
        audit_data_enabled=False,
        project_name="scale-out settings",
    )
    database = Database.connect(deployment.pooled_url, settings)
    try:
        in_force = await asyncio.gather(*(_settings_in_force(database) for _ in range(12)))
        with pytest.raises(DBAPIError, match="statement timeout"):
            async with database.sessions.begin() as session:
                await session.execute(text("SELECT pg_sleep(2)"))
    finally:
        await database.dispose()
    # Another client of the same server connections, in a transaction of its own.
    other = await asyncpg.connect(libpq_url(deployment.pooled_url), statement_cache_size=0)
    try:
        async with other.transaction():
            elsewhere = await other.fetchrow(
                "SELECT current_setting('statement_timeout') AS statement_timeout, "
                "current_setting('backoffice.audit', true) AS audit"
            )
    finally:
        await other.close()

    assert {tuple(values.items()) for values in in_force} == {
        (
            ("statement_timeout", "300ms"),
            ("lock_timeout", "200ms"),
            ("idle", "5s"),
            ("audit", "off"),
            ("application_name", "scale-out settings"),
        )
    }
    assert elsewhere is not None
    assert elsewhere["statement_timeout"] == "0"
    assert elsewhere["audit"] in {None, ""}


async def _answering_through_the_pooler(pooled_url: str, within_s: float = 15.0) -> None:
    """PgBouncer refuses clients for a while after its logins to a stopped server failed
    (server_login_retry): the tests after this one need it answering again."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            connection = await asyncpg.connect(libpq_url(pooled_url), statement_cache_size=0)
            try:
                await connection.fetchval("SELECT 1")
                return
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_database_outage_behind_pgbouncer_is_an_unavailable_database(
    deployment: Deployment,
) -> None:
    """PostgreSQL stopped, PgBouncer still up: the transaction's first statement (the session
    settings) fails as an outage the error mapper answers 503, not as an unknown error. Last
    in this module: the server is started again for the tests after it."""
    database = Database.connect(deployment.pooled_url, transaction_mode(deployment))
    try:
        async with database.sessions.begin() as session:  # a pooled connection to PgBouncer
            await session.execute(text("SELECT 1"))
        await asyncio.to_thread(deployment.postgres.stop)
        try:
            with pytest.raises(Exception) as failed:  # noqa: PT011  # any type: the mapper decides
                async with database.sessions.begin() as session:
                    await session.execute(text("SELECT 1"))
        finally:
            await asyncio.to_thread(deployment.postgres.start)
            await _answering_through_the_pooler(deployment.pooled_url)
    finally:
        await database.dispose()

    # SQLAlchemy's own type (the one the error handlers answer), meaning an outage.
    assert isinstance(failed.value, DBAPIError), repr(failed.value)
    assert database_unavailable(failed.value), repr(failed.value)
