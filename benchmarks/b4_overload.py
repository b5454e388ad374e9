"""B4: overload. Open-loop load at 1x, 2x and 4x the measured capacity, shedding on and off.

The service under test is the real inventory (uvicorn, one process) on PostgreSQL, in a
database created, migrated and seeded for the run (dropped at the end). The request mix is
realistic for a shop: 80 % `GET /products/{sku}`, 5 % `GET /products?limit=20`, 15 %
`POST /reservations` (one unit of a random sku; stock is reset before every run).

Load generator: `b4 open-loop` (this file, `generate` mode) in a separate process: one asyncio
loop that schedules request i at `start + i / rate` whatever the answers do (constant arrival
rate, not closed-loop), over a pool of raw HTTP/1.1 keep-alive connections opened on demand
(at most 1,024). Latency is measured from the scheduled time, so a slow server cannot hide
its queue (no coordinated omission). It is hand-written on asyncio streams (tens of
microseconds per request) because it shares two cores with the server and PostgreSQL; with
`taskset` the server runs on CPU 0 and the generator on CPU 1.

1. Capacity: closed-loop, 32 connections for a few seconds with shedding on; its 2xx rate.
2. For each load (1x, 2x, 4x capacity) and each mode (shedding on: `MAX_CONCURRENCY`
   `LIMIT`, read-only mode on; off: `MAX_CONCURRENCY=0`, read-only off), several runs,
   interleaved; medians are shown.

Goodput: 2xx answers within the SLO (`SLO_MS`), per second. Peak: the best goodput with
shedding on. Shed: 503 `overloaded` (service tier) or `read-only` (data tier); any other 503
(a pool timeout) or a transport error counts as an error. Targets: goodput at 2x >= 90 % of
peak, at 4x >= 80 %; p99 of the shed answers <= 10 ms; server RSS growth over a run <= 20 %.
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

from report import write

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("B4_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RUNS = int(os.environ.get("B4_RUNS", "3"))
SECONDS = float(os.environ.get("B4_SECONDS", "8"))
LOADS = (1, 2, 4)
SLO_MS = 500.0
LIMIT = int(os.environ.get("B4_LIMIT", "32"))
SHED_P99_TARGET_MS = 10.0
MAX_CONNECTIONS = 1024
#: How the generator records a 503 that is not load shedding (e.g. "database pool exhausted").
OTHER_503 = 599
TIMEOUT = 10.0
SECRET = "b4-bench-service-secret"  # noqa: S105 (a throwaway secret for a local server)
PINNED = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if PINNED else command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the load generator (a separate process) ------------------------------------------------


class Generator:
    """Raw HTTP/1.1 over a pool of keep-alive connections; every answer read fully."""

    def __init__(self, port: int, token: str, skus: list[str]) -> None:
        self.port = port
        self.skus = skus
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.auth = f"X-Service-Token: {token}\r\n"
        self.results: list[tuple[str, int, float]] = []
        self.dropped = 0
        self.rng = random.Random(4)

    def request(self) -> tuple[str, bytes]:
        draw = self.rng.random()
        if draw < 0.80:
            sku = self.rng.choice(self.skus)
            return "read", self._get(f"/products/{sku}")
        if draw < 0.85:
            return "list", self._get("/products?limit=20")
        body = json.dumps(
            {
                "order_id": str(uuid.uuid4()),
                "items": [{"sku": self.rng.choice(self.skus), "quantity": 1}],
            }
        ).encode()
        head = (
            f"POST /reservations HTTP/1.1\r\nHost: b4\r\n{self.auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return "write", head.encode() + body

    def _get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: b4\r\n{self.auth}\r\n".encode()

    async def send(self, kind: str, raw: bytes, scheduled: float) -> None:
        if self.idle:
            reader, writer = self.idle.pop()
        elif self.open < MAX_CONNECTIONS:
            self.open += 1
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.open -= 1
                self.results.append((kind, 0, time.perf_counter() - scheduled))
                return
        else:
            self.dropped += 1  # the generator itself is out of connections: counted apart
            return
        try:
            async with asyncio.timeout(TIMEOUT):
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                if status == 503 and b"/problems/overloaded" not in body:
                    # Not shedding (a pool timeout, say): kept apart from the shed answers.
                    status = OTHER_503 if b"/problems/read-only" not in body else 503
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            self.open -= 1
            writer.close()
            self.results.append((kind, 0, time.perf_counter() - scheduled))
            return
        self.results.append((kind, status, time.perf_counter() - scheduled))
        self.idle.append((reader, writer))

    async def open_loop(self, rate: float, seconds: float) -> None:
        total = int(rate * seconds)
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            while sent < due:
                kind, raw = self.request()
                task = asyncio.create_task(self.send(kind, raw, start + sent / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.001)
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT + 1)

    async def closed_loop(self, connections: int, seconds: float) -> None:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                kind, raw = self.request()
                await self.send(kind, raw, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(connections)))


def generate(config: dict[str, Any]) -> dict[str, Any]:
    gen = Generator(config["port"], config["token"], config["skus"])

    async def run() -> None:
        if config["mode"] == "closed":
            await gen.closed_loop(config["connections"], config["seconds"])
        else:
            await gen.open_loop(config["rate"], config["seconds"])
        for _, writer in gen.idle:
            writer.close()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    return {"results": gen.results, "dropped": gen.dropped}


def run_generator(config: dict[str, Any]) -> dict[str, Any]:
    command = pinned(1, [sys.executable, __file__, "generate", json.dumps(config)])
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    result: dict[str, Any] = json.loads(done.stdout)
    return result


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
        for args in (["servicekit.migrations", "inventory", url], ["inventory.seed", url]):
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
        "--log-level",
        "warning",
    ]
    with (logs / f"inventory-{'on' if shedding else 'off'}.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own command line)
            pinned(0, command), env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"inventory did not start; see {logs}")
            time.sleep(0.2)
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
    ok = [lat for _, status, lat in results if 200 <= status < 300]
    shed = [lat for _, status, lat in results if status == 503]
    offered = len(results) + raw["dropped"]
    return {
        "offered": offered,
        "goodput_rps": sum(1 for lat in ok if lat * 1000 <= SLO_MS) / seconds,
        "ok_rps": len(ok) / seconds,
        "shed_share": len(shed) / offered if offered else 0.0,
        "shed_p99_ms": percentile(shed, 0.99) * 1000,
        "ok_p50_ms": percentile(ok, 0.50) * 1000,
        "ok_p99_ms": percentile(ok, 0.99) * 1000,
        "errors": sum(
            1 for _, status, _ in results if status == 0 or (status >= 500 and status != 503)
        ),
        "dropped": raw["dropped"],
    }


def main() -> None:
    token_config = {"token": SECRET}
    logs = Path(tempfile.mkdtemp(prefix="b4-"))
    with database() as (url, skus):
        reset_stock(url)
        with inventory(url, shedding=True, logs=logs) as (port, _):
            base = {"port": port, "skus": skus, **token_config}
            run_generator({**base, "mode": "closed", "connections": 8, "seconds": 2})  # warm-up
            reset_stock(url)
            raw = run_generator({**base, "mode": "closed", "connections": 32, "seconds": 5})
            capacity = summarise(raw, 5)["ok_rps"]
        print(f"capacity: {capacity:.0f} 2xx/s (closed loop, 32 connections)", flush=True)
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        reasons: dict[tuple[str, int], list[dict[str, float]]] = {}
        for run in range(RUNS):
            for shedding in (True, False):
                mode = "on" if shedding else "off"
                with inventory(url, shedding=shedding, logs=logs) as (port, pid):
                    base = {"port": port, "skus": skus, **token_config}
                    run_generator({**base, "mode": "closed", "connections": 8, "seconds": 1})
                    for load in LOADS:
                        reset_stock(url)
                        before, counted = rss_mb(pid), scrape(port)
                        raw = run_generator(
                            {**base, "mode": "open", "rate": capacity * load, "seconds": SECONDS}
                        )
                        summary = summarise(raw, SECONDS)
                        summary["rss_growth"] = rss_mb(pid) / before - 1 if before else 0.0
                        server = server_side(counted, scrape(port))
                        summary["server_shed_p99_ms"] = server["server_shed_p99_ms"]
                        reasons.setdefault((mode, load), []).append(server["reasons"])
                        samples.setdefault((mode, load), []).append(summary)
                        print(
                            f"run {run + 1}/{RUNS} shedding {mode} {load}x: "
                            + ", ".join(f"{k}={v:.3g}" for k, v in summary.items()),
                            flush=True,
                        )
    medians = {
        key: {name: statistics.median(s[name] for s in runs) for name in runs[0]}
        for key, runs in samples.items()
    }
    peak = max(medians[("on", load)]["goodput_rps"] for load in LOADS)
    rows = []
    verdicts: dict[str, bool] = {}
    for mode in ("on", "off"):
        for load in LOADS:
            m = medians[(mode, load)]
            share = m["goodput_rps"] / peak if peak else 0.0
            verdict = ""
            if mode == "on" and load > 1:
                target = 0.9 if load == 2 else 0.8
                verdicts[f"goodput_{load}x"] = share >= target
                verdict = ("PASS" if share >= target else "FAIL") + f" (>= {target:.0%})"
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
                ]
            )
    shed_p99 = max(medians[("on", load)]["server_shed_p99_ms"] for load in LOADS)
    client_shed_p99 = max(medians[("on", load)]["shed_p99_ms"] for load in LOADS)
    rss = max(medians[("on", load)]["rss_growth"] for load in LOADS)
    verdicts["shed_p99"] = shed_p99 <= SHED_P99_TARGET_MS
    verdicts["rss"] = rss <= 0.20
    pinning = "server on CPU 0, generator on CPU 1 (taskset)" if PINNED else "no CPU pinning"
    intro = (__doc__ or "") + (
        f"\nCapacity measured: {capacity:.0f} 2xx/s. Concurrency limit {LIMIT}, "
        f"SLO {SLO_MS:.0f} ms, "
        f"{RUNS} runs of {SECONDS:.0f} s per cell; {pinning}. PostgreSQL shares the machine.\n\n"
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
                    "errors / gen. dropped",
                ],
                rows,
            )
        ],
        {
            "capacity_rps": capacity,
            "limit": LIMIT,
            "slo_ms": SLO_MS,
            "runs": RUNS,
            "seconds": SECONDS,
            "medians": {f"{mode}_{load}x": v for (mode, load), v in medians.items()},
            "shed_reasons": {f"{mode}_{load}x": v for (mode, load), v in reasons.items()},
            "verdicts": verdicts,
            "load_generator": "b4 open-loop (asyncio, raw HTTP/1.1 keep-alive, separate process)",
            "pinning": pinning,
        },
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "generate":
        print(json.dumps(generate(json.loads(sys.argv[2]))))
    else:
        main()
