"""B7: checkout end to end. Orders/s, p50 and p99 through the gateway; where the time goes.

The stack is the one `make up` starts (`infra/local/stack.py up`: gateway, order, inventory,
payment, one uvicorn process each), on free ports with a private run directory, so it never
meets a developer's stack. Its backends:

- PostgreSQL + Redis: every service on a database created for the run (dropped at the end)
  and on the shared Redis (the gateway's limits under a key prefix of the run);
- SQLite: `make up`'s default, every service on its own file in the run directory.

Traffic is live (not dyed): `POST /api/orders` of one unit of an affordable sku, a fresh
`Idempotency-Key` each, with the gateway's development keys of the `loadtest` scope (one
customer each). The catalogue's stock is raised before the load so no order runs out.

- Loaded: 50 users, closed loop (each user sends its next checkout when answered), over
  `loadtest.openloop`'s raw HTTP/1.1 connections, after a warm-up. Latency is client-side,
  from send to answer; orders/s count 201s only. CPU per order is the CPU time of the four
  service processes and of the run database's PostgreSQL backends over the window, divided
  by the orders (Redis and the generator not counted).
- Unloaded: one checkout at a time (httpx, keep-alive), client-side too.
- Per hop: every service writes its spans to `<run>/traces/<service>.jsonl` (the file exporter
  `make up` sets); each complete checkout trace is split into gateway, order, inventory
  reserve, payment charge and inventory confirm, each with the database statements inside it
  (the spans SQLAlchemy's cursor events make: statements only, so BEGIN, COMMIT, the pool's
  pre-ping and the driver's hops count as the service's own time, not as DB time).
- Tracing: the loaded cell runs twice, at the kit's default sampling (parent-based, 10 % of
  roots) and always-on; the difference is what tracing costs on the real path.
- Optimisation: the loaded cell at B7_OPT_USERS users (a load served without shedding) with
  servicekit and the order service of `B7_BEFORE_REF` (their sources put first on PYTHONPATH
  for every service, nothing else changed) against this tree's, interleaved, `B7_ROUNDS`
  rounds each; medians shown. What changed: `OPTIMISATION`.

The machine is shared (2 cores, other work on it): `uptime` load is recorded before and after.
Knobs: B7_SECONDS (loaded window, default 20), B7_USERS (50), B7_OPT_USERS (12: the before/after
cells), B7_ROUNDS (2), B7_UNLOADED (40 checkouts), B7_BEFORE_REF, B7_POSTGRES_URL, B7_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from b4_overload import free_port, percentile
from loadtest.journey import SKUS, checkout_body
from loadtest.knobs import DEV_KEYS
from loadtest.openloop import Mix, Request, encode
from report import measured_tree, uptime, write
from servicekit.telemetry.waterfall import Span, build_tree, group_traces, read_spans

from loadtest import openloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the manifest reader (infra/manifest.py), as stack.py does
from infra.manifest import load  # noqa: E402

ADMIN_URL = os.environ.get("B7_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("B7_REDIS_URL", "redis://127.0.0.1:6379/0")
SECONDS = float(os.environ.get("B7_SECONDS", "20"))
USERS = int(os.environ.get("B7_USERS", "50"))
#: Users of the optimisation's before/after cells: a load the stack serves without shedding
#: (at USERS inventory's data tier goes read-only in bursts and refuses reservations, so a
#: run measures how often that happened more than the code).
OPT_USERS = int(os.environ.get("B7_OPT_USERS", "12"))
ROUNDS = int(os.environ.get("B7_ROUNDS", "2"))
UNLOADED = int(os.environ.get("B7_UNLOADED", "40"))
WARM_UP_SECONDS = 4.0
#: The order service before the change measured in the optimisation table: every saga step
#: its own transaction (7 per checkout), the confirmed order read back to build the answer.
BEFORE_REF = os.environ.get("B7_BEFORE_REF", "56aab94f09d5e71b7a89308880e2cf3789529dec")
DEFAULT_SAMPLING = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}
ALWAYS_ON = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
#: What B7 measures: a change here makes its result stale (benchmarks/report.py).
MEASURED = ("benchmarks/b7_checkout.py", "gateway/src", "services", "libs/servicekit/src")
HOPS = ("gateway", "order", "inventory reserve", "payment charge", "inventory confirm")


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    run: Path
    env: dict[str, str]
    backend: str
    gateway_port: int
    database: str | None = None
    pids: dict[str, int] = field(default_factory=dict)


def admin(sql: str, database: str | None = None) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        url = ADMIN_URL if database is None else f"{ADMIN_URL.rsplit('/', 1)[0]}/{database}"
        conn = await asyncpg.connect(url, timeout=10)
        try:
            if sql.lstrip().upper().startswith("SELECT"):
                return list(await conn.fetch(sql))
            await conn.execute(sql)
            return []
        finally:
            await conn.close()

    return asyncio.run(run())


#: The code the optimisation changed, taken from `B7_BEFORE_REF` for the "before" cells.
BEFORE_SOURCES = ("libs/servicekit/src", "services/order/src")
#: What changed between `B7_BEFORE_REF` and this tree (the optimisation table names it).
OPTIMISATION = (
    "service calls on aiohttp's pool under httpx's API (was httpx's own pool), and an upstream's"
    " load shedding no longer opens its breaker"
)


def before_source(ref: str, into: Path) -> str:
    """`BEFORE_SOURCES` as of `ref`, unpacked under `into`; the PYTHONPATH that runs them."""
    archive = subprocess.run(  # noqa: S603 (our own git command)
        ["git", "archive", "--format=tar", ref, *BEFORE_SOURCES],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return os.pathsep.join(str(into / source) for source in BEFORE_SOURCES)


@contextmanager
def stack(
    backend: str, tracing: dict[str, str], *, before_path: str | None = None
) -> Iterator[Stack]:
    """A private `make up` stack on `backend` ("postgres" or "sqlite"); torn down on exit."""
    manifest = load()
    foreign = tuple(f"{s.prefix}_" for s in manifest.services)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith((*foreign, "OTEL_")) and k not in ("STACK_RUN_DIR", "PYTHONPATH")
    }
    run = Path(tempfile.mkdtemp(prefix=f"b7-{backend}-"))
    env.update({"STACK_RUN_DIR": str(run), "STACK_PROMETHEUS": "0", **tracing})
    for service in manifest.services:
        env[f"{service.prefix}_PORT"] = str(free_port())
    if before_path is not None:
        env["PYTHONPATH"] = before_path
    database = None
    if backend == "postgres":
        database = f"b7_{secrets.token_hex(4)}"
        admin(f'CREATE DATABASE "{database}"')
        url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{database}"
        for service in manifest.services:
            if service.database:
                env[f"{service.prefix}_DATABASE_URL"] = url
            env[f"{service.prefix}_REDIS_URL"] = REDIS_URL
        env["GATEWAY_RATE_LIMIT_KEY_PREFIX"] = f"b7-{secrets.token_hex(4)}"
    command = [sys.executable, "infra/local/stack.py"]
    try:
        up = subprocess.run(  # noqa: S603
            [*command, "up"], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            raise RuntimeError(f"stack up failed:\n{up.stdout}\n{up.stderr}")
        found = Stack(run, env, backend, int(env["GATEWAY_PORT"]), database)
        found.pids = {p.stem: int(p.read_text()) for p in (run / "pids").glob("*.pid")}
        raise_stock(found)
        yield found
    finally:
        subprocess.run([*command, "down"], cwd=REPO, env=env, capture_output=True, check=False)  # noqa: S603
        if database is not None:
            admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def raise_stock(stack: Stack) -> None:
    """Enough stock of everything that no checkout of the run is refused for want of it."""
    sql = "UPDATE product SET stock = 10000000"
    if stack.database is not None:
        admin(sql, stack.database)
        return
    with sqlite3.connect(stack.run / "inventory.db") as conn:
        conn.execute(sql)


# --- load ---------------------------------------------------------------------------------------


def checkout_mix(config: dict[str, Any]) -> Mix:
    """Checkouts only, live traffic, a fresh key each (a factory for loadtest.openloop)."""
    rng = random.Random(config.get("share", 0))

    def next_request() -> Request:
        headers = {
            "Authorization": f"Bearer {rng.choice(DEV_KEYS)}",
            "Idempotency-Key": secrets.token_hex(16),
            "Content-Type": "application/json",
        }
        body = json.dumps(checkout_body(rng.choice(SKUS))).encode()
        return Request(
            "checkout", encode("POST", "/api/orders", host="b7", headers=headers, body=body)
        )

    return next_request


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each service process and of the run database's backends."""
    found = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
    if stack.database is not None:
        rows = admin(f"SELECT pid FROM pg_stat_activity WHERE datname = '{stack.database}'")  # noqa: S608
        found.update({f"pg:{row['pid']}": cpu_seconds(row["pid"]) for row in rows})
    return found


