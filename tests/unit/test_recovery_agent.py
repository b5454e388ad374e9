"""The recovery agent's bookkeeping (infra/local/recovery_agent.py) with a fake runbook: one
recovery per breaker however many opens arrive, where notices are forwarded, what it refuses.
The runbook's real actions run in the canary tier (tests/canary/test_recovery.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "local"))
import recovery
from recovery_agent import Agent, NoticeError, parse_notice
from recovery_ops import Operations, Stack

from infra.manifest import load

USER_HOOK = "http://127.0.0.1:9/user-hook"


class FakeRunbook:
    """Runs until released; counts its runs."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, ops: Operations) -> str:
        self.runs.append(ops.name)
        await self.release.wait()
        return "recovered_by_restart"


def opened(caller: str, at: datetime, dependency: str = "payment") -> dict[str, Any]:
    return {
        "service": caller,
        "dependency": dependency,
        "from_state": "closed",
        "to_state": "open",
        "reason": "consecutive_failures",
        "at": at.isoformat(),
    }


def make_agent(tmp_path: Path, runbook: FakeRunbook, sent: list[dict[str, Any]]) -> Agent:
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append({"url": str(request.url), **json.loads(request.content)})
        return httpx.Response(204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    stack = Stack(tmp_path, {}, load())
    return Agent(stack, runbook, client, targets={"order": USER_HOOK}, verify_seconds=1)


async def settle(agent: Agent) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
    await agent.aclose()


async def test_two_opens_of_one_breaker_make_one_recovery(tmp_path: Path) -> None:
    runbook, sent = FakeRunbook(), []
    agent = make_agent(tmp_path, runbook, sent)
    now = datetime.now(UTC)
    manifest = load()
    assert agent.receive(parse_notice(opened("order", now), manifest)) == "started"
    # The gateway's breaker to the same service, and a redelivery: the same recovery.
    assert agent.receive(parse_notice(opened("gateway", now), manifest)) == "duplicate"
    assert agent.receive(parse_notice(opened("order", now), manifest)) == "duplicate"
    await asyncio.sleep(0)
    assert runbook.runs == ["payment"]
    runbook.release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    done = agent.recoveries["payment"]
    assert done.outcome == "recovered_by_restart" and done.duplicates == 2
    assert done.callers == {"order", "gateway"}
    # Opened before the recovery ended (a late delivery): still the same one.
    assert agent.receive(parse_notice(opened("order", now), manifest)) == "duplicate"
    # Opened after it ended: a new incident, a new recovery.
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert agent.receive(parse_notice(opened("order", later), manifest)) == "started"
    await asyncio.sleep(0)
    assert runbook.runs == ["payment", "payment"]
    first = json.loads(min((tmp_path / "recovery").glob("*-payment.json")).read_text())
    assert first["outcome"] == "recovered_by_restart" and first["duplicates"] == 2
    assert first["callers"] == ["gateway", "order"]
    await settle(agent)


async def test_notices_go_where_the_user_would_have_received_them(tmp_path: Path) -> None:
    runbook, sent = FakeRunbook(), []
    runbook.release.set()
    agent = make_agent(tmp_path, runbook, sent)
    manifest = load()
    now = datetime.now(UTC)
    closed = {**opened("order", now, "inventory"), "to_state": "closed"}
    agent.receive(parse_notice(closed, manifest))  # order's own breaker: order's webhook
    agent.receive(parse_notice({**closed, "service": "gateway"}, manifest))  # gateway: none set
    canary = {**closed, "service": "payment", "dependency": "payment", "event": "canary_promoted"}
    agent.receive(parse_notice(canary, manifest))  # payment's caller order: order's webhook
    await settle(agent)
    assert [(n["url"], n["service"], n.get("event")) for n in sent] == [
        (USER_HOOK, "order", None),
        (USER_HOOK, "payment", "canary_promoted"),
    ]
    assert runbook.runs == []  # nothing opened


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ([], "JSON object"),
        ({"service": "order", "to_state": "open"}, "dependency must be"),
        ({"service": "order", "dependency": "ledger", "to_state": "open"}, "valid: "),
        (
            {"service": "order", "dependency": "payment", "to_state": "open", "at": "noon"},
            "ISO 8601",
        ),
        ({"service": "o", "dependency": "payment", "to_state": "open", "event": 5}, "event"),
    ],
)
def test_a_malformed_notice_is_refused_with_the_reason(body: object, detail: str) -> None:
    with pytest.raises(NoticeError, match=detail):
        parse_notice(body, load())


def test_recovery_knob_is_on_by_default_and_lists_its_values() -> None:
    assert recovery.enabled({}) and recovery.enabled({"RECOVERY": "1"})
    assert not recovery.enabled({"RECOVERY": "0"})
    with pytest.raises(ValueError, match=r"valid: 1 .* or 0"):
        recovery.enabled({"RECOVERY": "off"})
