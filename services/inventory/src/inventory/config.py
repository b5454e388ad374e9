"""Settings of the inventory service (environment variables prefixed `INVENTORY_`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from servicekit import ServiceSettings


class InventorySettings(ServiceSettings):
    """Inventory settings; everything else comes from `ServiceSettings`."""

    service_name: ClassVar[str] = "inventory"
    model_config = SettingsConfigDict(env_prefix="INVENTORY_", env_file=".env", extra="ignore")

    port: int = Field(default=8002, ge=1, le=65535)
    database_url: str = "sqlite:///.run/inventory.db"
    #: How often the background sweeper releases reservations past their expiry.
    reservation_sweep_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: Hold time of a reservation whose request names no `ttl_seconds`.
    default_ttl_seconds: int = Field(default=300, ge=1, le=3600)
    #: Data tier (servicekit.admission.readonly): writes are refused once the p95 pool checkout wait
    #: reaches this. Inventory transactions take milliseconds, so 150 ms is already a deep
    #: queue (pool or event loop: a CPU-bound process shows here too); the kit's 500 ms is the
    #: whole latency SLO and acted only after it was lost (benchmarks/b4_overload.py).
    read_only_pool_wait_ms: float = Field(default=150.0, gt=0)
    #: Faults at start (servicekit.faults; retuned at runtime through /internal/faults):
    #: share of product and reservation calls answered 503, added delay, hang.
    fault_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fault_latency_ms: int = Field(default=0, ge=0, le=60_000)
    fault_hang: bool = False