def closed_loop(stack: Stack, seconds: float, users: int = USERS) -> dict[str, Any]:
    """`users` users for `seconds`: orders/s, client-side p50/p99, CPU per order."""
    config = {
        "port": stack.gateway_port,
        "mix": "b7_checkout:checkout_mix",
        "path": [str(Path(__file__).parent)],
        "connections": users,
        "closed_connections": users,
        "mode": "closed",
        "seconds": seconds,
    }
    cpu_before = cpu_snapshot(stack)
    started = time.time_ns()
    results, _ = openloop.run(config)
    ended = time.time_ns()
    cpu_after = cpu_snapshot(stack)
    used = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
    orders = [r.latency for r in results if r.status == 201]
    statuses: dict[int, int] = defaultdict(int)
    for r in results:
        statuses[r.status] += 1
    cpu_total = sum(used.values())
    return {
        "orders": len(orders),
        "orders_per_s": len(orders) / seconds,
        "p50_ms": percentile(orders, 0.50) * 1000,
        "p99_ms": percentile(orders, 0.99) * 1000,
        "not_201": {str(k): v for k, v in statuses.items() if k != 201},
        "cpu_ms_per_order": cpu_total / len(orders) * 1000 if orders else 0.0,
        "cpu_seconds": {
            "services": round(sum(v for k, v in used.items() if not k.startswith("pg:")), 2),
            "postgres": round(sum(v for k, v in used.items() if k.startswith("pg:")), 2),
        },
        "window_ns": (started, ended),
    }


