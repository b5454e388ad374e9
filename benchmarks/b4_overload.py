"""B4: overload. Open-loop load at 1x, 2x and 4x the measured capacity, shedding on and off.

The service under test is the real inventory (uvicorn, one process) on PostgreSQL, in a
database created, migrated and seeded for the run (dropped at the end). The request mix is
realistic for a shop: 80 % `GET /products/{sku}`, 5 % `GET /products?limit=20`, 15 %
`POST /reservations` (one unit of a random sku; stock is reset before every run).

Load generator: `loadtest.openloop` (the project's open-loop generator) in separate processes:
an asyncio loop (uvloop) that schedules request i at `start + i / rate` whatever the answers do
(constant arrival rate, not closed-loop); above `openloop.RATE_PER_PROCESS` several processes
share one schedule. Requests go over raw HTTP/1.1 keep-alive connections opened on demand, at
most 1,024 (a bounded client pool, as the internal callers of inventory have): a request due
while all of them wait on an answer is *dropped*, i.e. counted as offered and failed. Latency
is measured from the scheduled time, so neither a slow server nor a late generator can hide a
queue (no coordinated omission). Each connection is an asyncio protocol, a few microseconds
per request, because the generator shares two cores with the server and PostgreSQL; with
`taskset` the server runs on CPU 0 and the generators on CPU 1. How late the generator sent
(p99 behind its schedule) is shown per cell; above `GEN_LAG_LIMIT_MS` the cell is invalid.

1. Capacity: after a warm-up with the same mix (caches, pool, code paths), the whole client
   pool run flat out: closed loop, 1,024 connections, as long as a cell, shedding on. Its
   goodput is what the service really sustains when it is saturated, degraded reads and
   refused writes included (not the far lower rate where its normal path saturates), and it
   is what the open-loop cells above capacity press against too: they fill the same pool.
2. For each load (1x, 2x, 4x capacity) and each mode (shedding on: `MAX_CONCURRENCY`
   `LIMIT`, read-only mode on; off: `MAX_CONCURRENCY=0`, read-only off), several runs,
   interleaved; medians are shown. Every measurement starts alike: the server is first brought
   back to normal mode (`settle`), so each includes the step from normal operation to the
   load, adaptation and all, and none inherits the modes of the one before.

Goodput: 2xx answers within the SLO (`SLO_MS`), per second. Peak: the best goodput with
shedding on, the capacity probe's included. Shed: 503 `overloaded` (service tier) or
`read-only` (data tier); any other 503 (a pool timeout) or a transport error counts as an
error. Targets: goodput at 2x >= 90 % of peak, at 4x >= 80 %; p99 of the shed answers
<= 10 ms; server RSS growth over a run <= 20 %.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import statistics
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
RUNS = int(os.environ.get("B4_RUNS", "3"))
SECONDS = float(os.environ.get("B4_SECONDS", "8"))
LOADS = (1, 2, 4)
SLO_MS = 500.0
#: uvicorn's event loop: "auto" (uvloop when installed) is how the services are run.
LOOP = os.environ.get("B4_LOOP", "auto")
LIMIT = int(os.environ.get("B4_LIMIT", "32"))
SHED_P99_TARGET_MS = 10.0
MAX_CONNECTIONS = 1024
#: Rest before `settle` (the read-only guard's window, servicekit's default 5 s, must empty).
SETTLE_PAUSE_SECONDS = 5.0
WARM_UP_SECONDS = float(os.environ.get("B4_WARM_UP_SECONDS", "3"))
#: A cell whose generator sent later than this behind its schedule (p99) did not offer its
#: rate: it is marked invalid, not counted.
GEN_LAG_LIMIT_MS = 50.0
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


def shedding_classifier(config: dict[str, Any]) -> Classifier:
    """Shed: a 503 `overloaded` (service tier) or `read-only` (data tier) problem. Any other
    503 (a pool timeout, say), a 5xx or no answer is an error; a 4xx (out of stock) neither."""

    def classify(status: int, head: bytes, body: bytes) -> str:
        if 200 <= status < 300:
            return OK
        if status == 503 and (b"/problems/overloaded" in body or b"/problems/read-only" in body):
            return SHED
        if status == 0 or status >= 500:
            return ERROR
        return BUSINESS

    return classify


def run_generator(config: dict[str, Any]) -> dict[str, Any]:
    """The load of `config` (open: `rate`; closed: `closed_connections`), merged over processes."""
    full = {
        **config,
        "mix": "b4_overload:shop_mix",
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


@contextmanager
def inventory(url: str, *, shedding: bool, logs: Path) -> Iterator[tuple[int, int]]:
    """A uvicorn inventory; yields (port, pid)."""
    port = free_port()
    env = {
        **os.environ,
        "INVENTORY_DATABASE_URL": url,
        "INVENTORY_SERVICE_TOKEN": SECRET,
        "INVENTORY_ENVIRONMENT": "development",
        "INVENTORY_LOG_LEVEL": "WARNING",
        "INVENTORY_MAX_CONCURRENCY": str(LIMIT if shedding else 0),
        "INVENTORY_READ_ONLY_ENABLED": "true" if shedding else "false",
        "INVENTORY_RESERVATION_SWEEP_SECONDS": "3600",
    }
    env.pop("INVENTORY_REDIS_URL", None)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "inventory.main:create_app",
        "--factory",
        "--port",
        str(port),
        "--no-access-log",
        "--loop",
        LOOP,
        "--log-level",
        "warning",
    ]
    with (logs / f"inventory-{'on' if shedding else 'off'}.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own command line)
            pinned(0, command), env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_ready(
            f"http://127.0.0.1:{port}/readyz", process, f"inventory did not start; see {logs}"
        )
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> dict[str, float]:
    """Cumulative 503 latency buckets (le -> count) and shed counters (tier/reason -> count)."""
    # Generous: after an overload the server first works off its queue (this is the drain).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("http_server_request_duration_seconds_bucket{") and (
            'http_response_status_code="503"' in line
        ):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            found[f"le:{le}"] = found.get(f"le:{le}", 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("servicekit_shed_requests_total{"):
            tier = line.split('tier="', 1)[1].split('"', 1)[0]
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            key = f"shed:{tier}/{reason}"
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


def settle(base: dict[str, Any], url: str) -> None:
    """Bring the server back to normal mode before a measurement, so every one starts alike.

    Light closed-loop traffic (8 connections: below the degrade threshold) until neither
    degraded nor read-only mode is on (the guard decides on traffic, so it needs some), after
    a pause that lets the last run's samples leave the guard's window.
    """
    time.sleep(SETTLE_PAUSE_SECONDS)
    for _ in range(10):
        run_generator({**base, "mode": "closed", "closed_connections": 8, "seconds": 2})
        if not any(modes(base["port"]).values()):
            break
        time.sleep(1)
    else:
        raise RuntimeError("the server did not return to normal mode")
    reset_stock(url)


def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """p99 of the 503s as the server timed them (bucket bound), and sheds by tier/reason."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    buckets = sorted(
        (float(k[3:]), v) for k, v in delta.items() if k.startswith("le:") and k != "le:+Inf"
    )
    total = delta.get("le:+Inf", 0.0)
    p99 = next((le * 1000 for le, count in buckets if count >= 0.99 * total), float("inf"))
    reasons = {k[5:]: v for k, v in delta.items() if k.startswith("shed:") and v}
    return {"server_shed_p99_ms": p99 if total else 0.0, "reasons": reasons}


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
        "ok_rps": len(ok) / seconds,
        "shed_share": len(shed) / offered if offered else 0.0,
        "shed_p99_ms": percentile(shed, 0.99) * 1000,
        "ok_p50_ms": percentile(ok, 0.50) * 1000,
        "ok_p99_ms": percentile(ok, 0.99) * 1000,
        "errors": sum(1 for r in results if r.outcome == ERROR),
        "dropped": raw["dropped"],
        # How late the generator sent, behind its own schedule: a late generator under-offers.
        "gen_lag_p99_ms": percentile([r.lag for r in results], 0.99) * 1000,
    }


