"""Settings: one pydantic-settings base class, a subclass per service with its env prefix.

Configuration comes only from environment variables (and an optional `.env`). Each service
reads its own prefix (`ORDER_`, `INVENTORY_`, `PAYMENT_`, `GATEWAY_`); the standard `OTEL_*`
variables belong to the OpenTelemetry SDK and are not mirrored here.
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


def package_version(distribution: str) -> str:
    """The installed version of `distribution`, or `0+unknown` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


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
    #: What this process runs (`service.version`, the `version` label of the RED metrics, every
    #: log line, /healthz). Unset: the service package's installed version. A canary sets its own.
    version: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9._+-]*$")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    # Access log (telemetry.logs.AccessLogPolicy): one JSON line per request costs about as
    # much as a trivial handler, so under load only the lines worth reading are written.
    # Always: server errors (5xx, at warning), client errors (4xx), requests slower than
    # access_log_slow_ms, and requests whose trace is sampled (a kept trace has its line).
    # Of the rest, the share access_log_sample, chosen by trace id, so one request is logged
    # on every hop or on none; each such line says `"sampled": <share>`. Metrics count every
    # request. With tracing on, every sampled trace (10 % by default) already has its line,
    # so 1 % more is enough to see ordinary traffic. `make up` sets 1.0 (every line), as it
    # traces every request.
    access_log_sample: float = Field(default=0.01, ge=0, le=1)
    access_log_slow_ms: float = Field(default=500.0, gt=0)
    #: Local mode: sampled spans are appended here as JSON lines (`make up` sets
    #: `.run/traces/<service>.jsonl`; `make trace` prints them). Tracing itself is
    #: configured by the standard OTEL_* variables (telemetry.tracing).
    traces_file: str | None = None

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
    #: Rotation: a second secret accepted on incoming calls, never used to sign (edge.credential).
    service_token_previous: SecretStr | None = None
    http_timeout: float = Field(default=2.0, gt=0, le=60)
    #: The whole budget of a request (its deadline); a caller's `X-Request-Timeout-Ms` can
    #: only shorten it, and every outbound call gets what is left of it.
    request_timeout: float = Field(default=10.0, gt=0, le=300)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)

    # Load shedding (servicekit.admission, servicekit.admission.readonly). Service tier: at most
    # max_concurrency requests in flight (0 turns the limiter off); from degrade_at of it,
    # cached reads are answered from cache (X-Degraded: cache) and shadow traffic is shed.
    max_concurrency: int = Field(default=256, ge=0, le=100_000)
    degrade_at: float = Field(default=0.8, gt=0, le=1)
    # The limit found from measured latency (admission.adaptive), max_concurrency its ceiling.
    adaptive_concurrency: bool = False
    # Queue timeout (admission.lag): a request that waited in the event loop past the target,
    # once the loop's lag stood above it for an interval, is shed at once; 0 turns it off.
    queue_target_ms: float = Field(default=50.0, ge=0, le=60_000)
    queue_interval_ms: float = Field(default=200.0, gt=0, le=60_000)
    # Degraded mode is left once in-flight requests stayed below the threshold this long: each
    # exit sends the cached reads back to the database at once.
    degrade_hold_seconds: float = Field(default=1.0, gt=0, le=600)
    # Cache-aside for the reads a service declares cacheable: fresh for cache_ttl_seconds,
    # kept (and served only when degraded) for cache_stale_seconds.
    cache_ttl_seconds: float = Field(default=1.0, gt=0, le=3600)
    cache_stale_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # Data tier: read-only mode (writes 503) when the p95 pool checkout wait or statement
    # latency over the last window passes its threshold; left below half of it after
    # read_only_min_seconds.
    read_only_enabled: bool = True
    read_only_pool_wait_ms: float = Field(default=500.0, gt=0)
    read_only_db_latency_ms: float = Field(default=1000.0, gt=0)
    read_only_window_seconds: float = Field(default=5.0, gt=0, le=600)
    read_only_min_seconds: float = Field(default=5.0, ge=0, le=3600)

    # Circuit breakers, one per downstream (downstream.breaker). Trips on a failure rate or a
    # slow-call rate (percent of the calls in the window, once min_calls were made) or on
    # consecutive failures; the seed's "5% errors over 30 s" is FAILURE_RATE=5,
    # WINDOW_SECONDS=30. Storage `redis` shares open breakers between workers (needs REDIS_URL).
    breaker_failure_rate: float = Field(default=50.0, gt=0, le=100)
    breaker_min_calls: int = Field(default=20, ge=1, le=100_000)
    breaker_window_seconds: float = Field(default=30.0, gt=0, le=3600)
    breaker_slow_call_seconds: float = Field(default=1.0, gt=0, le=600)
    breaker_slow_call_rate: float = Field(default=100.0, gt=0, le=100)
    breaker_consecutive_failures: int = Field(default=5, ge=1, le=100_000)
    breaker_reset_seconds: float = Field(default=10.0, gt=0, le=3600)
    breaker_half_open_probes: int = Field(default=3, ge=1, le=1000)
    breaker_storage: Literal["memory", "redis"] = "memory"
    breaker_webhook_url: str | None = None

    # Canary routing (servicekit.downstream.routing): the routes every process of the stack
    # follows, from a Redis key (when set, with REDIS_URL) or a JSON file (`make up` sets
    # `.run/routing.json`); unset, routes live in this process only. Polled off the request
    # path every routing_poll_seconds. A canary upstream is a loopback address with a port,
    # or a host listed in routing_allowed_hosts (comma-separated).
    routing_file: str | None = None
    routing_redis_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9:_.-]{1,128}$")
    routing_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    routing_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("routing_allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @model_validator(mode="after")
    def _default_version(self) -> ServiceSettings:
        if not self.version:
            self.version = package_version(self.service_name)
        return self

    @model_validator(mode="after")
    def _check_breaker_settings(self) -> ServiceSettings:
        prefix = str(self.model_config.get("env_prefix", "")).upper()
        if self.breaker_storage == "redis" and not self.redis_url:
            raise ValueError(f"{prefix}BREAKER_STORAGE=redis needs {prefix}REDIS_URL")
        url = self.breaker_webhook_url
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"{prefix}BREAKER_WEBHOOK_URL must be an http(s) URL")
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment == "development":
            return self
        for name in (*self.secret_fields, "service_token_previous"):
            value = getattr(self, name)
            if value is None and name == "service_token_previous":
                continue  # optional: only set while a rotation is in progress
            raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
            if raw.strip().lower() in PLACEHOLDER_SECRETS:
                prefix = str(self.model_config.get("env_prefix", "")).upper()
                raise ValueError(
                    f"{prefix}{name.upper()} is a placeholder secret; set a real value "
                    f"(refused because {prefix}ENVIRONMENT={self.environment})"
                )
        return self

    @property
    def service_secrets(self) -> tuple[str, ...]:
        """The secrets incoming service credentials may be signed with (signing one first)."""
        previous = self.service_token_previous
        return tuple(
            s
            for s in (
                self.service_token.get_secret_value(),
                previous.get_secret_value() if previous is not None else "",
            )
            if s
        )

    @property
    def async_database_url(self) -> str:
        """The database URL with the async driver chosen by the kit."""
        return async_database_url(self.database_url)
