"""`report.md` of `make capacity`: the headline, the steps, the pressures, the recommendations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadtest.capacity_report import env_snippet
from loadtest.saturation import (
    CPU_BUSY,
    DEGRADE_AT,
    HOST_CPU_BUSY,
    LOOP_LAG_S,
    POOL_BUSY,
    POOL_WAIT_S,
    STATEMENT_FLOOR_S,
    STATEMENT_SLOWDOWN,
    pressures,
)


def headline(result: Mapping[str, Any]) -> str:
    first = result["first_saturated"]
    if first["resource"] is None:
        named = "no resource measured"
    elif first["saturated"]:
        named = (
            f"{first['resource']} (x{first['pressure']:.2f} of its threshold at "
            f"{first['offered']:.0f}/s offered)"
        )
    else:
        named = (
            f"none crossed its threshold; closest: {first['resource']} (x{first['pressure']:.2f})"
        )
    lines = [f"capacity: {result['knee']['verdict']}", f"first saturated: {named}"]
    if "sustainable_rps" in result:
        lines.append(
            f"sustainable goodput {result['sustainable_rps']:.1f}/s, safe "
            f"{result['safe_rps']:.1f}/s (headroom {result['headroom']:.0%}); p99 at the knee "
            f"{result['at_knee']['p99_ms']:.0f} ms"
        )
    return "\n".join(lines)


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def header(*names: str) -> list[str]:
    return [row(*names), row(*("---" for _ in names))]


def _f(value: Any, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def markdown(
    steps: Sequence[Mapping[str, Any]],
    result: Mapping[str, Any],
    run: Mapping[str, Any],
    plots: Sequence[str],
) -> str:
    ordered = sorted(steps, key=lambda s: s["offered"])
    out = [
        "# Capacity report",
        "",
        f"Against `{run['host']}` ({run['database']}), journey mix, open loop, "
        f"{len(steps)} steps of {run['step_seconds']:g} s in {run['duration_s']:.0f} s "
        f"(time cap {run['time_cap_s']:g} s). SLO: p99 {run['slo']['p99_ms']:g} ms, "
        f"errors + shed + dropped ≤ {run['slo']['failure_budget']:.1%} of offered. "
        f"Machine: {run.get('cpu_count') or '?'} cores, {run.get('uptime') or 'load average -'} "
        "when it ended: the generator and every service share these cores (with other jobs, on "
        "a shared machine).",
        "",
        "```",
        headline(result),
        "```",
        "",
        "## Steps (in the order run)",
        "",
        *header(
            "#",
            "offered/s",
            "achieved/s",
            "goodput/s",
            "p50 ms",
            "p99 ms",
            "ok",
            "business",
            "shed",
            "error",
            "dropped",
            "host CPU",
        ),
    ]
    for number, s in enumerate(steps, 1):
        o = s["outcomes"]
        out.append(
            f"| {number} | {s['offered']:.1f} | {s['achieved']:.1f} | {s['goodput']:.1f} | "
            f"{_f(s['p50_ms'], '{:.0f}')} | {_f(s['p99_ms'], '{:.0f}')} | {o['ok']} | "
            f"{o['business']} | {o['shed']} | {o['error']} | {s['dropped']} | "
            f"{_f(s.get('host_cpu'), '{:.0%}')} |"
        )
    out += ["", "## Resources (load over saturation threshold; ≥ 1 is saturated)", ""]
    names = sorted({k for s in ordered for k in pressures(s, ordered[0])})
    out.append("| resource | " + " | ".join(f"{s['offered']:.0f}/s" for s in ordered) + " |")
    out.append("|---" * (len(ordered) + 1) + "|")
    for name in names:
        cells = [_f(pressures(s, ordered[0]).get(name), "{:.2f}") for s in ordered]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"Thresholds: CPU {CPU_BUSY} core per process, host CPU {HOST_CPU_BUSY:.0%}, in-flight "
        f"{DEGRADE_AT:.0%} of the concurrency limit, pool in use {POOL_BUSY:.0%} of its maximum, "
        f"pool wait p95 {POOL_WAIT_S * 1000:g} ms, statement p95 {STATEMENT_SLOWDOWN:g}x the "
        f"lightest step's (at least {STATEMENT_FLOOR_S * 1000:g} ms), event-loop lag "
        f"(`/healthz` time) p95 {LOOP_LAG_S * 1000:g} ms, any shed answer, any breaker rejection.",
        "",
    ]
    if "unavailable" in result:
        out += ["## Recommendations", "", result["unavailable"], ""]
    else:
        out += _recommendations(result, run)
    out += [
        "## How it was measured",
        "",
        "Client side (the open-loop generator, from each request's scheduled send): offered, "
        "answered, goodput (ok and business answers within the SLO), outcomes, p50/p99. Server "
        "side, from each service's `/metrics` at a step's start and end and once a second: "
        "requests and mean time (probes left out), `http_server_active_requests`, "
        "`process_cpu_seconds_total`, `db_client_connection_*` (in use, checkout wait), shed and "
        "breaker counters; event-loop lag is the time of a `GET /healthz` from this client; "
        "statements are the spans in `.run/traces` (a local `make up` only). With "
        "`WEB_CONCURRENCY` > 1 each scrape reads one worker of a service.",
        "",
        "## Plots",
        "",
        *(f"![{p}]({p})" for p in plots),
        "",
    ]
    return "\n".join(out)


def _recommendations(result: Mapping[str, Any], run: Mapping[str, Any]) -> list[str]:
    bound = (
        ""
        if result["knee"]["reached"]
        else (" The knee was **not reached**: these are lower bounds from the highest step run.")
    )
    out = [
        "## Recommendations",
        "",
        f"From the step at {result['at_knee']['offered']:.1f}/s offered (goodput "
        f"{result['sustainable_rps']:.1f}/s), headroom {result['headroom']:.0%}.{bound}",
        "",
        "| route | rate at knee/s | safe/s | p99 ms at knee |",
        "|---|---|---|---|",
    ]
    for kind, r in result["routes"].items():
        out.append(
            row(
                f"`{kind}`",
                f"{r['rate_at_knee']:.1f}",
                f"{r['safe_rate']:.1f}",
                _f(r["p99_ms_at_knee"], "{:.0f}"),
            )
        )
    out += [
        "",
        *header(
            "service",
            "rate at knee/s",
            "safe/s",
            "mean ms",
            "L = λW",
            "MAX_CONCURRENCY",
            "CPU cores",
            "cores per 1k rps",
            "pool in use",
            "statements at once",
            "DB_POOL_SIZE + OVERFLOW",
            "replicas",
        ),
    ]
    for name, e in result["services"].items():
        pool = f"{e['db_pool_size']} + {e['db_max_overflow']}" if "db_pool_size" in e else "-"
        out.append(
            row(
                name,
                f"{e['rate_at_knee']:.1f}",
                f"{e['safe_rate']:.1f}",
                _f(e["mean_ms_at_knee"]),
                _f(e.get("little_L"), "{:.2f}"),
                str(e.get("max_concurrency", "-")),
                _f(e.get("cpu_cores_at_knee"), "{:.2f}"),
                _f(e.get("cpu_cores_per_1k_rps"), "{:.2f}"),
                _f(e.get("pool_in_use_at_knee"), "{:.0f}"),
                _f(e.get("statement_concurrency_at_knee"), "{:.2f}"),
                pool,
                str(e.get("replicas", "-")),
            )
        )
    c = result["connections"]
    target = run.get("target_rps")
    sized_for = f"TARGET_RPS={target:g}/s" if target else "the safe rate"
    out += [
        "",
        f"Database connections: {c['recommended_total']} across every pool, process and replica, "
        f"within {c['usable']} usable of max_connections {c['max_connections']} ({c['source']})"
        + ("; pools scaled down to fit." if c["scaled_down"] else ".")
        + (
            ""
            if c.get("fits", True)
            else " **They do not fit** even at one connection per process: fewer replicas, a "
            "larger server or a connection pooler (PgBouncer)."
        ),
        f"Stack replicas for {sized_for}: {result['stack_replicas']}.",
        "",
        "`.env` (`APPLY=1` writes it):",
        "",
        "```",
        env_snippet(result, run).rstrip(),
        "```",
        "",
    ]
    return out
