"""Gateway settings: `GATEWAY_*` environment variables (and an optional `.env`)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from servicekit import ServiceSettings

from gateway.keys import DEMO_API_KEYS, DEMO_KEYS, ApiKey, digest, parse_api_keys


class GatewaySettings(ServiceSettings):
    """The public entry. No database: readiness depends on nothing but the process."""

    service_name: ClassVar[str] = "gateway"
    secret_fields: ClassVar[tuple[str, ...]] = ("service_token", "admin_token")
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Validation errors must not echo GATEWAY_API_KEYS: it holds the keys themselves.
        hide_input_in_errors=True,
    )

    port: int = Field(default=8000, ge=1, le=65535)
    # NoDecode: the value is our own `key:customer[:scopes]` list, not JSON.
    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = ()
    admin_token: SecretStr = SecretStr("dev-admin-token")
    inventory_url: str = "http://127.0.0.1:8002"
    order_url: str = "http://127.0.0.1:8001"
    # Checkout waits for order's own calls to inventory and payment, so it gets a longer
    # budget than the plain reads (which use http_timeout).
    order_timeout: float = Field(default=8.0, gt=0, le=60)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_api_keys(value)
        return value

    @field_validator("inventory_url", "order_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"upstream URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_or_refuse_keys(self) -> GatewaySettings:
        if self.environment == "development":
            if not self.api_keys:
                self.api_keys = parse_api_keys(DEMO_API_KEYS)
            return self
        if not self.api_keys:
            raise ValueError(
                f"GATEWAY_API_KEYS is empty; set at least one key:customer_id "
                f"(refused because GATEWAY_ENVIRONMENT={self.environment})"
            )
        demo = {digest(k) for k in DEMO_KEYS}
        if any(k.key_digest in demo for k in self.api_keys):
            raise ValueError(
                "GATEWAY_API_KEYS contains a demo key (demo-key, loadtest-key); "
                f"refused because GATEWAY_ENVIRONMENT={self.environment}"
            )
        return self
