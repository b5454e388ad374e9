"""docker-compose.yml: the Compose specification's schema, the service manifest and the contract."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from infra.manifest import Manifest

from .support import REPO, load_yaml, tool

SCHEMA = REPO / "infra" / "docker" / "schema" / "compose-spec.json"
ENV_EXAMPLE = REPO / "infra" / "docker" / ".env.example"
PROMETHEUS_DIR = REPO / "observability" / "prometheus"
HEALTH_ROUTES = {"/healthz", "/readyz"}


def one_shots(compose: dict[str, Any]) -> set[str]:
    return {name for name, svc in compose["services"].items() if svc.get("restart") == "no"}


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_validation_can_fail(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthcheck"]["retry"] = 3  # misspelt
    broken["services"]["redis"]["restart"] = ["no"]  # not a string
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_every_service_of_the_manifest_with_its_port_build_and_env(
    compose: dict[str, Any], manifest: Manifest
) -> None:
    services = compose["services"]
    for s in manifest:
        svc = services[s.name]
        assert svc["build"]["dockerfile"] == "infra/docker/Dockerfile"
        assert svc["build"]["args"] == {"SERVICE": s.name, "MODULE": s.module, "PORT": str(s.port)}
        assert svc["ports"] == [f"127.0.0.1:{s.port}:{s.port}"]
        env = svc["environment"]
        assert env["OTEL_SERVICE_NAME"] == s.name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env[f"{s.prefix}_REDIS_URL"] == "redis://redis:6379/0"
        assert env[f"{s.prefix}_SERVICE_TOKEN"].startswith("${SERVICE_TOKEN:?")
        assert (f"{s.prefix}_DATABASE_URL" in env) == s.database
        for d in s.downstreams:
            assert env[s.url_setting(d)] == f"http://{d}:{manifest.get(d).port}"
            assert svc["depends_on"][d] == {"condition": "service_healthy"}
        if s.gateway:
            assert env["GATEWAY_API_KEYS"].startswith("${GATEWAY_API_KEYS:?")
            assert env["GATEWAY_ADMIN_TOKEN"].startswith("${GATEWAY_ADMIN_TOKEN:?")
        # Every variable a service reads is its own prefix's, or the standard ones.
        for name in env:
            assert name.startswith((f"{s.prefix}_", "OTEL_", "WEB_CONCURRENCY")), name


def test_migrations_and_seeds_run_once_before_their_service(
    compose: dict[str, Any], manifest: Manifest
) -> None:
    services = compose["services"]
    for s in manifest.with_database:
        migrate = services[f"{s.name}-migrate"]
        assert migrate["restart"] == "no"
        assert f"servicekit.data.migrations {s.name} " in migrate["command"][-1]
        assert services[s.name]["depends_on"][f"{s.name}-migrate"] == {
            "condition": "service_completed_successfully"
        }
        if s.seed:
            seed = services[f"{s.name}-seed"]
            assert f"-m {s.seed} " in seed["command"][-1]
            assert seed["depends_on"] == {
                f"{s.name}-migrate": {"condition": "service_completed_successfully"}
            }


def test_healthchecks_dependencies_and_memory_limits(compose: dict[str, Any]) -> None:
    oneshots = one_shots(compose)
    for name, svc in compose["services"].items():
        assert svc["deploy"]["resources"]["limits"]["memory"], name
        if name not in oneshots:
            # A one-shot exits: `service_completed_successfully` is its check instead.
            assert svc["healthcheck"]["test"][0] == "CMD", name
        for dependency, condition in svc.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in oneshots else "service_healthy"
            )
            assert condition == {"condition": wanted}, f"{name} -> {dependency}"


def test_service_healthchecks_point_at_real_health_routes(
    compose: dict[str, Any], manifest: Manifest
) -> None:
    from servicekit.edge.health import router

    real = {route.path for route in router.routes}  # type: ignore[attr-defined]
    assert real >= HEALTH_ROUTES
    for s in manifest:
        probe = " ".join(compose["services"][s.name]["healthcheck"]["test"])
        path = re.search(rf"http://127\.0\.0\.1:{s.port}(/\w+)", probe)
        assert path and path.group(1) in HEALTH_ROUTES & real, probe
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    assert "/healthz" in dockerfile.split("HEALTHCHECK", 1)[1].split("\n\n")[0]


def test_every_mounted_file_is_in_the_repository(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_secrets_only_from_the_env_file(compose: dict[str, Any]) -> None:
    lines = (REPO / "docker-compose.yml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required >= {"POSTGRES_PASSWORD", "SERVICE_TOKEN", "GATEWAY_API_KEYS"}
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    assert set(example) >= required, f"missing from .env.example: {required - set(example)}"
    assert all("change-me" in value for value in example.values())
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "infra/docker/.env"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "infra/docker/.env must be git-ignored"


def test_loadtest_profile_runs_locust_master_and_workers(compose: dict[str, Any]) -> None:
    master, worker = compose["services"]["locust-master"], compose["services"]["locust-worker"]
    for svc in (master, worker):
        assert svc["profiles"] == ["loadtest"]
        assert svc["image"].startswith("locustio/locust:")
        assert svc["command"][:2] == ["-f", "loadtest/locustfile.py"]
    assert "--master" in master["command"] and "--worker" in worker["command"]


def test_compose_prometheus_scrapes_the_compose_service_names(manifest: Manifest) -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.compose.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "services")
    scraped = {(c["labels"]["service"], c["targets"][0]) for c in job["static_configs"]}
    assert scraped == {(s.name, f"{s.name}:{s.port}") for s in manifest}
    promtool = tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus.compose.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_mounts_match_the_configs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert "./observability/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in prometheus["command"]
    collector = services["otel-collector"]
    mount = collector["volumes"][0].split(":")[1]
    assert f"--config={mount}" in collector["command"]
    config = load_yaml(REPO / "observability" / "otel-collector" / "config.yaml")
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert "jaeger" in services


@pytest.mark.parametrize(
    "path", ["docker-compose.yml", "observability/prometheus/canary-queries.yml"]
)
def test_yaml_has_no_duplicate_keys(path: str) -> None:
    load_yaml(REPO / path)


def test_the_image_runs_the_service_as_make_up_does() -> None:
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    stack = (REPO / "infra" / "local" / "stack.py").read_text()
    # One launcher (servicekit.serve: connection limits, no banner, no uvicorn access log).
    assert "python -m servicekit.serve" in dockerfile and '"servicekit.serve"' in stack
    assert "uvicorn" not in dockerfile.rsplit("CMD", 1)[1]
    assert ".main:create_app" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
    assert "USER 10001" in dockerfile and "FROM ${PYTHON_IMAGE} AS runtime" in dockerfile
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = tool("hadolint", Path(REPO / ".venv" / "bin" / "hadolint"))
    done = subprocess.run(
        [hadolint, "infra/docker/Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
