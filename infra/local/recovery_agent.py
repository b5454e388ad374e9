"""The recovery agent: the local stack's breaker webhook receiver, and the runner of its runbook.

`make up` runs it under uvicorn (infra/local/recovery.py) and points every service's
`<P>_BREAKER_WEBHOOK_URL` at `POST /hooks/breaker`. For each notice (the kit's breaker notices,
servicekit/downstream/webhook.py, and the `canary_*` ones of `make canary`):

1. it forwards the notice, in the background with retries, to the user's own webhook: a
   breaker notice to the `<P>_BREAKER_WEBHOOK_URL` of the service whose breaker it is, any
   other notice to those of the service and its callers (where `make canary` sends its own);
2. a breaker that opened starts a recovery of the dependency: the runbook
   (runbooks/breaker_open.py, `RECOVERY_RUNBOOK` to use another file) runs with the actions
   of recovery_ops.Operations.

Idempotent: one recovery per service at a time. An open notice is folded into the service's
recovery if that one is running, or finished after the breaker opened (the notice's `at`):
two callers' breakers, a retried delivery, a flap, all make one recovery. Each recovery writes
`recovery/<time>-<service>.json` (its steps, with seconds since the breaker opened);
`GET /recoveries` lists them, `GET /metrics` counts everything.

Settings (environment): `RECOVERY_VERIFY_SECONDS` (30: how long a breaker gets to close after
an action), `RECOVERY_RUNBOOK`, `STACK_RUN_DIR`. No credential guards the hook: the agent
listens on the loopback only, as the kit's webhook sends no secret; the most a caller can do
is make it restart or replace an instance of a service of the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from recovery_notices import Forwarder, Notice, NoticeError, parse_notice
from recovery_ops import Operations, RecoveryMetrics, Stack, logger

from infra.manifest import load

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUNBOOK = Path(__file__).parent / "runbooks" / "breaker_open.py"
MAX_BODY_BYTES = 64 * 1024
REMEMBER_EVERY_SECONDS = 2.0


@dataclass
class Recovery:
    """One recovery of one service: from the first open notice to the runbook's outcome."""

    service: str
    callers: set[str]
    opened_at: float
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    outcome: str = "running"
    duplicates: int = 0
    ops: Operations | None = None

    def to_json(self) -> dict[str, Any]:
        end = self.finished_at

        def iso(at: float | None) -> str | None:
            return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()

        return {
            "service": self.service,
            "callers": sorted(self.callers),
            "outcome": self.outcome,
            "opened_at": iso(self.opened_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(end),
            "seconds": None if end is None else round(end - self.opened_at, 2),
            "duplicates": self.duplicates,
            "steps": [s.to_json() for s in self.ops.steps] if self.ops else [],
        }


Runbook = Callable[[Operations], Awaitable[str]]


def load_runbook(path: Path) -> Runbook:
    """The `run(ops)` coroutine function of the runbook file at `path`."""
    spec = importlib.util.spec_from_file_location(f"runbook_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the runbook {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if not asyncio.iscoroutinefunction(run):
        raise RuntimeError(f"the runbook {path} must define `async def run(ops) -> str`")
    return run


class Agent:
    """Receives notices, forwards them, runs one recovery per failing service at a time."""

    def __init__(
        self,
        stack: Stack,
        runbook: Runbook,
        client: httpx.AsyncClient,
        *,
        targets: Mapping[str, str],
        verify_seconds: float,
    ) -> None:
        self.stack = stack
        self.runbook = runbook
        self.client = client
        #: The user's webhook per service (their `<P>_BREAKER_WEBHOOK_URL`).
        self.targets = dict(targets)
        self.verify_seconds = verify_seconds
        self.metrics = RecoveryMetrics()
        self.forwarder = Forwarder(client, self.metrics)
        self.recoveries: dict[str, Recovery] = {}
        self.history: list[Recovery] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], client: httpx.AsyncClient) -> Agent:
        manifest = load()
        run = Path(environ.get("STACK_RUN_DIR") or REPO / ".run").resolve()
        targets = {
            s.name: url for s in manifest if (url := environ.get(f"{s.prefix}_BREAKER_WEBHOOK_URL"))
        }
        runbook = Path(environ.get("RECOVERY_RUNBOOK") or DEFAULT_RUNBOOK)
        return cls(
            Stack(run, environ, manifest),
            load_runbook(runbook),
            client,
            targets=targets,
            verify_seconds=float(environ.get("RECOVERY_VERIFY_SECONDS") or 30),
        )

    def forward(self, notice: dict[str, Any]) -> None:
        """Send `notice` where the user would have received it without the agent."""
        if notice.get("event") is None:
            names = [str(notice.get("service"))]
        else:
            dependency = str(notice.get("dependency"))
            names = [s.name for s in self.stack.manifest.callers_of(dependency)] + [dependency]
        for url in dict.fromkeys(self.targets[n] for n in names if n in self.targets):
            self.forwarder.send(url, notice)

    def receive(self, notice: Notice) -> str:
        """Forward `notice`; start a recovery if a breaker opened. Returns what was done."""
        kind = "breaker" if notice.event is None else notice.event.split("_")[0]
        self.metrics.notices.labels(kind if kind in ("breaker", "canary") else "other").inc()
        self.forward(notice.body)
        if not notice.opened:
            return "forwarded"
        current = self.recoveries.get(notice.dependency)
        if current is not None and (
            current.finished_at is None or notice.at <= current.finished_at
        ):
            current.duplicates += 1
            if notice.service in self.stack.manifest.names and current.finished_at is None:
                current.callers.add(notice.service)
            self.metrics.duplicates.labels(notice.dependency).inc()
            logger.info(
                "%s -> %s open again: part of the recovery %s",
                notice.service,
                notice.dependency,
                current.outcome,
            )
            return "duplicate"
        callers = {notice.service} & set(self.stack.manifest.names)
        recovery = Recovery(notice.dependency, callers, notice.at)
        self.recoveries[notice.dependency] = recovery
        task = asyncio.create_task(self._recover(recovery), name=f"recover-{notice.dependency}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return "started"

    async def _recover(self, recovery: Recovery) -> None:
        name = recovery.service
        recovery.ops = Operations(
            self.stack,
            self.stack.manifest.get(name),
            recovery.callers,
            opened_at=recovery.opened_at,
            client=self.client,
            metrics=self.metrics,
            notify=self.forward,
            verify_seconds=self.verify_seconds,
        )
        self.metrics.running.labels(name).inc()
        logger.warning("breaker of %s open in %s: runbook started", name, recovery.callers)
        try:
            recovery.outcome = await self.runbook(recovery.ops)
        except asyncio.CancelledError:
            recovery.outcome = "cancelled"  # the agent is stopping (`make down`)
            raise
        except Exception:
            logger.exception("the runbook failed on %s", name)
            recovery.outcome = "error"
        finally:
            recovery.finished_at = time.time()
            self.metrics.running.labels(name).dec()
            self.metrics.recoveries.labels(name, recovery.outcome).inc()
            self.metrics.seconds.labels(name, recovery.outcome).observe(
                recovery.finished_at - recovery.opened_at
            )
            self.history.append(recovery)
            self._write(recovery)
        logger.warning(
            "recovery of %s: %s, %.1fs after the breaker opened",
            name,
            recovery.outcome,
            recovery.finished_at - recovery.opened_at,
        )

    def _write(self, recovery: Recovery) -> None:
        stamp = datetime.fromtimestamp(recovery.started_at).strftime("%Y%m%d-%H%M%S.%f")[:-3]
        path = self.stack.run / "recovery" / f"{stamp}-{recovery.service}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recovery.to_json(), indent=2) + "\n")

    async def remember(self) -> None:
        while True:
            await asyncio.to_thread(self.stack.remember)
            await asyncio.sleep(REMEMBER_EVERY_SECONDS)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.forwarder.aclose()


# --- HTTP ------------------------------------------------------------------------------------


def problem(status: int, title: str, detail: str) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status, media_type="application/problem+json")


