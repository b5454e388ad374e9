"""How many users run when: the schedule of each scenario, as plain data and a pure `tick`.

A schedule is a list of stages, each `(until, users, spawn_rate)`: from the end of the previous
stage until `until` seconds into the run, `users` users, reached at `spawn_rate` users a second.
`tick(run_time)` answers what Locust's `LoadTestShape.tick` answers: `(users, spawn_rate)`, or
None once the run is over. The locustfile's shape only delegates here, so the schedules are
tested without starting Locust (or gevent).

Scenarios (default users, duration): `smoke` USERS flat (5, 15s); `journey` USERS flat
(20, 1m); `ramp` 4 equal steps up to USERS (40, 2m); `spike` a fifth of USERS, USERS for the
middle fifth of the run, a fifth again (60, 1m); `soak` USERS flat for long (20, 30m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Stage: (until seconds, users, spawn rate per second).
Stage = tuple[float, int, float]


@dataclass(frozen=True)
class Scenario:
    """A scenario's defaults; `stages` builds its schedule from the knobs."""

    name: str
    description: str
    users: int
    duration: float
    kind: str

    #: Seconds to start every user by default: the shape, not the spawn, sets the pace.
    spawn_seconds: float = 5.0

    def default_spawn_rate(self, users: int) -> float:
        return float(max(1, math.ceil(users / self.spawn_seconds)))

    def stages(self, users: int, spawn_rate: float, duration: float) -> list[Stage]:
        if self.kind == "steps":
            step = duration / 4
            return [
                (step * (i + 1), max(1, math.ceil(users * (i + 1) / 4)), spawn_rate)
                for i in range(4)
            ]
        if self.kind == "spike":
            base = max(1, users // 5)
            fifth = duration / 5
            return [
                (2 * fifth, base, spawn_rate),
                (3 * fifth, users, spawn_rate),
                (duration, base, spawn_rate),
            ]
        return [(duration, users, spawn_rate)]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("smoke", "a few users, briefly: does every journey work at all", 5, 15, "flat", 1),
        Scenario("journey", "the default mix at a steady load", 20, 60, "flat"),
        Scenario("ramp", "four equal steps up to USERS", 40, 120, "steps"),
        Scenario("spike", "a fifth of USERS, a sudden jump to USERS, and back", 60, 60, "spike", 1),
        Scenario("soak", "a steady load for long: leaks, drift, slow growth", 20, 1800, "flat"),
    )
}


def tick(stages: list[Stage], run_time: float) -> tuple[int, float] | None:
    """(users, spawn rate) at `run_time` seconds into the run; None once the last stage ended."""
    for until, users, spawn_rate in stages:
        if run_time < until:
            return users, spawn_rate
    return None


def peak_users(stages: list[Stage]) -> int:
    return max(users for _, users, _ in stages)
