"""Settings: one pydantic-settings base class, a subclass per service with its env prefix.

Configuration comes only from environment variables (and an optional `.env`). Each service
reads its own prefix (`ORDER_`, `INVENTORY_`, `PAYMENT_`, `GATEWAY_`); the standard `OTEL_*`
variables belong to the OpenTelemetry SDK and are not mirrored here.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "staging", "production"]

#: Secrets that ship in the template. They keep `make up` working on a fresh clone and are
#: refused everywhere but in development.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "dev-service-token", "dev-admin-token"}
)


def async_database_url(url: str) -> str:
    """Return `url` with the async driver the kit uses (asyncpg, aiosqlite).

    A plain `postgresql://` or `sqlite:///` URL is accepted; an explicit driver is kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"not a database URL: {url!r} (expected postgresql://... or sqlite:///...)"
        )
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+asyncpg://{rest}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        return url
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite:///")


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set `service_name` and `env_prefix`."""

    # hide_input_in_errors: a bad DATABASE_URL or key list must not print its secrets.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    service_name: ClassVar[str] = "service"
    #: Names of the fields that hold secrets, checked against `PLACEHOLDER_SECRETS`.
    secret_fields: ClassVar[tuple[str, ...]] = ("service_token",)

    environment: Environment = "development"
    version: str = "0.1.0"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"

    database_url: str = ""
    redis_url: str | None = None

    # Pool sizing: pool_size ~= peak concurrent DB work per worker (requests/s x seconds of
    # DB time per request); workers x (pool_size + max_overflow) must stay below the server's
    # max_connections. Waiting longer than pool_timeout fails fast with a 503.
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout: float = Field(default=2.0, gt=0, le=60)
    db_pool_recycle: int = Field(default=1800, ge=-1)

    service_token: SecretStr = SecretStr("dev-service-token")
    http_timeout: float = Field(default=2.0, gt=0, le=60)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment == "development":
            return self
        for name in self.secret_fields:
            value = getattr(self, name)
            raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
            if raw.strip().lower() in PLACEHOLDER_SECRETS:
                prefix = str(self.model_config.get("env_prefix", "")).upper()
                raise ValueError(
                    f"{prefix}{name.upper()} is a placeholder secret; set a real value "
                    f"(refused because {prefix}ENVIRONMENT={self.environment})"
                )
        return self

    @property
    def async_database_url(self) -> str:
        """The database URL with the async driver chosen by the kit."""
        return async_database_url(self.database_url)
