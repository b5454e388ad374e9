"""`make canary` and `make rollback`: a canary release of one service on the local stack.

    SERVICE=payment [VERSION=] [CANARY_ENV='PAYMENT_FAULT_LATENCY_MS=300'] [STEPS=2,10,25,50,100]
    [STEP_SECONDS=30] [LOAD=1] python infra/local/canary.py run
    SERVICE=payment python infra/local/canary.py rollback

`run` starts a canary of SERVICE from the working tree on a free port (its own version and
environment, CANARY_ENV applied to it alone), waits until it is ready, registers its route at
0 % through the gateway's admin API (`/admin/canary/{service}`; every caller of the service
follows it), then steps the weight. At each step it judges the canary against stable over the
same window (infra/local/canary_stats.py) from each instance's JSON access log (one line per
request with `latency_ms` and `status`, canary and stable in separate files: per-request
samples, which the rank test and the error test need and the /metrics histograms only give as
buckets) and from each instance's /metrics (GC collections, RSS, requests in flight).

- A step's window starts once the new weight has reached every caller (one poll interval).
  Error and latency are also checked every second at a stricter alpha, so a bad canary is
  stopped early in its step.
- Too few requests on either side is "not enough traffic": the step is extended by its
  length, at most twice; still too few, the canary is rolled back (never a silent pass).
- The canary process dying is a rollback at once.
- Rollback: route removed, then (once every caller follows) the canary is stopped; webhook
  `canary_rolled_back`; exit 1.
- Promotion: the canary takes 100 %; once every caller follows, the old stable is stopped
  (uvicorn drains what it holds), an instance of the new version (the canary's version and
  environment) starts on the stable port; when it is ready the route is removed (every call
  back to the stable port), then the canary drains and stops. No call is ever routed to a
  process that is not serving. Webhook `canary_promoted`; exit 0.

Each run writes `.run/canary/<timestamp>/` (result.json, report.md, canary.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import canary_report
import canary_stats
import instances
from canary_load import Load
from canary_stats import FAIL, NOT_ENOUGH, PASS, Side, Thresholds, early_failure, judge

from infra.manifest import Service, load

REPO = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("STACK_RUN_DIR") or REPO / ".run").resolve()
KNOBS = ("SERVICE", "VERSION", "CANARY_ENV", "STEPS", "STEP_SECONDS", "LOAD")
DEFAULT_STEPS = "2,10,25,50,100"
#: A route change reaches every process within one poll (0.5 s); this leaves it room.
PROPAGATION_SECONDS = 1.5
MAX_EXTENSIONS = 2
#: Seconds between two scrapes of an instance's /metrics during a step.
SCRAPE_EVERY = 3
_VERSION = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
_ENV_ENTRY = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
QUIET = ("/healthz", "/readyz", "/metrics", "/internal/faults")


class KnobError(ValueError):
    """A knob has a value it cannot take; the message lists what it can."""


def say(message: str) -> None:
    print(message, flush=True)


# --- knobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    service: Service
    version: str
    env: dict[str, str]
    steps: tuple[float, ...]
    step_seconds: float
    load: bool
    raw_env: str = ""


def _service(environ: Mapping[str, str]) -> Service:
    manifest = load()
    callable_ = [s.name for s in manifest if manifest.callers_of(s.name)]
    name = environ.get("SERVICE", "").strip()
    if name not in callable_:
        raise KnobError(
            f"SERVICE={name!r}: a canary needs a service other services call; "
            f"valid: {', '.join(callable_)}"
        )
    return manifest.get(name)


def parse_plan(environ: Mapping[str, str]) -> Plan:
    """The run's plan from the knobs; `KnobError` names the knob and its valid values."""
    service = _service(environ)
    raw_steps = environ.get("STEPS", "").strip() or DEFAULT_STEPS
    try:
        steps = tuple(float(s) for s in raw_steps.split(","))
    except ValueError:
        steps = ()
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise KnobError(
            f"STEPS={raw_steps!r}: comma-separated increasing percentages within (0, 100], "
            f"fractions allowed; valid: e.g. {DEFAULT_STEPS} or 0.5,2,100"
        )
    raw_seconds = environ.get("STEP_SECONDS", "").strip() or "30"
    try:
        step_seconds = float(raw_seconds)
    except ValueError:
        step_seconds = -1.0
    if not 1 <= step_seconds <= 3600:
        raise KnobError(f"STEP_SECONDS={raw_seconds!r}: seconds per step; valid: 1..3600")
    raw_load = environ.get("LOAD", "").strip() or "1"
    if raw_load not in ("0", "1"):
        raise KnobError(f"LOAD={raw_load!r}: valid: 1 (background traffic) or 0 (none)")
    raw_env = environ.get("CANARY_ENV", "").strip()
    env: dict[str, str] = {}
    for entry in raw_env.split():
        match = _ENV_ENTRY.match(entry)
        if match is None or not match.group(1).startswith(f"{service.prefix}_"):
            raise KnobError(
                f"CANARY_ENV entry {entry!r}: space-separated NAME=value of the service's own "
                f"settings; valid: {service.prefix}_* (e.g. {service.prefix}_FAULT_LATENCY_MS=300)"
            )
        if match.group(1) in (f"{service.prefix}_PORT", f"{service.prefix}_VERSION"):
            raise KnobError(f"CANARY_ENV: {match.group(1)} is set by the runner; use VERSION=")
        env[match.group(1)] = match.group(2)
    version = environ.get("VERSION", "").strip() or _default_version(service)
    if not _VERSION.match(version):
        raise KnobError(f"VERSION={version!r}: valid: 1-64 characters of A-Z a-z 0-9 . _ + -")
    return Plan(service, version, env, steps, step_seconds, raw_load == "1", raw_env)


