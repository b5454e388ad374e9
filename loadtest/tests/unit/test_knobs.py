from __future__ import annotations

import pytest
from loadtest.knobs import (
    DEFAULT_SLO_ERROR_RATE,
    DEFAULT_SLO_P99_MS,
    DEV_KEYS,
    KnobError,
    parse,
    parse_duration,
)


def test_defaults_are_the_journey_on_the_local_gateway() -> None:
    knobs = parse({})
    assert (knobs.scenario.name, knobs.mix) == ("journey", "journey")
    assert (knobs.users, knobs.duration, knobs.workers) == (20, 60.0, 0)
    assert knobs.host == "http://127.0.0.1:8000"
    assert knobs.dye is True
    assert knobs.keys == DEV_KEYS
    assert (knobs.slo_p99_ms, knobs.slo_error_rate) == (DEFAULT_SLO_P99_MS, DEFAULT_SLO_ERROR_RATE)


def test_reads_every_knob() -> None:
    knobs = parse(
        {
            "SCENARIO": "ramp",
            "MIX": "checkout",
            "USERS": "12",
            "SPAWN_RATE": "2.5",
            "DURATION": "1m30s",
            "HOST": "https://shop.example:8443/",
            "WORKERS": "3",
            "DYE": "0",
            "LOADTEST_API_KEYS": " k1, k2 ,",
            "SLO_P99_MS": "250",
            "SLO_ERROR_RATE": "0.05",
        }
    )
    assert (knobs.scenario.name, knobs.mix, knobs.users, knobs.spawn_rate, knobs.duration) == (
        "ramp",
        "checkout",
        12,
        2.5,
        90.0,
    )
    assert (knobs.host, knobs.workers, knobs.dye, knobs.keys) == (
        "https://shop.example:8443",
        3,
        False,
        ("k1", "k2"),
    )
    assert (knobs.slo_p99_ms, knobs.slo_error_rate) == (250.0, 0.05)


def test_gateway_port_moves_the_default_host() -> None:
    assert parse({"GATEWAY_PORT": "18000"}).host == "http://127.0.0.1:18000"


@pytest.mark.parametrize(
    ("raw", "seconds"), [("30s", 30), ("2m", 120), ("1h30m", 5400), ("90", 90), ("1m5s", 65)]
)
def test_durations_in_locust_notation(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize(
    ("knob", "value", "listed"),
    [
        ("SCENARIO", "stress", "smoke | journey | ramp | spike | soak"),
        ("MIX", "heavy", "journey | checkout"),
        ("USERS", "abc", "whole number >= 1"),
        ("USERS", "0", "whole number >= 1"),
        ("USERS", "2.5", "whole number >= 1"),
        ("SPAWN_RATE", "0", "number > 0"),
        ("SPAWN_RATE", "nan", "number > 0"),
        ("DURATION", "5x", "30s, 2m"),
        ("DURATION", "0s", "30s, 2m"),
        ("DURATION", "-5", "30s, 2m"),
        ("WORKERS", "-1", "whole number >= 0"),
        ("DYE", "2", "1 (mark traffic"),
        ("DYE", "yes", "0 (live traffic)"),
        ("HOST", "ftp://x", "http(s)://host"),
        ("HOST", "http://x:99999", "http(s)://host"),
        ("HOST", "http://x/api", "http(s)://host"),
        ("GATEWAY_PORT", "eighty", "port 1-65535"),
        ("LOADTEST_API_KEYS", "good,bad key", "comma-separated API keys"),
        ("SLO_P99_MS", "-1", "milliseconds"),
        ("SLO_ERROR_RATE", "2", "fraction 0..1"),
    ],
)
def test_a_bad_knob_is_refused_naming_what_it_accepts(knob: str, value: str, listed: str) -> None:
    with pytest.raises(KnobError) as info:
        parse({knob: value})
    assert info.value.knob == knob
    assert knob in str(info.value) and listed in str(info.value)


def test_a_bad_key_is_not_echoed() -> None:
    with pytest.raises(KnobError) as info:
        parse({"LOADTEST_API_KEYS": "secret key"})
    assert "secret" not in str(info.value)
