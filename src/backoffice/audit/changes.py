"""Change data capture: every INSERT, UPDATE and DELETE of an audited table becomes a
`data_changes` row, written by the database itself in the same transaction, so the change and
its record commit or roll back together, whoever makes it and however.

A model opts in with `__audit_entity__ = "product"` (and `__audit_masked__` for fields whose
values must never be recorded; names that look secret are masked anyway). Its table gets a row
trigger running `audit_data_change()` (migrations/20261202050000_data_change_triggers.sql), whose
arguments are the table's policy computed here (`AuditedTable.trigger_arguments`): the unit of
work, bulk statements, ON DELETE CASCADE and a psql session are all recorded alike.

Who made the change is read from transaction-local settings, `backoffice.actor_user_id`,
`backoffice.actor_api_key_id` (the API key the actor used, if any) and `backoffice.request_id`
(NULL when unset: scripts, psql). `AuditedSession` sets them with
one statement before its first write in a transaction, and again only if they changed.
`backoffice.audit = off` (set for the connection when AUDIT_DATA_ENABLED is off) makes the
trigger record nothing.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import DDL, Connection, DateTime, Float, MetaData, Numeric, Table
from sqlalchemy import event as sa_event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlmodel import SQLModel

from backoffice.audit.context import current_actor
from backoffice.core.config import Settings
from backoffice.core.logging import REDACTED, is_secret_name

ACTOR_SETTING: Final = "backoffice.actor_user_id"
# The API key the actor used (auth/api_keys.py); unset for a password login's token.
API_KEY_SETTING: Final = "backoffice.actor_api_key_id"
REQUEST_SETTING: Final = "backoffice.request_id"
# `off` for a connection or a transaction: nothing it changes is recorded (AUDIT_DATA_ENABLED).
SWITCH_SETTING: Final = "backoffice.audit"
TRIGGER_FUNCTION: Final = "audit_data_change"


@dataclass(frozen=True, slots=True)
class AuditedTable:
    table: str
    entity_type: str
    primary_key: tuple[str, ...]
    masked: frozenset[str]
    # Columns the ORM maintains itself (the version counter, `onupdate` timestamps): left out
    # of UPDATE records, whichever way the update was made, so the trail shows what changed.
    bookkeeping: frozenset[str]
    # Recorded as pydantic renders them, as they were when the app wrote the rows itself:
    # numerics as JSON strings ("10.00"), timestamps as ISO 8601 in UTC ending in "Z".
    decimals: frozenset[str]
    timestamps: frozenset[str]

    @property
    def trigger_name(self) -> str:
        return f"{self.table}_data_changes"

    def trigger_arguments(self) -> tuple[str, ...]:
        """What the trigger gets (`TG_ARGV`): the entity type, then PostgreSQL array literals
        of the key (in order), masked, bookkeeping, numeric and timestamp columns."""
        return (
            self.entity_type,
            _array(self.primary_key),
            *(
                _array(sorted(names))
                for names in (self.masked, self.bookkeeping, self.decimals, self.timestamps)
            ),
        )

    def create_trigger(self) -> str:
        arguments = ", ".join(f"'{argument}'" for argument in self.trigger_arguments())
        return (
            f"CREATE TRIGGER {self.trigger_name} AFTER INSERT OR UPDATE OR DELETE "
            f"ON {self.table} FOR EACH ROW EXECUTE FUNCTION {TRIGGER_FUNCTION}({arguments})"
        )


def _array(names: Iterable[str]) -> str:
    return "{" + ",".join(names) + "}"


def _policy(model: Any, table: Table) -> AuditedTable:
    columns = list(table.columns)
    return AuditedTable(
        table=table.name,
        entity_type=model.__audit_entity__,
        primary_key=tuple(column.key for column in table.primary_key),
        masked=frozenset(getattr(model, "__audit_masked__", ()))
        | {column.key for column in columns if is_secret_name(column.key)},
        bookkeeping=frozenset(
            column.key
            for column in columns
            if column.onupdate is not None or column.key == "version"
        )
        | frozenset(getattr(model, "__audit_bookkeeping__", ())),
        decimals=frozenset(
            column.key
            for column in columns
            if isinstance(column.type, Numeric) and not isinstance(column.type, Float)
        ),
        timestamps=frozenset(
            column.key
            for column in columns
            if isinstance(column.type, DateTime) and column.type.timezone
        ),
    )


def audited_tables() -> list[AuditedTable]:
    """The policy of every audited table, from the models mapped now (SQLModel's registry)."""
    policies = [
        _policy(mapper.class_, mapper.local_table)  # type: ignore[arg-type]  # a Table here
        for mapper in SQLModel._sa_registry.mappers
        if hasattr(mapper.class_, "__audit_entity__")
    ]
    return sorted(policies, key=lambda policy: policy.table)


# --- the schema: the trigger function, and one trigger per audited table --------------------

# Kept byte for byte equal to the migration's copy: the schema drift test compares them.
# No percent sign anywhere: SQLAlchemy %-formats DDL text.
_RENDER_FUNCTION = f"""CREATE OR REPLACE FUNCTION audit_jsonable(
  row_values jsonb, masked text[], decimals text[], timestamps text[]
) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
  name text;
  instant timestamp;
BEGIN
  IF row_values IS NULL THEN
    RETURN NULL;
  END IF;
  FOREACH name IN ARRAY masked LOOP
    IF row_values ? name THEN
      row_values := jsonb_set(row_values, ARRAY[name], '"{REDACTED}"');
    END IF;
  END LOOP;
  FOREACH name IN ARRAY decimals LOOP
    IF jsonb_typeof(row_values -> name) = 'number' THEN
      row_values := jsonb_set(row_values, ARRAY[name], to_jsonb(row_values ->> name));
    END IF;
  END LOOP;
  FOREACH name IN ARRAY timestamps LOOP
    IF jsonb_typeof(row_values -> name) = 'string' THEN
      instant := (row_values ->> name)::timestamptz AT TIME ZONE 'UTC';
      row_values := jsonb_set(row_values, ARRAY[name], to_jsonb(
        to_char(instant, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_trunc('second', instant) = instant THEN ''
                ELSE to_char(instant, '.US') END
        || 'Z'));
    END IF;
  END LOOP;
  RETURN row_values;
END
$$"""

_TRIGGER_FUNCTION = f"""CREATE OR REPLACE FUNCTION {TRIGGER_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  key_columns text[] := TG_ARGV[1];
  masked text[] := TG_ARGV[2];
  bookkeeping text[] := TG_ARGV[3];
  decimals text[] := TG_ARGV[4];
  timestamps text[] := TG_ARGV[5];
  old_values jsonb;
  new_values jsonb;
  unchanged text[];
  entity_id text;
  key_column text;
BEGIN
  IF current_setting('{SWITCH_SETTING}', true) = 'off' THEN
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    old_values := to_jsonb(OLD);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_values := to_jsonb(NEW);
  END IF;
  FOREACH key_column IN ARRAY key_columns LOOP
    entity_id := concat_ws('/', entity_id, coalesce(new_values, old_values) ->> key_column);
  END LOOP;
  IF TG_OP = 'UPDATE' THEN
    unchanged := ARRAY(
      SELECT key FROM jsonb_each(new_values)
      WHERE value = old_values -> key OR key = ANY (bookkeeping)
    );
    new_values := new_values - unchanged;
    IF new_values = '{{}}' THEN
      RETURN NULL;
    END IF;
    old_values := old_values - unchanged;
  END IF;
  INSERT INTO public.data_changes
    (entity_type, entity_id, action, old_values, new_values, actor_user_id, api_key_id,
     request_id)
  VALUES (
    TG_ARGV[0],
    entity_id,
    lower(TG_OP)::public.data_change_action,
    public.audit_jsonable(old_values, masked, decimals, timestamps),
    public.audit_jsonable(new_values, masked, decimals, timestamps),
    nullif(current_setting('{ACTOR_SETTING}', true), '')::integer,
    nullif(current_setting('{API_KEY_SETTING}', true), '')::integer,
    nullif(current_setting('{REQUEST_SETTING}', true), '')
  );
  RETURN NULL;
END
$$"""  # noqa: S608  # constants only

FUNCTIONS: Final = (_RENDER_FUNCTION, _TRIGGER_FUNCTION)


def _create_functions(_metadata: MetaData, connection: Connection, **_kw: Any) -> None:
    for statement in FUNCTIONS:
        connection.execute(DDL(statement))  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL.__init__ unannotated


def _create_triggers(
    _metadata: MetaData, connection: Connection, tables: Sequence[Table] = (), **_kw: Any
) -> None:
    created = {table.name for table in tables}
    for policy in audited_tables():
        if policy.table in created:
            connection.execute(DDL(policy.create_trigger()))  # type: ignore[no-untyped-call]  # as above


def install_schema(metadata: MetaData) -> None:
    """`metadata.create_all` builds what the migrations build: the functions, then (all
    tables being there) the triggers."""
    sa_event.listen(metadata, "before_create", _create_functions)
    sa_event.listen(metadata, "after_create", _create_triggers)


# --- the actor: who, in which request ---------------------------------------------------------

_SET_ACTOR = (
    f"SELECT set_config('{ACTOR_SETTING}', $1, true), set_config('{API_KEY_SETTING}', $2, true),"
    f" set_config('{REQUEST_SETTING}', $3, true)"
)
# On the pooled connection's `info`: the actor last set, and in which transaction. The memo
# holds the transaction objects themselves (until the next one replaces them): compared by
# identity, a freed one's id could come back as a new transaction's.
_ACTOR_SET = "backoffice.audit.actor_set"


def bind_actor(connection: Connection) -> None:
    """Make the running request's actor and request id those of `connection`'s transaction,
    unless they already are: one statement, at most once per transaction in the app.

    The memo names the transaction and the innermost savepoint the values were set in. A
    savepoint that rolled back takes its values with it, one released keeps them: either way
    it is no longer active, and the values are set again (once more than needed, at worst).
    """
    actor = current_actor()
    transaction, savepoint = connection.get_transaction(), connection.get_nested_transaction()
    memo = connection.info.get(_ACTOR_SET)
    if (
        memo is not None
        and memo[0] is transaction
        and (memo[1] is None or memo[1].is_active)
        and memo[2] == actor
    ):
        return
    user_id, api_key_id, request_id = actor
    connection.exec_driver_sql(
        _SET_ACTOR,
        (
            "" if user_id is None else str(user_id),
            "" if api_key_id is None else str(api_key_id),
            request_id or "",
        ),
    )
    connection.info[_ACTOR_SET] = (transaction, savepoint, actor)


def _before_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    bind_actor(session.connection())


def _on_statement(execution: ORMExecuteState) -> None:
    # Anything but a select() may write: DML constructs, and text() whatever it holds.
    if not execution.is_select:
        bind_actor(execution.session.connection(bind_arguments=execution.bind_arguments))


class AuditedSession(Session):
    """A Session that tells the database who makes its changes (the hooks below listen on
    this class, and on no other): the `sync_session_class` of the app's sessions. Writes of
    other sessions are recorded too, with no actor."""


sa_event.listen(AuditedSession, "before_flush", _before_flush)
sa_event.listen(AuditedSession, "do_orm_execute", _on_statement)


def session_class(settings: Settings) -> type[Session]:
    """The class of the app's sessions: AuditedSession, or a plain Session when
    AUDIT_DATA_ENABLED is off (its connections then carry `backoffice.audit = off`, set by
    core/database.py: nothing to tell the database)."""
    return AuditedSession if settings.audit_data_enabled else Session
