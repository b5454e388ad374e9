"""`make new-service` in a throwaway copy of the repository, end to end.

One copy for the whole module (uv's cache makes its `make install` quick): `shipping`
(DOWNSTREAMS=inventory) and `parcels` (PUBLIC=1) are generated; each one's own unit and
integration tests pass there, so do the architecture tests and `render.py --check`; then
`make up` on free ports starts all six, `parcels` answers through the gateway with an API key,
and `make down` stops them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.manifest import load

from .conftest import clean_env

pytestmark = pytest.mark.timeout(600)


def sh(copy: Path, *command: str, timeout: float = 300, **env: str) -> str:
    done = subprocess.run(
        command,
        cwd=copy,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def generated(repo_copy: Path) -> Path:
    sh(
        repo_copy,
        "make",
        "--no-print-directory",
        "new-service",
        "NAME=shipping",
        "DOWNSTREAMS=inventory",
    )
    sh(repo_copy, "make", "--no-print-directory", "new-service", "NAME=parcels", "PUBLIC=1")
    return repo_copy


def test_the_manifest_and_every_generated_file_name_the_new_services(generated: Path) -> None:
    manifest = load(generated / "services.toml")
    shipping, parcels = manifest.get("shipping"), manifest.get("parcels")
    highest = max(s.port for s in load())
    assert (shipping.port, parcels.port) == (highest + 1, highest + 2)
    assert shipping.downstreams == ("inventory",) and not shipping.public
    assert parcels.public and "parcels" in manifest.gateway.downstreams
    assert shipping.prefix == "SHIPPING" and shipping.database
    compose = (generated / "docker-compose.yml").read_text()
    assert "SHIPPING_INVENTORY_URL: http://inventory:" in compose
    assert "GATEWAY_PARCELS_URL: http://parcels:" in compose
    assert "GATEWAY_PUBLIC_SERVICES: inventory,order,parcels" in compose
    scrape = (generated / "observability/prometheus/prometheus.compose.yml").read_text()
    assert f'"shipping:{shipping.port}"' in scrape and f'"parcels:{parcels.port}"' in scrape
    assert (generated / "infra/k8s/base/services/shipping.yaml").is_file()
    assert 'name = "shipping"' in (generated / "uv.lock").read_text()
    answers = (generated / "services/shipping/.copier-answers.yml").read_text()
    assert "_commit:" in answers and "- inventory" in answers
    # The lock is current (CI installs with --frozen) and the generated files are too.
    sh(generated, "uv", "sync", "--frozen", "--all-packages", "--quiet")
    sh(generated, ".venv/bin/python", "infra/render.py", "--check")
    sh(generated, ".venv/bin/python", "infra/manifest.py", "members")


def test_the_new_services_pass_their_own_tests_lint_and_the_architecture_tests(
    generated: Path,
) -> None:
    out = sh(
        generated,
        ".venv/bin/python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "services/shipping/tests",
        "services/parcels/tests",
        "tests/architecture",
    )
    assert " passed" in out and "failed" not in out
    sh(generated, ".venv/bin/ruff", "check", "services/shipping", "services/parcels")
    sh(generated, ".venv/bin/ruff", "format", "--check", "services/shipping", "services/parcels")
    sh(generated, ".venv/bin/mypy", "services/shipping/src", "services/parcels/src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(url: str, method: str = "GET", body: Any = None, **headers: str) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def stack(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make up` of the copy on free ports (SQLite, no Prometheus); `make down` after."""
    manifest = load(generated / "services.toml")
    env = {f"{s.prefix}_PORT": str(free_port()) for s in manifest}
    env |= {"STACK_RUN_DIR": str(tmp_path_factory.mktemp("run")), "STACK_PROMETHEUS": "0"}
    try:
        sh(generated, "make", "--no-print-directory", "up", timeout=240, **env)
        yield {s.name: f"http://127.0.0.1:{env[f'{s.prefix}_PORT']}" for s in manifest}
    finally:
        subprocess.run(
            ["make", "--no-print-directory", "down"],
            cwd=generated,
            env=clean_env(**env),
            capture_output=True,
            timeout=60,
            check=False,
        )


def test_make_up_starts_them_beside_the_four(stack: dict[str, str]) -> None:
    assert set(stack) == {*load().names, "shipping", "parcels"}
    for name, url in stack.items():
        assert call(f"{url}/readyz")[0] == 200, name
    # Internal: without the service credential, nothing but the probes answers.
    assert call(f"{stack['shipping']}/items/x")[0] == 401


def test_a_public_service_answers_through_the_gateway(stack: dict[str, str]) -> None:
    api = f"{stack['gateway']}/api"
    auth = {"Authorization": "Bearer demo-key", "Idempotency-Key": "scaffold-1"}
    body = {"name": "box", "quantity": 2}
    status, created = call(f"{api}/parcels/items", "POST", body, **auth)
    assert status == 201, created
    assert call(f"{api}/parcels/items", "POST", body, **auth) == (200, created)
    assert call(f"{api}/parcels/items", "POST", {**body, "quantity": 3}, **auth)[0] == 422
    assert call(f"{api}/parcels/items/{created['id']}", **auth) == (200, created)
    # Another customer does not see it; no key, no answer; shipping is not public.
    other = {"Authorization": "Bearer loadtest-key"}
    assert call(f"{api}/parcels/items/{created['id']}", **other)[0] == 404
    assert call(f"{api}/parcels/items/{created['id']}")[0] == 401
    assert call(f"{api}/shipping/items/{created['id']}", **auth)[0] == 404
    assert call(f"{api}/parcels/healthz", **auth)[0] == 404