def measure_capacity(base: dict[str, Any], url: str) -> dict[str, float]:
    """Warm up with the mix, settle, then goodput of the client pool run flat out (see top)."""
    run_generator({**base, "mode": "closed", "closed_connections": 32, "seconds": WARM_UP_SECONDS})
    settle(base, url)
    config = {**base, "mode": "closed", "closed_connections": MAX_CONNECTIONS, "seconds": SECONDS}
    return summarise(run_generator(config), SECONDS)


def open_loop(base: dict[str, Any], rate: float, seconds: float) -> dict[str, Any]:
    return run_generator({**base, "mode": "open", "rate": rate, "seconds": seconds})


def describe(summary: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in summary.items())


def main() -> None:
    token_config = {"token": SECRET}
    logs = Path(tempfile.mkdtemp(prefix="b4-"))
    with database() as (url, skus):
        reset_stock(url)
        with inventory(url, shedding=True, logs=logs) as (port, _):
            probe = measure_capacity({"port": port, "skus": skus, **token_config}, url)
        capacity = probe["goodput_rps"]
        print(f"capacity: {describe(probe)}", flush=True)
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        reasons: dict[tuple[str, int], list[dict[str, float]]] = {}
        for run in range(RUNS):
            for shedding in (True, False):
                mode = "on" if shedding else "off"
                with inventory(url, shedding=shedding, logs=logs) as (port, pid):
                    base = {"port": port, "skus": skus, **token_config}
                    run_generator(
                        {
                            **base,
                            "mode": "closed",
                            "closed_connections": 32,
                            "seconds": WARM_UP_SECONDS,
                        }
                    )
                    for load in LOADS:
                        settle(base, url)
                        before, counted = rss_mb(pid), scrape(port)
                        raw = open_loop(base, capacity * load, SECONDS)
                        summary = summarise(raw, SECONDS)
                        summary["rss_growth"] = rss_mb(pid) / before - 1 if before else 0.0
                        server = server_side(counted, scrape(port))
                        summary["server_shed_p99_ms"] = server["server_shed_p99_ms"]
                        reasons.setdefault((mode, load), []).append(server["reasons"])
                        samples.setdefault((mode, load), []).append(summary)
                        print(
                            f"run {run + 1}/{RUNS} shedding {mode} {load}x: {describe(summary)}",
                            flush=True,
                        )
    medians = {
        key: {name: statistics.median(s[name] for s in runs) for name in runs[0]}
        for key, runs in samples.items()
    }
    # The best goodput seen with shedding on, the capacity probe's included (stricter).
    peak = max([capacity] + [medians[("on", load)]["goodput_rps"] for load in LOADS])
    rows = []
    verdicts: dict[str, bool] = {}
    for mode in ("on", "off"):
        for load in LOADS:
            m = medians[(mode, load)]
            share = m["goodput_rps"] / peak if peak else 0.0
            valid = m["gen_lag_p99_ms"] <= GEN_LAG_LIMIT_MS
            verdict = "" if valid else "INVALID: generator behind"
            if mode == "on" and load > 1:
                target = 0.9 if load == 2 else 0.8
                verdicts[f"goodput_{load}x"] = valid and share >= target
                verdict = (
                    ("PASS" if share >= target else "FAIL") + f" (>= {target:.0%})"
                    if valid
                    else verdict
                )
            if mode == "on" and not valid:
                verdicts[f"generator_{load}x"] = False
            rows.append(
                [
                    f"shedding {mode}",
                    f"{load}x ({capacity * load:.0f}/s)",
                    f"{m['goodput_rps']:.0f}/s",
                    f"{share:.0%}",
                    verdict,
                    f"{m['shed_share']:.0%}",
                    f"{m['server_shed_p99_ms']:.1f} / {m['shed_p99_ms']:.0f} ms"
                    if m["shed_share"]
                    else "-",
                    ", ".join(f"{k} {v:.0f}" for k, v in sorted(reasons[(mode, load)][-1].items()))
                    or "-",
                    f"{m['ok_p50_ms']:.0f} / {m['ok_p99_ms']:.0f} ms",
                    f"{m['rss_growth']:+.0%}",
                    f"{m['errors']:.0f} / {m['dropped']:.0f}",
                    f"{m['gen_lag_p99_ms']:.1f} ms",
                ]
            )
    shed_p99 = max(medians[("on", load)]["server_shed_p99_ms"] for load in LOADS)
    client_shed_p99 = max(medians[("on", load)]["shed_p99_ms"] for load in LOADS)
    rss = max(medians[("on", load)]["rss_growth"] for load in LOADS)
    verdicts["shed_p99"] = shed_p99 <= SHED_P99_TARGET_MS
    verdicts["rss"] = rss <= 0.20
    pinning = "server on CPU 0, generator on CPU 1 (taskset)" if PINNED else "no CPU pinning"
    intro = (__doc__ or "") + (
        f"\nCapacity measured: {capacity:.0f} good answers/s (closed loop, "
        f"{MAX_CONNECTIONS} connections; 2xx p50 / p99 {probe['ok_p50_ms']:.0f} / "
        f"{probe['ok_p99_ms']:.0f} ms, shed {probe['shed_share']:.0%}). Peak: "
        f"{peak:.0f}/s. Concurrency limit {LIMIT}, SLO {SLO_MS:.0f} ms, "
        f"{RUNS} runs of {SECONDS:.0f} s per cell; {pinning}; uvicorn --loop {LOOP}. "
        f"PostgreSQL shares the machine.\n\n"
        f"Shed answers p99 as the server timed them (worst load, shedding on; histogram bucket "
        f"bound; every 503 counts, so a pool timeout would only make it worse): "
        f"{shed_p99:.1f} ms ({'PASS' if verdicts['shed_p99'] else 'FAIL'}, target <= "
        f"{SHED_P99_TARGET_MS:.0f} ms). Seen by the client from the scheduled send time, which "
        f"adds the wait in the socket and event loop before any middleware runs: "
        f"{client_shed_p99:.0f} ms. "
        f"RSS growth: {rss:+.0%} ({'PASS' if verdicts['rss'] else 'FAIL'}, target <= 20 %)."
    )
    write(
        "b4_overload",
        "B4: overload, open-loop, shedding on vs off",
        intro,
        [
            (
                "Results (medians)",
                [
                    "mode",
                    "offered",
                    "goodput",
                    "of peak",
                    "target",
                    "shed",
                    "shed p99 server / client",
                    "shed by tier/reason (last run)",
                    "2xx p50 / p99",
                    "RSS",
                    "errors / dropped",
                    "gen. lag p99",
                ],
                rows,
            ),
        ],
        {
            "capacity_rps": capacity,
            "peak_rps": peak,
            "capacity_probe": probe,
            "limit": LIMIT,
            "slo_ms": SLO_MS,
            "runs": RUNS,
            "seconds": SECONDS,
            "medians": {f"{mode}_{load}x": v for (mode, load), v in medians.items()},
            "shed_reasons": {f"{mode}_{load}x": v for (mode, load), v in reasons.items()},
            "verdicts": verdicts,
            "load_generator": (
                "loadtest.openloop (asyncio protocol, raw HTTP/1.1 keep-alive, separate processes)"
            ),
            "pinning": pinning,
            "uvicorn_loop": LOOP,
        },
    )


if __name__ == "__main__":
    main()
