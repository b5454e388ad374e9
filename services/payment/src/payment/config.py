"""Settings of the payment service (env prefix `PAYMENT_`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from servicekit import ServiceSettings


class PaymentSettings(ServiceSettings):
    """Payment settings: the decline rule and the fault-injection knobs read at start."""

    service_name: ClassVar[str] = "payment"
    model_config = SettingsConfigDict(
        env_prefix="PAYMENT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    port: int = Field(default=8003, ge=1, le=65535)
    database_url: str = "sqlite:///.run/payment.db"

    #: Charges above this amount are declined (the simulated provider's only rule).
    decline_above_cents: int = Field(default=100_000, ge=0)
    #: Share of /charges* calls answered 503 "injected-fault".
    fault_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Delay added to every /charges* call.
    fault_latency_ms: int = Field(default=0, ge=0, le=600_000)
    #: Sleep (bounded) until the caller's timeout fires.
    fault_hang: bool = False
