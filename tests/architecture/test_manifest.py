"""The service manifest: `infra/manifest.py` refuses malformed files, and everything that lists
the services (the local runner, every test tier's list, the members check) follows a manifest
with one more service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.manifest import (
    DEFAULT_PATH,
    LIBRARY_PACKAGE,
    ManifestError,
    check_members,
    load,
    parse,
    workspace_members,
)

from . import extra_service as extra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "local"))
from prometheus_local import TEMPLATE
from prometheus_local import render as prometheus_render

from infra import render

ROOT = Path(__file__).resolve().parents[2]


def entry(name: str, port: int, **fields: object) -> str:
    values: dict[str, object] = {
        "name": name,
        "package": f"services/{name}",
        "module": name,
        "port": port,
        "prefix": name.upper(),
        **fields,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "[[service]]\n" + "\n".join(lines) + "\n"


def manifest_text(*entries: str) -> str:
    return "\n".join(entries)


GATEWAY = entry("edge", 9000, gateway=True, downstreams=["a"])


# --- infra/manifest.py ---------------------------------------------------------------------------


def test_the_repository_manifest_is_valid_and_starts_callees_first() -> None:
    manifest = load(DEFAULT_PATH)
    position = {name: i for i, name in enumerate(manifest.names)}
    for service in manifest:
        assert all(position[d] < position[service.name] for d in service.downstreams)
    assert sum(s.gateway for s in manifest) == 1


def test_start_order_puts_downstreams_first_and_keeps_file_order_otherwise() -> None:
    text = manifest_text(
        GATEWAY.replace('["a"]', '["b", "a"]'),
        entry("a", 9001, downstreams=["c"]),
        entry("b", 9002),
        entry("c", 9003),
    )
    assert parse(text, Path("m.toml")).names == ("b", "c", "a", "edge")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (manifest_text(GATEWAY, entry("a", 9001), entry("a", 9002)), "name used twice: a"),
        (manifest_text(GATEWAY, entry("a", 9001), entry("b", 9001)), "port used twice: 9001"),
        (
            manifest_text(GATEWAY, entry("a", 9001, prefix="X"), entry("b", 9002, prefix="X")),
            "prefix used twice: X",
        ),
        (manifest_text(GATEWAY, entry("a", 9001, downstreams=["nope"])), r"unknown service.*nope"),
        (
            manifest_text(
                GATEWAY, entry("a", 9001, downstreams=["b"]), entry("b", 9002, downstreams=["a"])
            ),
            r"cycle: .*a -> b -> a",
        ),
        (manifest_text(GATEWAY, entry("a", 9001, downstreams=["a"])), "itself"),
        (manifest_text(entry("a", 9001)), r"exactly one service must be the gateway, found \[\]"),
        (
            manifest_text(GATEWAY, entry("a", 9001, gateway=True)),
            r"exactly one .* found \['edge', 'a'\]",
        ),
        (
            manifest_text(GATEWAY, entry("a", 9001, colour="red")),
            r"unknown field\(s\) \['colour'\]",
        ),
        (manifest_text(GATEWAY, entry("a", 9001).replace('prefix = "A"\n', "")), "missing field"),
        (manifest_text(GATEWAY, entry("a", 80)), "port must be within"),
        (manifest_text(GATEWAY, entry("a", 9001, database="yes")), "database must be a bool"),
        (manifest_text(GATEWAY, entry("class", 9001)), "keyword"),
        ("[[service]]\nname = ", "not valid TOML"),
        ("", r"no \[\[service\]\] entries"),
        (manifest_text(GATEWAY, entry("a", 9001)) + "\n[extra]\n", "unknown top-level"),
    ],
)
def test_a_malformed_manifest_is_refused_with_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(text, Path("m.toml"))


def test_every_service_package_must_be_a_workspace_member() -> None:
    members = workspace_members()
    assert members[0] == LIBRARY_PACKAGE
    assert set(load(DEFAULT_PATH).packages) <= set(members)
    check_members(load(DEFAULT_PATH), members)
    with pytest.raises(ManifestError, match=r"\['services/payment'\] are not uv workspace"):
        check_members(load(DEFAULT_PATH), tuple(m for m in members if m != "services/payment"))


def test_the_members_command_names_the_missing_package(tmp_path: Path) -> None:
    manifest, _ = extra.write(tmp_path)
    env = {**os.environ, "SERVICE_MANIFEST": str(manifest)}
    done = subprocess.run(
        [sys.executable, "infra/manifest.py", "members"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "['services/ledger'] are not uv workspace members" in done.stderr


# --- one more service: everything that lists the services picks it up ----------------------------


@pytest.fixture
def with_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SERVICE_MANIFEST points at the throwaway manifest; `ledger` is importable."""
    manifest, source = extra.write(tmp_path)
    monkeypatch.setenv("SERVICE_MANIFEST", str(manifest))
    monkeypatch.syspath_prepend(str(source))
    return manifest


