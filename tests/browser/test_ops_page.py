"""The ops page in a real browser: log in, see the stack, break payment, watch the breaker.

An operator logs in through the form, sees four healthy services, sets payment's error rate
to 1 on the page, and a few checkouts later the page shows order's breaker to payment open,
within seconds, with no reload. The fault is switched off on the page; with checkouts going on
the breaker closes by itself (half-open probe), and the page shows it. Screenshots of both
moments are saved as artifacts.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.chaos.cluster import ADMIN_TOKEN, Stack

SERVICES = ("gateway", "order", "inventory", "payment")
CHECKOUT = {"items": [{"sku": "mug-stoneware-350ml", "quantity": 1}]}
#: `make up`'s development key.
API_KEY = "demo-key"


def checkout(client: httpx.Client) -> int:
    answer = client.post(
        "/api/orders",
        json=CHECKOUT,
        headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": secrets.token_hex(8)},
    )
    return answer.status_code


#: Order's breaker to payment. The page redraws it every second, so it is read in one script
#: call: an element found first and read after could already be gone (stale).
BREAKER_ROW = '#svc-order tr.breaker[data-dependency="payment"]'


def breaker(driver: webdriver.Chrome) -> dict[str, str] | None:
    found: dict[str, str] | None = driver.execute_script(
        "const row = document.querySelector(arguments[0]);"
        "return row && {state: row.dataset.state, text: row.textContent};",
        BREAKER_ROW,
    )
    return found


def breaker_state(driver: webdriver.Chrome) -> str | None:
    found = breaker(driver)
    return found["state"] if found else None


def wait_for(driver: webdriver.Chrome, seconds: float, what: str, check) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    WebDriverWait(driver, seconds, poll_frequency=0.1).until(
        lambda d: check(d), message=f"not within {seconds:.0f} s: {what}"
    )
    return time.monotonic() - started


def test_operator_breaks_payment_and_watches_the_breaker_open_and_close(
    stack: Stack, browser: webdriver.Chrome, artifacts: Path
) -> None:
    gateway = stack.url("gateway")
    browser.get(f"{gateway}/ops")
    browser.find_element(By.NAME, "operator").send_keys("browser-test")
    browser.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form[action='/ops/login'] button").click()
    assert "token" not in browser.current_url  # the token never travels in a URL

    wait_for(
        browser,
        15,
        "four healthy services on the page",
        lambda d: all(
            d.find_element(By.ID, f"svc-{name}").get_attribute("data-health") == "healthy"
            for name in SERVICES
        ),
    )
    assert breaker_state(browser) == "closed"

    faults = browser.find_element(By.CSS_SELECTOR, 'form.faults[data-service="payment"]')
    rate = faults.find_element(By.NAME, "error_rate")
    rate.clear()
    rate.send_keys("1")
    faults.find_element(By.CSS_SELECTOR, 'button[data-action="faults"]').click()
    wait_for(
        browser,
        5,
        "the fault applied",
        lambda d: (
            "error_rate 1" in d.find_element(By.CSS_SELECTOR, "#svc-payment .faults-now").text
        ),
    )

    with httpx.Client(base_url=gateway, timeout=10) as client:
        statuses = [checkout(client) for _ in range(6)]
        assert all(status == 503 for status in statuses), statuses
        opened = wait_for(
            browser, 5, "order's breaker to payment open on the page",
            lambda d: breaker_state(d) == "open",
        )  # fmt: skip
        print(f"breaker open on the page {opened:.1f} s after the last checkout")
        browser.save_screenshot(str(artifacts / "ops-breaker-open.png"))

        browser.find_element(
            By.CSS_SELECTOR, '#svc-payment button[data-action="clear-faults"]'
        ).click()
        deadline = time.monotonic() + 20
        while breaker_state(browser) != "closed":
            assert time.monotonic() < deadline, "the breaker did not close by itself in 20 s"
            checkout(client)  # traffic for the half-open probe; no reset by hand
            time.sleep(0.3)
    shown = breaker(browser)
    assert shown is not None
    transitions = shown["text"]
    assert "closed→open" in transitions and "half-open→closed" in transitions, transitions
    browser.save_screenshot(str(artifacts / "ops-breaker-closed.png"))