def _default_version(service: Service) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version(service.name)
    except PackageNotFoundError:
        base = "0"
    return f"{base}+canary.{time.strftime('%Y%m%d%H%M%S')}"


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    """The running stack as the runner needs it: the gateway's admin API, the instances."""

    service: Service
    stable: instances.Instance
    launch: instances.Launch
    gateway: str
    admin_token: str
    api_key: str
    webhook: str | None

    @classmethod
    def find(cls, service: Service) -> Stack:
        manifest = load()
        gateway = manifest.gateway
        pids = {s.name: instances.read_pid(RUN / "pids" / f"{s.name}.pid") for s in manifest}
        down = [n for n, pid in pids.items() if pid is None or not instances.is_alive(pid, n)]
        if down:
            raise KnobError(
                f"the stack is not running ({', '.join(down)} down under {RUN}); `make up` first"
            )
        launch = instances.Launch.of(pids[service.name] or 0)
        gateway_env = instances.Launch.of(pids[gateway.name] or 0).env
        port = int(launch.env.get(f"{service.prefix}_PORT", service.port))
        gateway_port = int(gateway_env.get(f"{gateway.prefix}_PORT", gateway.port))
        keys = gateway_env.get(f"{gateway.prefix}_API_KEYS", "")
        webhook = os.environ.get("CANARY_WEBHOOK_URL") or next(
            (
                env[f"{s.prefix}_BREAKER_WEBHOOK_URL"]
                for s in (*manifest.callers_of(service.name), service)
                for env in (os.environ, instances.Launch.of(pids[s.name] or 0).env)
                if env.get(f"{s.prefix}_BREAKER_WEBHOOK_URL")
            ),
            None,
        )
        return cls(
            service=service,
            stable=instances.instance(RUN, service.name, service.module, port),
            launch=launch,
            gateway=f"http://{instances.HOST}:{gateway_port}",
            admin_token=gateway_env.get(f"{gateway.prefix}_ADMIN_TOKEN", "dev-admin-token"),
            api_key=keys.split(",")[0].split(":")[0].strip() or "demo-key",
            webhook=webhook,
        )

    def canary(self, port: int = 0) -> instances.Instance:
        s = self.service
        return instances.instance(RUN, s.name, s.module, port, "canary")

    async def route(self, client: httpx.AsyncClient, body: dict[str, Any] | None) -> None:
        """PUT the canary route (None: DELETE it), through the gateway's admin API."""
        url = f"{self.gateway}/admin/canary/{self.service.name}"
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        if body is None:
            response = await client.delete(url, headers=headers)
        else:
            response = await client.put(url, headers=headers, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"gateway refused the route: {response.status_code} {response.text}")


# --- measuring ------------------------------------------------------------------------------