def plan(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "infra/local/stack.py", "plan", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    steps: list[dict[str, Any]] = json.loads(done.stdout)
    return steps


def test_make_up_plans_the_extra_service(with_ledger: Path, tmp_path: Path) -> None:
    env = {**os.environ, "STACK_RUN_DIR": str(tmp_path / "run"), "LEDGER_PORT": "18004"}
    env.pop("ORDER_LEDGER_URL", None)
    steps = {step["name"]: step for step in plan(env)}
    names = list(steps)
    assert names.index("ledger") < names.index("order")  # order calls it
    ledger = steps["ledger"]
    assert ledger["port"] == 18004 and ledger["metrics"] == "127.0.0.1:18004"
    command = ledger["command"]
    assert command[command.index("--port") + 1] == "18004"
    assert command[command.index("servicekit.serve") + 1] == "ledger.main:create_app"
    assert command[command.index("--env-prefix") + 1] == "LEDGER"
    assert ledger["setup"] == []  # no database: nothing migrated or seeded
    assert steps["order"]["downstreams"] == {
        "ORDER_INVENTORY_URL": "http://127.0.0.1:8002",
        "ORDER_LEDGER_URL": "http://127.0.0.1:18004",
        "ORDER_PAYMENT_URL": "http://127.0.0.1:8003",
    }
    assert not (tmp_path / "run").exists(), "plan wrote something"


def test_make_up_plan_keeps_an_explicit_downstream_url(with_ledger: Path) -> None:
    env = {**os.environ, "ORDER_LEDGER_URL": "http://ledger.example:80"}
    steps = {step["name"]: step for step in plan(env)}
    assert steps["order"]["downstreams"]["ORDER_LEDGER_URL"] == "http://ledger.example:80"


def test_stack_runner_scrapes_and_migrates_per_the_manifest(with_ledger: Path) -> None:
    sys.path.insert(0, str(ROOT / "infra" / "local"))
    try:
        import stack  # the runner's own functions, as `make up` calls them
    finally:
        sys.path.remove(str(ROOT / "infra" / "local"))
    services = stack.services()
    names = [s.name for s in services]
    gateway = next(s.entry for s in services if s.entry.gateway)
    assert all(names.index(d) < names.index(gateway.name) for d in gateway.downstreams)
    ports = {s.default_port: s.port for s in services}  # what LocalPrometheus is given
    assert ports[extra.PORT] == extra.PORT
    # The local Prometheus scrapes it (rendered at `make up`), and so does the compose one.
    local = stack.prometheus(services)
    scrape = prometheus_render(TEMPLATE.read_text(), ports)
    assert f'"127.0.0.1:{extra.PORT}"' in scrape and "service: ledger" in scrape
    assert local.port
    compose = render.prometheus_targets(load(), lambda s: f"{s.name}:{s.port}")
    assert f'"ledger:{extra.PORT}"' in compose
    assert stack.downstream_urls(services)["ORDER_LEDGER_URL"] == f"http://127.0.0.1:{extra.PORT}"
    shipped = {"inventory", "payment", "order"}  # a generated service adds its own steps
    labels = [label for s in services for label, _ in stack.setup_steps(s)]
    assert [label for label in labels if label.split(":")[0] in shipped] == [
        "inventory: migrations",
        "inventory: seed",
        "payment: migrations",
        "order: migrations",
    ]


def test_every_test_tier_lists_the_extra_service(
    with_ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.architecture.test_boundaries import apps
    from tests.chaos.cluster import Stack, stack_env
    from tests.e2e.conftest import backend_env, base_env, service_ports
    from tests.fuzz.conftest import Apps
    from tests.fuzz.test_schemathesis import fuzz_runs
    from tests.security.test_owasp_api_top10 import _apps, test_api9_every_route_is_documented

    assert apps()["ledger"] == ROOT / "services/ledger/src/ledger"
    # e2e
    assert service_ports()["ledger"] == extra.PORT
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://a-developers-own")
    assert "LEDGER_DATABASE_URL" not in base_env()
    assert backend_env("sqlite:///x/{name}.db", "redis://r")["LEDGER_REDIS_URL"] == "redis://r"
    assert "LEDGER_DATABASE_URL" not in backend_env("sqlite:///x/{name}.db")  # it has none
    # chaos
    chaos = Stack(run_dir=tmp_path, env=stack_env("postgresql://db", "redis://r"))
    assert "ledger" in chaos.services and chaos.env["LEDGER_PORT"] == str(chaos.ports["ledger"])
    assert chaos.env["LEDGER_REDIS_URL"] == "redis://r"
    # fuzz: it is run, built in-process from the manifest (the template's shape)
    assert ("ledger", False) in fuzz_runs()
    assert "/entries" in Apps(tmp_path).app("ledger").openapi()["paths"]
    # security: the route inventory check builds it with its own factory, and passes on it
    assert "/entries" in _apps()["ledger"].openapi()["paths"]
    test_api9_every_route_is_documented()
