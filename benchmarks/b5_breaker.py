"""B5: circuit breaker. Open-state fast-fail latency; throughput through a closed breaker.

1. Fast fail, through a real uvicorn app built like order (`create_service_app`, a route that
   calls "payment" through `ServiceClient`), loaded with wrk. Payment is a socket that accepts
   connections and never answers. Three servers, measured in turns:
   - `breaker open`: the payment breaker is open, so the route answers 503 at once;
   - `plain 503` (baseline): the route raises `UnavailableError` itself, no client involved:
     the floor any 503 costs through the kit;
   - `no breaker` (contrast): the breaker never opens, so every request waits for the timeout.
   Also, in-process: the latency of `ServiceClient.request` refused by an open breaker.
   Target: p99 <= 5 ms through the app, at a light load (4 connections).
2. Throughput of concurrent calls (256 tasks) through one closed breaker vs the same call
   unguarded. The call is an httpx request over a `MockTransport` that yields to the loop, so
   hundreds are in flight at once and any lock held across the await would serialise them.
   Target: >= 0.9x unguarded. Rounds alternate guarded/unguarded; the median ratio is reported.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from asgi_bench import PINNED, Server, free_port, serving, wrk
from fastapi import APIRouter, FastAPI, Request
from report import write

RUNS = 5
# Latency is measured at a light, closed-loop load: with many connections wrk would measure
# queueing in the saturated worker, the same for every 503 (the plain-503 baseline shows it).
CONNECTIONS = 4
DURATION_S = 5
WARMUP_S = 2
TIMEOUT_S = 1.0
TASKS, CALLS = 256, 20_000


# --- the app under test (built by uvicorn --factory in the server process) --------------------


def create_app() -> Any:
    """An order-like app; `B5_MODE` is open, plain or unguarded; payment at `B5_PAYMENT_URL`."""
    import servicekit as kit
    from pydantic_settings import SettingsConfigDict

    class BenchSettings(kit.ServiceSettings):
        service_name: ClassVar[str] = "order"
        model_config = SettingsConfigDict(env_prefix="B5_", extra="ignore")
        mode: str = "open"
        payment_url: str = "http://127.0.0.1:9"

    settings = BenchSettings(http_timeout=TIMEOUT_S)
    router = APIRouter()

    @router.get("/hello")
    async def read_hello() -> dict[str, str]:
        return {"hello": "world"}

    @router.get("/checkout")
    async def read_checkout(request: Request) -> dict[str, int]:
        if settings.mode == "plain":
            raise kit.UnavailableError("payment unavailable; retry shortly")
        payment: kit.ServiceClient = request.state.payment
        response = await payment.request("GET", "/charges")
        return {"status": response.status_code}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        never = {"consecutive_failures": 10**9, "min_calls": 10**9}
        breakers = kit.Breakers.from_settings(settings, metrics=app.state.metrics)
        breaker = breakers.get(
            "payment", reset_seconds=3600, **(never if settings.mode == "unguarded" else {})
        )
        if settings.mode == "open":
            breaker.open(reason="benchmark")
        payment = kit.ServiceClient(
            "payment",
            settings.payment_url,
            token="bench-service-token",  # noqa: S106 (the benchmark's own, never checked)
            timeout=settings.http_timeout,
            breaker=breaker,
            retry=kit.RetryPolicy(max_attempts=1),
            metrics=app.state.metrics,
        )
        yield {"payment": payment}
        await payment.aclose()
        await breakers.aclose()

    return kit.create_service_app(
        settings, title="b5", lifespan=lifespan, routers=[router], internal=False
    )


# --- servers (asgi_bench's uvicorn and wrk helpers) -------------------------------------------


@contextmanager
def black_hole() -> Iterator[str]:
    """A payment that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def fast_fail_through_app() -> dict[str, list[dict[str, float]]]:
    modes = ["open", "plain", "unguarded"]
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with black_hole() as payment, tempfile.TemporaryDirectory() as logs:
        servers = [
            Server(
                mode,
                "create_app",
                free_port(),
                {"B5_MODE": mode, "B5_PAYMENT_URL": payment, "B5_LOG_LEVEL": "WARNING"},
                Path(logs) / f"{mode}.log",
                module="b5_breaker",
            )
            for mode in modes
        ]
        urls = {s.name: f"http://127.0.0.1:{s.port}/checkout" for s in servers}
        with serving(servers):
            for mode in modes:
                expect_503(urls[mode])
                wrk(urls[mode], WARMUP_S, connections=CONNECTIONS, non_2xx=True)
            for round_ in range(RUNS):
                for mode in modes:
                    results[mode].append(
                        wrk(urls[mode], DURATION_S, connections=CONNECTIONS, non_2xx=True)
                    )
                    last = results[mode][-1]
                    print(
                        f"  round {round_ + 1}/{RUNS} {mode:<10} {last['rps']:>8.0f} req/s "
                        f"p99 {last['p99_ms']:.2f} ms",
                        flush=True,
                    )
    return results


def expect_503(url: str) -> None:
    """Every server must answer a 503 problem with Retry-After, or the numbers mean nothing."""
    try:
        urllib.request.urlopen(url, timeout=5)  # noqa: S310
    except urllib.error.HTTPError as error:
        if error.code == 503 and error.headers.get("Retry-After"):
            return
        raise RuntimeError(f"{url} answered {error.code}: {error.read()[:300]!r}") from error
    raise RuntimeError(f"{url} answered 2xx; expected a 503")


