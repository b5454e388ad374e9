"""Business metrics of the checkout, read from GET /metrics: outcomes, compensations, replays."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from order.service import OrderService
from prometheus_client.parser import text_string_to_metric_families
from servicekit import Database

from .test_saga_recovery import charge, hold, seed

ONE = {"items": [{"sku": "SKU-1", "quantity": 1}]}
SHADOW = {"X-Shadow-Traffic": "1"}


async def samples(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[Any]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


async def post(
    client: httpx.AsyncClient, body: Any, key: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/orders", json=body, headers={"Idempotency-Key": key, **(headers or {})}
    )


async def test_every_business_series_is_zero_before_the_first_order(
    client: httpx.AsyncClient,
) -> None:
    found = await samples(client)
    for traffic in ("live", "shadow"):
        assert value(found, "servicekit_idempotent_replays_total", traffic=traffic) == 0
        for outcome in ("confirmed", "declined", "out_of_stock", "rejected", "failed"):
            labels = {"outcome": outcome, "traffic": traffic}
            assert value(found, "servicekit_saga_outcomes_total", **labels) == 0
        for action in ("release", "refund"):
            labels = {"action": action, "traffic": traffic}
            assert value(found, "servicekit_saga_compensations_total", **labels) == 0


async def test_counts_each_outcome_once_and_replays_apart(client: httpx.AsyncClient) -> None:
    assert (await post(client, ONE, "ok")).status_code == 201
    assert (await post(client, ONE, "ok")).status_code == 201  # replay
    declined = {"items": [{"sku": "PRICEY", "quantity": 1}]}
    assert (await post(client, declined, "declined")).status_code == 402
    assert (await post(client, declined, "declined")).status_code == 402  # replay
    out_of_stock = {"items": [{"sku": "SKU-2", "quantity": 6}]}
    assert (await post(client, out_of_stock, "oos")).status_code == 409
    unknown = {"items": [{"sku": "NOPE", "quantity": 1}]}
    assert (await post(client, unknown, "unknown")).status_code == 422

    found = await samples(client)
    outcome = "servicekit_saga_outcomes_total"
    assert value(found, outcome, outcome="confirmed", traffic="live") == 1
    assert value(found, outcome, outcome="declined", traffic="live") == 1
    assert value(found, outcome, outcome="out_of_stock", traffic="live") == 1
    assert value(found, outcome, outcome="rejected", traffic="live") == 1
    assert value(found, "servicekit_idempotent_replays_total", traffic="live") == 2
    # The declined charge's hold was released; nothing was charged, so nothing refunded.
    compensations = "servicekit_saga_compensations_total"
    assert value(found, compensations, action="release", traffic="live") == 1
    assert value(found, compensations, action="refund", traffic="live") == 0


async def test_shadow_traffic_is_counted_apart_from_live(client: httpx.AsyncClient) -> None:
    assert (await post(client, ONE, "dyed", SHADOW)).status_code == 201
    assert (await post(client, ONE, "dyed", SHADOW)).status_code == 201

    found = await samples(client)
    outcome = "servicekit_saga_outcomes_total"
    assert value(found, outcome, outcome="confirmed", traffic="shadow") == 1
    assert value(found, outcome, outcome="confirmed", traffic="live") == 0
    assert value(found, "servicekit_idempotent_replays_total", traffic="shadow") == 1
    assert value(found, "servicekit_idempotent_replays_total", traffic="live") == 0


async def test_a_503_counts_as_failed_with_its_compensation(
    client: httpx.AsyncClient, payment: Any
) -> None:
    payment.down = True
    assert (await post(client, ONE, "k")).status_code == 503

    found = await samples(client)
    assert value(found, "servicekit_saga_outcomes_total", outcome="failed", traffic="live") == 1
    compensations = "servicekit_saga_compensations_total"
    assert value(found, compensations, action="release", traffic="live") == 1


async def test_recovery_counts_the_outcome_and_refund_of_a_saga_it_undoes(
    database: Database, orders: OrderService, inventory: Any, payment: Any
) -> None:
    order_id = str(uuid.uuid4())
    reservation_id = hold(inventory, order_id)
    inventory.expire(reservation_id)  # charged, but the stock can no longer be committed
    charge_id = charge(payment, order_id)
    await seed(
        database, "charged", order_id=order_id, reservation_id=reservation_id, charge_id=charge_id
    )

    assert await orders.recover_sagas(stale_seconds=0) == 1

    registry = orders.metrics.registry
    failed = {"outcome": "failed", "traffic": "live"}
    assert registry.get_sample_value("servicekit_saga_outcomes_total", failed) == 1
    refund = {"action": "refund", "traffic": "live"}
    assert registry.get_sample_value("servicekit_saga_compensations_total", refund) == 1
    assert payment.statuses() == ["refunded"]
