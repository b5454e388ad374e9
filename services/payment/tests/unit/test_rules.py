"""The decline rule and request fingerprinting."""

from __future__ import annotations

from payment.provider import is_declined
from payment.service import fingerprint


def test_amount_at_threshold_succeeds() -> None:
    assert is_declined(100_000, 100_000) is False


def test_amount_above_threshold_is_declined() -> None:
    assert is_declined(100_001, 100_000) is True


def test_fingerprint_ignores_json_key_order() -> None:
    one = {"order_id": "o", "customer_id": "c", "amount_cents": 5, "currency": "USD"}
    other = {"currency": "USD", "amount_cents": 5, "customer_id": "c", "order_id": "o"}
    assert fingerprint(one) == fingerprint(other)


def test_fingerprint_changes_when_a_value_changes() -> None:
    body = {"order_id": "o", "customer_id": "c", "amount_cents": 5, "currency": "USD"}
    assert fingerprint(body) != fingerprint({**body, "amount_cents": 6})


def test_fingerprint_is_sha256_hex() -> None:
    digest = fingerprint({"a": 1})
    assert len(digest) == 64
    assert int(digest, 16) >= 0
