"""Shared by B1 and B2: the apps under test, real uvicorn servers, and wrk.

Every app serves the same trivial route, `GET /hello` -> `{"hello": "world"}`, declared the
way every service of the template declares its routes: on an `APIRouter` included in the app.
The bare FastAPI app is the baseline; the kit app is `servicekit.create_service_app` with
everything it installs (the edge layer: request context, security headers, recovery, metrics
and access log; service-tier shedding, read-only guard, body cap; tracing as the environment
says), with the settings' defaults: the access log policy writes every error and slow request
and samples the rest.
It is built like the gateway (`internal=False`): no service credential to check, so the
measurement is the middleware stack.

Servers are started once and measured in turns (bare, kit, ..., bare, kit, ...) so drift on a
shared machine hits both sides; the ratio is taken per round and the median reported. With two
or more CPUs, uvicorn runs on CPU 0 and wrk on CPU 1 (taskset), so the load generator does not
steal the server's core.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from report import write

HERE = Path(__file__).resolve().parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"
CONNECTIONS = 32
DURATION_S = 5
WARMUP_S = 2
PINNED = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


# --- the apps (built by uvicorn --factory in the server process) ------------------------------


def _hello_router() -> Any:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/hello")
    async def read_hello() -> dict[str, str]:
        return {"hello": "world"}

    return router


def bare_app() -> Any:
    """FastAPI with the route (on an included router, as in the kit app) and nothing else."""
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(_hello_router())
    return app


def bare_app_route_on_app() -> Any:
    """For scale: the route declared on the app itself (`@app.get`), no router.

    FastAPI (0.16x) resolves an included router lazily on every request, which costs a
    trivial route a good part of its throughput; the kit takes routers as FastAPI gives them.
    """
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hello")
    async def read_hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def kit_app() -> Any:
    """The same route inside `create_service_app` (settings from `BENCH_*`)."""
    import servicekit as kit
    from fastapi import FastAPI
    from pydantic_settings import SettingsConfigDict

    class BenchSettings(kit.ServiceSettings):
        service_name: ClassVar[str] = "bench"
        model_config = SettingsConfigDict(env_prefix="BENCH_", extra="ignore")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}

    return kit.create_service_app(
        BenchSettings(), title="bench", lifespan=lifespan, routers=[_hello_router()], internal=False
    )


# --- servers and wrk ---------------------------------------------------------------------------


@dataclass
class Server:
    """One uvicorn process serving `module:factory` (a module of benchmarks/) on `port`."""

    name: str
    factory: str
    port: int
    env: Mapping[str, str]
    log: Path
    module: str = "asgi_bench"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int, command: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if PINNED else command


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], failure: str, timeout: float = 60
) -> None:
    """Poll `url` until it answers 200; raise `failure` if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.2)


