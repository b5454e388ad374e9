"""`make capacity`: step open-loop load up to the knee, measure every service, recommend limits.

    python -m loadtest.capacity [KNOB=value ...]    # knobs also come from the environment

In order: the knobs are checked (a bad or unknown one: exit 2, the valid ones listed, nothing
written); the gateway's `/healthz` and every scraped `/metrics` must answer (exit 3 otherwise);
then steps of constant offered load with the journey mix (`loadtest.journey`), each rate
`STEP_FACTOR` times the last until a step saturates, then bisection near the knee
(`loadtest.knee`), until the knee is located or `TIME_CAP` would be passed. Each step prints
offered, achieved, goodput and client-side p50/p99 (from the scheduled send time). The report
(`loadtest.capacity_report`) is written to a hidden folder and renamed to
`loadtest/reports/capacity-<timestamp>/` only when complete; `APPLY=1` then writes the
recommended settings to `.env`. Exit 0 with a report, 3 when the stack went away mid-run.

Server-side figures come from every service of `services.toml` at its local port when `HOST`
is the local gateway; for another `HOST`, from that gateway's `/metrics` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest import capacity_report, journey, knee, knobs, scrape
from loadtest.capacity_knobs import (
    DRAIN_SECONDS,
    EXIT_KNOB,
    EXIT_UNREACHABLE,
    SAMPLE_EVERY,
    SETTLE_SECONDS,
    VALID,
    WARMUP_SECONDS,
    Knobs,
    parse,
)
from loadtest.openloop import Generator, Result
from loadtest.outcomes import BUSINESS, ERROR, OK, OUTCOMES, SHED
from loadtest.run import probe

REPO = Path(__file__).resolve().parents[3]
# --- what to scrape ---------------------------------------------------------------------------


def targets(host: str, env: Mapping[str, str]) -> dict[str, str]:
    """Service name -> base URL of every `/metrics` to read during the run."""
    parts = urlsplit(host)
    manifest = capacity_report.manifest()
    gateway = next(s for s in manifest if s.get("gateway"))
    local = parts.hostname in ("127.0.0.1", "localhost") and parts.port == _port(gateway, env)
    if not local:
        return {gateway["name"]: host}
    return {s["name"]: f"http://127.0.0.1:{_port(s, env)}" for s in manifest}


def _port(service: Mapping[str, Any], env: Mapping[str, str]) -> int:
    """A service's local port: `<PREFIX>_PORT` moves it off the manifest's, as in `make up`."""
    return int(env.get(f"{service['prefix']}_PORT") or service["port"])


def run_folder() -> Path:
    return Path(os.environ.get("STACK_RUN_DIR") or REPO / ".run")


def host_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None elsewhere."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


# --- one step ---------------------------------------------------------------------------------


#: A service's `/metrics` may be slow to answer under overload: tries before giving up.
SCRAPE_TRIES = 3


class StackDown(RuntimeError):
    """The stack stopped answering during the run."""


async def _scrape(urls: Mapping[str, str], *, required: bool = True) -> dict[str, scrape.Samples]:
    """Every `/metrics` now. `required`: a service that does not answer, after `SCRAPE_TRIES`
    tries, means the stack went away (StackDown); otherwise it is left out of this sample."""

    async def one(name: str, url: str) -> tuple[str, scrape.Samples | None]:
        for attempt in range(SCRAPE_TRIES if required else 1):
            try:
                body, _ = await asyncio.to_thread(scrape.fetch, f"{url}/metrics")
                return name, scrape.parse(body)
            except OSError as exc:
                if required and attempt == SCRAPE_TRIES - 1:
                    raise StackDown(f"{name} {url}/metrics is not reachable ({exc})") from None
        return name, None

    found = await asyncio.gather(*(one(n, u) for n, u in urls.items()))
    return {name: samples for name, samples in found if samples is not None}


async def _sample(urls: Mapping[str, str], windows: Mapping[str, scrape.Window]) -> None:
    """Gauges and a timed `/healthz` of every service, once a second, until cancelled."""
    while True:
        await asyncio.sleep(SAMPLE_EVERY)
        for name, samples in (await _scrape(urls, required=False)).items():
            windows[name].gauges.append(samples)
        for name, url in urls.items():
            try:
                _, seconds = await asyncio.to_thread(scrape.fetch, f"{url}/healthz")
            except OSError:
                continue  # lost under load: the scrape at the step's end says if it is down
            windows[name].lags.append(seconds)


def client_summary(
    results: Sequence[Result], dropped: int, rate: float, seconds: float, slo: knee.Slo
) -> dict[str, Any]:
    """The client's view of one step: rates per second, latency in ms from the scheduled send."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in results:
        counts[r.outcome] += 1
    served = [r.latency * 1000 for r in results if r.outcome != SHED]
    good = sum(1 for r in results if r.outcome in (OK, BUSINESS) and r.latency * 1000 <= slo.p99_ms)
    routes: dict[str, Any] = {}
    for kind in sorted({r.kind for r in results}):
        mine = [r for r in results if r.kind == kind]
        routes[kind] = {
            "rate": len(mine) / seconds,
            "ok_rate": sum(1 for r in mine if r.outcome in (OK, BUSINESS)) / seconds,
            "p99_ms": scrape.percentile(
                (r.latency * 1000 for r in mine if r.outcome != SHED), 0.99
            ),
        }
    return {
        "offered": rate,
        "seconds": seconds,
        "achieved": len(results) / seconds,
        "goodput": good / seconds,
        "failures": (counts[ERROR] + counts[SHED] + dropped) / seconds,
        "dropped": dropped,
        "outcomes": counts,
        "p50_ms": scrape.percentile(served, 0.50),
        "p99_ms": scrape.percentile(served, 0.99),
        "lag_p99_ms": scrape.percentile((r.lag * 1000 for r in results), 0.99),
        "routes": routes,
    }


