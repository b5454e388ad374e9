"""Browser tier: the ops page in Debian's chromium, driven by Selenium, on a private stack.

The stack is `stack.py up` on free ports (below the ephemeral range) in a temp run dir
(tests.chaos.cluster.Stack), so it never meets the developer's stack or the ports 8000-8003;
its breakers reset after 2 s so a closing breaker is seen quickly. The browser is the
system's chromium with its chromedriver (`scripts/system-packages.sh browser`): nothing is
downloaded. Screenshots go to `BROWSER_ARTIFACTS` (default `.run/artifacts/browser`,
git-ignored).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from infra.manifest import load
from tests.chaos.cluster import ADMIN_TOKEN, Stack

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel hands out (port 0) is in that range, where any outgoing connection of a
    busy shared machine may take it before the service binds it; below it, only a listener can.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(20000, max(20001, low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture(scope="session")
def artifacts() -> Path:
    directory = Path(os.environ.get("BROWSER_ARTIFACTS") or REPO / ".run/artifacts/browser")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    foreign = tuple(f"{s.prefix}_" for s in load())
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.pop("STACK_RUN_DIR", None)
    env.update(
        {
            "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "ORDER_BREAKER_RESET_SECONDS": "2",
            "ORDER_BREAKER_HALF_OPEN_PROBES": "1",
            "STACK_PROMETHEUS": "0",
            # The recovery agent (when present) would restart payment on its own: the test
            # wants to see the breaker close because the fault is switched off.
            "RECOVERY": "0",
        }
    )
    ports = {name: quiet_port() for name in load().names}
    stack = Stack(tmp_path_factory.mktemp("browser-stack"), env, ports=ports)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(binary):
            pytest.fail(
                f"{binary} is missing: run scripts/system-packages.sh browser "
                "(Debian packages chromium and chromium-driver)",
                pytrace=False,
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1250",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
