"""What every table model shares: the constraint naming convention and timestamp columns."""

import importlib
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import DDL, Column, DateTime, Enum, Identity, Integer, MetaData, event, func, text
from sqlmodel import Field, SQLModel

# Stable constraint names let migrations diff cleanly and let errors be mapped by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = SQLModel.metadata

# Substring filters (`q`) are served by trigram GIN indexes: the extension comes first, in
# migrations and in `create_all` alike. pg_trgm is a trusted extension: no superuser needed.
TRIGRAM_OPS = "gin_trgm_ops"
_CREATE_TRIGRAM = DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL.__init__ unannotated
event.listen(metadata, "before_create", _CREATE_TRIGRAM)


# SQLModel's Field() is typed Any; each helper's return type is the field's Python type, which
# is what a model's annotation declares, so the casts only restate it.


def id_field() -> int | None:
    field = Field(default=None, sa_column=Column(Integer, Identity(always=False), primary_key=True))
    return cast("int | None", field)


def created_at_field() -> datetime:
    column = Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    return cast("datetime", Field(default=None, sa_column=column))


def updated_at_field() -> datetime:
    column = Column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    return cast("datetime", Field(default=None, sa_column=column))


def version_field() -> int:
    column = Column(Integer, nullable=False, server_default=text("1"))
    return cast("int", Field(default=1, sa_column=column))


def optimistic_locking(model: Any) -> dict[str, Any]:
    """Mapper arguments for a versioned model, returned from its `__mapper_args__`: every
    UPDATE and DELETE carries `WHERE version = :old` and bumps it, so a lost update fails."""
    return {"version_id_col": model.__table__.c.version, "eager_defaults": True}


def enum_field[E: StrEnum](enum: type[E], type_name: str, default: E | None = None) -> E:
    """A PostgreSQL enum column holding the members' values (required when no default). Its
    order is the declaration order, so sorting by it is meaningful (low < medium < high) and an
    index serves it."""
    column: Column[E] = Column(
        Enum(enum, name=type_name, values_callable=lambda members: [m.value for m in members]),
        nullable=False,
        server_default=None if default is None else default.value,
    )
    return cast("E", Field(default=default, sa_column=column))


def import_all_models() -> MetaData:
    """Import every slice's `models` module so the metadata holds every table, and return it.
    Slices are found on disk, so adding one needs no registration here."""
    package_dir = Path(__file__).resolve().parents[1]
    for slice_dir in sorted(package_dir.iterdir()):
        if (slice_dir / "models.py").is_file() and slice_dir.name != "core":
            importlib.import_module(f"backoffice.{slice_dir.name}.models")
    return metadata
