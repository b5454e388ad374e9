"""What a recovery runbook can do on the local stack, one method per action.

`Operations` is what `runbooks/breaker_open.py` receives: restart the failing instance, read
the callers' breakers, start a standby and route every caller to it, notify. Each action is
logged (`recovery` logger, JSON lines in `logs/recovery.log`), counted
(`recovery_actions_total{service,action,outcome}` on the agent's /metrics) and recorded as a
step of the recovery's report, with the seconds since the breaker opened.

- An instance is restarted the way it was started: command line, environment and working
  directory read from /proc (infra/local/instances.py), or, if it is already dead, from the
  agent's last look at it (`Stack.remember`, every few seconds).
- A standby is started from the same launch, minus the service's `<P>_FAULT_*` settings, on a
  free port (`pids/<service>-standby.pid`, `logs/<service>-standby.log`; `make down` stops it),
  and every caller is routed to it at 100 % through the canary route (`PUT
  /admin/canary/{service}` on the gateway; the route is persisted, so it survives restarts).
- "The breaker closed" is read from each caller's /metrics (`servicekit_breaker_state`); a
  probe that fails after the restart shows as a half-open -> open transition, so a restart
  that did not help is known at the first probe, not at a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import instances
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from infra.manifest import Manifest, Service

logger = logging.getLogger("recovery")

#: The `step` the standby's route carries: tells a standby route from a canary's.
STANDBY_STEP = "recovery: standby"
RESTART_GRACE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.25
ROUTE_PROPAGATION_SECONDS = 1.5


class RecoveryMetrics:
    """The agent's counters, on its own registry (its /metrics)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.notices = Counter(
            "recovery_notices",
            "Notices received, by kind (breaker, canary, other).",
            ["kind"],
            registry=r,
        )
        self.forwarded = Counter(
            "recovery_forwarded",
            "Notices forwarded to the user's webhooks.",
            ["outcome"],
            registry=r,
        )
        self.recoveries = Counter(
            "recovery_runs",
            "Recoveries finished, by service and outcome.",
            ["service", "outcome"],
            registry=r,
        )
        self.duplicates = Counter(
            "recovery_duplicate_opens",
            "Open notices folded into a recovery already running or done.",
            ["service"],
            registry=r,
        )
        self.actions = Counter(
            "recovery_actions",
            "Runbook actions, by service, action and outcome.",
            ["service", "action", "outcome"],
            registry=r,
        )
        self.running = Gauge(
            "recovery_running", "Recoveries running now, by service.", ["service"], registry=r
        )
        self.seconds = Histogram(
            "recovery_seconds",
            "From the breaker opening to the end of its recovery.",
            ["service", "outcome"],
            buckets=(5, 10, 20, 30, 45, 60, 90, 120, 300),
            registry=r,
        )


@dataclass
class Stack:
    """The running stack as the agent sees it: the manifest, the ports, the gateway's admin API."""

    run: Path
    environ: Mapping[str, str]
    manifest: Manifest
    #: The last launch seen of each live service, to restart one that has died since.
    launches: dict[str, instances.Launch] = field(default_factory=dict)
    #: Processes the agent started, polled so none stays a zombie.
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def port(self, name: str) -> int:
        service = self.manifest.get(name)
        return int(self.environ.get(f"{service.prefix}_PORT") or service.port)

    def url(self, name: str) -> str:
        return f"http://{instances.HOST}:{self.port(name)}"

    @property
    def gateway(self) -> str:
        return self.url(self.manifest.gateway.name)

    @property
    def admin_headers(self) -> dict[str, str]:
        token = self.environ.get(f"{self.manifest.gateway.prefix}_ADMIN_TOKEN") or "dev-admin-token"
        return {"Authorization": f"Bearer {token}"}

    def instance(self, name: str, role: str | None = None) -> instances.Instance:
        """The stable instance of `name` (role None), or its standby at the port it runs on."""
        service = self.manifest.get(name)
        found = instances.instance(self.run, name, service.module, 0, role)
        pid = found.pid
        if role is None:
            found.port = self.port(name)
        elif pid is not None and instances.is_alive(pid, service.module):
            argv = instances.Launch.of(pid).argv
            found.port = int(argv[argv.index("--port") + 1])
        return found

    def remember(self) -> None:
        """Note how every live service was started; reap children that have exited."""
        for service in self.manifest:
            with contextlib.suppress(OSError):  # it exited between the check and the read
                self.launch(service.name)
        self.children = [c for c in self.children if c.poll() is None]

    def launch(self, name: str) -> instances.Launch | None:
        """How the stable instance of `name` runs now, or ran when last seen alive."""
        stable = self.instance(name)
        pid = stable.pid
        if pid is not None and stable.alive():
            self.launches[name] = instances.Launch.of(pid)
        return self.launches.get(name)


