"""Trust is decided at the edge: restricted values hold only from callers that may set them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi import FastAPI
from servicekit import context, contract, mint_service_token
from servicekit.testing import lifespan_client

from .conftest import build_demo_app

SECRET = "trust-test-secret"
CREDENTIAL = {
    "X-Service-Token": mint_service_token(
        SECRET, caller="gateway", audience="demo", now=time.time()
    )
}
RESTRICTED = {"X-Shadow-Traffic": "1", "X-Request-Priority": "critical", "X-Customer-ID": "c-1"}


def seen_by(app: FastAPI) -> list[dict[str, Any]]:
    """Add a route that records what the request context holds; return the records."""
    seen: list[dict[str, Any]] = []

    @app.get("/seen")
    async def read_seen() -> None:
        seen.append(
            {
                "shadow": context.get(context.SHADOW),
                "priority": context.get(context.PRIORITY),
                "customer": context.get(context.CUSTOMER_ID),
                "caller": context.get(contract.CALLER),
            }
        )

    return seen


async def test_an_internal_service_honours_restricted_values_from_a_credentialed_caller() -> None:
    app = build_demo_app(environment="test", service_token=SECRET)
    seen = seen_by(app)
    async with lifespan_client(app) as client:
        answer = await client.get("/seen", headers={**CREDENTIAL, **RESTRICTED})
    assert answer.status_code == 200
    assert seen[0]["shadow"] is True
    assert seen[0]["priority"] == "critical"
    assert seen[0]["customer"] == "c-1"
    assert contract.SERVICE in seen[0]["caller"].principals


async def test_an_internal_service_refuses_the_call_without_a_credential_before_counting_it() -> (
    None
):
    app = build_demo_app(environment="test", service_token=SECRET)
    async with lifespan_client(app) as client:
        answer = await client.get("/whoami", headers=RESTRICTED)
        metrics = (await client.get("/metrics")).text
    assert answer.status_code == 401
    assert 'http_response_status_code="401"' in metrics
    assert not [
        line
        for line in metrics.splitlines()
        if 'traffic="shadow"' in line
        and "request_duration" in line
        and not line.endswith(" 0.0")
        and "_created" not in line
    ]


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
async def test_probes_ignore_restricted_values(path: str) -> None:
    async with lifespan_client(build_demo_app(environment="test", service_token=SECRET)) as client:
        assert (await client.get(path, headers=RESTRICTED)).status_code == 200


async def test_a_public_app_drops_priority_and_customer_and_refuses_the_dye() -> None:
    app = build_demo_app(internal=False)
    seen = seen_by(app)
    async with lifespan_client(app) as client:
        kept = await client.get(
            "/seen", headers={"X-Request-Priority": "critical", "X-Customer-ID": "c-1"}
        )
        dyed = await client.get("/seen", headers={"X-Shadow-Traffic": "1"})
    assert kept.status_code == 200
    assert seen == [
        {"shadow": False, "priority": None, "customer": None, "caller": contract.ANONYMOUS}
    ]
    assert dyed.status_code == 403
    assert dyed.json()["type"] == "/problems/shadow-traffic-forbidden"


def test_every_hop_value_declares_who_may_set_it_and_how_it_travels() -> None:
    for hop in contract.REQUEST_HEADERS:
        assert hop.set_by, hop
        assert isinstance(hop.forward, contract.Forward), hop
        assert hop.header == hop.name.lower()
    assert not contract.SHADOW.allowed(frozenset({contract.PUBLIC}))
    assert contract.SHADOW.allowed(frozenset({contract.PUBLIC, contract.LOADTEST}))
    assert contract.SHADOW.allowed(frozenset({contract.SERVICE}))
    assert not contract.PRIORITY.allowed(frozenset({contract.PUBLIC, contract.LOADTEST}))
