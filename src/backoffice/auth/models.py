import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    ARRAY,
    DDL,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Uuid,
    event,
    func,
    text,
)
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from backoffice.auth.permissions import Action, Module
from backoffice.core.models import (
    created_at_field,
    id_field,
    metadata,
    optimistic_locking,
    updated_at_field,
    version_field,
)

EMAIL_MAX_LENGTH = 254
NAME_MAX_LENGTH = 200
ROLE_NAME_MAX_LENGTH = 64

_MODULES = ", ".join(f"'{module}'" for module in Module)
_ACTIONS = ", ".join(f"'{action}'" for action in Action)


class User(SQLModel, table=True):
    __tablename__: ClassVar[str] = "users"
    __audit_entity__: ClassVar[str] = "user"
    __audit_masked__: ClassVar[frozenset[str]] = frozenset({"hashed_password"})

    id: int | None = id_field()
    email: str = Field(sa_column=Column(String(EMAIL_MAX_LENGTH), nullable=False))
    full_name: str = Field(sa_column=Column(String(NAME_MAX_LENGTH), nullable=False))
    hashed_password: str = Field(sa_column=Column(String(255), nullable=False))
    is_active: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true"))
    )
    is_superuser: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    # A machine, not a person (docs/AUTHENTICATION_GUIDE.md, "Service accounts"): it never logs
    # in with a password and acts only through its API keys.
    is_service_account: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    failed_login_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    locked_until: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # Bumped to end every session at once (password change, deactivation, role change):
    # access tokens carry the value they were issued under.
    token_version: int = Field(
        default=1, sa_column=Column(Integer, nullable=False, server_default=text("1"))
    )
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
    version: int = version_field()

    __table_args__ = (
        Index("uq_users_email_lower", func.lower(Column("email")), unique=True),
        Index("ix_users_created_at_id", "created_at", "id"),
        CheckConstraint("failed_login_count >= 0", name="failed_login_count_non_negative"),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805  # a declared_attr gets the class
        return optimistic_locking(cls)


class Role(SQLModel, table=True):
    __tablename__: ClassVar[str] = "roles"
    __audit_entity__: ClassVar[str] = "role"

    id: int | None = id_field()
    name: str = Field(sa_column=Column(String(ROLE_NAME_MAX_LENGTH), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(String(500), nullable=True))
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
    version: int = version_field()

    __table_args__ = (
        Index("uq_roles_name_lower", func.lower(Column("name")), unique=True),
        Index("ix_roles_name_id", "name", "id"),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805  # a declared_attr gets the class
        return optimistic_locking(cls)


class RoleGrant(SQLModel, table=True):
    """What a role may do in one module; `read` is implied by any grant."""

    __tablename__: ClassVar[str] = "role_grants"
    __audit_entity__: ClassVar[str] = "role_grant"

    role_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    module: str = Field(sa_column=Column(String(32), primary_key=True, nullable=False))
    actions: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(16)), nullable=False, server_default=text("'{}'")),
    )

    __table_args__ = (
        CheckConstraint(f"module IN ({_MODULES})", name="module_known"),
        CheckConstraint(f"actions <@ ARRAY[{_ACTIONS}]::varchar[]", name="actions_known"),
    )


class UserRole(SQLModel, table=True):
    __tablename__: ClassVar[str] = "user_roles"
    __audit_entity__: ClassVar[str] = "user_role"

    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    role_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )

    __table_args__ = (Index("ix_user_roles_role_id", "role_id"),)


class RefreshToken(SQLModel, table=True):
    """One row per issued refresh token; only its SHA-256 is stored. Tokens descended from one
    login share a `family_id`, so a replayed token can revoke its whole family."""

    __tablename__: ClassVar[str] = "refresh_tokens"

    id: int | None = id_field()
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    family_id: uuid.UUID = Field(sa_column=Column(Uuid, nullable=False, index=True))
    # Indexed, as is expires_at, for the purge (auth/retention.py): deleting a token sets
    # these to NULL in the rows pointing at it, a scan of the whole table per deleted row
    # without an index.
    parent_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("refresh_tokens.id", ondelete="SET NULL"), index=True),
    )
    replaced_by_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("refresh_tokens.id", ondelete="SET NULL"), index=True),
    )
    expires_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = created_at_field()


class UserRevokedToken(SQLModel, table=True):
    """Access tokens revoked before they expire (logout), by `jti`; purgeable after expiry."""

    __tablename__: ClassVar[str] = "user_revoked_tokens"

    jti: str = Field(sa_column=Column(String(64), primary_key=True, nullable=False))
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    expires_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    created_at: datetime = created_at_field()


API_KEY_PUBLIC_ID_LENGTH = 16
API_KEY_NAME_MAX_LENGTH = 100
_PERMISSIONS = ", ".join(f"'{module}:{action}'" for module in Module for action in Action)


