"""B3: once-guarded client access vs a plain module global.

Two questions, measured side by side in one run:
1. Fast path: once built, what does `Once.get()` cost next to reading a module global through
   a function (how code reaches a global client)? Target: <= 2x. The inline global read (no call
   at all) is shown too, for scale.
2. First call: 10,000 asyncio tasks and 64 threads (each with its own event loop) ask at once.
   The naive lazy global (`if _client is None: _client = await make()`) builds many clients;
   `Once` builds exactly one.
"""

from __future__ import annotations

import asyncio
import threading
import timeit
from typing import Any

from report import median_of, write
from servicekit import Once

RUNS = 7
CALLS = 1_000_000
TASKS, THREADS = 10_000, 64


class Client:
    pass


_CLIENT = Client()
_naive: Client | None = None


def read_global() -> Client:
    return _CLIENT


def fast_path() -> dict[str, float]:
    once: Once[Client] = Once(Client)
    once.get()
    namespace: dict[str, Any] = {"read_global": read_global, "get": once.get, "G": _CLIENT}

    def per_call(stmt: str) -> float:
        return min(timeit.repeat(stmt, globals=namespace, number=CALLS, repeat=3)) / CALLS * 1e9

    inline, _ = median_of(RUNS, lambda: per_call("G"))
    function, _ = median_of(RUNS, lambda: per_call("read_global()"))
    guarded, _ = median_of(RUNS, lambda: per_call("get()"))
    return {"inline_global_ns": inline, "global_via_function_ns": function, "once_get_ns": guarded}


async def _first_call(use_once: bool) -> tuple[int, float]:
    global _naive
    _naive = None
    built = 0
    lock = threading.Lock()

    async def make() -> Client:
        nonlocal built
        with lock:
            built += 1
        await asyncio.sleep(0.05)  # connecting takes time: the race window
        return Client()

    once: Once[Client] = Once(make)

    async def naive() -> Client:
        global _naive
        if _naive is None:
            _naive = await make()
        return _naive

    get = once.aget if use_once else naive
    barrier = threading.Barrier(THREADS + 1)

    def thread() -> None:
        barrier.wait()
        asyncio.run(get())

    threads = [threading.Thread(target=thread) for _ in range(THREADS)]
    for t in threads:
        t.start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    # The burst: every task reaches the check before any construction finishes, and the
    # threads join while the tasks are still waiting.
    tasks = [asyncio.ensure_future(get()) for _ in range(TASKS)]
    await asyncio.sleep(0)
    await asyncio.to_thread(barrier.wait)
    await asyncio.gather(*tasks)
    for t in threads:
        t.join()
    return built, (loop.time() - start) * 1000


def main() -> None:
    fp = fast_path()
    naive_built, naive_ms = asyncio.run(_first_call(use_once=False))
    once_built, once_ms = asyncio.run(_first_call(use_once=True))
    ratio = fp["once_get_ns"] / fp["global_via_function_ns"]
    rows = [
        [
            "fast path: global read inline (no call)",
            f"{fp['inline_global_ns']:.1f} ns",
            "",
            "scale",
        ],
        [
            "fast path: global read via function (baseline)",
            f"{fp['global_via_function_ns']:.1f} ns",
            "1.00x",
            "",
        ],
        [
            "fast path: `Once.get()`",
            f"{fp['once_get_ns']:.1f} ns",
            f"{ratio:.2f}x",
            "PASS" if ratio <= 2.0 else "FAIL (target <= 2x)",
        ],
        [
            f"first call, {TASKS:,} tasks + {THREADS} threads: naive lazy global",
            f"{naive_built:,} constructions",
            f"{naive_ms:.0f} ms",
            "the failure",
        ],
        [
            f"first call, {TASKS:,} tasks + {THREADS} threads: `Once.aget()`",
            f"{once_built:,} construction(s)",
            f"{once_ms:.0f} ms",
            "PASS" if once_built == 1 else "FAIL (target exactly 1)",
        ],
    ]
    write(
        "b3_once",
        "B3: once-guarded client access",
        __doc__ or "",
        [("Results", ["case", "measured", "ratio / time", "verdict"], rows)],
        {
            **fp,
            "ratio": ratio,
            "naive_constructions": naive_built,
            "once_constructions": once_built,
            "runs": RUNS,
            "calls_per_run": CALLS,
            "load_generator": "timeit (fast path); asyncio tasks + threads (first call)",
        },
    )


if __name__ == "__main__":
    main()
