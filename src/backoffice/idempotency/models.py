"""One row per key a caller has used: its claim while the request runs, then the answer."""

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Final
from uuid import UUID

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from backoffice.core.models import metadata  # noqa: F401  # the naming convention applies

KEY_MAX_LENGTH: Final = 255
SCOPE_MAX_LENGTH: Final = 160


class KeyState(StrEnum):
    # Claimed by a request that has not committed: released if it never does.
    RUNNING = "running"
    # The route's transaction committed (the same COMMIT set this): its answer is being stored,
    # or was lost with the process that held it. Never run again.
    APPLIED = "applied"
    # The answer is stored: replayed to every repeat.
    COMPLETED = "completed"


class IdempotencyKey(SQLModel, table=True):
    __tablename__: ClassVar[str] = "idempotency_keys"

    # Whose key (service.caller_scope): keys are unique per caller, not globally.
    scope: str = Field(sa_column=Column(String(SCOPE_MAX_LENGTH), primary_key=True))
    key: str = Field(sa_column=Column(String(KEY_MAX_LENGTH), primary_key=True))
    # HMAC-SHA-256 (the app's secret key) of the method, path, query and body: a repeat must
    # be the same request, and a body's password is not a cheap guess away (service.py).
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    # Which attempt holds the claim: a stale attempt that lost it cannot mark it applied.
    attempt: UUID = Field(sa_column=Column(Uuid, nullable=False))
    lease_until: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    response_status: int | None = Field(default=None, sa_column=Column(SmallInteger))
    # [[name, value], ...]: the headers a replay must repeat (Location, ETag, Content-Type).
    response_headers: list[Any] | None = Field(default=None, sa_column=Column(JSONB))
    response_body: bytes | None = Field(default=None, sa_column=Column(LargeBinary))

    __table_args__ = (
        CheckConstraint("state IN ('running', 'applied', 'completed')", name="state"),
        CheckConstraint(
            "(state = 'completed') = (response_status IS NOT NULL)", name="completed_has_answer"
        ),
        # The purge finds expired keys by this.
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )
