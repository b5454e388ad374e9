"""The knobs of `make capacity`, read from the environment and `KEY=value` arguments.

A bad value or an unknown knob raises `loadtest.knobs.KnobError` naming it and what it accepts
(`VALID`), before anything runs or is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import knee, knobs

REPORTS = Path(__file__).resolve().parents[2] / "reports"
EXIT_KNOB, EXIT_UNREACHABLE = 2, 3
#: Seconds a step may take beyond its duration: answers still due (the generator's drain).
DRAIN_SECONDS = 5.0
#: Seconds between steps, so one step's queue does not spill into the next.
SETTLE_SECONDS = 1.0
SAMPLE_EVERY = 1.0
WARMUP_SECONDS = 3.0

VALID: dict[str, str] = {
    "HOST": "http://host[:port] of the gateway (default http://127.0.0.1:$GATEWAY_PORT)",
    "GATEWAY_PORT": "a port 1-65535 (used when HOST is not set)",
    "LOADTEST_API_KEYS": "comma-separated API keys with the loadtest scope",
    "DYE": "1 (X-Shadow-Traffic: 1, the default) | 0 (live traffic)",
    "TARGET_RPS": "a number > 0: the rate to size replicas for (default: the knee's)",
    "APPLY": "0 (default) | 1: write the recommended settings to .env",
    "SLO_P99_MS": "a number > 0: client-side p99 of answers not shed, ms (default 500)",
    "SLO_ERROR_RATE": "a fraction 0..1: errors + shed + dropped per offered (default 0.01)",
    "TIME_CAP": "a duration (30s, 4m, or seconds) >= two steps (default 4m)",
    "STEP_DURATION": "a duration, each step's length (default 12s)",
    "START_RPS": "a number > 0: the first step's offered rate (default 20)",
    "STEP_FACTOR": "a number > 1: each climbing step offers this many times the last (default 2)",
    "CONNECTIONS": "a whole number >= 1: the generator's connection pool (default 256)",
    "HEADROOM": "a fraction 0..0.9 kept free below the knee (default 0.3)",
    "LOADTEST_REPORTS_DIR": "a folder for the report (default loadtest/reports)",
}


@dataclass(frozen=True)
class Knobs:
    host: str
    keys: tuple[str, ...]
    dye: bool
    target_rps: float | None
    apply: bool
    slo: knee.Slo
    time_cap: float
    step_seconds: float
    start_rps: float
    factor: float
    connections: int
    headroom: float
    reports: Path

    @property
    def step_budget(self) -> float:
        """The longest a step can take, from its first send to the next step."""
        return self.step_seconds + DRAIN_SECONDS + SETTLE_SECONDS

    @property
    def shortest_cap(self) -> float:
        """The warm-up and two steps: less cannot show a curve."""
        return WARMUP_SECONDS + DRAIN_SECONDS + 2 * self.step_budget


def _duration(env: Mapping[str, str], knob: str, default: float) -> float:
    raw = env.get(knob, "").strip()
    if not raw:
        return default
    try:
        return knobs.parse_duration(raw)
    except ValueError:
        raise knobs.KnobError(knob, raw, valid=VALID) from None


def _flag(env: Mapping[str, str], knob: str, default: str) -> bool:
    raw = env.get(knob, "").strip() or default
    if raw not in ("0", "1"):
        raise knobs.KnobError(knob, raw, valid=VALID)
    return raw == "1"


def parse(env: Mapping[str, str], overrides: Sequence[str] = ()) -> Knobs:
    """The knobs from `env` and `KEY=value` overrides; KnobError on a bad or unknown one."""
    merged = dict(env)
    for item in overrides:
        name, equals, value = item.partition("=")
        if not equals or name not in VALID:
            known = {name: "one of " + ", ".join(VALID)}
            raise knobs.KnobError(name, value, "not a knob of make capacity", valid=known)
        merged[name] = value

    def number(knob: str, kind: type, low: float, default: float) -> float:
        value = knobs.number(merged, knob, kind, low, VALID)
        return default if value is None else value

    try:
        host = knobs.host(merged)
    except knobs.KnobError as exc:
        raise knobs.KnobError(exc.knob, merged.get(exc.knob, ""), valid=VALID) from None
    if urlsplit(host).scheme != "http":
        raise knobs.KnobError(
            "HOST", host, "the open-loop generator speaks plain HTTP", valid=VALID
        )
    raw_keys = merged.get("LOADTEST_API_KEYS", "")
    keys = tuple(k.strip() for k in raw_keys.split(",") if k.strip()) or knobs.DEV_KEYS
    target = number("TARGET_RPS", float, 0.0, 0.0)
    slo_p99 = number("SLO_P99_MS", float, 0.0, knobs.DEFAULT_SLO_P99_MS)
    budget = number("SLO_ERROR_RATE", float, 0.0, knobs.DEFAULT_SLO_ERROR_RATE)
    factor = number("STEP_FACTOR", float, 0.0, 2.0)
    headroom = number("HEADROOM", float, 0.0, 0.3)
    for knob, bad in (
        ("TARGET_RPS", "TARGET_RPS" in merged and merged["TARGET_RPS"].strip() and target == 0),
        ("SLO_P99_MS", slo_p99 == 0),
        ("SLO_ERROR_RATE", budget > 1),
        ("STEP_FACTOR", factor <= 1),
        ("HEADROOM", headroom > 0.9),
    ):
        if bad:
            raise knobs.KnobError(knob, merged[knob], valid=VALID)
    chosen = Knobs(
        host=host,
        keys=keys,
        dye=_flag(merged, "DYE", "1"),
        target_rps=target or None,
        apply=_flag(merged, "APPLY", "0"),
        slo=knee.Slo(p99_ms=slo_p99, failure_budget=budget),
        time_cap=_duration(merged, "TIME_CAP", 240.0),
        step_seconds=_duration(merged, "STEP_DURATION", 12.0),
        start_rps=number("START_RPS", float, 0.0, 20.0) or 20.0,
        factor=factor,
        connections=int(number("CONNECTIONS", int, 1, 256)),
        headroom=headroom,
        reports=Path(merged.get("LOADTEST_REPORTS_DIR") or REPORTS),
    )
    if chosen.time_cap < chosen.shortest_cap:
        raise knobs.KnobError(
            "TIME_CAP",
            merged.get("TIME_CAP", ""),
            f"{chosen.time_cap:g} s is too short for a warm-up and two steps: at least "
            f"{chosen.shortest_cap:g} s with STEP_DURATION={chosen.step_seconds:g}s",
            valid=VALID,
        )
    return chosen