class ApiKey(SQLModel, table=True):
    """A service account's credential (auth/api_keys.py). Only the SHA-256 of the key is
    stored; `public_id`, the part of the key after its prefix, finds the row. The key grants
    exactly `permissions` ("module:action"), never more than its creator held."""

    __tablename__: ClassVar[str] = "api_keys"
    __audit_entity__: ClassVar[str] = "api_key"
    # Written by the usage flush, not by anyone's decision: no data-change row of its own.
    __audit_bookkeeping__: ClassVar[frozenset[str]] = frozenset({"last_used_at"})

    id: int | None = id_field()
    public_id: str = Field(sa_column=Column(String(API_KEY_PUBLIC_ID_LENGTH), nullable=False))
    key_hash: str = Field(sa_column=Column(String(64), nullable=False))
    user_id: int = Field(
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(sa_column=Column(String(API_KEY_NAME_MAX_LENGTH), nullable=False))
    permissions: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(String(32)), nullable=False, server_default=text("'{}'")),
    )
    created_by_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    last_used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()
    version: int = version_field()

    __table_args__ = (
        Index("uq_api_keys_public_id", "public_id", unique=True),
        Index("ix_api_keys_created_at_id", "created_at", "id"),
        Index("ix_api_keys_user_id", "user_id"),
        Index("ix_api_keys_created_by_id", "created_by_id"),
        CheckConstraint(
            f"permissions <@ ARRAY[{_PERMISSIONS}]::varchar[]", name="permissions_known"
        ),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805  # a declared_attr gets the class
        return optimistic_locking(cls)


# --- announcing principal changes (auth/principal_cache.py) ------------------------------
# The same function and triggers as migrations/20261202040000_principal_invalidation.sql,
# which says why each exists (the migration test compares both schemas object by object).
PRINCIPAL_CHANNEL = "backoffice_principals"

_ANNOUNCE_FUNCTION = DDL(  # type: ignore[no-untyped-call]  # SQLAlchemy leaves DDL.__init__ unannotated
    "CREATE OR REPLACE FUNCTION announce_principal_change() RETURNS trigger LANGUAGE plpgsql "
    f"""AS $$
BEGIN
  PERFORM pg_notify('{PRINCIPAL_CHANNEL}', TG_TABLE_NAME);
  RETURN NULL;
END;
$$"""
)
event.listen(metadata, "before_create", _ANNOUNCE_FUNCTION)

_ANNOUNCE = "EXECUTE FUNCTION announce_principal_change()"
# The columns of a user that the principal query reads.
PRINCIPAL_USER_FIELDS = (
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "token_version",
    "id",
)
_USER_FIELD_CHANGED = " OR ".join(
    f"OLD.{name} IS DISTINCT FROM NEW.{name}" for name in PRINCIPAL_USER_FIELDS
)
# The columns of an API key that its principal query reads.
API_KEY_PRINCIPAL_FIELDS = (
    "public_id",
    "key_hash",
    "user_id",
    "permissions",
    "expires_at",
    "revoked_at",
)
_API_KEY_FIELD_CHANGED = " OR ".join(
    f"OLD.{name} IS DISTINCT FROM NEW.{name}" for name in API_KEY_PRINCIPAL_FIELDS
)
_PRINCIPAL_TRIGGERS: dict[str, list[str]] = {
    "users": [
        f"users_principal_changed AFTER UPDATE OF {', '.join(PRINCIPAL_USER_FIELDS)} ON users "
        f"FOR EACH ROW WHEN ({_USER_FIELD_CHANGED})",
        "users_principal_deleted AFTER DELETE ON users FOR EACH ROW",
        "users_principal_truncated AFTER TRUNCATE ON users FOR EACH STATEMENT",
    ],
    "user_roles": [
        "user_roles_principal_changed AFTER INSERT OR UPDATE OR DELETE ON user_roles FOR EACH ROW",
        "user_roles_principal_truncated AFTER TRUNCATE ON user_roles FOR EACH STATEMENT",
    ],
    "role_grants": [
        "role_grants_principal_changed AFTER INSERT OR UPDATE OR DELETE ON role_grants "
        "FOR EACH ROW",
        "role_grants_principal_truncated AFTER TRUNCATE ON role_grants FOR EACH STATEMENT",
    ],
    "user_revoked_tokens": [
        "user_revoked_tokens_principal_changed AFTER INSERT OR UPDATE ON user_revoked_tokens "
        "FOR EACH ROW",
    ],
    "refresh_tokens": [
        "refresh_tokens_principal_changed AFTER UPDATE ON refresh_tokens FOR EACH ROW "
        "WHEN (OLD.revoked_at IS NULL AND ("
        "(NEW.revoked_at IS NOT NULL AND NEW.replaced_by_id IS NULL) "
        "OR NEW.family_id IS DISTINCT FROM OLD.family_id "
        "OR NEW.user_id IS DISTINCT FROM OLD.user_id OR NEW.expires_at < OLD.expires_at))",
        "refresh_tokens_principal_deleted AFTER DELETE ON refresh_tokens FOR EACH ROW "
        "WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())",
        "refresh_tokens_principal_truncated AFTER TRUNCATE ON refresh_tokens FOR EACH STATEMENT",
    ],
    # migrations/20261202080000_api_keys.sql: a key revoked, shortened, re-scoped, moved or
    # deleted. Its use (last_used_at) and a new key change no principal.
    "api_keys": [
        f"api_keys_principal_changed AFTER UPDATE OF {', '.join(API_KEY_PRINCIPAL_FIELDS)} "
        f"ON api_keys FOR EACH ROW WHEN ({_API_KEY_FIELD_CHANGED})",
        "api_keys_principal_deleted AFTER DELETE ON api_keys FOR EACH ROW",
        "api_keys_principal_truncated AFTER TRUNCATE ON api_keys FOR EACH STATEMENT",
    ],
}
for _table_name, _triggers in _PRINCIPAL_TRIGGERS.items():
    for _trigger in _triggers:
        event.listen(
            metadata.tables[_table_name],
            "after_create",
            DDL(f"CREATE TRIGGER {_trigger} {_ANNOUNCE}"),  # type: ignore[no-untyped-call]  # as above
        )
