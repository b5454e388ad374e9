"""How `make canary` judges (infra/local/canary_stats.py) and reads its knobs, on synthetic data."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "local"))
from canary import KnobError, parse_plan
from canary_stats import (
    FAIL,
    NOT_ENOUGH,
    PASS,
    Side,
    Thresholds,
    compare_errors,
    compare_latency,
    early_failure,
    judge,
)

LIMITS = Thresholds()


def side(n: int, errors: int = 0, mean_ms: float = 20.0, seed: int = 1) -> Side:
    rng = random.Random(seed)
    latencies = [rng.expovariate(1 / mean_ms) + 2 for _ in range(n)]
    return Side(latencies, errors, gc_collections=n * 0.05, rss_bytes=100e6)


def test_a_canary_failing_30_percent_fails_the_error_test() -> None:
    check = compare_errors(side(40, errors=12), side(800, errors=2, seed=2), LIMITS)
    assert check.verdict == FAIL and check.figures["p_value"] < 1e-6


def test_equal_error_rates_pass() -> None:
    assert compare_errors(side(200, 2), side(2000, 20, seed=2), LIMITS).verdict == PASS


def test_a_significant_but_tiny_increase_is_not_a_reason_to_stop() -> None:
    # 1 % against 0.1 % over many requests: significant, under the 2-point practical bound.
    check = compare_errors(side(20_000, 200), side(20_000, 20, seed=2), LIMITS)
    assert check.figures["p_value"] < LIMITS.alpha and check.verdict == PASS


def test_300_ms_more_fails_the_latency_test_and_the_same_distribution_passes() -> None:
    slow = Side([x + 300 for x in side(30).latencies_ms])
    assert compare_latency(slow, side(500, seed=3), LIMITS).verdict == FAIL
    assert compare_latency(side(300, seed=4), side(3000, seed=5), LIMITS).verdict == PASS


def test_too_few_requests_is_its_own_verdict_never_a_pass() -> None:
    verdict, checks = judge(side(5, errors=0), side(500), LIMITS)
    assert verdict == NOT_ENOUGH
    assert {c.name for c in checks if c.verdict == NOT_ENOUGH} >= {"errors", "latency", "gc"}
    # A clear failure is not hidden behind too little traffic elsewhere.
    assert judge(side(5, errors=5), side(500), LIMITS)[0] == NOT_ENOUGH
    assert early_failure(side(12, errors=5), side(500), LIMITS) is not None


def test_gc_memory_and_saturation_checks() -> None:
    canary, stable = side(100), side(1000)
    assert judge(canary, stable, LIMITS)[0] == PASS
    canary.gc_collections = 100 * 5.0
    assert judge(canary, stable, LIMITS)[0] == FAIL
    canary = side(100)
    canary.rss_bytes = 600e6
    assert judge(canary, stable, LIMITS)[0] == FAIL
    canary = side(100)
    canary.concurrency_limit, canary.max_in_flight = 256, 250
    assert judge(canary, stable, LIMITS)[0] == FAIL


def test_knobs_are_parsed_with_defaults() -> None:
    plan = parse_plan({"SERVICE": "payment", "CANARY_ENV": "PAYMENT_FAULT_LATENCY_MS=300"})
    assert plan.steps == (2, 10, 25, 50, 100) and plan.step_seconds == 30 and plan.load
    assert plan.env == {"PAYMENT_FAULT_LATENCY_MS": "300"}
    assert parse_plan({"SERVICE": "inventory", "STEPS": "0.5,2,100"}).steps == (0.5, 2, 100)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"SERVICE": "gateway"}, "valid: "),
        ({"SERVICE": ""}, "valid: "),
        ({"SERVICE": "payment", "STEPS": "0,50"}, "increasing percentages"),
        ({"SERVICE": "payment", "STEPS": "50,101"}, "increasing percentages"),
        ({"SERVICE": "payment", "STEPS": "a,b"}, "increasing percentages"),
        ({"SERVICE": "payment", "STEP_SECONDS": "0.5"}, "1..3600"),
        ({"SERVICE": "payment", "LOAD": "yes"}, "valid: 1"),
        ({"SERVICE": "payment", "CANARY_ENV": "GATEWAY_ADMIN_TOKEN=x"}, "PAYMENT_*"),
        ({"SERVICE": "payment", "CANARY_ENV": "PAYMENT_PORT=1"}, "set by the runner"),
        ({"SERVICE": "payment", "VERSION": "1.0 beta"}, "VERSION"),
    ],
)
def test_bad_knobs_name_the_valid_values(knobs: dict[str, str], message: str) -> None:
    with pytest.raises(KnobError, match=message.replace("*", r"\*").replace(".", r"\.")):
        parse_plan(knobs)
