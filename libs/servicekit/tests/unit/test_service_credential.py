"""Service credentials: signed, expiring, audience-bound tokens; rotation; 401 vs 403 answers."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import FastAPI
from servicekit import (
    ServiceClient,
    ServiceCredential,
    ServiceError,
    mint_service_token,
    verify_service_token,
)
from servicekit.edge.credential import LEEWAY_SECONDS, MAX_TTL_SECONDS, ServiceCredentialTrust
from servicekit.edge.middleware import EdgeMiddleware
from servicekit.edge.mint import main
from servicekit.testing import FakeClock, lifespan_client

from .conftest import build_demo_app

SECRET = "unit-test-secret"
NOW = 1_700_000_000.0


def verify(token: str | None, secrets: list[str] | None = None, now: float = NOW) -> str:
    try:
        verify_service_token(token, secrets or [SECRET], audience="payment", now=now)
    except ServiceError as exc:
        return f"{exc.status} {exc.slug}"
    return "ok"


def mint(**overrides: object) -> str:
    values: dict[str, object] = {"caller": "order", "audience": "payment", "now": NOW}
    values.update(overrides)
    secret = str(values.pop("secret", SECRET))
    return mint_service_token(secret, **values)  # type: ignore[arg-type]


def test_a_fresh_token_verifies_and_names_its_caller() -> None:
    token = mint()
    claims = verify_service_token(token, [SECRET], audience="payment", now=NOW + 10)
    assert (claims.caller, claims.audience) == ("order", "payment")
    assert SECRET not in token


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, "401 service-credential-missing"),
        ("", "401 service-credential-missing"),
        (SECRET, "401 service-credential-invalid"),
        ("v1.order.payment.1.sig", "401 service-credential-invalid"),
        ("v2" + mint()[2:], "401 service-credential-invalid"),
        ("x" * 5000, "401 service-credential-invalid"),
    ],
    ids=["none", "empty", "raw-secret", "short-signature", "other-version", "huge"],
)
def test_missing_or_malformed_tokens_are_401(token: str | None, expected: str) -> None:
    assert verify(token) == expected


def test_tampered_claims_break_the_signature() -> None:
    version, caller, audience, expiry, signature = mint().split(".")
    longer = ".".join([version, caller, audience, str(int(expiry) + 3000), signature])
    other_caller = ".".join([version, "gateway", audience, expiry, signature])
    assert verify(longer) == "401 service-credential-invalid"
    assert verify(other_caller) == "401 service-credential-invalid"
    assert verify(mint(secret="another-secret")) == "401 service-credential-invalid"


def test_expiry_is_checked_with_leeway() -> None:
    token = mint(ttl_seconds=60)
    assert verify(token, now=NOW + 60 + LEEWAY_SECONDS) == "ok"
    assert verify(token, now=NOW + 61 + LEEWAY_SECONDS) == "401 service-credential-expired"


def test_a_token_living_longer_than_the_maximum_is_refused() -> None:
    # Minted "in the future" by a host whose clock is far ahead: not accepted either.
    assert verify(mint(now=NOW + MAX_TTL_SECONDS)) == "401 service-credential-invalid"


def test_a_token_for_another_service_is_403() -> None:
    assert verify(mint(audience="inventory")) == "403 service-credential-audience"


def test_rotation_accepts_every_configured_secret() -> None:
    token = mint(secret="old-secret")
    assert verify(token, ["new-secret", "old-secret"]) == "ok"
    assert verify(token, ["new-secret"]) == "401 service-credential-invalid"


def test_names_and_lifetimes_are_checked_when_minting() -> None:
    for bad in ({"caller": "Order"}, {"audience": "a.b"}, {"ttl_seconds": 0}, {"secret": ""}):
        with pytest.raises(ValueError):
            mint(**bad)


def test_credential_reuses_its_token_until_near_expiry(fake_clock: FakeClock) -> None:
    fake_clock.now = NOW
    credential = ServiceCredential(
        SECRET, caller="order", audience="payment", ttl_seconds=100, clock=fake_clock
    )
    first = credential.token()
    fake_clock.advance(79)
    assert credential.token() is first  # no new HMAC while 20 % of the lifetime is left
    fake_clock.advance(2)
    second = credential.token()
    assert second != first
    assert verify(second, now=fake_clock.now + 99) == "ok"
    assert SECRET not in repr(credential)


async def test_client_sends_a_token_for_its_downstream() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    client = ServiceClient(
        "payment",
        "http://payment",
        token=SECRET,
        caller="order",
        transport=httpx.MockTransport(handler),
    )
    await client.request("GET", "/charges")
    await client.request("GET", "/charges")
    await client.aclose()
    tokens = {r.headers["x-service-token"] for r in seen}
    assert len(tokens) == 1  # cached, not minted per request
    claims = verify_service_token(tokens.pop(), [SECRET], audience="payment", now=time.time())
    assert claims.caller == "order"


def _app(clock: FakeClock) -> FastAPI:
    app = build_demo_app()
    # Replace the edge's credential check with one on an injected clock (same secret).
    for middleware in app.user_middleware:
        if middleware.cls is EdgeMiddleware:
            middleware.kwargs["trust"] = ServiceCredentialTrust(
                secrets=["dev-service-token"], audience="demo", clock=clock
            )
    return app


async def test_middleware_answers_401_and_403_problems(fake_clock: FakeClock) -> None:
    fake_clock.now = NOW
    app = _app(fake_clock)
    expired = mint_service_token(
        "dev-service-token", caller="order", audience="demo", ttl_seconds=60, now=NOW - 600
    )
    other = mint_service_token("dev-service-token", caller="order", audience="payment", now=NOW)
    good = mint_service_token("dev-service-token", caller="order", audience="demo", now=NOW)
    async with lifespan_client(app) as client:
        answers = {
            name: await client.get("/whoami", headers={"X-Service-Token": token})
            for name, token in {
                "raw": "dev-service-token",
                "expired": expired,
                "other": other,
                "good": good,
            }.items()
        }
    assert answers["raw"].status_code == 401
    assert answers["expired"].json()["type"] == "/problems/service-credential-expired"
    assert answers["expired"].headers["www-authenticate"].startswith("ServiceToken")
    assert answers["other"].status_code == 403
    assert "www-authenticate" not in answers["other"].headers
    assert answers["good"].status_code == 200


def test_cli_prints_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENT_SERVICE_TOKEN", SECRET)
    assert main(["payment", "operator", "120"]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_service_token(token, [SECRET], audience="payment", now=time.time()).caller == (
        "operator"
    )


async def test_a_remembered_token_still_expires(fake_clock: FakeClock) -> None:
    fake_clock.now = NOW
    token = mint_service_token(
        "dev-service-token", caller="order", audience="demo", ttl_seconds=60, now=NOW
    )
    headers = {"X-Service-Token": token}
    async with lifespan_client(_app(fake_clock)) as client:
        first = await client.get("/whoami", headers=headers)
        again = await client.get("/whoami", headers=headers)  # from the verified cache
        fake_clock.advance(60 + LEEWAY_SECONDS + 1)
        late = await client.get("/whoami", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert late.status_code == 401
    assert late.json()["type"] == "/problems/service-credential-expired"