async def run_step(
    rate: float,
    chosen: Knobs,
    urls: Mapping[str, str],
    traces: Path | None,
    *,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Offer `rate` for `seconds` (default STEP_DURATION); the step's client and server figures."""
    seconds = seconds or chosen.step_seconds
    parts = urlsplit(chosen.host)
    port = parts.port or 80
    mix = journey.journey_mix(
        {"host": f"{parts.hostname}:{port}", "keys": chosen.keys, "dye": chosen.dye}
    )
    generator = Generator(
        parts.hostname or "127.0.0.1",
        port,
        mix,
        connections=chosen.connections,
        drain_timeout=DRAIN_SECONDS,
    )
    windows = {name: scrape.Window() for name in urls}
    offsets = scrape.trace_offsets(traces, urls) if traces else {}
    for name, samples in (await _scrape(urls)).items():
        windows[name].first = samples
    cpu_before = host_cpu()
    started_at, started = time.time(), time.monotonic()
    sampler = asyncio.create_task(_sample(urls, windows))
    try:
        await generator.open_loop(time.monotonic(), rate, seconds)
    finally:
        sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    for name, samples in (await _scrape(urls)).items():
        windows[name].last = samples
    wall = time.monotonic() - started
    cpu_after = host_cpu()
    if traces:
        for name, spans in scrape.read_statements(traces, offsets).items():
            windows[name].statements = [s for s in spans if s[0] >= started_at]
    if generator.results and all(r.status == 0 for r in generator.results):
        raise StackDown(f"no answer at all from {chosen.host} at {rate:.0f}/s")
    step = client_summary(generator.results, generator.dropped, rate, seconds, chosen.slo)
    step["started_at"] = started_at
    step["services"] = {name: w.summary(wall) for name, w in windows.items()}
    step["host_cpu"] = None
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        step["host_cpu"] = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
    return step


def progress(steps: Sequence[Mapping[str, Any]], slo: knee.Slo) -> str:
    """The line printed after the last of `steps`, with the verdict on it so far."""
    step = steps[-1]
    p50, p99 = step["p50_ms"], step["p99_ms"]
    failed = step["failures"] / step["offered"]
    found = knee.find_knee([knee.point(s) for s in steps], slo)
    verdict = "sustained"
    if found.saturated_at is not None and step["offered"] >= found.saturated_at:
        verdict = "saturated: " + ", ".join(found.reasons)
        if step["offered"] > found.saturated_at:
            verdict = "above the knee"
    cpu = step["host_cpu"]
    return (
        f"step {len(steps)}: offered {step['offered']:7.1f}/s  achieved {step['achieved']:7.1f}/s  "
        f"goodput {step['goodput']:7.1f}/s  p50 {_ms(p50)}  p99 {_ms(p99)}  "
        f"errors+shed+dropped {failed:.1%}  host CPU {'-' if cpu is None else f'{cpu:.0%}'}  "
        f"[{verdict}]"
    )


def _ms(value: float | None) -> str:
    return "   -  " if value is None else f"{value:5.0f} ms"


async def climb(
    chosen: Knobs, urls: Mapping[str, str], traces: Path | None
) -> list[dict[str, Any]]:
    """Steps until the knee is located or the next step would pass the time cap."""
    steps: list[dict[str, Any]] = []
    deadline = time.monotonic() + chosen.time_cap
    # Connections, caches and lazily built clients warm up on traffic nobody measures.
    await run_step(chosen.start_rps, chosen, urls, None, seconds=WARMUP_SECONDS)
    while True:
        rate = knee.next_rate(
            [knee.point(s) for s in steps], chosen.slo, start=chosen.start_rps, factor=chosen.factor
        )
        if rate is None:
            break
        if time.monotonic() + chosen.step_budget > deadline:
            print(f"capacity: time cap {chosen.time_cap:g} s reached", flush=True)
            break
        step = await run_step(rate, chosen, urls, traces)
        steps.append(step)
        print(progress(steps, chosen.slo), flush=True)
        await asyncio.sleep(SETTLE_SECONDS)
    return steps


def report_folder(root: Path) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    folder = root / f"capacity-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = root / f"capacity-{stamp}-{suffix}"
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    env = dict(os.environ)
    try:
        chosen = parse(env, args)
    except knobs.KnobError as exc:
        print(f"capacity: {exc}", flush=True)
        print("knobs:\n" + "\n".join(f"  {k:<20} {v}" for k, v in VALID.items()), flush=True)
        return EXIT_KNOB
    unreachable = probe(chosen.host)
    if unreachable:
        print(
            f"capacity: the stack is not up: {unreachable}. Start it with `make up` (or set HOST)."
        )
        return EXIT_UNREACHABLE
    urls = targets(chosen.host, env)
    # `make up` traces every request into .run/traces (created with the first span).
    traces = run_folder() / "traces" if len(urls) > 1 else None
    print(
        f"capacity: {chosen.host}, journey mix open loop, steps of {chosen.step_seconds:g} s from "
        f"{chosen.start_rps:g}/s (x{chosen.factor:g}, then bisection); SLO p99 "
        f"{chosen.slo.p99_ms:g} ms, failure budget {chosen.slo.failure_budget:.1%}; time cap "
        f"{chosen.time_cap:g} s; metrics from {', '.join(urls)}",
        flush=True,
    )
    started = time.time()
    try:
        steps = run_async(climb(chosen, urls, traces))
    except StackDown as exc:
        print(f"capacity: the stack went away during the run: {exc}. No report written.")
        return EXIT_UNREACHABLE
    if len(steps) < 2:
        print("capacity: fewer than two steps ran; no report written.")
        return EXIT_UNREACHABLE
    run = {
        "host": chosen.host,
        "started_at": started,
        "duration_s": time.time() - started,
        "slo": {"p99_ms": chosen.slo.p99_ms, "failure_budget": chosen.slo.failure_budget},
        "headroom": chosen.headroom,
        "target_rps": chosen.target_rps,
        "step_seconds": chosen.step_seconds,
        "time_cap_s": chosen.time_cap,
        "dye": chosen.dye,
        "uptime": "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "database": capacity_report.database_kind(env),
        "max_connections": capacity_report.max_connections(env),
    }
    folder = report_folder(chosen.reports)
    partial = folder.with_name(f".{folder.name}.partial")
    partial.mkdir(parents=True)
    try:
        result = capacity_report.write(partial, steps, run)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(folder)
    print("\n" + result.headline)
    print(f"report: {folder}/report.md  recommendations: {folder}/recommendations.json")
    if chosen.apply and not result.env:
        print("capacity: APPLY=1 but nothing to apply (no sustained step); .env left alone")
    elif chosen.apply:
        written = capacity_report.apply_env(REPO / ".env", result.env)
        print(f"capacity: APPLY=1 wrote {len(result.env)} settings to {written}")
    return 0


def run_async(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
