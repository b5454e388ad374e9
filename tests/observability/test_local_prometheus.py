"""The optional Prometheus of `make up` (infra/local/prometheus_local.py), without the stack.

The live test (test_prometheus_live.py) shows it started and scraping; these show the config it
writes and that a missing binary or a busy port never fails `up`.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "observability" / "prometheus"


@pytest.fixture(scope="module")
def local() -> ModuleType:
    path = REPO / "infra" / "local" / "prometheus_local.py"
    spec = importlib.util.spec_from_file_location("prometheus_local", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_config_follows_the_stack_ports_and_stays_valid(local: ModuleType, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required: scripts/system-packages.sh installs it", pytrace=False)
    template = (PROMETHEUS_DIR / "prometheus.local.yml").read_text()
    ports = {8000: 18000, 8001: 18001, 8002: 18002, 8003: 18003, 9090: 19090}

    rendered = local.render(template, ports, "1s")

    for port in ports.values():
        assert f'"127.0.0.1:{port}"' in rendered
    assert not re.search(r"127\.0\.0\.1:(800[0-3]|9090)\b", rendered)
    assert "  scrape_interval: 1s" in rendered and "  evaluation_interval: 1s" in rendered
    assert local.render(template, {}, None) == template
    (tmp_path / "prometheus.yml").write_text(rendered)
    (tmp_path / "rules").symlink_to(PROMETHEUS_DIR / "rules", target_is_directory=True)
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_missing_binary_is_reported_not_fatal(
    local: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    line = local.LocalPrometheus(tmp_path, "127.0.0.1", {}).start()
    assert line.startswith("not installed") and "apt-get install prometheus" in line
    assert not (tmp_path / "prometheus").exists()


def test_a_busy_port_is_reported_not_fatal(
    local: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is required: scripts/system-packages.sh installs it", pytrace=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("PROMETHEUS_PORT", str(busy.getsockname()[1]))
        prometheus = local.LocalPrometheus(tmp_path, "127.0.0.1", {})
        line = prometheus.start()
    assert "in use" in line and "PROMETHEUS_PORT" in line
    assert prometheus.pid() is None
    assert prometheus.stop() is False


def test_a_bad_port_setting_is_reported_not_fatal(
    local: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is required: scripts/system-packages.sh installs it", pytrace=False)
    monkeypatch.setenv("PROMETHEUS_PORT", "nine")
    line = local.LocalPrometheus(tmp_path, "127.0.0.1", {}).start()
    assert line == "not started: PROMETHEUS_PORT='nine' is not a port number"


def test_it_can_be_turned_off(
    local: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACK_PROMETHEUS", "0")
    line = local.LocalPrometheus(tmp_path, "127.0.0.1", {}).start()
    assert line == "not started (STACK_PROMETHEUS=0)"
    assert not (tmp_path / "prometheus").exists()
