from __future__ import annotations

from typing import Any

import pytest
from gateway.config import GatewaySettings
from gateway.keys import KeyTable, digest, parse_api_keys
from pydantic import ValidationError


def test_parses_keys_with_customer_and_scopes() -> None:
    keys = parse_api_keys(" demo-key:customer-demo , lt-key:customer-lt:loadtest ,")
    assert [(k.customer_id, k.scopes) for k in keys] == [
        ("customer-demo", frozenset()),
        ("customer-lt", frozenset({"loadtest"})),
    ]
    assert keys[0].key_digest == digest("demo-key")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("just-a-key", "must be key:customer_id"),
        ("k:c:loadtest:extra", "must be key:customer_id"),
        (":customer", "key is empty"),
        ("key:", "customer id"),
        ("key:bad customer", "customer id"),
        ("key:cust:admin", "unknown scope"),
        ("key:cust:loadtest+", "unknown scope"),
        ("dup-key:a,dup-key:b", "listed twice"),
    ],
)
def test_refuses_bad_entry_naming_it(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_api_keys(raw)


def test_error_does_not_echo_the_whole_secret_key() -> None:
    with pytest.raises(ValueError) as info:
        parse_api_keys("supersecretvalue:bad customer")
    assert "supersecretvalue" not in str(info.value)
    assert "supe..." in str(info.value)


def test_key_repr_hides_the_key() -> None:
    (key,) = parse_api_keys("hunter2-hunter2:customer-a")
    assert "hunter2" not in repr(key)


def test_key_table_finds_only_exact_keys() -> None:
    table = KeyTable(parse_api_keys("demo-key:customer-demo"))
    found = table.find("demo-key")
    assert found is not None and found.customer_id == "customer-demo"
    assert table.find("demo-ke") is None
    assert table.find("demo-key ") is None
    assert table.find("") is None
    assert table.find(None) is None


def test_settings_parse_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "env-key:customer-env:loadtest")
    settings = GatewaySettings(_env_file=None)
    assert [k.customer_id for k in settings.api_keys] == ["customer-env"]


def test_settings_error_names_the_bad_entry_without_leaking_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "good-secret-key:customer-a,broken-entry")
    with pytest.raises(ValidationError) as info:
        GatewaySettings(_env_file=None)
    message = str(info.value)
    assert "#2 'brok...'" in message
    assert "good-secret-key" not in message and "broken-entry" not in message


def test_development_defaults_to_demo_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS", raising=False)
    settings = GatewaySettings(_env_file=None)
    table = KeyTable(settings.api_keys)
    demo, loadtest = table.find("demo-key"), table.find("loadtest-key")
    assert demo is not None and demo.customer_id == "customer-demo"
    assert loadtest is not None and loadtest.scopes == frozenset({"loadtest"})


def _production(**values: str) -> GatewaySettings:
    base: dict[str, Any] = {
        "environment": "production",
        "service_token": "real-service-token",
        "admin_token": "real-admin-token",
    }
    return GatewaySettings(_env_file=None, **(base | values))


def test_production_refuses_empty_key_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS", raising=False)
    with pytest.raises(ValidationError, match="GATEWAY_API_KEYS is empty"):
        _production()


def test_production_refuses_demo_keys() -> None:
    with pytest.raises(ValidationError, match="demo key"):
        _production(api_keys="demo-key:customer-demo")


def test_production_refuses_placeholder_admin_token() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_ADMIN_TOKEN"):
        _production(api_keys="real-key-123:customer-a", admin_token="dev-admin-token")


def test_production_accepts_real_keys_and_secrets() -> None:
    settings = _production(api_keys="real-key-123:customer-a")
    assert settings.api_keys[0].customer_id == "customer-a"


def test_refuses_upstream_url_without_http_scheme() -> None:
    with pytest.raises(ValidationError, match="http://"):
        GatewaySettings(_env_file=None, order_url="127.0.0.1:8001")


def test_development_keys_include_a_loadtest_pool_of_distinct_customers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS", raising=False)
    table = KeyTable(GatewaySettings(_env_file=None).api_keys)
    pool = [table.find(f"loadtest-key-{i}") for i in range(1, 9)]
    assert all(k is not None and k.scopes == frozenset({"loadtest"}) for k in pool)
    assert len({k.customer_id for k in pool if k is not None}) == 8


def test_production_refuses_the_loadtest_pool() -> None:
    with pytest.raises(ValidationError, match="demo key"):
        _production(api_keys="loadtest-key-3:customer-a:loadtest")
