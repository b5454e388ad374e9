"""Scripted recovery when a breaker opens, on the canary tier's private stack.

`stack.py up` runs the recovery agent (infra/local/recovery_agent.py) as every service's
breaker webhook; its runbook (infra/local/runbooks/breaker_open.py) restarts the failing
instance, then, if that does not help, moves every caller to a standby. Checkouts run closed
loop through the gateway the whole time; nobody touches the stack after the fault. Each test
prints the time from the fault to isolation (order's breaker open) and to recovery (the first
checkout served after isolation), and the runbook's steps.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.cluster import API_KEYS, Stack, wait_until
from tests.chaos.invariants import check_invariants
from tests.chaos.load import Recorder
from tests.chaos.receiver import WebhookReceiver

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "local"))
import instances
from recovery_ops import STANDBY_STEP

OPEN = 2.0


@pytest.fixture
async def stack(canary_stack: Stack) -> AsyncIterator[Stack]:
    """The shared stack with no canary route, every service and the agent alive."""
    for service in canary_stack.services:
        assert canary_stack.is_alive(service), f"{service} is down"
    yield canary_stack


def agent_url(stack: Stack) -> str:
    return (stack.run_dir / "recovery" / "agent.url").read_text().strip()


def admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['GATEWAY_ADMIN_TOKEN']}"}


async def finished_recovery(stack: Stack, known: int, timeout: float) -> dict[str, Any]:
    """The first recovery the agent finished after the `known` ones."""
    found: list[dict[str, Any]] = []

    async def finished() -> bool:
        async with httpx.AsyncClient(timeout=5.0) as client:
            listed = (await client.get(f"{agent_url(stack)}/recoveries")).json()["recoveries"]
        found[:] = [r for r in listed[known:] if r["finished_at"] is not None]
        return bool(found)

    await wait_until(finished, timeout, "a finished recovery", interval=0.5)
    return found[0]


async def recoveries_so_far(stack: Stack) -> int:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return len((await client.get(f"{agent_url(stack)}/recoveries")).json()["recoveries"])


def served_after(recorder: Recorder, since: float) -> float | None:
    """When the first checkout sent after `since` was served (201), if one was."""
    served = [o.ended for o in recorder.of("checkout", 201) if o.started > since]
    return min(served) if served else None


def report(
    title: str, faulted: float, isolated: float, recovered: float, run: dict[str, Any]
) -> str:
    lines = [
        f"{title}: fault -> isolation (breaker open) {isolated - faulted:.1f} s, "
        f"fault -> recovered (a checkout served) {recovered - faulted:.1f} s; "
        f"runbook outcome {run['outcome']} after {run['seconds']} s",
        *(
            f"  +{s['seconds']:>5.1f}s  {s['action']:<15} {s['outcome']:<7} {s['detail']}"
            for s in run["steps"]
        ),
    ]
    return "\n".join(lines)


async def isolate_and_recover(
    stack: Stack, recorder: Recorder, faulted: float, known: int
) -> tuple[float, float, dict[str, Any]]:
    """Wait for order's breaker to open, then for a checkout served after it and the report."""

    async def isolated() -> bool:
        state = await stack.metric("order", "servicekit_breaker_state", dependency="payment")
        return state == OPEN

    isolated_at = faulted + await wait_until(isolated, 20, "order's payment breaker open")

    async def served() -> bool:
        return served_after(recorder, isolated_at) is not None

    await wait_until(served, 60, "a checkout served after the breaker opened")
    recovered_at = served_after(recorder, isolated_at)
    assert recovered_at is not None
    run = await finished_recovery(stack, known, timeout=60)
    return isolated_at, recovered_at, run


def events(webhook: WebhookReceiver, since: int) -> list[str]:
    return [str(n.get("event")) for n in webhook.notices()[since:] if n.get("event")]


async def test_a_runtime_fault_is_cleared_by_a_restart(
    stack: Stack, webhook: WebhookReceiver
) -> None:
    before = stack.pid("payment")
    since, known = len(webhook.notices()), await recoveries_so_far(stack)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15.0) as client:
        recorder = Recorder(client, list(API_KEYS))
        stop = asyncio.Event()
        load = asyncio.create_task(recorder.run(recorder.checkout, concurrency=4, until=stop))
        try:
            await recorder.wait_for("checkout", 201, count=3, timeout=30)
            faulted = recorder.now()
            put = await client.put(
                "/admin/faults/payment", headers=admin(stack), json={"error_rate": 1}
            )
            assert put.status_code == 200, put.text
            isolated, recovered, run = await isolate_and_recover(stack, recorder, faulted, known)
            faults = (await client.get("/admin/faults/payment", headers=admin(stack))).json()
            # A second open of the same breaker (here: the same notice delivered again) is
            # part of the recovery that already ran, not a new one.
            opened = next(
                n
                for n in webhook.notices()[since:]
                if n.get("to_state") == "open" and n.get("dependency") == "payment"
            )
            async with httpx.AsyncClient(timeout=5.0) as agent:
                hook = f"{agent_url(stack)}/hooks/breaker"
                again = await agent.post(hook, json=opened)
                unknown = await agent.post(hook, json={**opened, "dependency": "ledger"})
                malformed = await agent.post(hook, content=b"{")
                metrics = (await agent.get(f"{agent_url(stack)}/metrics")).text
        finally:
            stop.set()
            await load
    print(report("runtime fault", faulted, isolated, recovered, run))
    assert run["outcome"] == "recovered_by_restart", run
    assert [s["action"] for s in run["steps"] if s["action"] != "notify"] == [
        "restart",
        "breaker_closed",
    ]
    assert stack.pid("payment") != before and faults["error_rate"] == 0, faults
    assert again.status_code == 202 and again.json() == {"recovery": "duplicate"}, again.text
    assert unknown.status_code == 422 and "valid: " in unknown.json()["detail"], unknown.text
    assert unknown.headers["content-type"] == "application/problem+json"
    assert malformed.status_code == 400, malformed.text
    assert await recoveries_so_far(stack) == known + 1
    assert 'recovery_duplicate_opens_total{service="payment"}' in metrics
    assert 'recovery_runs_total{outcome="recovered_by_restart",service="payment"} 1.0' in metrics
    # Every step was notified, and the breaker's own notice was forwarded as it was sent.
    assert opened["service"] == "order" and "event" not in opened
    assert {"recovery_started", "recovery_restarted", "recovery_succeeded"} <= set(
        events(webhook, since)
    )
    await check_invariants(stack, recorder)


