"""schemathesis against every app's own OpenAPI document, in-process: zero failures.

Every default check, positive and negative generation, every phase (examples, coverage,
fuzzing, stateful: the links on POST /orders lead to GET /orders/{order_id}). The seed is fixed
and generation deterministic, so a run is reproducible and CI is stable; FUZZ_MAX_EXAMPLES and
FUZZ_SEED (environment) widen or vary the search when hunting locally.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.python import asgi

from infra.manifest import load

from .conftest import ADMIN_TOKEN, API_KEY, Apps, credential

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
SEED = int(os.environ.get("FUZZ_SEED", "20231"))


#: Schema-valid requests the contract refuses on business grounds: a declined payment (402),
#: an unknown sku, an idempotency key reused with another body, a total out of range (422).
#: Only these operations may answer them to a schema-valid request; the rest keep the default.
BUSINESS_REFUSALS = {
    ("POST", "/charges"): ["402", "422"],
    ("POST", "/orders"): ["402", "422"],
    ("POST", "/api/orders"): ["402", "422"],
    ("POST", "/reservations"): ["422"],
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def fuzz_config(headers: dict[str, str], *, stateful: bool) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": headers,
            "generation": {
                "mode": "all",  # positive and negative
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                # A NUL byte in a header cannot cross a real HTTP server; in-process it would
                # reach the app as no server would let it.
                "exclude-header-characters": "\x00\r\n",
            },
            # Links lead from POST /orders to GET /orders/{order_id}; a run without them has
            # nothing to chain.
            "phases": {"stateful": {"enabled": stateful, "max-steps": 10}},
            "operations": [
                {
                    "include-method": method,
                    "include-path": path,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ACCEPTED + refusals}
                    },
                }
                for (method, path), refusals in BUSINESS_REFUSALS.items()
            ],
        }
    )


@pytest.fixture
def stop_lifespans() -> Iterator[None]:
    yield
    # schemathesis keeps an app's lifespan running for the rest of the process; stop it here
    # so every database and client is closed before the next test.
    asgi.shutdown_lifespans()


def describe(event: events.ScenarioFinished) -> list[str]:
    lines = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                lines.append(
                    f"[{event.phase.name}] {event.label}: {check.name}: {failure.title}\n"
                    f"    {failure.message}\n    {check.failure_info.code_sample}"
                )
    return lines or [f"[{event.phase.name}] {event.label}: {event.status}"]


#: Fault-injection knobs and the read-only switch exist to make a service fail or refuse on
#: purpose: they are fuzzed in a run of their own, so what they set cannot spill into the rest
#: of the API's run.
FAULTS = r"^/(internal|admin)/(faults|read-only)"


def run(app: FastAPI, headers: dict[str, str], *, faults: bool) -> dict[str, Any]:
    """Run every phase against `app`; returns what ran and every problem found."""
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=fuzz_config(headers, stateful=not faults), headers=headers
    )
    # Both by exclusion: `include()` combined with the per-operation config above keeps all.
    schema = schema.exclude(lambda ctx: bool(re.match(FAULTS, ctx.operation.path)) != faults)
    problems: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += event.status != Status.SKIP
            if event.status in (Status.FAILURE, Status.ERROR):
                problems.extend(describe(event))
        elif isinstance(event, events.NonFatalError):
            problems.append(f"error in {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
    return {"problems": problems, "scenarios": scenarios}


#: How each app is built in-process (conftest.Apps wires its transports) and whom it is called
#: as. A service of the manifest not named here is built the way `make new-service` shapes it
#: (`Apps.generated`) and called with the service credential.
SERVICES = {
    "gateway": lambda apps: (apps.gateway(), {"Authorization": f"Bearer {API_KEY}"}),
    "gateway-admin": lambda apps: (apps.gateway(), {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    "order": lambda apps: (apps.order(), credential("order")),
    "inventory": lambda apps: (apps.inventory(), credential("inventory")),
    "payment": lambda apps: (apps.payment(), credential("payment")),
}
#: Runs beyond one per service: the fault knobs, each in a run of its own (the gateway's are
#: its admin API).
FAULT_RUNS = [("gateway-admin", True), ("inventory", True), ("payment", True)]


def fuzz_runs() -> list[tuple[str, bool]]:
    """(service, faults) of every run: one per service of the manifest, then FAULT_RUNS."""
    return [(name, False) for name in load().names] + FAULT_RUNS


RUNS = fuzz_runs()


@pytest.mark.parametrize(
    ("service", "faults"), RUNS, ids=[f"{s}{'-faults' if f else ''}" for s, f in RUNS]
)
def test_schemathesis_finds_nothing(
    service: str, faults: bool, apps: Apps, stop_lifespans: None
) -> None:
    if service in SERVICES:
        app, headers = SERVICES[service](apps)
    else:
        app, headers = apps.app(service), credential(service)
    outcome = run(app, headers, faults=faults)
    assert outcome["scenarios"] > 0, "nothing was tested"
    assert not outcome["problems"], "\n".join(outcome["problems"])
