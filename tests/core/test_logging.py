"""What a log line may hold: no local variables in any traceback, no secret at any depth, and a
500 that costs a few kilobytes, in the production (JSON) and development (console) renderers."""

import time

import pytest
import structlog
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from backoffice.auth.models import User
from backoffice.auth.repository import TokenRepository, UserRepository
from backoffice.core.config import Environment, Settings
from backoffice.core.logging import REDACTED, configure_logging, redacted
from tests.support.users import LOGIN, REFRESH, create_user, tokens_for

PLAINTEXT_PASSWORD = "plaintext-password-in-flight-7f3a"  # test data, never stored
MAX_LOG_BYTES = 10_000  # a 500 costs a few kilobytes; locals made it megabytes


def _use_renderer(settings: Settings, environment: Environment) -> None:
    """Log as `environment` does, to this test's captured stderr."""
    configure_logging(settings.model_copy(update={"environment": environment}))
    # Production caches loggers on first use; tests must be able to configure again.
    structlog.configure(cache_logger_on_first_use=False)


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database fails under the login and under the refresh (a pool time-out, a
    restart): the app answers 500 and logs the error with its traceback."""

    async def fail(*_args: object, **_kwargs: object) -> None:
        raise ConnectionResetError("connection to the database was lost")

    monkeypatch.setattr(UserRepository, "reserve_password_attempt", fail)
    monkeypatch.setattr(TokenRepository, "get_for_update", fail)


@pytest.fixture
async def user(session: AsyncSession) -> User:
    return await create_user(session, email="logs@example.com")


@pytest.mark.parametrize("environment", [Environment.PRODUCTION, Environment.DEVELOPMENT])
@pytest.mark.usefixtures("database_down")
async def test_a_500_during_login_logs_no_password_and_stays_small(
    anonymous_client: AsyncClient,
    settings: Settings,
    user: User,
    capsys: pytest.CaptureFixture[str],
    environment: Environment,
) -> None:
    capsys.readouterr()
    _use_renderer(settings, environment)

    started = time.perf_counter()
    response = await anonymous_client.post(
        LOGIN, data={"username": user.email, "password": PLAINTEXT_PASSWORD}
    )
    elapsed = time.perf_counter() - started

    logged = capsys.readouterr().err
    assert response.status_code == 500
    assert "request.unhandled_error" in logged
    assert "ConnectionResetError" in logged  # the traceback is there...
    assert PLAINTEXT_PASSWORD not in logged  # ...without the locals that held the password
    assert len(logged.encode()) < MAX_LOG_BYTES, len(logged.encode())
    assert elapsed < 5  # rendering every frame's locals took tens of seconds


@pytest.mark.parametrize("environment", [Environment.PRODUCTION, Environment.DEVELOPMENT])
@pytest.mark.usefixtures("database_down")
async def test_a_500_during_a_token_refresh_logs_no_refresh_token(
    anonymous_client: AsyncClient,
    session: AsyncSession,
    settings: Settings,
    user: User,
    capsys: pytest.CaptureFixture[str],
    environment: Environment,
) -> None:
    pair = await tokens_for(session, settings, user)
    capsys.readouterr()
    _use_renderer(settings, environment)

    response = await anonymous_client.post(REFRESH, json={"refresh_token": pair.refresh_token})

    logged = capsys.readouterr().err
    assert response.status_code == 500
    assert "ConnectionResetError" in logged
    assert pair.refresh_token not in logged
    assert len(logged.encode()) < MAX_LOG_BYTES, len(logged.encode())


@pytest.mark.parametrize("environment", [Environment.PRODUCTION, Environment.DEVELOPMENT])
def test_redaction_reaches_secrets_nested_at_any_depth(
    settings: Settings, capsys: pytest.CaptureFixture[str], environment: Environment
) -> None:
    _use_renderer(settings, environment)

    structlog.get_logger("test").warning(
        "careless",
        form={"username": "ada", "password": "hunter2"},
        batch=[{"user": {"refresh_token": "rt-nested"}}, ("tuple", {"client_secret": "cs-1"})],
        user_id=7,
    )

    logged = capsys.readouterr().err
    for secret in ("hunter2", "rt-nested", "cs-1"):
        assert secret not in logged
    assert "ada" in logged
    assert "user_id" in logged


def test_redacted_copies_and_masks_without_touching_the_original() -> None:
    original = {"a": [{"password": "p", "n": 1}], "t": ({"api_key": "k"},), "token": "t"}

    masked = redacted(original)

    assert masked == {
        "a": [{"password": REDACTED, "n": 1}],
        "t": ({"api_key": REDACTED},),
        "token": REDACTED,
    }
    assert original["token"] == "t"  # the caller's data is left alone
    assert redacted("plain") == "plain"
