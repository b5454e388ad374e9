"""The growth planner on synthetic series: flat, 10 %/week, 20 %/week, noisy, with a gap."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from loadtest.growth import WEEK

from loadtest import growth, plan

START = 1_780_000_000.0  # a Monday in 2026, epoch seconds
HOUR = 3600.0


def traffic(weekly: float, *, weeks: float = 4, noise: float = 0.0, seed: int = 1) -> list:
    """Hourly requests/s from 100/s growing `weekly`, with a daily cycle of +-20 % and noise."""
    rng = random.Random(seed)
    points = []
    for hour in range(int(weeks * 168)):
        t = START + hour * HOUR
        daily = 1 + 0.2 * math.sin(2 * math.pi * hour / 24)
        value = 100 * (1 + weekly) ** ((t - START) / WEEK) * daily
        points.append((t, value * (1 + rng.uniform(-noise, noise))))
    return points


def test_flat_traffic_holds_and_never_reaches_the_knee() -> None:
    fitted = growth.weekly_growth(traffic(0.0))
    assert fitted is not None
    assert abs(fitted.weekly) < 0.01
    assert growth.band(fitted.weekly)[0] == "hold"
    status, when = growth.knee_date(fitted, knee=500.0)
    assert status in ("never", "ahead")
    if when is not None:  # a tiny positive slope: the knee is years away, not weeks
        assert when.timestamp() - fitted.at > 52 * WEEK


def test_ten_percent_a_week_means_plan_next_week() -> None:
    fitted = growth.weekly_growth(traffic(0.10))
    assert fitted is not None
    assert fitted.weekly == pytest.approx(0.10, abs=0.01)
    assert fitted.low <= 0.10 <= fitted.high
    assert growth.band(fitted.weekly)[0] == "plan"


def test_twenty_percent_a_week_means_scale_now_and_dates_the_knee() -> None:
    fitted = growth.weekly_growth(traffic(0.20))
    assert fitted is not None
    assert fitted.weekly == pytest.approx(0.20, abs=0.01)
    assert growth.band(fitted.weekly)[0] == "scale now"
    # 100/s * 1.2^4 = 207/s now; 2x that is log(2)/log(1.2) = 3.8 weeks away.
    status, when = growth.knee_date(fitted, knee=2 * fitted.level)
    assert status == "ahead" and when is not None
    assert (when.timestamp() - fitted.at) / WEEK == pytest.approx(3.80, abs=0.2)
    assert growth.knee_date(fitted, knee=fitted.level / 2)[0] == "reached"


def test_noise_does_not_move_the_band() -> None:
    for seed in range(5):
        fitted = growth.weekly_growth(traffic(0.10, noise=0.3, seed=seed))
        assert fitted is not None
        assert fitted.weekly == pytest.approx(0.10, abs=0.02)
        assert growth.band(fitted.weekly)[0] == "plan"


def test_a_gap_and_missing_values_are_skipped() -> None:
    series = [
        (t, None if i % 17 == 0 else v)  # scrape failures
        for i, (t, v) in enumerate(traffic(0.20, weeks=5))
        if not START + WEEK <= t < START + 2 * WEEK  # a week with no data at all
    ]
    series.append((START + 10 * HOUR, float("nan")))
    fitted = growth.weekly_growth(series)
    assert fitted is not None
    assert fitted.weekly == pytest.approx(0.20, abs=0.015)


def test_short_history_gives_no_growth_rate() -> None:
    assert growth.weekly_growth(traffic(0.5, weeks=1 / 7)) is None  # one day
    assert growth.band(None)[0] == "unknown"


def test_band_boundaries() -> None:
    assert [growth.band(g)[0] for g in (0.0, 0.049, 0.05, 0.15, 0.151)] == [
        "hold",
        "hold",
        "plan",
        "plan",
        "scale now",
    ]


def test_unit_costs_per_thousand_requests_and_keys() -> None:
    rps = [(START + i * 60, 200.0 + i) for i in range(10)]
    costs = growth.unit_costs(
        {
            "rps": rps,
            "memory_bytes": [(t, v * 1e6) for t, v in rps],  # 1 MB per rps
            "cpu_cores": [(t, v / 500) for t, v in rps],  # 2 cores per 1k rps
            "redis_memory_bytes": [(START, 5e6)],
            "redis_keys": [(START, 20_000.0)],
        }
    )
    assert costs["memory per 1k rps"]["value"] == pytest.approx(1e9)
    assert costs["CPU per 1k rps"]["value"] == pytest.approx(2.0)
    assert costs["Redis memory per 1k keys"]["value"] == pytest.approx(250_000)
    assert costs["DB connections per 1k rps"] == {
        "value": None,
        "unit": "connections",
        "missing": ["db_connections"],
    }


def test_capacity_plan_writes_the_plan_from_a_series_file(tmp_path: Path, capsys) -> None:
    series = tmp_path / "series.json"
    series.write_text(json.dumps({"rps": traffic(0.20), "cpu_cores": traffic(0.20)}))
    reports = tmp_path / "reports"
    code = plan.main([f"SERIES={series}", "KNEE_RPS=400", f"LOADTEST_REPORTS_DIR={reports}"])
    assert code == 0
    (folder,) = reports.iterdir()
    written = json.loads((folder / "plan.json").read_text())
    assert written["band"] == "scale now"
    assert written["knee"]["status"] == "ahead"
    assert (folder / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (folder / "plan.md").read_text()
    assert "**scale now**" in text and "reached around" in text
    assert "scale now" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("knob", "expected"),
    [
        ("KNEE_RPS=fast", "KNEE_RPS='fast' is not valid"),
        ("WINDOW=3 weeks", "WINDOW='3 weeks' is not valid"),
        ("SERIES=/nonexistent.json", "no such file"),
        ("PROMETHEUS_URL=http://127.0.0.1:1", "did not answer"),
        ("WINDOWS=28d", "not a knob of make capacity-plan"),
    ],
)
def test_bad_input_says_why_and_writes_nothing(
    tmp_path: Path, capsys, knob: str, expected: str
) -> None:
    code = plan.main([knob, f"LOADTEST_REPORTS_DIR={tmp_path}"])
    assert code in (plan.EXIT_KNOB, plan.EXIT_SOURCE)
    assert expected in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_a_series_file_without_traffic_writes_nothing(tmp_path: Path, capsys) -> None:
    series = tmp_path / "empty.json"
    series.write_text(json.dumps({"rps": [[START, None]]}))
    reports = tmp_path / "reports"
    assert plan.main([f"SERIES={series}", f"LOADTEST_REPORTS_DIR={reports}"]) == plan.EXIT_SOURCE
    assert "no request rate" in capsys.readouterr().out
    assert not reports.exists()


def test_unit_costs_are_read_at_the_busiest_times() -> None:
    # An idle night (1 rps) next to a busy day (1000 rps); memory is 1 GB fixed + 1 MB per rps.
    rps = [(START + i * 60, 1.0 if i < 60 else 1000.0) for i in range(80)]
    memory = [(t, 1e9 + v * 1e6) for t, v in rps]
    cost = growth.unit_costs({"rps": rps, "memory_bytes": memory})["memory per 1k rps"]["value"]
    assert cost == pytest.approx(2e9)  # per 1k rps at 1000 rps, not 1 GB charged to 1 request
