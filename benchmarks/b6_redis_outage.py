"""B6: latency of requests that do not need Redis, while Redis is healthy, stalled 1 s, or gone.

A real gateway (`python -m servicekit.serve`, one process) counts its access limits in a
private redis-server; the limits are set far above the offered load, so the limiter runs on
every request and refuses none. Requests read one product from a stub upstream (a minimal
uvicorn app), so nothing on their path needs Redis but the limiter. The load is open-loop, so a
slow answer never slows the sender: an async client (httpx, in a separate process) sends `GET
/api/products/{sku}` at a fixed rate, a quarter of the gateway's capacity measured first with
wrk (16 connections), and times each request from its scheduled send time. The sender opens its
connections before the timed window and starts each request at its time (it used to create
every request's task up front and open connections on the first sends: each phase then began
with a burst of late sends and fresh connections, 2-3% of the requests at 30-200 ms, which was
the sender's start-up, not the gateway, yet set every phase's p99 at ~45-107 ms and buried what
the limiter did). It reports how late it started requests (`send_lag_max_ms`): a starved sender
shows there. Three phases:

- healthy: Redis answers;
- stalled: Redis is frozen with SIGSTOP for 1 s in the middle of the phase (it accepts
  connections, answers nothing), then resumed;
- gone: Redis is killed before the phase (connections refused), restarted after it.

Each phase runs several times, interleaved; the table shows medians. Target: p99 of the
stalled and gone phases within 10 ms of the healthy one, and no answer caused by the limiter:
no 500 and none of its refusals (no limit can be reached). Other non-2xx answers (a breaker or
the concurrency limit of an overloaded machine) are counted apart.

What a stall costs: the requests that reach the limiter in the first
`GATEWAY_RATE_LIMIT_REDIS_TIMEOUT` after Redis freezes wait until the first of them gives up
(they all give up together, `gateway.rate_limiter`); after that the limiter counts in memory
until a background probe finds Redis again. A 1% tail of an 8 s phase is 80 ms of traffic, so
that timeout must stay well under 80 ms for the p99 to hold whatever the rate: with 0.1 s and
one deadline per request (before), every request of the stall's first 0.1 s waited 0.1 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from report import write

REPO = Path(__file__).resolve().parents[1]
RUNS = 5
SECONDS = 8
#: Connections the sender opens before the timed window (a few more than the load keeps busy).
WARM_CONNECTIONS = 8
CONNECTIONS, THREADS = 16, 2
SKU = "mug-stoneware-350ml"
TARGET_MS = 10.0
#: Offered load as a share of the capacity wrk measures: latency is measured below saturation.
#: A quarter of capacity: B6 asks how a healthy, unsaturated gateway fares when Redis fails
#: (at half, the httpx sender and the server shared 2 cores and queued for seconds).
LOAD_SHARE = 0.25
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
#: Problem types of the limiter's own refusals (gateway.exceptions).
LIMITER = "rate-limited"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (local URL)
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stub_app() -> Any:
    """The upstream: answers any product read with a fixed product (no database, no Redis)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    product = {"sku": SKU, "name": "Mug", "price_cents": 1200, "currency": "USD", "available": 9}

    async def read_product(_: Any) -> JSONResponse:
        return JSONResponse(product)

    return Starlette(routes=[Route("/products/{sku}", read_product)])


class Redis:
    """A private redis-server this benchmark may freeze and kill."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("B6 needs redis-server on PATH")
        self.process = subprocess.Popen(  # noqa: S603 (fixed binary and arguments)
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)


def default_redis_timeout() -> float:
    """The gateway's default `GATEWAY_RATE_LIMIT_REDIS_TIMEOUT`, in seconds."""
    from gateway.config import GatewaySettings

    default: float = GatewaySettings.model_fields["rate_limit_redis_timeout"].default
    return default


