"""What every table model shares: the constraint naming convention and timestamp columns."""

import importlib
from datetime import datetime
from pathlib import Path

from sqlalchemy import Column, DateTime, Identity, Integer, MetaData, func, text
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


def id_field() -> int | None:
    return Field(
        default=None,
        sa_column=Column(Integer, Identity(always=False), primary_key=True),
    )


def created_at_field() -> datetime:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def updated_at_field() -> datetime:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True),
            nullable=False,
            server_default=func.now(),
            onupdate=func.now(),
        ),
    )


def version_field() -> int:
    return Field(default=1, sa_column=Column(Integer, nullable=False, server_default=text("1")))


def import_all_models() -> MetaData:
    """Import every slice's `models` module so the metadata holds every table, and return it.
    Slices are found on disk, so adding one needs no registration here."""
    package_dir = Path(__file__).resolve().parents[1]
    for slice_dir in sorted(package_dir.iterdir()):
        if (slice_dir / "models.py").is_file() and slice_dir.name != "core":
            importlib.import_module(f"backoffice.{slice_dir.name}.models")
    return metadata
