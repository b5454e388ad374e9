"""B4: overload. Open-loop load at 1x, 2x and 4x the measured capacity, shedding on and off,
against inventory alone and through the gateway (gateway -> inventory).

Targets: `inventory` is the real inventory (`python -m servicekit.serve`, as every service runs:
one process, its connection limits, the asyncio loop) on PostgreSQL, in a database created,
migrated and seeded for the run (dropped at the end), with a shop's mix: 80 %
`GET /products/{sku}`, 5 % `GET /products?limit=20`, 15 % `POST /reservations` (one unit of a
random sku; stock is reset before every cell). `gateway` is the real gateway in front of that
inventory, with the public reads (95 % `GET /api/products/{sku}`, 5 % the list page; a
checkout needs order and payment too, so writes are left to inventory's cell), its rate limits
raised out of the way so the flood reaches the admission layers. Both processes share CPU 0.

Load generator: `loadtest.openloop` in separate processes pinned to CPU 1: request i is due at
`start + i / rate` whatever the answers do, over at most 1,024 keep-alive connections opened
on demand (a bounded client pool); a request due while all of them wait is *dropped*: offered
and failed. **Latency is counted at the client from the scheduled send time** (no coordinated
omission): the primary figures are the client's p50/p99 of served (2xx) and of shed answers;
the server's histogram (bucket bound) is secondary, and what it misses is the wait before any
middleware runs (socket, accept queue, event loop). A cell whose generator sent more than
`GEN_LAG_LIMIT_MS` (p99) behind its schedule, or that began before the servers were back in
normal mode, is marked invalid.

1. Capacity, per target, after a warm-up: the whole client pool run flat out (closed loop,
   1,024 connections, shedding on): what the service sustains saturated, degraded reads and
   refused writes included; the offered loads are multiples of it. The *normal-path* peak is
   measured too: closed loop with fewer connections than the degrade threshold, so neither
   degraded nor read-only mode engages.
2. Cells: each target x {shedding on with the fixed limit, on with the adaptive limit, off}
   x {1x, 2x, 4x}; each starts from normal mode (`settle`). On: `MAX_CONCURRENCY=LIMIT`, the
   queue timeout and read-only mode on; adaptive adds `ADAPTIVE_CONCURRENCY` (the fixed limit
   its ceiling); off: no limiter, no queue timeout, no read-only mode.

Goodput: 2xx answers within the SLO per second, dropped sends counted as offered and failed.
Peak: the best goodput of the target with shedding on (both capacity probes and the cells).
Shed: a 503 or 429 problem (`overloaded`, `read-only`, `rate-limited`, or the gateway's
refusal when inventory shed); any other 5xx or no answer is an error. Targets (issue 17):
served client p99 <= 500 ms at 2x and 4x; shed client p99 <= 50 ms; goodput >= 90 % / 80 % of
peak at 2x / 4x.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asgi_bench import wait_until_ready
from loadtest.openloop import Classifier, Mix, Request, encode
from loadtest.outcomes import BUSINESS, ERROR, OK, SHED
from report import write

from loadtest import openloop

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("B4_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("B4_SECONDS", "6"))
LOADS = (1, 2, 4)
SLO_MS = 500.0
#: The event loop (`<P>_LOOP`): servicekit.serve's default, asyncio, is how the services run.
LOOP = os.environ.get("B4_LOOP", "asyncio")
LIMIT = int(os.environ.get("B4_LIMIT", "32"))
SHED_P99_TARGET_MS = 50.0
TARGETS = tuple(os.environ.get("B4_TARGETS", "inventory,gateway").split(","))
#: (mode, limiter) per cell: shedding on with each limiter, and off.
VARIANTS = (("on", "fixed"), ("on", "adaptive"), ("off", "none"))
MAX_CONNECTIONS = 1024
#: Rest before `settle` (the read-only guard's window, servicekit's default 5 s, must empty).
SETTLE_PAUSE_SECONDS = 5.0
WARM_UP_SECONDS = float(os.environ.get("B4_WARM_UP_SECONDS", "3"))
#: A cell whose generator sent later than this behind its schedule (p99) did not offer its
#: rate: it is marked invalid, not counted.
GEN_LAG_LIMIT_MS = 50.0
GATEWAY_KEY = "b4-key"
SECRET = "b4-bench-service-secret"  # noqa: S105 (a throwaway secret for a local server)
PINNED = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
SERVER_CPU, GENERATOR_CPU = 0, 1


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if PINNED else command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the load generator: loadtest.openloop, with the shop mix below -----------------------


def shop_mix(config: dict[str, Any]) -> Mix:
    """The mix above (a factory `loadtest.openloop.generate` calls in each generator process)."""
    rng = random.Random(4 + config.get("share", 0))
    skus: list[str] = config["skus"]
    auth = {"X-Service-Token": config["token"]}
    reads = [
        Request("read", encode("GET", f"/products/{sku}", host="b4", headers=auth)) for sku in skus
    ]
    listing = Request("list", encode("GET", "/products?limit=20", host="b4", headers=auth))
    write_headers = {**auth, "Content-Type": "application/json"}

    def next_request() -> Request:
        draw = rng.random()
        if draw < 0.80:
            return rng.choice(reads)
        if draw < 0.85:
            return listing
        body = json.dumps(
            {"order_id": str(uuid.uuid4()), "items": [{"sku": rng.choice(skus), "quantity": 1}]}
        ).encode()
        return Request(
            "write", encode("POST", "/reservations", host="b4", headers=write_headers, body=body)
        )

    return next_request


def gateway_mix(config: dict[str, Any]) -> Mix:
    """The gateway's public reads: 95 % one product, 5 % the list page."""
    rng = random.Random(4 + config.get("share", 0))
    auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    reads = [
        Request("read", encode("GET", f"/api/products/{sku}", host="b4", headers=auth))
        for sku in config["skus"]
    ]
    listing = Request("list", encode("GET", "/api/products?limit=20", host="b4", headers=auth))
    return lambda: listing if rng.random() < 0.05 else rng.choice(reads)


