"""The knobs of `make loadtest`, read from the environment and checked before anything runs.

Each knob is parsed once, here; a bad value raises `KnobError` naming the knob, what it got
and what it accepts, so the runner can refuse at once and write nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadtest.journey import MIXES
from loadtest.shapes import SCENARIOS, Scenario, Stage

#: Development keys with the `loadtest` scope (the gateway's DEMO_API_KEYS pool).
DEV_KEYS = tuple(f"loadtest-key-{i}" for i in range(1, 9))
DEFAULT_SLO_P99_MS = 500.0
DEFAULT_SLO_ERROR_RATE = 0.01
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{1,256}$")

#: Knob -> what it accepts (listed whenever one is wrong).
VALID: dict[str, str] = {
    "SCENARIO": " | ".join(SCENARIOS) + " (default journey)",
    "MIX": " | ".join(MIXES) + " (default journey): the task weights, loadtest/README.md",
    "USERS": "a whole number >= 1 (default per scenario)",
    "SPAWN_RATE": "a number > 0, users started per second (default per scenario)",
    "DURATION": "Locust's notation: 30s, 2m, 1h30m, or plain seconds (default per scenario)",
    "HOST": "http(s)://host[:port] (default http://127.0.0.1:$GATEWAY_PORT, port 8000)",
    "GATEWAY_PORT": "a port 1-65535 (used when HOST is not set)",
    "WORKERS": "a whole number >= 0: 0 runs Locust alone, n a master and n local workers",
    "DYE": "1 (mark traffic X-Shadow-Traffic: 1, the default) | 0 (live traffic)",
    "LOADTEST_API_KEYS": "comma-separated API keys with the loadtest scope",
    "SLO_P99_MS": f"a number > 0, milliseconds (default {DEFAULT_SLO_P99_MS:g})",
    "SLO_ERROR_RATE": f"a fraction 0..1 (default {DEFAULT_SLO_ERROR_RATE:g}, i.e. 1 %)",
}


class KnobError(ValueError):
    """A knob has a value it does not accept; the message lists what it does."""

    def __init__(
        self, knob: str, value: str, reason: str = "", *, valid: Mapping[str, str] = VALID
    ) -> None:
        self.knob = knob
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{knob}={value!r} is not valid{detail}; expected {valid[knob]}")


def parse_duration(raw: str) -> float:
    """Seconds of a Locust-style duration (`30s`, `2m`, `1h30m`, `90`); ValueError otherwise."""
    text = raw.strip().lower()
    if text.isdigit():
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not text or match is None:
            raise ValueError(raw)
        hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = float(hours * 3600 + minutes * 60 + secs)
    if seconds <= 0:
        raise ValueError(raw)
    return seconds


@dataclass(frozen=True)
class Knobs:
    """Every knob, parsed and defaulted."""

    scenario: Scenario
    mix: str
    users: int
    spawn_rate: float
    duration: float
    host: str
    workers: int
    dye: bool
    keys: tuple[str, ...]
    slo_p99_ms: float
    slo_error_rate: float

    @property
    def stages(self) -> list[Stage]:
        return self.scenario.stages(self.users, self.spawn_rate, self.duration)


def number(
    env: Mapping[str, str], knob: str, kind: type, low: float, valid: Mapping[str, str] = VALID
) -> float | None:
    """The knob as a number >= `low` (None when unset); KnobError listing `valid` otherwise."""
    raw = env.get(knob, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise KnobError(knob, raw, valid=valid) from None
    if not low <= value < float("inf"):  # also refuses nan
        raise KnobError(knob, raw, valid=valid)
    return float(value)


def host(env: Mapping[str, str]) -> str:
    """The gateway to load, from HOST or GATEWAY_PORT; KnobError when malformed."""
    raw = env.get("HOST", "").strip()
    if not raw:
        port = env.get("GATEWAY_PORT", "").strip() or "8000"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise KnobError("GATEWAY_PORT", port)
        return f"http://127.0.0.1:{port}"
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise KnobError("HOST", raw, "bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise KnobError("HOST", raw)
    return raw.rstrip("/")


def parse(env: Mapping[str, str] | None = None) -> Knobs:
    """The knobs from `env` (default: the process environment); KnobError on a bad one."""
    env = os.environ if env is None else env
    name = env.get("SCENARIO", "").strip() or "journey"
    if name not in SCENARIOS:
        raise KnobError("SCENARIO", name, "unknown scenario")
    scenario = SCENARIOS[name]
    mix = env.get("MIX", "").strip() or "journey"
    if mix not in MIXES:
        raise KnobError("MIX", mix, "unknown mix")

    users_value = number(env, "USERS", int, 1)
    users = int(users_value) if users_value is not None else scenario.users
    spawn_rate = number(env, "SPAWN_RATE", float, 0.0)
    if spawn_rate == 0.0:
        raise KnobError("SPAWN_RATE", env["SPAWN_RATE"])
    raw_duration = env.get("DURATION", "").strip()
    try:
        duration = parse_duration(raw_duration) if raw_duration else scenario.duration
    except ValueError:
        raise KnobError("DURATION", raw_duration) from None
    workers = number(env, "WORKERS", int, 0)
    dye = env.get("DYE", "").strip() or "1"
    if dye not in ("0", "1"):
        raise KnobError("DYE", dye)
    raw_keys = env.get("LOADTEST_API_KEYS", "")
    keys = tuple(k.strip() for k in raw_keys.split(",") if k.strip()) or DEV_KEYS
    if not all(_KEY.match(k) for k in keys):
        raise KnobError("LOADTEST_API_KEYS", "<hidden>", "a key has characters a key cannot")
    p99 = number(env, "SLO_P99_MS", float, 0.0)
    if p99 == 0.0:
        raise KnobError("SLO_P99_MS", env["SLO_P99_MS"])
    error_rate = number(env, "SLO_ERROR_RATE", float, 0.0)
    if error_rate is not None and error_rate > 1:
        raise KnobError("SLO_ERROR_RATE", env["SLO_ERROR_RATE"])
    return Knobs(
        scenario=scenario,
        mix=mix,
        users=users,
        spawn_rate=spawn_rate or scenario.default_spawn_rate(users),
        duration=duration,
        host=host(env),
        workers=int(workers or 0),
        dye=dye == "1",
        keys=keys,
        slo_p99_ms=p99 or DEFAULT_SLO_P99_MS,
        slo_error_rate=DEFAULT_SLO_ERROR_RATE if error_rate is None else error_rate,
    )
