"""A slowloris of 20,000 connections against a real gateway process, run as `make up` runs it.

The gateway (`python -m servicekit.serve`, default limits) listens on a free port. Four
attacker processes (`slowloris.py`, 5,000 connections each: one process could not hold
20,000 descriptors under this machine's limit) keep 20,000 connections open from 127.0.0.1,
each trickling a header line every 5 s and never finishing its headers. Meanwhile a probe
client on another address (127.0.0.2: another client) opens a fresh connection every 0.25 s.

Must hold: every probe is served (200) within 1 s of its scheduled time; connections over the
per-client cap are refused at once (503); the ones admitted are closed by the server (408)
within its header timeout; the gateway never nears its descriptor limit and stays alive.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servicekit.serve import ACCEPT_TURNS, FD_RESERVE, ServerSettings

from .cluster import wait_until
from .load import percentile
from .servers import HOST, free_port

REPO = Path(__file__).resolve().parents[2]
SLOW_CONNECTIONS = 20_000
ATTACKERS = 4
ATTACKER_SOURCE = "127.0.0.1"
PROBE_SOURCE = "127.0.0.2"
PROBE_INTERVAL = 0.25
DEFAULTS = ServerSettings()
#: Long enough for the admitted connections to reach the header timeout, and for the ones
#: refused at first to come back at the next trickle and be refused again.
ATTACK_SECONDS = DEFAULTS.header_timeout + 6.0
#: Slack on a shared 2-core machine: the client's clock starts at its connect, the server's at
#: its accept, which a busy loop makes late.
SLACK_SECONDS = 2.0


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_slowloris_cannot_lock_legitimate_clients_out(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "gateway.log").open("wb")
    env = {**os.environ, "GATEWAY_ENVIRONMENT": "development", "OTEL_TRACES_SAMPLER": "always_off"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "servicekit.serve", "gateway.main:create_app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{HOST}:{port}/healthz"
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:

            async def up() -> bool:
                try:
                    return (await client.get(url)).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, 60, "the gateway answers /healthz", interval=0.2)

        per_attacker = SLOW_CONNECTIONS // ATTACKERS
        attackers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("slowloris.py")),
                    HOST,
                    str(port),
                    str(per_attacker),
                    str(ATTACK_SECONDS),
                    ATTACKER_SOURCE,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(ATTACKERS)
        ]
        await asyncio.sleep(2.0)  # let the connections pile up before probing
        probes, peak_fds = await _probe(url, gateway.pid, ATTACK_SECONDS - 3.0)
        reports = [json.loads(a.communicate(timeout=120)[0]) for a in attackers]
        assert gateway.poll() is None, "the gateway died under the slowloris"
    finally:
        for a in locals().get("attackers", []):
            if a.poll() is None:
                a.kill()
        gateway.terminate()
        gateway.wait(timeout=30)
        log.close()

    opened = sum(r["opened"] for r in reports)
    ended: dict[str, dict[str, float]] = {}
    for report in reports:
        for how, seen in report["ended"].items():
            mine = ended.setdefault(how, {"count": 0, "max_s": 0.0})
            mine["count"] += seen["count"]
            mine["max_s"] = max(mine["max_s"], seen["max_s"])
    statuses = [status for status, _ in probes]
    latencies = [latency for _, latency in probes]
    print(
        f"slowloris: {opened} connections opened, ended by the server {ended}, "
        f"{sum(r['held_to_the_end'] for r in reports)} still open at the end; "
        f"{len(probes)} probes p50 {percentile(latencies, 50) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms; gateway peak {peak_fds} descriptors"
    )

    assert opened >= SLOW_CONNECTIONS, reports
    assert statuses and set(statuses) == {200}, f"probes answered {statuses}"
    assert max(latencies) <= 1.0, f"probe latencies {sorted(latencies)[-5:]} s"
    cap = DEFAULTS.max_connections_per_client
    # Over the per-client cap: refused at once (503), before a byte was read.
    refused = ended["503"]
    assert refused["max_s"] <= SLACK_SECONDS, refused
    # Admitted (at most the cap), then closed when the header deadline passed, trickle or not.
    timed_out = ended["408"]
    assert timed_out["max_s"] <= DEFAULTS.header_timeout + SLACK_SECONDS, timed_out
    assert (
        cap * 0.9 <= timed_out["count"] <= cap * math.ceil(ATTACK_SECONDS / DEFAULTS.header_timeout)
    )
    assert set(ended) == {"503", "408"}, f"connections ended otherwise: {ended}"
    # The gateway never held more than one client's cap, its own descriptors, and the refused
    # connections still in the loop's accept pipeline (up to ACCEPT_TURNS backlogs; the budget
    # servicekit.serve keeps below the descriptor limit). Measured: 3,745 and 5,054 in CI runs.
    assert peak_fds <= cap + ACCEPT_TURNS * DEFAULTS.backlog + FD_RESERVE


async def _probe(url: str, pid: int, seconds: float) -> tuple[list[tuple[int, float]], int]:
    """GET `url` on a fresh connection from PROBE_SOURCE every PROBE_INTERVAL for `seconds`.

    Returns (status, seconds from the scheduled send to the answer) per probe (status 0: no
    answer) and the most descriptors the gateway held at a probe.
    """
    results: list[tuple[int, float]] = []
    peak = 0

    async def one(due: float) -> None:
        transport = httpx.AsyncHTTPTransport(local_address=PROBE_SOURCE)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
            try:
                status = (await client.get(url)).status_code
            except httpx.TransportError:
                status = 0
        results.append((status, time.monotonic() - due))

    start = time.monotonic()
    tasks = []
    for n in range(int(seconds / PROBE_INTERVAL)):
        due = start + n * PROBE_INTERVAL
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(one(due)))
        peak = max(peak, _open_fds(pid))
    await asyncio.gather(*tasks)
    return results, peak