def unloaded(stack: Stack, count: int) -> dict[str, Any]:
    """`count` checkouts one at a time, client-side latency of each."""
    latencies = []
    started = time.time_ns()
    url = f"http://127.0.0.1:{stack.gateway_port}/api/orders"
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            headers = {
                "Authorization": f"Bearer {DEV_KEYS[i % len(DEV_KEYS)]}",
                "Idempotency-Key": secrets.token_hex(16),
            }
            begin = time.perf_counter()
            response = client.post(url, json=checkout_body(SKUS[i % len(SKUS)]), headers=headers)
            elapsed = time.perf_counter() - begin
            if response.status_code != 201:
                raise RuntimeError(f"checkout answered {response.status_code}: {response.text}")
            latencies.append(elapsed)
            time.sleep(0.02)  # one at a time, and the previous one's exports out of the way
    return {
        "orders": count,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "window_ns": (started, time.time_ns()),
    }


# --- traces: the share of each hop --------------------------------------------------------------


def _is_db(span: Span) -> bool:
    return "db.system.name" in span.attributes


def _descendants(span: Span) -> Iterator[Span]:
    for child in span.children:
        yield child
        yield from _descendants(child)


def _db_ms(server: Span) -> tuple[float, int]:
    """Time and count of the statements run inside `server` (its own service's)."""
    statements = [s for s in _descendants(server) if _is_db(s) and s.service == server.service]
    return sum(s.end - s.start for s in statements) / 1e6, len(statements)


def _ms(span: Span) -> float:
    return (span.end - span.start) / 1e6


