"""Payment's start-up faults come from `PAYMENT_FAULT_*` (the injector is tested in servicekit)."""

from __future__ import annotations

import pytest
from payment.config import PaymentSettings
from servicekit import FaultInjector, Faults


def test_faults_are_read_from_payment_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_FAULT_ERROR_RATE", "0.25")
    monkeypatch.setenv("PAYMENT_FAULT_LATENCY_MS", "40")
    monkeypatch.setenv("PAYMENT_FAULT_HANG", "true")
    injector = FaultInjector.from_settings(PaymentSettings(), service="payment")
    assert injector.faults == Faults(error_rate=0.25, latency_ms=40, hang=True)


def test_error_rate_outside_zero_to_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_FAULT_ERROR_RATE", "1.5")
    with pytest.raises(ValueError, match="fault_error_rate"):
        PaymentSettings()
