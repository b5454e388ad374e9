"""Chaos tier fixtures: private PostgreSQL and Redis, private stacks, a webhook receiver.
Nothing here touches the shared servers (5432, 6379) or the developer's stack.

Starting a stack costs seconds of CPU (migrations, four interpreters), so the scenarios that
break one dependency at a time share one stack (`chaos_stack`), and each starts from a
verified healthy baseline: every process alive and ready, servers up, faults cleared, order's
breakers closed. A scenario that needs other settings (the flood) starts its own
(`make_stack`). Every scenario must end with `check_invariants`; one that passes without
having called it fails at teardown. `stack.py down` always runs.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest

from .cluster import Stack, stack_env
from .receiver import WebhookReceiver
from .scenarios import CLOSED, FAST_BREAKERS, set_faults, wait_breaker
from .servers import PG_BIN, PrivatePostgres, PrivateRedis

MakeStack = Callable[..., Stack]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    # Keep each phase's report on the test item: teardown asks whether the test passed.
    report: pytest.TestReport = yield
    setattr(item, f"chaos_{report.when}", report)
    return report


def _passed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "chaos_call", None)
    return report is not None and report.passed


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.initialise()
        server.start()
        yield server
    finally:
        server.destroy()


def _redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


#: The shared stack's Redis (a scenario kills it; the baseline starts it again).
redis = pytest.fixture(scope="session")(_redis)
#: A Redis of a test's own, for a stack of its own (gateway limits must not share counts).
own_redis = pytest.fixture(_redis)


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    """Receives the shared stack's breaker notices (ORDER_BREAKER_WEBHOOK_URL)."""
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _pg(postgres: PrivatePostgres, command: str, *args: str) -> None:
    """Run a PostgreSQL client program (createdb, dropdb, psql) against the private server."""
    server = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres"]
    subprocess.run(
        [str(PG_BIN / command), *server, *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _start(postgres: PrivatePostgres, redis: PrivateRedis, run_dir: Path, **env: str) -> Stack:
    database = f"chaos_{secrets.token_hex(4)}"
    _pg(postgres, "createdb", database)
    stack = Stack(run_dir=run_dir, env=stack_env(postgres.url(database), redis.url, env))
    try:
        stack.up()
        # Scenarios sell hundreds of units: "out of stock" must not blur what they measure.
        _pg(postgres, "psql", "-d", database, "-c", "UPDATE product SET stock = stock + 100000")
    except BaseException:
        _stop(postgres, stack)
        raise
    return stack


def _stop(postgres: PrivatePostgres, stack: Stack) -> None:
    try:
        stack.down()
    finally:
        for service in stack.services:  # shown only when a test fails
            print(stack.log_digest(service))
        if postgres.is_running():
            database = stack.env["ORDER_DATABASE_URL"].rsplit("/", 1)[1]
            _pg(postgres, "dropdb", "--force", database)


@pytest.fixture(scope="session")
def shared_stack(
    postgres: PrivatePostgres,
    redis: PrivateRedis,
    webhook: WebhookReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("chaos-stack") / "run"
    stack = _start(postgres, redis, run_dir, ORDER_BREAKER_WEBHOOK_URL=webhook.url, **FAST_BREAKERS)
    try:
        yield stack
    finally:
        _stop(postgres, stack)


@pytest.fixture
async def chaos_stack(
    request: pytest.FixtureRequest,
    shared_stack: Stack,
    postgres: PrivatePostgres,
    redis: PrivateRedis,
) -> AsyncIterator[Stack]:
    """The shared stack, verified healthy; the test must check the invariants."""
    stack = shared_stack
    if not postgres.is_running():
        postgres.start()
    if not redis.ping():
        redis.start()
    for service in stack.services:
        if not stack.is_alive(service):
            await stack.restart(service)
    for service in ("payment", "inventory"):
        await set_faults(stack, service)
    for dependency in stack.manifest.get("order").downstreams:  # its breakers
        await wait_breaker(stack, dependency, CLOSED, timeout=15)
    stack.checked = False
    marks = stack.log_marks()
    yield stack
    for service in stack.services:  # shown only when the test fails
        print(stack.log_digest(service, since=marks[service]))
    if _passed(request):
        assert stack.checked, "the scenario never checked the invariants (check_invariants)"


@pytest.fixture
def make_stack(
    request: pytest.FixtureRequest,
    postgres: PrivatePostgres,
    own_redis: PrivateRedis,
    tmp_path: Path,
) -> Iterator[MakeStack]:
    """`make_stack(**env)`: a stack of the test's own, with `env` over the chaos defaults."""
    stacks: list[Stack] = []

    def make(**env: str) -> Stack:
        assert not stacks, "one stack per test"
        stacks.append(_start(postgres, own_redis, tmp_path / "run", **env))
        return stacks[0]

    yield make
    for stack in stacks:
        _stop(postgres, stack)
        if _passed(request):
            assert stack.checked, "the scenario never checked the invariants (check_invariants)"