def split_trace(spans: list[Span]) -> dict[str, dict[str, float]] | None:
    """One checkout trace as {hop: {ms, db_ms, statements}}; None unless complete and 201.

    A call's time (reserve, charge, confirm) is the order's client span: the transport both ways
    and the downstream's whole handling. The gateway's and the order's time is their own: the
    server span less the calls they make (and, for the order, holding its DB time apart).
    """
    roots = build_tree(spans)
    root = next((r for r in roots if r.service == "gateway" and r.name == "POST /api/orders"), None)
    if root is None or root.attributes.get("http.response.status_code") != 201:
        return None
    to_order = next(
        (c for c in root.children if c.service == "gateway" and "order" in c.name), None
    )
    order = to_order.children[0] if to_order is not None and to_order.children else None
    if to_order is None or order is None:
        return None
    calls: dict[str, Span] = {}
    for child in order.children:
        path = str(child.attributes.get("url.path", ""))
        if child.name == "POST inventory" and path == "/reservations":
            calls["inventory reserve"] = child
        elif child.name == "POST payment" and path == "/charges":
            calls["payment charge"] = child
        elif child.name == "POST inventory" and path.endswith("/commit"):
            calls["inventory confirm"] = child
    if len(calls) != 3 or not all(c.children for c in calls.values()):
        return None
    order_db, order_statements = _db_ms(order)
    hops = {
        "total": {"ms": _ms(root), "db_ms": 0.0, "statements": 0},
        "gateway": {"ms": _ms(root) - _ms(to_order), "db_ms": 0.0, "statements": 0},
        "gateway -> order transport": {
            "ms": _ms(to_order) - _ms(order),
            "db_ms": 0.0,
            "statements": 0,
        },
        "order": {
            "ms": _ms(order) - sum(_ms(c) for c in calls.values()),
            "db_ms": order_db,
            "statements": order_statements,
        },
    }
    for hop, call in calls.items():
        db, statements = _db_ms(call.children[0])
        hops[hop] = {"ms": _ms(call), "db_ms": db, "statements": statements}
    hops["total"]["db_ms"] = sum(h["db_ms"] for k, h in hops.items() if k != "total")
    hops["total"]["statements"] = sum(h["statements"] for k, h in hops.items() if k != "total")
    return hops


def breakdown(stack: Stack, window: tuple[int, int]) -> dict[str, Any]:
    """Mean per hop over every complete checkout trace that began in `window`."""
    time.sleep(1.5)  # the file exporters flush every 0.5 s
    spans = read_spans(sorted((stack.run / "traces").glob("*.jsonl")))
    split = []
    traces = group_traces(spans)
    begun = [t for t in traces.values() if window[0] <= min(s.start for s in t) <= window[1]]
    for trace in begun:
        hops = split_trace(trace)
        if hops is not None:
            split.append(hops)
    if not split:
        return {"traces": 0, "traces_begun": len(begun), "hops": {}}
    mean = {
        hop: {k: statistics.fmean(t[hop][k] for t in split) for k in ("ms", "db_ms", "statements")}
        for hop in split[0]
    }
    return {"traces": len(split), "traces_begun": len(begun), "hops": mean}


# --- the cells ----------------------------------------------------------------------------------


def loaded_cell(
    backend: str, tracing: dict[str, str], before_path: str | None = None, users: int = USERS
) -> dict[str, Any]:
    with stack(backend, tracing, before_path=before_path) as running:
        closed_loop(running, WARM_UP_SECONDS, users)
        result = closed_loop(running, SECONDS, users)
        result["breakdown"] = breakdown(running, result["window_ns"])
    print(
        f"  {backend} {users} users {tracing} {'before' if before_path else 'after'}: "
        f"{describe(result)}",
        flush=True,
    )
    return result


