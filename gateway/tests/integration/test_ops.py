"""The ops page in process: gateway -> real payment and inventory apps on PostgreSQL
(the `gateway` fixture, conftest.py).

Who may see and steer: no session means the login form (401) and 401 on the data; an API key
or the admin token in a header is no session; an action without the CSRF token is 403 and
changes nothing; a logged-in operator's actions reach the services and are logged by name.
"""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from .conftest import ADMIN, ADMIN_TOKEN

TOKEN = ADMIN_TOKEN
CUSTOMER = {"Authorization": "Bearer alice-key"}


async def log_in(gateway: httpx.AsyncClient) -> str:
    """Log in through the form; returns the page's CSRF token (the cookie stays in the client)."""
    answer = await gateway.post("/ops/login", data={"operator": "ada", "token": TOKEN})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ops"
    page = await gateway.get("/ops")
    assert page.status_code == 200
    found = re.search(r'name=csrf-token content="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def test_without_a_session_the_page_is_the_login_form_and_the_data_is_refused(
    gateway: httpx.AsyncClient,
) -> None:
    page = await gateway.get("/ops")
    assert page.status_code == 401
    assert '<form method=post action="/ops/login">' in page.text
    for headers in ({}, CUSTOMER, ADMIN):
        for path in ("/ops/data", "/ops/events"):
            refused = await gateway.get(path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.json()["type"] == "/problems/ops-session-required"
    # A customer's key with a forged cookie is no better.
    forged = {**CUSTOMER, "Cookie": "ops_session=e30.AAAA"}
    assert (await gateway.get("/ops/data", headers=forged)).status_code == 401


async def test_login_sets_a_strict_httponly_cookie_and_a_wrong_token_gets_none(
    gateway: httpx.AsyncClient,
) -> None:
    wrong = await gateway.post("/ops/login", data={"operator": "mallory", "token": "guess"})
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    right = await gateway.post("/ops/login", data={"operator": "ada", "token": TOKEN})
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("ops_session=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ops"):
        assert attribute.lower() in cookie.lower(), cookie
    assert TOKEN not in cookie and TOKEN not in right.headers["location"]


async def test_an_operator_sees_the_services_and_steers_them_with_the_csrf_token(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    csrf = await log_in(gateway)
    page = await gateway.get("/ops")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    data = (await gateway.get("/ops/data")).json()
    assert [s["name"] for s in data["services"]] == ["gateway", "order", "inventory", "payment"]

    fault = {"error_rate": 1.0, "latency_ms": 0, "hang": False}
    refused = await gateway.post("/ops/actions/faults/payment", json=fault)
    assert refused.status_code == 403
    assert refused.json()["type"] == "/problems/csrf-token-invalid"
    wrong = await gateway.post(
        "/ops/actions/faults/payment", json=fault, headers={"X-CSRF-Token": csrf[:-2] + "xx"}
    )
    assert wrong.status_code == 403
    assert (await gateway.get("/admin/faults/payment", headers=ADMIN)).json()["error_rate"] == 0

    with caplog.at_level(logging.INFO, logger="gateway.ops"):
        done = await gateway.post(
            "/ops/actions/faults/payment", json=fault, headers={"X-CSRF-Token": csrf}
        )
        assert done.status_code == 200
        assert (await gateway.get("/admin/faults/payment", headers=ADMIN)).json() == fault
        held = await gateway.post(
            "/ops/actions/read-only/inventory",
            json={"read_only": True},
            headers={"X-CSRF-Token": csrf},
        )
        assert held.json() == {"read_only": True, "forced": True}
        released = await gateway.post(
            "/ops/actions/read-only/inventory",
            json={"read_only": False},
            headers={"X-CSRF-Token": csrf},
        )
        assert released.json() == {"read_only": False, "forced": False}
        cleared = await gateway.post(
            "/ops/actions/faults/payment",
            json={"error_rate": 0.0},
            headers={"X-CSRF-Token": csrf},
        )
        assert cleared.json()["error_rate"] == 0
    actions = [r for r in caplog.records if getattr(r, "ops_action", None)]
    assert [(r.ops_service, r.operator) for r in actions] == [
        ("payment", "ada"),
        ("inventory", "ada"),
        ("inventory", "ada"),
        ("payment", "ada"),
    ]


async def test_a_bad_action_is_a_problem_not_a_change(gateway: httpx.AsyncClient) -> None:
    csrf = await log_in(gateway)
    headers = {"X-CSRF-Token": csrf}
    too_high = await gateway.post(
        "/ops/actions/faults/payment", json={"error_rate": 2}, headers=headers
    )
    assert too_high.status_code == 422
    unknown = await gateway.post("/ops/actions/faults/order", json={"hang": True}, headers=headers)
    assert unknown.status_code == 404
    assert "payment, inventory" in unknown.json()["detail"]
