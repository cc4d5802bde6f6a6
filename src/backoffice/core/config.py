"""Application settings: the one place that reads the environment."""

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from fastapi import Depends, Request
from pydantic import Field, IPvAnyNetwork, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[3]

# Shown in .env.example so a fresh clone runs; production refuses to start with it.
EXAMPLE_SECRET_KEY = "dev-secret-key-change-me-0123456789abcdef0123456789"  # noqa: S105  # public on purpose
MIN_SECRET_KEY_BYTES = 32
MIN_METRICS_TOKEN_LENGTH = 16
EXAMPLE_SUPERUSER_EMAIL = "admin@example.com"
EXAMPLE_SUPERUSER_PASSWORD = "change-me-admin-password"  # noqa: S105  # dev default, refused in production


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class PoolMode(StrEnum):
    """What DATABASE_URL reaches: PostgreSQL itself or a session-pooling PgBouncer (a server
    connection per client connection), or a transaction-pooling PgBouncer (a server connection
    per transaction: several API nodes sharing one database, README "Scaling out")."""

    SESSION = "session"
    TRANSACTION = "transaction"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: Environment = Environment.DEVELOPMENT
    project_name: str = "Backoffice API"
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")] = "INFO"

    # HTTP server
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    max_request_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    # `POST /products/import` alone takes bodies up to this size (a CSV file; README,
    # "Spreadsheets"); the file is read whole and checked in one transaction.
    csv_import_max_bytes: Annotated[int, Field(ge=1024, le=256 * 1_048_576)] = 10_485_760

    # Database: unset means "start the embedded PostgreSQL under embedded_db_dir".
    database_url: str | None = None
    # The owner's URL, for migrations and the archive job; unset means DATABASE_URL. The app
    # itself should connect as a role that cannot rewrite the audit trail (docs/AUDIT_GUIDE.md).
    database_owner_url: str | None = None
    # `transaction`: DATABASE_URL goes through a transaction-pooling PgBouncer. The app then
    # prepares no statement that outlives its transaction, sends PostgreSQL no setting in the
    # start-up packet (PgBouncer refuses them) but stores them as its role's defaults in the
    # database, and keeps whatever needs a session to DATABASE_DIRECT_URL (README "Scaling out").
    database_pool_mode: PoolMode = PoolMode.SESSION
    # DATABASE_URL's role, straight to PostgreSQL (never through a transaction pooler): the
    # principal cache's LISTEN connection, and migrations and the archive job when
    # DATABASE_OWNER_URL is unset. Required in transaction mode while the principal cache is on.
    database_direct_url: str | None = None
    embedded_db_dir: Path = PROJECT_ROOT / ".data" / "postgres"
    # `task run` / `task serve` stop the embedded server they started when they exit; true
    # leaves it running for the next start (`task db-reset` still stops it).
    embedded_db_keep_running: bool = False
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_max_overflow: Annotated[int, Field(ge=0, le=200)] = 10
    # Connections of the hot read routes' own pool (asyncpg's, per worker), besides the
    # engine's DB_POOL_SIZE + DB_MAX_OVERFLOW (docs/PERFORMANCE.md says why).
    db_read_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 15_000
    # How long a statement waits for a lock (0: as long as its statement_timeout allows), and
    # how long a transaction may sit idle before the server ends its session (0: forever):
    # behind a transaction pooler, such a transaction pins one of the few server connections.
    db_lock_timeout_ms: Annotated[int, Field(ge=0)] = 0
    db_idle_in_transaction_timeout_ms: Annotated[int, Field(ge=0)] = 60_000
    # Outage bounds (README, "When the database fails"): how long a request waits for a new
    # connection, then for a free one from the pool, before it is answered 503.
    db_connect_timeout_ms: Annotated[int, Field(ge=100, le=60_000)] = 2_000
    db_pool_timeout_ms: Annotated[int, Field(ge=100, le=60_000)] = 2_000
    # A ping per checkout. Off: a connection the server closed (restart, failover) is already
    # noticed for free; on only where a network can drop a peer without a trace.
    db_pool_pre_ping: bool = False
    # /health/ready's own bound, on a connection of its own: an orchestrator hears "not ready"
    # in well under a second, whatever the pool is doing.
    health_timeout_ms: Annotated[int, Field(ge=50, le=10_000)] = 500
    migrations_dir: Path = PROJECT_ROOT / "migrations"

    # Secrets and tokens
    secret_key: SecretStr = SecretStr(EXAMPLE_SECRET_KEY)
    jwt_issuer: str = "backoffice-api"
    jwt_audience: str = "backoffice-api"
    access_token_ttl_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    refresh_token_ttl_days: Annotated[int, Field(ge=1, le=365)] = 30
    # How often each app process deletes expired refresh tokens and revoked-token rows (one
    # process at a time does the work; auth/retention.py); 0 switches the job off.
    token_purge_interval_minutes: Annotated[float, Field(ge=0)] = 60

    # Idempotency-Key (idempotency/, README "Safe retries"): a key's stored answer is replayed
    # for this long, then the key may be used afresh and is purged (every
    # IDEMPOTENCY_PURGE_INTERVAL_MINUTES, one process at a time; 0 switches the job off). A
    # request holds its key for IDEMPOTENCY_LEASE_SECONDS: a repeat meanwhile is a 409, and a
    # key whose request died before committing runs again once the lease is over. Keep it
    # above the longest request (DB_STATEMENT_TIMEOUT_MS bounds each statement).
    idempotency_key_ttl_hours: Annotated[int, Field(ge=1, le=24 * 365)] = 24
    idempotency_lease_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    idempotency_purge_interval_minutes: Annotated[float, Field(ge=0)] = 60

    # Principal cache (auth/principal_cache.py, SECURITY.md): each worker remembers the
    # principal of every access token it verified, at most this many, and forgets them all on
    # any change to users, roles, grants or sessions: the worker that made the change at once,
    # every other worker within 1 s (PostgreSQL LISTEN/NOTIFY, on a connection of its own to
    # DATABASE_DIRECT_URL, else DATABASE_URL: it must reach PostgreSQL directly, not through a
    # transaction-pooling PgBouncer). A worker that cannot confirm its listener within 1 s
    # stops using its cache.
    principal_cache_enabled: bool = True
    principal_cache_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000

    # Brute force: lock an account after repeated failures; limit login attempts per client IP
    login_max_failures: Annotated[int, Field(ge=1)] = 5
    login_lockout_minutes: Annotated[int, Field(ge=1)] = 15
    login_rate_limit: Annotated[str, Field(pattern=r"^\d+\s*(/|per)\s*\d*\s*[a-z]+$")] = "10/minute"
    # `PUT /users/me/password`, counted per client IP and per user
    password_change_rate_limit: Annotated[str, Field(pattern=r"^\d+\s*(/|per)\s*\d*\s*[a-z]+$")] = (
        "10/minute"  # noqa: S105  # a rate, not a password
    )
    # Requests per API key (auth/api_keys.py), whatever its permissions
    api_key_rate_limit: Annotated[str, Field(pattern=r"^\d+\s*(/|per)\s*\d*\s*[a-z]+$")] = (
        "600/minute"
    )
    # argon2 hashes at once per process (each takes 64 MiB and a core for a fraction of a
    # second, in a worker thread); more wait their turn, so a login flood cannot starve the rest
    password_hash_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    # e.g. redis://localhost:6379/0: share the limit between workers and hosts (memory if unset,
    # one budget per worker); required in transaction mode, which means several nodes.
    rate_limit_storage_url: str | None = None

    # Client IPs: X-Forwarded-For is believed only when the peer is one of these networks
    # (e.g. ["10.0.0.0/8"] behind a load balancer); otherwise the peer address is the client.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)

    # Audit trail (docs/AUDIT_GUIDE.md)
    audit_access_enabled: bool = True
    audit_data_enabled: bool = True
    # Path prefixes whose requests are not access-logged (probes, docs, assets).
    audit_skip_paths: list[str] = Field(
        default_factory=lambda: [
            "/health",
            "/metrics",
            "/docs",
            "/redoc",
            "/openapi.json",
            "/favicon.ico",
        ]
    )
    # Access entries wait in a bounded in-memory queue; when it is full the oldest are dropped
    # (and counted) rather than slowing requests down.
    audit_queue_max: Annotated[int, Field(ge=1)] = 10_000
    audit_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    audit_flush_interval_ms: Annotated[int, Field(ge=10)] = 1_000
    # scripts/archive_audit.py: rows older than this many days move to the archive directory.
    audit_retention_days: Annotated[int, Field(ge=1)] = 90
    audit_archive_dir: Path = PROJECT_ROOT / ".data" / "audit-archive"

    # Metrics (core/metrics.py): Prometheus exposition at /metrics, a 404 when disabled. With a
    # token set, scrapes must send `Authorization: Bearer <token>`; production refuses to start
    # with metrics on and no token.
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None

    # Swagger UI (/docs), ReDoc (/redoc) and the OpenAPI document (/openapi.json). Unset means
    # on, except in production, where they map the whole attack surface for anyone who asks.
    docs_enabled: bool | None = None

    # The first superuser, created by `task seed` and the first start of the embedded database
    first_superuser_email: str = EXAMPLE_SUPERUSER_EMAIL
    first_superuser_password: SecretStr = SecretStr(EXAMPLE_SUPERUSER_PASSWORD)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def serves_docs(self) -> bool:
        return not self.is_production if self.docs_enabled is None else self.docs_enabled

    @property
    def transaction_pooled(self) -> bool:
        return self.database_pool_mode is PoolMode.TRANSACTION

    @model_validator(mode="after")
    def _refuse_incomplete_scale_out(self) -> Self:
        """A transaction pooler is how several nodes share one database: what each node keeps
        to itself (a session, an in-memory limit) must live elsewhere, or it is refused here."""
        if not self.transaction_pooled:
            return self
        mode = "DATABASE_POOL_MODE=transaction"
        if self.database_url is None:
            raise ValueError(f"{mode} needs DATABASE_URL: the embedded PostgreSQL has no pooler")
        if self.principal_cache_enabled and self.database_direct_url is None:
            raise ValueError(
                f"{mode} needs DATABASE_DIRECT_URL (or PRINCIPAL_CACHE_ENABLED=false): the "
                "principal cache's LISTEN cannot go through a transaction pooler"
            )
        if self.rate_limit_storage_url is None:
            raise ValueError(
                f"{mode} (several nodes) needs RATE_LIMIT_STORAGE_URL, e.g. redis://redis:6379/0: "
                "an in-memory login limit would give each worker its own budget"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if not self.is_production:
            return self
        secret = self.secret_key.get_secret_value()
        if secret == EXAMPLE_SECRET_KEY:
            raise ValueError("SECRET_KEY is the example value; set a real secret in production")
        if len(secret.encode()) < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_BYTES} bytes")
        if self.database_url is None:
            raise ValueError("DATABASE_URL must be set in production")
        if self.first_superuser_password.get_secret_value() == EXAMPLE_SUPERUSER_PASSWORD:
            raise ValueError(
                "FIRST_SUPERUSER_PASSWORD is the example value; set a real one in production"
            )
        token = self.metrics_token.get_secret_value() if self.metrics_token else ""
        if self.metrics_enabled and len(token) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(
                f"METRICS_TOKEN must be set, {MIN_METRICS_TOKEN_LENGTH} characters at least, in "
                "production while METRICS_ENABLED is on: /metrics would otherwise answer anyone"
            )
        return self


def settings_problems(error: ValidationError) -> str:
    """Settings refused at start-up, on one line: `NAME: what is wrong` for a value, our
    validators' own sentence for a combination."""
    problems = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        names = ".".join(str(part) for part in problem["loc"]).upper()
        problems.append(f"{names}: {message}" if names else message)
    return "invalid settings: " + "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    return Settings()


# Dependencies are `async def` even when they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, which costs more than the work itself on the hot path.
async def get_settings_of(request: Request) -> Settings:
    """The settings of the app serving the request (create_app's), not the cached global ones:
    two apps in one process (tests) each keep their own."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_of)]