def unloaded_cell(backend: str, before_path: str | None = None) -> dict[str, Any]:
    with stack(backend, ALWAYS_ON, before_path=before_path) as running:
        unloaded(running, 10)  # warm-up: connections, caches, code paths
        result = unloaded(running, UNLOADED)
        result["breakdown"] = breakdown(running, result["window_ns"])
    print(
        f"  {backend} unloaded {'before' if before_path else 'after'}: {describe(result)}",
        flush=True,
    )
    return result


def describe(result: dict[str, Any]) -> str:
    shown = ("orders_per_s", "p50_ms", "p99_ms", "cpu_ms_per_order", "mean_ms")
    return ", ".join(f"{k}={result[k]:.1f}" for k in shown if k in result)


def hop_rows(found: dict[str, Any]) -> list[list[str]]:
    hops = found["breakdown"]["hops"]
    if not hops:
        return []
    total = hops["total"]["ms"]
    rows = []
    for hop in ("gateway", "gateway -> order transport", "order", *HOPS[2:]):
        h = hops[hop]
        rows.append(
            [
                hop,
                f"{h['ms']:.1f} ms",
                f"{h['ms'] / total * 100:.0f} %",
                f"{h['db_ms']:.1f} ms ({h['statements']:.0f})" if h["statements"] else "-",
                f"{h['ms'] - h['db_ms']:.1f} ms",
            ]
        )
    t = hops["total"]
    rows.append(
        [
            "total (gateway's server span)",
            f"{total:.1f} ms",
            "100 %",
            f"{t['db_ms']:.1f} ms ({t['statements']:.0f})",
            f"{total - t['db_ms']:.1f} ms",
        ]
    )
    return rows


HOP_HEADER = ("hop", "mean time", "share", "DB statements inside (count)", "not in a statement")


def change(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.0f} %" if before else "-"


def median_of(cells: list[dict[str, Any]], key: str) -> float:
    return statistics.median(c[key] for c in cells)


