"""servicekit.serve: settings, the descriptor budget, bad input (no server is started here)."""

from __future__ import annotations

import resource

import pytest
from servicekit.edge.connections import GuardedHttpProtocol
from servicekit.serve import (
    ACCEPT_TURNS,
    FD_RESERVE,
    ServerSettings,
    build_config,
    connection_limits,
    main,
    raise_fd_limit,
    workers_from,
)


def test_settings_come_from_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("ORDER_MAX_CONNECTIONS_PER_CLIENT", "0")
    monkeypatch.setenv("GATEWAY_HEADER_TIMEOUT", "99")
    settings = ServerSettings(_env_prefix="ORDER_")
    assert settings.header_timeout == 2.5
    assert settings.max_connections_per_client == 0
    assert settings.max_connections == 4096 and settings.backlog == 2048


def test_the_connection_cap_stays_below_the_descriptor_limit() -> None:
    settings = ServerSettings(_env_prefix="UNSET_", max_connections=10_000, backlog=256)
    budget = 4096 - FD_RESERVE - ACCEPT_TURNS * 256  # refused connections in the accept pipeline
    assert connection_limits(settings, fd_limit=4096).max_connections == budget
    assert connection_limits(settings, fd_limit=1024).max_connections == 1  # never 0 or below
    assert connection_limits(settings, fd_limit=100_000).max_connections == 10_000


def test_the_config_runs_the_guarded_protocol_without_banner_or_access_log() -> None:
    settings = ServerSettings(_env_prefix="UNSET_", port=9999, backlog=128)
    config = build_config("gateway.main:create_app", settings, workers=3, fd_limit=20_000)
    assert config.http is GuardedHttpProtocol and config.ws == "none"
    assert config.factory and not config.server_header and not config.access_log
    assert (config.port, config.backlog, config.workers) == (9999, 128, 3)
    assert config.limits.header_timeout == settings.header_timeout
    assert config.loop == "asyncio"  # uvloop accepts one connection per turn (ServerSettings)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_fd_limit() >= soft
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] in (hard, max(soft, 1 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_web_concurrency_must_be_a_positive_integer(value: str) -> None:
    with pytest.raises(ValueError, match="WEB_CONCURRENCY must be a positive integer"):
        workers_from({"WEB_CONCURRENCY": value})
    assert workers_from({}) == 1 and workers_from({"WEB_CONCURRENCY": "4"}) == 4


def test_a_bad_setting_is_named_with_its_prefix_and_nothing_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_HEADER_TIMEOUT", "0")
    monkeypatch.setenv("GATEWAY_BACKLOG", "lots")
    with pytest.raises(SystemExit) as exited:
        main(["gateway.main:create_app"])
    message = str(exited.value.code)
    assert "GATEWAY_HEADER_TIMEOUT: Input should be greater than 0" in message
    assert "GATEWAY_BACKLOG: Input should be a valid integer" in message


def test_an_explicit_prefix_wins_over_the_package_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_MAX_CONNECTIONS", "0")
    with pytest.raises(SystemExit, match="SHOP_MAX_CONNECTIONS: Input should be greater"):
        main(["gateway.main:create_app", "--env-prefix", "shop"])


def test_the_loop_is_asyncio_or_uvloop_and_a_wrong_one_lists_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDER_LOOP", "uvloop")
    assert ServerSettings(_env_prefix="ORDER_").loop == "uvloop"
    monkeypatch.setenv("ORDER_LOOP", "trio")
    with pytest.raises(SystemExit, match="ORDER_LOOP: Input should be 'asyncio' or 'uvloop'"):
        main(["order.main:create_app"])