async def test_a_faulty_configuration_is_replaced_by_a_standby(
    stack: Stack, webhook: WebhookReceiver
) -> None:
    port = stack.ports["payment"]
    stable = instances.instance(stack.run_dir, "payment", "payment", port)
    launch = instances.Launch.of(stack.pid("payment"))
    # payment as a bad deploy starts it: failing every call, again after any restart.
    stable.stop()
    stack.children.append(stable.start(launch, {"PAYMENT_FAULT_ERROR_RATE": "1"}))
    assert stable.wait_ready()
    since, known = len(webhook.notices()), await recoveries_so_far(stack)
    try:
        async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15.0) as client:
            recorder = Recorder(client, list(API_KEYS))
            stop = asyncio.Event()
            faulted = recorder.now()
            load = asyncio.create_task(recorder.run(recorder.checkout, concurrency=4, until=stop))
            try:
                isolated, recovered, run = await isolate_and_recover(
                    stack, recorder, faulted, known
                )
                route = (await client.get("/admin/canary/payment", headers=admin(stack))).json()
            finally:
                stop.set()
                await load
        print(report("faulty configuration", faulted, isolated, recovered, run))
        assert run["outcome"] == "recovered_by_standby", run
        actions = [(s["action"], s["outcome"]) for s in run["steps"] if s["action"] != "notify"]
        assert actions == [
            ("restart", "ok"),
            ("breaker_closed", "failed"),
            ("standby", "ok"),
            ("route", "ok"),
            ("breaker_closed", "ok"),
        ], run["steps"]
        standby = instances.instance(stack.run_dir, "payment", "payment", 0, "standby")
        assert route["weight"] == 100 and route["step"] == STANDBY_STEP, route
        standby_env = instances.Launch.of(standby.pid or 0).env
        assert "PAYMENT_FAULT_ERROR_RATE" not in standby_env
        # The restarted stable still carries its configuration (and still fails).
        assert instances.Launch.of(stack.pid("payment")).env["PAYMENT_FAULT_ERROR_RATE"] == "1"
        assert {"recovery_escalated", "recovery_standby", "recovery_succeeded"} <= set(
            events(webhook, since)
        )
        await check_invariants(stack, recorder)
    finally:
        await restore(stack, launch)


async def restore(stack: Stack, launch: instances.Launch) -> None:
    """payment as the stack started it, on its port; no route, no standby."""
    stable = instances.instance(stack.run_dir, "payment", "payment", stack.ports["payment"])
    stable.stop()
    stack.children.append(stable.start(launch, {}))
    assert stable.wait_ready()
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10.0) as client:
        deleted = await client.delete("/admin/canary/payment", headers=admin(stack))
        assert deleted.status_code == 200, deleted.text
    await asyncio.sleep(1.5)  # every caller follows the route's removal
    instances.instance(stack.run_dir, "payment", "payment", 0, "standby").stop()
    print(json.dumps({"restored": stable.url}))


async def test_a_service_in_a_canary_release_is_left_to_the_canary(stack: Stack) -> None:
    before, known = stack.pid("payment"), await recoveries_so_far(stack)
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=10.0) as client:
        route = {"upstream": "http://127.0.0.1:9", "weight": 0, "step": "1/5"}
        put = await client.put("/admin/canary/payment", headers=admin(stack), json=route)
        assert put.status_code == 200, put.text
        try:
            notice = {
                "service": "order",
                "dependency": "payment",
                "from_state": "closed",
                "to_state": "open",
                "at": datetime.now(UTC).isoformat(),
            }
            async with httpx.AsyncClient(timeout=5.0) as agent:
                sent = await agent.post(f"{agent_url(stack)}/hooks/breaker", json=notice)
            assert sent.json() == {"recovery": "started"}, sent.text
            run = await finished_recovery(stack, known, timeout=20)
        finally:
            await client.delete("/admin/canary/payment", headers=admin(stack))
    assert run["outcome"] == "skipped_canary", run
    assert stack.pid("payment") == before
