"""Monthly partitions of the audit tables (docs/AUDIT_GUIDE.md, "Partitions").

`access_logs` and `data_changes` are partitioned by RANGE of `occurred_at`, one partition per
calendar month in UTC, named `<table>_pYYYY_MM`, plus a DEFAULT partition, `<table>_default`,
that takes any row no month partition covers: an insert never fails for want of a partition.

Two functions in the database (created by migrations/20261202060000_partition_audit.sql, and by
`metadata.create_all` from the text below) make the partitions, as the owner:

- `audit_attach_month(table, month, adopt)`: creates the month's partition unless it exists,
  moving the rows the DEFAULT partition holds for that month into it in the same transaction
  (a month partition cannot be added while the DEFAULT one holds rows of its range), then
  strips the app's role of every right on it (the app reads and appends through the parent)
  and gives it the TRUNCATE guard. `adopt` re-attaches a partition the archive job detached
  and did not get to drop (a crashed run); only the archive job asks for that.
- `audit_ensure_partitions(months_ahead)`: the months from the current one to `months_ahead`
  ahead, and every month the DEFAULT partition holds rows of; and it guards any partition made
  by hand (without the function) that lacks its guards. SECURITY DEFINER, so the app's role may
  call it (at start-up); serialised by a transaction-level advisory lock, so two nodes starting
  together do not collide, and idempotent.

The row triggers of a partitioned table (append-only, audit_append_only) are cloned by
PostgreSQL onto every partition, present and future; statement triggers are not, hence each
partition's own TRUNCATE guard.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import structlog
from fastapi import FastAPI
from sqlalchemy import DDL, Connection, MetaData, Table, text
from sqlalchemy import event as sa_event

from backoffice.core.database import APP_GROUP_ROLE, Database
from backoffice.core.errors import describe_error
from backoffice.core.periodic import periodic_job

log = structlog.get_logger(__name__)

PARTITIONED_TABLES: Final = ("access_logs", "data_changes")
PARTITION_KEY: Final = "occurred_at"
# Partitions made ahead at start-up and by the archive job: the current month and the next
# three, so a node may run three months without a restart before rows go to DEFAULT (and are
# moved out of it the next time either runs).
MONTHS_AHEAD: Final = 3
MAX_MONTHS_AHEAD: Final = 24
ENSURE_FUNCTION: Final = "audit_ensure_partitions"
ATTACH_FUNCTION: Final = "audit_attach_month"
# As SQL: the list the functions accept, and the app's group role they keep off the partitions.
_TABLES_SQL: Final = ", ".join(f"'{table}'" for table in PARTITIONED_TABLES)
_APP_GROUP_ROLE: Final = APP_GROUP_ROLE
# pg_advisory_xact_lock's key: one partition maker at a time, across every session.
PARTITION_LOCK_KEY: Final = 0x61756469745F7061  # "audit_pa"
# A node's start-up waits at most this long for the partitions, then goes on: the DEFAULT
# partition takes the rows meanwhile.
_ENSURE_TIMEOUT_S: Final = 10.0
# How often a serving node makes the coming months' partitions again (cheap: nothing to do
# but on the first run after a month begins).
ENSURE_INTERVAL_S: Final = 6 * 3600.0


def default_partition(table: str) -> str:
    return f"{table}_default"


ATTACH_MONTH_SQL: Final = f"""CREATE OR REPLACE FUNCTION {ATTACH_FUNCTION}(
  parent text, month timestamp, adopt boolean DEFAULT false
) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET backoffice.audit_retention = 'on' AS $$
DECLARE
  first_day timestamp := date_trunc('month', month);
  lower_bound text := to_char(first_day, 'YYYY-MM-DD HH24:MI:SS') || '+00';
  upper_bound text := to_char(first_day + interval '1 month', 'YYYY-MM-DD HH24:MI:SS') || '+00';
  partition text := format('%s_p%s', parent, to_char(first_day, 'YYYY_MM'));
  bounds text := partition || '_bounds';
  existing regclass;
BEGIN
  IF parent NOT IN ({_TABLES_SQL}) THEN
    RAISE EXCEPTION 'not a partitioned audit table: %', parent
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM pg_advisory_xact_lock({PARTITION_LOCK_KEY});
  existing := to_regclass(format('public.%I', partition));
  IF existing IS NOT NULL
     AND (NOT adopt OR (SELECT relispartition FROM pg_class WHERE oid = existing)) THEN
    RETURN false;
  END IF;
  IF existing IS NULL THEN
    EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS)',
                   partition, parent);
  END IF;
  -- The constraint spares ATTACH a scan of the table under a lock on the parent.
  EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK ({PARTITION_KEY} >= %L AND '
                 '{PARTITION_KEY} < %L)', partition, bounds, lower_bound, upper_bound);
  EXECUTE format('WITH moved AS (DELETE FROM public.%I WHERE {PARTITION_KEY} >= %L AND '
                 '{PARTITION_KEY} < %L RETURNING *) INSERT INTO public.%I SELECT * FROM moved',
                 parent || '_default', lower_bound, upper_bound, partition);
  EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                 parent, partition, lower_bound, upper_bound);
  EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', partition, bounds);
  EXECUTE format('REVOKE ALL ON public.%I FROM {_APP_GROUP_ROLE}', partition);
  EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON public.%I '
                 'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_append_only()',
                 parent || '_no_truncate', partition);
  RETURN true;