def fallback_gauge(gateway: str) -> float:
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=2) as response:  # noqa: S310
        text = response.read().decode()
    match = re.search(r"^servicekit_rate_limit_fallback ([0-9.]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def wrk(url: str, seconds: int) -> subprocess.Popen[str]:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("B6 needs wrk on PATH (scripts/system-packages.sh bench installs it)")
    return subprocess.Popen(  # noqa: S603 (fixed binary and arguments)
        [
            *(binary, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"),
            *("-H", "Authorization: Bearer demo-key", url),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse_wrk(output: str) -> dict[str, float]:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([0-9.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match.group(1)) * UNIT[match.group(2)]

    requests = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": float(requests.group(1)) if requests else 0.0,
        "rps": float(rate.group(1)) if rate else 0.0,
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def load(url: str, rate: float, seconds: float) -> subprocess.Popen[str]:
    """Start the open-loop load generator (this script, `load` subcommand) in its own process."""
    return subprocess.Popen(  # noqa: S603 (this script, fixed arguments)
        [sys.executable, __file__, "load", url, str(rate), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )


async def open_loop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Send at `rate`/s for `seconds`; latency from the scheduled send time (no omission)."""
    import asyncio

    import httpx

    latencies: list[float] = []
    refused: dict[str, int] = {}  # non-2xx answers by "status type"
    failures = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(
        limits=limits, timeout=10, headers={"Authorization": "Bearer demo-key"}
    ) as client:
        loop = asyncio.get_running_loop()

        async def one(at: float) -> None:
            nonlocal failures
            try:
                response = await client.get(url)
                if not response.is_success:
                    problem = response.headers.get("content-type") == "application/problem+json"
                    kind = f"{response.status_code} {response.json()['type'] if problem else '?'}"
                    refused[kind] = refused.get(kind, 0) + 1
            except httpx.HTTPError:
                failures += 1
            latencies.append((loop.time() - at) * 1000)

        # Untimed warm-up: the connections exist before the first timed request.
        await asyncio.gather(*(client.get(url) for _ in range(WARM_CONNECTIONS)))
        start = loop.time() + 0.05
        send_lag = 0.0
        tasks = []
        for i in range(int(rate * seconds)):
            at = start + i / rate
            if (wait := at - loop.time()) > 0:
                await asyncio.sleep(wait)
            send_lag = max(send_lag, loop.time() - at)
            tasks.append(asyncio.create_task(one(at)))
        await asyncio.gather(*tasks)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": latencies[-1],
        "requests": float(len(latencies)),
        # What the limiter could cause: a 500 (an escaped storage error) or one of its refusals.
        "limiter_failures": float(
            sum(n for kind, n in refused.items() if kind.startswith("500") or LIMITER in kind)
        ),
        "other_non_2xx": float(
            sum(n for kind, n in refused.items() if not (kind.startswith("500") or LIMITER in kind))
        ),
        "non_2xx_by_type": refused,
        "errors": float(failures),
        "send_lag_max_ms": send_lag * 1000,
    }


def run_phase(phase: str, url: str, gateway: str, redis: Redis, rate: float) -> dict[str, float]:
    if phase == "gone":
        redis.kill()
    sender = load(url, rate, SECONDS)
    if phase == "stalled":
        time.sleep(SECONDS / 2 - 0.5)
        redis.signal(signal.SIGSTOP)
        time.sleep(1.0)
        redis.signal(signal.SIGCONT)
    output, _ = sender.communicate(timeout=SECONDS + 60)
    result: dict[str, Any] = json.loads(output)
    result["fallback_after"] = fallback_gauge(gateway)
    if phase == "gone":
        redis.start()
    # Every phase starts with the limiter counting in Redis again.
    deadline = time.monotonic() + 30
    while fallback_gauge(gateway) != 0.0:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not return to Redis within 30 s")
        request = urllib.request.Request(  # noqa: S310 (local URL)
            url, headers={"Authorization": "Bearer demo-key"}
        )
        with contextlib.suppress(OSError):  # any answer will do: it makes the limiter probe
            urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 (local URL)
        time.sleep(0.2)
    return result


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="b6-"))
    redis = Redis(work)
    stub_port, gateway_port = free_port(), free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    url = f"{gateway}/api/products/{SKU}"
    env = {
        **os.environ,
        "GATEWAY_ENVIRONMENT": "development",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "GATEWAY_INVENTORY_URL": f"http://127.0.0.1:{stub_port}",
        # The limiter runs on every request; the load never reaches a limit.
        "GATEWAY_GLOBAL_RATE_LIMIT": "1000000/second",
        "GATEWAY_CLIENT_RATE_LIMIT": "1000000/second",
    }
    python = sys.executable
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis.start()
        processes.append(
            subprocess.Popen(  # noqa: S603 (this script, fixed arguments)
                [python, __file__, "stub", str(stub_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        processes.append(
            subprocess.Popen(  # noqa: S603 (fixed module and arguments)
                # As every service runs (its connection limits, the asyncio loop).
                [
                    python,
                    "-m",
                    "servicekit.serve",
                    "gateway.main:create_app",
                    "--port",
                    str(gateway_port),
                ],
                env=env,
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_http(f"http://127.0.0.1:{stub_port}/products/{SKU}")
        wait_http(f"{gateway}/healthz")
        wrk(url, 3).communicate(timeout=60)  # warm-up: connections and pools
        output, _ = wrk(url, 5).communicate(timeout=60)
        capacity = parse_wrk(output)["rps"]
        rate = max(10.0, round(capacity * LOAD_SHARE))
        print(f"capacity {capacity:.0f} req/s (wrk); offered load {rate:.0f} req/s", flush=True)
        timeout = float(env.get("GATEWAY_RATE_LIMIT_REDIS_TIMEOUT", default_redis_timeout()))
        print(f"limiter's Redis timeout {timeout * 1000:.0f} ms", flush=True)
        phases = ("healthy", "stalled", "gone")
        samples: dict[str, list[dict[str, Any]]] = {p: [] for p in phases}
        for run in range(RUNS):
            for phase in phases:
                samples[phase].append(run_phase(phase, url, gateway, redis, rate))
                print(f"run {run + 1} {phase}: {samples[phase][-1]}", flush=True)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)
        redis.kill()
        shutil.rmtree(work, ignore_errors=True)

    def median(phase: str, key: str) -> float:
        return float(statistics.median(s[key] for s in samples[phase]))

    healthy_p99 = median("healthy", "p99_ms")
    rows = []
    for phase in phases:
        delta = median(phase, "p99_ms") - healthy_p99
        failures = sum(s["limiter_failures"] for s in samples[phase])
        others = sum(s["other_non_2xx"] + s["errors"] for s in samples[phase])
        ok = failures == 0 and (phase == "healthy" or delta <= TARGET_MS)
        rows.append(
            [
                phase,
                f"{median(phase, 'p50_ms'):.2f} ms",
                f"{median(phase, 'p99_ms'):.2f} ms",
                "-" if phase == "healthy" else f"{delta:+.2f} ms",
                f"{median(phase, 'p99_ms') / healthy_p99:.2f}x",
                f"{median(phase, 'max_ms'):.0f} ms",
                int(failures),
                int(others),
                "baseline" if phase == "healthy" else ("meets target" if ok else "MISSES target"),
            ]
        )
    write(
        "b6_redis_outage",
        "B6: requests that do not need Redis, with Redis healthy, stalled 1 s, or gone",
        __doc__ or "",
        [
            (
                f"Results (median of {RUNS} runs of {SECONDS} s at {rate:.0f} req/s, a quarter of "
                f"the {capacity:.0f} req/s wrk measured; open-loop httpx sender; limiter's Redis "
                f"timeout {timeout * 1000:.0f} ms)",
                [
                    "phase",
                    "p50",
                    "p99",
                    "p99 vs healthy",
                    "p99 ratio",
                    "max",
                    "500s or limiter refusals (all runs)",
                    "other non-2xx or transport errors",
                    "verdict",
                ],
                rows,
            )
        ],
        {
            "samples": samples,
            "runs": RUNS,
            "seconds_per_run": SECONDS,
            "target_p99_delta_ms": TARGET_MS,
            "capacity_rps_wrk": capacity,
            "offered_rps": rate,
            "rate_limit_redis_timeout_s": timeout,
            "load_generator": (
                f"open-loop httpx sender in its own process; capacity by wrk -t{THREADS} "
                f"-c{CONNECTIONS}"
            ),
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "load":
        import asyncio

        print(
            json.dumps(asyncio.run(open_loop(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))))
        )
    elif len(sys.argv) == 3 and sys.argv[1] == "stub":
        import uvicorn

        uvicorn.run(stub_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        main()