class LogTail:
    """New access lines of one instance's log since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> list[tuple[float, float, int]]:
        """(unix time, latency ms, status) of each new access line of a judged route."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        lines = []
        for raw in chunk[:end].splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("logger") != "servicekit.access" or "latency_ms" not in entry:
                continue
            if str(entry.get("path", "")).startswith(QUIET):
                continue
            at = datetime.fromisoformat(entry["ts"]).timestamp()
            lines.append((at, float(entry["latency_ms"]), int(entry["status"])))
        return lines


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The runtime figures of one instance: GC collections, RSS, in flight, limit."""
    wanted = {
        "python_gc_collections_total": "gc",
        "process_resident_memory_bytes": "rss",
        "http_server_active_requests": "in_flight",
        "servicekit_concurrency_limit": "limit",
    }
    figures = dict.fromkeys(wanted.values(), 0.0)
    try:
        response = await client.get(f"{url}/metrics", timeout=2.0)
    except httpx.HTTPError:
        return figures
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in wanted:
                figures[wanted[sample.name]] += sample.value
    return figures


@dataclass
class Window:
    """One step's measurements, canary and stable over the same seconds."""

    canary: Side = field(default_factory=Side)
    stable: Side = field(default_factory=Side)
    samples: list[canary_report.Sample] = field(default_factory=list)

    def add(self, side: str, lines: list[tuple[float, float, int]]) -> None:
        target = self.canary if side == "canary" else self.stable
        for at, latency, status in lines:
            target.latencies_ms.append(latency)
            target.errors += status >= 500
            self.samples.append((at, side, latency, status >= 500))


# --- the run --------------------------------------------------------------------------------


