"""The shop journey: its endpoints, their weights, think times, and the requests themselves.

One definition for the Locust users (`loadtest/locustfile.py`) and for open-loop load
(`journey_mix`, for `loadtest.openloop`), so both offer the same traffic.

Tasks: browse `GET /api/products?limit=20[&cursor=..]`, detail `GET /api/products/{sku}`,
checkout `POST /api/orders` with a fresh `Idempotency-Key`, lookup `GET /api/orders/{id}` of an
order the user placed. Their weights are a *mix* (`MIXES`, chosen by the `MIX` knob): `journey`
mostly looks and sometimes buys; `checkout` mostly buys, to load the write path (orders,
reservations, charges). Reports name each task by the constants below (Locust's `name=`);
loadtest/README.md has the traffic-mix table.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Sequence
from typing import Any

from loadtest.openloop import Mix, Request, encode

BROWSE = "GET /api/products"
DETAIL = "GET /api/products/{sku}"
CHECKOUT = "POST /api/orders"
LOOKUP = "GET /api/orders/{id}"
#: Task weights (relative): mostly looking, sometimes buying, now and then checking an order.
WEIGHTS = {BROWSE: 10, DETAIL: 10, CHECKOUT: 3, LOOKUP: 2}
#: The mixes a run may use (`MIX`): task weights by mix name.
MIXES: dict[str, dict[str, int]] = {
    "journey": WEIGHTS,
    "checkout": {BROWSE: 1, DETAIL: 2, CHECKOUT: 12, LOOKUP: 2},
}
#: Think time between two tasks of one user, seconds (uniform).
THINK_SECONDS = (0.5, 2.0)
PAGE_SIZE = 20
#: Orders above this are declined by the simulated payment provider (PAYMENT_DECLINE_ABOVE_CENTS).
AFFORDABLE_CENTS = 100_000
#: Affordable products of the seed catalog, used until a user's browsing has shown it others.
SKUS = (
    "coffee-house-blend-250g",
    "coffee-ethiopia-yirgacheffe-250g",
    "coffee-colombia-huila-250g",
    "tea-sencha-100g",
    "tea-earl-grey-100g",
    "mug-stoneware-350ml",
    "filters-paper-100",
    "dripper-ceramic-v60",
)
SHADOW_HEADER = "X-Shadow-Traffic"


def headers(key: str, dye: bool) -> dict[str, str]:
    """Every request's headers: the key, and the dye marker when the run is dyed."""
    found = {"Authorization": f"Bearer {key}"}
    if dye:
        found[SHADOW_HEADER] = "1"
    return found


def checkout_body(sku: str) -> dict[str, Any]:
    return {"items": [{"sku": sku, "quantity": 1}]}


def affordable(products: Sequence[Any]) -> list[str]:
    """The skus of a product list page that one unit of can be bought without a decline."""
    return [
        p["sku"]
        for p in products
        if isinstance(p, dict)
        and isinstance(p.get("sku"), str)
        and isinstance(p.get("price_cents"), int)
        and p["price_cents"] <= AFFORDABLE_CENTS
    ]


def journey_mix(config: dict[str, Any]) -> Mix:
    """The journey as an open-loop mix: browse, detail and checkout in their weights.

    Order lookups need an order placed earlier by the same client, so open-loop load (every
    request independent) leaves them out. `config`: `host` (Host header), `keys`, `dye`,
    `skus` (optional), `share` (seeds the draw).
    """
    rng = random.Random(config.get("share", 0))
    skus: list[str] = list(config.get("skus") or SKUS)
    keys: list[str] = list(config["keys"])
    host: str = config.get("host_header") or config.get("host", "127.0.0.1")
    dye = bool(config.get("dye", True))
    kinds = [BROWSE, DETAIL, CHECKOUT]
    weights = [WEIGHTS[k] for k in kinds]

    def next_request() -> Request:
        kind = rng.choices(kinds, weights)[0]
        sent = headers(rng.choice(keys), dye)
        if kind == BROWSE:
            return Request(
                kind, encode("GET", f"/api/products?limit={PAGE_SIZE}", host=host, headers=sent)
            )
        if kind == DETAIL:
            path = f"/api/products/{rng.choice(skus)}"
            return Request(kind, encode("GET", path, host=host, headers=sent))
        sent["Idempotency-Key"] = secrets.token_hex(16)
        sent["Content-Type"] = "application/json"
        body = json.dumps(checkout_body(rng.choice(skus))).encode()
        return Request(kind, encode("POST", "/api/orders", host=host, headers=sent, body=body))

    return next_request
