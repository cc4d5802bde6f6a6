"""The settings of a deployment of several nodes behind a transaction-pooling PgBouncer:
refused at start-up when incomplete, and what each one changes."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backoffice.core.config import PoolMode, Settings, settings_problems
from backoffice.core.database import owner_database_url
from tests.live_server import server_environment

POOLED_URL = "postgresql://app:pw@pgbouncer:6432/backoffice"
DIRECT_URL = "postgresql://app:pw@db:5432/backoffice"
OWNER_URL = "postgresql://owner:pw@db:5432/backoffice"
REDIS_URL = "redis://redis:6379/0"


def scaled_out(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_pool_mode": "transaction",
        "database_url": POOLED_URL,
        "database_direct_url": DIRECT_URL,
        "rate_limit_storage_url": REDIS_URL,
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]


def test_session_mode_is_the_default_and_needs_nothing_more() -> None:
    settings = Settings(_env_file=None)

    assert settings.database_pool_mode is PoolMode.SESSION
    assert not settings.transaction_pooled


def test_transaction_mode_accepts_a_complete_configuration() -> None:
    assert scaled_out().transaction_pooled


def test_transaction_mode_without_the_principal_cache_needs_no_direct_url() -> None:
    settings = scaled_out(database_direct_url=None, principal_cache_enabled=False)

    assert settings.transaction_pooled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"database_direct_url": None}, "needs DATABASE_DIRECT_URL"),
        ({"rate_limit_storage_url": None}, "needs RATE_LIMIT_STORAGE_URL"),
        ({"database_url": None}, "needs DATABASE_URL"),
    ],
)
def test_transaction_mode_refuses_an_incomplete_configuration(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        scaled_out(**overrides)


def test_an_unknown_pool_mode_is_refused() -> None:
    with pytest.raises(ValidationError, match="'session' or 'transaction'"):
        scaled_out(database_pool_mode="statement")


def test_refused_settings_are_told_on_one_line() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, port=0, database_pool_mode="transaction")

    told = settings_problems(refused.value)

    assert "\n" not in told
    assert told.startswith("invalid settings: PORT: Input should be greater than or equal to 1")


@pytest.mark.parametrize(
    ("overrides", "owner"),
    [
        ({}, DIRECT_URL),  # never through the pooler: migrations hold a session-level lock
        ({"database_owner_url": OWNER_URL}, OWNER_URL),
        ({"database_pool_mode": "session", "database_direct_url": None}, POOLED_URL),
    ],
)
def test_migrations_and_the_archive_job_connect_directly_in_transaction_mode(
    overrides: dict[str, object], owner: str
) -> None:
    assert owner_database_url(scaled_out(**overrides)) == owner


def test_serve_refuses_an_incomplete_scale_out_in_one_line(tmp_path: Path) -> None:
    """The real command, before any connection: exit 1 and one line that says what is missing."""
    environment = server_environment(
        DATABASE_POOL_MODE="transaction", DATABASE_URL=POOLED_URL, RATE_LIMIT_STORAGE_URL=REDIS_URL
    )
    refused = subprocess.run(  # our own interpreter and module
        [sys.executable, "-m", "backoffice", "serve"],
        cwd=tmp_path,  # no developer's .env
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "backoffice serve: invalid settings: DATABASE_POOL_MODE=transaction needs "
        "DATABASE_DIRECT_URL (or PRINCIPAL_CACHE_ENABLED=false): the principal cache's LISTEN "
        "cannot go through a transaction pooler"
    ]
