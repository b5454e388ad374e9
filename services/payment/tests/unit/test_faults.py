"""Fault injection with a seeded Random and a fake sleep (no real waiting)."""

from __future__ import annotations

import random

import pytest
from payment.config import PaymentSettings
from payment.exceptions import InjectedFaultError
from payment.faults import HANG_SECONDS, Faults


class FakeSleep:
    """Records the delays asked for instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def test_no_faults_neither_sleeps_nor_fails() -> None:
    sleep = FakeSleep()
    for _ in range(100):
        await Faults().apply(random.Random(1), sleep)
    assert sleep.calls == []


async def test_latency_sleeps_the_configured_milliseconds() -> None:
    sleep = FakeSleep()
    await Faults(latency_ms=250).apply(random.Random(1), sleep)
    assert sleep.calls == [0.25]


async def test_hang_sleeps_a_long_bounded_time() -> None:
    sleep = FakeSleep()
    await Faults(hang=True).apply(random.Random(1), sleep)
    assert sleep.calls == [HANG_SECONDS]
    assert 60 < HANG_SECONDS <= 3600


async def test_error_rate_one_always_fails_with_retry_after() -> None:
    for _ in range(50):
        with pytest.raises(InjectedFaultError) as caught:
            await Faults(error_rate=1.0).apply(random.Random(), FakeSleep())
        assert caught.value.status == 503
        assert caught.value.slug == "injected-fault"
        assert caught.value.headers["Retry-After"] == "1"


async def _failures(faults: Faults, rng: random.Random, calls: int) -> list[int]:
    failed = []
    for i in range(calls):
        try:
            await faults.apply(rng, FakeSleep())
        except InjectedFaultError:
            failed.append(i)
    return failed


async def test_error_rate_fails_that_share_deterministically_for_a_seed() -> None:
    first = await _failures(Faults(error_rate=0.3), random.Random(42), 1000)
    again = await _failures(Faults(error_rate=0.3), random.Random(42), 1000)
    assert first == again
    assert 250 <= len(first) <= 350


async def test_latency_applies_before_an_injected_error() -> None:
    sleep = FakeSleep()
    with pytest.raises(InjectedFaultError):
        await Faults(error_rate=1.0, latency_ms=10).apply(random.Random(1), sleep)
    assert sleep.calls == [0.01]


def test_faults_are_read_from_payment_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_FAULT_ERROR_RATE", "0.25")
    monkeypatch.setenv("PAYMENT_FAULT_LATENCY_MS", "40")
    monkeypatch.setenv("PAYMENT_FAULT_HANG", "true")
    faults = Faults.from_settings(PaymentSettings())
    assert faults == Faults(error_rate=0.25, latency_ms=40, hang=True)


def test_error_rate_outside_zero_to_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_FAULT_ERROR_RATE", "1.5")
    with pytest.raises(ValueError, match="fault_error_rate"):
        PaymentSettings()