# --- in-process: the client's fast fail, and throughput through a closed breaker ---------------


async def fast_fail_in_process(calls: int = 20_000) -> dict[str, float]:
    """Latency of `ServiceClient.request` refused by an open breaker (no server, no socket)."""
    import servicekit as kit

    breaker = kit.AsyncCircuitBreaker("payment", kit.BreakerConfig(reset_seconds=3600))
    breaker.open()
    client = kit.ServiceClient(
        "payment",
        "http://127.0.0.1:9",
        token="bench-service-token",  # noqa: S106 (never sent: the breaker is open)
        breaker=breaker,
    )
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        with suppress(kit.CircuitOpenError):
            await client.request("GET", "/charges")
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": samples[len(samples) // 2],
        "p99_ms": samples[int(len(samples) * 0.99)],
    }


async def throughput(guarded: bool) -> float:
    """Calls per second of TASKS concurrent workers making CALLS httpx calls in all."""
    import httpx
    import servicekit as kit

    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # the call is in flight across a loop turn
        return httpx.Response(200)

    breaker = kit.AsyncCircuitBreaker("payment")
    async with httpx.AsyncClient(
        base_url="http://payment", transport=httpx.MockTransport(answer)
    ) as client:
        call: Callable[[], Awaitable[httpx.Response]]
        if guarded:

            async def call() -> httpx.Response:
                return await breaker.call_async(client.get, "/charges")
        else:

            async def call() -> httpx.Response:
                return await client.get("/charges")

        remaining = CALLS

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(TASKS)))
        elapsed = time.perf_counter() - started
    assert breaker.current_state == "closed"
    return CALLS / elapsed


async def throughput_rounds() -> tuple[list[float], list[float]]:
    guarded: list[float] = []
    unguarded: list[float] = []
    await throughput(True)  # warm-up
    for round_ in range(RUNS):
        # Alternate which side goes first, so drift does not favour one.
        order = (True, False) if round_ % 2 == 0 else (False, True)
        for side in order:
            (guarded if side else unguarded).append(await throughput(side))
        print(
            f"  round {round_ + 1}/{RUNS} guarded {guarded[-1]:>8.0f}/s "
            f"unguarded {unguarded[-1]:>8.0f}/s",
            flush=True,
        )
    return guarded, unguarded


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    print("==> fast fail through uvicorn (wrk)")
    app = fast_fail_through_app()
    print("==> fast fail in process, and throughput through a closed breaker")
    client = asyncio.run(fast_fail_in_process())
    guarded, unguarded = asyncio.run(throughput_rounds())

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in app[mode])

    ratios = [g / u for g, u in zip(guarded, unguarded, strict=True)]
    ratio = statistics.median(ratios)
    open_p99 = med("open", "p99_ms")
    rows = [
        [
            label,
            f"{med(mode, 'rps'):.0f}",
            f"{med(mode, 'p50_ms'):.2f}",
            f"{med(mode, 'p99_ms'):.2f}",
            f"{med(mode, 'non_2xx_share'):.0%}",
        ]
        for mode, label in (
            ("open", "breaker open (fast fail)"),
            ("plain", "plain 503 from the route (baseline)"),
            ("unguarded", f"no breaker, payment hung ({TIMEOUT_S:.0f} s timeout)"),
        )
    ]
    pinning = "uvicorn on CPU 0, wrk on CPU 1 (taskset)" if PINNED else "no CPU pinning"
    intro = f"""
Open-breaker fast fail through a real uvicorn app built like order (one worker, every kit
middleware), loaded by **wrk** (1 thread, {CONNECTIONS} connections, {DURATION_S} s per run,
{RUNS} rounds in turns, medians; {pinning}). Payment accepts connections and never answers.
Throughput: {TASKS} concurrent asyncio tasks making {CALLS} httpx calls (MockTransport that
yields to the loop) through one closed `AsyncCircuitBreaker` vs unguarded, {RUNS} alternating
rounds, median of the per-round ratios.

Targets: fast-fail p99 <= 5 ms -> **{open_p99:.2f} ms** ({verdict(open_p99 <= 5)});
closed-breaker throughput >= 0.9x unguarded -> **{ratio:.2f}x** ({verdict(ratio >= 0.9)}).
"""
    write(
        "b5_breaker",
        "B5: circuit breaker",
        intro,
        [
            (
                "Fast fail through uvicorn (median of rounds)",
                ["server", "req/s", "p50 ms", "p99 ms", "503 share"],
                rows,
            ),
            (
                "Fast fail in process: ServiceClient.request refused by an open breaker",
                ["p50 ms", "p99 ms"],
                [[f"{client['p50_ms']:.4f}", f"{client['p99_ms']:.4f}"]],
            ),
            (
                "Concurrent throughput through one closed breaker",
                ["guarded calls/s", "unguarded calls/s", "ratio (median of rounds)"],
                [
                    [
                        f"{statistics.median(guarded):.0f}",
                        f"{statistics.median(unguarded):.0f}",
                        f"{ratio:.2f}x",
                    ]
                ],
            ),
        ],
        {
            "load_generator": "wrk",
            "fast_fail_app": app,
            "fast_fail_in_process": client,
            "throughput_guarded": guarded,
            "throughput_unguarded": unguarded,
            "throughput_ratios": ratios,
            "throughput_ratio": ratio,
            "fast_fail_p99_ms": open_p99,
            "targets": {"fast_fail_p99_ms": 5.0, "throughput_ratio": 0.9},
        },
    )


if __name__ == "__main__":
    main()
