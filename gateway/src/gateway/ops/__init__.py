"""The operations page on the gateway: `/ops`, admin only (docs: README, "Ops page").

- `routes`: the page, its login session, the event stream, the actions;
- `collector`: the background task that reads every service while the page is watched;
- `figures`: what a `/metrics` scrape says, and the rates between two;
- `traces`: the newest traces and a trace's waterfall, from the local trace files;
- `session`: the signed session cookie and its CSRF token;
- `page`: the HTML (and `static/`: one script, one style sheet, no build step).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from servicekit import RoutingTable

from gateway.admin import FAULT_TARGETS, READ_ONLY_TARGETS
from gateway.config import GatewaySettings
from gateway.ops.collector import OpsCollector
from gateway.ops.page import Card
from gateway.ops.routes import OpsConsole, router
from gateway.ops.session import SessionSigner

__all__ = ["OpsConsole", "ops_console", "router"]


def ops_console(
    settings: GatewaySettings,
    *,
    registry: CollectorRegistry,
    routing: RoutingTable,
    upstreams: dict[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> OpsConsole:
    """The page's state for the lifespan: nothing runs until somebody opens the page."""
    services: dict[str, str | None] = {
        "gateway": None,
        "order": settings.order_url,
        "inventory": settings.inventory_url,
        "payment": settings.payment_url,
        **settings.public_urls,
    }
    run_dir = Path(settings.routing_file).parent if settings.routing_file else None
    traces_dir = Path(settings.traces_file).parent if settings.traces_file else None
    collector = OpsCollector(
        services=services,
        registry=registry,
        routing=routing,
        traces_dir=traces_dir,
        canary_dir=run_dir / "canary" if run_dir is not None else None,
        transport=transport,
    )
    collector.views["gateway"].version = settings.version
    return OpsConsole(
        signer=SessionSigner(settings.admin_token.get_secret_value()),
        collector=collector,
        cards=[
            Card(name, name in FAULT_TARGETS, name in READ_ONLY_TARGETS, name in upstreams)
            for name in services
        ],
        traces_dir=traces_dir,
        secure_cookie=settings.environment not in ("development", "test"),
    )
