from __future__ import annotations

import json
import math

import pytest
from loadtest.outcomes import BUSINESS, ERROR, OK, SHED, Tally, classify, classify_raw, percentile


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome"),
    [
        (200, False, OK),
        (201, False, OK),
        (429, False, SHED),
        (429, True, SHED),
        (503, True, SHED),
        (503, False, ERROR),  # a 503 that says nothing about when to come back is a failure
        (402, False, BUSINESS),
        (409, True, BUSINESS),
        (400, False, ERROR),
        (404, False, ERROR),
        (422, False, ERROR),
        (500, True, ERROR),
        (502, False, ERROR),
        (0, False, ERROR),  # no answer at all
    ],
)
def test_classifies_each_status(status: int, retry_after: bool, outcome: str) -> None:
    assert classify(status, retry_after) == outcome


def test_raw_classifier_finds_retry_after_in_any_case() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: x\r\nRetry-After: 1"
    assert classify_raw(503, head, b"") == SHED
    assert (
        classify_raw(503, b"HTTP/1.1 503 Service Unavailable\r\nx-retry-after-ish: 1", b"") == ERROR
    )


def test_tally_merges_worker_reports_sent_as_json() -> None:
    master, worker = Tally(), Tally()
    for ms in (3.2, 140.0, 2350.0):
        worker.add(OK, ms, "GET /a")
    worker.add(SHED, 1.0, "POST /b")
    master.add(OK, 3.4, "POST /b")
    report = json.loads(json.dumps(worker.take()))  # histogram keys become strings in transit
    assert worker.total == 0 and worker.endpoints == {}, "a report starts the tally from zero"
    master.merge(report)
    assert master.counts == {OK: 4, SHED: 1, BUSINESS: 0, ERROR: 0}
    assert master.latency[OK] == {3: 2, 140: 1, 2400: 1}
    assert master.endpoints == {
        "GET /a": {OK: 3, SHED: 0, BUSINESS: 0, ERROR: 0},
        "POST /b": {OK: 1, SHED: 1, BUSINESS: 0, ERROR: 0},
    }


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    histogram = {10: 98, 200: 1, 900: 1}
    assert percentile(histogram, 0.5) == 10
    assert percentile(histogram, 0.99) == 200
    assert percentile(histogram, 1.0) == 900
    assert math.isnan(percentile({}, 0.99))
