"""Gateway settings: `GATEWAY_*` environment variables (and an optional `.env`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from servicekit import ServiceSettings

from gateway.keys import DEMO_API_KEYS, DEMO_KEYS, ApiKey, digest, parse_api_keys
from gateway.rate_limiter import parse_limit

#: Names of services fronted by dedicated routes (gateway.routes, gateway.admin).
DEDICATED = frozenset({"inventory", "order", "payment"})
#: First path segments of the hand-written public routes: a service may not shadow them.
RESERVED = frozenset({"products", "orders"})
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def parse_public_services(value: object) -> tuple[str, ...]:
    """`"a,b"` -> ("a", "b"); each a service name, none reserved by a hand-written route."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise ValueError("GATEWAY_PUBLIC_SERVICES must be a comma-separated list of names")
    parsed = tuple(str(n).strip() for n in names if str(n).strip())
    for name in parsed:
        if not SERVICE_NAME.match(name):
            raise ValueError(f"GATEWAY_PUBLIC_SERVICES: {name!r} is not a service name")
        if name in RESERVED:
            raise ValueError(f"GATEWAY_PUBLIC_SERVICES: {name!r} would shadow /api/{name}")
    return parsed


def public_upstreams(
    names: tuple[str, ...], given: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The upstream URL of each generic public service: `given`, else `GATEWAY_<NAME>_URL`."""
    upstreams: dict[str, str] = {}
    for name in names:
        if name in DEDICATED:
            continue
        setting = f"GATEWAY_{name.upper()}_URL"
        url = given.get(name) or environ.get(setting, "")
        if not url:
            raise ValueError(f"GATEWAY_PUBLIC_SERVICES lists {name!r}: set {setting}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{setting} must start with http:// or https://, got {url!r}")
        upstreams[name] = url.rstrip("/")
    return upstreams


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
    #: Where the admin fault API forwards `/admin/faults/payment` (inventory uses inventory_url).
    payment_url: str = "http://127.0.0.1:8003"
    #: Public services served by the generic forwarder (gateway.public), each at
    #: `GATEWAY_<NAME>_URL`; `make up`, compose and Kubernetes set both from services.toml.
    public_services: Annotated[tuple[str, ...], NoDecode] = ()
    #: Their upstreams by name (filled from `GATEWAY_<NAME>_URL` when not given).
    public_urls: dict[str, str] = Field(default_factory=dict)
    # Checkout waits for order's own calls to inventory and payment, so it gets a longer
    # budget than the plain reads (which use http_timeout).
    order_timeout: float = Field(default=8.0, gt=0, le=60)

    # Access tier (gateway.access), limits notation. Defaults stay out of the way of `make up`
    # and the e2e tests; a production gateway sets its own.
    global_rate_limit: str = "2000/second"
    client_rate_limit: str = "200/second"
    #: Checkout attempts (POST /api/orders) per customer; fail-closed.
    checkout_rate_limit: str = "100/second"
    #: Gateway processes sharing the Redis counts (replicas x workers): while counts are per
    #: process, each one allows a fail-closed limit only its share of it.
    rate_limit_processes: int = Field(default=1, ge=1, le=10_000)
    #: How long Redis may stay silent while the limiter waits on it before counting in memory
    #: instead (everybody waiting gives up together). Redis answers a LAN call in well under
    #: 1 ms; a busy event loop is told apart (gateway.rate_limiter), so the deadline can be short:
    #: a 1 s stall then costs ~25 ms to the requests of its first 25 ms only (B6). Envoy's
    #: rate-limit filter defaults to 20 ms. Raise it for a distant Redis (TLS, another zone).
    rate_limit_redis_timeout: float = Field(default=0.025, gt=0, le=5)
    #: Prefix of the limiter's Redis keys (one Redis may serve several gateways).
    rate_limit_key_prefix: str = Field(default="gateway-limits", pattern=r"^[A-Za-z0-9:_.-]{1,64}$")

    #: The operations page `/ops` (gateway.ops): admin login, live view, fault/read-only/canary
    #: switches. Its collector runs only while the page is open.
    ops_enabled: bool = True

    @field_validator("global_rate_limit", "client_rate_limit", "checkout_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("public_services", mode="before")
    @classmethod
    def _parse_public_services(cls, value: object) -> tuple[str, ...]:
        return parse_public_services(value)

    @model_validator(mode="after")
    def _public_urls(self) -> GatewaySettings:
        self.public_urls = public_upstreams(self.public_services, self.public_urls)
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_api_keys(value)
        return value

    @field_validator("inventory_url", "order_url", "payment_url")
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