class Runner:
    def __init__(self, plan: Plan, stack: Stack, limits: Thresholds) -> None:
        self.plan = plan
        self.stack = stack
        self.limits = limits
        self.canary = stack.canary(instances.free_port())
        self.samples: list[canary_report.Sample] = []
        self.steps: list[dict[str, Any]] = []
        #: The last stable window with enough requests: what a 100 % step is compared with.
        self.baseline: Side | None = None

    async def run(self) -> tuple[str, str]:
        """(outcome, reason)."""
        plan, stack = self.plan, self.stack
        say(f"Canary of {plan.service.name} {plan.version} on port {self.canary.port}")
        if plan.env:
            say(f"  canary environment: {plan.raw_env}")
        self.canary.start(
            stack.launch,
            {
                f"{plan.service.prefix}_VERSION": plan.version,
                f"{plan.service.prefix}_PORT": str(self.canary.port),
                f"{plan.service.prefix}_ACCESS_LOG_SAMPLE": "1.0",
                **plan.env,
            },
        )
        if not await asyncio.to_thread(self.canary.wait_ready):
            self.canary.stop()
            return "rolled_back", "the canary did not become ready"
        say(f"  ready: {self.canary.url}")
        async with httpx.AsyncClient(timeout=10.0) as client:
            await stack.route(client, self._route(0.0, "registered"))
            load = Load(stack.gateway, stack.api_key) if plan.load else None
            task = asyncio.create_task(load.run()) if load else None
            try:
                outcome, reason = await self._steps(client)
                if outcome == PASS:
                    await self._promote(client)
                    return "promoted", reason
                await self._roll_back(client)
                return "rolled_back", reason
            finally:
                if load is not None and task is not None:
                    load.stop()
                    await asyncio.gather(task, return_exceptions=True)
                    self.client_seen = load.answers

    client_seen: list[Any] = []

    def _route(self, weight: float, step: str) -> dict[str, Any]:
        return {
            "upstream": self.canary.url,
            "weight": weight,
            "version": self.plan.version,
            "step": step,
        }

    async def _steps(self, client: httpx.AsyncClient) -> tuple[str, str]:
        total = len(self.plan.steps)
        for index, weight in enumerate(self.plan.steps, start=1):
            label = f"{index}/{total}"
            await self.stack.route(client, self._route(weight, label))
            await asyncio.sleep(PROPAGATION_SECONDS)
            verdict, reason = await self._step(client, index, weight)
            if verdict != PASS:
                return FAIL, f"step {label} ({weight:g} %): {reason}"
        return PASS, "every step passed"

    async def _step(self, client: httpx.AsyncClient, index: int, weight: float) -> tuple[str, str]:
        canary_log, stable_log = LogTail(self.canary.log_file), LogTail(self.stack.stable.log_file)
        before = {
            "canary": await scrape(client, self.canary.url),
            "stable": await scrape(client, self.stack.stable.url),
        }
        window = Window()
        # At 100 % the stable instance gets no calls: the canary is judged against the stable
        # of the last step that had enough of them.
        frozen = weight >= 100 and self.baseline is not None
        if frozen and self.baseline is not None:
            window.stable = self.baseline
            say(
                f"  step {index}: stable has no traffic at 100 %; "
                "compared with the last stable window"
            )
        started = time.time()
        deadline = time.monotonic() + self.plan.step_seconds
        extensions = 0
        verdict, reason, checks = NOT_ENOUGH, "", []
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            window.add("canary", await asyncio.to_thread(canary_log.read))
            stable_lines = await asyncio.to_thread(stable_log.read)
            sides = [("canary", self.canary.url)]
            if not frozen:
                window.add("stable", stable_lines)
                sides.append(("stable", self.stack.stable.url))
            # A scrape allocates too: every few seconds, so it stays a small share of the
            # canary's GC count (it gets a small share of the requests).
            at_end = time.monotonic() >= deadline
            for side, url in sides if ticks % SCRAPE_EVERY == 0 or at_end else ():
                now = await scrape(client, url)
                target = window.canary if side == "canary" else window.stable
                target.max_in_flight = max(target.max_in_flight, now["in_flight"])
                target.gc_collections = now["gc"] - before[side]["gc"]
                target.rss_bytes = now["rss"]
                target.concurrency_limit = now["limit"]
            if not self.canary.alive():
                verdict, reason = FAIL, "the canary process died"
                break
            early = early_failure(window.canary, window.stable, self.limits)
            if early is not None:
                verdict, reason, checks = FAIL, f"{early.name}: {early.detail}", [early]
                break
            if time.monotonic() < deadline:
                continue
            verdict, checks = judge(window.canary, window.stable, self.limits)
            if verdict == NOT_ENOUGH and extensions < MAX_EXTENSIONS:
                extensions += 1
                deadline += self.plan.step_seconds
                say(f"  step {index}: not enough traffic yet; extended ({extensions}/2)")
                continue
            failing = [c for c in checks if c.verdict != PASS]
            reason = "; ".join(f"{c.name}: {c.verdict}: {c.detail}" for c in failing)
            break
        if window.stable.requests >= self.limits.min_requests:
            self.baseline = window.stable
        self._record(index, weight, started, window, verdict, reason, checks)
        return verdict, reason or "passed"

    def _record(
        self,
        index: int,
        weight: float,
        started: float,
        window: Window,
        verdict: str,
        reason: str,
        checks: list[Any],
    ) -> None:
        c, s = window.canary, window.stable
        figures = {
            "canary_requests": c.requests,
            "canary_errors": c.errors,
            "stable_requests": s.requests,
            "stable_errors": s.errors,
            "canary_p50_ms": c.percentile(50),
            "canary_p99_ms": c.percentile(99),
            "stable_p50_ms": s.percentile(50),
            "stable_p99_ms": s.percentile(99),
            "canary_gc_per_request": c.gc_collections / c.requests if c.requests else None,
            "stable_gc_per_request": s.gc_collections / s.requests if s.requests else None,
            "canary_rss_mib": c.rss_bytes / 2**20,
            "stable_rss_mib": s.rss_bytes / 2**20,
            "canary_max_in_flight": c.max_in_flight,
            "stable_max_in_flight": s.max_in_flight,
        }
        self.samples += window.samples
        self.steps.append(
            {
                "weight": weight,
                "started_at": started,
                "seconds": time.time() - started,
                "verdict": verdict,
                "reason": reason,
                "figures": figures,
                "checks": [
                    {"name": k.name, "verdict": k.verdict, "detail": k.detail, **k.figures}
                    for k in checks
                ],
            }
        )
        say(
            f"  step {index}/{len(self.plan.steps)} {weight:g} % ({time.time() - started:.1f} s): "
            f"canary n={c.requests} 5xx={c.errors} p50={c.percentile(50):.1f} "
            f"p99={c.percentile(99):.1f} ms | stable n={s.requests} 5xx={s.errors} "
            f"p50={s.percentile(50):.1f} p99={s.percentile(99):.1f} ms | "
            f"gc/req {figures['canary_gc_per_request'] or 0:.3f} vs "
            f"{figures['stable_gc_per_request'] or 0:.3f} | "
            f"rss {figures['canary_rss_mib']:.0f} vs {figures['stable_rss_mib']:.0f} MiB "
            f"-> {verdict.upper()}{': ' + reason if reason else ''}"
        )

    async def _roll_back(self, client: httpx.AsyncClient) -> None:
        say("  rolling back: route removed, canary stopped once every caller follows")
        await self.stack.route(client, None)
        await asyncio.sleep(PROPAGATION_SECONDS)
        await asyncio.to_thread(self.canary.stop)

    async def _promote(self, client: httpx.AsyncClient) -> None:
        plan, stack = self.plan, self.stack
        say("  promoting: canary at 100 %, the stable instance is replaced by the new version")
        await stack.route(client, self._route(100.0, "promoting"))
        await asyncio.sleep(PROPAGATION_SECONDS)
        await asyncio.to_thread(stack.stable.stop)
        replacement = instances.instance(
            RUN, plan.service.name, plan.service.module, stack.stable.port
        )
        replacement.start(
            stack.launch, {f"{plan.service.prefix}_VERSION": plan.version, **plan.env}
        )
        if not await asyncio.to_thread(replacement.wait_ready):
            raise RuntimeError(
                f"the new stable did not become ready; the canary keeps serving at 100 %; "
                f"see {replacement.log_file}"
            )
        await stack.route(client, None)
        await asyncio.sleep(PROPAGATION_SECONDS)
        await asyncio.to_thread(self.canary.stop)
        say(f"  {plan.service.name} {plan.version} is stable on {replacement.url}")