@dataclass
class Step:
    action: str
    outcome: str
    detail: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "outcome": self.outcome,
            "detail": self.detail,
            "seconds": round(self.seconds, 2),
        }


Notify = Callable[[dict[str, Any]], None]


class Operations:
    """The actions of one recovery of `service`, whose breaker opened in `callers`."""

    def __init__(
        self,
        stack: Stack,
        service: Service,
        callers: set[str],
        *,
        opened_at: float,
        client: httpx.AsyncClient,
        metrics: RecoveryMetrics,
        notify: Notify,
        verify_seconds: float,
    ) -> None:
        self.stack = stack
        self.service = service
        self.callers = callers
        self.opened_at = opened_at
        self.client = client
        self.metrics = metrics
        self._notify = notify
        self.verify_seconds = verify_seconds
        self.steps: list[Step] = []
        self._reopened: dict[str, float] = {}

    @property
    def name(self) -> str:
        return self.service.name

    def record(self, action: str, outcome: str, detail: str) -> None:
        step = Step(action, outcome, detail, time.time() - self.opened_at)
        self.steps.append(step)
        self.metrics.actions.labels(self.name, action, outcome).inc()
        level = logging.INFO if outcome in ("ok", "sent") else logging.WARNING
        logger.log(
            level,
            "recovery of %s: %s %s (%s) at +%.1fs",
            self.name,
            action,
            outcome,
            detail,
            step.seconds,
            extra={"recovery": self.name, "action": action, "outcome": outcome},
        )

    # --- notices ------------------------------------------------------------------------------

    def notify(self, event: str, detail: str, *, recovered: bool = False) -> None:
        """Tell the user's webhooks (the breaker notice's format, plus `event` and `detail`)."""
        self._notify(
            {
                "event": event,
                "service": min(self.callers, default=self.name),
                "callers": sorted(self.callers),
                "dependency": self.name,
                "from_state": "open",
                "to_state": "closed" if recovered else "open",
                "reason": detail,
                "failure_rate": 0.0,
                "slow_call_rate": 0.0,
                "at": datetime.now(UTC).isoformat(),
                "recovered": recovered,
                "transitions": 1,
                "detail": detail,
            }
        )
        self.record("notify", "sent", f"{event}: {detail}")

    # --- routes -------------------------------------------------------------------------------

    async def route(self) -> dict[str, Any]:
        """The service's canary route as the gateway shows it (`upstream` None: no route)."""
        response = await self.client.get(
            f"{self.stack.gateway}/admin/canary/{self.name}", headers=self.stack.admin_headers
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def canary_in_progress(self) -> bool:
        """A canary route of the service exists (one that is not a standby's)."""
        route = await self.route()
        return route.get("upstream") is not None and route.get("step") != STANDBY_STEP

    async def standby_serving(self) -> bool:
        route = await self.route()
        return route.get("step") == STANDBY_STEP and route.get("weight") == 100

    # --- breakers -----------------------------------------------------------------------------

    async def _breakers(self) -> dict[str, tuple[float, float]]:
        """Per caller: (state: 0 closed, 1 half-open, 2 open; half-open -> open count)."""
        found = {}
        for caller in sorted(self.callers):
            state, reopened = 2.0, 0.0
            try:
                response = await self.client.get(f"{self.stack.url(caller)}/metrics", timeout=2.0)
                families = text_string_to_metric_families(response.text)
                for family in families:
                    for sample in family.samples:
                        if sample.labels.get("dependency") != self.name:
                            continue
                        if sample.name == "servicekit_breaker_state":
                            state = sample.value
                        elif sample.name == "servicekit_breaker_transitions_total" and (
                            sample.labels.get("from_state"),
                            sample.labels.get("to_state"),
                        ) == ("half-open", "open"):
                            reopened = sample.value
            except httpx.HTTPError:
                pass  # a caller that does not answer has not seen its breaker close
            found[caller] = (state, reopened)
        return found

    async def _mark(self) -> None:
        """From now on, a half-open -> open transition means the instance failed a probe."""
        self._reopened = {c: reopened for c, (_, reopened) in (await self._breakers()).items()}

    async def breaker_closes(self, within: float | None = None) -> bool:
        """Wait until every caller's breaker is closed (True), a probe fails or time runs out."""
        within = self.verify_seconds if within is None else within
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            breakers = await self._breakers()
            if all(state == 0 for state, _ in breakers.values()):
                self.record("breaker_closed", "ok", ", ".join(sorted(breakers)))
                return True
            failed = [c for c, (_, n) in breakers.items() if n > self._reopened.get(c, n)]
            if failed:
                self.record("breaker_closed", "failed", f"a probe failed again in {failed}")
                return False
            await asyncio.sleep(POLL_SECONDS)
        self.record("breaker_closed", "failed", f"still not closed after {within:.0f}s")
        return False

    # --- instances ----------------------------------------------------------------------------

    async def restart(self) -> bool:
        """Restart the instance that takes the calls (the standby if one serves, else stable)."""
        if await self.standby_serving():
            target = self.stack.instance(self.name, "standby")
            if target.pid is None or not target.alive():
                self.record("restart", "failed", "the standby that takes the calls is gone")
                return False
            launch: instances.Launch | None = instances.Launch.of(target.pid)
        else:
            target = self.stack.instance(self.name)
            launch = self.stack.launch(self.name)
        if launch is None:
            self.record("restart", "failed", "the agent never saw the instance running")
            return False
        began = time.monotonic()
        await asyncio.to_thread(target.stop, RESTART_GRACE_SECONDS)
        stopped = time.monotonic()
        self.stack.children.append(target.start(launch, {}))
        ready = await asyncio.to_thread(target.wait_ready, READY_TIMEOUT_SECONDS)
        self.record(
            "restart",
            "ok" if ready else "failed",
            f"{target.url} pid {target.pid}: stopped in {stopped - began:.1f}s, "
            f"{'ready' if ready else 'not ready'} {time.monotonic() - stopped:.1f}s later",
        )
        await self._mark()
        return ready

    async def switch_to_standby(self) -> bool:
        """Start a standby without the `<P>_FAULT_*` settings; route every caller to it."""
        if await self.standby_serving() and self.stack.instance(self.name, "standby").alive():
            self.record("standby", "failed", "the standby already serves; nothing left to try")
            return False
        launch = self.stack.launch(self.name)
        if launch is None:
            self.record("standby", "failed", "the agent never saw the instance running")
            return False
        old = self.stack.instance(self.name, "standby")
        await asyncio.to_thread(old.stop, RESTART_GRACE_SECONDS)
        standby = instances.instance(
            self.stack.run, self.name, self.service.module, instances.free_port(), "standby"
        )
        prefix = self.service.prefix
        base = base_environment(launch.env, prefix)
        dropped = sorted(set(launch.env) - set(base))
        began = time.monotonic()
        clean = instances.Launch(launch.argv, base, launch.cwd)
        self.stack.children.append(standby.start(clean, {f"{prefix}_PORT": str(standby.port)}))
        if not await asyncio.to_thread(standby.wait_ready, READY_TIMEOUT_SECONDS):
            await asyncio.to_thread(standby.stop, RESTART_GRACE_SECONDS)
            self.record("standby", "failed", f"not ready; see {standby.log_file}")
            return False
        self.record(
            "standby",
            "ok",
            f"{standby.url} pid {standby.pid} ready in {time.monotonic() - began:.1f}s, "
            f"without {', '.join(dropped) or 'any fault setting'}",
        )
        body = {"upstream": standby.url, "weight": 100, "step": STANDBY_STEP}
        response = await self.client.put(
            f"{self.stack.gateway}/admin/canary/{self.name}",
            headers=self.stack.admin_headers,
            json=body,
        )
        if response.status_code != 200:
            self.record("route", "failed", f"{response.status_code} {response.text[:200]}")
            return False
        self.record("route", "ok", f"every caller of {self.name} -> {standby.url} (100 %)")
        # The callers poll the route twice a second: a probe before they follow it still
        # went to the failing instance and must not count against the standby.
        await asyncio.sleep(ROUTE_PROPAGATION_SECONDS)
        await self._mark()
        return True


def base_environment(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """`env` without the service's fault injection (`<prefix>_FAULT_*`)."""
    return {k: v for k, v in env.items() if not k.startswith(f"{prefix}_FAULT_")}