async def receive_notice(request: Request) -> Response:
    agent: Agent = request.state.agent
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return problem(413, "Payload too large", f"a notice is at most {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        return problem(400, "Malformed JSON", "the body must be a JSON notice")
    try:
        notice = parse_notice(body, agent.stack.manifest)
    except NoticeError as exc:
        return problem(422, "Invalid notice", str(exc))
    return JSONResponse({"recovery": agent.receive(notice)}, 202)


async def list_recoveries(request: Request) -> Response:
    agent: Agent = request.state.agent
    running = [r for r in agent.recoveries.values() if r.finished_at is None]
    return JSONResponse({"recoveries": [r.to_json() for r in (*agent.history, *running)]})


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    agent: Agent = request.state.agent
    return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
    from servicekit.telemetry.logs import configure_logging

    configure_logging("recovery")
    async with httpx.AsyncClient(timeout=5.0) as client:
        agent = Agent.from_environ(os.environ, client)
        remember = asyncio.create_task(agent.remember(), name="remember-launches")
        logger.info(
            "recovery agent ready: runbook %s, forwarding to %s",
            getattr(agent.runbook, "__module__", "?"),
            sorted(set(agent.targets.values())) or "nobody",
        )
        try:
            yield {"agent": agent}
        finally:
            remember.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await remember
            await agent.aclose()


def create_app() -> Starlette:
    """The agent's ASGI app (uvicorn --factory)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return Starlette(
        routes=[
            Route("/hooks/breaker", receive_notice, methods=["POST"]),
            Route("/recoveries", list_recoveries, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
