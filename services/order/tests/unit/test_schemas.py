"""Input bounds and the canonical fingerprint of an order body."""

from __future__ import annotations

from typing import Any

import pytest
from order.schemas import OrderCreate
from pydantic import ValidationError


def body(*pairs: tuple[Any, Any]) -> dict[str, Any]:
    return {"items": [{"sku": sku, "quantity": quantity} for sku, quantity in pairs]}


def test_fingerprint_ignores_item_order_and_json_layout() -> None:
    a = OrderCreate.model_validate(body(("A", 1), ("B", 2)))
    b = OrderCreate.model_validate_json(
        '{ "items": [ {"quantity": 2, "sku": "B"}, {"sku": "A", "quantity": 1} ] }'
    )
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64


def test_fingerprint_changes_with_quantity_or_sku() -> None:
    base = OrderCreate.model_validate(body(("A", 1))).fingerprint()
    assert OrderCreate.model_validate(body(("A", 2))).fingerprint() != base
    assert OrderCreate.model_validate(body(("B", 1))).fingerprint() != base


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"items": []},
        body(*[(f"S{i}", 1) for i in range(51)]),
        body(("A", 0)),
        body(("A", -1)),
        body(("A", 1001)),
        body(("A", True)),
        body(("A", "2")),
        body(("-A", 1)),
        body(("A" * 65, 1)),
        body(("A/B", 1)),
        body(("A", 1), ("A", 2)),
        {"items": [{"sku": "A", "quantity": 1, "price": 1}]},
        {"items": [{"sku": "A", "quantity": 1}], "customer_id": "x"},
    ],
    ids=[
        "no-items",
        "empty",
        "51-items",
        "zero",
        "negative",
        "too-many",
        "bool",
        "string",
        "leading-dash",
        "long-sku",
        "slash",
        "duplicate",
        "extra-item-field",
        "extra-field",
    ],
)
def test_rejects_invalid_bodies(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(payload)


def test_accepts_bounds() -> None:
    order = OrderCreate.model_validate(body(*[(f"S{i}", 1000) for i in range(50)]))
    assert len(order.items) == 50
    assert OrderCreate.model_validate(body(("a_b-C9", 1))).items[0].sku == "a_b-C9"
