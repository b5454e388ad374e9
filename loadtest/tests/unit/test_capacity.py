"""`make capacity` without a stack: the report writer on a recorded run, knobs, bad input."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest

from loadtest import capacity, capacity_markdown, capacity_report, scrape

RECORDED = Path(__file__).parent / "fixtures" / "capacity_steps.json"
PNG = b"\x89PNG\r\n\x1a\n"


def recorded() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = json.loads(RECORDED.read_text())
    return data["steps"], data["run"]


def test_report_writer_on_a_recorded_run(tmp_path: Path) -> None:
    steps, run = recorded()
    written = capacity_report.write(tmp_path, steps, run)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"report.md", "recommendations.json", "steps.json"} <= names
    for plot in ("throughput.png", "latency.png", "outcomes.png", "services.png"):
        assert (tmp_path / plot).read_bytes()[:8] == PNG
    result = json.loads((tmp_path / "recommendations.json").read_text())
    assert result["knee"]["reached"]
    first = result["first_saturated"]
    assert first["resource"] and first["resource"] in written.headline
    # Every number comes from the step at the knee.
    at = next(s for s in steps if s["offered"] == result["knee"]["sustainable_offered"])
    assert result["sustainable_rps"] == at["goodput"]
    slo_s = run["slo"]["p99_ms"] / 1000
    for name, entry in result["services"].items():
        measured = at["services"][name]
        little = measured["rate"] * measured["mean_s"]
        assert entry["little_L"] == pytest.approx(little)
        assert entry["max_concurrency"] == max(
            4, math.ceil(measured["rate"] * slo_s), 2 * math.ceil(little)
        )
        if "db_pool_size" in entry:
            assert entry["db_pool_size"] >= math.ceil(measured["pool_used_max"])
    assert result["gateway"]["global_rate_limit"] == f"{math.floor(result['safe_rps'])}/second"
    report = (tmp_path / "report.md").read_text()
    assert first["resource"] in report and "![throughput.png](throughput.png)" in report
    for key, value in written.env.items():
        assert f"{key}={value}" in report


def test_env_names_are_the_settings_the_services_read() -> None:
    steps, run = recorded()
    result = capacity_report.recommend(steps, run)
    prefixes = {s["prefix"] for s in capacity_report.manifest()}
    suffixes = {"MAX_CONCURRENCY", "DB_POOL_SIZE", "DB_MAX_OVERFLOW"}
    gateway = {
        "GATEWAY_GLOBAL_RATE_LIMIT",
        "GATEWAY_CLIENT_RATE_LIMIT",
        "GATEWAY_CHECKOUT_RATE_LIMIT",
    }
    for key in result["env"]:
        prefix, _, suffix = key.partition("_")
        assert key in gateway or (prefix in prefixes and suffix in suffixes), key
    assert gateway <= set(result["env"])


def test_pools_are_scaled_down_to_fit_max_connections() -> None:
    steps, run = recorded()
    one = capacity_report.recommend(steps, run)
    assert not one["connections"]["scaled_down"]
    assert one["connections"]["recommended_total"] == one["connections"]["wanted"]
    # Ten times the safe rate: ten stack replicas, their pools shrunk to fill the usable 90.
    many = capacity_report.recommend(steps, {**run, "target_rps": 10 * one["safe_rps"]})
    assert many["stack_replicas"] == 10
    connections = many["connections"]
    assert connections["scaled_down"] and connections["fits"]
    assert connections["wanted"] > connections["usable"] == 90
    assert connections["usable"] - 10 < connections["recommended_total"] <= 90
    # Fewer connections than processes: one each is the floor, and the report says so.
    crowded = {**run, "target_rps": 50 * one["safe_rps"], "max_connections": {"value": 20}}
    result = capacity_report.recommend(steps, crowded)
    assert not result["connections"]["fits"]
    assert "**They do not fit**" in capacity_markdown.markdown(steps, result, crowded, [])


def test_knee_not_reached_is_said_and_kept_as_a_lower_bound() -> None:
    steps, run = recorded()
    sustained = [s for s in steps if s["p99_ms"] <= 500]
    result = capacity_report.recommend(sustained, run)
    assert not result["knee"]["reached"]
    assert result["sustainable_rps"] == max(s["goodput"] for s in sustained)
    report = capacity_markdown.markdown(sustained, result, run, [])
    assert "**not reached**" in report and "knee not reached" in report


def test_apply_replaces_our_settings_and_keeps_the_rest(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("ORDER_DATABASE_URL=postgresql://x/shop\nORDER_DB_POOL_SIZE=10\n# note\n")
    capacity_report.apply_env(env, {"ORDER_DB_POOL_SIZE": "4", "ORDER_MAX_CONCURRENCY": "32"})
    assert env.read_text() == (
        "ORDER_DATABASE_URL=postgresql://x/shop\nORDER_DB_POOL_SIZE=4\n# note\n"
        "ORDER_MAX_CONCURRENCY=32\n"
    )


METRICS = """\
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_count{http_route="/api/x"} %(count)s
http_server_request_duration_seconds_sum{http_route="/api/x"} %(sum)s
http_server_request_duration_seconds_count{http_route="/healthz"} 999
http_server_request_duration_seconds_sum{http_route="/healthz"} 9
# TYPE process_cpu_seconds counter
process_cpu_seconds_total %(cpu)s
# TYPE db_client_connection_wait_time_seconds histogram
db_client_connection_wait_time_seconds_bucket{pool_name="p",le="0.001"} %(fast)s
db_client_connection_wait_time_seconds_bucket{pool_name="p",le="0.01"} %(mid)s
db_client_connection_wait_time_seconds_bucket{pool_name="p",le="+Inf"} %(all)s
db_client_connection_wait_time_seconds_count{pool_name="p"} %(all)s
db_client_connection_wait_time_seconds_sum{pool_name="p"} 0
"""


def test_step_figures_from_two_scrapes() -> None:
    before = scrape.parse(
        METRICS % {"count": 100, "sum": 1, "cpu": 5, "fast": 0, "mid": 0, "all": 0}
    )
    after = scrape.parse(
        METRICS % {"count": 300, "sum": 11, "cpu": 7, "fast": 50, "mid": 90, "all": 100}
    )
    window = scrape.Window(first=before, last=after, lags=[0.001] * 19 + [0.2])
    summary = window.summary(seconds=10)
    assert summary["rate"] == 20  # probes left out
    assert summary["mean_s"] == pytest.approx(0.05)
    assert summary["cpu_cores"] == pytest.approx(0.2)
    assert summary["loop_lag_p95_s"] == 0.001
    # 95th of 100: in the +Inf bucket, reported as its lower bound (Prometheus does the same).
    assert summary["pool_wait_p95_s"] == 0.01
    assert scrape.bucket_quantile(before, after, scrape.POOL_WAIT, 0.7) == pytest.approx(0.0055)
    assert scrape.bucket_quantile(before, after, scrape.POOL_WAIT, 0.7, least=101) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("knob", "expected", "code"),
    [
        ("TARGET_RPS=lots", "TARGET_RPS='lots' is not valid", capacity.EXIT_KNOB),
        ("TIME_CAP=30s", "too short for a warm-up and two steps", capacity.EXIT_KNOB),
        ("TARGET_RPZ=100", "not a knob of make capacity", capacity.EXIT_KNOB),
        ("HEADROOM=2", "HEADROOM='2' is not valid", capacity.EXIT_KNOB),
        ("START_RPS=20", "the stack is not up", capacity.EXIT_UNREACHABLE),
    ],
)
def test_bad_input_says_why_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], knob: str, expected: str, code: int
) -> None:
    args = [knob, f"HOST=http://127.0.0.1:{free_port()}", f"LOADTEST_REPORTS_DIR={tmp_path}"]
    assert capacity.main(args) == code
    out = capsys.readouterr().out
    assert expected in out
    if code == capacity.EXIT_KNOB:
        assert "TIME_CAP" in out and "TARGET_RPS" in out  # the valid knobs are listed
    assert list(tmp_path.iterdir()) == []
