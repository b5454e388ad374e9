"""Canary tier: one private stack (free ports, its own run dir, a fresh PostgreSQL database on
the shared server, no Redis), a webhook receiver, and `make canary` run against it.

The stack is shared by the module's scenarios (each starts from a stack with no canary); the
load comes from the chaos tier's recorder, so a test sees every answer a client got.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from infra.manifest import load
from tests.chaos.cluster import API_KEYS, Stack
from tests.chaos.receiver import WebhookReceiver

REPO = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get(
    "CANARY_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def _admin(sql: str, database: str | None = None) -> None:
    url = (
        POSTGRES_ADMIN_URL
        if database is None
        else f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{database}"
    )
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def stack_env(database_url: str, webhook: str) -> dict[str, str]:
    foreign = tuple(f"{s.prefix}_" for s in load())
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    for name in ("STACK_RUN_DIR", "SERVICE", "VERSION", "CANARY_ENV", "STEPS", "STEP_SECONDS"):
        env.pop(name, None)
    env.pop("RECOVERY_PORT", None)
    env.pop("RECOVERY_RUNBOOK", None)
    env.update(
        {
            "GATEWAY_API_KEYS": ",".join(f"{k}:{c}" for k, c in API_KEYS.items()),
            "GATEWAY_ADMIN_TOKEN": "canary-admin-token",
            "ORDER_SAGA_RECOVERY_INTERVAL_SECONDS": "1",
            "ORDER_SAGA_STALE_SECONDS": "2",
            "ORDER_BREAKER_WEBHOOK_URL": webhook,
            "OTEL_TRACES_SAMPLER": "always_off",
            "STACK_PROMETHEUS": "0",
            "STACK_READY_TIMEOUT": "90",
            # The recovery scenarios (test_recovery.py): a breaker probes 2 s after it opened,
            # and the agent gives it 20 s to close after each action.
            "ORDER_BREAKER_RESET_SECONDS": "2",
            "RECOVERY": "1",
            "RECOVERY_VERIFY_SECONDS": "20",
        }
    )
    for prefix in ("ORDER", "INVENTORY", "PAYMENT"):
        env[f"{prefix}_DATABASE_URL"] = database_url
    return env


@dataclass
class Canary:
    """One `canary.py run` against the stack: its exit code, output and result.json."""

    returncode: int
    output: str
    result: dict[str, Any]


async def run_canary(stack: Stack, command: str = "run", **knobs: str) -> Canary:
    before = (
        set((stack.run_dir / "canary").glob("*")) if (stack.run_dir / "canary").exists() else set()
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "infra/local/canary.py",
        command,
        cwd=REPO,
        env={**stack.env, "LOAD": "0", **knobs},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    output = out.decode(errors="replace")
    print(output)
    made = sorted(set((stack.run_dir / "canary").glob("*")) - before)
    result = json.loads((made[-1] / "result.json").read_text()) if made else {}
    assert process.returncode is not None
    return Canary(process.returncode, output, result)


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def canary_stack(
    webhook: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database = f"canary_{secrets.token_hex(5)}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    url = f"{POSTGRES_ADMIN_URL.rpartition('/')[0]}/{database}"
    stack = Stack(
        run_dir=tmp_path_factory.mktemp("canary") / "run", env=stack_env(url, webhook.url)
    )
    try:
        stack.up()
        # The scenarios buy hundreds of units: "out of stock" must not blur what they measure.
        asyncio.run(_admin("UPDATE product SET stock = stock + 100000", database))
        yield stack
    finally:
        try:
            stack.down()
        finally:
            for service in ("gateway", "order", "payment"):
                print(stack.log_digest(service))
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
