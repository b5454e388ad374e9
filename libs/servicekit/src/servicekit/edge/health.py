"""Health: `/healthz` (alive), `/readyz` (dependencies reachable), `/metrics` (Prometheus)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client.exposition import choose_encoder
from starlette.responses import JSONResponse, Response

from servicekit.errors import problem_response

router = APIRouter(include_in_schema=False)

#: A readiness probe must answer quickly even when a dependency hangs.
CHECK_TIMEOUT = 1.0


@router.get("/healthz")
async def read_health(request: Request) -> dict[str, str]:
    """Alive: the process answers, and which version it runs. Never depends on a dependency."""
    return {
        "status": "ok",
        "service": request.app.state.settings.service_name,
        "version": request.app.state.settings.version,
    }


async def _check(name: str, probe: Any) -> tuple[str, str | None]:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except Exception as exc:
        return name, f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
    return name, None


@router.get("/readyz")
async def read_readiness(request: Request) -> Response:
    """Ready: the database answers, and Redis when one is configured."""
    checks = []
    database = getattr(request.state, "database", None)
    if database is not None:
        checks.append(_check("database", database.ping))
    redis = getattr(request.state, "redis", None)
    if redis is not None:
        checks.append(_check("redis", redis.ping))
    results = dict(await asyncio.gather(*checks))
    failed = {name: err for name, err in results.items() if err is not None}
    if failed:
        detail = "; ".join(f"{name}: {err}" for name, err in failed.items())
        return problem_response(
            503,
            f"not ready: {detail}",
            slug="not-ready",
            headers={"Retry-After": "1"},
            extra={"checks": {n: ("ok" if e is None else "failed") for n, e in results.items()}},
        )
    return JSONResponse({"status": "ready", "checks": {name: "ok" for name in results}})


@router.get("/metrics")
async def read_metrics(request: Request) -> Response:
    """This app's registry: Prometheus text, or OpenMetrics (with exemplars) when asked for.

    Prometheus asks with `Accept: application/openmetrics-text; ...`; curl gets plain text.
    """
    registry = request.app.state.metrics.registry
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})
