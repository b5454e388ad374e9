"""B8: the seed article's experiments, reproduced with our numbers.

The seed (shared/design/seed-article.txt) argues in Go: lazy init needs sync.Once, `mustGet` on
a request path floods the process with panics and goroutines, and shared state needs a lock.
Here is each claim measured in Python with servicekit, side by side with the naive version:

1. Initialisation: unguarded check vs a lock on every access vs `Once`; 64 threads call first.
2. `get` vs `must_get`: cost per call on a hit and a miss, then 100 and 500 concurrent requests
   whose handler calls `must_get` on a missing key, through the kit's app (in-process ASGI):
   tasks before / peak / after and RSS (the seed saw goroutines 15 -> 1,200 / 6,800, 48 / 210 MB).
3. Shared state: 8 threads doing read-modify-write on a dict, unguarded vs under a lock.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import timeit
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar

import httpx
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict
from report import write
from servicekit import Once, ServiceSettings, context, create_service_app
from servicekit.testing import lifespan_client

THREADS = 64
CALLS = 500_000


class Client:
    pass


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


# -- 1. initialisation ------------------------------------------------------------------------


def _first_call(get: Callable[[], Client], built: list[int]) -> int:
    barrier = threading.Barrier(THREADS)

    def run() -> None:
        barrier.wait()
        get()

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return built[0]


def _slow_factory(built: list[int]) -> Callable[[], Client]:
    def make() -> Client:
        built[0] += 1
        time.sleep(0.005)  # the handshake: the GIL is released, other threads run
        return Client()

    return make


def initialisation() -> list[list[Any]]:
    rows = []
    # Unguarded check ("if client is None: client = make()").
    built = [0]
    make = _slow_factory(built)
    holder: dict[str, Client | None] = {"c": None}

    def unguarded() -> Client:
        if holder["c"] is None:
            holder["c"] = make()
        return holder["c"]  # type: ignore[return-value]

    rows.append(("unguarded check", unguarded, _first_call(unguarded, built)))
    # A lock around every access.
    built = [0]
    make = _slow_factory(built)
    locked_holder: dict[str, Client | None] = {"c": None}
    lock = threading.Lock()

    def locked() -> Client:
        with lock:
            if locked_holder["c"] is None:
                locked_holder["c"] = make()
            return locked_holder["c"]  # type: ignore[return-value]

    rows.append(("lock on every access", locked, _first_call(locked, built)))
    built = [0]
    once: Once[Client] = Once(_slow_factory(built))
    rows.append(("servicekit `Once`", once.get, _first_call(once.get, built)))
    out = []
    for name, get, constructions in rows:
        ns = min(timeit.repeat(get, number=CALLS, repeat=5)) / CALLS * 1e9
        out.append(
            [name, f"{constructions}", "yes" if constructions == 1 else "**no**", f"{ns:.0f} ns"]
        )
    return out


# -- 2. get vs must_get -----------------------------------------------------------------------


def context_cost() -> list[list[Any]]:
    key, missing = context.REQUEST_ID, context.CUSTOMER_ID

    def must_get_miss() -> None:
        with suppress(context.MissingContextError):
            context.must_get(missing)

    with context.request_scope({key: "r"}):
        cases = {
            "get, hit": lambda: context.get(key),
            "must_get, hit": lambda: context.must_get(key),
            "get, miss (returns None)": lambda: context.get(missing),
            "must_get, miss (raises, caught)": must_get_miss,
        }
        return [
            [name, f"{min(timeit.repeat(fn, number=CALLS, repeat=5)) / CALLS * 1e9:.0f} ns"]
            for name, fn in cases.items()
        ]


class _Settings(ServiceSettings):
    service_name: ClassVar[str] = "b8"
    model_config = SettingsConfigDict(env_prefix="B8_", extra="ignore")


def _app() -> FastAPI:
    router = APIRouter()

    @router.get("/must-get")
    async def read_must_get() -> str:
        return context.must_get(context.CUSTOMER_ID)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}

    import logging

    app = create_service_app(
        _Settings(), title="b8", lifespan=lifespan, routers=[router], internal=False
    )
    logging.getLogger("servicekit.edge.recovery").disabled = True  # measure the path, not stdout
    return app


async def must_get_flood(concurrency: int, total: int = 5_000) -> list[Any]:
    app = _app()
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(asyncio.all_tasks()))
            await asyncio.sleep(0.001)

    async with lifespan_client(app) as client:
        await client.get("/must-get")  # warm up
        before_tasks, before_rss = len(asyncio.all_tasks()), _rss_kb()
        sampler = asyncio.create_task(sample())
        statuses: dict[int, int] = {}
        sent = 0
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while sent < total:
                sent += 1
                response: httpx.Response = await client.get("/must-get")
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        stop.set()
        await sampler
        after_tasks, after_rss = len(asyncio.all_tasks()), _rss_kb()
    return [
        concurrency,
        f"{total:,}",
        ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())),
        before_tasks,
        peak,
        after_tasks,
        f"{before_rss / 1024:.0f} -> {after_rss / 1024:.0f} MB",
        f"{total / elapsed:,.0f}",
    ]


# -- 3. shared state --------------------------------------------------------------------------


def _next(value: int) -> int:
    return value + 1  # any call between read and write lets another thread run


def shared_state_threads(locked: bool, threads: int = 8, per_thread: int = 100_000) -> list[Any]:
    counts: dict[str, int] = {"orders": 0}
    lock = threading.Lock()

    def unguarded() -> None:
        for _ in range(per_thread):
            counts["orders"] = _next(counts["orders"])

    def guarded() -> None:
        for _ in range(per_thread):
            with lock:
                counts["orders"] = _next(counts["orders"])

    workers = [threading.Thread(target=guarded if locked else unguarded) for _ in range(threads)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - started
    expected = threads * per_thread
    lost = expected - counts["orders"]
    return [
        f"{threads} threads, " + ("threading.Lock" if locked else "unguarded"),
        f"{expected:,}",
        f"{lost:,}",
        "yes" if lost == 0 else "**no**",
        f"{expected / elapsed / 1e6:.2f} M/s",
    ]


async def _shared_state_tasks(locked: bool, tasks: int = 2_000) -> list[Any]:
    stock = {"mug": tasks // 2}  # half as many units as buyers
    sold = 0
    lock = asyncio.Lock()

    async def buy() -> None:
        nonlocal sold
        available = stock["mug"]
        if available > 0:
            await asyncio.sleep(0)  # e.g. a database or cache call between read and write
            stock["mug"] = available - 1
            sold += 1

    async def buy_locked() -> None:
        async with lock:
            await buy()

    started = time.perf_counter()
    await asyncio.gather(*((buy_locked if locked else buy)() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    oversold = sold - tasks // 2
    return [
        f"{tasks:,} tasks, "
        + ("asyncio.Lock" if locked else "unguarded (await between read and write)"),
        f"{sold:,} sold of {tasks // 2:,}",
        f"{max(0, oversold):,} oversold",
        "yes" if oversold <= 0 else "**no**",
        f"{tasks / elapsed / 1e3:.0f} k/s",
    ]


def main() -> None:
    init = initialisation()
    cost = context_cost()
    floods = [asyncio.run(must_get_flood(c)) for c in (100, 500)]
    state = [
        shared_state_threads(False),
        shared_state_threads(True),
        asyncio.run(_shared_state_tasks(False)),
        asyncio.run(_shared_state_tasks(True)),
    ]
    write(
        "b8_seed",
        "B8: the seed's experiments with our numbers",
        __doc__ or "",
        [
            (
                "1. Initialisation under 64 concurrent first callers",
                ["strategy", "constructions", "safe", "cost per access"],
                init,
            ),
            ("2a. `get` vs `must_get`", ["call", "cost per call"], cost),
            (
                "2b. `must_get` on a missing key in every request, through the kit (500 each)",
                [
                    "concurrency",
                    "requests",
                    "statuses",
                    "tasks before",
                    "tasks peak",
                    "tasks after",
                    "RSS",
                    "req/s",
                ],
                floods,
            ),
            (
                "3. Shared state",
                ["case", "operations", "lost / oversold", "correct", "throughput"],
                state,
            ),
        ],
        {
            "initialisation": init,
            "context_cost": cost,
            "must_get_flood": floods,
            "shared_state": state,
            "load_generator": "threads and timeit; in-process httpx ASGITransport for 2b",
        },
    )


if __name__ == "__main__":
    main()
