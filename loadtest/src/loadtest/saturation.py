"""Which resource of the stack saturated first, from the server-side figures of each step.

A *pressure* is a figure over its saturation threshold (>= 1: saturated), per service: CPU
(one event loop per process: near one core), in flight against the concurrency limit, pool in
use, pool checkout wait, statement latency against the lightest step's, event-loop lag (the
time of a `/healthz`), and any shed answer or breaker rejection; plus the whole machine's CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: A process runs one event loop: near one core it is saturated.
CPU_BUSY = 0.85
HOST_CPU_BUSY = 0.95
POOL_BUSY = 0.9
POOL_WAIT_S = 0.010
LOOP_LAG_S = 0.050
STATEMENT_SLOWDOWN = 3.0
STATEMENT_FLOOR_S = 0.005
#: `<P>_DEGRADE_AT`'s default: the service tier degrades from this share of its limit.
DEGRADE_AT = 0.8
HOST_CPU = "host CPU (whole machine)"


def pressures(step: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, float]:
    """Resource name -> its load over its saturation threshold at `step` (>= 1: saturated).

    `baseline` is the first (lightest) step: statement latency is judged against it.
    """
    found: dict[str, float] = {}
    for name, s in step["services"].items():
        base = baseline["services"].get(name, {})
        if s.get("cpu_cores") is not None:
            found[f"{name} CPU"] = s["cpu_cores"] / CPU_BUSY
        if s.get("in_flight_max") is not None and s.get("concurrency_limit"):
            found[f"{name} in-flight"] = s["in_flight_max"] / (DEGRADE_AT * s["concurrency_limit"])
        if s.get("pool_used_max") is not None and s.get("pool_max"):
            found[f"{name} pool in use"] = s["pool_used_max"] / (POOL_BUSY * s["pool_max"])
        if s.get("pool_wait_p95_s") is not None:
            wait = s["pool_wait_p95_s"] / POOL_WAIT_S
            if s.get("pool_timeouts"):
                wait = max(wait, 1.0)
            # The checkout is timed on the event loop: with connections to spare, a slow
            # checkout is a busy loop waiting for its turn, not a short pool.
            short = bool(s.get("pool_timeouts")) or (s.get("pool_used_max") or 0) >= POOL_BUSY * (
                s.get("pool_max") or math.inf
            )
            found[f"{name} pool wait" if short else f"{name} event loop (slow pool checkout)"] = (
                wait
            )
        if s.get("statement_p95_s") is not None:
            floor = max(
                STATEMENT_SLOWDOWN * (base.get("statement_p95_s") or 0.0), STATEMENT_FLOOR_S
            )
            found[f"{name} statement latency"] = s["statement_p95_s"] / floor
        if s.get("loop_lag_p95_s") is not None:
            found[f"{name} event-loop lag"] = s["loop_lag_p95_s"] / LOOP_LAG_S
        if s.get("shed"):
            found[f"{name} shedding"] = 1.0 + s["shed"] / max(1.0, s["rate"] * step["seconds"])
        if s.get("breaker_rejected") or s.get("breaker_open"):
            found[f"{name} breaker"] = 1.0 + float(s.get("breaker_rejected") or 0)
    if step.get("host_cpu") is not None:
        found[HOST_CPU] = step["host_cpu"] / HOST_CPU_BUSY
    return found


def first_saturated(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The stack's resource that crossed its threshold at the lowest offered rate (or came
    closest). The host's CPU is left out: on a shared machine others use it too."""
    ordered = sorted(steps, key=lambda s: s["offered"])

    def of_stack(step: Mapping[str, Any]) -> dict[str, float]:
        found = pressures(step, ordered[0])
        found.pop(HOST_CPU, None)
        return found

    for step in ordered:
        found = of_stack(step)
        saturated = {k: v for k, v in found.items() if v >= 1.0}
        if saturated:
            name = max(saturated, key=saturated.__getitem__)
            return {
                "resource": name,
                "offered": step["offered"],
                "pressure": saturated[name],
                "saturated": True,
                "others": sorted(saturated, key=saturated.__getitem__, reverse=True),
            }
    found = of_stack(ordered[-1])
    if not found:
        return {
            "resource": None,
            "offered": None,
            "pressure": None,
            "saturated": False,
            "others": [],
        }
    name = max(found, key=found.__getitem__)
    return {
        "resource": name,
        "offered": ordered[-1]["offered"],
        "pressure": found[name],
        "saturated": False,
        "others": [],
    }