def notify(
    url: str | None,
    event: str,
    service: str,
    version: str,
    reason: str,
    error_rate: float,
    report: str,
) -> None:
    """POST the notice in the breaker webhook's format (downstream/webhook.py) plus `event`."""
    if not url:
        return
    payload = {
        "event": event,
        "service": service,
        "dependency": service,
        "from_state": "canary",
        "to_state": "stable" if event == "canary_promoted" else "rolled_back",
        "reason": reason,
        "failure_rate": round(error_rate * 100, 3),
        "slow_call_rate": 0.0,
        "at": datetime.now(UTC).isoformat(),
        "recovered": event == "canary_promoted",
        "transitions": 1,
        "version": version,
        "report": report,
    }
    for attempt in range(3):
        try:
            response = httpx.post(url, json=payload, timeout=2.0)
            if response.is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5 * 2**attempt)
    say(f"  webhook {url} did not accept the notice")


def cmd_run() -> int:
    try:
        plan = parse_plan(os.environ)
        stack = Stack.find(plan.service)
    except KnobError as exc:
        say(f"make canary: {exc}\nknobs: {', '.join(KNOBS)}")
        return 2
    if stack.canary().pid is not None and stack.canary().alive():
        say(f"a canary of {plan.service.name} is already running; `make rollback` first")
        return 2
    canary_stats.warm_up()
    runner = Runner(plan, stack, Thresholds())
    started = time.time()
    outcome, reason = asyncio.run(runner.run())
    directory = RUN / "canary" / time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    answers = runner.client_seen
    result = {
        "outcome": outcome,
        "reason": reason,
        "service": plan.service.name,
        "version": plan.version,
        "canary_env": plan.raw_env,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "seconds": time.time() - started,
        "steps": runner.steps,
        "client": {
            "requests": len(answers),
            "server_errors": sum(a.status >= 500 for a in answers),
            "no_answer": sum(a.status == 0 for a in answers),
        }
        if answers
        else None,
    }
    canary_report.write(directory, result, runner.samples)
    last = runner.steps[-1]["figures"] if runner.steps else {}
    rate = last.get("canary_errors", 0) / max(1, last.get("canary_requests", 0))
    event = "canary_promoted" if outcome == "promoted" else "canary_rolled_back"
    notify(stack.webhook, event, plan.service.name, plan.version, reason, rate, str(directory))
    say(f"{outcome.upper()}: {reason}\nreport: {directory}/report.md")
    return 0 if outcome == "promoted" else 1


def cmd_rollback() -> int:
    try:
        service = _service(os.environ)
        stack = Stack.find(service)
    except KnobError as exc:
        say(f"make rollback: {exc}\nknobs: SERVICE")
        return 2

    async def roll_back() -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            await stack.route(client, None)
        await asyncio.sleep(PROPAGATION_SECONDS)

    asyncio.run(roll_back())
    canary = stack.canary()
    had = canary.pid is not None
    canary.stop()
    say(
        f"{service.name}: route removed, every call goes to stable"
        + ("; canary stopped" if had else "; no canary was running")
    )
    notify(stack.webhook, "canary_rolled_back", service.name, "", "manual rollback", 0.0, "")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "run":
        return cmd_run()
    if command == "rollback":
        return cmd_rollback()
    say("usage: canary.py run | rollback (knobs from the environment: " + ", ".join(KNOBS) + ")")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
