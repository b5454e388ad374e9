"""Input bounds of the reservation and product schemas."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from inventory.schemas import ReservationCreate, ReservationItemCreate
from pydantic import ValidationError

ORDER = str(uuid.uuid4())


def body(**overrides: Any) -> dict[str, Any]:
    return {"order_id": ORDER, "items": [{"sku": "coffee-1", "quantity": 1}]} | overrides


@pytest.mark.parametrize("quantity", [1, 1000])
def test_accepts_quantity_within_bounds(quantity: int) -> None:
    assert ReservationItemCreate(sku="a", quantity=quantity).quantity == quantity


@pytest.mark.parametrize("quantity", [0, -1, 1001])
def test_rejects_quantity_out_of_bounds(quantity: int) -> None:
    with pytest.raises(ValidationError):
        ReservationItemCreate(sku="a", quantity=quantity)


@pytest.mark.parametrize("sku", ["A", "coffee_house-250g", "9" + "x" * 63])
def test_accepts_valid_sku(sku: str) -> None:
    assert ReservationItemCreate(sku=sku, quantity=1).sku == sku


@pytest.mark.parametrize("sku", ["", "-leading-dash", "_x", "with space", "é", "a" * 65, "a/b"])
def test_rejects_invalid_sku(sku: str) -> None:
    with pytest.raises(ValidationError):
        ReservationItemCreate(sku=sku, quantity=1)


def test_rejects_empty_item_list() -> None:
    with pytest.raises(ValidationError):
        ReservationCreate.model_validate(body(items=[]))


def test_accepts_fifty_items_and_rejects_fifty_one() -> None:
    items = [{"sku": f"sku-{i}", "quantity": 1} for i in range(51)]
    assert len(ReservationCreate.model_validate(body(items=items[:50])).items) == 50
    with pytest.raises(ValidationError):
        ReservationCreate.model_validate(body(items=items))


def test_rejects_duplicate_sku_and_says_so() -> None:
    items = [{"sku": "tea", "quantity": 1}, {"sku": "tea", "quantity": 2}]
    with pytest.raises(ValidationError, match="duplicate sku 'tea'"):
        ReservationCreate.model_validate(body(items=items))


@pytest.mark.parametrize("ttl", [0, 3601, -5])
def test_rejects_ttl_out_of_bounds(ttl: int) -> None:
    with pytest.raises(ValidationError):
        ReservationCreate.model_validate(body(ttl_seconds=ttl))


def test_leaves_ttl_unset_for_the_service_default() -> None:
    assert ReservationCreate.model_validate(body()).ttl_seconds is None


def test_rejects_unknown_field() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ReservationCreate.model_validate(body(customer="x"))


def test_rejects_unknown_field_in_item() -> None:
    with pytest.raises(ValidationError):
        ReservationCreate.model_validate(body(items=[{"sku": "a", "quantity": 1, "price": 1}]))


def test_rejects_order_id_that_is_not_a_uuid() -> None:
    with pytest.raises(ValidationError):
        ReservationCreate.model_validate(body(order_id="order-42"))
