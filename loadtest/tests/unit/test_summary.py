"""The summary of a recorded run (CSVs and outcome file from `make loadtest SCENARIO=smoke`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from loadtest.outcomes import BUSINESS, ERROR, OK, SHED, Tally
from loadtest.summary import build, describe

FIXTURES = Path(__file__).parent / "fixtures"
RUN = {"scenario": "smoke", "host": "http://127.0.0.1:8000", "dye": True, "workers": 0}


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    for name in ("stats_stats.csv", "stats_stats_history.csv"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path / "stats"


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "outcomes.json").read_text())
    return data


def test_summary_of_a_recorded_smoke_run(prefix: Path) -> None:
    summary = build(
        prefix=prefix, outcomes=recorded(), run=RUN, slo_p99_ms=500, slo_error_rate=0.01
    )
    assert summary["scenario"] == "smoke" and summary["users"] == 5
    assert summary["requests"] == 32 == sum(o["count"] for o in summary["outcomes"].values())
    assert summary["duration_s"] == pytest.approx(10.05, abs=0.01)
    assert summary["rps"] == pytest.approx(32 / 10.046, rel=0.01)
    assert summary["outcomes"][OK] == {"count": 32, "rate": 1.0}
    endpoints = summary["latency_ms"]["endpoints"]
    assert set(endpoints) == {
        "GET /api/products",
        "GET /api/products/{sku}",
        "POST /api/orders",
        "GET /api/orders/{id}",
    }
    assert endpoints["POST /api/orders"] == {
        "requests": 4,
        "failures": 0,
        "rps": pytest.approx(0.405, abs=0.001),
        "p50": 93.0,
        "p95": 130.0,
        "p99": 130.0,
        "outcomes": {OK: 4, SHED: 0, BUSINESS: 0, ERROR: 0},
    }
    assert summary["latency_ms"]["not_shed"]["p99"] == 130.0
    assert summary["slo"]["passed"] is True
    assert [c["measured"] for c in summary["slo"]["checks"]] == [130.0, 0.0]
    assert "SLO passed" in describe(summary)


def test_shed_answers_count_in_no_p99_and_no_error_rate(prefix: Path) -> None:
    tally = Tally()
    for _ in range(90):
        tally.add(OK, 20)
    for _ in range(300):
        tally.add(SHED, 1)  # fast refusals: they would pull an all-answer p99 down to 1 ms
    for _ in range(9):
        tally.add(BUSINESS, 40)
    tally.add(OK, 800)
    tally.add(OK, 800)
    outcomes = {**tally.to_dict(), "started": 0.0, "stopped": 10.0}
    summary = build(prefix=prefix, outcomes=outcomes, run=RUN, slo_p99_ms=500, slo_error_rate=0.01)
    assert summary["latency_ms"]["all"]["p99"] == 40.0
    assert summary["latency_ms"]["not_shed"]["p99"] == 800.0
    assert summary["outcomes"][SHED]["rate"] == pytest.approx(300 / 401)
    p99, errors = summary["slo"]["checks"]
    assert (p99["name"], p99["passed"], errors["passed"]) == ("p99_ms", False, True)
    assert "SLO p99_ms: 800 (threshold 500) BROKEN" in describe(summary)


def test_error_rate_over_its_threshold_breaks_the_gate(prefix: Path) -> None:
    tally = Tally()
    for _ in range(97):
        tally.add(OK, 10)
    for _ in range(3):
        tally.add(ERROR, 10)
    outcomes = {**tally.to_dict(), "started": 0.0, "stopped": 10.0}
    summary = build(prefix=prefix, outcomes=outcomes, run=RUN, slo_p99_ms=500, slo_error_rate=0.02)
    checks = {c["name"]: c for c in summary["slo"]["checks"]}
    assert checks["error_rate"]["measured"] == pytest.approx(0.03)
    assert (checks["error_rate"]["passed"], checks["p99_ms"]["passed"]) == (False, True)
    assert summary["slo"]["passed"] is False


def test_a_run_without_answers_fails_the_gate(prefix: Path) -> None:
    outcomes = {**Tally().to_dict(), "started": 0.0, "stopped": 5.0}
    summary = build(prefix=prefix, outcomes=outcomes, run=RUN, slo_p99_ms=500, slo_error_rate=0.01)
    assert [c["passed"] for c in summary["slo"]["checks"]] == [False, False]
    assert summary["latency_ms"]["not_shed"]["p99"] is None
