import pytest
from pydantic import ValidationError

from backoffice.core.config import (
    EXAMPLE_SECRET_KEY,
    EXAMPLE_SUPERUSER_PASSWORD,
    Environment,
    Settings,
)

PRODUCTION_URL = "postgresql://app:pw@db/backoffice"


def production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": Environment.PRODUCTION,
        "secret_key": "s" * 48,
        "database_url": PRODUCTION_URL,
        "first_superuser_password": "a real admin password",
        "metrics_token": "m" * 32,
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]


def test_development_defaults_need_no_configuration() -> None:
    settings = Settings(_env_file=None)

    assert settings.environment is Environment.DEVELOPMENT
    assert settings.database_url is None
    assert settings.secret_key.get_secret_value() == EXAMPLE_SECRET_KEY


def test_production_accepts_a_real_configuration() -> None:
    assert production().is_production


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret_key": EXAMPLE_SECRET_KEY}, "example"),
        ({"secret_key": "short"}, "32 bytes"),
        ({"database_url": None}, "DATABASE_URL"),
        ({"first_superuser_password": EXAMPLE_SUPERUSER_PASSWORD}, "FIRST_SUPERUSER_PASSWORD"),
        ({"metrics_token": None}, "METRICS_TOKEN"),
        ({"metrics_token": "short"}, "METRICS_TOKEN"),
    ],
)
def test_production_refuses_unsafe_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        production(**overrides)


def test_secret_key_is_not_revealed_by_repr() -> None:
    assert "s" * 48 not in repr(production())


def test_production_without_metrics_needs_no_metrics_token() -> None:
    assert production(metrics_enabled=False, metrics_token=None).is_production


@pytest.mark.parametrize(
    ("environment", "docs_enabled", "served"),
    [
        (Environment.DEVELOPMENT, None, True),
        (Environment.PRODUCTION, None, False),
        (Environment.PRODUCTION, True, True),
        (Environment.DEVELOPMENT, False, False),
    ],
)
def test_docs_are_off_in_production_unless_turned_on(
    environment: Environment, docs_enabled: bool | None, served: bool
) -> None:
    settings = production(environment=environment, docs_enabled=docs_enabled)

    assert settings.serves_docs is served