def main() -> None:
    load_before = uptime()
    with tempfile.TemporaryDirectory(prefix="b7-before-") as folder:
        old = before_source(BEFORE_REF, Path(folder))
        print("==> unloaded, one checkout at a time, always-on tracing")
        sqlite_after = unloaded_cell("sqlite")
        sqlite_before = unloaded_cell("sqlite", old)
        postgres_unloaded = unloaded_cell("postgres")
        print(f"==> {USERS} users, PostgreSQL + Redis, {SECONDS:.0f} s per cell")
        always_on = loaded_cell("postgres", ALWAYS_ON)
        default = loaded_cell("postgres", DEFAULT_SAMPLING)
        print(f"==> before/after, {OPT_USERS} users, interleaved, {ROUNDS} rounds")
        after, before = [], []
        for _ in range(ROUNDS):
            before.append(loaded_cell("postgres", DEFAULT_SAMPLING, old, OPT_USERS))
            after.append(loaded_cell("postgres", DEFAULT_SAMPLING, users=OPT_USERS))
    load_after = uptime()
    medians = {
        name: {
            k: median_of(cells, k) for k in ("orders_per_s", "p50_ms", "p99_ms", "cpu_ms_per_order")
        }
        for name, cells in (("before", before), ("after", after))
    }
    b, a = medians["before"], medians["after"]
    served = default["orders_per_s"]
    tracing_cost = (always_on["orders_per_s"] - served) / served * 100 if served else 0.0
    machine = f"2-core shared machine; uptime load before: {load_before}, after: {load_after}"
    intro = __doc__.split("\n\n", 1)[1] + f"\n\n{machine}."
    tables = [
        (
            f"B7: {USERS} users, PostgreSQL + Redis, closed loop, {SECONDS:.0f} s",
            ("tracing", "orders/s", "p50", "p99", "CPU per order", "non-201 answers"),
            [
                [
                    "default (10 %)",
                    f"{default['orders_per_s']:.1f}",
                    f"{default['p50_ms']:.1f} ms",
                    f"{default['p99_ms']:.1f} ms",
                    f"{default['cpu_ms_per_order']:.1f} ms",
                    json.dumps(default["not_201"]),
                ],
                [
                    "always-on",
                    f"{always_on['orders_per_s']:.1f}",
                    f"{always_on['p50_ms']:.1f} ms",
                    f"{always_on['p99_ms']:.1f} ms",
                    f"{always_on['cpu_ms_per_order']:.1f} ms",
                    json.dumps(always_on["not_201"]),
                ],
            ],
        ),
        (
            f"Per hop under load ({USERS} users, always-on,"
            f" {always_on['breakdown']['traces']} complete traces of"
            f" {always_on['breakdown']['traces_begun']})",
            HOP_HEADER,
            hop_rows(always_on),
        ),
        (
            f"Per hop unloaded, PostgreSQL + Redis ({postgres_unloaded['breakdown']['traces']}"
            f" checkouts; client-side p50 {postgres_unloaded['p50_ms']:.1f} ms)",
            HOP_HEADER,
            hop_rows(postgres_unloaded),
        ),
        (
            f"Per hop unloaded, SQLite default ({sqlite_after['breakdown']['traces']} checkouts;"
            f" client-side p50 {sqlite_after['p50_ms']:.1f} ms, before the change"
            f" {sqlite_before['p50_ms']:.1f} ms)",
            HOP_HEADER,
            hop_rows(sqlite_after),
        ),
        (
            f"Optimisation: {OPTIMISATION} (before = servicekit and order of"
            f" {BEFORE_REF[:10]}; {OPT_USERS} users, PostgreSQL + Redis, default sampling,"
            f" medians of {ROUNDS} interleaved)",
            ("metric", "before", "after", "change %"),
            [
                *(
                    [
                        label,
                        f"{b[key]:.1f}{unit}",
                        f"{a[key]:.1f}{unit}",
                        change(b[key], a[key]),
                    ]
                    for label, key, unit in (
                        ("TPS (orders/s)", "orders_per_s", ""),
                        ("p99", "p99_ms", " ms"),
                        ("p50", "p50_ms", " ms"),
                        ("CPU per order", "cpu_ms_per_order", " ms"),
                    )
                ),
                [
                    "order's DB statements per checkout",
                    f"{before[-1]['breakdown']['hops'].get('order', {}).get('statements', 0):.0f}",
                    f"{after[-1]['breakdown']['hops'].get('order', {}).get('statements', 0):.0f}",
                    "-",
                ],
                [
                    "SQLite, unloaded p50",
                    f"{sqlite_before['p50_ms']:.1f} ms",
                    f"{sqlite_after['p50_ms']:.1f} ms",
                    change(sqlite_before["p50_ms"], sqlite_after["p50_ms"]),
                ],
            ],
        ),
    ]
    write(
        "b7_checkout",
        "B7: checkout end to end through the gateway",
        intro,
        tables,
        {
            "target": "orders/s, p50 and p99 at 50 users on PostgreSQL + Redis, per-hop shares",
            "result": f"{served:.1f} orders/s, p50 {default['p50_ms']:.1f} ms,"
            f" p99 {default['p99_ms']:.1f} ms; always-on tracing {tracing_cost:+.0f} % orders/s;"
            f" at {OPT_USERS} users {a['orders_per_s']:.1f} vs {b['orders_per_s']:.1f} orders/s"
            f" before the optimisation",
            "pass": bool(always_on["breakdown"]["traces"]) and served > 0,
            "users": USERS,
            "optimisation_users": OPT_USERS,
            "optimisation": OPTIMISATION,
            "seconds": SECONDS,
            "rounds": ROUNDS,
            "before_ref": BEFORE_REF,
            "uptime_before": load_before,
            "uptime_after": load_after,
            "tracing_cost_orders_per_s_pct": tracing_cost,
            "medians": medians,
            "always_on": always_on,
            "default": default,
            "before": before,
            "after": after,
            "unloaded": {
                "postgres": postgres_unloaded,
                "sqlite": sqlite_after,
                "sqlite_before": sqlite_before,
            },
            "load_generator": "loadtest.openloop, closed loop, raw HTTP/1.1 keep-alive",
            "measured": measured_tree(MEASURED),
        },
    )


if __name__ == "__main__":
    main()
