"""Settings of the order service (environment variables with the `ORDER_` prefix)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from servicekit import ServiceSettings


class OrderSettings(ServiceSettings):
    """Order service settings; downstream URLs and saga timing."""

    service_name: ClassVar[str] = "order"
    model_config = SettingsConfigDict(env_prefix="ORDER_", env_file=".env", extra="ignore")

    port: int = Field(default=8001, ge=1, le=65535)
    database_url: str = "sqlite:///.run/order.db"
    inventory_url: str = "http://127.0.0.1:8002"
    payment_url: str = "http://127.0.0.1:8003"
    #: How often the background recovery pass runs; 0 runs it once at start-up only.
    saga_recovery_interval_seconds: float = Field(default=10.0, ge=0, le=3600)
    #: A saga untouched for this long is considered abandoned by its request.
    saga_stale_seconds: float = Field(default=30.0, ge=0, le=86_400)
    reservation_ttl_seconds: int = Field(default=300, ge=1, le=3600)
