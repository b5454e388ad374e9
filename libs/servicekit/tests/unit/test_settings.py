from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict
from servicekit import ServiceSettings, async_database_url


class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")


@pytest.mark.parametrize(
    ("plain", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///.run/x.db", "sqlite+aiosqlite:///.run/x.db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_database_urls_get_the_async_driver(plain: str, expected: str) -> None:
    assert async_database_url(plain) == expected


@pytest.mark.parametrize("bad", ["mysql://h/db", "not a url"])
def test_unsupported_database_urls_are_refused_clearly(bad: str) -> None:
    with pytest.raises(ValueError, match="postgresql"):
        async_database_url(bad)


def test_placeholder_secret_is_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="DEMO_SERVICE_TOKEN is a placeholder"):
        DemoSettings()


def test_placeholder_secret_is_accepted_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEMO_ENVIRONMENT", raising=False)
    assert DemoSettings().service_token.get_secret_value() == "dev-service-token"


def test_real_secret_is_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("DEMO_SERVICE_TOKEN", "s3cr3t-token-value")
    assert DemoSettings().environment == "production"
