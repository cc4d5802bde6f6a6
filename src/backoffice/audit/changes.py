"""Change data capture: every INSERT, UPDATE and DELETE of an audited model becomes a
`data_changes` row, written through the same connection in the same transaction, so the change
and its record commit or roll back together.

A model opts in with `__audit_entity__ = "product"` (and `__audit_masked__` for fields whose
values must never be recorded; names that look secret are masked anyway). Two hooks see every
write our code can make:

- `after_flush`: the unit of work (objects added, changed, deleted through the session);
- `do_orm_execute`: statements (`update(...)`, `delete(...)`, `insert(...)`) run through
  `session.execute`. Before an UPDATE or DELETE runs, the rows it matches are read and locked,
  the statement is narrowed to exactly those rows, and the rows are read again afterwards, so
  old and new values are both known and nothing changes unrecorded.

Deleting an object whose audited children the database would delete by `ON DELETE CASCADE` first
deletes those children through the session, so their removal is recorded too.

The hooks listen on `AuditedSession` only: a session records changes when it is made of that
class. core/main.py gives it to the app's `Database`; the commands (`python -m backoffice`),
`scripts/seed.py` and the tests' fixtures make their sessions of it too.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import Connection, Result, Table, delete, false, insert, select, tuple_
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as orm_inspect
from sqlalchemy.orm import InstanceState, ORMExecuteState, Session, UOWTransaction
from sqlmodel import SQLModel

from backoffice.audit.context import current_actor
from backoffice.audit.models import DataChange, DataChangeAction
from backoffice.core.config import Settings
from backoffice.core.logging import REDACTED, is_secret_name

_data_changes: Table = DataChange.__table__  # type: ignore[attr-defined]  # set by SQLModel


@dataclass(frozen=True, slots=True)
class AuditedTable:
    entity_type: str
    primary_key: tuple[str, ...]
    masked: frozenset[str]
    # Columns the ORM maintains itself (the version counter, `onupdate` timestamps): left out
    # of UPDATE records, whichever way the update was made, so the trail shows what changed.
    bookkeeping: frozenset[str] = frozenset()
    # (child table, its foreign-key column) for audited children deleted by ON DELETE CASCADE
    cascades: tuple[tuple[Table, str], ...] = ()


def _policies() -> dict[str, AuditedTable | None]:
    """Table name -> policy (None when not audited), for every mapped model. A model opts in
    with `__audit_entity__`; secret-looking column names are masked like `__audit_masked__`."""
    models = {
        mapper.local_table.description: mapper.class_
        for mapper in SQLModel._sa_registry.mappers  # SQLModel's one registry
    }
    audited: dict[str, Table] = {
        name: model.__table__
        for name, model in models.items()
        if hasattr(model, "__audit_entity__")
    }
    policies: dict[str, AuditedTable | None] = dict.fromkeys(models)
    for name, table in audited.items():
        model = models[name]
        policies[name] = AuditedTable(
            entity_type=model.__audit_entity__,
            primary_key=tuple(column.key for column in table.primary_key),
            masked=frozenset(getattr(model, "__audit_masked__", ()))
            | {column.key for column in table.columns if is_secret_name(column.key)},
            bookkeeping=frozenset(
                column.key
                for column in table.columns
                if column.onupdate is not None or column.key == "version"
            ),
            cascades=tuple(
                (child, fk.parent.key)
                for child in audited.values()
                for fk in child.foreign_keys
                if fk.column.table is table and fk.ondelete == "CASCADE"
            ),
        )
    return policies


_known_tables: dict[str, AuditedTable | None] = {}


def audited_table(name: str) -> AuditedTable | None:
    """The policy of a table, looked up on every flush and statement: computed once, and
    again only for a table mapped after that."""
    if name not in _known_tables:
        _known_tables.clear()
        _known_tables.update(_policies())
        _known_tables.setdefault(name, None)  # a table no model maps: never audited
    return _known_tables[name]


def _jsonable(policy: AuditedTable, values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: REDACTED if key in policy.masked else to_jsonable_python(value)
        for key, value in values.items()
    }


def _record(
    policy: AuditedTable,
    action: DataChangeAction,
    key_values: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
) -> dict[str, Any]:
    actor_user_id, request_id = current_actor()
    return {
        "entity_type": policy.entity_type,
        "entity_id": "/".join(str(key_values[key]) for key in policy.primary_key),
        "action": action,
        "old_values": None if old is None else _jsonable(policy, old),
        "new_values": None if new is None else _jsonable(policy, new),
        "actor_user_id": actor_user_id,
        "request_id": request_id,
    }


def _write(connection: Connection, records: Sequence[dict[str, Any]]) -> None:
    if records:
        connection.execute(insert(_data_changes), list(records))


# --- the unit of work ------------------------------------------------------------------------


def _loaded(state: InstanceState[Any]) -> dict[str, Any]:
    """Column values the object holds (never loading anything: a flush must not query)."""
    return {
        attribute.key: state.dict[attribute.key]
        for attribute in state.mapper.column_attrs
        if attribute.key in state.dict
    }


def _changed(state: InstanceState[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    bookkeeping = audited_bookkeeping(state)
    for attribute in state.mapper.column_attrs:
        if attribute.key in bookkeeping:
            continue
        history = state.attrs[attribute.key].history
        if not history.added:
            continue
        old[attribute.key] = history.deleted[0] if history.deleted else None
        new[attribute.key] = history.added[0]
    return old, new


def audited_bookkeeping(state: InstanceState[Any]) -> frozenset[str]:
    policy = audited_table(state.mapper.local_table.description)
    return frozenset() if policy is None else policy.bookkeeping


def _unit_of_work_records(session: Session) -> Iterable[dict[str, Any]]:
    changes = (
        (DataChangeAction.INSERT, session.new),
        (DataChangeAction.UPDATE, session.dirty),
        (DataChangeAction.DELETE, session.deleted),
    )
    for action, objects in changes:
        for obj in objects:
            state: InstanceState[Any] = orm_inspect(obj)
            policy = audited_table(state.mapper.local_table.description)
            if policy is None:
                continue
            values = _loaded(state)
            if action is DataChangeAction.UPDATE:
                old, new = _changed(state)
                if new:
                    yield _record(policy, action, values, old, new)
            elif action is DataChangeAction.INSERT:
                yield _record(policy, action, values, None, values)
            else:
                yield _record(policy, action, values, values, None)


def _before_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    """Delete the audited children of objects being deleted first, through the session, so the
    trail records them instead of the database cascading them silently."""
    with session.no_autoflush:
        for obj in list(session.deleted):
            state: InstanceState[Any] = orm_inspect(obj)
            policy = audited_table(state.mapper.local_table.description)
            if policy is None or not policy.cascades:
                continue
            (key,) = policy.primary_key
            for child, column in policy.cascades:
                session.execute(delete(child).where(child.c[column] == state.dict[key]))


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    _write(session.connection(), list(_unit_of_work_records(session)))


# --- statements ------------------------------------------------------------------------------


def _key(policy: AuditedTable, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[key] for key in policy.primary_key)


def _on_statement(execution: ORMExecuteState) -> Result[Any] | None:
    if not (execution.is_insert or execution.is_update or execution.is_delete):
        return None
    statement: Any = execution.statement
    target = getattr(statement, "table", None)
    if target is None:  # e.g. select().from_statement(update(...)): old values unknowable
        raise TypeError(f"run DML as update()/delete()/insert(), not {type(statement).__name__}")
    policy = audited_table(target.name)
    if policy is None:
        return None
    connection = execution.session.connection()
    if execution.is_insert:
        result = execution.invoke_statement()
        parameters: Any = execution.parameters
        rows: list[Mapping[str, Any]] = (
            parameters if isinstance(parameters, list) else [parameters or {}]
        )
        _write(
            connection,
            [_record(policy, DataChangeAction.INSERT, row, None, row) for row in rows],
        )
        return result
    table: Table = statement.table
    keys = tuple_(*(table.c[key] for key in policy.primary_key))
    matching = select(table).with_for_update()
    if statement.whereclause is not None:
        matching = matching.where(statement.whereclause)
    before = [dict(row) for row in connection.execute(matching).mappings()]
    selected = [_key(policy, row) for row in before]
    # Exactly the rows read (and locked) above, so none can change unrecorded.
    narrowed = keys.in_(selected) if selected else false()
    result = execution.invoke_statement(statement=statement.where(narrowed))
    if execution.is_delete:
        _write(
            connection,
            [_record(policy, DataChangeAction.DELETE, row, row, None) for row in before],
        )
        return result
    after = {
        _key(policy, row): row
        for row in (
            dict(found) for found in connection.execute(select(table).where(narrowed)).mappings()
        )
    }
    records = []
    for old_row in before:
        new_row = after[_key(policy, old_row)]
        changed = [
            key for key in new_row if key not in policy.bookkeeping and new_row[key] != old_row[key]
        ]
        if changed:
            records.append(
                _record(
                    policy,
                    DataChangeAction.UPDATE,
                    new_row,
                    {key: old_row[key] for key in changed},
                    {key: new_row[key] for key in changed},
                )
            )
    _write(connection, records)
    return result


class AuditedSession(Session):
    """A Session whose every write to an audited model is recorded in its own transaction
    (the hooks below listen on this class, and on no other): the `sync_session_class` of the
    app's sessions."""


sa_event.listen(AuditedSession, "before_flush", _before_flush)
sa_event.listen(AuditedSession, "after_flush", _after_flush)
sa_event.listen(AuditedSession, "do_orm_execute", _on_statement)


def session_class(settings: Settings) -> type[Session]:
    """The class of the app's sessions: AuditedSession, or a plain Session, which records
    nothing, when AUDIT_DATA_ENABLED is off."""
    return AuditedSession if settings.audit_data_enabled else Session
