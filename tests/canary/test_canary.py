"""`make canary` on a private stack: bad canaries are rolled back in their first step, a good
one is promoted through every step, a dead one is rolled back; clients never see a 5xx that a
routing change caused, and stock and charges hold the chaos tier's invariants afterwards.

Each scenario runs the closed-loop recorder (checkouts and reads through the gateway) while
`infra/local/canary.py run` (what `make canary` runs) steps the payment canary.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.chaos.cluster import API_KEYS, Stack, wait_until
from tests.chaos.invariants import check_invariants
from tests.chaos.load import Recorder
from tests.chaos.receiver import WebhookReceiver

from .conftest import Canary, run_canary

FAST = {"STEP_SECONDS": "5", "SERVICE": "payment"}


async def traffic(stack: Stack, recorder: Recorder, stop: asyncio.Event) -> None:
    async def checkout_then_read() -> object:
        await recorder.checkout()
        return await recorder.read_product()

    await recorder.run(checkout_then_read, concurrency=6, until=stop)  # type: ignore[arg-type]


async def canary_under_load(stack: Stack, **knobs: str) -> tuple[Canary, Recorder]:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15.0) as client:
        recorder = Recorder(client, list(API_KEYS))
        stop = asyncio.Event()
        load = asyncio.create_task(traffic(stack, recorder, stop))
        try:
            result = await run_canary(stack, **FAST, **knobs)
            # After the run: the route is gone everywhere, every call goes to stable.
            await asyncio.sleep(2)
        finally:
            stop.set()
            await load
    return result, recorder


def server_errors(recorder: Recorder, since: float = 0.0) -> list[str]:
    return [
        f"{o.kind} {o.status} {o.body if isinstance(o.body, dict) else o.error}"[:200]
        for o in recorder.outcomes
        if (o.status >= 500 or o.status == 0) and o.started >= since
    ]


def canary_failures(stack: Stack) -> int:
    """5xx answers the payment canary gave, from its own access log."""
    log = stack.run_dir / "logs" / "payment-canary.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(
        1 for line in lines if line.startswith("{") and json.loads(line).get("status", 0) >= 500
    )


@pytest.fixture
async def stack(canary_stack: Stack) -> AsyncIterator[Stack]:
    """The shared stack with no canary route, every service alive."""
    for service in ("gateway", "order", "inventory", "payment"):
        assert canary_stack.is_alive(service), f"{service} is down"
    yield canary_stack
    assert not (canary_stack.run_dir / "pids" / "payment-canary.pid").exists()


async def test_a_failing_canary_is_rolled_back_in_its_first_step(
    stack: Stack, webhook: WebhookReceiver
) -> None:
    run, recorder = await canary_under_load(
        stack, STEPS="25,50,100", CANARY_ENV="PAYMENT_FAULT_ERROR_RATE=0.3"
    )
    assert run.returncode == 1, run.output
    result = run.result
    assert result["outcome"] == "rolled_back" and len(result["steps"]) == 1, result
    step = result["steps"][0]
    assert step["verdict"] == "fail" and "errors" in step["reason"]
    assert 0 < step["figures"]["canary_errors"] < 50
    # Clients saw at most the canary's own failures over its whole life (the step's figures
    # cover the judged window only; the canary serves on while every caller drops the route),
    # and nothing from the routing changes.
    errors = server_errors(recorder)
    assert len(errors) <= canary_failures(stack), errors
    assert all("503" in e for e in errors), errors
    notices = [n for n in webhook.notices() if n.get("event") == "canary_rolled_back"]
    assert notices and notices[-1]["dependency"] == "payment" and not notices[-1]["recovered"]
    await check_invariants(stack, recorder)


async def test_a_slow_canary_is_rolled_back_on_latency(stack: Stack) -> None:
    run, recorder = await canary_under_load(
        stack, STEPS="25,50,100", CANARY_ENV="PAYMENT_FAULT_LATENCY_MS=300"
    )
    assert run.returncode == 1, run.output
    assert run.result["outcome"] == "rolled_back" and len(run.result["steps"]) == 1
    assert "latency" in run.result["steps"][0]["reason"]
    assert server_errors(recorder) == []
    await check_invariants(stack, recorder)


async def test_a_canary_killed_mid_step_is_rolled_back(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=15.0) as client:
        recorder = Recorder(client, list(API_KEYS))
        stop = asyncio.Event()
        load = asyncio.create_task(traffic(stack, recorder, stop))
        knobs = {**FAST, "STEPS": "25,50,100", "STEP_SECONDS": "8"}
        runner = asyncio.create_task(run_canary(stack, **knobs))
        admin = {"Authorization": f"Bearer {stack.env['GATEWAY_ADMIN_TOKEN']}"}

        async def in_first_step() -> bool:
            route = (await client.get("/admin/canary/payment", headers=admin)).json()
            return str(route.get("step")).startswith("1/")

        await wait_until(in_first_step, 60, "the canary's first step")
        await asyncio.sleep(2)
        killed_at = recorder.now()
        pid = int((stack.run_dir / "pids" / "payment-canary.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        run = await runner
        await asyncio.sleep(2)
        stop.set()
        await load
    assert run.returncode == 1, run.output
    assert run.result["outcome"] == "rolled_back"
    assert "died" in run.result["reason"]
    # Only calls that were on the dead process can fail; new ones go to stable at once.
    assert len(server_errors(recorder, since=killed_at)) <= 6, server_errors(recorder)
    assert server_errors(recorder, since=killed_at + 3) == []
    await check_invariants(stack, recorder)


async def test_a_healthy_canary_is_promoted_through_every_step(
    stack: Stack, webhook: WebhookReceiver
) -> None:
    before = stack.pid("payment")
    run, recorder = await canary_under_load(stack, STEPS="25,50,100", VERSION="0.2.0-good")
    assert run.returncode == 0, run.output
    result = run.result
    assert result["outcome"] == "promoted"
    assert [s["weight"] for s in result["steps"]] == [25, 50, 100]
    assert all(s["verdict"] == "pass" for s in result["steps"])
    # No 5xx at all: not from the steps, not from replacing the stable process.
    assert server_errors(recorder) == []
    async with httpx.AsyncClient() as client:
        health = (await client.get(f"{stack.url('payment')}/healthz")).json()
    assert health["version"] == "0.2.0-good" and stack.pid("payment") != before
    notices = [n for n in webhook.notices() if n.get("event") == "canary_promoted"]
    assert notices and notices[-1]["version"] == "0.2.0-good" and notices[-1]["recovered"]
    for name in ("report.md", "result.json", "canary.png"):
        assert list(stack.run_dir.glob(f"canary/*/{name}")), name
    await check_invariants(stack, recorder)


async def test_bad_knobs_list_the_valid_ones_and_write_nothing(stack: Stack) -> None:
    before = sorted(stack.run_dir.glob("canary/*"))
    for knobs, valid in (
        ({"SERVICE": "gateway"}, "valid: "),
        ({"SERVICE": "payment", "STEPS": "10,5"}, "increasing"),
        ({"SERVICE": "payment", "STEP_SECONDS": "0"}, "1..3600"),
        ({"SERVICE": "payment", "LOAD": "maybe"}, "valid: 1"),
        ({"SERVICE": "payment", "CANARY_ENV": "ORDER_X=1"}, "PAYMENT_*"),
    ):
        run = await run_canary(stack, **knobs)
        assert run.returncode == 2 and valid in run.output, run.output
        assert "knobs: SERVICE, VERSION, CANARY_ENV, STEPS, STEP_SECONDS, LOAD" in run.output
    assert sorted(stack.run_dir.glob("canary/*")) == before


async def test_manual_rollback_removes_the_route_at_once(
    stack: Stack, webhook: WebhookReceiver
) -> None:
    admin = {"Authorization": f"Bearer {stack.env['GATEWAY_ADMIN_TOKEN']}"}
    async with httpx.AsyncClient(base_url=stack.url("gateway")) as client:
        body = {"upstream": "http://127.0.0.1:9", "weight": 0}
        assert (await client.put("/admin/canary/payment", headers=admin, json=body)).is_success
        run = await run_canary(stack, "rollback", SERVICE="payment")
        assert run.returncode == 0, run.output
        route = (await client.get("/admin/canary/payment", headers=admin)).json()
    assert route["upstream"] is None
    assert webhook.notices()[-1]["event"] == "canary_rolled_back"