def shedding_classifier(config: dict[str, Any]) -> Classifier:
    """Shed: a 503 or 429 problem (a refusal with Retry-After). Any other 5xx or no answer is
    an error; a 4xx (out of stock) neither."""

    def classify(status: int, head: bytes, body: bytes) -> str:
        if 200 <= status < 300:
            return OK
        if status in (429, 503) and b"/problems/" in body:
            return SHED
        if status == 0 or status >= 500:
            return ERROR
        return BUSINESS

    return classify


def run_generator(config: dict[str, Any]) -> dict[str, Any]:
    """The load of `config` (open: `rate`; closed: `closed_connections`), merged over processes."""
    full = {
        **config,
        "mix": f"b4_overload:{'gateway' if config.get('target') == 'gateway' else 'shop'}_mix",
        "classifier": "b4_overload:shedding_classifier",
        "path": [str(Path(__file__).parent)],
        "connections": MAX_CONNECTIONS,
    }
    results, dropped = openloop.run(full, prefix=pinned(GENERATOR_CPU, []))
    return {"results": results, "dropped": dropped}


# --- the service under test ----------------------------------------------------------------


def admin_sql(sql: str, database: str | None = None) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        url = ADMIN_URL if database is None else ADMIN_URL.rsplit("/", 1)[0] + "/" + database
        conn = await asyncpg.connect(url)
        try:
            if not sql.lstrip().upper().startswith("SELECT"):
                await conn.execute(sql)  # several statements allowed, nothing returned
                return []
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


