from __future__ import annotations

import pytest
from loadtest.knobs import parse
from loadtest.shapes import SCENARIOS, peak_users, tick


def schedule(**env: str) -> list[tuple[int, float] | None]:
    """tick() once a second over the run and two seconds past it."""
    stages = parse(env).stages
    end = int(stages[-1][0])
    return [tick(stages, t + 0.5) for t in range(end + 2)]


def test_smoke_is_a_few_users_briefly_then_stops() -> None:
    ticks = schedule(SCENARIO="smoke")
    assert ticks[:15] == [(5, 5.0)] * 15
    assert ticks[15:] == [None, None]


def test_journey_holds_users_for_duration() -> None:
    ticks = schedule(SCENARIO="journey", USERS="7", DURATION="4s", SPAWN_RATE="3")
    assert ticks == [(7, 3.0)] * 4 + [None, None]


def test_ramp_steps_up_in_four_equal_steps() -> None:
    ticks = schedule(SCENARIO="ramp", USERS="40", DURATION="8s")
    assert [t[0] if t else None for t in ticks] == [10, 10, 20, 20, 30, 30, 40, 40, None, None]


def test_spike_jumps_for_the_middle_fifth_and_falls_back() -> None:
    ticks = schedule(SCENARIO="spike", USERS="50", DURATION="10s")
    users = [t[0] if t else None for t in ticks]
    assert users == [10, 10, 10, 10, 50, 50, 10, 10, 10, 10, None, None]
    assert ticks[4] == (50, 50.0), "a spike starts everyone at once by default"


def test_soak_runs_long_by_default() -> None:
    stages = parse({"SCENARIO": "soak"}).stages
    assert stages == [(1800.0, 20, 4.0)]
    assert tick(stages, 1799.9) == (20, 4.0) and tick(stages, 1800.0) is None


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_reaches_its_users_and_ends(name: str) -> None:
    stages = parse({"SCENARIO": name, "USERS": "9", "DURATION": "10s"}).stages
    assert peak_users(stages) == 9
    assert tick(stages, 0.0) is not None
    assert tick(stages, 10.0) is None
