"""Wiring of the admission layer into an app, from the service's settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI

from servicekit.admission.adaptive import GradientLimit
from servicekit.admission.body import BodyCap
from servicekit.admission.cache import MemoryBackend, ReadCache, RedisBackend
from servicekit.admission.lag import LoopQueue
from servicekit.admission.limiter import ConcurrencyLimiter
from servicekit.admission.middleware import AdmissionMiddleware
from servicekit.admission.readonly import ReadOnlyGuard
from servicekit.data.database import Database, PoolMetrics
from servicekit.settings import ServiceSettings
from servicekit.telemetry.metrics import Metrics


def install_load_shedding(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    cached_reads: Iterable[str] = (),
) -> None:
    """Add the admission layer (service tier, data tier, body cap) to `app`, from `settings`.

    Call inside the edge layer (see `create_service_app`). The cache starts in-process and the
    data tier blind; `bind_load_shedding` gives them Redis and the database.
    """
    metrics: Metrics = app.state.metrics
    limiter = None
    if settings.max_concurrency:
        queue = None
        if settings.queue_target_ms:
            queue = LoopQueue(
                target=settings.queue_target_ms / 1000,
                interval=settings.queue_interval_ms / 1000,
                gauge=metrics.event_loop_lag,
            )
        limiter = ConcurrencyLimiter(
            settings.max_concurrency,
            degrade_at=settings.degrade_at,
            hold=settings.degrade_hold_seconds,
            metrics=metrics,
            adaptive=GradientLimit(settings.max_concurrency)
            if settings.adaptive_concurrency
            else None,
            queue=queue,
        )
    paths = tuple(cached_reads)
    cache = (
        ReadCache(
            MemoryBackend(),
            name=settings.service_name,
            ttl=settings.cache_ttl_seconds,
            stale=settings.cache_stale_seconds,
            counter=metrics.cache_requests,
        )
        if paths
        else None
    )
    guard = ReadOnlyGuard(
        pool_wait=settings.read_only_pool_wait_ms / 1000,
        db_latency=settings.read_only_db_latency_ms / 1000,
        window=settings.read_only_window_seconds,
        min_dwell=settings.read_only_min_seconds,
        metrics=metrics,
    )
    app.state.concurrency_limiter, app.state.read_cache, app.state.read_only = limiter, cache, guard
    app.add_middleware(
        AdmissionMiddleware,
        metrics=metrics,
        limiter=limiter,
        body_cap=BodyCap(settings.max_body_bytes),
        guard=guard if settings.read_only_enabled else None,
        cache=cache,
        cached_paths=paths,
    )


def bind_load_shedding(app: FastAPI, settings: ServiceSettings, state: Mapping[str, Any]) -> None:
    """At start-up: the read cache moves to Redis when there is one; the pool is watched;
    the event loop's lag is sampled (until `unbind_load_shedding`)."""
    limiter: ConcurrencyLimiter | None = getattr(app.state, "concurrency_limiter", None)
    if limiter is not None and limiter.queue is not None:
        limiter.queue.start()
    cache: ReadCache | None = getattr(app.state, "read_cache", None)
    if cache is not None and state.get("redis") is not None:
        cache.backend = RedisBackend(state["redis"])
    database = state.get("database")
    if not isinstance(database, Database):
        return
    metrics: Metrics = app.state.metrics
    database.observers.append(PoolMetrics(metrics, settings.service_name, database.pool_status))
    if settings.read_only_enabled:
        app.state.read_only.attach(database)


def unbind_load_shedding(app: FastAPI) -> None:
    """At shutdown: stop sampling the event loop's lag."""
    limiter: ConcurrencyLimiter | None = getattr(app.state, "concurrency_limiter", None)
    if limiter is not None and limiter.queue is not None:
        limiter.queue.stop()
