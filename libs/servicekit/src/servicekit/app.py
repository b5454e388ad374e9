"""The app factory every service uses: middleware in one order, errors, health, routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp

from servicekit.admission.switch import read_only_router
from servicekit.admission.wiring import (
    bind_load_shedding,
    install_load_shedding,
    unbind_load_shedding,
)
from servicekit.contract import Trust
from servicekit.data.redis import create_redis
from servicekit.edge.credential import OPEN_PATHS, ServiceCredentialTrust
from servicekit.edge.health import router as health_router
from servicekit.edge.middleware import EdgeMiddleware
from servicekit.edge.openapi import install_openapi
from servicekit.edge.security import SecurityHeaders
from servicekit.errors import install_error_handlers
from servicekit.settings import ServiceSettings
from servicekit.telemetry.logs import AccessLogPolicy, configure_logging
from servicekit.telemetry.metrics import Metrics
from servicekit.telemetry.tracing import Tracing


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    routers: Iterable[APIRouter],
    internal: bool = True,
    description: str = "",
    middleware: Sequence[Middleware] = (),
    cached_reads: Iterable[str] = (),
    trust: Trust | None = None,
) -> FastAPI:
    """Build a FastAPI app wired with the kit. `internal` services require the credential.

    `trust` says who a caller is (servicekit.contract); internal services get the service
    credential's. Without one, every caller is anonymous: restricted values are dropped and
    the dye is refused.

    `middleware` (pure ASGI, outermost first) is the app's own, placed inside the edge layer.
    `cached_reads`: path prefixes whose GET answers do not depend on the caller: served
    cache-aside, and from cache marked `X-Degraded: cache` when degraded (servicekit.admission).
    """
    configure_logging(settings.service_name, version=settings.version, level=settings.log_level)
    development = settings.environment == "development"
    app = ServiceApp(
        title=title,
        version=settings.version,
        description=description,
        lifespan=_with_tracing(_with_kit_resources(settings, lifespan)),
        docs_url="/docs" if development else None,
        redoc_url=None,
        openapi_url="/openapi.json" if development or settings.environment == "test" else None,
        # The kit makes the spans and metrics (EdgeMiddleware); FastAPI's native telemetry
        # would double them as soon as a global OpenTelemetry provider exists, and asks
        # whether one does on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    metrics = Metrics(settings.service_name, version=settings.version)
    app.state.metrics = metrics
    app.state.settings = settings
    # Started and flushed by the kit's lifespan; until then requests get ids but no spans.
    tracing = Tracing(settings.service_name, settings.version, traces_file=settings.traces_file)
    app.state.tracing = tracing
    install_error_handlers(app)
    # Probes last: routing tries routes in order, so the service's own routes (nearly every
    # request) do not first fail against them. None of them may shadow a probe path.
    for router in routers:
        _refuse_shadowed_probes(router, health_router)
        app.include_router(router)
    if internal and settings.read_only_enabled:
        # The operator's read-only switch (the gateway's /admin/read-only/{service}).
        app.include_router(read_only_router)
    app.include_router(health_router)
    install_openapi(app, internal=internal, open_paths=OPEN_PATHS)

    # Middleware order. add_middleware wraps, so the last added runs first:
    #   Edge            outermost, one layer (servicekit.edge): ids and trace exist before
    #                   anything answers or logs; the caller is identified and trust decided
    #                   (internal services: the service credential, 401/403 without it;
    #                   the gateway: its API keys) before anything counts or sheds; security
    #                   headers on every answer; recovery of anything escaping the layers
    #                   below, even middleware bugs; RED metrics and the access line of every
    #                   answer, refusals included.
    #   (middleware)    the app's own (the gateway's access limits): their refusals are timed
    #                   and counted, and they run before any body is read.
    #   Admission       one layer (servicekit.admission): service tier (concurrency limit,
    #                   cached reads), data tier (writes refused while the database is
    #                   saturated), body cap, in that order. Inside the edge's trust, so a
    #                   cached answer never reaches an unauthenticated caller, priority is
    #                   honoured only from credentialed ones, and only authorised calls send
    #                   a body. Its refusals come before any body is read.
    install_load_shedding(app, settings, cached_reads=cached_reads)
    for extra in reversed(middleware):
        app.add_middleware(extra.cls, *extra.args, **extra.kwargs)
    if internal:
        trust = ServiceCredentialTrust(
            secrets=settings.service_secrets,
            audience=settings.service_name,
            # In development the raw secret is accepted too, for curl and /docs.
            accept_raw_secret=development,
        )
    app.add_middleware(
        EdgeMiddleware,
        metrics=metrics,
        tracing=tracing,
        access_log=AccessLogPolicy(
            sample=settings.access_log_sample, slow_ms=settings.access_log_slow_ms
        ),
        security=SecurityHeaders(docs_paths=("/docs", "/docs/oauth2-redirect")),
        trust=trust,
        default_timeout=settings.request_timeout,
    )
    return app


class ServiceApp(FastAPI):
    """FastAPI without the outer layers whose work the kit's edge layer does.

    FastAPI wraps the app's middleware in three layers of its own, each a coroutine frame on
    every request: `ServerErrorMiddleware` (the last-resort 500), its native telemetry's
    exception hook, and its app-wide body limit. The kit's `EdgeMiddleware` recovers every
    exception below it (so an `Exception`/500 handler could never run here), native
    telemetry is off and the body cap is the kit's own; what escapes the edge itself is
    answered 500 and logged by the server. So the stack is the app's middleware, then
    FastAPI's inner layers as FastAPI orders them: handlers of `HTTPException` and the kit's
    errors, and the exit stack that closes uploaded files. A unit test (test_app_wiring.py)
    pins FastAPI's own stack, so an upgrade that changes it is looked at before it ships.
    """

    def build_middleware_stack(self) -> ASGIApp:
        handlers = {
            key: handler
            for key, handler in self.exception_handlers.items()
            if key not in (500, Exception)
        }
        app: ASGIApp = AsyncExitStackMiddleware(self.router)
        app = ExceptionMiddleware(app, handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def _refuse_shadowed_probes(router: APIRouter, probes: APIRouter) -> None:
    """Raise if a route of `router` would answer a probe path (its nested routers unchecked)."""
    paths = [getattr(route, "path", "") for route in probes.routes]
    for route in router.routes:
        pattern = getattr(route, "path_regex", None)
        for path in paths:
            if pattern is not None and pattern.match(path):
                raise ValueError(
                    f"route {getattr(route, 'path', route)!r} would answer the probe {path!r}"
                )


def _with_tracing(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]],
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """Outermost: the tracer starts before everything else and is flushed after it."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        tracing: Tracing = app.state.tracing
        # Off the loop: exporters import their stack and flushing waits on their I/O.
        await asyncio.to_thread(tracing.start)
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            await asyncio.to_thread(tracing.shutdown)

    return run


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
                bind_load_shedding(app, settings, merged)
                try:
                    yield merged
                finally:
                    unbind_load_shedding(app)
        finally:
            if redis is not None:
                await redis.aclose()

    return run