@contextmanager
def serving(servers: list[Server]) -> Iterator[None]:
    """Start every server (one worker, no uvicorn access log), wait until each answers."""
    processes = []
    try:
        for server in servers:
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                f"{server.module}:{server.factory}",
                "--factory",
                "--app-dir",
                str(HERE),
                "--port",
                str(server.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ]
            with server.log.open("ab") as log:
                processes.append(
                    subprocess.Popen(  # noqa: S603
                        pinned(0, command),
                        env={**os.environ, **server.env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        for server, process in zip(servers, processes, strict=True):
            wait_until_ready(server.url, process, f"{server.name} did not start; see {server.log}")
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_PERCENTILE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str,
    duration: float = DURATION_S,
    *,
    connections: int = CONNECTIONS,
    non_2xx: bool = False,
) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms) and the share of non-2xx answers of one wrk run.

    A run with socket errors is refused; so is one with non-2xx answers unless `non_2xx`
    (a benchmark of refusals expects them).
    """
    command = [WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "--latency"]
    done = subprocess.run(  # noqa: S603
        pinned(1, [*command, url]), capture_output=True, text=True, check=True
    )
    rps, total = _RPS.search(done.stdout), _TOTAL.search(done.stdout)
    refused = _NON_2XX.search(done.stdout)
    if (
        rps is None
        or total is None
        or "Socket errors" in done.stdout
        or (refused is not None and not non_2xx)
    ):
        raise RuntimeError(f"wrk run not clean:\n{done.stdout}")
    result = {
        "rps": float(rps.group(1)),
        "non_2xx_share": int(refused.group(1)) / int(total.group(1)) if refused else 0.0,
    }
    for percentile, value, unit in _PERCENTILE.findall(done.stdout):
        result[f"p{percentile}_ms"] = float(value) * _UNIT_MS[unit]
    return result


def measure(
    servers: list[Server], runs: int, processes: int = 1
) -> dict[str, list[dict[str, float]]]:
    """Warm every server up, then `runs` rounds, each server measured once per round.

    With `processes` > 1 each server runs as that many uvicorn processes, all measured in
    every round and averaged: one process's speed depends on where its code and data landed
    in memory, and on the 2-core machine identical processes differed by up to 8 %.
    """
    replicas = {
        s.name: [
            s,
            *(
                replace(s, port=free_port(), log=s.log.with_name(f"{s.log.stem}-{i}.log"))
                for i in range(1, processes)
            ),
        ]
        for s in servers
    }
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    with serving([r for rs in replicas.values() for r in rs]):
        for rs in replicas.values():
            for replica in rs:
                wrk(replica.url, WARMUP_S)
        for round_ in range(runs):
            measured: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
            for i in range(processes):
                for server in servers:
                    measured[server.name].append(wrk(replicas[server.name][i].url))
            for server in servers:
                results[server.name].append(
                    {
                        key: statistics.mean(r[key] for r in measured[server.name])
                        for key in measured[server.name][0]
                    }
                )
                print(
                    f"  round {round_ + 1}/{runs} {server.name:<28} "
                    f"{results[server.name][-1]['rps']:>9.0f} req/s",
                    flush=True,
                )
    return results


def ratio_to(results: dict[str, list[dict[str, float]]], name: str, baseline: str) -> float:
    """Median over rounds of `name`'s throughput divided by the baseline's in the same round."""
    pairs = zip(results[name], results[baseline], strict=True)
    return statistics.median(ours["rps"] / base["rps"] for ours, base in pairs)


def summary(results: list[dict[str, float]]) -> dict[str, float]:
    """Medians of one server's rounds."""
    return {
        key: statistics.median(r[key] for r in results if key in r)
        for key in ("rps", "p50_ms", "p99_ms")
    }


def setup_note(processes: int = 1) -> str:
    """How the load was generated, for the report."""
    pinning = (
        "uvicorn pinned to CPU 0 and wrk to CPU 1 (taskset)"
        if PINNED
        else "no CPU pinning (fewer than 2 CPUs or no taskset)"
    )
    return (
        f"Load generator: wrk, 1 thread, {CONNECTIONS} connections, {DURATION_S} s per run after "
        f"a {WARMUP_S} s warm-up; one uvicorn worker per app (httptools, uvloop); {pinning}."
        + (
            f" Each app ran as {processes} separate processes, each measured in every round; a "
            "round's figure is their mean."
            if processes > 1
            else ""
        )
    )


def compare(
    name: str,
    title: str,
    intro: str,
    servers: list[Server],
    *,
    target: float,
    runs: int,
    processes: int = 1,
    extra: Callable[[], dict[str, Any]] = dict,
) -> None:
    """Measure `servers` in turns and report each one's throughput against the first's.

    The verdict is the second server's median ratio against `target`. `extra` adds data to
    the JSON report (called after the measurement, while the servers' files still exist).
    """
    print(f"{name}: {runs} rounds; {setup_note(processes)}", flush=True)
    results = measure(servers, runs, processes)
    baseline = servers[0].name
    ratios = [ratio_to(results, s.name, baseline) for s in servers]
    ratio = ratios[1]
    verdict = "PASS" if ratio >= target else f"FAIL (target >= {target:.2f}x)"
    rows = []
    for server, server_ratio in zip(servers, ratios, strict=True):
        median = summary(results[server.name])
        shown = f"**{server_ratio:.2f}x**" if server is servers[1] else f"{server_ratio:.2f}x"
        rows.append(
            [
                server.name,
                f"{median['rps']:.0f}",
                f"{median['p50_ms']:.2f}",
                f"{median['p99_ms']:.2f}",
                shown,
            ]
        )
    write(
        name,
        title,
        intro + "\n" + setup_note(processes),
        [
            (
                f"Median of {runs} rounds: {servers[1].name} {ratio:.2f}x bare, {verdict}",
                ["app", "req/s", "p50 ms", "p99 ms", "throughput vs bare"],
                rows,
            ),
            (
                "Every round (req/s)",
                ["round", *(s.name for s in servers)],
                [
                    [i + 1, *(f"{results[s.name][i]['rps']:.0f}" for s in servers)]
                    for i in range(runs)
                ],
            ),
        ],
        {
            "ratio": ratio,
            "ratios": dict(zip((s.name for s in servers), ratios, strict=True)),
            "target": target,
            "pass": ratio >= target,
            "runs": runs,
            "processes": processes,
            "load_generator": "wrk",
            "setup": setup_note(processes),
            "results": results,
            **extra(),
        },
    )