END
$$"""  # noqa: S608  # constants only

ENSURE_SQL: Final = f"""CREATE OR REPLACE FUNCTION {ENSURE_FUNCTION}(
  months_ahead integer DEFAULT {MONTHS_AHEAD}
) RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
  parent text;
  month timestamp;
  partition regclass;
  created integer := 0;
BEGIN
  IF months_ahead IS NULL OR months_ahead NOT BETWEEN 0 AND {MAX_MONTHS_AHEAD} THEN
    RAISE EXCEPTION 'months_ahead must be between 0 and {MAX_MONTHS_AHEAD}, not %', months_ahead
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM pg_advisory_xact_lock({PARTITION_LOCK_KEY});
  FOREACH parent IN ARRAY ARRAY[{_TABLES_SQL}] LOOP
    FOR month IN EXECUTE format(
      'SELECT generate_series($1, $1 + make_interval(months => $2), interval ''1 month'') '
      'UNION SELECT date_trunc(''month'', {PARTITION_KEY} AT TIME ZONE ''UTC'') FROM public.%I '
      'ORDER BY 1', parent || '_default') USING this_month, months_ahead
    LOOP
      IF public.{ATTACH_FUNCTION}(parent, month) THEN
        created := created + 1;
      END IF;
    END LOOP;
    -- A partition made by hand (CREATE TABLE ... PARTITION OF) has the default privileges,
    -- which grant the app's role UPDATE and DELETE, and no TRUNCATE guard: guard it.
    FOR partition IN
      SELECT inh.inhrelid::regclass FROM pg_inherits inh
      WHERE inh.inhparent = to_regclass(format('public.%I', parent))
        AND (has_table_privilege('{_APP_GROUP_ROLE}', inh.inhrelid,
                                 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
             OR NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = inh.inhrelid
                            AND tgname = parent || '_no_truncate'))
    LOOP
      EXECUTE format('REVOKE ALL ON %s FROM {_APP_GROUP_ROLE}', partition);
      EXECUTE format('CREATE OR REPLACE TRIGGER %I BEFORE TRUNCATE ON %s '
                     'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_append_only()',
                     parent || '_no_truncate', partition);
    END LOOP;
  END LOOP;
  RETURN created;
END
$$"""  # noqa: S608  # constants only

FUNCTIONS: Final = (ATTACH_MONTH_SQL, ENSURE_SQL)


def default_partition_ddl(table: str) -> tuple[str, ...]:
    """The DEFAULT partition of `table`, guarded like the month partitions."""
    name = default_partition(table)
    return (
        f"CREATE TABLE {name} PARTITION OF {table} DEFAULT",
        f"REVOKE ALL ON {name} FROM {_APP_GROUP_ROLE}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    )


def _ddl(statement: str) -> DDL:
    # SQLAlchemy %-formats DDL text; plpgsql's format() needs its % as written.
    return DDL(statement.replace("%", "%%"))  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL.__init__ unannotated


def _create_functions(_metadata: MetaData, connection: Connection, **_kw: Any) -> None:
    for statement in FUNCTIONS:
        connection.execute(_ddl(statement))


def install_partitioning(metadata: MetaData, tables: list[Table]) -> None:
    """`metadata.create_all` builds what the migration builds: the functions, and each
    partitioned table's DEFAULT partition (the month partitions are the functions' job)."""
    sa_event.listen(metadata, "before_create", _create_functions)
    for table in tables:
        for statement in default_partition_ddl(table.name):
            sa_event.listen(table, "after_create", _ddl(statement))


async def ensure_partitions(database: Database, months_ahead: int = MONTHS_AHEAD) -> int:
    """Create the partitions from this month to `months_ahead` ahead (and those the DEFAULT
    partition holds rows of), as the app's role, through the SECURITY DEFINER function; the
    number created."""
    async with database.engine.begin() as connection:
        created = await connection.scalar(
            text(f"SELECT {ENSURE_FUNCTION}(:months_ahead)"), {"months_ahead": months_ahead}
        )
    return int(created or 0)


async def _ensure_logged(database: Database) -> None:
    """ensure_partitions, its outcome logged. A failure does not keep the node down: the
    DEFAULT partition takes the rows until a later run moves them to their month."""
    try:
        async with asyncio.timeout(_ENSURE_TIMEOUT_S):
            created = await ensure_partitions(database)
    except Exception as exc:  # noqa: BLE001  # any failure: the DEFAULT partition is the net
        log.warning("audit.partitions_not_ensured", error=describe_error(exc))
    else:
        if created:
            log.info("audit.partitions_created", count=created)


@asynccontextmanager
async def partitions_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Make the coming months' partitions at start-up (inside the database's lifespan), then
    again every ENSURE_INTERVAL_S while the node serves: a node that runs for months never
    leaves its rows to the DEFAULT partition, and rows that landed there move to their
    month."""
    database: Database = app.state.database
    await _ensure_logged(database)
    async with periodic_job(
        "audit-partitions", partial(_ensure_logged, database), ENSURE_INTERVAL_S
    ):
        yield
