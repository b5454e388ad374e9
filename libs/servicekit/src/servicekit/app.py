"""The app factory every service uses: middleware in one order, errors, health, routers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from servicekit.auth import ServiceAuthMiddleware
from servicekit.errors import install_error_handlers
from servicekit.health import router as health_router
from servicekit.logs import configure_logging
from servicekit.metrics import Metrics, MetricsMiddleware
from servicekit.middleware import BodyLimitMiddleware, RequestContextMiddleware
from servicekit.recovery import RecoveryMiddleware
from servicekit.redis_client import create_redis
from servicekit.settings import ServiceSettings


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    routers: Iterable[APIRouter],
    internal: bool = True,
    description: str = "",
) -> FastAPI:
    """Build a FastAPI app wired with the kit. `internal` services require the credential."""
    configure_logging(settings.service_name, version=settings.version, level=settings.log_level)
    development = settings.environment == "development"
    app = FastAPI(
        title=title,
        version=settings.version,
        description=description,
        lifespan=_with_kit_resources(settings, lifespan),
        docs_url="/docs" if development else None,
        redoc_url=None,
        openapi_url="/openapi.json" if development or settings.environment == "test" else None,
    )
    metrics = Metrics(settings.service_name)
    app.state.metrics = metrics
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health_router)
    for router in routers:
        app.include_router(router)

    # Middleware order. add_middleware wraps, so the last added runs first:
    #   RequestContext  outermost: ids and trace exist before anything answers or logs,
    #                   including the 500 that recovery writes (it cannot raise itself).
    #   Recovery        catches anything escaping the layers below, even middleware bugs.
    #   Metrics         times every answer, rejections and recovered errors included.
    #   ServiceAuth     internal services refuse calls without the credential.
    #   BodyLimit       innermost: only authorised calls get to send a body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if internal:
        app.add_middleware(
            ServiceAuthMiddleware, tokens=[settings.service_token.get_secret_value()]
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RecoveryMiddleware, counter=metrics.recovered_exceptions)
    app.add_middleware(RequestContextMiddleware)
    return app


def _with_kit_resources(
    settings: ServiceSettings, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]]
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """Wrap a service's lifespan with what the kit owns: the Redis client, when configured.

    Its state gains `redis` (named after the service; connections open lazily), which
    `/readyz` checks. The service's own state wins if it already provides one.
    """

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        redis = (
            create_redis(settings.redis_url, name=settings.service_name)
            if settings.redis_url
            else None
        )
        try:
            async with lifespan(app) as state:
                merged = dict(state or {})
                if redis is not None:
                    merged.setdefault("redis", redis)
                yield merged
        finally:
            if redis is not None:
                await redis.aclose()

    return run