@contextmanager
def database() -> Iterator[tuple[str, list[str]]]:
    name = f"b4_{secrets.token_hex(4)}"
    admin_sql(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        for args in (["servicekit.data.migrations", "inventory", url], ["inventory.seed", url]):
            subprocess.run([sys.executable, "-m", *args], check=True, cwd=REPO, capture_output=True)  # noqa: S603
        skus = [row["sku"] for row in admin_sql("SELECT sku FROM product ORDER BY sku", name)]
        yield url, skus
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_stock(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin_sql("DELETE FROM reservation_item; DELETE FROM reservation;", name)
    admin_sql("UPDATE product SET stock = 1000000, reserved = 0", name)


def shedding_env(prefix: str, mode: str, limiter: str) -> dict[str, str]:
    on = mode == "on"
    return {
        f"{prefix}_MAX_CONCURRENCY": str(LIMIT if on else 0),
        f"{prefix}_ADAPTIVE_CONCURRENCY": "true" if limiter == "adaptive" else "false",
        f"{prefix}_QUEUE_TARGET_MS": os.environ.get("B4_QUEUE_TARGET_MS", "50") if on else "0",
        f"{prefix}_READ_ONLY_ENABLED": "true" if on else "false",
        f"{prefix}_LOG_LEVEL": "WARNING",
        f"{prefix}_ENVIRONMENT": "development",
        f"{prefix}_SERVICE_TOKEN": SECRET,
    }


@contextmanager
def launch(app: str, prefix: str, env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """`app` run as every service runs (`python -m servicekit.serve`: its connection limits,
    one process), on a free port, pinned to the server CPU; yields (port, pid)."""
    for attempt in range(3):  # a free port can be taken between finding and binding it
        port = free_port()
        command = [sys.executable, "-m", "servicekit.serve", app, "--port", str(port)]
        env = {**env, f"{prefix}_LOOP": LOOP}
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603 (our own command line)
                pinned(SERVER_CPU, command),
                env={**os.environ, **env},
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", process, f"{app}: see {log}")
        except RuntimeError:
            process.kill()
            process.wait()
            if attempt == 2:
                raise
            continue
        try:
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=15)
        return


@contextmanager
def stack(
    target: str, url: str, mode: str, limiter: str, logs: Path
) -> Iterator[tuple[list[int], int]]:
    """Inventory, and for the gateway target the gateway in front of it, both shedding as
    `mode` says; yields (ports, front process pid): the front port first."""
    env = {
        **shedding_env("INVENTORY", mode, limiter),
        "INVENTORY_DATABASE_URL": url,
        "INVENTORY_RESERVATION_SWEEP_SECONDS": "3600",
    }
    env.pop("INVENTORY_REDIS_URL", None)
    name = f"{target}-{mode}-{limiter}"
    with launch(
        "inventory.main:create_app", "INVENTORY", env, logs / f"{name}-inventory.log"
    ) as inv:
        if target == "inventory":
            yield [inv[0]], inv[1]
            return
        gateway_env = {
            **shedding_env("GATEWAY", mode, limiter),
            "GATEWAY_INVENTORY_URL": f"http://127.0.0.1:{inv[0]}",
            "GATEWAY_API_KEYS": f"{GATEWAY_KEY}:customer-b4",
            "GATEWAY_GLOBAL_RATE_LIMIT": "1000000/second",
            "GATEWAY_CLIENT_RATE_LIMIT": "1000000/second",
        }
        with launch(
            "gateway.main:create_app", "GATEWAY", gateway_env, logs / f"{name}-gateway.log"
        ) as gw:
            yield [gw[0], inv[0]], gw[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> dict[str, float]:
    """Cumulative latency buckets of 2xx ("ok:le") and of 429/503s ("shed:le") (le -> count),
    and the shed counters by reason ("reason:queue")."""
    # Generous: after an overload the server first works off its queue (this is the drain).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("servicekit_shed_requests_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            key = f"reason:{reason}"
            found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
            continue
        if not line.startswith("http_server_request_duration_seconds_bucket{"):
            continue
        status = line.split('http_response_status_code="', 1)[1][:3]
        kind = "ok" if status.startswith("2") else "shed" if status in ("429", "503") else ""
        if kind:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            key = f"{kind}:{le}"
            found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def modes(port: int) -> dict[str, float]:
    """The shedding modes right now: servicekit_degraded_mode and servicekit_read_only_mode."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(("servicekit_degraded_mode ", "servicekit_read_only_mode ")):
            name, value = line.split(" ", 1)
            found[name] = float(value)
    return found


def settle(base: dict[str, Any], ports: list[int], url: str) -> list[str]:
    """Bring the servers back to normal mode before a measurement, so every one starts alike.

    Light closed-loop traffic (8 connections: below the degrade threshold) until neither
    degraded nor read-only mode is on anywhere (the guard decides on traffic, so it needs
    some), after a pause that lets the last run's samples leave the guard's window. Returns
    the modes still on after 10 tries (empty when settled): the cell that follows is then
    marked invalid rather than the whole run lost.
    """
    time.sleep(SETTLE_PAUSE_SECONDS)
    left: list[str] = []
    for _ in range(10):
        run_generator({**base, "mode": "closed", "closed_connections": 8, "seconds": 2})
        left = [f"{port}:{name}" for port in ports for name, on in modes(port).items() if on]
        if not left:
            break
        time.sleep(1)
    else:
        print(f"  not back to normal mode: {left}", flush=True)
    reset_stock(url)
    return left


def server_p99(before: dict[str, float], after: dict[str, float], kind: str) -> float:
    """p99 (ms, histogram bucket bound) of `kind` answers between two scrapes; 0 if none."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k.startswith(kind)}
    total = delta.get(f"{kind}:+Inf", 0.0)
    if not total:
        return 0.0
    buckets = sorted(
        (float(k.split(":", 1)[1]), v) for k, v in delta.items() if not k.endswith("+Inf")
    )
    return next((le * 1000 for le, count in buckets if count >= 0.99 * total), float("inf"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(raw: dict[str, Any], seconds: float) -> dict[str, float]:
    results = raw["results"]
    ok = [r.latency for r in results if r.outcome == OK]
    shed = [r.latency for r in results if r.outcome == SHED]
    offered = len(results) + raw["dropped"]
    return {
        "offered": offered,
        "goodput_rps": sum(1 for latency in ok if latency * 1000 <= SLO_MS) / seconds,
        "answers_rps": len(results) / seconds,
        "shed_share": len(shed) / offered if offered else 0.0,
        "served_client_p50_ms": percentile(ok, 0.50) * 1000,
        "served_client_p99_ms": percentile(ok, 0.99) * 1000,
        "shed_client_p50_ms": percentile(shed, 0.50) * 1000,
        "shed_client_p99_ms": percentile(shed, 0.99) * 1000,
        "errors": sum(1 for r in results if r.outcome == ERROR),
        "dropped": raw["dropped"],
        # How late the generator sent, behind its own schedule: a late generator under-offers.
        "gen_lag_p99_ms": percentile([r.lag for r in results], 0.99) * 1000,
    }


def closed(base: dict[str, Any], connections: int, seconds: float) -> dict[str, Any]:
    return run_generator(
        {**base, "mode": "closed", "closed_connections": connections, "seconds": seconds}
    )


def open_loop(base: dict[str, Any], rate: float, seconds: float) -> dict[str, Any]:
    return run_generator({**base, "mode": "open", "rate": rate, "seconds": seconds})


def describe(summary: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in summary.items())


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def measure_target(target: str, url: str, skus: list[str], logs: Path) -> dict[str, Any]:
    """Capacity (saturated and normal path), then every cell of `target`."""
    cells: list[dict[str, Any]] = []
    with stack(target, url, "on", "fixed", logs) as (ports, _):
        base = {"port": ports[0], "skus": skus, "token": SECRET, "target": target}
        closed(base, 32, WARM_UP_SECONDS)
        settle(base, ports, url)
        normal = summarise(closed(base, max(1, int(LIMIT * 0.8) - 2), SECONDS), SECONDS)
        settle(base, ports, url)
        busy = summarise(closed(base, 4 * LIMIT, SECONDS), SECONDS)
        settle(base, ports, url)
        saturated = summarise(closed(base, MAX_CONNECTIONS, SECONDS), SECONDS)
    # The offered loads are multiples of what the target sustains: the best of the whole pool
    # flat out, 4x the limit's connections, and the normal path (a slow path or a busy
    # machine can leave one probe far below what the target serves).
    capacity = max(saturated["goodput_rps"], busy["goodput_rps"], normal["goodput_rps"])
    print(
        f"{target} capacity: {capacity:.0f}/s; saturated {describe(saturated)}; busy "
        f"{describe(busy)}; normal {describe(normal)}"
    )
    for mode, limiter in VARIANTS:
        with stack(target, url, mode, limiter, logs) as (ports, pid):
            base = {"port": ports[0], "skus": skus, "token": SECRET, "target": target}
            closed(base, 32, WARM_UP_SECONDS)
            for load in LOADS:
                unsettled = settle(base, ports, url)
                before, counted = rss_mb(pid), scrape(ports[0])
                summary = summarise(open_loop(base, capacity * load, SECONDS), SECONDS)
                after = scrape(ports[0])
                cell = {
                    "target": target,
                    "mode": mode,
                    "limiter": limiter,
                    "load": load,
                    **summary,
                    "served_server_p99_ms": server_p99(counted, after, "ok"),
                    "shed_server_p99_ms": server_p99(counted, after, "shed"),
                    "shed_reasons": {
                        k[7:]: after[k] - counted.get(k, 0.0)
                        for k in after
                        if k.startswith("reason:") and after[k] > counted.get(k, 0.0)
                    },
                    "rss_growth": rss_mb(pid) / before - 1 if before else 0.0,
                    "load_average": load_average(),
                    "unsettled": unsettled,
                }
                print(f"{target} {mode}/{limiter} {load}x: {describe(summary)}", flush=True)
                cells.append(cell)
    peak = max(
        [saturated["goodput_rps"], busy["goodput_rps"], normal["goodput_rps"]]
        + [c["goodput_rps"] for c in cells if c["mode"] == "on"]
    )
    for cell in cells:
        cell["goodput_ratio"] = cell["goodput_rps"] / peak if peak else 0.0
        cell["valid"] = cell["gen_lag_p99_ms"] <= GEN_LAG_LIMIT_MS and not cell["unsettled"]
    return {
        "capacity_rps": capacity,
        "peak_rps": peak,
        "saturated": saturated,
        "busy": busy,
        "normal": normal,
        "cells": cells,
    }


def verdicts(cell: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets for one cell with shedding on above capacity."""
    found = {
        "served_p99": cell["served_client_p99_ms"] <= SLO_MS,
        "goodput": cell["goodput_ratio"] >= (0.9 if cell["load"] == 2 else 0.8),
    }
    if cell["shed_share"]:
        found["shed_p99"] = cell["shed_client_p99_ms"] <= SHED_P99_TARGET_MS
    return found


def adaptive_wins(cells: list[dict[str, Any]]) -> bool:
    """Adaptive wins when, above capacity on every target, its goodput is at least the fixed
    limit's and its served client p99 no worse (within 10 %)."""
    by_key = {(c["target"], c["limiter"], c["load"]): c for c in cells if c["mode"] == "on"}
    for target, limiter, load in by_key:
        if limiter != "adaptive" or load == 1:
            continue
        fixed = by_key[(target, "fixed", load)]
        adaptive = by_key[(target, "adaptive", load)]
        if adaptive["goodput_ratio"] < fixed["goodput_ratio"] - 0.01:
            return False
        if adaptive["served_client_p99_ms"] > fixed["served_client_p99_ms"] * 1.1:
            return False
    return True


def ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def main() -> None:
    logs = Path(tempfile.mkdtemp(prefix="b4-"))
    started_load = load_average()
    targets: dict[str, dict[str, Any]] = {}
    with database() as (url, skus):
        reset_stock(url)
        for target in TARGETS:
            targets[target] = measure_target(target, url, skus, logs)
    cells = [cell for result in targets.values() for cell in result["cells"]]
    wins = adaptive_wins(cells)
    rows = []
    missed = []
    for cell in cells:
        marks = ""
        if cell["mode"] == "on" and cell["load"] > 1:
            found = verdicts(cell)
            marks = ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in found.items())
            missed += [
                f"{cell['target']} {cell['limiter']} {cell['load']}x {k}"
                for k, ok in found.items()
                if not ok
            ]
        if not cell["valid"]:
            why = "not settled" if cell["unsettled"] else "generator behind"
            marks = f"INVALID: {why}; " + marks
        rows.append(
            [
                cell["target"],
                f"{cell['mode']} ({cell['limiter']})" if cell["mode"] == "on" else "off",
                f"{cell['load']}x",
                f"{cell['goodput_rps']:.0f}/s ({cell['goodput_ratio']:.0%})",
                f"{ms(cell['served_client_p50_ms'])} / {ms(cell['served_client_p99_ms'])}",
                f"{ms(cell['shed_client_p50_ms'])} / {ms(cell['shed_client_p99_ms'])}"
                if cell["shed_share"]
                else "-",
                f"{cell['shed_share']:.0%}",
                f"{ms(cell['served_server_p99_ms'])} / {ms(cell['shed_server_p99_ms'])}",
                f"{cell['errors']:.0f} / {cell['dropped']:.0f}",
                f"{MAX_CONNECTIONS / cell['answers_rps'] * 1000:.0f} ms"
                if cell["dropped"] and cell["answers_rps"]
                else "-",
                ", ".join(f"{k} {v:.0f}" for k, v in sorted(cell["shed_reasons"].items())) or "-",
                f"{cell['gen_lag_p99_ms']:.1f}",
                cell["load_average"],
                marks,
            ]
        )
    capacities = "; ".join(
        f"{name}: {r['capacity_rps']:.0f}/s; saturated {r['saturated']['goodput_rps']:.0f}/s "
        f"(2xx p99 {r['saturated']['served_client_p99_ms']:.0f} ms), {4 * LIMIT} connections "
        f"{r['busy']['goodput_rps']:.0f}/s, normal path "
        f"{r['normal']['goodput_rps']:.0f}/s (2xx p99 {r['normal']['served_client_p99_ms']:.0f} "
        f"ms), peak {r['peak_rps']:.0f}/s"
        for name, r in targets.items()
    )
    pinning = "servers on CPU 0, generator on CPU 1 (taskset)" if PINNED else "no CPU pinning"
    intro = (__doc__ or "") + (
        f"\nCapacity (goodput/s) — {capacities}. Concurrency limit {LIMIT}, SLO {SLO_MS:.0f} "
        f"ms, {SECONDS:.0f} s per cell, one run per cell; {pinning}; {LOOP} loop. "
        f"**Shared machine**: PostgreSQL and other benchmarks and test runs share these two "
        f"cores; load average (1/5/15 min) {started_load} at the start, {load_average()} at "
        f"the end, and per cell below.\n\n"
        f"Adaptive concurrency {'wins' if wins else 'does not win'} this run (goodput at least "
        f"the fixed limit's and served p99 no worse, at 2x and 4x on every target); the default "
        f"is decided in docs/resilience.md, from this run and the ones before.\n\n"
        f"Targets missed: {', '.join(missed) if missed else 'none'}. The column 'pool wait' is "
        f"Little's law for the client pool when it is full (sends were dropped): 1,024 requests "
        f"outstanding over the answers per second, the mean wait of every answer, shed or "
        f"served; no shedding inside the process can bring an answer back sooner, only answering "
        f"faster or holding fewer requests outstanding."
    )
    write(
        os.environ.get("B4_NAME", "b4_overload"),
        "B4: overload, open loop, as the client sees it",
        intro,
        [
            (
                "Results (client-side from the scheduled send time; ms)",
                [
                    "target",
                    "shedding",
                    "load",
                    "goodput (of peak)",
                    "served p50 / p99",
                    "shed p50 / p99",
                    "shed",
                    "server p99 served / shed",
                    "errors / dropped",
                    "pool wait",
                    "shed by reason",
                    "gen. lag p99",
                    "load avg",
                    "targets",
                ],
                rows,
            ),
        ],
        {
            "cells": cells,
            "targets": {
                name: {k: v for k, v in r.items() if k != "cells"} for name, r in targets.items()
            },
            "adaptive_wins": wins,
            "missed": missed,
            "limit": LIMIT,
            "slo_ms": SLO_MS,
            "seconds": SECONDS,
            "load_average": {"start": started_load, "end": load_average()},
            "load_generator": "loadtest.openloop (asyncio protocols, separate processes)",
            "pinning": pinning,
            "uvicorn_loop": LOOP,
        },
    )


if __name__ == "__main__":
    main()
