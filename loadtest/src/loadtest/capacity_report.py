"""The capacity report: which resource saturated first, recommendations computed from the knee.

`write(folder, steps, run)` turns the steps of `make capacity` (client and server figures per
step, see `loadtest.capacity` and `loadtest.scrape`) into `steps.json`, `recommendations.json`,
`report.md` and four PNG plots. Everything is computed from the step at the knee, the highest
sustained one (`loadtest.knee`), with `headroom` kept free below it:

- per route and per service: the rate at the knee and the safe rate, `rate * (1 - headroom)`;
- each service's concurrency limit by Little's law: the most requests that can be in flight
  at the knee's throughput while each still ends within the SLO, `ceil(rate * SLO p99)`
  (and at least twice the measured L = rate * mean time, so the knee itself is admitted);
- DB pools from the connections in use at the knee (or the statements running at once,
  from traces, if more), 1.5 times that, overflow half the pool; then all pools of all
  processes and replicas together are scaled down to fit PostgreSQL's `max_connections`
  less its reserved connections;
- the gateway's limits: global the safe rate of every replica; per client `CLIENT_SHARE` of
  it; checkout per customer `CLIENT_SHARE` of the safe checkout rate;
- replicas for `TARGET_RPS`: of the whole stack as measured, and per service from its CPU
  per request at the knee (one core per replica); the pools are bounded for the larger count.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest import knee
from loadtest.journey import CHECKOUT
from loadtest.saturation import first_saturated

REPO = Path(__file__).resolve().parents[3]
#: No one client may take more than this share of the gateway's global limit.
CLIENT_SHARE = 0.1
POOL_FACTOR = 1.5
MIN_CONCURRENCY = 4
#: PostgreSQL keeps superuser_reserved_connections (3) free; keep at least this share too.
RESERVED_SHARE = 0.1
DEFAULT_MAX_CONNECTIONS = 100


def manifest() -> list[dict[str, Any]]:
    services: list[dict[str, Any]] = tomllib.loads((REPO / "services.toml").read_text())["service"]
    return services


def database_kind(env: Mapping[str, str]) -> str:
    urls = [env.get(f"{s['prefix']}_DATABASE_URL", "") for s in manifest() if s.get("database")]
    return "postgresql" if any(u.startswith("postgres") for u in urls) else "sqlite"


def max_connections(env: Mapping[str, str]) -> dict[str, Any]:
    """PostgreSQL's max_connections when a service's URL names PostgreSQL, else the default."""
    for service in manifest():
        url = env.get(f"{service['prefix']}_DATABASE_URL", "")
        if url.startswith("postgres"):
            try:
                value = asyncio.run(_show_max_connections("postgresql://" + url.split("://", 1)[1]))
            except Exception as exc:  # any failure (driver, network, auth): not read, say why
                return {"value": DEFAULT_MAX_CONNECTIONS, "source": f"default (not read: {exc})"}
            return {"value": value, "source": f"SHOW max_connections ({service['name']})"}
    return {"value": DEFAULT_MAX_CONNECTIONS, "source": "PostgreSQL's default (stack on SQLite)"}


async def _show_max_connections(url: str) -> int:
    import asyncpg  # the services' driver; only needed when they run on PostgreSQL

    connection = await asyncpg.connect(url, timeout=3)
    try:
        return int(await connection.fetchval("SHOW max_connections"))
    finally:
        await connection.close()


# --- recommendations --------------------------------------------------------------------------


def recommend(steps: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> dict[str, Any]:
    """Every recommendation, computed from the knee step; see the module docstring."""
    slo = knee.Slo(run["slo"]["p99_ms"], run["slo"]["failure_budget"])
    found = knee.find_knee([knee.point(s) for s in steps], slo)
    headroom = float(run["headroom"])
    result: dict[str, Any] = {
        "knee": {
            "reached": found.reached,
            "sustainable_offered": found.sustainable,
            "saturated_offered": found.saturated_at,
            "reasons": list(found.reasons),
            "verdict": found.describe(),
        },
        "first_saturated": first_saturated(steps),
        "headroom": headroom,
        "slo": dict(run["slo"]),
        "target_rps": run.get("target_rps"),
    }
    if found.sustainable is None:
        result["unavailable"] = "the first step already saturated: lower START_RPS and run again"
        return result
    at = next(s for s in steps if s["offered"] == found.sustainable)
    rate = at["goodput"]
    safe = rate * (1 - headroom)
    target = run.get("target_rps") or safe
    stack_replicas = max(1, math.ceil(target / safe))
    slo_s = slo.p99_ms / 1000
    services: dict[str, Any] = {}
    for name, s in at["services"].items():
        entry: dict[str, Any] = {
            "rate_at_knee": s["rate"],
            "safe_rate": s["rate"] * (1 - headroom),
            "mean_ms_at_knee": None if s["mean_s"] is None else s["mean_s"] * 1000,
            "cpu_cores_at_knee": s.get("cpu_cores"),
        }
        if s["rate"] > 0 and s["mean_s"] is not None:
            little = s["rate"] * s["mean_s"]
            entry["little_L"] = little
            entry["max_concurrency"] = max(
                MIN_CONCURRENCY, math.ceil(s["rate"] * slo_s), 2 * math.ceil(little)
            )
        if s.get("cpu_cores") and rate > 0:
            per_request = s["cpu_cores"] / rate  # core-seconds per gateway request
            entry["cpu_cores_per_1k_rps"] = per_request * 1000
            entry["replicas"] = max(1, math.ceil(target * per_request / (1 - headroom)))
        if s.get("pool_max"):
            need = max(s.get("pool_used_max") or 0.0, s.get("statement_concurrency") or 0.0)
            pool = max(2, math.ceil(need * POOL_FACTOR))
            entry["pool_in_use_at_knee"] = s.get("pool_used_max")
            entry["statement_concurrency_at_knee"] = s.get("statement_concurrency")
            entry["db_pool_size"] = pool
            entry["db_max_overflow"] = max(1, math.ceil(pool / 2))
        services[name] = entry
    result["connections"] = _bound_pools(services, run, stack_replicas)
    routes = {
        kind: {
            "rate_at_knee": r["rate"],
            "safe_rate": r["rate"] * (1 - headroom),
            "p99_ms_at_knee": r["p99_ms"],
        }
        for kind, r in at["routes"].items()
    }
    checkout = at["routes"].get(CHECKOUT, {}).get("rate", 0.0) * (1 - headroom) * stack_replicas
    global_limit = max(1, math.floor(safe * stack_replicas))
    result.update(
        {
            "at_knee": {"offered": at["offered"], "goodput": rate, "p99_ms": at["p99_ms"]},
            "sustainable_rps": rate,
            "safe_rps": safe,
            "routes": routes,
            "services": services,
            "stack_replicas": stack_replicas,
            "gateway": {
                "global_rate_limit": f"{global_limit}/second",
                "client_rate_limit": f"{max(1, math.floor(global_limit * CLIENT_SHARE))}/second",
                "checkout_rate_limit": f"{max(1, math.floor(checkout * CLIENT_SHARE))}/second",
            },
        }
    )
    result["env"] = env_settings(result)
    return result


def _bound_pools(services: dict[str, Any], run: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """Scale the pools down, in place, so every connection of every replica fits the server."""
    limit = int(run.get("max_connections", {}).get("value") or DEFAULT_MAX_CONNECTIONS)
    usable = limit - max(3, math.ceil(limit * RESERVED_SHARE))
    pooled = {n: e for n, e in services.items() if "db_pool_size" in e}

    def copies(entry: Mapping[str, Any]) -> int:
        # The larger of the two replica counts: connections must fit whichever is deployed.
        return max(replicas, int(entry.get("replicas") or 1))

    def total() -> int:
        return sum((e["db_pool_size"] + e["db_max_overflow"]) * copies(e) for e in pooled.values())

    wanted = total()
    scale = min(1.0, usable / wanted) if wanted else 1.0
    if scale < 1.0:
        asked = {n: (e["db_pool_size"], e["db_max_overflow"]) for n, e in pooled.items()}
        for entry in pooled.values():
            entry["db_pool_size"] = max(1, math.floor(entry["db_pool_size"] * scale))
            entry["db_max_overflow"] = math.floor(entry["db_max_overflow"] * scale)
        # Rounding down left room: give it back one connection at a time, pools first, to
        # whichever is furthest below what it asked for.
        for key, index in (("db_pool_size", 0), ("db_max_overflow", 1)):
            while True:
                short = [
                    (asked[n][index] - e[key], n)
                    for n, e in pooled.items()
                    if e[key] < asked[n][index] and total() + copies(e) <= usable
                ]
                if not short:
                    break
                pooled[max(short)[1]][key] += 1
    # Every process keeps one connection at least: take what is left over from overflow first.
    while total() > usable:
        spare = [e for e in pooled.values() if e["db_max_overflow"] > 0] or [
            e for e in pooled.values() if e["db_pool_size"] > 1
        ]
        if not spare:
            break
        largest = max(spare, key=lambda e: (e["db_max_overflow"], e["db_pool_size"]))
        key = "db_max_overflow" if largest["db_max_overflow"] > 0 else "db_pool_size"
        largest[key] -= 1
    return {
        "max_connections": limit,
        "source": run.get("max_connections", {}).get("source", "default"),
        "usable": usable,
        "wanted": wanted,
        "recommended_total": total(),
        "scaled_down": scale < 1.0,
        # One connection per process is the floor: past it, fewer replicas or a pooler.
        "fits": total() <= usable,
    }


def env_settings(result: Mapping[str, Any]) -> dict[str, str]:
    """The settings the services read, by their real env names."""
    prefixes = {s["name"]: s["prefix"] for s in manifest()}
    settings = {
        "GATEWAY_GLOBAL_RATE_LIMIT": result["gateway"]["global_rate_limit"],
        "GATEWAY_CLIENT_RATE_LIMIT": result["gateway"]["client_rate_limit"],
        "GATEWAY_CHECKOUT_RATE_LIMIT": result["gateway"]["checkout_rate_limit"],
    }
    for name, entry in result["services"].items():
        prefix = prefixes.get(name)
        if prefix is None:
            continue
        if "max_concurrency" in entry:
            settings[f"{prefix}_MAX_CONCURRENCY"] = str(entry["max_concurrency"])
        if "db_pool_size" in entry:
            settings[f"{prefix}_DB_POOL_SIZE"] = str(entry["db_pool_size"])
            settings[f"{prefix}_DB_MAX_OVERFLOW"] = str(entry["db_max_overflow"])
    return settings


def env_snippet(result: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    replicas = ", ".join(
        f"{n} {e['replicas']}" for n, e in result["services"].items() if "replicas" in e
    )
    lines = [
        f"# make capacity: sustainable {result['sustainable_rps']:.0f}/s on {run['database']}, "
        f"headroom {result['headroom']:.0%}, sized for {result['stack_replicas']} stack replica(s)"
        + (
            f" (TARGET_RPS={run['target_rps']:g}; per service: {replicas})"
            if run.get("target_rps")
            else ""
        ),
        *(f"{k}={v}" for k, v in result["env"].items()),
    ]
    return "\n".join(lines) + "\n"


def apply_env(path: Path, settings: Mapping[str, str]) -> Path:
    """Write `settings` into the .env at `path`: keys replaced in place, new ones appended."""
    lines = path.read_text().splitlines() if path.exists() else []
    left = dict(settings)
    kept = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in left:
            kept.append(f"{key}={left.pop(key)}")
        else:
            kept.append(line)
    kept += [f"{k}={v}" for k, v in left.items()]
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".env.")
    with os.fdopen(handle, "w") as out:
        out.write("\n".join(kept) + "\n")
    os.replace(temporary, path)
    return path


# --- the files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    headline: str
    env: dict[str, str]
    recommendations: dict[str, Any]


def write(folder: Path, steps: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> Written:
    """Every file of the report in `folder` (which exists and is empty)."""
    from loadtest import capacity_markdown, capacity_plots

    result = recommend(steps, run)
    (folder / "steps.json").write_text(
        json.dumps({"run": run, "steps": list(steps)}, indent=1) + "\n"
    )
    (folder / "recommendations.json").write_text(json.dumps(result, indent=2) + "\n")
    plots = capacity_plots.draw(folder, steps, result, run)
    (folder / "report.md").write_text(capacity_markdown.markdown(steps, result, run, plots))
    return Written(capacity_markdown.headline(result), dict(result.get("env", {})), result)
