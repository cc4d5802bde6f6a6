"""The audit trail's tables: who called what (access logs), what changed (data changes), and
the archive's bookkeeping. The application may only append to the first two: a trigger refuses
UPDATE, DELETE and TRUNCATE unless the session says it is the retention job."""

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    Sequence,
    SmallInteger,
    String,
    event,
    func,
)
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlmodel import Field, SQLModel

from backoffice.audit.changes import install_schema
from backoffice.audit.partitions import PARTITION_KEY, install_partitioning
from backoffice.core.models import enum_field, metadata

REQUEST_ID_MAX_LENGTH = 128
PATH_MAX_LENGTH = 2048
USER_AGENT_MAX_LENGTH = 512
# The retention job (scripts/archive_audit.py) sets this for its own transactions only.
RETENTION_SETTING = "backoffice.audit_retention"


def _big_id() -> Any:
    return Field(
        default=None, sa_column=Column(BigInteger, Identity(always=False), primary_key=True)
    )


def _partitioned_id(table: str) -> Any:
    """The id of a partitioned audit table: from a sequence of its own, the default that works
    on every partitioned table (an identity column needs PostgreSQL 17). Still unique, since
    only the sequence hands ids out; but a partitioned table's primary key must include the
    partition key, so the key is (id, occurred_at)."""
    sequence = Sequence(f"{table}_id_seq")
    return Field(
        default=None,
        sa_column=Column(
            BigInteger, sequence, server_default=sequence.next_value(), primary_key=True
        ),
    )


def _partition_key(server_default: Any = None) -> Any:
    """`occurred_at`, the monthly partitions' key (audit/partitions.py), hence part of the
    primary key."""
    column = Column(
        DateTime(timezone=True), nullable=False, primary_key=True, server_default=server_default
    )
    if server_default is None:
        return Field(sa_column=column)
    return Field(default=None, sa_column=column)


class AccessLog(SQLModel, table=True):
    __tablename__: ClassVar[str] = "access_logs"

    id: int | None = _partitioned_id("access_logs")
    occurred_at: datetime = _partition_key()
    request_id: str = Field(sa_column=Column(String(REQUEST_ID_MAX_LENGTH), nullable=False))
    user_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    # The API key the caller authenticated with (null for a password login's token).
    api_key_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    client_ip: str | None = Field(default=None, sa_column=Column(INET, nullable=True))
    user_agent: str | None = Field(
        default=None, sa_column=Column(String(USER_AGENT_MAX_LENGTH), nullable=True)
    )
    method: str = Field(sa_column=Column(String(16), nullable=False))
    path: str = Field(sa_column=Column(String(PATH_MAX_LENGTH), nullable=False))
    status: int = Field(sa_column=Column(SmallInteger, nullable=False))
    duration_ms: float = Field(sa_column=Column(Double, nullable=False))

    __table_args__ = (
        # Lists are keyset-paginated on id (newest first); each filter has an index.
        Index("ix_access_logs_occurred_at", "occurred_at"),
        Index("ix_access_logs_user_id_id", "user_id", "id"),
        Index("ix_access_logs_request_id", "request_id"),
        Index("ix_access_logs_status_id", "status", "id"),
        Index("ix_access_logs_path_prefix", "path", postgresql_ops={"path": "varchar_pattern_ops"}),
        {"postgresql_partition_by": f"RANGE ({PARTITION_KEY})"},
    )


class DataChangeAction(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class DataChange(SQLModel, table=True):
    __tablename__: ClassVar[str] = "data_changes"

    id: int | None = _partitioned_id("data_changes")
    occurred_at: datetime = _partition_key(server_default=func.now())
    entity_type: str = Field(sa_column=Column(String(64), nullable=False))
    entity_id: str = Field(sa_column=Column(String(128), nullable=False))
    action: DataChangeAction = enum_field(DataChangeAction, "data_change_action")
    old_values: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    new_values: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    actor_user_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    api_key_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    request_id: str | None = Field(
        default=None, sa_column=Column(String(REQUEST_ID_MAX_LENGTH), nullable=True)
    )

    __table_args__ = (
        # An object's history: every change to (type, id), in order.
        Index("ix_data_changes_entity_type_entity_id_id", "entity_type", "entity_id", "id"),
        Index("ix_data_changes_actor_user_id_id", "actor_user_id", "id"),
        Index("ix_data_changes_request_id", "request_id"),
        Index("ix_data_changes_occurred_at", "occurred_at"),
        Index("ix_data_changes_action_id", "action", "id"),
        {"postgresql_partition_by": f"RANGE ({PARTITION_KEY})"},
    )


class AuditArchiveBatch(SQLModel, table=True):
    """One archived batch: the file it went to and exactly which rows. Written in the same
    transaction that deletes those rows, so a crash either archives a batch fully or not at all
    (a re-run rewrites the same file from the same rows)."""

    __tablename__: ClassVar[str] = "audit_archive_batches"

    id: int | None = _big_id()
    table_name: str = Field(sa_column=Column(String(64), nullable=False))
    first_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    row_count: int = Field(sa_column=Column(Integer, nullable=False))
    file_name: str = Field(sa_column=Column(String(255), nullable=False))
    file_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    archived_at: datetime = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )

    __table_args__ = (Index("uq_audit_archive_batches_file_name", "file_name", unique=True),)


APPEND_ONLY_TABLES = (AccessLog.__tablename__, DataChange.__tablename__)

# DDL text is %-formatted by SQLAlchemy, hence %% for plpgsql's %.
_APPEND_ONLY_FUNCTION = DDL(  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL.__init__ unannotated
    f"""CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' AND current_setting('{RETENTION_SETTING}', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit table %% is append-only: %% refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$"""
)
event.listen(metadata, "before_create", _APPEND_ONLY_FUNCTION)


def _append_only_triggers(table_name: str) -> list[DDL]:
    return [
        DDL(  # type: ignore[no-untyped-call]  # as above
            f"CREATE TRIGGER {table_name}_append_only BEFORE UPDATE OR DELETE ON {table_name} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        ),
        DDL(  # type: ignore[no-untyped-call]  # as above
            f"CREATE TRIGGER {table_name}_no_truncate BEFORE TRUNCATE ON {table_name} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        ),
    ]


for _table in (AccessLog.__table__, DataChange.__table__):  # type: ignore[attr-defined]  # SQLModel sets __table__
    for _trigger in _append_only_triggers(_table.name):
        event.listen(_table, "after_create", _trigger)


install_partitioning(metadata, [AccessLog.__table__, DataChange.__table__])  # type: ignore[attr-defined]  # SQLModel sets __table__

# The data-change triggers of the audited tables, and their functions (audit/changes.py).
install_schema(metadata)
